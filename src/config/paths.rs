//! Paths in manifests, judged by their text alone (the shell resolves
//! symlinks afterwards, see `crate::files`).
//!
//! A manifest may name files only inside the config folder or the Git
//! checkout it was read from: whoever can push a manifest must not be able
//! to make `/etc/hostname` or the pod's service-account token the identity
//! token of every cluster.

use std::path::{Component, Path, PathBuf};

/// `path` with `.` and `..` resolved lexically (no file system access).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Whether `path`, relative to the folder `base`, stays inside `root` by
/// its text: absolute paths never do, and `..` may not climb out of `root`.
pub fn confine(root: &Path, base: &Path, path: &Path) -> bool {
    if path.is_absolute() {
        return false;
    }
    let root = normalize(root);
    let joined = normalize(&base.join(path));
    joined.starts_with(&root) && !joined.components().any(|c| c == Component::ParentDir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_root_by_their_text_are_refused() {
        let root = Path::new("config");
        let base = Path::new("config/clusters");
        assert!(confine(root, base, Path::new("material/root.crt")));
        assert!(confine(root, base, Path::new("../material/root.crt")));
        assert!(!confine(root, base, Path::new("../../etc/hostname")));
        assert!(!confine(root, base, Path::new("/etc/hostname")));
        assert!(!confine(
            root,
            base,
            Path::new("../../../../var/run/secrets/kubernetes.io/serviceaccount/token")
        ));
    }
}
