//! Worker and coordinator faults on the real binaries (issue 3): in every
//! scenario the job either finishes with the exact answer of the
//! fault-free run, or fails fast with a clear, named reason.
//!
//! Faults are injected from outside (SIGKILL, SIGSTOP) or with the
//! worker's test-only `FARM_TEST_FAULTS` hook; every wait is bounded and
//! every process is killed when the test ends.

use farm_catalog::Function;
use farm_tests::faults::{
    AT_ONCE, FaultCluster, JOB_TIMEOUT, counter, submit_to, worker, worker_count, worker_is,
};
use farm_tests::process::{PROCESS_TIMEOUT, assert_summary_json, farm_bounded, json};
use farm_tests::reference;
use std::process::Output;
use std::time::Instant;

/// A billion square roots: a few seconds on three single-threaded workers
/// of a busy 2-core machine, in hundreds of chunks; the faults land after
/// the first few results. (The serial reference costs as much again.)
const LONG: u64 = 1_000_000_000;

/// The id of the first job a fresh coordinator runs.
const FIRST_JOB: u64 = 1;

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
fn a_worker_killed_mid_job_loses_nothing() {
    let cluster = FaultCluster::start(&[], 3, &[]);
    let before = cluster.status();
    let job = cluster.submit(7, LONG);
    cluster.wait_for_progress(&before, 5);
    // The kill lands mid-job and takes leases with it.
    cluster.wait_for("w-1 to hold a lease", |s| {
        worker_count(s, "w-1", "leases_held") >= 1
    });
    cluster.assert_running(FIRST_JOB, LONG / 2);
    cluster.workers[0].signal("KILL");

    // Its leases went back to the queue and were computed again: nothing
    // but the kill retries a chunk here.
    let status = cluster.wait_for("the killed worker's leases to be retried", |s| {
        s["workers"].as_array().map(Vec::len) == Some(2) && counter(s, "retries") >= 1
    });
    assert_eq!(counter(&status, "chunk_failures"), 0, "{status}");
    let (out, _) = job.finish();
    let summary = assert_exact(&out, 7, LONG);
    assert_retried(&summary, &cluster.status());
}

#[test]
fn workers_killed_and_replaced_again_and_again_lose_nothing() {
    const ROUNDS: usize = 3;
    let n = 2 * LONG;
    let mut cluster = FaultCluster::start(&[], 3, &[]);
    let mut names: Vec<String> = (1..=3).map(|i| format!("w-{i}")).collect();
    let mut status = cluster.status();
    let job = cluster.submit(1 << 40, n);
    for round in 1..=ROUNDS {
        cluster.wait_for_progress(&status, 4);
        // The oldest worker dies holding work, mid-job; a fresh one takes
        // its place.
        let name = names.remove(0);
        status = cluster.wait_for(&format!("{name} to hold a lease"), |s| {
            worker_count(s, &name, "leases_held") >= 1
        });
        cluster.assert_running(FIRST_JOB, n);
        let victim = cluster.workers.remove(0);
        victim.signal("KILL");
        drop(victim);
        // Each kill sends leases back to be computed again.
        let retried = counter(&status, "retries");
        status = cluster.wait_for(&format!("{name}'s leases to be retried"), |s| {
            counter(s, "retries") > retried
        });
        let fresh = format!("fresh-{round}");
        cluster.add_worker(&fresh, &[]);
        names.push(fresh);
    }
    assert!(!job.is_finished(), "the job ended before the last kill");

    let (out, _) = job.finish();
    let summary = assert_exact(&out, 1 << 40, n);
    let status = cluster.status();
    assert!(
        counter(&status, "retries") >= ROUNDS as u64,
        "every killed worker held a lease: {status}"
    );
    assert_eq!(counter(&status, "chunk_failures"), 0, "{status}");
    assert_retried(&summary, &status);
}

#[test]
fn a_stopped_worker_loses_its_leases_and_takes_new_work_once_woken() {
    let cluster = FaultCluster::start(&[], 3, &[]);
    let before = cluster.status();
    // Long enough that the others are still busy when the lease timeout
    // passes: at the job's end they would back up the stopped worker's
    // chunks instead, and nothing would expire.
    let n = 4 * LONG;
    let job = cluster.submit(3, n);
    cluster.wait_for_progress(&before, 5);
    cluster.wait_for("w-1 to hold a lease", |s| {
        worker_count(s, "w-1", "leases_held") >= 1
    });
    cluster.assert_running(FIRST_JOB, n / 4);
    let stopped = &cluster.workers[0];
    stopped.signal("STOP");
    // Silent for longer than the lease timeout: its leases expire, but
    // its session is kept (it may only be slow).
    let asleep = cluster.wait_for("the stopped worker's leases to expire", |s| {
        counter(s, "leases_expired") >= 1 && worker_is(s, "w-1", "silent")
    });
    // Only it went silent, and no result has been rejected yet: no backups
    // (the job is far from its end), no late results.
    for other in ["w-2", "w-3"] {
        assert!(!worker_is(&asleep, other, "silent"), "{asleep}");
    }
    assert_eq!(counter(&asleep, "results_rejected_stale"), 0, "{asleep}");
    assert_eq!(counter(&asleep, "backups_granted"), 0, "{asleep}");
    let completed_asleep = worker_count(&asleep, "w-1", "chunks_completed");
    // Work is left for it to take when it wakes.
    cluster.assert_running(FIRST_JOB, n / 2);
    stopped.signal("CONT");

    // Woken, it reports the chunk it was computing under its expired
    // lease, which is rejected as stale; it is no longer silent, and
    // computes new chunks of the same job.
    let awake = cluster.wait_for("the woken worker to be rejected, then compute again", |s| {
        counter(s, "results_rejected_stale") >= 1
            && !worker_is(s, "w-1", "silent")
            && worker_count(s, "w-1", "chunks_completed") > completed_asleep
    });
    // Still no backup: the rejected results are the woken worker's.
    assert_eq!(counter(&awake, "backups_granted"), 0, "{awake}");
    assert_eq!(awake["running_jobs"].as_u64(), Some(1), "{awake}");

    let (out, _) = job.finish();
    assert_exact(&out, 3, n);
    let job = cluster.job_status(FIRST_JOB);
    assert!(
        job["counters"]["results_rejected_stale"].as_u64() >= Some(1),
        "{job}"
    );
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

/// A fault that makes a worker crawl: each chunk takes 1000 times as long.
const CRAWL: &str = "slow=1000";

/// Chunks of 16 Mi elements: at [`CRAWL`] speed one takes minutes (at
/// least 16 ms of work, then 999 times that asleep), a fast worker a
/// fraction of a second.
const CRAWL_CHUNK: &str = "16777216";

/// A cluster of two fast workers and a crawling one (the third), running a
/// job of [`CRAWL_CHUNK`] chunks; returns once the crawler holds two
/// leases (one computing for minutes, one queued) while the job has most
/// of its work left.
fn crawler_mid_job(crawler_flags: &[&str]) -> (FaultCluster, farm_tests::faults::Submitted, u64) {
    let mut cluster = FaultCluster::start(&[], 2, &[]);
    cluster.add_worker_with("crawler", crawler_flags, &[("FARM_TEST_FAULTS", CRAWL)]);
    cluster.wait_for_workers(3);
    let n = 2 * LONG;
    let job = cluster.submit_with(0, n, &["--chunk-size", CRAWL_CHUNK]);
    let held = cluster.wait_for("the crawler to hold two leases", |s| {
        worker_count(s, "crawler", "leases_held") == 2
    });
    assert_eq!(
        worker_count(&held, "crawler", "chunks_completed"),
        0,
        "{held}"
    );
    cluster.assert_running(FIRST_JOB, n / 2);
    (cluster, job, n)
}

#[test]
fn a_drain_whose_grace_runs_out_hands_back_the_running_chunk() {
    let (mut cluster, job, n) = crawler_mid_job(&["--drain-grace", "1s"]);
    let crawler = &mut cluster.workers[2];
    crawler.signal("TERM");
    let exit = crawler.wait(PROCESS_TIMEOUT);
    assert_eq!(exit.code(), Some(0), "{}", crawler.stderr_tail());

    // Both its leases came back: the queued one at once, and the one it was
    // computing (for minutes more) when the grace ran out. Handed back,
    // not lost: no chunk used up a try. No other worker drains.
    let status = cluster.status();
    assert_eq!(counter(&status, "leases_returned"), 2, "{status}");
    assert_eq!(counter(&status, "retries"), 0, "{status}");
    assert_eq!(
        status["workers"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    let (out, _) = job.finish();
    assert_exact(&out, 0, n);
}

#[test]
fn a_second_signal_stops_a_draining_worker_at_once() {
    let (mut cluster, job, n) = crawler_mid_job(&[]);
    cluster.workers[2].signal("TERM");
    // Draining: it handed back its queued lease and computes the other,
    // which the 30 s grace would wait for.
    cluster.wait_for("the crawler to drain", |s| {
        worker_is(s, "crawler", "draining") && worker_count(s, "crawler", "leases_held") == 1
    });
    let crawler = &mut cluster.workers[2];
    let second = Instant::now();
    crawler.signal("TERM");
    let exit = crawler.wait(PROCESS_TIMEOUT);
    let took = second.elapsed();
    assert_eq!(exit.code(), Some(130), "{}", crawler.stderr_tail());
    assert!(
        crawler.stderr().contains("second signal, exiting now"),
        "{}",
        crawler.stderr_tail()
    );
    assert!(
        took < AT_ONCE,
        "the crawler took {took:?} to exit after its second signal"
    );

    // The chunk it was computing went with it and was computed again.
    let status = cluster.wait_for("the crawler's last lease to be retried", |s| {
        counter(s, "retries") >= 1
    });
    assert_eq!(counter(&status, "leases_returned"), 1, "{status}");
    let (out, _) = job.finish();
    assert_exact(&out, 0, n);
}

#[test]
fn a_cancelled_job_is_revoked_and_its_workers_drop_its_chunks() {
    let cluster = FaultCluster::start(&[], 3, &[]);
    let before = cluster.status();
    let n = 4 * LONG;
    let mut client = cluster.start_client(0, n);
    cluster.wait_for_progress(&before, 5);
    let workers = ["w-1", "w-2", "w-3"];
    cluster.wait_for("every worker to hold a lease", |s| {
        workers
            .iter()
            .all(|w| worker_count(s, w, "leases_held") >= 1)
    });
    cluster.assert_running(FIRST_JOB, n / 2);
    client.signal("INT");
    let exit = client.wait(PROCESS_TIMEOUT);
    assert_eq!(exit.code(), Some(130), "{}", client.stderr_tail());

    // The coordinator cancelled the job and revoked every lease of it.
    let cancelled = cluster.wait_for("the job's leases to be revoked", |s| {
        counter(s, "jobs_cancelled") == 1
            && s["running_jobs"].as_u64() == Some(0)
            && workers
                .iter()
                .all(|w| worker_count(s, w, "leases_held") == 0)
    });
    assert_eq!(cluster.job_status(FIRST_JOB)["state"], "cancelled");

    // A worker computes its leases in order, so by the time each has
    // computed a chunk of the next job it is done with the revoked ones:
    // a result of the cancelled job it had kept would have been sent by
    // then, and rejected as stale.
    let next = cluster.submit_with(5, LONG, &["--chunk-size", "1048576"]);
    let status = cluster.wait_for("every worker to compute a chunk of the next job", |s| {
        workers.iter().all(|w| {
            worker_count(s, w, "chunks_completed") > worker_count(&cancelled, w, "chunks_completed")
        })
    });
    assert_eq!(
        counter(&status, "results_rejected_stale"),
        0,
        "a worker sent a result of the cancelled job: {status}"
    );
    assert_exact(&next.finish().0, 5, LONG);
}

#[test]
fn a_straggler_is_backed_up_the_backup_wins_and_the_straggler_drops_its_copy() {
    let mut cluster = FaultCluster::start(&[], 2, &[]);
    cluster.add_worker("slow", &[("FARM_TEST_FAULTS", "slow=50")]);
    cluster.wait_for_workers(3);
    // Chunks of one size, which the slow worker takes 50 times as long to
    // compute: when the job has nothing left but chunks in flight, the
    // fast workers sit idle while it still holds its last ones.
    let n = LONG / 2;
    let job = cluster.submit_with(0, n, &["--chunk-size", "1048576"]);
    assert_exact(&job.finish().0, 0, n);
    let first = cluster.job_status(FIRST_JOB);
    let backups = &first["counters"];
    assert!(backups["backups_granted"].as_u64() >= Some(1), "{first}");
    assert!(backups["backups_won"].as_u64() >= Some(1), "{first}");

    // The slow worker's copy of a chunk whose backup won was revoked. Once
    // it has computed a chunk of the next job it is done with that copy:
    // had it sent the result, it would have been rejected as stale.
    let ended = cluster.status();
    let next = cluster.submit(7, LONG);
    let status = cluster.wait_for("the slow worker to compute a chunk of the next job", |s| {
        worker_count(s, "slow", "chunks_completed")
            > worker_count(&ended, "slow", "chunks_completed")
    });
    assert_eq!(
        counter(&status, "results_rejected_stale"),
        0,
        "the straggler sent the result of a revoked lease: {status}"
    );
    assert_exact(&next.finish().0, 7, LONG);
}

/// The argument a poisoned worker panics on.
const POISON: u64 = 31_415_926;

/// Asserts that job `job` over `[start, start + n)`, which contains
/// [`POISON`], failed after `attempts` attempts with a message naming the
/// job, the chunk's range, the attempts, the workers and the panic.
fn assert_poisoned(out: &Output, job: u64, start: u64, attempts: u32) {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(out.stdout.is_empty(), "no summary for a failed job");
    assert!(
        text.contains(&format!("job {job} failed: chunk ")),
        "{text}"
    );
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

/// `farm submit sqrt` over `[start, start + n)` on `address`, waited for.
fn submit_and_wait(address: &str, start: u64, n: u64) -> Output {
    let (start, n) = (start.to_string(), n.to_string());
    farm_bounded(
        &[
            "submit",
            "sqrt",
            "--n",
            &n,
            "--start",
            &start,
            "--coordinator",
            address,
        ],
        &[],
        JOB_TIMEOUT,
    )
}

#[test]
fn a_poison_chunk_fails_its_job_after_four_attempts_and_the_cluster_carries_on() {
    let poison = format!("panic-at={POISON}");
    let cluster = FaultCluster::start(&[], 3, &[("FARM_TEST_FAULTS", &poison)]);
    let address = cluster.address_text();
    let out = submit_and_wait(&address, 1000, 100_000_000);
    assert_poisoned(&out, FIRST_JOB, 1000, 4);

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
fn a_poison_chunk_fails_its_job_while_another_job_goes_on() {
    let poison = format!("panic-at={POISON}");
    let cluster = FaultCluster::start(&[], 3, &[("FARM_TEST_FAULTS", &poison)]);
    // A long job clear of the poison (its arguments start past it) ...
    let before = cluster.status();
    let n = 2 * LONG;
    let clean = cluster.submit(POISON + 1, n);
    cluster.wait_for_progress(&before, 3);
    // ... and beside it, a job whose chunk holding the poison fails it.
    let out = submit_and_wait(&cluster.address_text(), 1000, 100_000_000);
    assert_poisoned(&out, FIRST_JOB + 1, 1000, 4);

    // The clean job went on all along, and ends exact.
    cluster.assert_running(FIRST_JOB, n);
    assert_exact(&clean.finish().0, POISON + 1, n);
    let status = cluster.status();
    assert_eq!(counter(&status, "jobs_failed"), 1, "{status}");
    assert_eq!(counter(&status, "jobs_finished"), 1, "{status}");
    assert_eq!(counter(&status, "chunk_failures"), 4, "{status}");
}

#[test]
fn max_attempts_bounds_the_tries_of_a_poison_chunk() {
    let poison = format!("panic-at={POISON}");
    let cluster = FaultCluster::start(
        &["--max-attempts", "2"],
        2,
        &[("FARM_TEST_FAULTS", &poison)],
    );
    let out = submit_and_wait(&cluster.address_text(), 0, 100_000_000);
    assert_poisoned(&out, FIRST_JOB, 0, 2);
    assert_eq!(counter(&cluster.status(), "chunk_failures"), 2);
}

#[test]
fn the_running_job_limit_turns_the_next_client_away_until_a_job_ends() {
    let cluster = FaultCluster::start(&["--max-jobs", "1"], 2, &[]);
    let before = cluster.status();
    let job = cluster.submit(0, LONG);
    cluster.wait_for_progress(&before, 2);
    cluster.assert_running(FIRST_JOB, LONG);

    // Turned away at once with exit code 3 (busy), not queued.
    let asked = Instant::now();
    let refused = submit_and_wait(&cluster.address_text(), 0, 1_000_000);
    let took = asked.elapsed();
    let text = stderr(&refused);
    assert_eq!(refused.status.code(), Some(3), "{text}");
    assert!(
        text.contains(
            "the coordinator is busy: the coordinator is already running 1 jobs (the limit); try again later"
        ),
        "{text}"
    );
    assert!(took < AT_ONCE, "refused after {took:?}");
    // The running job was not disturbed, and the refused one never began.
    cluster.assert_running(FIRST_JOB, LONG);
    assert_eq!(counter(&cluster.status(), "jobs_submitted"), 1);

    assert_exact(&job.finish().0, 0, LONG);
    // Once it ended, the next job is taken.
    let next = cluster.submit(5, 1_000_000);
    assert_exact(&next.finish().0, 5, 1_000_000);
}

/// Asserts that `farm submit` stopped with exit code 3 because it lost the
/// coordinator at `address` while running job 1, with `reason`.
fn assert_lost(out: &Output, address: &str, reason: &str) {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!(
            "farm: lost the coordinator at {address}: {reason}"
        )),
        "{text}"
    );
    assert!(text.contains("job 1 "), "names the lost job: {text}");
}

#[test]
fn a_killed_coordinator_fails_the_job_clearly_and_the_workers_come_back() {
    let mut cluster = FaultCluster::start(&[], 3, &[]);
    let before = cluster.status();
    let job = cluster.submit(0, LONG);
    cluster.wait_for_progress(&before, 5);
    cluster.assert_running(FIRST_JOB, LONG / 2);
    let killed = Instant::now();
    cluster.coordinator.signal("KILL");

    // The client stops at once with exit code 3 and says why.
    let (out, _) = job.finish();
    let took = killed.elapsed();
    assert_lost(&out, &cluster.address_text(), "");
    assert!(took < AT_ONCE, "farm submit exited {took:?} after the kill");

    // A new coordinator on the same address: the workers find it by
    // themselves, and the next job is exact.
    cluster.restart_coordinator();
    cluster.wait_for_workers(3);
    let next = cluster.submit(5, 200_000_000);
    assert_exact(&next.finish().0, 5, 200_000_000);
}

#[test]
fn a_coordinator_stopped_by_sigterm_cancels_the_job_at_once_and_exits_zero() {
    let mut cluster = FaultCluster::start(&[], 3, &[]);
    let before = cluster.status();
    let job = cluster.submit(0, LONG);
    cluster.wait_for_progress(&before, 5);
    cluster.assert_running(FIRST_JOB, LONG / 2);
    let signalled = Instant::now();
    cluster.coordinator.signal("TERM");

    // The client is told at once, and why.
    let (out, _) = job.finish();
    let took = signalled.elapsed();
    assert_lost(
        &out,
        &cluster.address_text(),
        "the coordinator is shutting down; job 1 was cancelled",
    );
    assert!(took < AT_ONCE, "farm submit exited {took:?} after SIGTERM");
    // The coordinator ends its streams and sessions and exits cleanly.
    let exit = cluster.coordinator.wait(PROCESS_TIMEOUT);
    assert_eq!(
        exit.code(),
        Some(0),
        "{}",
        cluster.coordinator.stderr_tail()
    );

    cluster.restart_coordinator();
    cluster.wait_for_workers(3);
    let next = cluster.submit(5, 200_000_000);
    assert_exact(&next.finish().0, 5, 200_000_000);
}
