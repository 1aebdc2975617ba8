//! Discovering the images of an `images/` folder.
//!
//! A folder is an image if it holds a recipe: `Dockerfile`, `Dockerfile.<arch>` (any
//! canonical name or alias of the architecture table: `Dockerfile.x86_64`,
//! `Dockerfile.aarch64`, `Dockerfile.arm-v7`...) or `image.yaml` (the daemonless
//! assembler). Other `Dockerfile.*` files (`Dockerfile.template`, `Dockerfile.bench`) are
//! ordinary files. The image's name is its '/'-joined path under `images/`; an image
//! folder may itself contain further image folders (gVisor's `gpu/ollama` and
//! `gpu/ollama/bench`), and both are images. Hidden folders and symlinked folders are not
//! entered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::image::platform::{ArchTable, Platform};
use crate::image::reference::valid_path_component;
use crate::support::error::{Error, Result};

/// The recipe file of the daemonless assembler.
pub const ASSEMBLED_RECIPE: &str = "image.yaml";

/// Every image of an `images/` folder, by name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub images: BTreeMap<String, Image>,
}

/// One image folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `/`-joined path under the images folder: `basic/busybox`.
    pub name: String,
    pub dir: PathBuf,
    pub recipes: Recipes,
}

/// How an image is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipes {
    /// Built from Dockerfiles: a generic one and/or per-architecture variants (file names).
    Dockerfile { generic: Option<String>, per_arch: BTreeMap<Platform, String> },
    /// Built by the daemonless assembler from `file` (a later feature).
    Assembled { file: String },
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&Image> {
        self.images.get(name)
    }

    /// Like [`get`](Self::get), but an unknown name is a usage error.
    pub fn resolve(&self, name: &str) -> Result<&Image> {
        self.images.get(name).ok_or_else(|| {
            Error::usage(format!(
                "unknown image '{name}'; the catalog has {} images (try `archfarm list`)",
                self.images.len()
            ))
        })
    }
}

impl Image {
    /// The recipe file used for `p`: `Dockerfile.<arch>` beats `Dockerfile`. An assembled
    /// image uses its `image.yaml` for every platform.
    pub fn recipe_for(&self, p: &Platform) -> Option<&str> {
        match &self.recipes {
            Recipes::Dockerfile { generic, per_arch } => per_arch.get(p).or(generic.as_ref()).map(String::as_str),
            Recipes::Assembled { file } => Some(file),
        }
    }

    /// The platforms the recipes allow: every platform of the table with a generic
    /// Dockerfile (or an `image.yaml`), else those with a `Dockerfile.<arch>`.
    pub fn available_platforms(&self, arches: &ArchTable) -> Vec<Platform> {
        match &self.recipes {
            Recipes::Dockerfile { generic: None, per_arch } => per_arch.keys().cloned().collect(),
            _ => {
                let mut all: Vec<Platform> = arches.all().map(|a| a.oci.clone()).collect();
                all.sort();
                all
            }
        }
    }

    /// Every recipe file of the image (a platform's context leaves out the others').
    pub fn recipe_files(&self) -> Vec<String> {
        match &self.recipes {
            Recipes::Dockerfile { generic, per_arch } => {
                let mut files: Vec<String> = generic.iter().chain(per_arch.values()).cloned().collect();
                files.sort();
                files
            }
            Recipes::Assembled { file } => vec![file.clone()],
        }
    }
}

/// Finds every image under `images_dir`.
pub fn discover(images_dir: &Path, arches: &ArchTable) -> Result<Catalog> {
    let meta = std::fs::metadata(images_dir).map_err(|e| {
        Error::usage(format!("images folder {}: {e}; create it or pass the right path", images_dir.display()))
    })?;
    if !meta.is_dir() {
        return Err(Error::usage(format!("images folder {} is not a folder", images_dir.display())));
    }
    let mut catalog = Catalog::default();
    walk(images_dir, images_dir, arches, &mut catalog)?;
    Ok(catalog)
}

fn walk(root: &Path, dir: &Path, arches: &ArchTable, catalog: &mut Catalog) -> Result<()> {
    let read =
        std::fs::read_dir(dir).map_err(|e| Error::usage(format!("reading images folder {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| Error::usage(format!("reading images folder {}: {e}", dir.display())))?;
        let ft = entry.file_type().map_err(|e| Error::usage(format!("{}: {e}", entry.path().display())))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            if ft.is_dir() {
                return Err(Error::usage(format!(
                    "folder {} has a name that is not UTF-8; rename it (lowercase letters, digits, . _ -)",
                    entry.path().display()
                )));
            }
            continue;
        };
        if ft.is_dir() {
            if !name.starts_with('.') {
                subdirs.push(name);
            }
        } else if ft.is_file() || ft.is_symlink() {
            files.push(name);
        }
    }
    files.sort();
    subdirs.sort();
    if let Some(recipes) = recipes_of(dir, &files, arches)? {
        let rel = dir.strip_prefix(root).expect("walk stays under the root");
        let name = image_name(rel, dir)?;
        catalog.images.insert(name.clone(), Image { name, dir: dir.to_path_buf(), recipes });
    }
    for sub in subdirs {
        walk(root, &dir.join(sub), arches, catalog)?;
    }
    Ok(())
}

fn recipes_of(dir: &Path, files: &[String], arches: &ArchTable) -> Result<Option<Recipes>> {
    let mut generic = None;
    let mut per_arch: BTreeMap<Platform, String> = BTreeMap::new();
    for f in files {
        if f == "Dockerfile" {
            generic = Some(f.clone());
        } else if let Some(arch) = f.strip_prefix("Dockerfile.").and_then(|s| arches.find(s)) {
            if let Some(other) = per_arch.insert(arch.oci.clone(), f.clone()) {
                return Err(Error::usage(format!(
                    "{}: both {other} and {f} are recipes for {}; keep one of them",
                    dir.display(),
                    arch.oci
                )));
            }
        }
    }
    let assembled = files.iter().any(|f| f == ASSEMBLED_RECIPE);
    match (generic.is_some() || !per_arch.is_empty(), assembled) {
        (true, true) => Err(Error::usage(format!(
            "{}: holds both Dockerfile recipes and {ASSEMBLED_RECIPE}; an image has one kind of recipe, remove one",
            dir.display()
        ))),
        (true, false) => Ok(Some(Recipes::Dockerfile { generic, per_arch })),
        (false, true) => Ok(Some(Recipes::Assembled { file: ASSEMBLED_RECIPE.to_string() })),
        (false, false) => Ok(None),
    }
}

fn image_name(rel: &Path, dir: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for c in rel.components() {
        let c = c.as_os_str().to_str().ok_or_else(|| {
            Error::usage(format!("image folder {} has a name that is not UTF-8; rename it", dir.display()))
        })?;
        if !valid_path_component(c) {
            let suggestion: String = c
                .to_ascii_lowercase()
                .chars()
                .map(|ch| if ch.is_ascii_alphanumeric() || "._-".contains(ch) { ch } else { '-' })
                .collect();
            let suggestion = suggestion.trim_matches(|ch: char| !ch.is_ascii_alphanumeric());
            return Err(Error::usage(format!(
                "image folder {}: '{c}' is not a valid image name component (lowercase letters, digits and . _ -, \
                 starting and ending with a letter or digit); rename the folder, e.g. to '{}'",
                dir.display(),
                if suggestion.is_empty() { "image" } else { suggestion }
            )));
        }
        parts.push(c);
    }
    if parts.is_empty() {
        return Err(Error::usage(format!(
            "{} holds a recipe itself; put each image in its own folder under it",
            dir.display()
        )));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "FROM scratch\n").unwrap();
    }

    fn platform(s: &str) -> Platform {
        ArchTable::builtin().parse_platform(s).unwrap()
    }

    #[test]
    fn nested_images_and_variants() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in [
            "basic/busybox/Dockerfile",
            "gpu/ollama/Dockerfile",
            "gpu/ollama/Dockerfile.x86_64",
            "gpu/ollama/Dockerfile.bench",
            "gpu/ollama/bench/Dockerfile.amd64",
            "gpu/triton/tensorrt/Dockerfile.llama-2",
            "multi/Dockerfile.aarch64",
            "multi/Dockerfile.arm-v7",
            "asm/image.yaml",
            ".git/Dockerfile",
            "notes/README.md",
        ] {
            touch(r, f);
        }
        let t = ArchTable::builtin();
        let c = discover(r, &t).unwrap();
        assert_eq!(
            c.images.keys().map(String::as_str).collect::<Vec<_>>(),
            ["asm", "basic/busybox", "gpu/ollama", "gpu/ollama/bench", "multi"]
        );
        let ollama = c.get("gpu/ollama").unwrap();
        assert_eq!(ollama.recipe_for(&platform("amd64")), Some("Dockerfile.x86_64"));
        assert_eq!(ollama.recipe_for(&platform("arm64")), Some("Dockerfile"));
        assert_eq!(ollama.available_platforms(&t).len(), t.all().count());
        assert_eq!(ollama.recipe_files(), ["Dockerfile", "Dockerfile.x86_64"]);
        let bench = c.get("gpu/ollama/bench").unwrap();
        assert_eq!(bench.available_platforms(&t), [platform("amd64")]);
        assert_eq!(bench.recipe_for(&platform("arm64")), None);
        let multi = c.get("multi").unwrap();
        assert_eq!(multi.available_platforms(&t), [platform("arm/v7"), platform("arm64")]);
        assert_eq!(c.get("asm").unwrap().recipes, Recipes::Assembled { file: "image.yaml".into() });
    }

    #[test]
    fn two_variants_for_one_platform() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "x/Dockerfile.x86_64");
        touch(d.path(), "x/Dockerfile.amd64");
        let err = discover(d.path(), &ArchTable::builtin()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.message().contains("Dockerfile.amd64") && err.message().contains("Dockerfile.x86_64"));
    }

    #[test]
    fn invalid_names_and_missing_folder() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "Basic/My Image/Dockerfile");
        let err = discover(d.path(), &ArchTable::builtin()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.message().contains("'Basic'") && err.message().contains("rename"), "{}", err.message());
        let err = discover(&d.path().join("nope"), &ArchTable::builtin()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.message().contains("nope"));
    }
}
