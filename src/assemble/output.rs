//! Where `archfarm assemble` puts an image besides the store: an OCI image layout
//! folder, a docker-archive file, or a docker-archive streamed to stdout.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::store::{Descriptor, Store, OCI_INDEX};

/// An `--output` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `oci:DIR`: an OCI image layout (index.json, blobs/sha256).
    Oci(PathBuf),
    /// `docker-archive:FILE`.
    DockerArchive(PathBuf),
    /// `-`: a docker-archive on stdout.
    Stdout,
}

impl Output {
    pub fn parse(text: &str) -> Result<Output> {
        if text == "-" {
            return Ok(Output::Stdout);
        }
        match text.split_once(':') {
            Some(("oci", p)) if !p.is_empty() => Ok(Output::Oci(p.into())),
            Some(("docker-archive", p)) if !p.is_empty() => Ok(Output::DockerArchive(p.into())),
            _ => Err(Error::usage(format!(
                "--output '{text}': expected oci:DIR, docker-archive:FILE or - (a docker-archive on stdout)"
            ))),
        }
    }
}

/// The tag an assembled image is reported and exported under: the recipe's `name`
/// (with `:<key>` when it has no tag), else `<fallback repository>:<key>`.
pub fn tag(name: Option<&str>, fallback_repo: &str, key: &str) -> String {
    match name {
        Some(n) => match super::recipe::split_tag(n) {
            (_, Some(_)) => n.to_string(),
            (repo, None) => format!("{repo}:{key}"),
        },
        None => format!("{fallback_repo}:{key}"),
    }
}

/// Writes `manifest` (and every blob it names) from `store` as an OCI image layout in
/// `dir`, with index.json naming it `ref_name` (`umoci --image DIR:ref_name`). Blobs are
/// hard-linked from the store when possible, else copied; index.json is written last.
pub fn write_oci_layout(store: &Store, manifest: &Descriptor, ref_name: &str, dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|e| Error::io("creating", &blobs, e))?;
    let mut all = store.manifest_blobs(&manifest.digest)?;
    all.push(manifest.digest.clone());
    for d in all {
        let src = store.blob_path(&d)?;
        let dest = store_path(&blobs, &d)?;
        if dest.exists() {
            continue;
        }
        if fs::hard_link(&src, &dest).is_err() {
            let tmp = dest.with_extension("tmp");
            fs::copy(&src, &tmp).map_err(|e| Error::io("copying blob to", &tmp, e))?;
            fs::rename(&tmp, &dest).map_err(|e| Error::io("renaming", &dest, e))?;
        }
    }
    crate::store::write_atomic(
        Path::new("/nonexistent"),
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": {"org.opencontainers.image.ref.name": ref_name},
        }],
    });
    crate::store::write_atomic(
        Path::new("/nonexistent"),
        &dir.join("index.json"),
        &serde_json::to_vec(&index).expect("json"),
    )
}

fn store_path(blobs: &Path, digest: &str) -> Result<PathBuf> {
    Ok(blobs.join(crate::store::digest_hex(digest)?))
}

/// Writes a docker-archive of `manifest` to `file` atomically (a temporary file next to
/// it, renamed when complete).
pub fn write_docker_archive(store: &Store, manifest: &Descriptor, repo_tags: &[String], file: &Path) -> Result<()> {
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(parent).map_err(|e| Error::io("creating a temporary file in", parent, e))?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        crate::docker_archive::export(store, manifest, repo_tags, &mut w)?;
        w.flush().map_err(|e| Error::io("writing", file, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io("syncing", file, e))?;
    tmp.persist(file).map_err(|e| Error::io("writing", file, e.error))?;
    Ok(())
}
