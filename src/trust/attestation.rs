//! Attestations as OCI referrers: an artifact manifest whose `subject` is the image
//! manifest, whose one layer is a DSSE envelope of an in-toto statement about it, and
//! whose annotation names the statement's predicate type (as buildx and cosign label
//! theirs), so a reader can pick provenance or SBOM from the referrers list alone.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::image::oci::{digest_hex, Descriptor, ManifestDoc};
use crate::image::store::{Store, StoredImage};
use crate::registry::referrers::Artifact;
use crate::registry::Registry;
use crate::support::error::{Error, Result};
use crate::trust::dsse::Envelope;
use crate::trust::keys::VerifyingKey;
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

/// Checks every attestation attached to `subject` (a manifest digest in `repo`): its
/// envelope is signed by `key`, and its statement is about `subject` and of the predicate
/// type its annotation says. Returns the predicate types checked (none attached: empty);
/// fails naming the attestation and what is wrong.
pub async fn verify(
    reg: &Registry,
    store: &Store,
    repo: &str,
    subject: &str,
    key: &VerifyingKey,
) -> Result<Vec<String>> {
    let mut checked = Vec::new();
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
        let payload = envelope.verify(key).map_err(|e| fail(e.message().to_string()))?;
        let statement: Statement =
            serde_json::from_slice(&payload).map_err(|e| fail(format!("not an in-toto statement: {e}")))?;
        let hex = digest_hex(subject)?;
        if !statement.subject.iter().any(|s| s.digest.get("sha256").map(String::as_str) == Some(hex)) {
            return Err(fail(format!("its statement is not about {subject}")));
        }
        if statement.predicate_type != said {
            return Err(fail(format!("its statement's predicate type is {}", statement.predicate_type)));
        }
        checked.push(said);
    }
    Ok(checked)
}
