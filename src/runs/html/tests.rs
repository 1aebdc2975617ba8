use serde_json::json;

use super::*;

/// A job of a run that started at 10:00:00.000: `start`, `working` and `end` are ms
/// after it.
fn job(
    image: &str,
    outcome: &str,
    builder: Option<&str>,
    parents: &[&str],
    start: u64,
    working: u64,
    end: u64,
) -> serde_json::Value {
    let at = |ms: u64| format!("2026-12-03T10:00:{:02}.{:03}Z", ms / 1000, ms % 1000);
    let mut j = json!({
        "image": image, "platform": "linux/amd64", "key": format!("{image}-key-0123456789abcdef"),
        "outcome": outcome, "seconds": (end - start) as f64 / 1000.0,
        "parents": parents.iter().map(|p| format!("{p} linux/amd64")).collect::<Vec<_>>(),
        "started_at": at(start), "ended_at": at(end),
    });
    if let Some(b) = builder {
        j["builder"] = json!(b);
        j["route"] = json!("native");
        j["backend"] = json!("buildkit");
        j["working_at"] = json!(at(working));
        if outcome != "failed" {
            j["source"] = json!("build");
        }
    } else {
        j["source"] = json!("store");
    }
    j
}

fn run(jobs: Vec<serde_json::Value>, wall_ms: u64) -> RunRecord {
    serde_json::from_value(json!({
        "format": 1, "id": "20261203T100000.000Z-1", "archfarm": "0", "command": ["archfarm", "build"],
        "verb": "build", "started_at": "2026-12-03T10:00:00.000Z",
        "ended_at": format!("2026-12-03T10:00:{:02}.{:03}Z", wall_ms / 1000, wall_ms % 1000),
        "wall_seconds": wall_ms as f64 / 1000.0, "exit_code": 0, "jobs": jobs, "tags": [], "skipped": [], "errors": [],
    }))
    .expect("a run record")
}

#[test]
fn escapes_untrusted_text() {
    let mut bad = job("<img src=x onerror=alert(1)>", "failed", Some("b\"1"), &[], 0, 100, 900);
    bad["error"] = json!("</pre><script>alert('x')</script>");
    bad["failing_step"] = json!("RUN echo \"&<>\"");
    let mut r = run(vec![bad], 1000);
    r.jobs[0].log_tail = Some("<b>log</b>".into());
    let page = render(&r, None);
    assert!(!page.contains("<img"), "{page}");
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("<b>log"), "{page}");
    assert!(page.contains("&lt;/pre&gt;&lt;script&gt;alert(&#39;x&#39;)"), "{page}");
    assert!(page.contains("data-builder=\"b&quot;1\""), "{page}");
    assert!(page.contains("RUN echo &quot;&amp;&lt;&gt;&quot;"), "{page}");
}

#[test]
fn one_data_job_per_job_in_lanes() {
    let r = run(
        vec![
            job("base", "built", Some("alpha"), &[], 0, 100, 2000),
            job("app", "built", Some("beta"), &["base"], 100, 2000, 3000),
            job("memo", "cached", None, &[], 0, 0, 50),
            job("tool", "failed", Some("alpha"), &[], 2000, 2100, 2500),
        ],
        3000,
    );
    let page = render(&r, None);
    for name in ["base", "app", "memo", "tool"] {
        assert_eq!(page.matches(&format!("data-job=\"{name} linux/amd64\"")).count(), 1, "{name}");
    }
    assert_eq!(page.matches("data-job=").count(), 4);
    assert_eq!(page.matches("data-builder=\"alpha\"").count(), 1);
    assert_eq!(page.matches("data-builder=\"beta\"").count(), 1);
    assert_eq!(page.matches("data-builder=").count(), 2, "the memo lane has no data-builder");
    // The cached job sits in the memo lane, after both builders'.
    let memo_lane = page.find("data-lane=\"memo\"").expect("a memo lane");
    assert!(page[memo_lane..].contains("data-job=\"memo linux/amd64\" data-outcome=\"cached\""));
    assert!(page.find("data-builder=\"beta\"").unwrap() < memo_lane);
}

#[test]
fn assembler_jobs_have_their_own_lane() {
    let mut assembled = job("scratchy", "built", None, &[], 0, 0, 300);
    assembled["backend"] = json!("assembler");
    let page = render(&run(vec![assembled, job("x", "built", Some("alpha"), &[], 0, 0, 300)], 300), None);
    assert!(page.contains("data-builder=\"assembler\""));
    assert!(!page.contains("data-lane=\"memo\""));
}

#[test]
fn critical_path_follows_the_longest_active_chain() {
    // a (2s active) -> b (1s) -> d (0.5s): 3.5s; a -> c (0.2s) -> d: 2.7s; e alone: 3s.
    // b waits 1.9s for a: a wait does not count.
    let jobs = vec![
        job("a", "built", Some("x"), &[], 0, 0, 2000),
        job("b", "built", Some("x"), &["a"], 100, 2000, 3000),
        job("c", "built", Some("y"), &["a"], 100, 2000, 2200),
        job("d", "built", Some("y"), &["b", "c"], 200, 3000, 3500),
        job("e", "built", Some("y"), &[], 0, 0, 3000),
    ];
    let r = run(jobs, 3500);
    let (chain, length) = critical_path(&r.jobs);
    assert_eq!(chain, vec![0, 1, 3]);
    assert_eq!(length, 3500);
    let page = render(&r, None);
    assert_eq!(page.matches("data-critical=\"true\"").count(), 3);
    assert!(page.contains("3.5s of 3.5s wall time (100%)"), "{page}");
}

#[test]
fn active_time_without_working_at_is_the_span_less_the_waits() {
    let mut j = job("a", "failed", None, &[], 0, 0, 3000);
    j["waited_for_parents"] = json!(1.0);
    j["waited_for_builder"] = json!(0.5);
    let r = run(vec![j], 3000);
    assert_eq!(active_millis(&r.jobs[0]), 1500);
}

#[test]
fn difference_from_the_previous_run() {
    let before =
        run(vec![job("a", "built", Some("x"), &[], 0, 0, 4000), job("b", "failed", Some("x"), &[], 0, 0, 1000)], 4000);
    let now = run(
        vec![
            job("a", "cached", None, &[], 0, 0, 100),
            job("b", "built", Some("x"), &[], 0, 0, 1500),
            job("c", "built", Some("x"), &[], 0, 0, 1500),
        ],
        1500,
    );
    let page = render(&now, Some(&before));
    assert!(page.contains("<dt>wall time</dt><dd>-2.5s (4.0s then)</dd>"), "{page}");
    assert!(page.contains("<dt>built</dt><dd>+1</dd><dt>cached</dt><dd>+1</dd><dt>failed</dt><dd>-1</dd>"), "{page}");
    assert!(page.contains("a linux/amd64: built \u{2192} cached"));
    assert!(page.contains("b linux/amd64: failed \u{2192} built"));
    assert!(page.contains("c linux/amd64: absent \u{2192} built"));
    assert!(!render(&now, None).contains("Since the previous run"));
}

#[test]
fn totals_and_units() {
    let mut a = job("a", "built", Some("x"), &[], 0, 0, 2000);
    a["bytes_pushed"] = json!(3 * 1024 * 1024 / 2);
    let page = render(&run(vec![a, job("b", "cached", None, &[], 0, 0, 100)], 4000), None);
    assert!(page.contains("<dt>pushed</dt><dd>1.5 MiB</dd>"), "{page}");
    assert!(page.contains("<dt>cache hits</dt><dd>50%</dd>"), "{page}");
    assert!(page.contains("<dt>parallelism on x</dt><dd>0.50 (busy 2.0s of 4.0s)</dd>"), "{page}");
}

#[test]
fn jobs_at_once_on_one_builder_get_rows_of_their_own() {
    let r = run(
        vec![
            job("a", "built", Some("alpha"), &[], 0, 0, 2000),
            job("b", "built", Some("alpha"), &[], 500, 500, 1500),
            job("c", "built", Some("alpha"), &[], 2000, 2000, 3000),
        ],
        3000,
    );
    let page = render(&r, None);
    let top = |name: &str| {
        let bar = &page[page.find(&format!("data-job=\"{name} linux/amd64\"")).unwrap()..];
        let at = bar.find("top:").unwrap() + 4;
        bar[at..at + bar[at..].find("rem").unwrap()].to_string()
    };
    // b overlaps a: a row below it; c starts as a ends: back on the first row.
    assert_ne!(top("a"), top("b"));
    assert_eq!(top("a"), top("c"));
    assert!(page.contains("class=\"rows\" style=\"height:2.8rem\""), "{page}");
}

#[test]
fn a_job_built_after_an_emulator_fault_says_so() {
    let mut j = job("crashy", "built", Some("arm-box"), &[], 0, 500, 2000);
    j["retries"] = json!([{"builder": "amd-box", "fault": "emulator", "error": "qemu: uncaught target signal 11"}]);
    let mut f = job("broken", "failed", Some("amd-box"), &[], 0, 100, 900);
    f["fault"] = json!("recipe");
    let page = render(&run(vec![j, f], 2000), None);
    assert!(page.contains("data-retried=\"emulator\""), "{page}");
    assert!(page.contains("data-fault=\"recipe\""), "{page}");
    let section = &page[page.find("<section class=\"retried\" data-retried=\"crashy linux/amd64\">").expect(&page)..];
    assert!(
        section.contains("built on arm-box") && section.contains("amd-box (emulator): qemu: uncaught"),
        "{section}"
    );
}

#[test]
fn the_run_outside_its_jobs_is_shown_and_a_jobs_error_is_told_once() {
    let mut f = job("broken", "failed", Some("x"), &[], 1000, 1100, 2000);
    f["error"] = json!("RUN make exited with 2");
    let mut r = run(vec![f], 2500);
    r.errors =
        vec!["broken for linux/amd64: RUN make exited with 2".into(), "broken: canonical tag not written".into()];
    let page = render(&r, None);
    assert!(page.contains("data-phase=\"planning\" style=\"left:0.000%;width:40.000%\""), "{page}");
    assert!(page.contains("data-phase=\"after the jobs\" style=\"left:80.000%;width:20.000%\""), "{page}");
    assert_eq!(page.matches("RUN make exited with 2").count(), 1, "{page}");
    assert!(page.contains("<pre class=\"run-error\">broken: canonical tag not written</pre>"), "{page}");
}
