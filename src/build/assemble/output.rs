//! Where `archfarm assemble` puts an image besides the store: an OCI image layout
//! folder, a docker-archive file, or a docker-archive streamed to stdout.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::image::oci::ManifestDoc;
use crate::image::oci::{Descriptor, OCI_INDEX};
use crate::image::store::Store;
use crate::support::error::{Error, Result};
use crate::support::fs::{write_atomically, WriteOptions};

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
    /// Parses an `--output` value and checks, before anything is built, that the place
    /// can be written: the folder it goes into exists, and a folder is not a file or the
    /// other way round (usage errors, exit 2, naming the flag).
    pub fn parse(text: &str) -> Result<Output> {
        if text == "-" {
            return Ok(Output::Stdout);
        }
        let output = match text.split_once(':') {
            Some(("oci", p)) if !p.is_empty() => Output::Oci(p.into()),
            Some(("docker-archive", p)) if !p.is_empty() => Output::DockerArchive(p.into()),
            _ => {
                return Err(Error::usage(format!(
                    "--output '{text}': expected oci:DIR, docker-archive:FILE or - (a docker-archive on stdout)"
                )))
            }
        };
        let (path, want_folder) = match &output {
            Output::Oci(p) => (p, true),
            Output::DockerArchive(p) => (p, false),
            Output::Stdout => return Ok(output),
        };
        let bad = |why: String| Err(Error::usage(format!("--output '{text}': {why}")));
        match fs::metadata(path) {
            Ok(m) if want_folder && !m.is_dir() => return bad(format!("{} is a file, not a folder", path.display())),
            Ok(m) if !want_folder && m.is_dir() => return bad(format!("{} is a folder; name a file", path.display())),
            Ok(_) => return Ok(output),
            Err(_) => {}
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        match fs::metadata(parent) {
            Ok(m) if m.is_dir() => Ok(output),
            Ok(_) => bad(format!("{} is not a folder", parent.display())),
            Err(_) => bad(format!("the folder {} does not exist; create it first", parent.display())),
        }
    }
}

/// The tag an assembled image is reported and exported under: the recipe's `name`
/// (with `:<key>` when it has no tag), else `<fallback repository>:<key>`.
pub fn tag(name: Option<&str>, fallback_repo: &str, key: &str) -> String {
    match name {
        Some(n) => match crate::image::reference::split_tag(n) {
            (_, Some(_)) => n.to_string(),
            (repo, None) => format!("{repo}:{key}"),
        },
        None => format!("{fallback_repo}:{key}"),
    }
}

/// Writes `manifest` (and every blob it names) from `store` as an OCI image layout in
/// `dir`, with index.json naming it `ref_name` (`umoci --image DIR:ref_name`). Each blob
/// is hashed on its way out (a corrupt one fails the export and is forgotten by the
/// store), then hard-linked from the store when possible, else copied; blobs already in
/// `dir` are kept; index.json is written last.
pub fn write_oci_layout(store: &Store, manifest: &Descriptor, ref_name: &str, dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|e| Error::io("creating", &blobs, e))?;
    let doc: ManifestDoc = serde_json::from_slice(&store.read_blob(&manifest.digest)?)
        .map_err(|e| Error::failure(format!("manifest {} in the store is not valid: {e}", manifest.digest)))?;
    for d in std::iter::once(&doc.config).chain(&doc.layers).chain([manifest]) {
        store.verify_blob(&d.digest, d.size)?;
        let src = store.blob_path(&d.digest)?;
        let dest = store_path(&blobs, &d.digest)?;
        if dest.exists() {
            continue;
        }
        if fs::hard_link(&src, &dest).is_err() {
            let tmp = dest.with_extension("tmp");
            fs::copy(&src, &tmp).map_err(|e| Error::io("copying blob to", &tmp, e))?;
            fs::rename(&tmp, &dest).map_err(|e| Error::io("renaming", &dest, e))?;
        }
    }
    write_atomically(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#, WriteOptions::default())?;
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
    write_atomically(&dir.join("index.json"), &serde_json::to_vec(&index).expect("json"), WriteOptions::default())
}

fn store_path(blobs: &Path, digest: &str) -> Result<PathBuf> {
    Ok(blobs.join(crate::image::oci::digest_hex(digest)?))
}

/// Writes a docker-archive of `manifest` to `file` atomically (a temporary file next to
/// it, renamed when complete).
pub fn write_docker_archive(store: &Store, manifest: &Descriptor, repo_tags: &[String], file: &Path) -> Result<()> {
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = crate::support::fs::temp_file(parent, None)?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        crate::image::docker_archive::export(store, manifest, repo_tags, &mut w)?;
        w.flush().map_err(|e| Error::io("writing", file, e))?;
    }
    crate::support::fs::persist(tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_into_missing_folders_or_of_the_wrong_kind_are_usage_errors_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let d = dir.path().display();
        for (text, says) in [
            (format!("oci:{d}/missing/x"), "does not exist"),
            (format!("docker-archive:{d}/missing/x.tar"), "does not exist"),
            (format!("oci:{}", file.display()), "is a file, not a folder"),
            (format!("docker-archive:{d}"), "is a folder"),
            (format!("oci:{}/x", file.display()), "is not a folder"),
        ] {
            let e = Output::parse(&text).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{text}");
            assert!(e.message().starts_with(&format!("--output '{text}': ")) && e.message().contains(says), "{e}");
        }
        assert_eq!(Output::parse(&format!("oci:{d}/new")).unwrap(), Output::Oci(dir.path().join("new")));
        assert_eq!(Output::parse(&format!("oci:{d}")).unwrap(), Output::Oci(dir.path().to_path_buf()));
        let archive = format!("docker-archive:{d}/x.tar");
        assert_eq!(Output::parse(&archive).unwrap(), Output::DockerArchive(dir.path().join("x.tar")));
    }
}
