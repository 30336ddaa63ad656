//! One session with the coordinator, from hello to drain or disconnect.
//!
//! The worker keeps `prefetch` leases in hand: one computing on the pool,
//! the rest queued, so the threads go from one chunk straight to the next
//! while the previous result is still being sent. Each lease that leaves
//! its hands (reported, failed or revoked) is replaced by pulling one more,
//! unless it is draining.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use farm_catalog::{ChunkOutput, Function, evaluate_reusing};
use farm_net::peer;
use farm_net::transport::Connection;
use farm_net::wire::{self, Encoded, FrameBody, FrameSender, MessageReader};
use farm_proto::error::describe;
use farm_proto::method;
use farm_proto::v1::coordinator_message::Kind as Incoming;
use farm_proto::v1::worker_message::Kind as Outgoing;
use farm_proto::{PROTOCOL_VERSION, v1};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::{Code, Status};

use crate::buffers;
use crate::compute::{ComputePool, catch_panic};
use crate::config::WorkerConfig;
use crate::faults::Faults;
use crate::results_connection::ResultsConnection;

/// Messages queued for the coordinator: results wait here while the
/// network is busy, and the loop waits when it is full.
const OUTBOX: usize = 64;

/// How long the coordinator may take to answer a new session.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait, after our last message, for the coordinator to close
/// the session (proof it read everything).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest chunk this worker computes, keeping its memory bounded
/// whatever a coordinator asks: values for 4 Mi elements are 32 MiB; a
/// summary-only chunk keeps 40 bytes per 4096 elements.
const MAX_STREAMED_CHUNK: u64 = 1 << 22;
const MAX_CHUNK: u64 = 1 << 32;

/// Small leases are computed back to back in batches of about this many
/// elements (~0.1 ms of work), and reported in one message, so tiny chunks
/// cost one pool hand-off and one message per batch instead of per chunk.
const BATCH_ELEMENTS: u64 = 1 << 18;

/// Results carrying at least this many bytes of values are sent one per
/// message rather than batched, so their values are not copied.
const SEND_ALONE_BYTES: usize = 64 << 10;

/// The most leases a worker holds at once, however small.
const MAX_HELD: u32 = 256;

/// How a session that was established ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// We drained: every lease was reported or handed back.
    Drained,
    /// The session broke; reconnect.
    Lost(String),
}

/// A session that could not be established.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// Worth retrying: the coordinator is down, restarting or unreachable.
    #[error("{0}")]
    Unreachable(String),
    /// Retrying cannot help (another protocol version, or not a coordinator).
    #[error("{0}")]
    Refused(String),
}

/// A computed chunk, or why it could not be computed.
type ChunkAnswer = (v1::ChunkLease, Duration, Result<ChunkOutput, ChunkFailure>);
type Computing = Pin<Box<dyn Future<Output = Vec<ChunkAnswer>> + Send>>;

#[derive(Debug)]
struct ChunkFailure {
    message: String,
    retryable: bool,
}

pub(crate) async fn run(
    connection: Connection,
    config: &WorkerConfig,
    pool: &Arc<ComputePool>,
    drain: &CancellationToken,
    connected: &watch::Sender<bool>,
) -> Result<SessionEnd, SessionError> {
    let (outbox, requests) = FrameBody::request(OUTBOX);
    let hello = Outgoing::Hello(v1::WorkerHello {
        protocol_version: PROTOCOL_VERSION,
        name: config.name.clone(),
        threads: u32::try_from(pool.threads()).unwrap_or(u32::MAX),
    });
    // The queue is new and has room.
    let _ = outbox.try_send(encode(hello));
    let opened = tokio::time::timeout(
        OPEN_TIMEOUT,
        wire::call::open(connection, method::WORKER_SESSION, requests),
    )
    .await
    .map_err(|_| SessionError::Unreachable("no answer within 10 s".to_owned()))?;
    let mut inbound = match opened {
        Ok(inbound) => inbound,
        Err(status) => return Err(classify_with_probe(&status, &config.coordinator).await),
    };
    let welcome = match tokio::time::timeout(OPEN_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(v1::CoordinatorMessage {
            kind: Some(Incoming::Welcome(welcome)),
        }))) => welcome,
        Ok(Err(status)) => return Err(classify_with_probe(&status, &config.coordinator).await),
        _ => {
            return Err(SessionError::Refused(format!(
                "{} did not welcome this worker; is it a farm coordinator?",
                config.coordinator
            )));
        }
    };
    connected.send_replace(true);
    tracing::info!(
        worker_id = welcome.worker_id,
        coordinator = %config.coordinator,
        threads = pool.threads(),
        "connected"
    );
    let results = open_results_connection(config, &welcome).await;
    let session = Session {
        config,
        pool,
        outbox,
        results,
        queue: VecDeque::new(),
        running: None,
        running_tokens: Vec::new(),
        revoked_running: Vec::new(),
        promised: 0,
        typical_len: None,
        draining: false,
    };
    Ok(session.serve(inbound, &welcome, drain).await)
}

/// The results connection the welcome offered, if it did and it opens;
/// otherwise every result goes in the session.
async fn open_results_connection(
    config: &WorkerConfig,
    welcome: &v1::Welcome,
) -> Option<ResultsConnection> {
    if welcome.results_token.is_empty() {
        return None;
    }
    let Ok(token) = welcome.results_token.as_ref().try_into() else {
        tracing::warn!(
            len = welcome.results_token.len(),
            "ignoring a results token of the wrong length; results go in the session"
        );
        return None;
    };
    match ResultsConnection::open(&config.coordinator, welcome.worker_id, token).await {
        Ok(connection) => Some(connection),
        Err(error) => {
            tracing::warn!(%error, "cannot open a results connection; results go in the session");
            None
        }
    }
}

/// Like [`classify`]; when the call merely broke, asks the peer whether
/// it is a coordinator at all, since hyper does not always say.
async fn classify_with_probe(status: &Status, coordinator: &str) -> SessionError {
    let classified = classify(status, coordinator);
    if !matches!(classified, SessionError::Unreachable(_)) {
        return classified;
    }
    match peer::not_a_coordinator(status, coordinator).await {
        Some(reason) => not_a_coordinator(coordinator, &reason),
        None => classified,
    }
}

/// Tells a refusal from a passing failure.
fn classify(status: &Status, coordinator: &str) -> SessionError {
    if let Some(reason) = peer::not_a_coordinator_by_status(status) {
        return not_a_coordinator(coordinator, &reason);
    }
    match status.code() {
        Code::FailedPrecondition | Code::InvalidArgument => {
            SessionError::Refused(status.message().to_owned())
        }
        _ => SessionError::Unreachable(describe(status)),
    }
}

fn not_a_coordinator(coordinator: &str, reason: &peer::NotACoordinator) -> SessionError {
    SessionError::Refused(format!(
        "{coordinator} is not a farm coordinator ({reason})"
    ))
}

struct Session<'a> {
    config: &'a WorkerConfig,
    pool: &'a Arc<ComputePool>,
    outbox: FrameSender,
    /// Where results with values go, if the coordinator offered it.
    results: Option<ResultsConnection>,
    queue: VecDeque<v1::ChunkLease>,
    running: Option<Computing>,
    /// Tokens of the batch on the pool.
    running_tokens: Vec<v1::LeaseToken>,
    /// Of those, the ones the coordinator no longer wants.
    revoked_running: Vec<v1::LeaseToken>,
    /// Leases held plus leases asked for and not yet granted.
    promised: u32,
    /// Typical lease length, which decides how many leases to hold.
    typical_len: Option<f64>,
    draining: bool,
}

impl Session<'_> {
    async fn serve(
        mut self,
        mut inbound: MessageReader<Body>,
        welcome: &v1::Welcome,
        drain: &CancellationToken,
    ) -> SessionEnd {
        let heartbeat_every =
            Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(50)));
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_deadline: Option<Instant> = None;
        // Never cancelled when there is no results connection.
        let results_ended = self
            .results
            .as_ref()
            .map(ResultsConnection::ended)
            .unwrap_or_default();
        if !drain.is_cancelled() {
            let slots = self.top_up();
            if slots > 0 {
                self.send(Outgoing::Pull(v1::PullRequest { slots })).await;
            }
        }
        loop {
            if self.draining && self.running.is_none() {
                return self.close(inbound).await;
            }
            let grace_over = async {
                match drain_deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = inbound.message::<v1::CoordinatorMessage>() => match message {
                    Ok(Some(message)) => self.receive(message).await,
                    Ok(None) => return SessionEnd::Lost("the coordinator closed the session".to_owned()),
                    Err(status) => return SessionEnd::Lost(describe(&status)),
                },
                answers = async {
                    match self.running.as_mut() {
                        Some(computing) => computing.await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.running = None;
                    self.running_tokens.clear();
                    let revoked = std::mem::take(&mut self.revoked_running);
                    self.start_next();
                    self.report(answers, &revoked).await;
                }
                _ = heartbeat.tick() => self.send(Outgoing::Heartbeat(v1::Heartbeat {})).await,
                () = results_ended.cancelled() => {
                    let reason = match self.results.take() {
                        Some(results) => results.why_ended().await,
                        None => "the results connection ended".to_owned(),
                    };
                    return SessionEnd::Lost(reason);
                }
                () = drain.cancelled(), if !self.draining => {
                    drain_deadline = Some(Instant::now() + self.config.drain_grace);
                    self.begin_drain().await;
                }
                () = grace_over => {
                    tracing::warn!(grace = ?self.config.drain_grace, "the running chunks did not finish within the drain grace; handing them back");
                    let tokens = std::mem::take(&mut self.running_tokens);
                    if !tokens.is_empty() {
                        self.send(Outgoing::Returned(v1::ReturnLeases { tokens })).await;
                    }
                    self.running = None;
                    return self.close(inbound).await;
                }
            }
        }
    }

    async fn receive(&mut self, message: v1::CoordinatorMessage) {
        match message.kind {
            Some(Incoming::Grant(grant)) => {
                let mut surplus = Vec::new();
                for lease in grant.leases {
                    let Some(token) = lease.token else {
                        tracing::warn!("ignoring a lease without a token");
                        continue;
                    };
                    self.learn_len(lease.len);
                    // More than we could ever hold (a confused coordinator)
                    // goes straight back, like anything granted while
                    // draining.
                    let held = self.queue.len() + self.running_tokens.len();
                    if self.draining || held >= MAX_HELD as usize {
                        surplus.push(token);
                    } else {
                        self.queue.push_back(lease);
                    }
                }
                if !surplus.is_empty() {
                    self.promised = self.promised.saturating_sub(surplus.len() as u32);
                    self.send(Outgoing::Returned(v1::ReturnLeases { tokens: surplus }))
                        .await;
                }
                if self.running.is_none() {
                    self.start_next();
                }
                // Tiny chunks: hold more of them.
                self.pull_more().await;
            }
            Some(Incoming::Revoke(revoke)) => {
                let queued = self.queue.len();
                self.queue.retain(|l| {
                    l.token
                        .as_ref()
                        .is_none_or(|token| !revoke.tokens.contains(token))
                });
                let dropped = (queued - self.queue.len()) as u32;
                self.promised = self.promised.saturating_sub(dropped);
                for token in revoke.tokens {
                    if self.running_tokens.contains(&token) {
                        self.revoked_running.push(token);
                    }
                }
                self.pull_more().await;
            }
            Some(Incoming::Welcome(_)) | None => {
                tracing::debug!("ignoring an unexpected coordinator message");
            }
        }
    }

    /// How many leases to hold: `prefetch`, or more when chunks are so
    /// small that a batch of them is needed to keep the threads busy.
    fn wanted(&self) -> u32 {
        let batches = self
            .typical_len
            .map_or(0.0, |len| (2 * BATCH_ELEMENTS) as f64 / len.max(1.0));
        (batches.ceil() as u32).clamp(self.config.prefetch, MAX_HELD.max(self.config.prefetch))
    }

    fn learn_len(&mut self, len: u64) {
        let len = len as f64;
        self.typical_len = Some(match self.typical_len {
            None => len,
            Some(typical) => typical + 0.2 * (len - typical),
        });
    }

    /// Slots to ask for now so that held plus asked-for reaches
    /// [`Session::wanted`]; counts them as promised.
    fn top_up(&mut self) -> u32 {
        if self.draining {
            return 0;
        }
        let slots = self.wanted().saturating_sub(self.promised);
        self.promised += slots;
        slots
    }

    async fn pull_more(&mut self) {
        let slots = self.top_up();
        if slots > 0 {
            self.send(Outgoing::Pull(v1::PullRequest { slots })).await;
        }
    }

    /// Starts the next batch of queued leases on the compute pool: one
    /// lease, or several small ones computed back to back.
    fn start_next(&mut self) {
        let mut batch = Vec::new();
        let mut elements = 0u64;
        while let Some(lease) = self.queue.front() {
            if !batch.is_empty() && elements + lease.len > BATCH_ELEMENTS {
                break;
            }
            elements += lease.len;
            if let Some(lease) = self.queue.pop_front() {
                batch.push(lease);
            }
        }
        if batch.is_empty() {
            return;
        }
        self.running_tokens = batch.iter().filter_map(|l| l.token).collect();
        let pool = Arc::clone(self.pool);
        let faults = self.config.faults.clone();
        self.running = Some(Box::pin(async move {
            let leases = batch.clone();
            let computed = pool.run(move || compute_batch(&leases, &faults)).await;
            match computed {
                Ok(answers) => answers,
                // The pool lost the task: every lease of the batch failed.
                Err(err) => batch
                    .into_iter()
                    .map(|lease| {
                        let failure = ChunkFailure {
                            message: err.to_string(),
                            retryable: true,
                        };
                        (lease, Duration::ZERO, Err(failure))
                    })
                    .collect(),
            }
        }));
    }

    /// Sends a finished batch's results (and failures) with the pull that
    /// replaces its leases.
    async fn report(&mut self, answers: Vec<ChunkAnswer>, revoked: &[v1::LeaseToken]) {
        self.promised = self.promised.saturating_sub(answers.len() as u32);
        let mut results = Vec::new();
        for (lease, took, outcome) in answers {
            if lease.token.as_ref().is_some_and(|t| revoked.contains(t)) {
                tracing::debug!(token = ?lease.token, "dropping the result of a revoked lease");
                continue;
            }
            match outcome {
                Ok(output) => results.push(result_message(lease.token, output, took)),
                Err(failure) => {
                    tracing::warn!(token = ?lease.token, error = %failure.message, "chunk failed");
                    self.send(Outgoing::Failure(v1::ChunkFailure {
                        token: lease.token,
                        message: failure.message,
                        retryable: failure.retryable,
                    }))
                    .await;
                }
            }
        }
        // A result with many values goes in a message of its own, where
        // its values travel as the buffer they were computed in; in a
        // batch they would be copied.
        let (alone, mut results): (Vec<_>, Vec<_>) = results
            .into_iter()
            .partition(|r| r.values_le.len() >= SEND_ALONE_BYTES);
        for mut result in alone {
            match &self.results {
                Some(connection) => {
                    let values = std::mem::take(&mut result.values_le);
                    // A broken connection ends the session (see `serve`),
                    // and the result's lease goes to another worker.
                    let _ = connection.send(result, values).await;
                }
                None => self.send(Outgoing::Result(result)).await,
            }
        }
        let pull = self.top_up();
        if results.is_empty() {
            if pull > 0 {
                self.send(Outgoing::Pull(v1::PullRequest { slots: pull }))
                    .await;
            }
        } else if results.len() == 1 && pull == 0 {
            if let Some(result) = results.pop() {
                self.send(Outgoing::Result(result)).await;
            }
        } else {
            self.send(Outgoing::Results(v1::ChunkResults { results, pull }))
                .await;
        }
    }

    async fn begin_drain(&mut self) {
        self.draining = true;
        tracing::info!(
            queued = self.queue.len(),
            running = self.running_tokens.len(),
            "draining: finishing the running chunks and handing back the rest"
        );
        self.send(Outgoing::Drain(v1::DrainNotice {})).await;
        let tokens: Vec<v1::LeaseToken> = self.queue.drain(..).filter_map(|l| l.token).collect();
        if !tokens.is_empty() {
            self.send(Outgoing::Returned(v1::ReturnLeases { tokens }))
                .await;
        }
    }

    async fn send(&mut self, kind: Outgoing) {
        // A failed send means the session is gone; the inbound side of the
        // loop sees that and ends the session.
        let _ = self.outbox.send(encode(kind)).await;
    }

    /// Ends our side of the session and waits for the coordinator to close
    /// its side, which it does only after reading everything we sent.
    async fn close(self, mut inbound: MessageReader<Body>) -> SessionEnd {
        // Results first: the coordinator takes the session's end to mean
        // that everything was sent.
        if let Some(results) = self.results
            && let Err(error) = results.close(CLOSE_TIMEOUT).await
        {
            tracing::warn!(%error, "results may be lost: the results connection did not close cleanly");
        }
        drop(self.outbox);
        let closed =
            async { while let Ok(Some(_)) = inbound.message::<v1::CoordinatorMessage>().await {} };
        if tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
            tracing::warn!("the coordinator did not close the session within 5 s");
        }
        SessionEnd::Drained
    }
}

/// A message for the coordinator; a chunk's values travel as their own
/// frame, never copied. An error (a message over the size limit) fails the
/// session.
fn encode(kind: Outgoing) -> Result<Encoded, Status> {
    match kind {
        Outgoing::Result(result) => Encoded::chunk_result(result),
        kind => Encoded::message(&v1::WorkerMessage { kind: Some(kind) }),
    }
}

/// Computes a batch of leases one after another, timing each; runs on the
/// compute pool.
fn compute_batch(leases: &[v1::ChunkLease], faults: &Faults) -> Vec<ChunkAnswer> {
    leases
        .iter()
        .map(|lease| {
            let started = Instant::now();
            // Each lease catches its own panic, so a poison chunk fails
            // alone and not the rest of its batch.
            let outcome =
                catch_panic(|| faults.apply(lease, || compute(lease))).unwrap_or_else(|err| {
                    Err(ChunkFailure {
                        message: err.to_string(),
                        retryable: true,
                    })
                });
            (lease.clone(), started.elapsed(), outcome)
        })
        .collect()
}

/// Computes one lease.
fn compute(lease: &v1::ChunkLease) -> Result<ChunkOutput, ChunkFailure> {
    let permanent = |message: String| ChunkFailure {
        message,
        retryable: false,
    };
    let function = Function::from_name(&lease.function).map_err(|e| permanent(e.to_string()))?;
    let limit = if lease.stream_values {
        MAX_STREAMED_CHUNK
    } else {
        MAX_CHUNK
    };
    if lease.len > limit {
        return Err(permanent(format!(
            "a chunk of {} elements is over this worker's limit of {limit}",
            lease.len
        )));
    }
    let end = lease.offset.checked_add(lease.len).ok_or_else(|| {
        permanent(format!(
            "chunk at {} of length {} overflows",
            lease.offset, lease.len
        ))
    })?;
    let len = usize::try_from(lease.len).map_err(|_| {
        permanent(format!(
            "a chunk of {} elements is too long here",
            lease.len
        ))
    })?;
    let buffer = lease.stream_values.then(|| buffers::VALUES.take(len));
    evaluate_reusing(function, lease.job_start, lease.offset..end, buffer)
        .map_err(|e| permanent(e.to_string()))
}

fn result_message(
    token: Option<v1::LeaseToken>,
    output: ChunkOutput,
    took: Duration,
) -> v1::ChunkResult {
    let summary = output.summary;
    v1::ChunkResult {
        token,
        leaf_sums: summary.leaf_sums,
        leaf_digests: Bytes::from(summary.leaf_digests),
        min: summary.min,
        max: summary.max,
        values_le: output
            .values
            .map(|v| buffers::VALUES.into_bytes(v))
            .unwrap_or_default(),
        compute_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
    }
}
