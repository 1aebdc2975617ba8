//! archfarm: a cross-architecture container image build farm.
//!
//! The data flow (docs/ARCHITECTURE.md): configuration -> catalog -> content keys ->
//! plan -> memo lookup -> build (engine) -> store -> publish (registry) -> stitch -> load.

pub mod assemble;
pub mod auth;
pub mod bases;
pub mod binfmt;
pub mod buildkit;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod context;
pub mod copy;
pub mod docker_archive;
pub mod dockerfile;
pub mod dockerignore;
pub mod engine;
pub mod env;
pub mod error;
pub mod farm;
pub mod fleet;
pub mod key;
pub mod makefile;
pub mod matrix;
pub mod oci;
pub mod pgzip;
pub mod plan;
pub mod platform;
pub mod preupload;
pub mod publish_cli;
pub mod reference;
pub mod registry;
pub mod release;
pub mod report;
pub mod reproducible;
pub mod retry;
pub mod scan;
pub mod stitch;
pub mod store;
pub mod store_cli;
pub mod targets;

pub use error::{Error, Result};
