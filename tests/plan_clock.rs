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
    let mut config = relayctl::config::validate(
        &files,
        Path::new("examples/clusters/managed-preprovisioned"),
    )
    .unwrap();
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
        let observed = relayctl::fleet::observe(&self.config, &clusters, 4, &|_, _| {});
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
            workers: &relayctl::plan::InOrder,
            rotation: Default::default(),
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
                .any(|r| r.starts_with("expires in 28d") && r.contains("< renewBefore 720h")),
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

/// A directory backend whose deletes fail, as an unreachable or changed orphan would.
struct FailingDeletes(DirectoryBackend);

impl Backend for FailingDeletes {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn target(&self) -> String {
        self.0.target()
    }
    fn observe(
        &self,
        namespace: &str,
        instance: &str,
        names: &[String],
    ) -> Result<relayctl::observed::ClusterObservation, relayctl::backend::BackendError> {
        self.0.observe(namespace, instance, names)
    }
    fn write(
        &self,
        write: &relayctl::plan::Write,
    ) -> Result<Option<String>, relayctl::backend::BackendError> {
        if write.action == Action::Delete {
            return Err(relayctl::backend::BackendError::Connect {
                cluster: "test".into(),
                what: "injected failure".into(),
                source: None,
            });
        }
        self.0.write(write)
    }
    fn observe_registrations(
        &self,
        namespace: &str,
    ) -> Result<BTreeMap<String, relayctl::observed::Registration>, relayctl::backend::BackendError>
    {
        self.0.observe_registrations(namespace)
    }
    fn write_registration(
        &self,
        write: &relayctl::plan::RegistrationWrite,
    ) -> Result<(), relayctl::backend::BackendError> {
        self.0.write_registration(write)
    }
    fn lock(
        &self,
        namespace: &str,
        instance: &str,
        holder: &str,
        timeout: std::time::Duration,
    ) -> Result<Box<dyn relayctl::backend::LockGuard>, relayctl::backend::BackendError> {
        self.0.lock(namespace, instance, holder, timeout)
    }
}

#[test]
fn an_orphan_whose_prune_failed_stays_in_the_inventory() {
    let mut world = World {
        state: tempfile::tempdir().unwrap(),
        config: config(),
    };
    let t0 = OffsetDateTime::now_utc();
    world.apply(&world.plan(t0));
    // cluster-2 leaves the config; pruning is on; its deletes fail.
    let gone = world.config.workloads.pop().unwrap().cluster;
    assert_eq!(gone.name.as_str(), "cluster-2");
    let mut backends = world.backends();
    backends.insert(
        gone.name.clone(),
        Arc::new(FailingDeletes(DirectoryBackend::new(
            world.state.path().join("cluster-2"),
        ))),
    );
    let orphans = BTreeMap::from([(gone.name.clone(), gone.connection.clone())]);
    let plan_with = |backends: &BTreeMap<ClusterName, Arc<dyn Backend>>| {
        let clusters: Vec<_> = backends.clone().into_iter().collect();
        let observed = relayctl::fleet::observe(&world.config, &clusters, 4, &|_, _| {});
        let keys = relayctl::pki::testing::PooledKeySource;
        let input = PlanInput {
            config: &world.config,
            material: &Material::default(),
            observed: &observed,
            orphans: &orphans,
            adopt: false,
            prune: true,
            source: "test",
            now: t0,
            random: Randomness {
                keys: &keys,
                token: &token,
            },
            workers: &relayctl::plan::InOrder,
            rotation: Default::default(),
        };
        plan::plan(&input).unwrap()
    };
    let planned = plan_with(&backends);
    assert!(
        actions(&planned)
            .iter()
            .any(|(c, _, a, _)| c == "cluster-2" && *a == Action::Delete)
    );
    let report = relayctl::apply::apply(&planned.writes, &backends, 4, &|_| {});
    assert!(!report.ok());
    // The inventory still lists cluster-2, so the next run finds and prunes it.
    let mgmt = DirectoryBackend::new(world.state.path().join("mgmt"));
    let observed = mgmt
        .observe(
            "gloo-mesh",
            "prod",
            &[relayctl::relay::inventory_secret("prod")],
        )
        .unwrap();
    let inventory = plan::read_inventory(&observed, "prod");
    assert!(
        inventory.iter().any(|e| e.name.as_str() == "cluster-2"),
        "{inventory:?}"
    );
    // Once deletes work, the prune and then the inventory go through.
    backends.insert(
        gone.name.clone(),
        Arc::new(DirectoryBackend::new(world.state.path().join("cluster-2"))),
    );
    let planned = plan_with(&backends);
    assert!(relayctl::apply::apply(&planned.writes, &backends, 4, &|_| {}).ok());
    let observed = mgmt
        .observe(
            "gloo-mesh",
            "prod",
            &[relayctl::relay::inventory_secret("prod")],
        )
        .unwrap();
    assert!(
        observed
            .secrets
            .contains_key(&relayctl::relay::inventory_secret("prod"))
    );
    assert!(
        !plan::read_inventory(&observed, "prod")
            .iter()
            .any(|e| e.name.as_str() == "cluster-2")
    );
    world
        .config
        .workloads
        .push(relayctl::model::WorkloadConfig {
            cluster: gone,
            client_cert: None,
            client_key: None,
            shard: None,
        });
}

/// A directory backend whose writes succeed `ok` times and then fail, as a
/// run killed between two writes would leave it.
struct DiesAfter {
    inner: DirectoryBackend,
    ok: std::sync::atomic::AtomicUsize,
}

impl Backend for DiesAfter {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn target(&self) -> String {
        self.inner.target()
    }
    fn observe(
        &self,
        namespace: &str,
        instance: &str,
        names: &[String],
    ) -> Result<relayctl::observed::ClusterObservation, relayctl::backend::BackendError> {
        self.inner.observe(namespace, instance, names)
    }
    fn write(
        &self,
        write: &relayctl::plan::Write,
    ) -> Result<Option<String>, relayctl::backend::BackendError> {
        use std::sync::atomic::Ordering;
        if self
            .ok
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(relayctl::backend::BackendError::Connect {
                cluster: "test".into(),
                what: "the process died here".into(),
                source: None,
            });
        }
        self.inner.write(write)
    }
    fn observe_registrations(
        &self,
        namespace: &str,
    ) -> Result<BTreeMap<String, relayctl::observed::Registration>, relayctl::backend::BackendError>
    {
        self.inner.observe_registrations(namespace)
    }
    fn write_registration(
        &self,
        write: &relayctl::plan::RegistrationWrite,
    ) -> Result<(), relayctl::backend::BackendError> {
        self.inner.write_registration(write)
    }
    fn lock(
        &self,
        namespace: &str,
        instance: &str,
        holder: &str,
        timeout: std::time::Duration,
    ) -> Result<Box<dyn relayctl::backend::LockGuard>, relayctl::backend::BackendError> {
        self.inner.lock(namespace, instance, holder, timeout)
    }
}

#[test]
fn a_new_cluster_is_in_the_inventory_before_its_first_write() {
    let mut world = World {
        state: tempfile::tempdir().unwrap(),
        config: config(),
    };
    let t0 = OffsetDateTime::now_utc();
    world.apply(&world.plan(t0));
    // cluster-3 joins the config.
    let mut joining = world.config.workloads[0].clone();
    joining.cluster.name = ClusterName::parse("cluster-3").unwrap();
    world.config.workloads.push(joining.clone());
    let inventory = relayctl::relay::inventory_secret("prod");
    let planned = world.plan(t0);
    let mgmt = &planned.writes[0];
    assert_eq!(mgmt.role, plan::Role::Management);
    let ahead = mgmt
        .writes
        .iter()
        .find(|w| w.object.name == inventory)
        .expect("the inventory is written with mgmt, ahead of every workload");
    assert!(
        String::from_utf8_lossy(ahead.object.data.get("clusters.json").unwrap().expose())
            .contains("cluster-3")
    );
    // The run dies right after cluster-3's first write: mgmt gets no write
    // beyond its own (a last-written inventory would be lost).
    let mut backends = world.backends();
    backends.insert(
        world.config.management.name.clone(),
        Arc::new(DiesAfter {
            inner: DirectoryBackend::new(world.state.path().join("mgmt")),
            ok: mgmt.writes.len().into(),
        }),
    );
    backends.insert(
        joining.cluster.name.clone(),
        Arc::new(DiesAfter {
            inner: DirectoryBackend::new(world.state.path().join("cluster-3")),
            ok: 1.into(),
        }),
    );
    let report = relayctl::apply::apply(&planned.writes, &backends, 4, &|_| {});
    assert!(!report.ok());
    assert!(
        world
            .state
            .path()
            .join("cluster-3/gloo-mesh/relay-root-tls-secret.yaml")
            .exists()
    );
    // cluster-3 leaves the config again before any rerun: the inventory
    // still finds it, so `--prune` cleans it up.
    world.config.workloads.pop();
    let mgmt = DirectoryBackend::new(world.state.path().join("mgmt"));
    let observed = mgmt
        .observe("gloo-mesh", "prod", std::slice::from_ref(&inventory))
        .unwrap();
    let listed = plan::read_inventory(&observed, "prod");
    let entry = listed
        .iter()
        .find(|e| e.name.as_str() == "cluster-3")
        .expect("cluster-3 is in the inventory");
    let orphans = BTreeMap::from([(entry.name.clone(), entry.connection.clone())]);
    let mut backends = world.backends();
    backends.insert(
        entry.name.clone(),
        Arc::new(DirectoryBackend::new(world.state.path().join("cluster-3"))),
    );
    let clusters: Vec<_> = backends.clone().into_iter().collect();
    let observed = relayctl::fleet::observe(&world.config, &clusters, 4, &|_, _| {});
    let keys = relayctl::pki::testing::PooledKeySource;
    let input = PlanInput {
        config: &world.config,
        material: &Material::default(),
        observed: &observed,
        orphans: &orphans,
        adopt: false,
        prune: true,
        source: "test",
        now: t0,
        random: Randomness {
            keys: &keys,
            token: &token,
        },
        workers: &relayctl::plan::InOrder,
        rotation: Default::default(),
    };
    let planned = plan::plan(&input).unwrap();
    assert!(
        actions(&planned).iter().any(|(c, n, a, _)| c == "cluster-3"
            && n == "relay-root-tls-secret"
            && *a == Action::Delete),
        "{:?}",
        actions(&planned)
    );
    assert!(relayctl::apply::apply(&planned.writes, &backends, 4, &|_| {}).ok());
    assert!(
        !world
            .state
            .path()
            .join("cluster-3/gloo-mesh/relay-root-tls-secret.yaml")
            .exists()
    );
}
