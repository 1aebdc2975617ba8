//! `archfarm sign REF --key KEY`: cosign signatures for an image index and every child
//! manifest (or one manifest), written next to them in cosign's `.sig` layout.

use serde::Serialize;

use crate::image::store::Store;
use crate::publish::copy;
use crate::recipe::config::{Config, RegistryRef};
use crate::registry::Registry;
use crate::support::error::Result;
use crate::trust::attestation;
use crate::trust::cosign::{self, Signed};
use crate::trust::keys::SigningKey;

#[derive(Debug, Serialize)]
struct SignedManifest {
    digest: String,
    /// The child's platform; empty for the index (or a lone manifest).
    platform: String,
    /// `signed`, or `unchanged` when this key's signature was already there.
    action: &'static str,
}

pub async fn run(config: &Config, image: &str, key: &str, json: bool) -> Result<bool> {
    // The key first: a bad key is a usage error before any request.
    let key = SigningKey::load(key)?;
    let r = copy::parse_image("sign REF", image)?;
    let reg = Registry::new(&RegistryRef::serving(&r, &config.insecure_registries))?;
    let store = Store::open(&config.store)?;
    let source = copy::read_image(&reg, &r.repository, r.lookup()).await?;
    let mut subjects: Vec<(String, String)> = vec![(source.desc.digest.clone(), String::new())];
    if source.is_index() {
        subjects.extend(source.children.iter().map(|(p, d, _)| (d.digest.clone(), p.clone())));
    }
    let digests: Vec<String> = subjects.iter().map(|(d, _)| d.clone()).collect();
    let done = cosign::sign_all(&reg, &store, &r.repository, &digests, &key).await?;
    // Each platform's attestations get an envelope signed by the key, once per key.
    let mut attested = 0;
    for (_, child, _) in &source.children {
        attested += attestation::countersign(&reg, &store, &r.repository, child, &key).await?;
    }
    let records: Vec<SignedManifest> = subjects
        .into_iter()
        .zip(done)
        .map(|((digest, platform), s)| SignedManifest {
            digest,
            platform,
            action: if s == Signed::Present { "unchanged" } else { "signed" },
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&records).expect("records serialize"));
    } else {
        for m in &records {
            println!("{} {} {}", m.digest, if m.platform.is_empty() { "index" } else { &m.platform }, m.action);
        }
    }
    let written = records.iter().filter(|m| m.action == "signed").count();
    eprintln!(
        "{}/{}: {written} signature(s) written, {} already there, {attested} attestation(s) signed (key {})",
        reg.host(),
        r.repository,
        records.len() - written,
        key.key_id()
    );
    Ok(true)
}
