//! Property: whatever the order of pulls, results, duplicates, failures,
//! disconnects, expiries and grants that could not be delivered, every
//! chunk is merged exactly once and the job's output equals the serial
//! reference bit for bit.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

const WORKERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Pull {
        worker: usize,
        slots: u32,
    },
    /// Report a result for some lease ever granted (live, stale or already
    /// reported).
    Complete {
        pick: usize,
    },
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
    /// Let time pass, then expire silent workers.
    Advance {
        millis: u64,
    },
    Poll {
        max_bytes: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..WORKERS, 1u32..4).prop_map(|(worker, slots)| Op::Pull { worker, slots }),
        6 => any::<usize>().prop_map(|pick| Op::Complete { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Fail { pick }),
        1 => (0..WORKERS, any::<bool>()).prop_map(|(worker, lost)| Op::Disconnect {
            worker,
            departure: if lost { Departure::Lost } else { Departure::Dropped },
        }),
        1 => any::<usize>().prop_map(|pick| Op::Undeliver { pick }),
        1 => (0..WORKERS).prop_map(|worker| Op::Resume { worker }),
        2 => (0..WORKERS).prop_map(|worker| Op::Heartbeat { worker }),
        1 => (0u64..4000).prop_map(|millis| Op::Advance { millis }),
        2 => (1usize..100_000).prop_map(|max_bytes| Op::Poll { max_bytes }),
    ]
}

struct Harness {
    s: TestScheduler,
    now: Instant,
    workers: Vec<WorkerId>,
    granted: Vec<(WorkerId, Lease)>,
    /// The grants of the last call, which may yet turn out undelivered.
    last_grants: Vec<(WorkerId, Vec<LeaseToken>)>,
    reports: HashMap<(u64, u64), ChunkReport<Vec<u8>>>,
    job: JobId,
    values: Vec<u8>,
    outcome: Option<JobOutcome>,
}

impl Harness {
    fn new(spec: JobSpec) -> Harness {
        let now = Instant::now();
        let mut s = TestScheduler::new(SchedulerConfig {
            max_attempts: u32::MAX,
            ..SchedulerConfig::default()
        });
        let workers = (0..WORKERS)
            .map(|i| {
                s.register_worker(
                    WorkerInfo {
                        name: format!("w{i}"),
                        threads: 1,
                    },
                    now,
                )
            })
            .collect();
        let job = s.submit(spec, now).expect("first job is accepted");
        let mut h = Harness {
            s,
            now,
            workers,
            granted: Vec::new(),
            last_grants: Vec::new(),
            reports: HashMap::new(),
            job,
            values: Vec::new(),
            outcome: None,
        };
        h.collect_effects();
        h
    }

    fn collect_effects(&mut self) {
        self.last_grants.clear();
        for effect in self.s.take_effects() {
            match effect {
                Effect::Grant { worker, leases } => {
                    let tokens = leases.iter().map(|l| l.token).collect();
                    self.last_grants.push((worker, tokens));
                    // Kept even if undelivered: reporting one must be
                    // rejected.
                    self.granted.extend(leases.into_iter().map(|l| (worker, l)));
                }
                Effect::Revoke { .. } | Effect::JobReady(_) => {}
            }
        }
    }

    /// A dead worker's slot is taken by a fresh one, as a reconnect would.
    fn replace(&mut self, dead: WorkerId) {
        if let Some(slot) = self.workers.iter().position(|w| *w == dead) {
            self.workers[slot] = self.s.register_worker(
                WorkerInfo {
                    name: format!("w{slot}"),
                    threads: 1,
                },
                self.now,
            );
        }
    }

    fn report(&mut self, lease: &Lease) -> ChunkReport<Vec<u8>> {
        let report = self
            .reports
            .entry((lease.offset, lease.len))
            .or_insert_with(|| report_for(lease));
        ChunkReport {
            summary: report.summary.clone(),
            values: report.values.clone(),
            compute: report.compute,
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Pull { worker, slots } => self.s.pull(self.workers[worker], slots, self.now),
            Op::Complete { pick } if !self.granted.is_empty() => {
                let (worker, lease) = self.granted[pick % self.granted.len()].clone();
                let report = self.report(&lease);
                let _ = self.s.complete(worker, lease.token, report, self.now);
            }
            Op::Fail { pick } if !self.granted.is_empty() => {
                let (worker, lease) = self.granted[pick % self.granted.len()].clone();
                let _ = self
                    .s
                    .fail(worker, lease.token, "flaky".into(), true, self.now);
            }
            Op::Complete { .. } | Op::Fail { .. } => {}
            Op::Disconnect { worker, departure } => {
                let id = self.workers[worker];
                self.s.disconnect_worker(id, departure, self.now);
                self.replace(id);
            }
            Op::Undeliver { pick } if !self.last_grants.is_empty() => {
                let (worker, tokens) = self.last_grants[pick % self.last_grants.len()].clone();
                self.s.undelivered(worker, &tokens, self.now);
            }
            Op::Undeliver { .. } => {}
            Op::Resume { worker } => self.s.resume_grants(self.workers[worker], self.now),
            Op::Heartbeat { worker } => self.s.heard_from(self.workers[worker], self.now),
            Op::Advance { millis } => {
                self.now += Duration::from_millis(millis);
                self.s.tick(self.now);
            }
            Op::Poll { max_bytes } => self.poll(max_bytes),
        }
        self.collect_effects();
    }

    fn poll(&mut self, max_bytes: usize) {
        if self.outcome.is_some() {
            return;
        }
        let Some(poll) = self.s.poll_job(self.job, max_bytes, self.now) else {
            return;
        };
        for batch in poll.values {
            assert_eq!(
                batch.offset * 8,
                self.values.len() as u64,
                "values out of order"
            );
            self.values.extend_from_slice(&batch.values);
        }
        self.outcome = poll.outcome;
    }

    /// Fault-free completion: every worker pulls and reports what it holds.
    fn run_to_end(&mut self) {
        for _ in 0..10_000 {
            if self.outcome.is_some() {
                return;
            }
            for slot in 0..WORKERS {
                let worker = self.workers[slot];
                self.s.heard_from(worker, self.now);
                self.s.resume_grants(worker, self.now);
                self.s.pull(worker, 2, self.now);
                self.collect_effects();
                let held: Vec<LeaseToken> = self.s.leases_of(worker).to_vec();
                for token in held {
                    let lease = self
                        .granted
                        .iter()
                        .find(|(w, l)| *w == worker && l.token == token)
                        .map(|(_, l)| l.clone())
                        .expect("a held lease was granted");
                    let report = self.report(&lease);
                    self.s
                        .complete(worker, token, report, self.now)
                        .expect("a live lease's result is accepted");
                    self.collect_effects();
                }
            }
            self.poll(usize::MAX);
        }
        panic!("job did not finish");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_chunk_is_merged_exactly_once(
        n in 0u64..24 * LEAF_LEN,
        chunk_leaves in prop::option::of(1u64..6),
        stream_values in any::<bool>(),
        ops in prop::collection::vec(op(), 0..150),
    ) {
        let spec = spec(n, chunk_leaves.map(|l| l * LEAF_LEN), stream_values);
        let mut h = Harness::new(spec.clone());
        for op in ops {
            h.apply(op);
        }
        h.run_to_end();

        let Some(JobOutcome::Finished(result)) = h.outcome.clone() else {
            panic!("job failed: {:?}", h.outcome);
        };
        prop_assert!(result.summary.bit_identical(&reference(&spec)));
        prop_assert_eq!(h.s.counters().results_accepted, result.chunks);
        // Each chunk is accepted once, so each element is counted once.
        prop_assert_eq!(h.s.counters().elements_computed, n);
        if stream_values {
            let expected: Vec<f64> = (0..n).map(|i| catalog(&spec.function).eval(spec.start + i)).collect();
            prop_assert!(h.values == le_bytes(&expected).as_ref());
        } else {
            prop_assert!(h.values.is_empty());
        }
    }
}
