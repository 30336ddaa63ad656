//! Scheduler rules, one scenario each, with time passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use farm_catalog::grid::{LEAF_LEN, round_to_leaves};
use farm_catalog::summary::{le_bytes, summarize_values};
use farm_catalog::{Function, Summary, evaluate};
use farm_net::wire::Payload;

use super::*;

pub(super) fn spec(n: u64, chunk_size: Option<u64>, stream_values: bool) -> JobSpec {
    JobSpec {
        function: Function::Sqrt,
        start: 3,
        n,
        chunk_size,
        stream_values,
    }
}

pub(super) fn report_for(lease: &Lease) -> ChunkReport {
    let out = evaluate(
        lease.function,
        lease.job_start,
        lease.offset..lease.offset + lease.len,
        lease.stream_values,
    )
    .expect("test leases are valid");
    ChunkReport {
        summary: out.summary,
        values: out
            .values
            .map(|v| Payload::from(Bytes::copy_from_slice(&le_bytes(&v))).into()),
        // As if every worker computed 1e9 elements per second.
        compute: Duration::from_nanos(lease.len),
    }
}

pub(super) fn reference(spec: &JobSpec) -> Summary {
    let values: Vec<f64> = (0..spec.n)
        .map(|i| spec.function.eval(spec.start + i))
        .collect();
    summarize_values(&values)
}

fn worker(s: &mut Scheduler, now: Instant) -> WorkerId {
    s.register_worker(
        WorkerInfo {
            name: "test".into(),
            threads: 1,
        },
        now,
    )
}

/// Grants in the effects, flattened.
fn grants(effects: &[Effect]) -> Vec<(WorkerId, Lease)> {
    effects
        .iter()
        .flat_map(|e| match e {
            Effect::Grant { worker, leases } => {
                leases.iter().map(|l| (*worker, l.clone())).collect()
            }
            _ => Vec::new(),
        })
        .collect()
}

fn finished(poll: &JobPoll) -> &JobResult {
    match &poll.outcome {
        Some(JobOutcome::Finished(result)) => result,
        other => panic!("job did not finish: {other:?}"),
    }
}

#[test]
fn results_in_any_order_are_released_in_order() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let w = worker(&mut s, t0);
    let spec = spec(5 * LEAF_LEN + 9, Some(LEAF_LEN), true);
    let job = s.submit(spec.clone(), t0).unwrap();
    s.pull(w, 10, t0);
    let leases = grants(&s.take_effects());
    assert_eq!(leases.len(), 6, "one lease per chunk");

    // Finish the last chunk first: nothing can be released yet.
    let (_, last) = &leases[5];
    s.complete(w, last.token, report_for(last), t0).unwrap();
    assert!(!s.take_effects().contains(&Effect::JobReady(job)));
    assert!(s.poll_job(job, usize::MAX, t0).unwrap().values.is_empty());

    for (_, lease) in leases[..5].iter().rev() {
        s.complete(w, lease.token, report_for(lease), t0).unwrap();
    }
    assert!(s.take_effects().contains(&Effect::JobReady(job)));
    let poll = s.poll_job(job, usize::MAX, t0).unwrap();
    let offsets: Vec<u64> = poll.values.iter().map(|b| b.offset).collect();
    assert_eq!(
        offsets,
        vec![
            0,
            LEAF_LEN,
            2 * LEAF_LEN,
            3 * LEAF_LEN,
            4 * LEAF_LEN,
            5 * LEAF_LEN
        ]
    );
    let result = finished(&poll);
    assert!(result.summary.bit_identical(&reference(&spec)));
    assert_eq!((result.chunks, result.workers, result.attempts), (6, 1, 6));
    assert!(
        s.poll_job(job, usize::MAX, t0).is_none(),
        "a delivered job is forgotten"
    );
}

#[test]
fn an_empty_job_finishes_on_arrival() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let spec = spec(0, None, false);
    let job = s.submit(spec.clone(), t0).unwrap();
    assert_eq!(s.take_effects(), vec![Effect::JobReady(job)]);
    let poll = s.poll_job(job, usize::MAX, t0).unwrap();
    assert!(finished(&poll).summary.bit_identical(&reference(&spec)));
}

#[test]
fn a_silent_worker_loses_its_leases_and_its_late_result_is_stale() {
    let t0 = Instant::now();
    let config = SchedulerConfig::default();
    let mut s = Scheduler::new(config);
    let slow = worker(&mut s, t0);
    let spec = spec(LEAF_LEN, None, false);
    let job = s.submit(spec.clone(), t0).unwrap();
    s.pull(slow, 1, t0);
    let (_, first) = grants(&s.take_effects()).remove(0);

    // Not yet past the timeout: nothing happens.
    s.expire(t0 + config.lease_timeout);
    assert!(s.take_effects().is_empty());

    let later = t0 + config.lease_timeout + Duration::from_millis(1);
    let fresh = worker(&mut s, later);
    s.pull(fresh, 1, later);
    s.expire(later);
    let effects = s.take_effects();
    let (to, second) = grants(&effects).remove(0);
    assert!(s.leases_of(slow).is_empty());
    assert!(s.worker_status(later)[0].silent);
    assert_eq!(to, fresh);
    assert_eq!(second.token.chunk, first.token.chunk);
    assert_eq!(second.token.attempt, first.token.attempt + 1);

    // The zombie comes back: fenced off.
    assert_eq!(
        s.complete(slow, first.token, report_for(&first), later),
        Err(Rejection::Stale)
    );
    s.complete(fresh, second.token, report_for(&second), later)
        .unwrap();
    // A duplicate of the accepted result is stale too.
    assert_eq!(
        s.complete(fresh, second.token, report_for(&second), later),
        Err(Rejection::Stale)
    );

    let poll = s.poll_job(job, usize::MAX, later).unwrap();
    assert!(finished(&poll).summary.bit_identical(&reference(&spec)));
    let c = s.counters();
    assert_eq!(
        (
            c.leases_expired,
            c.results_accepted,
            c.results_rejected_stale
        ),
        (1, 1, 2)
    );

    // Having spoken again, the zombie is a worker like any other.
    assert!(!s.worker_status(later)[0].silent);
    let next = s.submit(spec.clone(), later).unwrap();
    s.pull(slow, 1, later);
    let (to, lease) = grants(&s.take_effects()).remove(0);
    assert_eq!((to, lease.token.job), (slow, next));
}

#[test]
fn heartbeats_keep_a_busy_worker_alive() {
    let t0 = Instant::now();
    let config = SchedulerConfig::default();
    let mut s = Scheduler::new(config);
    let w = worker(&mut s, t0);
    s.submit(spec(LEAF_LEN, None, false), t0).unwrap();
    s.pull(w, 1, t0);
    s.take_effects();
    let mut now = t0;
    for _ in 0..10 {
        now += config.lease_timeout / 2;
        s.heard_from(w, now);
        s.expire(now);
    }
    assert!(s.take_effects().is_empty());
    assert_eq!(s.leases_of(w).len(), 1);
}

#[test]
fn a_disconnected_worker_loses_its_leases_at_once() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let a = worker(&mut s, t0);
    let b = worker(&mut s, t0);
    s.submit(spec(LEAF_LEN, None, false), t0).unwrap();
    s.pull(a, 1, t0);
    s.pull(b, 1, t0);
    assert_eq!(grants(&s.take_effects()).len(), 1);
    s.disconnect_worker(a, Departure::Lost, t0);
    let regrant = grants(&s.take_effects());
    assert_eq!(regrant.len(), 1);
    assert_eq!(regrant[0].0, b);
    assert_eq!(regrant[0].1.token.attempt, 2);
}

#[test]
fn a_chunk_that_keeps_failing_fails_its_job_with_its_identity() {
    let t0 = Instant::now();
    let config = SchedulerConfig::default();
    let mut s = Scheduler::new(config);
    let w = worker(&mut s, t0);
    let job = s
        .submit(spec(3 * LEAF_LEN, Some(LEAF_LEN), false), t0)
        .unwrap();
    let other = s.submit(spec(LEAF_LEN, None, false), t0).unwrap();
    let mut attempts = 0;
    loop {
        s.pull(w, 1, t0);
        let effects = s.take_effects();
        let Some((_, lease)) = grants(&effects)
            .into_iter()
            .find(|(_, l)| l.token.job == job && l.token.chunk == 1)
        else {
            // Other chunks: complete them.
            for (_, lease) in grants(&effects) {
                s.complete(w, lease.token, report_for(&lease), t0).unwrap();
            }
            if s.poll_job(job, usize::MAX, t0)
                .is_none_or(|p| p.outcome.is_some())
            {
                break;
            }
            continue;
        };
        attempts += 1;
        s.fail(w, lease.token, "boom".into(), true, t0).unwrap();
    }
    assert_eq!(attempts, config.max_attempts);
    assert_eq!(s.counters().jobs_failed, 1);
    assert_eq!(s.counters().retries, u64::from(config.max_attempts) - 1);
    // The other job is still served.
    s.pull(w, 4, t0);
    for (_, lease) in grants(&s.take_effects()) {
        s.complete(w, lease.token, report_for(&lease), t0).unwrap();
    }
    assert!(finished(&s.poll_job(other, usize::MAX, t0).unwrap()).chunks >= 1);
}

#[test]
fn the_failure_names_job_chunk_range_attempts_workers_and_error() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let w = worker(&mut s, t0);
    let job = s
        .submit(spec(2 * LEAF_LEN, Some(LEAF_LEN), false), t0)
        .unwrap();
    s.pull(w, 1, t0);
    let (_, lease) = grants(&s.take_effects()).remove(0);
    s.fail(w, lease.token, "kernel panicked: boom".into(), false, t0)
        .unwrap();
    let poll = s.poll_job(job, usize::MAX, t0).unwrap();
    let Some(JobOutcome::Failed(failure)) = poll.outcome else {
        panic!("job should have failed");
    };
    assert_eq!(
        failure.to_string(),
        format!(
            "job {job} failed: chunk 0 (elements [0, {LEAF_LEN})) failed after 1 attempt(s) on worker(s) {w}: worker {w}: kernel panicked: boom"
        )
    );
}

#[test]
fn a_malformed_result_is_a_failed_attempt() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let w = worker(&mut s, t0);
    let spec = spec(2 * LEAF_LEN, None, false);
    let job = s.submit(spec.clone(), t0).unwrap();
    s.pull(w, 1, t0);
    let (_, lease) = grants(&s.take_effects()).remove(0);
    let mut bad = report_for(&lease);
    bad.summary.leaf_sums.pop();
    assert_eq!(
        s.complete(w, lease.token, bad, t0),
        Err(Rejection::Malformed)
    );
    s.pull(w, 1, t0);
    let (_, retry) = grants(&s.take_effects()).remove(0);
    assert_eq!(retry.token.attempt, 2);
    s.complete(w, retry.token, report_for(&retry), t0).unwrap();
    let poll = s.poll_job(job, usize::MAX, t0).unwrap();
    assert!(finished(&poll).summary.bit_identical(&reference(&spec)));
}

#[test]
fn a_slow_client_stops_leasing_ahead() {
    let t0 = Instant::now();
    let config = SchedulerConfig {
        window: WindowLimits {
            max_chunks: 1024,
            // Room for four chunks of values (plus their statistics).
            max_bytes: 4 * LEAF_LEN * 8 + 1024,
        },
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(config);
    let w = worker(&mut s, t0);
    let spec = spec(100 * LEAF_LEN, Some(LEAF_LEN), true);
    let job = s.submit(spec.clone(), t0).unwrap();
    s.pull(w, 100, t0);
    let first = grants(&s.take_effects());
    assert_eq!(first.len(), 4, "the window bounds the leases in flight");
    for (_, lease) in &first {
        s.complete(w, lease.token, report_for(lease), t0).unwrap();
    }
    // Released but not taken by the client: still no room.
    assert!(grants(&s.take_effects()).is_empty());

    let mut taken = 0;
    let mut outcome = None;
    while outcome.is_none() {
        let poll = s.poll_job(job, LEAF_LEN as usize * 8, t0).unwrap();
        taken += poll.values.len();
        outcome = poll.outcome;
        for (_, lease) in grants(&s.take_effects()) {
            s.complete(w, lease.token, report_for(&lease), t0).unwrap();
        }
    }
    assert_eq!(taken, 100);
    let Some(JobOutcome::Finished(result)) = outcome else {
        panic!("job failed");
    };
    assert!(result.summary.bit_identical(&reference(&spec)));
}

#[test]
fn cancelling_revokes_the_leases() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let w = worker(&mut s, t0);
    let job = s
        .submit(spec(4 * LEAF_LEN, Some(LEAF_LEN), false), t0)
        .unwrap();
    s.pull(w, 2, t0);
    let leases = grants(&s.take_effects());
    s.cancel(job, t0);
    let effects = s.take_effects();
    let Some(Effect::Revoke { worker: to, tokens }) = effects.first() else {
        panic!("expected a revoke, got {effects:?}");
    };
    assert_eq!(*to, w);
    assert_eq!(tokens.len(), 2);
    assert!(s.leases_of(w).is_empty());
    assert_eq!(
        s.complete(w, leases[0].1.token, report_for(&leases[0].1), t0),
        Err(Rejection::Stale)
    );
    assert_eq!(s.counters().jobs_cancelled, 1);
}

#[test]
fn a_draining_worker_returns_leases_without_using_up_tries() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig {
        max_attempts: 1,
        ..SchedulerConfig::default()
    });
    let a = worker(&mut s, t0);
    let spec = spec(2 * LEAF_LEN, Some(LEAF_LEN), false);
    let job = s.submit(spec.clone(), t0).unwrap();
    s.pull(a, 2, t0);
    let leases = grants(&s.take_effects());
    s.drain(a, t0);
    s.complete(a, leases[0].1.token, report_for(&leases[0].1), t0)
        .unwrap();
    s.return_leases(a, &[leases[1].1.token], t0);
    s.pull(a, 1, t0);
    assert!(
        grants(&s.take_effects()).is_empty(),
        "a draining worker gets nothing"
    );

    let b = worker(&mut s, t0);
    s.pull(b, 1, t0);
    let (_, retry) = grants(&s.take_effects()).remove(0);
    s.complete(b, retry.token, report_for(&retry), t0).unwrap();
    let poll = s.poll_job(job, usize::MAX, t0).unwrap();
    assert!(finished(&poll).summary.bit_identical(&reference(&spec)));
    assert_eq!(s.counters().leases_returned, 1);
}

#[test]
fn concurrent_jobs_share_the_workers() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let w = worker(&mut s, t0);
    let a = s
        .submit(spec(8 * LEAF_LEN, Some(LEAF_LEN), false), t0)
        .unwrap();
    let b = s
        .submit(spec(8 * LEAF_LEN, Some(LEAF_LEN), false), t0)
        .unwrap();
    s.pull(w, 4, t0);
    let jobs: Vec<JobId> = grants(&s.take_effects())
        .iter()
        .map(|(_, l)| l.token.job)
        .collect();
    assert_eq!(jobs, vec![a, b, a, b]);
}

#[test]
fn the_running_job_cap_is_enforced() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig {
        max_running_jobs: 1,
        ..SchedulerConfig::default()
    });
    s.submit(spec(LEAF_LEN, None, false), t0).unwrap();
    assert_eq!(
        s.submit(spec(LEAF_LEN, None, false), t0),
        Err(SubmitError::TooManyJobs { running: 1 })
    );
}

/// A report as if the worker computed at `speed` elements per second.
fn report_at(lease: &Lease, speed: f64) -> ChunkReport {
    ChunkReport {
        compute: Duration::from_secs_f64(lease.len as f64 / speed),
        ..report_for(lease)
    }
}

fn worker_with(s: &mut Scheduler, threads: u32, now: Instant) -> WorkerId {
    s.register_worker(
        WorkerInfo {
            name: format!("{threads} threads"),
            threads,
        },
        now,
    )
}

#[test]
fn an_idle_worker_backs_up_a_straggler_and_the_first_result_wins() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let fast = worker(&mut s, t0);
    let slow = worker(&mut s, t0);
    let spec = spec(4 * LEAF_LEN, Some(LEAF_LEN), false);
    let warmup = s.submit(spec.clone(), t0).unwrap();
    // Teach the scheduler their speeds: fast 1e9/s, slow 1e7/s.
    s.pull(fast, 2, t0);
    s.pull(slow, 2, t0);
    for (worker, lease) in grants(&s.take_effects()) {
        let speed = if worker == fast { 1e9 } else { 1e7 };
        s.complete(worker, lease.token, report_at(&lease, speed), t0)
            .unwrap();
    }
    assert!(
        s.poll_job(warmup, usize::MAX, t0)
            .unwrap()
            .outcome
            .is_some()
    );

    let job = s.submit(spec.clone(), t0).unwrap();
    s.pull(slow, 1, t0);
    s.pull(fast, 3, t0);
    let leases = grants(&s.take_effects());
    let (_, straggler) = leases.iter().find(|(w, _)| *w == slow).unwrap().clone();
    for (worker, lease) in leases.iter().filter(|(w, _)| *w == fast) {
        s.complete(*worker, lease.token, report_at(lease, 1e9), t0)
            .unwrap();
    }
    assert!(grants(&s.take_effects()).is_empty(), "no demand, no lease");
    s.pull(fast, 1, t0);
    assert!(
        grants(&s.take_effects()).is_empty(),
        "backups wait for the tick"
    );
    // The fast worker is idle and the slow one needs ~400 us for its
    // chunk: the fast one gets a backup.
    s.tick(t0);
    let backups = grants(&s.take_effects());
    assert_eq!(backups.len(), 1);
    let (to, backup) = backups[0].clone();
    assert_eq!(to, fast);
    assert_eq!(backup.token.chunk, straggler.token.chunk);
    assert_eq!(backup.token.attempt, straggler.token.attempt + 1);

    s.complete(fast, backup.token, report_at(&backup, 1e9), t0)
        .unwrap();
    let effects = s.take_effects();
    assert!(effects.contains(&Effect::Revoke {
        worker: slow,
        tokens: vec![straggler.token]
    }));
    assert_eq!(
        s.complete(slow, straggler.token, report_at(&straggler, 1e7), t0),
        Err(Rejection::Stale)
    );
    let status = s.job_status(job, t0).unwrap();
    assert_eq!(status.counters.backups_granted, 1);
    assert_eq!(status.counters.backups_won, 1);
    assert_eq!(status.counters.results_rejected_stale, 1);
    let poll = s.poll_job(job, usize::MAX, t0).unwrap();
    let result = finished(&poll);
    assert!(result.summary.bit_identical(&reference(&spec)));
    assert_eq!(result.attempts, 5, "4 chunks and 1 backup");
    let c = s.counters();
    assert_eq!((c.backups_granted, c.backups_won), (1, 1));
}

#[test]
fn a_failing_chunk_gets_no_backups_and_keeps_its_attempt_budget() {
    let t0 = Instant::now();
    let config = SchedulerConfig::default();
    let mut s = Scheduler::new(config);
    let fast = worker(&mut s, t0);
    let slow = worker(&mut s, t0);
    let spec = spec(4 * LEAF_LEN, Some(LEAF_LEN), false);
    let warmup = s.submit(spec.clone(), t0).unwrap();
    s.pull(fast, 2, t0);
    s.pull(slow, 2, t0);
    for (worker, lease) in grants(&s.take_effects()) {
        let speed = if worker == fast { 1e9 } else { 1e7 };
        s.complete(worker, lease.token, report_at(&lease, speed), t0)
            .unwrap();
    }
    assert!(
        s.poll_job(warmup, usize::MAX, t0)
            .unwrap()
            .outcome
            .is_some()
    );

    // The slow worker holds the poisoned chunk; the fast one finishes the
    // rest and gets a backup of it, which fails at once.
    let job = s.submit(spec, t0).unwrap();
    s.pull(slow, 1, t0);
    s.pull(fast, 3, t0);
    let leases = grants(&s.take_effects());
    let (_, poisoned) = leases.iter().find(|(w, _)| *w == slow).unwrap().clone();
    for (worker, lease) in leases.iter().filter(|(w, _)| *w == fast) {
        s.complete(*worker, lease.token, report_at(lease, 1e9), t0)
            .unwrap();
    }
    s.pull(fast, 1, t0);
    s.tick(t0);
    let (_, backup) = grants(&s.take_effects()).remove(0);
    assert_eq!(backup.token.chunk, poisoned.token.chunk);
    s.fail(fast, backup.token, "boom".into(), true, t0).unwrap();
    // The chunk failed: no more backups while the slow worker holds it.
    s.pull(fast, 1, t0);
    s.tick(t0);
    assert!(grants(&s.take_effects()).is_empty());
    s.fail(slow, poisoned.token, "boom".into(), true, t0)
        .unwrap();
    // Plain retries use up the rest of the budget, and the job fails.
    for _ in 0..10 {
        s.pull(fast, 1, t0);
        for (worker, lease) in grants(&s.take_effects()) {
            s.fail(worker, lease.token, "boom".into(), true, t0)
                .unwrap();
        }
    }
    let poll = s.poll_job(job, usize::MAX, t0).unwrap();
    let Some(JobOutcome::Failed(failure)) = poll.outcome else {
        panic!("job should have failed: {:?}", poll.outcome);
    };
    let message = failure.to_string();
    assert!(
        message.contains(&format!("failed after {} attempt(s)", config.max_attempts)),
        "{message}"
    );
}

#[test]
fn equally_fast_workers_get_no_backups() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let a = worker(&mut s, t0);
    let b = worker(&mut s, t0);
    let spec = spec(8 * LEAF_LEN, Some(LEAF_LEN), false);
    let job = s.submit(spec.clone(), t0).unwrap();
    let mut now = t0;
    s.pull(a, 2, now);
    s.pull(b, 2, now);
    // Each worker reports its oldest lease every 4 us (1e9 elements/s);
    // the idle moments at the end must not produce backups.
    for _ in 0..100 {
        now += Duration::from_nanos(LEAF_LEN);
        for w in [a, b] {
            let held = s.leases_of(w).first().copied();
            if let Some(token) = held {
                let offset = token.chunk * LEAF_LEN;
                let lease = Lease {
                    token,
                    function: spec.function,
                    job_start: spec.start,
                    offset,
                    len: LEAF_LEN,
                    stream_values: false,
                };
                s.complete(w, token, report_at(&lease, 1e9), now).unwrap();
                s.pull(w, 1, now);
            }
            s.tick(now);
        }
    }
    let poll = s.poll_job(job, usize::MAX, now).unwrap();
    assert_eq!(finished(&poll).attempts, 8);
    assert_eq!(s.counters().backups_granted, 0);
}

#[test]
fn chunk_sizes_follow_measured_speed() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let one = worker_with(&mut s, 1, t0);
    let two = worker_with(&mut s, 2, t0);
    // Before anything is measured, sizes follow threads.
    let big = s.submit(spec(1 << 40, None, false), t0).unwrap();
    s.pull(one, 1, t0);
    s.pull(two, 1, t0);
    let first = grants(&s.take_effects());
    let len_of = |leases: &[(WorkerId, Lease)], w: WorkerId| {
        leases.iter().find(|(to, _)| *to == w).unwrap().1.len
    };
    assert_eq!(len_of(&first, one), policy::MAX_SUMMARY_CHUNK);
    // The two-thread worker turns out 4x as fast (2e9/s against 5e8/s).
    for (w, lease) in &first {
        let speed = if *w == one { 5e8 } else { 2e9 };
        s.complete(*w, lease.token, report_at(lease, speed), t0)
            .unwrap();
    }
    s.pull(one, 1, t0);
    s.pull(two, 1, t0);
    let second = grants(&s.take_effects());
    // 25 ms at each worker's speed.
    assert_eq!(len_of(&second, one), round_to_leaves(12_500_000));
    assert_eq!(len_of(&second, two), round_to_leaves(50_000_000));
    s.cancel(big, t0);
}

#[test]
fn job_status_follows_a_job_to_its_end() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let w = worker(&mut s, t0);
    let spec = spec(2 * LEAF_LEN, Some(LEAF_LEN), false);
    let job = s.submit(spec.clone(), t0).unwrap();
    s.pull(w, 1, t0);
    let (_, lease) = grants(&s.take_effects()).remove(0);
    let running = s.job_status(job, t0).unwrap();
    assert_eq!(running.state, JobState::Running);
    assert_eq!((running.chunks_running, running.chunks_done), (1, 0));
    s.complete(w, lease.token, report_for(&lease), t0).unwrap();
    s.pull(w, 1, t0);
    let (_, lease) = grants(&s.take_effects()).remove(0);
    s.complete(w, lease.token, report_for(&lease), t0).unwrap();
    s.poll_job(job, usize::MAX, t0).unwrap();
    let ended = s.job_status(job, t0).unwrap();
    assert_eq!(ended.state, JobState::Finished);
    assert_eq!(ended.elements_done, 2 * LEAF_LEN);
    assert_eq!(ended.counters.leases_granted, 2);
    assert_eq!(ended.workers, vec![w]);

    let cancelled = s.submit(spec, t0).unwrap();
    s.cancel(cancelled, t0);
    assert_eq!(
        s.job_status(cancelled, t0).unwrap().state,
        JobState::Cancelled
    );
    assert!(s.job_status(JobId(999), t0).is_none());
}

#[test]
fn a_thousand_workers_share_tiny_chunks() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let workers: Vec<WorkerId> = (0..1000).map(|_| worker(&mut s, t0)).collect();
    let spec = spec(5000 * LEAF_LEN, Some(LEAF_LEN), false);
    let job = s.submit(spec.clone(), t0).unwrap();
    for w in &workers {
        s.pull(*w, 2, t0);
    }
    let mut outstanding = grants(&s.take_effects());
    let mut served = BTreeSet::new();
    while let Some((w, lease)) = outstanding.pop() {
        served.insert(w);
        s.complete(w, lease.token, report_for(&lease), t0).unwrap();
        s.pull(w, 1, t0);
        outstanding.extend(grants(&s.take_effects()));
        let _ = s.poll_job(job, usize::MAX, t0);
    }
    let status = s.job_status(job, t0).unwrap();
    assert_eq!(status.state, JobState::Finished);
    assert_eq!(status.chunks_done, 5000);
    assert_eq!(served.len(), 1000, "every worker got work");
}

/// Grants in the effects, one entry per message.
fn grant_messages(effects: Vec<Effect>) -> Vec<(WorkerId, Vec<Lease>)> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Grant { worker, leases } => Some((worker, leases)),
            _ => None,
        })
        .collect()
}

/// Grant messages in the order they were sent, and revoked tokens.
fn deliver(
    effects: Vec<Effect>,
    sent: &mut VecDeque<(WorkerId, Vec<Lease>)>,
    revoked: &mut BTreeSet<LeaseToken>,
) {
    for effect in effects {
        match effect {
            Effect::Grant { worker, leases } => sent.push_back((worker, leases)),
            Effect::Revoke { tokens, .. } => revoked.extend(tokens),
            Effect::JobReady(_) => {}
        }
    }
}

#[test]
fn every_hungry_worker_gets_its_turn_when_the_window_is_short() {
    // 100 workers each holding up to 32 leases, and a window of 256
    // chunks: at most 8 of them can be served in full at once. Each answers
    // a grant as soon as it is sent (grants in the order they were sent)
    // and asks for as many again, like the bench's simulated workers.
    let t0 = Instant::now();
    let defaults = SchedulerConfig::default();
    let mut s = Scheduler::new(SchedulerConfig {
        window: WindowLimits {
            max_chunks: 256,
            ..defaults.window
        },
        ..defaults
    });
    let workers: Vec<WorkerId> = (0..100).map(|_| worker(&mut s, t0)).collect();
    let job = s
        .submit(spec(6400 * LEAF_LEN, Some(LEAF_LEN), false), t0)
        .unwrap();
    for w in &workers {
        s.pull(*w, 32, t0);
    }
    let mut sent = VecDeque::new();
    let mut revoked = BTreeSet::new();
    deliver(s.take_effects(), &mut sent, &mut revoked);
    while let Some((w, leases)) = sent.pop_front() {
        for lease in &leases {
            if !revoked.contains(&lease.token) {
                s.complete(w, lease.token, report_for(lease), t0).unwrap();
            }
        }
        s.pull(w, leases.len() as u32, t0);
        deliver(s.take_effects(), &mut sent, &mut revoked);
    }
    let poll = s.poll_job(job, usize::MAX, t0).unwrap();
    assert_eq!(finished(&poll).chunks, 6400);
    let computed: Vec<u64> = s
        .worker_status(t0)
        .iter()
        .map(|w| w.chunks_completed)
        .collect();
    // Served in turn, 32 leases a turn: two turns each.
    assert_eq!(computed, vec![64; 100]);
}

#[test]
fn a_batch_of_results_is_answered_with_one_grant() {
    let t0 = Instant::now();
    let defaults = SchedulerConfig::default();
    let mut s = Scheduler::new(SchedulerConfig {
        window: WindowLimits {
            max_chunks: 4,
            ..defaults.window
        },
        ..defaults
    });
    let a = worker(&mut s, t0);
    let b = worker(&mut s, t0);
    s.submit(spec(8 * LEAF_LEN, Some(LEAF_LEN), false), t0)
        .unwrap();
    s.pull(a, 4, t0);
    s.pull(b, 4, t0);
    let held = grants(&s.take_effects());
    assert_eq!(held.len(), 4, "the window is full");
    // One call for the whole batch, as the service makes it.
    for (_, lease) in &held {
        s.complete(a, lease.token, report_for(lease), t0).unwrap();
    }
    let messages = grant_messages(s.take_effects());
    let chunks: Vec<(WorkerId, Vec<u64>)> = messages
        .iter()
        .map(|(w, leases)| (*w, leases.iter().map(|l| l.token.chunk).collect()))
        .collect();
    assert_eq!(chunks, vec![(b, vec![4, 5, 6, 7])]);
}

#[test]
fn leases_that_never_reached_their_worker_keep_their_tries() {
    let t0 = Instant::now();
    // A single lost try would fail the job.
    let mut s = Scheduler::new(SchedulerConfig {
        max_attempts: 1,
        ..SchedulerConfig::default()
    });
    let a = worker(&mut s, t0);
    let b = worker(&mut s, t0);
    let spec = spec(LEAF_LEN, None, false);
    let job = s.submit(spec.clone(), t0).unwrap();
    s.pull(a, 1, t0);
    let (_, first) = grants(&s.take_effects()).remove(0);

    // A's session is full: the lease comes back and A is paused.
    s.undelivered(a, &[first.token], t0);
    assert!(s.leases_of(a).is_empty());
    s.pull(a, 1, t0);
    assert!(
        grants(&s.take_effects()).is_empty(),
        "a paused worker gets nothing"
    );
    s.pull(b, 1, t0);
    let (to, second) = grants(&s.take_effects()).remove(0);
    assert_eq!((to, second.token.attempt), (b, 2));
    s.undelivered(b, &[second.token], t0);

    // A drained its session: it gets the chunk again, under a new token.
    s.resume_grants(a, t0);
    let effects = grant_messages(s.take_effects());
    assert_eq!(effects.len(), 1);
    let (to, leases) = &effects[0];
    assert_eq!((*to, leases.len(), leases[0].token.attempt), (a, 1, 3));
    assert_eq!(
        s.complete(a, first.token, report_for(&first), t0),
        Err(Rejection::Stale),
        "a token taken back is not live"
    );
    s.complete(a, leases[0].token, report_for(&leases[0]), t0)
        .unwrap();

    let poll = s.poll_job(job, usize::MAX, t0).unwrap();
    let result = finished(&poll);
    assert!(result.summary.bit_identical(&reference(&spec)));
    assert_eq!(result.attempts, 1, "only one lease reached a worker");
    let c = s.counters();
    assert_eq!(
        (
            c.leases_granted,
            c.leases_undelivered,
            c.retries,
            c.jobs_failed
        ),
        (1, 2, 0, 0)
    );
}

#[test]
fn dropped_sessions_keep_the_tries_and_lost_ones_use_them() {
    let t0 = Instant::now();
    let config = SchedulerConfig::default();
    let mut s = Scheduler::new(config);
    let job = s.submit(spec(LEAF_LEN, None, false), t0).unwrap();
    let mut holders = Vec::new();
    let mut hold_and_leave = |s: &mut Scheduler, departure| {
        let w = worker(s, t0);
        s.pull(w, 1, t0);
        assert_eq!(grants(&s.take_effects()).len(), 1);
        s.disconnect_worker(w, departure, t0);
        holders.push(w.to_string());
    };
    // The coordinator dropping sessions (say, workers too slow to read)
    // is not the chunk's fault, however often it happens.
    for _ in 0..10 {
        hold_and_leave(&mut s, Departure::Dropped);
    }
    assert!(s.poll_job(job, usize::MAX, t0).unwrap().outcome.is_none());
    assert_eq!(s.counters().retries, 0);
    // A chunk that takes its workers down fails the job.
    for _ in 0..config.max_attempts {
        hold_and_leave(&mut s, Departure::Lost);
    }
    let poll = s.poll_job(job, usize::MAX, t0).unwrap();
    let Some(JobOutcome::Failed(failure)) = poll.outcome else {
        panic!("job should have failed: {:?}", poll.outcome);
    };
    let last = holders.last().unwrap();
    assert_eq!(
        failure.to_string(),
        format!(
            "job {job} failed: chunk 0 (elements [0, {LEAF_LEN})) failed after 14 attempt(s) on worker(s) {}: no worker reported an error; its last lease was lost when worker {last} disconnected",
            holders.join(", ")
        )
    );
}

#[test]
fn a_chunk_lost_with_silent_workers_says_so() {
    let t0 = Instant::now();
    let config = SchedulerConfig::default();
    let mut s = Scheduler::new(config);
    let job = s.submit(spec(LEAF_LEN, None, false), t0).unwrap();
    let mut now = t0;
    let mut holders = Vec::new();
    for _ in 0..config.max_attempts {
        let w = worker(&mut s, now);
        s.pull(w, 1, now);
        assert_eq!(grants(&s.take_effects()).len(), 1);
        holders.push(w.to_string());
        now += config.lease_timeout + Duration::from_millis(1);
        s.tick(now);
    }
    let poll = s.poll_job(job, usize::MAX, now).unwrap();
    let Some(JobOutcome::Failed(failure)) = poll.outcome else {
        panic!("job should have failed: {:?}", poll.outcome);
    };
    assert_eq!(
        failure.to_string(),
        format!(
            "job {job} failed: chunk 0 (elements [0, {LEAF_LEN})) failed after 4 attempt(s) on worker(s) {}: no worker reported an error; its last lease was lost when worker w4 went silent for over 5s",
            holders.join(", ")
        )
    );
}

#[test]
fn idle_workers_back_up_the_slowest_stragglers_first() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    let fast = [worker(&mut s, t0), worker(&mut s, t0)];
    let slow = worker(&mut s, t0);
    let slower = worker(&mut s, t0);
    let speed_of = |w: WorkerId| match w {
        w if w == slow => 1e7,
        w if w == slower => 1e6,
        _ => 1e9,
    };
    let spec = spec(6 * LEAF_LEN, Some(LEAF_LEN), false);
    let warmup = s.submit(spec.clone(), t0).unwrap();
    for w in [fast[0], fast[1], slow, slower] {
        s.pull(w, 1, t0);
    }
    for (w, lease) in grants(&s.take_effects()) {
        s.complete(w, lease.token, report_at(&lease, speed_of(w)), t0)
            .unwrap();
    }
    s.cancel(warmup, t0);
    s.take_effects();

    let job = s.submit(spec.clone(), t0).unwrap();
    s.pull(slow, 1, t0);
    s.pull(slower, 1, t0);
    s.pull(fast[0], 2, t0);
    s.pull(fast[1], 2, t0);
    let leases = grants(&s.take_effects());
    let held_by = |w: WorkerId| leases.iter().find(|(to, _)| *to == w).unwrap().1.token;
    let (slow_token, slower_token) = (held_by(slow), held_by(slower));
    for (w, lease) in leases.iter().filter(|(w, _)| fast.contains(w)) {
        s.complete(*w, lease.token, report_at(lease, 1e9), t0)
            .unwrap();
    }
    s.pull(fast[0], 1, t0);
    s.pull(fast[1], 1, t0);
    assert!(grants(&s.take_effects()).is_empty());

    // The slower worker's chunk is expected to finish last: it is backed
    // up first.
    s.tick(t0);
    let backups: Vec<(WorkerId, u64)> = grants(&s.take_effects())
        .iter()
        .map(|(w, l)| (*w, l.token.chunk))
        .collect();
    assert_eq!(
        backups,
        vec![(fast[0], slower_token.chunk), (fast[1], slow_token.chunk)]
    );
    let status = s.job_status(job, t0).unwrap();
    assert_eq!(status.counters.backups_granted, 2);
}
