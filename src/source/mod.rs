//! Where manifest bytes come from: a local file or folder, or a Git commit.
//!
//! This module reads files and nothing else; it never parses YAML. It returns
//! the files in a stable order (sorted by path) with the names that messages
//! should show, and the [`Provenance`] that goes into the source annotation of
//! every written Secret and into plans. [`ConfigSource`] is the seam: commands
//! take one and never care which kind it is.

pub mod git;

use std::path::{Path, PathBuf};

use crate::config::ManifestFile;

pub use git::{GitSource, RepoUrl};

/// Where the manifests are read from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A manifest file or folder on this machine.
    Local(PathBuf),
    /// A folder (or file) at a ref of a Git repository.
    Git(GitSource),
}

/// Where manifests came from, for annotations, plans and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// A path, or `<repo>@<commit>` with credentials stripped.
    pub label: String,
    /// The full commit id, for Git sources.
    pub commit: Option<String>,
    /// Manifest paths start with this folder (the exported tree of a Git
    /// commit); messages show paths relative to it.
    pub root: Option<PathBuf>,
}

impl Provenance {
    /// `path` as messages show it: relative to the repository for Git sources.
    pub fn display_path(&self, path: &Path) -> PathBuf {
        match &self.root {
            Some(root) => path.strip_prefix(root).unwrap_or(path).to_path_buf(),
            None => path.to_path_buf(),
        }
    }
}

/// Manifests and where they came from.
#[derive(Debug)]
pub struct Loaded {
    /// The manifest files, sorted by path.
    pub files: Vec<ManifestFile>,
    /// Their provenance.
    pub provenance: Provenance,
    /// The folder that paths in the manifests must stay inside: the config
    /// folder (a single file's folder), or the whole Git checkout.
    pub root: PathBuf,
}

impl ConfigSource {
    /// Reads every manifest (fetching first, for Git).
    pub fn read(&self) -> Result<Loaded, SourceError> {
        match self {
            Self::Local(path) => Ok(Loaded {
                files: read_local(path)?,
                provenance: Provenance {
                    label: path.display().to_string(),
                    commit: None,
                    root: None,
                },
                root: if path.is_dir() {
                    path.clone()
                } else {
                    match path.parent() {
                        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                        _ => PathBuf::from("."),
                    }
                },
            }),
            Self::Git(git) => {
                let read = git.read().map_err(|e| SourceError::Git(Box::new(e)))?;
                Ok(Loaded {
                    files: read.files,
                    provenance: Provenance {
                        label: format!("{}@{}", git.url.without_credentials(), read.commit),
                        commit: Some(read.commit),
                        root: Some(read.root.clone()),
                    },
                    root: read.root,
                })
            }
        }
    }

    /// This source pinned to what `provenance` read, so a second read sees the
    /// same commit even when the ref moved meanwhile.
    pub fn pinned(&self, provenance: &Provenance) -> Self {
        match (self, &provenance.commit) {
            (Self::Git(git), Some(commit)) => Self::Git(git.at_commit(commit)),
            _ => self.clone(),
        }
    }

    /// For messages: the path, or `<redacted url> (ref <ref>, path <path>)`.
    pub fn describe(&self) -> String {
        match self {
            Self::Local(path) => format!("`{}`", path.display()),
            Self::Git(git) => {
                let mut out = format!("`{}` at `{}`", git.url, git.reference);
                if !git.path.as_os_str().is_empty() {
                    out.push_str(&format!(", path `{}`", git.path.display()));
                }
                out
            }
        }
    }
}

/// Reading manifests failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading from Git failed.
    #[error(transparent)]
    Git(Box<git::GitError>),
    /// The path given does not exist or cannot be read.
    #[error("cannot read manifests at `{path}`")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A manifest file cannot be read: outside the config folder, not a
    /// regular file, too large.
    #[error("cannot read manifest `{path}`")]
    Manifest {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::files::FileError,
    },
    /// A manifest file is not UTF-8.
    #[error("manifest `{path}` is not UTF-8 text")]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
}

/// Largest manifest file read.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Reads one manifest file, or every `*.yaml`/`*.yml` below a folder
/// (recursively, hidden entries skipped), sorted by path. Below a folder,
/// symlinks are followed only while they stay inside it, and every manifest
/// must be a regular file of at most [`MAX_MANIFEST_BYTES`].
pub fn read_local(path: &Path) -> Result<Vec<ManifestFile>, SourceError> {
    let meta = std::fs::metadata(path).map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    let root = meta.is_dir().then_some(path);
    if meta.is_dir() {
        collect(path, &mut files)?;
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    files
        .into_iter()
        .map(|file| {
            let read = match root {
                Some(root) => crate::files::read_confined(root, &file, MAX_MANIFEST_BYTES),
                None => std::fs::canonicalize(&file)
                    .map_err(|source| crate::files::FileError::Io {
                        path: file.clone(),
                        source,
                    })
                    .and_then(|real| crate::files::read_regular(&real, MAX_MANIFEST_BYTES)),
            };
            let bytes = read.map_err(|source| SourceError::Manifest {
                path: file.clone(),
                source,
            })?;
            let text = String::from_utf8(bytes)
                .map_err(|_| SourceError::NotUtf8 { path: file.clone() })?;
            Ok(ManifestFile { path: file, text })
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SourceError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| SourceError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // Folders are entered only when they are folders, not symlinks to
        // one: a link to `/` would otherwise make every YAML file of the host
        // part of the config.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            collect(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}
