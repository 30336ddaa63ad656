//! Leasing: chunk sizes, turns among hungry workers, one grant per call, undelivered grants.

use super::*;

#[test]
fn chunk_sizes_follow_measured_speed() {
    let t0 = Instant::now();
    let mut s = TestScheduler::new(SchedulerConfig::default());
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
fn a_thousand_workers_share_tiny_chunks() {
    let t0 = Instant::now();
    let mut s = TestScheduler::new(SchedulerConfig::default());
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

#[test]
fn every_hungry_worker_gets_its_turn_when_the_window_is_short() {
    // 100 workers each holding up to 32 leases, and a window of 256
    // chunks: at most 8 of them can be served in full at once. Each answers
    // a grant as soon as it is sent (grants in the order they were sent)
    // and asks for as many again, like the bench's simulated workers.
    let t0 = Instant::now();
    let defaults = SchedulerConfig::default();
    let mut s = TestScheduler::new(SchedulerConfig {
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
    let mut s = TestScheduler::new(SchedulerConfig {
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
    let mut s = TestScheduler::new(SchedulerConfig {
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
