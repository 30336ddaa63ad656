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
    let mut failed_jobs = Vec::new();
    leases
        .iter()
        .map(|lease| {
            let job = lease.token.map(|token| token.job_id);
            if let Some(job) = job.filter(|job| failed_jobs.contains(job)) {
                return (lease.clone(), Duration::ZERO, Err(not_computed(job)));
            }
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
            if let (Err(failure), Some(job)) = (&outcome, job)
                && !failure.retryable
            {
                failed_jobs.push(job);
            }
            (lease.clone(), started.elapsed(), outcome)
        })
        .collect()
}

/// A lease skipped because an earlier chunk of its job failed for good,
/// which fails the job: computing it could only waste time (a function
/// that never returns would hold the worker for another time bound).
fn not_computed(job: u64) -> ChunkFailure {
    ChunkFailure {
        message: format!("not computed: an earlier chunk of job {job} failed for good"),
        // Stale by the time it arrives; should the job live on, another
        // try is right.
        retryable: true,
    }
}

/// The jobs of `answers` that failed for good: the coordinator fails
/// them, so their other leases need not wait here.
pub(crate) fn failed_jobs(answers: &[ChunkAnswer]) -> Vec<u64> {
    let mut jobs: Vec<u64> = answers
        .iter()
        .filter(|(_, _, outcome)| outcome.as_ref().is_err_and(|failure| !failure.retryable))
        .filter_map(|(lease, _, _)| lease.token.map(|token| token.job_id))
        .collect();
    jobs.sort_unstable();
    jobs.dedup();
    jobs
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lease(job_id: u64, chunk_index: u64, function: &str) -> v1::ChunkLease {
        v1::ChunkLease {
            token: Some(v1::LeaseToken {
                job_id,
                chunk_index,
                attempt: 1,
            }),
            function: function.to_owned(),
            offset: chunk_index * 4096,
            len: 4096,
            ..Default::default()
        }
    }

    #[test]
    fn a_failure_for_good_skips_the_rest_of_its_job_in_the_batch() {
        let batch = [
            lease(4, 0, "cbrt"),
            lease(4, 1, "sqrt"),
            lease(5, 0, "sqrt"),
        ];
        let answers = compute_batch(&batch, &BatchModules::default(), &Faults::default());
        let outcomes: Vec<_> = answers.iter().map(|(_, _, outcome)| outcome).collect();
        let failed = outcomes[0].as_ref().unwrap_err();
        assert!(!failed.retryable);
        assert_eq!(
            outcomes[1].as_ref().unwrap_err(),
            &ChunkFailure {
                message: "not computed: an earlier chunk of job 4 failed for good".to_owned(),
                retryable: true,
            }
        );
        // Another job's lease is computed as usual.
        assert_eq!(outcomes[2].as_ref().unwrap().summary.leaf_sums.len(), 1);
        assert_eq!(failed_jobs(&answers), vec![4]);
    }
}
