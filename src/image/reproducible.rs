//! Makes an engine's image independent of when and on which engine it was built, so
//! that the same content key gives the same manifest digest on every builder.
//!
//! The classic builder stamps every build with the wall clock and the build host: the
//! config's `created`, each history entry's `created`, the RUN container's ID
//! (`container`, `container_config.Hostname`), `docker_version`, the ID of the previous
//! step's intermediate image (`config.Image`), and in the layers the mtime of every file
//! a step wrote. Two builds of the same recipe on two engines therefore never agree,
//! which makes a rebuilt platform (a builder that died, a CI runner that retried) look
//! like a new image. BuildKit stamps build times as well. Its answer is
//! `SOURCE_DATE_EPOCH` (BuildKit v0.11) with `rewrite-timestamp` (v0.13), but the BuildKit
//! built into Debian's dockerd 20.10 is v0.8, which has neither. So archfarm rewrites the
//! image, whichever builder made it, as it comes out of the engine (`docker save` into
//! the store; tests/buildkit.rs checks that BuildKit builds on two engines agree):
//!
//! - every layer entry gets mtime 0, no owner names, no access or change times; its
//!   path, type, mode, owner IDs, link target, device numbers, extended attributes
//!   (`SCHILY.xattr.*`, so file capabilities survive) and data are kept, in the
//!   engine's order (Docker writes layers in lexical walk order on every engine);
//! - the config's times become the epoch and the build-host fields are dropped; its
//!   `rootfs.diff_ids` are those of the rewritten layers, and its keys are written
//!   sorted.
//!
//! With `SOURCE_DATE_EPOCH` (a [`Stamp`] with an `epoch`), the config's times become
//! that time instead of the epoch, and entry mtimes are clamped to it (a later one
//! becomes it, an earlier one is kept), as BuildKit's `rewrite-timestamp` does: what
//! a step wrote during the build (after that time) gets that time, what came from a
//! base or the context (archfarm's context tar has mtime 0) keeps its own.
//!
//! Both are idempotent: an image loaded from the store and saved again comes out with
//! the same bytes. What a RUN step itself writes into files (a timestamp, a random
//! number) is left as it is: such a recipe is not reproducible on any builder.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

use crate::support::time::rfc3339;

/// What a reproducible image is stamped with besides its content, chosen by the run
/// (and in the image's content key, since both change its bytes): the time its build
/// times become, and the annotations of its manifest. The default stamps the epoch
/// and no annotations, exactly as before either existed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    /// `SOURCE_DATE_EPOCH`: build times become it and file times are clamped to it;
    /// `None`: build times are the epoch and every file time is 0.
    pub epoch: Option<u64>,
    /// The manifest's `annotations` (none: the field is left out).
    pub annotations: BTreeMap<String, String>,
}

impl Stamp {
    /// The mtime an entry written at `mtime` gets.
    pub fn mtime(&self, mtime: u64) -> u64 {
        self.epoch.map_or(0, |epoch| mtime.min(epoch))
    }

    /// The time build times (config and history `created`) become, as RFC 3339.
    pub fn created(&self) -> String {
        rfc3339(self.epoch.unwrap_or(0))
    }
}

/// Config fields that describe the build host or the build container, not the image.
const HOST_FIELDS: [&str; 3] = ["container", "container_config", "docker_version"];

/// Copies the layer tar `input` to `output` with its entries rewritten as the module
/// documentation says (mtimes as `stamp` says). Reads `input` up to the end-of-archive
/// marker.
pub fn normalize_layer(input: impl Read, output: impl Write, stamp: &Stamp) -> io::Result<()> {
    let mut archive = tar::Archive::new(input);
    let mut out = tar::Builder::new(output);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        // A PAX mtime (sub-second, or too large for the header) wins over the header's.
        let mut pax_mtime = None;
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                if let Ok(key) = ext.key() {
                    if key.starts_with("SCHILY.xattr.") {
                        xattrs.push((key.to_string(), ext.value_bytes().to_vec()));
                    } else if key == "mtime" {
                        let whole = ext.value().ok().and_then(|v| v.split('.').next()?.parse::<i64>().ok());
                        pax_mtime = whole.map(|t| t.max(0) as u64);
                    }
                }
            }
        }
        xattrs.sort();
        let path = entry.path_bytes().into_owned();
        let path = std::ffi::OsStr::from_bytes(&path);
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let old = entry.header();
        let mut h = tar::Header::new_gnu();
        h.set_mode(old.mode()?);
        h.set_uid(old.uid()?);
        h.set_gid(old.gid()?);
        h.set_mtime(stamp.mtime(match pax_mtime {
            Some(t) => t,
            None => old.mtime()?,
        }));
        h.set_size(0);
        if !xattrs.is_empty() {
            out.append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(old.size()?);
                out.append_data(&mut h, path, &mut entry)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                h.set_entry_type(kind);
                let target = link.ok_or_else(|| bad(path, "a link without a target"))?;
                out.append_link(&mut h, path, std::ffi::OsStr::from_bytes(&target))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                h.set_entry_type(kind);
                h.set_device_major(old.device_major()?.unwrap_or(0))?;
                h.set_device_minor(old.device_minor()?.unwrap_or(0))?;
                out.append_data(&mut h, path, io::empty())?;
            }
            tar::EntryType::Directory | tar::EntryType::Fifo => {
                h.set_entry_type(kind);
                out.append_data(&mut h, path, io::empty())?;
            }
            other => return Err(bad(path, &format!("an unsupported entry type {other:?}"))),
        }
    }
    out.into_inner()?.flush()
}

fn bad(path: &std::ffi::OsStr, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{} is {what}", path.to_string_lossy()))
}

/// The image config `config` rewritten as the module documentation says (times as
/// `stamp` says), with `diff_ids` (those of the rewritten layers) as its
/// `rootfs.diff_ids`.
pub fn normalize_config(config: &[u8], diff_ids: &[String], stamp: &Stamp) -> Result<Vec<u8>, String> {
    let created = stamp.created();
    let mut v: serde_json::Value = serde_json::from_slice(config).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object_mut().ok_or("not a JSON object")?;
    for k in HOST_FIELDS {
        obj.remove(k);
    }
    obj.insert("created".into(), created.clone().into());
    if let Some(c) = obj.get_mut("config").and_then(|c| c.as_object_mut()) {
        c.remove("Image");
        c.insert("Hostname".into(), "".into());
    }
    if let Some(history) = obj.get_mut("history").and_then(|h| h.as_array_mut()) {
        for step in history.iter_mut().filter_map(|s| s.as_object_mut()) {
            if step.contains_key("created") {
                step.insert("created".into(), created.clone().into());
            }
        }
    }
    obj.insert("rootfs".into(), serde_json::json!({"type": "layers", "diff_ids": diff_ids}));
    Ok(serde_json::to_vec(&v).expect("JSON values serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer as an engine might write it: PAX times and names, an xattr, a long
    /// path, a hard link, a device, at build time `mtime`.
    fn engine_layer(mtime: u64) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |kind: tar::EntryType, path: &str, data: &[u8], link: Option<&str>, pax: &[(&str, &[u8])]| {
            b.append_pax_extensions(pax.iter().copied()).unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o4755 });
            h.set_uid(1000);
            h.set_gid(2000);
            h.set_username("builder").unwrap();
            h.set_mtime(mtime);
            h.set_size(data.len() as u64);
            if kind == tar::EntryType::Char {
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
            }
            match link {
                Some(t) => b.append_link(&mut h, path, t).unwrap(),
                None => b.append_data(&mut h, path, data).unwrap(),
            }
        };
        let atime = mtime.to_string();
        add(tar::EntryType::Directory, "bin/", b"", None, &[("atime", atime.as_bytes())]);
        add(
            tar::EntryType::Regular,
            "bin/ping",
            b"\x7fELF",
            None,
            &[("SCHILY.xattr.security.capability", b"\x01\x02")],
        );
        add(tar::EntryType::Link, "bin/ping6", b"", Some("bin/ping"), &[]);
        add(tar::EntryType::Symlink, &format!("usr/{}/sh", "d".repeat(150)), b"", Some("/bin/busybox"), &[]);
        add(tar::EntryType::Char, "dev/null", b"", None, &[("ctime", atime.as_bytes())]);
        b.into_inner().unwrap()
    }

    fn normalized(layer: &[u8]) -> Vec<u8> {
        normalized_with(layer, &Stamp::default())
    }

    fn normalized_with(layer: &[u8], stamp: &Stamp) -> Vec<u8> {
        let mut out = Vec::new();
        normalize_layer(layer, &mut out, stamp).unwrap();
        out
    }

    fn mtimes(layer: &[u8]) -> Vec<u64> {
        tar::Archive::new(layer).entries().unwrap().map(|e| e.unwrap().header().mtime().unwrap()).collect()
    }

    fn at(epoch: u64) -> Stamp {
        Stamp { epoch: Some(epoch), ..Stamp::default() }
    }

    #[test]
    fn with_an_epoch_later_mtimes_are_clamped_to_it_and_earlier_ones_kept() {
        let stamp = at(1_750_000_000);
        // Two builds after the epoch agree, and every time is the epoch.
        let (a, b) = (
            normalized_with(&engine_layer(1_760_000_000), &stamp),
            normalized_with(&engine_layer(1_800_000_123), &stamp),
        );
        assert_eq!(a, b);
        assert!(mtimes(&a).iter().all(|&t| t == 1_750_000_000), "{:?}", mtimes(&a));
        assert_eq!(normalized_with(&a, &stamp), a, "idempotent");
        // What is older than the epoch (a base's files) keeps its time.
        let old = normalized_with(&engine_layer(1_600_000_000), &stamp);
        assert!(mtimes(&old).iter().all(|&t| t == 1_600_000_000), "{:?}", mtimes(&old));
        assert_ne!(a, normalized(&engine_layer(1_760_000_000)), "the epoch changes the layer");

        // A PAX mtime (sub-second) is read, not the header's.
        let mut tb = tar::Builder::new(Vec::new());
        tb.append_pax_extensions([("mtime", &b"1600000000.75"[..])]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_800_000_000);
        h.set_size(1);
        tb.append_data(&mut h, "f", &b"x"[..]).unwrap();
        let pax = tb.into_inner().unwrap();
        assert_eq!(mtimes(&normalized_with(&pax, &stamp)), [1_600_000_000]);
        assert_eq!(mtimes(&normalized(&pax)), [0], "no epoch: every time is 0");
    }

    #[test]
    fn layers_from_different_build_times_become_identical_and_keep_what_matters() {
        let (a, b) = (normalized(&engine_layer(1_700_000_000)), normalized(&engine_layer(1_800_000_123)));
        assert_ne!(engine_layer(1_700_000_000), engine_layer(1_800_000_123));
        assert_eq!(a, b);
        assert_eq!(normalized(&a), a, "normalizing is idempotent");

        let mut ar = tar::Archive::new(&a[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            assert_eq!(h.mtime().unwrap(), 0);
            assert_eq!(h.username().unwrap(), Some(""));
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (1000, 2000));
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let pax: Vec<String> = e
                .pax_extensions()
                .unwrap()
                .map(|x| x.map(|x| x.unwrap().key().unwrap().to_string()).collect())
                .unwrap_or_default();
            let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let device = if h.entry_type() == tar::EntryType::Char { h.device_major().unwrap() } else { None };
            seen.push((path, h.entry_type(), h.mode().unwrap(), link, pax, data, device));
        }
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[1].0, "bin/ping");
        assert_eq!(seen[1].2, 0o4755, "setuid kept");
        assert_eq!(seen[1].4, ["SCHILY.xattr.security.capability"], "xattrs kept, times dropped");
        assert_eq!(seen[1].5, b"\x7fELF");
        assert_eq!((seen[2].1, seen[2].3.as_deref()), (tar::EntryType::Link, Some("bin/ping")));
        assert!(seen[3].0.ends_with("/sh") && seen[3].0.len() > 150, "long path kept: {}", seen[3].0);
        assert_eq!(seen[3].3.as_deref(), Some("/bin/busybox"));
        assert_eq!((seen[4].1, seen[4].6), (tar::EntryType::Char, Some(1)));
        assert!(seen[0].4.is_empty() && seen[4].4.is_empty(), "atime and ctime dropped");
    }

    #[test]
    fn a_path_that_climbs_out_is_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(0);
        h.as_gnu_mut().unwrap().name[..8].copy_from_slice(b"../evil\0");
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
        let layer = b.into_inner().unwrap();
        assert!(normalize_layer(&layer[..], Vec::new(), &Stamp::default()).is_err());
    }

    #[test]
    fn configs_lose_build_times_and_host_details_and_get_the_new_diff_ids() {
        let engine = |when: &str, container: &str| {
            serde_json::json!({
                "architecture": "arm64", "os": "linux", "created": when, "container": container,
                "docker_version": "20.10.24", "container_config": {"Hostname": container},
                "config": {"Hostname": "", "Image": format!("sha256:{container}"), "Cmd": ["cat", "/arch"],
                           "Labels": {"dev.archfarm.key": "k"}},
                "history": [{"created": when, "created_by": "RUN x"}, {"created_by": "no time"}],
                "rootfs": {"type": "layers", "diff_ids": ["sha256:old"]}
            })
            .to_string()
        };
        let ids = vec!["sha256:new".to_string()];
        let none = Stamp::default();
        let a = normalize_config(engine("2026-11-24T09:05:54Z", "aaaa").as_bytes(), &ids, &none).unwrap();
        let b = normalize_config(engine("2027-01-01T00:00:00Z", "bbbb").as_bytes(), &ids, &none).unwrap();
        assert_eq!(a, b);
        assert_eq!(normalize_config(&a, &ids, &none).unwrap(), a, "idempotent");
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["created"], "1970-01-01T00:00:00Z");
        assert_eq!(v["history"][0]["created"], "1970-01-01T00:00:00Z");
        assert!(v["history"][1].get("created").is_none());
        assert!(v.get("container").is_none() && v.get("container_config").is_none());
        assert!(v["config"].get("Image").is_none());
        assert_eq!(v["config"]["Labels"]["dev.archfarm.key"], "k");
        assert_eq!(v["architecture"], "arm64");
        assert_eq!(v["rootfs"]["diff_ids"], serde_json::json!(["sha256:new"]));
        assert!(normalize_config(b"[1]", &ids, &none).is_err());

        // SOURCE_DATE_EPOCH: build times become it, and stay it.
        let stamp = at(1_700_000_000);
        let c = normalize_config(engine("2026-11-24T09:05:54Z", "aaaa").as_bytes(), &ids, &stamp).unwrap();
        assert_eq!(normalize_config(&c, &ids, &stamp).unwrap(), c, "idempotent");
        let v: serde_json::Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(
            (&v["created"], &v["history"][0]["created"]),
            (&"2023-11-14T22:13:20Z".into(), &"2023-11-14T22:13:20Z".into())
        );
        assert!(v["history"][1].get("created").is_none(), "a step without a time gets none");
    }
}
