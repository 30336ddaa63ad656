//! Peak resident memory of the coordinator and of the clients while a job
//! streams its values to a file. The target is 256 MB at
//! n = 2e9, which writes 16 GB. Values the coordinator holds in pipes are
//! kernel memory, outside its resident set: the most it held is read from
//! `farm workers` and added to its row.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, bail};

use crate::args::Args;
use crate::cluster::{COMMAND_TIMEOUT, LoopbackCluster, farm_command};
use crate::output::{RemoveOnDrop, remove};
use crate::procfs;

/// The target for every process.
const TARGET_BYTES: u64 = 256 << 20;

pub fn run(bin: &Path, args: &Args) -> anyhow::Result<()> {
    let n = args.mem_n.to_string();
    let target = args
        .dir
        .join(format!("farm-bench-mem-{}.bin", std::process::id()));
    let target_text = target.to_string_lossy().into_owned();
    let _cleanup = RemoveOnDrop(target.clone());

    let cluster = LoopbackCluster::start(bin, 2)?;
    let client = peak_of_farm(
        bin,
        &[
            "submit",
            "sqrt",
            "--n",
            &n,
            "--coordinator",
            &cluster.address,
            "--output",
            &target_text,
        ],
    )?;
    remove(&target)?;
    // Read just before the cluster is stopped: the high-water mark covers
    // the whole job.
    let coordinator = procfs::peak_rss(cluster.coordinator_pid())?;
    let piped = cluster.status()?["piped_values"]["peak_bytes"]
        .as_u64()
        .context("farm workers --json has no piped_values.peak_bytes")?;
    let workers = cluster
        .worker_pids()
        .into_iter()
        .map(procfs::peak_rss)
        .collect::<Result<Vec<_>, _>>()?;
    drop(cluster);
    let embedded = peak_of_farm(
        bin,
        &["submit", "sqrt", "--n", &n, "--output", &target_text],
    )?;
    remove(&target)?;

    println!(
        "\n## memory: peak RSS with sqrt --n {} --output FILE.bin ({:.2} GB written to {})\n",
        args.mem_n,
        args.mem_n as f64 * 8.0 / 1e9,
        args.dir.display()
    );
    println!(
        "{:<46}{:>10.1} MB   (kernel memory, most held at once)",
        "coordinator's values in pipes",
        piped as f64 / 1e6
    );
    let rows = [
        ("coordinator (VmHWM before stopping it)", coordinator),
        ("coordinator, VmHWM + values in pipes", coordinator + piped),
        ("farm --coordinator client (VmHWM until exit)", client),
        ("farm embedded (VmHWM until exit)", embedded),
    ];
    for (name, bytes) in rows {
        println!(
            "{name:<46}{:>10.1} MB   {:.2}x the target of {} MB",
            bytes as f64 / 1e6,
            bytes as f64 / TARGET_BYTES as f64,
            TARGET_BYTES >> 20
        );
    }
    for (i, bytes) in workers.iter().enumerate() {
        println!(
            "{:<46}{:>10.1} MB",
            format!("worker {i} (VmHWM)"),
            *bytes as f64 / 1e6
        );
    }
    Ok(())
}

/// Runs `farm` to completion and returns its peak resident set size.
fn peak_of_farm(bin: &Path, args: &[&str]) -> anyhow::Result<u64> {
    let child = farm_command(bin, args).stdout(Stdio::null()).spawn()?;
    let (status, peak) = procfs::wait_with_peak_rss(&child, COMMAND_TIMEOUT)?;
    if !status.success() {
        bail!("farm {args:?} failed ({status})");
    }
    Ok(peak)
}
