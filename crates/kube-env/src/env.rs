//! [`KubeEnv`]: the environment as tests see it — started once per test
//! binary, torn down when the process exits however it exits.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use tempfile::TempDir;

use crate::Error;
use crate::binaries::Binaries;
use crate::launch::{self, Cluster, Proc};
use crate::process::{self, Lifetime};

/// Prefix of the temporary directories of tied environments; lets a later
/// run sweep the directories of test processes that were SIGKILLed.
const TEMP_PREFIX: &str = "relayctl-kube-env-";
/// File in such a directory naming the process that owns it.
const OWNER_FILE: &str = "owner.pid";

/// One etcd and N kube-apiservers on 127.0.0.1, with a kubeconfig whose
/// contexts are `mgmt`, `cluster-1`, …, `cluster-(N-1)`.
///
/// Every process is killed when the test process ends — normally, by panic
/// or by signal — because each is spawned with `PR_SET_PDEATHSIG=SIGKILL`
/// from a thread that lives as long as the process.
pub struct KubeEnv {
    bins: Binaries,
    root: PathBuf,
    clusters: Vec<Cluster>,
    kubeconfig: PathBuf,
    procs: Mutex<Vec<Proc>>,
    pids: Vec<u32>,
    minted: AtomicUsize,
    /// Removed on drop, after the processes stop (fields drop after `drop`).
    _tempdir: TempDir,
}

impl std::fmt::Debug for KubeEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeEnv")
            .field("root", &self.root)
            .field("clusters", &self.clusters)
            .field("pids", &self.pids)
            .finish_non_exhaustive()
    }
}

static SHARED: OnceLock<Result<KubeEnv, String>> = OnceLock::new();

impl KubeEnv {
    /// The environment of this test binary, started on first use with
    /// `apiservers` apiservers (0 counts as 1) and shared by every test.
    ///
    /// Blocks while it starts (seconds; minutes if the binaries must be
    /// built first). Panics with the full error chain if it cannot start —
    /// tests that need Kubernetes fail, they never skip — and if a later call
    /// asks for a different number of apiservers.
    pub fn shared(apiservers: usize) -> &'static KubeEnv {
        let env = SHARED.get_or_init(|| {
            let env = KubeEnv::start(apiservers).map_err(|e| error_chain(&e))?;
            // SAFETY: registers a plain `extern "C" fn` with no arguments;
            // atexit(3) has no other preconditions.
            unsafe {
                libc::atexit(stop_shared_at_exit);
            }
            Ok(env)
        });
        match env {
            Ok(env) => {
                assert_eq!(
                    env.clusters.len(),
                    apiservers.max(1),
                    "the shared kube-env of this test binary was started with {} apiservers; \
                     every caller of `KubeEnv::shared` must ask for the same number",
                    env.clusters.len()
                );
                env
            }
            Err(chain) => panic!("start the shared kube-env: {chain}"),
        }
    }

    /// Starts a private environment with `apiservers` apiservers (0 counts
    /// as 1) in a fresh
    /// temporary directory; dropping it stops the processes and removes the
    /// directory. Prefer [`KubeEnv::shared`]: every environment costs
    /// seconds and ~300 MiB per apiserver.
    pub fn start(apiservers: usize) -> Result<KubeEnv, Error> {
        let bins = Binaries::locate()?;
        sweep_orphaned_tempdirs();
        let tempdir = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempdir()
            .map_err(|source| Error::Dir {
                path: std::env::temp_dir(),
                source,
            })?;
        let root = tempdir.path().to_owned();
        launch::write_private(&root.join(OWNER_FILE), &std::process::id().to_string())?;
        let launched = launch::launch(&bins, &root, apiservers.max(1), Lifetime::TiedToProcess)?;
        let pids = launched.procs.iter().map(|p| p.child.id()).collect();
        Ok(KubeEnv {
            bins,
            root,
            clusters: launched.clusters,
            kubeconfig: launched.kubeconfig,
            procs: Mutex::new(launched.procs),
            pids,
            minted: AtomicUsize::new(0),
            _tempdir: tempdir,
        })
    }

    /// The kubeconfig with an admin (`O=system:masters`) context per cluster.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The clusters in context order: `mgmt` first.
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// Context names in order: `mgmt`, `cluster-1`, …
    pub fn contexts(&self) -> Vec<&str> {
        self.clusters.iter().map(Cluster::context).collect()
    }

    /// The cluster behind `context`.
    pub fn cluster(&self, context: &str) -> Result<&Cluster, Error> {
        self.clusters
            .iter()
            .find(|c| c.context() == context)
            .ok_or_else(|| Error::UnknownContext {
                context: context.to_owned(),
                available: self.contexts().join(", "),
            })
    }

    /// Writes a kubeconfig for a new user `user` in `groups` (at most
    /// [`crate::MAX_GROUPS`]) of the cluster behind `context`, whose client
    /// certificate that cluster's CA signs. Its only context is named
    /// `context`. The user starts with no RBAC permissions.
    pub fn user_kubeconfig(
        &self,
        context: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<PathBuf, Error> {
        let cluster = self.cluster(context)?;
        let client = cluster.mint_client_cert(user, groups)?;
        let n = self.minted.fetch_add(1, Ordering::Relaxed);
        let file_name: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let dir = self.root.join("users");
        launch::create_dir(&dir)?;
        let path = dir.join(format!("{context}-{n}-{file_name}.kubeconfig"));
        launch::write_private(&path, &cluster.kubeconfig_for(user, &client))?;
        Ok(path)
    }

    /// The binaries this environment runs, and the matching `kubectl`.
    pub fn binaries(&self) -> &Binaries {
        &self.bins
    }

    /// The environment's directory (certificates, logs, etcd data).
    pub fn dir(&self) -> &Path {
        &self.root
    }
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        launch::stop_all(self.procs.get_mut().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Runs at process exit: statics are never dropped, so the shared
/// environment's processes are killed and its directory removed here.
/// PDEATHSIG would kill the processes anyway; this also reaps them first so
/// the directory can go.
extern "C" fn stop_shared_at_exit() {
    if let Some(Ok(env)) = SHARED.get() {
        for pid in env.pids.iter().rev() {
            process::kill_and_reap(*pid);
        }
        let _ = fs::remove_dir_all(&env.root);
    }
}

/// Removes temporary directories left by test processes that died without
/// running their exit handlers (their processes died with them).
fn sweep_orphaned_tempdirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let owner = fs::read_to_string(entry.path().join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = owner
            && !process::is_alive(pid)
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// `error: caused by: …` on one line, for panics.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str("\ncaused by: ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
