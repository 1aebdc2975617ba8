//! The planner: from the catalog and configuration to a list of jobs, one per
//! (image, platform), each with its content key, in an order where parents come first.
//!
//! Planning is two-phase so it needs no engine unless it must: [`prepare`] reads recipes,
//! scans folders and checks the FROM graph; the caller resolves the external bases it
//! names (pinned digests need nothing; unpinned ones go to [`crate::bases`]), and
//! [`Draft::finish`] computes the keys.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::{self, Catalog, Image};
use crate::config::Config;
use crate::context::Context;
use crate::dockerfile;
use crate::error::{Error, Result};
use crate::key::{self, KeyInput};
use crate::platform::Platform;
use crate::scan::{self, Links, StatCache};

/// One (image, platform) to build or find.
#[derive(Debug, Clone)]
pub struct Job {
    pub image: String,
    pub platform: Platform,
    pub key: String,
    /// The recipe file used for this platform (`Dockerfile.aarch64` beats `Dockerfile`).
    pub recipe: String,
    pub recipe_text: String,
    /// Exactly the files hashed into the key; also the engine's build context.
    pub context: Context,
    pub build_args: BTreeMap<String, String>,
    /// Farm images this one builds FROM (same platform), with the reference used.
    pub parents: Vec<Parent>,
    /// External bases and the digests they were resolved to (exactly what the key covers).
    pub bases: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Parent {
    pub image: String,
    /// The reference as written in the recipe (after ARG substitution).
    pub reference: String,
}

/// An (image, platform) left out, and why.
#[derive(Debug, Clone)]
pub struct Skip {
    pub image: String,
    pub platform: Platform,
    pub reason: String,
}

/// One image's planned platforms and the index key over their keys.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    pub name: String,
    pub platforms: Vec<(Platform, String)>,
    pub index_key: String,
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// Topological order: every job comes after the jobs of its parents.
    pub jobs: Vec<Job>,
    pub skipped: Vec<Skip>,
    /// Images whose every planned platform has a key.
    pub images: Vec<ImagePlan>,
    /// Jobs left out because a base (theirs or a parent's) is unresolved.
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
    recipe: String,
    recipe_text: String,
    context: Context,
    build_args: BTreeMap<String, String>,
    parents: Vec<Parent>,
    /// External base references (not farm images, not scratch).
    bases: Vec<String>,
}

/// A plan whose keys are not yet computed.
pub struct Draft {
    jobs: Vec<DraftJob>,
    skipped: Vec<Skip>,
    order: Vec<String>,
}

/// Reads recipes and folders of `selection` (all images when empty) and their farm
/// parents, checks the FROM graph, and decides each image's platforms.
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

    // Parse every recipe of every image once.
    let mut recipes = Recipes::new();
    for image in catalog.images.values() {
        let settings = config.image_settings(&image.name);
        for platform in image.available_platforms(&config.arches) {
            let Some(recipe) = image.recipe_for(&platform) else { continue };
            let path = image.dir.join(recipe);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::usage(format!("image {}: cannot read {}: {e}", image.name, path.display())))?;
            if recipe == crate::catalog::ASSEMBLED_RECIPE {
                let (parents, bases) = crate::assemble::refs(config, catalog, image, &path, &text)?;
                let parsed = ParsedRecipe { file: recipe.to_string(), text, parents, bases };
                recipes.insert((image.name.clone(), platform), parsed);
                continue;
            }
            let refs = dockerfile::from_refs(&text, &settings.build_args)
                .map_err(|e| e.context(format!("image {} ({})", image.name, path.display())))?;
            let mut parents = Vec::new();
            let mut bases = Vec::new();
            for r in refs {
                match dockerfile::farm_parent(&r.image, &config.local_prefix) {
                    Some(name) if catalog.images.contains_key(name) => {
                        parents.push(Parent { image: name.to_string(), reference: r.image.clone() })
                    }
                    Some(name) => {
                        return Err(Error::usage(format!(
                            "{}:{}: FROM {} names farm image '{name}', which is not under {}; add the folder or fix the name",
                            path.display(),
                            r.line,
                            r.image,
                            config.images_dir.display()
                        )))
                    }
                    None => bases.push(r.image.clone()),
                }
            }
            recipes.insert(
                (image.name.clone(), platform),
                ParsedRecipe { file: recipe.to_string(), text, parents, bases },
            );
        }
    }

    check_cycles(&recipes)?;

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

    let mut jobs: Vec<DraftJob> = Vec::new();
    let mut skipped = Vec::new();
    let mut planned: BTreeSet<(String, Platform)> = BTreeSet::new();
    for name in &order {
        let image = &catalog.images[name];
        let settings = config.image_settings(name);
        for platform in wanted_platforms(name) {
            let skip = |reason: String| Skip { image: name.clone(), platform: platform.clone(), reason };
            let Some(ParsedRecipe { file: recipe, text, parents, bases }) =
                recipes.get(&(name.clone(), platform.clone()))
            else {
                skipped.push(skip(format!("no recipe for {platform} (it has {})", available_list(image, config))));
                continue;
            };
            if let (PlatformChoice::Requested(_), Some(narrow)) = (choice, &settings.platforms) {
                if !narrow.contains(&platform) {
                    skipped.push(skip(format!("{} limits it to {}", config.source, list(narrow))));
                    continue;
                }
            }
            if let Some(p) = parents.iter().find(|p| !planned.contains(&(p.image.clone(), platform.clone()))) {
                skipped.push(skip(format!("it builds FROM {}, which is not available for {platform}", p.image)));
                continue;
            }
            let ctx = scan_image(image)?.for_recipe(recipe, &image.recipe_files());
            planned.insert((name.clone(), platform.clone()));
            jobs.push(DraftJob {
                image: name.clone(),
                platform: platform.clone(),
                recipe: recipe.clone(),
                recipe_text: text.clone(),
                context: ctx,
                build_args: settings.build_args.clone(),
                parents: parents.clone(),
                bases: bases.clone(),
            });
        }
    }
    Ok(Draft { jobs, skipped, order })
}

impl Draft {
    /// The external base images the keys depend on, with the platform each is needed for.
    pub fn external_bases(&self) -> BTreeSet<(String, Platform)> {
        self.jobs.iter().flat_map(|j| j.bases.iter().map(|b| (b.clone(), j.platform.clone()))).collect()
    }

    /// Computes every key, parents first. `resolved` maps each external base (and
    /// platform) to the digest or image ID it stands for, or to why there is none. A job
    /// with an unresolved base, and every job built FROM it, is left out of the jobs and
    /// listed in [`Plan::unresolved`]; an image with any unresolved platform has no
    /// [`ImagePlan`] (no canonical tag over part of it). The rest of the tree is planned.
    pub fn finish(self, resolved: &Resolutions) -> Result<Plan> {
        let mut keys: BTreeMap<(String, Platform), String> = BTreeMap::new();
        let mut failed: BTreeMap<(String, Platform), String> = BTreeMap::new();
        let mut jobs = Vec::with_capacity(self.jobs.len());
        let mut unresolved = Vec::new();
        for d in self.jobs {
            let parent_failure = d.parents.iter().find_map(|p| {
                failed
                    .get(&(p.image.clone(), d.platform.clone()))
                    .map(|why| format!("its parent {} for {} is unresolved: {why}", p.image, d.platform))
            });
            let mut bases = BTreeMap::new();
            let mut base_failure = None;
            for b in &d.bases {
                match resolved.get(&(b.clone(), d.platform.clone())) {
                    Some(Ok(digest)) => {
                        bases.insert(b.clone(), digest.clone());
                    }
                    Some(Err(why)) => base_failure = base_failure.or(Some(why.clone())),
                    None => base_failure = base_failure.or(Some(format!("internal: base image {b} was not resolved"))),
                }
            }
            if let Some(reason) = parent_failure.or(base_failure) {
                failed.insert((d.image.clone(), d.platform.clone()), reason.clone());
                unresolved.push(Unresolved { image: d.image, platform: d.platform, reason });
                continue;
            }
            let parents: BTreeMap<String, String> = d
                .parents
                .iter()
                .map(|p| (p.image.clone(), keys[&(p.image.clone(), d.platform.clone())].clone()))
                .collect();
            let key = key::content_key(&KeyInput {
                platform: &d.platform,
                recipe: &d.recipe,
                entries: &d.context.entries,
                build_args: &d.build_args,
                parents: &parents,
                bases: &bases,
            });
            keys.insert((d.image.clone(), d.platform.clone()), key.clone());
            jobs.push(Job {
                image: d.image,
                platform: d.platform,
                key,
                recipe: d.recipe,
                recipe_text: d.recipe_text,
                context: d.context,
                build_args: d.build_args,
                parents: d.parents,
                bases,
            });
        }
        let images = self
            .order
            .iter()
            .filter(|name| !unresolved.iter().any(|u: &Unresolved| &&u.image == name))
            .filter_map(|name| {
                let platforms: Vec<(Platform, String)> =
                    jobs.iter().filter(|j| &j.image == name).map(|j| (j.platform.clone(), j.key.clone())).collect();
                (!platforms.is_empty()).then(|| ImagePlan {
                    name: name.clone(),
                    index_key: key::index_key(&platforms),
                    platforms,
                })
            })
            .collect();
        Ok(Plan { jobs, skipped: self.skipped, images, unresolved })
    }
}

/// What each external (base, platform) resolved to: a digest (or local image ID), or why not.
pub type Resolutions = BTreeMap<(String, Platform), std::result::Result<String, String>>;

/// An (image, platform) whose key cannot be computed: a base of it, or of a farm parent,
/// could not be resolved.
#[derive(Debug, Clone)]
pub struct Unresolved {
    pub image: String,
    pub platform: Platform,
    /// Names the base and every place asked, or the unresolved parent.
    pub reason: String,
}

/// Resolves an external base that is pinned by digest (`name@sha256:…`,
/// `name:tag@sha256:…`) without any engine or registry: the digest as written, when the
/// reference is valid.
pub fn pinned_digest(reference: &str) -> Option<String> {
    crate::reference::Reference::parse(reference).ok()?.digest
}

/// One recipe as read for one platform: its file, text, farm parents and external bases.
struct ParsedRecipe {
    file: String,
    text: String,
    parents: Vec<Parent>,
    bases: Vec<String>,
}

type Recipes = BTreeMap<(String, Platform), ParsedRecipe>;

/// A FROM cycle on any platform is an error naming the whole cycle.
fn check_cycles(recipes: &Recipes) -> Result<()> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    fn visit(
        node: &(String, Platform),
        recipes: &Recipes,
        marks: &mut BTreeMap<(String, Platform), Mark>,
        stack: &mut Vec<String>,
    ) -> Result<()> {
        match marks.get(node) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Active) => {
                let start = stack.iter().position(|n| n == &node.0).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(node.0.clone());
                return Err(Error::usage(format!(
                    "FROM cycle for {}: {}; an image cannot be built FROM itself, directly or through others",
                    node.1,
                    cycle.join(" -> ")
                )));
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Active);
        stack.push(node.0.clone());
        if let Some(recipe) = recipes.get(node) {
            for p in &recipe.parents {
                visit(&(p.image.clone(), node.1.clone()), recipes, marks, stack)?;
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        Ok(())
    }
    let mut marks = BTreeMap::new();
    for node in recipes.keys() {
        visit(node, recipes, &mut marks, &mut Vec::new())?;
    }
    Ok(())
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
    let close: Vec<&str> = catalog
        .images
        .keys()
        .filter(|n| n.contains(name) || name.contains(n.as_str()) || n.replace('/', "_") == name)
        .map(String::as_str)
        .take(5)
        .collect();
    let hint = if close.is_empty() {
        "run `archfarm list` to see them".to_string()
    } else {
        format!("did you mean {}?", close.join(", "))
    };
    Error::usage(format!("unknown image '{name}': no folder with a recipe under the images folder; {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let overrides = crate::config::Overrides { store: Some(dir.path().join("store")), ..Default::default() };
        let config = Config::load(dir.path(), &overrides).unwrap();
        let catalog = catalog::discover(&config.images_dir, &config.arches).unwrap();
        let draft = prepare(&config, &catalog, &[], &PlatformChoice::Defaults).unwrap();
        let mut resolved = Resolutions::new();
        for (base, platform) in draft.external_bases() {
            let r = if base == "nosuch:1" { Err(format!("{base} is nowhere")) } else { Ok("sha256:d".to_string()) };
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
}
