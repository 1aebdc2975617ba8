//! archfarm's own BuildKit session: the channel through which the engine asks the client
//! for what a build needs from it, here secrets (`RUN --mount=type=secret`).
//!
//! The client POSTs `/session` with `Upgrade: h2c` and headers naming the session and
//! every gRPC method it serves; the engine answers 101 and from then on is the HTTP/2
//! *client* on that connection, archfarm the server. bollard has a session too, but it
//! only exposes registry auth and its secret provider is private, hence this one. It is
//! served for as long as the [`Session`] lives: dropping it closes the connection.

use std::collections::HashMap;
use std::pin::Pin;

use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{
    health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse, HealthListRequest,
    HealthListResponse,
};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use hyper_util::rt::TokioExecutor;
use hyper_util::service::TowerToHyperService;
use tokio_util::task::AbortOnDropHandle;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::transport::{self, RawEndpoint};
use crate::engine::request::BuildSecret;
use crate::support::error::{Error, Result};
use crate::support::secret::Secret;

/// An open session; the engine can reach its services while this value lives.
pub struct Session {
    /// The session ID a build names in its `session` parameter.
    pub id: String,
    _serving: AbortOnDropHandle<()>,
}

impl Session {
    /// Opens a session on the engine at `endpoint` (API version `api`, e.g. `1.41`)
    /// that hands out `secrets` by ID.
    pub async fn open(endpoint: &RawEndpoint, api: &str, secrets: &[BuildSecret]) -> Result<Session> {
        let id = format!("archfarm-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let mut request = http::Request::post(format!("/v{api}/session"))
            .header(http::header::HOST, "docker")
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, "h2c")
            .header("X-Docker-Expose-Session-Uuid", &id)
            .header("X-Docker-Expose-Session-Name", "archfarm")
            .header("X-Docker-Expose-Session-Sharedkey", &id);
        for method in methods() {
            request = request.header("X-Docker-Expose-Session-Grpc-Method", method);
        }
        let request = request.body(transport::empty()).expect("static request");
        let (response, _driver) = endpoint.send(request, true).await?;
        if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            return Err(Error::failure(format!(
                "the Docker engine refused a BuildKit session (HTTP {}); it needs dockerd 18.09 or newer on Linux",
                response.status()
            )));
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| Error::failure(format!("opening a BuildKit session on the Docker engine: {e}")))?;
        let store = SecretStore(secrets.iter().map(|s| (s.id.clone(), s.value.clone())).collect());
        let routes = tonic::service::Routes::new(HealthServer::new(Healthy)).add_service(SecretsServer::new(store));
        let serving = tokio::spawn(async move {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(upgraded, TowerToHyperService::new(routes))
                .await;
        });
        Ok(Session { id, _serving: AbortOnDropHandle::new(serving) })
    }
}

/// The gRPC methods this session serves, as the engine must be told in the upgrade.
fn methods() -> [String; 2] {
    [
        format!("/{}/Check", <HealthServer<Healthy> as NamedService>::NAME),
        format!("/{}/GetSecret", <SecretsServer<SecretStore> as NamedService>::NAME),
    ]
}

/// Answers the engine's health checks: a session that fails them is closed.
struct Healthy;

#[tonic::async_trait]
impl Health for Healthy {
    async fn check(&self, _: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse { status: ServingStatus::Serving as i32 }))
    }

    async fn list(&self, _: Request<HealthListRequest>) -> Result<Response<HealthListResponse>, Status> {
        Err(Status::unimplemented("archfarm's session answers Check only"))
    }

    type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(&self, _: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("archfarm's session answers Check only"))
    }
}

/// The secrets of one build by ID. Values leave it only in a GetSecret answer.
struct SecretStore(HashMap<String, Secret>);

#[tonic::async_trait]
impl Secrets for SecretStore {
    async fn get_secret(&self, request: Request<GetSecretRequest>) -> Result<Response<GetSecretResponse>, Status> {
        let id = &request.get_ref().id;
        match self.0.get(id) {
            Some(value) => Ok(Response::new(GetSecretResponse { data: value.expose().as_bytes().to_vec() })),
            None => Err(Status::not_found(format!("archfarm was given no secret '{id}' for this build"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_secrets_are_not_found_and_known_ones_are_handed_out() {
        let store = SecretStore(HashMap::from([("tok".to_string(), Secret::new("s3cr3t"))]));
        let ok = store.get_secret(Request::new(GetSecretRequest { id: "tok".into(), ..Default::default() })).await;
        assert_eq!(ok.unwrap().into_inner().data, b"s3cr3t");
        let missing = store.get_secret(Request::new(GetSecretRequest { id: "x".into(), ..Default::default() })).await;
        assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);
    }

    #[test]
    fn the_served_methods_are_named_as_buildkit_calls_them() {
        assert_eq!(methods(), ["/grpc.health.v1.Health/Check", "/moby.buildkit.secrets.v1.Secrets/GetSecret"]);
    }
}
