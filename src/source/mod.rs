//! Where manifest bytes come from: a local file or folder (Git comes later).
//!
//! This module reads files and nothing else; it never parses YAML. It returns
//! the files in a stable order (sorted by path) with the names that messages
//! should show.

use std::path::{Path, PathBuf};

use crate::config::ManifestFile;

/// Reading manifests from the local file system failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The path given does not exist or cannot be read.
    #[error("cannot read manifests at `{path}`")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A manifest file is not UTF-8.
    #[error("manifest `{path}` is not UTF-8 text")]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
}

/// Reads one manifest file, or every `*.yaml`/`*.yml` below a folder
/// (recursively, hidden entries skipped), sorted by path.
pub fn read_local(path: &Path) -> Result<Vec<ManifestFile>, SourceError> {
    let meta = std::fs::metadata(path).map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    if meta.is_dir() {
        collect(path, &mut files)?;
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    files
        .into_iter()
        .map(|file| {
            let bytes = std::fs::read(&file).map_err(|source| SourceError::Read {
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
        if path.is_dir() {
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
