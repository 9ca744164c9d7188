//! The shell around the pure core for a whole fleet: backends per cluster,
//! observation with bounded concurrency, and the pieces `plan`, `apply` and
//! `check` share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use crate::error::error_chain;

use crate::backend::directory::DirectoryBackend;
use crate::backend::{Backend, BackendError};
use crate::model::{ClusterName, Connection, TrustConfig};
use crate::observed::Observed;

/// How the shell reaches clusters: the resolved global flags.
#[derive(Debug, Clone)]
pub struct Reach {
    /// Root of the directory backend.
    pub state_dir: PathBuf,
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// Per-cluster timeout for API calls.
    pub timeout: std::time::Duration,
    /// Tighten loose permissions in the state directory (with a warning)
    /// instead of refusing them.
    pub fix_permissions: bool,
    /// Allow `directory` connections outside the state directory.
    pub allow_outside_state_dir: bool,
}

/// Builds the backend for one cluster's connection.
pub fn backend_for(
    name: &ClusterName,
    connection: &Connection,
    reach: &Reach,
) -> Result<Arc<dyn Backend>, BackendError> {
    match connection {
        Connection::StateDir => Ok(Arc::new(
            DirectoryBackend::in_state_dir(reach.state_dir.join(name.as_str()), &reach.state_dir)
                .fixing_permissions(reach.fix_permissions),
        )),
        Connection::Directory { path } => {
            let backend = if within_state_dir(path, reach) {
                DirectoryBackend::in_state_dir(path.clone(), &reach.state_dir)
            } else {
                DirectoryBackend::new(path.clone())
            };
            Ok(Arc::new(backend.fixing_permissions(reach.fix_permissions)))
        }
        Connection::Kubeconfig { .. } | Connection::InCluster => {
            crate::backend::kube_backend(name, connection, reach)
        }
    }
}

/// Whether the folder `path` lies inside the state directory (after
/// symlinks).
pub fn within_state_dir(path: &Path, reach: &Reach) -> bool {
    crate::files::resolve(path).starts_with(crate::files::resolve(&reach.state_dir))
}

/// Clusters of the config whose `directory` connection leaves the state
/// directory, unless that is allowed: such a folder is not guarded like the
/// state directory, and a manifest could point it at any folder of the host.
pub fn outside_state_dir<'c>(
    config: &'c TrustConfig,
    reach: &Reach,
) -> Vec<(&'c crate::model::ClusterConfig, &'c Path)> {
    if reach.allow_outside_state_dir {
        return Vec::new();
    }
    config
        .clusters()
        .filter_map(|cluster| match &cluster.connection {
            Connection::Directory { path } if !within_state_dir(path, reach) => {
                Some((cluster, path.as_path()))
            }
            _ => None,
        })
        .collect()
}

/// Maps `f` over `items` on at most `parallelism` threads, keeping order.
pub fn parallel_map<T: Sync, R: Send>(
    items: Vec<T>,
    parallelism: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let workers = parallelism.max(1).min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    let slots: Vec<std::sync::Mutex<&mut Option<R>>> =
        results.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(index) else { break };
                    let result = f(item);
                    if let Ok(mut slot) = slots[index].lock() {
                        **slot = Some(result);
                    }
                }
            });
        }
    });
    drop(slots);
    results.into_iter().flatten().collect()
}

/// The Secret names to read on `cluster` besides those labelled for the instance.
/// `sources` are the config's `secret` material sources, listed once per
/// observation (listing them walks every workload cluster).
fn names_for(
    config: &TrustConfig,
    sources: &[&crate::model::SecretRef],
    cluster: &ClusterName,
) -> Vec<String> {
    let mut names = crate::relay::observed_names(config.instance.as_str());
    for source in sources {
        if &source.cluster == cluster {
            names.push(source.name.clone());
        }
    }
    names
}

/// Observes `clusters` concurrently. A cluster that cannot be reached is
/// recorded with its error; it does not stop the others.
pub fn observe(
    config: &TrustConfig,
    clusters: &[(ClusterName, Arc<dyn Backend>)],
    parallelism: usize,
) -> Observed {
    let namespace = config.namespace.as_str();
    let instance = config.instance.as_str();
    let sources = crate::material::secret_sources(config);
    let results = parallel_map(clusters.to_vec(), parallelism, |(name, backend)| {
        let names = names_for(config, &sources, name);
        let describe = |e: crate::backend::BackendError| {
            use crate::backend::BackendError as E;
            let class = match e {
                E::Read { .. } | E::Corrupt { .. } => "unreadable",
                E::Refused { .. } => "refused",
                _ => "unreachable",
            };
            format!("{class}: {}: {}", backend.describe(), error_chain(&e))
        };
        let mut result = backend
            .observe(namespace, instance, &names)
            .map_err(describe);
        // Material sources in other namespaces: one read each.
        for source in sources
            .iter()
            .filter(|s| &s.cluster == name && s.namespace.as_str() != namespace)
        {
            let Ok(observation) = &mut result else { break };
            let wanted = vec![source.name.clone()];
            match backend.observe(source.namespace.as_str(), instance, &wanted) {
                Ok(mut found) => {
                    if let Some(secret) = found.secrets.remove(&source.name) {
                        observation
                            .inputs
                            .insert((source.namespace.to_string(), source.name.clone()), secret);
                    }
                }
                Err(e) => result = Err(describe(e)),
            }
        }
        (name.clone(), result)
    });
    Observed {
        clusters: results.into_iter().collect(),
    }
}

/// Two observed clusters that are one storage, as `(first, second, how)`:
/// they share an identity (the same folder by device and inode, the same
/// Secret uids), whatever paths or contexts reached them.
pub fn shared_storage(observed: &Observed) -> Option<(ClusterName, ClusterName, String)> {
    let mut seen: BTreeMap<&str, &ClusterName> = BTreeMap::new();
    for (name, result) in &observed.clusters {
        let Ok(observation) = result else { continue };
        for identity in &observation.identities {
            match seen.get(identity.as_str()) {
                Some(first) if *first != name => {
                    let how = match identity.split_once(':') {
                        Some(("inode", _)) => "the same folder (same device and inode)".to_owned(),
                        Some(("secret-uid", uid)) => {
                            format!(
                                "the same API server and namespace (both hold Secret uid {uid})"
                            )
                        }
                        Some(("path", path)) => format!("the same folder `{path}`"),
                        _ => identity.clone(),
                    };
                    return Some(((*first).clone(), name.clone(), how));
                }
                Some(_) => {}
                None => {
                    seen.insert(identity, name);
                }
            }
        }
    }
    None
}

/// Clusters of one config that resolve to the same storage (directory or API
/// server), as `(first, second, target)`. Such a config would have two
/// clusters overwrite each other's Secrets: a workload's root Secret would
/// strip mgmt's root key and the next run would replace the CA. relayctl does
/// not support registering the management cluster as its own workload yet.
pub fn shared_targets(
    backends: &BTreeMap<ClusterName, Arc<dyn Backend>>,
) -> Vec<(ClusterName, ClusterName, String)> {
    let mut seen: BTreeMap<String, &ClusterName> = BTreeMap::new();
    let mut shared = Vec::new();
    for (name, backend) in backends {
        let target = backend.target();
        match seen.get(&target) {
            Some(first) => shared.push(((*first).clone(), name.clone(), target)),
            None => {
                seen.insert(target, name);
            }
        }
    }
    shared
}

/// Backends for every cluster of the config; a connection that cannot be set
/// up becomes that cluster's observation error.
pub fn backends(
    config: &TrustConfig,
    reach: &Reach,
) -> (
    BTreeMap<ClusterName, Arc<dyn Backend>>,
    BTreeMap<ClusterName, String>,
) {
    let mut ok = BTreeMap::new();
    let mut failed = BTreeMap::new();
    for cluster in config.clusters() {
        match backend_for(&cluster.name, &cluster.connection, reach) {
            Ok(b) => {
                ok.insert(cluster.name.clone(), b);
            }
            Err(e) => {
                failed.insert(cluster.name.clone(), error_chain(&e));
            }
        }
    }
    (ok, failed)
}

/// Makes a path relative to the current directory shorter for messages.
pub fn display_path(path: &Path) -> String {
    path.display().to_string()
}
