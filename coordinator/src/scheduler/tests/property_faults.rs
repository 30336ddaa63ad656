//! Property: the hard paths. Several jobs run at once under a bounded
//! attempt budget, on workers of very different speeds, while schedules
//! mix retryable failures, backups of stragglers, silence past the lease
//! timeout (and the zombies' late results), disconnects, grants that
//! could not be delivered, drains that hand leases back, and
//! cancellation. Whatever happens:
//!
//! - a report under a token its worker no longer holds (reported,
//!   returned, revoked, expired, taken back, or its worker gone) is
//!   rejected as stale: fencing agrees with the workers' bookkeeping;
//! - no chunk's result is accepted twice, and values come out in order;
//! - a job that finishes equals the serial reference bit for bit, with
//!   each of its chunks merged exactly once;
//! - a job that fails names a chunk that never merged, with at least
//!   `max_attempts` attempts, its range as leased, and the values sent
//!   before it a prefix of the reference;
//! - the jobs end (no loop), and the counters agree with what the workers
//!   saw: grants, acceptances, stale rejections, failures, backups won at
//!   most backups granted, retries at most the budget allows.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::*;

const WORKERS: usize = 3;

/// Elements per second of the worker in each slot: backups pay off only
/// against a much slower holder.
const SPEEDS: [f64; WORKERS] = [1e9, 1e8, 1e6];

#[derive(Debug, Clone)]
enum Op {
    Pull {
        worker: usize,
        slots: u32,
    },
    /// The worker reports its oldest lease and asks for one more, as a
    /// worker does; faster workers do this more often.
    Work {
        worker: usize,
    },
    /// Report a result for some lease ever granted (live, stale, revoked,
    /// already reported, or of an ended job).
    Complete {
        pick: usize,
    },
    /// Report a retryable failure for some lease ever granted.
    Fail {
        pick: usize,
    },
    Disconnect {
        worker: usize,
        departure: Departure,
    },
    /// One of the grants of the last call could not be delivered.
    Undeliver {
        pick: usize,
    },
    /// A backlogged worker's session has room again.
    Resume {
        worker: usize,
    },
    Heartbeat {
        worker: usize,
    },
    /// Let time pass, then tick: silent workers lose their leases, idle
    /// ones may get backups.
    Advance {
        millis: u64,
    },
    /// Tick without time passing: backups only.
    Tick,
    Poll {
        job: usize,
        max_bytes: usize,
    },
    /// The job's client went away.
    Cancel {
        job: usize,
    },
    /// The worker drains: it keeps the first `keep` leases it holds (as
    /// if started) and hands the rest back.
    Drain {
        worker: usize,
        keep: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..WORKERS, 1u32..4).prop_map(|(worker, slots)| Op::Pull { worker, slots }),
        16 => worker_by_speed().prop_map(|worker| Op::Work { worker }),
        8 => any::<usize>().prop_map(|pick| Op::Complete { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Fail { pick }),
        2 => (0..WORKERS, any::<bool>()).prop_map(|(worker, lost)| Op::Disconnect {
            worker,
            departure: if lost { Departure::Lost } else { Departure::Dropped },
        }),
        2 => any::<usize>().prop_map(|pick| Op::Undeliver { pick }),
        2 => (0..WORKERS).prop_map(|worker| Op::Resume { worker }),
        4 => (0..WORKERS).prop_map(|worker| Op::Heartbeat { worker }),
        2 => (0u64..6000).prop_map(|millis| Op::Advance { millis }),
        4 => Just(Op::Tick),
        4 => (any::<usize>(), 1usize..100_000).prop_map(|(job, max_bytes)| Op::Poll { job, max_bytes }),
        1 => any::<usize>().prop_map(|job| Op::Cancel { job }),
        1 => (0..WORKERS, 0usize..3).prop_map(|(worker, keep)| Op::Drain { worker, keep }),
    ]
}

/// A slot, the faster ones more often: they report more often.
fn worker_by_speed() -> impl Strategy<Value = usize> {
    prop_oneof![6 => Just(0), 3 => Just(1), 1 => Just(2)]
}

fn job_spec() -> impl Strategy<Value = JobSpec> {
    (
        0u64..16 * LEAF_LEN,
        // Mostly several chunks: a forced size is smaller than the job.
        prop::option::weighted(0.8, 1u64..5),
        any::<bool>(),
    )
        .prop_map(|(n, leaves, stream_values)| spec(n, leaves.map(|l| l * LEAF_LEN), stream_values))
}

#[derive(Debug, Clone)]
struct Case {
    max_attempts: u32,
    jobs: Vec<JobSpec>,
    ops: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1u32..5,
        prop::collection::vec(job_spec(), 1..4),
        prop::collection::vec(op(), 0..200),
    )
        .prop_map(|(max_attempts, jobs, ops)| Case {
            max_attempts,
            jobs,
            ops,
        })
}

/// One job as its client and the test see it.
struct Tracked {
    id: JobId,
    spec: JobSpec,
    /// Values received, in order.
    values: Vec<u8>,
    outcome: Option<JobOutcome>,
    cancelled: bool,
    /// Chunks whose result was accepted.
    merged: BTreeSet<u64>,
    /// Every chunk leased, by index: (offset, len).
    chunks: BTreeMap<u64, (u64, u64)>,
}

impl Tracked {
    fn ended(&self) -> bool {
        self.cancelled || self.outcome.is_some()
    }
}

/// What the workers saw, to hold the counters to.
#[derive(Debug, Default)]
struct Seen {
    /// Leases in grants, delivered or not.
    leases: u64,
    accepted: u64,
    stale: u64,
    failures: u64,
    /// Tokens handed back by draining workers.
    returned: u64,
}

struct Harness {
    s: TestScheduler,
    now: Instant,
    max_attempts: u32,
    workers: Vec<WorkerId>,
    draining: [bool; WORKERS],
    /// The slot of every worker ever registered: its speed.
    slot_of: HashMap<WorkerId, usize>,
    granted: Vec<(WorkerId, Lease)>,
    /// The grants of the last call, which may yet turn out undelivered.
    last_grants: Vec<(WorkerId, Vec<LeaseToken>)>,
    reports: HashMap<LeaseToken, ChunkReport<Vec<u8>>>,
    /// Granted leases their worker still holds, as far as the test knows.
    held: Vec<(WorkerId, LeaseToken)>,
    /// Tokens their worker no longer holds (reported, failed, returned,
    /// revoked, expired, taken back, or gone with their worker): fencing
    /// must reject any report under one as stale.
    dead: HashSet<LeaseToken>,
    jobs: Vec<Tracked>,
    seen: Seen,
}

impl Harness {
    fn new(case: &Case) -> Harness {
        let now = Instant::now();
        let s = TestScheduler::new(SchedulerConfig {
            max_attempts: case.max_attempts,
            ..SchedulerConfig::default()
        });
        let mut h = Harness {
            s,
            now,
            max_attempts: case.max_attempts,
            workers: Vec::new(),
            draining: [false; WORKERS],
            slot_of: HashMap::new(),
            granted: Vec::new(),
            last_grants: Vec::new(),
            reports: HashMap::new(),
            held: Vec::new(),
            dead: HashSet::new(),
            jobs: Vec::new(),
            seen: Seen::default(),
        };
        for slot in 0..WORKERS {
            let id = h.register(slot);
            h.workers.push(id);
        }
        // A first job, one chunk per worker, teaches the scheduler their
        // speeds: a worker it has not measured is taken to be as fast as
        // the others, and gets no backup of its chunks.
        h.submit(spec(WORKERS as u64 * LEAF_LEN, Some(LEAF_LEN), false));
        for slot in 0..WORKERS {
            h.s.pull(h.workers[slot], 1, now);
            h.collect_effects();
            h.finish_held(h.workers[slot]);
        }
        for spec in &case.jobs {
            h.submit(spec.clone());
        }
        h.collect_effects();
        h
    }

    fn submit(&mut self, spec: JobSpec) {
        let id = self
            .s
            .submit(spec.clone(), self.now)
            .expect("a few jobs are accepted");
        self.jobs.push(Tracked {
            id,
            spec,
            values: Vec::new(),
            outcome: None,
            cancelled: false,
            merged: BTreeSet::new(),
            chunks: BTreeMap::new(),
        });
    }

    fn register(&mut self, slot: usize) -> WorkerId {
        let info = WorkerInfo {
            name: format!("w{slot}"),
            threads: 1,
        };
        let id = self.s.register_worker(info, self.now);
        self.slot_of.insert(id, slot);
        id
    }

    fn tracked(&mut self, job: JobId) -> &mut Tracked {
        self.jobs
            .iter_mut()
            .find(|t| t.id == job)
            .expect("leases are for submitted jobs")
    }

    fn collect_effects(&mut self) {
        self.last_grants.clear();
        for effect in self.s.take_effects() {
            let Effect::Grant { worker, leases } = effect else {
                continue;
            };
            self.seen.leases += leases.len() as u64;
            for lease in &leases {
                let chunk = (lease.offset, lease.len);
                let known = *self
                    .tracked(lease.token.job)
                    .chunks
                    .entry(lease.token.chunk)
                    .or_insert(chunk);
                assert_eq!(known, chunk, "a chunk's range never changes");
            }
            self.last_grants
                .push((worker, leases.iter().map(|l| l.token).collect()));
            self.held.extend(leases.iter().map(|l| (worker, l.token)));
            // Kept even if undelivered: reporting one must be rejected.
            self.granted.extend(leases.into_iter().map(|l| (worker, l)));
        }
        // What the scheduler's workers no longer hold is dead for good.
        let s = &self.s;
        let (held, dead): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(worker, token)| s.leases_of(*worker).contains(token));
        self.held = held;
        self.dead.extend(dead.into_iter().map(|(_, token)| token));
    }

    /// The result `worker` computes for `lease`, timed at its speed.
    fn report(&mut self, worker: WorkerId, lease: &Lease) -> ChunkReport<Vec<u8>> {
        let report = self
            .reports
            .entry(lease.token)
            .or_insert_with(|| report_for(lease));
        let speed = SPEEDS[self.slot_of[&worker]];
        ChunkReport {
            summary: report.summary.clone(),
            values: report.values.clone(),
            compute: Duration::from_secs_f64(lease.len as f64 / speed),
        }
    }

    /// Reports `lease`'s result; returns whether it was accepted.
    fn complete(&mut self, worker: WorkerId, lease: &Lease) -> bool {
        let report = self.report(worker, lease);
        let result = self.s.complete(worker, lease.token, report, self.now);
        if self.dead.contains(&lease.token) {
            assert_eq!(result, Err(Rejection::Stale), "{} is dead", lease.token);
        }
        match result {
            Ok(()) => {
                self.seen.accepted += 1;
                let first = self
                    .tracked(lease.token.job)
                    .merged
                    .insert(lease.token.chunk);
                assert!(first, "{} merged a second time", lease.token);
                true
            }
            Err(Rejection::Stale) => {
                self.seen.stale += 1;
                false
            }
            Err(Rejection::Malformed) => panic!("a well-formed result was rejected"),
        }
    }

    /// The lease granted to `worker` under `token`.
    fn lease(&self, worker: WorkerId, token: LeaseToken) -> Option<Lease> {
        self.granted
            .iter()
            .find(|(w, l)| *w == worker && l.token == token)
            .map(|(_, l)| l.clone())
    }

    fn pick(&self, pick: usize) -> Option<(WorkerId, Lease)> {
        (!self.granted.is_empty()).then(|| self.granted[pick % self.granted.len()].clone())
    }

    fn job_index(&self, pick: usize) -> usize {
        pick % self.jobs.len()
    }

    /// A gone worker's slot is taken by a fresh one, as a reconnect would.
    fn replace(&mut self, slot: usize) {
        self.workers[slot] = self.register(slot);
        self.draining[slot] = false;
    }

    fn apply(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Pull { worker, slots } => self.s.pull(self.workers[worker], slots, now),
            Op::Work { worker } => {
                let id = self.workers[worker];
                let held = self.s.leases_of(id).first().copied();
                if let Some(lease) = held.and_then(|token| self.lease(id, token)) {
                    self.complete(id, &lease);
                }
                self.s.pull(id, 1, now);
            }
            Op::Complete { pick } => {
                if let Some((worker, lease)) = self.pick(pick) {
                    self.complete(worker, &lease);
                }
            }
            Op::Fail { pick } => {
                if let Some((worker, lease)) = self.pick(pick) {
                    let result = self.s.fail(worker, lease.token, "flaky".into(), true, now);
                    if self.dead.contains(&lease.token) {
                        assert_eq!(result, Err(Rejection::Stale), "{} is dead", lease.token);
                    }
                    match result {
                        Ok(()) => self.seen.failures += 1,
                        Err(Rejection::Stale) => self.seen.stale += 1,
                        Err(Rejection::Malformed) => panic!("a failure is never malformed"),
                    }
                }
            }
            Op::Disconnect { worker, departure } => {
                self.s
                    .disconnect_worker(self.workers[worker], departure, now);
                self.replace(worker);
            }
            Op::Undeliver { pick } if !self.last_grants.is_empty() => {
                let (worker, tokens) = self.last_grants[pick % self.last_grants.len()].clone();
                self.s.undelivered(worker, &tokens, now);
            }
            Op::Undeliver { .. } => {}
            Op::Resume { worker } => self.s.resume_grants(self.workers[worker], now),
            Op::Heartbeat { worker } => self.s.heard_from(self.workers[worker], now),
            Op::Advance { millis } => {
                self.now += Duration::from_millis(millis);
                self.s.tick(self.now);
            }
            Op::Tick => self.s.tick(now),
            Op::Poll { job, max_bytes } => self.poll(self.job_index(job), max_bytes),
            Op::Cancel { job } => self.cancel(self.job_index(job)),
            Op::Drain { worker, keep } if !self.draining[worker] => {
                let id = self.workers[worker];
                self.s.drain(id, now);
                let held = self.s.leases_of(id).to_vec();
                let returned = &held[keep.min(held.len())..];
                self.seen.returned += returned.len() as u64;
                self.s.return_leases(id, returned, now);
                self.draining[worker] = true;
            }
            Op::Drain { .. } => {}
        }
        self.collect_effects();
    }

    fn poll(&mut self, index: usize, max_bytes: usize) {
        let now = self.now;
        let tracked = &mut self.jobs[index];
        if tracked.ended() {
            return;
        }
        let poll = self
            .s
            .poll_job(tracked.id, max_bytes, now)
            .expect("a job is kept until its outcome is taken");
        for batch in poll.values {
            assert_eq!(
                batch.offset * 8,
                tracked.values.len() as u64,
                "values out of order"
            );
            tracked.values.extend_from_slice(&batch.values);
        }
        tracked.outcome = poll.outcome;
    }

    fn cancel(&mut self, index: usize) {
        let tracked = &mut self.jobs[index];
        if tracked.ended() {
            return;
        }
        tracked.cancelled = true;
        let job = tracked.id;
        self.s.cancel(job, self.now);
        for worker in &self.workers {
            assert!(
                self.s.leases_of(*worker).iter().all(|t| t.job != job),
                "a cancelled job's leases are revoked"
            );
        }
        assert!(self.s.poll_job(job, usize::MAX, self.now).is_none());
    }

    /// Fault-free completion: draining workers finish what they kept and
    /// leave, then every worker pulls and reports what it holds.
    fn run_to_end(&mut self) {
        for slot in 0..WORKERS {
            if self.draining[slot] {
                let id = self.workers[slot];
                self.s.heard_from(id, self.now);
                self.finish_held(id);
                self.s.disconnect_worker(id, Departure::Lost, self.now);
                self.collect_effects();
                self.replace(slot);
            }
        }
        for _ in 0..10_000 {
            if self.jobs.iter().all(Tracked::ended) {
                return;
            }
            for slot in 0..WORKERS {
                let worker = self.workers[slot];
                self.s.heard_from(worker, self.now);
                self.s.resume_grants(worker, self.now);
                self.s.pull(worker, 2, self.now);
                self.collect_effects();
                self.finish_held(worker);
            }
            for index in 0..self.jobs.len() {
                self.poll(index, usize::MAX);
            }
        }
        panic!("the jobs did not end");
    }

    /// Completes every lease `worker` holds; each must be accepted.
    fn finish_held(&mut self, worker: WorkerId) {
        while let Some(&token) = self.s.leases_of(worker).first() {
            let lease = self.lease(worker, token).expect("a held lease was granted");
            assert!(
                self.complete(worker, &lease),
                "a live lease's result is accepted"
            );
            self.collect_effects();
        }
    }
}

/// Runs one case and checks every rule; returns the counters, for the
/// coverage check.
fn check(case: &Case) -> Result<Counters, TestCaseError> {
    let mut h = Harness::new(case);
    for op in case.ops.iter().cloned() {
        h.apply(op);
    }
    h.run_to_end();

    let mut chunks_leased = 0;
    for tracked in &h.jobs {
        chunks_leased += tracked.chunks.len() as u64;
        let expected: Vec<f64> = (0..tracked.spec.n)
            .map(|i| catalog(&tracked.spec.function).eval(tracked.spec.start + i))
            .collect();
        let expected = le_bytes(&expected);
        if tracked.spec.stream_values {
            prop_assert!(expected.starts_with(&tracked.values), "values differ");
        } else {
            prop_assert!(tracked.values.is_empty());
        }
        if let Some(status) = h.s.job_status(tracked.id, h.now) {
            let c = status.counters;
            prop_assert!(c.backups_won <= c.backups_granted, "{c:?}");
            prop_assert!(
                c.retries <= u64::from(h.max_attempts - 1) * tracked.chunks.len() as u64,
                "{c:?}"
            );
        }
        if tracked.cancelled {
            continue;
        }
        match &tracked.outcome {
            Some(JobOutcome::Finished(result)) => {
                prop_assert!(result.summary.bit_identical(&reference(&tracked.spec)));
                let all: BTreeSet<u64> = (0..result.chunks).collect();
                prop_assert_eq!(&tracked.merged, &all, "each chunk merged exactly once");
                if tracked.spec.stream_values {
                    prop_assert_eq!(tracked.values.len(), expected.len());
                }
            }
            Some(JobOutcome::Failed(JobFailure::ChunkFailed {
                job,
                chunk,
                range,
                attempts,
                ..
            })) => {
                prop_assert_eq!(*job, tracked.id);
                prop_assert!(!tracked.merged.contains(chunk), "a failed chunk merged");
                prop_assert!(
                    *attempts >= h.max_attempts,
                    "failed after {attempts} attempts"
                );
                let leased = tracked.chunks.get(chunk).map(|&(o, l)| o..o + l);
                prop_assert_eq!(Some(range.clone()), leased);
                prop_assert!(tracked.values.len() as u64 <= range.start * 8);
            }
            other => prop_assert!(false, "job {} ended as {other:?}", tracked.id),
        }
    }

    let c = h.s.counters();
    prop_assert_eq!(c.leases_granted + c.leases_undelivered, h.seen.leases);
    prop_assert_eq!(c.results_accepted, h.seen.accepted);
    prop_assert_eq!(c.results_rejected_stale, h.seen.stale);
    prop_assert_eq!(c.chunk_failures, h.seen.failures);
    prop_assert!(c.leases_returned <= h.seen.returned);
    prop_assert!(c.backups_won <= c.backups_granted, "{c:?}");
    prop_assert!(
        c.retries <= u64::from(h.max_attempts - 1) * chunks_leased,
        "{c:?}"
    );
    prop_assert_eq!(
        c.jobs_finished + c.jobs_failed + c.jobs_cancelled,
        c.jobs_submitted
    );
    Ok(c)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_job_ends_exact_or_failed_by_a_named_chunk(case in case()) {
        check(&case)?;
    }
}

/// The generator reaches every hard path: a property that never saw a
/// backup won or a job fail would pass vacuously. Runs a fixed set of
/// cases, so this cannot flake.
#[test]
fn the_schedules_reach_the_hard_paths() {
    let mut runner = TestRunner::new_with_rng(
        Config::with_cases(64),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let total = RefCell::new(Counters::default());
    runner
        .run(&case(), |case| {
            let c = check(&case)?;
            let mut t = total.borrow_mut();
            t.backups_granted += c.backups_granted;
            t.backups_won += c.backups_won;
            t.leases_expired += c.leases_expired;
            t.leases_returned += c.leases_returned;
            t.leases_undelivered += c.leases_undelivered;
            t.retries += c.retries;
            t.results_rejected_stale += c.results_rejected_stale;
            t.jobs_finished += c.jobs_finished;
            t.jobs_failed += c.jobs_failed;
            t.jobs_cancelled += c.jobs_cancelled;
            Ok(())
        })
        .expect("the property holds");
    let t = total.into_inner();
    for (what, count) in [
        ("backups granted", t.backups_granted),
        ("backups won", t.backups_won),
        ("leases expired", t.leases_expired),
        ("leases returned by draining workers", t.leases_returned),
        ("leases undelivered", t.leases_undelivered),
        ("retries", t.retries),
        ("stale results", t.results_rejected_stale),
        ("jobs finished", t.jobs_finished),
        ("jobs failed", t.jobs_failed),
        ("jobs cancelled", t.jobs_cancelled),
    ] {
        assert!(count > 0, "no case had {what}: {t:?}");
    }
}
