//! The summary of a job's ordered output, bit-identical however the job was
//! run.
//!
//! Definition (so anyone can recompute it; `farm digest FILE` does):
//!
//! 1. Cut the output into leaves of [`LEAF_LEN`] elements (the last may be
//!    shorter); see [`crate::grid`].
//! 2. Per leaf: accumulate element `i` into lane `i % 16`; the leaf sum is
//!    the lanes added as a balanced tree, `((l0 + l1) + (l2 + l3)) + ...`.
//!    The leaf digest is the xxh3-128 of the leaf's bytes (each element as
//!    little-endian IEEE-754 binary64), written big-endian (16 bytes).
//! 3. Over leaves in order: `sum` adds the leaf sums with Neumaier's
//!    compensated summation; `min`/`max` skip NaN and keep the first of
//!    equal values; `digest` is the xxh3-128 of all leaf digests
//!    concatenated, shown as 32 hex digits.
//!
//! In Python, with the `xxhash` package, the digest of the raw bytes `b` is:
//!
//! ```text
//! leaves = b"".join(xxhash.xxh3_128_digest(b[i:i + 32768]) for i in range(0, len(b), 32768))
//! digest = xxhash.xxh3_128_hexdigest(leaves)
//! ```

use std::borrow::Cow;
use std::fmt;

use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use crate::grid::{LEAF_LEN, leaf_count};
use crate::lanes::{self, LeafLanes, first_max, first_min};

/// Bytes in one leaf digest.
pub const DIGEST_LEN: usize = 16;

/// The statistics of one leaf.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeafStats {
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub digest: [u8; DIGEST_LEN],
}

impl LeafStats {
    /// Statistics of one leaf's values already in memory.
    pub fn of_values(values: &[f64]) -> LeafStats {
        LeafStats::from_lanes(lanes::stats(values), values)
    }

    pub(crate) fn from_lanes(lanes: LeafLanes, values: &[f64]) -> LeafStats {
        LeafStats {
            sum: lanes.sum,
            min: lanes.min,
            max: lanes.max,
            digest: xxh3_128(&le_bytes(values)).to_be_bytes(),
        }
    }
}

/// What a worker reports for one chunk: every leaf's sum and digest, and
/// the chunk's min and max (which combine exactly in any grouping).
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkSummary {
    pub leaf_sums: Vec<f64>,
    /// `DIGEST_LEN` bytes per leaf.
    pub leaf_digests: Vec<u8>,
    pub min: f64,
    pub max: f64,
}

impl ChunkSummary {
    /// Builds a chunk summary from its leaves, in order.
    pub fn from_leaves(leaves: &[LeafStats]) -> ChunkSummary {
        let mut summary = ChunkSummary {
            leaf_sums: Vec::with_capacity(leaves.len()),
            leaf_digests: Vec::with_capacity(leaves.len() * DIGEST_LEN),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        };
        for leaf in leaves {
            summary.leaf_sums.push(leaf.sum);
            summary.leaf_digests.extend_from_slice(&leaf.digest);
            summary.min = first_min(summary.min, leaf.min);
            summary.max = first_max(summary.max, leaf.max);
        }
        summary
    }

    /// Checks that the summary has one entry per leaf of a chunk of `len`
    /// elements.
    pub fn check_shape(&self, len: u64) -> Result<(), ReducerError> {
        let expected = leaf_count(len);
        let sums = self.leaf_sums.len() as u64;
        let digests = (self.leaf_digests.len() / DIGEST_LEN) as u64;
        if sums != expected
            || digests != expected
            || !self.leaf_digests.len().is_multiple_of(DIGEST_LEN)
        {
            return Err(ReducerError::LeafCount {
                expected,
                sums,
                digest_bytes: self.leaf_digests.len() as u64,
            });
        }
        Ok(())
    }

    /// The approximate heap size, for memory accounting.
    pub fn size_bytes(&self) -> usize {
        self.leaf_sums.len() * 8 + self.leaf_digests.len()
    }
}

/// A job's summary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub n: u64,
    pub sum: f64,
    /// `+inf` when there are no (non-NaN) elements.
    pub min: f64,
    /// `-inf` when there are no (non-NaN) elements.
    pub max: f64,
    pub digest: Digest,
}

impl Summary {
    /// Whether two summaries agree bit for bit.
    pub fn bit_identical(&self, other: &Summary) -> bool {
        self.n == other.n
            && self.sum.to_bits() == other.sum.to_bits()
            && self.min.to_bits() == other.min.to_bits()
            && self.max.to_bits() == other.max.to_bits()
            && self.digest == other.digest
    }
}

/// The xxh3-128 digest of a job's ordered output, per the module docs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; DIGEST_LEN]);

impl Digest {
    pub fn from_slice(bytes: &[u8]) -> Option<Digest> {
        bytes.try_into().ok().map(Digest)
    }

    /// Parses 32 hex digits.
    pub fn from_hex(hex: &str) -> Option<Digest> {
        if hex.len() != 2 * DIGEST_LEN || !hex.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; DIGEST_LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Digest(bytes))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A chunk or leaf that does not fit where it was pushed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReducerError {
    #[error(
        "chunk summary has {sums} leaf sums and {digest_bytes} digest bytes, expected {expected} leaves"
    )]
    LeafCount {
        expected: u64,
        sums: u64,
        digest_bytes: u64,
    },
    #[error("a partial leaf at element {at} is followed by more output")]
    PartialLeafNotLast { at: u64 },
    #[error("the output has {got} elements, expected {expected}")]
    WrongLength { expected: u64, got: u64 },
}

/// Folds leaf statistics, in output order, into a [`Summary`].
pub struct Reducer {
    elements: u64,
    sum: NeumaierSum,
    min: f64,
    max: f64,
    hasher: Box<Xxh3>,
}

impl fmt::Debug for Reducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reducer")
            .field("elements", &self.elements)
            .field("sum", &self.sum)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for Reducer {
    fn default() -> Self {
        Reducer::new()
    }
}

impl Reducer {
    pub fn new() -> Reducer {
        Reducer {
            elements: 0,
            sum: NeumaierSum::default(),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            hasher: Box::new(Xxh3::new()),
        }
    }

    /// Elements folded so far.
    pub fn elements(&self) -> u64 {
        self.elements
    }

    /// Folds the next chunk, of `len` elements, in output order.
    pub fn push_chunk(&mut self, len: u64, chunk: &ChunkSummary) -> Result<(), ReducerError> {
        chunk.check_shape(len)?;
        self.check_continues()?;
        for (sum, digest) in chunk
            .leaf_sums
            .iter()
            .zip(chunk.leaf_digests.chunks_exact(DIGEST_LEN))
        {
            self.sum.add(*sum);
            self.hasher.update(digest);
        }
        self.min = first_min(self.min, chunk.min);
        self.max = first_max(self.max, chunk.max);
        self.elements += len;
        Ok(())
    }

    /// Folds the next leaf, of `len` elements, in output order.
    pub fn push_leaf(&mut self, len: u64, leaf: &LeafStats) -> Result<(), ReducerError> {
        self.check_continues()?;
        self.fold_leaf(len, leaf);
        Ok(())
    }

    fn fold_leaf(&mut self, len: u64, leaf: &LeafStats) {
        self.sum.add(leaf.sum);
        self.hasher.update(&leaf.digest);
        self.min = first_min(self.min, leaf.min);
        self.max = first_max(self.max, leaf.max);
        self.elements += len;
    }

    /// The summary of everything pushed, which must be `n` elements.
    pub fn finish(&self, n: u64) -> Result<Summary, ReducerError> {
        if self.elements != n {
            return Err(ReducerError::WrongLength {
                expected: n,
                got: self.elements,
            });
        }
        Ok(self.summary())
    }

    fn summary(&self) -> Summary {
        Summary {
            n: self.elements,
            sum: self.sum.value(),
            min: self.min,
            max: self.max,
            digest: Digest(self.hasher.digest128().to_be_bytes()),
        }
    }

    fn check_continues(&self) -> Result<(), ReducerError> {
        if self.elements.is_multiple_of(LEAF_LEN) {
            Ok(())
        } else {
            Err(ReducerError::PartialLeafNotLast { at: self.elements })
        }
    }
}

/// Neumaier's compensated sum: in-order, deterministic, and accurate to
/// about one rounding of the true sum of the leaf sums.
#[derive(Debug, Default, Clone, Copy)]
struct NeumaierSum {
    sum: f64,
    compensation: f64,
}

impl NeumaierSum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if !t.is_finite() {
            // An infinite or NaN total has no rounding error to track, and
            // tracking it would turn inf into NaN (inf - inf).
            self.sum = t;
            return;
        }
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// The little-endian bytes of `values`: a free view on little-endian
/// machines, a converted copy elsewhere.
pub fn le_bytes(values: &[f64]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(values))
    } else {
        Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// The summary of a whole output held in memory, leaf by leaf: the
/// reference every distributed run must match.
pub fn summarize_values(values: &[f64]) -> Summary {
    let mut reducer = Reducer::new();
    for leaf in values.chunks(LEAF_LEN as usize) {
        reducer.fold_leaf(leaf.len() as u64, &LeafStats::of_values(leaf));
    }
    reducer.summary()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize) -> Vec<f64> {
        (0..n).map(|i| (i as f64 + 0.5).sqrt()).collect()
    }

    #[test]
    fn empty_output() {
        let s = summarize_values(&[]);
        assert_eq!(s.n, 0);
        assert_eq!(s.sum, 0.0);
        assert_eq!(s.min, f64::INFINITY);
        // xxh3-128 of the empty string.
        assert_eq!(s.digest.to_string(), "99aa06d3014798d86001c324468d497f");
    }

    #[test]
    fn digest_matches_the_documented_recipe() {
        let v = values(3 * LEAF_LEN as usize + 11);
        let bytes = le_bytes(&v);
        let mut leaves = Vec::new();
        for leaf in bytes.chunks(LEAF_LEN as usize * 8) {
            leaves.extend_from_slice(&xxh3_128(leaf).to_be_bytes());
        }
        let expected = Digest(xxh3_128(&leaves).to_be_bytes());
        assert_eq!(summarize_values(&v).digest, expected);
    }

    #[test]
    fn chunks_and_leaves_reduce_alike() {
        let v = values(5 * LEAF_LEN as usize + 3);
        let leaves: Vec<LeafStats> = v
            .chunks(LEAF_LEN as usize)
            .map(LeafStats::of_values)
            .collect();
        let mut reducer = Reducer::new();
        reducer
            .push_chunk(2 * LEAF_LEN, &ChunkSummary::from_leaves(&leaves[..2]))
            .unwrap();
        reducer
            .push_chunk(3 * LEAF_LEN + 3, &ChunkSummary::from_leaves(&leaves[2..]))
            .unwrap();
        let s = reducer.finish(v.len() as u64).unwrap();
        assert!(s.bit_identical(&summarize_values(&v)));
        assert_eq!(s.min, 0.5f64.sqrt());
    }

    #[test]
    fn shape_errors_are_reported() {
        let leaves: Vec<LeafStats> = values(10)
            .chunks(LEAF_LEN as usize)
            .map(LeafStats::of_values)
            .collect();
        let chunk = ChunkSummary::from_leaves(&leaves);
        let mut reducer = Reducer::new();
        assert!(matches!(
            reducer.push_chunk(LEAF_LEN + 1, &chunk),
            Err(ReducerError::LeafCount { expected: 2, .. })
        ));
        reducer.push_chunk(10, &chunk).unwrap();
        assert_eq!(
            reducer.push_chunk(10, &chunk),
            Err(ReducerError::PartialLeafNotLast { at: 10 })
        );
        assert_eq!(
            reducer.finish(11),
            Err(ReducerError::WrongLength {
                expected: 11,
                got: 10
            })
        );
    }

    #[test]
    fn digest_hex_round_trips() {
        let d = summarize_values(&values(100)).digest;
        assert_eq!(Digest::from_hex(&d.to_string()), Some(d));
        assert_eq!(Digest::from_hex("zz"), None);
    }

    #[test]
    fn infinities_sum_to_infinity() {
        assert_eq!(
            summarize_values(&[1.0, f64::INFINITY, 2.0]).sum,
            f64::INFINITY
        );
        assert_eq!(
            summarize_values(&[f64::NEG_INFINITY, 1.0]).sum,
            f64::NEG_INFINITY
        );
        let mut s = NeumaierSum::default();
        for x in [f64::INFINITY, 1.0, f64::INFINITY] {
            s.add(x);
        }
        assert_eq!(s.value(), f64::INFINITY);
        assert!(
            summarize_values(&[f64::INFINITY, f64::NEG_INFINITY])
                .sum
                .is_nan()
        );
    }

    #[test]
    fn neumaier_keeps_small_terms() {
        let mut s = NeumaierSum::default();
        for x in [1e16, 1.0, -1e16, 1.0] {
            s.add(x);
        }
        assert_eq!(s.value(), 2.0);
    }
}
