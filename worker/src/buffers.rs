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

    /// A buffer with room for `len` values: a returned one if one is kept
    /// and large enough (its length and contents are whatever the last
    /// user left), else a new one.
    pub fn take(&self, len: usize) -> Vec<f64> {
        let kept = self.shared.lock().pop().unwrap_or_default();
        if kept.capacity() >= len {
            return kept;
        }
        // Too small: every value will be overwritten, so nothing of it is
        // worth copying into a grown one.
        drop(kept);
        fresh(len)
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

/// A new buffer for `len` values, backed by huge pages where the kernel
/// offers them (Linux's transparent huge pages, on request): its first
/// touch then faults once per 2 MiB instead of once per 4 KiB. The
/// embedded cluster keeps about 100 MB of values in flight, which cost
/// 25,000 page faults a job before.
fn fresh(len: usize) -> Vec<f64> {
    let values: Vec<f64> = Vec::with_capacity(len);
    advise_huge_pages(values.as_ptr(), values.capacity() * size_of::<f64>());
    values
}

/// Asks for huge pages for the whole 2 MiB pages inside `[start, start +
/// bytes)`, so the request never reaches memory outside the buffer.
fn advise_huge_pages(start: *const f64, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE_PAGE: usize = 2 << 20;
        let begin = (start as usize).next_multiple_of(HUGE_PAGE);
        let end = (start as usize).saturating_add(bytes) / HUGE_PAGE * HUGE_PAGE;
        if end > begin {
            // SAFETY: the range lies inside an allocation this function's
            // caller owns; MADV_HUGEPAGE changes only how the kernel backs
            // it, never what it holds. A refusal changes nothing.
            unsafe {
                libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_HUGEPAGE);
            }
        }
    }
    let _ = (start, bytes);
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
        let mut values = pool.take(1 << 16);
        assert!(values.capacity() >= 1 << 16);
        assert!(values.is_empty());
        values.resize(1 << 16, 2.0);
        let address = values.as_ptr();
        drop(pool.into_bytes(values));
        let again = pool.take(1000);
        assert_eq!(again.as_ptr(), address);
        assert_eq!(again.len(), 1 << 16);
        assert_eq!(pool.kept(), 0);
        // One too small for the chunk is replaced, not grown.
        drop(pool.into_bytes(again));
        let larger = pool.take(1 << 17);
        assert!(larger.capacity() >= 1 << 17);
        assert!(larger.is_empty());
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
        let taken: Vec<Vec<f64>> = (0..5).map(|_| pool.take(100)).collect();
        let reused = taken.iter().filter(|v| v.len() == 100).count();
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
