//! archfarm: a cross-architecture container image build farm.
//!
//! The data flow (docs/ARCHITECTURE.md): configuration -> catalog -> content keys ->
//! plan -> memo lookup -> build (engine) -> store -> publish (registry) -> stitch -> load.

pub mod catalog;
pub mod config;
pub mod context;
pub mod dockerfile;
pub mod error;
pub mod key;
pub mod platform;
pub mod scan;
pub mod store;

pub use error::{Error, Result};
