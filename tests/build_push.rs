//! The core proof, end to end on real parts: build the bundled images for amd64 and
//! arm64 on the real engine (arm64 under QEMU), push, stitch one canonical index per
//! image, check with skopeo and docker run; a second run builds nothing; a one-file
//! change rebuilds that image (both platforms) and nothing else.

mod common;
use common::*;

#[test]
fn build_push_stitch_then_nothing_then_only_the_changed_image() {
    if !services_up("build_push") {
        return;
    }
    let repo = Repo::new("bp");

    // First run: everything is built, both platforms, and stitched.
    let first = repo.json(&["build", "--push", "--json"]);
    let jobs = first["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 10, "5 images (2 assembled) x 2 platforms: {first:#}");
    for j in jobs {
        assert_eq!(j["outcome"], "built", "{j:#}");
        assert_eq!(j["key"].as_str().unwrap().len(), 64);
        assert!(j["seconds"].as_f64().unwrap() >= 0.0);
    }
    let tags = first["tags"].as_array().unwrap();
    assert_eq!(tags.len(), 5, "{first:#}");
    for t in tags {
        let tag = t["tag"].as_str().unwrap();
        assert!(tag.starts_with(&format!("{REGISTRY}/{}/", repo.namespace)), "{tag}");
        let index = skopeo_raw(tag).unwrap_or_else(|| panic!("skopeo cannot inspect {tag}"));
        assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"], "{index:#}");
        // The digest we report is the digest of the bytes the registry serves.
        let raw = std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{tag}")])
            .output()
            .unwrap()
            .stdout;
        let digest = format!("sha256:{}", sha256_hex(&raw));
        assert_eq!(t["digest"].as_str().unwrap(), digest);
    }

    // The arm64 image's RUN step really ran under emulation.
    let uname_arm = jobs_by(&first, "uname").into_iter().find(|j| j["platform"] == "linux/arm64").unwrap();
    let pushed = uname_arm["pushed"].as_str().unwrap();
    let run = docker(&["run", "--rm", "--platform", "linux/arm64", pushed]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(stdout(&run), "aarch64");
    let uname_amd = jobs_by(&first, "uname").into_iter().find(|j| j["platform"] == "linux/amd64").unwrap();
    let run = docker(&["run", "--rm", "--platform", "linux/amd64", uname_amd["pushed"].as_str().unwrap()]);
    assert_eq!(stdout(&run), "x86_64");

    // Second run: nothing to build, same tags and digests.
    let second = repo.json(&["build", "--push", "--json"]);
    for j in second["jobs"].as_array().unwrap() {
        assert_eq!(j["outcome"], "cached", "{j:#}");
    }
    let digests = |r: &serde_json::Value| -> Vec<(String, String)> {
        let mut v: Vec<_> = r["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["tag"].as_str().unwrap().to_string(), t["digest"].as_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(digests(&first), digests(&second));

    // One file of greeter changes: greeter rebuilds on both platforms, nothing else.
    std::fs::write(repo.images().join("greeter/greet.sh"), "#!/bin/sh\necho changed\n").unwrap();
    let third = repo.json(&["build", "--push", "--json"]);
    for j in third["jobs"].as_array().unwrap() {
        let want = if j["image"] == "greeter" { "built" } else { "cached" };
        assert_eq!(j["outcome"], want, "{j:#}");
    }
    let changed: Vec<_> = digests(&third).into_iter().filter(|t| !digests(&first).contains(t)).collect();
    assert_eq!(changed.len(), 1, "only greeter's canonical tag is new: {changed:?}");
    assert!(changed[0].0.contains("/greeter:"));
}

#[test]
fn a_change_to_a_parent_rebuilds_its_children_for_every_platform() {
    if !services_up("parent_change") {
        return;
    }
    let repo = Repo::new("pc");
    let first = repo.json(&["build", "uname", "--json"]);
    assert_eq!(first["jobs"].as_array().unwrap().len(), 4, "uname and its parent, 2 platforms: {first:#}");
    // A change unique to this run, so no image left by another run can match it.
    std::fs::write(repo.images().join("base/busybox/nonce.txt"), format!("{}-changed", repo.namespace)).unwrap();
    let second = repo.json(&["build", "uname", "--json"]);
    for j in second["jobs"].as_array().unwrap() {
        assert_eq!(j["outcome"], "built", "{j:#}");
    }
    // A change to one platform's recipe rebuilds only that platform.
    let f = repo.images().join("base/busybox/Dockerfile.aarch64");
    let text = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, format!("{text}# touched\n")).unwrap();
    let third = repo.json(&["build", "uname", "--json"]);
    for j in third["jobs"].as_array().unwrap() {
        let want = if j["platform"] == "linux/arm64" { "built" } else { "cached" };
        assert_eq!(j["outcome"], want, "{j:#}");
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn stitching_from_a_staging_namespace_brings_every_platform_over() {
    if !services_up("stitch_staging") {
        return;
    }
    let repo = Repo::dockerfile_only("stg");
    let staging = format!("{}-staging", repo.namespace);
    let in_staging = |args: &[&str]| {
        let out = repo.command(args).env("ARCHFARM_REGISTRY", format!("{REGISTRY}/{staging}")).output().unwrap();
        assert!(out.status.success(), "archfarm {args:?}: {}", stderr(&out));
    };
    // Nothing pushed yet: the stitch writes nothing and names what is missing.
    let out = repo.run(&["stitch", "uname", "--staging", &staging]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("linux/arm64"), "{}", stderr(&out));

    // CI jobs push each platform by key to the staging namespace, no canonical tag.
    in_staging(&["build", "uname", "--platform", "linux/amd64", "--push", "--no-stitch"]);
    in_staging(&["build", "uname", "--platform", "linux/arm64", "--push", "--no-stitch"]);

    let report = repo.json(&["stitch", "uname", "--staging", &staging, "--json"]);
    let tags = report["tags"].as_array().unwrap();
    let uname = tags.iter().find(|t| t["image"] == "uname").expect("uname stitched");
    let tag = uname["tag"].as_str().unwrap();
    assert!(tag.starts_with(&format!("{REGISTRY}/{}/uname:", repo.namespace)), "{tag}");
    let index = skopeo_raw(tag).expect("the canonical tag exists");
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);
    // The children were brought into the release repository: the image runs from there.
    let arm = index["manifests"].as_array().unwrap().iter().find(|m| m["platform"]["architecture"] == "arm64").unwrap();
    let by_digest = format!("{REGISTRY}/{}/uname@{}", repo.namespace, arm["digest"].as_str().unwrap());
    assert!(skopeo_raw(&by_digest).is_some(), "{by_digest}");
    // The same stitch again writes the same bytes.
    let again = repo.json(&["stitch", "uname", "--staging", &staging, "--json"]);
    let again_uname = again["tags"].as_array().unwrap().iter().find(|t| t["image"] == "uname").unwrap().clone();
    assert_eq!(again_uname["digest"], uname["digest"]);
}
