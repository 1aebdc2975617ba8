//! OCI 1.1 referrers and cosign tags carried by `archfarm copy` and `archfarm release`,
//! on real docker-registry 2.8 processes started by the test (no referrers API there, so
//! everything goes through the tag schema). Artifacts are attached both by archfarm
//! (`Registry::put_referrer`) and by hand with plain HTTP requests, as oras and cosign
//! write them; the targets are checked by plain HTTP too (the tag schema's index, each
//! manifest by digest, each blob), and the canonical tag with `skopeo inspect --raw`.

mod common;
mod publish_support;

use archfarm::image::oci::{digest_of, Descriptor, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use archfarm::image::platform::Platform;
use archfarm::image::store::Store;
use archfarm::recipe::config::RegistryRef;
use archfarm::registry::referrers::{cosign_tag, fallback_tag, Artifact};
use archfarm::registry::Registry;
use common::*;
use publish_support::*;
use serde_json::{json, Value};

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
const EMPTY: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn client(addr: &str) -> Registry {
    Registry::new(&RegistryRef { host: addr.to_string(), namespace: String::new(), insecure: true }).unwrap()
}

fn linux(arch: &str) -> Platform {
    Platform { os: "linux".into(), architecture: arch.into(), variant: None }
}

// ---- plain HTTP, as another tool speaks to a registry ----

async fn http_blob(host: &str, repo: &str, bytes: &[u8]) -> Value {
    let http = reqwest::Client::new();
    let post = http.post(format!("http://{host}/v2/{repo}/blobs/uploads/")).send().await.unwrap();
    assert_eq!(post.status(), 202);
    let location = post.headers()["location"].to_str().unwrap().to_string();
    let mut url = reqwest::Url::parse(&format!("http://{host}/")).unwrap().join(&location).unwrap();
    let digest = digest_of(bytes);
    url.query_pairs_mut().append_pair("digest", &digest);
    let put = http.put(url).body(bytes.to_vec()).send().await.unwrap();
    assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
    json!({ "digest": digest, "size": bytes.len() })
}

async fn http_put_manifest(host: &str, repo: &str, reference: &str, media_type: &str, doc: &Value) -> Value {
    let bytes = serde_json::to_vec(doc).unwrap();
    let put = reqwest::Client::new()
        .put(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .header("content-type", media_type)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "PUT {reference}: {}", put.text().await.unwrap());
    json!({ "mediaType": media_type, "digest": digest_of(&bytes), "size": bytes.len() })
}

/// (media type, bytes), or `None` for a 404; the bytes are checked against a digest.
async fn http_manifest(host: &str, repo: &str, reference: &str) -> Option<(String, Vec<u8>)> {
    let resp = reqwest::Client::new()
        .get(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .header("accept", ACCEPT)
        .send()
        .await
        .unwrap();
    if resp.status() == 404 {
        return None;
    }
    assert_eq!(resp.status(), 200, "GET {repo}:{reference}");
    let media_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    let bytes = resp.bytes().await.unwrap().to_vec();
    if reference.starts_with("sha256:") {
        assert_eq!(digest_of(&bytes), reference);
    }
    Some((media_type, bytes))
}

async fn http_blob_present(host: &str, repo: &str, digest: &str) -> bool {
    let resp = reqwest::Client::new().head(format!("http://{host}/v2/{repo}/blobs/{digest}")).send().await.unwrap();
    resp.status() == 200
}

/// The entries of the tag schema's index for `subject`, read by hand; empty if absent.
async fn tag_schema(host: &str, repo: &str, subject: &str) -> Vec<Value> {
    let Some((media_type, bytes)) = http_manifest(host, repo, &fallback_tag(subject).unwrap()).await else {
        return vec![];
    };
    assert_eq!(media_type, OCI_INDEX);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["manifests"].as_array().unwrap().clone()
}

async fn tags(host: &str, repo: &str) -> Vec<String> {
    let resp = reqwest::get(format!("http://{host}/v2/{repo}/tags/list")).await.unwrap();
    if resp.status() == 404 {
        return vec![];
    }
    let v: Value = resp.json().await.unwrap();
    v["tags"].as_array().map(|t| t.iter().map(|t| t.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

/// What `oras attach` writes: blobs, the artifact manifest by digest, then (with no
/// referrers API) the tag schema's index read, appended to and written back.
async fn oras_attach(host: &str, repo: &str, subject: &Value, artifact_type: &str, content: &[u8]) -> Value {
    http_blob(host, repo, b"{}").await;
    let mut layer = http_blob(host, repo, content).await;
    layer["mediaType"] = json!("application/json");
    layer["annotations"] = json!({ "org.opencontainers.image.title": "scan.json" });
    let annotations = json!({ "org.opencontainers.image.created": "2026-01-01T00:00:00Z" });
    let doc = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY, "size": 2 },
        "layers": [layer], "subject": subject, "annotations": annotations,
    });
    let digest = digest_of(&serde_json::to_vec(&doc).unwrap());
    let mut desc = http_put_manifest(host, repo, &digest, OCI_MANIFEST, &doc).await;
    desc["artifactType"] = json!(artifact_type);
    desc["annotations"] = annotations;
    let subject = subject["digest"].as_str().unwrap();
    let mut manifests = tag_schema(host, repo, subject).await;
    manifests.push(desc.clone());
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    http_put_manifest(host, repo, &fallback_tag(subject).unwrap(), OCI_INDEX, &index).await;
    desc
}

/// What `cosign sign` writes (its tag layout): a small image under `sha256-<hex>.<kind>`
/// whose layers are the signed payloads, each signature in a layer annotation. Returns
/// the manifest's descriptor.
async fn cosign_put(host: &str, repo: &str, subject: &str, kind: &str, payloads: &[&str]) -> Value {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for p in payloads {
        let mut l = http_blob(host, repo, p.as_bytes()).await;
        l["mediaType"] = json!("application/vnd.dev.cosign.simplesigning.v1+json");
        l["annotations"] = json!({ "dev.cosignproject.cosign/signature": format!("sig-of-{}", p.len()) });
        diff_ids.push(l["digest"].clone());
        layers.push(l);
    }
    let config = json!({
        "architecture": "", "created": "0001-01-01T00:00:00Z", "history": [{ "created": "0001-01-01T00:00:00Z" }],
        "os": "", "rootfs": { "type": "layers", "diff_ids": diff_ids }, "config": {},
    });
    let mut config_desc = http_blob(host, repo, &serde_json::to_vec(&config).unwrap()).await;
    config_desc["mediaType"] = json!(OCI_CONFIG);
    let doc = json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": layers });
    http_put_manifest(host, repo, &cosign_tag(subject, kind).unwrap(), OCI_MANIFEST, &doc).await
}

/// Every manifest `digest` names and every blob it has are in `repo` of `host`.
async fn assert_complete(host: &str, repo: &str, digest: &str) {
    let (_, bytes) =
        http_manifest(host, repo, digest).await.unwrap_or_else(|| panic!("{host}/{repo}@{digest} missing"));
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    for b in std::iter::once(&doc["config"]).chain(doc["layers"].as_array().unwrap()) {
        let d = b["digest"].as_str().unwrap();
        assert!(http_blob_present(host, repo, d).await, "{host}/{repo}: blob {d} of {digest} missing");
    }
}

fn digests(entries: &[Value]) -> Vec<&str> {
    entries.iter().map(|e| e["digest"].as_str().unwrap()).collect()
}

fn desc(v: &Value) -> Descriptor {
    serde_json::from_value(v.clone()).unwrap()
}

/// The canonical tag's index as skopeo reads it: exactly the real platforms.
fn assert_only_platforms(reference: &str, digest: &str) {
    let (ok, raw, err) = skopeo(&["inspect", "--raw", &format!("docker://{reference}")], None);
    assert!(ok, "{err}");
    assert_eq!(format!("sha256:{}", sha256_hex(&raw)), digest);
    let index: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"], "{index:#}");
}

fn archfarm(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_archfarm")).args(args).current_dir(dir).output().unwrap()
}

#[test]
fn copy_carries_every_referrer_and_cosign_tag_and_a_failed_carry_moves_no_tag() {
    if !tools_up("referrers_copy") {
        return;
    }
    let a = TestRegistry::start(Auth::None);
    let b = TestRegistry::start_logged();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (src, dst) = ("src/app", "dst/app");
    let (index, amd, arm, sbom, bundle, scan, sig, att) = rt.block_on(async {
        let r = client(&a.addr);
        let amd =
            r.push_image(&store, src, "amd64-1", &store.image(&make_image(&store, "amd64", 1)).unwrap()).await.unwrap();
        let arm =
            r.push_image(&store, src, "arm64-1", &store.image(&make_image(&store, "arm64", 1)).unwrap()).await.unwrap();
        let index = r
            .put_index(src, "idx", &[(linux("amd64"), amd.clone()), (linux("arm64"), arm.clone())], &Default::default())
            .await
            .unwrap();
        // By archfarm: an SBOM of the amd64 image, and a signature bundle of that SBOM.
        let sbom = Artifact::new("application/spdx+json", &amd)
            .blob("application/spdx+json", br#"{"spdxVersion":"SPDX-2.3"}"#.to_vec())
            .annotation("org.example.kind", "sbom");
        let sbom = r.put_referrer(src, &sbom).await.unwrap();
        let bundle = Artifact::new("application/vnd.dev.sigstore.bundle.v0.3+json", &sbom)
            .blob("application/vnd.dev.sigstore.bundle.v0.3+json", b"{}".to_vec());
        let bundle = r.put_referrer(src, &bundle).await.unwrap();
        // By hand: oras's scan report of the arm64 image, cosign's tags.
        let scan = oras_attach(&a.addr, src, &json!(arm.plain()), "application/vnd.example.scan+json", b"[]").await;
        let sig = cosign_put(&a.addr, src, &index.digest, "sig", &["index payload"]).await;
        let att = cosign_put(&a.addr, src, &arm.digest, "att", &["arm64 attestation"]).await;
        (index, amd, arm, sbom, bundle, scan, sig, att)
    });
    let copy = |to: &str| archfarm(dir.path(), &["copy", &format!("{}/{src}:idx", a.addr), to, "--json"]);

    let out = copy(&format!("{}/{dst}:v1", b.addr));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<(&str, &str)> = report["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["digest"].as_str().unwrap()))
        .collect();
    for want in [
        ("referrer", sbom.digest.as_str()),
        ("referrer", bundle.digest.as_str()),
        ("referrer", scan["digest"].as_str().unwrap()),
        ("sig", sig["digest"].as_str().unwrap()),
        ("att", att["digest"].as_str().unwrap()),
    ] {
        assert!(kinds.contains(&want), "{want:?} not in {kinds:?}");
    }
    assert_eq!(kinds.len(), 5, "{report:#}");
    // 5 manifests, 3 tag schema indexes, 2 cosign tags.
    assert_eq!(report["referrers_written"], 10, "{report:#}");

    // The target, by plain HTTP: the tag schema's indexes list what the source's did.
    rt.block_on(async {
        let on_amd = tag_schema(&b.addr, dst, &amd.digest).await;
        assert_eq!(digests(&on_amd), [sbom.digest.as_str()]);
        assert_eq!(desc(&on_amd[0]), sbom, "artifactType and annotations kept");
        assert_eq!(digests(&tag_schema(&b.addr, dst, &sbom.digest).await), [bundle.digest.as_str()]);
        let on_arm = tag_schema(&b.addr, dst, &arm.digest).await;
        assert_eq!(on_arm, std::slice::from_ref(&scan));
        assert_eq!(tag_schema(&b.addr, dst, &index.digest).await, Vec::<Value>::new());
        for (subject, kind, want) in [(&index.digest, "sig", &sig), (&arm.digest, "att", &att)] {
            let (_, bytes) = http_manifest(&b.addr, dst, &cosign_tag(subject, kind).unwrap()).await.unwrap();
            assert_eq!(digest_of(&bytes), want["digest"].as_str().unwrap());
        }
        for d in [&sbom.digest, &bundle.digest, scan["digest"].as_str().unwrap(), sig["digest"].as_str().unwrap()] {
            assert_complete(&b.addr, dst, d).await;
        }
    });
    assert_only_platforms(&format!("{}/{dst}:v1", b.addr), &index.digest);

    // Again: nothing to write, and nothing written.
    let before = b.writes();
    let out = copy(&format!("{}/{dst}:v1", b.addr));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["changed"].as_bool(), report["referrers_written"].as_u64()), (Some(false), Some(0)));
    assert_eq!(b.writes(), before, "a rerun wrote to the target");

    // A target whose cosign tag holds a signature the source lacks: refused before
    // anything is written, so no tag moves.
    let c = TestRegistry::start_logged();
    let theirs = rt.block_on(cosign_put(&c.addr, dst, &index.digest, "sig", &["signed in the target only"]));
    let before = c.writes();
    let out = copy(&format!("{}/{dst}:v1", c.addr));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&cosign_tag(&index.digest, "sig").unwrap()), "{}", stderr(&out));
    assert_eq!(c.writes(), before);
    let (_, bytes) = rt.block_on(http_manifest(&c.addr, dst, &cosign_tag(&index.digest, "sig").unwrap())).unwrap();
    assert_eq!(digest_of(&bytes), theirs["digest"].as_str().unwrap());
    assert_eq!(rt.block_on(tags(&c.addr, dst)), [cosign_tag(&index.digest, "sig").unwrap()]);

    // A carry that fails midway (a blob of the scan report is gone from the source, found
    // only once the image's own blobs are copied): no tag at all in the target.
    let layer = rt.block_on(async {
        let (_, bytes) = http_manifest(&a.addr, src, scan["digest"].as_str().unwrap()).await.unwrap();
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        let layer = doc["layers"][0]["digest"].as_str().unwrap().to_string();
        let del =
            reqwest::Client::new().delete(format!("http://{}/v2/{src}/blobs/{layer}", a.addr)).send().await.unwrap();
        assert_eq!(del.status(), 202);
        layer
    });
    let d = TestRegistry::start_logged();
    let out = copy(&format!("{}/{dst}:v1", d.addr));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&layer), "{}", stderr(&out));
    assert!(d.writes().iter().any(|w| w.contains("/blobs/uploads/")), "the image's blobs were copied first");
    assert_eq!(rt.block_on(tags(&d.addr, dst)), Vec::<String>::new(), "a tag moved after a failed carry");
}

#[test]
fn release_to_another_registry_carries_every_referrer_and_records_them() {
    if !tools_up("referrers_release") {
        return;
    }
    let a = TestRegistry::start(Auth::None);
    let b = TestRegistry::start_logged();
    let repo = Repo::new("referrers-release");
    let from = format!("{}/ns", a.addr);
    let to = format!("{}/rel", b.addr);
    let out = repo.command(&["build", "--push", "hello-assembled", "--registry", &from, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    let canonical = built["tags"][0]["tag"].as_str().unwrap().to_string();
    let index_digest = built["tags"][0]["digest"].as_str().unwrap().to_string();
    let (src, dst) = ("ns/hello-assembled", "rel/hello-assembled");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (children, provenance, scan, sig) = rt.block_on(async {
        let (_, bytes) = http_manifest(&a.addr, src, &index_digest).await.unwrap();
        let index: Value = serde_json::from_slice(&bytes).unwrap();
        let children: Vec<Value> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| json!({ "mediaType": m["mediaType"], "digest": m["digest"], "size": m["size"] }))
            .collect();
        let provenance = Artifact::new("application/vnd.in-toto+json", &desc(&children[0]))
            .blob(
                "application/vnd.dsse.envelope.v1+json",
                br#"{"payloadType":"application/vnd.in-toto+json"}"#.to_vec(),
            )
            .annotation("dev.archfarm.predicate", "https://slsa.dev/provenance/v1");
        let provenance = client(&a.addr).put_referrer(src, &provenance).await.unwrap();
        let scan = oras_attach(&a.addr, src, &children[1], "application/vnd.example.scan+json", b"{}").await;
        let sig = cosign_put(&a.addr, src, &index_digest, "sig", &["release payload"]).await;
        (children, provenance, scan, sig)
    });
    let record = repo.path().join("release.json");
    let release = || {
        let args = ["release", "v1", "hello-assembled", "--registry", &from, "--to", &to, "--json", "--record"];
        repo.command(&args).arg(&record).output().unwrap()
    };

    let out = release();
    assert!(out.status.success(), "{}", stderr(&out));
    let rec: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let image = &rec["images"][0];
    assert_eq!(image["action"], "released");
    let listed: Vec<(&str, &str, &str)> = image["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["subject"].as_str().unwrap(), r["kind"].as_str().unwrap(), r["digest"].as_str().unwrap()))
        .collect();
    let (c0, c1) = (children[0]["digest"].as_str().unwrap(), children[1]["digest"].as_str().unwrap());
    let want = [
        (index_digest.as_str(), "sig", sig["digest"].as_str().unwrap()),
        (c0, "referrer", provenance.digest.as_str()),
        (c1, "referrer", scan["digest"].as_str().unwrap()),
    ];
    for w in &want {
        assert!(listed.contains(w), "{w:?} not in {listed:?}");
    }
    // Besides these, archfarm's own provenance and SBOM of each platform (4).
    assert_eq!(listed.len(), 3 + 4, "{listed:?}");
    assert_eq!(image["referrers_written"], 10, "7 manifests, 2 tag schema indexes, 1 cosign tag: {image:#}");
    assert_eq!(
        image["referrers"][listed.iter().position(|l| l.1 == "sig").unwrap()]["tag"],
        cosign_tag(&index_digest, "sig").unwrap()
    );

    rt.block_on(async {
        // Beside archfarm's own attestations of each platform.
        let on_c0 = tag_schema(&b.addr, dst, c0).await;
        assert!(on_c0.iter().any(|d| desc(d) == provenance), "{on_c0:?}");
        assert!(tag_schema(&b.addr, dst, c1).await.contains(&scan));
        let (_, bytes) = http_manifest(&b.addr, dst, &cosign_tag(&index_digest, "sig").unwrap()).await.unwrap();
        assert_eq!(digest_of(&bytes), sig["digest"].as_str().unwrap());
        for d in [&provenance.digest, scan["digest"].as_str().unwrap(), sig["digest"].as_str().unwrap()] {
            assert_complete(&b.addr, dst, d).await;
        }
    });
    assert_only_platforms(&format!("{to}/hello-assembled:v1"), &index_digest);
    assert_only_platforms(&canonical, &index_digest);

    // Again: nothing to do, nothing written.
    let before = b.writes();
    let out = release();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to do"), "{}", stderr(&out));
    let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (rec["images"][0]["action"].as_str(), rec["images"][0]["referrers_written"].as_u64()),
        (Some("unchanged"), Some(0))
    );
    assert_eq!(b.writes(), before, "a rerun wrote to the target");

    // Signed once more in the source after the release (cosign appends a layer): the
    // rerun carries the new signature image, and only that.
    let resigned = rt.block_on(cosign_put(&a.addr, src, &index_digest, "sig", &["release payload", "second key"]));
    let out = release();
    assert!(out.status.success(), "{}", stderr(&out));
    let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (rec["images"][0]["action"].as_str(), rec["images"][0]["referrers_written"].as_u64()),
        (Some("unchanged"), Some(2))
    );
    let (_, bytes) = rt.block_on(http_manifest(&b.addr, dst, &cosign_tag(&index_digest, "sig").unwrap())).unwrap();
    assert_eq!(digest_of(&bytes), resigned["digest"].as_str().unwrap());
}

#[test]
fn concurrent_attaches_to_one_subject_all_end_up_listed() {
    if !tools_up("referrers_concurrent") {
        return;
    }
    let a = TestRegistry::start(Auth::None);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let image = client(&a.addr)
            .push_image(&store, "app", "v1", &store.image(&make_image(&store, "amd64", 1)).unwrap())
            .await
            .unwrap();
        // Eight writers with clients of their own, at once: each reads the index, adds its
        // entry and writes it back, and none may lose another's.
        let writers = (0..8).map(|i| {
            let (addr, image) = (a.addr.clone(), image.clone());
            tokio::spawn(async move {
                let a = Artifact::new("application/vnd.example.note+json", &image)
                    .blob("application/json", format!("{{\"note\":{i}}}").into_bytes());
                client(&addr).put_referrer("app", &a).await.unwrap()
            })
        });
        let writers: Vec<_> = writers.collect();
        let mut want: Vec<String> = Vec::new();
        for w in writers {
            want.push(w.await.unwrap().digest);
        }
        let listed = tag_schema(&a.addr, "app", &image.digest).await;
        want.sort();
        let mut have: Vec<String> = digests(&listed).into_iter().map(String::from).collect();
        have.sort();
        assert_eq!(have, want, "every entry listed, each once");
    });
}
