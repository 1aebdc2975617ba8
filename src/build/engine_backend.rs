//! The engine backend: a Dockerfile job placed on a builder of the fleet, its parents
//! put on that builder from the store, built (BuildKit or classic), and exported into
//! the store. An engine or connection failure marks a builder that no longer answers
//! unhealthy and tries the next builder; a failure of the recipe itself is final, except
//! a RUN step on an emulated route that QEMU crashed ([`binfmt::EMULATOR_CRASHES`]):
//! an emulator fault, tried once more on a builder that runs the platform natively, or
//! failed with the QEMU version and what to do when there is none.
//!
//! Its memo ([`Backend::find`]) is the local engine (`DOCKER_HOST`): an image there
//! labelled with the job's key is taken into the store instead of being rebuilt.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::OnceCell;

use crate::build::binfmt::{self, Crash};
use crate::build::fleet::{watchdog, Fleet, Lease, Placement, Route, Wants};
use crate::build::{Backend, BackendKind, Fault, Parents, Produced, Report, Retry, Trace};
use crate::engine::request::{BuildRequest, BuildSecret, StepFailure};
use crate::engine::{self, BuildFailure, Engine};
use crate::image::platform::Platform;
use crate::image::store::StoredImage;
use crate::image::store::{Entry, Store};
use crate::plan::key::{platform_tag, LABEL_IMAGE, LABEL_KEY, LABEL_PLATFORM};
use crate::plan::Job;
use crate::recipe::config::Config;
use crate::recipe::dockerfile;
use crate::support::error::{Error, Result};

/// The engine of this machine (`DOCKER_HOST`), connected on first use (and only then),
/// shared by the engine memo and the loads into the local engine.
#[derive(Default)]
pub struct LocalEngine {
    engine: OnceCell<std::result::Result<Engine, String>>,
}

impl LocalEngine {
    pub async fn get(&self) -> Result<&Engine> {
        let r = self
            .engine
            .get_or_init(|| async { Engine::connect(engine::deadline()).await.map_err(|e| e.message().to_string()) })
            .await;
        r.as_ref().map_err(|m| Error::failure(m.clone()))
    }
}

/// Puts the stored image of `entry` on `engine` unless that engine already holds it
/// (by its config digest: its own unrewritten build or another image with the same key
/// label is not the stored image), tagged with its per-platform registry reference.
/// Returns the engine's image ID.
pub async fn put_on_engine(engine: &Engine, store: &Store, config: &Config, entry: &Entry) -> Result<String> {
    if let Some((id, _)) = engine.resolve_image(&entry.stored.config_digest).await? {
        return Ok(id);
    }
    let tags = [config.registry.reference(&entry.image, &platform_tag(&entry.platform, &entry.key))];
    engine.load_from_store(store, &entry.stored, &tags).await
}

/// The fleet as a [`Backend`].
pub struct EngineBackend {
    fleet: Fleet,
    config: Config,
    store: Store,
    local: Arc<LocalEngine>,
    report: Arc<dyn Report>,
}

impl EngineBackend {
    /// The fleet of `config.builders`; `local` answers the engine memo.
    pub fn new(config: Config, store: Store, local: Arc<LocalEngine>, report: Arc<dyn Report>) -> EngineBackend {
        let fleet = Fleet::new(&config.builders, config.jobs, &config.arches);
        EngineBackend { fleet, config, store, local, report }
    }

    async fn build_on_fleet(&self, job: &Job, parents: &Parents, trace: &Trace) -> Result<Produced> {
        let fleet = &self.fleet;
        let mut tried: Vec<usize> = Vec::new();
        let mut history = String::new();
        let mut started = false;
        let mut last_failure: Option<Error> = None;
        // Set once QEMU crashed an emulated step: from then on, native builders only.
        let mut emulator_fault: Option<EmulatorFault> = None;
        loop {
            let wants = Wants {
                platform: &job.platform,
                build_platform: job.build_platform.as_ref(),
                buildkit: job.needs.buildkit_only.is_some() || !job.needs.secrets.is_empty(),
                native: emulator_fault.is_some(),
            };
            let asked = Instant::now();
            let acquired = fleet.acquire(wants, &tried).await;
            trace.update(|t| t.waited_for_builder += asked.elapsed());
            let lease = match acquired {
                Ok(lease) => lease,
                // Say what went wrong where it was tried, not only that nothing is left.
                Err(e) => {
                    let e = match &emulator_fault {
                        Some(fault) => fault.unretried(&job.platform, &self.config, &e).await,
                        None => e,
                    };
                    return Err(match last_failure {
                        Some(last) => Error::failure(format!("{}; then {}", last.message(), e.message())),
                        None => e,
                    });
                }
            };
            let backend = if lease.buildkit() && !job.needs.classic_only {
                engine::request::Backend::BuildKit
            } else {
                engine::request::Backend::Classic
            };
            // The builder's platform: pinned for recipes that read it, else the builder's own.
            let build_platform =
                job.build_platform.clone().or_else(|| lease.native().cloned()).unwrap_or_else(|| job.platform.clone());
            if !started {
                self.report.started(&job.image, &job.platform);
                started = true;
            }
            tracing::debug!("{} {}: {}", job.image, job.platform, lease.reason);
            let placed = Placement {
                builder: lease.builder().to_string(),
                route: lease.route,
                engine_version: lease.engine_version(),
            };
            trace.update(|t| {
                t.working_since = Some(SystemTime::now());
                t.placed = Some(placed.clone());
            });
            let preamble = format!("{history}# archfarm: {}\n", lease.reason);
            let attempt = match lease.engine().await {
                // A hung engine never ends the build stream: the watchdog does.
                Ok(engine) => tokio::select! {
                    r = self.build_on(engine, job, parents, backend, &build_platform, &preamble) => r,
                    e = watchdog(engine, lease.deadline()) => Err(BuildFailure::Engine(e)),
                },
                Err(e) => Err(BuildFailure::Engine(e)),
            };
            let e = match attempt {
                Ok(image) => {
                    let by = match backend {
                        engine::request::Backend::BuildKit => BackendKind::BuildKit,
                        engine::request::Backend::Classic => BackendKind::Classic,
                    };
                    return Ok(Produced { image, by, placed: Some(placed) });
                }
                Err(BuildFailure::Local(e)) => {
                    trace.update(|t| t.fault = Some(Fault::Local));
                    return Err(e);
                }
                Err(BuildFailure::Recipe(f)) => {
                    // The engine reported the failure; if it still answers, the recipe
                    // failed, or the emulator it ran under.
                    if answers(&lease).await {
                        trace.update(|t| t.failing_step.clone_from(&f.step));
                        let crash = (lease.route == Route::Emulated && f.in_run_step())
                            .then(|| binfmt::emulator_crash(crash_lines(&f)))
                            .flatten();
                        let Some(crash) = crash else {
                            trace.update(|t| t.fault = Some(Fault::Recipe));
                            return Err(f.error);
                        };
                        let builder = lease.builder().to_string();
                        let fault = EmulatorFault {
                            job: format!("{} for {}", job.image, job.platform),
                            builder: builder.clone(),
                            on_this_machine: lease.on_this_machine(),
                            step: f.instruction().unwrap_or("RUN").to_string(),
                            crash,
                            log: self.store.log_path(&job.image, &job.platform, &job.key),
                        };
                        trace.update(|t| {
                            t.fault = Some(Fault::Emulator);
                            t.retries.push(Retry {
                                builder: builder.clone(),
                                fault: Fault::Emulator,
                                error: fault.summary(),
                            });
                        });
                        self.report.note(&format!(
                            "{} {}: QEMU crashed `{}` on builder {builder} ({}); trying a builder that runs {} natively",
                            job.image, job.platform, fault.step, fault.crash.message, job.platform
                        ));
                        history = format!("{preamble}# archfarm: {}\n", fault.summary());
                        tried.push(lease.index);
                        drop(lease);
                        emulator_fault = Some(fault);
                        continue;
                    }
                    f.error
                }
                Err(BuildFailure::Engine(e)) => e,
            };
            trace.update(|t| {
                t.fault = Some(Fault::Engine);
                t.retries.push(Retry {
                    builder: placed.builder.clone(),
                    fault: Fault::Engine,
                    error: e.message().to_string(),
                });
            });
            let answers = answers(&lease).await;
            if !answers {
                lease.mark_unhealthy(&format!("stopped answering during {} for {}", job.image, job.platform));
            }
            let builder = lease.builder().to_string();
            self.report.note(&format!(
                "{} {}: builder {builder} failed ({}); trying another builder",
                job.image,
                job.platform,
                if answers { "engine error" } else { "it stopped answering" }
            ));
            // The preamble already holds the earlier attempts.
            history = format!("{preamble}# archfarm: builder {builder} failed: {}\n", e.message());
            tried.push(lease.index);
            drop(lease);
            last_failure = Some(Error::failure(format!("on builder {builder}: {}", e.message())));
        }
    }

    async fn build_on(
        &self,
        engine: &Engine,
        job: &Job,
        parents: &Parents,
        backend: engine::request::Backend,
        build_platform: &Platform,
        preamble: &str,
    ) -> std::result::Result<StoredImage, BuildFailure> {
        // Each farm parent by the exact image this engine holds for the platform of its
        // stage (the engine turns IDs into tags for BuildKit, which resolves only names).
        let mut replacements: BTreeMap<(String, Platform), String> = BTreeMap::new();
        for p in &job.parents {
            let entry = parents.get(&(p.image.clone(), p.platform.clone())).ok_or_else(|| {
                BuildFailure::Local(Error::failure(format!("parent {} is not in the store", p.image)))
            })?;
            let id = put_on_engine(engine, &self.store, &self.config, entry).await.map_err(engine_or_disk)?;
            replacements.insert((p.reference.clone(), p.platform.clone()), id);
        }
        let mut args = job.build_args.clone();
        args.extend(crate::image::platform::platform_args(&job.platform, build_platform));
        let text = dockerfile::rewrite_refs(&job.recipe_text, &args, |r| {
            let platform = match &r.platform {
                Some(p) => self.config.arches.parse_platform(p).ok()?,
                None => job.platform.clone(),
            };
            let at = (r.image.clone(), platform);
            replacements.get(&at).or(job.pinned.get(&at)).cloned()
        });
        let mut preamble = preamble.to_string();
        let (text, build_args) = match backend {
            // BuildKit sets its platform args itself.
            engine::request::Backend::BuildKit => match dockerfile::drop_official_syntax(&text) {
                Some(t) => {
                    preamble.push_str(
                        "# archfarm: `# syntax=docker/dockerfile` dropped: the engine's built-in frontend builds it\n",
                    );
                    (t, job.build_args.clone())
                }
                None => (text, job.build_args.clone()),
            },
            engine::request::Backend::Classic => (dockerfile::declare_platform_args(&text), args),
        };
        let secrets = job
            .needs
            .secrets
            .iter()
            .map(|id| {
                let source =
                    self.config.secrets.get(id).ok_or_else(|| Error::usage(format!("secret {id} is not declared")))?;
                Ok(BuildSecret { id: id.clone(), value: source.read()? })
            })
            .collect::<Result<Vec<_>>>()
            .map_err(BuildFailure::Local)?;
        let labels = BTreeMap::from([
            (LABEL_KEY.to_string(), job.key.clone()),
            (LABEL_IMAGE.to_string(), job.image.clone()),
            (LABEL_PLATFORM.to_string(), job.platform.to_string()),
        ]);
        let tags = [self.config.registry.reference(&job.image, &platform_tag(&job.platform, &job.key))];
        let log_path = self.store.log_path(&job.image, &job.platform, &job.key);
        let request = BuildRequest {
            context: &job.context,
            dockerfile_path: &job.recipe,
            dockerfile_text: Some(&text),
            platform: &job.platform,
            build_args: &build_args,
            labels: &labels,
            tags: &tags,
            log_path: &log_path,
            backend,
            target: job.needs.target.as_deref(),
            secrets: &secrets,
        };
        let id = engine.build_logged(request, &preamble).await?;
        let imported = engine.export_to_store(&id, &self.store, &job.stamp).await.map_err(engine_or_disk)?;
        Ok(imported.image)
    }
}

impl Backend for EngineBackend {
    fn produce<'a>(
        &'a self,
        job: &'a Job,
        parents: &'a Parents,
        _: Option<&'a str>,
        trace: &'a Trace,
    ) -> BoxFuture<'a, Result<Produced>> {
        // The fleet bounds concurrency: each builder runs at most its `jobs`.
        self.build_on_fleet(job, parents, trace).boxed()
    }

    fn find<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<Option<StoredImage>>> {
        async move {
            // No local engine: no engine memo (a run served by the store or the registry
            // needs none).
            let Ok(engine) = self.local.get().await else { return Ok(None) };
            let Some(id) = engine.find_by_label(&job.key).await? else { return Ok(None) };
            let imported = engine.export_to_store(&id, &self.store, &job.stamp).await?;
            Ok(Some(imported.image))
        }
        .boxed()
    }

    fn configuration_error(&self) -> Option<Error> {
        self.fleet.configuration_error()
    }
}

/// The lines of a failed step that may carry QEMU's message: its last output, then the
/// engine's error.
fn crash_lines(f: &StepFailure) -> impl Iterator<Item = &str> {
    f.output.iter().map(String::as_str).chain(f.error.message().lines())
}

/// A RUN step that QEMU, not the recipe, failed on an emulated route.
struct EmulatorFault {
    /// `IMAGE for PLATFORM`.
    job: String,
    builder: String,
    /// The builder is an engine of this machine (so it emulated with this machine's QEMU).
    on_this_machine: bool,
    /// The failing instruction (`RUN make`).
    step: String,
    crash: Crash,
    log: std::path::PathBuf,
}

impl EmulatorFault {
    /// What happened, for the job's retries and its next attempt's log.
    fn summary(&self) -> String {
        format!(
            "building {}: QEMU crashed the emulated step `{}` on builder {}: `{}` ({}): an emulator fault, \
             not the recipe's (log: {})",
            self.job,
            self.step,
            self.builder,
            self.crash.message,
            self.crash.meaning,
            self.log.display()
        )
    }

    /// The job's error when no builder runs `platform` natively to try it again
    /// (`nowhere`: the fleet's account of why), naming the QEMU that crashed and what to do.
    async fn unretried(&self, platform: &Platform, config: &Config, nowhere: &Error) -> Error {
        let qemu = if self.on_this_machine {
            match binfmt::qemu_version(&config.arches, platform).await {
                Some(v) => format!("this machine emulates {platform} with QEMU {v} (its binfmt handler's interpreter)"),
                None => format!("the version of this machine's QEMU for {platform} could not be read (its binfmt handler's interpreter did not say)"),
            }
        } else {
            format!(
                "builder {} emulates {platform} with its own machine's QEMU, whose version archfarm cannot read",
                self.builder
            )
        };
        Error::failure(format!(
            "{}; no builder can try it again natively ({}); {qemu}. To build it: add a builder that runs {platform} \
             natively (`platforms: [{platform}]` under `builders:` in archfarm.yaml), or update qemu-user-static \
             and register its handlers again (`archfarm binfmt --install`), or move the step into a cross stage \
             (`FROM --platform=$BUILDPLATFORM`) that produces its files for {platform} without running them",
            self.summary(),
            nowhere.message()
        ))
    }
}

/// Whether the lease's builder still answers a ping.
async fn answers(lease: &Lease<'_>) -> bool {
    match lease.engine().await {
        Ok(engine) => engine.answers(Duration::from_secs(5)).await,
        Err(_) => false,
    }
}

/// A failure while moving an image between an engine and the store: this machine's own
/// when its disk failed (final: another builder would meet the same disk), else the
/// engine's (another builder may succeed).
fn engine_or_disk(e: Error) -> BuildFailure {
    if e.is_disk() {
        BuildFailure::Local(e)
    } else {
        BuildFailure::Engine(e)
    }
}
