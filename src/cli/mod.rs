//! The command line: the argument definitions and the dispatch to one module per
//! command (or close family of commands). `main.rs` only maps the result to an exit code
//! (0 ok, 1 build or push failure, 2 usage/config).
//!
//! Below the command modules: `planning` (base flags, names, the plan), `summary` (a
//! farm run's report and exit code), `recording` (the run record every command that
//! runs jobs leaves), `selection` and `planned` (the make targets).

mod assemble;
mod binfmt;
mod build;
mod builders;
mod hash;
mod history;
mod list;
mod load;
mod local_image;
pub mod makefile;
pub mod matrix;
mod planned;
pub mod planning;
mod publish;
mod pull;
mod push;
mod rebuild;
mod recording;
mod report;
pub mod selection;
mod sign;
mod stitch;
pub mod store;
mod summary;
mod test;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use self::matrix::MatrixFormat;
use self::planning::BaseFlags;
use self::recording::Recording;
use self::selection::Selection;
use self::store::StoreCommand;
use crate::farm::progress::Progress;
use crate::farm::{BuildOptions, Farm};
use crate::plan;
use crate::recipe::catalog;
use crate::recipe::config::{Config, Overrides};
use crate::support::error::{Error, Result};
use crate::trust::keys::SigningKey;

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
        /// With --push: sign each canonical index written and its platform manifests
        /// (cosign format) with this PEM P-256 private key: a file, or env://NAME.
        #[arg(long, value_name = "KEY", requires = "push", conflicts_with = "no_stitch")]
        sign: Option<String>,
        #[arg(long)]
        json: bool,
        /// At the end, write the run's HTML report (as `archfarm report`) to FILE.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
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
        /// Sign each released index and its platform manifests (cosign format) with this
        /// PEM P-256 private key: a file, or env://NAME.
        #[arg(long, value_name = "KEY")]
        sign: Option<String>,
    },
    /// Upkeep of the local store: `gc` removes what nothing needs, `verify` checks
    /// every blob and memo entry (docs/ARCHITECTURE.md, "The store's upkeep").
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// The recorded runs, newest first: id, when, command, wall time, built / cached /
    /// failed, tags.
    History {
        #[arg(long)]
        json: bool,
        /// How many runs (default 20).
        #[arg(short = 'n', value_name = "N", default_value_t = 20)]
        n: usize,
    },
    /// Write a recorded run (default: the latest) as one self-contained HTML page.
    Report {
        /// The run's id (`archfarm history` lists them).
        #[arg(value_name = "RUN")]
        run: Option<String>,
        /// The HTML file to write (- for stdout).
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
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
    /// Sign an image (the index and every platform manifest) in cosign's key-based format,
    /// stored under the `sha256-<digest>.sig` tags; signatures already there are kept.
    Sign {
        /// host[:port]/repository[:tag|@digest]
        #[arg(value_name = "REF")]
        image: String,
        /// The PEM PKCS#8 P-256 private key: a file, or env://NAME.
        #[arg(long, value_name = "KEY")]
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Check that the index and every platform manifest carry a valid signature by the
    /// key; exit 1 naming each manifest and what failed.
    Verify {
        /// host[:port]/repository[:tag|@digest]
        #[arg(value_name = "REF")]
        image: String,
        /// The PEM public key (`openssl pkey -pubout`): a file, or env://NAME.
        #[arg(long, value_name = "PUB")]
        key: String,
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// Whether the command runs jobs, and so leaves a run record.
    fn runs_jobs(&self) -> bool {
        use Command::*;
        matches!(
            self,
            Build { .. }
                | Assemble { .. }
                | Load { .. }
                | Pull { .. }
                | Rebuild { .. }
                | Push { .. }
                | Tag { .. }
                | Test { .. }
                | LocalImage { .. }
                | Stitch { .. }
                | Release { .. }
        )
    }

    /// Where the run's HTML report goes (`build --report`).
    fn report_file(&self) -> Option<PathBuf> {
        match self {
            Command::Build { report, .. } => report.clone(),
            _ => None,
        }
    }
}

/// Runs the parsed command; `Ok(false)` means it ran but a job failed (exit 1). A
/// command that runs jobs leaves a run record in the store, whatever its outcome.
pub async fn run(cli: Cli) -> Result<bool> {
    crate::support::env::check()?;
    let started = std::time::SystemTime::now();
    let cwd = std::env::current_dir().map_err(|e| Error::failure(format!("cannot read the current folder: {e}")))?;
    let overrides = Overrides {
        config_file: cli.config.clone(),
        images_dir: cli.images.clone(),
        registry: cli.registry.clone(),
        local_prefix: None,
        store: cli.store.clone(),
        registry_from_env: false,
        source_date_epoch: None,
    }
    .with_env();
    let config = Config::load(&cwd, &overrides)?;
    let progress = Progress::new(cli.verbose);
    let recording = cli.command.runs_jobs().then(|| Recording::new(&config, started, cli.command.report_file()));
    // A signal ends the command here, not in main, so that its run is recorded too.
    // Dropping the command's future closes its builds' connections (the engines cancel
    // them); every store write is atomic and tags are written last, so stopping leaves
    // no half-written entry and no tag over an incomplete image.
    let result = tokio::select! {
        r = dispatch(cli, config, progress.clone()) => r,
        signal = crate::support::signal::stopped() => {
            Err(Error::interrupted(signal as i32, signal.as_str(), &progress.running()))
        }
    };
    match recording {
        Some(recording) => recording.finish(&progress, result),
        None => result,
    }
}

async fn dispatch(cli: Cli, config: Config, progress: Progress) -> Result<bool> {
    // Commands that need no images folder.
    let command = match cli.command {
        Command::Builders { json } => return builders::run(config, json).await,
        Command::Binfmt { install, json } => return binfmt::run(&config, install, json),
        Command::Login { server, username, password_stdin } => {
            return publish::login(&config, &server, &username, password_stdin).await
        }
        Command::Copy { source, destination, json } => {
            return publish::copy(&config, &source, &destination, json).await
        }
        Command::Store { command } => return store::run(&config, command),
        Command::History { json, n } => return history::run(&config, n, json),
        Command::Report { run, output } => return report::run(&config, run.as_deref(), &output),
        Command::Sign { image, key, json } => return sign::run(&config, &image, &key, json).await,
        Command::Verify { image, key, json } => return verify::run(&config, &image, &key, json).await,
        other => other,
    };
    let catalog = catalog::discover(&config.images_dir, &config.arches)?;
    plan::check_settings(&config, &catalog)?;
    let bases = &cli.bases;
    match command {
        Command::List { names: true, underscore, test_images, platform, .. } => {
            list::names(&config, &catalog, platform.as_deref(), test_images, underscore)
        }
        Command::List { json, .. } => list::run(config, &catalog, progress, json, bases).await,
        Command::Hash { image, platform } => hash::run(&config, &catalog, &image, platform.as_deref(), bases).await,
        Command::Build { names, platform, push, no_stitch, sign, json, report: _ } => {
            let sign = sign.as_deref().map(SigningKey::load).transpose()?.map(Arc::new);
            let farm = Arc::new(Farm::new(config, progress)?);
            let opts = BuildOptions { push, no_stitch, sign, ..Default::default() };
            build::run(farm, &catalog, &names, platform.as_deref(), &opts, json, bases).await
        }
        Command::Assemble { image, platform, output, json } => {
            let farm = Arc::new(Farm::new(config, progress)?);
            assemble::run(farm, &catalog, &image, platform.as_deref(), output.as_deref(), json, bases).await
        }
        Command::Load { images, local_only, json } => {
            planned::run(config, &catalog, progress, &images, bases, |p| load::run(p, json, local_only)).await
        }
        Command::Pull { images } => planned::run(config, &catalog, progress, &images, bases, pull::run).await,
        Command::Rebuild { images, json } => {
            planned::run(config, &catalog, progress, &images, bases, |p| rebuild::run(p, json)).await
        }
        Command::Push { images, latest, json } => {
            let push = |p| push::run(p, &catalog, latest, json, bases);
            planned::run(config, &catalog, progress, &images, bases, push).await
        }
        Command::Tag { images } => {
            planned::run(config, &catalog, progress, &images, bases, |p| load::run(p, false, true)).await
        }
        Command::Test { images, json } => {
            planned::run(config, &catalog, progress, &images, bases, |p| test::run(p, json)).await
        }
        Command::LocalImage { images } => {
            planned::run(config, &catalog, progress, &images, bases, local_image::run).await
        }
        Command::Makefile => Ok(makefile::run()),
        Command::Matrix { names, platform, format, waves } => {
            let farm = Farm::new(config, progress)?;
            matrix::run(&farm, &catalog, &names, platform.as_deref(), format, waves, bases).await
        }
        Command::Stitch { names, platform, staging, json } => {
            let farm = Farm::new(config, progress)?;
            stitch::run(&farm, &catalog, &names, platform.as_deref(), staging.as_deref(), json, bases).await
        }
        Command::Release { version, names, to, latest, dry_run, json, record, sign } => {
            let sign = sign.as_deref().map(SigningKey::load).transpose()?.map(Arc::new);
            let farm = Farm::new(config, progress)?;
            let to = to.as_deref();
            publish::release(&farm, &catalog, &names, bases, &version, to, latest, dry_run, json, record, sign).await
        }
        Command::Builders { .. }
        | Command::Binfmt { .. }
        | Command::Login { .. }
        | Command::Copy { .. }
        | Command::Store { .. }
        | Command::History { .. }
        | Command::Report { .. }
        | Command::Sign { .. }
        | Command::Verify { .. } => Err(Error::failure("internal: this command runs before the catalog is read")),
    }
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
