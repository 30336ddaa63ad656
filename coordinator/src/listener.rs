//! The coordinator's port: every accepted connection is either HTTP/2 (the
//! gRPC services), a job's value connection or a worker's results
//! connection, told apart by its first bytes. HTTP/2 connections go on to
//! the gRPC server; the others to the job or worker session that offered
//! them ([`ValueOffers`]), once their hello's role token is admitted
//! (the same [`Admission`] as every gRPC call's, see [`crate::auth`]).

use std::sync::Arc;
use std::time::Duration;

use farm_net::auth::Admission;
use farm_net::side_connection::{HELLO_BYTES, Hello, UNAUTHENTICATED, may_be_value_connection};
use farm_net::transport::KEEPALIVE_INTERVAL;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::values::ValueOffers;

/// How long a new connection may take to send its first bytes. Every
/// HTTP/2 client speaks first (its connection preface), at once.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Connections sorted but not yet taken by the gRPC server.
const HTTP2_QUEUE: usize = 64;

/// Connections still being sorted; past this, new ones wait in the
/// listen backlog, so a flood of silent connections cannot exhaust tasks.
const MAX_SORTING: usize = 1024;

/// Accepts on `listener` until `stop`; yields the HTTP/2 connections and
/// hands value and results connections to `offers`. The accepting and
/// sorting run on `tasks`, and end with `stop`.
pub fn sort_connections(
    listener: TcpListener,
    offers: Arc<ValueOffers>,
    admission: Arc<Admission>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> ReceiverStream<std::io::Result<TcpStream>> {
    let (http2, incoming) = mpsc::channel(HTTP2_QUEUE);
    let sorters = tasks.clone();
    tasks.spawn(async move {
        let sorting = Arc::new(tokio::sync::Semaphore::new(MAX_SORTING));
        loop {
            let Ok(permit) = sorting.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stop.cancelled() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: keep serving the
                    // connections there are, and try again shortly.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            configure(&stream);
            let (http2, offers, stop) = (http2.clone(), offers.clone(), stop.clone());
            let admission = admission.clone();
            sorters.spawn(async move {
                tokio::select! {
                    () = sort(stream, &http2, &offers, &admission) => {}
                    // A connection still silent at shutdown is not served.
                    () = stop.cancelled() => {}
                }
                drop(permit);
            });
        }
    });
    ReceiverStream::new(incoming)
}

/// The socket options tonic's own listener sets.
fn configure(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_INTERVAL);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

async fn sort(
    mut stream: TcpStream,
    http2: &mpsc::Sender<std::io::Result<TcpStream>>,
    offers: &ValueOffers,
    admission: &Admission,
) {
    match tokio::time::timeout(FIRST_BYTES_TIMEOUT, first_bytes(&stream)).await {
        Ok(Some(First::Http2)) => {
            let _ = http2.send(Ok(stream)).await;
        }
        Ok(Some(First::Value)) => {
            let mut hello = [0u8; HELLO_BYTES];
            let read = tokio::time::timeout(FIRST_BYTES_TIMEOUT, stream.read_exact(&mut hello));
            let Ok(Ok(_)) = read.await else { return };
            let Some(hello) = Hello::decode(&hello) else {
                return;
            };
            let role = hello.purpose.role();
            if let Err(refused) = admission.admit(role, hello.credential.as_ref()) {
                tracing::info!(
                    purpose = ?hello.purpose,
                    peer = ?stream.peer_addr().ok(),
                    reason = ?refused,
                    "refused a connection: no token or a wrong one"
                );
                // Tell the peer why (it may be a client with a stale
                // token), bounded like every write to a stranger.
                let refusal =
                    tokio::time::timeout(FIRST_BYTES_TIMEOUT, stream.write_all(&[UNAUTHENTICATED]));
                let _ = refusal.await;
                return;
            }
            if offers.claim(&hello, stream).is_err() {
                tracing::info!(
                    purpose = ?hello.purpose,
                    id = hello.id,
                    "refused a connection: no such offer, or a wrong token"
                );
            }
        }
        // Closed, silent or broken before a word: nothing to serve.
        Ok(None) | Err(_) => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum First {
    Http2,
    Value,
}

/// Peeks (without consuming) at the first bytes; `None` if the
/// connection closes or fails first. An HTTP/2 client's first byte is
/// `P`, so one byte decides; [`Hello::decode`] checks the rest.
async fn first_bytes(stream: &TcpStream) -> Option<First> {
    let mut peeked = [0u8; HELLO_BYTES];
    match stream.peek(&mut peeked).await.ok()? {
        0 => None,
        seen if may_be_value_connection(&peeked[..seen]) => Some(First::Value),
        _ => Some(First::Http2),
    }
}
