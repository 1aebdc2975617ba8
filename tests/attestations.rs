//! Provenance and SBOMs (issue 13) of real images in a real store: an assembled image of
//! Debian packages (pkg-shell) and an engine-built image whose farm parent is the
//! bundled busybox and whose layer writes a dpkg status. The documents are made through
//! the library, as the farm's push path will, and checked by independent Python
//! libraries: spdx-tools parses and validates the SPDX 2.3 JSON; in-toto-attestation's
//! Statement validator and a strict protobuf parse of the SLSA Provenance v1 predicate
//! check the statement.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use archfarm::build::assemble::debian;
use archfarm::build::fleet::{Placement, Route};
use archfarm::build::{BackendKind, Parents, Produced};
use archfarm::cli::planning::{plan_one, BaseFlags};
use archfarm::farm::progress::Progress;
use archfarm::farm::Farm;
use archfarm::image::store::Store;
use archfarm::recipe::catalog;
use archfarm::recipe::config::{Config, Overrides};
use archfarm::recipe::image_yaml::BASE_APT;
use archfarm::trust::{provenance, sbom};

const STATUS: &str = "Package: busybox-static\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:1.35.0-4+b3\n\nPackage: removed-one\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 9\n\nPackage: archfarm-demo\nStatus: install ok installed\nArchitecture: all\nVersion: 2.0-1\n";

const APK: &str =
    "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\nL:GPL-2.0-only WITH odd\n\n";

/// Runs `script` with python3 on `file`, returning its stdout; fails with its stderr.
fn python(script: &str, file: &Path) -> String {
    let out = Command::new("python3").args(["-c", script, file.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "python check of {} failed:\n{}", file.display(), stderr(&out));
    stdout(&out)
}

/// spdx-tools: parse, validate (SPDX 2.3), print `name version` per package.
const SPDX_CHECK: &str = r#"
import sys
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
doc = parse_file(sys.argv[1])
errors = validate_full_spdx_document(doc, "SPDX-2.3")
if errors:
    sys.exit("\n".join(e.validation_message for e in errors))
for p in doc.packages:
    print(p.name, p.version)
"#;

/// in-toto-attestation: the Statement's validator, and the predicate parsed strictly
/// (unknown fields refused) as SLSA Provenance v1; prints the subject digest.
const STATEMENT_CHECK: &str = r#"
import json, sys
from google.protobuf import json_format
from in_toto_attestation.v1.statement import Statement
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
raw = json.load(open(sys.argv[1]))
pb = json_format.ParseDict(raw, statement_pb2.Statement())
s = Statement.copy_from_pb(pb)
s.validate()
assert s.pb.predicate_type == "https://slsa.dev/provenance/v1", s.pb.predicate_type
prov = json_format.ParseDict(raw["predicate"], provenance_pb2.Provenance())
assert prov.build_definition.build_type, "buildType"
assert prov.run_details.builder.id, "builder.id"
for d in prov.build_definition.resolved_dependencies:
    ResourceDescriptor.copy_from_pb(d).validate()
    assert d.digest, d
print(s.pb.subject[0].digest["sha256"])
"#;

#[test]
fn documents_of_an_assembled_and_an_engine_built_image_pass_independent_validators() {
    if !services_up("attestations") {
        return;
    }
    let repo = Repo::new("attest");
    repo.write("images/dpkg-app/Dockerfile", "FROM archfarm.local/images/base/busybox\nARG FLAVOUR=plain\nRUN --mount=type=secret,id=token true\nCOPY status /var/lib/dpkg/status\nCOPY installed /lib/apk/db/installed\n");
    repo.write("images/dpkg-app/status", STATUS);
    repo.write("images/dpkg-app/installed", APK);
    // The engine writes the removal as a whiteout (`lib/.wh.apk`) in the child's layer.
    repo.write("images/dpkg-gone/Dockerfile", "FROM archfarm.local/images/dpkg-app\nRUN rm -r /lib/apk\n");
    let secret = repo.path().join("token.txt");
    std::fs::write(&secret, "s3cr3t-value-never-in-documents").unwrap();
    repo.write(
        "archfarm.yaml",
        &format!(
            "secrets:\n  token:\n    file: {}\nimages:\n  dpkg-app:\n    build_args: {{FLAVOUR: tasty}}\n",
            secret.display()
        ),
    );
    let amd64 = "linux/amd64";
    let report = repo.json(&["build", "dpkg-app", "dpkg-gone", "pkg-shell", "--platform", amd64, "--json"]);

    let config =
        Config::load(repo.path(), &Overrides { store: Some(repo.path().join("store")), ..Overrides::default() })
            .unwrap();
    let catalog = catalog::discover(&config.images_dir, &config.arches).unwrap();
    let platform = config.arches.parse_platform_list(amd64).unwrap().remove(0);
    let farm = Farm::new(config, Progress::new(false)).unwrap();
    let store = Store::open(&repo.path().join("store")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let docker_version = stdout(&docker(&["version", "--format", "{{.Server.Version}}"]));
    let docs = tempfile::tempdir().unwrap();

    let dpkg = ["busybox-static 1:1.35.0-4+b3", "archfarm-demo 2.0-1"];
    let apk = ["musl 1.2.4-r2", "busybox 1.36.1-r5"];
    for (image, wanted, absent) in [
        ("pkg-shell", vec!["bash", "jq", "libjq1", "libc6"], vec!["removed-one"]),
        ("dpkg-app", [dpkg, apk].concat(), vec!["removed-one"]),
        ("dpkg-gone", dpkg.to_vec(), vec!["removed-one", "musl", "busybox"]),
    ] {
        let job_report = jobs_by(&report, image).remove(0);
        let (_, job) = rt.block_on(plan_one(&farm, &catalog, image, &platform, &BaseFlags::default())).unwrap();
        assert_eq!(job_report["key"], job.key.as_str(), "{image}: the plan is the one that was built");
        let entry = store.entry(&job.key).unwrap().expect("built into the store");
        assert_eq!(job_report["digest"], entry.stored.manifest.digest.as_str());
        let packages = job
            .bases
            .iter()
            .find(|(b, _)| b.starts_with(BASE_APT))
            .map(|(_, digest)| debian::recorded(store.root(), digest).unwrap());
        let mut parents = Parents::new();
        for p in &job.parents {
            let (_, parent) =
                rt.block_on(plan_one(&farm, &catalog, &p.image, &p.platform, &BaseFlags::default())).unwrap();
            let e = store.entry(&parent.key).unwrap().expect("the parent is in the store");
            parents.insert((p.image.clone(), p.platform.clone()), e);
        }
        let by = match job_report["backend"].as_str() {
            Some("buildkit") => BackendKind::BuildKit,
            Some("classic") => BackendKind::Classic,
            Some("assembler") => BackendKind::Assembler,
            other => panic!("{image}: backend {other:?} in the report"),
        };
        let placed = job_report["builder"].as_str().map(|b| Placement {
            builder: b.to_string(),
            route: if job_report["route"] == "emulated" { Route::Emulated } else { Route::Native },
            engine_version: None,
        });
        let engine_version = placed.as_ref().map(|_| docker_version.trim());
        let produced = Produced { image: entry.stored.clone(), by, placed };

        // SBOM: spdx-tools parses and validates it, and lists the packages.
        let bytes = sbom::document(&store, &entry.stored, image, packages.as_ref(), None).unwrap();
        assert_eq!(bytes, sbom::document(&store, &entry.stored, image, packages.as_ref(), None).unwrap());
        let file = docs.path().join(format!("{image}.spdx.json"));
        std::fs::write(&file, &bytes).unwrap();
        let cli = Command::new("pyspdxtools").args(["-i", file.to_str().unwrap()]).output().unwrap();
        assert!(cli.status.success(), "pyspdxtools -i {}: {}{}", file.display(), stdout(&cli), stderr(&cli));
        let listed = python(SPDX_CHECK, &file);
        for w in &wanted {
            let found = if w.contains(' ') {
                listed.lines().any(|l| l == *w)
            } else {
                listed.lines().any(|l| l.split(' ').next() == Some(w))
            };
            assert!(found, "{image}: {w} is not in the SBOM:\n{listed}");
        }
        for a in &absent {
            assert!(!listed.lines().any(|l| l.split(' ').next() == Some(a)), "{image}: {a} is listed:\n{listed}");
        }
        if let Some(r) = &packages {
            for d in &r.debs {
                assert!(
                    listed.lines().any(|l| l == format!("{} {}", d.name, d.version)),
                    "{image}: {} {}",
                    d.name,
                    d.version
                );
            }
        }

        // Provenance: in-toto's validator and SLSA's schema accept it; the subject is the
        // manifest.
        let inputs = provenance::Inputs {
            job: &job,
            produced: &produced,
            parents: &parents,
            packages: packages.as_ref(),
            engine_version,
            invocation_id: "attestations-test",
        };
        let statement = provenance::statement(&inputs);
        assert_eq!(statement, provenance::statement(&inputs), "{image}: the same inputs give the same bytes");
        let text = String::from_utf8(statement.clone()).unwrap();
        assert!(!text.contains("s3cr3t"), "{image}: a secret value is in the provenance");
        let file = docs.path().join(format!("{image}.intoto.json"));
        std::fs::write(&file, &statement).unwrap();
        let subject = python(STATEMENT_CHECK, &file);
        assert_eq!(format!("sha256:{}", subject.trim()), entry.stored.manifest.digest, "{image}: the subject");
        let v: serde_json::Value = serde_json::from_slice(&statement).unwrap();
        let deps = v["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap().clone();
        let kinds: BTreeMap<String, usize> = deps.iter().fold(BTreeMap::new(), |mut m, d| {
            *m.entry(d["annotations"]["archfarm.dependency"].as_str().unwrap().to_string()).or_default() += 1;
            m
        });
        if image == "dpkg-app" {
            let ext = &v["predicate"]["buildDefinition"]["externalParameters"];
            assert_eq!(ext["buildArgs"]["FLAVOUR"], "tasty");
            assert_eq!(ext["secrets"], serde_json::json!(["token"]));
        }
        if image != "pkg-shell" {
            let parent = deps.iter().find(|d| d["annotations"]["archfarm.dependency"] == "parent").unwrap();
            let (_, base) = parents.iter().next().unwrap();
            assert_eq!(format!("sha256:{}", parent["digest"]["sha256"].as_str().unwrap()), base.stored.manifest.digest);
            assert_eq!(v["predicate"]["runDetails"]["builder"]["version"]["engine"], docker_version.trim());
        } else {
            assert_eq!(kinds.get("package"), packages.as_ref().map(|r| r.debs.len()).as_ref(), "{kinds:?}");
        }
    }
}
