//! Jobs: the ordered merge and its window, cancelling, sharing, status.

use super::*;

#[test]
fn results_in_any_order_are_released_in_order() {
    let t0 = Instant::now();
    let mut s = TestScheduler::new(SchedulerConfig::default());
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
    let mut s = TestScheduler::new(SchedulerConfig::default());
    let spec = spec(0, None, false);
    let job = s.submit(spec.clone(), t0).unwrap();
    assert_eq!(s.take_effects(), vec![Effect::JobReady(job)]);
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
    let mut s = TestScheduler::new(config);
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
    let mut s = TestScheduler::new(SchedulerConfig::default());
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
fn concurrent_jobs_share_the_workers() {
    let t0 = Instant::now();
    let mut s = TestScheduler::new(SchedulerConfig::default());
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
    let mut s = TestScheduler::new(SchedulerConfig {
        max_running_jobs: 1,
        ..SchedulerConfig::default()
    });
    s.submit(spec(LEAF_LEN, None, false), t0).unwrap();
    assert_eq!(
        s.submit(spec(LEAF_LEN, None, false), t0),
        Err(SubmitError::TooManyJobs { running: 1 })
    );
}

#[test]
fn job_status_follows_a_job_to_its_end() {
    let t0 = Instant::now();
    let mut s = TestScheduler::new(SchedulerConfig::default());
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
