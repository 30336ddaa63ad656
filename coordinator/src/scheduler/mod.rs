//! The scheduling core: a synchronous state machine with no I/O, no
//! spawning and no clock reads. Time is passed in as `now`, so every rule
//! (leases, expiry, fencing, the ordered merge) is tested deterministically.
//!
//! The gRPC services wrap one [`Scheduler`] in a `std::sync::Mutex` and
//! never await while holding it. Each call records what the outside world
//! must do next as [`Effect`]s (send leases to a worker, revoke leases,
//! wake a job's stream, drop a dead worker's session); the caller drains
//! them with [`Scheduler::take_effects`]. See `README.md` beside this file
//! for the policies.

mod chunk;
mod job;
pub mod policy;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use farm_catalog::{ChunkSummary, Function};

use job::{Job, Work};
pub use job::{JobFailure, JobOutcome, JobResult, ValuesBatch};

/// A connected worker, numbered by the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u64);

/// A job, numbered by the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}", self.0)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One attempt at one chunk: the fencing token a result must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseToken {
    pub job: JobId,
    pub chunk: u64,
    pub attempt: u32,
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "job {} chunk {} attempt {}",
            self.job, self.chunk, self.attempt
        )
    }
}

/// A validated job request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub function: Function,
    pub start: u64,
    pub n: u64,
    /// Forced elements per chunk, whole leaves; `None` lets the policy pick.
    pub chunk_size: Option<u64>,
    pub stream_values: bool,
}

/// What a worker told us about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub name: String,
    pub threads: u32,
}

/// A lease as sent to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: LeaseToken,
    pub function: Function,
    pub job_start: u64,
    pub offset: u64,
    pub len: u64,
    pub stream_values: bool,
}

/// A worker's result for one lease.
#[derive(Debug, Clone)]
pub struct ChunkReport {
    pub summary: ChunkSummary,
    pub values: Option<Bytes>,
}

/// Something the caller must do after a scheduler call.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send these leases to the worker.
    Grant {
        worker: WorkerId,
        leases: Vec<Lease>,
    },
    /// Tell the worker these leases are no longer wanted.
    Revoke {
        worker: WorkerId,
        tokens: Vec<LeaseToken>,
    },
    /// The worker was declared dead: close its session.
    Disconnect { worker: WorkerId },
    /// The job has values, or an outcome, for its stream.
    JobReady(JobId),
}

/// Bounds on what one job holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimits {
    /// Chunks carved but not yet released.
    pub max_chunks: usize,
    /// Result bytes held (in flight, out of order, or not yet taken by the
    /// client).
    pub max_bytes: u64,
}

/// The scheduler's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// A worker silent for this long loses its leases.
    pub lease_timeout: Duration,
    /// Leases a chunk may use up (failures and losses) before its job fails.
    pub max_attempts: u32,
    pub window: WindowLimits,
    /// Jobs running at once; more are refused.
    pub max_running_jobs: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            lease_timeout: Duration::from_secs(5),
            max_attempts: 4,
            window: WindowLimits {
                max_chunks: 1024,
                max_bytes: 64 << 20,
            },
            max_running_jobs: 64,
        }
    }
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

/// Running totals, for `farm workers` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub leases_granted: u64,
    pub leases_expired: u64,
    pub leases_returned: u64,
    pub results_accepted: u64,
    pub results_rejected_stale: u64,
    pub chunk_failures: u64,
    pub retries: u64,
    pub jobs_submitted: u64,
    pub jobs_finished: u64,
    pub jobs_failed: u64,
    pub jobs_cancelled: u64,
}

/// One worker as `farm workers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    pub id: WorkerId,
    pub info: WorkerInfo,
    pub leases_held: u32,
    pub chunks_completed: u64,
    pub elements_completed: u64,
    pub draining: bool,
    pub last_seen: Duration,
}

/// A job as its stream sees it on one poll.
#[derive(Debug, Default)]
pub struct JobPoll {
    pub values: Vec<ValuesBatch>,
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

#[derive(Debug)]
struct WorkerEntry {
    info: WorkerInfo,
    /// Leases asked for and not yet granted.
    demand: u32,
    leases: Vec<LeaseToken>,
    last_seen: Instant,
    draining: bool,
    chunks_completed: u64,
    elements_completed: u64,
}

/// The scheduling state of the whole coordinator.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    workers: BTreeMap<WorkerId, WorkerEntry>,
    jobs: BTreeMap<JobId, Job>,
    next_worker: u64,
    next_job: u64,
    /// Where the round-robin over jobs resumes, for fairness.
    job_cursor: JobId,
    effects: Vec<Effect>,
    counters: Counters,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            config,
            workers: BTreeMap::new(),
            jobs: BTreeMap::new(),
            next_worker: 1,
            next_job: 1,
            job_cursor: JobId(0),
            effects: Vec::new(),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// What the caller must do now, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    // ------------------------------------------------------------ workers

    pub fn register_worker(&mut self, info: WorkerInfo, now: Instant) -> WorkerId {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.workers.insert(
            id,
            WorkerEntry {
                info,
                demand: 0,
                leases: Vec::new(),
                last_seen: now,
                draining: false,
                chunks_completed: 0,
                elements_completed: 0,
            },
        );
        id
    }

    /// Any message from a worker proves it alive.
    pub fn heard_from(&mut self, worker: WorkerId, now: Instant) {
        if let Some(entry) = self.workers.get_mut(&worker) {
            entry.last_seen = now;
        }
    }

    /// The worker asks for `slots` more leases.
    pub fn pull(&mut self, worker: WorkerId, slots: u32, now: Instant) {
        let Some(entry) = self.workers.get_mut(&worker) else {
            return;
        };
        entry.last_seen = now;
        if !entry.draining {
            entry.demand = entry.demand.saturating_add(slots);
        }
        self.assign(now);
    }

    /// The worker stops taking leases; it will finish or return what it holds.
    pub fn drain(&mut self, worker: WorkerId, now: Instant) {
        if let Some(entry) = self.workers.get_mut(&worker) {
            entry.last_seen = now;
            entry.draining = true;
            entry.demand = 0;
        }
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
    pub fn disconnect_worker(&mut self, worker: WorkerId, now: Instant) {
        self.remove_worker(worker);
        self.assign(now);
    }

    /// Declares dead every worker silent for longer than the lease timeout.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.config.lease_timeout;
        let silent: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.last_seen) > timeout)
            .map(|(id, _)| *id)
            .collect();
        if silent.is_empty() {
            return;
        }
        for worker in silent {
            let held = self.workers.get(&worker).map_or(0, |w| w.leases.len());
            self.counters.leases_expired += held as u64;
            self.remove_worker(worker);
            self.effects.push(Effect::Disconnect { worker });
        }
        self.assign(now);
    }

    fn remove_worker(&mut self, worker: WorkerId) {
        let Some(entry) = self.workers.remove(&worker) else {
            return;
        };
        for token in entry.leases {
            self.lease_lost(worker, token);
        }
    }

    /// A live lease of a removed worker ends; counts as a try.
    fn lease_lost(&mut self, worker: WorkerId, token: LeaseToken) {
        let Some(job) = self.jobs.get_mut(&token.job) else {
            return;
        };
        let live = job
            .chunk(token.chunk)
            .is_some_and(|c| c.is_live(token.attempt, worker));
        if !live {
            return;
        }
        job.lease_ended(token.chunk, token.attempt, true);
        self.after_try_ended(token);
    }

    /// Fails the job if the chunk used up its tries, else counts a retry.
    fn after_try_ended(&mut self, token: LeaseToken) {
        let max_attempts = self.config.max_attempts;
        let Some(job) = self.jobs.get_mut(&token.job) else {
            return;
        };
        let Some(chunk) = job.chunk(token.chunk) else {
            return;
        };
        if chunk.tries >= max_attempts && chunk.live_leases().is_empty() {
            if let Some(failure) = job.chunk_failure(token.chunk) {
                self.fail_job(token.job, failure);
            }
        } else if chunk.live_leases().is_empty() {
            self.counters.retries += 1;
        }
    }

    /// Ends `worker`'s live lease `token`, if it is one. Returns whether it
    /// was live.
    fn end_live_lease(&mut self, worker: WorkerId, token: LeaseToken, counts_as_try: bool) -> bool {
        let Some(entry) = self.workers.get_mut(&worker) else {
            return false;
        };
        let Some(position) = entry.leases.iter().position(|t| *t == token) else {
            return false;
        };
        entry.leases.swap_remove(position);
        if let Some(job) = self.jobs.get_mut(&token.job) {
            job.lease_ended(token.chunk, token.attempt, counts_as_try);
        }
        true
    }

    // ------------------------------------------------------------ results

    /// A worker reports a chunk's result under `token`.
    pub fn complete(
        &mut self,
        worker: WorkerId,
        token: LeaseToken,
        report: ChunkReport,
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
        let values_ok = match (&report.values, job.spec.stream_values) {
            (Some(values), true) => values.len() as u64 == len * 8,
            (None, false) => true,
            _ => false,
        };
        if report.summary.check_shape(len).is_err() || !values_ok {
            let message = format!(
                "worker {worker} sent a malformed result for {len} elements ({} leaf sums, {} value bytes)",
                report.summary.leaf_sums.len(),
                report.values.as_ref().map_or(0, Bytes::len)
            );
            self.fail_attempt(worker, token, message, true, now);
            return Err(Rejection::Malformed);
        }

        let (others, released) =
            job.accept(token.chunk, report.summary, report.values, worker, now);
        match &job.outcome {
            Some(JobOutcome::Finished(_)) => self.counters.jobs_finished += 1,
            Some(JobOutcome::Failed(_)) => self.counters.jobs_failed += 1,
            None => {}
        }
        self.counters.results_accepted += 1;
        if let Some(entry) = self.workers.get_mut(&worker) {
            entry.leases.retain(|t| *t != token);
            entry.chunks_completed += 1;
            entry.elements_completed += len;
        }
        for other in others {
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
        if released {
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
        let live = self
            .jobs
            .get(&token.job)
            .filter(|job| job.is_running())
            .and_then(|job| job.chunk(token.chunk))
            .is_some_and(|chunk| chunk.is_live(token.attempt, worker));
        if live {
            Ok(())
        } else {
            self.counters.results_rejected_stale += 1;
            Err(Rejection::Stale)
        }
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
            self.after_try_ended(token);
        }
        self.assign(now);
    }

    // ------------------------------------------------------------ jobs

    pub fn submit(&mut self, spec: JobSpec, now: Instant) -> Result<JobId, SubmitError> {
        let running = self.jobs.values().filter(|j| j.is_running()).count();
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
        self.jobs.remove(&job);
        self.assign(now);
    }

    /// What the job's stream should send next: up to about `max_bytes` of
    /// values, progress, and at the very end the outcome (after which the
    /// job is forgotten).
    pub fn poll_job(&mut self, job: JobId, max_bytes: usize, now: Instant) -> Option<JobPoll> {
        let entry = self.jobs.get_mut(&job)?;
        let values = entry.take_ready(max_bytes);
        let mut poll = JobPoll {
            elements_done: entry.elements_done(),
            chunks_done: entry.chunks_done(),
            ..JobPoll::default()
        };
        if !entry.has_ready() && entry.outcome.is_some() {
            poll.outcome = entry.outcome.clone();
            self.jobs.remove(&job);
        }
        poll.values = values;
        if !poll.values.is_empty() {
            // Taking values frees window space.
            self.assign(now);
        }
        Some(poll)
    }

    fn fail_job(&mut self, job: JobId, failure: JobFailure) {
        self.revoke_all(job);
        if let Some(entry) = self.jobs.get_mut(&job)
            && entry.is_running()
        {
            entry.fail(failure);
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

    // ------------------------------------------------------------ leasing

    /// Grants work to every worker with demand, round-robin over jobs.
    fn assign(&mut self, now: Instant) {
        let cluster_threads: u64 = self
            .workers
            .values()
            .filter(|w| !w.draining)
            .map(|w| u64::from(w.info.threads.max(1)))
            .sum();
        let hungry: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.demand > 0 && !w.draining)
            .map(|(id, _)| *id)
            .collect();
        for worker in hungry {
            let mut leases = Vec::new();
            while self.workers.get(&worker).is_some_and(|w| w.demand > 0) {
                let Some(lease) = self.next_lease(worker, cluster_threads, now) else {
                    break;
                };
                if let Some(entry) = self.workers.get_mut(&worker) {
                    entry.demand -= 1;
                    entry.leases.push(lease.token);
                }
                self.counters.leases_granted += 1;
                leases.push(lease);
            }
            if leases.is_empty() {
                // No job has work for anyone now; stop looking.
                break;
            }
            self.effects.push(Effect::Grant { worker, leases });
        }
    }

    /// The next lease for `worker`, taking jobs in turn after the cursor.
    fn next_lease(
        &mut self,
        worker: WorkerId,
        cluster_threads: u64,
        now: Instant,
    ) -> Option<Lease> {
        let ids: Vec<JobId> = self
            .jobs
            .range(JobId(self.job_cursor.0 + 1)..)
            .chain(self.jobs.range(..=self.job_cursor))
            .map(|(id, _)| *id)
            .collect();
        let window = self.config.window;
        for id in ids {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            let Work::Chunk(index) = job.next_work(&window, cluster_threads) else {
                continue;
            };
            let attempt = job.leased(index, worker, now)?;
            let chunk = job.chunk(index)?;
            self.job_cursor = id;
            return Some(Lease {
                token: LeaseToken {
                    job: id,
                    chunk: index,
                    attempt,
                },
                function: job.spec.function,
                job_start: job.spec.start,
                offset: chunk.offset,
                len: chunk.len,
                stream_values: job.spec.stream_values,
            });
        }
        None
    }

    // ------------------------------------------------------------ status

    pub fn worker_status(&self, now: Instant) -> Vec<WorkerStatus> {
        self.workers
            .iter()
            .map(|(id, w)| WorkerStatus {
                id: *id,
                info: w.info.clone(),
                leases_held: w.leases.len() as u32,
                chunks_completed: w.chunks_completed,
                elements_completed: w.elements_completed,
                draining: w.draining,
                last_seen: now.saturating_duration_since(w.last_seen),
            })
            .collect()
    }

    pub fn running_jobs(&self) -> usize {
        self.jobs.values().filter(|j| j.is_running()).count()
    }

    /// Leases `worker` holds now.
    pub fn leases_of(&self, worker: WorkerId) -> &[LeaseToken] {
        self.workers.get(&worker).map_or(&[], |w| &w.leases)
    }
}
