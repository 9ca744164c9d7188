//! The lock that lets one run at a time work on a cluster folder.
//!
//! An OS advisory lock (`flock`) on `.relayctl-<instance>.lock`: the kernel
//! releases it when the holder's process ends however it ends, so there are no
//! stale locks to take over and no race between two waiters doing so. The
//! lock file is opened without following symlinks and never truncated or
//! written; who holds it is recorded in `.relayctl-<instance>.holder` beside
//! it, and a waiter that times out names the holder from the kernel's lock
//! table and that record.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::DirectoryBackend;
use super::file::{alive, create_dirs, write_atomic};
use crate::backend::{BackendError, LockGuard};
use crate::files;

impl DirectoryBackend {
    fn lock_file(&self, instance: &str) -> PathBuf {
        self.root.join(format!(".relayctl-{instance}.lock"))
    }

    fn holder_file(&self, instance: &str) -> PathBuf {
        self.root.join(format!(".relayctl-{instance}.holder"))
    }

    /// Takes the lock of `instance` for `holder`, waiting up to `timeout`.
    pub(super) fn take_lock(
        &self,
        instance: &str,
        holder: &str,
        timeout: Duration,
    ) -> Result<Box<dyn LockGuard>, BackendError> {
        if let Some(state_root) = &self.state_root {
            self.guard_folder(state_root)?;
        }
        let created = !self.guard_folder(&self.root)?;
        if created {
            create_dirs(&self.root)?;
        }
        let path = self.lock_file(instance);
        let started = Instant::now();
        let file = loop {
            let file = open_lock_file(&path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    if started.elapsed() >= timeout {
                        return Err(BackendError::Locked {
                            instance: instance.to_owned(),
                            holder: lock_holder(&path, &self.holder_file(instance)),
                        });
                    }
                    drop(file);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(fs::TryLockError::Error(source)) => {
                    return Err(BackendError::Write { path, source });
                }
            }
            // The lock counts only if the file locked is still the one at
            // the path: a releasing holder may have removed it meanwhile.
            if same_file(&file, &path) {
                break file;
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let record = LockRecord {
            holder: holder.to_owned(),
            pid: std::process::id(),
            acquired: now,
        };
        let text = serde_json::to_string(&record).unwrap_or_default();
        write_atomic(&self.holder_file(instance), text.as_bytes())?;
        Ok(Box::new(DirectoryLock {
            file,
            lock: path,
            record: self.holder_file(instance),
            folder: created.then(|| self.root.clone()),
        }))
    }
}

/// Opens (creating) the lock file without following a symlink and without
/// truncating it, and checks it is a regular file of this user.
fn open_lock_file(path: &Path) -> Result<fs::File, BackendError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(files::nonblock_nofollow())
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                DirectoryBackend::refused(
                    path,
                    "is a symlink; the lock file must be a regular file".to_owned(),
                )
            } else {
                BackendError::Write {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    let meta = file.metadata().map_err(|source| BackendError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() || !files::owned_by_us(&meta) {
        return Err(DirectoryBackend::refused(
            path,
            "is not a regular file of this user; refusing to lock through it".to_owned(),
        ));
    }
    Ok(file)
}

/// Whether the open `file` is the file at `path` (same device and inode).
fn same_file(file: &fs::File, path: &Path) -> bool {
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct LockRecord {
    holder: String,
    pid: u32,
    acquired: u64,
}

/// Who holds the lock file at `path`: the kernel's lock table names the
/// process for certain; the record written beside the file adds who and
/// since when, when it is that process's. "unknown" when neither tells.
fn lock_holder(path: &Path, record: &Path) -> String {
    let pid = fs::metadata(path)
        .ok()
        .and_then(|meta| flock_holder(meta.dev(), meta.ino()));
    let record: Option<LockRecord> = files::read_regular(record, 64 * 1024)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match (pid, record) {
        (Some(pid), Some(r)) if r.pid == pid => format!(
            "held by `{}` (pid {pid}) since {}",
            crate::text::printable(&r.holder),
            unix_rfc3339(r.acquired)
        ),
        (Some(pid), _) => format!("held by pid {pid} (it has not recorded who it is yet)"),
        (None, Some(r)) if alive(r.pid) => format!(
            "held by `{}` (pid {}) since {}",
            crate::text::printable(&r.holder),
            r.pid,
            unix_rfc3339(r.acquired)
        ),
        (None, _) => format!(
            "held by an unknown process (lock file `{}`)",
            path.display()
        ),
    }
}

/// The pid holding a `flock` on the file `dev`/`ino`, from `/proc/locks`.
fn flock_holder(dev: u64, ino: u64) -> Option<u32> {
    let table = fs::read_to_string("/proc/locks").ok()?;
    let want = format!(
        "{:02x}:{:02x}:{ino}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    );
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `1: FLOCK  ADVISORY  WRITE 4321 fd:01:1234567 0 EOF`; waiters
        // have `->` after the number.
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let id = fields.get(5)?;
        (*id == want || id.ends_with(&format!(":{ino}")) && same_device(id, dev))
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })
}

/// `/proc/locks` prints the device as `major:minor` in hex, with widths
/// that vary between kernels.
fn same_device(id: &str, dev: u64) -> bool {
    let mut parts = id.split(':');
    let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
        return false;
    };
    u32::from_str_radix(major, 16).ok() == Some(rustix::fs::major(dev))
        && u32::from_str_radix(minor, 16).ok() == Some(rustix::fs::minor(dev))
}

fn unix_rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Holds the flock; closing the file (on drop or process exit) releases it.
struct DirectoryLock {
    file: fs::File,
    lock: PathBuf,
    record: PathBuf,
    /// The cluster folder, when this lock created it: a run that wrote
    /// nothing leaves no folder behind.
    folder: Option<PathBuf>,
}

impl LockGuard for DirectoryLock {}

impl Drop for DirectoryLock {
    fn drop(&mut self) {
        if let Some(folder) = &self.folder {
            let only_the_lock = fs::read_dir(folder).is_ok_and(|entries| {
                entries.flatten().all(|e| {
                    let p = e.path();
                    p == self.lock || p == self.record
                })
            });
            if only_the_lock {
                // Removed while still locked; a waiter that opened the old
                // file notices it is gone (see `same_file`) and retries.
                let _ = fs::remove_file(&self.record);
                let _ = fs::remove_file(&self.lock);
                let _ = fs::remove_dir(folder);
            }
        }
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::backend::Backend as _;

    #[test]
    fn a_second_lock_waits_then_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let backend = DirectoryBackend::new(dir.path());
        let guard = backend
            .lock("ns", "prod", "first-run", Duration::from_secs(1))
            .unwrap();
        let started = Instant::now();
        let err = backend
            .lock("ns", "prod", "second-run", Duration::from_millis(300))
            .err()
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(err.to_string().contains("first-run"), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(guard);
        backend
            .lock("ns", "prod", "second-run", Duration::from_millis(300))
            .unwrap();
    }

    #[test]
    fn a_record_of_a_dead_process_is_not_named_as_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let backend = DirectoryBackend::new(dir.path());
        let record = LockRecord {
            holder: "crashed".into(),
            pid: u32::MAX - 1,
            acquired: 0,
        };
        fs::write(
            dir.path().join(".relayctl-prod.holder"),
            serde_json::to_string(&record).unwrap(),
        )
        .unwrap();
        // The dead holder's lock is free; once taken, the record is ours.
        let _guard = backend
            .lock("ns", "prod", "next", Duration::from_millis(100))
            .unwrap();
        let holder = lock_holder(
            &dir.path().join(".relayctl-prod.lock"),
            &dir.path().join(".relayctl-prod.holder"),
        );
        assert!(holder.contains("`next`"), "{holder}");
        assert!(!holder.contains("crashed"), "{holder}");
    }

    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let folder = dir.path().join("mgmt");
        fs::create_dir(&folder).unwrap();
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&victim, folder.join(".relayctl-prod.lock")).unwrap();
        let err = DirectoryBackend::new(&folder)
            .lock("ns", "prod", "me", Duration::from_millis(100))
            .err()
            .unwrap();
        assert!(matches!(err, BackendError::Refused { .. }), "{err}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn a_lock_that_created_the_folder_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let backend = DirectoryBackend::new(dir.path().join("mgmt"));
        let guard = backend
            .lock("ns", "prod", "me", Duration::from_millis(100))
            .unwrap();
        drop(guard);
        assert!(!dir.path().join("mgmt").exists());
    }
}
