//! The scheduler's settings.

use std::time::Duration;

/// Bounds on what one job holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimits {
    /// Chunks carved but not yet released.
    pub max_chunks: usize,
    /// Result bytes held (in flight, out of order, or not yet taken by the
    /// client).
    pub max_bytes: u64,
}

/// The scheduler's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// A worker silent for this long loses its leases.
    pub lease_timeout: Duration,
    /// Leases a chunk may use up (failures and losses) before its job fails.
    pub max_attempts: u32,
    pub window: WindowLimits,
    /// Jobs running at once; more are refused.
    pub max_running_jobs: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            lease_timeout: Duration::from_secs(5),
            max_attempts: 4,
            window: WindowLimits {
                // Enough for 1,000 workers with eight leases each.
                max_chunks: 8192,
                max_bytes: 64 << 20,
            },
            max_running_jobs: 64,
        }
    }
}
