//! The wasmtime engine farm compiles and runs modules with, and the clock
//! that bounds how long they run.
//!
//! - Cranelift, optimising for speed: compiled code, not an interpreter.
//! - Deterministic: no threads, no relaxed SIMD; SIMD128 is on, its
//!   results are exact. A NaN's bits are free to differ between CPUs, so
//!   there are two engines: one canonicalises the NaN of every float
//!   operation, for modules that can observe a NaN's bits; the other does
//!   not, for modules that cannot (their NaNs are canonicalised where they
//!   leave `f`; see [`crate::nan`]).
//! - Inlining within a module: Cranelift may inline `f` into the appended
//!   loop, so a call per element costs nothing.
//! - Bounded in time by epoch interruption: a ticker thread advances the
//!   engines' epoch every [`TICK`], and each call into a module is given a
//!   deadline in ticks. The check costs a load and a compare at function
//!   entries and loop heads, far less than fuel.

use std::thread;
use std::time::{Duration, Instant};

use wasmtime::{Config, EngineWeak, Inlining, OptLevel, Strategy};

use crate::nan::NanBits;

/// How often the epoch advances: the resolution of the time bound.
pub const TICK: Duration = Duration::from_millis(5);

/// The engines configured for farm, with their epoch ticker.
#[derive(Clone)]
pub struct Engine {
    /// For modules that can observe a NaN's bits.
    canonicalising: wasmtime::Engine,
    /// For modules that cannot.
    plain: wasmtime::Engine,
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
        let canonicalising = wasmtime_engine(true)?;
        let plain = wasmtime_engine(false)?;
        spawn_ticker([canonicalising.weak(), plain.weak()]).map_err(|error| EngineError {
            reason: format!("cannot start the epoch ticker: {error}"),
        })?;
        Ok(Engine {
            canonicalising,
            plain,
        })
    }

    /// The engine that runs a module deterministically.
    pub(crate) fn wasmtime(&self, nan_bits: NanBits) -> &wasmtime::Engine {
        match nan_bits {
            NanBits::Observed => &self.canonicalising,
            NanBits::Unobserved => &self.plain,
        }
    }
}

fn wasmtime_engine(canonicalise_nans: bool) -> Result<wasmtime::Engine, EngineError> {
    let mut config = Config::new();
    config
        .strategy(Strategy::Cranelift)
        .cranelift_opt_level(OptLevel::Speed)
        .cranelift_nan_canonicalization(canonicalise_nans)
        .compiler_inlining(Inlining::Yes)
        .wasm_simd(true)
        .wasm_relaxed_simd(false)
        .wasm_memory64(false)
        .epoch_interruption(true);
    // Threads (shared memories, atomics) are not even compiled in: the
    // crate leaves wasmtime's `threads` feature off.
    wasmtime::Engine::new(&config).map_err(|error| EngineError {
        reason: error.to_string(),
    })
}

/// Advances the engines' epoch once per [`TICK`] of wall time until they
/// are dropped.
fn spawn_ticker(engines: [EngineWeak; 2]) -> std::io::Result<()> {
    thread::Builder::new()
        .name("farm-wasm-epoch".to_owned())
        .spawn(move || {
            let started = Instant::now();
            let mut ticks = 0u128;
            loop {
                thread::sleep(TICK);
                let Some(engines) = engines
                    .iter()
                    .map(EngineWeak::upgrade)
                    .collect::<Option<Vec<_>>>()
                else {
                    return;
                };
                // A sleep overruns on a busy machine (measured: a 60 s
                // bound took 120 s at a load of 10 on 2 cores): catch up,
                // so that a deadline in ticks stays one in time.
                let due = started.elapsed().as_nanos() / TICK.as_nanos();
                while ticks < due {
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                    ticks += 1;
                }
            }
        })
        .map(drop)
}
