//! The coordinator's gRPC methods, routed by path.
//!
//! The two services are served with farm's own framing
//! ([`farm_net::wire`]) rather than tonic's generated servers, so the
//! values in worker results and job streams are never copied on their way
//! through. The wire format is standard gRPC: tonic's generated clients,
//! and any other gRPC client, call these methods as usual.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use farm_net::wire::server;
use farm_proto::method;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use super::{JobsApi, WorkersApi};

/// One gRPC service's methods: its name, and the answer to a call by
/// its path.
pub trait Methods: Clone + Send + 'static {
    /// The service's full name, e.g. `farm.v1.JobService`.
    const NAME: &'static str;

    fn answer(
        self,
        request: http::Request<Body>,
    ) -> impl Future<Output = http::Response<Body>> + Send;
}

/// A service answering its [`Methods`] by path, as tonic's router wants.
#[derive(Debug, Clone)]
pub struct Routed<M>(pub M);

impl<M: Methods> NamedService for Routed<M> {
    const NAME: &'static str = M::NAME;
}

type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<M: Methods> Service<http::Request<Body>> for Routed<M> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Answer {
        let methods = self.0.clone();
        Box::pin(async move { Ok(methods.answer(request).await) })
    }
}

/// `farm.v1.JobService`: submitting jobs and reading the cluster's status.
impl Methods for JobsApi {
    const NAME: &'static str = method::JOB_SERVICE;

    async fn answer(self, request: http::Request<Body>) -> http::Response<Body> {
        let path = request.uri().path().to_owned();
        match path.as_str() {
            method::SUBMIT_JOB => self.submit_job(request).await,
            method::GET_CLUSTER_STATUS => server::unary(request, |m| self.cluster_status(m)).await,
            method::GET_JOB_STATUS => server::unary(request, |m| self.job_status(m)).await,
            other => server::unimplemented(other),
        }
    }
}

/// `farm.v1.WorkerService`: one session per connected worker.
impl Methods for WorkersApi {
    const NAME: &'static str = method::WORKER_SERVICE;

    async fn answer(self, request: http::Request<Body>) -> http::Response<Body> {
        let path = request.uri().path().to_owned();
        match path.as_str() {
            method::WORKER_SESSION => self.session(request).await,
            other => server::unimplemented(other),
        }
    }
}
