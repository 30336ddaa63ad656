//! Computing leases: what runs on the compute pool, and the result each
//! lease becomes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use farm_catalog::{ChunkOutput, Function, evaluate_reusing};
use farm_proto::v1;
use farm_wasm::ChunkError;

use crate::buffers;
use crate::compute::catch_panic;
use crate::faults::Faults;
use crate::modules::BatchModules;

/// The largest chunk this worker computes, keeping its memory bounded
/// whatever a coordinator asks: values for 4 Mi elements are 32 MiB; a
/// summary-only chunk keeps 40 bytes per 4096 elements.
const MAX_STREAMED_CHUNK: u64 = 1 << 22;
const MAX_CHUNK: u64 = 1 << 32;

/// A lease, how long computing it took, and what it gave.
pub(crate) type ChunkAnswer = (v1::ChunkLease, Duration, Result<ChunkOutput, ChunkFailure>);

/// Why a lease could not be computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkFailure {
    pub(crate) message: String,
    /// False when another try cannot help (a bad request, not a fault of
    /// this worker's).
    pub(crate) retryable: bool,
}

/// Computes a batch of leases one after another, timing each; runs on the
/// compute pool.
pub(crate) fn compute_batch(
    leases: &[v1::ChunkLease],
    modules: &BatchModules,
    faults: &Faults,
) -> Vec<ChunkAnswer> {
    leases
        .iter()
        .map(|lease| {
            let started = Instant::now();
            // Each lease catches its own panic, so a poison chunk fails
            // alone and not the rest of its batch.
            let outcome = catch_panic(|| faults.apply(lease, || compute(lease, modules)))
                .unwrap_or_else(|err| {
                    Err(ChunkFailure {
                        message: err.to_string(),
                        retryable: true,
                    })
                });
            (lease.clone(), started.elapsed(), outcome)
        })
        .collect()
}

/// Every lease of a batch the pool could not run, failed with `message`
/// (retryable: another worker may manage).
pub(crate) fn batch_lost(batch: Vec<v1::ChunkLease>, message: &str) -> Vec<ChunkAnswer> {
    batch
        .into_iter()
        .map(|lease| {
            let failure = ChunkFailure {
                message: message.to_owned(),
                retryable: true,
            };
            (lease, Duration::ZERO, Err(failure))
        })
        .collect()
}

/// Computes one lease: a catalog function, or a WebAssembly module of
/// `modules`.
pub(crate) fn compute(
    lease: &v1::ChunkLease,
    modules: &BatchModules,
) -> Result<ChunkOutput, ChunkFailure> {
    let permanent = |message: String| ChunkFailure {
        message,
        retryable: false,
    };
    let function = if lease.wasm_module_hash.is_empty() {
        Some(Function::from_name(&lease.function).map_err(|e| permanent(e.to_string()))?)
    } else {
        None
    };
    let limit = if lease.stream_values {
        MAX_STREAMED_CHUNK
    } else {
        MAX_CHUNK
    };
    if lease.len > limit {
        return Err(permanent(format!(
            "a chunk of {} elements is over this worker's limit of {limit}",
            lease.len
        )));
    }
    let end = lease.offset.checked_add(lease.len).ok_or_else(|| {
        permanent(format!(
            "chunk at {} of length {} overflows",
            lease.offset, lease.len
        ))
    })?;
    let len = usize::try_from(lease.len).map_err(|_| {
        permanent(format!(
            "a chunk of {} elements is too long here",
            lease.len
        ))
    })?;
    let buffer = lease.stream_values.then(|| buffers::VALUES.take(len));
    let range = lease.offset..end;
    match function {
        Some(function) => evaluate_reusing(function, lease.job_start, range, buffer)
            .map_err(|e| permanent(e.to_string())),
        None => modules
            .runner(lease)?
            .evaluate(lease.job_start, range, buffer)
            .map_err(wasm_failure),
    }
}

/// A WebAssembly chunk's failure, and whether another try could help.
fn wasm_failure(error: ChunkError) -> ChunkFailure {
    // A chunk is sized to tens of milliseconds: one that runs past the
    // time bound (a minute by default) is the function's doing, and trying
    // it on every worker in turn would hold the job for minutes.
    let timed_out = matches!(
        &error,
        ChunkError::Failed {
            source: farm_wasm::RunError::Timeout { .. },
            ..
        }
    );
    ChunkFailure {
        retryable: !(error.is_deterministic() || timed_out),
        message: error.to_string(),
    }
}

/// The result message for a computed lease.
pub(crate) fn result_message(
    token: Option<v1::LeaseToken>,
    output: ChunkOutput,
    took: Duration,
) -> v1::ChunkResult {
    let summary = output.summary;
    v1::ChunkResult {
        token,
        leaf_sums: summary.leaf_sums,
        leaf_digests: Bytes::from(summary.leaf_digests),
        min: summary.min,
        max: summary.max,
        values_le: output
            .values
            .map(|v| buffers::VALUES.into_bytes(v))
            .unwrap_or_default(),
        compute_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
    }
}
