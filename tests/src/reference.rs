//! Serial references: the plainest possible computation of a job.

use farm_catalog::summary::{le_bytes, summarize_values};
use farm_catalog::{Function, Summary};

/// Element i of the job is `function(start + i)`, computed one by one.
pub fn values(function: Function, start: u64, n: u64) -> Vec<f64> {
    (0..n).map(|i| function.eval(start + i)).collect()
}

/// The output bytes of the job, little-endian f64.
pub fn bytes(function: Function, start: u64, n: u64) -> Vec<u8> {
    le_bytes(&values(function, start, n)).into_owned()
}

/// The job's summary, computed serially.
pub fn summary(function: Function, start: u64, n: u64) -> Summary {
    summarize_values(&values(function, start, n))
}
