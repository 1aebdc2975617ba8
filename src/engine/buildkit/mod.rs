//! Builds with BuildKit, the builder built into dockerd since 18.09 (`POST /build?version=2`).
//!
//! Why not bollard's BuildKit support: with its `buildkit` feature bollard insists on a
//! session for every BuildKit build, serves only registry auth in it (its secret
//! provider is private), and leaves that session's task running after the build. So the
//! build request is sent here over a raw HTTP/1.1 connection ([`transport`]); a session
//! ([`session`]) is opened only when the build has secrets, because a session-less
//! build needs nothing from the client (the context is the request body). The JSON
//! stream is decoded here: `moby.buildkit.trace` items carry base64 protobuf
//! `StatusResponse`s ([`progress`] renders them), `moby.image.id` the result, and
//! `errorDetail` the failure. Dropping the build future closes its connection, which
//! makes dockerd cancel the solve (the request context ends).
//!
//! BuildKit does not accept `FROM sha256:<image id>` (it takes it for a Docker Hub name);
//! it does resolve local tags. So image IDs in FROM lines are first given a tag made of
//! the ID itself ([`ID_TAG_REPO`]`:<hex>`), which names the same image on every call and so
//! cannot race between parallel builds.

pub mod progress;
pub mod session;
pub mod transport;

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine as _;
use bollard_buildkit_proto::moby::buildkit::v1::StatusResponse;
use bytes::Bytes;
use futures::Stream;
use http_body_util::BodyExt;
use prost::Message as _;
use serde::Deserialize;

use crate::engine::request::{BuildRequest, StreamOutcome};
use crate::support::error::{Error, Result};
use transport::RawEndpoint;

/// The repository of the tags that name images by their ID for BuildKit's FROM lines.
pub const ID_TAG_REPO: &str = "archfarm.local/by-id";

/// One item of the engine's JSON build stream (the fields a BuildKit build uses).
#[derive(Deserialize)]
struct Item {
    id: Option<String>,
    aux: Option<serde_json::Value>,
    #[serde(rename = "errorDetail")]
    error_detail: Option<ErrorDetail>,
    error: Option<String>,
    stream: Option<String>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: Option<String>,
}

/// The `/build` query of a BuildKit build of `req` (`session` names an open session).
fn query(req: &BuildRequest<'_>, dockerfile_path: &str, session: Option<&str>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    let json = |m: &BTreeMap<String, String>| serde_json::to_string(m).expect("string map");
    q.append_pair("version", "2")
        .append_pair("dockerfile", dockerfile_path)
        .append_pair("platform", &req.platform.to_string())
        .append_pair("buildargs", &json(req.build_args))
        .append_pair("labels", &json(req.labels))
        .append_pair("rm", "1")
        .append_pair("forcerm", "1");
    if let Some(t) = req.tags.first() {
        q.append_pair("t", t);
    }
    if let Some(target) = req.target {
        q.append_pair("target", target);
    }
    if let Some(id) = session {
        q.append_pair("session", id);
    }
    q.finish()
}

/// Runs one BuildKit build of `req` on `endpoint` with `context` (a tar stream) as the
/// body, writing its progress to `log`. Log write errors are returned as `Err`.
pub(crate) async fn build(
    endpoint: &RawEndpoint,
    api: &str,
    req: &BuildRequest<'_>,
    context: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    log: &mut impl Write,
) -> std::io::Result<StreamOutcome> {
    let mut outcome = StreamOutcome::default();
    let session = if req.secrets.is_empty() {
        None
    } else {
        match session::Session::open(endpoint, api, req.secrets).await {
            Ok(s) => Some(s),
            Err(e) => {
                writeln!(log, "# archfarm: {}", e.message())?;
                outcome.failure = Some((e.message().to_string(), false));
                return Ok(outcome);
            }
        }
    };
    let request = http::Request::post(format!(
        "/v{api}/build?{}",
        query(req, req.dockerfile_path, session.as_ref().map(|s| s.id.as_str()))
    ))
    .header(http::header::HOST, "docker")
    .header(http::header::CONTENT_TYPE, "application/x-tar")
    .body(transport::streamed(context))
    .expect("valid build request");
    let (response, _connection) = match endpoint.send(request, false).await {
        Ok(r) => r,
        Err(e) => {
            writeln!(log, "# archfarm: {}", e.message())?;
            outcome.failure = Some((e.message().to_string(), false));
            return Ok(outcome);
        }
    };
    let status = response.status();
    let mut body = response.into_body();
    let mut progress = progress::Progress::default();
    let mut pending = Vec::new();
    let mut refused = Vec::new();
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame as hyper::body::Frame<Bytes>,
            Some(Err(e)) => {
                writeln!(log, "# archfarm: the build stream broke: {e}")?;
                outcome.failure = Some((format!("the build stream broke: {e}"), false));
                break;
            }
        };
        let Ok(data) = frame.into_data() else { continue };
        if !status.is_success() {
            refused.extend_from_slice(&data);
            continue;
        }
        pending.extend_from_slice(&data);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            handle_line(&line, &mut progress, &mut outcome, log)?;
        }
    }
    if !status.is_success() {
        // A refused request: `{"message": "..."}` (an unknown target, a bad platform).
        let text = String::from_utf8_lossy(&refused).to_string();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or(text);
        writeln!(log, "{message}")?;
        outcome.failure = Some((message, true));
    } else {
        handle_line(&pending, &mut progress, &mut outcome, log)?;
    }
    outcome.failed_step = progress.failed_step().map(str::to_string);
    outcome.failed_output = progress.failed_output();
    drop(session);
    Ok(outcome)
}

/// Handles one line of the JSON stream.
fn handle_line(
    line: &[u8],
    progress: &mut progress::Progress,
    outcome: &mut StreamOutcome,
    log: &mut impl Write,
) -> std::io::Result<()> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(());
    }
    let item: Item = match serde_json::from_slice(line) {
        Ok(item) => item,
        Err(e) => {
            writeln!(log, "# archfarm: unreadable item in the build stream ({e}): {}", String::from_utf8_lossy(line))?;
            return Ok(());
        }
    };
    if let Some(s) = &item.stream {
        log.write_all(s.as_bytes())?;
    }
    if let Some(message) = item.error_detail.and_then(|d| d.message).or(item.error) {
        writeln!(log, "{message}")?;
        if outcome.failure.is_none() {
            outcome.failure = Some((message, true));
        }
    }
    match (item.id.as_deref(), item.aux) {
        (Some("moby.buildkit.trace"), Some(serde_json::Value::String(b64))) => {
            let status = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .ok()
                .and_then(|bytes| StatusResponse::decode(bytes.as_slice()).ok());
            match status {
                Some(status) => progress.push(&status, log)?,
                None => writeln!(log, "# archfarm: an unreadable BuildKit progress item")?,
            }
        }
        (Some("moby.image.id"), Some(aux)) => {
            if let Some(id) = aux.get("ID").and_then(|v| v.as_str()) {
                writeln!(log, "# archfarm: image id {id}")?;
                outcome.image_id = Some(id.to_string());
            }
        }
        _ => {}
    }
    Ok(())
}

/// `text` with every FROM image that is an image ID (`sha256:<hex>`) replaced by its
/// [`ID_TAG_REPO`] tag, and the IDs to tag so (BuildKit resolves tags, not IDs).
pub(crate) fn id_tags(text: &str, build_args: &BTreeMap<String, String>) -> Result<(String, Vec<(String, String)>)> {
    let mut tags = BTreeMap::new();
    let text = crate::recipe::dockerfile::rewrite_refs(text, build_args, |r| {
        let hex = r.image.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
            tags.insert(r.image.clone(), hex.to_string());
            format!("{ID_TAG_REPO}:{hex}")
        })
    });
    Ok((text, tags.into_iter().collect()))
}

/// An error for a BuildKit build on an engine archfarm cannot open a raw connection to.
pub(crate) fn unreachable(endpoint: &str) -> Error {
    Error::usage(format!(
        "BuildKit builds on the engine at {endpoint} need its address: archfarm opens its own \
         connection for them, and was not told how (Engine::with_tls_files for TLS, \
         Engine::with_raw_endpoint for an ssh bridge); use the classic builder there"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_in_from_lines_become_id_tags() {
        let id = format!("sha256:{}", "ab".repeat(32));
        let text = format!("FROM --platform=linux/arm64 {id} AS a\nFROM a\nCOPY --from={id} /x /x\nFROM busybox\n");
        let (out, tags) = id_tags(&text, &BTreeMap::new()).unwrap();
        let tag = format!("{ID_TAG_REPO}:{}", "ab".repeat(32));
        assert_eq!(
            out,
            format!("FROM --platform=linux/arm64 {tag} AS a\nFROM a\nCOPY --from={tag} /x /x\nFROM busybox\n")
        );
        assert_eq!(tags, [(id, "ab".repeat(32))]);
    }

    #[test]
    fn the_query_names_the_target_session_and_platform() {
        let ctx = crate::recipe::context::Context { dir: "/x".into(), entries: vec![] };
        let platform =
            crate::image::platform::Platform { os: "linux".into(), architecture: "arm64".into(), variant: None };
        let args = BTreeMap::from([("A".to_string(), "1 2".to_string())]);
        let empty = BTreeMap::new();
        let req = BuildRequest {
            context: &ctx,
            dockerfile_path: "Dockerfile",
            dockerfile_text: None,
            platform: &platform,
            build_args: &args,
            labels: &empty,
            tags: &["r/x:t".to_string()],
            log_path: std::path::Path::new("/l"),
            backend: crate::engine::request::Backend::BuildKit,
            target: Some("first"),
            secrets: &[],
        };
        let q = query(&req, "Dockerfile", Some("s1"));
        assert_eq!(
            q,
            "version=2&dockerfile=Dockerfile&platform=linux%2Farm64&buildargs=%7B%22A%22%3A%221+2%22%7D\
             &labels=%7B%7D&rm=1&forcerm=1&t=r%2Fx%3At&target=first&session=s1"
        );
    }
}
