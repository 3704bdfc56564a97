//! Text for people: names that come from disk or from signed documents are
//! shown escaped, and error chains are shown without repeating themselves.
//!
//! Guarantees: [`Esc`] never emits a control character (C0, DEL, C1) or a
//! Unicode bidirectional override, so no file name can move the cursor, clear
//! the screen, start a new line or reorder text in a terminal, a log or an
//! audit-log outcome; text without such characters and without `\` is shown
//! unchanged. [`error_chain`] shows each cause once.

use std::fmt;

/// A name shown escaped: `\n`, `\t`, `\r`, `\\` and `\u{..}` for other control
/// or bidi-control characters; everything else as is.
#[derive(Clone, Copy, Debug)]
pub struct Esc<'a>(pub &'a str);

fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                '\r' => f.write_str("\\r")?,
                c if is_unsafe(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// One line of text safe for a terminal or a log: control and bidi-control
/// characters escaped as in [`Esc`], backslashes left alone (for messages that
/// already quote names with `{:?}`, whose escapes must not be doubled).
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// [`Esc`] of a path (lossy for bytes that are not UTF-8).
pub fn path(p: &std::path::Path) -> String {
    Esc(&p.to_string_lossy()).to_string()
}

/// A message without the repeats that joining texts makes: `X: X: rest` becomes
/// `X: rest` (a segment repeated right after itself, or after a segment that ends in it), and `X (X)` becomes `X`
/// (a parenthesis that only repeats what precedes it).
pub fn no_repeats(s: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in s.split(": ") {
        // "cannot sign data: data: …": the segment only repeats the end of the one before.
        let repeat = parts
            .last()
            .is_some_and(|prev| *prev == part || prev.ends_with(&format!(" {part}")));
        if !repeat {
            parts.push(part);
        }
    }
    let mut out = parts.join(": ");
    let mut from = 0;
    while let Some(i) = out[from..].find(" (").map(|i| i + from) {
        let Some(len) = out[i + 2..].find(')') else {
            break;
        };
        let inner = out[i + 2..i + 2 + len].to_string();
        let before = &out[..i];
        let repeats = !inner.is_empty()
            && before.ends_with(&inner)
            && before[..before.len() - inner.len()]
                .chars()
                .last()
                .is_none_or(|c| c == ' ');
        if repeats {
            out.replace_range(i..i + 3 + len, "");
        } else {
            from = i + 2;
        }
    }
    out
}

/// `error: cause: cause…`, leaving out a cause whose text the message already
/// holds (many errors name their source in their own message).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        source = s.source();
    }
    out
}

/// A time as RFC 3339 in UTC, to the second (`2026-06-01T12:00:00Z`): the one format of every
/// time sealrun writes into a record, a signature or an audit entry.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 formatting of a UTC time cannot fail")
}

/// Now, as [`rfc3339`].
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(Esc("a/b c.csv").to_string(), "a/b c.csv");
        assert_eq!(
            Esc("x\u{1b}[2J\ny\\\u{202e}z\u{85}").to_string(),
            "x\\u{1b}[2J\\ny\\\\\\u{202e}z\\u{85}"
        );
    }

    #[test]
    fn one_line_keeps_backslashes() {
        assert_eq!(one_line("a \"x\\ny\"\n\u{1b}"), "a \"x\\ny\"\\n\\u{1b}");
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading f: {0}")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("gone"));
        assert_eq!(error_chain(&e), "reading f: gone");
    }

    #[test]
    fn no_repeats_drops_only_true_repeats() {
        assert_eq!(no_repeats("oom-killed (oom-killed)"), "oom-killed");
        assert_eq!(
            no_repeats("failed: oom-killed (oom-killed)"),
            "failed: oom-killed"
        );
        assert_eq!(
            no_repeats("cannot sign data: data: cannot name it"),
            "cannot sign data: cannot name it"
        );
        assert_eq!(no_repeats("x: x"), "x");
        for keep in [
            "failed: exited 3 (status 3)",
            "succeeded (exited 0); 2 output file(s)",
            "a (b) c",
            "pids-limit (status 1)",
            "bad-name (name)",
        ] {
            assert_eq!(no_repeats(keep), keep);
        }
    }
}
