//! The builder fleet on real engines: the extra dockerd on 127.0.0.1:2376 and :2377
//! (ci/extra-dockerd.sh) act as remote builders. Jobs spread across them; a platform a
//! builder declares native goes there; a builder killed mid-build loses its job to
//! another and the run completes; SIGTERM stops the builds on every builder and leaves
//! no image, tag or memo entry behind; `archfarm binfmt` reads the real handlers.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AMD_BOX: &str = "tcp://127.0.0.1:2376";
const ARM_BOX: &str = "tcp://127.0.0.1:2377";

/// The real services plus the two extra engines.
fn fleet_up(test: &str) -> bool {
    engines_up(test, &[AMD_BOX, ARM_BOX])
}

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ci").join(name)
}

fn write_config(repo: &Repo, yaml: &str) {
    std::fs::write(repo.path().join("archfarm.yaml"), yaml).unwrap();
}

/// An image whose RUN step takes `seconds` and whose command line carries `marker`.
fn add_slow_image(repo: &Repo, marker: &str, seconds: u32) {
    let dir = repo.images().join("slow");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM archfarm.local/images/base/busybox\nRUN echo {marker} && sleep {seconds} && uname -m > /arch\nCMD [\"cat\", \"/arch\"]\n"
        ),
    )
    .unwrap();
}

fn jobs(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["jobs"].as_array().unwrap().clone()
}

/// Polls `cond` every 100 ms until it holds or `secs` pass.
fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// Running containers on `endpoint` whose command mentions `marker`.
/// RUN steps of `marker` running on the engine at `endpoint`, as containers: the classic
/// builder's (BuildKit runs its steps outside the engine's container list, so the fault
/// tests that watch for them use `buildkit: false`; tests/buildkit.rs covers BuildKit's
/// cancellation).
fn running_with(endpoint: &str, marker: &str) -> usize {
    let out = docker(&["-H", endpoint, "ps", "--no-trunc", "--format", "{{.Command}}"]);
    stdout(&out).lines().filter(|l| l.contains(marker)).count()
}

fn images_labelled(endpoint: &str, key: &str) -> String {
    stdout(&docker(&["-H", endpoint, "image", "ls", "-q", "--filter", &format!("label=dev.archfarm.key={key}")]))
}

#[test]
fn jobs_spread_across_builders_and_declared_natives_get_their_platform() {
    if !fleet_up("fleet_spread") {
        return;
    }
    // Two equal builders with one slot each: the two children of base/busybox run at
    // once, one on each (the second sees the first builder full).
    let repo = Repo::dockerfile_only("fs");
    write_config(
        &repo,
        &format!("builders:\n  - {{name: box-a, endpoint: '{AMD_BOX}', jobs: 1}}\n  - {{name: box-b, endpoint: '{ARM_BOX}', jobs: 1}}\n"),
    );
    let report = repo.json(&["build", "--platform", "linux/amd64", "--json"]);
    let mut used: Vec<String> = Vec::new();
    for j in jobs(&report) {
        assert_eq!(j["outcome"], "built", "{j:#}");
        assert_eq!(j["route"], "native", "{j:#}");
        let b = j["builder"].as_str().unwrap().to_string();
        // The builder the report names really holds the image (its key label).
        let endpoint = if b == "box-a" { AMD_BOX } else { ARM_BOX };
        assert!(!images_labelled(endpoint, j["key"].as_str().unwrap()).is_empty(), "{j:#}");
        let log = std::fs::read_to_string(j["log"].as_str().unwrap()).unwrap();
        assert!(log.starts_with(&format!("# archfarm: routed to builder {b} ")), "{log}");
        used.push(b);
    }
    used.sort();
    used.dedup();
    assert_eq!(used, ["box-a", "box-b"], "{report:#}");
    // Neither runs arm64 natively; both emulate it with this machine's QEMU handlers.
    let report = repo.json(&["build", "--platform", "linux/arm64", "--json"]);
    for j in jobs(&report) {
        assert_eq!(j["route"], "emulated", "{j:#}");
        let log = std::fs::read_to_string(j["log"].as_str().unwrap()).unwrap();
        assert!(log.lines().next().unwrap().contains("no healthy builder runs linux/arm64 natively"), "{log}");
    }

    // One builder declares arm64 native: every arm64 job goes there, natively; amd64
    // jobs go to the builder whose engine reports amd64. Parents come from the store.
    let repo = Repo::dockerfile_only("fn");
    write_config(
        &repo,
        &format!(
            "builders:\n  - {{name: amd-box, endpoint: '{AMD_BOX}', jobs: 2}}\n  - name: arm-box\n    endpoint: '{ARM_BOX}'\n    platforms: [linux/arm64]\n    jobs: 2\n"
        ),
    );
    let report = repo.json(&["build", "--push", "--json"]);
    assert_eq!(jobs(&report).len(), 6, "{report:#}");
    for j in jobs(&report) {
        let want = if j["platform"] == "linux/arm64" { "arm-box" } else { "amd-box" };
        assert_eq!(j["builder"], want, "{j:#}");
        assert_eq!(j["route"], "native", "{j:#}");
        let log = std::fs::read_to_string(j["log"].as_str().unwrap()).unwrap();
        let first = log.lines().next().unwrap();
        assert!(first.contains(&format!("routed to builder {want}")) && first.contains("natively"), "{first}");
    }
    // A second run builds nothing, and cached jobs name no builder.
    let again = repo.json(&["build", "--push", "--json"]);
    for j in jobs(&again) {
        assert_eq!(j["outcome"], "cached", "{j:#}");
        assert!(j.get("builder").is_none() && j.get("route").is_none(), "{j:#}");
    }
    // The arm64 RUN step ran on arm-box (under QEMU on this amd64 host).
    let uname = jobs(&report).into_iter().find(|j| j["image"] == "uname" && j["platform"] == "linux/arm64").unwrap();
    let run =
        docker(&["run", "--rm", "--network", "none", "--platform", "linux/arm64", uname["pushed"].as_str().unwrap()]);
    assert_eq!(stdout(&run), "aarch64", "{}", stderr(&run));
}

#[test]
fn a_builder_killed_mid_build_loses_its_job_and_the_run_completes() {
    if fleet_up("fleet_kill") {
        builder_fault_mid_build("2378", nix::sys::signal::Signal::SIGKILL, "it stopped answering");
    }
}

#[test]
fn a_builder_that_hangs_mid_build_loses_its_job_and_the_run_completes() {
    if fleet_up("fleet_hang") {
        builder_fault_mid_build("2380", nix::sys::signal::Signal::SIGSTOP, "stopped answering (no ping");
    }
}

/// Starts a throwaway engine on `port`, lists it first (so it gets the first jobs),
/// sends its dockerd `signal` while it runs a slow RUN step, and checks that the run
/// completes on the other builder with every platform.
fn builder_fault_mid_build(port: &str, signal: nix::sys::signal::Signal, why: &str) {
    let victim = format!("tcp://127.0.0.1:{port}");
    let docker0 = || Command::new("ip").args(["link", "show", "docker0"]).output().is_ok_and(|o| o.status.success());
    let had_docker0 = docker0();
    let st = Command::new("bash").arg(script("extra-dockerd.sh")).arg(port).status().unwrap();
    assert!(st.success(), "could not start the throwaway engine");
    // Starting an extra engine must not take the main engine's bridge away.
    assert_eq!(docker0(), had_docker0, "starting an extra dockerd removed docker0");
    let state = std::env::var("ARCHFARM_STATE").unwrap_or_else(|_| "/var/lib/archfarm-ci".into());
    let pid: i32 =
        std::fs::read_to_string(format!("{state}/dockerd-{port}/dockerd.pid")).unwrap().trim().parse().unwrap();

    let repo = Repo::dockerfile_only(&format!("f{port}"));
    let marker = format!("slow-{}", repo.namespace);
    add_slow_image(&repo, &marker, 15);
    write_config(
        &repo,
        &format!(
            "builders:\n  - {{name: victim, endpoint: '{victim}', jobs: 2, buildkit: false}}\n  - {{name: survivor, endpoint: '{AMD_BOX}', jobs: 2, buildkit: false}}\n"
        ),
    );
    let child = repo
        .command(&["build", "slow", "--push", "--json"])
        .env("ARCHFARM_BUILDER_TIMEOUT", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The victim is running a slow RUN step: kill its engine.
    let caught = wait_until(120, || running_with(&victim, &marker) > 0);
    if caught {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    // Bring the throwaway engine back and stop it cleanly (its containerd and shims too).
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGCONT);
    let _ = Command::new("bash").arg(script("extra-dockerd.sh")).arg(port).status();
    let _ = Command::new("bash").arg(script("extra-dockerd.sh")).args(["--stop", port]).status();
    assert!(caught, "the victim never ran the slow step:\n{}", stderr(&out));

    assert!(out.status.success(), "the run failed:\n{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let slow: Vec<_> = jobs(&report).into_iter().filter(|j| j["image"] == "slow").collect();
    assert_eq!(slow.len(), 2, "{report:#}");
    let mut retried = 0;
    for j in &slow {
        assert_eq!(j["outcome"], "built", "{j:#}");
        assert_eq!(j["builder"], "survivor", "{j:#}");
        let log = std::fs::read_to_string(j["log"].as_str().unwrap()).unwrap();
        if log.contains("builder victim failed") {
            retried += 1;
            assert!(log.contains(why) || stderr(&out).contains(why), "{log}\n{}", stderr(&out));
            assert!(log.starts_with("# archfarm: routed to builder victim"), "{log}");
        }
    }
    assert!(retried >= 1, "no job says it was moved off the victim: {report:#}");
    assert!(stderr(&out).contains("builder victim failed"), "{}", stderr(&out));

    // The keys are those of a clean plan, and the stitched index has every platform.
    let listing = repo.json(&["list", "--json"]);
    let slow_listed = listing["images"].as_array().unwrap().iter().find(|i| i["image"] == "slow").unwrap().clone();
    for p in slow_listed["platforms"].as_array().unwrap() {
        let j = slow.iter().find(|j| j["platform"] == p["platform"]).unwrap();
        assert_eq!(j["key"], p["key"]);
        assert_eq!(p["state"], "local+registry", "{p:#}");
    }
    let tag = report["tags"].as_array().unwrap().iter().find(|t| t["image"] == "slow").unwrap();
    assert_eq!(tag["tag"], slow_listed["canonical_tag"]);
    let index = skopeo_raw(tag["tag"].as_str().unwrap()).unwrap();
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);

    // A clean run of the same tree on another engine (the local one, which holds none of
    // it until the `docker run`s below pull it), into a fresh store and namespace: the
    // same digests, job by job, because engine builds are made reproducible.
    write_config(&repo, "builders:\n  - {name: local, endpoint: 'unix:///var/run/docker.sock', buildkit: false}\n");
    let clean = repo
        .command(&["build", "slow", "--push", "--json"])
        .env("ARCHFARM_STORE", repo.path().join("clean-store"))
        .env("ARCHFARM_REGISTRY", format!("{REGISTRY}/{}-clean", repo.namespace))
        .output()
        .unwrap();
    assert!(clean.status.success(), "the clean run failed:\n{}", stderr(&clean));
    let clean: serde_json::Value = serde_json::from_slice(&clean.stdout).unwrap();
    let digest = |j: &serde_json::Value| j["digest"].as_str().unwrap_or_else(|| panic!("no digest: {j:#}")).to_string();
    let mut compared = 0;
    for j in jobs(&report) {
        let twin = jobs(&clean).into_iter().find(|c| c["image"] == j["image"] && c["platform"] == j["platform"]);
        let twin = twin.unwrap_or_else(|| panic!("no clean job for {j:#}"));
        assert_eq!(twin["outcome"], "built", "{twin:#}");
        assert_eq!(digest(&twin), digest(&j), "{} {}: the clean run's digest differs", j["image"], j["platform"]);
        compared += 1;
    }
    assert!(compared >= 4, "{report:#}");

    for (platform, want) in [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")] {
        let j = slow.iter().find(|j| j["platform"] == platform).unwrap();
        let run = docker(&["run", "--rm", "--network", "none", "--platform", platform, j["pushed"].as_str().unwrap()]);
        assert_eq!(stdout(&run), want, "{}", stderr(&run));
    }
}

#[test]
fn sigterm_stops_the_builds_on_every_builder_and_leaves_nothing_half_written() {
    if !fleet_up("fleet_sigterm") {
        return;
    }
    let repo = Repo::dockerfile_only("ft");
    let marker = format!("term-{}", repo.namespace);
    add_slow_image(&repo, &marker, 300);
    write_config(
        &repo,
        &format!(
            "builders:\n  - {{name: amd-box, endpoint: '{AMD_BOX}', buildkit: false}}\n  - {{name: arm-box, endpoint: '{ARM_BOX}', platforms: [linux/arm64], buildkit: false}}\n"
        ),
    );
    let keys: Vec<(String, String)> = ["linux/amd64", "linux/arm64"]
        .iter()
        .map(|p| {
            let out = repo.run(&["hash", "slow", "--platform", p]);
            assert!(out.status.success(), "{}", stderr(&out));
            (p.to_string(), stdout(&out))
        })
        .collect();
    let mut child = repo
        .command(&["build", "slow", "--push", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let both = wait_until(120, || running_with(AMD_BOX, &marker) > 0 && running_with(ARM_BOX, &marker) > 0);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let exited = wait_until(30, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    assert!(both, "the slow step never ran on both builders");
    assert!(exited, "archfarm did not exit within 30s of SIGTERM");
    assert_eq!(status.code(), Some(143), "SIGTERM: 128 + 15");

    // The engines cancel the builds when the connection closes: no container of the
    // build is left running, and no image carries the keys.
    for endpoint in [AMD_BOX, ARM_BOX] {
        assert!(
            wait_until(60, || running_with(endpoint, &marker) == 0),
            "a container of the interrupted build still runs on {endpoint}"
        );
    }
    for (platform, key) in &keys {
        for endpoint in [AMD_BOX, ARM_BOX] {
            assert_eq!(images_labelled(endpoint, key), "", "an image for {platform} carries the key on {endpoint}");
            let tag = format!("{REGISTRY}/{}/slow:{}-{key}", repo.namespace, platform.trim_start_matches("linux/"));
            assert!(
                !docker(&["-H", endpoint, "image", "inspect", &tag]).status.success(),
                "{tag} exists on {endpoint}"
            );
            assert!(skopeo_raw(&tag).is_none(), "{tag} is in the registry");
        }
        assert!(!repo.path().join(format!("store/keys/{key}.json")).exists(), "a memo entry for {platform}");
    }
}

#[test]
fn binfmt_lists_the_real_handlers_and_install_needs_root() {
    if !services_up("fleet_binfmt") {
        return;
    }
    let repo = Repo::dockerfile_only("fb");
    let out = repo.run(&["binfmt", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["host"], "linux/amd64");
    // ci/services.sh registers qemu-aarch64 with the F flag.
    let arm = v["emulates"].as_array().unwrap().iter().find(|e| e["platform"]["architecture"] == "arm64").unwrap();
    assert_eq!(arm["handler"], "qemu-aarch64");
    assert_eq!(arm["fix_binary"], true);
    assert!(Path::new(arm["interpreter"].as_str().unwrap()).exists());

    // Everything is registered already: --install (root here) changes nothing.
    let out = repo.run(&["binfmt", "--install", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arm = v["installed"].as_array().unwrap().iter().find(|e| e["handler"] == "qemu-aarch64").unwrap();
    assert_eq!(arm["action"], "already registered");

    // Not root: a clear usage error, nothing written.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_archfarm"),
            "binfmt",
            "--install",
        ])
        .current_dir("/")
        .env_remove("ARCHFARM_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("needs root"), "{}", stderr(&out));
}

#[test]
fn builders_lists_health_versions_and_platforms() {
    if !fleet_up("fleet_builders") {
        return;
    }
    let repo = Repo::dockerfile_only("fl");
    write_config(
        &repo,
        &format!(
            "builders:\n  - {{name: amd-box, endpoint: '{AMD_BOX}'}}\n  - {{name: arm-box, endpoint: '{ARM_BOX}', platforms: [aarch64], jobs: 2}}\n  - {{name: far, endpoint: 'tcp://127.0.0.1:9', emulates: [riscv64]}}\n"
        ),
    );
    let start = Instant::now();
    let out = repo.command(&["builders", "--json"]).env("ARCHFARM_BUILDER_TIMEOUT", "3").output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(20), "the listing waits for a dead builder too long");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b = v["builders"].as_array().unwrap();
    assert_eq!(b[0]["healthy"], true);
    assert_eq!(b[0]["native"], serde_json::json!(["linux/amd64"]));
    assert_eq!(b[0]["native_from"], "engine");
    assert!(b[0]["emulates"].as_array().unwrap().contains(&serde_json::json!("linux/arm64")), "{v:#}");
    assert!(b[0]["version"].as_str().unwrap().starts_with("20.10"), "{v:#}");
    assert_eq!(b[1]["native"], serde_json::json!(["linux/arm64"]));
    assert_eq!(b[1]["native_from"], "declared");
    assert_eq!(b[1]["jobs"], 2);
    assert_eq!(b[2]["healthy"], false);
    assert!(b[2]["error"].as_str().unwrap().contains("127.0.0.1:9"), "{v:#}");

    // A typo in builders is a usage error naming the file and field.
    write_config(&repo, "builders:\n  - {name: x, endpoint: 'tcp://h:1', job: 2}\n");
    let out = repo.run(&["builders"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("archfarm.yaml") && stderr(&out).contains("job"), "{}", stderr(&out));
}

#[test]
fn tls_builders_are_verified_against_their_ca_with_a_client_certificate() {
    if !services_up("fleet_tls") {
        return;
    }
    let repo = Repo::dockerfile_only("tls");
    let certs = repo.path().join("tls");
    std::fs::create_dir_all(&certs).unwrap();
    make_ca(&certs, "ca");
    make_ca(&certs, "other-ca");
    make_cert(&certs, "ca", "server", "serverAuth,clientAuth");
    make_cert(&certs, "ca", "client", "clientAuth");
    make_cert(&certs, "other-ca", "stranger", "clientAuth");
    // The engine's folder: what ci/extra-dockerd.sh expects.
    let engine_tls = certs.join("engine");
    std::fs::create_dir_all(&engine_tls).unwrap();
    for (from, to) in [("ca.pem", "ca.pem"), ("server-cert.pem", "cert.pem"), ("server-key.pem", "key.pem")] {
        std::fs::copy(certs.join(from), engine_tls.join(to)).unwrap();
    }
    let port = "2379";
    let st = Command::new("bash")
        .arg(script("extra-dockerd.sh"))
        .arg(port)
        .env("ARCHFARM_DOCKERD_TLS", &engine_tls)
        .status()
        .unwrap();
    assert!(st.success(), "could not start the TLS engine");

    let tls = |ca: &str, who: &str| format!("{{ca: tls/{ca}.pem, cert: tls/{who}-cert.pem, key: tls/{who}-key.pem}}");
    write_config(
        &repo,
        &format!(
            "builders:\n  - {{name: secure, endpoint: 'tcp://127.0.0.1:{port}', tls: {}}}\n  - {{name: plain, endpoint: 'tcp://127.0.0.1:{port}'}}\n  - {{name: wrong-ca, endpoint: 'tcp://127.0.0.1:{port}', tls: {}}}\n  - {{name: stranger, endpoint: 'tcp://127.0.0.1:{port}', tls: {}}}\n",
            tls("ca", "client"),
            tls("other-ca", "client"),
            tls("ca", "stranger"),
        ),
    );
    let out = repo.command(&["builders", "--json"]).env("ARCHFARM_BUILDER_TIMEOUT", "3").output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let health: Vec<(String, bool)> = v["builders"]
        .as_array()
        .map(|b| b.iter().map(|b| (b["name"].as_str().unwrap().to_string(), b["healthy"] == true)).collect())
        .unwrap_or_default();

    // Build on the verified builder alone.
    write_config(
        &repo,
        &format!("builders:\n  - {{name: secure, endpoint: 'tcp://127.0.0.1:{port}', tls: {}}}\n", tls("ca", "client")),
    );
    let built = repo.run(&["build", "base/busybox", "--platform", "linux/amd64", "--json"]);
    let _ = Command::new("bash").arg(script("extra-dockerd.sh")).args(["--stop", port]).status();

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        health,
        [("secure".into(), true), ("plain".into(), false), ("wrong-ca".into(), false), ("stranger".into(), false)],
        "{v:#}"
    );
    assert!(v["builders"][0]["version"].as_str().unwrap().starts_with("20.10"), "{v:#}");
    assert!(built.status.success(), "{}", stderr(&built));
    let report: serde_json::Value = serde_json::from_slice(&built.stdout).unwrap();
    assert_eq!(report["jobs"][0]["builder"], "secure", "{report:#}");
}

/// Kills and reaps a child process on drop.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ssh_builders_are_reached_through_docker_system_dial_stdio() {
    if !services_up("fleet_ssh") {
        return;
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        // The fleet's ssh bridge needs an sshd to talk to (ci/services.sh installs openssh-server).
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "fleet_ssh: no /usr/sbin/sshd in CI");
        eprintln!("SKIP fleet_ssh: no /usr/sbin/sshd");
        return;
    }
    let repo = Repo::dockerfile_only("ssh");
    let d = repo.path().join("ssh");
    std::fs::create_dir_all(&d).unwrap();
    for key in ["host_key", "id"] {
        let st =
            Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(d.join(key)).status().unwrap();
        assert!(st.success());
    }
    std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let port = 2222;
    std::fs::write(
        d.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {0}/host_key\nAuthorizedKeysFile {0}/authorized_keys\nPidFile {0}/sshd.pid\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n",
            d.display()
        ),
    )
    .unwrap();
    let _sshd = Reaped(
        Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .spawn()
            .unwrap(),
    );
    // The client: ssh on PATH, with this test's key and no host-key prompt.
    std::fs::write(
        d.join("ssh_config"),
        format!("Host *\n  IdentityFile {}/id\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n", d.display()),
    )
    .unwrap();
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("ssh");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec /usr/bin/ssh -F {}/ssh_config \"$@\"\n", d.display())).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let listening = wait_until(20, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(listening, "sshd did not listen: {}", std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default());

    write_config(&repo, &format!("builders:\n  - {{name: over-ssh, endpoint: 'ssh://root@127.0.0.1:{port}'}}\n"));
    let out = repo.command(&["builders", "--json"]).env("PATH", &path).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["builders"][0]["healthy"], true, "{v:#}");
    assert!(v["builders"][0]["version"].as_str().unwrap().starts_with("20.10"), "{v:#}");
    let report = {
        let out = repo
            .command(&["build", "base/busybox", "--platform", "linux/amd64", "--json"])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(report["jobs"][0]["builder"], "over-ssh", "{report:#}");
    assert_eq!(report["jobs"][0]["outcome"], "built", "{report:#}");
    // An unreachable ssh builder is unhealthy, with ssh's own words.
    write_config(&repo, "builders:\n  - {name: nowhere, endpoint: 'ssh://root@127.0.0.1:9'}\n");
    let out =
        repo.command(&["builders", "--json"]).env("PATH", &path).env("ARCHFARM_BUILDER_TIMEOUT", "3").output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["builders"][0]["healthy"], false, "{v:#}");
    assert!(v["builders"][0]["error"].as_str().unwrap().contains("ssh said"), "{v:#}");
}

#[test]
fn a_failing_recipe_is_not_retried_and_unplaceable_jobs_are_named() {
    if !fleet_up("fleet_recipe") {
        return;
    }
    let repo = Repo::dockerfile_only("fr");
    let dir = repo.images().join("broken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM archfarm.local/images/base/busybox\nRUN echo failing-on-purpose && false\n",
    )
    .unwrap();
    write_config(
        &repo,
        &format!("builders:\n  - {{name: box-a, endpoint: '{AMD_BOX}', jobs: 1}}\n  - {{name: box-b, endpoint: '{ARM_BOX}', jobs: 1}}\n"),
    );
    let out = repo.run(&["build", "broken", "--platform", "linux/amd64", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let broken = jobs(&report).into_iter().find(|j| j["image"] == "broken").unwrap();
    assert_eq!(broken["outcome"], "failed");
    assert!(broken["error"].as_str().unwrap().contains("RUN echo failing-on-purpose && false"), "{broken:#}");
    let log = std::fs::read_to_string(broken["log"].as_str().unwrap()).unwrap();
    assert_eq!(log.matches("routed to builder").count(), 1, "a recipe failure was retried:\n{log}");
    assert!(!stderr(&out).contains("trying another builder"), "{}", stderr(&out));

    // The only builder is down: every job that needs a build is named as not placed
    // (base/busybox is in the store already), and the run fails.
    write_config(&repo, "builders:\n  - {name: gone, endpoint: 'tcp://127.0.0.1:9'}\n");
    let out = repo
        .command(&["build", "--platform", "linux/amd64", "--json"])
        .env("ARCHFARM_BUILDER_TIMEOUT", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for image in ["uname", "greeter", "broken"] {
        assert!(err.contains(&format!("error: {image} for linux/amd64: could not be placed: ")), "{err}");
    }
    assert!(err.contains("(gone: unhealthy: "), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let busybox = jobs(&report).into_iter().find(|j| j["image"] == "base/busybox").unwrap();
    assert_eq!(busybox["outcome"], "cached", "{busybox:#}");
}
