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

use std::time::{Duration, Instant};

use super::{JobId, Lease, LeaseToken, Scheduler, WorkerId};

/// A backup is worth it only if the idle worker would finish the chunk in
/// under half the time its holder still needs.
const BACKUP_MARGIN: f64 = 2.0;

impl Scheduler {
    /// A backup lease for idle `worker`, if some chunk is worth one.
    pub(super) fn backup_lease(&mut self, worker: WorkerId, now: Instant) -> Option<Lease> {
        let me = self.workers.get(&worker)?;
        let my_speed = self.cluster.estimate(me.speed, me.info.threads)?;
        let mut best: Option<(Duration, JobId, u64)> = None;
        for (job_id, job) in &self.jobs {
            if !job.only_running_left() {
                continue;
            }
            for (index, chunk, lease) in job.singly_leased() {
                if lease.worker == worker {
                    continue;
                }
                let token = LeaseToken {
                    job: *job_id,
                    chunk: index,
                    attempt: lease.attempt,
                };
                let Some(remaining) = self.time_to_finish(lease.worker, token, now) else {
                    continue;
                };
                let mine = my_speed.time_for(chunk.len);
                let worth_it = remaining.as_secs_f64() > mine.as_secs_f64() * BACKUP_MARGIN;
                if worth_it && best.is_none_or(|(longest, _, _)| remaining > longest) {
                    best = Some((remaining, *job_id, index));
                }
            }
        }
        let (_, job_id, index) = best?;
        self.jobs.get_mut(&job_id)?.lease(index, worker, now, true)
    }

    /// How long `holder` is expected to need before it reports `token`.
    fn time_to_finish(
        &self,
        holder: WorkerId,
        token: LeaseToken,
        now: Instant,
    ) -> Option<Duration> {
        let entry = self.workers.get(&holder)?;
        let speed = self.cluster.estimate(entry.speed, entry.info.threads)?;
        // Walk the holder's queue in grant order.
        let mut free_at: Option<Instant> = None;
        for held in &entry.leases {
            let job = self.jobs.get(&held.job)?;
            let chunk = job.chunk(held.chunk);
            let Some((len, granted_at)) = chunk.and_then(|c| {
                c.live_leases()
                    .iter()
                    .find(|l| l.attempt == held.attempt)
                    .map(|l| (c.len, l.granted_at))
            }) else {
                continue;
            };
            let start = free_at.map_or(granted_at, |free| free.max(granted_at));
            let end = start + speed.time_for(len).min(Duration::from_secs(86_400));
            if *held == token {
                return Some(if end > now {
                    end - now
                } else {
                    now.saturating_duration_since(start)
                });
            }
            free_at = Some(end);
        }
        None
    }
}
