//! The daemonless assembler (issue 6) against real tools: docker load / run (arm64
//! under QEMU), skopeo, umoci, the loopback registry and Debian's apt repositories.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// `archfarm assemble ARGS --json` in `repo`, returning (tag, digest, image_id).
fn assemble(repo: &Repo, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["assemble"];
    all.extend_from_slice(args);
    all.push("--json");
    repo.json(&all)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn blobs_in(store: &Path) -> usize {
    std::fs::read_dir(store.join("blobs/sha256")).map(|d| d.count()).unwrap_or(0)
}

fn keys_in(store: &Path) -> usize {
    std::fs::read_dir(store.join("keys")).map(|d| d.count()).unwrap_or(0)
}

fn load(file: &Path) -> String {
    let out = docker(&["load", "-i", file.to_str().unwrap()]);
    assert!(out.status.success(), "docker load {}: {}", file.display(), stderr(&out));
    stdout(&out)
}

fn run_image(platform: &str, image: &str, cmd: &[&str]) -> String {
    let mut args = vec!["run", "--rm", "--network", "none", "--platform", platform, image];
    args.extend_from_slice(cmd);
    let out = docker(&args);
    assert!(out.status.success(), "docker run {image}: {}", stderr(&out));
    stdout(&out)
}

fn skopeo_inspect(reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo").args(["inspect", reference]).output().unwrap();
    assert!(out.status.success(), "skopeo inspect {reference}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_same_recipe_twice_in_different_folders_at_different_times_gives_the_same_digest() {
    let a = Repo::new("repro-a");
    let b = Repo::new("repro-b");
    for repo in [&a, &b] {
        std::fs::write(repo.images().join("hello-assembled/nonce.txt"), "same inputs").unwrap();
    }
    // Different mtimes, umask-independent modes and a later wall clock for the second copy.
    let st = Command::new("find")
        .args([b.images().to_str().unwrap(), "-exec", "touch", "-h", "-d", "2001-02-03 04:05:06", "{}", "+"])
        .status()
        .unwrap();
    assert!(st.success());
    let mut digests = Vec::new();
    for repo in [&a, &b] {
        for p in ["amd64", "arm64"] {
            let r = assemble(repo, &["hello-assembled", "--platform", p]);
            digests.push((p, r["digest"].as_str().unwrap().to_string(), r["key"].as_str().unwrap().to_string()));
        }
    }
    assert_eq!(digests[0], digests[2], "amd64 differs between folders");
    assert_eq!(digests[1], digests[3], "arm64 differs between folders");
    assert_ne!(digests[0].1, digests[1].1);
    assert!(a.path() != b.path());
}

#[test]
fn the_issue_example_runs_on_amd64_and_arm64_prints_two_and_has_one_env_entry_per_variable() {
    if !services_up("assemble_example") {
        return;
    }
    let repo = Repo::new("asm-ex");
    for (p, arch) in [("linux/amd64", "amd64"), ("linux/arm64", "arm64")] {
        let file = repo.path().join(format!("hello-{arch}.tar"));
        let out = format!("docker-archive:{}", file.display());
        let r = assemble(&repo, &["hello-assembled", "--platform", p, "--output", &out]);
        let tag = r["tag"].as_str().unwrap();
        assert!(tag.ends_with(r["key"].as_str().unwrap()), "the tag defaults to the content key: {tag}");
        assert!(load(&file).contains(tag));
        assert_eq!(run_image(p, tag, &[]), "two", "{p}");
        // rootfs/bin/sh is an absolute link, as in any real rootfs: kept, and it works.
        assert_eq!(
            run_image(p, tag, &["sh", "-c", "readlink /bin/sh; /bin/sh -c 'echo via-link'"]),
            "/bin/busybox\nvia-link"
        );
        let inspect = docker(&["image", "inspect", tag]);
        let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        assert_eq!(v[0]["Config"]["Env"], serde_json::json!(["PATH=/bin", "GREETING=two"]));
        assert_eq!(v[0]["Architecture"], arch);
        assert_eq!(v[0]["Id"], r["image_id"]);
        assert_eq!(v[0]["RootFS"]["Layers"].as_array().unwrap().len(), 2, "rootfs and busybox: {v:#}");
    }
}

#[test]
fn every_output_is_accepted_by_skopeo_umoci_and_docker_load_streaming_writes_nothing() {
    if !services_up("assemble_outputs") {
        return;
    }
    let repo = Repo::new("asm-out");
    let p = "linux/arm64";

    // --output - with an empty store: streamed from the sources, nothing stored.
    let mut child = repo
        .command(&["assemble", "hello-assembled", "--platform", p, "--output", "-", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let streamed = repo.path().join("streamed.tar");
    let mut f = std::fs::File::create(&streamed).unwrap();
    std::io::copy(child.stdout.as_mut().unwrap(), &mut f).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let report: serde_json::Value =
        serde_json::from_str(&err[err.find('{').expect("a JSON report on stderr")..]).unwrap();
    assert_eq!(keys_in(&repo.path().join("store")), 0, "streaming stores nothing");
    let loaded = load(&streamed);
    let tag = report["tag"].as_str().unwrap();
    assert!(loaded.contains(tag), "{loaded}");
    assert_eq!(run_image(p, tag, &[]), "two");
    let streamed_id = report["image_id"].as_str().unwrap().to_string();

    // The store path gives the same image (same config digest, so the same image ID).
    let oci = repo.path().join("oci");
    let r = assemble(&repo, &["hello-assembled", "--platform", p, "--output", &format!("oci:{}", oci.display())]);
    assert_eq!(r["image_id"].as_str().unwrap(), streamed_id);
    let key = r["key"].as_str().unwrap();
    let s = skopeo_inspect(&format!("oci:{}:{key}", oci.display()));
    assert_eq!(s["Architecture"], "arm64");
    assert_eq!(s["Digest"], r["digest"]);
    let bundle = repo.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &format!("{}:{key}", oci.display()), bundle.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci unpack: {}", stderr(&out));
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    assert_eq!(std::fs::read_to_string(bundle.join("rootfs/etc/group")).unwrap().lines().next(), Some("root:x:0:"));

    let archive = repo.path().join("hello.tar");
    assemble(
        &repo,
        &["hello-assembled", "--platform", p, "--output", &format!("docker-archive:{}", archive.display())],
    );
    let s = skopeo_inspect(&format!("docker-archive:{}", archive.display()));
    assert_eq!(s["Architecture"], "arm64");
    assert!(load(&archive).contains(tag));

    // The legacy layout alone (no manifest.json): docker load follows the parent chain,
    // and the same tarball works as a `from`.
    let legacy = repo.path().join("legacy.tar");
    let list = Command::new("tar").args(["tf", archive.to_str().unwrap()]).output().unwrap();
    let keep: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| (l.contains('/') || !l.ends_with(".json")) && !l.ends_with('/'))
        .map(str::to_string)
        .collect();
    let x = repo.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    assert!(Command::new("tar")
        .args(["xf", archive.to_str().unwrap(), "-C", x.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    let mut c = Command::new("tar");
    c.args(["cf", legacy.to_str().unwrap(), "-C", x.to_str().unwrap()]).args(&keep);
    assert!(c.status().unwrap().success());
    assert!(!String::from_utf8_lossy(
        &Command::new("tar").args(["tf", legacy.to_str().unwrap()]).output().unwrap().stdout
    )
    .contains("manifest.json"));
    docker(&["rmi", "-f", tag]);
    load(&legacy);
    assert_eq!(run_image(p, tag, &[]), "two", "loaded through the legacy parent chain");

    let img = repo.images().join("from-legacy");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::copy(&legacy, img.join("base.tar")).unwrap();
    write(&img.join("hi.txt"), "hi from legacy\n");
    write(
        &img.join("image.yaml"),
        "from: docker-archive:base.tar\ncontents: [{src: hi.txt, dest: /hi.txt}]\nconfig: {cmd: [cat, /hi.txt]}\n",
    );
    let f2 = repo.path().join("from-legacy.tar");
    let r = assemble(&repo, &["from-legacy", "--platform", p, "--output", &format!("docker-archive:{}", f2.display())]);
    load(&f2);
    assert_eq!(run_image(p, r["tag"].as_str().unwrap(), &[]), "hi from legacy");

    // A real `docker save` (with manifest.json) as `from`.
    let img = repo.images().join("from-save");
    std::fs::create_dir_all(&img).unwrap();
    let save = docker(&["save", "-o", img.join("saved.tar").to_str().unwrap(), tag]);
    assert!(save.status.success(), "{}", stderr(&save));
    write(&img.join("image.yaml"), "from: saved.tar\nconfig: {env: [GREETING=saved]}\n");
    let f4 = repo.path().join("from-save.tar");
    let r = assemble(&repo, &["from-save", "--platform", p, "--output", &format!("docker-archive:{}", f4.display())]);
    load(&f4);
    assert_eq!(run_image(p, r["tag"].as_str().unwrap(), &[]), "saved");

    // An OCI layout as `from`.
    let img = repo.images().join("from-oci");
    copy_dir(&oci, &img.join("base"));
    write(&img.join("image.yaml"), "from: oci:base\nconfig: {env: [GREETING=three]}\n");
    let f3 = repo.path().join("from-oci.tar");
    let r = assemble(&repo, &["from-oci", "--platform", p, "--output", &format!("docker-archive:{}", f3.display())]);
    load(&f3);
    assert_eq!(run_image(p, r["tag"].as_str().unwrap(), &[]), "three");
}

/// A pseudo-random, incompressible file of `len` bytes.
fn noise(path: &Path, len: usize, seed: u64) {
    let mut x = seed | 1;
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(len);
    std::fs::write(path, buf).unwrap();
}

#[test]
fn a_large_streamed_archive_loads() {
    if !services_up("assemble_large_stream") {
        return;
    }
    let repo = Repo::new("asm-big");
    let img = repo.images().join("big");
    for d in 0..8 {
        std::fs::create_dir_all(img.join(format!("data/d{d}"))).unwrap();
        for f in 0..4 {
            noise(&img.join(format!("data/d{d}/f{f}")), 8 << 20, (d * 10 + f + 1) as u64);
        }
    }
    write(
        &img.join("image.yaml"),
        &format!("from: scratch\ncontents: [{{src: data, dest: /data}}]\nconfig: {{cmd: [x]}}\n# {}\n", repo.namespace),
    );
    let mut child = repo
        .command(&["assemble", "big", "--platform", "linux/amd64", "--output", "-"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let load = Command::new("docker").args(["load"]).stdin(child.stdout.take().unwrap()).output().unwrap();
    assert!(child.wait().unwrap().success());
    assert!(load.status.success(), "{}", stderr(&load));
    let tag = stdout(&load).trim_start_matches("Loaded image: ").to_string();
    let v: serde_json::Value = serde_json::from_slice(&docker(&["image", "inspect", &tag]).stdout).unwrap();
    assert!(v[0]["Size"].as_u64().unwrap() >= 256 << 20, "{v:#}");
    assert!(v[0]["RootFS"]["Layers"].as_array().unwrap().len() >= 4, "a 256 MiB tree is split into chunks");
    assert_eq!(keys_in(&repo.path().join("store")), 0);
    docker(&["rmi", "-f", &tag]);
}

#[test]
fn from_layering_both_ways_with_max_layers() {
    if !services_up("assemble_from") {
        return;
    }
    let repo = Repo::new("asm-from");
    let p = "linux/amd64";
    // image.yaml FROM an assembled farm image, with more contents than maxLayers allows.
    let child = repo.images().join("child");
    let mut yaml = String::from("from: hello-assembled\nmaxLayers: 4\ncontents:\n");
    for i in 0..6 {
        write(&child.join(format!("f{i}/file.txt")), &format!("file {i}\n"));
        yaml.push_str(&format!("  - {{src: f{i}, dest: /files/f{i}}}\n"));
    }
    // Owners, modes, a symlink and a hard link (git cannot hold one: made here).
    write(&child.join("links/target.txt"), "target\n");
    std::fs::hard_link(child.join("links/target.txt"), child.join("links/hard.txt")).unwrap();
    std::os::unix::fs::symlink("target.txt", child.join("links/sym")).unwrap();
    yaml.push_str("  - {src: links, dest: /links, owner: 1000, group: 2000, mode: \"0600\"}\n");
    yaml.push_str("config: {cmd: [sh, -c, 'cat /files/*/file.txt | wc -l; echo $GREETING']}\n");
    write(&child.join("image.yaml"), &yaml);
    let file = repo.path().join("child.tar");
    let r = assemble(&repo, &["child", "--platform", p, "--output", &format!("docker-archive:{}", file.display())]);
    load(&file);
    let tag = r["tag"].as_str().unwrap();
    assert_eq!(run_image(p, tag, &[]), "6\ntwo", "every file is there and the base's env is inherited");
    let v: serde_json::Value = serde_json::from_slice(&docker(&["image", "inspect", tag]).stdout).unwrap();
    assert_eq!(v[0]["RootFS"]["Layers"].as_array().unwrap().len(), 4, "2 base layers + 2 of its own: {v:#}");
    let stat = run_image(
        p,
        tag,
        &["sh", "-c", "stat -c '%n %u %g %a %h' /links/target.txt /links/hard.txt; readlink /links/sym"],
    );
    assert_eq!(
        stat, "/links/target.txt 1000 2000 600 2\n/links/hard.txt 1000 2000 600 2\ntarget.txt",
        "owners, modes, hard link and symlink kept"
    );

    // Too few layers left: a clear error.
    write(&child.join("image.yaml"), &yaml.replace("maxLayers: 4", "maxLayers: 2"));
    let out = repo.run(&["assemble", "child", "--platform", p]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("maxLayers"), "{}", stderr(&out));

    // A Dockerfile FROM an assembled image, built on the engine.
    let df = repo.images().join("on-assembled");
    write(&df.join("Dockerfile"), "FROM archfarm.local/images/hello-assembled\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo engine-built > /built\"]\nCMD [\"sh\", \"-c\", \"cat /built; echo $GREETING\"]\n");
    let report = repo.json(&["load", "on-assembled", "--platform", p, "--json"]);
    assert!(report["jobs"].as_array().unwrap().iter().any(|j| j["image"] == "hello-assembled"), "{report:#}");
    assert_eq!(run_image(p, "archfarm.local/images/on-assembled:latest", &[]), "engine-built\ntwo");

    // An image.yaml FROM a farm image built by the engine (base/busybox).
    let up = repo.images().join("on-engine");
    write(&up.join("hello.txt"), "assembled on an engine image\n");
    write(
        &up.join("image.yaml"),
        "from: base/busybox\ncontents: [{src: hello.txt, dest: /hello.txt}]\nconfig: {cmd: [cat, /hello.txt]}\n",
    );
    let file = repo.path().join("on-engine.tar");
    let r = assemble(&repo, &["on-engine", "--platform", p, "--output", &format!("docker-archive:{}", file.display())]);
    load(&file);
    assert_eq!(run_image(p, r["tag"].as_str().unwrap(), &[]), "assembled on an engine image");
}

#[test]
fn names_with_a_registry_port_and_path_work_everywhere() {
    if !services_up("assemble_names") {
        return;
    }
    let repo = Repo::new("asm-name");
    let img = repo.images().join("deep/nested/img");
    let name = format!("{REGISTRY}/{}/my/deep/image", repo.namespace);
    write(&img.join("a.txt"), "named\n");
    write(&img.join("image.yaml"), &format!("name: {name}\nfrom: hello-assembled\ncontents: [{{src: a.txt, dest: /a.txt}}]\nconfig: {{cmd: [cat, /a.txt]}}\n"));
    let file = repo.path().join("named.tar");
    let r = assemble(
        &repo,
        &["deep/nested/img", "--platform", "linux/arm64", "--output", &format!("docker-archive:{}", file.display())],
    );
    let tag = r["tag"].as_str().unwrap();
    assert_eq!(tag, format!("{name}:{}", r["key"].as_str().unwrap()));
    assert!(load(&file).contains(tag));
    assert_eq!(run_image("linux/arm64", tag, &[]), "named");
    let oci = repo.path().join("named-oci");
    assemble(&repo, &["deep/nested/img", "--platform", "linux/arm64", "--output", &format!("oci:{}", oci.display())]);
    skopeo_inspect(&format!("oci:{}:{}", oci.display(), r["key"].as_str().unwrap()));
    // The nested farm name pushes and stitches like any other.
    let b = repo.json(&["build", "deep/nested/img", "--push", "--json"]);
    let t = b["tags"].as_array().unwrap().iter().find(|t| t["image"] == "deep/nested/img").unwrap();
    let index = skopeo_raw(t["tag"].as_str().unwrap()).unwrap();
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);
    // The named image itself goes to its own registry path with docker push.
    let push = docker(&["push", tag]);
    assert!(push.status.success(), "{}", stderr(&push));
    assert!(skopeo_raw(tag).is_some(), "{tag} is in the registry");
    // ... and serves as a registry `from` (resolved to its digest for the key).
    let up = repo.images().join("from-registry");
    write(&up.join("b.txt"), "on a registry base\n");
    write(
        &up.join("image.yaml"),
        &format!(
            "from: {tag}\ncontents: [{{src: b.txt, dest: /b.txt}}]\nconfig: {{cmd: [sh, -c, 'cat /a.txt /b.txt']}}\n"
        ),
    );
    let file = repo.path().join("from-registry.tar");
    let r = assemble(
        &repo,
        &["from-registry", "--platform", "linux/arm64", "--output", &format!("docker-archive:{}", file.display())],
    );
    load(&file);
    assert_eq!(run_image("linux/arm64", r["tag"].as_str().unwrap(), &[]), "named\non a registry base");
    let out = repo.run(&["assemble", "from-registry", "--platform", "linux/amd64"]);
    assert_eq!(out.status.code(), Some(2), "the base has no amd64: {}", stderr(&out));
    assert!(stderr(&out).contains("linux/amd64"), "{}", stderr(&out));
}

fn mtime(p: &str) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

#[test]
fn the_package_image_has_a_shell_and_jq_on_amd64_and_arm64_without_touching_the_host() {
    if !services_up("assemble_packages") {
        return;
    }
    // (Files other users of a shared machine rarely change: the test must not flake.)
    let watched = ["/var/lib/dpkg/arch", "/etc/apt/apt.conf.d", "/etc/apt/sources.list.d"];
    let before: Vec<_> = watched.iter().map(|p| mtime(p)).collect();
    let repo = Repo::new("asm-pkg");
    for (p, uname) in [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")] {
        let arch = p.trim_start_matches("linux/");
        let file = repo.path().join(format!("pkg-{arch}.tar"));
        let r =
            assemble(&repo, &["pkg-shell", "--platform", p, "--output", &format!("docker-archive:{}", file.display())]);
        let tag = r["tag"].as_str().unwrap();
        load(&file);
        let out = run_image(p, tag, &["bash", "-c", "echo '{\"two\": [1, 2]}' | jq -c .two; echo $HOSTTYPE"]);
        assert_eq!(out, format!("[1,2]\n{uname}"), "{p}");
    }
    let after: Vec<_> = watched.iter().map(|p| mtime(p)).collect();
    assert_eq!(before, after, "the host's apt and dpkg state is untouched");
}

#[test]
fn bad_input_is_refused_with_exit_2_naming_the_file_and_nothing_is_stored() {
    let repo = Repo::new("asm-bad");
    let img = repo.images().join("bad");
    write(&img.join("ok.txt"), "ok\n");
    let base_tar = repo.path().join("amd64-only.tar");
    {
        // A valid docker-archive for amd64 only, made by the assembler itself.
        let r = repo.run(&[
            "assemble",
            "hello-assembled",
            "--platform",
            "linux/amd64",
            "--output",
            &format!("docker-archive:{}", base_tar.display()),
        ]);
        assert!(r.status.success(), "{}", stderr(&r));
    }
    let store = repo.path().join("store");
    let blobs_before = blobs_in(&store);
    let keys_before = keys_in(&store);
    std::fs::copy(&base_tar, img.join("amd64.tar")).unwrap();
    // Hostile archives: a path climbing out, an absolute path, a link out, a huge header.
    let hostile = |name: &str, entry: &[u8], typ: u8, link: &[u8], size: u64| {
        let mut h = [0u8; 512];
        h[..entry.len()].copy_from_slice(entry);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = typ;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..265].copy_from_slice(b"ustar  \0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut v = h.to_vec();
        v.extend(vec![0u8; (size.min(4096) as usize).div_ceil(512) * 512]);
        v.extend([0u8; 1024]);
        std::fs::write(img.join(name), v).unwrap();
    };
    hostile("dotdot.tar", b"../evil", b'0', b"", 1);
    hostile("absolute.tar", b"/etc/evil", b'0', b"", 1);
    hostile("linkout.tar", b"manifest.json", b'2', b"../../etc/passwd", 0);
    hostile("huge.tar", b"manifest.json", b'0', b"", 0o77777777777);
    std::fs::write(img.join("corrupt.tar"), b"this is not a tar archive at all, just some bytes").unwrap();

    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        ("contents: [{src: ok.txt, dest: /ok.txt}]\nmaxLayer: 3\n".into(), "linux/amd64", vec!["maxLayer"]),
        ("contents: [{src: ok.txt, dest: /ok.txt, owner: 1, colour: red}]\n".into(), "linux/amd64", vec!["colour"]),
        ("contents: [{src: ../hello-assembled/busybox.amd64, dest: /x}]\n".into(), "linux/amd64", vec!["escapes"]),
        ("contents: [{src: missing.txt, dest: /x}]\n".into(), "linux/amd64", vec!["missing.txt"]),
        ("packages: [no-such-package-archfarm]\n".into(), "linux/amd64", vec!["no-such-package-archfarm"]),
        ("from: docker-archive:amd64.tar\n".into(), "linux/arm64", vec!["linux/arm64"]),
        ("from: docker-archive:dotdot.tar\n".into(), "linux/amd64", vec!["dotdot.tar", "unsafe"]),
        ("from: docker-archive:absolute.tar\n".into(), "linux/amd64", vec!["absolute.tar", "unsafe"]),
        ("from: docker-archive:linkout.tar\n".into(), "linux/amd64", vec!["linkout.tar", "outside"]),
        ("from: docker-archive:huge.tar\n".into(), "linux/amd64", vec!["huge.tar"]),
        ("from: docker-archive:corrupt.tar\n".into(), "linux/amd64", vec!["corrupt.tar"]),
        ("from: oci:../hello-assembled\n".into(), "linux/amd64", vec!["escapes"]),
        ("maxLayers: 500\n".into(), "linux/amd64", vec!["maxLayers"]),
    ];
    for (yaml, platform, needles) in cases {
        write(&img.join("image.yaml"), &yaml);
        let out = repo.run(&["assemble", "bad", "--platform", platform]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {err}");
        assert!(err.contains("image.yaml") || err.contains("bad"), "{yaml}: names the file or image: {err}");
        for n in needles {
            assert!(err.contains(n), "{yaml}: expected '{n}' in: {err}");
        }
        assert_eq!(blobs_in(&store), blobs_before, "{yaml}: nothing written to the store");
        assert_eq!(keys_in(&store), keys_before, "{yaml}: no memo entry");
    }
    let tmp: Vec<PathBuf> = std::fs::read_dir(store.join("tmp")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(tmp.is_empty(), "no staging left behind: {tmp:?}");
}

#[test]
fn build_push_stitches_assembled_images_and_a_one_file_change_ships_one_new_layer() {
    if !services_up("assemble_push") {
        return;
    }
    let repo = Repo::new("asm-push");
    let manifests = |report: &serde_json::Value| -> Vec<(String, Vec<String>)> {
        let mut v: Vec<(String, Vec<String>)> = report["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["image"] == "hello-assembled")
            .map(|j| {
                let m = skopeo_raw(j["pushed"].as_str().unwrap()).unwrap();
                let layers =
                    m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
                (j["platform"].as_str().unwrap().to_string(), layers)
            })
            .collect();
        v.sort();
        v
    };
    let first = repo.json(&["build", "hello-assembled", "--push", "--json"]);
    let tag = first["tags"][0]["tag"].as_str().unwrap();
    assert_eq!(index_platforms(&skopeo_raw(tag).unwrap()), ["linux/amd64", "linux/arm64"]);
    let before = manifests(&first);
    let cache = repo.path().join("store/assemble/layers");
    let made = || std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    let made_before = made();
    write(&repo.images().join("hello-assembled/rootfs/etc/motd"), "changed\n");
    let second = repo.json(&["build", "hello-assembled", "--push", "--json"]);
    for j in second["jobs"].as_array().unwrap() {
        assert_eq!(j["outcome"], "built", "{j:#}");
    }
    let after = manifests(&second);
    // One layer was made (the rootfs one, the same for both platforms); the busybox
    // layers came from the layer cache without being read or compressed again.
    assert_eq!(made() - made_before, 1, "one new layer made");
    for ((p, old), (_, new)) in before.iter().zip(&after) {
        assert_eq!(old.len(), new.len());
        let changed = old.iter().zip(new).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 1, "{p}: only the rootfs layer changes: {old:?} -> {new:?}");
        assert_eq!(old.last(), new.last(), "{p}: the busybox layer is reused");
    }

    // The new layer is uploaded while the image is assembled; the push then sends only
    // the config and finds both layers there.
    write(&repo.images().join("hello-assembled/rootfs/etc/motd"), "changed again\n");
    let out = repo.run(&["-v", "build", "hello-assembled", "--platform", "linux/amd64", "--push"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    let field = |line: &str, name: &str| -> u64 {
        let v = line.split(&format!("{name}=")).nth(1).unwrap_or_else(|| panic!("{name} in {line}"));
        v.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    let early = log.lines().find(|l| l.contains("uploaded layers while assembling")).expect(&log);
    let pushed = log.lines().find(|l| l.contains("pushed image")).expect(&log);
    assert_eq!(field(early, "blobs_uploaded"), 1, "{log}");
    assert_eq!((field(pushed, "blobs_uploaded"), field(pushed, "blobs_skipped")), (1, 2), "{log}");
    let j = &repo.json(&["build", "hello-assembled", "--platform", "linux/amd64", "--push", "--json"])["jobs"][0];
    let m = skopeo_raw(j["pushed"].as_str().unwrap()).unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), 2, "{m:#}");
}
