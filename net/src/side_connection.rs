//! The handshakes of the connections that carry raw values beside gRPC,
//! shared by the coordinator, workers and clients.
//!
//! Bulk values can travel on TCP connections of their own instead of
//! inside gRPC streams: a job's ordered values to its client (a *value
//! connection*, see `JobAccepted.values_token` in `farm.proto`) and a
//! worker's results to the coordinator (a *results connection*, see
//! `Welcome.results_token`). Unframed by HTTP/2, the values can move
//! between sockets, pipes and files inside the kernel (splice), never
//! read by the process that passes them on.
//!
//! A hello carries, beside the secret that claims the connection, the
//! peer's role token (see [`crate::auth`]): the coordinator checks it as
//! it checks a gRPC call's, before the claim.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

use farm_proto::v1;

use crate::auth::{KEY_BYTES, Role};

/// The first bytes of a value connection. An HTTP/2 client opens with
/// `PRI * HTTP/2.0`, so the first byte already tells these connections
/// from gRPC. The trailing digit is the handshake's version (2: with a
/// role token).
pub const MAGIC: &[u8; 8] = b"FARMVAL2";

/// The first bytes of a results connection.
pub const RESULTS_MAGIC: &[u8; 8] = b"FARMRES2";

/// The length of a secret.
pub const TOKEN_BYTES: usize = 16;

/// The length of a hello: magic, id, token, role token.
pub const HELLO_BYTES: usize = MAGIC.len() + 8 + TOKEN_BYTES + KEY_BYTES;

/// The coordinator's one-byte answer to an accepted hello.
pub const ACCEPTED: u8 = 1;

/// The coordinator's one-byte answer to a hello whose role token it
/// refused (then it closes the connection).
pub const UNAUTHENTICATED: u8 = 2;

/// A secret that claims a connection.
pub type Token = [u8; TOKEN_BYTES];

/// What a connection carries, named by its hello's magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A job's ordered values, coordinator to client; the id is the job's.
    JobValues,
    /// A worker's results, worker to coordinator; the id is the worker's.
    ChunkResults,
}

impl Purpose {
    /// The role whose token claims such a connection.
    pub fn role(self) -> Role {
        match self {
            Purpose::JobValues => Role::Client,
            Purpose::ChunkResults => Role::Worker,
        }
    }

    fn magic(self) -> &'static [u8; 8] {
        match self {
            Purpose::JobValues => MAGIC,
            Purpose::ChunkResults => RESULTS_MAGIC,
        }
    }
}

/// What a peer sends first on a value or results connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub purpose: Purpose,
    /// The job's id, or the worker's.
    pub id: u64,
    pub token: Token,
    /// The peer's role token, if it has one (all zeros on the wire if
    /// not).
    pub credential: Option<[u8; KEY_BYTES]>,
}

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut bytes = [0u8; HELLO_BYTES];
        bytes[..8].copy_from_slice(self.purpose.magic());
        bytes[8..16].copy_from_slice(&self.id.to_le_bytes());
        bytes[16..32].copy_from_slice(&self.token);
        bytes[32..].copy_from_slice(&self.credential.unwrap_or_default());
        bytes
    }

    /// The hello in `bytes`, or `None` if they are not one.
    pub fn decode(bytes: &[u8; HELLO_BYTES]) -> Option<Hello> {
        let (magic, rest) = bytes.split_first_chunk::<8>()?;
        let (id, rest) = rest.split_first_chunk::<8>()?;
        let (token, credential) = rest.split_first_chunk::<TOKEN_BYTES>()?;
        let credential: [u8; KEY_BYTES] = credential.try_into().ok()?;
        let purpose = [Purpose::JobValues, Purpose::ChunkResults]
            .into_iter()
            .find(|purpose| purpose.magic() == magic)?;
        Some(Hello {
            purpose,
            id: u64::from_le_bytes(*id),
            token: *token,
            credential: (credential != [0; KEY_BYTES]).then_some(credential),
        })
    }
}

/// Whether a connection that began with `first` may be a value or results
/// connection (rather than HTTP/2): true once the bytes so far agree with
/// one of the magics.
pub fn may_be_value_connection(first: &[u8]) -> bool {
    let seen = &first[..first.len().min(MAGIC.len())];
    !first.is_empty() && (MAGIC.starts_with(seen) || RESULTS_MAGIC.starts_with(seen))
}

/// The longest encoded [`v1::ChunkResult`] a results connection carries
/// (its values apart): a chunk's leaf sums and digests, 24 bytes per 4096
/// elements, are far below it.
pub const MAX_RESULT_HEAD_BYTES: u32 = 4 << 20;

/// The most value bytes one result on a results connection may carry.
pub const MAX_RESULT_VALUES_BYTES: u64 = farm_proto::MAX_MESSAGE_BYTES as u64;

/// The bytes before a result's values on a results connection: the
/// result's length, the result (its values taken out) and the values'
/// length.
pub fn result_head(result: &v1::ChunkResult, values_len: usize) -> Bytes {
    debug_assert!(result.values_le.is_empty(), "the values go apart");
    let encoded_len = result.encoded_len();
    let mut head = BytesMut::with_capacity(4 + encoded_len + 8);
    head.put_u32_le(u32::try_from(encoded_len).unwrap_or(u32::MAX));
    // A BytesMut grows as needed: encoding cannot run out of room.
    let _ = result.encode(&mut head);
    head.put_u64_le(values_len as u64);
    head.freeze()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_survives_encoding() {
        let hello = Hello {
            purpose: Purpose::JobValues,
            id: 0x0102_0304_0506_0708,
            token: *b"0123456789abcdef",
            credential: Some([7; KEY_BYTES]),
        };
        let bytes = hello.encode();
        assert_eq!(&bytes[..8], b"FARMVAL2");
        assert_eq!(&bytes[32..], &[7; KEY_BYTES]);
        assert_eq!(bytes[8], 0x08, "the job id is little-endian");
        assert_eq!(Hello::decode(&bytes), Some(hello));
        let results = Hello {
            purpose: Purpose::ChunkResults,
            credential: None,
            ..hello
        };
        let bytes = results.encode();
        assert_eq!(&bytes[..8], b"FARMRES2");
        assert_eq!(&bytes[32..], &[0; KEY_BYTES], "no role token: zeros");
        assert_eq!(Hello::decode(&bytes), Some(results));
    }

    #[test]
    fn other_bytes_are_no_hello() {
        let mut bytes = Hello {
            purpose: Purpose::JobValues,
            id: 7,
            token: [9; TOKEN_BYTES],
            credential: None,
        }
        .encode();
        bytes[7] = b'1';
        assert_eq!(Hello::decode(&bytes), None);
    }

    #[test]
    fn a_result_head_frames_the_result_and_its_values_length() {
        let result = v1::ChunkResult {
            min: 1.0,
            max: 2.0,
            ..Default::default()
        };
        let head = result_head(&result, 4096);
        let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
        assert_eq!(head.len(), 4 + len + 8);
        assert_eq!(v1::ChunkResult::decode(&head[4..4 + len]).unwrap(), result);
        assert_eq!(
            u64::from_le_bytes(head[4 + len..].try_into().unwrap()),
            4096
        );
    }

    #[test]
    fn http2_is_told_apart_by_its_first_byte() {
        assert!(!may_be_value_connection(b"P"));
        assert!(!may_be_value_connection(b"PRI * HTTP/2.0"));
        assert!(!may_be_value_connection(b""));
        assert!(may_be_value_connection(b"F"));
        assert!(may_be_value_connection(b"FARMVAL2\x07\0\0\0"));
        assert!(may_be_value_connection(b"FARMRES2"));
        assert!(!may_be_value_connection(b"FARMVAL1"));
    }
}
