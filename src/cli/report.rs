//! What an apply reports besides its output: Kubernetes Events for the
//! transitions (see [`crate::events`]), the observation the metrics
//! publish, and the status ConfigMap of a run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;

use super::prepared::Prepared;
use crate::apply::{ApplyReport, ClusterOutcome};
use crate::backend::Backend;
use crate::model::ClusterName;
use crate::plan::{ClusterWrites, Role};
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
        .find(|w| w.role == Role::Management)?;
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

/// The Events of one run, recorded as its clusters' writes end.
///
/// A workload's (or an orphan's) Events go out right after its writes, on
/// the worker and the connection that wrote them: in a fleet larger than
/// the bound on open clients (`kube::MIN_OPEN_CLIENTS`), an Events phase
/// after every write would reconnect to each cluster (two round trips) for
/// them. Mgmt's wait for [`Events::finish`]: its inventory is written after
/// every workload, and its rotation Event needs the whole run.
pub(crate) struct Events<'a> {
    prepared: &'a Prepared,
    /// Each cluster's planned writes, by name.
    writes: BTreeMap<&'a ClusterName, &'a ClusterWrites>,
    reporter: String,
    on: bool,
    /// The clusters recorded early, by name, and how many Events they took.
    early: Mutex<BTreeMap<String, usize>>,
}

impl<'a> Events<'a> {
    /// Events of `prepared`'s run, recorded by `reporter`; none when `on`
    /// is false (`--no-events`).
    pub(crate) fn new(prepared: &'a Prepared, reporter: String, on: bool) -> Self {
        Self {
            prepared,
            writes: prepared
                .planned
                .writes
                .iter()
                .map(|w| (&w.cluster, w))
                .collect(),
            reporter,
            on,
            early: Mutex::new(BTreeMap::new()),
        }
    }

    /// Called with each cluster's outcome as its writes end, on the thread
    /// that wrote them: a cluster whose writes are all done records its
    /// Events now.
    pub(crate) fn cluster_done(&self, outcome: &ClusterOutcome) {
        if !self.on || outcome.role == Role::Management {
            return;
        }
        let Some(cluster) = self.writes.get(&outcome.cluster).copied() else {
            return;
        };
        if !cluster.last.is_empty() {
            return;
        }
        let Some(backend) = self.prepared.backends.get(&outcome.cluster) else {
            return;
        };
        let name = outcome.cluster.to_string();
        let written = BTreeMap::from([(name.clone(), outcome.written)]);
        let notes = crate::events::of_run(
            &self.prepared.planned.plan,
            std::slice::from_ref(cluster),
            &written,
            &self.prepared.provenance.label,
        );
        let recorded = self.send(backend.as_ref(), &notes);
        self.early
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, recorded);
    }

    /// Records the Events not recorded yet (mgmt's, the rotation's, and any
    /// cluster's whose writes ended elsewhere) once every write is done,
    /// `parallelism` clusters at a time. Returns how many the run recorded
    /// in all.
    pub(crate) fn finish(&self, report: &ApplyReport, parallelism: usize) -> usize {
        if !self.on {
            return 0;
        }
        let early = std::mem::take(&mut *self.early.lock().unwrap_or_else(PoisonError::into_inner));
        let prepared = self.prepared;
        let plan = &prepared.planned.plan;
        let written = written(report);
        let mut notes = crate::events::of_run(
            plan,
            &prepared.planned.writes,
            &written,
            &prepared.provenance.label,
        );
        notes.retain(|note| !early.contains_key(&note.cluster));
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
        let late = crate::fleet::parallel_map(work, parallelism, |(backend, notes)| {
            self.send(backend.as_ref(), notes)
        });
        early.values().sum::<usize>() + late.into_iter().sum::<usize>()
    }

    /// Records one cluster's `notes` all at once (each a round trip of its
    /// own otherwise); a failure is a warning, once per cluster (missing
    /// RBAC must not fail the run). Returns how many were recorded.
    fn send(&self, backend: &dyn Backend, notes: &[crate::events::EventNote]) -> usize {
        if notes.is_empty() || !backend.records_events() {
            return 0;
        }
        let instance = self.prepared.planned.plan.instance.as_str();
        let reporter = self.reporter.as_str();
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
    }
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
            .any(|c| c.name == name && c.role != Role::Orphan)
    };
    // Clusters that left the config have no series: they disappear from
    // the metrics with their manifest, pruned or not.
    let clusters: Vec<ClusterStatus> = clusters
        .into_iter()
        .filter(|c| configured(&c.name))
        .collect();
    for cluster in &prepared.planned.plan.clusters {
        if cluster.role == Role::Orphan {
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
