//! Status snapshots for `farm workers` and `farm status`: copies taken
//! under the lock, never references into the scheduler.

use std::time::{Duration, Instant};

use super::{
    Counters, HeldValues, JobCounters, JobId, JobSpec, LeaseToken, Scheduler, WorkerId, WorkerInfo,
};

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
    /// Its session's smoothed round trip, once measured.
    pub round_trip: Option<Duration>,
    /// Leases it is granted beyond its demand to cover that round trip.
    pub hold: u32,
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

impl<V: HeldValues> Scheduler<V> {
    pub fn counters(&self) -> Counters {
        self.counters
    }

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
                round_trip: w.round_trip,
                hold: w.hold,
            })
            .collect()
    }

    /// A running job, or one of the last `ENDED_JOBS_KEPT` (`jobs.rs`) that
    /// ended.
    pub fn job_status(&self, job: JobId, now: Instant) -> Option<JobStatus> {
        if let Some(entry) = self.jobs.get(&job) {
            return Some(entry.status(now));
        }
        self.ended.iter().rev().find(|s| s.id == job).cloned()
    }

    /// Every job [`Scheduler::job_status`] knows, by id.
    pub fn job_statuses(&self, now: Instant) -> Vec<JobStatus> {
        let ended = self.ended.iter().filter(|s| !self.jobs.contains_key(&s.id));
        let mut statuses: Vec<JobStatus> = ended
            .cloned()
            .chain(self.jobs.values().map(|j| j.status(now)))
            .collect();
        statuses.sort_by_key(|s| s.id);
        statuses
    }

    pub fn running_jobs(&self) -> usize {
        self.jobs.values().filter(|j| j.is_running()).count()
    }

    /// Leases `worker` holds now.
    pub fn leases_of(&self, worker: WorkerId) -> &[LeaseToken] {
        self.workers.get(&worker).map_or(&[], |w| &w.leases)
    }
}
