//! The one atomic file write: a reader sees the old file or the whole new one, never a
//! part, and a crash leaves at worst a temporary file (in a store's `tmp/`, swept when
//! the store is next opened; beside the file, a `.tmp*` name).
//!
//! The steps are those of every careful writer: a temporary file on the destination's
//! file system (a rename across file systems is a copy, not atomic), its data synced,
//! renamed over the destination, then the folder synced so the rename itself survives a
//! power loss. A step that fails removes the temporary file and names the destination.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tempfile::NamedTempFile;

use crate::support::error::{Error, Result};

/// Where an atomic write puts its temporary file and which mode the file gets. The
/// default: beside the destination, with the mode `std::fs::write` would give it
/// (0666 less the umask), not tempfile's 0600.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions<'a> {
    /// A folder on the destination's file system whose leftovers are swept (a store's
    /// `tmp/`); `None`: the destination's own folder.
    pub temp_dir: Option<&'a Path>,
    /// Exactly these permission bits, from the moment the file exists (0600 for
    /// credentials), whatever the umask.
    pub mode: Option<u32>,
}

impl<'a> WriteOptions<'a> {
    /// The temporary file in `dir`, the default mode.
    pub fn temp_in(dir: &'a Path) -> Self {
        WriteOptions { temp_dir: Some(dir), mode: None }
    }
}

/// Writes `bytes` to `path` atomically (see the module doc), creating `path`'s folder
/// when it is missing.
pub fn write_atomically(path: &Path, bytes: &[u8], options: WriteOptions) -> Result<()> {
    let folder = folder_of(path);
    std::fs::create_dir_all(folder).map_err(|e| Error::io("creating folder", folder, e))?;
    let mut tmp = temp_file(options.temp_dir.unwrap_or(folder), options.mode)?;
    tmp.as_file_mut().write_all(bytes).map_err(|e| Error::io("writing", path, e))?;
    persist(tmp, path)
}

/// A new empty temporary file in `dir`, for a writer that streams into it and then
/// calls [`persist`]; `mode` as in [`WriteOptions::mode`]. Dropped unpersisted, it is
/// removed.
pub fn temp_file(dir: &Path, mode: Option<u32>) -> Result<NamedTempFile> {
    let tmp = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(mode.unwrap_or(0o666)))
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating a temporary file in", dir, e))?;
    if let Some(mode) = mode {
        // Creation applied the umask; a mode asked for is exact.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("setting the mode of", tmp.path(), e))?;
    }
    Ok(tmp)
}

/// Puts a complete temporary file in place as `path` (whose folder exists): syncs its
/// data, renames it over `path`, syncs the folder. On failure the temporary file is
/// removed and `path` is as it was.
pub fn persist(mut tmp: NamedTempFile, path: &Path) -> Result<()> {
    tmp.as_file_mut().flush().map_err(|e| Error::io("writing", path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io("syncing", path, e))?;
    tmp.persist(path).map_err(|e| Error::io("renaming into place", path, e.error))?;
    // The rename is durable once the folder's entry is; a folder that cannot be opened
    // or synced (some network file systems) still has the file, so this is best effort.
    if let Ok(folder) = std::fs::File::open(folder_of(path)) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// The folder `path` is in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn replaces_the_file_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        std::fs::write(&path, b"old and longer").unwrap();
        write_atomically(&path, b"new", WriteOptions::default()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["f.json"]);
    }

    #[test]
    fn a_temp_dir_is_used_and_a_missing_folder_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let path = dir.path().join("keys/ab/entry");
        write_atomically(&path, b"x", WriteOptions::temp_in(&tmp)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        assert!(names(&tmp).is_empty());
    }

    #[test]
    fn a_failed_write_leaves_neither_the_file_nor_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        // The rename fails: the destination is a folder that is not empty.
        let path = dir.path().join("taken");
        std::fs::create_dir_all(path.join("inside")).unwrap();
        for options in [WriteOptions::default(), WriteOptions::temp_in(&tmp)] {
            let e = write_atomically(&path, b"x", options).unwrap_err();
            assert!(e.message().contains(&path.display().to_string()), "{e}");
            assert!(path.is_dir());
            assert_eq!(names(dir.path()), ["taken", "tmp"], "{options:?}");
            assert!(names(&tmp).is_empty(), "{options:?}");
        }
        // The folder cannot be created: a file stands where it should be.
        let blocked = dir.path().join("tmp-file");
        std::fs::write(&blocked, b"").unwrap();
        let path = blocked.join("f");
        let e = write_atomically(&path, b"x", WriteOptions::temp_in(&tmp)).unwrap_err();
        assert!(e.message().contains(&blocked.display().to_string()), "{e}");
        assert!(names(&tmp).is_empty());
    }

    #[test]
    fn a_mode_asked_for_is_applied_exactly_and_the_default_is_that_of_fs_write() {
        let dir = tempfile::tempdir().unwrap();
        // 0o666 and 0o775 have bits a usual umask (022, 002) takes away at creation.
        for mode in [0o600, 0o640, 0o666, 0o775] {
            let path = dir.path().join(format!("m{mode:o}"));
            write_atomically(&path, b"x", WriteOptions { mode: Some(mode), ..Default::default() }).unwrap();
            assert_eq!(mode_of(&path), mode, "asked {mode:o}, got {:o}", mode_of(&path));
        }
        // Replacing a file gives it the new mode, not the old file's.
        let path = dir.path().join("config.json");
        std::fs::write(&path, b"{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&path, b"{}", WriteOptions { mode: Some(0o600), ..Default::default() }).unwrap();
        assert_eq!(mode_of(&path), 0o600);

        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let atomic = dir.path().join("atomic");
        write_atomically(&atomic, b"x", WriteOptions::default()).unwrap();
        assert_eq!(mode_of(&atomic), mode_of(&plain));
    }

    #[test]
    fn a_streamed_temporary_file_is_persisted_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut tmp = temp_file(dir.path(), None).unwrap();
        tmp.write_all(b"streamed").unwrap();
        persist(tmp, &dir.path().join("out")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), b"streamed");
        drop(temp_file(dir.path(), None).unwrap());
        assert_eq!(names(dir.path()), ["out"]);
    }
}
