//! The producers: the engine fleet (classic and BuildKit builds, routed native,
//! emulated or cross) and the daemonless assembler, with QEMU binfmt setup.
//!
//! [`Backend`] is the one seam between the coordinator and a producer: the coordinator
//! picks a backend by the job's [`JobKind`](crate::plan::JobKind) (set once by the
//! planner), puts the job's farm parents in the store, calls [`Backend::produce`], and
//! records the memo entry itself. Every backend returns the same shape, a
//! [`StoredImage`], so nothing after it (push, load, outputs) knows who built it.
//!
//! [`StoredImage`]: crate::image::store::StoredImage

pub mod assemble;
pub mod binfmt;
pub mod engine_backend;
pub mod fleet;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde::Serialize;

use crate::build::fleet::Placement;
use crate::image::platform::Platform;
use crate::image::store::{Entry, StoredImage};
use crate::plan::Job;
use crate::support::error::{Error, Result};

/// What produced an image: an engine's BuildKit or classic builder, or the assembler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    BuildKit,
    Classic,
    Assembler,
}

/// What [`Backend::produce`] made: the image in the store, and what built it where.
#[derive(Debug, Clone)]
pub struct Produced {
    pub image: StoredImage,
    pub by: BackendKind,
    /// The builder and route, for images built on an engine of the fleet.
    pub placed: Option<Placement>,
}

/// A job's farm parents, each already in the store: (image, the platform its stage runs
/// on) to its entry, for every [`Job::parents`] item.
pub type Parents = BTreeMap<(String, Platform), Entry>;

/// A producer of images for jobs of one kind.
///
/// Contract: `produce` leaves the image's blobs, config and manifest in the store and
/// returns them; it records no memo entry (the coordinator does, in one place), and may
/// rely on every parent of the job being in `parents`. An error keeps its kind: bad
/// input is a usage error (exit 2), anything else a failure. A backend retries inside
/// itself where that can help (the fleet tries another builder); an error it returns is
/// final for the job.
pub trait Backend: Send + Sync {
    /// Produces `job`'s image into the store. `push_to`: the registry repository the
    /// image will be pushed to after it is recorded, for a backend that can start
    /// uploading layers early (a head start only: the push runs as always).
    /// `trace`: what the backend saw on the way (builder waits, attempts, the failing
    /// step, the fault), read by the coordinator whether the job succeeded or not.
    fn produce<'a>(
        &'a self,
        job: &'a Job,
        parents: &'a Parents,
        push_to: Option<&'a str>,
        trace: &'a Trace,
    ) -> BoxFuture<'a, Result<Produced>>;

    /// The memo of the backend's own place: an image it already holds for `job.key`,
    /// brought into the store (the engine's images labelled with the key). `None` when
    /// it has none, or no place of its own.
    fn find<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<Option<StoredImage>>>;

    /// A configuration error this run revealed (a builder whose engine contradicts its
    /// configuration): the run fails with it (exit 2) after every job reported.
    fn configuration_error(&self) -> Option<Error> {
        None
    }
}

/// What a backend tells the user while it works: the coordinator's progress lines.
pub trait Report: Send + Sync {
    /// The job started building (shown once, however many builders it takes).
    fn started(&self, image: &str, platform: &Platform);
    /// A line about the run (a builder that failed and the retry elsewhere).
    fn note(&self, message: &str);
}

/// Why a build failed, as the run record and the report tell it apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// The recipe failed (a RUN step, a missing file): the same on any builder.
    Recipe,
    /// The emulator crashed in an emulated step (QEMU's own signal), not the recipe.
    Emulator,
    /// The engine or the connection to it failed.
    Engine,
    /// This machine failed (its disk, its store).
    Local,
}

impl Fault {
    /// Its name, as records and `--json` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Recipe => "recipe",
            Fault::Emulator => "emulator",
            Fault::Engine => "engine",
            Fault::Local => "local",
        }
    }
}

/// An attempt of a job that failed on one builder before the job went on elsewhere.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Retry {
    pub builder: String,
    pub fault: Fault,
    pub error: String,
}

/// What a backend saw while producing one job, filled as it goes (see [`Traced`]).
#[derive(Debug, Default)]
pub struct Trace(Mutex<Traced>);

/// The facts of a [`Trace`].
#[derive(Debug, Clone, Default)]
pub struct Traced {
    /// Time spent waiting for a free builder slot, over every attempt.
    pub waited_for_builder: Duration,
    /// When the last attempt started work (got its builder; the assembler: began).
    pub working_since: Option<SystemTime>,
    /// Where the last attempt ran.
    pub placed: Option<Placement>,
    /// The recipe step that failed, as the engine names it.
    pub failing_step: Option<String>,
    /// Why the job failed, when it did.
    pub fault: Option<Fault>,
    /// Attempts that failed on a builder (the job went on to another, or none was left).
    pub retries: Vec<Retry>,
}

impl Trace {
    /// Changes the facts.
    pub fn update(&self, f: impl FnOnce(&mut Traced)) {
        f(&mut self.0.lock().expect("trace lock"))
    }

    /// The facts so far.
    pub fn get(&self) -> Traced {
        self.0.lock().expect("trace lock").clone()
    }

    /// The last attempt starts work now.
    pub fn working(&self) {
        self.update(|t| t.working_since = Some(SystemTime::now()))
    }
}
