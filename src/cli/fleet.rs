//! `plan` and `apply`: read, observe, plan, render, and carry out.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use time::OffsetDateTime;

use super::args::{ApplyArgs, FleetArgs, GitArgs, OutputFormat, PlanArgs};
pub(crate) use super::prepared::{LoadedConfig, Prepared};
use super::{CliError, Outcome, Settings, report_diagnostics_at};
use crate::backend::{self, Backend};
use crate::config;
use crate::fleet;
use crate::material::{self, Material};
use crate::model::{ClusterName, Connection, TrustConfig};
use crate::observed::Observed;
use crate::plan::saved::{SavedGitSource, SavedPlan};
use crate::plan::{self, Plan, render};
use crate::source::ConfigSource;

/// Reads and validates manifests, rendering diagnostics on failure. A
/// `directory` connection outside the state directory is a problem of the
/// manifests too, unless `--allow-outside-state-dir`.
pub(crate) fn load_config(
    settings: &Settings,
    source: &ConfigSource,
) -> Result<LoadedConfig, CliError> {
    let loaded = source.read()?;
    if let Some(commit) = &loaded.provenance.commit {
        tracing::debug!(source = %source.describe(), commit = %commit, "read the manifests");
    }
    let report = |diagnostics: &[config::Diagnostic]| {
        report_diagnostics_at(&loaded.files, diagnostics, Some(&loaded.provenance))
    };
    let config = config::validate(&loaded.files, &loaded.root).map_err(|d| report(&d))?;
    let outside: Vec<config::Diagnostic> = backend::outside_state_dir(&config, &settings.reach)
        .into_iter()
        .map(|(cluster, path)| config::Diagnostic {
            file: cluster.location.file.clone(),
            position: Some(config::node::Position {
                line: cluster.location.line,
                column: cluster.location.column,
            }),
            field: "spec.connection.directory.path".to_owned(),
            code: config::diag::Code::DirectoryOutsideStateDir,
            message: format!(
                "cluster `{}`: folder `{}` is outside the state directory `{}`",
                cluster.name,
                path.display(),
                settings.reach.state_dir.display()
            ),
            hint: Some("keep cluster folders below `--state-dir` (guarded like a key store), or pass `--allow-outside-state-dir` if this folder is yours".to_owned()),
        })
        .collect();
    if !outside.is_empty() {
        return Err(report(&outside));
    }
    Ok(LoadedConfig {
        files: loaded.files,
        config,
        provenance: loaded.provenance,
        root: loaded.root,
    })
}

/// Every cluster's backend, by name.
pub(crate) type Backends = BTreeMap<ClusterName, Arc<dyn Backend>>;

/// Backends for every cluster of the config, and what they hold: the one
/// observation pipeline of `plan`, `apply` and `check`. Refuses a config in
/// which two clusters are one storage, whether their connections say so
/// (the same folder or API server) or only what was observed does (a
/// symlink or bind mount, two contexts for one API server).
pub(crate) fn observe_fleet(
    settings: &Settings,
    config: &TrustConfig,
) -> Result<(Backends, Observed), CliError> {
    let (backends, failed) = backend::backends(config, &settings.reach);
    refuse_shared_targets(&backends)?;
    observe_with(settings, config, backends, failed)
}

/// [`observe_fleet`] through backends already built (by the lock).
fn observe_with(
    settings: &Settings,
    config: &TrustConfig,
    backends: Backends,
    failed: BTreeMap<ClusterName, String>,
) -> Result<(Backends, Observed), CliError> {
    let clusters: Vec<(ClusterName, Arc<dyn Backend>)> = backends
        .iter()
        .map(|(n, b)| (n.clone(), b.clone()))
        .collect();
    let progress = super::output::Progress::start("observing", clusters.len());
    let mut observed = fleet::observe(config, &clusters, settings.parallelism, &|name, failed| {
        progress.done(name.as_str(), failed)
    });
    drop(progress);
    for (name, why) in failed {
        observed.clusters.insert(name, Err(why));
    }
    if let Some((first, second, target)) = fleet::shared_storage(&observed) {
        return Err(CliError::SharedTarget {
            first: first.to_string(),
            second: second.to_string(),
            target,
        });
    }
    for (name, result) in &observed.clusters {
        for warning in result.iter().flat_map(|o| &o.warnings) {
            super::output::warning(&format!("{name}: {warning}"));
        }
    }
    Ok((backends, observed))
}

/// Loads and checks file/env material (and, given observations, secret sources).
pub(crate) fn load_material(
    loaded: &LoadedConfig,
    observed: Option<&Observed>,
    now: OffsetDateTime,
) -> Result<Material, CliError> {
    load_material_of(loaded, &loaded.config, observed, now)
}

/// [`load_material`] for `config`, a part of the loaded config (one
/// shard's clusters).
fn load_material_of(
    loaded: &LoadedConfig,
    config: &TrustConfig,
    observed: Option<&Observed>,
    now: OffsetDateTime,
) -> Result<Material, CliError> {
    let files = &loaded.files;
    let report =
        |d: &[config::Diagnostic]| report_diagnostics_at(files, d, Some(&loaded.provenance));
    let getenv = |name: &str| std::env::var(name).ok();
    let (raw, mut problems) = material::load::load(config, &getenv, observed, &loaded.root);
    problems.extend(material::check(config, &raw, now));
    problems.sort();
    if !problems.is_empty() {
        return Err(report(&problems));
    }
    Material::parse(&raw).map_err(CliError::Material)
}

/// Reads, observes and plans as of `now`.
pub(crate) fn prepare(
    settings: &Settings,
    source: &ConfigSource,
    fleet_args: &FleetArgs,
    now: OffsetDateTime,
) -> Result<Prepared, CliError> {
    let loaded = load_config(settings, source)?;
    let (backends, failed) = backend::backends(&loaded.config, &settings.reach);
    refuse_shared_targets(&backends)?;
    prepare_loaded(
        settings,
        source,
        loaded,
        (backends, failed),
        fleet_args,
        now,
    )
}

/// Observes and plans as of `now` what `loaded` describes, through
/// `backends` (and the clusters whose backend failed, with why).
fn prepare_loaded(
    settings: &Settings,
    source: &ConfigSource,
    loaded: LoadedConfig,
    (backends, failed): (Backends, BTreeMap<ClusterName, String>),
    fleet_args: &FleetArgs,
    now: OffsetDateTime,
) -> Result<Prepared, CliError> {
    let config = &loaded.config;
    // A shard observes only its own workload clusters (and those its
    // material reads from), through backends of its own, but plans the
    // whole config: the inventory and registrations on mgmt list every
    // cluster. Unsharded, observation goes through the backends the lock
    // already built.
    let sharding = match super::shard::resolve(&fleet_args.shard)? {
        Some(shard) => Some((shard, super::shard::placement(&loaded, shard.count())?)),
        None => None,
    };
    let scoped = sharding
        .as_ref()
        .map(|(shard, placement)| crate::shard::scope(config, placement, *shard));
    let observe_config = scoped.as_ref().unwrap_or(config);
    let (mut backends, mut observed) = match &scoped {
        Some(scoped) => observe_fleet(settings, scoped)?,
        None => observe_with(settings, config, backends, failed)?,
    };
    // A CA rotation advances on gates that must hold on every cluster: while
    // one is under way, shard 0 reads the other shards' clusters too (it
    // still writes only its own; `narrow` drops the rest).
    if let Some((shard, _)) = &sharding
        && shard.is_coordinator()
        && rotation_under_way(config, &observed)
    {
        (backends, observed) = observe_fleet(settings, config)?;
    }
    let material = load_material_of(&loaded, observe_config, Some(&observed), now)?;

    // Clusters that left the config but are in the inventory: shard 0's
    // alone in a sharded run.
    let mut orphans: BTreeMap<ClusterName, Connection> = BTreeMap::new();
    let prunes = sharding
        .as_ref()
        .is_none_or(|(shard, _)| shard.is_coordinator());
    if let Some(Ok(mgmt)) = observed
        .clusters
        .get(&config.management.name)
        .filter(|_| prunes)
    {
        let known: BTreeSet<&ClusterName> = config.clusters().map(|c| &c.name).collect();
        for entry in plan::read_inventory(mgmt, config.instance.as_str()) {
            if !known.contains(&entry.name) {
                orphans.insert(entry.name, entry.connection);
            }
        }
    }
    let mut orphan_backends = Vec::new();
    let live_targets: BTreeMap<String, ClusterName> = backends
        .iter()
        .map(|(name, b)| (b.target(), name.clone()))
        .collect();
    let mut renamed = Vec::new();
    for (name, connection) in &orphans {
        if let Connection::Directory { path } = connection
            && !settings.reach.allow_outside_state_dir
            && !backend::within_state_dir(path, &settings.reach)
        {
            // The inventory lives on mgmt, which others may write: it must
            // not be able to point a prune at any folder of this host.
            observed.clusters.insert(
                name.clone(),
                Err(format!(
                    "refused: its folder `{}` in the inventory is outside the state directory; not pruned (pass `--allow-outside-state-dir` if it is yours)",
                    path.display()
                )),
            );
            continue;
        }
        match backend::backend_for(name, connection, &settings.reach) {
            // A cluster renamed in its manifest is still reached the same way:
            // it is not an orphan, and pruning it would delete live Secrets.
            Ok(b) if live_targets.contains_key(&b.target()) => {
                super::output::status(&format!(
                    "note: `{name}` left the inventory: it is the same cluster as `{}` (renamed?)",
                    live_targets[&b.target()]
                ));
                renamed.push(name.clone());
            }
            Ok(b) => orphan_backends.push((name.clone(), b)),
            Err(e) => {
                observed
                    .clusters
                    .insert(name.clone(), Err(crate::error::error_chain(&e)));
            }
        }
    }
    for name in renamed {
        orphans.remove(&name);
    }
    let orphan_observed =
        fleet::observe(config, &orphan_backends, settings.parallelism, &|_, _| {});
    // An orphan that is the same storage as a live cluster (renamed, reached
    // through a symlink) is not an orphan either.
    let live_ids: BTreeMap<&str, &ClusterName> = observed
        .clusters
        .iter()
        .filter_map(|(n, r)| r.as_ref().ok().map(|o| (n, o)))
        .flat_map(|(n, o)| o.identities.iter().map(move |i| (i.as_str(), n)))
        .collect();
    let mut renamed_by_identity = Vec::new();
    for (name, result) in &orphan_observed.clusters {
        if let Some(live) = result
            .iter()
            .flat_map(|o| &o.identities)
            .find_map(|i| live_ids.get(i.as_str()))
        {
            super::output::status(&format!(
                "note: `{name}` left the inventory: it is the same cluster as `{live}` (renamed?)"
            ));
            renamed_by_identity.push(name.clone());
        }
    }
    for (name, result) in orphan_observed.clusters {
        if renamed_by_identity.contains(&name) {
            orphans.remove(&name);
        } else {
            observed.clusters.insert(name, result);
        }
    }
    backends.extend(
        orphan_backends
            .into_iter()
            .filter(|(n, _)| !renamed_by_identity.contains(n)),
    );

    let label = settings.source_label(&loaded.provenance);
    let keys = crate::pki::OsKeySource;
    let input = plan::PlanInput {
        config,
        material: &material,
        observed: &observed,
        orphans: &orphans,
        adopt: fleet_args.adopt,
        prune: fleet_args.prune || config.prune,
        source: &label,
        now,
        random: plan::Randomness {
            keys: &keys,
            token: &crate::pki::os_token,
        },
        workers: &super::workers::Threads,
        rotation: match &sharding {
            Some((shard, _)) if !shard.is_coordinator() => plan::rotation::RotationRequest::Follow,
            _ => fleet_args.rotation(),
        },
    };
    let mut planned = plan::plan(&input).map_err(CliError::Plan)?;
    let shard = sharding.map(|(shard, placement)| {
        let narrowed = crate::shard::narrow(config, &placement, shard, planned.clone(), &observed);
        planned = narrowed.planned;
        super::shard::ShardRun {
            shard,
            placement,
            waiting: narrowed.waiting,
        }
    });
    Ok(Prepared {
        config: config.clone(),
        backends,
        observed,
        planned,
        source: source.pinned(&loaded.provenance),
        provenance: loaded.provenance,
        material: material.fingerprints.clone(),
        shard,
    })
}

/// Refuses a config in which two clusters are the same storage.
pub(crate) fn refuse_shared_targets(
    backends: &BTreeMap<ClusterName, Arc<dyn Backend>>,
) -> Result<(), CliError> {
    match backend::shared_targets(backends).into_iter().next() {
        Some((first, second, target)) => Err(CliError::SharedTarget {
            first: first.to_string(),
            second: second.to_string(),
            target,
        }),
        None => Ok(()),
    }
}

/// Reads the config, takes the apply lock on the management cluster, then
/// observes and plans: what is planned is what is applied. The config read
/// and the backends built to find the management cluster are the ones
/// observed through (one read, one connection per cluster).
///
/// A shard other than 0 takes no lock (it writes nothing on mgmt but its
/// status) and waits for mgmt as `--shard-wait` says; its clusters are
/// fenced one by one before they are written ([`super::shard::fence`]).
pub(crate) fn lock_and_prepare(
    settings: &Settings,
    source: &ConfigSource,
    fleet_args: &FleetArgs,
    lock_timeout: std::time::Duration,
    now: OffsetDateTime,
) -> Result<(Option<Box<dyn crate::backend::LockGuard>>, Prepared), CliError> {
    if let Some(shard) = super::shard::resolve(&fleet_args.shard)?
        && !shard.is_coordinator()
    {
        let loaded = load_config(settings, source)?;
        let pinned = source.pinned(&loaded.provenance);
        let prepared = super::shard::prepare_waiting(fleet_args.shard.shard_wait, || {
            prepare(settings, &pinned, fleet_args, now)
        })?;
        // Without the lock nothing has reached mgmt yet: an unreachable mgmt
        // is the environment's failure here too, as it is for shard 0 (a
        // refused one stays the user's: the plan says why, exit 1).
        let mgmt = &prepared.config.management.name;
        if let Some(Err(reason)) = prepared.observed.clusters.get(mgmt)
            && !reason.starts_with("refused:")
        {
            return Err(CliError::Management {
                cluster: mgmt.to_string(),
                reason: reason.clone(),
            });
        }
        return Ok((None, prepared));
    }
    let loaded = load_config(settings, source)?;
    let config = &loaded.config;
    let (backends, failed) = backend::backends(config, &settings.reach);
    refuse_shared_targets(&backends)?;
    let mgmt = backends
        .get(&config.management.name)
        .cloned()
        .ok_or_else(|| CliError::Management {
            cluster: config.management.name.to_string(),
            reason: failed
                .get(&config.management.name)
                .cloned()
                .unwrap_or_else(|| "no backend".to_owned()),
        })?;
    // The clusters observed first connect while the lock is taken.
    for backend in backends.values().take(settings.parallelism) {
        backend.warm();
    }
    let holder = settings.holder();
    let lock = mgmt
        .lock(
            config.namespace.as_str(),
            config.instance.as_str(),
            &holder,
            lock_timeout,
        )
        .map_err(|source| CliError::Lock { source })?;
    let pinned = source.pinned(&loaded.provenance);
    let prepared = prepare_loaded(
        settings,
        &pinned,
        loaded,
        (backends, failed),
        fleet_args,
        now,
    )?;
    Ok((Some(lock), prepared))
}

/// Whether mgmt's rotation record holds a rotation under way.
fn rotation_under_way(config: &TrustConfig, observed: &Observed) -> bool {
    observed
        .clusters
        .get(&config.management.name)
        .and_then(|o| o.as_ref().ok())
        .and_then(|o| plan::rotation::Record::read(o, config.instance.as_str()).ok())
        .is_some_and(|r| r.state.rotation.is_some())
}

fn render_plan(plan: &Plan, format: OutputFormat, verbose: bool) -> String {
    match format {
        OutputFormat::Text => render::text(plan, super::palette(), verbose),
        OutputFormat::Json => render::json(plan) + "\n",
        OutputFormat::Markdown => render::markdown(plan, verbose),
    }
}

fn print_stdout(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// What a saved plan records of its source.
fn saved_source(prepared: &Prepared) -> (PathBuf, Option<SavedGitSource>) {
    match (&prepared.source, &prepared.provenance.commit) {
        (ConfigSource::Git(git), Some(commit)) => (
            git.path.clone(),
            Some(SavedGitSource {
                url: git.url.without_credentials().to_owned(),
                reference: git.reference.clone(),
                path: git.path.clone(),
                commit: commit.clone(),
            }),
        ),
        (ConfigSource::Git(git), None) => (git.path.clone(), None),
        (ConfigSource::Local(path), _) => (path.clone(), None),
    }
}

/// The source a saved plan was made from, pinned to its commit. A `--git URL`
/// given again (e.g. with credentials) must name the same repository.
fn source_of_saved(
    settings: &Settings,
    saved: &SavedPlan,
    git_args: &GitArgs,
) -> Result<ConfigSource, CliError> {
    let Some(git) = &saved.git else {
        if git_args.git.is_some() {
            return Err(CliError::Usage {
                message: "the saved plan was made from local manifests; drop `--git`".to_owned(),
            });
        }
        return Ok(ConfigSource::Local(saved.config_path.clone()));
    };
    let url = match &git_args.git {
        Some(url) if url.without_credentials() == git.url => url.clone(),
        Some(url) => {
            return Err(CliError::Usage {
                message: format!("the saved plan was made from `{}`, not `{url}`", git.url),
            });
        }
        None => git.url.parse().map_err(|_| CliError::Usage {
            message: "the saved plan names no repository URL".to_owned(),
        })?,
    };
    let source = settings.config_source(
        None,
        &GitArgs {
            git: Some(url),
            reference: Some(git.reference.clone()),
            git_path: Some(git.path.clone()),
            git_cache: git_args.git_cache.clone(),
        },
    )?;
    Ok(match source {
        ConfigSource::Git(g) => ConfigSource::Git(g.at_commit(&git.commit)),
        other => other,
    })
}

pub(crate) fn plan_command(settings: &Settings, args: &PlanArgs) -> Result<Outcome, CliError> {
    let source = settings.config_source(args.path.as_deref(), &args.git)?;
    if args.at.is_some() && args.out.is_some() {
        return Err(CliError::Usage {
            message: "a plan made `--at` another time cannot be saved: it could not be applied"
                .to_owned(),
        });
    }
    let sharded = super::shard::resolve(&args.fleet.shard)?.is_some();
    if sharded && args.out.is_some() {
        return Err(CliError::Usage {
            message: "a shard's plan cannot be saved: run `apply --shard I/N` instead".to_owned(),
        });
    }
    let now = args.at.unwrap_or_else(OffsetDateTime::now_utc);
    let mut prepared = prepare(settings, &source, &args.fleet, now)?;
    let waiting = prepared
        .shard
        .as_ref()
        .filter(|run| !run.waiting.is_empty())
        .map(super::shard::waiting_reason);
    if let Some(why) = &waiting {
        crate::shard::block(&mut prepared.planned, why);
    }
    let plan = &prepared.planned.plan;
    print_stdout(&render_plan(plan, args.output, args.fleet.show_unchanged))?;
    if let Some(why) = &waiting {
        super::output::status(&format!("{why}; shard 0 has not yet run, or not finished"));
        return Ok(Outcome::Error(super::ErrorClass::Environment));
    }
    if let Some(out) = &args.out {
        let (config_path, git) = saved_source(&prepared);
        let saved = SavedPlan {
            kind: plan::saved::KIND.to_owned(),
            format_version: plan::FORMAT_VERSION,
            config_path,
            git,
            adopt: args.fleet.adopt,
            prune: args.fleet.prune,
            rollback: args.fleet.rollback,
            resume: args.fleet.resume,
            observed: plan::saved::versions(&prepared.observed),
            material: prepared.material.clone(),
            plan: plan.clone(),
        };
        let text = serde_json::to_string_pretty(&saved).unwrap_or_default();
        std::fs::write(out, text + "\n").map_err(|source| CliError::SavePlan {
            path: out.clone(),
            source,
        })?;
        super::output::status(&format!(
            "Saved the plan to `{}`; carry it out with `relayctl apply {}`",
            out.display(),
            out.display()
        ));
    }
    let status = plan.detailed_status();
    Ok(match (args.detailed_exitcode, status) {
        (_, plan::DetailedStatus::Error) => Outcome::Failed,
        (true, plan::DetailedStatus::Changes) => Outcome::Changes,
        (true, plan::DetailedStatus::Blocked) => Outcome::Blocked,
        _ => Outcome::Success,
    })
}

/// The saved plan at `path`, if it is one (`None`: a manifest path).
fn read_saved_plan(path: &Path) -> Option<Result<SavedPlan, CliError>> {
    // A FIFO or a device must not hang or fill memory.
    let bytes = crate::files::read_regular(path, plan::saved::MAX_BYTES).ok()?;
    plan::saved::parse(&bytes).map(|result| {
        result.map_err(|reason| CliError::ReadPlan {
            path: path.to_path_buf(),
            reason,
        })
    })
}

pub(crate) fn apply_command(settings: &Settings, args: &ApplyArgs) -> Result<Outcome, CliError> {
    let saved = match args.path.as_deref().and_then(read_saved_plan) {
        Some(result) => Some(result?),
        None => None,
    };
    if saved.is_some() && super::shard::resolve(&args.fleet.shard)?.is_some() {
        return Err(CliError::Usage {
            message: "a saved plan is not sharded: apply it without `--shard`/`--shards`, or apply the manifests with them".to_owned(),
        });
    }
    let (source, fleet_args) = match &saved {
        Some(saved) => (
            source_of_saved(settings, saved, &args.git)?,
            FleetArgs {
                adopt: saved.adopt,
                prune: saved.prune,
                show_unchanged: args.fleet.show_unchanged,
                rollback: saved.rollback,
                resume: saved.resume,
                shard: args.fleet.shard.clone(),
            },
        ),
        None if args.git.git.is_some() && args.path.is_some() => {
            return Err(CliError::Usage {
                message:
                    "with `--git`, the FILE argument must be a plan saved by `relayctl plan --out`"
                        .to_owned(),
            });
        }
        None => (
            settings.config_source(args.path.as_deref(), &args.git)?,
            FleetArgs {
                adopt: args.fleet.adopt,
                prune: args.fleet.prune,
                show_unchanged: args.fleet.show_unchanged,
                rollback: args.fleet.rollback,
                resume: args.fleet.resume,
                shard: args.fleet.shard.clone(),
            },
        ),
    };

    let now = args.at.unwrap_or_else(OffsetDateTime::now_utc);
    // Without a terminal and without `--auto-approve` an apply with changes
    // can only be refused: find that out before the lock is taken, so a
    // refused apply leaves nothing behind (no lock file, no folder).
    if saved.is_none() && !args.auto_approve && !std::io::stdin().is_terminal() {
        let preview = prepare(settings, &source, &fleet_args, now)?;
        if preview.planned.plan.summary.has_changes() {
            print_stdout(&render_plan(
                &preview.planned.plan,
                args.output,
                fleet_args.show_unchanged,
            ))?;
            return Err(no_confirmation());
        }
    }

    let started = OffsetDateTime::now_utc();
    // Lock first, then observe: what is planned is what is applied.
    let (lock, mut prepared) =
        lock_and_prepare(settings, &source, &fleet_args, args.lock_timeout, now)?;
    let fences = super::shard::fence(settings, &mut prepared);
    sweep(settings, &prepared, &fences);
    let prepared = prepared;
    let plan = &prepared.planned.plan;
    if let Some(saved) = &saved {
        check_not_stale(saved, &prepared)?;
    }
    print_stdout(&render_plan(plan, args.output, fleet_args.show_unchanged))?;
    if !plan.summary.has_changes() {
        super::output::status("Nothing to apply.");
        if !args.no_events && plan.summary.has_errors() {
            // Conflicts found: recorded once each (see `crate::events`).
            let none = crate::apply::ApplyReport::default();
            super::report::Events::new(&prepared, settings.holder(), true)
                .finish(&none, settings.parallelism);
        }
        let none = crate::apply::ApplyReport::default();
        super::shard::write_status(&prepared, &none, &fences, started);
        return Ok(super::shard::outcome(&prepared, !plan.summary.has_errors()));
    }
    if saved.is_none() && !args.auto_approve {
        confirm()?;
    }
    // What `apply` reports: mgmt, every other cluster with writes, and
    // each cluster's final writes (the inventory) once more.
    let writing: usize = prepared
        .planned
        .writes
        .iter()
        .map(|w| {
            usize::from(w.role == plan::Role::Management || !w.writes.is_empty())
                + usize::from(!w.last.is_empty())
        })
        .sum();
    let progress = super::output::Progress::start("applying", writing);
    let events = super::report::Events::new(&prepared, settings.holder(), !args.no_events);
    let report = std::thread::scope(|scope| {
        let report = crate::apply::apply(
            &prepared.planned.writes,
            &prepared.backends,
            settings.parallelism,
            &|outcome| {
                match &outcome.error {
                    None if outcome.written > 0 => {
                        progress.note(&format!("{}: {} written", outcome.cluster, outcome.written))
                    }
                    None => {}
                    Some(err) => progress.println(&format!("{}: failed: {err}", outcome.cluster)),
                }
                progress.done(outcome.cluster.as_str(), outcome.error.is_some());
                events.cluster_done(outcome, scope);
            },
        );
        drop(progress);
        // Every write is done: the Lease is released while the last Events
        // are recorded (they need no lock), not one round trip after them.
        scope.spawn(move || drop(lock));
        events.finish(&report, settings.parallelism);
        report
    });
    let complete = report.ok() && !plan.summary.has_errors();
    super::shard::write_status(&prepared, &report, &fences, started);
    super::output::status(&format!(
        "Apply {}: {} Secret{} written.",
        if complete { "complete" } else { "incomplete" },
        report.written(),
        if report.written() == 1 { "" } else { "s" }
    ));
    Ok(super::shard::outcome(&prepared, complete))
}

/// Removes what interrupted runs left on every cluster (temporary files
/// holding keys and tokens). Runs under the apply lock; a failure is only
/// reported, it blocks nothing.
///
/// A shard sweeps only where it alone writes: mgmt on shard 0, and the
/// workload clusters whose writer fence it holds.
pub(crate) fn sweep(settings: &Settings, prepared: &Prepared, fences: &super::shard::Fences) {
    let namespace = prepared.planned.plan.namespace.clone();
    let ours = |name: &ClusterName| match &prepared.shard {
        None => true,
        Some(run) if *name == prepared.config.management.name => run.shard.is_coordinator(),
        Some(_) => fences.held.contains(name),
    };
    let backends: Vec<(ClusterName, Arc<dyn Backend>)> = prepared
        .backends
        .iter()
        .filter(|(n, _)| ours(n))
        .map(|(n, b)| (n.clone(), b.clone()))
        .collect();
    let results = fleet::parallel_map(backends, settings.parallelism, |(name, backend)| {
        (name.clone(), backend.sweep(&namespace))
    });
    for (name, result) in results {
        match result {
            Ok(0) => {}
            Ok(n) => super::output::status(&format!(
                "{name}: removed {n} temporary file{} left by an interrupted run",
                if n == 1 { "" } else { "s" }
            )),
            Err(e) => super::output::warning(&format!(
                "{name}: cannot remove what an interrupted run left: {}",
                crate::error::error_chain(&e)
            )),
        }
    }
}

fn no_confirmation() -> CliError {
    CliError::Usage { message: "refusing to apply without confirmation: stdin is not a terminal; pass `--auto-approve` (or apply a saved plan)".to_owned() }
}

fn check_not_stale(saved: &SavedPlan, prepared: &Prepared) -> Result<(), CliError> {
    let moved = plan::saved::moved(
        saved,
        &prepared.planned.plan,
        &prepared.observed,
        &prepared.material,
    );
    if moved.is_empty() {
        Ok(())
    } else {
        Err(CliError::StalePlan { moved })
    }
}

fn confirm() -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(no_confirmation());
    }
    let mut err = std::io::stderr();
    let _ = write!(err, "\nApply these changes? Only `yes` is accepted: ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(CliError::Output)?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(CliError::Cancelled)
    }
}
