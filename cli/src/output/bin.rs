//! Raw `.bin` files: the values as little-endian f64, nothing else.
//!
//! Writing is the sink copying the cluster's batches through unchanged, so
//! this module only owns the reader.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::read::{ReadValues, fill};
use super::{OutputError, decode_le};

/// Reads the values of a `.bin` file, block by block.
pub(super) struct Reader<R> {
    inner: R,
    path: PathBuf,
    /// One block of raw bytes, reused.
    bytes: Vec<u8>,
    /// Bytes read so far, for the length error.
    offset: u64,
}

impl<R: Read> Reader<R> {
    pub(super) fn new(inner: R, path: &Path) -> Reader<R> {
        Reader {
            inner,
            path: path.to_path_buf(),
            bytes: Vec::new(),
            offset: 0,
        }
    }
}

impl<R: Read> ReadValues for Reader<R> {
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
    use super::super::read::summarize;
    use super::*;
    use farm_catalog::summary::{le_bytes, summarize_values};

    #[test]
    fn reads_blocks_of_whole_values() {
        let values: Vec<f64> = (0..10).map(|i| f64::from(i).sqrt()).collect();
        let bytes = le_bytes(&values);
        let mut reader = Reader::new(&bytes[..], Path::new("x.bin"));
        let mut out = Vec::new();
        reader.read_values(&mut out, 4).unwrap();
        assert_eq!(out.len(), 4);
        reader.read_values(&mut out, 100).unwrap();
        assert_eq!(out, values);
        reader.read_values(&mut out, 100).unwrap();
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn a_size_not_a_multiple_of_8_is_an_error() {
        let bytes = [0u8; 8 * 5000 + 3];
        let err = summarize(
            &mut Reader::new(&bytes[..], Path::new("x.bin")),
            Path::new("x.bin"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.bin is 40003 bytes, not a whole number of 8-byte f64 values"
        );
    }

    #[test]
    fn empty_file_is_an_empty_output() {
        let s = summarize(
            &mut Reader::new(&[][..], Path::new("x.bin")),
            Path::new("x.bin"),
        );
        assert!(s.unwrap().bit_identical(&summarize_values(&[])));
    }
}
