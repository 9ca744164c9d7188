//! Material the user brings (certificates, keys, tokens), once loaded.
//!
//! [`Material`] is plain data for the planner; [`load`] is the shell step that
//! reads `file` and `env` sources (and takes `secret` sources from what the
//! backends observed). Loading reports problems as located diagnostics, and
//! [`check`] runs the PKI checks on what was loaded.

use std::collections::BTreeMap;
use std::path::Path;

use time::OffsetDateTime;

use crate::config::Diagnostic;
use crate::config::diag::Code;
use crate::model::{CaMode, ClusterName, MaterialSource, SourceKind, SourceLocation, TrustConfig};
use crate::observed::Observed;
use crate::pki::{self, MaterialProblem};
use crate::secret::SecretBytes;

/// Loaded user material, by role.
#[derive(Debug, Clone, Default)]
pub struct Material {
    /// Root certificate or bundle (PEM).
    pub root_cert: Option<SecretBytes>,
    /// Root key (PEM).
    pub root_key: Option<SecretBytes>,
    /// Intermediate certificate (PEM).
    pub intermediate_cert: Option<SecretBytes>,
    /// Intermediate key (PEM).
    pub intermediate_key: Option<SecretBytes>,
    /// Server certificate chain (PEM).
    pub server_cert: Option<SecretBytes>,
    /// Server key (PEM).
    pub server_key: Option<SecretBytes>,
    /// Identity token.
    pub token: Option<SecretBytes>,
    /// Per workload: client certificate chain and key.
    pub clients: BTreeMap<ClusterName, (SecretBytes, SecretBytes)>,
}

static EMPTY: std::sync::LazyLock<Observed> = std::sync::LazyLock::new(Observed::default);

impl Material {
    /// A digest prefix of every loaded value, by role: what a saved plan
    /// records so that `apply FILE` notices material that changed since.
    pub fn fingerprints(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut put = |role: String, value: &Option<SecretBytes>| {
            if let Some(value) = value {
                out.insert(role, value.fingerprint());
            }
        };
        put("root.cert".to_owned(), &self.root_cert);
        put("root.privateKey".to_owned(), &self.root_key);
        put("intermediate.cert".to_owned(), &self.intermediate_cert);
        put("intermediate.privateKey".to_owned(), &self.intermediate_key);
        put("server.cert".to_owned(), &self.server_cert);
        put("server.privateKey".to_owned(), &self.server_key);
        put("identityToken.value".to_owned(), &self.token);
        for (cluster, (cert, key)) in &self.clients {
            put(format!("{cluster}.clientCert.cert"), &Some(cert.clone()));
            put(
                format!("{cluster}.clientCert.privateKey"),
                &Some(key.clone()),
            );
        }
        out
    }
}

/// Largest material file or variable accepted.
const MAX_MATERIAL_BYTES: usize = 1024 * 1024;

/// Every source a config names, with the role it fills.
fn sources(config: &TrustConfig) -> Vec<(&MaterialSource, Role)> {
    fn push<'c>(
        out: &mut Vec<(&'c MaterialSource, Role)>,
        source: &'c Option<MaterialSource>,
        role: Role,
    ) {
        if let Some(source) = source {
            out.push((source, role));
        }
    }
    let mut out = Vec::new();
    push(&mut out, &config.ca.root.cert, Role::RootCert);
    push(&mut out, &config.ca.root.private_key, Role::RootKey);
    push(
        &mut out,
        &config.ca.intermediate.cert,
        Role::IntermediateCert,
    );
    push(
        &mut out,
        &config.ca.intermediate.private_key,
        Role::IntermediateKey,
    );
    push(&mut out, &config.server.cert, Role::ServerCert);
    push(&mut out, &config.server.private_key, Role::ServerKey);
    push(&mut out, &config.identity_token.value, Role::Token);
    for workload in &config.workloads {
        push(
            &mut out,
            &workload.client_cert,
            Role::ClientCert(workload.cluster.name.clone()),
        );
        push(
            &mut out,
            &workload.client_key,
            Role::ClientKey(workload.cluster.name.clone()),
        );
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    RootCert,
    RootKey,
    IntermediateCert,
    IntermediateKey,
    ServerCert,
    ServerKey,
    Token,
    ClientCert(ClusterName),
    ClientKey(ClusterName),
}

/// The clusters that `secret` sources read from, so the shell can observe them first.
pub fn secret_sources(config: &TrustConfig) -> Vec<&crate::model::SecretRef> {
    sources(config)
        .into_iter()
        .filter_map(|(s, _)| match &s.kind {
            SourceKind::Secret(r) => Some(r),
            _ => None,
        })
        .collect()
}

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
) -> (Material, Vec<Diagnostic>) {
    let mut material = Material::default();
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

/// Fewest characters of a brought identity token.
pub const MIN_TOKEN_LEN: usize = 32;
/// Most characters of a brought identity token.
pub const MAX_TOKEN_LEN: usize = 1024;
/// Fewest bits a brought token must carry by its length and alphabet.
pub const MIN_TOKEN_BITS: f64 = 128.0;

/// What is wrong with a brought identity token, if anything: too short or
/// too long, characters that are not printable ASCII (no spaces, no control
/// characters), or too little entropy for its alphabet (e.g. 32 decimal
/// digits carry 106 bits; fewer than 8 distinct characters is a pattern, not
/// a secret). Never quotes the token.
pub fn token_problem(token: &SecretBytes) -> Option<(String, String)> {
    let value = token.expose();
    let hint = "generate one with `openssl rand -hex 32` (64 hex characters), or remove `identityToken.value` and let relayctl generate it".to_owned();
    if value.len() < MIN_TOKEN_LEN || value.len() > MAX_TOKEN_LEN {
        return Some((
            format!(
                "is {} characters long; between {MIN_TOKEN_LEN} and {MAX_TOKEN_LEN} are accepted",
                value.len()
            ),
            hint,
        ));
    }
    if let Some(position) = value.iter().position(|b| !(0x21..=0x7e).contains(b)) {
        let what = if value[position].is_ascii_control() {
            "a control character"
        } else if value[position] == b' ' {
            "a space"
        } else {
            "a non-ASCII byte"
        };
        return Some((
            format!(
                "holds {what} at byte {position}; only printable ASCII without spaces is accepted (one trailing newline of a file is stripped)"
            ),
            hint,
        ));
    }
    let distinct = value
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let alphabet: f64 = if value.iter().all(u8::is_ascii_digit) {
        10.0
    } else if value.iter().all(u8::is_ascii_hexdigit) {
        16.0
    } else if value
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        || value
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        36.0
    } else if value.iter().all(u8::is_ascii_alphanumeric) {
        62.0
    } else if value
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/' | b'='))
    {
        64.0
    } else {
        94.0
    };
    let bits = value.len() as f64 * alphabet.log2();
    if distinct < 8 || bits < MIN_TOKEN_BITS {
        return Some((
            format!(
                "is too guessable: {} characters from an alphabet of {alphabet} ({bits:.0} bits, {distinct} distinct characters); at least {MIN_TOKEN_BITS} bits and 8 distinct characters are required",
                value.len()
            ),
            hint,
        ));
    }
    None
}

fn diagnostic(
    location: &SourceLocation,
    field: &str,
    code: Code,
    message: String,
    hint: String,
) -> Diagnostic {
    Diagnostic {
        file: location.file.clone(),
        position: Some(crate::config::node::Position {
            line: location.line,
            column: location.column,
        }),
        field: field.to_owned(),
        code,
        message,
        hint: Some(hint),
    }
}

/// The certificate checks of DESIGN.md §2 on loaded material: cert/key
/// mismatch, a non-CA given as a CA, an expired CA, a CA shorter-lived than
/// what it must sign, a server cert not covering the authority, a client cert
/// not naming its cluster. Each problem is located at the source's field.
pub fn check(config: &TrustConfig, material: &Material, now: OffsetDateTime) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    // A problem of the key is reported at the key's own source (its file
    // and field), every other at the certificate's.
    let mut report_pair = |cert: &Option<MaterialSource>,
                           key: &Option<MaterialSource>,
                           problems: Vec<MaterialProblem>| {
        for problem in problems {
            let at = match (problem.is_about_the_key(), key) {
                (true, Some(key)) => Some(key),
                _ => cert.as_ref(),
            };
            if let Some(source) = at {
                out.push(diagnostic(
                    &source.location,
                    &source.field,
                    Code::InvalidMaterial,
                    format!("{source}: {}", problem.message()),
                    problem.hint(),
                ));
            }
        }
    };
    let ca = &config.ca;
    let longest_leaf = config.server.validity.max(config.client_certs.validity);
    if let Some(root) = &material.root_cert {
        let must_cover = match (ca.mode, &material.intermediate_cert) {
            (CaMode::Custom, None) => Some(ca.intermediate.validity),
            (CaMode::Custom, Some(_)) => None,
            _ => None,
        };
        let key = if ca.mode == CaMode::Custom {
            material.root_key.as_ref()
        } else {
            None
        };
        report_pair(
            &ca.root.cert,
            &ca.root.private_key,
            pki::material::check_ca(root.expose(), key, must_cover, now),
        );
    }
    if let (Some(intermediate), Some(root)) = (&material.intermediate_cert, &material.root_cert) {
        report_pair(
            &ca.intermediate.cert,
            &None,
            pki::material::check_issued_by_root(intermediate.expose(), root.expose()),
        );
    }
    if let Some(intermediate) = &material.intermediate_cert {
        report_pair(
            &ca.intermediate.cert,
            &ca.intermediate.private_key,
            pki::material::check_ca(
                intermediate.expose(),
                material.intermediate_key.as_ref(),
                Some(longest_leaf),
                now,
            ),
        );
    }
    if let Some(server) = &material.server_cert {
        report_pair(
            &config.server.cert,
            &config.server.private_key,
            pki::material::check_server(
                server.expose(),
                material.server_key.as_ref(),
                &config.server.authority,
                now,
            ),
        );
    }
    for workload in &config.workloads {
        if let Some((cert, key)) = material.clients.get(&workload.cluster.name) {
            report_pair(
                &workload.client_cert,
                &workload.client_key,
                pki::material::check_client(
                    cert.expose(),
                    Some(key),
                    workload.cluster.name.as_str(),
                    now,
                ),
            );
        }
    }
    out
}
