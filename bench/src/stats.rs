//! Timing and how times are shown: medians, ranges and ratios.

use std::time::{Duration, Instant};

pub fn timed<T>(work: impl FnOnce() -> T) -> (Duration, T) {
    let started = Instant::now();
    let result = work();
    (started.elapsed(), result)
}

pub fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// The median of plain numbers (rates, shares).
pub fn median_f64(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// `median [min..max]` of some times.
pub fn spread(times: &[Duration]) -> String {
    let min = times.iter().min().copied().unwrap_or_default();
    let max = times.iter().max().copied().unwrap_or_default();
    format!("{} [{}..{}]", show(median(times)), show(min), show(max))
}

/// `median [min..max]` of rates divided by `scale`, with `unit` after.
pub fn rate_spread(values: &[f64], scale: f64, unit: &str) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let decimals = if unit == "%" { 1 } else { 3 };
    format!(
        "{:.decimals$} [{:.decimals$}..{:.decimals$}] {unit}",
        median_f64(values) / scale,
        min / scale,
        max / scale
    )
}

pub fn show(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

/// `a / b` of two median times.
pub fn ratio(a: &[Duration], b: &[Duration]) -> f64 {
    median(a).as_secs_f64() / median(b).as_secs_f64()
}

/// `a / b` of the fastest times: for measurements whose noise only ever
/// adds time (a write stalled by the host), the best of each run is the
/// steadier comparison.
pub fn best_ratio(a: &[Duration], b: &[Duration]) -> f64 {
    let best = |times: &[Duration]| times.iter().min().copied().unwrap_or_default();
    best(a).as_secs_f64() / best(b).as_secs_f64()
}
