//! Stitching from separate CI jobs through a staging repository (no layer downloaded,
//! blobs mounted), stitchers racing on one tag, and `archfarm copy` between registries and
//! between repositories of one registry, on real registries, checked with skopeo.

mod common;
mod publish_support;

use archfarm::image::platform::Platform;
use archfarm::image::store::Store;
use archfarm::recipe::config::RegistryRef;
use archfarm::registry::Registry;
use common::*;
use publish_support::*;

fn client(addr: &str) -> Registry {
    Registry::new(&RegistryRef { host: addr.to_string(), namespace: String::new(), insecure: true }).unwrap()
}

fn linux(arch: &str) -> Platform {
    Platform { os: "linux".into(), architecture: arch.into(), variant: None }
}

#[test]
fn stitchers_racing_on_one_tag_from_a_staging_repository_leave_a_complete_index() {
    if !tools_up("racing_stitchers") {
        return;
    }
    let reg = TestRegistry::start(Auth::None);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let r = client(&reg.addr);
        // Two CI jobs push one platform each to the staging repository.
        let staging = "ci/staging/app";
        let target = "release/app";
        let amd = make_image(&store, "amd64", 3);
        let arm = make_image(&store, "arm64", 3);
        let (amd_image, arm_image) = (store.image(&amd).unwrap(), store.image(&arm).unwrap());
        let (a, b) = tokio::join!(
            r.push_image(&store, staging, "amd64-k1", &amd_image),
            r.push_image(&store, staging, "arm64-k2", &arm_image)
        );
        let children = vec![(linux("amd64"), a.unwrap()), (linux("arm64"), b.unwrap())];

        // Two stitchers race on one tag; each computes the index from the keys it was given.
        let none = std::collections::BTreeMap::new();
        let (x, y) = tokio::join!(
            archfarm::publish::copy::stitch_from_staging(&r, staging, target, "idx", &children, &none),
            archfarm::publish::copy::stitch_from_staging(&r, staging, target, "idx", &children, &none)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x, y, "both stitchers write the same index");
        // Idempotent.
        let z =
            archfarm::publish::copy::stitch_from_staging(&r, staging, target, "idx", &children, &none).await.unwrap();
        assert_eq!(x, z);

        // Every blob reached the target by mount: uploading it again finds it there.
        for m in [&amd, &arm] {
            for blob in store.manifest_blobs(&m.digest).unwrap() {
                let size = std::fs::metadata(store.blob_path(&blob).unwrap()).unwrap().len();
                let d = archfarm::image::oci::Descriptor::new("application/octet-stream", blob, size);
                assert_eq!(
                    r.push_blob(&store, target, &d, None).await.unwrap(),
                    archfarm::registry::BlobOutcome::Present
                );
            }
        }
        x
    });
    let (ok, raw, err) = skopeo(&["inspect", "--raw", &format!("docker://{}/release/app:idx", reg.addr)], None);
    assert!(ok, "{err}");
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);
    assert_tags_complete(&reg.addr, "release/app", None);
}

#[test]
fn two_build_push_runs_racing_on_one_tag_both_leave_every_platform() {
    if !services_up("racing_builds") {
        return;
    }
    let repo = Repo::new("race");
    let out = repo.run(&["build", "base/busybox"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let spawn = || {
        repo.command(&["build", "--push", "base/busybox", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    let ja: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let jb: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    assert_eq!(ja["tags"][0]["digest"], jb["tags"][0]["digest"]);
    let index = skopeo_raw(ja["tags"][0]["tag"].as_str().unwrap()).unwrap();
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);
}

#[test]
fn copy_between_registries_and_repositories() {
    if !tools_up("copy") {
        return;
    }
    let a = TestRegistry::start(Auth::None);
    let b = TestRegistry::start(Auth::None);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let index = rt.block_on(async {
        let r = client(&a.addr);
        let amd = r
            .push_image(&store, "src/app", "amd64-1", &store.image(&make_image(&store, "amd64", 2)).unwrap())
            .await
            .unwrap();
        let arm = r
            .push_image(&store, "src/app", "arm64-1", &store.image(&make_image(&store, "arm64", 2)).unwrap())
            .await
            .unwrap();
        r.put_index("src/app", "idx", &[(linux("amd64"), amd), (linux("arm64"), arm)], &Default::default())
            .await
            .unwrap()
    });
    let copy = |src: String, dst: String| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_archfarm"))
            .args(["copy", &src, &dst, "--json"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        (serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), stderr(&out))
    };

    // Across registries: streamed, every platform, the same digest.
    let (r, _) = copy(format!("{}/src/app:idx", a.addr), format!("{}/dst/app:v1", b.addr));
    assert_eq!(r["digest"], index.digest.as_str());
    assert_eq!(r["platforms"].as_array().unwrap().len(), 2);
    assert_eq!(r["blobs_uploaded"], 6, "{r:#}");
    let (ok, raw, err) = skopeo(&["inspect", "--raw", &format!("docker://{}/dst/app:v1", b.addr)], None);
    assert!(ok, "{err}");
    assert_eq!(format!("sha256:{}", sha256_hex(&raw)), index.digest);
    assert_tags_complete(&b.addr, "dst/app", None);

    // Again: nothing to do.
    let (r, err) = copy(format!("{}/src/app:idx", a.addr), format!("{}/dst/app:v1", b.addr));
    assert_eq!((r["changed"].as_bool(), r["blobs_skipped"].as_u64()), (Some(false), Some(6)), "{r:#}");
    assert!(err.contains("nothing to do"), "{err}");

    // Within one registry: blobs mounted, no byte uploaded.
    let (r, _) = copy(format!("{}/src/app:idx", a.addr), format!("{}/other/app:v1", a.addr));
    assert_eq!((r["blobs_mounted"].as_u64(), r["bytes_uploaded"].as_u64()), (Some(6), Some(0)), "{r:#}");
    assert_tags_complete(&a.addr, "other/app", None);

    // A source that does not exist: exit 1, named.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_archfarm"))
        .args(["copy", &format!("{}/src/none:x", a.addr), &format!("{}/dst/none:x", b.addr)])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("src/none:x"), "{}", stderr(&out));
}
