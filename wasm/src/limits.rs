//! The bounds every module and every instance runs within.

use std::time::Duration;

/// How far a module may go. The defaults suit a worker that runs strangers'
/// modules: a few MiB of code, 256 MiB of memory per instance (one
/// instance per thread), and a minute per chunk, so a function that never
/// returns fails its chunk well within two minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest module accepted, in bytes as submitted (text or binary).
    pub max_module_bytes: u64,
    /// The most linear memory one instance may have, in bytes, counting
    /// the pages farm adds for the output.
    pub max_memory_bytes: u64,
    /// The most table elements one instance may have.
    pub max_table_elements: u64,
    /// How long one chunk may compute before it fails with a timeout.
    pub chunk_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_module_bytes: 4 << 20,
            max_memory_bytes: 256 << 20,
            max_table_elements: 100_000,
            chunk_time: Duration::from_secs(60),
        }
    }
}

/// Bytes of output space each instance gets: one 64 KiB page, 8192
/// values, two leaves.
pub const OUTPUT_BYTES: u64 = 1 << 16;

/// The smallest time bound: below the epoch tick it could not be kept.
pub const MIN_CHUNK_TIME: Duration = Duration::from_millis(10);

/// Linear memory addresses are 32-bit: no instance can have more.
const MAX_ADDRESSABLE: u64 = 4 << 30;

/// A [`Limits`] that cannot be enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("max_module_bytes must be at least 8 (a module header), got {0}")]
    ModuleBytes(u64),
    #[error("max_memory_bytes must hold the output (at least {min}) and at most 4 GiB, got {got}")]
    MemoryBytes { min: u64, got: u64 },
    #[error("chunk_time must be at least {min:?}, got {got:?}")]
    ChunkTime { min: Duration, got: Duration },
}

impl Limits {
    /// Checks that the limits can be enforced.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.max_module_bytes < 8 {
            return Err(LimitsError::ModuleBytes(self.max_module_bytes));
        }
        let min = OUTPUT_BYTES;
        if self.max_memory_bytes < min || self.max_memory_bytes > MAX_ADDRESSABLE {
            return Err(LimitsError::MemoryBytes {
                min,
                got: self.max_memory_bytes,
            });
        }
        if self.chunk_time < MIN_CHUNK_TIME {
            return Err(LimitsError::ChunkTime {
                min: MIN_CHUNK_TIME,
                got: self.chunk_time,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounded() {
        let limits = Limits::default();
        assert_eq!(limits.validate(), Ok(()));
        // An endless loop must fail within two minutes with the defaults.
        assert!(limits.chunk_time < Duration::from_secs(120));
    }

    #[test]
    fn unenforceable_limits_are_refused() {
        let bad = |change: fn(&mut Limits)| {
            let mut limits = Limits::default();
            change(&mut limits);
            limits.validate()
        };
        assert_eq!(
            bad(|l| l.max_module_bytes = 3),
            Err(LimitsError::ModuleBytes(3))
        );
        assert!(matches!(
            bad(|l| l.max_memory_bytes = 100),
            Err(LimitsError::MemoryBytes { got: 100, .. })
        ));
        assert!(matches!(
            bad(|l| l.max_memory_bytes = 5 << 30),
            Err(LimitsError::MemoryBytes { .. })
        ));
        assert!(matches!(
            bad(|l| l.chunk_time = Duration::ZERO),
            Err(LimitsError::ChunkTime { .. })
        ));
    }
}
