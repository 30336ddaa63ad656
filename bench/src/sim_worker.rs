//! A simulated worker for the scheduling benchmark: one
//! `WorkerService.Session` that answers every lease at once with a
//! shape-valid result (one leaf sum and 16 digest bytes per 4096
//! elements, a min and a max), prepared in advance, so the coordinator's
//! own cost per chunk is all that is measured.
//!
//! It speaks the protocol the way `worker/src/session.rs` does: hello,
//! pull the leases it holds, then for each grant either one result and
//! one pull per lease ([`Behaviour::batched`] false) or one
//! `ChunkResults` carrying every answer and the pull for them (true), and
//! a heartbeat when it has been quiet. Keep the two in step when the
//! protocol changes.
//!
//! With [`Behaviour::values`] it also sends the values of a job that
//! streams them (zeros, from one buffer) on a results connection, as the
//! real worker does (`worker/src/results_connection.rs`): the streaming
//! bench uses it to time the coordinator's path to the client with no
//! computing on the machine.

use std::time::Duration;

use bytes::Bytes;
use farm_catalog::grid::leaf_count;
use farm_net::side_connection::{ACCEPTED, Hello, Purpose, result_head};
use farm_proto::v1::coordinator_message::Kind as Incoming;
use farm_proto::v1::worker_message::Kind as Outgoing;
use farm_proto::v1::worker_service_client::WorkerServiceClient;
use farm_proto::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION, v1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The most slots the coordinator grants per pull; larger demands are
/// sent as several.
const MAX_PULL_SLOTS: u32 = 64;

/// Messages queued for the coordinator.
const OUTBOX: usize = 64;

/// How long the coordinator may take to open a session.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the coordinator may take to accept one result's values.
const WRITE_STALL: Duration = Duration::from_secs(60);

/// The largest chunk answered from the prepared digests; longer leases
/// get a fresh buffer.
const PREPARED_LEAVES: usize = 1024;

/// How a simulated worker talks to the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behaviour {
    /// Leases it holds at once (the real worker's prefetch is 2; it holds
    /// more when chunks are tiny).
    pub hold: u32,
    /// Answer a grant with one `ChunkResults` instead of a result and a
    /// pull per lease.
    pub batched: bool,
    /// Send made-up values for leases that stream them, on a results
    /// connection (answers are then one result and one pull per lease).
    pub values: bool,
}

/// Made-up values are reported as computed at this rate, about a real
/// worker's, so the coordinator sizes chunks as it would for one.
const REPORTED_ELEMENTS_PER_US: u64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the coordinator did not open the session or take a result in time")]
    Timeout,
    #[error("the session failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("the coordinator did not welcome the simulated worker")]
    NoWelcome,
    #[error("the results connection failed: {0}")]
    Results(#[from] std::io::Error),
}

/// Runs one simulated worker on `channel` (to the coordinator at
/// `address`) until `stop` is cancelled or the coordinator ends the
/// session; returns how many results it sent.
pub async fn run(
    channel: Channel,
    address: String,
    name: String,
    behaviour: Behaviour,
    stop: CancellationToken,
) -> Result<u64, SimError> {
    let (outbox, requests) = mpsc::channel(OUTBOX);
    let hello = Outgoing::Hello(v1::WorkerHello {
        protocol_version: PROTOCOL_VERSION,
        name,
        threads: 1,
    });
    let _ = outbox.try_send(message(hello));
    let mut client = WorkerServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let opened = tokio::time::timeout(OPEN_TIMEOUT, client.session(ReceiverStream::new(requests)))
        .await
        .map_err(|_| SimError::Timeout)??;
    let mut inbound = opened.into_inner();
    let welcome = match tokio::time::timeout(OPEN_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(v1::CoordinatorMessage {
            kind: Some(Incoming::Welcome(welcome)),
        }))) => welcome,
        _ => return Err(SimError::NoWelcome),
    };
    let mut results_connection = match behaviour.values {
        true => Some(open_results(&address, &welcome).await?),
        false => None,
    };
    let mut values = Vec::new();
    for slots in pulls(behaviour.hold) {
        let _ = outbox.send(message(pull(slots))).await;
    }

    let digests = Bytes::from(vec![0u8; 16 * PREPARED_LEAVES]);
    let every = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(50)));
    let mut heartbeat = tokio::time::interval(every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut answered = 0;
    loop {
        tokio::select! {
            incoming = inbound.message() => {
                let Ok(Some(incoming)) = incoming else { return Ok(answered) };
                let Some(Incoming::Grant(grant)) = incoming.kind else { continue };
                let granted = u32::try_from(grant.leases.len()).unwrap_or(u32::MAX);
                let (with_values, rest): (Vec<_>, Vec<_>) = grant
                    .leases
                    .iter()
                    .partition(|l| l.stream_values && results_connection.is_some());
                if let Some(connection) = &mut results_connection {
                    for lease in &with_values {
                        send_values(connection, lease, &digests, &mut values).await?;
                    }
                }
                let mut messages: Vec<_> = with_values.iter().map(|_| pull(1)).collect();
                let results: Vec<_> = rest.into_iter().map(|l| answer(l, &digests)).collect();
                let in_session = u32::try_from(results.len()).unwrap_or(u32::MAX);
                if results.is_empty() {
                    // Every lease was answered on the results connection.
                } else if behaviour.batched {
                    let mut slots = pulls(in_session);
                    let first = slots.next().unwrap_or(0);
                    messages.push(Outgoing::Results(v1::ChunkResults { results, pull: first }));
                    messages.extend(slots.map(pull));
                } else {
                    for result in results {
                        messages.push(Outgoing::Result(result));
                        messages.push(pull(1));
                    }
                }
                for kind in messages {
                    if outbox.send(message(kind)).await.is_err() {
                        return Ok(answered);
                    }
                }
                answered += u64::from(granted);
            }
            _ = heartbeat.tick() => {
                let _ = outbox.send(message(Outgoing::Heartbeat(v1::Heartbeat {}))).await;
            }
            () = stop.cancelled() => return Ok(answered),
        }
    }
}

/// Opens a results connection with the session's token.
async fn open_results(address: &str, welcome: &v1::Welcome) -> Result<TcpStream, SimError> {
    let token = (&welcome.results_token[..])
        .try_into()
        .map_err(|_| std::io::Error::other("the welcome offers no results connection"))?;
    let hello = Hello {
        purpose: Purpose::ChunkResults,
        id: welcome.worker_id,
        token,
        credential: None,
    };
    let opening = async {
        let mut stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&hello.encode()).await?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await?;
        if answer[0] != ACCEPTED {
            return Err(std::io::Error::other("the results connection was refused"));
        }
        Ok(stream)
    };
    let stream = tokio::time::timeout(OPEN_TIMEOUT, opening)
        .await
        .map_err(|_| SimError::Timeout)??;
    Ok(stream)
}

/// Sends `lease`'s result and made-up values (zeros from `values`, grown
/// to the largest lease) on the results connection.
async fn send_values(
    connection: &mut TcpStream,
    lease: &v1::ChunkLease,
    digests: &Bytes,
    values: &mut Vec<u8>,
) -> Result<(), SimError> {
    let len = usize::try_from(lease.len * 8).map_err(std::io::Error::other)?;
    if values.len() < len {
        values.resize(len, 0);
    }
    let mut result = answer(lease, digests);
    result.compute_us = (lease.len / REPORTED_ELEMENTS_PER_US).max(1);
    let sending = async {
        connection.write_all(&result_head(&result, len)).await?;
        connection.write_all(&values[..len]).await
    };
    tokio::time::timeout(WRITE_STALL, sending)
        .await
        .map_err(|_| SimError::Timeout)??;
    Ok(())
}

/// A result of the right shape for `lease`, with made-up values.
fn answer(lease: &v1::ChunkLease, digests: &Bytes) -> v1::ChunkResult {
    let leaves = usize::try_from(leaf_count(lease.len)).unwrap_or(usize::MAX);
    let leaf_digests = if leaves <= PREPARED_LEAVES {
        digests.slice(..16 * leaves)
    } else {
        Bytes::from(vec![0u8; 16 * leaves])
    };
    v1::ChunkResult {
        token: lease.token,
        leaf_sums: vec![1.0; leaves],
        leaf_digests,
        min: 0.0,
        max: 1.0,
        values_le: Bytes::new(),
        compute_us: 1,
    }
}

/// `slots` cut into pulls the coordinator grants in full.
fn pulls(slots: u32) -> impl Iterator<Item = u32> {
    (0..slots.div_ceil(MAX_PULL_SLOTS))
        .map(move |i| (slots - i * MAX_PULL_SLOTS).min(MAX_PULL_SLOTS))
}

fn pull(slots: u32) -> Outgoing {
    Outgoing::Pull(v1::PullRequest { slots })
}

fn message(kind: Outgoing) -> v1::WorkerMessage {
    v1::WorkerMessage { kind: Some(kind) }
}
