//! The command-line shell: parse flags, run a command, render its outcome.
//!
//! Commands return a [`Outcome`] (an exit status) or a [`CliError`], which
//! [`main`] renders as `error:` / `caused by:` / `hint:` on stderr. Data goes
//! to stdout, everything else to stderr.

pub mod args;
pub mod output;

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
    /// Something failed and was already reported (1).
    Failed,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
            Outcome::Changes => ExitCode::from(2),
        }
    }
}

/// A failure to report: what failed, and hints.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The manifests are invalid; the diagnostics are already rendered.
    #[error("{count} problem{s} in the manifests", s = if *count == 1 { "" } else { "s" })]
    InvalidConfig {
        /// How many problems.
        count: usize,
    },
    /// Reading the manifests failed.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// Writing output failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
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
    match run(cli) {
        Ok(outcome) => outcome.into(),
        Err(err) => {
            output::print_error(&err);
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<Outcome, CliError> {
    match cli.command {
        Command::Validate(args) => {
            let files = crate::source::read_local(&args.path)?;
            match config::validate(&files) {
                Ok(config) => {
                    output::status(&format!(
                        "{}: valid ({} CA mode, {} client certs, management cluster `{}`, {} workload cluster{})",
                        args.path.display(),
                        config.ca.mode,
                        config.client_certs.mode,
                        config.management.name,
                        config.workloads.len(),
                        if config.workloads.len() == 1 { "" } else { "s" }
                    ));
                    Ok(Outcome::Success)
                }
                Err(diagnostics) => Err(report_diagnostics(&files, &diagnostics)),
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

fn report_diagnostics(files: &[config::ManifestFile], diagnostics: &[Diagnostic]) -> CliError {
    let sources: BTreeMap<_, _> = files
        .iter()
        .map(|f| (f.path.clone(), f.text.clone()))
        .collect();
    let _ = write!(
        std::io::stderr(),
        "{}",
        config::diag::render(diagnostics, &sources)
    );
    CliError::InvalidConfig {
        count: diagnostics.len(),
    }
}
