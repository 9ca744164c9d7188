//! The planner with an injected clock and randomness: certificates inside
//! their renewal window are renewed, and nothing else moves.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use relayctl::backend::Backend;
use relayctl::backend::directory::DirectoryBackend;
use relayctl::material::Material;
use relayctl::model::ClusterName;
use relayctl::plan::{self, Action, PlanInput, Planned, Randomness};
use relayctl::secret::SecretBytes;
use time::OffsetDateTime;

fn config() -> relayctl::model::TrustConfig {
    let files = relayctl::source::read_local(Path::new("examples/clusters/managed-preprovisioned"))
        .unwrap();
    let mut config = relayctl::config::validate(&files).unwrap();
    config.ca.root.key = relayctl::model::KeyAlgorithm::EcdsaP256;
    config
}

fn token() -> SecretBytes {
    SecretBytes::from("0123456789abcdef".repeat(4))
}

struct World {
    state: tempfile::TempDir,
    config: relayctl::model::TrustConfig,
}

impl World {
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

    fn plan(&self, now: OffsetDateTime) -> Planned {
        let clusters: Vec<_> = self.backends().into_iter().collect();
        let observed = relayctl::fleet::observe(&self.config, &clusters, 4);
        let keys = relayctl::pki::testing::PooledKeySource;
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
        };
        plan::plan(&input).unwrap()
    }

    fn apply(&self, planned: &Planned) {
        let report = relayctl::apply::apply(&planned.writes, &self.backends(), 4, &|_| {});
        assert!(report.ok(), "{report:?}");
    }
}

fn actions(planned: &Planned) -> Vec<(String, String, Action, Vec<String>)> {
    planned
        .plan
        .clusters
        .iter()
        .flat_map(|c| {
            c.changes
                .iter()
                .filter(|ch| ch.action != Action::NoOp)
                .map(move |ch| {
                    (
                        c.name.clone(),
                        ch.name.clone(),
                        ch.action,
                        ch.reasons.clone(),
                    )
                })
        })
        .collect()
}

#[test]
fn certificates_in_their_renewal_window_are_renewed_and_nothing_else() {
    let world = World {
        state: tempfile::tempdir().unwrap(),
        config: config(),
    };
    let t0 = OffsetDateTime::now_utc();
    world.apply(&world.plan(t0));
    assert!(actions(&world.plan(t0)).is_empty(), "converged at t0");

    // Client certs live 90d and renew 30d before expiry: at +59d nothing moves,
    // at +61d both client certs are renewed, with the reason.
    let day = time::Duration::days(1);
    assert!(actions(&world.plan(t0 + day * 59)).is_empty());
    let later = world.plan(t0 + day * 61);
    let changed = actions(&later);
    assert_eq!(changed.len(), 2, "{changed:#?}");
    for (cluster, name, action, reasons) in &changed {
        assert!(cluster.starts_with("cluster-"));
        assert_eq!(name, "relay-client-tls-secret");
        assert_eq!(*action, Action::Update);
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("expires in 28d") && r.contains("< renewBefore 30d")),
            "{reasons:?}"
        );
    }
    world.apply(&later);
    assert!(
        actions(&world.plan(t0 + day * 61)).is_empty(),
        "renewal converges without a loop"
    );

    // The server cert (8760h, renewBefore defaults to a third) is due after ~243d.
    let server_due = actions(&world.plan(t0 + day * 250));
    assert!(
        server_due.iter().any(|(c, n, _, r)| c == "mgmt"
            && n == "relay-server-tls-secret"
            && r.iter().any(|r| r.contains("renewBefore"))),
        "{server_due:#?}"
    );
    // The root and the intermediate never move within their lifetime.
    assert!(
        !server_due
            .iter()
            .any(|(_, n, _, _)| n == "relay-root-tls-secret" || n == "relay-tls-signing-secret")
    );
}

#[test]
fn plans_are_deterministic_for_the_same_inputs() {
    let world = World {
        state: tempfile::tempdir().unwrap(),
        config: config(),
    };
    let t0 = OffsetDateTime::now_utc();
    world.apply(&world.plan(t0));
    let a = world.plan(t0 + time::Duration::days(61)).plan;
    let b = world.plan(t0 + time::Duration::days(61)).plan;
    // New certificates differ (fresh keys), but the plan shows only what is
    // known before apply, so the plans are equal.
    assert_eq!(a, b);
}
