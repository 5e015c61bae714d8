//! Text that came from outside (a partner's file, a file name, a user name)
//! shown to a person: short, and with every character that could break a
//! line, a table or the reading order made visible as an escape.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters of input a problem message may quote.
pub const EXCERPT_CHARS: usize = 32;

/// Whether a character must be shown as an escape: control characters
/// (newlines break tables and logs), and the invisible ones that reorder or
/// hide text on screen (U+202E turns the rest of a line around).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'                 // soft hyphen
            | '\u{061C}'               // Arabic letter mark
            | '\u{180E}'               // Mongolian vowel separator
            | '\u{200B}'..='\u{200F}'  // zero-width spaces and joiners, LRM, RLM
            | '\u{2028}' | '\u{2029}'  // line and paragraph separators
            | '\u{202A}'..='\u{202E}'  // embeddings and overrides
            | '\u{2060}'..='\u{206F}'  // word joiner, invisible operators, isolates, deprecated formats
            | '\u{FEFF}'               // byte-order mark / zero-width no-break space
            | '\u{FFF9}'..='\u{FFFB}'  // interlinear annotations
            | '\u{E0000}'..='\u{E007F}' // tag characters
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => {
            let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
        }
    }
}

/// The whole text, with control and direction characters escaped, for
/// listings and tables. Borrowed when nothing needed escaping.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// At most `max_chars` characters of untrusted text, escaped, with `…`
/// where it was cut; backticks become `'` so the excerpt can be quoted in
/// backticks without being mistaken for the end of the quote.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (shown, c) in text.chars().enumerate() {
        if shown == max_chars {
            out.push('…');
            break;
        }
        if needs_escape(c) {
            push_escaped(&mut out, c);
        } else if c == '`' {
            out.push('\'');
        } else {
            out.push(c);
        }
    }
    out
}

/// Text cut to `max_chars` characters without escaping, for messages that
/// are stored (not shown) and must stay bounded.
pub fn truncated(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((at, _)) => Cow::Owned(format!("{}…", &text[..at])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched() {
        assert!(matches!(escaped("news2_20261122.csv"), Cow::Borrowed(_)));
        assert_eq!(excerpt("abc", 32), "abc");
    }

    #[test]
    fn newlines_and_direction_overrides_are_made_visible() {
        assert_eq!(escaped("a\nb"), "a\\nb");
        assert_eq!(escaped("evil\u{202E}vsc.exe"), "evil\\u{202e}vsc.exe");
        assert_eq!(escaped("x\u{1b}[31m"), "x\\u{001b}[31m");
        assert_eq!(escaped("\u{2066}a\u{2069}"), "\\u{2066}a\\u{2069}");
        assert_eq!(escaped("a\u{E0041}b"), "a\\u{e0041}b");
    }

    #[test]
    fn excerpts_are_short_and_cannot_close_their_quotes() {
        let long = "é".repeat(100);
        let cut = excerpt(&long, 32);
        assert_eq!(cut.chars().count(), 33);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt("a`b", 32), "a'b");
        assert_eq!(excerpt("\0\0\0", 2), "\\u{0000}\\u{0000}…");
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncated("ééé", 2), "éé…");
        assert_eq!(truncated("ab", 2), "ab");
    }
}
