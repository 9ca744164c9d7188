//! A builder of small configs for the validator's unit tests.
//!
//! [`TrustSpec::test`] is the smallest valid config (a `managed` trust and a
//! management cluster, one file each, under `config/`); each `with…` changes
//! one field, so a test reads as the rule it pins:
//!
//! ```text
//! TrustSpec::test().with_mode("custom").with_workload("cluster-1")
//!     .reports(Code::MissingMaterial, "spec.ca.root");
//! ```
//!
//! Every field is rendered on a line of its own, so the builder knows the
//! line each field path is on, and [`TrustSpec::reports`] checks that a
//! diagnostic points at it.

use std::path::{Path, PathBuf};

use super::{ManifestFile, validate};
use crate::config::diag::{Code, Diagnostic, render};
use crate::model::TrustConfig;

/// The folder the fixture's manifests are in; `file` sources may not leave it.
const ROOT: &str = "config";

/// A `RelayTrust` with its management cluster and workload clusters.
#[derive(Debug, Clone)]
pub(super) struct TrustSpec {
    trust: Manifest,
    management: Manifest,
    workloads: Vec<Manifest>,
}

impl TrustSpec {
    /// `managed` CA mode, everything else defaulted; cluster `mgmt`.
    pub(super) fn test() -> Self {
        Self {
            trust: Manifest::new("config/relay.yaml", "RelayTrust", "prod")
                .with("spec.ca.mode", "managed"),
            management: Manifest::new("config/clusters/mgmt.yaml", "ManagementCluster", "mgmt"),
            workloads: Vec::new(),
        }
    }

    /// `external` CA mode with the material it needs (the root, the server
    /// certificate and its key).
    pub(super) fn external() -> Self {
        Self::test()
            .with_mode("external")
            .with("ca.root.cert", "{ file: material/root.crt }")
            .with("server.cert", "{ file: material/server.crt }")
            .with("server.privateKey", "{ env: SERVER_KEY }")
    }

    /// `spec.ca.mode`.
    pub(super) fn with_mode(self, mode: &str) -> Self {
        self.with("ca.mode", mode)
    }

    /// Sets `spec.<field>` of the `RelayTrust` to the YAML `value` (a
    /// scalar or a flow collection, e.g. `{ file: root.crt }`).
    pub(super) fn with(mut self, field: &str, value: &str) -> Self {
        self.trust = self.trust.with(&format!("spec.{field}"), value);
        self
    }

    /// Sets any field of the `RelayTrust` document, e.g. `metadata.name`.
    pub(super) fn with_trust_field(mut self, field: &str, value: &str) -> Self {
        self.trust = self.trust.with(field, value);
        self
    }

    /// Sets any field of the `ManagementCluster` document.
    pub(super) fn with_management_field(mut self, field: &str, value: &str) -> Self {
        self.management = self.management.with(field, value);
        self
    }

    /// Adds a `WorkloadCluster` named `name`, in a file of its own.
    pub(super) fn with_workload(mut self, name: &str) -> Self {
        let file = format!("config/clusters/workload-{}.yaml", self.workloads.len() + 1);
        self.workloads
            .push(Manifest::new(&file, "WorkloadCluster", name));
        self
    }

    /// Sets any field of the workload cluster added last.
    pub(super) fn with_workload_field(mut self, field: &str, value: &str) -> Self {
        let last = self.workloads.pop().expect("a workload was added");
        self.workloads.push(last.with(field, value));
        self
    }

    /// The manifests as the validator reads them.
    pub(super) fn files(&self) -> Vec<ManifestFile> {
        self.manifests().map(Manifest::file).collect()
    }

    fn manifests(&self) -> impl Iterator<Item = &Manifest> {
        [&self.trust, &self.management]
            .into_iter()
            .chain(&self.workloads)
    }

    pub(super) fn validate(&self) -> Result<TrustConfig, Vec<Diagnostic>> {
        validate(&self.files(), Path::new(ROOT))
    }

    /// The model, or a panic that shows every diagnostic.
    pub(super) fn valid(&self) -> TrustConfig {
        self.validate()
            .unwrap_or_else(|d| panic!("expected a valid config, got:\n{}", self.render(&d)))
    }

    /// Every diagnostic, or a panic when the config is valid.
    pub(super) fn diagnostics(&self) -> Vec<Diagnostic> {
        match self.validate() {
            Ok(_) => panic!("expected diagnostics, the config is valid:\n{self}"),
            Err(d) => d,
        }
    }

    /// The codes reported, in the order of the diagnostics.
    pub(super) fn codes(&self) -> Vec<Code> {
        self.diagnostics().iter().map(|d| d.code).collect()
    }

    /// The diagnostic with `code` at `field` of the `RelayTrust`, after
    /// checking that it points at the line `field` is written on.
    pub(super) fn reports(&self, code: Code, field: &str) -> Diagnostic {
        self.reports_in(&self.trust, code, field)
    }

    /// [`Self::reports`] for the management cluster's document.
    pub(super) fn reports_in_management(&self, code: Code, field: &str) -> Diagnostic {
        self.reports_in(&self.management, code, field)
    }

    /// [`Self::reports`] for the document of the `index`th workload (from 0).
    pub(super) fn reports_in_workload(&self, index: usize, code: Code, field: &str) -> Diagnostic {
        self.reports_in(&self.workloads[index], code, field)
    }

    fn reports_in(&self, manifest: &Manifest, code: Code, field: &str) -> Diagnostic {
        let diagnostics = self.diagnostics();
        let Some(found) = diagnostics
            .iter()
            .find(|d| d.code == code && d.field == field && d.file == manifest.path)
        else {
            panic!(
                "expected `{code}` at `{field}` of {}, got:\n{}",
                manifest.path.display(),
                self.render(&diagnostics)
            );
        };
        assert_eq!(
            found.position.map(|p| p.line),
            Some(manifest.line_of(field)),
            "`{code}` at `{field}` points at the wrong line:\n{}",
            self.render(&diagnostics)
        );
        found.clone()
    }

    fn render(&self, diagnostics: &[Diagnostic]) -> String {
        let sources = self
            .manifests()
            .map(|m| (m.path.clone(), m.text()))
            .collect();
        render(diagnostics, &sources)
    }
}

impl std::fmt::Display for TrustSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for manifest in self.manifests() {
            writeln!(f, "# {}\n{}", manifest.path.display(), manifest.text())?;
        }
        Ok(())
    }
}

/// One manifest document: dotted field paths with their YAML values, in
/// the order first set, rendered as block YAML with one field per line.
#[derive(Debug, Clone)]
struct Manifest {
    path: PathBuf,
    fields: Vec<(String, String)>,
}

impl Manifest {
    fn new(path: &str, kind: &str, name: &str) -> Self {
        Self {
            path: PathBuf::from(path),
            fields: Vec::new(),
        }
        .with("apiVersion", crate::config::raw::API_VERSION)
        .with("kind", kind)
        .with("metadata.name", name)
    }

    /// Sets `field` (replacing its value if it is set).
    fn with(mut self, field: &str, value: &str) -> Self {
        match self.fields.iter_mut().find(|(f, _)| f == field) {
            Some((_, v)) => *v = value.to_owned(),
            None => self.fields.push((field.to_owned(), value.to_owned())),
        }
        self
    }

    fn file(&self) -> ManifestFile {
        ManifestFile {
            path: self.path.clone(),
            text: self.text(),
        }
    }

    fn text(&self) -> String {
        self.lines()
            .into_iter()
            .map(|(_, line)| line + "\n")
            .collect()
    }

    /// Each line with the field path it writes (a mapping's own line too).
    fn lines(&self) -> Vec<(String, String)> {
        let mut lines: Vec<(String, String)> = Vec::new();
        // Fields are grouped under their first-set parent, so a mapping is
        // written once however its fields were interleaved.
        let mut order: Vec<&str> = Vec::new();
        for (field, _) in &self.fields {
            let mut prefix = String::new();
            for segment in field.split('.') {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(segment);
                if !order.contains(&&prefix[..]) {
                    order.push(&field[..prefix.len()]);
                }
            }
        }
        self.emit("", 0, &order, &mut lines);
        lines
    }

    fn emit(&self, parent: &str, depth: usize, order: &[&str], lines: &mut Vec<(String, String)>) {
        let children = order.iter().filter(|path| match path.rsplit_once('.') {
            Some((p, _)) => p == parent,
            None => parent.is_empty(),
        });
        for &child in children {
            let name = child.rsplit('.').next().unwrap_or(child);
            let indent = "  ".repeat(depth);
            match self.fields.iter().find(|(f, _)| f == child) {
                Some((_, value)) => {
                    let nested = format!("{child}.");
                    assert!(
                        !order.iter().any(|o| o.starts_with(&nested)),
                        "`{child}` is set both to a value and to fields"
                    );
                    lines.push((child.to_owned(), format!("{indent}{name}: {value}")));
                }
                None => {
                    lines.push((child.to_owned(), format!("{indent}{name}:")));
                    self.emit(child, depth + 1, order, lines);
                }
            }
        }
    }

    /// The 1-based line of `field` (list indices ignored), or of the deepest
    /// of its parents that is written: where the validator locates it.
    fn line_of(&self, field: &str) -> u32 {
        let lines = self.lines();
        let mut field: String = field.split('[').next().unwrap_or(field).to_owned();
        loop {
            if field.is_empty() {
                return 1;
            }
            if let Some(at) = lines.iter().position(|(f, _)| *f == field) {
                return u32::try_from(at + 1).expect("a short manifest");
            }
            field = match field.rsplit_once('.') {
                Some((parent, _)) => parent.to_owned(),
                None => String::new(),
            };
        }
    }
}

#[test]
fn the_builder_writes_each_field_once_on_a_line_of_its_own() {
    let spec = TrustSpec::test()
        .with("server.validity", "8760h")
        .with("ca.root.validity", "87600h")
        .with("server.renewBefore", "720h");
    let text = spec.trust.text();
    assert_eq!(
        text,
        "apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata:\n  name: prod\nspec:\n  ca:\n    mode: managed\n    root:\n      validity: 87600h\n  server:\n    validity: 8760h\n    renewBefore: 720h\n"
    );
    assert_eq!(spec.trust.line_of("spec.ca.root.validity"), 9);
    assert_eq!(spec.trust.line_of("spec.ca.root.cert.file"), 8);
    assert_eq!(spec.trust.line_of("spec.server.renewBefore"), 12);
    assert_eq!(spec.trust.line_of("spec.clientCerts"), 5);
    spec.valid();
}
