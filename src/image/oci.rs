//! The parts of OCI / Docker v2 manifest and index documents that archfarm reads. One
//! definition for every reader (store, registry, copy, assembler); writing goes through
//! the types that make deterministic bytes (oci-spec builders, `docker_archive`).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::support::error::{Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A content descriptor, with the OCI field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    pub size: u64,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:` digest, refusing anything else (digests become file names).
pub fn digest_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => Ok(h),
        _ => Err(Error::failure(format!("invalid digest '{digest}': expected sha256:<64 lowercase hex>"))),
    }
}

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
