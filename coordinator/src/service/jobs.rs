//! `JobService`: submitting jobs and streaming their results back.
//!
//! Each job gets a task that waits for the scheduler to release something,
//! takes it, and forwards it to the client through a small bounded queue.
//! When the client reads slowly the task waits on that queue, released
//! values pile up in the job's window, and the scheduler stops leasing
//! ahead. When the client goes away the job is cancelled.

use std::sync::Arc;

use farm_proto::error::{ErrorKind, ServiceError, to_status};
use farm_proto::v1;
use farm_proto::v1::job_service_server::JobService;
use farm_proto::v1::submit_job_response::Event;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{Hub, status};
use crate::scheduler::{JobId, JobOutcome, JobPoll, SubmitError};
use crate::validate;

/// Messages queued for a client. Each can be a whole chunk of values, so
/// keep it short: the scheduler's window is where results wait.
const JOB_STREAM_QUEUE: usize = 2;

/// A client that reads nothing for this long is treated as gone, so it
/// cannot hold a job (and its memory) forever.
const CLIENT_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// How long a final error may wait for room in the client's queue.
const FINAL_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Values taken from the scheduler per poll.
const POLL_BYTES: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct JobsApi {
    hub: Arc<Hub>,
}

impl JobsApi {
    pub fn new(hub: Arc<Hub>) -> JobsApi {
        JobsApi { hub }
    }
}

impl ServiceError for SubmitError {
    fn kind(&self) -> ErrorKind {
        match self {
            SubmitError::TooManyJobs { .. } => ErrorKind::ResourceExhausted,
        }
    }
}

type EventSender = mpsc::Sender<Result<v1::SubmitJobResponse, Status>>;

#[tonic::async_trait]
impl JobService for JobsApi {
    type SubmitJobStream = ReceiverStream<Result<v1::SubmitJobResponse, Status>>;

    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<Self::SubmitJobStream>, Status> {
        let spec = validate::job_spec(request.get_ref(), &self.hub.config().limits)
            .map_err(|e| to_status(&e))?;
        let waker = Arc::new(Notify::new());
        let job = {
            let mut state = self.hub.lock();
            let job = state
                .scheduler
                .submit(spec.clone(), std::time::Instant::now())
                .map_err(|e| to_status(&e))?;
            state.job_wakers.insert(job, waker.clone());
            state.apply_effects();
            job
        };
        tracing::info!(%job, function = %spec.function, start = spec.start, n = spec.n, stream = spec.stream_values, "job accepted");

        let (events, rx) = mpsc::channel(JOB_STREAM_QUEUE);
        let hub = self.hub.clone();
        let span = tracing::info_span!("job", %job);
        tokio::spawn(
            async move {
                stream_job(&hub, job, &waker, &events).await;
                hub.lock().job_wakers.remove(&job);
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_cluster_status(
        &self,
        request: Request<v1::GetClusterStatusRequest>,
    ) -> Result<Response<v1::GetClusterStatusResponse>, Status> {
        validate::protocol_version("client", request.get_ref().protocol_version)
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(status::cluster(&self.hub)))
    }

    async fn get_job_status(
        &self,
        request: Request<v1::GetJobStatusRequest>,
    ) -> Result<Response<v1::GetJobStatusResponse>, Status> {
        validate::protocol_version("client", request.get_ref().protocol_version)
            .map_err(|e| to_status(&e))?;
        status::job(&self.hub, JobId(request.get_ref().job_id)).map(Response::new)
    }
}

/// Forwards one job's events to its client until the job ends or the
/// client leaves.
async fn stream_job(hub: &Hub, job: JobId, waker: &Notify, events: &EventSender) {
    let accepted = Event::Accepted(v1::JobAccepted { job_id: job.0 });
    if !send(hub, events, accepted).await {
        hub.with_scheduler(|s, now| s.cancel(job, now));
        return;
    }
    let mut progress = tokio::time::interval(hub.config().progress_interval);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(poll) = hub.with_scheduler(|s, now| s.poll_job(job, POLL_BYTES, now)) else {
            tracing::warn!("job vanished from the scheduler");
            send_error(events, Status::internal(format!("job {job} was lost"))).await;
            return;
        };
        let JobPoll {
            values,
            elements_done,
            chunks_done,
            outcome,
        } = poll;
        let sent_values = !values.is_empty();
        for batch in values {
            let event = Event::Values(v1::ValuesBatch {
                offset: batch.offset,
                values_le: batch.values_le,
            });
            if !send(hub, events, event).await {
                tracing::info!("client left or stopped reading; cancelling the job");
                hub.with_scheduler(|s, now| s.cancel(job, now));
                return;
            }
        }
        if let Some(outcome) = outcome {
            finish(hub, events, job, outcome).await;
            return;
        }
        if sent_values {
            continue;
        }
        tokio::select! {
            () = waker.notified() => {}
            _ = progress.tick() => {
                // Sent even when nothing changed: it tells the client the
                // coordinator is alive while a long job is quiet.
                let event = Event::Progress(v1::JobProgress { elements_done, chunks_done });
                if !send(hub, events, event).await {
                    hub.with_scheduler(|s, now| s.cancel(job, now));
                    return;
                }
            }
            () = events.closed() => {
                tracing::info!("client left; cancelling the job");
                hub.with_scheduler(|s, now| s.cancel(job, now));
                return;
            }
            () = hub.shutdown_token().cancelled() => {
                hub.with_scheduler(|s, now| s.cancel(job, now));
                send_error(events, Status::unavailable(format!(
                    "the coordinator is shutting down; job {job} was cancelled"
                ))).await;
                return;
            }
        }
    }
}

async fn finish(hub: &Hub, events: &EventSender, job: JobId, outcome: JobOutcome) {
    match outcome {
        JobOutcome::Finished(result) => {
            tracing::info!(chunks = result.chunks, workers = result.workers, elapsed = ?result.elapsed, "job finished");
            let finished = Event::Finished(v1::JobFinished {
                summary: Some(result.summary.into()),
                stats: Some(v1::JobStats {
                    chunks: result.chunks,
                    workers: result.workers,
                    attempts: result.attempts,
                    elapsed_us: u64::try_from(result.elapsed.as_micros()).unwrap_or(u64::MAX),
                }),
            });
            send(hub, events, finished).await;
        }
        JobOutcome::Failed(failure) => {
            tracing::warn!(%failure, "job failed");
            let status = Status::new(ErrorKind::JobFailed.code(), failure.to_string());
            send_error(events, status).await;
        }
    }
    tracing::debug!(%job, "job stream done");
}

/// Ends the stream with an error status, if the client takes it in time.
async fn send_error(events: &EventSender, status: Status) {
    let _ = tokio::time::timeout(FINAL_SEND_TIMEOUT, events.send(Err(status))).await;
}

/// Sends one event; false if the client is gone, has read nothing for
/// [`CLIENT_STALL_TIMEOUT`], or the coordinator is shutting down.
async fn send(hub: &Hub, events: &EventSender, event: Event) -> bool {
    let message = Ok(v1::SubmitJobResponse { event: Some(event) });
    tokio::select! {
        sent = tokio::time::timeout(CLIENT_STALL_TIMEOUT, events.send(message)) => matches!(sent, Ok(Ok(()))),
        () = hub.shutdown_token().cancelled() => false,
    }
}
