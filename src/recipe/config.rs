//! Configuration: an optional `archfarm.yaml` at the repository root, an embedded
//! default (so nothing has to be written first), and environment overrides.
//! Precedence, lowest first: embedded default, archfarm.yaml, environment, flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::image::platform::{ArchTable, Platform};
use crate::image::reference::{self, is_loopback, Reference};
use crate::recipe::annotations::{self, Annotations, ImageAnnotations};
use crate::support::error::{Error, Result};

/// The embedded default: publishes to the loopback registry that `ci/services.sh` starts.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.yaml");

/// archfarm.yaml as written. Unknown fields are errors: a typo is never silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    images_dir: Option<PathBuf>,
    registry: Option<String>,
    #[serde(default)]
    insecure_registries: Vec<String>,
    local_prefix: Option<String>,
    platforms: Option<Vec<String>>,
    jobs: Option<usize>,
    store: Option<PathBuf>,
    arch_dir: Option<PathBuf>,
    #[serde(default)]
    images: BTreeMap<String, RawImage>,
    /// The engines to build on (src/recipe/builders.rs); none listed: the engine of DOCKER_HOST.
    #[serde(default)]
    builders: Vec<crate::recipe::builders::RawBuilder>,
    /// Images (or groups) left out of the make targets' `-all-test-images` forms.
    #[serde(default)]
    non_test_images: Vec<String>,
    /// The platform whose builders run `FROM --platform=$BUILDPLATFORM` stages.
    build_platform: Option<String>,
    /// Build secrets for `RUN --mount=type=secret,id=ID`: where each value comes from.
    #[serde(default)]
    secrets: BTreeMap<String, RawSecret>,
    /// Mirrors tried before each registry (`docker.io: [127.0.0.1:5096]`); absent: the
    /// mirrors the local engine reports for Docker Hub.
    registry_mirrors: Option<BTreeMap<String, Vec<String>>>,
    /// How long a resolved base tag is trusted (`90s`, `30m`, `1h`, `2d` or seconds).
    base_ttl: Option<serde_yaml_ng::Value>,
    /// OCI annotations of every image (src/recipe/annotations.rs).
    #[serde(default)]
    annotations: BTreeMap<String, serde_yaml_ng::Value>,
    /// How many run records the store keeps (`runs/`); 0 records none.
    history: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    env: Option<String>,
    file: Option<PathBuf>,
}

/// Where a build secret's value is read from, at build time only: the value itself is
/// never part of the configuration, a key, a log or the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl SecretSource {
    /// Whether the value can be read now (the variable is set, the file exists).
    pub fn available(&self) -> bool {
        match self {
            SecretSource::Env(v) => std::env::var_os(v).is_some(),
            SecretSource::File(p) => p.is_file(),
        }
    }

    /// Where the value comes from, for messages (`environment variable TOKEN`).
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(v) => format!("environment variable {v}"),
            SecretSource::File(p) => format!("file {}", p.display()),
        }
    }

    /// Reads the value (at build time).
    pub fn read(&self) -> Result<crate::support::secret::Secret> {
        match self {
            SecretSource::Env(v) => std::env::var(v)
                .map(crate::support::secret::Secret::new)
                .map_err(|_| Error::usage(format!("build secret: environment variable {v} is not set"))),
            SecretSource::File(p) => std::fs::read_to_string(p)
                .map(crate::support::secret::Secret::new)
                .map_err(|e| Error::usage(format!("build secret: cannot read {}: {e}", p.display()))),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    platforms: Option<Vec<String>>,
    #[serde(default)]
    build_args: BTreeMap<String, String>,
    /// `false`: always the classic builder for this image.
    buildkit: Option<bool>,
    /// Build this stage of the Dockerfile (`docker build --target`).
    target: Option<String>,
    /// OCI annotations of this image, over the global ones key by key.
    #[serde(default)]
    annotations: BTreeMap<String, serde_yaml_ng::Value>,
}

/// Where images are published: `host[:port]/namespace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    pub host: String,
    pub namespace: String,
    /// Plain HTTP / unverified TLS allowed: loopback hosts, or listed as insecure.
    pub insecure: bool,
}

impl RegistryRef {
    /// Parses `host[:port][/namespace]` ([`reference::parse_registry`]: the host and path
    /// rules of a reference, and the host must look like one, as Docker requires, so
    /// `myname/images` is not mistaken for a host). Surrounding blanks, an `http://` or
    /// `https://` and a trailing `/` are dropped: the engine writes mirrors as URLs.
    pub fn parse(text: &str, insecure_hosts: &[String]) -> Result<Self> {
        let text = text.trim().trim_end_matches('/');
        let text = text.strip_prefix("http://").or_else(|| text.strip_prefix("https://")).unwrap_or(text);
        let (host, namespace) = reference::parse_registry(text)?;
        Ok(RegistryRef { insecure: is_insecure(&host, insecure_hosts), host, namespace })
    }

    /// The registry whose API serves `r` (`registry-1.docker.io` for Docker Hub), at the
    /// top of its namespace.
    pub fn serving(r: &Reference, insecure_hosts: &[String]) -> Self {
        let host = r.api_host().to_string();
        RegistryRef { insecure: is_insecure(&host, insecure_hosts), host, namespace: String::new() }
    }

    /// The repository path of an image: `namespace/image`.
    pub fn repository(&self, image: &str) -> String {
        if self.namespace.is_empty() {
            image.to_string()
        } else {
            format!("{}/{image}", self.namespace)
        }
    }

    /// A full reference: `host/namespace/image:tag`.
    pub fn reference(&self, image: &str, tag: &str) -> String {
        format!("{}/{}:{tag}", self.host, self.repository(image))
    }
}

/// Plain HTTP / unverified TLS: loopback hosts (as Docker allows) and the listed ones.
fn is_insecure(host: &str, insecure_hosts: &[String]) -> bool {
    is_loopback(host) || insecure_hosts.iter().any(|h| h == host)
}

/// Per-image settings.
#[derive(Debug, Clone, Default)]
pub struct ImageSettings {
    /// Narrows the image's platforms; `None` keeps what its recipes give.
    pub platforms: Option<Vec<Platform>>,
    pub build_args: BTreeMap<String, String>,
    /// `Some(false)`: never BuildKit for this image.
    pub buildkit: Option<bool>,
    /// The Dockerfile stage to build.
    pub target: Option<String>,
    /// `images.<name>.annotations`.
    pub annotations: Annotations,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The repository root: the folder holding archfarm.yaml (or the current folder).
    pub root: PathBuf,
    pub images_dir: PathBuf,
    pub registry: RegistryRef,
    pub local_prefix: String,
    pub platforms: Vec<Platform>,
    pub jobs: usize,
    pub store: PathBuf,
    pub arches: ArchTable,
    pub images: BTreeMap<String, ImageSettings>,
    /// The configured builders; empty means the single `local` builder.
    pub builders: Vec<crate::recipe::builders::BuilderSpec>,
    /// Images (or groups) that are not test images (gVisor's NON_TEST_IMAGES).
    pub non_test_images: Vec<String>,
    /// Where the configuration came from, for messages.
    pub source: String,
    /// Hosts other than loopback allowed plain HTTP / unverified TLS.
    pub insecure_registries: Vec<String>,
    /// The platform whose builders run cross stages (`FROM --platform=$BUILDPLATFORM`)
    /// of recipes that read BUILD* args; it enters their keys.
    pub build_platform: Platform,
    /// Declared build secrets by id.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Mirror hosts per registry (`docker.io`, `ghcr.io`...), tried in order before it;
    /// `None`: ask the local engine for its Docker Hub mirrors when a lookup needs them.
    pub registry_mirrors: Option<BTreeMap<String, Vec<String>>>,
    /// How long a resolved base tag is trusted before it is asked again.
    pub base_ttl: std::time::Duration,
    /// The global `annotations:`.
    pub annotations: Annotations,
    /// `SOURCE_DATE_EPOCH`: the time builds stamp instead of the epoch (in every key).
    pub source_date_epoch: Option<u64>,
    /// `history:`: how many run records the store keeps; 0 records none.
    pub history: usize,
}

/// The default of `history`.
pub const DEFAULT_HISTORY: usize = 200;

/// The default of `base_ttl`.
pub const DEFAULT_BASE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Parses a duration as archfarm.yaml writes it: `90s`, `30m`, `1h`, `2d`, or plain seconds.
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let scale = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        u => return Err(format!("'{text}': unknown unit '{u}' (use s, m, h or d, e.g. 30m)")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("'{text}' is not a duration (e.g. 90s, 30m, 1h, 2d)"))?;
    n.checked_mul(scale).map(std::time::Duration::from_secs).ok_or_else(|| format!("'{text}' is too long"))
}

/// What the command line and environment can override. Relative paths among them are
/// relative to the working directory (the folder given to [`Config::load`]), not to the
/// configuration file's folder, which only paths written in the file are relative to.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub images_dir: Option<PathBuf>,
    pub registry: Option<String>,
    pub local_prefix: Option<String>,
    pub store: Option<PathBuf>,
    /// `registry` came from `ARCHFARM_REGISTRY`, not `--registry` (for messages).
    pub registry_from_env: bool,
    /// `SOURCE_DATE_EPOCH`, parsed (`support::env`).
    pub source_date_epoch: Option<u64>,
}

impl Overrides {
    /// Fills in what the environment says, where the command line said nothing.
    pub fn with_env(mut self) -> Self {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if self.registry.is_none() {
            self.registry = env("ARCHFARM_REGISTRY");
            self.registry_from_env = self.registry.is_some();
        }
        self.local_prefix = self.local_prefix.or_else(|| env("ARCHFARM_LOCAL_PREFIX"));
        self.store = self.store.or_else(|| env("ARCHFARM_STORE").map(PathBuf::from));
        self.config_file = self.config_file.or_else(|| env("ARCHFARM_CONFIG").map(PathBuf::from));
        self.source_date_epoch = self.source_date_epoch.or_else(crate::support::env::source_date_epoch);
        self
    }
}

impl Config {
    /// Loads the configuration for the repository at `cwd` (the current folder for the
    /// CLI): `cwd`/archfarm.yaml, or the file the overrides name. Relative paths in the
    /// file are relative to the file's folder; relative paths among the overrides (flags
    /// and environment) to `cwd`.
    pub fn load(cwd: &Path, overrides: &Overrides) -> Result<Config> {
        let default: RawConfig = serde_yaml_ng::from_str(DEFAULT_CONFIG).expect("embedded default config is valid");
        let (raw, source, root) = match &overrides.config_file {
            Some(file) => {
                let file = cwd.join(file);
                let file_root = file.parent().unwrap_or(cwd).to_path_buf();
                (read_raw(&file)?, file.display().to_string(), file_root)
            }
            None => {
                let file = cwd.join("archfarm.yaml");
                if file.is_file() {
                    (read_raw(&file)?, file.display().to_string(), cwd.to_path_buf())
                } else {
                    (RawConfig::default(), "embedded default configuration".to_string(), cwd.to_path_buf())
                }
            }
        };
        Self::resolve(default, raw, &source, &root, cwd, overrides)
    }

    fn resolve(
        default: RawConfig,
        raw: RawConfig,
        source: &str,
        root: &Path,
        cwd: &Path,
        o: &Overrides,
    ) -> Result<Config> {
        let field_err = |field: &str, msg: String| Error::usage(format!("{source}: field '{field}': {msg}"));

        let mut arches = ArchTable::builtin();
        if let Some(dir) = &raw.arch_dir {
            arches.merge_dir(&root.join(dir)).map_err(|e| field_err("arch_dir", e.message().to_string()))?;
        }

        // A flag's path is relative to where the command runs, the file's to the file.
        let images_dir = match o.images_dir.clone() {
            Some(flag) => cwd.join(flag),
            None => root.join(raw.images_dir.or(default.images_dir).expect("default has images_dir")),
        };

        let insecure: Vec<String> =
            raw.insecure_registries.iter().chain(&default.insecure_registries).cloned().collect();
        let registry = match &o.registry {
            Some(r) => RegistryRef::parse(r, &insecure).map_err(|e| {
                let from = if o.registry_from_env { "environment variable ARCHFARM_REGISTRY" } else { "--registry" };
                Error::usage(format!("{from}: {}", e.message()))
            })?,
            None => {
                let text = raw.registry.or(default.registry).expect("default has registry");
                RegistryRef::parse(&text, &insecure).map_err(|e| field_err("registry", e.message().to_string()))?
            }
        };

        let local_prefix =
            o.local_prefix.clone().or(raw.local_prefix).or(default.local_prefix).expect("default has local_prefix");
        let local_prefix = local_prefix.trim_end_matches('/').to_string();
        // Local names are `<prefix>/<image>:<key>`: the prefix is what a reference allows there.
        let checked = match local_prefix.as_str() {
            "" => Err("it is empty".to_string()),
            p => Reference::parse(&format!("{p}/x")).map(drop).map_err(|e| e.message().to_string()),
        };
        if let Err(e) = checked {
            let why = format!("'{local_prefix}' is not a valid image name prefix (e.g. gvisor.dev/images): {e}");
            return Err(match o.local_prefix {
                Some(_) => Error::usage(format!("environment variable ARCHFARM_LOCAL_PREFIX: {why}")),
                None => field_err("local_prefix", why),
            });
        }

        let parse_platforms = |field: &str, list: &[String]| -> Result<Vec<Platform>> {
            let mut out = Vec::new();
            for p in list {
                let p = arches.parse_platform(p).map_err(|e| field_err(field, e.message().to_string()))?;
                if !out.contains(&p) {
                    out.push(p);
                }
            }
            if out.is_empty() {
                return Err(field_err(field, "the list is empty; name at least one platform".into()));
            }
            Ok(out)
        };
        let platforms =
            parse_platforms("platforms", &raw.platforms.or(default.platforms).expect("default has platforms"))?;

        let jobs = raw.jobs.or(default.jobs).expect("default has jobs");
        if jobs == 0 {
            return Err(field_err("jobs", "must be at least 1".into()));
        }

        let store = match (o.store.clone(), raw.store) {
            (Some(flag), _) => cwd.join(flag),
            (None, Some(p)) => root.join(p),
            (None, None) => default_store_dir(),
        };

        // `{env: VARIABLE}` values are read once, here, like every other setting.
        let read_env = |v: &str| std::env::var(v).ok();
        let annotations_of = |field: &str, raw: &BTreeMap<String, serde_yaml_ng::Value>| {
            annotations::parse(raw, &read_env).map_err(|(key, why)| field_err(&format!("{field}.{key}"), why))
        };
        let global_annotations = annotations_of("annotations", &raw.annotations)?;

        let mut images = BTreeMap::new();
        for (name, img) in raw.images {
            let field = format!("images.{name}.platforms");
            let platforms = img.platforms.as_deref().map(|l| parse_platforms(&field, l)).transpose()?;
            for arg in img.build_args.keys() {
                if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(field_err(
                        &format!("images.{name}.build_args"),
                        format!("'{arg}' is not a valid build argument name"),
                    ));
                }
            }
            if img.target.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err(field_err(
                    &format!("images.{name}.target"),
                    "empty; name a stage of the Dockerfile".into(),
                ));
            }
            let annotations = annotations_of(&format!("images.{name}.annotations"), &img.annotations)?;
            images.insert(
                name,
                ImageSettings {
                    platforms,
                    build_args: img.build_args,
                    buildkit: img.buildkit,
                    target: img.target,
                    annotations,
                },
            );
        }

        let build_platform = match &raw.build_platform {
            Some(p) => arches.parse_platform(p).map_err(|e| field_err("build_platform", e.message().to_string()))?,
            None => platforms[0].clone(),
        };

        let mut secrets = BTreeMap::new();
        for (id, raw) in raw.secrets {
            let field = format!("secrets.{id}");
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                return Err(field_err(&field, "a secret id is letters, digits and . _ -".into()));
            }
            let source = match (raw.env, raw.file) {
                (Some(v), None) if !v.is_empty() => SecretSource::Env(v),
                (None, Some(f)) => SecretSource::File(if f.is_absolute() { f } else { root.join(f) }),
                _ => return Err(field_err(&field, "give exactly one of env: VARIABLE or file: PATH".into())),
            };
            secrets.insert(id, source);
        }

        let builders = crate::recipe::builders::parse_builders(raw.builders, &arches, root, source)?;

        let base_ttl = match &raw.base_ttl {
            None => DEFAULT_BASE_TTL,
            Some(serde_yaml_ng::Value::Number(n)) => match n.as_u64() {
                Some(secs) => std::time::Duration::from_secs(secs),
                None => return Err(field_err("base_ttl", format!("{n} is not a whole number of seconds"))),
            },
            Some(serde_yaml_ng::Value::String(s)) => parse_duration(s).map_err(|e| field_err("base_ttl", e))?,
            Some(_) => return Err(field_err("base_ttl", "expected a duration such as 1h, 30m, 90s or 2d".into())),
        };
        let registry_mirrors = match raw.registry_mirrors {
            None => None,
            Some(map) => {
                let mut out = BTreeMap::new();
                for (registry, mirrors) in map {
                    let field = format!("registry_mirrors.{registry}");
                    // The key is a registry as references name it (`index.docker.io` is `docker.io`).
                    let key = match reference::parse_registry(&registry) {
                        Ok((host, namespace)) if namespace.is_empty() => {
                            reference::canonical_registry(&host).to_string()
                        }
                        Ok(_) => {
                            let why = format!("'{registry}' has a namespace; a mirrored registry is host[:port]");
                            return Err(field_err(&field, why));
                        }
                        Err(e) => return Err(field_err(&field, e.message().to_string())),
                    };
                    for m in &mirrors {
                        RegistryRef::parse(m, &insecure).map_err(|e| field_err(&field, e.message().to_string()))?;
                    }
                    out.insert(key, mirrors);
                }
                Some(out)
            }
        };

        Ok(Config {
            root: root.to_path_buf(),
            images_dir,
            registry,
            local_prefix,
            platforms,
            jobs,
            store,
            arches,
            images,
            builders,
            non_test_images: raw.non_test_images,
            source: source.to_string(),
            insecure_registries: insecure,
            build_platform,
            secrets,
            registry_mirrors,
            base_ttl,
            annotations: global_annotations,
            source_date_epoch: o.source_date_epoch,
            history: raw.history.unwrap_or(DEFAULT_HISTORY),
        })
    }

    /// What `image`'s manifests and canonical index carry: its annotations over the
    /// global ones, and `created` from `SOURCE_DATE_EPOCH`.
    pub fn annotations_for(&self, image: &str) -> ImageAnnotations {
        let own = self.images.get(image).map(|s| &s.annotations);
        annotations::for_image(&self.annotations, own.unwrap_or(&Annotations::new()), self.source_date_epoch)
    }

    /// The local engine name of an image: `<local prefix>/<image>`.
    pub fn local_name(&self, image: &str) -> String {
        format!("{}/{image}", self.local_prefix)
    }

    pub fn image_settings(&self, image: &str) -> ImageSettings {
        self.images.get(image).cloned().unwrap_or_default()
    }
}

fn read_raw(file: &Path) -> Result<RawConfig> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::usage(format!("cannot read configuration file {}: {e}", file.display())))?;
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    serde_yaml_ng::from_str(&text).map_err(|e| Error::usage(format!("{}: {e}", file.display())))
}

/// `$XDG_CACHE_HOME/archfarm`, else `~/.cache/archfarm`.
fn default_store_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("archfarm");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/archfarm")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, o: &Overrides) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("archfarm.yaml"), text).unwrap();
        Config::load(dir.path(), o)
    }

    #[test]
    fn embedded_default_needs_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(dir.path(), &Overrides::default()).unwrap();
        assert_eq!(c.registry.host, "127.0.0.1:5000");
        assert!(c.registry.insecure);
        let p: Vec<_> = c.platforms.iter().map(|p| p.to_string()).collect();
        assert_eq!(p, ["linux/amd64", "linux/arm64"]);
        assert_eq!(c.images_dir, dir.path().join("images"));
        assert!(c.source.contains("embedded"));
    }

    #[test]
    fn file_and_overrides_take_precedence() {
        let o = Overrides { registry: Some("reg.example.com:443/team/x".into()), ..Default::default() };
        let c = load_text("local_prefix: gvisor.dev/images\nplatforms: [aarch64]\nimages:\n  a/b: {platforms: [x86_64], build_args: {V: '1'}}\n", &o).unwrap();
        assert_eq!(c.local_prefix, "gvisor.dev/images");
        assert_eq!(c.registry.namespace, "team/x");
        assert!(!c.registry.insecure, "a remote registry is verified TLS unless listed");
        assert_eq!(c.platforms[0].to_string(), "linux/arm64");
        assert_eq!(c.image_settings("a/b").platforms.unwrap()[0].to_string(), "linux/amd64");
        assert_eq!(c.registry.reference("a/b", "t"), "reg.example.com:443/team/x/a/b:t");
    }

    #[test]
    fn typos_and_bad_values_name_the_file_and_field() {
        let e = load_text("platfroms: [amd64]\n", &Overrides::default()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message().contains("archfarm.yaml") && e.message().contains("platfroms"), "{}", e.message());
        let e = load_text("platforms: [linux/mips99]\n", &Overrides::default()).unwrap_err();
        assert!(e.message().contains("field 'platforms'") && e.message().contains("mips99"), "{}", e.message());
        let e = load_text("registry: notahost/ns\n", &Overrides::default()).unwrap_err();
        assert!(e.message().contains("field 'registry'"), "{}", e.message());
        let e = load_text("jobs: 0\n", &Overrides::default()).unwrap_err();
        assert!(e.message().contains("field 'jobs'"), "{}", e.message());
        let e = load_text("images:\n  x: {platfoms: [amd64]}\n", &Overrides::default()).unwrap_err();
        assert!(e.message().contains("platfoms"), "{}", e.message());
        let e = load_text("secrets:\n  tok: {env: A, file: b}\n", &Overrides::default()).unwrap_err();
        assert!(e.message().contains("field 'secrets.tok'"), "{}", e.message());
        let e = load_text("build_platform: mips\n", &Overrides::default()).unwrap_err();
        assert!(e.message().contains("field 'build_platform'"), "{}", e.message());
        let e = load_text("images:\n  x: {target: ''}\n", &Overrides::default()).unwrap_err();
        assert!(e.message().contains("images.x.target"), "{}", e.message());
    }

    #[test]
    fn secrets_build_platform_and_image_builder_settings() {
        let c = load_text(
            "platforms: [arm64, amd64]\nsecrets:\n  tok: {env: TOKEN}\n  npm: {file: npmrc}\n\
             images:\n  x: {buildkit: false, target: final}\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.build_platform.to_string(), "linux/arm64", "the first platform by default");
        assert_eq!(c.secrets["tok"], SecretSource::Env("TOKEN".into()));
        assert!(matches!(&c.secrets["npm"], SecretSource::File(p) if p.is_absolute()));
        let x = c.image_settings("x");
        assert_eq!((x.buildkit, x.target.as_deref()), (Some(false), Some("final")));
    }

    #[test]
    fn annotations_are_checked_and_name_their_field() {
        std::env::set_var("ARCHFARM_TEST_CONFIG_SHA", "abc");
        let c = load_text(
            "annotations:\n  org.opencontainers.image.source: https://example.com/x\n  \
             org.opencontainers.image.revision: {env: ARCHFARM_TEST_CONFIG_SHA}\n\
             images:\n  web:\n    annotations: {org.opencontainers.image.title: Web}\n",
            &Overrides { source_date_epoch: Some(0), ..Default::default() },
        )
        .unwrap();
        let web = c.annotations_for("web");
        assert_eq!(
            web.manifest.keys().collect::<Vec<_>>(),
            ["org.opencontainers.image.created", "org.opencontainers.image.source", "org.opencontainers.image.title"]
        );
        assert_eq!(web.index["org.opencontainers.image.revision"], "abc");
        assert_eq!(web.index["org.opencontainers.image.created"], "1970-01-01T00:00:00Z");
        assert!(!c.annotations_for("other").index.contains_key("org.opencontainers.image.title"));
        for (text, field) in [
            ("annotations: {source: x}\n", "field 'annotations.source'"),
            ("annotations: {org.opencontainers.image.created: x}\n", "SOURCE_DATE_EPOCH"),
            ("images:\n  web: {annotations: {com.example.v: 1.0}}\n", "field 'images.web.annotations.com.example.v'"),
            ("images:\n  web: {annotationz: {}}\n", "annotationz"),
            ("annotations: [a]\n", "annotations"),
        ] {
            let e = load_text(text, &Overrides::default()).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.message().contains("archfarm.yaml") && e.message().contains(field), "{text}: {}", e.message());
        }
    }

    #[test]
    fn base_ttl_and_mirrors() {
        let c = load_text("", &Overrides::default()).unwrap();
        assert_eq!(c.base_ttl, DEFAULT_BASE_TTL);
        assert!(c.registry_mirrors.is_none(), "absent: ask the engine");
        let c =
            load_text("base_ttl: 90\nregistry_mirrors: {index.docker.io: ['127.0.0.1:5096']}\n", &Overrides::default())
                .unwrap();
        assert_eq!(c.base_ttl.as_secs(), 90);
        assert_eq!(c.registry_mirrors.unwrap()["docker.io"], ["127.0.0.1:5096"]);
        for bad in ["base_ttl: 1w\n", "base_ttl: -3\n", "base_ttl: [1]\n", "base_ttl: soon\n"] {
            let e = load_text(bad, &Overrides::default()).unwrap_err();
            assert!(e.message().contains("field 'base_ttl'"), "{bad}: {}", e.message());
        }
        let e = load_text("registry_mirrors: {docker.io: ['not a host']}\n", &Overrides::default()).unwrap_err();
        assert!(e.message().contains("registry_mirrors.docker.io"), "{}", e.message());
    }

    #[test]
    fn flag_paths_are_relative_to_the_working_directory_file_paths_to_the_file() {
        let cwd = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(cwd.path().join("other")).unwrap();
        std::fs::write(cwd.path().join("other/x.yaml"), "images_dir: imgs\nstore: st\n").unwrap();
        let from_file = Overrides { config_file: Some("other/x.yaml".into()), ..Default::default() };
        let c = Config::load(cwd.path(), &from_file).unwrap();
        assert_eq!(c.images_dir, cwd.path().join("other/imgs"));
        assert_eq!(c.store, cwd.path().join("other/st"));
        let flags = Overrides { images_dir: Some("tree/images".into()), store: Some("s".into()), ..from_file };
        let c = Config::load(cwd.path(), &flags).unwrap();
        assert_eq!(c.images_dir, cwd.path().join("tree/images"));
        assert_eq!(c.store, cwd.path().join("s"));
        let absolute = Overrides { images_dir: Some("/abs/images".into()), ..Default::default() };
        assert_eq!(Config::load(cwd.path(), &absolute).unwrap().images_dir, PathBuf::from("/abs/images"));
    }

    #[test]
    fn registries_with_impossible_ports_name_where_they_came_from() {
        for (text, ok) in [("host:99999/ns", false), ("h.example:0", false), ("u@h.example/ns", false)] {
            assert_eq!(RegistryRef::parse(text, &[]).is_ok(), ok, "{text}");
        }
        for text in ["127.0.0.1:5000/ns", "[::1]:5000", "localhost", "reg.example.com:443/a/b"] {
            assert!(RegistryRef::parse(text, &[]).is_ok(), "{text}");
        }
        let flag = Overrides { registry: Some("host:99999/ns".into()), ..Default::default() };
        let e = load_text("", &flag).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message().starts_with("--registry: ") && e.message().contains("99999"), "{}", e.message());
        let env = Overrides { registry_from_env: true, ..flag };
        assert!(load_text("", &env).unwrap_err().message().contains("ARCHFARM_REGISTRY"));
        let e = load_text("registry: host:99999/ns\n", &Overrides::default()).unwrap_err();
        assert!(e.message().contains("field 'registry'"), "{}", e.message());
    }

    #[test]
    fn registry_settings_refuse_what_a_reference_refuses() {
        // Accepted before the registry setting parsed through `reference`.
        for text in [
            ":/0",
            "./a",
            "h.example:/ns",
            "[::1]:",
            "a_b.example/ns",
            "host:port/x",
            "h.example/ns@",
            "h.io/ns@sha256:1",
        ] {
            let e = RegistryRef::parse(text, &[]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{text}");
            assert!(e.message().contains(&format!("invalid registry '{text}'")), "{text}: {}", e.message());
        }
        let e = RegistryRef::parse("host:port/x", &[]).unwrap_err();
        assert!(e.message().contains("port 'port' is not a number"), "{}", e.message());
        let e = RegistryRef::parse("h.io/Team", &[]).unwrap_err();
        assert!(e.message().contains("namespace component 'Team' has uppercase"), "{}", e.message());
        let r = RegistryRef::parse(" https://reg.example.com:443/team/ ", &["reg.example.com:443".into()]).unwrap();
        assert_eq!((r.host.as_str(), r.namespace.as_str(), r.insecure), ("reg.example.com:443", "team", true));
        let e = load_text("registry_mirrors: {h.io/ns: ['127.0.0.1:5096']}\n", &Overrides::default()).unwrap_err();
        assert!(e.message().contains("registry_mirrors.h.io/ns") && e.message().contains("has a namespace"));
        let e = load_text("registry_mirrors: {busybox: ['127.0.0.1:5096']}\n", &Overrides::default()).unwrap_err();
        assert!(
            e.message().contains("registry_mirrors.busybox") && e.message().contains("not a registry host"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn local_prefixes_are_reference_prefixes() {
        for ok in ["gvisor.dev/images", "archfarm", "localhost:5000/a/b", "gvisor.dev/images/"] {
            load_text(&format!("local_prefix: '{ok}'\n"), &Overrides::default())
                .unwrap_or_else(|e| panic!("{ok}: {}", e.message()));
        }
        // The first component went unchecked before.
        for (bad, says) in [
            ("Upper/images", "uppercase"),
            ("h.io:99999/x", "out of range"),
            ("./a", "not a host name"),
            ("a//b", "empty path"),
        ] {
            let e = load_text(&format!("local_prefix: '{bad}'\n"), &Overrides::default()).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(
                e.message().contains("field 'local_prefix'") && e.message().contains(says),
                "{bad}: {}",
                e.message()
            );
        }
        let env = Overrides { local_prefix: Some("Bad/x".into()), ..Default::default() };
        assert!(load_text("", &env).unwrap_err().message().starts_with("environment variable ARCHFARM_LOCAL_PREFIX: "));
    }

    #[test]
    fn the_registry_serving_a_reference() {
        let r = RegistryRef::serving(&Reference::parse("busybox").unwrap(), &[]);
        assert_eq!((r.host.as_str(), r.namespace.as_str(), r.insecure), ("registry-1.docker.io", "", false));
        let r = RegistryRef::serving(&Reference::parse("127.0.0.1:5000/a/b:t").unwrap(), &[]);
        assert_eq!((r.host.as_str(), r.insecure), ("127.0.0.1:5000", true));
        let listed = ["reg.lan:5000".to_string()];
        assert!(RegistryRef::serving(&Reference::parse("reg.lan:5000/a").unwrap(), &listed).insecure);
    }

    #[test]
    fn durations() {
        for (t, secs) in [("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172800), ("45", 45), (" 5 m", 300)] {
            assert_eq!(parse_duration(t).unwrap().as_secs(), secs, "{t}");
        }
        for t in ["", "h", "1w", "1.5h", "-1s", "99999999999999999999d"] {
            assert!(parse_duration(t).is_err(), "{t}");
        }
    }

    #[test]
    fn loopback_detection() {
        for h in ["127.0.0.1:5000", "localhost:5000", "localhost", "[::1]:5000", "127.1.2.3"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1:5000", "registry.example.com", "example.com:5000"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    mod properties {
        use super::super::*;
        use crate::image::reference::{self, is_loopback, valid_path_component, Reference};
        use proptest::prelude::*;

        /// Text made of the characters references are made of, in any order.
        fn reference_like() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9:/@._\\[\\]-]{0,40}"
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

            /// The registry setting : any text is a registry or a usage error;
            /// an accepted namespace never climbs out, and `reference` joins the parts.
            #[test]
            fn registry_settings_never_panic(text in prop_oneof![any::<String>(), reference_like()]) {
                match RegistryRef::parse(&text, &[]) {
                    Err(e) => prop_assert_eq!(e.exit_code(), 2),
                    Ok(r) => {
                        prop_assert!(!r.host.is_empty() && !r.host.contains('/'));
                        prop_assert!(r.namespace.is_empty() || r.namespace.split('/').all(valid_path_component));
                        prop_assert_eq!(r.reference("img", "t"), format!("{}/{}:t", r.host, r.repository("img")));
                        let _ = is_loopback(&r.host);
                    }
                }
            }

            /// A registry setting is accepted exactly when an image under it is a
            /// reference that names its registry, and names the same registry.
            #[test]
            fn registry_settings_agree_with_references(text in reference_like()) {
                // The setting's URL and trailing-slash leniency is not a reference's.
                prop_assume!(!text.ends_with('/') && !text.starts_with("http://") && !text.starts_with("https://"));
                let under = format!("{text}/img");
                let as_reference = Reference::parse(&under).ok().filter(|_| reference::names_registry(&under));
                match (RegistryRef::parse(&text, &[]), as_reference) {
                    (Ok(setting), Some(r)) => {
                        prop_assert_eq!(reference::canonical_registry(&setting.host), r.registry.as_str());
                        prop_assert_eq!(Reference::parse(&setting.reference("img", "t")).unwrap().registry, r.registry);
                    }
                    (Err(_), None) => {}
                    (setting, r) => prop_assert!(false, "{text}: setting {setting:?}, reference {r:?}"),
                }
            }
        }
    }
}
