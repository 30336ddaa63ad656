//! Workers: registration, liveness, silence, drain and departure.
//!
//! Any message from a worker proves it alive. A worker silent for longer
//! than the lease timeout loses its leases but keeps its session; one
//! whose session ends loses them at once. A draining worker takes no new
//! leases and finishes or returns those it holds.

use std::time::{Duration, Instant};

use super::policy;
use super::results::Try;
use super::speed::Speed;
use super::{HeldValues, LeaseToken, Scheduler, WorkerId};

/// What a worker told us about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub name: String,
    pub threads: u32,
}

/// How a worker's session ended, which decides whether the leases it held
/// use up their chunks' tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// The worker hung up, crashed or lost its connection. A poison chunk
    /// can do that, so each lease it held counts as a try: a chunk that
    /// keeps taking its workers down still fails its job.
    Lost,
    /// The coordinator closed the session itself (the worker did not read
    /// it). The chunks are not to blame and keep their tries.
    Dropped,
}

/// One worker as the scheduler keeps it.
#[derive(Debug)]
pub(super) struct WorkerEntry {
    pub info: WorkerInfo,
    /// Leases asked for and not yet granted.
    pub demand: u32,
    /// Live leases, in the order they were granted (the order the worker
    /// computes them in).
    pub leases: Vec<LeaseToken>,
    pub last_seen: Instant,
    /// It takes no new leases; see [`Scheduler::drain`].
    pub draining: bool,
    /// Silent past the lease timeout; see [`Scheduler::expire`].
    pub silent: bool,
    /// Its session could not take the last grant: it gets no more until
    /// the caller says the session has room again
    /// ([`Scheduler::resume_grants`]). A slow reader is held back, not
    /// dropped.
    pub backlogged: bool,
    pub speed: Option<Speed>,
    pub chunks_completed: u64,
    pub elements_completed: u64,
    /// The session's smoothed round trip, once measured (shown).
    pub round_trip: Option<Duration>,
    /// The shortest round trip the session has had: the link's own, which
    /// the holds are planned with. On a thin link the smoothed one also
    /// counts the wait behind the worker's own values, and planning with
    /// it would grant more, which queues more, without end.
    pub nearest_round_trip: Option<Duration>,
    /// How fast its streamed values arrive, in elements per second,
    /// measured between results while it was busy ([`Scheduler::complete`]).
    pub delivery: Option<Speed>,
    /// When its last result arrived.
    pub last_result_at: Option<Instant>,
    /// Leases it should hold to cover its round trip
    /// ([`policy::leases_to_hold`]); it is granted up to this many beyond
    /// its demand. 0 until its round trip is known.
    pub hold: u32,
}

impl WorkerEntry {
    pub fn takes_work(&self) -> bool {
        !self.draining && !self.silent
    }

    pub fn wants_grants(&self) -> bool {
        self.takes_work() && !self.backlogged && (self.demand > 0 || self.short_of_hold())
    }

    /// It holds fewer leases than its round trip calls for.
    pub fn short_of_hold(&self) -> bool {
        self.leases.len() < self.hold as usize
    }
}

/// Weight of the newest round-trip sample: smooth enough to ignore one
/// ping that waited behind a large message.
const ROUND_TRIP_WEIGHT: f64 = 0.25;

impl<V: HeldValues> Scheduler<V> {
    pub fn register_worker(&mut self, info: WorkerInfo, now: Instant) -> WorkerId {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.cluster.add(None, info.threads);
        self.workers.insert(
            id,
            WorkerEntry {
                info,
                demand: 0,
                leases: Vec::new(),
                last_seen: now,
                draining: false,
                silent: false,
                backlogged: false,
                speed: None,
                chunks_completed: 0,
                elements_completed: 0,
                round_trip: None,
                nearest_round_trip: None,
                delivery: None,
                last_result_at: None,
                hold: 0,
            },
        );
        id
    }

    /// Changes a worker and keeps the cluster's speed and the hungry set
    /// in step with it. False if the worker is unknown.
    pub(super) fn update_worker(
        &mut self,
        id: WorkerId,
        change: impl FnOnce(&mut WorkerEntry),
    ) -> bool {
        let Some(entry) = self.workers.get_mut(&id) else {
            return false;
        };
        let counted_before = entry.takes_work().then_some(entry.speed);
        change(entry);
        let counted_after = entry.takes_work().then_some(entry.speed);
        // Most calls (heartbeats, pulls) change neither; skipping them
        // keeps the float sums from drifting over millions of messages.
        if counted_before != counted_after {
            if let Some(speed) = counted_before {
                self.cluster.remove(speed, entry.info.threads);
            }
            if let Some(speed) = counted_after {
                self.cluster.add(speed, entry.info.threads);
            }
        }
        if entry.wants_grants() {
            self.hungry.insert(id);
        } else {
            self.hungry.remove(&id);
        }
        true
    }

    /// Any message from a worker proves it alive. A silent worker that
    /// speaks again is taken back: its old leases are gone (its results
    /// for them will be stale), and it takes new work as it asks.
    pub fn heard_from(&mut self, worker: WorkerId, now: Instant) {
        self.update_worker(worker, |entry| {
            entry.last_seen = now;
            entry.silent = false;
        });
    }

    /// A measured round trip of the worker's session (a ping's answer,
    /// timed by the caller). It is smoothed for display; the leases the
    /// worker should hold follow the shortest one.
    pub fn round_trip(&mut self, worker: WorkerId, sample: Duration, now: Instant) {
        let known = self.update_worker(worker, |entry| {
            entry.last_seen = now;
            entry.silent = false;
            let smoothed = match entry.round_trip {
                None => sample,
                Some(old) => {
                    old.mul_f64(1.0 - ROUND_TRIP_WEIGHT) + sample.mul_f64(ROUND_TRIP_WEIGHT)
                }
            };
            entry.round_trip = Some(smoothed);
            entry.nearest_round_trip =
                Some(entry.nearest_round_trip.map_or(sample, |n| n.min(sample)));
        });
        if known {
            self.plan_hold(worker, false);
            self.assign(now);
        }
    }

    /// Sets how many leases `worker` should hold, from its link's round
    /// trip and the time a full chunk takes it (to arrive, if its values
    /// are streamed).
    pub(super) fn plan_hold(&mut self, worker: WorkerId, stream_values: bool) {
        let Some(entry) = self.workers.get(&worker) else {
            return;
        };
        let pace = self.sizing(worker).pace(stream_values);
        let chunk_time = pace.map_or(policy::TARGET_CHUNK_TIME, |s| {
            policy::full_chunk_time(s, stream_values)
        });
        let hold = policy::leases_to_hold(entry.nearest_round_trip, chunk_time);
        self.update_worker(worker, |entry| entry.hold = hold);
    }

    /// The worker asks for `slots` more leases.
    pub fn pull(&mut self, worker: WorkerId, slots: u32, now: Instant) {
        let known = self.update_worker(worker, |entry| {
            entry.last_seen = now;
            entry.silent = false;
            if !entry.draining {
                entry.demand = entry.demand.saturating_add(slots);
            }
        });
        if known {
            self.assign(now);
        }
    }

    /// The worker drains: it takes no new leases, and finishes or returns
    /// those it holds.
    pub fn drain(&mut self, worker: WorkerId, now: Instant) {
        self.update_worker(worker, |entry| {
            entry.last_seen = now;
            entry.draining = true;
            entry.demand = 0;
        });
    }

    /// The worker hands back leases it never started; they are re-leased at
    /// once and do not count as tries.
    pub fn return_leases(&mut self, worker: WorkerId, tokens: &[LeaseToken], now: Instant) {
        self.heard_from(worker, now);
        for token in tokens {
            if self.end_live_lease(worker, *token, false) {
                self.counters.leases_returned += 1;
            }
        }
        self.assign(now);
    }

    /// The worker's session ended: its leases go back to the queue at once.
    pub fn disconnect_worker(&mut self, worker: WorkerId, departure: Departure, now: Instant) {
        self.hungry.remove(&worker);
        let Some(entry) = self.workers.remove(&worker) else {
            return;
        };
        if entry.takes_work() {
            self.cluster.remove(entry.speed, entry.info.threads);
        }
        let tries = match departure {
            Departure::Lost => Try::Used(format!("worker {worker} disconnected")),
            Departure::Dropped => Try::Kept,
        };
        self.requeue(worker, entry.leases, &tries, now);
        self.assign(now);
    }

    /// Workers silent for longer than the lease timeout lose their leases,
    /// which go back to the queue. Their sessions stay open: a worker that
    /// was only stalled (a stopped process, a long GC, a congested link)
    /// comes back, has its late results rejected by fencing, and carries
    /// on. A dead one is dropped when its connection's keepalive fails.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.config.lease_timeout;
        let silent: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.silent && now.saturating_duration_since(w.last_seen) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for worker in silent {
            let mut lost = Vec::new();
            // Its demand stays: a worker that wakes up asks only to
            // replace leases it reports, so demand it already sent would
            // otherwise be lost for good.
            self.update_worker(worker, |entry| {
                entry.silent = true;
                lost = std::mem::take(&mut entry.leases);
            });
            self.counters.leases_expired += lost.len() as u64;
            let tries = Try::Used(format!("worker {worker} went silent for over {timeout:?}"));
            self.requeue(worker, lost, &tries, now);
        }
        self.assign(now);
    }
}
