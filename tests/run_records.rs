//! Run records on real services: every command that runs jobs leaves one in the store,
//! `history` lists them newest first, `report` and `build --report` write the page, and
//! a run killed with SIGKILL leaves the earlier records whole and no partial one, and a
//! run stopped by Ctrl-C is recorded with exit 130 and the jobs it stopped.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn records(repo: &Repo) -> Vec<serde_json::Value> {
    let dir = repo.path().join("store/runs");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    names
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(n)).unwrap();
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{n:?} is not whole JSON ({e}): {text}"))
        })
        .collect()
}

/// `build slow` started, once archfarm says it builds slow (its RUN step sleeps 60 s).
fn building_slow(repo: &Repo) -> std::process::Child {
    let mut slow =
        repo.command(&["build", "slow", "--platform", "linux/amd64"]).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(slow.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = lines.next().expect("archfarm said it builds slow").unwrap();
        if line.contains("building slow") {
            break;
        }
        assert!(Instant::now() < deadline, "slow never started");
    }
    // Its stderr stays open (and drained) so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    slow
}

#[test]
fn runs_are_recorded_listed_bounded_and_survive_a_killed_run() {
    if !services_up("run-records") {
        return;
    }
    let repo = Repo::dockerfile_only("run-records");
    repo.write("archfarm.yaml", "history: 3\n");
    repo.write(
        "images/broken/Dockerfile",
        "FROM archfarm.local/images/base/busybox\nRUN echo about to fail && exit 3\n",
    );

    let first = repo.run(&["build", "--push", "--platform", "linux/amd64"]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    let recs = records(&repo);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!((r["verb"].as_str(), r["exit_code"].as_i64()), (Some("build"), Some(1)), "{r:#}");
    assert_eq!(
        r["command"].as_array().unwrap()[1..],
        serde_json::json!(["build", "--push", "--platform", "linux/amd64"]).as_array().unwrap()[..]
    );
    let jobs = r["jobs"].as_array().unwrap();
    let job = |image: &str| jobs.iter().find(|j| j["image"] == image).unwrap_or_else(|| panic!("{image}: {r:#}"));
    let broken = job("broken");
    assert_eq!(broken["outcome"], "failed", "{broken:#}");
    assert!(broken["log_tail"].as_str().unwrap().contains("about to fail"), "{broken:#}");
    let greeter = job("greeter");
    assert_eq!((greeter["outcome"].as_str(), greeter["builder"].as_str()), (Some("built"), Some("local")));
    assert_eq!(greeter["parents"], serde_json::json!(["base/busybox linux/amd64"]));
    assert!(greeter["bytes_pushed"].as_u64().unwrap() > 0, "{greeter:#}");
    // A child starts with the run and waits for its parent; it works after the parent ended.
    let base = job("base/busybox");
    assert!(greeter["working_at"].as_str().unwrap() >= base["ended_at"].as_str().unwrap(), "{greeter:#}\n{base:#}");
    assert!(greeter["waited_for_parents"].as_f64().unwrap() > 0.0, "{greeter:#}");
    assert!(r["tags"].as_array().unwrap().iter().any(|t| t["image"] == "greeter"), "{r:#}");

    // A no-op rerun of what built, with the report asked for.
    let page = repo.path().join("run.html");
    let second =
        repo.run(&["build", "greeter", "--push", "--platform", "linux/amd64", "--report", page.to_str().unwrap()]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(stderr(&second).contains(&format!("report: {}", page.display())), "{}", stderr(&second));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("data-job=\"greeter linux/amd64\""), "{html}");

    let history = repo.json(&["history", "--json"]);
    let runs = history.as_array().unwrap();
    assert_eq!(runs.len(), 2, "{history:#}");
    assert!(runs[0]["id"].as_str() > runs[1]["id"].as_str(), "newest first: {history:#}");
    assert_eq!(
        (runs[0]["built"].as_u64(), runs[0]["cached"].as_u64(), runs[0]["failed"].as_u64()),
        (Some(0), Some(2), Some(0))
    );
    assert_eq!(runs[1]["failed"].as_u64(), Some(1), "{history:#}");
    let human = stdout(&repo.run(&["history", "-n", "1"]));
    assert_eq!(human.lines().count(), 1, "{human}");
    assert!(human.contains("build greeter --push") && human.contains("0 built, 2 cached, 0 failed"), "{human}");

    // SIGKILL a run while it builds: no partial record, the earlier ones intact.
    repo.write(
        "images/slow/Dockerfile",
        &format!("FROM archfarm.local/images/base/busybox\nRUN echo {} && sleep 60\n", repo.namespace),
    );
    let mut slow = building_slow(&repo);
    slow.kill().unwrap();
    slow.wait().unwrap();
    let after = records(&repo);
    assert_eq!(after.len(), 2, "the killed run left no record");
    assert_eq!(after, records(&repo));

    // Ctrl-C: the run is recorded with exit 130, naming the job it stopped.
    let slow = building_slow(&repo);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(slow.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let out = slow.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let after = records(&repo);
    assert_eq!(after.len(), 3, "the interrupted run is recorded");
    let stopped = &after[2];
    assert_eq!(stopped["exit_code"], 130, "{stopped:#}");
    assert_eq!(
        stopped["errors"],
        serde_json::json!(["interrupted by SIGINT while these jobs ran: slow linux/amd64"]),
        "{stopped:#}"
    );

    // The bound: history: 3 keeps the last three.
    for _ in 0..3 {
        let out = repo.run(&["build", "greeter", "--platform", "linux/amd64"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let kept = records(&repo);
    assert_eq!(kept.len(), 3);
    assert!(kept.iter().all(|r| r["exit_code"] == 0), "the failed and the interrupted runs were pruned first");
}

#[test]
fn report_names_what_is_wrong() {
    if !services_up("run-report-errors") {
        return;
    }
    let repo = Repo::bare("run-report-errors");
    let none = repo.run(&["report", "--output", "x.html"]);
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));
    assert!(stderr(&none).contains("no run recorded"), "{}", stderr(&none));

    repo.write("images/one/Dockerfile", "FROM scratch\nCOPY nonce.txt /\n");
    repo.write("images/one/nonce.txt", &repo.namespace);
    let out = repo.run(&["build", "--platform", "linux/amd64"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let unknown = repo.run(&["report", "20990101T000000.000Z-1", "--output", "x.html"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("archfarm history"), "{}", stderr(&unknown));
    let missing = repo.run(&["report", "--output", "no/such/folder/x.html"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("no/such/folder"), "{}", stderr(&missing));
    let page = repo.run(&["report", "--output", "-"]);
    assert!(page.status.success() && stdout(&page).contains("data-job=\"one linux/amd64\""), "{}", stdout(&page));
}
