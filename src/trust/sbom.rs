//! The SBOM of one platform image, as SPDX 2.3 JSON.
//!
//! SPDX rather than CycloneDX: SPDX 2.3 is an ISO standard (ISO/IEC 5962) with an
//! independent reference parser and validator (spdx-tools) the tests run, Debian and
//! Alpine tooling describe packages in its terms, and `cosign attest --type spdxjson`
//! and the in-toto SPDX predicate take it as it is.
//!
//! What is listed, with no scanner: for an assembled image the exact Debian packages it
//! was made from (the resolution: name, version, architecture, the `.deb`'s SHA-256 and
//! URL); for every image what its layers' package databases say (`var/lib/dpkg/status`,
//! `lib/apk/db/installed`), read from the store's layer blobs in order, the last layer
//! that writes a database winning and whiteouts (`.wh.<name>`, `.wh..wh..opq`) removing
//! what lower layers wrote. Each package has its purl (`pkg:deb/debian/...`,
//! `pkg:apk/alpine/...`).
//!
//! The document is a pure function of the image and the given time: `created` is the
//! `SOURCE_DATE_EPOCH` the caller passes, else the image config's `created`, else the
//! epoch; the namespace is derived from the manifest digest. Same image, same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use serde_json::{json, Value};

use crate::build::assemble::debian::Resolution;
use crate::image::oci::{digest_hex, ManifestDoc};
use crate::image::store::{Store, StoredImage};
use crate::support::error::{Error, Result};
use crate::support::time::rfc3339;

/// The media type of an SPDX JSON document (an `artifactType` for the referrer, and the
/// in-toto predicate type `https://spdx.dev/Document` if it is wrapped in a statement).
pub const MEDIA_TYPE: &str = "application/spdx+json";

/// Where dpkg keeps what is installed.
const DPKG_STATUS: &str = "var/lib/dpkg/status";
/// Where apk keeps what is installed.
const APK_INSTALLED: &str = "lib/apk/db/installed";

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub kind: Kind,
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The `.deb`'s SHA-256 (hex), when known (assembled images).
    pub sha256: Option<String>,
    /// Where the `.deb` was downloaded from (assembled images).
    pub download: Option<String>,
    /// The license the package database declares (apk's `L:`).
    pub license: Option<String>,
}

/// Which package manager's package it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Deb,
    Apk,
}

impl Package {
    /// Its package URL.
    pub fn purl(&self) -> String {
        match self.kind {
            Kind::Deb => deb_purl(&self.name, &self.version, &self.arch),
            Kind::Apk => format!("pkg:apk/alpine/{}@{}?arch={}", enc(&self.name), enc(&self.version), enc(&self.arch)),
        }
    }
}

/// `pkg:deb/debian/NAME@VERSION?arch=ARCH`, percent-encoded as the purl spec asks
/// (an epoch's `:` and a `+` are encoded).
pub fn deb_purl(name: &str, version: &str, arch: &str) -> String {
    format!("pkg:deb/debian/{}@{}?arch={}", enc(name), enc(version), enc(arch))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The SPDX 2.3 JSON document of `image` (named `name`, e.g. the farm image's name):
/// the image as the described package, containing every package of `packages` (an
/// assembled image's resolution) and of its layers' package databases. `created`:
/// seconds since the epoch (`SOURCE_DATE_EPOCH`), else the config's `created`.
pub fn document(
    store: &Store,
    image: &StoredImage,
    name: &str,
    packages: Option<&Resolution>,
    created: Option<u64>,
) -> Result<Vec<u8>> {
    let manifest: ManifestDoc = serde_json::from_slice(&store.read_blob(&image.manifest.digest)?)
        .map_err(|e| Error::failure(format!("manifest {} in the store is not valid: {e}", image.manifest.digest)))?;
    let config: Value = serde_json::from_slice(&store.read_blob(&image.config_digest)?)
        .map_err(|e| Error::failure(format!("config {} in the store is not valid: {e}", image.config_digest)))?;
    let mut found = installed(store, &manifest)?;
    if let Some(r) = packages {
        // The resolution knows more (the .deb's digest and URL) than a database would.
        for d in &r.debs {
            found.retain(|p| !(p.kind == Kind::Deb && p.name == d.name && p.arch == d.arch));
            found.push(Package {
                kind: Kind::Deb,
                name: d.name.clone(),
                version: d.version.clone(),
                arch: d.arch.clone(),
                sha256: Some(d.sha256.clone()),
                download: Some(d.url.clone()),
                license: None,
            });
        }
    }
    found.sort();
    found.dedup();
    let created = match created {
        Some(s) => rfc3339(s),
        None => config["created"].as_str().and_then(spdx_time).unwrap_or_else(|| rfc3339(0)),
    };
    let doc = spdx(image, name, &found, &created)?;
    Ok(serde_json::to_vec_pretty(&doc).expect("a JSON value serializes"))
}

fn spdx(image: &StoredImage, name: &str, packages: &[Package], created: &str) -> Result<Value> {
    let hex = digest_hex(&image.manifest.digest)?;
    let short = name.rsplit('/').next().unwrap_or(name);
    let mut spdx_packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": name,
        "versionInfo": image.manifest.digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": hex}],
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": format!("pkg:oci/{}@sha256%3A{hex}", enc(short)),
        }],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    for (i, p) in packages.iter().enumerate() {
        let id = format!("SPDXRef-Package-{}", i + 1);
        let mut pkg = json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": p.download.as_deref().unwrap_or("NOASSERTION"),
            "filesAnalyzed": false,
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": p.purl()}],
        });
        if let Some(sha) = &p.sha256 {
            pkg["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sha}]);
        }
        if let Some(l) = &p.license {
            // As the database declares it: not always a valid SPDX expression, so a
            // comment rather than `licenseDeclared`.
            pkg["licenseComments"] = json!(format!("declared by the package database: {l}"));
        }
        spdx_packages.push(pkg);
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    Ok(json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{name}@{}", image.manifest.digest),
        "documentNamespace": format!("https://archfarm.invalid/spdx/sha256/{hex}"),
        "creationInfo": {"created": created, "creators": [concat!("Tool: archfarm-", env!("CARGO_PKG_VERSION"))]},
        "documentDescribes": ["SPDXRef-Image"],
        "packages": spdx_packages,
        "relationships": relationships,
    }))
}

/// An image config's `created` (RFC 3339, any fraction, `Z` or `+00:00`) in SPDX's
/// `YYYY-MM-DDThh:mm:ssZ`; `None` for another offset or garbage.
fn spdx_time(created: &str) -> Option<String> {
    let (main, _) = created.split_once(['.', 'Z', '+']).unwrap_or((created, ""));
    let utc = created.ends_with('Z') || created.ends_with("+00:00");
    let shaped = main.len() == 19
        && main.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        });
    (utc && shaped).then(|| format!("{main}Z"))
}

/// The packages the image's package databases list, after applying every layer.
fn installed(store: &Store, manifest: &ManifestDoc) -> Result<Vec<Package>> {
    let mut dbs = Databases::default();
    for layer in &manifest.layers {
        let file = store.open_blob(&layer.digest)?;
        dbs.apply(file).map_err(|e| Error::failure(format!("layer {} in the store: {e}", layer.digest)))?;
    }
    let mut out = Vec::new();
    if let Some(text) = dbs.files.get(DPKG_STATUS) {
        out.extend(dpkg_status(&String::from_utf8_lossy(text)));
    }
    if let Some(text) = dbs.files.get(APK_INSTALLED) {
        out.extend(apk_installed(&String::from_utf8_lossy(text)));
    }
    Ok(out)
}

/// The package databases as the layers applied so far leave them.
#[derive(Default)]
struct Databases {
    files: BTreeMap<&'static str, Vec<u8>>,
}

impl Databases {
    /// Applies one layer (a tar, gzip-compressed or not): its whiteouts remove what lower
    /// layers wrote, then its database files replace lower ones.
    fn apply(&mut self, blob: impl Read) -> std::io::Result<()> {
        let mut reader = std::io::BufReader::new(blob);
        let gzip = {
            use std::io::BufRead as _;
            reader.fill_buf()?.starts_with(&[0x1f, 0x8b])
        };
        let tar: Box<dyn Read> =
            if gzip { Box::new(flate2::read::MultiGzDecoder::new(reader)) } else { Box::new(reader) };
        let mut removed = BTreeSet::new();
        let mut opaque = BTreeSet::new();
        let mut written = BTreeMap::new();
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = normalise(&String::from_utf8_lossy(&entry.path_bytes()));
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (d.to_string(), b.to_string()),
                None => (String::new(), path.clone()),
            };
            if base == ".wh..wh..opq" {
                opaque.insert(dir);
            } else if let Some(name) = base.strip_prefix(".wh.") {
                removed.insert(if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") });
            } else if let Some(db) = [DPKG_STATUS, APK_INSTALLED].into_iter().find(|d| *d == path) {
                if entry.header().entry_type().is_file() {
                    let mut bytes = Vec::new();
                    entry.read_to_end(&mut bytes)?;
                    written.insert(db, Some(bytes));
                } else {
                    // A link or folder in its place: the database is gone.
                    written.insert(db, None);
                }
            }
        }
        // An opaque root folder hides everything below; a whiteout its path and below.
        let below = |db: &str, dir: &str| dir.is_empty() || db.starts_with(&format!("{dir}/"));
        self.files
            .retain(|db, _| !removed.iter().any(|r| db == r || below(db, r)) && !opaque.iter().any(|o| below(db, o)));
        for (db, bytes) in written {
            match bytes {
                Some(b) => self.files.insert(db, b),
                None => self.files.remove(db),
            };
        }
        Ok(())
    }
}

/// A tar path without `./` or `/` in front and without a trailing `/`.
fn normalise(path: &str) -> String {
    let p = path.trim_start_matches("./").trim_start_matches('/');
    p.trim_end_matches('/').to_string()
}

/// The stanzas of a deb822-style file: fields (continuation lines folded in) per
/// paragraph.
fn stanzas(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur = BTreeMap::<String, String>::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
        } else if line.starts_with([' ', '\t']) {
            if let Some(v) = last.as_ref().and_then(|k| cur.get_mut(k)) {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.insert(k.trim().to_string(), v.trim().to_string());
            last = Some(k.trim().to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The installed packages of a dpkg status file (`Status: install ok installed`;
/// removed and config-only packages are not in the image).
pub fn dpkg_status(text: &str) -> Vec<Package> {
    stanzas(text)
        .into_iter()
        .filter(|s| s.get("Status").is_some_and(|st| st.split_whitespace().nth(2) == Some("installed")))
        .filter_map(|s| {
            Some(Package {
                kind: Kind::Deb,
                name: s.get("Package")?.clone(),
                version: s.get("Version")?.clone(),
                arch: s.get("Architecture").cloned().unwrap_or_else(|| "all".into()),
                sha256: None,
                download: None,
                license: None,
            })
        })
        .collect()
}

/// The packages of an apk `installed` database (`P:` name, `V:` version, `A:` arch,
/// `L:` license).
pub fn apk_installed(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let field = |k: &str| block.lines().find_map(|l| l.strip_prefix(k)).map(str::to_string);
        if let (Some(name), Some(version)) = (field("P:"), field("V:")) {
            out.push(Package {
                kind: Kind::Apk,
                name,
                version,
                arch: field("A:").unwrap_or_else(|| "noarch".into()),
                sha256: None,
                download: None,
                license: field("L:"),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: bash\nStatus: install ok installed\nPriority: required\nArchitecture: arm64\nVersion: 5.2.15-2+b7\nDescription: GNU Bourne Again SHell\n Bash is an sh-compatible command language interpreter.\n .\n More.\n\nPackage: old\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n\nPackage: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 2024a-0+deb12u1\n";

    #[test]
    fn dpkg_status_lists_installed_packages_only() {
        let p = dpkg_status(STATUS);
        let names: Vec<_> = p.iter().map(|p| (p.name.as_str(), p.version.as_str(), p.arch.as_str())).collect();
        assert_eq!(names, [("bash", "5.2.15-2+b7", "arm64"), ("tzdata", "2024a-0+deb12u1", "all")]);
        assert_eq!(p[0].purl(), "pkg:deb/debian/bash@5.2.15-2%2Bb7?arch=arm64");
        assert_eq!(deb_purl("libc6", "1:2.36", "amd64"), "pkg:deb/debian/libc6@1%3A2.36?arch=amd64");
    }

    #[test]
    fn apk_installed_lists_every_package() {
        let db = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:aarch64\nL:MIT\n\nC:Q1def=\nP:busybox\nV:1.36.1-r5\nA:aarch64\nL:GPL-2.0-only\n\n";
        let p = apk_installed(db);
        assert_eq!(p.len(), 2);
        assert_eq!((p[1].name.as_str(), p[1].version.as_str()), ("busybox", "1.36.1-r5"));
        assert_eq!(p[0].purl(), "pkg:apk/alpine/musl@1.2.4-r2?arch=aarch64");
        assert_eq!(p[0].license.as_deref(), Some("MIT"));
    }

    fn layer(entries: &[(&str, Option<&str>)], gzip: bool) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut h = tar::Header::new_gnu();
            match content {
                Some(c) => {
                    h.set_size(c.len() as u64);
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, c.as_bytes()).unwrap();
                }
                None => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        let tar = b.into_inner().unwrap();
        if !gzip {
            return tar;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    fn names(dbs: &Databases) -> Vec<String> {
        dbs.files
            .get(DPKG_STATUS)
            .map(|t| dpkg_status(&String::from_utf8_lossy(t)))
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.name)
            .collect()
    }

    const ONE: &str = "Package: one\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n";
    const TWO: &str = "Package: two\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2\n";

    #[test]
    fn the_last_layer_wins_and_whiteouts_remove_the_database() {
        let mut dbs = Databases::default();
        dbs.apply(&layer(&[("./var/lib/dpkg/status", Some(ONE))], true)[..]).unwrap();
        assert_eq!(names(&dbs), ["one"]);
        dbs.apply(&layer(&[("var/lib/dpkg/status", Some(TWO))], false)[..]).unwrap();
        assert_eq!(names(&dbs), ["two"], "an upper layer's database replaces the lower one");
        dbs.apply(&layer(&[("var/lib/dpkg/.wh.status", Some(""))], true)[..]).unwrap();
        assert!(names(&dbs).is_empty(), "a whiteout of the file removes it");

        dbs.apply(&layer(&[("var/lib/dpkg/status", Some(ONE))], true)[..]).unwrap();
        dbs.apply(&layer(&[("var/lib/.wh.dpkg", Some(""))], true)[..]).unwrap();
        assert!(names(&dbs).is_empty(), "a whiteout of a parent folder removes it");

        dbs.apply(&layer(&[("var/lib/dpkg/status", Some(ONE))], true)[..]).unwrap();
        dbs.apply(&layer(&[("var/lib/dpkg/", None), ("var/lib/dpkg/.wh..wh..opq", Some(""))], true)[..]).unwrap();
        assert!(names(&dbs).is_empty(), "an opaque folder hides the lower layers' files");

        dbs.apply(&layer(&[("var/lib/dpkg/status", Some(ONE))], true)[..]).unwrap();
        dbs.apply(&layer(&[("var/lib/dpkg/.wh..wh..opq", Some("")), ("var/lib/dpkg/status", Some(TWO))], true)[..])
            .unwrap();
        assert_eq!(names(&dbs), ["two"], "an opaque folder keeps what its own layer writes");
        dbs.apply(&layer(&[("var/lib/.wh.dpkgx", Some("")), ("etc/.wh..wh..opq", Some(""))], true)[..]).unwrap();
        assert_eq!(names(&dbs), ["two"], "other whiteouts leave it");
    }

    #[test]
    fn config_times_become_spdx_times() {
        assert_eq!(spdx_time("2024-05-01T10:20:30Z").as_deref(), Some("2024-05-01T10:20:30Z"));
        assert_eq!(spdx_time("2024-05-01T10:20:30.123456789Z").as_deref(), Some("2024-05-01T10:20:30Z"));
        assert_eq!(spdx_time("2024-05-01T10:20:30+00:00").as_deref(), Some("2024-05-01T10:20:30Z"));
        assert_eq!(spdx_time("2024-05-01T10:20:30+02:00"), None);
        assert_eq!(spdx_time("yesterday"), None);
    }

    #[test]
    fn the_document_is_deterministic_and_lists_packages_and_the_image() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let l = store
            .put_blob(crate::image::oci::OCI_LAYER_GZIP, &layer(&[("var/lib/dpkg/status", Some(STATUS))], true))
            .unwrap();
        let config = store
            .put_blob(
                crate::image::oci::OCI_CONFIG,
                br#"{"created":"2024-05-01T10:20:30.5Z","architecture":"arm64","os":"linux"}"#,
            )
            .unwrap();
        let manifest =
            json!({"schemaVersion": 2, "mediaType": crate::image::oci::OCI_MANIFEST, "config": config, "layers": [l]});
        let m = store.put_blob(crate::image::oci::OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap()).unwrap();
        let image = store.image(&m).unwrap();
        let a = document(&store, &image, "archfarm.local/web", None, None).unwrap();
        assert_eq!(a, document(&store, &image, "archfarm.local/web", None, None).unwrap());
        let doc: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(doc["creationInfo"]["created"], "2024-05-01T10:20:30Z");
        let hex = m.digest.trim_start_matches("sha256:");
        assert_eq!(doc["documentNamespace"], format!("https://archfarm.invalid/spdx/sha256/{hex}"));
        let pkgs: Vec<_> = doc["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(pkgs, ["archfarm.local/web", "bash", "tzdata"]);
        let epoch: Value =
            serde_json::from_slice(&document(&store, &image, "web", None, Some(86400)).unwrap()).unwrap();
        assert_eq!(epoch["creationInfo"]["created"], "1970-01-02T00:00:00Z");
    }
}
