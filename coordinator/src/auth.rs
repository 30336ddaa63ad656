//! Members only: the one place the coordinator decides who may call what.
//!
//! Every gRPC call passes [`Guarded`] before it reaches a service: the
//! method's path says which role it needs ([`access`]), and the call's
//! token (`authorization: Bearer TOKEN`) must be that role's. Value and
//! results connections are checked by the same [`Admission`] in the
//! listener, by the role their purpose needs
//! ([`Purpose::role`](farm_net::side_connection::Purpose::role)), before
//! they are claimed. A refusal is `UNAUTHENTICATED` with a message naming
//! what to pass, and nothing else.
//!
//! With no secret, everyone is admitted, so the coordinator serves
//! loopback only ([`check_exposure`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use farm_net::auth::{Admission, Role, TOKEN_HEADER};
use farm_proto::method;
use tonic::Status;
use tower::Service;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the health service, which says only SERVING or not, for
    /// probes that hold no token.
    Open,
    /// Members of this role.
    Member(Role),
}

/// The health service's methods (`Check`, `Watch`).
const HEALTH_SERVICE: &str = "/grpc.health.v1.Health/";

/// Who may call the method at `path`. A path farm does not serve needs a
/// client token too, so a stranger learns nothing about what is served.
pub fn access(path: &str) -> Access {
    if path.starts_with(HEALTH_SERVICE) {
        return Access::Open;
    }
    match path {
        method::WORKER_SESSION => Access::Member(Role::Worker),
        _ => Access::Member(Role::Client),
    }
}

/// Why the coordinator will not serve where it was asked to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to serve on {address} with no token: anyone who can reach it could submit jobs or join as a worker. Make a cluster secret with `farm token new --out cluster.secret` and pass --token-file cluster.secret (or set FARM_TOKEN_FILE), or listen on a loopback address such as 127.0.0.1"
)]
pub struct OpenOnNetwork {
    pub address: SocketAddr,
}

/// Refuses to serve everyone on anything but loopback.
pub fn check_exposure(admission: &Admission, address: SocketAddr) -> Result<(), OpenOnNetwork> {
    if admission.is_open() && !address.ip().is_loopback() {
        return Err(OpenOnNetwork { address });
    }
    Ok(())
}

/// A gRPC service whose calls are admitted by [`Admission`] first.
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    admission: Arc<Admission>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, admission: Arc<Admission>) -> Guarded<S> {
        Guarded { inner, admission }
    }

    /// Whether a call with these parts may go on.
    fn admit<B>(&self, request: &http::Request<B>) -> Result<(), Status> {
        match access(request.uri().path()) {
            Access::Open => Ok(()),
            Access::Member(role) => self
                .admission
                .admit_header(role, request.headers().get(TOKEN_HEADER))
                .map_err(|refused| {
                    tracing::info!(%role, path = %farm_net::display::shown(request.uri().path()), reason = ?refused, "refused a call");
                    Status::unauthenticated(refused.to_string())
                }),
        }
    }
}

/// A tower layer that guards a whole server.
#[derive(Debug, Clone)]
pub struct GuardLayer(pub Arc<Admission>);

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded::new(inner, self.0.clone())
    }
}

type Answer<E> = Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for Guarded<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Answer<S::Error> {
        match self.admit(&request) {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use farm_net::auth::ClusterSecret;

    #[test]
    fn every_method_has_its_role() {
        assert_eq!(access(method::WORKER_SESSION), Access::Member(Role::Worker));
        for path in [
            method::SUBMIT_JOB,
            method::GET_CLUSTER_STATUS,
            method::GET_JOB_STATUS,
            "/farm.v1.JobService/Unknown",
            "/anything/else",
        ] {
            assert_eq!(access(path), Access::Member(Role::Client), "{path}");
        }
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(access("/grpc.health.v1.Health/Watch"), Access::Open);
    }

    #[test]
    fn with_no_secret_only_loopback_is_served() {
        let open = Admission::Open;
        for address in ["127.0.0.1:50051", "[::1]:1"] {
            assert_eq!(check_exposure(&open, address.parse().unwrap()), Ok(()));
        }
        let refused = check_exposure(&open, "0.0.0.0:50051".parse().unwrap()).unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("refusing to serve on 0.0.0.0:50051 with no token"),
            "{refused}"
        );
        assert!(
            refused
                .to_string()
                .contains("farm token new --out cluster.secret")
        );
        let members = Admission::members(&ClusterSecret::random().unwrap());
        assert_eq!(
            check_exposure(&members, "0.0.0.0:50051".parse().unwrap()),
            Ok(())
        );
    }
}
