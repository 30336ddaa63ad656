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

use super::read::{ReadValues, fill};
use super::{OutputError, decode_le};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// The data starts on a multiple of this, as numpy itself does.
const ALIGN: usize = 64;
/// Far beyond any 1-D header; bounds what a corrupt length makes us read.
const MAX_HEADER_LEN: u32 = 1 << 16;

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
pub(super) struct Reader<R> {
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

impl<R: Read> Reader<R> {
    /// Reads and checks the header.
    pub(super) fn new(mut inner: R, path: &Path) -> Result<Reader<R>, OutputError> {
        let n = read_header(&mut inner).map_err(|e| e.into_output_error(path))?;
        Ok(Reader {
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

impl<R: Read> ReadValues for Reader<R> {
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

/// Why a header could not be read: the file, or its contents.
enum HeaderError {
    Io(io::Error),
    Invalid(String),
}

impl HeaderError {
    fn into_output_error(self, path: &Path) -> OutputError {
        let path = path.to_path_buf();
        match self {
            HeaderError::Io(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                OutputError::Npy {
                    path,
                    reason: "the file ends inside the header".to_string(),
                }
            }
            HeaderError::Io(error) => OutputError::Read { path, error },
            HeaderError::Invalid(reason) => OutputError::Npy { path, reason },
        }
    }
}

impl From<io::Error> for HeaderError {
    fn from(error: io::Error) -> HeaderError {
        HeaderError::Io(error)
    }
}

impl From<String> for HeaderError {
    fn from(reason: String) -> HeaderError {
        HeaderError::Invalid(reason)
    }
}

/// Reads the header up to the first data byte, returning the array length.
fn read_header(r: &mut impl Read) -> Result<u64, HeaderError> {
    let mut preamble = [0u8; 8];
    r.read_exact(&mut preamble)?;
    if &preamble[..6] != MAGIC {
        return Err("it does not start with the \\x93NUMPY magic"
            .to_string()
            .into());
    }
    let (major, minor) = (preamble[6], preamble[7]);
    let header_len = match major {
        1 => {
            let mut len = [0u8; 2];
            r.read_exact(&mut len)?;
            u32::from(u16::from_le_bytes(len))
        }
        2 | 3 => {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)?;
            u32::from_le_bytes(len)
        }
        _ => return Err(format!("unsupported format version {major}.{minor}").into()),
    };
    if header_len > MAX_HEADER_LEN {
        return Err(format!("a header of {header_len} bytes is implausibly long").into());
    }
    let mut text = vec![0u8; header_len as usize];
    r.read_exact(&mut text)?;
    // Versions 1 and 2 are latin-1, 3 is UTF-8; a float64 header is ASCII.
    let text = std::str::from_utf8(&text)
        .ok()
        .filter(|t| t.is_ascii())
        .ok_or_else(|| "the header is not ASCII text".to_string())?;
    Ok(parse_header_dict(text)?)
}

/// A value in the header dict.
#[derive(Debug, PartialEq)]
enum Literal<'a> {
    Str(&'a str),
    Bool(bool),
    Tuple(Vec<u64>),
}

/// Parses the header dict, checking it describes a C-order 1-D float64
/// array, and returns its length.
fn parse_header_dict(text: &str) -> Result<u64, String> {
    let mut p = Parser { text, pos: 0 };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    p.expect(b'{')?;
    loop {
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.expect(b':')?;
        let value = p.literal()?;
        let slot = match key {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran_order,
            "shape" => &mut shape,
            other => return Err(format!("unexpected key '{other}' in the header")),
        };
        if slot.replace(value).is_some() {
            return Err(format!("key '{key}' appears twice in the header"));
        }
        if !p.eat(b',') {
            p.expect(b'}')?;
            break;
        }
    }
    p.skip_whitespace();
    if p.pos != text.len() {
        return Err("unexpected text after the header dict".to_string());
    }

    match descr {
        Some(Literal::Str("<f8")) => {}
        Some(Literal::Str(other)) => {
            return Err(format!(
                "unsupported dtype '{other}': farm writes float64 '<f8'"
            ));
        }
        Some(_) => return Err("descr is not a simple dtype: farm writes float64 '<f8'".into()),
        None => return Err("the header has no 'descr'".into()),
    }
    match fortran_order {
        Some(Literal::Bool(false)) => {}
        Some(_) => return Err("fortran_order is not False".into()),
        None => return Err("the header has no 'fortran_order'".into()),
    }
    match shape {
        Some(Literal::Tuple(dims)) if dims.len() == 1 => Ok(dims[0]),
        Some(Literal::Tuple(dims)) => Err(format!(
            "shape {} is not 1-D: farm writes a flat array",
            show_shape(&dims)
        )),
        Some(_) => Err("shape is not a tuple".into()),
        None => Err("the header has no 'shape'".into()),
    }
}

fn show_shape(dims: &[u64]) -> String {
    match dims {
        [one] => format!("({one},)"),
        _ => {
            let dims: Vec<String> = dims.iter().map(u64::to_string).collect();
            format!("({})", dims.join(", "))
        }
    }
}

/// A cursor over the header's Python literal: just enough syntax for what
/// numpy writes (strings, booleans, tuples of integers).
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn skip_whitespace(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// Skips whitespace, then consumes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        if self.text.as_bytes().get(self.pos) == Some(&byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(format!(
                "expected '{}' at byte {} of the header",
                char::from(byte),
                self.pos
            ))
        }
    }

    /// A quoted string without escapes (dtype names need none).
    fn string(&mut self) -> Result<&'a str, String> {
        self.skip_whitespace();
        let rest = &self.text[self.pos..];
        let quote = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => {
                return Err(format!(
                    "expected a string at byte {} of the header",
                    self.pos
                ));
            }
        };
        let body = &rest[1..];
        let end = body
            .find(quote)
            .ok_or_else(|| "unterminated string in the header".to_string())?;
        let value = &body[..end];
        if value.contains('\\') {
            return Err(format!("unsupported escape in header string '{value}'"));
        }
        self.pos += end + 2;
        Ok(value)
    }

    fn literal(&mut self) -> Result<Literal<'a>, String> {
        self.skip_whitespace();
        let rest = &self.text[self.pos..];
        if rest.starts_with(['\'', '"']) {
            return self.string().map(Literal::Str);
        }
        for (word, value) in [("True", true), ("False", false)] {
            if rest.starts_with(word) {
                self.pos += word.len();
                return Ok(Literal::Bool(value));
            }
        }
        if self.eat(b'(') {
            return self.tuple_rest().map(Literal::Tuple);
        }
        Err(format!(
            "unsupported value at byte {} of the header",
            self.pos
        ))
    }

    /// The integers of a tuple whose `(` has been consumed.
    fn tuple_rest(&mut self) -> Result<Vec<u64>, String> {
        let mut dims = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(dims);
            }
            dims.push(self.integer()?);
            if !self.eat(b',') {
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }

    fn integer(&mut self) -> Result<u64, String> {
        self.skip_whitespace();
        let rest = &self.text[self.pos..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let value = rest[..digits]
            .parse()
            .map_err(|_| format!("expected a dimension at byte {} of the header", self.pos))?;
        self.pos += digits;
        // Python 2 era files write longs as `3L`.
        if self.text[self.pos..].starts_with('L') {
            self.pos += 1;
        }
        Ok(value)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(header: &[u8]) -> Result<u64, OutputError> {
        Reader::new(header, Path::new("x.npy")).map(|r| r.n)
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
            let mut reader = Reader::new(bytes, Path::new("x.npy"))?;
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
