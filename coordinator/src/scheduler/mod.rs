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
mod speed;
mod stragglers;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::time::{Duration, Instant};

use crate::values::ChunkValues;
use farm_catalog::{ChunkSummary, Function};

use job::{Job, Work};
pub use job::{JobFailure, JobOutcome, JobResult, ValuesBatch};
use policy::Sizing;
use speed::{ClusterSpeed, Speed};

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
#[derive(Debug)]
pub struct ChunkReport {
    pub summary: ChunkSummary,
    pub values: Option<ChunkValues>,
    /// Wall time the worker spent computing the chunk (zero if unknown).
    pub compute: Duration,
}

/// How a worker's session ended, which decides whether the leases it held
/// use up their chunks' tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// The worker hung up, crashed or lost its connection. A poison chunk
    /// can do that, so each lease it held counts as a try: a chunk that
    /// keeps taking its workers down still fails its job.
    Lost,
    /// The coordinator closed the session itself (the worker stopped
    /// reading it). The chunks are not to blame and keep their tries.
    Dropped,
}

/// Something the caller must do after a scheduler call.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send these leases to the worker (one grant per worker per call).
    /// If they cannot be queued for it, hand them back with
    /// [`Scheduler::undelivered`].
    Grant {
        worker: WorkerId,
        leases: Vec<Lease>,
    },
    /// Tell the worker these leases are no longer wanted.
    Revoke {
        worker: WorkerId,
        tokens: Vec<LeaseToken>,
    },
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
                // Enough for 1,000 workers with two leases each.
                max_chunks: 8192,
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
    /// Taken back because the worker's session could not take them: not
    /// counted as granted, and given to other workers without using up a
    /// try.
    pub leases_undelivered: u64,
    pub leases_expired: u64,
    pub leases_returned: u64,
    pub results_accepted: u64,
    pub results_rejected_stale: u64,
    pub chunk_failures: u64,
    pub retries: u64,
    /// Second leases of chunks held by a straggler.
    pub backups_granted: u64,
    /// Chunks whose backup lease reported first.
    pub backups_won: u64,
    pub jobs_submitted: u64,
    pub jobs_finished: u64,
    pub jobs_failed: u64,
    pub jobs_cancelled: u64,
}

/// One worker as `farm workers` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStatus {
    pub id: WorkerId,
    pub info: WorkerInfo,
    pub leases_held: u32,
    pub chunks_completed: u64,
    pub elements_completed: u64,
    pub draining: bool,
    /// Silent past the lease timeout: its leases were reassigned; it is
    /// taken back if it speaks again.
    pub silent: bool,
    /// Measured elements per second, once it has reported a chunk.
    pub speed: Option<f64>,
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

/// How a job stands, for `farm status`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    pub elements_done: u64,
    pub chunks_done: u64,
    /// Chunks leased and not yet finished.
    pub chunks_running: u64,
    pub counters: JobCounters,
    pub workers: Vec<WorkerId>,
    /// Since the job was accepted, or until it ended.
    pub elapsed: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    Finished,
    Failed(String),
    /// Its client went away, or the coordinator is shutting down.
    Cancelled,
}

pub use job::JobCounters;

/// Whether a lease that ended without a result uses up one of its chunk's
/// tries.
#[derive(Debug)]
enum Try {
    /// It does; the text says how the lease was lost, for the job's error
    /// if the chunk runs out of tries.
    Used(String),
    /// The chunk is not to blame.
    Kept,
}

/// Ended jobs `farm status` can still describe.
const ENDED_JOBS_KEPT: usize = 256;

#[derive(Debug)]
struct WorkerEntry {
    info: WorkerInfo,
    /// Leases asked for and not yet granted.
    demand: u32,
    /// Live leases, in the order they were granted (the order the worker
    /// computes them in).
    leases: Vec<LeaseToken>,
    last_seen: Instant,
    draining: bool,
    /// Silent past the lease timeout; see [`Scheduler::expire`].
    silent: bool,
    /// Its session could not take the last grant: it gets no more until
    /// the caller says the session drained ([`Scheduler::resume_grants`]).
    /// A slow reader is paused, not dropped.
    backlogged: bool,
    speed: Option<Speed>,
    chunks_completed: u64,
    elements_completed: u64,
}

impl WorkerEntry {
    fn takes_work(&self) -> bool {
        !self.draining && !self.silent
    }

    fn wants_grants(&self) -> bool {
        self.takes_work() && !self.backlogged && self.demand > 0
    }
}

/// The scheduling state of the whole coordinator.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    workers: BTreeMap<WorkerId, WorkerEntry>,
    /// Workers with demand that take work and can take grants: kept so
    /// that assigning costs the same with 4 workers or 1,000.
    hungry: BTreeSet<WorkerId>,
    /// Where [`Scheduler::assign`] resumes: the worker it was serving when
    /// work last ran out, so every hungry worker gets its turn whatever its
    /// number.
    assign_cursor: WorkerId,
    /// Speed of the workers that take work.
    cluster: ClusterSpeed,
    jobs: BTreeMap<JobId, Job>,
    ended: VecDeque<JobStatus>,
    next_worker: u64,
    next_job: u64,
    /// Where the round-robin over jobs resumes, for fairness.
    job_cursor: JobId,
    effects: Vec<Effect>,
    /// Where each worker's grant sits in `effects`, so that everything a
    /// worker gets in one call travels as one message.
    queued_grants: BTreeMap<WorkerId, usize>,
    counters: Counters,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            config,
            workers: BTreeMap::new(),
            hungry: BTreeSet::new(),
            assign_cursor: WorkerId(0),
            cluster: ClusterSpeed::default(),
            jobs: BTreeMap::new(),
            ended: VecDeque::new(),
            next_worker: 1,
            next_job: 1,
            job_cursor: JobId(0),
            effects: Vec::new(),
            queued_grants: BTreeMap::new(),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// What the caller must do now, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        self.queued_grants.clear();
        std::mem::take(&mut self.effects)
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    // ------------------------------------------------------------ workers

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
            },
        );
        id
    }

    /// Changes a worker and keeps the cluster's speed and the hungry set
    /// in step with it. False if the worker is unknown.
    fn update_worker(&mut self, id: WorkerId, change: impl FnOnce(&mut WorkerEntry)) -> bool {
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

    /// The worker stops taking leases; it will finish or return what it holds.
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

    /// The periodic check: declares silent workers dead and gives idle
    /// workers backups of straggling chunks. Backups are looked for here
    /// only, not on every result: finding them walks every lease in
    /// flight, and a straggler is by definition not in a hurry.
    pub fn tick(&mut self, now: Instant) {
        self.expire(now);
        self.assign(now);
        self.assign_backups(now);
    }

    /// Workers silent for longer than the lease timeout lose their leases,
    /// which go back to the queue. Their sessions stay open: a worker that
    /// was only paused (a stopped process, a long GC, a congested link)
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

    /// Leases of a gone or silent worker end and go back to the queue.
    fn requeue(&mut self, worker: WorkerId, tokens: Vec<LeaseToken>, tries: &Try, now: Instant) {
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
    fn end_live_lease(&mut self, worker: WorkerId, token: LeaseToken, counts_as_try: bool) -> bool {
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
                report.values.as_ref().map_or(0, ChunkValues::len)
            );
            self.fail_attempt(worker, token, message, true, now);
            return Err(Rejection::Malformed);
        }

        let accepted = job.accept(token, report.summary, report.values, worker, now);
        match &job.outcome {
            Some(JobOutcome::Finished(_)) => self.counters.jobs_finished += 1,
            Some(JobOutcome::Failed(_)) => self.counters.jobs_failed += 1,
            None => {}
        }
        self.counters.results_accepted += 1;
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

    // ------------------------------------------------------------ jobs

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
    pub fn poll_job(&mut self, job: JobId, max_bytes: usize, now: Instant) -> Option<JobPoll> {
        let entry = self.jobs.get_mut(&job)?;
        let values = entry.take_ready(max_bytes);
        let mut poll = JobPoll {
            elements_done: entry.elements_done(),
            chunks_done: entry.chunks_done(),
            ..JobPoll::default()
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

    fn fail_job(&mut self, job: JobId, failure: JobFailure, now: Instant) {
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

    fn remember_ended(&mut self, job: &Job, state: JobState, now: Instant) {
        if self.ended.len() >= ENDED_JOBS_KEPT {
            self.ended.pop_front();
        }
        let mut status = job.status(now);
        status.state = state;
        self.ended.push_back(status);
    }

    // ------------------------------------------------------------ leasing

    /// Grants work to the workers with demand, each in turn: a worker gets
    /// as much of its demand as there is work for, in one grant, and the
    /// next call resumes with the worker that was left short, so over time
    /// every hungry worker is served, whatever its number. For each lease
    /// the running jobs are taken in turn after a rotating cursor.
    fn assign(&mut self, now: Instant) {
        while let Some(worker) = self.next_hungry() {
            let sizing = self.sizing(worker);
            let mut leases = Vec::new();
            while self.workers.get(&worker).is_some_and(|w| w.demand > 0) {
                let Some(lease) = self.next_lease(worker, sizing, now) else {
                    // No job has work now: start with this worker next time.
                    self.assign_cursor = worker;
                    self.queue_grant(worker, leases);
                    return;
                };
                self.record_grant(worker, lease.token);
                leases.push(lease);
            }
            // Served in full: the next one's turn. (Removing it is a no-op
            // that makes sure the loop ends.)
            self.hungry.remove(&worker);
            self.assign_cursor = WorkerId(worker.0.saturating_add(1));
            self.queue_grant(worker, leases);
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

    /// Queues leases for `worker`, in the grant already queued for it if
    /// there is one: a batch of results freeing window space one chunk at
    /// a time is then answered with one message, not one per chunk.
    /// Merging moves leases earlier, never later, so a revocation still
    /// follows the grant of what it revokes.
    fn queue_grant(&mut self, worker: WorkerId, mut leases: Vec<Lease>) {
        if leases.is_empty() {
            return;
        }
        if let Some(&index) = self.queued_grants.get(&worker)
            && let Some(Effect::Grant { leases: queued, .. }) = self.effects.get_mut(index)
        {
            queued.append(&mut leases);
            return;
        }
        self.queued_grants.insert(worker, self.effects.len());
        self.effects.push(Effect::Grant { worker, leases });
    }

    fn record_grant(&mut self, worker: WorkerId, token: LeaseToken) {
        self.update_worker(worker, |entry| {
            entry.demand = entry.demand.saturating_sub(1);
            entry.leases.push(token);
        });
        self.counters.leases_granted += 1;
    }

    /// What chunk sizing knows about `worker`.
    fn sizing(&self, worker: WorkerId) -> Sizing {
        let Some(entry) = self.workers.get(&worker) else {
            return Sizing {
                share: 1.0,
                speed: None,
            };
        };
        Sizing {
            share: self.cluster.share(entry.speed, entry.info.threads),
            speed: self.cluster.estimate(entry.speed, entry.info.threads),
        }
    }

    /// The next lease for `worker`, taking jobs in turn after the cursor.
    fn next_lease(&mut self, worker: WorkerId, sizing: Sizing, now: Instant) -> Option<Lease> {
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
            let Work::Chunk(index) = job.next_work(&window, sizing) else {
                continue;
            };
            self.job_cursor = next;
            return job.lease(index, worker, now, false);
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
                silent: w.silent,
                speed: w.speed.map(|s| s.0),
                last_seen: now.saturating_duration_since(w.last_seen),
            })
            .collect()
    }

    /// A running job, or one of the last [`ENDED_JOBS_KEPT`] that ended.
    pub fn job_status(&self, job: JobId, now: Instant) -> Option<JobStatus> {
        if let Some(entry) = self.jobs.get(&job) {
            return Some(entry.status(now));
        }
        self.ended.iter().rev().find(|s| s.id == job).cloned()
    }

    pub fn running_jobs(&self) -> usize {
        self.jobs.values().filter(|j| j.is_running()).count()
    }

    /// Leases `worker` holds now.
    pub fn leases_of(&self, worker: WorkerId) -> &[LeaseToken] {
        self.workers.get(&worker).map_or(&[], |w| &w.leases)
    }
}

fn outcome_state(outcome: &JobOutcome) -> JobState {
    match outcome {
        JobOutcome::Finished(_) => JobState::Finished,
        JobOutcome::Failed(failure) => JobState::Failed(failure.to_string()),
    }
}
