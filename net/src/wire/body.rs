//! An HTTP body fed, message by message, from a bounded queue.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::vec;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};
use tokio::sync::mpsc;
use tonic::{Code, Status};

use super::Encoded;

/// Where a call's messages are queued for its [`FrameBody`]. An `Err`
/// ends the call with that status.
pub type FrameSender = mpsc::Sender<Result<Encoded, Status>>;

/// One direction of a gRPC call as an HTTP body: each queued message
/// becomes a data frame for its head and one for each piece of its
/// payload, handed on as they are. The queue's bound is the body's: when the peer reads
/// slowly, HTTP/2 flow control stops polling the body and senders wait.
#[derive(Debug)]
pub struct FrameBody {
    queue: mpsc::Receiver<Result<Encoded, Status>>,
    /// The payload pieces of the message whose head was just sent.
    payload: vec::IntoIter<Bytes>,
    /// A response: ends with the call's status as trailers.
    trailers: bool,
    done: bool,
}

impl FrameBody {
    /// A response body: it ends with trailers carrying the status (OK when
    /// the sender is dropped).
    pub fn response(capacity: usize) -> (FrameSender, FrameBody) {
        FrameBody::new(capacity, true)
    }

    /// A request body: it ends when the sender is dropped, or fails the
    /// call on an `Err`.
    pub fn request(capacity: usize) -> (FrameSender, FrameBody) {
        FrameBody::new(capacity, false)
    }

    /// A response of one message.
    pub fn single_response(message: Encoded) -> FrameBody {
        let (sender, body) = FrameBody::response(1);
        // The queue is new and has room for one.
        let _ = sender.try_send(Ok(message));
        body
    }

    /// A request of one message.
    pub fn single_request(message: Encoded) -> FrameBody {
        let (sender, body) = FrameBody::request(1);
        let _ = sender.try_send(Ok(message));
        body
    }

    fn new(capacity: usize, trailers: bool) -> (FrameSender, FrameBody) {
        let (sender, queue) = mpsc::channel(capacity);
        let body = FrameBody {
            queue,
            payload: Vec::new().into_iter(),
            trailers,
            done: false,
        };
        (sender, body)
    }

    fn end(&mut self, status: Status) -> Option<Result<Frame<Bytes>, Status>> {
        self.done = true;
        if !self.trailers {
            return (status.code() != Code::Ok).then_some(Err(status));
        }
        let mut headers = HeaderMap::new();
        if status.add_header(&mut headers).is_err() {
            // Only a message that cannot be a header value gets here.
            let _ = Status::internal("an error that cannot be sent").add_header(&mut headers);
        }
        Some(Ok(Frame::trailers(headers)))
    }
}

impl Body for FrameBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(part) = self.payload.next() {
            return Poll::Ready(Some(Ok(Frame::data(part))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let frame = match ready!(self.queue.poll_recv(cx)) {
            Some(Ok(message)) => {
                let (head, payload) = message.into_parts();
                self.payload = payload.into_parts().into_iter();
                Some(Ok(Frame::data(head)))
            }
            Some(Err(status)) => self.end(status),
            None => self.end(Status::new(Code::Ok, "")),
        };
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.payload.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::{MessageReader, Payload};
    use farm_proto::v1;
    use farm_proto::v1::submit_job_response::Event;

    #[tokio::test]
    async fn a_response_carries_payloads_untouched_and_ends_with_its_status() {
        let (sender, body) = FrameBody::response(4);
        let pieces = [
            Bytes::from(vec![3u8; 100_000]),
            Bytes::from(vec![4u8; 50_000]),
        ];
        let payload = Payload::from(pieces.to_vec());
        let encoded = Encoded::values_batch(8, payload.clone()).unwrap();
        sender.send(Ok(encoded)).await.unwrap();
        sender.send(Err(Status::aborted("stop"))).await.unwrap();
        drop(sender);
        let mut reader = MessageReader::new(body);
        let (response, received) = reader
            .message_with_payload::<v1::SubmitJobResponse>()
            .await
            .unwrap()
            .unwrap();
        let Some(Event::Values(batch)) = response.event else {
            panic!("not a values batch: {response:?}");
        };
        assert_eq!(batch.offset, 8);
        assert_eq!(received, payload);
        // The very buffers that were sent: no copy on the way.
        for (sent, got) in pieces.iter().zip(received.parts()) {
            assert_eq!(got.as_ptr(), sent.as_ptr());
        }
        let status = reader.message::<v1::ValuesBatch>().await.unwrap_err();
        assert_eq!(status.code(), Code::Aborted);
    }

    #[tokio::test]
    async fn a_request_ends_when_its_sender_goes() {
        let message = v1::JobProgress {
            elements_done: 1,
            chunks_done: 2,
        };
        let body = FrameBody::single_request(Encoded::message(&message).unwrap());
        let mut reader = MessageReader::new(body);
        assert_eq!(reader.message().await.unwrap(), Some(message));
        assert_eq!(reader.message::<v1::JobProgress>().await.unwrap(), None);
    }
}
