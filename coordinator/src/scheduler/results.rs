//! Results and the leases that end without one: accepting a result under
//! a live token only (fencing), failures, and lost leases going back to
//! the queue, failing the job when a chunk runs out of tries.

use std::time::{Duration, Instant};

use farm_catalog::ChunkSummary;

use super::speed::Speed;
use super::{Effect, HeldValues, JobOutcome, LeaseToken, Scheduler, WorkerId};

/// A worker's result for one lease.
#[derive(Debug)]
pub struct ChunkReport<V> {
    pub summary: ChunkSummary,
    pub values: Option<V>,
    /// Wall time the worker spent computing the chunk (zero if unknown).
    pub compute: Duration,
}

/// Why a result or failure report was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The token is not live: expired, superseded, duplicate, or the job
    /// is gone. Counted as stale.
    Stale,
    /// The result does not have the chunk's shape; the attempt is treated
    /// as failed.
    Malformed,
}

/// Whether a lease that ended without a result uses up one of its chunk's
/// tries.
#[derive(Debug)]
pub(super) enum Try {
    /// It does; the text says how the lease was lost, for the job's error
    /// if the chunk runs out of tries.
    Used(String),
    /// The chunk is not to blame.
    Kept,
}

impl<V: HeldValues> Scheduler<V> {
    /// A worker reports a chunk's result under `token`.
    pub fn complete(
        &mut self,
        worker: WorkerId,
        token: LeaseToken,
        report: ChunkReport<V>,
        now: Instant,
    ) -> Result<(), Rejection> {
        self.heard_from(worker, now);
        self.check_live(worker, token)?;
        let Some(job) = self.jobs.get_mut(&token.job) else {
            return Err(Rejection::Stale);
        };
        let Some(chunk) = job.chunk(token.chunk) else {
            return Err(Rejection::Stale);
        };
        let len = chunk.len;
        let value_bytes = report.values.as_ref().map_or(0, HeldValues::byte_len);
        let values_ok = match (&report.values, job.spec.stream_values) {
            (Some(_), true) => value_bytes as u64 == len * 8,
            (None, false) => true,
            _ => false,
        };
        if report.summary.check_shape(len).is_err() || !values_ok {
            let message = format!(
                "worker {worker} sent a malformed result for {len} elements ({} leaf sums, {value_bytes} value bytes)",
                report.summary.leaf_sums.len(),
            );
            self.fail_attempt(worker, token, message, true, now);
            return Err(Rejection::Malformed);
        }

        let granted_at = chunk
            .live_leases()
            .iter()
            .find(|l| l.attempt == token.attempt)
            .map(|l| l.granted_at);
        let delivered = value_bytes > 0;
        let accepted = job.accept(token, report.summary, report.values, worker, now);
        match &job.outcome {
            Some(JobOutcome::Finished(_)) => self.counters.jobs_finished += 1,
            Some(JobOutcome::Failed(_)) => self.counters.jobs_failed += 1,
            None => {}
        }
        self.counters.results_accepted += 1;
        self.counters.elements_computed += len;
        if accepted.backup_won {
            self.counters.backups_won += 1;
        }
        let measured = (!report.compute.is_zero()).then(|| Speed::measured(len, report.compute));
        self.update_worker(worker, |entry| {
            entry.leases.retain(|t| *t != token);
            entry.chunks_completed += 1;
            entry.elements_completed += len;
            if let Some(measured) = measured {
                entry.speed = Some(Speed::update(entry.speed, measured));
            }
            // Values arrive no faster than the worker's link carries them:
            // timed here, from when the worker could start on this chunk
            // (its grant, or its previous result) to its arrival.
            if delivered && let Some(granted_at) = granted_at {
                let busy_since = entry
                    .last_result_at
                    .map_or(granted_at, |t| t.max(granted_at));
                let arrived = Speed::measured(len, now.saturating_duration_since(busy_since));
                entry.delivery = Some(Speed::update(entry.delivery, arrived));
            }
            entry.last_result_at = Some(now);
        });
        for other in accepted.losers {
            let other_token = LeaseToken {
                attempt: other.attempt,
                ..token
            };
            if let Some(entry) = self.workers.get_mut(&other.worker) {
                entry.leases.retain(|t| *t != other_token);
            }
            self.effects.push(Effect::Revoke {
                worker: other.worker,
                tokens: vec![other_token],
            });
        }
        if accepted.released {
            self.effects.push(Effect::JobReady(token.job));
        }
        self.assign(now);
        Ok(())
    }

    /// A worker reports that computing a chunk failed.
    pub fn fail(
        &mut self,
        worker: WorkerId,
        token: LeaseToken,
        message: String,
        retryable: bool,
        now: Instant,
    ) -> Result<(), Rejection> {
        self.heard_from(worker, now);
        self.check_live(worker, token)?;
        self.fail_attempt(worker, token, message, retryable, now);
        Ok(())
    }

    /// Fencing: a report counts only under a live lease of `worker` on a
    /// running job. Anything else is counted as stale.
    fn check_live(&mut self, worker: WorkerId, token: LeaseToken) -> Result<(), Rejection> {
        let job = self.jobs.get_mut(&token.job);
        let live = job.as_ref().is_some_and(|job| {
            job.is_running()
                && job
                    .chunk(token.chunk)
                    .is_some_and(|chunk| chunk.is_live(token.attempt, worker))
        });
        if live {
            return Ok(());
        }
        if let Some(job) = job {
            job.counters.results_rejected_stale += 1;
        }
        self.counters.results_rejected_stale += 1;
        Err(Rejection::Stale)
    }

    fn fail_attempt(
        &mut self,
        worker: WorkerId,
        token: LeaseToken,
        message: String,
        retryable: bool,
        now: Instant,
    ) {
        self.counters.chunk_failures += 1;
        if let Some(chunk) = self
            .jobs
            .get_mut(&token.job)
            .and_then(|job| job.chunk_mut(token.chunk))
        {
            chunk.last_error = Some(format!("worker {worker}: {message}"));
            if !retryable {
                // Another attempt cannot help: use up the remaining tries.
                chunk.tries = chunk.tries.max(self.config.max_attempts.saturating_sub(1));
            }
        }
        if self.end_live_lease(worker, token, true) {
            self.after_try_ended(token, now);
        }
        self.assign(now);
    }

    /// Leases of a gone or silent worker end and go back to the queue.
    pub(super) fn requeue(
        &mut self,
        worker: WorkerId,
        tokens: Vec<LeaseToken>,
        tries: &Try,
        now: Instant,
    ) {
        for token in tokens {
            let Some(job) = self.jobs.get_mut(&token.job) else {
                continue;
            };
            let Some(chunk) = job.chunk_mut(token.chunk) else {
                continue;
            };
            if !chunk.is_live(token.attempt, worker) {
                continue;
            }
            match tries {
                Try::Used(loss) => {
                    chunk.last_loss = Some(loss.clone());
                    job.lease_ended(token.chunk, token.attempt, true);
                    self.after_try_ended(token, now);
                }
                Try::Kept => job.lease_ended(token.chunk, token.attempt, false),
            }
        }
    }

    /// Fails the job if the chunk used up its tries, else counts a retry.
    fn after_try_ended(&mut self, token: LeaseToken, now: Instant) {
        let max_attempts = self.config.max_attempts;
        let Some(job) = self.jobs.get_mut(&token.job) else {
            return;
        };
        let Some(chunk) = job.chunk(token.chunk) else {
            return;
        };
        if !chunk.live_leases().is_empty() {
            // A backup is still working on it.
            return;
        }
        if chunk.tries >= max_attempts {
            if let Some(failure) = job.chunk_failure(token.chunk) {
                self.fail_job(token.job, failure, now);
            }
        } else {
            job.counters.retries += 1;
            self.counters.retries += 1;
        }
    }

    /// Ends `worker`'s live lease `token`, if it is one. Returns whether it
    /// was live.
    pub(super) fn end_live_lease(
        &mut self,
        worker: WorkerId,
        token: LeaseToken,
        counts_as_try: bool,
    ) -> bool {
        let Some(entry) = self.workers.get_mut(&worker) else {
            return false;
        };
        let Some(position) = entry.leases.iter().position(|t| *t == token) else {
            return false;
        };
        entry.leases.remove(position);
        if let Some(job) = self.jobs.get_mut(&token.job) {
            job.lease_ended(token.chunk, token.attempt, counts_as_try);
        }
        true
    }
}
