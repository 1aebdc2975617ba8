//! `archfarm list`: every image with its platforms, keys and state (local, registry,
//! missing, unresolved, invalid); `list --names` is make's list-all-images.

use std::time::Duration;

use serde::Serialize;

use crate::cli::planning::{make_plan, single_platform, BaseFlags};
use crate::cli::selection::test_images;
use crate::engine::Engine;
use crate::farm::progress::Progress;
use crate::farm::Farm;
use crate::plan::PlatformChoice;
use crate::recipe::catalog::Catalog;
use crate::recipe::config::Config;
use crate::support::error::Result;

#[derive(Serialize)]
struct ListedPlatform {
    platform: String,
    /// null when the platform is unresolved.
    key: Option<String>,
    /// null when the platform is unresolved.
    recipe: Option<String>,
    /// "local", "registry", "local+registry", "missing", "unresolved" (a base has no
    /// digest) or "invalid" (the recipe, or a parent's, is bad input).
    state: String,
    local: bool,
    /// null when the registry could not be asked (or the platform is unresolved).
    registry: Option<bool>,
    /// Why an unresolved or invalid platform has no key.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize)]
struct ListedImage {
    image: String,
    /// null when a platform is unresolved.
    index_key: Option<String>,
    /// null when a platform is unresolved.
    canonical_tag: Option<String>,
    platforms: Vec<ListedPlatform>,
}

#[derive(Serialize)]
struct Listing {
    images: Vec<ListedImage>,
    skipped: Vec<crate::farm::SkipReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registry_error: Option<String>,
}

pub async fn run(config: Config, catalog: &Catalog, progress: Progress, json: bool, bases: &BaseFlags) -> Result<bool> {
    let farm = Farm::new(config, progress)?;
    let plan = make_plan(&farm, catalog, &[], &PlatformChoice::Defaults, bases).await?;
    // The engine is optional here: a short deadline, and no engine just means "not local
    // there"; it is asked only about jobs the store lacks, in one request for every
    // labelled key (listing is what costs, not the answer), while the registry is asked
    // in one tag list per image.
    let in_store: Vec<bool> = plan.jobs.iter().map(|j| farm.store.entry(&j.key).ok().flatten().is_some()).collect();
    let engine_side = async {
        if in_store.iter().all(|s| *s) {
            return Default::default();
        }
        match Engine::connect(Duration::from_secs(2)).await {
            Ok(e) => e.labelled_keys().await.unwrap_or_default(),
            Err(_) => Default::default(),
        }
    };
    let registry_side = async {
        if let Err(e) = farm.registry().check().await {
            return (Some(e.message().to_string()), vec![None; plan.jobs.len()]);
        }
        match crate::cli::matrix::in_registry(&farm, &plan).await {
            Ok(v) => (None, v.into_iter().map(Some).collect()),
            Err(e) => {
                tracing::debug!("registry not consulted: {}", e.message());
                (None, vec![None; plan.jobs.len()])
            }
        }
    };
    let (local_keys, (registry_error, remote)): (std::collections::BTreeSet<String>, _) =
        tokio::join!(engine_side, registry_side);
    let states: Vec<(bool, Option<bool>)> = plan
        .jobs
        .iter()
        .zip(in_store)
        .zip(remote)
        .map(|((job, stored), remote)| (stored || local_keys.contains(&job.key), remote))
        .collect();
    // Complete images in plan order, then those with an unresolved platform.
    let mut names: Vec<&str> = plan.images.iter().map(|i| i.name.as_str()).collect();
    for n in plan.jobs.iter().map(|j| &j.image).chain(plan.unresolved.iter().map(|u| &u.image)) {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    let mut images = Vec::new();
    for name in names {
        let mut platforms = Vec::new();
        for (job, (local, remote)) in plan.jobs.iter().zip(&states).filter(|(j, _)| j.image == name) {
            let state = match (local, remote) {
                (true, Some(true)) => "local+registry",
                (true, _) => "local",
                (false, Some(true)) => "registry",
                _ => "missing",
            };
            platforms.push(ListedPlatform {
                platform: job.platform.to_string(),
                key: Some(job.key.clone()),
                recipe: Some(job.recipe.clone()),
                state: state.to_string(),
                local: *local,
                registry: *remote,
                reason: None,
            });
        }
        for u in plan.unresolved.iter().filter(|u| u.image == name) {
            platforms.push(ListedPlatform {
                platform: u.platform.to_string(),
                key: None,
                recipe: None,
                state: if u.invalid { "invalid" } else { "unresolved" }.to_string(),
                local: false,
                registry: None,
                reason: Some(u.reason.clone()),
            });
        }
        let complete = plan.images.iter().find(|i| i.name == name);
        images.push(ListedImage {
            image: name.to_string(),
            index_key: complete.map(|i| i.index_key.clone()),
            canonical_tag: complete.map(|i| farm.config.registry.reference(&i.name, &i.index_key)),
            platforms,
        });
    }
    let skipped = plan
        .skipped
        .iter()
        .map(|s| crate::farm::SkipReport {
            image: s.image.clone(),
            platform: s.platform.to_string(),
            reason: s.reason.clone(),
        })
        .collect();
    let listing = Listing { images, skipped, registry_error };
    if json {
        println!("{}", serde_json::to_string_pretty(&listing).expect("listing serializes"));
    } else {
        if let Some(e) = &listing.registry_error {
            eprintln!("warning: registry not consulted: {e}");
        }
        for img in &listing.images {
            for p in &img.platforms {
                match (&p.key, &p.reason) {
                    (Some(key), _) => println!("{:<32} {:<14} {}  {}", img.image, p.platform, &key[..16], p.state),
                    (None, reason) => println!(
                        "{:<32} {:<14} {:<16}  {}: {}",
                        img.image,
                        p.platform,
                        "-",
                        p.state,
                        reason.as_deref().unwrap_or_default()
                    ),
                }
            }
        }
    }
    Ok(true)
}

/// `list --names`: the images with a recipe for the platform (gVisor's list-all-images
/// lists the folders with a Dockerfile or a Dockerfile.$ARCH), without keys, engine or
/// registry: a catalog walk only.
pub fn names(
    config: &Config,
    catalog: &Catalog,
    platform: Option<&str>,
    test_only: bool,
    underscore: bool,
) -> Result<bool> {
    let platform = single_platform(config, platform)?;
    let names = if test_only { test_images(config, catalog)? } else { catalog.images.keys().cloned().collect() };
    let mut out = String::new();
    for name in names {
        let image = &catalog.images[&name];
        let narrowed = config.image_settings(&name).platforms.is_some_and(|p| !p.contains(&platform));
        if image.recipe_for(&platform).is_none() || narrowed {
            continue;
        }
        out.push_str(&if underscore { name.replace('/', "_") } else { name });
        out.push('\n');
    }
    print!("{out}");
    Ok(true)
}
