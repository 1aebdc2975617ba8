//! External base images (`FROM busybox:1.31.1`): which manifest a tag stands for, per
//! platform, so that the digest enters the key and the build uses exactly that image.
//!
//! A tag is resolved to the **platform's manifest digest**: the tag's manifest is asked
//! for (HEAD, then GET by digest, so a tag moving in between cannot mix two images); an
//! index yields the child for the platform, a single manifest is checked against its
//! config. The places asked, in order: the mirrors of the reference's registry
//! (archfarm.yaml `registry_mirrors`, else the local engine's Docker Hub mirrors, asked
//! only when a lookup really happens), then the registry itself. A mirror that refuses,
//! fails, times out or lacks the tag (mirrors are partial) is passed over; its requests
//! get a short total deadline instead of the full retry budget.
//!
//! Answers are remembered in the store (`bases/<sha256 of reference and platform>.json`,
//! written atomically): a resolution for `base_ttl`, a failure for [`FAILURE_TTL`], so a
//! tree of many images asks once per (reference, platform) and `make load-x` asks nothing
//! while the cache is fresh. [`Mode::Refresh`] asks again now; [`Mode::Offline`] uses the
//! cache whatever its age and asks nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use crate::image::oci::{digest_of, DOCKER_LIST, OCI_INDEX};
use crate::image::oci::{IndexChild, IndexDoc};
use crate::image::platform::Platform;
use crate::image::reference::{Reference, DOCKER_HUB};
use crate::image::store::Store;
use crate::recipe::config::{Config, RegistryRef};
use crate::registry::Registry;
use crate::support::error::Result;

/// How long a failed resolution is remembered.
pub const FAILURE_TTL: Duration = Duration::from_secs(60);
/// The total time one mirror may take to answer one lookup (retries included).
pub const MIRROR_DEADLINE: Duration = Duration::from_secs(2);
/// How long asking the local engine for its mirrors may take.
pub const ENGINE_MIRRORS_DEADLINE: Duration = Duration::from_secs(3);
/// How many references are resolved at once.
pub const CONCURRENCY: usize = 8;

/// How the cache is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Fresh cache entries, else the registries.
    #[default]
    Normal,
    /// The registries now, whatever the cache holds (`--refresh-bases`).
    Refresh,
    /// Only the cache, whatever its age (`--offline`).
    Offline,
}

/// The Docker Hub mirrors the local engine reports; called at most once, and only when
/// a Docker Hub lookup is needed and archfarm.yaml names no mirrors.
pub type EngineMirrors<'a> = Box<dyn Fn() -> BoxFuture<'a, Vec<String>> + Send + Sync + 'a>;

/// The outcome for one (reference, platform): the digest, or why there is none.
pub type Resolution = std::result::Result<String, String>;

/// The pinned reference text for a base and the digest it was resolved to
/// (`busybox:1.31.1` -> `docker.io/library/busybox@sha256:...`): what a build uses FROM.
pub fn pinned_reference(base: &str, digest: &str) -> Result<String> {
    Ok(Reference::parse(base)?.pinned(digest))
}

/// Resolves unpinned external bases through mirrors and registries, with the store's cache.
pub struct Resolver<'a> {
    store: Store,
    cache_dir: PathBuf,
    ttl: Duration,
    mode: Mode,
    mirrors: Option<BTreeMap<String, Vec<String>>>,
    insecure: Vec<String>,
    engine_mirrors: EngineMirrors<'a>,
    engine_answer: tokio::sync::OnceCell<Vec<String>>,
    /// One client per host: one connection pool and one token cache for all lookups.
    clients: std::sync::Mutex<BTreeMap<String, Registry>>,
    /// Per host, asked once per run: whether it answers HTTP at all. A host that cannot
    /// be reached (no such name, no route, no answer) then fails every lookup at once
    /// instead of each one waiting out its own connection attempts.
    reachable: std::sync::Mutex<BTreeMap<String, Arc<Reachability>>>,
}

/// What a place has under the tag.
enum Found {
    /// An index: the answer for each platform asked.
    Index(Vec<Resolution>),
    /// One image manifest (this digest, at this registry): its config says its platform,
    /// so it is fetched, config and layers into the store, where later runs find them.
    Image(Registry, String),
}

/// One remembered answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Cached {
    reference: String,
    platform: String,
    /// Seconds since the epoch when it was asked.
    at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Where the answer came from (a mirror or the registry host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
}

impl Cached {
    /// The remembered answer if `mode` may use it at `now`.
    fn usable(&self, now: u64, ttl: Duration, mode: Mode) -> Option<Resolution> {
        let age = now.saturating_sub(self.at);
        match (mode, &self.digest, &self.error) {
            (Mode::Refresh, _, _) => None,
            (Mode::Offline, Some(d), _) => Some(Ok(d.clone())),
            (Mode::Offline, None, _) => None,
            (Mode::Normal, Some(d), _) if age < ttl.as_secs() => Some(Ok(d.clone())),
            (Mode::Normal, None, Some(e)) if age < FAILURE_TTL.as_secs() => {
                Some(Err(format!("{e} (remembered from {age} s ago; --refresh-bases asks again now)")))
            }
            _ => None,
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl<'a> Resolver<'a> {
    /// A resolver over `config`'s mirrors, TTL and the cache in `store`.
    pub fn new(config: &Config, store: Store, mode: Mode, engine_mirrors: EngineMirrors<'a>) -> Self {
        Resolver {
            cache_dir: store.root().join("bases"),
            store,
            ttl: config.base_ttl,
            mode,
            mirrors: config.registry_mirrors.clone(),
            insecure: config.insecure_registries.clone(),
            engine_mirrors,
            engine_answer: tokio::sync::OnceCell::new(),
            clients: Default::default(),
            reachable: Default::default(),
        }
    }

    /// Resolves every (reference as written, platform): distinct references concurrently
    /// (bounded), each reference's manifest fetched once for all its platforms.
    pub async fn resolve(&self, wanted: &BTreeSet<(String, Platform)>) -> BTreeMap<(String, Platform), Resolution> {
        // Grouped by canonical reference, so `busybox` and `docker.io/library/busybox`
        // are one lookup; references that do not parse are unresolved as they are.
        let mut groups: BTreeMap<Reference, BTreeSet<Platform>> = BTreeMap::new();
        let mut out = BTreeMap::new();
        let mut parsed = Vec::new();
        for (text, platform) in wanted {
            match Reference::parse(text) {
                Ok(r) => {
                    groups.entry(r.clone()).or_default().insert(platform.clone());
                    parsed.push((text, platform, r));
                }
                Err(e) => {
                    out.insert((text.clone(), platform.clone()), Err(e.message().to_string()));
                }
            }
        }
        let answers: BTreeMap<(Reference, Platform), Resolution> = stream::iter(groups)
            .map(|(reference, platforms)| async move {
                let platforms: Vec<Platform> = platforms.into_iter().collect();
                let answers = self.resolve_reference(&reference, &platforms).await;
                platforms.into_iter().zip(answers).map(|(p, r)| ((reference.clone(), p), r)).collect::<Vec<_>>()
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect();
        for (text, platform, reference) in parsed {
            let r = answers.get(&(reference, platform.clone())).cloned();
            out.insert(
                (text.clone(), platform.clone()),
                r.unwrap_or_else(|| Err(format!("internal: {text} was not resolved"))),
            );
        }
        out
    }

    /// One reference for its platforms, in the order given.
    async fn resolve_reference(&self, reference: &Reference, platforms: &[Platform]) -> Vec<Resolution> {
        let now = now_secs();
        let mut out: Vec<Option<Resolution>> = platforms
            .iter()
            .map(|p| self.read_cache(reference, p).and_then(|c| c.usable(now, self.ttl, self.mode)))
            .collect();
        let missing: Vec<Platform> =
            platforms.iter().zip(&out).filter(|(_, r)| r.is_none()).map(|(p, _)| p.clone()).collect();
        if missing.is_empty() {
            return out.into_iter().flatten().collect();
        }
        let answers: Vec<(Resolution, Option<String>)> = if self.mode == Mode::Offline {
            let why = |p: &Platform| {
                format!(
                    "base image {reference} for {p}: offline (--offline or ARCHFARM_OFFLINE=1) and the cache has no \
                     resolution of it; run once without --offline to resolve it"
                )
            };
            missing.iter().map(|p| (Err(why(p)), None)).collect()
        } else {
            let answers = self.ask(reference, &missing).await;
            for (p, (r, source)) in missing.iter().zip(&answers) {
                self.write_cache(reference, p, r, source.as_deref(), now);
            }
            answers
        };
        let mut answers = answers.into_iter();
        for slot in out.iter_mut().filter(|r| r.is_none()) {
            *slot = answers.next().map(|(r, _)| r);
        }
        out.into_iter().map(|r| r.unwrap_or_else(|| Err(format!("internal: {reference} was not resolved")))).collect()
    }

    /// The places to ask for `registry`, in order: mirrors, then the registry's API host.
    async fn places(&self, reference: &Reference) -> Vec<(String, bool)> {
        let mirrors: Vec<String> = match &self.mirrors {
            Some(m) => m.get(&reference.registry).cloned().unwrap_or_default(),
            None if reference.registry == DOCKER_HUB => self
                .engine_answer
                .get_or_init(|| async {
                    tokio::time::timeout(ENGINE_MIRRORS_DEADLINE, (self.engine_mirrors)()).await.unwrap_or_default()
                })
                .await
                .clone(),
            None => Vec::new(),
        };
        // The engine writes mirrors as URLs (`http://127.0.0.1:5096/`): keep the host.
        let host = |m: String| RegistryRef::parse(&m, &self.insecure).map(|r| r.host).unwrap_or(m);
        let mut places: Vec<(String, bool)> = mirrors.into_iter().map(|m| (host(m), true)).collect();
        places.push((reference.api_host().to_string(), false));
        places
    }

    /// Asks each place in turn; the first that has the tag decides. Each answer carries
    /// the place it came from (for the cache).
    async fn ask(&self, reference: &Reference, platforms: &[Platform]) -> Vec<(Resolution, Option<String>)> {
        let mut tried = Vec::new();
        for (host, mirror) in self.places(reference).await {
            let label = if mirror { format!("{host} (mirror)") } else { host.clone() };
            let lookup = self.lookup(&host, reference, platforms);
            let found = if mirror {
                match tokio::time::timeout(MIRROR_DEADLINE, lookup).await {
                    Ok(r) => r,
                    Err(_) => Err(format!(
                        "no usable answer within {} s (refused, failing or slow; a mirror gets a short deadline)",
                        MIRROR_DEADLINE.as_secs()
                    )),
                }
            } else {
                lookup.await
            };
            match found {
                Ok(Some(Found::Index(answers))) => {
                    return answers.into_iter().map(|r| (r, Some(label.clone()))).collect();
                }
                Ok(Some(Found::Image(registry, digest))) => {
                    // Outside the mirror's deadline: layers take the time they take.
                    let mut out = Vec::new();
                    for p in platforms {
                        let r = registry
                            .fetch_image(&self.store, &reference.repository, &digest, p)
                            .await
                            .map(|d| d.digest)
                            .map_err(|e| format!("base image {reference} for {p}: {}", e.message()));
                        out.push((r, Some(label.clone())));
                    }
                    return out;
                }
                Ok(None) => tried.push(format!("{label}: not found")),
                Err(e) => tried.push(format!("{label}: {e}")),
            }
        }
        let reason =
            |p: &Platform| format!("base image {reference} for {p} could not be resolved; tried {}", tried.join("; "));
        platforms.iter().map(|p| (Err(reason(p)), None)).collect()
    }

    /// One place: `Ok(None)` when it does not have the tag.
    async fn lookup(
        &self,
        host: &str,
        reference: &Reference,
        platforms: &[Platform],
    ) -> std::result::Result<Option<Found>, String> {
        let registry = self.client(host)?;
        self.reach(host, &registry).await?;
        let repo = &reference.repository;
        let Some(head) = registry.manifest_head(repo, reference.lookup()).await.map_err(|e| short(&e))? else {
            return Ok(None);
        };
        if head.media_type != OCI_INDEX && head.media_type != DOCKER_LIST {
            return Ok(Some(Found::Image(registry, head.digest)));
        }
        let (_, bytes) = registry.get_manifest(repo, &head.digest).await.map_err(|e| short(&e))?;
        let index: IndexDoc = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{host}/{repo}: index {} is not valid: {e}", digest_of(&bytes)))?;
        Ok(Some(Found::Index(
            platforms
                .iter()
                .map(|p| {
                    select_child(&index, p).map(|c| c.digest.clone()).map_err(|have| {
                        format!(
                            "base image {reference} has no image for {p} (at {host}; it has {}); use a base that \
                             has {p} or drop {p} for this image",
                            if have.is_empty() { "none".to_string() } else { have.join(", ") }
                        )
                    })
                })
                .collect(),
        )))
    }

    /// Whether `host` answers HTTP at all (any status counts), asked once per run.
    async fn reach(&self, host: &str, registry: &Registry) -> std::result::Result<(), String> {
        let cell = {
            let mut map = self.reachable.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(map.entry(host.to_string()).or_default())
        };
        cell.get_or_init(|| async {
            match registry.check().await {
                Err(e) if is_unreachable(e.message()) => Err(short(&e)),
                _ => Ok(()),
            }
        })
        .await
        .clone()
    }

    /// The client for `host` (loopback hosts and `insecure_registries` over plain HTTP).
    fn client(&self, host: &str) -> std::result::Result<Registry, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(host) {
            return Ok(c.clone());
        }
        let c = RegistryRef::parse(host, &self.insecure)
            .and_then(|r| Registry::new(&r))
            .map_err(|e| e.message().to_string())?;
        clients.insert(host.to_string(), c.clone());
        Ok(c)
    }

    fn cache_path(&self, reference: &Reference, platform: &Platform) -> PathBuf {
        let id = digest_of(format!("{}\n{platform}", reference.canonical()).as_bytes());
        self.cache_dir.join(format!("{}.json", id.trim_start_matches("sha256:")))
    }

    /// The remembered answer; a missing, unreadable or foreign entry is none.
    fn read_cache(&self, reference: &Reference, platform: &Platform) -> Option<Cached> {
        let bytes = std::fs::read(self.cache_path(reference, platform)).ok()?;
        let c: Cached = serde_json::from_slice(&bytes).ok()?;
        (c.reference == reference.canonical() && c.platform == platform.to_string()).then_some(c)
    }

    /// Remembers an answer; a store that cannot be written only costs a lookup next time.
    fn write_cache(&self, reference: &Reference, platform: &Platform, r: &Resolution, source: Option<&str>, at: u64) {
        let entry = Cached {
            reference: reference.canonical(),
            platform: platform.to_string(),
            at,
            digest: r.as_ref().ok().cloned(),
            error: r.as_ref().err().cloned(),
            source: source.map(str::to_string),
        };
        let bytes = serde_json::to_vec_pretty(&entry).expect("cache entry serializes");
        let path = self.cache_path(reference, platform);
        let options = crate::support::fs::WriteOptions::temp_in(self.store.tmp_dir());
        if let Err(e) = crate::support::fs::write_atomically(&path, &bytes, options) {
            tracing::debug!("base resolution of {reference} for {platform} not cached: {}", e.message());
        }
    }
}

/// A registry error without the memo lookup's "not a miss" explanation and the hint about
/// starting archfarm's own registry: both are about the publishing registry, not bases.
/// Whether a host answers HTTP, found out once.
type Reachability = tokio::sync::OnceCell<std::result::Result<(), String>>;

/// A registry error that says the host gave no HTTP answer at all.
fn is_unreachable(message: &str) -> bool {
    ["cannot connect", "timed out", "connection reset", "no answer"].iter().any(|m| message.contains(m))
}

fn short(e: &crate::support::error::Error) -> String {
    let m = e.message();
    let m = m.split("; treated as an error, not a miss").next().unwrap_or_default();
    m.split("; is it running?").next().unwrap_or_default().to_string()
}

/// The child of `index` for `want`: an exact platform match first, else one whose
/// missing or `v8` variant means the same (`linux/arm64` is `linux/arm64/v8`); otherwise
/// the platforms it has (attestation entries, `unknown/unknown`, left out).
pub fn select_child<'i>(index: &'i IndexDoc, want: &Platform) -> std::result::Result<&'i IndexChild, Vec<String>> {
    let children: Vec<(Platform, &IndexChild)> = index
        .manifests
        .iter()
        .filter_map(|c| {
            let p = c.platform.as_ref()?;
            let p = Platform { os: p.os.clone(), architecture: p.architecture.clone(), variant: p.variant.clone() };
            Some((p, c))
        })
        .filter(|(p, _)| p.os != "unknown")
        .collect();
    let same = |have: &Platform| {
        have.os == want.os
            && have.architecture == want.architecture
            && match (&want.variant, &have.variant) {
                (a, b) if a == b => true,
                (None, Some(v)) | (Some(v), None) => want.architecture == "arm64" && v == "v8",
                _ => false,
            }
    };
    children
        .iter()
        .find(|(p, _)| p == want)
        .or_else(|| children.iter().find(|(p, _)| same(p)))
        .map(|(_, c)| *c)
        .ok_or_else(|| children.iter().map(|(p, _)| p.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(text: &str) -> Platform {
        let mut parts = text.split('/');
        Platform {
            os: parts.next().unwrap().into(),
            architecture: parts.next().unwrap().into(),
            variant: parts.next().map(str::to_string),
        }
    }

    fn index(children: &[(&str, &str)]) -> IndexDoc {
        let manifests: Vec<serde_json::Value> = children
            .iter()
            .map(|(p, d)| {
                let p = platform(p);
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": 1,
                    "platform": {"os": p.os, "architecture": p.architecture, "variant": p.variant},
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "manifests": manifests })).unwrap()
    }

    fn pick(index: &IndexDoc, want: &str) -> std::result::Result<String, Vec<String>> {
        select_child(index, &platform(want)).map(|c| c.digest.clone())
    }

    #[test]
    fn index_child_for_each_platform() {
        let i = index(&[
            ("linux/amd64", "a"),
            ("linux/arm64/v8", "b"),
            ("linux/arm/v7", "c"),
            ("linux/arm/v6", "d"),
            ("unknown/unknown", "attestation"),
        ]);
        assert_eq!(pick(&i, "linux/amd64").unwrap(), "a");
        assert_eq!(pick(&i, "linux/arm64").unwrap(), "b", "arm64 is arm64/v8");
        assert_eq!(pick(&i, "linux/arm64/v8").unwrap(), "b");
        assert_eq!(pick(&i, "linux/arm/v7").unwrap(), "c");
        let have = pick(&i, "linux/s390x").unwrap_err();
        assert_eq!(have, ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6"]);
        // arm/v7 never takes another arm variant; an exact match beats a loose one.
        assert!(pick(&index(&[("linux/arm/v6", "d")]), "linux/arm/v7").is_err());
        let both = index(&[("linux/arm64/v8", "loose"), ("linux/arm64", "exact")]);
        assert_eq!(pick(&both, "linux/arm64").unwrap(), "exact");
        let plain = index(&[("linux/arm64", "e")]);
        assert_eq!(pick(&plain, "linux/arm64/v8").unwrap(), "e");
    }

    fn cached(at: u64, digest: Option<&str>, error: Option<&str>) -> Cached {
        Cached {
            reference: "docker.io/library/busybox:1".into(),
            platform: "linux/amd64".into(),
            at,
            digest: digest.map(str::to_string),
            error: error.map(str::to_string),
            source: None,
        }
    }

    #[test]
    fn cache_expiry_by_mode_with_an_injected_clock() {
        let ttl = Duration::from_secs(3600);
        let ok = cached(1000, Some("sha256:d"), None);
        assert_eq!(ok.usable(1000 + 3599, ttl, Mode::Normal), Some(Ok("sha256:d".into())));
        assert_eq!(ok.usable(1000 + 3600, ttl, Mode::Normal), None, "expired at the TTL");
        assert_eq!(ok.usable(1001, ttl, Mode::Refresh), None, "refresh ignores the cache");
        assert_eq!(ok.usable(1000 + 10 * 86400, ttl, Mode::Offline), Some(Ok("sha256:d".into())), "offline: any age");
        // A clock that went back is not an error: the entry is simply young.
        assert_eq!(ok.usable(10, ttl, Mode::Normal), Some(Ok("sha256:d".into())));
    }

    #[test]
    fn failures_are_remembered_briefly() {
        let ttl = Duration::from_secs(3600);
        let failed = cached(1000, None, Some("not found anywhere"));
        let r = failed.usable(1059, ttl, Mode::Normal).unwrap().unwrap_err();
        assert!(r.contains("not found anywhere") && r.contains("59 s ago"), "{r}");
        assert_eq!(failed.usable(1060, ttl, Mode::Normal), None, "asked again after a minute");
        assert_eq!(failed.usable(1001, ttl, Mode::Refresh), None);
        assert_eq!(failed.usable(1001, ttl, Mode::Offline), None, "offline: a failure is not a resolution");
    }

    fn resolver(dir: &std::path::Path, mode: Mode) -> Resolver<'static> {
        let config = Config::load(dir, &crate::recipe::config::Overrides::default()).unwrap();
        let store = Store::open(&dir.join("store")).unwrap();
        Resolver::new(&config, store, mode, Box::new(|| Box::pin(async { Vec::new() })))
    }

    #[test]
    fn cache_round_trip_is_per_reference_and_platform() {
        let dir = tempfile::tempdir().unwrap();
        let r = resolver(dir.path(), Mode::Normal);
        let busybox = Reference::parse("busybox:1").unwrap();
        let amd64 = platform("linux/amd64");
        r.write_cache(&busybox, &amd64, &Ok("sha256:d".into()), Some("m"), 5);
        let c = r.read_cache(&Reference::parse("docker.io/library/busybox:1").unwrap(), &amd64).unwrap();
        assert_eq!(c, Cached { source: Some("m".into()), ..cached(5, Some("sha256:d"), None) });
        assert!(r.read_cache(&busybox, &platform("linux/arm64")).is_none());
        assert!(r.read_cache(&Reference::parse("busybox:2").unwrap(), &amd64).is_none());
        std::fs::write(r.cache_path(&busybox, &amd64), b"{ not json").unwrap();
        assert!(r.read_cache(&busybox, &amd64).is_none(), "a damaged entry is a miss, not an error");
    }

    #[tokio::test]
    async fn offline_names_the_base_it_lacks_and_asks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let r = resolver(dir.path(), Mode::Offline);
        let amd64 = platform("linux/amd64");
        let wanted = BTreeSet::from([
            ("busybox:1".to_string(), amd64.clone()),
            ("docker.io/library/busybox:1".to_string(), amd64.clone()),
            ("Busybox".to_string(), amd64.clone()),
        ]);
        let out = r.resolve(&wanted).await;
        assert_eq!(out.len(), 3, "every spelling gets its answer: {out:?}");
        for text in ["busybox:1", "docker.io/library/busybox:1"] {
            let why = out[&(text.to_string(), amd64.clone())].clone().unwrap_err();
            assert!(why.contains("docker.io/library/busybox:1 for linux/amd64") && why.contains("offline"), "{why}");
        }
        let why = out[&("Busybox".to_string(), amd64.clone())].clone().unwrap_err();
        assert!(why.contains("uppercase"), "{why}");
        // A cached resolution serves every spelling of the reference, at any age offline.
        r.write_cache(&Reference::parse("busybox:1").unwrap(), &amd64, &Ok("sha256:d".into()), None, 1);
        let out = r.resolve(&wanted).await;
        assert_eq!(out[&("docker.io/library/busybox:1".to_string(), amd64.clone())], Ok("sha256:d".to_string()));
        std::fs::remove_dir_all(dir.path().join("store/bases")).unwrap();
        assert!(!dir.path().join("store/bases").exists(), "offline writes nothing");
    }

    #[test]
    fn pinned_reference_text() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(pinned_reference("busybox:1.31.1", &d).unwrap(), format!("docker.io/library/busybox@{d}"));
        assert_eq!(pinned_reference("127.0.0.1:5000/x/y:t", &d).unwrap(), format!("127.0.0.1:5000/x/y@{d}"));
        assert_eq!(pinned_reference("Bad", &d).unwrap_err().exit_code(), 2);
    }
}
