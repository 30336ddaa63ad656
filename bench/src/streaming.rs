//! Ordered values leaving farm: text on stdout against a loopback TCP
//! copy of the same number of bytes, and `--output FILE` against writing
//! the same bytes straight to a file in the same directory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::args::Args;
use crate::cluster::{LoopbackCluster, farm_command, submit_json};
use crate::procfs::Watchdog;
use crate::stats::{median_f64, rate_spread, ratio, spread, timed};

/// Buffers of the reference writers, and of the bench's readers.
const WRITE_BUFFER: usize = 8 << 20;
const READ_BUFFER: usize = 1 << 20;

/// `--output -` through the coordinator, against loopback TCP.
pub fn stdout(bin: &Path, args: &Args) -> anyhow::Result<()> {
    let cluster = LoopbackCluster::start(bin, 2)?;
    let n = args.stream_n.to_string();
    let submit = [
        "submit",
        "sqrt",
        "--n",
        &n,
        "--coordinator",
        &cluster.address,
        "--output",
        "-",
        "--json",
    ];
    let (mut farm, mut tcp) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..args.runs {
        let (took, read) = farm_to_stdout(bin, &submit)?;
        bytes = read;
        farm.push(read as f64 / took.as_secs_f64());
        tcp.push(read as f64 / loopback_tcp(read)?.as_secs_f64());
    }
    println!(
        "\n## streaming: sqrt --n {} as text on stdout ({:.2} GB), {} runs\n",
        args.stream_n,
        bytes as f64 / 1e9,
        args.runs
    );
    println!(
        "farm --coordinator --output -, stdout read by the bench  {}   (target >= 2 GB/s)",
        rate_spread(&farm, 1e9, "GB/s")
    );
    println!(
        "loopback TCP, one thread writing 8 MiB buffers (reference) {}",
        rate_spread(&tcp, 1e9, "GB/s")
    );
    println!(
        "farm vs loopback TCP: {:.2}x",
        median_f64(&farm) / median_f64(&tcp)
    );
    Ok(())
}

/// Runs `farm` with its stdout read and thrown away by this process;
/// returns its wall time (start to exit) and the bytes read.
fn farm_to_stdout(bin: &Path, args: &[&str]) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let mut child = farm_command(bin, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start farm")?;
    let _watchdog = Watchdog::new(child.id(), crate::cluster::COMMAND_TIMEOUT);
    let mut stdout = child.stdout.take().context("farm's stdout")?;
    let mut stderr = child.stderr.take().context("farm's stderr")?;
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let bytes = discard(&mut stdout)?;
    let status = child.wait()?;
    let took = started.elapsed();
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        bail!("farm {args:?} failed ({status}): {errors}");
    }
    Ok((took, bytes))
}

/// Reads `from` to the end, throwing the bytes away; returns how many.
fn discard(from: &mut impl Read) -> std::io::Result<u64> {
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut total = 0;
    loop {
        match from.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(read) => total += read as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The reference: one thread writes `bytes` over a TcpStream on 127.0.0.1
/// in 8 MiB buffers to a reader that discards them; returns the time from
/// connecting to the reader's end of stream.
fn loopback_tcp(bytes: u64) -> anyhow::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        discard(&mut stream)
    });
    let buffer = vec![1u8; WRITE_BUFFER];
    let (took, read) = timed(|| -> anyhow::Result<u64> {
        let mut stream = TcpStream::connect(address)?;
        stream.set_write_timeout(Some(Duration::from_secs(60)))?;
        let mut left = bytes;
        while left > 0 {
            let now = left.min(WRITE_BUFFER as u64) as usize;
            stream.write_all(&buffer[..now])?;
            left -= now as u64;
        }
        drop(stream);
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reader panicked"))??;
        Ok(read)
    });
    if read? != bytes {
        bail!("the loopback reader did not get all {bytes} bytes");
    }
    Ok(took)
}

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
