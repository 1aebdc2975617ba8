//! What a farm run reports: each job's result (the `--json` contract, and the run
//! record's jobs), the canonical tags written, the skipped (image, platform) pairs and
//! the errors.

use serde::{Deserialize, Serialize};

use crate::build::fleet::Route;
use crate::build::{BackendKind, Fault, Retry};

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Built,
    Cached,
    Failed,
}

/// Where a cached result was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Store,
    Engine,
    Registry,
    Build,
}

/// Where a failed job stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Its recipe, folder or FROM graph (or a parent's) is bad input: never run.
    Recipe,
    /// A base (or a parent's) could not be resolved: never run.
    Base,
    /// A farm parent failed.
    Parent,
    /// Asking the memo (store, engine, registry) failed.
    Memo,
    /// Building or assembling failed.
    Build,
    /// Publishing to the registry failed (the image was built or found).
    Push,
    /// Putting it into the local engine failed (the image was built or found).
    Load,
}

impl Stage {
    /// Its name, as `--json` and the summary write it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Recipe => "recipe",
            Stage::Base => "base",
            Stage::Parent => "parent",
            Stage::Memo => "memo",
            Stage::Build => "build",
            Stage::Push => "push",
            Stage::Load => "load",
        }
    }
}

/// One job's result, as reported in `--json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobReport {
    pub image: String,
    pub platform: String,
    pub key: String,
    pub outcome: Outcome,
    pub seconds: f64,
    /// Where the image came from: also on a failed job whose image was built or found
    /// before a later stage failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Where a failed job stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// The per-platform manifest digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The per-platform registry reference, when it is (or was made) present there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed: Option<String>,
    /// The image ID in the local engine, for jobs that were loaded there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The job failed on bad input (a recipe, a `from:` base, a field): the run exits 2.
    #[serde(skip)]
    pub bad_input: bool,
    /// The builder that built it (built jobs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
    /// `native` or `emulated` (built jobs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
    /// What produced it: `buildkit`, `classic` or `assembler` (built jobs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    /// The builder's platform the key covers, for recipes that read BUILD* args.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_platform: Option<String>,
    /// Its recipe has stages that run on the builder's own platform (`FROM
    /// --platform=$BUILDPLATFORM`): on an emulated route, those ran natively.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[serde(default)]
    pub cross: bool,
    /// Its farm parents, as `IMAGE PLATFORM`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[serde(default)]
    pub parents: Vec<String>,
    /// When the job started (it then waits for its parents) and ended: RFC 3339, UTC, ms.
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub ended_at: String,
    /// When its build started work on a builder (the assembler: began), for built and
    /// failed-in-build jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_at: Option<String>,
    /// Seconds spent waiting for its parents, and for a free builder slot.
    #[serde(default)]
    pub waited_for_parents: f64,
    #[serde(default)]
    pub waited_for_builder: f64,
    /// Bytes of the image's blobs this run uploaded to the registry.
    #[serde(skip_serializing_if = "is_zero")]
    #[serde(default)]
    pub bytes_pushed: u64,
    /// The recipe step that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_step: Option<String>,
    /// Why its build failed: `recipe`, `emulator`, `engine` or `local`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Attempts that failed on a builder before it went on to another.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[serde(default)]
    pub retries: Vec<Retry>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A canonical multi-arch tag written (or confirmed) in the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagReport {
    pub image: String,
    pub tag: String,
    pub digest: String,
    pub platforms: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SkipReport {
    pub image: String,
    pub platform: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildReport {
    pub jobs: Vec<JobReport>,
    pub tags: Vec<TagReport>,
    pub skipped: Vec<SkipReport>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl BuildReport {
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }
}
