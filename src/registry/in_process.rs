//! An OCI distribution registry inside the test process (compiled for tests only), in the
//! manner of go-containerregistry's `httptest.NewServer(registry.New())`: a real HTTP/1.1
//! server on `127.0.0.1:<free port>` speaking as much of the distribution API as
//! [`Registry`] uses, so the client and its callers are tested without a registry process.
//!
//! What it serves: `GET /v2/`; HEAD/GET/PUT manifests by tag or digest (with
//! `Content-Type`, `Docker-Content-Digest` and `Content-Length`); HEAD/GET blobs; blob
//! uploads (POST, with `?mount=&from=`; PATCH chunks with `Content-Range`; the status GET;
//! the closing PUT with `?digest=`); the tags list with `n`/`last` pages and `Link`; and,
//! when switched on ([`InProcess::set_referrers_api`]), the OCI 1.1 referrers API
//! (`GET /v2/<repo>/referrers/<digest>`, and the `OCI-Subject` header on the PUT of a
//! manifest with a `subject`). Off, as by default, it answers that path as
//! docker-registry 2.8 does: a plain-text 404.
//!
//! Like a real registry it keeps these rules, so a client that breaks them fails here:
//! a blob PUT whose bytes do not hash to `?digest=` is refused (400 `DIGEST_INVALID`), a
//! PATCH that does not start where the upload stands gets 416, and a manifest whose
//! blobs (or an index whose children) are not in the repository is refused (400
//! `MANIFEST_BLOB_UNKNOWN`, as docker-registry 2.8 does). A blob is mounted from another
//! repository only when that repository has it; otherwise the POST starts an upload (202),
//! the fallback the client must handle.
//!
//! For tests: faults ([`InProcess::fail_next`], [`InProcess::fail_when`]), another
//! writer's PUT landing just after one of the client's ([`InProcess::race_next_put`]), a log of every
//! request with the status it got ([`InProcess::requests`]), and seeding and inspection
//! helpers that bypass HTTP. Injected 429 and 503 answers carry `Retry-After: 0`, so the
//! client's retries do not wait out its backoff.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::image::oci::{digest_of, IndexDoc, ManifestDoc, DOCKER_LIST, OCI_INDEX};
use crate::recipe::config::RegistryRef;
use crate::registry::Registry;

/// A running in-process registry; it stops when dropped.
pub struct InProcess {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

/// One request as the registry saw it, and the status it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: Method,
    /// The path, with the query when there was one.
    pub target: String,
    pub status: StatusCode,
}

/// An injected answer for the next `remaining` requests that match.
struct Fault {
    method: Option<Method>,
    path_contains: Option<String>,
    status: StatusCode,
    remaining: usize,
}

impl Fault {
    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
    }
}

#[derive(Default)]
struct State {
    /// Blob bytes by digest, shared by every repository (as a registry's storage is).
    blobs: HashMap<String, Bytes>,
    /// The blobs each repository has (links into `blobs`).
    links: HashMap<String, BTreeSet<String>>,
    /// Manifests by (repository, digest): (media type, bytes).
    manifests: HashMap<(String, String), (String, Bytes)>,
    /// Tags per repository: tag -> manifest digest.
    tags: HashMap<String, BTreeMap<String, String>>,
    /// Open upload sessions by id: (repository, bytes so far).
    uploads: HashMap<String, (String, Vec<u8>)>,
    next_upload: u64,
    faults: Vec<Fault>,
    /// Manifests stored under (repository, tag) right after a PUT there, and how often.
    races: Vec<Race>,
    referrers_api: bool,
    log: Vec<Logged>,
}

/// Another writer's PUT of `bytes` to `repo:tag`, landing right after the next `remaining`
/// PUTs there.
struct Race {
    repo: String,
    tag: String,
    bytes: Bytes,
    remaining: usize,
}

impl InProcess {
    /// Starts a registry on `127.0.0.1` at a free port, serving on the current runtime.
    pub async fn start() -> InProcess {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("the listener's address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let server = tokio::spawn(async move {
            // The connections live in this set: aborting the server drops them all.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        InProcess { addr, state, server }
    }

    /// `127.0.0.1:<port>`, the registry host for a [`RegistryRef`].
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// This registry as archfarm names one: loopback, so plain HTTP; no namespace.
    pub fn registry_ref(&self) -> RegistryRef {
        RegistryRef::parse(&self.addr(), &[]).expect("a loopback address is a registry host")
    }

    /// A client for this registry with no credentials (the user's Docker config is not read).
    pub fn client(&self) -> Registry {
        Registry::with_credential(&self.registry_ref(), None).expect("a client for the in-process registry")
    }

    /// Answers the next `n` requests, whatever they are, with `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.push_fault(None, None, n, status);
    }

    /// Answers the next `n` requests with this method (any, if `None`) whose path contains
    /// `path_contains` with `status`; other requests are served.
    pub fn fail_when(&self, method: Option<Method>, path_contains: &str, n: usize, status: u16) {
        self.push_fault(method, Some(path_contains.to_string()), n, status);
    }

    /// Switches the referrers API (and the `OCI-Subject` header) on or off.
    pub fn set_referrers_api(&self, on: bool) {
        self.lock().referrers_api = on;
    }

    /// After each of the next `n` PUTs of the manifest `repo:tag` (answered as usual),
    /// stores the OCI index `bytes` under that tag: what a concurrent writer that read the
    /// tag before that PUT writes back.
    pub fn race_next_put(&self, repo: &str, tag: &str, bytes: &[u8], n: usize) {
        let race = Race { repo: repo.into(), tag: tag.into(), bytes: Bytes::copy_from_slice(bytes), remaining: n };
        self.lock().races.push(race);
    }

    fn push_fault(&self, method: Option<Method>, path_contains: Option<String>, n: usize, status: u16) {
        let status = StatusCode::from_u16(status).expect("an HTTP status code");
        self.lock().faults.push(Fault { method, path_contains, status, remaining: n });
    }

    /// Every request so far, in the order they were answered.
    pub fn requests(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    /// Seeds a blob into `repo`, bypassing HTTP; returns its digest.
    pub fn put_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = digest_of(bytes);
        let mut s = self.lock();
        s.blobs.insert(digest.clone(), Bytes::copy_from_slice(bytes));
        s.links.entry(repo.to_string()).or_default().insert(digest.clone());
        digest
    }

    /// Seeds a manifest into `repo` under `reference` (a tag, or its own digest),
    /// bypassing HTTP and the check that its blobs are there; returns its digest.
    pub fn put_manifest(&self, repo: &str, reference: &str, bytes: &[u8], media_type: &str) -> String {
        let digest = digest_of(bytes);
        self.lock().store_manifest(repo, reference, &digest, media_type, Bytes::copy_from_slice(bytes));
        digest
    }

    /// The manifest `repo:reference` (tag or digest): (media type, bytes).
    pub fn manifest(&self, repo: &str, reference: &str) -> Option<(String, Bytes)> {
        self.lock().manifest(repo, reference).map(|(_, m)| m.clone())
    }

    /// Whether `repo` has the blob.
    pub fn has_blob(&self, repo: &str, digest: &str) -> bool {
        self.lock().has_blob(repo, digest)
    }

    /// The tags of `repo`, sorted.
    pub fn tags(&self, repo: &str) -> Vec<String> {
        self.lock().tags.get(repo).map(|t| t.keys().cloned().collect()).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl State {
    fn has_blob(&self, repo: &str, digest: &str) -> bool {
        self.links.get(repo).is_some_and(|l| l.contains(digest))
    }

    /// The digest and the manifest of `repo:reference`.
    fn manifest(&self, repo: &str, reference: &str) -> Option<(String, &(String, Bytes))> {
        let digest = if reference.starts_with("sha256:") {
            reference.to_string()
        } else {
            self.tags.get(repo)?.get(reference)?.clone()
        };
        let m = self.manifests.get(&(repo.to_string(), digest.clone()))?;
        Some((digest, m))
    }

    fn store_manifest(&mut self, repo: &str, reference: &str, digest: &str, media_type: &str, bytes: Bytes) {
        self.manifests.insert((repo.to_string(), digest.to_string()), (media_type.to_string(), bytes));
        if !reference.starts_with("sha256:") {
            self.tags.entry(repo.to_string()).or_default().insert(reference.to_string(), digest.to_string());
        }
    }

    /// The first fault matching the request, used up by one.
    fn take_fault(&mut self, method: &Method, path: &str) -> Option<StatusCode> {
        let i = self.faults.iter().position(|f| f.remaining > 0 && f.matches(method, path))?;
        let f = &mut self.faults[i];
        f.remaining -= 1;
        let status = f.status;
        if f.remaining == 0 {
            self.faults.remove(i);
        }
        Some(status)
    }
}

type Answer = Response<Full<Bytes>>;

/// What a request asks for, parsed from its path (repository names contain `/`).
enum Route<'a> {
    Base,
    Manifest { repo: &'a str, reference: &'a str },
    Upload { repo: &'a str, id: &'a str },
    Blob { repo: &'a str, digest: &'a str },
    Tags { repo: &'a str },
    Referrers { repo: &'a str, digest: &'a str },
}

fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v2/")?;
    if rest.is_empty() {
        return Some(Route::Base);
    }
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags { repo });
    }
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        return Some(Route::Manifest { repo, reference });
    }
    if let Some((repo, id)) = rest.rsplit_once("/blobs/uploads/") {
        return Some(Route::Upload { repo, id });
    }
    if let Some((repo, digest)) = rest.rsplit_once("/referrers/").filter(|(_, d)| !d.contains('/')) {
        return Some(Route::Referrers { repo, digest });
    }
    let (repo, digest) = rest.rsplit_once("/blobs/")?;
    Some(Route::Blob { repo, digest })
}

async fn handle(state: &Mutex<State>, req: Request<hyper::body::Incoming>) -> Answer {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let target = req.uri().path_and_query().map_or(path.clone(), |p| p.to_string());
    let query: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = header("content-type");
    let content_range = header("content-range");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", &format!("reading the body: {e}")),
    };
    let mut s = state.lock().unwrap();
    let answer = match s.take_fault(&method, &path) {
        Some(status) => injected(status),
        None => {
            let req = Incoming { method: &method, query: &query, content_type, content_range, body };
            match route(&path) {
                Some(Route::Base) => ok(StatusCode::OK, Bytes::from_static(b"{}")),
                Some(Route::Manifest { repo, reference }) => manifest(&mut s, &req, repo, reference),
                Some(Route::Blob { repo, digest }) => blob(&s, &req, repo, digest),
                Some(Route::Upload { repo, id }) => upload(&mut s, &req, repo, id),
                Some(Route::Tags { repo }) => tags(&s, &req, repo),
                Some(Route::Referrers { repo, digest }) => referrers(&s, &req, repo, digest),
                None => error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "not a registry v2 path"),
            }
        }
    };
    s.log.push(Logged { method, target, status: answer.status() });
    answer
}

/// The parts of a request the handlers read.
struct Incoming<'a> {
    method: &'a Method,
    query: &'a HashMap<String, String>,
    content_type: Option<String>,
    content_range: Option<String>,
    body: Bytes,
}

fn manifest(s: &mut State, req: &Incoming, repo: &str, reference: &str) -> Answer {
    match *req.method {
        Method::GET | Method::HEAD => match s.manifest(repo, reference) {
            Some((digest, (media_type, bytes))) => with_headers(
                ok(StatusCode::OK, bytes.clone()),
                &[("content-type", media_type), ("docker-content-digest", &digest)],
            ),
            None => error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", "manifest unknown"),
        },
        Method::PUT => {
            let Some(media_type) = req.content_type.as_deref() else {
                return error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", "no Content-Type");
            };
            let digest = digest_of(&req.body);
            if reference.starts_with("sha256:") && reference != digest {
                return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "the manifest does not match its digest");
            }
            if let Err(missing) = references_present(s, repo, media_type, &req.body) {
                return error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN", &format!("blob unknown: {missing}"));
            }
            s.store_manifest(repo, reference, &digest, media_type, req.body.clone());
            if let Some(i) = s.races.iter().position(|r| r.repo == repo && r.tag == reference && r.remaining > 0) {
                let race = &mut s.races[i];
                race.remaining -= 1;
                let bytes = race.bytes.clone();
                s.store_manifest(repo, reference, &digest_of(&bytes), OCI_INDEX, bytes);
            }
            let answer = created(&format!("/v2/{repo}/manifests/{digest}"), &digest);
            match subject_of(&req.body).filter(|_| s.referrers_api) {
                Some(subject) => with_headers(answer, &[("oci-subject", &subject)]),
                None => answer,
            }
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "method not allowed"),
    }
}

/// Every blob an image manifest names, or every child an index names, is in `repo`;
/// otherwise the first one missing (or why the document does not parse).
fn references_present(s: &State, repo: &str, media_type: &str, body: &[u8]) -> Result<(), String> {
    if media_type == OCI_INDEX || media_type == DOCKER_LIST {
        let index: IndexDoc = serde_json::from_slice(body).map_err(|e| format!("not an index: {e}"))?;
        return match index.manifests.iter().find(|c| s.manifest(repo, &c.digest).is_none()) {
            Some(c) => Err(c.digest.clone()),
            None => Ok(()),
        };
    }
    let doc: ManifestDoc = serde_json::from_slice(body).map_err(|e| format!("not a manifest: {e}"))?;
    match std::iter::once(&doc.config).chain(&doc.layers).find(|d| !s.has_blob(repo, &d.digest)) {
        Some(d) => Err(d.digest.clone()),
        None => Ok(()),
    }
}

fn blob(s: &State, req: &Incoming, repo: &str, digest: &str) -> Answer {
    if *req.method != Method::GET && *req.method != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "method not allowed");
    }
    match s.blobs.get(digest).filter(|_| s.has_blob(repo, digest)) {
        Some(bytes) => with_headers(
            ok(StatusCode::OK, bytes.clone()),
            &[("content-type", "application/octet-stream"), ("docker-content-digest", digest)],
        ),
        None => error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown to registry"),
    }
}

fn upload(s: &mut State, req: &Incoming, repo: &str, id: &str) -> Answer {
    if *req.method == Method::POST && id.is_empty() {
        if let (Some(digest), Some(from)) = (req.query.get("mount"), req.query.get("from")) {
            if s.has_blob(from, digest) {
                s.links.entry(repo.to_string()).or_default().insert(digest.clone());
                return created(&format!("/v2/{repo}/blobs/{digest}"), digest);
            }
        }
        s.next_upload += 1;
        let id = format!("u{}", s.next_upload);
        s.uploads.insert(id.clone(), (repo.to_string(), Vec::new()));
        return session(repo, &id, 0);
    }
    let Some((_, data)) = s.uploads.get_mut(id).filter(|(r, _)| r == repo) else {
        return error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry");
    };
    match *req.method {
        Method::GET => {
            let mut a = session(repo, id, data.len());
            *a.status_mut() = StatusCode::NO_CONTENT;
            a
        }
        Method::PATCH => {
            let start = req.content_range.as_deref().and_then(|r| r.split_once('-')?.0.trim().parse::<usize>().ok());
            if start.is_some_and(|s| s != data.len()) {
                let refused = error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID", "chunk out of order");
                return with_headers(refused, &[("range", &range(data.len()))]);
            }
            data.extend_from_slice(&req.body);
            session(repo, id, data.len())
        }
        Method::PUT => {
            let Some(expected) = req.query.get("digest") else {
                return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "no digest");
            };
            let (_, mut data) = s.uploads.remove(id).expect("the session looked up above");
            data.extend_from_slice(&req.body);
            let digest = digest_of(&data);
            if &digest != expected {
                return error(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    &format!("provided digest did not match uploaded content ({digest})"),
                );
            }
            s.blobs.insert(digest.clone(), Bytes::from(data));
            s.links.entry(repo.to_string()).or_default().insert(digest.clone());
            created(&format!("/v2/{repo}/blobs/{digest}"), &digest)
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "method not allowed"),
    }
}

/// 202 for an upload session holding `have` bytes.
fn session(repo: &str, id: &str, have: usize) -> Answer {
    with_headers(
        ok(StatusCode::ACCEPTED, Bytes::new()),
        &[("location", &format!("/v2/{repo}/blobs/uploads/{id}")), ("range", &range(have)), ("docker-upload-uuid", id)],
    )
}

/// The `Range` of an upload holding `have` bytes (`0-0` for none, as the spec has it).
fn range(have: usize) -> String {
    format!("0-{}", have.saturating_sub(1))
}

/// The `subject` digest of a manifest, if it has one.
fn subject_of(body: &[u8]) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(doc.get("subject")?.get("digest")?.as_str()?.to_string())
}

/// The referrers API: every manifest of `repo` whose subject is `digest`, described as
/// the spec asks (`artifactType`, else an image manifest's config media type; the
/// manifest's annotations), in digest order.
fn referrers(s: &State, req: &Incoming, repo: &str, digest: &str) -> Answer {
    if !s.referrers_api {
        let a = ok(StatusCode::NOT_FOUND, Bytes::from_static(b"404 page not found\n"));
        return with_headers(a, &[("content-type", "text/plain; charset=utf-8")]);
    }
    if *req.method != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "method not allowed");
    }
    let mut found: Vec<(&String, serde_json::Value)> = Vec::new();
    for ((r, d), (media_type, bytes)) in &s.manifests {
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(bytes) else { continue };
        if r != repo || doc.get("subject").and_then(|s| s.get("digest")).and_then(|d| d.as_str()) != Some(digest) {
            continue;
        }
        let mut entry = serde_json::json!({ "mediaType": media_type, "digest": d, "size": bytes.len() });
        let artifact_type = doc.get("artifactType").or_else(|| doc.get("config").and_then(|c| c.get("mediaType")));
        if let Some(t) = artifact_type {
            entry["artifactType"] = t.clone();
        }
        if let Some(a) = doc.get("annotations") {
            entry["annotations"] = a.clone();
        }
        found.push((d, entry));
    }
    found.sort_by(|a, b| a.0.cmp(b.0));
    let manifests: Vec<serde_json::Value> = found.into_iter().map(|(_, e)| e).collect();
    let body = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    with_headers(ok(StatusCode::OK, Bytes::from(body.to_string())), &[("content-type", OCI_INDEX)])
}

fn tags(s: &State, req: &Incoming, repo: &str) -> Answer {
    let Some(all) = s.tags.get(repo) else {
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "repository name not known to registry");
    };
    let n = req.query.get("n").and_then(|n| n.parse::<usize>().ok()).unwrap_or(usize::MAX);
    let after = req.query.get("last");
    let page: Vec<&String> = all.keys().filter(|t| after.is_none_or(|l| *t > l)).take(n).collect();
    let body = serde_json::json!({ "name": repo, "tags": page });
    let answer = ok(StatusCode::OK, Bytes::from(body.to_string()));
    match page.last().filter(|last| all.keys().next_back() != Some(**last)) {
        Some(last) => {
            let link = format!("</v2/{repo}/tags/list?n={n}&last={last}>; rel=\"next\"");
            with_headers(answer, &[("link", &link)])
        }
        None => answer,
    }
}

/// An answer with an explicit `Content-Length`, which hyper keeps for a HEAD (whose body
/// it does not send): the client reads a manifest's size from it.
fn ok(status: StatusCode, body: Bytes) -> Answer {
    let length = body.len().to_string();
    let mut a = Response::new(Full::new(body));
    *a.status_mut() = status;
    with_headers(a, &[("content-length", &length)])
}

fn with_headers(mut a: Answer, headers: &[(&str, &str)]) -> Answer {
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).expect("a header name");
        a.headers_mut().insert(name, http::HeaderValue::from_str(value).expect("a header value"));
    }
    a
}

/// 201 with the new content's `Location` and digest.
fn created(location: &str, digest: &str) -> Answer {
    with_headers(ok(StatusCode::CREATED, Bytes::new()), &[("location", location), ("docker-content-digest", digest)])
}

/// An error answer with the distribution API's error body.
fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] });
    with_headers(ok(status, Bytes::from(body.to_string())), &[("content-type", "application/json")])
}

fn injected(status: StatusCode) -> Answer {
    let code = match status {
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::FORBIDDEN => "DENIED",
        StatusCode::TOO_MANY_REQUESTS => "TOOMANYREQUESTS",
        _ => "UNAVAILABLE",
    };
    let a = error(status, code, "injected fault");
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        with_headers(a, &[("retry-after", "0")])
    } else {
        a
    }
}
