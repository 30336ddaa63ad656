//! The fused inner loop: compute a leaf's values and its lane statistics in
//! one pass, compiled for the widest vector unit the CPU has.
//!
//! Element `i` of a leaf is accumulated into lane `i % LANES`; the lanes are
//! then combined in a fixed tree. Rust never reassociates or contracts
//! floating-point arithmetic, and every operation used here (integer to
//! float conversion, sqrt, add, compare) is correctly rounded by IEEE 754,
//! so the scalar, AVX2 and AVX-512 builds of this loop give the same bits.

/// Independent accumulators per leaf: enough to hide the add latency of two
/// vector units, so the statistics cost nothing next to the kernel.
pub(crate) const LANES: usize = 16;

/// A function of one element index, inlined into the fused loop.
pub(crate) trait Kernel {
    fn eval(x: u64) -> f64;
}

/// Sum, minimum and maximum of one leaf.
///
/// `min`/`max` skip NaN (a comparison with NaN is false); a leaf of only NaN
/// has `min = +inf` and `max = -inf`. Ties keep the earlier lane, so even
/// `-0.0` against `+0.0` resolves the same way everywhere.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LeafLanes {
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

/// Fills `out[i] = K::eval(first + i)`; the caller guarantees
/// `first + out.len()` does not overflow.
pub(crate) fn fill<K: Kernel>(first: u64, out: &mut [f64]) -> LeafLanes {
    #[cfg(test)]
    if let Some(isa) = tests::forced_isa() {
        return fill_on::<K>(isa, first, out);
    }
    fill_on::<K>(Isa::widest(), first, out)
}

/// An instruction set [`fill`] can be compiled for. Every one gives the
/// same bits; the widest the CPU has is the fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// Every instruction set this CPU runs, the portable one first: a
    /// worker on another machine may use any of them, so each is checked.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn supported() -> Vec<Isa> {
        let mut found = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if isa::has_avx2() {
                found.push(Isa::Avx2);
            }
            if isa::has_avx512() {
                found.push(Isa::Avx512);
            }
        }
        found
    }

    /// The widest instruction set this CPU runs: the one [`fill`] uses.
    fn widest() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if isa::has_avx512() {
                return Isa::Avx512;
            }
            if isa::has_avx2() {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }
}

/// [`fill`] compiled for `isa`; one the CPU lacks runs the portable path.
fn fill_on<K: Kernel>(isa: Isa, first: u64, out: &mut [f64]) -> LeafLanes {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports the features the function enables.
        Isa::Avx512 if isa::has_avx512() => unsafe { isa::fill_avx512::<K>(first, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 if isa::has_avx2() => unsafe { isa::fill_avx2::<K>(first, out) },
        _ => fill_portable::<K>(first, out),
    }
}

/// Lane statistics of values already in memory (a kernel from outside
/// the catalog, `farm digest` on a file): the same accumulation as
/// [`fill`], so the same bits, and as fast: whole blocks of lanes,
/// compiled for the widest vector unit the CPU has.
pub(crate) fn stats(values: &[f64]) -> LeafLanes {
    #[cfg(test)]
    if let Some(isa) = tests::forced_isa() {
        return stats_on(isa, values);
    }
    stats_on(Isa::widest(), values)
}

fn stats_on(isa: Isa, values: &[f64]) -> LeafLanes {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports the features the function enables.
        Isa::Avx512 if isa::has_avx512() => unsafe { isa::stats_avx512(values) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 if isa::has_avx2() => unsafe { isa::stats_avx2(values) },
        _ => stats_portable(values),
    }
}

#[inline(always)]
fn stats_portable(values: &[f64]) -> LeafLanes {
    let mut lanes = Lanes::new();
    let mut blocks = values.chunks_exact(LANES);
    for block in &mut blocks {
        for (j, &x) in block.iter().enumerate() {
            lanes.add(j, x);
        }
    }
    for (j, &x) in blocks.remainder().iter().enumerate() {
        lanes.add(j, x);
    }
    lanes.finish()
}

#[inline(always)]
fn fill_portable<K: Kernel>(first: u64, out: &mut [f64]) -> LeafLanes {
    let mut lanes = Lanes::new();
    let mut blocks = out.chunks_exact_mut(LANES);
    let mut base = first;
    for block in &mut blocks {
        for (j, slot) in block.iter_mut().enumerate() {
            let x = K::eval(base + j as u64);
            *slot = x;
            lanes.add(j, x);
        }
        base += LANES as u64;
    }
    for (j, slot) in blocks.into_remainder().iter_mut().enumerate() {
        let x = K::eval(base + j as u64);
        *slot = x;
        lanes.add(j, x);
    }
    lanes.finish()
}

struct Lanes {
    sum: [f64; LANES],
    min: [f64; LANES],
    max: [f64; LANES],
}

impl Lanes {
    #[inline(always)]
    fn new() -> Self {
        Lanes {
            sum: [0.0; LANES],
            min: [f64::INFINITY; LANES],
            max: [f64::NEG_INFINITY; LANES],
        }
    }

    #[inline(always)]
    fn add(&mut self, lane: usize, x: f64) {
        self.sum[lane] += x;
        if x < self.min[lane] {
            self.min[lane] = x;
        }
        if x > self.max[lane] {
            self.max[lane] = x;
        }
    }

    #[inline(always)]
    fn finish(self) -> LeafLanes {
        LeafLanes {
            sum: pairwise(&self.sum),
            min: self.min.into_iter().fold(f64::INFINITY, first_min),
            max: self.max.into_iter().fold(f64::NEG_INFINITY, first_max),
        }
    }
}

/// `((l0 + l1) + (l2 + l3)) + ...`: a fixed balanced tree.
#[inline(always)]
fn pairwise(values: &[f64]) -> f64 {
    match values.len() {
        0 => 0.0,
        1 => values[0],
        len => {
            let (left, right) = values.split_at(len / 2);
            pairwise(left) + pairwise(right)
        }
    }
}

/// The smaller of two values, keeping `a` on ties and skipping NaN in `b`.
#[inline(always)]
pub(crate) fn first_min(a: f64, b: f64) -> f64 {
    if b < a { b } else { a }
}

/// The larger of two values, keeping `a` on ties and skipping NaN in `b`.
#[inline(always)]
pub(crate) fn first_max(a: f64, b: f64) -> f64 {
    if b > a { b } else { a }
}

#[cfg(target_arch = "x86_64")]
mod isa {
    use std::sync::OnceLock;

    use super::{Kernel, LeafLanes, fill_portable, stats_portable};

    pub(super) fn has_avx512() -> bool {
        static DETECTED: OnceLock<bool> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512dq")
                && std::is_x86_feature_detected!("avx512vl")
        })
    }

    pub(super) fn has_avx2() -> bool {
        static DETECTED: OnceLock<bool> = OnceLock::new();
        *DETECTED.get_or_init(|| std::is_x86_feature_detected!("avx2"))
    }

    #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2")]
    pub(super) unsafe fn fill_avx512<K: Kernel>(first: u64, out: &mut [f64]) -> LeafLanes {
        fill_portable::<K>(first, out)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn fill_avx2<K: Kernel>(first: u64, out: &mut [f64]) -> LeafLanes {
        fill_portable::<K>(first, out)
    }

    #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2")]
    pub(super) unsafe fn stats_avx512(values: &[f64]) -> LeafLanes {
        stats_portable(values)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn stats_avx2(values: &[f64]) -> LeafLanes {
        stats_portable(values)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::function::Function;

    thread_local! {
        /// The instruction set [`fill`] uses on this thread, if a test
        /// chose one.
        static FORCED: Cell<Option<Isa>> = const { Cell::new(None) };
    }

    pub(super) fn forced_isa() -> Option<Isa> {
        FORCED.with(Cell::get)
    }

    /// Runs `work` with [`fill`] compiled for `isa` on this thread.
    fn on_isa<T>(isa: Isa, work: impl FnOnce() -> T) -> T {
        FORCED.with(|forced| forced.set(Some(isa)));
        let result = work();
        FORCED.with(|forced| forced.set(None));
        result
    }

    fn same(a: LeafLanes, b: LeafLanes) -> bool {
        a.sum.to_bits() == b.sum.to_bits()
            && a.min.to_bits() == b.min.to_bits()
            && a.max.to_bits() == b.max.to_bits()
    }

    fn bits(values: &[f64]) -> Vec<u64> {
        values.iter().map(|x| x.to_bits()).collect()
    }

    /// (first argument, leaf length): whole and partial leaves, partial
    /// lane blocks, arguments past 2^53 (rounded to f64) and at the top.
    const LEAVES: [(u64, usize); 7] = [
        (0, 4096),
        (7, 4095),
        (1 << 53, 4096),
        ((1 << 53) - 2047, 4096),
        (u64::MAX - 100, 101),
        (3, 1),
        (12_345, 17),
    ];

    /// Workers on different hardware run different instruction sets, and
    /// must agree: every set this CPU has (not only the one `fill` picks)
    /// gives the portable path's bits for every kernel in the catalog,
    /// values and lane statistics alike.
    #[test]
    fn every_isa_of_every_kernel_gives_the_portable_bits() {
        let isas = Isa::supported();
        eprintln!("instruction sets on this CPU: {isas:?}");
        assert_eq!(isas[0], Isa::Portable);
        assert!(isas.contains(&Isa::widest()));
        for &function in Function::ALL {
            for (first, len) in LEAVES {
                let mut reference = vec![0.0; len];
                let expected = on_isa(Isa::Portable, || function.fill_leaf(first, &mut reference));
                let scalar: Vec<f64> = (0..len as u64).map(|i| function.eval(first + i)).collect();
                assert_eq!(bits(&reference), bits(&scalar), "{function}: first={first}");
                assert!(
                    same(stats(&reference), expected),
                    "{function}: first={first}"
                );
                for &isa in &isas {
                    assert!(
                        same(on_isa(isa, || stats(&reference)), expected),
                        "stats on {isa:?}: {function}, first={first} len={len}"
                    );
                    let mut out = vec![f64::NAN; len];
                    let got = on_isa(isa, || function.fill_leaf(first, &mut out));
                    assert!(
                        same(expected, got),
                        "{function} on {isa:?}, first={first} len={len}: {got:?} != {expected:?}"
                    );
                    assert!(
                        bits(&out) == bits(&reference),
                        "{function} on {isa:?}, first={first} len={len}: values differ"
                    );
                }
            }
        }
    }

    #[test]
    fn fill_runs_the_widest_isa_unless_a_test_forces_one() {
        let (first, len) = (99, 4096);
        let mut chosen = vec![0.0; len];
        let mut widest = vec![0.0; len];
        let got = Function::Sqrt.fill_leaf(first, &mut chosen);
        let want = on_isa(Isa::widest(), || {
            Function::Sqrt.fill_leaf(first, &mut widest)
        });
        assert!(same(got, want));
        assert_eq!(bits(&chosen), bits(&widest));
        assert_eq!(forced_isa(), None, "on_isa restores the default");
    }

    #[test]
    fn lanes_follow_the_documented_order() {
        let values: Vec<f64> = (0..37).map(|i| 0.1 * i as f64).collect();
        let mut lanes = [0.0f64; LANES];
        for (i, x) in values.iter().enumerate() {
            lanes[i % LANES] += x;
        }
        assert_eq!(stats(&values).sum.to_bits(), pairwise(&lanes).to_bits());
    }

    #[test]
    fn min_max_skip_nan_and_keep_the_first_zero() {
        // In lanes of their own and, past the first block, in the same
        // lane; on every instruction set.
        let nan_first: Vec<f64> = [f64::NAN, 2.0, -1.0, f64::NAN]
            .into_iter()
            .chain((0..LANES).map(|i| if i == 0 { f64::NAN } else { 1.0 }))
            .collect();
        let zeros: Vec<f64> = [-0.0, 0.0]
            .into_iter()
            .chain((0..LANES).map(|i| if i % 2 == 0 { 0.0 } else { -0.0 }))
            .collect();
        for isa in Isa::supported() {
            let s = on_isa(isa, || stats(&nan_first));
            assert_eq!((s.min, s.max), (-1.0, 2.0), "{isa:?}");
            assert!(s.sum.is_nan());
            let s = on_isa(isa, || stats(&[f64::NAN]));
            assert_eq!((s.min, s.max), (f64::INFINITY, f64::NEG_INFINITY));
            let s = on_isa(isa, || stats(&zeros));
            assert!(s.min.is_sign_negative(), "{isa:?}");
            assert!(
                s.max.is_sign_negative(),
                "the first zero of each lane: {isa:?}"
            );
        }
    }
}
