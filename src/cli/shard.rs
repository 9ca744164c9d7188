//! The shell's part of a sharded run (`--shard I/N`, `--shards N`): which
//! shard this process is, waiting for shard 0, the writer fences, and the
//! status each shard leaves on the management cluster. What is placed where
//! and what a shard plans is [`crate::shard`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::args::ShardArgs;
pub(crate) use super::prepared::ShardRun;
use super::prepared::{LoadedConfig, Prepared};
use super::{CliError, Settings};
use crate::backend::{Backend, BackendError, LockGuard};
use crate::config::{self, Diagnostic};
use crate::model::ClusterName;
use crate::plan::Role;
use crate::shard::{Placement, Shard};
use crate::status::{ClusterState, ClusterStatus, ShardReport, ShardStatus};

/// The variable a Kubernetes Indexed Job sets to the index of each pod.
pub(crate) const INDEX_VARIABLE: &str = "JOB_COMPLETION_INDEX";

/// How often a shard other than 0 looks at mgmt again while it waits.
const WAIT_POLL: Duration = Duration::from_secs(2);

/// The shard this process is: `--shard I/N`, or `--shards N` with the index
/// from [`INDEX_VARIABLE`]; `None` for an unsharded run.
pub(crate) fn resolve(args: &ShardArgs) -> Result<Option<Shard>, CliError> {
    resolve_with(args, std::env::var(INDEX_VARIABLE).ok().as_deref())
}

fn resolve_with(args: &ShardArgs, index: Option<&str>) -> Result<Option<Shard>, CliError> {
    let usage = |message: String| CliError::Usage { message };
    match (args.shard, args.shards) {
        (Some(shard), _) => Ok(Some(shard)),
        (None, Some(count)) => {
            let text = index.ok_or_else(|| {
                usage(format!(
                    "`--shards {count}` takes the shard index from `{INDEX_VARIABLE}`, which is not set: run it in an Indexed Job (`completionMode: Indexed`) or pass `--shard I/{count}`"
                ))
            })?;
            let index: u32 = text.trim().parse().map_err(|_| {
                usage(format!(
                    "`{INDEX_VARIABLE}` is `{}`, not a shard index (a whole number from 0)",
                    crate::text::printable(text)
                ))
            })?;
            Shard::new(index, count)
                .map(Some)
                .map_err(|why| usage(format!("`{INDEX_VARIABLE}` with `--shards {count}`: {why}")))
        }
        (None, None) => Ok(None),
    }
}

/// The placement of `loaded` over `count` shards; a `spec.shard` pin that
/// is not below `count` is a problem of the manifests, shown at the pin.
pub(crate) fn placement(loaded: &LoadedConfig, count: u32) -> Result<Placement, CliError> {
    Placement::of(&loaded.config, count).map_err(|bad| {
        let diagnostics: Vec<Diagnostic> = bad
            .into_iter()
            .map(|pin| Diagnostic {
                file: pin.location.file.clone(),
                position: Some(config::node::Position {
                    line: pin.location.line,
                    column: pin.location.column,
                }),
                field: "spec.shard".to_owned(),
                code: config::diag::Code::ShardOutOfRange,
                message: format!(
                    "cluster `{}` is pinned to shard {}, but the run has {count} shard{} (indexes 0 to {})",
                    pin.cluster,
                    pin.pin,
                    if count == 1 { "" } else { "s" },
                    count - 1
                ),
                hint: Some(format!(
                    "pin it to a shard below {count}, run more shards, or remove `spec.shard` to place it by hashing its name"
                )),
            })
            .collect();
        super::report_diagnostics_at(&loaded.files, &diagnostics, Some(&loaded.provenance))
    })
}

/// Prepares a shard other than 0, looking again every [`WAIT_POLL`] while
/// mgmt lacks what its clusters are planned against, for up to `wait`.
/// What is still missing then blocks every cluster it would write.
pub(crate) fn prepare_waiting(
    wait: Duration,
    mut prepare: impl FnMut() -> Result<Prepared, CliError>,
) -> Result<Prepared, CliError> {
    let deadline = Instant::now() + wait;
    loop {
        let mut prepared = prepare()?;
        let Some(run) = &prepared.shard else {
            return Ok(prepared);
        };
        if run.waiting.is_empty() {
            return Ok(prepared);
        }
        let now = Instant::now();
        if now >= deadline {
            let why = waiting_reason(run);
            crate::shard::block(&mut prepared.planned, &why);
            return Ok(prepared);
        }
        super::output::status(&format!(
            "{}: {}; looking again in {}s",
            run.shard.label(),
            waiting_reason(run),
            WAIT_POLL.min(deadline - now).as_secs().max(1)
        ));
        std::thread::sleep(WAIT_POLL.min(deadline - now));
    }
}

/// "waiting for shard 0 to …": what a blocked shard reports.
pub(crate) fn waiting_reason(run: &ShardRun) -> String {
    format!(
        "waiting for shard 0/{} to write the management cluster: {}",
        run.shard.count(),
        run.waiting.join(", ")
    )
}

/// The writer fences of a sharded apply, held until dropped.
pub(crate) struct Fences {
    /// One per fenced cluster.
    _guards: Vec<Box<dyn LockGuard>>,
    /// The clusters whose fence is held.
    pub(crate) held: Vec<ClusterName>,
    /// Placed on this shard, but another writer held the fence.
    pub(crate) skipped: Vec<ClusterStatus>,
}

/// Takes the writer fence of every workload cluster this shard is about to
/// write, in parallel. A cluster whose fence another writer holds is
/// skipped: its writes are dropped and its plan says why.
pub(crate) fn fence(settings: &Settings, prepared: &mut Prepared) -> Fences {
    let Some(run) = &prepared.shard else {
        return Fences {
            _guards: Vec::new(),
            held: Vec::new(),
            skipped: Vec::new(),
        };
    };
    let identity = run.shard.identity(prepared.config.instance.as_str());
    let namespace = prepared.config.namespace.to_string();
    let instance = prepared.config.instance.to_string();
    let work: Vec<(ClusterName, Arc<dyn Backend>)> = prepared
        .planned
        .writes
        .iter()
        .filter(|w| w.role == Role::Workload && !w.writes.is_empty())
        .filter_map(|w| {
            Some((
                w.cluster.clone(),
                prepared.backends.get(&w.cluster)?.clone(),
            ))
        })
        .collect();
    let results = crate::fleet::parallel_map(work, settings.parallelism, |(name, backend)| {
        (
            name.clone(),
            backend.fence_writer(&namespace, &instance, &identity),
        )
    });
    let mut guards = Vec::new();
    let mut held = Vec::new();
    let mut skipped = Vec::new();
    for (name, result) in results {
        match result {
            Ok(guard) => {
                guards.push(guard);
                held.push(name);
            }
            Err(err) => {
                let why = match &err {
                    BackendError::Locked { holder, .. } => {
                        format!("skipped: another writer holds its writer fence ({holder})")
                    }
                    other => format!(
                        "skipped: cannot take its writer fence: {}",
                        crate::error::error_chain(other)
                    ),
                };
                super::output::warning(&format!("{name}: {why}"));
                skipped.push(ClusterStatus {
                    name: name.to_string(),
                    state: ClusterState::Error,
                    reason: Some(why),
                });
            }
        }
    }
    for skip in &skipped {
        for cluster in &mut prepared.planned.plan.clusters {
            if cluster.name == skip.name {
                cluster.error = skip.reason.clone();
                cluster.changes.clear();
            }
        }
        for writes in &mut prepared.planned.writes {
            if writes.cluster.as_str() == skip.name {
                writes.writes.clear();
                writes.last.clear();
            }
        }
    }
    prepared.planned.plan.summary = crate::plan::Summary::of(&prepared.planned.plan.clusters);
    Fences {
        _guards: guards,
        held,
        skipped,
    }
}

/// What this shard claimed: every workload cluster placed on it, except
/// those it skipped.
pub(crate) fn report(run: &ShardRun, skipped: &[ClusterStatus]) -> ShardReport {
    let claimed = run
        .placement
        .clusters_of(run.shard.index())
        .into_iter()
        .filter(|name| !skipped.iter().any(|s| s.name == name.as_str()))
        .map(ToString::to_string)
        .collect();
    ShardReport {
        index: run.shard.index(),
        count: run.shard.count(),
        claimed,
        skipped: skipped.to_vec(),
    }
}

/// How a sharded apply ends: a shard still waiting for mgmt fails as the
/// environment's fault (exit 4: a retry of the index helps), otherwise as
/// the apply went.
pub(crate) fn outcome(prepared: &Prepared, complete: bool) -> super::Outcome {
    match &prepared.shard {
        Some(run) if !run.waiting.is_empty() => {
            super::output::status(&format!("{}: {}", run.shard.label(), waiting_reason(run)));
            super::Outcome::Error(super::ErrorClass::Environment)
        }
        _ if complete => super::Outcome::Success,
        _ => super::Outcome::Failed,
    }
}

/// Writes a shard's status to its own ConfigMap on mgmt
/// (`relayctl-status-<instance>-shard-<i>`): what `check --shards N` reads
/// to find a cluster no shard claimed. Does nothing for an unsharded run;
/// a failure is a warning.
pub(crate) fn write_status(
    prepared: &Prepared,
    report: &crate::apply::ApplyReport,
    fences: &Fences,
    started: time::OffsetDateTime,
) {
    let Some(run) = &prepared.shard else {
        return;
    };
    let states = super::report::states(prepared, report);
    let ok = report.ok() && !prepared.planned.plan.summary.has_errors() && run.waiting.is_empty();
    let status = crate::status::run_status(&crate::status::RunFacts {
        plan: &prepared.planned.plan,
        clusters: &states,
        commit: prepared.provenance.commit.as_deref().unwrap_or_default(),
        started_at: crate::pki::inspect::rfc3339(started),
        finished_at: crate::pki::inspect::rfc3339(time::OffsetDateTime::now_utc()),
        ok,
        written: report.written(),
        shard: Some(self::report(run, &fences.skipped)),
    });
    let name = status_name(prepared.config.instance.as_str(), run.shard.index());
    match super::report::write_status_named(prepared, &status, &name) {
        Ok(true) => tracing::info!(configmap = %name, "wrote the shard's status"),
        Ok(false) => tracing::debug!(
            "the management cluster's backend keeps no status ConfigMap (directory backend)"
        ),
        Err(e) => super::output::warning(&format!(
            "cannot write the shard's status `{name}`: {}",
            crate::error::error_chain(&e)
        )),
    }
}

/// Name of the status ConfigMap of shard `index` of `instance`.
pub(crate) fn status_name(instance: &str, index: u32) -> String {
    format!(
        "{}-shard-{index}",
        super::report::status_configmap_name(instance)
    )
}

/// Reads every shard's status from mgmt, for `check --shards N`.
pub(crate) fn read_statuses(
    mgmt: &dyn Backend,
    namespace: &str,
    instance: &str,
    count: u32,
) -> crate::shard::ShardStatuses {
    (0..count)
        .map(|index| {
            let name = status_name(instance, index);
            let status = match mgmt.read_status(namespace, &name) {
                Ok(None) => None,
                Ok(Some(data)) => Some(
                    data.get("status.json")
                        .ok_or_else(|| format!("ConfigMap `{name}` has no `status.json`"))
                        .and_then(|text| {
                            serde_json::from_str::<ShardStatus>(text).map_err(|e| {
                                format!("ConfigMap `{name}`: `status.json` is not a shard's status ({e})")
                            })
                        }),
                ),
                Err(e) => Some(Err(crate::error::error_chain(&e))),
            };
            (index, status)
        })
        .collect::<BTreeMap<_, _>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(shard: Option<&str>, shards: Option<u32>) -> ShardArgs {
        ShardArgs {
            shard: shard.map(|s| s.parse().unwrap()),
            shards,
            shard_wait: Duration::ZERO,
        }
    }

    #[test]
    fn the_index_comes_from_the_flag_or_the_indexed_job() {
        let shard = resolve_with(&args(Some("2/3"), None), None).unwrap();
        assert_eq!(shard, Some(Shard::new(2, 3).unwrap()));
        let shard = resolve_with(&args(None, Some(4)), Some("3")).unwrap();
        assert_eq!(shard, Some(Shard::new(3, 4).unwrap()));
        assert_eq!(resolve_with(&args(None, None), Some("1")).unwrap(), None);
        for (index, expected) in [
            (None, "`JOB_COMPLETION_INDEX`, which is not set"),
            (
                Some("x1"),
                "`JOB_COMPLETION_INDEX` is `x1`, not a shard index",
            ),
            (Some("4"), "not below the shard count 4"),
        ] {
            let err = resolve_with(&args(None, Some(4)), index).unwrap_err();
            assert!(matches!(err, CliError::Usage { .. }), "{err}");
            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
