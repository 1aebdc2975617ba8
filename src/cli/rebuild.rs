//! `archfarm rebuild` (make's `rebuild-<image>` and `build-<image>`).

use crate::cli::planned::Planned;
use crate::farm::BuildOptions;
use crate::support::error::Result;

/// `rebuild` (make's `rebuild-<image>` and `build-<image>`): build each selected image on
/// the local engine even when the memo or the registry has its key (parents are looked
/// up as usual), then the local tags. Never pushes.
pub async fn run(p: Planned, json: bool) -> Result<bool> {
    let opts = BuildOptions { materialize: p.jobs(), rebuild: p.jobs(), ..Default::default() };
    p.run_and_tag(&opts, json).await
}
