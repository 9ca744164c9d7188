//! Raw manifests to a validated [`TrustConfig`], collecting every problem.
//!
//! Nothing here stops at the first error: each document is parsed into a
//! located tree, checked for unknown fields and types, then every rule of
//! DESIGN.md §2 runs and pushes its diagnostics. Only when none were found is a
//! model returned. Checks that need certificate parsing live in
//! `config::material`, which the shell runs after this succeeds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::diag::{Code, Diagnostic, Reporter, field_path};
use super::node::{Node, Position, Step, Value, parse_documents};
use super::raw::{
    API_VERSION, RawCaCert, RawConnection, RawManagementCluster, RawMetadata, RawRelayTrust,
    RawSource, RawWorkloadCluster,
};
use crate::model::{
    CaCertConfig, CaConfig, CaMode, ClientCertConfig, ClientCertMode, ClusterConfig, ClusterName,
    Connection, DEFAULT_AUTHORITY, DEFAULT_NAMESPACE, DnsLabel, Duration, KeyAlgorithm,
    MaterialSource, SecretRef, ServerConfig, SourceKind, TokenConfig, TrustConfig, WorkloadConfig,
    check_dns_name,
};

/// One manifest file's name (as it should appear in messages) and text.
#[derive(Debug, Clone)]
pub struct ManifestFile {
    /// Path shown in diagnostics and used to resolve relative `file:` sources.
    pub path: PathBuf,
    /// The YAML text.
    pub text: String,
}

/// Validates a set of manifest files as one configuration. `root` is the
/// folder they were read from (the config folder, or the Git checkout):
/// paths in the manifests may not leave it.
pub fn validate(files: &[ManifestFile], root: &Path) -> Result<TrustConfig, Vec<Diagnostic>> {
    let mut v = Validator {
        root: root.to_path_buf(),
        ..Validator::default()
    };
    if files.is_empty() {
        v.diagnostics.push(Diagnostic {
            file: PathBuf::from("."),
            position: None,
            field: String::new(),
            code: Code::NoManifests,
            message: "no `*.yaml` or `*.yml` manifest found".to_owned(),
            hint: Some("point relayctl at a manifest file or a folder of them, e.g. `examples/clusters/managed`".to_owned()),
        });
        return Err(v.diagnostics);
    }
    for file in files {
        v.read_file(file);
    }
    let config = v.build();
    let mut diagnostics = v.diagnostics;
    if diagnostics.is_empty() {
        config.ok_or_else(Vec::new)
    } else {
        diagnostics.sort();
        diagnostics.dedup();
        Err(diagnostics)
    }
}

/// A document of a known kind, typed, with its file and located tree.
struct Doc<T> {
    file: PathBuf,
    node: Node,
    raw: T,
}

#[derive(Default)]
struct Validator {
    /// Paths in manifests must stay inside this folder.
    root: PathBuf,
    diagnostics: Vec<Diagnostic>,
    trusts: Vec<Doc<RawRelayTrust>>,
    managements: Vec<Doc<RawManagementCluster>>,
    workloads: Vec<Doc<RawWorkloadCluster>>,
}

fn key(name: &str) -> Step {
    Step::Key(name.to_owned())
}

fn path(keys: &[&str]) -> Vec<Step> {
    keys.iter().map(|k| key(k)).collect()
}

impl Validator {
    fn read_file(&mut self, file: &ManifestFile) {
        let documents = match parse_documents(&file.text) {
            Ok(documents) => documents,
            Err(err) => {
                self.diagnostics.push(Diagnostic {
                    file: file.path.clone(),
                    position: err.position,
                    field: String::new(),
                    code: Code::YamlSyntax,
                    message: format!("invalid YAML: {}", err.message),
                    hint: Some("fix the YAML syntax; `---` separates documents".to_owned()),
                });
                return;
            }
        };
        for node in documents {
            self.read_document(&file.path, node);
        }
    }

    fn read_document(&mut self, file: &Path, node: Node) {
        let mut r = Reporter::new(file, &node, &mut self.diagnostics);
        if !matches!(node.value, Value::Map(_)) {
            r.at_value(&[], Code::NotAMapping, "a manifest document must be a mapping with `apiVersion`, `kind`, `metadata` and `spec`".to_owned(), Some("see `examples/clusters/managed` for the shape of each kind".to_owned()));
            return;
        }
        let kind = match node.get(&[key("kind")]).map(|n| &n.value) {
            Some(Value::String(kind)) => kind.clone(),
            Some(_) => {
                r.at_value(
                    &[key("kind")],
                    Code::InvalidKind,
                    "`kind` must be a string".to_owned(),
                    Some(KIND_HINT.to_owned()),
                );
                return;
            }
            None => {
                r.at_value(
                    &[],
                    Code::MissingField,
                    "document has no `kind`".to_owned(),
                    Some(KIND_HINT.to_owned()),
                );
                return;
            }
        };
        match node.get(&[key("apiVersion")]).map(|n| &n.value) {
            Some(Value::String(v)) if v == API_VERSION => {}
            Some(other) => {
                let shown = match other {
                    Value::String(s) => format!("`{s}`"),
                    _ => "not a string".to_owned(),
                };
                r.at_value(
                    &[key("apiVersion")],
                    Code::ApiVersion,
                    format!("unsupported apiVersion {shown}"),
                    Some(format!("use `apiVersion: {API_VERSION}`")),
                );
            }
            None => r.at_value(
                &[],
                Code::MissingField,
                "document has no `apiVersion`".to_owned(),
                Some(format!("add `apiVersion: {API_VERSION}`")),
            ),
        }
        match kind.as_str() {
            "RelayTrust" => {
                if let Some(raw) = typed::<RawRelayTrust>(&mut r) {
                    self.trusts.push(Doc {
                        file: file.to_path_buf(),
                        node,
                        raw,
                    });
                }
            }
            "ManagementCluster" => {
                if let Some(raw) = typed::<RawManagementCluster>(&mut r) {
                    self.managements.push(Doc {
                        file: file.to_path_buf(),
                        node,
                        raw,
                    });
                }
            }
            "WorkloadCluster" => {
                if let Some(raw) = typed::<RawWorkloadCluster>(&mut r) {
                    self.workloads.push(Doc {
                        file: file.to_path_buf(),
                        node,
                        raw,
                    });
                }
            }
            other => r.at_value(
                &[key("kind")],
                Code::UnknownKind,
                format!("unknown kind `{other}`"),
                Some(KIND_HINT.to_owned()),
            ),
        }
    }

    fn build(&mut self) -> Option<TrustConfig> {
        let trusts = std::mem::take(&mut self.trusts);
        let managements = std::mem::take(&mut self.managements);
        let workloads = std::mem::take(&mut self.workloads);
        let config_root = self.root.clone();
        let out = &mut self.diagnostics;

        let first_file = || {
            trusts
                .first()
                .map(|d| d.file.clone())
                .or_else(|| managements.first().map(|d| d.file.clone()))
                .or_else(|| workloads.first().map(|d| d.file.clone()))
                .unwrap_or_default()
        };
        for (kind, count, extra) in [
            (
                "RelayTrust",
                trusts.len(),
                trusts
                    .iter()
                    .skip(1)
                    .map(|d| (&d.file, &d.node))
                    .collect::<Vec<_>>(),
            ),
            (
                "ManagementCluster",
                managements.len(),
                managements
                    .iter()
                    .skip(1)
                    .map(|d| (&d.file, &d.node))
                    .collect(),
            ),
        ] {
            if count == 0
                && out.iter().all(|d| {
                    !matches!(
                        d.code,
                        Code::YamlSyntax | Code::InvalidType | Code::UnknownField
                    )
                })
            {
                out.push(Diagnostic {
                    file: first_file(),
                    position: None,
                    field: String::new(),
                    code: Code::MissingKind,
                    message: format!("no `{kind}` document found; exactly one is required"),
                    hint: Some(format!(
                        "add a `kind: {kind}` document (see `examples/clusters/managed`)"
                    )),
                });
            }
            for (file, node) in extra {
                out.push(Diagnostic {
                    file: file.clone(),
                    position: Some(node.locate(&[key("kind")])),
                    field: "kind".to_owned(),
                    code: Code::DuplicateKind,
                    message: format!("a second `{kind}` document; exactly one is allowed"),
                    hint: Some(format!(
                        "keep one `{kind}`; one config describes one relay trust"
                    )),
                });
            }
        }

        // Cluster names first: sources refer to them.
        let mut names: BTreeMap<String, (PathBuf, Position)> = BTreeMap::new();
        let mut cluster_of = |doc_file: &Path,
                              node: &Node,
                              metadata: &Option<RawMetadata>,
                              out: &mut Vec<Diagnostic>|
         -> Option<ClusterName> {
            let mut r = Reporter::new(doc_file, node, out);
            let name = metadata_name(&mut r, metadata, "cluster")?;
            let steps = path(&["metadata", "name"]);
            match DnsLabel::parse(&name) {
                Ok(label) => {
                    if let Some((first_file, first_pos)) = names.get(&name) {
                        r.at_value(&steps, Code::DuplicateCluster, format!("cluster name `{name}` is used twice (first at {}:{}:{})", first_file.display(), first_pos.line, first_pos.column), Some("cluster names must be unique across the management and workload clusters".to_owned()));
                        None
                    } else {
                        names.insert(name, (doc_file.to_path_buf(), node.locate_value(&steps)));
                        Some(label)
                    }
                }
                Err(why) => {
                    r.at_value(&steps, Code::InvalidName, format!("cluster name `{name}` {why}"), Some("cluster names are DNS-1123 labels (e.g. `cluster-1`): they become the agent's certificate SAN and the `KubernetesCluster` name".to_owned()));
                    None
                }
            }
        };
        let management_name = managements
            .first()
            .and_then(|d| cluster_of(&d.file, &d.node, &d.raw.metadata, out));
        let workload_names: Vec<Option<ClusterName>> = workloads
            .iter()
            .map(|d| cluster_of(&d.file, &d.node, &d.raw.metadata, out))
            .collect();
        let known_clusters: BTreeSet<String> = names.keys().cloned().collect();

        let trust = trusts.first()?;
        let mut r = Reporter::new(&trust.file, &trust.node, out);
        let spec = &trust.raw.spec;
        let instance = metadata_name(&mut r, &trust.raw.metadata, "instance").and_then(|name| {
            DnsLabel::parse(&name).map_err(|why| {
                r.at_value(&path(&["metadata", "name"]), Code::InvalidName, format!("instance name `{name}` {why}"), Some("the instance name goes into the `relayctl.dev/instance` label: use a DNS-1123 label".to_owned()));
            }).ok()
        });
        let namespace = match &spec.namespace {
            None => DnsLabel::parse(DEFAULT_NAMESPACE).ok(),
            Some(ns) => DnsLabel::parse(ns)
                .map_err(|why| {
                    r.at_value(
                        &path(&["spec", "namespace"]),
                        Code::InvalidNamespace,
                        format!("namespace `{ns}` {why}"),
                        Some(
                            "namespaces are DNS-1123 labels; the product's default is `gloo-mesh`"
                                .to_owned(),
                        ),
                    );
                })
                .ok(),
        };
        let ns_for_sources = namespace.clone().unwrap_or_else(|| {
            DnsLabel::parse(DEFAULT_NAMESPACE).expect("default namespace is a label")
        });
        let mut sources = SourceReader {
            known_clusters: &known_clusters,
            namespace: &ns_for_sources,
            root: &config_root,
        };

        let mode: CaMode = parse_enum(
            &mut r,
            &path(&["spec", "ca", "mode"]),
            spec.ca.mode.as_ref().map(|s| s.as_str()),
            &[
                ("managed", CaMode::Managed),
                ("gloo", CaMode::Gloo),
                ("custom", CaMode::Custom),
                ("external", CaMode::External),
            ],
        )
        .unwrap_or_default();

        let root = ca_cert(
            &mut r,
            &mut sources,
            "root",
            &spec.ca.root,
            "relay-root-ca",
            Duration::from_hours(87_600),
        );
        let intermediate = ca_cert(
            &mut r,
            &mut sources,
            "intermediate",
            &spec.ca.intermediate,
            "relay-intermediate-ca",
            Duration::from_hours(43_800),
        );

        let token_enabled_default = mode != CaMode::External;
        let token =
            TokenConfig {
                enabled: spec.identity_token.enabled.unwrap_or(token_enabled_default),
                value: spec.identity_token.value.as_ref().and_then(|s| {
                    sources.read(&mut r, &path(&["spec", "identityToken", "value"]), s)
                }),
            };

        let client_mode_default = if mode == CaMode::External {
            ClientCertMode::External
        } else {
            ClientCertMode::Token
        };
        let client_mode = parse_enum(
            &mut r,
            &path(&["spec", "clientCerts", "mode"]),
            spec.client_certs.mode.as_ref().map(|s| s.as_str()),
            &[
                ("token", ClientCertMode::Token),
                ("preprovisioned", ClientCertMode::Preprovisioned),
                ("external", ClientCertMode::External),
            ],
        )
        .unwrap_or(client_mode_default);
        let client_validity = duration(
            &mut r,
            &path(&["spec", "clientCerts", "validity"]),
            spec.client_certs.validity.as_ref().map(|s| s.as_str()),
        )
        .unwrap_or(Duration::from_hours(8760));
        let client_renew = duration(
            &mut r,
            &path(&["spec", "clientCerts", "renewBefore"]),
            spec.client_certs.renew_before.as_ref().map(|s| s.as_str()),
        );
        let client_key = key_algorithm(
            &mut r,
            &path(&["spec", "clientCerts", "key"]),
            spec.client_certs.key.as_ref().map(|s| s.as_str()),
        );

        let server_validity = duration(
            &mut r,
            &path(&["spec", "server", "validity"]),
            spec.server.validity.as_ref().map(|s| s.as_str()),
        )
        .unwrap_or(Duration::from_hours(8760));
        let server_renew = duration(
            &mut r,
            &path(&["spec", "server", "renewBefore"]),
            spec.server.renew_before.as_ref().map(|s| s.as_str()),
        );
        let server_key = key_algorithm(
            &mut r,
            &path(&["spec", "server", "key"]),
            spec.server.key.as_ref().map(|s| s.as_str()),
        );
        let authority = spec
            .server
            .authority
            .clone()
            .unwrap_or_else(|| DEFAULT_AUTHORITY.to_owned());
        if let Err(why) = check_dns_name(&authority) {
            r.at_value(&path(&["spec", "server", "authority"]), Code::InvalidDnsName, format!("authority `{authority}` {why}"), Some(format!("the authority is the host name agents dial; the product's default is `{DEFAULT_AUTHORITY}`")));
        } else if authority.starts_with("*.") {
            r.at_value(
                &path(&["spec", "server", "authority"]),
                Code::InvalidDnsName,
                format!("authority `{authority}` is a wildcard"),
                Some(
                    "the authority is one concrete host name; put wildcards in `dnsNames`"
                        .to_owned(),
                ),
            );
        }
        let mut dns_names = vec![authority.clone()];
        for (index, name) in spec.server.dns_names.iter().enumerate() {
            let steps = [
                key("spec"),
                key("server"),
                key("dnsNames"),
                Step::Index(index),
            ];
            match check_dns_name(name) {
                Ok(()) => {
                    if !dns_names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                        dns_names.push(name.to_ascii_lowercase());
                    }
                }
                Err(why) => r.at_value(&steps, Code::InvalidDnsName, format!("DNS name `{name}` {why}"), Some("SANs are DNS names such as `gloo-mesh-mgmt-server.gloo-mesh` or `*.gloo-mesh`".to_owned())),
            }
        }
        let server_cert = spec
            .server
            .cert
            .as_ref()
            .and_then(|s| sources.read(&mut r, &path(&["spec", "server", "cert"]), s));
        let server_private_key = spec
            .server
            .private_key
            .as_ref()
            .and_then(|s| sources.read(&mut r, &path(&["spec", "server", "privateKey"]), s));

        // Mode rules (DESIGN.md §1, §2).
        if mode == CaMode::External {
            if spec.identity_token.enabled == Some(true) {
                r.at_value(&path(&["spec", "identityToken", "enabled"]), Code::ExternalWithTokens, "identity tokens cannot be used in `external` CA mode".to_owned(), Some("when you bring and rotate both server and client certificates, agents must be given client certificates directly: set `identityToken.enabled: false` or remove it".to_owned()));
            }
            if spec.client_certs.mode.is_some() && client_mode != ClientCertMode::External {
                r.at_value(&path(&["spec", "clientCerts", "mode"]), Code::ExternalClientMode, format!("`clientCerts.mode: {client_mode}` is not possible in `external` CA mode"), Some("relayctl holds no CA key in `external` mode: use `clientCerts.mode: external` (or remove the field)".to_owned()));
            }
        } else if client_mode == ClientCertMode::External {
            r.at_value(&path(&["spec", "clientCerts", "mode"]), Code::ExternalClientMode, format!("`clientCerts.mode: external` needs `ca.mode: external`, not `{mode}`"), Some("with a CA relayctl can use, let it issue client certs (`preprovisioned`) or let agents bootstrap (`token`)".to_owned()));
        }
        if client_mode == ClientCertMode::Token && !token.enabled {
            r.at_value(&path(&["spec", "identityToken", "enabled"]), Code::TokenModeWithoutTokens, "`clientCerts.mode: token` needs the identity token, but `identityToken.enabled` is false".to_owned(), Some("enable the token, or use `clientCerts.mode: preprovisioned`".to_owned()));
        }
        let ca = CaConfig {
            mode,
            root,
            intermediate,
        };
        if client_mode == ClientCertMode::Preprovisioned && !ca.can_sign() {
            r.at_value(&path(&["spec", "clientCerts", "mode"]), Code::PreprovisionedWithoutSigningKey, format!("`clientCerts.mode: preprovisioned` needs a signing key, and `{mode}` CA mode gives relayctl none"), Some(match mode {
                CaMode::Custom => "give `ca.root.privateKey` (the intermediate is derived) or `ca.intermediate.cert` and `ca.intermediate.privateKey`".to_owned(),
                _ => "use `managed`, `gloo` or `custom` CA mode with a key, or `clientCerts.mode: external`".to_owned(),
            }));
        }
        material_rules(&mut r, &ca, &server_cert, &server_private_key, &token);

        // Validity order: leaf <= intermediate <= root (only for what relayctl issues).
        let issues_cas = matches!(mode, CaMode::Managed)
            || (mode == CaMode::Custom && ca.intermediate.cert.is_none());
        if mode == CaMode::Managed && ca.intermediate.validity > ca.root.validity {
            r.at_value(&path(&["spec", "ca", "intermediate", "validity"]), Code::ValidityOrder, format!("intermediate validity `{}` is longer than root validity `{}`", ca.intermediate.validity, ca.root.validity), Some("a certificate never outlives its issuer: shorten the intermediate or lengthen the root".to_owned()));
        }
        if issues_cas || mode == CaMode::Custom {
            for (field, validity) in [
                ("server", server_validity),
                ("clientCerts", client_validity),
            ] {
                if (field == "server" || client_mode == ClientCertMode::Preprovisioned)
                    && validity > ca.intermediate.validity
                    && issues_cas
                {
                    r.at_value(&path(&["spec", field, "validity"]), Code::ValidityOrder, format!("{field} validity `{validity}` is longer than intermediate validity `{}`", ca.intermediate.validity), Some("a leaf never outlives its issuer: shorten the leaf or lengthen the intermediate".to_owned()));
                }
            }
        }
        let server_renew = check_renew(&mut r, "server", server_validity, server_renew);
        let client_renew = check_renew(&mut r, "clientCerts", client_validity, client_renew);

        let prune = spec.prune.unwrap_or(false);
        let trust_location = r.location(&[]);

        // Clusters.
        let management = managements.first().and_then(|doc| {
            let mut r = Reporter::new(&doc.file, &doc.node, out);
            let connection = connection(&mut r, doc.raw.spec.connection.as_ref());
            Some(ClusterConfig {
                name: management_name.clone()?,
                connection: connection?,
                location: r.location(&[]),
            })
        });
        let mut workload_configs = Vec::new();
        for (doc, name) in workloads.iter().zip(workload_names) {
            let mut r = Reporter::new(&doc.file, &doc.node, out);
            let connection = connection(&mut r, doc.raw.spec.connection.as_ref());
            let mut sources = SourceReader {
                known_clusters: &known_clusters,
                namespace: &ns_for_sources,
                root: &config_root,
            };
            let (mut client_cert, mut client_key) = (None, None);
            if let Some(source) = &doc.raw.spec.client_cert {
                if client_mode != ClientCertMode::External {
                    r.at_key(&path(&["spec", "clientCert"]), Code::UnusedMaterial, format!("`spec.clientCert` is only used with `clientCerts.mode: external`, and the mode is `{client_mode}`"), Some("remove it: relayctl or the agent issues this cluster's certificate".to_owned()));
                }
                match &source.cert {
                    Some(s) => client_cert = sources.read(&mut r, &path(&["spec", "clientCert", "cert"]), s),
                    None => r.at_key(&path(&["spec", "clientCert"]), Code::MissingMaterial, "`spec.clientCert` has no `cert`".to_owned(), Some("give `cert` and `privateKey` sources, or remove `clientCert` to only verify the existing secret".to_owned())),
                }
                match &source.private_key {
                    Some(s) => {
                        client_key =
                            sources.read(&mut r, &path(&["spec", "clientCert", "privateKey"]), s)
                    }
                    None => r.at_key(
                        &path(&["spec", "clientCert"]),
                        Code::MissingMaterial,
                        "`spec.clientCert` has no `privateKey`".to_owned(),
                        Some(
                            "a client certificate is useless to the agent without its key"
                                .to_owned(),
                        ),
                    ),
                }
            }
            if let (Some(name), Some(connection)) = (name, connection) {
                workload_configs.push(WorkloadConfig {
                    cluster: ClusterConfig {
                        name,
                        connection,
                        location: r.location(&[]),
                    },
                    client_cert,
                    client_key,
                });
            }
        }
        workload_configs.sort_by(|a, b| a.cluster.name.cmp(&b.cluster.name));

        Some(TrustConfig {
            instance: instance?,
            location: trust_location,
            namespace: namespace?,
            ca,
            identity_token: token,
            server: ServerConfig {
                authority,
                dns_names,
                validity: server_validity,
                renew_before: server_renew,
                key: server_key,
                cert: server_cert,
                private_key: server_private_key,
            },
            client_certs: ClientCertConfig {
                mode: client_mode,
                validity: client_validity,
                renew_before: client_renew,
                key: client_key,
            },
            prune,
            management: management?,
            workloads: workload_configs,
        })
    }
}

const KIND_HINT: &str = "use one of `RelayTrust`, `ManagementCluster`, `WorkloadCluster`";

/// Deserializes a document into its raw type, reporting every unknown field
/// and the first type error with their positions.
fn typed<T: DeserializeOwned>(r: &mut Reporter<'_>) -> Option<T> {
    let mut json = r.node.to_json();
    let mut unknown: Vec<Vec<Step>> = Vec::new();
    let mut type_errors = 0;
    // serde stops at the first type error; to report every one, the field at
    // fault is removed and the document read again. The document is dropped
    // if any was found, so no later rule runs on a half-read document.
    for pass in 0..MAX_TYPE_ERRORS {
        let result = {
            let mut on_ignored = |p: serde_ignored::Path<'_>| {
                if pass == 0 {
                    unknown.push(ignored_steps(&p));
                }
            };
            let ignored = serde_ignored::Deserializer::new(&json, &mut on_ignored);
            serde_path_to_error::deserialize::<_, T>(ignored)
        };
        match result {
            Ok(value) => {
                report_unknown(r, &unknown);
                return (type_errors == 0).then_some(value);
            }
            Err(err) => {
                let steps: Vec<Step> = err
                    .path()
                    .iter()
                    .filter_map(|segment| match segment {
                        serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
                        serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
                        _ => None,
                    })
                    .collect();
                r.at_value(
                    &steps,
                    Code::InvalidType,
                    type_message(&err.inner().to_string(), r.node.get(&steps)),
                    Some(
                        "see the manifest reference for the expected shape of this field"
                            .to_owned(),
                    ),
                );
                type_errors += 1;
                if !remove_field(&mut json, &steps) {
                    break;
                }
            }
        }
    }
    report_unknown(r, &unknown);
    None
}

/// Type errors reported per document at most.
const MAX_TYPE_ERRORS: usize = 32;

/// Removes the mapping entry at `steps` (for a list element, the whole list,
/// so later indices keep their positions). False when there is nothing to remove.
fn remove_field(json: &mut serde_json::Value, steps: &[Step]) -> bool {
    let key_end = steps
        .iter()
        .rposition(|s| matches!(s, Step::Key(_)))
        .map_or(0, |i| i + 1);
    let Some((Step::Key(last), parent)) = steps[..key_end].split_last() else {
        return false;
    };
    let mut node = json;
    for step in parent {
        node = match (node, step) {
            (serde_json::Value::Object(map), Step::Key(k)) => match map.get_mut(k) {
                Some(child) => child,
                None => return false,
            },
            (serde_json::Value::Array(items), Step::Index(i)) => match items.get_mut(*i) {
                Some(child) => child,
                None => return false,
            },
            _ => return false,
        };
    }
    match node {
        serde_json::Value::Object(map) => map.remove(last).is_some(),
        _ => false,
    }
}

fn report_unknown(r: &mut Reporter<'_>, unknown: &[Vec<Step>]) {
    for steps in unknown {
        let name = match steps.last() {
            Some(Step::Key(k)) => k.clone(),
            _ => "?".to_owned(),
        };
        let parent = field_path(&steps[..steps.len().saturating_sub(1)]);
        r.at_key(steps, Code::UnknownField, format!("unknown field `{name}`{}", if parent.is_empty() { String::new() } else { format!(" in `{parent}`") }), Some("check the spelling against the manifest reference (`relayctl schema` prints the JSON schema)".to_owned()));
    }
}

/// serde's type error without the value it quotes (`invalid type: string
/// "…", expected …`): a key or token pasted inline must not be echoed.
fn type_message(serde_message: &str, found: Option<&Node>) -> String {
    let Some((_, expected)) = serde_message.split_once(", expected ") else {
        return serde_message.to_owned();
    };
    let found = match found.map(|n| &n.value) {
        Some(Value::String(_)) => "a string",
        Some(Value::Int(_) | Value::Float(_)) => "a number",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Null) => "nothing",
        Some(Value::Seq(_)) => "a list",
        Some(Value::Map(_)) => "a mapping",
        None => "something else",
    };
    let expected = expected
        .replace(
            "struct RawSource",
            "a material source (`{ file: ... }`, `{ env: ... }` or `{ secret: ... }`)",
        )
        .replace("struct Raw", "a mapping (")
        .replace("a sequence", "a list");
    let expected = if expected.starts_with("a mapping (") {
        "a mapping".to_owned()
    } else {
        expected
    };
    format!("expected {expected}, found {found}")
}

fn ignored_steps(p: &serde_ignored::Path<'_>) -> Vec<Step> {
    use serde_ignored::Path as P;
    match p {
        P::Root => Vec::new(),
        P::Seq { parent, index } => {
            let mut steps = ignored_steps(parent);
            steps.push(Step::Index(*index));
            steps
        }
        P::Map { parent, key } => {
            let mut steps = ignored_steps(parent);
            steps.push(Step::Key(key.clone()));
            steps
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_steps(parent)
        }
    }
}

fn metadata_name(
    r: &mut Reporter<'_>,
    metadata: &Option<RawMetadata>,
    what: &str,
) -> Option<String> {
    match metadata.as_ref().and_then(|m| m.name.clone()) {
        Some(name) => Some(name),
        None => {
            let steps = if metadata.is_some() {
                path(&["metadata"])
            } else {
                Vec::new()
            };
            r.at_key(
                &steps,
                Code::MissingField,
                format!("`metadata.name` is required (the {what} name)"),
                Some("add `metadata: { name: ... }`".to_owned()),
            );
            None
        }
    }
}

fn parse_enum<T: Copy>(
    r: &mut Reporter<'_>,
    steps: &[Step],
    text: Option<&str>,
    allowed: &[(&str, T)],
) -> Option<T> {
    let text = text?;
    match allowed.iter().find(|(name, _)| *name == text) {
        Some((_, value)) => Some(*value),
        None => {
            let names = allowed
                .iter()
                .map(|(n, _)| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            r.at_value(
                steps,
                Code::InvalidValue,
                format!(
                    "`{text}` is not a valid `{}`",
                    field_path(&steps[steps.len().saturating_sub(1)..])
                ),
                Some(format!("use one of {names}")),
            );
            None
        }
    }
}

fn key_algorithm(r: &mut Reporter<'_>, steps: &[Step], text: Option<&str>) -> KeyAlgorithm {
    let allowed: Vec<(&str, KeyAlgorithm)> =
        KeyAlgorithm::ALL.iter().map(|k| (k.as_str(), *k)).collect();
    parse_enum(r, steps, text, &allowed).unwrap_or_default()
}

/// The longest duration accepted anywhere: 100 years.
const MAX_DURATION: Duration = Duration::from_hours(876_000);

fn duration(r: &mut Reporter<'_>, steps: &[Step], text: Option<&str>) -> Option<Duration> {
    let text = text?;
    match text.parse::<Duration>() {
        Ok(d) if d.as_secs() == 0 => {
            r.at_value(
                steps,
                Code::InvalidDuration,
                format!("`{text}` is zero"),
                Some("a certificate lifetime must be positive, e.g. `8760h`".to_owned()),
            );
            None
        }
        Ok(d) if d > MAX_DURATION => {
            r.at_value(
                steps,
                Code::InvalidDuration,
                format!("`{text}` is longer than 100 years (`{MAX_DURATION}`)"),
                Some("X.509 dates end in 9999, and no CA should live this long: use at most `876000h`".to_owned()),
            );
            None
        }
        Ok(d) => Some(d),
        Err(why) => {
            r.at_value(steps, Code::InvalidDuration, format!("invalid duration: {why}"), Some("write durations the Kubernetes/Go way: `8760h`, `90m`, `1h30m`, `45s` (units h, m, s)".to_owned()));
            None
        }
    }
}

fn check_renew(
    r: &mut Reporter<'_>,
    field: &str,
    validity: Duration,
    renew: Option<Duration>,
) -> Duration {
    match renew {
        Some(renew) if renew >= validity => {
            r.at_value(&path(&["spec", field, "renewBefore"]), Code::RenewBeforeTooLong, format!("`renewBefore` `{renew}` is not shorter than `validity` `{validity}`"), Some(format!("every certificate would be renewed at once, on every run: use less than `{validity}` (the default is a third, `{}`)", validity.third())));
            validity.third()
        }
        Some(renew) => renew,
        None => validity.third(),
    }
}

fn ca_cert(
    r: &mut Reporter<'_>,
    sources: &mut SourceReader<'_>,
    which: &str,
    raw: &RawCaCert,
    default_cn: &str,
    default_validity: Duration,
) -> CaCertConfig {
    let base = ["spec", "ca", which];
    let at = |field: &str| {
        let mut steps = path(&base);
        steps.push(key(field));
        steps
    };
    let common_name = raw
        .common_name
        .clone()
        .unwrap_or_else(|| default_cn.to_owned());
    if common_name.trim().is_empty() || common_name.len() > 64 {
        r.at_value(
            &at("commonName"),
            Code::InvalidValue,
            format!("common name `{common_name}` must be 1 to 64 characters"),
            Some("X.509 limits a common name to 64 characters".to_owned()),
        );
    }
    CaCertConfig {
        common_name,
        validity: duration(
            r,
            &at("validity"),
            raw.validity.as_ref().map(|s| s.as_str()),
        )
        .unwrap_or(default_validity),
        key: key_algorithm(r, &at("key"), raw.key.as_ref().map(|s| s.as_str())),
        cert: raw
            .cert
            .as_ref()
            .and_then(|s| sources.read(r, &at("cert"), s)),
        private_key: raw
            .private_key
            .as_ref()
            .and_then(|s| sources.read(r, &at("privateKey"), s)),
    }
}

/// Which material each CA mode needs and which it ignores.
fn material_rules(
    r: &mut Reporter<'_>,
    ca: &CaConfig,
    server_cert: &Option<MaterialSource>,
    server_key: &Option<MaterialSource>,
    token: &TokenConfig,
) {
    // A field that is written but invalid was already reported by the source
    // reader; saying it is also "required" would only confuse.
    let written = |r: &Reporter<'_>, field: &[&str]| r.node.get(&path(field)).is_some();
    let missing = |r: &mut Reporter<'_>, field: &[&str], why: &str| {
        if written(r, field) {
            return;
        }
        r.at_key(
            &path(&field[..field.len() - 1]),
            Code::MissingMaterial,
            format!(
                "`{}` is required in `{}` CA mode",
                field.join(".").trim_start_matches("spec."),
                ca.mode
            ),
            Some(why.to_owned()),
        );
    };
    let unused = |r: &mut Reporter<'_>, field: &[&str], why: &str| {
        r.at_key(
            &path(field),
            Code::UnusedMaterial,
            format!(
                "`{}` is not used in `{}` CA mode",
                field.join(".").trim_start_matches("spec."),
                ca.mode
            ),
            Some(why.to_owned()),
        );
    };
    match ca.mode {
        CaMode::Managed => {
            for (present, field) in [
                (ca.root.cert.is_some(), "cert"),
                (ca.root.private_key.is_some(), "privateKey"),
            ] {
                if present {
                    unused(
                        r,
                        &["spec", "ca", "root", field],
                        "relayctl generates the root in `managed` mode; to bring your own root use `mode: custom`",
                    );
                }
            }
            for (present, field) in [
                (ca.intermediate.cert.is_some(), "cert"),
                (ca.intermediate.private_key.is_some(), "privateKey"),
            ] {
                if present {
                    unused(
                        r,
                        &["spec", "ca", "intermediate", field],
                        "relayctl generates the intermediate in `managed` mode; use `mode: custom` to bring one",
                    );
                }
            }
        }
        CaMode::Gloo => {
            for (which, c) in [("root", &ca.root), ("intermediate", &ca.intermediate)] {
                for (present, field) in [
                    (c.cert.is_some(), "cert"),
                    (c.private_key.is_some(), "privateKey"),
                ] {
                    if present {
                        unused(
                            r,
                            &["spec", "ca", which, field],
                            "in `gloo` mode the management server's own CA secrets are read from the management cluster",
                        );
                    }
                }
            }
            if token.value.is_some() {
                unused(
                    r,
                    &["spec", "identityToken", "value"],
                    "in `gloo` mode the token is read from the management server's own `relay-identity-token-secret`",
                );
            }
        }
        CaMode::Custom => {
            if ca.root.cert.is_none() {
                missing(
                    r,
                    &["spec", "ca", "root", "cert"],
                    "give the root certificate (PEM) with `{ file: ... }`, `{ env: ... }` or `{ secret: ... }`",
                );
            }
            let int_cert = written(r, &["spec", "ca", "intermediate", "cert"]);
            let int_key = written(r, &["spec", "ca", "intermediate", "privateKey"]);
            let root_key = written(r, &["spec", "ca", "root", "privateKey"]);
            if int_cert != int_key {
                r.at_key(
                    &path(&["spec", "ca", "intermediate"]),
                    Code::MissingMaterial,
                    "`ca.intermediate` needs both `cert` and `privateKey`, or neither".to_owned(),
                    Some(
                        "without them the intermediate is derived from `ca.root.privateKey`"
                            .to_owned(),
                    ),
                );
            }
            if !int_cert && !root_key {
                r.at_key(&path(&["spec", "ca"]), Code::MissingMaterial, "`custom` CA mode needs either `ca.root.privateKey` or `ca.intermediate.cert` with `ca.intermediate.privateKey`".to_owned(), Some("relayctl must be able to sign the server certificate".to_owned()));
            }
        }
        CaMode::External => {
            if ca.root.cert.is_none() {
                missing(
                    r,
                    &["spec", "ca", "root", "cert"],
                    "the root (or bundle) that agents use to verify the server; give it as a source",
                );
            }
            if server_cert.is_none() {
                missing(
                    r,
                    &["spec", "server", "cert"],
                    "in `external` mode your PKI issues the server certificate; give it as a source",
                );
            }
            if server_key.is_none() {
                missing(
                    r,
                    &["spec", "server", "privateKey"],
                    "give the server certificate's key as a source (never commit it in clear)",
                );
            }
            for (which, c) in [("root", &ca.root), ("intermediate", &ca.intermediate)] {
                if c.private_key.is_some() {
                    unused(
                        r,
                        &["spec", "ca", which, "privateKey"],
                        "relayctl holds no CA key in `external` mode; use `custom` mode to let it sign",
                    );
                }
            }
            if ca.intermediate.cert.is_some() {
                unused(
                    r,
                    &["spec", "ca", "intermediate", "cert"],
                    "in `external` mode the intermediate travels inside the server and client `tls.crt` chains",
                );
            }
        }
    }
    if ca.mode != CaMode::External && (server_cert.is_some() || server_key.is_some()) {
        let field = if server_cert.is_some() {
            "cert"
        } else {
            "privateKey"
        };
        unused(
            r,
            &["spec", "server", field],
            "relayctl issues the server certificate unless `ca.mode` is `external`",
        );
    }
}

struct SourceReader<'a> {
    known_clusters: &'a BTreeSet<String>,
    namespace: &'a DnsLabel,
    root: &'a Path,
}

impl SourceReader<'_> {
    fn read(
        &mut self,
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
        let field = field_path(steps);
        let location = r.location(steps);
        let kind = if let Some(file) = &raw.file {
            if file.is_empty() {
                r.at_value(
                    &[steps, &[key("file")]].concat(),
                    Code::InvalidSource,
                    "`file` is empty".to_owned(),
                    Some("name a file relative to this manifest".to_owned()),
                );
                return None;
            }
            let base = r.file.parent().unwrap_or(Path::new(""));
            if !super::paths::confine(self.root, base, Path::new(file)) {
                r.at_value(
                    &[steps, &[key("file")]].concat(),
                    Code::PathOutsideConfig,
                    format!("`{file}` is outside the config folder"),
                    Some(outside_hint(
                        "material files",
                        "keep other material in an `env` or `secret` source",
                    )),
                );
                return None;
            }
            SourceKind::File(base.join(file))
        } else if let Some(var) = &raw.env {
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
            SourceKind::Env(var.clone())
        } else {
            let secret = raw.secret.as_ref()?;
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
            SourceKind::Secret(SecretRef {
                cluster: DnsLabel::parse(&cluster).ok()?,
                namespace,
                name,
                key: data_key,
            })
        };
        Some(MaterialSource {
            kind,
            field,
            location,
        })
    }
}

/// The hint for a path that leaves the config folder.
fn outside_hint(what: &str, instead: &str) -> String {
    format!(
        "{what} are read only inside the config folder or the Git checkout (absolute paths and `..` that leave it are refused); {instead}"
    )
}

fn connection(r: &mut Reporter<'_>, raw: Option<&RawConnection>) -> Option<Connection> {
    let Some(raw) = raw else {
        return Some(Connection::StateDir);
    };
    let steps = path(&["spec", "connection"]);
    let given = [
        raw.kubeconfig.is_some(),
        raw.in_cluster.is_some(),
        raw.directory.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        r.at_key(&steps, Code::InvalidConnection, format!("a connection needs exactly one of `kubeconfig`, `inCluster`, `directory`; {given} given"), Some("e.g. `connection: { kubeconfig: { context: cluster-1 } }`, or remove `connection` to use `--state-dir`".to_owned()));
        return None;
    }
    let base = r.file.parent().unwrap_or(Path::new("")).to_path_buf();
    if let Some(kubeconfig) = &raw.kubeconfig {
        let context = match &kubeconfig.context {
            Some(c) if !c.is_empty() => c.clone(),
            _ => {
                r.at_key(
                    &[steps.as_slice(), &[key("kubeconfig")]].concat(),
                    Code::InvalidConnection,
                    "`kubeconfig.context` is required".to_owned(),
                    Some("name the kubeconfig context of this cluster".to_owned()),
                );
                return None;
            }
        };
        return Some(Connection::Kubeconfig {
            context,
            path: kubeconfig.path.as_ref().map(|p| base.join(p)),
        });
    }
    if let Some(in_cluster) = raw.in_cluster {
        if !in_cluster {
            r.at_value(
                &[steps.as_slice(), &[key("inCluster")]].concat(),
                Code::InvalidConnection,
                "`inCluster: false` is not a connection".to_owned(),
                Some("write `inCluster: true`, or use `kubeconfig`".to_owned()),
            );
            return None;
        }
        return Some(Connection::InCluster);
    }
    let directory = raw.directory.as_ref()?;
    match &directory.path {
        Some(p) if !p.is_empty() => Some(Connection::Directory { path: base.join(p) }),
        _ => {
            r.at_key(
                &[steps.as_slice(), &[key("directory")]].concat(),
                Code::InvalidConnection,
                "`directory.path` is required".to_owned(),
                Some("name the folder that stands in for this cluster".to_owned()),
            );
            None
        }
    }
}
