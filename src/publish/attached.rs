//! What is attached to an image and travels with it when `copy` and `release` move it:
//! every OCI 1.1 referrer (through the referrers API, or the tag schema's `sha256-<hex>`
//! index) and every cosign `sha256-<hex>.sig`/`.att`/`.sbom` tag, of the index and of
//! each child, and again of each artifact found (a signature of an SBOM), with the
//! children of an artifact that is itself an index.
//!
//! The order keeps the publishing rule that a tag never points at missing content:
//! [`read`] walks the source; [`check_target`] reads the target and refuses, before
//! anything is written, what the carry would have to overwrite (a cosign tag there that
//! holds something the source's does not, a tag-schema tag that is not an index);
//! [`Attached::copy`] copies blobs, then manifests by digest (an index's children first);
//! [`Attached::verify_present`] HEADs every one of them in the target; only then
//! [`Attached::tag`] merges the tag-schema indexes and writes the cosign tags, and the
//! caller writes the image's own tags last. So an image tag in the target always comes
//! with every signature and attestation the source had, and a failure before it moves no
//! tag. Whatever the target already has is skipped, so a rerun writes nothing.

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::image::oci::{manifest_blobs, Descriptor, DOCKER_LIST, OCI_INDEX};
use crate::registry::referrers::{cosign_tag, fallback_tag, COSIGN_KINDS};
use crate::registry::{BlobOutcome, PushStats, Registry, BLOB_CONCURRENCY};
use crate::support::error::{Error, Result};

/// How many manifests an image may have attached, all told: far beyond any real one, it
/// bounds a walk through a registry that lists referrers without end.
const MAX_ATTACHED: usize = 10_000;

/// One artifact attached to a manifest of an image, as `copy --json` and the release
/// record list it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AttachedRecord {
    /// The digest of the manifest it is attached to (the index, a child, or another
    /// artifact).
    pub subject: String,
    pub digest: String,
    pub media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// `referrer` (the referrers API or the tag schema lists it), or the kind of cosign
    /// tag that names it: `sig`, `att`, `sbom`.
    pub kind: String,
    /// cosign's tag (`sha256-<hex>.sig`), for those kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Everything attached to an image in its source repository.
#[derive(Debug, Clone, Default)]
pub struct Attached {
    /// Every attached manifest, in the order they can be written (an index after its
    /// children), each once.
    manifests: Vec<(Descriptor, Bytes)>,
    /// Per subject digest, its referrers as the source lists them.
    referrers: Vec<(String, Vec<Descriptor>)>,
    /// cosign's tags and the manifests they name.
    cosign: Vec<(String, Descriptor)>,
    /// What was found, in the order of the walk.
    pub records: Vec<AttachedRecord>,
}

/// What the target lacks, found by [`check_target`] before anything is written.
#[derive(Debug, Clone, Default)]
pub struct TargetPlan {
    /// cosign tags to (re)write: absent in the target, or holding a subset of the source's.
    cosign: Vec<(String, Descriptor)>,
    /// The target's referrers API, if it has one.
    api: bool,
    /// Per subject with referrers in the source, what the target listed when checked.
    listed: Vec<(String, Vec<Descriptor>)>,
}

/// One repository's referrers as one walk sees them: its tags listed once (one request
/// where probing every `sha256-…` tag of every manifest would be four), and whether the
/// registry has the referrers API, asked once.
struct View<'a> {
    reg: &'a Registry,
    repo: &'a str,
    tags: BTreeSet<String>,
    /// The referrers API's answer for the first subject asked, when it had one.
    first: Option<(String, Vec<Descriptor>)>,
}

impl<'a> View<'a> {
    async fn open(reg: &'a Registry, repo: &'a str, first: &str) -> Result<View<'a>> {
        let tags = reg.tags(repo).await?.unwrap_or_default();
        let first = reg.referrers_api(repo, first).await?.map(|l| (first.to_string(), l));
        Ok(View { reg, repo, tags, first })
    }

    fn api(&self) -> bool {
        self.first.is_some()
    }

    /// The referrers of `subject`: the API's list where there is one, and the tag
    /// schema's entries where that tag exists (a registry that gained the API keeps
    /// what clients wrote there before; the digest decides what is the same).
    async fn referrers(&self, subject: &str) -> Result<Vec<Descriptor>> {
        let mut list = match &self.first {
            Some((d, l)) if d == subject => l.clone(),
            Some(_) => self.reg.referrers_api(self.repo, subject).await?.unwrap_or_default(),
            None => Vec::new(),
        };
        if self.tags.contains(&fallback_tag(subject)?) {
            for d in self.reg.referrers_tagged(self.repo, subject).await? {
                if !list.iter().any(|l| l.digest == d.digest) {
                    list.push(d);
                }
            }
        }
        Ok(list)
    }

    /// cosign's tags of `subject` that exist, with the manifests they hold.
    async fn cosign(&self, subject: &str) -> Result<Vec<CosignTag>> {
        let mut out = Vec::new();
        for kind in COSIGN_KINDS {
            let tag = cosign_tag(subject, kind)?;
            if self.tags.contains(&tag) {
                let (desc, bytes) = self.reg.get_manifest(self.repo, &tag).await?;
                out.push(CosignTag { kind, tag, desc, bytes });
            }
        }
        Ok(out)
    }
}

/// One of cosign's tags, found.
struct CosignTag {
    kind: &'static str,
    tag: String,
    desc: Descriptor,
    bytes: Bytes,
}

/// The children an index names (none for an image manifest).
fn index_children(media_type: &str, bytes: &[u8], what: &str) -> Result<Vec<Descriptor>> {
    #[derive(Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    if media_type != OCI_INDEX && media_type != DOCKER_LIST {
        return Ok(Vec::new());
    }
    let index: Index =
        serde_json::from_slice(bytes).map_err(|e| Error::failure(format!("{what}: invalid index: {e}")))?;
    Ok(index.manifests)
}

/// Reads everything attached to the image `top` (an index, or a single manifest) and
/// its `children` in `repo` of `reg`. A referrer the list names but the registry no
/// longer has (deleted, with the tag schema not updated) is left out, with a warning:
/// there is nothing to carry.
pub async fn read(reg: &Registry, repo: &str, top: &Descriptor, children: &[Descriptor]) -> Result<Attached> {
    let name = format!("{}/{repo}@{}", reg.host(), top.digest);
    let view = View::open(reg, repo, &top.digest).await?;
    let mut attached = Attached::default();
    // Manifests already known (the image's own) or queued: each is read once.
    let mut known: BTreeSet<String> =
        std::iter::once(top.digest.clone()).chain(children.iter().map(|d| d.digest.clone())).collect();
    let mut dangling = BTreeSet::new();
    let mut subjects: Vec<String> = known.iter().cloned().collect();
    subjects.sort_by_key(|d| *d != top.digest);
    while !subjects.is_empty() {
        let found: Vec<(Vec<Descriptor>, Vec<CosignTag>)> = futures::stream::iter(subjects.iter().map(|s| {
            let view = &view;
            async move { Ok::<_, Error>((view.referrers(s).await?, view.cosign(s).await?)) }
        }))
        .buffered(BLOB_CONCURRENCY)
        .try_collect()
        .await
        .map_err(|e| e.context(format!("reading what is attached to {name}")))?;
        // Manifests to read next: (descriptor, bytes if read already).
        let mut wanted: Vec<(Descriptor, Option<Bytes>)> = Vec::new();
        for (subject, (referrers, cosign)) in subjects.iter().zip(found) {
            for d in &referrers {
                attached.records.push(AttachedRecord {
                    subject: subject.clone(),
                    digest: d.digest.clone(),
                    media_type: d.media_type.clone(),
                    artifact_type: d.artifact_type.clone(),
                    kind: "referrer".into(),
                    tag: None,
                });
                if known.insert(d.digest.clone()) {
                    wanted.push((d.clone(), None));
                }
            }
            if !referrers.is_empty() {
                attached.referrers.push((subject.clone(), referrers));
            }
            for CosignTag { kind, tag, desc: d, bytes } in cosign {
                attached.records.push(AttachedRecord {
                    subject: subject.clone(),
                    digest: d.digest.clone(),
                    media_type: d.media_type.clone(),
                    artifact_type: None,
                    kind: kind.into(),
                    tag: Some(tag.clone()),
                });
                attached.cosign.push((tag, d.clone()));
                if known.insert(d.digest.clone()) {
                    wanted.push((d, Some(bytes)));
                }
            }
        }
        subjects = Vec::new();
        // An index's children are read before it is recorded: they are written first.
        let mut stack: VecDeque<(Descriptor, Option<Bytes>)> = wanted.into();
        let mut pending: Vec<(Descriptor, Bytes)> = Vec::new();
        while !stack.is_empty() {
            let batch: Vec<(Descriptor, Option<Bytes>)> = stack.drain(..).collect();
            let read: Vec<std::result::Result<(Descriptor, Bytes), String>> =
                futures::stream::iter(batch.into_iter().map(|(d, b)| async move {
                    match b {
                        Some(b) => Ok(Ok((d, b))),
                        None => Ok::<_, Error>(read_listed(reg, repo, &d).await?.ok_or(d.digest)),
                    }
                }))
                .buffered(BLOB_CONCURRENCY)
                .try_collect()
                .await?;
            for r in read {
                let (d, b) = match r {
                    Ok(found) => found,
                    Err(gone) => {
                        dangling.insert(gone);
                        continue;
                    }
                };
                for child in index_children(&d.media_type, &b, &format!("{name}: artifact {}", d.digest))? {
                    if known.insert(child.digest.clone()) {
                        stack.push_back((child, None));
                    }
                }
                subjects.push(d.digest.clone());
                pending.push((d, b));
            }
        }
        // Children were read after their index: reversed, every index follows its children.
        attached.manifests.extend(pending.into_iter().rev());
        if attached.manifests.len() > MAX_ATTACHED {
            return Err(Error::failure(format!("{name}: more than {MAX_ATTACHED} attached manifests; refusing it")));
        }
    }
    // Dangling entries are not carried.
    attached.records.retain(|r| !dangling.contains(&r.digest));
    for (_, list) in &mut attached.referrers {
        list.retain(|d| !dangling.contains(&d.digest));
    }
    attached.referrers.retain(|(_, l)| !l.is_empty());
    Ok(attached)
}

/// A listed manifest read by digest, checked against what the list says of it; `None`
/// (and a warning) when the registry no longer has it.
async fn read_listed(reg: &Registry, repo: &str, listed: &Descriptor) -> Result<Option<(Descriptor, Bytes)>> {
    let Some((d, b)) = reg.find_manifest(repo, &listed.digest).await? else {
        tracing::warn!(registry = reg.host(), repo, digest = %listed.digest,
            "a referrers list names a manifest the registry does not have; it is not carried");
        return Ok(None);
    };
    if d.size != listed.size || d.media_type != listed.media_type {
        return Err(Error::failure(format!(
            "{}/{repo}@{}: the manifest is {} ({} bytes) but its referrers list says {} ({} bytes)",
            reg.host(),
            listed.digest,
            d.media_type,
            d.size,
            listed.media_type,
            listed.size
        )));
    }
    Ok(Some((d, b)))
}

/// The layers (of a manifest) or children (of an index) a document names, by digest.
fn parts(media_type: &str, bytes: &[u8], what: &str) -> Result<BTreeSet<String>> {
    let children = index_children(media_type, bytes, what)?;
    if !children.is_empty() {
        return Ok(children.into_iter().map(|d| d.digest).collect());
    }
    #[derive(Deserialize)]
    struct Layers {
        #[serde(default)]
        layers: Vec<Descriptor>,
    }
    let doc: Layers = serde_json::from_slice(bytes).map_err(|e| Error::failure(format!("{what}: {e}")))?;
    Ok(doc.layers.into_iter().map(|d| d.digest).collect())
}

/// Reads `dst_repo` in `dst` before anything is written and says what the carry of
/// `attached` will write there; fails when it would have to overwrite something the
/// source does not have: a cosign tag whose signatures (layers) are not all in the
/// source's (the target was signed on its own; cosign appends, and so would whoever
/// merges them), or a tag-schema tag that is not an index.
pub async fn check_target(dst: &Registry, dst_repo: &str, image: &str, attached: &Attached) -> Result<TargetPlan> {
    if attached.manifests.is_empty() {
        return Ok(TargetPlan::default());
    }
    let view = View::open(dst, dst_repo, image).await?;
    let mut plan = TargetPlan { api: view.api(), ..TargetPlan::default() };
    plan.listed = futures::stream::iter(attached.referrers.iter().map(|(subject, _)| {
        let view = &view;
        async move { Ok::<_, Error>((subject.clone(), view.referrers(subject).await?)) }
    }))
    .buffered(BLOB_CONCURRENCY)
    .try_collect()
    .await?;
    for (tag, d) in &attached.cosign {
        if view.tags.contains(tag) {
            let (theirs, theirs_bytes) = dst.get_manifest(dst_repo, tag).await?;
            if theirs.digest == d.digest {
                continue;
            }
            let ours = attached.bytes(&d.digest);
            let what = format!("{}/{dst_repo}:{tag}", dst.host());
            let (theirs_parts, ours_parts) =
                (parts(&theirs.media_type, &theirs_bytes, &what)?, parts(&d.media_type, ours, &what)?);
            // The target already holds every signature the source has, and more (a
            // release signed there, in the target's own name): nothing to carry.
            if ours_parts.is_subset(&theirs_parts) {
                continue;
            }
            let missing: Vec<String> = theirs_parts.difference(&ours_parts).cloned().collect();
            if !missing.is_empty() {
                return Err(Error::failure(format!(
                    "{what} already holds {} with {} that the source's {} lacks ({}); overwriting it would drop \
                     them: sign the source again with those keys, or move that tag away (nothing was written)",
                    theirs.digest,
                    if missing.len() == 1 { "a layer" } else { "layers" },
                    d.digest,
                    missing.join(", ")
                )));
            }
        }
        plan.cosign.push((tag.clone(), d.clone()));
    }
    Ok(plan)
}

impl Attached {
    /// Nothing is attached.
    pub fn is_empty(&self) -> bool {
        self.manifests.is_empty()
    }

    fn bytes(&self, digest: &str) -> &Bytes {
        &self.manifests.iter().find(|(d, _)| d.digest == digest).expect("every attached manifest was read").1
    }

    /// Copies every attached manifest's blobs, then the manifests by digest (an index
    /// after its children), from `src_repo` in `src` to `dst_repo` in `dst`, skipping
    /// what is there. No tag is written. Returns the blob transfers and how many
    /// manifests were written.
    pub async fn copy(
        &self,
        src: &Registry,
        src_repo: &str,
        dst: &Registry,
        dst_repo: &str,
    ) -> Result<(PushStats, usize)> {
        let mut seen = BTreeSet::new();
        let mut blobs = Vec::new();
        for (d, b) in &self.manifests {
            if index_children(&d.media_type, b, "")?.is_empty() {
                let what = format!("{}/{src_repo}@{}", src.host(), d.digest);
                blobs.extend(manifest_blobs(b, &what)?.into_iter().filter(|b| seen.insert(b.digest.clone())));
            }
        }
        let outcomes: Vec<BlobOutcome> =
            futures::stream::iter(blobs.iter().map(|b| dst.copy_blob(src, src_repo, dst_repo, b)))
                .buffer_unordered(BLOB_CONCURRENCY)
                .try_collect()
                .await?;
        let mut stats = PushStats::default();
        for o in outcomes {
            stats.add(o);
        }
        let mut written = 0;
        // In order, one at a time where an index follows: a registry refuses an index
        // over children it does not have yet.
        for batch in self.manifests.chunk_by(|(a, _), (b, _)| !is_index(&a.media_type) && !is_index(&b.media_type)) {
            let put: Vec<bool> = futures::stream::iter(batch.iter().map(|(d, b)| async move {
                if dst.manifest_head(dst_repo, &d.digest).await?.is_some() {
                    return Ok(false);
                }
                dst.put_manifest(dst_repo, &d.digest, &d.media_type, b.clone()).await.map(|_| true)
            }))
            .buffer_unordered(BLOB_CONCURRENCY)
            .try_collect()
            .await?;
            written += put.into_iter().filter(|p| *p).count();
        }
        Ok((stats, written))
    }

    /// HEADs every attached manifest in `dst_repo`; fails naming the missing ones.
    pub async fn verify_present(&self, dst: &Registry, dst_repo: &str) -> Result<()> {
        let missing: Vec<&str> = dst
            .missing_manifests(dst_repo, &self.manifests, |(d, _)| &d.digest)
            .await?
            .into_iter()
            .map(|(d, _)| d.digest.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(Error::failure(format!(
                "not tagging {}/{dst_repo}: the attached manifests {} are missing there; nothing was tagged",
                dst.host(),
                missing.join(", ")
            )));
        }
        Ok(())
    }

    /// Lists every referrer in the target as the source lists it (what the target's
    /// referrers API does not already list goes into its tag-schema index, merged with
    /// what that index has), then writes the cosign tags `plan` names. Call it only after
    /// [`Attached::verify_present`]. Returns how many tags were written.
    pub async fn tag(&self, dst: &Registry, dst_repo: &str, plan: &TargetPlan) -> Result<usize> {
        let unlisted = |list: &[Descriptor], listed: &[Descriptor]| -> Vec<Descriptor> {
            list.iter().filter(|d| !listed.iter().any(|l| l.digest == d.digest)).cloned().collect()
        };
        let indexes: Vec<bool> = futures::stream::iter(self.referrers.iter().map(|(subject, list)| async move {
            let checked = plan.listed.iter().find(|(s, _)| s == subject).map(|(_, l)| l.as_slice()).unwrap_or_default();
            let mut missing = unlisted(list, checked);
            // A registry with the API lists what was copied there since the check by itself.
            if !missing.is_empty() && plan.api {
                missing = unlisted(&missing, &dst.referrers_api(dst_repo, subject).await?.unwrap_or_default());
            }
            match missing.is_empty() {
                true => Ok(false),
                false => dst.add_referrers(dst_repo, subject, &missing).await,
            }
        }))
        .buffer_unordered(BLOB_CONCURRENCY)
        .try_collect()
        .await?;
        let tags: Vec<bool> = futures::stream::iter(plan.cosign.iter().map(|(tag, d)| async move {
            if dst.manifest_head(dst_repo, tag).await?.is_some_and(|t| t.digest == d.digest) {
                return Ok(false);
            }
            dst.put_manifest(dst_repo, tag, &d.media_type, self.bytes(&d.digest).clone()).await.map(|_| true)
        }))
        .buffer_unordered(BLOB_CONCURRENCY)
        .try_collect()
        .await?;
        Ok(indexes.into_iter().chain(tags).filter(|w| *w).count())
    }
}

fn is_index(t: &str) -> bool {
    t == OCI_INDEX || t == DOCKER_LIST
}
