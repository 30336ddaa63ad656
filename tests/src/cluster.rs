//! An in-process cluster: a real coordinator on `127.0.0.1:0` and real
//! workers, each with its own compute pool, all as tasks of the test's
//! runtime, talking gRPC over loopback.
//!
//! ```ignore
//! let cluster = TestCluster::builder().workers(3).start().await;
//! let run = cluster.run(JobRequest { .. }).await?;
//! cluster.shutdown().await;
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use farm_cli::client::{self, ClientError, JobReport, JobRequest};
use farm_cli::output::{self, Destination, OutputSpec};
use farm_cli::receive::OutputWriter;
use farm_coordinator::CoordinatorConfig;
use farm_net::auth::{Admission, ClusterSecret, Role, RoleToken};
use farm_net::side_connection;
use farm_net::transport;
use farm_net::transport::Connection;
use farm_proto::v1;
use farm_worker::{WorkerConfig, WorkerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::wait_until;

/// How long starting or stopping the cluster may take.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a side connection's hello may wait for the coordinator's answer.
const SIDE_ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// Configures a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct TestClusterBuilder {
    workers: usize,
    threads_per_worker: usize,
    config: CoordinatorConfig,
    secret: Option<ClusterSecret>,
}

impl TestClusterBuilder {
    /// Members only: the coordinator requires tokens from `secret`, and
    /// the cluster's workers and clients present them.
    pub fn secret(mut self, secret: ClusterSecret) -> Self {
        self.config.admission = Admission::members(&secret);
        self.secret = Some(secret);
        self
    }

    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    pub fn threads_per_worker(mut self, threads: usize) -> Self {
        self.threads_per_worker = threads;
        self
    }

    pub fn config(mut self, config: CoordinatorConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts the coordinator and the workers, and waits until every worker
    /// has registered.
    pub async fn start(self) -> TestCluster {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("bound address");
        let stop = CancellationToken::new();
        let coordinator = tokio::spawn(farm_coordinator::run_tcp(
            self.config,
            listener,
            stop.clone().cancelled_owned(),
        ));
        let mut cluster = TestCluster {
            address,
            stop,
            coordinator,
            workers: Vec::new(),
            threads_per_worker: self.threads_per_worker,
            secret: self.secret,
        };
        for _ in 0..self.workers {
            cluster.add_worker();
        }
        cluster.wait_for_workers(self.workers).await;
        cluster
    }
}

/// A worker task of a [`TestCluster`], or one started on its own with
/// [`WorkerHandle::start_via`].
#[derive(Debug)]
pub struct WorkerHandle {
    pub drain: CancellationToken,
    pub task: JoinHandle<Result<(), WorkerError>>,
}

impl WorkerHandle {
    /// Starts a worker called `name`, of `threads` threads, that reaches
    /// its coordinator at `address` (e.g. a proxy in front of it). It is
    /// no part of any [`TestCluster`]: the test drains or aborts it.
    pub fn start_via(address: SocketAddr, name: &str, threads: usize) -> WorkerHandle {
        let address = address.to_string();
        let mut config = WorkerConfig::new(address.clone());
        config.name = name.to_owned();
        config.threads = threads;
        let channel = transport::endpoint(&address)
            .expect("a valid address")
            .connect_lazy();
        let drain = CancellationToken::new();
        let task = tokio::spawn(farm_worker::run(config, channel.into(), drain.clone()));
        WorkerHandle { drain, task }
    }

    /// Drains the worker and checks that it exits cleanly within
    /// `timeout`.
    pub async fn drain_within(self, timeout: Duration) {
        self.drain.cancel();
        tokio::time::timeout(timeout, self.task)
            .await
            .unwrap_or_else(|_| panic!("the worker did not drain within {timeout:?}"))
            .expect("worker task panicked")
            .unwrap_or_else(|e| panic!("the worker failed: {e}"));
    }
}

/// A running in-process cluster.
#[derive(Debug)]
pub struct TestCluster {
    address: SocketAddr,
    stop: CancellationToken,
    coordinator: JoinHandle<Result<(), farm_coordinator::CoordinatorError>>,
    workers: Vec<WorkerHandle>,
    threads_per_worker: usize,
    secret: Option<ClusterSecret>,
}

/// A finished job and the values it streamed (empty unless asked for).
#[derive(Debug)]
pub struct JobRun {
    pub report: JobReport,
    pub values: Vec<u8>,
}

impl TestCluster {
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder {
            workers: 3,
            threads_per_worker: 1,
            config: CoordinatorConfig::default(),
            secret: None,
        }
    }

    /// The token of `role`, if the cluster has a secret.
    pub fn token(&self, role: Role) -> Option<RoleToken> {
        self.secret.as_ref().map(|secret| secret.token(role))
    }

    /// A new connection presenting `token`.
    pub fn connection(&self, token: Option<RoleToken>) -> Connection {
        Connection::from(self.channel()).with_token(token)
    }

    /// A new connection as a client of this cluster (with its client
    /// token, if it has a secret).
    pub fn client_connection(&self) -> Connection {
        self.connection(self.token(Role::Client))
    }

    /// `host:port` of the coordinator.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Opens a value or results connection with `hello`: the stream and
    /// the coordinator's one-byte answer, or `None` if it closed the
    /// connection without one.
    pub async fn side_connection(
        &self,
        hello: side_connection::Hello,
    ) -> (tokio::net::TcpStream, Option<u8>) {
        let mut stream = tokio::net::TcpStream::connect(self.address)
            .await
            .expect("connect");
        stream.write_all(&hello.encode()).await.expect("hello");
        let mut answer = [0u8; 1];
        let read = tokio::time::timeout(SIDE_ANSWER_TIMEOUT, stream.read(&mut answer))
            .await
            .expect("an answer in time");
        (stream, matches!(read, Ok(1)).then_some(answer[0]))
    }

    /// A new connection to the coordinator (a new client).
    pub fn channel(&self) -> Channel {
        transport::endpoint(&self.address())
            .expect("a valid address")
            .connect_lazy()
    }

    /// Starts one more worker.
    pub fn add_worker(&mut self) {
        self.add_worker_with(|_| {});
    }

    /// Starts one more worker, with its configuration changed by `adjust`
    /// (e.g. more prefetch, test faults).
    pub fn add_worker_with(&mut self, adjust: impl FnOnce(&mut WorkerConfig)) {
        let mut config = WorkerConfig::new(self.address());
        config.name = format!("test-worker-{}", self.workers.len());
        config.threads = self.threads_per_worker;
        adjust(&mut config);
        let drain = CancellationToken::new();
        let task = tokio::spawn(farm_worker::run(
            config,
            self.connection(self.token(Role::Worker)),
            drain.clone(),
        ));
        self.workers.push(WorkerHandle { drain, task });
    }

    pub async fn status(&self) -> v1::GetClusterStatusResponse {
        client::cluster_status(self.client_connection(), &self.address())
            .await
            .expect("cluster status")
    }

    /// One job's status, running or recently ended.
    pub async fn job_status(&self, job: u64) -> v1::GetJobStatusResponse {
        client::job_status(self.client_connection(), &self.address(), job)
            .await
            .unwrap_or_else(|e| panic!("status of job {job}: {e}"))
    }

    /// Waits until exactly `count` workers are registered.
    pub async fn wait_for_workers(&self, count: usize) {
        wait_until(
            &format!("{count} workers to register"),
            SETTLE_TIMEOUT,
            || async { self.status().await.workers.len() == count },
        )
        .await;
    }

    /// Runs a job on a fresh connection, collecting any streamed values.
    pub async fn run(&self, request: &JobRequest) -> Result<JobRun, ClientError> {
        run_on(self.client_connection(), &self.address(), request).await
    }

    /// Drains worker `index` (counting the workers still running) and waits
    /// for it to exit cleanly.
    pub async fn drain_worker(&mut self, index: usize) {
        let worker = self.workers.remove(index);
        worker.drain.cancel();
        tokio::time::timeout(SETTLE_TIMEOUT, worker.task)
            .await
            .unwrap_or_else(|_| panic!("worker {index} did not drain within {SETTLE_TIMEOUT:?}"))
            .expect("worker task panicked")
            .unwrap_or_else(|e| panic!("worker {index} failed: {e}"));
    }

    /// Drains every worker, stops the coordinator, and checks that each
    /// part exited cleanly.
    pub async fn shutdown(self) {
        for worker in &self.workers {
            worker.drain.cancel();
        }
        for (i, worker) in self.workers.into_iter().enumerate() {
            let exited = tokio::time::timeout(SETTLE_TIMEOUT, worker.task)
                .await
                .unwrap_or_else(|_| panic!("worker {i} did not drain within {SETTLE_TIMEOUT:?}"));
            exited
                .expect("worker task panicked")
                .unwrap_or_else(|e| panic!("worker {i} failed: {e}"));
        }
        self.stop.cancel();
        tokio::time::timeout(SETTLE_TIMEOUT, self.coordinator)
            .await
            .expect("coordinator stops in time")
            .expect("coordinator task panicked")
            .expect("coordinator exits cleanly");
    }
}

/// Runs a job through `connection`, collecting any streamed values: the
/// client's own writer writes them to a `.bin` file (from the job's
/// stream, or spliced from a value connection), which is read back.
pub async fn run_on(
    connection: Connection,
    address: &str,
    request: &JobRequest,
) -> Result<JobRun, ClientError> {
    if !request.stream_values {
        let report = client::run_job(connection, address, request, None).await?;
        return Ok(JobRun {
            report,
            values: Vec::new(),
        });
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("values.bin");
    let spec = OutputSpec::new(Destination::File(path.clone()), None).expect("a .bin spec");
    let sink = output::create(&spec, request.n).expect("create the output file");
    let writer = OutputWriter::start(sink);
    let report = client::run_job(connection, address, request, Some(&writer)).await;
    let written = writer.finish(report.is_ok()).await;
    let report = report?;
    written.unwrap_or_else(|error| {
        panic!("the job finished, but its values were not written: {error}")
    });
    let values = std::fs::read(&path).expect("read the values back");
    Ok(JobRun { report, values })
}
