//! Reading material sources: files (confined to the config folder), the
//! environment (through an injected lookup) and observed Secrets. The only
//! part of [`crate::material`] that touches the file system.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Raw, Role, diagnostic, sources, token_problem};
use crate::config::Diagnostic;
use crate::config::diag::Code;
use crate::model::{ClusterName, MaterialSource, SourceKind, TrustConfig};
use crate::observed::Observed;
use crate::secret::SecretBytes;

/// Largest material file or variable accepted.
const MAX_MATERIAL_BYTES: usize = 1024 * 1024;

static EMPTY: std::sync::LazyLock<Observed> = std::sync::LazyLock::new(Observed::default);

/// Reads every source. `env` looks variables up through `getenv` (injected so
/// tests need not touch the process environment); `secret` sources are taken
/// from `observed`, or skipped when it is `None` (`validate` contacts no
/// cluster). Every unreadable source is a diagnostic at its field; what could
/// be read is returned either way, so its checks can be reported together.
pub fn load(
    config: &TrustConfig,
    getenv: &dyn Fn(&str) -> Option<String>,
    observed: Option<&Observed>,
    root: &Path,
) -> (Raw, Vec<Diagnostic>) {
    let mut material = Raw::default();
    let mut problems = Vec::new();
    let mut clients: BTreeMap<ClusterName, (Option<SecretBytes>, Option<SecretBytes>)> =
        BTreeMap::new();
    for (source, role) in sources(config) {
        let observed = match (&source.kind, observed) {
            (SourceKind::Secret(_), None) => continue,
            (_, observed) => observed,
        };
        let bytes = match read_one(source, getenv, observed.unwrap_or(&EMPTY), root) {
            Ok(bytes) => bytes,
            Err((message, hint)) => {
                problems.push(diagnostic(
                    &source.location,
                    &source.field,
                    Code::UnreadableMaterial,
                    message,
                    hint,
                ));
                continue;
            }
        };
        match role {
            Role::RootCert => material.root_cert = Some(bytes),
            Role::RootKey => material.root_key = Some(bytes),
            Role::IntermediateCert => material.intermediate_cert = Some(bytes),
            Role::IntermediateKey => material.intermediate_key = Some(bytes),
            Role::ServerCert => material.server_cert = Some(bytes),
            Role::ServerKey => material.server_key = Some(bytes),
            Role::Token => {
                let token = match &source.kind {
                    SourceKind::File(_) => strip_one_newline(bytes),
                    _ => bytes,
                };
                if let Some((message, hint)) = token_problem(&token) {
                    problems.push(diagnostic(
                        &source.location,
                        &source.field,
                        Code::WeakToken,
                        format!("the identity token from {source} {message}"),
                        hint,
                    ));
                    continue;
                }
                material.token = Some(token);
            }
            Role::ClientCert(cluster) => clients.entry(cluster).or_default().0 = Some(bytes),
            Role::ClientKey(cluster) => clients.entry(cluster).or_default().1 = Some(bytes),
        }
    }
    for (cluster, pair) in clients {
        if let (Some(cert), Some(key)) = pair {
            material.clients.insert(cluster, (cert, key));
        }
    }
    (material, problems)
}

fn read_one(
    source: &MaterialSource,
    getenv: &dyn Fn(&str) -> Option<String>,
    observed: &Observed,
    root: &Path,
) -> Result<SecretBytes, (String, String)> {
    let bytes = match &source.kind {
        SourceKind::File(path) => read_file(path, root)?,
        SourceKind::Env(var) => match getenv(var) {
            Some(value) if !value.is_empty() => SecretBytes::from(value),
            Some(_) => {
                return Err((
                    format!("environment variable `{var}` is empty"),
                    format!("export `{var}` with the PEM or token it should hold"),
                ));
            }
            None => {
                return Err((
                    format!("environment variable `{var}` is not set"),
                    format!("export `{var}` before running relayctl, or use a `file` source"),
                ));
            }
        },
        SourceKind::Secret(r) => {
            let cluster = observed.clusters.get(&r.cluster);
            let observation = match cluster {
                Some(Ok(c)) => c,
                Some(Err(why)) => {
                    return Err((
                        format!(
                            "cannot read {source}: cluster `{}` is unreachable: {why}",
                            r.cluster
                        ),
                        "fix the connection to that cluster".to_owned(),
                    ));
                }
                None => {
                    return Err((
                        format!(
                            "cannot read {source}: cluster `{}` was not observed",
                            r.cluster
                        ),
                        "this is a bug; please report it".to_owned(),
                    ));
                }
            };
            let in_relay_namespace = observation
                .secrets
                .get(&r.name)
                .filter(|s| s.namespace == r.namespace.as_str());
            let elsewhere = observation
                .inputs
                .get(&(r.namespace.to_string(), r.name.clone()));
            match in_relay_namespace.or(elsewhere).and_then(|s| s.get(&r.key)) {
                Some(value) => value.clone(),
                None => {
                    return Err((
                        format!("{source} does not exist"),
                        "create that Secret (or fix the reference) before running relayctl"
                            .to_owned(),
                    ));
                }
            }
        }
    };
    if bytes.len() > MAX_MATERIAL_BYTES {
        return Err((
            format!(
                "{source} is {} bytes; at most {MAX_MATERIAL_BYTES} are read",
                bytes.len()
            ),
            "point the source at one PEM file or token".to_owned(),
        ));
    }
    Ok(bytes)
}

fn read_file(path: &Path, root: &Path) -> Result<SecretBytes, (String, String)> {
    use crate::files::FileError;
    let missing_hint = "paths in `file` sources are relative to the manifest that names them; for the examples run `examples/clusters/make-material.sh <scenario>/material`";
    crate::files::read_confined(root, path, MAX_MATERIAL_BYTES)
        .map(SecretBytes::new)
        .map_err(|err| match err {
            FileError::Outside { .. } => (
                format!("file `{}` resolves outside the config folder (through a symlink)", path.display()),
                "material files are read only inside the config folder or the Git checkout; keep other material in an `env` or `secret` source".to_owned(),
            ),
            FileError::NotRegular { kind, .. } => (
                format!("file `{}` is {kind}, not a regular file", path.display()),
                "point the source at a PEM file or a token file".to_owned(),
            ),
            FileError::TooLarge { max, .. } => (
                format!("file `{}` holds more than {max} bytes", path.display()),
                "point the source at one PEM file".to_owned(),
            ),
            FileError::Io { source, .. } => (
                format!("cannot read file `{}`: {source}", path.display()),
                missing_hint.to_owned(),
            ),
        })
}

/// A token file's one trailing newline (`\n` or `\r\n`), which editors and
/// `echo` add, is not part of the token.
fn strip_one_newline(bytes: SecretBytes) -> SecretBytes {
    let value = bytes.expose();
    let cut = if value.ends_with(b"\r\n") {
        2
    } else if value.ends_with(b"\n") {
        1
    } else {
        return bytes;
    };
    SecretBytes::new(value[..value.len() - cut].to_vec())
}
