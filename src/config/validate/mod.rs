//! Raw manifests to a validated [`TrustConfig`], collecting every problem.
//!
//! Nothing here stops at the first error: each document is parsed into a
//! located tree, checked for unknown fields and types (`typed`), then every
//! rule of DESIGN.md §2 runs and pushes its diagnostics. Only when none were
//! found is a model returned. `Validator::build` is the table of contents:
//! cluster names first (sources refer to them), the `RelayTrust` spec field
//! by field (`trust`, its material sources through `sources`), the rules
//! across fields that the CA mode decides (`modes`), then the clusters
//! (`clusters`). Checks that need the material itself (reading files,
//! parsing certificates) live in `crate::material`, which the shell runs
//! after this succeeds.

use std::path::{Path, PathBuf};

use super::diag::{Code, Diagnostic, Reporter};
use super::node::{Node, Step, Value, parse_documents};
use super::raw::{
    API_VERSION, RawManagementCluster, RawMetadata, RawRelayTrust, RawWorkloadCluster,
};
use crate::model::{TrustConfig, WorkloadConfig};

mod clusters;
mod modes;
mod sources;
mod trust;
mod typed;

#[cfg(test)]
mod fixture;

use clusters::ClusterNames;
use sources::SourceReader;

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

impl<T> Doc<T> {
    /// Reports problems of this document into `out`.
    fn reporter<'a>(&'a self, out: &'a mut Vec<Diagnostic>) -> Reporter<'a> {
        Reporter::new(&self.file, &self.node, out)
    }
}

/// The documents read so far, by kind, and every problem found.
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

const KIND_HINT: &str = "use one of `RelayTrust`, `ManagementCluster`, `WorkloadCluster`";

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

    /// Checks the header of one document and keeps it, typed, by its kind.
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
        let file = file.to_path_buf();
        match kind.as_str() {
            "RelayTrust" => {
                if let Some(raw) = typed::typed(&mut r) {
                    self.trusts.push(Doc { file, node, raw });
                }
            }
            "ManagementCluster" => {
                if let Some(raw) = typed::typed(&mut r) {
                    self.managements.push(Doc { file, node, raw });
                }
            }
            "WorkloadCluster" => {
                if let Some(raw) = typed::typed(&mut r) {
                    self.workloads.push(Doc { file, node, raw });
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

    /// Every rule over the documents read, in the order they depend on each
    /// other; the model when the documents were complete enough to build it.
    fn build(&mut self) -> Option<TrustConfig> {
        self.count_kinds();
        let Validator {
            root,
            diagnostics: out,
            trusts,
            managements,
            workloads,
        } = self;

        // Cluster names first: `secret` sources refer to them.
        let mut names = ClusterNames::default();
        let management_name = managements
            .first()
            .and_then(|doc| names.claim(&mut doc.reporter(out), &doc.raw.metadata));
        let workload_names: Vec<_> = workloads
            .iter()
            .map(|doc| names.claim(&mut doc.reporter(out), &doc.raw.metadata))
            .collect();
        let known_clusters = names.known();

        // The trust policy, field by field, then the rules across fields.
        let trust_doc = trusts.first()?;
        let mut r = trust_doc.reporter(out);
        let spec = &trust_doc.raw.spec;
        let instance = trust::instance(&mut r, &trust_doc.raw.metadata);
        let namespace = trust::namespace(&mut r, spec.namespace.as_deref());
        let sources = SourceReader::new(&known_clusters, namespace.clone(), root);
        let mode = trust::ca_mode(&mut r, &spec.ca);
        let ca = trust::ca(&mut r, &sources, &spec.ca, mode);
        let identity_token = trust::identity_token(&mut r, &sources, &spec.identity_token, mode);
        let server = trust::server(&mut r, &sources, &spec.server);
        let client_certs = trust::client_certs(&mut r, &spec.client_certs, mode);
        modes::check(&mut r, spec, &ca, &server, &client_certs, &identity_token);
        let registration = trust::registration(&mut r, &spec.registration);
        let location = r.location(&[]);

        // The clusters.
        let management = managements.first().and_then(|doc| {
            clusters::management(&mut doc.reporter(out), &doc.raw, management_name)
        });
        let mut workload_configs: Vec<WorkloadConfig> = workloads
            .iter()
            .zip(workload_names)
            .filter_map(|(doc, name)| {
                clusters::workload(
                    &mut doc.reporter(out),
                    &sources,
                    &doc.raw,
                    name,
                    client_certs.mode,
                )
            })
            .collect();
        workload_configs.sort_by(|a, b| a.cluster.name.cmp(&b.cluster.name));

        Some(TrustConfig {
            instance: instance?,
            location,
            namespace: namespace?,
            ca,
            identity_token,
            server,
            client_certs,
            prune: spec.prune.unwrap_or(false),
            registration,
            management: management?,
            workloads: workload_configs,
        })
    }

    /// Exactly one `RelayTrust` and one `ManagementCluster`. A missing one is
    /// not reported when a syntax or type error may have hidden it.
    fn count_kinds(&mut self) {
        let first_file = self
            .trusts
            .first()
            .map(|d| d.file.clone())
            .or_else(|| self.managements.first().map(|d| d.file.clone()))
            .or_else(|| self.workloads.first().map(|d| d.file.clone()))
            .unwrap_or_default();
        let hidden = self.diagnostics.iter().any(|d| {
            matches!(
                d.code,
                Code::YamlSyntax | Code::InvalidType | Code::UnknownField
            )
        });
        let out = &mut self.diagnostics;
        for (kind, docs) in [
            (
                "RelayTrust",
                self.trusts
                    .iter()
                    .map(|d| (&d.file, &d.node))
                    .collect::<Vec<_>>(),
            ),
            (
                "ManagementCluster",
                self.managements
                    .iter()
                    .map(|d| (&d.file, &d.node))
                    .collect(),
            ),
        ] {
            if docs.is_empty() && !hidden {
                out.push(Diagnostic {
                    file: first_file.clone(),
                    position: None,
                    field: String::new(),
                    code: Code::MissingKind,
                    message: format!("no `{kind}` document found; exactly one is required"),
                    hint: Some(format!(
                        "add a `kind: {kind}` document (see `examples/clusters/managed`)"
                    )),
                });
            }
            for (file, node) in docs.into_iter().skip(1) {
                Reporter::new(file, node, out).at_key(
                    &[key("kind")],
                    Code::DuplicateKind,
                    format!("a second `{kind}` document; exactly one is allowed"),
                    Some(format!(
                        "keep one `{kind}`; one config describes one relay trust"
                    )),
                );
            }
        }
    }
}

/// `metadata.name`, required of every document (`what` says whose name it is).
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

#[cfg(test)]
mod tests {
    use super::fixture::TrustSpec;
    use super::*;

    fn file(path: &str, text: &str) -> ManifestFile {
        ManifestFile {
            path: PathBuf::from(path),
            text: text.to_owned(),
        }
    }

    #[test]
    fn the_smallest_config_is_valid() {
        let config = TrustSpec::test().valid();
        assert_eq!(config.management.name.as_str(), "mgmt");
        assert!(config.workloads.is_empty());
        assert_eq!(config.location.file, PathBuf::from("config/relay.yaml"));
    }

    #[test]
    fn no_manifest_is_one_diagnostic() {
        let d = validate(&[], Path::new("config")).expect_err("no manifests");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, Code::NoManifests);
    }

    #[test]
    fn a_second_relay_trust_is_reported_at_its_kind() {
        let mut files = TrustSpec::test().files();
        files.push(file(
            "config/again.yaml",
            "# again\napiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata: { name: prod }\n",
        ));
        let d = validate(&files, Path::new("config")).expect_err("two trusts");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            (d[0].code, d[0].field.as_str(), d[0].file.to_str()),
            (Code::DuplicateKind, "kind", Some("config/again.yaml"))
        );
        assert_eq!(d[0].position.map(|p| p.line), Some(3));
    }

    #[test]
    fn a_missing_kind_is_not_reported_when_a_type_error_may_hide_it() {
        let spec = TrustSpec::test().with("prune", "[yes]");
        assert_eq!(spec.codes(), [Code::InvalidType]);
        let files = &TrustSpec::test().files()[1..];
        let d = validate(files, Path::new("config")).expect_err("no trust");
        assert_eq!(
            d.iter().map(|d| d.code).collect::<Vec<_>>(),
            [Code::MissingKind]
        );
        assert_eq!(d[0].position, None);
    }

    #[test]
    fn a_document_header_is_checked_before_its_kind_is_read() {
        let files = [file(
            "config/odd.yaml",
            "apiVersion: relayctl.dev/v2\nkind: RelayPolicy\n",
        )];
        let d = validate(&files, Path::new("config")).expect_err("odd header");
        let found: Vec<_> = d
            .iter()
            .map(|d| (d.code, d.field.as_str(), d.position.map(|p| p.line)))
            .collect();
        assert!(
            found.contains(&(Code::ApiVersion, "apiVersion", Some(1))),
            "{found:?}"
        );
        assert!(
            found.contains(&(Code::UnknownKind, "kind", Some(2))),
            "{found:?}"
        );
    }
}
