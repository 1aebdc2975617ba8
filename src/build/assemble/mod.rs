//! The daemonless assembler: OCI images from `image.yaml` (docs/image-yaml.md) for any
//! platform, with no engine and no emulation, reproducible to the bit.
//!
//! An assembly is prepared (recipe, base, packages, layer plan), then either written
//! into the store (layers compressed in parallel into a staging store under the
//! store's `tmp/`, committed by renames only when everything succeeded, so a refused
//! input leaves nothing behind) or streamed as a docker-archive (no store, no temporary
//! file, every layer written once: see [`stream`]).

pub mod base;
pub mod debian;
pub mod layer_safety;
pub mod layers;
pub mod output;

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use futures::future::BoxFuture;
use futures::FutureExt;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::build::{Backend, BackendKind, Parents, Produced, Trace};
use crate::image::oci::{Descriptor, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use crate::image::platform::Platform;
use crate::image::reproducible::Stamp;
use crate::image::store::StoredImage;
use crate::image::store::{HashWriter, Store};
use crate::plan::Job;
use crate::recipe::config::Config;
use crate::support::error::{Error, Result};
use crate::support::time::rfc3339;

use self::base::Base;
use self::layers::Group;
use crate::recipe::image_yaml::{CreatedAt, From, Recipe, BASE_APT, BASE_REGISTRY};

/// The gzip level of assembled layers (fixed: it is part of their digests).
pub const LAYER_GZIP_LEVEL: u32 = 1;

/// Starts a [`LayerSink`] that uploads each new layer to a registry repository while
/// the others are still compressed (a push's head start; the publish layer has it).
pub type EarlyUpload = Box<dyn Fn(&str) -> Box<dyn LayerSink + Send> + Send + Sync>;

/// The assembler as a [`Backend`]: image.yaml jobs straight into the store (no engine,
/// no emulation). Errors keep their kind (bad input is a usage error).
pub struct Assembler {
    config: Config,
    store: Store,
    early_upload: EarlyUpload,
}

impl Assembler {
    pub fn new(config: Config, store: Store, early_upload: EarlyUpload) -> Assembler {
        Assembler { config, store, early_upload }
    }
}

impl Backend for Assembler {
    fn produce<'a>(
        &'a self,
        job: &'a Job,
        parents: &'a Parents,
        push_to: Option<&'a str>,
        trace: &'a Trace,
    ) -> BoxFuture<'a, Result<Produced>> {
        async move {
            trace.working();
            // An image.yaml has at most one farm parent: its `from`.
            let parent = match job.parents.first() {
                Some(p) => Some(
                    parents
                        .get(&(p.image.clone(), p.platform.clone()))
                        .ok_or_else(|| Error::failure(format!("parent {} is not in the store", p.image)))?
                        .stored
                        .manifest
                        .digest
                        .clone(),
                ),
                None => None,
            };
            let (config, store, job2) = (self.config.clone(), self.store.clone(), job.clone());
            let rt = tokio::runtime::Handle::current();
            let early = push_to.map(|repo| (self.early_upload)(repo));
            let image = tokio::task::spawn_blocking(move || {
                let prepared = prepare(&config, &store, &job2, parent.as_deref(), &rt)?;
                write_to_store(prepared, &store, early.as_deref().map(|s| s as &dyn LayerSink))
            })
            .await
            .map_err(|e| Error::failure(format!("assembling {} panicked: {e}", job.image)))?
            .map_err(|e| e.context(format!("assembling {} for {}", job.image, job.platform)))?;
            Ok(Produced { image, by: BackendKind::Assembler, placed: None })
        }
        .boxed()
    }

    /// An assembled image is not taken back from the engine: `docker save` + import
    /// would recompress its layers (other digests), and assembling is cheap.
    fn find<'a>(&'a self, _: &'a Job) -> BoxFuture<'a, Result<Option<StoredImage>>> {
        futures::future::ready(Ok(None)).boxed()
    }
}

/// Whether the planner's external base `base` is one of the assembler's.
pub fn is_assembler_base(base: &str) -> bool {
    base.starts_with(BASE_REGISTRY) || base.starts_with(BASE_APT)
}

/// Resolves an assembler base to the digest that enters the key: a registry
/// reference to its manifest (or index) digest, a package set to the digest of its
/// resolution (exact versions and SHA-256s, recorded in the store for the build).
pub async fn resolve_base(config: &Config, base: &str, platform: &Platform) -> Result<String> {
    if let Some(r) = base.strip_prefix(BASE_REGISTRY) {
        let (registry, repo, tag) = base::registry_parts(r)?;
        return match registry.manifest_head(&repo, &tag).await? {
            Some(d) => Ok(d.digest),
            None => Err(Error::usage(format!("base image {r} is not in its registry; push it or fix `from`"))),
        };
    }
    let packages: Vec<String> = base.strip_prefix(BASE_APT).unwrap_or("").split(' ').map(str::to_string).collect();
    let arch = config
        .arches
        .for_platform(platform)
        .ok_or_else(|| Error::usage(format!("no Debian architecture known for {platform}")))?
        .debian
        .clone();
    let root = config.store.clone();
    tokio::task::spawn_blocking(move || debian::resolve(&root, &arch, &packages, "image.yaml"))
        .await
        .map_err(|e| Error::failure(format!("resolving packages panicked: {e}")))?
        .map(|r| r.digest())
}

/// A store in this process's folder under the main store's `tmp/` that receives
/// everything an assembly writes; [`Staging::commit`] moves its blobs into the main store.
pub struct Staging {
    _dir: tempfile::TempDir,
    pub store: Store,
}

impl Staging {
    pub fn new(main: &Store) -> Result<Staging> {
        let (dir, store) = main.staging("assemble-")?;
        Ok(Staging { _dir: dir, store })
    }

    /// Renames every staged blob into `main` (blobs are already fsynced and verified).
    pub fn commit(self, main: &Store) -> Result<()> {
        let blobs = self.store.root().join("blobs/sha256");
        for e in std::fs::read_dir(&blobs).map_err(|e| Error::io("reading", &blobs, e))? {
            let e = e.map_err(|e| Error::io("reading", &blobs, e))?;
            let digest = format!("sha256:{}", e.file_name().to_string_lossy());
            let dest = main.blob_path(&digest)?;
            if !dest.exists() {
                std::fs::rename(e.path(), &dest).map_err(|err| Error::io("storing blob", &dest, err))?;
            }
        }
        Ok(())
    }
}

/// Everything needed to write the image: the base, the layer groups and the config inputs.
pub struct Prepared {
    pub recipe: Recipe,
    pub platform: Platform,
    pub key: String,
    pub base: Option<Base>,
    /// Where the base's layer blobs are (the main store for a farm base, else staging).
    pub base_store: Store,
    pub groups: Vec<Group>,
    pub staging: Staging,
    /// The job's time (`SOURCE_DATE_EPOCH`) and manifest annotations.
    pub stamp: Stamp,
}

impl Prepared {
    /// mtime of every entry: the recipe's `created` when it is a time, else the epoch;
    /// clamped to `SOURCE_DATE_EPOCH` when it is set, as BuildKit's `rewrite-timestamp`
    /// clamps (so the default, the epoch, stays, and layers are shared with runs without it).
    pub fn mtime(&self) -> u64 {
        let written = match self.recipe.created_at() {
            Ok(CreatedAt::Fixed(s)) => s,
            _ => 0,
        };
        self.stamp.epoch.map_or(written, |epoch| written.min(epoch))
    }

    /// The config's and the new history entries' `created`: `SOURCE_DATE_EPOCH` when it
    /// is set (whatever the recipe's `created` says: the run's time wins, as it does for
    /// engine builds), else the recipe's.
    fn created(&self) -> String {
        if let Some(epoch) = self.stamp.epoch {
            return rfc3339(epoch);
        }
        match self.recipe.created_at() {
            Ok(CreatedAt::Now) => rfc3339(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            ),
            _ => rfc3339(self.mtime()),
        }
    }

    /// The image config over `new_diff_ids` (the base's come first).
    pub fn config(&self, new_diff_ids: &[String]) -> Vec<u8> {
        let created = self.created();
        let mut c = self.base.as_ref().map(|b| b.config.clone()).filter(Value::is_object).unwrap_or_else(|| json!({}));
        let obj = c.as_object_mut().expect("an object");
        for k in ["id", "parent", "container", "container_config", "docker_version"] {
            obj.remove(k);
        }
        obj.insert("architecture".into(), json!(self.platform.architecture));
        obj.insert("os".into(), json!(self.platform.os));
        match &self.platform.variant {
            Some(v) => obj.insert("variant".into(), json!(v)),
            None => obj.remove("variant"),
        };
        obj.insert("created".into(), json!(created));
        let cfg = obj.entry("config").or_insert_with(|| json!({}));
        if !cfg.is_object() {
            *cfg = json!({});
        }
        let cfg = cfg.as_object_mut().expect("an object");
        let r = &self.recipe.config;
        if let Some(env) = &r.env {
            let base: Vec<String> = cfg
                .get("Env")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            cfg.insert("Env".into(), json!(merge_env(&base, env)));
        }
        for (field, v) in [("Entrypoint", &r.entrypoint), ("Cmd", &r.cmd)] {
            if let Some(v) = v {
                cfg.insert(field.into(), json!(v));
            }
        }
        for (field, v) in [("WorkingDir", &r.working_dir), ("User", &r.user), ("StopSignal", &r.stop_signal)] {
            if let Some(v) = v {
                cfg.insert(field.into(), json!(v));
            }
        }
        let mut labels: BTreeMap<String, Value> = cfg
            .get("Labels")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for (k, v) in r.labels.iter().flatten() {
            labels.insert(k.clone(), json!(v));
        }
        labels.insert(crate::plan::key::LABEL_KEY.into(), json!(self.key));
        cfg.insert("Labels".into(), json!(labels));
        let sets = [
            (
                "ExposedPorts",
                r.exposed_ports
                    .as_ref()
                    .map(|p| p.iter().filter_map(|p| crate::recipe::image_yaml::port_key(p).ok()).collect::<Vec<_>>()),
            ),
            ("Volumes", r.volumes.clone()),
        ];
        for (field, add) in sets {
            if let Some(add) = add {
                let mut set: BTreeMap<String, Value> = cfg
                    .get(field)
                    .and_then(Value::as_object)
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                for a in add {
                    set.insert(a, json!({}));
                }
                cfg.insert(field.into(), json!(set));
            }
        }
        let mut diff_ids: Vec<Value> =
            c.pointer("/rootfs/diff_ids").and_then(Value::as_array).cloned().unwrap_or_default();
        diff_ids.extend(new_diff_ids.iter().map(|d| json!(d)));
        let mut history: Vec<Value> = c.get("history").and_then(Value::as_array).cloned().unwrap_or_default();
        for g in &self.groups {
            history.push(json!({"created": created, "created_by": format!("archfarm assemble: {}", g.what)}));
        }
        if self.groups.is_empty() {
            history.push(json!({"created": created, "created_by": "archfarm assemble: config", "empty_layer": true}));
        }
        let obj = c.as_object_mut().expect("an object");
        obj.insert("rootfs".into(), json!({"type": "layers", "diff_ids": diff_ids}));
        obj.insert("history".into(), json!(history));
        serde_json::to_vec(&c).expect("configs serialize")
    }
}

/// Env merged with the base's: one entry per variable, the later value wins, in the
/// position of its first appearance.
pub fn merge_env(base: &[String], add: &[String]) -> Vec<String> {
    let name = |e: &str| e.split_once('=').map(|(k, _)| k.to_string()).unwrap_or_else(|| e.to_string());
    let mut out: Vec<String> = Vec::new();
    for e in base.iter().chain(add) {
        match out.iter().position(|o| name(o) == name(e)) {
            Some(i) => out[i] = e.clone(),
            None => out.push(e.clone()),
        }
    }
    out
}

/// Prepares the assembly of `job` (an image.yaml job). `parent_manifest`: the farm
/// base's manifest digest in `store`, when `from` names a farm image. Blocking (it may
/// download); call from a blocking thread with a runtime handle.
pub fn prepare(
    config: &Config,
    store: &Store,
    job: &Job,
    parent_manifest: Option<&str>,
    rt: &tokio::runtime::Handle,
) -> Result<Prepared> {
    let dir = &job.context.dir;
    let file = dir.join(&job.recipe);
    let recipe = Recipe::parse(&file, &job.recipe_text, &config.arches)?;
    let staging = Staging::new(store)?;
    let what = |f: &str| format!("{} (from: {f})", file.display());
    let in_context = |p: &str, dir_wanted: bool| -> Result<PathBuf> {
        let clean: String = p.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/");
        let found = job.context.entries.iter().find(|e| e.path == clean);
        match found.map(|e| &e.kind) {
            Some(crate::recipe::context::EntryKind::Dir) if dir_wanted => Ok(dir.join(&clean)),
            Some(crate::recipe::context::EntryKind::File { .. }) if !dir_wanted => Ok(dir.join(&clean)),
            _ => Err(Error::usage(format!(
                "{}: field `from`: '{p}' is not a {} of the image folder (or .dockerignore excludes it)",
                file.display(),
                if dir_wanted { "folder" } else { "regular file" }
            ))),
        }
    };
    let (base, base_store) = match (parent_manifest, recipe.from_kind(&file, dir, &|_| None)?) {
        (Some(m), _) => {
            let from = job.parents.first().map(|p| p.image.clone()).unwrap_or_default();
            (Some(base::from_store(store, m, &job.platform, &format!("farm image {from}"))?), store.clone())
        }
        (None, From::Scratch) => (None, store.clone()),
        (None, From::Farm(n)) => {
            return Err(Error::failure(format!("{}: farm base {n} was not built first", file.display())))
        }
        (None, From::OciLayout(p)) => {
            let path = in_context(&p, true)?;
            (Some(base::oci_layout(&staging.store, &path, &job.platform, &what(&p))?), staging.store.clone())
        }
        (None, From::DockerArchive(p)) => {
            let path = in_context(&p, false)?;
            (Some(base::docker_archive(&staging.store, &path, &job.platform, &what(&p))?), staging.store.clone())
        }
        (None, From::Registry(r)) => {
            let digest = job
                .bases
                .get(&format!("{BASE_REGISTRY}{r}"))
                .cloned()
                .ok_or_else(|| Error::failure(format!("{}: base {r} was not resolved", file.display())))?;
            let (registry, repo, _) = base::registry_parts(&r)?;
            let m = rt.block_on(registry.fetch_image(&staging.store, &repo, &digest, &job.platform)).map_err(|e| {
                if e.message().contains(&job.platform.to_string()) || e.message().contains(&job.platform.architecture) {
                    Error::usage(format!("{}: {}", what(&r), e.message()))
                } else {
                    e
                }
            })?;
            (Some(base::from_store(&staging.store, &m.digest, &job.platform, &what(&r))?), staging.store.clone())
        }
    };
    // Imported bases (in staging) pass the unpacker's checks; farm bases were made here.
    if let (Some(b), None) = (&base, parent_manifest) {
        layer_safety::check_base(&staging.store, b)?;
    }

    let mut groups = Vec::new();
    if let Some((b, digest)) = job.bases.iter().find(|(b, _)| b.starts_with(BASE_APT)) {
        let resolution = debian::recorded(store.root(), digest)
            .map_err(|e| e.context(format!("{}: packages ({b})", file.display())))?;
        for (deb, entries) in rt.block_on(debian::fetch(store.root(), &resolution))? {
            groups.push(Group { what: format!("package {} {} {}", deb.name, deb.version, deb.arch), entries });
        }
    }
    let scratch = base.is_none();
    for (field, item) in recipe.items_for(&job.platform, &config.arches) {
        let entries = layers::content_entries(&job.context, &item, scratch, &file, &field)?;
        if !entries.is_empty() {
            groups.extend(layers::split(Group { what: format!("{} -> {}", item.src, item.dest), entries }));
        }
    }
    let base_layers = base.as_ref().map(|b| b.layers.len()).unwrap_or(0);
    let max = recipe.max_layers();
    if base_layers > max || (!groups.is_empty() && base_layers == max) {
        return Err(Error::usage(format!(
            "{}: field `maxLayers`: the base has {base_layers} layers and maxLayers is {max}, which leaves no room for \
             this image's own layers; raise maxLayers (at most {})",
            file.display(),
            crate::recipe::image_yaml::MAX_LAYERS_LIMIT
        )));
    }
    let groups = layers::fit(groups, max.saturating_sub(base_layers));
    Ok(Prepared {
        recipe,
        platform: job.platform.clone(),
        key: job.key.clone(),
        base,
        base_store,
        groups,
        staging,
        stamp: job.stamp.clone(),
    })
}

/// A layer already made: the layer cache's record (`<store>/assemble/layers/<key>.json`).
#[derive(Serialize, serde::Deserialize)]
struct CachedLayer {
    diff_id: String,
    blob: Descriptor,
}

fn layer_cache_path(store: &Store, key: &str) -> PathBuf {
    store.root().join("assemble/layers").join(format!("{key}.json"))
}

/// Hears of each new layer blob as soon as it is staged, while other layers are still
/// being compressed (to start uploading it). The staged blob may be read until `settle`
/// returns: [`write_to_store`] calls it before the staging store is committed.
pub trait LayerSink: Sync {
    fn layer_staged(&self, staging: &Store, blob: &Descriptor);
    fn settle(&self);
}

/// Writes the prepared image into `store`: layers compressed in parallel into the
/// staging store (a layer whose entry list was made before, and whose blob is still in
/// the store, is reused without being read or compressed again), each new one handed to
/// `sink` when given, then config and manifest, then one commit.
pub fn write_to_store(p: Prepared, store: &Store, sink: Option<&dyn LayerSink>) -> Result<StoredImage> {
    let mtime = p.mtime();
    let staged = &p.staging.store;
    let salt = format!("gzip {LAYER_GZIP_LEVEL}");
    let results: Vec<Result<(String, CachedLayer, bool)>> = p
        .groups
        .par_iter()
        .map(|g| {
            let key = crate::image::tar::layer_key(&g.entries, mtime, &salt);
            let cached = std::fs::read(layer_cache_path(store, &key))
                .ok()
                .and_then(|b| serde_json::from_slice::<CachedLayer>(&b).ok())
                .filter(|c| store.has_blob(&c.blob.digest));
            match cached {
                Some(c) => Ok((key, c, false)),
                None => {
                    let (diff_id, blob) = write_layer(staged, g, mtime)?;
                    if let Some(sink) = sink {
                        sink.layer_staged(staged, &blob);
                    }
                    Ok((key, CachedLayer { diff_id, blob }, true))
                }
            }
        })
        .collect();
    if let Some(sink) = sink {
        sink.settle();
    }
    let mut diff_ids = Vec::new();
    let mut layers: Vec<Descriptor> = p.base.as_ref().map(|b| b.layers.clone()).unwrap_or_default();
    let mut made = Vec::new();
    for r in results {
        let (key, layer, new) = r?;
        diff_ids.push(layer.diff_id.clone());
        layers.push(layer.blob.clone());
        if new {
            made.push((key, layer));
        }
    }
    let config = staged.put_blob(OCI_CONFIG, &p.config(&diff_ids))?;
    let manifest = ManifestOut {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        config: config.clone(),
        layers,
        annotations: &p.stamp.annotations,
    };
    let manifest = staged.put_blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).expect("manifests serialize"))?;
    p.staging.commit(store)?;
    for (key, layer) in made {
        let path = layer_cache_path(store, &key);
        // Only a cache: a record that cannot be written costs a recompression next time.
        let bytes = serde_json::to_vec(&layer).expect("json");
        let options = crate::support::fs::WriteOptions::temp_in(store.tmp_dir());
        let _ = crate::support::fs::write_atomically(&path, &bytes, options);
    }
    Ok(StoredImage { manifest, config_digest: config.digest })
}

#[derive(Serialize)]
struct ManifestOut<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
    /// Left out when empty, so an image without annotations has the bytes it always had.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

fn write_layer(store: &Store, g: &Group, mtime: u64) -> Result<(String, Descriptor)> {
    let blob = store.blob_writer()?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(BufWriter::with_capacity(1 << 20, blob), flate2::Compression::new(LAYER_GZIP_LEVEL));
    let mut w = HashWriter { inner: gz, hasher: Sha256::new() };
    let fail = |e: io::Error| Error::failure(format!("writing layer {}: {e}", g.what));
    crate::image::tar::write_tar(&g.entries, mtime, &mut w).map_err(fail)?;
    let diff_id = format!("sha256:{}", hex::encode(w.hasher.finalize()));
    let blob = w.inner.finish().map_err(fail)?.into_inner().map_err(|e| fail(e.into_error()))?;
    Ok((diff_id, blob.commit(OCI_LAYER_GZIP, None)?))
}

/// Streams the prepared image as a docker-archive to `out`, writing each new layer
/// once, uncompressed, straight from its sources: a tar entry's size must precede its
/// data, and an uncompressed layer's size is known from the entry list before it is
/// written ([`crate::image::tar::tar_size`]); its diff_id is hashed on the way, and the config
/// and manifest.json, which need the diff_ids, come last (docker load reads
/// manifest.json wherever it is). Returns the config digest (the image ID).
pub fn stream(p: &Prepared, repo_tags: &[String], out: &mut dyn Write) -> Result<String> {
    let mtime = p.mtime();
    let mut layers = Vec::new();
    for l in p.base.iter().flat_map(|b| &b.layers) {
        layers.push(crate::image::docker_archive::ArchiveLayer::Blob {
            path: p.base_store.blob_path(&l.digest)?,
            size: l.size,
        });
    }
    for g in &p.groups {
        layers.push(crate::image::docker_archive::ArchiveLayer::Tar { entries: &g.entries, mtime });
    }
    let seed = format!("archfarm-stream {}", p.key);
    let top = p.config(&[]);
    let top: Value = serde_json::from_slice(&top).expect("configs are JSON");
    crate::image::docker_archive::write_archive(out, &layers, &seed, &top, repo_tags, |diffs| p.config(diffs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_is_merged_once_per_variable_later_wins_order_kept() {
        let base = vec!["PATH=/usr/bin".to_string(), "A=1".to_string()];
        let add = vec!["PATH=/bin".to_string(), "GREETING=one".to_string(), "GREETING=two".to_string()];
        assert_eq!(merge_env(&base, &add), ["PATH=/bin", "A=1", "GREETING=two"]);
    }
}
