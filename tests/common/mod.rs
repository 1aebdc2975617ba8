//! Shared helpers for integration tests that run the real binary against the real
//! services (dockerd, QEMU binfmt, the loopback registry from ci/services.sh).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const REGISTRY: &str = "127.0.0.1:5000";

/// True when the real services answer. In CI (CI=true) a missing service fails the
/// test instead of skipping it.
pub fn services_up(test: &str) -> bool {
    let docker = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
    let docker_ok = docker.map(|o| o.status.success()).unwrap_or(false);
    let registry_ok = Command::new("curl")
        .args(["-sf", "--max-time", "5", &format!("http://{REGISTRY}/v2/")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if docker_ok && registry_ok {
        return true;
    }
    let msg = format!("{test}: services missing (dockerd: {docker_ok}, registry: {registry_ok}); run ci/services.sh");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIP {msg}");
    false
}

/// A private copy of the bundled images/ with its own store and registry namespace.
/// A nonce file in base/busybox (and in each assembled image) makes every key unique to
/// this test, so nothing left in the engine or registry by another test or run can
/// satisfy it.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub namespace: String,
}

impl Repo {
    pub fn new(name: &str) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("images"), &dir.path().join("images"));
        let nonce = format!("{name}-{}-{}", std::process::id(), unique());
        std::fs::write(dir.path().join("images/base/busybox/nonce.txt"), &nonce).unwrap();
        // Assembled images build FROM nothing of the farm: they get their own nonce.
        for assembled in ["hello-assembled", "pkg-shell"] {
            std::fs::write(dir.path().join("images").join(assembled).join("nonce.txt"), &nonce).unwrap();
        }
        Repo { dir, namespace: format!("t-{}", nonce.replace('_', "-").to_lowercase()) }
    }

    /// Like [`Repo::new`] without the assembled (image.yaml) images: for tests about
    /// engines, builders and make targets, whose every job runs on an engine.
    pub fn dockerfile_only(name: &str) -> Repo {
        let repo = Repo::new(name);
        remove_assembled(&repo.images());
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn images(&self) -> PathBuf {
        self.dir.path().join("images")
    }

    /// `archfarm ARGS` in this repo with its own store and registry namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_archfarm"));
        c.args(args)
            .current_dir(self.path())
            .env("ARCHFARM_REGISTRY", format!("{REGISTRY}/{}", self.namespace))
            .env("ARCHFARM_STORE", self.path().join("store"))
            .env_remove("ARCH")
            .env_remove("ARCHFARM_LOCAL_PREFIX");
        c
    }

    /// Runs and parses stdout as JSON, panicking with stderr on failure.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args);
        assert!(out.status.success(), "archfarm {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
    }
}

fn unique() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}", n)
}

/// Removes every image folder under `images` whose recipe is an image.yaml.
pub fn remove_assembled(images: &Path) {
    for e in std::fs::read_dir(images).unwrap() {
        let p = e.unwrap().path();
        if p.join("image.yaml").is_file() {
            std::fs::remove_dir_all(&p).unwrap();
        } else if p.is_dir() {
            remove_assembled(&p);
        }
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_dir(&e.path(), &target);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// `skopeo inspect --raw` of a reference in the loopback registry, parsed.
pub fn skopeo_raw(reference: &str) -> Option<serde_json::Value> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The sorted "os/arch[/variant]" platforms an index lists.
pub fn index_platforms(index: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = index["manifests"]
        .as_array()
        .expect("an index has manifests")
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut s = format!("{}/{}", p["os"].as_str().unwrap(), p["architecture"].as_str().unwrap());
            if let Some(v) = p["variant"].as_str() {
                s.push('/');
                s.push_str(v);
            }
            s
        })
        .collect();
    v.sort();
    v
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}
