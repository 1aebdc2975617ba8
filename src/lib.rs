//! archfarm: a cross-architecture container image build farm.
//!
//! The layers, bottom to top; a module imports its own layer and the ones above it in
//! this list only (tests/layers.rs fails the build otherwise), and docs/ARCHITECTURE.md
//! follows the data flow through them.

pub mod build;
pub mod cli;
pub mod engine;
pub mod farm;
pub mod image;
pub mod plan;
pub mod publish;
pub mod recipe;
pub mod registry;
pub mod support;

pub use support::error::{Error, Result};
