//! The engine against a real dockerd (ci/services.sh starts one). Without an engine the
//! tests print a skip note, unless CI=true, where they fail.
//!
//! Base content comes without Docker Hub: Debian's busybox-static data tarballs
//! committed in images/base/busybox, ADDed FROM scratch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use archfarm::engine::request::{Backend, BuildRequest};
use archfarm::engine::{Engine, KEY_LABEL};
use archfarm::image::docker_archive;
use archfarm::image::platform::Platform;
use archfarm::image::store::Store;
use archfarm::recipe::context::{Context, ContextEntry, EntryKind};
use sha2::{Digest, Sha256};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn skip(why: &str) {
    assert!(!in_ci(), "CI=true but {why}");
    eprintln!("SKIP: {why}");
}

async fn engine() -> Option<Engine> {
    match Engine::connect(Duration::from_secs(10)).await {
        Ok(e) => Some(e),
        Err(e) => {
            skip(&format!("no Docker engine: {}", e.message()));
            None
        }
    }
}

/// The busybox-static data tarball committed with the bundled base image.
fn busybox(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("images/base/busybox/busybox-{arch}.tar.xz"))
}

fn platform(arch: &str) -> Platform {
    Platform { os: "linux".into(), architecture: arch.into(), variant: None }
}

/// A hand-made context: writes `files` into `dir` and records their real hashes.
fn context(dir: &Path, files: &[(&str, &[u8])]) -> Context {
    let mut entries = Vec::new();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
        entries.push(ContextEntry {
            path: name.to_string(),
            kind: EntryKind::File {
                executable: false,
                size: content.len() as u64,
                sha256: Sha256::digest(content).into(),
            },
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Context { dir: dir.to_path_buf(), entries }
}

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().expect("docker CLI on PATH");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

struct Cleanup(Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for r in self.0.iter().rev() {
            let _ = Command::new("docker").args(["rmi", "-f", r]).output();
        }
    }
}

const BASE: &str = "FROM scratch\nADD busybox.tar.xz /\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_exports_loads_and_reports_failures() {
    let Some(engine) = engine().await else { return };
    let (bb_arm, bb_amd) = (busybox("arm64"), busybox("amd64"));
    eprintln!("engine {} API {}", engine.endpoint(), engine.api_version());
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let run = format!("{}-{nanos}", std::process::id());
    let mut cleanup = Cleanup(Vec::new());
    let no_args = BTreeMap::new();

    // Two base images FROM scratch, built concurrently for two platforms.
    let mut bases = Vec::new();
    for (arch, tarball) in [("arm64", &bb_arm), ("amd64", &bb_amd)] {
        let dir = tmp.path().join(format!("base-{arch}"));
        std::fs::create_dir(&dir).unwrap();
        let ctx =
            context(&dir, &[("Dockerfile", BASE.as_bytes()), ("busybox.tar.xz", &std::fs::read(tarball).unwrap())]);
        let key = format!("test-{arch}-{run}");
        let labels = BTreeMap::from([(KEY_LABEL.to_string(), key.clone())]);
        let tag = format!("archfarm-test/busybox:{arch}-{run}");
        cleanup.0.push(tag.clone());
        bases.push((arch, ctx, labels, vec![tag], key));
    }
    let started = Instant::now();
    let no_args_ref = &no_args;
    let builds = bases.iter().map(|(arch, ctx, labels, tags, _)| {
        let log = tmp.path().join(format!("logs/base-{arch}.log"));
        let engine = engine.clone();
        let platform = platform(arch);
        async move {
            engine
                .build(BuildRequest {
                    context: ctx,
                    dockerfile_path: "Dockerfile",
                    dockerfile_text: None,
                    platform: &platform,
                    build_args: no_args_ref,
                    labels,
                    tags,
                    log_path: &log,
                    backend: Backend::Classic,
                    target: None,
                    secrets: &[],
                })
                .await
        }
    });
    let ids: Vec<String> = futures::future::join_all(builds).await.into_iter().map(|r| r.unwrap()).collect();
    eprintln!("two base builds (arm64 + amd64, concurrent): {:.1}s", started.elapsed().as_secs_f64());
    let (arm_base, amd_base) = (ids[0].clone(), ids[1].clone());
    assert!(arm_base.starts_with("sha256:") && arm_base != amd_base);
    assert_eq!(engine.image_platform(&arm_base).await.unwrap(), Some(platform("arm64")));
    assert_eq!(engine.image_platform(&amd_base).await.unwrap(), Some(platform("amd64")));
    assert_eq!(engine.find_by_label(&bases[0].4).await.unwrap().as_deref(), Some(arm_base.as_str()));
    assert_eq!(engine.find_by_label("no-such-key").await.unwrap(), None);
    assert_eq!(
        engine.image_platform("sha256:0000000000000000000000000000000000000000000000000000000000000000").await.unwrap(),
        None
    );

    // A child FROM the parent's exact image ID, through a replaced Dockerfile.
    let child_dir = tmp.path().join("child");
    std::fs::create_dir(&child_dir).unwrap();
    let child_ctx = context(&child_dir, &[("Dockerfile", b"FROM parent\n"), ("note.txt", b"hi\n")]);
    let child_text = format!("FROM {arm_base}\nRUN uname -m > /arch\n");
    let started = Instant::now();
    let child = engine
        .build(BuildRequest {
            context: &child_ctx,
            dockerfile_path: "Dockerfile",
            dockerfile_text: Some(&child_text),
            platform: &platform("arm64"),
            build_args: &no_args,
            labels: &BTreeMap::new(),
            tags: &[],
            log_path: &tmp.path().join("logs/child.log"),
            backend: Backend::Classic,
            target: None,
            secrets: &[],
        })
        .await
        .unwrap();
    cleanup.0.push(child.clone());
    eprintln!("child build (arm64, one RUN under QEMU): {:.1}s", started.elapsed().as_secs_f64());
    let run_arch = |id: &str| docker(&["run", "--rm", "--platform", "linux/arm64", id, "cat", "/arch"]);
    let (ok, out) = run_arch(&child);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "aarch64");

    // Into the store (twice: same manifest), out of the engine, back in. The export is
    // made reproducible, so its config is not the engine's image ID.
    let started = Instant::now();
    let imported = engine.export_to_store(&child, &store, &Default::default()).await.unwrap();
    eprintln!("export_to_store: {:.2}s", started.elapsed().as_secs_f64());
    assert_ne!(imported.image.config_digest, child);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.blob_path(&imported.image.config_digest).unwrap()).unwrap())
            .unwrap();
    assert_eq!(config["created"], "1970-01-01T00:00:00Z", "{config:#}");
    assert!(config.get("container").is_none(), "{config:#}");
    for blob in store.manifest_blobs(&imported.image.manifest.digest).unwrap() {
        assert!(store.has_blob(&blob), "{blob}");
    }
    let again = engine.export_to_store(&child, &store, &Default::default()).await.unwrap();
    assert_eq!(again.image.manifest, imported.image.manifest);

    // docker_archive::import of one `docker save` output twice, as it is: same manifest
    // digest, and the config digest is the image ID.
    let save = tmp.path().join("child.tar");
    let (ok, out) = docker(&["save", "-o", save.to_str().unwrap(), &child]);
    assert!(ok, "{out}");
    let a = docker_archive::import(&store, std::fs::File::open(&save).unwrap()).unwrap();
    let b = docker_archive::import(&store, std::fs::File::open(&save).unwrap()).unwrap();
    assert_eq!(a[0].image.manifest, b[0].image.manifest);
    assert_eq!(a[0].image.config_digest, child);

    let (ok, out) = docker(&["rmi", &child]);
    assert!(ok, "{out}");
    assert_eq!(engine.image_platform(&child).await.unwrap(), None);
    let started = Instant::now();
    let tag = format!("archfarm-test/child:{run}");
    cleanup.0.push(tag.clone());
    let loaded = engine.load_from_store(&store, &imported.image, std::slice::from_ref(&tag)).await.unwrap();
    eprintln!("load_from_store: {:.2}s", started.elapsed().as_secs_f64());
    assert_eq!(loaded, imported.image.config_digest, "the engine's ID of a loaded image is its stored config digest");
    let (ok, out) = run_arch(&tag);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "aarch64");
    // Saved again from the engine and made reproducible: the same bytes (idempotent).
    let round_trip = engine.export_to_store(&loaded, &store, &Default::default()).await.unwrap();
    assert_eq!(round_trip.image.manifest, imported.image.manifest);

    // A failing RUN names the step and keeps the output in the log.
    let fail_log = tmp.path().join("logs/deep/fail.log");
    let fail_text = format!("FROM {amd_base}\nRUN echo boom-output && exit 3\n");
    let err = engine
        .build(BuildRequest {
            context: &child_ctx,
            dockerfile_path: "Dockerfile",
            dockerfile_text: Some(&fail_text),
            platform: &platform("amd64"),
            build_args: &no_args,
            labels: &BTreeMap::new(),
            tags: &[],
            log_path: &fail_log,
            backend: Backend::Classic,
            target: None,
            secrets: &[],
        })
        .await
        .unwrap_err();
    let msg = err.message();
    assert_eq!(err.exit_code(), 1);
    assert!(msg.contains("Step 2/2 : RUN echo boom-output && exit 3"), "{msg}");
    assert!(msg.contains("non-zero code: 3"), "{msg}");
    assert!(msg.contains(fail_log.to_str().unwrap()), "{msg}");
    let log = std::fs::read_to_string(&fail_log).unwrap();
    assert!(log.contains("boom-output"), "{log}");

    // A file that no longer matches its hash stops the build.
    let changed_dir = tmp.path().join("changed");
    std::fs::create_dir(&changed_dir).unwrap();
    let changed_ctx = context(&changed_dir, &[("Dockerfile", b"FROM scratch\nCOPY f /f\n"), ("f", b"original")]);
    std::fs::write(changed_dir.join("f"), b"modified").unwrap();
    let err = engine
        .build(BuildRequest {
            context: &changed_ctx,
            dockerfile_path: "Dockerfile",
            dockerfile_text: None,
            platform: &platform("amd64"),
            build_args: &no_args,
            labels: &BTreeMap::new(),
            tags: &["archfarm-test/changed:x".to_string()],
            log_path: &tmp.path().join("logs/changed.log"),
            backend: Backend::Classic,
            target: None,
            secrets: &[],
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("changed during the build of archfarm-test/changed:x for linux/amd64; run again"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("changed/f"), "{}", err.message());
}

#[tokio::test]
async fn unreachable_endpoint_fails_within_its_deadline() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let started = Instant::now();
    let err = Engine::connect_to(&endpoint, Duration::from_secs(2)).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(err.message().contains(&endpoint), "{}", err.message());
    assert!(err.message().contains("ci/services.sh"), "{}", err.message());
    assert_eq!(err.exit_code(), 1);
}

#[test]
fn hostile_archives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    for evil in [&b"../evil"[..], b"/abs/evil"] {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..evil.len()].copy_from_slice(evil);
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"x"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let err = docker_archive::import(&store, &bytes[..]).unwrap_err();
        assert!(err.message().contains("unsafe entry path"), "{}", err.message());
    }
}

/// An engine that refuses the request before reading the context (here: an invalid tag,
/// HTTP 500 up front) must not leave the context writer blocked on a full channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_refusal_before_the_context_is_read_does_not_hang() {
    let Some(engine) = engine().await else { return };
    let tmp = tempfile::tempdir().unwrap();
    let big = vec![0x5au8; 8 << 20];
    let ctx = context(tmp.path(), &[("Dockerfile", b"FROM scratch\nCOPY big /big\n"), ("big", &big)]);
    let bogus = platform("amd64");
    let log = tmp.path().join("refused.log");
    let empty = BTreeMap::new();
    let bad_tag = ["Not A Valid Tag!".to_string()];
    let build = engine.build(BuildRequest {
        context: &ctx,
        dockerfile_path: "Dockerfile",
        dockerfile_text: None,
        platform: &bogus,
        build_args: &empty,
        labels: &empty,
        log_path: &log,
        backend: Backend::Classic,
        target: None,
        secrets: &[],
        tags: &bad_tag,
    });
    let err = tokio::time::timeout(Duration::from_secs(60), build).await.expect("build returned").unwrap_err();
    assert!(err.message().contains("invalid reference format"), "{}", err.message());
    assert_eq!(err.exit_code(), 1);
}
