//! This process's claim on a store, and the removal of temporary data that no live
//! process owns (a run killed by SIGKILL, or ended by `process::exit`, leaves its staging
//! behind; nothing else would ever remove it).
//!
//! Two flocks, which the kernel drops when their holder dies, however it dies, and which a
//! reused pid cannot fake:
//! - `<store>/lock`, held shared by every process for as long as it has the store open,
//!   and exclusively by `archfarm store gc`, so gc never runs while a build may be writing
//!   blobs whose memo entry does not exist yet (a lock, not a grace age: an old blob can
//!   become referenced again at any moment, by the assembler's layer cache or a fetch that
//!   finds it present, and no age tells when).
//! - `tmp/<pid>-<random>/`, the folder itself, held exclusively by the process whose
//!   folder it is. Every blob being written and every staging store of the process lives
//!   in it. The folder is made under a temporary name and renamed into place once locked,
//!   so it never appears unlocked: a folder whose lock can be taken belongs to no live
//!   process, and whoever opens the store next removes it.
//!
//! Anything else at the top of `tmp/` (the `.tmp*` files of atomic writes, which live for
//! microseconds, the assembler's package downloads, and leftovers of archfarm versions that
//! took no lock) is removed once nothing in it has changed for [`LOOSE_AGE`].

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::maintenance::{Removed, RemovedKind};
use crate::support::error::{Error, Result};

/// How long a loose entry at the top of `tmp/` must have been left unchanged to be stale.
pub const LOOSE_AGE: Duration = Duration::from_secs(3600);

const LOCK: &str = "lock";

/// Held for as long as the store is open in this process; dropping it removes the
/// process's folder (a process that never drops it leaves the folder to the next sweep).
#[derive(Debug)]
pub(super) struct Claim {
    root: PathBuf,
    /// `<store>/lock`: shared, or exclusive once [`Claim::exclusive`] succeeded.
    store_lock: Flock<File>,
    /// This process's folder under `tmp/`, and its lock.
    dir: PathBuf,
    _dir_lock: Flock<File>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Removed while still locked: no sweeper can see it half gone and unlocked.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Claim {
    /// Claims the store at `root` (whose temporary folder is `tmp`): its lock shared,
    /// waiting (and saying so) while `archfarm store gc` holds it, and a folder of its own.
    pub(super) fn new(root: &Path, tmp: &Path) -> Result<Claim> {
        let path = root.join(LOCK);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("opening the store lock", &path, e))?;
        let store_lock = match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(l) => l,
            Err((file, Errno::EWOULDBLOCK)) => {
                eprintln!("waiting for `archfarm store gc` to finish with the store {}", root.display());
                Flock::lock(file, FlockArg::LockShared).map_err(|(_, e)| lock_error(&path, e))?
            }
            Err((_, e)) => return Err(lock_error(&path, e)),
        };
        let (dir, dir_lock) = own_folder(tmp)?;
        Ok(Claim { root: root.to_path_buf(), store_lock, dir, _dir_lock: dir_lock })
    }

    /// This process's folder under `tmp/`.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the store for this process alone (for gc), or fails naming the archfarm
    /// processes that have it open.
    pub(super) fn exclusive(&self, tmp: &Path) -> Result<()> {
        match self.store_lock.relock(FlockArg::LockExclusiveNonblock) {
            Ok(()) => Ok(()),
            Err(Errno::EWOULDBLOCK) => {
                // A failed conversion may have dropped the shared lock: take it back.
                let _ = self.store_lock.relock(FlockArg::LockSharedNonblock);
                let pids = live_pids(tmp, &self.dir);
                let who = match pids.len() {
                    0 => "another archfarm process".to_string(),
                    1 => format!("archfarm process {}", pids[0]),
                    _ => {
                        format!("archfarm processes {}", pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
                    }
                };
                Err(Error::failure(format!(
                    "the store {} is in use by {who}; gc removes blobs only while no other archfarm uses the store \
                     (a build writes its blobs before the memo entry that keeps them): run it again when they have \
                     finished",
                    self.root.display()
                )))
            }
            Err(e) => Err(lock_error(&self.root.join(LOCK), e)),
        }
    }
}

fn lock_error(path: &Path, e: Errno) -> Error {
    Error::failure(format!("locking {}: {e}", path.display()))
}

/// Makes `tmp/<pid>-<random>/` already locked, under a temporary name first; the lock
/// stays held through the rename (it is the folder's, not the name's).
fn own_folder(tmp: &Path) -> Result<(PathBuf, Flock<File>)> {
    let made = tempfile::Builder::new()
        .prefix(".claim-")
        .tempdir_in(tmp)
        .map_err(|e| Error::io("creating a temporary folder in", tmp, e))?;
    let folder = File::open(made.path()).map_err(|e| Error::io("opening", made.path(), e))?;
    let held = Flock::lock(folder, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| lock_error(made.path(), e))?;
    let dir = tmp.join(format!("{}-{:012x}", std::process::id(), fastrand::u64(..1 << 48)));
    fs::rename(made.path(), &dir).map_err(|e| Error::io("claiming", &dir, e))?;
    let _ = made.keep();
    Ok((dir, held))
}

/// `<pid>-<hex>`: the name of a process's folder.
fn owner_pid(name: &str) -> Option<u32> {
    let (pid, rest) = name.split_once('-')?;
    (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
    pid.parse().ok()
}

/// The pids of live processes with a folder in `tmp` (other than `mine`).
fn live_pids(tmp: &Path, mine: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = entries(tmp)
        .filter(|p| p != mine)
        .filter_map(|p| {
            let pid = owner_pid(&p.file_name()?.to_string_lossy())?;
            (!lock_is_free(&p)).then_some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn entries(dir: &Path) -> impl Iterator<Item = PathBuf> {
    fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok().map(|e| e.path()))
}

/// Whether the folder's lock can be taken (taken and released at once): then no live
/// process owns it.
fn lock_is_free(dir: &Path) -> bool {
    match File::open(dir) {
        Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok(),
        Err(_) => false,
    }
}

/// Finds (and unless `dry_run` removes) the stale entries of `tmp`: every process
/// folder but `mine` whose lock is free, and loose entries unchanged for [`LOOSE_AGE`].
pub(super) fn sweep(tmp: &Path, mine: Option<&Path>, dry_run: bool) -> Vec<Removed> {
    let now = SystemTime::now();
    let mut out = Vec::new();
    for path in entries(tmp) {
        if Some(path.as_path()) == mine {
            continue;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // A live process's folder is not even walked: this runs whenever a store is opened.
        let claimed = owner_pid(&name).is_some();
        if claimed && !lock_is_free(&path) {
            continue;
        }
        let (bytes, newest) = tree(&path);
        if !claimed && now.duration_since(newest).map_or(true, |age| age < LOOSE_AGE) {
            continue;
        }
        if !dry_run {
            let gone = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            if let Err(e) = gone {
                tracing::warn!("cannot remove stale staging {}: {e}", path.display());
                continue;
            }
        }
        tracing::debug!(path = %path.display(), bytes, dry_run, "stale staging");
        out.push(Removed { kind: RemovedKind::Staging, path, bytes, what: None });
    }
    out
}

/// The bytes under `path` and the newest modification time in it (symlinks not followed).
fn tree(path: &Path) -> (u64, SystemTime) {
    let Ok(meta) = fs::symlink_metadata(path) else { return (0, SystemTime::UNIX_EPOCH) };
    let mut bytes = if meta.is_file() { meta.len() } else { 0 };
    let mut newest = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if meta.is_dir() {
        for child in entries(path) {
            let (b, n) = tree(&child);
            bytes += b;
            newest = newest.max(n);
        }
    }
    (bytes, newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes `path` (a file or a folder) look untouched for two hours.
    fn age(path: &Path) {
        let t = SystemTime::now() - Duration::from_secs(2 * 3600);
        File::open(path).unwrap().set_modified(t).unwrap();
    }

    /// A store root with its `tmp/`.
    fn root() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let tmp = root.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        (root, tmp)
    }

    #[test]
    fn a_live_claim_survives_a_sweep_and_a_dead_one_does_not() {
        let (root, tmp) = root();
        let live = Claim::new(root.path(), &tmp).unwrap();
        fs::write(live.dir().join("blob"), b"x").unwrap();
        // A dead process's folder: a name like a claim's, a lock nobody holds.
        let dead = tmp.join("999999-abc");
        fs::create_dir_all(dead.join("assemble-1")).unwrap();
        fs::write(dead.join("assemble-1/layer"), vec![0u8; 1000]).unwrap();

        let removed = sweep(&tmp, None, true);
        assert_eq!(removed.iter().map(|r| (&r.path, r.bytes)).collect::<Vec<_>>(), [(&dead, 1000)]);
        assert!(dead.exists(), "a dry run removes nothing");
        sweep(&tmp, None, false);
        assert!(!dead.exists());
        assert!(live.dir().join("blob").exists(), "the live claim's folder is kept");
        let dir = live.dir().to_path_buf();
        drop(live);
        assert!(!dir.exists(), "a claim removes its folder when dropped");
    }

    #[test]
    fn loose_entries_go_only_once_unchanged_for_an_hour() {
        let tmp = tempfile::tempdir().unwrap();
        let old = tmp.path().join("assemble-old");
        fs::create_dir_all(old.join("blobs")).unwrap();
        fs::write(old.join("blobs/a"), b"a").unwrap();
        let busy = tmp.path().join("assemble-busy");
        fs::create_dir_all(&busy).unwrap();
        fs::write(busy.join("b"), b"b").unwrap();
        let file = tmp.path().join(".tmpXYZ");
        fs::write(&file, b"c").unwrap();
        for p in [old.join("blobs/a"), old.join("blobs"), old.clone(), busy.join("b"), busy.clone(), file.clone()] {
            age(&p);
        }
        // Something in `busy` changed a minute ago: it may belong to a live process.
        fs::write(busy.join("new"), b"n").unwrap();
        let mut gone: Vec<PathBuf> = sweep(tmp.path(), None, false).into_iter().map(|r| r.path).collect();
        gone.sort();
        assert_eq!(gone, [file, old]);
        assert!(busy.exists());
    }

    #[test]
    fn gc_is_refused_while_another_claim_holds_the_store() {
        let (root, tmp) = root();
        let gc = Claim::new(root.path(), &tmp).unwrap();
        let other = Claim::new(root.path(), &tmp).unwrap();
        let e = gc.exclusive(&tmp).unwrap_err();
        assert!(e.message().contains(&format!("archfarm process {}", std::process::id())), "{}", e.message());
        drop(other);
        gc.exclusive(&tmp).unwrap();
    }
}
