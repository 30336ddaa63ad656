//! Showing text that came from another process (a worker's name, a
//! failure message, an address or a function name as sent) on a terminal
//! or in a log line: control characters are escaped, so no escape
//! sequence reaches a terminal and no newline forges a log line, and the
//! length is bounded, so an oversized value is echoed as a short prefix.

use std::fmt;

use tonic::Status;

/// How many characters of a name or value are shown.
pub const SHORT: usize = 100;

/// How many characters of a message (e.g. why a job failed) are shown.
pub const LONG: usize = 2000;

/// `text` as it may be shown: the first [`SHORT`] characters, escaped.
pub fn shown(text: &str) -> Shown<'_> {
    shown_up_to(text, SHORT)
}

/// `text` as it may be shown: the first `max_chars` characters, escaped.
pub fn shown_up_to(text: &str, max_chars: usize) -> Shown<'_> {
    Shown { text, max_chars }
}

/// A status another process sent, as it may be shown: its message and the
/// causes behind it ([`farm_proto::error::describe`]), the first [`LONG`]
/// characters, escaped. The one way a status's text reaches a terminal or
/// a log line.
pub fn status_text(status: &Status) -> String {
    shown_up_to(&farm_proto::error::describe(status), LONG).to_string()
}

/// Text shown safely: see [`shown`].
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a> {
    text: &'a str,
    max_chars: usize,
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.text.char_indices();
        for (_, c) in chars.by_ref().take(self.max_chars) {
            if is_unsafe(c) {
                // `\n`, `\u{1b}`, `\u{202e}`: visible, and harmless.
                write!(f, "\\u{{{:x}}}", u32::from(c))?;
            } else {
                f.write_str(c.encode_utf8(&mut [0; 4]))?;
            }
        }
        if chars.next().is_some() {
            write!(f, "… ({} bytes)", self.text.len())?;
        }
        Ok(())
    }
}

/// Control characters (C0, DEL, C1), and the invisible ones that reorder
/// what a terminal shows (bidirectional overrides and isolates).
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        let cases = [
            ("worker-1", "worker-1"),
            ("a\nERROR forged", "a\\u{a}ERROR forged"),
            ("\u{1b}[2Jcleared", "\\u{1b}[2Jcleared"),
            ("tab\there\r", "tab\\u{9}here\\u{d}"),
            ("\u{7f}\u{9b}", "\\u{7f}\\u{9b}"),
            ("abc\u{202e}fed", "abc\\u{202e}fed"),
            ("π ≈ 3.14, 計算", "π ≈ 3.14, 計算"),
            ("", ""),
        ];
        for (text, expected) in cases {
            assert_eq!(shown(text).to_string(), expected, "{text:?}");
        }
    }

    #[test]
    fn long_text_is_cut_and_its_size_given() {
        let long = "x".repeat(100_000);
        assert_eq!(
            shown(&long).to_string(),
            format!("{}… (100000 bytes)", "x".repeat(SHORT))
        );
        let exact = "y".repeat(SHORT);
        assert_eq!(shown(&exact).to_string(), exact);
        assert_eq!(shown_up_to("ééé", 2).to_string(), "éé… (6 bytes)");
    }

    #[test]
    fn a_status_is_shown_escaped_and_bounded() {
        let forged = Status::unavailable("gone\n2026-12-08T01:00:00Z ERROR forged\u{1b}[2J");
        assert_eq!(
            status_text(&forged),
            "gone\\u{a}2026-12-08T01:00:00Z ERROR forged\\u{1b}[2J"
        );
        let huge = Status::internal("z".repeat(50_000));
        assert_eq!(
            status_text(&huge),
            format!("{}… (50000 bytes)", "z".repeat(LONG))
        );
    }
}
