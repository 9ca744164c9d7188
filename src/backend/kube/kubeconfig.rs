//! Kubeconfig files as read for one fleet: each file (or the default
//! kubeconfig) read and parsed once, indexed by context, and narrowed to
//! one context's cluster and user when a client is built from it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kube::config::Kubeconfig;

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

/// The largest kubeconfig file read: one context per cluster of a
/// 10,000-cluster fleet with embedded client certificates fits.
const MAX_KUBECONFIG: usize = 32 * 1024 * 1024;

/// Reads a kubeconfig file named by a manifest or `--kubeconfig` (or listed
/// in `KUBECONFIG`): a regular file of bounded size (a FIFO must not hang
/// the run).
fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, Unreadable> {
    let real = std::fs::canonicalize(path).map_err(|e| Unreadable::Io(Arc::new(e)))?;
    let bytes = zeroize::Zeroizing::new(
        crate::files::read_regular(&real, MAX_KUBECONFIG).map_err(|e| match e {
            FileError::Io { source, .. } => Unreadable::Io(Arc::new(source)),
            other => Unreadable::File(Arc::new(other)),
        })?,
    );
    let text = std::str::from_utf8(&bytes).map_err(|_| Unreadable::NotUtf8)?;
    parse_kubeconfig(text, path.parent())
}

/// Parses kubeconfig text: its YAML documents merged as kubectl merges
/// files, and the file paths inside made absolute against `dir`, the
/// file's folder, as kubectl resolves them.
///
/// The parser's budget grows with the text, which the caller has already
/// bounded: its default (250,000 nodes) refuses a kubeconfig of more than
/// about 9,500 contexts, and a fleet's kubeconfig can hold more.
fn parse_kubeconfig(text: &str, dir: Option<&Path>) -> Result<Kubeconfig, Unreadable> {
    let mut budget = serde_saphyr::Budget::default();
    // Every node takes at least two bytes of text, every event at least one.
    budget.max_nodes = budget.max_nodes.max(text.len() / 2);
    budget.max_events = budget.max_events.max(text.len());
    let options = serde_saphyr::options! { budget: Some(budget) };
    let documents: Vec<Kubeconfig> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|_| Unreadable::Invalid)?;
    documents
        .into_iter()
        .map(|mut file| {
            if let Some(dir) = dir {
                absolute_paths(&mut file, dir);
            }
            file
        })
        .try_fold(Kubeconfig::default(), Kubeconfig::merge)
        .map_err(|_| Unreadable::Invalid)
}

/// Makes the relative file paths of a kubeconfig (certificate authority,
/// client certificate and key, token file, a credential plugin's command
/// when it names a path) relative to `dir` instead of the working directory.
fn absolute_paths(file: &mut Kubeconfig, dir: &Path) {
    let absolute = |path: &mut Option<String>| {
        if let Some(relative) = path.as_deref().filter(|p| Path::new(p).is_relative())
            && let Some(joined) = dir.join(relative).to_str()
        {
            *path = Some(joined.to_owned());
        }
    };
    for cluster in file.clusters.iter_mut().filter_map(|c| c.cluster.as_mut()) {
        absolute(&mut cluster.certificate_authority);
    }
    for auth in file
        .auth_infos
        .iter_mut()
        .filter_map(|a| a.auth_info.as_mut())
    {
        absolute(&mut auth.client_certificate);
        absolute(&mut auth.client_key);
        absolute(&mut auth.token_file);
        // A bare command (`aws`) is looked up on PATH, as client-go does.
        if let Some(exec) = auth.exec.as_mut()
            && exec
                .command
                .as_deref()
                .is_some_and(|c| c.contains(std::path::MAIN_SEPARATOR))
        {
            absolute(&mut exec.command);
        }
    }
}

/// The kubeconfig of `KUBECONFIG` (its files merged, the first to name a
/// context winning) or `~/.kube/config`.
fn read_default_kubeconfig() -> Result<Kubeconfig, Unreadable> {
    let listed: Vec<PathBuf> = std::env::var_os("KUBECONFIG")
        .map(|value| {
            std::env::split_paths(&value)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let paths = if listed.is_empty() {
        let home = std::env::var_os("HOME").ok_or_else(|| {
            Unreadable::Io(Arc::new(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no KUBECONFIG and no HOME",
            )))
        })?;
        vec![PathBuf::from(home).join(".kube").join("config")]
    } else {
        listed
    };
    paths
        .iter()
        .try_fold(Kubeconfig::default(), |merged, path| {
            merged
                .merge(read_kubeconfig(path)?)
                .map_err(|_| Unreadable::Invalid)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig_of(contexts: usize) -> String {
        let mut clusters = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
        let mut users = String::from("users:\n");
        let mut named = String::from("contexts:\n");
        for i in 0..contexts {
            clusters.push_str(&format!(
                "- name: c{i}\n  cluster:\n    server: https://127.0.0.1:6443/c/cluster-{i}\n    certificate-authority: ca.crt\n"
            ));
            users.push_str(&format!(
                "- name: u{i}\n  user:\n    tokenFile: tokens/t{i}\n"
            ));
            named.push_str(&format!(
                "- name: ctx{i}\n  context:\n    cluster: c{i}\n    user: u{i}\n    namespace: gloo-mesh\n"
            ));
        }
        format!("{clusters}{users}{named}")
    }

    #[test]
    fn a_kubeconfig_of_twelve_thousand_contexts_is_read_whole() {
        // The parser's default budget stops near 9,500 contexts of this shape.
        let text = kubeconfig_of(12_000);
        let file = parse_kubeconfig(&text, None).expect("a valid kubeconfig");
        assert_eq!(file.contexts.len(), 12_000);
        let indexed = Indexed::new(file);
        let only = indexed.only("ctx11999").expect("the last context");
        assert_eq!(
            only.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
            Some("https://127.0.0.1:6443/c/cluster-11999")
        );
    }

    #[test]
    fn relative_paths_in_a_kubeconfig_are_relative_to_its_folder() {
        let file = parse_kubeconfig(&kubeconfig_of(1), Some(Path::new("/etc/fleet"))).unwrap();
        let cluster = file.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some("/etc/fleet/ca.crt")
        );
        let user = file.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.token_file.as_deref(), Some("/etc/fleet/tokens/t0"));
    }

    #[test]
    fn absolute_paths_and_bare_plugin_commands_are_left_alone() {
        let text = "users:\n- name: u\n  user:\n    client-certificate: /pki/u.crt\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n- name: v\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: bin/login\n";
        let file = parse_kubeconfig(text, Some(Path::new("/etc/fleet"))).unwrap();
        let u = file.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(u.client_certificate.as_deref(), Some("/pki/u.crt"));
        assert_eq!(u.exec.as_ref().unwrap().command.as_deref(), Some("aws"));
        let v = file.auth_infos[1].auth_info.as_ref().unwrap();
        assert_eq!(
            v.exec.as_ref().unwrap().command.as_deref(),
            Some("/etc/fleet/bin/login")
        );
    }

    #[test]
    fn documents_of_one_file_merge_the_first_name_winning() {
        let text = "contexts:\n- name: a\n  context: {cluster: one}\n---\ncontexts:\n- name: a\n  context: {cluster: two}\n- name: b\n  context: {cluster: three}\n";
        let file = parse_kubeconfig(text, None).unwrap();
        let clusters: Vec<_> = file
            .contexts
            .iter()
            .map(|c| c.context.as_ref().unwrap().cluster.clone())
            .collect();
        assert_eq!(clusters, ["one", "three"]);
    }

    #[test]
    fn text_that_is_not_a_kubeconfig_is_refused() {
        assert!(matches!(
            parse_kubeconfig("clusters: 7\n", None),
            Err(Unreadable::Invalid)
        ));
    }
}
