//! The inventory on mgmt, and the clusters that left the config.
//!
//! The inventory lists every workload cluster this instance has written to,
//! with its connection, so that one whose manifest was removed (an
//! *orphan*) can still be reached: its Secrets are pruned with `prune`, or
//! kept, and it stays listed until nothing of this instance is left on it.

use std::collections::{BTreeMap, BTreeSet};

use super::PlanInput;
use super::Write;
use super::cluster::ClusterBuilder;
use super::model::{Role, Value};
use crate::model::{ClusterName, Connection};
use crate::observed::{ClusterObservation, Ownership, SecretObject};
use crate::relay::{inventory_secret, key};
use crate::secret::SecretBytes;

/// The inventory entry of one workload cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InventoryEntry {
    /// Cluster name.
    pub name: ClusterName,
    /// How relayctl reached it.
    pub connection: Connection,
}

/// Reads the inventory Secret of `instance` from an observed mgmt cluster.
pub fn read_inventory(obs: &ClusterObservation, instance: &str) -> Vec<InventoryEntry> {
    obs.secrets
        .get(&inventory_secret(instance))
        .filter(|s| s.ownership(instance) == Ownership::Ours)
        .and_then(|s| s.get(key::INVENTORY))
        .and_then(|v| serde_json::from_slice(v.expose()).ok())
        .unwrap_or_default()
}

/// Plans every orphan: its Secrets of this instance are deleted when
/// pruning is on (and some workload cluster remains: an empty config never
/// prunes), kept otherwise. Returns the plans and the orphans that stay in
/// the inventory (kept, unreachable, or not observed).
pub(super) fn orphans<'a>(
    input: &'a PlanInput<'a>,
    digest: &'a str,
) -> (Vec<ClusterBuilder<'a>>, BTreeMap<ClusterName, Connection>) {
    let config = input.config;
    let may_prune = input.prune && !config.workloads.is_empty();
    let mut kept = BTreeMap::new();
    let mut plans = Vec::new();
    for (name, connection) in input.orphans {
        let mut cluster = ClusterBuilder::new(input, digest, name.clone(), Role::Orphan);
        match input.observed.clusters.get(name) {
            Some(Ok(obs)) => {
                let owned: Vec<&SecretObject> = obs
                    .secrets
                    .values()
                    .filter(|s| s.ownership(config.instance.as_str()) == Ownership::Ours)
                    .collect();
                for secret in &owned {
                    if may_prune {
                        cluster.push_delete(
                            secret,
                            "orphan: the cluster left the config and pruning is on",
                        );
                    } else {
                        let why = if input.prune {
                            "orphan: kept, because no workload cluster remains in the config"
                        } else {
                            "orphan: the cluster left the config; kept (pruning is off)"
                        };
                        cluster.push_noop(secret, why);
                    }
                }
                if !may_prune && !owned.is_empty() {
                    kept.insert(name.clone(), connection.clone());
                }
            }
            Some(Err(why)) => {
                cluster.error = Some(why.clone());
                kept.insert(name.clone(), connection.clone());
            }
            None => {
                kept.insert(name.clone(), connection.clone());
            }
        }
        plans.push(cluster);
    }
    (plans, kept)
}

/// The inventory on mgmt. It is written last, once every orphan was
/// pruned, so that an orphan whose prune failed is still listed. But a
/// cluster about to be written for the first time is added *before* (at
/// the end of mgmt's writes, ahead of every workload): a crash in between
/// must never leave a cluster written and unlisted, which `--prune` could
/// then never find.
pub(super) fn plan(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    kept_orphans: &BTreeMap<ClusterName, Connection>,
    written: &BTreeSet<&ClusterName>,
    mgmt: &mut ClusterBuilder<'_>,
) {
    let instance = input.config.instance.as_str();
    let name = inventory_secret(instance);
    let mut entries: Vec<InventoryEntry> = input
        .config
        .workloads
        .iter()
        .map(|w| InventoryEntry {
            name: w.cluster.name.clone(),
            connection: w.cluster.connection.clone(),
        })
        .chain(
            kept_orphans
                .iter()
                .map(|(name, connection)| InventoryEntry {
                    name: name.clone(),
                    connection: connection.clone(),
                }),
        )
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let current = read_inventory(obs, instance);
    let slot = mgmt.slot(obs, &name);
    let mut reasons = Vec::new();
    if slot.usable().is_some() && current != entries {
        let before: BTreeSet<&str> = current.iter().map(|e| e.name.as_str()).collect();
        let after: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let added: Vec<&str> = after.difference(&before).copied().collect();
        let removed: Vec<&str> = before.difference(&after).copied().collect();
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("+{}", added.join(", +")));
        }
        if !removed.is_empty() {
            parts.push(format!("-{}", removed.join(", -")));
        }
        if parts.is_empty() {
            parts.push("connections changed".to_owned());
        }
        reasons.push(format!("inventory: {}", parts.join(" ")));
    }
    let unlisted = written
        .iter()
        .any(|name| !current.iter().any(|e| &e.name == *name));
    let ahead = unlisted.then(|| {
        let mut ahead: Vec<InventoryEntry> = current
            .iter()
            .filter(|e| !entries.iter().any(|n| n.name == e.name))
            .cloned()
            .chain(entries.iter().cloned())
            .collect();
        ahead.sort_by(|a, b| a.name.cmp(&b.name));
        ahead
    });
    let text = serde_json::to_string_pretty(&entries).unwrap_or_default();
    let names = entries
        .iter()
        .map(|e| e.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    mgmt.decide(
        &slot,
        &name,
        reasons,
        BTreeMap::from([(key::INVENTORY.to_owned(), SecretBytes::from(text))]),
        BTreeMap::from([(
            key::INVENTORY.to_owned(),
            Value::Text {
                text: format!(
                    "workload clusters: {}",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names
                    }
                ),
            },
        )]),
    );
    // `decide` queued the final write last; place it.
    let Some(last) = mgmt.writes.pop_if(|w| w.object.name == name) else {
        return;
    };
    match ahead {
        Some(ahead) if ahead != entries => {
            let text = serde_json::to_string_pretty(&ahead).unwrap_or_default();
            let mut early = last.clone();
            early
                .object
                .data
                .insert(key::INVENTORY.to_owned(), SecretBytes::from(text));
            mgmt.writes.push(early);
            mgmt.last.push(Write {
                chained: true,
                ..last
            });
        }
        Some(_) => mgmt.writes.push(last),
        None => mgmt.last.push(last),
    }
}
