//! How a call's result is shown: text when it reads as text, hex otherwise.

use crate::payload::encode_hex;

/// Renders a guest function's result for the terminal: the bytes as they
/// are when they are valid UTF-8 with no control characters other than
/// `\n` and `\t`, otherwise (or when `force_hex`) lowercase hex. An empty
/// result renders as empty text.
pub fn render(bytes: &[u8], force_hex: bool) -> String {
    if !force_hex
        && let Ok(text) = std::str::from_utf8(bytes)
        && is_printable(text)
    {
        return text.to_string();
    }
    encode_hex(bytes)
}

/// Whether `text` has no control characters other than newline and tab.
fn is_printable(text: &str) -> bool {
    text.chars()
        .all(|c| c == '\n' || c == '\t' || !c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stays_text() {
        assert_eq!(render(b"hello", false), "hello");
        assert_eq!(render(b"two\nlines\tand tab", false), "two\nlines\tand tab");
        assert_eq!(render("grüße ✓".as_bytes(), false), "grüße ✓");
        assert_eq!(render(b"", false), "");
    }

    #[test]
    fn binary_becomes_hex() {
        assert_eq!(render(&[5, 0, 0, 0, 0, 0, 0, 0], false), "0500000000000000");
        assert_eq!(render(b"\r\n", false), "0d0a", "carriage return");
        assert_eq!(render(b"a\x1b[31m", false), "611b5b33316d", "escape");
        assert_eq!(render(b"\x7f", false), "7f", "DEL");
        assert_eq!(render("\u{85}".as_bytes(), false), "c285", "C1 control");
        assert_eq!(render(&[0xff, 0xfe], false), "fffe", "invalid UTF-8");
    }

    #[test]
    fn forced_hex() {
        assert_eq!(render(b"hi", true), "6869");
        assert_eq!(render(b"", true), "");
    }
}
