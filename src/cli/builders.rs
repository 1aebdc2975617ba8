//! `archfarm builders`: the builders of archfarm.yaml with health, engine version, native
//! and emulated platforms.

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
