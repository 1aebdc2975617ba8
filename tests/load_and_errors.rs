//! `archfarm load` (gVisor's load-<image>) and bad input: each error names the file,
//! image or platform, with exit 2 for usage/configuration and 1 for failures, and no
//! canonical tag is ever written over an incomplete set of platforms.

mod common;
use common::*;

#[test]
fn load_pulls_from_the_registry_when_the_key_is_there() {
    if !services_up("load") {
        return;
    }
    let repo = Repo::new("ld");
    let built = repo.json(&["build", "uname", "--push", "--json"]);
    let arm = built["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["image"] == "uname" && j["platform"] == "linux/arm64")
        .unwrap()
        .clone();
    let key = arm["key"].as_str().unwrap().to_string();

    // Forget everything locally: the engine images for these keys and the store.
    for j in built["jobs"].as_array().unwrap() {
        let ids =
            docker(&["images", "-q", "--filter", &format!("label=dev.archfarm.key={}", j["key"].as_str().unwrap())]);
        for id in stdout(&ids).lines() {
            docker(&["rmi", "-f", id]);
        }
    }
    std::fs::remove_dir_all(repo.path().join("store")).unwrap();

    let out = repo.command(&["load", "uname", "--json"]).env("ARCH", "aarch64").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = report["jobs"].as_array().unwrap().iter().find(|j| j["image"] == "uname").unwrap().clone();
    assert_eq!(job["outcome"], "cached");
    assert_eq!(job["source"], "registry", "{job:#}");

    for tag in ["latest", key.as_str()] {
        let r = format!("archfarm.local/images/uname:{tag}");
        let arch = docker(&["image", "inspect", "--format", "{{.Architecture}}", &r]);
        assert_eq!(stdout(&arch), "arm64", "{r}: {}", stderr(&arch));
    }
    let run = docker(&["run", "--rm", "--platform", "linux/arm64", "archfarm.local/images/uname:latest"]);
    assert_eq!(stdout(&run), "aarch64", "{}", stderr(&run));
}

#[test]
fn load_of_a_platform_the_image_lacks_says_so_and_succeeds() {
    let repo = Repo::new("na");
    let out = repo.command(&["load", "base/busybox"]).env("ARCH", "riscv64").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("not available for linux/riscv64"), "{}", stdout(&out));
}

#[test]
fn hash_is_stable_and_accepts_aliases() {
    let repo = Repo::new("hs");
    let a = repo.run(&["hash", "uname", "--platform", "linux/aarch64"]);
    let b = repo.run(&["hash", "uname", "--platform", "arm64"]);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
    assert_eq!(stdout(&a).len(), 64);
    let c = repo.command(&["hash", "uname"]).env("ARCH", "x86_64").output().unwrap();
    assert_ne!(stdout(&a), stdout(&c), "the platform is part of the key");
}

fn assert_usage_error(out: &std::process::Output, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(out));
    let err = stderr(out);
    for n in needles {
        assert!(err.contains(n), "stderr should name {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_configuration_and_usage_exit_2_naming_what_is_wrong() {
    let repo = Repo::new("bad");
    std::fs::write(repo.path().join("archfarm.yaml"), "platforms: [linux/amd64]\nregistyr: x\n").unwrap();
    assert_usage_error(&repo.run(&["list"]), &["archfarm.yaml", "registyr"]);
    std::fs::remove_file(repo.path().join("archfarm.yaml")).unwrap();

    assert_usage_error(&repo.run(&["build", "--platform", "linux/sparc64"]), &["sparc64", "amd64"]);
    assert_usage_error(&repo.run(&["hash", "nosuchimage"]), &["nosuchimage"]);
    assert_usage_error(&repo.run(&["build", "--bogus-flag"]), &["--bogus-flag"]);

    // A FROM cycle (the images on it are invalid: exit 2; the rest would be built).
    std::fs::write(repo.images().join("base/busybox/Dockerfile.x86_64"), "FROM archfarm.local/images/greeter\n")
        .unwrap();
    assert_usage_error(
        &repo.run(&["build", "greeter", "--platform", "linux/amd64"]),
        &["cycle for linux/amd64", "greeter", "base/busybox"],
    );

    // FROM an unknown farm image.
    std::fs::write(repo.images().join("greeter/Dockerfile"), "FROM archfarm.local/images/nope\n").unwrap();
    std::fs::write(repo.images().join("base/busybox/Dockerfile.x86_64"), "FROM scratch\n").unwrap();
    assert_usage_error(&repo.run(&["build", "greeter", "--platform", "linux/amd64"]), &["greeter", "nope"]);
}

#[test]
fn a_symlink_escaping_the_image_folder_is_refused() {
    let repo = Repo::new("sym");
    std::os::unix::fs::symlink("../../../etc/passwd", repo.images().join("greeter/passwd")).unwrap();
    assert_usage_error(&repo.run(&["hash", "greeter", "--platform", "amd64"]), &["greeter", "passwd"]);
}

#[test]
fn a_failing_step_on_one_platform_names_it_and_writes_no_canonical_tag() {
    if !services_up("failing_step") {
        return;
    }
    let repo = Repo::new("fail");
    let dir = repo.images().join("half");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM archfarm.local/images/base/busybox\nRUN test \"$(uname -m)\" != aarch64 || (echo no arm for you; exit 3)\n").unwrap();
    let out = repo.run(&["build", "half", "--push", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<_> = report["jobs"].as_array().unwrap().iter().filter(|j| j["outcome"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0]["image"], "half");
    assert_eq!(failed[0]["platform"], "linux/arm64");
    let err = failed[0]["error"].as_str().unwrap();
    assert!(err.contains("RUN test"), "the failing step is shown: {err}");
    let log = std::fs::read_to_string(failed[0]["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("no arm for you"), "{log}");
    assert!(stderr(&out).contains("half for linux/arm64"), "{}", stderr(&out));
    assert!(report["tags"].as_array().unwrap().iter().all(|t| t["image"] != "half"), "{report:#}");
    // The amd64 half was pushed by key, but no canonical tag exists for "half".
    let tags = std::process::Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false", &format!("docker://{REGISTRY}/{}/half", repo.namespace)])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap_or_default();
    // (and the referrers tag schema's `sha256-<hex>` index of its attestations)
    for t in listed["Tags"].as_array().into_iter().flatten() {
        let t = t.as_str().unwrap();
        assert!(t.starts_with("amd64-") || t.starts_with("sha256-"), "only the per-platform key tag: {listed}");
    }
}

#[test]
fn an_unreachable_registry_or_engine_is_an_error_not_a_rebuild() {
    let repo = Repo::new("unreach");
    let out = repo.command(&["build", "--push"]).env("ARCHFARM_REGISTRY", "127.0.0.1:9/nothing").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("127.0.0.1:9"), "{}", stderr(&out));

    if !services_up("unreachable_engine") {
        return;
    }
    // The registry answers (a miss), so a build is needed, and the engine does not answer.
    let out = repo
        .command(&["build", "greeter"])
        .env("DOCKER_HOST", "tcp://127.0.0.1:9")
        .env("ARCHFARM_ENGINE_TIMEOUT", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("127.0.0.1:9"), "{}", stderr(&out));
}
