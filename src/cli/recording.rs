//! The run record a command that runs jobs leaves in the store (src/runs/), and the
//! HTML report `build --report` asks for.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::farm::progress::Progress;
use crate::recipe::config::Config;
use crate::runs::{RunRecord, Runs};
use crate::support::error::Result;

pub struct Recording {
    started: SystemTime,
    store: PathBuf,
    history: usize,
    report_to: Option<PathBuf>,
}

impl Recording {
    /// The recording of a run that started at `started`, writing its report to
    /// `report_to` when asked.
    pub fn new(config: &Config, started: SystemTime, report_to: Option<PathBuf>) -> Recording {
        Recording { started, store: config.store.clone(), history: config.history, report_to }
    }

    /// Records the run that ended with `result` (in a store that exists: a command that
    /// failed before it opened its store leaves none), writes the report asked for, and
    /// passes `result` on. A record that cannot be written is a warning; a report asked
    /// for that cannot be written fails the command.
    pub fn finish(self, progress: &Progress, result: Result<bool>) -> Result<bool> {
        let exit_code = match &result {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => e.exit_code(),
        };
        let mut reported = progress.reported();
        if let Err(e) = &result {
            reported.errors.push(e.message().to_string());
        }
        let argv: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
        let record = RunRecord::new(&argv, self.started, &reported, exit_code);
        let runs = Runs::in_store(&self.store);
        if self.history > 0 && self.store.is_dir() {
            if let Err(e) = runs.write(&record, self.history) {
                progress.note(&format!("warning: this run was not recorded: {}", e.message()));
            }
        }
        if let Some(path) = &self.report_to {
            let previous = runs.previous(&record).unwrap_or_default();
            match crate::cli::report::write(&record, previous.as_ref(), path) {
                Ok(()) => progress.note(&format!("report: {}", path.display())),
                Err(e) if result.is_ok() => return Err(e),
                Err(e) => progress.note(&format!("error: {}", e.message())),
            }
        }
        result
    }
}
