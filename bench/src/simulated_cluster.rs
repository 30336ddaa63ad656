//! A real coordinator process whose workers are simulated in this process
//! ([`crate::sim_worker`] with values): they answer every lease at once
//! with made-up values on results connections, so nothing on the machine
//! computes and a job's stream times only the path from the workers'
//! sockets through the coordinator to the client.

use std::path::Path;

use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use crate::cluster::LoopbackCluster;
use crate::sim_worker::{self, Behaviour};

/// Leases each simulated worker holds, as the real worker's prefetch.
const HOLD: u32 = 2;

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
            let channel = farm_net::transport::endpoint(&cluster.address)?
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
        cluster.wait_for_workers(workers)?;
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
