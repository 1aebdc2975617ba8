//! What a build asks of an engine and what its response stream said: the types the
//! classic builder (engine/mod.rs) and BuildKit (engine/buildkit) share, in a module
//! of their own so neither imports the other for them.

use std::collections::BTreeMap;
use std::path::Path;

use crate::image::platform::Platform;
use crate::recipe::context::Context;
use crate::support::secret::Secret;

/// Which of the engine's builders runs a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The classic builder (`POST /build`): one platform per build, no secret mounts.
    #[default]
    Classic,
    /// BuildKit (`POST /build?version=2`): cache and secret mounts, `$BUILDPLATFORM`.
    BuildKit,
}

impl Backend {
    /// `classic` or `buildkit`, as it serializes.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Classic => "classic",
            Backend::BuildKit => "buildkit",
        }
    }
}

/// A secret a BuildKit build may mount (`RUN --mount=type=secret,id=<id>`). The value
/// is handed to the engine through archfarm's session only; `Debug` redacts it.
#[derive(Debug, Clone)]
pub struct BuildSecret {
    pub id: String,
    pub value: Secret,
}

/// What to build: one Dockerfile of one context for one platform.
#[derive(Debug, Clone, Copy)]
pub struct BuildRequest<'a> {
    pub context: &'a Context,
    /// The Dockerfile inside the context, relative (`Dockerfile.aarch64`).
    pub dockerfile_path: &'a str,
    /// If set, replaces that file's content in the streamed context (e.g. FROM lines
    /// rewritten to parent image IDs); the file on disk is not touched.
    pub dockerfile_text: Option<&'a str>,
    pub platform: &'a Platform,
    pub build_args: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
    pub tags: &'a [String],
    /// The engine's whole output goes here (parent folders are created).
    pub log_path: &'a Path,
    /// The builder to use.
    pub backend: Backend,
    /// Build only up to this named stage (`FROM ... AS <target>`); None: the last stage.
    pub target: Option<&'a str>,
    /// Secrets for `RUN --mount=type=secret`; BuildKit only.
    pub secrets: &'a [BuildSecret],
}

/// What a builder's response stream said, for `Engine::build_logged` to judge.
#[derive(Default)]
pub(crate) struct StreamOutcome {
    /// The built image's ID, if the engine named it.
    pub image_id: Option<String>,
    /// The failure message, and whether the engine reported it (true) or the
    /// connection or stream failed (false).
    pub failure: Option<(String, bool)>,
    /// The step that was running when the build failed, as the builder names it.
    pub failed_step: Option<String>,
    /// The last lines that step printed ([`OUTPUT_TAIL`] at most).
    pub failed_output: Vec<String>,
}

/// How many of a failing step's last output lines a failure keeps.
pub const OUTPUT_TAIL: usize = 20;

/// Appends `line` to `tail`, keeping the last [`OUTPUT_TAIL`] lines.
pub(crate) fn keep_tail(tail: &mut std::collections::VecDeque<String>, line: &str) {
    if tail.len() == OUTPUT_TAIL {
        tail.pop_front();
    }
    tail.push_back(line.to_string());
}

/// A build the engine ran and reported as failed: the error, the step that failed as
/// the builder names it (classic `Step 3/4 : RUN make`, BuildKit `[2/3] RUN make`), and
/// the last lines that step printed, so callers judge the failure from data rather
/// than from the error's text.
#[derive(Debug)]
pub struct StepFailure {
    pub error: crate::support::error::Error,
    pub step: Option<String>,
    pub output: Vec<String>,
}

impl StepFailure {
    /// The Dockerfile instruction of the failing step without the builder's numbering
    /// (`RUN make`).
    pub fn instruction(&self) -> Option<&str> {
        let step = self.step.as_deref()?;
        let text = match step.strip_prefix("Step ") {
            Some(classic) => classic.split_once(" : ").map_or(classic, |(_, i)| i),
            None => step.strip_prefix('[').and_then(|s| s.split_once("] ")).map_or(step, |(_, i)| i),
        };
        Some(text.trim())
    }

    /// Whether the failing step is a RUN step (the only kind that runs the image's
    /// own programs, under emulation on an emulated route).
    pub fn in_run_step(&self) -> bool {
        self.instruction().is_some_and(|i| i.get(..4).is_some_and(|k| k.eq_ignore_ascii_case("RUN ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_step_is_read_as_either_builder_names_it() {
        let failed = |step: Option<&str>| StepFailure {
            error: crate::support::error::Error::failure("failed"),
            step: step.map(str::to_string),
            output: Vec::new(),
        };
        for (step, instruction, run) in [
            ("Step 3/4 : RUN make -j2", "RUN make -j2", true),
            ("[2/3] RUN make", "RUN make", true),
            ("[tools 2/3] run ./configure", "run ./configure", true),
            ("Step 2/4 : COPY a /a", "COPY a /a", false),
            ("[internal] load metadata for busybox", "load metadata for busybox", false),
            ("[1/3] FROM base", "FROM base", false),
        ] {
            let f = failed(Some(step));
            assert_eq!((f.instruction(), f.in_run_step()), (Some(instruction), run), "{step}");
        }
        assert!(!failed(None).in_run_step());
        let mut tail = std::collections::VecDeque::new();
        for i in 0..OUTPUT_TAIL + 5 {
            keep_tail(&mut tail, &i.to_string());
        }
        assert_eq!((tail.len(), tail.front().map(String::as_str)), (OUTPUT_TAIL, Some("5")));
    }
}
