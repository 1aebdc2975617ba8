//! Shared helpers for integration tests that run the real binary against the real
//! services (dockerd, QEMU binfmt, the loopback registry from ci/services.sh).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const REGISTRY: &str = "127.0.0.1:5000";

/// A service a test needs is missing, as `msg` says: in CI (CI=true) the test fails;
/// elsewhere it says SKIP and returns false, for the test to return.
pub fn service_missing(msg: &str) -> bool {
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{msg}");
    eprintln!("SKIP {msg}");
    false
}

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
    service_missing(&msg)
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

/// The loopback registry that plays Docker Hub (ci/hub-mirror.sh), the engines' mirror.
pub const HUB_MIRROR: &str = "127.0.0.1:5096";

/// True when the real services answer and the Docker Hub mirror does too, seeded with
/// `library/busybox:1.31.1`, and the local dockerd uses it as a registry mirror (a
/// dockerd started before the mirror must be restarted). In CI (CI=true) anything
/// missing fails the test instead of skipping it.
pub fn hub_mirror_up(test: &str) -> bool {
    if !services_up(test) {
        return false;
    }
    let seeded = skopeo_raw(&format!("{HUB_MIRROR}/library/busybox:1.31.1")).is_some();
    let info = docker(&["info", "--format", "{{json .RegistryConfig.Mirrors}}"]);
    let engine_uses_it = stdout(&info).contains(&format!("http://{HUB_MIRROR}/"));
    if seeded && engine_uses_it {
        return true;
    }
    let msg = format!(
        "{test}: Docker Hub mirror missing (library/busybox:1.31.1 on {HUB_MIRROR}: {seeded}, dockerd \
         --registry-mirror=http://{HUB_MIRROR}: {engine_uses_it}); run ci/services.sh (and restart a dockerd \
         started without the mirror)"
    );
    service_missing(&msg)
}

impl Repo {
    /// A repo with an empty images/ folder and no archfarm.yaml (the embedded default
    /// configuration), with its own store and registry namespace; the namespace is
    /// unique, so a test can write it into its images as their nonce.
    pub fn bare(name: &str) -> Repo {
        let repo = Repo::new(name);
        std::fs::remove_dir_all(repo.images()).unwrap();
        std::fs::create_dir(repo.images()).unwrap();
        repo
    }

    /// Writes `contents` to `rel` under the repo (folders created), e.g.
    /// `images/basic/busybox/Dockerfile`.
    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

/// The SHA-256 digest of the manifest or index a registry serves for `reference`
/// (`skopeo inspect --raw`, plain HTTP), or None when it has none.
pub fn raw_digest(reference: &str) -> Option<String> {
    use sha2::Digest as _;
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .unwrap();
    out.status.success().then(|| format!("sha256:{}", hex::encode(sha2::Sha256::digest(&out.stdout))))
}

/// `skopeo copy --all` between two loopback registries (plain HTTP), every platform.
pub fn skopeo_copy_all(from: &str, to: &str) {
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{from}"),
            &format!("docker://{to}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy {from} {to}: {}", stderr(&out));
}

/// The (platform, outcome) pairs of IMAGE's jobs in a `build --json` report, sorted.
/// The jobs of `image` in a `build --json` report.
pub fn jobs_by(report: &serde_json::Value, image: &str) -> Vec<serde_json::Value> {
    report["jobs"]
        .as_array()
        .expect("a build report has jobs")
        .iter()
        .filter(|j| j["image"] == image)
        .cloned()
        .collect()
}

pub fn job_outcomes(report: &serde_json::Value, image: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = jobs_by(report, image)
        .iter()
        .map(|j| (j["platform"].as_str().unwrap().to_string(), j["outcome"].as_str().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

/// `openssl` in `dir`, panicking with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

/// A P-256 key pair in `dir` as openssl makes it: (private PEM file, public PEM file).
pub fn keypair(dir: &Path, name: &str) -> (String, String) {
    let key = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    openssl(
        dir,
        &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key.to_str().unwrap()],
    );
    openssl(dir, &["pkey", "-in", key.to_str().unwrap(), "-pubout", "-out", public.to_str().unwrap()]);
    (key.display().to_string(), public.display().to_string())
}

/// True when python3 can import every module of `modules` (ci/python-tools.sh installs
/// them); in CI their absence fails the test.
pub fn python_modules_up(test: &str, modules: &str) -> bool {
    let ok = Command::new("python3").args(["-c", &format!("import {modules}")]).status().is_ok_and(|s| s.success());
    ok || service_missing(&format!("{test}: python3 lacks {modules}; run ci/python-tools.sh"))
}

/// `openssl req` options for a fresh unencrypted P-256 key.
const EC_KEY: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/// A CA in `dir`: `<ca>.pem` and `<ca>-key.pem`.
pub fn make_ca(dir: &Path, ca: &str) {
    let (key, pem, subj) = (format!("{ca}-key.pem"), format!("{ca}.pem"), format!("/CN={ca}"));
    let out = ["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj];
    openssl(dir, &[&["req", "-x509"], &EC_KEY[..], &out[..]].concat());
}

/// A certificate signed by `ca` for 127.0.0.1 with the extended key `usage`:
/// `<name>-cert.pem` and `<name>-key.pem` in `dir`.
pub fn make_cert(dir: &Path, ca: &str, name: &str, usage: &str) {
    let (key, csr, cert, ext) =
        (format!("{name}-key.pem"), format!("{name}.csr"), format!("{name}-cert.pem"), format!("{name}.ext"));
    std::fs::write(dir.join(&ext), format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n")).unwrap();
    openssl(dir, &[&["req"], &EC_KEY[..], &["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]].concat());
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}-key.pem"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

/// True when the real services answer and so does every extra engine of `endpoints`
/// (ci/extra-dockerd.sh); in CI (CI=true) a missing one fails the test.
pub fn engines_up(test: &str, endpoints: &[&str]) -> bool {
    if !services_up(test) {
        return false;
    }
    let answers = |e: &&str| {
        Command::new("docker")
            .args(["-H", e, "version", "--format", "{{.Server.Version}}"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = endpoints.iter().filter(|e| !answers(e)).copied().collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: extra engines {} missing; run ci/extra-dockerd.sh", missing.join(", "));
    service_missing(&msg)
}

/// True when headless Chromium can be driven here (ci/browser.sh installs chromium and
/// chromium-driver, ci/python-tools.sh selenium); in CI (CI=true) a missing part fails.
pub fn browser_up(test: &str) -> bool {
    if !python_modules_up(test, "selenium") {
        return false;
    }
    let missing: Vec<&str> =
        ["/usr/bin/chromium", "/usr/bin/chromedriver"].into_iter().filter(|p| !Path::new(p).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: {} missing; run ci/browser.sh", missing.join(" and "));
    service_missing(&msg)
}

/// Opens the HTML report `page` in headless Chromium at `width` x `height`, keeps a
/// screenshot under target/test-artifacts/`shot`.png, and returns what the page shows
/// (tests/common/report_page.py): its jobs, lanes, failures, console and page errors,
/// scroll width and load time.
pub fn open_report(page: &Path, width: u32, height: u32, shot: &str) -> (serde_json::Value, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let png = root.join("target/test-artifacts").join(format!("{shot}.png"));
    let out = Command::new("python3")
        .arg(root.join("tests/common/report_page.py"))
        .arg(page)
        .args([width.to_string(), height.to_string()])
        .arg(&png)
        .output()
        .unwrap();
    assert!(out.status.success(), "report_page.py {} failed:\n{}", page.display(), stderr(&out));
    let facts = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("report_page.py printed no JSON ({e}):\n{}", stdout(&out)));
    (facts, png)
}
