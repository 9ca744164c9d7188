//! The file form of a Secret and how it reaches the disk.
//!
//! A Secret file is a Kubernetes `v1/Secret` manifest with base64 `data`, so
//! it can be `kubectl apply`-ed as it is; its version is a digest of its bytes.
//! It is written to a temporary file (0600, `O_EXCL`), fsynced and renamed over
//! the target, so a crash leaves the old or the new file, never half of one;
//! the temporaries a crashed run left are recognised by their name for the
//! sweep.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::BackendError;
use crate::observed::{Registration, SecretObject, SmallMap};
use crate::secret::SecretBytes;

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
    #[serde(
        default,
        skip_serializing_if = "SmallMap::is_empty",
        serialize_with = "crate::observed::as_map"
    )]
    labels: SmallMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "SmallMap::is_empty",
        serialize_with = "crate::observed::as_map"
    )]
    annotations: SmallMap<String, String>,
}

pub(super) fn version_of(bytes: &[u8]) -> String {
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
    let mut data = SmallMap::with_capacity(file.data.len());
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

pub(super) fn parse_registration_file(
    path: &Path,
    bytes: &[u8],
) -> Result<Registration, BackendError> {
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

pub(super) fn render_registration(registration: &Registration) -> String {
    use crate::relay::registration::{GROUP, KIND, VERSION};
    let file = RegistrationFile {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.to_owned(),
        metadata: Metadata {
            name: registration.name.clone(),
            namespace: registration.namespace.clone(),
            labels: registration.labels.clone(),
            annotations: SmallMap::new(),
        },
        spec: RegistrationSpec {
            cluster_domain: registration.cluster_domain.clone(),
        },
    };
    serde_saphyr::to_string(&file).unwrap_or_default()
}

pub(super) fn render(object: &SecretObject) -> Vec<u8> {
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

pub(super) fn create_dirs(path: &Path) -> Result<(), BackendError> {
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
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BackendError> {
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
pub(super) fn temp_owner(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?;
    let (_, after) = rest.split_once(TEMP_MARK)?;
    after.split('-').next()?.parse().ok()
}

/// Whether process `pid` exists (another user's process counts).
pub(super) fn alive(pid: u32) -> bool {
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::backend::Backend as _;
    use crate::backend::directory::DirectoryBackend;
    use crate::backend::directory::fixtures::{create, object};
    use crate::plan::{Action, Write};

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
        let t = &seen.secrets.get("t").unwrap();
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
