//! The wasmtime engine farm compiles and runs modules with, and the clock
//! that bounds how long they run.
//!
//! - Cranelift, optimising for speed: compiled code, not an interpreter.
//! - Deterministic: NaN results are canonicalised (the bits of a NaN are
//!   otherwise free to differ between CPUs), no threads, no relaxed SIMD;
//!   SIMD128 is on, its results are exact.
//! - Bounded in time by epoch interruption: a ticker thread advances the
//!   engine's epoch every [`TICK`], and each call into a module is given a
//!   deadline in ticks. The check costs a load and a compare at loop heads,
//!   far less than fuel.

use std::thread;
use std::time::{Duration, Instant};

use wasmtime::{Config, EngineWeak, OptLevel, Strategy};

/// How often the epoch advances: the resolution of the time bound.
pub const TICK: Duration = Duration::from_millis(5);

/// An engine configured for farm, with its epoch ticker.
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// The engine could not be set up on this machine.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the WebAssembly engine: {reason}")]
pub struct EngineError {
    pub reason: String,
}

impl Engine {
    pub fn new() -> Result<Engine, EngineError> {
        let mut config = Config::new();
        config
            .strategy(Strategy::Cranelift)
            .cranelift_opt_level(OptLevel::Speed)
            .cranelift_nan_canonicalization(true)
            .wasm_simd(true)
            .wasm_relaxed_simd(false)
            .wasm_memory64(false)
            .epoch_interruption(true);
        // Threads (shared memories, atomics) are not even compiled in: the
        // crate leaves wasmtime's `threads` feature off.
        let inner = wasmtime::Engine::new(&config).map_err(|error| EngineError {
            reason: error.to_string(),
        })?;
        spawn_ticker(inner.weak()).map_err(|error| EngineError {
            reason: format!("cannot start the epoch ticker: {error}"),
        })?;
        Ok(Engine { inner })
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }
}

/// Advances the epoch once per [`TICK`] of wall time until the engine is
/// dropped.
fn spawn_ticker(engine: EngineWeak) -> std::io::Result<()> {
    thread::Builder::new()
        .name("farm-wasm-epoch".to_owned())
        .spawn(move || {
            let started = Instant::now();
            let mut ticks = 0u128;
            loop {
                thread::sleep(TICK);
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                // A sleep overruns on a busy machine (measured: a 60 s
                // bound took 120 s at a load of 10 on 2 cores): catch up,
                // so that a deadline in ticks stays one in time.
                let due = started.elapsed().as_nanos() / TICK.as_nanos();
                while ticks < due {
                    engine.increment_epoch();
                    ticks += 1;
                }
            }
        })
        .map(drop)
}
