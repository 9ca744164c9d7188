//! Material the user brings (certificates, keys, tokens): read, checked,
//! then parsed once into typed values.
//!
//! [`load`](load::load) is the shell step that reads `file` and `env`
//! sources (and takes `secret` sources from what the backends observed) into
//! [`Raw`] bytes, reporting every unreadable source as a located diagnostic.
//! [`check`] runs the PKI checks on them; once they pass, [`Material::parse`]
//! turns them into the certificates, keys and bundles the planner uses,
//! so nothing is parsed twice and no parse error is dropped.

pub mod load;

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::config::Diagnostic;
use crate::config::diag::Code;
use crate::model::{CaMode, ClusterName, MaterialSource, SourceKind, SourceLocation, TrustConfig};
use crate::pki::{self, Bundle, Issuer, MaterialProblem, PrivateKey};
use crate::secret::SecretBytes;

/// User material as read, by role: the bytes of each source.
#[derive(Debug, Clone, Default)]
pub struct Raw {
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

impl Raw {
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

/// User material parsed, after it passed [`check`]: what the planner uses.
#[derive(Debug, Clone, Default)]
pub struct Material {
    /// The root certificate or bundle.
    pub root: Option<Bundle>,
    /// The root's key (`custom` mode).
    pub root_key: Option<PrivateKey>,
    /// The provided intermediate, with its key.
    pub intermediate: Option<Issuer>,
    /// The server certificate chain and key (`external` mode).
    pub server: Option<(Bundle, PrivateKey)>,
    /// The identity token.
    pub token: Option<SecretBytes>,
    /// Per workload: client certificate chain and key (`external` mode).
    pub clients: BTreeMap<ClusterName, (Bundle, PrivateKey)>,
    /// Digest prefixes of the bytes, by role (see [`Raw::fingerprints`]).
    pub fingerprints: BTreeMap<String, String>,
}

/// Material that passed its checks and still cannot be parsed: a bug.
#[derive(Debug, thiserror::Error)]
#[error("material `{role}` passed its checks but cannot be parsed")]
pub struct ParseError {
    /// Which material.
    pub role: String,
    /// Why.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl Material {
    /// Parses checked material.
    pub fn parse(raw: &Raw) -> Result<Self, ParseError> {
        fn err<E: std::error::Error + Send + Sync + 'static>(
            role: &str,
        ) -> impl FnOnce(E) -> ParseError + '_ {
            move |e| ParseError {
                role: role.to_owned(),
                source: Box::new(e),
            }
        }
        let bundle = |pem: &SecretBytes, role: &str| Bundle::read(pem.expose()).map_err(err(role));
        let key = |pem: &SecretBytes, role: &str| PrivateKey::from_pem(pem).map_err(err(role));
        let root = raw
            .root_cert
            .as_ref()
            .map(|p| bundle(p, "root.cert"))
            .transpose()?;
        let root_key = raw
            .root_key
            .as_ref()
            .map(|p| key(p, "root.privateKey"))
            .transpose()?;
        let intermediate = match (&raw.intermediate_cert, &raw.intermediate_key) {
            (Some(cert), Some(pem)) => Some(
                Issuer::new(cert.expose(), key(pem, "intermediate.privateKey")?)
                    .map_err(err("intermediate.cert"))?,
            ),
            _ => None,
        };
        let server = match (&raw.server_cert, &raw.server_key) {
            (Some(cert), Some(pem)) => {
                Some((bundle(cert, "server.cert")?, key(pem, "server.privateKey")?))
            }
            _ => None,
        };
        let mut clients = BTreeMap::new();
        for (cluster, (cert, pem)) in &raw.clients {
            clients.insert(
                cluster.clone(),
                (
                    bundle(cert, &format!("{cluster}.clientCert.cert"))?,
                    key(pem, &format!("{cluster}.clientCert.privateKey"))?,
                ),
            );
        }
        Ok(Self {
            root,
            root_key,
            intermediate,
            server,
            token: raw.token.clone(),
            clients,
            fingerprints: raw.fingerprints(),
        })
    }
}

/// Every source a config names, with the role it fills.
pub(crate) fn sources(config: &TrustConfig) -> Vec<(&MaterialSource, Role)> {
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

/// The role a source fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
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

pub(crate) fn diagnostic(
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
pub fn check(config: &TrustConfig, material: &Raw, now: OffsetDateTime) -> Vec<Diagnostic> {
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
