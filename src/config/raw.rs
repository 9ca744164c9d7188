//! The manifest files exactly as written: the serde and JSON-schema source.
//!
//! Every field is optional or a plain string here, and modes, key types and
//! durations are kept as text, so that one bad value never hides the next:
//! `validate` reads these and reports every problem at once. Unknown fields
//! are collected separately (they are `additionalProperties: false` in the
//! schema). The doc comments are the field reference of the JSON schema.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::model::{CaMode, ClientCertMode, KeyAlgorithm};

/// A scalar kept as the text the user wrote, whatever YAML type it parsed as,
/// so that `validity: 8760` is reported by the duration rule ("needs a unit")
/// rather than as a type error that hides every later problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl Scalar {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl serde::de::Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// The only `apiVersion` this release reads.
pub const API_VERSION: &str = "relayctl.dev/v1alpha1";

/// `metadata` of any relayctl manifest.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawMetadata {
    /// Object name. For `RelayTrust` the instance name (goes into ownership
    /// labels); for clusters the cluster name (= `KubernetesCluster` name =
    /// the agent's client certificate SAN). A DNS-1123 label.
    pub name: Option<String>,
    /// Free-form labels; not used by relayctl.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations; not used by relayctl.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `kind: RelayTrust`: the trust policy of the whole relay. Exactly one.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawRelayTrust {
    /// Must be `relayctl.dev/v1alpha1`.
    #[schemars(with = "ApiVersionSchema")]
    pub api_version: Option<String>,
    /// `RelayTrust`.
    #[schemars(with = "RelayTrustKind")]
    pub kind: Option<String>,
    /// Instance name.
    pub metadata: Option<RawMetadata>,
    /// The policy.
    #[serde(default)]
    pub spec: RawRelayTrustSpec,
}

/// `spec` of a `RelayTrust`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawRelayTrustSpec {
    /// Namespace of every relay Secret on every cluster. Default `gloo-mesh`.
    pub namespace: Option<String>,
    /// Who holds the CA keys.
    #[serde(default)]
    pub ca: RawCa,
    /// The shared bootstrap token.
    #[serde(default)]
    pub identity_token: RawIdentityToken,
    /// The management server's TLS certificate.
    #[serde(default)]
    pub server: RawServer,
    /// The agents' client certificates.
    #[serde(default)]
    pub client_certs: RawClientCerts,
    /// Delete Secrets of this instance on clusters that left the config. Default false.
    pub prune: Option<bool>,
    /// Register every workload cluster with the management server.
    #[serde(default)]
    pub registration: RawRegistration,
}

/// `spec.registration`: `KubernetesCluster` objects on the management cluster.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawRegistration {
    /// Write an `admin.gloo.solo.io/v2` `KubernetesCluster` named after each
    /// workload cluster in the relay namespace of the management cluster
    /// (the management server refuses agents of unregistered clusters).
    /// Default false: you register clusters yourself (e.g. `meshctl`).
    pub enabled: Option<bool>,
    /// `spec.clusterDomain` of each `KubernetesCluster`. Default `cluster.local`.
    pub cluster_domain: Option<String>,
}

/// `spec.ca`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawCa {
    /// `managed` (default): relayctl generates and keeps root and intermediate;
    /// `gloo`: the management server made its own CA, relayctl reads it;
    /// `custom`: your root (key optional) from a source;
    /// `external`: your PKI issues everything, relayctl holds no CA key.
    #[schemars(with = "Option<CaMode>")]
    pub mode: Option<Scalar>,
    /// The root CA.
    #[serde(default)]
    pub root: RawCaCert,
    /// The intermediate (signing) CA that signs server and client certificates.
    #[serde(default)]
    pub intermediate: RawCaCert,
    /// How the CA is rotated (docs/rotation.md).
    #[serde(default)]
    pub rotation: RawRotation,
}

/// `spec.ca.rotation`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawRotation {
    /// The root's generation (`managed`): raise it to rotate the root through
    /// the phases of docs/rotation.md. Default 1.
    pub generation: Option<u32>,
    /// Least time each phase holds before the next may start, Go notation.
    /// Default `24h`.
    #[schemars(with = "Option<DurationSchema>")]
    pub soak: Option<Scalar>,
    /// Share of the workload clusters whose client certificates are reissued
    /// per apply while the fleet moves to the new root, in percent (1 to
    /// 100). Default 25.
    pub wave: Option<u8>,
}

/// A CA certificate: generated (`managed`) or brought from a source (`custom`, `external`).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawCaCert {
    /// Subject CN when generated. Defaults `relay-root-ca` / `relay-intermediate-ca`.
    pub common_name: Option<String>,
    /// Lifetime when generated, Go notation. Defaults: root `87600h`, intermediate `43800h`.
    #[schemars(with = "Option<DurationSchema>")]
    pub validity: Option<Scalar>,
    /// Key type when generated. Default `ecdsa-p256`.
    #[schemars(with = "Option<KeyAlgorithm>")]
    pub key: Option<Scalar>,
    /// The certificate (PEM; for the root, a bundle is allowed) from a source.
    pub cert: Option<RawSource>,
    /// Its private key (PEM) from a source. Never commit it to Git in clear.
    pub private_key: Option<RawSource>,
    /// When relayctl makes the CA (`managed`; a derived intermediate): start
    /// its rotation when less than this is left, Go notation. Default
    /// validity / 3.
    #[schemars(with = "Option<DurationSchema>")]
    pub renew_before: Option<Scalar>,
}

/// `spec.identityToken`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawIdentityToken {
    /// Write the token to mgmt and every workload. Default true, except in `external` CA mode.
    pub enabled: Option<bool>,
    /// Bring your own token instead of a generated one (256 random bits, hex).
    pub value: Option<RawSource>,
    /// The generated token's generation: raise it to rotate the token. Default 1.
    pub generation: Option<u32>,
}

/// `spec.server`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawServer {
    /// The host name agents dial (`glooAgent.relay.authority`); CN and first SAN.
    /// Default `gloo-mesh-mgmt-server.gloo-mesh`.
    pub authority: Option<String>,
    /// Extra DNS SANs (wildcards like `*.gloo-mesh` allowed).
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// Lifetime, Go notation. Default `8760h`.
    #[schemars(with = "Option<DurationSchema>")]
    pub validity: Option<Scalar>,
    /// Renew when less than this is left. Default validity / 3.
    #[schemars(with = "Option<DurationSchema>")]
    pub renew_before: Option<Scalar>,
    /// Key type. Default `ecdsa-p256`.
    #[schemars(with = "Option<KeyAlgorithm>")]
    pub key: Option<Scalar>,
    /// `external` CA mode: the server certificate (PEM, leaf first) from a source.
    pub cert: Option<RawSource>,
    /// `external` CA mode: its private key from a source.
    pub private_key: Option<RawSource>,
}

/// `spec.clientCerts`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawClientCerts {
    /// `token` (default; agents bootstrap with the identity token),
    /// `preprovisioned` (relayctl issues them), `external` (your PKI; default in `external` CA mode).
    #[schemars(with = "Option<ClientCertMode>")]
    pub mode: Option<Scalar>,
    /// Lifetime of issued client certs, Go notation. Default `8760h`.
    #[schemars(with = "Option<DurationSchema>")]
    pub validity: Option<Scalar>,
    /// Renew when less than this is left. Default validity / 3.
    #[schemars(with = "Option<DurationSchema>")]
    pub renew_before: Option<Scalar>,
    /// Key type of issued client certs. Default `ecdsa-p256`.
    #[schemars(with = "Option<KeyAlgorithm>")]
    pub key: Option<Scalar>,
}

/// Where certificate, key or token material comes from. Exactly one of the fields.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawSource {
    /// A file, relative to the manifest that names it.
    pub file: Option<String>,
    /// An environment variable of the relayctl process.
    pub env: Option<String>,
    /// A key of an existing Kubernetes Secret on one of the clusters.
    pub secret: Option<RawSecretRef>,
}

/// `{ secret: ... }` material source.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawSecretRef {
    /// Name of a cluster of this config (the management cluster or a workload).
    pub cluster: Option<String>,
    /// Namespace of the Secret. Default: `spec.namespace`.
    pub namespace: Option<String>,
    /// Name of the Secret.
    pub name: Option<String>,
    /// Data key inside the Secret.
    pub key: Option<String>,
}

/// `kind: ManagementCluster`: the cluster of the management server. Exactly one.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawManagementCluster {
    /// Must be `relayctl.dev/v1alpha1`.
    #[schemars(with = "ApiVersionSchema")]
    pub api_version: Option<String>,
    /// `ManagementCluster`.
    #[schemars(with = "ManagementClusterKind")]
    pub kind: Option<String>,
    /// Cluster name.
    pub metadata: Option<RawMetadata>,
    /// How to reach it.
    #[serde(default)]
    pub spec: RawClusterSpec,
}

/// `spec` of a `ManagementCluster`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawClusterSpec {
    /// How to reach the cluster. Omitted: the directory backend under `--state-dir`.
    pub connection: Option<RawConnection>,
}

/// `kind: WorkloadCluster`: one agent's cluster. Zero or more; one file each is the habit.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawWorkloadCluster {
    /// Must be `relayctl.dev/v1alpha1`.
    #[schemars(with = "ApiVersionSchema")]
    pub api_version: Option<String>,
    /// `WorkloadCluster`.
    #[schemars(with = "WorkloadClusterKind")]
    pub kind: Option<String>,
    /// Cluster name: the `KubernetesCluster` name and the client certificate SAN.
    pub metadata: Option<RawMetadata>,
    /// How to reach it, and its client certificate in `external` mode.
    #[serde(default)]
    pub spec: RawWorkloadSpec,
}

/// `spec` of a `WorkloadCluster`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawWorkloadSpec {
    /// How to reach the cluster. Omitted: the directory backend under `--state-dir`.
    pub connection: Option<RawConnection>,
    /// `clientCerts.mode: external` only: copy this certificate and key into
    /// `relay-client-tls-secret`. Without it the existing secret is only verified.
    pub client_cert: Option<RawClientCertSource>,
    /// Sharded runs only (`--shard I/N`): the shard that writes this cluster,
    /// from 0, instead of the one rendezvous hashing of its name picks. Must
    /// be below the shard count; a pinned cluster never moves when the count
    /// changes.
    #[schemars(with = "Option<u32>")]
    pub shard: Option<Scalar>,
}

/// A client certificate brought from sources.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawClientCertSource {
    /// Certificate (PEM, leaf first).
    pub cert: Option<RawSource>,
    /// Private key (PEM).
    pub private_key: Option<RawSource>,
}

/// How relayctl reaches a cluster. Exactly one of the fields.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawConnection {
    /// A kubeconfig context.
    pub kubeconfig: Option<RawKubeconfig>,
    /// The service account of the pod relayctl runs in (a Job in that cluster).
    pub in_cluster: Option<bool>,
    /// A local folder standing in for the cluster (Secrets as YAML files).
    pub directory: Option<RawDirectory>,
}

/// `connection.kubeconfig`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawKubeconfig {
    /// Context name.
    pub context: Option<String>,
    /// Kubeconfig file; default `--kubeconfig`, then `KUBECONFIG`, then `~/.kube/config`.
    pub path: Option<String>,
    /// Client-side bound on requests per second to this cluster (a token
    /// bucket per client). Unset: no bound (calls per cluster are few).
    pub qps: Option<u32>,
    /// Requests that may go at once under `qps`; default `qps`.
    pub burst: Option<u32>,
}

/// `connection.directory`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RawDirectory {
    /// Folder, relative to the manifest that names it.
    pub path: Option<String>,
}

/// Any relayctl manifest document; the schema's top level.
#[derive(Debug, Clone, JsonSchema)]
#[schemars(title = "relayctl manifest")]
#[allow(dead_code)]
pub enum RawDocument {
    /// `kind: RelayTrust`.
    #[schemars(untagged)]
    RelayTrust(RawRelayTrust),
    /// `kind: ManagementCluster`.
    #[schemars(untagged)]
    ManagementCluster(RawManagementCluster),
    /// `kind: WorkloadCluster`.
    #[schemars(untagged)]
    WorkloadCluster(RawWorkloadCluster),
}

/// Schema of `apiVersion`.
#[derive(JsonSchema)]
#[allow(dead_code)]
enum ApiVersionSchema {
    #[serde(rename = "relayctl.dev/v1alpha1")]
    V1alpha1,
}

#[derive(JsonSchema)]
#[allow(dead_code)]
enum RelayTrustKind {
    RelayTrust,
}

#[derive(JsonSchema)]
#[allow(dead_code)]
enum ManagementClusterKind {
    ManagementCluster,
}

#[derive(JsonSchema)]
#[allow(dead_code)]
enum WorkloadClusterKind {
    WorkloadCluster,
}

/// Schema of a duration in Go notation.
struct DurationSchema;

impl JsonSchema for DurationSchema {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Duration in Go/Kubernetes notation, e.g. `8760h`, `90m`, `1h30m`",
            "pattern": r"^(0|([0-9]+(\.[0-9]*)?(h|m|s|ms|us|µs|ns))+)$"
        })
    }
}

/// The JSON schema of every manifest document, as committed in `schemas/`.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(RawDocument);
    serde_json::to_value(schema).unwrap_or_default()
}
