//! The planner's rules, pinned without a file system: a fleet is built
//! from a few lines of manifest ([`Fleet`]), planned, "applied" by turning
//! the planned writes into observations, and planned again.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::*;
use crate::config::{ManifestFile, validate};
use crate::model::{CaMode, ClientCertMode, ClusterName, TrustConfig};
use crate::observed::{ClusterObservation, Observed, SecretObject};
use crate::relay::{RelaySecret, key};

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn now() -> OffsetDateTime {
    time::macros::datetime!(2030-01-01 00:00 UTC)
}

fn name(text: &str) -> ClusterName {
    ClusterName::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// A fleet under test: its config, what its clusters hold, and the clock.
struct Fleet {
    config: TrustConfig,
    observed: Observed,
    material: Material,
    now: OffsetDateTime,
}

impl Fleet {
    /// `spec` lines of the RelayTrust (indented by two), mgmt and `workloads`.
    fn test(spec: &str, workloads: &[&str]) -> Self {
        let spec = if spec.is_empty() {
            "  namespace: gloo-mesh\n"
        } else {
            spec
        };
        let mut text = format!(
            "apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata: {{ name: prod }}\nspec:\n{spec}---\napiVersion: relayctl.dev/v1alpha1\nkind: ManagementCluster\nmetadata: {{ name: mgmt }}\n"
        );
        for workload in workloads {
            text.push_str(&format!(
                "---\napiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata: {{ name: {workload} }}\n"
            ));
        }
        let config = validate(
            &[ManifestFile {
                path: "fleet.yaml".into(),
                text,
            }],
            std::path::Path::new(""),
        )
        .unwrap_or_else(|d| panic!("{d:#?}"));
        let observed = Observed {
            clusters: config
                .clusters()
                .map(|c| (c.name.clone(), Ok(ClusterObservation::default())))
                .collect(),
        };
        Self {
            config,
            observed,
            material: Material::default(),
            now: now(),
        }
    }

    fn plan(&self) -> Planned {
        self.plan_with(&InOrder)
    }

    fn plan_with(&self, workers: &dyn Workers) -> Planned {
        let token = || SecretBytes::from(TOKEN.to_owned());
        plan(&PlanInput {
            config: &self.config,
            material: &self.material,
            observed: &self.observed,
            orphans: &BTreeMap::new(),
            adopt: false,
            prune: false,
            source: "test",
            now: self.now,
            random: Randomness {
                keys: &crate::pki::testing::PooledKeySource,
                token: &token,
            },
            workers,
            rotation: Default::default(),
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Carries out `planned` on the observations, as apply would.
    fn apply(&mut self, planned: &Planned) {
        for cluster in &planned.writes {
            let Some(Ok(obs)) = self.observed.clusters.get_mut(&cluster.cluster) else {
                continue;
            };
            for write in cluster.writes.iter().chain(&cluster.last) {
                match write.action {
                    Action::Delete => {
                        obs.secrets.remove(&write.object.name);
                    }
                    _ => {
                        let mut object = write.object.clone();
                        object.version = format!("v-{}", object.name.len() + obs.secrets.len());
                        obs.secrets.insert(object.name.clone(), object);
                    }
                }
            }
        }
    }

    fn converged(spec: &str, workloads: &[&str]) -> Self {
        let mut fleet = Self::test(spec, workloads);
        let planned = fleet.plan();
        fleet.apply(&planned);
        fleet
    }

    fn secret(&mut self, cluster: &str, secret: RelaySecret) -> &mut SecretObject {
        match self.observed.clusters.get_mut(&name(cluster)) {
            Some(Ok(obs)) => obs
                .secrets
                .get_mut(secret.name())
                .unwrap_or_else(|| panic!("{cluster} holds no {secret}")),
            _ => panic!("{cluster} is not observed"),
        }
    }
}

/// `(cluster, secret, action, reasons)` of every change that is not a no-op.
fn changes(planned: &Planned) -> Vec<(String, String, Action, Vec<String>)> {
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

fn error_of<'a>(planned: &'a Planned, cluster: &str) -> Option<&'a str> {
    planned
        .plan
        .clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.error.as_deref())
}

#[test]
fn a_first_plan_creates_what_the_catalogue_says_in_write_order_and_then_converges() {
    let mut fleet = Fleet::test("  clientCerts: { mode: preprovisioned }\n", &["cluster-1"]);
    let planned = fleet.plan();
    let mgmt = &planned.writes[0];
    let names: Vec<&str> = mgmt.writes.iter().map(|w| w.object.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "relay-root-tls-secret",
            "relay-tls-signing-secret",
            "relay-server-tls-secret",
            "relay-identity-token-secret",
            "relayctl-prod-inventory"
        ]
    );
    let held = crate::relay::held(
        CaMode::Managed,
        ClientCertMode::Preprovisioned,
        true,
        Role::Management,
        false,
    );
    for (write, row) in mgmt.writes.iter().zip(&held) {
        let keys: Vec<&str> = write.object.data.keys().map(String::as_str).collect();
        let mut want = row.keys.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want, "{}", write.object.name);
    }
    let workload: Vec<&str> = planned.writes[1]
        .writes
        .iter()
        .map(|w| w.object.name.as_str())
        .collect();
    assert_eq!(
        workload,
        [
            "relay-root-tls-secret",
            "relay-identity-token-secret",
            "relay-client-tls-secret"
        ]
    );
    fleet.apply(&planned);
    assert!(
        changes(&fleet.plan()).is_empty(),
        "{:#?}",
        changes(&fleet.plan())
    );
}

#[test]
fn a_managed_root_whose_key_is_lost_is_an_error_and_blocks_every_workload() {
    let mut fleet = Fleet::converged("", &["cluster-1"]);
    fleet
        .secret("mgmt", RelaySecret::Root)
        .data
        .remove(key::TLS_KEY);
    let planned = fleet.plan();
    let root = &planned.plan.clusters[0].changes[0];
    assert_eq!(root.action, Action::Error);
    assert!(
        root.reasons[0].contains("never replaces an existing root CA"),
        "{root:?}"
    );
    assert!(planned.writes.iter().all(|w| w.writes.is_empty()));
    assert!(
        error_of(&planned, "cluster-1").is_some_and(|e| e.starts_with("blocked")),
        "{:?}",
        error_of(&planned, "cluster-1")
    );
}

#[test]
fn a_workload_whose_root_secret_holds_a_ca_key_is_refused_not_stripped() {
    let mut fleet = Fleet::converged("", &["cluster-1"]);
    let root_key = fleet
        .secret("mgmt", RelaySecret::Root)
        .data
        .get(key::TLS_KEY)
        .unwrap()
        .clone();
    fleet
        .secret("cluster-1", RelaySecret::Root)
        .data
        .insert(key::TLS_KEY.to_owned(), root_key);
    let planned = fleet.plan();
    assert!(
        error_of(&planned, "cluster-1").is_some_and(|e| e.contains("never writes a workload")),
        "{:?}",
        error_of(&planned, "cluster-1")
    );
    assert!(planned.writes[1].writes.is_empty());
}

#[test]
fn an_extra_data_key_is_drift_and_a_changed_token_is_repaired_from_mgmt() {
    let mut fleet = Fleet::converged("", &["cluster-1"]);
    let token = fleet.secret("cluster-1", RelaySecret::Token);
    token
        .data
        .insert(key::TOKEN.to_owned(), SecretBytes::from("other".to_owned()));
    token
        .data
        .insert("extra".to_owned(), SecretBytes::from("x".to_owned()));
    let changed = changes(&fleet.plan());
    assert_eq!(changed.len(), 1, "{changed:#?}");
    let (cluster, secret, action, reasons) = &changed[0];
    assert_eq!(
        (cluster.as_str(), secret.as_str(), *action),
        ("cluster-1", "relay-identity-token-secret", Action::Update)
    );
    assert_eq!(
        reasons,
        &["token differs from mgmt", "unexpected data key `extra`"]
    );
}

/// Runs a plan's parts last first, and counts them.
struct Backwards(std::sync::atomic::AtomicUsize);

impl Workers for Backwards {
    fn run<'s>(&self, jobs: Vec<Box<dyn FnOnce() + Send + 's>>) {
        self.0
            .fetch_add(jobs.len(), std::sync::atomic::Ordering::Relaxed);
        for job in jobs.into_iter().rev() {
            job();
        }
    }

    fn width(&self) -> usize {
        3
    }
}

#[test]
fn a_fleet_planned_in_parts_out_of_order_plans_as_it_does_in_one() {
    let names: Vec<String> = (0..800).map(|i| format!("cluster-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut fleet = Fleet::converged("", &names);
    for drifted in ["cluster-3", "cluster-400", "cluster-799"] {
        fleet
            .secret(drifted, RelaySecret::Token)
            .data
            .insert(key::TOKEN.to_owned(), SecretBytes::from("other".to_owned()));
    }
    let in_order = fleet.plan();
    let backwards = Backwards(Default::default());
    let in_parts = fleet.plan_with(&backwards);
    assert_eq!(backwards.0.into_inner(), 3, "800 workloads make 3 parts");
    assert_eq!(in_parts.plan, in_order.plan);
    let drifted: Vec<_> = changes(&in_parts).into_iter().map(|c| c.0).collect();
    assert_eq!(drifted, ["cluster-3", "cluster-400", "cluster-799"]);
}

#[test]
fn a_new_cluster_is_listed_in_the_inventory_ahead_of_its_first_write() {
    let mut fleet = Fleet::converged("", &["cluster-1"]);
    fleet.config = Fleet::test("", &["cluster-1", "cluster-2"]).config;
    fleet
        .observed
        .clusters
        .insert(name("cluster-2"), Ok(ClusterObservation::default()));
    let planned = fleet.plan();
    let mgmt = &planned.writes[0];
    let inventory = crate::relay::inventory_secret("prod");
    let ahead = mgmt
        .writes
        .iter()
        .find(|w| w.object.name == inventory)
        .unwrap_or_else(|| panic!("the inventory is among mgmt's writes: {mgmt:#?}"));
    let listed = String::from_utf8_lossy(ahead.object.data.get(key::INVENTORY).unwrap().expose())
        .into_owned();
    assert!(listed.contains("cluster-2"), "{listed}");
    assert!(mgmt.last.is_empty());
}

#[test]
fn gloo_mode_reads_mgmts_secrets_and_never_writes_them() {
    let managed = Fleet::converged("", &["cluster-1"]);
    let mut fleet = Fleet::test("  ca: { mode: gloo }\n", &["cluster-1"]);
    // The management server's own CA, as it wrote it at install (unlabelled).
    let mgmt_obs = match managed.observed.clusters.get(&name("mgmt")) {
        Some(Ok(obs)) => obs.clone(),
        _ => panic!("mgmt"),
    };
    let mut theirs = ClusterObservation::default();
    for secret in [RelaySecret::Root, RelaySecret::Signing, RelaySecret::Token] {
        let mut object = mgmt_obs.secrets.get(secret.name()).unwrap().clone();
        object.labels.clear();
        theirs.secrets.insert(object.name.clone(), object);
    }
    fleet.observed.clusters.insert(name("mgmt"), Ok(theirs));
    let planned = fleet.plan();
    assert!(
        planned.writes[0]
            .writes
            .iter()
            .all(|w| w.object.name == crate::relay::inventory_secret("prod")),
        "only the inventory is written on mgmt: {:#?}",
        planned.writes[0]
    );
    let workload = &planned.writes[1].writes;
    assert_eq!(
        workload[0].object.data.get(key::CA_CRT).unwrap(),
        mgmt_obs
            .secrets
            .get(RelaySecret::Root.name())
            .unwrap()
            .data
            .get(key::CA_CRT)
            .unwrap()
    );
}

#[test]
fn a_client_certificate_due_for_renewal_is_reissued_with_the_reason() {
    let mut fleet = Fleet::converged(
        "  clientCerts: { mode: preprovisioned, validity: 2160h, renewBefore: 720h }\n",
        &["cluster-1"],
    );
    fleet.now = now() + time::Duration::hours(2160 - 700);
    let changed = changes(&fleet.plan());
    assert_eq!(changed.len(), 1, "{changed:#?}");
    assert_eq!(changed[0].1, "relay-client-tls-secret");
    assert!(
        changed[0].3[0].starts_with("expires in 29d4h < renewBefore 720h"),
        "{:?}",
        changed[0].3
    );
}

#[test]
fn in_token_mode_an_agent_certificate_of_another_root_is_deleted_so_it_bootstraps_again() {
    let mut fleet = Fleet::converged("", &["cluster-1"]);
    // What an agent wrote after bootstrapping against a CA that is gone.
    let other = Fleet::converged("  clientCerts: { mode: preprovisioned }\n", &["cluster-1"]);
    let agents = match other.observed.clusters.get(&name("cluster-1")) {
        Some(Ok(obs)) => obs.secrets.get(RelaySecret::Client.name()).unwrap().clone(),
        _ => panic!("cluster-1"),
    };
    if let Some(Ok(obs)) = fleet.observed.clusters.get_mut(&name("cluster-1")) {
        let mut agents = agents;
        agents.labels.clear();
        obs.secrets.insert(agents.name.clone(), agents);
    }
    let changed = changes(&fleet.plan());
    assert_eq!(changed.len(), 1, "{changed:#?}");
    assert_eq!(
        (changed[0].1.as_str(), changed[0].2),
        ("relay-client-tls-secret", Action::Delete)
    );
}
