//! ci/nightly.yml: the workflow parses, and its archfarm commands, run locally job by job
//! and matrix entry by entry (each entry with a fresh store, as on a fresh runner),
//! produce the same canonical tags and index digests as one `archfarm build --push`.
//! Also: `stitch` refuses an incomplete image, naming what is missing, and writes nothing.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_yaml_ng::Value;

/// Setup steps the local run skips (the test machine has them: services, the binary).
const SETUP: &[&str] = &[
    "cargo build --release --locked",
    "sudo bash ci/services.sh && chmod +x target/release/archfarm",
    "chmod +x target/release/archfarm",
];

fn workflow() -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/nightly.yml")).unwrap();
    serde_yaml_ng::from_str(&text).expect("ci/nightly.yml parses")
}

fn needs(job: &Value) -> Vec<String> {
    match &job["needs"] {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(v) => v.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
        _ => vec![],
    }
}

/// The jobs in an order where every job comes after what it needs.
fn job_order(doc: &Value) -> Vec<String> {
    let jobs = doc["jobs"].as_mapping().expect("jobs");
    let names: Vec<String> = jobs.keys().map(|k| k.as_str().unwrap().to_string()).collect();
    let mut order: Vec<String> = Vec::new();
    while order.len() < names.len() {
        let before = order.len();
        for n in &names {
            if !order.contains(n) && needs(&doc["jobs"][n.as_str()]).iter().all(|d| order.contains(d)) {
                order.push(n.clone());
            }
        }
        assert!(order.len() > before, "a cycle in the jobs' needs");
    }
    order
}

/// `${{ <prefix>X }}` -> X, for a whole-value expression.
fn expr<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    value.trim().strip_prefix("${{")?.strip_suffix("}}")?.trim().strip_prefix(prefix)
}

fn parse_outputs(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

struct Runner<'a> {
    repo: &'a Repo,
    env: Vec<(String, String)>,
    scratch: tempfile::TempDir,
    runs: usize,
}

impl Runner<'_> {
    /// Runs one job's steps for one matrix entry; returns each step id's outputs.
    fn job(&mut self, job: &Value, entry: Option<&serde_json::Value>) -> BTreeMap<String, BTreeMap<String, String>> {
        self.runs += 1;
        let store = self.scratch.path().join(format!("store-{}", self.runs));
        let mut outputs = BTreeMap::new();
        for (i, step) in job["steps"].as_sequence().expect("steps").iter().enumerate() {
            if step.get("uses").is_some() {
                continue;
            }
            let run = step["run"].as_str().expect("a step uses or runs").trim().to_string();
            if SETUP.contains(&run.as_str()) {
                continue;
            }
            assert!(run.contains("\"$ARCHFARM\""), "unknown step (neither setup nor archfarm): {run}");
            let mut script = run.clone();
            if let Some(entry) = entry {
                for (k, v) in entry.as_object().unwrap() {
                    script = script.replace(&format!("${{{{ matrix.{k} }}}}"), v.as_str().unwrap());
                }
            }
            assert!(!script.contains("${{"), "an expression the local run cannot evaluate: {script}");
            let output_file = self.scratch.path().join(format!("output-{}-{i}", self.runs));
            let out = Command::new("bash")
                .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", &script])
                .current_dir(self.repo.path())
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("ARCHFARM_STORE", &store)
                .env("GITHUB_OUTPUT", &output_file)
                .env_remove("ARCH")
                .env_remove("ARCHFARM_LOCAL_PREFIX")
                .output()
                .unwrap();
            assert!(out.status.success(), "step failed: {script}\n{}{}", stdout(&out), stderr(&out));
            let id = step.get("id").and_then(|v| v.as_str()).unwrap_or("").to_string();
            outputs.insert(id, parse_outputs(&output_file));
        }
        outputs
    }
}

#[test]
fn the_workflow_parses_and_has_a_matrix_waves_and_one_stitch() {
    let doc = workflow();
    assert!(doc.get("on").is_some(), "a trigger");
    let order = job_order(&doc);
    assert_eq!(order.first().map(String::as_str), Some("matrix"));
    assert_eq!(order.last().map(String::as_str), Some("stitch"));
    let waves: Vec<&String> = order.iter().filter(|j| j.starts_with("wave-")).collect();
    assert!(!waves.is_empty());
    let stitch_needs = needs(&doc["jobs"]["stitch"]);
    for w in &waves {
        assert!(stitch_needs.contains(w), "stitch runs after {w}");
        assert!(doc["jobs"][w.as_str()]["strategy"]["matrix"].as_str().unwrap().contains("fromJSON"));
    }
    // Exactly one job writes canonical tags; wave jobs push by key without stitching.
    let runs: Vec<(String, String)> = order
        .iter()
        .flat_map(|j| {
            doc["jobs"][j.as_str()]["steps"]
                .as_sequence()
                .unwrap()
                .iter()
                .filter_map(|s| s.get("run").and_then(|r| r.as_str()).map(|r| (j.clone(), r.to_string())))
                .collect::<Vec<_>>()
        })
        .collect();
    let stitchers: Vec<&String> = runs
        .iter()
        .filter(|(_, r)| r.contains(" stitch") || (r.contains("--push") && !r.contains("--no-stitch")))
        .map(|(j, _)| j)
        .collect();
    assert_eq!(stitchers, [&"stitch".to_string()], "{runs:#?}");
}

#[test]
fn running_the_workflow_locally_gives_the_tags_of_one_build_push() {
    if !services_up("nightly") {
        return;
    }
    let repo = Repo::dockerfile_only("nightly");
    let doc = workflow();
    let ns_a = format!("{}-wf", repo.namespace);
    let ns_b = format!("{}-one", repo.namespace);
    let bin = env!("CARGO_BIN_EXE_archfarm").to_string();
    let a = |args: &[&str]| {
        repo.command(args)
            .env("ARCHFARM_REGISTRY", format!("{REGISTRY}/{ns_a}"))
            .env("ARCHFARM_STORE", repo.path().join("store-a"))
            .output()
            .unwrap()
    };

    // The canonical tags the images will have, and stitch refusing while nothing is there.
    let listing: serde_json::Value = serde_json::from_slice(&a(&["list", "--json"]).stdout).unwrap();
    let canonical: BTreeMap<String, String> = listing["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["image"].as_str().unwrap().to_string(), i["canonical_tag"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(canonical.len(), 3);
    let out = a(&["stitch", "uname"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("uname not stitched: linux/amd64, linux/arm64 not in the registry"),
        "{}",
        stderr(&out)
    );
    assert!(skopeo_raw(&canonical["uname"]).is_none(), "a refused stitch writes nothing");

    // The matrix before anything is built: parents in an earlier wave than children.
    let m: serde_json::Value = serde_json::from_slice(&a(&["matrix"]).stdout).unwrap();
    assert_eq!(m["jobs"], 6, "{m:#}");
    let wave_of = |image: &str| {
        m["waves"].as_array().unwrap().iter().position(|w| w.as_array().unwrap().iter().any(|e| e["image"] == image))
    };
    assert_eq!(wave_of("base/busybox"), Some(0));
    assert_eq!(wave_of("greeter"), Some(1));
    assert_eq!(wave_of("uname"), Some(1));

    // Run the workflow's archfarm steps, job by job, entry by entry.
    let mut env: Vec<(String, String)> = Vec::new();
    for (k, _) in doc["env"].as_mapping().expect("workflow env") {
        env.push((k.as_str().unwrap().to_string(), String::new()));
    }
    assert!(env.iter().any(|(k, _)| k == "ARCHFARM") && env.iter().any(|(k, _)| k == "ARCHFARM_REGISTRY"));
    env = vec![("ARCHFARM".into(), bin.clone()), ("ARCHFARM_REGISTRY".into(), format!("{REGISTRY}/{ns_a}"))];
    let mut runner = Runner { repo: &repo, env, scratch: tempfile::tempdir().unwrap(), runs: 0 };
    let mut job_outputs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut entries_run = 0;
    for name in job_order(&doc) {
        let job = &doc["jobs"][name.as_str()];
        if name == "stitch" {
            for (image, tag) in &canonical {
                assert!(skopeo_raw(tag).is_none(), "{image}: no canonical tag before the stitch job");
            }
        }
        let step_outputs = match job["strategy"]["matrix"].as_str() {
            Some(m) => {
                let source = expr(m, "fromJSON(needs.")
                    .and_then(|s| s.strip_suffix(')'))
                    .expect("fromJSON(needs.JOB.outputs.X)");
                let (from, out) = source.split_once(".outputs.").unwrap();
                let value = &job_outputs[from][out];
                let include: serde_json::Value = serde_json::from_str(value).unwrap();
                let include = include["include"].as_array().unwrap().clone();
                let count = &job_outputs[from][&format!("{out}_jobs")];
                assert_eq!(count, &include.len().to_string());
                assert!(job["if"].as_str().unwrap().contains(&format!("needs.{from}.outputs.{out}_jobs != '0'")));
                for entry in &include {
                    runner.job(job, Some(entry));
                    entries_run += 1;
                }
                BTreeMap::new()
            }
            None => runner.job(job, None),
        };
        let mut outputs = BTreeMap::new();
        if let Some(map) = job.get("outputs").and_then(|o| o.as_mapping()) {
            for (k, v) in map {
                let path = expr(v.as_str().unwrap(), "steps.").expect("steps.ID.outputs.X");
                let (id, key) = path.split_once(".outputs.").unwrap();
                outputs.insert(k.as_str().unwrap().to_string(), step_outputs[id][key].clone());
            }
        }
        job_outputs.insert(name, outputs);
    }
    assert_eq!(entries_run, 6, "every missing (image, platform) ran as its own entry");

    // Nothing is left to build, and every image has its canonical tag.
    let m: serde_json::Value = serde_json::from_slice(&a(&["matrix"]).stdout).unwrap();
    assert_eq!(m["jobs"], 0, "{m:#}");

    // One `archfarm build --push` in another namespace gives the same tags and digests.
    let one = repo
        .command(&["build", "--push", "--json"])
        .env("ARCHFARM_REGISTRY", format!("{REGISTRY}/{ns_b}"))
        .env("ARCHFARM_STORE", repo.path().join("store-b"))
        .output()
        .unwrap();
    assert!(one.status.success(), "{}", stderr(&one));
    let one: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    let tags = one["tags"].as_array().unwrap();
    assert_eq!(tags.len(), 3, "{one:#}");
    for t in tags {
        let image = t["image"].as_str().unwrap();
        let expected = t["tag"].as_str().unwrap().replace(&format!("/{ns_b}/"), &format!("/{ns_a}/"));
        assert_eq!(canonical[image], expected, "{image}: the same canonical tag (index key)");
        let raw = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{expected}")])
            .output()
            .unwrap();
        assert!(raw.status.success(), "{expected}: {}", stderr(&raw));
        let digest = format!("sha256:{}", sha256_hex(&raw.stdout));
        assert_eq!(t["digest"].as_str().unwrap(), digest, "{image}: the same index bytes");
        let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
        assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
