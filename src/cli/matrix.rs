//! `archfarm matrix`: the (image, platform) jobs whose keys are not yet in the registry,
//! in waves (a job's missing parents are in earlier waves), for a CI system's matrix:
//! each entry is one `archfarm build IMAGE --platform P --push --no-stitch` job, and one
//! final `archfarm stitch` writes the canonical tags.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::cli::planning::{plan_for, BaseFlags};
use crate::farm::Farm;
use crate::image::platform::Platform;
use crate::plan::key::platform_tag;
use crate::plan::Plan;
use crate::recipe::catalog::Catalog;
use crate::support::error::Result;

/// How `matrix` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MatrixFormat {
    Json,
    Github,
}

/// Plans `names` (default all) over `platform` (default: the configured platforms) and
/// prints the matrix of what the registry lacks.
pub async fn run(
    farm: &Farm,
    catalog: &Catalog,
    names: &[String],
    platform: Option<&str>,
    format: MatrixFormat,
    waves: Option<usize>,
    bases: &BaseFlags,
) -> Result<bool> {
    let plan = plan_for(farm, catalog, names, platform, bases).await?;
    let m = compute(farm, &plan).await?;
    match format {
        MatrixFormat::Json => println!("{}", serde_json::to_string_pretty(&m).expect("matrix serializes")),
        MatrixFormat::Github => print!("{}", m.github(waves)),
    }
    Ok(true)
}

/// How many images are looked up in the registry at once.
const CONCURRENCY: usize = 32;

/// One CI job: build and push `image` for `platform` (its key is not in the registry).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Entry {
    pub image: String,
    pub platform: String,
    pub key: String,
}

/// The missing jobs, wave by wave.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    /// Total number of entries over all waves.
    pub jobs: usize,
    /// `waves[0]` needs nothing missing; an entry of `waves[n]` has a missing parent in `waves[n-1]`.
    pub waves: Vec<Vec<Entry>>,
    /// Images whose canonical tag a final `archfarm stitch` writes (every planned image
    /// whose every platform has a key).
    pub stitch: Vec<String>,
    /// Jobs with no key because a base image is unresolved: not built, not stitched.
    pub unresolved: Vec<Unresolved>,
}

/// A job left out of the matrix, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Unresolved {
    pub image: String,
    pub platform: String,
    pub reason: String,
}

/// Looks every job's key tag up in the registry and groups the missing ones in waves.
/// A registry that does not answer is an error, never "all missing".
pub async fn compute(farm: &Farm, plan: &Plan) -> Result<Matrix> {
    farm.registry().check().await?;
    let present = in_registry(farm, plan).await?;
    let missing: Vec<bool> = present.iter().map(|p| !p).collect();
    Ok(waves(plan, &missing))
}

/// Whether each of `plan.jobs` has its key tag in the registry: one tags-list request
/// per image (images in parallel), or, where the registry will not list tags, a HEAD per
/// key tag.
pub async fn in_registry(farm: &Farm, plan: &Plan) -> Result<Vec<bool>> {
    // Per image that has jobs (an image with an unresolved platform has no ImagePlan,
    // but its other platforms are still built).
    let mut names: Vec<&str> = plan.jobs.iter().map(|j| j.image.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let per_image: Vec<Vec<(usize, bool)>> = stream::iter(names.into_iter().map(|image| async move {
        let jobs: Vec<(usize, &crate::plan::Job)> =
            plan.jobs.iter().enumerate().filter(|(_, j)| j.image == image).collect();
        let repo = farm.config.registry.repository(image);
        let listed = match farm.registry().tags(&repo).await {
            Ok(tags) => Some(tags.unwrap_or_default()),
            Err(e) => {
                tracing::debug!("{repo}: no tag list ({}); asking per tag", e.message());
                None
            }
        };
        let mut found = Vec::new();
        for (i, job) in jobs {
            let tag = platform_tag(&job.platform, &job.key);
            let present = match &listed {
                Some(tags) => tags.contains(&tag),
                None => farm.registry().manifest_head(&repo, &tag).await?.is_some(),
            };
            found.push((i, present));
        }
        Ok::<_, crate::support::error::Error>(found)
    }))
    .buffered(CONCURRENCY)
    .try_collect()
    .await?;
    let mut present = vec![false; plan.jobs.len()];
    for (i, p) in per_image.into_iter().flatten() {
        present[i] = p;
    }
    Ok(present)
}

/// Groups the jobs flagged missing in waves. `plan.jobs` is in topological order, so a
/// parent's wave is known before its children's.
pub fn waves(plan: &Plan, missing: &[bool]) -> Matrix {
    let mut wave_of: BTreeMap<(&str, &Platform), usize> = BTreeMap::new();
    let mut waves: Vec<Vec<Entry>> = Vec::new();
    for (job, _) in plan.jobs.iter().zip(missing).filter(|(_, m)| **m) {
        let wave = job
            .parents
            .iter()
            .filter_map(|p| wave_of.get(&(p.image.as_str(), &job.platform)).map(|w| w + 1))
            .max()
            .unwrap_or(0);
        wave_of.insert((job.image.as_str(), &job.platform), wave);
        if waves.len() <= wave {
            waves.resize(wave + 1, Vec::new());
        }
        waves[wave].push(Entry { image: job.image.clone(), platform: job.platform.to_string(), key: job.key.clone() });
    }
    Matrix {
        jobs: waves.iter().map(Vec::len).sum(),
        waves,
        stitch: plan.images.iter().map(|i| i.name.clone()).collect(),
        unresolved: plan
            .unresolved
            .iter()
            .map(|u| Unresolved { image: u.image.clone(), platform: u.platform.to_string(), reason: u.reason.clone() })
            .collect(),
    }
}

impl Matrix {
    /// Lines for `$GITHUB_OUTPUT`: `jobs`, `waves`, and for each wave `i` below
    /// `max(waves, slots)`: `wave<i>` (a `{"include": [...]}` matrix) and `wave<i>_jobs`.
    /// With `slots` (the workflow's number of wave jobs), waves at or past the last slot
    /// are folded into it: correct, because a build brings its missing parents along, only
    /// slower.
    pub fn github(&self, slots: Option<usize>) -> String {
        let mut waves = self.waves.clone();
        if let Some(n) = slots.filter(|n| *n > 0) {
            if waves.len() > n {
                let rest: Vec<Entry> = waves.drain(n - 1..).flatten().collect();
                waves.push(rest);
            }
            waves.resize(n, Vec::new());
        }
        let mut out = format!("jobs={}\nwaves={}\n", self.jobs, self.waves.len());
        for (i, w) in waves.iter().enumerate() {
            let m = serde_json::json!({ "include": w });
            out.push_str(&format!("wave{i}={m}\nwave{i}_jobs={}\n", w.len()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(image: &str) -> Entry {
        Entry { image: image.into(), platform: "linux/amd64".into(), key: "k".into() }
    }

    #[test]
    fn github_output_folds_deep_waves_into_the_last_slot_and_pads() {
        let m = Matrix {
            jobs: 3,
            waves: vec![vec![entry("a")], vec![entry("b")], vec![entry("c")]],
            stitch: vec![],
            unresolved: vec![],
        };
        let out = m.github(Some(2));
        assert!(out.starts_with("jobs=3\nwaves=3\n"), "{out}");
        assert!(out.contains("wave0_jobs=1\n") && out.contains("wave1_jobs=2\n"), "{out}");
        assert!(!out.contains("wave2"), "{out}");
        let out = m.github(Some(4));
        assert!(out.contains("wave3={\"include\":[]}\nwave3_jobs=0\n"), "{out}");
        let line = out.lines().find(|l| l.starts_with("wave0=")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line["wave0=".len()..]).unwrap();
        assert_eq!(v["include"][0]["image"], "a");
    }
}
