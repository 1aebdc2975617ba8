//! archfarm: a cross-architecture container image build farm.
//!
//! The layers, bottom first. A module uses its own layer and the layers listed before
//! it only, and the modules of one layer import each other without a cycle
//! (tests/layers.rs fails the build otherwise). docs/ARCHITECTURE.md follows the data
//! flow through them. The blank lines keep rustfmt from sorting the list.

/// Errors and exit codes, the `ARCHFARM_*` environment, retries, secrets.
pub mod support;

/// Platforms, references, OCI descriptors and documents, the store, archive formats.
pub mod image;

/// What the user wrote: archfarm.yaml, the catalog, Dockerfiles, image.yaml, contexts.
pub mod recipe;

/// Jobs and their content keys, labels and tag names.
pub mod plan;

/// The OCI distribution client and registry credentials.
pub mod registry;

/// A Docker engine through its API: classic and BuildKit builds, image transfer.
pub mod engine;

/// The producers: the engine fleet and the daemonless assembler.
pub mod build;

/// Release trust: signing keys, signatures, attestations (provenance, SBOMs).
pub mod trust;

/// Publishing: pre-uploads, copies between registries, releases.
pub mod publish;

/// The coordinator: memo lookups, the job graph, stitching, progress.
pub mod farm;

/// Run records, the run history and the HTML report of a run.
pub mod runs;

/// The front ends: one file per command, and the make targets.
pub mod cli;

pub use support::error::{Error, Result};
