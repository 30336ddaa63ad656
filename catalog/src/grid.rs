//! The leaf grid: the fixed partition every reduction is defined on.
//!
//! A job's output is cut into leaves of [`LEAF_LEN`] elements, counted from
//! the job's first element; only the last leaf may be shorter. Each leaf's
//! sum and digest are computed whole, by one thread, in one fixed order, and
//! leaves are combined in index order. Chunk boundaries always fall on leaf
//! boundaries, so the summary cannot depend on how the job was chunked, on
//! how many workers ran it, or on the order their results arrived.

use std::ops::Range;

/// Elements per leaf: 32 KiB of f64, small enough that the tail of a job
/// balances well and tests can use thousands of chunks, large enough that a
/// leaf's 24 bytes of statistics are noise next to its 32 KiB of values.
pub const LEAF_LEN: u64 = 4096;

/// How many leaves cover `len` elements.
pub fn leaf_count(len: u64) -> u64 {
    len.div_ceil(LEAF_LEN)
}

/// Rounds a requested chunk size up to whole leaves (at least one, and
/// never past the largest whole number of leaves a u64 holds).
pub fn round_to_leaves(len: u64) -> u64 {
    len.max(1).div_ceil(LEAF_LEN).min(u64::MAX / LEAF_LEN) * LEAF_LEN
}

/// Whether `range` of a job of `n` elements starts on a leaf boundary and
/// ends on one or at the job's end.
pub fn is_leaf_aligned(range: &Range<u64>, n: u64) -> bool {
    range.start <= range.end
        && range.end <= n
        && range.start.is_multiple_of(LEAF_LEN)
        && (range.end.is_multiple_of(LEAF_LEN) || range.end == n)
}

/// The leaves of `range` (leaf-aligned start), as element ranges.
pub fn leaves(range: Range<u64>) -> impl Iterator<Item = Range<u64>> {
    let end = range.end;
    (range.start..end)
        .step_by(LEAF_LEN as usize)
        .map(move |s| s..(s.saturating_add(LEAF_LEN)).min(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rounding() {
        assert_eq!(leaf_count(0), 0);
        assert_eq!(leaf_count(1), 1);
        assert_eq!(leaf_count(LEAF_LEN), 1);
        assert_eq!(leaf_count(LEAF_LEN + 1), 2);
        assert_eq!(round_to_leaves(0), LEAF_LEN);
        assert_eq!(round_to_leaves(1000), LEAF_LEN);
        assert_eq!(round_to_leaves(LEAF_LEN * 3), LEAF_LEN * 3);
        assert_eq!(round_to_leaves(u64::MAX), u64::MAX / LEAF_LEN * LEAF_LEN);
    }

    #[test]
    fn alignment() {
        assert!(is_leaf_aligned(&(0..LEAF_LEN), 10 * LEAF_LEN));
        assert!(is_leaf_aligned(&(LEAF_LEN..LEAF_LEN + 7), LEAF_LEN + 7));
        assert!(!is_leaf_aligned(&(1..LEAF_LEN), 10 * LEAF_LEN));
        assert!(!is_leaf_aligned(&(0..LEAF_LEN - 1), 10 * LEAF_LEN));
        assert!(!is_leaf_aligned(&(0..LEAF_LEN), LEAF_LEN - 1));
    }

    #[test]
    fn leaves_cover_the_range() {
        let l: Vec<_> = leaves(LEAF_LEN..3 * LEAF_LEN + 5).collect();
        assert_eq!(
            l,
            vec![
                LEAF_LEN..2 * LEAF_LEN,
                2 * LEAF_LEN..3 * LEAF_LEN,
                3 * LEAF_LEN..3 * LEAF_LEN + 5
            ]
        );
        assert_eq!(leaves(0..0).count(), 0);
    }
}
