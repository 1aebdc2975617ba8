//! Base layers checked as a careful unpacker checks a layer before it writes a byte
//! (moby's pkg/archive `UnpackLayer` and `createTarFile`), because an imported base's
//! layers (`from:` a docker-archive, an OCI layout or a registry) go into the image
//! unchanged and whoever unpacks the image next (`docker load`, umoci, a plain `tar -x`)
//! may be less careful than dockerd's chroot.
//!
//! The check streams: each layer is gunzipped and only its tar headers are read (GNU
//! long names and PAX `path`/`linkpath` as Go's archive/tar reads them); nothing is
//! extracted. It follows the layers in order, remembering the symlinks they leave (and
//! forgetting those that later entries, whiteouts and opaque markers remove), and
//! refuses an entry that:
//!
//! - is absolute (`/etc/evil`: unpackers differ on what a leading `/` means) or has a
//!   `..` part anywhere (`../evil`, also `a/../b`, which climbs out when `a` is a
//!   symlink); `./` and repeated `/` are dropped (`./etc/x` is `etc/x`, as `tar -C dir .`
//!   writes it), and `.` is the root folder, which only a folder entry may name;
//! - would be written through a symlink (`link -> /etc` then `link/evil`, in one layer or
//!   in a later one), whiteouts included;
//! - replaces a symlink of its own layer (`x -> /etc/passwd` then a file `x`: an
//!   unpacker that opens `x` for writing writes `/etc/passwd`); a later layer may replace
//!   a symlink, since layer unpackers remove what an entry replaces;
//! - is a hard link whose target is absolute, has `..`, goes through a symlink, or is a
//!   symlink (Python's tarfile links what a symlink points at);
//! - is a symlink whose relative target climbs above the root from its folder
//!   (`a -> ../../etc`), which moby refuses as "invalid symlink"; absolute targets
//!   (`bin/sh -> /bin/busybox`) and merged-/usr links (`lib -> usr/lib`) are ordinary.
//!
//! Whiteouts (`.wh.NAME`, `.wh..wh..opq`) are legal. Only tar headers are trusted, never
//! file contents, so the cost is one gunzip of each layer.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read};

use crate::image::docker_archive::relative_path;
use crate::image::store::Store;
use crate::support::error::{Error, Result};

use super::base::Base;

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// What an entry is, for the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    Dir,
    Symlink(&'a [u8]),
    HardLink(&'a [u8]),
    /// A regular file, a device or a FIFO: replaces what was at its path.
    Other,
}

/// Why a layer was refused: an entry (its path, quoted for a message) and why, or a
/// stream that is not a readable layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Entry { path: String, why: String },
    Unreadable(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Refusal::Entry { path, why } => write!(f, "entry '{path}' {why}"),
            Refusal::Unreadable(why) => write!(f, "is not a readable layer: {why}"),
        }
    }
}

/// The symlinks the layers checked so far leave behind, by normalised path, with the
/// layer that made each and its target.
#[derive(Debug, Default)]
pub struct Tree {
    symlinks: BTreeMap<Vec<u8>, (usize, Vec<u8>)>,
}

impl Tree {
    /// Checks one layer's tar stream (gzip or plain) as layer number `layer` (layers are
    /// checked in order, from 0).
    pub fn check_layer(&mut self, layer: usize, input: impl Read) -> std::result::Result<(), Refusal> {
        let unreadable =
            |e: std::io::Error| Refusal::Unreadable(crate::image::docker_archive::printable(&e.to_string()));
        let mut input = BufReader::with_capacity(1 << 20, input);
        let magic = input.fill_buf().map_err(unreadable)?;
        let tar: Box<dyn Read> = match magic {
            [0x1f, 0x8b, ..] => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => {
                return Err(Refusal::Unreadable(
                    "it is zstd-compressed, which archfarm cannot check; use a base with gzip layers".into(),
                ))
            }
            _ => Box::new(input),
        };
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries().map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let link = entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
            let kind = match entry.header().entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink(&link),
                tar::EntryType::Link => Kind::HardLink(&link),
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse
                | tar::EntryType::Char
                | tar::EntryType::Block
                | tar::EntryType::Fifo => Kind::Other,
                tar::EntryType::XGlobalHeader => continue,
                other => {
                    return Err(Refusal::Entry {
                        path: quote(&entry.path_bytes()),
                        why: format!("has tar entry type {other:?}, which layer unpackers do not handle"),
                    })
                }
            };
            let path = entry.path_bytes();
            self.entry(layer, &path, kind).map_err(|why| Refusal::Entry { path: quote(&path), why })?;
        }
        Ok(())
    }

    /// Checks one entry of layer `layer` and records what it leaves; `Err` says why it
    /// is refused.
    pub fn entry(&mut self, layer: usize, raw: &[u8], kind: Kind) -> std::result::Result<(), String> {
        let path = relative_path(raw)?;
        if path.is_empty() {
            return match kind {
                Kind::Dir => Ok(()),
                _ => Err("replaces the image's root folder".into()),
            };
        }
        self.not_through_symlink(&path, "is written")?;
        if let (Some((l, target)), false) = (self.symlinks.get(&path), matches!(kind, Kind::Symlink(_))) {
            if *l == layer {
                return Err(format!(
                    "replaces the symlink '{}' (-> '{}') made earlier in the same layer; an unpacker may write through it",
                    quote(&path),
                    quote(target)
                ));
            }
        }
        let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], &path[..]),
        };
        if name == OPAQUE {
            let under = subtree(dir);
            self.symlinks.retain(|p, (l, _)| !(p.starts_with(&under) && *l < layer));
            return Ok(());
        }
        if let Some(gone) = name.strip_prefix(WHITEOUT) {
            if gone.starts_with(WHITEOUT) {
                return Ok(()); // AUFS metadata (.wh..wh.plnk), not a whiteout
            }
            if matches!(gone, b"" | b"." | b"..") {
                return Err(format!("is a whiteout of '{}', which names no entry", quote(gone)));
            }
            let gone = if dir.is_empty() { gone.to_vec() } else { [dir, b"/", gone].concat() };
            self.remove(&gone);
            return Ok(());
        }
        match kind {
            Kind::Dir => {
                self.symlinks.remove(&path);
            }
            Kind::Symlink(target) => {
                if climbs_above_root(dir, target) {
                    return Err(format!(
                        "is a symlink to '{}', which points above the image's root from its folder",
                        quote(target)
                    ));
                }
                self.remove(&path);
                self.symlinks.insert(path, (layer, target.to_vec()));
            }
            Kind::HardLink(target) => {
                let to = relative_path(target)
                    .map_err(|why| format!("is a hard link to '{}', which {why}", quote(target)))?;
                if to.is_empty() {
                    return Err("is a hard link to the image's root folder".into());
                }
                self.not_through_symlink(&to, &format!("is a hard link to '{}', which goes", quote(target)))?;
                if let Some((_, t)) = self.symlinks.get(&to) {
                    return Err(format!(
                        "is a hard link to the symlink '{}' (-> '{}'); some unpackers link what it points at",
                        quote(&to),
                        quote(t)
                    ));
                }
                self.remove(&path);
            }
            Kind::Other => self.remove(&path),
        }
        Ok(())
    }

    /// Refuses `path` when one of the folders above it is a symlink.
    fn not_through_symlink(&self, path: &[u8], what: &str) -> std::result::Result<(), String> {
        if self.symlinks.is_empty() {
            return Ok(());
        }
        for (i, _) in path.iter().enumerate().filter(|(_, &b)| b == b'/') {
            if let Some((_, target)) = self.symlinks.get(&path[..i]) {
                return Err(format!("{what} through the symlink '{}' (-> '{}')", quote(&path[..i]), quote(target)));
            }
        }
        Ok(())
    }

    /// Forgets the symlinks at `path` and below it (an entry or whiteout replaced them).
    fn remove(&mut self, path: &[u8]) {
        self.symlinks.remove(path);
        let under = subtree(path);
        let below: Vec<Vec<u8>> = self
            .symlinks
            .range(under.clone()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(&under))
            .cloned()
            .collect();
        for p in below {
            self.symlinks.remove(&p);
        }
    }
}

/// The prefix of every path below `dir` (`""` for the root).
fn subtree(dir: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        Vec::new()
    } else {
        [dir, b"/"].concat()
    }
}

/// Whether a symlink in `dir` to `target` resolves (lexically, as moby's `filepath.Join`
/// does) above the root. Absolute targets are paths inside the image.
fn climbs_above_root(dir: &[u8], target: &[u8]) -> bool {
    if target.starts_with(b"/") {
        return false;
    }
    let mut depth = dir.split(|&b| b == b'/').filter(|p| !p.is_empty()).count();
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if depth == 0 => return true,
            b".." => depth -= 1,
            _ => depth += 1,
        }
    }
    false
}

/// Raw path bytes for a message: printable, escaped, at most about 200 characters.
fn quote(raw: &[u8]) -> String {
    crate::image::docker_archive::printable(&String::from_utf8_lossy(raw))
}

/// Checks every entry of every layer of `base` (its blobs in `store`), in order; the
/// refusal names the base, the layer (position and diff_id) and the entry (exit 2).
pub fn check_base(store: &Store, base: &Base) -> Result<()> {
    let diff_ids = base.config.pointer("/rootfs/diff_ids").and_then(|v| v.as_array());
    let mut tree = Tree::default();
    for (i, layer) in base.layers.iter().enumerate() {
        let path = store.blob_path(&layer.digest)?;
        let file = std::fs::File::open(&path).map_err(|e| Error::io("reading base layer", &path, e))?;
        tree.check_layer(i, file).map_err(|refusal| {
            let diff_id = diff_ids.and_then(|d| d.get(i)).and_then(|v| v.as_str()).unwrap_or(&layer.digest);
            Error::usage(format!(
                "base {}: layer {} of {} (diff_id {diff_id}): {refusal}; refusing the base, whose layers would \
                 reach outside the image's root when unpacked (see docs/image-yaml.md, `from`)",
                base.what,
                i + 1,
                base.layers.len()
            ))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(layers: &[&[(&str, Kind)]]) -> std::result::Result<(), String> {
        let mut tree = Tree::default();
        for (i, entries) in layers.iter().enumerate() {
            for (path, kind) in entries.iter() {
                tree.entry(i, path.as_bytes(), *kind).map_err(|why| format!("{path}: {why}"))?;
            }
        }
        Ok(())
    }

    const F: Kind = Kind::Other;
    const D: Kind = Kind::Dir;
    fn sym(t: &str) -> Kind<'_> {
        Kind::Symlink(t.as_bytes())
    }
    fn hard(t: &str) -> Kind<'_> {
        Kind::HardLink(t.as_bytes())
    }

    #[test]
    fn escaping_entries_are_refused_with_why() {
        for (layers, why) in [
            (vec![vec![("../evil", F)]], "'..'"),
            (vec![vec![("a/../../evil", F)]], "'..'"),
            (vec![vec![("a/../b", F)]], "'..'"),
            (vec![vec![("/etc/evil", F)]], "absolute"),
            (vec![vec![("link", sym("/etc")), ("link/evil", F)]], "written through the symlink 'link'"),
            (vec![vec![("link", sym("/etc"))], vec![("link/evil", F)]], "written through the symlink 'link'"),
            (vec![vec![("d", D), ("d/l", sym("/"))], vec![("d/l/etc/x", D)]], "symlink 'd/l'"),
            (vec![vec![("link", sym("/etc"))], vec![("link/.wh.passwd", F)]], "through the symlink"),
            (vec![vec![("h", hard("../../etc/passwd"))]], "hard link"),
            (vec![vec![("h", hard("/etc/passwd"))]], "absolute"),
            (vec![vec![("l", sym("/etc")), ("h", hard("l/passwd"))]], "goes through the symlink 'l'"),
            (vec![vec![("l", sym("/etc/passwd")), ("h", hard("l"))]], "hard link to the symlink"),
            (vec![vec![("x", sym("/etc/passwd")), ("x", F)]], "same layer"),
            (vec![vec![("x", sym("/etc")), ("x", D)]], "same layer"),
            (vec![vec![("a/up", sym("../../etc"))]], "above the image's root"),
            (vec![vec![(".", F)]], "root folder"),
            (vec![vec![("d/.wh...", F)]], "whiteout"),
        ] {
            let layers: Vec<&[(&str, Kind)]> = layers.iter().map(|l| &l[..]).collect();
            let err = check(&layers).expect_err(why);
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn real_image_shapes_pass() {
        let layers: Vec<Vec<(&str, Kind)>> = vec![
            vec![
                ("./", D),
                ("./usr/", D),
                ("./usr/lib/", D),
                ("./lib", sym("usr/lib")),
                ("./bin", sym("usr/bin")),
                ("./usr/bin/", D),
                ("./usr/bin/sh", sym("/bin/busybox")),
                ("./usr/lib/os-release", sym("../lib/os-release.d/x")),
                ("./usr/bin/busybox", F),
                ("./usr/bin/ls", hard("usr/bin/busybox")),
                ("etc//alternatives/", D),
                ("etc/alternatives/pager", sym("/usr/bin/less")),
                ("dev/null", F),
            ],
            // A later layer replaces a symlink by a folder and by a file, removes one with a
            // whiteout and writes where it was, and clears a folder with an opaque marker.
            vec![
                ("etc/alternatives/pager", F),
                ("bin", D),
                ("bin/tool", F),
                (".wh.lib", F),
                ("lib/new", F),
                ("etc/alternatives/.wh..wh..opq", F),
                (".wh..wh.plnk", D),
            ],
        ];
        let layers: Vec<&[(&str, Kind)]> = layers.iter().map(|l| &l[..]).collect();
        check(&layers).unwrap();
        // The opaque marker removed the lower layer's symlinks below it, a later one is new.
        let mut tree = Tree::default();
        tree.entry(0, b"d/l", sym("/etc")).unwrap();
        tree.entry(1, b"d/.wh..wh..opq", F).unwrap();
        tree.entry(1, b"d/l/x", F).unwrap();
        tree.entry(1, b"d/m", sym("/etc")).unwrap();
        tree.entry(1, b"d/.wh..wh..opq", F).unwrap();
        assert!(tree.entry(1, b"d/m/x", F).is_err(), "an opaque marker hides lower layers only");
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(0);
            h.set_mode(0o644);
            // Raw names: the tar crate's setters refuse `..` and absolute paths themselves.
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn layers_stream_gzip_or_plain_and_long_names_are_read() {
        use std::io::Write as _;
        let long = format!("{}/x", "d".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, &long[..long.len() - 2], "/etc").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        b.append_data(&mut h, &long, &[][..]).unwrap();
        let plain = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        for layer in [plain.clone(), gz.finish().unwrap()] {
            let err = Tree::default().check_layer(0, &layer[..]).unwrap_err();
            assert!(err.to_string().contains("through the symlink 'ddd"), "{err}");
        }
        let ok = tar_of(&[("a", tar::EntryType::Directory, ""), ("a/b", tar::EntryType::Regular, "")]);
        Tree::default().check_layer(0, &ok[..]).unwrap();
        let evil = tar_of(&[("h", tar::EntryType::Link, "/etc/passwd")]);
        let err = Tree::default().check_layer(0, &evil[..]).unwrap_err();
        assert_eq!(err.to_string(), "entry 'h' is a hard link to '/etc/passwd', which is absolute");
        let err = Tree::default().check_layer(0, &b"\x01\x1b[31mnot a tar"[..]).unwrap_err();
        assert!(matches!(err, Refusal::Unreadable(_)) && !err.to_string().contains('\x1b'), "{err}");
    }

    /// A naive host unpacker, the oracle of the property tests: moby's `UnpackLayer`
    /// without its chroot (missing parents become folders, an entry replaces what is at
    /// its path, the kernel follows symlinks in parents, absolute ones from the host's
    /// `/`). It reports an entry that lands outside `root`, or that is placed by
    /// following a symlink.
    mod naive {
        use std::collections::{BTreeMap, VecDeque};

        #[derive(Debug, Clone, PartialEq)]
        enum Node {
            Dir,
            File,
            Symlink(String),
        }

        #[derive(Debug, PartialEq)]
        pub enum Bad {
            Outside(String),
            ThroughSymlink(String),
        }

        /// Where a path lands, or None when unpacking it fails (ENOTDIR, ELOOP).
        type Landing = Option<(Vec<String>, usize)>;

        #[derive(Default)]
        pub struct Host {
            nodes: BTreeMap<Vec<String>, (usize, Node)>,
        }

        fn parts(p: &str) -> impl Iterator<Item = String> + '_ {
            p.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::to_string)
        }

        impl Host {
            /// Resolves `path` under `root` as the kernel would: the folder path it lands in and
            /// how many symlinks it followed, or Err when it leaves `root`.
            fn resolve(&self, path: &str, follow_last: bool) -> Result<Landing, String> {
                if path.starts_with('/') {
                    return Err(format!("{path}: absolute"));
                }
                let mut queue: VecDeque<String> = parts(path).collect();
                let mut cur = vec!["root".to_string()];
                let mut hops = 0;
                while let Some(c) = queue.pop_front() {
                    if c == ".." {
                        if cur.len() == 1 {
                            return Err(format!("{path}: climbs above root"));
                        }
                        cur.pop();
                        continue;
                    }
                    let mut next = cur.clone();
                    next.push(c);
                    match self.nodes.get(&next).map(|(_, n)| n) {
                        Some(Node::Symlink(t)) if follow_last || !queue.is_empty() => {
                            hops += 1;
                            if hops > 40 {
                                return Ok(None);
                            }
                            if t.starts_with('/') {
                                return Err(format!("{path}: follows a symlink to the host's {t}"));
                            }
                            for p in parts(t).collect::<Vec<_>>().into_iter().rev() {
                                queue.push_front(p);
                            }
                        }
                        Some(Node::File) if !queue.is_empty() => return Ok(None),
                        _ => cur = next,
                    }
                }
                Ok(Some((cur, hops)))
            }

            /// Removes `at` and everything below it.
            fn remove(&mut self, at: &[String]) {
                self.nodes.retain(|p, _| !p.starts_with(at));
            }

            /// Removes what lower layers than `layer` left below `dir` (an opaque marker).
            fn clear_lower(&mut self, dir: &[String], layer: usize) {
                self.nodes.retain(|p, (l, _)| !(p.len() > dir.len() && p.starts_with(dir) && *l < layer));
            }

            /// Unpacks one entry of layer `layer`.
            pub fn apply(&mut self, layer: usize, path: &str, kind: &super::Kind) -> Result<(), Bad> {
                let land = |r: Result<Landing, String>| match r {
                    Err(why) => Err(Bad::Outside(why)),
                    Ok(Some((_, hops))) if hops > 0 => Err(Bad::ThroughSymlink(path.to_string())),
                    Ok(l) => Ok(l.map(|(at, _)| at)),
                };
                let Some(at) = land(self.resolve(path, false))? else { return Ok(()) };
                let name = at.last().cloned().unwrap_or_default();
                if at.len() == 1 {
                    return Ok(()); // the root itself
                }
                if name == ".wh..wh..opq" {
                    self.clear_lower(&at[..at.len() - 1], layer);
                    return Ok(());
                }
                if let Some(gone) = name.strip_prefix(".wh.") {
                    if !gone.starts_with(".wh.") {
                        let mut victim = at[..at.len() - 1].to_vec();
                        victim.push(gone.to_string());
                        if matches!(gone, "" | "." | "..") {
                            return Err(Bad::Outside(format!("{path}: whiteout of '{gone}'")));
                        }
                        self.remove(&victim);
                    }
                    return Ok(());
                }
                let node = match kind {
                    super::Kind::Dir => {
                        if self.nodes.get(&at).map(|(_, n)| n) == Some(&Node::Dir) {
                            return Ok(());
                        }
                        Node::Dir
                    }
                    super::Kind::Symlink(t) => Node::Symlink(String::from_utf8_lossy(t).into_owned()),
                    super::Kind::HardLink(t) => {
                        let t = String::from_utf8_lossy(t).into_owned();
                        // Go's os.Link does not follow a final symlink, Python's tarfile does.
                        for follow in [false, true] {
                            land(self.resolve(&t, follow))?;
                        }
                        Node::File
                    }
                    super::Kind::Other => Node::File,
                };
                self.remove(&at);
                self.nodes.insert(at, (layer, node));
                Ok(())
            }
        }
    }

    fn naive_unpack(layers: &[Vec<(String, Kind)>]) -> Result<(), naive::Bad> {
        let mut host = naive::Host::default();
        for (i, l) in layers.iter().enumerate() {
            for (path, kind) in l {
                host.apply(i, path, kind)?;
            }
        }
        Ok(())
    }

    #[test]
    fn the_naive_unpacker_sees_the_escapes() {
        let l = |v: Vec<(&str, Kind<'static>)>| v.into_iter().map(|(p, k)| (p.to_string(), k)).collect::<Vec<_>>();
        assert!(naive_unpack(&[l(vec![("link", sym("/etc")), ("link/evil", F)])]).is_err());
        assert!(naive_unpack(&[l(vec![("link", sym("d"))]), l(vec![("link/x", F)])]).is_err());
        assert!(naive_unpack(&[l(vec![("../evil", F)])]).is_err());
        assert!(naive_unpack(&[l(vec![("l", sym("/etc")), ("h", hard("l/passwd"))])]).is_err());
        assert!(naive_unpack(&[l(vec![("l", sym("/etc")), (".wh.l", F), ("l/x", F)])]).is_ok());
    }

    use proptest::prelude::*;

    fn path_strategy() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            8 => prop::sample::select(vec!["a", "b"]),
            1 => prop::sample::select(vec!["..", ".", "", ".wh.a", ".wh..wh..opq", ".wh.."]),
        ];
        (prop::bool::weighted(0.1), prop::collection::vec(part, 1..4))
            .prop_map(|(abs, parts)| format!("{}{}", if abs { "/" } else { "" }, parts.join("/")))
    }

    fn layers_strategy() -> impl Strategy<Value = Vec<Vec<(String, u8, String)>>> {
        let target = prop_oneof![
            prop::sample::select(vec!["/", "/etc", "a", "b/a", "..", "../..", ".", "a/..", "../a"])
                .prop_map(String::from),
            path_strategy(),
        ];
        let entry = (path_strategy(), 0u8..4, target);
        prop::collection::vec(prop::collection::vec(entry, 0..8), 1..4)
    }

    fn kind_of<'a>(k: u8, target: &'a str) -> Kind<'a> {
        match k {
            0 => Kind::Dir,
            1 => Kind::Other,
            2 => Kind::Symlink(target.as_bytes()),
            _ => Kind::HardLink(target.as_bytes()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the checker accepts, a naive unpacker places inside the root and never
        /// by following a symlink. (A refused entry changes nothing in the checker, so the
        /// entries it accepted are checked as a sequence of their own.)
        #[test]
        fn accepted_entries_stay_inside_for_a_naive_unpacker(layers in layers_strategy()) {
            let mut tree = Tree::default();
            let accepted: Vec<Vec<(String, Kind)>> = layers
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    l.iter()
                        .filter(|(path, k, target)| tree.entry(i, path.as_bytes(), kind_of(*k, target)).is_ok())
                        .map(|(p, k, t)| (p.clone(), kind_of(*k, t)))
                        .collect()
                })
                .collect();
            prop_assert_eq!(naive_unpack(&accepted), Ok(()), "accepted: {:?}", accepted);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Arbitrary bytes, plain or behind a gzip header, and valid layers with bytes
        /// overwritten: a refusal or an acceptance, never a panic.
        #[test]
        fn any_bytes_are_refused_or_accepted_without_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..2048),
            gzip in any::<bool>(),
            flips in prop::collection::vec((0usize..4096, any::<u8>()), 0..8),
        ) {
            let input = if gzip {
                let mut v = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
                v.extend(&bytes);
                v
            } else {
                bytes
            };
            let _ = Tree::default().check_layer(0, &input[..]);
            let mut valid = tar_of(&[
                ("a", tar::EntryType::Directory, ""),
                ("a/l", tar::EntryType::Symlink, "/etc"),
                ("a/h", tar::EntryType::Link, "a/b"),
                ("a/b", tar::EntryType::Regular, ""),
            ]);
            for (at, b) in flips {
                let n = valid.len();
                valid[at % n] = b;
            }
            let _ = Tree::default().check_layer(0, &valid[..]);
        }
    }
}
