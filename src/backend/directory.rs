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

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt as _, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Backend, BackendError, LockGuard};
use crate::files;
use crate::observed::{ClusterObservation, Registration, SecretObject};
use crate::plan::{Action, Write};
use crate::secret::SecretBytes;

/// Largest Secret manifest file read.
const MAX_SECRET_FILE: usize = 4 * 1024 * 1024;

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

    fn file(&self, namespace: &str, name: &str) -> PathBuf {
        self.root.join(namespace).join(format!("{name}.yaml"))
    }

    fn lock_file(&self, instance: &str) -> PathBuf {
        self.root.join(format!(".relayctl-{instance}.lock"))
    }

    /// `<folder>/<namespace>/kubernetesclusters/`: registrations, one
    /// `KubernetesCluster` manifest per workload.
    fn registrations_dir(&self, namespace: &str) -> PathBuf {
        self.root
            .join(namespace)
            .join(crate::relay::registration::PLURAL)
    }

    fn holder_file(&self, instance: &str) -> PathBuf {
        self.root.join(format!(".relayctl-{instance}.holder"))
    }

    fn refused(path: &Path, reason: String) -> BackendError {
        BackendError::Refused {
            path: path.to_path_buf(),
            reason,
        }
    }

    /// Checks a folder of the state (the state root, a cluster or a namespace
    /// folder) before anything in it is trusted. `Ok(false)`: it does not exist.
    fn guard_folder(&self, path: &Path) -> Result<bool, BackendError> {
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
    fn guard_path_to(&self, namespace: &str) -> Result<bool, BackendError> {
        if let Some(state_root) = &self.state_root {
            self.guard_folder(state_root)?;
        }
        if !self.guard_folder(&self.root)? {
            return Ok(false);
        }
        self.guard_folder(&self.root.join(namespace))
    }

    /// Reads the Secret file at `path`, if it exists, after guarding it.
    fn read_secret_file(&self, path: &Path) -> Result<Option<Vec<u8>>, BackendError> {
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

/// Parses one Secret manifest file of the directory backend. Errors name the
/// file and never quote its content.
pub fn parse_secret_file(path: &Path, bytes: &[u8]) -> Result<SecretObject, BackendError> {
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
            crate::text::printable(&file.kind),
            crate::text::printable(&file.api_version)
        )));
    }
    let mut data = BTreeMap::new();
    for (key, value) in file.data {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| {
                corrupt(format!(
                    "data key `{}` is not base64",
                    crate::text::printable(&key)
                ))
            })?;
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

/// The file form of a `KubernetesCluster`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistrationFile {
    api_version: String,
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    spec: RegistrationSpec,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistrationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster_domain: Option<String>,
}

fn parse_registration_file(path: &Path, bytes: &[u8]) -> Result<Registration, BackendError> {
    use crate::relay::registration::{GROUP, KIND, VERSION};
    let corrupt = |reason: String| BackendError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8".to_owned()))?;
    let file: RegistrationFile = serde_saphyr::from_str(text).map_err(|err| {
        corrupt(match err.location() {
            Some(loc) => format!("YAML error at line {} column {}", loc.line(), loc.column()),
            None => "YAML error".to_owned(),
        })
    })?;
    if file.kind != KIND || file.api_version != format!("{GROUP}/{VERSION}") {
        return Err(corrupt(format!("not a `{GROUP}/{VERSION}` `{KIND}`")));
    }
    Ok(Registration {
        namespace: file.metadata.namespace,
        name: file.metadata.name,
        labels: file.metadata.labels,
        cluster_domain: file.spec.cluster_domain,
        version: version_of(bytes),
    })
}

fn render_registration(registration: &Registration) -> String {
    use crate::relay::registration::{GROUP, KIND, VERSION};
    let file = RegistrationFile {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.to_owned(),
        metadata: Metadata {
            name: registration.name.clone(),
            namespace: registration.namespace.clone(),
            labels: registration.labels.clone(),
            annotations: BTreeMap::new(),
        },
        spec: RegistrationSpec {
            cluster_domain: registration.cluster_domain.clone(),
        },
    };
    serde_saphyr::to_string(&file).unwrap_or_default()
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

/// Marks the temporary files of [`write_atomic`]: `.<file>.tmp-<pid>-<nonce>`.
const TEMP_MARK: &str = ".tmp-";

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
        ".{}{TEMP_MARK}{}-{nonce}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("secret"),
        std::process::id()
    ));
    let result = (|| {
        // `create_new` (O_EXCL) never follows a planted symlink.
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

/// The pid in a temporary file's name, if it is one of ours.
fn temp_owner(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?;
    let (_, after) = rest.split_once(TEMP_MARK)?;
    after.split('-').next()?.parse().ok()
}

/// Whether process `pid` exists (another user's process counts).
fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

/// Whether `name` can be a file name of this backend (Secret names are
/// DNS subdomains; anything else never reaches the disk).
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
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
        // An OS advisory lock (flock) on the lock file: the kernel releases it
        // when the holder's process ends however it ends, so there are no stale
        // locks to take over and no race between two waiters doing so.
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
    use super::*;
    use crate::observed::LABEL_INSTANCE;

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

    fn create(backend: &DirectoryBackend, name: &str) -> Option<String> {
        backend
            .write(&Write {
                action: Action::Create,
                object: object(name),
                precondition: None,
                chained: false,
            })
            .unwrap()
    }

    #[test]
    fn writes_are_atomic_private_and_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let backend = DirectoryBackend::new(dir.path().join("mgmt"));
        let version = create(&backend, "t");
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
        let seen = backend.observe("gloo-mesh", "prod", &["t".into()]).unwrap();
        let t = &seen.secrets["t"];
        assert_eq!(t.get("token").unwrap().expose(), b"abc");
        assert_eq!(Some(&t.version), version.as_ref());
        // A write with a stale precondition is refused.
        let stale = Write {
            action: Action::Update,
            object: object("t"),
            precondition: Some("sha256:0000".into()),
            chained: false,
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

    #[test]
    fn temp_files_of_dead_runs_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let backend = DirectoryBackend::new(dir.path().join("mgmt"));
        create(&backend, "t");
        let folder = dir.path().join("mgmt/gloo-mesh");
        let dead = folder.join(format!(".t.yaml{TEMP_MARK}{}-1", u32::MAX - 1));
        let live = folder.join(format!(".t.yaml{TEMP_MARK}1-1"));
        fs::write(&dead, "key material").unwrap();
        fs::write(&live, "pid 1 is alive").unwrap();
        assert_eq!(backend.sweep("gloo-mesh").unwrap(), 1);
        assert!(!dead.exists());
        assert!(live.exists());
    }
}
