//! `archfarm hash IMAGE [--platform P]`: the content key of one image for one platform.

use crate::cli::planning::{plan_one, resolve_name, single_platform, BaseFlags};
use crate::farm::progress::Progress;
use crate::farm::Farm;
use crate::recipe::catalog::Catalog;
use crate::recipe::config::Config;
use crate::support::error::Result;

/// Prints the key of `image` for `platform` (--platform, else ARCH, else the host).
pub async fn run(
    config: &Config,
    catalog: &Catalog,
    image: &str,
    platform: Option<&str>,
    bases: &BaseFlags,
) -> Result<bool> {
    let platform = single_platform(config, platform)?;
    let name = resolve_name(catalog, image)?;
    let farm = Farm::new(config.clone(), Progress::new(false))?;
    let (_, job) = plan_one(&farm, catalog, &name, &platform, bases).await?;
    println!("{}", job.key);
    Ok(true)
}
