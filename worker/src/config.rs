//! The worker's settings.

use std::path::PathBuf;
use std::time::Duration;

use crate::faults::Faults;

/// Everything a worker can be told.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// Shown in the coordinator's logs and `farm workers`.
    pub name: String,
    /// Compute threads; every chunk runs on all of them.
    pub threads: usize,
    /// Leases held at once: one computing, the rest queued so the threads
    /// never wait for the network between chunks.
    pub prefetch: u32,
    /// After a drain begins, how long the running chunk may take before it
    /// is handed back unfinished.
    pub drain_grace: Duration,
    /// What the coordinator is called in log lines.
    pub coordinator: String,
    /// Faults to inject, for end-to-end tests only (`FARM_TEST_FAULTS`);
    /// none by default.
    pub faults: Faults,
    /// The bounds WebAssembly modules run within here: module size,
    /// memory per instance, time per chunk.
    pub wasm_limits: farm_wasm::Limits,
    /// Where compiled modules are kept across restarts, if anywhere; the
    /// directory must be this worker's own.
    pub wasm_cache_dir: Option<PathBuf>,
}

impl WorkerConfig {
    pub fn new(coordinator: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            name: default_name(),
            threads: all_cores(),
            prefetch: 2,
            drain_grace: Duration::from_secs(30),
            coordinator: coordinator.into(),
            faults: Faults::default(),
            wasm_limits: farm_wasm::Limits::default(),
            wasm_cache_dir: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.threads == 0 {
            return Err(ConfigError::Zero { name: "threads" });
        }
        if self.prefetch == 0 {
            return Err(ConfigError::Zero { name: "prefetch" });
        }
        self.wasm_limits.validate()?;
        Ok(())
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be at least 1")]
    Zero { name: &'static str },
    #[error("WebAssembly limits: {0}")]
    WasmLimits(#[from] farm_wasm::LimitsError),
}

/// Every core, up to the most a worker may claim (past it, the coordinator
/// would refuse the worker).
fn all_cores() -> usize {
    let max = usize::try_from(farm_proto::MAX_WORKER_THREADS).unwrap_or(usize::MAX);
    std::thread::available_parallelism().map_or(1, |n| n.get().min(max))
}

/// Unique enough to tell workers apart; `farm-worker` passes the host name.
fn default_name() -> String {
    format!("worker/{}", std::process::id())
}
