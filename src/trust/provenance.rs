//! SLSA Provenance v1 for one platform image: an in-toto Statement v1 whose subject is
//! the platform manifest, saying what went into the image (the recipe, the context,
//! build args, secret ids, external bases, farm parents, Debian packages) and what made
//! it (archfarm's version, the builder, its engine version, the backend and the route).
//!
//! The statement is made from values the coordinator already holds for a job (the
//! [`Job`], the [`Produced`] image, the job's [`Parents`]), so it says exactly what the
//! content key covers and nothing the key does not. It is a pure function of its inputs
//! with no wall-clock time (SLSA's `startedOn`/`finishedOn` are optional and left out),
//! so a rerun writes the same bytes. Secret values never reach it: a [`Job`] holds only
//! secret ids (`Needs::secrets`), the values live in the configuration's sources.
//!
//! `buildType` is [`BUILD_TYPE`]; docs/supply-chain.md ("Provenance and SBOM")
//! describes its parameters. SLSA's `runDetails` has no free-form field, so the backend
//! and route are `internalParameters` (a strict protobuf parse of the predicate, as the
//! integration test does, refuses unknown fields).

use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use crate::build::assemble::debian::Resolution;
use crate::build::fleet::Route;
use crate::build::{BackendKind, Parents, Produced};
use crate::plan::Job;
use crate::recipe::context::Context;
use crate::recipe::image_yaml::{BASE_APT, BASE_REGISTRY};

/// The in-toto Statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The predicate type: SLSA Provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// archfarm's build type: one (image, platform) job of the farm, its parameters as
/// documented in docs/supply-chain.md. A URN, since archfarm has no web site to host it.
pub const BUILD_TYPE: &str = "urn:archfarm:buildtype:image:v1";
/// The media type of a DSSE payload holding an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// What the coordinator knows of one built job, when it pushes it.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The planned job: image, platform, key, recipe, context, build args, bases.
    pub job: &'a Job,
    /// What built it and the resulting image in the store (the subject).
    pub produced: &'a Produced,
    /// The job's farm parents as they were in the store (their manifest digests).
    pub parents: &'a Parents,
    /// The Debian packages an assembled image was made from (the resolution recorded
    /// under the job's `apt:` base digest, `debian::recorded`); `None` for others.
    pub packages: Option<&'a Resolution>,
    /// The version the builder's engine reported (`BuilderStatus::version`), for
    /// images built on an engine of the fleet.
    pub engine_version: Option<&'a str>,
    /// One id per archfarm invocation (a build run), shared by every job of that run.
    pub invocation_id: &'a str,
}

/// The in-toto Statement v1 (predicate SLSA Provenance v1) of `inputs`, as JSON bytes:
/// the payload of a DSSE envelope of type [`PAYLOAD_TYPE`].
pub fn statement(inputs: &Inputs) -> Vec<u8> {
    serde_json::to_vec(&statement_value(inputs)).expect("a JSON value serializes")
}

fn statement_value(inputs: &Inputs) -> Value {
    let job = inputs.job;
    let manifest = &inputs.produced.image.manifest.digest;
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": job.image, "digest": sha256_digest(manifest)}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external_parameters(job),
                "internalParameters": internal_parameters(inputs),
                "resolvedDependencies": resolved_dependencies(inputs),
            },
            "runDetails": {
                "builder": {"id": builder_id(inputs.produced), "version": versions(inputs)},
                "metadata": {"invocationId": inputs.invocation_id},
            },
        },
    })
}

/// What the user controls: the image, its platform, the recipe file, build args, the
/// ids of the secrets it mounts and the target stage.
fn external_parameters(job: &Job) -> Value {
    let mut p = Map::new();
    p.insert("image".into(), json!(job.image));
    p.insert("platform".into(), json!(job.platform.to_string()));
    p.insert("recipe".into(), json!(job.recipe));
    if !job.build_args.is_empty() {
        p.insert("buildArgs".into(), json!(job.build_args));
    }
    if !job.needs.secrets.is_empty() {
        p.insert("secrets".into(), json!(job.needs.secrets));
    }
    if let Some(t) = &job.needs.target {
        p.insert("target".into(), json!(t));
    }
    Value::Object(p)
}

/// What archfarm chose: the content key, the backend, and where and how it ran.
fn internal_parameters(inputs: &Inputs) -> Value {
    let job = inputs.job;
    let mut p = Map::new();
    p.insert("contentKey".into(), json!(job.key));
    p.insert("backend".into(), json!(inputs.produced.by));
    if let Some(placed) = &inputs.produced.placed {
        p.insert("builder".into(), json!(placed.builder));
        p.insert("route".into(), json!(route(job, placed.route)));
    }
    if let Some(b) = &job.build_platform {
        p.insert("buildPlatform".into(), json!(b.to_string()));
    }
    Value::Object(p)
}

/// `cross` when the recipe's cross stages ran on another platform than the image's
/// (`FROM --platform=$BUILDPLATFORM`, pinned by the planner), else how the builder ran
/// the image's platform.
fn route(job: &Job, route: Route) -> &'static str {
    match (&job.build_platform, route) {
        (Some(b), _) if b != &job.platform => "cross",
        (_, Route::Native) => "native",
        (_, Route::Emulated) => "emulated",
    }
}

/// The fleet builder's name (`builders:`), or the assembler, which runs in archfarm.
fn builder_id(produced: &Produced) -> String {
    match (&produced.placed, produced.by) {
        (Some(p), _) => format!("urn:archfarm:builder:{}", p.builder),
        (None, BackendKind::Assembler) => "urn:archfarm:builder:assembler".into(),
        (None, BackendKind::BuildKit | BackendKind::Classic) => "urn:archfarm:builder:engine".into(),
    }
}

fn versions(inputs: &Inputs) -> Value {
    let mut v = Map::new();
    v.insert("archfarm".into(), json!(env!("CARGO_PKG_VERSION")));
    if let Some(e) = inputs.engine_version {
        v.insert("engine".into(), json!(e));
    }
    Value::Object(v)
}

/// The recipe and the context (digests), the external bases, the farm parents (their
/// manifest digests) and, for assembled images, every Debian package.
fn resolved_dependencies(inputs: &Inputs) -> Vec<Value> {
    let job = inputs.job;
    let mut deps = vec![
        json!({
            "name": job.recipe,
            "digest": {"sha256": hex::encode(Sha256::digest(job.recipe_text.as_bytes()))},
            "annotations": {"archfarm.dependency": "recipe"},
        }),
        json!({
            "name": "context",
            "digest": {"sha256": context_digest(&job.context)},
            "annotations": {"archfarm.dependency": "context", "files": job.context.entries.len()},
        }),
    ];
    for (name, digest) in &job.bases {
        if name.starts_with(BASE_APT) {
            // Listed package by package below, from the resolution this digest names.
            continue;
        }
        let reference = name.strip_prefix(BASE_REGISTRY).unwrap_or(name);
        deps.push(json!({
            "name": reference,
            "digest": sha256_digest(digest),
            "annotations": {"archfarm.dependency": "base"},
        }));
    }
    for ((image, platform), entry) in inputs.parents {
        deps.push(json!({
            "name": image,
            "digest": sha256_digest(&entry.stored.manifest.digest),
            "annotations": {"archfarm.dependency": "parent", "platform": platform.to_string(), "contentKey": entry.key},
        }));
    }
    if let Some(r) = inputs.packages {
        for d in &r.debs {
            deps.push(json!({
                "name": d.name,
                "uri": crate::trust::sbom::deb_purl(&d.name, &d.version, &d.arch),
                "digest": {"sha256": d.sha256},
                "downloadLocation": d.url,
                "annotations": {"archfarm.dependency": "package", "version": d.version, "architecture": d.arch},
            }));
        }
    }
    deps
}

/// SHA-256 over the context's canonical listing: one line `<kind> <path> <value>` per
/// entry in path order (value: the file's SHA-256, a link's target, empty for folders),
/// so any added, removed, changed or re-moded file changes it.
pub fn context_digest(context: &Context) -> String {
    let mut entries: Vec<_> = context.entries.iter().collect();
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut h = Sha256::new();
    for e in entries {
        let (kind, value) = e.kind_and_value();
        h.update(format!("{kind} {} {value}\n", e.path).as_bytes());
    }
    hex::encode(h.finalize())
}

/// `{"sha256": hex}` of a `sha256:` digest (an image id is one too).
fn sha256_digest(digest: &str) -> Value {
    json!({"sha256": digest.strip_prefix("sha256:").unwrap_or(digest)})
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::build::assemble::debian::Deb;
    use crate::build::fleet::Placement;
    use crate::image::oci::Descriptor;
    use crate::image::platform::Platform;
    use crate::image::store::{Entry, StoredImage};
    use crate::plan::{JobKind, Needs};
    use crate::recipe::context::{ContextEntry, EntryKind};

    fn platform(arch: &str) -> Platform {
        Platform { os: "linux".into(), architecture: arch.into(), variant: None }
    }

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// Through serde, so fields other areas add to `Descriptor` need no change here.
    fn manifest(digest: &str) -> Descriptor {
        serde_json::from_value(json!({"mediaType": crate::image::oci::OCI_MANIFEST, "digest": digest, "size": 500}))
            .unwrap()
    }

    fn job() -> Job {
        Job {
            image: "web".into(),
            platform: platform("arm64"),
            key: "k".repeat(64),
            kind: JobKind::Engine,
            recipe: "Dockerfile".into(),
            recipe_text: "FROM base\nRUN --mount=type=secret,id=token true\n".into(),
            context: Context {
                dir: PathBuf::from("/somewhere/images/web"),
                entries: vec![ContextEntry {
                    path: "Dockerfile".into(),
                    kind: EntryKind::File { executable: false, size: 3, sha256: [7; 32] },
                }],
            },
            build_args: BTreeMap::from([("VERSION".into(), "1.2".into())]),
            parents: vec![],
            bases: BTreeMap::from([("docker.io/library/debian:12".into(), digest('b'))]),
            stamp: Default::default(),
            pinned: BTreeMap::new(),
            build_platform: None,
            needs: Needs { secrets: vec!["token".into()], target: Some("runtime".into()), ..Needs::default() },
        }
    }

    fn produced() -> Produced {
        Produced {
            image: StoredImage { manifest: manifest(&digest('a')), config_digest: digest('c') },
            by: BackendKind::BuildKit,
            placed: Some(Placement { builder: "arm-box".into(), route: Route::Emulated, engine_version: None }),
        }
    }

    fn parents() -> Parents {
        let stored = StoredImage { manifest: manifest(&digest('d')), config_digest: digest('e') };
        let entry =
            Entry { key: "p".repeat(64), image: "base".into(), platform: platform("arm64"), stored, provenance: None };
        BTreeMap::from([(("base".to_string(), platform("arm64")), entry)])
    }

    fn parse(job: &Job, produced: &Produced, parents: &Parents, packages: Option<&Resolution>) -> Value {
        let inputs =
            Inputs { job, produced, parents, packages, engine_version: Some("20.10.24"), invocation_id: "run-1" };
        serde_json::from_slice(&statement(&inputs)).unwrap()
    }

    #[test]
    fn the_statement_names_the_manifest_and_everything_the_key_covers() {
        let (job, produced, parents) = (job(), produced(), parents());
        let s = parse(&job, &produced, &parents, None);
        assert_eq!(s["_type"], STATEMENT_TYPE);
        assert_eq!(s["predicateType"], PREDICATE_TYPE);
        assert_eq!(s["subject"], json!([{"name": "web", "digest": {"sha256": "a".repeat(64)}}]));
        let def = &s["predicate"]["buildDefinition"];
        assert_eq!(def["buildType"], BUILD_TYPE);
        assert_eq!(
            def["externalParameters"],
            json!({"image": "web", "platform": "linux/arm64", "recipe": "Dockerfile",
                   "buildArgs": {"VERSION": "1.2"}, "secrets": ["token"], "target": "runtime"})
        );
        assert_eq!(
            def["internalParameters"],
            json!({"contentKey": "k".repeat(64), "backend": "buildkit", "builder": "arm-box", "route": "emulated"})
        );
        let deps = def["resolvedDependencies"].as_array().unwrap();
        let by_kind =
            |k: &str| deps.iter().filter(|d| d["annotations"]["archfarm.dependency"] == k).collect::<Vec<_>>();
        assert_eq!(
            by_kind("recipe")[0]["digest"]["sha256"],
            hex::encode(Sha256::digest(job.recipe_text.as_bytes())).as_str()
        );
        assert_eq!(by_kind("context")[0]["digest"]["sha256"], context_digest(&job.context).as_str());
        assert_eq!(by_kind("base")[0]["name"], "docker.io/library/debian:12");
        assert_eq!(by_kind("base")[0]["digest"]["sha256"], "b".repeat(64).as_str());
        assert_eq!(by_kind("parent")[0]["name"], "base");
        assert_eq!(by_kind("parent")[0]["digest"]["sha256"], "d".repeat(64).as_str());
        let run = &s["predicate"]["runDetails"];
        assert_eq!(run["builder"]["id"], "urn:archfarm:builder:arm-box");
        assert_eq!(run["builder"]["version"]["engine"], "20.10.24");
        assert_eq!(run["builder"]["version"]["archfarm"], env!("CARGO_PKG_VERSION"));
        assert_eq!(run["metadata"]["invocationId"], "run-1");
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes_and_no_checkout_path() {
        let (job, produced, parents) = (job(), produced(), parents());
        let inputs = Inputs {
            job: &job,
            produced: &produced,
            parents: &parents,
            packages: None,
            engine_version: None,
            invocation_id: "x",
        };
        let a = statement(&inputs);
        assert_eq!(a, statement(&inputs));
        let text = String::from_utf8(a).unwrap();
        assert!(!text.contains("/somewhere"), "the checkout's absolute path is not in the provenance: {text}");
    }

    #[test]
    fn the_context_digest_changes_with_any_file_and_not_with_the_folder() {
        let a = job().context;
        let mut moved = a.clone();
        moved.dir = PathBuf::from("/elsewhere");
        assert_eq!(context_digest(&a), context_digest(&moved));
        let mut exec = a.clone();
        exec.entries[0].kind = EntryKind::File { executable: true, size: 3, sha256: [7; 32] };
        assert_ne!(context_digest(&a), context_digest(&exec));
    }

    #[test]
    fn an_assembled_image_lists_its_packages_and_a_cross_build_says_cross() {
        let mut job = job();
        job.kind = JobKind::Assemble;
        job.bases = BTreeMap::from([("apt:bash".to_string(), digest('f'))]);
        let produced = Produced { by: BackendKind::Assembler, placed: None, ..produced() };
        let debs = Resolution {
            arch: "arm64".into(),
            requested: vec!["bash".into()],
            debs: vec![Deb {
                name: "bash".into(),
                version: "5.2.15-2+b7".into(),
                arch: "arm64".into(),
                url: "http://deb.debian.org/debian/pool/main/b/bash/bash_5.2.15-2+b7_arm64.deb".into(),
                size: 1,
                sha256: "9".repeat(64),
            }],
        };
        let s = parse(&job, &produced, &BTreeMap::new(), Some(&debs));
        let deps = s["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
        assert!(!deps.iter().any(|d| d["name"].as_str().unwrap().starts_with("apt:")), "the apt base is its packages");
        let bash = deps.iter().find(|d| d["name"] == "bash").unwrap();
        assert_eq!(bash["uri"], "pkg:deb/debian/bash@5.2.15-2%2Bb7?arch=arm64");
        assert_eq!(bash["digest"]["sha256"], "9".repeat(64).as_str());
        assert_eq!(s["predicate"]["runDetails"]["builder"]["id"], "urn:archfarm:builder:assembler");
        assert_eq!(s["predicate"]["buildDefinition"]["internalParameters"]["backend"], "assembler");

        let mut cross = self::job();
        cross.build_platform = Some(platform("amd64"));
        let s = parse(&cross, &self::produced(), &BTreeMap::new(), None);
        let internal = &s["predicate"]["buildDefinition"]["internalParameters"];
        assert_eq!(internal["route"], "cross");
        assert_eq!(internal["buildPlatform"], "linux/amd64");
    }

    #[test]
    fn secrets_appear_by_id_only_and_the_recipe_by_digest_only() {
        // A job holds secret ids only (their values stay in the configuration's
        // sources); the recipe text, which names them, is not copied in either.
        let (job, produced, parents) = (job(), produced(), parents());
        let s = parse(&job, &produced, &parents, None);
        assert_eq!(s["predicate"]["buildDefinition"]["externalParameters"]["secrets"], json!(["token"]));
        let text = s.to_string();
        assert!(!text.contains("--mount=type=secret"), "{text}");
        assert!(!text.contains("recipe_text") && !text.contains("RUN "), "{text}");
    }
}
