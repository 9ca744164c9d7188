//! Desired intent versus observed state: the fleet plan.
//!
//! [`plan`] is pure. From the validated config, the user's material, what the
//! backends observed, injected randomness and the clock, it decides for every
//! Secret of the relay catalogue ([`crate::relay`]) whether to create,
//! update, delete or leave it, and why. It also prepares the exact objects
//! to write ([`Planned::writes`]), so that `apply` only carries them out.
//! Certificates are judged by [`crate::pki::assess()`] and compared by their
//! facts and chains, never by bytes; CA material that exists and is valid is
//! always reused.
//!
//! The steps, each a module: `desired` (mgmt's desired state per CA mode,
//! yielding the trust every workload is planned against), `server` (the
//! management server's certificate), `workload` (each workload cluster),
//! [`inventory`] (orphans and the inventory), on top of `cluster` (one
//! cluster's plan under construction), `compare` (the reasons to rewrite)
//! and `show` (how values are shown).

mod cluster;
mod compare;
mod desired;
pub mod inventory;
pub mod model;
mod registration;
pub mod render;
pub mod rotation;
pub mod saved;
mod server;
mod show;
#[cfg(test)]
mod tests;
mod workload;

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use self::cluster::ClusterBuilder;
pub use self::inventory::{InventoryEntry, read_inventory};
pub use self::model::{
    Action, CertSummary, Change, ClusterPlan, DetailedStatus, FORMAT_VERSION, Plan, Role, Summary,
    Value,
};
use crate::material::Material;
use crate::model::{ClusterName, Connection, TrustConfig};
use crate::observed::{Observed, SecretObject};
use crate::pki::{self, KeySource};
use crate::secret::SecretBytes;

/// Randomness the planner may use: key pairs and serials, and tokens.
pub struct Randomness<'a> {
    /// Keys and serials.
    pub keys: &'a dyn KeySource,
    /// A new identity token (256 random bits as text).
    pub token: &'a (dyn Fn() -> SecretBytes + Sync),
}

/// Runs independent parts of a plan. The core does not start threads: the
/// shell hands it a way to run work side by side (a thread per core), tests
/// and one-off callers hand it [`InOrder`]. Either way the plan is the same.
pub trait Workers: Sync {
    /// Runs every job to its end before returning, in any order, on any
    /// thread; a job that panics makes this panic.
    fn run<'s>(&self, jobs: Vec<Box<dyn FnOnce() + Send + 's>>);
    /// How many jobs are worth running at once.
    fn width(&self) -> usize;
}

/// One job after another on the calling thread.
pub struct InOrder;

impl Workers for InOrder {
    fn run<'s>(&self, jobs: Vec<Box<dyn FnOnce() + Send + 's>>) {
        for job in jobs {
            job();
        }
    }

    fn width(&self) -> usize {
        1
    }
}

/// Everything [`plan`] looks at.
pub struct PlanInput<'a> {
    /// The validated config.
    pub config: &'a TrustConfig,
    /// Loaded user material.
    pub material: &'a Material,
    /// What the backends saw, including orphan clusters.
    pub observed: &'a Observed,
    /// Clusters in the inventory that left the config, with their connections.
    pub orphans: &'a BTreeMap<ClusterName, Connection>,
    /// Take over existing Secrets that relayctl does not own.
    pub adopt: bool,
    /// Delete this instance's Secrets on orphan clusters (config `prune` or `--prune`).
    pub prune: bool,
    /// Provenance for the source annotation: a path or `<repo>@<commit>`.
    pub source: &'a str,
    /// The clock.
    pub now: OffsetDateTime,
    /// Randomness.
    pub random: Randomness<'a>,
    /// How independent workloads are planned side by side.
    pub workers: &'a dyn Workers,
    /// What is asked of a CA rotation (`apply --rollback`, `--resume`).
    pub rotation: rotation::RotationRequest,
}

/// One write to carry out.
#[derive(Debug, Clone)]
pub struct Write {
    /// Create, update or delete.
    pub action: Action,
    /// The full object for create/update; namespace and name for delete.
    pub object: SecretObject,
    /// The version the write expects to replace (`None`: must not exist).
    pub precondition: Option<String>,
    /// The object was written earlier in the same apply: the precondition
    /// is the version that earlier write left (known only then).
    pub chained: bool,
}

/// One `KubernetesCluster` write on mgmt.
#[derive(Debug, Clone)]
pub struct RegistrationWrite {
    /// Create, update or delete.
    pub action: Action,
    /// The object (its `version` is not used).
    pub registration: crate::observed::Registration,
    /// The version the write expects to replace (`None`: must not exist).
    pub precondition: Option<String>,
}

/// The writes for one cluster, in order.
#[derive(Debug, Clone)]
pub struct ClusterWrites {
    /// Cluster.
    pub cluster: ClusterName,
    /// Its role.
    pub role: Role,
    /// Writes in order.
    pub writes: Vec<Write>,
    /// Writes carried out after every other cluster, and only when no orphan
    /// cluster failed: the inventory, which must keep listing an orphan whose
    /// prune did not go through so that the next run finds it again.
    pub last: Vec<Write>,
    /// `KubernetesCluster` writes (mgmt only), after the Secrets.
    pub registrations: Vec<RegistrationWrite>,
}

/// A plan plus the objects that carry it out.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The serializable plan.
    pub plan: Plan,
    /// Management cluster first, then workloads and orphans.
    pub writes: Vec<ClusterWrites>,
}

/// Planning failed in a way that is a bug or an unusable input (issuing a
/// certificate from material that passed validation should not fail).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Issuing a certificate failed.
    #[error("cannot issue {what}")]
    Issue {
        /// What was being issued.
        what: String,
        /// Why.
        #[source]
        source: pki::IssueError,
    },
}

/// Computes the plan: the lifecycle stage (a CA rotation's phase, from the
/// rotation record), mgmt's desired state in it (it yields the trust every
/// workload is planned against), then each workload, then the orphans, and
/// last the inventory, once everything it lists is known. When a rotation's
/// phase is in place everywhere and its gate holds, the next phase is
/// planned instead: one phase per apply.
pub fn plan(input: &PlanInput<'_>) -> Result<Planned, PlanError> {
    // Serializes the whole config (every workload cluster): computed once, not
    // once per written Secret, which made planning a fleet quadratic in N.
    let digest = input.config.digest();
    let staged = rotation::stage(input, input.rotation);
    let (stage, drift) = match &staged {
        Ok((stage, drift)) => (Ok(stage), drift.clone()),
        Err(why) => (Err(why.as_str()), Vec::new()),
    };
    let mut planned = plan_stage(input, &digest, stage)?;
    let mut current = stage.ok().cloned();
    if let Ok(stage) = stage
        && stage.rotation().is_some()
        && rotation::gate(input, stage, &planned.plan).is_some_and(|g| g.open)
    {
        let next = rotation::advance(input, stage)
            .map_err(compare::issue_err("the rotation's next phase"))?;
        planned = plan_stage(input, &digest, Ok(&next))?;
        current = Some(next);
    }
    planned.plan.ca = model::CaStatus {
        drift,
        rotation: current.and_then(|s| rotation::status(input, &s, &planned.plan)),
    };
    Ok(planned)
}

/// The plan of one lifecycle stage.
fn plan_stage(
    input: &PlanInput<'_>,
    digest: &str,
    stage: Result<&rotation::Stage, &str>,
) -> Result<Planned, PlanError> {
    let mgmt_name = &input.config.management.name;
    let mut mgmt = ClusterBuilder::new(input, digest, mgmt_name.clone(), Role::Management);
    let trust = desired::management(input, &mut mgmt, stage)?;
    let blocked = blocked_by(&mgmt);
    let workloads = plan_workloads(input, digest, trust.as_ref(), blocked.as_deref())?;
    let (orphans, kept) = inventory::orphans(input, digest);
    if let (Some(Ok(obs)), None) = (input.observed.clusters.get(mgmt_name), &mgmt.error) {
        let written: BTreeSet<&ClusterName> = workloads
            .iter()
            .filter(|c| !c.writes.is_empty())
            .map(|c| &c.name)
            .collect();
        registration::plan(input, obs, &mut mgmt);
        inventory::plan(input, obs, &kept, &written, &mut mgmt);
    }
    Ok(finish(input, digest.to_owned(), mgmt, workloads, orphans))
}

/// Why no workload may be written: mgmt cannot be planned, or has
/// conflicts or errors (workloads would be handed a root or a token mgmt
/// does not have).
fn blocked_by(mgmt: &ClusterBuilder<'_>) -> Option<String> {
    let name = &mgmt.name;
    if mgmt.error.is_some() {
        Some(format!(
            "blocked: management cluster `{name}` cannot be planned"
        ))
    } else if mgmt.has_problems() {
        Some(format!(
            "blocked: management cluster `{name}` has conflicts or errors; fix them first"
        ))
    } else {
        None
    }
}

/// Plans every workload against `trust`. The workloads are independent of
/// one another, so a large fleet is planned in contiguous parts of the
/// config's order, side by side as `input.workers` allows, and the parts
/// joined in that order: the plan is the same as one part's.
fn plan_workloads<'a>(
    input: &'a PlanInput<'a>,
    digest: &'a str,
    trust: Option<&desired::Trust>,
    blocked: Option<&str>,
) -> Result<Vec<ClusterBuilder<'a>>, PlanError> {
    /// Fewer workloads than this per part are not worth a thread.
    const PER_PART: usize = 256;
    type Part<'a> = Result<Vec<ClusterBuilder<'a>>, PlanError>;
    let workloads = &input.config.workloads;
    let plan_part = |part: &'a [crate::model::WorkloadConfig]| -> Part<'a> {
        part.iter()
            .map(|workload| plan_workload(input, digest, trust, blocked, workload))
            .collect()
    };
    let parts = input.workers.width().min(workloads.len() / PER_PART).max(1);
    if parts == 1 {
        return plan_part(workloads);
    }
    let chunks = workloads.chunks(workloads.len().div_ceil(parts));
    let mut done: Vec<Option<Part<'a>>> = Vec::new();
    done.resize_with(chunks.len(), || None);
    let plan_part = &plan_part;
    let jobs = chunks
        .zip(done.iter_mut())
        .map(|(part, slot)| {
            Box::new(move || *slot = Some(plan_part(part))) as Box<dyn FnOnce() + Send + '_>
        })
        .collect();
    input.workers.run(jobs);
    let mut plans = Vec::with_capacity(workloads.len());
    for part in done {
        plans.extend(part.expect("Workers::run runs every job")?);
    }
    Ok(plans)
}

fn plan_workload<'a>(
    input: &'a PlanInput<'a>,
    digest: &'a str,
    trust: Option<&desired::Trust>,
    blocked: Option<&str>,
    workload: &crate::model::WorkloadConfig,
) -> Result<ClusterBuilder<'a>, PlanError> {
    let name = &workload.cluster.name;
    let mut cluster = ClusterBuilder::new(input, digest, name.clone(), Role::Workload);
    match (input.observed.clusters.get(name), trust, blocked) {
        (Some(Err(why)), _, _) => cluster.error = Some(why.clone()),
        (None, _, _) => cluster.error = Some("not observed".to_owned()),
        (_, _, Some(why)) => cluster.error = Some(why.to_owned()),
        (Some(Ok(obs)), Some(trust), None) => workload::plan(input, obs, trust, &mut cluster)?,
        (Some(Ok(_)), None, None) => {
            cluster.error = Some("blocked: no trust material".to_owned());
        }
    }
    Ok(cluster)
}

fn finish(
    input: &PlanInput<'_>,
    digest: String,
    mgmt: ClusterBuilder<'_>,
    workloads: Vec<ClusterBuilder<'_>>,
    orphans: Vec<ClusterBuilder<'_>>,
) -> Planned {
    let config = input.config;
    let (clusters, writes): (Vec<ClusterPlan>, Vec<ClusterWrites>) = std::iter::once(mgmt)
        .chain(workloads)
        .chain(orphans)
        .map(ClusterBuilder::finish)
        .unzip();
    let summary = Summary::of(&clusters);
    Planned {
        plan: Plan {
            format_version: FORMAT_VERSION,
            instance: config.instance.to_string(),
            namespace: config.namespace.to_string(),
            ca_mode: config.ca.mode,
            client_cert_mode: config.client_certs.mode,
            config_digest: digest,
            source: input.source.to_owned(),
            clusters,
            summary,
            ca: model::CaStatus::default(),
        },
        writes,
    }
}
