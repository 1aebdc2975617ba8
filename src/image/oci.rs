//! The parts of OCI / Docker v2 manifest and index documents that archfarm reads. One
//! definition for every reader (store, registry, copy, assembler); writing goes through
//! the types that make deterministic bytes (oci-spec builders, `docker_archive`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::support::error::{Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The empty JSON document `{}` (OCI image spec 1.1): the config of an artifact that has none.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// A content descriptor, with the OCI field names.
///
/// `artifact_type` and `annotations` are what a referrers list says of each artifact
/// (OCI 1.1); they are left out of the JSON when absent, so the descriptors of images,
/// memo entries and documents written before them keep their exact bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    pub size: u64,
    #[serde(rename = "artifactType", default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Sorted (a map with an order), so documents made of descriptors have deterministic bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    /// A descriptor with no artifact type and no annotations.
    pub fn new(media_type: impl Into<String>, digest: impl Into<String>, size: u64) -> Descriptor {
        Descriptor { media_type: media_type.into(), digest: digest.into(), size, ..Descriptor::default() }
    }

    /// The same content without artifact type and annotations: how a manifest names its
    /// config, layers and subject.
    pub fn plain(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.digest.clone(), self.size)
    }
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

/// The blobs (config and layers) of the manifest `bytes`, each once; `what` names it in
/// the error.
pub fn manifest_blobs(bytes: &[u8], what: &str) -> Result<Vec<Descriptor>> {
    let doc: ManifestDoc =
        serde_json::from_slice(bytes).map_err(|e| Error::failure(format!("{what}: invalid manifest: {e}")))?;
    let mut seen = std::collections::BTreeSet::new();
    Ok(std::iter::once(doc.config).chain(doc.layers).filter(|d| seen.insert(d.digest.clone())).collect())
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
