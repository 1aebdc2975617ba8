//! The registry client against a real registry (docker-registry 2.8, started by
//! `ci/services.sh` on 127.0.0.1:5000; `ARCHFARM_TEST_REGISTRY=host:port` overrides).
//! Without a registry these tests print a skip note, except under `CI=true`, where they fail.

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use archfarm::image::oci::{
    digest_of, Descriptor, DOCKER_LIST, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST,
};
use archfarm::image::platform::Platform;
use archfarm::image::store::{Entry, Store, StoredImage};
use archfarm::recipe::config::RegistryRef;
use archfarm::registry::Registry;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn registry_addr() -> String {
    std::env::var("ARCHFARM_TEST_REGISTRY").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "127.0.0.1:5000".into())
}

/// The test registry, or `None` (with a note) when it does not answer outside CI.
async fn registry() -> Option<(Registry, String)> {
    let addr = registry_addr();
    let r = Registry::new(&RegistryRef { host: addr.clone(), namespace: String::new(), insecure: true }).unwrap();
    match r.check().await {
        Ok(()) => Some((r, addr)),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => panic!("CI=true and the test registry fails: {e}"),
        Err(e) => {
            eprintln!("SKIP: no test registry ({e})");
            None
        }
    }
}

/// Unique bytes: sha256 chains over the time, the process and a counter.
fn unique(len: usize) -> Vec<u8> {
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?}-{}-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut out = Vec::with_capacity(len + 32);
    let mut h = Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.extend_from_slice(&h);
        h = Sha256::digest(h);
    }
    out.truncate(len);
    out
}

/// A repository of its own for one test: `test-<random>/<image>`.
fn unique_repo(image: &str) -> String {
    format!("test-{}/{image}", &hex::encode(unique(8)))
}

fn platform(arch: &str) -> Platform {
    Platform { os: "linux".into(), architecture: arch.into(), variant: None }
}

/// A gzipped tar with one file of random content: (gzip bytes, diff_id).
fn layer(size: usize) -> (Vec<u8>, String) {
    let content = unique(size);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "data.bin", &content[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = digest_of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// An OCI image for `arch` with `layers` random layers, put in `store`; its manifest.
fn make_image(store: &Store, arch: &str, layers: usize) -> Descriptor {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..layers {
        let (gz, diff_id) = layer(1000 + 5000 * i);
        descs.push(store.put_blob(OCI_LAYER_GZIP, &gz).unwrap());
        diff_ids.push(diff_id);
    }
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [],
    });
    let config = store.put_blob(OCI_CONFIG, &serde_json::to_vec(&config).unwrap()).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": descs,
    });
    store.put_blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap()).unwrap()
}

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

#[tokio::test]
async fn push_then_head_finds_it_and_a_second_push_uploads_nothing() {
    let Some((reg, _)) = registry().await else { return };
    let (_dir, store) = new_store();
    let repo = unique_repo("basic/busybox");
    let manifest = make_image(&store, "amd64", 3);

    let (pushed, stats) =
        reg.push_image_with_stats(&store, &repo, "amd64-key1", &store.image(&manifest).unwrap()).await.unwrap();
    assert_eq!(pushed, manifest);
    assert_eq!((stats.blobs_uploaded, stats.blobs_skipped), (4, 0), "{stats:?}");
    assert!(stats.bytes_uploaded > 0);

    let head = reg.manifest_head(&repo, "amd64-key1").await.unwrap();
    assert_eq!(head, Some(manifest.clone()));
    let by_digest = reg.manifest_head(&repo, &manifest.digest).await.unwrap();
    assert_eq!(by_digest, Some(manifest.clone()));

    let (again, stats) =
        reg.push_image_with_stats(&store, &repo, "amd64-key2", &store.image(&manifest).unwrap()).await.unwrap();
    assert_eq!(again, manifest);
    assert_eq!((stats.blobs_uploaded, stats.bytes_uploaded, stats.blobs_skipped), (0, 0, 4), "{stats:?}");
    assert_eq!(reg.manifest_head(&repo, "amd64-key2").await.unwrap(), Some(manifest));
}

#[tokio::test]
async fn a_tag_that_is_not_there_is_a_miss() {
    let Some((reg, _)) = registry().await else { return };
    let repo = unique_repo("never-pushed");
    assert_eq!(reg.manifest_head(&repo, "amd64-0123").await.unwrap(), None);
    assert_eq!(reg.manifest_head(&repo, &digest_of(b"nothing")).await.unwrap(), None);
}

/// Pushes amd64 and arm64 images, stitches them; returns (repo, tag, children, store).
async fn pushed_index(reg: &Registry) -> (String, String, Vec<(Platform, Descriptor)>, tempfile::TempDir, Store) {
    let (dir, store) = new_store();
    let repo = unique_repo("multi");
    let mut children = Vec::new();
    for arch in ["arm64", "amd64"] {
        let m = make_image(&store, arch, 2);
        reg.push_image(&store, &repo, &format!("{arch}-k"), &store.image(&m).unwrap()).await.unwrap();
        children.push((platform(arch), m));
    }
    let tag = "index-k".to_string();
    let index = reg.put_index(&repo, &tag, &children, &Default::default()).await.unwrap();
    assert_eq!(index.media_type, OCI_INDEX);
    assert_eq!(reg.manifest_head(&repo, &tag).await.unwrap(), Some(index.clone()));
    // The same children in another order give the same index.
    children.reverse();
    assert_eq!(reg.put_index(&repo, "index-k2", &children, &Default::default()).await.unwrap(), index);
    (repo, tag, children, dir, store)
}

#[tokio::test]
async fn put_index_writes_an_index_that_skopeo_reads() {
    let Some((reg, addr)) = registry().await else { return };
    let (repo, tag, children, _dir, _store) = pushed_index(&reg).await;

    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{addr}/{repo}:{tag}")])
        .output()
        .expect("skopeo is installed (ci/services.sh installs it)");
    assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    let mut got: Vec<(String, String, String)> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["mediaType"], OCI_MANIFEST);
            (
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap(),
                    m["platform"]["architecture"].as_str().unwrap()
                ),
                m["digest"].as_str().unwrap().to_string(),
                m["size"].to_string(),
            )
        })
        .collect();
    let want_order: Vec<String> = got.iter().map(|g| g.0.clone()).collect();
    assert_eq!(want_order, ["linux/amd64", "linux/arm64"], "children sorted by platform");
    let mut want: Vec<(String, String, String)> =
        children.iter().map(|(p, d)| (p.to_string(), d.digest.clone(), d.size.to_string())).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn put_index_with_a_missing_child_fails_and_writes_nothing() {
    let Some((reg, _)) = registry().await else { return };
    let (_dir, store) = new_store();
    let repo = unique_repo("partial");
    let amd64 = make_image(&store, "amd64", 1);
    reg.push_image(&store, &repo, "amd64-k", &store.image(&amd64).unwrap()).await.unwrap();
    let arm64 = make_image(&store, "arm64", 1); // never pushed
    let err = reg
        .put_index(&repo, "index-k", &[(platform("amd64"), amd64), (platform("arm64"), arm64)], &Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(err.message().contains("linux/arm64"), "{}", err.message());
    assert!(!err.message().contains("linux/amd64"), "only the missing platform is named: {}", err.message());
    assert_eq!(reg.manifest_head(&repo, "index-k").await.unwrap(), None, "no tag over an incomplete image");
}

#[tokio::test]
async fn fetch_image_of_an_index_brings_the_platform_into_a_fresh_store() {
    let Some((reg, _)) = registry().await else { return };
    let (repo, tag, children, _dir, _store) = pushed_index(&reg).await;
    let arm64 = children.iter().find(|(p, _)| p.architecture == "arm64").unwrap().1.clone();

    let (_fresh_dir, fresh) = new_store();
    let (got, stats) = reg.fetch_image_with_stats(&fresh, &repo, &tag, &platform("arm64")).await.unwrap();
    assert_eq!(got, arm64);
    assert_eq!((stats.blobs_downloaded, stats.blobs_present), (3, 0), "{stats:?}");
    let blobs = fresh.manifest_blobs(&got.digest).unwrap();
    assert_eq!(blobs.len(), 3);
    assert!(blobs.iter().all(|b| fresh.has_blob(b)));
    let config_digest = blobs[0].clone();
    let stored = StoredImage { manifest: got, config_digest };
    let entry =
        Entry { key: "b".repeat(64), image: "multi".into(), platform: platform("arm64"), stored, provenance: None };
    fresh.put_entry(&entry).unwrap();
    assert_eq!(fresh.entry(&entry.key).unwrap(), Some(entry));

    // A second fetch downloads nothing; an absent platform is named with what there is.
    let (_, stats) = reg.fetch_image_with_stats(&fresh, &repo, &tag, &platform("arm64")).await.unwrap();
    assert_eq!((stats.blobs_downloaded, stats.blobs_present), (0, 3));
    let err = reg.fetch_image(&fresh, &repo, &tag, &platform("s390x")).await.unwrap_err();
    assert!(
        err.message().contains("linux/s390x") && err.message().contains("linux/amd64, linux/arm64"),
        "{}",
        err.message()
    );
    // By digest, a single-platform manifest for the wrong platform is refused.
    let amd64 = children.iter().find(|(p, _)| p.architecture == "amd64").unwrap().1.clone();
    let err = reg.fetch_image(&fresh, &repo, &amd64.digest, &platform("arm64")).await.unwrap_err();
    assert!(err.message().contains("linux/amd64, not linux/arm64"), "{}", err.message());
}

/// A server that answers every request with `HTTP/1.1 <status>` and an empty body.
async fn failing_server(status: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_failing_registry_is_an_error_not_a_miss() {
    let addr = failing_server("500 Internal Server Error").await;
    let reg = Registry::new(&RegistryRef { host: addr.clone(), namespace: String::new(), insecure: true }).unwrap();
    let err = reg.manifest_head("ns/img", "amd64-k").await.unwrap_err();
    let msg = err.message();
    assert_eq!(err.exit_code(), 1);
    for part in [addr.as_str(), "ns/img", "amd64-k", "500", "not a miss"] {
        assert!(msg.contains(part), "'{part}' missing from: {msg}");
    }
    assert!(reg.check().await.is_err());
}

#[tokio::test]
async fn a_closed_port_is_an_error_naming_the_host() {
    // Bind then drop: the port is free and nothing listens on it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let reg = Registry::new(&RegistryRef { host: addr.clone(), namespace: String::new(), insecure: true }).unwrap();
    let err = reg.manifest_head("ns/img", "amd64-k").await.unwrap_err();
    assert!(err.message().contains(&addr) && err.message().contains("not a miss"), "{}", err.message());
    // Advice about the bundled registry on 127.0.0.1:5000 is only for that address.
    let err = reg.check().await.unwrap_err();
    assert!(err.message().contains(&addr) && err.message().contains("fix the address"), "{}", err.message());
    assert!(!err.message().contains("ci/services.sh"), "{}", err.message());
}

#[tokio::test]
async fn a_registry_that_wants_credentials_says_so() {
    let addr = failing_server("401 Unauthorized").await;
    let reg = Registry::new(&RegistryRef { host: addr.clone(), namespace: String::new(), insecure: true }).unwrap();
    let err = reg.manifest_head("ns/img", "amd64-k").await.unwrap_err();
    assert!(err.message().contains("401") && err.message().contains("credentials"), "{}", err.message());
    let err = reg.check().await.unwrap_err();
    assert!(err.message().contains("credentials") && err.message().contains(&addr), "{}", err.message());
}

#[tokio::test]
async fn docker_v2_children_are_stitched_into_a_manifest_list() {
    const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    let Some((reg, _)) = registry().await else { return };
    let (_dir, store) = new_store();
    let repo = unique_repo("docker-style");
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let (gz, diff_id) = layer(2000);
        let l = store.put_blob(DOCKER_LAYER, &gz).unwrap();
        let config = serde_json::json!({
            "architecture": arch, "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let c = store.put_blob(DOCKER_CONFIG, &serde_json::to_vec(&config).unwrap()).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": c, "layers": [l],
        });
        let m = store.put_blob(DOCKER_MANIFEST, &serde_json::to_vec(&manifest).unwrap()).unwrap();
        reg.push_image(&store, &repo, &format!("{arch}-k"), &store.image(&m).unwrap()).await.unwrap();
        assert_eq!(reg.manifest_head(&repo, &format!("{arch}-k")).await.unwrap(), Some(m.clone()));
        children.push((platform(arch), m));
    }
    let list = reg.put_index(&repo, "index-k", &children, &Default::default()).await.unwrap();
    assert_eq!(list.media_type, DOCKER_LIST);
    assert_eq!(reg.manifest_head(&repo, "index-k").await.unwrap(), Some(list));
    let (_fresh_dir, fresh) = new_store();
    let got = reg.fetch_image(&fresh, &repo, "index-k", &platform("amd64")).await.unwrap();
    assert_eq!(got, children[0].1);
}

#[tokio::test]
async fn a_large_layer_streams_up_and_down_intact() {
    let Some((reg, _)) = registry().await else { return };
    let (_dir, store) = new_store();
    let repo = unique_repo("large");
    let (gz, diff_id) = layer(6 << 20); // random, so it stays ~6 MiB compressed: many chunks
    let l = store.put_blob(OCI_LAYER_GZIP, &gz).unwrap();
    let config = serde_json::json!({"architecture": "riscv64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}});
    let c = store.put_blob(OCI_CONFIG, &serde_json::to_vec(&config).unwrap()).unwrap();
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": c, "layers": [l]});
    let m = store.put_blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap()).unwrap();
    let (_, stats) = reg.push_image_with_stats(&store, &repo, "riscv64-k", &store.image(&m).unwrap()).await.unwrap();
    assert_eq!(stats.bytes_uploaded, l.size + c.size);

    let (_fresh_dir, fresh) = new_store();
    let got = reg.fetch_image(&fresh, &repo, "riscv64-k", &platform("riscv64")).await.unwrap();
    assert_eq!(got, m);
    assert_eq!(fresh.read_blob(&l.digest).unwrap(), gz);
    assert_eq!(std::fs::read_dir(fresh.tmp_dir()).unwrap().count(), 0, "no temporary file left");
}
