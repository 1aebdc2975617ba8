//! `archfarm pull` (make's `pull-<image>`).

use crate::cli::planned::Planned;
use crate::support::error::{Error, Result};

/// `pull`: the registry's image for each key becomes the local one (even over a local
/// build), then the local tags; fails when the registry does not have the key.
pub async fn run(p: Planned) -> Result<bool> {
    p.farm.registry().check().await?;
    let mut ids = Vec::new();
    for name in &p.images {
        let job = p.job(name);
        match p.farm.pull(job).await? {
            Some(id) => ids.push((name.clone(), id)),
            None => {
                return Err(Error::failure(format!(
                    "{name} for {} (key {}) is not in the registry {}: run `make load-{}` (pull, else build) or \
                     `make rebuild-{0}`",
                    p.platform,
                    job.key,
                    p.farm.config.registry.reference(name, &crate::plan::key::platform_tag(&p.platform, &job.key)),
                    name.replace('/', "_")
                )))
            }
        }
    }
    p.tag_local(&ids, false).await?;
    Ok(p.resolved())
}
