//! Real multi-cluster Kubernetes control planes for relayctl's tests and for
//! trying relayctl locally (DESIGN.md §7): one etcd and N kube-apiservers,
//! built from Go modules by `tools/kube-env/build.sh`.
//!
//! Each apiserver has its own `--etcd-prefix`, its own CA, serving
//! certificate and admin client certificate (`O=system:masters`), and RBAC.
//! No controller-manager runs: namespaces are never finalized and nothing is
//! garbage-collected, so tests must not rely on either.
//!
//! - [`KubeEnv::shared`] — the environment of one test binary, killed with it.
//! - [`up`] / [`down`] — the same, detached, for the `kube-env` binary.
//!
//! Where things go: certificates in `pki`, processes and their lifetime in
//! `process`, readiness probes in `probe`, the start sequence in `launch`.

mod binaries;
mod detached;
mod env;
mod error;
mod kubeconfig;
mod launch;
mod pki;
mod probe;
mod process;

pub use binaries::{BIN_DIR_ENV, Binaries};
pub use detached::{Running, down, up};
pub use env::KubeEnv;
pub use error::Error;
pub use launch::{Cluster, context_name};
pub use pki::{CertAndKey, MAX_GROUPS};
