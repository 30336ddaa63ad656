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
//! - [`nan`]: whether a module can see a NaN's bits, which decides how
//!   much NaN canonicalisation keeps it deterministic.
//! - [`engine`]: wasmtime configured for determinism, and its epoch clock.
//! - [`cache`]: compiled modules by content hash, in memory and on disk.
//! - [`run`]: instances per thread, time and memory bounds, traps named
//!   by element; [`Runner::evaluate`] computes a chunk into the catalog's
//!   summary.
//! - [`limits`]: the bounds, with defaults.
//!
//! A worker holds one [`Runtime`], loads a job's module once
//! ([`Runtime::load`]) and calls [`Runner::evaluate`] per chunk.
//!
//! Everything that needs wasmtime (engine, cache, run, [`Runtime`]) is
//! behind the `runtime` feature, on by default: a coordinator or a CLI
//! that only checks modules does without it.

pub mod batch;
#[cfg(feature = "runtime")]
pub mod cache;
#[cfg(feature = "runtime")]
pub mod engine;
pub mod limits;
pub mod module;
pub mod nan;
#[cfg(feature = "runtime")]
pub mod run;

pub use limits::{Limits, LimitsError, OUTPUT_BYTES};
pub use module::{Batch, Checked, ContentHash, Refused, check};
pub use nan::NanBits;
#[cfg(feature = "runtime")]
pub use runtime::*;

#[cfg(feature = "runtime")]
mod runtime;
