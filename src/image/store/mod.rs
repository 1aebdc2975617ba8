//! The local store: content-addressed blobs that every backend writes to and every sink
//! reads from. Blobs live at `blobs/sha256/<hex>`, as in an OCI image layout, but the
//! store is not one (it writes no `index.json`): memo entries at `keys/<key>.json` say
//! which image ([`StoredImage`]) a content key produced. `image::oci_layout` writes real
//! layouts from it.
//!
//! Every write is atomic: a blob is streamed to a temporary file in the process's own
//! folder under `tmp/`, hashed on the way, fsynced and renamed into place only if its
//! digest is what it claims; a memo entry is written only after every blob it points at
//! is present. A crash leaves at most temporary files, never a half-written blob or
//! entry, and the next process to open the store removes them ([`claim`]). Concurrent
//! invocations need no more than that (names are content digests, renames atomic), except
//! `archfarm store gc`, which takes the store to itself ([`maintenance`]).
//!
//! What is read back is checked. A blob read whole (a manifest, a config) is hashed on
//! every read; every path that streams one out (pushes, exports, engine loads) hashes it
//! on the way ([`Outgoing`], [`Store::verify_blob`]). A blob found corrupt is removed with
//! the memo entries that use it, so the next run builds or fetches those images again
//! instead of failing on every run ([`Store::corrupt`]). A memo entry counts only when it
//! parses, its manifest and config hash right and every layer is present with its size;
//! otherwise its job is a miss. Layers are not hashed on a memo hit (that would read the
//! whole image on every no-change run): their way out and `store verify` do that.

mod claim;
pub mod maintenance;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::image::oci::{digest_hex, digest_of, Descriptor, ManifestDoc};
use crate::image::platform::Platform;
use crate::support::error::{Error, Result};
use crate::support::fs::{write_atomically, WriteOptions};

/// An image in the store: a per-platform manifest whose config and layers are all in
/// the store. Every backend produces one, the memo records one, and every sink (registry
/// push, engine load, OCI layout, docker-archive) takes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    pub manifest: Descriptor,
    /// The config digest: the image ID an engine gives this image once it is loaded
    /// there (an engine's own build has another ID until its rewrite is loaded).
    pub config_digest: String,
}

/// What one content key produced: which image, for which platform, in the store.
/// On disk the stored image's fields sit beside the others (`manifest`, `config_digest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub image: String,
    pub platform: Platform,
    #[serde(flatten)]
    pub stored: StoredImage,
    /// The SLSA provenance statement (a blob here) of the build that made it, when
    /// archfarm built it: attached when the image is pushed. Absent in older entries and
    /// for images found in an engine or fetched from a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Descriptor>,
}

/// The `sha256:` digest and length of a file's content.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((format!("sha256:{}", hex::encode(hasher.finalize())), len));
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// What is wrong with content read back for `digest` (`size` bytes), if anything.
fn mismatch(digest: &str, size: u64, found: &str, len: u64) -> Option<String> {
    if len != size {
        Some(format!("it has {len} bytes where the manifest says {size}"))
    } else if found != digest {
        Some(format!("its content hashes to {found}"))
    } else {
        None
    }
}

/// What reading a blob back found.
enum Fault {
    Missing,
    /// What is wrong with it.
    Corrupt(String),
    Failed(Error),
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// Where this store's temporary files go: the process's own folder under `tmp/`
    /// (or, for a staging store, its `tmp/`).
    tmp: PathBuf,
    /// This process's claim on the store; a staging store shares its main store's claim,
    /// since it lives inside the claimed folder.
    claim: Option<Arc<claim::Claim>>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, and removes what killed runs left
    /// in its `tmp/` (see [`claim`]).
    pub fn open(root: &Path) -> Result<Self> {
        let store = Store::open_unswept(root)?;
        claim::sweep(&root.join("tmp"), Some(&store.tmp), false);
        Ok(store)
    }

    /// [`Store::open`] without removing stale staging: for `store gc`, which reports it.
    pub(crate) fn open_unswept(root: &Path) -> Result<Self> {
        usable_root(root)?;
        create_layout(root)?;
        let claim = claim::Claim::new(root, &root.join("tmp"))?;
        Ok(Store { root: root.to_path_buf(), tmp: claim.dir().to_path_buf(), claim: Some(Arc::new(claim)) })
    }

    /// The store at `root` as it is, without a claim: only to forget corrupt blobs.
    fn unclaimed(root: &Path) -> Store {
        Store { root: root.to_path_buf(), tmp: root.join("tmp"), claim: None }
    }

    /// The image `manifest` names in this store, its config digest read from the manifest.
    pub fn image(&self, manifest: &Descriptor) -> Result<StoredImage> {
        let doc: ManifestDoc = serde_json::from_slice(&self.read_blob(&manifest.digest)?)
            .map_err(|e| Error::failure(format!("manifest {} in the store is not valid: {e}", manifest.digest)))?;
        Ok(StoredImage { manifest: manifest.clone(), config_digest: doc.config.digest })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where this process's temporary files for this store go.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// A store of its own inside this one's temporary folder, for work committed into
    /// this store only once complete (the assembler's staging). It is removed with the
    /// returned folder, or with the process's folder when the process dies first.
    pub fn staging(&self, prefix: &str) -> Result<(tempfile::TempDir, Store)> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.tmp)
            .map_err(|e| Error::io("creating a staging folder in", &self.tmp, e))?;
        create_layout(dir.path())?;
        let store = Store { root: dir.path().to_path_buf(), tmp: dir.path().join("tmp"), claim: self.claim.clone() };
        Ok((dir, store))
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

    /// The whole blob, verified against its digest (a corrupt one is removed: see
    /// [`Store::corrupt`]). For small blobs: manifests and configs.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        self.load(digest).map_err(|f| match f {
            Fault::Missing => Error::failure(format!(
                "blob {digest} is missing from the store {}; run again to build or fetch what needs it",
                self.root.display()
            )),
            Fault::Corrupt(found) => self.corrupt(digest, &found),
            Fault::Failed(e) => e,
        })
    }

    fn load(&self, digest: &str) -> std::result::Result<Vec<u8>, Fault> {
        let path = self.blob_path(digest).map_err(Fault::Failed)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Fault::Missing),
            Err(e) => return Err(Fault::Failed(Error::io("reading blob", &path, e))),
        };
        let found = digest_of(&bytes);
        if found != digest {
            return Err(Fault::Corrupt(format!("its content hashes to {found}")));
        }
        Ok(bytes)
    }

    /// The blob's file, unverified: whoever streams it out checks it on the way
    /// ([`Outgoing`]).
    pub fn open_blob(&self, digest: &str) -> Result<File> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|e| Error::io("opening blob", &path, e))
    }

    /// Reads blob `digest` in full and fails, as [`Store::corrupt`], unless it is
    /// `size` bytes that hash to its digest.
    pub fn verify_blob(&self, digest: &str, size: u64) -> Result<()> {
        let path = self.blob_path(digest)?;
        let (found, len) = hash_file(&path).map_err(|e| Error::io("reading blob", &path, e))?;
        match mismatch(digest, size, &found, len) {
            Some(why) => Err(self.corrupt(digest, &why)),
            None => Ok(()),
        }
    }

    /// The error for blob `digest` found corrupt (`found`: what is wrong with it), after
    /// removing the blob and every memo entry that uses it, so that the next run builds
    /// or fetches those images again instead of failing the same way.
    pub fn corrupt(&self, digest: &str, found: &str) -> Error {
        let forgotten = self.forget_blob(digest);
        let entries = match forgotten.is_empty() {
            true => String::new(),
            false => format!(" and the memo entries that use it ({})", forgotten.join(", ")),
        };
        Error::failure(format!(
            "blob {digest} in the store {} is corrupt ({found}); archfarm removed it{entries}, so the \
             next run builds or fetches it again; `archfarm store verify` checks the rest of the store",
            self.root.display()
        ))
    }

    /// Removes blob `digest` and every memo entry whose image uses it; returns those
    /// entries as `image platform`.
    pub fn forget_blob(&self, digest: &str) -> Vec<String> {
        if let Ok(path) = self.blob_path(digest) {
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(%digest, "removed corrupt blob"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cannot remove corrupt blob {}: {e}", path.display()),
            }
        }
        let mut forgotten = Vec::new();
        for (path, entry) in self.entries_as_written() {
            // Unverified reads: this runs while handling a corrupt blob, never recursing.
            let uses = entry.stored.manifest.digest == digest
                || entry.stored.config_digest == digest
                || self
                    .manifest_blobs_unverified(&entry.stored.manifest.digest)
                    .is_some_and(|b| b.iter().any(|d| d == digest));
            if uses && fs::remove_file(&path).is_ok() {
                forgotten.push(format!("{} {}", entry.image, entry.platform));
            }
        }
        forgotten.sort();
        forgotten
    }

    /// Every memo entry file that parses, with its path (nothing checked or verified).
    fn entries_as_written(&self) -> Vec<(PathBuf, Entry)> {
        let dir = self.root.join("keys");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            if let Some(entry) = fs::read(&path).ok().and_then(|t| serde_json::from_slice::<Entry>(&t).ok()) {
                out.push((path, entry));
            }
        }
        out
    }

    fn manifest_blobs_unverified(&self, manifest: &str) -> Option<Vec<String>> {
        let doc: crate::image::oci::ManifestDoc =
            serde_json::from_slice(&fs::read(self.blob_path(manifest).ok()?).ok()?).ok()?;
        Some(std::iter::once(doc.config.digest).chain(doc.layers.into_iter().map(|l| l.digest)).collect())
    }

    /// Stores `bytes` as a blob and returns its descriptor.
    pub fn put_blob(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(|e| Error::io("writing blob to", &self.root, e))?;
        w.commit(media_type, None)
    }

    /// A streaming writer for one blob; nothing is visible until [`BlobWriter::commit`].
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let tmp = crate::support::fs::temp_file(&self.tmp, None)?;
        Ok(BlobWriter { store: self.clone(), tmp, hasher: Sha256::new(), size: 0 })
    }

    /// The memo entry for `key`, if this store has a usable one (see the module doc); an
    /// unusable one is a miss, with a warning that says why, so the job is done again.
    pub fn entry(&self, key: &str) -> Result<Option<Entry>> {
        let path = self.entry_path(key)?;
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading memo entry", &path, e)),
        };
        match self.check_entry(key, &text) {
            Ok(entry) => Ok(Some(entry)),
            Err(unusable) => {
                if let Some(digest) = &unusable.corrupt {
                    self.forget_blob(digest);
                }
                tracing::warn!(
                    "memo entry {} is not used: {}; its job counts as a miss (built or fetched again)",
                    path.display(),
                    unusable.why
                );
                Ok(None)
            }
        }
    }

    /// Whether the memo entry `text` (read for `key`) can be used; nothing is changed.
    pub(crate) fn check_entry(&self, key: &str, text: &[u8]) -> std::result::Result<Entry, Unusable> {
        let unusable = |why: String| Unusable { why, corrupt: None };
        let entry: Entry = serde_json::from_slice(text).map_err(|e| unusable(format!("it is not valid ({e})")))?;
        if entry.key != key {
            return Err(unusable(format!("it is the entry of key {}", entry.key)));
        }
        let doc = |what: &str, d: &Descriptor| -> std::result::Result<Vec<u8>, Unusable> {
            let bytes = self.load(&d.digest).map_err(|f| match f {
                Fault::Missing => unusable(format!("its {what} {} is missing", d.digest)),
                Fault::Corrupt(found) => Unusable {
                    why: format!("its {what} {} is corrupt ({found})", d.digest),
                    corrupt: Some(d.digest.clone()),
                },
                Fault::Failed(e) => unusable(e.message().to_string()),
            })?;
            match bytes.len() as u64 == d.size {
                true => Ok(bytes),
                false => Err(unusable(format!("its {what} {} has {} bytes, not {}", d.digest, bytes.len(), d.size))),
            }
        };
        let manifest: crate::image::oci::ManifestDoc =
            serde_json::from_slice(&doc("manifest", &entry.stored.manifest)?).map_err(|e| {
                unusable(format!("its manifest {} is not a manifest ({e})", entry.stored.manifest.digest))
            })?;
        if manifest.config.digest != entry.stored.config_digest {
            return Err(unusable(format!(
                "its manifest's config is {}, not {}",
                manifest.config.digest, entry.stored.config_digest
            )));
        }
        doc("config", &manifest.config)?;
        for layer in &manifest.layers {
            let path = self.blob_path(&layer.digest).map_err(|e| unusable(e.message().to_string()))?;
            match fs::metadata(&path) {
                Ok(m) if m.len() == layer.size => {}
                Ok(m) => {
                    return Err(Unusable {
                        why: format!("its layer {} has {} bytes, not {}", layer.digest, m.len(), layer.size),
                        corrupt: Some(layer.digest.clone()),
                    })
                }
                Err(_) => return Err(unusable(format!("its layer {} is missing", layer.digest))),
            }
        }
        Ok(entry)
    }

    /// Records `entry`, after checking that its manifest and every blob it names are here.
    pub fn put_entry(&self, entry: &Entry) -> Result<()> {
        for digest in self.manifest_blobs(&entry.stored.manifest.digest)? {
            if !self.has_blob(&digest) {
                return Err(Error::failure(format!(
                    "memo entry for {} {} refused: blob {digest} is missing from the store",
                    entry.image, entry.platform
                )));
            }
        }
        let path = self.entry_path(&entry.key)?;
        let text = serde_json::to_vec_pretty(entry).expect("entries serialize");
        write_atomically(&path, &text, WriteOptions::temp_in(&self.tmp))
    }

    /// Every blob digest a manifest refers to (config then layers), read from the store.
    pub fn manifest_blobs(&self, manifest_digest: &str) -> Result<Vec<String>> {
        let manifest: crate::image::oci::ManifestDoc = serde_json::from_slice(&self.read_blob(manifest_digest)?)
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

/// Why a memo entry cannot be used, and the blob to blame when one is corrupt.
#[derive(Debug)]
pub(crate) struct Unusable {
    pub why: String,
    pub corrupt: Option<String>,
}

/// [`Store::corrupt`] for a blob known by its path in a store, `<root>/blobs/sha256/<hex>`.
pub fn corrupt_blob_at(path: &Path, found: &str) -> Error {
    let hex = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match path.parent().and_then(Path::parent).and_then(Path::parent) {
        Some(root) => Store::unclaimed(root).corrupt(&format!("sha256:{hex}"), found),
        None => Error::failure(format!("blob {} is corrupt ({found})", path.display())),
    }
}

/// Refuses a store path that cannot be a folder: a configuration error, naming the flag.
fn usable_root(root: &Path) -> Result<()> {
    let hint = "point --store (or ARCHFARM_STORE, or `store:` in archfarm.yaml) at a folder";
    if fs::metadata(root).is_ok_and(|m| !m.is_dir()) {
        return Err(Error::usage(format!("the store {} is not a folder; {hint}", root.display())));
    }
    fs::create_dir_all(root).map_err(|e| match e.kind() {
        io::ErrorKind::NotADirectory
        | io::ErrorKind::AlreadyExists
        | io::ErrorKind::PermissionDenied
        | io::ErrorKind::ReadOnlyFilesystem => {
            Error::usage(format!("the store {} cannot be created ({e}); {hint} that can be written", root.display()))
        }
        _ => Error::io("creating the store", root, e),
    })
}

/// The folders and `oci-layout` of a store at `root`.
fn create_layout(root: &Path) -> Result<()> {
    for dir in [root.join("blobs/sha256"), root.join("keys"), root.join("tmp"), root.join("logs")] {
        fs::create_dir_all(&dir).map_err(|e| Error::io("creating store folder", &dir, e))?;
    }
    let layout = root.join("oci-layout");
    if !layout.exists() {
        write_atomically(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#, WriteOptions::temp_in(&root.join("tmp")))?;
    }
    Ok(())
}

/// Hashes a blob as it leaves the store, across retried uploads and resumed chunks: bytes
/// count only where they continue what was hashed so far, so each byte is hashed once.
pub struct Outgoing {
    blob: Descriptor,
    /// The hash of the first `.1` bytes.
    state: Mutex<(Sha256, u64)>,
    /// The message of [`Store::corrupt`], once it was said (the blob is forgotten once).
    said: std::sync::OnceLock<String>,
}

impl Outgoing {
    pub fn new(blob: &Descriptor) -> Outgoing {
        Outgoing { blob: blob.clone(), state: Mutex::new((Sha256::new(), 0)), said: Default::default() }
    }

    /// Takes `bytes`, read at `offset` in the blob.
    pub fn feed(&self, offset: u64, bytes: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (hasher, done) = &mut *state;
        let end = offset + bytes.len() as u64;
        if offset <= *done && end > *done {
            hasher.update(&bytes[(*done - offset) as usize..]);
            *done = end;
        }
    }

    /// What is wrong, once every byte went through and they are not the blob's.
    pub fn wrong(&self) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (hasher, done) = &*state;
        if *done < self.blob.size {
            return None;
        }
        let found = format!("sha256:{}", hex::encode(hasher.clone().finalize()));
        mismatch(&self.blob.digest, self.blob.size, &found, *done)
    }

    /// The error of [`Store::corrupt`] when every byte went through and they were wrong
    /// (the blob and its memo entries are forgotten on the first call only).
    pub fn verdict(&self, store: &Store) -> Option<Error> {
        let why = self.wrong()?;
        let said = self.said.get_or_init(|| store.corrupt(&self.blob.digest, &why).message().to_string());
        Some(Error::failure(said.clone()))
    }

    /// After the blob went out: fails as [`Store::corrupt`] when its bytes were wrong
    /// (hashing the rest from the file when not every byte went through here).
    pub fn check(&self, store: &Store) -> Result<()> {
        let complete = self.state.lock().unwrap_or_else(|p| p.into_inner()).1 >= self.blob.size;
        match (complete, self.verdict(store)) {
            (true, Some(e)) => Err(e),
            (true, None) => Ok(()),
            (false, _) => store.verify_blob(&self.blob.digest, self.blob.size),
        }
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
            .map_err(|e| crate::support::error::mark_disk_error("writing", self.tmp.path(), e))?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tmp
            .as_file_mut()
            .flush()
            .map_err(|e| crate::support::error::mark_disk_error("writing", self.tmp.path(), e))
    }
}

impl BlobWriter {
    /// Finishes the blob. With `expected`, a digest mismatch discards it and fails.
    pub fn commit(self, media_type: &str, expected: Option<&str>) -> Result<Descriptor> {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if let Some(want) = expected {
            if want != digest {
                return Err(Error::failure(format!("blob digest mismatch: expected {want}, got {digest}")));
            }
        }
        let dest = self.store.blob_path(&digest)?;
        // A blob already there is kept, unless its size says it is not this content.
        if !fs::metadata(&dest).is_ok_and(|m| m.len() == self.size) {
            crate::support::fs::persist(self.tmp, &dest)?;
        }
        Ok(Descriptor::new(media_type, digest, self.size))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::oci::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};

    fn platform() -> Platform {
        Platform { os: "linux".into(), architecture: "arm64".into(), variant: None }
    }

    /// Stores an image (config `{}`, `layers`, its manifest) in `store` and returns its
    /// entry for a key of `k`s (image `x`, linux/arm64), not recorded yet.
    pub(super) fn image(store: &Store, k: char, layers: &[&[u8]]) -> Entry {
        let config = store.put_blob(OCI_CONFIG, b"{}").unwrap();
        let layers: Vec<Descriptor> = layers.iter().map(|l| store.put_blob(OCI_LAYER_GZIP, l).unwrap()).collect();
        let manifest =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers});
        let m = store.put_blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap()).unwrap();
        Entry {
            key: k.to_string().repeat(64),
            image: "x".into(),
            platform: platform(),
            stored: StoredImage { manifest: m, config_digest: config.digest },
            provenance: None,
        }
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
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0, "no temporary file left");
    }

    #[test]
    fn entry_refused_until_every_blob_is_present() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let entry = image(&store, 'a', &[b"layer"]);
        fs::remove_file(store.blob_path(&digest_of(b"layer")).unwrap()).unwrap();
        assert!(store.put_entry(&entry).is_err());
        assert_eq!(store.entry(&entry.key).unwrap(), None);
        store.put_blob(OCI_LAYER_GZIP, b"layer").unwrap();
        store.put_entry(&entry).unwrap();
        assert_eq!(store.entry(&entry.key).unwrap(), Some(entry));
    }

    #[test]
    fn a_store_path_that_is_a_file_is_a_usage_error_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        for root in [file.clone(), file.join("sub")] {
            let e = Store::open(&root).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{}", e.message());
            assert!(e.message().contains("--store") && e.message().contains(&*root.to_string_lossy()), "{e}");
        }
    }

    #[test]
    fn a_corrupt_blob_is_refused_on_read_and_forgotten_with_the_entries_using_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let entry = image(&store, 'e', &[]);
        let config = entry.stored.config_digest.clone();
        store.put_entry(&entry).unwrap();
        fs::write(store.blob_path(&config).unwrap(), b"[]").unwrap();
        let e = store.read_blob(&config).unwrap_err();
        assert!(e.message().contains(&config) && e.message().contains("x linux/arm64"), "{e}");
        assert!(e.message().contains(" so the next run builds") && !e.message().contains("  "), "{e}");
        assert!(!store.has_blob(&config));
        assert_eq!(store.entry(&entry.key).unwrap(), None, "the entry went with it");
        // Written again, the blob is whole.
        store.put_blob(OCI_CONFIG, b"{}").unwrap();
        assert_eq!(store.read_blob(&config).unwrap(), b"{}");
    }

    #[test]
    fn unusable_memo_entries_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = "f".repeat(64);
        fs::write(dir.path().join(format!("keys/{key}.json")), b"{garbage").unwrap();
        assert_eq!(store.entry(&key).unwrap(), None);
        let entry = image(&store, 'f', &[b"layer"]);
        let (m, layer) = (entry.stored.manifest.clone(), digest_of(b"layer"));
        store.put_entry(&entry).unwrap();
        assert_eq!(store.entry(&key).unwrap(), Some(entry));
        // A layer cut short: a miss, and the layer is gone (so the next write replaces it).
        fs::write(store.blob_path(&layer).unwrap(), b"lay").unwrap();
        assert_eq!(store.entry(&key).unwrap(), None);
        assert!(!store.has_blob(&layer));
        // A manifest with flipped bytes: a miss.
        store.put_blob(OCI_LAYER_GZIP, b"layer").unwrap();
        let mut bytes = fs::read(store.blob_path(&m.digest).unwrap()).unwrap();
        bytes[0] ^= 0x20;
        fs::write(store.blob_path(&m.digest).unwrap(), bytes).unwrap();
        assert_eq!(store.entry(&key).unwrap(), None);
    }

    #[test]
    fn outgoing_bytes_are_hashed_once_in_order_across_retries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blob = store.put_blob(OCI_LAYER_GZIP, b"0123456789").unwrap();
        let out = Outgoing::new(&blob);
        out.feed(0, b"0123");
        out.feed(0, b"012345"); // a retry from the start
        out.feed(8, b"89"); // a gap: not taken yet
        assert_eq!(out.wrong(), None, "not every byte went through");
        out.feed(4, b"4567");
        out.feed(8, b"89");
        assert_eq!(out.wrong(), None);
        out.check(&store).unwrap();

        let bad = Outgoing::new(&blob);
        bad.feed(0, b"0123456780");
        assert!(bad.wrong().unwrap().contains("hashes to"));
        let e = bad.check(&store).unwrap_err();
        assert!(e.message().contains(&blob.digest), "{e}");
        assert_eq!(bad.verdict(&store).unwrap().message(), e.message(), "said once, then repeated");
        assert!(!store.has_blob(&blob.digest));
    }

    #[test]
    fn digests_that_are_not_sha256_hex_are_refused() {
        for bad in ["sha256:../../etc/passwd", "md5:abc", "sha256:ABC"] {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
    }
}
