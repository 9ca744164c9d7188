//! Carries out a plan's writes: no decisions, only order and concurrency.
//!
//! The management cluster goes first, one write at a time in plan order (root,
//! signing, server, token); its inventory is written last, once every orphan
//! was pruned. If the management cluster fails, nothing else is written:
//! workloads would be handed a root or token that mgmt does not have. Then
//! workload and orphan clusters run concurrently, at most `parallelism` at a
//! time; a failing cluster stops at its first failed write and does not stop
//! the others. Every write carries its observed version as a precondition, so
//! a concurrent change is detected, and a rerun converges after any failure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::backend::Backend;
use crate::fleet::parallel_map;
use crate::model::ClusterName;
use crate::plan::{ClusterWrites, Role};

/// What happened on one cluster.
#[derive(Debug)]
pub struct ClusterOutcome {
    /// Cluster.
    pub cluster: ClusterName,
    /// Its role.
    pub role: Role,
    /// Writes carried out.
    pub written: usize,
    /// The failure, if any: the Secret and the error chain.
    pub error: Option<String>,
}

/// The result of an apply over the fleet.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Per cluster, management first.
    pub outcomes: Vec<ClusterOutcome>,
}

impl ApplyReport {
    /// Whether every cluster succeeded.
    pub fn ok(&self) -> bool {
        self.outcomes.iter().all(|o| o.error.is_none())
    }

    /// Writes carried out over the fleet.
    pub fn written(&self) -> usize {
        self.outcomes.iter().map(|o| o.written).sum()
    }
}

/// Carries out `writes` through `backends`.
pub fn apply(
    writes: &[ClusterWrites],
    backends: &BTreeMap<ClusterName, Arc<dyn Backend>>,
    parallelism: usize,
    on_done: &(dyn Fn(&ClusterOutcome) + Sync),
) -> ApplyReport {
    let mut report = ApplyReport::default();
    let written = Written::default();
    let (mgmt, rest): (Vec<_>, Vec<_>) = writes.iter().partition(|w| w.role == Role::Management);
    for cluster in &mgmt {
        let outcome = apply_cluster(cluster, backends, &written);
        on_done(&outcome);
        report.outcomes.push(outcome);
    }
    if !report.ok() {
        for cluster in rest {
            report.outcomes.push(ClusterOutcome {
                cluster: cluster.cluster.clone(),
                role: cluster.role,
                written: 0,
                error: if cluster.writes.is_empty() {
                    None
                } else {
                    Some("not applied: the management cluster failed first".to_owned())
                },
            });
        }
        return report;
    }
    let pending: Vec<&ClusterWrites> = rest.into_iter().filter(|w| !w.writes.is_empty()).collect();
    let outcomes = parallel_map(pending, parallelism, |cluster| {
        let outcome = apply_cluster(cluster, backends, &written);
        on_done(&outcome);
        outcome
    });
    report.outcomes.extend(outcomes);
    let orphans_pruned = report
        .outcomes
        .iter()
        .all(|o| o.role != Role::Orphan || o.error.is_none());
    for cluster in writes.iter().filter(|w| !w.last.is_empty()) {
        let pending = ClusterWrites {
            writes: cluster.last.clone(),
            last: Vec::new(),
            registrations: Vec::new(),
            ..cluster.clone()
        };
        let outcome = if orphans_pruned {
            apply_cluster(&pending, backends, &written)
        } else {
            ClusterOutcome {
                cluster: pending.cluster,
                role: pending.role,
                written: 0,
                error: Some("inventory kept: an orphan cluster could not be pruned; it is retried on the next run".to_owned()),
            }
        };
        on_done(&outcome);
        match report
            .outcomes
            .iter_mut()
            .find(|o| o.cluster == outcome.cluster)
        {
            Some(existing) => {
                existing.written += outcome.written;
                existing.error = existing.error.take().or(outcome.error);
            }
            None => report.outcomes.push(outcome),
        }
    }
    report
}

/// The version each object has after its write in this apply, for writes
/// chained to an earlier one.
type Written = Mutex<BTreeMap<(ClusterName, String, String), Option<String>>>;

fn apply_cluster(
    cluster: &ClusterWrites,
    backends: &BTreeMap<ClusterName, Arc<dyn Backend>>,
    written: &Written,
) -> ClusterOutcome {
    let mut outcome = ClusterOutcome {
        cluster: cluster.cluster.clone(),
        role: cluster.role,
        written: 0,
        error: None,
    };
    if cluster.writes.is_empty() && cluster.registrations.is_empty() {
        return outcome;
    }
    let Some(backend) = backends.get(&cluster.cluster) else {
        outcome.error = Some("no backend for this cluster".to_owned());
        return outcome;
    };
    for write in &cluster.writes {
        let key = (
            cluster.cluster.clone(),
            write.object.namespace.clone(),
            write.object.name.clone(),
        );
        let chained;
        let write = if write.chained {
            let earlier = written.lock().ok().and_then(|w| w.get(&key).cloned());
            chained = crate::plan::Write {
                precondition: earlier.unwrap_or_else(|| write.precondition.clone()),
                chained: false,
                ..write.clone()
            };
            &chained
        } else {
            write
        };
        match backend.write(write) {
            Ok(version) => {
                outcome.written += 1;
                if let Ok(mut w) = written.lock() {
                    w.insert(key, version);
                }
                crash_point::after_write();
            }
            Err(err) => {
                outcome.error = Some(format!(
                    "{} {}/{}: {}",
                    match write.action {
                        crate::plan::Action::Delete => "deleting",
                        crate::plan::Action::Create => "creating",
                        _ => "updating",
                    },
                    write.object.namespace,
                    write.object.name,
                    crate::error::error_chain(&err)
                ));
                break;
            }
        }
    }
    if outcome.error.is_some() {
        return outcome;
    }
    // Registrations (mgmt) after its Secrets: a registered cluster's agent
    // connects as soon as the server accepts it.
    for write in &cluster.registrations {
        match backend.write_registration(write) {
            Ok(()) => outcome.written += 1,
            Err(err) => {
                outcome.error = Some(format!(
                    "{} {}: {}",
                    match write.action {
                        crate::plan::Action::Delete => "deleting",
                        crate::plan::Action::Create => "creating",
                        _ => "updating",
                    },
                    crate::relay::registration::change_name(&write.registration.name),
                    crate::error::error_chain(&err)
                ));
                break;
            }
        }
    }
    outcome
}

/// A test hook for crash tests: with `RELAYCTL_TEST_STOP_AFTER_WRITES=N`,
/// the process stops itself (SIGSTOP) right after its N-th successful
/// write, so that a test can `kill -9` it at exactly that point and check
/// that a rerun resumes and loses nothing. Unset, it costs one relaxed
/// atomic increment per write.
mod crash_point {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static WRITES: AtomicU64 = AtomicU64::new(0);

    pub(super) fn after_write() {
        static STOP_AT: OnceLock<Option<u64>> = OnceLock::new();
        let stop_at = STOP_AT.get_or_init(|| {
            std::env::var("RELAYCTL_TEST_STOP_AFTER_WRITES")
                .ok()
                .and_then(|v| v.parse().ok())
        });
        let n = WRITES.fetch_add(1, Ordering::Relaxed) + 1;
        if *stop_at == Some(n) {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::STOP,
            );
        }
    }
}
