//! How big the next chunk is.
//!
//! Two rules, the smaller wins:
//! - **Time**: a chunk should take about [`TARGET_CHUNK_TIME`] on the
//!   worker that gets it, at that worker's measured speed. Fast workers get
//!   big chunks, slow ones small chunks, and per-chunk overhead stays a
//!   small, fixed fraction of the work.
//! - **Guided**: at most a quarter of the worker's share (by speed) of the
//!   elements not yet carved, so chunks shrink towards the end of a job and
//!   the workers finish together.
//!
//! Sizes are whole leaves and stay within what one message may carry.
//! `--chunk-size` overrides both rules.

use std::time::Duration;

use farm_catalog::grid::{LEAF_LEN, round_to_leaves};

use super::speed::Speed;

/// What a chunk should take on its worker: long enough that the lease
/// round trip and the merge are noise, short enough that a lost or slow
/// worker costs little and the end of a job balances well.
pub const TARGET_CHUNK_TIME: Duration = Duration::from_millis(25);

/// A chunk is at most this share of the worker's part of what is left.
const GUIDED_DIVISOR: f64 = 4.0;

/// The smallest chunk the policy picks on its own: 64 Ki elements, well
/// over the per-chunk cost of a lease round trip.
pub const MIN_CHUNK: u64 = 16 * LEAF_LEN;

/// The largest chunk when only the summary travels (64 Mi elements; its
/// leaf statistics are 384 KiB).
pub const MAX_SUMMARY_CHUNK: u64 = 16384 * LEAF_LEN;

/// The largest chunk when values are streamed back (1 Mi elements, 8 MiB).
pub const MAX_STREAM_CHUNK: u64 = 256 * LEAF_LEN;

/// The largest chunk a user may force with `--chunk-size`.
pub const MAX_FORCED_CHUNK: u64 = 16384 * LEAF_LEN;

/// The largest forced chunk when values are streamed: 16 MiB of values,
/// a quarter of the message limit.
pub const MAX_FORCED_STREAM_CHUNK: u64 = 512 * LEAF_LEN;

/// What the scheduler knows about the worker a chunk is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sizing {
    /// The worker's share of the cluster's speed, in (0, 1].
    pub share: f64,
    /// Its speed, measured or estimated; `None` before any worker reported.
    pub speed: Option<Speed>,
}

/// The length of the next chunk, given the job's forced size (if any) and
/// the elements not yet carved.
pub(crate) fn next_chunk_len(
    forced: Option<u64>,
    remaining: u64,
    sizing: Sizing,
    stream_values: bool,
) -> u64 {
    let len = match forced {
        Some(len) => len,
        None => {
            let max = if stream_values {
                MAX_STREAM_CHUNK
            } else {
                MAX_SUMMARY_CHUNK
            };
            let guided = remaining as f64 * sizing.share / GUIDED_DIVISOR;
            let timed = sizing
                .speed
                .map_or(f64::INFINITY, |s| s.0 * TARGET_CHUNK_TIME.as_secs_f64());
            let wanted = guided.min(timed).min(max as f64);
            // `as` saturates; the clamp keeps the result in range.
            round_to_leaves(wanted as u64).clamp(MIN_CHUNK, max)
        }
    };
    len.min(remaining)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmeasured(share: f64) -> Sizing {
        Sizing { share, speed: None }
    }

    #[test]
    fn guided_sizes_shrink_towards_the_end() {
        let big = next_chunk_len(None, 10_000_000_000, unmeasured(0.5), false);
        assert_eq!(big, MAX_SUMMARY_CHUNK);
        let mid = next_chunk_len(None, 10_000_000, unmeasured(0.5), false);
        assert_eq!(mid, round_to_leaves(1_250_000));
        assert_eq!(
            next_chunk_len(None, 100_000, unmeasured(0.5), false),
            MIN_CHUNK
        );
        assert_eq!(next_chunk_len(None, 1000, unmeasured(0.5), false), 1000);
        assert_eq!(
            next_chunk_len(None, 1_000_000_000, unmeasured(0.5), true),
            MAX_STREAM_CHUNK
        );
    }

    #[test]
    fn measured_speed_sets_the_size() {
        // 1e9 elements/s: 25 ms is 25 M elements.
        let fast = Sizing {
            share: 0.5,
            speed: Some(Speed(1e9)),
        };
        assert_eq!(
            next_chunk_len(None, 10_000_000_000, fast, false),
            round_to_leaves(25_000_000)
        );
        // A worker a tenth as fast gets a tenth of the size.
        let slow = Sizing {
            share: 0.05,
            speed: Some(Speed(1e8)),
        };
        assert_eq!(
            next_chunk_len(None, 10_000_000_000, slow, false),
            round_to_leaves(2_500_000)
        );
        // Near the end the guided rule takes over, in proportion to speed.
        let end_fast = next_chunk_len(None, 40_000_000, fast, false);
        let end_slow = next_chunk_len(None, 40_000_000, slow, false);
        assert_eq!(end_fast, round_to_leaves(5_000_000));
        assert_eq!(end_slow, round_to_leaves(500_000));
    }

    #[test]
    fn forced_sizes_are_kept() {
        assert_eq!(
            next_chunk_len(Some(LEAF_LEN), 1_000_000, unmeasured(0.1), false),
            LEAF_LEN
        );
        assert_eq!(
            next_chunk_len(Some(LEAF_LEN), 100, unmeasured(0.1), false),
            100
        );
    }

    #[test]
    fn sizes_are_whole_leaves_until_the_last() {
        for remaining in [LEAF_LEN * 1000 + 3, 123_456_789, 7] {
            let len = next_chunk_len(None, remaining, unmeasured(0.3), false);
            assert!(len.is_multiple_of(LEAF_LEN) || len == remaining);
        }
    }
}
