//! Input that archfarm used to take silently or report wrongly, and failures it used to
//! blame on the wrong party (issue 11, points 6 to 9): each case runs the real binary
//! (with the real engine and registries where the case needs them) and checks the exit
//! code and that the message names the variable, flag, file, image or path concerned.

mod common;
mod publish_support;
use common::*;

/// The first connection to `listener`, waiting at most `secs`; fails the test (with
/// archfarm's stderr) if `child` exits first.
fn accept_within(listener: &std::net::TcpListener, child: &mut std::process::Child, secs: u64) -> std::net::TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match listener.accept() {
            Ok((stream, _)) => return stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        if child.try_wait().unwrap().is_some() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("archfarm exited before connecting: {err}");
        }
        assert!(std::time::Instant::now() < deadline, "archfarm did not connect within {secs}s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Every numeric ARCHFARM_* tunable with a bad value stops the run with exit 2, naming
/// the variable and what it accepts (they used to fall back to their defaults in silence).
#[test]
fn bad_tunables_in_the_environment_are_refused_naming_the_variable() {
    let repo = Repo::bare("envvars");
    repo.write("images/a/Dockerfile", "FROM scratch\n");
    for (var, value, accepts) in [
        ("ARCHFARM_ENGINE_TIMEOUT", "abc", "seconds greater than 0"),
        ("ARCHFARM_BUILDER_TIMEOUT", "xyz", "seconds greater than 0"),
        ("ARCHFARM_REGISTRY_ATTEMPTS", "0", "1 or more"),
        ("ARCHFARM_REGISTRY_TIMEOUT", "-1", "seconds greater than 0"),
        ("ARCHFARM_REGISTRY_CHUNK_SIZE", "0", "4096 or more"),
        ("ARCHFARM_OFFLINE", "maybe", "1, true, yes or on"),
        ("ARCHFARM_LOG", "archfarm=loud", "ARCHFARM_LOG"),
    ] {
        let out = repo.command(&["list", "--names"]).env(var, value).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {err}");
        assert!(err.contains(var) && err.contains(accepts), "{var}={value}: {err}");
    }
    // Empty is unset, as for every other variable.
    let out = repo.command(&["list", "--names"]).env("ARCHFARM_REGISTRY_TIMEOUT", "").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Stopped by a signal, archfarm exits as shells report it: 128 + the signal's number,
/// so 130 for Ctrl-C and 143 for SIGTERM (SIGTERM used to give 130 too). The run is
/// held in a registry request to a listener that accepts and never answers.
#[test]
fn sigint_exits_130_and_sigterm_exits_143() {
    use nix::sys::signal::{kill, Signal};
    for (signal, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        let repo = Repo::bare("signals");
        repo.write("images/a/Dockerfile", "FROM scratch\n");
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let registry = format!("{}/ns", silent.local_addr().unwrap());
        let mut child = repo
            .command(&["build", "--push", "--registry", &registry])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The run is under way once it connects to the registry.
        let _held = accept_within(&silent, &mut child, 60);
        kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{signal}: {}", stderr(&out));
        assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    }
}

/// `--registry host:99999` is refused naming the flag (it used to be refused later by the
/// HTTP client with a message naming neither the flag nor the variable).
#[test]
fn a_registry_port_out_of_range_names_the_flag_or_variable() {
    let repo = Repo::bare("regport");
    repo.write("images/a/Dockerfile", "FROM scratch\n");
    let out = repo.run(&["--registry", "host:99999/ns", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--registry") && stderr(&out).contains("99999"), "{}", stderr(&out));
    let out = repo.command(&["list"]).env("ARCHFARM_REGISTRY", "host:99999/ns").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("environment variable ARCHFARM_REGISTRY"), "{}", stderr(&out));
}

/// Settings for an image that does not exist are refused naming the entry: a typo would
/// otherwise leave the image it was meant for without them.
#[test]
fn settings_for_an_image_that_does_not_exist_are_refused() {
    let repo = Repo::bare("nosuch");
    repo.write("images/base/busybox/Dockerfile", "FROM scratch\n");
    repo.write("archfarm.yaml", "images:\n  base/bsybox: {platforms: [amd64]}\n");
    let out = repo.run(&["list", "--names"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("images.base/bsybox") && err.contains("archfarm.yaml"), "{err}");
}

/// `--images` and `--store` given as flags are relative to the working directory even
/// when `--config` names a file elsewhere (they used to be taken relative to the config's
/// folder); paths written in the file stay relative to the file's folder.
#[test]
fn flag_paths_are_relative_to_the_working_directory() {
    let repo = Repo::bare("relflags");
    repo.write("tree/images/from-flag/Dockerfile", "FROM scratch\n");
    repo.write("other/imgs/from-file/Dockerfile", "FROM scratch\n");
    repo.write("other/x.yaml", "images_dir: imgs\n");
    let names = |args: &[&str]| {
        let out = repo.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let by_flag = names(&["--images", "tree/images", "--config", "other/x.yaml", "list", "--names"]);
    assert_eq!(by_flag, "from-flag");
    assert_eq!(names(&["--config", "other/x.yaml", "list", "--names"]), "from-file");
}

/// A user's registry that is down gets advice about that registry, not about the
/// bundled one that `ci/services.sh` starts on 127.0.0.1:5000, nor for a name that does
/// not resolve.
#[test]
fn a_down_registry_is_not_mistaken_for_the_bundled_one() {
    let repo = Repo::bare("downreg");
    repo.write("images/a/Dockerfile", "FROM scratch\n");
    // Bind, then drop: nothing listens on the port.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let registry = format!("{addr}/ns");
    let out = repo
        .command(&["build", "--push", "--registry", &registry])
        .env("ARCHFARM_REGISTRY_ATTEMPTS", "1")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&addr.to_string()) && err.contains("fix the address"), "{err}");
    assert!(!err.contains("ci/services.sh") && !err.contains("starts one"), "{err}");

    // A name that does not resolve is told apart from a port nobody listens on.
    let out = repo
        .command(&["build", "--push", "--registry", "registry.archfarm.invalid/ns"])
        .env("ARCHFARM_REGISTRY_ATTEMPTS", "1")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("registry.archfarm.invalid") && err.contains("does not resolve"), "{err}");
    assert!(!err.contains("start that registry"), "{err}");
}

/// A builder whose TLS files do not exist is a configuration error (exit 2) naming the
/// builder and the file, for `build` and `builders` alike (it used to make the builder
/// "unhealthy" and fail the job with exit 1).
#[test]
fn missing_builder_tls_files_are_a_configuration_error() {
    if !services_up("tls_files") {
        return;
    }
    let repo = Repo::bare("tlsfiles");
    repo.write("images/a/Dockerfile", "FROM scratch\nCOPY nonce /nonce\n");
    repo.write("images/a/nonce", &repo.namespace);
    repo.write(
        "archfarm.yaml",
        "builders:\n  - {name: box, endpoint: 'tcp://127.0.0.1:2376', \
         tls: {ca: certs/ca.pem, cert: certs/cert.pem, key: certs/key.pem}}\n",
    );
    let missing = repo.path().join("certs/ca.pem").display().to_string();
    for args in [&["build", "a", "--platform", "linux/amd64"][..], &["builders"][..]] {
        let out = repo.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("builder box") && err.contains(&missing) && err.contains("tls.ca"), "{args:?}: {err}");
    }
}

/// A repository with a good Dockerfile image, an image.yaml that does not parse, and a
/// Dockerfile image built FROM the bad one.
fn repo_with_a_bad_recipe(name: &str) -> Repo {
    let repo = Repo::bare(name);
    repo.write("images/good/Dockerfile", "FROM scratch\nCOPY nonce /nonce\n");
    repo.write("images/good/nonce", &repo.namespace);
    repo.write("images/bad/image.yaml", "from: [unclosed\n");
    repo.write("images/child/Dockerfile", "FROM archfarm.local/images/bad\n");
    repo
}

/// One bad image.yaml no longer stops `list` and `build` of the other images: `list`
/// shows it (and its child) as invalid with the reason and lists the rest; `build` of
/// everything builds the good image, reports both, and exits 2 (bad input, to be fixed
/// rather than retried); `build good` does not mention them.
#[test]
fn one_bad_recipe_is_reported_for_its_image_and_the_rest_goes_on() {
    if !services_up("bad_recipe") {
        return;
    }
    let repo = repo_with_a_bad_recipe("badrecipe");
    let listing = repo.json(&["list", "--json"]);
    let state = |image: &str| -> Vec<(String, String)> {
        let img = listing["images"].as_array().unwrap().iter().find(|i| i["image"] == image);
        let platforms =
            img.unwrap_or_else(|| panic!("{image} not listed: {listing:#}"))["platforms"].as_array().unwrap();
        platforms
            .iter()
            .map(|p| (p["state"].as_str().unwrap().into(), p["reason"].as_str().unwrap_or_default().into()))
            .collect()
    };
    for (s, reason) in state("bad") {
        assert_eq!(s, "invalid");
        assert!(reason.contains("images/bad/image.yaml") && reason.contains("from"), "{reason}");
    }
    for (s, reason) in state("child") {
        assert_eq!(s, "invalid");
        assert!(reason.starts_with("its parent bad for linux/"), "{reason}");
    }
    assert!(state("good").iter().all(|(s, _)| s == "missing"), "{listing:#}");

    let out = repo.run(&["build", "--platform", "linux/amd64", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job_outcomes(&report, "good"), [("linux/amd64".to_string(), "built".to_string())]);
    for image in ["bad", "child"] {
        let jobs = jobs_by(&report, image);
        assert_eq!(jobs.len(), 1, "{report:#}");
        assert_eq!((jobs[0]["outcome"].as_str(), jobs[0]["stage"].as_str()), (Some("failed"), Some("recipe")));
    }
    assert!(
        stderr(&out).contains("error: bad for linux/amd64: ") && stderr(&out).contains("image.yaml"),
        "{}",
        stderr(&out)
    );

    let out = repo.run(&["build", "good", "--platform", "linux/amd64"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("bad"), "{}", stderr(&out));
    // Asked for by name, the bad image is a usage error naming its file.
    let out = repo.run(&["hash", "child", "--platform", "amd64"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("its parent bad") && stderr(&out).contains("image.yaml"), "{}", stderr(&out));
}

/// A FROM cycle is reported for the platform asked for (it used to be reported for the
/// first platform of the table that had it, linux/386).
#[test]
fn a_from_cycle_is_reported_for_the_requested_platform() {
    let repo = Repo::bare("cycle");
    repo.write("images/a/Dockerfile", "FROM archfarm.local/images/b\n");
    repo.write("images/b/Dockerfile", "FROM archfarm.local/images/a\n");
    let out = repo.run(&["hash", "a", "--platform", "linux/amd64"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("FROM cycle for linux/amd64: ") && !err.contains("386"), "{err}");
}

/// When pushing images that were already cached fails, the summary counts them as
/// cached and says what failed (it used to say "0 built, 0 cached"), and the JSON
/// keeps where each came from with the stage that failed.
#[test]
fn a_failed_push_of_cached_jobs_is_summarised_as_such() {
    if !services_up("push_summary") || !publish_support::tools_up("push_summary") {
        return;
    }
    let repo = Repo::bare("pushsum");
    for image in ["one", "two"] {
        repo.write(&format!("images/{image}/Dockerfile"), "FROM scratch\nCOPY nonce /nonce\n");
        repo.write(&format!("images/{image}/nonce"), &format!("{image} {}", repo.namespace));
    }
    let out = repo.run(&["build", "--platform", "linux/amd64"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let read_only = publish_support::TestRegistry::start_read_only();
    let registry = format!("{}/ns", read_only.addr);
    let out = repo.run(&["build", "--platform", "linux/amd64", "--push", "--registry", &registry]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("0 built, 2 cached; 2 failed (push: 2)"), "{err}");
    let out = repo.run(&["build", "--platform", "linux/amd64", "--push", "--registry", &registry, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for image in ["one", "two"] {
        let j = &jobs_by(&report, image)[0];
        assert_eq!(
            (j["outcome"].as_str(), j["source"].as_str(), j["stage"].as_str()),
            (Some("failed"), Some("store"), Some("push")),
            "{j:#}"
        );
    }
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        use nix::mount::{mount, MsFlags};
        let dir = tempfile::tempdir().unwrap();
        let options = format!("size={size}");
        mount(Some("tmpfs"), dir.path(), Some("tmpfs"), MsFlags::empty(), Some(options.as_str()))
            .expect("mounting a tmpfs (the test runs as root, as ci/services.sh sets up)");
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount(self.dir.path());
    }
}

/// A full disk under the store while an engine's export streams in is archfarm's own
/// error: it names the path and the free space, blames no builder, tries no other
/// builder and leaves nothing in the store (it used to say "trying another builder").
#[test]
fn a_full_store_during_an_engine_export_is_a_local_error_not_the_builders() {
    if !services_up("store_full") {
        return;
    }
    let repo = Repo::bare("storefull");
    // 3 MB that do not compress, into a 2 MiB store.
    let noise: Vec<u8> = {
        use sha2::Digest;
        let mut block = sha2::Sha256::digest(repo.namespace.as_bytes()).to_vec();
        let mut out = Vec::with_capacity(3 << 20);
        while out.len() < 3 << 20 {
            block = sha2::Sha256::digest(&block).to_vec();
            out.extend_from_slice(&block);
        }
        out
    };
    std::fs::create_dir_all(repo.path().join("images/big")).unwrap();
    std::fs::write(repo.path().join("images/big/noise.bin"), noise).unwrap();
    repo.write("images/big/Dockerfile", "FROM scratch\nCOPY noise.bin /noise.bin\n");
    let store = Tmpfs::mount("2m");
    let out = repo
        .command(&["build", "big", "--platform", "linux/amd64", "--json"])
        .env("ARCHFARM_STORE", store.dir.path())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device") && err.contains(" free of "), "{err}");
    assert!(err.contains(&store.dir.path().display().to_string()) && err.contains("this machine's disk"), "{err}");
    assert!(!err.contains("another builder") && !err.contains("on builder"), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs_by(&report, "big")[0]["stage"], "build", "{report:#}");
    // Nothing half-written: no memo entry, no staging left.
    let left = |sub: &str| std::fs::read_dir(store.dir.path().join(sub)).map(|d| d.count()).unwrap_or(0);
    assert_eq!((left("keys"), left("tmp")), (0, 0));
}
