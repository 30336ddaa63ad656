//! The coordinator's gRPC methods, routed by path.
//!
//! The two services are served with farm's own framing
//! ([`farm_proto::wire`]) rather than tonic's generated servers, so the
//! values in worker results and job streams are never copied on their way
//! through. The wire format is standard gRPC: tonic's generated clients,
//! and any other gRPC client, call these methods as usual.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use farm_proto::wire::{method, server};
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use super::{JobsApi, WorkersApi};

type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

/// `farm.v1.JobService`: submitting jobs and reading the cluster's status.
#[derive(Debug, Clone)]
pub struct JobService(pub JobsApi);

impl NamedService for JobService {
    const NAME: &'static str = method::JOB_SERVICE;
}

impl Service<http::Request<Body>> for JobService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Answer {
        let api = self.0.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            Ok(match path.as_str() {
                method::SUBMIT_JOB => api.submit_job(request).await,
                method::GET_CLUSTER_STATUS => {
                    server::unary(request, |m| api.cluster_status(m)).await
                }
                method::GET_JOB_STATUS => server::unary(request, |m| api.job_status(m)).await,
                other => server::unimplemented(other),
            })
        })
    }
}

/// `farm.v1.WorkerService`: one session per connected worker.
#[derive(Debug, Clone)]
pub struct WorkerService(pub WorkersApi);

impl NamedService for WorkerService {
    const NAME: &'static str = method::WORKER_SERVICE;
}

impl Service<http::Request<Body>> for WorkerService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Answer {
        let api = self.0.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            Ok(match path.as_str() {
                method::WORKER_SESSION => api.session(request).await,
                other => server::unimplemented(other),
            })
        })
    }
}
