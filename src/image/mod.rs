//! The vocabulary of images: platforms, references, OCI descriptors and documents,
//! and the content-addressed store with the formats images move in and out as
//! (docker-archive, the deterministic tar and gzip writers, the engine rewrite).
//! Imports only `support`.

pub mod docker_archive;
pub mod oci;
pub mod oci_layout;
pub mod pgzip;
pub mod platform;
pub mod reference;
pub mod reproducible;
pub mod store;
pub mod tar;
