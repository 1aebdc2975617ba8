//! The plan of a make-target command (`load`, `pull`, `rebuild`, `push`, `tag`, `test`,
//! `local-image`): the selected images for one platform, run through the farm and
//! tagged in the local engine.

use std::future::Future;
use std::sync::Arc;

use crate::cli::planning::{make_plan, single_platform, BaseFlags};
use crate::cli::selection::{select, Selection};
use crate::cli::summary::finish_report;
use crate::farm::progress::Progress;
use crate::farm::{BuildOptions, BuildReport, Farm};
use crate::image::platform::Platform;
use crate::plan::{Job, Plan, PlatformChoice};
use crate::recipe::catalog::Catalog;
use crate::recipe::config::Config;
use crate::support::error::{Error, Result};

/// A planned selection for one platform: which selected images have a job, and which
/// are not available for the platform (printed, not an error, as gVisor's targets do).
pub struct Planned {
    pub farm: Arc<Farm>,
    pub platform: Platform,
    pub plan: Plan,
    /// The selected images that have a job for the platform.
    pub images: Vec<String>,
    /// The selected images that are unresolved for the platform, with the reason.
    pub unresolved: Vec<String>,
}

/// Plans `sel` for one platform and runs `command` on the plan, unless no selected image
/// has a job for the platform: then only the unresolved ones are reported (an error each,
/// and the run fails) and nothing runs.
pub async fn run<F, Fut>(
    config: Config,
    catalog: &Catalog,
    progress: Progress,
    sel: &Selection,
    bases: &BaseFlags,
    command: F,
) -> Result<bool>
where
    F: FnOnce(Planned) -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let p = Planned::new(config, catalog, progress, sel, bases).await?;
    if p.images.is_empty() {
        return Ok(p.resolved());
    }
    command(p).await
}

impl Planned {
    /// Runs the plan with `opts` (which materializes its jobs in the engine), then tags
    /// each image locally as `<local prefix>/<image>:<key>` and `:latest`.
    pub async fn run_and_tag(&self, opts: &BuildOptions, json: bool) -> Result<bool> {
        let report = self.farm.run(&self.plan, opts).await?;
        if report.failed() {
            return finish_report(&self.farm, &report, json);
        }
        let ids = self.ids_from(&report)?;
        self.tag_local(&ids, json).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
        }
        Ok(true)
    }

    pub async fn new(
        config: Config,
        catalog: &Catalog,
        progress: Progress,
        sel: &Selection,
        bases: &BaseFlags,
    ) -> Result<Planned> {
        let platform = single_platform(&config, sel.platform.as_deref())?;
        let names = select(&config, catalog, sel)?;
        let farm = Arc::new(Farm::new(config, progress)?);
        let plan = make_plan(&farm, catalog, &names, &PlatformChoice::Requested(vec![platform.clone()]), bases).await?;
        let mut images = Vec::new();
        let mut unresolved = Vec::new();
        for name in &names {
            if plan.job(name, &platform).is_some() {
                images.push(name.clone());
            } else if let Some(u) = plan.unresolved(name, &platform) {
                unresolved.push(format!("{name} for {platform}: {}", u.reason));
            } else {
                let reason =
                    plan.skipped.iter().find(|s| &s.image == name).map(|s| s.reason.clone()).unwrap_or_default();
                println!("{name} is not available for {platform}: {reason}");
            }
        }
        Ok(Planned { farm, platform, plan, images, unresolved })
    }

    /// Reports the unresolved selected images (a `farm.run` reports them itself) and
    /// says whether there were none.
    pub fn resolved(&self) -> bool {
        for u in &self.unresolved {
            eprintln!("error: {u}");
        }
        self.unresolved.is_empty()
    }

    pub fn job(&self, name: &str) -> &Job {
        self.plan.job(name, &self.platform).expect("selected images have a job")
    }

    pub fn jobs(&self) -> Vec<(String, Platform)> {
        self.images.iter().map(|n| (n.clone(), self.platform.clone())).collect()
    }

    /// Tags each image ID as `<local prefix>/<image>:<key>` and `:latest`, printing both.
    pub async fn tag_local(&self, ids: &[(String, String)], quiet: bool) -> Result<()> {
        let engine = self.farm.engine().await?;
        for (name, id) in ids {
            let key = &self.job(name).key;
            let local = self.farm.config.local_name(name);
            engine.tag(id, &local, key).await?;
            engine.tag(id, &local, "latest").await?;
            if !quiet {
                println!("{local}:{key}");
                println!("{local}:latest");
            }
        }
        Ok(())
    }

    /// The engine image IDs of the selected images after a run that materialized them.
    pub fn ids_from(&self, report: &BuildReport) -> Result<Vec<(String, String)>> {
        self.images
            .iter()
            .map(|name| {
                let key = &self.job(name).key;
                report
                    .jobs
                    .iter()
                    .find(|j| &j.image == name && &j.key == key)
                    .and_then(|j| j.image_id.clone())
                    .map(|id| (name.clone(), id))
                    .ok_or_else(|| {
                        Error::failure(format!("{name} for {}: no image in the engine after the run", self.platform))
                    })
            })
            .collect()
    }
}
