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

use farm_net::display::{LONG, shown_up_to};
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
use crate::modules::SessionModules;
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

/// How long a session that broke the protocol may take to take in the
/// status saying so.
const BREACH_SEND_TIMEOUT: Duration = Duration::from_secs(5);

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
                    modules: SessionModules::default(),
                },
            );
            (worker, results)
        };
        tracing::info!(%worker, name = %info.name, threads = info.threads, %peer, "worker connected");

        let hub = self.hub.clone();
        let span = tracing::info_span!("worker_session", %worker, worker_name = %info.name);
        self.hub.tasks().spawn(
            async move {
                let end = read_session(&hub, worker, &mut inbound, &mut results, &closed).await;
                if let Some(offers) = hub.value_offers() {
                    offers.withdraw(Purpose::ChunkResults, worker.0);
                }
                drop(results);
                match end {
                    SessionEnd::Breach(breach) => {
                        tracing::warn!(%worker, %breach, "worker broke the protocol");
                        refuse(&hub, worker, breach).await;
                        hub.worker_gone(worker);
                    }
                    SessionEnd::Closed(reason) => {
                        hub.worker_gone(worker);
                        tracing::info!(%worker, %reason, "worker disconnected");
                    }
                }
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
            Ok(Some(received)) => hub
                .with_scheduler(|s, now| report(s, worker, received.result, received.values, now))
                .map_err(|breach| breach.to_string())?,
            Ok(None) => return Ok(()),
            Err(error) => return Err(error.to_string()),
        }
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Why a session ended.
#[derive(Debug)]
enum SessionEnd {
    /// The worker broke the protocol: the session ends with
    /// INVALID_ARGUMENT saying how.
    Breach(Breach),
    /// It closed, broke or was closed; the reason is for the log.
    Closed(String),
}

/// A message a worker must not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Breach {
    #[error("an empty worker message")]
    Empty,
    #[error("a second hello in one session")]
    SecondHello,
    #[error("a failure without a lease token")]
    FailureWithoutToken,
    #[error("a result without a lease token")]
    ResultWithoutToken,
}

/// Feeds a session's messages to the scheduler until it ends; returns why.
async fn read_session(
    hub: &Arc<Hub>,
    worker: WorkerId,
    inbound: &mut MessageReader<Body>,
    results: &mut ResultsLink,
    closed: &CancellationToken,
) -> SessionEnd {
    loop {
        let message = tokio::select! {
            message = inbound.message_with_payload::<v1::WorkerMessage>() => message,
            advanced = results.advance(hub, worker) => match advanced {
                Ok(()) => continue,
                Err(reason) => return SessionEnd::Closed(reason),
            },
            () = closed.cancelled() => {
                return SessionEnd::Closed("session closed by the coordinator".to_owned());
            }
        };
        match message {
            Ok(Some((message, values))) => {
                if let Err(breach) = handle(hub, worker, message, values) {
                    return SessionEnd::Breach(breach);
                }
            }
            Ok(None) => {
                results.finish(hub, worker).await;
                return SessionEnd::Closed("worker closed the session".to_owned());
            }
            Err(status) => {
                return SessionEnd::Closed(format!(
                    "session broke: {}",
                    shown_up_to(status.message(), LONG)
                ));
            }
        }
    }
}

/// Ends `worker`'s session with a status naming `breach`, after what is
/// already queued for it.
async fn refuse(hub: &Hub, worker: WorkerId, breach: Breach) {
    let outbox = hub.lock().sessions.get(&worker).map(|s| s.outbox.clone());
    if let Some(outbox) = outbox {
        let status = Status::invalid_argument(format!("protocol breach: {breach}"));
        // A worker that reads nothing does not get to hold the session.
        let _ = tokio::time::timeout(BREACH_SEND_TIMEOUT, outbox.send(Err(status))).await;
    }
}

/// Acts on one message; `values` are a single result's, taken out of it.
fn handle(
    hub: &Hub,
    worker: WorkerId,
    message: v1::WorkerMessage,
    values: Payload,
) -> Result<(), Breach> {
    let Some(kind) = message.kind else {
        return Err(Breach::Empty);
    };
    match kind {
        Kind::Hello(_) => return Err(Breach::SecondHello),
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
                Ok::<(), Breach>(())
            })?;
        }
        Kind::Failure(failure) => {
            let token =
                token_from_message(failure.token.as_ref()).ok_or(Breach::FailureWithoutToken)?;
            // Kept as it may be shown, in this log and to the job's client.
            let message = shown_up_to(&failure.message, LONG).to_string();
            tracing::warn!(%worker, %token, retryable = failure.retryable, error = %message, "chunk failed");
            let _ =
                hub.with_scheduler(|s, now| s.fail(worker, token, message, failure.retryable, now));
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
) -> Result<(), Breach> {
    let token = token_from_message(result.token.as_ref()).ok_or(Breach::ResultWithoutToken)?;
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
