//! BuildKit builds through `archfarm::engine::Engine` against the real dockerd 20.10
//! (ci/services.sh starts it, with QEMU binfmt and a second engine at tcp://127.0.0.1:2376).
//! Without an engine the tests print a skip note, unless CI=true, where they fail.
//!
//! There is no Docker Hub: each test first builds busybox bases FROM scratch with the
//! classic builder (the tarballs committed in images/base/busybox), tagged uniquely.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use archfarm::engine::request::{Backend, BuildRequest, BuildSecret, StepFailure};
use archfarm::engine::{BuildFailure, Engine, KEY_LABEL};
use archfarm::image::platform::Platform;
use archfarm::image::store::Store;
use archfarm::recipe::context::Context;
use archfarm::recipe::scan::{scan, Links};
use archfarm::support::secret::Secret;
use sha2::{Digest, Sha256};

const SECOND_ENGINE: &str = "tcp://127.0.0.1:2376";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

async fn connect(endpoint: &str) -> Option<Engine> {
    match Engine::connect_to(endpoint, Duration::from_secs(10)).await {
        Ok(e) => Some(e),
        Err(e) => {
            assert!(!in_ci(), "CI=true but no Docker engine at {endpoint}: {}", e.message());
            eprintln!("SKIP: no Docker engine at {endpoint}: {}", e.message());
            None
        }
    }
}

fn platform(arch: &str) -> Platform {
    Platform { os: "linux".into(), architecture: arch.into(), variant: None }
}

fn nonce() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{}-{nanos}-{:x}", std::process::id(), fastrand::u32(..))
}

/// `docker -H <host> ARGS` (Debian's engine, the newer CLI on PATH): success and output.
fn docker(host: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").arg("-H").arg(host).args(args).output().expect("docker CLI on PATH");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn host(engine: &Engine) -> String {
    match engine.endpoint() {
        e if e.starts_with('/') => format!("unix://{e}"),
        e => e.to_string(),
    }
}

/// Writes `files` into a new folder `dir` and scans it as a build context.
fn context(dir: &Path, files: &[(&str, &[u8])]) -> Context {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    scan(dir, Links::InsideFolder, None).unwrap()
}

/// Tags removed when a test ends, however it ends.
struct Cleanup(Vec<(String, String)>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for (host, tag) in self.0.iter().rev() {
            let _ = Command::new("docker").args(["-H", host, "rmi", "-f", tag]).output();
        }
    }
}

/// One test's run: an engine, a temp folder, a nonce, and what to clean up.
struct Run {
    engine: Engine,
    tmp: tempfile::TempDir,
    nonce: String,
    cleanup: Cleanup,
}

impl Run {
    async fn new(endpoint: &str) -> Option<Run> {
        let engine = connect(endpoint).await?;
        assert!(engine.buildkit_available().await.unwrap(), "BuildKit should be available on {endpoint}");
        Some(Run { engine, tmp: tempfile::tempdir().unwrap(), nonce: nonce(), cleanup: Cleanup(Vec::new()) })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A unique tag `archfarm-bk-test/<name>:<nonce>`, removed at the end.
    fn tag(&mut self, name: &str) -> String {
        let tag = format!("archfarm-bk-test/{name}:{}", self.nonce);
        self.cleanup.0.push((host(&self.engine), tag.clone()));
        tag
    }

    /// A busybox base for `arch`, built FROM scratch with the classic builder; its tag.
    async fn base(&mut self, arch: &str) -> String {
        let tarball = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("images/base/busybox/busybox-{arch}.tar.xz"));
        let dockerfile = format!(
            "FROM scratch\nADD busybox-{arch}.tar.xz /\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"
        );
        let name = format!("busybox-{arch}.tar.xz");
        let ctx = context(
            &self.path(&format!("base-{arch}")),
            &[("Dockerfile", dockerfile.as_bytes()), (&name, &std::fs::read(tarball).unwrap())],
        );
        let tag = self.tag(&format!("busybox-{arch}"));
        let spec = Spec { tags: vec![tag.clone()], ..Spec::new(Backend::Classic, arch) };
        self.build(&ctx, &spec, &format!("base-{arch}")).await.unwrap_or_else(|e| panic!("{}", e.into_error()));
        tag
    }

    async fn build(&self, ctx: &Context, spec: &Spec, log: &str) -> Result<String, BuildFailure> {
        self.engine.build_logged(spec.request(ctx, &self.path(&format!("logs/{log}.log"))), "").await
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("logs/{name}.log"))).unwrap()
    }

    /// `docker run --rm --platform linux/<arch> <image> sh -c <script>`'s output.
    fn run(&self, arch: &str, image: &str, script: &str) -> String {
        let (ok, out) = docker(
            &host(&self.engine),
            &["run", "--rm", "--platform", &format!("linux/{arch}"), image, "sh", "-c", script],
        );
        assert!(ok, "docker run {image}: {out}");
        out
    }
}

/// The owned parts of a [`BuildRequest`].
struct Spec {
    backend: Backend,
    platform: Platform,
    text: Option<String>,
    args: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    tags: Vec<String>,
    target: Option<String>,
    secrets: Vec<BuildSecret>,
}

impl Spec {
    fn new(backend: Backend, arch: &str) -> Spec {
        Spec {
            backend,
            platform: platform(arch),
            text: None,
            args: BTreeMap::new(),
            labels: BTreeMap::new(),
            tags: Vec::new(),
            target: None,
            secrets: Vec::new(),
        }
    }

    fn request<'a>(&'a self, ctx: &'a Context, log: &'a Path) -> BuildRequest<'a> {
        BuildRequest {
            context: ctx,
            dockerfile_path: "Dockerfile",
            dockerfile_text: self.text.as_deref(),
            platform: &self.platform,
            build_args: &self.args,
            labels: &self.labels,
            tags: &self.tags,
            log_path: log,
            backend: self.backend,
            target: self.target.as_deref(),
            secrets: &self.secrets,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_for_amd64_and_arm64_with_labels_args_tags_and_readable_logs() {
    let Some(mut run) = Run::new("unix:///var/run/docker.sock").await else { return };
    for arch in ["amd64", "arm64"] {
        let started = Instant::now();
        let base = run.base(arch).await;
        let base_id = run.engine.resolve_image(&base).await.unwrap().unwrap().0;
        let recipe = "FROM base\nARG TARGETARCH\nARG GREETING\nCOPY hello.txt /\n\
                      RUN echo \"$TARGETARCH $GREETING\" > /arch && uname -m > /uname && echo compiling && cat /hello.txt\n";
        let ctx = context(
            &run.path(&format!("child-{arch}")),
            &[("Dockerfile", recipe.as_bytes()), ("hello.txt", run.nonce.as_bytes())],
        );
        let key = format!("bk-{arch}-{}", run.nonce);
        let tags = vec![run.tag(&format!("child-{arch}")), run.tag(&format!("child-{arch}-extra"))];
        let spec = Spec {
            // FROM the base's image ID, as the farm writes it: BuildKit gets an ID tag.
            text: Some(recipe.replace("FROM base", &format!("FROM {base_id}"))),
            args: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
            labels: BTreeMap::from([(KEY_LABEL.to_string(), key.clone())]),
            tags: tags.clone(),
            ..Spec::new(Backend::BuildKit, arch)
        };
        let id =
            run.build(&ctx, &spec, &format!("child-{arch}")).await.unwrap_or_else(|e| panic!("{}", e.into_error()));
        eprintln!("{arch}: base + BuildKit child in {:.1}s", started.elapsed().as_secs_f64());
        assert!(id.starts_with("sha256:"), "{id}");
        assert_eq!(run.engine.image_platform(&id).await.unwrap(), Some(platform(arch)));
        assert_eq!(run.engine.find_by_label(&key).await.unwrap().as_deref(), Some(id.as_str()));
        for t in &tags {
            assert_eq!(run.engine.resolve_image(t).await.unwrap().map(|r| r.0).as_deref(), Some(id.as_str()), "{t}");
        }
        let uname = if arch == "arm64" { "aarch64" } else { "x86_64" };
        assert_eq!(run.run(arch, &id, "cat /arch /uname"), format!("{arch} hello\n{uname}\n"));
        assert_eq!(run.run(arch, &id, "cat /hello.txt"), run.nonce);

        let log = run.log(&format!("child-{arch}"));
        let step = log.lines().find(|l| l.contains("[3/3] RUN echo")).unwrap_or_else(|| panic!("no RUN step:\n{log}"));
        let number = step.split(' ').next().unwrap();
        assert!(number.starts_with('#'), "{step}");
        let output = format!("{number} ");
        assert!(
            log.lines().any(|l| l.starts_with(&output) && l.ends_with(" compiling")),
            "no timed output line of {number}:\n{log}"
        );
        assert!(log.contains(&format!("{number} DONE ")), "{log}");
        assert!(log.contains("# archfarm: image id sha256:"), "{log}");

        // A failing step is named, and it is the recipe's fault.
        let failing = context(
            &run.path(&format!("fail-{arch}")),
            &[("Dockerfile", format!("FROM {base}\nRUN echo before\nRUN false\n").as_bytes())],
        );
        let spec = Spec { tags: vec![run.tag(&format!("fail-{arch}"))], ..Spec::new(Backend::BuildKit, arch) };
        let failure = run.build(&failing, &spec, &format!("fail-{arch}")).await.unwrap_err();
        let BuildFailure::Recipe(f) = failure else { panic!("not the recipe's fault: {failure:?}") };
        // The step is data on the failure, as BuildKit names it.
        assert_eq!((f.step.as_deref(), f.instruction()), (Some("[3/3] RUN false"), Some("RUN false")));
        assert!(f.in_run_step());
        let msg = f.error.message();
        assert!(msg.contains(&format!("for linux/{arch} failed at `[3/3] RUN false`: ")), "{msg}");
        assert!(msg.contains("exit code: 1") && msg.contains(&format!("fail-{arch}.log")), "{msg}");
        assert!(run.log(&format!("fail-{arch}")).contains("ERROR: "), "{}", run.log(&format!("fail-{arch}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_mounts_persist_between_builds_and_targets_pick_a_stage() {
    let Some(mut run) = Run::new("unix:///var/run/docker.sock").await else { return };
    // An engine through a ready-made client (as the fleet's ssh bridge) is told its socket.
    let sock = "unix:///var/run/docker.sock";
    let client = bollard::Docker::connect_with_unix(sock, 120, bollard::API_DEFAULT_VERSION).unwrap();
    let bridged = Engine::connect_client(client, "ssh://bridged", Duration::from_secs(10)).await.unwrap();
    assert!(!bridged.buildkit_available().await.unwrap());
    let bridged = bridged.with_raw_endpoint(sock).unwrap();
    assert!(bridged.buildkit_available().await.unwrap());
    let base = run.base("amd64").await;
    let file = format!("/c/{}", run.nonce);
    let write = format!("FROM {base}\nRUN --mount=type=cache,target=/c echo written > {file}\n");
    let read = format!("FROM {base}\nRUN --mount=type=cache,target=/c cat {file} > /got\n");
    let one = context(&run.path("cache-1"), &[("Dockerfile", write.as_bytes())]);
    let two = context(&run.path("cache-2"), &[("Dockerfile", read.as_bytes())]);
    let spec = |run: &mut Run, name: &str| Spec { tags: vec![run.tag(name)], ..Spec::new(Backend::BuildKit, "amd64") };
    let s1 = spec(&mut run, "cache-1");
    // The first build goes through the bridged engine.
    let log = run.path("logs/cache-1.log");
    bridged.build_logged(s1.request(&one, &log), "").await.unwrap_or_else(|e| panic!("{}", e.into_error()));
    let s2 = spec(&mut run, "cache-2");
    let id = run.build(&two, &s2, "cache-2").await.unwrap_or_else(|e| panic!("{}", e.into_error()));
    assert_eq!(run.run("amd64", &id, "cat /got"), "written\n");

    let stages = format!("FROM {base} AS first\nRUN echo first > /stage\nFROM {base}\nRUN echo second > /stage\n");
    let ctx = context(&run.path("stages"), &[("Dockerfile", stages.as_bytes())]);
    for backend in [Backend::BuildKit, Backend::Classic] {
        let name = format!("stages-{}", backend.name());
        let spec = Spec { target: Some("first".into()), tags: vec![run.tag(&name)], ..Spec::new(backend, "amd64") };
        let id = run.build(&ctx, &spec, &name).await.unwrap_or_else(|e| panic!("{}", e.into_error()));
        assert_eq!(run.run("amd64", &id, "cat /stage"), "first\n", "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_build_and_nothing_else() {
    let Some(mut run) = Run::new("unix:///var/run/docker.sock").await else { return };
    let base = run.base("amd64").await;
    let value = format!("s3cr3t-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let secrets = vec![BuildSecret { id: "tok".into(), value: Secret::new(value.clone()) }];
    // The nonce makes the step new: a secret is not part of BuildKit's cache key.
    let recipe =
        format!("FROM {base}\nCOPY nonce /\nRUN --mount=type=secret,id=tok cat /run/secrets/tok | sha256sum > /h\n");
    let ctx = context(&run.path("secret"), &[("Dockerfile", recipe.as_bytes()), ("nonce", run.nonce.as_bytes())]);
    let tag = run.tag("secret");
    let spec = Spec { tags: vec![tag.clone()], secrets: secrets.clone(), ..Spec::new(Backend::BuildKit, "amd64") };
    let request_debug = format!("{:?}", spec.request(&ctx, Path::new("/x")));
    assert!(!request_debug.contains(&value) && request_debug.contains("<redacted>"), "{request_debug}");
    let id = run.build(&ctx, &spec, "secret").await.unwrap_or_else(|e| panic!("{}", e.into_error()));
    let hash = hex::encode(Sha256::digest(value.as_bytes()));
    assert_eq!(run.run("amd64", &id, "cut -d' ' -f1 /h"), format!("{hash}\n"));
    assert!(!run.log("secret").contains(&value));
    let saved = Command::new("docker").args(["-H", &host(&run.engine), "save", &tag]).output().unwrap();
    assert!(saved.status.success() && saved.stdout.len() > 100_000);
    assert!(!saved.stdout.windows(value.len()).any(|w| w == value.as_bytes()), "the secret is in the image");

    // A failing variant: its error and log do not hold the value either.
    let failing = format!("FROM {base}\nRUN --mount=type=secret,id=tok test \"$(cat /run/secrets/tok)\" = wrong\n");
    let ctx = context(&run.path("secret-fail"), &[("Dockerfile", failing.as_bytes())]);
    let spec = Spec { secrets: secrets.clone(), ..Spec::new(Backend::BuildKit, "amd64") };
    let failure = run.build(&ctx, &spec, "secret-fail").await.unwrap_err();
    let shown = format!("{failure:?}");
    let BuildFailure::Recipe(StepFailure { error: e, .. }) = failure else { panic!("{shown}") };
    assert!(e.message().contains("RUN --mount=type=secret,id=tok"), "{}", e.message());
    assert!(!shown.contains(&value) && !run.log("secret-fail").contains(&value));

    // A secret the build needs but was not given: the session answers NotFound.
    let missing = format!("FROM {base}\nRUN --mount=type=secret,id=other,required cat /run/secrets/other\n");
    let ctx = context(&run.path("secret-missing"), &[("Dockerfile", missing.as_bytes())]);
    let failure = run.build(&ctx, &spec, "secret-missing").await.unwrap_err();
    let BuildFailure::Recipe(StepFailure { error: e, .. }) = failure else { panic!("{failure:?}") };
    assert!(e.message().contains("other"), "{}", e.message());

    // The classic builder cannot mount secrets: a usage error before anything runs.
    let spec = Spec { secrets, ..Spec::new(Backend::Classic, "amd64") };
    let failure = run.build(&ctx, &spec, "secret-classic").await.unwrap_err();
    let BuildFailure::Local(e) = failure else { panic!("{failure:?}") };
    assert_eq!(e.exit_code(), 2);
    assert!(e.message().contains("need BuildKit") && e.message().contains("tok"), "{}", e.message());
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_build_cancels_it_on_the_engine() {
    let Some(mut run) = Run::new("unix:///var/run/docker.sock").await else { return };
    let base = run.base("amd64").await;
    let marker = format!("marker{}", run.nonce.replace('-', ""));
    let recipe = format!("FROM {base}\nRUN sh -c 'sleep 60; echo {marker}'\n");
    let ctx = context(&run.path("sleep"), &[("Dockerfile", recipe.as_bytes())]);
    let key = format!("bk-cancel-{}", run.nonce);
    let spec = Spec {
        labels: BTreeMap::from([(KEY_LABEL.to_string(), key.clone())]),
        tags: vec![run.tag("sleep")],
        ..Spec::new(Backend::BuildKit, "amd64")
    };
    let log = run.path("logs/sleep.log");
    let engine = run.engine.clone();
    let build = engine.build_logged(spec.request(&ctx, &log), "");
    let started = Instant::now();
    let watch = async {
        loop {
            if !processes_with(&marker).is_empty() {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the RUN step never started");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        r = build => panic!("the build ended: {r:?}"),
        () = watch => {}
    }
    // The build future is dropped here.
    let dropped = Instant::now();
    while !processes_with(&marker).is_empty() {
        assert!(dropped.elapsed() < Duration::from_secs(20), "still running: {:?}", processes_with(&marker));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("RUN step gone {:.1}s after the drop", dropped.elapsed().as_secs_f64());
    assert_eq!(run.engine.find_by_label(&key).await.unwrap(), None);
    let (ok, containers) = docker(&host(&run.engine), &["ps", "-aq", "--filter", &format!("label={KEY_LABEL}={key}")]);
    assert!(ok && containers.trim().is_empty(), "{containers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkit_images_are_reproducible_across_engines_and_both_builders_import() {
    let Some(mut local) = Run::new("unix:///var/run/docker.sock").await else { return };
    let Some(mut second) = Run::new(SECOND_ENGINE).await else { return };
    second.nonce.clone_from(&local.nonce);
    let store = Store::open(&local.path("store")).unwrap();
    let mut manifests = Vec::new();
    for run in [&mut local, &mut second] {
        let base = run.base("amd64").await;
        let base_id = run.engine.resolve_image(&base).await.unwrap().unwrap().0;
        let classic = run.engine.export_to_store(&base_id, &store, &Default::default()).await.unwrap();
        let recipe = format!("FROM {base}\nARG TARGETARCH\nCOPY hello.txt /\nRUN echo $TARGETARCH > /arch\n");
        let ctx = context(&run.path("repro"), &[("Dockerfile", recipe.as_bytes()), ("hello.txt", b"hi\n")]);
        let spec = Spec { tags: vec![run.tag("repro")], ..Spec::new(Backend::BuildKit, "amd64") };
        let id = run.build(&ctx, &spec, "repro").await.unwrap_or_else(|e| panic!("{}", e.into_error()));
        let built = run.engine.export_to_store(&id, &store, &Default::default()).await.unwrap();
        eprintln!(
            "{}: classic {} buildkit {}",
            run.engine.endpoint(),
            classic.image.manifest.digest,
            built.image.manifest.digest
        );
        manifests.push((id, classic.image.manifest, built.image.manifest));
    }
    assert_ne!(manifests[0].0, manifests[1].0, "the engines' own image IDs differ (build times)");
    let digests = |i: usize| (manifests[i].1.digest.clone(), manifests[i].2.digest.clone());
    assert_eq!(digests(0), digests(1), "the same recipes on two engines give the same stored manifests");
    // The stored BuildKit image loads back and runs.
    let loaded = local.engine.load_from_store(&store, &store.image(&manifests[0].2).unwrap(), &[]).await.unwrap();
    assert_eq!(local.run("amd64", &loaded, "cat /arch /hello.txt"), "amd64\nhi\n");
}

/// Stops the extra engine on a port when dropped.
struct StopEngine(&'static str);
impl Drop for StopEngine {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/extra-dockerd.sh");
        let _ = Command::new("bash").arg(script).args(["--stop", self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_builds_work_on_a_tls_engine() {
    const PORT: &str = "2391";
    if connect("unix:///var/run/docker.sock").await.is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("tls");
    std::fs::create_dir_all(certs.join("engine")).unwrap();
    common::make_ca(&certs, "ca");
    common::make_cert(&certs, "ca", "server", "serverAuth,clientAuth");
    common::make_cert(&certs, "ca", "client", "clientAuth");
    for (from, to) in [("ca.pem", "ca.pem"), ("server-cert.pem", "cert.pem"), ("server-key.pem", "key.pem")] {
        std::fs::copy(certs.join(from), certs.join("engine").join(to)).unwrap();
    }
    let started = Instant::now();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/extra-dockerd.sh");
    let _stop = StopEngine(PORT);
    let st =
        Command::new("bash").arg(script).arg(PORT).env("ARCHFARM_DOCKERD_TLS", certs.join("engine")).status().unwrap();
    assert!(st.success(), "could not start the TLS engine");
    eprintln!("TLS engine up in {:.1}s", started.elapsed().as_secs_f64());

    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (ca, cert, key) = (certs.join("ca.pem"), certs.join("client-cert.pem"), certs.join("client-key.pem"));
    let endpoint = format!("tcp://127.0.0.1:{PORT}");
    let docker = bollard::Docker::connect_with_ssl(
        &format!("https://127.0.0.1:{PORT}"),
        &key,
        &cert,
        &ca,
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap();
    let engine = Engine::connect_client(docker, &endpoint, Duration::from_secs(20)).await.unwrap();
    assert!(!engine.buildkit_available().await.unwrap(), "no raw TLS connection was set up yet");
    let engine = engine.with_tls_files(&ca, &cert, &key).unwrap();
    assert!(engine.buildkit_available().await.unwrap());
    // Tags are not cleaned up: the engine is stopped at the end (and the CLI has no TLS flags here).
    let mut run = Run { engine, tmp, nonce: nonce(), cleanup: Cleanup(Vec::new()) };
    let base = run.base("amd64").await;
    run.cleanup.0.clear();
    let value = format!("tls-{:016x}", fastrand::u64(..));
    let hash = hex::encode(Sha256::digest(value.as_bytes()));
    let recipe = format!(
        "FROM {base}\nCOPY nonce /\nRUN --mount=type=secret,id=tok test \"$(sha256sum < /run/secrets/tok | cut -d' ' -f1)\" = {hash}\n"
    );
    let ctx = context(&run.path("tls-secret"), &[("Dockerfile", recipe.as_bytes()), ("nonce", run.nonce.as_bytes())]);
    let spec = Spec {
        secrets: vec![BuildSecret { id: "tok".into(), value: Secret::new(value.clone()) }],
        ..Spec::new(Backend::BuildKit, "amd64")
    };
    run.build(&ctx, &spec, "tls-secret").await.unwrap_or_else(|e| panic!("{}", e.into_error()));
    assert!(!run.log("tls-secret").contains(&value));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_dies_mid_build_is_the_engines_fault() {
    const PORT: &str = "2392";
    if connect("unix:///var/run/docker.sock").await.is_none() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/extra-dockerd.sh");
    let _stop = StopEngine(PORT);
    assert!(Command::new("bash").arg(&script).arg(PORT).status().unwrap().success(), "could not start an engine");
    let Some(mut run) = Run::new(&format!("tcp://127.0.0.1:{PORT}")).await else { return };
    let base = run.base("amd64").await;
    let marker = format!("dies{}", run.nonce.replace('-', ""));
    let recipe = format!("FROM {base}\nRUN sh -c 'sleep 30; echo {marker}'\n");
    let ctx = context(&run.path("dies"), &[("Dockerfile", recipe.as_bytes())]);
    let spec = Spec::new(Backend::BuildKit, "amd64");
    let build = run.build(&ctx, &spec, "dies");
    let kill = async {
        let started = Instant::now();
        while processes_with(&marker).is_empty() {
            assert!(started.elapsed() < Duration::from_secs(30), "the RUN step never started");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stop = tokio::task::block_in_place(|| Command::new("bash").arg(&script).args(["--stop", PORT]).status());
        assert!(stop.unwrap().success());
    };
    let (failure, ()) = tokio::join!(build, kill);
    let failure = failure.unwrap_err();
    let BuildFailure::Engine(e) = failure else { panic!("not the engine's fault: {failure:?}") };
    assert!(e.message().contains("failed at `[2/2] RUN sh -c 'sleep 30; echo"), "{}", e.message());
}
