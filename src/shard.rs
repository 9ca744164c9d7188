//! Sharding: which of several relayctl processes writes which cluster.
//!
//! A fleet that outgrows one process or one credential scope runs as `N`
//! *shards* (the indexes of a Kubernetes Indexed Job). Every shard computes
//! the same [`Placement`] from the config alone, with no shared state:
//! rendezvous (highest-random-weight) hashing of each workload cluster's
//! name, or the cluster's validated `spec.shard` pin. Going from `N` to
//! `N + 1` shards moves only the clusters the new shard wins, about
//! `1/(N + 1)` of them; no cluster moves between two old shards (Argo CD's
//! round-robin reshuffled every cluster on one removal).
//!
//! Shard 0 is the *coordinator*: it alone writes the management cluster
//! (root, signing, server, token, inventory, registrations and any other
//! record there) and prunes orphans, under the instance's apply lock. The
//! others read mgmt, plan only their own workload clusters, and write them
//! once mgmt holds what those workloads are planned against ([`narrow`]
//! says what they would otherwise wait for). Placement is not trusted
//! alone: the shell takes a writer fence in each workload cluster before
//! writing it, so a placement bug (two Jobs with different `N`, two
//! versions) degrades to "skip, reported", never to two writers; and each
//! shard's status names the clusters it claimed, so one that no shard
//! claimed shows in `check --shards N` ([`coverage`]).
//!
//! Pure: the config, the plan and what was observed in; data out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::check::{Check, CheckId, Status};
use crate::model::{ClusterName, SourceLocation, TrustConfig};
use crate::observed::Observed;
use crate::plan::{Action, Planned, Role, Summary};
use crate::status::ShardStatus;

/// Most shards a fleet may be split into: placement costs one hash per
/// cluster and shard.
pub const MAX_SHARDS: u32 = 1000;

/// The annotation naming the shard that wrote a Secret (`shard 1/3`), on
/// every Secret a sharded run writes.
pub const ANNOTATION_WRITER: &str = "relayctl.dev/written-by";

/// One shard of a sharded run: index `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// Shard `index` of `count`; the error says what is wrong.
    pub fn new(index: u32, count: u32) -> Result<Self, String> {
        check_count(count)?;
        if index >= count {
            return Err(format!(
                "shard index {index} is not below the shard count {count} (indexes run from 0 to {})",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }

    /// Its index, from 0.
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many shards there are.
    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether this is shard 0, which alone writes the management cluster.
    pub fn is_coordinator(self) -> bool {
        self.index == 0
    }

    /// Who holds a writer fence for this shard: the same for every run of
    /// this index and count, so the rerun of a killed shard takes its
    /// predecessor's fences over at once, and a Job with another count is
    /// another writer.
    pub fn identity(self, instance: &str) -> String {
        format!("relayctl/{instance}/shard-{}-of-{}", self.index, self.count)
    }

    /// `shard 1/3`.
    pub fn label(self) -> String {
        format!("shard {self}")
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `I/N`, e.g. `0/3`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{}` is not a shard: write `I/N`, e.g. `0/3` for the first of three",
                crate::text::printable(text)
            )
        };
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = index.trim().parse().map_err(|_| bad())?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        Self::new(index, count)
    }
}

/// Checks a shard count: 1 to [`MAX_SHARDS`].
pub fn check_count(count: u32) -> Result<(), String> {
    if count == 0 || count > MAX_SHARDS {
        Err(format!(
            "the shard count must be 1 to {MAX_SHARDS}, not {count}"
        ))
    } else {
        Ok(())
    }
}

/// The weight of `cluster` on `shard`: the first 8 bytes of
/// SHA-256(`relayctl-shard-v1` ‖ 0 ‖ name ‖ 0 ‖ shard as 4 bytes big-endian).
/// Stable across versions and machines: changing it moves clusters.
pub fn weight(cluster: &str, shard: u32) -> u64 {
    let mut hash = Sha256::new();
    hash.update(b"relayctl-shard-v1\0");
    hash.update(cluster.as_bytes());
    hash.update([0]);
    hash.update(shard.to_be_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The shard that wins `cluster` among `count` by rendezvous hashing (the
/// highest weight; the lower index on a tie).
pub fn rendezvous(cluster: &str, count: u32) -> u32 {
    (0..count.max(1))
        .map(|shard| (weight(cluster, shard), std::cmp::Reverse(shard)))
        .max()
        .map(|(_, std::cmp::Reverse(shard))| shard)
        .unwrap_or(0)
}

/// Where one workload cluster goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The shard.
    pub shard: u32,
    /// Placed by its `spec.shard` pin rather than by hashing.
    pub pinned: bool,
}

/// A `spec.shard` pin that is not below the shard count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinOutOfRange {
    /// The cluster.
    pub cluster: ClusterName,
    /// Its pin.
    pub pin: u32,
    /// Where the pin is written.
    pub location: SourceLocation,
}

/// Which shard writes each workload cluster. The management cluster is
/// always shard 0's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    count: u32,
    owners: BTreeMap<ClusterName, Owner>,
}

impl Placement {
    /// The placement of `config`'s workload clusters over `count` shards,
    /// or every pin that is not below `count`.
    pub fn of(config: &TrustConfig, count: u32) -> Result<Self, Vec<PinOutOfRange>> {
        let bad: Vec<PinOutOfRange> = config
            .workloads
            .iter()
            .filter_map(|w| {
                let pin = w.shard.as_ref()?;
                (pin.index >= count).then(|| PinOutOfRange {
                    cluster: w.cluster.name.clone(),
                    pin: pin.index,
                    location: pin.location.clone(),
                })
            })
            .collect();
        if !bad.is_empty() {
            return Err(bad);
        }
        Ok(Self::of_names(
            config
                .workloads
                .iter()
                .map(|w| (w.cluster.name.clone(), w.shard.as_ref().map(|p| p.index))),
            count,
        ))
    }

    /// The placement of `clusters` (name, pin) over `count` shards; a pin
    /// that is not below `count` is ignored (validation refuses it first).
    pub fn of_names(
        clusters: impl IntoIterator<Item = (ClusterName, Option<u32>)>,
        count: u32,
    ) -> Self {
        let count = count.max(1);
        let owners = clusters
            .into_iter()
            .map(|(name, pin)| {
                let owner = match pin {
                    Some(pin) if pin < count => Owner {
                        shard: pin,
                        pinned: true,
                    },
                    _ => Owner {
                        shard: rendezvous(name.as_str(), count),
                        pinned: false,
                    },
                };
                (name, owner)
            })
            .collect();
        Self { count, owners }
    }

    /// How many shards.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shard of workload cluster `name` (`None`: not a workload of the
    /// config).
    pub fn owner(&self, name: &ClusterName) -> Option<Owner> {
        self.owners.get(name).copied()
    }

    /// Every workload cluster and its shard, by name.
    pub fn owners(&self) -> &BTreeMap<ClusterName, Owner> {
        &self.owners
    }

    /// The workload clusters of `shard`, by name.
    pub fn clusters_of(&self, shard: u32) -> BTreeSet<&ClusterName> {
        self.owners
            .iter()
            .filter(|(_, owner)| owner.shard == shard)
            .map(|(name, _)| name)
            .collect()
    }
}

/// What `shard` observes of `config`: the config with only its own
/// workload clusters, plus any other workload cluster a `secret` material
/// source of what remains reads from. Plan against the whole config (the
/// inventory and registrations list every cluster); observe and load
/// material through this one.
pub fn scope(config: &TrustConfig, placement: &Placement, shard: Shard) -> TrustConfig {
    let mine = |name: &ClusterName| placement.owner(name).map(|o| o.shard) == Some(shard.index);
    let mut scoped = config.clone();
    scoped.workloads.retain(|w| mine(&w.cluster.name));
    let read: BTreeSet<ClusterName> = crate::material::secret_sources(&scoped)
        .into_iter()
        .map(|s| s.cluster.clone())
        .collect();
    scoped.workloads = config
        .workloads
        .iter()
        .filter(|w| mine(&w.cluster.name) || read.contains(&w.cluster.name))
        .cloned()
        .collect();
    scoped
}

/// A plan narrowed to one shard, and what it must wait for.
#[derive(Debug, Clone)]
pub struct Narrowed {
    /// Only the shard's clusters; mgmt read-only unless it is shard 0.
    pub planned: Planned,
    /// For shards other than 0: what mgmt lacks before this shard's
    /// workloads may be written (changes shard 0 has yet to make, clusters
    /// the inventory does not list yet). Empty: go ahead.
    pub waiting: Vec<String>,
}

/// Narrows a plan of the whole fleet to `shard`: its own workload clusters
/// (others are left out, not reported), mgmt, and (shard 0 only) the
/// orphans. For other shards mgmt is read-only: each change planned there is
/// shown as a no-op naming shard 0, and its writes are dropped. Every write
/// left carries the [`ANNOTATION_WRITER`] annotation.
pub fn narrow(
    config: &TrustConfig,
    placement: &Placement,
    shard: Shard,
    mut planned: Planned,
    observed: &Observed,
) -> Narrowed {
    let mine = |name: &str, role: Role| match role {
        Role::Management => true,
        Role::Orphan => shard.is_coordinator(),
        Role::Workload => ClusterName::parse(name)
            .ok()
            .and_then(|n| placement.owner(&n))
            .is_some_and(|o| o.shard == shard.index),
    };
    planned.plan.clusters.retain(|c| mine(&c.name, c.role));
    planned.writes.retain(|w| mine(w.cluster.as_str(), w.role));
    let mut waiting = Vec::new();
    if !shard.is_coordinator() {
        let inventory = crate::relay::inventory_secret(config.instance.as_str());
        for cluster in &mut planned.plan.clusters {
            if cluster.role != Role::Management {
                continue;
            }
            for change in &mut cluster.changes {
                if !change.action.writes() {
                    continue;
                }
                let registration = crate::relay::registration::is_change_name(&change.name);
                if !registration && change.name != inventory {
                    waiting.push(format!("{} {}", change.action.as_str(), change.name));
                }
                change.reasons.insert(
                    0,
                    format!(
                        "pending: shard 0 writes the management cluster (it plans to {})",
                        change.action.as_str()
                    ),
                );
                change.action = Action::NoOp;
            }
        }
        for writes in planned
            .writes
            .iter_mut()
            .filter(|w| w.role == Role::Management)
        {
            writes.writes.clear();
            writes.last.clear();
            writes.registrations.clear();
        }
        // A cluster written for the first time must be listed first (so
        // that `--prune` can find it); shard 0 lists it.
        let listed: BTreeSet<ClusterName> = observed
            .clusters
            .get(&config.management.name)
            .and_then(|r| r.as_ref().ok())
            .map(|mgmt| {
                crate::plan::read_inventory(mgmt, config.instance.as_str())
                    .into_iter()
                    .map(|e| e.name)
                    .collect()
            })
            .unwrap_or_default();
        for writes in &planned.writes {
            if writes.role == Role::Workload
                && !writes.writes.is_empty()
                && !listed.contains(&writes.cluster)
            {
                waiting.push(format!("the inventory to list `{}`", writes.cluster));
            }
        }
    }
    let label = shard.label();
    for writes in &mut planned.writes {
        for write in writes.writes.iter_mut().chain(writes.last.iter_mut()) {
            if write.action != Action::Delete {
                write
                    .object
                    .annotations
                    .insert(ANNOTATION_WRITER.to_owned(), label.clone());
            }
        }
    }
    planned.plan.summary = Summary::of(&planned.plan.clusters);
    Narrowed { planned, waiting }
}

/// Blocks every workload cluster of `planned` that has writes, with `why`:
/// what a shard other than 0 does when mgmt is still not ready for them
/// once its wait is over. Their changes and writes are dropped.
pub fn block(planned: &mut Planned, why: &str) {
    let blocked: BTreeSet<ClusterName> = planned
        .writes
        .iter()
        .filter(|w| w.role == Role::Workload && !w.writes.is_empty())
        .map(|w| w.cluster.clone())
        .collect();
    for cluster in &mut planned.plan.clusters {
        if cluster.role == Role::Workload && blocked.iter().any(|b| b.as_str() == cluster.name) {
            cluster.error = Some(why.to_owned());
            cluster.changes.clear();
        }
    }
    for writes in &mut planned.writes {
        if blocked.contains(&writes.cluster) {
            writes.writes.clear();
        }
    }
    planned.plan.summary = Summary::of(&planned.plan.clusters);
}

/// What a shard's status ConfigMap held, as read from mgmt.
pub type ShardStatuses = BTreeMap<u32, Option<Result<ShardStatus, String>>>;

/// The `shard` line of `check --shards N` for every cluster: whether the
/// shard it is placed on claimed it in its last run, judged from every
/// shard's status (`None`: that shard wrote none). The management cluster's
/// line is about shard 0, the coordinator.
pub fn coverage(
    config: &TrustConfig,
    placement: &Placement,
    statuses: &ShardStatuses,
) -> BTreeMap<ClusterName, Check> {
    let count = placement.count();
    let digest = config.digest();
    let usable = |shard: u32| -> Result<&ShardStatus, Check> {
        let fail = |message: String, hint: &str| Check {
            id: CheckId::Shard,
            status: Status::Fail,
            message,
            hint: Some(hint.to_owned()),
        };
        match statuses.get(&shard) {
            None | Some(None) => Err(fail(
                format!(
                    "shard {shard}/{count} has written no status: it has not run yet, or the management cluster keeps none (the directory backend)"
                ),
                "run the sharded Job (each shard writes `relayctl-status-<instance>-shard-<i>` on the management cluster); until then nothing shows that this cluster has a writer",
            )),
            Some(Some(Err(why))) => Err(fail(
                format!("the status of shard {shard}/{count} is unreadable: {why}"),
                "the next run of that shard rewrites it",
            )),
            Some(Some(Ok(status))) if status.shard.count != count => Err(fail(
                format!(
                    "the last run of shard {shard} had {} shards, not {count}",
                    status.shard.count
                ),
                "a Job with another shard count ran last: run the Job with this count, or check with the count it uses",
            )),
            Some(Some(Ok(status))) => Ok(status),
        }
    };
    let mut claimants: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for (shard, status) in statuses {
        if let Some(Ok(status)) = status
            && status.shard.count == count
        {
            for name in &status.shard.claimed {
                claimants.entry(name.as_str()).or_default().insert(*shard);
            }
        }
    }
    let stale = |status: &ShardStatus| status.config_digest != digest;
    let mut out = BTreeMap::new();
    out.insert(
        config.management.name.clone(),
        match usable(0) {
            Err(check) => check,
            Ok(status) if stale(status) => warn_stale(0, count, status),
            Ok(status) => Check {
                id: CheckId::Shard,
                status: Status::Ok,
                message: format!(
                    "written by shard 0/{count}, the coordinator (last run finished {})",
                    status.finished_at
                ),
                hint: None,
            },
        },
    );
    for (name, owner) in placement.owners() {
        let shard = owner.shard;
        let how = if owner.pinned { " (pinned)" } else { "" };
        let check = match usable(shard) {
            Err(check) => check,
            Ok(status) => {
                let others: Vec<String> = claimants
                    .get(name.as_str())
                    .into_iter()
                    .flatten()
                    .filter(|s| **s != shard)
                    .map(|s| format!("{s}/{count}"))
                    .collect();
                if let Some(skipped) = status
                    .shard
                    .skipped
                    .iter()
                    .find(|s| s.name == name.as_str())
                {
                    Check {
                        id: CheckId::Shard,
                        status: Status::Fail,
                        message: format!(
                            "placed on shard {shard}/{count}{how}, which skipped it in its last run (finished {}): {}",
                            status.finished_at,
                            skipped.reason.as_deref().unwrap_or("no reason recorded")
                        ),
                        hint: Some("another writer held its writer Lease; it is retried on the shard's next run, and a Lease of a killed run expires by itself".to_owned()),
                    }
                } else if !status.shard.claimed.iter().any(|c| c == name.as_str()) {
                    Check {
                        id: CheckId::Shard,
                        status: Status::Fail,
                        message: format!(
                            "no shard claimed it: it is placed on shard {shard}/{count}{how}, whose last run (finished {}) did not{}",
                            status.finished_at,
                            if others.is_empty() { String::new() } else { format!(" (claimed by shard {} instead)", others.join(", ")) }
                        ),
                        hint: Some("that run read another config or ran another relayctl version; run the sharded Job again".to_owned()),
                    }
                } else if !others.is_empty() {
                    Check {
                        id: CheckId::Shard,
                        status: Status::Warn,
                        message: format!(
                            "claimed by shard {shard}/{count}{how} and also by shard {}",
                            others.join(", ")
                        ),
                        hint: Some("two shards disagree on the placement (another config or version); the writer Lease kept them from writing at once".to_owned()),
                    }
                } else if stale(status) {
                    warn_stale(shard, count, status)
                } else {
                    Check {
                        id: CheckId::Shard,
                        status: Status::Ok,
                        message: format!(
                            "claimed by shard {shard}/{count}{how} (last run finished {})",
                            status.finished_at
                        ),
                        hint: None,
                    }
                }
            }
        };
        out.insert(name.clone(), check);
    }
    out
}

fn warn_stale(shard: u32, count: u32, status: &ShardStatus) -> Check {
    Check {
        id: CheckId::Shard,
        status: Status::Warn,
        message: format!(
            "shard {shard}/{count}'s last run (finished {}) read another config (digest {})",
            status.finished_at,
            status
                .config_digest
                .get(..12)
                .unwrap_or(&status.config_digest)
        ),
        hint: Some("the shard has not run since the manifests changed".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_as_index_slash_count_and_refuse_the_rest() {
        assert_eq!("1/3".parse::<Shard>(), Shard::new(1, 3));
        let shard: Shard = "0/1".parse().unwrap();
        assert!(shard.is_coordinator());
        assert_eq!(shard.identity("prod"), "relayctl/prod/shard-0-of-1");
        assert_eq!(shard.label(), "shard 0/1");
        for bad in ["3/3", "1", "a/3", "1/0", "-1/3", "1/1001", ""] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(
                err.contains("shard") || err.contains("count"),
                "{bad}: {err}"
            );
        }
        assert!(
            "3/3"
                .parse::<Shard>()
                .unwrap_err()
                .contains("not below the shard count 3")
        );
    }

    fn config(pins: &[(&str, u32)]) -> TrustConfig {
        let mut text = "apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata: { name: prod }\n---\napiVersion: relayctl.dev/v1alpha1\nkind: ManagementCluster\nmetadata: { name: mgmt }\n".to_owned();
        for i in 1..=9 {
            let name = format!("region-{i}");
            text.push_str(&format!(
                "---\napiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata: {{ name: {name} }}\n"
            ));
            if let Some((_, pin)) = pins.iter().find(|(n, _)| *n == name) {
                text.push_str(&format!("spec: {{ shard: {pin} }}\n"));
            }
        }
        crate::config::validate(
            &[crate::config::ManifestFile {
                path: "fleet.yaml".into(),
                text,
            }],
            std::path::Path::new(""),
        )
        .unwrap_or_else(|d| panic!("{d:?}"))
    }

    fn status(config: &TrustConfig, placement: &Placement, index: u32) -> ShardStatus {
        ShardStatus {
            config_digest: config.digest(),
            finished_at: "2030-01-01T00:00:00Z".to_owned(),
            shard: crate::status::ShardReport {
                index,
                count: placement.count(),
                claimed: placement
                    .clusters_of(index)
                    .into_iter()
                    .map(ToString::to_string)
                    .collect(),
                skipped: Vec::new(),
            },
        }
    }

    fn line<'a>(lines: &'a BTreeMap<ClusterName, Check>, name: &str) -> &'a Check {
        &lines[&ClusterName::parse(name).unwrap()]
    }

    #[test]
    fn coverage_passes_when_every_shard_claimed_its_own() {
        let config = config(&[]);
        let placement = Placement::of(&config, 3).unwrap();
        let statuses: ShardStatuses = (0..3)
            .map(|i| (i, Some(Ok(status(&config, &placement, i)))))
            .collect();
        let lines = coverage(&config, &placement, &statuses);
        assert_eq!(lines.len(), 10, "mgmt and every workload");
        assert!(lines.values().all(|c| c.status == Status::Ok), "{lines:?}");
        assert!(line(&lines, "mgmt").message.contains("the coordinator"));
    }

    #[test]
    fn coverage_names_the_unclaimed_the_doubly_claimed_the_stale_and_the_missing() {
        let config = config(&[]);
        let placement = Placement::of(&config, 3).unwrap();
        let mut one = status(&config, &placement, 1);
        let mut two = status(&config, &placement, 2);
        // Shard 1 ran another placement: it left `lost` out, and claimed
        // one of shard 2's clusters too.
        let lost = one.shard.claimed.remove(0);
        let taken = two.shard.claimed[0].clone();
        one.shard.claimed.push(taken.clone());
        two.config_digest = "0".repeat(64);
        let statuses: ShardStatuses =
            BTreeMap::from([(0, None), (1, Some(Ok(one))), (2, Some(Ok(two)))]);
        let lines = coverage(&config, &placement, &statuses);
        let unclaimed = line(&lines, &lost);
        assert_eq!(unclaimed.status, Status::Fail);
        assert!(
            unclaimed.message.starts_with("no shard claimed it"),
            "{unclaimed:?}"
        );
        let double = line(&lines, &taken);
        assert_eq!(double.status, Status::Warn);
        assert!(
            double.message.contains("and also by shard 1/3"),
            "{double:?}"
        );
        let stale = placement
            .clusters_of(2)
            .into_iter()
            .nth(1)
            .unwrap()
            .to_string();
        let stale = line(&lines, &stale);
        assert_eq!(stale.status, Status::Warn);
        assert!(stale.message.contains("read another config"), "{stale:?}");
        let missing = line(&lines, "mgmt");
        assert_eq!(missing.status, Status::Fail);
        assert!(
            missing.message.contains("has written no status"),
            "{missing:?}"
        );
    }

    #[test]
    fn pins_place_clusters_and_a_pin_beyond_the_count_is_refused() {
        let natural = rendezvous("region-1", 3);
        let pin = (natural + 1) % 3;
        let config = config(&[("region-1", pin), ("region-2", 7)]);
        let bad = Placement::of(&config, 3).unwrap_err();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].cluster.as_str(), "region-2");
        assert_eq!(bad[0].pin, 7);
        assert!(bad[0].location.line > 0);
        let placement = Placement::of(&config, 8).unwrap();
        let owner = placement
            .owner(&ClusterName::parse("region-1").unwrap())
            .unwrap();
        assert_eq!(
            owner,
            Owner {
                shard: pin,
                pinned: true
            }
        );
        let owner = placement
            .owner(&ClusterName::parse("region-2").unwrap())
            .unwrap();
        assert_eq!(
            owner,
            Owner {
                shard: 7,
                pinned: true
            }
        );
    }

    #[test]
    fn the_weights_are_stable_across_versions() {
        // Changing the hash moves clusters between shards of a running
        // fleet: these values are a contract. They were computed apart from
        // this code, from the formula in `weight`'s docs (Python's hashlib).
        assert_eq!(weight("cluster-1", 0), 0xc3b3_2bb5_4b4f_0915);
        assert_eq!(rendezvous("cluster-1", 3), 1);
        let shards: Vec<u32> = (1..=9)
            .map(|i| rendezvous(&format!("region-{i}"), 3))
            .collect();
        assert_eq!(shards, [0, 1, 2, 0, 0, 2, 1, 2, 2]);
    }
}
