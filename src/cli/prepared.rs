//! What a run has read, observed and planned before it writes: the types
//! `plan`, `apply`, `reconcile` and their reports pass between them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::Backend;
use crate::config::ManifestFile;
use crate::model::{ClusterName, TrustConfig};
use crate::observed::Observed;
use crate::plan::Planned;
use crate::shard::{Placement, Shard};
use crate::source::{ConfigSource, Provenance};

/// A config read, observed and planned.
pub(crate) struct Prepared {
    /// The validated manifests.
    pub(crate) config: TrustConfig,
    pub(crate) backends: BTreeMap<ClusterName, Arc<dyn Backend>>,
    pub(crate) observed: Observed,
    pub(crate) planned: Planned,
    /// Where the manifests came from (the commit, for Git).
    pub(crate) provenance: Provenance,
    /// The source, pinned to the commit that was read.
    pub(crate) source: ConfigSource,
    /// Digest prefixes of the user's material, by role (never the values).
    pub(crate) material: BTreeMap<String, String>,
    /// A sharded run: which shard, the placement, what it waits for.
    pub(crate) shard: Option<ShardRun>,
}

/// Validated manifests and where they came from.
pub(crate) struct LoadedConfig {
    pub(crate) files: Vec<ManifestFile>,
    pub(crate) config: TrustConfig,
    pub(crate) provenance: Provenance,
    /// Paths in the manifests stay inside this folder.
    pub(crate) root: PathBuf,
}

/// What a sharded run knows besides its plan.
#[derive(Debug, Clone)]
pub(crate) struct ShardRun {
    /// Which shard this process is.
    pub(crate) shard: Shard,
    /// Where every workload cluster goes.
    pub(crate) placement: Placement,
    /// What mgmt lacks before this shard may write its clusters (always
    /// empty on shard 0).
    pub(crate) waiting: Vec<String>,
}
