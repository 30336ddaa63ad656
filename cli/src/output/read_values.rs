//! What the format readers share: reading a file's values block by block
//! ([`ReadValues`]), filling a buffer from a reader, and decoding
//! little-endian f64 bytes. The readers depend on this module, and
//! [`super::read`] on them; never the reverse.

use std::io::{self, Read};

use super::OutputError;

/// A file's values, in order, in blocks.
pub(super) trait ReadValues {
    /// Appends up to `max` values to `out`: exactly `max` unless the file
    /// ends, after which nothing more is appended.
    fn read_values(&mut self, out: &mut Vec<f64>, max: usize) -> Result<(), OutputError>;
}

/// Reads into `buf` until it is full or the reader is exhausted, returning
/// how many bytes were read (fewer than `buf.len()` only at the end).
pub(super) fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(got) => filled += got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Decodes little-endian f64 bytes (a whole number of values) onto `out`.
pub(super) fn decode_le(bytes: &[u8], out: &mut Vec<f64>) {
    out.extend(bytes.chunks_exact(8).map(|chunk| {
        let mut value = [0u8; 8];
        value.copy_from_slice(chunk);
        f64::from_le_bytes(value)
    }));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A reader that hands out at most 5 bytes per call, like a slow pipe.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(5).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn fill_reads_until_full_or_end() {
        let data: Vec<u8> = (0..23).collect();
        let mut buf = [0u8; 16];
        let mut reader = Trickle(&data);
        assert_eq!(fill(&mut reader, &mut buf).unwrap(), 16);
        assert_eq!(buf[..], data[..16]);
        assert_eq!(fill(&mut reader, &mut buf).unwrap(), 7);
        assert_eq!(buf[..7], data[16..]);
        assert_eq!(fill(&mut reader, &mut buf).unwrap(), 0);
    }

    #[test]
    fn le_bytes_decode() {
        let values = [0.0, -0.0, 1.5, f64::MAX, 5e-324, f64::NEG_INFINITY];
        let mut out = Vec::new();
        decode_le(&farm_catalog::summary::le_bytes(&values), &mut out);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out), bits(&values));
    }
}
