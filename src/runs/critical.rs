//! The critical path of a run: the longest chain through the FROM graph (a job's
//! `parents`), each job weighing its own active time (not its waits).

use std::collections::HashMap;

use super::JobRecord;
use crate::support::time::parse_rfc3339_millis;

/// The job's own active time in milliseconds: from when it started work to its end, or
/// its span less its waits when it never started work on a builder.
pub fn active_millis(job: &JobRecord) -> u64 {
    let j = &job.job;
    let (Some(start), Some(end)) = (parse_rfc3339_millis(&j.started_at), parse_rfc3339_millis(&j.ended_at)) else {
        return 0;
    };
    match j.working_at.as_deref().and_then(parse_rfc3339_millis) {
        Some(working) => end.saturating_sub(working.max(start)),
        None => {
            let waits = ((j.waited_for_parents + j.waited_for_builder) * 1000.0).round() as u64;
            end.saturating_sub(start).saturating_sub(waits)
        }
    }
}

/// The jobs of the longest chain (indices into `jobs`, first parent first) and its
/// length in milliseconds. A parent that is not among the jobs is not part of a chain;
/// a cycle (which a planned run cannot have) is cut where it closes.
pub fn critical_path(jobs: &[JobRecord]) -> (Vec<usize>, u64) {
    let index: HashMap<String, usize> =
        jobs.iter().enumerate().map(|(i, j)| (format!("{} {}", j.job.image, j.job.platform), i)).collect();
    // best[i]: the longest chain ending at i, and the parent it goes through.
    let mut best: Vec<Option<(u64, Option<usize>)>> = vec![None; jobs.len()];
    let mut visiting = vec![false; jobs.len()];
    for i in 0..jobs.len() {
        longest(i, jobs, &index, &mut best, &mut visiting);
    }
    let Some(end) = (0..jobs.len()).max_by_key(|&i| (best[i].map_or(0, |b| b.0), std::cmp::Reverse(i))) else {
        return (Vec::new(), 0);
    };
    let length = best[end].map_or(0, |b| b.0);
    let mut chain = vec![end];
    while let Some(parent) = best[*chain.last().expect("not empty")].and_then(|b| b.1) {
        chain.push(parent);
    }
    chain.reverse();
    (chain, length)
}

fn longest(
    i: usize,
    jobs: &[JobRecord],
    index: &HashMap<String, usize>,
    best: &mut Vec<Option<(u64, Option<usize>)>>,
    visiting: &mut Vec<bool>,
) -> u64 {
    if let Some((length, _)) = best[i] {
        return length;
    }
    visiting[i] = true;
    let mut through: (u64, Option<usize>) = (0, None);
    for parent in &jobs[i].job.parents {
        let Some(&p) = index.get(parent) else { continue };
        if visiting[p] {
            continue;
        }
        let length = longest(p, jobs, index, best, visiting);
        if length > through.0 || through.1.is_none() {
            through = (length, Some(p));
        }
    }
    visiting[i] = false;
    let length = through.0 + active_millis(&jobs[i]);
    best[i] = Some((length, through.1));
    length
}
