//! Received bytes as the frames they arrived in, read as one buffer.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A queue of received frames that reads as one contiguous [`Buf`].
/// [`Buf::copy_to_bytes`] slices a frame instead of copying whenever the
/// bytes asked for lie in one frame, which is how protobuf's decoder takes
/// `bytes` fields: a payload sent as a frame of its own arrives as a slice
/// of the receive buffer.
#[derive(Debug, Default, Clone)]
pub(super) struct Segments {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl Segments {
    pub(super) fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.remaining += bytes.len();
            self.parts.push_back(bytes);
        }
    }

    /// The frames, in order.
    pub(super) fn into_parts(self) -> Vec<Bytes> {
        self.parts.into()
    }

    /// The first `len` bytes, as segments of their own (no copy).
    pub(super) fn split_to(&mut self, len: usize) -> Segments {
        assert!(len <= self.remaining, "split past the end of the segments");
        let mut front = Segments::default();
        let mut left = len;
        while left > 0 {
            let Some(part) = self.parts.front_mut() else {
                break;
            };
            if part.len() <= left {
                left -= part.len();
                if let Some(part) = self.parts.pop_front() {
                    front.push(part);
                }
            } else {
                front.push(part.split_to(left));
                left = 0;
            }
        }
        self.remaining -= len;
        front
    }

    /// The byte at `index` from the front, if there is one.
    pub(super) fn peek(&self, index: usize) -> Option<u8> {
        let mut index = index;
        for part in &self.parts {
            if index < part.len() {
                return Some(part[index]);
            }
            index -= part.len();
        }
        None
    }
}

impl Buf for Segments {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |part| part.as_ref())
    }

    fn advance(&mut self, cnt: usize) {
        assert!(
            cnt <= self.remaining,
            "advance past the end of the segments"
        );
        let mut left = cnt;
        while left > 0 {
            let Some(part) = self.parts.front_mut() else {
                break;
            };
            if part.len() <= left {
                left -= part.len();
                self.parts.pop_front();
            } else {
                part.advance(left);
                left = 0;
            }
        }
        self.remaining -= cnt;
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        assert!(len <= self.remaining, "copy past the end of the segments");
        if let Some(part) = self.parts.front_mut()
            && part.len() >= len
        {
            let bytes = part.split_to(len);
            if part.is_empty() {
                self.parts.pop_front();
            }
            self.remaining -= len;
            return bytes;
        }
        // Spread over several frames: one copy to make it contiguous.
        let mut out = BytesMut::with_capacity(len);
        out.put(self.take(len));
        out.freeze()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn segments(parts: &[&'static [u8]]) -> Segments {
        let mut s = Segments::default();
        for part in parts {
            s.push(Bytes::from_static(part));
        }
        s
    }

    #[test]
    fn reads_across_frames() {
        let mut s = segments(&[b"ab", b"", b"cde", b"f"]);
        assert_eq!(s.remaining(), 6);
        assert_eq!(s.peek(4), Some(b'e'));
        assert_eq!(s.peek(6), None);
        assert_eq!(s.get_u8(), b'a');
        assert_eq!(s.copy_to_bytes(3), Bytes::from_static(b"bcd"));
        let mut front = s.split_to(1);
        assert_eq!(front.copy_to_bytes(1), Bytes::from_static(b"e"));
        assert_eq!(s.copy_to_bytes(1), Bytes::from_static(b"f"));
        assert_eq!(s.remaining(), 0);
    }

    #[test]
    fn bytes_within_one_frame_are_slices_of_it() {
        let frame = Bytes::from(vec![1u8; 1000]);
        let mut s = Segments::default();
        s.push(Bytes::from_static(b"xy"));
        s.push(frame.clone());
        s.advance(2);
        let payload = s.copy_to_bytes(1000);
        assert_eq!(payload.as_ptr(), frame.as_ptr());
    }
}
