//! Located diagnostics, the rules they report, and how they are shown.
//!
//! A diagnostic names the file, line, column and field path of the problem,
//! the rule it breaks (a [`Code`], printed as `error[code]`) and, where we
//! know one, a hint that says how to fix it. Rendering is plain text
//! (readable without colour) with the offending source line underneath.
//!
//! The codes are a type so that the rules are listed, and documented, in one
//! place: scripts and the snapshots under `tests/snapshots/` match on their
//! text, so a code's text never changes once released.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use super::node::{Node, Position, Step};
use crate::model::SourceLocation;
use crate::text;

/// Declares [`Code`] from one table, so that a variant, its text and its
/// description cannot drift apart and [`Code::ALL`] lists every variant.
macro_rules! codes {
    ($($variant:ident => $text:literal, $description:literal;)+) => {
        /// The rule a [`Diagnostic`] reports: a stable kebab-case identifier.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $(
                #[doc = $description]
                $variant,
            )+
        }

        impl Code {
            /// Every code, in the order of the table.
            pub const ALL: &[Code] = &[$(Code::$variant),+];

            /// The text shown as `error[code]`.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)+
                }
            }

            /// One line saying what the rule checks.
            pub fn description(&self) -> &'static str {
                match self {
                    $(Code::$variant => $description,)+
                }
            }
        }
    };
}

codes! {
    // Reading the files.
    NoManifests => "no-manifests",
        "No `*.yaml` or `*.yml` manifest was found where relayctl was pointed.";
    YamlSyntax => "yaml-syntax",
        "A file is not valid YAML (or is too large to be a manifest).";
    NotAMapping => "not-a-mapping",
        "A document is not a mapping of `apiVersion`, `kind`, `metadata` and `spec`.";
    ApiVersion => "api-version",
        "A document's `apiVersion` is not the one this release reads.";
    InvalidKind => "invalid-kind",
        "A document's `kind` is not a string.";
    UnknownKind => "unknown-kind",
        "A document's `kind` is none of `RelayTrust`, `ManagementCluster`, `WorkloadCluster`.";
    MissingKind => "missing-kind",
        "The config has no `RelayTrust` or no `ManagementCluster` document.";
    DuplicateKind => "duplicate-kind",
        "The config has a second `RelayTrust` or `ManagementCluster` document.";
    // The shape of a document.
    MissingField => "missing-field",
        "A required field (`kind`, `apiVersion`, `metadata.name`) is absent.";
    UnknownField => "unknown-field",
        "A field the manifest reference does not know (often a misspelling).";
    InvalidType => "invalid-type",
        "A field holds the wrong YAML type, e.g. a list where a mapping belongs.";
    // Values.
    InvalidValue => "invalid-value",
        "A field holds a value outside its allowed set, e.g. an unknown `ca.mode`.";
    InvalidName => "invalid-name",
        "An instance or cluster name is not a DNS-1123 label.";
    InvalidNamespace => "invalid-namespace",
        "A namespace is not a DNS-1123 label.";
    InvalidDnsName => "invalid-dns-name",
        "The server authority or one of its DNS names is not a valid host name.";
    InvalidDuration => "invalid-duration",
        "A duration does not parse, is zero, or is longer than 100 years.";
    RenewBeforeTooLong => "renew-before-too-long",
        "A certificate's `renewBefore` is not shorter than its `validity`.";
    ValidityOrder => "validity-order",
        "A certificate relayctl issues would outlive the CA that signs it.";
    // Modes.
    ExternalWithTokens => "external-with-tokens",
        "Identity tokens are enabled in `external` CA mode.";
    ExternalClientMode => "external-client-mode",
        "`clientCerts.mode: external` and `ca.mode: external` are not chosen together.";
    TokenModeWithoutTokens => "token-mode-without-tokens",
        "`clientCerts.mode: token` with the identity token disabled.";
    PreprovisionedWithoutSigningKey => "preprovisioned-without-signing-key",
        "`clientCerts.mode: preprovisioned` in a CA mode that gives relayctl no signing key.";
    MissingMaterial => "missing-material",
        "A certificate, key or token the chosen mode needs is not given.";
    UnusedMaterial => "unused-material",
        "A certificate, key or token is given that the chosen mode never uses.";
    // Material sources and cluster connections.
    InvalidSource => "invalid-source",
        "A material source is not exactly one well-formed `file`, `env` or `secret`.";
    PathOutsideConfig => "path-outside-config",
        "A `file` source leaves the config folder (absolute, or `..` climbing out).";
    DuplicateCluster => "duplicate-cluster",
        "Two clusters of the config have the same name.";
    InvalidConnection => "invalid-connection",
        "A cluster's `connection` is not exactly one complete way to reach it.";
    DirectoryOutsideStateDir => "directory-outside-state-dir",
        "A directory-backed cluster's folder is outside `--state-dir`.";
    ShardOutOfRange => "shard-out-of-range",
        "A workload's `spec.shard` pin is not below the shard count of the run (`--shard I/N`, `--shards N`).";
    // Loading and checking the material (after validation).
    UnreadableMaterial => "unreadable-material",
        "A material source cannot be read: missing file or variable, absent Secret, too large.";
    InvalidMaterial => "invalid-material",
        "Loaded certificates or keys fail a PKI check (mismatch, expiry, usage, names).";
    WeakToken => "weak-token",
        "A brought identity token is too short, too long, or too guessable.";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Codes order by their text, so that diagnostics at the same place sort the
/// same whatever the order of the table.
impl Ord for Code {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Code {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

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
    /// The rule, shown as e.g. `unknown-field`.
    pub code: Code,
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

/// Reports problems of one document into a shared list, locating each field
/// path in the document's tree: every rule speaks through one of these.
pub(super) struct Reporter<'a> {
    /// The manifest file the document came from.
    pub(super) file: &'a Path,
    /// The document.
    pub(super) node: &'a Node,
    out: &'a mut Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    pub(super) fn new(file: &'a Path, node: &'a Node, out: &'a mut Vec<Diagnostic>) -> Self {
        Self { file, node, out }
    }

    /// A problem shown at the key `steps` ends in (or its deepest ancestor
    /// that exists): for a field that should not be there, or is incomplete.
    pub(super) fn at_key(
        &mut self,
        steps: &[Step],
        code: Code,
        message: String,
        hint: Option<String>,
    ) {
        let position = Some(self.node.locate(steps));
        self.push(steps, position, code, message, hint);
    }

    /// A problem shown at the value under `steps`: for a value that is wrong.
    pub(super) fn at_value(
        &mut self,
        steps: &[Step],
        code: Code,
        message: String,
        hint: Option<String>,
    ) {
        let position = Some(self.node.locate_value(steps));
        self.push(steps, position, code, message, hint);
    }

    fn push(
        &mut self,
        steps: &[Step],
        position: Option<Position>,
        code: Code,
        message: String,
        hint: Option<String>,
    ) {
        self.out.push(Diagnostic {
            file: self.file.to_path_buf(),
            position,
            field: field_path(steps),
            code,
            message,
            hint,
        });
    }

    /// Where the value under `steps` is, for the model to remember.
    pub(super) fn location(&self, steps: &[Step]) -> SourceLocation {
        let p = self.node.locate_value(steps);
        SourceLocation {
            file: self.file.to_path_buf(),
            line: p.line,
            column: p.column,
        }
    }
}

/// Whether the source line may be shown under a diagnostic. Manifests should
/// never hold keys or tokens inline, but when one does, the error about it
/// must not print it into a CI log: type errors (whose subject may be such a
/// value), lines that look like PEM or base64, and lines where a `value`,
/// `privateKey`, `token` or `password` field holds an inline scalar instead of
/// a `{ file | env | secret }` source are not quoted.
fn may_quote(diagnostic: &Diagnostic, line: &str) -> bool {
    if diagnostic.code == Code::InvalidType || line.contains("PRIVATE KEY") {
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

/// Most characters of a message or hint shown: they quote values from the
/// manifest (a kind, a name, a key), which can be any length.
const MAX_MESSAGE_CHARS: usize = 1024;

/// Most characters of a quoted source line shown, around the caret.
const MAX_QUOTED_CHARS: usize = 160;

/// Renders every diagnostic, with the source line and a caret when the file
/// text is known, and a closing count. Every line is bounded and free of
/// control characters, whatever the manifest holds: values quoted in
/// messages are elided past [`MAX_MESSAGE_CHARS`], and a long source line is
/// shown as a window around the caret.
pub fn render(diagnostics: &[Diagnostic], sources: &BTreeMap<PathBuf, String>) -> String {
    let mut out = String::new();
    for diagnostic in diagnostics {
        let message = text::printable_within(&diagnostic.message, MAX_MESSAGE_CHARS);
        let _ = writeln!(out, "error[{}]: {message}", diagnostic.code);
        let _ = write!(out, "  --> {}", text::printable(&diagnostic.location()));
        if !diagnostic.field.is_empty() {
            let _ = write!(out, " (field `{}`)", text::printable(&diagnostic.field));
        }
        out.push('\n');
        if let (Some(position), Some(source)) = (diagnostic.position, sources.get(&diagnostic.file))
            && let Some(line) = source.lines().nth(position.line.saturating_sub(1) as usize)
            && may_quote(diagnostic, line)
        {
            let (shown, caret_at) = quoted_window(line, position.column);
            let number = position.line.to_string();
            let gutter = " ".repeat(number.len());
            let _ = writeln!(out, "{gutter} |");
            let _ = writeln!(out, "{number} | {shown}");
            let _ = writeln!(out, "{gutter} | {caret_at}^");
        }
        if let Some(hint) = &diagnostic.hint {
            let hint = text::printable_within(hint, MAX_MESSAGE_CHARS);
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

/// The part of `line` to quote, at most [`MAX_QUOTED_CHARS`] characters
/// around the 1-based `column` (marked `…` where cut, unsafe characters
/// escaped, tabs kept so the caret lines up), and the padding that puts a
/// caret under that column.
fn quoted_window(line: &str, column: u32) -> (String, String) {
    let chars: Vec<char> = line.chars().collect();
    let caret = (column.saturating_sub(1) as usize).min(chars.len());
    let (start, end) = if chars.len() <= MAX_QUOTED_CHARS {
        (0, chars.len())
    } else {
        let start = caret
            .saturating_sub(MAX_QUOTED_CHARS / 2)
            .min(chars.len() - MAX_QUOTED_CHARS);
        (start, start + MAX_QUOTED_CHARS)
    };
    let mut shown = String::new();
    let mut padding = String::new();
    if start > 0 {
        shown.push('…');
        padding.push(' ');
    }
    for (at, &c) in chars.iter().enumerate().take(end).skip(start) {
        let width = if c == '\t' {
            shown.push('\t');
            1
        } else {
            text::push_escaped(&mut shown, c)
        };
        if at < caret {
            let pad = if c == '\t' { '\t' } else { ' ' };
            padding.extend(std::iter::repeat_n(pad, width));
        }
    }
    if end < chars.len() {
        shown.push('…');
    }
    (shown, padding)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_code_is_unique_kebab_case_and_described_in_one_line() {
        let mut seen = BTreeSet::new();
        for code in Code::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "`{text}` is used twice");
            assert!(
                !text.is_empty()
                    && !text.starts_with('-')
                    && !text.ends_with('-')
                    && !text.contains("--")
                    && text
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "`{text}` is not kebab-case"
            );
            assert_eq!(code.to_string(), text);
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(text)
            );
            let description = code.description();
            assert!(
                !description.is_empty() && !description.contains('\n'),
                "`{text}` needs a one-line description"
            );
        }
    }

    #[test]
    fn a_long_line_is_quoted_as_a_window_around_the_caret() {
        let line = format!("{}X{}", "a".repeat(5_000), "b".repeat(5_000));
        let (shown, padding) = quoted_window(&line, 5_001);
        assert_eq!(shown.chars().count(), MAX_QUOTED_CHARS + 2);
        assert!(shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        let caret = padding.chars().count();
        assert_eq!(shown.chars().nth(caret), Some('X'));

        let (shown, padding) = quoted_window("  name: x\ty\u{1b}[2J", 10);
        assert_eq!(shown, "  name: x\ty\\u{1b}[2J");
        assert_eq!(padding, " ".repeat(9));
        let (_, padding) = quoted_window("\tk: v", 2);
        assert_eq!(padding, "\t");
        let (shown, padding) = quoted_window("short", 99);
        assert_eq!((shown.as_str(), padding.as_str()), ("short", "     "));
    }

    #[test]
    fn megabyte_values_and_lines_are_not_echoed() {
        let huge = "a".repeat(1 << 20);
        let texts = [
            format!("apiVersion: relayctl.dev/v1alpha1\nkind: {huge}\n"),
            format!(
                "apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata:\n  name: {huge}\n"
            ),
            format!("apiVersion: relayctl.dev/v1alpha1\nkind: Cluster\n{huge}: 1\n"),
            format!(
                "apiVersion: relayctl.dev/v1alpha1\nkind: Cluster # {}\nmetadata: 3\n",
                "a ".repeat(1 << 19)
            ),
        ];
        for source in texts {
            let file = crate::config::ManifestFile {
                path: PathBuf::from("big.yaml"),
                text: source.clone(),
            };
            let diagnostics = crate::config::validate(&[file], Path::new("")).unwrap_err();
            let sources = BTreeMap::from([(PathBuf::from("big.yaml"), source)]);
            let rendered = render(&diagnostics, &sources);
            let longest = rendered.lines().map(|l| l.chars().count()).max().unwrap();
            assert!(longest <= 1200, "a rendered line has {longest} characters");
            assert!(rendered.len() < 8_000, "{} bytes rendered", rendered.len());
        }
    }

    #[test]
    fn codes_sort_by_their_text() {
        let mut by_variant = Code::ALL.to_vec();
        by_variant.sort();
        let mut by_text = Code::ALL.to_vec();
        by_text.sort_by_key(|c| c.as_str());
        assert_eq!(by_variant, by_text);
    }
}
