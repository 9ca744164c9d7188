//! The embedded default backend: a cluster is a folder of Secret manifests.
//!
//! `<folder>/<namespace>/<name>.yaml` holds a Kubernetes `v1/Secret` with
//! base64 `data`, so the files can be `kubectl apply`-ed as they are. Writes
//! go to a temporary file that is fsynced and renamed over the target, so a
//! crash leaves the old or the new file, never half of one. Files are 0600 and
//! folders 0700. An object's version is a digest of its file.
//!
//! The state directory holds the root key, so it is guarded like a key
//! store. Only `<name>.yaml` of the Secrets asked for is read (a stray copy
//! such as `backup.yaml` is reported, never taken for the real one); Secret
//! files must be regular files of this user with mode 0600, folders must be
//! this user's and writable by nobody else, and a cluster or namespace folder
//! may not be a symlink out of the state directory. Anything else is refused
//! (or, with `--fix-permissions`, tightened with a warning), because a Secret
//! planted by another local user would otherwise hand its root to every
//! workload. The lock file is opened without following symlinks and never
//! truncated or written: who holds it is recorded in a file beside it.
//!
//! The custody checks are in `guard`, the file format and the atomic write in
//! `file`, the lock in `lock`; this module ties them into the [`Backend`].

mod file;
mod guard;
mod lock;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Backend, BackendError, LockGuard};
use crate::files;
use crate::observed::{ClusterObservation, Registration};
use crate::plan::{Action, Write};

pub use self::file::parse_secret_file;
use self::file::{
    alive, parse_registration_file, render, render_registration, temp_owner, version_of,
    write_atomic,
};
use self::guard::safe_name;

/// A folder standing in for one cluster.
#[derive(Debug, Clone)]
pub struct DirectoryBackend {
    root: PathBuf,
    /// The state directory this folder must stay inside (after symlinks),
    /// when it is one of its clusters.
    state_root: Option<PathBuf>,
    /// Tighten loose permissions (with a warning) instead of refusing.
    fix_permissions: bool,
}

impl DirectoryBackend {
    /// A backend rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            state_root: None,
            fix_permissions: false,
        }
    }

    /// A backend for a cluster folder that must stay inside `state_root`.
    pub fn in_state_dir(root: impl Into<PathBuf>, state_root: impl Into<PathBuf>) -> Self {
        Self {
            state_root: Some(state_root.into()),
            ..Self::new(root)
        }
    }

    /// Tighten loose permissions with a warning instead of refusing them.
    pub fn fixing_permissions(mut self, fix: bool) -> Self {
        self.fix_permissions = fix;
        self
    }

    /// `<folder>/<namespace>/kubernetesclusters/`: registrations, one
    /// `KubernetesCluster` manifest per workload.
    fn registrations_dir(&self, namespace: &str) -> PathBuf {
        self.root
            .join(namespace)
            .join(crate::relay::registration::PLURAL)
    }

    fn file(&self, namespace: &str, name: &str) -> PathBuf {
        self.root.join(namespace).join(format!("{name}.yaml"))
    }

    fn refused(path: &Path, reason: String) -> BackendError {
        BackendError::Refused {
            path: path.to_path_buf(),
            reason,
        }
    }

    /// How this storage is known whatever path reached it: the namespace
    /// folder's device and inode when it exists (a bind mount or symlink
    /// leads to the same), and its resolved path.
    fn identities(&self, namespace: &str) -> std::collections::BTreeSet<String> {
        let dir = self.root.join(namespace);
        let mut out = std::collections::BTreeSet::new();
        out.insert(format!("path:{}", files::resolve(&dir).display()));
        if let Ok(meta) = fs::metadata(&dir) {
            out.insert(format!("inode:{}:{}", meta.dev(), meta.ino()));
        } else if let Ok(meta) = fs::metadata(&self.root) {
            out.insert(format!("inode:{}:{}/{namespace}", meta.dev(), meta.ino()));
        }
        out
    }
}

impl Backend for DirectoryBackend {
    fn describe(&self) -> String {
        format!("directory `{}`", self.root.display())
    }

    fn target(&self) -> String {
        // Resolved through existing symlinks (the folder may not exist yet):
        // `a/./b/../c`, `/abs/a/c` and a symlink to it are the same target.
        files::resolve(&self.root).display().to_string()
    }

    fn observe(
        &self,
        namespace: &str,
        _instance: &str,
        names: &[String],
    ) -> Result<ClusterObservation, BackendError> {
        let mut observation = ClusterObservation {
            identities: self.identities(namespace),
            ..ClusterObservation::default()
        };
        if !self.guard_path_to(namespace)? {
            return Ok(observation);
        }
        let dir = self.root.join(namespace);
        for name in names.iter().filter(|n| safe_name(n)) {
            let path = self.file(namespace, name);
            let Some(bytes) = self.read_secret_file(&path)? else {
                continue;
            };
            let bytes = zeroize::Zeroizing::new(bytes);
            let object = parse_secret_file(&path, &bytes)?;
            if object.name != *name || object.namespace != namespace {
                return Err(BackendError::Corrupt {
                    path,
                    reason: format!(
                        "it holds Secret `{}/{}`, not `{namespace}/{name}`: a file holds the Secret its name says",
                        crate::text::printable(&object.namespace),
                        crate::text::printable(&object.name)
                    ),
                });
            }
            observation.secrets.insert(object.name.clone(), object);
        }
        let entries = fs::read_dir(&dir).map_err(|source| BackendError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = file_name.strip_suffix(".yaml") else {
                continue;
            };
            if file_name.starts_with('.')
                || names.iter().any(|n| n == stem)
                || (stem.starts_with("relayctl-") && stem.ends_with("-inventory"))
            {
                continue;
            }
            observation.warnings.push(format!(
                "stray file `{}` is ignored: relayctl reads only `<name>.yaml` of the relay Secrets; remove it or move it out of the folder",
                crate::text::printable(&entry.path().display().to_string())
            ));
        }
        Ok(observation)
    }

    fn write(&self, write: &Write) -> Result<Option<String>, BackendError> {
        let object = &write.object;
        if !safe_name(&object.name) {
            return Err(Self::refused(
                &self.root,
                format!(
                    "`{}` is not a Secret name",
                    crate::text::printable(&object.name)
                ),
            ));
        }
        self.guard_path_to(&object.namespace)?;
        let path = self.file(&object.namespace, &object.name);
        let current = self
            .read_secret_file(&path)?
            .map(|bytes| version_of(&zeroize::Zeroizing::new(bytes)));
        if current != write.precondition {
            return Err(BackendError::Stale {
                namespace: object.namespace.clone(),
                name: object.name.clone(),
            });
        }
        match write.action {
            Action::Delete => fs::remove_file(&path)
                .map(|()| None)
                .map_err(|source| BackendError::Write { path, source }),
            Action::Create | Action::Update => {
                let bytes = zeroize::Zeroizing::new(render(object));
                write_atomic(&path, &bytes)?;
                Ok(Some(version_of(&bytes)))
            }
            Action::NoOp | Action::Conflict | Action::Error => Ok(current),
        }
    }

    fn observe_registrations(
        &self,
        namespace: &str,
    ) -> Result<BTreeMap<String, Registration>, BackendError> {
        let mut out = BTreeMap::new();
        if !self.guard_path_to(namespace)? {
            return Ok(out);
        }
        let dir = self.registrations_dir(namespace);
        if !self.guard_folder(&dir)? {
            return Ok(out);
        }
        let entries = fs::read_dir(&dir).map_err(|source| BackendError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = file_name.strip_suffix(".yaml") else {
                continue;
            };
            if file_name.starts_with('.') || !safe_name(stem) {
                continue;
            }
            let path = entry.path();
            let Some(bytes) = self.read_secret_file(&path)? else {
                continue;
            };
            let registration = parse_registration_file(&path, &bytes)?;
            if registration.name != stem || registration.namespace != namespace {
                return Err(BackendError::Corrupt {
                    path,
                    reason: "a file holds the KubernetesCluster its name says".to_owned(),
                });
            }
            out.insert(registration.name.clone(), registration);
        }
        Ok(out)
    }

    fn write_registration(
        &self,
        write: &crate::plan::RegistrationWrite,
    ) -> Result<(), BackendError> {
        let wanted = &write.registration;
        if !safe_name(&wanted.name) {
            return Err(Self::refused(
                &self.root,
                format!(
                    "`{}` is not a cluster name",
                    crate::text::printable(&wanted.name)
                ),
            ));
        }
        self.guard_path_to(&wanted.namespace)?;
        let dir = self.registrations_dir(&wanted.namespace);
        self.guard_folder(&dir)?;
        let path = dir.join(format!("{}.yaml", wanted.name));
        let current = self
            .read_secret_file(&path)?
            .map(|bytes| version_of(&zeroize::Zeroizing::new(bytes)));
        if current != write.precondition {
            return Err(BackendError::Stale {
                namespace: wanted.namespace.clone(),
                name: crate::relay::registration::change_name(&wanted.name),
            });
        }
        match write.action {
            Action::Delete => {
                fs::remove_file(&path).map_err(|source| BackendError::Write { path, source })
            }
            Action::Create | Action::Update => {
                write_atomic(&path, render_registration(wanted).as_bytes())
            }
            Action::NoOp | Action::Conflict | Action::Error => Ok(()),
        }
    }

    fn sweep(&self, namespace: &str) -> Result<usize, BackendError> {
        let dir = self.root.join(namespace);
        if !self.guard_path_to(namespace)? {
            return Ok(0);
        }
        let entries = fs::read_dir(&dir).map_err(|source| BackendError::Read {
            path: dir.clone(),
            source,
        })?;
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = temp_owner(&name) else {
                continue;
            };
            if alive(pid) && pid != std::process::id() {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(BackendError::Write {
                        path: entry.path(),
                        source,
                    });
                }
            }
        }
        Ok(removed)
    }

    fn lock(
        &self,
        _namespace: &str,
        instance: &str,
        holder: &str,
        timeout: Duration,
    ) -> Result<Box<dyn LockGuard>, BackendError> {
        self.take_lock(instance, holder, timeout)
    }
}

/// The Secret and the write the tests of every part of the backend start from.
#[cfg(test)]
mod fixtures {

    use super::DirectoryBackend;
    use crate::backend::Backend as _;
    use crate::observed::{LABEL_INSTANCE, SecretObject};
    use crate::plan::{Action, Write};
    use crate::secret::SecretBytes;

    pub(super) fn object(name: &str) -> SecretObject {
        SecretObject {
            namespace: "gloo-mesh".into(),
            name: name.into(),
            labels: crate::observed::SmallMap::from_iter([(LABEL_INSTANCE.into(), "prod".into())]),
            annotations: Default::default(),
            data: crate::observed::SmallMap::from_iter([(
                "token".into(),
                SecretBytes::from("abc".to_owned()),
            )]),
            version: String::new(),
        }
    }

    pub(super) fn create(backend: &DirectoryBackend, name: &str) -> Option<String> {
        backend
            .write(&Write {
                action: Action::Create,
                object: object(name),
                precondition: None,
                chained: false,
            })
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::create;
    use super::*;

    #[test]
    fn a_stray_copy_is_reported_and_not_read_and_a_misnamed_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let backend = DirectoryBackend::new(dir.path().join("mgmt"));
        create(&backend, "t");
        let folder = dir.path().join("mgmt/gloo-mesh");
        fs::copy(folder.join("t.yaml"), folder.join("backup.yaml")).unwrap();
        let seen = backend.observe("gloo-mesh", "prod", &["t".into()]).unwrap();
        assert_eq!(seen.secrets.len(), 1);
        assert!(
            seen.warnings[0].contains("backup.yaml"),
            "{:?}",
            seen.warnings
        );
        fs::rename(folder.join("backup.yaml"), folder.join("u.yaml")).unwrap();
        let err = backend
            .observe("gloo-mesh", "prod", &["t".into(), "u".into()])
            .unwrap_err();
        assert!(matches!(err, BackendError::Corrupt { .. }), "{err}");
    }
}
