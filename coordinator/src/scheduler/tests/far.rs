//! Far workers: granted enough to cover their round trip, the tail ahead
//! of their demand only within their share, and backups count the round
//! trip.

use super::*;

const FAR: Duration = Duration::from_millis(190);
const NEAR: Duration = Duration::from_micros(300);

/// Grants for `worker` in the effects.
fn granted_to(s: &mut TestScheduler, worker: WorkerId) -> Vec<Lease> {
    grants(&s.take_effects())
        .into_iter()
        .filter(|(w, _)| *w == worker)
        .map(|(_, lease)| lease)
        .collect()
}

#[test]
fn a_far_worker_holds_enough_to_cover_its_round_trip_and_a_near_one_what_it_asks() {
    let t0 = Instant::now();
    let mut s = TestScheduler::new(SchedulerConfig::default());
    let far = worker(&mut s, t0);
    let near = worker(&mut s, t0);
    s.submit(spec(1 << 40, None, false), t0).unwrap();

    // No speed known: chunks are planned at 25 ms. 190 ms, 1.5 times
    // over, is 12 chunks queued and one computing.
    s.round_trip(far, FAR, t0);
    s.round_trip(near, NEAR, t0);
    let far_leases = granted_to(&mut s, far);
    assert_eq!(far_leases.len(), 13);
    assert!(
        granted_to(&mut s, near).is_empty(),
        "a near worker asks first"
    );
    s.pull(near, 2, t0);
    assert_eq!(granted_to(&mut s, near).len(), 2);
    let status = s.worker_status(t0);
    let far_status = status.iter().find(|w| w.id == far).unwrap();
    assert_eq!(far_status.round_trip, Some(FAR));
    assert_eq!((far_status.leases_held, far_status.hold), (13, 13));

    // A result frees a place: the far worker gets the next lease at once,
    // not a round trip later when its pull arrives. At 1e9 elements/s its
    // chunks take ~25 ms, so it still holds 13.
    let done = &far_leases[0];
    s.complete(far, done.token, report_at(done, 1e9), t0)
        .unwrap();
    assert_eq!(granted_to(&mut s, far).len(), 1);
    assert_eq!(s.leases_of(far).len(), 13);
    // The near worker gets nothing it did not ask for.
    s.heard_from(near, t0);
    assert!(granted_to(&mut s, near).is_empty());
    assert_eq!(s.leases_of(near).len(), 2);

    // The round trip is smoothed: one short sample does not undo it.
    s.round_trip(far, NEAR, t0);
    let smoothed = s
        .worker_status(t0)
        .into_iter()
        .find(|w| w.id == far)
        .unwrap();
    assert!(smoothed.round_trip.unwrap() > FAR / 2);
}

#[test]
fn ahead_of_its_demand_a_far_worker_gets_no_tail_beyond_its_share() {
    let t0 = Instant::now();
    let mut s = TestScheduler::new(SchedulerConfig::default());
    let far = worker(&mut s, t0);
    let _near = worker(&mut s, t0);
    // Half the cluster, 64 leaves a chunk: ahead of demand only while a
    // whole chunk is at most a quarter of its half of what is left (8
    // chunks or more left).
    let job_spec = spec(16 * 64 * LEAF_LEN, Some(64 * LEAF_LEN), false);
    let job = s.submit(job_spec.clone(), t0).unwrap();
    s.round_trip(far, FAR, t0);
    let ahead = granted_to(&mut s, far);
    assert_eq!(ahead.len(), 9, "16 chunks: all but the last 7");
    // What it asks for it still gets, tail or not.
    s.pull(far, 2, t0);
    assert_eq!(granted_to(&mut s, far).len(), 2);
    // The job still ends exact.
    let mut held: Vec<LeaseToken> = s.leases_of(far).to_vec();
    while let Some(token) = held.pop() {
        let chunk = token.chunk;
        let lease = Lease {
            token,
            function: Function::Sqrt.into(),
            job_start: 3,
            offset: chunk * 64 * LEAF_LEN,
            len: 64 * LEAF_LEN,
            stream_values: false,
        };
        s.complete(far, token, report_at(&lease, 1e9), t0).unwrap();
        s.pull(far, 1, t0);
        held.extend(granted_to(&mut s, far).iter().map(|l| l.token));
    }
    let poll = s.poll_job(job, usize::MAX, t0).unwrap();
    assert!(finished(&poll).summary.bit_identical(&reference(&job_spec)));
}

#[test]
fn a_lone_far_worker_takes_the_tail_ahead_of_its_demand() {
    let t0 = Instant::now();
    let mut s = TestScheduler::new(SchedulerConfig::default());
    let far = worker(&mut s, t0);
    // The whole cluster, 64 leaves a chunk: full size while 4 chunks or
    // more are left.
    let chunk = 64 * LEAF_LEN;
    let job_spec = spec(16 * chunk, Some(chunk), false);
    let job = s.submit(job_spec.clone(), t0).unwrap();
    s.round_trip(far, FAR, t0);
    let first = granted_to(&mut s, far);
    assert_eq!(first.len(), 13, "its hold: 13 full-size chunks");

    // Results free places: the chunks left are tail chunks, which it gets
    // as its results arrive, with no pull: it holds no more than all of
    // the work left. Waiting for its pulls would cost a round trip each.
    let mut held: VecDeque<Lease> = first.into();
    let mut offsets = Vec::new();
    while let Some(lease) = held.pop_front() {
        offsets.push(lease.offset);
        s.complete(far, lease.token, report_at(&lease, 1e9), t0)
            .unwrap();
        held.extend(granted_to(&mut s, far));
    }
    let every_chunk: Vec<u64> = (0..16).map(|i| i * chunk).collect();
    assert_eq!(offsets, every_chunk);
    let poll = s.poll_job(job, usize::MAX, t0).unwrap();
    assert!(finished(&poll).summary.bit_identical(&reference(&job_spec)));
}

#[test]
fn a_far_idle_worker_backs_up_no_straggler_it_would_deliver_later() {
    let t0 = Instant::now();
    let mut s = TestScheduler::new(SchedulerConfig::default());
    let (fast, slow, spec) = fast_and_slow_workers(&mut s, t0);

    // The fast worker is 190 ms away; the slow one needs ~400 us for its
    // chunk, so a backup would arrive far later than the chunk.
    s.round_trip(fast, FAR, t0);
    s.submit(spec.clone(), t0).unwrap();
    s.pull(slow, 1, t0);
    s.pull(fast, 3, t0);
    for (worker, lease) in grants(&s.take_effects()) {
        if worker == fast {
            s.complete(worker, lease.token, report_at(&lease, 1e9), t0)
                .unwrap();
        }
    }
    s.take_effects();
    s.pull(fast, 1, t0);
    s.tick(t0);
    assert!(grants(&s.take_effects()).is_empty(), "no backup from afar");
    // The same worker near would back it up (see backups.rs); a straggler
    // late by more than twice the round trip is backed up from afar too.
    s.tick(t0 + 4 * FAR);
    assert_eq!(grants(&s.take_effects()).len(), 1);
}

#[test]
fn a_worker_on_a_thin_link_streams_small_chunks_and_holds_for_its_link_not_its_queue() {
    let t0 = Instant::now();
    let mut s = TestScheduler::new(SchedulerConfig::default());
    let thin = worker(&mut s, t0);
    // 25 ms each way, measured while the link is idle.
    let link = Duration::from_millis(50);
    s.round_trip(thin, link, t0);
    s.submit(spec(1 << 30, None, true), t0).unwrap();
    s.pull(thin, 2, t0);

    // It computes 1e9 elements/s, but its values arrive at 1e6/s (8 MB/s):
    // each result lands when the link has carried it. Meanwhile its pongs
    // wait behind its values: the round trips it shows grow.
    let mut now = t0;
    let mut held: VecDeque<Lease> = granted_to(&mut s, thin).into();
    for _ in 0..40 {
        let lease = held.pop_front().expect("it always holds a lease");
        now += Duration::from_secs_f64(lease.len as f64 / 1e6);
        s.complete(thin, lease.token, report_at(&lease, 1e9), now)
            .unwrap();
        s.round_trip(thin, link * 10, now);
        s.pull(thin, 1, now);
        held.extend(granted_to(&mut s, thin));
    }
    // Its chunks are sized to cross the link quickly: the smallest chunk
    // (64 ms of link), not 1 Mi elements (over a second).
    assert!(held.iter().all(|l| l.len == policy::MIN_CHUNK), "{held:?}");
    // Its hold covers the link's 50 ms (1.5 times over, 64 ms a chunk):
    // one computing, two queued. Planned with the round trips it shows
    // (queueing behind what it holds), it would grow to the bound.
    let status = s.worker_status(now);
    let thin_status = status.iter().find(|w| w.id == thin).unwrap();
    assert!(thin_status.round_trip.unwrap() > link * 5);
    assert_eq!(thin_status.hold, 3);
}
