//! Which images a make-target command acts on (gVisor's images make targets, images.mk,
//! `archfarm makefile`). Make computes nothing: every target is one call of the binary,
//! which takes an image (`base/busybox` or make's `base_busybox`), a group (`basic`:
//! every image under images/basic/), `--all-images` or `--all-test-images`, and one
//! platform (`--platform`, else `ARCH`, else the host).

use clap::Args;

use crate::cli::planning::resolve_name;
use crate::recipe::catalog::Catalog;
use crate::recipe::config::Config;
use crate::support::error::{Error, Result};

/// Which images a make-target command acts on.
#[derive(Debug, Clone, Args)]
pub struct Selection {
    /// Images: `base/busybox`, make's `base_busybox`, or a group (`basic`: every image
    /// under images/basic/).
    #[arg(value_name = "IMAGE", required_unless_present_any = ["all_images", "all_test_images"])]
    pub names: Vec<String>,
    /// Every image (make's `<verb>-all-images`).
    #[arg(long, conflicts_with_all = ["names", "all_test_images"])]
    pub all_images: bool,
    /// Every image but those listed in `non_test_images` (make's `<verb>-all-test-images`).
    #[arg(long, conflicts_with = "names")]
    pub all_test_images: bool,
    /// The platform (default: ARCH, else the host); any alias: x86_64, aarch64, arm64...
    #[arg(long)]
    pub platform: Option<String>,
}

/// The images a selection names, in the order given, without duplicates. A name that is
/// not an image but a folder holding images is a group. Unknown names are passed on, so
/// the planner reports them with suggestions.
pub fn select(config: &Config, catalog: &Catalog, sel: &Selection) -> Result<Vec<String>> {
    if sel.all_images {
        return Ok(catalog.images.keys().cloned().collect());
    }
    if sel.all_test_images {
        return test_images(config, catalog);
    }
    let mut out: Vec<String> = Vec::new();
    for name in &sel.names {
        for n in expand(catalog, name)? {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// One name: an image, else a group (images under that folder), else itself.
fn expand(catalog: &Catalog, name: &str) -> Result<Vec<String>> {
    let resolved = resolve_name(catalog, name)?;
    if catalog.images.contains_key(&resolved) {
        return Ok(vec![resolved]);
    }
    for prefix in [resolved.clone(), resolved.replace('_', "/")] {
        let members: Vec<String> =
            catalog.images.keys().filter(|k| k.starts_with(&format!("{prefix}/"))).cloned().collect();
        if !members.is_empty() {
            return Ok(members);
        }
    }
    Ok(vec![resolved])
}

/// Every image but the configured `non_test_images` (each an image or a group).
pub fn test_images(config: &Config, catalog: &Catalog) -> Result<Vec<String>> {
    let mut excluded = Vec::new();
    for n in &config.non_test_images {
        let names = expand(catalog, n)?;
        if names.iter().any(|x| !catalog.images.contains_key(x)) {
            return Err(Error::usage(format!(
                "{}: field 'non_test_images': '{n}' is neither an image nor a folder of images under {}; fix or remove it",
                config.source,
                config.images_dir.display()
            )));
        }
        excluded.extend(names);
    }
    Ok(catalog.images.keys().filter(|k| !excluded.contains(k)).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::platform::ArchTable;

    fn fixture() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        for d in ["basic/alpha", "basic/beta", "gpu/ollama/bench", "solo", "under_score"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("Dockerfile"), "FROM scratch\n").unwrap();
        }
        std::fs::write(dir.path().join("gpu/ollama/Dockerfile"), "FROM scratch\n").unwrap();
        let catalog = crate::recipe::catalog::discover(dir.path(), &ArchTable::builtin()).unwrap();
        (dir, catalog)
    }

    fn sel(names: &[&str]) -> Selection {
        Selection {
            names: names.iter().map(|s| s.to_string()).collect(),
            all_images: false,
            all_test_images: false,
            platform: None,
        }
    }

    fn config(non_test: &[&str]) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::load(dir.path(), &Default::default()).unwrap();
        c.non_test_images = non_test.iter().map(|s| s.to_string()).collect();
        c
    }

    #[test]
    fn names_make_names_and_groups() {
        let (_d, cat) = fixture();
        let c = config(&[]);
        assert_eq!(select(&c, &cat, &sel(&["basic_alpha"])).unwrap(), ["basic/alpha"]);
        assert_eq!(select(&c, &cat, &sel(&["basic"])).unwrap(), ["basic/alpha", "basic/beta"]);
        // gpu/ollama is an image itself: the name means the image, not the folder.
        assert_eq!(select(&c, &cat, &sel(&["gpu_ollama"])).unwrap(), ["gpu/ollama"]);
        assert_eq!(select(&c, &cat, &sel(&["gpu"])).unwrap(), ["gpu/ollama", "gpu/ollama/bench"]);
        assert_eq!(select(&c, &cat, &sel(&["under_score", "solo", "solo"])).unwrap(), ["under_score", "solo"]);
        assert_eq!(select(&c, &cat, &sel(&["nope"])).unwrap(), ["nope"], "unknown names reach the planner");
    }

    #[test]
    fn test_images_leave_out_non_test_images_and_groups() {
        let (_d, cat) = fixture();
        let all = select(&config(&[]), &cat, &Selection { all_images: true, ..sel(&[]) }).unwrap();
        assert_eq!(all.len(), 6);
        let t = test_images(&config(&["gpu/ollama/bench", "basic"]), &cat).unwrap();
        assert_eq!(t, ["gpu/ollama", "solo", "under_score"]);
        let e = test_images(&config(&["gpu/nothing"]), &cat).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message().contains("non_test_images") && e.message().contains("gpu/nothing"), "{}", e.message());
    }
}
