//! Backup leases for stragglers.
//!
//! When a job has nothing left but chunks in flight and a worker sits idle,
//! the idle worker may get a second lease of the chunk expected to finish
//! last, if it would finish it much sooner than the chunk's holder. The
//! first result wins (fencing rejects the other), so a slow, overloaded or
//! half-dead machine cannot hold a job hostage, while equally fast workers
//! never duplicate each other's work.
//!
//! Expected finish times come from measured speeds: each worker computes
//! its leases one after another in grant order, so a lease's expected end
//! is the end of the one before it plus its own length at the holder's
//! speed. A lease already past its expected end is assumed to need as long
//! again as it has been running.
//!
//! Round trips count on both sides: a holder's result still has to cross
//! its link (half its round trip), and a backup's grant and result cross
//! the idle worker's (a whole one), so a backup goes to whoever would
//! deliver the chunk first, and a far worker's tail chunk is backed up by
//! a near one that would beat it.
//!
//! Backups are handed out on the scheduler's tick, from one walk over the
//! leases in flight: looking for them on every result, for every idle
//! worker, cost a walk per idle worker per result and stalled a
//! coordinator with a thousand workers for seconds.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::{HeldValues, JobId, Scheduler, WorkerId};

/// A backup is worth it only if the idle worker would finish the chunk in
/// under half the time its holder still needs.
const BACKUP_MARGIN: f64 = 2.0;

/// A chunk that could use a backup.
#[derive(Debug)]
struct Straggler {
    /// How long its holder is expected to need still.
    remaining: Duration,
    job: JobId,
    chunk: u64,
    len: u64,
}

impl<V: HeldValues> Scheduler<V> {
    /// Gives each idle worker (it asks for work and holds none) a backup of
    /// the straggler expected to finish last, among those it would finish
    /// in well under the holder's remaining time.
    pub(super) fn assign_backups(&mut self, now: Instant) {
        let idle: Vec<WorkerId> = self
            .hungry
            .iter()
            .copied()
            .filter(|w| self.leases_of(*w).is_empty())
            .collect();
        if idle.is_empty() || !self.jobs.values().any(|job| job.only_running_left()) {
            return;
        }
        let mut stragglers = self.stragglers(now);
        for worker in idle {
            let Some(entry) = self.workers.get(&worker) else {
                continue;
            };
            let Some(my_speed) = self.cluster.estimate(entry.speed, entry.info.threads) else {
                continue;
            };
            // The backup's grant travels out and its result back.
            let my_trip = entry.round_trip.unwrap_or_default().as_secs_f64();
            let worth_it = stragglers.iter().position(|s| {
                s.remaining.as_secs_f64()
                    > (my_speed.time_for(s.len).as_secs_f64() + my_trip) * BACKUP_MARGIN
            });
            // No straggler worth a backup for this worker: the same most
            // likely holds for the other idle ones, so stop looking.
            let Some(position) = worth_it else {
                break;
            };
            let straggler = stragglers.remove(position);
            let Some(lease) = self
                .jobs
                .get_mut(&straggler.job)
                .and_then(|job| job.lease(straggler.chunk, worker, now, true))
            else {
                continue;
            };
            self.record_grant(worker, lease.token);
            self.counters.backups_granted += 1;
            self.queue_grant(worker, vec![lease]);
        }
    }

    /// The chunks that may get a backup, the one expected to finish last
    /// first: held by a single lease, in a job with nothing left but
    /// chunks in flight.
    fn stragglers(&self, now: Instant) -> Vec<Straggler> {
        let mut found = Vec::new();
        for entry in self.workers.values() {
            let Some(speed) = self.cluster.estimate(entry.speed, entry.info.threads) else {
                continue;
            };
            // Walk the holder's queue in grant order.
            let mut free_at: Option<Instant> = None;
            for held in &entry.leases {
                let Some(job) = self.jobs.get(&held.job) else {
                    continue;
                };
                let Some(chunk) = job.chunk(held.chunk) else {
                    continue;
                };
                let live = chunk.live_leases();
                let Some(lease) = live.iter().find(|l| l.attempt == held.attempt) else {
                    continue;
                };
                let start = free_at.map_or(lease.granted_at, |free| free.max(lease.granted_at));
                let end = start + speed.time_for(chunk.len).min(Duration::from_secs(86_400));
                free_at = Some(end);
                // A chunk that failed is retried, not backed up: backups
                // failing while another lease is live would carry it past
                // its attempt budget.
                if live.len() != 1 || chunk.last_error.is_some() || !job.only_running_left() {
                    continue;
                }
                let computing = if end > now {
                    end - now
                } else {
                    now.saturating_duration_since(start)
                };
                // Its result still has to cross the holder's link.
                let remaining = computing + entry.round_trip.unwrap_or_default() / 2;
                found.push(Straggler {
                    remaining,
                    job: held.job,
                    chunk: held.chunk,
                    len: chunk.len,
                });
            }
        }
        found.sort_by_key(|s| Reverse(s.remaining));
        found
    }
}
