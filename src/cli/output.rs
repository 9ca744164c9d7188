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
