//! What an apply reports besides its output: Kubernetes Events for the
//! transitions (see [`crate::events`]), the observation the metrics
//! publish, and the status ConfigMap of a run.

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;

use super::prepared::Prepared;
use crate::apply::ApplyReport;
use crate::backend::Backend;
use crate::model::ClusterName;
use crate::status::{self, ClusterStatus, RunStatus};

/// Writes that went through, per cluster.
pub(crate) fn written(report: &ApplyReport) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for outcome in &report.outcomes {
        *out.entry(outcome.cluster.to_string()).or_default() += outcome.written;
    }
    out
}

/// `RotationPhaseAdvanced` on the rotation record when this apply entered a
/// phase of a CA rotation and wrote the record (mgmt's first write).
fn rotation_event(
    prepared: &Prepared,
    written: &BTreeMap<String, usize>,
) -> Option<crate::events::EventNote> {
    let plan = &prepared.planned.plan;
    let rotation = plan.ca.rotation.as_ref().filter(|r| r.entered)?;
    let record = crate::relay::rotation_secret(plan.instance.as_str());
    let mgmt = prepared
        .planned
        .writes
        .iter()
        .find(|w| w.role == crate::plan::Role::Management)?;
    let first = mgmt.writes.first().filter(|w| w.object.name == record)?;
    if written.get(mgmt.cluster.as_str()).copied().unwrap_or(0) == 0 {
        return None;
    }
    Some(crate::events::rotation_phase_advanced(
        mgmt.cluster.as_str(),
        &first.object.namespace,
        &record,
        &rotation.id,
        &format!(
            "{} of {} ({})",
            rotation.step, rotation.steps, rotation.phase
        ),
    ))
}

/// Clusters whose writes failed, with the error.
pub(crate) fn failed(report: &ApplyReport) -> BTreeMap<String, String> {
    report
        .outcomes
        .iter()
        .filter_map(|o| o.error.clone().map(|e| (o.cluster.to_string(), e)))
        .collect()
}

/// Records the Events of a run in the clusters holding the Secrets; a
/// failure is a warning (missing RBAC must not fail the run). Returns how
/// many were recorded.
pub(crate) fn record_events(
    prepared: &Prepared,
    report: &ApplyReport,
    reporter: &str,
    parallelism: usize,
) -> usize {
    let plan = &prepared.planned.plan;
    let written = written(report);
    let mut notes = crate::events::of_run(
        plan,
        &prepared.planned.writes,
        &written,
        &prepared.provenance.label,
    );
    notes.extend(rotation_event(prepared, &written));
    let mut by_cluster: BTreeMap<String, Vec<crate::events::EventNote>> = BTreeMap::new();
    for note in notes {
        by_cluster
            .entry(note.cluster.clone())
            .or_default()
            .push(note);
    }
    let work: Vec<(Arc<dyn Backend>, Vec<crate::events::EventNote>)> = by_cluster
        .into_iter()
        .filter_map(|(cluster, notes)| {
            let name = ClusterName::parse(&cluster).ok()?;
            Some((prepared.backends.get(&name)?.clone(), notes))
        })
        .collect();
    let instance = plan.instance.as_str();
    let results = crate::fleet::parallel_map(work, parallelism, |(backend, notes)| {
        if !backend.records_events() {
            return 0;
        }
        // All at once, each a round trip of its own otherwise; a cluster
        // that refuses them is warned about once.
        let results: Vec<Result<bool, crate::backend::BackendError>> =
            std::thread::scope(|scope| {
                let running: Vec<_> = notes
                    .iter()
                    .map(|note| scope.spawn(move || backend.record_event(note, instance, reporter)))
                    .collect();
                running
                    .into_iter()
                    .map(|r| r.join().unwrap_or(Ok(false)))
                    .collect()
            });
        if let (Some(note), Some(Err(e))) = (notes.first(), results.iter().find(|r| r.is_err())) {
            tracing::warn!(
                cluster = %note.cluster,
                "cannot record an Event: {}",
                crate::error::error_chain(e)
            );
        }
        results.iter().filter(|r| matches!(r, Ok(true))).count()
    });
    results.into_iter().sum()
}

/// Every cluster's state after the run.
pub(crate) fn states(prepared: &Prepared, report: &ApplyReport) -> Vec<ClusterStatus> {
    status::cluster_states(&prepared.planned.plan, &failed(report))
}

/// What the metrics publish after a run: the certificates as they stand
/// once the writes that went through are counted in, and the states.
pub(crate) fn observation(
    prepared: &Prepared,
    report: &ApplyReport,
    clusters: Vec<ClusterStatus>,
    at: OffsetDateTime,
) -> crate::metrics::Observation {
    let after = status::after_writes(
        &prepared.observed,
        &prepared.planned.writes,
        &written(report),
    );
    let mut certificates = Vec::new();
    let configured = |name: &str| {
        prepared
            .planned
            .plan
            .clusters
            .iter()
            .any(|c| c.name == name && c.role != crate::plan::Role::Orphan)
    };
    // Clusters that left the config have no series: they disappear from
    // the metrics with their manifest, pruned or not.
    let clusters: Vec<ClusterStatus> = clusters
        .into_iter()
        .filter(|c| configured(&c.name))
        .collect();
    for cluster in &prepared.planned.plan.clusters {
        if cluster.role == crate::plan::Role::Orphan {
            continue;
        }
        let Ok(name) = ClusterName::parse(&cluster.name) else {
            continue;
        };
        if let Some(Ok(obs)) = after.clusters.get(&name) {
            for held in crate::check::held_certificates(&prepared.config, cluster.role, obs) {
                certificates.push((cluster.name.clone(), held));
            }
        }
    }
    let rotation = prepared.planned.plan.ca.rotation.as_ref().map(|r| {
        let gate = r.gate.as_ref();
        crate::metrics::RotationGauges {
            kind: r.kind.clone(),
            phase: r.phase.clone(),
            step: r.step,
            blocked_clusters: gate.map_or(0, |g| g.blocked_clusters),
            old_certificates: gate.map_or(0, |g| g.old_certificates),
        }
    });
    crate::metrics::Observation {
        certificates,
        clusters,
        at: Some(at),
        rotation: Some(rotation),
    }
}

/// Name of the status ConfigMap of `instance`.
pub(crate) fn status_configmap_name(instance: &str) -> String {
    format!("relayctl-status-{instance}")
}

/// Writes `status` to the status ConfigMap on the management cluster.
/// Returns whether the backend keeps one.
pub(crate) fn write_status(
    prepared: &Prepared,
    status: &RunStatus,
) -> Result<bool, crate::backend::BackendError> {
    let name = status_configmap_name(prepared.config.instance.as_str());
    write_status_named(prepared, status, &name)
}

/// Writes `status` to the ConfigMap `name` on the management cluster.
pub(crate) fn write_status_named(
    prepared: &Prepared,
    status: &RunStatus,
    name: &str,
) -> Result<bool, crate::backend::BackendError> {
    let config = &prepared.config;
    let Some(mgmt) = prepared.backends.get(&config.management.name) else {
        return Ok(false);
    };
    let counts =
        |state: status::ClusterState| status.counts.get(&state).copied().unwrap_or(0).to_string();
    let mut data = BTreeMap::from([
        (
            "status.json".to_owned(),
            serde_json::to_string_pretty(status).unwrap_or_default() + "\n",
        ),
        ("commit".to_owned(), status.commit.clone()),
        ("configDigest".to_owned(), status.config_digest.clone()),
        ("finishedAt".to_owned(), status.finished_at.clone()),
        ("ok".to_owned(), status.ok.to_string()),
    ]);
    for state in status::ClusterState::ALL {
        data.insert(format!("clusters.{state}"), counts(state));
    }
    mgmt.write_status(
        config.namespace.as_str(),
        name,
        config.instance.as_str(),
        &data,
    )
}
