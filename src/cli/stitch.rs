//! `archfarm stitch [IMAGE...]`: write the canonical tag of each image whose every
//! platform is in the registry; builds nothing.

use crate::cli::planning::{plan_for, resolve_names, BaseFlags};
use crate::farm::{BuildReport, Farm};
use crate::recipe::catalog::Catalog;
use crate::support::error::{Error, Result};

/// Stitches `names` (default all) over `platform` (default: the configured platforms),
/// finding the per-platform manifests in `staging` when given; fails naming what is missing.
pub async fn run(
    farm: &Farm,
    catalog: &Catalog,
    names: &[String],
    platform: Option<&str>,
    staging: Option<&str>,
    json: bool,
    bases: &BaseFlags,
) -> Result<bool> {
    let plan = plan_for(farm, catalog, names, platform, bases).await?;
    let only = resolve_names(catalog, names)?;
    let report = crate::farm::stitch::run(farm, &plan, &only, staging).await?;
    farm.progress().report(&BuildReport {
        tags: report.tags.clone(),
        errors: report
            .missing
            .iter()
            .map(|m| format!("{}: not stitched: missing {}", m.image, m.platforms.join(", ")))
            .collect(),
        ..Default::default()
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("stitch report serializes"));
    } else {
        for t in &report.tags {
            println!("{} {} ({})", t.tag, t.digest, t.platforms.join(", "));
        }
    }
    for u in &plan.unresolved {
        eprintln!("error: {} for {}: not stitched: {}", u.image, u.platform, u.reason);
    }
    if plan.unresolved.iter().any(|u| u.invalid) {
        return Err(Error::usage("images with invalid recipes (above) were not stitched; fix them"));
    }
    Ok(report.missing.is_empty() && plan.unresolved.is_empty())
}
