//! Public bases as people write them (`FROM busybox:1.31.1`), resolved through a
//! registry mirror instead of Docker Hub: the loopback mirror of ci/hub-mirror.sh serves
//! two-platform indexes; a gVisor-style retag image (no archfarm.yaml, so the local
//! engine's mirrors are used) builds for amd64 and arm64 and loads; and when a tag moves
//! on a mirror named by `registry_mirrors`, `build --refresh-bases` rebuilds exactly the
//! images FROM it. Tags are only ever moved on a test registry of this file's own, never
//! on the shared mirror.

mod common;
mod publish_support;

use common::*;
use publish_support::{Auth, TestRegistry};

const BUSYBOX: &str = "library/busybox";

#[test]
fn the_mirror_serves_busybox_as_a_two_platform_index() {
    if !hub_mirror_up("mirror-index") {
        return;
    }
    let index = skopeo_raw(&format!("{HUB_MIRROR}/{BUSYBOX}:1.31.1")).unwrap();
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{index:#}");
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);

    let pinned = raw_digest(&format!("{HUB_MIRROR}/{BUSYBOX}:1.31.1")).unwrap();
    let latest = raw_digest(&format!("{HUB_MIRROR}/{BUSYBOX}:latest")).unwrap();
    let moved = raw_digest(&format!("{HUB_MIRROR}/{BUSYBOX}:moved")).unwrap();
    assert_eq!(pinned, latest, ":latest is the same image as :1.31.1");
    assert_ne!(pinned, moved, ":moved is a different image (for tests that move a tag)");
    let moved_index = skopeo_raw(&format!("{HUB_MIRROR}/{BUSYBOX}:moved")).unwrap();
    assert_eq!(index_platforms(&moved_index), ["linux/amd64", "linux/arm64"]);
}

/// gVisor's images/basic/busybox, exactly (plus a nonce file, so nothing left in the
/// engine by an earlier run can satisfy the build).
fn write_retag(repo: &Repo) {
    repo.write("images/basic/busybox/Dockerfile", "FROM busybox:1.31.1\n");
    repo.write("images/basic/busybox/nonce.txt", &repo.namespace);
}

/// `docker run --rm --platform P IMAGE ARGS...`, its stdout; panics with stderr on failure.
fn run(platform: &str, image: &str, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm", "--platform", platform, image];
    all.extend_from_slice(args);
    let out = docker(&all);
    assert!(out.status.success(), "docker {all:?}: {}", stderr(&out));
    stdout(&out)
}

/// `archfarm load basic/busybox` with ARCH=aarch64 under the local PREFIX; returns the
/// loaded `PREFIX/basic/busybox:latest`.
fn load_arm64(repo: &Repo, prefix: &str) -> String {
    let out = repo
        .command(&["load", "basic/busybox"])
        .env("ARCH", "aarch64")
        .env("ARCHFARM_LOCAL_PREFIX", prefix)
        .output()
        .unwrap();
    assert!(out.status.success(), "archfarm load basic/busybox (ARCH=aarch64): {}", stderr(&out));
    format!("{prefix}/basic/busybox:latest")
}

#[test]
fn a_gvisor_style_retag_of_a_public_base_builds_for_both_platforms_and_loads() {
    if !hub_mirror_up("hub-retag") {
        return;
    }
    let repo = Repo::bare("hub-retag");
    write_retag(&repo);
    assert!(!repo.path().join("archfarm.yaml").exists(), "the local engine's mirrors are what resolves busybox");

    let report = repo.json(&["build", "basic/busybox", "--platform", "linux/amd64,linux/arm64", "--json"]);
    assert_eq!(
        job_outcomes(&report, "basic/busybox"),
        [("linux/amd64".into(), "built".into()), ("linux/arm64".into(), "built".into())],
        "{report:#}"
    );

    // The default local prefix, as gVisor's make targets would use it.
    let local = load_arm64(&repo, "archfarm.local/images");
    assert_eq!(run("linux/arm64", &local, &["uname", "-m"]), "aarch64");
    docker(&["rmi", &local]);
}

#[test]
fn refresh_bases_rebuilds_exactly_the_images_whose_public_base_moved() {
    if !hub_mirror_up("hub-move") {
        return;
    }
    // A mirror of this test's own, seeded from the shared one: its tag is the one moved.
    let mirror = TestRegistry::start(Auth::None);
    for tag in ["1.31.1", "moved"] {
        skopeo_copy_all(&format!("{HUB_MIRROR}/{BUSYBOX}:{tag}"), &format!("{}/{BUSYBOX}:{tag}", mirror.addr));
    }
    let repo = Repo::bare("hub-move");
    repo.write("archfarm.yaml", &format!("registry_mirrors:\n  docker.io: [\"{}\"]\n", mirror.addr));
    write_retag(&repo);
    repo.write("images/other/Dockerfile", "FROM scratch\nCOPY nonce.txt /\n");
    repo.write("images/other/nonce.txt", &repo.namespace);

    let first = repo.json(&["build", "--json"]);
    let built = [("linux/amd64".to_string(), "built".to_string()), ("linux/arm64".into(), "built".into())];
    assert_eq!(job_outcomes(&first, "basic/busybox"), built, "{first:#}");
    assert_eq!(job_outcomes(&first, "other"), built, "{first:#}");

    // Move busybox:1.31.1 to the image that differs by /etc/archfarm-seed.
    let moved = raw_digest(&format!("{HUB_MIRROR}/{BUSYBOX}:moved")).unwrap();
    skopeo_copy_all(&format!("{}/{BUSYBOX}:moved", mirror.addr), &format!("{}/{BUSYBOX}:1.31.1", mirror.addr));
    assert_eq!(raw_digest(&format!("{}/{BUSYBOX}:1.31.1", mirror.addr)).as_deref(), Some(moved.as_str()));

    let second = repo.json(&["build", "--refresh-bases", "--json"]);
    assert_eq!(job_outcomes(&second, "basic/busybox"), built, "the moved base rebuilds its image:\n{second:#}");
    let cached = [("linux/amd64".to_string(), "cached".to_string()), ("linux/arm64".into(), "cached".into())];
    assert_eq!(job_outcomes(&second, "other"), cached, "an image FROM scratch stays cached:\n{second:#}");

    // The rebuilt image is really on the moved base (under a prefix of this test's own:
    // the other test of this file loads basic/busybox under the default one).
    let local = load_arm64(&repo, &format!("{}.local/images", repo.namespace));
    assert_eq!(run("linux/arm64", &local, &["cat", "/etc/archfarm-seed"]), "moved");
    docker(&["rmi", &local]);
}
