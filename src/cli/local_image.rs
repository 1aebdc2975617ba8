//! `archfarm local-image` (make's `local-image-<image>`).

use crate::cli::planned::Planned;
use crate::cli::planning::BaseFlags;
use crate::cli::selection::Selection;
use crate::farm::progress::Progress;
use crate::recipe::catalog::Catalog;
use crate::recipe::config::Config;
use crate::support::error::Result;

/// `local-image`: the local name with its key, `<local prefix>/<image>:<key>`.
pub async fn run(
    config: Config,
    catalog: &Catalog,
    progress: Progress,
    sel: &Selection,
    bases: &BaseFlags,
) -> Result<bool> {
    let p = Planned::new(config, catalog, progress, sel, bases).await?;
    for name in &p.images {
        println!("{}:{}", p.farm.config.local_name(name), p.job(name).key);
    }
    Ok(p.resolved())
}
