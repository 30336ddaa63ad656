//! Leasing: demand adds up until granted, hungry workers are served in
//! turn, running jobs are taken in turn for each lease, and grants that
//! could not be delivered are taken back.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Instant;

use super::job::{Ahead, Job, Work};
use super::policy::Sizing;
use super::workers::WorkerEntry;
use super::{HeldValues, JobFunction, JobId, LeaseToken, Scheduler, WorkerId};

/// A lease as sent to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: LeaseToken,
    pub function: JobFunction,
    pub job_start: u64,
    pub offset: u64,
    pub len: u64,
    pub stream_values: bool,
}

impl<V: HeldValues> Scheduler<V> {
    /// The caller could not queue these granted leases for `worker` (its
    /// session is full or gone). They never reached it, so they are taken
    /// back as if never granted: they go to other workers without using up
    /// a try, the worker's demand for them stands, and it gets no more
    /// grants until [`Scheduler::resume_grants`].
    pub fn undelivered(&mut self, worker: WorkerId, tokens: &[LeaseToken], now: Instant) {
        let mut taken_back = 0;
        for token in tokens {
            let Some(entry) = self.workers.get_mut(&worker) else {
                break;
            };
            let Some(position) = entry.leases.iter().position(|t| t == token) else {
                continue;
            };
            entry.leases.remove(position);
            let Some(backup) = self
                .jobs
                .get_mut(&token.job)
                .and_then(|job| job.lease_undelivered(token.chunk, token.attempt))
            else {
                continue;
            };
            taken_back += 1;
            self.counters.leases_undelivered += 1;
            self.counters.leases_granted = self.counters.leases_granted.saturating_sub(1);
            if backup {
                self.counters.backups_granted = self.counters.backups_granted.saturating_sub(1);
            }
        }
        self.update_worker(worker, |entry| {
            entry.demand = entry.demand.saturating_add(taken_back);
            entry.backlogged = true;
        });
        self.assign(now);
    }

    /// The worker's session has room again: it takes grants as before.
    pub fn resume_grants(&mut self, worker: WorkerId, now: Instant) {
        if self.update_worker(worker, |entry| entry.backlogged = false) {
            self.assign(now);
        }
    }

    /// Grants work to the workers with demand, each in turn: a worker gets
    /// as much of its demand as there is work for, in one grant, and the
    /// next call resumes with the worker that was left short, so over time
    /// every hungry worker is served, whatever its number. For each lease
    /// the running jobs are taken in turn after a rotating cursor.
    pub(super) fn assign(&mut self, now: Instant) {
        while let Some(worker) = self.next_hungry() {
            let sizing = self.sizing(worker);
            let mut leases = Vec::new();
            while let Some(ahead) = self.wants_more(worker) {
                let Some(lease) = self.next_lease(worker, sizing, ahead, now) else {
                    if ahead {
                        // Only tail chunks beyond its share left: ahead of
                        // its demand a far worker gets none of those, and
                        // waits for its own pull.
                        break;
                    }
                    // No job has work now: start with this worker next time.
                    self.assign_cursor = worker;
                    self.queue_grant(worker, leases);
                    return;
                };
                self.record_grant(worker, lease.token);
                let stream_values = lease.stream_values;
                leases.push(lease);
                self.plan_hold(worker, stream_values);
            }
            // Served in full: the next one's turn. (Removing it is a no-op
            // that makes sure the loop ends.)
            self.hungry.remove(&worker);
            self.assign_cursor = WorkerId(worker.0.saturating_add(1));
            self.queue_grant(worker, leases);
        }
    }

    /// Whether `worker` gets another lease now: `Some(false)` for its
    /// demand, `Some(true)` ahead of it, to cover its round trip.
    fn wants_more(&self, worker: WorkerId) -> Option<bool> {
        let entry = self.workers.get(&worker)?;
        if entry.demand > 0 {
            Some(false)
        } else if entry.short_of_hold() {
            Some(true)
        } else {
            None
        }
    }

    /// The first hungry worker from the cursor on, wrapping around.
    fn next_hungry(&self) -> Option<WorkerId> {
        self.hungry
            .range(self.assign_cursor..)
            .next()
            .or_else(|| self.hungry.first())
            .copied()
    }

    pub(super) fn record_grant(&mut self, worker: WorkerId, token: LeaseToken) {
        self.update_worker(worker, |entry| {
            entry.demand = entry.demand.saturating_sub(1);
            entry.leases.push(token);
        });
        self.counters.leases_granted += 1;
    }

    /// What chunk sizing knows about `worker`.
    pub(super) fn sizing(&self, worker: WorkerId) -> Sizing {
        let Some(entry) = self.workers.get(&worker) else {
            return Sizing {
                share: 1.0,
                speed: None,
                delivery: None,
            };
        };
        Sizing {
            share: self.cluster.share(entry.speed, entry.info.threads),
            speed: self.cluster.estimate(entry.speed, entry.info.threads),
            delivery: entry.delivery,
        }
    }

    /// The next lease for `worker`, taking jobs in turn after the cursor;
    /// `ahead` of its demand, only a new chunk, full size or within the
    /// worker's share of the job's tail ([`Job::next_work`]).
    fn next_lease(
        &mut self,
        worker: WorkerId,
        sizing: Sizing,
        ahead: bool,
        now: Instant,
    ) -> Option<Lease> {
        let window = self.config.window;
        let mut cursor = self.job_cursor;
        for _ in 0..self.jobs.len() {
            let next = self
                .jobs
                .range((Bound::Excluded(cursor), Bound::Unbounded))
                .next()
                .or_else(|| self.jobs.first_key_value())
                .map(|(id, _)| *id)?;
            cursor = next;
            let Some(job) = self.jobs.get_mut(&next) else {
                continue;
            };
            let why = if ahead {
                let elements = held_elements(&self.workers, worker, next, job);
                Ahead::Holding { elements }
            } else {
                Ahead::Demand
            };
            let Work::Chunk(index) = job.next_work(&window, sizing, why) else {
                continue;
            };
            self.job_cursor = next;
            return job.lease(index, worker, now, false);
        }
        None
    }
}

/// The elements of `job` that `worker` holds live leases on.
fn held_elements<V: HeldValues>(
    workers: &BTreeMap<WorkerId, WorkerEntry>,
    worker: WorkerId,
    id: JobId,
    job: &Job<V>,
) -> u64 {
    let Some(entry) = workers.get(&worker) else {
        return 0;
    };
    entry
        .leases
        .iter()
        .filter(|token| token.job == id)
        .filter_map(|token| job.chunk(token.chunk))
        .map(|chunk| chunk.len)
        .sum()
}
