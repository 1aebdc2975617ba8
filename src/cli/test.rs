//! `archfarm test` (make's `test-<image>`, the presubmit).

use crate::cli::planned::Planned;
use crate::cli::summary::finish_report;
use crate::farm::progress::{Outcome, Source};
use crate::farm::BuildOptions;
use crate::support::error::Result;

/// `test` (presubmit): each image's key is in the registry, or it builds here. Never
/// pushes and never tags.
pub async fn run(p: Planned, json: bool) -> Result<bool> {
    let report = p.farm.run(&p.plan, &BuildOptions::default()).await?;
    if json || report.failed() {
        return finish_report(&p.farm, &report, json);
    }
    for j in report.jobs.iter().filter(|j| p.images.contains(&j.image)) {
        let how = match (j.outcome, j.source) {
            (Outcome::Built, _) => "builds",
            (_, Some(Source::Registry)) => "in the registry",
            (_, Some(Source::Store)) => "in the local store",
            (_, Some(Source::Engine)) => "in the local engine",
            _ => "ok",
        };
        println!("{} {}: ok ({how})", j.image, j.platform);
    }
    Ok(true)
}
