//! Scheduling rate in chunks per second: tiny chunks over real gRPC to
//! real worker processes, and a simulated cluster of many workers that
//! answer at once (see [`crate::sim_worker`]), against a simulated
//! cluster of a few, both on a coordinator started in this process.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use farm_catalog::grid::LEAF_LEN;
use farm_cli::client::{JobRequest, cluster_status, run_job};
use farm_coordinator::CoordinatorConfig;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::args::{Args, SimReport};
use crate::cluster::{LoopbackCluster, submit_json};
use crate::sim_worker;
use crate::stats::{median_f64, rate_spread};

/// Sessions (HTTP/2 streams) per connection, well under the server's
/// limit on concurrent streams.
const SESSIONS_PER_CHANNEL: usize = 100;

/// How long the simulated workers may take to register, and a job to run.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
const JOB_TIMEOUT: Duration = Duration::from_secs(600);

/// The target for a 1,000-worker cluster.
const TARGET_CHUNKS_PER_S: f64 = 50_000.0;

pub fn run(bin: &Path, args: &Args) -> anyhow::Result<()> {
    println!("\n## scheduling: chunks of {LEAF_LEN} elements per second\n");
    real_grpc(bin, args)?;
    simulated(args)
}

/// `farm submit --chunk-size 4096` against real worker processes.
fn real_grpc(bin: &Path, args: &Args) -> anyhow::Result<()> {
    let cluster = LoopbackCluster::start(bin, args.real_workers)?;
    let n = (args.real_chunks * LEAF_LEN).to_string();
    let submit = [
        "submit",
        "sqrt",
        "--n",
        &n,
        "--chunk-size",
        "4096",
        "--coordinator",
        &cluster.address,
        "--json",
    ];
    let mut rates = Vec::new();
    for _ in 0..args.runs {
        let (_, summary) = submit_json(bin, &submit)?;
        let chunks = summary["chunks"].as_f64().context("chunks in --json")?;
        let seconds = summary["elapsed_s"]
            .as_f64()
            .context("elapsed_s in --json")?;
        rates.push(chunks / seconds);
    }
    println!(
        "real gRPC, coordinator + {} worker processes, {} chunks: {}   (chunks / elapsed_s of --json, {} runs)",
        args.real_workers,
        args.real_chunks,
        rate_spread(&rates, 1e3, "k chunks/s"),
        args.runs
    );
    Ok(())
}

/// Many simulated workers against a few, interleaved run by run.
fn simulated(args: &Args) -> anyhow::Result<()> {
    // The coordinator gets its own runtime, as it would its own process;
    // the simulated workers and the client share the other.
    let coordinator = tokio::runtime::Builder::new_multi_thread()
        .thread_name("coordinator")
        .enable_all()
        .build()?;
    let workers = tokio::runtime::Builder::new_multi_thread()
        .thread_name("sim-workers")
        .enable_all()
        .build()?;
    let behaviour = sim_worker::Behaviour {
        hold: args.sim_hold,
        batched: args.sim_report == SimReport::Batched,
        values: false,
    };
    let rate = |count| sim_rate(&coordinator, &workers, count, args.sim_chunks, behaviour);
    let (mut few, mut many) = (Vec::new(), Vec::new());
    for _ in 0..args.sim_runs {
        few.push(rate(args.sim_few_workers)?);
        many.push(rate(args.sim_workers)?);
    }
    println!(
        "simulated workers hold {} leases each and report {:?}",
        args.sim_hold, args.sim_report
    );
    println!(
        "simulated, {:>5} workers, {} chunks: {}   (reference)",
        args.sim_few_workers,
        args.sim_chunks,
        rate_spread(&few, 1e3, "k chunks/s")
    );
    println!(
        "simulated, {:>5} workers, {} chunks: {}",
        args.sim_workers,
        args.sim_chunks,
        rate_spread(&many, 1e3, "k chunks/s")
    );
    println!(
        "{} vs {} simulated workers: {:.2}x; vs the target of {TARGET_CHUNKS_PER_S} chunks/s: {:.2}x (target >= 1.00x)",
        args.sim_workers,
        args.sim_few_workers,
        median_f64(&many) / median_f64(&few),
        median_f64(&many) / TARGET_CHUNKS_PER_S
    );
    Ok(())
}

/// Starts a coordinator on loopback, connects `count` simulated workers,
/// runs one summary-only job of `chunks` chunks and returns chunks/s
/// (submission to the finished summary, as the client sees it).
fn sim_rate(
    coordinator: &Runtime,
    workers: &Runtime,
    count: usize,
    chunks: u64,
    behaviour: sim_worker::Behaviour,
) -> anyhow::Result<f64> {
    let listener =
        coordinator.block_on(async { tokio::net::TcpListener::bind("127.0.0.1:0").await })?;
    let address = listener.local_addr()?.to_string();
    let stop_coordinator = CancellationToken::new();
    let served = coordinator.spawn(farm_coordinator::run_tcp(
        CoordinatorConfig::default(),
        listener,
        stop_coordinator.clone().cancelled_owned(),
    ));
    let rate = workers.block_on(async {
        let stop = CancellationToken::new();
        // Cancels the workers however this block ends.
        let _stop_guard = stop.clone().drop_guard();
        let mut channels = Vec::new();
        for _ in 0..count.div_ceil(SESSIONS_PER_CHANNEL) {
            channels.push(farm_net::transport::endpoint(&address)?.connect().await?);
        }
        let mut sims = Vec::new();
        for i in 0..count {
            let channel = channels[i / SESSIONS_PER_CHANNEL].clone();
            let name = format!("sim-{i}");
            sims.push(tokio::spawn(sim_worker::run(
                channel,
                address.clone(),
                name,
                behaviour,
                stop.clone(),
            )));
        }
        let client = channels[0].clone();
        wait_for_workers(&client, &address, count).await?;
        let request = JobRequest {
            function: "sqrt".to_owned(),
            start: 0,
            n: chunks * LEAF_LEN,
            chunk_size: Some(LEAF_LEN),
            stream_values: false,
            values_connection: false,
            wasm_module: bytes::Bytes::new(),
        };
        let started = Instant::now();
        let report = tokio::time::timeout(
            JOB_TIMEOUT,
            run_job(client.into(), &address, &request, None),
        )
        .await
        .context("the simulated job ran over 10 minutes")??;
        let took = started.elapsed();
        if report.chunks != chunks {
            bail!("the job had {} chunks, not {chunks}", report.chunks);
        }
        stop.cancel();
        for sim in sims {
            tokio::time::timeout(Duration::from_secs(10), sim)
                .await
                .context("a simulated worker did not stop")???;
        }
        Ok::<_, anyhow::Error>(chunks as f64 / took.as_secs_f64())
    });
    stop_coordinator.cancel();
    coordinator
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), served).await })
        .context("the coordinator did not stop within 10 s")???;
    rate
}

async fn wait_for_workers(channel: &Channel, address: &str, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    loop {
        let status = cluster_status(channel.clone().into(), address).await?;
        if status.workers.len() == count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {count} simulated workers registered within {REGISTER_TIMEOUT:?}",
                status.workers.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
