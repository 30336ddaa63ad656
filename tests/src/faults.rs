//! Support for the fault tests: a coordinator and named workers as real
//! processes on loopback, with a short lease timeout; jobs submitted in the
//! background; and the coordinator's counters, polled with a deadline.

use std::net::SocketAddr;
use std::process::Output;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process::{
    PROCESS_TIMEOUT, Process, farm, farm_bounded, json, start_coordinator, start_worker_with_env,
};

/// A worker silent for 2 s loses its leases; heartbeats come 8 times as
/// often, so a busy but live worker never does.
pub const LEASE_FLAGS: [&str; 4] = ["--lease-timeout", "2s", "--heartbeat-interval", "250ms"];

/// How long a job of a fault test may take before the test fails: a guard
/// against hangs, not a target. The jobs take a few seconds on a quiet
/// 2-core machine, and several times that on one shared with builds.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// How long to wait for a state of the cluster (a counter, a worker).
pub const STATE_TIMEOUT: Duration = Duration::from_secs(20);

/// What "at once" means for a process that must stop without waiting for
/// anything (a client that lost its coordinator, a worker told twice): the
/// waits it must not do are a drain grace, a lease timeout, or a chunk of
/// a slowed worker, all longer; a busy 2-core machine needs well under
/// this.
pub const AT_ONCE: Duration = Duration::from_secs(5);

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
        self.add_worker_with(name, &[], env);
    }

    /// Like [`add_worker`](Self::add_worker), with extra flags.
    pub fn add_worker_with(&mut self, name: &str, flags: &[&str], env: &[(&str, &str)]) {
        let mut args = vec!["--threads", "1", "--name", name];
        args.extend_from_slice(flags);
        let worker = start_worker_with_env(self.address, &args, env);
        self.workers.push(worker);
    }

    /// Starts a new coordinator on the same address as the old one (which
    /// must be gone), with the same flags.
    pub fn restart_coordinator(&mut self) {
        let address = self.address.to_string();
        let mut args = vec!["--listen", address.as_str()];
        args.extend(self.coordinator_flags.iter().map(String::as_str));
        let mut coordinator = Process::start("farm-coordinator", &args);
        coordinator.wait_for_stdout_line("listening on", PROCESS_TIMEOUT);
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

    /// Like [`submit`](Self::submit), with extra flags (e.g.
    /// `--chunk-size`).
    pub fn submit_with(&self, start: u64, n: u64, flags: &[&str]) -> Submitted {
        submit_with_flags(&self.address_text(), start, n, flags)
    }

    /// Starts `farm submit sqrt` over `[start, start + n)` as a process of
    /// its own, which the test can signal.
    pub fn start_client(&self, start: u64, n: u64) -> Process {
        let (start, n) = (start.to_string(), n.to_string());
        let address = self.address_text();
        let args = [
            "submit",
            "sqrt",
            "--n",
            &n,
            "--start",
            &start,
            "--coordinator",
            &address,
            "--json",
        ];
        Process::start("farm", &args)
    }

    /// What `farm status JOB --json` says now.
    pub fn job_status(&self, job: u64) -> serde_json::Value {
        let job = job.to_string();
        json(&farm(&[
            "status",
            &job,
            "--coordinator",
            &self.address_text(),
            "--json",
        ]))
    }

    /// Asserts that `job` is running with fewer than `most` elements done:
    /// a fault injected right after lands while the job is running, with
    /// work left for the promised outcome to show. Returns the job status.
    pub fn assert_running(&self, job: u64, most: u64) -> serde_json::Value {
        let status = self.job_status(job);
        assert_eq!(status["state"], "running", "job {job}: {status}");
        let done = status["elements_done"].as_u64().unwrap_or(u64::MAX);
        assert!(
            done < most,
            "job {job} is too far along for a fault now ({done} of {} done, at most {most} wanted): {status}",
            status["n"]
        );
        status
    }
}

/// Submits `sqrt` over `[start, start + n)` to `address` with `--json`, in
/// the background, bounded by [`JOB_TIMEOUT`].
pub fn submit_to(address: &str, start: u64, n: u64) -> Submitted {
    submit_with_flags(address, start, n, &[])
}

/// Like [`submit_to`], with extra flags.
pub fn submit_with_flags(address: &str, start: u64, n: u64, flags: &[&str]) -> Submitted {
    submit_function(address, "sqrt", start, n, flags)
}

/// Submits `function` (a catalog name or a module's path) over
/// `[start, start + n)` to `address` with `--json` and `flags`, in the
/// background, bounded by [`JOB_TIMEOUT`].
pub fn submit_function(
    address: &str,
    function: &str,
    start: u64,
    n: u64,
    flags: &[&str],
) -> Submitted {
    let args: Vec<String> = [
        "submit",
        function,
        "--n",
        &n.to_string(),
        "--start",
        &start.to_string(),
        "--coordinator",
        address,
        "--json",
    ]
    .iter()
    .chain(flags)
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

/// A number in the entry of the worker called `name` in a status (e.g.
/// `leases_held`, `chunks_completed`); 0 if it is not connected.
pub fn worker_count(status: &serde_json::Value, name: &str, field: &str) -> u64 {
    worker(status, name)
        .and_then(|w| w[field].as_u64())
        .unwrap_or(0)
}

/// Whether the worker called `name` is connected and flagged `flag`
/// (`silent`, `draining`) in a status.
pub fn worker_is(status: &serde_json::Value, name: &str, flag: &str) -> bool {
    worker(status, name).is_some_and(|w| w[flag] == true)
}

/// The entry of the worker called `name` in a status, if it is connected.
pub fn worker<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["workers"]
        .as_array()?
        .iter()
        .find(|w| w["name"].as_str() == Some(name))
}
