//! Located diagnostics and how they are shown.
//!
//! A diagnostic names the file, line, column and field path of the problem
//! and, where we know one, a hint that says how to fix it. Rendering is plain
//! text (readable without colour) with the offending source line underneath.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use super::node::{Position, Step};

/// One problem found in the manifests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// The manifest file.
    pub file: PathBuf,
    /// Line and column, when known.
    #[serde(skip)]
    pub position: Option<Position>,
    /// Field path inside the document, e.g. `spec.ca.mode`; empty for the document.
    pub field: String,
    /// Stable identifier of the rule, e.g. `unknown-field`.
    pub code: &'static str,
    /// What is wrong, naming the value.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// `file:line:column`, or just the file.
    pub fn location(&self) -> String {
        match self.position {
            Some(p) => format!("{}:{}:{}", self.file.display(), p.line, p.column),
            None => self.file.display().to_string(),
        }
    }
}

/// Renders a field path the way users write it: `spec.dnsNames[1]`.
pub fn field_path(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Index(index) => {
                let _ = write!(out, "[{index}]");
            }
        }
    }
    out
}

/// Whether the source line may be shown under a diagnostic. Manifests should
/// never hold keys or tokens inline, but when one does, the error about it
/// must not print it into a CI log: type errors (whose subject may be such a
/// value), lines that look like PEM or base64, and lines where a `value`,
/// `privateKey`, `token` or `password` field holds an inline scalar instead of
/// a `{ file | env | secret }` source are not quoted.
fn may_quote(diagnostic: &Diagnostic, line: &str) -> bool {
    if diagnostic.code == "invalid-type" || line.contains("PRIVATE KEY") {
        return false;
    }
    let mut run = 0usize;
    for c in line.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=') {
            run += 1;
            if run >= 40 {
                return false;
            }
        } else {
            run = 0;
        }
    }
    let lower = line.to_ascii_lowercase();
    for field in ["value:", "privatekey:", "token:", "password:"] {
        let mut rest = lower.as_str();
        while let Some(at) = rest.find(field) {
            rest = &rest[at + field.len()..];
            let next = rest.trim_start().chars().next();
            if !matches!(next, None | Some('{') | Some('#')) {
                return false;
            }
        }
    }
    true
}

/// Renders every diagnostic, with the source line and a caret when the file
/// text is known, and a closing count.
pub fn render(diagnostics: &[Diagnostic], sources: &BTreeMap<PathBuf, String>) -> String {
    let mut out = String::new();
    for diagnostic in diagnostics {
        let _ = write!(out, "error[{}]: {}", diagnostic.code, diagnostic.message);
        out.push('\n');
        let _ = write!(out, "  --> {}", diagnostic.location());
        if !diagnostic.field.is_empty() {
            let _ = write!(out, " (field `{}`)", diagnostic.field);
        }
        out.push('\n');
        if let (Some(position), Some(text)) = (diagnostic.position, sources.get(&diagnostic.file))
            && let Some(line) = text.lines().nth(position.line.saturating_sub(1) as usize)
            && may_quote(diagnostic, line)
        {
            let number = position.line.to_string();
            let gutter = " ".repeat(number.len());
            let _ = writeln!(out, "{gutter} |");
            let _ = writeln!(out, "{number} | {line}");
            let caret_at = line
                .chars()
                .take(position.column.saturating_sub(1) as usize)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect::<String>();
            let _ = writeln!(out, "{gutter} | {caret_at}^");
        }
        if let Some(hint) = &diagnostic.hint {
            let _ = writeln!(out, "  = hint: {hint}");
        }
        out.push('\n');
    }
    let count = diagnostics.len();
    let _ = writeln!(
        out,
        "{count} problem{} found; nothing was written",
        if count == 1 { "" } else { "s" }
    );
    out
}
