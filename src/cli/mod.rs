//! The command-line shell: parse flags, run a command, render its outcome.
//!
//! Commands return a [`Outcome`] (an exit status) or a [`CliError`], which
//! [`main`] renders as `error:` / `caused by:` / `hint:` on stderr. Data goes
//! to stdout, everything else to stderr.

pub mod args;
mod check;
mod fleet;
pub mod output;
mod prepared;
mod reconcile;
mod report;
mod serve;
mod shard;
mod workers;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

use self::args::{Cli, Command};
use crate::config::{self, Diagnostic};

/// How a command ended, mapped to the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Success, no changes (0).
    Success,
    /// `--detailed-exitcode`: changes are pending (2).
    Changes,
    /// `--detailed-exitcode`: nothing to write, a CA rotation waits on its gate (3).
    Blocked,
    /// Something failed and was already reported (1).
    Failed,
    /// An error of this class was already reported (its exit code).
    Error(ErrorClass),
}

impl Outcome {
    /// Whether the command failed.
    pub fn failed(self) -> bool {
        matches!(self, Self::Failed | Self::Error(_))
    }
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
            Outcome::Error(class) => ExitCode::from(class.exit_code()),
            Outcome::Changes => ExitCode::from(2),
            Outcome::Blocked => ExitCode::from(3),
        }
    }
}

/// A failure to report: what failed, and hints.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The manifests are invalid; the diagnostics are already rendered.
    #[error("{count} problem{s} in the manifests{at}", s = if *count == 1 { "" } else { "s" }, at = at.as_ref().map(|a| format!(" at {a}")).unwrap_or_default())]
    InvalidConfig {
        /// How many problems.
        count: usize,
        /// The `<repo>@<commit>` read, for Git sources.
        at: Option<String>,
    },
    /// Reading the manifests failed.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// Writing output failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
    /// Checked material could not be parsed (a bug).
    #[error("cannot use the material")]
    Material(#[source] crate::material::ParseError),
    /// Planning failed.
    #[error("planning failed")]
    Plan(#[source] crate::plan::PlanError),
    /// Saving a plan failed.
    #[error("cannot save the plan to `{path}`")]
    SavePlan {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A saved plan cannot be read.
    #[error("`{path}` is not a usable saved plan: {reason}")]
    ReadPlan {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The saved plan no longer matches the clusters.
    #[error("the saved plan is stale ({} change{} since it was made); nothing was written", moved.len(), if moved.len() == 1 { "" } else { "s" })]
    StalePlan {
        /// Every object that moved.
        moved: Vec<String>,
    },
    /// The apply lock is held.
    #[error("cannot take the apply lock")]
    Lock {
        /// Who holds it.
        #[source]
        source: crate::backend::BackendError,
    },
    /// Two clusters of the config are the same storage.
    #[error(
        "clusters `{first}` and `{second}` are the same cluster ({target}); relayctl would overwrite one with the other, so nothing was written"
    )]
    SharedTarget {
        /// One cluster.
        first: String,
        /// The other.
        second: String,
        /// Their common storage.
        target: String,
    },
    /// The management cluster cannot be set up (its kubeconfig or context).
    #[error("cannot reach the management cluster `{cluster}`: {reason}")]
    Management {
        /// The cluster.
        cluster: String,
        /// Why (the connection's error chain).
        reason: String,
    },
    /// The process could not set itself up (signal handlers, threads).
    #[error("cannot {what}")]
    Runtime {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The flags make no sense together, or a confirmation is missing.
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
    },
    /// The user did not confirm.
    #[error("apply cancelled; nothing was written")]
    Cancelled,
}

/// Whose fault an error is, which decides the exit code: a user's can only
/// be fixed by changing the input (retrying does not help), the
/// environment's may pass on its own (retry), a bug is relayctl's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Invalid manifests, flags or saved plan; an unsafe state to refuse;
    /// no confirmation. Exit 1.
    User,
    /// A lock held, Git or the management cluster unreachable, output not
    /// writable, a plan gone stale. Exit 4.
    Environment,
    /// relayctl's own fault. Exit 70 (`EX_SOFTWARE`).
    Bug,
}

impl ErrorClass {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::User => 1,
            Self::Environment => 4,
            Self::Bug => 70,
        }
    }
}

impl CliError {
    /// Whose fault it is (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        use crate::backend::BackendError;
        use crate::source::{SourceError, git::GitError};
        match self {
            Self::InvalidConfig { .. }
            | Self::ReadPlan { .. }
            | Self::SharedTarget { .. }
            | Self::Usage { .. }
            | Self::Cancelled => ErrorClass::User,
            Self::Source(SourceError::Git(git)) => match git.as_ref() {
                GitError::UnknownRef { .. }
                | GitError::BadPath { .. }
                | GitError::NoSuchPath { .. }
                | GitError::NotUtf8 { .. } => ErrorClass::User,
                GitError::Fetch { source, .. }
                    if source.to_string().starts_with("authentication failed") =>
                {
                    ErrorClass::User
                }
                _ => ErrorClass::Environment,
            },
            Self::Source(_) => ErrorClass::User,
            // A lock file that is not what it claims, or no right to take
            // the Lease, is fixed by the operator, not by waiting.
            Self::Lock {
                source:
                    BackendError::Refused { .. }
                    | BackendError::Forbidden { .. }
                    | BackendError::Unauthorized { .. },
            } => ErrorClass::User,
            Self::Output(_)
            | Self::SavePlan { .. }
            | Self::StalePlan { .. }
            | Self::Lock { .. }
            | Self::Management { .. }
            | Self::Runtime { .. } => ErrorClass::Environment,
            Self::Material(_) | Self::Plan(_) => ErrorClass::Bug,
        }
    }
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // Usage errors exit 1 (not clap's 2): with `--detailed-exitcode`
            // 2 means "changes pending" and must never mean anything else.
            return if err.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(&cli.global);
    output::set_quiet(cli.global.quiet);
    {
        use std::io::IsTerminal as _;
        output::set_progress(
            std::io::stderr().is_terminal()
                && !cli.global.quiet
                && cli.global.log_format != Some(args::LogFormat::Json)
                && !matches!(cli.command, Command::Reconcile(_)),
        );
    }
    match run(cli) {
        Ok(outcome) => outcome.into(),
        Err(err) => {
            output::print_error(&err);
            ExitCode::from(err.class().exit_code())
        }
    }
}

/// Global flags resolved into what commands consume.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How to reach clusters.
    pub reach: crate::backend::Reach,
    /// Bound on concurrent clusters.
    pub parallelism: usize,
    /// `-v`: show everything (every check line).
    pub verbose: bool,
}

impl Settings {
    fn resolve(global: &args::GlobalArgs) -> Self {
        Self {
            reach: crate::backend::Reach {
                state_dir: global
                    .state_dir
                    .clone()
                    .unwrap_or_else(|| std::path::PathBuf::from(".relayctl/state")),
                kubeconfig: global.kubeconfig.clone(),
                timeout: global.timeout.unwrap_or(std::time::Duration::from_secs(30)),
                fix_permissions: global.fix_permissions,
                allow_outside_state_dir: global.allow_outside_state_dir,
                parallelism: global.parallelism.unwrap_or(16).max(1),
            },
            parallelism: global.parallelism.unwrap_or(16).max(1),
            verbose: global.verbose > 0,
        }
    }

    /// The source annotation for manifests: the path, or `<repo>@<commit>`
    /// with credentials stripped.
    fn source_label(&self, provenance: &crate::source::Provenance) -> String {
        provenance.label.clone()
    }

    /// Where `validate`, `plan` or `apply` read the manifests: `PATH`, or Git.
    fn config_source(
        &self,
        path: Option<&std::path::Path>,
        git: &args::GitArgs,
    ) -> Result<crate::source::ConfigSource, CliError> {
        match (&git.git, path) {
            (Some(url), _) => Ok(crate::source::ConfigSource::Git(crate::source::GitSource {
                url: url.clone(),
                reference: git.reference.clone().unwrap_or_else(|| "main".to_owned()),
                path: git.git_path.clone().unwrap_or_default(),
                cache: git
                    .git_cache
                    .clone()
                    .unwrap_or_else(crate::source::git::default_cache),
                commit: None,
            })),
            (None, Some(path)) => Ok(crate::source::ConfigSource::Local(path.to_path_buf())),
            (None, None) => Err(CliError::Usage {
                message: "give a manifest PATH or `--git URL`".to_owned(),
            }),
        }
    }

    /// Who holds the apply lock: user, host and process.
    pub(crate) fn holder(&self) -> String {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".to_owned());
        format!("{user}@{host} pid {}", std::process::id())
    }
}

/// Whether stdout gets colours: a terminal and no `NO_COLOR`.
pub(crate) fn colour() -> bool {
    use std::io::IsTerminal as _;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    std::io::stdout().is_terminal() && !no_color
}

/// The plan palette for stdout.
fn palette() -> crate::plan::render::Palette {
    if colour() {
        crate::plan::render::Palette::ansi()
    } else {
        crate::plan::render::Palette::plain()
    }
}

fn run(cli: Cli) -> Result<Outcome, CliError> {
    let settings = Settings::resolve(&cli.global);
    match cli.command {
        Command::Plan(args) => fleet::plan_command(&settings, &args),
        Command::Apply(args) => fleet::apply_command(&settings, &args),
        Command::Reconcile(args) => reconcile::reconcile_command(&settings, &args),
        Command::Check(args) => check::check_command(&settings, &args),
        Command::Validate(args) => {
            let source = settings.config_source(args.path.as_deref(), &args.git)?;
            let loaded = fleet::load_config(&settings, &source)?;
            let config = &loaded.config;
            fleet::load_material(&loaded, None, time::OffsetDateTime::now_utc())?;
            {
                {
                    output::status(&format!(
                        "{}: valid ({} CA mode, {} client certs, management cluster `{}`, {} workload cluster{})",
                        loaded.provenance.label,
                        config.ca.mode,
                        config.client_certs.mode,
                        config.management.name,
                        config.workloads.len(),
                        if config.workloads.len() == 1 { "" } else { "s" }
                    ));
                    Ok(Outcome::Success)
                }
            }
        }
        Command::Schema => {
            let schema = config::raw::json_schema();
            let text = serde_json::to_string_pretty(&schema).unwrap_or_default();
            writeln!(std::io::stdout(), "{text}").map_err(CliError::Output)?;
            Ok(Outcome::Success)
        }
    }
}

/// Renders diagnostics with paths as `provenance` shows them (relative to the
/// repository for Git sources, whose commit the error then names).
pub(crate) fn report_diagnostics_at(
    files: &[config::ManifestFile],
    diagnostics: &[Diagnostic],
    provenance: Option<&crate::source::Provenance>,
) -> CliError {
    let shown = |path: &std::path::Path| match provenance {
        Some(p) => p.display_path(path),
        None => path.to_path_buf(),
    };
    let sources: BTreeMap<_, _> = files
        .iter()
        .map(|f| (shown(&f.path), f.text.clone()))
        .collect();
    let diagnostics: Vec<Diagnostic> = diagnostics
        .iter()
        .map(|d| Diagnostic {
            file: shown(&d.file),
            ..d.clone()
        })
        .collect();
    let _ = write!(
        std::io::stderr(),
        "{}",
        config::diag::render(&diagnostics, &sources)
    );
    CliError::InvalidConfig {
        count: diagnostics.len(),
        at: provenance.and_then(|p| p.commit.as_ref().map(|_| p.label.clone())),
    }
}

/// Logs go to stderr: text (`RUST_LOG` or `-v`/`-q` pick the level) or JSON
/// (`--log-format json`). Default level: `info` for relayctl.
fn init_logging(global: &args::GlobalArgs) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("warn,relayctl={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match global.log_format {
        Some(args::LogFormat::Json) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        _ => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            builder
                .with_ansi(std::io::stderr().is_terminal() && !no_color)
                .with_target(false)
                .try_init()
        }
    };
    // A second initialisation (tests calling `main` twice) keeps the first.
    let _ = result;
}
