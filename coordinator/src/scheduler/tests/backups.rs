//! Backups: idle workers back up stragglers; the first result wins.

use super::*;

#[test]
fn an_idle_worker_backs_up_a_straggler_and_the_first_result_wins() {
    let t0 = Instant::now();
    let mut s = TestScheduler::new(SchedulerConfig::default());
    let (fast, slow, spec) = fast_and_slow_workers(&mut s, t0);

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
    let mut s = TestScheduler::new(config);
    let (fast, slow, spec) = fast_and_slow_workers(&mut s, t0);

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
    let mut s = TestScheduler::new(SchedulerConfig::default());
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
                    function: spec.function.clone(),
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
fn idle_workers_back_up_the_slowest_stragglers_first() {
    let t0 = Instant::now();
    let mut s = TestScheduler::new(SchedulerConfig::default());
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
