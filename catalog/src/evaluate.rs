//! Computing one chunk on every thread of the current rayon pool.
//!
//! Leaves are the unit of parallel work: each is filled and summarised by
//! one thread, so the result does not depend on how many threads ran it.
//! The catalog's own functions and outside kernels ([`FillLeaf`]) share
//! this code: only how a leaf is filled differs.

use std::convert::Infallible;
use std::ops::Range;

use rayon::prelude::*;

use crate::function::{FillLeaf, Function};
use crate::grid::{LEAF_LEN, leaf_count};
use crate::summary::{ChunkSummary, LeafStats};

/// Leaves per rayon task: a few microseconds of work each, so splitting
/// costs little and the tail still balances across threads.
const LEAVES_PER_TASK: usize = 4;

/// One computed chunk.
#[derive(Debug)]
pub struct ChunkOutput {
    pub summary: ChunkSummary,
    /// The values, when they were asked for.
    pub values: Option<Vec<f64>>,
}

/// A chunk that cannot be computed as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvaluateError {
    #[error("chunk [{}, {}) does not start on a leaf boundary ({LEAF_LEN} elements)", .range.start, .range.end)]
    Misaligned { range: Range<u64> },
    #[error("chunk [{}, {}) of a job starting at {job_start} runs past 2^64 - 1", .range.start, .range.end)]
    Overflow { job_start: u64, range: Range<u64> },
    #[error("chunk [{}, {}) is larger than this machine can address", .range.start, .range.end)]
    TooLarge { range: Range<u64> },
    #[error("output buffer holds {got} values, the chunk has {expected}")]
    BufferLength { expected: u64, got: u64 },
}

/// A chunk of an outside kernel that was not computed: asked wrongly, or
/// the kernel failed on one of its leaves.
#[derive(Debug, thiserror::Error)]
pub enum KernelError<E> {
    #[error(transparent)]
    Chunk(#[from] EvaluateError),
    /// The first leaf, in element order, whose kernel failed.
    #[error(transparent)]
    Kernel(E),
}

/// Computes elements `range` (job indices) of a job whose element `i` is
/// `function(job_start + i)`, on the current rayon pool.
pub fn evaluate(
    function: Function,
    job_start: u64,
    range: Range<u64>,
    keep_values: bool,
) -> Result<ChunkOutput, EvaluateError> {
    evaluate_reusing(function, job_start, range, keep_values.then(Vec::new))
}

/// Like [`evaluate`], keeping the values in `buffer` when one is given:
/// it is resized to the chunk, so a buffer from an earlier chunk is reused
/// without fresh pages (which cost more than computing square roots).
pub fn evaluate_reusing(
    function: Function,
    job_start: u64,
    range: Range<u64>,
    buffer: Option<Vec<f64>>,
) -> Result<ChunkOutput, EvaluateError> {
    reusing(&function, job_start, range, buffer).map_err(infallible)
}

/// Like [`evaluate`], writing the values into `values` when given (which
/// must hold exactly the chunk), so callers can reuse buffers.
pub fn evaluate_into(
    function: Function,
    job_start: u64,
    range: Range<u64>,
    values: Option<&mut [f64]>,
) -> Result<ChunkSummary, EvaluateError> {
    into(&function, job_start, range, values).map_err(infallible)
}

/// [`evaluate_reusing`] for a kernel from outside the catalog: the same
/// leaves, statistics and summary, so the same values give the same
/// digest as a built-in. A failing leaf fails the chunk; the error is the
/// one of the first failing leaf in element order, so it does not depend
/// on which thread got there first.
pub fn evaluate_kernel<K: FillLeaf>(
    kernel: &K,
    job_start: u64,
    range: Range<u64>,
    buffer: Option<Vec<f64>>,
) -> Result<ChunkOutput, KernelError<K::Error>> {
    reusing(&Filled(kernel), job_start, range, buffer)
}

/// How the leaves of a chunk are computed.
trait Leaves: Sync {
    type Error: Send;
    fn leaf(&self, first: u64, out: &mut [f64]) -> Result<LeafStats, Self::Error>;
}

/// The catalog's functions compute the statistics in the kernel's loop.
impl Leaves for Function {
    type Error = Infallible;

    #[inline]
    fn leaf(&self, first: u64, out: &mut [f64]) -> Result<LeafStats, Infallible> {
        let lanes = self.fill_leaf(first, out);
        Ok(LeafStats::from_lanes(lanes, out))
    }
}

/// An outside kernel fills the values; the statistics are computed from
/// them afterwards, the same way.
struct Filled<'a, K>(&'a K);

impl<K: FillLeaf> Leaves for Filled<'_, K> {
    type Error = K::Error;

    fn leaf(&self, first: u64, out: &mut [f64]) -> Result<LeafStats, K::Error> {
        self.0.fill_leaf(first, out)?;
        Ok(LeafStats::of_values(out))
    }
}

fn infallible(error: KernelError<Infallible>) -> EvaluateError {
    match error {
        KernelError::Chunk(error) => error,
        KernelError::Kernel(never) => match never {},
    }
}

fn reusing<L: Leaves>(
    leaves: &L,
    job_start: u64,
    range: Range<u64>,
    buffer: Option<Vec<f64>>,
) -> Result<ChunkOutput, KernelError<L::Error>> {
    check(job_start, &range)?;
    let Some(mut values) = buffer else {
        let summary = into(leaves, job_start, range, None)?;
        return Ok(ChunkOutput {
            summary,
            values: None,
        });
    };
    let len = usize::try_from(range.end - range.start).map_err(|_| EvaluateError::TooLarge {
        range: range.clone(),
    })?;
    // Every value is overwritten, so only a longer chunk writes zeros (to
    // the part the buffer grows by).
    values.truncate(len);
    values.resize(len, 0.0);
    let summary = into(leaves, job_start, range, Some(&mut values))?;
    Ok(ChunkOutput {
        summary,
        values: Some(values),
    })
}

fn into<L: Leaves>(
    leaves: &L,
    job_start: u64,
    range: Range<u64>,
    values: Option<&mut [f64]>,
) -> Result<ChunkSummary, KernelError<L::Error>> {
    check(job_start, &range)?;
    let first = job_start + range.start;
    let leaf = LEAF_LEN as usize;
    // Every leaf's result is kept, in order, so the error reported is the
    // first in element order whatever the threads did.
    let stats: Vec<Result<LeafStats, L::Error>> = match values {
        Some(values) => {
            let expected = range.end - range.start;
            if values.len() as u64 != expected {
                return Err(EvaluateError::BufferLength {
                    expected,
                    got: values.len() as u64,
                }
                .into());
            }
            values
                .par_chunks_mut(leaf)
                .with_min_len(LEAVES_PER_TASK)
                .enumerate()
                .map(|(k, out)| leaves.leaf(first + (k * leaf) as u64, out))
                .collect()
        }
        None => {
            let count = usize::try_from(leaf_count(range.end - range.start)).map_err(|_| {
                EvaluateError::TooLarge {
                    range: range.clone(),
                }
            })?;
            let end = range.end;
            (0..count)
                .into_par_iter()
                .with_min_len(LEAVES_PER_TASK)
                .map_init(
                    || vec![0.0; leaf],
                    |scratch, k| {
                        let leaf_start = range.start + (k * leaf) as u64;
                        let len = (end - leaf_start).min(LEAF_LEN) as usize;
                        leaves.leaf(job_start + leaf_start, &mut scratch[..len])
                    },
                )
                .collect()
        }
    };
    let stats: Vec<LeafStats> = stats
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(KernelError::Kernel)?;
    Ok(ChunkSummary::from_leaves(&stats))
}

fn check(job_start: u64, range: &Range<u64>) -> Result<(), EvaluateError> {
    if range.start > range.end || !range.start.is_multiple_of(LEAF_LEN) {
        return Err(EvaluateError::Misaligned {
            range: range.clone(),
        });
    }
    // The last element is job_start + end - 1; an empty chunk has none.
    if range.end > range.start && job_start.checked_add(range.end - 1).is_none() {
        return Err(EvaluateError::Overflow {
            job_start,
            range: range.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{Reducer, summarize_values};

    fn serial(function: Function, start: u64, n: u64) -> Vec<f64> {
        (0..n).map(|i| function.eval(start + i)).collect()
    }

    #[test]
    fn values_match_the_scalar_reference() {
        let out = evaluate(Function::Sqrt, 11, 0..3 * LEAF_LEN + 5, true).unwrap();
        let expected = serial(Function::Sqrt, 11, 3 * LEAF_LEN + 5);
        let got = out.values.unwrap();
        assert!(
            got.iter()
                .zip(&expected)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        let without = evaluate(Function::Sqrt, 11, 0..3 * LEAF_LEN + 5, false).unwrap();
        assert_eq!(out.summary, without.summary);
        assert!(without.values.is_none());
    }

    #[test]
    fn any_chunking_gives_the_serial_summary() {
        let n = 10 * LEAF_LEN + 77;
        let reference = summarize_values(&serial(Function::Sqrt, 5, n));
        for chunk in [LEAF_LEN, 3 * LEAF_LEN, n] {
            let mut reducer = Reducer::new();
            let mut offset = 0;
            while offset < n {
                let end = (offset + chunk).min(n);
                let out = evaluate(Function::Sqrt, 5, offset..end, false).unwrap();
                reducer.push_chunk(end - offset, &out.summary).unwrap();
                offset = end;
            }
            assert!(reducer.finish(n).unwrap().bit_identical(&reference));
        }
    }

    #[test]
    fn bad_ranges_are_errors_not_panics() {
        assert!(matches!(
            evaluate(Function::Sqrt, 0, 1..LEAF_LEN, false),
            Err(EvaluateError::Misaligned { .. })
        ));
        assert!(matches!(
            evaluate(Function::Sqrt, u64::MAX, 0..2, false),
            Err(EvaluateError::Overflow { .. })
        ));
        // The very last u64 is fine.
        let out = evaluate(Function::Sqrt, u64::MAX, 0..1, true).unwrap();
        assert_eq!(out.values.unwrap(), vec![4294967296.0]);
        let mut short = vec![0.0; 3];
        assert!(matches!(
            evaluate_into(Function::Sqrt, 0, 0..4, Some(&mut short)),
            Err(EvaluateError::BufferLength { .. })
        ));
    }

    #[test]
    fn reused_buffers_give_the_same_values() {
        let fresh = evaluate(Function::Sqrt, 3, LEAF_LEN..4 * LEAF_LEN + 9, true).unwrap();
        // A longer buffer full of other values, and a shorter one.
        for stale in [vec![f64::NAN; 9 * LEAF_LEN as usize], vec![7.0; 5]] {
            let capacity = stale.capacity();
            let out = evaluate_reusing(Function::Sqrt, 3, LEAF_LEN..4 * LEAF_LEN + 9, Some(stale))
                .unwrap();
            assert_eq!(out.summary, fresh.summary);
            let values = out.values.unwrap();
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&values), bits(fresh.values.as_ref().unwrap()));
            assert!(values.capacity() >= capacity.min(values.len()));
        }
    }

    #[test]
    fn empty_chunk() {
        let out = evaluate(Function::Sqrt, 0, 0..0, true).unwrap();
        assert!(out.summary.leaf_sums.is_empty());
        assert_eq!(out.values.unwrap().len(), 0);
    }

    /// An outside kernel: sqrt through the seam, failing at one argument.
    struct SqrtFailingAt(Option<u64>);

    impl FillLeaf for SqrtFailingAt {
        type Error = u64;

        fn fill_leaf(&self, first: u64, out: &mut [f64]) -> Result<(), u64> {
            for (i, slot) in out.iter_mut().enumerate() {
                let x = first + i as u64;
                if Some(x) == self.0 {
                    return Err(x);
                }
                *slot = (x as f64).sqrt();
            }
            Ok(())
        }
    }

    #[test]
    fn an_outside_kernel_gives_the_built_in_summary() {
        let range = LEAF_LEN..6 * LEAF_LEN + 13;
        let built_in = evaluate(Function::Sqrt, 9, range.clone(), true).unwrap();
        for buffer in [None, Some(Vec::new()), Some(vec![f64::NAN; 3])] {
            let keep = buffer.is_some();
            let out = evaluate_kernel(&SqrtFailingAt(None), 9, range.clone(), buffer).unwrap();
            assert_eq!(out.summary, built_in.summary);
            if keep {
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&out.values.unwrap()),
                    bits(built_in.values.as_ref().unwrap())
                );
            }
        }
    }

    #[test]
    fn an_outside_kernel_fails_at_its_first_failing_leaf() {
        // Leaves of [0, 8 * LEAF_LEN) starting at 100: the kernel fails at
        // one argument; the error names it, and an invalid chunk is still
        // refused before any leaf runs.
        let at = 100 + 5 * LEAF_LEN + 7;
        let err =
            evaluate_kernel(&SqrtFailingAt(Some(at)), 100, 0..8 * LEAF_LEN, None).unwrap_err();
        assert!(matches!(err, KernelError::Kernel(x) if x == at));
        let err = evaluate_kernel(&SqrtFailingAt(Some(at)), 100, 3..LEAF_LEN, None).unwrap_err();
        assert!(matches!(
            err,
            KernelError::Chunk(EvaluateError::Misaligned { .. })
        ));
    }
}
