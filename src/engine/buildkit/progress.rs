//! BuildKit's progress (`moby.buildkit.v1.StatusResponse` messages) as readable log
//! lines, in the manner of `docker buildx build --progress=plain`: each step gets a
//! number when first seen, `#5 [2/3] RUN make` when it starts, its output as
//! `#5 0.312 compiling...` (seconds since the step started), then `#5 CACHED`,
//! `#5 DONE 1.2s` or `#5 ERROR: ...`. The first step that failed (or, if the stream
//! broke, the last one running) names the build's error, like the classic builder's
//! last `Step N/M`, and its last output lines go with it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};

use bollard_buildkit_proto::google::protobuf::Timestamp;
use bollard_buildkit_proto::moby::buildkit::v1::StatusResponse;

/// The state of the progress display of one build.
#[derive(Default)]
pub struct Progress {
    steps: HashMap<String, Step>,
    /// The digest of the first step that failed.
    failed: Option<String>,
}

#[derive(Default)]
struct Step {
    number: usize,
    name: String,
    started: Option<f64>,
    announced: bool,
    cached: bool,
    finished: bool,
    /// Output after its last newline, kept until the line is complete.
    partial: Vec<u8>,
    /// Its last complete output lines.
    tail: VecDeque<String>,
}

fn seconds(t: &Timestamp) -> f64 {
    t.seconds as f64 + f64::from(t.nanos) / 1e9
}

/// BuildKit marks the steps it stops because another failed with this error.
const CANCELED: &str = "context canceled";

impl Progress {
    /// The name of the first step that failed (`[2/3] RUN false`); if none did (the
    /// stream broke), the last one that started and did not finish.
    pub fn failed_step(&self) -> Option<&str> {
        self.failed().map(|s| s.name.as_str())
    }

    /// The last output lines of [`failed_step`](Self::failed_step).
    pub fn failed_output(&self) -> Vec<String> {
        self.failed().map(|s| s.tail.iter().cloned().collect()).unwrap_or_default()
    }

    fn failed(&self) -> Option<&Step> {
        let running = || self.steps.values().filter(|s| s.announced && !s.finished).max_by_key(|s| s.number);
        match &self.failed {
            Some(digest) => self.steps.get(digest),
            None => running(),
        }
    }

    /// Writes what `status` says happened to `out`: steps that started, then their
    /// output, then steps that ended (so a step's last lines come before its end).
    pub fn push(&mut self, status: &StatusResponse, out: &mut impl Write) -> io::Result<()> {
        for v in &status.vertexes {
            let step = self.step(&v.digest);
            if !v.name.is_empty() {
                step.name.clone_from(&v.name);
            }
            if step.started.is_none() {
                step.started = v.started.as_ref().map(seconds);
            }
            let n = step.number;
            if !step.announced && (v.started.is_some() || v.cached) {
                writeln!(out, "#{n} {}", step.name)?;
                step.announced = true;
            }
            if v.cached && !step.cached {
                writeln!(out, "#{n} CACHED")?;
                step.cached = true;
            }
        }
        for l in &status.logs {
            let step = self.step(&l.vertex);
            let elapsed = match (step.started, l.timestamp.as_ref()) {
                (Some(start), Some(t)) => (seconds(t) - start).max(0.0),
                _ => 0.0,
            };
            step.partial.extend_from_slice(&l.msg);
            while let Some(i) = step.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = step.partial.drain(..=i).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                let text = text.trim_end_matches('\r');
                writeln!(out, "#{} {elapsed:.3} {text}", step.number)?;
                crate::engine::request::keep_tail(&mut step.tail, text);
            }
        }
        for w in &status.warnings {
            let n = self.step(&w.vertex).number;
            writeln!(out, "#{n} WARNING: {}", String::from_utf8_lossy(&w.short))?;
        }
        for v in &status.vertexes {
            let step = self.step(&v.digest);
            if step.finished || v.completed.is_none() && v.error.is_empty() {
                continue;
            }
            step.finished = true;
            let n = step.number;
            if !step.partial.is_empty() {
                let text = String::from_utf8_lossy(&std::mem::take(&mut step.partial)).into_owned();
                writeln!(out, "#{n} {text}")?;
                crate::engine::request::keep_tail(&mut step.tail, &text);
            }
            if !v.error.is_empty() {
                writeln!(out, "#{n} ERROR: {}", v.error)?;
                if self.failed.is_none() && !v.error.contains(CANCELED) {
                    self.failed = Some(v.digest.clone());
                }
            } else if let (Some(start), Some(end)) = (step.started, v.completed.as_ref()) {
                writeln!(out, "#{n} DONE {:.1}s", (seconds(end) - start).max(0.0))?;
            }
        }
        Ok(())
    }

    fn step(&mut self, digest: &str) -> &mut Step {
        let next = self.steps.len() + 1;
        self.steps.entry(digest.to_string()).or_insert_with(|| Step { number: next, ..Step::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_buildkit_proto::moby::buildkit::v1::{Vertex, VertexLog};

    fn at(s: i64, ms: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds: s, nanos: ms * 1_000_000 })
    }

    #[test]
    fn steps_are_numbered_logged_and_the_first_real_failure_is_named() {
        let mut p = Progress::default();
        let mut out = Vec::new();
        let vertex = |d: &str, name: &str| Vertex { digest: d.into(), name: name.into(), ..Default::default() };
        let run = Vertex { started: at(10, 0), ..vertex("b", "[2/3] RUN make") };
        let status = StatusResponse {
            vertexes: vec![Vertex { cached: true, ..vertex("a", "[1/3] FROM base") }, run.clone()],
            logs: vec![VertexLog { vertex: "b".into(), timestamp: at(10, 312), stream: 1, msg: b"compil".to_vec() }],
            ..Default::default()
        };
        p.push(&status, &mut out).unwrap();
        assert_eq!(p.failed_step(), Some("[2/3] RUN make"), "the running step");
        let more = StatusResponse {
            vertexes: vec![
                Vertex { error: "exit code: 2".into(), completed: at(11, 0), ..run },
                Vertex { error: "context canceled".into(), ..vertex("c", "[3/3] RUN other") },
            ],
            logs: vec![VertexLog { vertex: "b".into(), timestamp: at(10, 500), stream: 1, msg: b"ing\nhalf".to_vec() }],
            ..Default::default()
        };
        p.push(&more, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "#1 [1/3] FROM base\n#1 CACHED\n#2 [2/3] RUN make\n#2 0.500 compiling\n#2 half\n\
             #2 ERROR: exit code: 2\n#3 ERROR: context canceled\n"
        );
        assert_eq!(p.failed_step(), Some("[2/3] RUN make"));
        assert_eq!(p.failed_output(), ["compiling", "half"]);
    }
}
