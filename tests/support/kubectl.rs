//! `kubectl` run the way a person would, for the tests on kube-env.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// `BIN --kubeconfig KUBECONFIG --context CONTEXT ARGS`, with `stdin` fed
/// to it: its stdout. Panics with its stderr when it fails.
#[track_caller]
pub(crate) fn kubectl(
    bin: &Path,
    kubeconfig: &Path,
    context: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> String {
    let mut child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", context])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write kubectl stdin");
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().expect("wait for kubectl");
    assert!(
        output.status.success(),
        "kubectl --context {context} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
