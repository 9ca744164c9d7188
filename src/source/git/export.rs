//! A commit's tree, exported once to the cache.
//!
//! Manifests are read from the commit's tree, but relative `file:` sources in
//! them must resolve to files; so the tree is also written to
//! `<cache>/<digest>/trees/<commit>/` (files 0600, folders 0700) — to a
//! temporary folder first and renamed into place, so it is complete or absent.
//! Only the newest few exported trees are kept.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Repository, Tree};

use super::{GitError, GitSource, create_private_dir};

/// How many exported trees are kept per repository (the newest ones).
const KEPT_TREES: usize = 5;

impl GitSource {
    /// Exports `tree` to `<dir>/trees/<commit>` unless it is there already.
    pub(super) fn export(
        &self,
        repo: &Repository,
        tree: &Tree<'_>,
        dir: &Path,
        commit: &str,
    ) -> Result<PathBuf, GitError> {
        let trees = dir.join("trees");
        let target = trees.join(commit);
        let export_err = |path: &Path, source| GitError::Export {
            remote: self.url.clone(),
            commit: commit.to_owned(),
            path: path.to_path_buf(),
            source,
        };
        if target.is_dir() {
            return Ok(target);
        }
        create_private_dir(&trees).map_err(|e| export_err(&trees, e))?;
        let tmp = trees.join(format!(".tmp-{commit}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        create_private_dir(&tmp).map_err(|e| export_err(&tmp, e))?;
        if let Err(e) = write_tree(repo, tree, &tmp) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(export_err(&target, e));
        }
        if let Err(e) = std::fs::rename(&tmp, &target) {
            let _ = std::fs::remove_dir_all(&tmp);
            // Another run exported the same commit first.
            if !target.is_dir() {
                return Err(export_err(&target, e));
            }
        }
        prune_trees(&trees, commit);
        Ok(target)
    }
}

/// Writes `tree` below `dir` (files 0600, folders 0700; symlinks and
/// submodules skipped).
fn write_tree(repo: &Repository, tree: &Tree<'_>, dir: &Path) -> std::io::Result<()> {
    let git = |e: git2::Error| std::io::Error::other(e.message().to_owned());
    for entry in tree.iter() {
        let Ok(name) = entry.name() else { continue };
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name == ".git" {
            continue;
        }
        let path = dir.join(name);
        match entry.kind() {
            Some(ObjectType::Tree) => {
                create_private_dir(&path)?;
                write_tree(repo, &repo.find_tree(entry.id()).map_err(git)?, &path)?;
            }
            Some(ObjectType::Blob) if entry.filemode() != 0o120000 => {
                let blob = repo.find_blob(entry.id()).map_err(git)?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path)?;
                file.write_all(blob.content())?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Keeps the newest [`KEPT_TREES`] exported trees (and `current`).
fn prune_trees(trees: &Path, current: &str) {
    let Ok(entries) = std::fs::read_dir(trees) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !name.starts_with('.') && name != current
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort();
    let excess = found.len().saturating_sub(KEPT_TREES - 1);
    for (_, path) in found.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(path);
    }
}
