//! The coordinator: runs a [`Plan`]'s jobs concurrently (bounded), each waiting only for
//! its own parents on the same platform; looks every key up before building (store,
//! then the backend's own place, the local engine for Dockerfile jobs, then registry);
//! produces misses through the [`Backend`] the planner's job kind names (the assembler
//! for image.yaml jobs, the fleet for Dockerfile jobs), after putting the job's parents
//! in the store; records every result in the store in one place (`Farm::put_entry`);
//! publishes from the store; and stitches each image's canonical index only once every
//! platform's manifest is in the registry.

mod attest;
pub mod bases;
pub mod progress;
pub mod report;
pub mod stitch;

use std::collections::{btree_map, BTreeMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::stream::{StreamExt, TryStreamExt};
use tokio::sync::watch;

use crate::build::assemble::{Assembler, EarlyUpload};
use crate::build::engine_backend::{put_on_engine, EngineBackend, LocalEngine};
use crate::build::fleet::Placement;
use crate::build::{Backend, BackendKind, Fault, Parents, Produced, Report, Trace};
use crate::engine::Engine;
use crate::farm::progress::{Outcome, Progress, Source};
pub use crate::farm::report::{BuildReport, JobReport, SkipReport, Stage, TagReport};
use crate::image::oci::Descriptor;
use crate::image::platform::Platform;
use crate::image::store::StoredImage;
use crate::image::store::{Entry, Store};
use crate::plan::key::platform_tag;
use crate::plan::{Job, JobKind, Plan};
use crate::publish::preupload::Preupload;
use crate::recipe::config::Config;
use crate::registry::Registry;
use crate::support::error::{Error, Result};
use crate::trust::keys::SigningKey;

/// How many images are stitched at once.
pub const STITCH_CONCURRENCY: usize = 16;

/// Why a job failed: the error, the stage it stopped at, and where its image came from
/// when it was built or found before that stage (a cached job whose push failed is
/// still a cached job).
pub(crate) struct JobFailure {
    error: Error,
    stage: Stage,
    source: Option<Source>,
}

/// What is measured of one job: by its backend (the [`Trace`]) and by the coordinator.
#[derive(Debug, Default)]
pub(crate) struct Measured {
    trace: Trace,
    waited_for_parents: Duration,
    bytes_pushed: u64,
}

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Publish every platform and stitch the canonical tags.
    pub push: bool,
    /// Make these jobs' images exist in the local engine (for `load`).
    pub materialize: Vec<(String, Platform)>,
    /// Build these jobs even when the memo has their key (`rebuild`); their parents
    /// are looked up as usual.
    pub rebuild: Vec<(String, Platform)>,
    /// With `push`: publish every platform by key but write no canonical tag (CI jobs
    /// that each push one platform; `archfarm stitch` writes the tag once, at the end).
    pub no_stitch: bool,
    /// With `push`: sign each canonical index written, and its children, with this key.
    pub sign: Option<Arc<SigningKey>>,
}

/// What [`Farm::stitch_complete`] did for one image.
#[derive(Debug, Clone)]
pub enum Stitched {
    /// Every platform was in the registry: the canonical index is written.
    Written(TagReport),
    /// These platforms' manifests are not in the registry: nothing was written.
    Missing(Vec<Platform>),
}

/// What a finished job leaves for its dependents and the stitcher.
#[derive(Debug, Clone)]
pub struct Done {
    image: String,
    platform: Platform,
    key: String,
    /// The image ID in the local engine, when the job was asked to put it there.
    engine_id: Option<String>,
    /// The manifest in the local store, if it is there.
    entry: Option<Entry>,
    /// The manifest in the registry under the per-platform tag, if it is there.
    remote: Option<Descriptor>,
    /// Where it was built, when this run built it on an engine.
    placed: Option<Placement>,
    /// What produced it, when this run did.
    backend: Option<BackendKind>,
}

type Slot = watch::Receiver<Option<std::result::Result<Arc<Done>, String>>>;
/// A parent job: (image, the platform it is built for).
pub(crate) type ParentKey = (String, Platform);
/// The finished parents of a job.
pub(crate) type ParentsDone = BTreeMap<ParentKey, Arc<Done>>;

/// Shared state of one run.
pub struct Farm {
    pub config: Config,
    pub store: Store,
    registry: Registry,
    local: Arc<LocalEngine>,
    progress: Progress,
    /// Produces [`JobKind::Engine`] jobs: the fleet.
    engines: Arc<dyn Backend>,
    /// Produces [`JobKind::Assemble`] jobs.
    assembler: Arc<dyn Backend>,
    /// This run's id, in the provenance of everything it builds.
    invocation: String,
}

impl Report for Progress {
    fn started(&self, image: &str, platform: &Platform) {
        Progress::started(self, image, platform)
    }

    fn note(&self, message: &str) {
        Progress::note(self, message)
    }
}

impl Farm {
    pub fn new(config: Config, progress: Progress) -> Result<Self> {
        let store = Store::open(&config.store)?;
        let registry = Registry::new(&config.registry)?;
        let local = Arc::new(LocalEngine::default());
        let report: Arc<dyn Report> = Arc::new(progress.clone());
        let engines = EngineBackend::new(config.clone(), store.clone(), Arc::clone(&local), report);
        let to = registry.clone();
        let early_upload: EarlyUpload = Box::new(move |repo| {
            Box::new(Preupload::new(to.clone(), repo.to_string(), tokio::runtime::Handle::current()))
        });
        let assembler = Assembler::new(config.clone(), store.clone(), early_upload);
        Ok(Farm {
            config,
            store,
            registry,
            local,
            progress,
            engines: Arc::new(engines),
            assembler: Arc::new(assembler),
            invocation: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
        })
    }

    /// The backend that produces jobs of `kind`.
    fn backend(&self, kind: JobKind) -> &dyn Backend {
        match kind {
            JobKind::Engine => self.engines.as_ref(),
            JobKind::Assemble => self.assembler.as_ref(),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The local engine, connected on first use (and only then).
    pub async fn engine(&self) -> Result<&Engine> {
        self.local.get().await
    }

    /// Runs every job of `plan`; never returns early on a job failure: the report
    /// names each failed (image, platform), and no canonical tag is written for an
    /// image with a failed or missing platform.
    pub async fn run(self: &Arc<Self>, plan: &Plan, opts: &BuildOptions) -> Result<BuildReport> {
        if opts.push {
            self.registry.check().await?;
        }
        let mut slots: BTreeMap<(String, Platform), Slot> = BTreeMap::new();
        let mut tasks = Vec::new();
        for job in &plan.jobs {
            let (tx, rx) = watch::channel(None);
            let parents: Vec<(ParentKey, Slot)> = job
                .parents
                .iter()
                .map(|p| {
                    let at = (p.image.clone(), p.platform.clone());
                    (at.clone(), slots[&at].clone())
                })
                .collect();
            slots.insert((job.image.clone(), job.platform.clone()), rx);
            let farm = Arc::clone(self);
            let job = job.clone();
            let materialize = opts.materialize.contains(&(job.image.clone(), job.platform.clone()));
            let rebuild = opts.rebuild.contains(&(job.image.clone(), job.platform.clone()));
            let push = opts.push.then(|| opts.sign.clone());
            tasks.push(tokio::spawn(async move {
                let (started, start) = (SystemTime::now(), Instant::now());
                let mut measured = Measured::default();
                let result = farm.run_job(&job, parents, push, materialize, rebuild, &mut measured).await;
                let seconds = start.elapsed().as_secs_f64();
                let span = (started, started + start.elapsed());
                let report = farm.job_report(&job, &result, seconds, span, &measured);
                let _ = tx.send(Some(result.map(|(d, _)| Arc::new(d)).map_err(|f| f.error.message().to_string())));
                report
            }));
        }
        let mut jobs = Vec::new();
        for t in tasks {
            jobs.push(t.await.map_err(|e| Error::failure(format!("a build task panicked: {e}")))?);
        }
        // A builder's configuration that its engine contradicts is found when a job
        // first needs a builder (a run served by the memo probes none): exit 2.
        if let Some(e) = [&self.engines, &self.assembler].iter().find_map(|b| b.configuration_error()) {
            return Err(e);
        }
        // Jobs with no key (a base, or a parent's, has no digest; a recipe is invalid)
        // fail with their reason.
        jobs.extend(plan.unresolved.iter().map(|u| JobReport {
            image: u.image.clone(),
            platform: u.platform.to_string(),
            key: String::new(),
            outcome: Outcome::Failed,
            seconds: 0.0,
            source: None,
            stage: Some(if u.invalid { Stage::Recipe } else { Stage::Base }),
            digest: None,
            pushed: None,
            image_id: None,
            log: None,
            error: Some(u.reason.clone()),
            bad_input: u.invalid,
            builder: None,
            route: None,
            backend: None,
            build_platform: None,
            cross: false,
            parents: Vec::new(),
            started_at: crate::support::time::rfc3339_millis(SystemTime::now()),
            ended_at: crate::support::time::rfc3339_millis(SystemTime::now()),
            working_at: None,
            waited_for_parents: 0.0,
            waited_for_builder: 0.0,
            bytes_pushed: 0,
            failing_step: None,
            fault: None,
            retries: Vec::new(),
        }));
        let mut errors: Vec<String> = jobs
            .iter()
            .filter_map(|j| j.error.as_ref().map(|e| format!("{} for {}: {e}", j.image, j.platform)))
            .collect();

        let mut tags = Vec::new();
        if opts.push && !opts.no_stitch {
            // Stitches are independent: run them concurrently (bounded), report in plan order.
            let stitched: Vec<_> =
                futures::stream::iter(plan.images.iter().map(|image| self.stitch(image, &jobs, opts.sign.as_deref())))
                    .buffered(STITCH_CONCURRENCY)
                    .collect()
                    .await;
            for (image, result) in plan.images.iter().zip(stitched) {
                match result {
                    Ok(Some(t)) => tags.push(t),
                    Ok(None) => errors.push(format!(
                        "{}: canonical tag not written because a platform failed; no tag points at an incomplete image",
                        image.name
                    )),
                    Err(e) => errors.push(format!("{}: {}", image.name, e.message())),
                }
            }
        }
        let skipped = plan
            .skipped
            .iter()
            .map(|s| SkipReport { image: s.image.clone(), platform: s.platform.to_string(), reason: s.reason.clone() })
            .collect();
        let report = BuildReport { jobs, tags, skipped, errors };
        self.progress.report(&report);
        Ok(report)
    }

    /// Every secret `job` mounts can be read (its variable is set, its file exists):
    /// checked when the job must be built, before any builder is asked, so a job found
    /// in the memo never needs its secrets.
    fn check_secrets(&self, job: &Job) -> Result<()> {
        let missing: Vec<String> = job
            .needs
            .secrets
            .iter()
            .filter_map(|id| match self.config.secrets.get(id) {
                Some(source) if source.available() => None,
                Some(source) => Some(format!("{id} ({})", source.describe())),
                None => Some(format!("{id} (not declared)")),
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::usage(format!(
            "build secrets not available: {}; set them (archfarm.yaml `secrets:` says where each comes from)",
            missing.join(", ")
        )))
    }

    async fn run_job(
        &self,
        job: &Job,
        parents: Vec<(ParentKey, Slot)>,
        // With a push: the key that signs its attestations, if any.
        push: Option<Option<Arc<SigningKey>>>,
        materialize: bool,
        rebuild: bool,
        measured: &mut Measured,
    ) -> std::result::Result<(Done, (Outcome, Source)), JobFailure> {
        let at = |stage: Stage| move |error: Error| JobFailure { error, stage, source: None };
        let waiting = Instant::now();
        let mut parent_done = BTreeMap::new();
        for (parent, mut rx) in parents {
            let v = rx
                .wait_for(|v| v.is_some())
                .await
                .map_err(|_| at(Stage::Parent)(Error::failure("a parent job vanished")))?;
            let why = match v.as_ref().expect("waited for Some") {
                Ok(d) => {
                    parent_done.insert(parent, Arc::clone(d));
                    continue;
                }
                Err(_) if parent.1 == job.platform => format!("not built: its parent {} failed", parent.0),
                Err(_) => format!("not built: its parent {} for {} failed", parent.0, parent.1),
            };
            return Err(at(Stage::Parent)(Error::failure(why)));
        }
        measured.waited_for_parents = waiting.elapsed();
        let repo = self.config.registry.repository(&job.image);
        let tag = platform_tag(&job.platform, &job.key);

        let found = if rebuild { None } else { self.lookup(job, &repo, &tag).await.map_err(at(Stage::Memo))? };
        let (mut done, how) = match found {
            Some(found) => found,
            None => {
                let push_to = push.is_some().then_some(repo.as_str());
                let (entry, produced) =
                    self.build(job, &parent_done, push_to, &measured.trace).await.map_err(at(Stage::Build))?;
                let mut done = done_for(job, Some(entry), None);
                done.backend = Some(produced.by);
                done.placed = produced.placed;
                (done, (Outcome::Built, Source::Build))
            }
        };
        // From here on the image exists: a failure keeps saying where it came from.
        let after = |stage: Stage| move |error: Error| JobFailure { error, stage, source: Some(how.1) };
        if let (Some(key), None) = (&push, &done.remote) {
            done.remote = match self.registry.manifest_head(&repo, &tag).await.map_err(after(Stage::Push))? {
                Some(d) => Some(d),
                None => {
                    let entry = done.entry.as_ref().expect("a job not in the registry is in the store");
                    // Only an image archfarm built has the facts of a provenance; one found
                    // in an engine or fetched from a registry goes up without attestations.
                    let pushed = match &entry.provenance {
                        Some(_) => self.push_attested(job, entry, &repo, &tag, key.as_deref()).await,
                        None => self
                            .registry
                            .push_image_with_stats(&self.store, &repo, &tag, &entry.stored)
                            .await
                            .map(|(d, stats)| (d, stats.bytes_uploaded)),
                    };
                    let (pushed, bytes) = pushed.map_err(after(Stage::Push))?;
                    measured.bytes_pushed = bytes;
                    Some(pushed)
                }
            };
        }
        if materialize {
            done.engine_id = Some(self.ensure_in_engine(&done).await.map_err(after(Stage::Load))?);
        }
        Ok((done, how))
    }

    /// The memo: the store, then the backend's own place (the local engine's image
    /// labelled with the key, for Dockerfile jobs), then the registry (the per-platform
    /// key tag). A registry that does not answer 200 or 404 fails the job: never a
    /// silent rebuild over a published tag.
    async fn lookup(&self, job: &Job, repo: &str, tag: &str) -> Result<Option<(Done, (Outcome, Source))>> {
        if let Some(entry) = self.store.entry(&job.key)? {
            return Ok(Some((done_for(job, Some(entry), None), (Outcome::Cached, Source::Store))));
        }
        if let Some(image) = self.backend(job.kind).find(job).await? {
            let entry = self.record(job, image)?;
            return Ok(Some((done_for(job, Some(entry), None), (Outcome::Cached, Source::Engine))));
        }
        if let Some(remote) = self.registry.manifest_head(repo, tag).await? {
            return Ok(Some((done_for(job, None, Some(remote)), (Outcome::Cached, Source::Registry))));
        }
        Ok(None)
    }

    /// Builds a memo miss: its secrets checked (before any builder is asked, so a job
    /// found in the memo never needs them), its parents put in the store, then
    /// [`Farm::produce`].
    async fn build(
        &self,
        job: &Job,
        finished: &ParentsDone,
        push_to: Option<&str>,
        trace: &Trace,
    ) -> Result<(Entry, Produced)> {
        self.check_secrets(job)?;
        let mut parents = Parents::new();
        for p in &job.parents {
            if let btree_map::Entry::Vacant(slot) = parents.entry((p.image.clone(), p.platform.clone())) {
                let entry = self.ensure_in_store(&finished[slot.key()]).await?;
                slot.insert(entry);
            }
        }
        self.produce(job, &parents, push_to, trace).await
    }

    /// Produces `job` with the backend of its kind and records the result as the store's
    /// memo entry for its key. `parents`: every parent of the job, in the store. With
    /// `push_to` (a repository of the registry), a backend may start uploading there.
    /// `trace` gathers what the backend saw.
    pub async fn produce(
        &self,
        job: &Job,
        parents: &Parents,
        push_to: Option<&str>,
        trace: &Trace,
    ) -> Result<(Entry, Produced)> {
        let produced = self.backend(job.kind).produce(job, parents, push_to, trace).await?;
        let provenance = self.provenance(job, &produced, parents)?;
        let entry = self.put_entry(&job.image, &job.platform, &job.key, produced.image.clone(), Some(provenance))?;
        Ok((entry, produced))
    }

    /// The store entry of a finished job, fetched from the registry when it is only there.
    pub async fn ensure_in_store(&self, done: &Done) -> Result<Entry> {
        match &done.entry {
            Some(e) => Ok(e.clone()),
            None => self.entry_in_store(&done.image, &done.platform, &done.key).await,
        }
    }

    /// The store entry of `image` for `platform` under `key`: the store's, else fetched
    /// from the registry's per-platform key tag into the store.
    pub async fn entry_in_store(&self, image: &str, platform: &Platform, key: &str) -> Result<Entry> {
        if let Some(e) = self.store.entry(key)? {
            return Ok(e);
        }
        self.fetch_entry(image, platform, key, &platform_tag(platform, key)).await
    }

    /// Makes a finished job's image exist in the local engine and returns its image ID:
    /// already there (by key label), else loaded from the store, else fetched from the
    /// registry into the store and loaded (one path for every source).
    pub async fn ensure_in_engine(&self, done: &Done) -> Result<String> {
        let engine = self.engine().await?;
        let known = match &done.entry {
            Some(e) => Some(e.clone()),
            None => self.store.entry(&done.key)?,
        };
        let entry = match known {
            Some(e) => e,
            None => {
                // Not stored here: any image of the engine's with the key label will do.
                if let Some(id) = engine.find_by_label(&done.key).await? {
                    return Ok(id);
                }
                let remote = done.remote.as_ref().ok_or_else(|| Error::failure("job has no result"))?;
                self.fetch_entry(&done.image, &done.platform, &done.key, &remote.digest).await?
            }
        };
        put_on_engine(engine, &self.store, &self.config, &entry).await
    }

    /// Fetches the registry's image `reference` (a digest or the key tag of `image` for
    /// `platform`) into the store and records it as the store's entry for `key`.
    async fn fetch_entry(&self, image: &str, platform: &Platform, key: &str, reference: &str) -> Result<Entry> {
        let repo = self.config.registry.repository(image);
        let d = self.registry.fetch_image(&self.store, &repo, reference, platform).await?;
        self.put_entry(image, platform, key, self.store.image(&d)?, None)
    }

    /// Makes `job`'s image exist in the local engine from what this machine already has
    /// (the engine or the store), never the registry or a build; `None` when neither
    /// has its key. Returns the image ID.
    pub async fn ensure_local(&self, job: &Job) -> Result<Option<String>> {
        let entry = self.store.entry(&job.key)?;
        if entry.is_none() && self.engine().await?.find_by_label(&job.key).await?.is_none() {
            return Ok(None);
        }
        self.ensure_in_engine(&done_for(job, entry, None)).await.map(Some)
    }

    /// Makes the registry's image for `job`'s key the local one (store and engine), even
    /// when this machine built its own; `None` when the registry does not have the key.
    /// Returns the image ID.
    pub async fn pull(&self, job: &Job) -> Result<Option<String>> {
        let repo = self.config.registry.repository(&job.image);
        let Some(remote) = self.registry.manifest_head(&repo, &platform_tag(&job.platform, &job.key)).await? else {
            return Ok(None);
        };
        let entry = match self.store.entry(&job.key)? {
            Some(e) if e.stored.manifest.digest == remote.digest => e,
            _ => self.fetch_entry(&job.image, &job.platform, &job.key, &remote.digest).await?,
        };
        self.ensure_in_engine(&done_for(job, Some(entry), Some(remote))).await.map(Some)
    }

    /// Records what `job` produced (or a backend found) as the store's memo entry for its key.
    fn record(&self, job: &Job, image: StoredImage) -> Result<Entry> {
        self.put_entry(&job.image, &job.platform, &job.key, image, None)
    }

    /// The one place that writes the store's memo entries.
    fn put_entry(
        &self,
        image: &str,
        platform: &Platform,
        key: &str,
        stored: StoredImage,
        provenance: Option<Descriptor>,
    ) -> Result<Entry> {
        let entry =
            Entry { key: key.to_string(), image: image.to_string(), platform: platform.clone(), stored, provenance };
        self.store.put_entry(&entry)?;
        Ok(entry)
    }

    /// Writes the canonical index of `image` once every planned platform is in the
    /// registry (and signs it and its children when given a key); `None` when a platform failed.
    async fn stitch(
        &self,
        image: &crate::plan::ImagePlan,
        jobs: &[JobReport],
        sign: Option<&SigningKey>,
    ) -> Result<Option<TagReport>> {
        for (_, key) in &image.platforms {
            let Some(j) = jobs.iter().find(|j| j.image == image.name && &j.key == key) else { return Ok(None) };
            if j.outcome == Outcome::Failed {
                return Ok(None);
            }
        }
        match self.stitch_complete(image).await? {
            Stitched::Written(t) => {
                if let Some(key) = sign {
                    self.sign_index(&image.name, &t.digest, key).await?;
                }
                Ok(Some(t))
            }
            Stitched::Missing(missing) => Err(Error::failure(format!(
                "{} for {} is not in the registry after push",
                image.name,
                missing.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// Signs the index `digest` of `image` and every child it lists, as the registry has
    /// them (cosign format; a signature already there by the key is not written again).
    async fn sign_index(&self, image: &str, digest: &str, key: &SigningKey) -> Result<()> {
        let repo = self.config.registry.repository(image);
        let (_, bytes) = self.registry.get_manifest(&repo, digest).await?;
        let index: crate::image::oci::IndexDoc = serde_json::from_slice(&bytes)
            .map_err(|e| Error::failure(format!("{image}: the index {digest} just written does not parse: {e}")))?;
        let mut subjects = vec![digest.to_string()];
        subjects.extend(index.manifests.into_iter().map(|c| c.digest));
        let done = crate::trust::cosign::sign_all(&self.registry, &self.store, &repo, &subjects, key).await?;
        let written = done.iter().filter(|s| **s != crate::trust::cosign::Signed::Present).count();
        let host = &self.config.registry.host;
        self.progress.note(&format!("signed {host}/{repo}@{digest} and its children ({written} signature(s) written)"));
        Ok(())
    }

    /// Writes the canonical index of `image` when every planned platform's manifest is
    /// in the registry under its key tag (looked up in parallel); otherwise writes
    /// nothing and names the missing platforms. Used after a push and by `archfarm stitch`.
    pub async fn stitch_complete(&self, image: &crate::plan::ImagePlan) -> Result<Stitched> {
        self.stitch_from(image, None).await
    }

    /// [`Farm::stitch_complete`], with the per-platform manifests looked up in the
    /// `staging` namespace of the same registry (where CI jobs pushed them) and brought
    /// into the image's repository without downloading a layer (blobs mounted).
    pub async fn stitch_from(&self, image: &crate::plan::ImagePlan, staging: Option<&str>) -> Result<Stitched> {
        let repo = self.config.registry.repository(&image.name);
        let staging_repo = match staging {
            Some(ns) if !ns.is_empty() => format!("{}/{}", ns.trim_matches('/'), image.name),
            Some(_) => image.name.clone(),
            None => repo.clone(),
        };
        let lookup = &staging_repo;
        let found: Vec<Option<Descriptor>> = futures::stream::iter(image.platforms.iter().map(|(platform, key)| {
            let tag = platform_tag(platform, key);
            async move { self.registry.manifest_head(lookup, &tag).await }
        }))
        .buffered(16)
        .try_collect()
        .await?;
        let mut children = Vec::new();
        let mut missing = Vec::new();
        for ((platform, _), d) in image.platforms.iter().zip(found) {
            match d {
                Some(d) => children.push((platform.clone(), d)),
                None => missing.push(platform.clone()),
            }
        }
        if !missing.is_empty() {
            return Ok(Stitched::Missing(missing));
        }
        let index = if staging_repo == repo {
            // Every child was just found by the HEADs above.
            self.registry.put_index_verified(&repo, &image.index_key, &children, &image.annotations).await?
        } else {
            crate::publish::copy::stitch_from_staging(
                &self.registry,
                &staging_repo,
                &repo,
                &image.index_key,
                &children,
                &image.annotations,
            )
            .await?
        };
        self.progress.note(&format!(
            "stitched {} ({} platforms)",
            self.config.registry.reference(&image.name, &image.index_key),
            children.len()
        ));
        Ok(Stitched::Written(TagReport {
            image: image.name.clone(),
            tag: self.config.registry.reference(&image.name, &image.index_key),
            digest: index.digest,
            platforms: children.iter().map(|(p, _)| p.to_string()).collect(),
        }))
    }

    fn job_report(
        &self,
        job: &Job,
        result: &std::result::Result<(Done, (Outcome, Source)), JobFailure>,
        seconds: f64,
        (started, ended): (SystemTime, SystemTime),
        measured: &Measured,
    ) -> JobReport {
        use crate::support::time::rfc3339_millis;
        let log = self.store.log_path(&job.image, &job.platform, &job.key);
        let traced = measured.trace.get();
        let round = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
        let mut r = JobReport {
            image: job.image.clone(),
            platform: job.platform.to_string(),
            key: job.key.clone(),
            outcome: Outcome::Failed,
            seconds: (seconds * 1000.0).round() / 1000.0,
            source: None,
            stage: None,
            digest: None,
            pushed: None,
            image_id: None,
            log: log.is_file().then(|| log.display().to_string()),
            error: None,
            bad_input: false,
            builder: None,
            route: None,
            backend: None,
            build_platform: job.build_platform.as_ref().map(|p| p.to_string()),
            cross: job.has_cross_stages(),
            parents: job.parents.iter().map(|p| format!("{} {}", p.image, p.platform)).collect(),
            started_at: rfc3339_millis(started),
            ended_at: rfc3339_millis(ended),
            working_at: traced.working_since.map(rfc3339_millis),
            waited_for_parents: round(measured.waited_for_parents),
            waited_for_builder: round(traced.waited_for_builder),
            bytes_pushed: measured.bytes_pushed,
            failing_step: None,
            fault: None,
            retries: traced.retries.clone(),
        };
        match result {
            Ok((done, (outcome, source))) => {
                r.outcome = *outcome;
                r.source = Some(*source);
                r.digest = done
                    .entry
                    .as_ref()
                    .map(|e| e.stored.manifest.digest.clone())
                    .or(done.remote.as_ref().map(|d| d.digest.clone()));
                r.image_id = done.engine_id.clone();
                r.builder = done.placed.as_ref().map(|p| p.builder.clone());
                r.route = done.placed.as_ref().map(|p| p.route);
                r.backend = done.backend;
                r.pushed = done
                    .remote
                    .as_ref()
                    .map(|_| self.config.registry.reference(&job.image, &platform_tag(&job.platform, &job.key)));
                self.progress.finished(&job.image, &job.platform, *outcome, *source, seconds);
            }
            Err(f) => {
                r.error = Some(f.error.message().to_string());
                r.bad_input = f.error.kind() == crate::support::error::Kind::Usage;
                r.stage = Some(f.stage);
                r.source = f.source;
                if f.stage == Stage::Build {
                    // A failed build still ran somewhere: its lane in the report.
                    r.builder = traced.placed.as_ref().map(|p| p.builder.clone());
                    r.route = traced.placed.as_ref().map(|p| p.route);
                    r.failing_step = traced.failing_step.clone();
                    r.fault = traced.fault.or_else(|| f.error.is_disk().then_some(Fault::Local));
                    r.backend = (job.kind == JobKind::Assemble).then_some(BackendKind::Assembler);
                }
                self.progress.failed(&job.image, &job.platform, f.error.message());
            }
        }
        r
    }
}

impl Done {
    /// The content key of the finished job.
    pub fn key(&self) -> &str {
        &self.key
    }
}

fn done_for(job: &Job, entry: Option<Entry>, remote: Option<Descriptor>) -> Done {
    Done {
        image: job.image.clone(),
        platform: job.platform.clone(),
        key: job.key.clone(),
        engine_id: None,
        entry,
        remote,
        placed: None,
        backend: None,
    }
}

#[cfg(test)]
mod tests;
