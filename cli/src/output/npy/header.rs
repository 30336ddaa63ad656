//! Reading a `.npy` header: the magic, the version, the length, and the
//! Python dict literal describing the array, checked to be a C-order 1-D
//! float64 array.

use std::io::{self, Read};
use std::path::Path;

use super::super::OutputError;
use super::MAGIC;

/// Far beyond any 1-D header; bounds what a corrupt length makes us read.
const MAX_HEADER_LEN: u32 = 1 << 16;

/// Why a header could not be read: the file, or its contents.
pub(super) enum HeaderError {
    Io(io::Error),
    Invalid(String),
}

impl HeaderError {
    pub(super) fn into_output_error(self, path: &Path) -> OutputError {
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
pub(super) fn read_header(r: &mut impl Read) -> Result<u64, HeaderError> {
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
