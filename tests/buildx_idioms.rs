//! Dockerfiles written for buildx, unmodified, on both of the engine's builders: a cross
//! stage (`FROM --platform=$BUILDPLATFORM`) over a farm image with `TARGETARCH` in RUN,
//! a named target, and (BuildKit only) a cache mount that persists and a secret mount
//! whose value appears nowhere. Each result is checked by running the image for amd64
//! and arm64 (under QEMU).

mod common;

use std::path::Path;

use common::{docker, jobs_by, services_up, stderr, stdout, Repo};

/// archfarm.yaml with the local engine as the one builder, BuildKit on or off.
fn config(buildkit: bool, extra: &str) -> String {
    format!("builders:\n  - name: local\n    endpoint: unix:///var/run/docker.sock\n    buildkit: {buildkit}\n{extra}")
}

fn add_image(repo: &Repo, name: &str, dockerfile: &str) {
    let dir = repo.images().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
}

fn backend_name(buildkit: bool) -> &'static str {
    if buildkit {
        "buildkit"
    } else {
        "classic"
    }
}

/// `docker run --platform P <local prefix>/IMAGE:latest ARGS` after `archfarm load` for P.
fn load_and_run(repo: &Repo, image: &str, arch: &str, platform: &str, args: &[&str]) -> String {
    let out = repo.command(&["load", image]).env("ARCH", arch).output().unwrap();
    assert!(out.status.success(), "load {image} for {arch}: {}", stderr(&out));
    let reference = format!("archfarm.local/images/{image}:latest");
    let mut run = vec!["run", "--rm", "--platform", platform, &reference];
    run.extend_from_slice(args);
    let out = docker(&run);
    assert!(out.status.success(), "docker run {reference}: {}", stderr(&out));
    stdout(&out)
}

const CROSS: &str = "\
FROM --platform=$BUILDPLATFORM archfarm.local/images/base/busybox AS build
ARG TARGETARCH
ARG TARGETPLATFORM
ARG BUILDARCH
RUN echo \"built on $(uname -m) ($BUILDARCH) for $TARGETARCH ($TARGETPLATFORM)\" > /out.txt
FROM archfarm.local/images/base/busybox
COPY --from=build /out.txt /out.txt
CMD [\"cat\", \"/out.txt\"]
";

/// A repository with the cross-stage image `cross-<backend>` on a builder with BuildKit on or off.
fn cross_repo(buildkit: bool) -> (Repo, String) {
    let backend = backend_name(buildkit);
    let repo = Repo::dockerfile_only(&format!("cross-{backend}"));
    std::fs::write(repo.path().join("archfarm.yaml"), config(buildkit, "")).unwrap();
    let image = format!("cross-{backend}");
    add_image(&repo, &image, CROSS);
    (repo, image)
}
#[test]
fn cross_stage_over_a_farm_image_runs_natively_on_buildkit() {
    if !services_up("cross_stage_buildkit") {
        return;
    }
    let (repo, image) = cross_repo(true);
    let report = repo.json(&["build", &image, "--platform", "linux/amd64,linux/arm64", "--json"]);
    for j in jobs_by(&report, &image) {
        assert_eq!(j["outcome"], "built", "{j}");
        assert_eq!(j["backend"], "buildkit", "{j}");
        assert_eq!(j["build_platform"], "linux/amd64", "the recipe reads BUILDARCH: {j}");
    }
    // The cross stage needs base/busybox for amd64, the target stage for arm64.
    let mut parents: Vec<String> =
        jobs_by(&report, "base/busybox").iter().map(|j| j["platform"].as_str().unwrap().to_string()).collect();
    parents.sort();
    assert_eq!(parents, ["linux/amd64", "linux/arm64"]);

    // The cross stage ran natively (x86_64) for both; the image itself is each platform's.
    let arm = load_and_run(&repo, &image, "aarch64", "linux/arm64", &[]);
    assert_eq!(arm, "built on x86_64 (amd64) for arm64 (linux/arm64)");
    assert_eq!(load_and_run(&repo, &image, "aarch64", "linux/arm64", &["uname", "-m"]), "aarch64");
    let amd = load_and_run(&repo, &image, "x86_64", "linux/amd64", &[]);
    assert_eq!(amd, "built on x86_64 (amd64) for amd64 (linux/amd64)");

    // A second run finds everything in the memo.
    let again = repo.json(&["build", &image, "--platform", "linux/amd64,linux/arm64", "--json"]);
    assert!(again["jobs"].as_array().unwrap().iter().all(|j| j["outcome"] == "cached"), "{again}");
}

/// The classic builder gets the same platform args (declared and passed), so the amd64
/// image is the same recipe's; it cannot COPY from a stage of another platform, so the
/// arm64 job says it needs BuildKit instead of failing midway.
#[test]
fn the_classic_builder_gets_the_platform_args_and_sends_cross_platform_stages_to_buildkit() {
    if !services_up("cross_stage_classic") {
        return;
    }
    let (repo, image) = cross_repo(false);
    let report = repo.json(&["build", &image, "--platform", "linux/amd64", "--json"]);
    assert_eq!(jobs_by(&report, &image)[0]["backend"], "classic");
    let amd = load_and_run(&repo, &image, "x86_64", "linux/amd64", &[]);
    assert_eq!(amd, "built on x86_64 (amd64) for amd64 (linux/amd64)");

    let out = repo.run(&["build", &image, "--platform", "linux/arm64"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("could not be placed") && err.contains("with BuildKit") && err.contains("no BuildKit"),
        "{err}"
    );
}

#[test]
fn a_named_target_builds_that_stage_on_both_builders() {
    if !services_up("named_target") {
        return;
    }
    for buildkit in [false, true] {
        let backend = backend_name(buildkit);
        let image = format!("target-{backend}");
        let repo = Repo::dockerfile_only(&image);
        let yaml = config(buildkit, &format!("images:\n  {image}: {{target: first}}\n"));
        std::fs::write(repo.path().join("archfarm.yaml"), yaml).unwrap();
        add_image(
            &repo,
            &image,
            "FROM archfarm.local/images/base/busybox AS first\nRUN echo first > /stage\n\
             FROM first AS second\nRUN echo second > /stage\n",
        );
        let report = repo.json(&["build", &image, "--platform", "linux/arm64", "--json"]);
        let job = report["jobs"].as_array().unwrap().iter().find(|j| j["image"] == image.as_str()).unwrap().clone();
        assert_eq!(job["backend"], backend, "{job}");
        assert_eq!(load_and_run(&repo, &image, "aarch64", "linux/arm64", &["cat", "/stage"]), "first", "{backend}");
    }
}

#[test]
fn a_cache_mount_persists_between_builds_on_a_builder() {
    if !services_up("cache_mount") {
        return;
    }
    let repo = Repo::dockerfile_only("cachemount");
    let id = format!("c-{}", repo.namespace);
    let image = "cachemount";
    let dockerfile = format!(
        "FROM archfarm.local/images/base/busybox\nARG RUNID\n\
         RUN --mount=type=cache,id={id},target=/cache sh -c 'echo $RUNID >> /cache/runs && cp /cache/runs /seen'\n"
    );
    add_image(&repo, image, &dockerfile);
    for run in ["one", "two"] {
        let yaml = config(true, &format!("images:\n  {image}: {{build_args: {{RUNID: {run}}}}}\n"));
        std::fs::write(repo.path().join("archfarm.yaml"), yaml).unwrap();
        let report = repo.json(&["build", image, "--platform", "linux/amd64", "--json"]);
        let job = report["jobs"].as_array().unwrap().iter().find(|j| j["image"] == image).unwrap().clone();
        assert_eq!((job["outcome"].as_str(), job["backend"].as_str()), (Some("built"), Some("buildkit")), "{job}");
    }
    assert_eq!(load_and_run(&repo, image, "x86_64", "linux/amd64", &["cat", "/seen"]), "one\ntwo");
}

/// Every file under `dir` (gzip members decompressed), as one byte string to search.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let bytes = std::fs::read(e.path()).unwrap();
                if bytes.starts_with(&[0x1f, 0x8b]) {
                    let mut plain = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&bytes[..]), &mut plain);
                    out.extend_from_slice(&plain);
                }
                out.extend_from_slice(&bytes);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_secret_reaches_its_run_step_and_nothing_else() {
    if !services_up("secret_mount") {
        return;
    }
    let repo = Repo::dockerfile_only("secret");
    let image = "secret";
    let value = format!("s3cr3t-{}-{}", std::process::id(), repo.namespace);
    let yaml = config(true, "secrets:\n  tok: {env: ARCHFARM_TEST_SECRET}\n");
    std::fs::write(repo.path().join("archfarm.yaml"), yaml).unwrap();
    // BuildKit's cache does not cover a secret's value: the step carries a nonce, so no
    // earlier run's layer (made with another value) can stand in for it.
    add_image(
        &repo,
        image,
        &format!(
            "FROM archfarm.local/images/base/busybox\n\
             RUN --mount=type=secret,id=tok echo {} > /nonce && sha256sum /run/secrets/tok | cut -c1-64 > /hash\n",
            repo.namespace
        ),
    );
    // Missing: the job fails before any builder is asked, naming the secret and its source;
    // the fix is in the configuration, so the run exits 2.
    let out = repo
        .command(&["build", image, "--platform", "linux/amd64", "--json"])
        .env_remove("ARCHFARM_TEST_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("tok (environment variable ARCHFARM_TEST_SECRET)"), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = jobs_by(&report, image).pop().unwrap();
    assert!(job["outcome"] == "failed" && job["log"].is_null(), "no build was started: {job}");

    let out = repo
        .command(&["-v", "build", image, "--platform", "linux/amd64", "--json"])
        .env("ARCHFARM_TEST_SECRET", &value)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let hash = load_and_run(&repo, image, "x86_64", "linux/amd64", &["cat", "/hash"]);
    assert_eq!(hash, hex_sha256(value.as_bytes()), "the RUN step read the secret");

    // Nowhere else: not in the output, the store (keys, logs, blobs, layers unpacked),
    // nor the image as the engine exports it.
    assert!(!contains(&out.stdout, &value) && !contains(&out.stderr, &value), "the secret was printed");
    assert!(!contains(&all_bytes(&repo.path().join("store")), &value), "the secret is in the store");
    let saved = tempfile::tempdir().unwrap();
    let tar = saved.path().join("image.tar");
    let out = docker(&["save", "-o", tar.to_str().unwrap(), &format!("archfarm.local/images/{image}:latest")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!contains(&all_bytes(saved.path()), &value), "the secret is in the image");
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The buildx idiom over a public base as people write it: the cross stage and the
/// target stage both FROM `busybox:1.31.1` (from the Docker Hub mirror), each resolved
/// for its own platform and built FROM exactly that digest.
#[test]
fn cross_stage_over_a_public_base_with_targetarch_in_run() {
    if !common::hub_mirror_up("cross_public") {
        return;
    }
    let repo = Repo::dockerfile_only("crosspub");
    let image = "crosspub";
    add_image(
        &repo,
        image,
        &format!(
            "# syntax=docker/dockerfile:1\n\
             FROM --platform=$BUILDPLATFORM busybox:1.31.1 AS build\nARG TARGETARCH\n\
             RUN echo \"$(uname -m) made this for $TARGETARCH\" > /made\n\
             FROM busybox:1.31.1\nCOPY --from=build /made /made\nRUN echo {} > /nonce\n",
            repo.namespace
        ),
    );
    let report = repo.json(&["build", image, "--platform", "linux/amd64,linux/arm64", "--json"]);
    for j in jobs_by(&report, image) {
        assert_eq!((j["outcome"].as_str(), j["backend"].as_str()), (Some("built"), Some("buildkit")), "{j}");
        // The build named the base by the digest in its key, not by the tag.
        let log = std::fs::read_to_string(j["log"].as_str().unwrap()).unwrap();
        assert!(log.contains("docker.io/library/busybox@sha256:"), "{log}");
    }
    for (arch, platform, made) in [
        ("aarch64", "linux/arm64", "x86_64 made this for arm64"),
        ("x86_64", "linux/amd64", "x86_64 made this for amd64"),
    ] {
        assert_eq!(load_and_run(&repo, image, arch, platform, &["cat", "/made"]), made);
        let uname = load_and_run(&repo, image, arch, platform, &["uname", "-m"]);
        assert_eq!(uname, arch, "the image itself is for {platform}");
    }
}
