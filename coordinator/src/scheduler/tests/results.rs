//! Results: failures, the attempt budget and malformed results.

use super::*;

#[test]
fn a_chunk_that_keeps_failing_fails_its_job_with_its_identity() {
    let t0 = Instant::now();
    let config = SchedulerConfig::default();
    let mut s = TestScheduler::new(config);
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
    let mut s = TestScheduler::new(SchedulerConfig::default());
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
    let mut s = TestScheduler::new(SchedulerConfig::default());
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
