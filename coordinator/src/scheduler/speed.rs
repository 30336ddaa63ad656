//! How fast each worker computes, learned from its results.
//!
//! Workers report the wall time each chunk took them; the scheduler keeps
//! an exponentially weighted average of elements per second per worker.
//! Chunk sizes follow it (each worker gets chunks that take about the same
//! time on it), and straggler detection compares it across workers. A
//! worker that has not reported yet is assumed to be as fast per thread as
//! the average of those that have.

use std::time::Duration;

/// Weight of the newest measurement: recent enough to follow a worker that
/// slows down, smooth enough to ignore one noisy chunk.
const NEWEST_WEIGHT: f64 = 0.3;

/// Shortest compute time taken at face value: timer resolution.
const MIN_MEASURED: Duration = Duration::from_micros(1);

/// A worker's measured speed, in elements per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Speed(pub f64);

impl Speed {
    pub fn measured(elements: u64, took: Duration) -> Speed {
        Speed(elements as f64 / took.max(MIN_MEASURED).as_secs_f64())
    }

    /// Folds a new measurement into the average.
    pub fn update(previous: Option<Speed>, newest: Speed) -> Speed {
        match previous {
            None => newest,
            Some(Speed(old)) => Speed(old + NEWEST_WEIGHT * (newest.0 - old)),
        }
    }

    /// How long `elements` take at this speed.
    pub fn time_for(self, elements: u64) -> Duration {
        if self.0 > 0.0 && self.0.is_finite() {
            Duration::from_secs_f64((elements as f64 / self.0).min(1e9))
        } else {
            Duration::MAX
        }
    }
}

/// The cluster's total speed, kept as sums so each change is O(1) however
/// many workers there are.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ClusterSpeed {
    /// Sum of the speeds of workers that have reported.
    measured: f64,
    /// Their threads.
    measured_threads: u64,
    /// Threads of workers that have not reported yet.
    unmeasured_threads: u64,
}

impl ClusterSpeed {
    pub fn add(&mut self, speed: Option<Speed>, threads: u32) {
        match speed {
            Some(Speed(s)) => {
                self.measured += s;
                self.measured_threads += u64::from(threads);
            }
            None => self.unmeasured_threads += u64::from(threads),
        }
    }

    pub fn remove(&mut self, speed: Option<Speed>, threads: u32) {
        match speed {
            Some(Speed(s)) => {
                self.measured = (self.measured - s).max(0.0);
                self.measured_threads = self.measured_threads.saturating_sub(u64::from(threads));
            }
            None => {
                self.unmeasured_threads =
                    self.unmeasured_threads.saturating_sub(u64::from(threads));
            }
        }
    }

    pub fn threads(&self) -> u64 {
        self.measured_threads + self.unmeasured_threads
    }

    /// A worker's speed, measured or estimated from its threads; `None`
    /// until some worker has reported.
    pub fn estimate(&self, speed: Option<Speed>, threads: u32) -> Option<Speed> {
        speed.or_else(|| {
            (self.measured_threads > 0).then(|| {
                Speed(self.measured / self.measured_threads as f64 * f64::from(threads.max(1)))
            })
        })
    }

    /// The share of the cluster's speed that one worker has, in (0, 1].
    pub fn share(&self, speed: Option<Speed>, threads: u32) -> f64 {
        let threads = threads.max(1);
        let share = match (self.estimate(speed, threads), self.total()) {
            (Some(Speed(mine)), Some(Speed(all))) if all > 0.0 => mine / all,
            _ => f64::from(threads) / self.threads().max(1) as f64,
        };
        share.clamp(f64::MIN_POSITIVE, 1.0)
    }

    fn total(&self) -> Option<Speed> {
        (self.measured_threads > 0).then(|| {
            let per_thread = self.measured / self.measured_threads as f64;
            Speed(self.measured + per_thread * self.unmeasured_threads as f64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_average_and_shares_follow_them() {
        let fast = Speed::measured(2_000_000, Duration::from_millis(1));
        assert_eq!(fast, Speed(2e9));
        let slowed = Speed::update(Some(fast), Speed(1e9));
        assert!((slowed.0 - 1.7e9).abs() < 1.0);
        assert_eq!(Speed(1e9).time_for(1_000_000), Duration::from_millis(1));

        let mut cluster = ClusterSpeed::default();
        cluster.add(None, 2);
        cluster.add(None, 1);
        // Nothing measured: shares by threads.
        assert!((cluster.share(None, 2) - 2.0 / 3.0).abs() < 1e-9);
        cluster.remove(None, 1);
        cluster.add(Some(Speed(1e9)), 1);
        // The unmeasured 2-thread worker is estimated at 2e9.
        assert_eq!(cluster.estimate(None, 2), Some(Speed(2e9)));
        assert!((cluster.share(Some(Speed(1e9)), 1) - 1.0 / 3.0).abs() < 1e-9);
    }
}
