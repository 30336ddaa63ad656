//! Exact parsing of element counts and start indices as people type them on
//! the command line: `1000000`, `1_000_000`, `1e9`, `2.5e9`.
//!
//! This module owns the grammar of those numbers and the wording of the
//! errors clap shows when one is wrong. It never goes through a float, so
//! every value up to `u64::MAX` (including `9007199254740993`, which `f64`
//! cannot hold) comes out exactly as written.

use std::iter::Peekable;
use std::str::Chars;

/// Why a command-line value is not a count.
///
/// Messages do not repeat the offending value: clap already prints it as
/// `invalid value '1.5' for '--n <N>': <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("empty value; expected a whole number such as 1000, 1_000 or 1e3")]
    Empty,
    #[error("negative numbers are not allowed")]
    Negative,
    /// `radix` names the notation, e.g. "hexadecimal".
    #[error("{radix} is not supported; write the number in decimal")]
    NotDecimal { radix: &'static str },
    #[error("infinity and NaN are not allowed; write a whole number such as 1000 or 1e9")]
    NotFinite,
    /// `position` counts characters (not bytes) from 1.
    #[error("not a number: unexpected {found:?} at position {position}, expected {expected}")]
    Unexpected {
        found: char,
        position: usize,
        expected: &'static str,
    },
    #[error("incomplete number: expected {expected} at the end")]
    Incomplete { expected: &'static str },
    #[error("not a whole number: the value has a fractional part")]
    Fractional,
    #[error("too large: the maximum is {}", u64::MAX)]
    TooLarge,
}

/// Parses a non-negative whole number as people write it: `1000000`,
/// `1_000_000`, `1e9`, `2.5e9`, `1.5E3`, `9007199254740993`. Exact: never
/// goes through a float.
///
/// Grammar: an optional `+`; one or more ASCII digits; optionally `.`
/// followed by one or more digits (so `1.` and `.5` are refused: write `1`
/// and `0.5`); optionally `e` or `E`, an optional `+` or `-`, and one or more
/// digits. Any digit run may contain single underscores between digits
/// (`1_000`, not `_1`, `1_` or `1__0`). Nothing else is allowed, including
/// surrounding whitespace. The value mantissa × 10^exponent must be a whole
/// number in `0..=u64::MAX`, so `1000e-3` is 1 but `2500e-3` is refused.
/// A leading `-` is refused as negative even for `-0`, since a count is
/// never written with a minus sign on purpose.
pub fn parse_count(text: &str) -> Result<u64, NumberError> {
    if text.is_empty() {
        return Err(NumberError::Empty);
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    // Recognise the common mistakes up front so the message names them,
    // rather than pointing at the 'x' or the 'i' as a stray character.
    if let Some(radix) = non_decimal_radix(unsigned) {
        return Err(NumberError::NotDecimal { radix });
    }
    if ["inf", "infinity", "nan"]
        .iter()
        .any(|word| unsigned.eq_ignore_ascii_case(word))
    {
        return Err(NumberError::NotFinite);
    }

    // Syntax errors come first so that `-abc` points at the 'a'; the sign
    // comes next so that `-1.5` says "negative" rather than "fractional".
    let number = Scanner::new(text).number()?;
    if number.negative {
        return Err(NumberError::Negative);
    }
    number.value()
}

fn non_decimal_radix(unsigned: &str) -> Option<&'static str> {
    let prefix = unsigned.get(..2)?.to_ascii_lowercase();
    match prefix.as_str() {
        "0x" => Some("hexadecimal"),
        "0o" => Some("octal"),
        "0b" => Some("binary"),
        _ => None,
    }
}

/// A syntactically valid number: `digits` × 10^(`exponent` − `fraction_len`).
struct Decimal {
    negative: bool,
    /// The mantissa's digits (integer part then fraction), as values 0..=9.
    digits: Vec<u8>,
    fraction_len: usize,
    /// Saturates at ±`u64::MAX`, which is far beyond any exponent that can
    /// still give a value in range, so saturating cannot change the outcome.
    exponent: i128,
}

impl Decimal {
    fn value(&self) -> Result<u64, NumberError> {
        let Some(first) = self.digits.iter().position(|&d| d != 0) else {
            // Zero times any power of ten is zero, even `0e999999`.
            return Ok(0);
        };
        let last = self.digits.iter().rposition(|&d| d != 0).unwrap_or(first);
        let significant = &self.digits[first..=last];
        let trailing_zeros = self.digits.len() - 1 - last;
        // All operands fit in i128 with room to spare: no overflow possible.
        let scale = self.exponent + trailing_zeros as i128 - self.fraction_len as i128;
        // `significant` ends in a non-zero digit, so any negative scale
        // leaves a fraction behind.
        if scale < 0 {
            return Err(NumberError::Fractional);
        }
        // u64::MAX has 20 digits; checking the length first bounds the loops
        // below and keeps `1e999999999` from doing any work.
        const MAX_DIGITS: i128 = 20;
        if significant.len() as i128 + scale > MAX_DIGITS {
            return Err(NumberError::TooLarge);
        }
        // At most 20 digits: below 10^20, which fits in u128.
        let mut value = significant
            .iter()
            .fold(0u128, |acc, &d| acc * 10 + u128::from(d));
        for _ in 0..scale {
            value *= 10;
        }
        u64::try_from(value).map_err(|_| NumberError::TooLarge)
    }
}

/// Walks the text one character at a time, remembering how many characters
/// it has consumed so errors can point at a position people can count to.
struct Scanner<'a> {
    chars: Peekable<Chars<'a>>,
    consumed: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner {
            chars: text.chars().peekable(),
            consumed: 0,
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) {
        if self.chars.next().is_some() {
            self.consumed += 1;
        }
    }

    /// The error for whatever is at the current position not being `expected`.
    fn error(&mut self, expected: &'static str) -> NumberError {
        match self.peek() {
            Some(found) => NumberError::Unexpected {
                found,
                position: self.consumed + 1,
                expected,
            },
            None => NumberError::Incomplete { expected },
        }
    }

    fn number(mut self) -> Result<Decimal, NumberError> {
        let negative = self.peek() == Some('-');
        if matches!(self.peek(), Some('+' | '-')) {
            self.bump();
        }
        let mut digits = Vec::new();
        self.digit_run("a digit", |d| digits.push(d))?;

        let mut fraction_len = 0;
        if self.peek() == Some('.') {
            self.bump();
            let before = digits.len();
            self.digit_run("a digit after '.'", |d| digits.push(d))?;
            fraction_len = digits.len() - before;
        }

        let mut exponent = 0;
        if matches!(self.peek(), Some('e' | 'E')) {
            self.bump();
            let exponent_negative = self.peek() == Some('-');
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            let mut magnitude = 0u64;
            self.digit_run("a digit in the exponent", |d| {
                magnitude = magnitude.saturating_mul(10).saturating_add(u64::from(d));
            })?;
            exponent = i128::from(magnitude);
            if exponent_negative {
                exponent = -exponent;
            }
        } else if self.peek().is_some() {
            let expected = if fraction_len > 0 {
                "a digit or an exponent such as e9"
            } else {
                "a digit, '.' or an exponent such as e9"
            };
            return Err(self.error(expected));
        }

        if self.peek().is_some() {
            return Err(self.error("a digit"));
        }
        Ok(Decimal {
            negative,
            digits,
            fraction_len,
            exponent,
        })
    }

    /// Consumes one or more digits with single underscores between them,
    /// handing each digit's value to `push`.
    fn digit_run(
        &mut self,
        expected_first: &'static str,
        mut push: impl FnMut(u8),
    ) -> Result<(), NumberError> {
        let mut expected = expected_first;
        loop {
            match self.peek().and_then(ascii_digit) {
                Some(d) => {
                    push(d);
                    self.bump();
                }
                None => return Err(self.error(expected)),
            }
            // Greedily take the rest of the run; an underscore commits us to
            // another digit.
            while let Some(d) = self.peek().and_then(ascii_digit) {
                push(d);
                self.bump();
            }
            if self.peek() != Some('_') {
                return Ok(());
            }
            self.bump();
            expected = "a digit after '_'";
        }
    }
}

/// Only ASCII digits: `char::is_numeric` would let in full-width and other
/// scripts' digits, which nobody means as a count.
fn ascii_digit(c: char) -> Option<u8> {
    c.is_ascii_digit().then(|| c as u8 - b'0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_what_people_write() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("1", 1),
            ("1e9", 1_000_000_000),
            ("2.5e9", 2_500_000_000),
            ("1_000_000", 1_000_000),
            ("9007199254740993", 9_007_199_254_740_993),
            ("18446744073709551615", u64::MAX),
            ("1.8446744073709551615e19", u64::MAX),
            ("184467440737095516150e-1", u64::MAX),
            ("1E3", 1000),
            ("1.5E3", 1500),
            ("+7", 7),
            ("1e0", 1),
            ("1e+3", 1000),
            ("12.50e1", 125),
            ("1000e-3", 1),
            ("000123", 123),
            ("0e999999", 0),
            ("0.000e5", 0),
            ("0e-5", 0),
            ("0.0", 0),
            ("1.0", 1),
            ("1e19", 10_000_000_000_000_000_000),
            ("1_0.2_5e1_0", 102_500_000_000),
            ("0e18446744073709551616", 0),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_count(text), Ok(expected), "parsing {text:?}");
        }
    }

    /// What a refused input must produce.
    #[derive(Debug)]
    enum Refusal {
        Is(NumberError),
        /// `Unexpected` at this character and 1-based position.
        At(char, usize),
        Incomplete,
    }

    impl Refusal {
        fn matches(&self, error: &NumberError) -> bool {
            match (self, error) {
                (Refusal::Is(expected), _) => expected == error,
                (
                    Refusal::At(c, p),
                    NumberError::Unexpected {
                        found, position, ..
                    },
                ) => c == found && p == position,
                (Refusal::Incomplete, NumberError::Incomplete { .. }) => true,
                _ => false,
            }
        }
    }

    #[test]
    fn refuses_what_is_not_a_count() {
        use NumberError::*;
        use Refusal::{At, Is};
        let cases = [
            ("1.5", Is(Fractional)),
            ("2500e-3", Is(Fractional)),
            ("1e-1", Is(Fractional)),
            ("1e-18446744073709551616", Is(Fractional)),
            ("-5", Is(Negative)),
            ("-0", Is(Negative)),
            ("-1.5", Is(Negative)),
            ("1e999", Is(TooLarge)),
            ("1e18446744073709551616", Is(TooLarge)),
            ("18446744073709551616", Is(TooLarge)),
            ("1.8446744073709551616e19", Is(TooLarge)),
            ("2e19", Is(TooLarge)),
            ("abc", At('a', 1)),
            ("-abc", At('a', 2)),
            ("inf", Is(NotFinite)),
            ("-Infinity", Is(NotFinite)),
            ("NaN", Is(NotFinite)),
            ("", Is(Empty)),
            (
                "0x10",
                Is(NotDecimal {
                    radix: "hexadecimal",
                }),
            ),
            ("0B101", Is(NotDecimal { radix: "binary" })),
            ("1e9abc", At('a', 4)),
            ("1e", Refusal::Incomplete),
            ("1e+", Refusal::Incomplete),
            ("e5", At('e', 1)),
            ("1.2.3", At('.', 4)),
            ("1__0", At('_', 3)),
            ("_1", At('_', 1)),
            ("1_", Refusal::Incomplete),
            ("1._5", At('_', 3)),
            ("1_.5", At('.', 3)),
            ("1.", Refusal::Incomplete),
            (".5", At('.', 1)),
            ("1.e3", At('e', 3)),
            (" 5", At(' ', 1)),
            ("5 ", At(' ', 2)),
            ("+", Refusal::Incomplete),
            ("-", Refusal::Incomplete),
            ("++5", At('+', 2)),
            ("１", At('１', 1)),
            ("1２3", At('２', 2)),
            ("1e1.5", At('.', 4)),
        ];
        for (text, refusal) in cases {
            match parse_count(text) {
                Err(e) => assert!(refusal.matches(&e), "{text:?} gave {e:?}, want {refusal:?}"),
                Ok(v) => panic!("{text:?} should be refused but gave {v}"),
            }
        }
    }

    #[test]
    fn messages_say_what_is_wrong() {
        let message = |text| parse_count(text).err().map(|e| e.to_string());
        assert_eq!(
            message("1.5").as_deref(),
            Some("not a whole number: the value has a fractional part")
        );
        assert_eq!(
            message("1e9abc").as_deref(),
            Some("not a number: unexpected 'a' at position 4, expected a digit")
        );
        assert_eq!(
            message("1e999").as_deref(),
            Some("too large: the maximum is 18446744073709551615")
        );
        assert_eq!(
            message("0x10").as_deref(),
            Some("hexadecimal is not supported; write the number in decimal")
        );
        assert_eq!(
            message("1__0").as_deref(),
            Some("not a number: unexpected '_' at position 3, expected a digit after '_'")
        );
        assert_eq!(
            message("1e").as_deref(),
            Some("incomplete number: expected a digit in the exponent at the end")
        );
        assert_eq!(
            message("-5").as_deref(),
            Some("negative numbers are not allowed")
        );
    }

    #[test]
    fn long_inputs_are_exact_and_linear() {
        let zeros = "0".repeat(10_000);
        assert_eq!(parse_count(&format!("{zeros}1")), Ok(1));
        assert_eq!(parse_count(&format!("1{zeros}e-10000")), Ok(1));
        assert_eq!(parse_count(&format!("0.{zeros}1e10001")), Ok(1));
        assert_eq!(
            parse_count(&format!("0.{zeros}1")),
            Err(NumberError::Fractional)
        );
        assert_eq!(
            parse_count(&format!("1{zeros}")),
            Err(NumberError::TooLarge)
        );
        let huge = "9".repeat(1_000_000);
        assert_eq!(
            parse_count(&format!("1e{huge}")),
            Err(NumberError::TooLarge)
        );
        assert_eq!(
            parse_count(&format!("{huge}e-{huge}")),
            Err(NumberError::Fractional)
        );
    }

    /// `v` with a decimal point `k` digits from the end and `e{k}`, e.g.
    /// 12345 and 2 give "123.45e2", and 5 and 3 give "0.005e3".
    fn with_point(v: u64, k: usize) -> String {
        let digits = format!("{v:0>width$}", width = k + 1);
        let (int, frac) = digits.split_at(digits.len() - k);
        if frac.is_empty() {
            format!("{int}e0")
        } else {
            format!("{int}.{frac}e{k}")
        }
    }

    proptest! {
        #[test]
        fn plain_decimal_round_trips(v: u64) {
            prop_assert_eq!(parse_count(&v.to_string()), Ok(v));
        }

        #[test]
        fn exponent_form_is_exact(v: u64, k in 0u32..=19) {
            let m = v / 10u64.pow(k);
            let exact = m * 10u64.pow(k);
            prop_assert_eq!(parse_count(&format!("{m}e{k}")), Ok(exact));
        }

        #[test]
        fn moving_the_point_is_exact(v: u64, k in 0usize..=25) {
            prop_assert_eq!(parse_count(&with_point(v, k)), Ok(v));
        }

        #[test]
        fn agrees_with_std_on_plain_digits(text in "[0-9]{1,25}") {
            prop_assert_eq!(parse_count(&text).ok(), text.parse::<u64>().ok());
        }

        #[test]
        fn never_panics_on_arbitrary_strings(text: String) {
            let _ = parse_count(&text);
        }

        #[test]
        fn never_panics_on_number_like_strings(text in "[-+0-9eE._x １ ]{0,40}") {
            let _ = parse_count(&text);
        }
    }
}
