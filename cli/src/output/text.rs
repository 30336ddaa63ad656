//! Text files (`.csv`, `.txt`, and stdout): one value per line.
//!
//! Values are written in shortest round-trip form by `ryu` (`2.0`,
//! `1.4142135623730951`, `1e16`, `-0.0`), and the special values as `NaN`,
//! `inf` and `-inf`; Rust's `str::parse`, Python's `float()` and
//! `numpy.loadtxt` read every line back to the same bits (NaN payloads and
//! the sign of NaN aside).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::OutputError;
use super::read_values::ReadValues;

/// Lines longer than this (newline included) are refused rather than
/// buffered: no number needs anywhere near it, even written out in full.
const MAX_LINE: usize = 4096;

/// How much of a bad line an error message quotes.
const QUOTE_CHARS: usize = 40;

/// Values formatted by one task: enough work to outweigh handing it to a
/// thread, and for typical values (about 18 characters) more text than the
/// sink's write buffer, so it goes to the OS without another copy.
const PART_VALUES: usize = 64 * 1024;

/// Parts formatted before they are written. This bounds the text held at
/// once: at most 25 bytes a value (24 for the longest shortest form, and
/// the newline), so about 13 MiB.
const PARTS_PER_ROUND: usize = 8;

/// Formats values as lines on every thread of the rayon pool (formatting,
/// not the pipe, is the slow part of text output) and writes them in order.
/// The per-part text buffers are kept for the next batch.
#[derive(Debug, Default)]
pub(super) struct TextWriter {
    parts: Vec<Vec<u8>>,
}

impl TextWriter {
    /// Writes each little-endian f64 of `le_bytes` (a whole number of
    /// values) as a line.
    pub(super) fn write_values(&mut self, le_bytes: &[u8], out: &mut impl Write) -> io::Result<()> {
        use rayon::prelude::*;
        let part_bytes = PART_VALUES * 8;
        for round in le_bytes.chunks(part_bytes * PARTS_PER_ROUND) {
            let count = round.len().div_ceil(part_bytes);
            if self.parts.len() < count {
                self.parts.resize_with(count, Vec::new);
            }
            let parts = &mut self.parts[..count];
            parts
                .par_iter_mut()
                .zip(round.par_chunks(part_bytes))
                .for_each(|(text, values)| format_lines(values, text));
            for text in parts.iter() {
                out.write_all(text)?;
            }
        }
        Ok(())
    }
}

/// Replaces `text` with one line for each little-endian f64 of `le_bytes`.
fn format_lines(le_bytes: &[u8], text: &mut Vec<u8>) {
    text.clear();
    let mut digits = ryu::Buffer::new();
    for chunk in le_bytes.chunks_exact(8) {
        let mut value = [0u8; 8];
        value.copy_from_slice(chunk);
        // `format` writes NaN, inf and -inf for the non-finite values.
        text.extend_from_slice(digits.format(f64::from_le_bytes(value)).as_bytes());
        text.push(b'\n');
    }
}

/// Reads the values of a text file, one per line.
pub(super) struct TextReader<R> {
    inner: BufReader<R>,
    path: PathBuf,
    /// The current line, reused.
    line: Vec<u8>,
    line_number: u64,
    /// The first of a run of blank lines: fine at the end of the file, an
    /// error before another value.
    blank_since: Option<u64>,
}

impl<R: Read> TextReader<R> {
    pub(super) fn new(inner: R, path: &Path) -> TextReader<R> {
        TextReader {
            inner: BufReader::with_capacity(64 * 1024, inner),
            path: path.to_path_buf(),
            line: Vec::new(),
            line_number: 0,
            blank_since: None,
        }
    }

    /// Reads the next line into `self.line`; false at the end of the file.
    fn next_line(&mut self) -> Result<bool, OutputError> {
        self.line.clear();
        let got = (&mut self.inner)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut self.line)
            .map_err(|error| OutputError::Read {
                path: self.path.clone(),
                error,
            })?;
        if got == 0 {
            return Ok(false);
        }
        self.line_number += 1;
        if got == MAX_LINE && self.line.last() != Some(&b'\n') {
            return Err(OutputError::LineTooLong {
                path: self.path.clone(),
                line: self.line_number,
                max: MAX_LINE,
            });
        }
        Ok(true)
    }
}

impl<R: Read> ReadValues for TextReader<R> {
    fn read_values(&mut self, out: &mut Vec<f64>, max: usize) -> Result<(), OutputError> {
        let mut appended = 0;
        while appended < max && self.next_line()? {
            // Trimming also drops the `\n` and any `\r` before it.
            let text = self.line.trim_ascii();
            if text.is_empty() {
                self.blank_since.get_or_insert(self.line_number);
                continue;
            }
            if let Some(line) = self.blank_since {
                return Err(OutputError::BlankLine {
                    path: self.path.clone(),
                    line,
                });
            }
            let value = std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
                .ok_or_else(|| OutputError::Parse {
                    path: self.path.clone(),
                    line: self.line_number,
                    text: String::from_utf8_lossy(text)
                        .chars()
                        .take(QUOTE_CHARS)
                        .collect(),
                })?;
            out.push(value);
            appended += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use farm_catalog::summary::le_bytes;
    use proptest::prelude::*;

    fn to_text(values: &[f64]) -> String {
        let mut out = Vec::new();
        TextWriter::default()
            .write_values(&le_bytes(values), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn read_text(text: &str) -> Result<Vec<f64>, OutputError> {
        let mut reader = TextReader::new(text.as_bytes(), Path::new("x.txt"));
        let mut out = Vec::new();
        // Small blocks, to cross block boundaries.
        loop {
            let before = out.len();
            reader.read_values(&mut out, 3)?;
            if out.len() < before + 3 {
                return Ok(out);
            }
        }
    }

    /// Equal bits, or both NaN (text keeps neither payload nor sign of NaN).
    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// Parallel formatting writes the lines in order, across part and
    /// round boundaries and with buffers left from a longer batch.
    #[test]
    fn lines_stay_in_order_across_parts_and_rounds() {
        let mut writer = TextWriter::default();
        let mut expected = String::new();
        let mut out = Vec::new();
        let long = PART_VALUES * PARTS_PER_ROUND + PART_VALUES + 7;
        for (batch, len) in [long, 3, PART_VALUES, 0, PART_VALUES + 1]
            .into_iter()
            .enumerate()
        {
            let values: Vec<f64> = (0..len)
                .map(|i| (i as f64 + batch as f64 * 1e6).sqrt())
                .collect();
            for v in &values {
                expected.push_str(&format!("{}\n", ryu::Buffer::new().format(*v)));
            }
            writer.write_values(&le_bytes(&values), &mut out).unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn writes_shortest_round_trip_forms() {
        let values = [
            2.0,
            2f64.sqrt(),
            1e16,
            0.0,
            -0.0,
            5e-324,
            f64::MAX,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        assert_eq!(
            to_text(&values),
            "2.0\n1.4142135623730951\n1e16\n0.0\n-0.0\n5e-324\n\
             1.7976931348623157e308\nNaN\ninf\n-inf\n"
        );
    }

    #[test]
    fn reads_special_values_crlf_and_trailing_blank_lines() {
        let got = read_text("NaN\r\ninf\r\n-inf\n nan \n-0.0\n1e16\r\n\n\r\n").unwrap();
        assert!(got[0].is_nan() && got[3].is_nan());
        assert_eq!(got[1..3], [f64::INFINITY, f64::NEG_INFINITY]);
        assert_eq!(got[4].to_bits(), (-0.0f64).to_bits());
        assert_eq!(got[5], 1e16);
        assert_eq!(read_text("1.5").unwrap(), [1.5]);
        assert!(read_text("").unwrap().is_empty());
        assert!(read_text("\n").unwrap().is_empty());
    }

    #[test]
    fn parse_errors_give_line_and_text() {
        let err = read_text("1.0\n2.0\n3.0\n4,5\n").unwrap_err();
        assert_eq!(err.to_string(), "x.txt:4: cannot read \"4,5\" as a number");
        let err = read_text("1.0\n\n2.0\n").unwrap_err();
        assert_eq!(err.to_string(), "x.txt:2: empty line before the last value");
        let long = "1".repeat(MAX_LINE + 10);
        let err = read_text(&format!("1.0\n{long}\n")).unwrap_err();
        assert_eq!(err.to_string(), "x.txt:2: line is longer than 4096 bytes");
        let err = read_text("\u{FFFD}\n").unwrap_err();
        assert!(matches!(err, OutputError::Parse { line: 1, .. }), "{err}");
    }

    proptest! {
        #[test]
        fn every_value_round_trips(bits in prop::collection::vec(any::<u64>(), 0..200)) {
            let values: Vec<f64> = bits.into_iter().map(f64::from_bits).collect();
            let back = read_text(&to_text(&values)).unwrap();
            prop_assert_eq!(back.len(), values.len());
            for (a, b) in values.iter().zip(&back) {
                prop_assert!(same(*a, *b), "{} came back as {}", a, b);
            }
        }

        #[test]
        fn typical_values_round_trip(values in prop::collection::vec(
            prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO
                | prop::num::f64::INFINITE | prop::num::f64::POSITIVE | prop::num::f64::NEGATIVE,
            0..200,
        )) {
            let back = read_text(&to_text(&values)).unwrap();
            prop_assert_eq!(back.len(), values.len());
            for (a, b) in values.iter().zip(&back) {
                prop_assert!(same(*a, *b), "{} came back as {}", a, b);
            }
        }
    }
}
