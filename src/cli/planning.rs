//! What every planning command shares: the base-resolution flags, image names as the
//! user writes them, the platform of single-platform commands, and the plan itself
//! (external bases resolved through mirrors, registries and the local engine).

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;

use crate::engine::Engine;
use crate::farm::Farm;
use crate::image::platform::Platform;
use crate::plan::{self, Plan, PlatformChoice};
use crate::recipe::catalog::Catalog;
use crate::recipe::config::Config;
use crate::support::error::{Error, Result};

/// How external base tags are resolved (src/farm/bases.rs); for every command that plans.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct BaseFlags {
    /// Resolve unpinned base images now, ignoring the cache (also ARCHFARM_REFRESH_BASES=1).
    #[arg(long, global = true, env = "ARCHFARM_REFRESH_BASES", value_parser = switch("ARCHFARM_REFRESH_BASES"))]
    pub refresh_bases: bool,
    /// Resolve base images from the cache only, whatever its age; ask no registry
    /// (also ARCHFARM_OFFLINE=1). Wins over --refresh-bases.
    #[arg(long, global = true, env = "ARCHFARM_OFFLINE", value_parser = switch("ARCHFARM_OFFLINE"))]
    pub offline: bool,
}

/// The value parser of a switch that an environment variable can also set: empty is
/// off, and a value that is neither on nor off is refused naming the variable.
fn switch(variable: &'static str) -> impl Fn(&str) -> std::result::Result<bool, String> + Clone + Send + Sync {
    move |v: &str| match v.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" | "n" | "f" => Ok(false),
        "1" | "true" | "yes" | "on" | "y" | "t" => Ok(true),
        _ => Err(format!("environment variable {variable} takes 1, true, yes or on (or 0, false, no, off)")),
    }
}

impl BaseFlags {
    /// The resolver's cache mode.
    pub fn mode(&self) -> crate::farm::bases::Mode {
        match (self.offline, self.refresh_bases) {
            (true, _) => crate::farm::bases::Mode::Offline,
            (false, true) => crate::farm::bases::Mode::Refresh,
            (false, false) => crate::farm::bases::Mode::Normal,
        }
    }
}

/// The plan of `matrix` and `stitch`: IMAGE... (default all) for --platform (default:
/// the configured platforms).
pub async fn plan_for(
    farm: &Farm,
    catalog: &Catalog,
    names: &[String],
    platform: Option<&str>,
    bases: &BaseFlags,
) -> Result<Plan> {
    let names = resolve_names(catalog, names)?;
    let choice = match platform {
        Some(p) => PlatformChoice::Requested(farm.config.arches.parse_platform_list(p)?),
        None => PlatformChoice::Defaults,
    };
    make_plan(farm, catalog, &names, &choice, bases).await
}

/// Accepts `basic/busybox`, gVisor's make form `basic_busybox`, or `images/basic/busybox`.
pub fn resolve_names(catalog: &Catalog, names: &[String]) -> Result<Vec<String>> {
    names.iter().map(|n| resolve_name(catalog, n)).collect()
}

pub fn resolve_name(catalog: &Catalog, name: &str) -> Result<String> {
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
pub fn single_platform(config: &Config, flag: Option<&str>) -> Result<Platform> {
    if let Some(p) = flag {
        return config.arches.parse_platform(p);
    }
    match std::env::var("ARCH").ok().filter(|a| !a.trim().is_empty()) {
        Some(a) => config.arches.parse_platform(&a).map_err(|e| Error::usage(format!("ARCH: {}", e.message()))),
        None => config.arches.host(),
    }
}

/// Plans, resolving external (non-farm) base images: pinned digests as written,
/// assembler bases through the assembler, the rest through mirrors and registries
/// ([`crate::farm::bases`]), and, where no registry knows one, the image the local engine
/// holds for that platform. A base that stays unresolved leaves its jobs (and their
/// children) unresolved in the plan; the rest of the tree is planned.
pub async fn make_plan(
    farm: &Farm,
    catalog: &Catalog,
    names: &[String],
    choice: &PlatformChoice,
    flags: &BaseFlags,
) -> Result<Plan> {
    let draft = plan::prepare(&farm.config, catalog, names, choice)?;
    let mut resolved = plan::Resolutions::new();
    let mut wanted = BTreeSet::new();
    for (base, platform) in draft.external_bases() {
        let digest = match plan::pinned_digest(&base) {
            Some(d) => Ok(d),
            // An assembler base that cannot be resolved leaves its image unresolved, not
            // the whole plan.
            None if crate::build::assemble::is_assembler_base(&base) => {
                crate::build::assemble::resolve_base(&farm.config, &base, &platform)
                    .await
                    .map_err(|e| plan::NoDigest::from_error(&e))
            }
            None => {
                wanted.insert((base, platform));
                continue;
            }
        };
        resolved.insert((base, platform), digest.map(plan::Resolved::as_written));
    }
    if !wanted.is_empty() {
        let local = LocalEngine::new();
        let local = &local;
        let engine_mirrors: crate::farm::bases::EngineMirrors<'_> = Box::new(move || {
            Box::pin(async move {
                match connect_local(local).await {
                    Ok(e) => e.registry_mirrors().await.unwrap_or_else(|e| {
                        tracing::debug!("no engine mirrors: {}", e.message());
                        Vec::new()
                    }),
                    Err(e) => {
                        tracing::debug!("no engine mirrors: {e}");
                        Vec::new()
                    }
                }
            })
        });
        let resolver =
            crate::farm::bases::Resolver::new(&farm.config, farm.store.clone(), flags.mode(), engine_mirrors);
        let answers = resolver.resolve(&wanted).await;
        // The engine's answers for what no registry had, asked concurrently.
        let finished: Vec<_> = futures::stream::iter(answers.into_iter().map(|((base, platform), r)| async move {
            let r = match r {
                // Built FROM exactly the digest the key has, even if the tag moves.
                Ok(digest) => {
                    Ok(plan::Resolved { pinned: crate::farm::bases::pinned_reference(&base, &digest).ok(), digest })
                }
                Err(why) if !flags.offline => resolve_unpinned(local, &base, &platform)
                    .await
                    .map(plan::Resolved::as_written)
                    .map_err(|e| plan::NoDigest::unresolved(format!("{why}; {}", e.message()))),
                Err(why) => Err(plan::NoDigest::unresolved(why)),
            };
            ((base, platform), r)
        }))
        .buffer_unordered(16)
        .collect()
        .await;
        resolved.extend(finished);
    }
    draft.finish(&resolved)
}

/// The plan of one image for one platform, and its job: an unresolved base fails it
/// (exit 1), an invalid recipe and a platform it lacks are usage errors.
pub async fn plan_one(
    farm: &Farm,
    catalog: &Catalog,
    name: &str,
    platform: &Platform,
    bases: &BaseFlags,
) -> Result<(Plan, plan::Job)> {
    let names = [name.to_string()];
    let plan = make_plan(farm, catalog, &names, &PlatformChoice::Requested(vec![platform.clone()]), bases).await?;
    if let Some(u) = plan.unresolved(name, platform) {
        let message = format!("image {name} for {platform} has no key: {}", u.reason);
        return Err(if u.invalid { Error::usage(message) } else { Error::failure(message) });
    }
    let job = plan.job(name, platform).cloned().ok_or_else(|| {
        let reason = plan.skipped.iter().find(|s| s.image == name).map(|s| s.reason.clone()).unwrap_or_default();
        Error::usage(format!("image {name} is not available for {platform}: {reason}"))
    })?;
    Ok((plan, job))
}

/// Fails when any job of `plan` has no key: for commands that must cover every platform
/// of what they name. Exit 2 when any of them is invalid input, else 1.
pub fn require_resolved(plan: &Plan, what: &str) -> Result<()> {
    if plan.unresolved.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> =
        plan.unresolved.iter().map(|u| format!("{} for {}: {}", u.image, u.platform, u.reason)).collect();
    let message = format!("cannot {what}: these have no key:\n  {}", lines.join("\n  "));
    Err(if plan.unresolved.iter().any(|u| u.invalid) { Error::usage(message) } else { Error::failure(message) })
}

/// The local engine as planning asks it (its mirrors, the last-resort base lookup).
type LocalEngine = tokio::sync::OnceCell<std::result::Result<Engine, String>>;

/// Connects `engine` once, with a short deadline: planning never waits long for an
/// engine that is not there.
async fn connect_local(engine: &LocalEngine) -> std::result::Result<&Engine, String> {
    engine
        .get_or_init(|| async { Engine::connect(Duration::from_secs(2)).await.map_err(|e| e.message().to_string()) })
        .await
        .as_ref()
        .map_err(String::clone)
}

/// The last resort for a base no registry knows: the image the local engine holds for
/// that platform.
async fn resolve_unpinned(engine: &LocalEngine, base: &str, platform: &Platform) -> Result<String> {
    let hint = format!("pin it by digest in the recipe (FROM {base}@sha256:...) or load it for {platform} first");
    let engine = connect_local(engine).await.map_err(|e| {
        Error::usage(format!("base image {base} is not pinned and the engine cannot resolve it ({e}); {hint}"))
    })?;
    match engine.resolve_image(base).await? {
        Some((id, p)) if &p == platform => Ok(id),
        Some((_, p)) => {
            Err(Error::usage(format!("base image {base}: the local engine holds it for {p}, not {platform}; {hint}")))
        }
        None => Err(Error::usage(format!("base image {base} is not in the local engine; {hint}"))),
    }
}
