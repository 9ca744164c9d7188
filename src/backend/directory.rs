//! The embedded default backend: a cluster is a folder of Secret manifests.
//!
//! `<folder>/<namespace>/<name>.yaml` holds a Kubernetes `v1/Secret` with
//! base64 `data`, so the files can be `kubectl apply`-ed as they are. Writes
//! go to a temporary file that is fsynced and renamed over the target, so a
//! crash leaves the old or the new file, never half of one. Files are 0600 and
//! folders 0700. An object's version is a digest of its file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Backend, BackendError, LockGuard};
use crate::observed::{ClusterObservation, LABEL_INSTANCE, SecretObject};
use crate::plan::{Action, Write};
use crate::secret::SecretBytes;

/// A folder standing in for one cluster.
#[derive(Debug, Clone)]
pub struct DirectoryBackend {
    root: PathBuf,
}

impl DirectoryBackend {
    /// A backend rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn file(&self, namespace: &str, name: &str) -> PathBuf {
        self.root.join(namespace).join(format!("{name}.yaml"))
    }

    fn lock_file(&self, instance: &str) -> PathBuf {
        self.root.join(format!(".relayctl-{instance}.lock"))
    }
}

/// The file form of a Secret. Not `Debug`: `data` holds the values.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretFile {
    api_version: String,
    kind: String,
    metadata: Metadata,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    type_: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Metadata {
    name: String,
    namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

fn version_of(bytes: &[u8]) -> String {
    format!("sha256:{}", &hex::encode(Sha256::digest(bytes))[..16])
}

fn parse(path: &Path, bytes: &[u8]) -> Result<SecretObject, BackendError> {
    let corrupt = |reason: String| BackendError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8".to_owned()))?;
    // The parser's message may quote the document; only its position is kept.
    let file: SecretFile = serde_saphyr::from_str(text).map_err(|err| {
        corrupt(match err.location() {
            Some(loc) => format!("YAML error at line {} column {}", loc.line(), loc.column()),
            None => "YAML error".to_owned(),
        })
    })?;
    if file.kind != "Secret" || file.api_version != "v1" {
        return Err(corrupt(format!(
            "kind `{}` / apiVersion `{}`, want `Secret` / `v1`",
            file.kind, file.api_version
        )));
    }
    let mut data = BTreeMap::new();
    for (key, value) in file.data {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| corrupt(format!("data key `{key}` is not base64")))?;
        data.insert(key, SecretBytes::new(decoded));
    }
    Ok(SecretObject {
        namespace: file.metadata.namespace,
        name: file.metadata.name,
        labels: file.metadata.labels,
        annotations: file.metadata.annotations,
        data,
        version: version_of(bytes),
    })
}

fn render(object: &SecretObject) -> Vec<u8> {
    let file = SecretFile {
        api_version: "v1".to_owned(),
        kind: "Secret".to_owned(),
        metadata: Metadata {
            name: object.name.clone(),
            namespace: object.namespace.clone(),
            labels: object.labels.clone(),
            annotations: object.annotations.clone(),
        },
        type_: Some("Opaque".to_owned()),
        data: object
            .data
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    base64::engine::general_purpose::STANDARD.encode(v.expose()),
                )
            })
            .collect(),
    };
    let text = serde_saphyr::to_string(&file).unwrap_or_default();
    zeroize::Zeroizing::new(text).as_bytes().to_vec()
}

fn create_dirs(path: &Path) -> Result<(), BackendError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| BackendError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes `bytes` to `path` atomically with mode 0600.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BackendError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dirs(dir)?;
    let err = |source| BackendError::Write {
        path: path.to_path_buf(),
        source,
    };
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{nonce}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("secret"),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

impl Backend for DirectoryBackend {
    fn describe(&self) -> String {
        format!("directory `{}`", self.root.display())
    }

    fn target(&self) -> String {
        // Absolute and normalised without touching the disk (the folder may
        // not exist yet): `a/./b/../c` and `/abs/a/c` are the same target.
        let absolute = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        let mut parts: Vec<std::path::Component<'_>> = Vec::new();
        for component in absolute.components() {
            match component {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        parts.iter().collect::<PathBuf>().display().to_string()
    }

    fn observe(
        &self,
        namespace: &str,
        instance: &str,
        names: &[String],
    ) -> Result<ClusterObservation, BackendError> {
        let dir = self.root.join(namespace);
        let mut observation = ClusterObservation::default();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(observation),
            Err(source) => return Err(BackendError::Read { path: dir, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| BackendError::Read {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') || !file_name.ends_with(".yaml") {
                continue;
            }
            let bytes =
                zeroize::Zeroizing::new(fs::read(&path).map_err(|source| BackendError::Read {
                    path: path.clone(),
                    source,
                })?);
            let object = parse(&path, &bytes)?;
            let wanted = names.contains(&object.name)
                || object
                    .labels
                    .get(LABEL_INSTANCE)
                    .is_some_and(|i| i == instance);
            if wanted {
                observation.secrets.insert(object.name.clone(), object);
            }
        }
        Ok(observation)
    }

    fn write(&self, write: &Write) -> Result<(), BackendError> {
        let object = &write.object;
        let path = self.file(&object.namespace, &object.name);
        let current = match fs::read(&path) {
            Ok(bytes) => Some(version_of(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(BackendError::Read { path, source }),
        };
        if current != write.precondition {
            return Err(BackendError::Stale {
                namespace: object.namespace.clone(),
                name: object.name.clone(),
            });
        }
        match write.action {
            Action::Delete => {
                fs::remove_file(&path).map_err(|source| BackendError::Write { path, source })
            }
            Action::Create | Action::Update => {
                let bytes = zeroize::Zeroizing::new(render(object));
                write_atomic(&path, &bytes)
            }
            Action::NoOp | Action::Conflict | Action::Error => Ok(()),
        }
    }

    fn lock(
        &self,
        _namespace: &str,
        instance: &str,
        holder: &str,
        timeout: Duration,
    ) -> Result<Box<dyn LockGuard>, BackendError> {
        // An OS advisory lock (flock) on the lock file: the kernel releases it
        // when the holder's process ends however it ends, so there are no stale
        // locks to take over and no race between two waiters doing so. The
        // file's content only names the holder for messages.
        create_dirs(&self.root)?;
        let path = self.lock_file(instance);
        let write_err = |source| BackendError::Write {
            path: path.clone(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(write_err)?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) => {
                    if started.elapsed() >= timeout {
                        let existing: Option<LockRecord> = fs::read(&path)
                            .ok()
                            .and_then(|b| serde_json::from_slice(&b).ok());
                        let holder = existing
                            .map(|r| {
                                format!(
                                    "held by `{}` (pid {}) since {}",
                                    r.holder,
                                    r.pid,
                                    unix_rfc3339(r.acquired)
                                )
                            })
                            .unwrap_or_else(|| format!("lock file `{}`", path.display()));
                        return Err(BackendError::Locked {
                            instance: instance.to_owned(),
                            holder,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(fs::TryLockError::Error(source)) => return Err(write_err(source)),
            }
        }
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
        file.set_len(0)
            .and_then(|()| {
                use std::io::Seek as _;
                file.rewind()
            })
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(write_err)?;
        Ok(Box::new(DirectoryLock { file }))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct LockRecord {
    holder: String,
    pid: u32,
    acquired: u64,
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
}

impl LockGuard for DirectoryLock {}

impl Drop for DirectoryLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Sets 0700 on a folder the user made by hand, if it is looser (best effort).
pub fn tighten(path: &Path) {
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str) -> SecretObject {
        SecretObject {
            namespace: "gloo-mesh".into(),
            name: name.into(),
            labels: BTreeMap::from([(LABEL_INSTANCE.into(), "prod".into())]),
            annotations: BTreeMap::new(),
            data: BTreeMap::from([("token".into(), SecretBytes::from("abc".to_owned()))]),
            version: String::new(),
        }
    }

    #[test]
    fn writes_are_atomic_private_and_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let backend = DirectoryBackend::new(dir.path().join("mgmt"));
        backend
            .write(&Write {
                action: Action::Create,
                object: object("t"),
                precondition: None,
            })
            .unwrap();
        let file = dir.path().join("mgmt/gloo-mesh/t.yaml");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(dir.path().join("mgmt/gloo-mesh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let seen = backend.observe("gloo-mesh", "prod", &[]).unwrap();
        let t = &seen.secrets["t"];
        assert_eq!(t.get("token").unwrap().expose(), b"abc");
        // A write with a stale precondition is refused.
        let stale = Write {
            action: Action::Update,
            object: object("t"),
            precondition: Some("sha256:0000".into()),
        };
        assert!(matches!(
            backend.write(&stale),
            Err(BackendError::Stale { .. })
        ));
        // No temporary files are left behind.
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("mgmt/gloo-mesh"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
    }

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
        drop(guard);
        backend
            .lock("ns", "prod", "second-run", Duration::from_millis(300))
            .unwrap();
    }

    #[test]
    fn a_lock_of_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let backend = DirectoryBackend::new(dir.path());
        let record = LockRecord {
            holder: "crashed".into(),
            pid: u32::MAX - 1,
            acquired: 0,
        };
        fs::write(
            dir.path().join(".relayctl-prod.lock"),
            serde_json::to_string(&record).unwrap(),
        )
        .unwrap();
        backend
            .lock("ns", "prod", "next", Duration::from_millis(100))
            .unwrap();
    }
}
