//! Kubeconfig files as read for one fleet: each file (or the default
//! kubeconfig) read and parsed once, indexed by context, and narrowed to
//! one context's cluster and user when a client is built from it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kube::config::{Kubeconfig, KubeconfigError};

use crate::files::FileError;

/// What failed underneath a connection that cannot be set up.
pub(super) type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a kubeconfig cannot be read. The parser's message can quote the
/// file, which may not be a kubeconfig at all, so this names only what went
/// wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum Unreadable {
    /// The operating system refused.
    #[error(transparent)]
    Io(Arc<std::io::Error>),
    /// Not a regular file of bounded size.
    #[error(transparent)]
    File(Arc<FileError>),
    /// Not text.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// Text, but not a kubeconfig.
    #[error("not a valid kubeconfig")]
    Invalid,
}

/// Reads a kubeconfig file named by a manifest or `--kubeconfig`: a regular
/// file of bounded size (a FIFO must not hang the run).
fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, Unreadable> {
    const MAX_KUBECONFIG: usize = 4 * 1024 * 1024;
    let real = std::fs::canonicalize(path).map_err(|e| Unreadable::Io(Arc::new(e)))?;
    let bytes = zeroize::Zeroizing::new(
        crate::files::read_regular(&real, MAX_KUBECONFIG).map_err(|e| match e {
            FileError::Io { source, .. } => Unreadable::Io(Arc::new(source)),
            other => Unreadable::File(Arc::new(other)),
        })?,
    );
    let text = std::str::from_utf8(&bytes).map_err(|_| Unreadable::NotUtf8)?;
    Kubeconfig::from_yaml(text).map_err(|_| Unreadable::Invalid)
}

/// The kubeconfig of `KUBECONFIG` or `~/.kube/config`.
fn read_default_kubeconfig() -> Result<Kubeconfig, Unreadable> {
    Kubeconfig::read().map_err(|e| match e {
        KubeconfigError::ReadConfig(io, _) => Unreadable::Io(Arc::new(io)),
        _ => Unreadable::Invalid,
    })
}

/// A parsed kubeconfig with its contexts, clusters and users indexed by name.
pub(super) struct Indexed {
    pub(super) file: Kubeconfig,
    contexts: HashMap<String, usize>,
    clusters: HashMap<String, usize>,
    users: HashMap<String, usize>,
}

impl Indexed {
    fn new(file: Kubeconfig) -> Self {
        // The first of a repeated name wins, as in kube's own lookup.
        fn index<'a>(names: impl Iterator<Item = &'a String>) -> HashMap<String, usize> {
            let mut out = HashMap::new();
            for (i, name) in names.enumerate() {
                out.entry(name.clone()).or_insert(i);
            }
            out
        }
        Self {
            contexts: index(file.contexts.iter().map(|c| &c.name)),
            clusters: index(file.clusters.iter().map(|c| &c.name)),
            users: index(file.auth_infos.iter().map(|a| &a.name)),
            file,
        }
    }

    /// The user (auth info) of `context`, if the context names one that exists.
    pub(super) fn user_of(&self, context: &str) -> Option<&kube::config::NamedAuthInfo> {
        let user = self.file.contexts[*self.contexts.get(context)?]
            .context
            .as_ref()?
            .user
            .as_ref()?;
        Some(&self.file.auth_infos[*self.users.get(user)?])
    }

    /// The credential plugin (`exec`, `auth-provider`) the user of `context`
    /// would run, if any.
    pub(super) fn credential_plugin(&self, context: &str) -> Option<&'static str> {
        let auth = self.user_of(context)?.auth_info.as_ref()?;
        if auth.exec.is_some() {
            Some("exec")
        } else if auth.auth_provider.is_some() {
            Some("auth-provider")
        } else {
            None
        }
    }

    /// A kubeconfig holding only `context`, its cluster and its user (and
    /// the file's preferences and extensions): what kube needs to build that
    /// context's client, without copying every other context's.
    pub(super) fn only(&self, context: &str) -> Option<Kubeconfig> {
        let named = &self.file.contexts[*self.contexts.get(context)?];
        let inner = named.context.as_ref();
        let cluster = inner
            .map(|c| &c.cluster)
            .and_then(|name| self.clusters.get(name))
            .map(|&i| self.file.clusters[i].clone());
        let user = self.user_of(context).cloned();
        Some(Kubeconfig {
            preferences: self.file.preferences.clone(),
            clusters: cluster.into_iter().collect(),
            auth_infos: user.into_iter().collect(),
            contexts: vec![named.clone()],
            current_context: Some(context.to_owned()),
            extensions: self.file.extensions.clone(),
            kind: self.file.kind.clone(),
            api_version: self.file.api_version.clone(),
            other: self.file.other.clone(),
        })
    }
}

/// One kubeconfig file as read: parsed and indexed, or why not.
type ReadKubeconfig = Result<Arc<Indexed>, Unreadable>;

/// Kubeconfig files read for one fleet: each file (or the default
/// kubeconfig) is read and parsed once, however many clusters name it.
#[derive(Default)]
pub(super) struct Kubeconfigs {
    /// By canonical path; `None` is the default kubeconfig.
    read: Mutex<BTreeMap<Option<PathBuf>, ReadKubeconfig>>,
}

impl std::fmt::Debug for Kubeconfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubeconfigs").finish_non_exhaustive()
    }
}

impl Kubeconfigs {
    /// The kubeconfig at `path` (`None`: the default one), read on first use.
    pub(super) fn get(&self, path: Option<&Path>) -> Result<Arc<Indexed>, Unreadable> {
        let key = path.map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
        let mut read = self
            .read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        read.entry(key)
            .or_insert_with(|| {
                match path {
                    Some(path) => read_kubeconfig(path),
                    None => read_default_kubeconfig(),
                }
                .map(|file| Arc::new(Indexed::new(file)))
            })
            .clone()
    }
}

/// Where a kubeconfig came from, for messages.
pub(super) fn kubeconfig_source(explicit: Option<&Path>) -> String {
    match explicit {
        Some(path) => format!("`{}`", path.display()),
        None => match std::env::var_os("KUBECONFIG") {
            Some(value) if !value.is_empty() => {
                format!("`KUBECONFIG` (`{}`)", value.to_string_lossy())
            }
            _ => "`~/.kube/config`".to_owned(),
        },
    }
}
