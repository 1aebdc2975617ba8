//! `archfarm verify REF --key PUB`: every manifest of an image (the index and each child)
//! must pass every check: its cosign signature, and every attestation attached to it
//! (signed by the key, about that manifest). The checks are a list of kinds, one function
//! each, in [`checks`].

use serde::Serialize;

use crate::image::store::Store;
use crate::publish::copy;
use crate::recipe::config::{Config, RegistryRef};
use crate::registry::Registry;
use crate::support::error::{Error, Result};
use crate::trust::keys::VerifyingKey;
use crate::trust::{attestation, cosign};

/// What every check of one image reads.
struct Context<'a> {
    reg: &'a Registry,
    store: &'a Store,
    repo: &'a str,
    key: &'a VerifyingKey,
}

/// One check of one manifest.
#[derive(Debug, Serialize)]
struct Check {
    /// The kind: `signature` (cosign key-based) or `attestations` (provenance, SBOM).
    kind: &'static str,
    ok: bool,
    /// What was found (the `.sig` manifest) or what failed.
    detail: String,
}

/// One manifest and its checks.
#[derive(Debug, Serialize)]
struct Checked {
    digest: String,
    /// The child's platform; empty for the index (or a lone manifest).
    platform: String,
    ok: bool,
    checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
struct Report {
    image: String,
    key: String,
    ok: bool,
    manifests: Vec<Checked>,
}

/// Every kind of check, for one manifest.
async fn checks(cx: &Context<'_>, digest: &str) -> Vec<Check> {
    vec![signature(cx, digest).await, attestations(cx, digest).await]
}

/// Every attestation attached to `digest`: signed by the key, about `digest`, of the
/// predicate type it says. None attached passes (an image built elsewhere has none).
async fn attestations(cx: &Context<'_>, digest: &str) -> Check {
    match attestation::verify(cx.reg, cx.store, cx.repo, digest, cx.key).await {
        Ok(kinds) if kinds.is_empty() => Check { kind: "attestations", ok: true, detail: "none attached".into() },
        Ok(kinds) => Check {
            kind: "attestations",
            ok: true,
            detail: format!("signed by {}: {}", cx.key.source(), kinds.join(", ")),
        },
        Err(e) => Check { kind: "attestations", ok: false, detail: e.message().to_string() },
    }
}

/// A cosign signature by the key whose payload names `digest`.
async fn signature(cx: &Context<'_>, digest: &str) -> Check {
    match cosign::verify(cx.reg, cx.store, cx.repo, digest, cx.key).await {
        Ok(sig) => Check { kind: "signature", ok: true, detail: format!("signed by {} ({sig})", cx.key.source()) },
        Err(e) => Check { kind: "signature", ok: false, detail: e.message().to_string() },
    }
}

pub async fn run(config: &Config, image: &str, key: &str, json: bool) -> Result<bool> {
    let key = VerifyingKey::load(key)?;
    let r = copy::parse_image("verify REF", image)?;
    let reg = Registry::new(&RegistryRef::serving(&r, &config.insecure_registries))?;
    let store = Store::open(&config.store)?;
    let source = copy::read_image(&reg, &r.repository, r.lookup()).await?;
    let mut subjects = vec![(source.desc.digest.clone(), String::new())];
    if source.is_index() {
        subjects.extend(source.children.iter().map(|(p, d, _)| (d.digest.clone(), p.clone())));
    }
    let cx = Context { reg: &reg, store: &store, repo: &r.repository, key: &key };
    let mut manifests = Vec::new();
    for (digest, platform) in subjects {
        let checks = checks(&cx, &digest).await;
        manifests.push(Checked { ok: checks.iter().all(|c| c.ok), digest, platform, checks });
    }
    let report = Report {
        image: image.trim().to_string(),
        key: key.source().to_string(),
        ok: manifests.iter().all(|m| m.ok),
        manifests,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
    } else {
        for m in &report.manifests {
            let role = if m.platform.is_empty() { "index" } else { m.platform.as_str() };
            println!("{} {role} {}", m.digest, if m.ok { "verified" } else { "FAILED" });
        }
    }
    let failed: Vec<String> = report
        .manifests
        .iter()
        .flat_map(|m| {
            let role = if m.platform.is_empty() { "index".to_string() } else { m.platform.clone() };
            m.checks.iter().filter(|c| !c.ok).map(move |c| format!("{role} {} {}: {}", m.digest, c.kind, c.detail))
        })
        .collect();
    if failed.is_empty() {
        eprintln!("verified: {} manifest(s) of {} signed by {}", report.manifests.len(), report.image, key.source());
        Ok(true)
    } else {
        Err(Error::failure(format!("{} failed verification:\n  {}", report.image, failed.join("\n  "))))
    }
}
