//! `archfarm push` (make's `push-<image>`): load, push the key tag, stitch the complete images.

use crate::cli::planned::Planned;
use crate::cli::planning::{make_plan, BaseFlags};
use crate::cli::summary::finish_report;
use crate::farm::{BuildOptions, BuildReport, Farm, Stitched};
use crate::image::platform::Platform;
use crate::plan::PlatformChoice;
use crate::recipe::catalog::Catalog;
use crate::support::error::{Error, Result};

/// `push`: like `load` (the local tags too, as gVisor's push depends on load), then the
/// key tag in the registry unless it is already there. When every platform of an image
/// is then in the registry, its canonical index is written (the same bytes whoever
/// writes it); with `latest`, also as `:latest`. An incomplete image gets no `:latest`:
/// a note names the missing platforms.
pub async fn run(p: Planned, catalog: &Catalog, latest: bool, json: bool, bases: &BaseFlags) -> Result<bool> {
    let progress = p.farm.progress();
    let opts = BuildOptions { push: true, materialize: p.jobs(), no_stitch: true, ..Default::default() };
    let report = p.farm.run(&p.plan, &opts).await?;
    if report.failed() {
        return finish_report(&p.farm, &report, json);
    }
    let ids = p.ids_from(&report)?;
    p.tag_local(&ids, true).await?;

    // The canonical index over each image's default platforms, when they are all there.
    let full = make_plan(&p.farm, catalog, &p.images, &PlatformChoice::Defaults, bases).await?;
    let mut tags = Vec::new();
    for image in full.images.iter().filter(|i| p.images.contains(&i.name)) {
        match p.farm.stitch_complete(image).await? {
            Stitched::Written(t) => {
                if latest {
                    let repo = p.farm.config.registry.repository(&image.name);
                    let children = full_children(&p.farm, image).await?;
                    p.farm.registry().put_index(&repo, "latest", &children, &image.annotations).await?;
                    progress.note(&format!("tagged {}", p.farm.config.registry.reference(&image.name, "latest")));
                }
                tags.push(t);
            }
            Stitched::Missing(missing) => progress.note(&format!(
                "note: {} has no canonical tag yet{}: {} not in the registry (push them with ARCH=...)",
                image.name,
                if latest { " and no :latest" } else { "" },
                missing.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
    let report = BuildReport { tags, ..report };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
    } else {
        for j in report.jobs.iter().filter(|j| p.images.contains(&j.image)) {
            if let Some(r) = &j.pushed {
                println!("{r}");
            }
        }
        for t in &report.tags {
            println!("{} {} ({})", t.tag, t.digest, t.platforms.join(", "));
        }
    }
    Ok(true)
}

/// The per-platform manifests of a complete image, for another index tag over them.
async fn full_children(
    farm: &Farm,
    image: &crate::plan::ImagePlan,
) -> Result<Vec<(Platform, crate::image::oci::Descriptor)>> {
    let repo = farm.config.registry.repository(&image.name);
    let mut children = Vec::new();
    for (platform, key) in &image.platforms {
        let tag = crate::plan::key::platform_tag(platform, key);
        let d =
            farm.registry().manifest_head(&repo, &tag).await?.ok_or_else(|| {
                Error::failure(format!("{} for {platform} left the registry while tagging", image.name))
            })?;
        children.push((platform.clone(), d));
    }
    Ok(children)
}
