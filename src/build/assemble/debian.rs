//! Debian packages for any architecture, without touching the host's apt or dpkg state.
//!
//! Like mmdebstrap, archfarm runs the host's `apt-get` against a private state folder
//! (`<store>/assemble/apt/<debian arch>/`): its own `apt.conf` (given as `APT_CONFIG`)
//! points `Dir::State`, `Dir::Cache` and the configuration parts at that folder, sets
//! `APT::Architecture` and `APT::Architectures` to the target, reuses only the host's
//! sources and trusted keys (plus its `Acquire::` proxy and validity settings), and uses
//! an empty dpkg status file, so the dependency closure is complete and no
//! `dpkg --add-architecture` is needed. `apt-get install --print-uris` resolves the
//! closure to exact versions, URLs and SHA-256 sums; archfarm downloads each `.deb`
//! itself, verifies its SHA-256, and unpacks its data tar with `dpkg-deb --fsys-tarfile`
//! into a cache named by that SHA-256. No maintainer script runs (the packages are
//! unpacked, not configured), which is enough for a shell and tools.
//!
//! The resolution is part of the content key (a changed archive gives a new key) and is
//! recorded in the store under its digest, so the build uses exactly what was keyed.
//! Package lists are refreshed when older than an hour; until then the same request is
//! answered from a memo (planning an unchanged package image runs no apt at all).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::support::error::{Error, Result};
use crate::support::fs::{write_atomically, WriteOptions};

use crate::image::tar::{Data, Kind, TarEntry};

/// How long downloaded package indices are trusted before `apt-get update` runs again.
const LISTS_MAX_AGE: Duration = Duration::from_secs(3600);

/// One resolved package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deb {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub url: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolution {
    pub arch: String,
    pub requested: Vec<String>,
    pub debs: Vec<Deb>,
}

impl Resolution {
    /// `sha256:` of the canonical listing (name version arch sha256, sorted): the base
    /// digest that enters the content key.
    pub fn digest(&self) -> String {
        let mut lines: Vec<String> =
            self.debs.iter().map(|d| format!("{} {} {} {}\n", d.name, d.version, d.arch, d.sha256)).collect();
        lines.sort();
        format!("sha256:{}", hex::encode(Sha256::digest(lines.concat().as_bytes())))
    }
}

fn apt_dir(store_root: &Path, arch: &str) -> PathBuf {
    store_root.join("assemble/apt").join(arch)
}

/// Writes the private apt configuration for `arch` and returns its path.
fn apt_config(dir: &Path, arch: &str) -> Result<PathBuf> {
    for d in ["state/lists/partial", "cache/archives/partial", "etc/parts", "etc/preferences.d"] {
        fs::create_dir_all(dir.join(d)).map_err(|e| Error::io("creating", &dir.join(d), e))?;
    }
    let status = dir.join("status");
    if !status.exists() {
        fs::write(&status, b"").map_err(|e| Error::io("writing", &status, e))?;
    }
    // Carry over how the host reaches its mirrors (proxies, snapshot validity), nothing else.
    let host = Command::new("apt-config").arg("dump").output();
    let mut acquire = String::new();
    if let Ok(out) = host {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let keep = [
                "Acquire::http",
                "Acquire::https",
                "Acquire::Check-Valid-Until",
                "Acquire::Check-Date",
                "Acquire::Retries",
            ]
            .iter()
            .any(|p| line.starts_with(p));
            if keep && line.ends_with(';') {
                acquire.push_str(line);
                acquire.push('\n');
            }
        }
    }
    let d = dir.display();
    let text = format!(
        "Dir::Etc::Parts \"{d}/etc/parts\";\nDir::Etc::Main \"/dev/null\";\nDir::Etc::PreferencesParts \"{d}/etc/preferences.d\";\n\
         Dir::Etc::Preferences \"/dev/null\";\nDir::Etc::SourceList \"/etc/apt/sources.list\";\n\
         Dir::Etc::SourceParts \"/etc/apt/sources.list.d\";\nDir::Etc::Trusted \"/etc/apt/trusted.gpg\";\n\
         Dir::Etc::TrustedParts \"/etc/apt/trusted.gpg.d\";\nDir::State \"{d}/state\";\nDir::State::status \"{d}/status\";\n\
         Dir::Cache \"{d}/cache\";\nDir::Log \"{d}/log\";\nAPT::Architecture \"{arch}\";\nAPT::Architectures {{ \"{arch}\"; }};\n\
         APT::Sandbox::User \"root\";\nAcquire::ForceHash \"SHA256\";\nAcquire::Languages \"none\";\nAPT::Install-Recommends \"false\";\nDebug::NoLocking \"true\";\n{acquire}"
    );
    let path = dir.join("apt.conf");
    write_atomically(&path, text.as_bytes(), WriteOptions::default())?;
    Ok(path)
}

fn apt(conf: &Path, args: &[&str]) -> Result<std::process::Output> {
    Command::new("apt-get")
        .args(args)
        .env("APT_CONFIG", conf)
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| Error::failure(format!("cannot run apt-get (is this a Debian host?): {e}")))
}

/// Resolves `packages` for Debian architecture `arch` to exact files. `file` names the
/// recipe for errors (a missing package is a usage error).
pub fn resolve(store_root: &Path, arch: &str, packages: &[String], file: &str) -> Result<Resolution> {
    let dir = apt_dir(store_root, arch);
    fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
    let lock_path = dir.join("lock");
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io("opening", &lock_path, e))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::failure(format!("locking {}: {e}", lock_path.display())))?;
    let conf = apt_config(&dir, arch)?;
    let stamp = dir.join("updated");
    let fresh = fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < LISTS_MAX_AGE);
    if !fresh {
        let out = apt(&conf, &["update", "-q"])?;
        let err = String::from_utf8_lossy(&out.stderr);
        let failed = !out.status.success() || err.contains("W: Failed to fetch") || err.contains("E: ");
        if failed && !stamp.exists() {
            return Err(Error::failure(format!(
                "apt-get update for {arch} (private state in {}) failed: {}",
                dir.display(),
                err.trim()
            )));
        }
        if failed {
            // Lists from an earlier update still resolve (and the key says which versions).
            tracing::warn!("apt-get update for {arch} failed, using the lists of the last update: {}", err.trim());
        } else {
            fs::write(&stamp, b"").map_err(|e| Error::io("writing", &stamp, e))?;
        }
    }
    // The same request against the same package lists resolves the same way: remember
    // the answer until the next `apt-get update` (its stamp's mtime names the lists).
    let lists = fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let memo =
        dir.join("resolved").join(format!("{}.json", hex::encode(Sha256::digest(packages.join(" ").as_bytes()))));
    if let Some(digest) = fs::read(&memo)
        .ok()
        .and_then(|b| serde_json::from_slice::<(u128, String)>(&b).ok())
        .filter(|(l, _)| *l == lists && lists != 0)
        .map(|(_, d)| d)
    {
        if let Ok(r) = recorded(store_root, &digest) {
            return Ok(r);
        }
    }
    let mut args = vec!["install", "-q", "-y", "--print-uris", "--no-install-recommends"];
    args.extend(packages.iter().map(String::as_str));
    let out = apt(&conf, &args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let missing: Vec<&str> = stderr.lines().filter(|l| l.starts_with("E:")).collect();
        return Err(Error::usage(format!(
            "{file}: field `packages`: cannot resolve {} for {arch}: {}; check the names with `apt-cache policy`",
            packages.join(" "),
            if missing.is_empty() { stderr.trim().to_string() } else { missing.join("; ") }
        )));
    }
    let mut debs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(rest) = line.strip_prefix('\'') else { continue };
        let Some((url, rest)) = rest.split_once("' ") else { continue };
        let parts: Vec<&str> = rest.split_whitespace().collect();
        let [filename, size, sum] = parts[..] else { continue };
        let Some(sha) = sum.strip_prefix("SHA256:") else {
            return Err(Error::failure(format!(
                "apt-get gave no SHA256 for {filename}; refusing an unverifiable package"
            )));
        };
        let stem = filename.strip_suffix(".deb").unwrap_or(filename).replace("%3a", ":");
        let mut it = stem.splitn(3, '_');
        let (name, version, darch) = (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or(""));
        debs.push(Deb {
            name: name.to_string(),
            version: version.to_string(),
            arch: darch.to_string(),
            url: url.to_string(),
            size: size.parse().unwrap_or(0),
            sha256: sha.to_string(),
        });
    }
    debs.sort_by(|a, b| a.name.cmp(&b.name));
    let r = Resolution { arch: arch.to_string(), requested: packages.to_vec(), debs };
    let path = resolution_path(store_root, &r.digest());
    let tmp = store_root.join("tmp");
    write_atomically(
        &path,
        &serde_json::to_vec_pretty(&r).expect("resolutions serialize"),
        WriteOptions::temp_in(&tmp),
    )?;
    write_atomically(&memo, &serde_json::to_vec(&(lists, r.digest())).expect("json"), WriteOptions::temp_in(&tmp))?;
    Ok(r)
}

fn resolution_path(store_root: &Path, digest: &str) -> PathBuf {
    store_root.join("assemble/resolutions").join(format!("{}.json", digest.trim_start_matches("sha256:")))
}

/// The resolution recorded under `digest` by [`resolve`].
pub fn recorded(store_root: &Path, digest: &str) -> Result<Resolution> {
    let path = resolution_path(store_root, digest);
    let text = fs::read(&path).map_err(|e| Error::io("reading package resolution", &path, e))?;
    serde_json::from_slice(&text).map_err(|e| Error::failure(format!("{}: corrupt ({e}); delete it", path.display())))
}

/// Downloads (or finds in the cache) each package, verifies it, unpacks its data tar,
/// and returns each package's entries (one layer group per package).
pub async fn fetch(store_root: &Path, r: &Resolution) -> Result<Vec<(Deb, Vec<TarEntry>)>> {
    let cache = store_root.join("assemble/debs");
    fs::create_dir_all(&cache).map_err(|e| Error::io("creating", &cache, e))?;
    let client = reqwest::Client::builder()
        .user_agent(concat!("archfarm/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::failure(format!("cannot create HTTP client: {e}")))?;
    let mut out = Vec::new();
    for d in &r.debs {
        let tar = cache.join(format!("{}.tar", d.sha256));
        if !tar.is_file() {
            let bytes = download(&client, d).await?;
            // A private file, not a shared `<sha>.deb`: two assemblies fetching the same
            // package at once would otherwise unpack a file the other just removed.
            let mut deb = tempfile::NamedTempFile::new_in(store_root.join("tmp"))
                .map_err(|e| Error::io("creating temporary file in", store_root, e))?;
            deb.write_all(&bytes).map_err(|e| Error::io("writing", deb.path(), e))?;
            unpack(store_root, deb.path(), &tar)?;
        }
        let entries = data_entries(&tar).map_err(|e| e.context(format!("package {} {}", d.name, d.version)))?;
        out.push((d.clone(), entries));
    }
    Ok(out)
}

async fn download(client: &reqwest::Client, d: &Deb) -> Result<Vec<u8>> {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        match client.get(&d.url).send().await.and_then(|r| r.error_for_status()) {
            Ok(resp) => match resp.bytes().await {
                Ok(b) => {
                    let got = hex::encode(Sha256::digest(&b));
                    if got != d.sha256 {
                        return Err(Error::failure(format!(
                            "package {} from {}: SHA-256 {got} does not match the archive's {}; refusing it",
                            d.name, d.url, d.sha256
                        )));
                    }
                    return Ok(b.to_vec());
                }
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
    }
    Err(Error::failure(format!("downloading {}: {last}", d.url)))
}

/// `dpkg-deb --fsys-tarfile` (read-only: it touches no dpkg state) into `tar`, atomically.
fn unpack(store_root: &Path, deb: &Path, tar: &Path) -> Result<()> {
    let out = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .output()
        .map_err(|e| Error::failure(format!("cannot run dpkg-deb: {e}")))?;
    if !out.status.success() {
        return Err(Error::failure(format!(
            "dpkg-deb --fsys-tarfile {}: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    write_atomically(tar, &out.stdout, WriteOptions::temp_in(&store_root.join("tmp")))
}

/// The entries of a package's data tar, with file data as ranges of that tar.
fn data_entries(tar: &Path) -> Result<Vec<TarEntry>> {
    let f = fs::File::open(tar).map_err(|e| Error::io("opening", tar, e))?;
    let mut ar = tar::Archive::new(f);
    let bad = |e: std::io::Error| Error::failure(format!("{}: {e}", tar.display()));
    let mut out = Vec::new();
    for e in ar.entries().map_err(bad)? {
        let e = e.map_err(bad)?;
        let raw = e.path_bytes().into_owned();
        let Some(path) = clean(&raw) else {
            return Err(Error::failure(format!("{}: unsafe path '{}'", tar.display(), String::from_utf8_lossy(&raw))));
        };
        if path.is_empty() {
            continue;
        }
        let h = e.header();
        let mode = h.mode().map_err(bad)? & 0o7777;
        let (uid, gid) = (h.uid().map_err(bad)?, h.gid().map_err(bad)?);
        let link = || e.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned()).unwrap_or_default();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let offset = e.raw_file_position();
                let name = tar.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let id = Sha256::digest(format!("{name} {offset}").as_bytes()).into();
                Kind::File { data: Data::Range(tar.to_path_buf(), offset), size: e.size(), id }
            }
            tar::EntryType::Symlink => Kind::Symlink(link()),
            tar::EntryType::Link => match clean(link().as_bytes()) {
                Some(t) => Kind::HardLink(t),
                None => return Err(Error::failure(format!("{}: hard link '{path}' points outside", tar.display()))),
            },
            _ => continue,
        };
        out.push(TarEntry { path, kind, mode, uid, gid });
    }
    Ok(out)
}

fn clean(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    let mut parts = Vec::new();
    for p in s.trim_start_matches('/').split('/') {
        match p {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resolution_digest_ignores_order_and_urls() {
        let d = |n: &str, url: &str| Deb {
            name: n.into(),
            version: "1".into(),
            arch: "arm64".into(),
            url: url.into(),
            size: 1,
            sha256: "ab".into(),
        };
        let a = Resolution { arch: "arm64".into(), requested: vec![], debs: vec![d("a", "x"), d("b", "y")] };
        let b = Resolution { arch: "arm64".into(), requested: vec![], debs: vec![d("b", "z"), d("a", "w")] };
        assert_eq!(a.digest(), b.digest());
    }
}
