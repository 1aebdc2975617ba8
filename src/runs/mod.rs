//! Run records: what each command that plans jobs did, kept in the store as
//! `runs/<id>.json` (one atomic write per run, the last [`Config::history`] kept), read
//! back by `archfarm history` and `archfarm report`.
//!
//! [`Config::history`]: crate::recipe::config::Config::history

pub mod html;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::farm::report::{BuildReport, JobReport, Outcome, SkipReport, Source, TagReport};
use crate::support::error::{Error, Result};
use crate::support::fs::{write_atomically, WriteOptions};
use crate::support::time::{parse_rfc3339_millis, rfc3339_millis};

/// The version of the record's format; a reader refuses a newer one.
pub const FORMAT: u32 = 1;

/// How much of a failed job's log a record keeps.
const LOG_TAIL_LINES: usize = 40;
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// One run of one command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: u32,
    /// Sortable by time: `20261203T060102.123Z-4242` (UTC start, then the pid).
    pub id: String,
    /// archfarm's version.
    pub archfarm: String,
    /// The command line, secrets replaced by `***`.
    pub command: Vec<String>,
    /// The subcommand (`build`, `push`...): runs of the same verb are compared.
    pub verb: String,
    pub started_at: String,
    pub ended_at: String,
    pub wall_seconds: f64,
    /// The exit code the run ended with.
    pub exit_code: i32,
    pub jobs: Vec<JobRecord>,
    pub tags: Vec<TagReport>,
    pub skipped: Vec<SkipReport>,
    /// The run's errors, the command's own (bad usage, an unreachable registry) included.
    pub errors: Vec<String>,
}

/// A job as the run reported it, and the tail of a failed job's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    #[serde(flatten)]
    pub job: JobReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
}

/// A run as `history` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub built: usize,
    pub cached: usize,
    pub failed: usize,
}

impl RunRecord {
    /// The record of a run that started at `started` and ends now.
    pub fn new(command: &[String], started: SystemTime, report: &BuildReport, exit_code: i32) -> RunRecord {
        let ended = SystemTime::now();
        let stamp = rfc3339_millis(started).replace(['-', ':'], "");
        RunRecord {
            format: FORMAT,
            id: format!("{stamp}-{}", std::process::id()),
            archfarm: env!("CARGO_PKG_VERSION").to_string(),
            command: redact(command),
            verb: verb(command),
            started_at: rfc3339_millis(started),
            ended_at: rfc3339_millis(ended),
            wall_seconds: round_ms(ended.duration_since(started).unwrap_or_default().as_secs_f64()),
            exit_code,
            jobs: report.jobs.iter().map(|j| JobRecord { job: j.clone(), log_tail: log_tail(j) }).collect(),
            tags: report.tags.clone(),
            skipped: report.skipped.clone(),
            errors: report.errors.clone(),
        }
    }

    /// Built, cached and failed jobs, counted as the summary line counts them (a job
    /// whose push failed after it was built counts as built and as failed).
    pub fn counts(&self) -> Counts {
        let from = |f: fn(Source) -> bool| self.jobs.iter().filter(|j| j.job.source.is_some_and(f)).count();
        Counts {
            built: from(|s| s == Source::Build),
            cached: from(|s| s != Source::Build),
            failed: self.jobs.iter().filter(|j| j.job.outcome == Outcome::Failed).count(),
        }
    }

    /// Milliseconds since the epoch the run started at.
    pub fn started_millis(&self) -> u64 {
        parse_rfc3339_millis(&self.started_at).unwrap_or(0)
    }
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// The subcommand: the first argument after the program that is not a global flag (or
/// its value).
fn verb(command: &[String]) -> String {
    let mut args = command.iter().skip(1);
    while let Some(a) = args.next() {
        if !a.starts_with('-') {
            return a.clone();
        }
        // Global flags that take a value as the next argument.
        if matches!(a.as_str(), "--config" | "--images" | "--registry" | "--store" | "--bases") {
            args.next();
        }
    }
    String::new()
}

/// The command line with what could be a secret replaced: the value of any flag whose
/// name says password, token or secret, and the user information of a URL.
fn redact(command: &[String]) -> Vec<String> {
    let secret_flag = |flag: &str| {
        let f = flag.to_ascii_lowercase();
        f.starts_with('-') && ["password", "passwd", "token", "secret"].iter().any(|w| f.contains(w))
    };
    let mut out = Vec::with_capacity(command.len());
    let mut hide_next = false;
    for a in command {
        if std::mem::take(&mut hide_next) {
            out.push("***".to_string());
            continue;
        }
        match a.split_once('=') {
            Some((flag, _)) if secret_flag(flag) => out.push(format!("{flag}=***")),
            // `--password-stdin` takes no value.
            None if secret_flag(a) && !a.ends_with("-stdin") => {
                hide_next = true;
                out.push(a.clone());
            }
            _ => out.push(redact_userinfo(a)),
        }
    }
    out
}

/// `https://user:pass@host/x` as `https://***@host/x`.
fn redact_userinfo(arg: &str) -> String {
    let Some(scheme_end) = arg.find("://") else { return arg.to_string() };
    let rest = &arg[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://***{}", &arg[..scheme_end], &rest[at..]),
        None => arg.to_string(),
    }
}

/// The last lines of a failed job's log, if it has one.
fn log_tail(job: &JobReport) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    if job.outcome != Outcome::Failed {
        return None;
    }
    let mut file = std::fs::File::open(job.log.as_ref()?).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES))).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    // A cut first line is not shown.
    let skip_cut = usize::from(len > LOG_TAIL_BYTES);
    let from = lines.len().saturating_sub(LOG_TAIL_LINES).max(skip_cut.min(lines.len()));
    Some(lines[from..].join("\n"))
}

/// The run records of one store.
pub struct Runs {
    dir: PathBuf,
    temp_dir: PathBuf,
}

impl Runs {
    /// The records under `store_root/runs`.
    pub fn in_store(store_root: &Path) -> Runs {
        Runs { dir: store_root.join("runs"), temp_dir: store_root.join("tmp") }
    }

    /// Writes `record` atomically, then removes the oldest records beyond `keep`.
    pub fn write(&self, record: &RunRecord, keep: usize) -> Result<PathBuf> {
        let path = self.dir.join(format!("{}.json", record.id));
        let bytes = serde_json::to_vec_pretty(record).expect("a run record serializes");
        std::fs::create_dir_all(&self.temp_dir).map_err(|e| Error::io("creating folder", &self.temp_dir, e))?;
        write_atomically(&path, &bytes, WriteOptions::temp_in(&self.temp_dir))?;
        let ids = self.ids()?;
        for old in &ids[..ids.len().saturating_sub(keep)] {
            let p = self.path(old);
            std::fs::remove_file(&p).or_else(ignore_missing).map_err(|e| Error::io("removing", &p, e))?;
        }
        Ok(path)
    }

    /// The ids of the records, oldest first.
    pub fn ids(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("reading", &self.dir, e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The record with this id, or the latest when `None`.
    pub fn load(&self, id: Option<&str>) -> Result<RunRecord> {
        let id = match id {
            Some(id) => id.to_string(),
            None => self.ids()?.pop().ok_or_else(|| {
                Error::usage(format!("no run recorded in {} yet; run archfarm build first", self.dir.display()))
            })?,
        };
        if id.contains('/') || !self.path(&id).is_file() {
            return Err(Error::usage(format!(
                "no run '{id}' in {}; `archfarm history` lists the recorded runs",
                self.dir.display()
            )));
        }
        self.read(&id)
    }

    /// The latest run before `record` with the same verb, to compare with.
    pub fn previous(&self, record: &RunRecord) -> Result<Option<RunRecord>> {
        for id in self.ids()?.iter().rev().filter(|id| id.as_str() < record.id.as_str()) {
            let r = self.read(id)?;
            if r.verb == record.verb {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// The latest `n` records, newest first.
    pub fn latest(&self, n: usize) -> Result<Vec<RunRecord>> {
        self.ids()?.iter().rev().take(n).map(|id| self.read(id)).collect()
    }

    fn read(&self, id: &str) -> Result<RunRecord> {
        let path = self.path(id);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
        let record: RunRecord = serde_json::from_slice(&bytes)
            .map_err(|e| Error::failure(format!("{} is not a run record ({e}); remove it", path.display())))?;
        if record.format > FORMAT {
            return Err(Error::failure(format!(
                "{} was written by a newer archfarm (format {}); upgrade archfarm to read it",
                path.display(),
                record.format
            )));
        }
        Ok(record)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests;
