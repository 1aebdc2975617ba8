//! The store's upkeep (issue 11, points 4, 5 and part of 7) on real runs of the binary:
//! staging left by a SIGKILLed run is removed by the next run while a live run's survives,
//! `store gc` and `store verify` on a real store, and corrupt blobs or memo entries found on
//! the way out (OCI export, registry push, docker load) name the blob, leave the store
//! clean, and the next run builds again.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const AMD64: &str = "linux/amd64";

fn signal(child: &Child, s: Signal) {
    kill(Pid::from_raw(child.id() as i32), s).unwrap();
}

/// Polls `what` until it gives a value, failing the test after `secs`.
fn wait_for<T>(secs: u64, why: &str, mut what: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = what() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {why}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every `assemble-*` staging folder under `<store>/tmp`, one or two levels down
/// (wherever a version of archfarm puts them).
fn staging_dirs(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let list = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d).map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default()
    };
    for top in list(&store.join("tmp")) {
        for p in std::iter::once(top.clone()).chain(list(&top)) {
            if p.is_dir() && p.file_name().unwrap().to_string_lossy().starts_with("assemble-") {
                out.push(p);
            }
        }
    }
    out
}

fn exit_code(o: &std::process::Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A repo with one image.yaml image, `big`: a 1 GiB sparse file whose layer takes
/// seconds to compress, so a run can be caught while it is staging.
fn repo_with_a_slow_image(name: &str) -> Repo {
    let repo = Repo::bare(name);
    repo.write("images/big/image.yaml", "from: scratch\ncontents:\n  - {src: big.bin, dest: /big.bin}\n");
    repo.write("images/big/nonce.txt", &repo.namespace);
    let f = std::fs::File::create(repo.images().join("big/big.bin")).unwrap();
    f.set_len(1 << 30).unwrap();
    repo
}

#[test]
fn a_killed_runs_staging_is_removed_by_the_next_run_while_a_live_runs_survives_and_gc_waits_for_it() {
    let repo = repo_with_a_slow_image("staging");
    let store = repo.path().join("store");
    let spawn = || {
        repo.command(&["assemble", "big", "--platform", AMD64])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    let mut killed = spawn();
    let left = wait_for(120, "the first run's staging", || staging_dirs(&store).pop());
    signal(&killed, Signal::SIGKILL);
    killed.wait().unwrap();
    assert!(left.exists(), "precondition: the killed run left its staging behind ({})", left.display());

    let live = spawn();
    let live_staging =
        wait_for(120, "the second run's staging", || staging_dirs(&store).into_iter().find(|d| d != &left));
    signal(&live, Signal::SIGSTOP);
    assert!(!left.exists(), "the next run removed the staging of the killed one: {}", left.display());

    // Another run while the live one is stopped mid-staging: the live staging stays.
    let other = repo.run(&["hash", "big", "--platform", AMD64]);
    assert!(other.status.success(), "{}", stderr(&other));
    assert!(live_staging.exists(), "a live run's staging was removed by another run");

    // gc needs the store to itself: it refuses, naming the live run, and removes nothing.
    let gc = repo.run(&["store", "gc"]);
    assert_eq!(exit_code(&gc), 1, "gc while a run is live: {}", stderr(&gc));
    assert!(stderr(&gc).contains(&format!("archfarm process {}", live.id())), "{}", stderr(&gc));
    assert!(live_staging.exists());

    signal(&live, Signal::SIGCONT);
    let done = live.wait_with_output().unwrap();
    assert!(done.status.success(), "the live run failed after its staging was left alone: {}", stderr(&done));
    let tmp: Vec<_> = std::fs::read_dir(store.join("tmp")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(tmp.is_empty(), "runs that ended leave nothing in tmp/: {tmp:?}");
    let gc = repo.run(&["store", "gc"]);
    assert!(gc.status.success(), "gc once no run is live: {}", stderr(&gc));
}

/// `archfarm assemble hello-assembled --platform linux/amd64 [ARGS]`: (status, JSON or stderr).
fn assemble(repo: &Repo, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["assemble", "hello-assembled", "--platform", AMD64, "--json"];
    args.extend_from_slice(extra);
    repo.run(&args)
}

/// A repo whose store holds hello-assembled for amd64: the repo, its store and the
/// `assemble --json` report.
fn assembled(name: &str) -> (Repo, PathBuf, serde_json::Value) {
    let repo = Repo::new(name);
    let out = assemble(&repo, &[]);
    assert!(out.status.success(), "assemble: {}", stderr(&out));
    let store = repo.path().join("store");
    (repo, store, serde_json::from_slice(&out.stdout).unwrap())
}

/// The digest and path of the largest layer of manifest `digest` in `store`.
fn largest_layer(store: &Path, digest: &str) -> (String, PathBuf) {
    let blob = |d: &str| store.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(digest)).unwrap()).unwrap();
    let layer = manifest["layers"].as_array().unwrap().iter().max_by_key(|l| l["size"].as_u64()).unwrap();
    let d = layer["digest"].as_str().unwrap().to_string();
    let path = blob(&d);
    (d, path)
}

/// Flips one byte in the middle of `path` (same size: only a hash can tell).
fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

fn build_json(repo: &Repo, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec!["build", "hello-assembled", "--platform", AMD64, "--json"];
    args.extend_from_slice(extra);
    let out = repo.run(&args);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("build --json gave no report ({e}): {}", stderr(&out)));
    (exit_code(&out), report, stderr(&out))
}

#[test]
fn gc_removes_only_what_nothing_needs_and_verify_names_a_corrupt_blob_and_its_entry() {
    if !services_up("store_gc_verify") {
        return;
    }
    let (repo, store, image) = assembled("gc-verify");
    let key = image["key"].as_str().unwrap();

    // What nothing needs: a blob no entry uses, an unusable entry, a dead run's folder,
    // an old log of a key without an entry; and a recent log of such a key, kept.
    let junk = vec![7u8; 100_000];
    let junk_digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&junk))
    };
    let junk_blob = store.join("blobs/sha256").join(&junk_digest);
    std::fs::write(&junk_blob, &junk).unwrap();
    let bad_entry = store.join(format!("keys/{}.json", "0".repeat(64)));
    std::fs::write(&bad_entry, "{ not an entry").unwrap();
    let dead = store.join("tmp/4194999-dead");
    std::fs::create_dir_all(dead.join("assemble-x")).unwrap();
    std::fs::write(dead.join("assemble-x/layer"), vec![0u8; 5000]).unwrap();
    let old_log = store.join(format!("logs/gone/amd64-{}.log", "1".repeat(64)));
    let new_log = store.join(format!("logs/gone/amd64-{}.log", "2".repeat(64)));
    repo.write(&format!("store/logs/gone/amd64-{}.log", "1".repeat(64)), "old build output");
    repo.write(&format!("store/logs/gone/amd64-{}.log", "2".repeat(64)), "recent build output");
    let aged = std::process::Command::new("touch").args(["-d", "10 days ago"]).arg(&old_log).status().unwrap();
    assert!(aged.success());

    let dry = repo.json(&["store", "gc", "--dry-run", "--json"]);
    let listed = |r: &serde_json::Value| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = r["removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["kind"].as_str().unwrap().to_string(), x["path"].as_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    };
    let mut expected = vec![
        ("blob".to_string(), junk_blob.display().to_string()),
        ("entry".to_string(), bad_entry.display().to_string()),
        ("log".to_string(), old_log.display().to_string()),
        ("staging".to_string(), dead.display().to_string()),
    ];
    expected.sort();
    assert_eq!(listed(&dry), expected);
    assert_eq!(dry["bytes_freed"].as_u64().unwrap(), 100_000 + 14 + 16 + 5000);
    assert!(junk_blob.exists() && bad_entry.exists() && dead.exists() && old_log.exists(), "a dry run removes nothing");

    let done = repo.json(&["store", "gc", "--json"]);
    assert_eq!(listed(&done), expected);
    assert!(!junk_blob.exists() && !bad_entry.exists() && !dead.exists() && !old_log.exists());
    assert!(new_log.exists(), "a recent log is kept");
    // Everything the image needs is still there: the build is served by the store.
    let (code, report, err) = build_json(&repo, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (report["jobs"][0]["outcome"].as_str(), report["jobs"][0]["source"].as_str()),
        (Some("cached"), Some("store"))
    );

    let ok = repo.run(&["store", "verify"]);
    assert!(ok.status.success(), "verify of a sound store: {}", stderr(&ok));
    assert!(stdout(&ok).contains("no problem found"), "{}", stdout(&ok));

    let (layer, path) = largest_layer(&store, image["digest"].as_str().unwrap());
    flip_byte(&path);
    let bad = repo.run(&["store", "verify"]);
    assert_eq!(exit_code(&bad), 1, "{}", stderr(&bad));
    let said = stderr(&bad);
    assert!(said.contains(&layer[7..]) && said.contains("corrupt"), "verify names the blob: {said}");
    assert!(said.contains(&format!("keys/{key}.json")) && said.contains("hello-assembled"), "and its entry: {said}");
    assert!(said.contains("--repair"), "and says what to do: {said}");
    assert!(path.exists(), "verify alone changes nothing");

    let repaired = repo.run(&["store", "verify", "--repair"]);
    assert_eq!(exit_code(&repaired), 1, "problems were found: {}", stderr(&repaired));
    let again = repo.run(&["store", "verify"]);
    assert!(again.status.success(), "repaired: {}", stderr(&again));
    let (code, report, err) = build_json(&repo, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["jobs"][0]["outcome"], "built", "the repaired image is built again");
    assert_eq!(report["jobs"][0]["digest"], image["digest"], "to the same bytes");
}

#[test]
fn a_corrupt_layer_fails_an_oci_export_naming_it_and_the_next_run_builds_it_again() {
    let (repo, store, image) = assembled("corrupt-oci");
    let (layer, path) = largest_layer(&store, image["digest"].as_str().unwrap());
    flip_byte(&path);

    let oci = repo.path().join("oci");
    let out = assemble(&repo, &["--output", &format!("oci:{}", oci.display())]);
    assert_eq!(exit_code(&out), 1, "a corrupt blob was exported: {}", stderr(&out));
    let said = stderr(&out);
    assert!(said.contains(&layer) && said.contains("corrupt") && said.contains("next run"), "{said}");
    assert!(!oci.join("index.json").exists(), "no layout over a corrupt image");
    assert!(!path.exists(), "the corrupt blob left the store");

    let out = assemble(&repo, &["--output", &format!("oci:{}", oci.display())]);
    assert!(out.status.success(), "the next run: {}", stderr(&out));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["digest"], image["digest"], "rebuilt to the same image");
    for blob in std::fs::read_dir(oci.join("blobs/sha256")).unwrap() {
        let blob = blob.unwrap().path();
        let out = std::process::Command::new("sha256sum").arg(&blob).output().unwrap();
        let hash = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string();
        assert_eq!(hash, blob.file_name().unwrap().to_string_lossy(), "exported blob {}", blob.display());
    }
}

#[test]
fn a_corrupt_layer_fails_a_push_naming_it_and_the_next_push_builds_and_publishes_it() {
    if !services_up("store_corrupt_push") {
        return;
    }
    let repo = Repo::new("corrupt-push");
    let store = repo.path().join("store");
    let (code, report, err) = build_json(&repo, &[]);
    assert_eq!(code, 0, "{err}");
    let digest = report["jobs"][0]["digest"].as_str().unwrap().to_string();
    let (layer, path) = largest_layer(&store, &digest);
    flip_byte(&path);

    let (code, report, err) = build_json(&repo, &["--push", "--no-stitch"]);
    assert_eq!(code, 1, "a corrupt blob was pushed: {err}");
    let said = report["jobs"][0]["error"].as_str().unwrap_or_default().to_string();
    assert!(said.contains(&layer) && said.contains("corrupt") && said.contains("store"), "{said}");

    let (code, report, err) = build_json(&repo, &["--push", "--no-stitch"]);
    assert_eq!(code, 0, "the next push: {err}");
    let job = &report["jobs"][0];
    assert_eq!((job["outcome"].as_str(), job["digest"].as_str()), (Some("built"), Some(digest.as_str())));
    let pushed = job["pushed"].as_str().unwrap();
    assert_eq!(raw_digest(pushed).as_deref(), Some(digest.as_str()), "the registry serves {pushed}");
}

#[test]
fn a_corrupt_layer_fails_a_load_into_the_engine_naming_it_and_the_next_load_works() {
    if !services_up("store_corrupt_load") {
        return;
    }
    let (repo, store, image) = assembled("corrupt-load");
    let (layer, path) = largest_layer(&store, image["digest"].as_str().unwrap());
    flip_byte(&path);

    let load = |repo: &Repo| repo.run(&["load", "hello-assembled", "--platform", AMD64]);
    let out = load(&repo);
    assert_eq!(exit_code(&out), 1, "{}", stderr(&out));
    let said = stderr(&out);
    assert!(said.contains(&layer) && said.contains("corrupt") && said.contains("next run"), "{said}");
    let out = load(&repo);
    assert!(out.status.success(), "the next load: {}", stderr(&out));
    let local = stdout(&repo.run(&["local-image", "hello-assembled", "--platform", AMD64]));
    let id = stdout(&docker(&["image", "inspect", "--format", "{{.Id}}", &local]));
    assert_eq!(id, image["image_id"].as_str().unwrap(), "{local} is the image, rebuilt");
    let _ = docker(&["rmi", &local, &local.replace(image["key"].as_str().unwrap(), "latest")]);
}

#[test]
fn unusable_memo_entries_are_misses_and_built_again() {
    if !services_up("store_unusable_entries") {
        return;
    }
    let (repo, store, image) = assembled("unusable-entry");
    let entry = store.join(format!("keys/{}.json", image["key"].as_str().unwrap()));
    let manifest = store.join("blobs/sha256").join(&image["digest"].as_str().unwrap()[7..]);

    std::fs::write(&entry, "{\"key\": truncated").unwrap();
    let (code, report, err) = build_json(&repo, &[]);
    assert_eq!(code, 0, "an unparseable entry: {err}");
    assert_eq!(report["jobs"][0]["outcome"], "built");
    assert!(err.contains(&entry.display().to_string()), "the warning names the entry: {err}");

    flip_byte(&manifest);
    let (code, report, err) = build_json(&repo, &[]);
    assert_eq!(code, 0, "a corrupt manifest: {err}");
    assert_eq!(report["jobs"][0]["outcome"], "built");
    assert_eq!(report["jobs"][0]["digest"], image["digest"]);

    let (code, report, err) = build_json(&repo, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["jobs"][0]["source"], "store", "and then served by the store again");
}

#[test]
fn a_store_that_is_a_file_and_an_output_into_a_missing_folder_are_usage_errors_naming_the_flag() {
    let repo = Repo::new("flags");
    let file = repo.path().join("a-file");
    std::fs::write(&file, "not a store").unwrap();
    let out = repo.command(&["hash", "hello-assembled", "--platform", AMD64, "--store"]).arg(&file).output().unwrap();
    assert_eq!(exit_code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--store") && stderr(&out).contains(&*file.to_string_lossy()), "{}", stderr(&out));

    for output in ["oci:/missing/dir/x", "docker-archive:/missing/dir/x.tar"] {
        let out = assemble(&repo, &["--output", output]);
        assert_eq!(exit_code(&out), 2, "{output}: {}", stderr(&out));
        assert!(stderr(&out).contains(&format!("--output '{output}'")), "{}", stderr(&out));
        assert!(!Path::new("/missing").exists(), "nothing was created");
    }
}
