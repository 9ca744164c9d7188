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

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, DeleteParams, ListParams, ObjectList, ObjectMeta, Patch, PatchParams, PostParams,
    Preconditions,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{Request, Status};
use kube::{Client, Config, Resource as _};
use serde::Serialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{Backend, BackendError, LockGuard, Reach};
use crate::model::{ClusterName, Connection};
use crate::observed::{ClusterObservation, LABEL_INSTANCE, SecretObject};
use crate::plan::{Action, Write};
use crate::secret::SecretBytes;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "relayctl";
/// How long a Lease is valid without renewal: a run that was killed blocks
/// the next one for at most this long.
pub const LEASE_DURATION: Duration = Duration::from_secs(60);
/// How often a held Lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(20);
/// Attempts per API call (the first try included), within the timeout.
pub const MAX_ATTEMPTS: u32 = 5;
/// Pause before the second attempt; doubled each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a waiting `lock` looks at the Lease again.
const LOCK_POLL: Duration = Duration::from_millis(500);

static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();

/// The process-wide runtime every Kubernetes call runs on.
fn runtime() -> Result<&'static tokio::runtime::Runtime, BackendError> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("relayctl-kube")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|why| BackendError::Connect {
            reason: format!("cannot start the async runtime for Kubernetes clients: {why}"),
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
    client: Client,
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

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Runs `attempt` until it succeeds, fails for good, runs out of attempts
    /// or reaches `deadline`.
    async fn call<T, Fut>(
        &self,
        deadline: Instant,
        mut attempt: impl FnMut() -> Fut,
    ) -> Result<T, CallError>
    where
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(CallError::Timeout);
            }
            let error = match tokio::time::timeout(remaining, attempt()).await {
                Err(_) => return Err(CallError::Timeout),
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => error,
            };
            let pause = backoff(attempts);
            if !retryable(&error) || attempts >= MAX_ATTEMPTS || Instant::now() + pause >= deadline
            {
                return Err(CallError::from_kube(error, attempts));
            }
            tracing::debug!(
                cluster = %self.cluster,
                attempt = attempts,
                error = %sanitized(&error),
                "retrying a Kubernetes API call in {pause:?}"
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// A Secret request whose body is decoded here (see the module docs).
    async fn secret_call(
        &self,
        deadline: Instant,
        make: impl Fn() -> Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<Zeroizing<String>, CallError> {
        self.call(deadline, || {
            let request = make();
            async move {
                let request = request.map_err(kube::Error::BuildRequest)?;
                self.client.request_text(request).await
            }
        })
        .await
        .map(Zeroizing::new)
    }

    /// The error to report for a failed call.
    fn fail(&self, operation: String, error: CallError) -> BackendError {
        match error {
            CallError::Api(status) if status.code == 401 => {
                BackendError::Unauthorized { operation }
            }
            CallError::Api(status) if status.code == 403 => BackendError::Forbidden {
                operation,
                message: status.message,
            },
            CallError::Api(status) => BackendError::Kube {
                operation,
                source: Box::new(ApiStatus::from(*status)),
            },
            CallError::Transport { error, attempts } if is_transport(&error) => {
                BackendError::Unreachable {
                    cluster: self.cluster.clone(),
                    server: self.server.clone(),
                    attempts,
                    source: sanitized(&error),
                }
            }
            CallError::Transport { error, .. } => BackendError::Kube {
                operation,
                source: sanitized(&error),
            },
            CallError::Decode(error) => BackendError::Kube {
                operation,
                source: Box::new(error),
            },
            CallError::Timeout => BackendError::Timeout {
                operation,
                cluster: self.cluster.clone(),
                after: self.timeout,
            },
        }
    }

    fn stale(namespace: &str, name: &str) -> BackendError {
        BackendError::Stale {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn remember_uid(&self, object: &SecretObject, uid: Option<String>) {
        if let (Some(uid), Ok(mut uids)) = (uid, self.uids.lock()) {
            uids.insert(
                (
                    object.namespace.clone(),
                    object.name.clone(),
                    object.version.clone(),
                ),
                uid,
            );
        }
    }

    /// Remembers the uid for preconditions, and as an identity of the
    /// storage: another context that sees the same Secret uid reaches the
    /// same apiserver and namespace.
    fn remember_identity(
        &self,
        object: &SecretObject,
        uid: Option<String>,
        observation: &mut ClusterObservation,
    ) {
        if let Some(uid) = &uid {
            observation.identities.insert(format!("secret-uid:{uid}"));
        }
        self.remember_uid(object, uid);
    }

    fn uid_for(&self, namespace: &str, name: &str, version: &str) -> Option<String> {
        self.uids.lock().ok().and_then(|uids| {
            uids.get(&(namespace.to_owned(), name.to_owned(), version.to_owned()))
                .cloned()
        })
    }

    /// Creates `namespace` unless this process already knows it exists.
    async fn ensure_namespace(&self, namespace: &str) -> Result<(), BackendError> {
        if self
            .namespaces
            .lock()
            .is_ok_and(|known| known.contains(namespace))
        {
            return Ok(());
        }
        let deadline = self.deadline();
        let api: Api<Namespace> = Api::all(self.client.clone());
        let existing = match self.call(deadline, || api.get_opt(namespace)).await {
            Ok(existing) => existing.is_some(),
            // Not allowed to look (namespaces are cluster-scoped; some grant
            // only the namespaced Role): assume it exists; a write into a
            // missing namespace fails with its own clear error.
            Err(CallError::Api(status)) if status.code == 403 => {
                tracing::debug!(cluster = %self.cluster, namespace, "may not read namespaces; assuming it exists");
                true
            }
            Err(e) => {
                return Err(self.fail(
                    format!(
                        "reading namespace `{namespace}` of cluster `{}`",
                        self.cluster
                    ),
                    e,
                ));
            }
        };
        if !existing {
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
            match self.call(deadline, || api.create(&params, &wanted)).await {
                Ok(_) => {
                    tracing::info!(cluster = %self.cluster, namespace, "created the namespace")
                }
                // Created meanwhile by someone else: fine.
                Err(CallError::Api(status)) if status.code == 409 => {}
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
        }
        if let Ok(mut known) = self.namespaces.lock() {
            known.insert(namespace.to_owned());
        }
        Ok(())
    }

    async fn observe_async(
        &self,
        namespace: &str,
        instance: &str,
        names: &[String],
    ) -> Result<ClusterObservation, BackendError> {
        let deadline = self.deadline();
        let request = Request::new(Secret::url_path(&(), Some(namespace)));
        let selector = format!("{LABEL_INSTANCE}={instance}");
        let params = ListParams::default().labels(&selector);
        let text = self
            .secret_call(deadline, || request.list(&params))
            .await
            .map_err(|e| {
                self.fail(
                    format!(
                        "listing Secrets labelled `{selector}` in namespace `{namespace}` of cluster `{}`",
                        self.cluster
                    ),
                    e,
                )
            })?;
        let list: ObjectList<Secret> = decode(&text).map_err(|e| {
            self.fail(
                format!(
                    "listing Secrets in namespace `{namespace}` of cluster `{}`",
                    self.cluster
                ),
                CallError::Decode(e),
            )
        })?;
        drop(text);
        let mut observation = ClusterObservation::default();
        for secret in list.items {
            let (object, uid) = to_object(namespace, secret);
            self.remember_identity(&object, uid, &mut observation);
            observation.secrets.insert(object.name.clone(), object);
        }
        let missing: BTreeSet<&String> = names
            .iter()
            .filter(|n| !observation.secrets.contains_key(n.as_str()))
            .collect();
        for name in missing {
            let operation = || {
                format!(
                    "reading Secret `{namespace}/{name}` of cluster `{}`",
                    self.cluster
                )
            };
            let text = match self
                .secret_call(deadline, || request.get(name, &Default::default()))
                .await
            {
                Ok(text) => text,
                Err(CallError::Api(status)) if status.code == 404 => continue,
                Err(e) => return Err(self.fail(operation(), e)),
            };
            let secret: Secret =
                decode(&text).map_err(|e| self.fail(operation(), CallError::Decode(e)))?;
            let (object, uid) = to_object(namespace, secret);
            self.remember_identity(&object, uid, &mut observation);
            observation.secrets.insert(object.name.clone(), object);
        }
        Ok(observation)
    }

    async fn create(&self, object: &SecretObject) -> Result<Option<String>, BackendError> {
        let (namespace, name) = (&object.namespace, &object.name);
        self.ensure_namespace(namespace).await?;
        let operation = || {
            format!(
                "creating Secret `{namespace}/{name}` on cluster `{}`",
                self.cluster
            )
        };
        let body = Zeroizing::new(
            serde_json::to_vec(&SecretBody::new(object, None, None, true))
                .map_err(|e| self.fail(operation(), CallError::Decode(DecodeError::encode(&e))))?,
        );
        let request = Request::new(Secret::url_path(&(), Some(namespace)));
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match self
            .secret_call(self.deadline(), || {
                request.create(&params, body.as_slice().to_vec())
            })
            .await
        {
            Ok(text) => Ok(resource_version(text.as_bytes())),
            Err(CallError::Api(status)) if status.code == 409 => Err(Self::stale(namespace, name)),
            Err(e) => Err(self.fail(operation(), e)),
        }
    }

    async fn update(
        &self,
        object: &SecretObject,
        version: &str,
    ) -> Result<Option<String>, BackendError> {
        let (namespace, name) = (&object.namespace, &object.name);
        let operation = || {
            format!(
                "updating Secret `{namespace}/{name}` on cluster `{}`",
                self.cluster
            )
        };
        let uid = self.uid_for(namespace, name, version);
        let body = SecretBody::new(object, Some(version), uid.as_deref(), false);
        let request = Request::new(Secret::url_path(&(), Some(namespace)));
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&body);
        let deadline = self.deadline();
        let text = match self
            .secret_call(deadline, || request.patch(name, &params, &patch))
            .await
        {
            Ok(text) => text,
            Err(CallError::Api(status)) if status.code == 409 || status.code == 404 => {
                return Err(Self::stale(namespace, name));
            }
            Err(e) => return Err(self.fail(operation(), e)),
        };
        let applied: Secret =
            decode(&text).map_err(|e| self.fail(operation(), CallError::Decode(e)))?;
        drop(text);
        // Keys another field manager left: remove them, under the same kind
        // of precondition, so the Secret holds exactly the planned data.
        let extra: Vec<String> = applied
            .data
            .iter()
            .flat_map(|d| d.keys())
            .filter(|k| !object.data.contains_key(k.as_str()))
            .cloned()
            .collect();
        drop(applied.data);
        if extra.is_empty() {
            return Ok(applied.metadata.resource_version);
        }
        let removal = serde_json::json!({
            "metadata": {
                "resourceVersion": applied.metadata.resource_version,
                "uid": applied.metadata.uid,
            },
            "data": extra.iter().map(|k| (k.clone(), serde_json::Value::Null)).collect::<serde_json::Map<_, _>>(),
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(&removal);
        match self
            .secret_call(deadline, || request.patch(name, &params, &patch))
            .await
        {
            Ok(text) => Ok(resource_version(text.as_bytes())),
            Err(CallError::Api(status)) if status.code == 409 || status.code == 404 => {
                Err(Self::stale(namespace, name))
            }
            Err(e) => Err(self.fail(
                format!(
                    "removing data keys {} from Secret `{namespace}/{name}` on cluster `{}`",
                    extra
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.cluster
                ),
                e,
            )),
        }
    }

    async fn delete(&self, namespace: &str, name: &str, version: &str) -> Result<(), BackendError> {
        let request = Request::new(Secret::url_path(&(), Some(namespace)));
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(version.to_owned()),
                uid: self.uid_for(namespace, name, version),
            }),
            ..DeleteParams::default()
        };
        match self
            .secret_call(self.deadline(), || request.delete(name, &params))
            .await
        {
            Ok(_) => Ok(()),
            Err(CallError::Api(status)) if status.code == 409 || status.code == 404 => {
                Err(Self::stale(namespace, name))
            }
            Err(e) => Err(self.fail(
                format!(
                    "deleting Secret `{namespace}/{name}` on cluster `{}`",
                    self.cluster
                ),
                e,
            )),
        }
    }

    async fn acquire(
        &self,
        namespace: &str,
        instance: &str,
        holder: &str,
        timeout: Duration,
    ) -> Result<KubeLock, BackendError> {
        let started = Instant::now();
        let name = format!("relayctl-{instance}");
        self.ensure_namespace(namespace).await?;
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        let operation = |verb: &str| {
            format!(
                "{verb} Lease `{namespace}/{name}` on cluster `{}`",
                self.cluster
            )
        };
        loop {
            let current = self
                .call(self.deadline(), || api.get_opt(&name))
                .await
                .map_err(|e| self.fail(operation("reading"), e))?;
            let now = Timestamp::now();
            let taken = match current {
                None => {
                    let lease = new_lease(&name, holder, now, None);
                    match self
                        .call(self.deadline(), || api.create(&params, &lease))
                        .await
                    {
                        Ok(lease) => Some(lease),
                        Err(CallError::Api(status)) if status.code == 409 => None,
                        Err(e) => return Err(self.fail(operation("creating"), e)),
                    }
                }
                Some(existing) => match LeaseState::of(&existing, now) {
                    LeaseState::Held { .. } => {
                        let waited = started.elapsed();
                        if waited >= timeout {
                            return Err(BackendError::Locked {
                                instance: instance.to_owned(),
                                holder: format!(
                                    "{}; Lease `{namespace}/{name}` on cluster `{}`, waited {}s",
                                    describe_holder(&existing),
                                    self.cluster,
                                    waited.as_secs()
                                ),
                            });
                        }
                        let pause = LOCK_POLL.min(timeout - waited);
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    LeaseState::Free | LeaseState::Expired => {
                        let previous = existing.spec.as_ref();
                        let transitions = previous
                            .and_then(|s| s.lease_transitions)
                            .unwrap_or(0)
                            .saturating_add(1);
                        let mut lease = new_lease(&name, holder, now, Some(transitions));
                        lease.metadata.resource_version = existing.metadata.resource_version;
                        lease.metadata.uid = existing.metadata.uid;
                        match self
                            .call(self.deadline(), || api.replace(&name, &params, &lease))
                            .await
                        {
                            Ok(lease) => {
                                tracing::info!(
                                    cluster = %self.cluster,
                                    previous = previous.and_then(|s| s.holder_identity.as_deref()).unwrap_or(""),
                                    "took over an expired or released apply lock"
                                );
                                Some(lease)
                            }
                            Err(CallError::Api(status)) if status.code == 409 => None,
                            Err(e) => return Err(self.fail(operation("taking over"), e)),
                        }
                    }
                },
            };
            if let Some(lease) = taken {
                return Ok(KubeLock::start(
                    api,
                    name,
                    holder.to_owned(),
                    self.cluster.clone(),
                    self.timeout,
                    lease,
                ));
            }
            // Lost a race with another run: look again.
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
        block_on(self.observe_async(namespace, instance, names))
    }

    fn write(&self, write: &Write) -> Result<Option<String>, BackendError> {
        let object = &write.object;
        match (write.action, write.precondition.as_deref()) {
            (Action::Create | Action::Update, None) => block_on(self.create(object)),
            (Action::Create | Action::Update, Some(version)) => {
                block_on(self.update(object, version))
            }
            (Action::Delete, Some(version)) => {
                block_on(self.delete(&object.namespace, &object.name, version)).map(|()| None)
            }
            // Nothing to delete was observed: it is absent, as wanted.
            (Action::Delete, None) => Ok(None),
            (Action::NoOp | Action::Conflict | Action::Error, _) => Ok(write.precondition.clone()),
        }
    }

    fn lock(
        &self,
        namespace: &str,
        instance: &str,
        holder: &str,
        timeout: Duration,
    ) -> Result<Box<dyn LockGuard>, BackendError> {
        let lock = block_on(self.acquire(namespace, instance, holder, timeout))?;
        Ok(Box::new(lock))
    }
}

/// The `resourceVersion` of the object in an API answer, if it has one.
fn resource_version(text: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    }
    serde_json::from_slice::<Answer>(text)
        .ok()
        .and_then(|a| a.metadata.resource_version)
}

/// The body of a Secret write: planned labels, annotations and data.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretBody<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: BodyMeta<'a>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    type_: Option<&'static str>,
    data: BTreeMap<&'a str, Encoded<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BodyMeta<'a> {
    name: &'a str,
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
}

impl<'a> SecretBody<'a> {
    /// `type` is only set on create: it is immutable, and an adopted Secret
    /// keeps the type it has.
    fn new(
        object: &'a SecretObject,
        resource_version: Option<&'a str>,
        uid: Option<&'a str>,
        create: bool,
    ) -> Self {
        Self {
            api_version: "v1",
            kind: "Secret",
            metadata: BodyMeta {
                name: &object.name,
                namespace: &object.namespace,
                labels: &object.labels,
                annotations: &object.annotations,
                resource_version,
                uid,
            },
            type_: create.then_some("Opaque"),
            data: object
                .data
                .iter()
                .map(|(k, v)| (k.as_str(), Encoded(v)))
                .collect(),
        }
    }
}

/// Serializes as base64 straight into the output, with no intermediate copy.
struct Encoded<'a>(&'a SecretBytes);

impl Serialize for Encoded<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Base64Display::new(self.0.expose(), &STANDARD))
    }
}

impl std::fmt::Debug for SecretBody<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBody")
            .field("name", &self.metadata.name)
            .field("namespace", &self.metadata.namespace)
            .field("data", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// An observed Secret, its data moved (not copied) into redacting holders,
/// and its `uid`.
fn to_object(namespace: &str, mut secret: Secret) -> (SecretObject, Option<String>) {
    let data = secret
        .data
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, SecretBytes::new(v.0)))
        .collect();
    let meta = secret.metadata;
    (
        SecretObject {
            namespace: meta.namespace.unwrap_or_else(|| namespace.to_owned()),
            name: meta.name.unwrap_or_default(),
            labels: meta.labels.unwrap_or_default(),
            annotations: meta.annotations.unwrap_or_default(),
            data,
            version: meta.resource_version.unwrap_or_default(),
        },
        meta.uid,
    )
}

/// How one API call ended, before it is named for the report.
#[derive(Debug)]
enum CallError {
    /// The API server answered with an error status (after retries, for 429/5xx).
    Api(Box<Status>),
    /// No answer: connection, TLS, or client errors.
    Transport { error: kube::Error, attempts: u32 },
    /// The answer could not be decoded.
    Decode(DecodeError),
    /// The per-cluster timeout passed.
    Timeout,
}

impl CallError {
    fn from_kube(error: kube::Error, attempts: u32) -> Self {
        match error {
            kube::Error::Api(status) => Self::Api(status),
            error => Self::Transport { error, attempts },
        }
    }
}

/// Whether a failed call may succeed when tried again: throttling, server
/// errors, and no answer at all. Other 4xx answers are final.
pub(crate) fn retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => retryable_status(status.code),
        other => is_transport(other),
    }
}

/// Whether an HTTP status is worth retrying: 429 and 5xx.
pub(crate) fn retryable_status(code: u16) -> bool {
    code == 429 || (500..600).contains(&code)
}

/// Errors of reaching the server (connect, TLS, connection reset).
fn is_transport(error: &kube::Error) -> bool {
    matches!(
        error,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)
    )
}

/// The pause after failed attempt `attempt` (1-based): 200 ms, doubling, at most 5 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// A kube error safe to show: decoding errors lose their message, which may
/// quote the document.
fn sanitized(error: &kube::Error) -> Box<dyn std::error::Error + Send + Sync> {
    match error {
        kube::Error::SerdeError(e) => Box::new(DecodeError::from(e)),
        kube::Error::FromUtf8(_) => Box::new(DecodeError {
            what: "the API server's answer is not UTF-8".to_owned(),
        }),
        other => Box::new(Flattened(crate::error::error_chain(other))),
    }
}

/// An error chain flattened into one message (kube errors are not `Clone`).
#[derive(Debug)]
struct Flattened(String);

impl std::fmt::Display for Flattened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Flattened {}

/// The API server's error status: code, reason and message (which names the
/// verb, resource and object, never data).
#[derive(Debug, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiStatus {
    /// HTTP status.
    pub code: u16,
    /// Machine-readable reason (`Conflict`, `Invalid`, …).
    pub reason: String,
    /// The server's message.
    pub message: String,
}

impl From<Status> for ApiStatus {
    fn from(status: Status) -> Self {
        Self {
            code: status.code,
            reason: status.reason,
            message: status.message,
        }
    }
}

/// An answer that could not be decoded; says where, never what.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct DecodeError {
    what: String,
}

impl DecodeError {
    fn encode(e: &serde_json::Error) -> Self {
        Self {
            what: format!("cannot encode the request ({:?})", e.classify()),
        }
    }
}

impl From<&serde_json::Error> for DecodeError {
    fn from(e: &serde_json::Error) -> Self {
        Self {
            what: format!(
                "cannot decode the API server's answer (line {} column {})",
                e.line(),
                e.column()
            ),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError::from(&e))
}

/// Whether a Lease stops another run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseState {
    /// Nobody holds it (released).
    Free,
    /// Its holder stopped renewing it in time.
    Expired,
    /// Held until `until`.
    Held {
        /// When it expires unless renewed.
        until: Timestamp,
    },
}

impl LeaseState {
    pub(crate) fn of(lease: &Lease, now: Timestamp) -> Self {
        let Some(spec) = &lease.spec else {
            return Self::Free;
        };
        if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
            return Self::Free;
        }
        match expiry(spec) {
            Some(until) if until > now => Self::Held { until },
            // No renew time or duration: not a valid claim.
            _ => Self::Expired,
        }
    }
}

fn expiry(spec: &LeaseSpec) -> Option<Timestamp> {
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let seconds = i64::from(spec.lease_duration_seconds?);
    renewed
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
        .ok()
}

fn rfc3339(t: Option<&MicroTime>) -> String {
    t.map(|t| {
        t.0.round(k8s_openapi::jiff::Unit::Second)
            .unwrap_or(t.0)
            .to_string()
    })
    .unwrap_or_else(|| "an unknown time".to_owned())
}

/// "held by `X` since T, expires U".
pub(crate) fn describe_holder(lease: &Lease) -> String {
    let Some(spec) = &lease.spec else {
        return "held by nobody".to_owned();
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    let expires = expiry(spec)
        .map(|t| {
            t.round(k8s_openapi::jiff::Unit::Second)
                .unwrap_or(t)
                .to_string()
        })
        .unwrap_or_else(|| "at an unknown time".to_owned());
    format!(
        "held by `{holder}` since {}, expires {expires} unless renewed",
        rfc3339(spec.acquire_time.as_ref())
    )
}

fn new_lease(name: &str, holder: &str, now: Timestamp, transitions: Option<i32>) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                crate::observed::LABEL_MANAGED_BY.to_owned(),
                crate::observed::MANAGED_BY.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(60)),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: transitions,
            ..LeaseSpec::default()
        }),
    }
}

/// A held Lease: renewed in the background, released on drop.
struct KubeLock {
    api: Api<Lease>,
    name: String,
    holder: String,
    cluster: String,
    timeout: Duration,
    lease: Arc<tokio::sync::Mutex<Lease>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl KubeLock {
    fn start(
        api: Api<Lease>,
        name: String,
        holder: String,
        cluster: String,
        timeout: Duration,
        lease: Lease,
    ) -> Self {
        let lease = Arc::new(tokio::sync::Mutex::new(lease));
        let renewer = runtime().ok().map(|rt| {
            rt.spawn(renew(
                api.clone(),
                name.clone(),
                holder.clone(),
                cluster.clone(),
                lease.clone(),
            ))
        });
        Self {
            api,
            name,
            holder,
            cluster,
            timeout,
            lease,
            renewer,
        }
    }
}

/// Keeps the Lease alive while the lock is held.
async fn renew(
    api: Api<Lease>,
    name: String,
    holder: String,
    cluster: String,
    lease: Arc<tokio::sync::Mutex<Lease>>,
) {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let mut current = lease.lock().await;
        if let Some(spec) = current.spec.as_mut() {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        match api.replace(&name, &params, &current).await {
            Ok(renewed) => *current = renewed,
            Err(kube::Error::Api(status)) if status.code == 409 => match api.get_opt(&name).await {
                Ok(Some(latest))
                    if latest
                        .spec
                        .as_ref()
                        .and_then(|s| s.holder_identity.as_deref())
                        == Some(holder.as_str()) =>
                {
                    *current = latest;
                }
                _ => {
                    tracing::warn!(%cluster, lease = %name, "lost the apply lock: another run took the Lease over");
                    return;
                }
            },
            Err(e) => {
                tracing::warn!(%cluster, lease = %name, error = %sanitized(&e), "cannot renew the apply lock; retrying");
            }
        }
    }
}

/// Deletes the Lease if this run still holds it.
async fn release(
    api: Api<Lease>,
    name: String,
    holder: String,
    cluster: String,
    lease: Arc<tokio::sync::Mutex<Lease>>,
) {
    let ours = |l: &Lease| {
        l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(holder.as_str())
    };
    let mut latest = Some(lease.lock().await.clone());
    for _ in 0..3 {
        let Some(current) = latest.take().filter(|l| ours(l)) else {
            return;
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: current.metadata.resource_version.clone(),
                uid: current.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code == 404 => return,
            Err(kube::Error::Api(status)) if status.code == 409 => {
                latest = api.get_opt(&name).await.ok().flatten();
            }
            Err(e) => {
                tracing::warn!(%cluster, lease = %name, error = %sanitized(&e), "cannot release the apply lock; it expires by itself");
                return;
            }
        }
    }
}

impl LockGuard for KubeLock {}

impl Drop for KubeLock {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        let release = release(
            self.api.clone(),
            self.name.clone(),
            self.holder.clone(),
            self.cluster.clone(),
            self.lease.clone(),
        );
        let timeout = self.timeout;
        let bounded = async move {
            if tokio::time::timeout(timeout, release).await.is_err() {
                tracing::warn!("releasing the apply lock timed out; it expires by itself");
            }
        };
        // Dropped on a runtime thread (not how relayctl uses it): release in
        // the background rather than block a worker.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(bounded);
        } else if let Ok(rt) = runtime() {
            rt.block_on(bounded);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_throttling_server_errors_and_transport_failures_are_retried() {
        for code in [429, 500, 502, 503, 504] {
            assert!(retryable_status(code), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 410, 422] {
            assert!(!retryable_status(code), "{code}");
        }
        let status = |code| {
            kube::Error::Api(Box::new(Status {
                code,
                ..Status::default()
            }))
        };
        assert!(retryable(&status(503)));
        assert!(!retryable(&status(403)));
        let refused = kube::Error::Service(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(retryable(&refused));
        let decode = kube::Error::SerdeError(serde_json::from_str::<u8>("x").unwrap_err());
        assert!(!retryable(&decode));
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn decoding_errors_never_quote_the_document() {
        let err = decode::<Secret>(r#"{"data": {"token": 42, "x": "hunter2"#).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let kube_err =
            kube::Error::SerdeError(serde_json::from_str::<u8>("\"hunter2\"").unwrap_err());
        assert!(!sanitized(&kube_err).to_string().contains("hunter2"));
    }

    #[test]
    fn a_secret_body_carries_the_preconditions_and_base64_data() {
        let object = SecretObject {
            namespace: "ns".into(),
            name: "s".into(),
            labels: BTreeMap::from([("a".into(), "b".into())]),
            annotations: BTreeMap::new(),
            data: BTreeMap::from([("token".into(), SecretBytes::from("abc".to_owned()))]),
            version: String::new(),
        };
        let body = SecretBody::new(&object, Some("42"), Some("u-1"), false);
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["metadata"]["resourceVersion"], "42");
        assert_eq!(json["metadata"]["uid"], "u-1");
        assert_eq!(json["data"]["token"], "YWJj");
        assert!(
            json.get("type").is_none(),
            "type is immutable: only on create"
        );
        let created = serde_json::to_value(SecretBody::new(&object, None, None, true)).unwrap();
        assert_eq!(created["type"], "Opaque");
        assert!(created["metadata"].get("resourceVersion").is_none());
        assert!(!format!("{body:?}").contains("abc"));
    }

    #[test]
    fn lease_states_follow_holder_and_renew_time() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let mut lease = new_lease("relayctl-prod", "me", now, None);
        assert_eq!(
            LeaseState::of(&lease, now),
            LeaseState::Held {
                until: "2026-01-01T12:01:00Z".parse().unwrap()
            }
        );
        let later: Timestamp = "2026-01-01T12:01:01Z".parse().unwrap();
        assert_eq!(LeaseState::of(&lease, later), LeaseState::Expired);
        let text = describe_holder(&lease);
        assert!(text.contains("`me`"), "{text}");
        assert!(text.contains("2026-01-01T12:01:00Z"), "{text}");
        lease.spec.as_mut().unwrap().holder_identity = None;
        assert_eq!(LeaseState::of(&lease, now), LeaseState::Free);
        lease.spec = None;
        assert_eq!(LeaseState::of(&lease, now), LeaseState::Free);
    }
}
