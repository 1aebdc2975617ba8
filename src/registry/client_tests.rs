//! The [`Registry`] client against the in-process registry: what it sends, what it makes
//! of the answers, and that a registry fault is an error and never a "not found".

use http::Method;

use crate::image::oci::{Descriptor, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST};
use crate::image::platform::Platform;
use crate::image::store::Store;
use crate::registry::in_process::InProcess;
use crate::registry::referrers::{fallback_tag, Artifact};
use crate::registry::BlobOutcome;

const REPO: &str = "archfarm/test/hello";

fn amd64() -> Platform {
    Platform { os: "linux".into(), architecture: "amd64".into(), variant: None }
}

fn empty_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// A store in a temporary folder, with a one-layer image for `platform`; returns the
/// manifest descriptor.
fn image(platform: &Platform, layer: &[u8]) -> (tempfile::TempDir, Store, Descriptor) {
    let (dir, store) = empty_store();
    let config = serde_json::json!({
        "architecture": platform.architecture, "os": platform.os, "rootfs": { "type": "layers", "diff_ids": [] }
    });
    let config = store.put_blob(OCI_CONFIG, config.to_string().as_bytes()).unwrap();
    let layer = store.put_blob(OCI_LAYER_GZIP, layer).unwrap();
    let manifest =
        serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer] });
    let manifest = store.put_blob(OCI_MANIFEST, manifest.to_string().as_bytes()).unwrap();
    (dir, store, manifest)
}

fn count(reg: &InProcess, method: Method, path_contains: &str) -> usize {
    reg.requests().iter().filter(|r| r.method == method && r.target.contains(path_contains)).count()
}

#[tokio::test]
async fn a_pushed_image_is_found_by_head_and_fetched_back() {
    let reg = InProcess::start().await;
    let client = reg.client();
    client.check().await.unwrap();
    let (_dir, store, manifest) = image(&amd64(), b"layer one");

    let (desc, stats) =
        client.push_image_with_stats(&store, REPO, "v1", &store.image(&manifest).unwrap()).await.unwrap();
    assert_eq!(desc, manifest);
    assert_eq!((stats.blobs_uploaded, stats.blobs_skipped), (2, 0));
    let (media_type, bytes) = reg.manifest(REPO, "v1").unwrap();
    assert_eq!((media_type.as_str(), bytes.to_vec()), (OCI_MANIFEST, store.read_blob(&manifest.digest).unwrap()));

    // The HEAD's headers describe the manifest: no GET is needed for the memo lookup.
    assert_eq!(client.manifest_head(REPO, "v1").await.unwrap(), Some(manifest.clone()));
    assert_eq!(client.manifest_head(REPO, &manifest.digest).await.unwrap(), Some(manifest.clone()));
    assert_eq!(count(&reg, Method::GET, "/manifests/"), 0);

    let (_dir2, other) = empty_store();
    let (fetched, fetch_stats) = client.fetch_image_with_stats(&other, REPO, "v1", &amd64()).await.unwrap();
    assert_eq!(fetched, manifest);
    assert_eq!(fetch_stats.blobs_downloaded, 2);
    assert_eq!(other.read_blob(&manifest.digest).unwrap(), store.read_blob(&manifest.digest).unwrap());

    // A second push finds every blob there and uploads nothing.
    let (_, again) = client.push_image_with_stats(&store, REPO, "v2", &store.image(&manifest).unwrap()).await.unwrap();
    assert_eq!((again.blobs_uploaded, again.blobs_skipped), (0, 2));
    assert_eq!(client.tags(REPO).await.unwrap().unwrap().into_iter().collect::<Vec<_>>(), ["v1", "v2"]);
}

#[tokio::test]
async fn only_a_404_is_a_miss() {
    let reg = InProcess::start().await;
    let client = reg.client();
    assert_eq!(client.manifest_head(REPO, "absent").await.unwrap(), None);
    assert_eq!(client.tags(REPO).await.unwrap(), None);

    reg.fail_next(1, 401);
    let e = client.manifest_head(REPO, "absent").await.unwrap_err();
    assert!(e.message().contains("401") && e.message().contains("not a miss"), "{}", e.message());

    reg.fail_next(1, 403);
    let e = client.tags(REPO).await.unwrap_err();
    assert!(e.message().contains("403"), "{}", e.message());
}

#[tokio::test]
async fn a_503_is_retried_and_an_error_once_the_attempts_are_spent() {
    let reg = InProcess::start().await;
    let client = reg.client();
    let attempts = crate::support::retry::attempts() as usize;
    let digest = reg.put_manifest(REPO, "v1", br#"{"schemaVersion":2}"#, OCI_MANIFEST);

    reg.fail_next(attempts - 1, 503);
    let found = client.manifest_head(REPO, "v1").await.unwrap().expect("found on the last attempt");
    assert_eq!(found.digest, digest);
    assert_eq!(count(&reg, Method::HEAD, "/manifests/v1"), attempts);

    reg.fail_next(attempts, 503);
    let e = client.manifest_head(REPO, "v1").await.unwrap_err();
    assert!(e.message().contains("503") && e.message().contains("not a miss"), "{}", e.message());
    assert_eq!(count(&reg, Method::HEAD, "/manifests/v1"), 2 * attempts, "no request beyond the attempts");
}

#[tokio::test]
async fn a_failed_blob_upload_starts_a_new_session() {
    let reg = InProcess::start().await;
    let client = reg.client();
    let (_dir, store, manifest) = image(&amd64(), b"layer");
    reg.fail_when(Some(Method::PUT), "/blobs/uploads/", 1, 503);
    client.push_image(&store, REPO, "v1", &store.image(&manifest).unwrap()).await.unwrap();
    assert_eq!(count(&reg, Method::POST, "/blobs/uploads/"), 3, "two blobs, one of them twice");
    assert!(reg.manifest(REPO, "v1").is_some());
}

/// distribution answers 404 BLOB_UPLOAD_INVALID to a session it cancelled (a cut chunk
/// that landed late moved its offset): the blob goes up in a new session.
#[tokio::test]
async fn a_lost_upload_session_starts_a_new_one() {
    let reg = InProcess::start().await;
    let client = reg.client();
    let (_dir, store, manifest) = image(&amd64(), b"layer");
    reg.fail_when(Some(Method::PUT), "/blobs/uploads/", 1, 404);
    client.push_image(&store, REPO, "v1", &store.image(&manifest).unwrap()).await.unwrap();
    assert_eq!(count(&reg, Method::POST, "/blobs/uploads/"), 3, "two blobs, one of them twice");
    assert!(reg.manifest(REPO, "v1").is_some());
}

#[tokio::test]
async fn a_failed_blob_means_no_manifest_put() {
    let reg = InProcess::start().await;
    let client = reg.client();
    let (_dir, store, manifest) = image(&amd64(), b"layer");
    reg.fail_when(Some(Method::POST), "/blobs/uploads/", 1, 400);
    assert!(client.push_image(&store, REPO, "v1", &store.image(&manifest).unwrap()).await.is_err());
    assert_eq!(count(&reg, Method::PUT, "/manifests/"), 0);
    assert!(reg.manifest(REPO, "v1").is_none());
}

#[tokio::test]
async fn blobs_are_mounted_from_a_repository_that_has_them_and_uploaded_otherwise() {
    let reg = InProcess::start().await;
    let client = reg.client();
    let (_dir, store, manifest) = image(&amd64(), b"layer");
    client.push_image(&store, REPO, "v1", &store.image(&manifest).unwrap()).await.unwrap();
    let layer = store.put_blob(OCI_LAYER_GZIP, b"layer").unwrap();

    assert_eq!(client.push_blob(&store, "other/a", &layer, Some(REPO)).await.unwrap(), BlobOutcome::Mounted);
    assert!(reg.has_blob("other/a", &layer.digest));
    let uploaded = client.push_blob(&store, "other/b", &layer, Some("nowhere/repo")).await.unwrap();
    assert_eq!(uploaded, BlobOutcome::Uploaded(layer.size));
    assert!(reg.has_blob("other/b", &layer.digest));
}

#[tokio::test]
async fn an_index_is_written_only_over_children_in_the_repository() {
    let reg = InProcess::start().await;
    let client = reg.client();
    let (_dir, store, manifest) = image(&amd64(), b"layer");
    let arm64 = Platform { os: "linux".into(), architecture: "arm64".into(), variant: None };
    let (_dir2, store2, manifest2) = image(&arm64, b"arm layer");
    client.push_image(&store, REPO, "amd64", &store.image(&manifest).unwrap()).await.unwrap();

    let children = [(amd64(), manifest.clone()), (arm64.clone(), manifest2.clone())];
    let e = client.put_index(REPO, "latest", &children, &Default::default()).await.unwrap_err();
    assert!(e.message().contains("linux/arm64"), "{}", e.message());
    assert_eq!(count(&reg, Method::PUT, "/manifests/latest"), 0);

    client.push_image(&store2, REPO, "arm64", &store2.image(&manifest2).unwrap()).await.unwrap();
    let index = client.put_index(REPO, "latest", &children, &Default::default()).await.unwrap();
    assert_eq!(reg.manifest(REPO, "latest").unwrap().0, index.media_type);
    let fetched = client.fetch_image(&store, REPO, "latest", &arm64).await.unwrap();
    assert_eq!(fetched, manifest2);
}

/// The in-process registry keeps a real registry's rules, so a client that breaks them
/// fails against it.
#[tokio::test]
async fn the_registry_refuses_a_wrong_digest_and_a_manifest_over_missing_blobs() {
    let reg = InProcess::start().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", reg.addr());
    let post = http.post(format!("{base}/v2/{REPO}/blobs/uploads/")).send().await.unwrap();
    assert_eq!(post.status(), 202);
    let location = post.headers()["location"].to_str().unwrap().to_string();
    let wrong = crate::image::oci::digest_of(b"something else");
    let put = http.put(format!("{base}{location}?digest={wrong}")).body("bytes").send().await.unwrap();
    assert_eq!(put.status(), 400);
    assert!(put.text().await.unwrap().contains("DIGEST_INVALID"));
    assert!(!reg.has_blob(REPO, &wrong));

    let missing = Descriptor::new(OCI_CONFIG, wrong, 5);
    let doc = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": missing, "layers": [] });
    let put = http
        .put(format!("{base}/v2/{REPO}/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(doc.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 400);
    assert!(put.text().await.unwrap().contains("MANIFEST_BLOB_UNKNOWN"));
    assert!(reg.manifest(REPO, "v1").is_none());
}

/// Chunked uploads (the client sends them for blobs over `ARCHFARM_REGISTRY_CHUNK_SIZE`):
/// chunks in order, the session's status, a chunk out of order refused.
#[tokio::test]
async fn the_registry_takes_chunks_in_order_only() {
    let reg = InProcess::start().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", reg.addr());
    let post = http.post(format!("{base}/v2/{REPO}/blobs/uploads/")).send().await.unwrap();
    let location = post.headers()["location"].to_str().unwrap().to_string();
    let patch = |range: &'static str, body: &'static str| {
        http.patch(format!("{base}{location}")).header("content-range", range).body(body).send()
    };
    assert_eq!(patch("0-2", "abc").await.unwrap().status(), 202);
    let refused = patch("0-2", "abc").await.unwrap();
    assert_eq!((refused.status().as_u16(), refused.headers()["range"].to_str().unwrap()), (416, "0-2"));
    let status = http.get(format!("{base}{location}")).send().await.unwrap();
    assert_eq!((status.status().as_u16(), status.headers()["range"].to_str().unwrap()), (204, "0-2"));
    assert_eq!(patch("3-5", "def").await.unwrap().status(), 202);
    let digest = crate::image::oci::digest_of(b"abcdef");
    let put = http.put(format!("{base}{location}?digest={digest}")).send().await.unwrap();
    assert_eq!(put.status(), 201);
    assert!(reg.has_blob(REPO, &digest));
}

#[tokio::test]
async fn a_seeded_image_is_fetched_like_a_pushed_one() {
    let reg = InProcess::start().await;
    let seed =
        |media_type: &str, bytes: &[u8]| Descriptor::new(media_type, reg.put_blob(REPO, bytes), bytes.len() as u64);
    let config = seed(OCI_CONFIG, serde_json::json!({ "architecture": "amd64", "os": "linux" }).to_string().as_bytes());
    let layer = seed(OCI_LAYER_GZIP, b"seeded");
    let manifest =
        serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer] });
    let digest = reg.put_manifest(REPO, "seeded", manifest.to_string().as_bytes(), OCI_MANIFEST);
    assert_eq!(reg.tags(REPO), ["seeded"]);

    let (_dir, store) = empty_store();
    let fetched = reg.client().fetch_image(&store, REPO, "seeded", &amd64()).await.unwrap();
    assert_eq!(fetched.digest, digest);
    assert_eq!(store.read_blob(&layer.digest).unwrap(), b"seeded");
}

// ---- referrers ----

/// A pushed image in `REPO` to attach artifacts to (the store stays alive with it).
async fn subject(reg: &InProcess) -> (tempfile::TempDir, Descriptor) {
    let (dir, store, manifest) = image(&amd64(), b"subject layer");
    reg.client().push_image(&store, REPO, "v1", &store.image(&manifest).unwrap()).await.unwrap();
    (dir, manifest)
}

fn sbom(subject: &Descriptor, text: &str) -> Artifact {
    Artifact::new("application/spdx+json", subject)
        .blob("application/spdx+json", text.as_bytes().to_vec())
        .annotation("org.example.kind", "sbom")
}

/// Requests that write (PUT, POST, PATCH) so far.
fn writes(reg: &InProcess) -> usize {
    reg.requests().iter().filter(|r| [Method::PUT, Method::POST, Method::PATCH].contains(&r.method)).count()
}

/// The descriptors of the tag schema's index, read around the client.
fn tag_schema(reg: &InProcess, subject: &str) -> Vec<Descriptor> {
    let (media_type, bytes) = reg.manifest(REPO, &fallback_tag(subject).unwrap()).expect("the tag schema's index");
    assert_eq!(media_type, OCI_INDEX);
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    serde_json::from_value(v["manifests"].clone()).unwrap()
}

#[tokio::test]
async fn without_the_referrers_api_a_referrer_is_listed_under_the_tag_schema_once() {
    let reg = InProcess::start().await;
    let client = reg.client();
    let (_dir, image) = subject(&reg).await;
    let a = client.put_referrer(REPO, &sbom(&image, "one")).await.unwrap();
    assert_eq!(a.artifact_type.as_deref(), Some("application/spdx+json"));

    // The manifest by digest is an OCI 1.1 artifact about the image.
    let (media_type, bytes) = reg.manifest(REPO, &a.digest).unwrap();
    assert_eq!(media_type, OCI_MANIFEST);
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (doc["subject"]["digest"].as_str(), doc["artifactType"].as_str()),
        (Some(image.digest.as_str()), Some("application/spdx+json"))
    );
    assert!(
        reg.has_blob(REPO, doc["config"]["digest"].as_str().unwrap())
            && reg.has_blob(REPO, doc["layers"][0]["digest"].as_str().unwrap())
    );
    assert_eq!(tag_schema(&reg, &image.digest), std::slice::from_ref(&a));
    assert_eq!(a.annotations.as_ref().unwrap()["org.example.kind"], "sbom");
    assert_eq!(client.referrers(REPO, &image.digest).await.unwrap(), std::slice::from_ref(&a));

    // Again: found listed, nothing written.
    let before = writes(&reg);
    assert_eq!(client.put_referrer(REPO, &sbom(&image, "one")).await.unwrap(), a);
    assert_eq!(writes(&reg), before);

    // Another one is appended; the first stays first.
    let b = client.put_referrer(REPO, &sbom(&image, "two")).await.unwrap();
    assert_eq!(tag_schema(&reg, &image.digest), [a, b]);
}

#[tokio::test]
async fn with_the_referrers_api_the_registry_lists_it_and_no_tag_is_written() {
    let reg = InProcess::start().await;
    reg.set_referrers_api(true);
    let client = reg.client();
    let (_dir, image) = subject(&reg).await;
    let a = client.put_referrer(REPO, &sbom(&image, "one")).await.unwrap();
    assert_eq!(reg.tags(REPO), ["v1"], "OCI-Subject came back: no tag schema index");
    assert_eq!(client.referrers(REPO, &image.digest).await.unwrap(), std::slice::from_ref(&a));
    assert_eq!(client.referrers_api(REPO, &image.digest).await.unwrap(), Some(vec![a.clone()]));
    let before = writes(&reg);
    client.put_referrer(REPO, &sbom(&image, "one")).await.unwrap();
    assert_eq!(writes(&reg), before);

    // The same registry without the API: the client finds nothing there, and says so.
    reg.set_referrers_api(false);
    assert_eq!(client.referrers_api(REPO, &image.digest).await.unwrap(), None);
    assert_eq!(client.referrers(REPO, &image.digest).await.unwrap(), []);
}

#[tokio::test]
async fn an_entry_a_concurrent_writer_overwrote_is_added_again() {
    let reg = InProcess::start().await;
    let client = reg.client();
    let (_dir, image) = subject(&reg).await;
    let a = client.put_referrer(REPO, &sbom(&image, "a")).await.unwrap();
    // Another writer read [a], added c and writes [a, c] just after our PUT of [a, b].
    let (c, c_bytes) = sbom(&image, "c").manifest().unwrap();
    reg.put_manifest(REPO, &c.digest, &c_bytes, OCI_MANIFEST);
    let stale = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [a, c] });
    let tag = fallback_tag(&image.digest).unwrap();
    reg.race_next_put(REPO, &tag, stale.to_string().as_bytes(), 1);

    let b = client.put_referrer(REPO, &sbom(&image, "b")).await.unwrap();
    assert_eq!(tag_schema(&reg, &image.digest), [a, c, b]);
    assert_eq!(count(&reg, Method::PUT, &format!("/manifests/{tag}")), 3, "a's, b's, b's again");

    // A writer that loses every time gives up, bounded, and says why.
    let attempts = crate::support::retry::attempts() as usize;
    reg.race_next_put(REPO, &tag, stale.to_string().as_bytes(), attempts);
    let e = client.put_referrer(REPO, &sbom(&image, "d")).await.unwrap_err();
    assert!(e.message().contains("concurrent writers"), "{}", e.message());
    assert_eq!(count(&reg, Method::PUT, &format!("/manifests/{tag}")), 3 + attempts);
}

#[tokio::test]
async fn a_referrers_failure_is_an_error_and_a_foreign_tag_is_never_overwritten() {
    let reg = InProcess::start().await;
    let client = reg.client();
    let (_dir, image) = subject(&reg).await;
    assert_eq!(client.referrers(REPO, &image.digest).await.unwrap(), [], "404 twice: none");

    reg.fail_when(Some(Method::GET), "/referrers/", 1, 401);
    let e = client.referrers(REPO, &image.digest).await.unwrap_err();
    assert!(e.message().contains("401"), "{}", e.message());
    let attempts = crate::support::retry::attempts() as usize;
    reg.fail_when(Some(Method::GET), "/referrers/", attempts, 503);
    let e = client.referrers(REPO, &image.digest).await.unwrap_err();
    assert!(e.message().contains("503"), "{}", e.message());
    reg.fail_when(Some(Method::GET), "/manifests/sha256-", attempts, 503);
    assert!(client.referrers(REPO, &image.digest).await.is_err(), "the tag schema's 503 too");

    // Something else under the tag: neither read as "none" nor overwritten.
    let (_, image_bytes) = reg.manifest(REPO, "v1").unwrap();
    let tag = fallback_tag(&image.digest).unwrap();
    reg.put_manifest(REPO, &tag, &image_bytes, OCI_MANIFEST);
    let before = writes(&reg);
    let e = client.put_referrer(REPO, &sbom(&image, "x")).await.unwrap_err();
    assert!(e.message().contains(&tag) && e.message().contains("move that tag away"), "{}", e.message());
    assert_eq!(writes(&reg), before);
}
