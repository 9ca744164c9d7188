//! The one error type of this crate: each variant is an operation that
//! failed, naming its object; the cause is attached, never interpolated.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use crate::pki::MAX_GROUPS;

/// Starting, using or stopping a test control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `tools/kube-env/build.sh` could not be run.
    #[error("run `{}` to build the control-plane binaries", script.display())]
    BuildScript {
        /// The script.
        script: PathBuf,
        /// Why it could not run.
        #[source]
        source: io::Error,
    },
    /// `tools/kube-env/build.sh` failed or printed no directory.
    #[error("`{}` failed ({status}); its output is above", script.display())]
    BuildScriptFailed {
        /// The script.
        script: PathBuf,
        /// How it exited.
        status: ExitStatus,
    },
    /// A control-plane binary is not where it should be.
    #[error("control-plane binary `{}` is missing (set `RELAYCTL_KUBE_ENV_BIN` or run `tools/kube-env/build.sh`)", path.display())]
    MissingBinary {
        /// The expected path.
        path: PathBuf,
    },
    /// Key or certificate generation failed.
    #[error("generate certificates for cluster `{cluster}`")]
    GenerateCerts {
        /// The context name of the cluster.
        cluster: String,
        /// What rcgen reported.
        #[source]
        source: rcgen::Error,
    },
    /// A minted user would carry more groups than supported.
    #[error("user `{user}` has {count} groups; a minted certificate holds at most {MAX_GROUPS}")]
    TooManyGroups {
        /// The user name.
        user: String,
        /// How many groups were asked for.
        count: usize,
    },
    /// A TLS client for the readiness probe could not be built.
    #[error("build the TLS client for cluster `{cluster}`")]
    TlsClient {
        /// The context name of the cluster.
        cluster: String,
        /// What rustls reported.
        #[source]
        source: io::Error,
    },
    /// A directory could not be created or cleaned.
    #[error("prepare directory `{}`", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file could not be written.
    #[error("write `{}`", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file could not be read.
    #[error("read `{}`", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// No free port could be found.
    #[error("pick a free port on 127.0.0.1")]
    FreePort {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A process could not be spawned.
    #[error("start {what}")]
    Spawn {
        /// `etcd` or `kube-apiserver for cluster-1`, …
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A process exited before it became ready.
    #[error("{what} exited before it was ready ({status}); last lines of `{}`:\n{tail}", log.display())]
    ExitedEarly {
        /// Which process.
        what: String,
        /// How it exited.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// A process did not become ready in time.
    #[error("{what} was not ready after {seconds}s; last lines of `{}`:\n{tail}", log.display())]
    NotReady {
        /// Which process.
        what: String,
        /// How long we waited.
        seconds: u64,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// A context name that this environment does not have.
    #[error("no context `{context}` in this environment (have: {available})")]
    UnknownContext {
        /// The requested context.
        context: String,
        /// The contexts that exist.
        available: String,
    },
    /// `kube-env up` into a directory whose environment still runs.
    #[error("`{}` already holds a running kube-env; run `kube-env down {}` first", dir.display(), dir.display())]
    AlreadyRunning {
        /// The directory.
        dir: PathBuf,
    },
    /// `kube-env up` into a non-empty directory it did not create.
    #[error("`{}` is not empty and was not made by kube-env; pick a new or empty directory", dir.display())]
    ForeignDir {
        /// The directory.
        dir: PathBuf,
    },
    /// Stopping a recorded process failed.
    #[error("stop {what} (pid {pid})")]
    Stop {
        /// Which process.
        what: String,
        /// Its pid.
        pid: u32,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}
