use super::*;
use crate::farm::report::BuildReport;

fn args(s: &str) -> Vec<String> {
    s.split(' ').map(str::to_string).collect()
}

#[test]
fn secrets_leave_the_command_line() {
    let got = redact(&args(
        "archfarm --registry https://bob:hunter2@reg.example/x build --token abc --secret-file=s --password-stdin a",
    ));
    assert_eq!(
        got,
        args("archfarm --registry https://***@reg.example/x build --token *** --secret-file=*** --password-stdin a")
    );
    assert_eq!(redact(&args("archfarm push http://reg:5000/a@b")), args("archfarm push http://reg:5000/a@b"));
}

#[test]
fn the_verb_skips_global_flags_and_their_values() {
    assert_eq!(verb(&args("archfarm --store /s -v --images x push a")), "push");
    assert_eq!(verb(&args("archfarm build")), "build");
    assert_eq!(verb(&args("archfarm")), "");
}

fn record(at_ms: u64, verb: &str) -> RunRecord {
    let started = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(at_ms);
    let mut r = RunRecord::new(&args(&format!("archfarm {verb}")), started, &BuildReport::default(), 0);
    r.id = format!("{}-1", rfc3339_millis(started).replace(['-', ':'], ""));
    r
}

#[test]
fn records_are_kept_newest_last_and_pruned_to_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Runs::in_store(dir.path());
    assert!(runs.ids().unwrap().is_empty());
    assert!(runs.load(None).unwrap_err().message().contains("no run recorded"));
    for (i, verb) in ["build", "push", "build", "push"].iter().enumerate() {
        runs.write(&record(1_700_000_000_000 + i as u64 * 1000, verb), 3).unwrap();
    }
    let ids = runs.ids().unwrap();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let latest = runs.latest(10).unwrap();
    assert_eq!(latest.iter().map(|r| r.verb.as_str()).collect::<Vec<_>>(), ["push", "build", "push"]);
    assert_eq!(runs.load(None).unwrap().id, ids[2]);
    let before = runs.previous(&latest[0]).unwrap().unwrap();
    assert_eq!((before.verb.as_str(), before.id.as_str()), ("push", ids[0].as_str()));
    assert!(runs.previous(&latest[1]).unwrap().is_none(), "the first build was pruned");
    assert!(runs.load(Some("nosuch")).unwrap_err().message().contains("archfarm history"));
    assert!(runs.load(Some("../x")).is_err());
    // No temporary file is left beside the records.
    assert_eq!(std::fs::read_dir(dir.path().join("runs")).unwrap().count(), 3);
}

#[test]
fn a_failed_job_keeps_the_tail_of_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("x.log");
    let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&log, text).unwrap();
    let job: JobReport = serde_json::from_value(serde_json::json!({
        "image": "a", "platform": "linux/amd64", "key": "k", "outcome": "failed", "seconds": 1.0,
        "log": log.display().to_string(),
    }))
    .unwrap();
    let tail = log_tail(&job).unwrap();
    assert!(tail.starts_with("line 60\n") && tail.ends_with("line 99"), "{tail}");
    let built = JobReport { outcome: Outcome::Built, ..job };
    assert_eq!(log_tail(&built), None);
}
