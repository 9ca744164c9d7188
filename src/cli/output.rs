//! Messages on stderr: status lines and the error chain.

use std::error::Error as _;
use std::io::Write as _;

use super::CliError;

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `-q`: status lines are not printed (warnings and errors still are).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// A status line for humans, on stderr; silent under `-q`.
pub fn status(message: &str) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr(), "{message}");
    }
}

/// A warning for humans, on stderr (`-q` keeps it: it needs attention).
pub fn warning(message: &str) {
    let _ = writeln!(std::io::stderr(), "warning: {message}");
}

/// Prints `error: <top>`, one `caused by:` per source, then hints.
pub fn print_error(err: &CliError) {
    let mut stderr = std::io::stderr().lock();
    if matches!(err, CliError::InvalidConfig { .. }) {
        // The diagnostics above already said everything.
        let _ = writeln!(stderr, "error: {err}");
        return;
    }
    let _ = writeln!(stderr, "error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = writeln!(stderr, "  caused by: {cause}");
        source = cause.source();
    }
    if let CliError::StalePlan { moved } = err {
        for what in moved {
            let _ = writeln!(stderr, "  - {what}");
        }
    }
    if err.class() == super::ErrorClass::Bug {
        let _ = writeln!(
            stderr,
            "  note: this is a bug in relayctl; please report it with the output above (it holds no secret)"
        );
    }
    for hint in hints(err) {
        let _ = writeln!(stderr, "  hint: {hint}");
    }
}

fn hints(err: &CliError) -> Vec<String> {
    match err {
        CliError::Source(crate::source::SourceError::Read { .. }) => {
            vec!["pass a manifest file or a folder of `*.yaml` manifests".to_owned()]
        }
        CliError::SharedTarget { .. } => vec![
            "give every cluster its own connection (kubeconfig context, directory)".to_owned(),
            "registering the management cluster as its own workload is not supported yet: its agent reads mgmt's root and token Secrets as they are".to_owned(),
        ],
        _ => Vec::new(),
    }
}

static PROGRESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether progress bars are drawn: stderr is a terminal, no `-q`, no
/// `--log-format json` (decided once in `main`).
pub fn set_progress(enabled: bool) {
    PROGRESS.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

/// A progress bar over N clusters on stderr, with the count done and the
/// clusters that failed so far; nothing at all when bars are off.
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    failed: std::sync::Mutex<Vec<String>>,
}

/// How many failing clusters the bar names.
const FAILED_NAMED: usize = 3;

impl Progress {
    /// A bar for `what` (`observing`, `applying`) over `len` clusters.
    pub(crate) fn start(what: &'static str, len: usize) -> Self {
        let enabled = PROGRESS.load(std::sync::atomic::Ordering::Relaxed) && len > 0;
        let bar = enabled.then(|| {
            let style = indicatif::ProgressStyle::with_template(
                "{prefix:>9} [{bar:30}] {pos}/{len} clusters {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(len as u64),
                indicatif::ProgressDrawTarget::stderr(),
            )
            .with_style(style)
            .with_prefix(what);
            // Drawn once now: with a steady tick, indicatif draws only from
            // its ticker thread, and a phase over before that thread's first
            // tick would show no bar at all.
            bar.tick();
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            failed: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// One cluster is done; `failed` when it could not be read or written.
    pub(crate) fn done(&self, cluster: &str, failed: bool) {
        let Some(bar) = &self.bar else { return };
        if failed && let Ok(mut names) = self.failed.lock() {
            names.push(crate::text::printable(cluster).into_owned());
            let shown: Vec<&str> = names
                .iter()
                .take(FAILED_NAMED)
                .map(String::as_str)
                .collect();
            let more = names.len().saturating_sub(shown.len());
            bar.set_message(format!(
                "({} failed: {}{})",
                names.len(),
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        bar.inc(1);
    }

    /// A status line when there is no bar (the bar counts it instead).
    pub(crate) fn note(&self, line: &str) {
        if self.bar.is_none() {
            status(line);
        }
    }

    /// Prints a line above the bar (or plainly when there is none).
    pub(crate) fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => status(line),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
