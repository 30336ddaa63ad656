//! Worker and coordinator faults on the real binaries (issue 3): in every
//! scenario the job either finishes with the exact answer of the
//! fault-free run, or fails fast with a clear, named reason.
//!
//! Faults are injected from outside (SIGKILL, SIGSTOP) or with the
//! worker's test-only `FARM_TEST_FAULTS` hook; every wait is bounded and
//! every process is killed when the test ends.

use farm_catalog::Function;
use farm_tests::faults::{FaultCluster, JOB_TIMEOUT, counter, submit_to, worker};
use farm_tests::process::{assert_summary_json, farm_bounded, json};
use farm_tests::reference;
use std::process::Output;

/// A billion square roots: a few seconds on three single-threaded workers
/// of a busy 2-core machine, in hundreds of chunks; the faults land after
/// the first few results. (The serial reference costs as much again.)
const LONG: u64 = 1_000_000_000;

/// Asserts that a successful `farm submit --json` equals the serial
/// reference for `[start, start + n)` bit for bit; returns the summary.
fn assert_exact(out: &Output, start: u64, n: u64) -> serde_json::Value {
    let summary = json(out);
    assert_eq!(summary["start"].as_u64(), Some(start), "{summary}");
    assert_summary_json(
        &summary,
        &reference::summary_blockwise(Function::Sqrt, start, n),
    );
    summary
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_worker_killed_mid_job_loses_nothing() {
    let cluster = FaultCluster::start(&[], 3, &[]);
    let before = cluster.status();
    let job = cluster.submit(7, LONG);
    cluster.wait_for_progress(&before, 5);
    cluster.workers[0].signal("KILL");

    let (out, _) = job.finish();
    let summary = assert_exact(&out, 7, LONG);
    let status = cluster.wait_for("the killed worker to be gone", |s| {
        s["workers"].as_array().map(Vec::len) == Some(2)
    });
    // Its leases went back to the queue and were computed again.
    assert!(counter(&status, "retries") >= 1, "{status}");
    assert_retried(&summary, &status);
}

/// Every chunk sent back to the queue was leased again: the job's
/// attempts (leases) are at least its chunks plus the retries.
fn assert_retried(summary: &serde_json::Value, status: &serde_json::Value) {
    let attempts = summary["attempts"].as_u64().unwrap_or(0);
    let chunks = summary["chunks"].as_u64().unwrap_or(u64::MAX);
    assert!(
        attempts >= chunks + counter(status, "retries"),
        "{summary}\n{status}"
    );
}

#[test]
fn workers_killed_and_replaced_again_and_again_lose_nothing() {
    const ROUNDS: usize = 3;
    let mut cluster = FaultCluster::start(&[], 3, &[]);
    let mut status = cluster.status();
    let job = cluster.submit(1 << 40, 2 * LONG);
    for round in 1..=ROUNDS {
        status = cluster.wait_for_progress(&status, 4);
        // The oldest worker dies; a fresh one takes its place.
        let victim = cluster.workers.remove(0);
        victim.signal("KILL");
        drop(victim);
        cluster.add_worker(&format!("fresh-{round}"), &[]);
    }
    assert!(!job.is_finished(), "the job ended before the last kill");

    let (out, _) = job.finish();
    let summary = assert_exact(&out, 1 << 40, 2 * LONG);
    let status = cluster.status();
    assert!(
        counter(&status, "retries") >= ROUNDS as u64,
        "every killed worker held a lease: {status}"
    );
    assert_retried(&summary, &status);
}

#[test]
fn a_stopped_worker_loses_its_leases_and_its_late_results_are_rejected() {
    let cluster = FaultCluster::start(&[], 3, &[]);
    let before = cluster.status();
    // Long enough that the others are still busy when the lease timeout
    // passes: at the job's end they would back up the stopped worker's
    // chunks instead, and nothing would expire.
    let n = 4 * LONG;
    let job = cluster.submit(3, n);
    cluster.wait_for_progress(&before, 5);
    let stopped = &cluster.workers[0];
    stopped.signal("STOP");
    // Silent for longer than the lease timeout: its leases expire, but
    // its session is kept (it may only be slow).
    cluster.wait_for("the stopped worker's leases to expire", |s| {
        counter(s, "leases_expired") >= 1 && worker(s, "w-1").is_some_and(|w| w["silent"] == true)
    });
    stopped.signal("CONT");

    let (out, _) = job.finish();
    assert_exact(&out, 3, n);
    // Woken, it finishes the chunk it was computing and reports it under
    // its expired lease: the coordinator rejects it as stale.
    let status = cluster.wait_for("the zombie's late result to be rejected", |s| {
        counter(s, "results_rejected_stale") >= 1
    });
    assert!(counter(&status, "leases_expired") >= 1, "{status}");
}

#[test]
fn a_ten_times_slower_worker_does_not_change_the_answer() {
    let mut cluster = FaultCluster::start(&[], 2, &[]);
    cluster.add_worker("slow", &[("FARM_TEST_FAULTS", "slow=10")]);
    cluster.wait_for_workers(3);
    let job = cluster.submit(11, LONG);

    let (out, _) = job.finish();
    assert_exact(&out, 11, LONG);
    assert!(
        cluster.workers[2].stderr().contains("TEST FAULTS ENABLED"),
        "{}",
        cluster.workers[2].stderr_tail()
    );
    // The coordinator saw it: the slow worker computed less than either of
    // the others. (Elements, not chunks: chunks are sized to each
    // worker's speed.) Whether it also gets backed up at the end depends
    // on where the job's last chunks land, so backups are not asserted.
    let status = cluster.status();
    let elements =
        |name: &str| worker(&status, name).and_then(|w| w["elements_completed"].as_u64());
    let slow = elements("slow").unwrap_or_else(|| panic!("no slow worker: {status}"));
    for fast in ["w-1", "w-2"] {
        assert!(elements(fast) > Some(slow), "{status}");
    }
    eprintln!("a slow worker: {}", out_stats(&out, &status));
}

/// The job's chunks and attempts and the coordinator's fault counters, for
/// the log of a test run.
fn out_stats(out: &Output, status: &serde_json::Value) -> String {
    let summary = json(out);
    format!(
        "{} s, {} chunks, {} attempts; counters {}",
        summary["elapsed_s"], summary["chunks"], summary["attempts"], status["counters"]
    )
}

/// The argument a poisoned worker panics on.
const POISON: u64 = 31_415_926;

/// Asserts that a job over `[start, start + n)`, which contains
/// [`POISON`], failed after `attempts` attempts with a message naming the
/// job, the chunk's range, the attempts, the workers and the panic.
fn assert_poisoned(out: &Output, start: u64, attempts: u32) {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(out.stdout.is_empty(), "no summary for a failed job");
    assert!(text.contains("job 1 failed: chunk "), "{text}");
    let range = text
        .split_once("(elements [")
        .and_then(|(_, rest)| rest.split_once("))"))
        .and_then(|(range, _)| range.split_once(", "))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        .unwrap_or_else(|| panic!("no element range in: {text}"));
    assert!(
        (range.0..range.1).contains(&(POISON - start)),
        "the failed chunk {range:?} holds element {}: {text}",
        POISON - start
    );
    assert!(
        text.contains(&format!(
            "failed after {attempts} attempt(s) on worker(s) w"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("test fault panic-at={POISON}")),
        "{text}"
    );
}

#[test]
fn a_poison_chunk_fails_its_job_after_four_attempts_and_the_cluster_carries_on() {
    let poison = format!("panic-at={POISON}");
    let cluster = FaultCluster::start(&[], 3, &[("FARM_TEST_FAULTS", &poison)]);
    let address = cluster.address_text();
    let job = ["submit", "sqrt", "--n", "1e8", "--start", "1000"];
    let out = farm_bounded(
        &[&job[..], &["--coordinator", &address]].concat(),
        &[],
        JOB_TIMEOUT,
    );
    assert_poisoned(&out, 1000, 4);

    // Every worker survived its panics and is still connected.
    let panicked = cluster
        .workers
        .iter()
        .filter(|w| w.stderr().contains("chunk failed"));
    assert!(panicked.count() >= 1);
    let status = cluster.status();
    assert_eq!(
        status["workers"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    for w in &cluster.workers {
        assert!(!w.stderr().contains("reconnecting"), "{}", w.stderr_tail());
    }
    assert_eq!(counter(&status, "jobs_failed"), 1, "{status}");
    assert_eq!(counter(&status, "chunk_failures"), 4, "{status}");

    // The next job, clear of the poison, is exact.
    let next = submit_to(&address, POISON + 1, 100_000_000);
    assert_exact(&next.finish().0, POISON + 1, 100_000_000);
}

#[test]
fn max_attempts_bounds_the_tries_of_a_poison_chunk() {
    let poison = format!("panic-at={POISON}");
    let cluster = FaultCluster::start(
        &["--max-attempts", "2"],
        2,
        &[("FARM_TEST_FAULTS", &poison)],
    );
    let address = cluster.address_text();
    let out = farm_bounded(
        &["submit", "sqrt", "--n", "1e8", "--coordinator", &address],
        &[],
        JOB_TIMEOUT,
    );
    assert_poisoned(&out, 0, 2);
    assert_eq!(counter(&cluster.status(), "chunk_failures"), 2);
}

#[test]
fn a_killed_coordinator_fails_the_job_clearly_and_the_workers_come_back() {
    let mut cluster = FaultCluster::start(&[], 3, &[]);
    let before = cluster.status();
    let job = cluster.submit(0, LONG);
    cluster.wait_for_progress(&before, 5);
    cluster.coordinator.signal("KILL");

    // The client stops at once with exit code 3 and says why.
    let (out, took) = job.finish();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!(
            "farm: lost the coordinator at {}: ",
            cluster.address
        )),
        "{text}"
    );
    assert!(text.contains("job 1 "), "names the lost job: {text}");
    eprintln!("farm submit exited 3 after {took:?}: {text}");

    // A new coordinator on the same address: the workers find it by
    // themselves, and the next job is exact.
    cluster.restart_coordinator();
    cluster.wait_for_workers(3);
    let next = cluster.submit(5, 200_000_000);
    assert_exact(&next.finish().0, 5, 200_000_000);
}
