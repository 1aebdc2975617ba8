//! Image references as `docker pull` reads them: one parser and one normal form, so the
//! key of `FROM busybox` and of `FROM docker.io/library/busybox:latest` is the same
//! question asked of the same registry.
//!
//! The rules (distribution's `reference` package, `ParseNormalizedNamed`):
//! - `[host[:port]/]path[:tag][@sha256:hex]`; the first path component is a registry
//!   host only when it holds a `.` or a `:` or is `localhost` (`user/img` is on Docker Hub);
//! - Docker Hub is `docker.io` (also written `index.docker.io` or `registry-1.docker.io`),
//!   its one-component repositories live under `library/`, and its API host is
//!   `registry-1.docker.io`;
//! - repository components are lowercase letters, digits and `.` `_` `-`, starting and
//!   ending with a letter or digit, 255 characters in all; a tag is at most 128 word
//!   characters, `.` or `-`, not starting with `.` or `-`; without tag or digest the tag
//!   is `latest`.
//!
//! Every reader of references goes through this module: the `registry:` setting, mirrors
//! and `--to` ([`parse_registry`], host and namespace by the same rules), `archfarm copy`,
//! image.yaml `name` and `from`, `docker://` bases, base resolution and the engine's build
//! tags and `local_prefix` ([`Reference::parse`]), and the registry client's repository and
//! tag checks.
//! Ports are 1-65535 and a host name ending in a number must be an IPv4 address, so what
//! is accepted here is also something an HTTP client can connect to.
//!
//! Hand-written: oci-spec's `Reference` is behind its `distribution` feature (which pulls
//! in a regex engine) and does not report which part is wrong.

use std::fmt;

use crate::support::error::{Error, Result};

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's registry API host.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `docker.io`, or `host[:port]` as written.
    pub registry: String,
    /// The repository path, `library/` added on Docker Hub.
    pub repository: String,
    /// The tag as written; `None` when only a digest is given (or nothing: then `latest`).
    pub tag: Option<String>,
    /// `algorithm:hex` when pinned.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `text` the way `docker pull` does; malformed input is a usage error naming
    /// the part that is wrong.
    pub fn parse(text: &str) -> Result<Reference> {
        let bad = |why: String| Error::usage(format!("invalid image reference '{text}': {why}"));
        if text.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let (name, tag, digest) = split(text);
        let digest = digest.map(check_digest).transpose().map_err(bad)?;
        let tag = tag.map(|t| check_tag(t).map(|()| t.to_string())).transpose().map_err(bad)?;
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if is_host(first) => (check_host(first).map_err(bad)?, rest),
            _ => (DOCKER_HUB, name),
        };
        let registry = canonical_registry(registry).to_string();
        if path.is_empty() {
            return Err(bad("the repository name is empty".into()));
        }
        let repository =
            if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.to_string() };
        check_repository(&repository).map_err(bad)?;
        Ok(Reference { registry, repository, tag, digest })
    }

    /// The tag, `latest` when neither tag nor digest was written.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn lookup(&self) -> &str {
        self.digest.as_deref().or(self.tag_or_latest()).unwrap_or("latest")
    }

    /// The host whose API serves this registry (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The canonical form: `docker.io/library/busybox:1.31.1` (and `@digest` when pinned).
    pub fn canonical(&self) -> String {
        let mut s = self.name();
        if let Some(t) = self.tag_or_latest() {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The pinned form for `digest`: `docker.io/library/busybox@sha256:<hex>`.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Parses a registry named on its own, `host[:port][/namespace]`: the `registry:` setting,
/// `registry_mirrors`, `--to`, `login`. The host follows the rules of a reference's host
/// and must look like one (a `.`, a `:port` or `localhost`), so `myname/images` is not
/// taken for a host; the namespace is repository path components. Returns the host as
/// written and the namespace (empty when absent).
pub fn parse_registry(text: &str) -> Result<(String, String)> {
    let bad = |why: String| {
        Error::usage(format!(
            "invalid registry '{text}': {why}; expected host[:port]/namespace, e.g. 127.0.0.1:5000/archfarm"
        ))
    };
    let (host, namespace) = text.split_once('/').unwrap_or((text, ""));
    if host.is_empty() {
        return Err(bad("the host is empty".into()));
    }
    if !is_host(host) {
        return Err(bad(format!("'{host}' is not a registry host (a host holds a '.' or a ':port', or is localhost)")));
    }
    check_host(host).map_err(bad)?;
    if text.contains('/') {
        check_path(namespace, "namespace").map_err(bad)?;
        if namespace.len() > 255 {
            return Err(bad("the namespace is longer than 255 characters".into()));
        }
    }
    Ok((host.to_string(), namespace.to_string()))
}

/// Whether `text` names its registry (`host[:port]/…`) rather than being on Docker Hub
/// by default (`user/img`); says nothing about whether it parses.
pub fn names_registry(text: &str) -> bool {
    text.split_once('/').is_some_and(|(first, _)| is_host(first))
}

/// The name references use for a registry host: Docker Hub's aliases are `docker.io`.
pub fn canonical_registry(host: &str) -> &str {
    match host {
        "index.docker.io" | DOCKER_HUB_API => DOCKER_HUB,
        _ => host,
    }
}

/// Docker's rule for the first component of a name: a registry host when it holds a `.`
/// or a `:` or is `localhost`.
fn is_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// The lexical split every reader of references shares: `name[:tag][@digest]`, the tag
/// after the last `:` that follows the last `/` (a port comes before a `/`). Nothing is
/// checked.
fn split(text: &str) -> (&str, Option<&str>, Option<&str>) {
    let (name, digest) = match text.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (text, None),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..]), digest),
        None => (name, None, digest),
    }
}

/// `sha256:<64 lowercase hex>`: the one digest the store and the registry client verify,
/// so a pinned reference is one archfarm can fetch (distribution also allows sha512).
fn check_digest(d: &str) -> std::result::Result<String, String> {
    let (algorithm, hex) = d.split_once(':').ok_or_else(|| format!("digest '{d}' is not algorithm:hex"))?;
    if algorithm != "sha256" {
        return Err(format!("digest '{d}': unsupported algorithm '{algorithm}' (archfarm verifies sha256 digests)"));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(format!("digest '{d}': expected 64 lowercase hex digits after 'sha256:'"));
    }
    Ok(d.to_string())
}

/// `host[:port]` or `[ipv6][:port]`: DNS labels (letters, digits, inner `-`) or an IPv4
/// address, and a port from 1 to 65535 (what an HTTP client can be given).
fn check_host(h: &str) -> std::result::Result<&str, String> {
    let (name, port) = if let Some(rest) = h.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(|| format!("registry host '{h}': unclosed '['"))?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("registry host '{h}': '{ip}' is not an IPv6 address"));
        }
        (None, after.strip_prefix(':').map(Some).unwrap_or((!after.is_empty()).then_some(after)))
    } else {
        match h.split_once(':') {
            Some((n, p)) => (Some(n), Some(p)),
            None => (Some(h), None),
        }
    };
    if let Some(n) = name {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !n.split('.').all(label_ok) {
            return Err(format!("registry host '{h}' is not a host name"));
        }
        // As in a URL: a name ending in a number is an IPv4 address, or nothing.
        let numeric = n.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
        if numeric && n.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(format!("registry host '{h}' is not a host name or an IPv4 address"));
        }
    }
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("registry host '{h}': port '{p}' is not a number"));
        }
        if !p.parse::<u16>().is_ok_and(|n| n > 0) {
            return Err(format!("registry host '{h}': port {p} is out of range (1-65535)"));
        }
    }
    Ok(h)
}

/// Checks a repository path as the registry API takes it (`namespace/image`): path
/// components, 255 characters in all.
pub fn check_repository(repo: &str) -> std::result::Result<(), String> {
    check_path(repo, "repository")?;
    if repo.len() > 255 {
        return Err("the repository name is longer than 255 characters".into());
    }
    Ok(())
}

/// Checks a tag: at most 128 letters, digits, `_` `.` `-`, not starting with `.` or `-`.
pub fn check_tag(t: &str) -> std::result::Result<(), String> {
    let b = t.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    if b.is_empty() {
        return Err("the tag after ':' is empty".into());
    }
    if b.len() > 128 || !word(b[0]) || !b.iter().all(|&c| word(c) || c == b'.' || c == b'-') {
        return Err(format!("tag '{t}' must be at most 128 letters, digits, _ . -, not starting with . or -"));
    }
    Ok(())
}

/// Checks `/`-separated path components; `what` names the path in the message.
fn check_path(path: &str, what: &str) -> std::result::Result<(), String> {
    let Some(c) = path.split('/').find(|c| !valid_path_component(c)) else { return Ok(()) };
    Err(if c.is_empty() {
        format!("an empty path component in the {what} (`//`, or a leading or trailing `/`)")
    } else if c.bytes().any(|b| b.is_ascii_uppercase()) {
        format!("{what} component '{c}' has uppercase letters; repository names are lowercase")
    } else {
        format!("{what} component '{c}' must be lowercase letters, digits and . _ -, starting and ending with a letter or digit")
    })
}

/// A path component of a repository name, per the distribution spec.
pub fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
        && b[b.len() - 1].is_ascii_lowercase() | b[b.len() - 1].is_ascii_digit()
        && b.iter().all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || b"._-".contains(&x))
}

/// Loopback registries may use plain HTTP without being listed (as Docker allows).
pub fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Splits a written reference into its name as written (host included, not normalised)
/// and its tag (None when absent); a digest is dropped. For names already known valid,
/// where the written form matters (an archive's `repositories`, an export's ref name).
pub fn split_tag(r: &str) -> (&str, Option<&str>) {
    let (name, tag, _) = split(r);
    (name, tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn canonical(text: &str) -> String {
        Reference::parse(text).unwrap_or_else(|e| panic!("{text}: {}", e.message())).canonical()
    }

    #[test]
    fn normalises_like_docker_pull() {
        let d = format!("sha256:{HEX}");
        for (text, want) in [
            ("alpine", "docker.io/library/alpine:latest".to_string()),
            ("busybox:1.31.1", "docker.io/library/busybox:1.31.1".into()),
            ("user/img", "docker.io/user/img:latest".into()),
            ("user/img:v1", "docker.io/user/img:v1".into()),
            ("docker.io/alpine", "docker.io/library/alpine:latest".into()),
            ("index.docker.io/library/alpine:3", "docker.io/library/alpine:3".into()),
            ("registry-1.docker.io/user/x", "docker.io/user/x:latest".into()),
            ("localhost/x", "localhost/x:latest".into()),
            ("localhost:5000/a/b:t", "localhost:5000/a/b:t".into()),
            ("127.0.0.1:5000/ns/img:arm64-abc", "127.0.0.1:5000/ns/img:arm64-abc".into()),
            ("ghcr.io/owner/repo/sub:1.0", "ghcr.io/owner/repo/sub:1.0".into()),
            ("[::1]:5000/x", "[::1]:5000/x:latest".into()),
            ("user/a.b__c-d", "docker.io/user/a.b__c-d:latest".into()),
            (&format!("busybox@{d}"), format!("docker.io/library/busybox@{d}")),
            (&format!("busybox:1.31.1@{d}"), format!("docker.io/library/busybox:1.31.1@{d}")),
            (&format!("host:5000/x@{d}"), format!("host:5000/x@{d}")),
        ] {
            assert_eq!(canonical(text), want, "{text}");
        }
    }

    #[test]
    fn parts_api_host_and_pinned_form() {
        let r = Reference::parse("busybox:1.31.1").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("docker.io", "library/busybox"));
        assert_eq!(r.api_host(), DOCKER_HUB_API);
        assert_eq!(r.lookup(), "1.31.1");
        assert_eq!(r.pinned(&format!("sha256:{HEX}")), format!("docker.io/library/busybox@sha256:{HEX}"));
        let r = Reference::parse("127.0.0.1:5096/library/busybox").unwrap();
        assert_eq!(r.api_host(), "127.0.0.1:5096");
        assert_eq!(r.lookup(), "latest");
        let r = Reference::parse(&format!("x:1@sha256:{HEX}")).unwrap();
        assert_eq!(r.lookup(), format!("sha256:{HEX}"));
        assert_eq!(r.to_string(), r.canonical());
    }

    #[test]
    fn split_tag_takes_the_last_colon_after_the_host_port() {
        assert_eq!(split_tag("h:5000/a/b:t"), ("h:5000/a/b", Some("t")));
        assert_eq!(split_tag("h:5000/a/b"), ("h:5000/a/b", None));
        assert_eq!(split_tag(&format!("busybox:1@sha256:{HEX}")), ("busybox", Some("1")));
    }

    #[test]
    fn registries_named_on_their_own() {
        let ok = |t: &str| parse_registry(t).unwrap_or_else(|e| panic!("{t}: {}", e.message()));
        assert_eq!(ok("127.0.0.1:5000/archfarm"), ("127.0.0.1:5000".to_string(), "archfarm".to_string()));
        assert_eq!(ok("[::1]:5000"), ("[::1]:5000".to_string(), String::new()));
        assert_eq!(ok("localhost"), ("localhost".to_string(), String::new()));
        assert_eq!(ok("index.docker.io/a/b"), ("index.docker.io".to_string(), "a/b".to_string()));
        for (text, says) in [
            ("", "the host is empty"),
            ("/ns", "the host is empty"),
            ("myname/images", "'myname' is not a registry host"),
            ("host:99999/ns", "out of range"),
            ("h.io/", "empty path component in the namespace"),
            ("h.io/a:b", "namespace component 'a:b'"),
            ("h.io/a@sha256:x", "namespace component"),
        ] {
            let e = parse_registry(text).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{text}");
            assert!(
                e.message().contains(&format!("invalid registry '{text}'")) && e.message().contains(says),
                "{text}: {}",
                e.message()
            );
        }
        assert_eq!(canonical_registry("registry-1.docker.io"), DOCKER_HUB);
        assert_eq!(canonical_registry("index.docker.io"), DOCKER_HUB);
        assert_eq!(canonical_registry("ghcr.io"), "ghcr.io");
        assert!(names_registry("localhost/x") && names_registry("h:1/x") && names_registry("a.b/c"));
        assert!(!names_registry("user/img") && !names_registry("busybox:1") && !names_registry("localhost"));
    }

    #[test]
    fn bad_input_is_a_usage_error_naming_the_part() {
        for (text, says) in [
            ("", "empty"),
            ("Busybox", "uppercase"),
            ("user/MyImg:1", "uppercase"),
            ("busybox:", "tag after ':' is empty"),
            (":1", "repository name is empty"),
            ("busybox@", "not algorithm:hex"),
            ("busybox@sha256:abc", "64 lowercase hex"),
            (&format!("busybox@sha256:{}", HEX.to_uppercase()), "64 lowercase hex"),
            (&format!("busybox@md5:{HEX}"), "unsupported algorithm"),
            (&format!("busybox@sha512:{HEX}{HEX}"), "unsupported algorithm 'sha512'"),
            ("a//b", "empty path component"),
            ("host.io/", "repository name is empty"),
            ("/x", "empty path component"),
            ("x/", "empty path component"),
            ("-x", "must be lowercase"),
            ("x:.bad", "tag '.bad'"),
            ("host:port/x", "port 'port'"),
            ("bad_host.io/x", "not a host name"),
            ("[zz]:5000/x", "not an IPv6"),
            ("host:99999/x", "port 99999 is out of range"),
            ("host:0/x", "port 0 is out of range"),
            ("host:/x", "port '' is not a number"),
            ("[::1]:/x", "port '' is not a number"),
            (":/0", "not a host name"),
            ("./a", "not a host name"),
            ("1.2.3.4.5/x", "not a host name or an IPv4 address"),
            ("10.0.0.256:5000/x", "not a host name or an IPv4 address"),
        ] {
            let e = Reference::parse(text).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{text}");
            assert!(e.message().contains(says), "{text}: {}", e.message());
            assert!(e.message().contains(&format!("'{text}'")), "{text}: {}", e.message());
        }
        assert!(Reference::parse(&format!("x:{}", "t".repeat(129))).is_err());
        assert!(Reference::parse(&format!("x/{}", "a".repeat(260))).is_err());
    }

    mod properties {
        //! Bounded property runs (a few hundred cases each, well under a second).
        use super::super::*;
        use proptest::prelude::*;

        /// Text made of the characters references are made of, in any order.
        fn reference_like() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9:/@._\\[\\]-]{0,40}"
        }

        /// A DNS label that is not all digits (a host name ending in a number is an IPv4
        /// address, generated apart).
        fn label() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?"
                .prop_filter("not a number", |l| !l.bytes().all(|b| b.is_ascii_digit()))
        }

        /// A registry host as written, and how a reference names it once normalised.
        fn host() -> impl Strategy<Value = (String, String)> {
            let port = proptest::option::of(1u16..);
            prop_oneof![
                (prop::collection::vec(label(), 2..4), port.clone()).prop_map(|(labels, port)| {
                    let h = labels.join(".") + &port.map(|p| format!(":{p}")).unwrap_or_default();
                    (h.clone(), h)
                }),
                (label(), 1u16..).prop_map(|(l, p)| (format!("{l}:{p}"), format!("{l}:{p}"))),
                (any::<std::net::Ipv4Addr>(), port.clone()).prop_map(|(ip, port)| {
                    let h = ip.to_string() + &port.map(|p| format!(":{p}")).unwrap_or_default();
                    (h.clone(), h)
                }),
                port.prop_map(|p| {
                    let h = "localhost".to_string() + &p.map(|p| format!(":{p}")).unwrap_or_default();
                    (h.clone(), h)
                }),
                Just(("[::1]:5000".to_string(), "[::1]:5000".to_string())),
                prop::sample::select(vec!["docker.io", "index.docker.io", "registry-1.docker.io"])
                    .prop_map(|h| (h.to_string(), DOCKER_HUB.to_string())),
            ]
        }

        fn component() -> impl Strategy<Value = String> {
            "[a-z0-9]([a-z0-9._-]{0,8}[a-z0-9])?"
        }

        fn tag() -> impl Strategy<Value = String> {
            "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"
        }

        fn digest() -> impl Strategy<Value = String> {
            "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}"))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            #[test]
            fn any_text_is_a_reference_or_a_usage_error(text in prop_oneof![any::<String>(), reference_like()]) {
                if let Err(e) = Reference::parse(&text) {
                    prop_assert_eq!(e.exit_code(), 2);
                    prop_assert!(e.message().contains(&format!("'{text}'")), "{}", e.message());
                }
            }

            /// Whatever is accepted is safe to put in a URL path or a file name: no
            /// component climbs out, nothing is empty, everything is printable ASCII.
            #[test]
            fn accepted_references_stay_inside(text in reference_like()) {
                let Ok(r) = Reference::parse(&text) else { return Ok(()) };
                for c in r.repository.split('/') {
                    prop_assert!(valid_path_component(c) && c != "." && c != "..", "{text}: component {c:?}");
                }
                prop_assert!(!r.registry.is_empty() && !r.registry.contains('/'), "{text}: registry {:?}", r.registry);
                if let Some(t) = &r.tag {
                    prop_assert!(!t.contains('/') && !t.starts_with('.') && !t.starts_with('-'), "{text}: tag {t:?}");
                }
                let canonical = r.canonical();
                prop_assert!(canonical.bytes().all(|b| b.is_ascii_graphic()), "{text}: {canonical:?}");
                let again = Reference::parse(&canonical).expect("a canonical form parses");
                prop_assert_eq!(again.canonical(), canonical);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            /// References built from valid parts parse into exactly those parts, and
            /// their canonical form parses back to the same reference.
            #[test]
            fn parts_round_trip(
                host in proptest::option::of(host()),
                path in prop::collection::vec(component(), 1..4),
                tag in proptest::option::of(tag()),
                digest in proptest::option::of(digest()),
            ) {
                // Without a host, a first component that looks like one is one (as in Docker).
                prop_assume!(host.is_some() || !(path[0].contains('.') || path[0] == "localhost"));
                let path = path.join("/");
                let mut text = host.as_ref().map(|(h, _)| format!("{h}/")).unwrap_or_default() + &path;
                if let Some(t) = &tag {
                    text += &format!(":{t}");
                }
                if let Some(d) = &digest {
                    text += &format!("@{d}");
                }
                let r = Reference::parse(&text).map_err(|e| TestCaseError::fail(e.message().to_string()))?;
                let registry = host.map_or(DOCKER_HUB.to_string(), |(_, normal)| normal);
                let repository =
                    if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path };
                prop_assert_eq!(&r.registry, &registry);
                prop_assert_eq!(&r.repository, &repository);
                prop_assert_eq!(&r.tag, &tag);
                prop_assert_eq!(&r.digest, &digest);
                let again = Reference::parse(&r.canonical()).expect("a canonical form parses");
                prop_assert_eq!((&again.registry, &again.repository, &again.digest), (&r.registry, &r.repository, &r.digest));
                prop_assert_eq!(again.tag_or_latest(), r.tag_or_latest());
                prop_assert_eq!(again.canonical(), r.canonical());
            }

            /// `split_tag` splits as `parse` does: what it calls the tag of an accepted
            /// reference is that reference's tag.
            #[test]
            fn split_tag_agrees_with_parse(text in reference_like()) {
                if let Ok(r) = Reference::parse(&text) {
                    let (name, tag) = split_tag(&text);
                    prop_assert_eq!(tag.map(str::to_string), r.tag);
                    let again = Reference::parse(name).expect("the name of a reference parses");
                    prop_assert_eq!((again.registry, again.repository), (r.registry, r.repository));
                }
            }

            /// A registry named on its own is accepted exactly when an image under it is
            /// a reference that names its registry, and it is that registry.
            #[test]
            fn registries_agree_with_references(text in reference_like()) {
                let under = format!("{text}/img");
                let want = Reference::parse(&under).ok().filter(|_| names_registry(&under)).map(|r| r.registry);
                let got = parse_registry(&text).ok().map(|(host, _)| canonical_registry(&host).to_string());
                prop_assert_eq!(got, want, "{}", text);
            }

            /// `split_tag` and `is_loopback` never panic.
            #[test]
            fn split_tag_and_is_loopback_never_panic(text in prop_oneof![any::<String>(), reference_like()]) {
                let _ = split_tag(&text);
                let _ = is_loopback(&text);
            }
        }
    }
}
