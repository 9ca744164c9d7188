//! The plan for people and machines: text, JSON and Markdown.
//!
//! Text is Terraform-like: one line per Secret with `+ ~ - = ! ×`, the
//! reasons, what each data key holds (certificate facts, key algorithm and
//! public-key fingerprint, token digest prefix and length, never a value),
//! and a summary line. Markdown is for pull-request comments and stays under
//! [`MARKDOWN_LIMIT`] characters, saying so when it had to cut.

use std::fmt::Write as _;

use super::model::{Action, CertSummary, Change, ClusterPlan, Plan, Role, Value};
use crate::text::{escaped, html_escaped};

/// GitHub refuses comments over 65,536 characters; keep a margin.
pub const MARKDOWN_LIMIT: usize = 65_000;

/// Colours for terminals; `Palette::plain()` when `NO_COLOR` is set or not a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    enabled: bool,
}

impl Palette {
    /// No escape codes.
    pub fn plain() -> Self {
        Self { enabled: false }
    }

    /// ANSI colours.
    pub fn ansi() -> Self {
        Self { enabled: true }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\u{1b}[{code}m{text}\u{1b}[0m")
        } else {
            text.to_owned()
        }
    }

    fn action(&self, action: Action, text: &str) -> String {
        let code = match action {
            Action::Create => "32",
            Action::Update => "33",
            Action::Delete => "31",
            Action::NoOp => "2",
            Action::Conflict | Action::Error => "1;31",
        };
        self.paint(code, text)
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Create => "create",
        Action::Update => "update",
        Action::Delete => "delete",
        Action::NoOp => "no changes",
        Action::Conflict => "conflict",
        Action::Error => "error",
    }
}

fn role(role: Role) -> &'static str {
    match role {
        Role::Management => "management",
        Role::Workload => "workload",
        Role::Orphan => "orphan",
    }
}

fn cert_line(c: &CertSummary) -> String {
    let mut parts = vec![c.subject.clone()];
    if !c.dns_names.is_empty() {
        parts.push(format!("SAN {}", c.dns_names.join(",")));
    }
    if c.issuer != c.subject {
        parts.push(format!("issuer {}", c.issuer));
    }
    if c.is_ca {
        parts.push("CA".to_owned());
    }
    parts.push(format!("notAfter {}", c.not_after));
    if let Some(serial) = &c.serial {
        parts.push(format!("serial {serial}"));
    }
    if let Some(fp) = &c.sha256 {
        parts.push(format!("sha256 {}", short(fp)));
    }
    parts.join(", ")
}

fn short(fingerprint: &str) -> String {
    let clean: String = fingerprint.chars().filter(|c| *c != ':').collect();
    clean.chars().take(16).collect::<String>().to_lowercase()
}

/// One line describing a data value; never the value.
pub fn value_line(value: &Value) -> String {
    match value {
        Value::Certificates { certificates, new } => {
            let mut text = String::new();
            if *new {
                text.push_str("(new) ");
            }
            match certificates.as_slice() {
                [] => text.push_str("no certificate"),
                [one] => text.push_str(&cert_line(one)),
                [first, rest @ ..] => {
                    let _ = write!(
                        text,
                        "{} (+{} more: {})",
                        cert_line(first),
                        rest.len(),
                        rest.iter()
                            .map(|c| c.subject.clone())
                            .collect::<Vec<_>>()
                            .join("; ")
                    );
                }
            }
            text
        }
        Value::PrivateKey {
            algorithm,
            public_key_sha256,
            new,
        } => match (public_key_sha256, new) {
            (_, true) => format!("(new) {algorithm} private key, generated at apply"),
            (Some(fp), false) => {
                format!("{algorithm} private key, public key sha256 {}", short(fp))
            }
            (None, false) => format!("{algorithm} private key"),
        },
        Value::Token {
            digest,
            length,
            new,
        } => match (digest, new) {
            (_, true) => format!("(new) token, {length} bytes, generated at apply"),
            (Some(d), false) => format!("token {d}, {length} bytes"),
            (None, false) => format!("token, {length} bytes"),
        },
        Value::Text { text } => text.clone(),
    }
}

/// The header line shared by text and Markdown.
fn header(plan: &Plan) -> String {
    format!(
        "instance `{}`, namespace `{}`, CA mode `{}`, client certs `{}`, config sha256:{}, source {}",
        plan.instance,
        plan.namespace,
        plan.ca_mode,
        plan.client_cert_mode,
        &plan.config_digest[..plan.config_digest.len().min(12)],
        plan.source
    )
}

/// The summary line: `Plan: 3 to create, 1 to update, 0 to delete, 5 unchanged.`
pub fn summary_line(plan: &Plan) -> String {
    let s = &plan.summary;
    let mut line = format!(
        "Plan: {} to create, {} to update, {} to delete, {} unchanged",
        s.create, s.update, s.delete, s.no_op
    );
    if s.conflict > 0 {
        let _ = write!(
            line,
            ", {} conflict{}",
            s.conflict,
            if s.conflict == 1 { "" } else { "s" }
        );
    }
    if s.error > 0 {
        let _ = write!(
            line,
            ", {} error{}",
            s.error,
            if s.error == 1 { "" } else { "s" }
        );
    }
    line.push('.');
    line
}

/// Terraform-like text: the Secrets that change, conflicts and errors, then
/// how many clusters are unchanged and the summary line. `show_unchanged`
/// lists every cluster and Secret, with the data of unchanged ones too.
pub fn text(plan: &Plan, palette: Palette, show_unchanged: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "relayctl plan: {}", header(plan));
    let mut unchanged = 0;
    for cluster in &plan.clusters {
        if !show_unchanged && !cluster_changes(cluster) {
            unchanged += 1;
            continue;
        }
        out.push('\n');
        cluster_text(&mut out, cluster, palette, show_unchanged);
    }
    out.push('\n');
    if unchanged > 0 {
        let _ = writeln!(
            out,
            "{} unchanged (`--show-unchanged` lists {}).",
            count(unchanged, "cluster", "clusters"),
            if unchanged == 1 { "it" } else { "them" }
        );
    }
    let ca = ca_text(plan);
    if !ca.is_empty() {
        let _ = writeln!(out, "{ca}");
    }
    let _ = writeln!(out, "{}", summary_line(plan));
    if let Some(line) = closing_line(plan) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The last line of a plan with nothing to write: whether everything
/// matches, or what still differs.
fn closing_line(plan: &Plan) -> Option<&'static str> {
    if plan.summary.has_changes() || plan.summary.has_errors() {
        return None;
    }
    let waiting = plan
        .ca
        .rotation
        .as_ref()
        .and_then(|r| r.gate.as_ref())
        .is_some_and(|g| !g.open);
    Some(if !plan.ca.drift.is_empty() {
        "No changes to write, but the CA in the clusters differs from the config (see `CA drift` above)."
    } else if waiting {
        "No changes to write: the CA rotation waits for its gate (see above)."
    } else {
        "No changes: every cluster matches the config."
    })
}

/// The CA drift and the rotation, as text; empty when there is neither.
pub fn ca_text(plan: &Plan) -> String {
    let mut out = String::new();
    if !plan.ca.drift.is_empty() {
        let _ = writeln!(
            out,
            "CA drift: the clusters hold a CA the config describes otherwise"
        );
        for d in &plan.ca.drift {
            let _ = writeln!(
                out,
                "  {} `{}`: {} in the clusters, {} in the config",
                d.ca, d.field, d.observed, d.configured
            );
            let _ = writeln!(out, "    → {}", d.action);
        }
    }
    if let Some(r) = &plan.ca.rotation {
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "CA rotation `{}` ({}): phase {} of {} ({}), since {}{}",
            r.id,
            r.kind,
            r.step,
            r.steps,
            r.phase,
            r.phase_started,
            if r.held {
                ", held after a rollback"
            } else {
                ""
            }
        );
        let _ = writeln!(out, "  trigger: {}", r.trigger);
        let _ = writeln!(out, "  this apply: {}", r.this_apply);
        if let Some(g) = &r.gate {
            let state = if g.open {
                "open: the next apply starts it".to_owned()
            } else {
                "closed".to_owned()
            };
            let _ = writeln!(out, "  next phase: {} (gate {state})", g.next);
            for w in &g.waiting_for {
                let _ = writeln!(out, "    waiting for {w}");
            }
            if g.blocked_clusters > 0 {
                let _ = writeln!(
                    out,
                    "    blocked by {} cluster{}:",
                    g.blocked_clusters,
                    if g.blocked_clusters == 1 { "" } else { "s" }
                );
                for b in &g.blockers {
                    let _ = writeln!(out, "      {}: {}", b.cluster, b.reason);
                }
                if g.blocked_clusters > g.blockers.len() {
                    let _ = writeln!(
                        out,
                        "      … and {} more (`-o json` lists the first {})",
                        g.blocked_clusters - g.blockers.len(),
                        g.blockers.len()
                    );
                }
            }
            let _ = writeln!(
                out,
                "    certificates still on the old side: {}",
                g.old_certificates
            );
        }
    }
    out
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Whether a cluster is listed without `--show-unchanged`: it has a write,
/// a conflict or an error, or it left the config (an orphan, whose Secrets
/// are kept or pruned, is always worth a line).
fn cluster_changes(cluster: &ClusterPlan) -> bool {
    cluster.role == Role::Orphan
        || cluster.error.is_some()
        || cluster.changes.iter().any(|c| c.action != Action::NoOp)
}

fn cluster_text(out: &mut String, cluster: &ClusterPlan, palette: Palette, show_unchanged: bool) {
    let _ = writeln!(
        out,
        "{} ({})",
        palette.paint("1", &escaped(&cluster.name)),
        role(cluster.role)
    );
    if let Some(error) = &cluster.error {
        let _ = writeln!(
            out,
            "  {} {}",
            palette.action(Action::Error, Action::Error.marker()),
            palette.action(Action::Error, &escaped(error))
        );
        return;
    }
    if cluster.changes.is_empty() {
        let _ = writeln!(out, "  (nothing to manage)");
    }
    // Unchanged Secrets and (on mgmt) registrations, counted apart.
    let (mut secrets, mut registrations) = (0, 0);
    for change in &cluster.changes {
        if change.action == Action::NoOp && !show_unchanged && cluster.role != Role::Orphan {
            if crate::relay::registration::is_change_name(&change.name) {
                registrations += 1;
            } else {
                secrets += 1;
            }
            continue;
        }
        change_text(out, change, palette, show_unchanged);
    }
    let hidden = match (secrets, registrations) {
        (0, 0) => None,
        (n, 0) => Some(count(n, "Secret", "Secrets")),
        (0, r) => Some(count(r, "KubernetesCluster", "KubernetesClusters")),
        (n, r) => Some(format!(
            "{} and {}",
            count(n, "Secret", "Secrets"),
            count(r, "KubernetesCluster", "KubernetesClusters")
        )),
    };
    if let Some(hidden) = hidden {
        let _ = writeln!(
            out,
            "  {} {} unchanged",
            palette.action(Action::NoOp, Action::NoOp.marker()),
            palette.action(Action::NoOp, &hidden)
        );
    }
}

fn change_text(out: &mut String, change: &Change, palette: Palette, verbose: bool) {
    let marker = palette.action(change.action, change.action.marker());
    let what = palette.action(change.action, verb(change.action));
    let reasons = if change.reasons.is_empty() {
        String::new()
    } else {
        format!(": {}", change.reasons.join("; "))
    };
    let _ = writeln!(
        out,
        "  {marker} {}/{}  {what}{}",
        escaped(&change.namespace),
        escaped(&change.name),
        escaped(&reasons)
    );
    if change.action != Action::NoOp || verbose {
        for (key, value) in &change.data {
            let _ = writeln!(
                out,
                "      {}: {}",
                escaped(key),
                escaped(&value_line(value))
            );
        }
    }
}

/// The plan as JSON (the documented, versioned form).
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).unwrap_or_default()
}

/// Markdown for a pull-request comment, at most [`MARKDOWN_LIMIT`] characters.
///
/// As the text: only clusters with changes, conflicts or errors (then how
/// many are unchanged), unless `show_unchanged`.
pub fn markdown(plan: &Plan, show_unchanged: bool) -> String {
    let mut head = String::new();
    let _ = writeln!(head, "### relayctl plan\n");
    let _ = writeln!(head, "{}\n", header(plan));
    let _ = writeln!(head, "**{}**\n", summary_line(plan));
    let ca = ca_text(plan);
    if !ca.is_empty() {
        let _ = writeln!(head, "```text\n{}```\n", ca);
    }
    if let Some(line) = closing_line(plan).filter(|_| !plan.ca.is_empty()) {
        let _ = writeln!(head, "{line}\n");
    }
    let mut body = String::new();
    let mut truncated_after = None;
    let shown: Vec<&ClusterPlan> = plan
        .clusters
        .iter()
        .filter(|c| show_unchanged || cluster_changes(c))
        .collect();
    let unchanged = plan.clusters.len() - shown.len();
    for (index, cluster) in shown.iter().enumerate() {
        let mut section = String::new();
        let changed = cluster_changes(cluster);
        let _ = writeln!(
            section,
            "<details{}><summary><code>{}</code> ({}){}</summary>\n",
            if changed { " open" } else { "" },
            html_escaped(&escaped(&cluster.name)),
            role(cluster.role),
            if changed { "" } else { ": no changes" }
        );
        section.push_str("```diff\n");
        let mut text = String::new();
        cluster_text(&mut text, cluster, Palette::plain(), show_unchanged);
        for line in text.lines().skip(1) {
            // Move the action marker to column 0, where `diff` highlighting
            // looks for it; detail lines stay context.
            let trimmed = line.trim_start();
            let (marker, rest) = trimmed.split_at(trimmed.chars().next().map_or(0, char::len_utf8));
            let prefix = match marker {
                "+" => Some("+"),
                "-" => Some("-"),
                "~" | "!" | "×" => Some("!"),
                "=" => Some(" "),
                _ => None,
            };
            match prefix {
                Some(prefix) => {
                    let _ = writeln!(section, "{prefix}{}", rest.trim_end());
                }
                None => {
                    let _ = writeln!(section, " {}", line.trim_end());
                }
            }
        }
        section.push_str("```\n\n</details>\n\n");
        let footer_room = 300;
        if head.len() + body.len() + section.len() + footer_room > MARKDOWN_LIMIT {
            truncated_after = Some(index);
            break;
        }
        body.push_str(&section);
    }
    let mut out = head + &body;
    if let Some(index) = truncated_after {
        let _ = writeln!(
            out,
            "> **Truncated:** {} of {} clusters shown to stay under {} characters; run `relayctl plan -o text` for the full plan.",
            index,
            shown.len(),
            MARKDOWN_LIMIT
        );
    }
    if unchanged > 0 {
        let _ = writeln!(
            out,
            "{} unchanged (`--show-unchanged` lists {}).",
            count(unchanged, "cluster", "clusters"),
            if unchanged == 1 { "it" } else { "them" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::plan::Summary;

    fn change(name: &str, action: Action) -> Change {
        Change {
            namespace: "gloo-mesh".into(),
            name: name.into(),
            action,
            reasons: if action == Action::NoOp {
                Vec::new()
            } else {
                vec!["missing".into()]
            },
            observed_version: None,
            data: BTreeMap::new(),
        }
    }

    fn plan(changes: Vec<Change>) -> Plan {
        let clusters = vec![ClusterPlan {
            name: "mgmt".into(),
            role: Role::Management,
            error: None,
            changes,
        }];
        Plan {
            format_version: 1,
            instance: "prod".into(),
            namespace: "gloo-mesh".into(),
            ca_mode: crate::model::CaMode::Managed,
            client_cert_mode: crate::model::ClientCertMode::Preprovisioned,
            config_digest: "d".into(),
            source: "s".into(),
            summary: Summary::of(&clusters),
            ca: Default::default(),
            clusters,
        }
    }

    #[test]
    fn unchanged_secrets_and_registrations_are_counted_apart() {
        let text = |changes| super::text(&plan(changes), Palette::plain(), false);
        let shown = text(vec![
            change("relay-root-tls-secret", Action::Update),
            change("relay-server-tls-secret", Action::NoOp),
            change("KubernetesCluster/cluster-1", Action::NoOp),
            change("KubernetesCluster/cluster-2", Action::NoOp),
        ]);
        assert!(
            shown.contains("= 1 Secret and 2 KubernetesClusters unchanged"),
            "{shown}"
        );
        let shown = text(vec![
            change("relay-root-tls-secret", Action::NoOp),
            change("KubernetesCluster/cluster-1", Action::Create),
        ]);
        assert!(shown.contains("= 1 Secret unchanged"), "{shown}");
        assert!(
            shown.contains("+ gloo-mesh/KubernetesCluster/cluster-1  create: missing"),
            "{shown}"
        );
        let shown = text(vec![
            change("relay-root-tls-secret", Action::Create),
            change("KubernetesCluster/cluster-1", Action::NoOp),
        ]);
        assert!(shown.contains("= 1 KubernetesCluster unchanged"), "{shown}");
    }
}
