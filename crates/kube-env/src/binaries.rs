//! Finds `etcd`, `kube-apiserver` and `kubectl`: the directory named by
//! `RELAYCTL_KUBE_ENV_BIN`, or whatever `tools/kube-env/build.sh` prints —
//! which builds them on a cache miss. Never skips: a missing binary is an
//! error.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

/// Environment variable naming a directory that holds the three binaries.
pub const BIN_DIR_ENV: &str = "RELAYCTL_KUBE_ENV_BIN";

/// The build script, relative to this crate's manifest.
const BUILD_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/kube-env/build.sh");

/// Where the control-plane binaries live.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Locates (building on a cache miss) the binaries.
    pub fn locate() -> Result<Self, Error> {
        let dir = match std::env::var_os(BIN_DIR_ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => run_build_script()?,
        };
        let bins = Self { dir };
        for name in ["etcd", "kube-apiserver", "kubectl"] {
            let path = bins.dir.join(name);
            if !path.is_file() {
                return Err(Error::MissingBinary { path });
            }
        }
        Ok(bins)
    }

    /// The directory holding the binaries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `etcd` binary.
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    /// The `kube-apiserver` binary.
    pub fn kube_apiserver(&self) -> PathBuf {
        self.dir.join("kube-apiserver")
    }

    /// The `kubectl` binary of the same Kubernetes version.
    pub fn kubectl(&self) -> PathBuf {
        self.dir.join("kubectl")
    }
}

fn run_build_script() -> Result<PathBuf, Error> {
    let script = PathBuf::from(BUILD_SCRIPT);
    // stderr is inherited: a cold build takes minutes and reports progress.
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| Error::BuildScript {
            script: script.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::BuildScriptFailed {
            script,
            status: output.status,
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => Ok(PathBuf::from(line.trim())),
        None => Err(Error::BuildScriptFailed {
            script,
            status: output.status,
        }),
    }
}
