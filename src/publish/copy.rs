//! Copying one image, all platforms (index, child manifests, blobs), between
//! repositories of one registry (blobs mounted, no bytes sent) or between registries
//! (blobs streamed through, bounded memory); and stitching from a staging repository.
//!
//! Order is what makes it safe to interrupt: blobs first, then child manifests by digest,
//! then a HEAD of every child in the target, and only then the tags. A tag therefore never
//! points at content that is not there; an interrupted copy leaves only untagged content,
//! and running it again finishes it (everything present is skipped). What is attached to
//! the image (referrers, cosign's tags: [`crate::publish::attached`]) goes the same way,
//! its tags before the image's.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::image::oci::{manifest_blobs, IndexDoc};
use crate::image::oci::{Descriptor, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::image::platform::Platform;
use crate::image::reference::{self, Reference};
use crate::publish::attached::{self, AttachedRecord};
use crate::registry::{BlobOutcome, PushStats, Registry, BLOB_CONCURRENCY};
use crate::support::error::{Error, Result};

/// An image as `archfarm copy`, `sign` and `verify` take it:
/// `[docker://]host[:port]/repository[:tag][@sha256:digest]`, a [`Reference`] that names
/// its registry (a copy between registries says which ones).
/// `role` starts each message: `copy source`, `sign REF`.
pub fn parse_image(role: &str, text: &str) -> Result<Reference> {
    let t = text.trim();
    let t = t.strip_prefix("docker://").unwrap_or(t);
    let expected = "expected host[:port]/repository[:tag|@sha256:digest], e.g. 127.0.0.1:5000/archfarm/uname:v1";
    let r = Reference::parse(t).map_err(|e| Error::usage(format!("{role}: {}; {expected}", e.message())))?;
    if !reference::names_registry(t) {
        return Err(Error::usage(format!(
            "{role}: '{t}' does not name its registry (the first part must be a registry host, e.g. \
             docker.io/{}); {expected}",
            r.repository
        )));
    }
    Ok(r)
}

/// One platform's manifest in a copied image.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlatformDigest {
    pub platform: String,
    pub digest: String,
}

/// A source image read and verified: its top manifest and its children.
#[derive(Debug, Clone)]
pub struct SourceImage {
    pub desc: Descriptor,
    pub bytes: Bytes,
    /// The per-platform manifests (one, with an empty platform, for a single manifest).
    pub children: Vec<(String, Descriptor, Bytes)>,
}

impl SourceImage {
    pub fn platforms(&self) -> Vec<PlatformDigest> {
        self.children.iter().map(|(p, d, _)| PlatformDigest { platform: p.clone(), digest: d.digest.clone() }).collect()
    }

    pub fn is_index(&self) -> bool {
        is_index(&self.desc.media_type)
    }

    /// The per-platform manifests' descriptors.
    pub fn manifests(&self) -> Vec<Descriptor> {
        self.children.iter().map(|(_, d, _)| d.clone()).collect()
    }
}

fn is_index(t: &str) -> bool {
    t == OCI_INDEX || t == DOCKER_LIST
}

fn is_manifest(t: &str) -> bool {
    t == OCI_MANIFEST || t == DOCKER_MANIFEST
}

/// Reads `repo:reference` from `reg` with every child manifest (verified against the
/// index's digests and sizes). Fails naming the missing platform if a child is absent:
/// "complete" means every child is there.
pub async fn read_image(reg: &Registry, repo: &str, reference: &str) -> Result<SourceImage> {
    let name = format!("{}/{repo}:{reference}", reg.host());
    let (desc, bytes) = reg.get_manifest(repo, reference).await?;
    if is_manifest(&desc.media_type) {
        return Ok(SourceImage {
            desc: desc.clone(),
            bytes: bytes.clone(),
            children: vec![(String::new(), desc, bytes)],
        });
    }
    if !is_index(&desc.media_type) {
        return Err(Error::failure(format!("{name}: unsupported media type {}", desc.media_type)));
    }
    let index: IndexDoc = serde_json::from_slice(&bytes)
        .map_err(|e| Error::failure(format!("{name}: invalid index {}: {e}", desc.digest)))?;
    let fetched: Vec<Result<(String, Descriptor, Bytes)>> =
        futures::stream::iter(index.manifests.into_iter().map(|c| {
            let name = name.clone();
            async move {
                let platform = c
                    .platform
                    .as_ref()
                    .map(|p| {
                        Platform { os: p.os.clone(), architecture: p.architecture.clone(), variant: p.variant.clone() }
                            .to_string()
                    })
                    .unwrap_or_default();
                if !is_manifest(&c.media_type) {
                    return Err(Error::failure(format!(
                        "{name}: child {} has unsupported type {}",
                        c.digest, c.media_type
                    )));
                }
                let (d, b) = reg.get_manifest(repo, &c.digest).await.map_err(|e| {
                    Error::failure(format!(
                        "{name} is incomplete: the {platform} manifest {} cannot be read ({})",
                        c.digest,
                        e.message()
                    ))
                })?;
                if d.size != c.size || d.media_type != c.media_type {
                    return Err(Error::failure(format!(
                        "{name}: the {platform} manifest is {} ({} bytes), the index says {} ({} bytes)",
                        d.media_type, d.size, c.media_type, c.size
                    )));
                }
                Ok((platform, d, b))
            }
        }))
        .buffered(BLOB_CONCURRENCY)
        .collect()
        .await;
    let children = fetched.into_iter().collect::<Result<Vec<_>>>()?;
    if children.is_empty() {
        return Err(Error::failure(format!("{name}: the index lists no manifests")));
    }
    Ok(SourceImage { desc, bytes, children })
}

/// Copies the content of `image` (from `src`/`src_repo`) into `dst`/`dst_repo`: every
/// blob (skipped, mounted or streamed), then every child manifest by digest. No tag is
/// written. Returns what was transferred.
pub async fn copy_content(
    src: &Registry,
    src_repo: &str,
    image: &SourceImage,
    dst: &Registry,
    dst_repo: &str,
) -> Result<PushStats> {
    let mut blobs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (platform, d, b) in &image.children {
        for blob in manifest_blobs(b, &format!("{}/{src_repo}@{} ({platform})", src.host(), d.digest))? {
            if seen.insert(blob.digest.clone()) {
                blobs.push(blob);
            }
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
    // Children by digest (not for a single manifest: its tag PUT carries it).
    if image.is_index() {
        futures::stream::iter(image.children.iter().map(|(_, d, b)| async move {
            if dst.manifest_head(dst_repo, &d.digest).await?.is_some() {
                return Ok(());
            }
            dst.put_manifest(dst_repo, &d.digest, &d.media_type, b.clone()).await.map(|_| ())
        }))
        .buffer_unordered(BLOB_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    }
    Ok(stats)
}

/// HEADs every child of `image` in `dst_repo`; fails naming the missing platforms.
pub async fn verify_present(dst: &Registry, dst_repo: &str, image: &SourceImage) -> Result<()> {
    if !image.is_index() {
        return Ok(());
    }
    let missing: Vec<String> = dst
        .missing_manifests(dst_repo, &image.children, |(_, d, _)| &d.digest)
        .await?
        .into_iter()
        .map(|(p, d, _)| format!("{p} ({})", d.digest))
        .collect();
    if !missing.is_empty() {
        return Err(Error::failure(format!(
            "not tagging {}/{dst_repo}: {} missing there; nothing was tagged",
            dst.host(),
            missing.join(", ")
        )));
    }
    Ok(())
}

/// PUTs `image`'s top manifest under each of `tags`, checking the digest the registry
/// computes. The caller has verified every child present ([`verify_present`], or read them
/// from this very repository).
pub async fn write_tags(dst: &Registry, dst_repo: &str, image: &SourceImage, tags: &[String]) -> Result<()> {
    futures::future::try_join_all(tags.iter().map(|tag| async move {
        let d = dst.put_manifest(dst_repo, tag, &image.desc.media_type, image.bytes.clone()).await?;
        if d.digest != image.desc.digest {
            return Err(Error::failure(format!(
                "registry {}: {dst_repo}:{tag} got digest {} instead of {}",
                dst.host(),
                d.digest,
                image.desc.digest
            )));
        }
        Ok(())
    }))
    .await
    .map(|_| ())
}

/// Whether `repo:tag` exists with exactly `digest`.
pub async fn tag_points_at(reg: &Registry, repo: &str, tag: &str, digest: &str) -> Result<bool> {
    Ok(reg.manifest_head(repo, tag).await?.is_some_and(|d| d.digest == digest))
}

/// What `archfarm copy` did.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub source: String,
    pub destination: String,
    pub digest: String,
    pub media_type: String,
    pub platforms: Vec<PlatformDigest>,
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
    pub blobs_mounted: usize,
    pub blobs_skipped: usize,
    /// False when the destination already had it (nothing was written).
    pub changed: bool,
    /// What is attached to the image (and now to the copy): referrers and cosign tags.
    pub referrers: Vec<AttachedRecord>,
    /// Attached manifests and their tags (tag-schema indexes, cosign tags) written.
    pub referrers_written: usize,
}

/// Copies one image, all platforms, from `from` (its digest if pinned, else its tag) in
/// `src` to `to` in `dst`, with everything attached to it: `to`'s tag is written
/// (`latest` if none); a digest in `to` must be the source's, and alone it writes the
/// content only. The target is checked for attachments it would lose before anything is
/// written, and every manifest is HEADed there before the first tag.
pub async fn copy(src: &Registry, from: &Reference, dst: &Registry, to: &Reference) -> Result<CopyReport> {
    let image = read_image(src, &from.repository, from.lookup()).await?;
    if let Some(d) = to.digest.as_ref().filter(|d| **d != image.desc.digest) {
        return Err(Error::usage(format!("destination {to} names digest {d} but the source is {}", image.desc.digest)));
    }
    let attached = attached::read(src, &from.repository, &image.desc, &image.manifests()).await?;
    // Within one repository everything attached is there already.
    let elsewhere = !(dst.same_registry(src) && from.repository == to.repository);
    let plan = match elsewhere {
        true => Some(attached::check_target(dst, &to.repository, &image.desc.digest, &attached).await?),
        false => None,
    };
    let mut stats = copy_content(src, &from.repository, &image, dst, &to.repository).await?;
    let mut referrers_written = 0;
    if let Some(plan) = &plan {
        let (more, manifests) = attached.copy(src, &from.repository, dst, &to.repository).await?;
        stats.merge(more);
        verify_present(dst, &to.repository, &image).await?;
        attached.verify_present(dst, &to.repository).await?;
        referrers_written = manifests + attached.tag(dst, &to.repository, plan).await?;
    }
    // A destination digest (checked above) writes the content only; a tag is written last.
    let tag = to.tag_or_latest().unwrap_or(&image.desc.digest).to_string();
    let mut written = Vec::new();
    if !tag_points_at(dst, &to.repository, &tag, &image.desc.digest).await? {
        if plan.is_none() {
            verify_present(dst, &to.repository, &image).await?;
        }
        written.push(tag);
    }
    write_tags(dst, &to.repository, &image, &written).await?;
    Ok(CopyReport {
        source: from.to_string(),
        destination: to.to_string(),
        digest: image.desc.digest.clone(),
        media_type: image.desc.media_type.clone(),
        platforms: image.platforms(),
        blobs_uploaded: stats.blobs_uploaded,
        bytes_uploaded: stats.bytes_uploaded,
        blobs_mounted: stats.blobs_mounted,
        blobs_skipped: stats.blobs_skipped,
        changed: !written.is_empty() || stats.blobs_uploaded + stats.blobs_mounted + referrers_written > 0,
        referrers: attached.records,
        referrers_written,
    })
}

/// Stitches `repo:tag` over per-platform manifests that separate CI jobs pushed to
/// `staging_repo` on the same registry, without downloading a layer: each child's blobs
/// are mounted into `repo` (or streamed, if the registry refuses mounts), each child is
/// PUT by digest, then the index is written by [`Registry::put_index`] (which HEADs every
/// child first), with `annotations`. The index is computed from `children` and
/// `annotations` alone, never read back and appended to, so it is idempotent and two
/// stitchers racing on one tag write the same complete bytes.
pub async fn stitch_from_staging(
    reg: &Registry,
    staging_repo: &str,
    repo: &str,
    tag: &str,
    children: &[(Platform, Descriptor)],
    annotations: &BTreeMap<String, String>,
) -> Result<Descriptor> {
    if staging_repo != repo {
        futures::stream::iter(children.iter().map(|(p, d)| async move {
            if reg.manifest_head(repo, &d.digest).await?.is_some() {
                return Ok(());
            }
            let (desc, bytes) = reg
                .get_manifest(staging_repo, &d.digest)
                .await
                .map_err(|e| e.context(format!("stitching {repo}:{tag}: the {p} manifest in {staging_repo}")))?;
            for blob in manifest_blobs(&bytes, &format!("{staging_repo}@{}", d.digest))? {
                reg.copy_blob(reg, staging_repo, repo, &blob).await?;
            }
            reg.put_manifest(repo, &d.digest, &desc.media_type, bytes).await.map(|_| ())
        }))
        .buffer_unordered(BLOB_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    }
    reg.put_index(repo, tag, children, annotations).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_references_that_name_their_registry() {
        let r = parse_image("copy source", "127.0.0.1:5000/ns/img:v1").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.lookup()), ("127.0.0.1:5000", "ns/img", "v1"));
        let r = parse_image("copy source", "docker://reg.example/a/b").unwrap();
        assert_eq!(r.lookup(), "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse_image("copy destination", &format!("localhost:5000/x@{d}")).unwrap();
        assert_eq!((r.lookup(), r.tag_or_latest()), (d.as_str(), None));
        assert_eq!(r.to_string(), format!("localhost:5000/x@{d}"));
        let r = parse_image("copy destination", &format!("localhost:5000/x:v2@{d}")).unwrap();
        assert_eq!((r.lookup(), r.tag_or_latest()), (d.as_str(), Some("v2")));
        let r = parse_image("copy source", "docker.io/busybox:1").unwrap();
        assert_eq!((r.api_host(), r.repository.as_str()), ("registry-1.docker.io", "library/busybox"));
        for bad in ["img:v1", "ns/img", "127.0.0.1:5000/", "127.0.0.1:5000/Upper:v1"] {
            let e = parse_image("copy source", bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.message().starts_with("copy source: ") && e.message().contains("e.g. 127.0.0.1:5000"), "{bad}");
        }
        // Accepted before `copy` parsed through `Reference`.
        for (bad, says) in [
            (":/0", "not a host name"),
            ("./a", "not a host name"),
            ("host:port/x", "port 'port' is not a number"),
            ("host:99999/x", "out of range"),
            ("h.io/x@", "not algorithm:hex"),
            ("h.io/x@latest", "not algorithm:hex"),
            ("h.io/x:v1@sha256:abc", "64 lowercase hex"),
        ] {
            let e = parse_image("copy destination", bad).unwrap_err();
            assert!(
                e.message().starts_with("copy destination: ") && e.message().contains(says),
                "{bad}: {}",
                e.message()
            );
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// `copy` accepts exactly the references that name their registry, as parsed.
            #[test]
            fn copy_images_agree_with_references(text in "(docker://)?[a-zA-Z0-9:/@._\\[\\]-]{0,40}") {
                let bare = text.strip_prefix("docker://").unwrap_or(&text);
                let want = Reference::parse(bare).ok().filter(|_| reference::names_registry(bare));
                prop_assert_eq!(parse_image("copy source", &text).ok(), want);
            }
        }
    }
}

#[cfg(test)]
mod carries {
    use crate::image::oci::{Descriptor, OCI_INDEX};
    use crate::image::oci::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
    use crate::image::reference::Reference;
    use crate::publish::copy::copy;
    use crate::registry::in_process::InProcess;
    use crate::registry::referrers::Artifact;

    const REPO: &str = "src/app";

    /// A two-platform index seeded in `reg` as `REPO:idx`; returns (index, children).
    fn seed_index(reg: &InProcess) -> (String, Vec<Descriptor>) {
        let mut children = Vec::new();
        for arch in ["amd64", "arm64"] {
            let config = serde_json::json!({ "architecture": arch, "os": "linux" }).to_string();
            let config = Descriptor::new(OCI_CONFIG, reg.put_blob(REPO, config.as_bytes()), config.len() as u64);
            let layer = Descriptor::new(OCI_LAYER_GZIP, reg.put_blob(REPO, arch.as_bytes()), arch.len() as u64);
            let m = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer] });
            let bytes = m.to_string();
            let digest = reg.put_manifest(REPO, &format!("{arch}-1"), bytes.as_bytes(), OCI_MANIFEST);
            children.push(serde_json::json!({
                "mediaType": OCI_MANIFEST, "digest": digest, "size": bytes.len(),
                "platform": { "os": "linux", "architecture": arch },
            }));
        }
        let index =
            serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children }).to_string();
        let digest = reg.put_manifest(REPO, "idx", index.as_bytes(), OCI_INDEX);
        let children = children.iter().map(|c| serde_json::from_value(c.clone()).unwrap()).collect();
        (digest, children)
    }

    fn reference(reg: &InProcess, tag: &str) -> Reference {
        Reference::parse(&format!("{}/{tag}", reg.addr())).unwrap()
    }

    /// The copy meets the referrers API on either side: a target with it lists what was
    /// copied by itself (no tag-schema index is written there), a target without it gets
    /// the index; reruns write nothing.
    #[tokio::test]
    async fn referrers_cross_between_registries_with_and_without_the_api() {
        for (source_api, target_api) in [(false, true), (true, false)] {
            let (a, b) = (InProcess::start().await, InProcess::start().await);
            a.set_referrers_api(source_api);
            b.set_referrers_api(target_api);
            let (index, children) = seed_index(&a);
            let sbom =
                Artifact::new("application/spdx+json", &children[1]).blob("application/spdx+json", b"{}".to_vec());
            let sbom = a.client().put_referrer(REPO, &sbom).await.unwrap();
            let sig = Artifact::new("application/vnd.example.sig", &sbom);
            let sig = a.client().put_referrer(REPO, &sig).await.unwrap();

            let report = copy(&a.client(), &reference(&a, "src/app:idx"), &b.client(), &reference(&b, "dst/app:v1"))
                .await
                .unwrap();
            assert_eq!(report.referrers.len(), 2, "{source_api} -> {target_api}: {:?}", report.referrers);
            let dst = b.client();
            assert_eq!(dst.referrers("dst/app", &children[1].digest).await.unwrap(), std::slice::from_ref(&sbom));
            assert_eq!(dst.referrers("dst/app", &sbom.digest).await.unwrap(), std::slice::from_ref(&sig));
            assert_eq!(dst.referrers("dst/app", &index).await.unwrap(), []);
            let tag_schema = b.tags("dst/app").iter().filter(|t| t.starts_with("sha256-")).count();
            assert_eq!(
                tag_schema,
                if target_api { 0 } else { 2 },
                "{source_api} -> {target_api}: {:?}",
                b.tags("dst/app")
            );
            assert_eq!(report.referrers_written, if target_api { 2 } else { 4 });

            let writes = |r: &InProcess| {
                r.requests().iter().filter(|l| l.method != http::Method::GET && l.method != http::Method::HEAD).count()
            };
            let before = writes(&b);
            let again = copy(&a.client(), &reference(&a, "src/app:idx"), &b.client(), &reference(&b, "dst/app:v1"))
                .await
                .unwrap();
            assert_eq!((again.changed, again.referrers_written, writes(&b)), (false, 0, before));
        }
    }
}
