//! `archfarm store gc` and `archfarm store verify`: what a store may lose, and whether what
//! it holds is what it says.
//!
//! Only a usable memo entry (`keys/`) keeps blobs: its manifest, the config and the layers
//! that manifest names (a child's manifest names its farm parent's layers too). The other
//! records that name blobs do not need them: the base cache (`bases/`) keeps a resolved
//! digest, which stays true without the blob (a later fetch downloads what is missing),
//! and the assembler's layer cache (`assemble/layers/`) is checked against the store before
//! each use (a record whose blob is gone is a miss, and is rewritten when the layer is made
//! again). A staging store under `tmp/` holds its own blobs until it is committed.
//!
//! gc holds the store exclusively (see [`claim`](super::claim)), so no build is between
//! writing a blob and recording the entry that keeps it. Archfarm versions older than the
//! lock take none: do not run gc while one of them builds into the same store.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rayon::prelude::*;
use serde::Serialize;

use super::{claim, hash_file, Store};
use crate::image::oci::digest_hex;
use crate::support::error::{Error, Result};

/// A build log of a key with no memo entry (a failed or superseded build) is kept this long.
pub const LOG_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemovedKind {
    /// Temporary data of a process that is gone.
    Staging,
    /// A blob no usable memo entry needs.
    Blob,
    /// A memo entry that cannot be used.
    Entry,
    /// An old build log of a key with no memo entry.
    Log,
}

/// Something gc removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub kind: RemovedKind,
    pub path: PathBuf,
    pub bytes: u64,
    /// A blob's digest; an unusable memo entry's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub removed: Vec<Removed>,
    pub bytes_freed: u64,
}

/// Removes (with `dry_run`, only lists) what nothing needs: stale staging, unusable memo
/// entries, blobs no usable entry uses, and logs of keys without an entry older than
/// [`LOG_AGE`]. Fails, removing nothing, while another archfarm process has the store open.
pub fn gc(store: &Store, dry_run: bool) -> Result<GcReport> {
    let tmp = store.root.join("tmp");
    let claim = store.claim.as_ref().ok_or_else(|| Error::failure("gc needs a store opened with Store::open"))?;
    claim.exclusive(&tmp)?;
    let mut removed = claim::sweep(&tmp, Some(claim.dir()), dry_run);
    let remove = |path: &Path| -> Result<()> {
        match dry_run {
            true => Ok(()),
            false => fs::remove_file(path).map_err(|e| Error::io("removing", path, e)),
        }
    };

    let mut live_blobs = BTreeSet::new();
    let mut live_keys = BTreeSet::new();
    for (key, path) in entry_files(store) {
        let text = fs::read(&path).map_err(|e| Error::io("reading memo entry", &path, e))?;
        match store.check_entry(&key, &text) {
            Ok(entry) => {
                live_blobs.extend(store.manifest_blobs_unverified(&entry.stored.manifest.digest).unwrap_or_default());
                live_blobs.insert(entry.stored.manifest.digest);
                live_blobs.extend(entry.provenance.map(|p| p.digest));
                live_keys.insert(key);
            }
            Err(unusable) => {
                remove(&path)?;
                let bytes = text.len() as u64;
                removed.push(Removed { kind: RemovedKind::Entry, path, bytes, what: Some(unusable.why) });
            }
        }
    }
    for (digest, path) in blob_files(store).into_iter().filter_map(|(d, p)| Some((d?, p))) {
        if !live_blobs.contains(&digest) {
            let bytes = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
            remove(&path)?;
            removed.push(Removed { kind: RemovedKind::Blob, path, bytes, what: Some(digest) });
        }
    }
    let now = SystemTime::now();
    let logs = store.root.join("logs");
    for dir in list(&logs) {
        for path in list(&dir) {
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            let old = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).is_some_and(|a| a >= LOG_AGE);
            if meta.is_file() && old && !log_key(&path).is_some_and(|k| live_keys.contains(k)) {
                remove(&path)?;
                removed.push(Removed { kind: RemovedKind::Log, path, bytes: meta.len(), what: None });
            }
        }
        if !dry_run {
            let _ = fs::remove_dir(&dir); // only when it is empty now
        }
    }
    let bytes_freed = removed.iter().map(|r| r.bytes).sum();
    Ok(GcReport { dry_run, removed, bytes_freed })
}

/// The key of a build log `<platform slug>-<key>.log`.
fn log_key(path: &Path) -> Option<&str> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".log")?;
    let key = stem.get(stem.len().checked_sub(64)?..)?;
    key.bytes().all(|b| b.is_ascii_hexdigit()).then_some(key)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    Blob,
    Entry,
}

/// Something `verify` found wrong.
#[derive(Debug, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub path: PathBuf,
    pub what: String,
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub blobs: usize,
    pub bytes: u64,
    pub entries: usize,
    pub problems: Vec<Problem>,
    /// Whether the corrupt blobs and unusable entries were removed (`--repair`).
    pub repaired: bool,
}

/// Hashes every blob and checks every memo entry (it parses, its manifest and config
/// hash right, every blob it needs is present with its size and not corrupt). With
/// `repair`, removes every corrupt blob and every memo entry found unusable.
pub fn verify(store: &Store, repair: bool) -> Result<VerifyReport> {
    let blobs = blob_files(store);
    let hashed: Vec<_> = blobs.into_par_iter().map(|(digest, path)| (digest, hash_file(&path), path)).collect();
    let mut problems = Vec::new();
    let mut corrupt = BTreeSet::new();
    let mut bytes = 0;
    let count = hashed.len();
    for (digest, result, path) in hashed {
        let what = match (digest, result) {
            (None, _) => "it is not a blob: its name is not a sha256 digest".to_string(),
            (Some(_), Err(e)) => format!("it cannot be read: {e}"),
            (Some(d), Ok((found, len))) => {
                bytes += len;
                if found == d {
                    continue;
                }
                corrupt.insert(d);
                format!("it is corrupt: its content hashes to {found}")
            }
        };
        problems.push(Problem { kind: ProblemKind::Blob, path, what });
    }
    let entries = entry_files(store);
    let mut bad_entries = Vec::new();
    for (key, path) in &entries {
        let text = fs::read(path).map_err(|e| Error::io("reading memo entry", path, e))?;
        let why = match store.check_entry(key, &text) {
            Err(unusable) => unusable.why,
            Ok(entry) => {
                let mut needs = store.manifest_blobs_unverified(&entry.stored.manifest.digest).unwrap_or_default();
                needs.push(entry.stored.manifest.digest.clone());
                match needs.iter().find(|d| corrupt.contains(*d)) {
                    None => continue,
                    Some(d) => format!("{} {}: it uses the corrupt blob {d}", entry.image, entry.platform),
                }
            }
        };
        bad_entries.push(path.clone());
        problems.push(Problem { kind: ProblemKind::Entry, path: path.clone(), what: why });
    }
    if repair {
        for digest in &corrupt {
            store.forget_blob(digest);
        }
        for p in problems.iter().filter(|p| p.kind == ProblemKind::Blob).map(|p| &p.path).chain(&bad_entries) {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("removing", p, e)),
            }
        }
    }
    Ok(VerifyReport { blobs: count, bytes, entries: entries.len(), problems, repaired: repair })
}

/// The entries of a folder (nothing when it cannot be read).
fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    v
}

/// `(key, path)` of every `keys/<64 hex>.json`.
fn entry_files(store: &Store) -> Vec<(String, PathBuf)> {
    list(&store.root.join("keys"))
        .into_iter()
        .filter_map(|p| {
            let key = p.file_name()?.to_str()?.strip_suffix(".json")?.to_string();
            (key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())).then_some((key, p))
        })
        .collect()
}

/// Every file in `blobs/sha256`, with its digest when its name is one.
fn blob_files(store: &Store) -> Vec<(Option<String>, PathBuf)> {
    list(&store.root.join("blobs/sha256"))
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| !m.is_dir()))
        .map(|p| {
            let digest = p.file_name().and_then(|n| n.to_str()).map(|n| format!("sha256:{n}"));
            (digest.filter(|d| digest_hex(d).is_ok()), p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::oci::{digest_of, OCI_LAYER_GZIP};
    use crate::image::store::Entry;

    /// A store with one recorded image (config, one layer, manifest).
    fn store_with_image(dir: &Path) -> (Store, Entry) {
        let store = Store::open(dir).unwrap();
        let entry = crate::image::store::tests::image(&store, 'b', &[b"layer bytes"]);
        store.put_entry(&entry).unwrap();
        (store, entry)
    }

    #[test]
    fn gc_keeps_what_entries_use_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (store, entry) = store_with_image(dir.path());
        let stray = store.put_blob(OCI_LAYER_GZIP, b"nobody's").unwrap();
        let broken = dir.path().join(format!("keys/{}.json", "c".repeat(64)));
        fs::write(&broken, b"{not json").unwrap();

        let dry = gc(&store, true).unwrap();
        let kinds: Vec<_> = dry.removed.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [RemovedKind::Entry, RemovedKind::Blob]);
        assert_eq!(dry.removed[1].what.as_deref(), Some(stray.digest.as_str()));
        assert!(store.has_blob(&stray.digest) && broken.exists(), "a dry run removes nothing");

        let done = gc(&store, false).unwrap();
        assert_eq!(done.bytes_freed, dry.bytes_freed);
        assert!(!store.has_blob(&stray.digest) && !broken.exists());
        assert_eq!(store.entry(&entry.key).unwrap(), Some(entry));
        assert!(gc(&store, false).unwrap().removed.is_empty(), "nothing left to remove");
    }

    #[test]
    fn verify_names_a_corrupt_layer_and_the_entry_using_it_and_repair_removes_both() {
        let dir = tempfile::tempdir().unwrap();
        let (store, entry) = store_with_image(dir.path());
        assert!(verify(&store, false).unwrap().problems.is_empty());
        let layer = digest_of(b"layer bytes");
        fs::write(store.blob_path(&layer).unwrap(), b"LAYER BYTES").unwrap();
        let report = verify(&store, false).unwrap();
        let found: Vec<_> = report.problems.iter().map(|p| (p.kind, p.what.contains(&layer))).collect();
        assert_eq!(found, [(ProblemKind::Blob, false), (ProblemKind::Entry, true)]);
        assert!(report.problems[0].path.ends_with(digest_hex(&layer).unwrap()));
        verify(&store, true).unwrap();
        assert!(!store.has_blob(&layer));
        assert_eq!(store.entry(&entry.key).unwrap(), None);
        assert!(verify(&store, false).unwrap().problems.is_empty(), "repaired");
    }

    #[test]
    fn log_keys_are_read_from_log_names() {
        let key = "d".repeat(64);
        assert_eq!(log_key(Path::new(&format!("logs/x/arm-v7-{key}.log"))), Some(key.as_str()));
        assert_eq!(log_key(Path::new("logs/x/short.log")), None);
    }
}
