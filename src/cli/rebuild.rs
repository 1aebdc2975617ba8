//! `archfarm rebuild` (make's `rebuild-<image>` and `build-<image>`).

use crate::cli::planned::Planned;
use crate::cli::planning::BaseFlags;
use crate::cli::selection::Selection;
use crate::farm::progress::Progress;
use crate::farm::BuildOptions;
use crate::recipe::catalog::Catalog;
use crate::recipe::config::Config;
use crate::support::error::Result;

/// `rebuild` (make's `rebuild-<image>` and `build-<image>`): build each selected image on
/// the local engine even when the memo or the registry has its key (parents are looked
/// up as usual), then the local tags. Never pushes.
pub async fn run(
    config: Config,
    catalog: &Catalog,
    progress: Progress,
    sel: &Selection,
    json: bool,
    bases: &BaseFlags,
) -> Result<bool> {
    let p = Planned::new(config, catalog, progress, sel, bases).await?;
    if p.images.is_empty() {
        return Ok(p.resolved());
    }
    let opts = BuildOptions { materialize: p.jobs(), rebuild: p.jobs(), ..Default::default() };
    p.run_and_tag(&opts, json).await
}
