//! Kubernetes Events for what changed, never for what stayed the same.
//!
//! A run records an Event (events.k8s.io/v1, reporting controller
//! [`REPORTING_CONTROLLER`]) on the Secret concerned, in the cluster that
//! holds it, for each *transition*: a Secret created, a certificate renewed,
//! a Secret repaired or deleted, a conflict found. A tick that changes
//! nothing records nothing, whatever the fleet's size.
//!
//! A conflict stays until someone resolves it, so it would be found again on
//! every tick: its Event carries a [`EventNote::dedupe`] key (the
//! conflicting object's version), from which the backend names the Event,
//! so the same conflict is recorded once even across Job runs, and again
//! only when the object changes.
//!
//! Pure: the plan and how far each cluster's writes got in, notes out.

use std::collections::{BTreeMap, BTreeSet};

use crate::observed::ANNOTATION_NOT_AFTER;
use crate::plan::{Action, ClusterPlan, ClusterWrites};

/// `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "relayctl.dev/relayctl";

/// Why an Event was recorded: its `reason`, PascalCase as Kubernetes wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// A Secret that was missing was created.
    Created,
    /// A certificate due for renewal (or expired) was reissued.
    Renewed,
    /// A Secret that drifted from the manifests was rewritten.
    Repaired,
    /// A Secret was deleted (pruned, or an agent's stale client certificate).
    Deleted,
    /// A Secret relayctl does not own stands where it would write.
    Conflict,
    /// A CA rotation advanced to its next phase. The rotation machine
    /// (another issue) records it through [`rotation_phase_advanced`].
    RotationPhaseAdvanced,
}

impl Reason {
    /// The `reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "Created",
            Self::Renewed => "Renewed",
            Self::Repaired => "Repaired",
            Self::Deleted => "Deleted",
            Self::Conflict => "Conflict",
            Self::RotationPhaseAdvanced => "RotationPhaseAdvanced",
        }
    }

    /// The `action` field: what relayctl did.
    pub fn action(self) -> &'static str {
        match self {
            Self::Created => "Create",
            Self::Renewed => "Renew",
            Self::Repaired => "Update",
            Self::Deleted => "Delete",
            Self::Conflict => "Reconcile",
            Self::RotationPhaseAdvanced => "Rotate",
        }
    }

    /// `Warning` for what needs a person, `Normal` otherwise.
    pub fn warning(self) -> bool {
        self == Self::Conflict
    }
}

/// One Event to record. Holds names, reasons and public certificate facts
/// only: no data value ever enters a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNote {
    /// The cluster holding the Secret (where the Event is recorded).
    pub cluster: String,
    /// The Secret's namespace (the Event's too).
    pub namespace: String,
    /// The Secret's name (the Event's `regarding`).
    pub name: String,
    /// Why.
    pub reason: Reason,
    /// For people, at most [`MAX_NOTE`] bytes.
    pub note: String,
    /// Set when the same transition could be found again by later runs:
    /// the backend names the Event after it, so it is recorded once.
    pub dedupe: Option<String>,
}

/// Kubernetes refuses notes over 1 kB.
pub const MAX_NOTE: usize = 1024;

fn bounded(mut note: String) -> String {
    if note.len() > MAX_NOTE {
        let mut cut = MAX_NOTE - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push('…');
    }
    note
}

/// Whether a change's reasons say a certificate was due for renewal.
fn is_renewal(reasons: &[String]) -> bool {
    reasons
        .iter()
        .any(|r| r.starts_with("expires in ") || r.starts_with("expired "))
}

/// The Events of one run: for every write that went through (the first
/// `written[cluster]` writes of that cluster, in order) and every conflict
/// of the plan, for the clusters of `clusters`, each its writes with its
/// plan, and nothing of any other cluster. `instance` and `source` (the
/// commit or path) are named in the notes.
pub fn of_run<'w>(
    instance: &str,
    clusters: impl IntoIterator<Item = (&'w ClusterWrites, &'w ClusterPlan)>,
    written: &BTreeMap<String, usize>,
    source: &str,
) -> Vec<EventNote> {
    let clusters: Vec<(&ClusterWrites, &ClusterPlan)> = clusters.into_iter().collect();
    let mut notes = Vec::new();
    let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
    for &(cluster, planned) in &clusters {
        let name = cluster.cluster.as_str();
        let done = written.get(name).copied().unwrap_or(0);
        // The last write of a Secret tells what happened to it. A cluster's
        // count also holds its registrations (mgmt), which are written after
        // its Secrets and before its `last` ones, and record no Event.
        let mut last: BTreeMap<(String, String), &crate::plan::Write> = BTreeMap::new();
        for write in cluster
            .writes
            .iter()
            .map(Some)
            .chain(cluster.registrations.iter().map(|_| None))
            .chain(cluster.last.iter().map(Some))
            .take(done)
            .flatten()
        {
            last.insert(
                (write.object.namespace.clone(), write.object.name.clone()),
                write,
            );
        }
        for ((namespace, secret), write) in last {
            let change = planned
                .changes
                .iter()
                .find(|c| c.namespace == namespace && c.name == secret);
            let reasons = change.map(|c| c.reasons.join("; ")).unwrap_or_default();
            let (reason, note) = match write.action {
                Action::Create => (
                    Reason::Created,
                    format!("relayctl created `{secret}` ({reasons}) from {source}"),
                ),
                Action::Update if change.is_some_and(|c| is_renewal(&c.reasons)) => {
                    let until = write
                        .object
                        .annotations
                        .get(ANNOTATION_NOT_AFTER)
                        .map(|t| format!("; the new certificate is valid until {t}"))
                        .unwrap_or_default();
                    (
                        Reason::Renewed,
                        format!(
                            "relayctl renewed the certificate in `{secret}` ({reasons}){until}; from {source}"
                        ),
                    )
                }
                Action::Update => (
                    Reason::Repaired,
                    format!("relayctl rewrote `{secret}` ({reasons}) from {source}"),
                ),
                Action::Delete => (
                    Reason::Deleted,
                    format!("relayctl deleted `{secret}` ({reasons}) from {source}"),
                ),
                Action::NoOp | Action::Conflict | Action::Error => continue,
            };
            seen.insert((name.to_owned(), namespace.clone(), secret.clone()));
            notes.push(EventNote {
                cluster: name.to_owned(),
                namespace,
                name: secret,
                reason,
                note: bounded(note),
                dedupe: None,
            });
        }
    }
    // A conflict is recorded in its own cluster only: the Events of one
    // cluster go out on that cluster's connection.
    for &(_, cluster) in &clusters {
        for change in cluster
            .changes
            .iter()
            .filter(|c| c.action == Action::Conflict)
        {
            let key = (
                cluster.name.clone(),
                change.namespace.clone(),
                change.name.clone(),
            );
            if !seen.insert(key) {
                continue;
            }
            notes.push(EventNote {
                cluster: cluster.name.clone(),
                namespace: change.namespace.clone(),
                name: change.name.clone(),
                reason: Reason::Conflict,
                note: bounded(format!(
                    "`{}` is not managed by relayctl instance `{}` ({}); left untouched: remove it, or run `relayctl apply --adopt` to take it over",
                    change.name,
                    instance,
                    change.reasons.join("; ")
                )),
                dedupe: Some(format!(
                    "conflict/{}",
                    change.observed_version.as_deref().unwrap_or("absent")
                )),
            });
        }
    }
    notes
}

/// The hook for the rotation machine: an Event on `secret` of the
/// management cluster when the rotation enters `phase`. Recorded once per
/// rotation and phase (`rotation` identifies the rotation, e.g. the new
/// root's fingerprint).
pub fn rotation_phase_advanced(
    cluster: &str,
    namespace: &str,
    secret: &str,
    rotation: &str,
    phase: &str,
) -> EventNote {
    EventNote {
        cluster: cluster.to_owned(),
        namespace: namespace.to_owned(),
        name: secret.to_owned(),
        reason: Reason::RotationPhaseAdvanced,
        note: bounded(format!("CA rotation `{rotation}` entered phase {phase}")),
        dedupe: Some(format!("rotation/{rotation}/{phase}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::SecretObject;
    use crate::plan::{Change, Plan, Role, Summary, Write};

    fn change(name: &str, action: Action, reasons: &[&str]) -> Change {
        Change {
            namespace: "gloo-mesh".into(),
            name: name.into(),
            action,
            reasons: reasons.iter().map(|r| (*r).to_owned()).collect(),
            observed_version: Some("v7".into()),
            data: BTreeMap::new(),
        }
    }

    fn write(name: &str, action: Action) -> Write {
        Write {
            action,
            object: SecretObject {
                namespace: "gloo-mesh".into(),
                name: name.into(),
                labels: Default::default(),
                annotations: crate::observed::SmallMap::from_iter([(
                    ANNOTATION_NOT_AFTER.to_owned(),
                    "2030-01-01T00:00:00Z".to_owned(),
                )]),
                data: Default::default(),
                version: String::new(),
            },
            precondition: None,
            chained: false,
        }
    }

    fn fixture() -> (Plan, Vec<ClusterWrites>) {
        let changes = vec![
            change("relay-root-tls-secret", Action::Create, &["missing"]),
            change(
                "relay-client-tls-secret",
                Action::Update,
                &["expires in 2d < renewBefore 720h"],
            ),
            change(
                "relay-identity-token-secret",
                Action::Conflict,
                &["not owned"],
            ),
            change("other", Action::NoOp, &[]),
        ];
        let clusters = vec![ClusterPlan {
            name: "cluster-1".into(),
            role: Role::Workload,
            error: None,
            changes,
        }];
        let plan = Plan {
            format_version: 1,
            instance: "prod".into(),
            namespace: "gloo-mesh".into(),
            ca_mode: crate::model::CaMode::Managed,
            client_cert_mode: crate::model::ClientCertMode::Preprovisioned,
            config_digest: "d".into(),
            source: "s".into(),
            summary: Summary::of(&clusters),
            ca: Default::default(),
            clusters,
        };
        let writes = vec![ClusterWrites {
            cluster: crate::model::DnsLabel::parse("cluster-1").unwrap_or_else(|e| panic!("{e}")),
            role: Role::Workload,
            writes: vec![
                write("relay-root-tls-secret", Action::Create),
                write("relay-client-tls-secret", Action::Update),
            ],
            last: Vec::new(),
            registrations: Vec::new(),
        }];
        (plan, writes)
    }

    /// [`of_run`] of `writes`, each with its cluster's plan in `plan`.
    fn of_plan(
        plan: &Plan,
        writes: &[ClusterWrites],
        written: &BTreeMap<String, usize>,
    ) -> Vec<EventNote> {
        let clusters = writes.iter().map(|w| {
            let planned = plan.clusters.iter().find(|c| c.name == w.cluster.as_str());
            (
                w,
                planned.unwrap_or_else(|| panic!("no plan for {}", w.cluster)),
            )
        });
        of_run(&plan.instance, clusters, written, "repo@abc")
    }

    #[test]
    fn each_write_that_went_through_is_one_event_and_a_conflict_one_warning() {
        let (plan, writes) = fixture();
        let written = BTreeMap::from([("cluster-1".to_owned(), 2)]);
        let notes = of_plan(&plan, &writes, &written);
        let reasons: Vec<(&str, Reason)> =
            notes.iter().map(|n| (n.name.as_str(), n.reason)).collect();
        assert_eq!(
            reasons,
            [
                ("relay-client-tls-secret", Reason::Renewed),
                ("relay-root-tls-secret", Reason::Created),
                ("relay-identity-token-secret", Reason::Conflict),
            ]
        );
        assert!(
            notes[0].note.contains("valid until 2030-01-01T00:00:00Z"),
            "{}",
            notes[0].note
        );
        assert_eq!(notes[2].dedupe.as_deref(), Some("conflict/v7"));
        assert!(notes[2].reason.warning());
    }

    #[test]
    fn writes_that_did_not_go_through_record_nothing() {
        let (plan, writes) = fixture();
        let written = BTreeMap::from([("cluster-1".to_owned(), 1)]);
        let notes = of_plan(&plan, &writes, &written);
        assert!(notes.iter().all(|n| n.name != "relay-client-tls-secret"));
        let none = of_plan(&plan, &writes, &BTreeMap::new());
        assert_eq!(none.len(), 1, "only the conflict");
    }

    #[test]
    fn registrations_count_as_written_but_record_no_event() {
        let (plan, mut writes) = fixture();
        let registration = crate::observed::Registration {
            namespace: "gloo-mesh".into(),
            name: "cluster-1".into(),
            labels: Default::default(),
            cluster_domain: None,
            version: String::new(),
        };
        writes[0].registrations = vec![crate::plan::RegistrationWrite {
            action: Action::Create,
            registration,
            precondition: None,
        }];
        writes[0].last = vec![write("other", Action::Update)];
        // The two Secrets and the registration went through, `last` did not.
        let written = BTreeMap::from([("cluster-1".to_owned(), 3)]);
        let notes = of_plan(&plan, &writes, &written);
        assert!(notes.iter().all(|n| n.name != "other"), "{notes:?}");
        assert_eq!(notes.len(), 3, "{notes:?}");
        // Once `last` went through too, it is recorded.
        let written = BTreeMap::from([("cluster-1".to_owned(), 4)]);
        let notes = of_plan(&plan, &writes, &written);
        assert!(notes.iter().any(|n| n.name == "other"), "{notes:?}");
    }

    #[test]
    fn a_clusters_events_hold_nothing_of_another_cluster() {
        // cluster-1 has writes and a conflict; cluster-2 only a conflict.
        let (mut plan, mut writes) = fixture();
        plan.clusters.push(ClusterPlan {
            name: "cluster-2".into(),
            role: Role::Workload,
            error: None,
            changes: vec![change(
                "relay-root-tls-secret",
                Action::Conflict,
                &["not owned"],
            )],
        });
        writes.push(ClusterWrites {
            cluster: crate::model::DnsLabel::parse("cluster-2").unwrap_or_else(|e| panic!("{e}")),
            role: Role::Workload,
            writes: Vec::new(),
            last: Vec::new(),
            registrations: Vec::new(),
        });
        let written = BTreeMap::from([("cluster-1".to_owned(), 2)]);
        let first = of_run(
            "prod",
            [(&writes[0], &plan.clusters[0])],
            &written,
            "repo@abc",
        );
        assert_eq!(first.len(), 3, "{first:?}");
        assert!(first.iter().all(|n| n.cluster == "cluster-1"), "{first:?}");
        let second = of_run(
            "prod",
            [(&writes[1], &plan.clusters[1])],
            &written,
            "repo@abc",
        );
        let second: Vec<_> = second
            .iter()
            .map(|n| (n.cluster.as_str(), n.reason))
            .collect();
        assert_eq!(second, [("cluster-2", Reason::Conflict)]);
    }

    #[test]
    fn notes_are_bounded() {
        let long = bounded("é".repeat(2000));
        assert!(long.len() <= MAX_NOTE);
    }
}
