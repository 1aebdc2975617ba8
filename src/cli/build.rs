//! `archfarm build [IMAGE...]`: build what is missing; with `--push` also publish and
//! stitch the canonical tags.

use std::sync::Arc;

use crate::cli::planning::{make_plan, resolve_names, BaseFlags};
use crate::cli::summary::finish_report;
use crate::farm::{BuildOptions, Farm};
use crate::plan::PlatformChoice;
use crate::recipe::catalog::Catalog;
use crate::support::error::Result;

/// Builds `names` (default all, with their farm parents) for `platform` (default: the
/// configured platforms) with `opts`, then reports.
pub async fn run(
    farm: Arc<Farm>,
    catalog: &Catalog,
    names: &[String],
    platform: Option<&str>,
    opts: &BuildOptions,
    json: bool,
    bases: &BaseFlags,
) -> Result<bool> {
    let names = resolve_names(catalog, names)?;
    let choice = match platform {
        Some(p) => PlatformChoice::Requested(farm.config.arches.parse_platform_list(p)?),
        None => PlatformChoice::Defaults,
    };
    let plan = make_plan(&farm, catalog, &names, &choice, bases).await?;
    let report = farm.run(&plan, opts).await?;
    finish_report(&farm, &report, json)
}
