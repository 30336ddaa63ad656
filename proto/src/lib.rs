//! The farm wire contract: the code generated from `farm/v1/farm.proto`,
//! the protocol version, conversions between wire and catalog types, and
//! the one mapping of errors to gRPC status codes ([`error`]), how peers
//! reach each other ([`transport`]), the hand-made framing that moves
//! bulk values without copying them ([`wire`]), and the handshake of a
//! job's value connection ([`value_connection`]).

pub mod convert;
pub mod error;
pub mod probe;
pub mod process;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod transport;
pub mod value_connection;
pub mod wire;

/// Generated messages and services of package `farm.v1`.
#[allow(missing_debug_implementations, unused_qualifications, clippy::all)]
pub mod v1 {
    tonic::include_proto!("farm.v1");
}

/// The version every first message carries. Bump it on any change that is
/// not wire-compatible; peers refuse a mismatch with a clear message.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest gRPC message either side accepts: one chunk of streamed
/// values plus its statistics, with room to spare.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
