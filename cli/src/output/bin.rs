//! Raw `.bin` files: the values as little-endian f64, nothing else.
//!
//! Writing is the sink copying the cluster's batches through unchanged, so
//! this module only owns the reader.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::OutputError;
use super::read_values::{ReadValues, decode_le, fill};

/// Reads the values of a `.bin` file, block by block.
pub(super) struct BinReader<R> {
    inner: R,
    path: PathBuf,
    /// One block of raw bytes, reused.
    bytes: Vec<u8>,
    /// Bytes read so far, for the length error.
    offset: u64,
}

impl<R: Read> BinReader<R> {
    pub(super) fn new(inner: R, path: &Path) -> BinReader<R> {
        BinReader {
            inner,
            path: path.to_path_buf(),
            bytes: Vec::new(),
            offset: 0,
        }
    }
}

impl<R: Read> ReadValues for BinReader<R> {
    fn read_values(&mut self, out: &mut Vec<f64>, max: usize) -> Result<(), OutputError> {
        self.bytes.resize(max * 8, 0);
        let got = fill(&mut self.inner, &mut self.bytes).map_err(|error| OutputError::Read {
            path: self.path.clone(),
            error,
        })?;
        self.offset += got as u64;
        // A short block means the end of the file, so `offset` is its size.
        if got % 8 != 0 {
            return Err(OutputError::BinLength {
                path: self.path.clone(),
                len: self.offset,
            });
        }
        decode_le(&self.bytes[..got], out);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_blocks_of_whole_values() {
        let values: Vec<f64> = (0..10).map(|i| f64::from(i).sqrt()).collect();
        let bytes = farm_catalog::summary::le_bytes(&values);
        let mut reader = BinReader::new(&bytes[..], Path::new("x.bin"));
        let mut out = Vec::new();
        reader.read_values(&mut out, 4).unwrap();
        assert_eq!(out.len(), 4);
        reader.read_values(&mut out, 100).unwrap();
        assert_eq!(out, values);
        reader.read_values(&mut out, 100).unwrap();
        assert_eq!(out.len(), 10);
    }
}
