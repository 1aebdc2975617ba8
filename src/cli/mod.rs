//! The command line: argument parsing and one function per subcommand. `main.rs` only
//! maps the result to an exit code (0 ok, 1 build or push failure, 2 usage/config).

pub mod makefile;
pub mod matrix;
pub mod publish;
pub mod store;
pub mod targets;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures::StreamExt;
use serde::Serialize;

use self::targets::Selection;
use crate::engine::Engine;
use crate::farm::progress::Progress;
use crate::farm::{BuildOptions, BuildReport, Farm};
use crate::image::platform::Platform;
use crate::plan::{self, Plan, PlatformChoice};
use crate::recipe::catalog::{self, Catalog};
use crate::recipe::config::{Config, Overrides};
use crate::support::error::{Error, Result};

#[derive(Debug, Parser)]
#[command(name = "archfarm", version, about = "Cross-architecture container image build farm")]
pub struct Cli {
    /// The images folder (default: images_dir from archfarm.yaml, else ./images). Paths
    /// given as flags are relative to the working directory; paths in archfarm.yaml to
    /// its folder.
    #[arg(long, global = true, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Where to publish: host[:port]/namespace (also ARCHFARM_REGISTRY).
    #[arg(long, global = true, value_name = "REGISTRY")]
    pub registry: Option<String>,
    /// The configuration file (default: ./archfarm.yaml if present, else the embedded
    /// default); paths written in it are relative to its folder.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The local store folder (also ARCHFARM_STORE; default ~/.cache/archfarm).
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// More detail on stderr (cached jobs too).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(flatten)]
    pub bases: BaseFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// How external base tags are resolved (src/bases.rs); for every command that plans.
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List images, their platforms, keys and state (local / registry / missing).
    List {
        #[arg(long)]
        json: bool,
        /// Only the names of the images available for one platform (--platform, else ARCH,
        /// else the host), one per line: make's list-all-images. Reads no keys, engine or registry.
        #[arg(long, conflicts_with = "json")]
        names: bool,
        /// With --names: nested names as make targets write them (base_busybox).
        #[arg(long, requires = "names")]
        underscore: bool,
        /// With --names: leave out archfarm.yaml's non_test_images.
        #[arg(long, requires = "names")]
        test_images: bool,
        /// With --names: the platform (default: ARCH, else the host).
        #[arg(long, requires = "names")]
        platform: Option<String>,
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
        /// With --push: push every platform by key but write no canonical tag (a CI job
        /// per platform; one final `archfarm stitch` writes the tags).
        #[arg(long, requires = "push")]
        no_stitch: bool,
        #[arg(long)]
        json: bool,
    },
    /// Assemble an image.yaml image for one platform (no engine); report its tag and digest.
    Assemble {
        image: String,
        /// The platform (default: ARCH, else the host).
        #[arg(long)]
        platform: Option<String>,
        /// Also write it as oci:DIR, docker-archive:FILE, or - (a docker-archive on stdout).
        #[arg(long, value_name = "OUTPUT")]
        output: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Make <local prefix>/IMAGE:<key> and :latest exist in the local engine (pull, else build).
    Load {
        #[command(flatten)]
        images: Selection,
        /// Pull and build nothing: fail unless the key is already in the engine or the
        /// store (make's SKIP_IMAGE_LOAD=true).
        #[arg(long, conflicts_with = "json")]
        local_only: bool,
        #[arg(long)]
        json: bool,
    },
    /// Make the registry's image of each key the local one, then tag like load; fails
    /// when the registry lacks the key.
    Pull {
        #[command(flatten)]
        images: Selection,
    },
    /// Build locally even when the registry has the key, then tag like load (never pushes).
    Rebuild {
        #[command(flatten)]
        images: Selection,
        #[arg(long)]
        json: bool,
    },
    /// Load, then push the key tag unless the registry has it; write the canonical tag
    /// once every platform is there.
    Push {
        #[command(flatten)]
        images: Selection,
        /// Also tag the complete multi-arch image :latest (make's DOCKER_PUSH_AS_LATEST=true).
        #[arg(long)]
        latest: bool,
        #[arg(long)]
        json: bool,
    },
    /// Tag the key's image, already in the engine or the store, as <local prefix>/IMAGE:<key> and :latest.
    Tag {
        #[command(flatten)]
        images: Selection,
    },
    /// Presubmit: each key is in the registry or builds here; never pushes, never tags.
    Test {
        #[command(flatten)]
        images: Selection,
        #[arg(long)]
        json: bool,
    },
    /// Print <local prefix>/IMAGE:<key>.
    LocalImage {
        #[command(flatten)]
        images: Selection,
    },
    /// Print the make targets (gVisor's images targets) to `include` from a Makefile.
    Makefile,
    /// The (image, platform) jobs whose keys are not in the registry, in waves, for a CI matrix.
    Matrix {
        /// Images (default: all); their farm parents come along.
        #[arg(value_name = "IMAGE")]
        names: Vec<String>,
        /// Platforms, comma-separated (default: the configured ones).
        #[arg(long, value_name = "P[,P...]")]
        platform: Option<String>,
        /// json: {"jobs", "waves", "stitch"}; github: lines for $GITHUB_OUTPUT.
        #[arg(long, value_enum, default_value = "json")]
        format: MatrixFormat,
        /// github: exactly this many waveN outputs (deeper waves fold into the last).
        #[arg(long, value_name = "N")]
        waves: Option<usize>,
    },
    /// Write the canonical tag of each image whose every platform is in the registry;
    /// builds nothing; fails naming the missing platforms.
    Stitch {
        /// Images (default: all).
        #[arg(value_name = "IMAGE")]
        names: Vec<String>,
        /// Platforms, comma-separated (default: the configured ones).
        #[arg(long, value_name = "P[,P...]")]
        platform: Option<String>,
        /// Find the per-platform manifests in this namespace of the same registry (where
        /// CI jobs pushed them) and bring them over without downloading a layer.
        #[arg(long, value_name = "NAMESPACE")]
        staging: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the builders (archfarm.yaml `builders:`) with health, engine version, native
    /// and emulated platforms.
    Builders {
        #[arg(long)]
        json: bool,
    },
    /// Which foreign platforms this machine can emulate (binfmt_misc); --install (root)
    /// registers Debian's qemu-user-static handlers with the F flag, without a container.
    Binfmt {
        #[arg(long)]
        install: bool,
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
    /// Upkeep of the local store: `gc` removes what nothing needs, `verify` checks
    /// every blob and memo entry (docs/ARCHITECTURE.md, "The store's upkeep").
    Store {
        #[command(subcommand)]
        command: crate::cli::store::StoreCommand,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MatrixFormat {
    Json,
    Github,
}

/// Runs the parsed command; `Ok(false)` means it ran but a job failed (exit 1).
pub async fn run(cli: Cli) -> Result<bool> {
    crate::support::env::check()?;
    let cwd = std::env::current_dir().map_err(|e| Error::failure(format!("cannot read the current folder: {e}")))?;
    let overrides = Overrides {
        config_file: cli.config.clone(),
        images_dir: cli.images.clone(),
        registry: cli.registry.clone(),
        local_prefix: None,
        store: cli.store.clone(),
        registry_from_env: false,
    }
    .with_env();
    let config = Config::load(&cwd, &overrides)?;
    // Commands that need no images folder.
    let command = match cli.command {
        Command::Builders { json } => return crate::build::fleet::builders_command(config, json).await,
        Command::Binfmt { install, json } => return crate::build::binfmt::command(&config, install, json),
        Command::Login { server, username, password_stdin } => {
            return crate::cli::publish::login(&config, &server, &username, password_stdin).await
        }
        Command::Copy { source, destination, json } => {
            return crate::cli::publish::copy(&config, &source, &destination, json).await
        }
        Command::Store { command } => return crate::cli::store::run(&config, command),
        other => other,
    };
    let catalog = catalog::discover(&config.images_dir, &config.arches)?;
    plan::check_settings(&config, &catalog)?;
    let progress = Progress::new(cli.verbose);
    let bases = &cli.bases;
    match command {
        Command::List { names: true, underscore, test_images, platform, .. } => {
            targets::list_names(&config, &catalog, platform.as_deref(), test_images, underscore)
        }
        Command::List { json, .. } => list(config, &catalog, progress, json, bases).await,
        Command::Hash { image, platform } => hash(&config, &catalog, &image, platform.as_deref(), bases).await,
        Command::Build { names, platform, push, no_stitch, json } => {
            let names = resolve_names(&catalog, &names)?;
            let choice = match platform {
                Some(p) => PlatformChoice::Requested(config.arches.parse_platform_list(&p)?),
                None => PlatformChoice::Defaults,
            };
            let farm = Arc::new(Farm::new(config, progress)?);
            let plan = make_plan(&farm, &catalog, &names, &choice, bases).await?;
            let report = farm.run(&plan, &BuildOptions { push, no_stitch, ..Default::default() }).await?;
            finish_report(&farm, &report, json)
        }
        Command::Assemble { image, platform, output, json } => {
            let farm = Arc::new(Farm::new(config, progress)?);
            assemble(farm, &catalog, &image, platform.as_deref(), output.as_deref(), json, bases).await
        }
        Command::Load { images, local_only, json } => {
            targets::load(config, &catalog, progress, &images, json, local_only, bases).await
        }
        Command::Pull { images } => targets::pull(config, &catalog, progress, &images, bases).await,
        Command::Rebuild { images, json } => targets::rebuild(config, &catalog, progress, &images, json, bases).await,
        Command::Push { images, latest, json } => {
            targets::push(config, &catalog, progress, &images, latest, json, bases).await
        }
        Command::Tag { images } => targets::load(config, &catalog, progress, &images, false, true, bases).await,
        Command::Test { images, json } => targets::test(config, &catalog, progress, &images, json, bases).await,
        Command::LocalImage { images } => targets::local_image(config, &catalog, progress, &images, bases).await,
        Command::Makefile => {
            print!("{}", crate::cli::makefile::IMAGES_MK);
            Ok(true)
        }
        Command::Matrix { names, platform, format, waves } => {
            let farm = Farm::new(config, progress)?;
            let plan = plan_for(&farm, &catalog, &names, platform.as_deref(), bases).await?;
            let m = crate::cli::matrix::compute(&farm, &plan).await?;
            match format {
                MatrixFormat::Json => println!("{}", serde_json::to_string_pretty(&m).expect("matrix serializes")),
                MatrixFormat::Github => print!("{}", m.github(waves)),
            }
            Ok(true)
        }
        Command::Stitch { names, platform, staging, json } => {
            let farm = Farm::new(config, progress)?;
            let plan = plan_for(&farm, &catalog, &names, platform.as_deref(), bases).await?;
            let only = resolve_names(&catalog, &names)?;
            let report = crate::farm::stitch::run(&farm, &plan, &only, staging.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("stitch report serializes"));
            } else {
                for t in &report.tags {
                    println!("{} {} ({})", t.tag, t.digest, t.platforms.join(", "));
                }
            }
            for u in &plan.unresolved {
                eprintln!("error: {} for {}: not stitched: {}", u.image, u.platform, u.reason);
            }
            if plan.unresolved.iter().any(|u| u.invalid) {
                return Err(Error::usage("images with invalid recipes (above) were not stitched; fix them"));
            }
            Ok(report.missing.is_empty() && plan.unresolved.is_empty())
        }
        Command::Release { version, names, to, latest, dry_run, json, record } => {
            let names = resolve_names(&catalog, &names)?;
            let farm = Farm::new(config, progress)?;
            let plan = make_plan(&farm, &catalog, &names, &PlatformChoice::Defaults, bases).await?;
            require_resolved(&plan, "release")?;
            let wanted: Vec<_> =
                plan.images.iter().filter(|i| names.is_empty() || names.contains(&i.name)).cloned().collect();
            crate::cli::publish::release(&farm.config, &wanted, &version, to.as_deref(), latest, dry_run, json, record)
                .await
        }
        Command::Builders { .. }
        | Command::Binfmt { .. }
        | Command::Login { .. }
        | Command::Copy { .. }
        | Command::Store { .. } => Err(Error::failure("internal: this command runs before the catalog is read")),
    }
}

/// The plan of `matrix` and `stitch`: IMAGE... (default all) for --platform (default:
/// the configured platforms).
async fn plan_for(
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
fn resolve_names(catalog: &Catalog, names: &[String]) -> Result<Vec<String>> {
    names.iter().map(|n| resolve_name(catalog, n)).collect()
}

pub(crate) fn resolve_name(catalog: &Catalog, name: &str) -> Result<String> {
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
pub(crate) fn single_platform(config: &Config, flag: Option<&str>) -> Result<Platform> {
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
pub(crate) async fn make_plan(
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

/// Fails when any job of `plan` has no key: for commands that must cover every platform
/// of what they name. Exit 2 when any of them is invalid input, else 1.
fn require_resolved(plan: &Plan, what: &str) -> Result<()> {
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

/// Prints the report (JSON, or tags and a summary) and the errors; exit 2 when a job
/// failed on invalid input (the rest of the run still ran), 1 for any other failure.
pub(crate) fn finish_report(farm: &Farm, report: &BuildReport, json: bool) -> Result<bool> {
    if json {
        println!("{}", serde_json::to_string_pretty(report).expect("report serializes"));
    } else {
        for s in &report.skipped {
            farm.progress().note(&format!("note: {} {} skipped: {}", s.image, s.platform, s.reason));
        }
        for t in &report.tags {
            println!("{} {} ({})", t.tag, t.digest, t.platforms.join(", "));
        }
        farm.progress().note(&summary(report));
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    let invalid = report.jobs.iter().filter(|j| j.bad_input).count();
    if invalid > 0 {
        return Err(Error::usage(format!(
            "{invalid} job(s) not run or failed because of invalid input (above); fix it and run again"
        )));
    }
    Ok(!report.failed())
}

/// `2 built, 3 cached`, then what failed at which stage: `; 2 failed (push: 2)`. A job
/// counts as built or cached by where its image came from, even when a later stage
/// (push, load) failed; jobs that failed before they had an image count only as failed.
fn summary(report: &BuildReport) -> String {
    use crate::farm::progress::{Outcome, Source};
    let from = |f: fn(Source) -> bool| report.jobs.iter().filter(|j| j.source.is_some_and(f)).count();
    let built = from(|s| s == Source::Build);
    let cached = from(|s| s != Source::Build);
    let mut stages: std::collections::BTreeMap<crate::farm::Stage, usize> = Default::default();
    for j in report.jobs.iter().filter(|j| j.outcome == Outcome::Failed) {
        *stages.entry(j.stage.unwrap_or(crate::farm::Stage::Build)).or_default() += 1;
    }
    let failed: usize = stages.values().sum();
    let tail = if failed > 0 {
        let per: Vec<String> = stages.iter().map(|(s, n)| format!("{}: {n}", s.name())).collect();
        format!("; {failed} failed ({})", per.join(", "))
    } else if built == 0 && report.errors.is_empty() {
        ": nothing to do".to_string()
    } else {
        String::new()
    };
    format!("{built} built, {cached} cached{tail}")
}

async fn hash(
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

/// The plan of one image for one platform, and its job: an unresolved base fails it
/// (exit 1), an invalid recipe and a platform it lacks are usage errors.
async fn plan_one(
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

async fn list(config: Config, catalog: &Catalog, progress: Progress, json: bool, bases: &BaseFlags) -> Result<bool> {
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

/// `archfarm assemble`: the image (and its farm parents) through the farm, then the
/// requested output. With `--output -` and no stored result, the image is streamed
/// straight from its sources (nothing written to the store for it).
async fn assemble(
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
    let parent = parents.values().next().map(|e| e.manifest.digest.clone());
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
                    farm.produce(&job, &parents, None).await?.0
                }
            };
            let ref_name = crate::image::reference::split_tag(&tag).1.unwrap_or("latest");
            match &output {
                Some(Output::Oci(dir)) => out::write_oci_layout(&farm.store, &entry.manifest, ref_name, dir)?,
                Some(Output::DockerArchive(file)) => {
                    out::write_docker_archive(&farm.store, &entry.manifest, std::slice::from_ref(&tag), file)?
                }
                Some(Output::Stdout) => {
                    let stdout = std::io::stdout();
                    let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
                    crate::image::docker_archive::export(
                        &farm.store,
                        &entry.manifest,
                        std::slice::from_ref(&tag),
                        &mut w,
                    )?;
                }
                None => {}
            }
            (Some(entry.manifest.digest.clone()), entry.config_digest.clone())
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
