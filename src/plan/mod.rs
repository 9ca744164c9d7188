//! Desired intent versus observed state: the fleet plan.
//!
//! [`plan`] is pure. From the validated config, the user's material, what the
//! backends observed, injected randomness and the clock, it decides for every
//! Secret of DESIGN.md §1 whether to create, update, delete or leave it, and
//! why. It also prepares the exact objects to write ([`Planned::writes`]), so
//! that `apply` only carries them out. Certificates are compared by their
//! facts and chains, never by bytes; CA material that exists and is valid is
//! always reused.

pub mod model;
pub mod render;
pub mod saved;

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

pub use self::model::{
    Action, CertSummary, Change, ClusterPlan, DetailedStatus, FORMAT_VERSION, Plan, Role, Summary,
    Value,
};
use crate::material::Material;
use crate::model::{CaMode, ClientCertMode, ClusterName, Connection, Duration, TrustConfig};
use crate::observed::{
    ANNOTATION_CONFIG_DIGEST, ANNOTATION_FINGERPRINT, ANNOTATION_NOT_AFTER, ANNOTATION_SOURCE,
    ClusterObservation, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY, Observed, Ownership,
    SecretObject,
};
use crate::pki::inspect::rfc3339;
use crate::pki::{
    self, CaRequest, CertFacts, ClientRequest, Issuer, KeySource, PrivateKey, ServerRequest, Usage,
};
use crate::secret::SecretBytes;

/// `relay-root-tls-secret`: root CA (mgmt: cert and, when kept in-cluster, key; workloads: bundle).
pub const ROOT_SECRET: &str = "relay-root-tls-secret";
/// `relay-tls-signing-secret`: intermediate CA that signs leaves (mgmt).
pub const SIGNING_SECRET: &str = "relay-tls-signing-secret";
/// `relay-server-tls-secret`: the management server's certificate (mgmt).
pub const SERVER_SECRET: &str = "relay-server-tls-secret";
/// `relay-identity-token-secret`: the shared bootstrap token.
pub const TOKEN_SECRET: &str = "relay-identity-token-secret";
/// `relay-client-tls-secret`: an agent's client certificate (workloads).
pub const CLIENT_SECRET: &str = "relay-client-tls-secret";

/// Every relay Secret name, as the product expects them.
pub const RELAY_SECRETS: [&str; 5] = [
    ROOT_SECRET,
    SIGNING_SECRET,
    SERVER_SECRET,
    TOKEN_SECRET,
    CLIENT_SECRET,
];

/// Name of the inventory Secret on the management cluster: which workload
/// clusters (and connections) this instance has written to, so that a cluster
/// whose manifest was removed can still be found and pruned.
pub fn inventory_secret(instance: &str) -> String {
    format!("relayctl-{instance}-inventory")
}

/// Data key of the inventory Secret.
pub const INVENTORY_KEY: &str = "clusters.json";

/// Randomness the planner may use: key pairs and serials, and tokens.
pub struct Randomness<'a> {
    /// Keys and serials.
    pub keys: &'a dyn KeySource,
    /// A new identity token (256 random bits as text).
    pub token: &'a dyn Fn() -> SecretBytes,
}

/// Everything [`plan`] looks at.
pub struct PlanInput<'a> {
    /// The validated config.
    pub config: &'a TrustConfig,
    /// Loaded user material.
    pub material: &'a Material,
    /// What the backends saw, including orphan clusters.
    pub observed: &'a Observed,
    /// Clusters in the inventory that left the config, with their connections.
    pub orphans: &'a BTreeMap<ClusterName, Connection>,
    /// Take over existing Secrets that relayctl does not own.
    pub adopt: bool,
    /// Delete this instance's Secrets on orphan clusters (config `prune` or `--prune`).
    pub prune: bool,
    /// Provenance for the source annotation: a path or `<repo>@<commit>`.
    pub source: &'a str,
    /// The clock.
    pub now: OffsetDateTime,
    /// Randomness.
    pub random: Randomness<'a>,
}

/// One write to carry out.
#[derive(Debug, Clone)]
pub struct Write {
    /// Create, update or delete.
    pub action: Action,
    /// The full object for create/update; namespace and name for delete.
    pub object: SecretObject,
    /// The version the write expects to replace (`None`: must not exist).
    pub precondition: Option<String>,
    /// The object was written earlier in the same apply: the precondition
    /// is the version that earlier write left (known only then).
    pub chained: bool,
}

/// The writes for one cluster, in order.
#[derive(Debug, Clone)]
pub struct ClusterWrites {
    /// Cluster.
    pub cluster: ClusterName,
    /// Its role.
    pub role: Role,
    /// Writes in order.
    pub writes: Vec<Write>,
    /// Writes carried out after every other cluster, and only when no orphan
    /// cluster failed: the inventory, which must keep listing an orphan whose
    /// prune did not go through so that the next run finds it again.
    pub last: Vec<Write>,
}

/// A plan plus the objects that carry it out.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The serializable plan.
    pub plan: Plan,
    /// Management cluster first, then workloads and orphans.
    pub writes: Vec<ClusterWrites>,
}

/// Planning failed in a way that is a bug or an unusable input (issuing a
/// certificate from material that passed validation should not fail).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Issuing a certificate failed.
    #[error("cannot issue {what}")]
    Issue {
        /// What was being issued.
        what: String,
        /// Why.
        #[source]
        source: pki::IssueError,
    },
}

/// The trust material every cluster is planned against.
struct Trust {
    /// `ca.crt` everywhere: the root (bundle), canonical PEM.
    bundle: Vec<u8>,
    /// Facts of the bundle's certificates.
    bundle_facts: Vec<CertFacts>,
    /// The root was generated by this run (its facts are known after apply).
    new_root: bool,
    /// Signs leaves, when relayctl can sign.
    signer: Option<Issuer>,
    /// The token every cluster gets, when tokens are on.
    token: Option<SecretBytes>,
}

/// Computes the plan. See the module docs.
pub fn plan(input: &PlanInput<'_>) -> Result<Planned, PlanError> {
    let config = input.config;
    let mut clusters = Vec::new();
    let mut writes = Vec::new();
    // Serializes the whole config (every workload cluster): computed once, not
    // once per written Secret, which made planning a fleet quadratic in N.
    let digest = config.digest();

    let mgmt_name = &config.management.name;
    let mgmt_obs = input.observed.clusters.get(mgmt_name);
    let mut mgmt = Cluster::new(input, &digest, mgmt_name.clone(), Role::Management);
    let trust = match mgmt_obs {
        Some(Ok(obs)) => plan_management(input, obs, &mut mgmt)?,
        Some(Err(why)) => {
            mgmt.error = Some(why.clone());
            None
        }
        None => {
            mgmt.error = Some("not observed".to_owned());
            None
        }
    };
    let blocked = if mgmt.error.is_some() {
        Some(format!(
            "blocked: management cluster `{mgmt_name}` cannot be planned"
        ))
    } else if mgmt
        .changes
        .iter()
        .any(|c| matches!(c.action, Action::Conflict | Action::Error))
    {
        Some(format!(
            "blocked: management cluster `{mgmt_name}` has conflicts or errors; fix them first"
        ))
    } else {
        None
    };

    let mut workload_plans = Vec::new();
    for workload in &config.workloads {
        let name = &workload.cluster.name;
        let mut cluster = Cluster::new(input, &digest, name.clone(), Role::Workload);
        match (input.observed.clusters.get(name), &trust, &blocked) {
            (Some(Err(why)), _, _) => cluster.error = Some(why.clone()),
            (None, _, _) => cluster.error = Some("not observed".to_owned()),
            (_, _, Some(why)) => cluster.error = Some(why.clone()),
            (Some(Ok(obs)), Some(trust), None) => plan_workload(input, obs, trust, &mut cluster)?,
            (Some(Ok(_)), None, None) => {
                cluster.error = Some("blocked: no trust material".to_owned());
            }
        }
        workload_plans.push(cluster);
    }

    // Orphans: clusters that left the config.
    let may_prune = input.prune && !config.workloads.is_empty();
    let mut kept_orphans = BTreeMap::new();
    let mut orphan_plans = Vec::new();
    for (name, connection) in input.orphans {
        let mut cluster = Cluster::new(input, &digest, name.clone(), Role::Orphan);
        match input.observed.clusters.get(name) {
            Some(Ok(obs)) => {
                let owned: Vec<&SecretObject> = obs
                    .secrets
                    .values()
                    .filter(|s| s.ownership(config.instance.as_str()) == Ownership::Ours)
                    .collect();
                for secret in &owned {
                    if may_prune {
                        cluster.push_delete(
                            secret,
                            "orphan: the cluster left the config and pruning is on",
                        );
                    } else {
                        let why = if input.prune {
                            "orphan: kept, because no workload cluster remains in the config"
                        } else {
                            "orphan: the cluster left the config; kept (pruning is off)"
                        };
                        cluster.push_noop(secret, why);
                    }
                }
                if !may_prune && !owned.is_empty() {
                    kept_orphans.insert(name.clone(), connection.clone());
                }
            }
            Some(Err(why)) => {
                cluster.error = Some(why.clone());
                kept_orphans.insert(name.clone(), connection.clone());
            }
            None => {
                kept_orphans.insert(name.clone(), connection.clone());
            }
        }
        orphan_plans.push(cluster);
    }

    // The inventory on mgmt, once everything else on mgmt is known.
    if let (Some(Ok(obs)), None) = (mgmt_obs, &mgmt.error) {
        let written: BTreeSet<&ClusterName> = workload_plans
            .iter()
            .filter(|c| !c.writes.is_empty())
            .map(|c| &c.name)
            .collect();
        plan_inventory(input, obs, &kept_orphans, &written, &mut mgmt);
    }

    for cluster in std::iter::once(mgmt)
        .chain(workload_plans)
        .chain(orphan_plans)
    {
        let (plan, cluster_writes) = cluster.finish();
        clusters.push(plan);
        writes.push(cluster_writes);
    }
    let summary = Summary::of(&clusters);
    Ok(Planned {
        plan: Plan {
            format_version: FORMAT_VERSION,
            instance: config.instance.to_string(),
            namespace: config.namespace.to_string(),
            ca_mode: config.ca.mode,
            client_cert_mode: config.client_certs.mode,
            config_digest: digest,
            source: input.source.to_owned(),
            clusters,
            summary,
        },
        writes,
    })
}

/// Plan and writes of one cluster under construction.
struct Cluster<'a> {
    input: &'a PlanInput<'a>,
    /// `input.config.digest()`, computed once per plan.
    config_digest: &'a str,
    name: ClusterName,
    role: Role,
    error: Option<String>,
    changes: Vec<Change>,
    writes: Vec<Write>,
    /// Writes after every other cluster's (see [`ClusterWrites::last`]).
    last: Vec<Write>,
}

impl<'a> Cluster<'a> {
    fn new(
        input: &'a PlanInput<'a>,
        config_digest: &'a str,
        name: ClusterName,
        role: Role,
    ) -> Self {
        Self {
            input,
            config_digest,
            name,
            role,
            error: None,
            changes: Vec::new(),
            writes: Vec::new(),
            last: Vec::new(),
        }
    }

    fn namespace(&self) -> String {
        self.input.config.namespace.to_string()
    }

    fn finish(self) -> (ClusterPlan, ClusterWrites) {
        let (writes, last) = (self.writes, self.last);
        (
            ClusterPlan {
                name: self.name.to_string(),
                role: self.role,
                error: self.error,
                changes: self.changes,
            },
            ClusterWrites {
                cluster: self.name,
                role: self.role,
                writes,
                last,
            },
        )
    }

    /// Where a named Secret stands: missing, ours (or adoptable), or someone else's.
    fn slot<'o>(&self, obs: &'o ClusterObservation, name: &str) -> Slot<'o> {
        match obs.secrets.get(name) {
            None => Slot::Missing,
            Some(secret) => match secret.ownership(self.input.config.instance.as_str()) {
                Ownership::Ours => Slot::Ours(secret),
                _ if self.input.adopt => Slot::Adopt(secret),
                Ownership::OtherInstance(other) => Slot::Conflict(
                    secret,
                    format!("owned by relayctl instance `{other}`, not `{}`", self.input.config.instance),
                ),
                Ownership::Unowned => Slot::Conflict(
                    secret,
                    "exists and is not managed by relayctl; left untouched (use `--adopt` to take it over)".to_owned(),
                ),
            },
        }
    }

    /// Records the decision for one Secret. `reasons` are why the existing
    /// object must change (empty: it is right); `data` is the full desired data.
    fn decide(
        &mut self,
        slot: &Slot<'_>,
        name: &str,
        reasons: Vec<String>,
        data: BTreeMap<String, SecretBytes>,
        shown: BTreeMap<String, Value>,
    ) {
        // Data keys the Secret should not hold are drift too.
        let mut reasons = reasons;
        if let Some(existing) = slot.usable() {
            for key in existing.data.keys().filter(|k| !data.contains_key(*k)) {
                let quoted = format!("`{key}`");
                if !reasons.iter().any(|r| r.contains(&quoted)) {
                    reasons.push(format!(
                        "unexpected data key `{}`",
                        crate::text::printable(key)
                    ));
                }
            }
        }
        let (action, reasons, version) = match slot {
            Slot::Missing => (Action::Create, vec!["missing".to_owned()], None),
            Slot::Conflict(secret, why) => (
                Action::Conflict,
                vec![why.clone()],
                Some(secret.version.clone()),
            ),
            Slot::Ours(secret) if reasons.is_empty() => {
                (Action::NoOp, Vec::new(), Some(secret.version.clone()))
            }
            Slot::Ours(secret) => (Action::Update, reasons, Some(secret.version.clone())),
            Slot::Adopt(secret) => {
                let mut all = vec!["adopt: add relayctl ownership labels".to_owned()];
                all.extend(reasons);
                (Action::Update, all, Some(secret.version.clone()))
            }
        };
        // Values that are the same certificate(s) or key as what exists keep
        // their existing bytes: rewriting a kept CA must not change it.
        let mut data = data;
        if let Some(existing) = slot.usable() {
            for (key, value) in data.iter_mut() {
                if let Some(current) = existing.get(key)
                    && same_value(current, value)
                {
                    *value = current.clone();
                }
            }
        }
        if action.writes() {
            self.writes.push(Write {
                action,
                object: self.object(name, data),
                precondition: version.clone(),
                chained: false,
            });
        }
        self.changes.push(Change {
            namespace: self.namespace(),
            name: name.to_owned(),
            action,
            reasons,
            observed_version: version,
            data: shown,
        });
    }

    fn push_error(
        &mut self,
        name: &str,
        version: Option<String>,
        reasons: Vec<String>,
        shown: BTreeMap<String, Value>,
    ) {
        self.changes.push(Change {
            namespace: self.namespace(),
            name: name.to_owned(),
            action: Action::Error,
            reasons,
            observed_version: version,
            data: shown,
        });
    }

    fn push_noop(&mut self, secret: &SecretObject, why: &str) {
        self.changes.push(Change {
            namespace: secret.namespace.clone(),
            name: secret.name.clone(),
            action: Action::NoOp,
            reasons: vec![why.to_owned()],
            observed_version: Some(secret.version.clone()),
            data: show_observed(secret),
        });
    }

    fn push_delete(&mut self, secret: &SecretObject, why: &str) {
        self.changes.push(Change {
            namespace: secret.namespace.clone(),
            name: secret.name.clone(),
            action: Action::Delete,
            reasons: vec![why.to_owned()],
            observed_version: Some(secret.version.clone()),
            data: show_observed(secret),
        });
        self.writes.push(Write {
            action: Action::Delete,
            object: SecretObject {
                namespace: secret.namespace.clone(),
                name: secret.name.clone(),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                data: BTreeMap::new(),
                version: String::new(),
            },
            precondition: Some(secret.version.clone()),
            chained: false,
        });
    }

    /// A Secret as relayctl writes it: ownership labels and provenance annotations.
    fn object(&self, name: &str, data: BTreeMap<String, SecretBytes>) -> SecretObject {
        let config = self.input.config;
        let labels = BTreeMap::from([
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
            (LABEL_INSTANCE.to_owned(), config.instance.to_string()),
        ]);
        let mut annotations = BTreeMap::from([
            (ANNOTATION_SOURCE.to_owned(), self.input.source.to_owned()),
            (
                ANNOTATION_CONFIG_DIGEST.to_owned(),
                format!("sha256:{}", self.config_digest),
            ),
        ]);
        let cert = data.get("tls.crt").or_else(|| data.get("ca.crt"));
        if let Some(facts) = cert
            .and_then(|pem| pki::inspect_bundle(pem.expose()).ok())
            .and_then(|facts| facts.into_iter().next())
        {
            annotations.insert(
                ANNOTATION_FINGERPRINT.to_owned(),
                facts.sha256_fingerprint.clone(),
            );
            annotations.insert(ANNOTATION_NOT_AFTER.to_owned(), rfc3339(facts.not_after));
        }
        SecretObject {
            namespace: config.namespace.to_string(),
            name: name.to_owned(),
            labels,
            annotations,
            data,
            version: String::new(),
        }
    }
}

enum Slot<'o> {
    Missing,
    Ours(&'o SecretObject),
    Adopt(&'o SecretObject),
    Conflict(&'o SecretObject, String),
}

impl<'o> Slot<'o> {
    /// The existing object relayctl may use as a basis.
    fn usable(&self) -> Option<&'o SecretObject> {
        match self {
            Slot::Ours(s) | Slot::Adopt(s) => Some(s),
            _ => None,
        }
    }
}

/// Data and display of a `tls.crt` (chain) / `tls.key` / `ca.crt` Secret.
/// `new` marks a chain and key issued by this run, `new_root` a bundle whose
/// root was generated by this run.
fn tls_data(
    chain: Vec<u8>,
    key: &PrivateKey,
    new: bool,
    bundle: &[u8],
    bundle_facts: &[CertFacts],
    new_root: bool,
) -> (BTreeMap<String, SecretBytes>, BTreeMap<String, Value>) {
    let chain_facts = pki::inspect_bundle(&chain).unwrap_or_default();
    let shown = BTreeMap::from([
        ("tls.crt".to_owned(), show_certs(&chain_facts, new)),
        ("tls.key".to_owned(), show_key(key, new)),
        ("ca.crt".to_owned(), show_certs(bundle_facts, new_root)),
    ]);
    let data = BTreeMap::from([
        ("tls.crt".to_owned(), SecretBytes::new(chain)),
        ("tls.key".to_owned(), key.to_pkcs8_pem().clone()),
        ("ca.crt".to_owned(), SecretBytes::new(bundle.to_vec())),
    ]);
    (data, shown)
}

/// Whether two data values hold the same thing: equal bytes, the same
/// certificates (by fingerprint, in order), or the same private key.
fn same_value(a: &SecretBytes, b: &SecretBytes) -> bool {
    if a == b {
        return true;
    }
    if let (Ok(x), Ok(y)) = (
        pki::inspect_bundle(a.expose()),
        pki::inspect_bundle(b.expose()),
    ) {
        return x
            .iter()
            .map(|f| &f.sha256_fingerprint)
            .eq(y.iter().map(|f| &f.sha256_fingerprint));
    }
    match (PrivateKey::from_pem(a), PrivateKey::from_pem(b)) {
        (Ok(x), Ok(y)) => x.facts() == y.facts(),
        _ => false,
    }
}

/// Canonical PEM of every certificate in `pem` (re-encoded from DER).
fn canonical_bundle(pem: &[u8]) -> Option<(Vec<u8>, Vec<CertFacts>)> {
    let ders = pki::inspect::certificate_ders(pem).ok()?;
    if ders.is_empty() {
        return None;
    }
    let mut out = String::new();
    let mut facts = Vec::new();
    for (index, der) in ders.iter().enumerate() {
        out.push_str(&pki::inspect::certificate_pem(der));
        facts.push(pki::inspect::facts_from_der(index, der).ok()?);
    }
    Some((out.into_bytes(), facts))
}

fn fingerprints(facts: &[CertFacts]) -> BTreeSet<&str> {
    facts
        .iter()
        .map(|f| f.sha256_fingerprint.as_str())
        .collect()
}

fn summary(facts: &CertFacts) -> CertSummary {
    CertSummary {
        subject: facts.subject.clone(),
        dns_names: facts.dns_names.clone(),
        issuer: facts.issuer.clone(),
        is_ca: facts.is_ca,
        not_after: rfc3339(facts.not_after),
        serial: Some(facts.serial.clone()),
        sha256: Some(facts.sha256_fingerprint.clone()),
    }
}

fn show_certs(facts: &[CertFacts], new: bool) -> Value {
    let certificates = facts
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut s = summary(f);
            if new && i == 0 {
                s.serial = None;
                s.sha256 = None;
                s.not_after = "(known after apply)".to_owned();
            }
            s
        })
        .collect();
    Value::Certificates { certificates, new }
}

fn show_key(key: &PrivateKey, new: bool) -> Value {
    Value::PrivateKey {
        algorithm: key.algorithm().to_string(),
        public_key_sha256: if new {
            None
        } else {
            Some(key.facts().spki_sha256)
        },
        new,
    }
}

fn show_token(token: &SecretBytes, new: bool) -> Value {
    Value::Token {
        digest: if new { None } else { Some(token.fingerprint()) },
        length: token.len(),
        new,
    }
}

/// What an observed Secret holds, as it may be shown.
fn show_observed(secret: &SecretObject) -> BTreeMap<String, Value> {
    secret
        .data
        .iter()
        .map(|(key, value)| {
            let shown = if let Ok(facts) = pki::inspect_bundle(value.expose()) {
                show_certs(&facts, false)
            } else if let Ok(k) = PrivateKey::from_pem(value) {
                show_key(&k, false)
            } else if key == INVENTORY_KEY {
                Value::Text {
                    text: String::from_utf8_lossy(value.expose()).into_owned(),
                }
            } else {
                show_token(value, false)
            };
            (key.clone(), shown)
        })
        .collect()
}

fn issue_err(what: &str) -> impl FnOnce(pki::IssueError) -> PlanError + '_ {
    move |source| PlanError::Issue {
        what: what.to_owned(),
        source,
    }
}

/// A CA (cert + key) found in a Secret, if its key matches and it is a CA.
fn existing_ca(secret: &SecretObject, cert_key: &str) -> Result<Issuer, String> {
    let cert = secret
        .get(cert_key)
        .ok_or_else(|| format!("`{cert_key}` is missing"))?;
    let key = secret
        .get("tls.key")
        .ok_or_else(|| "`tls.key` is missing".to_owned())?;
    let key = PrivateKey::from_pem(key)
        .map_err(|e| format!("`tls.key` is unreadable: {}", crate::error::error_chain(&e)))?;
    Issuer::new(cert.expose(), key).map_err(|e| match e {
        pki::IssueError::IssuerKeyMismatch { .. } => {
            format!("`tls.key` does not match `{cert_key}`")
        }
        other => format!(
            "`{cert_key}` is not a usable CA: {}",
            crate::error::error_chain(&other)
        ),
    })
}

fn plan_management(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    mgmt: &mut Cluster<'_>,
) -> Result<Option<Trust>, PlanError> {
    let config = input.config;
    let now = input.now;
    let keys = input.random.keys;
    match config.ca.mode {
        CaMode::Managed | CaMode::Custom => {
            // Root.
            let root_slot = mgmt.slot(obs, ROOT_SECRET);
            let (root_issuer, bundle, bundle_facts, new_root) = if config.ca.mode == CaMode::Managed
            {
                let (issuer, new, reasons) = match root_slot
                    .usable()
                    .map(|s| existing_ca(s, "ca.crt"))
                {
                    Some(Ok(issuer)) => (issuer, false, Vec::new()),
                    Some(Err(why)) => {
                        // Replacing a root breaks every agent's trust: never implicit.
                        let existing = root_slot.usable().expect("usable: mapped above");
                        mgmt.push_error(
                            ROOT_SECRET,
                            Some(existing.version.clone()),
                            vec![format!(
                                "{why}; relayctl never replaces an existing root CA on its own: restore the key, or delete the Secret to generate a new root (every agent then needs the new root)"
                            )],
                            show_observed(existing),
                        );
                        return Ok(None);
                    }
                    None => {
                        let reasons = Vec::new();
                        let root = pki::issue_root(
                            &CaRequest {
                                common_name: config.ca.root.common_name.clone(),
                                validity: config.ca.root.validity,
                                key: config.ca.root.key,
                            },
                            keys,
                            now,
                        )
                        .map_err(issue_err("the root CA"))?;
                        (
                            Issuer::from_issued(&root).map_err(issue_err("the root CA"))?,
                            true,
                            reasons,
                        )
                    }
                };
                let bundle = issuer.cert_pem().as_bytes().to_vec();
                let facts = vec![issuer.facts().clone()];
                let data = BTreeMap::from([
                    ("ca.crt".to_owned(), SecretBytes::new(bundle.clone())),
                    ("tls.key".to_owned(), issuer.key().to_pkcs8_pem().clone()),
                ]);
                let shown = BTreeMap::from([
                    ("ca.crt".to_owned(), show_certs(&facts, new)),
                    ("tls.key".to_owned(), show_key(issuer.key(), new)),
                ]);
                if let Slot::Conflict(..) = root_slot {
                    mgmt.decide(&root_slot, ROOT_SECRET, reasons, data, shown);
                    return Ok(None);
                }
                mgmt.decide(&root_slot, ROOT_SECRET, reasons, data, shown);
                (Some(issuer), bundle, facts, new)
            } else {
                let Some((bundle, facts)) = configured_root(input, mgmt) else {
                    return Ok(None);
                };
                let issuer = match &input.material.root_key {
                    Some(key) => {
                        let key = PrivateKey::from_pem(key).ok();
                        let first = pki::inspect::certificate_ders(&bundle)
                            .ok()
                            .and_then(|d| d.into_iter().next());
                        match (key, first) {
                            (Some(key), Some(der)) => {
                                Issuer::new(pki::inspect::certificate_pem(&der).as_bytes(), key)
                                    .ok()
                            }
                            _ => None,
                        }
                    }
                    None => None,
                };
                let mut reasons = Vec::new();
                if let Some(existing) = root_slot.usable() {
                    let observed = existing
                        .get("ca.crt")
                        .and_then(|v| canonical_bundle(v.expose()));
                    match observed {
                        Some((_, observed_facts))
                            if fingerprints(&observed_facts) == fingerprints(&facts) => {}
                        Some(_) => {
                            reasons.push("`ca.crt` differs from the configured root".to_owned())
                        }
                        None => reasons.push("`ca.crt` is unreadable".to_owned()),
                    }
                    if existing.get("tls.key").is_some() {
                        reasons.push(
                            "holds a root key, which `custom` mode keeps out of the cluster"
                                .to_owned(),
                        );
                    }
                }
                let data =
                    BTreeMap::from([("ca.crt".to_owned(), SecretBytes::new(bundle.clone()))]);
                let shown = BTreeMap::from([("ca.crt".to_owned(), show_certs(&facts, false))]);
                let conflict = matches!(root_slot, Slot::Conflict(..));
                mgmt.decide(&root_slot, ROOT_SECRET, reasons, data, shown);
                if conflict {
                    return Ok(None);
                }
                (issuer, bundle, facts, false)
            };

            // Signing (intermediate) CA.
            let signing_slot = mgmt.slot(obs, SIGNING_SECRET);
            let provided = match (
                &input.material.intermediate_cert,
                &input.material.intermediate_key,
            ) {
                (Some(cert), Some(key)) => PrivateKey::from_pem(key)
                    .ok()
                    .and_then(|key| Issuer::new(cert.expose(), key).ok()),
                _ => None,
            };
            let (signer, new_signer, mut reasons) = if let Some(provided) = provided {
                let mut reasons = Vec::new();
                if let Some(existing) = signing_slot.usable() {
                    match existing_ca(existing, "tls.crt") {
                        Ok(current)
                            if current.facts().sha256_fingerprint
                                == provided.facts().sha256_fingerprint
                                && current.key().facts() == provided.key().facts() => {}
                        Ok(_) => {
                            reasons.push("intermediate differs from the configured one".to_owned())
                        }
                        Err(why) => reasons.push(why),
                    }
                }
                (provided, false, reasons)
            } else {
                let Some(root) = &root_issuer else {
                    mgmt.push_error(
                        SIGNING_SECRET,
                        None,
                        vec!["no root key to derive the intermediate from".to_owned()],
                        BTreeMap::new(),
                    );
                    return Ok(None);
                };
                let existing = signing_slot.usable().map(|s| {
                    let issuer = existing_ca(s, "tls.crt")?;
                    let cert = s
                        .get("tls.crt")
                        .map(|c| c.expose().to_vec())
                        .unwrap_or_default();
                    let child = pki::inspect::certificate_ders(&cert).unwrap_or_default();
                    let root_der = pki::inspect::certificate_ders(root.cert_pem().as_bytes())
                        .unwrap_or_default();
                    let roots: Vec<&[u8]> = root_der.iter().map(Vec::as_slice).collect();
                    if !child.first().is_some_and(|der| pki::issued_by(der, &roots)) {
                        return Err("not signed by the current root".to_owned());
                    }
                    if issuer.facts().path_len != Some(0) {
                        return Err("intermediate has no pathlen 0 constraint".to_owned());
                    }
                    let renew = config
                        .ca
                        .intermediate
                        .validity
                        .third()
                        .max(Duration::from_hours(24 * 60));
                    if let Some(why) = pki::renewal_due(issuer.facts(), renew, now) {
                        return Err(format!("intermediate {why}"));
                    }
                    Ok(issuer)
                });
                match existing {
                    Some(Ok(issuer)) => (issuer, false, Vec::new()),
                    other => {
                        let reasons = match other {
                            Some(Err(why)) => vec![format!("{why}: a new intermediate is issued")],
                            _ => Vec::new(),
                        };
                        let request = CaRequest {
                            common_name: config.ca.intermediate.common_name.clone(),
                            validity: config.ca.intermediate.validity,
                            key: config.ca.intermediate.key,
                        };
                        if let Some(why) = outlives(root, request.validity, now) {
                            mgmt.push_error(SIGNING_SECRET, None, vec![why], BTreeMap::new());
                            return Ok(None);
                        }
                        let issued = pki::issue_intermediate(&request, root, keys, now)
                            .map_err(issue_err("the intermediate CA"))?;
                        (
                            Issuer::from_issued(&issued)
                                .map_err(issue_err("the intermediate CA"))?,
                            true,
                            reasons,
                        )
                    }
                }
            };
            if !new_signer && let Some(existing) = signing_slot.usable() {
                bundle_reason(existing, &bundle_facts, &mut reasons);
            }
            let data = BTreeMap::from([
                (
                    "tls.crt".to_owned(),
                    SecretBytes::new(signer.cert_pem().as_bytes().to_vec()),
                ),
                ("tls.key".to_owned(), signer.key().to_pkcs8_pem().clone()),
                ("ca.crt".to_owned(), SecretBytes::new(bundle.clone())),
            ]);
            let shown = BTreeMap::from([
                (
                    "tls.crt".to_owned(),
                    show_certs(std::slice::from_ref(signer.facts()), new_signer),
                ),
                ("tls.key".to_owned(), show_key(signer.key(), new_signer)),
                ("ca.crt".to_owned(), show_certs(&bundle_facts, new_root)),
            ]);
            let conflict = matches!(signing_slot, Slot::Conflict(..));
            mgmt.decide(&signing_slot, SIGNING_SECRET, reasons, data, shown);
            if conflict {
                return Ok(None);
            }

            // Server certificate.
            plan_server_issued(
                input,
                obs,
                mgmt,
                &signer,
                &bundle,
                &bundle_facts,
                new_signer,
                new_root,
            )?;
            let token = plan_management_token(input, obs, mgmt);
            Ok(Some(Trust {
                bundle,
                bundle_facts,
                new_root,
                signer: Some(signer),
                token,
            }))
        }
        CaMode::Gloo => {
            // Inputs written by the management server; read, never written.
            let mut read_input = |name: &str, needed: bool| -> Option<&SecretObject> {
                match obs.secrets.get(name) {
                    Some(secret) => {
                        mgmt.push_noop(
                            secret,
                            "read-only input: written by the management server (`gloo` mode)",
                        );
                        Some(secret)
                    }
                    None if needed => {
                        mgmt.push_error(name, None, vec!["missing: in `gloo` mode the management server creates it at install; install or upgrade the management server first".to_owned()], BTreeMap::new());
                        None
                    }
                    None => None,
                }
            };
            let root = read_input(ROOT_SECRET, true);
            let needs_signer = config.client_certs.mode == ClientCertMode::Preprovisioned;
            let signing = read_input(SIGNING_SECRET, needs_signer);
            let token_secret = if config.identity_token.enabled {
                read_input(TOKEN_SECRET, true)
            } else {
                None
            };
            let Some((bundle, bundle_facts)) = root
                .and_then(|r| r.get("ca.crt"))
                .and_then(|v| canonical_bundle(v.expose()))
            else {
                if root.is_some() {
                    mgmt.push_error(
                        ROOT_SECRET,
                        root.map(|r| r.version.clone()),
                        vec!["`ca.crt` is missing or unreadable".to_owned()],
                        BTreeMap::new(),
                    );
                }
                return Ok(None);
            };
            let signer = match signing {
                Some(s) => match existing_ca(s, "tls.crt") {
                    Ok(issuer) => Some(issuer),
                    Err(why) if needs_signer => {
                        mgmt.push_error(
                            SIGNING_SECRET,
                            Some(s.version.clone()),
                            vec![why],
                            BTreeMap::new(),
                        );
                        return Ok(None);
                    }
                    Err(_) => None,
                },
                None => None,
            };
            let token = match token_secret.map(|s| s.get("token")) {
                Some(Some(token)) if !token.is_empty() => Some(token.clone()),
                Some(_) => {
                    mgmt.push_error(
                        TOKEN_SECRET,
                        token_secret.map(|s| s.version.clone()),
                        vec!["has no `token` data key".to_owned()],
                        BTreeMap::new(),
                    );
                    return Ok(None);
                }
                None => None,
            };
            Ok(Some(Trust {
                bundle,
                bundle_facts,
                new_root: false,
                signer,
                token,
            }))
        }
        CaMode::External => {
            let Some((bundle, bundle_facts)) = configured_root(input, mgmt) else {
                return Ok(None);
            };
            // Server secret copied from the sources.
            let slot = mgmt.slot(obs, SERVER_SECRET);
            if let (Some(cert), Some(key)) =
                (&input.material.server_cert, &input.material.server_key)
            {
                let Some((chain, chain_facts)) = canonical_bundle(cert.expose()) else {
                    mgmt.push_error(
                        SERVER_SECRET,
                        None,
                        vec!["the server certificate source holds no certificate".to_owned()],
                        BTreeMap::new(),
                    );
                    return Ok(None);
                };
                let Ok(private) = PrivateKey::from_pem(key) else {
                    mgmt.push_error(
                        SERVER_SECRET,
                        None,
                        vec!["the server key source is unreadable".to_owned()],
                        BTreeMap::new(),
                    );
                    return Ok(None);
                };
                let mut reasons = Vec::new();
                if let Some(existing) = slot.usable() {
                    copied_reasons(existing, &chain_facts, &private, &mut reasons);
                    bundle_reason(existing, &bundle_facts, &mut reasons);
                }
                let (data, shown) = tls_data(chain, &private, false, &bundle, &bundle_facts, false);
                mgmt.decide(&slot, SERVER_SECRET, reasons, data, shown);
            }
            let token = plan_management_token(input, obs, mgmt);
            Ok(Some(Trust {
                bundle,
                bundle_facts,
                new_root: false,
                signer: None,
                token,
            }))
        }
    }
}

/// Why a certificate of `validity` issued now by `issuer` would outlive it,
/// if it would: a per-Secret error, so the rest of the fleet is still planned.
fn outlives(issuer: &Issuer, validity: Duration, now: OffsetDateTime) -> Option<String> {
    let issuer_end = issuer.facts().not_after;
    (now + validity.to_time() > issuer_end).then(|| {
        format!(
            "a new certificate valid for {validity} would outlive its issuer `{}`, which expires at {}: rotate the issuer or shorten the validity",
            issuer.facts().subject,
            rfc3339(issuer_end)
        )
    })
}

/// The root bundle the user configured (`custom`, `external`), canonical; an
/// error on mgmt when the source holds no certificate.
fn configured_root(
    input: &PlanInput<'_>,
    mgmt: &mut Cluster<'_>,
) -> Option<(Vec<u8>, Vec<CertFacts>)> {
    let root = input
        .material
        .root_cert
        .as_ref()
        .and_then(|pem| canonical_bundle(pem.expose()));
    if root.is_none() {
        mgmt.push_error(
            ROOT_SECRET,
            None,
            vec!["the root certificate source holds no certificate".to_owned()],
            BTreeMap::new(),
        );
    }
    root
}

/// Why an existing Secret's `ca.crt` must change.
fn bundle_reason(existing: &SecretObject, bundle_facts: &[CertFacts], reasons: &mut Vec<String>) {
    match existing
        .get("ca.crt")
        .and_then(|v| canonical_bundle(v.expose()))
    {
        Some((_, facts)) if fingerprints(&facts) == fingerprints(bundle_facts) => {}
        Some(_) => reasons.push("`ca.crt` differs from the root bundle".to_owned()),
        None => reasons.push("`ca.crt` is missing or unreadable".to_owned()),
    }
}

/// Why an existing Secret differs from material copied from a source.
fn copied_reasons(
    existing: &SecretObject,
    chain: &[CertFacts],
    key: &PrivateKey,
    reasons: &mut Vec<String>,
) {
    match existing
        .get("tls.crt")
        .and_then(|v| canonical_bundle(v.expose()))
    {
        Some((_, facts)) if fingerprints(&facts) == fingerprints(chain) => {}
        Some(_) => reasons.push("`tls.crt` differs from the configured source".to_owned()),
        None => reasons.push("`tls.crt` is missing or unreadable".to_owned()),
    }
    match existing
        .get("tls.key")
        .and_then(|k| PrivateKey::from_pem(k).ok())
    {
        Some(k) if k.facts() == key.facts() => {}
        _ => reasons.push("`tls.key` differs from the configured source".to_owned()),
    }
}

/// Checks an existing leaf Secret against the current signer; `Err` reasons mean reissue.
fn leaf_problems(
    existing: &SecretObject,
    signer: &Issuer,
    bundle: &[u8],
    usage: Usage,
    expected_sans: &[String],
    renew_before: Duration,
    now: OffsetDateTime,
) -> Vec<String> {
    let mut reasons = Vec::new();
    let Some(chain) = existing.get("tls.crt") else {
        return vec!["`tls.crt` is missing".to_owned()];
    };
    let facts = match pki::inspect_bundle(chain.expose()) {
        Ok(facts) if !facts.is_empty() => facts,
        _ => return vec!["`tls.crt` is unreadable".to_owned()],
    };
    let leaf = &facts[0];
    match existing.get("tls.key").map(PrivateKey::from_pem) {
        Some(Ok(key)) if key.facts().spki_sha256 == leaf.spki_sha256 => {}
        Some(Ok(_)) => reasons.push("`tls.key` does not match `tls.crt`".to_owned()),
        Some(Err(_)) => reasons.push("`tls.key` is unreadable".to_owned()),
        None => reasons.push("`tls.key` is missing".to_owned()),
    }
    let mut have: Vec<String> = leaf
        .dns_names
        .iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    let mut want: Vec<String> = expected_sans
        .iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    have.sort();
    want.sort();
    if have != want {
        reasons.push(format!(
            "SAN is {}, want {}",
            if have.is_empty() {
                "empty".to_owned()
            } else {
                have.join(", ")
            },
            want.join(", ")
        ));
    }
    let leaf_pem = pki::inspect::certificate_pem(
        &pki::inspect::certificate_ders(chain.expose())
            .ok()
            .and_then(|d| d.into_iter().next())
            .unwrap_or_default(),
    );
    let mut with_signer = leaf_pem.into_bytes();
    with_signer.extend_from_slice(signer.cert_pem().as_bytes());
    let dns = expected_sans.first().map(String::as_str);
    if let Err(err) = pki::verify_chain(&with_signer, bundle, usage, dns, now) {
        if leaf.issuer != signer.facts().subject
            || leaf.authority_key_id != signer.facts().subject_key_id
        {
            reasons.push("not signed by the current intermediate".to_owned());
        } else if have == want {
            reasons.push(format!(
                "does not verify: {}",
                crate::error::error_chain(&err)
            ));
        }
    }
    if facts.get(1).map(|f| &f.sha256_fingerprint) != Some(&signer.facts().sha256_fingerprint) {
        reasons.push("`tls.crt` does not carry the current intermediate after the leaf".to_owned());
    }
    if let Some(why) = pki::renewal_due(leaf, renew_before, now) {
        reasons.push(why);
    }
    reasons
}

#[allow(clippy::too_many_arguments)] // one call site; a parameter struct would only rename them
fn plan_server_issued(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    mgmt: &mut Cluster<'_>,
    signer: &Issuer,
    bundle: &[u8],
    bundle_facts: &[CertFacts],
    new_signer: bool,
    new_root: bool,
) -> Result<(), PlanError> {
    let config = input.config;
    let slot = mgmt.slot(obs, SERVER_SECRET);
    let existing = slot.usable();
    let mut reasons = existing
        .map(|s| {
            leaf_problems(
                s,
                signer,
                bundle,
                Usage::Server,
                &config.server.dns_names,
                config.server.renew_before,
                input.now,
            )
        })
        .unwrap_or_default();
    if new_signer && existing.is_some() && reasons.is_empty() {
        reasons.push("not signed by the current intermediate".to_owned());
    }
    let reissue = existing.is_none() || !reasons.is_empty();
    if let (Some(existing), false) = (existing, reissue) {
        bundle_reason(existing, bundle_facts, &mut reasons);
    }
    let (chain, key, new) = if reissue {
        if let Some(why) = outlives(signer, config.server.validity, input.now) {
            mgmt.push_error(SERVER_SECRET, None, vec![why], BTreeMap::new());
            return Ok(());
        }
        let issued = pki::issue_server(
            &ServerRequest {
                authority: config.server.authority.clone(),
                dns_names: config.server.dns_names.clone(),
                validity: config.server.validity,
                key: config.server.key,
            },
            signer,
            input.random.keys,
            input.now,
        )
        .map_err(issue_err("the server certificate"))?;
        let mut chain = issued.cert_pem.clone().into_bytes();
        chain.extend_from_slice(signer.cert_pem().as_bytes());
        (chain, issued.key, true)
    } else {
        let s = existing.expect("reused implies existing");
        let chain = s
            .get("tls.crt")
            .map(|v| v.expose().to_vec())
            .unwrap_or_default();
        let key = s.get("tls.key").and_then(|k| PrivateKey::from_pem(k).ok());
        match key {
            Some(key) => (chain, key, false),
            None => return Ok(()),
        }
    };
    let (data, shown) = tls_data(chain, &key, new, bundle, bundle_facts, new_root);
    mgmt.decide(&slot, SERVER_SECRET, reasons, data, shown);
    Ok(())
}

fn plan_management_token(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    mgmt: &mut Cluster<'_>,
) -> Option<SecretBytes> {
    if !input.config.identity_token.enabled {
        return None;
    }
    let slot = mgmt.slot(obs, TOKEN_SECRET);
    let existing = slot
        .usable()
        .and_then(|s| s.get("token"))
        .filter(|t| !t.is_empty())
        .cloned();
    let mut reasons = Vec::new();
    let (token, new) = match (&input.material.token, existing) {
        (Some(wanted), Some(current)) => {
            if !wanted.ct_eq(&current) {
                reasons.push("token differs from the configured source".to_owned());
            }
            (wanted.clone(), false)
        }
        (Some(wanted), None) => {
            if slot.usable().is_some() {
                reasons.push("`token` is missing or empty".to_owned());
            }
            (wanted.clone(), false)
        }
        (None, Some(current)) => (current, false),
        (None, None) => {
            if slot.usable().is_some() {
                reasons.push("`token` is missing or empty: a new token is generated".to_owned());
            }
            ((input.random.token)(), true)
        }
    };
    let shown = BTreeMap::from([("token".to_owned(), show_token(&token, new))]);
    let data = BTreeMap::from([("token".to_owned(), token.clone())]);
    let conflict = matches!(slot, Slot::Conflict(..));
    mgmt.decide(&slot, TOKEN_SECRET, reasons, data, shown);
    if conflict { None } else { Some(token) }
}

fn plan_workload(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    trust: &Trust,
    cluster: &mut Cluster<'_>,
) -> Result<(), PlanError> {
    let config = input.config;
    let name = cluster.name.clone();

    // A workload is never written over a CA key: its storage may be mgmt's
    // reached through another path, and a workload-shaped root Secret
    // would drop the root key.
    if let Some(holder) = [ROOT_SECRET, SIGNING_SECRET, SERVER_SECRET]
        .into_iter()
        .find(|n| {
            obs.secrets
                .get(*n)
                .is_some_and(|s| s.get("tls.key").is_some())
        })
    {
        cluster.error = Some(format!(
            "refused: `{holder}` here holds a private key (`tls.key`), as only the management cluster's does; relayctl never writes a workload's Secrets over a CA key: check that this cluster's connection does not reach the management cluster (if it really is a workload given a key by hand, an insecure setup, remove `tls.key` from it yourself)"
        ));
        return Ok(());
    }

    // Root bundle.
    let slot = cluster.slot(obs, ROOT_SECRET);
    let mut reasons = Vec::new();
    if let Some(existing) = slot.usable() {
        match existing
            .get("ca.crt")
            .and_then(|v| canonical_bundle(v.expose()))
        {
            Some((_, facts)) if fingerprints(&facts) == fingerprints(&trust.bundle_facts) => {}
            Some(_) => reasons.push("root bundle differs from mgmt".to_owned()),
            None => reasons.push("`ca.crt` is missing or unreadable".to_owned()),
        }
    }
    cluster.decide(
        &slot,
        ROOT_SECRET,
        reasons,
        BTreeMap::from([("ca.crt".to_owned(), SecretBytes::new(trust.bundle.clone()))]),
        BTreeMap::from([(
            "ca.crt".to_owned(),
            show_certs(&trust.bundle_facts, trust.new_root),
        )]),
    );

    // Token.
    if let Some(token) = &trust.token {
        let slot = cluster.slot(obs, TOKEN_SECRET);
        let mut reasons = Vec::new();
        if let Some(existing) = slot.usable() {
            match existing.get("token") {
                Some(current) if current.ct_eq(token) => {}
                Some(_) => reasons.push("token differs from mgmt".to_owned()),
                None => reasons.push("`token` is missing".to_owned()),
            }
        }
        let new = cluster_token_is_new(input, token);
        cluster.decide(
            &slot,
            TOKEN_SECRET,
            reasons,
            BTreeMap::from([("token".to_owned(), token.clone())]),
            BTreeMap::from([("token".to_owned(), show_token(token, new))]),
        );
    }

    // Client certificate.
    match config.client_certs.mode {
        ClientCertMode::Token => {} // agent-owned: never written, never pruned
        ClientCertMode::Preprovisioned => {
            let Some(signer) = &trust.signer else {
                cluster.push_error(
                    CLIENT_SECRET,
                    None,
                    vec!["no signing key to issue client certificates".to_owned()],
                    BTreeMap::new(),
                );
                return Ok(());
            };
            let slot = cluster.slot(obs, CLIENT_SECRET);
            let sans = vec![name.to_string()];
            let existing = slot.usable();
            let mut reasons = existing
                .map(|s| {
                    leaf_problems(
                        s,
                        signer,
                        &trust.bundle,
                        Usage::Client,
                        &sans,
                        config.client_certs.renew_before,
                        input.now,
                    )
                })
                .unwrap_or_default();
            let reissue = existing.is_none() || !reasons.is_empty();
            if let (Some(s), false) = (existing, reissue) {
                bundle_reason(s, &trust.bundle_facts, &mut reasons);
            }
            let (chain, key, new) = if reissue {
                if let Some(why) = outlives(signer, config.client_certs.validity, input.now) {
                    cluster.push_error(CLIENT_SECRET, None, vec![why], BTreeMap::new());
                    return Ok(());
                }
                let issued = pki::issue_client(
                    &ClientRequest {
                        cluster_name: name.clone(),
                        validity: config.client_certs.validity,
                        key: config.client_certs.key,
                    },
                    signer,
                    input.random.keys,
                    input.now,
                )
                .map_err(issue_err("a client certificate"))?;
                let mut chain = issued.cert_pem.clone().into_bytes();
                chain.extend_from_slice(signer.cert_pem().as_bytes());
                (chain, issued.key, true)
            } else {
                let s = existing.expect("reused implies existing");
                let Some(key) = s.get("tls.key").and_then(|k| PrivateKey::from_pem(k).ok()) else {
                    return Ok(());
                };
                (
                    s.get("tls.crt")
                        .map(|c| c.expose().to_vec())
                        .unwrap_or_default(),
                    key,
                    false,
                )
            };
            let (data, shown) = tls_data(
                chain,
                &key,
                new,
                &trust.bundle,
                &trust.bundle_facts,
                trust.new_root,
            );
            cluster.decide(&slot, CLIENT_SECRET, reasons, data, shown);
        }
        ClientCertMode::External => {
            if let Some((cert, key)) = input.material.clients.get(&name) {
                let slot = cluster.slot(obs, CLIENT_SECRET);
                let (Some((chain, chain_facts)), Ok(private)) =
                    (canonical_bundle(cert.expose()), PrivateKey::from_pem(key))
                else {
                    cluster.push_error(
                        CLIENT_SECRET,
                        None,
                        vec!["the client certificate or key source is unreadable".to_owned()],
                        BTreeMap::new(),
                    );
                    return Ok(());
                };
                let mut reasons = Vec::new();
                if let Some(existing) = slot.usable() {
                    copied_reasons(existing, &chain_facts, &private, &mut reasons);
                    bundle_reason(existing, &trust.bundle_facts, &mut reasons);
                }
                let (data, shown) = tls_data(
                    chain,
                    &private,
                    false,
                    &trust.bundle,
                    &trust.bundle_facts,
                    trust.new_root,
                );
                cluster.decide(&slot, CLIENT_SECRET, reasons, data, shown);
            } else {
                // No source: the user's PKI writes it; verify only, never write.
                match obs.secrets.get(CLIENT_SECRET) {
                    None => cluster.push_error(CLIENT_SECRET, None, vec!["missing: `clientCerts.mode: external` and no `clientCert` source; the agent cannot connect until your PKI writes it".to_owned()], BTreeMap::new()),
                    Some(existing) => {
                        let mut problems = Vec::new();
                        let chain = existing.get("tls.crt").map(|c| c.expose().to_vec()).unwrap_or_default();
                        if let Err(err) = pki::verify_chain(&chain, &trust.bundle, Usage::Client, Some(name.as_str()), input.now) {
                            problems.push(format!("does not verify against the root bundle: {}", crate::error::error_chain(&err)));
                        }
                        let facts = pki::inspect_bundle(&chain).unwrap_or_default();
                        match (facts.first(), existing.get("tls.key").and_then(|k| PrivateKey::from_pem(k).ok())) {
                            (Some(leaf), Some(key)) if key.facts().spki_sha256 == leaf.spki_sha256 => {
                                if let Some(why) = pki::renewal_due(leaf, config.client_certs.renew_before, input.now) {
                                    problems.push(format!("{why}; renew it in your PKI"));
                                }
                            }
                            _ => problems.push("`tls.key` is missing or does not match `tls.crt`".to_owned()),
                        }
                        if problems.is_empty() {
                            cluster.push_noop(existing, "verified (written by your PKI)");
                        } else {
                            cluster.push_error(CLIENT_SECRET, Some(existing.version.clone()), problems, show_observed(existing));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether the token shown on a workload is the one generated by this run.
fn cluster_token_is_new(input: &PlanInput<'_>, token: &SecretBytes) -> bool {
    let mgmt = input.observed.clusters.get(&input.config.management.name);
    let existing = mgmt
        .and_then(|m| m.as_ref().ok())
        .and_then(|m| m.secrets.get(TOKEN_SECRET))
        .and_then(|s| s.get("token"));
    input.material.token.is_none() && existing.is_none_or(|t| !t.ct_eq(token))
}

/// The inventory entry of one workload cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InventoryEntry {
    /// Cluster name.
    pub name: ClusterName,
    /// How relayctl reached it.
    pub connection: Connection,
}

/// Reads the inventory Secret of `instance` from an observed mgmt cluster.
pub fn read_inventory(obs: &ClusterObservation, instance: &str) -> Vec<InventoryEntry> {
    obs.secrets
        .get(&inventory_secret(instance))
        .filter(|s| s.ownership(instance) == Ownership::Ours)
        .and_then(|s| s.get(INVENTORY_KEY))
        .and_then(|v| serde_json::from_slice(v.expose()).ok())
        .unwrap_or_default()
}

/// The inventory on mgmt. It is written last, once every orphan was
/// pruned, so that an orphan whose prune failed is still listed. But a
/// cluster about to be written for the first time is added *before* (at
/// the end of mgmt's writes, ahead of every workload): a crash in between
/// must never leave a cluster written and unlisted, which `--prune` could
/// then never find.
fn plan_inventory(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    kept_orphans: &BTreeMap<ClusterName, Connection>,
    written: &BTreeSet<&ClusterName>,
    mgmt: &mut Cluster<'_>,
) {
    let instance = input.config.instance.as_str();
    let name = inventory_secret(instance);
    let mut entries: Vec<InventoryEntry> = input
        .config
        .workloads
        .iter()
        .map(|w| InventoryEntry {
            name: w.cluster.name.clone(),
            connection: w.cluster.connection.clone(),
        })
        .chain(
            kept_orphans
                .iter()
                .map(|(name, connection)| InventoryEntry {
                    name: name.clone(),
                    connection: connection.clone(),
                }),
        )
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let current = read_inventory(obs, instance);
    let slot = mgmt.slot(obs, &name);
    let mut reasons = Vec::new();
    if slot.usable().is_some() && current != entries {
        let before: BTreeSet<&str> = current.iter().map(|e| e.name.as_str()).collect();
        let after: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let added: Vec<&str> = after.difference(&before).copied().collect();
        let removed: Vec<&str> = before.difference(&after).copied().collect();
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("+{}", added.join(", +")));
        }
        if !removed.is_empty() {
            parts.push(format!("-{}", removed.join(", -")));
        }
        if parts.is_empty() {
            parts.push("connections changed".to_owned());
        }
        reasons.push(format!("inventory: {}", parts.join(" ")));
    }
    let unlisted = written
        .iter()
        .any(|name| !current.iter().any(|e| &e.name == *name));
    let ahead = unlisted.then(|| {
        let mut ahead: Vec<InventoryEntry> = current
            .iter()
            .filter(|e| !entries.iter().any(|n| n.name == e.name))
            .cloned()
            .chain(entries.iter().cloned())
            .collect();
        ahead.sort_by(|a, b| a.name.cmp(&b.name));
        ahead
    });
    let text = serde_json::to_string_pretty(&entries).unwrap_or_default();
    let names = entries
        .iter()
        .map(|e| e.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    mgmt.decide(
        &slot,
        &name,
        reasons,
        BTreeMap::from([(INVENTORY_KEY.to_owned(), SecretBytes::from(text))]),
        BTreeMap::from([(
            INVENTORY_KEY.to_owned(),
            Value::Text {
                text: format!(
                    "workload clusters: {}",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names
                    }
                ),
            },
        )]),
    );
    // `decide` queued the final write last; place it.
    let Some(last) = mgmt.writes.pop_if(|w| w.object.name == name) else {
        return;
    };
    match ahead {
        Some(ahead) if ahead != entries => {
            let text = serde_json::to_string_pretty(&ahead).unwrap_or_default();
            let mut early = last.clone();
            early
                .object
                .data
                .insert(INVENTORY_KEY.to_owned(), SecretBytes::from(text));
            mgmt.writes.push(early);
            mgmt.last.push(Write {
                chained: true,
                ..last
            });
        }
        Some(_) => mgmt.writes.push(last),
        None => mgmt.last.push(last),
    }
}
