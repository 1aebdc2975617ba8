//! `archfarm history [--json] [-n N]`: the recorded runs, newest first.

use serde::Serialize;

use crate::recipe::config::Config;
use crate::runs::{Counts, RunRecord, Runs};
use crate::support::error::Result;

/// One run, as `--json` lists it.
#[derive(Serialize)]
struct Line<'a> {
    id: &'a str,
    started_at: &'a str,
    ended_at: &'a str,
    verb: &'a str,
    command: &'a [String],
    wall_seconds: f64,
    exit_code: i32,
    #[serde(flatten)]
    counts: Counts,
    tags: Vec<&'a str>,
}

impl<'a> Line<'a> {
    fn of(r: &'a RunRecord) -> Line<'a> {
        Line {
            id: &r.id,
            started_at: &r.started_at,
            ended_at: &r.ended_at,
            verb: &r.verb,
            command: &r.command,
            wall_seconds: r.wall_seconds,
            exit_code: r.exit_code,
            counts: r.counts(),
            tags: r.tags.iter().map(|t| t.tag.as_str()).collect(),
        }
    }
}

pub fn run(config: &Config, n: usize, json: bool) -> Result<bool> {
    let runs = Runs::in_store(&config.store);
    let records = runs.latest(n)?;
    if json {
        let lines: Vec<Line> = records.iter().map(Line::of).collect();
        println!("{}", serde_json::to_string_pretty(&lines).expect("history serializes"));
        return Ok(true);
    }
    if records.is_empty() {
        eprintln!("no run recorded in {} yet", config.store.join("runs").display());
    }
    for r in &records {
        println!("{}", human(&Line::of(r)));
    }
    Ok(true)
}

/// `ID  2026-12-03 06:01:02  build --push  12.3s  3 built, 5 cached, 1 failed  TAG...`
fn human(l: &Line) -> String {
    const SHOWN_TAGS: usize = 3;
    let when = l.started_at.get(..19).unwrap_or(l.started_at).replace('T', " ");
    let command = l.command.iter().skip(1).cloned().collect::<Vec<_>>().join(" ");
    let Counts { built, cached, failed } = l.counts;
    let mut tags = l.tags.iter().take(SHOWN_TAGS).copied().collect::<Vec<_>>().join(" ");
    if l.tags.len() > SHOWN_TAGS {
        tags.push_str(&format!(" (+{} more)", l.tags.len() - SHOWN_TAGS));
    }
    let exit = if l.exit_code == 0 { String::new() } else { format!("  exit {}", l.exit_code) };
    format!(
        "{}  {when}  {command}  {:.1}s  {built} built, {cached} cached, {failed} failed{exit}  {tags}",
        l.id, l.wall_seconds
    )
    .trim_end()
    .to_string()
}
