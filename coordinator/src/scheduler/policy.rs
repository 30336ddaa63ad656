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
//!
//! **Thin links**: when values are streamed, what a chunk takes is the
//! time its values need to arrive, not only to be computed: a worker
//! behind a link slower than its cores is sized (and its holds planned)
//! at its delivery rate ([`Sizing::pace`]). Its chunks then cross the
//! link in about [`TARGET_CHUNK_TIME`] instead of seconds, so each one
//! holds the ordered merge's window (and the near workers filling it)
//! only that long.
//!
//! **Far workers** ([`leases_to_hold`]): a worker asks for more work when a
//! chunk ends, and the grant takes a round trip to arrive, so the work it
//! holds must cover its round trip (Little's law). A worker whose round
//! trip is long against its chunk time is granted leases beyond its
//! demand, up to [`MAX_HELD_AHEAD`]; near workers (round trip well under a
//! chunk) hold what they ask for, as before. Those extra leases are
//! full-size chunks ([`full_size`]) or, near a job's end when chunks
//! shrink, tail chunks only while the worker holds no more than its
//! share of the work left (`Job::next_work`): a lone far worker gets the
//! whole tail in one round trip, and beside near workers the rest of the
//! tail stays with whoever finishes first.

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

/// The most leases the scheduler grants one worker ahead of its demand,
/// however far it is: a bound on what one worker may hold.
pub const MAX_HELD_AHEAD: u32 = 64;

/// The round trip is covered this many times over, for its jitter and the
/// time a result waits for its worker's next message.
const ROUND_TRIP_MARGIN: f64 = 1.5;

/// What the scheduler knows about the worker a chunk is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sizing {
    /// The worker's share of the cluster's speed, in (0, 1].
    pub share: f64,
    /// Its speed, measured or estimated; `None` before any worker reported.
    pub speed: Option<Speed>,
    /// How fast its streamed values arrive, once measured: below `speed`
    /// when its link is thinner than its cores are fast.
    pub delivery: Option<Speed>,
}

impl Sizing {
    /// Streamed values from a worker whose delivery rate is not known yet:
    /// it gets the smallest chunks, and none ahead of its demand, until
    /// its first arrive. Behind a thin link a full-size first chunk would
    /// hold the window's front for seconds.
    fn delivery_unknown(&self, stream_values: bool) -> bool {
        stream_values && self.delivery.is_none()
    }

    /// The elements per second a chunk is planned at: the speed, or for
    /// streamed values the delivery rate if that is slower.
    pub fn pace(&self, stream_values: bool) -> Option<Speed> {
        match (self.speed, self.delivery) {
            (Some(speed), Some(delivery)) if stream_values => Some(Speed(speed.0.min(delivery.0))),
            (None, Some(delivery)) if stream_values => Some(delivery),
            (speed, _) => speed,
        }
    }
}

/// How many leases a worker should hold so that its threads never wait for
/// a grant: one computing, and enough queued behind it to last
/// `ROUND_TRIP_MARGIN` round trips at `chunk_time` each. 0 when the round
/// trip is unknown or one queued chunk covers it (the worker's own demand
/// rules: near workers are unchanged). At most
/// [`MAX_HELD_AHEAD`].
pub(crate) fn leases_to_hold(round_trip: Option<Duration>, chunk_time: Duration) -> u32 {
    let Some(round_trip) = round_trip else {
        return 0;
    };
    let chunk = chunk_time.as_secs_f64().max(1e-6);
    let queued = (round_trip.as_secs_f64() * ROUND_TRIP_MARGIN / chunk).ceil();
    if queued <= 1.0 {
        // One queued chunk covers it: the worker's own prefetch does that.
        return 0;
    }
    // `as` saturates; the bound keeps it sane.
    (1 + queued as u32).min(MAX_HELD_AHEAD)
}

/// How long a full-size chunk (the time rule, within the smallest and
/// largest allowed) takes at `pace`: the chunk time [`leases_to_hold`]
/// plans with.
pub(crate) fn full_chunk_time(pace: Speed, stream_values: bool) -> Duration {
    let max = if stream_values {
        MAX_STREAM_CHUNK
    } else {
        MAX_SUMMARY_CHUNK
    };
    pace.time_for(max)
        .min(TARGET_CHUNK_TIME)
        .max(pace.time_for(MIN_CHUNK))
}

/// Whether the next chunk of a job with `remaining` elements not yet carved
/// would be full size for this worker (the guided rule does not shrink
/// it): a worker may always get such a chunk ahead of its demand.
pub(crate) fn full_size(
    forced: Option<u64>,
    remaining: u64,
    sizing: Sizing,
    stream_values: bool,
) -> bool {
    let guided = remaining as f64 * sizing.share / GUIDED_DIVISOR;
    if let Some(len) = forced {
        // The same bound as the guided rule: a quarter of the worker's
        // share of what is left.
        return remaining > 0 && guided >= len as f64;
    }
    if sizing.delivery_unknown(stream_values) {
        return false;
    }
    let max = if stream_values {
        MAX_STREAM_CHUNK
    } else {
        MAX_SUMMARY_CHUNK
    };
    let timed = sizing
        .pace(stream_values)
        .map_or(f64::INFINITY, |s| s.0 * TARGET_CHUNK_TIME.as_secs_f64());
    guided >= timed.min(max as f64)
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
        None if sizing.delivery_unknown(stream_values) => MIN_CHUNK,
        None => {
            let max = if stream_values {
                MAX_STREAM_CHUNK
            } else {
                MAX_SUMMARY_CHUNK
            };
            let guided = remaining as f64 * sizing.share / GUIDED_DIVISOR;
            let timed = sizing
                .pace(stream_values)
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
        Sizing {
            share,
            speed: None,
            delivery: None,
        }
    }

    /// Unmeasured, but its values known to arrive at once.
    fn delivered(share: f64) -> Sizing {
        Sizing {
            delivery: Some(Speed(f64::INFINITY)),
            ..unmeasured(share)
        }
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
            next_chunk_len(None, 1_000_000_000, delivered(0.5), true),
            MAX_STREAM_CHUNK
        );
    }

    #[test]
    fn measured_speed_sets_the_size() {
        // 1e9 elements/s: 25 ms is 25 M elements.
        let fast = Sizing {
            share: 0.5,
            speed: Some(Speed(1e9)),
            delivery: None,
        };
        assert_eq!(
            next_chunk_len(None, 10_000_000_000, fast, false),
            round_to_leaves(25_000_000)
        );
        // A worker a tenth as fast gets a tenth of the size.
        let slow = Sizing {
            share: 0.05,
            speed: Some(Speed(1e8)),
            delivery: None,
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
    fn far_workers_hold_enough_to_cover_their_round_trip() {
        let chunk = Duration::from_millis(25);
        assert_eq!(leases_to_hold(None, chunk), 0);
        // Near: the worker's own prefetch covers it.
        assert_eq!(leases_to_hold(Some(Duration::from_micros(300)), chunk), 0);
        assert_eq!(leases_to_hold(Some(Duration::from_millis(20)), chunk), 3);
        // 190 ms round trip at 25 ms a chunk: 285 ms queued, 12 chunks.
        assert_eq!(leases_to_hold(Some(Duration::from_millis(190)), chunk), 13);
        // Bounded however far or small.
        assert_eq!(
            leases_to_hold(Some(Duration::from_secs(10)), Duration::from_micros(10)),
            MAX_HELD_AHEAD
        );
        // A full chunk at 1e9/s: 25 ms, or the largest stream chunk.
        assert_eq!(full_chunk_time(Speed(1e9), false), chunk);
        assert_eq!(
            full_chunk_time(Speed(1e9), true),
            Speed(1e9).time_for(MAX_STREAM_CHUNK)
        );
    }

    #[test]
    fn only_full_size_chunks_go_ahead_of_demand() {
        let fast = Sizing {
            share: 0.5,
            speed: Some(Speed(1e9)),
            delivery: None,
        };
        // 25 M elements a chunk: guided needs 200 M left at half the speed.
        assert!(full_size(None, 10_000_000_000, fast, false));
        assert!(full_size(None, 200_000_000, fast, false));
        assert!(!full_size(None, 199_000_000, fast, false));
        // Forced sizes: while a chunk is a quarter of the worker's share.
        assert!(full_size(Some(LEAF_LEN), 8 * LEAF_LEN, fast, false));
        assert!(!full_size(Some(LEAF_LEN), 7 * LEAF_LEN, fast, false));
        assert!(!full_size(Some(LEAF_LEN), 0, fast, false));
    }

    #[test]
    fn streamed_values_are_sized_at_the_delivery_rate() {
        // Computes 1e9 elements/s, delivers 1e6 (8 MB/s of values).
        let thin = Sizing {
            share: 0.5,
            speed: Some(Speed(1e9)),
            delivery: Some(Speed(1e6)),
        };
        // A summary does not cross the link: sized at the speed.
        assert_eq!(
            next_chunk_len(None, 10_000_000_000, thin, false),
            round_to_leaves(25_000_000)
        );
        // Values do: 25 ms of them is 25,000 elements, the smallest chunk.
        assert_eq!(next_chunk_len(None, 10_000_000_000, thin, true), MIN_CHUNK);
        assert_eq!(
            full_chunk_time(thin.pace(true).unwrap(), true),
            Speed(1e6).time_for(MIN_CHUNK)
        );
        // Before its first values arrive: the smallest, and none ahead.
        let unknown = Sizing {
            delivery: None,
            ..thin
        };
        assert_eq!(
            next_chunk_len(None, 10_000_000_000, unknown, true),
            MIN_CHUNK
        );
        assert!(!full_size(None, 10_000_000_000, unknown, true));
        assert!(full_size(None, 10_000_000_000, unknown, false));
        // Delivering faster than it computes: the speed rules.
        let near = Sizing {
            delivery: Some(Speed(1e10)),
            ..thin
        };
        assert_eq!(near.pace(true), Some(Speed(1e9)));
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
