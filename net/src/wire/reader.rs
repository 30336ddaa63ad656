//! Reading gRPC messages out of an HTTP body without copying payloads.

use std::pin::Pin;

use bytes::Buf;
use http_body::Body;
use prost::Message;
use tonic::Status;

use super::PREFIX_BYTES;
use super::encode::payload_wrapping;
use super::payload::{Payload, PayloadMessage, split_payload};
use super::segments::Segments;
use farm_proto::MAX_MESSAGE_BYTES;

/// The messages of one direction of a gRPC call, read from its HTTP body.
///
/// Frames are kept as they arrived and each message is decoded straight
/// from them, so a `bytes` field that arrived in a frame of its own (see
/// [`Encoded::with_payload`](super::Encoded::with_payload)) is a slice of
/// the receive buffer, and a payload that spans frames is read in its
/// pieces by [`message_with_payload`](Self::message_with_payload). At most
/// one message (bounded by [`MAX_MESSAGE_BYTES`]) plus one frame is held.
#[derive(Debug)]
pub struct MessageReader<B> {
    body: B,
    buffered: Segments,
    /// The call's status, once the body ended: from its trailers (a
    /// response), or OK (a request body, which has none).
    ended: Option<Result<(), Status>>,
}

impl<B> MessageReader<B>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(body: B) -> MessageReader<B> {
        MessageReader {
            body,
            buffered: Segments::default(),
            ended: None,
        }
    }

    /// A reader of a response that already ended with `status` (a
    /// trailers-only response).
    pub(super) fn ended(body: B, status: Result<(), Status>) -> MessageReader<B> {
        MessageReader {
            body,
            buffered: Segments::default(),
            ended: Some(status),
        }
    }

    /// The next message; `None` at the end of a call that succeeded, the
    /// call's status if it failed.
    pub async fn message<M: Message + Default>(&mut self) -> Result<Option<M>, Status> {
        let message = self.next_message().await?;
        message.map(|mut bytes| decode(&mut bytes)).transpose()
    }

    /// The next message, its payload field's bytes taken out as a
    /// [`Payload`] (empty if it has none), never joined into one buffer.
    pub async fn message_with_payload<M: PayloadMessage>(
        &mut self,
    ) -> Result<Option<(M, Payload)>, Status> {
        let Some(mut bytes) = self.next_message().await? else {
            return Ok(None);
        };
        let Some(payload) = split_payload(&mut bytes, M::PAYLOAD_PATH) else {
            let mut message: M = decode(&mut bytes)?;
            let payload = Payload::from(message.take_payload_field());
            return Ok(Some((message, payload)));
        };
        let mut message: M = decode(&mut bytes)?;
        // The split took the path's last occurrence too: merge an empty
        // one back, so the message holds the payload's enclosing fields
        // (a values batch at offset 0 has no other field to create them).
        message
            .merge(payload_wrapping(M::PAYLOAD_PATH, 0).as_slice())
            .map_err(|e| Status::internal(format!("a malformed message: {e}")))?;
        Ok(Some((message, payload)))
    }

    /// The next whole message's bytes (without the prefix).
    async fn next_message(&mut self) -> Result<Option<Segments>, Status> {
        loop {
            if let Some(message) = self.split_buffered()? {
                return Ok(Some(message));
            }
            if let Some(ended) = &self.ended {
                if self.buffered.remaining() > 0 {
                    return Err(Status::internal(format!(
                        "the stream ended inside a message ({} bytes left over)",
                        self.buffered.remaining()
                    )));
                }
                return ended.clone().map(|()| None);
            }
            self.read_frame().await?;
        }
    }

    async fn read_frame(&mut self) -> Result<(), Status> {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await;
        match frame {
            None => self.ended = Some(Ok(())),
            Some(Err(err)) => return Err(Status::from_error(err.into())),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => self.buffered.push(data),
                Err(frame) => {
                    let status = frame
                        .trailers_ref()
                        .and_then(Status::from_header_map)
                        .map_or(Ok(()), |status| {
                            if status.code() == tonic::Code::Ok {
                                Ok(())
                            } else {
                                Err(status)
                            }
                        });
                    self.ended = Some(status);
                }
            },
        }
        Ok(())
    }

    /// The first buffered message's bytes, if all of it is here.
    fn split_buffered(&mut self) -> Result<Option<Segments>, Status> {
        if self.buffered.remaining() < PREFIX_BYTES {
            return Ok(None);
        }
        let compressed = self.buffered.peek(0).unwrap_or(0);
        if compressed != 0 {
            return Err(Status::unimplemented(
                "compressed messages are not supported",
            ));
        }
        let len_bytes: [u8; 4] = std::array::from_fn(|i| self.buffered.peek(1 + i).unwrap_or(0));
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > MAX_MESSAGE_BYTES {
            return Err(Status::out_of_range(format!(
                "a message of {len} bytes is over the limit of {MAX_MESSAGE_BYTES}"
            )));
        }
        if self.buffered.remaining() < PREFIX_BYTES + len {
            return Ok(None);
        }
        self.buffered.advance(PREFIX_BYTES);
        Ok(Some(self.buffered.split_to(len)))
    }
}

fn decode<M: Message + Default>(bytes: &mut Segments) -> Result<M, Status> {
    M::decode(bytes).map_err(|e| Status::internal(format!("a malformed message: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::VecDeque;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::Frame;

    use super::*;
    use crate::wire::{Encoded, Payload};
    use farm_proto::v1;

    /// A body that yields given frames, then given trailers.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn progress(elements_done: u64) -> v1::JobProgress {
        v1::JobProgress {
            elements_done,
            chunks_done: 1,
        }
    }

    fn wire(messages: &[v1::JobProgress]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for message in messages {
            let (head, _) = Encoded::message(message).unwrap().into_parts();
            bytes.extend_from_slice(&head);
        }
        bytes
    }

    #[tokio::test]
    async fn messages_split_anyhow_across_frames() {
        let bytes = wire(&[progress(1), progress(300), progress(1 << 50)]);
        for cut in 1..bytes.len() {
            let frames = [&bytes[..cut], &bytes[cut..]]
                .map(|part| Frame::data(Bytes::copy_from_slice(part)));
            let mut reader = MessageReader::new(Frames(frames.into()));
            for expected in [1, 300, 1 << 50] {
                let message: v1::JobProgress = reader.message().await.unwrap().unwrap();
                assert_eq!(message, progress(expected), "cut at {cut}");
            }
            assert_eq!(reader.message::<v1::JobProgress>().await.unwrap(), None);
        }
    }

    /// A values batch at offset 0, whose payload is all it has, cut at
    /// every position a flow-control window could cut it; and the same
    /// batch as any protobuf encoder writes it.
    #[tokio::test]
    async fn payloads_come_out_whole_wherever_frames_cut_them() {
        let values = Bytes::from((0..2000u32).flat_map(u32::to_le_bytes).collect::<Vec<_>>());
        let batch = |values_le| v1::SubmitJobResponse {
            event: Some(v1::submit_job_response::Event::Values(v1::ValuesBatch {
                offset: 0,
                values_le,
            })),
        };
        let (head, payload) = Encoded::values_batch(0, Payload::from(values.clone()))
            .unwrap()
            .into_parts();
        let mut apart = head.to_vec();
        apart.extend_from_slice(&payload.joined());
        let mut whole = vec![0u8];
        whole.extend_from_slice(&(batch(values.clone()).encoded_len() as u32).to_be_bytes());
        whole.extend_from_slice(&batch(values.clone()).encode_to_vec());
        for bytes in [apart, whole] {
            for cut in (1..bytes.len()).step_by(997) {
                let frames = [&bytes[..cut], &bytes[cut..]]
                    .map(|part| Frame::data(Bytes::copy_from_slice(part)));
                let mut reader = MessageReader::new(Frames(frames.into()));
                let (message, payload) = reader
                    .message_with_payload::<v1::SubmitJobResponse>()
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(message, batch(Bytes::new()), "cut at {cut}");
                assert_eq!(payload.joined(), values, "cut at {cut}");
            }
        }
    }

    #[tokio::test]
    async fn trailers_carry_the_status() {
        let mut trailers = http::HeaderMap::new();
        Status::aborted("job 3 failed")
            .add_header(&mut trailers)
            .unwrap();
        let frames = [
            Frame::data(Bytes::from(wire(&[progress(5)]))),
            Frame::trailers(trailers),
        ];
        let mut reader = MessageReader::new(Frames(frames.into()));
        assert_eq!(
            reader.message::<v1::JobProgress>().await.unwrap(),
            Some(progress(5))
        );
        let status = reader.message::<v1::JobProgress>().await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert_eq!(status.message(), "job 3 failed");
    }

    #[tokio::test]
    async fn a_truncated_or_oversized_message_is_an_error() {
        let bytes = wire(&[progress(5)]);
        let frames = [Frame::data(Bytes::copy_from_slice(
            &bytes[..bytes.len() - 1],
        ))];
        let mut reader = MessageReader::new(Frames(frames.into()));
        let status = reader.message::<v1::JobProgress>().await.unwrap_err();
        assert!(
            status.message().contains("ended inside a message"),
            "{status}"
        );

        let huge = [0, 0xff, 0xff, 0xff, 0xff];
        let frames = [Frame::data(Bytes::copy_from_slice(&huge))];
        let mut reader = MessageReader::new(Frames(frames.into()));
        let status = reader.message::<v1::JobProgress>().await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::OutOfRange);

        let compressed = [1, 0, 0, 0, 0];
        let frames = [Frame::data(Bytes::copy_from_slice(&compressed))];
        let mut reader = MessageReader::new(Frames(frames.into()));
        let status = reader.message::<v1::JobProgress>().await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }
}
