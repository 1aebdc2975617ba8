//! Content keys: the SHA-256 of a canonical, versioned encoding of everything a build of
//! one (image, platform) depends on. The encoding is written down byte by byte in
//! docs/content-keys.md; the golden tests below pin it, so any change to it must bump
//! the version line.
//!
//! Encoding (all text UTF-8; `F(x)` is a field: the decimal byte length of `x`, `:`, `x`):
//!
//! ```text
//! archfarm-key v1\n
//! platform F(os) F(architecture) F(variant or empty)\n
//! build F(os) F(architecture) F(variant or empty)\n               only for recipes that read BUILD* args
//! recipe F(file name)\n
//! entry F(path) F(kind) F(sha256 hex | link target | empty)\n      one per entry, in order
//! arg F(name) F(value)\n                                            sorted by name
//! parent F(farm image name[ for platform]) F(its key)\n            sorted by name
//! base F(external reference[ for platform]) F(resolved digest or id)   sorted by reference
//! epoch F(seconds)\n                                                only with SOURCE_DATE_EPOCH
//! annotation F(key) F(value)\n                                      the manifest's, sorted by key
//! ```
//!
//! Fields within a record are separated by one space; `kind` is `file`, `exec`, `symlink`
//! or `dir`. Because every field carries its length, no byte of a path (spaces,
//! newlines, `:`) can be mistaken for a separator, so two different inputs never encode
//! to the same bytes.
//!
//! The `build` record (the builder's platform) is there only when the recipe reads
//! `BUILDPLATFORM`, `BUILDOS`, `BUILDARCH` or `BUILDVARIANT`: only then may two builders
//! of different platforms produce different bytes, so only then must they not share a
//! key. A parent or base used for another platform than the job's (a cross stage's
//! `FROM --platform=$BUILDPLATFORM <image>`) is named `<image> for os/arch[/variant]`;
//! no image name or reference holds a space. Recipes with neither encode exactly as before, so
//! their keys are unchanged.
//!
//! The `epoch` and `annotation` records are the image's [`Stamp`]: `SOURCE_DATE_EPOCH`
//! and the annotations of its manifest, which change its bytes and so must change its
//! key. They appear only when set, so a run with neither keeps every earlier key; the
//! index key likewise gains `annotation` records only for an annotated index.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use crate::image::platform::Platform;
use crate::image::reproducible::Stamp;
use crate::recipe::context::ContextEntry;

/// Labels archfarm puts on every image it builds; the key label is the engine memo.
pub const LABEL_KEY: &str = "dev.archfarm.key";
pub const LABEL_IMAGE: &str = "dev.archfarm.image";
pub const LABEL_PLATFORM: &str = "dev.archfarm.platform";
/// The per-platform tag of a key: `<arch>[-<variant>]-<key>`.
pub fn platform_tag(platform: &Platform, key: &str) -> String {
    format!("{}-{key}", platform.tag_slug())
}

/// The first line of every key encoding; bump it whenever the encoding changes.
pub const KEY_SCHEME: &str = "archfarm-key v1";
/// The first line of every index key encoding.
pub const INDEX_SCHEME: &str = "archfarm-index v1";

/// Everything the build of one image for one platform depends on.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    pub platform: &'a Platform,
    /// The builder's platform, for recipes whose output may depend on it.
    pub build_platform: Option<&'a Platform>,
    /// The recipe file used for this platform (`Dockerfile.x86_64` or `Dockerfile`).
    pub recipe: &'a str,
    /// The platform's context entries (see `Context::for_recipe`), sorted by path bytes.
    pub entries: &'a [ContextEntry],
    pub build_args: &'a BTreeMap<String, String>,
    /// Farm image name (`name for os/arch` when built for another platform) -> its key.
    pub parents: &'a BTreeMap<String, String>,
    /// External base reference -> its resolved digest or image id.
    pub bases: &'a BTreeMap<String, String>,
    /// The time and manifest annotations the image is stamped with.
    pub stamp: &'a Stamp,
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b' ');
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

fn record(out: &mut Vec<u8>, name: &str, fields: &[&[u8]]) {
    out.extend_from_slice(name.as_bytes());
    for f in fields {
        field(out, f);
    }
    out.push(b'\n');
}

/// The canonical encoding of `input` (what [`content_key`] hashes).
pub fn encode(input: &KeyInput) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + input.entries.len() * 100);
    out.extend_from_slice(KEY_SCHEME.as_bytes());
    out.push(b'\n');
    let platform_record = |out: &mut Vec<u8>, name: &str, p: &Platform| {
        record(out, name, &[p.os.as_bytes(), p.architecture.as_bytes(), p.variant.as_deref().unwrap_or("").as_bytes()])
    };
    platform_record(&mut out, "platform", input.platform);
    if let Some(b) = input.build_platform {
        platform_record(&mut out, "build", b);
    }
    record(&mut out, "recipe", &[input.recipe.as_bytes()]);
    let mut entries: Vec<&ContextEntry> = input.entries.iter().collect();
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    for e in entries {
        let (kind, value) = e.kind_and_value();
        record(&mut out, "entry", &[e.path.as_bytes(), kind.as_bytes(), value.as_bytes()]);
    }
    for (name, map) in [("arg", input.build_args), ("parent", input.parents), ("base", input.bases)] {
        for (k, v) in map {
            record(&mut out, name, &[k.as_bytes(), v.as_bytes()]);
        }
    }
    if let Some(epoch) = input.stamp.epoch {
        record(&mut out, "epoch", &[epoch.to_string().as_bytes()]);
    }
    annotation_records(&mut out, &input.stamp.annotations);
    out
}

fn annotation_records(out: &mut Vec<u8>, annotations: &BTreeMap<String, String>) {
    for (k, v) in annotations {
        record(out, "annotation", &[k.as_bytes(), v.as_bytes()]);
    }
}

/// The content key of `input`: lowercase hex SHA-256 of [`encode`] (64 characters).
pub fn content_key(input: &KeyInput) -> String {
    hex::encode(Sha256::digest(encode(input)))
}

/// The canonical encoding of a multi-platform image's per-platform keys and the
/// annotations of its index.
pub fn encode_index(children: &[(Platform, String)], annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let mut sorted: Vec<(String, &str)> = children.iter().map(|(p, k)| (p.to_string(), k.as_str())).collect();
    sorted.sort();
    sorted.dedup();
    let mut out = Vec::new();
    out.extend_from_slice(INDEX_SCHEME.as_bytes());
    out.push(b'\n');
    for (p, k) in sorted {
        record(&mut out, "child", &[p.as_bytes(), k.as_bytes()]);
    }
    annotation_records(&mut out, annotations);
    out
}

/// The key of the stitched index: SHA-256 over the per-platform keys sorted by platform
/// (`linux/amd64` < `linux/arm/v7` ...), independent of the order given, and the index's
/// annotations sorted by key.
pub fn index_key(children: &[(Platform, String)], annotations: &BTreeMap<String, String>) -> String {
    hex::encode(Sha256::digest(encode_index(children, annotations)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::context::EntryKind;

    fn amd64() -> Platform {
        Platform { os: "linux".into(), architecture: "amd64".into(), variant: None }
    }

    fn armv7() -> Platform {
        Platform { os: "linux".into(), architecture: "arm".into(), variant: Some("v7".into()) }
    }

    fn file(path: &str, content: &[u8], executable: bool) -> ContextEntry {
        ContextEntry {
            path: path.into(),
            kind: EntryKind::File { executable, size: content.len() as u64, sha256: Sha256::digest(content).into() },
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    struct Fixture {
        platform: Platform,
        recipe: String,
        entries: Vec<ContextEntry>,
        args: BTreeMap<String, String>,
        parents: BTreeMap<String, String>,
        bases: BTreeMap<String, String>,
        build: Option<Platform>,
        stamp: Stamp,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                platform: amd64(),
                recipe: "Dockerfile".into(),
                entries: vec![
                    file("Dockerfile", b"FROM gvisor.dev/images/basic/alpine\n", false),
                    ContextEntry { path: "bin".into(), kind: EntryKind::Dir },
                    file("bin/run me.sh", b"#!/bin/sh\necho hi\n", true),
                    ContextEntry { path: "link".into(), kind: EntryKind::Symlink { target: "bin/run me.sh".into() } },
                ],
                args: map(&[("VERSION", "1.2.3")]),
                parents: map(&[("basic/alpine", &"a".repeat(64))]),
                bases: map(&[("ubuntu:22.04", &format!("sha256:{}", "b".repeat(64)))]),
                build: None,
                stamp: Stamp::default(),
            }
        }

        fn key(&self) -> String {
            content_key(&KeyInput {
                platform: &self.platform,
                build_platform: self.build.as_ref(),
                recipe: &self.recipe,
                entries: &self.entries,
                build_args: &self.args,
                parents: &self.parents,
                bases: &self.bases,
                stamp: &self.stamp,
            })
        }
    }

    #[test]
    fn golden_encoding() {
        let platform = armv7();
        let entries = vec![
            file("a b\nc", b"x", false),
            ContextEntry { path: "d".into(), kind: EntryKind::Dir },
            ContextEntry { path: "d/l".into(), kind: EntryKind::Symlink { target: "../a b\nc".into() } },
        ];
        let args = map(&[("V", "1")]);
        let none = BTreeMap::new();
        let input = KeyInput {
            platform: &platform,
            build_platform: None,
            recipe: "Dockerfile.armhf",
            entries: &entries,
            build_args: &args,
            parents: &none,
            bases: &none,
            stamp: &Stamp::default(),
        };
        let x = hex::encode(Sha256::digest(b"x"));
        let want = format!(
            "archfarm-key v1\nplatform 5:linux 3:arm 2:v7\nrecipe 16:Dockerfile.armhf\n\
             entry 5:a b\nc 4:file 64:{x}\nentry 1:d 3:dir 0:\nentry 3:d/l 7:symlink 8:../a b\nc\narg 1:V 1:1\n"
        );
        assert_eq!(String::from_utf8(encode(&input)).unwrap(), want);
        assert_eq!(content_key(&input), "8fc15218a79c7deb39573a14df7270a85e4c104ca9c4e44b457f50f97c8b1205");
    }

    #[test]
    fn golden_build_record() {
        let mut f = Fixture::new();
        f.build = Some(armv7());
        let text = String::from_utf8(encode(&KeyInput {
            platform: &f.platform,
            build_platform: f.build.as_ref(),
            recipe: &f.recipe,
            entries: &[],
            build_args: &BTreeMap::new(),
            parents: &BTreeMap::new(),
            bases: &BTreeMap::new(),
            stamp: &Stamp::default(),
        }))
        .unwrap();
        assert_eq!(
            text,
            "archfarm-key v1\nplatform 5:linux 5:amd64 0:\nbuild 5:linux 3:arm 2:v7\nrecipe 10:Dockerfile\n"
        );
    }

    #[test]
    fn golden_keys() {
        assert_eq!(Fixture::new().key(), "d33baa59c7d99f835563e749c195701d5a6af174d0f2253759f9f35eb98d7873");
        let children = vec![(armv7(), "c".repeat(64)), (amd64(), "d".repeat(64))];
        let reversed: Vec<_> = children.iter().rev().cloned().collect();
        let none = BTreeMap::new();
        assert_eq!(index_key(&children, &none), index_key(&reversed, &none));
        assert_eq!(index_key(&children, &none), "fac8eec20e078a915f8c420cddeb9fc133e81e18d6de36167de98942c85da2d1");
        assert_eq!(
            String::from_utf8(encode_index(&children, &none)).unwrap(),
            format!(
                "archfarm-index v1\nchild 11:linux/amd64 64:{}\nchild 12:linux/arm/v7 64:{}\n",
                "d".repeat(64),
                "c".repeat(64)
            )
        );
    }

    /// `SOURCE_DATE_EPOCH` and manifest annotations: records only when set, after the
    /// bases; an annotated index gains records after its children.
    #[test]
    fn golden_stamp_records() {
        let platform = amd64();
        let none = BTreeMap::new();
        let stamp = Stamp {
            epoch: Some(1_700_000_000),
            annotations: map(&[("org.opencontainers.image.created", "2023-11-14T22:13:20Z"), ("com.example.a", "x y")]),
        };
        let input = KeyInput {
            platform: &platform,
            build_platform: None,
            recipe: "image.yaml",
            entries: &[],
            build_args: &none,
            parents: &none,
            bases: &map(&[("apt:bash", "sha256:00")]),
            stamp: &stamp,
        };
        assert_eq!(
            String::from_utf8(encode(&input)).unwrap(),
            "archfarm-key v1\nplatform 5:linux 5:amd64 0:\nrecipe 10:image.yaml\nbase 8:apt:bash 9:sha256:00\n\
             epoch 10:1700000000\nannotation 13:com.example.a 3:x y\n\
             annotation 32:org.opencontainers.image.created 20:2023-11-14T22:13:20Z\n"
        );
        assert_eq!(content_key(&input), "0c497869815e45531060367297429bd54a688e41c7548c0aefc05c8872a6c78a");
        let children = vec![(amd64(), "d".repeat(64))];
        let index = map(&[("org.opencontainers.image.revision", "abc")]);
        assert_eq!(
            String::from_utf8(encode_index(&children, &index)).unwrap(),
            format!(
                "archfarm-index v1\nchild 11:linux/amd64 64:{}\nannotation 33:org.opencontainers.image.revision 3:abc\n",
                "d".repeat(64)
            )
        );
        assert_eq!(index_key(&children, &index), "0b3ddc475ccc1576dfebc88fbcb16d1caef9296a9d3f61e5937d5bdcfa90d86b");
        assert_ne!(index_key(&children, &index), index_key(&children, &none));
    }

    #[test]
    fn every_dimension_changes_the_key() {
        let base = Fixture::new().key();
        type Change = Box<dyn Fn(&mut Fixture)>;
        let mut changes: Vec<(&str, Change)> = vec![
            ("platform", Box::new(|f| f.platform = armv7())),
            ("variant", Box::new(|f| f.platform.variant = Some("v2".into()))),
            ("recipe", Box::new(|f| f.recipe = "Dockerfile.x86_64".into())),
            ("content", Box::new(|f| f.entries[0] = file("Dockerfile", b"FROM other\n", false))),
            (
                "exec bit",
                Box::new(|f| f.entries[0] = file("Dockerfile", b"FROM gvisor.dev/images/basic/alpine\n", true)),
            ),
            ("rename", Box::new(|f| f.entries[2].path = "bin/run_me.sh".into())),
            ("symlink", Box::new(|f| f.entries[3].kind = EntryKind::Symlink { target: "bin".into() })),
            ("build arg", Box::new(|f| f.args.insert("VERSION".into(), "1.2.4".into()).map(drop).unwrap_or(()))),
            ("new arg", Box::new(|f| drop(f.args.insert("X".into(), String::new())))),
            ("parent key", Box::new(|f| drop(f.parents.insert("basic/alpine".into(), "e".repeat(64))))),
            ("base digest", Box::new(|f| drop(f.bases.insert("ubuntu:22.04".into(), "sha256:00".into())))),
            ("empty dir", Box::new(|f| f.entries.push(ContextEntry { path: "zzz".into(), kind: EntryKind::Dir }))),
            ("file to link", Box::new(|f| f.entries[0].kind = EntryKind::Symlink { target: "x".into() })),
            ("build platform", Box::new(|f| f.build = Some(amd64()))),
            ("other build platform", Box::new(|f| f.build = Some(armv7()))),
            ("epoch", Box::new(|f| f.stamp.epoch = Some(1_700_000_000))),
            ("epoch 0", Box::new(|f| f.stamp.epoch = Some(0))),
            ("annotation", Box::new(|f| drop(f.stamp.annotations.insert("com.example.a".into(), "1".into())))),
            ("annotation value", Box::new(|f| drop(f.stamp.annotations.insert("com.example.a".into(), "2".into())))),
            (
                "parent for another platform",
                Box::new(|f| {
                    let k = f.parents.remove("basic/alpine").unwrap();
                    f.parents.insert("basic/alpine for linux/amd64".into(), k);
                }),
            ),
        ];
        let mut seen = std::collections::BTreeSet::new();
        seen.insert(base.clone());
        for (what, change) in changes.drain(..) {
            let mut f = Fixture::new();
            change(&mut f);
            let k = f.key();
            assert_ne!(k, base, "{what} must change the key");
            assert!(seen.insert(k), "{what} collides with another change");
        }
    }

    #[test]
    fn size_order_folder_and_mtime_do_not_matter() {
        let base = Fixture::new().key();
        let mut f = Fixture::new();
        f.entries.reverse();
        assert_eq!(f.key(), base, "entries are sorted before encoding");
        // The size is implied by the content hash; the folder path and mtimes are not inputs.
        let mut bumped = 0;
        for e in &mut f.entries {
            if let EntryKind::File { size, .. } = &mut e.kind {
                *size += 1;
                bumped += 1;
            }
        }
        assert_eq!(bumped, 2);
        assert_eq!(f.key(), base);
    }

    #[test]
    fn keys_of_scanned_copies_match() {
        // The same tree in two folders, with different mtimes, keys the same.
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::write(d.join("Dockerfile"), "FROM scratch\n").unwrap();
            std::fs::create_dir(d.join("empty")).unwrap();
        }
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        std::fs::File::options().write(true).open(b.path().join("Dockerfile")).unwrap().set_modified(old).unwrap();
        let key = |d: &std::path::Path| {
            let c = crate::recipe::scan::scan(d, crate::recipe::scan::Links::InsideFolder, None).unwrap();
            let none = BTreeMap::new();
            content_key(&KeyInput {
                platform: &amd64(),
                build_platform: None,
                recipe: "Dockerfile",
                entries: &c.entries,
                build_args: &none,
                parents: &none,
                bases: &none,
                stamp: &Stamp::default(),
            })
        };
        assert_eq!(key(a.path()), key(b.path()));
    }
}
