//! The [`Runtime`] a worker holds: engine, compiled-module cache and
//! limits together.

use std::path::PathBuf;

pub use crate::cache::{Cache, CompileError, Compiled};
pub use crate::engine::{Engine, EngineError};
use crate::limits::{Limits, LimitsError};
use crate::module::{Refused, check};
pub use crate::run::{ChunkError, RunError, Runner, TrapKind};

/// Modules kept compiled in memory by default.
pub const DEFAULT_CACHE_MODULES: usize = 16;

/// A module that could not be made ready to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// The runtime could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Limits(#[from] LimitsError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// One per process: the engine, the compiled-module cache and the limits.
#[derive(Debug)]
pub struct Runtime {
    engine: Engine,
    cache: Cache,
    limits: Limits,
}

impl Runtime {
    /// A runtime enforcing `limits`, caching compiled modules in memory and,
    /// when `disk_cache` is given, in that directory (which must be the
    /// process's own: see [`cache`]).
    pub fn new(limits: Limits, disk_cache: Option<PathBuf>) -> Result<Runtime, SetupError> {
        limits.validate()?;
        let engine = Engine::new()?;
        let cache = Cache::new(engine.clone(), DEFAULT_CACHE_MODULES, disk_cache);
        Ok(Runtime {
            engine,
            cache,
            limits,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Checks a submitted module and compiles it, or takes it from the
    /// cache.
    pub fn load(&self, submitted: &[u8]) -> Result<Runner, LoadError> {
        let checked = check(submitted, &self.limits)?;
        let compiled = self.cache.get(&checked)?;
        Ok(Runner::new(
            self.engine.clone(),
            compiled,
            self.limits.clone(),
        ))
    }
}
