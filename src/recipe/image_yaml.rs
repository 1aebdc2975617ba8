//! `image.yaml`: the recipe of an assembled image (every field: docs/image-yaml.md).
//!
//! Parsing is strict: an unknown field anywhere is an error naming the file and the
//! field, so a typo is never silently ignored. Paths are checked lexically here (no
//! absolute `src`, no `..` out of the image folder); what they point at is checked
//! against the scanned folder when the image is assembled.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::image::platform::{ArchTable, Platform};
use crate::image::reference::Reference;
use crate::recipe::catalog::{Catalog, Image};
use crate::recipe::config::Config;
use crate::support::error::{Error, Result};

use crate::image::tar::MAX_ID;
use crate::support::time::MAX_SECONDS;

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

/// `created` as written: a whole number of seconds, a word, or a number that cannot be
/// a time, with why (kept so that [`Recipe::created_at`] can say it, naming the field).
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    Seconds(u64),
    Word(String),
    Invalid(String),
}

impl<'de> Deserialize<'de> for Created {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Created;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`epoch`, `now` or seconds since the epoch")
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Created, E> {
                Ok(Created::Seconds(v))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Created, E> {
                Ok(u64::try_from(v)
                    .map(Created::Seconds)
                    .unwrap_or_else(|_| Created::Invalid(format!("{v} is before the epoch"))))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Created, E> {
                Ok(Created::Invalid(if v.fract() != 0.0 || !v.is_finite() {
                    format!("{v} is not a whole number of seconds")
                } else if v < 0.0 {
                    format!("{v} is before the epoch")
                } else {
                    format!("{v} is after the year 9999, which no image config can say")
                }))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Created, E> {
                Ok(Created::Word(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One file or folder of the image folder mapped into the image.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// Relative to the image folder; a folder is copied recursively.
    pub src: String,
    /// Absolute path in the image; a folder `src` lands *as* `dest` (`dest: /` merges), a
    /// file at `dest`, or into it when `dest` ends with `/` (as Docker's COPY).
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
    /// `dest` as written (for the config history).
    pub dest: String,
    /// `dest` normalised: relative to `/`, no empty or `.` parts (`""` is `/` itself).
    pub dest_path: String,
    /// `dest` ends with `/` (or `/.`): a file goes into that folder, under its own name.
    pub into_folder: bool,
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
            c.item().map_err(|(key, e)| bad(&format!("contents[{i}].{key}"), e))?;
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
                c.item().map_err(|(key, e)| bad(&format!("platformContents.{arch}[{i}].{key}"), e))?;
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
        let forms = format!(
            "use `epoch`, `now` or whole seconds since the epoch from 0 to {MAX_SECONDS} (9999-12-31T23:59:59Z)"
        );
        match &self.created {
            None => Ok(CreatedAt::Fixed(0)),
            Some(Created::Seconds(s)) if *s <= MAX_SECONDS => Ok(CreatedAt::Fixed(*s)),
            Some(Created::Seconds(s)) => {
                Err(format!("{s} is after the year 9999, which no image config can say; {forms}"))
            }
            Some(Created::Word(w)) if w == "epoch" => Ok(CreatedAt::Fixed(0)),
            Some(Created::Word(w)) if w == "now" => Ok(CreatedAt::Now),
            Some(Created::Word(w)) => Err(format!("'{}' is not a time; {forms}", w.escape_debug())),
            Some(Created::Invalid(why)) => Err(format!("{why}; {forms}")),
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
    /// The item, or the key that is wrong (`src`, `dest`, `uid`...) and why.
    fn item(&self) -> std::result::Result<ContentItem, (&'static str, String)> {
        check_relative(&self.src).map_err(|e| ("src", e))?;
        let (dest_path, into_folder) = dest_path(&self.dest).map_err(|e| ("dest", e))?;
        let mode = match &self.mode {
            None => None,
            Some(m) => {
                let digits = m.strip_prefix("0o").unwrap_or(m);
                match u32::from_str_radix(digits, 8) {
                    Ok(v) if v <= 0o7777 && !digits.is_empty() => Some(v),
                    _ => return Err(("mode", format!("'{}' is not an octal mode such as \"0755\"", m.escape_debug()))),
                }
            }
        };
        let id = |key: &'static str, v: Option<u64>| match v.unwrap_or(0) {
            v if v <= MAX_ID => Ok(v),
            v => Err((key, format!("{v} is larger than {MAX_ID}, the largest id Linux has (4294967295 means none)"))),
        };
        Ok(ContentItem {
            src: self.src.clone(),
            dest: self.dest.clone(),
            dest_path,
            into_folder,
            uid: id("uid", self.uid)?,
            gid: id("gid", self.gid)?,
            mode,
        })
    }
}

/// `dest` normalised as Docker's COPY reads it: absolute, repeated `/` and `.` parts
/// dropped (`//x//y` is `x/y`, `/./x` is `x`); `..` and NUL are refused. Returns the path
/// relative to `/` and whether it names a folder to copy into (a trailing `/` or `/.`).
pub fn dest_path(dest: &str) -> std::result::Result<(String, bool), String> {
    let shown = dest.escape_debug();
    if dest.contains('\0') {
        return Err(format!("'{shown}' contains a NUL character, which no path can hold"));
    }
    if !dest.starts_with('/') {
        return Err(format!("'{shown}' must be an absolute path in the image (start it with /)"));
    }
    if dest.split('/').any(|c| c == "..") {
        return Err(format!("'{shown}' contains '..'; write the path it means without it"));
    }
    let into_folder = dest.ends_with('/') || dest.ends_with("/.");
    let path = dest.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/");
    Ok((path, into_folder))
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

/// Checks a reference as `docker pull` reads it ([`Reference::parse`]); the message names
/// the part that is wrong.
fn check_reference(r: &str) -> std::result::Result<(), String> {
    Reference::parse(r).map(drop).map_err(|e| e.message().to_string())
}

/// How the planner names an image.yaml's external bases: a registry base and a
/// package set (the assembler resolves both, [`crate::build::assemble::resolve_base`]).
pub const BASE_REGISTRY: &str = "docker://";
pub const BASE_APT: &str = "apt:";

/// What an image.yaml builds on, for the planner.
#[derive(Debug, Default)]
pub struct Refs {
    /// The farm image it is `from:`, with the reference as written.
    pub farm_parent: Option<(String, String)>,
    /// `docker://REF` (a registry base) and `apt:PKG PKG...` (the package set); both
    /// are resolved by the assembler and enter the content key.
    pub bases: Vec<String>,
}

/// The farm parent and the external bases of an `image.yaml`.
pub fn refs(config: &Config, catalog: &Catalog, image: &Image, path: &Path, text: &str) -> Result<Refs> {
    let recipe = Recipe::parse(path, text, &config.arches)?;
    let is_farm = |n: &str| -> Option<String> {
        if catalog.images.contains_key(n) && n != image.name {
            return Some(n.to_string());
        }
        crate::recipe::dockerfile::farm_parent(n, &config.local_prefix)
            .filter(|n| catalog.images.contains_key(*n))
            .map(str::to_string)
    };
    let mut refs = Refs::default();
    match recipe.from_kind(path, &image.dir, &is_farm)? {
        From::Farm(name) => refs.farm_parent = Some((name, recipe.from.clone().unwrap_or_default())),
        From::Registry(r) => refs.bases.push(format!("{BASE_REGISTRY}{r}")),
        From::Scratch | From::OciLayout(_) | From::DockerArchive(_) => {}
    }
    if !recipe.packages.is_empty() {
        let mut p = recipe.packages.clone();
        p.sort();
        p.dedup();
        refs.bases.push(format!("{BASE_APT}{}", p.join(" ")));
    }
    Ok(refs)
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
    fn dest_spellings_are_normalised_and_a_trailing_slash_means_into() {
        for (dest, path, into) in [
            ("//x//y", "x/y", false),
            ("/./x", "x", false),
            ("/etc/", "etc", true),
            ("/etc/.", "etc", true),
            ("/", "", true),
            ("/a/./b/", "a/b", true),
        ] {
            assert_eq!(dest_path(dest), Ok((path.to_string(), into)), "{dest}");
        }
        for (text, field, needle) in [
            ("contents: [{src: a, dest: \"/x\\0y\"}]\n", "contents[0].dest", "NUL"),
            ("contents: [{src: a, dest: /x/../y}]\n", "contents[0].dest", "'..'"),
            ("platformContents: {arm64: [{src: a, dest: y}]}\n", "platformContents.arm64[0].dest", "absolute"),
            ("contents: [{src: a, dest: /a, uid: 4294967295}]\n", "contents[0].uid", "4294967294"),
            ("contents: [{src: a, dest: /a, gid: 99999999999}]\n", "contents[0].gid", "largest id"),
        ] {
            let e = parse(text).unwrap_err();
            let m = e.message();
            assert!(m.contains(&format!("`{field}`")) && m.contains(needle), "{text}: {m}");
            assert!(!m.contains('\0') && (needle == "'..'" || !m.contains("'..'")), "{text}: {m}");
        }
        let r = parse("contents: [{src: a, dest: /a, uid: 4294967294, gid: 1234567890}]\n").unwrap();
        let t = ArchTable::builtin();
        let item = &r.items_for(&t.parse_platform("amd64").unwrap(), &t)[0].1;
        assert_eq!((item.uid, item.gid), (4294967294, 1234567890));
    }

    #[test]
    fn created_out_of_range_or_negative_names_the_field_and_the_forms() {
        for text in ["created: 99999999999999\n", "created: -5\n", "created: 1.5\n", "created: 1e30\n"] {
            let e = parse(text).unwrap_err();
            let m = e.message();
            assert!(m.contains("field `created`") && m.contains("`epoch`, `now`") && m.contains("253402300799"), "{m}");
            assert!(!m.contains("untagged"), "{m}");
        }
        assert!(parse("created: -5\n").unwrap_err().message().contains("-5 is before the epoch"));
        assert!(parse("created: 99999999999999\n").unwrap_err().message().contains("after the year 9999"));
        assert_eq!(parse("created: 253402300799\n").unwrap().created_at(), Ok(CreatedAt::Fixed(MAX_SECONDS)));
        assert_eq!(parse("created: now\n").unwrap().created_at(), Ok(CreatedAt::Now));
        assert!(parse("created: [1]\n").unwrap_err().message().contains("`epoch`, `now` or seconds"));
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
    }

    #[test]
    fn name_and_from_refuse_what_a_reference_refuses() {
        // Accepted before image.yaml parsed through `Reference`: "." was taken for a host,
        // ":/0" for an empty host with a port, an empty port or a lone '@' went unchecked.
        for (bad, says) in [
            ("./a", "not a host name"),
            (":/0", "not a host name"),
            ("host:port/x", "port 'port' is not a number"),
            ("h.io:/x", "port '' is not a number"),
            ("a@", "not algorithm:hex"),
        ] {
            let m = parse(&format!("name: '{bad}'\n")).unwrap_err().message().to_string();
            assert!(m.contains("field `name`") && m.contains(says), "{bad}: {m}");
            let m = parse(&format!("from: 'docker://{bad}'\n")).unwrap_err().message().to_string();
            assert!(m.contains("field `from`") && m.contains(says), "{bad}: {m}");
            let dir = tempfile::tempdir().unwrap();
            let recipe = parse(&format!("from: '{bad}'\n"));
            // A `from` that is no file of the folder and no catalog image must be a reference.
            let e = recipe.and_then(|r| r.from_kind(Path::new("image.yaml"), dir.path(), &|_| None)).unwrap_err();
            assert!(e.message().contains("field `from`") && e.message().contains(says), "{bad}: {}", e.message());
            assert_eq!(e.exit_code(), 2);
        }
    }

    use proptest::prelude::*;

    fn path_strategy() -> impl Strategy<Value = String> {
        let part = prop::sample::select(vec!["a", "..", ".", "", "\0", "b c", "\u{e9}", "\\"]);
        (any::<bool>(), prop::collection::vec(part, 0..5), any::<bool>()).prop_map(|(lead, parts, trail)| {
            format!("{}{}{}", if lead { "/" } else { "" }, parts.join("/"), if trail { "/" } else { "" })
        })
    }

    /// Whether `p` (relative) goes above where it starts at some point.
    fn climbs(p: &str) -> bool {
        let mut depth = 0i64;
        for c in p.split('/') {
            match c {
                "" | "." => {}
                ".." => depth -= 1,
                _ => depth += 1,
            }
            if depth < 0 {
                return true;
            }
        }
        false
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// `name` and `from: docker://` accept exactly the references `Reference::parse` accepts.
        #[test]
        fn names_and_bases_agree_with_references(text in "[a-zA-Z0-9:/@._\\[\\]-]{0,40}") {
            let want = Reference::parse(&text).is_ok();
            let q = |s: &str| serde_json::to_string(s).unwrap();
            prop_assert_eq!(parse(&format!("name: {}\n", q(&text))).is_ok(), want, "name: {}", text);
            prop_assert_eq!(parse(&format!("from: {}\n", q(&format!("docker://{text}")))).is_ok(), want, "from: {}", text);
        }

        /// Any text: a recipe or an error, never a panic.
        #[test]
        fn any_text_parses_or_is_refused_without_panic(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        /// Whatever is accepted has a normalised dest (no `..`, NUL, empty or `.` part), a
        /// src that stays in the folder, ids Linux can have and a time a config can say.
        #[test]
        fn accepted_recipes_never_climb_out(
            src in path_strategy(),
            dest in path_strategy(),
            uid in prop_oneof![0u64..5, Just(MAX_ID), Just(MAX_ID + 1), any::<u64>()],
            created in prop_oneof![any::<i64>().prop_map(|c| c.to_string()), Just("1.5".into()), Just("now".into())],
        ) {
            let q = |s: &str| serde_json::to_string(s).unwrap();
            let text = format!("contents: [{{src: {}, dest: {}, uid: {uid}}}]\ncreated: {created}\n", q(&src), q(&dest));
            if let Ok(r) = parse(&text) {
                let t = ArchTable::builtin();
                for (_, item) in r.items_for(&t.parse_platform("amd64").unwrap(), &t) {
                    prop_assert!(!item.src.starts_with('/') && !climbs(&item.src), "src {:?}", item.src);
                    let p = &item.dest_path;
                    prop_assert!(p.is_empty() || p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."), "{:?}", p);
                    prop_assert!(!p.contains('\0'), "{:?}", p);
                    prop_assert!(item.uid <= MAX_ID);
                }
                match r.created_at() {
                    Ok(CreatedAt::Fixed(s)) => prop_assert!(s <= MAX_SECONDS),
                    Ok(CreatedAt::Now) => {}
                    Err(e) => prop_assert!(false, "accepted with a bad created: {}", e),
                }
            }
        }
    }
}
