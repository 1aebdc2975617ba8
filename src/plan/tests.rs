use super::*;
use crate::recipe::config::Overrides;

/// A repository with `archfarm.yaml` text and images given as (folder, Dockerfile).
fn repo(yaml: &str, images: &[(&str, &str)]) -> (tempfile::TempDir, Config, Catalog) {
    let files: Vec<(String, &str)> = images.iter().map(|(name, text)| (format!("{name}/Dockerfile"), *text)).collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(path, text)| (path.as_str(), *text)).collect();
    repo_files(yaml, &files)
}

/// A repository with `archfarm.yaml` text and files given as (path under `images/`, text).
fn repo_files(yaml: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Config, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("archfarm.yaml"), yaml).unwrap();
    for (path, text) in files {
        let path = dir.path().join("images").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let o = Overrides { store: Some(dir.path().join("store")), ..Default::default() };
    let config = Config::load(dir.path(), &o).unwrap();
    let catalog = catalog::discover(&config.images_dir, &config.arches).unwrap();
    (dir, config, catalog)
}

fn plan(config: &Config, catalog: &Catalog, names: &[&str], platforms: &str) -> Result<Plan> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let choice = PlatformChoice::Requested(config.arches.parse_platform_list(platforms)?);
    prepare(config, catalog, &names, &choice)?.finish(&BTreeMap::new())
}

/// [`plan`] with every external base resolved by `resolve`, as the caller of
/// [`Draft::finish`] does with the engine and registries (none here).
fn plan_resolving(
    config: &Config,
    catalog: &Catalog,
    names: &[&str],
    platforms: &str,
    resolve: impl Fn(&str, &Platform) -> std::result::Result<Resolved, NoDigest>,
) -> Plan {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let choice = PlatformChoice::Requested(config.arches.parse_platform_list(platforms).unwrap());
    let draft = prepare(config, catalog, &names, &choice).unwrap();
    let resolved: Resolutions = draft
        .external_bases()
        .into_iter()
        .map(|(base, platform)| {
            let r = resolve(&base, &platform);
            ((base, platform), r)
        })
        .collect();
    draft.finish(&resolved).unwrap()
}

fn jobs(plan: &Plan) -> Vec<String> {
    plan.jobs.iter().map(|j| format!("{} {}", j.image, j.platform)).collect()
}

fn image_plans(plan: &Plan) -> Vec<&str> {
    plan.images.iter().map(|i| i.name.as_str()).collect()
}

/// Why `image` is invalid in `plan` (for every platform planned), failing the test
/// when it was planned or left out for another reason.
fn invalid(plan: &Plan, image: &str) -> String {
    assert!(plan.jobs.iter().all(|j| j.image != image), "{image} was planned");
    let u: Vec<&Unresolved> = plan.unresolved.iter().filter(|u| u.image == image).collect();
    assert!(!u.is_empty() && u.iter().all(|u| u.invalid), "{image} is not invalid: {u:?}");
    u[0].reason.clone()
}

const CROSS: &str = "FROM --platform=$BUILDPLATFORM archfarm.local/images/tools AS build\n\
                     ARG TARGETARCH\nRUN make GOARCH=$TARGETARCH\n\
                     FROM scratch\nCOPY --from=build /out /out\n";

#[test]
fn a_cross_stage_needs_its_farm_parent_for_the_build_platform() {
    let (_d, config, catalog) = repo("", &[("tools", "FROM scratch\n"), ("app", CROSS)]);
    let p = plan(&config, &catalog, &["app"], "arm64").unwrap();
    let jobs: Vec<String> = p.jobs.iter().map(|j| format!("{} {}", j.image, j.platform)).collect();
    assert_eq!(jobs, ["tools linux/amd64", "app linux/arm64"], "the parent comes first, for amd64");
    let app = p.job("app", &config.arches.parse_platform("arm64").unwrap()).unwrap();
    assert_eq!(app.parents[0].platform.to_string(), "linux/amd64");
    assert_eq!(app.build_platform.as_ref().map(|b| b.to_string()).as_deref(), Some("linux/amd64"));
    // Only the platforms asked for are stitched for app; tools gets the one it was built for.
    let stitched: Vec<(String, usize)> = p.images.iter().map(|i| (i.name.clone(), i.platforms.len())).collect();
    assert_eq!(stitched, [("tools".to_string(), 1), ("app".to_string(), 1)]);
}

#[test]
fn the_build_platform_enters_only_the_keys_of_recipes_that_read_it() {
    let images = [("tools", "FROM scratch\n"), ("app", CROSS), ("plain", "FROM scratch\nARG TARGETARCH\n")];
    let key = |yaml: &str, image: &str| {
        let (_d, config, catalog) = repo(yaml, &images);
        plan(&config, &catalog, &[image], "arm64").unwrap().jobs.last().unwrap().key.clone()
    };
    // app reads BUILDPLATFORM: builders of another platform may make other bytes.
    assert_ne!(key("build_platform: amd64\n", "app"), key("build_platform: riscv64\n", "app"));
    // plain does not: any builder makes the same image, so they share one key.
    assert_eq!(key("build_platform: amd64\n", "plain"), key("build_platform: riscv64\n", "plain"));
    // And its key is what it was before cross stages existed (no build record).
    let (_d, config, catalog) = repo("", &images);
    let p = plan(&config, &catalog, &["plain"], "arm64").unwrap();
    assert!(p.jobs[0].build_platform.is_none());
}

#[test]
fn bad_platforms_secrets_and_targets_make_the_image_invalid_naming_the_place() {
    let (_d, config, catalog) = repo("", &[("a", "FROM --platform=linux/mips99 scratch AS x\nFROM scratch\n")]);
    let e = invalid(&plan(&config, &catalog, &["a"], "amd64").unwrap(), "a");
    assert!(e.contains("Dockerfile:1") && e.contains("mips99"), "{e}");

    let secret = "FROM scratch\nRUN --mount=type=secret,id=tok true\n";
    let (_d, config, catalog) = repo("", &[("a", secret)]);
    let e = invalid(&plan(&config, &catalog, &["a"], "amd64").unwrap(), "a");
    assert!(e.contains("Dockerfile:2") && e.contains("'tok'"), "{e}");
    let (_d, config, catalog) = repo("secrets:\n  tok: {env: ARCHFARM_TEST_TOKEN}\n", &[("a", secret)]);
    let p = plan(&config, &catalog, &["a"], "amd64").unwrap();
    assert_eq!(p.jobs[0].needs.secrets, ["tok"]);
    assert_eq!(p.jobs[0].needs.buildkit_only.as_deref(), Some("line 2: RUN --mount"));

    let (_d, config, catalog) = repo("images:\n  a: {target: nope}\n", &[("a", "FROM scratch AS one\n")]);
    let e = invalid(&plan(&config, &catalog, &["a"], "amd64").unwrap(), "a");
    assert!(e.contains("no stage 'nope'") && e.contains("one"), "{e}");

    let (_d, config, catalog) = repo("images:\n  a: {buildkit: false}\n", &[("a", secret)]);
    invalid(&plan(&config, &catalog, &["a"], "amd64").unwrap(), "a");
}

#[test]
fn a_bad_recipe_leaves_out_its_image_and_children_only() {
    let images = [("bad", "FROM\n"), ("child", "FROM archfarm.local/images/bad\n"), ("good", "FROM scratch\n")];
    let (_d, config, catalog) = repo("", &images);
    let p = plan(&config, &catalog, &[], "amd64,arm64").unwrap();
    assert!(invalid(&p, "bad").contains("cannot parse 'FROM'"));
    let child = invalid(&p, "child");
    assert!(child.starts_with("its parent bad for linux/amd64 is invalid: "), "{child}");
    assert_eq!(p.jobs.iter().filter(|j| j.image == "good").count(), 2);
    assert_eq!(p.images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["good"]);
    // Not selected and not needed: not reported.
    let p = plan(&config, &catalog, &["good"], "amd64").unwrap();
    assert!(p.unresolved.is_empty(), "{:?}", p.unresolved);
}

#[test]
fn a_cross_parent_that_cannot_be_built_for_the_build_platform_skips_with_what_to_do() {
    let yaml = "images:\n  tools: {platforms: [arm64]}\n";
    let (_d, config, catalog) = repo(yaml, &[("tools", "FROM scratch\n"), ("app", CROSS)]);
    let p = plan(&config, &catalog, &["app"], "arm64").unwrap();
    let skip = p.skipped.iter().find(|s| s.image == "app").expect("app is skipped");
    assert!(skip.reason.contains("runs on linux/amd64") && skip.reason.contains("build_platform"), "{}", skip.reason);
}

#[test]
fn cycles_across_platforms_are_found() {
    let a = "FROM --platform=linux/amd64 archfarm.local/images/b AS x\nFROM scratch\n";
    let b = "FROM archfarm.local/images/a\n";
    let (_d, config, catalog) = repo("", &[("a", a), ("b", b)]);
    let e = invalid(&plan(&config, &catalog, &["a"], "amd64").unwrap(), "a");
    assert!(e.starts_with("FROM cycle for linux/amd64: ") && e.contains("a -> b"), "{e}");
    // For arm64, a's cross stage needs b for amd64, which is on that cycle.
    let e = invalid(&plan(&config, &catalog, &["a"], "arm64").unwrap(), "a");
    assert!(e.starts_with("its parent b for linux/amd64 is invalid: FROM cycle for linux/amd64"), "{e}");
}

#[test]
fn a_cycle_is_reported_for_the_platform_asked_for() {
    let (_d, config, catalog) =
        repo("", &[("a", "FROM archfarm.local/images/b\n"), ("b", "FROM archfarm.local/images/a\n")]);
    for platform in ["amd64", "386", "riscv64"] {
        let p = plan(&config, &catalog, &["a"], platform).unwrap();
        let want = format!("FROM cycle for {}: ", config.arches.parse_platform(platform).unwrap());
        assert!(invalid(&p, "a").starts_with(&want), "{platform}: {}", invalid(&p, "a"));
    }
}

#[test]
fn an_unresolved_base_leaves_its_image_and_children_out_and_plans_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    for (image, recipe) in [
        ("a", "FROM nosuch:1\n"),
        ("b", "FROM archfarm.local/images/a\n"),
        ("c", "FROM busybox:1\n"),
        ("d", "FROM scratch\n"),
    ] {
        std::fs::create_dir_all(dir.path().join("images").join(image)).unwrap();
        std::fs::write(dir.path().join("images").join(image).join("Dockerfile"), recipe).unwrap();
    }
    // e: amd64 resolves, arm64 does not: its amd64 job is planned, the image has no index.
    std::fs::create_dir_all(dir.path().join("images/e")).unwrap();
    std::fs::write(dir.path().join("images/e/Dockerfile.x86_64"), "FROM scratch\n").unwrap();
    std::fs::write(dir.path().join("images/e/Dockerfile.aarch64"), "FROM nosuch:1\n").unwrap();
    let overrides = crate::recipe::config::Overrides { store: Some(dir.path().join("store")), ..Default::default() };
    let config = Config::load(dir.path(), &overrides).unwrap();
    let catalog = catalog::discover(&config.images_dir, &config.arches).unwrap();
    let draft = prepare(&config, &catalog, &[], &PlatformChoice::Defaults).unwrap();
    let mut resolved = Resolutions::new();
    for (base, platform) in draft.external_bases() {
        let r = if base == "nosuch:1" {
            Err(NoDigest::unresolved(format!("{base} is nowhere")))
        } else {
            Ok(Resolved::as_written("sha256:d".to_string()))
        };
        resolved.insert((base, platform), r);
    }
    let plan = draft.finish(&resolved).unwrap();
    let platforms = config.platforms.len();
    assert_eq!(platforms, 2, "the default platforms are amd64 and arm64");
    assert_eq!(plan.unresolved.len(), 2 * platforms + 1);
    for u in &plan.unresolved {
        match u.image.as_str() {
            "a" => assert_eq!(u.reason, "nosuch:1 is nowhere"),
            "b" => {
                assert_eq!(u.reason, format!("its parent a for {} is unresolved: nosuch:1 is nowhere", u.platform))
            }
            "e" => assert_eq!(u.platform.architecture, "arm64"),
            other => panic!("{other} should be planned"),
        }
    }
    let names: Vec<&str> = plan.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["c", "d"]);
    assert_eq!(plan.jobs.len(), 2 * platforms + 1);
    assert!(plan.job("e", &config.arches.parse_platform("amd64").unwrap()).is_some());
    assert!(plan.jobs.iter().filter(|j| j.image == "c").all(|j| j.bases["busybox:1"] == "sha256:d"));
    assert!(plan.unresolved("b", &config.platforms[0]).is_some());
}

const FARM: &str = "archfarm.local/images";

#[test]
fn a_from_cycle_names_its_images_and_leaves_out_only_them_and_their_children() {
    let from = |parent: &str| format!("FROM {FARM}/{parent}\n");
    let (a, b, c, d) = (from("b"), from("c"), from("a"), from("a"));
    let images = [("a", a.as_str()), ("b", &b), ("c", &c), ("d", &d), ("e", "FROM scratch\n")];
    let (_d, config, catalog) = repo("", &images);
    let p = plan(&config, &catalog, &[], "amd64").unwrap();
    for image in ["a", "b", "c"] {
        let e = invalid(&p, image);
        assert!(e.starts_with("FROM cycle for linux/amd64: a -> b -> c -> a;"), "{image}: {e}");
    }
    let e = invalid(&p, "d");
    assert!(e.starts_with("its parent a for linux/amd64 is invalid: FROM cycle"), "{e}");
    assert_eq!(jobs(&p), ["e linux/amd64"]);
    assert_eq!(image_plans(&p), ["e"]);
}

#[test]
fn an_unknown_farm_parent_is_invalid_naming_the_place_and_the_name() {
    let dockerfile = format!("FROM scratch AS one\nFROM {FARM}/nosuch:1\n");
    let files = [
        ("a/Dockerfile", dockerfile.as_str()),
        ("y/image.yaml", "from: farm:nosuch\n"),
        ("ok/Dockerfile", "FROM scratch\n"),
    ];
    let (_d, config, catalog) = repo_files("", &files);
    let p = plan(&config, &catalog, &[], "amd64").unwrap();
    let e = invalid(&p, "a");
    assert!(e.contains("Dockerfile:2") && e.contains("farm image 'nosuch', which is not under"), "{e}");
    let e = invalid(&p, "y");
    assert!(e.contains("image.yaml: field `from`: 'nosuch' is not an image of the catalog"), "{e}");
    assert_eq!(jobs(&p), ["ok linux/amd64"]);
}

#[test]
fn a_failed_parent_fails_its_children_and_nothing_else() {
    let files = [
        ("root/Dockerfile", "FROM scratch\n"),
        ("mid/Dockerfile", "FROM archfarm.local/images/root AS tools\nFROM nosuch:1\n"),
        ("leaf/Dockerfile", "FROM archfarm.local/images/mid\n"),
        ("assembled/image.yaml", "from: mid\n"),
        ("sibling/Dockerfile", "FROM archfarm.local/images/root\n"),
        ("other/Dockerfile", "FROM busybox:1\n"),
    ];
    let (_d, config, catalog) = repo_files("", &files);
    for invalid_base in [false, true] {
        let p = plan_resolving(&config, &catalog, &[], "amd64", |base, _| match base {
            "nosuch:1" => Err(NoDigest { reason: "nosuch:1 is nowhere".into(), invalid: invalid_base }),
            _ => Ok(Resolved::as_written("sha256:b".into())),
        });
        let state = if invalid_base { "invalid" } else { "unresolved" };
        let failed: Vec<(&str, &str, bool)> =
            p.unresolved.iter().map(|u| (u.image.as_str(), u.reason.as_str(), u.invalid)).collect();
        let inherited = format!("its parent mid for linux/amd64 is {state}: nosuch:1 is nowhere");
        assert_eq!(
            failed,
            [
                ("mid", "nosuch:1 is nowhere", invalid_base),
                ("assembled", inherited.as_str(), invalid_base),
                ("leaf", inherited.as_str(), invalid_base),
            ]
        );
        let mut planned = jobs(&p);
        planned.sort();
        assert_eq!(planned, ["other linux/amd64", "root linux/amd64", "sibling linux/amd64"]);
        let mut indexed = image_plans(&p);
        indexed.sort();
        assert_eq!(indexed, ["other", "root", "sibling"]);
    }
}

#[test]
fn an_image_with_an_unresolved_platform_gets_no_image_plan() {
    let images = [("a", "FROM base:1\n"), ("b", "FROM archfarm.local/images/a\n")];
    let (_d, config, catalog) = repo("", &images);
    let p = plan_resolving(&config, &catalog, &[], "amd64,arm64", |_, platform| match platform.architecture.as_str() {
        "arm64" => Err(NoDigest::unresolved("no arm64 base".into())),
        _ => Ok(Resolved::as_written("sha256:b".into())),
    });
    assert_eq!(jobs(&p), ["a linux/amd64", "b linux/amd64"], "the platform that resolved is still built");
    let failed: Vec<String> = p.unresolved.iter().map(|u| format!("{} {}", u.image, u.platform)).collect();
    assert_eq!(failed, ["a linux/arm64", "b linux/arm64"]);
    assert!(p.images.is_empty(), "a canonical tag over part of an image: {:?}", p.images);
    // Resolved for both, both images get their index over both platforms.
    let p = plan_resolving(&config, &catalog, &[], "amd64,arm64", |_, _| Ok(Resolved::as_written("sha256:b".into())));
    assert_eq!(image_plans(&p), ["a", "b"]);
    assert!(p.images.iter().all(|i| i.platforms.len() == 2));
}

#[test]
fn skipped_platforms_say_why() {
    let files = [
        ("amd64only/Dockerfile.x86_64", "FROM scratch\n"),
        ("child/Dockerfile", "FROM archfarm.local/images/amd64only\n"),
        ("narrow/Dockerfile", "FROM scratch\n"),
    ];
    let (_d, config, catalog) = repo_files("images:\n  narrow: {platforms: [amd64]}\n", &files);
    let p = plan(&config, &catalog, &[], "arm64").unwrap();
    let skips: Vec<(&str, &str)> = p.skipped.iter().map(|s| (s.image.as_str(), s.reason.as_str())).collect();
    let limits = format!("{} limits it to linux/amd64", config.source);
    assert_eq!(
        skips,
        [
            ("amd64only", "no recipe for linux/arm64 (it has linux/amd64)"),
            ("child", "it builds FROM amd64only, which is not available for linux/arm64"),
            ("narrow", limits.as_str()),
        ]
    );
    assert!(p.jobs.is_empty() && p.unresolved.is_empty(), "a skip is neither built nor a failure");
    // By default the setting narrows the image's platforms: nothing to skip.
    let draft = prepare(&config, &catalog, &["narrow".to_string()], &PlatformChoice::Defaults).unwrap();
    let p = draft.finish(&BTreeMap::new()).unwrap();
    assert!(p.skipped.is_empty(), "{:?}", p.skipped);
    assert_eq!(jobs(&p), ["narrow linux/amd64"]);
}

#[test]
fn keys_follow_the_context_build_args_and_base_digests_but_not_ignored_files() {
    const PARENT: &str = "FROM base:1\nARG V\nCOPY . /\n";
    let base = [
        ("a/Dockerfile", PARENT),
        ("a/.dockerignore", "*.md\n"),
        ("a/data.txt", "one"),
        ("a/README.md", "notes"),
        ("child/Dockerfile", "FROM archfarm.local/images/a\n"),
    ];
    // The keys of a and of its child, in a fresh repository.
    let keys = |files: &[(&str, &str)], v: &str, digest: &str| -> (String, String) {
        let (_d, config, catalog) = repo_files(&format!("images:\n  a: {{build_args: {{V: '{v}'}}}}\n"), files);
        let p = plan_resolving(&config, &catalog, &[], "amd64", |_, _| Ok(Resolved::as_written(digest.into())));
        let key = |image: &str| p.jobs.iter().find(|j| j.image == image).expect(image).key.clone();
        (key("a"), key("child"))
    };
    // The files of `base` with `path` (replaced or added) holding `text`.
    let with = |path: &'static str, text: &'static str| -> Vec<(&str, &str)> {
        let mut files: Vec<(&str, &str)> = base.iter().filter(|(p, _)| *p != path).copied().collect();
        files.push((path, text));
        files
    };
    let before = keys(&base, "1", "sha256:1");
    assert_eq!(keys(&base, "1", "sha256:1"), before, "the same inputs in another folder");
    for (what, after) in [
        ("a context file", keys(&with("a/data.txt", "two"), "1", "sha256:1")),
        ("a build arg", keys(&base, "2", "sha256:1")),
        ("the base digest", keys(&base, "1", "sha256:2")),
    ] {
        assert_ne!(after.0, before.0, "{what} changed, a's key did not");
        assert_ne!(after.1, before.1, "{what} of the parent changed, the child's key did not");
    }
    assert_eq!(keys(&with("a/README.md", "other notes"), "1", "sha256:1"), before, "an ignored file changed");
    assert_eq!(keys(&with("a/NEW.md", "new"), "1", "sha256:1"), before, "an ignored file was added");
}

#[test]
fn parents_come_before_their_children_in_job_order() {
    // Names against the alphabet, so name order alone would get it wrong.
    let images = [
        ("a", "FROM archfarm.local/images/b\n"),
        ("b", "FROM archfarm.local/images/d AS x\nFROM archfarm.local/images/c\n"),
        ("c", "FROM archfarm.local/images/d\n"),
        ("d", "FROM scratch\n"),
    ];
    let (_d, config, catalog) = repo("", &images);
    let p = plan(&config, &catalog, &["a"], "amd64,arm64").unwrap();
    assert_eq!(p.jobs.len(), 8, "{:?}", jobs(&p));
    for (i, job) in p.jobs.iter().enumerate() {
        for parent in &job.parents {
            let at = p.jobs.iter().position(|j| j.image == parent.image && j.platform == parent.platform).unwrap();
            assert!(at < i, "{} {} comes before its parent {}", job.image, job.platform, parent.image);
        }
    }
    assert_eq!(image_plans(&p), ["d", "c", "b", "a"]);
}

#[test]
fn settings_for_an_image_that_does_not_exist_are_refused() {
    let images = [("app", "FROM scratch\n")];
    let (_d, config, catalog) = repo("images:\n  ap: {platforms: [amd64]}\n", &images);
    let e = check_settings(&config, &catalog).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.message().contains("field 'images.ap': there is no image 'ap'"), "{e}");
    assert!(e.message().contains("did you mean app?"), "{e}");
    let (_d, config, catalog) = repo("images:\n  nosuch: {build_args: {V: '1'}}\n", &images);
    assert!(check_settings(&config, &catalog).unwrap_err().message().contains("'images.nosuch'"));
    let (_d, config, catalog) = repo("images:\n  app: {platforms: [amd64]}\n", &images);
    check_settings(&config, &catalog).unwrap();
}

#[test]
fn annotations_and_source_date_epoch_enter_the_keys_only_when_set() {
    let images = [("base", "FROM scratch\n"), ("app", "FROM archfarm.local/images/base\n")];
    let keys = |yaml: &str, epoch: Option<u64>| {
        let (dir, _, _) = repo(yaml, &images);
        let o = Overrides { store: Some(dir.path().join("store")), source_date_epoch: epoch, ..Default::default() };
        let config = Config::load(dir.path(), &o).unwrap();
        let catalog = catalog::discover(&config.images_dir, &config.arches).unwrap();
        let p = plan(&config, &catalog, &[], "amd64,arm64").unwrap();
        let jobs: Vec<(String, Stamp)> = p.jobs.iter().map(|j| (j.key.clone(), j.stamp.clone())).collect();
        let images: Vec<(String, BTreeMap<String, String>)> =
            p.images.iter().map(|i| (i.index_key.clone(), i.annotations.clone())).collect();
        for i in &p.images {
            assert_eq!(i.index_key, key::index_key(&i.platforms, &i.annotations));
        }
        (jobs, images)
    };
    let (plain_jobs, plain_images) = keys("", None);
    assert!(plain_jobs.iter().all(|(_, s)| *s == Stamp::default()));
    assert!(plain_images.iter().all(|(_, a)| a.is_empty()));
    assert_eq!(
        keys("annotations: {}\nimages:\n  app: {annotations: {}}\n", None),
        (plain_jobs.clone(), plain_images.clone())
    );

    // A variable: on the index only, so the per-platform keys stay.
    std::env::set_var("ARCHFARM_TEST_PLAN_REVISION", "0123abc");
    let (jobs, images) =
        keys("annotations:\n  org.opencontainers.image.revision: {env: ARCHFARM_TEST_PLAN_REVISION}\n", None);
    assert_eq!(jobs, plain_jobs);
    assert!(images.iter().zip(&plain_images).all(|(a, b)| a.0 != b.0));
    assert_eq!(images[0].1["org.opencontainers.image.revision"], "0123abc");

    // Text on base's manifests: base's keys change, and app's through its parent's.
    let (jobs, images) = keys("images:\n  base:\n    annotations: {com.example.team: infra}\n", None);
    assert!(jobs.iter().zip(&plain_jobs).all(|(a, b)| a.0 != b.0));
    let team = BTreeMap::from([("com.example.team".to_string(), "infra".to_string())]);
    assert_eq!(jobs.iter().filter(|(_, s)| s.annotations == team).count(), 2, "base's two platforms");
    assert_eq!((images[0].1.clone(), images[1].1.is_empty()), (team, true), "base, then app");

    // SOURCE_DATE_EPOCH: every key, and created on manifests and index.
    let (jobs, images) = keys("", Some(1_700_000_000));
    assert!(jobs.iter().zip(&plain_jobs).all(|(a, b)| a.0 != b.0));
    assert!(jobs.iter().all(|(_, s)| s.epoch == Some(1_700_000_000)
        && s.annotations["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"));
    assert!(images.iter().all(|(_, a)| a["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"));
    assert_ne!(keys("", Some(1_700_000_001)).0, jobs);
}
