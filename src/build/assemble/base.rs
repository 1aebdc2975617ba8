//! The `from` of an assembled image: its layers come first and its config is inherited.
//! Every kind ends as an image manifest in a store (the staging store of the assembly
//! for imports, so a refused base leaves nothing behind), checked for the platform.

use std::path::Path;

use serde::Deserialize;

use crate::image::oci::ManifestDoc;
use crate::image::oci::{digest_hex, Descriptor, OCI_INDEX, OCI_LAYER_GZIP};
use crate::image::platform::Platform;
use crate::image::reference::Reference;
use crate::image::store::{put_blob_from, Store};
use crate::recipe::config::RegistryRef;
use crate::registry::Registry;
use crate::support::error::{Error, Result};

/// A base image: its layer descriptors and its config, both in a store.
#[derive(Debug, Clone)]
pub struct Base {
    pub layers: Vec<Descriptor>,
    pub config: serde_json::Value,
    /// For messages: where it came from.
    pub what: String,
}

/// Reads the image `manifest` from `store` and checks that it is for `platform`.
pub fn from_store(store: &Store, manifest: &str, platform: &Platform, what: &str) -> Result<Base> {
    let m: ManifestDoc = serde_json::from_slice(&store.read_blob(manifest)?)
        .map_err(|e| Error::usage(format!("base {what}: manifest {manifest} is not an image manifest: {e}")))?;
    let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&m.config.digest)?)
        .map_err(|e| Error::usage(format!("base {what}: config is not JSON: {e}")))?;
    let arch = config.get("architecture").and_then(|v| v.as_str()).unwrap_or("");
    let os = config.get("os").and_then(|v| v.as_str()).unwrap_or("");
    let variant = config.get("variant").and_then(|v| v.as_str());
    let same = os == platform.os
        && arch == platform.architecture
        && (variant == platform.variant.as_deref() || platform.variant.is_none());
    if !same {
        let have = format!("{os}/{arch}{}", variant.map(|v| format!("/{v}")).unwrap_or_default());
        return Err(Error::usage(format!(
            "base {what} is for {have}, not {platform}; use a base that has {platform} (or drop {platform} for this image)"
        )));
    }
    let diff_ids = config.pointer("/rootfs/diff_ids").and_then(|v| v.as_array()).map(|a| a.len()).unwrap_or(0);
    if diff_ids != m.layers.len() {
        return Err(Error::usage(format!("base {what}: config lists {diff_ids} layers, manifest {}", m.layers.len())));
    }
    let layers = m
        .layers
        .into_iter()
        .map(|mut l| {
            if l.media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip" {
                l.media_type = OCI_LAYER_GZIP.to_string();
            }
            l
        })
        .collect();
    Ok(Base { layers, config, what: what.to_string() })
}

/// A `docker save` tarball (with manifest.json or only the legacy parent chain).
pub fn docker_archive(staging: &Store, path: &Path, platform: &Platform, what: &str) -> Result<Base> {
    let file = std::fs::File::open(path).map_err(|e| Error::usage(format!("base {what}: {e}")))?;
    let images = crate::image::docker_archive::import_named(
        staging,
        std::io::BufReader::new(file),
        what,
        crate::image::docker_archive::Rewrite::AsIs,
    )
    .map_err(|e| Error::usage(e.message().to_string()))?;
    let mut last = None;
    for img in &images {
        match from_store(staging, &img.image.manifest.digest, platform, what) {
            Ok(b) => return Ok(b),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::usage(format!("base {what}: the archive holds no image"))))
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Child>,
}

#[derive(Deserialize)]
struct Child {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

/// An OCI image layout folder: index.json, possibly nested indexes, one manifest for
/// `platform`. Blobs are verified while they are copied into `staging`.
pub fn oci_layout(staging: &Store, dir: &Path, platform: &Platform, what: &str) -> Result<Base> {
    let read = |digest: &str| -> Result<Vec<u8>> {
        let p = dir
            .join("blobs/sha256")
            .join(digest_hex(digest).map_err(|e| Error::usage(format!("base {what}: {}", e.message())))?);
        let meta =
            std::fs::symlink_metadata(&p).map_err(|e| Error::usage(format!("base {what}: blob {digest}: {e}")))?;
        if !meta.is_file() {
            return Err(Error::usage(format!("base {what}: blob {digest} is not a regular file")));
        }
        let mut f = std::fs::File::open(&p).map_err(|e| Error::usage(format!("base {what}: {e}")))?;
        let d = put_blob_from(staging, "application/octet-stream", &mut f, Some(digest))
            .map_err(|e| Error::usage(format!("base {what}: blob {digest}: {}", e.message())))?;
        staging.read_blob(&d.digest)
    };
    let index_path = dir.join("index.json");
    let text =
        std::fs::read(&index_path).map_err(|e| Error::usage(format!("base {what}: {}: {e}", index_path.display())))?;
    let mut index: Index =
        serde_json::from_slice(&text).map_err(|e| Error::usage(format!("base {what}: index.json: {e}")))?;
    let mut seen = Vec::new();
    for depth in 1..=MAX_INDEX_DEPTH {
        let mut chosen = None;
        let mut nested = None;
        for c in &index.manifests {
            if let Some(p) = &c.platform {
                seen.push(p.to_string());
            }
            let is_index = c.media_type == OCI_INDEX || c.media_type.ends_with("manifest.list.v2+json");
            match &c.platform {
                _ if is_index => nested = Some(c.digest.clone()),
                Some(p)
                    if p.os == platform.os
                        && p.architecture == platform.architecture
                        && (p.variant == platform.variant || platform.variant.is_none()) =>
                {
                    chosen = Some(c.digest.clone())
                }
                None if chosen.is_none() => chosen = Some(c.digest.clone()),
                _ => {}
            }
        }
        if let Some(m) = chosen {
            let doc: ManifestDoc = serde_json::from_slice(&read(&m)?)
                .map_err(|e| Error::usage(format!("base {what}: manifest {m}: {e}")))?;
            read(&doc.config.digest)?;
            for l in &doc.layers {
                read_layer(staging, dir, &l.digest, what)?;
            }
            return from_store(staging, &m, platform, what);
        }
        match nested {
            Some(n) if depth == MAX_INDEX_DEPTH => {
                return Err(Error::usage(format!(
                    "base {what}: index.json nests image indexes more than {MAX_INDEX_DEPTH} deep (index {n} is \
                     at depth {}); archfarm follows at most {MAX_INDEX_DEPTH}: make index.json name the image index \
                     or the manifest for {platform} directly",
                    depth + 1
                )))
            }
            Some(n) => {
                index = serde_json::from_slice(&read(&n)?)
                    .map_err(|e| Error::usage(format!("base {what}: index {n}: {e}")))?
            }
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    let has = if seen.is_empty() { "no platform".to_string() } else { seen.join(", ") };
    Err(Error::usage(format!("base {what} has no image for {platform} (it has {has}); use a base that has {platform}")))
}

/// How deep index.json may nest image indexes (an index of indexes of manifests is 2).
pub const MAX_INDEX_DEPTH: usize = 4;

fn read_layer(staging: &Store, dir: &Path, digest: &str, what: &str) -> Result<()> {
    let p = dir
        .join("blobs/sha256")
        .join(digest_hex(digest).map_err(|e| Error::usage(format!("base {what}: {}", e.message())))?);
    let mut f = std::fs::File::open(&p).map_err(|e| Error::usage(format!("base {what}: layer {digest}: {e}")))?;
    put_blob_from(staging, OCI_LAYER_GZIP, &mut f, Some(digest))
        .map_err(|e| Error::usage(format!("base {what}: layer {digest}: {}", e.message())))?;
    Ok(())
}

/// A registry client, repository and tag-or-digest for `reference` (parsed as `docker
/// pull` does, [`Reference`]). Loopback registries use plain HTTP, all others verified TLS.
pub fn registry_parts(reference: &str) -> Result<(Registry, String, String)> {
    let r = Reference::parse(reference)?;
    let registry = Registry::new(&RegistryRef::serving(&r, &[]))?;
    Ok((registry, r.repository.clone(), r.lookup().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_bases_are_references() {
        let (registry, repo, lookup) = registry_parts("busybox:1.31.1").unwrap();
        assert_eq!(
            (registry.host(), repo.as_str(), lookup.as_str()),
            ("registry-1.docker.io", "library/busybox", "1.31.1")
        );
        let (registry, repo, lookup) = registry_parts("127.0.0.1:5000/a/b").unwrap();
        assert_eq!((registry.host(), repo.as_str(), lookup.as_str()), ("127.0.0.1:5000", "a/b", "latest"));
        for (bad, says) in [
            (":/0", "not a host name"),
            ("./a", "not a host name"),
            ("host:port/x", "port 'port' is not a number"),
            ("x@", "not algorithm:hex"),
        ] {
            let e = registry_parts(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.message().contains(says), "{bad}: {}", e.message());
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            /// A `docker://` base is accepted exactly when it is a reference, and asks its
            /// registry for what the reference looks up.
            #[test]
            fn registry_bases_agree_with_references(text in "[a-zA-Z0-9:/@._\\[\\]-]{0,40}") {
                match (registry_parts(&text), Reference::parse(&text)) {
                    (Ok((registry, repo, lookup)), Ok(r)) => {
                        prop_assert_eq!(registry.host(), r.api_host());
                        prop_assert_eq!((repo.as_str(), lookup.as_str()), (r.repository.as_str(), r.lookup()));
                    }
                    (Err(_), Err(_)) => {}
                    (parts, r) => prop_assert!(false, "{text}: parts {:?}, reference {r:?}", parts.map(|p| p.1)),
                }
            }
        }
    }
}
