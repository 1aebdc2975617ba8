//! Architectures and platforms. The table lives in `arch/*.yaml` (embedded at compile
//! time); a user folder of the same files can add architectures or override them.
//! Every name a user types (`ARCH=aarch64`, `--platform linux/aarch64`, a
//! `Dockerfile.x86_64` suffix) resolves through [`ArchTable::resolve`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::support::error::{Error, Result};

const BUILTIN: &[(&str, &str)] = &[
    ("amd64.yaml", include_str!("../../arch/amd64.yaml")),
    ("arm64.yaml", include_str!("../../arch/arm64.yaml")),
    ("arm-v7.yaml", include_str!("../../arch/arm-v7.yaml")),
    ("386.yaml", include_str!("../../arch/386.yaml")),
    ("ppc64le.yaml", include_str!("../../arch/ppc64le.yaml")),
    ("s390x.yaml", include_str!("../../arch/s390x.yaml")),
    ("riscv64.yaml", include_str!("../../arch/riscv64.yaml")),
];

/// An OCI platform: `linux/arm64`, `linux/arm/v7`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The form used inside tags: `arm64`, `arm-v7`.
    pub fn tag_slug(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}-{v}", self.architecture),
            None => self.architecture.clone(),
        }
    }
}

/// The names of BuildKit's automatic platform arguments (the `BUILD*` half describes the
/// builder, the `TARGET*` half the image being built).
pub const BUILD_PLATFORM_ARGS: [&str; 4] = ["BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT"];
pub const TARGET_PLATFORM_ARGS: [&str; 4] = ["TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT"];

/// BuildKit's automatic platform arguments for a build of `target` on a builder of
/// platform `build`, with BuildKit's exact values: `TARGETPLATFORM=linux/arm/v7`,
/// `TARGETOS=linux`, `TARGETARCH=arm`, `TARGETVARIANT=v7` (empty without a variant).
pub fn platform_args(target: &Platform, build: &Platform) -> BTreeMap<String, String> {
    let mut args = BTreeMap::new();
    for (names, p) in [(TARGET_PLATFORM_ARGS, target), (BUILD_PLATFORM_ARGS, build)] {
        let values = [p.to_string(), p.os.clone(), p.architecture.clone(), p.variant.clone().unwrap_or_default()];
        for (name, value) in names.iter().zip(values) {
            args.insert(name.to_string(), value);
        }
    }
    args
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// One architecture as described by a file in `arch/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arch {
    /// Go's GOARCH name, with `/variant` where OCI needs one (`arm/v7`).
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub oci: Platform,
    /// The qemu-user binary suffix and binfmt handler name (`qemu-aarch64`).
    #[serde(default)]
    pub qemu: Option<String>,
    /// Debian's name for the architecture (`arm64`, `armhf`, `ppc64el`).
    pub debian: String,
}

/// All known architectures, looked up by canonical name or alias.
#[derive(Debug, Clone)]
pub struct ArchTable {
    arches: BTreeMap<String, Arch>,
}

impl ArchTable {
    /// The architectures embedded in the binary from `arch/`.
    pub fn builtin() -> Self {
        let mut table = ArchTable { arches: BTreeMap::new() };
        for (file, text) in BUILTIN {
            let arch = parse_arch(text, Path::new(file)).expect("embedded arch/ files are valid");
            table.arches.insert(arch.name.clone(), arch);
        }
        table
    }

    /// Adds or overrides architectures from every `*.yaml` in `dir`.
    pub fn merge_dir(&mut self, dir: &Path) -> Result<()> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| Error::io("reading architecture folder", dir, e).into_usage())?;
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml")) {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io("reading architecture file", &path, e).into_usage())?;
            let arch = parse_arch(&text, &path)?;
            self.arches.insert(arch.name.clone(), arch);
        }
        Ok(())
    }

    pub fn all(&self) -> impl Iterator<Item = &Arch> {
        self.arches.values()
    }

    /// Finds an architecture by canonical name or any alias, case-insensitively.
    pub fn find(&self, name: &str) -> Option<&Arch> {
        let wanted = name.trim().to_ascii_lowercase();
        self.arches.values().find(|a| {
            a.name.eq_ignore_ascii_case(&wanted)
                || a.aliases.iter().any(|x| x.eq_ignore_ascii_case(&wanted))
                || a.oci.tag_slug().eq_ignore_ascii_case(&wanted)
        })
    }

    /// Like [`find`](Self::find), but an unknown name is a usage error listing the known ones.
    pub fn resolve(&self, name: &str) -> Result<&Arch> {
        self.find(name).ok_or_else(|| {
            Error::usage(format!(
                "unknown architecture '{name}'; known: {} (aliases such as x86_64, aarch64, armv7l also work)",
                self.known_names()
            ))
        })
    }

    /// Parses `linux/aarch64`, `linux/arm/v7`, `arm64` or `aarch64` into a platform.
    pub fn parse_platform(&self, text: &str) -> Result<Platform> {
        let text = text.trim();
        let arch_part = match text.split_once('/') {
            Some((os, rest)) if os.eq_ignore_ascii_case("linux") => rest,
            Some((os, _)) if self.find(text).is_none() => {
                return Err(Error::usage(format!(
                    "unsupported platform '{text}': operating system '{os}' is not supported, only linux"
                )))
            }
            _ => text,
        };
        self.resolve(arch_part)
            .map(|a| a.oci.clone())
            .map_err(|e| Error::usage(format!("invalid platform '{text}': {}", e.message())))
    }

    /// Parses a comma-separated platform list; duplicates collapse, order is kept.
    pub fn parse_platform_list(&self, text: &str) -> Result<Vec<Platform>> {
        let mut out: Vec<Platform> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let p = self.parse_platform(part)?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        if out.is_empty() {
            return Err(Error::usage(format!("empty platform list '{text}'")));
        }
        Ok(out)
    }

    /// The architecture that describes `platform`, if any.
    pub fn for_platform(&self, platform: &Platform) -> Option<&Arch> {
        self.arches.values().find(|a| &a.oci == platform)
    }

    /// The host's platform, from `uname -m`.
    pub fn host(&self) -> Result<Platform> {
        let uts = nix::sys::utsname::uname().map_err(|e| Error::failure(format!("uname: {e}")))?;
        let machine = uts.machine().to_string_lossy().into_owned();
        self.parse_platform(&machine)
            .map_err(|_| Error::failure(format!("host architecture '{machine}' is not in the architecture table")))
    }

    fn known_names(&self) -> String {
        self.arches.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn parse_arch(text: &str, path: &Path) -> Result<Arch> {
    let arch: Arch = serde_yaml_ng::from_str(text)
        .map_err(|e| Error::usage(format!("{}: invalid architecture file: {e}", path.display())))?;
    if arch.oci.os != "linux" {
        return Err(Error::usage(format!("{}: field oci.os: only 'linux' is supported", path.display())));
    }
    Ok(arch)
}

impl Error {
    /// Turns an I/O failure reading user input into a usage error (exit 2).
    pub fn into_usage(self) -> Self {
        Error::usage(self.message().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_to_canonical_platforms() {
        let t = ArchTable::builtin();
        for (input, want) in [
            ("aarch64", "linux/arm64"),
            ("linux/aarch64", "linux/arm64"),
            ("arm64/v8", "linux/arm64"),
            ("x86_64", "linux/amd64"),
            ("X86-64", "linux/amd64"),
            ("armv7l", "linux/arm/v7"),
            ("linux/arm/v7", "linux/arm/v7"),
            ("armhf", "linux/arm/v7"),
            ("i686", "linux/386"),
            ("ppc64el", "linux/ppc64le"),
            ("riscv64", "linux/riscv64"),
            ("s390x", "linux/s390x"),
        ] {
            assert_eq!(t.parse_platform(input).unwrap().to_string(), want, "{input}");
        }
    }

    #[test]
    fn unknown_architecture_lists_known_ones() {
        let err = ArchTable::builtin().parse_platform("linux/sparc").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.message().contains("sparc"), "{}", err.message());
        assert!(err.message().contains("amd64, arm/v7, arm64"), "{}", err.message());
    }

    #[test]
    fn other_operating_systems_are_refused() {
        let err = ArchTable::builtin().parse_platform("windows/amd64").unwrap_err();
        assert!(err.message().contains("windows"));
    }

    #[test]
    fn tag_slugs_have_no_slashes() {
        let t = ArchTable::builtin();
        assert_eq!(t.parse_platform("armv7l").unwrap().tag_slug(), "arm-v7");
        assert_eq!(t.parse_platform("aarch64").unwrap().tag_slug(), "arm64");
    }

    #[test]
    fn user_files_override_and_add() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("loong.yaml"),
            "name: loong64\naliases: [loongarch64]\noci: {os: linux, architecture: loong64}\nqemu: loongarch64\ndebian: loong64\n",
        )
        .unwrap();
        let mut t = ArchTable::builtin();
        t.merge_dir(dir.path()).unwrap();
        assert_eq!(t.parse_platform("loongarch64").unwrap().to_string(), "linux/loong64");
    }

    #[test]
    fn platform_args_have_buildkits_values() {
        let t = ArchTable::builtin();
        let args = platform_args(&t.parse_platform("armv7l").unwrap(), &t.parse_platform("x86_64").unwrap());
        let get = |k: &str| args[k].as_str();
        assert_eq!(
            [get("TARGETPLATFORM"), get("TARGETOS"), get("TARGETARCH"), get("TARGETVARIANT")],
            ["linux/arm/v7", "linux", "arm", "v7"]
        );
        assert_eq!(
            [get("BUILDPLATFORM"), get("BUILDOS"), get("BUILDARCH"), get("BUILDVARIANT")],
            ["linux/amd64", "linux", "amd64", ""]
        );
        assert_eq!(args.len(), 8);
    }

    #[test]
    fn list_keeps_order_and_drops_duplicates() {
        let t = ArchTable::builtin();
        let l = t.parse_platform_list("aarch64, linux/amd64,arm64").unwrap();
        let s: Vec<_> = l.iter().map(|p| p.to_string()).collect();
        assert_eq!(s, ["linux/arm64", "linux/amd64"]);
    }
}
