//! Public bases as users write them (`FROM busybox:1.31.1`), resolved through a Docker Hub
//! mirror: a docker-registry of the test's own on loopback, seeded with a two-platform
//! index under `library/busybox:1.31.1` made from the bundled busybox tarballs. Keys per
//! platform, the resolution cache and its TTL, `--refresh-bases`, `--offline`, mirrors
//! that are dead or failing, and bases nobody has (unresolved, not fatal to the tree).

mod common;
mod publish_support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use archfarm::image::oci::{digest_of, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use archfarm::image::platform::Platform;
use archfarm::image::store::Store;
use archfarm::recipe::config::RegistryRef;
use archfarm::registry::Registry;
use common::*;
use publish_support::*;

const REPO: &str = "library/busybox";
const TAG: &str = "1.31.1";

fn platform(arch: &str) -> Platform {
    Platform { os: "linux".into(), architecture: arch.into(), variant: None }
}

/// Pushes a two-platform index as `library/busybox:1.31.1` to `addr`, its images made
/// from images/base/busybox/busybox-{amd64,arm64}.tar.xz with `label` in their configs
/// (another label: other digests, as when a tag moves). Returns each platform's manifest
/// digest.
fn seed(addr: &str, label: &str) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/base/busybox");
    let mut children = Vec::new();
    let mut digests = BTreeMap::new();
    for arch in ["amd64", "arm64"] {
        let out = Command::new("xz").arg("-dc").arg(src.join(format!("busybox-{arch}.tar.xz"))).output().unwrap();
        assert!(out.status.success(), "xz: {}", String::from_utf8_lossy(&out.stderr));
        let tar = out.stdout;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let layer = store.put_blob(OCI_LAYER_GZIP, &gz.finish().unwrap()).unwrap();
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Labels": {"seed": label}},
            "rootfs": {"type": "layers", "diff_ids": [digest_of(&tar)]}, "history": [],
        });
        let config = store.put_blob(OCI_CONFIG, &serde_json::to_vec(&config).unwrap()).unwrap();
        let manifest =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
        let manifest = store.put_blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap()).unwrap();
        digests.insert(format!("linux/{arch}"), manifest.digest.clone());
        children.push((platform(arch), manifest));
    }
    let registry = Registry::new(&RegistryRef::parse(addr, &[]).unwrap()).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        for (p, m) in &children {
            registry
                .push_image(&store, REPO, &format!("seed-{}-{label}", p.architecture), &store.image(m).unwrap())
                .await
                .unwrap();
        }
        registry.put_index(REPO, TAG, &children, &Default::default()).await.unwrap();
    });
    digests
}

/// A repository with `app` (FROM busybox:1.31.1), `broken` (FROM nosuch:1) and `child`
/// (FROM broken), whose archfarm.yaml names `mirrors` for docker.io.
fn repo(mirrors: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    let list: Vec<String> = mirrors.iter().map(|m| format!("'{m}'")).collect();
    write("archfarm.yaml", &format!("registry_mirrors: {{docker.io: [{}]}}\n", list.join(", ")));
    write("images/app/Dockerfile", "FROM busybox:1.31.1\nCMD [\"/bin/sh\"]\n");
    write("images/broken/Dockerfile", "FROM nosuch:1\n");
    write("images/child/Dockerfile", "FROM archfarm.local/images/broken\n");
    dir
}

fn archfarm(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().unwrap()
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_archfarm"));
    c.args(args)
        .current_dir(dir)
        .env("ARCHFARM_STORE", dir.join("store"))
        .env("ARCHFARM_REGISTRY", format!("{REGISTRY}/t-bases-{}", std::process::id()))
        // There is no Docker Hub here: the upstream attempt fails at once, not after retries.
        .env("ARCHFARM_REGISTRY_ATTEMPTS", "1")
        .env_remove("ARCH")
        .env_remove("ARCHFARM_OFFLINE")
        .env_remove("ARCHFARM_REFRESH_BASES")
        .env_remove("ARCHFARM_CONFIG");
    c
}

fn hash(dir: &Path, arch: &str, extra: &[&str]) -> String {
    let mut args = vec!["hash", "app", "--platform", arch];
    args.extend_from_slice(extra);
    let out = archfarm(dir, &args);
    assert!(out.status.success(), "hash {arch} {extra:?}: {}", stderr(&out));
    stdout(&out)
}

fn platforms_of<'a>(listing: &'a serde_json::Value, image: &str) -> &'a Vec<serde_json::Value> {
    listing["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image"] == image)
        .unwrap_or_else(|| panic!("{image} not listed: {listing:#}"))["platforms"]
        .as_array()
        .unwrap()
}

fn cached_digest(dir: &Path, platform: &str) -> Option<String> {
    std::fs::read_dir(dir.join("store/bases")).ok()?.find_map(|e| {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(e.ok()?.path()).ok()?).ok()?;
        (v["reference"] == "docker.io/library/busybox:1.31.1" && v["platform"] == platform)
            .then(|| v["digest"].as_str().map(str::to_string))
            .flatten()
    })
}

#[test]
fn public_bases_resolve_through_a_mirror_and_unresolved_ones_do_not_sink_the_tree() {
    if !tools_up("bases") {
        return;
    }
    let mirror = TestRegistry::start(Auth::None);
    let seeded = seed(&mirror.addr, "one");
    let dir = repo(std::slice::from_ref(&mirror.addr));
    let dir = dir.path();

    // Keys for both platforms, different, each from its own manifest digest.
    let amd64 = hash(dir, "amd64", &[]);
    let arm64 = hash(dir, "arm64", &[]);
    assert_eq!(amd64.len(), 64);
    assert_ne!(amd64, arm64);
    assert_eq!(cached_digest(dir, "linux/amd64").as_ref(), Some(&seeded["linux/amd64"]));
    assert_eq!(cached_digest(dir, "linux/arm64").as_ref(), Some(&seeded["linux/arm64"]));

    // list: app resolved; broken and its child unresolved with reasons; exit 0.
    let out = archfarm(dir, &["list", "--json"]);
    assert!(out.status.success(), "list: {}", stderr(&out));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for p in platforms_of(&listing, "app") {
        assert_ne!(p["state"], "unresolved", "{p}");
        assert!(p["key"].as_str().is_some_and(|k| k.len() == 64), "{p}");
    }
    let app_amd64 = platforms_of(&listing, "app").iter().find(|p| p["platform"] == "linux/amd64").unwrap();
    assert_eq!(app_amd64["key"], amd64.as_str());
    for p in platforms_of(&listing, "broken") {
        assert_eq!(p["state"], "unresolved", "{p}");
        let reason = p["reason"].as_str().unwrap();
        assert!(reason.contains("docker.io/library/nosuch:1"), "{reason}");
        assert!(reason.contains(&mirror.addr) && reason.contains("not found"), "{reason}");
        assert!(p["key"].is_null(), "{p}");
    }
    for p in platforms_of(&listing, "child") {
        assert_eq!(p["state"], "unresolved", "{p}");
        assert!(p["reason"].as_str().unwrap().contains("its parent broken for"), "{p}");
    }
    let plain = archfarm(dir, &["list"]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(stdout(&plain).contains("unresolved: base image docker.io/library/nosuch:1"), "{}", stdout(&plain));

    // matrix: the unresolved jobs in their own array, exit 0 (the mirror is the registry here).
    let out = command(dir, &["matrix"]).env("ARCHFARM_REGISTRY", format!("{}/farm", mirror.addr)).output().unwrap();
    assert!(out.status.success(), "matrix: {}", stderr(&out));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let unresolved: Vec<&str> =
        m["unresolved"].as_array().unwrap().iter().map(|u| u["image"].as_str().unwrap()).collect();
    assert_eq!(unresolved, ["broken", "broken", "child", "child"], "{m:#}");
    assert_eq!(m["jobs"], 2, "app's two platforms are still built: {m:#}");
    assert_eq!(m["stitch"], serde_json::json!(["app"]), "{m:#}");

    // build / hash of the unresolved image: exit 1 with the reason.
    let out = archfarm(dir, &["build", "broken", "--platform", "amd64"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("docker.io/library/nosuch:1"), "{}", stderr(&out));
    for target in ["load", "local-image"] {
        let out = archfarm(dir, &[target, "broken", "--platform", "amd64"]);
        assert_eq!(out.status.code(), Some(1), "{target}: {}", stderr(&out));
        assert!(stderr(&out).contains("docker.io/library/nosuch:1"), "{target}: {}", stderr(&out));
    }
    let out = archfarm(dir, &["hash", "child", "--platform", "amd64"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("its parent broken"), "{}", stderr(&out));

    // The tag moves on the mirror: the key stays within the TTL, changes with --refresh-bases.
    let moved = seed(&mirror.addr, "two");
    assert_ne!(moved["linux/amd64"], seeded["linux/amd64"]);
    assert_eq!(hash(dir, "amd64", &[]), amd64, "within the TTL the cached resolution holds");
    let refreshed = hash(dir, "amd64", &["--refresh-bases"]);
    assert_ne!(refreshed, amd64, "--refresh-bases sees the moved tag");
    assert_eq!(cached_digest(dir, "linux/amd64").as_ref(), Some(&moved["linux/amd64"]));
    assert_eq!(hash(dir, "amd64", &[]), refreshed, "the refreshed resolution is cached");
    assert_eq!(hash(dir, "arm64", &[]), arm64, "arm64 was not refreshed and keeps its key");
    // ARCHFARM_REFRESH_BASES=1 does what the flag does.
    let out =
        command(dir, &["hash", "app", "--platform", "arm64"]).env("ARCHFARM_REFRESH_BASES", "1").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(stdout(&out), arm64);

    // --offline uses the cache whatever its age, and names what it lacks.
    assert_eq!(hash(dir, "amd64", &["--offline"]), refreshed);
    std::fs::remove_dir_all(dir.join("store/bases")).unwrap();
    let out = archfarm(dir, &["hash", "app", "--platform", "amd64", "--offline"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("docker.io/library/busybox:1.31.1 for linux/amd64") && err.contains("offline"), "{err}");
    let out = command(dir, &["hash", "app", "--platform", "amd64"]).env("ARCHFARM_OFFLINE", "1").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "ARCHFARM_OFFLINE=1: {}", stderr(&out));
    assert!(!dir.join("store/bases").exists() || cached_digest(dir, "linux/amd64").is_none());

    // list --names resolves nothing (no cache entry appears, even with an empty cache).
    let out = archfarm(dir, &["list", "--names"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(cached_digest(dir, "linux/amd64").is_none(), "list --names resolved a base");

    // A tag that is one image, not an index: its config says which platform it serves.
    std::fs::create_dir_all(dir.join("images/single")).unwrap();
    std::fs::write(dir.join("images/single/Dockerfile"), "FROM busybox:seed-amd64-one\n").unwrap();
    let out = archfarm(dir, &["hash", "single", "--platform", "amd64"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = archfarm(dir, &["hash", "single", "--platform", "arm64"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not linux/arm64"), "{}", stderr(&out));
}

/// A tiny HTTP server that answers every request with 500.
struct Failing {
    addr: String,
    child: Child,
}

impl Failing {
    fn start() -> Failing {
        let port = free_port();
        let script = format!(
            "import http.server\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def answer(self):\n\
             \x20       self.send_response(500); self.send_header('Content-Length', '0'); self.end_headers()\n\
             \x20   do_GET = do_HEAD = answer\n\
             \x20   def log_message(self, *a): pass\n\
             http.server.ThreadingHTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
        );
        let child = Command::new("python3").args(["-c", &script]).spawn().unwrap();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("http://{addr}/v2/");
        wait_until("the failing server answering", 30, || {
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", &url])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout) == "500")
                .unwrap_or(false)
        });
        Failing { addr, child }
    }
}

impl Drop for Failing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dead_and_failing_mirrors_fall_through_in_bounded_time() {
    if !tools_up("bases") {
        return;
    }
    let live = TestRegistry::start(Auth::None);
    let seeded = seed(&live.addr, "one");
    let failing = Failing::start();
    let dead = format!("127.0.0.1:{}", free_port());
    for first in [dead, failing.addr.clone()] {
        let dir = repo(&[first.clone(), live.addr.clone()]);
        let dir = dir.path();
        let start = Instant::now();
        // The full default retry budget: a mirror's own deadline is what bounds it.
        let out = command(dir, &["hash", "app", "--platform", "amd64"])
            .env_remove("ARCHFARM_REGISTRY_ATTEMPTS")
            .output()
            .unwrap();
        let took = start.elapsed();
        assert!(out.status.success(), "first mirror {first}: {}", stderr(&out));
        assert!(took < Duration::from_secs(10), "first mirror {first}: took {took:?}");
        assert_eq!(cached_digest(dir, "linux/amd64").as_ref(), Some(&seeded["linux/amd64"]));

        // A base nobody has names every place asked.
        let out = archfarm(dir, &["hash", "broken", "--platform", "amd64"]);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        for place in [first.as_str(), live.addr.as_str(), "registry-1.docker.io"] {
            assert!(err.contains(place), "{place} not named: {err}");
        }
    }
}

#[test]
fn gvisor_tree_with_no_registry_knowing_ubuntu_lists_every_image_unresolved() {
    if !tools_up("bases") {
        return;
    }
    let mirror = TestRegistry::start(Auth::None);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gvisor-images");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("archfarm.yaml");
    std::fs::write(&config, format!("registry_mirrors: {{docker.io: ['{}']}}\n", mirror.addr)).unwrap();
    let start = Instant::now();
    let out = command(dir.path(), &["list", "--json", "--images", fixture.to_str().unwrap()])
        .env("ARCHFARM_CONFIG", &config)
        .output()
        .unwrap();
    assert!(out.status.success(), "list: {}", stderr(&out));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let catalog =
        archfarm::recipe::catalog::discover(&fixture, &archfarm::image::platform::ArchTable::builtin()).unwrap();
    let images = listing["images"].as_array().unwrap();
    assert_eq!(images.len(), catalog.images.len(), "every image is listed");
    for image in images {
        let platforms = image["platforms"].as_array().unwrap();
        assert!(!platforms.is_empty(), "{image}");
        for p in platforms {
            assert_eq!(p["state"], "unresolved", "{image}");
            let reason = p["reason"].as_str().unwrap();
            assert!(reason.contains("docker.io/library/ubuntu:22.04") && reason.contains(&mirror.addr), "{reason}");
        }
        assert!(image["index_key"].is_null(), "{image}");
    }
    assert!(start.elapsed() < Duration::from_secs(60), "took {:?}", start.elapsed());
}
