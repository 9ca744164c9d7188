//! Command-line flags exactly as typed; [`super::settings`] resolves them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Declarative reconciler for the relay trust of a Gloo-style service mesh.
///
/// Reads manifests (RelayTrust, ManagementCluster, WorkloadCluster), observes
/// every cluster, plans and converges the relay Secrets.
#[derive(Debug, Parser)]
#[command(
    name = "relayctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[deny(missing_docs)]
pub struct Cli {
    /// Flags accepted before or after the subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct GlobalArgs {
    /// Root of the directory backend: clusters without a connection live in `<DIR>/<cluster>/`.
    #[arg(long, global = true, value_name = "DIR", env = "RELAYCTL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Kubeconfig file for `kubeconfig` connections without their own `path`.
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// How many workload clusters are worked on at once.
    #[arg(long, global = true, value_name = "N")]
    pub parallelism: Option<usize>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Plan and report output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Terraform-like text.
    #[default]
    Text,
    /// Versioned JSON (see the README).
    Json,
    /// Markdown for pull-request comments (under 65,000 characters).
    Markdown,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[deny(missing_docs)]
pub enum Command {
    /// Check manifests and report every problem; contacts nothing.
    Validate(ValidateArgs),
    /// Print the JSON schema of the manifests.
    Schema,
}

/// `relayctl validate`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ValidateArgs {
    /// Manifest file or folder (searched recursively for `*.yaml` / `*.yml`).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}
