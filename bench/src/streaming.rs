//! Ordered values leaving farm on stdout, read and thrown away by the
//! bench: the raw f64 stream (`--output - --format bin`) through a
//! loopback cluster and embedded, against the same bytes over one and two
//! loopback TCP hops; and text (`--output -`) as a secondary row. A
//! coordinator with simulated workers that send made-up values without
//! computing them ([`SimulatedCluster`]) times the path from the workers
//! through the coordinator to the client alone.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::args::Args;
use crate::cluster::{LoopbackCluster, farm_command};
use crate::loopback::{self, Timing};
use crate::procfs::Watchdog;
use crate::simulated_cluster::SimulatedCluster;
use crate::stats::{median_f64, rate_spread};

/// The raw streams measured in each run: one after another, starting one
/// further along the list each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    FarmCluster,
    FarmEmbedded,
    FarmSimulatedWorkers,
    OneHop,
    TwoHops,
}

impl Stream {
    const ALL: [Stream; 5] = [
        Stream::FarmCluster,
        Stream::FarmEmbedded,
        Stream::FarmSimulatedWorkers,
        Stream::OneHop,
        Stream::TwoHops,
    ];

    fn name(self) -> &'static str {
        match self {
            Stream::FarmCluster => "farm --coordinator --output - --format bin",
            Stream::FarmEmbedded => "farm embedded --output - --format bin",
            Stream::FarmSimulatedWorkers => "the same, 2 simulated workers (no compute)",
            Stream::OneHop => "loopback TCP, 1 hop (reference)",
            Stream::TwoHops => "loopback TCP, 2 hops via a relay (reference)",
        }
    }
}

pub fn run(bin: &Path, args: &Args) -> anyhow::Result<()> {
    let cluster = LoopbackCluster::start(bin, 2)?;
    let n = args.stream_n;
    let n_text = n.to_string();
    let binary = ["--output", "-", "--format", "bin"];
    let cluster_args = submit_args(&n_text, Some(&cluster.address), &binary);
    let simulated = SimulatedCluster::start(bin, 2)?;
    let simulated_args = submit_args(&n_text, Some(&simulated.cluster.address), &binary);
    let embedded_args = submit_args(&n_text, None, &binary);
    let text_n = args.stream_text_n.to_string();
    let text_args = submit_args(&text_n, Some(&cluster.address), &["--output", "-"]);

    let mut timings: [Vec<Timing>; Stream::ALL.len()] = Default::default();
    let mut text = Vec::new();
    for run in 0..args.runs {
        for k in 0..Stream::ALL.len() {
            let stream = Stream::ALL[(run + k) % Stream::ALL.len()];
            let timing = match stream {
                Stream::FarmCluster => farm_to_stdout(bin, &cluster_args, n, Some(8 * n))?,
                Stream::FarmEmbedded => farm_to_stdout(bin, &embedded_args, n, Some(8 * n))?,
                Stream::FarmSimulatedWorkers => {
                    farm_to_stdout(bin, &simulated_args, n, Some(8 * n))?
                }
                Stream::OneHop => loopback::one_hop(8 * n)?,
                Stream::TwoHops => loopback::two_hops(8 * n)?,
            };
            timings[stream as usize].push(timing);
        }
        if args.stream_text_n > 0 {
            text.push(farm_to_stdout(bin, &text_args, args.stream_text_n, None)?);
        }
    }

    println!(
        "\n## streaming: sqrt --n {n} as raw f64 on stdout ({:.2} GB), {} runs interleaved, median [min..max]\n",
        (8 * n) as f64 / 1e9,
        args.runs
    );
    let one_hop = median_rate(&timings[Stream::OneHop as usize]);
    let two_hops = median_rate(&timings[Stream::TwoHops as usize]);
    println!(
        "{:<52}{:>30}{:>30}{:>10}{:>10}",
        "stream", "start to exit", "first byte to end", "vs 1 hop", "vs 2 hops"
    );
    let references = (one_hop, two_hops);
    for stream in Stream::ALL {
        let note = if stream == Stream::FarmCluster {
            "target >= 2 GB/s"
        } else {
            ""
        };
        print_row(stream.name(), &timings[stream as usize], references, note);
    }
    if !text.is_empty() {
        let name = format!(
            "text: farm --coordinator --output - (n {})",
            args.stream_text_n
        );
        print_row(&name, &text, references, "");
    }
    Ok(())
}

fn median_rate(timings: &[Timing]) -> f64 {
    median_f64(&timings.iter().map(Timing::rate).collect::<Vec<_>>())
}

/// One stream's rates, and its median start-to-exit rate over the
/// references' (one hop, two hops).
fn print_row(name: &str, timings: &[Timing], (one_hop, two_hops): (f64, f64), note: &str) {
    let rate: Vec<f64> = timings.iter().map(Timing::rate).collect();
    let streaming: Vec<f64> = timings.iter().map(Timing::streaming_rate).collect();
    let line = format!(
        "{name:<52}{:>30}{:>30}{:>9.2}x{:>9.2}x   {note}",
        rate_spread(&rate, 1e9, "GB/s"),
        rate_spread(&streaming, 1e9, "GB/s"),
        median_f64(&rate) / one_hop,
        median_f64(&rate) / two_hops,
    );
    println!("{}", line.trim_end());
}

/// `farm submit sqrt --n N [--coordinator ADDRESS] OUTPUT.. --json`.
fn submit_args<'a>(n: &'a str, coordinator: Option<&'a str>, output: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["submit", "sqrt", "--n", n, "--json"];
    if let Some(address) = coordinator {
        args.extend(["--coordinator", address]);
    }
    args.extend_from_slice(output);
    args
}

/// Runs `farm` with its stdout read and thrown away by this process,
/// timed from start to exit; checks that its `--json` summary (on stderr)
/// has `n` values and, if given, that stdout had `expected_bytes`.
fn farm_to_stdout(
    bin: &Path,
    args: &[&str],
    n: u64,
    expected_bytes: Option<u64>,
) -> anyhow::Result<Timing> {
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
    let received = loopback::discard(&mut stdout)?;
    let status = child.wait()?;
    let total = started.elapsed();
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        bail!("farm {args:?} failed ({status}): {errors}");
    }
    let summary: serde_json::Value = errors
        .lines()
        .find(|line| line.starts_with('{'))
        .map(serde_json::from_str)
        .transpose()?
        .with_context(|| format!("no --json summary from farm {args:?}: {errors}"))?;
    if summary["n"].as_u64() != Some(n) {
        bail!("farm {args:?} reported n = {}, not {n}", summary["n"]);
    }
    if let Some(expected) = expected_bytes.filter(|&b| b != received.bytes) {
        bail!(
            "farm {args:?} wrote {} bytes to stdout, not {expected}",
            received.bytes
        );
    }
    Ok(Timing {
        bytes: received.bytes,
        total,
        streaming: received.streaming(),
    })
}
