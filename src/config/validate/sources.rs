//! Material sources: where a certificate, key or token is read from.
//!
//! A source is exactly one of `file` (relative to the manifest that names
//! it, and confined to the config folder by its text: the shell resolves
//! symlinks when it reads, see `crate::files`), `env` (a variable name) or
//! `secret` (a key of a Secret on one of this config's clusters). Nothing is
//! read here; [`SourceReader`] only checks the reference.

use std::collections::BTreeSet;
use std::path::Path;

use super::key;
use crate::config::diag::{Code, Reporter, field_path};
use crate::config::node::Step;
use crate::config::raw::{RawSecretRef, RawSource};
use crate::model::{DEFAULT_NAMESPACE, DnsLabel, MaterialSource, SecretRef, SourceKind};

/// Checks material sources against what the config knows: its clusters,
/// its namespace and its folder.
pub(super) struct SourceReader<'a> {
    known_clusters: &'a BTreeSet<String>,
    /// The namespace of `secret` sources that name none.
    namespace: DnsLabel,
    /// `file` sources may not leave this folder.
    root: &'a Path,
}

impl<'a> SourceReader<'a> {
    /// `namespace` is `spec.namespace`, or `None` when it was invalid (then
    /// the product's default stands in, so that sources are still checked).
    pub(super) fn new(
        known_clusters: &'a BTreeSet<String>,
        namespace: Option<DnsLabel>,
        root: &'a Path,
    ) -> Self {
        let namespace = namespace.unwrap_or_else(|| {
            DnsLabel::parse(DEFAULT_NAMESPACE).expect("default namespace is a label")
        });
        Self {
            known_clusters,
            namespace,
            root,
        }
    }

    /// The source at `steps`, or `None` (reported) when it is malformed.
    pub(super) fn read(
        &self,
        r: &mut Reporter<'_>,
        steps: &[Step],
        raw: &RawSource,
    ) -> Option<MaterialSource> {
        let given = [raw.file.is_some(), raw.env.is_some(), raw.secret.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if given != 1 {
            r.at_key(steps, Code::InvalidSource, format!("a material source needs exactly one of `file`, `env`, `secret`; {given} given"), Some("e.g. `{ file: certs/root.pem }`, `{ env: RELAY_ROOT_KEY }` or `{ secret: { cluster: mgmt, name: my-ca, key: tls.key } }`".to_owned()));
            return None;
        }
        let kind = if let Some(file) = &raw.file {
            self.file(r, steps, file)?
        } else if let Some(var) = &raw.env {
            env(r, steps, var)?
        } else {
            self.secret(r, steps, raw.secret.as_ref()?)?
        };
        Some(MaterialSource {
            kind,
            field: field_path(steps),
            location: r.location(steps),
        })
    }

    /// `{ file: ... }`: relative to the manifest, and inside the config folder.
    fn file(&self, r: &mut Reporter<'_>, steps: &[Step], file: &str) -> Option<SourceKind> {
        let at = [steps, &[key("file")]].concat();
        if file.is_empty() {
            r.at_value(
                &at,
                Code::InvalidSource,
                "`file` is empty".to_owned(),
                Some("name a file relative to this manifest".to_owned()),
            );
            return None;
        }
        let base = r.file.parent().unwrap_or(Path::new(""));
        if !crate::config::paths::confine(self.root, base, Path::new(file)) {
            r.at_value(
                &at,
                Code::PathOutsideConfig,
                format!("`{file}` is outside the config folder"),
                Some(outside_hint(
                    "material files",
                    "keep other material in an `env` or `secret` source",
                )),
            );
            return None;
        }
        Some(SourceKind::File(base.join(file)))
    }

    /// `{ secret: ... }`: a key of a Secret on one of the config's clusters,
    /// in the relay namespace unless it names another.
    fn secret(
        &self,
        r: &mut Reporter<'_>,
        steps: &[Step],
        secret: &RawSecretRef,
    ) -> Option<SourceKind> {
        let at = |f: &str| [steps, &[key("secret"), key(f)]].concat();
        let mut ok = true;
        let mut required = |r: &mut Reporter<'_>, value: &Option<String>, f: &str| -> String {
            match value {
                Some(v) if !v.is_empty() => v.clone(),
                _ => {
                    r.at_key(
                        &[steps, &[key("secret")]].concat(),
                        Code::InvalidSource,
                        format!("`secret.{f}` is required"),
                        Some("a secret source needs `cluster`, `name` and `key` (`namespace` defaults to `spec.namespace`)".to_owned()),
                    );
                    ok = false;
                    String::new()
                }
            }
        };
        let cluster = required(r, &secret.cluster, "cluster");
        let name = required(r, &secret.name, "name");
        let data_key = required(r, &secret.key, "key");
        if !ok {
            return None;
        }
        if !self.known_clusters.contains(&cluster) {
            let known = self
                .known_clusters
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ");
            r.at_value(
                &at("cluster"),
                Code::InvalidSource,
                format!("cluster `{cluster}` is not part of this config"),
                Some(format!("name one of the config's clusters: {known}")),
            );
            return None;
        }
        let namespace = match &secret.namespace {
            None => self.namespace.clone(),
            Some(ns) => match DnsLabel::parse(ns) {
                Ok(ns) => ns,
                Err(why) => {
                    r.at_value(
                        &at("namespace"),
                        Code::InvalidNamespace,
                        format!("namespace `{ns}` {why}"),
                        Some("namespaces are DNS-1123 labels".to_owned()),
                    );
                    return None;
                }
            },
        };
        Some(SourceKind::Secret(SecretRef {
            cluster: DnsLabel::parse(&cluster).ok()?,
            namespace,
            name,
            key: data_key,
        }))
    }
}

/// `{ env: ... }`: a variable name (letters, digits, `_`; no leading digit).
fn env(r: &mut Reporter<'_>, steps: &[Step], var: &str) -> Option<SourceKind> {
    let valid = !var.is_empty()
        && !var.starts_with(|c: char| c.is_ascii_digit())
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        r.at_value(
            &[steps, &[key("env")]].concat(),
            Code::InvalidSource,
            format!("`{var}` is not an environment variable name"),
            Some("use letters, digits and `_`, not starting with a digit".to_owned()),
        );
        return None;
    }
    Some(SourceKind::Env(var.to_owned()))
}

/// The hint for a path that leaves the config folder.
fn outside_hint(what: &str, instead: &str) -> String {
    format!(
        "{what} are read only inside the config folder or the Git checkout (absolute paths and `..` that leave it are refused); {instead}"
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::fixture::TrustSpec;
    use super::*;

    /// `custom` mode, which reads the root certificate from `source`.
    fn root_from(source: &str) -> TrustSpec {
        TrustSpec::test()
            .with_mode("custom")
            .with("ca.root.privateKey", "{ env: ROOT_KEY }")
            .with("ca.root.cert", source)
    }

    #[test]
    fn file_sources_may_not_leave_the_config_folder() {
        for file in [
            "/etc/hostname",
            "../outside.pem",
            "material/../../outside.pem",
            "../../../../var/run/secrets/kubernetes.io/serviceaccount/token",
        ] {
            let spec = root_from(&format!("{{ file: '{file}' }}"));
            let d = spec.reports(Code::PathOutsideConfig, "spec.ca.root.cert.file");
            assert_eq!(d.message, format!("`{file}` is outside the config folder"));
            assert_eq!(spec.codes(), [Code::PathOutsideConfig], "{file}");
        }
    }

    #[test]
    fn file_sources_are_relative_to_their_manifest_and_may_climb_inside_the_folder() {
        let config = root_from("{ file: material/root.crt }").valid();
        let source = config.ca.root.cert.expect("a root source");
        assert_eq!(
            source.kind,
            SourceKind::File(PathBuf::from("config/material/root.crt"))
        );
        assert_eq!(source.field, "spec.ca.root.cert");
        assert_eq!(source.location.file, PathBuf::from("config/relay.yaml"));
        // From `config/clusters/`, `..` stays inside `config/`.
        TrustSpec::external()
            .with_workload("cluster-1")
            .with_workload_field(
                "spec.clientCert.cert",
                "{ file: ../material/cluster-1.crt }",
            )
            .with_workload_field(
                "spec.clientCert.privateKey",
                "{ file: ../material/cluster-1.key }",
            )
            .valid();
    }

    #[test]
    fn a_source_is_exactly_one_of_file_env_secret() {
        for source in ["{}", "{ file: root.crt, env: ROOT_CERT }"] {
            let spec = root_from(source);
            spec.reports(Code::InvalidSource, "spec.ca.root.cert");
        }
        let spec = root_from("{ file: '' }");
        spec.reports(Code::InvalidSource, "spec.ca.root.cert.file");
        for var in ["1ROOT", "ROOT-CERT", "''"] {
            let spec = root_from(&format!("{{ env: {var} }}"));
            spec.reports(Code::InvalidSource, "spec.ca.root.cert.env");
        }
        let config = root_from("{ env: _ROOT_CERT1 }").valid();
        assert_eq!(
            config.ca.root.cert.map(|s| s.kind),
            Some(SourceKind::Env("_ROOT_CERT1".to_owned()))
        );
    }

    #[test]
    fn secret_sources_name_a_cluster_of_the_config() {
        let spec = root_from("{ secret: { cluster: elsewhere, name: ca, key: tls.crt } }");
        let d = spec.reports(Code::InvalidSource, "spec.ca.root.cert.secret.cluster");
        assert_eq!(
            d.hint.as_deref(),
            Some("name one of the config's clusters: `mgmt`")
        );
        let spec = root_from("{ secret: { cluster: mgmt, name: ca } }");
        let d = spec.reports(Code::InvalidSource, "spec.ca.root.cert.secret");
        assert_eq!(d.message, "`secret.key` is required");
        let spec =
            root_from("{ secret: { cluster: mgmt, name: ca, key: tls.crt, namespace: Bad } }");
        spec.reports(Code::InvalidNamespace, "spec.ca.root.cert.secret.namespace");
    }

    #[test]
    fn secret_sources_default_to_the_relay_namespace() {
        let config = root_from("{ secret: { cluster: mgmt, name: ca, key: tls.crt } }")
            .with("namespace", "relay")
            .valid();
        let Some(SourceKind::Secret(secret)) = config.ca.root.cert.map(|s| s.kind) else {
            panic!("a secret source");
        };
        assert_eq!(secret.cluster.as_str(), "mgmt");
        assert_eq!(secret.namespace.as_str(), "relay");
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("ca", "tls.crt")
        );
    }
}
