//! gRPC framing done by farm itself, so bulk values are never copied.
//!
//! tonic's codecs copy every message into an encode buffer on the way out
//! and out of a decode buffer on the way in. For a stream of 8 MiB value
//! batches those copies (and the fresh pages behind them) cost more than
//! computing the values. Here a message's bulk payload (`values_le`)
//! travels as the very `Bytes` it was computed into: handed to HTTP/2 as a
//! frame of its own when sent, and sliced out of the received frames when
//! read, kept in the pieces flow control cut it into ([`Payload`]). In
//! the embedded cluster, where no socket sits between the parts, the
//! worker's buffer reaches the output writer untouched.
//!
//! The wire format is unchanged standard gRPC and protobuf: a payload is
//! encoded as a second occurrence of its enclosing fields, which protobuf
//! decoders merge into the first (see [`Encoded::with_payload`]), so any
//! gRPC client or server interoperates with these streams.
//!
//! - [`Encoded`]: one length-prefixed message, its payload kept apart.
//! - [`FrameBody`]: an HTTP body fed from a bounded queue of messages.
//! - [`MessageReader`]: messages out of an HTTP body, payloads as slices.
//! - [`Payload`]: a payload in the pieces it arrived in.
//! - [`call`] and [`server`]: the client and server ends of a call.
//!
//! The method paths are the contract's: [`farm_proto::method`].

mod body;
pub mod call;
mod encode;
mod payload;
mod reader;
mod segments;
pub mod server;

pub use body::{FrameBody, FrameSender};
pub use encode::Encoded;
pub use payload::{Payload, PayloadMessage};
pub use reader::MessageReader;

/// The media type of every gRPC request and response.
pub const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// Bytes before each gRPC message: a compression flag and a 4-byte length.
const PREFIX_BYTES: usize = 5;
