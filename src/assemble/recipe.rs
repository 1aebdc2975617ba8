//! `image.yaml`: the recipe of an assembled image (every field: docs/image-yaml.md).
//!
//! Parsing is strict: an unknown field anywhere is an error naming the file and the
//! field, so a typo is never silently ignored. Paths are checked lexically here (no
//! absolute `src`, no `..` out of the image folder); what they point at is checked
//! against the scanned folder when the image is assembled.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::platform::{ArchTable, Platform};

/// Docker fails with "max depth exceeded" near 125 layers; more is refused up front.
pub const MAX_LAYERS_LIMIT: usize = 125;
pub const DEFAULT_MAX_LAYERS: usize = 100;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Recipe {
    /// Any valid reference (`registry.example.com:5000/my/image[:tag]`); names outputs.
    #[serde(default)]
    pub name: Option<String>,
    /// `scratch` (default), a farm image, a registry reference, an OCI layout folder
    /// or a `docker save` tarball (see [`From`]).
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub contents: Vec<Content>,
    /// Per-architecture contents, by architecture name or alias (`amd64`, `aarch64`).
    #[serde(default)]
    pub platform_contents: BTreeMap<String, Vec<Content>>,
    /// Debian packages for the target architecture (dependencies come along).
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub config: ImageConfig,
    #[serde(default)]
    pub max_layers: Option<usize>,
    /// `epoch` (default), `now`, or seconds since the epoch.
    #[serde(default)]
    pub created: Option<Created>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Created {
    Seconds(u64),
    Word(String),
}

/// One file or folder of the image folder mapped into the image.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// Relative to the image folder; a folder is copied recursively.
    pub src: String,
    /// Absolute path in the image; a folder `src` lands *as* `dest` (`dest: /` merges).
    pub dest: String,
    /// Numeric owner of every entry (default 0).
    #[serde(default, alias = "owner")]
    pub uid: Option<u64>,
    /// Numeric group of every entry (default 0).
    #[serde(default, alias = "group")]
    pub gid: Option<u64>,
    /// Octal mode string for regular files (`"0755"`); default 0644, or 0755 if executable.
    #[serde(default)]
    pub mode: Option<String>,
}

/// The image config fields a recipe may set; unset ones are inherited from the base.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageConfig {
    pub env: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    /// `80/tcp`, `53/udp` or `8080` (tcp).
    pub exposed_ports: Option<Vec<String>>,
    pub volumes: Option<Vec<String>>,
    pub stop_signal: Option<String>,
}

/// Where the base image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    Scratch,
    /// Another image of the catalog (same platform).
    Farm(String),
    /// A registry reference (`host[:port]/path[:tag][@digest]`).
    Registry(String),
    /// An OCI image layout folder inside the image folder (relative path).
    OciLayout(String),
    /// A `docker save` tarball inside the image folder (relative path).
    DockerArchive(String),
}

/// A content entry resolved for one platform, with its mode parsed.
#[derive(Debug, Clone)]
pub struct ContentItem {
    pub src: String,
    pub dest: String,
    pub uid: u64,
    pub gid: u64,
    pub mode: Option<u32>,
}

/// How `created` and mtimes are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreatedAt {
    /// A fixed time (seconds since the epoch): config `created` and every mtime.
    Fixed(u64),
    /// The wall clock at assembly, in the config only (mtimes stay at the epoch so layers
    /// are still shared between builds).
    Now,
}

impl Recipe {
    /// Parses `text` (the contents of `path`), refusing unknown fields and bad values.
    pub fn parse(path: &Path, text: &str, arches: &ArchTable) -> Result<Recipe> {
        let recipe: Recipe = serde_yaml_ng::from_str(text).map_err(|e| {
            Error::usage(format!("{}: {e}; see docs/image-yaml.md for the recipe fields", path.display()))
        })?;
        recipe.validate(path, arches)?;
        Ok(recipe)
    }

    fn validate(&self, path: &Path, arches: &ArchTable) -> Result<()> {
        let bad = |field: &str, what: String| Error::usage(format!("{}: field `{field}`: {what}", path.display()));
        if let Some(name) = &self.name {
            check_reference(name).map_err(|e| bad("name", e))?;
        }
        let max = self.max_layers();
        if max == 0 || max > MAX_LAYERS_LIMIT {
            return Err(bad(
                "maxLayers",
                format!(
                    "{max} is out of range: use 1 to {MAX_LAYERS_LIMIT} (Docker fails with \"max depth exceeded\" near 125 \
                     layers)"
                ),
            ));
        }
        self.created_at().map_err(|e| bad("created", e))?;
        for (i, c) in self.contents.iter().enumerate() {
            c.item().map_err(|e| bad(&format!("contents[{i}]"), e))?;
        }
        for (arch, list) in &self.platform_contents {
            if arches.find(arch).is_none() {
                return Err(bad(
                    &format!("platformContents.{arch}"),
                    "unknown architecture; use a name or alias from arch/ (amd64, arm64, x86_64, aarch64, arm/v7...)"
                        .into(),
                ));
            }
            for (i, c) in list.iter().enumerate() {
                c.item().map_err(|e| bad(&format!("platformContents.{arch}[{i}]"), e))?;
            }
        }
        for p in &self.packages {
            let ok = !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.=".contains(&b))
                && p.as_bytes()[0].is_ascii_alphanumeric();
            if !ok {
                return Err(bad("packages", format!("'{p}' is not a Debian package name (optionally pkg=version)")));
            }
        }
        if let Some(ports) = &self.config.exposed_ports {
            for p in ports {
                port_key(p).map_err(|e| bad("config.exposedPorts", e))?;
            }
        }
        if let Some(env) = &self.config.env {
            for e in env {
                if !e.contains('=') || e.starts_with('=') {
                    return Err(bad("config.env", format!("'{e}' is not NAME=value")));
                }
            }
        }
        match self.check_from_syntax() {
            Ok(_) => Ok(()),
            Err(e) => Err(bad("from", e)),
        }
    }

    pub fn max_layers(&self) -> usize {
        self.max_layers.unwrap_or(DEFAULT_MAX_LAYERS)
    }

    pub fn created_at(&self) -> std::result::Result<CreatedAt, String> {
        match &self.created {
            None => Ok(CreatedAt::Fixed(0)),
            Some(Created::Seconds(s)) => Ok(CreatedAt::Fixed(*s)),
            Some(Created::Word(w)) if w == "epoch" => Ok(CreatedAt::Fixed(0)),
            Some(Created::Word(w)) if w == "now" => Ok(CreatedAt::Now),
            Some(Created::Word(w)) => Err(format!("'{w}': use `epoch`, `now` or seconds since the epoch")),
        }
    }

    /// The contents for `platform`: `contents`, then `platformContents` of its arch.
    /// Each item with the field it came from (`contents[0]`, `platformContents.arm64[1]`).
    pub fn items_for(&self, platform: &Platform, arches: &ArchTable) -> Vec<(String, ContentItem)> {
        let mut out: Vec<(String, ContentItem)> = self
            .contents
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((format!("contents[{i}]"), c.item().ok()?)))
            .collect();
        for (arch, list) in &self.platform_contents {
            if arches.find(arch).map(|a| &a.oci) == Some(platform) {
                out.extend(
                    list.iter()
                        .enumerate()
                        .filter_map(|(i, c)| Some((format!("platformContents.{arch}[{i}]"), c.item().ok()?))),
                );
            }
        }
        out
    }

    /// `from` without looking at the catalog or the folder (only its syntax).
    fn check_from_syntax(&self) -> std::result::Result<(), String> {
        match self.from.as_deref() {
            None | Some("scratch") => Ok(()),
            Some(f) => {
                if let Some(p) = f.strip_prefix("oci:").or_else(|| f.strip_prefix("docker-archive:")) {
                    check_relative(p)
                } else if let Some(r) = f.strip_prefix("docker://") {
                    check_reference(r)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Decides what `from` names: explicit prefixes (`oci:DIR`, `docker-archive:FILE`,
    /// `docker://REF`, `farm:NAME`) first; else a catalog image (by name or as
    /// `<local prefix>/<name>`), else a path that exists in the image folder (a folder is
    /// an OCI layout, a file a tarball), else a registry reference.
    pub fn from_kind(
        &self,
        file: &Path,
        image_dir: &Path,
        is_farm_image: &dyn Fn(&str) -> Option<String>,
    ) -> Result<From> {
        let bad = |what: String| Error::usage(format!("{}: field `from`: {what}", file.display()));
        let Some(f) = self.from.as_deref() else { return Ok(From::Scratch) };
        if f == "scratch" {
            return Ok(From::Scratch);
        }
        if let Some(p) = f.strip_prefix("oci:") {
            check_relative(p).map_err(bad)?;
            return Ok(From::OciLayout(p.to_string()));
        }
        if let Some(p) = f.strip_prefix("docker-archive:") {
            check_relative(p).map_err(bad)?;
            return Ok(From::DockerArchive(p.to_string()));
        }
        if let Some(r) = f.strip_prefix("docker://") {
            return Ok(From::Registry(r.to_string()));
        }
        if let Some(n) = f.strip_prefix("farm:") {
            return is_farm_image(n).map(From::Farm).ok_or_else(|| {
                bad(format!("'{n}' is not an image of the catalog; check the name with `archfarm list`"))
            });
        }
        if let Some(name) = is_farm_image(f) {
            return Ok(From::Farm(name));
        }
        if check_relative(f).is_ok() {
            let p = image_dir.join(f);
            if let Ok(meta) = std::fs::symlink_metadata(&p) {
                return Ok(if meta.is_dir() {
                    From::OciLayout(f.to_string())
                } else {
                    From::DockerArchive(f.to_string())
                });
            }
        }
        check_reference(f).map_err(|e| {
            bad(format!(
                "'{f}' is not scratch, a catalog image, a file or folder of the image folder, nor a valid reference ({e})"
            ))
        })?;
        Ok(From::Registry(f.to_string()))
    }
}

impl Content {
    fn item(&self) -> std::result::Result<ContentItem, String> {
        check_relative(&self.src).map_err(|e| format!("src: {e}"))?;
        if !self.dest.starts_with('/') {
            return Err(format!("dest '{}' must be an absolute path in the image", self.dest));
        }
        if self.dest.split('/').any(|c| c == "..") || self.dest.contains('\0') {
            return Err(format!("dest '{}' must not contain '..'", self.dest));
        }
        let mode = match &self.mode {
            None => None,
            Some(m) => {
                let digits = m.strip_prefix("0o").unwrap_or(m);
                match u32::from_str_radix(digits, 8) {
                    Ok(v) if v <= 0o7777 && !digits.is_empty() => Some(v),
                    _ => return Err(format!("mode '{m}' is not an octal mode such as \"0755\"")),
                }
            }
        };
        Ok(ContentItem {
            src: self.src.clone(),
            dest: self.dest.clone(),
            uid: self.uid.unwrap_or(0),
            gid: self.gid.unwrap_or(0),
            mode,
        })
    }
}

/// A relative path that stays inside the image folder (lexically).
pub fn check_relative(p: &str) -> std::result::Result<(), String> {
    if p.is_empty() {
        return Err("an empty path".into());
    }
    if p.starts_with('/') {
        return Err(format!("'{p}' is absolute; paths are relative to the image folder"));
    }
    let mut depth: i64 = 0;
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("'{p}' escapes the image folder; put the file inside it"));
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// The `ExposedPorts` key of `80`, `80/tcp` or `53/udp`.
pub fn port_key(p: &str) -> std::result::Result<String, String> {
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    match (num.parse::<u16>(), proto) {
        (Ok(n), "tcp" | "udp" | "sctp") if n > 0 => Ok(format!("{n}/{proto}")),
        _ => Err(format!("'{p}' is not a port (80, 80/tcp, 53/udp)")),
    }
}

/// Checks a reference `[host[:port]/]path[:tag][@sha256:hex]` as Docker parses it.
pub fn check_reference(r: &str) -> std::result::Result<(), String> {
    let (rest, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    if let Some(d) = digest {
        crate::store::digest_hex(d).map_err(|_| format!("'{r}': the digest must be sha256:<64 hex>"))?;
    }
    let (first, remainder) = rest.split_once('/').unwrap_or(("", rest));
    let has_host = !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let path_and_tag = if has_host { remainder } else { rest };
    if has_host {
        let (host, port) = first.split_once(':').unwrap_or((first, ""));
        let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
        let port_ok = port.is_empty() && !first.ends_with(':') || port.parse::<u16>().is_ok();
        if !host_ok || !port_ok {
            return Err(format!("'{r}': '{first}' is not a valid registry host[:port]"));
        }
    }
    // The tag is after the last ':' of the last path component.
    let (path, tag) = match path_and_tag.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, Some(t)),
        _ => (path_and_tag, None),
    };
    if path.is_empty() || !path.split('/').all(valid_component) {
        return Err(format!("'{r}': the repository path must be lowercase components (a-z 0-9 . _ -) separated by /"));
    }
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && (t.as_bytes()[0].is_ascii_alphanumeric() || t.starts_with('_'))
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return Err(format!("'{r}': tag '{t}' is not valid (letters, digits, _ . -, up to 128)"));
        }
    }
    Ok(())
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
        && b[b.len() - 1].is_ascii_lowercase() | b[b.len() - 1].is_ascii_digit()
        && b.iter().all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || b"._-".contains(&x))
}

/// Splits a valid reference into (repository with host, tag); the tag is None when absent.
pub fn split_tag(r: &str) -> (&str, Option<&str>) {
    let r = r.split_once('@').map(|(n, _)| n).unwrap_or(r);
    match r.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (r, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Recipe> {
        Recipe::parse(Path::new("images/x/image.yaml"), text, &ArchTable::builtin())
    }

    #[test]
    fn the_issue_example_parses() {
        let r = parse(
            r#"
from: scratch
contents:
  - {src: rootfs, dest: /}
platformContents:
  amd64: [{src: busybox.amd64, dest: /bin/busybox, mode: "0755"}]
  arm64: [{src: busybox.arm64, dest: /bin/busybox, mode: "0755"}]
config:
  env: ["PATH=/bin", "GREETING=one", "GREETING=two"]
  entrypoint: ["/bin/busybox"]
  cmd: ["sh", "-c", "echo $GREETING"]
maxLayers: 3
"#,
        )
        .unwrap();
        assert_eq!(r.max_layers(), 3);
        let t = ArchTable::builtin();
        let arm = t.parse_platform("aarch64").unwrap();
        let items = r.items_for(&arm, &t);
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].0, "platformContents.arm64[0]");
        assert_eq!(items[1].1.src, "busybox.arm64");
        assert_eq!(items[1].1.mode, Some(0o755));
    }

    #[test]
    fn unknown_fields_name_the_file_and_field() {
        for (text, field) in [
            ("maxLayer: 3\n", "maxLayer"),
            ("config: {entryPoint: [x]}\n", "entryPoint"),
            ("contents: [{src: a, dest: /a, mod: '0755'}]\n", "mod"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.message().contains("images/x/image.yaml") && e.message().contains(field), "{}", e.message());
        }
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, needle) in [
            ("maxLayers: 126\n", "maxLayers"),
            ("maxLayers: 0\n", "maxLayers"),
            ("contents: [{src: ../x, dest: /x}]\n", "escapes"),
            ("contents: [{src: /etc/passwd, dest: /x}]\n", "absolute"),
            ("contents: [{src: a, dest: x}]\n", "absolute path"),
            ("contents: [{src: a, dest: /x, mode: '9'}]\n", "octal"),
            ("platformContents: {sparc: []}\n", "unknown architecture"),
            ("name: Bad/Name\n", "name"),
            ("created: tomorrow\n", "created"),
            ("config: {exposedPorts: ['http']}\n", "exposedPorts"),
            ("from: oci:../x\n", "escapes"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message().contains(needle), "{text}: {}", e.message());
        }
    }

    #[test]
    fn references_with_registry_port_and_paths() {
        for ok in [
            "registry.example.com:5000/my/image",
            "127.0.0.1:5000/a/b/c:v1.2",
            "localhost/x",
            "busybox",
            "a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            check_reference(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "Upper/x", "host:99999/x", "x:bad tag", "a//b", "x@md5:1"] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
        assert_eq!(split_tag("h:5000/a/b:t"), ("h:5000/a/b", Some("t")));
        assert_eq!(split_tag("h:5000/a/b"), ("h:5000/a/b", None));
    }
}
