//! Setting a client up for one cluster: the kubeconfig (named by the
//! manifest, `--kubeconfig`, `KUBECONFIG` or `~/.kube/config`) and its
//! context, or the pod's service account. Nothing is contacted here.
//!
//! Each kubeconfig file is read and parsed once per fleet ([`Kubeconfigs`]),
//! and each cluster's client is built from a copy holding only its context,
//! cluster and user: with M contexts in one file, setting up M clusters is
//! O(M), not O(M²).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Config;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

use super::clients::Clients;
use super::{KubeBackend, runtime};
use crate::backend::{BackendError, Reach};
use crate::files::FileError;
use crate::model::{ClusterName, Connection};

/// What failed underneath a connection that cannot be set up.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a kubeconfig cannot be read. The parser's message can quote the
/// file, which may not be a kubeconfig at all, so this names only what went
/// wrong.
#[derive(Debug, Clone, thiserror::Error)]
enum Unreadable {
    /// The operating system refused.
    #[error(transparent)]
    Io(Arc<std::io::Error>),
    /// Not a regular file of bounded size.
    #[error(transparent)]
    File(Arc<FileError>),
    /// Not text.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// Text, but not a kubeconfig.
    #[error("not a valid kubeconfig")]
    Invalid,
}

/// Reads a kubeconfig file named by a manifest or `--kubeconfig`: a regular
/// file of bounded size (a FIFO must not hang the run).
fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, Unreadable> {
    const MAX_KUBECONFIG: usize = 4 * 1024 * 1024;
    let real = std::fs::canonicalize(path).map_err(|e| Unreadable::Io(Arc::new(e)))?;
    let bytes = zeroize::Zeroizing::new(
        crate::files::read_regular(&real, MAX_KUBECONFIG).map_err(|e| match e {
            FileError::Io { source, .. } => Unreadable::Io(Arc::new(source)),
            other => Unreadable::File(Arc::new(other)),
        })?,
    );
    let text = std::str::from_utf8(&bytes).map_err(|_| Unreadable::NotUtf8)?;
    Kubeconfig::from_yaml(text).map_err(|_| Unreadable::Invalid)
}

/// The kubeconfig of `KUBECONFIG` or `~/.kube/config`.
fn read_default_kubeconfig() -> Result<Kubeconfig, Unreadable> {
    Kubeconfig::read().map_err(|e| match e {
        KubeconfigError::ReadConfig(io, _) => Unreadable::Io(Arc::new(io)),
        _ => Unreadable::Invalid,
    })
}

/// A parsed kubeconfig with its contexts, clusters and users indexed by name.
struct Indexed {
    file: Kubeconfig,
    contexts: HashMap<String, usize>,
    clusters: HashMap<String, usize>,
    users: HashMap<String, usize>,
}

impl Indexed {
    fn new(file: Kubeconfig) -> Self {
        // The first of a repeated name wins, as in kube's own lookup.
        fn index<'a>(names: impl Iterator<Item = &'a String>) -> HashMap<String, usize> {
            let mut out = HashMap::new();
            for (i, name) in names.enumerate() {
                out.entry(name.clone()).or_insert(i);
            }
            out
        }
        Self {
            contexts: index(file.contexts.iter().map(|c| &c.name)),
            clusters: index(file.clusters.iter().map(|c| &c.name)),
            users: index(file.auth_infos.iter().map(|a| &a.name)),
            file,
        }
    }

    /// The user (auth info) of `context`, if the context names one that exists.
    fn user_of(&self, context: &str) -> Option<&kube::config::NamedAuthInfo> {
        let user = self.file.contexts[*self.contexts.get(context)?]
            .context
            .as_ref()?
            .user
            .as_ref()?;
        Some(&self.file.auth_infos[*self.users.get(user)?])
    }

    /// The credential plugin (`exec`, `auth-provider`) the user of `context`
    /// would run, if any.
    fn credential_plugin(&self, context: &str) -> Option<&'static str> {
        let auth = self.user_of(context)?.auth_info.as_ref()?;
        if auth.exec.is_some() {
            Some("exec")
        } else if auth.auth_provider.is_some() {
            Some("auth-provider")
        } else {
            None
        }
    }

    /// A kubeconfig holding only `context`, its cluster and its user (and
    /// the file's preferences and extensions): what kube needs to build that
    /// context's client, without copying every other context's.
    fn only(&self, context: &str) -> Option<Kubeconfig> {
        let named = &self.file.contexts[*self.contexts.get(context)?];
        let inner = named.context.as_ref();
        let cluster = inner
            .map(|c| &c.cluster)
            .and_then(|name| self.clusters.get(name))
            .map(|&i| self.file.clusters[i].clone());
        let user = self.user_of(context).cloned();
        Some(Kubeconfig {
            preferences: self.file.preferences.clone(),
            clusters: cluster.into_iter().collect(),
            auth_infos: user.into_iter().collect(),
            contexts: vec![named.clone()],
            current_context: Some(context.to_owned()),
            extensions: self.file.extensions.clone(),
            kind: self.file.kind.clone(),
            api_version: self.file.api_version.clone(),
            other: self.file.other.clone(),
        })
    }
}

/// One kubeconfig file as read: parsed and indexed, or why not.
type ReadKubeconfig = Result<Arc<Indexed>, Unreadable>;

/// Kubeconfig files read for one fleet: each file (or the default
/// kubeconfig) is read and parsed once, however many clusters name it.
#[derive(Default)]
pub(super) struct Kubeconfigs {
    /// By canonical path; `None` is the default kubeconfig.
    read: Mutex<BTreeMap<Option<PathBuf>, ReadKubeconfig>>,
}

impl std::fmt::Debug for Kubeconfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubeconfigs").finish_non_exhaustive()
    }
}

impl Kubeconfigs {
    /// The kubeconfig at `path` (`None`: the default one), read on first use.
    fn get(&self, path: Option<&Path>) -> Result<Arc<Indexed>, Unreadable> {
        let key = path.map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
        let mut read = self
            .read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        read.entry(key)
            .or_insert_with(|| {
                match path {
                    Some(path) => read_kubeconfig(path),
                    None => read_default_kubeconfig(),
                }
                .map(|file| Arc::new(Indexed::new(file)))
            })
            .clone()
    }
}

/// Where a kubeconfig came from, for messages.
fn kubeconfig_source(explicit: Option<&Path>) -> String {
    match explicit {
        Some(path) => format!("`{}`", path.display()),
        None => match std::env::var_os("KUBECONFIG") {
            Some(value) if !value.is_empty() => {
                format!("`KUBECONFIG` (`{}`)", value.to_string_lossy())
            }
            _ => "`~/.kube/config`".to_owned(),
        },
    }
}

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
