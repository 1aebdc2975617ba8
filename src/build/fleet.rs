//! The builder fleet: the Docker engines archfarm builds on (`builders:` in
//! archfarm.yaml; without it, one builder `local`, the engine of `DOCKER_HOST`).
//!
//! Routing: a job goes to a healthy builder that runs its platform natively, failing
//! that to one that can emulate it; among those, to the one with the largest share of
//! free slots (free / jobs). A builder that stops answering is marked unhealthy and
//! the job is retried elsewhere; a build whose recipe fails is not (the retry loop is
//! the engine backend's, `build::engine_backend`; the fleet hands it a [`Lease`] on the
//! chosen builder). A job whose emulated step QEMU crashed asks for a native builder
//! only ([`Wants::native`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use serde::Serialize;
use tokio::sync::{Notify, OnceCell};

use crate::build::binfmt;
use crate::engine::Engine;
use crate::support::error::{Error, Result};

use crate::image::platform::{ArchTable, Platform};
use crate::recipe::builders::{parse_endpoint, BuildKitMode, BuilderSpec, Endpoint, DEFAULT_BUILDER};

/// Native or emulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    Native,
    Emulated,
}

/// Where a job was built.
#[derive(Debug, Clone)]
pub struct Placement {
    pub builder: String,
    pub route: Route,
    /// The version its engine reported, for the provenance.
    pub engine_version: Option<String>,
}

/// What a job needs of a builder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wants<'a> {
    /// The image's platform (its target stage runs on it).
    pub platform: &'a Platform,
    /// The platform its cross stages run on (BUILDPLATFORM), when it is pinned.
    pub build_platform: Option<&'a Platform>,
    /// The recipe needs BuildKit (RUN --mount, secrets).
    pub buildkit: bool,
    /// Only a builder that runs `platform` natively will do (the emulator failed it).
    pub native: bool,
}

/// What a probe of a builder found.
#[derive(Debug, Clone, Serialize)]
pub struct BuilderStatus {
    pub name: String,
    pub endpoint: String,
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub jobs: usize,
    pub native: Vec<String>,
    /// `declared` or `engine`.
    pub native_from: String,
    pub emulates: Vec<String>,
    /// `binfmt` (this machine's handlers, plus any declared) or `declared`.
    pub emulates_from: String,
    /// Whether builds there use BuildKit (null when the builder did not answer).
    pub buildkit: Option<bool>,
    /// The configured `buildkit:` (auto, true, false).
    pub buildkit_mode: BuildKitMode,
    /// For each platform it emulates, the version of the QEMU that emulates it on this
    /// machine ([`binfmt::qemu_version`]); null when it cannot be read, and for builders
    /// on other machines (whose QEMU archfarm does not see).
    pub qemu_versions: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Default)]
struct Facts {
    version: Option<String>,
    native: Vec<Platform>,
    native_from: &'static str,
    emulates: Vec<Platform>,
    emulates_from: &'static str,
    /// Builds there use BuildKit.
    buildkit: bool,
}

impl Facts {
    fn runs(&self, p: &Platform) -> bool {
        self.native.contains(p) || self.emulates.contains(p)
    }
}

struct Builder {
    spec: BuilderSpec,
    jobs: usize,
    deadline: Duration,
    engine: OnceCell<std::result::Result<Engine, String>>,
    facts: OnceCell<Facts>,
    bridge: Mutex<Option<SshBridge>>,
    /// Listed in the configuration (not the implicit `local`).
    listed: bool,
}

#[derive(Debug, Default, Clone)]
struct Slot {
    running: usize,
    /// Why the builder is out of the fleet for this run.
    unhealthy: Option<String>,
}

/// The engines of one run.
pub struct Fleet {
    builders: Vec<Builder>,
    slots: Mutex<Vec<Slot>>,
    changed: Notify,
    arches: ArchTable,
    host: Option<Platform>,
    probed: OnceCell<()>,
}

/// How long a listed builder gets to answer ([`crate::support::env::BUILDER_TIMEOUT`]).
pub fn builder_deadline() -> Duration {
    crate::support::env::BUILDER_TIMEOUT.duration()
}

impl Fleet {
    /// The configured builders, or the single `local` builder. Connects to nothing yet.
    pub fn new(specs: &[BuilderSpec], default_jobs: usize, arches: &ArchTable) -> Fleet {
        let mut builders = Vec::new();
        if specs.is_empty() {
            let endpoint_text = std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
            let endpoint = parse_endpoint(&endpoint_text, None).unwrap_or(Endpoint::Tcp {
                // An endpoint we cannot parse fails at connection with the engine's own message.
                addr: endpoint_text.clone(),
                tls: None,
            });
            let spec = BuilderSpec {
                name: DEFAULT_BUILDER.into(),
                endpoint_text,
                endpoint,
                platforms: None,
                emulates: Vec::new(),
                jobs: None,
                buildkit: BuildKitMode::Auto,
            };
            builders.push(Builder::new(spec, default_jobs, crate::engine::deadline(), false));
        } else {
            for s in specs {
                builders.push(Builder::new(s.clone(), default_jobs, builder_deadline(), true));
            }
        }
        let slots = Mutex::new(vec![Slot::default(); builders.len()]);
        Fleet {
            builders,
            slots,
            changed: Notify::new(),
            arches: arches.clone(),
            host: arches.host().ok(),
            probed: OnceCell::new(),
        }
    }

    /// The most builds at once over the whole fleet.
    pub fn capacity(&self) -> usize {
        self.builders.iter().map(|b| b.jobs).sum()
    }

    /// Connects to every builder at once (each within its deadline) and learns what it
    /// runs; builders that do not answer are unhealthy for this run. Done once.
    async fn probe(&self) {
        self.probed
            .get_or_init(|| async {
                let results = futures::future::join_all(self.builders.iter().map(|b| b.facts(self))).await;
                let mut slots = self.slots.lock().expect("fleet lock");
                for (slot, r) in slots.iter_mut().zip(results) {
                    if let Err(e) = r {
                        slot.unhealthy = Some(e);
                    }
                }
            })
            .await;
    }

    /// Every builder's health, version and platforms (`archfarm builders`).
    pub async fn status(&self) -> Vec<BuilderStatus> {
        self.probe().await;
        let local: Vec<Platform> = {
            let mut v: Vec<Platform> = self
                .builders
                .iter()
                .filter(|b| b.spec.on_this_machine())
                .filter_map(|b| b.facts.get())
                .flat_map(|f| f.emulates.iter().cloned())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let versions = futures::future::join_all(local.iter().map(|p| binfmt::qemu_version(&self.arches, p))).await;
        let versions: BTreeMap<&Platform, Option<String>> = local.iter().zip(versions).collect();
        let slots = self.slots.lock().expect("fleet lock").clone();
        self.builders
            .iter()
            .zip(slots)
            .map(|(b, slot)| {
                let f = b.facts.get().cloned().unwrap_or_default();
                let names = |v: &[Platform]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
                let declared_native = b.spec.platforms.as_ref().map(|p| names(p));
                BuilderStatus {
                    name: b.spec.name.clone(),
                    endpoint: b.spec.endpoint_text.clone(),
                    healthy: slot.unhealthy.is_none(),
                    error: slot.unhealthy,
                    version: f.version,
                    jobs: b.jobs,
                    native: declared_native.unwrap_or_else(|| names(&f.native)),
                    native_from: if b.spec.platforms.is_some() { "declared" } else { "engine" }.into(),
                    emulates: if b.facts.get().is_some() { names(&f.emulates) } else { names(&b.spec.emulates) },
                    emulates_from: if b.spec.on_this_machine() { "binfmt" } else { "declared" }.into(),
                    buildkit: b.facts.get().map(|f| f.buildkit),
                    buildkit_mode: b.spec.buildkit,
                    qemu_versions: f
                        .emulates
                        .iter()
                        .map(|p| {
                            let v = if b.spec.on_this_machine() { versions.get(p).cloned().flatten() } else { None };
                            (p.to_string(), v)
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// A builder whose TLS files are missing, or configured `buildkit: true` while its
    /// engine has no BuildKit: a configuration error (exit 2) naming it, known once the
    /// fleet was probed (a run that builds nothing never probes).
    pub(crate) fn configuration_error(&self) -> Option<Error> {
        self.probed.get()?;
        if let Some(e) = self.builders.iter().find_map(|b| b.spec.missing_tls_file()) {
            return Some(e);
        }
        self.builders.iter().filter(|b| b.spec.buildkit == BuildKitMode::True).find_map(|b| {
            b.facts.get().is_some_and(|f| !f.buildkit).then(|| {
                Error::usage(format!(
                    "builder {} ({}) has `buildkit: true`, but its engine offers no BuildKit; \
                     set `buildkit: auto` or `false` for it in the configuration",
                    b.spec.name, b.spec.endpoint_text
                ))
            })
        })
    }

    /// Takes a slot for a build on the best builder not in `tried`, waiting while the
    /// right builders are all busy. Fails when no healthy builder can build it at all.
    pub(crate) async fn acquire(&self, wants: Wants<'_>, tried: &[usize]) -> Result<Lease<'_>> {
        self.probe().await;
        if let Some(e) = self.configuration_error() {
            return Err(e);
        }
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut slots = self.slots.lock().expect("fleet lock");
                match self.choose(&slots, wants, tried) {
                    Choice::Take(i, route, reason) => {
                        slots[i].running += 1;
                        return Ok(Lease { fleet: self, index: i, route, reason });
                    }
                    Choice::Wait => {}
                    Choice::Nowhere(why) => {
                        let what = match wants.build_platform {
                            _ if wants.native => format!("no healthy builder runs {} natively", wants.platform),
                            Some(b) if b != wants.platform => {
                                format!("no healthy builder runs {b} (its cross stages) and {}", wants.platform)
                            }
                            _ => format!("no healthy builder runs {} natively or can emulate it", wants.platform),
                        };
                        let bk = if wants.buildkit { " with BuildKit" } else { "" };
                        return Err(Error::failure(format!("could not be placed: {what}{bk} ({why})")));
                    }
                }
            }
            notified.await;
        }
    }

    /// The builder for `wants`: among those that can run every platform it needs (and
    /// BuildKit when it needs it), the ones that run its primary platform natively (the
    /// cross stages' platform when pinned, else the image's), else those that emulate it.
    fn choose(&self, slots: &[Slot], wants: Wants<'_>, tried: &[usize]) -> Choice {
        let platform = wants.platform;
        let primary = wants.build_platform.unwrap_or(platform);
        let usable = |i: usize| slots[i].unhealthy.is_none() && !tried.contains(&i);
        let facts = |i: usize| self.builders[i].facts.get();
        let fits = |f: &Facts| f.runs(platform) && f.runs(primary) && (f.buildkit || !wants.buildkit);
        let eligible: Vec<usize> =
            (0..self.builders.len()).filter(|&i| usable(i) && facts(i).is_some_and(fits)).collect();
        let pool = if wants.native {
            eligible.into_iter().filter(|&i| facts(i).is_some_and(|f| f.native.contains(platform))).collect()
        } else {
            let native: Vec<usize> =
                eligible.iter().copied().filter(|&i| facts(i).is_some_and(|f| f.native.contains(primary))).collect();
            if native.is_empty() {
                eligible
            } else {
                native
            }
        };
        if pool.is_empty() {
            let why = (0..self.builders.len())
                .map(|i| {
                    let b = &self.builders[i];
                    let state = if let Some(u) = &slots[i].unhealthy {
                        format!("unhealthy: {u}")
                    } else if tried.contains(&i) {
                        "already failed this job".to_string()
                    } else {
                        let f = facts(i).cloned().unwrap_or_default();
                        let bk = if wants.buildkit && !f.buildkit { ", no BuildKit" } else { "" };
                        format!("runs {}, emulates {}{bk}", list(&f.native), list(&f.emulates))
                    };
                    format!("{}: {state}", b.spec.name)
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Choice::Nowhere(why);
        }
        let free = |i: usize| self.builders[i].jobs.saturating_sub(slots[i].running);
        // The largest share of free slots; ties go to the builder listed first.
        let best = pool.iter().copied().filter(|&i| free(i) > 0).max_by(|&a, &b| {
            let (fa, fb) = (free(a) * self.builders[b].jobs, free(b) * self.builders[a].jobs);
            fa.cmp(&fb).then(b.cmp(&a))
        });
        let Some(i) = best else { return Choice::Wait };
        let b = &self.builders[i];
        let f = facts(i).cloned().unwrap_or_default();
        let route = if f.native.contains(platform) { Route::Native } else { Route::Emulated };
        let mut how = match route {
            Route::Native => format!("runs {platform} natively (native: {}, {})", list(&f.native), f.native_from),
            Route::Emulated => format!(
                "no healthy builder runs {platform} natively; it emulates it (emulates: {}, {})",
                list(&f.emulates),
                f.emulates_from
            ),
        };
        if primary != platform {
            let cross = if f.native.contains(primary) { "natively" } else { "emulated" };
            how.push_str(&format!("; its cross stages run on {primary}, {cross}"));
        }
        let loads = pool
            .iter()
            .map(|&j| format!("{} {}/{} free", self.builders[j].spec.name, free(j), self.builders[j].jobs))
            .collect::<Vec<_>>()
            .join(", ");
        let reason = format!(
            "routed to builder {} ({}): {how}; most free capacity among [{loads}]",
            b.spec.name, b.spec.endpoint_text
        );
        Choice::Take(i, route, reason)
    }

    fn mark_unhealthy(&self, index: usize, why: &str) {
        let mut slots = self.slots.lock().expect("fleet lock");
        slots[index].unhealthy.get_or_insert_with(|| why.to_string());
        drop(slots);
        self.changed.notify_waiters();
    }
}

enum Choice {
    Take(usize, Route, String),
    Wait,
    Nowhere(String),
}

fn list(v: &[Platform]) -> String {
    if v.is_empty() {
        "nothing".into()
    } else {
        v.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// A taken build slot; released on drop.
pub(crate) struct Lease<'a> {
    fleet: &'a Fleet,
    pub(crate) index: usize,
    pub(crate) route: Route,
    pub(crate) reason: String,
}

impl Lease<'_> {
    fn chosen(&self) -> &Builder {
        &self.fleet.builders[self.index]
    }

    /// The builder's configured name.
    pub(crate) fn builder(&self) -> &str {
        &self.chosen().spec.name
    }

    /// The builder's engine (connected when the fleet was probed).
    pub(crate) async fn engine(&self) -> Result<&Engine> {
        self.chosen().engine().await
    }

    /// How long the builder gets to answer a ping.
    pub(crate) fn deadline(&self) -> Duration {
        self.chosen().deadline
    }

    /// Builds there use BuildKit.
    pub(crate) fn buildkit(&self) -> bool {
        self.chosen().facts.get().is_some_and(|f| f.buildkit)
    }

    /// The version the builder's engine reported when it was probed.
    pub(crate) fn engine_version(&self) -> Option<String> {
        self.chosen().facts.get().and_then(|f| f.version.clone())
    }

    /// The builder is an engine of this machine, which emulates with this machine's QEMU.
    pub(crate) fn on_this_machine(&self) -> bool {
        self.chosen().spec.on_this_machine()
    }

    /// The first platform the builder runs natively.
    pub(crate) fn native(&self) -> Option<&Platform> {
        self.chosen().facts.get().and_then(|f| f.native.first())
    }

    /// Takes the builder out of the fleet for the rest of the run.
    pub(crate) fn mark_unhealthy(&self, why: &str) {
        self.fleet.mark_unhealthy(self.index, why);
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut slots = self.fleet.slots.lock().expect("fleet lock");
        slots[self.index].running -= 1;
        drop(slots);
        self.fleet.changed.notify_waiters();
    }
}

impl Builder {
    fn new(spec: BuilderSpec, default_jobs: usize, deadline: Duration, listed: bool) -> Builder {
        let jobs = spec.jobs.unwrap_or(default_jobs);
        Builder {
            spec,
            jobs,
            deadline,
            engine: OnceCell::new(),
            facts: OnceCell::new(),
            bridge: Mutex::new(None),
            listed,
        }
    }

    async fn engine(&self) -> Result<&Engine> {
        let r = self
            .engine
            .get_or_init(|| async {
                if let Some(e) = self.spec.missing_tls_file() {
                    return Err(e.message().to_string());
                }
                self.connect().await.map_err(|e| format!("builder {}: {}", self.spec.name, e.message()))
            })
            .await;
        r.as_ref().map_err(|m| Error::failure(m.clone()))
    }

    async fn connect(&self) -> Result<Engine> {
        let text = &self.spec.endpoint_text;
        if self.listed {
            // A listed builder: the hint is about the configuration, not DOCKER_HOST.
            let r = self.connect_endpoint(text).await;
            return r.map_err(|e| {
                Error::failure(format!(
                    "{}; start that engine or fix builder {} in the configuration",
                    e.message(),
                    self.spec.name
                ))
            });
        }
        Engine::connect_to(text, self.deadline).await
    }

    async fn connect_endpoint(&self, text: &str) -> Result<Engine> {
        match &self.spec.endpoint {
            Endpoint::Unix(_) | Endpoint::Tcp { tls: None, .. } => {
                Engine::connect_client(crate::engine::client_for(text)?, text, self.deadline)
                    .await?
                    .with_raw_endpoint(text)
            }
            Endpoint::Tcp { addr, tls: Some(t) } => {
                // reqwest already links rustls with aws-lc-rs; bollard needs a process default.
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                let docker = Docker::connect_with_ssl(
                    &format!("https://{addr}"),
                    &t.key,
                    &t.cert,
                    &t.ca,
                    120,
                    bollard::API_DEFAULT_VERSION,
                )
                .map_err(|e| Error::failure(format!("setting up TLS to {text}: {e}")))?;
                Engine::connect_client(docker, text, self.deadline).await?.with_tls_files(&t.ca, &t.cert, &t.key)
            }
            Endpoint::Ssh { destination, port, .. } => {
                let bridge = SshBridge::start(destination, *port)?;
                let docker = Docker::connect_with_unix(
                    &format!("unix://{}", bridge.socket.display()),
                    120,
                    bollard::API_DEFAULT_VERSION,
                )
                .map_err(|e| Error::failure(format!("connecting to the ssh bridge of {text}: {e}")))?;
                let stderr = Arc::clone(&bridge.stderr);
                let socket = format!("unix://{}", bridge.socket.display());
                *self.bridge.lock().expect("bridge lock") = Some(bridge);
                let engine = Engine::connect_client(docker, text, self.deadline).await.map_err(|e| {
                    let said = stderr.lock().expect("stderr lock").trim().to_string();
                    if said.is_empty() {
                        e
                    } else {
                        e.context(format!("ssh said: {said}"))
                    }
                })?;
                engine.with_raw_endpoint(&socket)
            }
        }
    }

    /// Connects and learns the engine's version, native and emulated platforms.
    async fn facts(&self, fleet: &Fleet) -> std::result::Result<(), String> {
        let engine = self.engine().await.map_err(|e| e.message().to_string())?;
        let (version, arch) = engine.version_and_arch().await.map_err(|e| e.message().to_string())?;
        let (native, native_from) = match &self.spec.platforms {
            Some(p) => (p.clone(), "declared in the configuration"),
            None => match fleet.arches.parse_platform(&arch) {
                Ok(p) => (vec![p], "as the engine reports"),
                Err(_) => (Vec::new(), "as the engine reports"),
            },
        };
        let mut emulates = self.spec.emulates.clone();
        let emulates_from = if self.spec.on_this_machine() {
            for p in binfmt::usable_platforms(&fleet.arches, fleet.host.as_ref()) {
                if !emulates.contains(&p) {
                    emulates.push(p);
                }
            }
            "this machine's binfmt handlers"
        } else {
            "declared in the configuration"
        };
        emulates.retain(|p| !native.contains(p));
        let buildkit = match self.spec.buildkit {
            BuildKitMode::False => false,
            BuildKitMode::Auto | BuildKitMode::True => {
                engine.buildkit_available().await.map_err(|e| e.message().to_string())?
            }
        };
        let _ =
            self.facts.set(Facts { version: Some(version), native, native_from, emulates, emulates_from, buildkit });
        Ok(())
    }
}

/// `docker -H ssh://…` without the docker CLI's help: a private unix socket whose every
/// connection is bridged to `ssh [-p port] destination docker system dial-stdio`.
struct SshBridge {
    socket: PathBuf,
    stderr: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl SshBridge {
    fn start(destination: &str, port: Option<u16>) -> Result<SshBridge> {
        let dir = tempfile::Builder::new()
            .prefix("archfarm-ssh-")
            .tempdir()
            .map_err(|e| Error::failure(format!("creating a folder for the ssh bridge: {e}")))?;
        let socket = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket)
            .map_err(|e| Error::io("listening on the ssh bridge socket", &socket, e))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut args: Vec<String> = vec!["-o".into(), "BatchMode=yes".into()];
        if let Some(p) = port {
            args.extend(["-p".into(), p.to_string()]);
        }
        args.extend([destination.to_string(), "docker".into(), "system".into(), "dial-stdio".into()]);
        let said = Arc::clone(&stderr);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let args = args.clone();
                let said = Arc::clone(&said);
                tokio::spawn(async move { bridge_one(conn, &args, &said).await });
            }
        });
        Ok(SshBridge { socket, stderr, task, _dir: dir })
    }
}

impl Drop for SshBridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn bridge_one(conn: tokio::net::UnixStream, args: &[String], said: &Mutex<String>) {
    use tokio::io::AsyncReadExt;
    let child = tokio::process::Command::new("ssh")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            *said.lock().expect("stderr lock") = format!("cannot run ssh: {e}");
            return;
        }
    };
    let (Some(mut stdin), Some(mut stdout), Some(mut err)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return;
    };
    let (mut r, mut w) = conn.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut r, &mut stdin).await;
        drop(stdin);
    };
    let down = async {
        let _ = tokio::io::copy(&mut stdout, &mut w).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
    };
    let errs = async {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text).await;
        if !text.trim().is_empty() {
            *said.lock().expect("stderr lock") = text;
        }
    };
    tokio::join!(up, down, errs);
    let _ = child.wait().await;
}

/// Returns once `engine` has failed to answer a ping within `deadline` twice in a row
/// (checked every `deadline`); the build it guards is then dropped, which closes its
/// connection, and the engine cancels it if it ever wakes up.
pub(crate) async fn watchdog(engine: &Engine, deadline: Duration) -> Error {
    let mut misses = 0;
    loop {
        tokio::time::sleep(deadline).await;
        if engine.answers(deadline).await {
            misses = 0;
        } else {
            misses += 1;
            if misses == 2 {
                return Error::failure(format!(
                    "the engine at {} stopped answering (no ping within {:.0}s, twice)",
                    engine.endpoint(),
                    deadline.as_secs_f64()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wants(p: &Platform) -> Wants<'_> {
        Wants { platform: p, build_platform: None, buildkit: false, native: false }
    }

    fn fleet_with(facts: &[(&str, &[&str], &[&str], usize)]) -> Fleet {
        let t = ArchTable::builtin();
        let specs: Vec<BuilderSpec> = facts
            .iter()
            .enumerate()
            .map(|(i, (name, _, _, jobs))| BuilderSpec {
                name: name.to_string(),
                endpoint_text: format!("tcp://127.0.0.1:{}", 3000 + i),
                endpoint: Endpoint::Tcp { addr: format!("127.0.0.1:{}", 3000 + i), tls: None },
                platforms: None,
                emulates: vec![],
                jobs: Some(*jobs),
                buildkit: BuildKitMode::Auto,
            })
            .collect();
        let fleet = Fleet::new(&specs, 4, &t);
        for (b, (_, native, emu, _)) in fleet.builders.iter().zip(facts) {
            let p = |v: &[&str]| v.iter().map(|s| t.parse_platform(s).unwrap()).collect::<Vec<_>>();
            b.facts
                .set(Facts {
                    version: None,
                    native: p(native),
                    native_from: "declared",
                    emulates: p(emu),
                    emulates_from: "binfmt",
                    buildkit: true,
                })
                .unwrap();
        }
        fleet.probed.set(()).unwrap();
        fleet
    }

    #[tokio::test]
    async fn native_first_then_emulated_spread_by_free_share() {
        let fleet =
            fleet_with(&[("a", &["amd64"], &["arm64"], 1), ("b", &["amd64"], &[], 2), ("c", &["arm64"], &[], 1)]);
        let arm = ArchTable::builtin().parse_platform("arm64").unwrap();
        let amd = ArchTable::builtin().parse_platform("amd64").unwrap();
        // arm64 goes to its native builder, not to the emulating one.
        let l1 = fleet.acquire(wants(&arm), &[]).await.unwrap();
        assert_eq!((l1.index, l1.route), (2, Route::Native));
        assert!(l1.reason.contains("natively"), "{}", l1.reason);
        // amd64: a (1/1 free) and b (2/2) tie at 100%: the first listed; then b (2/2) beats a (0/1);
        // then b has 1/2 and a 0/1: b again.
        let picks: Vec<usize> = {
            let mut v = Vec::new();
            let mut held = Vec::new();
            for _ in 0..3 {
                let l = fleet.acquire(wants(&amd), &[]).await.unwrap();
                v.push(l.index);
                held.push(l);
            }
            v
        };
        assert_eq!(picks, [0, 1, 1]);
        // The native arm64 builder is unhealthy: arm64 is emulated on a.
        drop(l1);
        fleet.mark_unhealthy(2, "gone");
        let l = fleet.acquire(wants(&arm), &[]).await.unwrap();
        assert_eq!((l.index, l.route), (0, Route::Emulated));
        // Nobody else can: the error names every builder's state.
        let Err(e) = fleet.acquire(wants(&arm), &[0]).await else { panic!("placed without a builder") };
        assert!(
            e.message().contains("could not be placed") && e.message().contains("c: unhealthy: gone"),
            "{}",
            e.message()
        );
    }

    #[tokio::test]
    async fn a_native_only_job_skips_emulating_builders() {
        let t = ArchTable::builtin();
        let (arm, amd) = (t.parse_platform("arm64").unwrap(), t.parse_platform("amd64").unwrap());
        // Cross stages pinned to amd64: the amd64 builder is preferred, and emulates arm64.
        let fleet = fleet_with(&[("amd", &["amd64"], &["arm64"], 1), ("arm", &["arm64"], &["amd64"], 1)]);
        let cross = Wants { platform: &arm, build_platform: Some(&amd), buildkit: false, native: false };
        let l = fleet.acquire(cross, &[]).await.unwrap();
        assert_eq!((l.index, l.route), (0, Route::Emulated));
        drop(l);
        let native = Wants { native: true, ..cross };
        let l = fleet.acquire(native, &[0]).await.unwrap();
        assert_eq!((l.index, l.route), (1, Route::Native));
        drop(l);
        // Nobody else runs arm64 natively: the error says so, not "or can emulate it".
        let Err(e) = fleet.acquire(native, &[1]).await else { panic!("placed on an emulating builder") };
        assert!(e.message().contains("no healthy builder runs linux/arm64 natively ("), "{}", e.message());
    }

    #[tokio::test]
    async fn buildkit_needs_and_a_contradicted_buildkit_true() {
        let t = ArchTable::builtin();
        let amd = t.parse_platform("amd64").unwrap();
        let fleet = fleet_with(&[("classic", &["amd64"], &[], 1), ("bk", &["amd64"], &[], 1)]);
        // Facts say builder 0 has no BuildKit: a job that needs it goes to builder 1 only.
        let mut f0 = fleet.builders[0].facts.get().cloned().unwrap();
        f0.buildkit = false;
        let fleet = {
            let mut fleet = fleet;
            fleet.builders[0].facts = OnceCell::new_with(Some(f0));
            fleet
        };
        let needs = Wants { platform: &amd, build_platform: None, buildkit: true, native: false };
        let l = fleet.acquire(needs, &[]).await.unwrap();
        assert_eq!(l.index, 1);
        let Err(e) = fleet.acquire(needs, &[1]).await else { panic!("placed on a builder without BuildKit") };
        assert!(e.message().contains("with BuildKit") && e.message().contains("no BuildKit"), "{}", e.message());
        assert!(fleet.configuration_error().is_none(), "auto on an engine without BuildKit is fine");
        drop(l);

        let mut fleet = fleet;
        fleet.builders[0].spec.buildkit = BuildKitMode::True;
        let e = fleet.configuration_error().expect("buildkit: true on an engine without it");
        assert_eq!(e.exit_code(), 2);
        assert!(e.message().contains("builder classic") && e.message().contains("buildkit: true"), "{}", e.message());
        assert!(fleet.acquire(wants(&amd), &[]).await.is_err(), "no job is placed while the configuration is wrong");
    }

    #[tokio::test]
    async fn a_full_builder_makes_the_job_wait_for_a_slot() {
        let fleet = Arc::new(fleet_with(&[("a", &["amd64"], &[], 1)]));
        let amd = ArchTable::builtin().parse_platform("amd64").unwrap();
        let first = fleet.acquire(wants(&amd), &[]).await.unwrap();
        let f2 = Arc::clone(&fleet);
        let amd2 = amd.clone();
        let waiter = tokio::spawn(async move { f2.acquire(wants(&amd2), &[]).await.map(|l| l.index) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        assert_eq!(waiter.await.unwrap().unwrap(), 0);
    }
}
