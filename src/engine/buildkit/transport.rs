//! A raw HTTP/1.1 connection to a Docker engine, for the two requests bollard cannot
//! make for us: a BuildKit build whose session archfarm serves itself, and the
//! `/session` upgrade that carries that session. bollard's own transport is private
//! (`process_upgraded` is `pub(crate)`), so this is hand-written on hyper's low-level
//! client connection: one connection per request, driven by a task that ends when the
//! caller drops the returned guard (that is what cancels a build on the engine).
//! Unix sockets, plain TCP and TLS with a client certificate (rustls, as bollard uses).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use tokio_util::task::AbortOnDropHandle;

use crate::support::error::{Error, Result};

/// Where an engine listens: what archfarm can open a raw connection to.
#[derive(Clone)]
pub enum RawEndpoint {
    /// A unix socket (the local engine, or an ssh bridge's socket).
    Unix(PathBuf),
    /// `host:port`, plain TCP.
    Tcp(String),
    /// `host:port` with TLS: the engine verified against a CA, archfarm presenting a
    /// client certificate (dockerd's `--tlsverify`).
    Tls { addr: String, connector: tokio_rustls::TlsConnector, name: ServerName<'static> },
}

impl std::fmt::Debug for RawEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A request body: empty, or a stream of chunks (the build context).
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

impl RawEndpoint {
    /// `unix:///path`, `/path`, `tcp://host:port`, `http://host:port`; None for
    /// anything else (TLS endpoints, which this transport does not speak).
    pub fn parse(endpoint: &str) -> Option<RawEndpoint> {
        if let Some(p) = endpoint.strip_prefix("unix://") {
            return Some(RawEndpoint::Unix(PathBuf::from(p)));
        }
        if endpoint.starts_with('/') {
            return Some(RawEndpoint::Unix(PathBuf::from(endpoint)));
        }
        let rest = endpoint.strip_prefix("tcp://").or_else(|| endpoint.strip_prefix("http://"))?;
        let hostport = rest.trim_end_matches('/');
        (!hostport.is_empty() && !hostport.contains('/')).then(|| RawEndpoint::Tcp(hostport.to_string()))
    }

    /// TLS to `addr` (`host:port`): the engine's certificate must chain to `ca` and name
    /// `host`; archfarm presents `cert` with `key` (PEM files, as `docker --tlsverify`).
    pub fn tls(addr: &str, ca: &Path, cert: &Path, key: &Path) -> Result<RawEndpoint> {
        let pem = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
            Error::usage(format!("reading the TLS {what} {}: {e}", path.display()))
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).map_err(|e| pem("CA", ca, &e))? {
            roots.add(c.map_err(|e| pem("CA", ca, &e))?).map_err(|e| pem("CA", ca, &e))?;
        }
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| pem("certificate", cert, &e))?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem("key", key, &e))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_root_certificates(roots).with_client_auth_cert(chain, key_der))
            .map_err(|e| Error::usage(format!("setting up TLS to {addr}: {e}")))?;
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| Error::usage(format!("'{host}' is not a host name for TLS: {e}")))?;
        Ok(RawEndpoint::Tls {
            addr: addr.to_string(),
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// Sends `request` on a new connection; returns the response and the guard that keeps
    /// the connection alive (dropping it closes the connection). With `upgrade`, the
    /// connection may be taken over with [`hyper::upgrade::on`].
    pub async fn send(
        &self,
        request: http::Request<Body>,
        upgrade: bool,
    ) -> Result<(http::Response<Incoming>, AbortOnDropHandle<()>)> {
        let fail = |doing: &str, e: &dyn std::fmt::Display| {
            Error::failure(format!("{doing} the Docker engine at {}: {e}", self.describe()))
        };
        let (mut sender, driver) = match self {
            RawEndpoint::Unix(path) => {
                let io = tokio::net::UnixStream::connect(path).await.map_err(|e| fail("connecting to", &e))?;
                handshake(TokioIo::new(io), upgrade).await
            }
            RawEndpoint::Tcp(addr) => {
                let io = tokio::net::TcpStream::connect(addr).await.map_err(|e| fail("connecting to", &e))?;
                handshake(TokioIo::new(io), upgrade).await
            }
            RawEndpoint::Tls { addr, connector, name } => {
                let io = tokio::net::TcpStream::connect(addr).await.map_err(|e| fail("connecting to", &e))?;
                let io = connector.connect(name.clone(), io).await.map_err(|e| fail("a TLS handshake with", &e))?;
                handshake(TokioIo::new(io), upgrade).await
            }
        }
        .map_err(|e| fail("speaking HTTP to", &e))?;
        let response = sender.send_request(request).await.map_err(|e| fail("sending a request to", &e))?;
        Ok((response, driver))
    }

    fn describe(&self) -> String {
        match self {
            RawEndpoint::Unix(p) => format!("unix://{}", p.display()),
            RawEndpoint::Tcp(a) => format!("tcp://{a}"),
            RawEndpoint::Tls { addr, .. } => format!("tcp://{addr} (TLS)"),
        }
    }
}

async fn handshake<IO>(
    io: IO,
    upgrade: bool,
) -> hyper::Result<(hyper::client::conn::http1::SendRequest<Body>, AbortOnDropHandle<()>)>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let task = if upgrade {
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        })
    } else {
        tokio::spawn(async move {
            let _ = conn.await;
        })
    };
    Ok((sender, AbortOnDropHandle::new(task)))
}

/// An empty request body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A request body streamed from `chunks`.
pub fn streamed(chunks: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static) -> Body {
    use futures::StreamExt;
    BodyExt::boxed_unsync(StreamBody::new(chunks.map(|c| c.map(Frame::data))))
}
