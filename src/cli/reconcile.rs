//! `relayctl reconcile`: Git is the source of truth, once or on an interval.
//!
//! A tick is: fetch, read the commit, take the apply lock, observe, plan and
//! apply everything (auto-approved). `--once` runs one tick and exits with
//! `apply`'s code. `--interval` repeats: a new commit is picked up on the next
//! tick, and a tick without a new commit still re-plans, so drift and
//! certificate renewals are converged too. A failed tick is logged and retried
//! with exponential backoff, capped at the interval. SIGTERM or SIGINT lets the
//! tick in flight finish its writes, then the loop exits 0 (a second signal
//! exits at once).
//!
//! A ref that moves backwards — the new commit does not descend from the last
//! one applied, as after a force push — is reported naming both commits and
//! then applied: what Git says is what the fleet gets. The last applied commit
//! is remembered in the Git cache, so `--once` Jobs sharing a cache notice it
//! too.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use time::OffsetDateTime;

use super::args::{FleetArgs, ReconcileArgs};
use super::serve::{Endpoints, Telemetry, serve};
use super::{CliError, Outcome, Settings, fleet};
use crate::metrics::ErrorReason;
use crate::pki::inspect::rfc3339;
use crate::plan::{self, Action};
use crate::source::{ConfigSource, GitSource};

/// First retry delay after a failed tick (never more than the interval).
const FIRST_BACKOFF: Duration = Duration::from_secs(5);

pub(crate) fn reconcile_command(
    settings: &Settings,
    args: &ReconcileArgs,
) -> Result<Outcome, CliError> {
    if args.git.git.is_none() {
        return Err(CliError::Usage {
            message: "`reconcile` reads the manifests from Git: pass `--git URL`".to_owned(),
        });
    }
    let source = settings.config_source(None, &args.git)?;
    let ConfigSource::Git(git) = &source else {
        return Err(CliError::Usage {
            message: "`reconcile` reads the manifests from Git: pass `--git URL`".to_owned(),
        });
    };
    if args.fleet.rollback || args.fleet.resume {
        return Err(CliError::Usage {
            message: "`--rollback` and `--resume` act once: use them with `relayctl apply`, not with `reconcile`".to_owned(),
        });
    }
    let lock_timeout = args.lock_timeout;
    let interval = args.interval;
    let stop = Stop::install()?;
    let telemetry = interval.map(Telemetry::new);
    if let Some(telemetry) = &telemetry {
        let listeners = [
            (
                args.metrics_addr,
                Endpoints {
                    metrics: true,
                    health: true,
                },
                "/metrics, /livez and /readyz",
            ),
            (
                args.health_addr,
                Endpoints {
                    metrics: false,
                    health: true,
                },
                "/livez and /readyz",
            ),
        ];
        for (addr, endpoints, what) in listeners {
            let Some(addr) = addr else { continue };
            let bound =
                serve(addr, telemetry.clone(), endpoints).map_err(|e| CliError::Runtime {
                    what: format!("listen on `{addr}`"),
                    source: Box::new(e),
                })?;
            tracing::info!(addr = %bound, "serving {what} on http://{bound}");
        }
    }
    let mut reconciler = Reconciler {
        settings,
        source: &source,
        git,
        fleet: FleetArgs {
            adopt: args.fleet.adopt,
            prune: args.fleet.prune,
            show_unchanged: false,
            rollback: false,
            resume: false,
            shard: args.fleet.shard.clone(),
        },
        lock_timeout,
        applied: AppliedRecord::new(git, settings),
        telemetry,
        status_configmap: args.status_configmap,
        events: !args.no_events,
    };

    let Some(interval) = interval else {
        return Ok(reconciler.tick_logged(1));
    };
    tracing::info!(
        source = %source.describe(),
        interval_secs = interval.as_secs(),
        "reconciling on an interval"
    );
    let mut failures: u32 = 0;
    let mut tick: u64 = 0;
    loop {
        tick += 1;
        let outcome = reconciler.tick_logged(tick);
        if stop.requested() {
            tracing::info!(tick, "stopped");
            return Ok(Outcome::Success);
        }
        if args.max_ticks.is_some_and(|max| tick >= max) {
            return Ok(outcome);
        }
        let wait = if outcome.failed() {
            failures += 1;
            let wait = backoff(failures, interval);
            tracing::warn!(
                tick,
                failures,
                retry_in_secs = wait.as_secs_f64(),
                "tick failed; retrying with backoff"
            );
            wait
        } else {
            failures = 0;
            interval
        };
        if stop.wait(wait) {
            tracing::info!(tick, "stopped");
            return Ok(Outcome::Success);
        }
    }
}

/// `FIRST_BACKOFF · 2^(failures−1)`, at most `interval`.
fn backoff(failures: u32, interval: Duration) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    FIRST_BACKOFF.saturating_mul(factor).min(interval)
}

struct Reconciler<'a> {
    settings: &'a Settings,
    source: &'a ConfigSource,
    git: &'a GitSource,
    fleet: FleetArgs,
    lock_timeout: Duration,
    applied: AppliedRecord,
    /// What `/metrics`, `/livez` and `/readyz` report (the loop only).
    telemetry: Option<Arc<Telemetry>>,
    /// Write the run's outcome to the status ConfigMap.
    status_configmap: bool,
    /// Record Kubernetes Events for transitions.
    events: bool,
}

/// The bounded `reason` of a failed run, for the metrics.
fn error_reason(err: &CliError) -> ErrorReason {
    match err {
        CliError::InvalidConfig { .. } | CliError::Material(_) => ErrorReason::Config,
        CliError::Source(_) => ErrorReason::Source,
        CliError::Lock { .. } => ErrorReason::Lock,
        CliError::Management { .. } => ErrorReason::Management,
        CliError::SharedTarget { .. } => ErrorReason::Config,
        _ => ErrorReason::Internal,
    }
}

impl Reconciler<'_> {
    /// Runs one tick and logs how it ended.
    fn tick_logged(&mut self, tick: u64) -> Outcome {
        let started = std::time::Instant::now();
        if let Some(telemetry) = &self.telemetry {
            telemetry.tick_started();
        }
        let result = self.tick(tick, OffsetDateTime::now_utc());
        if let Some(telemetry) = &self.telemetry {
            let reason = match &result {
                Ok(Outcome::Success) => None,
                Ok(_) => Some(ErrorReason::Clusters),
                Err(err) => {
                    telemetry.not_ready(crate::error::error_chain(err));
                    Some(error_reason(err))
                }
            };
            telemetry.tick_finished(started.elapsed(), reason, OffsetDateTime::now_utc());
        }
        match result {
            Ok(outcome) => outcome,
            Err(err) => {
                match &err {
                    // The diagnostics are already on stderr.
                    CliError::InvalidConfig { .. } => {
                        tracing::error!(tick, "{err}; nothing was written");
                    }
                    _ => tracing::error!(tick, "{}", crate::error::error_chain(&err)),
                }
                Outcome::Error(err.class())
            }
        }
    }

    fn tick(&mut self, tick: u64, started: OffsetDateTime) -> Result<Outcome, CliError> {
        let (_lock, mut prepared) = fleet::lock_and_prepare(
            self.settings,
            self.source,
            &self.fleet,
            self.lock_timeout,
            OffsetDateTime::now_utc(),
        )?;
        let fences = super::shard::fence(self.settings, &mut prepared);
        let prepared = prepared;
        if let Some(telemetry) = &self.telemetry {
            telemetry.ready(format!(
                "tick {tick} holds the apply lock and observed {} clusters",
                prepared.observed.clusters.len()
            ));
        }
        let commit = prepared.provenance.commit.clone().unwrap_or_default();
        self.check_ancestry(&commit);
        let plan = &prepared.planned.plan;
        for cluster in &plan.clusters {
            if let Some(error) = &cluster.error {
                tracing::error!(tick, cluster = %cluster.name, "cannot plan: {error}");
            }
            for change in &cluster.changes {
                if change.action == Action::NoOp {
                    continue;
                }
                let action = serde_json::to_value(change.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                tracing::info!(
                    tick,
                    cluster = %cluster.name,
                    secret = %format!("{}/{}", change.namespace, change.name),
                    action = %action,
                    reason = %change.reasons.join("; "),
                    "planned"
                );
            }
        }
        tracing::info!(
            tick,
            commit = %commit,
            source = %prepared.provenance.label,
            "{}",
            plan::render::summary_line(plan)
        );
        let events = super::report::Events::new(&prepared, self.settings.holder(), self.events);
        let report = std::thread::scope(|scope| {
            let report = if plan.summary.has_changes() {
                crate::apply::apply(
                    &prepared.planned.writes,
                    &prepared.backends,
                    self.settings.parallelism,
                    &|outcome| {
                        match &outcome.error {
                            None if outcome.written > 0 => tracing::info!(
                                tick,
                                cluster = %outcome.cluster,
                                written = outcome.written,
                                "applied"
                            ),
                            None => {}
                            Some(err) => {
                                tracing::error!(tick, cluster = %outcome.cluster, "apply failed: {err}")
                            }
                        }
                        events.cluster_done(outcome, scope);
                    },
                )
            } else {
                crate::apply::ApplyReport::default()
            };
            events.finish(&report, self.settings.parallelism);
            report
        });
        let ok = report.ok() && !plan.summary.has_errors();
        if events.recorded() > 0 {
            tracing::info!(
                tick,
                events = events.recorded(),
                "recorded Kubernetes Events"
            );
        }
        self.report(&prepared, &report, tick, &commit, started, ok);
        // A shard's status goes to its own ConfigMap, every run.
        super::shard::write_status(&prepared, &report, &fences, started);
        let outcome = super::shard::outcome(&prepared, ok);
        tracing::info!(
            tick,
            commit = %commit,
            written = report.written(),
            ok,
            "tick {}",
            if ok { "complete" } else { "incomplete" }
        );
        if outcome == Outcome::Success {
            self.applied.set(&commit);
        }
        Ok(outcome)
    }

    /// Metrics and the status ConfigMap of a tick that got as far
    /// as applying.
    fn report(
        &self,
        prepared: &fleet::Prepared,
        report: &crate::apply::ApplyReport,
        tick: u64,
        commit: &str,
        started: OffsetDateTime,
        ok: bool,
    ) {
        let states = super::report::states(prepared, report);
        if self.status_configmap && prepared.shard.is_none() {
            let finished = OffsetDateTime::now_utc();
            let status = crate::status::run_status(&crate::status::RunFacts {
                plan: &prepared.planned.plan,
                clusters: &states,
                commit,
                started_at: rfc3339(started),
                finished_at: rfc3339(finished),
                ok,
                written: report.written(),
                shard: None,
            });
            let name = super::report::status_configmap_name(prepared.config.instance.as_str());
            match super::report::write_status(prepared, &status) {
                Ok(true) => tracing::info!(tick, configmap = %name, "wrote the run's status"),
                Ok(false) => tracing::debug!(
                    tick,
                    "the management cluster's backend keeps no status ConfigMap (directory backend)"
                ),
                Err(e) => tracing::warn!(
                    tick,
                    configmap = %name,
                    "cannot write the run's status: {}",
                    crate::error::error_chain(&e)
                ),
            }
        }
        if let Some(telemetry) = &self.telemetry {
            telemetry.observed(super::report::observation(
                prepared,
                report,
                states,
                OffsetDateTime::now_utc(),
            ));
        }
    }

    /// Warns when `commit` does not descend from the last applied commit.
    fn check_ancestry(&self, commit: &str) {
        let Some(last) = self.applied.get() else {
            return;
        };
        if last == commit {
            return;
        }
        match self.git.descends_from(commit, &last) {
            Some(true) => tracing::info!(previous = %last, commit = %commit, "new commit"),
            Some(false) => tracing::warn!(
                previous = %last,
                commit = %commit,
                reference = %self.git.reference,
                "`{}` moved backwards (force push?): {commit} does not descend from the last applied commit {last}; applying {commit}, Git is the source of truth",
                self.git.reference
            ),
            None => tracing::warn!(
                previous = %last,
                commit = %commit,
                "cannot tell whether {commit} descends from the last applied commit {last} (not in the cache); applying it"
            ),
        }
    }
}

/// The last commit applied for one repository, ref, path and fleet: kept in
/// memory and in a file in the Git cache.
struct AppliedRecord {
    file: PathBuf,
    last: Option<String>,
}

impl AppliedRecord {
    fn new(git: &GitSource, settings: &Settings) -> Self {
        let mut key = Sha256::new();
        for part in [
            git.reference.as_str(),
            &git.path.display().to_string(),
            &settings.reach.state_dir.display().to_string(),
            &settings
                .reach
                .kubeconfig
                .as_ref()
                .map(|k| k.display().to_string())
                .unwrap_or_default(),
        ] {
            key.update(part.as_bytes());
            key.update([0]);
        }
        let file = git
            .cache_dir()
            .join("applied")
            .join(hex::encode(&key.finalize()[..8]));
        let last = std::fs::read_to_string(&file)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        Self { file, last }
    }

    fn get(&self) -> Option<String> {
        self.last.clone()
    }

    fn set(&mut self, commit: &str) {
        if commit.is_empty() || self.last.as_deref() == Some(commit) {
            return;
        }
        self.last = Some(commit.to_owned());
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = self
                .file
                .with_extension(format!("tmp-{}", std::process::id()));
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{commit}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.file)
        };
        if let Err(err) = write() {
            tracing::warn!(file = %self.file.display(), "cannot record the applied commit: {err}");
        }
    }
}

/// SIGTERM / SIGINT, caught on a thread of its own. The first signal asks the
/// loop to stop after the tick in flight; a second one exits at once.
struct Stop {
    requested: Arc<AtomicBool>,
    wake: mpsc::Receiver<()>,
}

impl Stop {
    fn install() -> Result<Self, CliError> {
        let requested = Arc::new(AtomicBool::new(false));
        let (wake_tx, wake) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel::<Result<(), String>>();
        let flag = requested.clone();
        std::thread::Builder::new()
            .name("relayctl-signals".to_owned())
            .spawn(move || watch_signals(&flag, &wake_tx, &ready_tx))
            .map_err(|e| CliError::Runtime {
                what: "start the signal handler".to_owned(),
                source: Box::new(e),
            })?;
        match ready.recv() {
            Ok(Ok(())) => Ok(Self { requested, wake }),
            Ok(Err(message)) => Err(CliError::Runtime {
                what: "install the signal handlers".to_owned(),
                source: message.into(),
            }),
            Err(_) => Err(CliError::Runtime {
                what: "install the signal handlers".to_owned(),
                source: "the signal thread ended".into(),
            }),
        }
    }

    fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Sleeps up to `duration`; true when a stop was requested.
    fn wait(&self, duration: Duration) -> bool {
        if self.requested() {
            return true;
        }
        let _ = self.wake.recv_timeout(duration);
        self.requested()
    }
}

fn watch_signals(
    flag: &AtomicBool,
    wake: &mpsc::Sender<()>,
    ready: &mpsc::Sender<Result<(), String>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot install the signal handlers: {e}")));
            return;
        }
    };
    runtime.block_on(async {
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => {
                let _ = ready.send(Err(format!("cannot install the signal handlers: {e}")));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            // Only this thread sets the flag. It is set after the log line,
            // so that the loop cannot exit before the line is written.
            if flag.load(Ordering::SeqCst) {
                tracing::warn!(signal = name, "second signal: exiting now");
                std::process::exit(1);
            }
            tracing::info!(
                signal = name,
                "stopping: the writes in flight finish, then relayctl exits"
            );
            flag.store(true, Ordering::SeqCst);
            let _ = wake.send(());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped_at_the_interval() {
        let minute = Duration::from_secs(60);
        let secs: Vec<u64> = (1..=6).map(|n| backoff(n, minute).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 60, 60]);
        assert_eq!(backoff(1, Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(backoff(u32::MAX, minute), minute);
    }
}
