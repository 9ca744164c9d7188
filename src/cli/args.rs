//! Command-line flags exactly as typed; [`super::Settings`] resolves them.

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
    /// Per-cluster timeout of each Kubernetes API call, retries included [default: 30s].
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Tighten loose permissions in the state directory (folders writable by
    /// others, Secret files not 0600) with a warning, instead of refusing them.
    #[arg(long, global = true)]
    pub fix_permissions: bool,
    /// Allow `directory` connections outside `--state-dir` (they are not
    /// guarded like the state directory).
    #[arg(long, global = true)]
    pub allow_outside_state_dir: bool,
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

/// A duration in Go notation such as `0s`, `30s` or `2m`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let duration: crate::model::Duration = text.parse()?;
    Ok(std::time::Duration::from_secs(duration.as_secs()))
}

/// A positive duration such as `30s` or `2m`.
fn parse_positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be at least 1s".to_owned()),
        d => Ok(d),
    }
}

/// An instant in RFC 3339 (`2027-06-01T00:00:00Z`).
fn parse_instant(text: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(
        |_| {
            format!(
                "`{}` is not an RFC 3339 time such as `2027-06-01T00:00:00Z`",
                crate::text::printable(text)
            )
        },
    )
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
    /// Show what apply would change on every cluster, and why.
    Plan(PlanArgs),
    /// Converge every cluster to the manifests (or carry out a saved plan).
    Apply(ApplyArgs),
    /// Fetch from Git, plan and apply: once (a Job) or on an interval (a loop).
    Reconcile(ReconcileArgs),
    /// Verify every cluster's relay trust (√/‼/×) with a real mTLS handshake per agent; writes nothing.
    Check(CheckArgs),
    /// Print the JSON schema of the manifests.
    Schema,
}

/// Reading the manifests from Git instead of `PATH`.
#[derive(Debug, Clone, Args)]
#[deny(missing_docs)]
pub struct GitArgs {
    /// Read the manifests from this Git repository: a local path, `file://`, `https://` (token
    /// from `RELAYCTL_GIT_TOKEN`) or `ssh://` / `git@host:repo` (SSH agent).
    #[arg(long, value_name = "URL", help_heading = "Git source")]
    pub git: Option<crate::source::RepoUrl>,
    /// Branch, tag or commit to read [default: main].
    #[arg(
        long = "ref",
        value_name = "REF",
        requires = "git",
        help_heading = "Git source"
    )]
    pub reference: Option<String>,
    /// Folder (or file) inside the repository [default: the root].
    #[arg(
        long = "path",
        value_name = "DIR",
        requires = "git",
        help_heading = "Git source"
    )]
    pub git_path: Option<PathBuf>,
    /// Cache of fetched repositories [default: ~/.cache/relayctl/git].
    #[arg(
        long,
        value_name = "DIR",
        env = "RELAYCTL_GIT_CACHE",
        help_heading = "Git source"
    )]
    pub git_cache: Option<PathBuf>,
}

/// `relayctl validate`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ValidateArgs {
    /// Manifest file or folder (searched recursively for `*.yaml` / `*.yml`).
    #[arg(
        value_name = "PATH",
        required_unless_present = "git",
        conflicts_with = "git"
    )]
    pub path: Option<PathBuf>,
    /// Git source.
    #[command(flatten)]
    pub git: GitArgs,
}

/// Output format of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum CheckFormat {
    /// Grouped √/‼/× lines with hints.
    #[default]
    Text,
    /// Versioned JSON (see the README).
    Json,
    /// Prometheus text: the certificate and cluster-state metrics, for
    /// node-exporter's textfile collector.
    Prometheus,
    /// One self-contained HTML page: summary, a status grid of every
    /// cluster, an expiry timeline of every certificate.
    Html,
}

/// `relayctl check`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct CheckArgs {
    /// Manifest file or folder.
    #[arg(
        value_name = "PATH",
        required_unless_present = "git",
        conflicts_with = "git"
    )]
    pub path: Option<PathBuf>,
    /// Git source.
    #[command(flatten)]
    pub git: GitArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = CheckFormat::Text)]
    pub output: CheckFormat,
    /// Check as of TIME (RFC 3339) instead of now: what will have expired, or
    /// be due for renewal, by then.
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    pub at: Option<time::OffsetDateTime>,
    /// Also check that every cluster was claimed by the shard it is placed
    /// on among N (from each shard's status ConfigMap on the management
    /// cluster): the `shard` line.
    #[arg(long, value_name = "N", value_parser = parse_shard_count)]
    pub shards: Option<u32>,
}

/// Flags shared by `plan` and `apply`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct FleetArgs {
    /// Take over existing Secrets that relayctl does not own (valid CA material is kept).
    #[arg(long)]
    pub adopt: bool,
    /// Delete this instance's Secrets on clusters that left the config (as `spec.prune: true`).
    #[arg(long)]
    pub prune: bool,
    /// List unchanged Secrets' data too.
    #[arg(long)]
    pub show_unchanged: bool,
    /// Step the CA rotation under way back one phase and hold it there
    /// (docs/rotation.md); in its first phase, cancel it.
    #[arg(long, conflicts_with = "resume")]
    pub rollback: bool,
    /// Continue a CA rotation held after a rollback, or start a cancelled one again.
    #[arg(long)]
    pub resume: bool,
    /// Sharded runs.
    #[command(flatten)]
    pub shard: ShardArgs,
}

impl FleetArgs {
    /// What is asked of a CA rotation.
    pub fn rotation(&self) -> crate::plan::rotation::RotationRequest {
        use crate::plan::rotation::RotationRequest;
        if self.rollback {
            RotationRequest::Rollback
        } else if self.resume {
            RotationRequest::Resume
        } else {
            RotationRequest::Proceed
        }
    }
}

/// Splitting the workload clusters across several processes (see the
/// README, "Sharding").
#[derive(Debug, Clone, Default, Args)]
#[deny(missing_docs)]
pub struct ShardArgs {
    /// Run as shard I of N (`0/3` is the first of three): plan and write
    /// only the workload clusters placed on it; shard 0 alone writes the
    /// management cluster.
    #[arg(long, value_name = "I/N", value_parser = parse_shard, help_heading = "Sharding")]
    pub shard: Option<crate::shard::Shard>,
    /// Run as one of N shards, its index read from `JOB_COMPLETION_INDEX`
    /// (set by a Kubernetes Indexed Job).
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "shard",
        value_parser = parse_shard_count,
        help_heading = "Sharding"
    )]
    pub shards: Option<u32>,
    /// Shards other than 0: how long to wait for shard 0 to bring the
    /// management cluster to what this shard's clusters are planned
    /// against, e.g. `2m`; then the shard reports what it waited for and
    /// fails (exit 4) without writing them.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "0s",
        value_parser = parse_duration,
        help_heading = "Sharding"
    )]
    pub shard_wait: std::time::Duration,
}

fn parse_shard(text: &str) -> Result<crate::shard::Shard, String> {
    text.parse()
}

/// A shard count, 1 to [`crate::shard::MAX_SHARDS`].
pub(crate) fn parse_shard_count(text: &str) -> Result<u32, String> {
    let count: u32 = text.trim().parse().map_err(|_| {
        format!(
            "`{}` is not a shard count: a whole number from 1 to {}",
            crate::text::printable(text),
            crate::shard::MAX_SHARDS
        )
    })?;
    crate::shard::check_count(count)?;
    Ok(count)
}

/// `relayctl plan`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct PlanArgs {
    /// Manifest file or folder.
    #[arg(
        value_name = "PATH",
        required_unless_present = "git",
        conflicts_with = "git"
    )]
    pub path: Option<PathBuf>,
    /// Git source.
    #[command(flatten)]
    pub git: GitArgs,
    /// Save the plan (no secret material) for `relayctl apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Exit 0 when there are no changes, 2 when there are changes, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan as of TIME (RFC 3339) instead of now: what would be renewed
    /// then. A plan made for another time cannot be applied.
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    pub at: Option<time::OffsetDateTime>,
    /// Shared fleet flags.
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// `relayctl apply`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ApplyArgs {
    /// Manifest file or folder, or a plan saved with `plan --out` (with `--git`: only a saved
    /// plan, whose recorded commit is read again).
    #[arg(value_name = "PATH|FILE", required_unless_present = "git")]
    pub path: Option<PathBuf>,
    /// Git source.
    #[command(flatten)]
    pub git: GitArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Do not record Kubernetes Events for created, renewed, repaired and
    /// deleted Secrets and for conflicts.
    #[arg(long)]
    pub no_events: bool,
    /// How long to wait for another apply's lock, e.g. `30s`, `5m`.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: std::time::Duration,
    /// Output format of the plan shown before applying.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Apply as of TIME (RFC 3339): certificates are issued for that time.
    /// For tests of rotations over simulated months; never in production.
    #[arg(long, value_name = "TIME", value_parser = parse_instant, hide = true)]
    pub at: Option<time::OffsetDateTime>,
    /// Shared fleet flags.
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// `relayctl reconcile`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["once", "interval"])))]
pub struct ReconcileArgs {
    /// Git source (`--git` is required).
    #[command(flatten)]
    pub git: GitArgs,
    /// Fetch, plan and apply once, then exit (0 success, 1 error), e.g. as a Kubernetes Job.
    #[arg(long)]
    pub once: bool,
    /// Fetch, plan and apply every DURATION (e.g. `1m`) until SIGTERM or SIGINT.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub interval: Option<std::time::Duration>,
    /// Stop after N ticks, exiting with the last tick's code (for tests).
    #[arg(long, value_name = "N", hide = true)]
    pub max_ticks: Option<u64>,
    /// How long to wait for another apply's lock, e.g. `30s`, `5m`.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: std::time::Duration,
    /// Serve Prometheus metrics on `/metrics` (and the health probes
    /// `/livez`, `/readyz`) at ADDR, e.g. `0.0.0.0:9464`; with `--interval` only.
    #[arg(
        long,
        value_name = "ADDR",
        requires = "interval",
        help_heading = "Operations"
    )]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Serve only the health probes `/livez` and `/readyz` at ADDR (a port
    /// of their own, so scrapes never delay probes); with `--interval` only.
    #[arg(
        long,
        value_name = "ADDR",
        requires = "interval",
        help_heading = "Operations"
    )]
    pub health_addr: Option<std::net::SocketAddr>,
    /// After each run, write its outcome (commit, config digest, clusters per
    /// state, the first 50 failing clusters) to the ConfigMap
    /// `relayctl-status-<instance>` in the relay namespace of the management
    /// cluster (Kubernetes only; the directory backend keeps none). A shard
    /// of a sharded run writes `relayctl-status-<instance>-shard-<i>`
    /// instead, with or without this flag.
    #[arg(long, help_heading = "Operations")]
    pub status_configmap: bool,
    /// Do not record Kubernetes Events for created, renewed, repaired and
    /// deleted Secrets and for conflicts.
    #[arg(long, help_heading = "Operations")]
    pub no_events: bool,
    /// Shared fleet flags.
    #[command(flatten)]
    pub fleet: FleetArgs,
}
