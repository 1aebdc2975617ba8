//! Scanning an image folder into a [`Context`]: the walk, `.dockerignore`, hashing, and
//! a stat cache that lets an unchanged tree be re-keyed without reading file contents.
//!
//! # The walk
//! Symlinks are recorded, never followed. In a build context ([`Links::InsideFolder`]) a
//! link whose target is absolute or lexically leaves the folder is refused (the engine
//! would not see its target); in the folder of an assembled image ([`Links::ImageTree`])
//! a link's target is a path inside the image being assembled (a Debian rootfs is full of
//! `/etc/alternatives/...` links), so any non-empty UTF-8 target is kept as written. Directories are
//! entries (empty ones matter to `COPY`). Sockets, FIFOs and devices are refused. Names
//! must be UTF-8 (spaces and newlines are fine). Entries are sorted by path bytes.
//!
//! # `.dockerignore`
//! Applied exactly as Docker applies it ([`crate::recipe::dockerignore`] has the rules): what is
//! excluded is not walked, hashed or sent, and an excluded folder is entered only when
//! an exception names a path inside it; its entry is kept when something below it is
//! (so a tar of the context is well formed, as Docker's daemon creates such folders).
//! The root `Dockerfile`, `Dockerfile.*` and `.dockerignore` files are always kept, as
//! the Docker CLI always sends the Dockerfile it builds and the ignore file: the key
//! must cover the recipe, and the classic builder reads `.dockerignore` from the context
//! to drop both from what `COPY` sees (which recipe a platform uses is decided later,
//! [`Context::for_recipe`] drops the others).
//!
//! # The stat cache, and "racy git"
//! Like git's index, [`StatCache`] remembers for each file (size, mtime ns, ctime ns,
//! inode, device, mode) and the content's SHA-256. When all six still match, the content
//! is assumed unchanged and not read. That assumption fails in exactly one way: a file
//! modified twice within the file system's timestamp granularity (a coarse kernel clock
//! tick of a few ms, 1-2 s on some file systems, or a server clock behind ours on a
//! network file system), with the same size, keeps its stat data while its content
//! changes. If the cache learned the first version, the second would be missed forever.
//!
//! The rule that closes this: the scan notes the time `T` it started (before any stat),
//! and an entry is only stored, and only trusted, if both its mtime and its ctime are
//! strictly older than `T - 2 s`. Any later write to the file sets its ctime (and mtime)
//! to "now", which is after `T - 2 s` by more than any granularity or skew within the
//! margin, so a changed file can never match a trusted entry: its ctime differs (ctime
//! cannot be set back by users, unlike mtime, which `touch -d` can restore, which is why
//! ctime is part of the key), and a file recent enough to be modified again within the
//! same tick is simply hashed again on every scan until it is two seconds old. Files
//! whose stat changes while they are being hashed are not stored either. The cache is
//! one file per image folder (named by the SHA-256 of the folder's canonical path, which
//! is also recorded inside and checked), written atomically; a missing, unreadable or
//! corrupt cache is an empty one, never an error. Copying a tree elsewhere changes
//! inodes and ctimes, so a copied cache file would only miss.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::recipe::context::{Context, ContextEntry, EntryKind};
use crate::recipe::dockerignore::{DirMatches, Patterns};
use crate::support::error::{Error, Result};

/// Files younger than this (mtime or ctime) relative to the scan start are never cached.
pub const RACY_MARGIN_NS: i128 = 2_000_000_000;

/// Read buffer for hashing: large reads keep SHA-NI busy and syscalls few.
const CHUNK: usize = 1 << 20;

/// What a scan did, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Regular files in the context.
    pub files: usize,
    /// Files whose content was read and hashed (the others came from the stat cache).
    pub hashed: usize,
    pub bytes_hashed: u64,
}

/// Which symlink targets a folder may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// A Docker build context: relative links that stay inside the folder.
    InsideFolder,
    /// Files mapped into an assembled image: a target names a path in the image, so it
    /// may be absolute or climb out of its source folder.
    ImageTree,
}

/// Scans `dir` into its build context, using and refreshing `cache` if given.
pub fn scan(dir: &Path, links: Links, cache: Option<&StatCache>) -> Result<Context> {
    scan_with_stats(dir, links, cache).map(|(c, _)| c)
}

/// [`scan`], also saying how many files were read.
pub fn scan_with_stats(dir: &Path, links: Links, cache: Option<&StatCache>) -> Result<(Context, ScanStats)> {
    scan_at(dir, links, cache, now_ns())
}

fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

/// A file found by the walk, before hashing.
struct Found {
    path: String,
    stat: Stat,
}

enum Walked {
    File(Found),
    Other(ContextEntry),
}

/// A scanned entry, what to remember of it in the cache, and whether it was read.
type Hashed = (ContextEntry, Option<(String, CacheEntry)>, bool);

fn scan_at(dir: &Path, links: Links, cache: Option<&StatCache>, started: i128) -> Result<(Context, ScanStats)> {
    let meta = fs::metadata(dir).map_err(|e| Error::usage(format!("image folder {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(Error::usage(format!("image folder {} is not a folder", dir.display())));
    }
    let ignore = load_ignore(dir)?;
    let mut walked = Vec::new();
    let walker = Walker { root: dir, ignore: &ignore, links };
    walker.walk(dir, "", None, &mut walked)?;

    let canonical = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let cached = cache.map(|c| c.snapshot_for(&canonical)).unwrap_or_default();
    let trusted = |s: &Stat| s.mtime_ns < started - RACY_MARGIN_NS && s.ctime_ns < started - RACY_MARGIN_NS;

    // Hash what the cache cannot vouch for, in parallel; when the cache vouches for every
    // file (the common case of planning an unchanged tree), on this thread: handing a
    // folder's worth of cache hits to the pool costs more than it saves.
    let hit = |f: &Found| cached.get(&f.path).is_some_and(|c| c.stat == f.stat && trusted(&f.stat));
    let all_hits = walked.iter().all(|w| match w {
        Walked::File(f) => hit(f),
        Walked::Other(_) => true,
    });
    let one = |w: Walked| match w {
        Walked::Other(e) => Ok((e, None, false)),
        Walked::File(f) => {
            let (sha, read) = match cached.get(&f.path).filter(|_| hit(&f)) {
                Some(c) => (c.sha256, false),
                None => (hash_file(&dir.join(&f.path), &f.path)?, true),
            };
            let mut store = trusted(&f.stat).then(|| (f.path.clone(), CacheEntry { stat: f.stat, sha256: sha }));
            if read && store.is_some() {
                // Not stored if the file changed while it was read.
                let after = fs::symlink_metadata(dir.join(&f.path)).ok().map(|m| Stat::of(&m));
                if after != Some(f.stat) {
                    store = None;
                }
            }
            let kind = EntryKind::File { executable: f.stat.mode & 0o111 != 0, size: f.stat.size, sha256: sha };
            Ok((ContextEntry { path: f.path, kind }, store, read))
        }
    };
    let results: Vec<Result<Hashed>> =
        if all_hits { walked.into_iter().map(one).collect() } else { walked.into_par_iter().map(one).collect() };

    let mut stats = ScanStats::default();
    let mut entries = Vec::with_capacity(results.len());
    let mut fresh = BTreeMap::new();
    for r in results {
        let (entry, store, read) = r?;
        if let EntryKind::File { size, .. } = entry.kind {
            stats.files += 1;
            if read {
                stats.hashed += 1;
                stats.bytes_hashed += size;
            }
        }
        if let Some((p, c)) = store {
            fresh.insert(p, c);
        }
        entries.push(entry);
    }
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    if let Some(cache) = cache {
        cache.replace(&canonical, fresh);
    }
    Ok((Context { dir: dir.to_path_buf(), entries }, stats))
}

fn hash_file(path: &Path, rel: &str) -> Result<[u8; 32]> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; CHUNK]);
    }
    let mut f = File::open(path).map_err(|e| Error::io("reading", path, e))?;
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut h = Sha256::new();
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::failure(format!("reading {rel} in {}: {e}", path.display()))),
            }
        }
        Ok(h.finalize().into())
    })
}

/// The walk of one folder: its root, `.dockerignore` and link policy.
struct Walker<'a> {
    root: &'a Path,
    ignore: &'a Patterns,
    links: Links,
}

impl Walker<'_> {
    /// Walks `dir` (at `prefix` in the context) into `out`; says whether anything was kept.
    fn walk(&self, dir: &Path, prefix: &str, parent: Option<&DirMatches>, out: &mut Vec<Walked>) -> Result<bool> {
        let (root, ignore) = (self.root, self.ignore);
        let read = fs::read_dir(dir).map_err(|e| Error::io("reading folder", dir, e))?;
        let mut names = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| Error::io("reading folder", dir, e))?;
            names.push(entry.file_name());
        }
        names.sort();
        let mut kept_any = false;
        for os_name in names {
            let full = dir.join(&os_name);
            let Some(name) = os_name.to_str() else {
                return Err(Error::usage(format!(
                    "{}: the name is not valid UTF-8; rename it (archfarm needs UTF-8 paths in a build context)",
                    full.to_string_lossy()
                )));
            };
            let rel = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
            let meta = fs::symlink_metadata(&full).map_err(|e| Error::io("reading", &full, e))?;
            let ft = meta.file_type();
            let (excluded, matches) = ignore.decide(&rel, parent);
            let always = prefix.is_empty()
                && !ft.is_dir()
                && (name == "Dockerfile" || name.starts_with("Dockerfile.") || name == ".dockerignore");
            let excluded = excluded && !always;
            if ft.is_dir() {
                if excluded && !ignore.may_reinclude_below(&rel) {
                    continue;
                }
                let mark = out.len();
                out.push(Walked::Other(ContextEntry { path: rel.clone(), kind: EntryKind::Dir }));
                let child_kept = self.walk(&full, &rel, Some(&matches), out)?;
                if excluded && !child_kept {
                    out.truncate(mark);
                } else {
                    kept_any = true;
                }
                continue;
            }
            if excluded {
                continue;
            }
            kept_any = true;
            if ft.is_file() {
                out.push(Walked::File(Found { path: rel, stat: Stat::of(&meta) }));
            } else if ft.is_symlink() {
                let target = fs::read_link(&full).map_err(|e| Error::io("reading symlink", &full, e))?;
                let target = check_link(root, &rel, &target, self.links)?;
                out.push(Walked::Other(ContextEntry { path: rel, kind: EntryKind::Symlink { target } }));
            } else {
                return Err(Error::usage(format!(
                    "{}: {rel} is a socket, FIFO or device, which cannot be part of a build context; \
                     move it out of the image folder or add it to .dockerignore",
                    root.display()
                )));
            }
        }
        Ok(kept_any)
    }
}

/// Returns a link's target after checking it against `links`: a build context refuses
/// absolute links and links that lexically leave the folder; every link needs a
/// non-empty UTF-8 target.
fn check_link(root: &Path, rel: &str, target: &Path, links: Links) -> Result<String> {
    let shown = target.to_string_lossy();
    let fail = |why: &str| {
        Error::usage(format!(
            "{}: symlink {rel} -> {shown} {why}; replace it with a copy of what it points to, \
             or a relative link that stays inside the folder",
            root.display()
        ))
    };
    let Some(text) = target.to_str() else { return Err(fail("has a target that is not UTF-8")) };
    if text.is_empty() {
        return Err(fail("has an empty target"));
    }
    if links == Links::ImageTree {
        return Ok(text.to_string());
    }
    if target.is_absolute() {
        return Err(fail("is absolute, so the build would not see its target"));
    }
    let mut depth: Vec<&str> = rel.split('/').collect();
    depth.pop();
    for c in target.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return Err(fail("points outside the image folder"));
                }
            }
            Component::Normal(_) => depth.push("x"),
            Component::RootDir | Component::Prefix(_) => return Err(fail("is absolute")),
        }
    }
    Ok(text.to_string())
}

/// The patterns of the `.dockerignore` in `dir` (none when there is no such file).
fn load_ignore(dir: &Path) -> Result<Patterns> {
    let path = dir.join(".dockerignore");
    let text = match fs::read(&path) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Patterns::default()),
        Err(e) => return Err(Error::io("reading", &path, e).into_usage()),
    };
    Patterns::parse(&text).map_err(|e| e.context(path.display()))
}

impl Context {
    /// The context of one platform's build: every entry except the other recipe files
    /// (a change to `Dockerfile.aarch64` must not change the amd64 key).
    pub fn for_recipe(&self, recipe: &str, all_recipes: &[String]) -> Context {
        let entries =
            self.entries.iter().filter(|e| e.path == recipe || !all_recipes.contains(&e.path)).cloned().collect();
        Context { dir: self.dir.clone(), entries }
    }
}

/// The stat data a cache entry is valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
    mode: u32,
}

impl Stat {
    fn of(m: &fs::Metadata) -> Stat {
        Stat {
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            ino: m.ino(),
            dev: m.dev(),
            mode: m.mode(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct CacheEntry {
    stat: Stat,
    #[serde(with = "hex_bytes")]
    sha256: [u8; 32],
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    /// The canonical folder the entries belong to.
    folder: PathBuf,
    entries: BTreeMap<String, CacheEntry>,
    /// Changed since it was read or written: only then does `save` write (and fsync).
    #[serde(skip)]
    dirty: bool,
}

const CACHE_VERSION: u32 = 1;

/// Remembers file hashes by stat data, in the manner of git's index (see the module doc).
#[derive(Debug)]
pub struct StatCache {
    path: PathBuf,
    data: Mutex<CacheFile>,
}

impl StatCache {
    /// Opens the cache file at `path`; a missing or corrupt file is an empty cache.
    pub fn open(path: &Path) -> StatCache {
        let data = fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
            .filter(|c| c.version == CACHE_VERSION)
            .unwrap_or_default();
        StatCache { path: path.to_path_buf(), data: Mutex::new(data) }
    }

    /// The cache of `folder` under `cache_dir`: one file per folder, named by the SHA-256
    /// of the folder's canonical path, so two folders never share entries.
    pub fn for_folder(cache_dir: &Path, folder: &Path) -> StatCache {
        StatCache::open(&StatCache::path_for(cache_dir, folder))
    }

    /// Where [`for_folder`](Self::for_folder) keeps the cache of `folder`.
    pub fn path_for(cache_dir: &Path, folder: &Path) -> PathBuf {
        let canonical = fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
        let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
        cache_dir.join(format!("{}.json", hex::encode(digest)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries (files the cache can vouch for).
    pub fn len(&self) -> usize {
        self.data.lock().expect("stat cache lock").entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the cache atomically (temporary file, fsync, rename), if a scan changed it:
    /// an unchanged tree costs no write at all.
    pub fn save(&self) -> Result<()> {
        let bytes = {
            let data = self.data.lock().expect("stat cache lock");
            if !data.dirty {
                return Ok(());
            }
            serde_json::to_vec(&*data).expect("stat cache serializes")
        };
        crate::support::fs::write_atomically(&self.path, &bytes, Default::default())?;
        self.data.lock().expect("stat cache lock").dirty = false;
        Ok(())
    }

    fn snapshot_for(&self, folder: &Path) -> BTreeMap<String, CacheEntry> {
        let data = self.data.lock().expect("stat cache lock");
        if data.folder == folder {
            data.entries.clone()
        } else {
            BTreeMap::new()
        }
    }

    fn replace(&self, folder: &Path, entries: BTreeMap<String, CacheEntry>) {
        let mut data = self.data.lock().expect("stat cache lock");
        if data.version == CACHE_VERSION && data.folder == folder && data.entries == entries {
            return;
        }
        *data = CacheFile { version: CACHE_VERSION, folder: folder.to_path_buf(), entries, dirty: true };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn paths(c: &Context) -> Vec<&str> {
        c.entries.iter().map(|e| e.path.as_str()).collect()
    }

    fn later() -> i128 {
        now_ns() + 10 * 1_000_000_000
    }

    #[test]
    fn dockerignore_semantics() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in [
            "Dockerfile",
            "Dockerfile.aarch64",
            "keep.txt",
            "build/out.o",
            "build/keep/me.txt",
            "src/a.tmp",
            "src/deep/b.tmp",
            "src/deep/c.rs",
            "logs/x.log",
            "logs/important.log",
            "top.md",
            "sub/top.md",
        ] {
            write(r, f, f);
        }
        write(
            r,
            ".dockerignore",
            "# comment\n\n/build\n!build/keep/me.txt\n**/*.tmp\n./logs\n!logs/important.log\nDockerfile*\n.dockerignore\n top.md \n",
        );
        let c = scan(r, Links::InsideFolder, None).unwrap();
        assert_eq!(
            paths(&c),
            [
                ".dockerignore",
                "Dockerfile",
                "Dockerfile.aarch64",
                "build",
                "build/keep",
                "build/keep/me.txt",
                "keep.txt",
                "logs",
                "logs/important.log",
                "src",
                "src/deep",
                "src/deep/c.rs",
                "sub",
                "sub/top.md",
            ]
        );
    }

    #[test]
    fn an_excluded_folder_is_entered_only_for_an_exception_inside_it() {
        let d = tempfile::tempdir().unwrap();
        for f in ["Dockerfile", "x", "dir/x", "dir/y", "dir/sub/x", "dir/sub/deep/x", "other/x"] {
            write(d.path(), f, f);
        }
        write(d.path(), ".dockerignore", "*\n!dir/**/x\n");
        // Docker sends dir/x only: dir/sub is excluded too, and no exception starts with
        // dir/sub/, so it is not entered.
        assert_eq!(
            paths(&scan(d.path(), Links::InsideFolder, None).unwrap()),
            [".dockerignore", "Dockerfile", "dir", "dir/x"]
        );
    }

    #[test]
    fn excluded_dir_without_exceptions_is_skipped_entirely() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Dockerfile", "FROM scratch");
        write(d.path(), "node_modules/a/b.js", "x");
        write(d.path(), ".dockerignore", "node_modules\n");
        assert_eq!(paths(&scan(d.path(), Links::InsideFolder, None).unwrap()), [".dockerignore", "Dockerfile"]);
    }

    #[test]
    fn symlinks_exec_bits_empty_dirs_and_odd_names() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "Dockerfile", "FROM scratch");
        write(r, "bin/run me.sh", "#!/bin/sh\n");
        fs::set_permissions(r.join("bin/run me.sh"), fs::Permissions::from_mode(0o744)).unwrap();
        write(r, "line\nbreak", "x");
        fs::create_dir(r.join("empty")).unwrap();
        symlink("../Dockerfile", r.join("bin/link")).unwrap();
        symlink("nowhere", r.join("dangling")).unwrap();
        let c = scan(r, Links::InsideFolder, None).unwrap();
        assert_eq!(paths(&c), ["Dockerfile", "bin", "bin/link", "bin/run me.sh", "dangling", "empty", "line\nbreak"]);
        let kinds: BTreeMap<&str, &EntryKind> = c.entries.iter().map(|e| (e.path.as_str(), &e.kind)).collect();
        assert_eq!(kinds["bin/link"], &EntryKind::Symlink { target: "../Dockerfile".into() });
        assert_eq!(kinds["empty"], &EntryKind::Dir);
        assert!(matches!(kinds["bin/run me.sh"], EntryKind::File { executable: true, size: 10, .. }));
        let EntryKind::File { executable: false, sha256, .. } = kinds["Dockerfile"] else { panic!() };
        assert_eq!(hex::encode(sha256), hex::encode(Sha256::digest(b"FROM scratch")));
    }

    #[test]
    fn escaping_symlinks_are_refused() {
        for target in ["/etc/passwd", "../outside", "a/../../../x"] {
            let d = tempfile::tempdir().unwrap();
            write(d.path(), "Dockerfile", "FROM scratch");
            fs::create_dir(d.path().join("sub")).unwrap();
            symlink(target, d.path().join("sub/l")).unwrap();
            let ok_if_inside = target == "../outside";
            let res = scan(d.path(), Links::InsideFolder, None);
            if ok_if_inside {
                // sub/../outside stays inside the folder
                assert!(res.is_ok());
                continue;
            }
            let err = res.unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.message().contains("sub/l") && err.message().contains(target), "{}", err.message());
            assert!(err.message().contains("relative link"), "{}", err.message());
        }
        let d = tempfile::tempdir().unwrap();
        symlink("../../x", d.path().join("l")).unwrap();
        assert!(scan(d.path(), Links::InsideFolder, None).is_err());
    }

    #[test]
    fn an_image_tree_keeps_absolute_and_climbing_links_as_written() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("rootfs/bin")).unwrap();
        symlink("/bin/busybox", d.path().join("rootfs/bin/sh")).unwrap();
        symlink("../../../usr/lib", d.path().join("rootfs/bin/lib")).unwrap();
        let c = scan(d.path(), Links::ImageTree, None).unwrap();
        let kinds: BTreeMap<_, _> = c.entries.iter().map(|e| (e.path.as_str(), &e.kind)).collect();
        assert_eq!(kinds["rootfs/bin/sh"], &EntryKind::Symlink { target: "/bin/busybox".into() });
        assert_eq!(kinds["rootfs/bin/lib"], &EntryKind::Symlink { target: "../../../usr/lib".into() });
        assert!(scan(d.path(), Links::InsideFolder, None).is_err(), "the same tree is no build context");
    }

    #[test]
    fn fifos_and_non_utf8_names_are_refused() {
        let d = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&d.path().join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = scan(d.path(), Links::InsideFolder, None).unwrap_err();
        assert!(err.message().contains("pipe") && err.message().contains("FIFO"), "{}", err.message());

        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(std::ffi::OsStr::from_bytes(b"bad\xffname")), "x").unwrap();
        let err = scan(d.path(), Links::InsideFolder, None).unwrap_err();
        assert!(err.message().contains("bad\u{fffd}name") && err.message().contains("UTF-8"), "{}", err.message());
    }

    #[test]
    fn for_recipe_drops_other_recipes() {
        let d = tempfile::tempdir().unwrap();
        for f in ["Dockerfile", "Dockerfile.aarch64", "Dockerfile.template", "x"] {
            write(d.path(), f, f);
        }
        let c = scan(d.path(), Links::InsideFolder, None).unwrap();
        let all = vec!["Dockerfile".to_string(), "Dockerfile.aarch64".to_string()];
        assert_eq!(paths(&c.for_recipe("Dockerfile", &all)), ["Dockerfile", "Dockerfile.template", "x"]);
        assert_eq!(
            paths(&c.for_recipe("Dockerfile.aarch64", &all)),
            ["Dockerfile.aarch64", "Dockerfile.template", "x"]
        );
    }

    #[test]
    fn stat_cache_hits_and_misses() {
        let d = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "Dockerfile", "FROM scratch");
        write(r, "data", "aaaa");
        let cache = StatCache::for_folder(cache_dir.path(), r);
        let (c1, s1) = scan_at(r, Links::InsideFolder, Some(&cache), later()).unwrap();
        assert_eq!((s1.files, s1.hashed), (2, 2));
        cache.save().unwrap();

        // Reopened from disk: nothing is read again.
        let cache = StatCache::for_folder(cache_dir.path(), r);
        assert_eq!(cache.len(), 2);
        let (c2, s2) = scan_at(r, Links::InsideFolder, Some(&cache), later()).unwrap();
        assert_eq!(s2.hashed, 0);
        assert_eq!(c1.entries, c2.entries);

        // Same size, mtime restored: ctime still changes, so it is a miss.
        let before = fs::metadata(r.join("data")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        fs::write(r.join("data"), "bbbb").unwrap();
        let f = File::options().write(true).open(r.join("data")).unwrap();
        f.set_modified(before.modified().unwrap()).unwrap();
        drop(f);
        assert_eq!(fs::metadata(r.join("data")).unwrap().modified().unwrap(), before.modified().unwrap());
        let (c3, s3) = scan_at(r, Links::InsideFolder, Some(&cache), later()).unwrap();
        assert_eq!(s3.hashed, 1);
        let EntryKind::File { sha256, .. } = &c3.entries[1].kind else { panic!() };
        assert_eq!(hex::encode(sha256), hex::encode(Sha256::digest(b"bbbb")));

        // Another folder never uses these entries.
        let other = tempfile::tempdir().unwrap();
        write(other.path(), "data", "aaaa");
        let (_, s4) = scan_at(other.path(), Links::InsideFolder, Some(&cache), later()).unwrap();
        assert_eq!(s4.hashed, 1);
    }

    #[test]
    fn an_unchanged_scan_does_not_rewrite_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        write(d.path(), "data", "aaaa");
        let cache = StatCache::for_folder(cache_dir.path(), d.path());
        scan_at(d.path(), Links::InsideFolder, Some(&cache), later()).unwrap();
        cache.save().unwrap();
        fs::remove_file(cache.path()).unwrap();
        let cache = StatCache::for_folder(cache_dir.path(), d.path());
        scan_at(d.path(), Links::InsideFolder, Some(&cache), later()).unwrap();
        cache.save().unwrap();
        assert!(cache.path().exists(), "a cache read from nothing is written");
        let reopened = StatCache::for_folder(cache_dir.path(), d.path());
        scan_at(d.path(), Links::InsideFolder, Some(&reopened), later()).unwrap();
        fs::remove_file(reopened.path()).unwrap();
        reopened.save().unwrap();
        assert!(!reopened.path().exists(), "nothing changed, so nothing is written");
        write(d.path(), "more", "b");
        scan_at(d.path(), Links::InsideFolder, Some(&reopened), later()).unwrap();
        reopened.save().unwrap();
        assert!(reopened.path().exists(), "a change is written");
    }

    #[test]
    fn racy_entries_are_not_cached() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "fresh", "x");
        let cache = StatCache::open(&d.path().join("..").join("cache-not-saved.json"));
        let (_, s) = scan_with_stats(d.path(), Links::InsideFolder, Some(&cache)).unwrap();
        assert_eq!(s.hashed, 1);
        assert!(cache.is_empty(), "a file modified within the margin must not be cached");
        let (_, s) = scan_with_stats(d.path(), Links::InsideFolder, Some(&cache)).unwrap();
        assert_eq!(s.hashed, 1);
    }

    #[test]
    fn corrupt_cache_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.json");
        fs::write(&p, "{not json").unwrap();
        assert!(StatCache::open(&p).is_empty());
        assert!(StatCache::open(&d.path().join("missing.json")).is_empty());
    }
}
