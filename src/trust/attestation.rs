//! Attestations as OCI referrers: an artifact manifest whose `subject` is the image
//! manifest, whose one layer is a DSSE envelope of an in-toto statement about it, and
//! whose annotation names the statement's predicate type (as buildx and cosign label
//! theirs), so a reader can pick provenance or SBOM from the referrers list alone.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::image::oci::{digest_hex, Descriptor, ManifestDoc};
use crate::image::store::{Store, StoredImage};
use crate::registry::referrers::Artifact;
use crate::registry::Registry;
use crate::support::error::{Error, Result};
use crate::trust::dsse::{self, Envelope};
use crate::trust::keys::{SigningKey, VerifyingKey};
use crate::trust::provenance::{PAYLOAD_TYPE, STATEMENT_TYPE};

/// The artifact type of an attestation referrer: an in-toto statement.
pub const ARTIFACT_TYPE: &str = PAYLOAD_TYPE;
/// The media type of its one layer.
pub const ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The annotation naming the statement's predicate type.
pub const PREDICATE_ANNOTATION: &str = "in-toto.io/predicate-type";

/// The referrer of `subject` that carries `envelope`, a statement of `predicate_type`.
pub fn artifact(subject: &Descriptor, predicate_type: &str, envelope: &Envelope) -> Artifact {
    Artifact::new(ARTIFACT_TYPE, subject)
        .blob(ENVELOPE, envelope.to_json())
        .annotation(PREDICATE_ANNOTATION, predicate_type)
}

/// The in-toto predicate type of an SPDX document.
pub const SBOM_PREDICATE_TYPE: &str = "https://spdx.dev/Document";

/// `document` (an SPDX JSON document of `image`, named `name`) as an in-toto Statement v1,
/// the payload of the SBOM's DSSE envelope.
pub fn sbom_statement(name: &str, image: &StoredImage, document: &[u8]) -> Result<Vec<u8>> {
    let predicate: Value =
        serde_json::from_slice(document).map_err(|e| Error::failure(format!("the SBOM of {name} is not JSON: {e}")))?;
    let hex = digest_hex(&image.manifest.digest)?;
    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": hex}}],
        "predicateType": SBOM_PREDICATE_TYPE,
        "predicate": predicate,
    });
    Ok(serde_json::to_vec(&statement).expect("json"))
}

#[derive(Deserialize)]
struct Statement {
    subject: Vec<StatementSubject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
}

#[derive(Deserialize)]
struct StatementSubject {
    digest: std::collections::BTreeMap<String, String>,
}

/// One attestation attached to a subject, read from the registry.
struct Found {
    /// `attestation <digest> (<predicate type>)`, for messages.
    what: String,
    predicate_type: String,
    envelope: Envelope,
}

/// Every attestation attached to `subject` (a manifest digest in `repo`).
async fn attached(reg: &Registry, store: &Store, repo: &str, subject: &str) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    for referrer in reg.referrers(repo, subject).await? {
        if referrer.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
            continue;
        }
        let said = referrer.annotations.as_ref().and_then(|a| a.get(PREDICATE_ANNOTATION)).cloned().unwrap_or_default();
        let what = format!("attestation {} ({said})", referrer.digest);
        let fail = |why: String| Error::failure(format!("{what}: {why}"));
        let (_, bytes) = reg.get_manifest(repo, &referrer.digest).await?;
        let manifest: ManifestDoc = serde_json::from_slice(&bytes).map_err(|e| fail(format!("not a manifest: {e}")))?;
        let layer = match manifest.layers.as_slice() {
            [l] if l.media_type == ENVELOPE => l,
            _ => return Err(fail(format!("expected one {ENVELOPE} layer"))),
        };
        if !store.has_blob(&layer.digest) {
            reg.fetch_blob(store, repo, layer).await?;
        }
        let envelope: Envelope = serde_json::from_slice(&store.read_blob(&layer.digest)?)
            .map_err(|e| fail(format!("not a DSSE envelope: {e}")))?;
        found.push(Found { what, predicate_type: said, envelope });
    }
    Ok(found)
}

/// Checks the attestations attached to `subject` (a manifest digest in `repo`) that
/// `key` signed: each statement is about `subject` and of the predicate type its
/// annotation says. Attestations the key did not sign are not evidence and are left
/// aside (an unsigned one from `build --push`, another key's), but some exist and
/// none is signed by the key is a failure. Returns the predicate types checked (none
/// attached: empty); fails naming the attestation and what is wrong.
pub async fn verify(
    reg: &Registry,
    store: &Store,
    repo: &str,
    subject: &str,
    key: &VerifyingKey,
) -> Result<Vec<String>> {
    let found = attached(reg, store, repo, subject).await?;
    let mut checked = Vec::new();
    for f in &found {
        let Ok(payload) = f.envelope.verify(key) else { continue };
        let fail = |why: String| Error::failure(format!("{}: {why}", f.what));
        let statement: Statement =
            serde_json::from_slice(&payload).map_err(|e| fail(format!("not an in-toto statement: {e}")))?;
        let hex = digest_hex(subject)?;
        if !statement.subject.iter().any(|s| s.digest.get("sha256").map(String::as_str) == Some(hex)) {
            return Err(fail(format!("its statement is not about {subject}")));
        }
        if statement.predicate_type != f.predicate_type {
            return Err(fail(format!("its statement's predicate type is {}", statement.predicate_type)));
        }
        checked.push(f.predicate_type.clone());
    }
    if checked.is_empty() && !found.is_empty() {
        return Err(Error::failure(format!(
            "{} attestation(s) attached, none signed by {}: sign them with `archfarm release --sign` or \
             `build --push --sign`",
            found.len(),
            key.source()
        )));
    }
    Ok(checked)
}

/// Makes sure every kind of attestation attached to `subject` has an envelope signed by
/// `key`: for a predicate type with none, the same statement is attached again in an
/// envelope signed by the key (the unsigned one stays). Returns how many were written;
/// a second run writes none.
pub async fn countersign(
    reg: &Registry,
    store: &Store,
    repo: &str,
    subject: &Descriptor,
    key: &SigningKey,
) -> Result<usize> {
    let found = attached(reg, store, repo, &subject.digest).await?;
    let signed: BTreeSet<&str> = found
        .iter()
        .filter(|f| f.envelope.verify(key.verifying_key()).is_ok())
        .map(|f| f.predicate_type.as_str())
        .collect();
    let mut written = 0;
    let mut done = BTreeSet::new();
    for f in &found {
        if signed.contains(f.predicate_type.as_str()) || !done.insert(f.predicate_type.as_str()) {
            continue;
        }
        let payload = f.envelope.payload_bytes()?;
        let envelope = dsse::sign(&f.envelope.payload_type, &payload, Some(key))?;
        reg.put_referrer(repo, &artifact(subject, &f.predicate_type, &envelope)).await?;
        written += 1;
    }
    Ok(written)
}
