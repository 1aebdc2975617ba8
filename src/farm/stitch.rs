//! `archfarm stitch`: writes each image's canonical index once every platform is in the
//! registry by key, and builds nothing. In CI, per-platform jobs push by key
//! (`build --push --no-stitch`) and one final job stitches: one writer per tag.

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::farm::{Farm, Stitched, TagReport};
use crate::plan::key::platform_tag;
use crate::plan::{ImagePlan, Plan};
use crate::support::error::Result;

/// An image left unstitched, and the platforms it lacks in the registry.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    pub image: String,
    pub platforms: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StitchReport {
    pub tags: Vec<TagReport>,
    pub missing: Vec<Missing>,
}

/// Stitches every image of `plan` named in `only` (all when empty) that is complete in
/// the registry (images in parallel); names the missing platforms of the others. With
/// `staging`, the platforms are looked up in that namespace of the same registry.
pub async fn run(farm: &Farm, plan: &Plan, only: &[String], staging: Option<&str>) -> Result<StitchReport> {
    farm.registry().check().await?;
    let images: Vec<&ImagePlan> = plan.images.iter().filter(|i| only.is_empty() || only.contains(&i.name)).collect();
    let results: Vec<Result<Stitched>> =
        stream::iter(images.iter().map(|image| farm.stitch_from(image, staging))).buffered(8).collect().await;
    let mut report = StitchReport { tags: Vec::new(), missing: Vec::new() };
    for (image, r) in images.iter().zip(results) {
        match r? {
            Stitched::Written(t) => report.tags.push(t),
            Stitched::Missing(ps) => {
                let platforms: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
                let tags: Vec<String> = ps
                    .iter()
                    .map(|p| {
                        let key = &image.platforms.iter().find(|(q, _)| q == p).expect("planned platform").1;
                        farm.config.registry.reference(&image.name, &platform_tag(p, key))
                    })
                    .collect();
                farm.progress().note(&format!(
                    "error: {} not stitched: {} not in the registry (no {}); nothing was written. Build and push \
                     first: archfarm build {} --platform {} --push --no-stitch",
                    image.name,
                    platforms.join(", "),
                    tags.join(", "),
                    image.name,
                    platforms.join(",")
                ));
                report.missing.push(Missing { image: image.name.clone(), platforms });
            }
        }
    }
    Ok(report)
}
