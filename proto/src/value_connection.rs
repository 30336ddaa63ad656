//! The value connection's handshake, shared by the coordinator and clients.
//!
//! A job's values can travel on a TCP connection of their own instead of
//! inside the job's gRPC stream (see `JobAccepted.values_token` in
//! `farm.proto`). After the handshake the connection carries nothing but
//! the values' bytes, in order, so a client can move them from the socket
//! into a file or pipe without reading them, and the coordinator writes
//! the workers' buffers to it without any framing around them.

/// The first bytes of a value connection. An HTTP/2 client opens with
/// `PRI * HTTP/2.0`, so the first byte already tells the two apart. The
/// trailing digit is the handshake's version.
pub const MAGIC: &[u8; 8] = b"FARMVAL1";

/// The length of a job's secret.
pub const TOKEN_BYTES: usize = 16;

/// The length of the client's hello: magic, job id, token.
pub const HELLO_BYTES: usize = MAGIC.len() + 8 + TOKEN_BYTES;

/// The coordinator's one-byte answer before the values.
pub const ACCEPTED: u8 = 1;

/// A job's secret, which claims its value connection.
pub type Token = [u8; TOKEN_BYTES];

/// What a client sends first on a value connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub job_id: u64,
    pub token: Token,
}

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut bytes = [0u8; HELLO_BYTES];
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8..16].copy_from_slice(&self.job_id.to_le_bytes());
        bytes[16..].copy_from_slice(&self.token);
        bytes
    }

    /// The hello in `bytes`, or `None` if they are not one.
    pub fn decode(bytes: &[u8; HELLO_BYTES]) -> Option<Hello> {
        let (magic, rest) = bytes.split_first_chunk::<8>()?;
        let (job_id, token) = rest.split_first_chunk::<8>()?;
        (magic == MAGIC).then(|| Hello {
            job_id: u64::from_le_bytes(*job_id),
            token: token.try_into().unwrap_or_default(),
        })
    }
}

/// Whether a connection that began with `first` may be a value connection
/// (rather than HTTP/2): true once the bytes so far agree with [`MAGIC`].
pub fn may_be_value_connection(first: &[u8]) -> bool {
    !first.is_empty() && MAGIC.starts_with(&first[..first.len().min(MAGIC.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_survives_encoding() {
        let hello = Hello {
            job_id: 0x0102_0304_0506_0708,
            token: *b"0123456789abcdef",
        };
        let bytes = hello.encode();
        assert_eq!(&bytes[..8], b"FARMVAL1");
        assert_eq!(bytes[8], 0x08, "the job id is little-endian");
        assert_eq!(Hello::decode(&bytes), Some(hello));
    }

    #[test]
    fn other_bytes_are_no_hello() {
        let mut bytes = Hello {
            job_id: 7,
            token: [9; TOKEN_BYTES],
        }
        .encode();
        bytes[7] = b'2';
        assert_eq!(Hello::decode(&bytes), None);
    }

    #[test]
    fn http2_is_told_apart_by_its_first_byte() {
        assert!(!may_be_value_connection(b"P"));
        assert!(!may_be_value_connection(b"PRI * HTTP/2.0"));
        assert!(!may_be_value_connection(b""));
        assert!(may_be_value_connection(b"F"));
        assert!(may_be_value_connection(b"FARMVAL1\x07\0\0\0"));
        assert!(!may_be_value_connection(b"FARMVAL2"));
    }
}
