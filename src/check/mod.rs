//! `relayctl check`: is the relay trust of the fleet healthy right now?
//!
//! `plan` answers "what would relayctl change"; `check` answers "would the
//! agents connect, and for how long". It looks at what the clusters hold, not
//! at the manifests' intent: every workload's root bundle and token against
//! the management cluster's, every certificate's chain, names, key and expiry
//! tier, and a real mTLS handshake (see [`crate::pki::handshake`]) between the
//! server certificate and each client certificate, configured as the
//! management server and the agent configure themselves.
//!
//! [`check`] is pure: the validated config, the observed fleet and `now` in,
//! a serializable [`Report`] out. Each line is `ok` (√), `warn` (‼) or
//! `fail` (×), with a hint under every ‼ and ×. Secret values never enter a
//! message: tokens are compared by digest in constant time and only their
//! length is shown; keys only as "matches" or not.

pub mod certificates;
pub mod html;
mod lines;
mod management;
mod render;
mod rotation;
#[cfg(test)]
mod tests;
mod workload;

use serde::Serialize;
use time::OffsetDateTime;

pub use self::certificates::{CertRole, HeldCertificate, held_certificates};
pub use self::render::{render_json, render_text, summary_line};
use crate::model::{CaMode, ClientCertMode, TrustConfig};
use crate::observed::Observed;
use crate::pki::inspect::rfc3339;
pub use crate::relay::Role;

/// Version of the JSON form of [`Report`]; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// Root CAs warn when they have less than this left.
pub const ROOT_WARN_DAYS: i64 = 365;
/// Intermediate (signing) CAs warn when they have less than this left.
pub const INTERMEDIATE_WARN_DAYS: i64 = 60;
/// In `token` client mode the agent renews its own certificate once less
/// than this share of its lifetime is left: the product's
/// `clientTlsSecretRotationGracePeriodRatio`, 0.1 by its documentation
/// (36.5 days of its one-year certificates). `check` warns only past it.
pub const AGENT_GRACE_RATIO: f64 = 0.1;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// √: fine.
    Ok,
    /// ‼: works now, needs attention (e.g. expiring, not bootstrapped yet).
    Warn,
    /// ×: broken (the agent would not connect, or soon cannot).
    Fail,
}

impl Status {
    /// `√`, `‼` or `×`.
    pub fn marker(self) -> &'static str {
        match self {
            Self::Ok => "√",
            Self::Warn => "‼",
            Self::Fail => "×",
        }
    }
}

/// Stable identifiers of the checks: what the JSON output's `id` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckId {
    /// `reachable`: the cluster could be read.
    Reachable,
    /// `root-ca`: mgmt's root bundle: readable, CAs, expiry tier.
    RootCa,
    /// `root-ca-key`: mgmt's root key matches its certificate (`managed` mode).
    RootCaKey,
    /// `signing-ca`: the signing CA exists and is readable.
    SigningCa,
    /// `signing-ca-chain`: the signing CA is a CA issued by a root of the bundle.
    SigningCaChain,
    /// `signing-ca-key`: the signing CA's key matches its certificate.
    SigningCaKey,
    /// `signing-ca-expiry`: the signing CA's expiry tier.
    SigningCaExpiry,
    /// `server-cert`: the server certificate exists and is readable.
    ServerCert,
    /// `server-cert-san`: the server certificate covers the authority.
    ServerCertSan,
    /// `server-cert-chain`: the server certificate chains to the root bundle.
    ServerCertChain,
    /// `server-cert-key`: the server certificate's key matches.
    ServerCertKey,
    /// `server-cert-expiry`: the server certificate's renewal.
    ServerCertExpiry,
    /// `server-ca-bundle`: the server's `ca.crt` (which verifies agents) is the root bundle.
    ServerCaBundle,
    /// `token`: the identity token is set (mgmt) or matches mgmt's (workloads).
    Token,
    /// `root-bundle`: a workload's root bundle matches mgmt's.
    RootBundle,
    /// `root-key`: a workload holds no root key.
    RootKey,
    /// `client-cert`: the client certificate exists and is readable.
    ClientCert,
    /// `client-cert-chain`: the client certificate chains to the root bundle.
    ClientCertChain,
    /// `client-cert-san`: the client certificate's SAN is the cluster name.
    ClientCertSan,
    /// `client-cert-key`: the client certificate's key matches.
    ClientCertKey,
    /// `client-cert-expiry`: the client certificate's renewal.
    ClientCertExpiry,
    /// `mtls-handshake`: a real mTLS handshake between the server and the agent.
    MtlsHandshake,
    /// `registration`: the workload is registered with the management server
    /// (a `KubernetesCluster` on mgmt), when relayctl registers clusters.
    Registration,
    /// `rotation-handshakes`: during a CA rotation, old/new server × old/new
    /// client handshakes with this cluster's bundles.
    RotationHandshakes,
    /// `shard`: with `--shards N`, the shard the cluster is placed on
    /// claimed it in its last run (see [`crate::shard::coverage`]).
    Shard,
}

impl CheckId {
    /// Every check id.
    pub const ALL: [Self; 25] = [
        Self::Reachable,
        Self::RootCa,
        Self::RootCaKey,
        Self::SigningCa,
        Self::SigningCaChain,
        Self::SigningCaKey,
        Self::SigningCaExpiry,
        Self::ServerCert,
        Self::ServerCertSan,
        Self::ServerCertChain,
        Self::ServerCertKey,
        Self::ServerCertExpiry,
        Self::ServerCaBundle,
        Self::Token,
        Self::RootBundle,
        Self::RootKey,
        Self::ClientCert,
        Self::ClientCertChain,
        Self::ClientCertSan,
        Self::ClientCertKey,
        Self::ClientCertExpiry,
        Self::MtlsHandshake,
        Self::Registration,
        Self::RotationHandshakes,
        Self::Shard,
    ];

    /// The id as JSON and snapshots spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reachable => "reachable",
            Self::RootCa => "root-ca",
            Self::RootCaKey => "root-ca-key",
            Self::SigningCa => "signing-ca",
            Self::SigningCaChain => "signing-ca-chain",
            Self::SigningCaKey => "signing-ca-key",
            Self::SigningCaExpiry => "signing-ca-expiry",
            Self::ServerCert => "server-cert",
            Self::ServerCertSan => "server-cert-san",
            Self::ServerCertChain => "server-cert-chain",
            Self::ServerCertKey => "server-cert-key",
            Self::ServerCertExpiry => "server-cert-expiry",
            Self::ServerCaBundle => "server-ca-bundle",
            Self::Token => "token",
            Self::RootBundle => "root-bundle",
            Self::RootKey => "root-key",
            Self::ClientCert => "client-cert",
            Self::ClientCertChain => "client-cert-chain",
            Self::ClientCertSan => "client-cert-san",
            Self::ClientCertKey => "client-cert-key",
            Self::ClientCertExpiry => "client-cert-expiry",
            Self::MtlsHandshake => "mtls-handshake",
            Self::Registration => "registration",
            Self::RotationHandshakes => "rotation-handshakes",
            Self::Shard => "shard",
        }
    }
}

impl std::fmt::Display for CheckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CheckId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Stable identifier of the check, e.g. `root-bundle`, `mtls-handshake`.
    pub id: CheckId,
    /// √, ‼ or ×.
    pub status: Status,
    /// What was found.
    pub message: String,
    /// What to do about it; present on `warn` and `fail`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The checks of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    /// Cluster name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its checks, in a fixed order.
    pub checks: Vec<Check>,
    /// The certificates it holds, with validity and renewal (see
    /// [`certificates`]); empty when it could not be read.
    pub certificates: Vec<HeldCertificate>,
}

impl ClusterReport {
    /// The worst status of its checks (√ for a cluster without checks).
    pub fn worst(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Ok)
    }

    /// How the cluster stands: unreachable when it could not be read,
    /// else error on any ×, drift on any ‼, converged otherwise.
    pub fn state(&self) -> crate::status::ClusterState {
        use crate::status::ClusterState;
        if self
            .checks
            .iter()
            .any(|c| c.id == CheckId::Reachable && c.status == Status::Fail)
        {
            return ClusterState::Unreachable;
        }
        match self.worst() {
            Status::Ok => ClusterState::Converged,
            Status::Warn => ClusterState::Drift,
            Status::Fail => ClusterState::Error,
        }
    }
}

/// How many checks ended how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// √
    pub ok: usize,
    /// ‼
    pub warn: usize,
    /// ×
    pub fail: usize,
}

/// The fleet trust report: serializable, no secret in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The `RelayTrust` name.
    pub instance: String,
    /// Namespace of the relay Secrets.
    pub namespace: String,
    /// CA mode.
    pub ca_mode: CaMode,
    /// Client certificate mode.
    pub client_cert_mode: ClientCertMode,
    /// The host name agents dial.
    pub authority: String,
    /// When the checks ran (RFC 3339).
    pub checked_at: String,
    /// Management cluster first, then workloads by name.
    pub clusters: Vec<ClusterReport>,
    /// Counts over every cluster.
    pub summary: Summary,
}

impl Summary {
    /// Counts the checks of `clusters`.
    pub fn of(clusters: &[ClusterReport]) -> Self {
        let mut summary = Self::default();
        for check in clusters.iter().flat_map(|c| &c.checks) {
            match check.status {
                Status::Ok => summary.ok += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
            }
        }
        summary
    }
}

impl Report {
    /// Whether no check failed (warnings do not fail).
    pub fn passed(&self) -> bool {
        self.summary.fail == 0
    }

    /// Adds one line to each cluster named in `lines` (after its other
    /// checks) and counts them in.
    pub fn add_lines(
        &mut self,
        mut lines: std::collections::BTreeMap<crate::model::ClusterName, Check>,
    ) {
        for cluster in &mut self.clusters {
            let line = crate::model::ClusterName::parse(&cluster.name)
                .ok()
                .and_then(|name| lines.remove(&name));
            if let Some(line) = line {
                cluster.checks.push(line);
            }
        }
        self.summary = Summary::of(&self.clusters);
    }
}

/// Checks the fleet. See the module docs.
///
/// `keys` makes the probe certificates of a rotation's handshake matrix
/// (the `rotation` module); nothing else draws on it.
pub fn check(
    config: &TrustConfig,
    observed: &Observed,
    keys: &dyn crate::pki::KeySource,
    now: OffsetDateTime,
) -> Report {
    let mgmt_name = &config.management.name;
    let (mgmt_report, mgmt) =
        management::check_management(config, observed.clusters.get(mgmt_name), now);
    let matrix = rotation::prepare(config, observed.clusters.get(mgmt_name), keys, now);
    let mut clusters = vec![mgmt_report];
    for workload in &config.workloads {
        let name = &workload.cluster.name;
        clusters.push(workload::check_workload(
            config,
            name,
            observed.clusters.get(name),
            &mgmt,
            matrix.as_ref(),
            now,
        ));
    }
    for cluster in &mut clusters {
        let name = crate::model::ClusterName::parse(&cluster.name).ok();
        if let Some(Some(Ok(obs))) = name.map(|n| observed.clusters.get(&n)) {
            cluster.certificates = held_certificates(config, cluster.role, obs);
        }
    }
    let summary = Summary::of(&clusters);
    Report {
        format_version: FORMAT_VERSION,
        instance: config.instance.as_str().to_owned(),
        namespace: config.namespace.as_str().to_owned(),
        ca_mode: config.ca.mode,
        client_cert_mode: config.client_certs.mode,
        authority: config.server.authority.clone(),
        checked_at: rfc3339(now.replace_nanosecond(0).unwrap_or(now)),
        clusters,
        summary,
    }
}
