//! The Kubernetes backend: a cluster reached through a kubeconfig context or
//! the pod's service account.
//!
//! The [`Backend`] trait is blocking because the fleet is worked on by plain
//! threads, one cluster each. The `kube` client is async, so one process-wide
//! multi-thread tokio runtime serves every cluster and each call `block_on`s
//! it from the caller's thread (never from a runtime worker).
//!
//! What talks to the API server, and how:
//! - **Observe**: one LIST of the Secrets labelled
//!   `relayctl.dev/instance=<instance>` in the relay namespace, plus a GET of
//!   each named input that the LIST did not return (404 = absent).
//! - **Create**: a POST under field manager `relayctl`: the only atomic
//!   "create if absent" of the Kubernetes API, so a Secret that appeared since
//!   it was observed is refused (409) and reported as stale. Server-side apply
//!   cannot express "must not exist": applied to an existing object it would
//!   silently overwrite it.
//! - **Update**: server-side apply (field manager `relayctl`, forced, since
//!   the plan already decided to take the fields over) with the observed
//!   `resourceVersion` and `uid` as preconditions, so a concurrent change,
//!   deletion or re-creation is a 409, reported as stale. Data keys that the
//!   plan does not write (left by another field manager) are then removed with
//!   a merge patch under the same precondition: the Secret ends up holding
//!   exactly what the plan shows, as with the directory backend.
//! - **Delete**: with `resourceVersion` (and `uid`) preconditions.
//! - The namespace is created on first write when missing.
//! - **Lock**: a `coordination.k8s.io/v1` Lease `relayctl-<instance>`, renewed
//!   in the background while held, released on drop, taken over once expired.
//!
//! Every API call is bounded by the per-cluster timeout (`Reach::timeout`,
//! retries included) and retried with exponential backoff on 429, 5xx and
//! transport errors, never on other 4xx. Secret bodies go through
//! [`kube::Client::request_text`] and are decoded here, so that neither the
//! client's logs nor any error message can carry Secret data: errors quote the
//! API server's status message, which names objects and fields, not values.
//!
//! The files follow that list: `connect.rs` sets a client up from the
//! kubeconfig or the service account, `call.rs` is the call policy (retries,
//! the timeout, errors that never quote data), `secrets.rs` observes and
//! writes Secrets, `lease.rs` is the lock, `registrations.rs` reads and
//! writes the `KubernetesCluster` registrations on mgmt, `report.rs` records
//! Events and writes the status ConfigMap, and this file holds the type, the
//! [`Backend`] implementation and the runtime bridge. Every request of them
//! goes through `call.rs`, which also counts and times it for the metrics.

mod call;
mod clients;
mod connect;
mod kubeconfig;
mod lease;
mod limit;
mod registrations;
mod report;
mod secrets;
mod transport;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, Config};

use self::call::CallError;
pub use self::call::{ApiStatus, DecodeError, MAX_ATTEMPTS, api_calls};
pub use self::clients::{Clients, MIN_OPEN_CLIENTS};
pub use self::lease::LEASE_DURATION;
use super::{Backend, BackendError, LockGuard};
use crate::observed::ClusterObservation;
use crate::plan::{Action, Write};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "relayctl";

static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, Arc<std::io::Error>>> = OnceLock::new();

/// The process-wide runtime every Kubernetes call runs on.
fn runtime() -> Result<&'static tokio::runtime::Runtime, BackendError> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("relayctl-kube")
                .enable_all()
                .build()
                .map_err(Arc::new)
        })
        .as_ref()
        .map_err(|source| BackendError::Runtime {
            source: source.clone(),
        })
}

/// Runs `future` to completion from a plain (non-runtime) thread.
fn block_on<T>(future: impl Future<Output = Result<T, BackendError>>) -> Result<T, BackendError> {
    runtime()?.block_on(future)
}

/// One cluster reached through the Kubernetes API.
pub struct KubeBackend {
    cluster: String,
    via: String,
    server: String,
    /// What its client is built from.
    config: Config,
    /// Its client while open (see [`Clients`]).
    client: clients::ClientSlot,
    /// The client-side bound on its request rate, if it has one.
    limiter: Option<limit::Limiter>,
    timeout: Duration,
    /// Namespaces known to exist (checked or created by this process).
    namespaces: Mutex<BTreeSet<String>>,
    /// `uid` of every observed Secret by (namespace, name, resourceVersion):
    /// an update or delete also requires the same object, not only the same
    /// version of an object with that name.
    uids: Mutex<BTreeMap<(String, String, String), String>>,
}

impl std::fmt::Debug for KubeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBackend")
            .field("cluster", &self.cluster)
            .field("via", &self.via)
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KubeBackend {
    /// The cluster's client: the open one, or a new one (the first use, or
    /// after it was dropped to keep the fleet's open clients bounded).
    fn client(&self) -> Result<Client, kube::Error> {
        self.client.get(|| {
            // The client spawns its request buffer on the runtime.
            let _entered = runtime().ok().map(tokio::runtime::Runtime::enter);
            transport::client(self.config.clone()).map_err(kube::Error::Service)
        })
    }

    /// [`KubeBackend::client`] for an [`Api`], failing as a connection that
    /// cannot be set up.
    fn api_client(&self) -> Result<Client, BackendError> {
        self.client().map_err(|e| BackendError::Connect {
            cluster: self.cluster.clone(),
            what: format!("cannot set up a client for {}", self.server),
            source: Some(call::sanitized(&e)),
        })
    }

    /// Creates `namespace` unless this process already knows it exists:
    /// a POST first, a 409 meaning it exists (no read before the write).
    async fn ensure_namespace(&self, namespace: &str) -> Result<(), BackendError> {
        if self.knows_namespace(namespace) {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.api_client()?);
        let wanted = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match self
            .call(self.deadline(), || api.create(&params, &wanted))
            .await
        {
            Ok(_) => {
                tracing::info!(cluster = %self.cluster, namespace, "created the namespace");
            }
            // It exists (or was created meanwhile by someone else): fine.
            Err(CallError::Api(status)) if status.code == 409 => {}
            // Not allowed to create namespaces (they are cluster-scoped; some
            // grant only the namespaced Role): assume it exists; a write into
            // a missing namespace fails with its own clear error.
            Err(CallError::Api(status)) if status.code == 403 => {
                tracing::debug!(cluster = %self.cluster, namespace, "may not create namespaces; assuming it exists");
            }
            Err(e) => {
                return Err(self.fail(
                    format!(
                        "creating namespace `{namespace}` on cluster `{}`",
                        self.cluster
                    ),
                    e,
                ));
            }
        }
        self.know_namespace(namespace);
        Ok(())
    }

    /// Whether this process knows `namespace` exists on the cluster.
    fn knows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .lock()
            .is_ok_and(|known| known.contains(namespace))
    }

    /// Records that `namespace` exists (something was read from or written
    /// into it).
    fn know_namespace(&self, namespace: &str) {
        if let Ok(mut known) = self.namespaces.lock() {
            known.insert(namespace.to_owned());
        }
    }
}

impl Backend for KubeBackend {
    fn describe(&self) -> String {
        format!("{} at {}", self.via, self.server)
    }

    fn target(&self) -> String {
        self.server.trim_end_matches('/').to_owned()
    }

    fn observe(
        &self,
        namespace: &str,
        instance: &str,
        names: &[String],
    ) -> Result<ClusterObservation, BackendError> {
        block_on(self.observe_async(namespace, instance, names, &[]))
    }

    fn warm(&self) {
        // Building the client starts dialling; an error is the first call's.
        let _ = self.client();
    }

    fn observe_split(
        &self,
        namespace: &str,
        instance: &str,
        names: &[String],
        with_list: &[String],
    ) -> Result<ClusterObservation, BackendError> {
        block_on(self.observe_async(namespace, instance, names, with_list))
    }

    fn write(&self, write: &Write) -> Result<Option<String>, BackendError> {
        let object = &write.object;
        match (write.action, write.precondition.as_deref()) {
            (Action::Create | Action::Update, None) => block_on(self.create(object)),
            (Action::Create | Action::Update, Some(version)) => {
                block_on(self.update(object, version))
            }
            (Action::Delete, Some(version)) => {
                block_on(self.delete(object, version)).map(|()| None)
            }
            // Nothing to delete was observed: it is absent, as wanted.
            (Action::Delete, None) => Ok(None),
            (Action::NoOp | Action::Conflict | Action::Error, _) => Ok(write.precondition.clone()),
        }
    }

    fn observe_registrations(
        &self,
        namespace: &str,
    ) -> Result<BTreeMap<String, crate::observed::Registration>, BackendError> {
        block_on(self.observe_registrations_async(namespace))
    }

    fn write_registration(
        &self,
        write: &crate::plan::RegistrationWrite,
    ) -> Result<(), BackendError> {
        block_on(self.write_registration_async(write))
    }

    fn records_events(&self) -> bool {
        true
    }

    fn record_event(
        &self,
        note: &crate::events::EventNote,
        instance: &str,
        reporter: &str,
    ) -> Result<bool, BackendError> {
        block_on(self.record_event_async(note, instance, reporter)).map(|()| true)
    }

    fn write_status(
        &self,
        namespace: &str,
        name: &str,
        instance: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<bool, BackendError> {
        block_on(self.write_status_async(namespace, name, instance, data)).map(|()| true)
    }

    fn lock(
        &self,
        namespace: &str,
        instance: &str,
        holder: &str,
        timeout: Duration,
    ) -> Result<Box<dyn LockGuard>, BackendError> {
        let lock = block_on(self.acquire(namespace, instance, holder, timeout, false))?;
        Ok(Box::new(lock))
    }

    fn fence_writer(
        &self,
        namespace: &str,
        instance: &str,
        holder: &str,
    ) -> Result<Box<dyn LockGuard>, BackendError> {
        let name = format!("{instance}.writer");
        let lock = block_on(self.acquire(namespace, &name, holder, Duration::ZERO, true))?;
        Ok(Box::new(lock))
    }

    fn read_status(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, BackendError> {
        block_on(self.read_status_async(namespace, name))
    }
}
