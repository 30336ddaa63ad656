//! Values held in pipes: spliced from a worker's socket into pipes, and
//! later from the pipes into a client's socket, so the kernel moves the
//! pages and this process never copies a byte.
//!
//! A pipe holds at most [`PIPE_BYTES`] (Linux's ceiling for unprivileged
//! processes, `/proc/sys/fs/pipe-max-size`), so a chunk's values take
//! several. Pipes count against a per-user budget
//! (`/proc/sys/fs/pipe-user-pages-soft`) and cost two descriptors each,
//! so this process keeps at most a quarter of its descriptor limit in
//! pipes; when no more full-size pipes can be had, [`fill`] stops early
//! and the caller reads the rest into memory.
//!
//! What pipes hold is kernel memory, outside this process's resident set,
//! so [`usage`] counts it for `farm workers`.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use farm_net::splice;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most one pipe is asked to hold.
pub const PIPE_BYTES: usize = 1 << 20;

/// The most pipes held at once, whatever the descriptor limit: 512 MiB.
const MAX_PIPES: usize = 512;

/// Pipes held now, by every job.
static PIPES_HELD: AtomicUsize = AtomicUsize::new(0);

/// Bytes in those pipes now, and the most there have been at once.
static BYTES_HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES_HELD: AtomicUsize = AtomicUsize::new(0);

/// What this process holds in pipes, by every job.
pub fn usage() -> super::PipeUsage {
    super::PipeUsage {
        pipes: PIPES_HELD.load(Ordering::Acquire),
        bytes: BYTES_HELD.load(Ordering::Acquire),
        peak_bytes: PEAK_BYTES_HELD.load(Ordering::Acquire),
    }
}

/// A chunk's values in pipes, in order.
#[derive(Debug, Default)]
pub struct Piped {
    pipes: Vec<Pipe>,
    len: usize,
}

#[derive(Debug)]
struct Pipe {
    read_end: OwnedFd,
    write_end: OwnedFd,
    /// Its place among the pipes held, and the bytes in it.
    held: Held,
    /// It took no more: its slots are used up (splices of partial pages
    /// fill slots faster than bytes).
    full: bool,
}

impl Piped {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the values out of the pipes (a copy: for a client that takes
    /// them in its gRPC stream).
    pub fn read_all(self) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; self.len];
        let mut at = 0;
        for pipe in self.pipes {
            // The bytes are in the pipe already: the read cannot block.
            let len = pipe.held.bytes;
            File::from(pipe.read_end).read_exact(&mut out[at..at + len])?;
            at += len;
        }
        Ok(out)
    }

    /// Splices every byte into `socket`. Waits at most `stall` for the
    /// socket to take more.
    pub async fn drain_into(self, socket: &TcpStream, stall: Duration) -> io::Result<()> {
        for pipe in self.pipes {
            let mut left = pipe.held.bytes;
            while left > 0 {
                ready(socket, Interest::WRITABLE, stall).await?;
                // The pipe holds `left` bytes, so WouldBlock can only mean
                // the socket is full.
                match socket.try_io(Interest::WRITABLE, || {
                    splice::splice(pipe.read_end.as_raw_fd(), socket.as_raw_fd(), left, true)
                }) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(moved) => left -= moved,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }
}

/// What [`fill`] moved.
#[derive(Debug)]
pub struct Filled {
    pub piped: Piped,
    /// Bytes still due: more than zero only when no more pipes could be
    /// had; they are still in the socket.
    pub left: usize,
}

/// Splices `len` bytes from `socket` into new pipes. Waits at most
/// `stall` for each step; an early end of the socket is an error.
pub async fn fill(socket: &TcpStream, len: usize, stall: Duration) -> io::Result<Filled> {
    let mut piped = Piped::default();
    let mut left = len;
    while left > 0 {
        if piped.pipes.last().is_none_or(|pipe| pipe.full) {
            match Pipe::new() {
                Ok(pipe) => piped.pipes.push(pipe),
                Err(error) => {
                    tracing::debug!(%error, "no more pipes: reading values into memory");
                    break;
                }
            }
        }
        let Some(pipe) = piped.pipes.last_mut() else {
            break;
        };
        ready(socket, Interest::READABLE, stall).await?;
        let room = PIPE_BYTES - pipe.held.bytes;
        match socket.try_io(Interest::READABLE, || {
            splice_from_socket(
                socket.as_raw_fd(),
                pipe.write_end.as_raw_fd(),
                left.min(room),
            )
        }) {
            Ok(Step::Moved(0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(Step::Moved(moved)) => {
                pipe.held.add(moved);
                piped.len += moved;
                left -= moved;
                pipe.full = pipe.held.bytes == PIPE_BYTES;
            }
            Ok(Step::PipeFull) => pipe.full = true,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(Filled { piped, left })
}

async fn ready(socket: &TcpStream, interest: Interest, stall: Duration) -> io::Result<()> {
    match tokio::time::timeout(stall, socket.ready(interest)).await {
        Ok(ready) => ready.map(drop),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the connection moved nothing for {} s", stall.as_secs()),
        )),
    }
}

enum Step {
    Moved(usize),
    PipeFull,
}

/// One splice from a socket into a pipe. Both ends are non-blocking
/// there, so "would block" means either an empty socket or a full pipe; a
/// peek tells which, so that only a truly empty socket clears its
/// readiness (tokio would otherwise wait for data that is already there).
fn splice_from_socket(socket: RawFd, pipe: RawFd, len: usize) -> io::Result<Step> {
    match splice::splice(socket, pipe, len, true) {
        Ok(moved) => Ok(Step::Moved(moved)),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
            let mut byte = 0u8;
            // SAFETY: recv writes at most one byte into `byte`.
            let peeked = unsafe {
                libc::recv(
                    socket,
                    (&raw mut byte).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if peeked > 0 {
                Ok(Step::PipeFull)
            } else {
                Err(error)
            }
        }
        Err(error) => Err(error),
    }
}

impl Pipe {
    /// A pipe of [`PIPE_BYTES`], or an error if the system will not give
    /// one that wide (a narrower one would need too many descriptors).
    fn new() -> io::Result<Pipe> {
        let held = Held::take()?;
        let (read_end, write_end, size) = splice::pipe(PIPE_BYTES)?;
        if size < PIPE_BYTES {
            return Err(io::Error::other(format!(
                "a pipe of {size} bytes, not {PIPE_BYTES}"
            )));
        }
        Ok(Pipe {
            read_end,
            write_end,
            held,
            full: false,
        })
    }
}

/// One pipe's place in [`PIPES_HELD`], and its bytes in [`BYTES_HELD`],
/// given back on drop (when the pipe is closed).
#[derive(Debug)]
struct Held {
    bytes: usize,
}

impl Held {
    fn take() -> io::Result<Held> {
        let limit = *pipe_limit();
        let taken = PIPES_HELD.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            (held < limit).then_some(held + 1)
        });
        match taken {
            Ok(_) => Ok(Held { bytes: 0 }),
            Err(_) => Err(io::Error::other(format!("{limit} pipes are held already"))),
        }
    }

    fn add(&mut self, bytes: usize) {
        self.bytes += bytes;
        let now = BYTES_HELD.fetch_add(bytes, Ordering::AcqRel) + bytes;
        PEAK_BYTES_HELD.fetch_max(now, Ordering::AcqRel);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        BYTES_HELD.fetch_sub(self.bytes, Ordering::AcqRel);
        PIPES_HELD.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How many pipes this process may hold: their two descriptors each take
/// at most a quarter of its descriptor limit, so sockets and files never
/// run short; and at most [`MAX_PIPES`].
fn pipe_limit() -> &'static usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    LIMIT.get_or_init(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only into `limit`.
        let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } == 0;
        let descriptors = if known { limit.rlim_cur } else { 1024 };
        usize::try_from(descriptors / 8).map_or(MAX_PIPES, |pipes| pipes.min(MAX_PIPES))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const STALL: Duration = Duration::from_secs(10);

    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connecting = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, connected) = tokio::join!(listener.accept(), connecting);
        (accepted.unwrap().0, connected.unwrap())
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    /// Values cut across many small writes and several pipes arrive whole
    /// and in order, both read back and spliced on.
    #[tokio::test]
    async fn values_pass_through_pipes_unchanged() {
        let bytes = pattern(3 * PIPE_BYTES + 12_345);
        let (mut from_worker, inlet) = socket_pair().await;
        let sent = bytes.clone();
        let writer = tokio::spawn(async move {
            for piece in sent.chunks(4093) {
                from_worker.write_all(piece).await.unwrap();
            }
            from_worker
        });
        let first = fill(&inlet, PIPE_BYTES + 5, STALL).await.unwrap();
        let second = fill(&inlet, bytes.len() - PIPE_BYTES - 5, STALL)
            .await
            .unwrap();
        let _from_worker = writer.await.unwrap();
        assert_eq!((first.left, second.left), (0, 0));
        assert!(second.piped.pipes.len() >= 2);
        // Other tests in this process may hold pipes too: at least ours.
        let held = usage();
        assert!(held.bytes >= bytes.len(), "{held:?}");
        assert!(held.peak_bytes >= held.bytes, "{held:?}");
        // The first result's pipes and the second's.
        assert!(held.pipes > second.piped.pipes.len(), "{held:?}");
        assert_eq!(first.piped.read_all().unwrap(), bytes[..PIPE_BYTES + 5]);

        let (to_client, mut client) = socket_pair().await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        second.piped.drain_into(&to_client, STALL).await.unwrap();
        drop(to_client);
        assert_eq!(reader.await.unwrap(), bytes[PIPE_BYTES + 5..]);
    }

    #[tokio::test]
    async fn a_socket_that_ends_early_is_an_error() {
        let (mut from_worker, inlet) = socket_pair().await;
        from_worker.write_all(&pattern(1000)).await.unwrap();
        drop(from_worker);
        let error = fill(&inlet, 2000, STALL).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_silent_socket_times_out() {
        let (_from_worker, inlet) = socket_pair().await;
        let error = fill(&inlet, 10, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
