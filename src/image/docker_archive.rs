//! `docker save` archives ("docker-archive") to and from the local OCI store.
//!
//! [`import`] reads an archive in one streaming pass: small JSON files (manifest.json,
//! configs) are kept in memory, anything large is treated as a candidate layer and is
//! decompressed, hashed (diff_id) and recompressed into the store as it streams, so a
//! multi-gigabyte save never sits in memory or in a spool file. Once manifest.json is
//! known, each named layer's diff_id is checked against its config's `rootfs.diff_ids`
//! and an OCI image manifest is written. Both Docker 20.10's layout (`<id>/layer.tar`,
//! `<id>.json`) and newer Dockers' OCI-style layout (`blobs/sha256/<hex>`) are handled,
//! because only the paths that manifest.json names are used.
//!
//! Layers are stored gzip-compressed in parallel, in fixed chunks with fixed headers (no
//! name, mtime 0) and a fixed level ([`crate::image::pgzip`]), so importing the same image twice
//! gives the same manifest digest. With
//! [`Rewrite::AsIs`] the config is stored byte for byte, so its digest stays the image
//! ID; [`Rewrite::Reproducible`] (what an engine's build goes through) rewrites layers
//! and config as [`crate::image::reproducible`] describes, so the same build on any engine
//! gives the same digests, and gives the manifest its stamp's annotations.
//!
//! [`export`] writes the reverse: a docker-archive that `docker load` accepts.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::image::oci::{digest_hex, digest_of, Descriptor, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use crate::image::reproducible::Stamp;
use crate::image::store::{HashWriter, Store, StoredImage};
use crate::support::error::{Error, Result};

/// manifest.json larger than this is refused; configs larger than this cannot be read.
pub const MAX_JSON: u64 = 16 << 20;
/// Files up to this size are kept in memory until manifest.json says what they are.
const SMALL: usize = 1 << 20;
/// The gzip level layers are stored with (fixed: it is part of the layer digests).
pub const GZIP_LEVEL: u32 = 6;

/// One image found in an archive and now in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// The OCI image manifest written to the store, and its config (the engine's ID).
    pub image: StoredImage,
    pub repo_tags: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct ArchiveManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default, deserialize_with = "null_as_empty")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers", default, deserialize_with = "null_as_empty")]
    layers: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct ConfigRootfs {
    rootfs: Rootfs,
}

#[derive(Deserialize)]
struct Rootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// The OCI image manifest, in a fixed field order (serialization is deterministic).
#[derive(Serialize, Deserialize)]
struct OciManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
    /// Left out when empty, so an image without annotations has the bytes it always had.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// Whether an import keeps the images as they are or makes them reproducible, stamped
/// with the given time and manifest annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite<'a> {
    AsIs,
    Reproducible(&'a Stamp),
}

/// A layer already in the store, from an archive file.
#[derive(Clone)]
struct StoredLayer {
    /// Of the layer as the archive has it (what its config lists).
    diff_id: String,
    /// Of the layer as stored (differs from `diff_id` only when rewritten).
    stored_diff_id: String,
    blob: Descriptor,
}

/// What became of one regular file of the archive.
enum Member {
    Memory(Vec<u8>),
    Layer(Result<StoredLayer, String>),
}

/// Imports every image of a `docker save` archive into `store` (see [`import_named`] to
/// name the archive in errors).
pub fn import(store: &Store, archive: impl Read) -> Result<Vec<ImportedImage>> {
    import_named(store, archive, "docker archive", Rewrite::AsIs)
}

/// [`import`] with the archive's name (a file, `docker save IMAGE`) for error messages,
/// and the choice of [`Rewrite`].
pub fn import_named(store: &Store, archive: impl Read, name: &str, rewrite: Rewrite<'_>) -> Result<Vec<ImportedImage>> {
    // Everything said about the archive is made printable: names and tar errors quote its bytes.
    let bad = |what: String| Error::failure(format!("{name}: {}; refusing the archive", printable(&what)));
    // A store write that failed on the local disk is archfarm's error, not the archive's.
    let io_err = |e: io::Error| match Error::from_io(e) {
        Ok(ours) => ours.context(name),
        Err(e) => Error::failure(format!("{name}: reading the archive: {}", printable(&e.to_string()))),
    };
    // A first header that does not parse: say so rather than quote the tar crate quoting it.
    let not_tar = |_: io::Error| {
        Error::failure(format!(
            "{name}: not a tar archive (its first header is no tar header; is it a `docker save` file?); refusing \
             the archive"
        ))
    };

    let mut members: BTreeMap<String, Member> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut tar = tar::Archive::new(archive);
    for (n, entry) in tar.entries().map_err(io_err)?.enumerate() {
        let mut entry = entry.map_err(|e| if n == 0 { not_tar(e) } else { io_err(e) })?;
        let raw = entry.path_bytes().into_owned();
        let path =
            clean_path(&raw).ok_or_else(|| bad(format!("unsafe entry path '{}'", String::from_utf8_lossy(&raw))))?;
        let kind = entry.header().entry_type();
        if path.is_empty() {
            continue;
        }
        if members.contains_key(&path) || links.contains_key(&path) {
            return Err(bad(format!("duplicate entry '{path}'")));
        }
        match kind {
            tar::EntryType::Directory => {}
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                if path == "manifest.json" && entry.header().size().unwrap_or(u64::MAX) > MAX_JSON {
                    return Err(bad(format!("manifest.json is larger than {} MiB", MAX_JSON >> 20)));
                }
                let member = read_member(store, &mut entry, &path, rewrite).map_err(io_err)?;
                members.insert(path, member);
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                let resolved = if kind == tar::EntryType::Symlink {
                    let parent = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    resolve_link(parent, &target)
                } else {
                    clean_path(&target)
                };
                let resolved = resolved.ok_or_else(|| {
                    bad(format!("link '{path}' points outside the archive ('{}')", String::from_utf8_lossy(&target)))
                })?;
                links.insert(path, resolved);
            }
            other => return Err(bad(format!("unexpected entry type {other:?} for '{path}'"))),
        }
    }

    let lookup = |path: &str| -> Option<&Member> {
        let clean = clean_path(path.as_bytes())?;
        let mut p = clean.as_str();
        for _ in 0..16 {
            match links.get(p) {
                Some(t) => p = t,
                None => break,
            }
        }
        members.get(p)
    };

    // Configs made here for the legacy layout, by the pseudo path manifests name them with.
    let mut synthesized: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let manifests: Vec<ArchiveManifest> = match members.get("manifest.json") {
        Some(Member::Memory(b)) => {
            serde_json::from_slice(b).map_err(|e| bad(format!("manifest.json is not valid: {e}")))?
        }
        Some(Member::Layer(_)) => return Err(bad(format!("manifest.json is larger than {} MiB", MAX_JSON >> 20))),
        None if members.contains_key("repositories") => {
            legacy_manifests(store, &lookup, &mut synthesized, &bad, rewrite)?
        }
        None => return Err(bad("no manifest.json (is this a `docker save` archive?)".into())),
    };

    let mut out = Vec::new();
    for m in manifests {
        let config = match synthesized.get(&m.config) {
            Some(b) => b,
            None => match lookup(&m.config) {
                Some(Member::Memory(b)) => b,
                Some(Member::Layer(_)) => return Err(bad(format!("config '{}' is too large", m.config))),
                None => return Err(bad(format!("manifest.json names '{}', which is not in the archive", m.config))),
            },
        };
        let rootfs: ConfigRootfs = serde_json::from_slice(config)
            .map_err(|e| bad(format!("config '{}' is not an image config: {e}", m.config)))?;
        if rootfs.rootfs.diff_ids.len() != m.layers.len() {
            return Err(bad(format!(
                "config '{}' lists {} layers but manifest.json lists {}",
                m.config,
                rootfs.rootfs.diff_ids.len(),
                m.layers.len()
            )));
        }
        let mut layers = Vec::new();
        let mut stored_diff_ids = Vec::new();
        for (path, want) in m.layers.iter().zip(&rootfs.rootfs.diff_ids) {
            let layer = match lookup(path) {
                Some(Member::Layer(Ok(l))) => l.clone(),
                Some(Member::Layer(Err(e))) => return Err(bad(format!("layer '{path}': {e}"))),
                Some(Member::Memory(bytes)) => store_layer(store, &mut &bytes[..], path, rewrite)
                    .map_err(|e| Error::failure(format!("{name}: storing layer '{path}': {e}")))?
                    .map_err(|e| bad(format!("layer '{path}': {e}")))?,
                None => return Err(bad(format!("manifest.json names '{path}', which is not in the archive"))),
            };
            if &layer.diff_id != want {
                return Err(bad(format!("layer '{path}' has diff_id {} but its config says {want}", layer.diff_id)));
            }
            layers.push(layer.blob);
            stored_diff_ids.push(layer.stored_diff_id);
        }
        let config_desc = match rewrite {
            Rewrite::AsIs => store.put_blob(OCI_CONFIG, config)?,
            Rewrite::Reproducible(stamp) => {
                let rewritten = crate::image::reproducible::normalize_config(config, &stored_diff_ids, stamp)
                    .map_err(|e| bad(format!("config '{}' is {e}", m.config)))?;
                store.put_blob(OCI_CONFIG, &rewritten)?
            }
        };
        let manifest = OciManifest {
            schema_version: 2,
            media_type: OCI_MANIFEST.to_string(),
            config: config_desc.clone(),
            layers,
            annotations: match rewrite {
                Rewrite::AsIs => BTreeMap::new(),
                Rewrite::Reproducible(stamp) => stamp.annotations.clone(),
            },
        };
        let bytes = serde_json::to_vec(&manifest).expect("manifests serialize");
        let manifest = store.put_blob(OCI_MANIFEST, &bytes)?;
        out.push(ImportedImage {
            image: StoredImage { manifest, config_digest: config_desc.digest },
            repo_tags: m.repo_tags,
        });
    }
    Ok(out)
}

/// The images of a legacy archive (no manifest.json: `repositories` names each tag's top
/// layer id, and each `<id>/json` its parent): follows every chain to its root, and makes
/// a config from the top layer's v1 JSON with the diff_ids of the layers found.
fn legacy_manifests<'a>(
    store: &Store,
    lookup: &dyn Fn(&str) -> Option<&'a Member>,
    synthesized: &mut BTreeMap<String, Vec<u8>>,
    bad: &dyn Fn(String) -> Error,
    rewrite: Rewrite<'_>,
) -> Result<Vec<ArchiveManifest>> {
    let repos: BTreeMap<String, BTreeMap<String, String>> = match lookup("repositories") {
        Some(Member::Memory(b)) => {
            serde_json::from_slice(b).map_err(|e| bad(format!("repositories is not valid: {e}")))?
        }
        _ => return Err(bad("repositories is too large".into())),
    };
    let mut tops: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (repo, tags) in repos {
        for (tag, id) in tags {
            tops.entry(id).or_default().push(format!("{repo}:{tag}"));
        }
    }
    let mut out = Vec::new();
    for (top, repo_tags) in tops {
        let json_of = |id: &str| -> Result<serde_json::Value> {
            if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("layer id '{id}' is not 64 hex digits")));
            }
            match lookup(&format!("{id}/json")) {
                Some(Member::Memory(b)) => {
                    serde_json::from_slice(b).map_err(|e| bad(format!("{id}/json is not valid: {e}")))
                }
                _ => Err(bad(format!("{id}/json is missing or too large"))),
            }
        };
        let top_json = json_of(&top)?;
        let mut layers = Vec::new();
        let mut id = top.clone();
        loop {
            if layers.len() > 256 {
                return Err(bad(format!("the parent chain of {top} is longer than 256 layers (a loop?)")));
            }
            layers.push(format!("{id}/layer.tar"));
            match json_of(&id)?.get("parent").and_then(|p| p.as_str()).filter(|p| !p.is_empty()) {
                Some(p) => id = p.to_string(),
                None => break,
            }
        }
        layers.reverse();
        let mut diff_ids = Vec::new();
        for path in &layers {
            let diff = match lookup(path) {
                Some(Member::Layer(Ok(l))) => l.diff_id.clone(),
                Some(Member::Layer(Err(e))) => return Err(bad(format!("layer '{path}': {e}"))),
                Some(Member::Memory(bytes)) => {
                    store_layer(store, &mut &bytes[..], path, rewrite)?
                        .map_err(|e| bad(format!("layer '{path}': {e}")))?
                        .diff_id
                }
                None => return Err(bad(format!("'{path}' is not in the archive"))),
            };
            diff_ids.push(serde_json::Value::String(diff));
        }
        let mut config = top_json;
        let obj = config.as_object_mut().ok_or_else(|| bad(format!("{top}/json is not an object")))?;
        for k in ["id", "parent", "Size", "container", "container_config", "layer_id"] {
            obj.remove(k);
        }
        obj.insert("rootfs".into(), serde_json::json!({"type": "layers", "diff_ids": diff_ids}));
        let name = format!("legacy:{top}");
        synthesized.insert(name.clone(), serde_json::to_vec(&config).expect("configs serialize"));
        out.push(ArchiveManifest { config: name, repo_tags, layers });
    }
    Ok(out)
}

/// Reads one regular file: small (or JSON-looking, up to [`MAX_JSON`]) into memory,
/// anything else streamed into the store as a candidate layer.
fn read_member(store: &Store, entry: &mut impl Read, path: &str, rewrite: Rewrite<'_>) -> io::Result<Member> {
    let mut prefix = Vec::new();
    (&mut *entry).take(SMALL as u64 + 1).read_to_end(&mut prefix)?;
    if prefix.len() <= SMALL {
        return Ok(Member::Memory(prefix));
    }
    if prefix.first() == Some(&b'{') {
        (&mut *entry).take(MAX_JSON + 1 - prefix.len() as u64).read_to_end(&mut prefix)?;
        if prefix.len() as u64 <= MAX_JSON {
            return Ok(Member::Memory(prefix));
        }
    }
    let mut reader = io::Cursor::new(prefix).chain(entry);
    let layer = store_layer(store, &mut reader, path, rewrite).map_err(Error::into_io)?;
    Ok(Member::Layer(layer))
}

/// Stores one layer (plain tar or gzip) gzip-compressed, rewritten if asked; returns its
/// diff_ids and blob, or (inner Err) why the content is not a usable layer. Outer Err:
/// store I/O failed. If `path` is `blobs/sha256/<hex>`, the raw bytes must hash to `<hex>`.
fn store_layer(
    store: &Store,
    input: &mut dyn Read,
    path: &str,
    rewrite: Rewrite<'_>,
) -> Result<Result<StoredLayer, String>> {
    let mut raw = HashingReader { inner: input, hasher: Sha256::new() };
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        let n = raw.read(&mut magic[got..]).map_err(|e| Error::failure(format!("reading layer '{path}': {e}")))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = io::Cursor::new(magic[..got].to_vec());
    let gzip = got == 2 && magic == [0x1f, 0x8b];
    let mut decompressed: Box<dyn Read + '_> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(head.chain(&mut raw)))
    } else {
        Box::new(head.chain(&mut raw))
    };
    let writer = store.blob_writer()?;
    let mut enc = HashWriter { inner: gzip_writer(writer), hasher: Sha256::new() };
    // The content's fault, unless the store's disk failed (outer Err).
    let invalid = |e: io::Error| match Error::from_io(e) {
        Ok(disk) => Err(disk),
        Err(e) => Ok(Err(if gzip { format!("invalid gzip data: {e}") } else { e.to_string() })),
    };
    // Only a rewritten layer needs its input hashed apart from its output.
    let input_diff_id = match rewrite {
        Rewrite::AsIs => {
            if let Err(e) = io::copy(&mut decompressed, &mut enc) {
                return invalid(e);
            }
            None
        }
        Rewrite::Reproducible(stamp) => {
            let mut plain = HashingReader { inner: &mut decompressed, hasher: Sha256::new() };
            let rewritten = crate::image::reproducible::normalize_layer(&mut plain, &mut enc, stamp)
                .and_then(|()| io::copy(&mut plain, &mut io::sink()));
            if let Err(e) = rewritten {
                return invalid(e);
            }
            Some(format!("sha256:{}", hex::encode(plain.hasher.finalize())))
        }
    };
    drop(decompressed);
    let stored_diff_id = format!("sha256:{}", hex::encode(enc.hasher.finalize()));
    let diff_id = input_diff_id.unwrap_or_else(|| stored_diff_id.clone());
    let blob_writer = enc.inner.finish().map_err(|e| {
        Error::from_io(e).unwrap_or_else(|e| Error::failure(format!("compressing layer '{path}': {e}")))
    })?;
    // Drain anything after the gzip stream so the raw digest covers the whole file.
    io::copy(&mut raw, &mut io::sink()).map_err(|e| Error::failure(format!("reading layer '{path}': {e}")))?;
    let raw_digest = format!("sha256:{}", hex::encode(raw.hasher.finalize()));
    if let Some(hex) = path.strip_prefix("blobs/sha256/") {
        if raw_digest != format!("sha256:{hex}") {
            return Ok(Err(format!("content has digest {raw_digest}, not the one its name says")));
        }
    }
    let blob = blob_writer.commit(OCI_LAYER_GZIP, None)?;
    Ok(Ok(StoredLayer { diff_id, stored_diff_id, blob }))
}

/// A deterministic gzip stream compressed on every core ([`crate::image::pgzip`]): fixed
/// members of no name, mtime 0, unknown OS, fixed level.
pub fn gzip_writer<W: Write>(w: W) -> crate::image::pgzip::ParallelGz<W> {
    crate::image::pgzip::ParallelGz::new(w, GZIP_LEVEL)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Text from an archive (a name, a tar error quoting header bytes) made fit for a
/// message: control characters escaped (`\u{1b}`), bytes that were not UTF-8 (shown by a
/// lossy conversion as U+FFFD) as `?`, and at most [`MAX_PRINTED`] characters.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_PRINTED));
    for (n, c) in s.chars().enumerate() {
        if n == MAX_PRINTED {
            out.push_str("...");
            break;
        }
        match c {
            '\u{fffd}' => out.push('?'),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// The most characters of archive text [`printable`] keeps.
pub const MAX_PRINTED: usize = 400;

/// A path relative to an archive's root: no leading `/`, no `..`, no NUL; empty and `.`
/// parts dropped (`""` is the root). `Err` says why it is refused. The one path rule of
/// `docker save` members and of the base layers the assembler checks.
pub(crate) fn relative_path(raw: &[u8]) -> std::result::Result<Vec<u8>, &'static str> {
    if raw.contains(&0) {
        return Err("contains a NUL byte");
    }
    if raw.starts_with(b"/") {
        return Err("is absolute");
    }
    let mut out = Vec::with_capacity(raw.len());
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("has a '..' part"),
            p => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(p);
            }
        }
    }
    Ok(out)
}

/// A [`relative_path`] that is UTF-8 without backslashes, as archive member names must be.
fn clean_path(raw: &[u8]) -> Option<String> {
    if raw.contains(&b'\\') {
        return None;
    }
    String::from_utf8(relative_path(raw).ok()?).ok()
}

/// Resolves a symlink target relative to `dir`; None if it leaves the archive.
fn resolve_link(dir: &str, target: &[u8]) -> Option<String> {
    let t = std::str::from_utf8(target).ok()?;
    if t.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in t.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// Writes `image` (an OCI or Docker v2 manifest in `store`) as a docker-archive (see
/// [`write_archive`]; layers gzip as stored, `docker load` decompresses them).
pub fn export(store: &Store, image: &StoredImage, repo_tags: &[String], mut out: impl Write) -> Result<()> {
    let manifest = &image.manifest;
    let m: OciManifest = serde_json::from_slice(&store.read_blob(&manifest.digest)?)
        .map_err(|e| Error::failure(format!("manifest {} in the store is not valid: {e}", manifest.digest)))?;
    let config = store.read_blob(&m.config.digest)?;
    let top: serde_json::Value = serde_json::from_slice(&config)
        .map_err(|e| Error::failure(format!("config {} in the store is not JSON: {e}", m.config.digest)))?;
    let mut layers = Vec::new();
    for l in &m.layers {
        layers.push(ArchiveLayer::Blob { path: store.blob_path(&l.digest)?, size: l.size });
    }
    let seed = format!("archfarm-export {}", m.config.digest);
    write_archive(&mut out, &layers, &seed, &top, repo_tags, |_| config.clone())?;
    out.flush().map_err(|e| Error::failure(format!("writing docker archive of {}: {e}", m.config.digest)))?;
    Ok(())
}

/// The docker-archive sink: [`export`] to `file` atomically (a temporary file next to it,
/// renamed when complete).
pub fn export_file(store: &Store, image: &StoredImage, repo_tags: &[String], file: &Path) -> Result<()> {
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = crate::support::fs::temp_file(parent, None)?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        export(store, image, repo_tags, &mut w)?;
        w.flush().map_err(|e| Error::io("writing", file, e))?;
    }
    crate::support::fs::persist(tmp, file)
}

/// One layer of a docker-archive being written.
pub enum ArchiveLayer<'a> {
    /// A blob of the store (gzip), named by its digest; verified while it is copied.
    Blob { path: std::path::PathBuf, size: u64 },
    /// A layer made from entries as it is written (uncompressed; its size is known first).
    Tar { entries: &'a [crate::image::tar::TarEntry], mtime: u64 },
}

/// Writes a docker-archive that both `docker load` (manifest.json) and older tools that
/// follow the legacy parent chain (`repositories`, `<id>/json` with `parent`,
/// `<id>/VERSION`, `<id>/layer.tar`) accept. Layer ids are derived from `seed` and the
/// position. Each layer is written once, in order; `config` receives the diff_ids of the
/// [`ArchiveLayer::Tar`] layers (hashed on the way) and returns the image config, which
/// is written last with manifest.json and `repositories`. Returns the config digest.
pub fn write_archive(
    out: &mut dyn Write,
    layers: &[ArchiveLayer],
    seed: &str,
    top: &serde_json::Value,
    repo_tags: &[String],
    config: impl FnOnce(&[String]) -> Vec<u8>,
) -> Result<String> {
    use crate::image::tar::{member_header, padding, tar_size, write_tar};
    let werr = |e: io::Error| Error::failure(format!("writing docker archive: {e}"));
    let ids: Vec<String> =
        (0..layers.len()).map(|i| hex::encode(Sha256::digest(format!("{seed} layer {i}").as_bytes()))).collect();
    let put = |out: &mut dyn Write, name: &str, bytes: &[u8]| -> io::Result<()> {
        out.write_all(&member_header(name, false, bytes.len() as u64))?;
        out.write_all(bytes)?;
        out.write_all(padding(bytes.len() as u64))
    };
    let mut new_diff_ids = Vec::new();
    let mut layer_paths = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let id = &ids[i];
        let parent = i.checked_sub(1).map(|p| ids[p].clone());
        let mut v1 = if i + 1 == layers.len() {
            let mut t = top.clone();
            if let Some(o) = t.as_object_mut() {
                o.remove("rootfs");
                o.remove("history");
            }
            t
        } else {
            serde_json::json!({"created": top.get("created"), "container_config": {"Cmd": null}, "os": top.get("os"), "architecture": top.get("architecture")})
        };
        if let Some(o) = v1.as_object_mut() {
            o.insert("id".into(), serde_json::json!(id));
            if let Some(p) = &parent {
                o.insert("parent".into(), serde_json::json!(p));
            }
        }
        out.write_all(&member_header(id, true, 0)).map_err(werr)?;
        put(out, &format!("{id}/VERSION"), b"1.0").map_err(werr)?;
        put(out, &format!("{id}/json"), &serde_json::to_vec(&v1).expect("json serializes")).map_err(werr)?;
        let path = format!("{id}/layer.tar");
        match layer {
            ArchiveLayer::Blob { path: blob, size } => {
                out.write_all(&member_header(&path, false, *size)).map_err(werr)?;
                let file = std::fs::File::open(blob).map_err(|e| Error::io("opening blob", blob, e))?;
                let mut reader = HashingReader { inner: file, hasher: Sha256::new() };
                let copied = io::copy(&mut (&mut reader).take(*size), out).map_err(werr)?;
                let name = blob.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let found = hex::encode(reader.hasher.finalize());
                if copied != *size {
                    let why = format!("it has {copied} bytes where the manifest says {size}");
                    return Err(crate::image::store::corrupt_blob_at(blob, &why));
                }
                if found != name {
                    return Err(crate::image::store::corrupt_blob_at(
                        blob,
                        &format!("its content hashes to sha256:{found}"),
                    ));
                }
                out.write_all(padding(*size)).map_err(werr)?;
            }
            ArchiveLayer::Tar { entries, mtime } => {
                let size = tar_size(entries);
                out.write_all(&member_header(&path, false, size)).map_err(werr)?;
                let mut w = HashWriter { inner: &mut *out, hasher: Sha256::new() };
                write_tar(entries, *mtime, &mut w).map_err(werr)?;
                new_diff_ids.push(format!("sha256:{}", hex::encode(w.hasher.finalize())));
                out.write_all(padding(size)).map_err(werr)?;
            }
        }
        layer_paths.push(path);
    }
    let config = config(&new_diff_ids);
    let config_digest = digest_of(&config);
    let config_name = format!("{}.json", digest_hex(&config_digest)?);
    put(out, &config_name, &config).map_err(werr)?;
    let manifest = vec![ArchiveManifest { config: config_name, repo_tags: repo_tags.to_vec(), layers: layer_paths }];
    put(out, "manifest.json", &serde_json::to_vec(&manifest).expect("manifests serialize")).map_err(werr)?;
    if let Some(top_id) = ids.last() {
        let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for t in repo_tags {
            let (repo, tag) = crate::image::reference::split_tag(t);
            repos.entry(repo.to_string()).or_default().insert(tag.unwrap_or("latest").to_string(), top_id.clone());
        }
        put(out, "repositories", &serde_json::to_vec(&repos).expect("json serializes")).map_err(werr)?;
    }
    out.write_all(&[0u8; 1024]).map_err(werr)?;
    Ok(config_digest)
}

#[cfg(test)]
fn file_header(size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

#[cfg(test)]
fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = file_header(bytes.len() as u64, 0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_tar(name: &str, content: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        append_bytes(&mut b, name, content).unwrap();
        b.into_inner().unwrap()
    }

    fn sha(b: &[u8]) -> String {
        digest_of(b)
    }

    /// A save in the OCI-style layout of newer Dockers, with one gzip and one plain layer.
    fn oci_style_archive() -> (Vec<u8>, String) {
        let l1 = layer_tar("a", b"hello");
        let l2 = layer_tar("b", &vec![7u8; 3 << 20]);
        let mut gz = gzip_writer(Vec::new());
        gz.write_all(&l1).unwrap();
        let l1gz = gz.finish().unwrap();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "arm64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha(&l1), sha(&l2)]}
        }))
        .unwrap();
        let chex = digest_hex(&sha(&config)).unwrap().to_string();
        let p1 = format!("blobs/sha256/{}", digest_hex(&sha(&l1gz)).unwrap());
        let p2 = format!("blobs/sha256/{}", digest_hex(&sha(&l2)).unwrap());
        let manifest = serde_json::json!([{
            "Config": format!("blobs/sha256/{chex}"), "RepoTags": ["x:y"], "Layers": [p1, p2]
        }]);
        let mut b = tar::Builder::new(Vec::new());
        append_bytes(&mut b, "oci-layout", b"{}").unwrap();
        append_bytes(&mut b, &p1, &l1gz).unwrap();
        append_bytes(&mut b, &p2, &l2).unwrap();
        append_bytes(&mut b, &format!("blobs/sha256/{chex}"), &config).unwrap();
        append_bytes(&mut b, "manifest.json", &serde_json::to_vec(&manifest).unwrap()).unwrap();
        (b.into_inner().unwrap(), format!("sha256:{chex}"))
    }

    #[test]
    fn oci_style_layout_imports_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (archive, config) = oci_style_archive();
        let images = import(&store, &archive[..]).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].image.config_digest, config);
        assert_eq!(images[0].repo_tags, ["x:y"]);
        let again = import(&store, &archive[..]).unwrap();
        assert_eq!(again[0].image.manifest, images[0].image.manifest);

        // export, then import the export: same manifest (layers were already canonical gzip).
        let mut out = Vec::new();
        export(&store, &images[0].image, &["x:z".into()], &mut out).unwrap();
        let back = import(&store, &out[..]).unwrap();
        assert_eq!(back[0].image.manifest, images[0].image.manifest);
        assert_eq!(back[0].repo_tags, ["x:z"]);
        assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn hostile_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for evil in ["../evil", "a/../../evil"] {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = file_header(1, 0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // set the raw name bytes: the tar crate's setters refuse `..` themselves.
            h.as_old_mut().name[..evil.len()].copy_from_slice(evil.as_bytes());
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
            let bytes = b.into_inner().unwrap();
            let err = import_named(&store, &bytes[..], "evil.tar", Rewrite::AsIs).unwrap_err();
            assert!(err.message().contains("evil.tar") && err.message().contains("unsafe"), "{}", err.message());
        }
        let mut b = tar::Builder::new(Vec::new());
        let mut h = file_header(1, 0o644);
        h.as_old_mut().name[..9].copy_from_slice(b"/etc/evil");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(import(&store, &bytes[..]).unwrap_err().message().contains("unsafe"));
    }

    #[test]
    fn missing_members_and_wrong_diff_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let l = layer_tar("a", b"x");
        let config =
            serde_json::to_vec(&serde_json::json!({"rootfs": {"type": "layers", "diff_ids": [sha(b"other")]}}))
                .unwrap();
        let manifest = |layer: &str| {
            serde_json::to_vec(&serde_json::json!([{"Config": "c.json", "RepoTags": null, "Layers": [layer]}])).unwrap()
        };
        let mut b = tar::Builder::new(Vec::new());
        append_bytes(&mut b, "c.json", &config).unwrap();
        append_bytes(&mut b, "l/layer.tar", &l).unwrap();
        append_bytes(&mut b, "manifest.json", &manifest("nope/layer.tar")).unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(import(&store, &bytes[..]).unwrap_err().message().contains("not in the archive"));

        let mut b = tar::Builder::new(Vec::new());
        append_bytes(&mut b, "c.json", &config).unwrap();
        append_bytes(&mut b, "l/layer.tar", &l).unwrap();
        append_bytes(&mut b, "manifest.json", &manifest("l/layer.tar")).unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(import(&store, &bytes[..]).unwrap_err().message().contains("diff_id"));
    }

    #[test]
    fn links_inside_the_archive_resolve_and_escaping_ones_are_refused() {
        assert_eq!(resolve_link("b", b"../a/layer.tar").as_deref(), Some("a/layer.tar"));
        assert_eq!(resolve_link("b", b"../../x"), None);
        assert_eq!(clean_path(b"./a//b/"), Some("a/b".into()));
        assert_eq!(clean_path(b"a/../b"), None);
    }

    #[test]
    fn oversized_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let big = vec![b' '; (MAX_JSON + 1) as usize];
        append_bytes(&mut b, "manifest.json", &big).unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(import(&store, &bytes[..]).unwrap_err().message().contains("larger than 16 MiB"));
    }

    use proptest::prelude::*;

    /// A small valid archive: one layer, its config, manifest.json.
    fn small_archive() -> Vec<u8> {
        let l = layer_tar("a", b"hello");
        let config =
            serde_json::to_vec(&serde_json::json!({"rootfs": {"type": "layers", "diff_ids": [sha(&l)]}})).unwrap();
        let manifest = serde_json::json!([{"Config": "c.json", "RepoTags": ["x:y"], "Layers": ["l/layer.tar"]}]);
        let mut b = tar::Builder::new(Vec::new());
        append_bytes(&mut b, "l/layer.tar", &l).unwrap();
        append_bytes(&mut b, "c.json", &config).unwrap();
        append_bytes(&mut b, "manifest.json", &serde_json::to_vec(&manifest).unwrap()).unwrap();
        b.into_inner().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A valid archive with bytes overwritten or cut short, and arbitrary bytes: imported
        /// or refused, never a panic, and a refusal quotes no control character.
        #[test]
        fn mutated_archives_import_or_are_refused_without_panic(
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..12),
            cut in prop::option::of(any::<prop::sample::Index>()),
            garbage in prop::collection::vec(any::<u8>(), 0..2048),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let mut archive = small_archive();
            for (at, b) in flips {
                let i = at.index(archive.len());
                archive[i] = b;
            }
            if let Some(cut) = cut {
                archive.truncate(cut.index(archive.len()));
            }
            for input in [&archive[..], &garbage[..]] {
                if let Err(e) = import(&store, input) {
                    prop_assert!(!e.message().chars().any(char::is_control), "{:?}", e.message());
                }
            }
        }

        /// Accepted member paths and link targets are relative and never climb.
        #[test]
        fn clean_paths_and_resolved_links_never_climb(raw in "[a./\\\\\\x00]{0,12}", dir in "[a/]{0,6}") {
            for p in [clean_path(raw.as_bytes()), resolve_link(&dir, raw.as_bytes())].into_iter().flatten() {
                prop_assert!(p.is_empty() || p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."), "{:?}", p);
            }
        }
    }
}
