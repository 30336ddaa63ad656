//! Reconnection delays: gRPC's connection back-off schedule.
//!
//! The first retry waits 1 s, each next one 1.6 times longer, capped at
//! 120 s, each randomised by ±20 % so a fleet of workers that lost the same
//! coordinator does not reconnect in lock step.

use std::time::Duration;

const INITIAL: Duration = Duration::from_secs(1);
const MULTIPLIER: f64 = 1.6;
const MAX: Duration = Duration::from_secs(120);
const JITTER: f64 = 0.2;

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    rng: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(seed())
    }
}

impl Backoff {
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            next: INITIAL,
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = base.mul_f64(MULTIPLIER).min(MAX);
        let spread = 1.0 + JITTER * (2.0 * self.random_unit() - 1.0);
        base.mul_f64(spread)
    }

    /// Back to the first delay, after a connection worked.
    pub fn reset(&mut self) {
        self.next = INITIAL;
    }

    /// xorshift64*: plenty for spreading retries.
    fn random_unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let bits = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        bits as f64 / (1u64 << 53) as f64
    }
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_grpc_schedule_within_the_jitter() {
        let mut backoff = Backoff::new(42);
        let mut expected = 1.0f64;
        for _ in 0..20 {
            let delay = backoff.next_delay().as_secs_f64();
            assert!(
                delay >= expected * 0.8 - 1e-9 && delay <= expected * 1.2 + 1e-9,
                "{delay} not within 20% of {expected}"
            );
            expected = (expected * 1.6).min(120.0);
        }
        assert_eq!(expected, 120.0);
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(1200));
    }
}
