//! The embedded cluster: a coordinator and one worker on every core, in
//! this process. Jobs take the same path as on a real cluster, the same
//! gRPC messages through the same services; only the sockets and HTTP/2
//! are missing: a call is a function call, and the values a worker
//! computes reach the output writer in the buffer they were computed in.

use std::time::Duration;

use farm_coordinator::{CoordinatorConfig, CoordinatorError};
use farm_net::transport::Connection;
use farm_worker::WorkerConfig;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long the embedded parts get to stop once the job is done.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Result bytes the embedded coordinator holds out of order or unread:
/// four 8 MiB chunks.
const EMBEDDED_WINDOW_BYTES: u64 = 32 << 20;

/// A running embedded cluster.
#[derive(Debug)]
pub struct EmbeddedCluster {
    connection: Connection,
    /// Cancelled first: the worker hands back what it holds and ends its
    /// session itself.
    drain_worker: CancellationToken,
    /// Cancelled once the worker is gone, so the coordinator never closes
    /// a live session (which the worker would report as a lost
    /// coordinator).
    stop_coordinator: CancellationToken,
    coordinator: JoinHandle<()>,
    worker: JoinHandle<()>,
}

impl EmbeddedCluster {
    /// Starts a coordinator and a worker with `threads` compute threads.
    pub fn start(threads: usize) -> Result<EmbeddedCluster, CoordinatorError> {
        let stop_coordinator = CancellationToken::new();
        let drain_worker = CancellationToken::new();
        let mut config = CoordinatorConfig::default();
        // One worker on this machine's cores holds a chunk or two at a
        // time, so a smaller reorder window keeps it busy and halves what
        // this process holds for a slow output.
        config.scheduler.window.max_bytes = EMBEDDED_WINDOW_BYTES;
        let (connection, coordinator) =
            farm_coordinator::in_process(config, stop_coordinator.clone().cancelled_owned())?;
        let mut config = WorkerConfig::new("the embedded coordinator");
        config.name = "embedded".to_owned();
        config.threads = threads;
        let worker = tokio::spawn({
            let connection = connection.clone();
            let drain = drain_worker.clone();
            async move {
                if let Err(err) = farm_worker::run(config, connection, drain).await {
                    tracing::error!(%err, "embedded worker failed");
                }
            }
        });
        Ok(EmbeddedCluster {
            connection,
            drain_worker,
            stop_coordinator,
            coordinator,
            worker,
        })
    }

    /// A connection to the embedded coordinator.
    pub fn connection(&self) -> Connection {
        self.connection.clone()
    }

    /// Drains the worker, then stops the coordinator, waiting at most
    /// [`STOP_TIMEOUT`] for both together.
    pub async fn stop(self) {
        let deadline = Instant::now() + STOP_TIMEOUT;
        self.drain_worker.cancel();
        if tokio::time::timeout_at(deadline, self.worker)
            .await
            .is_err()
        {
            tracing::debug!("the embedded worker did not stop within {STOP_TIMEOUT:?}");
        }
        self.stop_coordinator.cancel();
        if tokio::time::timeout_at(deadline, self.coordinator)
            .await
            .is_err()
        {
            tracing::debug!("the embedded coordinator did not stop within {STOP_TIMEOUT:?}");
        }
    }
}
