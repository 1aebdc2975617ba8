//! QEMU user-mode emulation through the kernel's binfmt_misc: which foreign platforms
//! this machine can run (`archfarm binfmt`), and registering Debian's qemu-user-static
//! handlers without any container (`archfarm binfmt --install`; gVisor's
//! `register-cross` runs a privileged container from Docker Hub for this).
//!
//! A handler is named `qemu-<qemu name>` (the `qemu` field of the architecture table).
//! Only an enabled handler with the F (fix binary) flag works inside containers: the
//! kernel opens the interpreter when the handler is registered, so it need not exist in
//! the container's file system.
//!
//! Also what QEMU says when it, not the program it runs, ends a build step
//! ([`EMULATOR_CRASHES`], [`emulator_crash`]), and which QEMU emulates a platform here
//! ([`qemu_version`]).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::image::platform::{ArchTable, Platform};
use crate::support::error::{Error, Result};

/// Where the kernel's binfmt_misc file system is mounted.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
/// Where Debian's binfmt-support keeps the handler definitions (qemu-user-static's files).
pub const DEBIAN_BINFMTS: &str = "/usr/share/binfmts";

/// One registered handler, as `/proc/sys/fs/binfmt_misc/<name>` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Handler {
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    pub flags: String,
}

impl Handler {
    /// The F flag: the interpreter is opened at registration, so it works in containers.
    pub fn fix_binary(&self) -> bool {
        self.flags.contains('F')
    }

    /// Parses the text of a handler file.
    pub fn parse(name: &str, text: &str) -> Handler {
        let mut h =
            Handler { name: name.to_string(), enabled: false, interpreter: String::new(), flags: String::new() };
        for line in text.lines() {
            let line = line.trim();
            if line == "enabled" {
                h.enabled = true;
            } else if let Some(i) = line.strip_prefix("interpreter ") {
                h.interpreter = i.trim().to_string();
            } else if let Some(f) = line.strip_prefix("flags:") {
                h.flags = f.trim().to_string();
            }
        }
        h
    }
}

/// A foreign platform this machine can (or could) emulate.
#[derive(Debug, Clone, Serialize)]
pub struct Emulation {
    pub platform: Platform,
    pub handler: String,
    pub enabled: bool,
    pub fix_binary: bool,
    pub interpreter: String,
}

impl Emulation {
    /// Usable for container builds: enabled and with the F flag.
    pub fn usable(&self) -> bool {
        self.enabled && self.fix_binary
    }
}

/// The handlers registered in `dir`; empty when binfmt_misc is not mounted.
pub fn handlers(dir: &Path) -> Vec<Handler> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<Handler> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "register" || name == "status" {
                return None;
            }
            std::fs::read_to_string(e.path()).ok().map(|t| Handler::parse(&name, &t))
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The table's architectures (other than `host`) that have a `qemu-<name>` handler in `dir`.
pub fn emulations(arches: &ArchTable, host: Option<&Platform>, dir: &Path) -> Vec<Emulation> {
    let registered = handlers(dir);
    arches
        .all()
        .filter(|a| Some(&a.oci) != host)
        .filter_map(|a| {
            let name = format!("qemu-{}", a.qemu.as_deref()?);
            let h = registered.iter().find(|h| h.name == name)?;
            Some(Emulation {
                platform: a.oci.clone(),
                handler: name,
                enabled: h.enabled,
                fix_binary: h.fix_binary(),
                interpreter: h.interpreter.clone(),
            })
        })
        .collect()
}

/// The platforms containers on this machine can run under emulation (usable handlers).
pub fn usable_platforms(arches: &ArchTable, host: Option<&Platform>) -> Vec<Platform> {
    emulations(arches, host, Path::new(BINFMT_DIR)).into_iter().filter(|e| e.usable()).map(|e| e.platform).collect()
}

/// What QEMU's user-mode emulator prints when it ends an emulated program, as (the
/// start of the message, what it means). Each was checked against QEMU's linux-user
/// sources and against the strings of Debian 12's qemu-user-static 7.2 where it exists
/// there. A line matches when it contains the text anywhere: builders prefix output
/// (BuildKit's `#7 0.312 `, the classic builder's colour codes on stderr).
pub const EMULATOR_CRASHES: &[(&str, &str)] = &[
    // linux-user/signal.c, dump_core_and_abort (every version): the emulated program died
    // of a signal, e.g. `qemu: uncaught target signal 11 (Segmentation fault) - core
    // dumped` or `... 4 (Illegal instruction) ...`; under QEMU this is how an
    // instruction it mis-emulates or lacks (QEMU 7.x and newer CPU features) ends a step.
    ("qemu: uncaught target signal ", "the emulated program died of a signal under QEMU"),
    // linux-user/<target>/cpu_loop.c: a CPU exception QEMU cannot model for the target.
    ("qemu: unhandled CPU exception ", "QEMU met a CPU exception it cannot emulate"),
    // cpu_abort: QEMU's own fatal error.
    ("qemu: fatal: ", "QEMU aborted"),
    // linux-user/signal.c, die_from_signal (QEMU 8 and later): a host signal inside
    // QEMU itself, a QEMU bug.
    ("QEMU internal SIG", "QEMU itself crashed"),
    // linux-user/elfload.c: no room for the guest's address space (`Unable to reserve
    // 0x... bytes of virtual address space ... for use as guest address space`).
    ("Unable to reserve 0x", "QEMU could not reserve the guest's address space"),
    // linux-user/fd-trans.c (QEMU 7.x): a netlink answer QEMU cannot translate, so the
    // program (`ip`, network setup in a RUN step) gets a garbled one. Not a crash, but
    // the step failed under it; the native retry tells whether the recipe is at fault.
    ("Unknown host QEMU_IFLA type", "QEMU could not translate a netlink answer"),
];

/// An emulator crash found in a step's output: the message QEMU printed and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crash {
    pub message: String,
    pub meaning: &'static str,
}

/// The first of `lines` that carries one of the [`EMULATOR_CRASHES`] signatures.
pub fn emulator_crash<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<Crash> {
    lines.into_iter().find_map(|line| {
        EMULATOR_CRASHES.iter().find_map(|(text, meaning)| {
            let at = line.find(text)?;
            let message = without_colours(&line[at..]).trim().to_string();
            Some(Crash { message, meaning })
        })
    })
}

/// `text` without ANSI colour sequences (`ESC [ ... m`), which the classic builder
/// wraps around stderr output.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The version of the QEMU that emulates `platform` on this machine, as that binary
/// reports it (`7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)`); None when no handler for it
/// is registered or its interpreter cannot say.
///
/// Read from the registered handler's interpreter run with `--version`, not from
/// `dpkg-query -W qemu-user-static`: the handler is what the kernel runs for the
/// platform, and it need not be Debian's (tonistiigi/binfmt and multiarch/qemu-user-static
/// register their own binaries, and other distributions have no dpkg). Debian's
/// interpreters are `-binfmt-P` symlinks under whose name QEMU refuses to start outside
/// binfmt_misc, so the path is resolved first. One limit: with the F flag the kernel
/// keeps the file it opened at registration, so after an upgrade that was not followed
/// by a re-registration this names the new binary while builds still run the old one.
pub async fn qemu_version(arches: &ArchTable, platform: &Platform) -> Option<String> {
    let interpreter = emulations(arches, None, Path::new(BINFMT_DIR))
        .into_iter()
        .find(|e| &e.platform == platform && e.usable())?
        .interpreter;
    let binary = std::fs::canonicalize(&interpreter).ok()?;
    let run = tokio::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(5), run).await.ok()?.ok()?;
    parse_qemu_version(&String::from_utf8_lossy(&out.stdout))
}

/// The version in QEMU's `--version` text (`qemu-aarch64 version 7.2.22 (Debian ...)`).
fn parse_qemu_version(text: &str) -> Option<String> {
    let first = text.lines().next()?;
    let (program, version) = first.split_once(" version ")?;
    program.starts_with("qemu").then(|| version.trim().to_string()).filter(|v| !v.is_empty())
}

/// A handler definition from Debian's `/usr/share/binfmts/<name>` (`key value` lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub name: String,
    pub interpreter: String,
    pub magic: String,
    pub mask: String,
    pub offset: String,
    pub credentials: bool,
    pub preserve: bool,
}

impl Definition {
    pub fn parse(name: &str, text: &str, file: &Path) -> Result<Definition> {
        let mut d = Definition {
            name: name.to_string(),
            interpreter: String::new(),
            magic: String::new(),
            mask: String::new(),
            offset: "0".into(),
            credentials: false,
            preserve: false,
        };
        for line in text.lines() {
            let Some((k, v)) = line.trim().split_once(char::is_whitespace) else { continue };
            let v = v.trim();
            match k {
                "interpreter" => d.interpreter = v.to_string(),
                "magic" => d.magic = v.to_string(),
                "mask" => d.mask = v.to_string(),
                "offset" => d.offset = v.to_string(),
                "credentials" => d.credentials = v == "yes",
                "preserve" => d.preserve = v == "yes",
                _ => {}
            }
        }
        if d.interpreter.is_empty() || d.magic.is_empty() {
            return Err(Error::failure(format!(
                "{}: not a magic-based binfmt definition (no interpreter or magic)",
                file.display()
            )));
        }
        if [&d.name, &d.interpreter, &d.magic, &d.mask, &d.offset].iter().any(|f| f.contains(':')) {
            return Err(Error::failure(format!(
                "{}: a field contains ':', which binfmt_misc cannot take",
                file.display()
            )));
        }
        Ok(d)
    }

    /// The line for `/proc/sys/fs/binfmt_misc/register`: `:name:M:offset:magic:mask:interpreter:flags`,
    /// always with F (fix binary), plus P and C where the definition asks for them.
    pub fn register_line(&self) -> String {
        let mut flags = String::from("F");
        if self.preserve {
            flags.push('P');
        }
        if self.credentials {
            flags.push('C');
        }
        format!(":{}:M:{}:{}:{}:{}:{flags}", self.name, self.offset, self.magic, self.mask, self.interpreter)
    }
}

/// What `--install` did for one platform.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub platform: Platform,
    pub handler: String,
    /// `registered`, `re-registered with F`, `already registered`.
    pub action: String,
}

/// Registers the qemu-user-static handler (with the F flag) for every architecture of
/// the table other than `host` whose Debian definition is installed. Needs root.
pub fn install(arches: &ArchTable, host: Option<&Platform>) -> Result<Vec<Installed>> {
    install_into(arches, host, Path::new(BINFMT_DIR), Path::new(DEBIAN_BINFMTS))
}

fn install_into(arches: &ArchTable, host: Option<&Platform>, dir: &Path, defs: &Path) -> Result<Vec<Installed>> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::usage(
            "registering binfmt handlers needs root: run `sudo archfarm binfmt --install` (reading them with `archfarm binfmt` does not)",
        ));
    }
    let wanted: Vec<(Platform, String, PathBuf)> = arches
        .all()
        .filter(|a| Some(&a.oci) != host)
        .filter_map(|a| a.qemu.as_ref().map(|q| (a.oci.clone(), format!("qemu-{q}"), defs.join(format!("qemu-{q}")))))
        .collect();
    let present: Vec<_> = wanted.iter().filter(|(_, _, f)| f.is_file()).collect();
    if present.is_empty() {
        return Err(Error::failure(format!(
            "qemu-user-static is not installed (no {}/qemu-* definitions): run `apt-get install qemu-user-static`",
            defs.display()
        )));
    }
    if !dir.join("register").exists() {
        nix::mount::mount(Some("binfmt_misc"), dir, Some("binfmt_misc"), nix::mount::MsFlags::empty(), None::<&str>)
            .map_err(|e| {
                Error::failure(format!(
                    "cannot mount binfmt_misc on {}: {e} (in a container this needs --privileged)",
                    dir.display()
                ))
            })?;
    }
    let registered = handlers(dir);
    let mut out = Vec::new();
    for (platform, name, file) in present {
        let text = std::fs::read_to_string(file).map_err(|e| Error::io("reading", file, e))?;
        let def = Definition::parse(name, &text, file)?;
        if !Path::new(&def.interpreter).exists() {
            return Err(Error::failure(format!(
                "{}: interpreter {} is missing: run `apt-get install --reinstall qemu-user-static`",
                file.display(),
                def.interpreter
            )));
        }
        let action = match registered.iter().find(|h| &h.name == name) {
            Some(h) if h.enabled && h.fix_binary() => "already registered",
            Some(_) => {
                // Registered without F or disabled: replace it with an F registration.
                let path = dir.join(name);
                std::fs::write(&path, "-1")
                    .map_err(|e| Error::failure(format!("the kernel refused to remove {}: {e}", path.display())))?;
                register(dir, &def)?;
                "re-registered with F"
            }
            None => {
                register(dir, &def)?;
                "registered"
            }
        };
        out.push(Installed { platform: platform.clone(), handler: name.clone(), action: action.to_string() });
    }
    Ok(out)
}

fn register(dir: &Path, def: &Definition) -> Result<()> {
    let path = dir.join("register");
    std::fs::write(&path, def.register_line()).map_err(|e| {
        Error::failure(format!(
            "the kernel refused to register {} through {}: {e} (a handler of that name may exist, or the magic is malformed)",
            def.name,
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_files_parse() {
        let h = Handler::parse(
            "qemu-aarch64",
            "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\nmagic 7f45\nmask ffff\n",
        );
        assert!(h.enabled && h.fix_binary());
        assert_eq!(h.interpreter, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
        let h = Handler::parse("qemu-arm", "disabled\ninterpreter /usr/bin/qemu-arm\nflags: \n");
        assert!(!h.enabled && !h.fix_binary());
    }

    #[test]
    fn debian_definitions_become_register_lines_with_f() {
        let text = "package qemu-user-static\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
                    magic \\x7f\\x45\\x4c\\x46\\x02\nmask \\xff\\xff\\xff\\xff\\xff\noffset 0\ncredentials no\nfix_binary yes\npreserve yes\n";
        let d = Definition::parse("qemu-aarch64", text, Path::new("qemu-aarch64")).unwrap();
        assert_eq!(
            d.register_line(),
            ":qemu-aarch64:M:0:\\x7f\\x45\\x4c\\x46\\x02:\\xff\\xff\\xff\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:FP"
        );
        assert!(Definition::parse("x", "package y\n", Path::new("x")).is_err());
    }

    #[test]
    fn emulator_crash_signatures_are_found_in_either_builders_output() {
        let classic = [
            "---> Running in 5f1c",
            "\u{1b}[91mqemu: uncaught target signal 11 (Segmentation fault) - core dumped\n\u{1b}[0m",
        ];
        let crash = emulator_crash(classic).unwrap();
        assert_eq!(crash.message, "qemu: uncaught target signal 11 (Segmentation fault) - core dumped");
        assert_eq!(crash.meaning, "the emulated program died of a signal under QEMU");
        let buildkit =
            ["#7 0.245 compiling", "#7 0.273 qemu: uncaught target signal 4 (Illegal instruction) - core dumped"];
        assert_eq!(
            emulator_crash(buildkit).unwrap().message,
            "qemu: uncaught target signal 4 (Illegal instruction) - core dumped"
        );
        for (line, meaning) in [
            ("qemu: unhandled CPU exception 0x8 - aborting", "QEMU met a CPU exception it cannot emulate"),
            ("qemu: fatal: Lockup: can't escalate 3 to HardFault", "QEMU aborted"),
            ("QEMU internal SIGSEGV {code=MAPERR, addr=0x20}", "QEMU itself crashed"),
            (
                "qemu-aarch64: Unable to reserve 0xffff0000 bytes of virtual address space at 0x1000 (Success) for use as guest address space",
                "QEMU could not reserve the guest's address space",
            ),
            ("Unknown host QEMU_IFLA type: 54", "QEMU could not translate a netlink answer"),
        ] {
            assert_eq!(emulator_crash([line]).map(|c| c.meaning), Some(meaning), "{line}");
        }
        // A program's own crash, as a native shell reports it, is not QEMU's.
        for line in ["Segmentation fault (core dumped)", "Illegal instruction", "make: *** [all] Error 139", "qemu"] {
            assert_eq!(emulator_crash([line]), None, "{line}");
        }
    }

    #[test]
    fn qemu_version_text_parses() {
        let text =
            "qemu-aarch64 version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard\n";
        assert_eq!(parse_qemu_version(text).as_deref(), Some("7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"));
        assert_eq!(parse_qemu_version("qemu-riscv64 version 8.2.2\n").as_deref(), Some("8.2.2"));
        assert_eq!(parse_qemu_version("usage: something else\n"), None);
        assert_eq!(parse_qemu_version(""), None);
    }

    #[test]
    fn emulations_map_handler_names_through_the_arch_table() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("register"), "").unwrap();
        std::fs::write(dir.path().join("qemu-aarch64"), "enabled\ninterpreter /q\nflags: F\n").unwrap();
        std::fs::write(dir.path().join("qemu-arm"), "enabled\ninterpreter /q\nflags: \n").unwrap();
        std::fs::write(dir.path().join("qemu-mips"), "enabled\ninterpreter /q\nflags: F\n").unwrap();
        let t = ArchTable::builtin();
        let host = t.parse_platform("amd64").unwrap();
        let e = emulations(&t, Some(&host), dir.path());
        let names: Vec<_> = e.iter().map(|e| (e.platform.to_string(), e.usable())).collect();
        assert_eq!(names, [("linux/arm/v7".to_string(), false), ("linux/arm64".to_string(), true)]);
    }
}
