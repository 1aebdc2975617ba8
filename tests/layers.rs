//! The shape of `src/`, checked in the manner of go-containerregistry's depcheck: the
//! layers are the folders `lib.rs` lists, bottom first, and a module may use its own
//! layer and the layers below it only. Within a layer, the modules (the folder's files
//! and subfolders, and the folder's own `mod.rs`) import each other without a cycle.
//! A failure names the file, the line and the import, so the fix is to move the item
//! down to where both sides can see it, not to allow the import.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layers, bottom first: the `pub mod` lines of lib.rs, in order.
fn layers() -> Vec<String> {
    let lib = fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs");
    lib.lines().filter_map(|l| l.trim().strip_prefix("pub mod ")?.strip_suffix(';').map(str::to_string)).collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module of layer `layer` a file belongs to: `layer` for the folder's own
/// mod.rs, else `layer::<first path component>`.
fn unit_of(layer: &str, file: &Path) -> String {
    let rel = file.strip_prefix(src().join(layer)).expect("file under its layer");
    let first = rel.components().next().expect("non-empty").as_os_str().to_string_lossy();
    match first.strip_suffix(".rs") {
        Some("mod") => layer.to_string(),
        Some(name) => format!("{layer}::{name}"),
        None => format!("{layer}::{first}"),
    }
}

/// The module of layer `layer` that the path segment after it names: one of the
/// layer's own modules, or the layer's mod.rs for an item defined there.
fn target_unit(layer: &str, segment: Option<&str>) -> String {
    let dir = src().join(layer);
    match segment {
        Some(s) if dir.join(format!("{s}.rs")).is_file() || dir.join(s).join("mod.rs").is_file() => {
            format!("{layer}::{s}")
        }
        _ => layer.to_string(),
    }
}

struct Import {
    from: String,
    to: String,
    at: String,
    path: String,
}

/// Every path starting with `prefix` (`crate::`, `self::`, `super::`) in the code of
/// `text` (comment lines skipped), with its line, without the prefix.
fn paths(text: &str, prefix: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let boundary = rest[..i].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
            let after = &rest[i + prefix.len()..];
            let end =
                after.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '{')).unwrap_or(after.len());
            if boundary {
                out.push((n + 1, after[..end].to_string()));
            }
            rest = &after[end..];
        }
    }
    out
}

/// The paths of a file as `crate::` paths: `self::` in a layer's mod.rs and `super::`
/// in a module directly below it name the layer's modules too.
fn crate_paths(layer: &str, file: &Path, text: &str) -> Vec<(usize, String)> {
    let rel = file.strip_prefix(src().join(layer)).expect("file under its layer");
    let depth = rel.components().count() - usize::from(rel.ends_with("mod.rs"));
    let mut out = paths(text, "crate::");
    let relative = match depth {
        0 => Some("self::"),
        1 => Some("super::"),
        _ => None,
    };
    if let Some(prefix) = relative {
        // Only the file's own (unindented) `use` lines: in an inline module (tests),
        // `super::` is the file itself.
        let own: String = text
            .lines()
            .map(|l| if l.starts_with(&format!("use {prefix}")) { l } else { "" })
            .collect::<Vec<_>>()
            .join("\n");
        out.extend(paths(&own, prefix).into_iter().map(|(n, p)| (n, format!("{layer}::{p}"))));
    }
    out
}

fn imports() -> (Vec<String>, Vec<Import>) {
    let layers = layers();
    let mut imports = Vec::new();
    for layer in &layers {
        let mut files = Vec::new();
        rust_files(&src().join(layer), &mut files);
        for file in files {
            let text = fs::read_to_string(&file).expect("source file");
            let from = unit_of(layer, &file);
            for (line, path) in crate_paths(layer, &file, &text) {
                let at = format!("{}:{line}", file.strip_prefix(src().parent().unwrap()).unwrap().display());
                assert!(
                    !path.starts_with('{'),
                    "{at}: write `use crate::<layer>::...` per layer, not `crate::{{...}}`"
                );
                let mut segments = path.split("::").filter(|s| !s.is_empty());
                let Some(to_layer) = segments.next() else { continue };
                if !layers.iter().any(|l| l == to_layer) {
                    // crate::Error and crate::Result, re-exported by lib.rs from support.
                    assert!(
                        ["Error", "Result"].contains(&to_layer),
                        "{at}: crate::{path} names no layer of src/lib.rs ({})",
                        layers.join(", ")
                    );
                    continue;
                }
                let segment = segments.next().map(|s| s.trim_start_matches('{'));
                imports.push(Import { from: from.clone(), to: target_unit(to_layer, segment), at, path: path.clone() });
            }
        }
    }
    (layers, imports)
}

fn layer_of(unit: &str) -> &str {
    unit.split("::").next().unwrap()
}

#[test]
fn src_holds_only_lib_main_and_layer_folders() {
    let layers = layers();
    assert!(layers.len() >= 5, "src/lib.rs lists the layers as `pub mod` lines: {layers:?}");
    for entry in fs::read_dir(src()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            assert!(layers.contains(&name), "src/{name}/ is not a layer listed in src/lib.rs");
        } else if name.ends_with(".rs") {
            assert!(["lib.rs", "main.rs"].contains(&name.as_str()), "src/{name}: modules live in a layer's folder");
        }
    }
}

#[test]
fn every_import_points_down_or_within_its_layer() {
    let (layers, imports) = imports();
    let rank = |unit: &str| layers.iter().position(|l| l == layer_of(unit)).unwrap();
    let upward: Vec<String> = imports
        .iter()
        .filter(|i| rank(&i.to) > rank(&i.from))
        .map(|i| format!("{}: {} (layer {}) uses crate::{}, a higher layer", i.at, i.from, layer_of(&i.from), i.path))
        .collect();
    assert!(imports.len() > 100, "found only {} crate:: imports: is the parser broken?", imports.len());
    assert!(
        upward.is_empty(),
        "imports against the layering (src/lib.rs lists the layers bottom first):\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_import_cycle_within_a_layer() {
    let (_, imports) = imports();
    let mut edges: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for i in imports.iter().filter(|i| i.from != i.to && layer_of(&i.from) == layer_of(&i.to)) {
        edges.entry(&i.from).or_default().entry(&i.to).or_insert(&i.at);
    }
    // Depth-first search; a back edge closes a cycle, reported with one import per step.
    fn visit<'a>(
        unit: &'a str,
        edges: &BTreeMap<&'a str, BTreeMap<&'a str, &'a str>>,
        done: &mut BTreeSet<&'a str>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(start) = stack.iter().position(|u| *u == unit) {
            let mut cycle = stack[start..].to_vec();
            cycle.push(unit);
            return Some(cycle);
        }
        if !done.insert(unit) {
            return None;
        }
        stack.push(unit);
        for next in edges.get(unit).into_iter().flat_map(|m| m.keys()) {
            if let Some(c) = visit(next, edges, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for unit in edges.keys() {
        if let Some(cycle) = visit(unit, &edges, &mut done, &mut Vec::new()) {
            let steps: Vec<String> =
                cycle.windows(2).map(|w| format!("  {} -> {} ({})", w[0], w[1], edges[w[0]][w[1]])).collect();
            panic!("an import cycle within a layer:\n{}", steps.join("\n"));
        }
    }
}
