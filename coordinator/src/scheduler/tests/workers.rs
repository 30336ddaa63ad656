//! Workers: silence, heartbeats, disconnects, drain, and which losses use up tries.

use super::*;

#[test]
fn a_silent_worker_loses_its_leases_and_its_late_result_is_stale() {
    let t0 = Instant::now();
    let config = SchedulerConfig::default();
    let mut s = TestScheduler::new(config);
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
    let mut s = TestScheduler::new(config);
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
    let mut s = TestScheduler::new(SchedulerConfig::default());
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
fn a_draining_worker_returns_leases_without_using_up_tries() {
    let t0 = Instant::now();
    let mut s = TestScheduler::new(SchedulerConfig {
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
fn dropped_sessions_keep_the_tries_and_lost_ones_use_them() {
    let t0 = Instant::now();
    let config = SchedulerConfig::default();
    let mut s = TestScheduler::new(config);
    let job = s.submit(spec(LEAF_LEN, None, false), t0).unwrap();
    let mut holders = Vec::new();
    let mut hold_and_leave = |s: &mut TestScheduler, departure| {
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
    let mut s = TestScheduler::new(config);
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
