//! The publishing subcommands: `login`, `release`, `copy`.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cli::planning::{make_plan, require_resolved, resolve_names, BaseFlags};
use crate::farm::{BuildReport, Farm, TagReport};
use crate::plan::PlatformChoice;
use crate::publish::copy;
use crate::publish::release::{self, ReleaseOptions};
use crate::recipe::catalog::Catalog;
use crate::recipe::config::{Config, RegistryRef};
use crate::registry::auth::{self, Credential, Stored};
use crate::registry::Registry;
use crate::support::error::{Error, Result};
use crate::support::secret::Secret;
use crate::trust::keys::SigningKey;

/// `archfarm login REGISTRY -u USER --password-stdin`.
pub async fn login(config: &Config, server: &str, username: &str, password_stdin: bool) -> Result<bool> {
    if !password_stdin {
        return Err(Error::usage(
            "login reads the password from stdin: pass --password-stdin (e.g. `echo \"$TOKEN\" | archfarm login \
             REGISTRY -u USER --password-stdin`); it is never taken as an argument",
        ));
    }
    if username.is_empty() || username.contains(':') {
        return Err(Error::usage("login: --username must be non-empty and hold no ':'"));
    }
    let r = RegistryRef::parse(server, &config.insecure_registries)?;
    if !r.namespace.is_empty() {
        return Err(Error::usage(format!("login: give a registry host[:port], not '{server}'")));
    }
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(|e| Error::failure(format!("login: cannot read the password from stdin: {e}")))?;
    let password = Secret::new(password.trim_end_matches(['\n', '\r']));
    if password.expose().is_empty() {
        return Err(Error::usage("login: the password on stdin is empty"));
    }
    let cred = Credential::Basic { username: username.to_string(), password: password.clone() };
    Registry::with_credential(&r, Some(cred))?
        .check()
        .await
        .map_err(|e| e.context(format!("login to {} failed", r.host)))?;
    match auth::store(&r.host, username, &password)? {
        Stored::File(p) => eprintln!("credentials for {} stored in {}", r.host, p.display()),
        Stored::Helper(h) => eprintln!("credentials for {} stored with docker-credential-{h}", r.host),
    }
    println!("Login Succeeded");
    Ok(true)
}

/// `archfarm copy SRC DST`.
pub async fn copy(config: &Config, source: &str, destination: &str, json: bool) -> Result<bool> {
    let from = copy::parse_image("copy source", source)?;
    let to = copy::parse_image("copy destination", destination)?;
    let src = Registry::new(&RegistryRef::serving(&from, &config.insecure_registries))?;
    let dst = if to.registry == from.registry {
        src.clone()
    } else {
        Registry::new(&RegistryRef::serving(&to, &config.insecure_registries))?
    };
    let report = copy::copy(&src, &from, &dst, &to).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
    } else {
        println!("{} {}", report.destination, report.digest);
    }
    eprintln!(
        "{}: {} platform(s); {} blob(s) uploaded ({} bytes), {} mounted, {} already there; {} attached \
         artifact(s) (referrers, signatures), {} manifest(s) and tag(s) of them written",
        if report.changed { "copied" } else { "nothing to do, already there" },
        report.platforms.len(),
        report.blobs_uploaded,
        report.bytes_uploaded,
        report.blobs_mounted,
        report.blobs_skipped,
        report.referrers.len(),
        report.referrers_written
    );
    Ok(true)
}

/// `archfarm release VERSION [IMAGE...]`: the current keys of `names` (default all) over
/// their configured platforms, every one of them required, promoted to `version`.
#[allow(clippy::too_many_arguments)]
pub async fn release(
    farm: &Farm,
    catalog: &Catalog,
    names: &[String],
    bases: &BaseFlags,
    version: &str,
    to: Option<&str>,
    latest: bool,
    dry_run: bool,
    json: bool,
    record: Option<PathBuf>,
    sign: Option<Arc<SigningKey>>,
) -> Result<bool> {
    let names = resolve_names(catalog, names)?;
    let plan = make_plan(farm, catalog, &names, &PlatformChoice::Defaults, bases).await?;
    require_resolved(&plan, "release")?;
    let images: Vec<_> = plan.images.iter().filter(|i| names.is_empty() || names.contains(&i.name)).cloned().collect();
    let config = &farm.config;
    let to = match to {
        Some(t) => Some(RegistryRef::parse(t, &config.insecure_registries).map_err(|e| e.context("--to"))?),
        None => None,
    };
    let opts = ReleaseOptions { version: version.to_string(), to, latest, dry_run, sign };
    let report = release::release(config, &farm.store, &images, &opts).await?;
    let tags = report.images.iter().filter(|r| r.action != "dry-run").flat_map(|r| {
        r.tags.iter().map(|tag| TagReport {
            image: r.image.clone(),
            tag: tag.clone(),
            digest: r.digest.clone(),
            platforms: r.platforms.iter().map(|p| p.platform.clone()).collect(),
        })
    });
    farm.progress().report(&BuildReport { tags: tags.collect(), ..Default::default() });
    let text = serde_json::to_string_pretty(&report).expect("report serializes");
    if let Some(path) = &record {
        write_record(path, &text)?;
    }
    if json {
        println!("{text}");
    } else {
        for r in &report.images {
            println!("{} {} {}", r.tag, r.digest, r.action);
        }
    }
    if let Some(n) = report.signatures_written {
        eprintln!("{n} signature(s) written");
    }
    if report.unchanged() && report.signatures_written.unwrap_or(0) == 0 {
        eprintln!("nothing to do: {version} is already released for every image");
    } else if dry_run {
        eprintln!("dry run: every check passed, nothing was written");
    }
    Ok(true)
}

fn write_record(path: &std::path::Path, text: &str) -> Result<()> {
    crate::support::fs::write_atomically(path, format!("{text}\n").as_bytes(), Default::default())
}
