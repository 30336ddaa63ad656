//! Scheduler rules, one scenario each, with time passed in, grouped by the
//! file of the scheduler they exercise; and the property tests.

mod backups;
mod far;
mod jobs;
mod leasing;
mod property;
mod property_faults;
mod results;
mod workers;

pub(super) use std::collections::{BTreeSet, VecDeque};
pub(super) use std::time::{Duration, Instant};

pub(super) use farm_catalog::grid::{LEAF_LEN, round_to_leaves};
pub(super) use farm_catalog::summary::{le_bytes, summarize_values};
pub(super) use farm_catalog::{Function, Summary, evaluate};

pub(super) use super::*;

/// Values as the tests hold them: plain bytes in memory.
impl HeldValues for Vec<u8> {
    fn byte_len(&self) -> usize {
        self.len()
    }
}

pub(super) type TestScheduler = Scheduler<Vec<u8>>;

/// Two workers whose speeds the scheduler has learnt from a finished
/// warm-up job (fast 1e9/s, slow 1e7/s), and the job spec of that warm-up
/// (four one-leaf chunks), for backup scenarios.
pub(super) fn fast_and_slow_workers(
    s: &mut TestScheduler,
    t0: Instant,
) -> (WorkerId, WorkerId, JobSpec) {
    let fast = worker(s, t0);
    let slow = worker(s, t0);
    let spec = spec(4 * LEAF_LEN, Some(LEAF_LEN), false);
    let warmup = s.submit(spec.clone(), t0).unwrap();
    s.pull(fast, 2, t0);
    s.pull(slow, 2, t0);
    for (worker, lease) in grants(&s.take_effects()) {
        let speed = if worker == fast { 1e9 } else { 1e7 };
        s.complete(worker, lease.token, report_at(&lease, speed), t0)
            .unwrap();
    }
    let warmed = s.poll_job(warmup, usize::MAX, t0).unwrap();
    assert!(warmed.outcome.is_some(), "the warm-up job finished");
    (fast, slow, spec)
}

pub(super) fn spec(n: u64, chunk_size: Option<u64>, stream_values: bool) -> JobSpec {
    JobSpec {
        function: Function::Sqrt.into(),
        start: 3,
        n,
        chunk_size,
        stream_values,
    }
}

/// The catalog function of a test job (they all run one).
pub(super) fn catalog(function: &JobFunction) -> Function {
    function
        .catalog()
        .expect("scheduler tests run catalog functions")
}

pub(super) fn report_for(lease: &Lease) -> ChunkReport<Vec<u8>> {
    let out = evaluate(
        catalog(&lease.function),
        lease.job_start,
        lease.offset..lease.offset + lease.len,
        lease.stream_values,
    )
    .expect("test leases are valid");
    ChunkReport {
        summary: out.summary,
        values: out.values.map(|v| le_bytes(&v).into_owned()),
        // As if every worker computed 1e9 elements per second.
        compute: Duration::from_nanos(lease.len),
    }
}

pub(super) fn reference(spec: &JobSpec) -> Summary {
    let values: Vec<f64> = (0..spec.n)
        .map(|i| catalog(&spec.function).eval(spec.start + i))
        .collect();
    summarize_values(&values)
}

pub(super) fn worker(s: &mut TestScheduler, now: Instant) -> WorkerId {
    s.register_worker(
        WorkerInfo {
            name: "test".into(),
            threads: 1,
        },
        now,
    )
}

/// Grants in the effects, flattened.
pub(super) fn grants(effects: &[Effect]) -> Vec<(WorkerId, Lease)> {
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

pub(super) fn finished(poll: &JobPoll<Vec<u8>>) -> &JobResult {
    match &poll.outcome {
        Some(JobOutcome::Finished(result)) => result,
        other => panic!("job did not finish: {other:?}"),
    }
}

/// A report as if the worker computed at `speed` elements per second.
pub(super) fn report_at(lease: &Lease, speed: f64) -> ChunkReport<Vec<u8>> {
    ChunkReport {
        compute: Duration::from_secs_f64(lease.len as f64 / speed),
        ..report_for(lease)
    }
}

pub(super) fn worker_with(s: &mut TestScheduler, threads: u32, now: Instant) -> WorkerId {
    s.register_worker(
        WorkerInfo {
            name: format!("{threads} threads"),
            threads,
        },
        now,
    )
}

/// Grants in the effects, one entry per message.
pub(super) fn grant_messages(effects: Vec<Effect>) -> Vec<(WorkerId, Vec<Lease>)> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Grant { worker, leases } => Some((worker, leases)),
            _ => None,
        })
        .collect()
}

/// Grant messages in the order they were sent, and revoked tokens.
pub(super) fn deliver(
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
