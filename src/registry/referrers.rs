//! OCI 1.1 referrers: artifacts (signatures, attestations, SBOMs) that name an image
//! manifest as their `subject`, and the tags that find them on registries without the
//! referrers API.
//!
//! What the distribution spec 1.1 asks of a client, and how this module does it:
//! - An artifact is an image manifest with `artifactType`, a `subject` and, when it has no
//!   config of its own, the empty config `application/vnd.oci.empty.v1+json` (`{}`); with
//!   no blobs either, the empty descriptor is its one layer ([`Artifact::manifest`]).
//! - A client that pushes a manifest with a `subject` and gets no `OCI-Subject` header back
//!   MUST update the referrers tag schema itself: GET the index tagged `sha256-<hex>` (404
//!   means an empty one; anything but an image index is a failure, never overwritten), add
//!   the descriptor with the manifest's `artifactType` and annotations unless it is already
//!   there, PUT it back. docker-registry 2.8 has no referrers API and never sends the
//!   header, so there this is the only way an artifact can be found.
//! - A client listing referrers asks `GET /v2/<repo>/referrers/<digest>` and MUST fall back
//!   to the tag schema on a 404.
//!
//! The spec allows conditional requests for the index update; docker-registry 2.8 honours
//! none on PUT, so two writers that read the same index would each write back their own
//! entry only. Within one process the writers of one subject's index take turns (a lock per
//! registry, repository and subject); across processes every writer reads the index back
//! after its PUT and, if a writer that read it earlier has overwritten its entry, adds it
//! again (a bounded number of times). What remains is a window no client can close on such
//! a registry: a stale PUT landing after the other writer's check. A rerun repairs it,
//! since whatever is not listed is added again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::image::oci::{digest_hex, digest_of, Descriptor, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST};
use crate::registry::auth::scopes;
use crate::registry::{check_repo, collect_futures, header_str, is_manifest_type, next_page, strip_params};
use crate::registry::{Registry, BLOB_CONCURRENCY};
use crate::support::error::{Error, Result};

/// The referrers tag schema's tag for `subject` (`sha256-<hex>`): on a registry without
/// the referrers API (docker-registry 2.8), an image index of the subject's referrers.
pub fn fallback_tag(subject: &str) -> Result<String> {
    Ok(format!("sha256-{}", digest_hex(subject)?))
}

/// cosign's tag for `subject`'s `kind` of artifact (`sig`, `att`, `sbom`):
/// `sha256-<hex>.<kind>`.
pub fn cosign_tag(subject: &str, kind: &str) -> Result<String> {
    Ok(format!("{}.{kind}", fallback_tag(subject)?))
}

/// The kinds of cosign's tags (`sha256-<hex>.<kind>`): signatures, attestations, SBOMs.
pub const COSIGN_KINDS: [&str; 3] = ["sig", "att", "sbom"];

/// The empty JSON document (`{}`), the config of an artifact without one.
pub const EMPTY_JSON: &[u8] = b"{}";

/// The descriptor of [`EMPTY_JSON`].
pub fn empty_descriptor() -> Descriptor {
    Descriptor::new(OCI_EMPTY, digest_of(EMPTY_JSON), EMPTY_JSON.len() as u64)
}

/// One blob of an [`Artifact`]: a document in memory (an SBOM, a DSSE envelope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactBlob {
    pub media_type: String,
    pub bytes: Bytes,
    /// The layer descriptor's annotations (e.g. `org.opencontainers.image.title`).
    pub annotations: BTreeMap<String, String>,
}

impl ArtifactBlob {
    /// Its layer descriptor.
    pub fn descriptor(&self) -> Descriptor {
        let mut d = Descriptor::new(self.media_type.clone(), digest_of(&self.bytes), self.bytes.len() as u64);
        d.annotations = (!self.annotations.is_empty()).then(|| self.annotations.clone());
        d
    }
}

/// An OCI 1.1 artifact to attach to `subject` (an image manifest or index already in the
/// repository, or about to be: a registry takes referrers before their subject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// What it is, as a media type (`application/vnd.in-toto+json`, `application/spdx+json`).
    pub artifact_type: String,
    /// The manifest it is about; only media type, digest and size are written.
    pub subject: Descriptor,
    /// Its documents, the manifest's layers in this order; none gives the empty layer.
    pub blobs: Vec<ArtifactBlob>,
    /// The manifest's annotations, copied into every referrers list that names it.
    pub annotations: BTreeMap<String, String>,
}

/// An artifact manifest's fields, in the order the image spec's examples write them.
#[derive(Serialize)]
struct ArtifactManifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    #[serde(rename = "artifactType")]
    artifact_type: &'a str,
    config: Descriptor,
    layers: Vec<Descriptor>,
    subject: Descriptor,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

impl Artifact {
    /// An artifact of `artifact_type` about `subject`, with no blobs or annotations yet.
    pub fn new(artifact_type: impl Into<String>, subject: &Descriptor) -> Artifact {
        Artifact {
            artifact_type: artifact_type.into(),
            subject: subject.plain(),
            blobs: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// Adds a blob (a layer) of `media_type`.
    pub fn blob(mut self, media_type: impl Into<String>, bytes: impl Into<Bytes>) -> Artifact {
        self.blobs.push(ArtifactBlob {
            media_type: media_type.into(),
            bytes: bytes.into(),
            annotations: BTreeMap::new(),
        });
        self
    }

    /// Adds an annotation to the manifest.
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Artifact {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// The artifact's image manifest: its descriptor as a referrers list names it (with
    /// `artifactType` and the annotations) and its bytes. The same artifact always gives
    /// the same bytes (annotations are sorted; field order is fixed), so pushing it again
    /// finds it listed and writes nothing.
    pub fn manifest(&self) -> Result<(Descriptor, Bytes)> {
        let bad = |why: String| Error::usage(format!("artifact {}: {why}", self.artifact_type));
        if !is_media_type(&self.artifact_type) {
            return Err(bad("the artifact type must be a media type such as application/spdx+json".into()));
        }
        digest_hex(&self.subject.digest).map_err(|e| bad(e.message().to_string()))?;
        if !is_manifest_type(&self.subject.media_type) {
            return Err(bad(format!(
                "the subject {} is a {}, not a manifest or index",
                self.subject.digest, self.subject.media_type
            )));
        }
        if let Some(b) = self.blobs.iter().find(|b| !is_media_type(&b.media_type)) {
            return Err(bad(format!("blob media type '{}' is not a media type", b.media_type)));
        }
        let layers = match self.blobs.is_empty() {
            true => vec![empty_descriptor()],
            false => self.blobs.iter().map(ArtifactBlob::descriptor).collect(),
        };
        let doc = ArtifactManifest {
            schema_version: 2,
            media_type: OCI_MANIFEST,
            artifact_type: &self.artifact_type,
            config: empty_descriptor(),
            layers,
            subject: self.subject.plain(),
            annotations: &self.annotations,
        };
        let bytes = Bytes::from(serde_json::to_vec(&doc).expect("an artifact manifest serializes"));
        let mut desc = Descriptor::new(OCI_MANIFEST, digest_of(&bytes), bytes.len() as u64);
        desc.artifact_type = Some(self.artifact_type.clone());
        desc.annotations = (!self.annotations.is_empty()).then(|| self.annotations.clone());
        Ok((desc, bytes))
    }
}

/// `type/subtype`, as far as a registry will care.
fn is_media_type(t: &str) -> bool {
    matches!(t.split_once('/'), Some((a, b)) if !a.is_empty() && !b.is_empty() && !t.contains(char::is_whitespace))
}

/// A referrers list: the answer of the referrers API, or the index under the tag schema.
#[derive(Serialize, Deserialize)]
struct ReferrersIndex {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// The bytes of the tag schema's index over `manifests` (in the order given).
fn index_bytes(manifests: Vec<Descriptor>) -> Bytes {
    let index = ReferrersIndex { schema_version: 2, media_type: Some(OCI_INDEX.to_string()), manifests };
    Bytes::from(serde_json::to_vec(&index).expect("an index serializes"))
}

/// Writers of one subject's tag-schema index in this process take turns, so archfarm's
/// own concurrent writers (several artifacts for one image) never overwrite each other.
static TAG_WRITERS: LazyLock<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

async fn writer_turn(key: String) -> tokio::sync::OwnedMutexGuard<()> {
    let lock = {
        let mut writers = TAG_WRITERS.lock().unwrap();
        // Locks nobody holds or waits for (only the map has them) are dropped.
        writers.retain(|_, l| Arc::strong_count(l) > 1);
        Arc::clone(writers.entry(key).or_default())
    };
    lock.lock_owned().await
}

impl Registry {
    /// Every referrer of `subject` in `repo`: the referrers API's list where the registry
    /// has it, otherwise the tag schema's index. Each descriptor carries the artifact's
    /// `artifactType` and annotations as the list gives them. A registry without either
    /// gives an empty list (404 is "none"); every other failure (401, 5xx after the
    /// retries, an index that is not one) is an error.
    pub async fn referrers(&self, repo: &str, subject: &str) -> Result<Vec<Descriptor>> {
        match self.referrers_api(repo, subject).await? {
            Some(list) => Ok(list),
            None => self.referrers_tagged(repo, subject).await,
        }
    }

    /// The referrers API alone (`GET /v2/<repo>/referrers/<subject>`, every page):
    /// `Ok(None)` when the registry has no such API (it answers 404, 405 or 501, or with
    /// something that is not an image index).
    pub async fn referrers_api(&self, repo: &str, subject: &str) -> Result<Option<Vec<Descriptor>>> {
        check_repo(repo)?;
        digest_hex(subject)?;
        let what = format!("GET referrers of {repo}@{subject}");
        let t = crate::support::retry::timeout();
        let mut path = format!("/v2/{repo}/referrers/{subject}");
        let mut list = Vec::new();
        for _page in 0..1000 {
            let url = self.url(&path)?;
            let make = || Ok(self.client.get(url.clone()).header(ACCEPT, OCI_INDEX).timeout(t));
            let resp = self.send(&what, &scopes(repo, false, None), &make).await?;
            match resp.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
                    if list.is_empty() =>
                {
                    return Ok(None)
                }
                s => {
                    let body = resp.text().await.ok();
                    return Err(self.status_error(&what, s, body.as_deref()));
                }
            }
            let typed = header_str(resp.headers(), CONTENT_TYPE.as_str()).map(strip_params);
            let next = next_page(resp.headers());
            let body = resp.bytes().await.map_err(|e| self.transport_error(&what, &e, 1))?;
            let index = match serde_json::from_slice::<ReferrersIndex>(&body) {
                Ok(i) if typed.as_deref() == Some(OCI_INDEX) || i.media_type.as_deref() == Some(OCI_INDEX) => i,
                _ if list.is_empty() => return Ok(None),
                Ok(_) | Err(_) => {
                    return Err(Error::failure(format!(
                        "registry {}: {what}: a later page is not an image index",
                        self.host
                    )))
                }
            };
            list.extend(index.manifests);
            match next {
                Some(n) => path = n,
                None => return Ok(Some(list)),
            }
        }
        Err(Error::failure(format!("registry {}: {what}: more than 1000 pages of referrers", self.host)))
    }

    /// The tag schema's index alone (`<repo>:sha256-<hex>`): its entries, or none when
    /// the tag does not exist. A tag that holds anything but an image index is an error,
    /// so it is never taken for "no referrers" and overwritten.
    pub async fn referrers_tagged(&self, repo: &str, subject: &str) -> Result<Vec<Descriptor>> {
        let tag = fallback_tag(subject)?;
        let Some((desc, bytes)) = self.find_manifest(repo, &tag).await? else {
            return Ok(Vec::new());
        };
        let not_an_index = |why: &str| {
            Error::failure(format!(
                "{}/{repo}:{tag} should be the OCI referrers index of {subject} but {why}; archfarm neither reads \
                 nor overwrites it: move that tag away",
                self.host
            ))
        };
        if desc.media_type != OCI_INDEX {
            return Err(not_an_index(&format!("it is a {}", desc.media_type)));
        }
        let index: ReferrersIndex =
            serde_json::from_slice(&bytes).map_err(|e| not_an_index(&format!("it does not parse ({e})")))?;
        Ok(index.manifests)
    }

    /// Pushes `artifact` to `repo` as a referrer of its subject: its blobs (the empty
    /// config among them) unless there, then its manifest by digest; then, unless the
    /// registry answered with an `OCI-Subject` header naming the subject (it has the
    /// referrers API and listed it itself), its descriptor is added to the subject's tag
    /// schema index ([`Registry::add_referrers`]). When the artifact is already listed,
    /// nothing is written. Returns the manifest's descriptor, with `artifactType` and
    /// annotations as the lists name it.
    pub async fn put_referrer(&self, repo: &str, artifact: &Artifact) -> Result<Descriptor> {
        check_repo(repo)?;
        let (desc, bytes) = artifact.manifest()?;
        let subject = &artifact.subject.digest;
        if self.referrers(repo, subject).await?.iter().any(|d| d.digest == desc.digest) {
            return Ok(desc);
        }
        let mut blobs = vec![(empty_descriptor(), Bytes::from_static(EMPTY_JSON))];
        for b in &artifact.blobs {
            if !blobs.iter().any(|(d, _)| d.digest == digest_of(&b.bytes)) {
                blobs.push((b.descriptor(), b.bytes.clone()));
            }
        }
        futures::stream::iter(collect_futures(blobs.iter().map(|(d, b)| self.push_bytes(repo, d, b))))
            .buffer_unordered(BLOB_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| e.context(format!("attaching {} to {subject}", artifact.artifact_type)))?;
        let (_, indexed) = self.put_manifest_answer(repo, &desc.digest, OCI_MANIFEST, bytes).await?;
        if indexed.as_deref() != Some(subject.as_str()) {
            self.add_referrers(repo, subject, std::slice::from_ref(&desc)).await?;
        }
        Ok(desc)
    }

    /// Adds `entries` (manifests already in `repo` whose subject is `subject`) to the
    /// subject's tag schema index, keeping every entry it has; entries already listed (by
    /// digest) are left as they are. Reads the index back after writing it and adds again
    /// what a concurrent writer's stale PUT removed, a bounded number of times. Returns
    /// whether it wrote anything.
    pub async fn add_referrers(&self, repo: &str, subject: &str, entries: &[Descriptor]) -> Result<bool> {
        let tag = fallback_tag(subject)?;
        let _turn = writer_turn(format!("{}{repo}@{subject}", self.base)).await;
        let listed = |list: &[Descriptor], e: &Descriptor| list.iter().any(|l| l.digest == e.digest);
        let attempts = crate::support::retry::attempts();
        let mut wrote = false;
        for attempt in 1..=attempts {
            let mut list = self.referrers_tagged(repo, subject).await?;
            let missing: Vec<Descriptor> = entries.iter().filter(|e| !listed(&list, e)).cloned().collect();
            if missing.is_empty() {
                return Ok(wrote);
            }
            list.extend(missing);
            self.put_manifest(repo, &tag, OCI_INDEX, index_bytes(list)).await?;
            wrote = true;
            let now = self.referrers_tagged(repo, subject).await?;
            if entries.iter().all(|e| listed(&now, e)) {
                return Ok(true);
            }
            tracing::debug!(registry = %self.host, repo, %tag, attempt,
                "another writer replaced the referrers index; adding the entries again");
            tokio::time::sleep(crate::support::retry::backoff(attempt, None)).await;
        }
        Err(Error::failure(format!(
            "registry {}: {repo}:{tag}: concurrent writers replaced the referrers index {attempts} times in a row, \
             each time without the entries written here; run again",
            self.host
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_the_subject_digest() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(fallback_tag(&d).unwrap(), format!("sha256-{}", "ab".repeat(32)));
        assert_eq!(cosign_tag(&d, "sig").unwrap(), format!("sha256-{}.sig", "ab".repeat(32)));
        assert!(fallback_tag("sha512:00").is_err());
    }

    fn subject() -> Descriptor {
        let mut s = Descriptor::new(OCI_MANIFEST, digest_of(b"image"), 5);
        s.annotations = Some([("not".to_string(), "copied".to_string())].into());
        s
    }

    #[test]
    fn an_artifact_manifest_is_oci_1_1_and_deterministic() {
        let a = Artifact::new("application/spdx+json", &subject())
            .blob("application/spdx+json", Bytes::from_static(b"{\"spdxVersion\":\"SPDX-2.3\"}"))
            .annotation("z.last", "2")
            .annotation("a.first", "1");
        let (desc, bytes) = a.manifest().unwrap();
        assert_eq!(a.manifest().unwrap().1, bytes, "the same artifact, the same bytes");
        assert_eq!(desc.digest, digest_of(&bytes));
        assert_eq!(desc.artifact_type.as_deref(), Some("application/spdx+json"));
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], OCI_MANIFEST);
        assert_eq!(v["artifactType"], "application/spdx+json");
        assert_eq!(v["config"]["mediaType"], OCI_EMPTY);
        assert_eq!(v["config"]["digest"], "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
        assert_eq!(v["config"]["size"], 2);
        assert_eq!(v["layers"][0]["mediaType"], "application/spdx+json");
        assert_eq!(
            v["subject"],
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest_of(b"image"), "size": 5})
        );
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(text.find("a.first").unwrap() < text.find("z.last").unwrap(), "{text}");

        // No blobs: the empty descriptor is the one layer.
        let (_, bytes) = Artifact::new("application/vnd.example+json", &subject()).manifest().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["layers"], serde_json::json!([empty_descriptor()]));
        assert!(v.get("annotations").is_none());
    }

    #[test]
    fn bad_artifacts_are_refused() {
        assert!(Artifact::new("spdx", &subject()).manifest().is_err());
        let mut blob_subject = subject();
        blob_subject.media_type = "application/octet-stream".into();
        assert!(Artifact::new("application/spdx+json", &blob_subject).manifest().is_err());
        assert!(Artifact::new("application/spdx+json", &subject()).blob("", Bytes::new()).manifest().is_err());
    }
}
