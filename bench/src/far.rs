//! Far workers: one worker runs the same summary job direct and behind a
//! proxy adding 5, 25 and 100 ms each way (farm-tests' [`Proxy`]); then
//! an `--output` job whose worker sits behind a thin link, against the
//! link's rate. The proxy runs in this process, on a runtime of its own.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use farm_tests::proxy::{Link, Proxy};

use crate::args::Args;
use crate::cluster::{LoopbackCluster, submit_json};
use crate::stats::{median, median_f64, spread};

/// The delays each way of the summary rows; `None` is direct.
const DELAYS_MS: [Option<u64>; 4] = [None, Some(5), Some(25), Some(100)];

/// Each way on the thin link.
const THIN_DELAY: Duration = Duration::from_millis(25);

pub fn run(bin: &Path, args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let cluster = LoopbackCluster::start_with(bin, &[])?;
    let upstream = cluster.address.parse().context("coordinator address")?;
    let n = args.far_n.to_string();
    println!(
        "\n## far workers: one 2-thread worker, sqrt --n {} (summary), {} runs each, interleaved\n",
        args.far_n, args.runs
    );
    // Where the worker connects for each row: the coordinator, or a proxy
    // in front of it. All rows are measured run by run, in turn, so a
    // change in the machine's load falls on every row alike.
    let mut proxies = Vec::new();
    let mut targets = Vec::new();
    for delay in DELAYS_MS {
        match delay {
            Some(ms) => {
                let link = Link::delayed(Duration::from_millis(ms));
                let proxy = runtime.block_on(Proxy::start(upstream, link))?;
                targets.push(proxy.address().to_string());
                proxies.push(proxy);
            }
            None => targets.push(cluster.address.clone()),
        }
    }
    let mut times = vec![Vec::new(); DELAYS_MS.len()];
    let mut rtts = vec![Vec::new(); DELAYS_MS.len()];
    for _ in 0..args.runs {
        for (row, target) in targets.iter().enumerate() {
            let worker = Worker::start(bin, target)?;
            cluster.wait_for_workers(1)?;
            // A worker connected for a while: its round trip known, as
            // after its first pings.
            wait_for_round_trip(&cluster)?;
            let submit = [
                "submit",
                "sqrt",
                "--n",
                &n,
                "--coordinator",
                &cluster.address,
                "--json",
            ];
            times[row].push(submit_json(bin, &submit)?.0);
            let rtt = cluster.status()?["workers"][0]["round_trip_us"]
                .as_u64()
                .unwrap_or(0);
            rtts[row].push(rtt as f64 / 1000.0);
            drop(worker);
            cluster.wait_for_workers(0)?;
        }
    }
    println!(
        "{:<22}{:>24}{:>10}{:>12}",
        "link (each way)", "time", "ratio", "rtt seen"
    );
    let direct = median(&times[0]);
    for (row, delay) in DELAYS_MS.iter().enumerate() {
        println!(
            "{:<22}{:>24}{:>9.2}x{:>10.1}ms",
            delay.map_or("direct".to_owned(), |ms| format!("{ms} ms")),
            spread(&times[row]),
            median(&times[row]).as_secs_f64() / direct.as_secs_f64(),
            median_f64(&rtts[row])
        );
    }
    for proxy in proxies {
        runtime.block_on(proxy.stop(Duration::from_secs(5)));
    }
    thin_link(bin, args, &runtime, &cluster, upstream)
}

/// An `--output` job whose worker is behind a link of `far_link_rate`
/// bytes per second: its values cross the link once, so the job runs at
/// about the link's rate.
fn thin_link(
    bin: &Path,
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    cluster: &LoopbackCluster,
    upstream: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let link = Link::delayed(THIN_DELAY).limited(args.far_link_rate);
    let proxy = runtime.block_on(Proxy::start(upstream, link))?;
    let worker = Worker::start(bin, &proxy.address().to_string())?;
    cluster.wait_for_workers(1)?;
    let path = args
        .dir
        .join(format!("farm-bench-far-{}.bin", std::process::id()));
    let output = path.to_string_lossy().into_owned();
    let n = args.far_output_n.to_string();
    let bytes = args.far_output_n * 8;
    let mut times = Vec::new();
    for _ in 0..args.runs.min(3) {
        let submit = [
            "submit",
            "sqrt",
            "--n",
            &n,
            "--coordinator",
            &cluster.address,
            "--output",
            &output,
            "--json",
        ];
        let started = Instant::now();
        submit_json(bin, &submit)?;
        times.push(started.elapsed());
        let written = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if written != bytes {
            bail!("the thin-link job wrote {written} bytes, not {bytes}");
        }
    }
    let _ = std::fs::remove_file(&path);
    let link_time = bytes as f64 / args.far_link_rate as f64;
    let took = median(&times).as_secs_f64();
    println!(
        "\nthin link ({:.0} MB/s, {} ms each way), --output of {} MB: {} ; \
         the link alone needs {link_time:.2} s: {:.2}x of the link's rate",
        args.far_link_rate as f64 / 1e6,
        THIN_DELAY.as_millis(),
        bytes / 1_000_000,
        spread(&times),
        link_time / took
    );
    drop(worker);
    runtime.block_on(proxy.stop(Duration::from_secs(5)));
    Ok(())
}

/// Waits (at most 20 s) until the coordinator has measured the one
/// worker's round trip.
fn wait_for_round_trip(cluster: &LoopbackCluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.status()?["workers"][0]["round_trip_us"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        if Instant::now() > deadline {
            bail!("the worker's round trip was not measured within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A worker process of two threads, killed on drop.
struct Worker(Child);

impl Worker {
    fn start(bin: &Path, coordinator: &str) -> anyhow::Result<Worker> {
        let child = Command::new(bin.join("farm-worker"))
            .args(["--connect", coordinator, "--threads", "2", "--name", "far"])
            .env("RUST_LOG", "warn")
            .spawn()
            .context("start farm-worker")?;
        Ok(Worker(child))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
