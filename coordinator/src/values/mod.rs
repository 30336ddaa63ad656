//! How raw values travel through the coordinator.
//!
//! Values reach the coordinator in a worker's gRPC session (in memory, as
//! the frames they arrived in) or on the worker's results connection
//! ([`from_worker`]), where on Linux they go from the socket into pipes
//! without being read ([`pipes`]). They wait in the job's window as
//! [`ChunkValues`] until released in order, then go to the client: on its
//! value connection ([`to_client`]), spliced from the pipes into the
//! socket, or in the job's gRPC stream. Between a worker's socket and a
//! client's the bytes then stay in the kernel, which on loopback halves
//! the copies the coordinator makes.
//!
//! [`offers`] hands out the secrets that claim these connections and
//! delivers each connection to whoever offered it.

pub mod from_worker;
pub mod offers;
#[cfg(target_os = "linux")]
pub mod pipes;
pub mod to_client;

use farm_net::wire::Payload;

use crate::scheduler::HeldValues;

pub use offers::{NoToken, ValueOffers};
pub use to_client::ValueWriter;

/// Values held in pipes by every job: kernel memory, outside the
/// process's resident set (always nothing off Linux).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeUsage {
    pub pipes: usize,
    pub bytes: usize,
    /// The most bytes held at once since the process started.
    pub peak_bytes: usize,
}

/// What is held in pipes now.
pub fn pipe_usage() -> PipeUsage {
    #[cfg(target_os = "linux")]
    return pipes::usage();
    #[cfg(not(target_os = "linux"))]
    PipeUsage::default()
}

/// One chunk's values, held until the merge releases them.
#[derive(Debug)]
pub enum ChunkValues {
    /// In this process's memory, as they arrived.
    Memory(Payload),
    /// In pipes, never read by this process.
    #[cfg(target_os = "linux")]
    Piped(pipes::Piped),
}

impl ChunkValues {
    /// Bytes held.
    pub fn len(&self) -> usize {
        match self {
            ChunkValues::Memory(payload) => payload.len(),
            #[cfg(target_os = "linux")]
            ChunkValues::Piped(piped) => piped.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values, if they are in memory.
    pub fn memory(&self) -> Option<&Payload> {
        match self {
            ChunkValues::Memory(payload) => Some(payload),
            #[cfg(target_os = "linux")]
            ChunkValues::Piped(_) => None,
        }
    }

    /// The values in memory, read out of their pipes if they are piped
    /// (for a client that takes them in its gRPC stream).
    pub fn into_memory(self) -> std::io::Result<Payload> {
        match self {
            ChunkValues::Memory(payload) => Ok(payload),
            #[cfg(target_os = "linux")]
            ChunkValues::Piped(piped) => piped
                .read_all()
                .map(|bytes| Payload::from(bytes::Bytes::from(bytes))),
        }
    }
}

/// The scheduler holds values as opaque handles and needs only their length.
impl HeldValues for ChunkValues {
    fn byte_len(&self) -> usize {
        self.len()
    }
}

impl From<Payload> for ChunkValues {
    fn from(payload: Payload) -> ChunkValues {
        ChunkValues::Memory(payload)
    }
}

/// Values in memory compare by their bytes; piped values, which cannot be
/// read without being taken, are equal to nothing.
impl PartialEq for ChunkValues {
    fn eq(&self, other: &ChunkValues) -> bool {
        match (self, other) {
            (ChunkValues::Memory(a), ChunkValues::Memory(b)) => a == b,
            #[cfg(target_os = "linux")]
            _ => false,
        }
    }
}
