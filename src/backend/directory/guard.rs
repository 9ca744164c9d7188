//! The custody checks of the state directory: what must hold of a folder or a
//! Secret file before anything in it is trusted.
//!
//! The state directory holds the root key, so it is guarded like a key store
//! (the module doc of the backend argues each rule). Every read and write of
//! the backend goes through [`DirectoryBackend::guard_path_to`] and
//! [`DirectoryBackend::read_secret_file`]; with `--fix-permissions` loose
//! modes are tightened with a warning instead of refused.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use super::DirectoryBackend;
use crate::backend::BackendError;
use crate::files;

/// Largest Secret manifest file read.
const MAX_SECRET_FILE: usize = 4 * 1024 * 1024;

impl DirectoryBackend {
    /// Checks a folder of the state (the state root, a cluster or a namespace
    /// folder) before anything in it is trusted. `Ok(false)`: it does not exist.
    pub(super) fn guard_folder(&self, path: &Path) -> Result<bool, BackendError> {
        let link = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(BackendError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        if link.file_type().is_symlink()
            && let Some(state_root) = &self.state_root
        {
            let target = files::resolve(path);
            if !target.starts_with(files::resolve(state_root)) {
                return Err(Self::refused(
                    path,
                    format!(
                        "is a symlink to `{}`, outside the state directory",
                        target.display()
                    ),
                ));
            }
        }
        let meta = fs::metadata(path).map_err(|source| BackendError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(Self::refused(
                path,
                format!("is {}, not a folder", files::kind_of(&meta)),
            ));
        }
        self.guard_owner(path, &meta)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            let fixed = mode & !0o077;
            self.tighten(
                path,
                mode,
                fixed | 0o700,
                "folder is group- or world-writable",
            )?;
        }
        Ok(true)
    }

    /// Checks a Secret file before it is read: a regular file of this user,
    /// readable by nobody else.
    fn guard_file(&self, path: &Path, meta: &fs::Metadata) -> Result<(), BackendError> {
        if !meta.is_file() {
            return Err(Self::refused(
                path,
                format!(
                    "is {}; Secret files must be regular files",
                    files::kind_of(meta)
                ),
            ));
        }
        self.guard_owner(path, meta)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            self.tighten(
                path,
                mode,
                0o600,
                "Secret file is readable or writable by others",
            )?;
        }
        Ok(())
    }

    fn guard_owner(&self, path: &Path, meta: &fs::Metadata) -> Result<(), BackendError> {
        if files::owned_by_us(meta) {
            return Ok(());
        }
        Err(Self::refused(
            path,
            format!(
                "is owned by uid {}, not by this user (uid {}): another user could have planted it",
                meta.uid(),
                files::current_uid()
            ),
        ))
    }

    fn tighten(&self, path: &Path, mode: u32, to: u32, what: &str) -> Result<(), BackendError> {
        if !self.fix_permissions {
            return Err(Self::refused(
                path,
                format!(
                    "has mode {mode:04o}: {what}; run `chmod {to:o} {}` or pass `--fix-permissions`",
                    path.display()
                ),
            ));
        }
        fs::set_permissions(path, fs::Permissions::from_mode(to)).map_err(|source| {
            BackendError::Write {
                path: path.to_path_buf(),
                source,
            }
        })?;
        tracing::warn!(path = %path.display(), from = %format!("{mode:04o}"), to = %format!("{to:04o}"), "{what}; tightened its permissions (--fix-permissions)");
        Ok(())
    }

    /// The folders guarded before a read or write: the state root, the
    /// cluster folder and the namespace folder. Whether the namespace
    /// folder exists.
    pub(super) fn guard_path_to(&self, namespace: &str) -> Result<bool, BackendError> {
        if let Some(state_root) = &self.state_root {
            self.guard_folder(state_root)?;
        }
        if !self.guard_folder(&self.root)? {
            return Ok(false);
        }
        self.guard_folder(&self.root.join(namespace))
    }

    /// Reads the Secret file at `path`, if it exists, after guarding it.
    pub(super) fn read_secret_file(&self, path: &Path) -> Result<Option<Vec<u8>>, BackendError> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(BackendError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        self.guard_file(path, &meta)?;
        files::read_regular(path, MAX_SECRET_FILE)
            .map(Some)
            .map_err(|e| match e {
                files::FileError::Io { source, .. } => BackendError::Read {
                    path: path.to_path_buf(),
                    source,
                },
                other => Self::refused(path, other.to_string()),
            })
    }
}

/// Whether `name` can be a file name of this backend (Secret names are
/// DNS subdomains; anything else never reaches the disk).
pub(super) fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::backend::Backend as _;
    use crate::backend::directory::fixtures::create;

    #[test]
    fn a_secret_file_planted_with_loose_permissions_is_refused_or_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let backend = DirectoryBackend::new(dir.path().join("mgmt"));
        create(&backend, "t");
        let file = dir.path().join("mgmt/gloo-mesh/t.yaml");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let err = backend
            .observe("gloo-mesh", "prod", &["t".into()])
            .unwrap_err();
        assert!(err.to_string().contains("t.yaml"), "{err}");
        let fixing = backend.clone().fixing_permissions(true);
        fixing.observe("gloo-mesh", "prod", &["t".into()]).unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_group_writable_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let backend = DirectoryBackend::new(dir.path().join("mgmt"));
        create(&backend, "t");
        fs::set_permissions(
            dir.path().join("mgmt/gloo-mesh"),
            fs::Permissions::from_mode(0o770),
        )
        .unwrap();
        let err = backend
            .observe("gloo-mesh", "prod", &["t".into()])
            .unwrap_err();
        assert!(
            matches!(err, BackendError::Refused { .. }) && err.to_string().contains("gloo-mesh"),
            "{err}"
        );
    }

    #[test]
    fn a_cluster_folder_symlinked_out_of_the_state_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir_all(&state).unwrap();
        fs::create_dir_all(&elsewhere).unwrap();
        for p in [&state, &elsewhere] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o700)).unwrap();
        }
        std::os::unix::fs::symlink(&elsewhere, state.join("cluster-1")).unwrap();
        let backend = DirectoryBackend::in_state_dir(state.join("cluster-1"), &state);
        let err = backend.observe("gloo-mesh", "prod", &[]).unwrap_err();
        assert!(
            err.to_string().contains("outside the state directory"),
            "{err}"
        );
    }
}
