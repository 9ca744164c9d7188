//! Where Secrets live: one trait, a Kubernetes and a directory implementation,
//! and which of them each cluster's connection gets ([`backend_for`]).
//!
//! The planner never sees a backend; the shell observes through one, hands
//! plain [`ClusterObservation`]s to the planner, and carries out the planned
//! writes through it. Methods are blocking: the fleet is worked on by a bounded
//! pool of threads, one cluster per thread.

pub mod directory;
pub mod kube;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use self::directory::DirectoryBackend;
use crate::error::error_chain;
use crate::model::{ClusterConfig, ClusterName, Connection, TrustConfig};
use crate::observed::ClusterObservation;
use crate::plan::Write;

/// A failure talking to one cluster's storage.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Reading a file of the directory backend failed.
    #[error("cannot read `{path}`")]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing a file of the directory backend failed.
    #[error("cannot write `{path}`")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file in the directory backend is not a Secret manifest.
    #[error("`{path}` is not a valid Secret manifest: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong (never includes data values).
        reason: String,
    },
    /// The storage is not guarded as a key store must be (a planted file,
    /// loose permissions, a symlink out of the state directory).
    #[error("refusing `{path}`: {reason}")]
    Refused {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The product's CustomResourceDefinition is not installed.
    #[error("the CustomResourceDefinition `{crd}` is not installed on cluster `{cluster}`")]
    MissingCrd {
        /// The cluster.
        cluster: String,
        /// The CRD's name.
        crd: &'static str,
    },
    /// The object changed between observation and write.
    #[error("secret `{namespace}/{name}` changed since it was observed; run plan again")]
    Stale {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Another run holds the lock.
    #[error("another apply holds the lock of instance `{instance}`: {holder}")]
    Locked {
        /// The instance.
        instance: String,
        /// Who holds it and until when.
        holder: String,
    },
    /// A Kubernetes API call failed.
    #[error("{operation} failed")]
    Kube {
        /// What was being done, naming the object.
        operation: String,
        /// The API error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Kubernetes answered 401: the credentials are not accepted.
    #[error("{operation}: the API server rejected the credentials (401 Unauthorized)")]
    Unauthorized {
        /// What was being done.
        operation: String,
    },
    /// Kubernetes answered 403.
    #[error("{operation}: forbidden (403): {message}")]
    Forbidden {
        /// What was being done.
        operation: String,
        /// The server's message, naming the verb and resource.
        message: String,
    },
    /// A Kubernetes cluster's connection cannot be set up (its kubeconfig,
    /// context or client, or a refused credential plugin); nothing was
    /// contacted yet.
    #[error("cannot connect to cluster `{cluster}`: {what}")]
    Connect {
        /// The cluster.
        cluster: String,
        /// What is wrong with its connection; the cause is `source`.
        what: String,
        /// What failed underneath, if anything did.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The async runtime the Kubernetes clients run on cannot be started.
    #[error("cannot start the async runtime for Kubernetes clients")]
    Runtime {
        /// Why (shared: the runtime is started once per process).
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The API server did not answer: connection refused, TLS failure, reset.
    #[error("cannot reach the API server of cluster `{cluster}` at {server} (gave up after {attempts} attempt{s})", s = if *attempts == 1 { "" } else { "s" })]
    Unreachable {
        /// The cluster.
        cluster: String,
        /// Its API server URL.
        server: String,
        /// How many times it was tried.
        attempts: u32,
        /// The last transport error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The per-cluster timeout passed before the API server answered.
    #[error("{operation}: no answer from cluster `{cluster}` within {}s (the per-cluster timeout, retries included)", after.as_secs())]
    Timeout {
        /// What was being done.
        operation: String,
        /// The cluster.
        cluster: String,
        /// The timeout.
        after: Duration,
    },
}

/// Holds a lock until dropped.
pub trait LockGuard: Send {}

/// One cluster's Secret storage.
pub trait Backend: Send + Sync {
    /// Human description for messages (`directory .relayctl/state/mgmt`, `context mgmt`).
    fn describe(&self) -> String;

    /// What storage this is (an absolute folder, an API server URL): two
    /// clusters of one config with the same target would overwrite each
    /// other's Secrets, so the shell refuses that.
    fn target(&self) -> String;

    /// The Secrets of `namespace` named in `names` (the relay catalogue, the
    /// inventory and named inputs), whatever their labels. A backend may
    /// also return other Secrets labelled for `instance` (the Kubernetes
    /// backend's label-scoped LIST does); the directory backend reads only
    /// the named files.
    fn observe(
        &self,
        namespace: &str,
        instance: &str,
        names: &[String],
    ) -> Result<ClusterObservation, BackendError>;

    /// [`Backend::observe`] of `names` plus `with_list`: Secrets that by
    /// their writer never carry the instance's label (the agent's, the
    /// management server's, the user's sources), so that no LIST by label
    /// can return them, and Secrets that are usually absent (the rotation
    /// record). A backend may read those at the same time as it lists,
    /// instead of after.
    fn observe_split(
        &self,
        namespace: &str,
        instance: &str,
        names: &[String],
        with_list: &[String],
    ) -> Result<ClusterObservation, BackendError> {
        let all: Vec<String> = names.iter().chain(with_list).cloned().collect();
        self.observe(namespace, instance, &all)
    }

    /// Carries out one planned write, honouring its precondition; returns
    /// the version the object has afterwards (`None` once deleted).
    fn write(&self, write: &Write) -> Result<Option<String>, BackendError>;

    /// Every `KubernetesCluster` in `namespace`, by name. Fails with
    /// [`BackendError::MissingCrd`] when the product's CRD is not installed.
    fn observe_registrations(
        &self,
        namespace: &str,
    ) -> Result<std::collections::BTreeMap<String, crate::observed::Registration>, BackendError>;

    /// Carries out one planned registration write, honouring its precondition.
    fn write_registration(
        &self,
        write: &crate::plan::RegistrationWrite,
    ) -> Result<(), BackendError>;

    /// Removes what an interrupted earlier run left behind in `namespace`
    /// (temporary files holding keys). Called under the apply lock; returns
    /// how many leftovers were removed.
    fn sweep(&self, namespace: &str) -> Result<usize, BackendError> {
        let _ = namespace;
        Ok(0)
    }

    /// Records a Kubernetes Event on the Secret `note` names, reported by
    /// `reporter` for `instance`. Returns whether the backend records
    /// Events at all: the directory backend has nowhere to put them.
    fn record_event(
        &self,
        note: &crate::events::EventNote,
        instance: &str,
        reporter: &str,
    ) -> Result<bool, BackendError> {
        let _ = (note, instance, reporter);
        Ok(false)
    }

    /// Whether [`Backend::record_event`] records anything (so that a fleet
    /// of directories spends nothing on Events).
    fn records_events(&self) -> bool {
        false
    }

    /// Writes (creates or replaces) the status ConfigMap `name` of a run in
    /// `namespace`. Returns whether the backend keeps one: the directory
    /// backend does not (a folder of Secret manifests guarded like a key
    /// store is no place for it).
    fn write_status(
        &self,
        namespace: &str,
        name: &str,
        instance: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<bool, BackendError> {
        let _ = (namespace, name, instance, data);
        Ok(false)
    }

    /// Reads the status ConfigMap `name` in `namespace` (its data), `None`
    /// when there is none. The directory backend keeps none.
    fn read_status(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, BackendError> {
        let _ = (namespace, name);
        Ok(None)
    }

    /// Takes the writer fence of a sharded run in this cluster for
    /// `holder` without waiting: the Lease `relayctl-<instance>.writer` on
    /// Kubernetes, an `flock` on `.relayctl-<instance>.writer.lock` in the
    /// folder. Fails with [`BackendError::Locked`] when another writer
    /// holds it. A Lease left by an earlier run of the same `holder` (a
    /// killed shard's) is taken over at once; another holder's blocks until
    /// it expires. The dot keeps it apart from every instance's apply lock
    /// (`relayctl-<instance>`): instance names are DNS labels, without dots.
    fn fence_writer(
        &self,
        namespace: &str,
        instance: &str,
        holder: &str,
    ) -> Result<Box<dyn LockGuard>, BackendError> {
        self.lock(
            namespace,
            &format!("{instance}.writer"),
            holder,
            Duration::ZERO,
        )
    }

    /// Takes the apply lock of `instance`, waiting up to `timeout`; fails
    /// naming the holder.
    fn lock(
        &self,
        namespace: &str,
        instance: &str,
        holder: &str,
        timeout: Duration,
    ) -> Result<Box<dyn LockGuard>, BackendError>;

    /// Starts connecting, without sending anything, so that the cluster's
    /// first request finds its connection ready (the handshakes overlap
    /// with other work). A failure here is left to that first request.
    fn warm(&self) {}
}

/// How the shell reaches clusters: the resolved global flags.
#[derive(Debug, Clone)]
pub struct Reach {
    /// Root of the directory backend.
    pub state_dir: PathBuf,
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// Per-cluster timeout for API calls.
    pub timeout: Duration,
    /// Tighten loose permissions in the state directory (with a warning)
    /// instead of refusing them.
    pub fix_permissions: bool,
    /// Allow `directory` connections outside the state directory.
    pub allow_outside_state_dir: bool,
    /// Clusters worked on at once (`--parallelism`); also bounds how many
    /// Kubernetes clients (with their connections) a fleet keeps open
    /// (`kube::Clients::for_parallelism`), so that memory and open
    /// connections are bounded by it, not by the fleet.
    pub parallelism: usize,
}

/// Builds the backend for one cluster's connection.
pub fn backend_for(
    name: &ClusterName,
    connection: &Connection,
    reach: &Reach,
) -> Result<Arc<dyn Backend>, BackendError> {
    backend_among(name, connection, reach, &kube::Clients::new(1))
}

/// [`backend_for`] as one of a fleet's clusters: Kubernetes clusters share
/// `clients` (each kubeconfig file read once, a bound on open clients).
fn backend_among(
    name: &ClusterName,
    connection: &Connection,
    reach: &Reach,
    clients: &kube::Clients,
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
        Connection::Kubeconfig { .. } | Connection::InCluster => Ok(Arc::new(
            kube::KubeBackend::connect_with(name, connection, reach, clients)?,
        )),
    }
}

/// The Kubernetes backend for a `kubeconfig` or `inCluster` connection:
/// see [`kube::KubeBackend`]. Fails, naming the cluster, when the kubeconfig
/// or its context is missing or unusable; nothing is contacted yet.
pub fn kube_backend(
    name: &ClusterName,
    connection: &Connection,
    reach: &Reach,
) -> Result<Arc<dyn Backend>, BackendError> {
    Ok(Arc::new(kube::KubeBackend::connect(
        name, connection, reach,
    )?))
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
    let clients = kube::Clients::for_parallelism(reach.parallelism);
    for cluster in config.clusters() {
        match backend_among(&cluster.name, &cluster.connection, reach, &clients) {
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
) -> Vec<(&'c ClusterConfig, &'c Path)> {
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
