//! A Docker engine (local or remote), through bollard: builds with the classic builder
//! or with BuildKit ([`crate::engine::buildkit`]) from a streamed, verified build context; moves
//! images between the engine and the local store as docker-archives (`docker save` /
//! `docker load`).
//!
//! The API version is negotiated (Debian's dockerd 20.10 speaks 1.41). Nothing here
//! materialises a whole tar in memory: the build context and docker-archives flow
//! through bounded channels between a blocking thread and the HTTP body.

pub mod buildkit;
pub mod request;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    BuildImageOptionsBuilder, ImportImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
    TagImageOptionsBuilder,
};
use bollard::Docker;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use self::buildkit::transport::RawEndpoint;
use self::request::{keep_tail, Backend, BuildRequest, StepFailure, StreamOutcome};
use crate::image::docker_archive::{self, ImportedImage};
use crate::image::platform::Platform;
use crate::image::reference::Reference;
use crate::image::reproducible::Stamp;
use crate::image::store::{Store, StoredImage};
use crate::recipe::context::{Context, EntryKind};
use crate::support::error::{Error, Result};

/// How long to wait for the engine's API to answer before giving up
/// ([`crate::support::env::ENGINE_TIMEOUT`]).
pub fn deadline() -> Duration {
    crate::support::env::ENGINE_TIMEOUT.duration()
}

/// The label that carries an image's content key.
pub const KEY_LABEL: &str = "dev.archfarm.key";

const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// Timeout for quick API calls (inspect, list, tag).
const SHORT_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout until response headers arrive for builds, saves and loads (the body then
/// streams without a limit).
const LONG_TIMEOUT: Duration = Duration::from_secs(3600);
/// Chunk size of the streams into and out of the engine.
const CHUNK: usize = 256 << 10;

/// One Docker engine. Cheap to clone; clones share the connection pool.
#[derive(Clone, Debug)]
pub struct Engine {
    docker: Docker,
    long: Docker,
    endpoint: String,
    /// Where BuildKit builds connect (bollard's transport is private): known for plain
    /// unix and tcp endpoints; TLS ones and ssh bridges must say it
    /// ([`Engine::with_tls_files`], [`Engine::with_raw_endpoint`]).
    raw: Option<RawEndpoint>,
}

/// Why a build failed, which decides whether another engine should try it.
#[derive(Debug)]
pub enum BuildFailure {
    /// The engine ran the recipe and reported an error (a RUN step failed, a file is
    /// missing): the recipe's fault, the same on any engine (unless the step ran under
    /// an emulator that crashed: the caller judges that from the step and its output).
    Recipe(StepFailure),
    /// The engine or the connection to it failed (refused, reset, a stream that ended
    /// without a result): another engine may succeed.
    Engine(Error),
    /// Something on this machine failed (the context changed, the log could not be written).
    Local(Error),
}

impl BuildFailure {
    pub fn into_error(self) -> Error {
        match self {
            BuildFailure::Recipe(f) => f.error,
            BuildFailure::Engine(e) | BuildFailure::Local(e) => e,
        }
    }
}

/// How often a build is tried when the engine loses an image during its cache lookup.
const LOST_CACHE_ATTEMPTS: u32 = 3;
/// The classic builder's error when an image it listed as a cache candidate is removed
/// before it reads it (dockerd's `getLocalCachedImage`): any concurrent `docker rmi` or
/// prune of an unrelated image can cause it, so the build is simply run again.
const LOST_CACHED_IMAGE: &str = "unable to find image \"sha256:";

/// Whether API version `v` (`1.41`) is at least `min`.
fn api_at_least(v: &str, min: (u32, u32)) -> bool {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= min
}

/// The outcome of one failed build attempt.
enum Attempt {
    LostCachedImage(String),
    Failed(BuildFailure),
}

impl From<BuildFailure> for Attempt {
    fn from(f: BuildFailure) -> Attempt {
        Attempt::Failed(f)
    }
}

impl Engine {
    /// The local engine: `DOCKER_HOST` if set, else `unix:///var/run/docker.sock`.
    pub async fn connect(deadline: Duration) -> Result<Engine> {
        let endpoint = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        Self::connect_to(&endpoint, deadline).await
    }

    /// The engine at `endpoint` (`unix:///path`, `/path`, `tcp://host:port`,
    /// `http://host:port`), waiting up to `deadline` for it to answer a ping.
    pub async fn connect_to(endpoint: &str, deadline: Duration) -> Result<Engine> {
        let engine = Self::connect_client(client_for(endpoint)?, endpoint, deadline).await.map_err(|e| {
            Error::failure(format!(
                "{}; start it (ci/services.sh starts dockerd) or point DOCKER_HOST at a running engine",
                e.message()
            ))
        })?;
        Ok(Engine { raw: RawEndpoint::parse(endpoint), ..engine })
    }

    /// The same engine, with BuildKit builds sent to `address` (`unix:///path` or
    /// `tcp://host:port`, no TLS): for an engine connected with
    /// [`connect_client`](Self::connect_client) through an ssh bridge's socket or a
    /// plain client.
    pub fn with_raw_endpoint(self, address: &str) -> Result<Engine> {
        let raw = RawEndpoint::parse(address).ok_or_else(|| {
            Error::usage(format!("'{address}' is not a unix:///path or tcp://host:port address of {}", self.endpoint))
        })?;
        Ok(Engine { raw: Some(raw), ..self })
    }

    /// The same engine, with BuildKit builds sent over TLS to the `tcp://host:port` it
    /// was connected at, verified against `ca` and presenting `cert`/`key` (the files
    /// given to bollard's `connect_with_ssl`).
    pub fn with_tls_files(self, ca: &Path, cert: &Path, key: &Path) -> Result<Engine> {
        let addr = match RawEndpoint::parse(&self.endpoint) {
            Some(RawEndpoint::Tcp(addr)) => addr,
            _ => return Err(Error::usage(format!("TLS needs a tcp://host:port endpoint, not {}", self.endpoint))),
        };
        let raw = RawEndpoint::tls(&addr, ca, cert, key)?;
        Ok(Engine { raw: Some(raw), ..self })
    }

    /// Whether this engine can run [`Backend::BuildKit`] builds: archfarm knows how to
    /// open a raw connection to it (see [`with_tls_files`](Self::with_tls_files)), and
    /// it is a Linux daemon speaking API 1.39 or newer (dockerd 18.09, the first with
    /// BuildKit built in and not experimental). One `GET /version`. Not the `/_ping`
    /// `Builder-Version` header: dockerd 20.10 here sends none, and where sent it names
    /// the *default* builder, not whether BuildKit exists.
    pub async fn buildkit_available(&self) -> Result<bool> {
        if self.raw.is_none() {
            return Ok(false);
        }
        let v = self.docker.version().await.map_err(|e| self.err("asking for the engine's version".into(), e))?;
        let api = v.api_version.unwrap_or_default();
        let linux = v.os.as_deref().is_some_and(|os| os.eq_ignore_ascii_case("linux"));
        Ok(linux && api_at_least(&api, (1, 39)))
    }

    /// An engine through an already configured client (TLS, a bridged SSH socket),
    /// named `endpoint` in messages, waiting up to `deadline` for it to answer a ping.
    pub async fn connect_client(docker: Docker, endpoint: &str, deadline: Duration) -> Result<Engine> {
        let until = Instant::now() + deadline;
        let mut last_error;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let attempt = async {
                docker.ping().await?;
                docker.clone().negotiate_version().await
            };
            match tokio::time::timeout(left.min(Duration::from_secs(5)), attempt).await {
                Ok(Ok(docker)) => {
                    let long = docker.clone().with_timeout(LONG_TIMEOUT);
                    return Ok(Engine { docker, long, endpoint: endpoint.to_string(), raw: None });
                }
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "no answer".to_string(),
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(Duration::from_millis(200))).await;
        }
        Err(Error::failure(format!(
            "the Docker engine at {endpoint} did not answer within {:.1}s ({last_error})",
            deadline.as_secs_f64()
        )))
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// True if the engine answers a ping within `within`.
    pub async fn answers(&self, within: Duration) -> bool {
        matches!(tokio::time::timeout(within, self.docker.ping()).await, Ok(Ok(_)))
    }

    /// The engine's version (e.g. `20.10.24`) and its machine architecture as it reports
    /// it (`x86_64`, `aarch64`).
    pub async fn version_and_arch(&self) -> Result<(String, String)> {
        let info = self.docker.info().await.map_err(|e| self.err("asking for the engine's info".into(), e))?;
        Ok((info.server_version.unwrap_or_default(), info.architecture.unwrap_or_default()))
    }

    /// The API version in use after negotiation, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    /// The image ID of an image labelled `dev.archfarm.key=<key>`, if the engine has one.
    pub async fn find_by_label(&self, key: &str) -> Result<Option<String>> {
        let filters = HashMap::from([("label", vec![format!("{KEY_LABEL}={key}")])]);
        let images = self
            .docker
            .list_images(Some(ListImagesOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|e| self.err(format!("listing images labelled {KEY_LABEL}={key}"), e))?;
        let mut ids: Vec<String> = images.into_iter().map(|i| i.id).collect();
        ids.sort();
        Ok(ids.into_iter().next())
    }

    /// The content keys of every image the engine holds with a key label, in one request
    /// (where asking per key would be one request per job). The labels are read from the
    /// whole listing: dockerd 20.10 answers a label-filtered list about twice as slowly
    /// (it opens every image's config to filter; measured 119 ms against 63 ms for 355 images).
    pub async fn labelled_keys(&self) -> Result<std::collections::BTreeSet<String>> {
        let images = self
            .docker
            .list_images(None::<bollard::query_parameters::ListImagesOptions>)
            .await
            .map_err(|e| self.err("listing images".to_string(), e))?;
        Ok(images.into_iter().filter_map(|i| i.labels.get(KEY_LABEL).cloned()).collect())
    }

    /// The platform of image `id`; None if the engine does not have it.
    pub async fn image_platform(&self, id: &str) -> Result<Option<Platform>> {
        Ok(self.resolve_image(id).await?.map(|(_, p)| p))
    }

    /// The image ID and platform the engine holds under `reference` (a name, tag or ID).
    pub async fn resolve_image(&self, reference: &str) -> Result<Option<(String, Platform)>> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => {
                let platform = Platform {
                    os: i.os.unwrap_or_else(|| "linux".into()),
                    architecture: i.architecture.unwrap_or_default(),
                    variant: i.variant.filter(|v| !v.is_empty()),
                };
                Ok(Some((i.id.unwrap_or_default(), platform)))
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(self.err(format!("inspecting image {reference}"), e)),
        }
    }

    /// Tags image `id` as `repo:tag`.
    pub async fn tag(&self, id: &str, repo: &str, tag: &str) -> Result<()> {
        let opts = TagImageOptionsBuilder::new().repo(repo).tag(tag).build();
        self.docker.tag_image(id, Some(opts)).await.map_err(|e| self.err(format!("tagging {id} as {repo}:{tag}"), e))
    }

    /// Removes the tag `reference` (`repo:tag`); the image stays if other tags or
    /// children use it. A missing tag is not an error.
    pub async fn remove_tag(&self, reference: &str) -> Result<()> {
        let opts = RemoveImageOptionsBuilder::new().noprune(true).build();
        match self.docker.remove_image(reference, Some(opts), None).await {
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(self.err(format!("removing tag {reference}"), e)),
        }
    }

    /// Builds `req` with its backend; returns the image ID (`sha256:<hex>`).
    pub async fn build(&self, req: BuildRequest<'_>) -> Result<String> {
        self.build_logged(req, "").await.map_err(BuildFailure::into_error)
    }

    /// Like [`build`](Self::build), but writes `preamble` (e.g. why the job was routed
    /// here) at the top of the log, and says whose fault a failure is: the recipe's
    /// (retrying elsewhere would fail the same way), the engine's or its connection's
    /// (another engine may succeed), or a local one (the context changed, a log write,
    /// a request this engine or backend cannot serve). Dropping the future cancels the
    /// build on the engine.
    pub async fn build_logged(&self, req: BuildRequest<'_>, preamble: &str) -> Result<String, BuildFailure> {
        let what = format!(
            "{} for {}",
            req.tags.first().cloned().unwrap_or_else(|| req.context.dir.display().to_string()),
            req.platform
        );
        if req.backend == Backend::Classic && !req.secrets.is_empty() {
            return Err(BuildFailure::Local(Error::usage(format!(
                "building {what}: build secrets ({}) need BuildKit; the classic builder cannot mount them",
                req.secrets.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")
            ))));
        }
        if req.backend == Backend::BuildKit && self.raw.is_none() {
            return Err(BuildFailure::Local(buildkit::unreachable(&self.endpoint).context(format!("building {what}"))));
        }
        // Checked before the build, so a bad name fails it before the engine works.
        let extra_tags: Vec<(String, String)> =
            req.tags
                .iter()
                .skip(1)
                .map(|t| tag_target(t))
                .collect::<Result<_>>()
                .map_err(|e| BuildFailure::Local(e.context(format!("building {what}"))))?;
        let mut log = open_log(req.log_path).map_err(BuildFailure::Local)?;
        let log_err = |e: io::Error| BuildFailure::Local(Error::io("writing build log", req.log_path, e));
        log.write_all(preamble.as_bytes()).map_err(log_err)?;
        let mut attempt = 1;
        loop {
            match self.build_once(req, &what, &extra_tags, &mut log).await {
                Err(Attempt::LostCachedImage(msg)) if attempt < LOST_CACHE_ATTEMPTS => {
                    writeln!(
                        log,
                        "# archfarm: {msg}: another client removed an image while the engine probed its \
                         build cache (a race in the classic builder, not the recipe's fault); building again"
                    )
                    .map_err(log_err)?;
                    attempt += 1;
                }
                Err(Attempt::LostCachedImage(msg)) => {
                    return Err(BuildFailure::Engine(Error::failure(format!(
                        "building {what}: {msg}, {LOST_CACHE_ATTEMPTS} times: images are being removed from \
                         the engine at {} while it builds; stop the pruning and retry (log: {})",
                        self.endpoint,
                        req.log_path.display()
                    ))))
                }
                Err(Attempt::Failed(f)) => return Err(f),
                Ok(id) => return Ok(id),
            }
        }
    }

    /// One build of `req`, its output appended to `log`; the image is then tagged with
    /// `extra_tags` (`req.tags` after the first, which the build itself gives).
    async fn build_once(
        &self,
        req: BuildRequest<'_>,
        what: &str,
        extra_tags: &[(String, String)],
        log: &mut io::BufWriter<File>,
    ) -> Result<String, Attempt> {
        let log_err = |e: io::Error| BuildFailure::Local(Error::io("writing build log", req.log_path, e));
        let mut dockerfile_text = req.dockerfile_text.map(str::to_string);
        if req.backend == Backend::BuildKit {
            dockerfile_text = self.tag_from_ids(&req, what).await?;
        }
        // The context: a blocking thread writes the tar into a bounded channel.
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let context = req.context.clone();
        let dockerfile = req.dockerfile_path.to_string();
        let what2 = what.to_string();
        let producer = tokio::task::spawn_blocking(move || {
            let mut w = ChannelWriter::new(tx);
            let r = write_context(&context, &dockerfile, dockerfile_text.as_deref(), &what2, &mut w);
            match r {
                Ok(()) => {
                    w.finish().map_err(|e| Error::failure(format!("streaming the build context of {what2}: {e}")))
                }
                Err(e) => {
                    w.fail(e.message());
                    Err(e)
                }
            }
        });
        let producer = tokio_util::task::AbortOnDropHandle::new(producer);

        writeln!(
            log,
            "# archfarm: building {what} on {} (API {}, {})",
            self.endpoint,
            self.api_version(),
            req.backend.name()
        )
        .map_err(log_err)?;
        let outcome = match (req.backend, &self.raw) {
            (Backend::BuildKit, Some(raw)) => {
                buildkit::build(raw, &self.api_version(), &req, receiver_stream(rx), log).await.map_err(log_err)?
            }
            _ => self.classic(&req, receiver_stream(rx), log).await.map_err(log_err)?,
        };
        let produced = producer
            .await
            .map_err(|e| BuildFailure::Local(Error::failure(format!("context writer of {what} panicked: {e}"))))?;
        log.flush().map_err(log_err)?;
        // A file that changed under us explains any engine error that followed.
        if let Err(e) = &produced {
            if e.message().contains("changed during the build") || outcome.failure.is_none() {
                let _ = writeln!(log, "# archfarm: {}", e.message());
                return Err(BuildFailure::Local(e.clone_failure()).into());
            }
        }
        if let Some((msg, by_engine)) = outcome.failure {
            if req.backend == Backend::Classic && by_engine && msg.contains(LOST_CACHED_IMAGE) {
                return Err(Attempt::LostCachedImage(msg.trim().to_string()));
            }
            let step = outcome.failed_step.as_deref().map(|s| format!(" at `{s}`")).unwrap_or_default();
            let e = Error::failure(format!(
                "building {what} failed{step}: {} (log: {})",
                msg.trim(),
                req.log_path.display()
            ));
            // An error the engine reported is the recipe's, unless the engine is gone.
            let recipe = by_engine && self.answers(Duration::from_secs(10)).await;
            return Err(if recipe {
                BuildFailure::Recipe(StepFailure { error: e, step: outcome.failed_step, output: outcome.failed_output })
            } else {
                BuildFailure::Engine(e)
            }
            .into());
        }
        let id = match outcome.image_id {
            Some(id) => id,
            None => {
                return Err(BuildFailure::Engine(Error::failure(format!(
                    "building {what}: the engine at {} ended the build without an image ID (log: {})",
                    self.endpoint,
                    req.log_path.display()
                )))
                .into())
            }
        };
        for (repo, tag) in extra_tags {
            self.tag(&id, repo, tag).await.map_err(BuildFailure::Engine)?;
        }
        Ok(id)
    }

    /// For BuildKit: the Dockerfile text with FROM image IDs replaced by ID tags
    /// ([`buildkit::id_tags`]), after tagging those images; None if nothing changes.
    async fn tag_from_ids(&self, req: &BuildRequest<'_>, what: &str) -> Result<Option<String>, BuildFailure> {
        let Some(text) = req.dockerfile_text else { return Ok(None) };
        let (rewritten, ids) = match buildkit::id_tags(text, req.build_args) {
            Ok(r) => r,
            // A Dockerfile that does not parse goes to the engine as it is: it reports why.
            Err(_) => return Ok(Some(text.to_string())),
        };
        for (id, tag) in &ids {
            self.tag(id, buildkit::ID_TAG_REPO, tag)
                .await
                .map_err(|e| BuildFailure::Engine(e.context(format!("building {what}"))))?;
        }
        Ok(Some(rewritten))
    }

    /// The classic builder's run of `req` with `context` as the body, through bollard.
    async fn classic(
        &self,
        req: &BuildRequest<'_>,
        context: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
        log: &mut io::BufWriter<File>,
    ) -> io::Result<StreamOutcome> {
        let buildargs: HashMap<&str, &str> = req.build_args.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let labels: HashMap<&str, &str> = req.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let platform = req.platform.to_string();
        let mut opts = BuildImageOptionsBuilder::new()
            .dockerfile(req.dockerfile_path)
            .platform(&platform)
            .buildargs(&buildargs)
            .labels(&labels)
            .rm(true)
            .forcerm(true);
        if let Some(t) = req.tags.first() {
            opts = opts.t(t);
        }
        if let Some(target) = req.target {
            opts = opts.target(target);
        }
        let mut stream = self.long.build_image(opts.build(), None, Some(bollard::body_try_stream(context)));
        let mut lines = LineTracker::default();
        let mut outcome = StreamOutcome::default();
        // The engine's own error message in the stream is the recipe's failure; a
        // broken stream or connection is the engine's.
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(s) = &info.stream {
                        log.write_all(s.as_bytes())?;
                        lines.push(s);
                    }
                    if let Some(s) = &info.status {
                        writeln!(log, "{s}")?;
                    }
                    if let Some(id) = info.aux.and_then(|a| a.id) {
                        writeln!(log, "# archfarm: image id {id}")?;
                        outcome.image_id = Some(id);
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    writeln!(log, "{error}")?;
                    outcome.failure = Some((error, true));
                    break;
                }
                Err(e) => {
                    writeln!(log, "# archfarm: {e}")?;
                    outcome.failure = Some((e.to_string(), false));
                    break;
                }
            }
        }
        drop(stream);
        outcome.failed_step = lines.last_step;
        outcome.failed_output = lines.step_output.into();
        if let (None, Some(short)) = (&outcome.image_id, lines.built) {
            match self.docker.inspect_image(&short).await {
                Ok(image) => outcome.image_id = Some(image.id.unwrap_or(short)),
                Err(e) => outcome.failure = Some((format!("inspecting built image {short}: {e}"), false)),
            }
        }
        Ok(outcome)
    }

    /// `docker save` of image `id` streamed into the store, made reproducible on the way
    /// ([`crate::image::reproducible`]): the stored config digest is not the engine's image ID,
    /// but the same build on any engine gives the same manifest digest. `stamp`: the
    /// time and manifest annotations of the job (both in its key).
    pub async fn export_to_store(&self, id: &str, store: &Store, stamp: &Stamp) -> Result<ImportedImage> {
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let (store2, stamp) = (store.clone(), stamp.clone());
        let name = format!("`docker save {id}` from {}", self.endpoint);
        let importer = tokio::task::spawn_blocking(move || {
            let archive = ChannelReader { rx, cur: Bytes::new() };
            docker_archive::import_named(&store2, archive, &name, docker_archive::Rewrite::Reproducible(&stamp))
        });
        let mut stream = self.long.export_image(id);
        while let Some(chunk) = stream.next().await {
            let item = chunk.map_err(|e| io::Error::other(format!("engine at {}: {e}", self.endpoint)));
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
        drop(tx);
        let mut images = importer.await.map_err(|e| Error::failure(format!("importing {id} panicked: {e}")))??;
        match (images.pop(), images.is_empty()) {
            (Some(image), true) => Ok(image),
            _ => {
                Err(Error::failure(format!("`docker save {id}` from {} did not hold exactly one image", self.endpoint)))
            }
        }
    }

    /// The engine-load sink: `docker load` of an image from the store; returns the image
    /// ID (config digest).
    pub async fn load_from_store(&self, store: &Store, image: &StoredImage, repo_tags: &[String]) -> Result<String> {
        let (manifest, config) = (&image.manifest, image.config_digest.clone());
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let (store2, image2, tags2) = (store.clone(), image.clone(), repo_tags.to_vec());
        // The archive is made from the store on the way: `true` with an error when the
        // failure is the archive's own (a corrupt blob), not the engine that stopped reading.
        let producer = tokio::task::spawn_blocking(move || {
            let mut w = ChannelWriter::new(tx);
            match docker_archive::export(&store2, &image2, &tags2, &mut w) {
                Ok(()) => {
                    (w.finish().map_err(|e| Error::failure(format!("streaming image to the engine: {e}"))), false)
                }
                Err(e) => {
                    let ours = !w.tx.is_closed();
                    w.fail(e.message());
                    (Err(e), ours)
                }
            }
        });
        let opts = ImportImageOptionsBuilder::new().quiet(true).build();
        let mut stream = self.long.import_image(opts, bollard::body_try_stream(receiver_stream(rx)), None);
        let mut failure = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(e) = info.error_detail.and_then(|d| d.message) {
                        failure = Some(e);
                    }
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        drop(stream);
        let (produced, ours) = producer.await.map_err(|e| Error::failure(format!("archive writer panicked: {e}")))?;
        let produced = match (ours, produced) {
            (true, Err(e)) => {
                return Err(e.context(format!("loading {} into the engine at {}", manifest.digest, self.endpoint)))
            }
            (_, p) => p,
        };
        if let Some(msg) = failure {
            let extra = produced.err().map(|e| format!(" ({})", e.message())).unwrap_or_default();
            return Err(Error::failure(format!(
                "loading {} into the engine at {} failed: {msg}{extra}",
                manifest.digest, self.endpoint
            )));
        }
        produced?;
        match self.image_platform(&config).await? {
            Some(_) => Ok(config),
            None => Err(Error::failure(format!(
                "the engine at {} accepted {} but has no image {config}",
                self.endpoint, manifest.digest
            ))),
        }
    }

    fn err(&self, doing: String, e: bollard::errors::Error) -> Error {
        Error::failure(format!("{doing} on the Docker engine at {}: {e}", self.endpoint))
    }

    /// The Docker Hub mirrors the engine is configured with (`docker info`
    /// RegistryConfig.Mirrors, e.g. `http://127.0.0.1:5096/`), as written there.
    pub async fn registry_mirrors(&self) -> Result<Vec<String>> {
        let info = self.docker.info().await.map_err(|e| self.err("reading the engine's info".into(), e))?;
        Ok(info.registry_config.and_then(|r| r.mirrors).unwrap_or_default())
    }
}

pub(crate) fn client_for(endpoint: &str) -> Result<Docker> {
    let version = bollard::API_DEFAULT_VERSION;
    let secs = SHORT_TIMEOUT.as_secs();
    let r = if endpoint.starts_with("unix://") {
        Docker::connect_with_unix(endpoint, secs, version)
    } else if endpoint.starts_with('/') {
        Docker::connect_with_unix(&format!("unix://{endpoint}"), secs, version)
    } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        Docker::connect_with_http(endpoint, secs, version)
    } else {
        return Err(Error::usage(format!(
            "unsupported Docker endpoint '{endpoint}': use unix:///path/to/docker.sock or tcp://host:port"
        )));
    };
    r.map_err(|e| Error::failure(format!("connecting to the Docker engine at {endpoint}: {e}")))
}

/// The repository and tag the engine is asked to tag an image with, for the reference
/// `name` (the tag defaults to `latest`); a digest is not something an image can be
/// tagged with.
fn tag_target(name: &str) -> Result<(String, String)> {
    let r = Reference::parse(name)?;
    match (&r.digest, r.tag_or_latest()) {
        (None, Some(tag)) => Ok((r.name(), tag.to_string())),
        _ => Err(Error::usage(format!("cannot tag an image as '{name}': a tag names no digest"))),
    }
}

fn open_log(path: &Path) -> Result<io::BufWriter<File>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("creating log folder", parent, e))?;
    }
    File::create(path).map(io::BufWriter::new).map_err(|e| Error::io("creating build log", path, e))
}

impl Error {
    fn clone_failure(&self) -> Error {
        Error::failure(self.message().to_string())
    }
}

/// Splits the engine's `stream` text into lines; remembers the last `Step N/M : ...`,
/// the last lines printed since, and `Successfully built <id>`.
#[derive(Default)]
struct LineTracker {
    partial: String,
    last_step: Option<String>,
    step_output: std::collections::VecDeque<String>,
    built: Option<String>,
}

impl LineTracker {
    fn push(&mut self, text: &str) {
        self.partial.push_str(text);
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            let line = line.trim();
            if line.starts_with("Step ") {
                self.last_step = Some(line.to_string());
                self.step_output.clear();
            } else if let Some(id) = line.strip_prefix("Successfully built ") {
                self.built = Some(id.trim().to_string());
            } else if !line.is_empty() {
                keep_tail(&mut self.step_output, line);
            }
        }
    }
}

/// Writes exactly `context.entries` as a reproducible tar (mtime 0, uid/gid 0, fixed
/// modes), verifying every file against its recorded size and SHA-256 as it streams.
fn write_context(
    context: &Context,
    dockerfile_path: &str,
    dockerfile_text: Option<&str>,
    what: &str,
    out: &mut impl Write,
) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    let werr = |e: io::Error| Error::failure(format!("streaming the build context of {what}: {e}"));
    let mut replaced = false;
    for entry in &context.entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match &entry.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, format!("{}/", entry.path), io::empty()).map_err(werr)?;
            }
            EntryKind::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                tar.append_link(&mut h, &entry.path, target).map_err(werr)?;
            }
            EntryKind::File { executable, .. } if entry.path == dockerfile_path && dockerfile_text.is_some() => {
                let text = dockerfile_text.unwrap_or_default();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(if *executable { 0o755 } else { 0o644 });
                h.set_size(text.len() as u64);
                tar.append_data(&mut h, &entry.path, text.as_bytes()).map_err(werr)?;
                replaced = true;
            }
            EntryKind::File { executable, size, sha256 } => {
                let path = context.dir.join(&entry.path);
                let changed =
                    || Error::failure(format!("{} changed during the build of {what}; run again", path.display()));
                let file = File::open(&path).map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        changed()
                    } else {
                        Error::io("reading build context file", &path, e)
                    }
                })?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(if *executable { 0o755 } else { 0o644 });
                h.set_size(*size);
                let mut reader =
                    VerifyingReader { file, left: *size, hasher: Sha256::new(), want: *sha256, mismatch: false };
                if let Err(e) = tar.append_data(&mut h, &entry.path, &mut reader) {
                    return Err(if reader.mismatch { changed() } else { Error::io("streaming", &path, e) });
                }
            }
        }
    }
    if let (Some(text), false) = (dockerfile_text, replaced) {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(text.len() as u64);
        tar.append_data(&mut h, dockerfile_path, text.as_bytes()).map_err(werr)?;
    }
    tar.into_inner().map_err(werr)?.flush().map_err(werr)?;
    Ok(())
}

/// Reads exactly `left` bytes of a file; at the end, fails (setting `mismatch`) if the
/// file is shorter, longer, or hashes differently than recorded.
struct VerifyingReader {
    file: File,
    left: u64,
    hasher: Sha256,
    want: [u8; 32],
    mismatch: bool,
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut extra = [0u8; 1];
            let longer = self.file.read(&mut extra)? > 0;
            let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
            if longer || digest != self.want {
                self.mismatch = true;
                return Err(io::Error::other("file content changed"));
            }
            return Ok(0);
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.file.read(&mut buf[..max])?;
        if n == 0 {
            self.mismatch = true;
            return Err(io::Error::other("file shrank"));
        }
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// A `Write` that sends chunks into a bounded channel (blocking when it is full).
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        ChannelWriter { tx, buf: BytesMut::with_capacity(CHUNK) }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the engine stopped reading"))
    }

    fn finish(mut self) -> io::Result<()> {
        self.send_buf()
    }

    /// Aborts the stream: the engine sees a failed upload, never a complete one.
    fn fail(self, why: &str) {
        let _ = self.tx.blocking_send(Err(io::Error::other(why.to_string())));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blocking `Read` over chunks arriving on a channel.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

fn receiver_stream(rx: mpsc::Receiver<io::Result<Bytes>>) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::context::ContextEntry;

    fn entry(path: &str, content: &[u8]) -> ContextEntry {
        ContextEntry {
            path: path.into(),
            kind: EntryKind::File {
                executable: false,
                size: content.len() as u64,
                sha256: Sha256::digest(content).into(),
            },
        }
    }

    #[test]
    fn context_tar_is_reproducible_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"hello").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let ctx = Context {
            dir: dir.path().into(),
            entries: vec![
                entry("Dockerfile", b"FROM scratch\n"),
                entry("a", b"hello"),
                ContextEntry { path: "d".into(), kind: EntryKind::Dir },
                ContextEntry { path: "l".into(), kind: EntryKind::Symlink { target: "a".into() } },
            ],
        };
        let tar = |ctx: &Context| {
            let mut out = Vec::new();
            write_context(ctx, "Dockerfile", Some("FROM scratch\n"), "x for linux/arm64", &mut out).map(|_| out)
        };
        let one = tar(&ctx).unwrap();
        assert_eq!(one, tar(&ctx).unwrap());
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(&one[..]);
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 0);
            names.push(e.path().unwrap().display().to_string());
        }
        assert_eq!(names, ["Dockerfile", "a", "d/", "l"]);

        std::fs::write(dir.path().join("a"), b"hellO").unwrap();
        let err = tar(&ctx).unwrap_err();
        assert!(err.message().contains("changed during the build of x for linux/arm64"), "{}", err.message());
        std::fs::write(dir.path().join("a"), b"hello!").unwrap();
        assert!(tar(&ctx).unwrap_err().message().contains("changed"));
        std::fs::write(dir.path().join("a"), b"hell").unwrap();
        assert!(tar(&ctx).unwrap_err().message().contains("changed"));
    }

    #[test]
    fn backends_serialize_as_their_names_and_api_versions_compare_as_numbers() {
        for b in [Backend::Classic, Backend::BuildKit] {
            assert_eq!(serde_json::to_value(b).unwrap(), b.name());
        }
        assert!(api_at_least("1.41", (1, 39)) && api_at_least("2.0", (1, 39)));
        assert!(!api_at_least("1.38", (1, 39)) && !api_at_least("1.9", (1, 39)) && !api_at_least("", (1, 39)));
    }

    #[test]
    fn tags_are_references_without_a_digest() {
        let t = |name: &str| tag_target(name).map_err(|e| e.message().to_string());
        assert_eq!(t("a/b:c").unwrap(), ("docker.io/a/b".to_string(), "c".to_string()));
        assert_eq!(t("localhost:5000/b").unwrap(), ("localhost:5000/b".to_string(), "latest".to_string()));
        assert_eq!(t("b").unwrap(), ("docker.io/library/b".to_string(), "latest".to_string()));
        assert_eq!(t("gvisor.dev/images/x:k1").unwrap(), ("gvisor.dev/images/x".to_string(), "k1".to_string()));
        // Accepted before (and left to the engine) when the tag split was its own.
        for (bad, says) in [
            (":/0", "not a host name"),
            ("./a", "not a host name"),
            ("host:port/x", "port 'port' is not a number"),
            ("x@", "not algorithm:hex"),
            (&format!("x:1@sha256:{}", "a".repeat(64)), "names no digest"),
        ] {
            let e = tag_target(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.message().contains(says), "{bad}: {}", e.message());
        }
    }

    mod tag_properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// A build tag is accepted exactly when it is a reference without a digest,
            /// and tags the same repository and tag.
            #[test]
            fn tags_agree_with_references(text in "[a-zA-Z0-9:/@._\\[\\]-]{0,40}") {
                let want = Reference::parse(&text)
                    .ok()
                    .filter(|r| r.digest.is_none())
                    .map(|r| (r.name(), r.tag_or_latest().unwrap_or_default().to_string()));
                prop_assert_eq!(tag_target(&text).ok(), want);
            }
        }
    }

    #[test]
    fn step_lines_are_tracked_across_chunks() {
        let mut t = LineTracker::default();
        t.push("Step 1/2 : FROM scr");
        t.push("atch\n ---> abc\nStep 2/2 : RUN false\n");
        t.push("Successfully built 0123abcd\n");
        assert_eq!(t.last_step.as_deref(), Some("Step 2/2 : RUN false"));
        assert_eq!(t.built.as_deref(), Some("0123abcd"));
        let mut t = LineTracker::default();
        t.push("Step 1/2 : RUN echo one\n ---> Running in 1\none\nStep 2/2 : RUN ./crash\n");
        t.push(" ---> Running in 2\n\u{1b}[91mqemu: uncaught target sig");
        t.push("nal 11 (Segmentation fault) - core dumped\n");
        assert_eq!(
            Vec::from(t.step_output),
            ["---> Running in 2", "\u{1b}[91mqemu: uncaught target signal 11 (Segmentation fault) - core dumped"]
        );
    }
}
