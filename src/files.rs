//! Reading files that the configuration names, and only those.
//!
//! A manifest is written by whoever can push to the repository; the machine
//! that reads it holds the root CA and the credentials of every cluster. So a
//! path in a manifest may reach only the config folder (or the Git checkout):
//! [`crate::config::paths::confine`] refuses absolute paths and `..` that leave it before anything
//! is opened, and [`read_confined`] resolves symlinks and refuses what then
//! lands outside. Whatever is read must be a regular file, and no more than a
//! bound is ever read, whatever `stat` claims: a FIFO would hang the run and
//! `/dev/zero` would fill memory.

use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::config::paths::normalize;

/// Why a named file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path leaves the folder it must stay in.
    #[error("`{path}` is outside `{root}`")]
    Outside {
        /// The path as resolved.
        path: PathBuf,
        /// The folder it must stay in.
        root: PathBuf,
    },
    /// Not a regular file (a folder, FIFO, socket or device).
    #[error("`{path}` is not a regular file ({kind})")]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Larger than the bound.
    #[error("`{path}` holds more than {max} bytes")]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The bound.
        max: usize,
    },
    /// The operating system refused.
    #[error("cannot read `{path}`")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Canonical form of `path` when it exists, else of its nearest existing
/// ancestor with the rest appended: the same folder reached through
/// different spellings or symlinks compares equal.
pub fn resolve(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let absolute = normalize(&absolute);
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = std::fs::canonicalize(existing) {
            let mut out = canonical;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// Reads the regular file `path`, which must resolve (symlinks followed)
/// inside `root`, reading at most `max` bytes.
pub fn read_confined(root: &Path, path: &Path, max: usize) -> Result<Vec<u8>, FileError> {
    let resolved = std::fs::canonicalize(path).map_err(|source| FileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let root = resolve(root);
    if !resolved.starts_with(&root) {
        return Err(FileError::Outside {
            path: resolved,
            root,
        });
    }
    read_regular(&resolved, max)
}

/// Reads the regular file `path` without following a symlink in its last
/// component, reading at most `max` bytes (counted, not trusted from `stat`).
pub fn read_regular(path: &Path, max: usize) -> Result<Vec<u8>, FileError> {
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: the
    // file checked is the file read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nonblock_nofollow())
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                FileError::NotRegular {
                    path: path.to_path_buf(),
                    kind: "symlink",
                }
            } else {
                io(source)
            }
        })?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(&meta),
        });
    }
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > max {
        zeroize::Zeroize::zeroize(&mut bytes);
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(bytes)
}

/// Open flags that never block on a FIFO and never follow a final symlink.
pub fn nonblock_nofollow() -> i32 {
    let flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW;
    i32::try_from(flags.bits()).unwrap_or(0)
}

/// A word for what a non-regular file is.
pub fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    let kind = meta.file_type();
    if kind.is_file() {
        "a file"
    } else if kind.is_dir() {
        "a folder"
    } else if kind.is_symlink() {
        "a symlink"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// The effective user id of this process.
pub fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether `meta` is owned by this process's user.
pub fn owned_by_us(meta: &std::fs::Metadata) -> bool {
    meta.uid() == current_uid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("root.crt");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let err = read_confined(dir.path(), &fifo, 1024).unwrap_err();
        assert!(
            matches!(err, FileError::NotRegular { kind: "a FIFO", .. }),
            "{err}"
        );
    }

    #[test]
    fn devices_are_refused_and_reading_is_bounded_by_bytes_read() {
        let err = read_regular(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(matches!(err, FileError::NotRegular { .. }), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 2048]).unwrap();
        assert!(matches!(
            read_regular(&big, 1024),
            Err(FileError::TooLarge { .. })
        ));
        assert_eq!(read_regular(&big, 4096).unwrap().len(), 2048);
    }

    #[test]
    fn a_symlink_out_of_the_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("config");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(dir.path().join("secret"), "outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("token")).unwrap();
        let err = read_confined(&root, &root.join("token"), 1024).unwrap_err();
        assert!(matches!(err, FileError::Outside { .. }), "{err}");
        // A symlink that stays inside is followed.
        std::fs::write(root.join("real"), "inside").unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("alias")).unwrap();
        assert_eq!(
            read_confined(&root, &root.join("alias"), 1024).unwrap(),
            b"inside"
        );
    }

    #[test]
    fn the_same_folder_resolves_the_same_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mgmt")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("mgmt"), dir.path().join("alias")).unwrap();
        assert_eq!(
            resolve(&dir.path().join("alias/gloo-mesh")),
            resolve(&dir.path().join("mgmt/./gloo-mesh"))
        );
    }
}
