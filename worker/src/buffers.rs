//! Buffers for streamed values, reused from chunk to chunk.
//!
//! A chunk's values go to the wire as [`Bytes`] without a copy. Once tonic
//! has encoded the message and dropped those bytes, the buffer comes back
//! here and the next chunk is computed into it, instead of into fresh
//! memory: faulting in fresh pages costs more than the square roots
//! written into them, and tens of MiB freed and allocated again per chunk
//! let the allocator's heaps grow and fragment.
//!
//! The pool keeps at most a few buffers (a worker computes one chunk at a
//! time, and the one before it is usually still being encoded); any beyond
//! that go back to the allocator, so its memory stays bounded.

use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use bytes::Bytes;

/// Buffers kept for reuse, per pool.
pub const MAX_KEPT: usize = 4;

/// This process's pool: shared by every session, like the allocator it
/// stands in front of.
pub(crate) static VALUES: LazyLock<BufferPool> = LazyLock::new(|| BufferPool::new(MAX_KEPT));

/// A bounded pool of `Vec<f64>` buffers.
#[derive(Debug, Clone)]
pub struct BufferPool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    free: Mutex<Vec<Vec<f64>>>,
    max_kept: usize,
}

impl BufferPool {
    /// A pool that keeps at most `max_kept` buffers.
    pub fn new(max_kept: usize) -> BufferPool {
        BufferPool {
            shared: Arc::new(Shared {
                free: Mutex::new(Vec::with_capacity(max_kept)),
                max_kept,
            }),
        }
    }

    /// A buffer to fill: a returned one if there is one (its length and
    /// contents are whatever the last user left), else an empty one.
    pub fn take(&self) -> Vec<f64> {
        self.shared.lock().pop().unwrap_or_default()
    }

    /// Hands `values` to the wire as little-endian bytes, without copying;
    /// the buffer comes back to this pool when the last of those bytes is
    /// dropped.
    pub fn into_bytes(&self, mut values: Vec<f64>) -> Bytes {
        if cfg!(target_endian = "big") {
            for v in &mut values {
                *v = f64::from_bits(v.to_bits().to_le());
            }
        }
        Bytes::from_owner(Lent {
            values,
            pool: self.clone(),
        })
    }

    /// Buffers waiting to be reused.
    pub fn kept(&self) -> usize {
        self.shared.lock().len()
    }

    fn give_back(&self, values: Vec<f64>) {
        if values.capacity() == 0 {
            return;
        }
        let mut free = self.shared.lock();
        if free.len() < self.shared.max_kept {
            free.push(values);
            return;
        }
        drop(free);
        // Over the bound: `values` goes back to the allocator here.
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<f64>>> {
        // The list stays valid whatever a panicking holder was doing.
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Values lent to a [`Bytes`], already in little-endian order.
struct Lent {
    values: Vec<f64>,
    pool: BufferPool,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.values)
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.values));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_the_values_in_little_endian() {
        let pool = BufferPool::new(2);
        let values = vec![0.0, -0.0, 1.5, f64::NAN, f64::MAX];
        let bytes = pool.into_bytes(values.clone());
        assert_eq!(bytes.len(), values.len() * 8);
        for (chunk, value) in bytes.chunks_exact(8).zip(&values) {
            assert_eq!(chunk, value.to_le_bytes());
        }
        // Slices and clones share the buffer: it comes back after the last.
        let tail = bytes.slice(8..);
        drop(bytes);
        assert_eq!(pool.kept(), 0);
        drop(tail);
        assert_eq!(pool.kept(), 1);
    }

    #[test]
    fn a_returned_buffer_is_reused() {
        let pool = BufferPool::new(2);
        let mut values = pool.take();
        assert_eq!(values.capacity(), 0);
        values.resize(1 << 16, 2.0);
        let address = values.as_ptr();
        drop(pool.into_bytes(values));
        let again = pool.take();
        assert_eq!(again.as_ptr(), address);
        assert_eq!(again.len(), 1 << 16);
        assert_eq!(pool.kept(), 0);
    }

    #[test]
    fn at_most_max_kept_buffers_are_kept() {
        let pool = BufferPool::new(3);
        let lent: Vec<Bytes> = (0..10)
            .map(|i| pool.into_bytes(vec![f64::from(i); 100]))
            .collect();
        assert_eq!(pool.kept(), 0);
        drop(lent);
        assert_eq!(pool.kept(), 3);
        // Empty buffers hold no memory and are not kept.
        drop(pool.into_bytes(Vec::new()));
        let taken: Vec<Vec<f64>> = (0..5).map(|_| pool.take()).collect();
        let reused = taken.iter().filter(|v| v.capacity() > 0).count();
        assert_eq!(reused, 3);
        assert_eq!(pool.kept(), 0);
    }

    #[test]
    fn buffers_come_back_from_other_threads() {
        let pool = BufferPool::new(2);
        let bytes = pool.into_bytes(vec![1.0; 64]);
        std::thread::spawn(move || drop(bytes)).join().unwrap();
        assert_eq!(pool.kept(), 1);
    }
}
