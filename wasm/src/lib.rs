//! farm's WebAssembly runtime: users' own map functions, sandboxed.
//!
//! The contract a user writes to: a module (binary `.wasm` or text `.wat`)
//! that exports `f: (i64) -> f64`; element `i` of a job is
//! `f(start + i)`, the argument being the u64's bit pattern in an i64.
//! A module may instead export its own batch form, `fill: (first: i64,
//! count: i32, out: i32) -> ()` writing `count` little-endian f64 at byte
//! offset `out` of its exported `memory`; farm grows that memory for the
//! output and passes an `out` past the module's own data.
//!
//! - [`module`]: checking a submitted module (size, validity, no imports,
//!   the contract) and its [`ContentHash`]; no engine needed.
//! - [`batch`]: appending the batch loop to a module that has only `f`.
//! - [`engine`]: wasmtime configured for determinism, and its epoch clock.
//! - [`cache`]: compiled modules by content hash, in memory and on disk.
//! - [`run`]: instances per thread, time and memory bounds, traps named
//!   by element; [`Runner::evaluate`] computes a chunk into the catalog's
//!   summary.
//! - [`limits`]: the bounds, with defaults.
//!
//! A worker holds one [`Runtime`], loads a job's module once
//! ([`Runtime::load`]) and calls [`Runner::evaluate`] per chunk.

pub mod batch;
pub mod cache;
pub mod engine;
pub mod limits;
pub mod module;
pub mod run;

use std::path::PathBuf;

pub use cache::{Cache, CompileError, Compiled};
pub use engine::{Engine, EngineError};
pub use limits::{Limits, LimitsError};
pub use module::{Batch, Checked, ContentHash, Refused, check};
pub use run::{ChunkError, OUTPUT_BYTES, RunError, Runner, TrapKind};

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
