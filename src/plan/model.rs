//! The plan as data: what will change on which cluster, and why.
//!
//! Everything here is serializable and holds no secret material: certificates
//! appear as their public facts, keys as algorithm and public-key fingerprint,
//! tokens as a digest prefix and length. `plan -o json` prints it, `plan
//! --out` saves it, and `apply FILE` compares a fresh plan against it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{CaMode, ClientCertMode};
pub use crate::relay::Role;

/// Version of the JSON form; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// A whole-fleet plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The `RelayTrust` name.
    pub instance: String,
    /// The relay namespace.
    pub namespace: String,
    /// CA mode.
    pub ca_mode: CaMode,
    /// Client certificate mode.
    pub client_cert_mode: ClientCertMode,
    /// Digest of the validated config.
    pub config_digest: String,
    /// Where the manifests came from: a path, or `<repo>@<commit>`.
    pub source: String,
    /// Management cluster first, then workloads by name, then orphans.
    pub clusters: Vec<ClusterPlan>,
    /// Counts over the fleet.
    pub summary: Summary,
    /// The CA: where it differs from the config, and its rotation.
    #[serde(default, skip_serializing_if = "CaStatus::is_empty")]
    pub ca: CaStatus,
}

/// The CA's state beside the per-Secret changes: what the clusters hold
/// that the config says otherwise, and the rotation under way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaStatus {
    /// Where the CA in the clusters differs from the config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<CaDrift>,
    /// The rotation under way, or starting or ending with this apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
}

impl CaStatus {
    /// Nothing to say.
    pub fn is_empty(&self) -> bool {
        self.drift.is_empty() && self.rotation.is_none()
    }
}

/// One difference between the CA the clusters hold and the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaDrift {
    /// `root` or `intermediate`.
    pub ca: String,
    /// The config field, e.g. `spec.ca.root.key`.
    pub field: String,
    /// What the clusters hold.
    pub observed: String,
    /// What the config says.
    pub configured: String,
    /// What relayctl does about it.
    pub action: String,
}

/// A CA rotation as this plan sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// Its id.
    pub id: String,
    /// `root` or `intermediate`.
    pub kind: String,
    /// Why it started.
    pub trigger: String,
    /// The phase this plan is in (`trust-both`, `switch-signer`, `reissue`, `drop-old`).
    pub phase: String,
    /// 1-based number of the phase.
    pub step: usize,
    /// Number of phases.
    pub steps: usize,
    /// When the phase began (RFC 3339); this apply, when it begins now.
    pub phase_started: String,
    /// What this apply does for the rotation.
    pub this_apply: String,
    /// The gate before the next phase (none after the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// Held by a rollback until `apply --resume`.
    #[serde(default)]
    pub held: bool,
    /// This apply enters the phase (starts, advances, rolls back or ends
    /// the rotation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub entered: bool,
}

/// What must hold before the next phase starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// The next phase.
    pub next: String,
    /// Whether it holds now (then the next apply starts the next phase).
    pub open: bool,
    /// Conditions not met yet, for people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
    /// Clusters that block it, with why (the first 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<Blocker>,
    /// How many clusters block it in all.
    pub blocked_clusters: usize,
    /// Certificates that still chain only to the old root (or, for an
    /// intermediate rotation, are signed by the old intermediate).
    pub old_certificates: usize,
}

/// A cluster that blocks a gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blocker {
    /// The cluster.
    pub cluster: String,
    /// Why.
    pub reason: String,
}

/// What happens on one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPlan {
    /// Cluster name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Why the cluster cannot be planned (unreachable, blocked), if so.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Per Secret, in apply order.
    pub changes: Vec<Change>,
}

/// What happens to one Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The action.
    pub action: Action,
    /// Why, for humans ("missing", "token differs from mgmt", ...).
    pub reasons: Vec<String>,
    /// Observed version; `None` when the Secret does not exist.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub observed_version: Option<String>,
    /// What each data key will hold (or holds, for no-ops), by key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub data: BTreeMap<String, Value>,
}

/// The action on one Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Write a Secret that does not exist.
    Create,
    /// Rewrite an existing Secret.
    Update,
    /// Delete an orphaned Secret (pruning).
    Delete,
    /// Nothing to do.
    NoOp,
    /// Exists but is not ours; left untouched (use `--adopt`).
    Conflict,
    /// Cannot be planned or is invalid and relayctl may not fix it.
    Error,
}

impl Action {
    /// The word for the action, as JSON spells it (`create`, `no-op`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::NoOp => "no-op",
            Self::Conflict => "conflict",
            Self::Error => "error",
        }
    }

    /// Whether the action writes.
    pub fn writes(self) -> bool {
        matches!(self, Self::Create | Self::Update | Self::Delete)
    }

    /// The one-character marker of the text output.
    pub fn marker(self) -> &'static str {
        match self {
            Self::Create => "+",
            Self::Update => "~",
            Self::Delete => "-",
            Self::NoOp => "=",
            Self::Conflict => "!",
            Self::Error => "×",
        }
    }
}

/// A data value as it may be shown: never the value itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "kind"
)]
pub enum Value {
    /// One certificate or a chain/bundle, first certificate first.
    Certificates {
        /// The certificates.
        certificates: Vec<CertSummary>,
        /// Issued by this run (facts known after apply are omitted).
        #[serde(default)]
        new: bool,
    },
    /// A private key.
    PrivateKey {
        /// Algorithm, e.g. `ecdsa-p256`.
        algorithm: String,
        /// SHA-256 of the public key (SPKI), hex; omitted for keys generated at apply.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        public_key_sha256: Option<String>,
        /// Generated by this run.
        #[serde(default)]
        new: bool,
    },
    /// An opaque token.
    Token {
        /// `sha256:` and a digest prefix; omitted for tokens generated at apply.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        digest: Option<String>,
        /// Length in bytes.
        length: usize,
        /// Generated by this run.
        #[serde(default)]
        new: bool,
    },
    /// Non-secret bookkeeping (the cluster inventory).
    Text {
        /// The text.
        text: String,
    },
}

/// Public facts of one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertSummary {
    /// Subject DN.
    pub subject: String,
    /// DNS SANs.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub dns_names: Vec<String>,
    /// Issuer DN.
    pub issuer: String,
    /// Whether it is a CA.
    pub is_ca: bool,
    /// notAfter (RFC 3339) for existing certificates; validity for new ones.
    pub not_after: String,
    /// Serial (hex); omitted for new certificates.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub serial: Option<String>,
    /// SHA-256 fingerprint; omitted for new certificates.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
}

/// Counts over the fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Secrets to create.
    pub create: usize,
    /// Secrets to update.
    pub update: usize,
    /// Secrets to delete.
    pub delete: usize,
    /// Secrets already right.
    pub no_op: usize,
    /// Secrets left untouched because relayctl does not own them.
    pub conflict: usize,
    /// Secrets or clusters that cannot be planned.
    pub error: usize,
}

impl Summary {
    /// Counts the changes of `clusters`.
    pub fn of(clusters: &[ClusterPlan]) -> Self {
        let mut s = Self::default();
        for cluster in clusters {
            if cluster.error.is_some() {
                s.error += 1;
            }
            for change in &cluster.changes {
                match change.action {
                    Action::Create => s.create += 1,
                    Action::Update => s.update += 1,
                    Action::Delete => s.delete += 1,
                    Action::NoOp => s.no_op += 1,
                    Action::Conflict => s.conflict += 1,
                    Action::Error => s.error += 1,
                }
            }
        }
        s
    }

    /// Whether anything would be written.
    pub fn has_changes(&self) -> bool {
        self.create + self.update + self.delete > 0
    }

    /// Whether the plan cannot be applied cleanly.
    pub fn has_errors(&self) -> bool {
        self.conflict + self.error > 0
    }
}

impl Plan {
    /// A token-mode plan of instance `prod` in `gloo-mesh` made of
    /// `clusters`, for tests of what reads plans.
    #[cfg(test)]
    pub(crate) fn of_clusters(clusters: Vec<ClusterPlan>) -> Self {
        Self {
            format_version: 1,
            instance: "prod".into(),
            namespace: "gloo-mesh".into(),
            ca_mode: crate::model::CaMode::Managed,
            client_cert_mode: crate::model::ClientCertMode::Token,
            config_digest: "d".into(),
            source: "s".into(),
            summary: Summary::of(&clusters),
            ca: Default::default(),
            clusters,
        }
    }

    /// The exit status `--detailed-exitcode` asks for: error > changes >
    /// blocked on a rotation gate > none.
    pub fn detailed_status(&self) -> DetailedStatus {
        if self.summary.has_errors() {
            DetailedStatus::Error
        } else if self.summary.has_changes() {
            DetailedStatus::Changes
        } else if self
            .ca
            .rotation
            .as_ref()
            .and_then(|r| r.gate.as_ref())
            .is_some_and(|g| !g.open)
        {
            DetailedStatus::Blocked
        } else {
            DetailedStatus::NoChanges
        }
    }
}

/// Rolled-up outcome of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailedStatus {
    /// Nothing to do.
    NoChanges,
    /// Something to write.
    Changes,
    /// Nothing to write, but a rotation waits on its gate (soak time,
    /// clusters that have not caught up, agents to restart).
    Blocked,
    /// A conflict, an unreachable cluster or invalid state.
    Error,
}
