//! OCI annotations and SOURCE_DATE_EPOCH on real parts: an assembled image and an
//! engine-built one (base/busybox, arm64 under QEMU), pushed to the loopback registry,
//! stitched by two racing `archfarm stitch` processes, and checked with skopeo (index and
//! manifest annotations, digests of the served bytes), umoci (history times) and docker
//! (config `created`, file times in a running container).

mod common;
use common::*;

use sha2::Digest as _;
use std::process::{Command, Output, Stdio};

const SDE: &str = "1700000000";
const SDE_TIME: &str = "2023-11-14T22:13:20Z";
const SOURCE: &str = "https://example.com/archfarm/annotations-test";

/// An archfarm.yaml with text on every image, a title on one, and two variables.
const ANNOTATED: &str = "annotations:
  org.opencontainers.image.source: https://example.com/archfarm/annotations-test
  org.opencontainers.image.revision: {env: ANNOT_TEST_REVISION}
  org.opencontainers.image.version: {env: ANNOT_TEST_VERSION}
images:
  hello-assembled:
    annotations: {org.opencontainers.image.title: hello}
";

/// `archfarm ARGS` in `repo`, with only the variables given here among those that
/// change what is built (SOURCE_DATE_EPOCH, the test's own, CI's GITHUB_*).
fn command(repo: &Repo, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = repo.command(args);
    for v in ["SOURCE_DATE_EPOCH", "ANNOT_TEST_REVISION", "ANNOT_TEST_VERSION"] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied());
    c
}

fn json_of(args: &[&str], out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "archfarm {args:?} failed:\n{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(out)))
}

fn run_json(repo: &Repo, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    json_of(args, &command(repo, args, env).output().unwrap())
}

fn strings(v: &serde_json::Value) -> Vec<(String, String)> {
    match v.as_object() {
        Some(m) => m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect(),
        None => Vec::new(),
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    v.sort();
    v
}

/// The tag whose image is `image` in a report's `tags`.
fn tag_of<'a>(report: &'a serde_json::Value, image: &str) -> &'a serde_json::Value {
    report["tags"].as_array().unwrap().iter().find(|t| t["image"] == image).unwrap_or_else(|| panic!("{report:#}"))
}

/// The per-platform manifests an index lists, as served (`repository@digest`).
fn children(repository: &str, index: &serde_json::Value) -> Vec<serde_json::Value> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| skopeo_raw(&format!("{repository}@{}", m["digest"].as_str().unwrap())).unwrap())
        .collect()
}

#[test]
fn index_and_manifests_carry_their_annotations_and_racing_stitchers_write_the_same_bytes() {
    if !services_up("annotations") {
        return;
    }
    let repo = Repo::new("annot");
    repo.write("archfarm.yaml", ANNOTATED);
    let env = [("SOURCE_DATE_EPOCH", SDE), ("ANNOT_TEST_REVISION", "0123abc"), ("ANNOT_TEST_VERSION", "v1.2.3")];
    let images = ["hello-assembled", "base/busybox"];
    let built = run_json(&repo, &[&["build"][..], &images, &["--push", "--no-stitch", "--json"]].concat(), &env);
    assert!(built["tags"].as_array().unwrap().is_empty(), "--no-stitch: {built:#}");

    // Two stitchers at once, in two processes, over the same keys and time.
    let args = [&["stitch"][..], &images, &["--json"]].concat();
    let spawn = || command(&repo, &args, &env).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    let (a, b) = (json_of(&args, &a.wait_with_output().unwrap()), json_of(&args, &b.wait_with_output().unwrap()));
    for image in images {
        let (ta, tb) = (tag_of(&a, image), tag_of(&b, image));
        assert_eq!(ta, tb, "both stitchers wrote the same index");
        let tag = ta["tag"].as_str().unwrap();
        assert_eq!(raw_digest(tag).as_deref(), ta["digest"].as_str(), "the served bytes are the reported digest");
        let index = skopeo_raw(tag).unwrap();
        assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);
        assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
        let mut want_index = vec![
            ("org.opencontainers.image.source", SOURCE),
            ("org.opencontainers.image.revision", "0123abc"),
            ("org.opencontainers.image.version", "v1.2.3"),
            ("org.opencontainers.image.created", SDE_TIME),
        ];
        let mut want_manifest =
            vec![("org.opencontainers.image.source", SOURCE), ("org.opencontainers.image.created", SDE_TIME)];
        if image == "hello-assembled" {
            want_index.push(("org.opencontainers.image.title", "hello"));
            want_manifest.push(("org.opencontainers.image.title", "hello"));
        }
        assert_eq!(strings(&index["annotations"]), pairs(&want_index), "{index:#}");
        // The variables are on the index only: the per-platform keys do not follow commits.
        let repository = tag.rsplit_once(':').unwrap().0;
        for (child, listed) in children(repository, &index).iter().zip(index["manifests"].as_array().unwrap()) {
            assert_eq!(strings(&child["annotations"]), pairs(&want_manifest), "{child:#}");
            let job = jobs_by(&built, image).into_iter().find(|j| j["digest"] == listed["digest"]);
            assert!(job.is_some(), "{image}: the index lists what the build pushed: {listed:#}");
        }
    }

    // A release names its version tag and never rewrites the index: the version tag is the
    // canonical index, byte for byte; and an index that says another version is refused.
    let wrong = command(&repo, &[&["release", "v9.9.9"][..], &images].concat(), &env).output().unwrap();
    assert_eq!(wrong.status.code(), Some(2), "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("org.opencontainers.image.version=v1.2.3, not v9.9.9"), "{}", stderr(&wrong));
    let released = run_json(&repo, &[&["release", "v1.2.3"][..], &images, &["--json"]].concat(), &env);
    for r in released["images"].as_array().unwrap() {
        let tag = r["tag"].as_str().unwrap();
        assert_eq!(
            raw_digest(tag).as_deref(),
            Some(tag_of(&a, r["image"].as_str().unwrap())["digest"].as_str().unwrap())
        );
    }
}

/// The index key as it was before annotations existed (docs/content-keys.md): the
/// SHA-256 of the scheme line and one `child` record per platform, sorted.
fn todays_index_key(platforms_and_keys: &[(String, String)]) -> String {
    let mut sorted = platforms_and_keys.to_vec();
    sorted.sort();
    let mut text = b"archfarm-index v1\n".to_vec();
    for (p, k) in sorted {
        text.extend_from_slice(format!("child {}:{p} {}:{k}\n", p.len(), k.len()).as_bytes());
    }
    hex::encode(sha2::Sha256::digest(&text))
}

/// What one build of the two images gave: per image, (key, manifest digest) and the
/// canonical tag's (index key, digest).
#[derive(Debug, PartialEq)]
struct Built {
    jobs: Vec<(String, String, String)>,
    tags: Vec<(String, String, String)>,
}

fn built(report: &serde_json::Value) -> Built {
    let mut jobs: Vec<(String, String, String)> = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["image"].as_str().unwrap().into(),
                j["key"].as_str().unwrap().into(),
                j["digest"].as_str().unwrap().into(),
            )
        })
        .collect();
    jobs.sort();
    let mut tags: Vec<(String, String, String)> = report["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let key = t["tag"].as_str().unwrap().rsplit(':').next().unwrap().to_string();
            (t["image"].as_str().unwrap().into(), key, t["digest"].as_str().unwrap().into())
        })
        .collect();
    tags.sort();
    Built { jobs, tags }
}

/// `archfarm ARGS` for one run of the time test: its own registry namespace and store.
fn run_command(repo: &Repo, run: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = command(repo, args, env);
    c.env("ARCHFARM_REGISTRY", format!("{REGISTRY}/{}-{run}", repo.namespace))
        .env("ARCHFARM_STORE", repo.path().join("store").join(run));
    c
}

/// Loads the two images of `run` into the local engine under a prefix of the run's own
/// (so no other test's local tags move); returns image -> image ID, and adds the local
/// tags to `made` for the caller to remove.
fn load(repo: &Repo, run: &str, env: &[(&str, &str)], made: &mut Vec<String>) -> Vec<(String, String)> {
    let args = ["load", "hello-assembled", "base/busybox", "--json"];
    let prefix = format!("archfarm.local/{}-{run}", repo.namespace);
    let mut c = run_command(repo, run, &args, env);
    c.env("ARCHFARM_LOCAL_PREFIX", &prefix);
    let report = json_of(&args, &c.output().unwrap());
    report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let (image, key) = (j["image"].as_str().unwrap(), j["key"].as_str().unwrap());
            made.extend([format!("{prefix}/{image}:{key}"), format!("{prefix}/{image}:latest")]);
            (image.to_string(), j["image_id"].as_str().unwrap().to_string())
        })
        .collect()
}

fn created(id: &str) -> String {
    let out = docker(&["inspect", "--format", "{{.Created}}", id]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// The mtimes busybox's `stat` gives for `paths` in a container of `id` (links not followed).
fn mtimes(id: &str, paths: &[&str]) -> Vec<u64> {
    let out = docker(&[&["run", "--rm", "--platform", "linux/amd64", id, "stat", "-c", "%Y"][..], paths].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().map(|l| l.trim().parse().unwrap()).collect()
}

#[test]
fn without_source_date_epoch_keys_and_digests_are_todays_and_with_it_created_and_file_times_follow_it() {
    if !services_up("annotations_time") {
        return;
    }
    let repo = Repo::new("annot-time");
    let build = |run: &str, env: &[(&str, &str)]| {
        let args = ["build", "hello-assembled", "base/busybox", "--platform", "linux/amd64", "--push", "--json"];
        json_of(&args, &run_command(&repo, run, &args, env).output().unwrap())
    };
    let mut local_tags = Vec::new();

    // The unchanged path: no archfarm.yaml, no SOURCE_DATE_EPOCH.
    let plain = build("plain", &[]);
    // The new code, inert: empty annotation maps and an empty SOURCE_DATE_EPOCH (unset).
    repo.write("archfarm.yaml", "annotations: {}\nimages:\n  hello-assembled: {annotations: {}}\n");
    let inert = build("inert", &[("SOURCE_DATE_EPOCH", "")]);
    std::fs::remove_file(repo.path().join("archfarm.yaml")).unwrap();
    assert_eq!(built(&plain), built(&inert), "the same keys, manifests and indexes");
    // And they are what archfarm wrote before: no annotations, the old index key, the epoch.
    for t in plain["tags"].as_array().unwrap() {
        let image = t["image"].as_str().unwrap();
        let tag = t["tag"].as_str().unwrap();
        let index = skopeo_raw(tag).unwrap();
        assert!(index.get("annotations").is_none(), "{index:#}");
        let keys: Vec<(String, String)> = jobs_by(&plain, image)
            .iter()
            .map(|j| (j["platform"].as_str().unwrap().into(), j["key"].as_str().unwrap().into()))
            .collect();
        assert_eq!(tag.rsplit(':').next().unwrap(), todays_index_key(&keys));
        for child in children(tag.rsplit_once(':').unwrap().0, &index) {
            assert!(child.get("annotations").is_none(), "{child:#}");
        }
    }
    let plain_loaded = load(&repo, "plain", &[], &mut local_tags);
    for (image, id) in &plain_loaded {
        assert_eq!(created(id), "1970-01-01T00:00:00Z", "{image}");
    }

    // SOURCE_DATE_EPOCH: new keys and digests; config times are it; what the RUN step
    // wrote (/bin/sh, a link, and /bin) has it as its mtime, older files keep theirs.
    let env = [("SOURCE_DATE_EPOCH", SDE)];
    let timed = build("timed", &env);
    let (p, t) = (built(&plain), built(&timed));
    for (a, b) in p.jobs.iter().zip(&t.jobs).chain(p.tags.iter().zip(&t.tags)) {
        assert_eq!(a.0, b.0);
        assert!(a.1 != b.1 && a.2 != b.2, "SOURCE_DATE_EPOCH changes key and digest: {a:?} {b:?}");
    }
    let timed_loaded = load(&repo, "timed", &env, &mut local_tags);
    for (image, id) in &timed_loaded {
        assert_eq!(created(id), SDE_TIME, "{image}");
    }
    let busybox = |l: &[(String, String)]| l.iter().find(|(i, _)| i == "base/busybox").unwrap().1.clone();
    assert_eq!(mtimes(&busybox(&plain_loaded), &["/bin/sh", "/bin"]), [0, 0], "without it: every file time is 0");
    let timed_times = mtimes(&busybox(&timed_loaded), &["/bin/sh", "/bin", "/bin/busybox"]);
    assert_eq!(timed_times[..2], [1_700_000_000, 1_700_000_000], "{timed_times:?}");
    assert!(timed_times[2] <= 1_700_000_000, "a file of the package keeps an older time: {timed_times:?}");

    // umoci reads the assembled image's history: every step at SOURCE_DATE_EPOCH.
    let hello = tag_of(&timed, "hello-assembled")["tag"].as_str().unwrap().to_string();
    let layout = repo.path().join("oci");
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--override-arch",
            "amd64",
            &format!("docker://{hello}"),
            &format!("oci:{}:hello", layout.display()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", stderr(&out));
    let out = Command::new("umoci")
        .args(["stat", "--json", "--image", &format!("{}:hello", layout.display())])
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci stat: {}", stderr(&out));
    let stat: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let history = stat["history"].as_array().unwrap();
    assert!(!history.is_empty() && history.iter().all(|h| h["created"] == SDE_TIME), "{stat:#}");

    for tag in local_tags {
        docker(&["rmi", &tag]);
    }
}

#[test]
fn a_bad_source_date_epoch_or_annotation_is_a_usage_error_naming_it() {
    let repo = Repo::new("annot-bad");
    for bad in ["abc", "-1", "1.5", "1e9", "253402300800"] {
        let out = command(&repo, &["list"], &[("SOURCE_DATE_EPOCH", bad)]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains(&format!("SOURCE_DATE_EPOCH={bad:?}")), "{bad}: {}", stderr(&out));
    }
    for (yaml, says) in [
        ("annotations: {source: x}\n", "field 'annotations.source'"),
        ("annotations: {org.opencontainers.image.created: x}\n", "SOURCE_DATE_EPOCH"),
        ("images:\n  hello-assembled: {annotations: {com.example.v: 2}}\n", "images.hello-assembled.annotations"),
    ] {
        repo.write("archfarm.yaml", yaml);
        let out = command(&repo, &["list"], &[]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{yaml}: {}", stderr(&out));
        assert!(stderr(&out).contains("archfarm.yaml") && stderr(&out).contains(says), "{yaml}: {}", stderr(&out));
    }
}
