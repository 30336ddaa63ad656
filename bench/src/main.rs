//! farm's benchmark. Measures, interleaved in one run on this machine:
//!
//! - a plain rayon loop computing the same summary (the reference),
//! - the same loop on one thread (serial),
//! - `farm submit` on the embedded default (process start to exit),
//! - `farm submit` against a coordinator and two worker processes on
//!   loopback,
//! - a tiny job (`--n 1e5`) from process start to exit, embedded and
//!   against the cluster,
//!
//! and prints medians and ratios. It never fails on a time: machines are
//! shared and noisy, so only ratios measured side by side mean much.
//!
//! Run: `cargo run --release -p farm-bench` (see bench/README.md).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use farm_catalog::{Function, Reducer, Summary, evaluate};

#[derive(Debug, Parser)]
struct Args {
    /// Elements of the main job.
    #[arg(long, default_value = "1e9", value_parser = farm_cli::number::parse_count)]
    n: u64,
    /// Repetitions of each main measurement (medians are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Repetitions of the tiny job.
    #[arg(long, default_value_t = 50)]
    small_runs: usize,
    /// Elements of the tiny job.
    #[arg(long, default_value = "1e5", value_parser = farm_cli::number::parse_count)]
    small_n: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = build_binaries()?;
    let cluster = LoopbackCluster::start(&bin, 2)?;
    let address = cluster.address.clone();
    let n = args.n.to_string();
    let small_n = args.small_n.to_string();
    let serial_pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let threads = rayon::current_num_threads();

    println!(
        "farm bench: sqrt --n {} on {threads} cores, {} runs each (median [min..max])\n",
        args.n, args.runs
    );
    let mut rayon_times = Vec::new();
    let mut serial_times = Vec::new();
    let mut embedded_times = Vec::new();
    let mut cluster_times = Vec::new();
    let mut digests = Vec::new();
    for _ in 0..args.runs {
        let (time, summary) = timed(|| reference_summary(args.n));
        rayon_times.push(time);
        digests.push(summary.digest.to_string());
        let (time, summary) = timed(|| serial_pool.install(|| reference_summary(args.n)));
        serial_times.push(time);
        digests.push(summary.digest.to_string());
        let (time, digest) = farm_submit(&bin, &["submit", "sqrt", "--n", &n, "--json"])?;
        embedded_times.push(time);
        digests.push(digest);
        let (time, digest) = farm_submit(
            &bin,
            &[
                "submit",
                "sqrt",
                "--n",
                &n,
                "--coordinator",
                &address,
                "--json",
            ],
        )?;
        cluster_times.push(time);
        digests.push(digest);
    }
    digests.dedup();
    if digests.len() != 1 {
        bail!("the runs disagree on the digest: {digests:?}");
    }

    let mut small_embedded = Vec::new();
    let mut small_cluster = Vec::new();
    for _ in 0..args.small_runs {
        small_embedded.push(farm_submit(&bin, &["submit", "sqrt", "--n", &small_n, "--json"])?.0);
        small_cluster.push(
            farm_submit(
                &bin,
                &[
                    "submit",
                    "sqrt",
                    "--n",
                    &small_n,
                    "--coordinator",
                    &address,
                    "--json",
                ],
            )?
            .0,
        );
    }

    let rayon = median(&rayon_times);
    let embedded = median(&embedded_times);
    let rows = [
        (
            "plain rayon loop (reference)",
            &rayon_times,
            rayon,
            "1.00 (reference)",
        ),
        ("serial loop, 1 thread", &serial_times, rayon, ""),
        (
            "farm, embedded",
            &embedded_times,
            rayon,
            "target <= 1.20x rayon",
        ),
        ("farm, coordinator + 2 workers", &cluster_times, rayon, ""),
    ];
    println!("{:<34}{:>28}{:>14}", "job", "time", "vs rayon");
    for (name, times, base, note) in rows {
        println!(
            "{name:<34}{:>28}{:>13.2}x   {note}",
            spread(times),
            median(times).as_secs_f64() / base.as_secs_f64()
        );
    }
    println!(
        "\nloopback cluster vs embedded: {:.2}x   (target <= 1.30x)",
        median(&cluster_times).as_secs_f64() / embedded.as_secs_f64()
    );
    println!(
        "elements/s: rayon {:.3e}, embedded {:.3e}",
        args.n as f64 / rayon.as_secs_f64(),
        args.n as f64 / embedded.as_secs_f64()
    );
    println!(
        "\nsqrt --n {} from process start to exit, {} runs (median [min..max]):",
        args.small_n, args.small_runs
    );
    println!(
        "  embedded default     {}   (target < 10 ms)",
        spread(&small_embedded)
    );
    println!("  against the cluster  {}", spread(&small_cluster));
    println!("\ndigest of every run: {}", digests[0]);
    Ok(())
}

/// The reference: the catalog's kernel over the whole range on the
/// current rayon pool, reduced the same way a farm job is.
fn reference_summary(n: u64) -> Summary {
    let out = evaluate(Function::Sqrt, 0, 0..n, false).expect("a valid range");
    let mut reducer = Reducer::new();
    reducer
        .push_chunk(n, &out.summary)
        .expect("one whole chunk");
    reducer.finish(n).expect("all elements")
}

fn timed<T>(work: impl FnOnce() -> T) -> (Duration, T) {
    let started = Instant::now();
    let result = work();
    (started.elapsed(), result)
}

/// Runs `farm` with `args` and returns its wall time and digest.
fn farm_submit(bin: &std::path::Path, args: &[&str]) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let out = Command::new(bin.join("farm"))
        .args(args)
        .env_remove("FARM_COORDINATOR")
        .output()
        .context("run farm")?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "farm {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let digest = summary["digest"].as_str().unwrap_or_default().to_owned();
    Ok((took, digest))
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn spread(times: &[Duration]) -> String {
    let show = |d: Duration| {
        if d < Duration::from_secs(1) {
            format!("{:.2} ms", d.as_secs_f64() * 1e3)
        } else {
            format!("{:.3} s", d.as_secs_f64())
        }
    };
    let min = times.iter().min().copied().unwrap_or_default();
    let max = times.iter().max().copied().unwrap_or_default();
    format!("{} [{}..{}]", show(median(times)), show(min), show(max))
}

/// Builds the release binaries and returns their directory.
fn build_binaries() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "farm-cli",
            "-p",
            "farm-coordinator",
            "-p",
            "farm-worker",
        ])
        .status()
        .context("run cargo build")?;
    if !status.success() {
        bail!("building the release binaries failed");
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .context("bench binary directory")?
        .to_path_buf();
    Ok(dir)
}

/// A coordinator and workers as separate processes on loopback, killed on
/// drop.
struct LoopbackCluster {
    address: String,
    children: Vec<Child>,
}

impl LoopbackCluster {
    fn start(bin: &std::path::Path, workers: usize) -> anyhow::Result<LoopbackCluster> {
        let mut coordinator = Command::new(bin.join("farm-coordinator"))
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .context("start farm-coordinator")?;
        let stdout = coordinator.stdout.take().context("coordinator stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line
            .trim()
            .rsplit(' ')
            .next()
            .context("coordinator address")?
            .to_owned();
        let mut cluster = LoopbackCluster {
            address,
            children: vec![coordinator],
        };
        for _ in 0..workers {
            let worker = Command::new(bin.join("farm-worker"))
                .args(["--connect", &cluster.address])
                .env("RUST_LOG", "warn")
                .spawn()
                .context("start farm-worker")?;
            cluster.children.push(worker);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new(bin.join("farm"))
                .args(["workers", "--coordinator", &cluster.address, "--json"])
                .output()?;
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if status["workers"].as_array().map_or(0, Vec::len) == workers {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                bail!("the workers did not register");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LoopbackCluster {
    fn drop(&mut self) {
        // Workers first, so they do not log a lost coordinator.
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
