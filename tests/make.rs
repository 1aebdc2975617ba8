//! The gVisor-style make targets (the top-level Makefile, and `archfarm makefile`
//! included from another repository's Makefile) against the real engine, QEMU and
//! registry. Each test has its own copy of images/ with a nonce in every image (unique
//! keys), its own local prefix (unique `:latest` tags), store and registry namespace.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct MakeRepo {
    dir: tempfile::TempDir,
    namespace: String,
    prefix: String,
}

impl MakeRepo {
    /// The bundled Dockerfile images plus a group images/basic/{alpha,beta} (FROM scratch), with a
    /// local prefix of its own (the recipes' FROM lines rewritten to it).
    fn new(name: &str, config_extra: &str) -> MakeRepo {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("images"), &images);
        remove_assembled(&images);
        for (img, text) in [("basic/alpha", "alpha"), ("basic/beta", "beta")] {
            let d = images.join(img);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("Dockerfile"), "FROM scratch\nCOPY hello.txt /\n").unwrap();
            std::fs::write(d.join("hello.txt"), text).unwrap();
        }
        let nonce = format!("{name}{}{}", std::process::id(), unique());
        let prefix = format!("t{nonce}.local/images");
        for folder in ["base/busybox", "uname", "greeter", "basic/alpha", "basic/beta"] {
            let d = images.join(folder);
            std::fs::write(d.join("nonce.txt"), &nonce).unwrap();
            for f in std::fs::read_dir(&d).unwrap() {
                let p = f.unwrap().path();
                if p.file_name().unwrap().to_str().unwrap().starts_with("Dockerfile") {
                    let text = std::fs::read_to_string(&p).unwrap().replace("archfarm.local/images", &prefix);
                    std::fs::write(&p, text).unwrap();
                }
            }
        }
        std::fs::write(dir.path().join("archfarm.yaml"), format!("local_prefix: {prefix}\n{config_extra}")).unwrap();
        MakeRepo { dir, namespace: format!("t-{nonce}"), prefix }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn env(&self, c: &mut Command) {
        c.current_dir(self.path())
            .env("ARCHFARM_REGISTRY", format!("{REGISTRY}/{}", self.namespace))
            .env("ARCHFARM_STORE", self.path().join("store"))
            .env_remove("ARCH")
            .env_remove("SKIP_IMAGE_LOAD")
            .env_remove("DOCKER_PUSH_AS_LATEST")
            .env_remove("ARCHFARM_LOCAL_PREFIX")
            .env_remove("MAKEFLAGS");
    }

    /// `make -f <archfarm>/Makefile ARGS` in this repo, with the test's binary.
    fn make(&self, args: &[&str]) -> Output {
        let mut c = Command::new("make");
        c.args(["-s", "-f"]).arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Makefile"));
        c.arg(format!("ARCHFARM={}", env!("CARGO_BIN_EXE_archfarm"))).arg("ARCHFARM_FLAGS=-v").args(args);
        self.env(&mut c);
        c.output().unwrap()
    }

    fn make_ok(&self, args: &[&str]) -> Output {
        let out = self.make(args);
        assert!(out.status.success(), "make {args:?} failed:\n{}{}", stdout(&out), stderr(&out));
        out
    }

    fn archfarm(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_archfarm"));
        c.args(args);
        self.env(&mut c);
        c.output().unwrap()
    }

    fn key(&self, image: &str, platform: &str) -> String {
        let out = self.archfarm(&["hash", image, "--platform", platform]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    }

    fn local(&self, image: &str, tag: &str) -> String {
        format!("{}/{image}:{tag}", self.prefix)
    }
}

fn unique() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}", n)
}

/// The architecture `docker image inspect` reports, or None when the engine lacks it.
fn inspect_arch(reference: &str) -> Option<String> {
    let out = docker(&["image", "inspect", "--format", "{{.Architecture}}", reference]);
    out.status.success().then(|| stdout(&out))
}

fn inspect_label(reference: &str) -> String {
    stdout(&docker(&["image", "inspect", "--format", "{{index .Config.Labels \"dev.archfarm.key\"}}", reference]))
}

/// Removes every engine image labelled with one of `keys`, children first.
fn remove_from_engine(keys: &[&str]) {
    for key in keys {
        let ids = docker(&["images", "-q", "--no-trunc", "--filter", &format!("label=dev.archfarm.key={key}")]);
        for id in stdout(&ids).lines() {
            let out = docker(&["rmi", "-f", id]);
            assert!(out.status.success(), "docker rmi {id}: {}", stderr(&out));
        }
    }
}

#[test]
fn make_aarch64_load_builds_then_pulls_on_a_clean_engine() {
    if !services_up("make_load") {
        return;
    }
    let repo = MakeRepo::new("ml", "");
    let busybox_key = repo.key("base/busybox", "arm64");
    let uname_key = repo.key("uname", "arm64");

    // Nothing anywhere yet: the nested name builds, and so does its child.
    let out = repo.make_ok(&["ARCH=aarch64", "load-base_busybox"]);
    assert!(stderr(&out).contains("base/busybox linux/arm64: built"), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().next(), Some(repo.local("base/busybox", &busybox_key).as_str()));
    let out = repo.make_ok(&["ARCH=aarch64", "load-uname"]);
    assert!(stderr(&out).contains("uname linux/arm64: built"), "{}", stderr(&out));
    for (image, key) in [("base/busybox", &busybox_key), ("uname", &uname_key)] {
        for tag in ["latest", key.as_str()] {
            assert_eq!(inspect_arch(&repo.local(image, tag)).as_deref(), Some("arm64"), "{image}:{tag}");
        }
        assert_eq!(&inspect_label(&repo.local(image, "latest")), key);
    }
    let run = docker(&["run", "--rm", "--platform", "linux/arm64", &repo.local("uname", "latest")]);
    assert_eq!(stdout(&run), "aarch64", "{}", stderr(&run));
    let out = repo.make_ok(&["ARCH=aarch64", "local-image-uname"]);
    assert_eq!(stdout(&out), repo.local("uname", &uname_key));

    // Publish arm64 (the parent comes along), then forget everything local.
    repo.make_ok(&["ARCH=aarch64", "push-uname"]);
    for (image, key) in [("uname", &uname_key), ("base/busybox", &busybox_key)] {
        let tag = format!("{REGISTRY}/{}/{image}:arm64-{key}", repo.namespace);
        assert!(skopeo_raw(&tag).is_some(), "{tag} was not pushed");
    }
    remove_from_engine(&[&uname_key, &busybox_key]);
    std::fs::remove_dir_all(repo.path().join("store")).unwrap();
    assert_eq!(inspect_arch(&repo.local("uname", "latest")), None, "the engine is clean");
    assert_eq!(inspect_arch(&repo.local("base/busybox", "latest")), None, "the engine is clean");

    // A clean engine and store: both pull from the registry, nothing is built.
    for (target, image, key) in
        [("load-base_busybox", "base/busybox", &busybox_key), ("load-uname", "uname", &uname_key)]
    {
        let out = repo.make_ok(&["ARCH=aarch64", target]);
        let err = stderr(&out);
        assert!(err.contains(&format!("{image} linux/arm64: cached (registry)")), "{target}: {err}");
        assert!(!err.contains("built"), "{target} built something: {err}");
        assert_eq!(inspect_arch(&repo.local(image, "latest")).as_deref(), Some("arm64"), "{image}");
        assert_eq!(&inspect_label(&repo.local(image, "latest")), key);
    }
    let run = docker(&["run", "--rm", "--platform", "linux/arm64", &repo.local("uname", "latest")]);
    assert_eq!(stdout(&run), "aarch64", "{}", stderr(&run));

    // SKIP_IMAGE_LOAD=true: a local key is tagged; a missing one fails without a pull.
    repo.make_ok(&["ARCH=aarch64", "SKIP_IMAGE_LOAD=true", "load-uname"]);
    let out = repo.make(&["ARCH=x86_64", "SKIP_IMAGE_LOAD=true", "load-uname"]);
    assert!(!out.status.success(), "amd64 uname is not local: {}", stdout(&out));
    assert!(stderr(&out).contains("not in the local engine or store"), "{}", stderr(&out));
    assert_eq!(inspect_arch(&repo.local("uname", "latest")).as_deref(), Some("arm64"), "latest is untouched");

    // An architecture the image has no recipe for: said, and a success.
    let out = repo.make_ok(&["ARCH=riscv64", "load-base_busybox"]);
    assert!(stdout(&out).contains("base/busybox is not available for linux/riscv64"), "{}", stdout(&out));
    remove_from_engine(&[&uname_key, &busybox_key]);
}

#[test]
fn group_all_and_test_targets_push_pull_rebuild_and_an_adopting_repository() {
    if !services_up("make_groups") {
        return;
    }
    let repo = MakeRepo::new("mg", "non_test_images: [greeter, base]\n");

    let out = repo.make_ok(&["list-all-images"]);
    assert_eq!(stdout(&out), "base_busybox\nbasic_alpha\nbasic_beta\ngreeter\nuname");
    let out = repo.make_ok(&["list-all-test-images"]);
    assert_eq!(stdout(&out), "basic_alpha\nbasic_beta\nuname");

    let alpha = [repo.key("basic/alpha", "amd64"), repo.key("basic/alpha", "arm64")];
    let beta = [repo.key("basic/beta", "amd64"), repo.key("basic/beta", "arm64")];

    // The group: every image under images/basic/.
    repo.make_ok(&["load-basic"]);
    for (image, key) in [("basic/alpha", &alpha[0]), ("basic/beta", &beta[0])] {
        assert_eq!(inspect_arch(&repo.local(image, "latest")).as_deref(), Some("amd64"));
        assert_eq!(&inspect_label(&repo.local(image, "latest")), key);
    }
    // test-<image>: the registry does not have it, but it builds (here: it is built); no push.
    let out = repo.make_ok(&["test-basic_beta"]);
    assert!(stdout(&out).contains("basic/beta linux/amd64: ok"), "{}", stdout(&out));
    let beta_tag = |k: &str, slug: &str| format!("{REGISTRY}/{}/basic/beta:{slug}-{k}", repo.namespace);
    assert!(skopeo_raw(&beta_tag(&beta[0], "amd64")).is_none(), "test never pushes");
    // pull of a key the registry lacks fails.
    let out = repo.make(&["pull-basic_beta"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not in the registry"), "{}", stderr(&out));

    // push-basic for amd64: keys pushed, no canonical tag yet (arm64 is missing).
    let out = repo.make_ok(&["push-basic"]);
    assert!(stderr(&out).contains("basic/alpha has no canonical tag yet"), "{}", stderr(&out));
    assert!(skopeo_raw(&beta_tag(&beta[0], "amd64")).is_some());
    // Then arm64 with DOCKER_PUSH_AS_LATEST: complete, so the index and :latest are written.
    let out = repo.make_ok(&["ARCH=arm64", "DOCKER_PUSH_AS_LATEST=true", "push-basic"]);
    for image in ["basic/alpha", "basic/beta"] {
        let latest = format!("{REGISTRY}/{}/{image}:latest", repo.namespace);
        let index = skopeo_raw(&latest).unwrap_or_else(|| panic!("{latest}: {}", stderr(&out)));
        assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);
    }
    let listing: serde_json::Value = serde_json::from_slice(&repo.archfarm(&["list", "--json"]).stdout).unwrap();
    let canonical = listing["images"].as_array().unwrap().iter().find(|i| i["image"] == "basic/alpha").unwrap()
        ["canonical_tag"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(index_platforms(&skopeo_raw(&canonical).expect("canonical tag")), ["linux/amd64", "linux/arm64"]);
    // A second push finds the key in the registry and pushes nothing (same manifest).
    let before = skopeo_raw(&beta_tag(&beta[1], "arm64")).unwrap();
    repo.make_ok(&["ARCH=arm64", "push-basic_beta"]);
    assert_eq!(skopeo_raw(&beta_tag(&beta[1], "arm64")).unwrap(), before);

    // pull: the registry's image becomes the local one.
    remove_from_engine(&[&beta[0]]);
    std::fs::remove_dir_all(repo.path().join("store")).unwrap();
    let out = repo.make_ok(&["pull-basic_beta"]);
    assert!(stdout(&out).contains(&repo.local("basic/beta", "latest")), "{}", stdout(&out));
    assert_eq!(inspect_label(&repo.local("basic/beta", "latest")), beta[0]);

    // rebuild (and build-, the README's name): the engine builds although the registry
    // has the key (the engine's own layer cache may give the same image back).
    let out = repo.make_ok(&["rebuild-basic_alpha"]);
    assert!(stderr(&out).contains("basic/alpha linux/amd64: built"), "{}", stderr(&out));
    assert_eq!(inspect_label(&repo.local("basic/alpha", "latest")), alpha[0]);
    let out = repo.make_ok(&["build-basic_alpha"]);
    assert!(stderr(&out).contains("basic/alpha linux/amd64: built"), "{}", stderr(&out));
    // tag-<image>: the local key's image gets the local tags, nothing else happens.
    docker(&["rmi", &repo.local("basic/alpha", "latest")]);
    repo.make_ok(&["tag-basic_alpha"]);
    assert_eq!(inspect_label(&repo.local("basic/alpha", "latest")), alpha[0]);

    // Another repository adopts the targets: `archfarm makefile > images.mk` + include.
    let text = repo.archfarm(&["makefile"]);
    assert!(text.status.success());
    std::fs::write(repo.path().join("images.mk"), &text.stdout).unwrap();
    std::fs::write(repo.path().join("Makefile"), "all:\n\t@echo own target\ninclude images.mk\n").unwrap();
    let adopt = |args: &[&str]| {
        let mut c = Command::new("make");
        c.arg("-s").arg(format!("ARCHFARM={}", env!("CARGO_BIN_EXE_archfarm"))).args(args);
        repo.env(&mut c);
        c.output().unwrap()
    };
    let out = adopt(&["all"]);
    assert_eq!(stdout(&out), "own target", "the including Makefile keeps its default goal");
    let out = adopt(&["list-all-test-images"]);
    assert_eq!(stdout(&out), "basic_alpha\nbasic_beta\nuname", "{}", stderr(&out));
    docker(&["rmi", &repo.local("basic/beta", "latest")]);
    let out = adopt(&["ARCH=x86_64", "load-all-test-images"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(inspect_label(&repo.local("basic/beta", "latest")), beta[0]);
    assert_eq!(inspect_arch(&repo.local("uname", "latest")).as_deref(), Some("amd64"));
    let uname = repo.key("uname", "amd64");
    let busybox = repo.key("base/busybox", "amd64");
    remove_from_engine(&[&uname, &busybox, &alpha[0], &alpha[1], &beta[0], &beta[1]]);
}

/// The Makefile finds the binary it is given; without ARCHFARM it would build
/// target/release/archfarm (not exercised here: tests never run cargo).
#[test]
fn the_top_level_makefile_includes_the_printed_text() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let makefile = std::fs::read_to_string(root.join("Makefile")).unwrap();
    assert!(makefile.contains("include $(ARCHFARM_ROOT)/images.mk"), "{makefile}");
    let printed = Command::new(env!("CARGO_BIN_EXE_archfarm")).arg("makefile").output().unwrap();
    assert_eq!(String::from_utf8(printed.stdout).unwrap(), std::fs::read_to_string(root.join("images.mk")).unwrap());
}
