//! `archfarm binfmt [--install] [--json]`: which foreign platforms this machine can
//! emulate (binfmt_misc), and registering Debian's qemu-user-static handlers.

use std::path::Path;

use crate::build::binfmt::{emulations, install, BINFMT_DIR};
use crate::recipe::config::Config;
use crate::support::error::Result;

/// `archfarm binfmt [--install] [--json]`.
pub fn run(config: &Config, install_now: bool, json: bool) -> Result<bool> {
    let host = config.arches.host().ok();
    let installed = if install_now { install(&config.arches, host.as_ref())? } else { Vec::new() };
    let dir = Path::new(BINFMT_DIR);
    let mounted = dir.join("register").exists();
    let found = emulations(&config.arches, host.as_ref(), dir);
    if json {
        let v = serde_json::json!({
            "host": host.as_ref().map(|p| p.to_string()),
            "mounted": mounted,
            "emulates": found,
            "installed": installed,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(true);
    }
    for i in &installed {
        eprintln!("{} {}: {}", i.handler, i.platform, i.action);
    }
    if !mounted {
        println!("binfmt_misc is not mounted at {BINFMT_DIR}: no emulation (run `archfarm binfmt --install` as root)");
        return Ok(true);
    }
    if let Some(h) = &host {
        println!("{:<14} native", h.to_string());
    }
    for e in &found {
        let state = match (e.enabled, e.fix_binary) {
            (true, true) => "emulated",
            (true, false) => "registered without the F flag: not usable in containers (archfarm binfmt --install)",
            (false, _) => "handler disabled",
        };
        println!("{:<14} {state} ({} -> {})", e.platform.to_string(), e.handler, e.interpreter);
    }
    let missing: Vec<String> = config
        .arches
        .all()
        .filter(|a| Some(&a.oci) != host.as_ref() && !found.iter().any(|e| e.platform == a.oci))
        .map(|a| a.oci.to_string())
        .collect();
    if !missing.is_empty() {
        println!(
            "not emulated: {} (archfarm binfmt --install registers what qemu-user-static provides)",
            missing.join(", ")
        );
    }
    Ok(true)
}
