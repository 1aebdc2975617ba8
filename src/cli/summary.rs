//! How a farm run's report is shown: JSON, or tags and a one-line summary; the errors on
//! stderr; and the exit code it stands for.

use crate::farm::{BuildReport, Farm};
use crate::support::error::{Error, Result};

/// Prints the report (JSON, or tags and a summary) and the errors; exit 2 when a job
/// failed on invalid input (the rest of the run still ran), 1 for any other failure.
pub fn finish_report(farm: &Farm, report: &BuildReport, json: bool) -> Result<bool> {
    if json {
        println!("{}", serde_json::to_string_pretty(report).expect("report serializes"));
    } else {
        for s in &report.skipped {
            farm.progress().note(&format!("note: {} {} skipped: {}", s.image, s.platform, s.reason));
        }
        for t in &report.tags {
            println!("{} {} ({})", t.tag, t.digest, t.platforms.join(", "));
        }
        farm.progress().note(&summary(report));
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    let invalid = report.jobs.iter().filter(|j| j.bad_input).count();
    if invalid > 0 {
        return Err(Error::usage(format!(
            "{invalid} job(s) not run or failed because of invalid input (above); fix it and run again"
        )));
    }
    Ok(!report.failed())
}

/// `2 built, 3 cached`, then what failed at which stage: `; 2 failed (push: 2)`. A job
/// counts as built or cached by where its image came from, even when a later stage
/// (push, load) failed; jobs that failed before they had an image count only as failed.
fn summary(report: &BuildReport) -> String {
    use crate::farm::progress::{Outcome, Source};
    let from = |f: fn(Source) -> bool| report.jobs.iter().filter(|j| j.source.is_some_and(f)).count();
    let built = from(|s| s == Source::Build);
    let cached = from(|s| s != Source::Build);
    let mut stages: std::collections::BTreeMap<crate::farm::Stage, usize> = Default::default();
    for j in report.jobs.iter().filter(|j| j.outcome == Outcome::Failed) {
        *stages.entry(j.stage.unwrap_or(crate::farm::Stage::Build)).or_default() += 1;
    }
    let failed: usize = stages.values().sum();
    let tail = if failed > 0 {
        let per: Vec<String> = stages.iter().map(|(s, n)| format!("{}: {n}", s.name())).collect();
        format!("; {failed} failed ({})", per.join(", "))
    } else if built == 0 && report.errors.is_empty() {
        ": nothing to do".to_string()
    } else {
        String::new()
    };
    format!("{built} built, {cached} cached{tail}")
}
