//! `archfarm assemble IMAGE`: one image.yaml image for one platform, without an engine,
//! and optionally written out (OCI layout, docker archive, stdout).

use std::sync::Arc;

use crate::cli::planning::{plan_one, resolve_name, single_platform, BaseFlags};
use crate::cli::summary::finish_report;
use crate::farm::{BuildOptions, Farm};
use crate::recipe::catalog::{self, Catalog};
use crate::support::error::{Error, Result};

/// `archfarm assemble`: the image (and its farm parents) through the farm, then the
/// requested output. With `--output -` and no stored result, the image is streamed
/// straight from its sources (nothing written to the store for it).
pub async fn run(
    farm: Arc<Farm>,
    catalog: &Catalog,
    image: &str,
    platform: Option<&str>,
    output: Option<&str>,
    json: bool,
    bases: &BaseFlags,
) -> Result<bool> {
    use crate::build::assemble::output::{self as out, Output};
    let platform = single_platform(&farm.config, platform)?;
    let output = output.map(Output::parse).transpose()?;
    let name = resolve_name(catalog, image)?;
    let img = catalog.resolve(&name)?;
    if !matches!(img.recipes, catalog::Recipes::Assembled { .. }) {
        return Err(Error::usage(format!(
            "image {name} is built from Dockerfiles; `assemble` takes images with an {}; use `archfarm build {name}`",
            catalog::ASSEMBLED_RECIPE
        )));
    }

    let (mut plan, job) = plan_one(&farm, catalog, &name, &platform, bases).await?;
    let recipe =
        crate::recipe::image_yaml::Recipe::parse(&img.dir.join(&job.recipe), &job.recipe_text, &farm.config.arches)?;
    let tag = out::tag(recipe.name.as_deref(), &farm.config.local_name(&name), &job.key);
    // Parents through the farm (memo, engine or assembler); the image itself here, so
    // that bad input keeps its exit code 2.
    plan.jobs.retain(|j| j.key != job.key);
    plan.images.clear();
    let report = farm.run(&plan, &BuildOptions::default()).await?;
    if report.failed() {
        return finish_report(&farm, &report, false);
    }
    let mut parents = crate::build::Parents::new();
    for p in &job.parents {
        let key = plan.job(&p.image, &platform).map(|j| j.key.clone()).unwrap_or_default();
        let entry = farm.entry_in_store(&p.image, &platform, &key).await?;
        parents.insert((p.image.clone(), p.platform.clone()), entry);
    }
    let parent = parents.values().next().map(|e| e.stored.manifest.digest.clone());
    let stored = farm.store.entry(&job.key)?;
    let (digest, image_id) = match (stored, &output) {
        (None, Some(Output::Stdout)) => {
            let (config, store, job2, tags) = (farm.config.clone(), farm.store.clone(), job.clone(), vec![tag.clone()]);
            let rt = tokio::runtime::Handle::current();
            let id = tokio::task::spawn_blocking(move || {
                let prepared = crate::build::assemble::prepare(&config, &store, &job2, parent.as_deref(), &rt)?;
                let stdout = std::io::stdout();
                let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
                let id = crate::build::assemble::stream(&prepared, &tags, &mut w)?;
                std::io::Write::flush(&mut w).map_err(|e| Error::failure(format!("writing to stdout: {e}")))?;
                Ok::<_, Error>(id)
            })
            .await
            .map_err(|e| Error::failure(format!("assembling {name} panicked: {e}")))??;
            (None, id)
        }
        (stored, _) => {
            let entry = match stored {
                Some(e) => e,
                None => {
                    farm.progress().started(&name, &platform);
                    farm.produce(&job, &parents, None, &Default::default()).await?.0
                }
            };
            if let Some(output) = &output {
                output.write(&farm.store, &entry.stored, &tag)?;
            }
            (Some(entry.stored.manifest.digest.clone()), entry.stored.config_digest.clone())
        }
    };
    let result = serde_json::json!({
        "image": name, "platform": platform.to_string(), "key": job.key, "tag": tag,
        "digest": digest, "image_id": image_id,
    });
    let text = if json {
        serde_json::to_string_pretty(&result).expect("json")
    } else {
        format!("{tag} {}", digest.as_deref().unwrap_or(&image_id))
    };
    // stdout carries the archive with `--output -`: the report goes to stderr then.
    if output == Some(Output::Stdout) {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
    Ok(true)
}
