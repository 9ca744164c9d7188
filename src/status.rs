//! How each cluster of the fleet stands after a run, in five words, and the
//! run's outcome as data: what the `relayctl_cluster_state` metric, the
//! status ConfigMap of a Job and `check -o prometheus` report.
//!
//! Pure: a plan and the clusters whose writes failed in, a [`RunStatus`]
//! out. The shell adds the clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::{Action, Plan};

/// How one cluster stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    /// Nothing to change: the cluster holds what the manifests say (for
    /// `check`: every line √).
    Converged,
    /// This run found changes to make and made them (a plan-only run: found
    /// them). Drift that is repaired tick after tick means something undoes
    /// relayctl's writes. For `check`: a ‼ line.
    Drift,
    /// The cluster could not be read.
    Unreachable,
    /// A Secret relayctl does not own stands where it would write; left untouched.
    Conflict,
    /// A Secret cannot be planned, or a write failed (for `check`: a × line).
    Error,
}

impl ClusterState {
    /// Every state, in the order metrics list them.
    pub const ALL: [Self; 5] = [
        Self::Converged,
        Self::Drift,
        Self::Unreachable,
        Self::Conflict,
        Self::Error,
    ];

    /// The state as metrics and JSON spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Converged => "converged",
            Self::Drift => "drift",
            Self::Unreachable => "unreachable",
            Self::Conflict => "conflict",
            Self::Error => "error",
        }
    }

    /// Whether the cluster needs a person (drift is repaired by relayctl).
    pub fn failing(self) -> bool {
        matches!(self, Self::Unreachable | Self::Conflict | Self::Error)
    }
}

impl std::fmt::Display for ClusterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One cluster's state and, when it is not converged, why (one line, no
/// secret: the plan's reasons and error messages name objects, not values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Cluster name.
    pub name: String,
    /// Its state.
    pub state: ClusterState,
    /// Why, when not converged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The state of every cluster of `plan` once its writes were carried out:
/// `failed` holds the clusters whose writes failed, with the error.
pub fn cluster_states(plan: &Plan, failed: &BTreeMap<String, String>) -> Vec<ClusterStatus> {
    plan.clusters
        .iter()
        .map(|cluster| {
            let (state, reason) = if let Some(error) = &cluster.error {
                // How `fleet::observe` prefixes what kept it from reading.
                let unreachable = ["unreachable:", "unreadable:", "not observed"]
                    .iter()
                    .any(|p| error.starts_with(p));
                let state = if unreachable {
                    ClusterState::Unreachable
                } else {
                    ClusterState::Error
                };
                (state, Some(error.clone()))
            } else if let Some(error) = failed.get(&cluster.name) {
                (ClusterState::Error, Some(error.clone()))
            } else if let Some(change) = cluster.changes.iter().find(|c| c.action == Action::Error)
            {
                (ClusterState::Error, Some(change_reason(change)))
            } else if let Some(change) = cluster
                .changes
                .iter()
                .find(|c| c.action == Action::Conflict)
            {
                (ClusterState::Conflict, Some(change_reason(change)))
            } else if let Some(change) = cluster.changes.iter().find(|c| c.action.writes()) {
                (ClusterState::Drift, Some(change_reason(change)))
            } else {
                (ClusterState::Converged, None)
            };
            ClusterStatus {
                name: cluster.name.clone(),
                state,
                reason,
            }
        })
        .collect()
}

fn change_reason(change: &crate::plan::Change) -> String {
    let mut text = format!(
        "{} {}/{}",
        change.action.as_str(),
        change.namespace,
        change.name
    );
    if !change.reasons.is_empty() {
        text.push_str(": ");
        text.push_str(&change.reasons.join("; "));
    }
    text
}

/// `observed` as it stands after the writes that went through: the first
/// `written[cluster]` writes of each cluster, in order (what the metrics of
/// a tick publish, without observing the fleet again).
pub fn after_writes(
    observed: &crate::observed::Observed,
    writes: &[crate::plan::ClusterWrites],
    written: &BTreeMap<String, usize>,
) -> crate::observed::Observed {
    let mut after = observed.clone();
    for cluster in writes {
        let done = written.get(cluster.cluster.as_str()).copied().unwrap_or(0);
        let Some(Ok(obs)) = after.clusters.get_mut(&cluster.cluster) else {
            continue;
        };
        for write in cluster.writes.iter().chain(&cluster.last).take(done) {
            match write.action {
                Action::Create | Action::Update => {
                    obs.secrets
                        .insert(write.object.name.clone(), write.object.clone());
                }
                Action::Delete => {
                    obs.secrets.remove(&write.object.name);
                }
                Action::NoOp | Action::Conflict | Action::Error => {}
            }
        }
    }
    after
}

/// How many clusters are in each state (every state present, zeros too).
pub fn counts(clusters: &[ClusterStatus]) -> BTreeMap<ClusterState, usize> {
    let mut counts: BTreeMap<ClusterState, usize> =
        ClusterState::ALL.iter().map(|s| (*s, 0)).collect();
    for cluster in clusters {
        *counts.entry(cluster.state).or_default() += 1;
    }
    counts
}

/// Most failing clusters a [`RunStatus`] names; the counts cover all.
pub const MAX_FAILING_LISTED: usize = 50;

/// The outcome of one `reconcile` run, as the status ConfigMap holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// Format of this document; bumped on incompatible changes.
    pub format_version: u32,
    /// The `RelayTrust` name.
    pub instance: String,
    /// The commit applied (empty for local manifests).
    pub commit: String,
    /// Where the manifests came from (credentials stripped).
    pub source: String,
    /// Digest of the validated config.
    pub config_digest: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// Whether every cluster converged and every write succeeded.
    pub ok: bool,
    /// Secrets written.
    pub written: usize,
    /// Clusters per state, every state listed.
    pub counts: BTreeMap<ClusterState, usize>,
    /// The first [`MAX_FAILING_LISTED`] clusters that need a person
    /// (unreachable, conflict, error), by name.
    pub failing: Vec<ClusterStatus>,
    /// How many failing clusters `failing` leaves out.
    pub failing_not_listed: usize,
    /// A sharded run: which shard, and the clusters it claimed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardReport>,
}

/// What one shard of a sharded run did with the clusters placed on it:
/// what a coordinator (or `check --shards N`) reads to find a cluster that
/// no shard claimed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardReport {
    /// The shard's index.
    pub index: u32,
    /// How many shards the run had.
    pub count: u32,
    /// The workload clusters it observed, planned and (where needed)
    /// wrote under its writer fence, by name. Every name, not a sample:
    /// a missing one is a cluster without a writer.
    pub claimed: Vec<String>,
    /// Placed on this shard but left alone, with why: another writer held
    /// its writer fence.
    pub skipped: Vec<ClusterStatus>,
}

/// The part of a shard's status document that coverage reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// Digest of the config the run read (hex SHA-256).
    pub config_digest: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// What it claimed.
    pub shard: ShardReport,
}

/// What a run's outcome says, with the clock's readings given.
pub struct RunFacts<'a> {
    /// The plan carried out.
    pub plan: &'a Plan,
    /// Every cluster's state after the writes.
    pub clusters: &'a [ClusterStatus],
    /// The commit applied.
    pub commit: &'a str,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Secrets written.
    pub written: usize,
    /// A sharded run: which shard, and the clusters it claimed.
    pub shard: Option<ShardReport>,
}

/// The status document of a run.
pub fn run_status(facts: &RunFacts<'_>) -> RunStatus {
    let mut failing: Vec<ClusterStatus> = facts
        .clusters
        .iter()
        .filter(|c| c.state.failing())
        .cloned()
        .collect();
    failing.sort_by(|a, b| a.name.cmp(&b.name));
    let not_listed = failing.len().saturating_sub(MAX_FAILING_LISTED);
    failing.truncate(MAX_FAILING_LISTED);
    RunStatus {
        format_version: 1,
        instance: facts.plan.instance.clone(),
        commit: facts.commit.to_owned(),
        source: facts.plan.source.clone(),
        config_digest: facts.plan.config_digest.clone(),
        started_at: facts.started_at.clone(),
        finished_at: facts.finished_at.clone(),
        ok: facts.ok,
        written: facts.written,
        counts: counts(facts.clusters),
        failing,
        failing_not_listed: not_listed,
        shard: facts.shard.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Change, ClusterPlan, Role};

    fn cluster(name: &str, error: Option<&str>, actions: &[Action]) -> ClusterPlan {
        ClusterPlan {
            name: name.into(),
            role: Role::Workload,
            error: error.map(str::to_owned),
            changes: actions
                .iter()
                .map(|a| Change {
                    namespace: "gloo-mesh".into(),
                    name: "relay-root-tls-secret".into(),
                    action: *a,
                    reasons: vec!["why".into()],
                    observed_version: None,
                    data: BTreeMap::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn each_cluster_gets_the_worst_state_that_applies() {
        let p = Plan::of_clusters(vec![
            cluster("a", None, &[Action::NoOp]),
            cluster("b", None, &[Action::NoOp, Action::Update]),
            cluster("c", Some("unreachable: context c: refused"), &[]),
            cluster("d", None, &[Action::Update, Action::Conflict]),
            cluster("e", None, &[Action::Conflict, Action::Error]),
            cluster("f", None, &[Action::Create]),
            cluster("g", Some("blocked: mgmt has a conflict"), &[]),
        ]);
        let failed = BTreeMap::from([("f".to_owned(), "creating x: 403".to_owned())]);
        let states: Vec<(String, ClusterState)> = cluster_states(&p, &failed)
            .into_iter()
            .map(|c| (c.name, c.state))
            .collect();
        use ClusterState::*;
        let want = [
            ("a", Converged),
            ("b", Drift),
            ("c", Unreachable),
            ("d", Conflict),
            ("e", Error),
            ("f", Error),
            ("g", Error),
        ];
        assert_eq!(
            states,
            want.map(|(n, s)| (n.to_owned(), s)).to_vec(),
            "{states:?}"
        );
    }

    #[test]
    fn the_run_status_counts_every_state_and_lists_at_most_fifty_failing() {
        let clusters: Vec<ClusterPlan> = (0..120)
            .map(|i| {
                let name = format!("c{i:03}");
                if i % 2 == 0 {
                    cluster(&name, Some("unreachable: x"), &[])
                } else {
                    cluster(&name, None, &[Action::NoOp])
                }
            })
            .collect();
        let p = Plan::of_clusters(clusters);
        let states = cluster_states(&p, &BTreeMap::new());
        let status = run_status(&RunFacts {
            plan: &p,
            clusters: &states,
            commit: "abc",
            started_at: "t0".into(),
            finished_at: "t1".into(),
            ok: false,
            written: 0,
            shard: None,
        });
        assert_eq!(status.counts[&ClusterState::Unreachable], 60);
        assert_eq!(status.counts[&ClusterState::Converged], 60);
        assert_eq!(status.counts[&ClusterState::Conflict], 0);
        assert_eq!(status.failing.len(), MAX_FAILING_LISTED);
        assert_eq!(status.failing_not_listed, 10);
        assert_eq!(status.failing[0].name, "c000");
        let json = serde_json::to_value(&status).unwrap_or_default();
        assert_eq!(json["counts"]["unreachable"], 60);
    }
}
