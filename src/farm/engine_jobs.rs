//! The coordinator's engine jobs: placing a job on the fleet, putting its parents on
//! that builder, building, and recording the result in the store.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::build::fleet::{watchdog, BuilderStatus, Placement, Wants};
use crate::engine::{Backend, BuildFailure, BuildRequest, BuildSecret, Engine};
use crate::farm::{Farm, ParentsDone};
use crate::image::platform::Platform;
use crate::image::store::Entry;
use crate::plan::key::{platform_tag, LABEL_IMAGE, LABEL_KEY, LABEL_PLATFORM};
use crate::plan::Job;
use crate::recipe::dockerfile;
use crate::support::error::{Error, Result};

impl Farm {
    /// Builds `job` on the fleet: places it, puts its parents on that builder, builds,
    /// and records the result in the store. An engine or connection failure marks a
    /// builder that no longer answers unhealthy and tries the next builder; a failure
    /// of the recipe itself is final.
    pub(crate) async fn build_on_fleet(&self, job: &Job, parents: &ParentsDone) -> Result<(Entry, Placement)> {
        let fleet = &self.fleet;
        let mut tried: Vec<usize> = Vec::new();
        let mut history = String::new();
        let mut started = false;
        let mut last_failure: Option<Error> = None;
        loop {
            let wants = Wants {
                platform: &job.platform,
                build_platform: job.build_platform.as_ref(),
                buildkit: job.needs.buildkit_only.is_some() || !job.needs.secrets.is_empty(),
            };
            let lease = match fleet.acquire(wants, &tried).await {
                Ok(lease) => lease,
                // Say what went wrong where it was tried, not only that nothing is left.
                Err(e) => {
                    return Err(match last_failure {
                        Some(last) => Error::failure(format!("{}; then {}", last.message(), e.message())),
                        None => e,
                    })
                }
            };
            let builder = &fleet.builders[lease.index];
            let facts = builder.facts.get().cloned().unwrap_or_default();
            let backend = if facts.buildkit && !job.needs.classic_only { Backend::BuildKit } else { Backend::Classic };
            // The builder's platform: pinned for recipes that read it, else the builder's own.
            let build_platform = job
                .build_platform
                .clone()
                .or_else(|| facts.native.first().cloned())
                .unwrap_or_else(|| job.platform.clone());
            if !started {
                self.progress().started(&job.image, &job.platform);
                started = true;
            }
            tracing::debug!("{} {}: {}", job.image, job.platform, lease.reason);
            let preamble = format!("{history}# archfarm: {}\n", lease.reason);
            let attempt = match builder.engine().await {
                // A hung engine never ends the build stream: the watchdog does.
                Ok(engine) => tokio::select! {
                    r = self.build_on(engine, job, parents, backend, &build_platform, &preamble) => r,
                    e = watchdog(engine, builder.deadline) => Err(BuildFailure::Engine(e)),
                },
                Err(e) => Err(BuildFailure::Engine(e)),
            };
            let e = match attempt {
                Ok(entry) => {
                    return Ok((entry, Placement { builder: builder.spec.name.clone(), route: lease.route, backend }));
                }
                Err(BuildFailure::Local(e)) => return Err(e),
                Err(BuildFailure::Recipe(e)) => {
                    // The engine reported the failure; if it still answers, the recipe failed.
                    match builder.engine().await {
                        Ok(engine) if engine.answers(Duration::from_secs(5)).await => return Err(e),
                        _ => e,
                    }
                }
                Err(BuildFailure::Engine(e)) => e,
            };
            let answers = match builder.engine().await {
                Ok(engine) => engine.answers(Duration::from_secs(5)).await,
                Err(_) => false,
            };
            if !answers {
                fleet.mark_unhealthy(
                    lease.index,
                    &format!("stopped answering during {} for {}", job.image, job.platform),
                );
            }
            self.progress().note(&format!(
                "{} {}: builder {} failed ({}); trying another builder",
                job.image,
                job.platform,
                builder.spec.name,
                if answers { "engine error" } else { "it stopped answering" }
            ));
            history.push_str(&format!("{preamble}# archfarm: builder {} failed: {}\n", builder.spec.name, e.message()));
            tried.push(lease.index);
            drop(lease);
            last_failure = Some(Error::failure(format!("on builder {}: {}", builder.spec.name, e.message())));
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn build_on(
        &self,
        engine: &Engine,
        job: &Job,
        parents: &ParentsDone,
        backend: Backend,
        build_platform: &Platform,
        preamble: &str,
    ) -> std::result::Result<Entry, BuildFailure> {
        // Each farm parent by the exact image this engine holds for the platform of its
        // stage (the engine turns IDs into tags for BuildKit, which resolves only names).
        let mut replacements: BTreeMap<(String, Platform), String> = BTreeMap::new();
        for p in &job.parents {
            let at = (p.image.clone(), p.platform.clone());
            let id = self.ensure_on(engine, &parents[&at]).await.map_err(engine_or_disk)?;
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
            Backend::BuildKit => match dockerfile::drop_official_syntax(&text) {
                Some(t) => {
                    preamble.push_str(
                        "# archfarm: `# syntax=docker/dockerfile` dropped: the engine's built-in frontend builds it\n",
                    );
                    (t, job.build_args.clone())
                }
                None => (text, job.build_args.clone()),
            },
            Backend::Classic => (dockerfile::declare_platform_args(&text), args),
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
        let imported = engine.export_to_store(&id, &self.store).await.map_err(engine_or_disk)?;
        self.record(job, imported.manifest, imported.config_digest).map_err(BuildFailure::Local)
    }

    /// The builders of this run with their health and platforms (`archfarm builders`).
    pub async fn builders(&self) -> Vec<BuilderStatus> {
        self.fleet.status().await
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
