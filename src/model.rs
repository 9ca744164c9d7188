//! Validated domain types: what a manifest means once every rule has passed.
//!
//! Raw manifest types (`config::raw`) mirror the YAML; validation turns them into
//! these. Constructors enforce invariants, so code past validation never has to
//! re-check a cluster name, a duration or a mode combination.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The Kubernetes namespace used when the manifest names none.
pub const DEFAULT_NAMESPACE: &str = "gloo-mesh";
/// The authority agents dial by default (Gloo 2.x); CN and a DNS SAN of the server cert.
pub const DEFAULT_AUTHORITY: &str = "gloo-mesh-mgmt-server.gloo-mesh";

/// A DNS-1123 label: lowercase alphanumerics and `-`, at most 63 characters,
/// starting and ending alphanumeric. Cluster names, namespaces and instance
/// names are all labels, because they end up in Secret labels and cert SANs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsLabel(String);

impl DnsLabel {
    /// Checks `text` against the DNS-1123 label rules; the error says why it fails.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if text.len() > 63 {
            return Err(format!(
                "is {} characters long; at most 63 are allowed",
                text.len()
            ));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(format!(
                "contains `{bad}`; only lowercase letters, digits and `-` are allowed"
            ));
        }
        if text.starts_with('-') || text.ends_with('-') {
            return Err("must start and end with a letter or digit".to_owned());
        }
        Ok(Self(text.to_owned()))
    }

    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DnsLabel {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DnsLabel> for String {
    fn from(value: DnsLabel) -> Self {
        value.0
    }
}

impl fmt::Display for DnsLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cluster's name: the `KubernetesCluster` name, the agent's `common.cluster`
/// and the CN and DNS SAN of its client certificate.
pub type ClusterName = DnsLabel;

/// Checks a DNS name (SAN): dot-separated DNS-1123 labels, at most 253
/// characters, with an optional `*` as the whole leftmost label.
pub fn check_dns_name(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if text.len() > 253 {
        return Err(format!(
            "is {} characters long; at most 253 are allowed",
            text.len()
        ));
    }
    for (index, label) in text.split('.').enumerate() {
        if index == 0 && label == "*" && text.contains('.') {
            continue;
        }
        DnsLabel::parse(label).map_err(|why| format!("label `{label}` {why}"))?;
    }
    Ok(())
}

/// Whether DNS name `pattern` (possibly a `*.` wildcard) matches `host` by the
/// rules TLS clients use: a wildcard covers exactly one leftmost label.
pub fn dns_name_covers(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// A length of time written the Kubernetes/Go way: `8760h`, `90m`, `1h30m`, `45s`.
///
/// Stored in whole seconds (certificates have second precision). Rendered back
/// in the same notation, largest units first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    seconds: u64,
}

impl Duration {
    /// A duration of `seconds` seconds.
    pub const fn from_secs(seconds: u64) -> Self {
        Self { seconds }
    }

    /// A duration of `hours` hours.
    pub const fn from_hours(hours: u64) -> Self {
        Self {
            seconds: hours * 3600,
        }
    }

    /// Whole seconds.
    pub const fn as_secs(self) -> u64 {
        self.seconds
    }

    /// One third, rounded down to the second: the default `renewBefore`.
    pub const fn third(self) -> Self {
        Self {
            seconds: self.seconds / 3,
        }
    }

    /// As a `time::Duration`, for certificate arithmetic.
    pub fn to_time(self) -> time::Duration {
        time::Duration::seconds(i64::try_from(self.seconds).unwrap_or(i64::MAX))
    }
}

impl FromStr for Duration {
    type Err = String;

    /// Parses Go's `time.ParseDuration` notation for non-negative durations:
    /// one or more `<number><unit>` with unit `h`, `m`, `s`, `ms`, `us`/`µs` or
    /// `ns`, decimals allowed (`1.5h`), `0` alone allowed. Sub-second remainders
    /// are rounded down.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "0" {
            return Ok(Self::from_secs(0));
        }
        if text.is_empty() {
            return Err("empty duration".to_owned());
        }
        let mut nanos: u128 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let number = &rest[..number_len];
            rest = &rest[number_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let scale: u128 = match unit {
                "h" => 3_600_000_000_000,
                "m" => 60_000_000_000,
                "s" => 1_000_000_000,
                "ms" => 1_000_000,
                "us" | "µs" => 1_000,
                "ns" => 1,
                "" => return Err(format!("`{text}` has a number without a unit")),
                other => {
                    return Err(format!(
                        "`{text}` has unknown unit `{other}` (days and years are not units)"
                    ));
                }
            };
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            if whole.is_empty() && fraction.is_empty() {
                return Err(format!("`{text}` has a unit without a number"));
            }
            if fraction.contains('.') {
                return Err(format!("`{text}` is not a duration"));
            }
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole
                    .parse()
                    .map_err(|_| format!("`{text}` is too large"))?
            };
            let mut part = whole
                .checked_mul(scale)
                .ok_or_else(|| format!("`{text}` is too large"))?;
            let mut place = scale;
            for digit in fraction.chars().take(18) {
                place /= 10;
                part += u128::from(digit.to_digit(10).unwrap_or(0)) * place;
            }
            nanos = nanos
                .checked_add(part)
                .ok_or_else(|| format!("`{text}` is too large"))?;
        }
        let seconds =
            u64::try_from(nanos / 1_000_000_000).map_err(|_| format!("`{text}` is too large"))?;
        Ok(Self::from_secs(seconds))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = (
            self.seconds / 3600,
            self.seconds % 3600 / 60,
            self.seconds % 60,
        );
        if self.seconds == 0 {
            return f.write_str("0s");
        }
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The key type of a generated key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 (the default: small, fast, universally supported).
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    /// RSA 2048-bit, PKCS#1 v1.5 with SHA-256.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    /// RSA 3072-bit, PKCS#1 v1.5 with SHA-256.
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    /// RSA 4096-bit, PKCS#1 v1.5 with SHA-256 (what the product's own examples use).
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl KeyAlgorithm {
    /// Every supported algorithm, for tests and help text.
    pub const ALL: [Self; 5] = [
        Self::EcdsaP256,
        Self::EcdsaP384,
        Self::Rsa2048,
        Self::Rsa3072,
        Self::Rsa4096,
    ];

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa3072 => "rsa-3072",
            Self::Rsa4096 => "rsa-4096",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who holds the CA keys; maps to the product's relay setup options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CaMode {
    /// relayctl generates root and intermediate and keeps both in the mgmt cluster.
    #[default]
    Managed,
    /// The management server generated its own CA and token; relayctl reads them.
    Gloo,
    /// The user's root (key optional) from a source; intermediate derived or provided.
    Custom,
    /// The user's PKI issues everything; relayctl holds no CA key.
    External,
}

impl CaMode {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Managed => "managed",
            Self::Gloo => "gloo",
            Self::Custom => "custom",
            Self::External => "external",
        }
    }
}

impl fmt::Display for CaMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an agent gets its client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    /// The agent bootstraps with the identity token; the server signs its CSR.
    #[default]
    Token,
    /// relayctl issues `relay-client-tls-secret` before the agent first connects.
    Preprovisioned,
    /// The user's PKI issues it; relayctl copies it from a source or only verifies it.
    External,
}

impl ClientCertMode {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Preprovisioned => "preprovisioned",
            Self::External => "external",
        }
    }
}

impl fmt::Display for ClientCertMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in the manifests a value came from, for messages about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SourceLocation {
    /// The manifest file, as given on the command line or relative to the repository.
    pub file: PathBuf,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_go_notation_parse() {
        for (text, seconds) in [
            ("8760h", 8760 * 3600),
            ("90m", 5400),
            ("1h30m", 5400),
            ("45s", 45),
            ("1.5h", 5400),
            ("0", 0),
            ("1500ms", 1),
            ("2h0m0s", 7200),
        ] {
            assert_eq!(
                text.parse::<Duration>(),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
    }

    #[test]
    fn durations_outside_go_notation_are_rejected_with_the_text() {
        for text in [
            "", "1d", "365 days", "h", "-5m", "1.2.3h", "10", "P1Y", "1H",
        ] {
            let err = text.parse::<Duration>().unwrap_err();
            assert!(
                err.contains(&format!("`{text}`")) || text.is_empty(),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn durations_render_back_in_go_notation() {
        assert_eq!(Duration::from_secs(5400).to_string(), "1h30m");
        assert_eq!(Duration::from_hours(8760).to_string(), "8760h");
        assert_eq!(Duration::from_secs(0).to_string(), "0s");
    }

    #[test]
    fn dns_labels_follow_rfc_1123() {
        assert!(DnsLabel::parse("cluster-1").is_ok());
        assert!(DnsLabel::parse("Cluster").is_err());
        assert!(DnsLabel::parse("-a").is_err());
        assert!(DnsLabel::parse("a_b").is_err());
        assert!(DnsLabel::parse(&"a".repeat(64)).is_err());
    }

    #[test]
    fn wildcards_cover_exactly_one_label() {
        assert!(dns_name_covers(
            "*.gloo-mesh",
            "gloo-mesh-mgmt-server.gloo-mesh"
        ));
        assert!(!dns_name_covers("*.gloo-mesh", "a.b.gloo-mesh"));
        assert!(!dns_name_covers("*.gloo-mesh", "gloo-mesh"));
        assert!(dns_name_covers("Gloo.Mesh", "gloo.mesh"));
        assert!(check_dns_name("*.gloo-mesh").is_ok());
        assert!(check_dns_name("a.*.b").is_err());
    }
}

/// Where certificate, key or token material comes from, after validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SourceKind {
    /// A file; the path is already resolved against the manifest's folder.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A key of a Kubernetes Secret on one of the fleet's clusters.
    Secret(SecretRef),
}

/// A `{ secret: ... }` material source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretRef {
    /// Cluster holding the Secret.
    pub cluster: ClusterName,
    /// Namespace.
    pub namespace: DnsLabel,
    /// Secret name.
    pub name: String,
    /// Data key.
    pub key: String,
}

/// A material source with the manifest field that named it, for messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaterialSource {
    /// Where to read.
    pub kind: SourceKind,
    /// The field path, e.g. `spec.ca.root.cert`.
    pub field: String,
    /// Where that field is.
    pub location: SourceLocation,
}

impl fmt::Display for MaterialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SourceKind::File(path) => write!(f, "file `{}`", path.display()),
            SourceKind::Env(var) => write!(f, "environment variable `{var}`"),
            SourceKind::Secret(r) => write!(
                f,
                "secret `{}/{}` key `{}` on cluster `{}`",
                r.namespace, r.name, r.key, r.cluster
            ),
        }
    }
}

/// How relayctl reaches a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Connection {
    /// A kubeconfig context, in a given file or the default one.
    Kubeconfig {
        /// Context name.
        context: String,
        /// Kubeconfig file, resolved against the manifest's folder.
        path: Option<PathBuf>,
        /// A client-side bound on this cluster's request rate, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<RequestLimit>,
    },
    /// The pod's service account.
    InCluster,
    /// A local folder standing in for the cluster.
    Directory {
        /// The folder, resolved against the manifest's folder.
        path: PathBuf,
    },
    /// Not given: `<state-dir>/<cluster name>/`.
    StateDir,
}

/// A client-side bound on one cluster's API requests: a token bucket
/// refilled at `qps` requests per second, holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLimit {
    /// Sustained requests per second (at least 1).
    pub qps: u32,
    /// Requests that may go at once after a quiet spell (at least 1).
    pub burst: u32,
}

/// One cluster of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterConfig {
    /// Its name.
    pub name: ClusterName,
    /// How to reach it.
    pub connection: Connection,
    /// Where its manifest is.
    pub location: SourceLocation,
}

/// A workload cluster and its client-certificate source (`external` mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadConfig {
    /// The cluster.
    pub cluster: ClusterConfig,
    /// Certificate to copy into `relay-client-tls-secret`.
    pub client_cert: Option<MaterialSource>,
    /// Its key.
    pub client_key: Option<MaterialSource>,
    /// `spec.shard`: the shard that writes it, instead of the one hashing
    /// places it on (see [`crate::shard`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardPin>,
}

/// A workload cluster pinned to one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardPin {
    /// The shard index, from 0.
    pub index: u32,
    /// Where the pin is written.
    pub location: SourceLocation,
}

/// A CA certificate's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaCertConfig {
    /// Subject CN when generated.
    pub common_name: String,
    /// Lifetime when generated.
    pub validity: Duration,
    /// Key type when generated.
    pub key: KeyAlgorithm,
    /// Certificate brought from a source.
    pub cert: Option<MaterialSource>,
    /// Key brought from a source.
    pub private_key: Option<MaterialSource>,
    /// Rotate (relayctl-made CAs) when less than this is left.
    pub renew_before: Duration,
}

/// `spec.ca`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaConfig {
    /// Who holds the keys.
    pub mode: CaMode,
    /// Root CA.
    pub root: CaCertConfig,
    /// Intermediate (signing) CA.
    pub intermediate: CaCertConfig,
    /// How the CA is rotated.
    pub rotation: RotationConfig,
}

/// `spec.ca.rotation`: the root's generation and the pace of its rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationConfig {
    /// The root generation asked for (`managed`).
    pub generation: u32,
    /// Least time each phase holds.
    pub soak: Duration,
    /// Percent of workload clusters reissued per apply.
    pub wave: u8,
}

impl CaConfig {
    /// Whether relayctl can sign leaves: it holds, or can derive, a signing key.
    pub fn can_sign(&self) -> bool {
        match self.mode {
            CaMode::Managed | CaMode::Gloo => true,
            CaMode::Custom => {
                self.root.private_key.is_some() || self.intermediate.private_key.is_some()
            }
            CaMode::External => false,
        }
    }
}

/// `spec.identityToken`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenConfig {
    /// Whether the token secret is written.
    pub enabled: bool,
    /// A user-provided token instead of a generated one.
    pub value: Option<MaterialSource>,
    /// The generated token's generation.
    pub generation: u32,
}

/// `spec.server`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfig {
    /// Host name agents dial; CN and first SAN.
    pub authority: String,
    /// Every DNS SAN: the authority first, then the extra names, without repeats.
    pub dns_names: Vec<String>,
    /// Lifetime.
    pub validity: Duration,
    /// Renewal threshold.
    pub renew_before: Duration,
    /// Key type.
    pub key: KeyAlgorithm,
    /// `external` mode: certificate from a source.
    pub cert: Option<MaterialSource>,
    /// `external` mode: key from a source.
    pub private_key: Option<MaterialSource>,
}

/// `spec.clientCerts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertConfig {
    /// How agents get them.
    pub mode: ClientCertMode,
    /// Lifetime of issued certs.
    pub validity: Duration,
    /// Renewal threshold.
    pub renew_before: Duration,
    /// Key type.
    pub key: KeyAlgorithm,
}

/// `spec.registration`: whether relayctl writes a `KubernetesCluster` per
/// workload on the management cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationConfig {
    /// Write them.
    pub enabled: bool,
    /// Their `spec.clusterDomain`.
    pub cluster_domain: String,
}

/// The `clusterDomain` of registrations when the manifest names none.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// A whole validated configuration: one relay trust and its fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustConfig {
    /// The `RelayTrust` name; goes into ownership labels.
    pub instance: DnsLabel,
    /// Where the `RelayTrust` manifest is.
    pub location: SourceLocation,
    /// Namespace of every relay Secret.
    pub namespace: DnsLabel,
    /// CA settings.
    pub ca: CaConfig,
    /// Token settings.
    pub identity_token: TokenConfig,
    /// Server certificate settings.
    pub server: ServerConfig,
    /// Client certificate settings.
    pub client_certs: ClientCertConfig,
    /// Whether to delete this instance's Secrets on clusters that left.
    pub prune: bool,
    /// Registration of workload clusters with the management server.
    pub registration: RegistrationConfig,
    /// The management cluster.
    pub management: ClusterConfig,
    /// Workload clusters, sorted by name.
    pub workloads: Vec<WorkloadConfig>,
}

impl TrustConfig {
    /// A SHA-256 digest (hex) of the validated configuration, for the
    /// config-digest annotation and saved plans. Locations are excluded so that
    /// moving a manifest between files does not change it.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut value = serde_json::to_value(self).unwrap_or_default();
        strip_locations(&mut value);
        let digest = Sha256::digest(value.to_string().as_bytes());
        hex::encode(digest)
    }

    /// Every cluster: management first, then workloads by name.
    pub fn clusters(&self) -> impl Iterator<Item = &ClusterConfig> {
        std::iter::once(&self.management).chain(self.workloads.iter().map(|w| &w.cluster))
    }
}

fn strip_locations(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("location");
            map.values_mut().for_each(strip_locations);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_locations),
        _ => {}
    }
}
