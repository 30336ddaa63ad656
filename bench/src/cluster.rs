//! The real binaries: building them, running `farm` with a time limit, and
//! a coordinator with worker processes on loopback, killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procfs::Watchdog;

/// The longest any one `farm` command may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// Builds the release binaries and returns their directory.
pub fn build_binaries() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet"])
        .args([
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
    Ok(exe
        .parent()
        .context("bench binary directory")?
        .to_path_buf())
}

/// A `farm` command with the bench's environment: never a coordinator
/// from the caller's shell.
pub fn farm_command(bin: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(bin.join("farm"));
    command.args(args).env_remove("FARM_COORDINATOR");
    command
}

/// Runs a command to completion (killed after [`COMMAND_TIMEOUT`]) and
/// returns its wall time and output; fails unless it exits with 0.
pub fn run(mut command: Command) -> anyhow::Result<(Duration, Output)> {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {command:?}"))?;
    let watchdog = Watchdog::new(child.id(), COMMAND_TIMEOUT);
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    drop(watchdog);
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((took, out))
}

/// Runs `farm submit ... --json` and returns its wall time and summary.
pub fn submit_json(bin: &Path, args: &[&str]) -> anyhow::Result<(Duration, serde_json::Value)> {
    let (took, out) = run(farm_command(bin, args))?;
    // With --output -, the summary goes to stderr.
    let json = if out.stdout.starts_with(b"{") {
        &out.stdout
    } else {
        &out.stderr
    };
    let summary = serde_json::from_slice(json).context("farm's --json summary")?;
    Ok((took, summary))
}

/// The digest in a `--json` summary.
pub fn digest(summary: &serde_json::Value) -> String {
    summary["digest"].as_str().unwrap_or_default().to_owned()
}

/// A coordinator and workers as separate processes on loopback, killed on
/// drop.
#[derive(Debug)]
pub struct LoopbackCluster {
    pub address: String,
    bin: PathBuf,
    /// The coordinator first, then the workers in start order.
    children: Vec<Child>,
}

impl LoopbackCluster {
    /// `workers` of every core each.
    pub fn start(bin: &Path, workers: usize) -> anyhow::Result<LoopbackCluster> {
        Self::start_with(bin, &vec![Vec::new(); workers])
    }

    /// One worker per entry, each started with those extra flags.
    pub fn start_with(bin: &Path, workers: &[Vec<String>]) -> anyhow::Result<LoopbackCluster> {
        let mut coordinator = Command::new(bin.join("farm-coordinator"))
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .context("start farm-coordinator")?;
        let stdout = coordinator.stdout.take().context("coordinator stdout")?;
        let mut cluster = LoopbackCluster {
            address: String::new(),
            bin: bin.to_path_buf(),
            children: vec![coordinator],
        };
        // The coordinator prints its address first; a watchdog bounds the
        // wait for that line.
        let mut line = String::new();
        {
            let _watchdog = Watchdog::new(cluster.children[0].id(), Duration::from_secs(20));
            BufReader::new(stdout).read_line(&mut line)?;
        }
        cluster.address = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|a| !a.is_empty())
            .context("coordinator address")?
            .to_owned();
        for extra in workers {
            // No compiled-module cache from the caller's shell: a new
            // worker compiles each module it is sent.
            let worker = Command::new(bin.join("farm-worker"))
                .args(["--connect", &cluster.address])
                .args(extra)
                .env("RUST_LOG", "warn")
                .env_remove("FARM_WASM_CACHE")
                .spawn()
                .context("start farm-worker")?;
            cluster.children.push(worker);
        }
        cluster.wait_for_workers(workers.len())?;
        Ok(cluster)
    }

    /// Waits (at most 20 s) until `count` workers are registered.
    pub fn wait_for_workers(&self, count: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.status()?["workers"].as_array().map_or(0, Vec::len) != count {
            if Instant::now() > deadline {
                bail!("{count} workers did not register within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `farm workers --json`.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let (_, out) = run(farm_command(
            &self.bin,
            &["workers", "--coordinator", &self.address, "--json"],
        ))?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    pub fn coordinator_pid(&self) -> u32 {
        self.children[0].id()
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        self.children[1..].iter().map(Child::id).collect()
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
