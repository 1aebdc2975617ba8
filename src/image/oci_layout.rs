//! The OCI-layout sink: an image from the store written as an OCI image layout folder
//! (`oci-layout`, `index.json`, `blobs/sha256`), as `umoci` and `skopeo oci:` read it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::image::oci::{digest_hex, ManifestDoc, OCI_INDEX};
use crate::image::store::{Store, StoredImage};
use crate::support::error::{Error, Result};
use crate::support::fs::{write_atomically, WriteOptions};

/// Writes `image` (and every blob it names) from `store` as an OCI image layout in `dir`,
/// with index.json naming it `ref_name` (`umoci --image DIR:ref_name`). Each blob is
/// hashed on its way out (a corrupt one fails the export and is forgotten by the store),
/// then hard-linked from the store when possible, else copied; blobs already in `dir`
/// are kept; index.json is written last.
pub fn write(store: &Store, image: &StoredImage, ref_name: &str, dir: &Path) -> Result<()> {
    let manifest = &image.manifest;
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|e| Error::io("creating", &blobs, e))?;
    let doc: ManifestDoc = serde_json::from_slice(&store.read_blob(&manifest.digest)?)
        .map_err(|e| Error::failure(format!("manifest {} in the store is not valid: {e}", manifest.digest)))?;
    for d in std::iter::once(&doc.config).chain(&doc.layers).chain([manifest]) {
        store.verify_blob(&d.digest, d.size)?;
        let src = store.blob_path(&d.digest)?;
        let dest = blob_path(&blobs, &d.digest)?;
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

fn blob_path(blobs: &Path, digest: &str) -> Result<PathBuf> {
    Ok(blobs.join(digest_hex(digest)?))
}
