//! `archfarm report [RUN] --output FILE`: a recorded run as one self-contained HTML page.

use std::io::Write;
use std::path::Path;

use crate::recipe::config::Config;
use crate::runs::{RunRecord, Runs};
use crate::support::error::{Error, Result};

pub fn run(config: &Config, id: Option<&str>, output: &Path) -> Result<bool> {
    let runs = Runs::in_store(&config.store);
    let record = runs.load(id)?;
    let previous = runs.previous(&record)?;
    write(&record, previous.as_ref(), output)?;
    if output != Path::new("-") {
        eprintln!("report: {}", output.display());
    }
    Ok(true)
}

/// Writes the report of `record` (compared with `previous`, the run of the same command
/// before it) to `output`, atomically; `-` is stdout.
pub fn write(record: &RunRecord, previous: Option<&RunRecord>, output: &Path) -> Result<()> {
    let html = crate::runs::html::render(record, previous);
    if output == Path::new("-") {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(html.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| Error::failure(format!("writing the report to stdout: {e}")));
    }
    let folder = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !folder.is_dir() {
        return Err(Error::usage(format!(
            "--report/--output {}: the folder {} does not exist; create it or name another file",
            output.display(),
            folder.display()
        )));
    }
    crate::support::fs::write_atomically(output, html.as_bytes(), Default::default())
}
