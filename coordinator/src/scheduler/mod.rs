//! The scheduling core: a synchronous state machine with no I/O, no
//! spawning and no clock reads. Time is passed in as `now`, so every rule
//! (leases, expiry, fencing, the ordered merge) is tested deterministically.
//!
//! The gRPC services wrap one [`Scheduler`] in a `std::sync::Mutex` and
//! never await while holding it. Each call records what the outside world
//! must do next as [`Effect`]s (send leases to a worker, revoke leases,
//! wake a job's stream); the caller takes them with
//! [`Scheduler::take_effects`]. See `README.md` beside this file
//! for the policies.
//!
//! A chunk's values are an opaque handle `V` ([`HeldValues`]): the
//! scheduler holds them in the window and hands them out in order, and
//! needs only their length. Where they live (memory, pipes) is the
//! caller's business.
//!
//! The files, one concern each (all but the last four add methods to
//! [`Scheduler`]):
//!
//! | file | owns |
//! | --- | --- |
//! | `ids.rs` | worker, job and lease-token ids |
//! | `config.rs` | [`SchedulerConfig`] and the window's limits |
//! | `counters.rs` | running totals, cluster-wide and per job |
//! | `effects.rs` | [`Effect`]s and how grants are batched into them |
//! | `workers.rs` | registration, liveness, silence, drain, departure |
//! | `leasing.rs` | demand, granting leases in turn, undelivered grants |
//! | `backups.rs` | backup leases for stragglers |
//! | `results.rs` | accepting results, fencing, failures, lost leases |
//! | `jobs.rs` | submitting, cancelling, polling and failing jobs |
//! | `views.rs` | status snapshots for `farm workers` / `farm status` |
//! | `job.rs` | one job: its window of chunks and its ordered merge |
//! | `chunk.rs` | one chunk and its lifecycle |
//! | `policy.rs` | chunk sizes |
//! | `speed.rs` | measured worker speeds |

mod backups;
mod chunk;
mod config;
mod counters;
mod effects;
mod function;
mod ids;
mod job;
mod jobs;
mod leasing;
pub mod policy;
mod results;
mod speed;
#[cfg(test)]
mod tests;
mod views;
mod workers;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Instant;

pub use config::{SchedulerConfig, WindowLimits};
pub use counters::{Counters, JobCounters};
pub use effects::Effect;
pub use function::JobFunction;
pub use ids::{JobId, LeaseToken, WorkerId};
pub use job::{JobFailure, JobOutcome, JobResult, ValuesBatch};
pub use jobs::{JobPoll, JobSpec, SubmitError};
pub use leasing::Lease;
pub use results::{ChunkReport, Rejection};
pub use views::{JobState, JobStatus, WorkerStatus};
pub use workers::{Departure, WorkerInfo};

use job::Job;
use speed::ClusterSpeed;
use workers::WorkerEntry;

/// A chunk's values as the scheduler holds them: an opaque handle. The
/// window's byte bound and a result's shape check need its length, and
/// nothing else.
pub trait HeldValues: fmt::Debug {
    /// Bytes of values held.
    fn byte_len(&self) -> usize;
}

/// The scheduling state of the whole coordinator, holding chunk values
/// as `V`.
#[derive(Debug)]
pub struct Scheduler<V> {
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
    jobs: BTreeMap<JobId, Job<V>>,
    /// Statuses of the last jobs that ended, for `farm status`.
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

impl<V: HeldValues> Scheduler<V> {
    pub fn new(config: SchedulerConfig) -> Scheduler<V> {
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

    /// The periodic check: takes the leases of silent workers and gives
    /// idle workers backups of straggling chunks. Backups are looked for
    /// here only, not on every result: finding them walks every lease in
    /// flight, and a straggler is by definition not in a hurry.
    pub fn tick(&mut self, now: Instant) {
        self.expire(now);
        self.assign(now);
        self.assign_backups(now);
    }
}
