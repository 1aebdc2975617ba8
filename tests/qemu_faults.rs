//! QEMU faults told apart, on real engines: the extra dockerd on 127.0.0.1:2376 and
//! :2377 (ci/extra-dockerd.sh) as builders, this machine's qemu-user-static as the
//! emulator. A real aarch64 program that crashes under QEMU fails an emulated RUN step:
//! the job is an emulator fault, tried again on the builder that runs arm64 natively,
//! or, with none, failed naming the QEMU version and what to do. A step that fails
//! without QEMU's message, or on a native route, stays the recipe's and is not retried.
//!
//! Every engine here shares this host's binfmt_misc, and the "native" arm64 builder is
//! declared, not real: it emulates too. So the crash must depend on something that
//! differs between the engines, and the RUN step crashes only on one. It reads its own
//! address from /proc/net/fib_trie: each extra engine's containers sit on that engine's
//! own bridge, 10.213.<port % 250>.0/24 (ci/extra-dockerd.sh sets it at start-up, and
//! both the classic builder's RUN containers and BuildKit's run on the engine's default
//! bridge). That is fixed per engine and cannot change between attempts, unlike load or
//! timing; ulimits and cgroup paths look the same on both engines (tried).

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;

const EMU_BOX: &str = "tcp://127.0.0.1:2376";
const ARM_BOX: &str = "tcp://127.0.0.1:2377";

/// The address prefix of the containers of the engine on `port` (ci/extra-dockerd.sh).
fn bridge_prefix(port: u16) -> String {
    format!("10.213.{}.", port % 250)
}

/// A static aarch64 ELF executable of two instructions that reads address 0: under
/// QEMU it dies of SIGSEGV and QEMU prints `qemu: uncaught target signal 11
/// (Segmentation fault) - core dumped`.
fn crashing_aarch64_program() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    let code: [u32; 2] = [0xd280_0000 /* mov x0, #0 */, 0xf940_0001 /* ldr x1, [x0] */];
    let size = 64 + 56 + 4 * code.len() as u64;
    let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
    elf.extend([0u8; 8]);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(0xb7u16.to_le_bytes()); // EM_AARCH64
    elf.extend(1u32.to_le_bytes());
    elf.extend((BASE + 64 + 56).to_le_bytes()); // entry: the code after the headers
    elf.extend(64u64.to_le_bytes()); // program headers at 64
    elf.extend(0u64.to_le_bytes());
    elf.extend(0u32.to_le_bytes());
    for half in [64u16, 56, 1, 0, 0, 0] {
        elf.extend(half.to_le_bytes());
    }
    elf.extend(1u32.to_le_bytes()); // PT_LOAD
    elf.extend(5u32.to_le_bytes()); // R+X
    for word in [0, BASE, BASE, size, size, 0x1000u64] {
        elf.extend(word.to_le_bytes());
    }
    for c in code {
        elf.extend(c.to_le_bytes());
    }
    assert_eq!(elf.len() as u64, size);
    elf
}

/// Adds image `name` whose last RUN step runs `on_crash` when it runs on the engine on
/// `port`, and records the machine otherwise. `cross`: with a cross stage
/// (`FROM --platform=$BUILDPLATFORM`), so an arm64 job is routed to a builder that runs
/// the build platform natively and emulates arm64.
fn add_image(repo: &Repo, name: &str, port: u16, on_crash: &str, cross: bool) {
    let dir = repo.images().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let crash = dir.join("crash");
    std::fs::write(&crash, crashing_aarch64_program()).unwrap();
    std::fs::set_permissions(&crash, std::fs::Permissions::from_mode(0o755)).unwrap();
    let grep = format!("grep -q ' {}' /proc/net/fib_trie", bridge_prefix(port).replace('.', "\\."));
    let mut text = String::new();
    if cross {
        text.push_str(
            "FROM --platform=$BUILDPLATFORM archfarm.local/images/base/busybox AS tools\nARG BUILDPLATFORM\n\
             RUN echo \"$BUILDPLATFORM\" > /built-on\n",
        );
    }
    text.push_str("FROM archfarm.local/images/base/busybox\n");
    if cross {
        text.push_str("COPY --from=tools /built-on /built-on\n");
    }
    // The namespace keeps the step out of the engines' build caches of earlier runs.
    let marker = &repo.namespace;
    text.push_str(&format!(
        "COPY crash /crash\nRUN echo {marker} && if {grep}; then {on_crash}; fi && uname -m > /arch\n"
    ));
    std::fs::write(dir.join("Dockerfile"), text).unwrap();
}

/// A fleet: the emulating builder (the engine reports amd64, this machine's binfmt
/// emulates arm64), and, with `native`, one that declares arm64 native (and, as an
/// arm64 machine would, emulates amd64 for cross stages).
fn write_fleet(repo: &Repo, native: bool) {
    let mut yaml =
        format!("build_platform: linux/amd64\nbuilders:\n  - {{name: emu-box, endpoint: '{EMU_BOX}', jobs: 2}}\n");
    if native {
        yaml.push_str(&format!(
            "  - name: arm-box\n    endpoint: '{ARM_BOX}'\n    platforms: [linux/arm64]\n    emulates: [linux/amd64]\n    jobs: 2\n"
        ));
    }
    std::fs::write(repo.path().join("archfarm.yaml"), yaml).unwrap();
}

/// The run's JSON report and exit code.
fn build(repo: &Repo, args: &[&str]) -> (serde_json::Value, Option<i32>, String) {
    let out = repo.run(args);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\n{}", stdout(&out), stderr(&out)));
    (report, out.status.code(), stderr(&out))
}

fn job(report: &serde_json::Value, image: &str) -> serde_json::Value {
    let jobs = jobs_by(report, image);
    assert_eq!(jobs.len(), 1, "{report:#}");
    jobs[0].clone()
}

/// This machine's QEMU for arm64 as its binfmt handler's interpreter reports it.
fn local_qemu_aarch64_version() -> String {
    let handler = std::fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64").unwrap();
    let interpreter = handler.lines().find_map(|l| l.strip_prefix("interpreter ")).unwrap().trim().to_string();
    let binary = std::fs::canonicalize(&interpreter).unwrap();
    let out = std::process::Command::new(&binary).arg("--version").output().unwrap();
    let text = stdout(&out);
    let first = text.lines().next().unwrap();
    first.split_once(" version ").unwrap_or_else(|| panic!("{binary:?} --version: {text}")).1.trim().to_string()
}

#[test]
fn an_emulator_crash_is_tried_again_on_the_native_builder() {
    if !engines_up("qemu_fault_native", &[EMU_BOX, ARM_BOX]) {
        return;
    }
    let repo = Repo::dockerfile_only("qn");
    add_image(&repo, "crashy", 2376, "/crash", true);
    write_fleet(&repo, true);
    let page = repo.path().join("run.html");
    let (report, code, err) =
        build(&repo, &["build", "crashy", "--platform", "linux/arm64", "--json", "--report", page.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}\n{report:#}");
    let j = job(&report, "crashy");
    // The run's record and its report tell the emulator fault too.
    let recorded = &repo.json(&["history", "--json"])[0];
    assert_eq!((recorded["failed"].as_u64(), recorded["exit_code"].as_i64()), (Some(0), Some(0)), "{recorded:#}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("data-job=\"crashy linux/arm64\" data-outcome=\"built\" data-route=\"native cross\""),
        "{html}"
    );
    assert!(html.contains("data-retried=\"emulator\""), "{html}");
    assert!(html.contains("emu-box (emulator): "), "{html}");
    assert_eq!(j["outcome"], "built", "{j:#}");
    assert_eq!(j["builder"], "arm-box", "{j:#}");
    assert_eq!(j["route"], "native", "{j:#}");
    assert!(j.get("fault").is_none(), "a built job has no fault: {j:#}");
    let retries = j["retries"].as_array().unwrap_or_else(|| panic!("no retries: {j:#}"));
    assert_eq!(retries.len(), 1, "{j:#}");
    assert_eq!(retries[0]["builder"], "emu-box", "{j:#}");
    assert_eq!(retries[0]["fault"], "emulator", "{j:#}");
    let said = retries[0]["error"].as_str().unwrap();
    assert!(
        said.contains("qemu: uncaught target signal 11 (Segmentation fault)")
            && said.contains(&format!("`RUN echo {} &&", repo.namespace)),
        "{said}"
    );
    assert!(err.contains("QEMU crashed") && err.contains("trying a builder that runs linux/arm64 natively"), "{err}");
    // The native attempt's log carries the first one's story, then its own routing.
    let log = std::fs::read_to_string(j["log"].as_str().unwrap()).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("# archfarm: ")).collect();
    assert!(lines[0].contains("routed to builder emu-box") && lines[0].contains("emulates it"), "{log}");
    assert!(lines[1].contains("QEMU crashed the emulated step `RUN echo"), "{log}");
    assert!(lines[2].contains("routed to builder arm-box") && lines[2].contains("natively"), "{log}");
    // The image really was built on arm-box: its engine holds it, emu-box's does not.
    let key = j["key"].as_str().unwrap();
    let labelled = |endpoint: &str| {
        stdout(&docker(&["-H", endpoint, "image", "ls", "-q", "--filter", &format!("label=dev.archfarm.key={key}")]))
    };
    assert!(!labelled(ARM_BOX).is_empty() && labelled(EMU_BOX).is_empty(), "{j:#}");
}

#[test]
fn an_emulator_crash_without_a_native_builder_names_the_qemu_version() {
    if !engines_up("qemu_fault_unretried", &[EMU_BOX]) {
        return;
    }
    let repo = Repo::dockerfile_only("qu");
    add_image(&repo, "crashy", 2376, "/crash", false);
    write_fleet(&repo, false);
    let (report, code, err) = build(&repo, &["build", "crashy", "--platform", "linux/arm64", "--json"]);
    assert_eq!(code, Some(1), "{err}\n{report:#}");
    let j = job(&report, "crashy");
    assert_eq!(j["outcome"], "failed", "{j:#}");
    assert_eq!(j["fault"], "emulator", "{j:#}");
    assert_eq!(j["route"], "emulated", "{j:#}");
    assert_eq!(j["builder"], "emu-box", "{j:#}");
    assert!(j["failing_step"].as_str().unwrap().contains(&format!("RUN echo {} &&", repo.namespace)), "{j:#}");
    eprintln!("the job's error: {}", j["error"]);
    let version = local_qemu_aarch64_version();
    let error = j["error"].as_str().unwrap();
    for want in [
        "qemu: uncaught target signal 11 (Segmentation fault)",
        "no builder can try it again natively",
        "no healthy builder runs linux/arm64 natively",
        &format!("this machine emulates linux/arm64 with QEMU {version}"),
        "platforms: [linux/arm64]",
        "archfarm binfmt --install",
        "FROM --platform=$BUILDPLATFORM",
    ] {
        assert!(error.contains(want), "{want:?} missing from: {error}");
    }
    assert_eq!(j["retries"][0]["fault"], "emulator", "{j:#}");
    // `builders --json` names the same version for the platform it emulates.
    let builders = repo.json(&["builders", "--json"]);
    assert_eq!(builders["builders"][0]["qemu_versions"]["linux/arm64"], version.as_str(), "{builders:#}");
}

#[test]
fn a_crash_without_qemus_message_or_on_a_native_route_is_the_recipes() {
    if !engines_up("qemu_fault_recipe", &[EMU_BOX, ARM_BOX]) {
        return;
    }
    let repo = Repo::dockerfile_only("qr");
    // On the emulated route, a program that says it crashed, in a shell's words, not QEMU's.
    add_image(&repo, "says-segv", 2376, "echo 'Segmentation fault (core dumped)' >&2; exit 139", true);
    // On the native route (arm-box), the real crash with QEMU's message: the recipe's.
    add_image(&repo, "native-crash", 2377, "/crash", false);
    write_fleet(&repo, true);
    let (report, code, err) =
        build(&repo, &["build", "says-segv", "native-crash", "--platform", "linux/arm64", "--json"]);
    assert_eq!(code, Some(1), "{err}\n{report:#}");
    for (image, builder, route) in [("says-segv", "emu-box", "emulated"), ("native-crash", "arm-box", "native")] {
        let j = job(&report, image);
        assert_eq!(j["outcome"], "failed", "{j:#}");
        assert_eq!(j["fault"], "recipe", "{j:#}");
        assert_eq!((j["builder"].as_str(), j["route"].as_str()), (Some(builder), Some(route)), "{j:#}");
        assert!(j.get("retries").is_none(), "not retried: {j:#}");
        assert!(j["failing_step"].as_str().unwrap().contains(&format!("RUN echo {} &&", repo.namespace)), "{j:#}");
    }
    assert!(!err.contains("QEMU crashed"), "{err}");
}
