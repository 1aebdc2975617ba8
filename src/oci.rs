//! The parts of OCI / Docker v2 manifest and index documents that archfarm reads. One
//! definition for every reader (store, registry, copy, assembler); writing goes through
//! the types that make deterministic bytes (oci-spec builders, `docker_archive`).

use serde::Deserialize;

use crate::store::Descriptor;

/// An image manifest (OCI or Docker v2): its config and layers.
#[derive(Debug, Deserialize)]
pub struct ManifestDoc {
    #[serde(rename = "mediaType")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// An image index (OCI index or Docker manifest list).
#[derive(Debug, Deserialize)]
pub struct IndexDoc {
    pub manifests: Vec<IndexChild>,
}

/// One manifest an index lists.
#[derive(Debug, Deserialize)]
pub struct IndexChild {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub platform: Option<ChildPlatform>,
}

#[derive(Debug, Deserialize)]
pub struct ChildPlatform {
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
}
