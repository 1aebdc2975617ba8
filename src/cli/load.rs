//! `archfarm load` (make's `load-<image>`) and `archfarm tag` (`load --local-only`).

use crate::cli::planned::Planned;
use crate::farm::BuildOptions;
use crate::support::error::{Error, Result};

/// `load`: make each image's key exist in the local engine (engine, store, registry, else
/// a build), then tag it `<local prefix>/<image>:<key>` and `:latest`. With `local_only`
/// (make's SKIP_IMAGE_LOAD=true, and `tag`), nothing is pulled or built: a key that is not
/// already in the engine or the store fails.
pub async fn run(p: Planned, json: bool, local_only: bool) -> Result<bool> {
    if local_only {
        let mut ids = Vec::new();
        for name in &p.images {
            let job = p.job(name);
            match p.farm.ensure_local(job).await? {
                Some(id) => ids.push((name.clone(), id)),
                None => {
                    return Err(Error::failure(format!(
                        "{name} for {} (key {}) is not in the local engine or store, and nothing is pulled or \
                         built here (SKIP_IMAGE_LOAD=true or tag): run `make load-{}` first",
                        p.platform,
                        job.key,
                        name.replace('/', "_")
                    )))
                }
            }
        }
        p.tag_local(&ids, false).await?;
        return Ok(p.resolved());
    }
    let opts = BuildOptions { materialize: p.jobs(), ..Default::default() };
    p.run_and_tag(&opts, json).await
}
