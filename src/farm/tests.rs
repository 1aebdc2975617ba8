//! The coordinator's rules through the [`Backend`] seam: fake backends that write small
//! real images into a real store (in a temporary folder), so no dockerd is needed. The
//! registry is either a loopback port nothing listens on (a test passes only if the
//! rule it checks never reaches the registry) or the in-process registry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use http::Method;

use super::*;
use crate::image::oci::{OCI_CONFIG, OCI_MANIFEST};
use crate::image::platform::ArchTable;
use crate::plan::{ImagePlan, Needs, Parent, Skip, Unresolved};
use crate::recipe::config::Overrides;
use crate::recipe::context::Context;
use crate::registry::in_process::InProcess;
use sha2::Digest as _;

/// A backend that produces a tiny image per job (a config naming the key, no layers),
/// fails the jobs it is told to, and holds the keys it is told to in its own place.
struct Fake {
    store: Store,
    by: BackendKind,
    /// (image, platform) jobs whose `produce` fails.
    failing: BTreeSet<(String, String)>,
    /// Keys its own place (an engine) holds.
    holds: BTreeSet<String>,
    /// What was asked of it, in order: `find image/platform`, `produce image/platform`.
    calls: Mutex<Vec<String>>,
    /// The parents each produced job was given: `image/platform` -> parents' keys.
    given: Mutex<BTreeMap<String, Vec<String>>>,
    /// The configuration error it reports (a usage error).
    config_error: Option<&'static str>,
    /// Said next to each `find` in `calls` (what the registry had been asked by then).
    at_find: Option<Box<dyn Fn() -> String + Send + Sync>>,
}

impl Fake {
    fn new(store: &Store, by: BackendKind) -> Fake {
        Fake {
            store: store.clone(),
            by,
            failing: BTreeSet::new(),
            holds: BTreeSet::new(),
            calls: Mutex::default(),
            given: Mutex::default(),
            config_error: None,
            at_find: None,
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn write(&self, job: &Job) -> Result<StoredImage> {
        let config = serde_json::json!({
            "architecture": job.platform.architecture, "os": job.platform.os,
            "config": { "Labels": { "fake.key": job.key } },
            "rootfs": { "type": "layers", "diff_ids": [] },
        });
        let config = self.store.put_blob(OCI_CONFIG, &serde_json::to_vec(&config).unwrap())?;
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [],
        });
        let manifest = self.store.put_blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap())?;
        Ok(StoredImage { manifest, config_digest: config.digest })
    }
}

fn name(job: &Job) -> String {
    format!("{}/{}", job.image, job.platform)
}

impl Backend for Fake {
    fn produce<'a>(
        &'a self,
        job: &'a Job,
        parents: &'a Parents,
        _: Option<&'a str>,
        trace: &'a Trace,
    ) -> BoxFuture<'a, Result<Produced>> {
        async move {
            self.calls.lock().unwrap().push(format!("produce {}", name(job)));
            trace.working();
            let keys =
                job.parents.iter().map(|p| parents[&(p.image.clone(), p.platform.clone())].key.clone()).collect();
            self.given.lock().unwrap().insert(name(job), keys);
            if self.failing.contains(&(job.image.clone(), job.platform.to_string())) {
                return Err(Error::failure("the fake build failed"));
            }
            Ok(Produced { image: self.write(job)?, by: self.by, placed: None })
        }
        .boxed()
    }

    fn find<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<Option<StoredImage>>> {
        async move {
            let at = self.at_find.as_ref().map(|f| format!(" ({})", f())).unwrap_or_default();
            self.calls.lock().unwrap().push(format!("find {}{at}", name(job)));
            if self.holds.contains(&job.key) {
                return Ok(Some(self.write(job)?));
            }
            Ok(None)
        }
        .boxed()
    }

    fn configuration_error(&self) -> Option<Error> {
        self.config_error.map(Error::usage)
    }
}

/// A configuration in a temporary folder: its own store, and a registry on a loopback
/// port nothing listens on (port 9, discard).
fn setup() -> (tempfile::TempDir, Config, Store) {
    let dir = tempfile::tempdir().unwrap();
    let overrides = Overrides {
        store: Some(dir.path().join("store")),
        registry: Some("127.0.0.1:9/farm".into()),
        ..Overrides::default()
    };
    let config = Config::load(dir.path(), &overrides).unwrap();
    let store = Store::open(&config.store).unwrap();
    (dir, config, store)
}

fn farm(config: Config, store: Store, engines: Arc<Fake>, assembler: Arc<Fake>) -> Arc<Farm> {
    let registry = Registry::new(&config.registry).unwrap();
    farm_with(config, store, registry, engines, assembler)
}

/// A farm whose registry is `reg`.
fn farm_on(reg: &InProcess, mut config: Config, store: Store, engines: Arc<Fake>) -> Arc<Farm> {
    config.registry = reg.registry_ref();
    let assembler = Arc::new(Fake::new(&store, BackendKind::Assembler));
    farm_with(config, store, reg.client(), engines, assembler)
}

fn farm_with(config: Config, store: Store, registry: Registry, engines: Arc<Fake>, assembler: Arc<Fake>) -> Arc<Farm> {
    Arc::new(Farm {
        registry,
        config,
        store,
        local: Arc::new(LocalEngine::default()),
        progress: Progress::new(false),
        engines,
        assembler,
        invocation: "test".into(),
    })
}

fn platform(name: &str) -> Platform {
    ArchTable::builtin().parse_platform(name).unwrap()
}

fn job(image: &str, arch: &str, kind: JobKind, parents: &[&str]) -> Job {
    let platform = platform(arch);
    Job {
        image: image.into(),
        key: hex::encode(sha2::Sha256::digest(format!("{image} {arch}"))),
        kind,
        recipe: if kind == JobKind::Assemble { "image.yaml" } else { "Dockerfile" }.into(),
        recipe_text: String::new(),
        context: Context { dir: std::path::PathBuf::from("/nonexistent"), entries: Vec::new() },
        build_args: BTreeMap::new(),
        parents: parents
            .iter()
            .map(|p| Parent { image: p.to_string(), reference: format!("farm/{p}"), platform: platform.clone() })
            .collect(),
        bases: BTreeMap::new(),
        pinned: BTreeMap::new(),
        build_platform: None,
        needs: Needs::default(),
        stamp: Default::default(),
        platform,
    }
}

fn plan(jobs: Vec<Job>) -> Plan {
    Plan { jobs, skipped: Vec::new(), images: Vec::new(), unresolved: Vec::new() }
}

fn every_job(plan: &Plan) -> Vec<(String, Platform)> {
    plan.jobs.iter().map(|j| (j.image.clone(), j.platform.clone())).collect()
}

fn report_of<'a>(report: &'a BuildReport, image: &str, arch: &str) -> &'a JobReport {
    let p = platform(arch).to_string();
    report.jobs.iter().find(|j| j.image == image && j.platform == p).unwrap_or_else(|| panic!("no {image} {arch}"))
}

#[tokio::test]
async fn the_memo_asks_the_store_then_the_backends_place_and_records_what_it_found() {
    let (_dir, config, store) = setup();
    let web = job("web", "amd64", JobKind::Engine, &[]);
    let mut engines = Fake::new(&store, BackendKind::Classic);
    engines.holds.insert(web.key.clone());
    let (engines, assembler) = (Arc::new(engines), Arc::new(Fake::new(&store, BackendKind::Assembler)));
    let farm = farm(config, store.clone(), Arc::clone(&engines), Arc::clone(&assembler));
    let plan = plan(vec![web.clone()]);

    // Not in the store: the engine holds it, so it is taken from there (the registry,
    // which does not answer, is never asked) and recorded in the store.
    let first = farm.run(&plan, &BuildOptions::default()).await.unwrap();
    let r = report_of(&first, "web", "amd64");
    assert_eq!((r.outcome, r.source, r.error.as_deref()), (Outcome::Cached, Some(Source::Engine), None));
    assert_eq!(engines.calls(), ["find web/linux/amd64"]);
    let entry = store.entry(&web.key).unwrap().expect("the engine's image is recorded in the store");
    assert_eq!(r.digest.as_deref(), Some(entry.stored.manifest.digest.as_str()));

    // Now the store answers first: the engine is not asked again, nothing is built.
    let second = farm.run(&plan, &BuildOptions::default()).await.unwrap();
    let r = report_of(&second, "web", "amd64");
    assert_eq!((r.outcome, r.source), (Outcome::Cached, Some(Source::Store)));
    assert_eq!(engines.calls(), ["find web/linux/amd64"]);
    assert!(assembler.calls().is_empty(), "a Dockerfile job never reaches the assembler");
}

#[tokio::test]
async fn the_job_kind_picks_the_backend_and_rebuild_skips_the_memo() {
    let (_dir, config, store) = setup();
    let base = job("base", "arm64", JobKind::Assemble, &[]);
    let app = job("app", "arm64", JobKind::Engine, &["base"]);
    let engines = Arc::new(Fake::new(&store, BackendKind::BuildKit));
    let assembler = Arc::new(Fake::new(&store, BackendKind::Assembler));
    let farm = farm(config, store.clone(), Arc::clone(&engines), Arc::clone(&assembler));
    let plan = plan(vec![base.clone(), app.clone()]);
    let opts = BuildOptions { rebuild: every_job(&plan), ..BuildOptions::default() };

    let report = farm.run(&plan, &opts).await.unwrap();
    assert!(!report.failed(), "{:?}", report.errors);
    let (b, a) = (report_of(&report, "base", "arm64"), report_of(&report, "app", "arm64"));
    assert_eq!((b.outcome, b.source, b.backend), (Outcome::Built, Some(Source::Build), Some(BackendKind::Assembler)));
    assert_eq!((a.outcome, a.backend), (Outcome::Built, Some(BackendKind::BuildKit)));
    assert_eq!(assembler.calls(), ["produce base/linux/arm64"], "rebuild asks no memo");
    assert_eq!(engines.calls(), ["produce app/linux/arm64"]);
    // The child was given its parent from the store, and both results are recorded.
    assert_eq!(engines.given.lock().unwrap()["app/linux/arm64"], std::slice::from_ref(&base.key));
    for j in [&base, &app] {
        let entry = store.entry(&j.key).unwrap().expect("recorded");
        assert_eq!(Some(entry.stored.manifest.digest), report_of(&report, &j.image, "arm64").digest);
    }
}

#[tokio::test]
async fn a_failed_parent_fails_its_children_and_nothing_else() {
    let (_dir, config, store) = setup();
    let jobs = vec![
        job("base", "amd64", JobKind::Engine, &[]),
        job("base", "arm64", JobKind::Engine, &[]),
        job("child", "amd64", JobKind::Engine, &["base"]),
        job("child", "arm64", JobKind::Engine, &["base"]),
        job("grandchild", "amd64", JobKind::Engine, &["child"]),
        job("other", "amd64", JobKind::Engine, &[]),
    ];
    let mut engines = Fake::new(&store, BackendKind::Classic);
    engines.failing.insert(("base".into(), platform("amd64").to_string()));
    let engines = Arc::new(engines);
    let assembler = Arc::new(Fake::new(&store, BackendKind::Assembler));
    let farm = farm(config, store, Arc::clone(&engines), assembler);
    let plan = plan(jobs);
    let report = farm.run(&plan, &BuildOptions { rebuild: every_job(&plan), ..BuildOptions::default() }).await.unwrap();

    let base = report_of(&report, "base", "amd64");
    assert_eq!((base.outcome, base.stage), (Outcome::Failed, Some(Stage::Build)));
    assert_eq!(base.error.as_deref(), Some("the fake build failed"));
    let child = report_of(&report, "child", "amd64");
    assert_eq!((child.outcome, child.stage), (Outcome::Failed, Some(Stage::Parent)));
    assert_eq!(child.error.as_deref(), Some("not built: its parent base failed"));
    let grandchild = report_of(&report, "grandchild", "amd64");
    assert_eq!(grandchild.error.as_deref(), Some("not built: its parent child failed"));
    for (image, arch) in [("base", "arm64"), ("child", "arm64"), ("other", "amd64")] {
        assert_eq!(report_of(&report, image, arch).outcome, Outcome::Built, "{image} {arch}");
    }
    let produced: BTreeSet<String> = engines.calls().into_iter().collect();
    assert!(!produced.contains("produce child/linux/amd64"), "a child of a failed parent is never built");
    assert!(!produced.contains("produce grandchild/linux/amd64"));
    assert_eq!(report.errors.len(), 3, "{:?}", report.errors);
    assert!(report.failed());
}

#[tokio::test]
async fn skips_and_unresolved_jobs_are_reported_with_their_reasons() {
    let (_dir, config, store) = setup();
    let engines = Arc::new(Fake::new(&store, BackendKind::Classic));
    let farm = farm(config, store.clone(), Arc::clone(&engines), Arc::new(Fake::new(&store, BackendKind::Assembler)));
    let mut plan = plan(Vec::new());
    plan.skipped.push(Skip {
        image: "web".into(),
        platform: platform("s390x"),
        reason: "it builds FROM base, which is not available for linux/s390x".into(),
    });
    plan.unresolved.push(Unresolved {
        image: "bad".into(),
        platform: platform("amd64"),
        reason: "Dockerfile:3: unknown instruction".into(),
        invalid: true,
    });
    plan.unresolved.push(Unresolved {
        image: "offline".into(),
        platform: platform("amd64"),
        reason: "base busybox:1 not found".into(),
        invalid: false,
    });
    let report = farm.run(&plan, &BuildOptions::default()).await.unwrap();

    assert_eq!(report.skipped.len(), 1);
    assert_eq!(
        (report.skipped[0].image.as_str(), report.skipped[0].platform.as_str(), report.skipped[0].reason.as_str()),
        ("web", "linux/s390x", "it builds FROM base, which is not available for linux/s390x")
    );
    let bad = report_of(&report, "bad", "amd64");
    assert_eq!((bad.outcome, bad.stage, bad.bad_input), (Outcome::Failed, Some(Stage::Recipe), true));
    let offline = report_of(&report, "offline", "amd64");
    assert_eq!((offline.stage, offline.bad_input), (Some(Stage::Base), false));
    assert_eq!(
        report.errors,
        ["bad for linux/amd64: Dockerfile:3: unknown instruction", "offline for linux/amd64: base busybox:1 not found"]
    );
    assert!(engines.calls().is_empty(), "a skipped or unresolved job reaches no backend");
}

#[tokio::test]
async fn a_backends_configuration_error_fails_the_run_after_the_jobs() {
    let (_dir, config, store) = setup();
    let mut engines = Fake::new(&store, BackendKind::Classic);
    engines.config_error = Some("builder b has `buildkit: true`, but its engine offers no BuildKit");
    let engines = Arc::new(engines);
    let farm = farm(config, store.clone(), Arc::clone(&engines), Arc::new(Fake::new(&store, BackendKind::Assembler)));
    let plan = plan(vec![job("web", "amd64", JobKind::Engine, &[])]);
    let e = farm.run(&plan, &BuildOptions { rebuild: every_job(&plan), ..BuildOptions::default() }).await.unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.message().contains("buildkit: true"), "{}", e.message());
    assert_eq!(engines.calls(), ["produce web/linux/amd64"], "every job ran before the run failed");
}

/// How many requests of `method` to a path containing `path` the registry received.
fn count(reg: &InProcess, method: Method, path: &str) -> usize {
    reg.requests().iter().filter(|r| r.method == method && r.target.contains(path)).count()
}

/// Puts a small image for `job` in the registry under its per-platform key tag, in the
/// repository named after its image; returns the tag and the manifest digest.
fn seed(reg: &InProcess, job: &Job) -> (String, String) {
    let config = serde_json::json!({ "architecture": job.platform.architecture, "os": job.platform.os }).to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
        "config": { "mediaType": OCI_CONFIG, "digest": reg.put_blob(&job.image, config.as_bytes()), "size": config.len() },
    });
    let tag = platform_tag(&job.platform, &job.key);
    let digest = reg.put_manifest(&job.image, &tag, manifest.to_string().as_bytes(), OCI_MANIFEST);
    (tag, digest)
}

#[tokio::test]
async fn the_registry_is_asked_after_the_engine_and_its_image_is_not_rebuilt() {
    let reg = Arc::new(InProcess::start().await);
    let (_dir, config, store) = setup();
    let web = job("web", "amd64", JobKind::Engine, &[]);
    // The registry holds web's per-platform key tag.
    let (tag, digest) = seed(&reg, &web);
    let mut engines = Fake::new(&store, BackendKind::Classic);
    let seen = Arc::clone(&reg);
    engines.at_find =
        Some(Box::new(move || format!("{} manifest requests", count(&seen, Method::HEAD, "/manifests/"))));
    let engines = Arc::new(engines);
    let farm = farm_on(&reg, config, store, Arc::clone(&engines));

    let report = farm.run(&plan(vec![web]), &BuildOptions::default()).await.unwrap();
    let r = report_of(&report, "web", "amd64");
    assert_eq!((r.outcome, r.source, r.error.as_deref()), (Outcome::Cached, Some(Source::Registry), None));
    assert_eq!(r.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(r.pushed, Some(format!("{}/web:{tag}", reg.addr())));
    // The engine was asked first, before any manifest request, and nothing was built.
    assert_eq!(engines.calls(), ["find web/linux/amd64 (0 manifest requests)"]);
    assert_eq!(count(&reg, Method::HEAD, &format!("/v2/web/manifests/{tag}")), 1);
}

#[tokio::test]
async fn a_registry_that_refuses_fails_the_job_instead_of_rebuilding() {
    for status in [401, 503] {
        let reg = InProcess::start().await;
        let (_dir, config, store) = setup();
        let engines = Arc::new(Fake::new(&store, BackendKind::Classic));
        let farm = farm_on(&reg, config, store, Arc::clone(&engines));
        reg.fail_when(Some(Method::HEAD), "/manifests/", 1000, status);

        let report = farm.run(&plan(vec![job("web", "amd64", JobKind::Engine, &[])]), &BuildOptions::default()).await;
        let report = report.unwrap();
        let r = report_of(&report, "web", "amd64");
        assert_eq!((r.outcome, r.stage), (Outcome::Failed, Some(Stage::Memo)), "{status}: {:?}", r.error);
        assert!(r.error.as_deref().unwrap_or("").contains(&status.to_string()), "{status}: {:?}", r.error);
        assert_eq!(engines.calls(), ["find web/linux/amd64"], "{status}: never rebuilt over a registry that refused");
        assert!(report.failed());
    }
}

#[tokio::test]
async fn the_canonical_tag_is_written_only_over_every_platform() {
    for failing in [None, Some("arm64")] {
        let reg = InProcess::start().await;
        let (_dir, config, store) = setup();
        let jobs = vec![job("web", "amd64", JobKind::Engine, &[]), job("web", "arm64", JobKind::Engine, &[])];
        let mut engines = Fake::new(&store, BackendKind::Classic);
        if let Some(arch) = failing {
            engines.failing.insert(("web".into(), platform(arch).to_string()));
        }
        let farm = farm_on(&reg, config, store, Arc::new(engines));
        let index_key = hex::encode(sha2::Sha256::digest("web index"));
        let mut plan = plan(jobs);
        plan.images.push(ImagePlan {
            name: "web".into(),
            platforms: plan.jobs.iter().map(|j| (j.platform.clone(), j.key.clone())).collect(),
            index_key: index_key.clone(),
            annotations: BTreeMap::from([("org.opencontainers.image.revision".to_string(), "abc".to_string())]),
        });
        let opts = BuildOptions { push: true, rebuild: every_job(&plan), ..BuildOptions::default() };
        let report = farm.run(&plan, &opts).await.unwrap();

        let amd64 = &plan.jobs[0];
        assert!(reg.tags("web").contains(&platform_tag(&amd64.platform, &amd64.key)), "the good platform is pushed");
        let stitched = reg.tags("web").contains(&index_key);
        match failing {
            None => {
                assert!(stitched, "{:?}", report.errors);
                let (_, index) = reg.manifest("web", &index_key).unwrap();
                let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
                assert_eq!(index["annotations"], serde_json::json!({"org.opencontainers.image.revision": "abc"}));
                assert_eq!(report.tags.len(), 1);
                assert_eq!(report.tags[0].platforms, ["linux/amd64", "linux/arm64"]);
                assert!(!report.failed(), "{:?}", report.errors);
            }
            Some(_) => {
                assert!(!stitched, "no tag points at an incomplete image");
                assert!(report.tags.is_empty());
                assert!(
                    report
                        .errors
                        .iter()
                        .any(|e| e.starts_with("web: canonical tag not written because a platform failed")),
                    "{:?}",
                    report.errors
                );
                assert_eq!(count(&reg, Method::PUT, &format!("/manifests/{index_key}")), 0);
            }
        }
    }
}

#[tokio::test]
async fn a_parent_only_in_the_registry_is_fetched_into_the_store_before_its_child_is_built() {
    for fault in [None, Some(503)] {
        let reg = InProcess::start().await;
        let (_dir, config, store) = setup();
        let base = job("base", "amd64", JobKind::Engine, &[]);
        let app = job("app", "amd64", JobKind::Engine, &["base"]);
        let (_, digest) = seed(&reg, &base);
        if let Some(status) = fault {
            // The memo's HEAD finds the parent; fetching its manifest fails.
            reg.fail_when(Some(Method::GET), "/manifests/", 1000, status);
        }
        let engines = Arc::new(Fake::new(&store, BackendKind::Classic));
        let farm = farm_on(&reg, config, store.clone(), Arc::clone(&engines));
        let plan = plan(vec![base.clone(), app.clone()]);
        let opts = BuildOptions { rebuild: vec![("app".into(), app.platform.clone())], ..BuildOptions::default() };
        let report = farm.run(&plan, &opts).await.unwrap();

        assert_eq!(report_of(&report, "base", "amd64").source, Some(Source::Registry));
        let a = report_of(&report, "app", "amd64");
        match fault {
            None => {
                assert_eq!(a.outcome, Outcome::Built, "{:?}", a.error);
                let entry = store.entry(&base.key).unwrap().expect("the parent is fetched into the store");
                assert_eq!(entry.stored.manifest.digest, digest);
                assert_eq!(engines.given.lock().unwrap()["app/linux/amd64"], std::slice::from_ref(&base.key));
                assert_eq!(engines.calls(), ["find base/linux/amd64", "produce app/linux/amd64"]);
            }
            Some(_) => {
                assert_eq!((a.outcome, a.stage), (Outcome::Failed, Some(Stage::Build)));
                assert_eq!(engines.calls(), ["find base/linux/amd64"], "no build without its parent in the store");
                assert!(store.entry(&base.key).unwrap().is_none());
            }
        }
    }
}

#[tokio::test]
async fn a_pushed_build_gets_its_attestations_before_its_key_tag_and_a_rerun_writes_none() {
    let reg = InProcess::start().await;
    let (_dir, config, store) = setup();
    let web = job("web", "amd64", JobKind::Engine, &[]);
    let farm = farm_on(&reg, config, store.clone(), Arc::new(Fake::new(&store, BackendKind::Classic)));
    let plan = plan(vec![web.clone()]);
    let opts = BuildOptions { push: true, ..BuildOptions::default() };
    let report = farm.run(&plan, &opts).await.unwrap();
    assert!(!report.failed(), "{:?}", report.errors);

    let manifest = store.entry(&web.key).unwrap().unwrap().stored.manifest;
    let referrers = farm.registry().referrers("web", &manifest.digest).await.unwrap();
    let mut predicates: Vec<_> = referrers
        .iter()
        .map(|r| r.annotations.as_ref().unwrap()[crate::trust::attestation::PREDICATE_ANNOTATION].clone())
        .collect();
    predicates.sort();
    assert_eq!(predicates, ["https://slsa.dev/provenance/v1", "https://spdx.dev/Document"]);
    assert!(referrers.iter().all(|r| r.artifact_type.as_deref() == Some(crate::trust::attestation::ARTIFACT_TYPE)));
    // The key tag is the registry memo: it is written after the attestations.
    let puts: Vec<String> = reg.requests().into_iter().filter(|r| r.method == Method::PUT).map(|r| r.target).collect();
    let key_tag = puts.iter().position(|t| t.ends_with(&platform_tag(&web.platform, &web.key))).unwrap();
    let attached = puts.iter().rposition(|t| t.contains(&referrers_tag(&manifest.digest))).unwrap();
    assert!(attached < key_tag, "{puts:?}");

    let before = reg.requests().iter().filter(|r| r.method != Method::GET && r.method != Method::HEAD).count();
    let again = farm.run(&plan, &opts).await.unwrap();
    assert!(!again.failed(), "{:?}", again.errors);
    let after = reg.requests().iter().filter(|r| r.method != Method::GET && r.method != Method::HEAD).count();
    assert_eq!(after, before, "a no-op run writes no attestation");
}

fn referrers_tag(digest: &str) -> String {
    crate::registry::referrers::fallback_tag(digest).unwrap()
}

#[tokio::test]
async fn an_image_built_without_push_is_attested_when_a_later_run_pushes_it() {
    let reg = InProcess::start().await;
    let (_dir, config, store) = setup();
    let web = job("web", "amd64", JobKind::Assemble, &[]);
    let farm = farm_on(&reg, config, store.clone(), Arc::new(Fake::new(&store, BackendKind::Classic)));
    let plan = plan(vec![web.clone()]);
    let built = farm.run(&plan, &BuildOptions::default()).await.unwrap();
    assert!(!built.failed() && reg.tags("web").is_empty(), "{:?}", built.errors);
    let entry = store.entry(&web.key).unwrap().unwrap();
    assert!(entry.provenance.is_some(), "the build's provenance is kept with its memo entry");

    let pushed = farm.run(&plan, &BuildOptions { push: true, ..BuildOptions::default() }).await.unwrap();
    assert_eq!(report_of(&pushed, "web", "amd64").source, Some(Source::Store));
    let referrers = farm.registry().referrers("web", &entry.stored.manifest.digest).await.unwrap();
    assert_eq!(referrers.len(), 2, "{referrers:?}");
}
