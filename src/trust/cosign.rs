//! cosign's key-based image signatures, written and read in cosign's own layout so that
//! `cosign verify --key` accepts what archfarm signs and archfarm verifies what cosign signs.
//!
//! For a manifest `sha256:H` in `repo`, the signatures live in an OCI image manifest under
//! the tag `sha256-H.sig` in the same repository (`registry::referrers::cosign_tag`). Each
//! of its layers is one signature: the blob is the simple-signing payload (media type
//! `application/vnd.dev.cosign.simplesigning.v1+json`), a JSON document naming the
//! reference and the digest it vouches for, and the layer annotation
//! `dev.cosignproject.cosign/signature` holds the base64 ASN.1 DER ECDSA P-256 SHA-256
//! signature over the payload bytes. A new signature is appended to the layers already
//! there (other keys' signatures are kept, as cosign does); the config is the one
//! go-containerregistry's `mutate.Append` gives cosign's empty image (zero times, a
//! diff id per layer), so the bytes are deterministic.
//!
//! Writing is idempotent: when a layer already carries a signature by this key over the
//! same payload, nothing is written. Two signers racing on one `.sig` tag can lose one
//! signature (the last PUT wins); cosign has the same race, and a rerun adds it back.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::image::oci::{digest_of, Descriptor, OCI_CONFIG, OCI_MANIFEST};
use crate::image::store::Store;
use crate::registry::referrers::cosign_tag;
use crate::registry::Registry;
use crate::support::error::{Error, Result};
use crate::trust::keys::{SigningKey, VerifyingKey};

/// The media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation that holds the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a cosign image signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    critical: Critical,
    optional: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Critical {
    identity: Identity,
    image: PayloadImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct PayloadImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// The simple-signing payload cosign signs for `digest` in `docker_reference`
/// (`host/repo`), byte for byte as cosign writes it.
pub fn payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    let p = Payload {
        critical: Critical {
            identity: Identity { docker_reference: docker_reference.to_string() },
            image: PayloadImage { docker_manifest_digest: digest.to_string() },
            kind: SIGNATURE_TYPE.to_string(),
        },
        optional: None,
    };
    serde_json::to_vec(&p).expect("a payload serializes")
}

/// What a payload vouches for: `(docker-reference, docker-manifest-digest)`, refusing a
/// document that is not a cosign image signature.
pub fn payload_claims(bytes: &[u8]) -> Result<(String, String)> {
    let p: Payload =
        serde_json::from_slice(bytes).map_err(|e| Error::failure(format!("not a simple-signing payload: {e}")))?;
    if p.critical.kind != SIGNATURE_TYPE {
        return Err(Error::failure(format!("payload type is '{}', not '{SIGNATURE_TYPE}'", p.critical.kind)));
    }
    Ok((p.critical.identity.docker_reference, p.critical.image.docker_manifest_digest))
}

/// The `.sig` image manifest; layers kept as JSON values so that fields archfarm does not
/// write (other annotations such as certificates or bundles) survive an append.
#[derive(Debug, Serialize, Deserialize)]
struct SigManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: String,
    config: Descriptor,
    layers: Vec<serde_json::Value>,
}

/// One signature layer of a `.sig` image.
#[derive(Debug, Clone)]
pub struct SignatureLayer {
    /// The payload blob.
    pub payload: Descriptor,
    /// The annotation's base64 signature (empty when the layer has none).
    pub signature: String,
}

impl SignatureLayer {
    fn from_json(v: &serde_json::Value) -> Option<SignatureLayer> {
        let payload: Descriptor = serde_json::from_value(v.clone()).ok()?;
        let signature = v
            .get("annotations")
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_string();
        Some(SignatureLayer { payload, signature })
    }

    /// True when the annotation is `key`'s signature over `payload`.
    fn signed_by(&self, key: &VerifyingKey, payload: &[u8]) -> bool {
        STANDARD.decode(&self.signature).is_ok_and(|sig| key.verify(payload, &sig))
    }
}

/// The `.sig` image of `subject` in `repo`: its manifest digest and layers, `None` when the tag is absent.
async fn read_sig_image(reg: &Registry, repo: &str, subject: &str) -> Result<Option<(Descriptor, SigManifest)>> {
    let tag = cosign_tag(subject, "sig")?;
    if reg.manifest_head(repo, &tag).await?.is_none() {
        return Ok(None);
    }
    let (desc, bytes) = reg.get_manifest(repo, &tag).await?;
    let doc: SigManifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::failure(format!("{}/{repo}:{tag} is not a cosign signature image: {e}", reg.host())))?;
    Ok(Some((desc, doc)))
}

/// The signature layers of `subject` in `repo` (empty when it has no `.sig` tag), and the
/// `.sig` manifest's digest.
pub async fn signatures(reg: &Registry, repo: &str, subject: &str) -> Result<(Option<String>, Vec<SignatureLayer>)> {
    Ok(match read_sig_image(reg, repo, subject).await? {
        Some((desc, doc)) => (Some(desc.digest), doc.layers.iter().filter_map(SignatureLayer::from_json).collect()),
        None => (None, Vec::new()),
    })
}

/// What [`sign`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// A signature was appended; the `.sig` manifest is now this.
    Written(Descriptor),
    /// A signature by this key over the same payload was already there: nothing written.
    Present,
}

/// The `docker-reference` archfarm signs for `repo` on `reg`: `host/repo`.
pub fn docker_reference(reg: &Registry, repo: &str) -> String {
    format!("{}/{repo}", reg.host())
}

/// Signs manifest `subject` of `repo` with `key` in cosign's layout, unless a signature by
/// `key` over the same payload is already there. The payload and config blobs pass
/// through `store` (the upload path reads from it).
pub async fn sign(reg: &Registry, store: &Store, repo: &str, subject: &str, key: &SigningKey) -> Result<Signed> {
    let tag = cosign_tag(subject, "sig")?;
    let body = payload(&docker_reference(reg, repo), subject);
    let body_digest = digest_of(&body);
    let existing = read_sig_image(reg, repo, subject).await?;
    let mut layers = existing.map(|(_, doc)| doc.layers).unwrap_or_default();
    let already = layers
        .iter()
        .filter_map(SignatureLayer::from_json)
        .any(|l| l.payload.digest == body_digest && l.signed_by(key.verifying_key(), &body));
    if already {
        return Ok(Signed::Present);
    }
    let signature = STANDARD.encode(key.sign(&body)?);
    let layer = store.put_blob(SIMPLE_SIGNING, &body)?;
    let mut value = serde_json::to_value(&layer).expect("a descriptor serializes");
    value["annotations"] = serde_json::json!({ SIGNATURE_ANNOTATION: signature });
    layers.push(value);

    let diff_ids: Vec<&str> = layers.iter().filter_map(|l| l.get("digest").and_then(|d| d.as_str())).collect();
    // go-containerregistry's empty image after mutate.Append, as cosign writes it.
    let zero = "0001-01-01T00:00:00Z";
    let config = serde_json::json!({
        "architecture": "",
        "created": zero,
        "history": diff_ids.iter().map(|_| serde_json::json!({"created": zero})).collect::<Vec<_>>(),
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    });
    let config = store.put_blob(OCI_CONFIG, &serde_json::to_vec(&config).expect("config serializes"))?;
    reg.push_blob(store, repo, &config, None).await?;
    reg.push_blob(store, repo, &layer, None).await?;
    let manifest = SigManifest { schema_version: 2, media_type: OCI_MANIFEST.to_string(), config, layers };
    let bytes = Bytes::from(serde_json::to_vec(&manifest).expect("manifest serializes"));
    let desc = reg.put_manifest(repo, &tag, OCI_MANIFEST, bytes).await?;
    Ok(Signed::Written(desc))
}

/// How many manifests are signed at once.
const SIGN_CONCURRENCY: usize = 8;

/// [`sign`] for each of `subjects` (an index and its children), in order of `subjects`.
pub async fn sign_all(
    reg: &Registry,
    store: &Store,
    repo: &str,
    subjects: &[String],
    key: &SigningKey,
) -> Result<Vec<Signed>> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(subjects.iter().map(|s| async move {
        sign(reg, store, repo, s, key).await.map_err(|e| e.context(format!("signing {}/{repo}@{s}", reg.host())))
    }))
    .buffered(SIGN_CONCURRENCY)
    .try_collect()
    .await
}

/// Checks that manifest `subject` of `repo` carries a signature by `key` whose payload
/// names `subject`, reading payloads through `store`. Returns the `.sig` manifest digest;
/// the error says what failed for each signature found (or that there is none).
pub async fn verify(reg: &Registry, store: &Store, repo: &str, subject: &str, key: &VerifyingKey) -> Result<String> {
    let tag = cosign_tag(subject, "sig")?;
    let (sig_digest, layers) = signatures(reg, repo, subject).await?;
    let Some(sig_digest) = sig_digest else {
        return Err(Error::failure(format!("no signature: {}/{repo}:{tag} does not exist", reg.host())));
    };
    let mut why = Vec::new();
    for l in layers.iter().filter(|l| l.payload.media_type == SIMPLE_SIGNING) {
        match check_layer(reg, store, repo, subject, key, l).await {
            Ok(()) => return Ok(sig_digest),
            Err(e) => why.push(format!("layer {}: {}", l.payload.digest, e.message())),
        }
    }
    if why.is_empty() {
        why.push("it has no simple-signing layer".to_string());
    }
    Err(Error::failure(format!(
        "no valid signature by {} in {}/{repo}:{tag}: {}",
        key.source(),
        reg.host(),
        why.join("; ")
    )))
}

async fn check_layer(
    reg: &Registry,
    store: &Store,
    repo: &str,
    subject: &str,
    key: &VerifyingKey,
    layer: &SignatureLayer,
) -> Result<()> {
    if layer.signature.is_empty() {
        return Err(Error::failure(format!("no {SIGNATURE_ANNOTATION} annotation")));
    }
    if !store.has_blob(&layer.payload.digest) {
        reg.fetch_blob(store, repo, &layer.payload).await?;
    }
    let body = store.read_blob(&layer.payload.digest)?;
    if !layer.signed_by(key, &body) {
        return Err(Error::failure(format!("the signature does not verify with {}", key.source())));
    }
    let (_, digest) = payload_claims(&body)?;
    if digest != subject {
        return Err(Error::failure(format!("the signed payload names {digest}, not {subject}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_byte_for_byte_cosigns() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let p = payload("127.0.0.1:5000/app", &d);
        assert_eq!(
            String::from_utf8(p.clone()).unwrap(),
            format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"127.0.0.1:5000/app\"}},\"image\":{{\
                 \"docker-manifest-digest\":\"{d}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
            )
        );
        assert_eq!(payload_claims(&p).unwrap(), ("127.0.0.1:5000/app".to_string(), d));
        assert!(payload_claims(br#"{"critical":{"identity":{"docker-reference":"x"},"image":{"docker-manifest-digest":"y"},"type":"other"},"optional":null}"#).is_err());
    }
}
