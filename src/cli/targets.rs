//! The commands behind gVisor's images make targets (images.mk, `archfarm makefile`):
//! `load`, `pull`, `rebuild`, `push`, `tag`, `test`, `local-image` and `list --names`.
//! Make computes nothing: every target is one call of the binary, which takes an image
//! (`base/busybox` or make's `base_busybox`), a group (`basic`: every image under
//! images/basic/), `--all-images` or `--all-test-images`, and one platform (`--platform`,
//! else `ARCH`, else the host).

use std::sync::Arc;

use clap::Args;

use crate::cli::{finish_report, make_plan, resolve_name, single_platform, BaseFlags};
use crate::farm::progress::Progress;
use crate::farm::progress::{Outcome, Source};
use crate::farm::{BuildOptions, BuildReport, Farm, Stitched};
use crate::image::platform::Platform;
use crate::plan::{Job, Plan, PlatformChoice};
use crate::recipe::catalog::Catalog;
use crate::recipe::config::Config;
use crate::support::error::{Error, Result};

/// Which images a make-target command acts on.
#[derive(Debug, Clone, Args)]
pub struct Selection {
    /// Images: `base/busybox`, make's `base_busybox`, or a group (`basic`: every image
    /// under images/basic/).
    #[arg(value_name = "IMAGE", required_unless_present_any = ["all_images", "all_test_images"])]
    pub names: Vec<String>,
    /// Every image (make's `<verb>-all-images`).
    #[arg(long, conflicts_with_all = ["names", "all_test_images"])]
    pub all_images: bool,
    /// Every image but those listed in `non_test_images` (make's `<verb>-all-test-images`).
    #[arg(long, conflicts_with = "names")]
    pub all_test_images: bool,
    /// The platform (default: ARCH, else the host); any alias: x86_64, aarch64, arm64...
    #[arg(long)]
    pub platform: Option<String>,
}

/// The images a selection names, in the order given, without duplicates. A name that is
/// not an image but a folder holding images is a group. Unknown names are passed on, so
/// the planner reports them with suggestions.
pub fn select(config: &Config, catalog: &Catalog, sel: &Selection) -> Result<Vec<String>> {
    if sel.all_images {
        return Ok(catalog.images.keys().cloned().collect());
    }
    if sel.all_test_images {
        return test_images(config, catalog);
    }
    let mut out: Vec<String> = Vec::new();
    for name in &sel.names {
        for n in expand(catalog, name)? {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// One name: an image, else a group (images under that folder), else itself.
fn expand(catalog: &Catalog, name: &str) -> Result<Vec<String>> {
    let resolved = resolve_name(catalog, name)?;
    if catalog.images.contains_key(&resolved) {
        return Ok(vec![resolved]);
    }
    for prefix in [resolved.clone(), resolved.replace('_', "/")] {
        let members: Vec<String> =
            catalog.images.keys().filter(|k| k.starts_with(&format!("{prefix}/"))).cloned().collect();
        if !members.is_empty() {
            return Ok(members);
        }
    }
    Ok(vec![resolved])
}

/// Every image but the configured `non_test_images` (each an image or a group).
pub fn test_images(config: &Config, catalog: &Catalog) -> Result<Vec<String>> {
    let mut excluded = Vec::new();
    for n in &config.non_test_images {
        let names = expand(catalog, n)?;
        if names.iter().any(|x| !catalog.images.contains_key(x)) {
            return Err(Error::usage(format!(
                "{}: field 'non_test_images': '{n}' is neither an image nor a folder of images under {}; fix or remove it",
                config.source,
                config.images_dir.display()
            )));
        }
        excluded.extend(names);
    }
    Ok(catalog.images.keys().filter(|k| !excluded.contains(k)).cloned().collect())
}

/// `list --names`: the images with a recipe for the platform (gVisor's list-all-images
/// lists the folders with a Dockerfile or a Dockerfile.$ARCH), without keys, engine or
/// registry: a catalog walk only.
pub fn list_names(
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

/// A planned selection for one platform: which selected images have a job, and which
/// are not available for the platform (printed, not an error, as gVisor's targets do).
struct Planned {
    farm: Arc<Farm>,
    platform: Platform,
    plan: Plan,
    /// The selected images that have a job for the platform.
    images: Vec<String>,
    /// The selected images that are unresolved for the platform, with the reason.
    unresolved: Vec<String>,
}

impl Planned {
    /// Runs the plan with `opts` (which materializes its jobs in the engine), then tags
    /// each image locally as `<local prefix>/<image>:<key>` and `:latest`.
    async fn run_and_tag(&self, opts: &BuildOptions, json: bool) -> Result<bool> {
        let report = self.farm.run(&self.plan, opts).await?;
        if report.failed() {
            return finish_report(&self.farm, &report, json);
        }
        let ids = self.ids_from(&report)?;
        self.tag_local(&ids, json).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
        }
        Ok(true)
    }

    async fn new(
        config: Config,
        catalog: &Catalog,
        progress: Progress,
        sel: &Selection,
        bases: &BaseFlags,
    ) -> Result<Planned> {
        let platform = single_platform(&config, sel.platform.as_deref())?;
        let names = select(&config, catalog, sel)?;
        let farm = Arc::new(Farm::new(config, progress)?);
        let plan = make_plan(&farm, catalog, &names, &PlatformChoice::Requested(vec![platform.clone()]), bases).await?;
        let mut images = Vec::new();
        let mut unresolved = Vec::new();
        for name in &names {
            if plan.job(name, &platform).is_some() {
                images.push(name.clone());
            } else if let Some(u) = plan.unresolved(name, &platform) {
                unresolved.push(format!("{name} for {platform}: {}", u.reason));
            } else {
                let reason =
                    plan.skipped.iter().find(|s| &s.image == name).map(|s| s.reason.clone()).unwrap_or_default();
                println!("{name} is not available for {platform}: {reason}");
            }
        }
        Ok(Planned { farm, platform, plan, images, unresolved })
    }

    /// Reports the unresolved selected images (a `farm.run` reports them itself) and
    /// says whether there were none.
    fn resolved(&self) -> bool {
        for u in &self.unresolved {
            eprintln!("error: {u}");
        }
        self.unresolved.is_empty()
    }

    fn job(&self, name: &str) -> &Job {
        self.plan.job(name, &self.platform).expect("selected images have a job")
    }

    fn jobs(&self) -> Vec<(String, Platform)> {
        self.images.iter().map(|n| (n.clone(), self.platform.clone())).collect()
    }

    /// Tags each image ID as `<local prefix>/<image>:<key>` and `:latest`, printing both.
    async fn tag_local(&self, ids: &[(String, String)], quiet: bool) -> Result<()> {
        let engine = self.farm.engine().await?;
        for (name, id) in ids {
            let key = &self.job(name).key;
            let local = self.farm.config.local_name(name);
            engine.tag(id, &local, key).await?;
            engine.tag(id, &local, "latest").await?;
            if !quiet {
                println!("{local}:{key}");
                println!("{local}:latest");
            }
        }
        Ok(())
    }

    /// The engine image IDs of the selected images after a run that materialized them.
    fn ids_from(&self, report: &BuildReport) -> Result<Vec<(String, String)>> {
        self.images
            .iter()
            .map(|name| {
                let key = &self.job(name).key;
                report
                    .jobs
                    .iter()
                    .find(|j| &j.image == name && &j.key == key)
                    .and_then(|j| j.image_id.clone())
                    .map(|id| (name.clone(), id))
                    .ok_or_else(|| {
                        Error::failure(format!("{name} for {}: no image in the engine after the run", self.platform))
                    })
            })
            .collect()
    }
}

/// `load`: make each image's key exist in the local engine (engine, store, registry, else
/// a build), then tag it `<local prefix>/<image>:<key>` and `:latest`. With `local_only`
/// (make's SKIP_IMAGE_LOAD=true, and `tag`), nothing is pulled or built: a key that is not
/// already in the engine or the store fails.
pub async fn load(
    config: Config,
    catalog: &Catalog,
    progress: Progress,
    sel: &Selection,
    json: bool,
    local_only: bool,
    bases: &BaseFlags,
) -> Result<bool> {
    let p = Planned::new(config, catalog, progress, sel, bases).await?;
    if p.images.is_empty() {
        return Ok(p.resolved());
    }
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

/// `pull`: the registry's image for each key becomes the local one (even over a local
/// build), then the local tags; fails when the registry does not have the key.
pub async fn pull(
    config: Config,
    catalog: &Catalog,
    progress: Progress,
    sel: &Selection,
    bases: &BaseFlags,
) -> Result<bool> {
    let p = Planned::new(config, catalog, progress, sel, bases).await?;
    if p.images.is_empty() {
        return Ok(p.resolved());
    }
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

/// `rebuild` (make's `rebuild-<image>` and `build-<image>`): build each selected image on
/// the local engine even when the memo or the registry has its key (parents are looked
/// up as usual), then the local tags. Never pushes.
pub async fn rebuild(
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

/// `push`: like `load` (the local tags too, as gVisor's push depends on load), then the
/// key tag in the registry unless it is already there. When every platform of an image
/// is then in the registry, its canonical index is written (the same bytes whoever
/// writes it); with `latest`, also as `:latest`. An incomplete image gets no `:latest`:
/// a note names the missing platforms.
pub async fn push(
    config: Config,
    catalog: &Catalog,
    progress: Progress,
    sel: &Selection,
    latest: bool,
    json: bool,
    bases: &BaseFlags,
) -> Result<bool> {
    let p = Planned::new(config, catalog, progress.clone(), sel, bases).await?;
    if p.images.is_empty() {
        return Ok(p.resolved());
    }
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
                    p.farm.registry().put_index(&repo, "latest", &children).await?;
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

/// `test` (presubmit): each image's key is in the registry, or it builds here. Never
/// pushes and never tags.
pub async fn test(
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
    let report = p.farm.run(&p.plan, &BuildOptions::default()).await?;
    if json || report.failed() {
        return finish_report(&p.farm, &report, json);
    }
    for j in report.jobs.iter().filter(|j| p.images.contains(&j.image)) {
        let how = match (j.outcome, j.source) {
            (Outcome::Built, _) => "builds",
            (_, Some(Source::Registry)) => "in the registry",
            (_, Some(Source::Store)) => "in the local store",
            (_, Some(Source::Engine)) => "in the local engine",
            _ => "ok",
        };
        println!("{} {}: ok ({how})", j.image, j.platform);
    }
    Ok(true)
}

/// `local-image`: the local name with its key, `<local prefix>/<image>:<key>`.
pub async fn local_image(
    config: Config,
    catalog: &Catalog,
    progress: Progress,
    sel: &Selection,
    bases: &BaseFlags,
) -> Result<bool> {
    let p = Planned::new(config, catalog, progress, sel, bases).await?;
    for name in &p.images {
        println!("{}:{}", p.farm.config.local_name(name), p.job(name).key);
    }
    Ok(p.resolved())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::platform::ArchTable;

    fn fixture() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        for d in ["basic/alpha", "basic/beta", "gpu/ollama/bench", "solo", "under_score"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("Dockerfile"), "FROM scratch\n").unwrap();
        }
        std::fs::write(dir.path().join("gpu/ollama/Dockerfile"), "FROM scratch\n").unwrap();
        let catalog = crate::recipe::catalog::discover(dir.path(), &ArchTable::builtin()).unwrap();
        (dir, catalog)
    }

    fn sel(names: &[&str]) -> Selection {
        Selection {
            names: names.iter().map(|s| s.to_string()).collect(),
            all_images: false,
            all_test_images: false,
            platform: None,
        }
    }

    fn config(non_test: &[&str]) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::load(dir.path(), &Default::default()).unwrap();
        c.non_test_images = non_test.iter().map(|s| s.to_string()).collect();
        c
    }

    #[test]
    fn names_make_names_and_groups() {
        let (_d, cat) = fixture();
        let c = config(&[]);
        assert_eq!(select(&c, &cat, &sel(&["basic_alpha"])).unwrap(), ["basic/alpha"]);
        assert_eq!(select(&c, &cat, &sel(&["basic"])).unwrap(), ["basic/alpha", "basic/beta"]);
        // gpu/ollama is an image itself: the name means the image, not the folder.
        assert_eq!(select(&c, &cat, &sel(&["gpu_ollama"])).unwrap(), ["gpu/ollama"]);
        assert_eq!(select(&c, &cat, &sel(&["gpu"])).unwrap(), ["gpu/ollama", "gpu/ollama/bench"]);
        assert_eq!(select(&c, &cat, &sel(&["under_score", "solo", "solo"])).unwrap(), ["under_score", "solo"]);
        assert_eq!(select(&c, &cat, &sel(&["nope"])).unwrap(), ["nope"], "unknown names reach the planner");
    }

    #[test]
    fn test_images_leave_out_non_test_images_and_groups() {
        let (_d, cat) = fixture();
        let all = select(&config(&[]), &cat, &Selection { all_images: true, ..sel(&[]) }).unwrap();
        assert_eq!(all.len(), 6);
        let t = test_images(&config(&["gpu/ollama/bench", "basic"]), &cat).unwrap();
        assert_eq!(t, ["gpu/ollama", "solo", "under_score"]);
        let e = test_images(&config(&["gpu/nothing"]), &cat).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message().contains("non_test_images") && e.message().contains("gpu/nothing"), "{}", e.message());
    }
}
