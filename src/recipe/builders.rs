//! `builders:` in archfarm.yaml: the engines archfarm builds on, as the user wrote them
//! and validated ([`crate::build::fleet`] connects to them and routes jobs).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::image::reference::is_loopback;

use crate::image::platform::{ArchTable, Platform};
use crate::support::error::{Error, Result};

/// The builder used when archfarm.yaml lists none.
pub const DEFAULT_BUILDER: &str = "local";

/// One entry of `builders:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuilder {
    name: Option<String>,
    endpoint: Option<String>,
    tls: Option<RawTls>,
    platforms: Option<Vec<String>>,
    emulates: Option<Vec<String>>,
    jobs: Option<usize>,
    buildkit: Option<RawBuildKit>,
}

/// `buildkit: auto|true|false` as written (YAML booleans or the word).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawBuildKit {
    Bool(bool),
    Word(String),
}

/// Whether a builder builds with BuildKit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildKitMode {
    /// When the engine offers it (the default).
    #[default]
    Auto,
    /// Always; an engine without BuildKit is a configuration error.
    True,
    /// Never: the classic builder.
    False,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Client certificate and the CA that verifies the engine (paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to reach a builder's engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { addr: String, tls: Option<Tls> },
    Ssh { destination: String, host: String, port: Option<u16> },
}

/// A configured builder.
#[derive(Debug, Clone)]
pub struct BuilderSpec {
    pub name: String,
    /// The endpoint as written (shown in reports; never holds secrets).
    pub endpoint_text: String,
    pub endpoint: Endpoint,
    /// Declared native platforms; `None`: ask the engine.
    pub platforms: Option<Vec<Platform>>,
    /// Declared emulated platforms (for engines on other machines).
    pub emulates: Vec<Platform>,
    /// Most builds at once; `None`: the top-level `jobs`.
    pub jobs: Option<usize>,
    pub buildkit: BuildKitMode,
}

impl BuilderSpec {
    /// The engine runs on this machine (a unix socket, or TCP/SSH to loopback), so its
    /// emulation is this machine's binfmt_misc.
    pub fn on_this_machine(&self) -> bool {
        match &self.endpoint {
            Endpoint::Unix(_) => true,
            Endpoint::Tcp { addr, .. } => is_loopback(addr),
            Endpoint::Ssh { host, .. } => is_loopback(host),
        }
    }

    /// A TLS file the configuration names that does not exist: a configuration error
    /// (exit 2), not an engine failure. Checked when the builder is first needed, like
    /// every other fact about it, so a command that builds nothing never trips on it.
    pub fn missing_tls_file(&self) -> Option<Error> {
        let Endpoint::Tcp { tls: Some(t), .. } = &self.endpoint else { return None };
        let (field, path) =
            [("ca", &t.ca), ("cert", &t.cert), ("key", &t.key)].into_iter().find(|(_, p)| !p.is_file())?;
        Some(Error::usage(format!(
            "builder {}: tls.{field} file {} does not exist; fix its `tls:` in the configuration or create the file",
            self.name,
            path.display()
        )))
    }
}

/// Parses an endpoint: `unix:///path`, `tcp://host:port`, `ssh://[user@]host[:port]`.
pub fn parse_endpoint(text: &str, tls: Option<Tls>) -> std::result::Result<Endpoint, String> {
    let text = text.trim();
    if tls.is_some() && !text.starts_with("tcp://") {
        return Err("tls is only for tcp:// endpoints".into());
    }
    if let Some(path) = text.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(format!("'{text}': a unix socket needs an absolute path (unix:///var/run/docker.sock)"));
        }
        return Ok(Endpoint::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = text.strip_prefix("tcp://") {
        let addr = addr.trim_end_matches('/');
        let port_ok = addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("'{text}': expected tcp://host:port (2375 plain, 2376 TLS by convention)"));
        }
        return Ok(Endpoint::Tcp { addr: addr.to_string(), tls });
    }
    if let Some(rest) = text.strip_prefix("ssh://") {
        let rest = rest.trim_end_matches('/');
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.contains(']') || h.ends_with(']') => match p.parse::<u16>() {
                Ok(p) => (h, Some(p)),
                Err(_) => return Err(format!("'{text}': invalid port '{p}'")),
            },
            _ => (hostport, None),
        };
        if host.is_empty() || user.is_some_and(str::is_empty) || host.contains('/') {
            return Err(format!("'{text}': expected ssh://[user@]host[:port]"));
        }
        let destination = match user {
            Some(u) => format!("{u}@{host}"),
            None => host.to_string(),
        };
        return Ok(Endpoint::Ssh { destination, host: host.to_string(), port });
    }
    Err(format!("'{text}': use unix:///path/to/docker.sock, tcp://host:port or ssh://[user@]host[:port]"))
}

/// Validates `builders:`; every error names the file (`source`) and the field.
pub fn parse_builders(raw: Vec<RawBuilder>, arches: &ArchTable, root: &Path, source: &str) -> Result<Vec<BuilderSpec>> {
    let mut out: Vec<BuilderSpec> = Vec::new();
    for (i, b) in raw.into_iter().enumerate() {
        let err = |field: &str, msg: String| Error::usage(format!("{source}: field 'builders[{i}].{field}': {msg}"));
        let name = b.name.ok_or_else(|| err("name", "missing; every builder needs a name".into()))?;
        let name_ok = !name.is_empty()
            && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c));
        if !name_ok {
            return Err(err("name", format!("'{name}': use lowercase letters, digits and . _ -")));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(err("name", format!("'{name}' is listed twice")));
        }
        let endpoint_text = b.endpoint.ok_or_else(|| err("endpoint", "missing (e.g. tcp://host:2376)".into()))?;
        let abs = |p: PathBuf| if p.is_absolute() { p } else { root.join(p) };
        let tls = b.tls.map(|t| Tls { ca: abs(t.ca), cert: abs(t.cert), key: abs(t.key) });
        let endpoint = parse_endpoint(&endpoint_text, tls).map_err(|m| err("endpoint", m))?;
        let platform_list = |field: &str, list: Vec<String>| -> Result<Vec<Platform>> {
            let mut v: Vec<Platform> = Vec::new();
            for p in list {
                let p = arches.parse_platform(&p).map_err(|e| err(field, e.message().to_string()))?;
                if !v.contains(&p) {
                    v.push(p);
                }
            }
            Ok(v)
        };
        let platforms = match b.platforms {
            Some(l) if l.is_empty() => {
                return Err(err("platforms", "empty; leave it out to ask the engine".into()));
            }
            Some(l) => Some(platform_list("platforms", l)?),
            None => None,
        };
        let emulates = platform_list("emulates", b.emulates.unwrap_or_default())?;
        if b.jobs == Some(0) {
            return Err(err("jobs", "must be at least 1".into()));
        }
        let buildkit = match b.buildkit {
            None => BuildKitMode::Auto,
            Some(RawBuildKit::Bool(true)) => BuildKitMode::True,
            Some(RawBuildKit::Bool(false)) => BuildKitMode::False,
            Some(RawBuildKit::Word(w)) => match w.as_str() {
                "auto" => BuildKitMode::Auto,
                "true" => BuildKitMode::True,
                "false" => BuildKitMode::False,
                _ => return Err(err("buildkit", format!("'{w}': use auto, true or false"))),
            },
        };
        out.push(BuilderSpec { name, endpoint_text, endpoint, platforms, emulates, jobs: b.jobs, buildkit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<BuilderSpec>> {
        let raw: Vec<RawBuilder> = serde_yaml_ng::from_str(yaml).map_err(|e| Error::usage(e.to_string()))?;
        parse_builders(raw, &ArchTable::builtin(), Path::new("/repo"), "/repo/archfarm.yaml")
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoint("unix:///var/run/docker.sock", None),
            Ok(Endpoint::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            parse_endpoint("tcp://127.0.0.1:2377", None),
            Ok(Endpoint::Tcp { addr: "127.0.0.1:2377".into(), tls: None })
        );
        assert_eq!(
            parse_endpoint("ssh://builder@arm.example.com:2222", None),
            Ok(Endpoint::Ssh {
                destination: "builder@arm.example.com".into(),
                host: "arm.example.com".into(),
                port: Some(2222)
            })
        );
        assert_eq!(
            parse_endpoint("ssh://arm", None),
            Ok(Endpoint::Ssh { destination: "arm".into(), host: "arm".into(), port: None })
        );
        for bad in ["http://x:1", "tcp://nohost", "unix://relative", "ssh://@h", "ssh://u@h:port"] {
            assert!(parse_endpoint(bad, None).is_err(), "{bad}");
        }
        let tls = Tls { ca: "a".into(), cert: "b".into(), key: "c".into() };
        assert!(parse_endpoint("unix:///s", Some(tls)).is_err());
    }

    #[test]
    fn builders_validate_with_file_and_field() {
        let b = parse(
            "- {name: local, endpoint: 'unix:///var/run/docker.sock'}\n\
             - name: arm-box\n  endpoint: tcp://127.0.0.1:2377\n  platforms: [aarch64]\n  jobs: 2\n  tls: {ca: ca.pem, cert: cert.pem, key: key.pem}\n",
        )
        .unwrap();
        assert_eq!(b[1].platforms.as_ref().unwrap()[0].to_string(), "linux/arm64");
        assert_eq!(b[1].jobs, Some(2));
        let Endpoint::Tcp { tls: Some(t), .. } = &b[1].endpoint else { panic!() };
        assert_eq!(t.ca, Path::new("/repo/ca.pem"));
        assert!(b[0].on_this_machine() && b[1].on_this_machine());

        for (yaml, field) in [
            ("- {name: a, endpoint: 'tcp://h:1', platfoms: [arm64]}", "platfoms"),
            ("- {endpoint: 'tcp://h:1'}", "builders[0].name"),
            ("- {name: a}", "builders[0].endpoint"),
            ("- {name: a, endpoint: 'tcp://h:1'}\n- {name: a, endpoint: 'tcp://h:2'}", "builders[1].name"),
            ("- {name: a, endpoint: 'ftp://h'}", "builders[0].endpoint"),
            ("- {name: a, endpoint: 'tcp://h:1', platforms: [mips99]}", "builders[0].platforms"),
            ("- {name: a, endpoint: 'tcp://h:1', jobs: 0}", "builders[0].jobs"),
            ("- {name: A, endpoint: 'tcp://h:1'}", "builders[0].name"),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.message().contains(field), "{yaml}: {}", e.message());
            assert_eq!(e.exit_code(), 2);
        }
    }
}
