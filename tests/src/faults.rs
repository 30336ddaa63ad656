//! Support for the fault tests: a coordinator and named workers as real
//! processes on loopback, with a short lease timeout; jobs submitted in the
//! background; and the coordinator's counters, polled with a deadline.

use std::net::SocketAddr;
use std::process::Output;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process::{Process, farm, farm_bounded, json, start_coordinator, start_worker_with_env};

/// A worker silent for 2 s loses its leases; heartbeats come 8 times as
/// often, so a busy but live worker never does.
pub const LEASE_FLAGS: [&str; 4] = ["--lease-timeout", "2s", "--heartbeat-interval", "250ms"];

/// How long a job of a fault test may take before the test fails; the jobs
/// take a few seconds on a busy 2-core machine.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(45);

/// How long to wait for a state of the cluster (a counter, a worker).
pub const STATE_TIMEOUT: Duration = Duration::from_secs(20);

/// A coordinator and its workers; every process is killed on drop.
#[derive(Debug)]
pub struct FaultCluster {
    pub coordinator: Process,
    pub address: SocketAddr,
    pub workers: Vec<Process>,
    coordinator_flags: Vec<String>,
}

impl FaultCluster {
    /// A coordinator with [`LEASE_FLAGS`] and `extra` flags, and
    /// `workers` single-threaded workers named `w-1`, `w-2`, ...; returns
    /// once they are all connected.
    pub fn start(extra: &[&str], workers: usize, env: &[(&str, &str)]) -> FaultCluster {
        let mut flags: Vec<&str> = LEASE_FLAGS.to_vec();
        flags.extend_from_slice(extra);
        let (coordinator, address) = start_coordinator(&flags);
        let mut cluster = FaultCluster {
            coordinator,
            address,
            workers: Vec::new(),
            coordinator_flags: flags.iter().map(|f| (*f).to_owned()).collect(),
        };
        for i in 1..=workers {
            cluster.add_worker(&format!("w-{i}"), env);
        }
        cluster.wait_for_workers(workers);
        cluster
    }

    /// Starts one more single-threaded worker called `name`.
    pub fn add_worker(&mut self, name: &str, env: &[(&str, &str)]) {
        let worker = start_worker_with_env(self.address, &["--threads", "1", "--name", name], env);
        self.workers.push(worker);
    }

    /// Starts a new coordinator on the same address as the old one (which
    /// must be gone), with the same flags.
    pub fn restart_coordinator(&mut self) {
        let address = self.address.to_string();
        let mut args = vec!["--listen", address.as_str()];
        args.extend(self.coordinator_flags.iter().map(String::as_str));
        let mut coordinator = Process::start("farm-coordinator", &args);
        coordinator.wait_for_stdout_line("listening on", crate::process::PROCESS_TIMEOUT);
        self.coordinator = coordinator;
    }

    pub fn address_text(&self) -> String {
        self.address.to_string()
    }

    /// Waits until exactly `count` workers are connected.
    pub fn wait_for_workers(&self, count: usize) {
        crate::process::wait_for_workers(&self.address_text(), count, STATE_TIMEOUT);
    }

    /// What `farm workers --json` says now.
    pub fn status(&self) -> serde_json::Value {
        json(&farm(&[
            "workers",
            "--coordinator",
            &self.address_text(),
            "--json",
        ]))
    }

    /// Polls the status until `holds`, failing the test with `what` after
    /// [`STATE_TIMEOUT`]; returns the status that satisfied it.
    pub fn wait_for(
        &self,
        what: &str,
        holds: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + STATE_TIMEOUT;
        loop {
            let status = self.status();
            if holds(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {STATE_TIMEOUT:?} waiting for {what}; last status: {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the running job has at least `results` more chunk results
    /// accepted than `since` (a status read earlier), so that a fault lands
    /// mid-job; returns the status.
    pub fn wait_for_progress(&self, since: &serde_json::Value, results: u64) -> serde_json::Value {
        let from = counter(since, "results_accepted");
        self.wait_for(&format!("{results} more chunk results"), |s| {
            s["running_jobs"].as_u64() == Some(1)
                && counter(s, "results_accepted") >= from + results
        })
    }

    /// Submits `sqrt` over `[start, start + n)` with `--json` in the
    /// background.
    pub fn submit(&self, start: u64, n: u64) -> Submitted {
        submit_to(&self.address_text(), start, n)
    }
}

/// Submits `sqrt` over `[start, start + n)` to `address` with `--json`, in
/// the background, bounded by [`JOB_TIMEOUT`].
pub fn submit_to(address: &str, start: u64, n: u64) -> Submitted {
    let args: Vec<String> = [
        "submit",
        "sqrt",
        "--n",
        &n.to_string(),
        "--start",
        &start.to_string(),
        "--coordinator",
        address,
        "--json",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let started = Instant::now();
    let handle = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        farm_bounded(&args, &[], JOB_TIMEOUT)
    });
    Submitted { handle, started }
}

/// A `farm submit` running in the background.
#[derive(Debug)]
pub struct Submitted {
    handle: JoinHandle<Output>,
    started: Instant,
}

impl Submitted {
    /// Waits for `farm` to exit; returns its output and how long it ran.
    pub fn finish(self) -> (Output, Duration) {
        let output = self
            .handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (output, self.started.elapsed())
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// One of the coordinator's counters in a status (0 if absent).
pub fn counter(status: &serde_json::Value, name: &str) -> u64 {
    status["counters"][name].as_u64().unwrap_or(0)
}

/// The entry of the worker called `name` in a status, if it is connected.
pub fn worker<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["workers"]
        .as_array()?
        .iter()
        .find(|w| w["name"].as_str() == Some(name))
}
