//! The one check that tells a farm coordinator from anything else that
//! answers on its port.
//!
//! When something that is not a gRPC server answers, hyper reports either
//! an HTTP/2 protocol error or, depending on timing, only that the
//! connection closed under the call, which reads like a coordinator that
//! crashed. [`not_a_coordinator`] looks at the failed call first and, when
//! that is not enough, settles it with a probe: it sends the HTTP/2
//! connection preface and an empty SETTINGS frame, and reads the first
//! frame header back. An HTTP/2 server always opens with SETTINGS.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::{Code, Status};

/// How long the probe of a peer whose call broke may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a peer is not a farm coordinator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotACoordinator {
    /// It answered with something other than HTTP/2.
    #[error("it does not speak HTTP/2, so not gRPC")]
    NotHttp2,
    /// It speaks HTTP/2 but broke the gRPC call, or does not serve farm's
    /// methods; `detail` is what the call failed with.
    #[error("{detail}")]
    NotFarm { detail: String },
}

/// Whether the call to `address` that failed with `status` shows that the
/// peer is not a farm coordinator: from the status itself, or, when the
/// call merely broke or could not be made, from a probe of `address`
/// (within [`PROBE_TIMEOUT`]). Call it only for a peer that has not yet
/// answered as a coordinator.
pub async fn not_a_coordinator(status: &Status, address: &str) -> Option<NotACoordinator> {
    if let Some(reason) = not_a_coordinator_by_status(status) {
        return Some(reason);
    }
    not_a_coordinator_by_probe(address).await
}

/// Whether a probe of `address` (within [`PROBE_TIMEOUT`]) shows that the
/// peer does not speak HTTP/2 at all. `None` when it does, or does not
/// answer.
pub async fn not_a_coordinator_by_probe(address: &str) -> Option<NotACoordinator> {
    match probe(host_port(address), PROBE_TIMEOUT).await {
        Peer::NotHttp2 => Some(NotACoordinator::NotHttp2),
        Peer::Http2 | Peer::Unknown => None,
    }
}

/// Whether `status` alone shows that the peer is not a gRPC server for
/// farm: it does not know farm's methods, or it broke HTTP/2 (an HTTP/1
/// server, or something else, on the coordinator's port).
pub fn not_a_coordinator_by_status(status: &Status) -> Option<NotACoordinator> {
    let not_farm = match status.code() {
        Code::Unimplemented => true,
        Code::Internal | Code::Unknown => broke_http2(status),
        _ => false,
    };
    not_farm.then(|| NotACoordinator::NotFarm {
        detail: crate::display::status_text(status),
    })
}

/// An HTTP/2 protocol error anywhere behind the status.
fn broke_http2(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.downcast_ref::<h2::Error>().is_some() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The client connection preface (RFC 9113, 3.4), then an empty SETTINGS
/// frame: length 0, type 4, no flags, stream 0.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// The frame type of SETTINGS.
const SETTINGS: u8 = 0x4;

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// It answered with an HTTP/2 SETTINGS frame.
    Http2,
    /// It answered with something else (HTTP/1, a banner, garbage).
    NotHttp2,
    /// No answer: refused, closed without a word, or silent.
    Unknown,
}

/// Probes `host_port` (`host:port`, no scheme), within `timeout`.
pub async fn probe(host_port: &str, timeout: Duration) -> Peer {
    tokio::time::timeout(timeout, exchange(host_port))
        .await
        .unwrap_or(Peer::Unknown)
}

async fn exchange(host_port: &str) -> Peer {
    let Ok(mut stream) = TcpStream::connect(host_port).await else {
        return Peer::Unknown;
    };
    if stream.write_all(PREFACE).await.is_err() {
        return Peer::Unknown;
    }
    let mut header = [0u8; 9];
    let mut read = 0;
    while read < header.len() {
        match stream.read(&mut header[read..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    match read {
        0 => Peer::Unknown,
        9 if header[3] == SETTINGS => Peer::Http2,
        _ => Peer::NotHttp2,
    }
}

/// `host:port` out of an address as users give it (`host:port` or
/// `http://host:port`).
pub fn host_port(address: &str) -> &str {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(answer: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 64];
            let _ = stream.read(&mut request).await;
            let _ = stream.write_all(answer).await;
            let _ = stream.read(&mut request).await;
        });
        address
    }

    #[tokio::test]
    async fn tells_http2_from_http1() {
        let http2 = serve_once(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00").await;
        assert_eq!(probe(&http2, Duration::from_secs(5)).await, Peer::Http2);
        let http1 = serve_once(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        assert_eq!(probe(&http1, Duration::from_secs(5)).await, Peer::NotHttp2);
        let closed = serve_once(b"").await;
        assert_eq!(probe(&closed, Duration::from_secs(5)).await, Peer::Unknown);
    }

    #[test]
    fn host_port_strips_the_scheme() {
        assert_eq!(host_port("http://a:1"), "a:1");
        assert_eq!(host_port("a:1"), "a:1");
        assert_eq!(host_port("http://a:1/"), "a:1");
    }
}
