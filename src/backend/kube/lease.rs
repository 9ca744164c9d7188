//! The apply lock: a `coordination.k8s.io/v1` Lease `relayctl-<instance>`
//! in the relay namespace, taken when free or expired, renewed in the
//! background while held and released (deleted under precondition) on drop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use tokio::time::Instant;

use super::call::{CallError, sanitized};
use super::{FIELD_MANAGER, KubeBackend, runtime};
use crate::backend::{BackendError, LockGuard};

/// How long a Lease is valid without renewal: a run that was killed blocks
/// the next one for at most this long.
pub const LEASE_DURATION: Duration = Duration::from_secs(60);
/// How often a held Lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(20);
/// How often a waiting `lock` looks at the Lease again.
const LOCK_POLL: Duration = Duration::from_millis(500);

impl KubeBackend {
    pub(super) async fn acquire(
        &self,
        namespace: &str,
        instance: &str,
        holder: &str,
        timeout: Duration,
        reclaim_own: bool,
    ) -> Result<KubeLock, BackendError> {
        let started = Instant::now();
        let name = format!("relayctl-{instance}");
        let api: Api<Lease> = Api::namespaced(self.api_client()?, namespace);
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
        let read = || async {
            self.call(self.deadline(), || api.get_opt(&name))
                .await
                .map_err(|e| self.fail(operation("reading"), e))
        };
        // Create first; read the Lease only when it exists (409). `None`:
        // try to create it; `Some(lease)`: what was read.
        let mut seen: Option<Option<Lease>> = None;
        let mut created_namespace = false;
        loop {
            let now = Timestamp::now();
            let existing = match seen.take() {
                None => {
                    let lease = new_lease(&name, holder, now, None);
                    match self
                        .call(self.deadline(), || api.create(&params, &lease))
                        .await
                    {
                        Ok(lease) => return Ok(self.hold(namespace, api, name, holder, lease)),
                        Err(CallError::Api(status)) if status.code == 409 => read().await?,
                        // The namespace is missing (a first apply): create it, once.
                        Err(CallError::Api(status)) if status.code == 404 && !created_namespace => {
                            self.ensure_namespace(namespace).await?;
                            created_namespace = true;
                            continue;
                        }
                        Err(e) => return Err(self.fail(operation("creating"), e)),
                    }
                }
                Some(existing) => existing,
            };
            // Deleted since: create it again.
            let Some(existing) = existing else { continue };
            match LeaseState::of(&existing, now) {
                // A shard's rerun takes over the Lease its killed
                // predecessor (the same holder) left behind.
                LeaseState::Held { .. } if !(reclaim_own && held_by(&existing, holder)) => {
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
                    seen = Some(read().await?);
                }
                LeaseState::Free | LeaseState::Expired | LeaseState::Held { .. } => {
                    let previous = existing.spec.as_ref();
                    let transitions = previous
                        .and_then(|s| s.lease_transitions)
                        .unwrap_or(0)
                        .saturating_add(1);
                    let mut lease = new_lease(&name, holder, now, Some(transitions));
                    lease.metadata.resource_version = existing.metadata.resource_version.clone();
                    lease.metadata.uid = existing.metadata.uid.clone();
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
                            return Ok(self.hold(namespace, api, name, holder, lease));
                        }
                        // Lost a race with another run: look again.
                        Err(CallError::Api(status)) if status.code == 409 => {
                            seen = Some(read().await?);
                        }
                        Err(e) => return Err(self.fail(operation("taking over"), e)),
                    }
                }
            }
        }
    }

    /// The lock, once the Lease is ours: its namespace exists.
    fn hold(
        &self,
        namespace: &str,
        api: Api<Lease>,
        name: String,
        holder: &str,
        lease: Lease,
    ) -> KubeLock {
        self.know_namespace(namespace);
        KubeLock::start(
            api,
            name,
            holder.to_owned(),
            self.cluster.clone(),
            self.timeout,
            lease,
        )
    }
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

/// Whether `lease` names `holder` as its holder.
fn held_by(lease: &Lease, holder: &str) -> bool {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        == Some(holder)
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
pub(super) struct KubeLock {
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
