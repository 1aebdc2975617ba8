//! Release trust: what archfarm says about an image it published and how it proves it.
//! Signing keys, cosign-compatible signatures, DSSE envelopes, SLSA provenance and SBOMs,
//! attached to images as OCI referrers. Imports `support`, `image`, `recipe`, `plan`,
//! `registry`, `engine` and `build` only.

pub mod attestation;
pub mod cosign;
pub mod dsse;
pub mod keys;
pub mod provenance;
pub mod sbom;
