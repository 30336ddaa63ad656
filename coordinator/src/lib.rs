//! The farm coordinator: accepts jobs from clients, leases their chunks to
//! workers, and streams the ordered results back.
//!
//! - [`scheduler`]: the pure state machine (jobs, chunks, leases, merge).
//! - [`service`]: the gRPC adapters around it.
//! - [`values`]: how raw values travel through: value connections to
//!   clients, results connections from workers, values held in pipes.
//! - [`config`] and [`validate`]: what may be configured and requested.
//! - [`listener`]: the port, shared by gRPC and those connections.
//! - [`auth`]: who may call what, checked in one place for every call
//!   and connection.
//! - [`metrics`]: what `GET /metrics` shows, on a port of its own.
//!
//! [`run_tcp`] serves on a TCP listener until `shutdown` resolves;
//! [`in_process`] serves calls made from the same process (the embedded
//! cluster), with no listener at all. Either starts every task of its own
//! on one [`TaskTracker`] (the [`Hub`]'s) and ends only after they all
//! have.

pub mod auth;
pub mod config;
mod listener;
pub mod metrics;
pub mod modules;
pub mod scheduler;
pub mod service;
pub mod validate;
pub mod values;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use farm_net::transport::{
    CONNECTION_WINDOW_BYTES, Connection, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_FRAME_BYTES,
    STREAM_WINDOW_BYTES,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::Connected;

pub use auth::OpenOnNetwork;
pub use config::{ConfigError, CoordinatorConfig};
use service::routes::Routed;
use service::{Hub, JobsApi, WorkersApi};
use values::ValueOffers;

/// How long the coordinator's tasks may take to end once shutdown began:
/// job streams tell their clients why they end (a bounded send), sessions
/// and connections end at once.
const TASKS_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the coordinator stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// No token, and an address others can reach.
    #[error(transparent)]
    OpenOnNetwork(#[from] OpenOnNetwork),
    #[error("cannot read the listener's address: {0}")]
    Address(#[source] std::io::Error),
    #[error("serving failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves on a bound TCP listener until `shutdown` resolves, then ends
/// every job stream and worker session and returns once every task it
/// started has ended. The port serves gRPC, value and results connections
/// (see [`values::ValueOffers`]).
pub async fn run_tcp(
    config: CoordinatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CoordinatorError> {
    run_tcp_with_metrics(config, listener, None, shutdown).await
}

/// Like [`run_tcp`], and serves `GET /metrics` (see [`metrics`]) on
/// `metrics` until shutdown begins.
pub async fn run_tcp_with_metrics(
    config: CoordinatorConfig,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CoordinatorError> {
    config.validate()?;
    let address = listener.local_addr().map_err(CoordinatorError::Address)?;
    auth::check_exposure(&config.admission, address)?;
    let stop = CancellationToken::new();
    let offers = Arc::new(ValueOffers::default());
    let hub = Arc::new(Hub::new(config.clone(), stop.clone()).with_value_offers(offers.clone()));
    let admission = Arc::new(config.admission.clone());
    let incoming = listener::sort_connections(
        listener,
        offers,
        admission,
        hub.shutdown_token().clone(),
        hub.tasks(),
    );
    let metrics = async {
        if let Some(listener) = metrics {
            let scraped = hub.clone();
            let render = move || metrics::render(&scraped);
            farm_net::metrics_http::serve(listener, render, stop.clone()).await;
        }
    };
    let (served, ()) = tokio::join!(
        serve(hub.clone(), stop.clone(), incoming, shutdown),
        metrics
    );
    served
}

/// Serves the gRPC services on the HTTP/2 connections of `incoming` until
/// `shutdown` resolves; `stop` is cancelled as shutdown begins.
async fn serve<I, IO, IE>(
    hub: Arc<Hub>,
    stop: CancellationToken,
    incoming: I,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CoordinatorError>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    hub.tasks()
        .spawn(tick_periodically(hub.clone(), hub.config().tick));

    let jobs = Routed(JobsApi::new(hub.clone()));
    let workers = Routed(WorkersApi::new(hub.clone()));
    // The standard gRPC health service, for `farm health`, container health
    // checks and Kubernetes probes: SERVING until shutdown begins.
    let (health, health_service) = tonic_health::server::health_reporter();
    let guard = auth::GuardLayer(Arc::new(hub.config().admission.clone()));
    let served = Server::builder()
        .layer(guard)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .add_service(jobs)
        .add_service(workers)
        .add_service(health_service)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            tracing::info!("shutting down: ending job streams and worker sessions");
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            stop.cancel();
        })
        .await;
    hub.shutdown_token().cancel();
    wait_for_tasks(hub.tasks()).await;
    served?;
    Ok(())
}

/// Waits, at most [`TASKS_TIMEOUT`], for every task on `tasks` to end
/// (no new ones can start).
async fn wait_for_tasks(tasks: &TaskTracker) {
    tasks.close();
    if tokio::time::timeout(TASKS_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(tasks = tasks.len(), timeout = ?TASKS_TIMEOUT, "stopped with tasks still running");
    }
}

/// A coordinator serving calls made from this process: the returned
/// [`Connection`] calls its routes directly, so messages (and the value
/// buffers in them) are handed over without HTTP/2 or copies. It stops
/// when `shutdown` resolves, ending every job stream and worker session;
/// the returned task ends once every task the coordinator started has.
pub fn in_process(
    config: CoordinatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(Connection, JoinHandle<()>), CoordinatorError> {
    in_process_on(config, shutdown, TaskTracker::new())
}

/// Like [`in_process`], with the coordinator's tasks on `tasks`, where the
/// caller can count them (a test that nothing runs beside them, say).
pub fn in_process_on(
    config: CoordinatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    tasks: TaskTracker,
) -> Result<(Connection, JoinHandle<()>), CoordinatorError> {
    config.validate()?;
    let stop = CancellationToken::new();
    let hub = Arc::new(Hub::new(config.clone(), stop.clone()).with_tasks(tasks));
    hub.tasks()
        .spawn(tick_periodically(hub.clone(), config.tick));
    let routes = Routes::new(Routed(JobsApi::new(hub.clone())))
        .add_service(Routed(WorkersApi::new(hub.clone())));
    // The same check as on a port (admitting everyone unless configured).
    let routes = auth::Guarded::new(routes, Arc::new(config.admission.clone()));
    // The caller's handle on the coordinator: not a task of its own.
    let task = tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
        wait_for_tasks(hub.tasks()).await;
    });
    Ok((Connection::in_process(routes), task))
}

async fn tick_periodically(hub: Arc<Hub>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => hub.tick(),
            () = hub.shutdown_token().cancelled() => return,
        }
    }
}
