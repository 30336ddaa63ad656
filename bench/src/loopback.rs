//! Reference byte streams on loopback TCP, for the streaming section: what
//! this machine gives a plain program moving the same bytes over one TCP
//! hop, and over two (farm's cluster path has two: worker to coordinator,
//! coordinator to client, on the same cores).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The writer's buffers.
const WRITE_BUFFER: usize = 8 << 20;
/// The buffers of every reader (the bench's, and the relay's).
const READ_BUFFER: usize = 1 << 20;
/// No read or write of a reference stream may stall longer than this.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A stream as its reader saw it.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub bytes: u64,
    /// When the first byte arrived; `None` if none did.
    pub first_byte: Option<Instant>,
    /// When the end of the stream was read.
    pub end: Instant,
}

impl Received {
    /// From the first byte to the end of the stream: the streaming alone,
    /// without whatever came before the first byte (process start, job
    /// set-up, the first chunk's computation).
    pub fn streaming(&self) -> Duration {
        self.first_byte
            .map_or(Duration::ZERO, |first| self.end.duration_since(first))
    }
}

/// One timed stream: its bytes, the whole time, and the time from the
/// first byte to the end.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub bytes: u64,
    pub total: Duration,
    pub streaming: Duration,
}

impl Timing {
    /// Bytes per second over the whole time.
    pub fn rate(&self) -> f64 {
        self.bytes as f64 / self.total.as_secs_f64()
    }

    /// Bytes per second from the first byte to the end.
    pub fn streaming_rate(&self) -> f64 {
        self.bytes as f64 / self.streaming.as_secs_f64()
    }
}

/// Reads `from` to the end, throwing the bytes away.
pub fn discard(from: &mut impl Read) -> io::Result<Received> {
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut bytes = 0;
    let mut first_byte = None;
    loop {
        match from.read(&mut buffer) {
            Ok(0) => {
                return Ok(Received {
                    bytes,
                    first_byte,
                    end: Instant::now(),
                });
            }
            Ok(read) => {
                first_byte.get_or_insert_with(Instant::now);
                bytes += read as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One hop: a thread writes `bytes` over a TcpStream on 127.0.0.1 in
/// 8 MiB `write_all`s to a reader thread that discards them; timed from
/// connecting to the reader's end of stream.
pub fn one_hop(bytes: u64) -> anyhow::Result<Timing> {
    let (listener, address) = listen()?;
    let reader = std::thread::spawn(move || read_all(&listener));
    let started = Instant::now();
    write_to(TcpStream::connect(address)?, bytes)?;
    finish(started, reader, bytes)
}

/// Two hops: the same writer, to a relay thread that reads in 1 MiB
/// buffers and writes each read on to a second connection, to the same
/// discarding reader.
pub fn two_hops(bytes: u64) -> anyhow::Result<Timing> {
    let (to_reader, reader_address) = listen()?;
    let (to_relay, relay_address) = listen()?;
    let reader = std::thread::spawn(move || read_all(&to_reader));
    let relay = std::thread::spawn(move || -> io::Result<u64> {
        let (mut from, _) = to_relay.accept()?;
        from.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut to = TcpStream::connect(reader_address)?;
        to.set_write_timeout(Some(IO_TIMEOUT))?;
        relay(&mut from, &mut to)
    });
    let started = Instant::now();
    write_to(TcpStream::connect(relay_address)?, bytes)?;
    let relayed = relay
        .join()
        .map_err(|_| anyhow::anyhow!("the relay panicked"))?
        .context("the relay")?;
    if relayed != bytes {
        bail!("the relay passed on {relayed} bytes, not {bytes}");
    }
    finish(started, reader, bytes)
}

fn listen() -> anyhow::Result<(TcpListener, std::net::SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    Ok((listener, address))
}

/// Accepts one connection and discards what it sends.
fn read_all(listener: &TcpListener) -> io::Result<Received> {
    let (mut stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    discard(&mut stream)
}

/// Writes `bytes` in 8 MiB `write_all`s, then closes the stream.
fn write_to(mut stream: TcpStream, bytes: u64) -> io::Result<()> {
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let buffer = vec![1u8; WRITE_BUFFER];
    let mut left = bytes;
    while left > 0 {
        let now = left.min(WRITE_BUFFER as u64) as usize;
        stream.write_all(&buffer[..now])?;
        left -= now as u64;
    }
    Ok(())
}

/// Copies `from` to `to` until `from` ends; returns the bytes copied.
fn relay(from: &mut impl Read, to: &mut impl Write) -> io::Result<u64> {
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut total = 0;
    loop {
        match from.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(read) => {
                to.write_all(&buffer[..read])?;
                total += read as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Waits for the reader and times the stream, checking it got every byte.
fn finish(
    started: Instant,
    reader: std::thread::JoinHandle<io::Result<Received>>,
    bytes: u64,
) -> anyhow::Result<Timing> {
    let received = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))?
        .context("the reader")?;
    if received.bytes != bytes {
        bail!(
            "the loopback reader got {} bytes, not {bytes}",
            received.bytes
        );
    }
    Ok(Timing {
        bytes,
        total: received.end.duration_since(started),
        streaming: received.streaming(),
    })
}
