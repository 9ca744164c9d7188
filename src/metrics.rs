//! Prometheus metrics, built from data: what the reconcile loop serves on
//! `/metrics` and what `check -o prometheus` prints.
//!
//! Pure: every scrape builds a new [`Registry`] from the last observation
//! (certificates and cluster states) and the process's counters, passed in
//! as plain values. Nothing is kept between scrapes, so the series of a
//! cluster that left the config, or of a certificate that was reissued, are
//! gone from the next observation on (the stale series cert-manager users
//! complain about cannot happen).
//!
//! Names follow cert-manager's under a `relayctl_` prefix; timestamps are
//! Unix seconds. No metric carries a cluster label except the per-cluster
//! state and the per-certificate gauges (about 11 series per workload
//! cluster); durations and counters are fleet-wide.
//!
//! [`encode_openmetrics`] is the OpenMetrics text prometheus-client writes;
//! [`to_prometheus_text`] turns it into the classic text format 0.0.4 for
//! scrapers that do not ask for OpenMetrics and for node-exporter's textfile
//! collector, which reads only that.

use std::collections::BTreeMap;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use time::OffsetDateTime;

use crate::check::HeldCertificate;
use crate::status::{ClusterState, ClusterStatus};

/// The content type of [`encode_openmetrics`]'s text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`to_prometheus_text`]'s text.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What one observation of the fleet says: every certificate and every
/// cluster's state.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Per cluster (by name), the certificates it holds.
    pub certificates: Vec<(String, HeldCertificate)>,
    /// Every cluster's state.
    pub clusters: Vec<ClusterStatus>,
    /// When the observation was made.
    pub at: Option<OffsetDateTime>,
    /// The CA rotation under way: `Some(None)` when there is none, `None`
    /// when this observation does not know (`check`, which does not plan).
    pub rotation: Option<Option<RotationGauges>>,
}

/// Where a CA rotation stands, for the `ca_rotation_*` gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationGauges {
    /// `root` or `intermediate`.
    pub kind: String,
    /// The phase's name.
    pub phase: String,
    /// Its 1-based number.
    pub step: usize,
    /// Clusters blocking the next phase.
    pub blocked_clusters: usize,
    /// Certificates still chaining only to the old root (or intermediate).
    pub old_certificates: usize,
}

/// Why a reconcile run failed: a bounded set, the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorReason {
    /// The manifests (or their material) are invalid.
    Config,
    /// The manifests could not be read (Git unreachable, unknown ref).
    Source,
    /// The apply lock is held by another run, or may not be taken.
    Lock,
    /// The management cluster cannot be reached.
    Management,
    /// Some cluster could not be read, planned or written (or has a conflict).
    Clusters,
    /// Anything else (output, runtime, a bug).
    Internal,
}

impl ErrorReason {
    /// Every reason: each gets a series, zeros included.
    pub const ALL: [Self; 6] = [
        Self::Config,
        Self::Source,
        Self::Lock,
        Self::Management,
        Self::Clusters,
        Self::Internal,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Source => "source",
            Self::Lock => "lock",
            Self::Management => "management",
            Self::Clusters => "clusters",
            Self::Internal => "internal",
        }
    }
}

/// A histogram's data, kept by whoever observes: fixed upper bounds and a
/// count per bucket (not cumulative), the sum and the count.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramData {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Buckets of the reconcile duration, in seconds: a tick is seconds for a
/// small fleet, minutes for thousands of clusters.
pub const RECONCILE_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Buckets of one Kubernetes API call, in seconds.
pub const API_CALL_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl HistogramData {
    /// An empty histogram with these upper bounds (+Inf is added).
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one value.
    pub fn observe(&mut self, value: f64) {
        let index = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(slot) = self.counts.get_mut(index) {
            *slot += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }
}

impl EncodeMetric for HistogramData {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Kubernetes API calls of this process, as the backend counts them.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCalls {
    /// Attempts by outcome: `2xx` … `5xx`, `error` (no answer), `timeout`.
    pub by_code: BTreeMap<&'static str, u64>,
    /// Duration of every attempt.
    pub duration: HistogramData,
}

impl Default for ApiCalls {
    fn default() -> Self {
        Self {
            by_code: BTreeMap::new(),
            duration: HistogramData::new(API_CALL_BUCKETS),
        }
    }
}

/// The reconcile loop's own counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    /// Runs (ticks) finished.
    pub runs: u64,
    /// Failed runs by reason.
    pub errors: BTreeMap<ErrorReason, u64>,
    /// Duration of every run.
    pub duration: HistogramData,
    /// When a run last succeeded.
    pub last_success: Option<OffsetDateTime>,
}

impl Default for Process {
    fn default() -> Self {
        Self {
            runs: 0,
            errors: BTreeMap::new(),
            duration: HistogramData::new(RECONCILE_BUCKETS),
            last_success: None,
        }
    }
}

/// Gauges with labels, encoded in the order given (prometheus-client's
/// `Family` is a hash map: its order changes from run to run, which makes
/// a textfile or a snapshot churn for nothing).
#[derive(Debug)]
struct Gauges<L>(Vec<(L, i64)>);

impl<L: EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static> EncodeMetric for Gauges<L> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, value) in &self.0 {
            encoder.encode_family(labels)?.encode_gauge(value)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CertLabels {
    cluster: String,
    secret: String,
    role: String,
    fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    cluster: String,
    state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RotationLabels {
    kind: String,
    phase: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The per-certificate and per-cluster metrics of `observation`, into `registry`.
pub fn register_observation(registry: &mut Registry, observation: &Observation) {
    let mut not_after = Vec::new();
    let mut not_before = Vec::new();
    let mut renewal = Vec::new();
    for (cluster, cert) in &observation.certificates {
        let labels = CertLabels {
            cluster: cluster.clone(),
            secret: cert.secret.clone(),
            role: cert.role.as_str().to_owned(),
            fingerprint: cert.short_fingerprint().to_owned(),
        };
        not_after.push((labels.clone(), cert.not_after.unix_timestamp()));
        not_before.push((labels.clone(), cert.not_before.unix_timestamp()));
        renewal.push((labels, cert.renewal.unix_timestamp()));
    }
    registry.register_with_unit(
        "certificate_not_after_timestamp",
        "The certificate's notAfter (Unix time)",
        Unit::Seconds,
        Gauges(not_after),
    );
    registry.register_with_unit(
        "certificate_not_before_timestamp",
        "The certificate's notBefore (Unix time)",
        Unit::Seconds,
        Gauges(not_before),
    );
    registry.register_with_unit(
        "certificate_renewal_timestamp",
        "When the certificate is renewed: relayctl's renewBefore rule for what it issues, the agent's grace ratio for token-mode client certificates, and for CAs when a rotation is due (check warns from then on) (Unix time)",
        Unit::Seconds,
        Gauges(renewal),
    );
    let mut state = Vec::new();
    for cluster in &observation.clusters {
        for candidate in ClusterState::ALL {
            state.push((
                StateLabels {
                    cluster: cluster.name.clone(),
                    state: candidate.as_str().to_owned(),
                },
                i64::from(candidate == cluster.state),
            ));
        }
    }
    registry.register(
        "cluster_state",
        "How the cluster stands after the last observation: 1 on its state (converged, drift, unreachable, conflict, error), 0 on the others",
        Gauges(state),
    );
    if let Some(rotation) = &observation.rotation {
        register_rotation(registry, rotation.as_ref());
    }
    if let Some(at) = observation.at {
        let gauge = Gauge::<i64>::default();
        gauge.set(at.unix_timestamp());
        registry.register_with_unit(
            "last_observation_timestamp",
            "When the fleet was last observed (Unix time)",
            Unit::Seconds,
            gauge,
        );
    }
}

/// The loop's counters, the API calls and the build, into `registry`.
pub fn register_process(registry: &mut Registry, process: &Process, api: &ApiCalls, version: &str) {
    let runs = Counter::<u64>::default();
    runs.inc_by(process.runs);
    registry.register("reconcile", "Reconcile runs finished", runs);
    let errors = Family::<ReasonLabels, Counter>::default();
    for reason in ErrorReason::ALL {
        errors
            .get_or_create(&ReasonLabels {
                reason: reason.as_str().to_owned(),
            })
            .inc_by(process.errors.get(&reason).copied().unwrap_or(0));
    }
    registry.register(
        "reconcile_errors",
        "Reconcile runs that failed, by reason (config, source, lock, management, clusters, internal)",
        errors,
    );
    registry.register_with_unit(
        "reconcile_duration",
        "How long a reconcile run took: read, lock, observe, plan, apply",
        Unit::Seconds,
        process.duration.clone(),
    );
    if let Some(at) = process.last_success {
        let gauge = Gauge::<i64>::default();
        gauge.set(at.unix_timestamp());
        registry.register_with_unit(
            "last_success_timestamp",
            "When a reconcile run last succeeded: every cluster converged (Unix time)",
            Unit::Seconds,
            gauge,
        );
    }
    let requests = Family::<CodeLabels, Counter>::default();
    for (code, count) in &api.by_code {
        requests
            .get_or_create(&CodeLabels {
                code: (*code).to_owned(),
            })
            .inc_by(*count);
    }
    registry.register(
        "api_requests",
        "Kubernetes API requests (every attempt, retries included) by outcome: 2xx, 3xx, 4xx, 5xx, error (no answer), timeout",
        requests,
    );
    registry.register_with_unit(
        "api_request_duration",
        "How long one Kubernetes API request took (every attempt)",
        Unit::Seconds,
        api.duration.clone(),
    );
    registry.register(
        "build",
        "relayctl's version",
        Info::new(BuildLabels {
            version: version.to_owned(),
        }),
    );
}

/// A registry with the `relayctl_` prefix.
pub fn registry() -> Registry {
    Registry::with_prefix("relayctl")
}

/// The registry as OpenMetrics text (ends with `# EOF`).
pub fn encode_openmetrics(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// OpenMetrics text as the classic Prometheus text format 0.0.4: no `# EOF`
/// or `# UNIT`, counters typed under their `_total` name, info metrics as
/// gauges named `…_info`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut kinds: BTreeMap<&str, &str> = BTreeMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            kinds.insert(name, kind);
        }
    }
    let renamed = |name: &str| -> String {
        match kinds.get(name) {
            Some(&"counter") => format!("{name}_total"),
            Some(&"info") => format!("{name}_info"),
            _ => name.to_owned(),
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            let kind = if kind == "info" { "gauge" } else { kind };
            out.push_str(&format!("# TYPE {} {kind}\n", renamed(name)));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ")
            && let Some((name, help)) = rest.split_once(' ')
        {
            out.push_str(&format!("# HELP {} {help}\n", renamed(name)));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The `ca_rotation_*` gauges: always there where the run planned, 0
/// without a rotation, so that an alert can say "blocked for a day".
fn register_rotation(registry: &mut Registry, rotation: Option<&RotationGauges>) {
    let phase = rotation
        .map(|r| {
            vec![(
                RotationLabels {
                    kind: r.kind.clone(),
                    phase: r.phase.clone(),
                },
                i64::try_from(r.step).unwrap_or(i64::MAX),
            )]
        })
        .unwrap_or_default();
    registry.register(
        "ca_rotation_phase",
        "The phase (1-based) of the CA rotation under way; no series without one",
        Gauges(phase),
    );
    for (name, help, value) in [
        (
            "ca_rotation_blocked_clusters",
            "Clusters that block the next phase of the CA rotation (0 without one)",
            rotation.map_or(0, |r| r.blocked_clusters),
        ),
        (
            "ca_rotation_old_certificates",
            "Certificates that still chain only to the CA being replaced (0 without a rotation)",
            rotation.map_or(0, |r| r.old_certificates),
        ),
    ] {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(name, help, gauge);
    }
}

/// The certificate and state metrics of `observation` alone, as Prometheus
/// text (what `check -o prometheus` prints for a textfile collector).
pub fn observation_text(observation: &Observation) -> String {
    let mut registry = registry();
    register_observation(&mut registry, observation);
    to_prometheus_text(&encode_openmetrics(&registry))
}

/// The certificates and states of a `check` report.
pub fn observation_of_report(report: &crate::check::Report, at: OffsetDateTime) -> Observation {
    Observation {
        certificates: report
            .clusters
            .iter()
            .flat_map(|c| c.certificates.iter().map(|h| (c.name.clone(), h.clone())))
            .collect(),
        clusters: report
            .clusters
            .iter()
            .map(|c| {
                let state = c.state();
                ClusterStatus {
                    name: c.name.clone(),
                    state,
                    reason: (state != ClusterState::Converged).then(|| {
                        c.checks
                            .iter()
                            .filter(|x| x.status != crate::check::Status::Ok)
                            .max_by_key(|x| x.status)
                            .map(|x| x.message.clone())
                            .unwrap_or_default()
                    }),
                }
            })
            .collect(),
        at: Some(at),
        rotation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::CertRole;

    fn cert(role: CertRole, secret: &str, not_after: i64) -> HeldCertificate {
        let at = |s| OffsetDateTime::from_unix_timestamp(s).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        HeldCertificate {
            secret: secret.into(),
            role,
            subject: "CN=x".into(),
            sha256: "0123456789abcdef0123".into(),
            not_before: at(1_000),
            not_after: at(not_after),
            renewal: at(not_after - 100),
            renewal_rule: "renewBefore 1h".into(),
        }
    }

    fn observation(clusters: &[&str]) -> Observation {
        Observation {
            certificates: clusters
                .iter()
                .map(|c| {
                    (
                        (*c).to_owned(),
                        cert(CertRole::Client, "relay-client-tls-secret", 9_000),
                    )
                })
                .collect(),
            clusters: clusters
                .iter()
                .map(|c| ClusterStatus {
                    name: (*c).to_owned(),
                    state: ClusterState::Drift,
                    reason: None,
                })
                .collect(),
            at: None,
            rotation: None,
        }
    }

    #[test]
    fn a_rotation_has_its_phase_and_gate_as_gauges_and_none_has_zeros() {
        let unknown = observation_text(&observation(&["cluster-1"]));
        assert!(!unknown.contains("relayctl_ca_rotation"), "{unknown}");
        let mut steady = observation(&["cluster-1"]);
        steady.rotation = Some(None);
        let none = observation_text(&steady);
        assert!(!none.contains("relayctl_ca_rotation_phase{"), "{none}");
        assert!(
            none.contains("\nrelayctl_ca_rotation_blocked_clusters 0\n"),
            "{none}"
        );
        assert!(
            none.contains("\nrelayctl_ca_rotation_old_certificates 0\n"),
            "{none}"
        );
        let mut rotating = observation(&["cluster-1"]);
        rotating.rotation = Some(Some(RotationGauges {
            kind: "root".into(),
            phase: "reissue".into(),
            step: 3,
            blocked_clusters: 2,
            old_certificates: 5,
        }));
        let text = observation_text(&rotating);
        assert!(
            text.contains("\nrelayctl_ca_rotation_phase{kind=\"root\",phase=\"reissue\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("\nrelayctl_ca_rotation_blocked_clusters 2\n"),
            "{text}"
        );
        assert!(
            text.contains("\nrelayctl_ca_rotation_old_certificates 5\n"),
            "{text}"
        );
    }

    #[test]
    fn certificate_gauges_carry_cert_managers_names_and_unix_seconds() {
        let text = observation_text(&observation(&["cluster-1"]));
        assert!(
            text.contains("# TYPE relayctl_certificate_not_after_timestamp_seconds gauge\n"),
            "{text}"
        );
        assert!(text.contains(
            "relayctl_certificate_not_after_timestamp_seconds{cluster=\"cluster-1\",secret=\"relay-client-tls-secret\",role=\"client\",fingerprint=\"0123456789ab\"} 9000\n"
        ), "{text}");
        assert!(text.contains("relayctl_certificate_renewal_timestamp_seconds{cluster=\"cluster-1\",secret=\"relay-client-tls-secret\",role=\"client\",fingerprint=\"0123456789ab\"} 8900\n"), "{text}");
        assert!(
            text.contains("relayctl_cluster_state{cluster=\"cluster-1\",state=\"drift\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("relayctl_cluster_state{cluster=\"cluster-1\",state=\"converged\"} 0\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn a_cluster_that_left_has_no_series_in_the_next_registry() {
        let before = observation_text(&observation(&["cluster-1", "cluster-2"]));
        let after = observation_text(&observation(&["cluster-1"]));
        assert!(before.contains("cluster=\"cluster-2\""));
        assert!(!after.contains("cluster-2"), "{after}");
    }

    #[test]
    fn counters_are_typed_under_their_total_name_in_the_classic_format() {
        let mut registry = registry();
        let mut process = Process {
            runs: 3,
            ..Process::default()
        };
        process.errors.insert(ErrorReason::Lock, 1);
        process.duration.observe(0.7);
        let mut api = ApiCalls::default();
        api.by_code.insert("2xx", 12);
        api.duration.observe(0.02);
        register_process(&mut registry, &process, &api, "0.1.0");
        let open = encode_openmetrics(&registry);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(
            open.contains("# TYPE relayctl_reconcile counter\n"),
            "{open}"
        );
        let text = to_prometheus_text(&open);
        assert!(
            text.contains("# TYPE relayctl_reconcile_total counter\nrelayctl_reconcile_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("relayctl_reconcile_errors_total{reason=\"lock\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("relayctl_reconcile_errors_total{reason=\"config\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("relayctl_api_requests_total{code=\"2xx\"} 12\n"),
            "{text}"
        );
        assert!(
            text.contains("relayctl_reconcile_duration_seconds_bucket{le=\"1.0\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("relayctl_reconcile_duration_seconds_bucket{le=\"0.5\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "# TYPE relayctl_build_info gauge\nrelayctl_build_info{version=\"0.1.0\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn series_keep_the_order_of_the_observation() {
        let text = observation_text(&observation(&["b", "a", "c"]));
        let clusters: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("relayctl_certificate_not_after"))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        assert_eq!(clusters, ["b", "a", "c"]);
    }

    #[test]
    fn histogram_buckets_take_values_at_their_upper_bound() {
        let mut h = HistogramData::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 9.0] {
            h.observe(v);
        }
        assert_eq!(h.counts, vec![2, 1, 1]);
        assert_eq!(h.count(), 4);
        assert!((h.sum - 12.0).abs() < f64::EPSILON);
    }
}
