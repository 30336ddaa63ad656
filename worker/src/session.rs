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
use farm_proto::error::{describe, peer_is_not_grpc};
use farm_proto::v1::coordinator_message::Kind as Incoming;
use farm_proto::v1::worker_message::Kind as Outgoing;
use farm_proto::v1::worker_service_client::WorkerServiceClient;
use farm_proto::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION, v1};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::buffers;
use crate::compute::ComputePool;
use crate::config::WorkerConfig;

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
type Computing = Pin<Box<dyn Future<Output = ChunkAnswer> + Send>>;

#[derive(Debug)]
struct ChunkFailure {
    message: String,
    retryable: bool,
}

pub(crate) async fn run(
    channel: Channel,
    config: &WorkerConfig,
    pool: &Arc<ComputePool>,
    drain: &CancellationToken,
    connected: &watch::Sender<bool>,
) -> Result<SessionEnd, SessionError> {
    let (outbox, requests) = mpsc::channel(OUTBOX);
    let hello = Outgoing::Hello(v1::WorkerHello {
        protocol_version: PROTOCOL_VERSION,
        name: config.name.clone(),
        threads: u32::try_from(pool.threads()).unwrap_or(u32::MAX),
    });
    send_now(&outbox, hello);
    let mut client = WorkerServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let opened = tokio::time::timeout(OPEN_TIMEOUT, client.session(ReceiverStream::new(requests)))
        .await
        .map_err(|_| SessionError::Unreachable("no answer within 10 s".to_owned()))?;
    let mut inbound = opened
        .map_err(|s| classify(&s, &config.coordinator))?
        .into_inner();
    let welcome = match tokio::time::timeout(OPEN_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(v1::CoordinatorMessage {
            kind: Some(Incoming::Welcome(welcome)),
        }))) => welcome,
        Ok(Err(status)) => return Err(classify(&status, &config.coordinator)),
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
    let session = Session {
        config,
        pool,
        outbox,
        queue: VecDeque::new(),
        running: None,
        running_lease: None,
        running_revoked: false,
        draining: false,
    };
    Ok(session.serve(inbound, &welcome, drain).await)
}

/// Tells a refusal from a passing failure.
fn classify(status: &Status, coordinator: &str) -> SessionError {
    if peer_is_not_grpc(status) {
        return SessionError::Refused(format!(
            "{coordinator} is not a farm coordinator ({})",
            describe(status)
        ));
    }
    match status.code() {
        Code::FailedPrecondition | Code::InvalidArgument => {
            SessionError::Refused(status.message().to_owned())
        }
        _ => SessionError::Unreachable(describe(status)),
    }
}

struct Session<'a> {
    config: &'a WorkerConfig,
    pool: &'a Arc<ComputePool>,
    outbox: mpsc::Sender<v1::WorkerMessage>,
    queue: VecDeque<v1::ChunkLease>,
    running: Option<Computing>,
    running_lease: Option<v1::LeaseToken>,
    /// The coordinator no longer wants the running chunk's result.
    running_revoked: bool,
    draining: bool,
}

impl Session<'_> {
    async fn serve(
        mut self,
        mut inbound: Streaming<v1::CoordinatorMessage>,
        welcome: &v1::Welcome,
        drain: &CancellationToken,
    ) -> SessionEnd {
        let heartbeat_every =
            Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(50)));
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_deadline: Option<Instant> = None;
        if !drain.is_cancelled() {
            self.send(Outgoing::Pull(v1::PullRequest {
                slots: self.config.prefetch,
            }))
            .await;
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
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.receive(message).await,
                    Ok(None) => return SessionEnd::Lost("the coordinator closed the session".to_owned()),
                    Err(status) => return SessionEnd::Lost(describe(&status)),
                },
                answer = async {
                    match self.running.as_mut() {
                        Some(computing) => computing.await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.running = None;
                    self.running_lease = None;
                    let revoked = std::mem::take(&mut self.running_revoked);
                    self.start_next();
                    self.report(answer, revoked).await;
                }
                _ = heartbeat.tick() => self.send(Outgoing::Heartbeat(v1::Heartbeat {})).await,
                () = drain.cancelled(), if !self.draining => {
                    drain_deadline = Some(Instant::now() + self.config.drain_grace);
                    self.begin_drain().await;
                }
                () = grace_over => {
                    tracing::warn!(grace = ?self.config.drain_grace, "the running chunk did not finish within the drain grace; handing it back");
                    if let Some(token) = self.running_lease.take() {
                        self.send(Outgoing::Returned(v1::ReturnLeases { tokens: vec![token] })).await;
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
                for lease in grant.leases {
                    if lease.token.is_none() {
                        tracing::warn!("ignoring a lease without a token");
                        continue;
                    }
                    // More than we asked for (a confused coordinator) goes
                    // straight back, like anything granted while draining.
                    let held = self.queue.len() + usize::from(self.running.is_some());
                    if self.draining || held >= self.config.prefetch as usize {
                        let tokens = lease.token.into_iter().collect();
                        self.send(Outgoing::Returned(v1::ReturnLeases { tokens }))
                            .await;
                    } else {
                        self.queue.push_back(lease);
                    }
                }
                if self.running.is_none() {
                    self.start_next();
                }
            }
            Some(Incoming::Revoke(revoke)) => {
                for token in revoke.tokens {
                    let queued = self.queue.len();
                    self.queue.retain(|l| l.token.as_ref() != Some(&token));
                    let dropped = queued - self.queue.len();
                    if self.running_lease.as_ref() == Some(&token) {
                        self.running_revoked = true;
                    }
                    for _ in 0..dropped {
                        self.pull_one().await;
                    }
                }
            }
            Some(Incoming::Welcome(_)) | None => {
                tracing::debug!("ignoring an unexpected coordinator message");
            }
        }
    }

    /// Starts the next queued chunk on the compute pool.
    fn start_next(&mut self) {
        let Some(lease) = self.queue.pop_front() else {
            return;
        };
        self.running_lease = lease.token;
        let pool = Arc::clone(self.pool);
        self.running = Some(Box::pin(async move {
            let started = Instant::now();
            let work = lease.clone();
            let outcome = pool
                .run(move || compute(&work))
                .await
                .unwrap_or_else(|err| {
                    Err(ChunkFailure {
                        message: err.to_string(),
                        retryable: true,
                    })
                });
            (lease, started.elapsed(), outcome)
        }));
    }

    async fn report(&mut self, (lease, took, outcome): ChunkAnswer, revoked: bool) {
        if revoked {
            tracing::debug!(token = ?lease.token, "dropping the result of a revoked lease");
        } else {
            let message = match outcome {
                Ok(output) => Outgoing::Result(result_message(lease.token, output, took)),
                Err(failure) => {
                    tracing::warn!(token = ?lease.token, error = %failure.message, "chunk failed");
                    Outgoing::Failure(v1::ChunkFailure {
                        token: lease.token,
                        message: failure.message,
                        retryable: failure.retryable,
                    })
                }
            };
            self.send(message).await;
        }
        self.pull_one().await;
    }

    async fn begin_drain(&mut self) {
        self.draining = true;
        tracing::info!(
            queued = self.queue.len(),
            running = self.running.is_some(),
            "draining: finishing the running chunk and handing back the rest"
        );
        self.send(Outgoing::Drain(v1::DrainNotice {})).await;
        let tokens: Vec<v1::LeaseToken> = self.queue.drain(..).filter_map(|l| l.token).collect();
        if !tokens.is_empty() {
            self.send(Outgoing::Returned(v1::ReturnLeases { tokens }))
                .await;
        }
    }

    async fn pull_one(&mut self) {
        if !self.draining {
            self.send(Outgoing::Pull(v1::PullRequest { slots: 1 }))
                .await;
        }
    }

    async fn send(&mut self, kind: Outgoing) {
        // A failed send means the session is gone; the inbound side of the
        // loop sees that and ends the session.
        let _ = self
            .outbox
            .send(v1::WorkerMessage { kind: Some(kind) })
            .await;
    }

    /// Ends our side of the session and waits for the coordinator to close
    /// its side, which it does only after reading everything we sent.
    async fn close(self, mut inbound: Streaming<v1::CoordinatorMessage>) -> SessionEnd {
        drop(self.outbox);
        let closed = async { while let Ok(Some(_)) = inbound.message().await {} };
        if tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
            tracing::warn!("the coordinator did not close the session within 5 s");
        }
        SessionEnd::Drained
    }
}

/// Queues a message on a fresh outbox (which has room).
fn send_now(outbox: &mpsc::Sender<v1::WorkerMessage>, kind: Outgoing) {
    let _ = outbox.try_send(v1::WorkerMessage { kind: Some(kind) });
}

/// Computes one lease; runs on the compute pool.
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
    let buffer = lease.stream_values.then(|| buffers::VALUES.take());
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
