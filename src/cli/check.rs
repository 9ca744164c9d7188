//! `check`: read the manifests, observe every cluster, check, render. Writes
//! nothing and takes no lock.

use std::io::Write as _;

use time::OffsetDateTime;

use super::args::{CheckArgs, CheckFormat};
use super::{CliError, Outcome, Settings};
use crate::check;

/// Runs `relayctl check`: exit 0 when no check failed (warnings do not
/// fail), 1 otherwise.
pub(crate) fn check_command(settings: &Settings, args: &CheckArgs) -> Result<Outcome, CliError> {
    let source = settings.config_source(args.path.as_deref(), &args.git)?;
    let loaded = super::fleet::load_config(settings, &source)?;
    let config = &loaded.config;
    let (_, observed) = super::fleet::observe_fleet(settings, config)?;
    let now = args.at.unwrap_or_else(OffsetDateTime::now_utc);
    let mut report = check::check(config, &observed, &crate::pki::OsKeySource, now);
    if let Some(count) = args.shards {
        let placement = super::shard::placement(&loaded, count)?;
        let (backends, _) = crate::backend::backends(config, &settings.reach);
        let statuses = match backends.get(&config.management.name) {
            Some(mgmt) => super::shard::read_statuses(
                mgmt.as_ref(),
                config.namespace.as_str(),
                config.instance.as_str(),
                count,
            ),
            None => crate::shard::ShardStatuses::new(),
        };
        report.add_lines(crate::shard::coverage(config, &placement, &statuses));
    }
    let text = match args.output {
        CheckFormat::Text => check::render_text(&report, super::colour(), settings.verbose),
        CheckFormat::Json => check::render_json(&report) + "\n",
        CheckFormat::Prometheus => {
            crate::metrics::observation_text(&crate::metrics::observation_of_report(&report, now))
        }
        CheckFormat::Html => check::html::render_html(&report, now),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)?;
    Ok(if report.passed() {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}
