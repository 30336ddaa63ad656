//! A real coordinator process whose workers are simulated in this process
//! ([`crate::sim_worker`] with values): they answer every lease at once
//! with made-up values on results connections, so nothing on the machine
//! computes and a job's stream times only the path from the workers'
//! sockets through the coordinator to the client.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use crate::cluster::LoopbackCluster;
use crate::sim_worker::{self, Behaviour};

/// Leases each simulated worker holds, as the real worker's prefetch.
const HOLD: u32 = 2;

/// How long the simulated workers may take to register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(20);

/// The coordinator and its simulated workers; all stopped on drop.
pub struct SimulatedCluster {
    pub cluster: LoopbackCluster,
    stop: CancellationToken,
    // Dropped last: the workers' tasks run on it.
    _runtime: Runtime,
}

impl SimulatedCluster {
    pub fn start(bin: &Path, workers: usize) -> anyhow::Result<SimulatedCluster> {
        let cluster = LoopbackCluster::start(bin, 0)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("sim-workers")
            .enable_all()
            .build()?;
        let stop = CancellationToken::new();
        let behaviour = Behaviour {
            hold: HOLD,
            batched: false,
            values: true,
        };
        runtime.block_on(async {
            let channel = farm_proto::transport::endpoint(&cluster.address)?
                .connect()
                .await?;
            for i in 0..workers {
                let session = sim_worker::run(
                    channel.clone(),
                    cluster.address.clone(),
                    format!("sim-{i}"),
                    behaviour,
                    stop.clone(),
                );
                tokio::spawn(async move {
                    if let Err(error) = session.await {
                        eprintln!("simulated worker {i}: {error}");
                    }
                });
            }
            anyhow::Ok(())
        })?;
        let deadline = Instant::now() + REGISTER_TIMEOUT;
        while cluster.status()?["workers"].as_array().map_or(0, Vec::len) != workers {
            if Instant::now() > deadline {
                bail!("the simulated workers did not register within {REGISTER_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(SimulatedCluster {
            cluster,
            stop,
            _runtime: runtime,
        })
    }
}

impl Drop for SimulatedCluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
