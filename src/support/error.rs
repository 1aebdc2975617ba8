//! One error type for the library. Every error carries a message that names the file,
//! image or platform it concerns and says what to do; its kind decides the exit code.

use std::path::Path;

/// What went wrong, coarsely: decides the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad command-line usage or configuration (exit 2).
    Usage,
    /// A build, push, engine or registry failure (exit 1).
    Failure,
    /// This machine's disk failed under archfarm (full, over quota, read-only, I/O
    /// error) while it wrote or read its own files (exit 1): never a builder's or a
    /// registry's fault, so never retried elsewhere.
    Disk,
    /// The process was stopped by this signal (Ctrl-C, SIGTERM): exit 128 + its number,
    /// as shells report it.
    Interrupted(i32),
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: Kind,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Bad input from the user: a flag, a config file, a recipe, an image folder.
    pub fn usage(message: impl Into<String>) -> Self {
        Error { kind: Kind::Usage, message: message.into() }
    }

    /// Something that should have worked did not: a build, an engine, a registry.
    pub fn failure(message: impl Into<String>) -> Self {
        Error { kind: Kind::Failure, message: message.into() }
    }

    /// Stopped by `signal` (its number and name), while `running` were under way.
    pub fn interrupted(signal: i32, name: &str, running: &[String]) -> Self {
        let message = if running.is_empty() {
            format!("interrupted by {name}")
        } else {
            format!("interrupted by {name} while these jobs ran: {}", running.join(", "))
        };
        Error { kind: Kind::Interrupted(signal), message }
    }

    /// An I/O error on a path, with what archfarm was doing. A local disk error (see
    /// [`is_disk_error`]) becomes a [`Kind::Disk`] error that also says how much space
    /// the path's file system has left; an error that already carries one of ours (see
    /// [`Error::into_io`]) is returned as it is.
    pub fn io(doing: &str, path: &Path, err: std::io::Error) -> Self {
        match Error::from_io(err) {
            Ok(ours) => ours,
            Err(err) if is_disk_error(&err) => Error::disk(doing, path, &err),
            Err(err) => Error::failure(format!("{doing} {}: {err}", path.display())),
        }
    }

    /// A local disk error on `path`: names the path, the error and the free space, and
    /// says whose it is.
    pub fn disk(doing: &str, path: &Path, err: &std::io::Error) -> Self {
        Error {
            kind: Kind::Disk,
            message: format!(
                "{doing} {}: {err} ({}); this is this machine's disk, not a builder's or the registry's: \
                 free space there (or point archfarm elsewhere) and run again",
                path.display(),
                free_space(path)
            ),
        }
    }

    /// This error inside an `io::Error`, for code that must pass it through `Read` or
    /// `Write`; [`Error::from_io`] (and [`Error::io`]) take it out again, kind and all.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }

    /// The error of ours that `err` carries ([`Error::into_io`]), or `err` itself.
    pub fn from_io(err: std::io::Error) -> std::result::Result<Error, std::io::Error> {
        if !err.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return Err(err);
        }
        Ok(*err.into_inner().expect("checked above").downcast::<Error>().expect("checked above"))
    }

    /// A local disk error: archfarm's own problem, never another machine's.
    pub fn is_disk(&self) -> bool {
        self.kind == Kind::Disk
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The process exit code for this error: 2 usage/configuration, 1 failure, 128 + N
    /// stopped by signal N.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            Kind::Usage => 2,
            Kind::Failure | Kind::Disk => 1,
            Kind::Interrupted(signal) => 128 + signal,
        }
    }

    /// Prefixes the message with where it happened, keeping the kind.
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        Error { kind: self.kind, message: format!("{context}: {}", self.message) }
    }
}

/// For `Write` and `Read` implementations over local files: a disk error on `path`
/// becomes our [`Kind::Disk`] error inside the `io::Error` (so it keeps its meaning
/// through compressors and `io::copy` to whoever turns it back with [`Error::from_io`]);
/// any other error is returned unchanged, kind and all.
pub fn mark_disk_error(doing: &str, path: &Path, err: std::io::Error) -> std::io::Error {
    if is_disk_error(&err) {
        Error::disk(doing, path, &err).into_io()
    } else {
        err
    }
}

/// A write or read failed because of the local disk: full (ENOSPC), over quota (EDQUOT),
/// read-only (EROFS) or an I/O error (EIO). Looks through wrappers such as tempfile's,
/// which keep the kind but hide the OS error number.
pub fn is_disk_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    if matches!(err.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::ReadOnlyFilesystem) {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) == Some(nix::libc::EIO) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// `4.0 KiB free of 2.0 MiB on the file system of /store/tmp`: the space left where
/// `path` is (its nearest existing folder), from statvfs.
fn free_space(path: &Path) -> String {
    let folder = path.ancestors().find(|p| p.is_dir()).unwrap_or(Path::new("/"));
    match nix::sys::statvfs::statvfs(folder) {
        Ok(s) => {
            let block = s.fragment_size();
            let free = s.blocks_available() * block;
            let total = s.blocks() * block;
            format!("{} free of {} on the file system of {}", human_size(free), human_size(total), folder.display())
        }
        Err(e) => format!("free space unknown: statvfs {}: {e}", folder.display()),
    }
}

/// A size for people: `512 B`, `4.0 KiB`, `1.5 MiB`, `3.2 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Adds context to any `Result` whose error converts to ours.
pub trait ResultExt<T> {
    fn context(self, context: impl std::fmt::Display) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, context: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_errors_are_told_apart_and_survive_io_plumbing() {
        let full = std::io::Error::from_raw_os_error(nix::libc::ENOSPC);
        for errno in [nix::libc::ENOSPC, nix::libc::EDQUOT, nix::libc::EROFS, nix::libc::EIO] {
            assert!(is_disk_error(&std::io::Error::from_raw_os_error(errno)), "{errno}");
        }
        assert!(!is_disk_error(&std::io::Error::from_raw_os_error(nix::libc::ECONNRESET)));
        assert!(!is_disk_error(&std::io::Error::other("garbage")));

        let dir = tempfile::tempdir().unwrap();
        let e = Error::io("writing", &dir.path().join("blob"), full);
        assert!(e.is_disk() && e.exit_code() == 1);
        assert!(e.message().contains("No space left") && e.message().contains(" free of "), "{}", e.message());
        assert!(e.message().contains(&dir.path().display().to_string()), "{}", e.message());
        // Through Write and io::copy and back, kind and message intact.
        let through = Error::from_io(e.into_io()).unwrap();
        assert!(through.is_disk());
        let other = mark_disk_error("writing", dir.path(), std::io::ErrorKind::Interrupted.into());
        assert_eq!(other.kind(), std::io::ErrorKind::Interrupted, "other errors keep their kind");
        assert!(Error::from_io(other).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(4096), "4.0 KiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
    }
}
