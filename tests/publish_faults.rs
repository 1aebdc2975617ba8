//! Publishing under faults, on real registries started by the test: a fault-injecting TCP
//! proxy on loopback (resets, requests cut midway, 500s, 429s with Retry-After, stalls;
//! bounded in count and time) in front of a docker-registry. A full push and release
//! still complete with correct digests; a run killed midway never leaves a tag pointing at
//! missing content (checked with skopeo), and the next run finishes the job.

mod common;
mod publish_support;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use publish_support::*;

fn faulty(mut c: Command) -> Command {
    c.env("ARCHFARM_REGISTRY_TIMEOUT", "2")
        .env("ARCHFARM_REGISTRY_ATTEMPTS", "10")
        // Small chunks, so that the busybox layers (~1 MB) go up in resumable PATCHes.
        .env("ARCHFARM_REGISTRY_CHUNK_SIZE", "65536");
    c
}

#[test]
fn push_and_release_through_a_faulty_proxy_complete_with_correct_digests() {
    if !services_up("faulty_proxy") || !tools_up("faulty_proxy") {
        return;
    }
    let reg = TestRegistry::start(Auth::None);
    let proxy = FaultProxy::start(
        &reg.addr,
        Faults {
            reset: 0.12,
            cut: 0.15,
            http500: 0.12,
            http429: 0.08,
            stall: 0.05,
            stall_for: Duration::from_secs(4),
            max_faults: 16,
            fault_window: Duration::from_secs(180),
            throttle: None,
        },
    );
    let repo = Repo::new("faults");
    let via_proxy = format!("{}/{}", proxy.addr, repo.namespace);

    let out = faulty(repo.command(&["build", "--push", "base/busybox", "--registry", &via_proxy, "--json"]))
        .output()
        .unwrap();
    assert!(out.status.success(), "push through faults: {}", stderr(&out));
    let built: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = faulty(repo.command(&["release", "v1", "base/busybox", "--latest", "--registry", &via_proxy, "--json"]))
        .output()
        .unwrap();
    assert!(out.status.success(), "release through faults: {}", stderr(&out));
    let released: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(proxy.fault_count() > 0, "the proxy injected no fault");
    eprintln!("faults injected: {:?}", proxy.faults.lock().unwrap());

    // Checked directly against the registry, not through the proxy.
    let direct = format!("{}/{}/base/busybox", reg.addr, repo.namespace);
    let index_key = built["tags"][0]["tag"].as_str().unwrap().rsplit(':').next().unwrap().to_string();
    for (tag, want) in [
        (index_key.as_str(), built["tags"][0]["digest"].as_str().unwrap()),
        ("v1", released["images"][0]["digest"].as_str().unwrap()),
        ("latest", released["images"][0]["digest"].as_str().unwrap()),
    ] {
        let (ok, raw, err) = skopeo(&["inspect", "--raw", &format!("docker://{direct}:{tag}")], None);
        assert!(ok, "{tag}: {err}");
        assert_eq!(format!("sha256:{}", sha256_hex(&raw)), want, "{tag}");
        let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);
    }
    // Every job's per-platform manifest is what the store recorded.
    for j in built["jobs"].as_array().unwrap() {
        let tag = j["pushed"].as_str().unwrap().rsplit(':').next().unwrap();
        let (ok, raw, err) = skopeo(&["inspect", "--raw", &format!("docker://{direct}:{tag}")], None);
        assert!(ok, "{err}");
        assert_eq!(format!("sha256:{}", sha256_hex(&raw)), j["digest"].as_str().unwrap());
    }
    // skopeo fetches and verifies every blob of every tag.
    let tags = assert_tags_complete(&reg.addr, &format!("{}/base/busybox", repo.namespace), None);
    assert!(tags.contains(&"v1".to_string()));
}

/// Runs `cmd` until the proxy has carried `bytes` upstream, then kills it (SIGKILL).
fn kill_midway(mut cmd: Command, proxy: &FaultProxy, bytes: u64) {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_until("upload traffic through the proxy", 120, || {
        proxy.bytes_up.load(Ordering::Relaxed) > bytes || child.try_wait().unwrap().is_some()
    });
    let finished_early = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    let _ = child.wait();
    assert!(!finished_early, "the run finished before it could be killed; throttle harder");
}

#[test]
fn a_run_killed_midway_never_leaves_a_tag_over_missing_content() {
    if !services_up("killed_midway") || !tools_up("killed_midway") {
        return;
    }
    let repo = Repo::new("killed");
    // Built into the store first, so the killed runs are killed while publishing.
    let out = repo.command(&["build", "base/busybox"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // A push killed midway, through a slow link.
    let b = TestRegistry::start(Auth::None);
    let slow_b = FaultProxy::start(&b.addr, Faults { throttle: Some(256 << 10), ..Faults::default() });
    let to_b = format!("{}/{}", slow_b.addr, repo.namespace);
    kill_midway(repo.command(&["build", "--push", "base/busybox", "--registry", &to_b]), &slow_b, 300_000);
    let repo_path = format!("{}/base/busybox", repo.namespace);
    let tags = assert_tags_complete(&b.addr, &repo_path, None);
    eprintln!("tags after the killed push: {tags:?}");
    // The next run finishes it.
    let out = repo.command(&["build", "--push", "base/busybox", "--registry", &to_b, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let built: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let index_key = built["tags"][0]["tag"].as_str().unwrap().rsplit(':').next().unwrap().to_string();
    assert!(assert_tags_complete(&b.addr, &repo_path, None).contains(&index_key));

    // A release to another registry (blobs streamed across) killed midway.
    let c = TestRegistry::start(Auth::None);
    let slow_c = FaultProxy::start(&c.addr, Faults { throttle: Some(256 << 10), ..Faults::default() });
    let to_c = format!("{}/rel", slow_c.addr);
    kill_midway(
        repo.command(&["release", "v3", "base/busybox", "--latest", "--registry", &to_b, "--to", &to_c]),
        &slow_c,
        300_000,
    );
    let tags = assert_tags_complete(&c.addr, "rel/base/busybox", None);
    assert!(!tags.contains(&"v3".to_string()), "v3 after a killed release: {tags:?}");
    let out = repo
        .command(&["release", "v3", "base/busybox", "--latest", "--registry", &to_b, "--to", &to_c, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rel: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rel["images"][0]["digest"], built["tags"][0]["digest"]);
    let tags = assert_tags_complete(&c.addr, "rel/base/busybox", None);
    assert!(tags.contains(&"v3".to_string()) && tags.contains(&"latest".to_string()), "{tags:?}");
}

#[test]
fn a_registry_that_keeps_failing_gives_a_clear_error_after_bounded_attempts() {
    if !tools_up("bounded_attempts") {
        return;
    }
    let reg = TestRegistry::start(Auth::None);
    let proxy = FaultProxy::start(
        &reg.addr,
        Faults { http500: 1.0, max_faults: 1000, fault_window: Duration::from_secs(600), ..Faults::default() },
    );
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_archfarm"))
        .args(["copy", &format!("{}/ns/app:v1", proxy.addr), &format!("{}/ns/copy:v1", reg.addr)])
        .env("ARCHFARM_REGISTRY_ATTEMPTS", "3")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&proxy.addr), "names the registry: {err}");
    assert!(err.contains("GET manifest ns/app:v1"), "names the operation: {err}");
    assert!(err.contains("500") && err.contains("3 attempts"), "{err}");
    assert_eq!(proxy.fault_count(), 3, "exactly the allowed attempts");
    assert!(started.elapsed() < Duration::from_secs(30));
}
