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
}
