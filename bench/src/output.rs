//! `--output FILE`: farm writing a job's values to a `.bin` file, embedded
//! and through a loopback cluster, against the bench writing the same
//! bytes straight to a file in the same directory.
//!
//! Writes into the page cache cost very different times depending on how
//! many dirty pages are already waiting for writeback (the kernel throttles
//! writers past `dirty_background_ratio`): the same 0.8 GB `dd` took 0.14 s
//! to 2.4 s here. So every timed write, farm's or the reference's, starts
//! from the same state: the previous file removed and `sync` run, untimed.
//! Then the same rows with a `sync` after each write, timed: the time
//! until the bytes are on disk, with farm's `--fsync` beside them against
//! a direct write that also writes back as it goes. Then, in a tmpfs
//! directory, the same rows leave the disk out entirely.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use farm_cli::output::Writeback;

use crate::args::Args;
use crate::cluster::{LoopbackCluster, submit_json};
use crate::stats::{best_ratio, ratio, spread};

/// The reference writer's buffer.
const WRITE_BUFFER: usize = 8 << 20;

/// Who writes the file; in each run one after another, starting one
/// further along the list each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Direct,
    FarmEmbedded,
    FarmCluster,
    /// Asks for writeback as it goes, then fsyncs, as `--fsync` does
    /// (with the same [`Writeback`]).
    DirectWriteback,
    FarmEmbeddedFsync,
    FarmClusterFsync,
}

impl Writer {
    const ALL: [Writer; 6] = [
        Writer::Direct,
        Writer::FarmEmbedded,
        Writer::FarmCluster,
        Writer::DirectWriteback,
        Writer::FarmEmbeddedFsync,
        Writer::FarmClusterFsync,
    ];
    /// Where only the page cache or memory is timed, syncing is beside
    /// the point.
    const UNSYNCED: [Writer; 3] = [Writer::Direct, Writer::FarmEmbedded, Writer::FarmCluster];

    fn name(self) -> &'static str {
        match self {
            Writer::Direct => "direct write, 8 MiB write_all (reference)",
            Writer::FarmEmbedded => "farm embedded --output FILE",
            Writer::FarmCluster => "farm --coordinator --output FILE",
            Writer::DirectWriteback => "direct write, written back as it goes, fsync",
            Writer::FarmEmbeddedFsync => "farm embedded --output FILE --fsync",
            Writer::FarmClusterFsync => "farm --coordinator --output FILE --fsync",
        }
    }

    fn is_reference(self) -> bool {
        matches!(self, Writer::Direct | Writer::DirectWriteback)
    }
}

/// A directory written to, and the times of each writer there.
#[derive(Debug)]
struct Place {
    label: String,
    target: PathBuf,
    /// Each write is followed by a timed `sync`.
    to_disk: bool,
    /// Who writes here, in the order of the first run.
    writers: &'static [Writer],
    times: [Vec<Duration>; Writer::ALL.len()],
}

impl Place {
    fn new(dir: &Path, kind: &str, to_disk: bool) -> Place {
        Place {
            label: format!("to {} ({kind})", dir.display()),
            target: dir.join(format!(
                "farm-bench-{}{}.bin",
                std::process::id(),
                if to_disk { "-disk" } else { "" }
            )),
            to_disk,
            writers: if to_disk {
                &Writer::ALL
            } else {
                &Writer::UNSYNCED
            },
            times: Default::default(),
        }
    }
}

pub fn run(bin: &Path, args: &Args) -> anyhow::Result<()> {
    let cluster = LoopbackCluster::start(bin, 2)?;
    let n = args.output_n.to_string();
    let bytes = args.output_n * 8;
    let mut places = vec![
        Place::new(&args.dir, "page cache", false),
        Place::new(&args.dir, "on disk: sync timed", true),
    ];
    let tmpfs = args.tmpfs_dir.is_dir();
    if tmpfs {
        places.push(Place::new(&args.tmpfs_dir, "tmpfs", false));
    }
    let _cleanup: Vec<RemoveOnDrop> = places
        .iter()
        .map(|p| RemoveOnDrop(p.target.clone()))
        .collect();
    for run in 0..args.runs {
        for place in &mut places {
            let target = place.target.to_string_lossy().into_owned();
            let count = place.writers.len();
            for k in 0..count {
                let writer = place.writers[(run + k) % count];
                start_clean(&place.target)?;
                let cluster = Some(cluster.address.as_str());
                let submit = |coordinator, fsync| {
                    submit_json(bin, &submit_args(&n, coordinator, &target, fsync)).map(|r| r.0)
                };
                let wrote = match writer {
                    Writer::Direct => write_directly(&place.target, bytes, false)?,
                    Writer::DirectWriteback => write_directly(&place.target, bytes, true)?,
                    Writer::FarmEmbedded => submit(None, false)?,
                    Writer::FarmCluster => submit(cluster, false)?,
                    Writer::FarmEmbeddedFsync => submit(None, true)?,
                    Writer::FarmClusterFsync => submit(cluster, true)?,
                };
                let took = if place.to_disk {
                    wrote + timed_sync()
                } else {
                    wrote
                };
                check_size(&place.target, bytes)?;
                place.times[writer as usize].push(took);
            }
        }
        // The last file of the run goes now, not at the start of the next.
        for place in &places {
            remove(&place.target)?;
        }
    }

    println!(
        "\n## --output FILE: sqrt --n {} to a .bin of {:.2} GB, {} runs interleaved, \
         each from a clean page cache (previous file removed, then sync, untimed)",
        args.output_n,
        bytes as f64 / 1e9,
        args.runs
    );
    for place in &places {
        println!(
            "\n{:<48}{:>34}{:>10}{:>14}",
            place.label, "time", "vs direct", "best vs best"
        );
        let direct = &place.times[Writer::Direct as usize];
        for &writer in place.writers {
            let times = &place.times[writer as usize];
            let note = if writer.is_reference() {
                ""
            } else {
                "target <= 1.10x"
            };
            let line = format!(
                "{:<48}{:>34}{:>9.2}x{:>13.2}x   {note}",
                writer.name(),
                spread(times),
                ratio(times, direct),
                best_ratio(times, direct)
            );
            println!("{}", line.trim_end());
        }
        if place.to_disk {
            let written_back = &place.times[Writer::DirectWriteback as usize];
            let against = |writer: Writer| ratio(&place.times[writer as usize], written_back);
            println!(
                "--fsync vs the direct write written back as it goes: embedded {:.2}x, \
                 coordinator {:.2}x",
                against(Writer::FarmEmbeddedFsync),
                against(Writer::FarmClusterFsync)
            );
        }
    }
    if !tmpfs {
        println!(
            "\n(no tmpfs rows: {} is not a directory; see --tmpfs-dir)",
            args.tmpfs_dir.display()
        );
    }
    Ok(())
}

/// `farm submit sqrt --n N [--coordinator ADDRESS] --output TARGET
/// [--fsync] --json`.
fn submit_args<'a>(
    n: &'a str,
    coordinator: Option<&'a str>,
    target: &'a str,
    fsync: bool,
) -> Vec<&'a str> {
    let mut args = vec!["submit", "sqrt", "--n", n, "--output", target, "--json"];
    if let Some(address) = coordinator {
        args.extend(["--coordinator", address]);
    }
    if fsync {
        args.push("--fsync");
    }
    args
}

/// Removes the previous run's file (if any) and flushes every dirty page
/// to disk, so the next write starts with nothing waiting for writeback.
fn start_clean(target: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", target.display())),
    }
    timed_sync();
    Ok(())
}

/// Flushes every dirty page to disk; how long that took.
fn timed_sync() -> Duration {
    let started = Instant::now();
    // SAFETY: sync has no preconditions. It returns once writeback has
    // been started and (on Linux) waited for.
    unsafe { libc::sync() };
    started.elapsed()
}

/// Writes `bytes` to a new file at `path` in 8 MiB `write_all`s. With
/// `write_back`, starts writing each stretch back as it is written, as
/// `--fsync` does, and fsyncs the file at the end.
fn write_directly(path: &Path, bytes: u64, write_back: bool) -> anyhow::Result<Duration> {
    let buffer = vec![1u8; WRITE_BUFFER];
    let started = Instant::now();
    let mut file = std::fs::File::create(path)?;
    let mut writeback = write_back.then(Writeback::new);
    let mut left = bytes;
    while left > 0 {
        let now = left.min(WRITE_BUFFER as u64) as usize;
        file.write_all(&buffer[..now])?;
        left -= now as u64;
        if let Some(writeback) = &mut writeback {
            writeback.wrote(&file, now as u64);
        }
    }
    if write_back {
        file.sync_all()?;
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
