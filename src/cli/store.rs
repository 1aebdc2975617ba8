//! `archfarm store gc` and `archfarm store verify`: the store's upkeep on the command line
//! (src/image/store/maintenance.rs does the work; this prints it).

use std::path::Path;

use crate::image::store::maintenance::{self, ProblemKind, RemovedKind};
use crate::image::store::Store;
use crate::recipe::config::Config;
use crate::support::error::Result;

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Remove what nothing needs: blobs no memo entry uses, staging no live run owns,
    /// unusable memo entries, and logs of keys without an entry older than 7 days.
    /// Runs only while no other archfarm uses the store.
    Gc {
        /// Say what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Hash every blob and check every memo entry; exit 1 naming each problem.
    Verify {
        /// Also remove the corrupt blobs and the unusable memo entries (the next build
        /// rebuilds or fetches their images).
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Runs `archfarm store ...`; `Ok(false)` when verify found a problem (exit 1).
pub fn run(config: &Config, command: StoreCommand) -> Result<bool> {
    match command {
        StoreCommand::Gc { dry_run, json } => {
            // Unswept: gc removes stale staging itself, so that it can report it.
            let store = Store::open_unswept(&config.store)?;
            let report = maintenance::gc(&store, dry_run)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
                return Ok(true);
            }
            let verb = if dry_run { "would remove" } else { "removed" };
            for r in &report.removed {
                let path = relative(store.root(), &r.path);
                let (what, detail) = match r.kind {
                    RemovedKind::Staging => ("stale staging", path),
                    RemovedKind::Blob => ("unused blob", r.what.clone().unwrap_or(path)),
                    RemovedKind::Entry => ("memo entry", format!("{path}: {}", r.what.as_deref().unwrap_or(""))),
                    RemovedKind::Log => ("old log", path),
                };
                println!("{verb} {what} {detail} ({})", crate::support::error::human_size(r.bytes));
            }
            let count = |k: RemovedKind| report.removed.iter().filter(|r| r.kind == k).count();
            println!(
                "{verb} {} stale staging, {} blobs, {} memo entries, {} logs: {} {}",
                count(RemovedKind::Staging),
                count(RemovedKind::Blob),
                count(RemovedKind::Entry),
                count(RemovedKind::Log),
                crate::support::error::human_size(report.bytes_freed),
                if dry_run { "would be freed" } else { "freed" }
            );
            Ok(true)
        }
        StoreCommand::Verify { repair, json } => {
            let store = Store::open(&config.store)?;
            let report = maintenance::verify(&store, repair)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
                return Ok(report.problems.is_empty());
            }
            for p in &report.problems {
                let what = match p.kind {
                    ProblemKind::Blob => "blob",
                    ProblemKind::Entry => "memo entry",
                };
                eprintln!("error: {what} {}: {}", p.path.display(), p.what);
            }
            let checked = format!(
                "{} blobs ({}) and {} memo entries in {}",
                report.blobs,
                crate::support::error::human_size(report.bytes),
                report.entries,
                store.root().display()
            );
            match (report.problems.len(), repair) {
                (0, _) => println!("verified {checked}: no problem found"),
                (n, false) => eprintln!(
                    "{n} problems in {checked}; `archfarm store verify --repair` removes the corrupt blobs and the \
                     unusable memo entries, and the next build rebuilds or fetches their images"
                ),
                (n, true) => eprintln!(
                    "{n} problems in {checked}, removed; the next build rebuilds or fetches the images they held"
                ),
            }
            Ok(report.problems.is_empty())
        }
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}
