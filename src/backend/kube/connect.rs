//! Setting a client up for one cluster: the kubeconfig (named by the
//! manifest, `--kubeconfig`, `KUBECONFIG` or `~/.kube/config`) and its
//! context, or the pod's service account. Nothing is contacted here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::{KubeBackend, runtime};
use crate::backend::{BackendError, Reach};
use crate::model::{ClusterName, Connection};

/// Reads a kubeconfig file named by a manifest or `--kubeconfig`: a regular
/// file of bounded size (a FIFO must not hang the run). The parser's
/// message can quote the file, which may not be a kubeconfig at all, so the
/// error names only what went wrong.
fn read_kubeconfig(path: &std::path::Path) -> Result<Kubeconfig, String> {
    const MAX_KUBECONFIG: usize = 4 * 1024 * 1024;
    let real = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
    let bytes = zeroize::Zeroizing::new(
        crate::files::read_regular(&real, MAX_KUBECONFIG).map_err(|e| match e {
            crate::files::FileError::Io { source, .. } => source.to_string(),
            other => other.to_string(),
        })?,
    );
    let text = std::str::from_utf8(&bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    Kubeconfig::from_yaml(text).map_err(|_| "not a valid kubeconfig".to_owned())
}

/// The credential plugin (`exec`, `auth-provider`) the user of `context`
/// would run, if any.
fn credential_plugin(kubeconfig: &Kubeconfig, context: &str) -> Option<&'static str> {
    let user = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)?
        .context
        .as_ref()?
        .user
        .as_ref()?;
    let auth = kubeconfig
        .auth_infos
        .iter()
        .find(|a| &a.name == user)?
        .auth_info
        .as_ref()?;
    if auth.exec.is_some() {
        Some("exec")
    } else if auth.auth_provider.is_some() {
        Some("auth-provider")
    } else {
        None
    }
}

/// Where a kubeconfig came from, for messages.
fn kubeconfig_source(explicit: Option<&std::path::Path>) -> String {
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
        let runtime = runtime()?;
        let connect_error = |reason: String| BackendError::Connect {
            reason: format!("cluster `{name}`: {reason}"),
        };
        let (mut config, via) = match connection {
            Connection::Kubeconfig { context, path } => {
                let explicit = path.as_deref().or(reach.kubeconfig.as_deref());
                let source = kubeconfig_source(explicit);
                let kubeconfig = match explicit {
                    Some(path) => read_kubeconfig(path),
                    None => Kubeconfig::read().map_err(|e| match e {
                        kube::config::KubeconfigError::ReadConfig(io, _) => io.to_string(),
                        _ => "not a valid kubeconfig".to_owned(),
                    }),
                }
                .map_err(|what| {
                    connect_error(format!("cannot read the kubeconfig {source}: {what}"))
                })?;
                if path.is_some()
                    && let Some(plugin) = credential_plugin(&kubeconfig, context)
                {
                    // A kubeconfig named by a manifest is in the repository;
                    // a plugin would run a command of the repository's
                    // writers with relayctl's rights.
                    return Err(connect_error(format!(
                        "the kubeconfig {source} named by the manifest uses a credential plugin (`{plugin}`) for context `{context}`; plugins run commands, so only the operator's kubeconfig (`--kubeconfig`, `KUBECONFIG`) may use them"
                    )));
                }
                if !kubeconfig.contexts.iter().any(|c| c.name == *context) {
                    let known: Vec<&str> = kubeconfig
                        .contexts
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect();
                    return Err(connect_error(format!(
                        "context `{context}` is not in the kubeconfig {source} (it has: {})",
                        if known.is_empty() {
                            "no contexts".to_owned()
                        } else {
                            known.join(", ")
                        }
                    )));
                }
                let options = KubeConfigOptions {
                    context: Some(context.clone()),
                    ..KubeConfigOptions::default()
                };
                let config = runtime
                    .block_on(Config::from_custom_kubeconfig(kubeconfig, &options))
                    .map_err(|e| {
                        connect_error(format!(
                            "context `{context}` of the kubeconfig {source} is unusable: {}",
                            crate::error::error_chain(&e)
                        ))
                    })?;
                (config, format!("context `{context}`"))
            }
            Connection::InCluster => {
                let config = Config::incluster().map_err(|e| {
                    connect_error(format!(
                        "no in-cluster configuration (is relayctl running in a pod with a service account?): {}",
                        crate::error::error_chain(&e)
                    ))
                })?;
                (config, "in-cluster service account".to_owned())
            }
            Connection::Directory { .. } | Connection::StateDir => {
                return Err(connect_error(
                    "not a Kubernetes connection (a bug: directory connections use the directory backend)"
                        .to_owned(),
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
        // The client spawns its request buffer on the runtime.
        let client = {
            let _entered = runtime.enter();
            Client::try_from(config)
        }
        .map_err(|e| {
            connect_error(format!(
                "cannot set up a client for {server}: {}",
                crate::error::error_chain(&e)
            ))
        })?;
        Ok(Self {
            cluster: name.to_string(),
            via,
            server,
            client,
            timeout: reach.timeout,
            namespaces: Mutex::new(BTreeSet::new()),
            uids: Mutex::new(BTreeMap::new()),
        })
    }
}
