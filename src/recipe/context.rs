//! The build context of an image folder: exactly the files that are hashed into the
//! content key and, for engine builds, streamed to the engine as the build context tar.
//! One list serves both, so what is built is what was hashed.

use std::path::PathBuf;

/// What a context entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file, with its content's SHA-256.
    File { executable: bool, size: u64, sha256: [u8; 32] },
    /// A symlink, kept as a link (never followed); its target stays inside the folder.
    Symlink { target: String },
    /// A directory (empty ones matter to COPY).
    Dir,
}

/// One file, link or directory of an image folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextEntry {
    /// Relative to the image folder, `/`-separated, no leading `./`.
    pub path: String,
    pub kind: EntryKind,
}

impl ContextEntry {
    /// What the content key and the provenance's context digest record of it: `file`,
    /// `exec` (an executable file), `symlink` or `dir`, and the file's SHA-256 (hex), the
    /// link's target, or nothing for a folder.
    pub fn kind_and_value(&self) -> (&'static str, String) {
        match &self.kind {
            EntryKind::File { executable: false, sha256, .. } => ("file", hex::encode(sha256)),
            EntryKind::File { executable: true, sha256, .. } => ("exec", hex::encode(sha256)),
            EntryKind::Symlink { target } => ("symlink", target.clone()),
            EntryKind::Dir => ("dir", String::new()),
        }
    }
}

/// The scanned folder of one image. `entries` are sorted by `path` bytes.
#[derive(Debug, Clone)]
pub struct Context {
    pub dir: PathBuf,
    pub entries: Vec<ContextEntry>,
}
