//! The local store: a content-addressed OCI layout that every backend writes to and
//! every publisher reads from. Blobs live at `blobs/sha256/<hex>` (the OCI image layout);
//! memo entries at `keys/<key>.json` say which manifest a content key produced.
//!
//! Every write is atomic: a blob is streamed to a temporary file in the store, hashed
//! on the way, fsynced and renamed into place only if its digest is what it claims; a
//! memo entry is written only after every blob it points at is present. A crash leaves
//! at most a stray temporary file, never a half-written blob or entry. Concurrent
//! invocations are safe without locks: names are content digests and renames atomic.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::platform::Platform;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A content descriptor, with the OCI field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    pub size: u64,
}

/// What one content key produced: a per-platform image manifest in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub image: String,
    pub platform: Platform,
    pub manifest: Descriptor,
    /// The config digest: the image ID an engine gives this image once it is loaded
    /// there (an engine's own build has another ID until its rewrite is loaded).
    pub config_digest: String,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:` digest, refusing anything else (digests become file names).
pub fn digest_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => Ok(h),
        _ => Err(Error::failure(format!("invalid digest '{digest}': expected sha256:<64 lowercase hex>"))),
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        for dir in [root.join("blobs/sha256"), root.join("keys"), root.join("tmp"), root.join("logs")] {
            fs::create_dir_all(&dir).map_err(|e| Error::io("creating store folder", &dir, e))?;
        }
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(root, &layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(Store { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where build logs go: `logs/<image with / as _>/<platform slug>-<key>.log`.
    pub fn log_path(&self, image: &str, platform: &Platform, key: &str) -> PathBuf {
        self.root.join("logs").join(image.replace('/', "_")).join(format!("{}-{key}.log", platform.tag_slug()))
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(|e| Error::io("reading blob", &path, e))
    }

    pub fn open_blob(&self, digest: &str) -> Result<File> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|e| Error::io("opening blob", &path, e))
    }

    /// Stores `bytes` as a blob and returns its descriptor.
    pub fn put_blob(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(|e| Error::io("writing blob to", &self.root, e))?;
        w.commit(media_type, None)
    }

    /// A streaming writer for one blob; nothing is visible until [`BlobWriter::commit`].
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))
            .map_err(|e| Error::io("creating temporary blob in", &self.root, e))?;
        Ok(BlobWriter { store: self.clone(), tmp, hasher: Sha256::new(), size: 0 })
    }

    /// The memo entry for `key`, if this store has one whose manifest blob is present.
    pub fn entry(&self, key: &str) -> Result<Option<Entry>> {
        let path = self.entry_path(key)?;
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading memo entry", &path, e)),
        };
        let entry: Entry = serde_json::from_slice(&text)
            .map_err(|e| Error::failure(format!("{}: corrupt memo entry ({e}); delete it", path.display())))?;
        Ok(self.has_blob(&entry.manifest.digest).then_some(entry))
    }

    /// Records `entry`, after checking that its manifest and every blob it names are here.
    pub fn put_entry(&self, entry: &Entry) -> Result<()> {
        for digest in self.manifest_blobs(&entry.manifest.digest)? {
            if !self.has_blob(&digest) {
                return Err(Error::failure(format!(
                    "memo entry for {} {} refused: blob {digest} is missing from the store",
                    entry.image, entry.platform
                )));
            }
        }
        let path = self.entry_path(&entry.key)?;
        let text = serde_json::to_vec_pretty(entry).expect("entries serialize");
        write_atomic(&self.root, &path, &text)
    }

    /// Every blob digest a manifest refers to (config then layers), read from the store.
    pub fn manifest_blobs(&self, manifest_digest: &str) -> Result<Vec<String>> {
        let manifest: crate::oci::ManifestDoc = serde_json::from_slice(&self.read_blob(manifest_digest)?)
            .map_err(|e| Error::failure(format!("manifest {manifest_digest} in the store is not valid JSON: {e}")))?;
        let mut out = vec![manifest.config.digest];
        out.extend(manifest.layers.into_iter().map(|l| l.digest));
        Ok(out)
    }

    fn entry_path(&self, key: &str) -> Result<PathBuf> {
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::failure(format!("invalid content key '{key}'")));
        }
        Ok(self.root.join("keys").join(format!("{key}.json")))
    }
}

/// A blob being written: hashed as it streams, renamed into place on commit.
pub struct BlobWriter {
    store: Store,
    tmp: tempfile::NamedTempFile,
    hasher: Sha256,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The file itself, not NamedTempFile's Write, whose errors hide the OS error number.
        let n = self
            .tmp
            .as_file_mut()
            .write(buf)
            .map_err(|e| crate::error::mark_disk_error("writing", self.tmp.path(), e))?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tmp.as_file_mut().flush().map_err(|e| crate::error::mark_disk_error("writing", self.tmp.path(), e))
    }
}

impl BlobWriter {
    /// Finishes the blob. With `expected`, a digest mismatch discards it and fails.
    pub fn commit(mut self, media_type: &str, expected: Option<&str>) -> Result<Descriptor> {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if let Some(want) = expected {
            if want != digest {
                return Err(Error::failure(format!("blob digest mismatch: expected {want}, got {digest}")));
            }
        }
        let dest = self.store.blob_path(&digest)?;
        self.tmp.flush().map_err(|e| Error::io("writing blob", &dest, e))?;
        if !dest.exists() {
            self.tmp.as_file().sync_all().map_err(|e| Error::io("syncing blob", &dest, e))?;
            self.tmp.persist(&dest).map_err(|e| Error::io("storing blob", &dest, e.error))?;
        }
        Ok(Descriptor { media_type: media_type.to_string(), digest, size: self.size })
    }
}

/// A writer that hashes what passes through it.
pub struct HashWriter<W> {
    pub inner: W,
    pub hasher: Sha256,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies `reader` into a new blob, verifying `expected` if given.
pub fn put_blob_from(
    store: &Store,
    media_type: &str,
    reader: &mut dyn Read,
    expected: Option<&str>,
) -> Result<Descriptor> {
    let mut w = store.blob_writer()?;
    io::copy(reader, &mut w).map_err(|e| Error::io("writing blob to", store.root(), e))?;
    w.commit(media_type, expected)
}

/// Writes `bytes` to `path` atomically: temporary file in `tmp_root`/tmp, fsync, rename.
pub fn write_atomic(tmp_root: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp_dir = tmp_root.join("tmp");
    let dir = if tmp_dir.is_dir() { tmp_dir } else { path.parent().unwrap_or(Path::new(".")).to_path_buf() };
    let mut tmp =
        tempfile::NamedTempFile::new_in(&dir).map_err(|e| Error::io("creating temporary file in", &dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io("writing", path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io("syncing", path, e))?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("creating folder", parent, e))?;
    }
    tmp.persist(path).map_err(|e| Error::io("renaming into place", path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform() -> Platform {
        Platform { os: "linux".into(), architecture: "arm64".into(), variant: None }
    }

    #[test]
    fn blobs_are_content_addressed_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.put_blob(OCI_CONFIG, b"hello").unwrap();
        assert_eq!(d.digest, digest_of(b"hello"));
        assert_eq!(store.read_blob(&d.digest).unwrap(), b"hello");
        let bad = put_blob_from(&store, OCI_CONFIG, &mut &b"other"[..], Some(&d.digest)).unwrap_err();
        assert!(bad.message().contains("mismatch"));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no temporary file left");
    }

    #[test]
    fn entry_refused_until_every_blob_is_present() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let config = store.put_blob(OCI_CONFIG, b"{}").unwrap();
        let missing_layer = digest_of(b"layer");
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": missing_layer, "size": 5}],
        });
        let m = store.put_blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap()).unwrap();
        let entry = Entry {
            key: "a".repeat(64),
            image: "x".into(),
            platform: platform(),
            manifest: m,
            config_digest: config.digest.clone(),
        };
        assert!(store.put_entry(&entry).is_err());
        assert_eq!(store.entry(&entry.key).unwrap(), None);
        store.put_blob(OCI_LAYER_GZIP, b"layer").unwrap();
        store.put_entry(&entry).unwrap();
        assert_eq!(store.entry(&entry.key).unwrap(), Some(entry));
    }

    #[test]
    fn digests_that_are_not_sha256_hex_are_refused() {
        for bad in ["sha256:../../etc/passwd", "md5:abc", "sha256:ABC"] {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
    }
}
