//! Conversions between wire messages and catalog types.

use farm_catalog::summary::{ChunkSummary, Digest, Summary};

use crate::v1;

impl From<Summary> for v1::Summary {
    fn from(s: Summary) -> Self {
        v1::Summary {
            n: s.n,
            sum: s.sum,
            min: s.min,
            max: s.max,
            digest: s.digest.0.to_vec().into(),
        }
    }
}

/// A wire summary whose digest is not 16 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("summary digest has {0} bytes, expected 16")]
pub struct BadDigest(pub usize);

impl TryFrom<v1::Summary> for Summary {
    type Error = BadDigest;

    fn try_from(s: v1::Summary) -> Result<Self, Self::Error> {
        let digest = Digest::from_slice(&s.digest).ok_or(BadDigest(s.digest.len()))?;
        Ok(Summary {
            n: s.n,
            sum: s.sum,
            min: s.min,
            max: s.max,
            digest,
        })
    }
}

impl v1::ChunkResult {
    /// The statistics part of a result (shape is checked by the reducer).
    pub fn chunk_summary(&self) -> ChunkSummary {
        ChunkSummary {
            leaf_sums: self.leaf_sums.clone(),
            leaf_digests: self.leaf_digests.to_vec(),
            min: self.min,
            max: self.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_round_trips() {
        let s = farm_catalog::summary::summarize_values(&[1.0, 4.0, 9.0]);
        let back = Summary::try_from(v1::Summary::from(s)).unwrap();
        assert!(back.bit_identical(&s));
        let mut wire = v1::Summary::from(s);
        wire.digest = vec![1, 2].into();
        assert_eq!(Summary::try_from(wire), Err(BadDigest(2)));
    }
}
