//! `archfarm builders`: the builders of archfarm.yaml with health, engine version, native
//! and emulated platforms, and the version of the QEMU that emulates each.

use std::collections::BTreeMap;

use crate::build::fleet::Fleet;
use crate::recipe::config::Config;
use crate::support::error::Result;

/// `archfarm builders [--json]`: every builder, probed at once within its deadline.
pub async fn run(config: Config, json: bool) -> Result<bool> {
    let fleet = Fleet::new(&config.builders, config.jobs, &config.arches);
    let status = fleet.status().await;
    if json {
        let v = serde_json::json!({ "builders": status });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        for b in &status {
            let health = match &b.error {
                None => format!("healthy, engine {}", b.version.as_deref().unwrap_or("?")),
                Some(e) => format!("UNHEALTHY: {e}"),
            };
            println!("{} {} ({health})", b.name, b.endpoint);
            if b.healthy || b.native_from == "declared" {
                let builder = match b.buildkit {
                    Some(true) => "BuildKit",
                    Some(false) => "classic builder",
                    None => "builder unknown",
                };
                println!(
                    "  jobs {}; native: {} ({}); emulates: {} ({}); {builder}",
                    b.jobs,
                    join(&b.native),
                    b.native_from,
                    join(&b.emulates),
                    b.emulates_from
                );
                if !b.qemu_versions.is_empty() {
                    // One entry per version: the handlers usually come from one package.
                    let mut by_version: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                    for (p, v) in &b.qemu_versions {
                        by_version.entry(v.as_deref().unwrap_or("unknown")).or_default().push(p);
                    }
                    let versions = by_version
                        .iter()
                        .map(|(v, platforms)| format!("{v} for {}", platforms.join(", ")))
                        .collect::<Vec<_>>();
                    let whose = if b.emulates_from == "binfmt" { "this machine's" } else { "its own machine's" };
                    println!("  QEMU ({whose}): {}", versions.join("; "));
                }
            }
        }
    }
    // The listing shows what each builder said; a configuration error is still one.
    if let Some(e) = fleet.configuration_error() {
        return Err(e);
    }
    Ok(status.iter().any(|b| b.healthy))
}

fn join(v: &[String]) -> String {
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
    }
}
