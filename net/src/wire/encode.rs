//! One gRPC message ready to send, with its bulk payload kept apart.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::Status;

use super::PREFIX_BYTES;
use super::payload::{Payload, PayloadMessage};
use farm_proto::v1::submit_job_response::Event;
use farm_proto::v1::worker_message::Kind;
use farm_proto::{MAX_MESSAGE_BYTES, v1};

/// Payloads smaller than this are copied into the head: a frame of their
/// own would cost more than the copy.
const INLINE_PAYLOAD_BYTES: usize = 16 << 10;

/// A length-prefixed gRPC message: a small head (prefix and protobuf
/// fields), then, unless empty, the payload as its own buffer.
#[derive(Debug, Clone)]
pub struct Encoded {
    head: Bytes,
    payload: Payload,
}

impl Encoded {
    /// `message`, encoded whole.
    pub fn message(message: &impl Message) -> Result<Encoded, Status> {
        Encoded::with_payload(message, &[], Payload::default())
    }

    /// `message` followed by `payload` as the bytes field reached through
    /// the field numbers `path`, outermost first; `message` must leave that
    /// field empty. The payload is written as a second occurrence of the
    /// path's fields, which protobuf decoders merge into the first (the
    /// encoding guide: "last one wins" for bytes, embedded messages merge),
    /// so decoding gives the message with its payload in place.
    ///
    /// Only for fields on a path of singular (or oneof) message fields: a
    /// second occurrence of a repeated field would add an element.
    pub fn with_payload(
        message: &impl Message,
        path: &[u32],
        payload: Payload,
    ) -> Result<Encoded, Status> {
        let wrapping = if payload.is_empty() {
            Vec::new()
        } else {
            payload_wrapping(path, payload.len())
        };
        let len = message.encoded_len() + wrapping.len() + payload.len();
        let wire_len = u32::try_from(len)
            .ok()
            .filter(|_| len <= MAX_MESSAGE_BYTES)
            .ok_or_else(|| {
                Status::out_of_range(format!(
                    "a message of {len} bytes is over the limit of {MAX_MESSAGE_BYTES}"
                ))
            })?;
        let inline = payload.len() < INLINE_PAYLOAD_BYTES;
        let apart = if inline { 0 } else { payload.len() };
        let mut head = BytesMut::with_capacity(PREFIX_BYTES + len - apart);
        head.put_u8(0); // not compressed
        head.put_u32(wire_len);
        message
            .encode(&mut head)
            .map_err(|e| Status::internal(format!("cannot encode a message: {e}")))?;
        head.put_slice(&wrapping);
        if inline {
            for part in payload.parts() {
                head.put_slice(part);
            }
            return Ok(Encoded {
                head: head.freeze(),
                payload: Payload::default(),
            });
        }
        Ok(Encoded {
            head: head.freeze(),
            payload,
        })
    }

    /// A job stream's values at `offset`, the values a frame of their own.
    pub fn values_batch(offset: u64, values_le: Payload) -> Result<Encoded, Status> {
        let head = v1::SubmitJobResponse {
            event: Some(Event::Values(v1::ValuesBatch {
                offset,
                values_le: Bytes::new(),
            })),
        };
        Encoded::with_payload(&head, v1::SubmitJobResponse::PAYLOAD_PATH, values_le)
    }

    /// A worker's result for one chunk, its values a frame of their own.
    pub fn chunk_result(mut result: v1::ChunkResult) -> Result<Encoded, Status> {
        let values = std::mem::take(&mut result.values_le);
        let head = v1::WorkerMessage {
            kind: Some(Kind::Result(result)),
        };
        Encoded::with_payload(
            &head,
            v1::WorkerMessage::PAYLOAD_PATH,
            Payload::from(values),
        )
    }

    /// The message back, decoded from these bytes (what a peer would get).
    pub fn decode<M: Message + Default>(&self) -> Result<M, prost::DecodeError> {
        let head = self.head.slice(PREFIX_BYTES.min(self.head.len())..);
        M::decode(bytes::Buf::chain(head, self.payload.joined()))
    }

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.payload.len()
    }

    /// Always false: even an empty message has its prefix.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The head, and the payload (empty when there is none).
    pub(super) fn into_parts(self) -> (Bytes, Payload) {
        (self.head, self.payload)
    }
}

/// The keys and lengths that put a payload of `payload_len` bytes at
/// `path`, outermost first.
pub(super) fn payload_wrapping(path: &[u32], payload_len: usize) -> Vec<u8> {
    // Lengths nest from the inside out, so find each field's length first.
    let mut lengths = Vec::with_capacity(path.len());
    let mut inner = payload_len;
    for &field in path.iter().rev() {
        lengths.push(inner);
        inner += key_len(field) + encoded_len_varint(inner as u64);
    }
    let mut out = Vec::with_capacity(inner - payload_len);
    for (&field, &len) in path.iter().zip(lengths.iter().rev()) {
        encode_key(field, WireType::LengthDelimited, &mut out);
        encode_varint(len as u64, &mut out);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn wire(encoded: Encoded) -> Vec<u8> {
        let (head, payload) = encoded.into_parts();
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(&payload.joined());
        bytes
    }

    fn decode<M: Message + Default>(bytes: &[u8]) -> M {
        assert_eq!(bytes[0], 0);
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - PREFIX_BYTES);
        M::decode(&bytes[PREFIX_BYTES..]).unwrap()
    }

    #[test]
    fn values_batches_decode_as_if_encoded_whole() {
        let values = Bytes::from((0..4096u32).flat_map(u32::to_le_bytes).collect::<Vec<_>>());
        let whole = v1::SubmitJobResponse {
            event: Some(Event::Values(v1::ValuesBatch {
                offset: 1 << 40,
                values_le: values.clone(),
            })),
        };
        let encoded = Encoded::values_batch(1 << 40, Payload::from(values)).unwrap();
        // The second occurrence costs a key and a length per field.
        let overhead = encoded.len() - PREFIX_BYTES - whole.encoded_len();
        assert!(overhead <= 4, "{overhead} bytes more than encoded whole");
        assert_eq!(decode::<v1::SubmitJobResponse>(&wire(encoded)), whole);
    }

    #[test]
    fn chunk_results_decode_as_if_encoded_whole() {
        // Lengths around the varint boundaries of every enclosing field.
        for len in [1, 120, 127, 128, 16_383, 16_384, 70_000] {
            let values = Bytes::from(vec![7u8; len]);
            let result = |values_le| v1::ChunkResult {
                token: Some(v1::LeaseToken {
                    job_id: 3,
                    chunk_index: 9,
                    attempt: 2,
                }),
                leaf_sums: vec![1.5, 2.5],
                leaf_digests: Bytes::from(vec![1u8; 32]),
                min: 0.5,
                max: 9.0,
                values_le,
                compute_us: 1234,
            };
            let encoded = Encoded::chunk_result(result(values.clone())).unwrap();
            let decoded: v1::WorkerMessage = decode(&wire(encoded));
            let whole = v1::WorkerMessage {
                kind: Some(Kind::Result(result(values))),
            };
            assert_eq!(decoded, whole, "payload of {len} bytes");
        }
    }

    #[test]
    fn an_empty_payload_adds_nothing() {
        let message = v1::JobProgress {
            elements_done: 5,
            chunks_done: 1,
        };
        let encoded = Encoded::with_payload(&message, &[9], Payload::default()).unwrap();
        assert_eq!(
            wire(encoded.clone()).len(),
            PREFIX_BYTES + message.encoded_len()
        );
        assert!(encoded.into_parts().1.is_empty());
    }
}
