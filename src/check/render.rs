//! The report as text (√ ‼ × lines, hints, a summary) and as JSON.

use std::fmt::Write as _;

use super::{Report, Status};
use crate::text::escaped;

/// The report for people: one `√` line for each cluster whose every check
/// passed; for a cluster with a ‼ or ×, one `√ ‼ ×` line per check and a
/// hint under every ‼ and ×; then a summary line. `verbose` expands every
/// cluster; `colour` adds ANSI colours. Every data value goes through
/// [`escaped`](crate::text::escaped).
pub fn render_text(report: &Report, colour: bool, verbose: bool) -> String {
    let paint = |code: &str, text: &str| {
        if colour {
            format!("\u{1b}[{code}m{text}\u{1b}[0m")
        } else {
            text.to_owned()
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "relayctl check: instance `{}`, {} CA, {} client certs, authority `{}`",
        escaped(&report.instance),
        report.ca_mode,
        report.client_cert_mode,
        escaped(&report.authority)
    );
    let mut compact = false;
    for cluster in &report.clusters {
        let role = cluster.role.as_str();
        let name = escaped(&cluster.name);
        if !verbose && cluster.worst() == Status::Ok {
            if !compact {
                out.push('\n');
                compact = true;
            }
            let n = cluster.checks.len();
            let _ = writeln!(
                out,
                "{} {} ({role}): {n} check{} passed",
                paint("32", Status::Ok.marker()),
                paint("1", &name),
                if n == 1 { "" } else { "s" }
            );
            continue;
        }
        compact = false;
        out.push('\n');
        let _ = writeln!(out, "{} ({role})", paint("1", &name));
        for check in &cluster.checks {
            let code = match check.status {
                Status::Ok => "32",
                Status::Warn => "33",
                Status::Fail => "1;31",
            };
            let _ = writeln!(
                out,
                "  {} {}",
                paint(code, check.status.marker()),
                escaped(&check.message)
            );
            if let Some(hint) = &check.hint {
                let _ = writeln!(out, "    {} {}", paint("2", "hint:"), escaped(hint));
            }
        }
    }
    out.push('\n');
    let _ = writeln!(out, "{}", summary_line(report));
    out
}

/// `Check passed: 20 passed, 1 warning, 0 failed.`
pub fn summary_line(report: &Report) -> String {
    let s = report.summary;
    format!(
        "Check {}: {} passed, {} warning{}, {} failed.",
        if report.passed() { "passed" } else { "failed" },
        s.ok,
        s.warn,
        if s.warn == 1 { "" } else { "s" },
        s.fail
    )
}

/// The report as JSON (the documented, versioned form).
pub fn render_json(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}
