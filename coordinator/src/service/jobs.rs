//! `JobService`: submitting jobs and streaming their results back.
//!
//! Each job gets a task that waits for the scheduler to release something,
//! takes it, and forwards it to the client through a small bounded queue.
//! When the client reads slowly the task waits on that queue, released
//! values pile up in the job's window, and the scheduler stops leasing
//! ahead. When the client goes away the job is cancelled.
//!
//! The values go in the job's stream, or on the client's value connection
//! when it asked for one ([`super::values`]); the stream then carries only
//! the acceptance, progress and the outcome.

use std::sync::Arc;

use farm_net::side_connection::{Purpose, Token};
use farm_net::wire::{Encoded, FrameBody, FrameSender, server};
use farm_proto::error::{ErrorKind, ServiceError, to_status};
use farm_proto::v1;
use farm_proto::v1::submit_job_response::Event;
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tonic::Status;
use tonic::body::Body;
use tracing::Instrument;

use super::{Hub, status};
use crate::scheduler::{JobId, JobOutcome, JobPoll, SubmitError, ValuesBatch};
use crate::validate;
use crate::values::{ChunkValues, ValueWriter};

/// Messages queued for a client. Each can be a whole chunk of values, so
/// keep it short: the scheduler's window is where results wait.
const JOB_STREAM_QUEUE: usize = 2;

/// A client that reads nothing for this long is treated as gone, so it
/// cannot hold a job (and its memory) forever.
const CLIENT_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// How long a final error may wait for room in the client's queue.
const FINAL_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Values taken from the scheduler per poll: one chunk (8 MiB) at a time,
/// so values leave the window only when the queue has room for them.
const POLL_BYTES: usize = 8 << 20;

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

impl JobsApi {
    /// `SubmitJob`: accepts the job and answers with its stream of events.
    pub(super) async fn submit_job(&self, request: http::Request<Body>) -> http::Response<Body> {
        let accepted = async {
            let message = server::request_message(request.into_body()).await?;
            self.start_job(&message)
        };
        match accepted.await {
            Ok(body) => server::response(body),
            Err(status) => status.into_http(),
        }
    }

    fn start_job(&self, request: &v1::SubmitJobRequest) -> Result<FrameBody, Status> {
        let spec =
            validate::job_spec(request, &self.hub.config().limits).map_err(|e| to_status(&e))?;
        // As for worker sessions: no job (and its task) once stopping.
        if self.hub.shutdown_token().is_cancelled() {
            return Err(Status::unavailable("the coordinator is shutting down"));
        }
        let waker = Arc::new(Notify::new());
        let job = {
            let mut state = self.hub.lock();
            let job = state
                .scheduler
                .submit(spec.clone(), std::time::Instant::now())
                .map_err(|e| to_status(&e))?;
            state.job_wakers.insert(job, waker.clone());
            if let Some(hash) = spec.function.module() {
                state.modules.hold(hash, request.wasm_module.clone());
            }
            state.apply_effects();
            job
        };
        tracing::info!(%job, function = %spec.function, start = spec.start, n = spec.n, stream = spec.stream_values, "job accepted");
        let offer = (spec.stream_values && request.values_connection)
            .then(|| self.offer_value_connection(job))
            .flatten();

        let (events, body) = FrameBody::response(JOB_STREAM_QUEUE);
        let hub = self.hub.clone();
        let span = tracing::info_span!("job", %job);
        let module = spec.function.module();
        self.hub.tasks().spawn(
            async move {
                stream_job(&hub, job, &waker, &events, offer).await;
                {
                    let mut state = hub.lock();
                    state.job_wakers.remove(&job);
                    if let Some(hash) = module {
                        state.modules.release(hash);
                    }
                }
                if let Some(offers) = hub.value_offers() {
                    offers.withdraw(Purpose::JobValues, job.0);
                }
            }
            .instrument(span),
        );
        Ok(body)
    }

    /// A value connection for `job`'s client, if this coordinator can take
    /// one; otherwise the values go in the job's stream.
    fn offer_value_connection(&self, job: JobId) -> Option<Offer> {
        let offers = self.hub.value_offers()?;
        match offers.offer(Purpose::JobValues, job.0) {
            Ok((token, arrival)) => Some(Offer { token, arrival }),
            Err(error) => {
                tracing::warn!(%error, "the values go in the job's stream");
                None
            }
        }
    }

    /// `GetClusterStatus`.
    pub(super) fn cluster_status(
        &self,
        request: &v1::GetClusterStatusRequest,
    ) -> Result<v1::GetClusterStatusResponse, Status> {
        validate::protocol_version("client", request.protocol_version)
            .map_err(|e| to_status(&e))?;
        Ok(status::cluster(&self.hub))
    }

    /// `GetJobStatus`.
    pub(super) fn job_status(
        &self,
        request: &v1::GetJobStatusRequest,
    ) -> Result<v1::GetJobStatusResponse, Status> {
        validate::protocol_version("client", request.protocol_version)
            .map_err(|e| to_status(&e))?;
        status::job(&self.hub, JobId(request.job_id))
    }
}

/// A value connection offered to a job's client.
#[derive(Debug)]
struct Offer {
    token: Token,
    arrival: oneshot::Receiver<TcpStream>,
}

/// Where a job's values go.
#[derive(Debug)]
enum ValueRoute {
    /// A value connection was offered; until `deadline` the values wait
    /// for it.
    Offered {
        arrival: oneshot::Receiver<TcpStream>,
        deadline: Instant,
    },
    Connection(ValueWriter),
    /// In the job's stream.
    Stream,
}

impl ValueRoute {
    /// Sends one released batch; false if the client is gone or stalled.
    async fn send(
        &mut self,
        hub: &Hub,
        events: &FrameSender,
        batch: ValuesBatch<ChunkValues>,
    ) -> bool {
        if !self.settle(hub, events).await {
            return false;
        }
        let bytes = batch.values.len();
        let sent = match self {
            // A client that left the job's stream is gone even while its
            // value connection still takes bytes (or is stuck).
            ValueRoute::Connection(writer) => tokio::select! {
                sent = writer.send(batch.values, CLIENT_STALL_TIMEOUT) => sent,
                () = events.closed() => false,
                () = hub.shutdown_token().cancelled() => false,
            },
            // Values in memory go on as they came: no copy. (An offer is
            // settled by now.)
            ValueRoute::Stream | ValueRoute::Offered { .. } => {
                let values = match batch.values.into_memory() {
                    Ok(values) => values,
                    Err(error) => {
                        let status = Status::internal(format!("values were lost: {error}"));
                        send_error(events, status).await;
                        return false;
                    }
                };
                let encoded = Encoded::values_batch(batch.offset, values);
                send_encoded(hub, events, encoded).await
            }
        };
        if sent {
            hub.count_streamed(bytes);
        }
        sent
    }

    /// Decides an offered route when the first values are ready: the
    /// client's connection if it came, otherwise (once the wait is over)
    /// the stream. False if the client left meanwhile.
    async fn settle(&mut self, hub: &Hub, events: &FrameSender) -> bool {
        let ValueRoute::Offered { arrival, deadline } = self else {
            return true;
        };
        *self = tokio::select! {
            // A connection that arrived just in time is taken.
            biased;
            arrived = arrival => match arrived {
                Ok(stream) => ValueRoute::Connection(ValueWriter::start(stream, CLIENT_STALL_TIMEOUT, hub.tasks())),
                Err(_) => ValueRoute::Stream,
            },
            () = tokio::time::sleep_until(*deadline) => {
                tracing::info!(
                    wait = ?hub.config().value_connection_wait,
                    "the client opened no value connection; its values go in the job's stream"
                );
                ValueRoute::Stream
            }
            () = events.closed() => return false,
            () = hub.shutdown_token().cancelled() => return false,
        };
        true
    }

    /// Waits until the values sent are with the client (on a value
    /// connection: written and the connection closed).
    async fn finish(self) -> Result<(), String> {
        match self {
            ValueRoute::Connection(writer) => writer.finish(CLIENT_STALL_TIMEOUT).await,
            ValueRoute::Offered { .. } | ValueRoute::Stream => Ok(()),
        }
    }
}

/// Forwards one job's events to its client until the job ends or the
/// client leaves.
async fn stream_job(
    hub: &Hub,
    job: JobId,
    waker: &Notify,
    events: &FrameSender,
    offer: Option<Offer>,
) {
    let (values_token, mut route) = match offer {
        Some(Offer { token, arrival }) => (
            bytes::Bytes::copy_from_slice(&token),
            ValueRoute::Offered {
                arrival,
                deadline: Instant::now() + hub.config().value_connection_wait,
            },
        ),
        None => (bytes::Bytes::new(), ValueRoute::Stream),
    };
    let accepted = Event::Accepted(v1::JobAccepted {
        job_id: job.0,
        values_token,
    });
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
            if !route.send(hub, events, batch).await {
                tracing::info!("client left or stopped reading; cancelling the job");
                hub.with_scheduler(|s, now| s.cancel(job, now));
                if matches!(route, ValueRoute::Connection(_)) {
                    let message = format!(
                        "job {job} was cancelled: its value connection closed, or its client read no values for {} s",
                        CLIENT_STALL_TIMEOUT.as_secs()
                    );
                    send_error(events, Status::cancelled(message)).await;
                }
                return;
            }
        }
        if let Some(outcome) = outcome {
            finish(hub, events, job, outcome, route).await;
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

async fn finish(
    hub: &Hub,
    events: &FrameSender,
    job: JobId,
    outcome: JobOutcome,
    route: ValueRoute,
) {
    match outcome {
        JobOutcome::Finished(result) => {
            // The client hears that the job finished only once it has all
            // of its values.
            if let Err(reason) = route.finish().await {
                tracing::warn!(%reason, "job finished, but its values did not reach the client");
                let message = format!(
                    "job {job} finished, but its values did not reach the client: {reason}"
                );
                send_error(events, Status::unavailable(message)).await;
                return;
            }
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
async fn send_error(events: &FrameSender, status: Status) {
    let _ = tokio::time::timeout(FINAL_SEND_TIMEOUT, events.send(Err(status))).await;
}

/// Sends one event; false if the client is gone, has read nothing for
/// [`CLIENT_STALL_TIMEOUT`], or the coordinator is shutting down.
async fn send(hub: &Hub, events: &FrameSender, event: Event) -> bool {
    let message = v1::SubmitJobResponse { event: Some(event) };
    send_encoded(hub, events, Encoded::message(&message)).await
}

/// Like [`send`], for a message already encoded; a message that could not
/// be encoded ends the stream with that error.
async fn send_encoded(hub: &Hub, events: &FrameSender, message: Result<Encoded, Status>) -> bool {
    let message = match message {
        Ok(message) => Ok(message),
        Err(status) => {
            send_error(events, status).await;
            return false;
        }
    };
    tokio::select! {
        sent = tokio::time::timeout(CLIENT_STALL_TIMEOUT, events.send(message)) => matches!(sent, Ok(Ok(()))),
        () = hub.shutdown_token().cancelled() => false,
    }
}
