//! CA rotation through the planner and the directory backend, with an
//! injected clock: decades of reconcile ticks, each phase in order, gates,
//! waves and rollbacks.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use relayctl::backend::Backend;
use relayctl::backend::directory::DirectoryBackend;
use relayctl::material::Material;
use relayctl::model::{ClusterName, KeyAlgorithm, TrustConfig};
use relayctl::plan::rotation::RotationRequest;
use relayctl::plan::{self, PlanInput, Planned, Randomness};
use relayctl::secret::SecretBytes;
use time::OffsetDateTime;

fn config(example: &str) -> TrustConfig {
    let dir = Path::new("examples/clusters").join(example);
    let files = relayctl::source::read_local(&dir).unwrap();
    let mut config = relayctl::config::validate(&files, &dir).unwrap();
    // Fresh keys for every certificate (a pool would repeat them, and two
    // intermediates with one key are one issuer to a verifier); P-256 keeps
    // decades of them cheap.
    config.ca.root.key = KeyAlgorithm::EcdsaP256;
    config.ca.intermediate.key = KeyAlgorithm::EcdsaP256;
    config.server.key = KeyAlgorithm::EcdsaP256;
    config.client_certs.key = KeyAlgorithm::EcdsaP256;
    config
}

fn token() -> SecretBytes {
    SecretBytes::from("0123456789abcdef".repeat(4))
}

struct World {
    state: tempfile::TempDir,
    config: TrustConfig,
}

impl World {
    fn new(config: TrustConfig) -> Self {
        Self {
            state: tempfile::tempdir().unwrap(),
            config,
        }
    }

    fn backends(&self) -> BTreeMap<ClusterName, Arc<dyn Backend>> {
        self.config
            .clusters()
            .map(|c| {
                (
                    c.name.clone(),
                    Arc::new(DirectoryBackend::new(
                        self.state.path().join(c.name.as_str()),
                    )) as Arc<dyn Backend>,
                )
            })
            .collect()
    }

    fn observe(&self) -> relayctl::observed::Observed {
        let clusters: Vec<_> = self.backends().into_iter().collect();
        relayctl::fleet::observe(&self.config, &clusters, 4, &|_, _| {})
    }

    fn plan_with(&self, now: OffsetDateTime, request: RotationRequest) -> Planned {
        let observed = self.observe();
        let keys = relayctl::pki::OsKeySource;
        let input = PlanInput {
            config: &self.config,
            material: &Material::default(),
            observed: &observed,
            orphans: &BTreeMap::new(),
            adopt: false,
            prune: false,
            source: "test",
            now,
            random: Randomness {
                keys: &keys,
                token: &token,
            },
            workers: &relayctl::plan::InOrder,
            rotation: request,
        };
        plan::plan(&input).unwrap()
    }

    fn plan(&self, now: OffsetDateTime) -> Planned {
        self.plan_with(now, RotationRequest::Proceed)
    }

    fn apply(&self, planned: &Planned) {
        let report = relayctl::apply::apply(&planned.writes, &self.backends(), 4, &|_| {});
        assert!(report.ok(), "{report:?}");
    }

    /// Every certificate anywhere, with where it is.
    fn certificates(&self) -> Vec<(String, relayctl::pki::CertFacts)> {
        let observed = self.observe();
        let mut out = Vec::new();
        for (cluster, obs) in &observed.clusters {
            let obs = obs.as_ref().unwrap();
            for secret in obs.secrets.values() {
                for (key, value) in &secret.data {
                    if let Ok(certs) = relayctl::pki::inspect_bundle(value.expose()) {
                        for cert in certs {
                            out.push((format!("{cluster}/{}/{key}", secret.name), cert));
                        }
                    }
                }
            }
        }
        out
    }
}

/// A managed, preprovisioned fleet reconciled once a month for 30 years:
/// no certificate ever expires while in use (each must outlive the next
/// tick), every tick's `check` passes, and every rotation went through each
/// of its phases, in order.
#[test]
fn thirty_years_of_monthly_ticks_rotate_everything_in_time() {
    let world = World::new(config("managed-preprovisioned"));
    let start = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let month = time::Duration::days(30);
    let mut seen: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut roots = std::collections::BTreeSet::new();
    let ticks = 12 * 30;
    for tick in 0..=ticks {
        let now = start + month * tick;
        let planned = world.plan(now);
        assert!(
            !planned.plan.summary.has_errors(),
            "tick {tick} ({now}): {}",
            plan::render::text(&planned.plan, plan::render::Palette::plain(), false)
        );
        world.apply(&planned);
        if let Some(rotation) = &planned.plan.ca.rotation {
            let entry = seen
                .entry(rotation.id.clone())
                .or_insert_with(|| (rotation.kind.clone(), Vec::new()));
            if entry.1.last() != Some(&rotation.phase) {
                entry.1.push(rotation.phase.clone());
            }
        }
        let report = relayctl::check::check(
            &world.config,
            &world.observe(),
            &relayctl::pki::OsKeySource,
            now,
        );
        assert!(
            report.passed(),
            "tick {tick} ({now}): {}",
            relayctl::check::render_text(&report, false, true)
        );
        for (place, cert) in world.certificates() {
            assert!(
                cert.not_after > now + month,
                "tick {tick} ({now}): {place} `{}` expires at {} before the next tick",
                cert.subject,
                cert.not_after
            );
            if place.ends_with("relay-root-tls-secret/ca.crt") && place.starts_with("mgmt/") {
                roots.insert(cert.sha256_fingerprint.clone());
            }
        }
    }
    // The rotation still under way at the end is not judged.
    let last = world.plan(start + month * ticks).plan.ca.rotation;
    if let Some(open) = last {
        seen.remove(&open.id);
    }
    let root_rotations: Vec<_> = seen.values().filter(|(k, _)| k == "root").collect();
    let intermediate_rotations: Vec<_> =
        seen.values().filter(|(k, _)| k == "intermediate").collect();
    // A 10-year root is replaced about every 5 years (published at 1.5 ×
    // renewBefore before its end, signing from renewBefore).
    assert!(root_rotations.len() >= 5, "{seen:#?}");
    assert!(roots.len() >= 6, "{} roots in 30 years", roots.len());
    for (_, phases) in &root_rotations {
        assert_eq!(
            phases,
            &["trust-both", "switch-signer", "reissue", "drop-old"],
            "{seen:#?}"
        );
    }
    for (_, phases) in &intermediate_rotations {
        assert_eq!(phases, &["switch-signer", "reissue", "end"], "{seen:#?}");
    }
}
