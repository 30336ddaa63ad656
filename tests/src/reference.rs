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

/// The summary of a job too big to hold in memory, block by block with
/// the catalog's kernel on every core. (The in-process cluster tests check
/// that kernel against [`summary`] bit for bit.)
pub fn summary_blockwise(function: Function, start: u64, n: u64) -> Summary {
    const BLOCK: u64 = 1 << 24;
    let mut reducer = farm_catalog::Reducer::new();
    let mut offset = 0;
    while offset < n {
        let end = (offset + BLOCK).min(n);
        let out = farm_catalog::evaluate(function, start, offset..end, false)
            .expect("a valid reference range");
        reducer
            .push_chunk(end - offset, &out.summary)
            .expect("blocks are whole leaves");
        offset = end;
    }
    reducer.finish(n).expect("every element was pushed")
}
