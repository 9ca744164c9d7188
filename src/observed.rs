//! What relayctl saw on the clusters: plain data, no fetching.
//!
//! Backends fill these in; the planner reads them. A Secret's bytes are held
//! in [`SecretBytes`] (every data value, not only keys: a `ca.crt` is public
//! but a `tls.key` is not, and treating all alike means none can leak).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::ClusterName;
use crate::secret::SecretBytes;

/// The small maps an observation is made of (a Secret's labels, annotations
/// and data, a cluster's Secrets): a sorted vector, which holds a handful of
/// entries in a fraction of a B-tree node's memory. A fleet holds four of
/// them per Secret, three Secrets per cluster, while it plans.
///
/// Serialize one with [`as_map`]: litemap writes an *empty* map as `[]` to
/// JSON and YAML (it cannot tell the key type from no entries), which an
/// apiserver refuses for `metadata.labels`.
pub type SmallMap<K, V> = litemap::LiteMap<K, V>;

/// `#[serde(serialize_with = "as_map")]` for a [`SmallMap`]: always a map,
/// `{}` when empty.
pub fn as_map<K: Serialize, V: Serialize, S: serde::Serializer>(
    map: &SmallMap<K, V>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.iter())
}

/// Label every Secret relayctl writes carries.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "relayctl";
/// Label naming the `RelayTrust` instance that owns a Secret.
pub const LABEL_INSTANCE: &str = "relayctl.dev/instance";
/// Annotation: `<repo>@<commit>` or the manifest path that last wrote the Secret.
pub const ANNOTATION_SOURCE: &str = "relayctl.dev/source";
/// Annotation: digest of the validated config that last wrote the Secret.
pub const ANNOTATION_CONFIG_DIGEST: &str = "relayctl.dev/config-digest";
/// Annotation: SHA-256 fingerprint of the certificate in `tls.crt` (or `ca.crt`).
pub const ANNOTATION_FINGERPRINT: &str = "relayctl.dev/cert-sha256";
/// Annotation: notAfter of that certificate (RFC 3339).
pub const ANNOTATION_NOT_AFTER: &str = "relayctl.dev/cert-not-after";
/// Annotation on mgmt's token Secret: the generation of the token it holds
/// (`spec.identityToken.generation`; absent means 1).
pub const ANNOTATION_TOKEN_GENERATION: &str = "relayctl.dev/token-generation";

/// One Kubernetes Secret as observed (or to be written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretObject {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: SmallMap<String, String>,
    /// Annotations.
    pub annotations: SmallMap<String, String>,
    /// Data, decoded from base64.
    pub data: SmallMap<String, SecretBytes>,
    /// The backend's version of the object (Kubernetes `resourceVersion`, or
    /// a content digest for the directory backend); used as a write precondition.
    pub version: String,
}

impl SecretObject {
    /// The value of a data key.
    pub fn get(&self, key: &str) -> Option<&SecretBytes> {
        self.data.get(key)
    }

    /// Who owns the Secret, from its labels.
    pub fn ownership(&self, instance: &str) -> Ownership {
        ownership(&self.labels, instance)
    }
}

fn ownership(labels: &SmallMap<String, String>, instance: &str) -> Ownership {
    match (
        labels.get(LABEL_MANAGED_BY).map(String::as_str),
        labels.get(LABEL_INSTANCE),
    ) {
        (Some(MANAGED_BY), Some(owner)) if owner == instance => Ownership::Ours,
        (Some(MANAGED_BY), Some(owner)) => Ownership::OtherInstance(owner.clone()),
        _ => Ownership::Unowned,
    }
}

/// Whether relayctl may change a Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Labelled for this instance.
    Ours,
    /// Labelled for another relayctl instance.
    OtherInstance(String),
    /// Not written by relayctl.
    Unowned,
}

/// What was seen on one cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterObservation {
    /// Relevant Secrets by name: those labelled for this instance plus the
    /// named relay Secrets, in the relay namespace.
    pub secrets: SmallMap<String, SecretObject>,
    /// Secrets that `secret` material sources name in other namespaces, by
    /// `(namespace, name)`.
    pub inputs: BTreeMap<(String, String), SecretObject>,
    /// What identifies the storage whatever path or context reached it (a
    /// folder's device and inode, the uids of the Secrets seen): two
    /// clusters of a config that share one are the same storage.
    pub identities: std::collections::BTreeSet<String>,
    /// Things seen that need attention but block nothing (a stray file).
    pub warnings: Vec<String>,
    /// The workloads' `KubernetesCluster` registrations in the relay
    /// namespace, by name: observed on mgmt when registration is on (`None`
    /// otherwise), or why they could not be read (a missing CRD).
    pub registrations: Option<Result<BTreeMap<String, Registration>, String>>,
}

/// A `KubernetesCluster` as observed (or to be written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Namespace.
    pub namespace: String,
    /// Name: the workload cluster's.
    pub name: String,
    /// Labels.
    pub labels: SmallMap<String, String>,
    /// `spec.clusterDomain`.
    pub cluster_domain: Option<String>,
    /// The backend's version (a precondition for updates and deletes).
    pub version: String,
}

impl Registration {
    /// Who owns it, from its labels (as for Secrets).
    pub fn ownership(&self, instance: &str) -> Ownership {
        ownership(&self.labels, instance)
    }
}

/// The fleet as observed: per cluster, its Secrets or why it could not be read.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Per cluster.
    pub clusters: BTreeMap<ClusterName, Result<ClusterObservation, String>>,
}

/// The observed version of one object, as recorded in saved plans.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectVersion {
    /// Cluster.
    pub cluster: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Version, or `None` when the object did not exist.
    pub version: Option<String>,
}
