//! What `farm workers` and `farm status JOB` show: the scheduler's view,
//! turned into messages.

use farm_proto::error::ErrorKind;
use farm_proto::v1;
use farm_proto::v1::get_job_status_response::State;
use tonic::Status;

use super::Hub;
use crate::scheduler::{Counters, JobCounters, JobId, JobState, JobStatus, WorkerStatus};

pub(super) fn cluster(hub: &Hub) -> v1::GetClusterStatusResponse {
    let piped = crate::values::pipe_usage();
    hub.with_scheduler(|s, now| v1::GetClusterStatusResponse {
        workers: s.worker_status(now).into_iter().map(worker).collect(),
        counters: Some(counters(s.counters())),
        running_jobs: u32::try_from(s.running_jobs()).unwrap_or(u32::MAX),
        piped_values: Some(v1::PipedValues {
            pipes: u32::try_from(piped.pipes).unwrap_or(u32::MAX),
            bytes: piped.bytes as u64,
            peak_bytes: piped.peak_bytes as u64,
        }),
    })
}

pub(super) fn job(hub: &Hub, id: JobId) -> Result<v1::GetJobStatusResponse, Status> {
    hub.with_scheduler(|s, now| s.job_status(id, now))
        .map(job_message)
        .ok_or_else(|| {
            Status::new(ErrorKind::NotFound.code(), format!(
                "no job {id} on this coordinator (it keeps the last jobs that ended, and forgets everything when it restarts)"
            ))
        })
}

fn worker(w: WorkerStatus) -> v1::WorkerStatus {
    v1::WorkerStatus {
        worker_id: w.id.0,
        name: w.info.name,
        threads: w.info.threads,
        leases_held: w.leases_held,
        chunks_completed: w.chunks_completed,
        elements_completed: w.elements_completed,
        draining: w.draining,
        last_seen_ms: millis(w.last_seen),
        silent: w.silent,
        elements_per_second: w.speed.unwrap_or(0.0),
        round_trip_us: w.round_trip.map_or(0, |d| {
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
        }),
    }
}

fn counters(c: Counters) -> v1::Counters {
    v1::Counters {
        leases_granted: c.leases_granted,
        leases_expired: c.leases_expired,
        leases_returned: c.leases_returned,
        results_accepted: c.results_accepted,
        results_rejected_stale: c.results_rejected_stale,
        chunk_failures: c.chunk_failures,
        retries: c.retries,
        jobs_submitted: c.jobs_submitted,
        jobs_finished: c.jobs_finished,
        jobs_failed: c.jobs_failed,
        jobs_cancelled: c.jobs_cancelled,
        backups_granted: c.backups_granted,
        backups_won: c.backups_won,
        leases_undelivered: c.leases_undelivered,
    }
}

fn job_message(status: JobStatus) -> v1::GetJobStatusResponse {
    let (state, error) = match status.state {
        JobState::Running => (State::Running, String::new()),
        JobState::Finished => (State::Finished, String::new()),
        JobState::Failed(error) => (State::Failed, error),
        JobState::Cancelled => (State::Cancelled, String::new()),
    };
    let JobCounters {
        leases_granted,
        retries,
        backups_granted,
        backups_won,
        results_rejected_stale,
    } = status.counters;
    v1::GetJobStatusResponse {
        job_id: status.id.0,
        state: state.into(),
        error,
        function: status.spec.function.to_string(),
        start: status.spec.start,
        n: status.spec.n,
        elements_done: status.elements_done,
        chunks_done: status.chunks_done,
        chunks_running: status.chunks_running,
        counters: Some(v1::JobCounters {
            leases_granted,
            retries,
            backups_granted,
            backups_won,
            results_rejected_stale,
        }),
        worker_ids: status.workers.iter().map(|w| w.0).collect(),
        elapsed_ms: millis(status.elapsed),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
