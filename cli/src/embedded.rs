//! The embedded cluster: a coordinator and one worker on every core, in
//! this process, joined by the in-process transport. Jobs go through the
//! same gRPC path as on a real cluster; only the sockets are missing.

use std::time::Duration;

use tokio::time::Instant;

use farm_coordinator::CoordinatorConfig;
use farm_proto::transport;
use farm_worker::WorkerConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// How long the embedded parts get to stop once the job is done.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Result bytes the embedded coordinator holds out of order or unread:
/// four 8 MiB chunks.
const EMBEDDED_WINDOW_BYTES: u64 = 32 << 20;

/// A running embedded cluster.
#[derive(Debug)]
pub struct EmbeddedCluster {
    channel: Channel,
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
    pub fn start(threads: usize) -> EmbeddedCluster {
        let (connector, incoming) = transport::in_process();
        let stop_coordinator = CancellationToken::new();
        let drain_worker = CancellationToken::new();
        let coordinator = tokio::spawn({
            let stop = stop_coordinator.clone();
            async move {
                let mut config = CoordinatorConfig::default();
                // One worker on this machine's cores holds a chunk or two
                // at a time, so a smaller reorder window keeps it busy and
                // halves what this process holds for a slow output.
                config.scheduler.window.max_bytes = EMBEDDED_WINDOW_BYTES;
                if let Err(err) =
                    farm_coordinator::run(config, incoming, stop.cancelled_owned()).await
                {
                    tracing::error!(%err, "embedded coordinator failed");
                }
            }
        });
        let mut config = WorkerConfig::new("the embedded coordinator");
        config.name = "embedded".to_owned();
        config.threads = threads;
        let worker = tokio::spawn({
            let channel = connector.channel();
            let drain = drain_worker.clone();
            async move {
                if let Err(err) = farm_worker::run(config, channel, drain).await {
                    tracing::error!(%err, "embedded worker failed");
                }
            }
        });
        EmbeddedCluster {
            channel: connector.channel(),
            drain_worker,
            stop_coordinator,
            coordinator,
            worker,
        }
    }

    /// A channel to the embedded coordinator.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
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
