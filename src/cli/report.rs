//! What an apply reports besides its output: Kubernetes Events for the
//! transitions (see [`crate::events`]), the observation the metrics
//! publish, and the status ConfigMap of a run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;

use super::prepared::Prepared;
use crate::apply::{ApplyReport, ClusterOutcome};
use crate::backend::Backend;
use crate::model::ClusterName;
use crate::plan::{ClusterPlan, ClusterWrites, Planned, Role};
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
    planned: &Planned,
    written: &BTreeMap<String, usize>,
) -> Option<crate::events::EventNote> {
    let plan = &planned.plan;
    let rotation = plan.ca.rotation.as_ref().filter(|r| r.entered)?;
    let record = crate::relay::rotation_secret(plan.instance.as_str());
    let mgmt = planned.writes.iter().find(|w| w.role == Role::Management)?;
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
/// A workload's (or an orphan's) Events go out as soon as its writes end,
/// while the connection that wrote them is open: in a fleet larger than
/// the bound on open clients (`kube::Clients::for_parallelism`), an Events
/// phase after every write would reconnect to each cluster (two round
/// trips) for them. They are sent beside the fleet's next writes, not before them, so
/// they add no round trip to the run. Mgmt's wait for [`Events::finish`]:
/// its inventory is written after every workload, and its rotation Event
/// needs the whole run.
pub(crate) struct Events<'a> {
    planned: &'a Planned,
    backends: &'a BTreeMap<ClusterName, Arc<dyn Backend>>,
    /// Where the manifests came from, for the notes.
    source: &'a str,
    /// Each cluster's planned writes, by name.
    writes: BTreeMap<&'a ClusterName, &'a ClusterWrites>,
    /// Each cluster's plan, by name.
    plans: BTreeMap<&'a str, &'a ClusterPlan>,
    reporter: String,
    on: bool,
    /// The clusters whose Events went out early.
    early: Mutex<BTreeSet<ClusterName>>,
    /// Events recorded so far.
    recorded: AtomicUsize,
}

impl<'a> Events<'a> {
    /// Events of `prepared`'s run, recorded by `reporter`; none when `on`
    /// is false (`--no-events`).
    pub(crate) fn new(prepared: &'a Prepared, reporter: String, on: bool) -> Self {
        Self::of(
            &prepared.planned,
            &prepared.backends,
            &prepared.provenance.label,
            reporter,
            on,
        )
    }

    /// Events of the run of `planned` through `backends`.
    fn of(
        planned: &'a Planned,
        backends: &'a BTreeMap<ClusterName, Arc<dyn Backend>>,
        source: &'a str,
        reporter: String,
        on: bool,
    ) -> Self {
        Self {
            planned,
            backends,
            source,
            writes: planned.writes.iter().map(|w| (&w.cluster, w)).collect(),
            plans: (planned.plan.clusters.iter())
                .map(|c| (c.name.as_str(), c))
                .collect(),
            reporter,
            on,
            early: Mutex::new(BTreeSet::new()),
            recorded: AtomicUsize::new(0),
        }
    }

    /// Called with each cluster's outcome as its writes end: a cluster
    /// whose writes are all done has its Events sent now, on a thread of
    /// `scope` (the caller's, which outlives the run's writes).
    pub(crate) fn cluster_done<'s>(
        &'s self,
        outcome: &ClusterOutcome,
        scope: &'s std::thread::Scope<'s, '_>,
    ) {
        if !self.on || outcome.role == Role::Management {
            return;
        }
        let Some(cluster) = self.writes.get(&outcome.cluster).copied() else {
            return;
        };
        if !cluster.last.is_empty() {
            return;
        }
        let Some(backend) = self.backends.get(&outcome.cluster).cloned() else {
            return;
        };
        let Some(plan) = self.plans.get(outcome.cluster.as_str()).copied() else {
            return;
        };
        if !backend.records_events() {
            // No thread per cluster for a backend that keeps no Events
            // (the directory backend).
            return;
        }
        let written = BTreeMap::from([(outcome.cluster.to_string(), outcome.written)]);
        let instance = self.planned.plan.instance.as_str();
        let notes = crate::events::of_run(instance, [(cluster, plan)], &written, self.source);
        self.early
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(outcome.cluster.clone());
        if notes.is_empty() {
            return;
        }
        scope.spawn(move || {
            let recorded = self.send(backend.as_ref(), &notes);
            self.recorded.fetch_add(recorded, Ordering::Relaxed);
        });
    }

    /// Records the Events not sent yet (mgmt's, the rotation's, and those
    /// of any cluster whose writes did not end in [`Events::cluster_done`])
    /// once every write is done, `parallelism` clusters at a time.
    pub(crate) fn finish(&self, report: &ApplyReport, parallelism: usize) {
        if !self.on {
            return;
        }
        let early = std::mem::take(&mut *self.early.lock().unwrap_or_else(PoisonError::into_inner));
        let written = written(report);
        let rest = (self.planned.writes.iter())
            .filter(|w| !early.contains(&w.cluster))
            .filter_map(|w| Some((w, *self.plans.get(w.cluster.as_str())?)));
        let instance = self.planned.plan.instance.as_str();
        let mut notes = crate::events::of_run(instance, rest, &written, self.source);
        notes.extend(rotation_event(self.planned, &written));
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
                Some((self.backends.get(&name)?.clone(), notes))
            })
            .collect();
        let late = crate::fleet::parallel_map(work, parallelism, |(backend, notes)| {
            self.send(backend.as_ref(), notes)
        });
        self.recorded
            .fetch_add(late.into_iter().sum(), Ordering::Relaxed);
    }

    /// How many Events were recorded (all of them once the scope given to
    /// [`Events::cluster_done`] has ended and [`Events::finish`] returned).
    pub(crate) fn recorded(&self) -> usize {
        self.recorded.load(Ordering::Relaxed)
    }

    /// Records one cluster's `notes` all at once (each a round trip of its
    /// own otherwise); a failure is a warning, once per cluster (missing
    /// RBAC must not fail the run). Returns how many were recorded.
    fn send(&self, backend: &dyn Backend, notes: &[crate::events::EventNote]) -> usize {
        if notes.is_empty() || !backend.records_events() {
            return 0;
        }
        let instance = self.planned.plan.instance.as_str();
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::backend::{BackendError, LockGuard};
    use crate::observed::{ClusterObservation, Registration, SecretObject};
    use crate::plan::{Action, Change, ClusterPlan, Plan, RegistrationWrite, Write};

    type Log = Arc<Mutex<Vec<String>>>;

    /// Logs its writes and Events; `waits_for` makes its writes wait (5 s
    /// at most) until that line is in the log.
    struct Recording {
        cluster: &'static str,
        log: Log,
        waits_for: Option<String>,
    }

    impl Recording {
        fn push(&self, line: String) {
            self.log.lock().unwrap().push(line);
        }
    }

    impl Backend for Recording {
        fn describe(&self) -> String {
            self.cluster.to_owned()
        }
        fn target(&self) -> String {
            self.cluster.to_owned()
        }
        fn observe(
            &self,
            _: &str,
            _: &str,
            _: &[String],
        ) -> Result<ClusterObservation, BackendError> {
            Ok(ClusterObservation::default())
        }
        fn write(&self, write: &Write) -> Result<Option<String>, BackendError> {
            if let Some(line) = &self.waits_for {
                let until = Instant::now() + Duration::from_secs(5);
                while !self.log.lock().unwrap().contains(line) {
                    if Instant::now() > until {
                        self.push(format!("{}: gave up waiting for `{line}`", self.cluster));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            self.push(format!("write {} {}", self.cluster, write.object.name));
            Ok(Some("1".to_owned()))
        }
        fn observe_registrations(
            &self,
            _: &str,
        ) -> Result<BTreeMap<String, Registration>, BackendError> {
            Ok(BTreeMap::new())
        }
        fn write_registration(&self, _: &RegistrationWrite) -> Result<(), BackendError> {
            Ok(())
        }
        fn record_event(
            &self,
            note: &crate::events::EventNote,
            _: &str,
            _: &str,
        ) -> Result<bool, BackendError> {
            self.push(format!("event {} {}", note.cluster, note.name));
            Ok(true)
        }
        fn records_events(&self) -> bool {
            true
        }
        fn lock(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: Duration,
        ) -> Result<Box<dyn LockGuard>, BackendError> {
            unreachable!("no lock in this test")
        }
    }

    fn create(name: &str) -> Write {
        Write {
            action: Action::Create,
            object: SecretObject {
                namespace: "gloo-mesh".into(),
                name: name.into(),
                labels: Default::default(),
                annotations: Default::default(),
                data: Default::default(),
                version: String::new(),
            },
            precondition: None,
            chained: false,
        }
    }

    fn cluster(
        name: &str,
        role: Role,
        writes: &[&str],
        last: &[&str],
    ) -> (ClusterPlan, ClusterWrites) {
        let changes = writes
            .iter()
            .chain(last)
            .map(|secret| Change {
                namespace: "gloo-mesh".into(),
                name: (*secret).to_owned(),
                action: Action::Create,
                reasons: vec!["missing".into()],
                observed_version: None,
                data: BTreeMap::new(),
            })
            .collect();
        (
            ClusterPlan {
                name: name.into(),
                role,
                error: None,
                changes,
            },
            ClusterWrites {
                cluster: ClusterName::parse(name).unwrap(),
                role,
                writes: writes.iter().map(|s| create(s)).collect(),
                last: last.iter().map(|s| create(s)).collect(),
                registrations: Vec::new(),
            },
        )
    }

    #[test]
    fn a_workloads_events_go_out_while_the_fleet_is_still_written() {
        let (plans, writes): (Vec<_>, Vec<_>) = [
            cluster("mgmt", Role::Management, &["root"], &["inventory"]),
            cluster("cluster-1", Role::Workload, &["token"], &[]),
            cluster("cluster-2", Role::Workload, &["token"], &[]),
        ]
        .into_iter()
        .unzip();
        let planned = Planned {
            plan: Plan::of_clusters(plans),
            writes,
        };
        let log = Log::default();
        let backend = |cluster: &'static str, waits_for: Option<&str>| -> Arc<dyn Backend> {
            Arc::new(Recording {
                cluster,
                log: log.clone(),
                waits_for: waits_for.map(str::to_owned),
            })
        };
        // cluster-2 is written only once cluster-1's Event is out: one
        // cluster at a time, that holds only if it went out before the
        // last write of the fleet.
        let backends: BTreeMap<ClusterName, Arc<dyn Backend>> = [
            ("mgmt", backend("mgmt", None)),
            ("cluster-1", backend("cluster-1", None)),
            (
                "cluster-2",
                backend("cluster-2", Some("event cluster-1 token")),
            ),
        ]
        .into_iter()
        .map(|(name, b)| (ClusterName::parse(name).unwrap(), b))
        .collect();
        let events = Events::of(&planned, &backends, "test", "relayctl".into(), true);
        let report = std::thread::scope(|scope| {
            let report = crate::apply::apply(&planned.writes, &backends, 1, &|outcome| {
                events.cluster_done(outcome, scope);
            });
            events.finish(&report, 1);
            report
        });
        assert!(report.ok(), "{report:?}");
        let log = log.lock().unwrap().clone();
        let at = |line: &str| {
            log.iter()
                .position(|l| l == line)
                .unwrap_or_else(|| panic!("`{line}` not in {log:?}"))
        };
        assert!(
            !log.iter().any(|l| l.contains("gave up")),
            "cluster-1's Event waited for the end of the run: {log:?}"
        );
        assert!(
            at("event cluster-1 token") < at("write cluster-2 token"),
            "{log:?}"
        );
        // mgmt's once its inventory (written after every workload) is.
        assert!(
            at("event mgmt root") > at("write mgmt inventory"),
            "{log:?}"
        );
        assert!(
            at("event mgmt inventory") > at("write mgmt inventory"),
            "{log:?}"
        );
        at("event cluster-2 token");
        // Each Event once, and all counted.
        let sent = log.iter().filter(|l| l.starts_with("event ")).count();
        assert_eq!(sent, 4, "{log:?}");
        assert_eq!(events.recorded(), 4);
    }
}
