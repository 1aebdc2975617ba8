//! Layer planning: from packages and `contents` to at most `maxLayers` layers.
//!
//! Every package is its own group (they change together with the archive, rarely), then
//! every `contents` entry in recipe order, then the platform's `platformContents`. A group
//! larger than [`CHUNK`] is cut into runs of whole directories (cuts only before a
//! directory entry, never between a hard link and its target), so a one-file change in a
//! big tree re-ships one chunk, not the tree, and chunks compress in parallel. When there
//! are more groups than the layer budget (maxLayers minus the base's layers), the
//! adjacent pair with the smallest combined size is merged, repeatedly: order (and so
//! overlay semantics) is kept, nothing is ever dropped, and the big stable groups stay
//! on their own.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::recipe::context::{Context, EntryKind};
use crate::support::error::{Error, Result};

use crate::image::tar::{Data, Kind, TarEntry};
use crate::recipe::image_yaml::ContentItem;

/// Target size of one chunk of a large `contents` entry.
pub const CHUNK: u64 = 32 << 20;

/// One future layer: what it holds and a description for the config history.
#[derive(Debug, Clone)]
pub struct Group {
    pub what: String,
    pub entries: Vec<TarEntry>,
}

impl Group {
    pub fn size(&self) -> u64 {
        self.entries.iter().map(TarEntry::tar_size).sum()
    }
}

/// The entries of one `contents` item, read from the scanned image folder.
/// `parents`: also emit the directories above `dest` (for images without a base).
pub fn content_entries(
    ctx: &Context,
    item: &ContentItem,
    parents: bool,
    file: &Path,
    field: &str,
) -> Result<Vec<TarEntry>> {
    let src = normalize(&item.src);
    let dest = match ctx.entries.iter().find(|e| e.path == src && !src.is_empty()).map(|e| &e.kind) {
        Some(EntryKind::File { .. } | EntryKind::Symlink { .. }) => file_dest(item, &src, file, field)?,
        _ => item.dest_path.clone(),
    };
    let join = |rel: &str| -> String {
        match (dest.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => dest.clone(),
            (false, false) => format!("{dest}/{rel}"),
        }
    };
    let mut out = Vec::new();
    if parents && !dest.is_empty() {
        let parts: Vec<&str> = dest.split('/').collect();
        for i in 1..parts.len() {
            out.push(dir_entry(parts[..i].join("/"), item));
        }
    }
    let prefix = if src.is_empty() { String::new() } else { format!("{src}/") };
    let mut found = false;
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for e in &ctx.entries {
        let rel = if e.path == src {
            ""
        } else if src.is_empty() {
            e.path.as_str()
        } else if let Some(r) = e.path.strip_prefix(&prefix) {
            r
        } else {
            continue;
        };
        if src.is_empty() && e.path == crate::recipe::catalog::ASSEMBLED_RECIPE {
            continue;
        }
        found = true;
        let path = join(rel);
        if path.is_empty() {
            continue; // the folder mapped onto `/` itself
        }
        let disk = ctx.dir.join(&e.path);
        let entry = match &e.kind {
            EntryKind::Dir => dir_entry(path, item),
            EntryKind::Symlink { target } => {
                TarEntry { path, kind: Kind::Symlink(target.clone()), mode: 0o777, uid: item.uid, gid: item.gid }
            }
            EntryKind::File { executable, size, sha256 } => {
                let meta = std::fs::symlink_metadata(&disk).map_err(|e| Error::io("reading", &disk, e))?;
                let mode = item.mode.unwrap_or(if *executable { 0o755 } else { 0o644 });
                let kind = match (meta.nlink() > 1).then(|| inodes.get(&(meta.dev(), meta.ino()))).flatten() {
                    Some(first) => Kind::HardLink(first.clone()),
                    None => {
                        if meta.nlink() > 1 {
                            inodes.insert((meta.dev(), meta.ino()), path.clone());
                        }
                        Kind::File { data: Data::File(disk), size: *size, id: *sha256 }
                    }
                };
                TarEntry { path, kind, mode, uid: item.uid, gid: item.gid }
            }
        };
        out.push(entry);
    }
    if !found {
        return Err(Error::usage(format!(
            "{}: field `{field}`: src '{}' is not in the image folder {} (or .dockerignore excludes it); add it or fix \
             the path",
            file.display(),
            item.src,
            ctx.dir.display()
        )));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup_by(|b, a| a.path == b.path && a.kind == Kind::Dir && b.kind == Kind::Dir);
    Ok(out)
}

/// Where a file `src` lands: at `dest`, or into it under its own name when `dest` ends
/// with `/` (Docker's COPY); `/` itself is refused, so the file is never dropped.
fn file_dest(item: &ContentItem, src: &str, file: &Path, field: &str) -> Result<String> {
    let name = src.rsplit('/').next().unwrap_or(src);
    match (item.dest_path.as_str(), item.into_folder) {
        ("", _) => Err(Error::usage(format!(
            "{}: field `{field}.dest`: '{}' is the root folder itself, and src '{}' is a file; give the file's path \
             in the image (dest: /{name}) or a folder to copy it into (dest: /some/folder/)",
            file.display(),
            item.dest.escape_debug(),
            item.src
        ))),
        (folder, true) => Ok(format!("{folder}/{name}")),
        (path, false) => Ok(path.to_string()),
    }
}

fn dir_entry(path: String, item: &ContentItem) -> TarEntry {
    TarEntry { path, kind: Kind::Dir, mode: 0o755, uid: item.uid, gid: item.gid }
}

fn normalize(p: &str) -> String {
    p.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/")
}

/// Cuts a large group into runs of about [`CHUNK`] bytes, only before a directory
/// entry and never between a hard link and the file it links to.
pub fn split(group: Group) -> Vec<Group> {
    if group.size() <= CHUNK {
        return vec![group];
    }
    // For each hard-link target, the index of its last link: no cut before that.
    let mut last_link: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, e) in group.entries.iter().enumerate() {
        if let Kind::HardLink(t) = &e.kind {
            last_link.insert(t.as_str(), i);
        }
    }
    let mut cuts = Vec::new();
    let mut acc = 0u64;
    let mut open_until = 0usize;
    for (i, e) in group.entries.iter().enumerate() {
        if acc >= CHUNK && e.kind == Kind::Dir && i > open_until {
            cuts.push(i);
            acc = 0;
        }
        if let Some(&j) = last_link.get(e.path.as_str()) {
            open_until = open_until.max(j);
        }
        acc += e.tar_size();
    }
    if cuts.is_empty() {
        return vec![group];
    }
    let mut out = Vec::new();
    let mut entries = group.entries;
    for (n, &c) in cuts.iter().enumerate().rev() {
        let tail = entries.split_off(c);
        out.push(Group { what: format!("{} (part {})", group.what, n + 2), entries: tail });
    }
    out.push(Group { what: format!("{} (part 1)", group.what), entries });
    out.reverse();
    out
}

/// Merges adjacent groups, smallest combined size first, until at most `budget` remain.
pub fn fit(mut groups: Vec<Group>, budget: usize) -> Vec<Group> {
    while groups.len() > budget.max(1) {
        let sizes: Vec<u64> = groups.iter().map(Group::size).collect();
        let i = (0..groups.len() - 1).min_by_key(|&i| (sizes[i] + sizes[i + 1], i)).expect("two or more groups");
        let next = groups.remove(i + 1);
        let g = &mut groups[i];
        g.what = format!("{} + {}", g.what, next.what);
        g.entries.extend(next.entries);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> TarEntry {
        TarEntry {
            path: path.into(),
            kind: Kind::File { data: Data::File("/dev/null".into()), size, id: [0; 32] },
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }

    fn dir(path: &str) -> TarEntry {
        TarEntry { path: path.into(), kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0 }
    }

    #[test]
    fn big_groups_split_at_directories_and_keep_every_entry() {
        let mut entries = Vec::new();
        for d in 0..10 {
            entries.push(dir(&format!("d{d}")));
            for f in 0..4 {
                entries.push(file(&format!("d{d}/f{f}"), 4 << 20));
            }
        }
        let total = entries.len();
        let parts = split(Group { what: "tree".into(), entries });
        assert!(parts.len() > 3, "{}", parts.len());
        assert_eq!(parts.iter().map(|g| g.entries.len()).sum::<usize>(), total);
        for p in &parts[1..] {
            assert_eq!(p.entries[0].kind, Kind::Dir, "cuts are before directories");
        }
    }

    #[test]
    fn hard_links_stay_with_their_target() {
        let mut entries = vec![dir("a"), file("a/big", 40 << 20), dir("b")];
        entries.push(TarEntry {
            path: "b/link".into(),
            kind: Kind::HardLink("a/big".into()),
            mode: 0o644,
            uid: 0,
            gid: 0,
        });
        entries.push(dir("c"));
        entries.push(file("c/x", 1));
        let parts = split(Group { what: "t".into(), entries });
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].entries[0].path, "c");
    }

    #[test]
    fn fit_merges_the_smallest_neighbours_and_keeps_order() {
        let g = |name: &str, size: u64| Group { what: name.into(), entries: vec![file(name, size)] };
        let groups = vec![g("a", 100 << 10), g("b", 1), g("c", 1), g("d", 50 << 10)];
        let out = fit(groups, 2);
        let names: Vec<Vec<&str>> = out.iter().map(|g| g.entries.iter().map(|e| e.path.as_str()).collect()).collect();
        assert_eq!(names, [vec!["a"], vec!["b", "c", "d"]]);
    }
}
