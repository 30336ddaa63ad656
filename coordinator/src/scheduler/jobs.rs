//! Jobs as the scheduler runs them: submitting, cancelling, polling a
//! job's stream for its ordered values and outcome, and failing a job.
//! What happens inside one job (its window and merge) is in `job.rs`.

use std::collections::BTreeMap;
use std::time::Instant;

use super::job::Job;
use super::{
    Effect, HeldValues, JobFailure, JobFunction, JobId, JobOutcome, JobState, LeaseToken,
    Scheduler, ValuesBatch, WorkerId,
};

/// Ended jobs `farm status` can still describe.
pub(super) const ENDED_JOBS_KEPT: usize = 256;

/// A validated job request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub function: JobFunction,
    pub start: u64,
    pub n: u64,
    /// Forced elements per chunk, whole leaves; `None` lets the policy pick.
    pub chunk_size: Option<u64>,
    pub stream_values: bool,
}

/// A job as its stream sees it on one poll.
#[derive(Debug)]
pub struct JobPoll<V> {
    pub values: Vec<ValuesBatch<V>>,
    pub elements_done: u64,
    pub chunks_done: u64,
    /// Set once, when every value has been taken; the job is then gone.
    pub outcome: Option<JobOutcome>,
}

/// A job could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the coordinator is already running {running} jobs (the limit); try again later")]
    TooManyJobs { running: usize },
}

impl<V: HeldValues> Scheduler<V> {
    pub fn submit(&mut self, spec: JobSpec, now: Instant) -> Result<JobId, SubmitError> {
        let running = self.running_jobs();
        if running >= self.config.max_running_jobs {
            return Err(SubmitError::TooManyJobs { running });
        }
        let id = JobId(self.next_job);
        self.next_job += 1;
        let job = Job::new(id, spec, now);
        if !job.is_running() {
            // An empty job is finished on arrival.
            self.counters.jobs_finished += 1;
            self.effects.push(Effect::JobReady(id));
        }
        self.jobs.insert(id, job);
        self.counters.jobs_submitted += 1;
        self.assign(now);
        Ok(id)
    }

    /// The client of a job went away: revoke its leases and forget it.
    pub fn cancel(&mut self, job: JobId, now: Instant) {
        let Some(entry) = self.jobs.get(&job) else {
            return;
        };
        if entry.is_running() {
            self.counters.jobs_cancelled += 1;
        }
        self.revoke_all(job);
        if let Some(entry) = self.jobs.remove(&job) {
            let state = match &entry.outcome {
                None => JobState::Cancelled,
                Some(outcome) => outcome_state(outcome),
            };
            self.remember_ended(&entry, state, now);
        }
        self.assign(now);
    }

    /// What the job's stream should send next: up to about `max_bytes` of
    /// values, progress, and at the very end the outcome (after which the
    /// job is forgotten).
    pub fn poll_job(&mut self, job: JobId, max_bytes: usize, now: Instant) -> Option<JobPoll<V>> {
        let entry = self.jobs.get_mut(&job)?;
        let values = entry.take_ready(max_bytes);
        let mut poll = JobPoll {
            values: Vec::new(),
            elements_done: entry.elements_done(),
            chunks_done: entry.chunks_done(),
            outcome: None,
        };
        if !entry.has_ready()
            && let Some(outcome) = entry.outcome.clone()
        {
            if let Some(ended) = self.jobs.remove(&job) {
                self.remember_ended(&ended, outcome_state(&outcome), now);
            }
            poll.outcome = Some(outcome);
        }
        poll.values = values;
        if !poll.values.is_empty() {
            // Taking values frees window space.
            self.assign(now);
        }
        Some(poll)
    }

    pub(super) fn fail_job(&mut self, job: JobId, failure: JobFailure, now: Instant) {
        self.revoke_all(job);
        if let Some(entry) = self.jobs.get_mut(&job)
            && entry.is_running()
        {
            entry.fail(failure, now);
            self.counters.jobs_failed += 1;
            self.effects.push(Effect::JobReady(job));
        }
    }

    /// Revokes every live lease of `job` and forgets them on the workers.
    fn revoke_all(&mut self, job: JobId) {
        let Some(entry) = self.jobs.get(&job) else {
            return;
        };
        let mut by_worker: BTreeMap<WorkerId, Vec<LeaseToken>> = BTreeMap::new();
        for (chunk, lease) in entry.live_leases() {
            by_worker.entry(lease.worker).or_default().push(LeaseToken {
                job,
                chunk,
                attempt: lease.attempt,
            });
        }
        for (worker, tokens) in by_worker {
            if let Some(entry) = self.workers.get_mut(&worker) {
                entry.leases.retain(|t| !tokens.contains(t));
            }
            self.effects.push(Effect::Revoke { worker, tokens });
        }
    }

    fn remember_ended(&mut self, job: &Job<V>, state: JobState, now: Instant) {
        if self.ended.len() >= ENDED_JOBS_KEPT {
            self.ended.pop_front();
        }
        let mut status = job.status(now);
        status.state = state;
        self.ended.push_back(status);
    }
}

fn outcome_state(outcome: &JobOutcome) -> JobState {
    match outcome {
        JobOutcome::Finished(_) => JobState::Finished,
        JobOutcome::Failed(failure) => JobState::Failed(failure.to_string()),
    }
}
