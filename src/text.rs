//! Text that came from data, made safe to print.
//!
//! Certificate names, Secret names read from files and paths are chosen by
//! whoever made the certificate or the file. Printed as they are, a subject
//! with an escape sequence could clear the terminal, one with a newline
//! could forge a `+ … create` line in a plan, and one with a bidi override
//! could reorder what a reviewer reads. [`printable`] escapes every control
//! and format character (so data can never start a line of its own, nor
//! close a Markdown code fence, which must begin a line) and bounds the
//! length, so a megabyte-long name is not echoed. [`printable_within`]
//! bounds a whole message at another length, [`escaped`] escapes a message
//! relayctl composed itself (which bounds the values it quotes) without
//! cutting it, and [`push_escaped`] is the one character-level escape they
//! all share. [`html_escaped`] is for text inside HTML (the check report,
//! the plan's Markdown).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Most characters of one data value printed; the rest is elided.
pub const MAX_SHOWN_CHARS: usize = 256;

/// Whether `c` must not reach a terminal as it is: C0/C1 controls, DEL, and
/// the invisible format characters that reorder or hide text.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}'   // zero-width, LRM/RLM
            | '\u{2028}' | '\u{2029}' // line/paragraph separators
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{FEFF}')
}

/// `text` with unsafe characters escaped (`\n`, `\u{1b}`, …) and cut to
/// [`MAX_SHOWN_CHARS`] characters.
pub fn printable(text: &str) -> Cow<'_, str> {
    printable_within(text, MAX_SHOWN_CHARS)
}

/// [`printable`] with another bound: for whole messages, which quote one or
/// more values inside fixed wording.
pub fn printable_within(text: &str, max_chars: usize) -> Cow<'_, str> {
    let needs_escape = text.chars().any(unsafe_char);
    let too_long = text.chars().nth(max_chars).is_some();
    if !needs_escape && !too_long {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(max_chars * 2));
    for (shown, c) in text.chars().enumerate() {
        if shown == max_chars {
            let rest = text.chars().count() - shown;
            let _ = write!(out, "… ({rest} more characters)");
            break;
        }
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// `text` with unsafe characters escaped as [`printable`] does, but never
/// cut: for messages relayctl composes (which bound the data they quote
/// themselves), such as a cluster's error or a check line.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// `text` safe inside HTML text and quoted attribute values (the check
/// report, the plan's Markdown): markup characters as entities, control
/// characters other than newlines as character references.
pub fn html_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {
                let _ = write!(out, "&#x{:x};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Pushes `c`, escaped when it is unsafe; returns how many characters it took.
pub fn push_escaped(out: &mut String, c: char) -> usize {
    let before = out.len();
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if unsafe_char(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => {
            out.push(c);
            return 1;
        }
    }
    // Every escape is ASCII: its bytes are its characters.
    out.len() - before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_newlines_cannot_reach_the_terminal() {
        assert_eq!(printable("CN=ok"), "CN=ok");
        assert_eq!(
            printable("CN=x\n  + gloo-mesh/relay-root-tls-secret  create"),
            "CN=x\\n  + gloo-mesh/relay-root-tls-secret  create"
        );
        assert_eq!(printable("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(printable("a\u{202e}b"), "a\\u{202e}b");
        assert!(!printable("x\n```\n").contains('\n'));
    }

    #[test]
    fn composed_messages_are_escaped_but_never_cut() {
        let long = format!("{}\u{1b}", "a".repeat(1000));
        let shown = escaped(&long);
        assert_eq!(shown.len(), 1000 + "\\u{1b}".len());
        assert_eq!(escaped("plain"), "plain");
    }

    #[test]
    fn long_values_are_cut() {
        let long = "a".repeat(1_000_000);
        let shown = printable(&long);
        assert!(shown.len() < 400, "{}", shown.len());
        assert!(shown.ends_with("(999744 more characters)"), "{shown}");
    }
}
