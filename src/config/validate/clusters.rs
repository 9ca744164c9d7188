//! The clusters: names (DNS labels, unique across the config), how each is
//! reached (`connection`), and a workload's brought client certificate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::sources::SourceReader;
use super::{key, metadata_name, path};
use crate::config::diag::{Code, Reporter};
use crate::config::node::Position;
use crate::config::raw::{RawConnection, RawManagementCluster, RawMetadata, RawWorkloadCluster};
use crate::model::{
    ClientCertMode, ClusterConfig, ClusterName, Connection, DnsLabel, ShardPin, WorkloadConfig,
};

/// The cluster names claimed so far, with where each was first written.
#[derive(Default)]
pub(super) struct ClusterNames {
    first: BTreeMap<String, (PathBuf, Position)>,
}

impl ClusterNames {
    /// The cluster name in `metadata`, if it is a valid label that no
    /// earlier cluster claimed.
    pub(super) fn claim(
        &mut self,
        r: &mut Reporter<'_>,
        metadata: &Option<RawMetadata>,
    ) -> Option<ClusterName> {
        let name = metadata_name(r, metadata, "cluster")?;
        let steps = path(&["metadata", "name"]);
        match DnsLabel::parse(&name) {
            Ok(label) => {
                if let Some((first_file, first_pos)) = self.first.get(&name) {
                    r.at_value(&steps, Code::DuplicateCluster, format!("cluster name `{name}` is used twice (first at {}:{}:{})", first_file.display(), first_pos.line, first_pos.column), Some("cluster names must be unique across the management and workload clusters".to_owned()));
                    None
                } else {
                    self.first
                        .insert(name, (r.file.to_path_buf(), r.node.locate_value(&steps)));
                    Some(label)
                }
            }
            Err(why) => {
                r.at_value(&steps, Code::InvalidName, format!("cluster name `{name}` {why}"), Some("cluster names are DNS-1123 labels (e.g. `cluster-1`): they become the agent's certificate SAN and the `KubernetesCluster` name".to_owned()));
                None
            }
        }
    }

    /// Every valid name claimed: the clusters `secret` sources may name.
    pub(super) fn known(&self) -> BTreeSet<String> {
        self.first.keys().cloned().collect()
    }
}

/// The management cluster, when its name and connection are valid.
pub(super) fn management(
    r: &mut Reporter<'_>,
    raw: &RawManagementCluster,
    name: Option<ClusterName>,
) -> Option<ClusterConfig> {
    let connection = connection(r, raw.spec.connection.as_ref());
    Some(ClusterConfig {
        name: name?,
        connection: connection?,
        location: r.location(&[]),
    })
}

/// A workload cluster, when its name and connection are valid. Its
/// `clientCert` is only used in `clientCerts.mode: external`.
pub(super) fn workload(
    r: &mut Reporter<'_>,
    sources: &SourceReader<'_>,
    raw: &RawWorkloadCluster,
    name: Option<ClusterName>,
    client_mode: ClientCertMode,
) -> Option<WorkloadConfig> {
    let connection = connection(r, raw.spec.connection.as_ref());
    let (mut client_cert, mut client_key) = (None, None);
    if let Some(source) = &raw.spec.client_cert {
        if client_mode != ClientCertMode::External {
            r.at_key(&path(&["spec", "clientCert"]), Code::UnusedMaterial, format!("`spec.clientCert` is only used with `clientCerts.mode: external`, and the mode is `{client_mode}`"), Some("remove it: relayctl or the agent issues this cluster's certificate".to_owned()));
        }
        match &source.cert {
            Some(s) => client_cert = sources.read(r, &path(&["spec", "clientCert", "cert"]), s),
            None => r.at_key(&path(&["spec", "clientCert"]), Code::MissingMaterial, "`spec.clientCert` has no `cert`".to_owned(), Some("give `cert` and `privateKey` sources, or remove `clientCert` to only verify the existing secret".to_owned())),
        }
        match &source.private_key {
            Some(s) => {
                client_key = sources.read(r, &path(&["spec", "clientCert", "privateKey"]), s)
            }
            None => r.at_key(
                &path(&["spec", "clientCert"]),
                Code::MissingMaterial,
                "`spec.clientCert` has no `privateKey`".to_owned(),
                Some("a client certificate is useless to the agent without its key".to_owned()),
            ),
        }
    }
    let shard = shard_pin(r, raw);
    Some(WorkloadConfig {
        cluster: ClusterConfig {
            name: name?,
            connection: connection?,
            location: r.location(&[]),
        },
        client_cert,
        client_key,
        shard,
    })
}

/// `spec.shard`: a shard index, from 0. Whether it is below the shard
/// count is checked when a sharded run knows the count.
fn shard_pin(r: &mut Reporter<'_>, raw: &RawWorkloadCluster) -> Option<ShardPin> {
    let text = raw.spec.shard.as_ref()?;
    let steps = path(&["spec", "shard"]);
    match text.as_str().parse::<u32>() {
        Ok(index) if index < crate::shard::MAX_SHARDS => Some(ShardPin {
            index,
            location: r.location(&steps),
        }),
        _ => {
            r.at_value(
                &steps,
                Code::InvalidValue,
                format!(
                    "`spec.shard` is `{}`, not a shard index",
                    crate::text::printable(text.as_str())
                ),
                Some(format!(
                    "a whole number from 0 to {}, below the shard count of `--shard I/N`; or remove it to place the cluster by hashing its name",
                    crate::shard::MAX_SHARDS - 1
                )),
            );
            None
        }
    }
}

/// `spec.connection`: exactly one way to reach the cluster, the directory
/// backend under `--state-dir` when absent. Paths are relative to the manifest.
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
        let at = |field: &str| [steps.as_slice(), &[key("kubeconfig"), key(field)]].concat();
        let limit = match (kubeconfig.qps, kubeconfig.burst) {
            (None, None) => None,
            (None, Some(_)) => {
                r.at_key(
                    &at("burst"),
                    Code::InvalidConnection,
                    "`kubeconfig.burst` needs `kubeconfig.qps`".to_owned(),
                    Some("set `qps` (requests per second) too, or remove `burst`".to_owned()),
                );
                return None;
            }
            (Some(0), _) | (_, Some(0)) => {
                let field = if kubeconfig.qps == Some(0) {
                    "qps"
                } else {
                    "burst"
                };
                r.at_value(
                    &at(field),
                    Code::InvalidConnection,
                    format!("`kubeconfig.{field}` must be at least 1"),
                    Some("remove `qps` and `burst` for no client-side bound".to_owned()),
                );
                return None;
            }
            (Some(qps), burst) => Some(crate::model::RequestLimit {
                qps,
                burst: burst.unwrap_or(qps),
            }),
        };
        return Some(Connection::Kubeconfig {
            context,
            path: kubeconfig.path.as_ref().map(|p| base.join(p)),
            limit,
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

#[cfg(test)]
mod tests {
    use super::super::fixture::TrustSpec;
    use super::*;

    #[test]
    fn cluster_names_are_dns_labels() {
        for name in ["Cluster-1", "cluster_1", "-cluster", &"c".repeat(64)] {
            let spec = TrustSpec::test().with_workload(name);
            let d = spec.reports_in_workload(0, Code::InvalidName, "metadata.name");
            assert!(
                d.message.starts_with(&format!("cluster name `{name}`")),
                "{}",
                d.message
            );
            assert_eq!(spec.codes(), [Code::InvalidName]);
        }
        let spec = TrustSpec::test().with_management_field("metadata.name", "Mgmt");
        spec.reports_in_management(Code::InvalidName, "metadata.name");
    }

    #[test]
    fn cluster_names_are_unique_across_management_and_workloads() {
        let spec = TrustSpec::test().with_workload("mgmt");
        let d = spec.reports_in_workload(0, Code::DuplicateCluster, "metadata.name");
        assert_eq!(
            d.message,
            "cluster name `mgmt` is used twice (first at config/clusters/mgmt.yaml:4:9)"
        );
        // The second use is reported, never the first.
        let spec = TrustSpec::test()
            .with_workload("cluster-1")
            .with_workload("cluster-1");
        spec.reports_in_workload(1, Code::DuplicateCluster, "metadata.name");
        assert_eq!(spec.codes(), [Code::DuplicateCluster]);
    }

    #[test]
    fn workloads_are_kept_in_name_order() {
        let config = TrustSpec::test()
            .with_workload("cluster-b")
            .with_workload("cluster-a")
            .valid();
        let names: Vec<_> = config
            .workloads
            .iter()
            .map(|w| w.cluster.name.as_str())
            .collect();
        assert_eq!(names, ["cluster-a", "cluster-b"]);
        assert_eq!(config.management.name.as_str(), "mgmt");
    }

    #[test]
    fn a_request_limit_needs_a_rate_of_at_least_one_and_burst_defaults_to_it() {
        for (connection, field) in [
            (
                "{ kubeconfig: { context: c, qps: 0 } }",
                "spec.connection.kubeconfig.qps",
            ),
            (
                "{ kubeconfig: { context: c, qps: 5, burst: 0 } }",
                "spec.connection.kubeconfig.burst",
            ),
            (
                "{ kubeconfig: { context: c, burst: 5 } }",
                "spec.connection.kubeconfig.burst",
            ),
        ] {
            let spec = TrustSpec::test()
                .with_workload("cluster-1")
                .with_workload_field("spec.connection", connection);
            spec.reports_in_workload(0, Code::InvalidConnection, field);
            assert_eq!(spec.codes(), [Code::InvalidConnection], "{connection}");
        }
        let limit = |connection: &str| {
            let config = TrustSpec::test()
                .with_workload("cluster-1")
                .with_workload_field("spec.connection", connection)
                .valid();
            match &config.workloads[0].cluster.connection {
                Connection::Kubeconfig { limit, .. } => *limit,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(limit("{ kubeconfig: { context: c } }"), None);
        assert_eq!(
            limit("{ kubeconfig: { context: c, qps: 5 } }"),
            Some(crate::model::RequestLimit { qps: 5, burst: 5 })
        );
        assert_eq!(
            limit("{ kubeconfig: { context: c, qps: 5, burst: 20 } }"),
            Some(crate::model::RequestLimit { qps: 5, burst: 20 })
        );
    }

    #[test]
    fn a_connection_is_exactly_one_complete_way_to_reach_the_cluster() {
        for (connection, field) in [
            ("{}", "spec.connection"),
            (
                "{ inCluster: true, directory: { path: x } }",
                "spec.connection",
            ),
            (
                "{ kubeconfig: { path: kube.yaml } }",
                "spec.connection.kubeconfig",
            ),
            (
                "{ kubeconfig: { context: '' } }",
                "spec.connection.kubeconfig",
            ),
            ("{ inCluster: false }", "spec.connection.inCluster"),
            ("{ directory: {} }", "spec.connection.directory"),
            ("{ directory: { path: '' } }", "spec.connection.directory"),
        ] {
            let spec = TrustSpec::test()
                .with_workload("cluster-1")
                .with_workload_field("spec.connection", connection);
            spec.reports_in_workload(0, Code::InvalidConnection, field);
            assert_eq!(spec.codes(), [Code::InvalidConnection], "{connection}");
            let spec = TrustSpec::test().with_management_field("spec.connection", connection);
            spec.reports_in_management(Code::InvalidConnection, field);
        }
    }

    #[test]
    fn connection_paths_are_relative_to_the_manifest() {
        let config = TrustSpec::test()
            .with_management_field(
                "spec.connection",
                "{ kubeconfig: { context: mgmt, path: kube.yaml } }",
            )
            .with_workload("cluster-1")
            .with_workload_field(
                "spec.connection",
                "{ directory: { path: state/cluster-1 } }",
            )
            .with_workload("cluster-2")
            .with_workload_field("spec.connection", "{ inCluster: true }")
            .with_workload("cluster-3")
            .valid();
        assert_eq!(
            config.management.connection,
            Connection::Kubeconfig {
                context: "mgmt".to_owned(),
                path: Some(PathBuf::from("config/clusters/kube.yaml")),
                limit: None,
            }
        );
        let connections: Vec<_> = config
            .workloads
            .iter()
            .map(|w| &w.cluster.connection)
            .collect();
        assert_eq!(
            connections,
            [
                &Connection::Directory {
                    path: PathBuf::from("config/clusters/state/cluster-1")
                },
                &Connection::InCluster,
                &Connection::StateDir,
            ]
        );
    }

    #[test]
    fn a_client_cert_is_brought_whole_and_only_in_external_client_mode() {
        let config = TrustSpec::external()
            .with_workload("cluster-1")
            .with_workload_field(
                "spec.clientCert.cert",
                "{ file: ../material/cluster-1.crt }",
            )
            .with_workload_field("spec.clientCert.privateKey", "{ env: CLUSTER_1_KEY }")
            .valid();
        let workload = &config.workloads[0];
        assert_eq!(
            workload.client_cert.as_ref().map(|s| &s.kind),
            Some(&crate::model::SourceKind::File(PathBuf::from(
                "config/clusters/../material/cluster-1.crt"
            )))
        );
        assert!(workload.client_key.is_some());

        let spec = TrustSpec::external()
            .with_workload("cluster-1")
            .with_workload_field(
                "spec.clientCert.cert",
                "{ file: ../material/cluster-1.crt }",
            );
        let d = spec.reports_in_workload(0, Code::MissingMaterial, "spec.clientCert");
        assert_eq!(d.message, "`spec.clientCert` has no `privateKey`");

        let spec = TrustSpec::test()
            .with_workload("cluster-1")
            .with_workload_field(
                "spec.clientCert.cert",
                "{ file: ../material/cluster-1.crt }",
            )
            .with_workload_field("spec.clientCert.privateKey", "{ env: CLUSTER_1_KEY }");
        let d = spec.reports_in_workload(0, Code::UnusedMaterial, "spec.clientCert");
        assert!(d.message.contains("the mode is `token`"), "{}", d.message);
        assert_eq!(spec.codes(), [Code::UnusedMaterial]);
    }
}
