//! Bounded echoes of caller input in error texts and audit details.
//!
//! An error that quotes what the caller sent ("invalid git path `...`",
//! "issuer `...` is not trusted") helps the caller fix the request, but a
//! caller controls the length: a 10 KB path echoed whole makes every refusal
//! 10 KB, in the response and in the audit log. Everything that formats
//! caller input goes through [`echo`], so the bound is one constant, not a
//! habit each error remembers.

use std::fmt;

/// The most bytes of one caller-supplied value an error text shows.
pub const MAX_ECHO_BYTES: usize = 96;

/// Displays `input` as a caller can recognise it, bounded to
/// [`MAX_ECHO_BYTES`]: a longer value shows its first bytes, then `…` and
/// its full length. Control characters are escaped (`\n`, `\u{0}`), so an
/// echo cannot forge a log line.
pub fn echo(input: &str) -> Echo<'_> {
    Echo {
        input,
        max: MAX_ECHO_BYTES,
    }
}

/// See [`echo`].
#[derive(Debug, Clone, Copy)]
pub struct Echo<'a> {
    input: &'a str,
    max: usize,
}

impl Echo<'_> {
    /// The same echo with another bound (in bytes of output before the
    /// length note).
    pub fn max(self, max: usize) -> Self {
        Self { max, ..self }
    }
}

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut written = 0;
        for ch in self.input.chars() {
            let mut buf = [0u8; 4];
            let escaped;
            let piece: &str = if ch.is_control() {
                escaped = ch.escape_debug().to_string();
                &escaped
            } else {
                ch.encode_utf8(&mut buf)
            };
            if written + piece.len() > self.max {
                return write!(f, "… ({} bytes)", self.input.len());
            }
            f.write_str(piece)?;
            written += piece.len();
        }
        Ok(())
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), with `…`
/// marking the cut: for a whole message that may embed caller input, such as
/// the detail of an audit refusal record.
pub fn bounded(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_echoed_whole() {
        assert_eq!(echo("acme/app.git").to_string(), "acme/app.git");
    }

    #[test]
    fn long_input_shows_a_prefix_and_its_length() {
        let long = "a".repeat(10_240);
        let shown = echo(&long).to_string();
        assert!(shown.len() < MAX_ECHO_BYTES + 32, "{shown}");
        assert!(shown.starts_with("aaaa"));
        assert!(shown.ends_with("… (10240 bytes)"), "{shown}");
    }

    #[test]
    fn multibyte_input_is_cut_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let shown = echo(&long).to_string();
        assert!(shown.len() < MAX_ECHO_BYTES + 32);
        assert!(shown.ends_with("… (2000 bytes)"));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(echo("a\nb\0").to_string(), "a\\nb\\0");
    }

    #[test]
    fn bounded_cuts_whole_messages() {
        assert_eq!(bounded("short", 10), "short");
        let text = "é".repeat(100);
        let cut = bounded(&text, 11);
        assert!(cut.len() <= 11, "{cut}");
        assert!(cut.ends_with('…'));
    }
}
