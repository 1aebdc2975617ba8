//! Discovers a fixture that mirrors the paths of gVisor's images/ folder (placeholder
//! contents): nested groups, images inside images, per-arch variants, odd file names.

use std::path::Path;

use archfarm::image::platform::ArchTable;
use archfarm::recipe::catalog::{discover, Recipes};

#[test]
fn discovers_gvisor_images_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gvisor-images");
    let arches = ArchTable::builtin();
    let catalog = discover(&root, &arches).unwrap();
    assert_eq!(catalog.images.len(), 101, "{:#?}", catalog.images.keys().collect::<Vec<_>>());

    for name in
        ["default", "basic/busybox", "gpu/ollama", "gpu/ollama/bench", "gpu/ollama/client", "runtimes/go1.24-rc"]
    {
        assert!(catalog.get(name).is_some(), "{name} should be an image");
    }
    // Folders without a recipe are not images: a tar only, a client without a Dockerfile,
    // a Dockerfile.<model> that is not an architecture.
    for name in ["basic/symlink", "gpu/sglang/client", "gpu/triton/tensorrt", "gpu", "basic"] {
        assert!(catalog.get(name).is_none(), "{name} should not be an image");
    }

    let amd64 = arches.parse_platform("amd64").unwrap();
    let arm64 = arches.parse_platform("arm64").unwrap();

    // x86_64 only.
    let pytorch = catalog.get("gpu/pytorch").unwrap();
    assert_eq!(pytorch.available_platforms(&arches), std::slice::from_ref(&amd64));
    assert_eq!(pytorch.recipe_for(&amd64), Some("Dockerfile.x86_64"));
    assert_eq!(pytorch.recipe_for(&arm64), None);

    // Both variants, no generic recipe.
    let grpc = catalog.get("benchmarks/build-grpc").unwrap();
    assert_eq!(grpc.available_platforms(&arches), [amd64.clone(), arm64.clone()]);
    assert_eq!(grpc.recipe_for(&arm64), Some("Dockerfile.aarch64"));

    // Generic plus a variant; Dockerfile.bench is an ordinary file.
    let ollama = catalog.get("gpu/ollama").unwrap();
    assert_eq!(ollama.recipe_for(&amd64), Some("Dockerfile.x86_64"));
    assert_eq!(ollama.recipe_for(&arm64), Some("Dockerfile"));
    assert_eq!(ollama.recipe_files(), ["Dockerfile", "Dockerfile.x86_64"]);
    assert_eq!(ollama.available_platforms(&arches).len(), arches.all().count());
    assert!(matches!(&ollama.recipes, Recipes::Dockerfile { generic: Some(_), .. }));

    let amd64_only =
        catalog.images.values().filter(|i| i.available_platforms(&arches) == std::slice::from_ref(&amd64)).count();
    assert_eq!(amd64_only, 18);
}
