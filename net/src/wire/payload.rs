//! Bulk bytes in the pieces they arrived in, and the messages that carry
//! them.

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint};

use super::segments::Segments;
use farm_proto::v1;
use farm_proto::v1::submit_job_response::Event;
use farm_proto::v1::worker_message::Kind;

/// A message's bulk bytes (a job stream's or a chunk result's values), as
/// the frames they arrived in.
///
/// HTTP/2 flow control cuts a sender's data wherever a window update
/// falls, so a payload of megabytes often spans frames. Joining them would
/// copy every byte, and nothing downstream needs them joined: the
/// coordinator forwards the pieces, the client writes them out in turn.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    parts: Vec<Bytes>,
    len: usize,
}

impl Payload {
    /// Bytes in all.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in order; none is empty.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The bytes in one buffer: free for a payload in one piece, a copy
    /// otherwise.
    pub fn joined(&self) -> Bytes {
        match self.parts.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            parts => {
                let mut joined = BytesMut::with_capacity(self.len);
                for part in parts {
                    joined.extend_from_slice(part);
                }
                joined.freeze()
            }
        }
    }

    fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.parts.iter().flat_map(|part| part.iter()).copied()
    }

    pub(super) fn into_parts(self) -> Vec<Bytes> {
        self.parts
    }

    fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.len += part.len();
            self.parts.push(part);
        }
    }
}

/// Equal when the bytes are, however they were cut into pieces.
impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.len == other.len && self.bytes().eq(other.bytes())
    }
}

impl Eq for Payload {}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Payload {
        let mut payload = Payload::default();
        payload.push(bytes);
        payload
    }
}

impl From<Vec<Bytes>> for Payload {
    fn from(parts: Vec<Bytes>) -> Payload {
        let mut payload = Payload::default();
        for part in parts {
            payload.push(part);
        }
        payload
    }
}

/// A message with one `bytes` field that may carry a [`Payload`]: sent
/// apart from the rest (see [`Encoded::with_payload`]) and read back in
/// its pieces by [`MessageReader::message_with_payload`].
///
/// [`Encoded::with_payload`]: super::Encoded::with_payload
/// [`MessageReader::message_with_payload`]: super::MessageReader::message_with_payload
pub trait PayloadMessage: Message + Default {
    /// The field numbers from the message down to the payload's `bytes`
    /// field, outermost first; every field on the way is a singular (or
    /// oneof) message field.
    const PAYLOAD_PATH: &'static [u32];

    /// Takes the payload field's bytes out of a message that was decoded
    /// whole (sent by a peer that does not send payloads apart).
    fn take_payload_field(&mut self) -> Bytes;
}

impl PayloadMessage for v1::SubmitJobResponse {
    /// SubmitJobResponse.values, then ValuesBatch.values_le.
    const PAYLOAD_PATH: &'static [u32] = &[2, 2];

    fn take_payload_field(&mut self) -> Bytes {
        match &mut self.event {
            Some(Event::Values(batch)) => std::mem::take(&mut batch.values_le),
            _ => Bytes::new(),
        }
    }
}

impl PayloadMessage for v1::WorkerMessage {
    /// WorkerMessage.result, then ChunkResult.values_le.
    const PAYLOAD_PATH: &'static [u32] = &[3, 6];

    fn take_payload_field(&mut self) -> Bytes {
        match &mut self.kind {
            Some(Kind::Result(result)) => std::mem::take(&mut result.values_le),
            _ => Bytes::new(),
        }
    }
}

/// Splits a payload sent apart off the end of `message`, leaving the rest
/// of the message in `message`.
///
/// A payload sent apart is the message's last top-level field, at
/// `path[0]`, holding only the field `path[1]`, and so on down to the
/// `bytes` field at the end of the path, whose bytes run to the end of
/// the message. Anything else (a message encoded whole, where the field
/// sits among others) gives `None` and leaves `message` as it was.
pub(super) fn split_payload(message: &mut Segments, path: &[u32]) -> Option<Payload> {
    let (&outer, inner) = path.split_first()?;
    let total = message.remaining();
    // Scan a cheap copy (the frames are reference-counted).
    let mut scan = message.clone();
    let mut head_len = None;
    while scan.has_remaining() {
        let field_start = total - scan.remaining();
        let (field, wire_type) = decode_key(&mut scan).ok()?;
        if wire_type == WireType::LengthDelimited {
            let len = usize::try_from(decode_varint(&mut scan).ok()?).ok()?;
            if len > scan.remaining() {
                return None;
            }
            if len == scan.remaining() {
                if field != outer {
                    return None;
                }
                head_len = Some(field_start);
                break;
            }
            scan.advance(len);
        } else {
            skip_scalar(wire_type, &mut scan)?;
        }
    }
    let head_len = head_len?;
    for &field in inner {
        let (found, wire_type) = decode_key(&mut scan).ok()?;
        let len = usize::try_from(decode_varint(&mut scan).ok()?).ok()?;
        if found != field || wire_type != WireType::LengthDelimited || len != scan.remaining() {
            return None;
        }
    }
    let wrapping_len = total - scan.remaining() - head_len;
    let head = message.split_to(head_len);
    let mut rest = std::mem::replace(message, head);
    rest.advance(wrapping_len);
    Some(Payload::from(rest.into_parts()))
}

/// Steps over a field that is not length-delimited; `None` for groups,
/// which farm's messages do not use, or a field cut short.
fn skip_scalar(wire_type: WireType, scan: &mut Segments) -> Option<()> {
    let width = match wire_type {
        WireType::Varint => return decode_varint(scan).ok().map(|_| ()),
        WireType::SixtyFourBit => 8,
        WireType::ThirtyTwoBit => 4,
        WireType::LengthDelimited | WireType::StartGroup | WireType::EndGroup => return None,
    };
    (scan.remaining() >= width).then(|| scan.advance(width))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::Encoded;
    use crate::wire::PREFIX_BYTES;

    fn values(len: usize) -> Bytes {
        Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>())
    }

    /// `encoded`'s message bytes (no prefix), cut into frames at `cuts`.
    fn frames(encoded: Encoded, cuts: &[usize]) -> Segments {
        let (head, payload) = encoded.into_parts();
        let mut whole = head[PREFIX_BYTES..].to_vec();
        whole.extend_from_slice(&payload.joined());
        let mut segments = Segments::default();
        let mut from = 0;
        for &cut in cuts.iter().chain([&whole.len()]) {
            segments.push(Bytes::copy_from_slice(&whole[from..cut]));
            from = cut;
        }
        segments
    }

    #[test]
    fn a_payload_split_across_frames_comes_back_in_its_pieces() {
        let sent = values(100_000);
        let encoded = Encoded::values_batch(77, Payload::from(sent.clone())).unwrap();
        let mut message = frames(encoded, &[3, 40_000, 70_000]);
        let payload = split_payload(&mut message, v1::SubmitJobResponse::PAYLOAD_PATH).unwrap();
        assert_eq!(payload.parts().len(), 3);
        assert_eq!(payload.joined(), sent);
        let head = v1::SubmitJobResponse::decode(&mut message).unwrap();
        let Some(Event::Values(batch)) = head.event else {
            panic!("not a values batch: {head:?}");
        };
        assert_eq!(batch.offset, 77);
    }

    #[test]
    fn a_message_encoded_whole_is_left_alone() {
        // compute_us comes after values_le, as any protobuf encoder puts it.
        let message = v1::WorkerMessage {
            kind: Some(Kind::Result(v1::ChunkResult {
                values_le: values(64),
                compute_us: 5,
                ..Default::default()
            })),
        };
        let mut segments = Segments::default();
        segments.push(Bytes::from(message.encode_to_vec()));
        let before = segments.remaining();
        assert_eq!(
            split_payload(&mut segments, v1::WorkerMessage::PAYLOAD_PATH),
            None
        );
        assert_eq!(segments.remaining(), before);
        assert_eq!(v1::WorkerMessage::decode(segments).unwrap(), message);
    }

    #[test]
    fn truncated_or_foreign_messages_are_not_split() {
        let encoded = Encoded::values_batch(1, Payload::from(values(20_000))).unwrap();
        let (head, payload) = encoded.into_parts();
        let mut whole = head[PREFIX_BYTES..].to_vec();
        whole.extend_from_slice(&payload.joined());
        for cut in [1, 2, 5, whole.len() - 1] {
            let mut segments = Segments::default();
            segments.push(Bytes::copy_from_slice(&whole[..cut]));
            assert_eq!(
                split_payload(&mut segments, v1::SubmitJobResponse::PAYLOAD_PATH),
                None,
                "cut at {cut}"
            );
        }
        let mut segments = Segments::default();
        segments.push(Bytes::copy_from_slice(&whole));
        assert_eq!(split_payload(&mut segments, &[3, 6]), None);
    }
}
