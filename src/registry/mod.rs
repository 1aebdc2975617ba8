//! A client for one OCI distribution (Docker Registry HTTP API v2) host: the memo lookup
//! (`manifest_head`), the publisher (`push_image`), the stitcher (`put_index`) and the
//! fetcher that brings an image from the registry into the local store (`fetch_image`).
//!
//! Rules this module keeps:
//! - A registry answer other than "found" or "not found" (401/403, 5xx, a timeout, a refused
//!   connection) is an error, never a miss: a published tag is never silently rebuilt and
//!   overwritten because the registry hiccupped.
//! - A multi-arch tag is written only after every child manifest is in the repository.
//! - Blobs are streamed (bounded memory) and verified against their digests both ways.
//! - Small requests have a total deadline; blob transfers have an idle deadline instead, so a
//!   large but progressing upload or download is never cut off.
//! - Credentials come from the user's Docker config ([`crate::registry::auth`]): basic auth or the
//!   bearer-token challenge flow, tokens cached per scope and renewed on expiry or on a new
//!   401. No message, log line or report carries a password or token.
//! - Faults are retried ([`crate::support::retry`]): resets, timeouts, 5xx and 429 (honouring
//!   `Retry-After`), a bounded number of attempts, then an error naming the registry and
//!   the operation. Blob uploads restart from a new session, or resume a chunked upload
//!   where the registry still knows its offset.
//! - Blobs the repository has are skipped (HEAD); blobs another repository of the same
//!   registry has are mounted (`?mount=&from=`), with a fallback to uploading.
//!
//! Observed behaviour of docker-registry 2.8 (Debian's distribution v2), which shaped this:
//! - It answers **404 MANIFEST_UNKNOWN for a manifest that exists** when the request's
//!   `Accept` does not list its type ("OCI manifest found, but accept header does not support
//!   OCI manifests"; the same for OCI indexes; a HEAD has no body to tell the two apart). A
//!   narrow `Accept` would turn a published tag into a "miss" and trigger the very rebuild
//!   and overwrite the memo must prevent, so every manifest request sends all four types.
//! - The upload `Location` is absolute and already carries a `_state` query; the digest is
//!   appended as another query parameter.
//! - It refuses (400 MANIFEST_BLOB_UNKNOWN) an index whose children are not in the
//!   repository; `put_index` checks first anyway, to name the missing platforms and to not
//!   depend on that.

pub mod auth;
#[cfg(test)]
mod client_tests;
#[cfg(test)]
pub mod in_process;
pub mod referrers;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_spec::image::{Arch, DescriptorBuilder, Digest, ImageIndexBuilder, MediaType, Os, PlatformBuilder};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::image::oci::{digest_hex, digest_of, Descriptor, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::image::oci::{IndexChild, IndexDoc, ManifestDoc};
use crate::image::platform::Platform;
use crate::image::reference::{check_repository, check_tag};
use crate::image::store::{Outgoing, Store, StoredImage};
use crate::recipe::config::RegistryRef;
use crate::registry::auth::{scopes, Authenticator, Credential};
use crate::support::error::{Error, Result};

/// How long establishing a TCP (and TLS) connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Blobs larger than this are uploaded in chunks of this size (PATCH), so a fault costs
/// one chunk at most where the registry can resume; smaller ones in one streamed PUT.
/// [`crate::support::env::REGISTRY_CHUNK_SIZE`] (128 MiB by default).
fn chunk_size() -> u64 {
    crate::support::env::REGISTRY_CHUNK_SIZE.get()
}
/// How many blobs are transferred at once per image.
pub const BLOB_CONCURRENCY: usize = 4;
/// Manifests larger than this are refused (they are read into memory).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Every manifest type archfarm reads, for `Accept`.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
/// A registry with the referrers API names the subject of a manifest it took (OCI 1.1).
const OCI_SUBJECT: &str = "oci-subject";
/// The loopback registry `ci/services.sh` starts, where the embedded default
/// configuration publishes: only a connection refused there gets advice about it.
const BUNDLED_REGISTRY: &str = "127.0.0.1:5000";

/// What a push transferred and what it found already there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushStats {
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
    pub blobs_skipped: usize,
    /// Blobs mounted from another repository of the same registry (no bytes sent).
    pub blobs_mounted: usize,
}

impl PushStats {
    /// Adds another transfer's counts to these.
    pub fn merge(&mut self, o: PushStats) {
        self.blobs_uploaded += o.blobs_uploaded;
        self.bytes_uploaded += o.bytes_uploaded;
        self.blobs_skipped += o.blobs_skipped;
        self.blobs_mounted += o.blobs_mounted;
    }

    pub fn add(&mut self, o: BlobOutcome) {
        match o {
            BlobOutcome::Present => self.blobs_skipped += 1,
            BlobOutcome::Mounted => self.blobs_mounted += 1,
            BlobOutcome::Uploaded(n) => {
                self.blobs_uploaded += 1;
                self.bytes_uploaded += n;
            }
        }
    }
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The repository had it already.
    Present,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded (this many bytes).
    Uploaded(u64),
}

/// Where an upload's bytes come from.
enum Source<'a> {
    /// The store, the blob hashed on its way out (across every attempt).
    Store(&'a Store, Arc<Outgoing>),
    /// Another repository, possibly on another registry: streamed through, verified.
    Remote(&'a Registry, &'a str),
    /// Bytes in memory (an artifact's small documents), checked against the digest first.
    Memory(&'a Bytes),
}

/// A failed attempt of a multi-request operation, and whether another may help.
struct Attempt {
    error: Error,
    transient: bool,
}

impl From<Error> for Attempt {
    fn from(error: Error) -> Self {
        Attempt { error, transient: false }
    }
}

/// The request builder of one try; called again for every retry.
type MakeRequest<'a> = dyn Fn() -> Result<reqwest::RequestBuilder> + Send + Sync + 'a;

/// What a fetch transferred and what the store already had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    pub blobs_downloaded: usize,
    pub bytes_downloaded: u64,
    pub blobs_present: usize,
}

/// An async client for one registry host. Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Registry {
    client: reqwest::Client,
    /// `http://host` or `https://host`.
    base: Url,
    host: String,
    auth: Arc<Authenticator>,
}

/// The platform fields of an image config.
#[derive(Deserialize)]
struct ConfigPlatform {
    architecture: Option<String>,
    os: Option<String>,
    variant: Option<String>,
}

impl Registry {
    /// A client for `r.host`: `https://` with verified TLS, or plain `http://` when the
    /// registry is insecure (loopback or listed in `insecure_registries`).
    pub fn new(r: &RegistryRef) -> Result<Registry> {
        let scheme = if r.insecure { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{}/", r.host))
            .ok()
            .filter(|u| u.path() == "/" && u.query().is_none() && u.username().is_empty() && u.password().is_none())
            .ok_or_else(|| {
                Error::usage(format!("invalid registry host '{}': expected host[:port], e.g. 127.0.0.1:5000", r.host))
            })?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("archfarm/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(Duration::from_secs(30))
            .https_only(!r.insecure)
            .build()
            .map_err(|e| Error::failure(format!("registry {}: cannot create HTTP client: {}", r.host, chain(&e))))?;
        Ok(Registry { client, base, host: r.host.clone(), auth: Arc::new(Authenticator::new(&r.host)) })
    }

    /// A client using exactly `credential` (or none), not the Docker config: for `login`,
    /// which checks credentials before storing them.
    pub fn with_credential(r: &RegistryRef, credential: Option<Credential>) -> Result<Registry> {
        let mut reg = Registry::new(r)?;
        reg.auth = Arc::new(Authenticator::with_credential(&r.host, credential));
        Ok(reg)
    }

    /// The authentication state (token counts for tests and stats).
    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// True when both clients talk to the same registry (blobs can be mounted between
    /// their repositories).
    pub fn same_registry(&self, other: &Registry) -> bool {
        self.base == other.base
    }

    /// The `host[:port]` this client talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Checks that the registry answers the v2 API (`GET /v2/`).
    pub async fn check(&self) -> Result<()> {
        {
            let url = self.url("/v2/")?;
            let t = crate::support::retry::timeout();
            let resp = self.send("GET /v2/", &[], &|| Ok(self.client.get(url.clone()).timeout(t))).await?;
            match resp.status() {
                StatusCode::OK => Ok(()),
                s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Err(self.status_error("GET /v2/", s, None)),
                s => Err(Error::failure(format!(
                    "registry {} does not speak the registry v2 API: GET {url} answered HTTP {s}",
                    self.host
                ))),
            }
        }
    }

    /// Looks up `repo:reference` without downloading it. `Ok(None)` only for a clear
    /// "not found" (404); every other failure is an error.
    pub async fn manifest_head(&self, repo: &str, reference: &str) -> Result<Option<Descriptor>> {
        check_repo(repo)?;
        check_reference(reference)?;
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let what = format!("HEAD manifest {repo}:{reference}");
        let t = crate::support::retry::timeout();
        let make = || Ok(self.client.head(url.clone()).header(ACCEPT, MANIFEST_ACCEPT).timeout(t));
        let resp = self.send(&what, &scopes(repo, false, None), &make).await.map_err(not_a_miss)?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status != StatusCode::OK {
            return Err(not_a_miss(self.status_error(&what, status, None)));
        }
        let headers = resp.headers();
        let media_type = header_str(headers, CONTENT_TYPE.as_str()).map(strip_params);
        let digest = header_str(headers, DOCKER_CONTENT_DIGEST);
        let size = header_str(headers, CONTENT_LENGTH.as_str()).and_then(|s| s.parse::<u64>().ok());
        match (media_type, digest, size) {
            (Some(media_type), Some(digest), Some(size))
                if digest_hex(&digest).is_ok() && is_manifest_type(&media_type) =>
            {
                if reference.starts_with("sha256:") && digest != reference {
                    return Err(self.digest_error(&what, reference, &digest));
                }
                Ok(Some(Descriptor::new(media_type, digest, size)))
            }
            // Not enough in the headers to describe it: fetch it and hash it ourselves.
            _ => self.get_manifest(repo, reference).await.map(|(d, _)| Some(d)).map_err(not_a_miss),
        }
    }

    /// Every tag of `repo` (the tags list API, following `Link` pages): one request where
    /// per-tag HEADs would be many. `Ok(None)` when the registry does not know the
    /// repository (404); every other failure is an error.
    pub async fn tags(&self, repo: &str) -> Result<Option<BTreeSet<String>>> {
        #[derive(Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        check_repo(repo)?;
        let what = format!("GET tags of {repo}");
        let mut tags = BTreeSet::new();
        let mut path = format!("/v2/{repo}/tags/list?n=1000");
        let t = crate::support::retry::timeout();
        for _page in 0..10_000 {
            let url = self.url(&path)?;
            let make = || Ok(self.client.get(url.clone()).timeout(t));
            let resp = self.send(&what, &scopes(repo, false, None), &make).await.map_err(not_a_miss)?;
            match resp.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND if tags.is_empty() => return Ok(None),
                s => return Err(not_a_miss(self.status_error(&what, s, None))),
            }
            let next = next_page(resp.headers());
            let body = resp.bytes().await.map_err(|e| self.transport_error(&what, &e, 1))?;
            let list: TagList = serde_json::from_slice(&body)
                .map_err(|e| Error::failure(format!("registry {}: {what}: not a tag list: {e}", self.host)))?;
            tags.extend(list.tags.unwrap_or_default());
            match next {
                Some(n) => path = n,
                None => return Ok(Some(tags)),
            }
        }
        Err(Error::failure(format!("registry {}: {what}: more than 10000 pages of tags", self.host)))
    }

    /// The registry-push sink: pushes `image` from `store` as `repo:tag`; blobs already in
    /// the repository are skipped. Returns the manifest descriptor.
    pub async fn push_image(&self, store: &Store, repo: &str, tag: &str, image: &StoredImage) -> Result<Descriptor> {
        Ok(self.push_image_with_stats(store, repo, tag, image).await?.0)
    }

    /// [`Registry::push_image`], also saying what was uploaded and what was skipped.
    pub async fn push_image_with_stats(
        &self,
        store: &Store,
        repo: &str,
        tag: &str,
        image: &StoredImage,
    ) -> Result<(Descriptor, PushStats)> {
        let manifest = &image.manifest;
        check_repo(repo)?;
        check_reference(tag)?;
        if !is_image_manifest_type(&manifest.media_type) {
            return Err(Error::failure(format!(
                "cannot push {repo}:{tag}: {} has media type {}, not an image manifest",
                manifest.digest, manifest.media_type
            )));
        }
        let bytes = store.read_blob(&manifest.digest)?;
        let doc: ManifestDoc = serde_json::from_slice(&bytes).map_err(|e| {
            Error::failure(format!(
                "cannot push {repo}:{tag}: manifest {} in the store is invalid: {e}",
                manifest.digest
            ))
        })?;
        let mut seen = BTreeSet::new();
        let blobs: Vec<Descriptor> =
            std::iter::once(doc.config).chain(doc.layers).filter(|d| seen.insert(d.digest.clone())).collect();
        let results: Vec<BlobOutcome> =
            futures::stream::iter(collect_futures(blobs.iter().map(|b| self.push_blob(store, repo, b, None))))
                .buffer_unordered(BLOB_CONCURRENCY)
                .try_collect()
                .await?;
        let mut stats = PushStats::default();
        for r in results {
            stats.add(r);
        }
        let desc = self.put_manifest(repo, tag, &manifest.media_type, Bytes::from(bytes)).await?;
        if desc.digest != manifest.digest {
            return Err(self.digest_error(&format!("PUT manifest {repo}:{tag}"), &manifest.digest, &desc.digest));
        }
        tracing::info!(
            registry = %self.host, repo, tag,
            blobs_uploaded = stats.blobs_uploaded, bytes_uploaded = stats.bytes_uploaded,
            blobs_skipped = stats.blobs_skipped, "pushed image"
        );
        Ok((desc, stats))
    }

    /// Writes the multi-arch tag `repo:tag` over `children` (per-platform manifests already
    /// in `repo`), with `annotations` (none: no `annotations` field). If any child is
    /// missing, fails naming its platforms and writes nothing. The result is a Docker
    /// manifest list when every child is a Docker v2 manifest and there are no
    /// annotations (a manifest list has no field for them), an OCI image index otherwise;
    /// children are sorted by platform and annotations by key, so the same children and
    /// annotations always give the same bytes and digest.
    pub async fn put_index(
        &self,
        repo: &str,
        tag: &str,
        children: &[(Platform, Descriptor)],
        annotations: &BTreeMap<String, String>,
    ) -> Result<Descriptor> {
        check_repo(repo)?;
        check_reference(tag)?;
        let (media_type, bytes) =
            index_bytes(children, annotations).map_err(|e| e.context(format!("stitching {repo}:{tag}")))?;

        let missing: Vec<String> = self
            .missing_manifests(repo, children, |(_, d)| &d.digest)
            .await?
            .into_iter()
            .map(|(p, d)| format!("{p} ({})", d.digest))
            .collect();
        if !missing.is_empty() {
            return Err(Error::failure(format!(
                "not writing {}/{repo}:{tag}: the manifest for {} is not in the registry; build and push every \
                 platform first (nothing was written, so the tag never points at an incomplete image)",
                self.host,
                missing.join(", ")
            )));
        }
        self.put_manifest(repo, tag, &media_type, bytes).await
    }

    /// The items whose manifest (`digest(item)`) is not in `repo`, by a HEAD of each
    /// (concurrently), in their order.
    pub async fn missing_manifests<'a, T: Sync>(
        &self,
        repo: &str,
        items: &'a [T],
        digest: impl Fn(&T) -> &str,
    ) -> Result<Vec<&'a T>> {
        let found: Vec<Option<Descriptor>> =
            futures::stream::iter(collect_futures(items.iter().map(|i| self.manifest_head(repo, digest(i)))))
                .buffered(BLOB_CONCURRENCY)
                .try_collect()
                .await?;
        Ok(items.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(i, _)| i).collect())
    }

    /// [`Registry::put_index`] for a caller that has just found every child in `repo` with
    /// a HEAD of its own (the descriptors in `children` are those answers), so they are not
    /// asked for again. Never call it with descriptors that did not come from such a HEAD.
    pub async fn put_index_verified(
        &self,
        repo: &str,
        tag: &str,
        children: &[(Platform, Descriptor)],
        annotations: &BTreeMap<String, String>,
    ) -> Result<Descriptor> {
        check_repo(repo)?;
        check_reference(tag)?;
        let (media_type, bytes) =
            index_bytes(children, annotations).map_err(|e| e.context(format!("stitching {repo}:{tag}")))?;
        self.put_manifest(repo, tag, &media_type, bytes).await
    }

    /// Brings `repo:reference` for `platform` into `store`: selects the platform's child of
    /// an index, downloads the config and the layers the store lacks (verified), then stores
    /// the manifest. Returns the per-platform manifest descriptor.
    pub async fn fetch_image(
        &self,
        store: &Store,
        repo: &str,
        reference: &str,
        platform: &Platform,
    ) -> Result<Descriptor> {
        self.fetch_image_with_stats(store, repo, reference, platform).await.map(|(d, _)| d)
    }

    /// [`Registry::fetch_image`], also saying what was downloaded.
    pub async fn fetch_image_with_stats(
        &self,
        store: &Store,
        repo: &str,
        reference: &str,
        platform: &Platform,
    ) -> Result<(Descriptor, FetchStats)> {
        check_repo(repo)?;
        check_reference(reference)?;
        let name = format!("{}/{repo}:{reference}", self.host);
        let (mut desc, mut bytes) = self.get_manifest(repo, reference).await?;
        if is_index_type(&desc.media_type) {
            let index: IndexDoc = serde_json::from_slice(&bytes)
                .map_err(|e| Error::failure(format!("{name}: invalid index {}: {e}", desc.digest)))?;
            let child = select_child(&index, platform).map_err(|have| {
                Error::failure(format!("{name} has no image for {platform}; it has: {}", have.join(", ")))
            })?;
            let (cdesc, cbytes) = self.get_manifest(repo, &child.digest).await?;
            if cdesc.size != child.size || cdesc.media_type != child.media_type {
                return Err(Error::failure(format!(
                    "{name}: the {platform} manifest is {} ({} bytes), the index says {} ({} bytes)",
                    cdesc.media_type, cdesc.size, child.media_type, child.size
                )));
            }
            (desc, bytes) = (cdesc, cbytes);
        }
        if !is_image_manifest_type(&desc.media_type) {
            return Err(Error::failure(format!(
                "{name}: manifest {} has unsupported media type {}",
                desc.digest, desc.media_type
            )));
        }
        let doc: ManifestDoc = serde_json::from_slice(&bytes)
            .map_err(|e| Error::failure(format!("{name}: invalid manifest {}: {e}", desc.digest)))?;
        if let Some(mt) = &doc.media_type {
            if mt != &desc.media_type {
                return Err(Error::failure(format!(
                    "{name}: manifest {} says it is {mt} but the registry served it as {}",
                    desc.digest, desc.media_type
                )));
            }
        }

        let mut seen = BTreeSet::new();
        let blobs: Vec<Descriptor> =
            std::iter::once(doc.config.clone()).chain(doc.layers).filter(|d| seen.insert(d.digest.clone())).collect();
        let mut stats = FetchStats::default();
        let mut wanted = Vec::new();
        for b in blobs {
            digest_hex(&b.digest).map_err(|e| e.context(&name))?;
            if store.has_blob(&b.digest) {
                stats.blobs_present += 1;
            } else {
                wanted.push(b);
            }
        }
        let sizes: Vec<u64> =
            futures::stream::iter(collect_futures(wanted.iter().map(|b| self.fetch_blob(store, repo, b))))
                .buffer_unordered(BLOB_CONCURRENCY)
                .try_collect()
                .await?;
        stats.blobs_downloaded = sizes.len();
        stats.bytes_downloaded = sizes.iter().sum();

        // The image must really be for the platform asked for.
        let config: ConfigPlatform = serde_json::from_slice(&store.read_blob(&doc.config.digest)?)
            .map_err(|e| Error::failure(format!("{name}: invalid image config {}: {e}", doc.config.digest)))?;
        if let (Some(arch), Some(os)) = (&config.architecture, &config.os) {
            let have = Platform { os: os.clone(), architecture: arch.clone(), variant: config.variant.clone() };
            if !platform_matches(platform, &have) {
                return Err(Error::failure(format!("{name} is an image for {have}, not {platform}")));
            }
        }

        // The manifest last: a manifest in the store implies its blobs are there.
        let stored = store.put_blob(&desc.media_type, &bytes)?;
        debug_assert_eq!(stored.digest, desc.digest);
        Ok((desc, stats))
    }

    // ---- manifests ----

    /// GETs a manifest (any accepted type), verifying its digest. Bounded in size.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<(Descriptor, Bytes)> {
        self.find_manifest(repo, reference).await?.ok_or_else(|| {
            Error::failure(format!("{}/{repo}:{reference} does not exist (GET manifest answered HTTP 404)", self.host))
        })
    }

    /// [`Registry::get_manifest`], with `Ok(None)` for a clear "not found" (404).
    pub async fn find_manifest(&self, repo: &str, reference: &str) -> Result<Option<(Descriptor, Bytes)>> {
        check_repo(repo)?;
        check_reference(reference)?;
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let what = format!("GET manifest {repo}:{reference}");
        let t = crate::support::retry::timeout();
        let make = || Ok(self.client.get(url.clone()).header(ACCEPT, MANIFEST_ACCEPT).timeout(t));
        let mut resp = self.send(&what, &scopes(repo, false, None), &make).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status != StatusCode::OK {
            let body = resp.text().await.ok();
            return Err(self.status_error(&what, status, body.as_deref()));
        }
        let header_type = header_str(resp.headers(), CONTENT_TYPE.as_str()).map(strip_params);
        let header_digest = header_str(resp.headers(), DOCKER_CONTENT_DIGEST);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport_error(&what, &e, 1))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_MANIFEST_BYTES {
                return Err(Error::failure(format!(
                    "registry {}: {what}: manifest larger than {MAX_MANIFEST_BYTES} bytes; refusing it",
                    self.host
                )));
            }
        }
        let digest = digest_of(&body);
        if reference.starts_with("sha256:") && reference != digest {
            return Err(self.digest_error(&what, reference, &digest));
        }
        if let Some(h) = header_digest.filter(|h| h.starts_with("sha256:")) {
            if h != digest {
                return Err(self.digest_error(&what, &h, &digest));
            }
        }
        // Content-Type first; registries that send a generic type get the document's own.
        let media_type = match header_type.filter(|t| is_manifest_type(t)) {
            Some(t) => t,
            None => {
                #[derive(Deserialize)]
                struct Typed {
                    #[serde(rename = "mediaType")]
                    media_type: Option<String>,
                }
                serde_json::from_slice::<Typed>(&body).ok().and_then(|t| t.media_type).ok_or_else(|| {
                    Error::failure(format!(
                        "registry {}: {what}: cannot tell the manifest's media type (no usable Content-Type \
                         and no mediaType field)",
                        self.host
                    ))
                })?
            }
        };
        let size = body.len() as u64;
        Ok(Some((Descriptor::new(media_type, digest, size), Bytes::from(body))))
    }

    /// PUTs manifest bytes exactly as given under `reference` (a tag, or the digest of the
    /// bytes); checks the registry's digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Descriptor> {
        self.put_manifest_answer(repo, reference, media_type, bytes).await.map(|(d, _)| d)
    }

    /// [`Registry::put_manifest`], also giving the registry's `OCI-Subject` header: the
    /// subject digest a registry with the referrers API says it indexed the manifest under.
    pub async fn put_manifest_answer(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<(Descriptor, Option<String>)> {
        check_repo(repo)?;
        check_reference(reference)?;
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let what = format!("PUT manifest {repo}:{reference}");
        let digest = digest_of(&bytes);
        let size = bytes.len() as u64;
        let t = crate::support::retry::timeout();
        let make = || Ok(self.client.put(url.clone()).header(CONTENT_TYPE, media_type).body(bytes.clone()).timeout(t));
        let mut attempt = 1;
        let resp = loop {
            let resp = self.send(&what, &scopes(repo, true, None), &make).await?;
            let status = resp.status();
            if status == StatusCode::CREATED || status == StatusCode::OK {
                break resp;
            }
            let body = resp.text().await.ok();
            // docker-registry's filesystem driver rewrites a repository's blob link in place
            // (truncate, then write): while another pusher re-links a blob we both uploaded,
            // the manifest check can briefly find it unknown. Every blob was verified present
            // before this PUT, so that answer is transient: try again, a bounded number of times.
            let transient = status == StatusCode::BAD_REQUEST
                && body.as_deref().is_some_and(|b| b.contains("MANIFEST_BLOB_UNKNOWN"));
            if !transient || attempt >= crate::support::retry::attempts() {
                return Err(self.status_error(&what, status, body.as_deref()));
            }
            tracing::debug!(registry = %self.host, %what, attempt, "blob briefly unknown to the registry; retrying");
            tokio::time::sleep(crate::support::retry::backoff(attempt, None)).await;
            attempt += 1;
        };
        if let Some(theirs) = header_str(resp.headers(), DOCKER_CONTENT_DIGEST) {
            if theirs != digest {
                return Err(self.digest_error(&what, &digest, &theirs));
            }
        }
        let subject = header_str(resp.headers(), OCI_SUBJECT);
        Ok((Descriptor::new(media_type, digest, size), subject))
    }

    // ---- blobs ----

    /// Makes `blob` present in `repo` from the store: skipped if there, mounted from
    /// `mount_from` (same registry) if given and the registry agrees, else uploaded.
    pub async fn push_blob(
        &self,
        store: &Store,
        repo: &str,
        blob: &Descriptor,
        mount_from: Option<&str>,
    ) -> Result<BlobOutcome> {
        digest_hex(&blob.digest)?;
        let path = store.blob_path(&blob.digest)?;
        let len = std::fs::metadata(&path).map_err(|e| Error::io("reading size of blob", &path, e))?.len();
        if len != blob.size {
            return Err(
                store.corrupt(&blob.digest, &format!("it has {len} bytes where the manifest says {}", blob.size))
            );
        }
        let outgoing = Arc::new(Outgoing::new(blob));
        self.transfer_blob(Source::Store(store, outgoing), repo, blob, mount_from).await
    }

    /// Makes `blob` present in `repo` from `bytes` in memory: skipped if there, else
    /// uploaded. The bytes must be the blob's (checked before anything is sent).
    pub async fn push_bytes(&self, repo: &str, blob: &Descriptor, bytes: &Bytes) -> Result<BlobOutcome> {
        digest_hex(&blob.digest)?;
        if digest_of(bytes) != blob.digest || bytes.len() as u64 != blob.size {
            return Err(Error::failure(format!(
                "pushing {} to {}/{repo}: the bytes given are not that blob's ({} bytes, {})",
                blob.digest,
                self.host,
                bytes.len(),
                digest_of(bytes)
            )));
        }
        self.transfer_blob(Source::Memory(bytes), repo, blob, None).await
    }

    /// Makes `blob` present in `repo` with its bytes from `src_repo` on `src` (another
    /// registry, or this one): skipped if there, mounted when both are this registry,
    /// else streamed through (bounded memory, digest verified by both ends).
    pub async fn copy_blob(
        &self,
        src: &Registry,
        src_repo: &str,
        repo: &str,
        blob: &Descriptor,
    ) -> Result<BlobOutcome> {
        digest_hex(&blob.digest)?;
        check_repo(src_repo)?;
        let mount = (self.same_registry(src) && src_repo != repo).then_some(src_repo);
        self.transfer_blob(Source::Remote(src, src_repo), repo, blob, mount).await
    }

    async fn transfer_blob(
        &self,
        source: Source<'_>,
        repo: &str,
        blob: &Descriptor,
        mount_from: Option<&str>,
    ) -> Result<BlobOutcome> {
        check_repo(repo)?;
        let sc = scopes(repo, true, mount_from);
        if self.blob_exists(repo, &blob.digest, &sc).await? {
            return Ok(BlobOutcome::Present);
        }
        let attempts = crate::support::retry::attempts();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.upload_attempt(&source, repo, blob, mount_from, &sc).await {
                Ok(o) => return Ok(o),
                Err(a) if a.transient && attempt < attempts => {
                    tracing::debug!(registry = %self.host, repo, digest = %blob.digest, attempt,
                        "blob upload failed ({}), starting it again", a.error.message());
                    tokio::time::sleep(crate::support::retry::backoff(attempt, None)).await;
                }
                Err(a) if a.transient => {
                    return Err(Error::failure(format!("{} (gave up after {attempt} attempts)", a.error.message())))
                }
                Err(a) => return Err(a.error),
            }
        }
    }

    /// One upload session: POST (with a mount request if asked), then the bytes, either in
    /// one PUT or, for a large blob from the store, in PATCH chunks resumed where the
    /// registry still knows the offset.
    async fn upload_attempt(
        &self,
        source: &Source<'_>,
        repo: &str,
        blob: &Descriptor,
        mount_from: Option<&str>,
        sc: &[String],
    ) -> std::result::Result<BlobOutcome, Attempt> {
        let what = format!("POST blob upload {repo} ({})", blob.digest);
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        if let Some(from) = mount_from {
            url.query_pairs_mut().append_pair("mount", &blob.digest).append_pair("from", from);
        }
        let t = crate::support::retry::timeout();
        let resp = self.send(&what, sc, &|| Ok(self.client.post(url.clone()).timeout(t))).await?;
        let status = resp.status();
        if status == StatusCode::CREATED && mount_from.is_some() {
            let theirs = header_str(resp.headers(), DOCKER_CONTENT_DIGEST);
            if theirs.as_deref().is_some_and(|d| d != blob.digest) {
                return Err(self.digest_error(&what, &blob.digest, &theirs.unwrap_or_default()).into());
            }
            tracing::debug!(registry = %self.host, repo, digest = %blob.digest, from = mount_from, "mounted blob");
            return Ok(BlobOutcome::Mounted);
        }
        if status != StatusCode::ACCEPTED {
            let body = resp.text().await.ok();
            return Err(self.status_error(&what, status, body.as_deref()).into());
        }
        let location = header_str(resp.headers(), LOCATION.as_str())
            .ok_or_else(|| Error::failure(format!("registry {}: {what}: answer has no Location header", self.host)))?;
        let location = url.join(&location).map_err(|e| {
            Error::failure(format!("registry {}: {what}: invalid upload Location '{location}': {e}", self.host))
        })?;
        match source {
            Source::Store(store, out) => {
                let store = *store;
                let sent = if blob.size > chunk_size() {
                    self.upload_chunked(store, out, repo, blob, location, sc).await
                } else {
                    let digest = blob.digest.clone();
                    let make = move |progress: Arc<Mutex<Instant>>| -> Result<reqwest::Body> {
                        let file = store.open_blob(&digest)?;
                        let stream =
                            tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 64 << 10)
                                .inspect(move |_| *progress.lock().unwrap() = Instant::now());
                        Ok(reqwest::Body::wrap_stream(hashed_on_the_way(stream, Arc::clone(out), 0)))
                    };
                    self.finish_upload(repo, blob, location, sc, &make).await
                };
                // Whatever the registry said, a blob whose bytes were wrong is the store's fault.
                sent.map_err(|a| match out.verdict(store) {
                    Some(error) => Attempt { error, transient: false },
                    None => a,
                })
            }
            Source::Remote(src, src_repo) => {
                // The GET is retried on its own; a fault mid-stream restarts the session.
                let what_get = format!("GET blob {src_repo} ({})", blob.digest);
                let get_url = src.url(&format!("/v2/{src_repo}/blobs/{}", blob.digest))?;
                let resp = src
                    .send(&what_get, &scopes(src_repo, false, None), &|| Ok(src.client.get(get_url.clone())))
                    .await?;
                if resp.status() != StatusCode::OK {
                    let s = resp.status();
                    return Err(src.status_error(&what_get, s, None).into());
                }
                let cell = Mutex::new(Some(resp));
                let make = move |progress: Arc<Mutex<Instant>>| -> Result<reqwest::Body> {
                    let resp =
                        cell.lock().unwrap().take().ok_or_else(|| Error::failure("the source stream was used"))?;
                    let stream = resp.bytes_stream().inspect(move |_| *progress.lock().unwrap() = Instant::now());
                    Ok(reqwest::Body::wrap_stream(stream))
                };
                self.finish_upload(repo, blob, location, sc, &make).await
            }
            Source::Memory(bytes) => {
                let make = move |progress: Arc<Mutex<Instant>>| -> Result<reqwest::Body> {
                    let chunks: Vec<std::io::Result<Bytes>> = (0..bytes.len())
                        .step_by(64 << 10)
                        .map(|at| Ok(bytes.slice(at..bytes.len().min(at + (64 << 10)))))
                        .collect();
                    let stream =
                        futures::stream::iter(chunks).inspect(move |_| *progress.lock().unwrap() = Instant::now());
                    Ok(reqwest::Body::wrap_stream(stream))
                };
                self.finish_upload(repo, blob, location, sc, &make).await
            }
        }
    }

    /// The closing PUT with the whole blob as its body (not retried by itself: a body cut
    /// short leaves the session unusable, so the caller starts a new one).
    async fn finish_upload(
        &self,
        repo: &str,
        blob: &Descriptor,
        location: Url,
        sc: &[String],
        body: &(dyn Fn(Arc<Mutex<Instant>>) -> Result<reqwest::Body> + Send + Sync),
    ) -> std::result::Result<BlobOutcome, Attempt> {
        let what = format!("PUT blob {repo} ({})", blob.digest);
        let put_url = with_digest(&location, &blob.digest);
        let progress = Arc::new(Mutex::new(Instant::now()));
        let make = || {
            Ok(self
                .client
                .put(put_url.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, blob.size)
                .body(body(progress.clone())?))
        };
        let resp = self.send_once(&what, sc, &make, &progress).await?;
        let status = resp.status();
        if status != StatusCode::CREATED {
            return Err(self.session_fault(&what, resp).await);
        }
        if let Some(theirs) = header_str(resp.headers(), DOCKER_CONTENT_DIGEST) {
            if theirs != blob.digest {
                return Err(self.digest_error(&what, &blob.digest, &theirs).into());
            }
        }
        Ok(BlobOutcome::Uploaded(blob.size))
    }

    /// A chunked upload: PATCH each chunk with its Content-Range; after a fault, ask the
    /// session where it stands (GET, `Range`) and go on from there, or give the fault back
    /// to the caller (a new session) when the registry lost it.
    async fn upload_chunked(
        &self,
        store: &Store,
        out: &Arc<Outgoing>,
        repo: &str,
        blob: &Descriptor,
        mut location: Url,
        sc: &[String],
    ) -> std::result::Result<BlobOutcome, Attempt> {
        let what = format!("PATCH blob {repo} ({})", blob.digest);
        let chunk = chunk_size();
        let mut offset = 0u64;
        let mut resumes = 0;
        while offset < blob.size {
            let end = (offset + chunk).min(blob.size);
            let progress = Arc::new(Mutex::new(Instant::now()));
            let make = || {
                use std::io::{Seek, SeekFrom};
                let mut file = store.open_blob(&blob.digest)?;
                file.seek(SeekFrom::Start(offset)).map_err(|e| Error::failure(format!("seeking in blob: {e}")))?;
                let part = tokio::fs::File::from_std(file);
                let reader = tokio::io::AsyncReadExt::take(part, end - offset);
                let tick = progress.clone();
                let stream = tokio_util::io::ReaderStream::with_capacity(reader, 64 << 10)
                    .inspect(move |_| *tick.lock().unwrap() = Instant::now());
                Ok(self
                    .client
                    .patch(location.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, end - offset)
                    .header("Content-Range", format!("{offset}-{}", end - 1))
                    .body(reqwest::Body::wrap_stream(hashed_on_the_way(stream, Arc::clone(out), offset))))
            };
            let sent = self.send_once(&what, sc, &make, &progress).await;
            let fault = match sent {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    let next = header_str(resp.headers(), LOCATION.as_str())
                        .and_then(|l| location.join(&l).ok())
                        .ok_or_else(|| Error::failure(format!("registry {}: {what}: no Location", self.host)))?;
                    location = next;
                    offset = end;
                    continue;
                }
                Ok(resp) => self.session_fault(&what, resp).await,
                Err(a) => a,
            };
            if !fault.transient || resumes >= crate::support::retry::attempts() || out.wrong().is_some() {
                return Err(fault);
            }
            resumes += 1;
            // Where does the session stand? Only a clear answer resumes it.
            match self.upload_status(&location, sc).await {
                Some((next, have)) if have <= blob.size => {
                    tracing::debug!(registry = %self.host, repo, digest = %blob.digest, offset = have,
                        "resuming chunked upload ({})", fault.error.message());
                    location = next;
                    offset = have;
                    tokio::time::sleep(crate::support::retry::backoff(resumes, None)).await;
                }
                _ => return Err(fault),
            }
        }
        // Every byte went out: the closing PUT only once they are the blob's.
        out.check(store).map_err(|error| Attempt { error, transient: false })?;
        let what = format!("PUT blob {repo} ({})", blob.digest);
        let put_url = with_digest(&location, &blob.digest);
        let t = crate::support::retry::timeout();
        let resp = self
            .send_once(
                &what,
                sc,
                &|| Ok(self.client.put(put_url.clone()).header(CONTENT_LENGTH, 0).timeout(t)),
                &Arc::new(Mutex::new(Instant::now())),
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.session_fault(&what, resp).await);
        }
        Ok(BlobOutcome::Uploaded(blob.size))
    }

    /// A failed answer to a request of an upload session. Besides 5xx and 429, a 404 or 416
    /// means the registry lost the session or is out of step with it (distribution cancels
    /// a session whose `_state` offset no longer matches what it holds, as when a cut or
    /// stalled chunk lands after the client gave up on it; a load balancer may send a
    /// session to a node that never saw it): a new session may succeed, so the caller
    /// starts one, within the attempts.
    async fn session_fault(&self, what: &str, resp: reqwest::Response) -> Attempt {
        let status = resp.status();
        let body = resp.text().await.ok();
        let lost = matches!(status, StatusCode::NOT_FOUND | StatusCode::RANGE_NOT_SATISFIABLE);
        let transient = lost || crate::support::retry::retryable_status(status);
        Attempt { error: self.status_error(what, status, body.as_deref()), transient }
    }

    /// The session's next Location and how many bytes it holds (`Range: 0-N` is N+1
    /// bytes); `None` when the registry does not know the session or the answer is unclear
    /// (`0-0` may mean 0 or 1 byte).
    async fn upload_status(&self, location: &Url, sc: &[String]) -> Option<(Url, u64)> {
        let t = crate::support::retry::timeout();
        let resp =
            self.send("GET blob upload status", sc, &|| Ok(self.client.get(location.clone()).timeout(t))).await.ok()?;
        if resp.status() != StatusCode::NO_CONTENT {
            return None;
        }
        let range = header_str(resp.headers(), "range")?;
        let (start, end) = range.trim_start_matches("bytes=").split_once('-')?;
        let (start, end) = (start.parse::<u64>().ok()?, end.parse::<u64>().ok()?);
        if start != 0 || end == 0 {
            return None;
        }
        let next = header_str(resp.headers(), LOCATION.as_str())
            .and_then(|l| location.join(&l).ok())
            .unwrap_or(location.clone());
        Some((next, end + 1))
    }

    /// Whether `repo` has the blob (HEAD); `scopes` is the access the caller goes on with,
    /// so one token serves the whole transfer.
    pub async fn blob_exists(&self, repo: &str, digest: &str, scopes: &[String]) -> Result<bool> {
        let what = format!("HEAD blob {repo} ({digest})");
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let t = crate::support::retry::timeout();
        let resp = self.send(&what, scopes, &|| Ok(self.client.head(url.clone()).timeout(t))).await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.status_error(&what, s, None)),
        }
    }

    /// Downloads one blob into the store, verified; returns its size. A fault mid-stream
    /// starts the download again (bounded). Also how `trust` reads signature payloads.
    pub async fn fetch_blob(&self, store: &Store, repo: &str, blob: &Descriptor) -> Result<u64> {
        let attempts = crate::support::retry::attempts();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.fetch_blob_once(store, repo, blob).await {
                Ok(n) => return Ok(n),
                Err(a) if a.transient && attempt < attempts => {
                    tokio::time::sleep(crate::support::retry::backoff(attempt, None)).await;
                }
                Err(a) => return Err(a.error),
            }
        }
    }

    async fn fetch_blob_once(&self, store: &Store, repo: &str, blob: &Descriptor) -> std::result::Result<u64, Attempt> {
        let what = format!("GET blob {repo} ({})", blob.digest);
        let url = self.url(&format!("/v2/{repo}/blobs/{}", blob.digest))?;
        let progress = Arc::new(Mutex::new(Instant::now()));
        let mut resp =
            self.send_once(&what, &scopes(repo, false, None), &|| Ok(self.client.get(url.clone())), &progress).await?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            return Err(Attempt {
                error: self.status_error(&what, status, None),
                transient: crate::support::retry::retryable_status(status),
            });
        }
        // The file writes happen on a blocking thread, fed through a small bounded channel.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let writer = store.blob_writer()?;
        let media_type = blob.media_type.clone();
        let expected = blob.digest.clone();
        let root = store.root().to_path_buf();
        let write = tokio::task::spawn_blocking(move || -> Result<Descriptor> {
            use std::io::Write;
            let mut w = writer;
            while let Some(chunk) = rx.blocking_recv() {
                w.write_all(&chunk).map_err(|e| Error::io("writing blob to", &root, e))?;
            }
            w.commit(&media_type, Some(&expected))
        });
        let mut received: u64 = 0;
        let idle = crate::support::retry::timeout();
        let read: std::result::Result<(), Attempt> = async {
            loop {
                let chunk = match tokio::time::timeout(idle, resp.chunk()).await {
                    Err(_) => return Err(Attempt { error: self.idle_error(&what), transient: true }),
                    Ok(r) => r.map_err(|e| Attempt { error: self.transport_error(&what, &e, 1), transient: true })?,
                };
                let Some(chunk) = chunk else { return Ok(()) };
                received += chunk.len() as u64;
                if received > blob.size {
                    return Err(Error::failure(format!(
                        "registry {}: {what}: more than the {} bytes the manifest says",
                        self.host, blob.size
                    ))
                    .into());
                }
                if tx.send(chunk).await.is_err() {
                    return Ok(()); // the writer failed; its error is reported below
                }
            }
        }
        .await;
        drop(tx);
        let written = write.await.map_err(|e| Error::failure(format!("blob writer task failed: {e}")))?;
        read?;
        let desc = written.map_err(|e| e.context(format!("registry {}: {what}", self.host)))?;
        if desc.size != blob.size {
            // Unreachable with a matching sha256, but a cheap belt and braces.
            return Err(
                Error::failure(format!("registry {}: {what}: size {} != {}", self.host, desc.size, blob.size)).into()
            );
        }
        Ok(desc.size)
    }

    // ---- plumbing ----

    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .map_err(|e| Error::usage(format!("registry {}: cannot form a URL for '{path}': {e}", self.host)))
    }

    /// Sends a request built by `make` with authentication, retrying transport faults,
    /// 5xx and 429 with backoff (bounded), and meeting one 401 challenge per try (a
    /// token for `scopes`, or basic credentials). The response may still be an error
    /// status: the caller decides what it means.
    async fn send(&self, what: &str, scopes: &[String], make: &MakeRequest<'_>) -> Result<reqwest::Response> {
        let attempts = crate::support::retry::attempts();
        let mut attempt = 0;
        // One 401 to learn the challenge, one more to renew a token the registry rejects.
        let mut challenges = 0;
        loop {
            attempt += 1;
            let mut req = make()?;
            if let Some(h) = self.auth.header(&self.client, scopes).await? {
                req = req.header(reqwest::header::AUTHORIZATION, crate::registry::auth::sensitive(&h)?);
            }
            match req.send().await {
                Err(e) if attempt < attempts && crate::support::retry::retryable_error(&e) => {
                    tracing::debug!(registry = %self.host, attempt, "{what}: {}; retrying", short_cause(&e));
                    tokio::time::sleep(crate::support::retry::backoff(attempt, None)).await;
                }
                Err(e) => return Err(self.transport_error(what, &e, attempt)),
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && challenges < 2 => {
                    challenges += 1;
                    if !self.auth.on_unauthorized(resp.headers(), scopes) {
                        return Ok(resp);
                    }
                    tracing::debug!(registry = %self.host, "{what}: the registry asks for authentication");
                    attempt -= 1;
                }
                Ok(resp) if attempt < attempts && crate::support::retry::retryable_status(resp.status()) => {
                    let wait =
                        crate::support::retry::backoff(attempt, crate::support::retry::retry_after(resp.headers()));
                    tracing::debug!(registry = %self.host, attempt, status = %resp.status(),
                        wait_ms = wait.as_millis() as u64, "{what}: retrying");
                    tokio::time::sleep(wait).await;
                }
                Ok(resp) => return Ok(resp),
            }
        }
    }

    /// One try of a request whose body cannot be replayed mid-session (a blob upload),
    /// abandoned when `progress` stalls; meets a 401 challenge once. Faults come back as
    /// transient [`Attempt`]s for the caller to start over.
    async fn send_once(
        &self,
        what: &str,
        scopes: &[String],
        make: &MakeRequest<'_>,
        progress: &Mutex<Instant>,
    ) -> std::result::Result<reqwest::Response, Attempt> {
        let idle = crate::support::retry::timeout();
        for _ in 0..3 {
            let mut req = make()?;
            if let Some(h) = self.auth.header(&self.client, scopes).await? {
                req = req.header(reqwest::header::AUTHORIZATION, crate::registry::auth::sensitive(&h)?);
            }
            *progress.lock().unwrap() = Instant::now();
            let resp = match idle_deadline(req.send(), progress, idle).await {
                None => return Err(Attempt { error: self.idle_error(what), transient: true }),
                Some(Err(e)) => {
                    return Err(Attempt {
                        error: self.transport_error(what, &e, 1),
                        transient: crate::support::retry::retryable_error(&e),
                    })
                }
                Some(Ok(r)) => r,
            };
            if resp.status() == StatusCode::UNAUTHORIZED && self.auth.on_unauthorized(resp.headers(), scopes) {
                continue;
            }
            return Ok(resp);
        }
        Err(self.status_error(what, StatusCode::UNAUTHORIZED, None).into())
    }

    fn transport_error(&self, what: &str, e: &reqwest::Error, attempts: u32) -> Error {
        let why = if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            let cause = root_cause(e);
            // hyper-util says "failed to lookup address information" when the name does not resolve.
            let hint = if cause.contains("lookup address") {
                "the host name does not resolve: check its spelling, or this machine's DNS (is it offline?)"
            } else if self.host == BUNDLED_REGISTRY {
                "is it running? `ci/services.sh` starts one there"
            } else {
                "nothing accepts connections there: start that registry or fix the address"
            };
            format!("cannot connect ({cause}); {hint}")
        } else {
            short_cause(e)
        };
        let tries = if attempts > 1 { format!(" (gave up after {attempts} attempts)") } else { String::new() };
        Error::failure(format!(
            "registry {} ({}): {what}: {why}{tries}",
            self.host,
            self.base.as_str().trim_end_matches('/')
        ))
    }

    fn status_error(&self, what: &str, status: StatusCode, body: Option<&str>) -> Error {
        let hint = match status {
            StatusCode::UNAUTHORIZED => format!(
                "; the registry refused {}: run `archfarm login {}` or fix the credentials",
                self.auth.describe(),
                self.host
            ),
            StatusCode::FORBIDDEN => {
                format!("; the registry refuses {} access to this repository", self.auth.describe())
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                format!(
                    "; still failing after {} attempts, try again later or check its log",
                    crate::support::retry::attempts()
                )
            }
            _ => String::new(),
        };
        let detail = body
            .map(|b| b.trim())
            .filter(|b| !b.is_empty())
            .map(|b| format!(" ({})", b.chars().take(300).collect::<String>()))
            .unwrap_or_default();
        Error::failure(format!("registry {}: {what} answered HTTP {status}{detail}{hint}", self.host))
    }

    fn digest_error(&self, what: &str, expected: &str, got: &str) -> Error {
        Error::failure(format!("registry {}: {what}: digest mismatch: expected {expected}, got {got}", self.host))
    }

    fn idle_error(&self, what: &str) -> Error {
        Error::failure(format!(
            "registry {}: {what}: no progress for {} s; the connection stalled",
            self.host,
            crate::support::retry::timeout().as_secs_f64()
        ))
    }
}

/// Marks a memo-lookup error: it must never be mistaken for a miss.
fn not_a_miss(e: Error) -> Error {
    Error::failure(format!(
        "{}; treated as an error, not a miss, so a published tag is never silently rebuilt and overwritten",
        e.message()
    ))
}

/// Collects futures into a Vec before streaming them: a lazy `iter().map(closure)` inside
/// the stream makes the caller's future fail the `Send` check (a higher-ranked lifetime
/// limitation of the compiler), and these futures must be spawnable.
fn collect_futures<F>(futures: impl Iterator<Item = F>) -> Vec<F> {
    futures.collect()
}

/// Runs `fut` until it finishes or `progress` has not moved for `idle`.
async fn idle_deadline<F: std::future::Future>(fut: F, progress: &Mutex<Instant>, idle: Duration) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        let deadline = *progress.lock().unwrap() + idle;
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = tokio::time::sleep_until(deadline.into()) => {
                if progress.lock().unwrap().elapsed() >= idle {
                    return None;
                }
            }
        }
    }
}

/// A store blob's bytes from `offset` on, fed to `out` as they go; a stream that would end
/// with every byte sent but the wrong digest fails instead, so no registry can take it.
fn hashed_on_the_way(
    stream: impl futures::Stream<Item = std::io::Result<Bytes>>,
    out: Arc<Outgoing>,
    offset: u64,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    let mut at = offset;
    stream.map(move |chunk| {
        let chunk = chunk?;
        out.feed(at, &chunk);
        at += chunk.len() as u64;
        match out.wrong() {
            Some(why) => Err(std::io::Error::other(format!("the blob is corrupt: {why}"))),
            None => Ok(chunk),
        }
    })
}

/// The upload URL with `digest=` appended (it may already carry a query such as
/// registry 2.8's `_state`).
fn with_digest(location: &Url, digest: &str) -> Url {
    let mut url = location.clone();
    url.query_pairs_mut().append_pair("digest", digest);
    url
}

/// A transport error's cause in a few words, without URLs (which carry no secret, but
/// say nothing the message does not already).
fn short_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let root = root_cause(e);
    if e.is_body() || e.is_decode() {
        return format!("the transfer was cut short ({root})");
    }
    if e.is_request() || e.is_connect() {
        return format!("the connection failed ({root})");
    }
    root
}

/// An index with annotations: oci-spec keeps them in a `HashMap`, whose order would
/// change the bytes from run to run, so they are written from a sorted map after the
/// index's own fields (the order of the specification's Go struct).
#[derive(serde::Serialize)]
struct AnnotatedIndex<'a> {
    #[serde(flatten)]
    index: &'a oci_spec::image::ImageIndex,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

/// The index (or manifest list) over `children` with `annotations`, as `(media type, bytes)`.
fn index_bytes(children: &[(Platform, Descriptor)], annotations: &BTreeMap<String, String>) -> Result<(String, Bytes)> {
    if children.is_empty() {
        return Err(Error::usage("an index needs at least one platform"));
    }
    let mut sorted: Vec<&(Platform, Descriptor)> = children.iter().collect();
    sorted.sort_by_key(|(p, d)| (p.to_string(), d.digest.clone()));
    for pair in sorted.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(Error::usage(format!("platform {} is given twice", pair[0].0)));
        }
    }
    for (p, d) in &sorted {
        if !is_image_manifest_type(&d.media_type) {
            return Err(Error::usage(format!(
                "the {p} child {} has media type {}, not an image manifest",
                d.digest, d.media_type
            )));
        }
        digest_hex(&d.digest)?;
    }
    let docker = annotations.is_empty() && sorted.iter().all(|(_, d)| d.media_type == DOCKER_MANIFEST);
    let index_type = if docker { DOCKER_LIST } else { OCI_INDEX };
    let bad = |e: oci_spec::OciSpecError| Error::failure(format!("building the index: {e}"));
    let mut manifests = Vec::new();
    for (p, d) in sorted {
        let mut platform =
            PlatformBuilder::default().architecture(Arch::from(p.architecture.as_str())).os(Os::from(p.os.as_str()));
        if let Some(v) = &p.variant {
            platform = platform.variant(v.clone());
        }
        let digest = Digest::from_str(&d.digest).map_err(bad)?;
        manifests.push(
            DescriptorBuilder::default()
                .media_type(MediaType::from(d.media_type.as_str()))
                .digest(digest)
                .size(d.size)
                .platform(platform.build().map_err(bad)?)
                .build()
                .map_err(bad)?,
        );
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(index_type))
        .manifests(manifests)
        .build()
        .map_err(bad)?;
    // Field order is fixed by the structs and the only map is sorted: the bytes are deterministic.
    let bytes = serde_json::to_vec(&AnnotatedIndex { index: &index, annotations })
        .map_err(|e| Error::failure(format!("serializing the index: {e}")))?;
    Ok((index_type.to_string(), Bytes::from(bytes)))
}

/// The child of `index` for `want`; otherwise the platforms it has.
fn select_child<'a>(index: &'a IndexDoc, want: &Platform) -> std::result::Result<&'a IndexChild, Vec<String>> {
    let platforms: Vec<(Platform, &IndexChild)> = index
        .manifests
        .iter()
        .filter_map(|c| {
            let p = c.platform.as_ref()?;
            Some((Platform { os: p.os.clone(), architecture: p.architecture.clone(), variant: p.variant.clone() }, c))
        })
        .collect();
    let exact = platforms.iter().find(|(p, _)| p == want);
    let loose = || platforms.iter().find(|(p, _)| platform_matches(want, p));
    match exact.or_else(loose) {
        Some((_, c)) => Ok(c),
        None => Err(platforms.iter().map(|(p, _)| p.to_string()).collect()),
    }
}

/// `have` satisfies `want`: same os and architecture, same variant, except that a missing
/// variant matches the architecture's default (`arm64` is `arm64/v8`).
fn platform_matches(want: &Platform, have: &Platform) -> bool {
    if want.os != have.os || want.architecture != have.architecture {
        return false;
    }
    match (&want.variant, &have.variant) {
        (a, b) if a == b => true,
        (None, Some(v)) | (Some(v), None) => want.architecture == "arm64" && v == "v8",
        _ => false,
    }
}

fn check_repo(repo: &str) -> Result<()> {
    check_repository(repo).map_err(|why| {
        Error::usage(format!(
            "invalid repository name '{repo}': {why}; expected lowercase path components like namespace/image"
        ))
    })
}

/// Checks a tag ([`check_tag`]) or a `sha256:` digest, what a manifest request
/// names.
pub fn check_reference(reference: &str) -> Result<()> {
    if reference.starts_with("sha256:") {
        return digest_hex(reference).map(|_| ()).map_err(|e| Error::usage(e.message().to_string()));
    }
    check_tag(reference)
        .map_err(|why| Error::usage(format!("invalid tag '{reference}': {why}; or give a sha256: digest")))
}

fn is_image_manifest_type(t: &str) -> bool {
    t == OCI_MANIFEST || t == DOCKER_MANIFEST
}

fn is_index_type(t: &str) -> bool {
    t == OCI_INDEX || t == DOCKER_LIST
}

fn is_manifest_type(t: &str) -> bool {
    is_image_manifest_type(t) || is_index_type(t)
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string())
}

/// The `rel="next"` target of a `Link` header (RFC 5988), which paginated lists (tags,
/// referrers) give while there is more.
fn next_page(headers: &HeaderMap) -> Option<String> {
    header_str(headers, "link")
        .filter(|l| l.contains("rel=\"next\""))
        .and_then(|l| Some(l[l.find('<')? + 1..l.find('>')?].to_string()))
}

fn strip_params(t: String) -> String {
    t.split(';').next().unwrap_or_default().trim().to_string()
}

/// An error with its causes, `a: b: c` (reqwest's own message omits them).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// The innermost cause (e.g. "Connection refused (os error 111)").
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(arch: &str, variant: Option<&str>) -> Platform {
        Platform { os: "linux".into(), architecture: arch.into(), variant: variant.map(String::from) }
    }

    fn d(n: u8) -> Descriptor {
        Descriptor::new(OCI_MANIFEST, digest_of(&[n]), 10 + n as u64)
    }

    /// The futures can be spawned on a multi-threaded runtime.
    #[allow(dead_code)]
    fn futures_are_send(r: &Registry, s: &Store, p: &Platform, d: &Descriptor, i: &StoredImage) {
        fn is_send<T: Send>(_: T) {}
        is_send(r.check());
        is_send(r.manifest_head("a", "b"));
        is_send(r.push_image(s, "a", "b", i));
        is_send(r.put_index("a", "b", &[], &BTreeMap::new()));
        is_send(r.fetch_image(s, "a", "b", p));
        is_send(r.push_blob(s, "a", d, Some("b")));
        is_send(r.copy_blob(r, "a", "b", d));
        let artifact = referrers::Artifact::new("application/spdx+json", d);
        is_send(r.put_referrer("a", &artifact));
        is_send(r.referrers("a", "b"));
        is_send(r.add_referrers("a", "b", &[]));
    }

    #[test]
    fn index_is_sorted_and_deterministic() {
        let a = [(p("arm64", None), d(1)), (p("amd64", None), d(2)), (p("arm", Some("v7")), d(3))];
        let b = [a[2].clone(), a[0].clone(), a[1].clone()];
        let none = BTreeMap::new();
        let (ta, ba) = index_bytes(&a, &none).unwrap();
        let (_, bb) = index_bytes(&b, &none).unwrap();
        assert_eq!(ta, OCI_INDEX);
        assert_eq!(ba, bb);
        let v: serde_json::Value = serde_json::from_slice(&ba).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], OCI_INDEX);
        let plats: Vec<String> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let p = &m["platform"];
                format!(
                    "{}/{}{}",
                    p["os"].as_str().unwrap(),
                    p["architecture"].as_str().unwrap(),
                    p.get("variant").and_then(|v| v.as_str()).map(|v| format!("/{v}")).unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(plats, ["linux/amd64", "linux/arm/v7", "linux/arm64"]);
        assert_eq!(v["manifests"][0]["digest"], d(2).digest);
        assert!(v.get("annotations").is_none());
    }

    #[test]
    fn annotations_come_last_sorted_and_without_them_the_bytes_are_unchanged() {
        let children = [(p("amd64", None), d(1))];
        let (_, plain) = index_bytes(&children, &BTreeMap::new()).unwrap();
        // The bytes written before annotations existed: oci-spec's own serialization.
        let digest = Digest::from_str(&d(1).digest).unwrap();
        let platform = PlatformBuilder::default().architecture(Arch::Amd64).os(Os::Linux).build().unwrap();
        let child = DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(digest)
            .size(d(1).size)
            .platform(platform)
            .build()
            .unwrap();
        let old = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![child])
            .build()
            .unwrap();
        assert_eq!(plain, serde_json::to_vec(&old).unwrap());

        let annotations: BTreeMap<String, String> =
            [("org.opencontainers.image.revision", "abc"), ("com.example.a", "1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let (t, b) = index_bytes(&children, &annotations).unwrap();
        assert_eq!(t, OCI_INDEX);
        let text = String::from_utf8(b.to_vec()).unwrap();
        let plain = String::from_utf8(plain.to_vec()).unwrap();
        assert_eq!(
            text,
            format!(
                "{},\"annotations\":{{\"com.example.a\":\"1\",\"org.opencontainers.image.revision\":\"abc\"}}}}",
                plain.strip_suffix('}').unwrap()
            )
        );
        assert_eq!(index_bytes(&children, &annotations).unwrap().1, b, "deterministic");
        // Docker children: an OCI index, since a manifest list cannot carry annotations.
        let mut c = d(1);
        c.media_type = DOCKER_MANIFEST.into();
        assert_eq!(index_bytes(&[(p("amd64", None), c)], &annotations).unwrap().0, OCI_INDEX);
    }

    #[test]
    fn docker_children_give_a_manifest_list() {
        let mut c = d(1);
        c.media_type = DOCKER_MANIFEST.into();
        let (t, b) = index_bytes(&[(p("amd64", None), c)], &BTreeMap::new()).unwrap();
        assert_eq!(t, DOCKER_LIST);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["mediaType"], DOCKER_LIST);
        assert_eq!(v["manifests"][0]["mediaType"], DOCKER_MANIFEST);
    }

    #[test]
    fn duplicate_platforms_and_empty_index_are_refused() {
        let none = BTreeMap::new();
        assert!(index_bytes(&[], &none).is_err());
        assert!(index_bytes(&[(p("amd64", None), d(1)), (p("amd64", None), d(2))], &none).is_err());
    }

    #[test]
    fn references_and_repositories_are_checked() {
        for ok in ["latest", "amd64-abc", "v1.2.3", &digest_of(b"x")] {
            check_reference(ok).unwrap();
        }
        for bad in ["", "-x", "a/b", "a:b", "sha256:zz", &"a".repeat(129), "a?b"] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
        check_repo("archfarm/basic/busybox").unwrap();
        for bad in ["", "Upper/x", "a//b", "a/../b", "/a"] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upload_locations_relative_absolute_and_with_a_query() {
        let post = Url::parse("http://127.0.0.1:5000/v2/ns/img/blobs/uploads/").unwrap();
        let dg = digest_of(b"x");
        let u = with_digest(&post.join("/v2/ns/img/blobs/uploads/u1").unwrap(), &dg);
        assert_eq!(
            u.as_str(),
            format!("http://127.0.0.1:5000/v2/ns/img/blobs/uploads/u1?digest=sha256%3A{}", &dg[7..])
        );
        let u = with_digest(&post.join("http://other:5000/v2/ns/img/blobs/uploads/u2?_state=ab%3D").unwrap(), &dg);
        assert_eq!(u.host_str(), Some("other"));
        let q: Vec<(String, String)> = u.query_pairs().into_owned().collect();
        assert_eq!(q, [("_state".to_string(), "ab=".to_string()), ("digest".to_string(), dg.clone())]);
        let u = with_digest(&post.join("u3").unwrap(), &dg);
        assert_eq!(u.path(), "/v2/ns/img/blobs/uploads/u3");
    }

    #[test]
    fn platform_matching() {
        assert!(platform_matches(&p("arm64", None), &p("arm64", Some("v8"))));
        assert!(!platform_matches(&p("arm", Some("v7")), &p("arm", Some("v6"))));
        assert!(!platform_matches(&p("arm", None), &p("arm", Some("v7"))));
        assert!(!platform_matches(&p("amd64", None), &p("arm64", None)));
    }
}
