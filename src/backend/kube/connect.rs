//! Setting a client up for one cluster: the kubeconfig (named by the
//! manifest, `--kubeconfig`, `KUBECONFIG` or `~/.kube/config`) and its
//! context, or the pod's service account. Nothing is contacted here.
//!
//! Each kubeconfig file is read and parsed once per fleet
//! ([`super::kubeconfig::Kubeconfigs`]),
//! and each cluster's client is built from a copy holding only its context,
//! cluster and user: with M contexts in one file, setting up M clusters is
//! O(M), not O(M²).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use kube::Config;
use kube::config::KubeConfigOptions;

use super::clients::Clients;
use super::kubeconfig::{Cause, kubeconfig_source};
use super::{KubeBackend, runtime};
use crate::backend::{BackendError, Reach};
use crate::model::{ClusterName, Connection};

impl KubeBackend {
    /// Sets up the client for `connection` of cluster `name`. Nothing is
    /// contacted yet; a missing kubeconfig or context is reported here.
    pub fn connect(
        name: &ClusterName,
        connection: &Connection,
        reach: &Reach,
    ) -> Result<Self, BackendError> {
        Self::connect_with(name, connection, reach, &Clients::new(1))
    }

    /// [`KubeBackend::connect`] as one of a fleet's clusters: kubeconfig
    /// files are read once for all of them, and their clients share the
    /// bound on open clients of `clients`.
    pub fn connect_with(
        name: &ClusterName,
        connection: &Connection,
        reach: &Reach,
        clients: &Clients,
    ) -> Result<Self, BackendError> {
        let kubeconfigs = &clients.kubeconfigs;
        let runtime = runtime()?;
        let cannot = |what: String, source: Option<Cause>| BackendError::Connect {
            cluster: name.to_string(),
            what,
            source,
        };
        let (mut config, via, limit) = match connection {
            Connection::Kubeconfig {
                context,
                path,
                limit,
            } => {
                let explicit = path.as_deref().or(reach.kubeconfig.as_deref());
                let source = kubeconfig_source(explicit);
                let kubeconfig = kubeconfigs.get(explicit).map_err(|e| {
                    cannot(
                        format!("cannot read the kubeconfig {source}"),
                        Some(Box::new(e)),
                    )
                })?;
                if path.is_some()
                    && let Some(plugin) = kubeconfig.credential_plugin(context)
                {
                    // A kubeconfig named by a manifest is in the repository;
                    // a plugin would run a command of the repository's
                    // writers with relayctl's rights.
                    return Err(cannot(
                        format!(
                            "the kubeconfig {source} named by the manifest uses a credential plugin (`{plugin}`) for context `{context}`; plugins run commands, so only the operator's kubeconfig (`--kubeconfig`, `KUBECONFIG`) may use them"
                        ),
                        None,
                    ));
                }
                let Some(only) = kubeconfig.only(context) else {
                    let known: Vec<&str> = kubeconfig
                        .file
                        .contexts
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect();
                    return Err(cannot(
                        format!(
                            "context `{context}` is not in the kubeconfig {source} (it has: {})",
                            if known.is_empty() {
                                "no contexts".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                        None,
                    ));
                };
                let options = KubeConfigOptions {
                    context: Some(context.clone()),
                    ..KubeConfigOptions::default()
                };
                let config = runtime
                    .block_on(Config::from_custom_kubeconfig(only, &options))
                    .map_err(|e| {
                        cannot(
                            format!("context `{context}` of the kubeconfig {source} is unusable"),
                            Some(Box::new(e)),
                        )
                    })?;
                (config, format!("context `{context}`"), *limit)
            }
            Connection::InCluster => {
                let config = Config::incluster().map_err(|e| {
                    cannot(
                        "no in-cluster configuration (is relayctl running in a pod with a service account?)".to_owned(),
                        Some(Box::new(e)),
                    )
                })?;
                (config, "in-cluster service account".to_owned(), None)
            }
            Connection::Directory { .. } | Connection::StateDir => {
                return Err(cannot(
                    "not a Kubernetes connection (a bug: directory connections use the directory backend)"
                        .to_owned(),
                    None,
                ));
            }
        };
        // Retries are ours, bounded by the per-cluster timeout; the client's
        // own timeouts are only a backstop behind it, so that a silent server
        // is reported as a timeout.
        config.default_retry = false;
        let backstop = reach.timeout + Duration::from_secs(1);
        config.connect_timeout = Some(backstop);
        config.read_timeout = Some(backstop);
        config.write_timeout = Some(backstop);
        config.reset_reader_on_write = true;
        let server = config.cluster_url.to_string();
        let server = server.trim_end_matches('/').to_owned();
        // What can fail in building the client (its TLS configuration and
        // credentials) fails here, before anything is contacted; the client
        // itself is built on first use and dropped when others need the room.
        super::transport::check(&config)
            .map_err(|e| cannot(format!("cannot set up a client for {server}"), Some(e)))?;
        Ok(Self {
            cluster: name.to_string(),
            via,
            server,
            config,
            client: clients.slot(),
            limiter: limit.map(super::limit::Limiter::new),
            timeout: reach.timeout,
            namespaces: Mutex::new(BTreeSet::new()),
            uids: Mutex::new(BTreeMap::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::error::error_chain;

    fn connect(context: &str, path: &Path) -> BackendError {
        let name = ClusterName::parse("mgmt").unwrap();
        let connection = Connection::Kubeconfig {
            context: context.to_owned(),
            path: Some(path.to_path_buf()),
            limit: None,
        };
        let reach = Reach {
            state_dir: path.to_path_buf(),
            kubeconfig: None,
            timeout: Duration::from_secs(1),
            fix_permissions: false,
            allow_outside_state_dir: false,
            parallelism: 1,
        };
        KubeBackend::connect(&name, &connection, &reach).unwrap_err()
    }

    #[test]
    fn an_unreadable_kubeconfig_names_the_cluster_and_carries_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.kubeconfig");
        let err = connect("mgmt", &path);
        let top = err.to_string();
        assert_eq!(
            top,
            format!(
                "cannot connect to cluster `mgmt`: cannot read the kubeconfig `{}`",
                path.display()
            )
        );
        let cause = std::error::Error::source(&err).expect("the cause is attached");
        assert!(!top.contains(&cause.to_string()), "{top}");
        assert_eq!(error_chain(&err), format!("{top}: {cause}"));
    }

    #[test]
    fn a_missing_context_lists_the_contexts_the_kubeconfig_has() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts:\n- name: other\n  context: { cluster: c, user: u }\n",
        )
        .unwrap();
        let err = connect("mgmt", &path);
        assert_eq!(
            err.to_string(),
            format!(
                "cannot connect to cluster `mgmt`: context `mgmt` is not in the kubeconfig `{}` (it has: other)",
                path.display()
            )
        );
        assert!(std::error::Error::source(&err).is_none());
    }
}
