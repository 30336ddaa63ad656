//! The farm worker: connects to a coordinator (retrying with back-off),
//! pulls chunk leases in proportion to its free capacity, computes each on
//! every core of a rayon pool, and reports the results. Cancelling `drain`
//! makes it stop taking work, finish or hand back what it holds, and
//! return.
//!
//! - [`session`]: one connected session, hello to goodbye, opened by
//!   [`handshake`]; it keeps its leases' books in [`leases`], computes
//!   them with [`chunks`] and reports them as [`reports`] says.
//! - [`compute`]: the bridge from async code to the compute threads.
//! - [`backoff`]: reconnection delays.
//! - [`faults`]: fault injection for end-to-end tests (`FARM_TEST_FAULTS`).
//! - [`buffers`]: result buffers reused from chunk to chunk.
//! - `modules`: the WebAssembly modules a session holds.

pub mod backoff;
pub mod buffers;
mod chunks;
pub mod compute;
pub mod config;
pub mod faults;
mod handshake;
mod leases;
mod modules;
mod reports;
mod results_connection;
mod session;

use std::sync::Arc;
use std::time::Duration;

use farm_net::transport::Connection;
use farm_wasm::Runtime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{ConfigError, WorkerConfig};

use backoff::Backoff;
use compute::ComputePool;
use handshake::SessionError;
use session::SessionEnd;

/// How long the worker's own tasks may take to end once it has stopped
/// (they end with the session that started them).
const TASKS_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the worker stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot start {threads} compute threads: {source}")]
    Pool {
        threads: usize,
        source: rayon::ThreadPoolBuildError,
    },
    #[error("cannot set up the WebAssembly runtime: {0}")]
    Wasm(#[from] farm_wasm::SetupError),
    #[error("refused by {coordinator}: {reason}")]
    Refused { coordinator: String, reason: String },
    /// The coordinator refused this worker's token (or its lack of one).
    /// The worker stops rather than retry with a token that cannot
    /// change: its supervisor restarts it, with a new token file if the
    /// secret was rotated, at the supervisor's own pace.
    #[error("refused by {coordinator}: {reason}")]
    Unauthenticated { coordinator: String, reason: String },
}

/// Serves the coordinator behind `connection` until `drain` is cancelled
/// and everything held is finished or handed back. Returns once every task
/// it started has ended (or, should one hang, after a bounded wait).
pub async fn run(
    config: WorkerConfig,
    connection: Connection,
    drain: CancellationToken,
) -> Result<(), WorkerError> {
    run_reporting(config, connection, drain, watch::Sender::new(false)).await
}

/// Like [`run`], and keeps `connected` true while a session with the
/// coordinator is up (for health checks).
pub async fn run_reporting(
    config: WorkerConfig,
    connection: Connection,
    drain: CancellationToken,
    connected: watch::Sender<bool>,
) -> Result<(), WorkerError> {
    config.validate()?;
    if config.faults.enabled() {
        tracing::warn!(
            faults = %config.faults,
            "TEST FAULTS ENABLED ({}): this worker slows down or fails chunks on purpose; never use it for real work",
            faults::ENV
        );
    }
    let pool = ComputePool::new(config.threads).map_err(|source| WorkerError::Pool {
        threads: config.threads,
        source,
    })?;
    let pool = Arc::new(pool);
    let runtime = Arc::new(Runtime::new(
        config.wasm_limits.clone(),
        config.wasm_cache_dir.clone(),
    )?);
    let tasks = TaskTracker::new();
    let served = serve(
        &config,
        &connection,
        (&pool, &runtime),
        &drain,
        &connected,
        &tasks,
    )
    .await;
    tasks.close();
    if tokio::time::timeout(TASKS_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(tasks = tasks.len(), timeout = ?TASKS_TIMEOUT, "stopped with tasks still running");
    }
    tracing::info!("stopped");
    served
}

/// Runs sessions, reconnecting, until drained or refused.
async fn serve(
    config: &WorkerConfig,
    connection: &Connection,
    (pool, runtime): (&Arc<ComputePool>, &Arc<Runtime>),
    drain: &CancellationToken,
    connected: &watch::Sender<bool>,
    tasks: &TaskTracker,
) -> Result<(), WorkerError> {
    let mut backoff = Backoff::default();
    let mut attempt = 1u32;
    while !drain.is_cancelled() {
        let ended = session::run(
            connection.clone(),
            config,
            pool,
            runtime,
            drain,
            connected,
            tasks,
        )
        .await;
        connected.send_replace(false);
        match ended {
            Ok(SessionEnd::Drained) => break,
            // Asked to stop anyway (e.g. the embedded cluster stopping its
            // coordinator and worker together): losing the coordinator now
            // is no news, and there is no reconnecting to do.
            Ok(SessionEnd::Lost(reason)) if drain.is_cancelled() => {
                tracing::info!(coordinator = %config.coordinator, %reason, "the session ended while draining");
                break;
            }
            Ok(SessionEnd::Lost(reason)) => {
                tracing::warn!(coordinator = %config.coordinator, %reason, "lost the coordinator; reconnecting");
                backoff.reset();
                attempt = 1;
            }
            Err(SessionError::Refused(reason)) => {
                return Err(WorkerError::Refused {
                    coordinator: config.coordinator.clone(),
                    reason,
                });
            }
            Err(SessionError::Unauthenticated(reason)) => {
                return Err(WorkerError::Unauthenticated {
                    coordinator: config.coordinator.clone(),
                    reason,
                });
            }
            Err(SessionError::Unreachable(reason)) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    coordinator = %config.coordinator,
                    attempt,
                    retry_in = ?delay,
                    %reason,
                    "cannot reach the coordinator"
                );
                attempt += 1;
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = drain.cancelled() => break,
                }
            }
        }
    }
    Ok(())
}
