//! `WorkerService`: one bidirectional session per connected worker.
//!
//! The session opens with the worker's hello and our welcome. After that
//! every worker message goes straight to the scheduler, and the scheduler's
//! grants and revocations come back through the session's outbox. When the
//! stream ends, for whatever reason, the worker's leases are requeued at
//! once.
//!
//! The welcome offers the worker a results connection (see
//! [`crate::values`]): results with values then come there, read by a task
//! of the session's, and are reported to the scheduler just as results in
//! the session are. The two are one session: when either breaks, both end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use farm_net::side_connection::{ACCEPTED, Purpose};
use farm_net::wire::{Encoded, FrameBody, MessageReader, Payload, server};
use farm_proto::error::to_status;
use farm_proto::v1;
use farm_proto::v1::worker_message::Kind;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tonic::Status;
use tonic::body::Body;
use tracing::Instrument;

use super::{Hub, SESSION_QUEUE, Session, token_from_message};
use crate::scheduler::{ChunkReport, Departure, Rejection, Scheduler, WorkerId};
use crate::validate;
use crate::values::ChunkValues;
use crate::values::from_worker::next_result;

/// How long a new session may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The most leases one pull may ask for.
const MAX_PULL_SLOTS: u32 = 64;

/// How long a results connection may pause in the middle of a result.
const RESULT_STALL: Duration = Duration::from_secs(60);

/// How long a worker that closed its session may take to finish sending
/// on its results connection, which it closes first.
const RESULTS_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct WorkersApi {
    hub: Arc<Hub>,
}

impl WorkersApi {
    pub fn new(hub: Arc<Hub>) -> WorkersApi {
        WorkersApi { hub }
    }
}

impl WorkersApi {
    /// `Session`: welcomes the worker and serves its session.
    pub(super) async fn session(&self, request: http::Request<Body>) -> http::Response<Body> {
        match self.open_session(request).await {
            Ok(body) => server::response(body),
            Err(status) => status.into_http(),
        }
    }

    async fn open_session(&self, request: http::Request<Body>) -> Result<FrameBody, Status> {
        let peer = server::remote_addr(&request)
            .map_or_else(|| "in-process".to_owned(), |a| a.to_string());
        let mut inbound = MessageReader::new(request.into_body());
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10 s"))??;
        let Some(v1::WorkerMessage {
            kind: Some(Kind::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message of a worker session must be a hello",
            ));
        };
        let info = validate::worker_hello(&hello).map_err(|e| to_status(&e))?;
        // In process, calls still arrive after shutdown began; a session
        // opened now would start a task nobody waits for.
        if self.hub.shutdown_token().is_cancelled() {
            return Err(Status::unavailable("the coordinator is shutting down"));
        }

        let (outbox, body) = FrameBody::response(SESSION_QUEUE);
        let closed = self.hub.shutdown_token().child_token();
        let config = self.hub.config();
        let (heartbeat_ms, lease_timeout_ms) = (
            millis(config.heartbeat_interval),
            millis(config.scheduler.lease_timeout),
        );
        let (worker, mut results) = {
            let mut state = self.hub.lock();
            let worker = state
                .scheduler
                .register_worker(info.clone(), Instant::now());
            let (results_token, results) = self.offer_results_connection(worker);
            let welcome = v1::Welcome {
                worker_id: worker.0,
                heartbeat_interval_ms: heartbeat_ms,
                lease_timeout_ms,
                results_token,
            };
            // The queue is empty: the welcome always fits, and goes first.
            let welcome = v1::CoordinatorMessage {
                kind: Some(v1::coordinator_message::Kind::Welcome(welcome)),
            };
            let _ = outbox.try_send(Encoded::message(&welcome));
            state.sessions.insert(
                worker,
                Session {
                    outbox,
                    closed: closed.clone(),
                    paused_since: None,
                    pinged_at: None,
                },
            );
            (worker, results)
        };
        tracing::info!(%worker, name = %info.name, threads = info.threads, %peer, "worker connected");

        let hub = self.hub.clone();
        let span = tracing::info_span!("worker_session", %worker);
        self.hub.tasks().spawn(
            async move {
                let reason = read_session(&hub, worker, &mut inbound, &mut results, &closed).await;
                if let Some(offers) = hub.value_offers() {
                    offers.withdraw(Purpose::ChunkResults, worker.0);
                }
                drop(results);
                hub.worker_gone(worker);
                tracing::info!(%worker, %reason, "worker disconnected");
            }
            .instrument(span),
        );
        Ok(body)
    }

    /// A results connection for `worker`, if this coordinator can take
    /// one: the token for its welcome (empty if not) and where it will
    /// arrive.
    fn offer_results_connection(&self, worker: WorkerId) -> (bytes::Bytes, ResultsLink) {
        let Some(offers) = self.hub.value_offers() else {
            return (bytes::Bytes::new(), ResultsLink::None);
        };
        match offers.offer(Purpose::ChunkResults, worker.0) {
            Ok((token, arrival)) => (
                bytes::Bytes::copy_from_slice(&token),
                ResultsLink::Offered(arrival),
            ),
            Err(error) => {
                tracing::warn!(%error, "results go in the session");
                (bytes::Bytes::new(), ResultsLink::None)
            }
        }
    }
}

/// A session's results connection, as far as it got.
#[derive(Debug)]
enum ResultsLink {
    None,
    Offered(oneshot::Receiver<TcpStream>),
    /// Being read by a task of its own, which ends with `Err` if the
    /// connection broke.
    Reading(AbortOnDropHandle<Result<(), String>>),
    /// Closed by the worker (or never claimed).
    Closed,
}

impl ResultsLink {
    /// Waits for the next change: the connection arriving (its reader is
    /// then started) or its reader ending. `Err` when it broke. Cancel
    /// safe: nothing changes until a wait completes.
    async fn advance(&mut self, hub: &Arc<Hub>, worker: WorkerId) -> Result<(), String> {
        match self {
            ResultsLink::Offered(arrival) => {
                *self = match arrival.await {
                    Ok(stream) => {
                        let reader = hub.tasks().spawn(read_results(hub.clone(), worker, stream));
                        ResultsLink::Reading(AbortOnDropHandle::new(reader))
                    }
                    Err(_) => ResultsLink::Closed,
                };
                Ok(())
            }
            ResultsLink::Reading(reader) => {
                let ended = reader.await;
                *self = ResultsLink::Closed;
                match ended {
                    Ok(ended) => ended,
                    Err(error) => Err(format!("the results reader failed: {error}")),
                }
            }
            ResultsLink::None | ResultsLink::Closed => std::future::pending().await,
        }
    }

    /// After the worker closed its session: waits (a little) for it to
    /// finish sending on its results connection, which it closes first.
    async fn finish(&mut self, hub: &Arc<Hub>, worker: WorkerId) {
        if let ResultsLink::Reading(_) = self {
            let finished = tokio::time::timeout(RESULTS_CLOSE_TIMEOUT, self.advance(hub, worker));
            match finished.await {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => tracing::warn!(%worker, %reason, "results lost at close"),
                Err(_) => {
                    tracing::warn!(%worker, "the results connection stayed open after the session closed")
                }
            }
        }
    }
}

/// Reads results off a worker's results connection into the scheduler
/// until the worker closes it; `Err` says why it broke.
async fn read_results(
    hub: Arc<Hub>,
    worker: WorkerId,
    mut stream: TcpStream,
) -> Result<(), String> {
    stream
        .write_all(&[ACCEPTED])
        .await
        .map_err(|error| format!("the results connection broke: {error}"))?;
    tracing::debug!(%worker, "results connection open");
    loop {
        match next_result(&mut stream, RESULT_STALL).await {
            Ok(Some(received)) => hub.with_scheduler(|s, now| {
                report(s, worker, received.result, received.values, now)
            })?,
            Ok(None) => return Ok(()),
            Err(error) => return Err(error.to_string()),
        }
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Feeds a session's messages to the scheduler until it ends; returns why.
async fn read_session(
    hub: &Arc<Hub>,
    worker: WorkerId,
    inbound: &mut MessageReader<Body>,
    results: &mut ResultsLink,
    closed: &CancellationToken,
) -> String {
    loop {
        let message = tokio::select! {
            message = inbound.message_with_payload::<v1::WorkerMessage>() => message,
            advanced = results.advance(hub, worker) => match advanced {
                Ok(()) => continue,
                Err(reason) => return reason,
            },
            () = closed.cancelled() => return "session closed by the coordinator".to_owned(),
        };
        match message {
            Ok(Some((message, values))) => {
                if let Err(reason) = handle(hub, worker, message, values) {
                    return reason;
                }
            }
            Ok(None) => {
                results.finish(hub, worker).await;
                return "worker closed the session".to_owned();
            }
            Err(status) => return format!("session broke: {}", status.message()),
        }
    }
}

/// Acts on one message; `values` are a single result's, taken out of it.
fn handle(
    hub: &Hub,
    worker: WorkerId,
    message: v1::WorkerMessage,
    values: Payload,
) -> Result<(), String> {
    let Some(kind) = message.kind else {
        return Err("empty worker message".to_owned());
    };
    match kind {
        Kind::Hello(_) => return Err("a second hello in one session".to_owned()),
        Kind::Pull(pull) => {
            let slots = pull.slots.min(MAX_PULL_SLOTS);
            hub.with_scheduler(|s, now| s.pull(worker, slots, now));
        }
        Kind::Heartbeat(_) => hub.with_scheduler(|s, now| s.heard_from(worker, now)),
        Kind::Pong(pong) => hub.pong(worker, pong.sent_us),
        Kind::Drain(_) => {
            tracing::info!(%worker, "worker is draining");
            hub.with_scheduler(|s, now| s.drain(worker, now));
        }
        Kind::Returned(returned) => {
            let tokens: Vec<_> = returned
                .tokens
                .iter()
                .filter_map(|t| token_from_message(Some(t)))
                .collect();
            hub.with_scheduler(|s, now| s.return_leases(worker, &tokens, now));
        }
        Kind::Result(result) => {
            let values = ChunkValues::Memory(values);
            hub.with_scheduler(|s, now| report(s, worker, result, values, now))?;
        }
        Kind::Results(batch) => {
            // One lock for the whole batch: this is what makes tiny chunks
            // cheap.
            hub.with_scheduler(|s, now| {
                for mut result in batch.results {
                    let values = Payload::from(std::mem::take(&mut result.values_le)).into();
                    report(s, worker, result, values, now)?;
                }
                s.pull(worker, batch.pull.min(MAX_PULL_SLOTS), now);
                Ok::<(), String>(())
            })?;
        }
        Kind::Failure(failure) => {
            let token = token_from_message(failure.token.as_ref())
                .ok_or_else(|| "a failure without a lease token".to_owned())?;
            tracing::warn!(%worker, %token, retryable = failure.retryable, error = %failure.message, "chunk failed");
            let _ = hub.with_scheduler(|s, now| {
                s.fail(worker, token, failure.message, failure.retryable, now)
            });
        }
    }
    Ok(())
}

/// Hands one result, its values apart, to the scheduler; a result without
/// a token ends the session.
fn report(
    s: &mut Scheduler<ChunkValues>,
    worker: WorkerId,
    result: v1::ChunkResult,
    values: ChunkValues,
    now: Instant,
) -> Result<(), String> {
    let token = token_from_message(result.token.as_ref())
        .ok_or_else(|| "a result without a lease token".to_owned())?;
    let compute = Duration::from_micros(result.compute_us);
    let report = ChunkReport {
        summary: result.chunk_summary(),
        values: (!values.is_empty()).then_some(values),
        compute,
    };
    match s.complete(worker, token, report, now) {
        Ok(()) => {}
        Err(Rejection::Stale) => tracing::debug!(%worker, %token, "stale result rejected"),
        Err(Rejection::Malformed) => tracing::warn!(%worker, %token, "malformed result rejected"),
    }
    Ok(())
}

impl Hub {
    /// The session ended: forget its outbox and requeue its leases.
    fn worker_gone(&self, worker: WorkerId) {
        let mut state = self.lock();
        state.end_session(worker, Departure::Lost, Instant::now());
        state.apply_effects();
    }
}
