//! `archfarm report`: a run record as one self-contained HTML page (inline CSS, no
//! script, no network resources): a timeline with one lane per builder, the critical
//! path, the image x platform matrix, the failures, the totals and the difference from
//! the previous run. Everything taken from the record is escaped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::critical::{active_millis, critical_path};
use super::{JobRecord, RunRecord};
use crate::build::BackendKind;
use crate::farm::report::Outcome;
use crate::support::error::human_size;
use crate::support::time::parse_rfc3339_millis;

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0;padding:1rem;color:#222;max-width:100%;box-sizing:border-box}
h1{font-size:1.3rem;overflow-wrap:anywhere}h2{font-size:1.1rem;margin-top:1.5rem}
.scroll{overflow-x:auto;max-width:100%}
.timeline{min-width:720px;position:relative;overflow:hidden}
.lane,.phases{display:flex;align-items:stretch;border-bottom:1px solid #ddd;min-height:1.6rem}
.lane>.name,.phases>.name{flex:0 0 9rem;padding:.2rem;font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.lane>.track,.phases>.track{flex:1}
.phase{position:absolute;top:.2rem;height:1.2rem;background:repeating-linear-gradient(45deg,#e0e0e0 0 4px,#f5f5f5 4px 8px);color:#444;font-size:11px;line-height:1.2rem;white-space:nowrap;overflow:hidden;padding:0 2px;box-sizing:border-box;border-radius:2px}
.rows{position:relative}
.bar{position:absolute;height:1.2rem;min-width:2px;pointer-events:none}
.bar>.waiting{position:absolute;left:0;top:.55rem;height:2px;background:#9e9e9e;opacity:.6}
.bar>.work{position:absolute;top:0;bottom:0;right:0;min-width:2px;overflow:hidden;border-radius:2px;font-size:11px;line-height:1.2rem;color:#fff;white-space:nowrap;padding:0 2px;box-sizing:border-box;z-index:1;pointer-events:auto}
.bar[data-outcome=built]>.work{background:#2e7d32}.bar[data-outcome=cached]>.work{background:#607d8b}.bar[data-outcome=failed]>.work{background:#c62828}
.bar[data-critical=true]>.work{outline:2px solid #ff9800;z-index:2}
.axis{display:flex}.axis>.name{flex:0 0 9rem}.axis>.track{flex:1;position:relative;height:1.2rem;font-size:11px;color:#666;overflow:hidden}
.axis .tick{position:absolute;border-left:1px solid #aaa;padding-left:2px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .4rem;text-align:left;vertical-align:top}
td code{font-size:12px}.state-failed{background:#fde0e0}.state-built{background:#e3f2e3}.state-cached{background:#eceff1}
pre{background:#f5f5f5;padding:.5rem;overflow-x:auto;max-width:100%;white-space:pre-wrap;overflow-wrap:anywhere}
.failure{border-left:4px solid #c62828;padding-left:.6rem;margin:1rem 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dd{margin:0}
";

/// The page of `run`, compared with `previous` (the run of the same verb before it).
pub fn render(run: &RunRecord, previous: Option<&RunRecord>) -> String {
    let (chain, chain_ms) = critical_path(&run.jobs);
    let mut page = String::new();
    let title = format!("archfarm {} {}", run.verb, run.id);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n<p><code>{}</code> \
         &middot; exit {} &middot; {}</p>\n",
        esc(&title),
        esc(&title),
        esc(&run.command.join(" ")),
        run.exit_code,
        esc(&run.started_at),
    );
    timeline(&mut page, run, &chain);
    let wall_ms = (run.wall_seconds * 1000.0).round() as u64;
    let names: Vec<String> = chain.iter().map(|&i| job_name(&run.jobs[i])).collect();
    let _ = write!(
        page,
        "<h2>Critical path</h2>\n<p id=\"critical\">{} of {} wall time ({:.0}%): {}</p>\n",
        seconds(chain_ms),
        seconds(wall_ms),
        percent(chain_ms, wall_ms),
        esc(&names.join(" \u{2192} ")),
    );
    matrix(&mut page, run);
    failures(&mut page, run);
    retried(&mut page, run);
    totals(&mut page, run);
    if let Some(previous) = previous {
        difference(&mut page, run, previous);
    }
    page.push_str("</body></html>\n");
    page
}

/// `&`, `<`, `>`, `"` and `'` as entities: safe in text and in quoted attributes.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn job_name(job: &JobRecord) -> String {
    format!("{} {}", job.job.image, job.job.platform)
}

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Built => "built",
        Outcome::Cached => "cached",
        Outcome::Failed => "failed",
    }
}

/// A lane: a builder's, the assembler's, or `None` for jobs that ran on no builder (the
/// memo's hits, jobs that failed before building).
fn lane(job: &JobRecord) -> Option<String> {
    if job.job.backend == Some(BackendKind::Assembler) {
        return Some("assembler".to_string());
    }
    job.job.builder.clone()
}

/// Lanes in the order of their first job's start, the memo's last.
fn lanes(run: &RunRecord) -> Vec<Option<String>> {
    let mut order: Vec<&JobRecord> = run.jobs.iter().collect();
    order.sort_by_key(|j| parse_rfc3339_millis(&j.job.started_at).unwrap_or(u64::MAX));
    let mut lanes: Vec<Option<String>> = Vec::new();
    for j in order {
        let l = lane(j);
        if l.is_some() && !lanes.contains(&l) {
            lanes.push(l);
        }
    }
    if run.jobs.iter().any(|j| lane(j).is_none()) {
        lanes.push(None);
    }
    lanes
}

/// The span the timeline covers: from the run's start to the later of its end and the
/// last job's end, in ms since the epoch.
fn span(run: &RunRecord) -> (u64, u64) {
    let start = run.started_millis();
    let ends = run.jobs.iter().filter_map(|j| parse_rfc3339_millis(&j.job.ended_at));
    let end = ends.chain(parse_rfc3339_millis(&run.ended_at)).max().unwrap_or(start);
    (start, end.max(start + 1))
}

fn timeline(page: &mut String, run: &RunRecord, critical: &[usize]) {
    let (t0, t1) = span(run);
    let width = (t1 - t0) as f64;
    let at = |ms: u64| (ms.saturating_sub(t0) as f64 / width * 100.0).min(100.0);
    page.push_str("<h2>Timeline</h2>\n<div class=\"scroll\"><div class=\"timeline\">\n");
    phases(page, run, &at);
    for l in lanes(run) {
        match &l {
            Some(name) => {
                let _ = write!(page, "<div class=\"lane\" data-builder=\"{0}\"><div class=\"name\" title=\"{0}\">{0}</div><div class=\"track\">", esc(name));
            }
            None => page.push_str("<div class=\"lane\" data-lane=\"memo\"><div class=\"name\">memo / no builder</div><div class=\"track\">"),
        }
        let in_lane: Vec<usize> = (0..run.jobs.len()).filter(|&i| lane(&run.jobs[i]) == l).collect();
        let (rows, row_of) = pack_rows(run, &in_lane);
        let _ = write!(page, "<div class=\"rows\" style=\"height:{:.1}rem\">", rows as f64 * ROW_REM);
        for (&i, row) in in_lane.iter().zip(row_of) {
            let job = &run.jobs[i];
            let j = &job.job;
            let (start, end) = job_span(job, t0);
            let work = work_start(job, t0);
            let route = match (j.route, j.cross) {
                (Some(r), true) => format!("{r:?} cross").to_lowercase(),
                (Some(r), false) => format!("{r:?}").to_lowercase(),
                (None, _) => String::new(),
            };
            let mark = match j.route {
                Some(crate::build::fleet::Route::Emulated) if j.cross => "\u{21c4} ",
                Some(crate::build::fleet::Route::Emulated) => "\u{2248} ",
                _ => "",
            };
            let name = esc(&job_name(job));
            let top = row as f64 * ROW_REM + 0.2;
            // The bar spans the job from start to end: its wait, a thin line, then its
            // work, the coloured part. Only the work takes room in its row.
            let span = (end - start).max(1) as f64;
            let _ = write!(
                page,
                "<div class=\"bar\" data-job=\"{name}\" data-outcome=\"{}\" data-route=\"{route}\"{}{} \
                 style=\"left:{:.3}%;width:{:.3}%;top:{top:.1}rem\">\
                 <span class=\"waiting\" style=\"width:{wait:.2}%\"></span>\
                 <span class=\"work\" style=\"left:{wait:.2}%\" title=\"{name}: {} {} ({}, waited {} before)\">{mark}{name}</span></div>",
                outcome(j.outcome),
                if critical.contains(&i) { " data-critical=\"true\"" } else { "" },
                faults(j),
                at(start),
                at(end) - at(start),
                outcome(j.outcome),
                esc(&route),
                seconds(end - work),
                seconds(work - start),
                wait = (work - start) as f64 / span * 100.0,
            );
        }
        page.push_str("</div></div></div>\n");
    }
    page.push_str("<div class=\"axis\"><div class=\"name\"></div><div class=\"track\">");
    let step = tick_step(t1 - t0);
    let mut tick = 0;
    // A label needs room to its right: none in the last twentieth.
    while tick * 20 < (t1 - t0) * 19 {
        let _ = write!(page, "<span class=\"tick\" style=\"left:{:.3}%\">{}</span>", at(t0 + tick), seconds(tick));
        tick += step;
    }
    page.push_str("</div></div>\n</div></div>\n<p>Bars: green built, grey cached, red failed; the thin line before a bar is waiting (for parents or a builder slot); jobs at once on one builder take rows of their own; \u{2248} emulated, \u{21c4} emulated with native cross stages; an orange outline is the critical path.</p>\n");
}

/// A bar's `data-fault` (why a failed job failed) and `data-retried` (the faults of the
/// attempts before the one that counted, as `emulator engine`).
fn faults(j: &crate::farm::report::JobReport) -> String {
    let mut attrs = String::new();
    if let Some(f) = j.fault {
        let _ = write!(attrs, " data-fault=\"{}\"", f.name());
    }
    if !j.retries.is_empty() {
        let all: Vec<&str> = j.retries.iter().map(|r| r.fault.name()).collect();
        let _ = write!(attrs, " data-retried=\"{}\"", all.join(" "));
    }
    attrs
}

/// The height of one row of bars in a lane, in rem.
const ROW_REM: f64 = 1.4;

/// A job's start and end (ms since the epoch; a job without times starts at `t0`).
fn job_span(job: &JobRecord, t0: u64) -> (u64, u64) {
    let start = parse_rfc3339_millis(&job.job.started_at).unwrap_or(t0);
    (start, parse_rfc3339_millis(&job.job.ended_at).unwrap_or(start).max(start))
}

/// The run's own time outside its jobs, as a row above the lanes: from its start to its
/// first job's start (planning: content keys, bases, the memo's index) and from its last
/// job's end to its end (canonical tags, attestations, the record).
fn phases(page: &mut String, run: &RunRecord, at: &dyn Fn(u64) -> f64) {
    let starts = run.jobs.iter().filter_map(|j| parse_rfc3339_millis(&j.job.started_at));
    let ends = run.jobs.iter().filter_map(|j| parse_rfc3339_millis(&j.job.ended_at));
    let (Some(first), Some(last), Some(end)) = (starts.min(), ends.max(), parse_rfc3339_millis(&run.ended_at)) else {
        return;
    };
    let start = run.started_millis();
    page.push_str("<div class=\"phases\"><div class=\"name\">run</div><div class=\"track\"><div class=\"rows\" style=\"height:1.4rem\">");
    for (phase, from, to) in [("planning", start, first), ("after the jobs", last, end)] {
        if to > from {
            let _ = write!(
                page,
                "<div class=\"phase\" data-phase=\"{phase}\" style=\"left:{:.3}%;width:{:.3}%\" title=\"{phase}: {}\">{phase} {}</div>",
                at(from),
                at(to) - at(from),
                seconds(to - from),
                seconds(to - from),
            );
        }
    }
    page.push_str("</div></div></div>\n");
}

/// When the job's own work began: its end less its active time (a memo hit's lookup, a
/// build from when a builder took it), so waits are drawn apart from work.
fn work_start(job: &JobRecord, t0: u64) -> u64 {
    let (start, end) = job_span(job, t0);
    end.saturating_sub(active_millis(job)).max(start)
}

/// Rows for the jobs `in_lane` (indexes into the run's jobs) so that no two bars of a
/// row overlap: a builder with several slots runs jobs at once, and stacked bars would
/// hide each other. Each job takes the first row free when its work begins (waits may
/// overlap: they are drawn beneath the bars), in order of that time.
/// Returns the number of rows and each job's row, in the order of `in_lane`.
fn pack_rows(run: &RunRecord, in_lane: &[usize]) -> (usize, Vec<usize>) {
    let mut order: Vec<usize> = (0..in_lane.len()).collect();
    let span = |k: usize| {
        let job = &run.jobs[in_lane[k]];
        (work_start(job, 0), job_span(job, 0).1)
    };
    order.sort_by_key(|&k| span(k));
    let mut row_ends: Vec<u64> = Vec::new();
    let mut row_of = vec![0; in_lane.len()];
    for k in order {
        let (start, end) = span(k);
        let row = match row_ends.iter().position(|&e| e <= start) {
            Some(r) => r,
            None => {
                row_ends.push(0);
                row_ends.len() - 1
            }
        };
        row_ends[row] = end.max(start + 1);
        row_of[k] = row;
    }
    (row_ends.len().max(1), row_of)
}

/// A round tick interval giving at most about ten ticks.
fn tick_step(span_ms: u64) -> u64 {
    const STEPS: [u64; 12] = [100, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000];
    STEPS.iter().copied().find(|s| span_ms / s <= 10).unwrap_or(span_ms / 10 + 1)
}

fn matrix(page: &mut String, run: &RunRecord) {
    let images: BTreeSet<&str> = run.jobs.iter().map(|j| j.job.image.as_str()).collect();
    let platforms: BTreeSet<&str> = run.jobs.iter().map(|j| j.job.platform.as_str()).collect();
    let cells: BTreeMap<(&str, &str), &JobRecord> =
        run.jobs.iter().map(|j| ((j.job.image.as_str(), j.job.platform.as_str()), j)).collect();
    page.push_str("<h2>Images</h2>\n<div class=\"scroll\"><table id=\"matrix\"><tr><th>image</th><th>tag</th>");
    for p in &platforms {
        let _ = write!(page, "<th>{}</th>", esc(p));
    }
    page.push_str("</tr>\n");
    for image in &images {
        let tag = run.tags.iter().find(|t| t.image == *image).map_or(String::new(), |t| t.tag.clone());
        let _ = write!(page, "<tr><th>{}</th><td><code>{}</code></td>", esc(image), esc(&tag));
        for platform in &platforms {
            match cells.get(&(*image, *platform)) {
                Some(job) => {
                    let j = &job.job;
                    let state = outcome(j.outcome);
                    let digest = j.digest.as_deref().map(|d| d.strip_prefix("sha256:").unwrap_or(d)).unwrap_or("");
                    let _ = write!(
                        page,
                        "<td class=\"state-{state}\" data-cell=\"{}\" data-state=\"{state}\">{state}<br><code title=\"{}\">{}</code><br><code title=\"{}\">{}</code></td>",
                        esc(&job_name(job)),
                        esc(&j.key),
                        esc(short(&j.key)),
                        esc(j.digest.as_deref().unwrap_or("")),
                        esc(short(digest)),
                    );
                }
                None => page.push_str("<td></td>"),
            }
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table></div>\n");
}

fn short(text: &str) -> &str {
    text.char_indices().nth(12).map_or(text, |(i, _)| &text[..i])
}

fn failures(page: &mut String, run: &RunRecord) {
    let failed: Vec<&JobRecord> = run.jobs.iter().filter(|j| j.job.outcome == Outcome::Failed).collect();
    if failed.is_empty() && run.errors.is_empty() {
        return;
    }
    page.push_str("<h2>Failures</h2>\n");
    // A failed job's error is also the run's (`IMAGE for PLATFORM: ERROR`); its section
    // below tells it.
    let told = |error: &str| failed.iter().filter_map(|j| j.job.error.as_deref()).any(|e| error.ends_with(e));
    for error in run.errors.iter().filter(|e| !told(e)) {
        let _ = writeln!(page, "<pre class=\"run-error\">{}</pre>", esc(error));
    }
    for job in failed {
        let j = &job.job;
        let field = |v: Option<String>| esc(&v.unwrap_or_else(|| "-".to_string()));
        let _ = write!(
            page,
            "<section class=\"failure\" data-failure=\"{}\"><h3>{}</h3><dl><dt>stage</dt><dd>{}</dd><dt>fault</dt><dd>{}</dd>\
             <dt>failing step</dt><dd class=\"failing-step\">{}</dd><dt>builder</dt><dd>{}</dd></dl><pre class=\"error\">{}</pre>",
            esc(&job_name(job)),
            esc(&job_name(job)),
            field(j.stage.map(|s| s.name().to_string())),
            field(j.fault.map(|f| f.name().to_string())),
            field(j.failing_step.clone()),
            field(j.builder.clone()),
            field(j.error.clone()),
        );
        retries(page, job);
        if let Some(tail) = &job.log_tail {
            let _ = write!(page, "<p>Log tail:</p><pre class=\"log\">{}</pre>", esc(tail));
        }
        page.push_str("</section>\n");
    }
}

/// The attempts of `job` that failed on a builder before it went on to another.
fn retries(page: &mut String, job: &JobRecord) {
    if job.job.retries.is_empty() {
        return;
    }
    page.push_str("<p>Retries:</p><ul>");
    for r in &job.job.retries {
        let _ = write!(page, "<li>{} ({}): {}</li>", esc(&r.builder), r.fault.name(), esc(&r.error));
    }
    page.push_str("</ul>");
}

/// Jobs that succeeded after a failed attempt: an emulator fault settled on a native
/// builder, a builder lost mid-build.
fn retried(page: &mut String, run: &RunRecord) {
    let retried: Vec<&JobRecord> =
        run.jobs.iter().filter(|j| j.job.outcome != Outcome::Failed && !j.job.retries.is_empty()).collect();
    if retried.is_empty() {
        return;
    }
    page.push_str("<h2>Retried</h2>\n");
    for job in retried {
        let name = esc(&job_name(job));
        let _ = write!(
            page,
            "<section class=\"retried\" data-retried=\"{name}\"><h3>{name}</h3><p>{} on {}</p>",
            outcome(job.job.outcome),
            esc(job.job.builder.as_deref().unwrap_or("-")),
        );
        retries(page, job);
        page.push_str("</section>\n");
    }
}

fn totals(page: &mut String, run: &RunRecord) {
    let wall_ms = (run.wall_seconds * 1000.0).round() as u64;
    let job_ms: u64 = run
        .jobs
        .iter()
        .map(|j| {
            let (start, end) = job_span(j, 0);
            end - start
        })
        .sum();
    let counts = run.counts();
    let bytes: u64 = run.jobs.iter().map(|j| j.job.bytes_pushed).sum();
    let _ = write!(
        page,
        "<h2>Totals</h2>\n<dl id=\"totals\"><dt>wall time</dt><dd>{}</dd><dt>sum of job time</dt><dd>{}</dd>\
         <dt>jobs</dt><dd>{} built, {} cached, {} failed</dd><dt>cache hits</dt><dd>{:.0}%</dd><dt>pushed</dt><dd>{}</dd>",
        seconds(wall_ms),
        seconds(job_ms),
        counts.built,
        counts.cached,
        counts.failed,
        percent(counts.cached as u64, (counts.built + counts.cached) as u64),
        human_size(bytes),
    );
    for l in lanes(run).into_iter().flatten() {
        let busy: u64 = run.jobs.iter().filter(|j| lane(j).as_ref() == Some(&l)).map(active_millis).sum();
        let _ = write!(
            page,
            "<dt>parallelism on {}</dt><dd>{:.2} (busy {} of {})</dd>",
            esc(&l),
            busy as f64 / wall_ms.max(1) as f64,
            seconds(busy),
            seconds(wall_ms)
        );
    }
    page.push_str("</dl>\n");
}

fn difference(page: &mut String, run: &RunRecord, previous: &RunRecord) {
    let (now, before) = (run.counts(), previous.counts());
    let delta = |a: usize, b: usize| format!("{:+}", a as i64 - b as i64);
    let _ = write!(
        page,
        "<h2>Since the previous run</h2>\n<dl id=\"difference\"><dt>previous</dt><dd>{}</dd><dt>wall time</dt><dd>{:+.1}s ({:.1}s then)</dd>\
         <dt>built</dt><dd>{}</dd><dt>cached</dt><dd>{}</dd><dt>failed</dt><dd>{}</dd></dl>\n",
        esc(&previous.id),
        run.wall_seconds - previous.wall_seconds,
        previous.wall_seconds,
        delta(now.built, before.built),
        delta(now.cached, before.cached),
        delta(now.failed, before.failed),
    );
    let then: BTreeMap<String, Outcome> = previous.jobs.iter().map(|j| (job_name(j), j.job.outcome)).collect();
    let changed: Vec<(String, &str, &str)> = run
        .jobs
        .iter()
        .filter_map(|j| {
            let name = job_name(j);
            let was = then.get(&name).map_or("absent", |o| outcome(*o));
            let is = outcome(j.job.outcome);
            (was != is).then_some((name, was, is))
        })
        .collect();
    if !changed.is_empty() {
        page.push_str("<ul id=\"changed\">");
        for (name, was, is) in changed {
            let _ = write!(page, "<li data-changed=\"{}\">{}: {was} \u{2192} {is}</li>", esc(&name), esc(&name));
        }
        page.push_str("</ul>\n");
    }
}

fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests;
