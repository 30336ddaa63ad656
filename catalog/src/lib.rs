//! The farm function catalog: the one place that knows which map functions
//! exist, how each is computed, and how a job's output is summarised.
//!
//! The coordinator reads it to validate requests, the worker to execute
//! chunks, and the CLI for its local short cut and `farm digest`. Nothing
//! else keeps a list of function names.
//!
//! - [`function`]: the catalog itself ([`Function`]).
//! - [`grid`]: the fixed leaf grid every chunk boundary and every reduction
//!   is aligned to.
//! - [`summary`]: per-leaf statistics and the in-order [`Reducer`] that turns
//!   them into a bit-reproducible [`Summary`].
//! - [`evaluate`]: computing a chunk on the current rayon pool, for the
//!   catalog's functions and for outside kernels ([`FillLeaf`]).

pub mod evaluate;
pub mod function;
pub mod grid;
mod lanes;
pub mod summary;

pub use evaluate::{
    ChunkOutput, EvaluateError, KernelError, evaluate, evaluate_into, evaluate_kernel,
    evaluate_reusing,
};
pub use function::{FillLeaf, Function, UnknownFunction};
pub use summary::{ChunkSummary, Digest, LeafStats, Reducer, ReducerError, Summary};
