//! The examples in `examples/`, each evaluated over ranges and chunk
//! sizes and compared with a reference computed here in plain Rust; the
//! sqrt examples also with the built-in `sqrt`, summary and digest.

// Helpers of these tests unwrap like the tests do.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use farm_catalog::grid::LEAF_LEN;
use farm_catalog::summary::summarize_values;
use farm_catalog::{Function, Reducer, Summary, evaluate};
use farm_wasm::{Limits, NanBits, Runner, Runtime, check};

// The examples' kernels in Rust, shared with the bench.
#[path = "../../examples/kernels.rs"]
mod kernels;

use kernels::{collatz_steps, mandelbrot};

fn load(example: &str) -> Runner {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(example);
    let bytes = std::fs::read(&path).unwrap();
    let runtime = Runtime::new(Limits::default(), None).unwrap();
    runtime.load(&bytes).unwrap()
}

/// The values and summary of `f(start + i)`, i in 0..n, computed in chunks
/// of `chunk` elements (a multiple of the leaf).
fn run(runner: &Runner, start: u64, n: u64, chunk: u64) -> (Vec<f64>, Summary) {
    let mut values = Vec::new();
    let mut reducer = Reducer::new();
    let mut offset = 0;
    while offset < n {
        let end = (offset + chunk).min(n);
        let out = runner
            .evaluate(start, offset..end, Some(Vec::new()))
            .unwrap();
        reducer.push_chunk(end - offset, &out.summary).unwrap();
        values.extend(out.values.unwrap());
        offset = end;
    }
    (values, reducer.finish(n).unwrap())
}

fn bits(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Checks `example` against `reference` over `start..start + n` in two
/// chunkings: same values bit for bit, and the summary of those values.
fn check_against(example: &str, start: u64, n: u64, reference: impl Fn(u64) -> f64) -> Summary {
    let runner = load(example);
    let expected: Vec<f64> = (0..n).map(|i| reference(start + i)).collect();
    let expected_summary = summarize_values(&expected);
    for chunk in [LEAF_LEN, 3 * LEAF_LEN, n.max(1)] {
        let (values, summary) = run(&runner, start, n, chunk);
        assert_eq!(
            bits(&values),
            bits(&expected),
            "{example} from {start}, chunks of {chunk}"
        );
        assert!(
            summary.bit_identical(&expected_summary),
            "{example} from {start}: {summary:?} vs {expected_summary:?}"
        );
    }
    expected_summary
}

fn built_in_summary(start: u64, n: u64) -> Summary {
    let out = evaluate(Function::Sqrt, start, 0..n, false).unwrap();
    let mut reducer = Reducer::new();
    reducer.push_chunk(n, &out.summary).unwrap();
    reducer.finish(n).unwrap()
}

#[test]
fn sqrt_matches_the_built_in_bit_for_bit() {
    // Small arguments, arguments around 2^63 (where the signed convert
    // stops being enough) and the very top of the range.
    for (start, n) in [
        (0, 5 * LEAF_LEN + 17),
        ((1 << 63) - 3000, 2 * LEAF_LEN),
        (u64::MAX - (LEAF_LEN + 9), LEAF_LEN + 10),
    ] {
        for example in ["sqrt.wat", "sqrt_simd.wat"] {
            let summary = check_against(example, start, n, |x| Function::Sqrt.eval(x));
            assert!(
                summary.bit_identical(&built_in_summary(start, n)),
                "{example} from {start}"
            );
        }
    }
}

#[test]
fn sqrt_simd_handles_odd_counts() {
    // Chunks whose last leaf has an odd number of elements.
    check_against("sqrt_simd.wat", 1, LEAF_LEN + 3, |x| Function::Sqrt.eval(x));
    check_against("sqrt_simd.wat", 7, 1, |x| Function::Sqrt.eval(x));
}

#[test]
fn collatz_counts_steps() {
    assert_eq!(collatz_steps(27), 111.0);
    check_against("collatz.wat", 0, 6 * LEAF_LEN + 1, collatz_steps);
    check_against("collatz.wat", 1 << 40, 2 * LEAF_LEN, collatz_steps);
}

fn is_prime(x: u64) -> f64 {
    if x < 2 {
        return 0.0;
    }
    let mut d = 2u64;
    while d.saturating_mul(d) <= x {
        if x.is_multiple_of(d) {
            return 0.0;
        }
        d += 1;
    }
    1.0
}

#[test]
fn prime_by_trial_division() {
    let summary = check_against("prime.wat", 0, 10_000, is_prime);
    // There are 1229 primes below 10^4.
    assert_eq!(summary.sum, 1229.0);
    check_against("prime.wat", 1_000_000_000_000 - 1000, 1500, is_prime);
}

#[test]
fn mandelbrot_escape_counts() {
    // Rows 448..576 of the grid, through the middle of the set.
    let summary = check_against("mandelbrot.wat", 448 * 1024, 128 * 1024, mandelbrot);
    assert_eq!(summary.max, 1000.0);
    assert_eq!(summary.min, 1.0);
}

#[test]
fn only_the_simd_example_needs_every_nan_canonicalised() {
    // The scalar examples cannot see a NaN's bits, so they are compiled
    // without Cranelift's canonicalisation (and the tests above show they
    // still give the references' bits); SIMD128 can, so sqrt_simd.wat is
    // compiled with it.
    for (example, expected) in [
        ("sqrt.wat", NanBits::Unobserved),
        ("collatz.wat", NanBits::Unobserved),
        ("prime.wat", NanBits::Unobserved),
        ("mandelbrot.wat", NanBits::Unobserved),
        ("sqrt_simd.wat", NanBits::Observed),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(example);
        let checked = check(&std::fs::read(&path).unwrap(), &Limits::default()).unwrap();
        assert_eq!(checked.nan_bits, expected, "{example}");
    }
}
