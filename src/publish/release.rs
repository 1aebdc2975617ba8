//! `archfarm release VERSION`: promotes the canonical multi-arch tags of the current keys
//! to a version tag (and `latest`), in the configured registry or another one, without
//! rebuilding and without moving a tag over incomplete content.
//!
//! Three phases, each finished for every image before the next begins:
//! 1. check: the canonical index `<registry>/<ns>/<image>:<index key>` exists, lists
//!    exactly the planned platforms, and every child manifest is readable; a version tag
//!    already in the target must point at the same index (versions never move); what is
//!    attached to the index and its children (referrers, cosign tags) is read, and the
//!    target is checked for attachments the carry would overwrite;
//! 2. copy: blobs (skipped, mounted within one registry, streamed across registries),
//!    child manifests and attached manifests by digest, untagged;
//! 3. tag: every child and attached manifest HEADed in the target (not needed when the
//!    target is the very repository phase 1 read them from), then the attachments' tags
//!    (tag-schema indexes, cosign tags) of every image, then `:VERSION` (and `:latest`).
//!
//! A failure in phase 1 or 2 moves no tag at all. Running it again is a no-op.
//!
//! A release never rewrites the index: the version tag points at the very index the
//! canonical tag does (its digest, its signatures, its referrers). An index that says
//! which version it is (`org.opencontainers.image.version`, stitched from archfarm.yaml
//! `annotations:`) must say VERSION, or nothing is released.
//!
//! With a signing key, phase 4 signs every released index and child in the target
//! (cosign's `.sig` tags, `trust::cosign`), after the tags are written: a signature
//! vouches for content that is already complete there. A signature by the same key is
//! never written twice, so a rerun writes nothing.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::image::store::Store;
use crate::plan::ImagePlan;
use crate::publish::attached::{self, Attached, AttachedRecord, TargetPlan};
use crate::publish::copy::{self, PlatformDigest, SourceImage};
use crate::recipe::config::{Config, RegistryRef};
use crate::registry::Registry;
use crate::support::error::{Error, Result};
use crate::trust::attestation;
use crate::trust::cosign::{self, Signed};
use crate::trust::keys::SigningKey;

/// How many images are checked and copied at once.
pub const IMAGE_CONCURRENCY: usize = 32;

/// The annotation an index that says its version carries.
pub const VERSION_ANNOTATION: &str = "org.opencontainers.image.version";

#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    pub version: String,
    /// Where to release to (default: the configured registry).
    pub to: Option<RegistryRef>,
    pub latest: bool,
    pub dry_run: bool,
    /// Sign what was released with this key.
    pub sign: Option<Arc<SigningKey>>,
}

/// One image's release record.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseRecord {
    pub image: String,
    pub version: String,
    /// The canonical tag it was promoted from.
    pub source: String,
    /// The version tag in the target.
    pub tag: String,
    /// The index digest (the same in source and target).
    pub digest: String,
    pub platforms: Vec<PlatformDigest>,
    /// Every tag that points at it in the target (`VERSION`, and `latest` with --latest).
    pub tags: Vec<String>,
    /// `released`, `unchanged` (already released), or `dry-run`: what became of the tags.
    pub action: String,
    /// What is attached to the index and its children (referrers and cosign tags, and
    /// theirs), which the target has once the release is done.
    pub referrers: Vec<AttachedRecord>,
    /// Attached manifests and their tags this run wrote in the target (a version
    /// released before its signatures were made gets them on a rerun).
    pub referrers_written: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseReport {
    pub version: String,
    /// The target `host/namespace`.
    pub registry: String,
    pub dry_run: bool,
    pub images: Vec<ReleaseRecord>,
    /// With a signing key: how many signatures were written (0 when every one was there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures_written: Option<usize>,
}

impl ReleaseReport {
    /// True when nothing was (or would be) written.
    pub fn unchanged(&self) -> bool {
        self.images.iter().all(|r| r.action == "unchanged" && r.referrers_written == 0)
    }
}

struct Checked {
    plan: ImagePlan,
    image: SourceImage,
    source: String,
    /// The target tags that do not point at the index yet.
    missing: Vec<String>,
    attached: Attached,
    /// What the attachments need in the target; `None` when the target is the source.
    target_plan: Option<TargetPlan>,
}

/// Releases `images` as `opts` says; signature blobs pass through `store`.
pub async fn release(
    config: &Config,
    store: &Store,
    images: &[ImagePlan],
    opts: &ReleaseOptions,
) -> Result<ReleaseReport> {
    crate::registry::check_reference(&opts.version)
        .map_err(|e| Error::usage(format!("release VERSION: {}", e.message())))?;
    if opts.version.starts_with("sha256:") {
        return Err(Error::usage("release VERSION must be a tag such as v1.2.3, not a digest"));
    }
    if images.is_empty() {
        return Err(Error::usage("nothing to release: the plan has no images"));
    }
    for plan in images {
        if let Some(said) = plan.annotations.get(VERSION_ANNOTATION).filter(|v| **v != opts.version) {
            return Err(Error::usage(format!(
                "{}: its canonical index says {VERSION_ANNOTATION}={said}, not {}; a release never rewrites the \
                 index, so stitch it with the version it is released as (set what {} reads its annotations from), \
                 or release it as {said} (nothing was released)",
                plan.name, opts.version, config.source
            )));
        }
    }
    let target = opts.to.clone().unwrap_or_else(|| config.registry.clone());
    let src = Registry::new(&config.registry)?;
    let dst = if target.host == config.registry.host { src.clone() } else { Registry::new(&target)? };
    let mut tags = vec![opts.version.clone()];
    if opts.latest && opts.version != "latest" {
        tags.push("latest".to_string());
    }
    let same_place = target.host == config.registry.host && target.namespace == config.registry.namespace;

    // 1. Check every image before anything is written.
    let checked: Vec<Checked> = futures::stream::iter(images.iter().map(|plan| {
        let (src, dst, target, tags) = (&src, &dst, &target, &tags);
        async move {
            let repo = config.registry.repository(&plan.name);
            let source = config.registry.reference(&plan.name, &plan.index_key);
            let image = copy::read_image(src, &repo, &plan.index_key).await.map_err(|e| {
                Error::failure(format!(
                    "{}: checking the canonical tag {source}: {}; if the current keys were never built and \
                     stitched, run `archfarm build --push {}` first (nothing was released)",
                    plan.name,
                    e.message(),
                    plan.name
                ))
            })?;
            let mut have: Vec<String> = image.children.iter().map(|(p, _, _)| p.clone()).collect();
            let mut want: Vec<String> = plan.platforms.iter().map(|(p, _)| p.to_string()).collect();
            have.sort();
            want.sort();
            if !image.is_index() || have != want {
                return Err(Error::failure(format!(
                    "{}: {source} lists [{}] but the plan wants [{}]; run `archfarm build --push {}` (nothing was \
                     released)",
                    plan.name,
                    have.join(", "),
                    want.join(", "),
                    plan.name
                )));
            }
            let dst_repo = target.repository(&plan.name);
            let mut missing = Vec::new();
            let heads = futures::future::try_join_all(tags.iter().map(|t| dst.manifest_head(&dst_repo, t))).await?;
            for (tag, head) in tags.iter().zip(heads) {
                match head {
                    Some(d) if d.digest == image.desc.digest => {}
                    Some(d) if tag == &opts.version => {
                        return Err(Error::failure(format!(
                            "{}: {} already points at {}, not at {} ({source}); a released version never moves: \
                             release a new version (nothing was released)",
                            plan.name,
                            target.reference(&plan.name, tag),
                            d.digest,
                            image.desc.digest
                        )));
                    }
                    _ => missing.push(tag.clone()),
                }
            }
            let attached = attached::read(src, &repo, &image.desc, &image.manifests())
                .await
                .map_err(|e| e.context(format!("{} (nothing was released)", plan.name)))?;
            let target_plan = match same_place {
                true => None,
                false => Some(
                    attached::check_target(dst, &dst_repo, &image.desc.digest, &attached)
                        .await
                        .map_err(|e| e.context(format!("{} (nothing was released)", plan.name)))?,
                ),
            };
            Ok(Checked { plan: plan.clone(), image, source, missing, attached, target_plan })
        }
    }))
    .buffered(IMAGE_CONCURRENCY)
    .try_collect()
    .await?;

    // 2. Copy the content of every image that needs it, and everything attached, untagged.
    let carries = |c: &Checked| c.target_plan.is_some() && !c.attached.is_empty();
    let mut copied = vec![0usize; checked.len()];
    if !opts.dry_run {
        copied = futures::stream::iter(checked.iter().map(|c| {
            let (src, dst, target) = (&src, &dst, &target);
            async move {
                let repo = config.registry.repository(&c.plan.name);
                let dst_repo = target.repository(&c.plan.name);
                let what = |e: Error| e.context(format!("{}: copying {} (no tag was moved)", c.plan.name, c.source));
                if !c.missing.is_empty() {
                    copy::copy_content(src, &repo, &c.image, dst, &dst_repo).await.map_err(what)?;
                }
                match carries(c) {
                    true => c.attached.copy(src, &repo, dst, &dst_repo).await.map(|(_, n)| n).map_err(what),
                    false => Ok(0),
                }
            }
        }))
        .buffered(IMAGE_CONCURRENCY)
        .try_collect()
        .await?;
    }

    // 3. Every child and attached manifest of every image HEADed in the target (unless the
    //    target is the very repository phase 1 read them from), then the attachments'
    //    tags, then the version tags.
    if !opts.dry_run && !same_place {
        futures::stream::iter(checked.iter().map(|c| {
            let (dst, target) = (&dst, &target);
            async move {
                let dst_repo = target.repository(&c.plan.name);
                let what = |e: Error| e.context(format!("{} (no tag was moved)", c.plan.name));
                if !c.missing.is_empty() {
                    copy::verify_present(dst, &dst_repo, &c.image).await.map_err(what)?;
                }
                c.attached.verify_present(dst, &dst_repo).await.map_err(what)
            }
        }))
        .buffer_unordered(IMAGE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    }
    let mut tagged = vec![0usize; checked.len()];
    if !opts.dry_run {
        tagged = futures::stream::iter(checked.iter().map(|c| {
            let (dst, target) = (&dst, &target);
            async move {
                match &c.target_plan {
                    Some(plan) if carries(c) => c
                        .attached
                        .tag(dst, &target.repository(&c.plan.name), plan)
                        .await
                        .map_err(|e| e.context(format!("{} (no version tag was moved)", c.plan.name))),
                    _ => Ok(0),
                }
            }
        }))
        .buffered(IMAGE_CONCURRENCY)
        .try_collect()
        .await?;
    }
    let records: Vec<ReleaseRecord> =
        futures::stream::iter(checked.iter().zip(copied.iter().zip(&tagged)).map(|(c, (copied, tagged))| {
            let (dst, target, tags) = (&dst, &target, &tags);
            async move {
                let action = if c.missing.is_empty() {
                    "unchanged"
                } else if opts.dry_run {
                    "dry-run"
                } else {
                    copy::write_tags(dst, &target.repository(&c.plan.name), &c.image, &c.missing)
                        .await
                        .map_err(|e| e.context(&c.plan.name))?;
                    "released"
                };
                Ok::<_, Error>(ReleaseRecord {
                    image: c.plan.name.clone(),
                    version: opts.version.clone(),
                    source: c.source.clone(),
                    tag: target.reference(&c.plan.name, &opts.version),
                    digest: c.image.desc.digest.clone(),
                    platforms: c.image.platforms(),
                    tags: tags.iter().map(|t| target.reference(&c.plan.name, t)).collect(),
                    action: action.to_string(),
                    referrers: c.attached.records.clone(),
                    referrers_written: copied + tagged,
                })
            }
        }))
        .buffered(IMAGE_CONCURRENCY)
        .try_collect()
        .await?;

    // 4. Signatures, over what the tags now point at.
    let signatures_written = match (&opts.sign, opts.dry_run) {
        (Some(key), false) => {
            let written: Vec<usize> = futures::stream::iter(checked.iter().map(|c| {
                let (dst, target) = (&dst, &target);
                async move {
                    let mut subjects = vec![c.image.desc.digest.clone()];
                    subjects.extend(c.image.children.iter().map(|(_, d, _)| d.digest.clone()));
                    let repo = target.repository(&c.plan.name);
                    let unsigned = |e: Error| e.context(format!("{}: released, but not signed", c.plan.name));
                    let done = cosign::sign_all(dst, store, &repo, &subjects, key).await.map_err(unsigned)?;
                    // The platforms' attestations (unsigned from `build --push`) get an
                    // envelope signed by the key, once per key.
                    let mut attested = 0;
                    for (_, child, _) in &c.image.children {
                        attested += attestation::countersign(dst, store, &repo, child, key).await.map_err(unsigned)?;
                    }
                    Ok::<_, Error>(done.iter().filter(|s| **s != Signed::Present).count() + attested)
                }
            }))
            .buffer_unordered(IMAGE_CONCURRENCY)
            .try_collect()
            .await?;
            Some(written.iter().sum())
        }
        _ => None,
    };
    Ok(ReleaseReport {
        version: opts.version.clone(),
        registry: format!("{}/{}", target.host, target.namespace).trim_end_matches('/').to_string(),
        dry_run: opts.dry_run,
        images: records,
        signatures_written,
    })
}
