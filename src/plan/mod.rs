//! The planner: from the catalog and configuration to a list of jobs, one per
//! (image, platform), each with its content key, in an order where parents come first.
//!
//! Planning is two-phase so it needs no engine unless it must: [`prepare`] reads recipes,
//! scans folders and checks the FROM graph; the caller resolves the external bases it
//! names (pinned digests need nothing; unpinned ones go to [`crate::farm::bases`]), and
//! [`Draft::finish`] computes the keys.
//!
//! One bad image never stops the others: a recipe that does not parse, a folder that
//! cannot be scanned, or a FROM cycle leaves its (image, platform) out with the reason
//! in [`Plan::unresolved`] (marked `invalid`), its children with it, as an unresolved
//! base does; every other image is planned.

pub mod key;

use std::collections::{BTreeMap, BTreeSet};

use self::key::KeyInput;
use crate::image::platform::Platform;
use crate::image::reproducible::Stamp;
use crate::recipe::catalog::{self, Catalog, Image};
use crate::recipe::config::Config;
use crate::recipe::context::Context;
use crate::recipe::dockerfile;
use crate::recipe::scan::{self, Links, StatCache};
use crate::support::error::{Error, Result};

/// One (image, platform) to build or find.
#[derive(Debug, Clone)]
pub struct Job {
    pub image: String,
    pub platform: Platform,
    pub key: String,
    /// Which backend produces it: decided here, once, from the kind of recipe.
    pub kind: JobKind,
    /// The recipe file used for this platform (`Dockerfile.aarch64` beats `Dockerfile`).
    pub recipe: String,
    pub recipe_text: String,
    /// Exactly the files hashed into the key; also the engine's build context.
    pub context: Context,
    pub build_args: BTreeMap<String, String>,
    /// Farm images this one builds FROM, each for the platform its stage runs on.
    pub parents: Vec<Parent>,
    /// External bases and the digests they were resolved to (exactly what the key
    /// covers), named by [`Base::key_name`].
    pub bases: BTreeMap<String, String>,
    /// The reference each external base (and its stage's platform) is built FROM when
    /// it is not the reference as written: a tag pinned to the digest in the key.
    pub pinned: BTreeMap<(String, Platform), String>,
    /// The builder's platform, for recipes that read BUILD* args (it is in the key, and
    /// the job runs on a builder of that platform); `None`: any builder.
    pub build_platform: Option<Platform>,
    /// What the recipe asks of the engine's builder.
    pub needs: Needs,
    /// The time and manifest annotations its image is stamped with (in the key).
    pub stamp: Stamp,
}

impl Job {
    /// Whether some of its stages run on the builder's platform rather than the job's
    /// (`FROM --platform=$BUILDPLATFORM`, or a recipe that reads BUILD* args).
    pub fn has_cross_stages(&self) -> bool {
        self.build_platform.is_some()
            || self.parents.iter().any(|p| p.platform != self.platform)
            || self.bases.keys().any(|name| name.contains(' '))
    }
}

/// Which backend produces a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JobKind {
    /// A Dockerfile, built on an engine of the fleet.
    #[default]
    Engine,
    /// An image.yaml, assembled without an engine.
    Assemble,
}

/// A farm image a job builds FROM.
#[derive(Debug, Clone)]
pub struct Parent {
    pub image: String,
    /// The reference as written in the recipe (after ARG substitution).
    pub reference: String,
    /// The platform its stage runs on: the job's, or a cross stage's `--platform`.
    pub platform: Platform,
}

/// An external base image a job builds FROM, for the platform its stage runs on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Base {
    pub reference: String,
    pub platform: Platform,
}

impl Base {
    /// Its name in `Job.bases` and the key: the reference, with ` for <platform>` when
    /// the stage runs on another platform than the job (no reference holds a space).
    pub fn key_name(&self, job_platform: &Platform) -> String {
        if &self.platform == job_platform {
            self.reference.clone()
        } else {
            format!("{} for {}", self.reference, self.platform)
        }
    }
}

/// What a Dockerfile job asks of the engine's builder (all empty for image.yaml jobs).
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// The first construct only BuildKit builds (`line 3: RUN --mount`).
    pub buildkit_only: Option<String>,
    /// The image's `buildkit: false`: the classic builder only.
    pub classic_only: bool,
    /// Secret ids mounted by RUN steps (all declared in the configuration).
    pub secrets: Vec<String>,
    /// The stage to build (`images.<name>.target`).
    pub target: Option<String>,
}

/// An (image, platform) left out, and why.
#[derive(Debug, Clone)]
pub struct Skip {
    pub image: String,
    pub platform: Platform,
    pub reason: String,
}

/// One image's planned platforms, the annotations of its canonical index, and the
/// index key over both.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    pub name: String,
    pub platforms: Vec<(Platform, String)>,
    pub index_key: String,
    /// On the canonical index (none: the index has no `annotations` field).
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// Topological order: every job comes after the jobs of its parents.
    pub jobs: Vec<Job>,
    pub skipped: Vec<Skip>,
    /// Images whose every planned platform has a key.
    pub images: Vec<ImagePlan>,
    /// Jobs left out because a base (theirs or a parent's) is unresolved, or because
    /// their recipe (or a parent's) is invalid.
    pub unresolved: Vec<Unresolved>,
}

impl Plan {
    pub fn job(&self, image: &str, platform: &Platform) -> Option<&Job> {
        self.jobs.iter().find(|j| j.image == image && &j.platform == platform)
    }

    /// Why `image` for `platform` is unresolved, if it is.
    pub fn unresolved(&self, image: &str, platform: &Platform) -> Option<&Unresolved> {
        self.unresolved.iter().find(|u| u.image == image && &u.platform == platform)
    }
}

/// Which platforms to plan for.
#[derive(Debug, Clone)]
pub enum PlatformChoice {
    /// Each image's default platforms: the configured ones, narrowed per image.
    Defaults,
    /// Exactly these (an image without one of them skips it with a note).
    Requested(Vec<Platform>),
}

struct DraftJob {
    image: String,
    platform: Platform,
    kind: JobKind,
    recipe: String,
    recipe_text: String,
    context: Context,
    build_args: BTreeMap<String, String>,
    parents: Vec<Parent>,
    /// External base references (not farm images, not scratch).
    bases: Vec<Base>,
    build_platform: Option<Platform>,
    needs: Needs,
    stamp: Stamp,
}

/// A plan whose keys are not yet computed.
pub struct Draft {
    jobs: Vec<DraftJob>,
    skipped: Vec<Skip>,
    order: Vec<String>,
    /// The canonical index annotations of each image in `order`.
    index_annotations: BTreeMap<String, BTreeMap<String, String>>,
    /// Selected (or needed) jobs whose recipe or folder is bad, and their children.
    invalid: Vec<Unresolved>,
}

/// An (image, platform) of the FROM graph.
type Node = (String, Platform);

/// Reads recipes and folders of `selection` (all images when empty) and their farm
/// parents, checks the FROM graph, and decides each image's platforms. A parent used by
/// a cross stage (`FROM --platform=$BUILDPLATFORM <farm image>`) is planned for that
/// stage's platform too.
pub fn prepare(config: &Config, catalog: &Catalog, selection: &[String], choice: &PlatformChoice) -> Result<Draft> {
    for name in selection {
        if !catalog.images.contains_key(name) {
            return Err(unknown_image(catalog, name));
        }
    }
    let cache_dir = config.store.join("statcache");
    let scanned = std::cell::RefCell::new(BTreeMap::<String, Context>::new());
    let scan_image = |image: &Image| -> Result<Context> {
        if let Some(c) = scanned.borrow().get(&image.name) {
            return Ok(c.clone());
        }
        let cache = StatCache::for_folder(&cache_dir, &image.dir);
        // An assembled image's files are an image tree: its links name paths in the image.
        let links = match image.recipes {
            catalog::Recipes::Assembled { .. } => Links::ImageTree,
            catalog::Recipes::Dockerfile { .. } => Links::InsideFolder,
        };
        let ctx =
            scan::scan(&image.dir, links, Some(&cache)).map_err(|e| e.context(format!("image {}", image.name)))?;
        // A cache that cannot be saved (a read-only store) only costs time on the next run.
        if let Err(e) = cache.save() {
            tracing::debug!("stat cache for {} not saved: {}", image.name, e.message());
        }
        scanned.borrow_mut().insert(image.name.clone(), ctx.clone());
        Ok(ctx)
    };

    // Parse every recipe of every image once per platform; one that fails is that
    // image's problem (reported if it is planned), not the tree's.
    let mut recipes = Recipes::new();
    let mut broken: BTreeMap<Node, Unresolved> = BTreeMap::new();
    for image in catalog.images.values() {
        for platform in image.available_platforms(&config.arches) {
            let Some(recipe) = image.recipe_for(&platform) else { continue };
            let node = (image.name.clone(), platform.clone());
            match parse_recipe(config, catalog, image, recipe, &platform) {
                Ok(parsed) => {
                    recipes.insert(node, parsed);
                }
                Err(e) => {
                    broken.insert(node, Unresolved::from_error(&image.name, &platform, &e));
                }
            }
        }
    }
    // Images on a FROM cycle are left out like bad recipes, so the rest is a DAG.
    for (node, reason) in cycles(&recipes) {
        recipes.remove(&node);
        let (image, platform) = node.clone();
        broken.insert(node, Unresolved { image, platform, reason, invalid: true });
    }

    // The closure of the selection over farm parents, in topological order.
    let roots: Vec<String> =
        if selection.is_empty() { catalog.images.keys().cloned().collect() } else { selection.to_vec() };
    let order = topological(&roots, &recipes);

    let wanted_platforms = |image: &str| -> Vec<Platform> {
        let narrow = config.image_settings(image).platforms;
        match choice {
            PlatformChoice::Requested(list) => list.clone(),
            PlatformChoice::Defaults => narrow.unwrap_or_else(|| config.platforms.clone()),
        }
    };
    // The selected images get their wanted platforms; a parent (not itself selected)
    // gets the platforms its children's stages need of it: the child's own, or a cross
    // stage's `--platform`.
    let mut wanted: BTreeMap<&str, Vec<Platform>> =
        order.iter().map(|n| (n.as_str(), if roots.contains(n) { wanted_platforms(n) } else { Vec::new() })).collect();
    for name in order.iter().rev() {
        let platforms = wanted[name.as_str()].clone();
        for platform in platforms {
            let Some(r) = recipes.get(&(name.clone(), platform.clone())) else { continue };
            for p in &r.parents {
                let narrow = config.image_settings(&p.image).platforms;
                let list = wanted.get_mut(p.image.as_str()).expect("parents are in the order");
                if !list.contains(&p.platform) && narrow.is_none_or(|n| n.contains(&p.platform)) {
                    list.push(p.platform.clone());
                }
            }
        }
    }

    let mut jobs: Vec<DraftJob> = Vec::new();
    let mut skipped = Vec::new();
    let mut invalid: Vec<Unresolved> = Vec::new();
    let mut planned: BTreeSet<(String, Platform)> = BTreeSet::new();
    let mut index_annotations = BTreeMap::new();
    for name in &order {
        let image = &catalog.images[name];
        let settings = config.image_settings(name);
        let annotations = config.annotations_for(name);
        let stamp = Stamp { epoch: config.source_date_epoch, annotations: annotations.manifest };
        index_annotations.insert(name.clone(), annotations.index);
        for platform in wanted[name.as_str()].clone() {
            let skip = |reason: String| Skip { image: name.clone(), platform: platform.clone(), reason };
            let Some(parsed) = recipes.get(&(name.clone(), platform.clone())) else {
                match broken.get(&(name.clone(), platform.clone())) {
                    Some(b) => invalid.push(b.clone()),
                    None => skipped
                        .push(skip(format!("no recipe for {platform} (it has {})", available_list(image, config)))),
                }
                continue;
            };
            if let (PlatformChoice::Requested(_), Some(narrow)) = (choice, &settings.platforms) {
                if !narrow.contains(&platform) {
                    skipped.push(skip(format!("{} limits it to {}", config.source, list(narrow))));
                    continue;
                }
            }
            if let Some(p) = parsed.parents.iter().find(|p| !planned.contains(&(p.image.clone(), p.platform.clone()))) {
                if let Some(bad) = invalid.iter().find(|u| u.image == p.image && u.platform == p.platform) {
                    let state = if bad.invalid { "invalid" } else { "not planned" };
                    let why = format!("its parent {} for {} is {state}: {}", p.image, p.platform, bad.reason);
                    invalid.push(Unresolved {
                        image: name.clone(),
                        platform: platform.clone(),
                        reason: why,
                        ..bad.clone()
                    });
                    continue;
                }
                let what = if p.platform == platform {
                    format!("it builds FROM {}, which is not available for {platform}", p.image)
                } else {
                    format!(
                        "a stage of it runs on {} and builds FROM {}, which is not available for {}; \
                         give {} a recipe for {} or set build_platform",
                        p.platform, p.image, p.platform, p.image, p.platform
                    )
                };
                skipped.push(skip(what));
                continue;
            }
            let ctx = match scan_image(image) {
                Ok(ctx) => ctx.for_recipe(&parsed.file, &image.recipe_files()),
                Err(e) => {
                    invalid.push(Unresolved::from_error(name, &platform, &e));
                    continue;
                }
            };
            planned.insert((name.clone(), platform.clone()));
            jobs.push(DraftJob {
                image: name.clone(),
                platform: platform.clone(),
                kind: parsed.kind,
                recipe: parsed.file.clone(),
                recipe_text: parsed.text.clone(),
                context: ctx,
                build_args: settings.build_args.clone(),
                parents: parsed.parents.clone(),
                bases: parsed.bases.clone(),
                build_platform: parsed.build_platform.clone(),
                needs: parsed.needs.clone(),
                stamp: stamp.clone(),
            });
        }
    }
    Ok(Draft { jobs, skipped, order, index_annotations, invalid })
}

/// Reads one recipe of `image` for `platform`: its farm parents and external bases with
/// the platform each stage runs on, and what it needs of the builder.
fn parse_recipe(
    config: &Config,
    catalog: &Catalog,
    image: &Image,
    recipe: &str,
    platform: &Platform,
) -> Result<ParsedRecipe> {
    let path = image.dir.join(recipe);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::usage(format!("image {}: cannot read {}: {e}", image.name, path.display())))?;
    // The catalog knows the kind of recipe; the job's kind is decided here, once.
    if matches!(image.recipes, crate::recipe::catalog::Recipes::Assembled { .. }) {
        let refs = crate::recipe::image_yaml::refs(config, catalog, image, &path, &text)?;
        let parents = refs
            .farm_parent
            .into_iter()
            .map(|(image, reference)| Parent { image, reference, platform: platform.clone() })
            .collect();
        let bases = refs.bases.into_iter().map(|reference| Base { reference, platform: platform.clone() }).collect();
        return Ok(ParsedRecipe {
            kind: JobKind::Assemble,
            file: recipe.to_string(),
            text,
            parents,
            bases,
            ..Default::default()
        });
    }
    let settings = config.image_settings(&image.name);
    let mut args = settings.build_args.clone();
    args.extend(crate::image::platform::platform_args(platform, &config.build_platform));
    let at = |line: usize| format!("{}:{line}", path.display());
    let analysis = dockerfile::analyze(&text, &args)
        .map_err(|e| e.context(format!("image {} ({})", image.name, path.display())))?;
    let stage_platform = |p: &str, line: usize| {
        config.arches.parse_platform(p).map_err(|e| {
            Error::usage(format!("{}: image {} for {platform}: FROM --platform: {}", at(line), image.name, e.message()))
        })
    };
    // dockerd 20.10's classic builder refuses `COPY --from=<stage>` of a stage built for
    // another platform ("does not match the specified platform"): only BuildKit builds
    // a recipe whose stages run on another platform than the image.
    let mut other_platform = None;
    for (p, line) in &analysis.platforms {
        let p = stage_platform(p, *line)?;
        if &p != platform && other_platform.is_none() {
            other_platform = Some(format!("line {line}: a stage for {p} in an image for {platform}"));
        }
    }
    let mut parents = Vec::new();
    let mut bases = Vec::new();
    for r in analysis.refs {
        let stage_platform = match &r.platform {
            Some(p) => stage_platform(p, r.line)?,
            None => platform.clone(),
        };
        match dockerfile::farm_parent(&r.image, &config.local_prefix) {
            Some(name) if catalog.images.contains_key(name) => {
                parents.push(Parent { image: name.to_string(), reference: r.image.clone(), platform: stage_platform })
            }
            Some(name) => {
                return Err(Error::usage(format!(
                    "{}: FROM {} names farm image '{name}', which is not under {}; add the folder or fix the name",
                    at(r.line),
                    r.image,
                    config.images_dir.display()
                )))
            }
            None => bases.push(Base { reference: r.image.clone(), platform: stage_platform }),
        }
    }
    for s in &analysis.secrets {
        if !config.secrets.contains_key(&s.id) {
            return Err(Error::usage(format!(
                "{}: image {} mounts secret '{}', which {} does not declare; add `secrets: {{{}: {{env: VARIABLE}}}}` \
                 (or `{{file: PATH}}`)",
                at(s.line),
                image.name,
                s.id,
                config.source,
                s.id
            )));
        }
    }
    if let Some(target) = &settings.target {
        if !analysis.stages.iter().any(|s| s.eq_ignore_ascii_case(target)) {
            return Err(Error::usage(format!(
                "{}: field 'images.{}.target': {} has no stage '{target}' (its stages: {})",
                config.source,
                image.name,
                path.display(),
                if analysis.stages.is_empty() { "none named".to_string() } else { analysis.stages.join(", ") }
            )));
        }
    }
    let needs = Needs {
        buildkit_only: analysis.buildkit_only.or(other_platform),
        classic_only: settings.buildkit == Some(false),
        secrets: analysis.secrets.into_iter().map(|s| s.id).collect(),
        target: settings.target.clone(),
    };
    if let (true, Some(what)) = (needs.classic_only, &needs.buildkit_only) {
        return Err(Error::usage(format!(
            "{}: field 'images.{}.buildkit' is false, but {} needs BuildKit ({what}); remove the field or the construct",
            config.source,
            image.name,
            path.display()
        )));
    }
    let build_platform = analysis.reads_build_platform.then(|| config.build_platform.clone());
    Ok(ParsedRecipe { kind: JobKind::Engine, file: recipe.to_string(), text, parents, bases, build_platform, needs })
}

impl Draft {
    /// The external base images the keys depend on, with the platform each is needed for.
    pub fn external_bases(&self) -> BTreeSet<(String, Platform)> {
        self.jobs.iter().flat_map(|j| j.bases.iter().map(|b| (b.reference.clone(), b.platform.clone()))).collect()
    }

    /// Computes every key, parents first. `resolved` maps each external base (and
    /// platform) to the digest or image ID it stands for, or to why there is none. A job
    /// with an unresolved base, and every job built FROM it, is left out of the jobs and
    /// listed in [`Plan::unresolved`] (invalid when the base as written is bad input),
    /// after the jobs [`prepare`] found invalid; an image with any such platform has no
    /// [`ImagePlan`] (no canonical tag over part of it). The rest of the tree is planned.
    pub fn finish(self, resolved: &Resolutions) -> Result<Plan> {
        let mut keys: BTreeMap<(String, Platform), String> = BTreeMap::new();
        let mut failed: BTreeMap<(String, Platform), NoDigest> = BTreeMap::new();
        let mut jobs = Vec::with_capacity(self.jobs.len());
        let mut unresolved = self.invalid;
        for d in self.jobs {
            let parent_failure = d.parents.iter().find_map(|p| {
                failed.get(&(p.image.clone(), p.platform.clone())).map(|why| NoDigest {
                    reason: format!(
                        "its parent {} for {} is {}: {}",
                        p.image,
                        p.platform,
                        if why.invalid { "invalid" } else { "unresolved" },
                        why.reason
                    ),
                    invalid: why.invalid,
                })
            });
            let mut bases = BTreeMap::new();
            let mut pinned = BTreeMap::new();
            let mut base_failure = None;
            for b in &d.bases {
                match resolved.get(&(b.reference.clone(), b.platform.clone())) {
                    Some(Ok(r)) => {
                        bases.insert(b.key_name(&d.platform), r.digest.clone());
                        if let Some(p) = &r.pinned {
                            pinned.insert((b.reference.clone(), b.platform.clone()), p.clone());
                        }
                    }
                    Some(Err(why)) => base_failure = base_failure.or(Some(why.clone())),
                    None => {
                        base_failure = base_failure.or(Some(NoDigest::unresolved(format!(
                            "internal: base image {} was not resolved",
                            b.reference
                        ))))
                    }
                }
            }
            if let Some(why) = parent_failure.or(base_failure) {
                failed.insert((d.image.clone(), d.platform.clone()), why.clone());
                let NoDigest { reason, invalid } = why;
                unresolved.push(Unresolved { image: d.image, platform: d.platform, reason, invalid });
                continue;
            }
            let parents: BTreeMap<String, String> = d
                .parents
                .iter()
                .map(|p| {
                    let name = Base { reference: p.image.clone(), platform: p.platform.clone() }.key_name(&d.platform);
                    (name, keys[&(p.image.clone(), p.platform.clone())].clone())
                })
                .collect();
            let key = key::content_key(&KeyInput {
                platform: &d.platform,
                build_platform: d.build_platform.as_ref(),
                recipe: &d.recipe,
                entries: &d.context.entries,
                build_args: &d.build_args,
                parents: &parents,
                bases: &bases,
                stamp: &d.stamp,
            });
            keys.insert((d.image.clone(), d.platform.clone()), key.clone());
            jobs.push(Job {
                image: d.image,
                platform: d.platform,
                key,
                kind: d.kind,
                recipe: d.recipe,
                recipe_text: d.recipe_text,
                context: d.context,
                build_args: d.build_args,
                parents: d.parents,
                bases,
                pinned,
                build_platform: d.build_platform,
                needs: d.needs,
                stamp: d.stamp,
            });
        }
        let index_annotations = self.index_annotations;
        let images = self
            .order
            .iter()
            .filter(|name| !unresolved.iter().any(|u: &Unresolved| &&u.image == name))
            .filter_map(|name| {
                let platforms: Vec<(Platform, String)> =
                    jobs.iter().filter(|j| &j.image == name).map(|j| (j.platform.clone(), j.key.clone())).collect();
                let annotations = index_annotations.get(name).cloned().unwrap_or_default();
                (!platforms.is_empty()).then(|| ImagePlan {
                    name: name.clone(),
                    index_key: key::index_key(&platforms, &annotations),
                    platforms,
                    annotations,
                })
            })
            .collect();
        Ok(Plan { jobs, skipped: self.skipped, images, unresolved })
    }
}

/// What each external (base, platform) resolved to, or why it did not.
pub type Resolutions = BTreeMap<(String, Platform), std::result::Result<Resolved, NoDigest>>;

/// Why an external base has no digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoDigest {
    /// Names the base and every place asked, or what is wrong with it.
    pub reason: String,
    /// The base as written is bad input (an assembler base that names a package or
    /// image that does not exist): its images are invalid, not merely unresolved.
    pub invalid: bool,
}

impl NoDigest {
    /// No place asked knew the base.
    pub fn unresolved(reason: String) -> NoDigest {
        NoDigest { reason, invalid: false }
    }

    /// Resolving the base failed with `e`: bad input when it is a usage error.
    pub fn from_error(e: &Error) -> NoDigest {
        NoDigest { reason: e.message().to_string(), invalid: e.kind() == crate::support::error::Kind::Usage }
    }
}

/// A resolved external base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// What enters the key: the platform's manifest digest (a digest pinned in the recipe
    /// as written; a local engine's image ID when only the engine had it).
    pub digest: String,
    /// What the build names FROM instead of the reference as written, so it uses exactly
    /// that digest even if the tag moves (a registry-resolved tag, pinned); `None`: as written.
    pub pinned: Option<String>,
}

impl Resolved {
    /// Used as written (pinned in the recipe, an assembler base, or the engine's image).
    pub fn as_written(digest: String) -> Resolved {
        Resolved { digest, pinned: None }
    }
}

/// An (image, platform) whose key cannot be computed: a base of it, or of a farm parent,
/// could not be resolved, or its recipe (or a parent's) is invalid.
#[derive(Debug, Clone)]
pub struct Unresolved {
    pub image: String,
    pub platform: Platform,
    /// Names the base and every place asked, the bad recipe and what is wrong with it,
    /// or the parent it inherits that from.
    pub reason: String,
    /// Bad input (a recipe, its folder, a FROM cycle): a usage error where it is asked
    /// for (exit 2). `false`: a base that could not be resolved (exit 1).
    pub invalid: bool,
}

impl Unresolved {
    /// The planning error of one (image, platform): bad input when it is a usage error.
    fn from_error(image: &str, platform: &Platform, e: &Error) -> Unresolved {
        Unresolved {
            image: image.to_string(),
            platform: platform.clone(),
            reason: e.message().to_string(),
            invalid: e.kind() == crate::support::error::Kind::Usage,
        }
    }
}

/// Resolves an external base that is pinned by digest (`name@sha256:…`,
/// `name:tag@sha256:…`) without any engine or registry: the digest as written, when the
/// reference is valid.
pub fn pinned_digest(reference: &str) -> Option<String> {
    crate::image::reference::Reference::parse(reference).ok()?.digest
}

/// One recipe as read for one platform: its file, text, farm parents and external bases.
#[derive(Default)]
struct ParsedRecipe {
    kind: JobKind,
    file: String,
    text: String,
    parents: Vec<Parent>,
    bases: Vec<Base>,
    build_platform: Option<Platform>,
    needs: Needs,
}

type Recipes = BTreeMap<(String, Platform), ParsedRecipe>;

/// Every (image, platform) on a FROM cycle, with the cycle named for the platform it
/// runs on (each platform's graph is its own, so a cycle is reported for the platform
/// asked for, not the first one found).
fn cycles(recipes: &Recipes) -> BTreeMap<Node, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    fn visit(
        node: &Node,
        recipes: &Recipes,
        marks: &mut BTreeMap<Node, Mark>,
        stack: &mut Vec<Node>,
        found: &mut BTreeMap<Node, String>,
    ) {
        match marks.get(node) {
            Some(Mark::Done) => return,
            Some(Mark::Active) => {
                let start = stack.iter().position(|n| n == node).unwrap_or(0);
                let cycle = &stack[start..];
                let one_platform = cycle.iter().all(|n| n.1 == node.1);
                let name = |n: &Node| if one_platform { n.0.clone() } else { format!("{} ({})", n.0, n.1) };
                let path: Vec<String> = cycle.iter().chain([node]).map(name).collect();
                let what = if one_platform { format!("FROM cycle for {}", node.1) } else { "FROM cycle".into() };
                let reason = format!(
                    "{what}: {}; an image cannot be built FROM itself, directly or through others",
                    path.join(" -> ")
                );
                for n in cycle {
                    found.entry(n.clone()).or_insert_with(|| reason.clone());
                }
                return;
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Active);
        stack.push(node.clone());
        if let Some(recipe) = recipes.get(node) {
            for p in &recipe.parents {
                visit(&(p.image.clone(), p.platform.clone()), recipes, marks, stack, found);
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut found = BTreeMap::new();
    for node in recipes.keys() {
        visit(node, recipes, &mut marks, &mut Vec::new(), &mut found);
    }
    found
}

/// Images reachable from `roots` over farm parents (any platform), parents first,
/// ties broken by name so the order is stable.
fn topological(roots: &[String], recipes: &Recipes) -> Vec<String> {
    let mut parents_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for ((image, _), recipe) in recipes {
        parents_of.entry(image).or_default().extend(recipe.parents.iter().map(|p| p.image.as_str()));
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit<'a>(
        n: &'a str,
        parents_of: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        seen: &mut BTreeSet<&'a str>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(n) {
            return;
        }
        for p in parents_of.get(n).into_iter().flatten() {
            visit(p, parents_of, seen, order);
        }
        order.push(n.to_string());
    }
    let mut sorted_roots: Vec<&String> = roots.iter().collect();
    sorted_roots.sort();
    for r in sorted_roots {
        visit(r, &parents_of, &mut seen, &mut order);
    }
    order
}

fn available_list(image: &Image, config: &Config) -> String {
    list(&image.available_platforms(&config.arches))
}

fn list(platforms: &[Platform]) -> String {
    let v: Vec<String> = platforms.iter().map(|p| p.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn unknown_image(catalog: &Catalog, name: &str) -> Error {
    Error::usage(format!(
        "unknown image '{name}': no folder with a recipe under the images folder; {}",
        suggestions(catalog, name)
    ))
}

/// "did you mean ...?" with up to five image names like `name`, else where to look.
fn suggestions(catalog: &Catalog, name: &str) -> String {
    let close: Vec<&str> = catalog
        .images
        .keys()
        .filter(|n| n.contains(name) || name.contains(n.as_str()) || n.replace('/', "_") == name)
        .map(String::as_str)
        .take(5)
        .collect();
    if close.is_empty() {
        "run `archfarm list` to see them".to_string()
    } else {
        format!("did you mean {}?", close.join(", "))
    }
}

/// Every image named under `images:` in the configuration exists in the catalog. A
/// setting for no image is refused (exit 2) rather than warned about: it is a typo or a
/// leftover, and either way the image it was meant for builds without it (the platforms
/// it should have narrowed, the build args it should have set) while a warning scrolls
/// by unread in CI; unknown fields of the file are refused for the same reason.
pub fn check_settings(config: &Config, catalog: &Catalog) -> Result<()> {
    match config.images.keys().find(|name| !catalog.images.contains_key(name.as_str())) {
        None => Ok(()),
        Some(name) => Err(Error::usage(format!(
            "{}: field 'images.{name}': there is no image '{name}' under {}; fix the name or remove the entry ({})",
            config.source,
            config.images_dir.display(),
            suggestions(catalog, name)
        ))),
    }
}

#[cfg(test)]
mod tests;
