//! Large jobs (farm embedded and on a loopback cluster against a plain
//! rayon loop), the worker's CPU use on a long job, and tiny jobs from
//! process start to exit.

use std::path::Path;

use anyhow::bail;
use farm_catalog::{Function, Reducer, Summary, evaluate};

use crate::args::Args;
use crate::cluster::{LoopbackCluster, digest, submit_json};
use crate::procfs;
use crate::stats::{median, median_f64, rate_spread, ratio, spread, timed};

pub fn large_jobs(bin: &Path, args: &Args) -> anyhow::Result<()> {
    let cluster = LoopbackCluster::start(bin, 2)?;
    let serial_pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let threads = rayon::current_num_threads();
    for &n in &args.compute_n {
        let n_text = n.to_string();
        let embedded_args = ["submit", "sqrt", "--n", &n_text, "--json"];
        let cluster_args = [
            "submit",
            "sqrt",
            "--n",
            &n_text,
            "--coordinator",
            &cluster.address,
            "--json",
        ];
        let (mut rayon, mut serial, mut embedded, mut remote) = (vec![], vec![], vec![], vec![]);
        let mut digests = Vec::new();
        for _ in 0..args.runs {
            let (time, summary) = timed(|| reference_summary(n));
            rayon.push(time);
            digests.push(summary?.digest.to_string());
            let (time, summary) = timed(|| serial_pool.install(|| reference_summary(n)));
            serial.push(time);
            digests.push(summary?.digest.to_string());
            let (time, summary) = submit_json(bin, &embedded_args)?;
            embedded.push(time);
            digests.push(digest(&summary));
            let (time, summary) = submit_json(bin, &cluster_args)?;
            remote.push(time);
            digests.push(digest(&summary));
        }
        digests.dedup();
        if digests.len() != 1 {
            bail!("the runs of n = {n} disagree on the digest: {digests:?}");
        }
        println!(
            "\n## compute: sqrt --n {n} on {threads} cores, {} runs each (median [min..max])\n",
            args.runs
        );
        println!("{:<34}{:>34}{:>10}", "job", "time", "vs rayon");
        let rows = [
            ("plain rayon loop (reference)", &rayon, ""),
            ("serial loop, 1 thread", &serial, ""),
            ("farm, embedded", &embedded, "target <= 1.20x"),
            ("farm, coordinator + 2 workers", &remote, "target <= 1.20x"),
        ];
        for (name, times, note) in rows {
            println!(
                "{name:<34}{:>34}{:>9.2}x   {note}",
                spread(times),
                ratio(times, &rayon)
            );
        }
        println!(
            "loopback cluster vs embedded: {:.2}x   (target <= 1.30x)",
            ratio(&remote, &embedded)
        );
        println!(
            "elements/s: rayon {:.3e}, embedded {:.3e}, cluster {:.3e}",
            n as f64 / median(&rayon).as_secs_f64(),
            n as f64 / median(&embedded).as_secs_f64(),
            n as f64 / median(&remote).as_secs_f64()
        );
        println!(
            "digest of every run: {}",
            digests.first().map_or("", String::as_str)
        );
    }
    drop(cluster);
    worker_cpu_use(bin, args)
}

/// CPU time of the one worker of a cluster over a long job, against the
/// wall time of the job times the worker's compute threads. The reference
/// is the same ratio for the plain rayon loop in this process, measured
/// run by run: what a process of that many threads gets from the machine
/// at the moment (much less than 100 % on a shared machine).
fn worker_cpu_use(bin: &Path, args: &Args) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let cluster = LoopbackCluster::start_with(bin, &[vec![format!("--threads={threads}")]])?;
    let worker = cluster.worker_pids()[0];
    let n = args.cpu_n.to_string();
    let runs = args.runs.min(3);
    let (mut worker_use, mut rayon_use, mut walls) = (Vec::new(), Vec::new(), Vec::new());
    let share = |used: std::time::Duration, wall: std::time::Duration| {
        used.as_secs_f64() / (wall.as_secs_f64() * threads as f64)
    };
    for _ in 0..runs {
        let before = procfs::cpu_time(worker)?;
        let (wall, _) = submit_json(
            bin,
            &[
                "submit",
                "sqrt",
                "--n",
                &n,
                "--coordinator",
                &cluster.address,
                "--json",
            ],
        )?;
        worker_use.push(share(procfs::cpu_time(worker)? - before, wall));
        walls.push(wall);
        let before = procfs::cpu_time(std::process::id())?;
        let (wall, summary) = timed(|| reference_summary(args.cpu_n));
        summary?;
        rayon_use.push(share(procfs::cpu_time(std::process::id())? - before, wall));
    }
    println!(
        "\n## worker CPU use: sqrt --n {} on a coordinator + 1 worker of {threads} threads, {runs} runs\n",
        args.cpu_n
    );
    println!("job wall time {}", spread(&walls));
    println!("CPU time (utime+stime) / (wall x {threads} threads):");
    println!(
        "  farm-worker process                  {}   (target >= 95 %)",
        rate_spread(&worker_use, 0.01, "%")
    );
    println!(
        "  plain rayon loop, same n (reference) {}",
        rate_spread(&rayon_use, 0.01, "%")
    );
    println!(
        "worker vs reference: {:.2}x",
        median_f64(&worker_use) / median_f64(&rayon_use)
    );
    Ok(())
}

pub fn small_jobs(bin: &Path, args: &Args) -> anyhow::Result<()> {
    let cluster = LoopbackCluster::start(bin, 2)?;
    let n = args.small_n.to_string();
    let mut embedded = Vec::new();
    let mut remote = Vec::new();
    for _ in 0..args.small_runs {
        embedded.push(submit_json(bin, &["submit", "sqrt", "--n", &n, "--json"])?.0);
        let against = [
            "submit",
            "sqrt",
            "--n",
            &n,
            "--coordinator",
            &cluster.address,
            "--json",
        ];
        remote.push(submit_json(bin, &against)?.0);
    }
    println!(
        "\n## small jobs: sqrt --n {} from process start to exit, {} runs (median [min..max])\n",
        args.small_n, args.small_runs
    );
    println!(
        "embedded default     {}   (target < 10 ms)",
        spread(&embedded)
    );
    println!("against the cluster  {}", spread(&remote));
    Ok(())
}

/// The reference: the catalog's kernel over the whole range on the
/// current rayon pool, reduced the same way a farm job is.
fn reference_summary(n: u64) -> anyhow::Result<Summary> {
    let out = evaluate(Function::Sqrt, 0, 0..n, false)?;
    let mut reducer = Reducer::new();
    reducer.push_chunk(n, &out.summary)?;
    Ok(reducer.finish(n)?)
}
