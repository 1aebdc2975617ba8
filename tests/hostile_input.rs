//! Hostile and broken input to the assembler (issue 11): bases whose layers climb out
//! (made with Python's tarfile, as docker-archives, OCI layouts and registry images),
//! real bases that must still pass, owners past 2^21 through `docker load`, `dest`
//! spellings, and messages that say what was found.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes a base image from a JSON spec (`{"layers": [[entry...]...], "format":
/// "docker-archive" | "oci", "nest": N, "corrupt_layer": bool}`, entry `{"name", "type":
/// file | dir | symlink | link, "target"}`) with Python's tarfile, names exactly as given.
const MAKE_BASE: &str = r#"
import gzip, hashlib, io, json, os, sys, tarfile

def layer(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for e in entries:
            ti = tarfile.TarInfo(e["name"])
            kind = e.get("type", "file")
            data = b"x" if kind == "file" else b""
            ti.mode = 0o755 if kind == "dir" else 0o644
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, e["target"]
            elif kind == "link":
                ti.type, ti.linkname = tarfile.LNKTYPE, e["target"]
            else:
                ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()

def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

spec = json.load(open(sys.argv[1]))
out = sys.argv[2]
tars = [layer(l) for l in spec["layers"]]
if spec.get("corrupt_layer"):
    tars[-1] = b"\x1f\x8b\x08\x00garbage that is no deflate stream" + bytes(600)
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                     "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in tars]}}).encode()
if spec.get("format", "docker-archive") == "docker-archive":
    with tarfile.open(out, "w") as a:
        def add(name, b):
            ti = tarfile.TarInfo(name)
            ti.size = len(b)
            a.addfile(ti, io.BytesIO(b))
        for i, t in enumerate(tars):
            add(f"l{i}/layer.tar", t)
        add("config.json", config)
        add("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": None,
                                          "Layers": [f"l{i}/layer.tar" for i in range(len(tars))]}]).encode())
else:
    os.makedirs(os.path.join(out, "blobs/sha256"))
    def blob(b, media_type):
        with open(os.path.join(out, "blobs/sha256", sha(b)[7:]), "wb") as f:
            f.write(b)
        return {"mediaType": media_type, "digest": sha(b), "size": len(b)}
    gz = lambda t: t if spec.get("corrupt_layer") and t is tars[-1] else gzip.compress(t, mtime=0)
    layers = [blob(gz(t), "application/vnd.oci.image.layer.v1.tar+gzip") for t in tars]
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": blob(config, "application/vnd.oci.image.config.v1+json"), "layers": layers}
    top = blob(json.dumps(m).encode(), "application/vnd.oci.image.manifest.v1+json")
    top["platform"] = {"os": "linux", "architecture": "amd64"}
    for _ in range(spec.get("nest", 0)):
        ix = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [top]}
        top = blob(json.dumps(ix).encode(), "application/vnd.oci.image.index.v1+json")
    with open(os.path.join(out, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    with open(os.path.join(out, "index.json"), "w") as f:
        f.write(json.dumps({"schemaVersion": 2, "manifests": [top]}))
"#;

/// Prints `name uid gid type` for every entry of every layer of a docker-archive.
const LIST_LAYERS: &str = r#"
import json, sys, tarfile
with tarfile.open(sys.argv[1]) as outer:
    manifest = json.load(outer.extractfile("manifest.json"))
    for path in manifest[0]["Layers"]:
        with tarfile.open(fileobj=outer.extractfile(path)) as layer:
            for m in layer:
                print(m.name, m.uid, m.gid, m.type.decode())
"#;

fn python(script: &str, args: &[&Path]) -> String {
    let out = Command::new("python3").arg("-c").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "python3: {}", stderr(&out));
    stdout(&out)
}

/// Writes the base described by `spec` to `out` (see [`MAKE_BASE`]).
fn make_base(spec: serde_json::Value, out: &Path) {
    let spec_file = out.with_extension("spec.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    python(MAKE_BASE, &[&spec_file, out]);
    std::fs::remove_file(spec_file).unwrap();
}

fn blobs_in(store: &Path) -> usize {
    std::fs::read_dir(store.join("blobs/sha256")).map(|d| d.count()).unwrap_or(0)
}

fn keys_in(store: &Path) -> usize {
    std::fs::read_dir(store.join("keys")).map(|d| d.count()).unwrap_or(0)
}

fn staging_left(store: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(store.join("tmp")).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
}

/// `archfarm assemble IMAGE --platform linux/amd64`, refused with exit 2, leaving nothing
/// in the store; returns stderr.
fn refused(repo: &Repo, image: &str, yaml: &str) -> String {
    let store = repo.path().join("store");
    let (blobs, keys) = (blobs_in(&store), keys_in(&store));
    repo.write(&format!("images/{image}/image.yaml"), yaml);
    let out = repo.run(&["assemble", image, "--platform", "linux/amd64"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{yaml}: {err}");
    assert!(!err.contains("linux/amd64: assembling"), "{yaml}: the context said once: {err}");
    assert_eq!((blobs_in(&store), keys_in(&store)), (blobs, keys), "{yaml}: nothing stored: {err}");
    assert!(staging_left(&store).is_empty(), "{yaml}: no staging left: {:?}", staging_left(&store));
    err
}

/// `archfarm assemble IMAGE --platform linux/amd64 --output docker-archive:OUT`; the tag.
fn assemble_to_archive(repo: &Repo, image: &str, out: &Path) -> String {
    let output = format!("docker-archive:{}", out.display());
    let run = repo.run(&["assemble", image, "--platform", "linux/amd64", "--output", &output]);
    assert!(run.status.success(), "assemble {image}: {}", stderr(&run));
    stdout(&run).split_whitespace().next().unwrap().to_string()
}

fn entry(name: &str) -> serde_json::Value {
    serde_json::json!({"name": name})
}

fn symlink(name: &str, target: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "type": "symlink", "target": target})
}

fn hardlink(name: &str, target: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "type": "link", "target": target})
}

#[test]
fn hostile_base_layers_are_refused_naming_the_archive_layer_and_entry_and_nothing_is_stored() {
    let registry = services_up("hostile_bases");
    let repo = Repo::bare("hostile-bases");
    repo.write("images/evil/ok.txt", "ok\n");
    let cases: Vec<(Vec<Vec<serde_json::Value>>, &str, &str)> = vec![
        (vec![vec![entry("../evil")]], "'../evil' has a '..' part", "1 of 1"),
        (vec![vec![entry("/etc/evil")]], "'/etc/evil' is absolute", "1 of 1"),
        (
            vec![vec![symlink("link", "/etc"), entry("link/evil")]],
            "'link/evil' is written through the symlink 'link' (-> '/etc')",
            "1 of 1",
        ),
        (
            vec![vec![entry("ok"), symlink("link", "/etc")], vec![entry("link/evil")]],
            "'link/evil' is written through the symlink 'link' (-> '/etc')",
            "2 of 2",
        ),
        (vec![vec![hardlink("h", "../../etc/passwd")]], "'h' is a hard link to '../../etc/passwd'", "1 of 1"),
        (vec![vec![hardlink("h", "/etc/passwd")]], "'h' is a hard link to '/etc/passwd', which is absolute", "1 of 1"),
        (
            vec![vec![symlink("link", "/etc")], vec![hardlink("h", "link/passwd")]],
            "'h' is a hard link to 'link/passwd', which goes through the symlink 'link'",
            "2 of 2",
        ),
        (
            vec![vec![symlink("link", "/etc")], vec![entry("link/.wh.passwd")]],
            "'link/.wh.passwd' is written through the symlink 'link'",
            "2 of 2",
        ),
    ];
    for (i, (layers, why, layer)) in cases.into_iter().enumerate() {
        let archive = repo.images().join(format!("evil/case{i}.tar"));
        let layout = repo.images().join(format!("evil/case{i}"));
        make_base(serde_json::json!({"layers": layers}), &archive);
        make_base(serde_json::json!({"layers": layers, "format": "oci"}), &layout);
        let mut froms = vec![(format!("docker-archive:case{i}.tar"), format!("case{i}.tar"))];
        froms.push((format!("oci:case{i}"), format!("case{i}")));
        if registry {
            let reference = format!("{REGISTRY}/{}/hostile:case{i}", repo.namespace);
            let out = Command::new("skopeo")
                .args(["copy", "--quiet", "--dest-tls-verify=false"])
                .arg(format!("oci:{}", layout.display()))
                .arg(format!("docker://{reference}"))
                .output()
                .unwrap();
            assert!(out.status.success(), "skopeo copy: {}", stderr(&out));
            froms.push((reference.clone(), reference));
        }
        for (from, named) in froms {
            let err = refused(&repo, "evil", &format!("from: {from}\ncontents: [{{src: ok.txt, dest: /ok.txt}}]\n"));
            for needle in [named.as_str(), &format!("layer {layer} (diff_id sha256:"), why, "refusing the base"] {
                assert!(err.contains(needle), "{from}: expected '{needle}' in: {err}");
            }
        }
    }
    // `build` reports the same refusal per job and exits 2 too: the fix is in the input.
    let out = repo.run(&["build", "evil", "--platform", "linux/amd64"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "build of a hostile base: {err}");
    assert!(err.contains("refusing the base"), "{err}");
    let context = "assembling evil for linux/amd64";
    assert!(!err.contains(&format!("{context}: {context}")), "the context said once: {err}");
    assert_eq!(keys_in(&repo.path().join("store")), 0, "nothing recorded: {err}");
}

#[test]
fn real_bases_pass_the_layer_check() {
    let repo = Repo::new("real-bases");
    let img = repo.images().join("on-real");
    repo.write("images/on-real/ok.txt", "ok\n");
    // Debian's merged /usr as the host has it (bin -> usr/bin, absolute and climbing
    // relative links in /etc and zoneinfo), with `./` names as `tar -C dir .` writes them,
    // and a second layer as Docker writes one: a whiteout, an opaque folder, a symlink
    // replaced by a folder and a file written where a removed symlink was.
    let tree = img.join("debian-like.tar");
    let script = r#"
import os, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.GNU_FORMAT) as t:
    for p in ["bin", "lib", "sbin", "etc/alternatives", "etc/os-release", "usr/lib/os-release",
              "usr/share/zoneinfo/Europe", "usr/share/zoneinfo/posix"]:
        if os.path.lexists("/" + p):
            t.add("/" + p, arcname="./" + p, recursive=True)
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(&tree).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    make_base(
        serde_json::json!({"layers": [
            [{"name": "./", "type": "dir"}, {"name": "./usr/", "type": "dir"}, {"name": "./usr/lib/", "type": "dir"},
             symlink("./lib", "usr/lib"), symlink("./bin", "usr/bin"), symlink("./etc/mtab", "../proc/self/mounts"),
             symlink("./usr/bin/sh", "/bin/busybox"), entry("./usr/lib/libc.so.6"),
             hardlink("./usr/lib/libc.so", "usr/lib/libc.so.6"), symlink("./var/lib/apt", "/tmp"),
             entry("./etc/alternatives/pager")],
            [entry("etc/alternatives/.wh.pager"), entry("etc/.wh..wh..opq"), {"name": "var/lib/apt", "type": "dir"},
             entry("var/lib/apt/lists"), entry(".wh.lib"), entry("lib/new"), entry("usr/lib/more")]
        ]}),
        &img.join("docker-like.tar"),
    );
    let mut froms = vec!["docker-archive:docker-like.tar".to_string()];
    // The host's tree as the one layer of a docker-archive.
    let sha = |p: &Path| {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap())))
    };
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(&tree)]}});
    std::fs::write(img.join("config.json"), config.to_string()).unwrap();
    std::fs::write(img.join("manifest.json"), r#"[{"Config": "config.json", "Layers": ["debian-like.tar"]}]"#).unwrap();
    let st = Command::new("tar")
        .args(["-cf", "host.tar", "debian-like.tar", "config.json", "manifest.json"])
        .current_dir(&img)
        .status()
        .unwrap();
    assert!(st.success());
    for f in ["debian-like.tar", "config.json", "manifest.json"] {
        std::fs::remove_file(img.join(f)).unwrap();
    }
    froms.push("docker-archive:host.tar".into());
    // The bundled hello-assembled, as a docker-archive.
    assemble_to_archive(&repo, "hello-assembled", &img.join("hello.tar"));
    froms.push("docker-archive:hello.tar".into());
    // The busybox image the CI Docker Hub mirror serves: as an OCI layout (ci/oci_seed.py),
    // from the mirror, and as dockerd pulls and `docker save`s it.
    let seed = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/oci_seed.py"))
        .arg(img.join("seed"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("images/base/busybox"))
        .arg("1.31.1")
        .output()
        .unwrap();
    assert!(seed.status.success(), "oci_seed.py: {}", stderr(&seed));
    froms.push("oci:seed".into());
    if hub_mirror_up("real_bases") {
        let busybox = format!("{HUB_MIRROR}/library/busybox:1.31.1");
        froms.push(busybox.clone());
        let pinned = format!("{HUB_MIRROR}/library/busybox@{}", raw_digest(&busybox).unwrap());
        let pulled = docker(&["pull", "--platform", "linux/amd64", &pinned]);
        assert!(pulled.status.success(), "{}", stderr(&pulled));
        let saved = docker(&["save", "-o", img.join("busybox.tar").to_str().unwrap(), &pinned]);
        assert!(saved.status.success(), "{}", stderr(&saved));
        froms.push("docker-archive:busybox.tar".into());
    }
    for from in froms {
        repo.write("images/on-real/image.yaml", &format!("from: {from}\ncontents: [{{src: ok.txt, dest: /ok.txt}}]\n"));
        let out = repo.run(&["assemble", "on-real", "--platform", "linux/amd64"]);
        assert!(out.status.success(), "{from}: {}", stderr(&out));
    }
}

#[test]
fn owners_past_2_pow_21_survive_docker_load_and_python_reads_them() {
    if !services_up("large_ids") {
        return;
    }
    let repo = Repo::new("large-ids");
    let img = repo.images().join("owners");
    std::fs::create_dir_all(&img).unwrap();
    for f in ["busybox.amd64", "rootfs"] {
        let from = repo.images().join("hello-assembled").join(f);
        if from.is_dir() {
            copy_dir(&from, &img.join(f));
        } else {
            std::fs::copy(&from, img.join(f)).unwrap();
        }
    }
    repo.write("images/owners/id.txt", "owned\n");
    repo.write("images/owners/data/x", "x\n");
    repo.write("images/owners/nonce.txt", &repo.namespace);
    let yaml = "contents:\n\
        \x20 - {src: rootfs, dest: /}\n\
        \x20 - {src: busybox.amd64, dest: /bin/busybox, mode: \"0755\"}\n\
        \x20 - {src: id.txt, dest: /id.txt, uid: 1234567890, gid: 2097152}\n\
        \x20 - {src: data, dest: /data, uid: 4294967294, gid: 3000000000}\n\
        \x20 - {src: nonce.txt, dest: /nonce.txt}\n\
        config: {entrypoint: [/bin/busybox]}\n";
    repo.write("images/owners/image.yaml", yaml);
    let archive = repo.path().join("owners.tar");
    let tag = assemble_to_archive(&repo, "owners", &archive);

    let listed = python(LIST_LAYERS, &[&archive]);
    for want in ["id.txt 1234567890 2097152 0", "data 4294967294 3000000000 5", "data/x 4294967294 3000000000 0"] {
        assert!(listed.lines().any(|l| l == want), "Python's tarfile reads '{want}' in:\n{listed}");
    }

    let load = docker(&["load", "-i", archive.to_str().unwrap()]);
    assert!(load.status.success(), "docker load: {}", stderr(&load));
    let run =
        docker(&["run", "--rm", "--network", "none", &tag, "stat", "-c", "%n %u:%g", "/id.txt", "/data", "/data/x"]);
    assert!(run.status.success(), "docker run: {}", stderr(&run));
    assert_eq!(stdout(&run), "/id.txt 1234567890:2097152\n/data 4294967294:3000000000\n/data/x 4294967294:3000000000");
    docker(&["rmi", &tag]);

    // An id the kernel cannot have names the field.
    repo.write("images/owners/image.yaml", &yaml.replace("uid: 1234567890", "uid: 4294967295"));
    let out = repo.run(&["assemble", "owners", "--platform", "linux/amd64"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("image.yaml") && err.contains("`contents[2].uid`") && err.contains("4294967294"), "{err}");
}

#[test]
fn dest_spellings_are_normalised_a_trailing_slash_copies_into_and_dest_root_for_a_file_is_an_error() {
    let repo = Repo::bare("dest-spellings");
    repo.write("images/dests/a.txt", "a\n");
    repo.write("images/dests/b.txt", "b\n");
    repo.write("images/dests/c.txt", "c\n");
    repo.write("images/dests/dir/d.txt", "d\n");
    repo.write("images/dests/nonce.txt", &repo.namespace);
    repo.write(
        "images/dests/image.yaml",
        "contents:\n\
         \x20 - {src: a.txt, dest: /etc/}\n\
         \x20 - {src: b.txt, dest: //x//y}\n\
         \x20 - {src: c.txt, dest: /./z/./c}\n\
         \x20 - {src: dir, dest: /srv/}\n\
         \x20 - {src: nonce.txt, dest: /opt//./}\n",
    );
    let archive = repo.path().join("dests.tar");
    assemble_to_archive(&repo, "dests", &archive);
    let mut names: Vec<String> =
        python(LIST_LAYERS, &[&archive]).lines().map(|l| l.split(' ').next().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        ["etc", "etc/a.txt", "opt", "opt/nonce.txt", "srv", "srv/d.txt", "x", "x/y", "z", "z/c"],
        "one entry per path, no '.' or '//' entries, a.txt and nonce.txt copied into their folders"
    );

    for (dest, needle) in [
        ("/", "is the root folder itself"),
        ("//", "is the root folder itself"),
        ("\"/x\\0y\"", "contains a NUL character"),
        ("/x/../y", "contains '..'"),
    ] {
        let err = refused(&repo, "dests", &format!("contents: [{{src: a.txt, dest: {dest}}}]\n"));
        assert!(err.contains("`contents[0].dest`") && err.contains(needle), "{dest}: {err}");
        assert!(needle == "contains '..'" || !err.contains("'..'"), "{dest}: {err}");
    }
}

#[test]
fn created_deep_indexes_and_garbage_bases_say_what_was_found_with_exit_2() {
    let repo = Repo::bare("asm-messages");
    repo.write("images/msg/ok.txt", "ok\n");
    for (created, needle) in [
        ("99999999999999", "99999999999999 is after the year 9999"),
        ("-5", "-5 is before the epoch"),
        ("1.5", "1.5 is not a whole number of seconds"),
        ("yesterday", "'yesterday' is not a time"),
    ] {
        let err = refused(&repo, "msg", &format!("created: {created}\n"));
        for n in ["field `created`", needle, "`epoch`, `now` or whole seconds since the epoch from 0 to 253402300799"] {
            assert!(err.contains(n), "created: {created}: expected '{n}' in: {err}");
        }
    }

    let nested = repo.images().join("msg/nested");
    make_base(serde_json::json!({"layers": [[entry("a")]], "format": "oci", "nest": 6}), &nested);
    let err = refused(&repo, "msg", "from: oci:nested\n");
    assert!(err.contains("nests image indexes more than 4 deep") && err.contains("depth 5"), "{err}");

    // Bytes that are no tar, with control characters and bytes that are not UTF-8: the
    // message says so without echoing them.
    let mut garbage = b"\x1b[31mred\x00\xff\xfe".to_vec();
    garbage.extend((0..3000u32).map(|i| (i * 7919 % 251) as u8));
    std::fs::write(repo.images().join("msg/garbage.tar"), &garbage).unwrap();
    let corrupt = repo.images().join("msg/corrupt");
    make_base(
        serde_json::json!({"layers": [[entry("a")], [entry("b")]], "format": "oci", "corrupt_layer": true}),
        &corrupt,
    );
    let truncated = repo.images().join("msg/truncated.tar");
    make_base(serde_json::json!({"layers": [[entry("a")]]}), &truncated);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2 + 100]).unwrap();
    for (from, needle) in [
        ("docker-archive:garbage.tar", "(from: garbage.tar): not a tar archive"),
        ("oci:corrupt", "layer 2 of 2"),
        ("docker-archive:truncated.tar", "truncated.tar"),
    ] {
        let err = refused(&repo, "msg", &format!("from: {from}\n"));
        assert!(err.contains(needle), "{from}: expected '{needle}' in: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(!last.chars().any(|c| c.is_control() || c == '\u{fffd}'), "{from}: raw bytes in: {last:?}");
    }
}
