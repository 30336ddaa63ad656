//! NumPy `.npy` files: a short header describing a 1-D little-endian
//! float64 array, then the raw values.
//!
//! Format (<https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>):
//! the magic `\x93NUMPY`, a major and minor version byte, the header length
//! (u16 LE in version 1.0, u32 LE in 2.0 and 3.0), and the header: a Python
//! dict literal padded with spaces and ended by `\n` so the data starts on a
//! 64-byte boundary. Farm writes version 1.0 and reads any of the three.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::OutputError;
use super::read_values::{ReadValues, decode_le, fill};

mod header;

use header::read_header;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// The data starts on a multiple of this, as numpy itself does.
const ALIGN: usize = 64;

/// The version 1.0 header of a 1-D float64 array of `n` values.
pub(super) fn header(n: u64) -> Vec<u8> {
    let dict = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({n},), }}");
    // Magic, two version bytes, the u16 length, the dict and its `\n`.
    let total = (MAGIC.len() + 2 + 2 + dict.len() + 1).next_multiple_of(ALIGN);
    // At most a few dozen bytes past the 64-byte boundary: fits a u16.
    let header_len = (total - MAGIC.len() - 4) as u16;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// Reads the values of a `.npy` file, checking the data matches its shape.
pub(super) struct NpyReader<R> {
    inner: R,
    path: PathBuf,
    /// The number of values the header's shape promises.
    n: u64,
    /// Values still to read.
    remaining: u64,
    /// Whether the end of the data has been checked for trailing bytes.
    checked_end: bool,
    /// One block of raw bytes, reused.
    bytes: Vec<u8>,
}

impl<R: Read> NpyReader<R> {
    /// Reads and checks the header.
    pub(super) fn new(mut inner: R, path: &Path) -> Result<NpyReader<R>, OutputError> {
        let n = read_header(&mut inner).map_err(|e| e.into_output_error(path))?;
        Ok(NpyReader {
            inner,
            path: path.to_path_buf(),
            n,
            remaining: n,
            checked_end: false,
            bytes: Vec::new(),
        })
    }

    fn invalid(&self, reason: String) -> OutputError {
        OutputError::Npy {
            path: self.path.clone(),
            reason,
        }
    }

    fn read_error(&self, error: io::Error) -> OutputError {
        OutputError::Read {
            path: self.path.clone(),
            error,
        }
    }
}

impl<R: Read> ReadValues for NpyReader<R> {
    fn read_values(&mut self, out: &mut Vec<f64>, max: usize) -> Result<(), OutputError> {
        let want = self.remaining.min(max as u64) as usize;
        self.bytes.resize(want * 8, 0);
        let got = fill(&mut self.inner, &mut self.bytes).map_err(|e| self.read_error(e))?;
        if got < want * 8 {
            let read = (self.n - self.remaining) * 8 + got as u64;
            return Err(self.invalid(format!(
                "the data ends after {read} bytes, but shape ({},) needs {} values of 8 bytes",
                self.n, self.n
            )));
        }
        decode_le(&self.bytes, out);
        self.remaining -= want as u64;
        if self.remaining == 0 && !self.checked_end {
            self.checked_end = true;
            let mut probe = [0u8; 1];
            if fill(&mut self.inner, &mut probe).map_err(|e| self.read_error(e))? > 0 {
                return Err(self.invalid(format!(
                    "the data continues past the {} values of shape ({},)",
                    self.n, self.n
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(header: &[u8]) -> Result<u64, OutputError> {
        NpyReader::new(header, Path::new("x.npy")).map(|r| r.n)
    }

    /// A header of `version` around an arbitrary dict text.
    fn header_with(version: u8, dict: &str) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        let len = dict.len() + 1;
        if version == 1 {
            out.extend_from_slice(&(len as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(len as u32).to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        out.push(b'\n');
        out
    }

    fn reason(header: &[u8]) -> String {
        match parse(header) {
            Err(OutputError::Npy { reason, .. }) => reason,
            other => panic!("expected an npy error, got {other:?}"),
        }
    }

    #[test]
    fn header_is_aligned_and_parses() {
        for n in [0, 1, 7, 4096, 123_456_789, u64::MAX] {
            let h = header(n);
            assert_eq!(h.len() % ALIGN, 0, "n = {n}");
            assert_eq!(h.last(), Some(&b'\n'));
            assert_eq!(usize::from(u16::from_le_bytes([h[8], h[9]])), h.len() - 10);
            assert_eq!(parse(&h).unwrap(), n);
        }
        let h = header(3);
        assert_eq!(h.len(), 128);
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert_eq!(
            text.trim_end(),
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }"
        );
    }

    #[test]
    fn accepts_numpy_variations() {
        for dict in [
            "{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }",
            "{'descr':'<f8','fortran_order':False,'shape':(5,)}",
            "{\"shape\": (5L,), \"fortran_order\": False, \"descr\": \"<f8\"}  ",
        ] {
            for version in [1, 2, 3] {
                assert_eq!(parse(&header_with(version, dict)).unwrap(), 5, "{dict}");
            }
        }
    }

    #[test]
    fn rejects_what_farm_does_not_write() {
        let dict = |descr: &str, fortran: &str, shape: &str| {
            header_with(
                1,
                &format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}"),
            )
        };
        assert_eq!(
            reason(&dict("<f4", "False", "(3,)")),
            "unsupported dtype '<f4': farm writes float64 '<f8'"
        );
        assert_eq!(
            reason(&dict(">f8", "False", "(3,)")),
            "unsupported dtype '>f8': farm writes float64 '<f8'"
        );
        assert_eq!(
            reason(&dict("<f8", "True", "(3,)")),
            "fortran_order is not False"
        );
        assert_eq!(
            reason(&dict("<f8", "False", "(3, 4)")),
            "shape (3, 4) is not 1-D: farm writes a flat array"
        );
        assert_eq!(
            reason(&dict("<f8", "False", "()")),
            "shape () is not 1-D: farm writes a flat array"
        );
        assert_eq!(
            reason(&header_with(1, "{'descr': '<f8', 'shape': (3,)}")),
            "the header has no 'fortran_order'"
        );
        assert_eq!(
            reason(&header_with(
                1,
                "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (3,)}"
            )),
            "unsupported value at byte 10 of the header"
        );
        assert_eq!(
            reason(&header_with(4, "{}")),
            "unsupported format version 4.0"
        );
        assert_eq!(
            reason(b"PK\x03\x04 a zip file"),
            "it does not start with the \\x93NUMPY magic"
        );
        assert_eq!(reason(b"\x93NUMPY\x01"), "the file ends inside the header");
        let whole = header(3);
        assert_eq!(reason(&whole[..40]), "the file ends inside the header");
    }

    #[test]
    fn error_message_names_the_file() {
        let err = parse(&header_with(
            1,
            "{'descr': '<i8', 'fortran_order': False, 'shape': (3,)}",
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.npy is not a float64 .npy file farm can read: \
             unsupported dtype '<i8': farm writes float64 '<f8'"
        );
    }

    #[test]
    fn data_must_match_the_shape() {
        let read_all = |bytes: &[u8]| {
            let mut reader = NpyReader::new(bytes, Path::new("x.npy"))?;
            let mut out = Vec::new();
            reader.read_values(&mut out, 2)?;
            reader.read_values(&mut out, 2)?;
            reader.read_values(&mut out, 2)?;
            Ok::<_, OutputError>(out)
        };
        let mut file = header(3);
        for v in [1.0f64, 2.0, 3.0] {
            file.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(read_all(&file).unwrap(), [1.0, 2.0, 3.0]);

        let short = read_all(&file[..file.len() - 1]).unwrap_err();
        assert_eq!(
            short.to_string(),
            "x.npy is not a float64 .npy file farm can read: \
             the data ends after 23 bytes, but shape (3,) needs 3 values of 8 bytes"
        );
        file.push(0);
        let long = read_all(&file).unwrap_err();
        assert_eq!(
            long.to_string(),
            "x.npy is not a float64 .npy file farm can read: \
             the data continues past the 3 values of shape (3,)"
        );
        let mut empty = header(0);
        assert!(read_all(&empty).unwrap().is_empty());
        empty.extend_from_slice(&[0; 8]);
        assert!(read_all(&empty).is_err());
    }
}
