//! `archfarm local-image` (make's `local-image-<image>`).

use crate::cli::planned::Planned;
use crate::support::error::Result;

/// `local-image`: the local name with its key, `<local prefix>/<image>:<key>`.
pub async fn run(p: Planned) -> Result<bool> {
    for name in &p.images {
        println!("{}:{}", p.farm.config.local_name(name), p.job(name).key);
    }
    Ok(p.resolved())
}
