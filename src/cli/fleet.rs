//! `plan` and `apply`: read, observe, plan, render, and carry out.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::args::{ApplyArgs, FleetArgs, OutputFormat, PlanArgs};
use super::{CliError, Outcome, Settings, report_diagnostics};
use crate::backend::Backend;
use crate::config::{self, ManifestFile};
use crate::fleet;
use crate::material::{self, Material};
use crate::model::{ClusterName, Connection, TrustConfig};
use crate::observed::{ObjectVersion, Observed};
use crate::plan::{self, Plan, Planned, render};
use crate::secret::SecretBytes;

/// A config read, observed and planned.
pub(crate) struct Prepared {
    pub(crate) backends: BTreeMap<ClusterName, Arc<dyn Backend>>,
    pub(crate) observed: Observed,
    pub(crate) planned: Planned,
    pub(crate) path: PathBuf,
}

/// Reads and validates manifests, rendering diagnostics on failure.
pub(crate) fn load_config(path: &Path) -> Result<(Vec<ManifestFile>, TrustConfig), CliError> {
    let files = crate::source::read_local(path)?;
    match config::validate(&files) {
        Ok(config) => Ok((files, config)),
        Err(diagnostics) => Err(report_diagnostics(&files, &diagnostics)),
    }
}

/// Loads and checks file/env material (and, given observations, secret sources).
pub(crate) fn load_material(
    files: &[ManifestFile],
    config: &TrustConfig,
    observed: Option<&Observed>,
    now: OffsetDateTime,
) -> Result<Material, CliError> {
    let getenv = |name: &str| std::env::var(name).ok();
    let material =
        material::load(config, &getenv, observed).map_err(|d| report_diagnostics(files, &d))?;
    let problems = material::check(config, &material, now);
    if problems.is_empty() {
        Ok(material)
    } else {
        Err(report_diagnostics(files, &problems))
    }
}

/// 256 bits from the OS, as 64 hex characters.
pub(crate) fn os_token() -> SecretBytes {
    use rand::TryRng as _;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    if rand::rngs::SysRng.try_fill_bytes(bytes.as_mut()).is_err() {
        // Without OS randomness no token may be generated at all.
        panic!("the OS random number generator failed");
    }
    SecretBytes::from(hex::encode(bytes.as_ref()))
}

pub(crate) fn prepare(
    settings: &Settings,
    path: &Path,
    fleet_args: &FleetArgs,
) -> Result<Prepared, CliError> {
    let now = OffsetDateTime::now_utc();
    let (files, config) = load_config(path)?;
    let (mut backends, failed) = fleet::backends(&config, &settings.reach);
    let clusters: Vec<(ClusterName, Arc<dyn Backend>)> = backends
        .iter()
        .map(|(n, b)| (n.clone(), b.clone()))
        .collect();
    let mut observed = fleet::observe(&config, &clusters, settings.parallelism);
    for (name, why) in failed {
        observed.clusters.insert(name, Err(why));
    }
    let material = load_material(&files, &config, Some(&observed), now)?;

    // Clusters that left the config but are in the inventory.
    let mut orphans: BTreeMap<ClusterName, Connection> = BTreeMap::new();
    if let Some(Ok(mgmt)) = observed.clusters.get(&config.management.name) {
        let known: BTreeSet<&ClusterName> = config.clusters().map(|c| &c.name).collect();
        for entry in plan::read_inventory(mgmt, config.instance.as_str()) {
            if !known.contains(&entry.name) {
                orphans.insert(entry.name, entry.connection);
            }
        }
    }
    let mut orphan_backends = Vec::new();
    for (name, connection) in &orphans {
        match fleet::backend_for(name, connection, &settings.reach) {
            Ok(b) => orphan_backends.push((name.clone(), b)),
            Err(e) => {
                observed
                    .clusters
                    .insert(name.clone(), Err(fleet::error_chain(&e)));
            }
        }
    }
    let orphan_observed = fleet::observe(&config, &orphan_backends, settings.parallelism);
    observed.clusters.extend(orphan_observed.clusters);
    backends.extend(orphan_backends);

    let source = settings.source_label(path);
    let keys = crate::pki::OsKeySource;
    let input = plan::PlanInput {
        config: &config,
        material: &material,
        observed: &observed,
        orphans: &orphans,
        adopt: fleet_args.adopt,
        prune: fleet_args.prune || config.prune,
        source: &source,
        now,
        random: plan::Randomness {
            keys: &keys,
            token: &os_token,
        },
    };
    let planned = plan::plan(&input).map_err(CliError::Plan)?;
    Ok(Prepared {
        backends,
        observed,
        planned,
        path: path.to_path_buf(),
    })
}

fn render_plan(plan: &Plan, format: OutputFormat, verbose: bool) -> String {
    match format {
        OutputFormat::Text => render::text(plan, super::palette(), verbose),
        OutputFormat::Json => render::json(plan) + "\n",
        OutputFormat::Markdown => render::markdown(plan),
    }
}

fn print_stdout(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// What `plan --out` writes: the plan and every observed object version.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SavedPlan {
    kind: String,
    format_version: u32,
    config_path: PathBuf,
    adopt: bool,
    prune: bool,
    observed: Vec<ObjectVersion>,
    plan: Plan,
}

const SAVED_PLAN_KIND: &str = "relayctl.dev/SavedPlan";

fn versions(observed: &Observed) -> Vec<ObjectVersion> {
    let mut out = Vec::new();
    for (cluster, result) in &observed.clusters {
        if let Ok(obs) = result {
            for secret in obs.secrets.values() {
                out.push(ObjectVersion {
                    cluster: cluster.to_string(),
                    namespace: secret.namespace.clone(),
                    name: secret.name.clone(),
                    version: Some(secret.version.clone()),
                });
            }
        }
    }
    out.sort();
    out
}

pub(crate) fn plan_command(settings: &Settings, args: &PlanArgs) -> Result<Outcome, CliError> {
    let prepared = prepare(settings, &args.path, &args.fleet)?;
    let plan = &prepared.planned.plan;
    print_stdout(&render_plan(plan, args.output, args.fleet.show_unchanged))?;
    if let Some(out) = &args.out {
        let saved = SavedPlan {
            kind: SAVED_PLAN_KIND.to_owned(),
            format_version: plan::FORMAT_VERSION,
            config_path: prepared.path.clone(),
            adopt: args.fleet.adopt,
            prune: args.fleet.prune,
            observed: versions(&prepared.observed),
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
        _ => Outcome::Success,
    })
}

fn read_saved_plan(path: &Path) -> Option<Result<SavedPlan, CliError>> {
    let bytes = std::fs::read(path).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if value.get("kind").and_then(|k| k.as_str()) != Some(SAVED_PLAN_KIND) {
        return None;
    }
    Some(
        serde_json::from_value(value).map_err(|e| CliError::ReadPlan {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    )
}

pub(crate) fn apply_command(settings: &Settings, args: &ApplyArgs) -> Result<Outcome, CliError> {
    let lock_timeout: crate::model::Duration =
        args.lock_timeout.parse().map_err(|why| CliError::Usage {
            message: format!("--lock-timeout: {why}"),
        })?;
    let saved = match read_saved_plan(&args.path) {
        Some(result) => Some(result?),
        None => None,
    };
    let (config_path, fleet_args) = match &saved {
        Some(saved) => (
            saved.config_path.clone(),
            FleetArgs {
                adopt: saved.adopt,
                prune: saved.prune,
                show_unchanged: args.fleet.show_unchanged,
            },
        ),
        None => (
            args.path.clone(),
            FleetArgs {
                adopt: args.fleet.adopt,
                prune: args.fleet.prune,
                show_unchanged: args.fleet.show_unchanged,
            },
        ),
    };

    // Lock first, then observe: what is planned is what is applied.
    let (_, config) = load_config(&config_path)?;
    let (backends, _) = fleet::backends(&config, &settings.reach);
    let mgmt = backends
        .get(&config.management.name)
        .cloned()
        .ok_or_else(|| CliError::Usage {
            message: format!(
                "cannot reach the management cluster `{}`",
                config.management.name
            ),
        })?;
    let holder = settings.holder();
    let _lock = mgmt
        .lock(
            config.namespace.as_str(),
            config.instance.as_str(),
            &holder,
            std::time::Duration::from_secs(lock_timeout.as_secs()),
        )
        .map_err(|source| CliError::Lock { source })?;

    let prepared = prepare(settings, &config_path, &fleet_args)?;
    let plan = &prepared.planned.plan;
    if let Some(saved) = &saved {
        check_not_stale(saved, &prepared)?;
    }
    print_stdout(&render_plan(plan, args.output, fleet_args.show_unchanged))?;
    if !plan.summary.has_changes() {
        super::output::status("Nothing to apply.");
        return Ok(if plan.summary.has_errors() {
            Outcome::Failed
        } else {
            Outcome::Success
        });
    }
    if saved.is_none() && !args.auto_approve {
        confirm()?;
    }
    let report = crate::apply::apply(
        &prepared.planned.writes,
        &prepared.backends,
        settings.parallelism,
        &|outcome| match &outcome.error {
            None if outcome.written > 0 => {
                super::output::status(&format!("{}: {} written", outcome.cluster, outcome.written))
            }
            None => {}
            Some(err) => super::output::status(&format!("{}: failed: {err}", outcome.cluster)),
        },
    );
    super::output::status(&format!(
        "Apply {}: {} Secret{} written.",
        if report.ok() {
            "complete"
        } else {
            "incomplete"
        },
        report.written(),
        if report.written() == 1 { "" } else { "s" }
    ));
    Ok(if report.ok() && !plan.summary.has_errors() {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

fn check_not_stale(saved: &SavedPlan, prepared: &Prepared) -> Result<(), CliError> {
    let mut moved = Vec::new();
    if saved.plan.config_digest != prepared.planned.plan.config_digest {
        moved.push(format!(
            "the config at `{}` changed (sha256:{} → sha256:{})",
            saved.config_path.display(),
            &saved.plan.config_digest[..12],
            &prepared.planned.plan.config_digest[..12]
        ));
    }
    let before: BTreeMap<(String, String, String), Option<String>> = saved
        .observed
        .iter()
        .map(|v| {
            (
                (v.cluster.clone(), v.namespace.clone(), v.name.clone()),
                v.version.clone(),
            )
        })
        .collect();
    let after: BTreeMap<(String, String, String), Option<String>> = versions(&prepared.observed)
        .into_iter()
        .map(|v| ((v.cluster, v.namespace, v.name), v.version))
        .collect();
    for key in before.keys().chain(after.keys()).collect::<BTreeSet<_>>() {
        let (cluster, namespace, name) = key;
        match (before.get(key), after.get(key)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(_), Some(_)) => moved.push(format!("{cluster}: {namespace}/{name} was modified")),
            (Some(_), None) => moved.push(format!("{cluster}: {namespace}/{name} was deleted")),
            (None, Some(_)) => moved.push(format!("{cluster}: {namespace}/{name} was created")),
            (None, None) => {}
        }
    }
    if moved.is_empty() {
        let actions = |p: &Plan| -> BTreeMap<(String, String), plan::Action> {
            p.clusters
                .iter()
                .flat_map(|c| {
                    c.changes
                        .iter()
                        .map(move |ch| ((c.name.clone(), ch.name.clone()), ch.action))
                })
                .collect()
        };
        let (a, b) = (actions(&saved.plan), actions(&prepared.planned.plan));
        for key in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
            if a.get(key) != b.get(key) {
                moved.push(format!("{}: {} would now be {:?} instead of {:?} (time passed: a certificate entered its renewal window?)", key.0, key.1, b.get(key), a.get(key)));
            }
        }
    }
    if moved.is_empty() {
        Ok(())
    } else {
        Err(CliError::StalePlan { moved })
    }
}

fn confirm() -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage { message: "refusing to apply without confirmation: stdin is not a terminal; pass `--auto-approve` (or apply a saved plan)".to_owned() });
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
