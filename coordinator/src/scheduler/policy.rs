//! How big the next chunk is.
//!
//! Guided self-scheduling: each new chunk is a share of what is left,
//! divided by twice the cluster's compute threads, so chunks are large
//! while there is plenty of work (little per-chunk overhead) and shrink
//! towards the end (workers finish together). Sizes are whole leaves and
//! stay within what one message may carry.

use farm_catalog::grid::{LEAF_LEN, round_to_leaves};

/// The smallest chunk the policy picks on its own: 64 Ki elements, well
/// over the per-chunk cost of a lease round trip.
pub const MIN_CHUNK: u64 = 16 * LEAF_LEN;

/// The largest chunk when only the summary travels (16 Mi elements): a
/// few milliseconds of compute, so a lost worker costs little.
pub const MAX_SUMMARY_CHUNK: u64 = 4096 * LEAF_LEN;

/// The largest chunk when values are streamed back (1 Mi elements, 8 MiB).
pub const MAX_STREAM_CHUNK: u64 = 256 * LEAF_LEN;

/// The largest chunk a user may force with `--chunk-size`.
pub const MAX_FORCED_CHUNK: u64 = 16384 * LEAF_LEN;

/// The largest forced chunk when values are streamed: 16 MiB of values,
/// a quarter of the message limit.
pub const MAX_FORCED_STREAM_CHUNK: u64 = 512 * LEAF_LEN;

/// The length of the next chunk, given the job's forced size (if any),
/// the elements not yet carved, and the compute threads of the cluster.
pub fn next_chunk_len(
    forced: Option<u64>,
    remaining: u64,
    cluster_threads: u64,
    stream_values: bool,
) -> u64 {
    let len = match forced {
        Some(len) => len,
        None => {
            let share = remaining / (2 * cluster_threads.max(1));
            let max = if stream_values {
                MAX_STREAM_CHUNK
            } else {
                MAX_SUMMARY_CHUNK
            };
            round_to_leaves(share).clamp(MIN_CHUNK, max)
        }
    };
    len.min(remaining)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guided_sizes_shrink_towards_the_end() {
        let big = next_chunk_len(None, 1_000_000_000, 2, false);
        assert_eq!(big, MAX_SUMMARY_CHUNK);
        let mid = next_chunk_len(None, 10_000_000, 2, false);
        assert_eq!(mid, round_to_leaves(2_500_000));
        assert_eq!(next_chunk_len(None, 100_000, 2, false), MIN_CHUNK);
        assert_eq!(next_chunk_len(None, 1000, 2, false), 1000);
        assert_eq!(
            next_chunk_len(None, 1_000_000_000, 2, true),
            MAX_STREAM_CHUNK
        );
    }

    #[test]
    fn forced_sizes_are_kept() {
        assert_eq!(
            next_chunk_len(Some(LEAF_LEN), 1_000_000, 8, false),
            LEAF_LEN
        );
        assert_eq!(next_chunk_len(Some(LEAF_LEN), 100, 8, false), 100);
    }

    #[test]
    fn sizes_are_whole_leaves_until_the_last() {
        for remaining in [LEAF_LEN * 1000 + 3, 123_456_789, 7] {
            let len = next_chunk_len(None, remaining, 3, false);
            assert!(len.is_multiple_of(LEAF_LEN) || len == remaining);
        }
    }
}
