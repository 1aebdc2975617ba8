//! Deterministic layer tars: a small tar writer whose output is a pure function of the
//! entry list (fixed mtime, numeric owners, no user or group names, no device numbers,
//! GNU long-name records for paths over 100 bytes), and whose exact size is known
//! before a byte is written, so a layer can be streamed into an outer tar (the
//! docker-archive on stdout) without being built twice to learn its size.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// A whole file on disk.
    File(PathBuf),
    /// `len` bytes at `offset` of a file (a member of an unpacked package's data tar).
    Range(PathBuf, u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// `id` identifies the content: its SHA-256 for files of the image folder, a hash of
    /// the package and offset for package members (the layer cache keys on it).
    File {
        data: Data,
        size: u64,
        id: [u8; 32],
    },
    Symlink(String),
    /// A hard link to an earlier entry of the same layer (its path, no leading `/`).
    HardLink(String),
}

/// The largest uid or gid a Linux file can have: ids are 32 bits, and 4294967295 is
/// `(uid_t)-1`, which chown(2) takes as "leave unchanged".
pub const MAX_ID: u64 = 4_294_967_294;

/// One entry of a layer. `path` is relative to `/`, with no leading or trailing `/`;
/// `uid` and `gid` are at most [`MAX_ID`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

impl TarEntry {
    fn name(&self) -> String {
        match self.kind {
            Kind::Dir => format!("{}/", self.path),
            _ => self.path.clone(),
        }
    }

    fn data_size(&self) -> u64 {
        match &self.kind {
            Kind::File { size, .. } => *size,
            _ => 0,
        }
    }

    fn link(&self) -> Option<&str> {
        match &self.kind {
            Kind::Symlink(t) | Kind::HardLink(t) => Some(t),
            _ => None,
        }
    }

    /// Bytes this entry takes in the tar.
    pub fn tar_size(&self) -> u64 {
        512 + long_record_size(self.name().len())
            + self.link().map(|l| long_record_size(l.len())).unwrap_or(0)
            + pad(self.data_size())
    }
}

fn pad(n: u64) -> u64 {
    n.div_ceil(512) * 512
}

fn long_record_size(len: usize) -> u64 {
    if len > 100 {
        512 + pad(len as u64 + 1)
    } else {
        0
    }
}

/// A key for the layer [`write_tar`] makes of `entries` (with `mtime`), from the entry
/// list alone: paths, kinds, modes, owners, sizes, content ids and link targets, each
/// length-prefixed. Equal keys mean byte-identical tars, so a stored layer is reused
/// instead of being written and compressed again.
pub fn layer_key(entries: &[TarEntry], mtime: u64, salt: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(b"archfarm-layer v1");
    field(salt.as_bytes());
    field(&mtime.to_le_bytes());
    for e in entries {
        field(e.path.as_bytes());
        field(&[e.mode as u8, (e.mode >> 8) as u8]);
        field(&e.uid.to_le_bytes());
        field(&e.gid.to_le_bytes());
        match &e.kind {
            Kind::Dir => field(b"d"),
            Kind::File { size, id, .. } => {
                field(b"f");
                field(&size.to_le_bytes());
                field(id);
            }
            Kind::Symlink(t) => {
                field(b"s");
                field(t.as_bytes());
            }
            Kind::HardLink(t) => {
                field(b"h");
                field(t.as_bytes());
            }
        }
    }
    hex::encode(h.finalize())
}

/// The exact size of the tar [`write_tar`] writes for `entries`.
pub fn tar_size(entries: &[TarEntry]) -> u64 {
    entries.iter().map(TarEntry::tar_size).sum::<u64>() + 1024
}

/// Writes `entries` as a tar with every mtime `mtime`. A file whose size differs from
/// the one recorded is an error (it changed while the image was assembled).
pub fn write_tar(entries: &[TarEntry], mtime: u64, out: &mut dyn Write) -> io::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    for e in entries {
        if e.uid > MAX_ID || e.gid > MAX_ID {
            return Err(io::Error::other(format!(
                "/{}: owner {}:{} is beyond {MAX_ID}, the largest id Linux has",
                e.path, e.uid, e.gid
            )));
        }
        let name = e.name();
        if name.len() > 100 {
            long_record(out, b'L', &name, mtime)?;
        }
        if let Some(l) = e.link() {
            if l.len() > 100 {
                long_record(out, b'K', l, mtime)?;
            }
        }
        let (flag, size) = match &e.kind {
            Kind::Dir => (b'5', 0),
            Kind::File { size, .. } => (b'0', *size),
            Kind::Symlink(_) => (b'2', 0),
            Kind::HardLink(_) => (b'1', 0),
        };
        let h = header(name.as_bytes(), e.link().map(str::as_bytes), flag, size, e.mode, e.uid, e.gid, mtime);
        out.write_all(&h)?;
        if let Kind::File { data, size, .. } = &e.kind {
            copy_data(data, *size, &e.path, out, &mut buf)?;
            let rem = (pad(*size) - size) as usize;
            out.write_all(&[0u8; 512][..rem])?;
        }
    }
    out.write_all(&[0u8; 1024])
}

fn copy_data(data: &Data, size: u64, path: &str, out: &mut dyn Write, buf: &mut [u8]) -> io::Result<()> {
    let (file, offset) = match data {
        Data::File(p) => (p, None),
        Data::Range(p, off) => (p, Some(*off)),
    };
    let mut f = File::open(file).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
    if let Some(off) = offset {
        f.seek(SeekFrom::Start(off))?;
    } else if f.metadata()?.len() != size {
        return Err(io::Error::other(format!(
            "{} changed while the image was assembled (size {} instead of {size}); run again",
            file.display(),
            f.metadata()?.len()
        )));
    }
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other(format!("{} ended early while writing /{path}", file.display())));
        }
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// The header records of a member of an outer tar (a docker-archive): a folder or a
/// regular file of `size` bytes, mtime 0, root-owned; the data follows, then [`padding`].
pub fn member_header(name: &str, dir: bool, size: u64) -> Vec<u8> {
    let name = if dir { format!("{}/", name.trim_end_matches('/')) } else { name.to_string() };
    let mut out = Vec::new();
    if name.len() > 100 {
        long_record(&mut out, b'L', &name, 0).expect("writing to memory");
    }
    let (flag, mode) = if dir { (b'5', 0o755) } else { (b'0', 0o644) };
    out.extend_from_slice(&header(name.as_bytes(), None, flag, size, mode, 0, 0, 0));
    out
}

/// The zero bytes that pad `size` bytes of member data to a 512-byte block.
pub fn padding(size: u64) -> &'static [u8] {
    &[0u8; 512][..(pad(size) - size) as usize]
}

fn long_record(out: &mut dyn Write, flag: u8, name: &str, mtime: u64) -> io::Result<()> {
    let len = name.len() as u64 + 1;
    out.write_all(&header(b"././@LongLink", None, flag, len, 0o644, 0, 0, mtime))?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0u8])?;
    out.write_all(&[0u8; 512][..(pad(len) - len) as usize])
}

#[allow(clippy::too_many_arguments)]
fn header(
    name: &[u8],
    link: Option<&[u8]>,
    flag: u8,
    size: u64,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], mode as u64 & 0o7777);
    numeric(&mut h[108..116], uid);
    numeric(&mut h[116..124], gid);
    numeric(&mut h[124..136], size);
    numeric(&mut h[136..148], mtime);
    h[156] = flag;
    if let Some(l) = link {
        let n = l.len().min(100);
        h[157..157 + n].copy_from_slice(&l[..n]);
    }
    h[257..265].copy_from_slice(b"ustar  \0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Octal, zero-padded, NUL-terminated (the field must be large enough).
fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

/// Octal when it fits, else GNU base-256 (ids from 2^21, sizes from 8 GiB, times after
/// 2242): the first byte's high bit marks it and the other bytes hold the value, big
/// endian, as GNU tar writes and Go's archive/tar (dockerd), Python's tarfile and the tar
/// crate read it. An 8-byte field holds 56 bits this way: ids are at most [`MAX_ID`].
fn numeric(field: &mut [u8], v: u64) {
    if v < 1u64 << (3 * (field.len() - 1)) {
        octal(field, v);
    } else {
        let n = field.len();
        let bytes = v.to_be_bytes();
        let take = (n - 1).min(bytes.len());
        debug_assert!(bytes[..bytes.len() - take].iter().all(|&b| b == 0), "{v} does not fit a {n}-byte field");
        field.fill(0);
        field[n - take..].copy_from_slice(&bytes[bytes.len() - take..]);
        field[0] |= 0x80;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact_and_the_tar_crate_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, vec![b'x'; 1000]).unwrap();
        let long = format!("a/{}/file", "d".repeat(150));
        let entries = vec![
            TarEntry { path: "a".into(), kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0 },
            TarEntry {
                path: long.clone(),
                kind: Kind::File { data: Data::File(f.clone()), size: 1000, id: [0; 32] },
                mode: 0o644,
                uid: 1000,
                gid: 1000,
            },
            TarEntry { path: "a/hard".into(), kind: Kind::HardLink(long.clone()), mode: 0o644, uid: 0, gid: 0 },
            TarEntry { path: "a/sym".into(), kind: Kind::Symlink("x".repeat(120)), mode: 0o777, uid: 0, gid: 0 },
        ];
        let mut out = Vec::new();
        write_tar(&entries, 0, &mut out).unwrap();
        assert_eq!(out.len() as u64, tar_size(&entries));
        let mut again = Vec::new();
        write_tar(&entries, 0, &mut again).unwrap();
        assert_eq!(out, again);
        let mut ar = tar::Archive::new(&out[..]);
        let got: Vec<(String, tar::EntryType, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().entry_type(), e.header().uid().unwrap())
            })
            .collect();
        assert_eq!(got[1], (long, tar::EntryType::Regular, 1000));
        assert_eq!(got[2].1, tar::EntryType::Link);
        assert_eq!(got[3].1, tar::EntryType::Symlink);
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn ids_from_2_pow_21_are_gnu_base_256_and_read_back() {
        let entry = |uid, gid| TarEntry { path: "d".into(), kind: Kind::Dir, mode: 0o755, uid, gid };
        for (uid, gid) in [(1_234_567_890, 2_097_152), (MAX_ID, (1 << 21) - 1), (0, MAX_ID)] {
            let mut out = Vec::new();
            write_tar(&[entry(uid, gid)], 0, &mut out).unwrap();
            let field = |r: std::ops::Range<usize>, v: u64| {
                if v >= 1 << 21 {
                    assert_eq!(out[r.start], 0x80, "{v}: base-256 marker");
                } else {
                    assert!(out[r].iter().all(|b| b.is_ascii_digit() || *b == 0), "{v}: octal");
                }
            };
            field(108..116, uid);
            field(116..124, gid);
            let mut ar = tar::Archive::new(&out[..]);
            let e = ar.entries().unwrap().next().unwrap().unwrap();
            assert_eq!((e.header().uid().unwrap(), e.header().gid().unwrap()), (uid, gid));
        }
        let err = write_tar(&[entry(MAX_ID + 1, 0)], 0, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("/d") && err.to_string().contains("4294967294"), "{err}");
    }

    #[test]
    fn a_file_that_changed_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        let e = TarEntry {
            path: "f".into(),
            kind: Kind::File { data: Data::File(f), size: 5, id: [0; 32] },
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        assert!(write_tar(&[e], 0, &mut Vec::new()).unwrap_err().to_string().contains("changed"));
    }
}
