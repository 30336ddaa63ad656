//! How peers reach a coordinator: the connection settings every client
//! and worker shares, and an in-process transport for the embedded
//! cluster (no port, no kernel, same gRPC path).

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// HTTP/2 flow-control windows. The 64 KiB default would stall a stream
/// of multi-megabyte result batches on window updates; a stream's window
/// holds two 8 MiB chunks of values, so a chunk rarely waits for one.
pub const STREAM_WINDOW_BYTES: u32 = 16 << 20;
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// The largest HTTP/2 frame the coordinator accepts (the protocol's
/// maximum), so a worker's chunk of values arrives as one frame, which the
/// coordinator keeps as it is instead of joining 16 KiB pieces.
pub const MAX_FRAME_BYTES: u32 = (1 << 24) - 1;

/// How often idle connections are probed, and how long a probe may go
/// unanswered before the connection is dropped (a frozen peer).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// An address as users give it (`host:port`, or a URI) made into a URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid coordinator address '{address}': expected HOST:PORT, e.g. 127.0.0.1:50051")]
pub struct BadAddress {
    pub address: String,
}

/// The endpoint for a coordinator at `address` (`host:port` or
/// `http://host:port`), with farm's connection settings.
pub fn endpoint(address: &str) -> Result<Endpoint, BadAddress> {
    let bad = || BadAddress {
        address: address.to_owned(),
    };
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let uri: Uri = uri.parse().map_err(|_| bad())?;
    if uri.host().is_none_or(str::is_empty) || uri.port().is_none() {
        return Err(bad());
    }
    Ok(configure(Endpoint::from(uri)))
}

fn configure(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
}

/// Bytes buffered in each direction of an in-process connection.
const IN_PROCESS_BUFFER: usize = 4 << 20;

/// Connections waiting to be accepted by the in-process server.
const IN_PROCESS_BACKLOG: usize = 16;

/// The server side of an in-process transport: a stream of connections
/// for `Server::serve_with_incoming`.
pub type InProcessIncoming = ReceiverStream<std::io::Result<DuplexStream>>;

/// The client side of an in-process transport: makes channels whose every
/// connection is a fresh in-memory pipe to the matching server.
#[derive(Debug, Clone)]
pub struct InProcessConnector {
    accept: mpsc::Sender<std::io::Result<DuplexStream>>,
}

/// A connected pair: serve `incoming`, connect with `connector`.
pub fn in_process() -> (InProcessConnector, InProcessIncoming) {
    let (accept, incoming) = mpsc::channel(IN_PROCESS_BACKLOG);
    (InProcessConnector { accept }, ReceiverStream::new(incoming))
}

impl InProcessConnector {
    /// A lazily connecting channel to the in-process server.
    pub fn channel(&self) -> Channel {
        let accept = self.accept.clone();
        let connector = tower::service_fn(move |_: Uri| {
            let accept = accept.clone();
            async move {
                let (client, server) = tokio::io::duplex(IN_PROCESS_BUFFER);
                accept.send(Ok(server)).await.map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "the in-process coordinator has stopped",
                    )
                })?;
                Ok::<_, std::io::Error>(TokioIo::new(client))
            }
        });
        configure(Endpoint::from_static("http://in-process.farm"))
            .connect_with_connector_lazy(connector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(endpoint("127.0.0.1:50051").is_ok());
        assert!(endpoint("coordinator:50051").is_ok());
        assert!(endpoint("http://[::1]:50051").is_ok());
        for bad in ["", "127.0.0.1", "no spaces:1", ":50051", "http://"] {
            assert_eq!(
                endpoint(bad).unwrap_err().to_string(),
                format!(
                    "invalid coordinator address '{bad}': expected HOST:PORT, e.g. 127.0.0.1:50051"
                )
            );
        }
    }
}
