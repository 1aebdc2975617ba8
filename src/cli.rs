//! The command line: argument parsing and one function per subcommand. `main.rs` only
//! maps the result to an exit code (0 ok, 1 build or push failure, 2 usage/config).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::catalog::{self, Catalog};
use crate::config::{Config, Overrides};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::farm::{platform_tag, BuildOptions, BuildReport, Farm};
use crate::plan::{self, Plan, PlatformChoice};
use crate::platform::Platform;
use crate::report::Progress;

#[derive(Debug, Parser)]
#[command(name = "archfarm", version, about = "Cross-architecture container image build farm")]
pub struct Cli {
    /// The images folder (default: images_dir from archfarm.yaml, else ./images).
    #[arg(long, global = true, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Where to publish: host[:port]/namespace (also ARCHFARM_REGISTRY).
    #[arg(long, global = true, value_name = "REGISTRY")]
    pub registry: Option<String>,
    /// The configuration file (default: ./archfarm.yaml if present, else the embedded default).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The local store folder (also ARCHFARM_STORE; default ~/.cache/archfarm).
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// More detail on stderr (cached jobs too).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List images, their platforms, keys and state (local / registry / missing).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print the content key of an image for one platform (default: ARCH, else the host).
    Hash {
        image: String,
        #[arg(long)]
        platform: Option<String>,
    },
    /// Build what is missing; with --push also publish and stitch the canonical tags.
    Build {
        /// Images to build (default: all); their farm parents come along.
        #[arg(value_name = "IMAGE")]
        names: Vec<String>,
        /// Platforms, comma-separated (default: the configured ones).
        #[arg(long, value_name = "P[,P...]")]
        platform: Option<String>,
        #[arg(long)]
        push: bool,
        #[arg(long)]
        json: bool,
    },
    /// Make <local prefix>/IMAGE:<key> and :latest exist in the local engine (pull, else build).
    Load {
        image: String,
        /// The platform (default: ARCH, else the host).
        #[arg(long)]
        platform: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Log in to a registry: check the credentials against it, then store them the way
    /// `docker login` does (the configured credential helper, else config.json).
    Login {
        /// The registry host[:port].
        #[arg(value_name = "REGISTRY")]
        server: String,
        #[arg(short, long)]
        username: String,
        /// Read the password from stdin (it is never taken as an argument).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Promote the canonical tags of the current keys to VERSION (and latest), after
    /// checking that every platform of every image is there.
    Release {
        version: String,
        /// Images to release (default: all).
        #[arg(value_name = "IMAGE")]
        names: Vec<String>,
        /// Release to another registry/namespace (default: the configured registry).
        #[arg(long, value_name = "REGISTRY/NAMESPACE")]
        to: Option<String>,
        /// Also move :latest.
        #[arg(long)]
        latest: bool,
        /// Check everything, write nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
        /// Also write the release record (JSON) to FILE.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
    },
    /// Copy one image, all platforms, between registries or repositories.
    Copy {
        /// host[:port]/repository[:tag|@digest]
        #[arg(value_name = "SRC")]
        source: String,
        /// host[:port]/repository[:tag]
        #[arg(value_name = "DST")]
        destination: String,
        #[arg(long)]
        json: bool,
    },
}

/// Runs the parsed command; `Ok(false)` means it ran but a job failed (exit 1).
pub async fn run(cli: Cli) -> Result<bool> {
    let cwd = std::env::current_dir().map_err(|e| Error::failure(format!("cannot read the current folder: {e}")))?;
    let overrides = Overrides {
        config_file: cli.config.clone(),
        images_dir: cli.images.clone(),
        registry: cli.registry.clone(),
        local_prefix: None,
        store: cli.store.clone(),
    }
    .with_env();
    let config = Config::load(&cwd, &overrides)?;
    // Commands that need no images folder.
    match &cli.command {
        Command::Login { server, username, password_stdin } => {
            return crate::publish_cli::login(&config, server, username, *password_stdin).await
        }
        Command::Copy { source, destination, json } => {
            return crate::publish_cli::copy(&config, source, destination, *json).await
        }
        _ => {}
    }
    let catalog = catalog::discover(&config.images_dir, &config.arches)?;
    let progress = Progress::new(cli.verbose);
    match cli.command {
        Command::List { json } => list(config, &catalog, progress, json).await,
        Command::Hash { image, platform } => hash(&config, &catalog, &image, platform.as_deref()).await,
        Command::Build { names, platform, push, json } => {
            let names = resolve_names(&catalog, &names)?;
            let choice = match platform {
                Some(p) => PlatformChoice::Requested(config.arches.parse_platform_list(&p)?),
                None => PlatformChoice::Defaults,
            };
            let farm = Arc::new(Farm::new(config, progress)?);
            let plan = make_plan(&farm, &catalog, &names, &choice).await?;
            let report = farm.run(&plan, &BuildOptions { push, materialize: vec![] }).await?;
            finish_report(&farm, &report, json)
        }
        Command::Load { image, platform, json } => {
            load(config, &catalog, progress, &image, platform.as_deref(), json).await
        }
        Command::Release { version, names, to, latest, dry_run, json, record } => {
            let names = resolve_names(&catalog, &names)?;
            let farm = Farm::new(config, progress)?;
            let plan = make_plan(&farm, &catalog, &names, &PlatformChoice::Defaults).await?;
            let wanted: Vec<_> =
                plan.images.iter().filter(|i| names.is_empty() || names.contains(&i.name)).cloned().collect();
            crate::publish_cli::release(&farm.config, &wanted, &version, to.as_deref(), latest, dry_run, json, record)
                .await
        }
        Command::Login { .. } | Command::Copy { .. } => Err(Error::failure("login and copy run before the catalog")),
    }
}

/// Accepts `basic/busybox`, gVisor's make form `basic_busybox`, or `images/basic/busybox`.
fn resolve_names(catalog: &Catalog, names: &[String]) -> Result<Vec<String>> {
    names.iter().map(|n| resolve_name(catalog, n)).collect()
}

fn resolve_name(catalog: &Catalog, name: &str) -> Result<String> {
    let trimmed = name.trim_end_matches('/').trim_start_matches("./");
    let trimmed = trimmed.strip_prefix("images/").unwrap_or(trimmed);
    if catalog.images.contains_key(trimmed) {
        return Ok(trimmed.to_string());
    }
    let underscored: Vec<&String> = catalog.images.keys().filter(|k| k.replace('/', "_") == trimmed).collect();
    match underscored.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Ok(trimmed.to_string()), // the planner reports an unknown image with suggestions
    }
}

/// The platform for single-platform commands: --platform, else ARCH, else the host.
fn single_platform(config: &Config, flag: Option<&str>) -> Result<Platform> {
    if let Some(p) = flag {
        return config.arches.parse_platform(p);
    }
    match std::env::var("ARCH").ok().filter(|a| !a.trim().is_empty()) {
        Some(a) => config.arches.parse_platform(&a).map_err(|e| Error::usage(format!("ARCH: {}", e.message()))),
        None => config.arches.host(),
    }
}

/// Plans, resolving external (non-farm) base images: pinned digests as written,
/// unpinned ones through the local engine (the image it holds for that platform).
async fn make_plan(farm: &Farm, catalog: &Catalog, names: &[String], choice: &PlatformChoice) -> Result<Plan> {
    let draft = plan::prepare(&farm.config, catalog, names, choice)?;
    let mut resolved = BTreeMap::new();
    for (base, platform) in draft.external_bases() {
        let digest = match plan::pinned_digest(&base) {
            Some(d) => d.to_string(),
            None => resolve_unpinned(farm, &base, &platform).await?,
        };
        resolved.insert((base, platform), digest);
    }
    draft.finish(&resolved)
}

async fn resolve_unpinned(farm: &Farm, base: &str, platform: &Platform) -> Result<String> {
    let hint = format!("pin it by digest in the recipe (FROM {base}@sha256:...) or load it for {platform} first");
    let engine = farm.engine().await.map_err(|e| {
        Error::usage(format!(
            "base image {base} is not pinned and the engine cannot resolve it ({}); {hint}",
            e.message()
        ))
    })?;
    match engine.resolve_image(base).await? {
        Some((id, p)) if &p == platform => Ok(id),
        Some((_, p)) => {
            Err(Error::usage(format!("base image {base}: the local engine holds it for {p}, not {platform}; {hint}")))
        }
        None => Err(Error::usage(format!("base image {base} is not in the local engine; {hint}"))),
    }
}

fn finish_report(farm: &Farm, report: &BuildReport, json: bool) -> Result<bool> {
    if json {
        println!("{}", serde_json::to_string_pretty(report).expect("report serializes"));
    } else {
        let built = report.jobs.iter().filter(|j| j.outcome == crate::farm::Outcome::Built).count();
        let cached = report.jobs.iter().filter(|j| j.outcome == crate::farm::Outcome::Cached).count();
        for s in &report.skipped {
            farm.progress().note(&format!("note: {} {} skipped: {}", s.image, s.platform, s.reason));
        }
        for t in &report.tags {
            println!("{} {} ({})", t.tag, t.digest, t.platforms.join(", "));
        }
        farm.progress().note(&format!(
            "{built} built, {cached} cached{}",
            if built == 0 && report.errors.is_empty() { ": nothing to do" } else { "" }
        ));
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    Ok(!report.failed())
}

async fn hash(config: &Config, catalog: &Catalog, image: &str, platform: Option<&str>) -> Result<bool> {
    let platform = single_platform(config, platform)?;
    let name = resolve_name(catalog, image)?;
    let farm = Farm::new(config.clone(), Progress::new(false))?;
    let plan =
        make_plan(&farm, catalog, std::slice::from_ref(&name), &PlatformChoice::Requested(vec![platform.clone()]))
            .await?;
    match plan.job(&name, &platform) {
        Some(job) => {
            println!("{}", job.key);
            Ok(true)
        }
        None => {
            let reason = plan.skipped.iter().find(|s| s.image == name).map(|s| s.reason.clone()).unwrap_or_default();
            Err(Error::usage(format!("image {name} is not available for {platform}: {reason}")))
        }
    }
}

#[derive(Serialize)]
struct ListedPlatform {
    platform: String,
    key: String,
    recipe: String,
    /// "local", "registry", "local+registry" or "missing".
    state: String,
    local: bool,
    /// null when the registry could not be asked.
    registry: Option<bool>,
}

#[derive(Serialize)]
struct ListedImage {
    image: String,
    index_key: String,
    canonical_tag: String,
    platforms: Vec<ListedPlatform>,
}

#[derive(Serialize)]
struct Listing {
    images: Vec<ListedImage>,
    skipped: Vec<crate::farm::SkipReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registry_error: Option<String>,
}

async fn list(config: Config, catalog: &Catalog, progress: Progress, json: bool) -> Result<bool> {
    let farm = Farm::new(config, progress)?;
    let plan = make_plan(&farm, catalog, &[], &PlatformChoice::Defaults).await?;
    // The engine is optional here: a short deadline, and no engine just means "not local there".
    let engine = Engine::connect(Duration::from_secs(2)).await.ok();
    let registry_error = farm.registry().check().await.err().map(|e| e.message().to_string());
    let states: Vec<(bool, Option<bool>)> = stream::iter(plan.jobs.iter())
        .map(|job| {
            let farm = &farm;
            let engine = engine.as_ref();
            let registry_up = registry_error.is_none();
            async move {
                let mut local = farm.store.entry(&job.key).ok().flatten().is_some();
                if !local {
                    if let Some(e) = engine {
                        local = e.find_by_label(&job.key).await.ok().flatten().is_some();
                    }
                }
                let repo = farm.config.registry.repository(&job.image);
                let remote = if registry_up {
                    farm.registry()
                        .manifest_head(&repo, &platform_tag(&job.platform, &job.key))
                        .await
                        .ok()
                        .map(|d| d.is_some())
                } else {
                    None
                };
                (local, remote)
            }
        })
        .buffered(16)
        .collect()
        .await;
    let mut images = Vec::new();
    for img in &plan.images {
        let mut platforms = Vec::new();
        for (job, (local, remote)) in plan.jobs.iter().zip(&states).filter(|(j, _)| j.image == img.name) {
            let state = match (local, remote) {
                (true, Some(true)) => "local+registry",
                (true, _) => "local",
                (false, Some(true)) => "registry",
                _ => "missing",
            };
            platforms.push(ListedPlatform {
                platform: job.platform.to_string(),
                key: job.key.clone(),
                recipe: job.recipe.clone(),
                state: state.to_string(),
                local: *local,
                registry: *remote,
            });
        }
        images.push(ListedImage {
            image: img.name.clone(),
            index_key: img.index_key.clone(),
            canonical_tag: farm.config.registry.reference(&img.name, &img.index_key),
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
                println!("{:<32} {:<14} {}  {}", img.image, p.platform, &p.key[..16], p.state);
            }
        }
    }
    Ok(true)
}

async fn load(
    config: Config,
    catalog: &Catalog,
    progress: Progress,
    image: &str,
    platform: Option<&str>,
    json: bool,
) -> Result<bool> {
    let platform = single_platform(&config, platform)?;
    let name = resolve_name(catalog, image)?;
    let farm = Arc::new(Farm::new(config, progress)?);
    let plan =
        make_plan(&farm, catalog, std::slice::from_ref(&name), &PlatformChoice::Requested(vec![platform.clone()]))
            .await?;
    let Some(job) = plan.job(&name, &platform) else {
        let reason = plan.skipped.iter().find(|s| s.image == name).map(|s| s.reason.clone()).unwrap_or_default();
        println!("{name} is not available for {platform}: {reason}");
        return Ok(true);
    };
    let key = job.key.clone();
    let opts = BuildOptions { push: false, materialize: vec![(name.clone(), platform.clone())] };
    let report = farm.run(&plan, &opts).await?;
    if report.failed() {
        return finish_report(&farm, &report, json);
    }
    let id = report
        .jobs
        .iter()
        .find(|j| j.image == name && j.key == key)
        .and_then(|j| j.image_id.clone())
        .ok_or_else(|| Error::failure(format!("{name} for {platform}: no image in the engine after load")))?;
    let engine = farm.engine().await?;
    let local = farm.config.local_name(&name);
    engine.tag(&id, &local, &key).await?;
    engine.tag(&id, &local, "latest").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
    } else {
        println!("{local}:{key}");
        println!("{local}:latest");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
