//! `--output FILE` against writing the same bytes straight to a file in
//! the same directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::args::Args;
use crate::cluster::{LoopbackCluster, submit_json};
use crate::stats::{ratio, spread};

/// The reference writer's buffer.
const WRITE_BUFFER: usize = 8 << 20;

/// `--output FILE.bin`, embedded and through the coordinator, against
/// writing the same bytes from this process. Neither fsyncs.
pub fn file(bin: &Path, args: &Args) -> anyhow::Result<()> {
    let cluster = LoopbackCluster::start(bin, 2)?;
    let n = args.output_n.to_string();
    let target = args
        .dir
        .join(format!("farm-bench-{}.bin", std::process::id()));
    let target_text = target.to_string_lossy().into_owned();
    let embedded_args = [
        "submit",
        "sqrt",
        "--n",
        &n,
        "--output",
        &target_text,
        "--json",
    ];
    let cluster_args = [
        "submit",
        "sqrt",
        "--n",
        &n,
        "--coordinator",
        &cluster.address,
        "--output",
        &target_text,
        "--json",
    ];
    let bytes = args.output_n * 8;
    let _cleanup = RemoveOnDrop(target.clone());
    let (mut direct, mut embedded, mut remote) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        direct.push(write_directly(&target, bytes)?);
        remove(&target)?;
        embedded.push(submit_json(bin, &embedded_args)?.0);
        check_size(&target, bytes)?;
        remove(&target)?;
        remote.push(submit_json(bin, &cluster_args)?.0);
        check_size(&target, bytes)?;
        remove(&target)?;
    }
    println!(
        "\n## --output FILE: sqrt --n {} to a .bin of {:.2} GB in {}, no fsync, {} runs\n",
        args.output_n,
        bytes as f64 / 1e9,
        args.dir.display(),
        args.runs
    );
    println!("{:<48}{:>34}{:>10}", "writer", "time", "vs direct");
    let rows = [
        ("direct write, 8 MiB write_all (reference)", &direct, ""),
        ("farm embedded --output FILE", &embedded, "target <= 1.10x"),
        (
            "farm --coordinator --output FILE",
            &remote,
            "target <= 1.10x",
        ),
    ];
    for (name, times, note) in rows {
        println!(
            "{name:<48}{:>34}{:>9.2}x   {note}",
            spread(times),
            ratio(times, &direct)
        );
    }
    Ok(())
}

/// Writes `bytes` to a new file at `path` in 8 MiB `write_all`s.
fn write_directly(path: &Path, bytes: u64) -> anyhow::Result<Duration> {
    let buffer = vec![1u8; WRITE_BUFFER];
    let started = Instant::now();
    let mut file = std::fs::File::create(path)?;
    let mut left = bytes;
    while left > 0 {
        let now = left.min(WRITE_BUFFER as u64) as usize;
        file.write_all(&buffer[..now])?;
        left -= now as u64;
    }
    drop(file);
    Ok(started.elapsed())
}

fn check_size(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let size = std::fs::metadata(path)?.len();
    if size != bytes {
        bail!("{} has {size} bytes, not {bytes}", path.display());
    }
    Ok(())
}

pub fn remove(path: &Path) -> anyhow::Result<()> {
    std::fs::remove_file(path).with_context(|| format!("remove {}", path.display()))
}

/// Removes a file however the section ends.
#[derive(Debug)]
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
