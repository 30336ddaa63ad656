//! A TCP proxy that makes a loopback link look far away: it adds a fixed
//! delay each way and can limit the bytes per second each way, like a
//! long, thin WAN link (`tc netem` needs kernel modules we do not have).
//!
//! ```ignore
//! let proxy = Proxy::start(coordinator, Link::delayed(Duration::from_millis(100))).await?;
//! // point a worker at proxy.address() instead of the coordinator
//! proxy.sever(); // the link goes down: every connection breaks
//! ```
//!
//! Each direction is one link shared by every connection through the
//! proxy (a worker's session and its results connection compete for the
//! same bandwidth, as on a real link). Bytes read at `t` leave the link
//! once it has sent what came before them at its rate, and are written
//! out `delay` later. What the link holds is bounded: a connection's
//! reader stops when [`LINK_QUEUE`] pieces wait, and TCP pushes back.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Pieces in flight per connection and direction.
const LINK_QUEUE: usize = 256;

/// The largest piece read at once: 16 KiB, or 5 ms at a limited rate, so
/// that pacing stays smooth on a thin link.
const MAX_PIECE: usize = 16 << 10;

/// How long connecting to the upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the link between the proxy's two sides is like, each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Added to every byte, each way (a round trip adds twice this).
    pub delay: Duration,
    /// Bytes per second each way; `None`: as fast as loopback.
    pub bytes_per_second: Option<u64>,
}

impl Link {
    pub fn delayed(delay: Duration) -> Link {
        Link {
            delay,
            bytes_per_second: None,
        }
    }

    #[must_use]
    pub fn limited(mut self, bytes_per_second: u64) -> Link {
        self.bytes_per_second = Some(bytes_per_second.max(1));
        self
    }

    fn piece_len(&self) -> usize {
        self.bytes_per_second.map_or(MAX_PIECE, |rate| {
            usize::try_from(rate / 200)
                .unwrap_or(MAX_PIECE)
                .clamp(512, MAX_PIECE)
        })
    }
}

/// One direction of the link: when it is free to send the next byte.
#[derive(Debug)]
struct Pacer {
    bytes_per_second: Option<u64>,
    free_at: Mutex<Instant>,
}

impl Pacer {
    fn new(bytes_per_second: Option<u64>) -> Pacer {
        Pacer {
            bytes_per_second,
            free_at: Mutex::new(Instant::now()),
        }
    }

    /// `len` bytes enter the link now: when their last byte has left it.
    fn pass(&self, len: usize) -> Instant {
        let now = Instant::now();
        let Some(rate) = self.bytes_per_second else {
            return now;
        };
        let mut free_at = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
        let start = (*free_at).max(now);
        *free_at = start + Duration::from_secs_f64(len as f64 / rate as f64);
        *free_at
    }
}

/// A running proxy; it stops (and breaks every connection) when dropped.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Proxy {
    /// Listens on a fresh loopback port and forwards every connection to
    /// `upstream` through `link`.
    pub async fn start(upstream: SocketAddr, link: Link) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let to_upstream = Arc::new(Pacer::new(link.bytes_per_second));
        let to_client = Arc::new(Pacer::new(link.bytes_per_second));
        let accepting = Accepting {
            upstream,
            link,
            stop: stop.clone(),
            tasks: tasks.clone(),
            to_upstream,
            to_client,
        };
        tasks.spawn(accepting.run(listener));
        Ok(Proxy {
            address,
            stop,
            tasks,
        })
    }

    /// Where to connect instead of the upstream.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The link goes down: every connection through it breaks, and new
    /// ones are refused.
    pub fn sever(&self) {
        self.stop.cancel();
    }

    /// Severs the link and waits (at most `timeout`) until every
    /// connection's task has ended.
    pub async fn stop(self, timeout: Duration) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(timeout, self.tasks.wait()).await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Accepting {
    upstream: SocketAddr,
    link: Link,
    stop: CancellationToken,
    tasks: TaskTracker,
    to_upstream: Arc<Pacer>,
    to_client: Arc<Pacer>,
}

impl Accepting {
    async fn run(self, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = self.stop.cancelled() => return,
            };
            let Ok((client, _)) = accepted else {
                continue;
            };
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.upstream));
            let Ok(Ok(upstream)) = connect.await else {
                // Refused upstream: the client sees its connection close.
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (upstream_read, upstream_write) = upstream.into_split();
            self.forward(client_read, upstream_write, self.to_upstream.clone());
            self.forward(upstream_read, client_write, self.to_client.clone());
        }
    }

    /// Carries one direction of one connection across the link: a reader
    /// that stamps each piece with when it arrives at the far end, and a
    /// writer that writes it out then.
    fn forward(&self, mut from: OwnedReadHalf, mut to: OwnedWriteHalf, pacer: Arc<Pacer>) {
        let (pieces, mut arriving) = mpsc::channel::<(Instant, Bytes)>(LINK_QUEUE);
        let (delay, piece_len) = (self.link.delay, self.link.piece_len());
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            let mut buffer = vec![0u8; piece_len];
            loop {
                let read = tokio::select! {
                    read = from.read(&mut buffer) => read,
                    () = stop.cancelled() => return,
                };
                let len = match read {
                    Ok(0) | Err(_) => return,
                    Ok(len) => len,
                };
                let arrives = pacer.pass(len) + delay;
                let piece = Bytes::copy_from_slice(&buffer[..len]);
                tokio::select! {
                    sent = pieces.send((arrives, piece)) => if sent.is_err() { return },
                    () = stop.cancelled() => return,
                }
            }
        });
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            loop {
                let next = tokio::select! {
                    next = arriving.recv() => next,
                    () = stop.cancelled() => return,
                };
                let Some((arrives, piece)) = next else {
                    // The sender closed its side: so do we, once all it
                    // sent has arrived.
                    let _ = to.shutdown().await;
                    return;
                };
                tokio::select! {
                    () = tokio::time::sleep_until(arrives) => {}
                    () = stop.cancelled() => return,
                }
                let written = tokio::select! {
                    written = to.write_all(&piece) => written,
                    () = stop.cancelled() => return,
                };
                if written.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server: what the proxy forwards comes back through it.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn a_round_trip_takes_twice_the_delay_and_keeps_every_byte() {
        let delay = Duration::from_millis(50);
        let proxy = Proxy::start(echo().await, Link::delayed(delay))
            .await
            .expect("proxy");
        let mut stream = TcpStream::connect(proxy.address()).await.expect("connect");
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let started = std::time::Instant::now();
        stream.write_all(&sent).await.expect("write");
        let mut back = vec![0u8; sent.len()];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
            .await
            .expect("echoed within 10 s")
            .expect("read");
        assert_eq!(back, sent);
        assert!(started.elapsed() >= 2 * delay, "{:?}", started.elapsed());
        proxy.stop(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn a_limited_link_passes_no_more_than_its_rate() {
        let rate = 1_000_000;
        let link = Link::delayed(Duration::ZERO).limited(rate);
        let proxy = Proxy::start(echo().await, link).await.expect("proxy");
        let mut stream = TcpStream::connect(proxy.address()).await.expect("connect");
        // 500 KB each way over 1 MB/s: at least half a second.
        let sent = vec![7u8; 500_000];
        let started = std::time::Instant::now();
        let (mut read, mut write) = stream.split();
        let mut back = vec![0u8; sent.len()];
        let (written, echoed) = tokio::join!(write.write_all(&sent), read.read_exact(&mut back));
        written.expect("write");
        echoed.expect("read");
        assert_eq!(back, sent);
        assert!(
            started.elapsed() >= Duration::from_millis(490),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_severed_link_breaks_its_connections() {
        let proxy = Proxy::start(echo().await, Link::delayed(Duration::ZERO))
            .await
            .expect("proxy");
        let mut stream = TcpStream::connect(proxy.address()).await.expect("connect");
        stream.write_all(b"ping").await.expect("write");
        let mut back = [0u8; 4];
        stream.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"ping");
        proxy.sever();
        let mut rest = Vec::new();
        // Closed or reset, it ends, and nothing more comes through.
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("the connection ends within 5 s");
        assert!(rest.is_empty());
    }
}
