//! The coordinator's settings, with defaults and the checks that reject
//! combinations that cannot work.

use std::time::Duration;

use farm_net::auth::Admission;

use crate::scheduler::SchedulerConfig;

/// Largest `n` a job may have: ten trillion elements (hours of work on a
/// large cluster; a typo such as `1e19` is refused instead of queued).
pub const DEFAULT_MAX_ELEMENTS: u64 = 10_000_000_000_000;

/// Largest `n` for a job that streams its values back: 2^37 elements,
/// one TiB of output.
pub const DEFAULT_MAX_STREAMED_ELEMENTS: u64 = 1 << 37;

/// Largest WebAssembly module a job may bring, as submitted: 4 MiB, far
/// more than a map function needs, and the store of running jobs' modules
/// stays bounded by it times the running jobs.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 4 << 20;

/// Everything the coordinator can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    pub scheduler: SchedulerConfig,
    /// Workers send a heartbeat after this much silence.
    pub heartbeat_interval: Duration,
    /// How often silent workers and stragglers are looked for.
    pub tick: Duration,
    /// How often a job's stream reports progress.
    pub progress_interval: Duration,
    /// How long a job that offered its client a value connection waits
    /// for it before sending the values in the job's stream instead.
    pub value_connection_wait: Duration,
    pub limits: RequestLimits,
    /// Who may call and connect: members with tokens from the cluster
    /// secret, or (with none) everyone, on loopback only.
    pub admission: Admission,
}

/// Documented caps on what one request may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_elements: u64,
    pub max_streamed_elements: u64,
    pub max_module_bytes: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            scheduler: SchedulerConfig::default(),
            heartbeat_interval: Duration::from_secs(1),
            tick: Duration::from_millis(100),
            progress_interval: Duration::from_millis(500),
            value_connection_wait: Duration::from_secs(5),
            limits: RequestLimits {
                max_elements: DEFAULT_MAX_ELEMENTS,
                max_streamed_elements: DEFAULT_MAX_STREAMED_ELEMENTS,
                max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            },
            admission: Admission::Open,
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "lease timeout {lease_timeout:?} must be at least 3x the heartbeat interval {heartbeat_interval:?}, or busy workers would be declared dead"
    )]
    LeaseTimeoutTooShort {
        lease_timeout: Duration,
        heartbeat_interval: Duration,
    },
    #[error(
        "max module bytes {max_module_bytes} must leave room in a message: at most half of {} bytes",
        farm_proto::MAX_MESSAGE_BYTES
    )]
    ModuleTooLarge { max_module_bytes: u64 },
    #[error("{name} must be greater than zero")]
    Zero { name: &'static str },
}

impl CoordinatorConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = |name| Err(ConfigError::Zero { name });
        if self.heartbeat_interval.is_zero() {
            return zero("heartbeat interval");
        }
        if self.tick.is_zero() {
            return zero("tick");
        }
        if self.progress_interval.is_zero() {
            return zero("progress interval");
        }
        if self.limits.max_module_bytes == 0 {
            return zero("max module bytes");
        }
        if self.limits.max_module_bytes > farm_proto::MAX_MESSAGE_BYTES as u64 / 2 {
            return Err(ConfigError::ModuleTooLarge {
                max_module_bytes: self.limits.max_module_bytes,
            });
        }
        if self.scheduler.max_attempts == 0 {
            return zero("max attempts");
        }
        if self.scheduler.max_running_jobs == 0 {
            return zero("max running jobs");
        }
        if self.scheduler.window.max_chunks == 0 || self.scheduler.window.max_bytes == 0 {
            return zero("reorder window");
        }
        if self.scheduler.lease_timeout < self.heartbeat_interval * 3 {
            return Err(ConfigError::LeaseTimeoutTooShort {
                lease_timeout: self.scheduler.lease_timeout,
                heartbeat_interval: self.heartbeat_interval,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(CoordinatorConfig::default().validate(), Ok(()));
    }

    #[test]
    fn a_lease_timeout_shorter_than_three_heartbeats_is_refused() {
        let mut config = CoordinatorConfig::default();
        config.scheduler.lease_timeout = Duration::from_millis(2900);
        assert!(matches!(
            config.validate(),
            Err(ConfigError::LeaseTimeoutTooShort { .. })
        ));
        config.scheduler.lease_timeout = Duration::from_secs(3);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn zeros_are_refused() {
        let mut config = CoordinatorConfig::default();
        config.scheduler.max_attempts = 0;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "max attempts must be greater than zero"
        );
    }
}
