//! Renders kubeconfig files with every credential embedded as data, so a
//! file stays valid wherever it is copied.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::pki::CertAndKey;

/// One context of a kubeconfig: a cluster and the user that talks to it.
pub(crate) struct Entry<'a> {
    /// Context and cluster name (`mgmt`, `cluster-1`, …).
    pub(crate) context: &'a str,
    /// User entry name, unique within the file.
    pub(crate) user: String,
    /// `https://127.0.0.1:PORT`.
    pub(crate) server: &'a str,
    /// The CA that signed the server certificate, PEM.
    pub(crate) ca_pem: &'a str,
    /// The client certificate and key.
    pub(crate) client: &'a CertAndKey,
}

/// A kubeconfig holding `entries`, with the first one as current context.
pub(crate) fn render(entries: &[Entry<'_>]) -> String {
    let b64 = |s: &str| STANDARD.encode(s.as_bytes());
    let mut out = String::from("apiVersion: v1\nkind: Config\npreferences: {}\n");
    if let Some(first) = entries.first() {
        let _ = writeln!(out, "current-context: {}", first.context);
    }
    out.push_str("clusters:\n");
    for e in entries {
        let _ = write!(
            out,
            "- name: {}\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n",
            e.context,
            e.server,
            b64(e.ca_pem)
        );
    }
    out.push_str("users:\n");
    for e in entries {
        let _ = write!(
            out,
            "- name: {}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            quoted(&e.user),
            b64(&e.client.cert_pem),
            b64(&e.client.key_pem)
        );
    }
    out.push_str("contexts:\n");
    for e in entries {
        let _ = write!(
            out,
            "- name: {}\n  context:\n    cluster: {}\n    user: {}\n",
            e.context,
            e.context,
            quoted(&e.user)
        );
    }
    out
}

/// A YAML double-quoted scalar; user names come from callers.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn user_names_are_quoted_yaml_scalars() {
        assert_eq!(quoted("system:admin"), r#""system:admin""#);
        assert_eq!(quoted(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(quoted("tab\there"), r#""tab\u0009here""#);
    }
}
