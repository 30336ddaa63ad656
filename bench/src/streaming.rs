//! Ordered values leaving farm: text on stdout against a loopback TCP
//! copy of the same number of bytes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::args::Args;
use crate::cluster::{LoopbackCluster, farm_command};
use crate::procfs::Watchdog;
use crate::stats::{median_f64, rate_spread, timed};

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
