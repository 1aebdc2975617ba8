//! The HTML report in a real browser (headless Chromium, tests/common/report_page.py):
//! a 200-job record and a real run on two builders load with no console errors, show one
//! `data-job` bar per job with its outcome in its builder's lane (`data-builder`), the
//! failures with their failing step and log tail, and fit a narrow and a wide window.
//! Screenshots are kept under target/test-artifacts/.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use common::*;

const AMD_BOX: &str = "tcp://127.0.0.1:2376";

/// The lane a job's bar belongs in: its builder's, the assembler's, or the memo's (None).
fn lane_of(job: &serde_json::Value) -> Option<String> {
    if job["backend"] == "assembler" {
        return Some("assembler".into());
    }
    job["builder"].as_str().map(String::from)
}

/// Checks the page of `record` as Chromium shows it at a narrow and a wide size.
fn check_page(page: &Path, record: &serde_json::Value, shot: &str) {
    let jobs = record["jobs"].as_array().unwrap();
    let want: BTreeMap<String, (String, Option<String>)> = jobs
        .iter()
        .map(|j| {
            let name = format!("{} {}", j["image"].as_str().unwrap(), j["platform"].as_str().unwrap());
            (name, (j["outcome"].as_str().unwrap().to_string(), lane_of(j)))
        })
        .collect();
    let want_lanes: BTreeSet<Option<String>> = want.values().map(|(_, lane)| lane.clone()).collect();
    let failed: Vec<&serde_json::Value> = jobs.iter().filter(|j| j["outcome"] == "failed").collect();
    for (width, height) in [(480, 900), (1600, 1000)] {
        let (facts, png) = open_report(page, width, height, &format!("{shot}-{width}"));
        let context = format!("{shot} at {width}px: {facts:#}");
        assert_eq!(facts["console_errors"], serde_json::json!([]), "{context}");
        assert_eq!(facts["page_errors"], serde_json::json!([]), "{context}");
        let bars = facts["jobs"].as_array().unwrap();
        assert_eq!(bars.len(), want.len(), "one bar per job: {context}");
        let shown: BTreeMap<String, (String, Option<String>)> = bars
            .iter()
            .map(|b| {
                let lane = b["builder"].as_str().map(String::from);
                (b["job"].as_str().unwrap().to_string(), (b["outcome"].as_str().unwrap().to_string(), lane))
            })
            .collect();
        assert_eq!(shown, want, "each job's outcome and lane: {context}");
        let lanes: BTreeSet<Option<String>> = facts["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| match l["builder"].as_str() {
                Some(b) => Some(b.to_string()),
                None => {
                    assert_eq!(l["lane"], "memo", "{context}");
                    None
                }
            })
            .collect();
        assert_eq!(facts["lanes"].as_array().unwrap().len(), lanes.len(), "a lane once: {context}");
        assert_eq!(lanes, want_lanes, "one lane per builder used: {context}");
        let sections = facts["failures"].as_array().unwrap();
        assert_eq!(sections.len(), failed.len(), "{context}");
        for job in &failed {
            let name = format!("{} {}", job["image"].as_str().unwrap(), job["platform"].as_str().unwrap());
            let section =
                sections.iter().find(|s| s["job"] == name.as_str()).unwrap_or_else(|| panic!("{name}: {context}"));
            let text = section["text"].as_str().unwrap();
            let step = job["failing_step"].as_str().unwrap_or_else(|| panic!("{name} has no failing_step: {job:#}"));
            assert!(text.contains(step), "{name}'s section names its failing step `{step}`: {context}");
            let tail = job["log_tail"].as_str().unwrap().lines().rev().find(|l| !l.trim().is_empty()).unwrap();
            assert!(text.contains(tail.trim()), "{name}'s section shows its log tail `{tail}`: {context}");
        }
        // The page itself never scrolls sideways; the timeline and the matrix scroll in
        // their own boxes.
        let (scroll, window) = (facts["scroll_width"].as_u64().unwrap(), facts["window_width"].as_u64().unwrap());
        assert!(scroll <= window, "the page is {scroll}px wide in a {window}px window: {context}");
        // A wide window shows the whole timeline; a narrow one scrolls it in its box.
        let (timeline, room) =
            (facts["timeline_scroll_width"].as_u64().unwrap(), facts["timeline_box_width"].as_u64().unwrap());
        if width >= 1000 {
            assert_eq!(timeline, room, "the timeline scrolls in a {width}px window: {context}");
        } else {
            assert!(timeline > room, "a {width}px window cannot hold a 720px timeline: {context}");
        }
        let image = std::fs::read(&png).unwrap();
        assert!(image.starts_with(b"\x89PNG") && image.len() > 10_000, "{}: no screenshot", png.display());
    }
}

#[test]
fn a_200_job_report_shows_every_job_in_its_lane_at_narrow_and_wide_sizes() {
    if !browser_up("report-page-200") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let made = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/synthetic_run.py"))
        .args(["100".as_ref(), store.as_os_str()])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let id = stdout(&made).trim().to_string();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("runs").join(format!("{id}.json"))).unwrap()).unwrap();
    assert_eq!(record["jobs"].as_array().unwrap().len(), 200);
    let page = dir.path().join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_archfarm"))
        .args(["report", &id, "--output", page.to_str().unwrap()])
        .current_dir(dir.path())
        .env("ARCHFARM_STORE", &store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    for remote in ["http://", "https://", "<script", "<link", "@import", "url("] {
        assert!(!html.contains(remote), "the page is self-contained, yet holds `{remote}`");
    }
    check_page(&page, &record, "report-200");
}

#[test]
fn a_two_builder_run_with_a_failure_reads_right_in_chromium() {
    if !browser_up("report-page-fleet") || !engines_up("report-page-fleet", &[AMD_BOX]) {
        return;
    }
    let repo = Repo::dockerfile_only("report-page");
    repo.write(
        "archfarm.yaml",
        &format!(
            "builders:\n  - {{name: local, endpoint: 'unix:///var/run/docker.sock', jobs: 1}}\n  - {{name: box-a, endpoint: '{AMD_BOX}', jobs: 1}}\n"
        ),
    );
    repo.write(
        "images/broken/Dockerfile",
        "FROM archfarm.local/images/base/busybox\nRUN echo the test suite broke here >&2 && exit 3\n",
    );
    // The base first, so the second run holds a memo hit and three jobs ready at once.
    let base = repo.run(&["build", "base/busybox", "--platform", "linux/amd64"]);
    assert!(base.status.success(), "{}", stderr(&base));
    let page = repo.path().join("run.html");
    let out = repo.run(&["build", "--platform", "linux/amd64", "--json", "--report", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("report: {}", page.display())), "{}", stderr(&out));
    let history = repo.json(&["history", "--json"]);
    let id = history[0]["id"].as_str().unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.path().join(format!("store/runs/{id}.json"))).unwrap()).unwrap();
    let jobs = record["jobs"].as_array().unwrap();
    let builders: BTreeSet<&str> = jobs.iter().filter_map(|j| j["builder"].as_str()).collect();
    assert_eq!(builders, BTreeSet::from(["box-a", "local"]), "both builders ran jobs: {record:#}");
    let broken = jobs.iter().find(|j| j["image"] == "broken").unwrap();
    assert_eq!(broken["outcome"], "failed", "{broken:#}");
    assert!(broken["failing_step"].as_str().is_some_and(|s| s.contains("RUN echo the test suite broke")), "{broken:#}");
    assert!(jobs.iter().any(|j| j["image"] == "base/busybox" && j["outcome"] == "cached"), "{record:#}");
    check_page(&page, &record, "report-fleet");
}
