//! `relayctl check`: is the relay trust of the fleet healthy right now?
//!
//! `plan` answers "what would relayctl change"; `check` answers "would the
//! agents connect, and for how long". It looks at what the clusters hold, not
//! at the manifests' intent: every workload's root bundle and token against
//! the management cluster's, every certificate's chain, names, key and expiry
//! tier, and a real mTLS handshake (see [`crate::pki::handshake`]) between the
//! server certificate and each client certificate, configured as the
//! management server and the agent configure themselves.
//!
//! [`check`] is pure: the validated config, the observed fleet and `now` in,
//! a serializable [`Report`] out. Each line is `ok` (√), `warn` (‼) or
//! `fail` (×), with a hint under every ‼ and ×. Secret values never enter a
//! message: tokens are compared by digest in constant time and only their
//! length is shown; keys only as "matches" or not.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::error::error_chain;
use crate::model::{CaMode, ClientCertMode, ClusterName, Duration, TrustConfig};
use crate::observed::{ClusterObservation, Observed, SecretObject};
use crate::pki::inspect::rfc3339;
use crate::pki::{self, CertFacts, PrivateKey, Usage};
use crate::plan::{CLIENT_SECRET, ROOT_SECRET, SERVER_SECRET, SIGNING_SECRET, TOKEN_SECRET};
use crate::secret::SecretBytes;

/// Version of the JSON form of [`Report`]; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// Root CAs warn when they have less than this left.
pub const ROOT_WARN_DAYS: i64 = 365;
/// Intermediate (signing) CAs warn when they have less than this left.
pub const INTERMEDIATE_WARN_DAYS: i64 = 60;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// √: fine.
    Ok,
    /// ‼: works now, needs attention (e.g. expiring, not bootstrapped yet).
    Warn,
    /// ×: broken (the agent would not connect, or soon cannot).
    Fail,
}

impl Status {
    /// `√`, `‼` or `×`.
    pub fn marker(self) -> &'static str {
        match self {
            Self::Ok => "√",
            Self::Warn => "‼",
            Self::Fail => "×",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Stable identifier of the check, e.g. `root-bundle`, `mtls-handshake`.
    pub id: &'static str,
    /// √, ‼ or ×.
    pub status: Status,
    /// What was found.
    pub message: String,
    /// What to do about it; present on `warn` and `fail`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// What a cluster is in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the management server.
    Management,
    /// Runs an agent.
    Workload,
}

/// The checks of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    /// Cluster name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its checks, in a fixed order.
    pub checks: Vec<Check>,
}

/// How many checks ended how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// √
    pub ok: usize,
    /// ‼
    pub warn: usize,
    /// ×
    pub fail: usize,
}

/// The fleet trust report: serializable, no secret in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The `RelayTrust` name.
    pub instance: String,
    /// Namespace of the relay Secrets.
    pub namespace: String,
    /// CA mode.
    pub ca_mode: CaMode,
    /// Client certificate mode.
    pub client_cert_mode: ClientCertMode,
    /// The host name agents dial.
    pub authority: String,
    /// When the checks ran (RFC 3339).
    pub checked_at: String,
    /// Management cluster first, then workloads by name.
    pub clusters: Vec<ClusterReport>,
    /// Counts over every cluster.
    pub summary: Summary,
}

impl Report {
    /// Whether no check failed (warnings do not fail).
    pub fn passed(&self) -> bool {
        self.summary.fail == 0
    }
}

/// Checks the fleet. See the module docs.
pub fn check(config: &TrustConfig, observed: &Observed, now: OffsetDateTime) -> Report {
    let mgmt_name = &config.management.name;
    let (mgmt_report, mgmt) = check_management(config, observed.clusters.get(mgmt_name), now);
    let mut clusters = vec![mgmt_report];
    for workload in &config.workloads {
        let name = &workload.cluster.name;
        clusters.push(check_workload(
            config,
            name,
            observed.clusters.get(name),
            &mgmt,
            now,
        ));
    }
    let mut summary = Summary::default();
    for check in clusters.iter().flat_map(|c| &c.checks) {
        match check.status {
            Status::Ok => summary.ok += 1,
            Status::Warn => summary.warn += 1,
            Status::Fail => summary.fail += 1,
        }
    }
    Report {
        format_version: FORMAT_VERSION,
        instance: config.instance.as_str().to_owned(),
        namespace: config.namespace.as_str().to_owned(),
        ca_mode: config.ca.mode,
        client_cert_mode: config.client_certs.mode,
        authority: config.server.authority.clone(),
        checked_at: rfc3339(now.replace_nanosecond(0).unwrap_or(now)),
        clusters,
        summary,
    }
}

// --- building lines ---------------------------------------------------------

#[derive(Default)]
struct Lines(Vec<Check>);

impl Lines {
    fn ok(&mut self, id: &'static str, message: impl Into<String>) {
        self.push(id, Status::Ok, message.into(), None);
    }

    fn warn(&mut self, id: &'static str, message: impl Into<String>, hint: impl Into<String>) {
        self.push(id, Status::Warn, message.into(), Some(hint.into()));
    }

    fn fail(&mut self, id: &'static str, message: impl Into<String>, hint: impl Into<String>) {
        self.push(id, Status::Fail, message.into(), Some(hint.into()));
    }

    fn push(&mut self, id: &'static str, status: Status, message: String, hint: Option<String>) {
        self.0.push(Check {
            id,
            status,
            message,
            hint,
        });
    }

    fn line(&mut self, id: &'static str, (status, message, hint): (Status, String, String)) {
        let hint = (status != Status::Ok).then_some(hint);
        self.push(id, status, message, hint);
    }
}

const HINT_REACH: &str = "check the cluster's `connection` in its manifest and the credentials relayctl runs with (`--kubeconfig`, `--state-dir`)";
const HINT_AFTER_FIXES: &str = "fix the lines above, then run `relayctl check` again";

/// How what relayctl writes gets repaired, by CA mode.
fn repair_hint(config: &TrustConfig) -> &'static str {
    match config.ca.mode {
        CaMode::Managed | CaMode::Custom => {
            "`relayctl plan` shows the repair and `relayctl apply` carries it out"
        }
        CaMode::Gloo => {
            "`relayctl plan` shows the repair and `relayctl apply` carries it out (mgmt's own CA secrets come from the management server)"
        }
        CaMode::External => {
            "provide the material from your PKI; `relayctl plan` shows the repair and `relayctl apply` carries it out"
        }
    }
}

/// Why the mgmt side of a comparison is not available.
type Reference<T> = Result<T, String>;

/// What workloads are compared with and handshake against.
struct Management {
    bundle: Reference<Bundle>,
    token_digest: Reference<SecretBytes>,
    server: Reference<ServerSide>,
}

/// A root bundle: the PEM and each certificate's facts and DER.
struct Bundle {
    pem: Vec<u8>,
    certs: Vec<(CertFacts, Vec<u8>)>,
}

impl Bundle {
    fn read(pem: &[u8]) -> Result<Self, String> {
        let ders = pki::inspect::certificate_ders(pem).map_err(|e| error_chain(&e))?;
        let mut certs = Vec::new();
        for (index, der) in ders.into_iter().enumerate() {
            let facts = pki::inspect::facts_from_der(index, &der).map_err(|e| error_chain(&e))?;
            certs.push((facts, der));
        }
        if certs.is_empty() {
            return Err("no certificate".to_owned());
        }
        Ok(Self {
            pem: pem.to_vec(),
            certs,
        })
    }

    fn fingerprints(&self) -> BTreeSet<&str> {
        self.certs
            .iter()
            .map(|(f, _)| f.sha256_fingerprint.as_str())
            .collect()
    }

    fn describe(&self) -> String {
        self.certs
            .iter()
            .map(|(f, _)| format!("`{}` (sha256 {})", f.subject, short(&f.sha256_fingerprint)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The management server's side of the handshake.
struct ServerSide {
    chain_pem: Vec<u8>,
    key: PrivateKey,
    roots_pem: Vec<u8>,
}

fn short(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(|c| *c != ':')
        .take(16)
        .collect::<String>()
        .to_lowercase()
}

fn secret<'a>(obs: &'a ClusterObservation, name: &str) -> Option<&'a SecretObject> {
    obs.secrets.get(name)
}

/// The observation, or a `reachable` × line.
fn reachable<'a>(
    lines: &mut Lines,
    observed: Option<&'a Result<ClusterObservation, String>>,
) -> Option<&'a ClusterObservation> {
    match observed {
        Some(Ok(obs)) => Some(obs),
        Some(Err(why)) => {
            lines.fail(
                "reachable",
                format!("cannot read the cluster: {why}"),
                HINT_REACH,
            );
            None
        }
        None => {
            lines.fail("reachable", "the cluster was not observed", HINT_REACH);
            None
        }
    }
}

// --- expiry tiers -----------------------------------------------------------

/// A CA's tier: × expired or not yet valid, ‼ under `warn_days`, √ otherwise.
fn ca_expiry(
    what: &str,
    facts: &CertFacts,
    warn_days: i64,
    now: OffsetDateTime,
    hint: &str,
) -> (Status, String, String) {
    let bound = Bound {
        threshold: time::Duration::days(warn_days),
        name: format!("{warn_days} days"),
        ok: "at least",
    };
    expiry(
        &format!("{what} `{}`", facts.subject),
        facts,
        &bound,
        now,
        hint,
    )
}

/// A leaf's tier: × expired or not yet valid, ‼ under `renew_before`, √ otherwise.
fn leaf_expiry(
    what: &str,
    facts: &CertFacts,
    renew_before: Duration,
    now: OffsetDateTime,
    hint: &str,
) -> (Status, String, String) {
    let bound = Bound {
        threshold: renew_before.to_time(),
        name: format!("renewBefore {renew_before}"),
        ok: "more than",
    };
    expiry(what, facts, &bound, now, hint)
}

/// The warning threshold of an expiry tier and how messages name it.
struct Bound {
    threshold: time::Duration,
    name: String,
    ok: &'static str,
}

fn expiry(
    what: &str,
    facts: &CertFacts,
    bound: &Bound,
    now: OffsetDateTime,
    hint: &str,
) -> (Status, String, String) {
    let not_after = rfc3339(facts.not_after);
    if now < facts.not_before {
        return (
            Status::Fail,
            format!("{what} is not valid before {}", rfc3339(facts.not_before)),
            "check the clocks of the machine that issued it and of this one".to_owned(),
        );
    }
    let remaining = facts.not_after - now;
    let name = &bound.name;
    if remaining <= time::Duration::ZERO {
        (
            Status::Fail,
            format!(
                "{what} expired {} ago ({not_after})",
                pki::renewal::human(-remaining)
            ),
            hint.to_owned(),
        )
    } else if remaining < bound.threshold {
        (
            Status::Warn,
            format!(
                "{what} expires in {}, under {name} ({not_after})",
                pki::renewal::human(remaining)
            ),
            hint.to_owned(),
        )
    } else {
        (
            Status::Ok,
            format!(
                "{what} is valid for {} {name} (until {not_after})",
                bound.ok
            ),
            String::new(),
        )
    }
}

/// `√ key matches` or a × line; returns the key when it matches.
fn key_line(
    lines: &mut Lines,
    id: &'static str,
    what: &str,
    secret: &SecretObject,
    leaf: &CertFacts,
    hint: &str,
) -> Option<PrivateKey> {
    let Some(pem) = secret.get("tls.key") else {
        lines.fail(id, format!("{what} has no `tls.key`"), hint);
        return None;
    };
    match PrivateKey::from_pem(pem) {
        Ok(key) if pki::key_matches(leaf, &key.facts()) => {
            lines.ok(id, format!("{what} key matches its certificate"));
            Some(key)
        }
        Ok(_) => {
            lines.fail(
                id,
                format!("{what} key does not match its certificate"),
                hint,
            );
            None
        }
        Err(e) => {
            lines.fail(
                id,
                format!("{what} key is unreadable: {}", error_chain(&e)),
                hint,
            );
            None
        }
    }
}

// --- management cluster -----------------------------------------------------

fn check_management(
    config: &TrustConfig,
    observed: Option<&Result<ClusterObservation, String>>,
    now: OffsetDateTime,
) -> (ClusterReport, Management) {
    let mut lines = Lines::default();
    let name = config.management.name.as_str().to_owned();
    let Some(obs) = reachable(&mut lines, observed) else {
        let why = || "mgmt could not be read".to_owned();
        return (
            ClusterReport {
                name,
                role: Role::Management,
                checks: lines.0,
            },
            Management {
                bundle: Err(why()),
                token_digest: Err(why()),
                server: Err(why()),
            },
        );
    };
    let bundle = mgmt_root(config, obs, now, &mut lines);
    if config.ca.mode != CaMode::External {
        mgmt_signing(config, obs, bundle.as_ref().ok(), now, &mut lines);
    }
    let server = mgmt_server(config, obs, bundle.as_ref().ok(), now, &mut lines);
    let token_digest = if config.identity_token.enabled {
        mgmt_token(config, obs, &mut lines)
    } else {
        Err("identity tokens are off".to_owned())
    };
    (
        ClusterReport {
            name,
            role: Role::Management,
            checks: lines.0,
        },
        Management {
            bundle,
            token_digest,
            server,
        },
    )
}

/// mgmt's root bundle: `relay-root-tls-secret` `ca.crt`, or in `external`
/// mode (no root secret on mgmt) the server secret's `ca.crt`.
fn mgmt_root(
    config: &TrustConfig,
    obs: &ClusterObservation,
    now: OffsetDateTime,
    lines: &mut Lines,
) -> Reference<Bundle> {
    let from_root = secret(obs, ROOT_SECRET).and_then(|s| s.get("ca.crt"));
    let (pem, source) = match from_root {
        Some(pem) => (pem, format!("`{ROOT_SECRET}`")),
        None => {
            let from_server = (config.ca.mode == CaMode::External)
                .then(|| secret(obs, SERVER_SECRET).and_then(|s| s.get("ca.crt")))
                .flatten();
            match from_server {
                Some(pem) => (pem, format!("`{SERVER_SECRET}` `ca.crt`")),
                None => {
                    let message = match secret(obs, ROOT_SECRET) {
                        Some(_) => {
                            format!("root bundle not found: `{ROOT_SECRET}` has no `ca.crt`")
                        }
                        None => format!("root bundle not found: `{ROOT_SECRET}` is missing"),
                    };
                    lines.fail("root-ca", message.clone(), repair_hint(config));
                    return Err("mgmt has no root bundle".to_owned());
                }
            }
        }
    };
    let bundle = match Bundle::read(pem.expose()) {
        Ok(bundle) => bundle,
        Err(why) => {
            lines.fail(
                "root-ca",
                format!("root bundle in {source} is unreadable: {why}"),
                repair_hint(config),
            );
            return Err("mgmt's root bundle is unreadable".to_owned());
        }
    };
    let rotate =
        "plan a CA rotation: add the new root to the bundle everywhere before the old one expires";
    for (facts, _) in &bundle.certs {
        if !facts.is_ca {
            lines.fail(
                "root-ca",
                format!("`{}` in the root bundle is not a CA", facts.subject),
                "the root bundle must hold CA certificates only",
            );
            continue;
        }
        lines.line(
            "root-ca",
            ca_expiry("root CA", facts, ROOT_WARN_DAYS, now, rotate),
        );
    }
    if config.ca.mode == CaMode::Managed
        && let (Some(root), Some((facts, _))) = (secret(obs, ROOT_SECRET), bundle.certs.first())
    {
        // relayctl keeps the root key in `managed` mode: without it no
        // intermediate can ever be issued again.
        key_line(
            lines,
            "root-ca-key",
            "root CA",
            root,
            facts,
            "restore `tls.key` of `relay-root-tls-secret` from a backup; relayctl never replaces a root on its own (a new root would need every agent to trust it)",
        );
    }
    Ok(bundle)
}

fn mgmt_signing(
    config: &TrustConfig,
    obs: &ClusterObservation,
    bundle: Option<&Bundle>,
    now: OffsetDateTime,
    lines: &mut Lines,
) {
    let hint = repair_hint(config);
    let Some(signing) = secret(obs, SIGNING_SECRET) else {
        lines.fail(
            "signing-ca",
            format!("signing CA not found: `{SIGNING_SECRET}` is missing"),
            hint,
        );
        return;
    };
    let Some(pem) = signing.get("tls.crt") else {
        lines.fail(
            "signing-ca",
            format!("signing CA not found: `{SIGNING_SECRET}` has no `tls.crt`"),
            hint,
        );
        return;
    };
    let chain = match Bundle::read(pem.expose()) {
        Ok(chain) => chain,
        Err(why) => {
            lines.fail(
                "signing-ca",
                format!("signing CA in `{SIGNING_SECRET}` is unreadable: {why}"),
                hint,
            );
            return;
        }
    };
    let Some((facts, der)) = chain.certs.first() else {
        return;
    };
    match bundle {
        _ if !facts.is_ca => lines.fail(
            "signing-ca-chain",
            format!("signing CA `{}` is not a CA", facts.subject),
            hint,
        ),
        Some(bundle)
            if pki::issued_by(
                der,
                &bundle
                    .certs
                    .iter()
                    .map(|(_, d)| d.as_slice())
                    .collect::<Vec<_>>(),
            ) =>
        {
            lines.ok(
                "signing-ca-chain",
                format!("signing CA `{}` is issued by the root CA", facts.subject),
            )
        }
        Some(_) => lines.fail(
            "signing-ca-chain",
            format!(
                "signing CA `{}` is not issued by any root CA in the root bundle",
                facts.subject
            ),
            format!("certificates it signs will not verify; {hint}"),
        ),
        None => lines.warn(
            "signing-ca-chain",
            format!(
                "signing CA `{}` not compared: mgmt has no readable root bundle",
                facts.subject
            ),
            HINT_AFTER_FIXES,
        ),
    }
    key_line(lines, "signing-ca-key", "signing CA", signing, facts, hint);
    lines.line(
        "signing-ca-expiry",
        ca_expiry(
            "signing CA",
            facts,
            INTERMEDIATE_WARN_DAYS,
            now,
            "issue a new signing CA from the root before this one expires; leaves it signs cannot outlive it",
        ),
    );
}

fn mgmt_server(
    config: &TrustConfig,
    obs: &ClusterObservation,
    bundle: Option<&Bundle>,
    now: OffsetDateTime,
    lines: &mut Lines,
) -> Reference<ServerSide> {
    let hint = repair_hint(config);
    let authority = &config.server.authority;
    let Some(server) = secret(obs, SERVER_SECRET) else {
        let message = format!("server certificate not found: `{SERVER_SECRET}` is missing");
        if config.ca.mode == CaMode::Gloo {
            lines.warn(
                "server-cert",
                message,
                "in `gloo` mode the management server creates it when it starts; check that it runs",
            );
        } else {
            lines.fail("server-cert", message, hint);
        }
        return Err("mgmt has no server certificate".to_owned());
    };
    let Some(chain_pem) = server.get("tls.crt") else {
        lines.fail(
            "server-cert",
            format!("server certificate not found: `{SERVER_SECRET}` has no `tls.crt`"),
            hint,
        );
        return Err("mgmt has no server certificate".to_owned());
    };
    let chain = match Bundle::read(chain_pem.expose()) {
        Ok(chain) => chain,
        Err(why) => {
            lines.fail(
                "server-cert",
                format!("server certificate is unreadable: {why}"),
                hint,
            );
            return Err("mgmt's server certificate is unreadable".to_owned());
        }
    };
    let Some((leaf, _)) = chain.certs.first() else {
        return Err("mgmt has no server certificate".to_owned());
    };

    if leaf.covers_dns_name(authority) {
        lines.ok(
            "server-cert-san",
            format!("server certificate covers the authority `{authority}`"),
        );
    } else {
        lines.fail(
            "server-cert-san",
            format!(
                "server certificate SANs `{}` do not cover the authority `{authority}`",
                leaf.dns_names.join(", ")
            ),
            format!("agents dial `{authority}` and reject this certificate; {hint}"),
        );
    }
    match bundle {
        Some(bundle) => {
            match pki::verify_chain(chain_pem.expose(), &bundle.pem, Usage::Server, None, now) {
                Ok(()) => lines.ok(
                    "server-cert-chain",
                    "server certificate chains to the root bundle",
                ),
                Err(e) => lines.fail(
                    "server-cert-chain",
                    format!(
                        "server certificate does not chain to the root bundle: {}",
                        error_chain(&e)
                    ),
                    hint,
                ),
            }
        }
        None => lines.warn(
            "server-cert-chain",
            "server certificate chain not checked: mgmt has no readable root bundle",
            HINT_AFTER_FIXES,
        ),
    }
    let key = key_line(
        lines,
        "server-cert-key",
        "server certificate",
        server,
        leaf,
        hint,
    );
    let renew = match config.ca.mode {
        CaMode::External => "renew it in your PKI and update its source",
        _ => "`relayctl apply` renews it (the product never does)",
    };
    lines.line(
        "server-cert-expiry",
        leaf_expiry(
            "server certificate",
            leaf,
            config.server.renew_before,
            now,
            renew,
        ),
    );

    // The roots the server verifies agents with.
    let roots = server.get("ca.crt");
    match (roots.map(|r| Bundle::read(r.expose())), bundle) {
        (None, _) => lines.fail(
            "server-ca-bundle",
            format!("`{SERVER_SECRET}` has no `ca.crt`: the server cannot verify agents"),
            hint,
        ),
        (Some(Err(why)), _) => lines.fail(
            "server-ca-bundle",
            format!("`{SERVER_SECRET}` `ca.crt` is unreadable: {why}"),
            hint,
        ),
        // In `external` mode the server's `ca.crt` is the reference itself.
        (Some(Ok(_)), _) if secret(obs, ROOT_SECRET).is_none() => {}
        (Some(Ok(server_roots)), Some(bundle)) => {
            if server_roots.fingerprints() == bundle.fingerprints() {
                lines.ok(
                    "server-ca-bundle",
                    "server `ca.crt` matches the root bundle",
                );
            } else {
                lines.fail(
                    "server-ca-bundle",
                    format!(
                        "server `ca.crt` differs from the root bundle: holds {}, the root bundle {}",
                        server_roots.describe(),
                        bundle.describe()
                    ),
                    format!("the server verifies agents with its `ca.crt`; {hint}"),
                );
            }
        }
        (Some(Ok(_)), None) => {}
    }

    match (key, roots) {
        (Some(key), Some(roots)) => Ok(ServerSide {
            chain_pem: chain_pem.expose().to_vec(),
            key,
            roots_pem: roots.expose().to_vec(),
        }),
        _ => Err("mgmt's server certificate, key or `ca.crt` is unusable".to_owned()),
    }
}

fn mgmt_token(
    config: &TrustConfig,
    obs: &ClusterObservation,
    lines: &mut Lines,
) -> Reference<SecretBytes> {
    let hint = repair_hint(config);
    match secret(obs, TOKEN_SECRET).map(|s| s.get("token")) {
        None => {
            lines.fail(
                "token",
                format!("identity token not found: `{TOKEN_SECRET}` is missing"),
                format!("agents cannot register without it; {hint}"),
            );
            Err("mgmt has no identity token".to_owned())
        }
        Some(None) => {
            lines.fail(
                "token",
                format!("identity token not found: `{TOKEN_SECRET}` has no `token`"),
                format!("agents cannot register without it; {hint}"),
            );
            Err("mgmt has no identity token".to_owned())
        }
        Some(Some(token)) if token.is_empty() => {
            lines.fail(
                "token",
                "identity token is empty",
                format!("agents cannot register without it; {hint}"),
            );
            Err("mgmt's identity token is empty".to_owned())
        }
        Some(Some(token)) => {
            lines.ok(
                "token",
                format!("identity token is set ({} bytes)", token.len()),
            );
            Ok(digest(token))
        }
    }
}

/// SHA-256 of a token, itself kept as a secret: tokens are compared by
/// digest so that the comparison's time depends on neither value nor length.
fn digest(token: &SecretBytes) -> SecretBytes {
    SecretBytes::new(Sha256::digest(token.expose()).to_vec())
}

// --- workload clusters ------------------------------------------------------

fn check_workload(
    config: &TrustConfig,
    name: &ClusterName,
    observed: Option<&Result<ClusterObservation, String>>,
    mgmt: &Management,
    now: OffsetDateTime,
) -> ClusterReport {
    let mut lines = Lines::default();
    if let Some(obs) = reachable(&mut lines, observed) {
        workload_lines(config, name, obs, mgmt, now, &mut lines);
    }
    ClusterReport {
        name: name.as_str().to_owned(),
        role: Role::Workload,
        checks: lines.0,
    }
}

fn workload_lines(
    config: &TrustConfig,
    name: &ClusterName,
    obs: &ClusterObservation,
    mgmt: &Management,
    now: OffsetDateTime,
    lines: &mut Lines,
) {
    let hint = repair_hint(config);
    let own_bundle = workload_root(config, obs, mgmt, lines);
    if config.identity_token.enabled {
        workload_token(config, obs, mgmt, lines);
    }

    // Client certificate.
    let mode = config.client_certs.mode;
    let client_hint = match mode {
        ClientCertMode::Token => {
            "the agent writes and renews it with the identity token; check the agent's logs"
        }
        ClientCertMode::Preprovisioned => hint,
        ClientCertMode::External => {
            "issue it in your PKI and point the cluster's `spec.clientCert` at it; `relayctl apply` copies it"
        }
    };
    let client = secret(obs, CLIENT_SECRET);
    let Some((client, chain_pem)) = client.and_then(|s| s.get("tls.crt").map(|c| (s, c))) else {
        let message = match client {
            Some(_) => format!("client certificate not found: `{CLIENT_SECRET}` has no `tls.crt`"),
            None => format!("client certificate not found: `{CLIENT_SECRET}` is missing"),
        };
        if mode == ClientCertMode::Token && client.is_none() {
            lines.warn(
                "client-cert",
                format!("client certificate not yet bootstrapped: `{CLIENT_SECRET}` is missing"),
                "the agent writes it after it registers with the identity token; if it stays missing, check the agent's logs",
            );
            lines.warn(
                "mtls-handshake",
                "mTLS handshake not tried: no client certificate yet",
                "it runs once the agent has written its client certificate",
            );
        } else {
            lines.fail("client-cert", message, client_hint);
            lines.warn(
                "mtls-handshake",
                "mTLS handshake not tried: no client certificate",
                HINT_AFTER_FIXES,
            );
        }
        return;
    };
    let chain = match Bundle::read(chain_pem.expose()) {
        Ok(chain) => chain,
        Err(why) => {
            lines.fail(
                "client-cert",
                format!("client certificate is unreadable: {why}"),
                client_hint,
            );
            lines.warn(
                "mtls-handshake",
                "mTLS handshake not tried: the client certificate is unreadable",
                HINT_AFTER_FIXES,
            );
            return;
        }
    };
    let Some((leaf, _)) = chain.certs.first() else {
        return;
    };

    // Chain: to mgmt's root bundle (what the server trusts), else the cluster's own.
    let roots = match (&mgmt.bundle, &own_bundle) {
        (Ok(bundle), _) => Some((&bundle.pem, "the root bundle")),
        (Err(_), Some(own)) => Some((own, "this cluster's root bundle")),
        (Err(_), None) => None,
    };
    match roots {
        Some((roots, which)) => {
            match pki::verify_chain(chain_pem.expose(), roots, Usage::Client, None, now) {
                Ok(()) => lines.ok(
                    "client-cert-chain",
                    format!("client certificate chains to {which}"),
                ),
                Err(e) => lines.fail(
                    "client-cert-chain",
                    format!(
                        "client certificate does not chain to {which}: {}",
                        error_chain(&e)
                    ),
                    format!("the management server will reject the agent; {client_hint}"),
                ),
            }
        }
        None => lines.warn(
            "client-cert-chain",
            "client certificate chain not checked: no readable root bundle",
            HINT_AFTER_FIXES,
        ),
    }
    if leaf.dns_names == [name.as_str()] {
        lines.ok(
            "client-cert-san",
            format!("client certificate SAN is `{name}`"),
        );
    } else {
        lines.fail(
            "client-cert-san",
            format!(
                "client certificate SAN is `{}`, want `{name}`",
                leaf.dns_names.join(", ")
            ),
            format!(
                "the management server takes the agent's identity from the SAN and rejects a mismatch; {client_hint}"
            ),
        );
    }
    let key = key_line(
        lines,
        "client-cert-key",
        "client certificate",
        client,
        leaf,
        client_hint,
    );
    lines.line(
        "client-cert-expiry",
        leaf_expiry(
            "client certificate",
            leaf,
            config.client_certs.renew_before,
            now,
            client_hint,
        ),
    );

    // The handshake, as the server and this agent would do it.
    let client_roots = secret(obs, ROOT_SECRET).and_then(|s| s.get("ca.crt"));
    let (server, key, client_roots) = match (&mgmt.server, key, client_roots) {
        (Ok(server), Some(key), Some(roots)) => (server, key, roots),
        (Err(why), _, _) => {
            lines.warn(
                "mtls-handshake",
                format!("mTLS handshake not tried: {why}"),
                HINT_AFTER_FIXES,
            );
            return;
        }
        (_, None, _) => {
            lines.warn(
                "mtls-handshake",
                "mTLS handshake not tried: the client key is unusable",
                HINT_AFTER_FIXES,
            );
            return;
        }
        (_, _, None) => {
            lines.warn(
                "mtls-handshake",
                "mTLS handshake not tried: this cluster has no root bundle",
                HINT_AFTER_FIXES,
            );
            return;
        }
    };
    let authority = &config.server.authority;
    match pki::mtls_handshake(
        &pki::Endpoint {
            chain_pem: &server.chain_pem,
            key: &server.key,
            roots_pem: &server.roots_pem,
        },
        &pki::Endpoint {
            chain_pem: chain_pem.expose(),
            key: &key,
            roots_pem: client_roots.expose(),
        },
        authority,
        now,
    ) {
        Ok(done) => lines.ok(
            "mtls-handshake",
            format!(
                "mTLS handshake with the management server as `{authority}` succeeded ({})",
                done.protocol
            ),
        ),
        Err(e) => lines.fail(
            "mtls-handshake",
            format!(
                "mTLS handshake with the management server as `{authority}` failed: {}",
                error_chain(&e)
            ),
            "the agent fails the same way; the lines above (and on mgmt) say which certificate or bundle to fix",
        ),
    }
}

/// The root bundle line; returns the cluster's `ca.crt` when readable.
fn workload_root(
    config: &TrustConfig,
    obs: &ClusterObservation,
    mgmt: &Management,
    lines: &mut Lines,
) -> Option<Vec<u8>> {
    let hint = repair_hint(config);
    let root = secret(obs, ROOT_SECRET);
    let Some(pem) = root.and_then(|s| s.get("ca.crt")) else {
        let message = match root {
            Some(_) => format!("root bundle not found: `{ROOT_SECRET}` has no `ca.crt`"),
            None => format!("root bundle not found: `{ROOT_SECRET}` is missing"),
        };
        lines.fail(
            "root-bundle",
            message,
            format!("the agent cannot verify the management server; {hint}"),
        );
        return None;
    };
    let own = match Bundle::read(pem.expose()) {
        Ok(own) => own,
        Err(why) => {
            lines.fail(
                "root-bundle",
                format!("root bundle is unreadable: {why}"),
                hint,
            );
            return None;
        }
    };
    match &mgmt.bundle {
        Ok(reference) if reference.fingerprints() == own.fingerprints() => {
            let subjects: Vec<String> = own
                .certs
                .iter()
                .map(|(f, _)| format!("`{}`", f.subject))
                .collect();
            lines.ok(
                "root-bundle",
                format!("root bundle matches mgmt ({})", subjects.join(", ")),
            );
        }
        Ok(reference) => lines.fail(
            "root-bundle",
            format!(
                "root bundle differs from mgmt: holds {}, mgmt has {}",
                own.describe(),
                reference.describe()
            ),
            format!("the agent will not trust the management server; {hint}"),
        ),
        Err(why) => lines.warn(
            "root-bundle",
            format!("root bundle not compared: {why}"),
            HINT_AFTER_FIXES,
        ),
    }
    if root.is_some_and(|s| s.get("tls.key").is_some()) {
        lines.warn(
            "root-key",
            format!(
                "`{ROOT_SECRET}` holds the root CA key; a workload cluster needs `ca.crt` only"
            ),
            format!("anyone who can read the Secret can mint relay identities; {hint}"),
        );
    }
    Some(own.pem)
}

fn workload_token(
    config: &TrustConfig,
    obs: &ClusterObservation,
    mgmt: &Management,
    lines: &mut Lines,
) {
    let hint = format!(
        "the agent cannot register until it holds mgmt's token; {}",
        repair_hint(config)
    );
    let token = secret(obs, TOKEN_SECRET).map(|s| s.get("token"));
    let token = match token {
        None => {
            lines.fail(
                "token",
                format!("identity token not found: `{TOKEN_SECRET}` is missing"),
                hint,
            );
            return;
        }
        Some(None) => {
            lines.fail(
                "token",
                format!("identity token not found: `{TOKEN_SECRET}` has no `token`"),
                hint,
            );
            return;
        }
        Some(Some(token)) => token,
    };
    match &mgmt.token_digest {
        Ok(reference) if digest(token).ct_eq(reference) => {
            lines.ok("token", "identity token matches mgmt");
        }
        Ok(_) => lines.fail("token", "identity token differs from mgmt", hint),
        Err(why) => lines.warn(
            "token",
            format!("identity token not compared: {why}"),
            HINT_AFTER_FIXES,
        ),
    }
}

// --- rendering --------------------------------------------------------------

/// The report for people: per cluster, one `√ ‼ ×` line per check, a hint
/// under every ‼ and ×, then a summary line. `colour` adds ANSI colours.
pub fn render_text(report: &Report, colour: bool) -> String {
    let paint = |code: &str, text: &str| {
        if colour {
            format!("\u{1b}[{code}m{text}\u{1b}[0m")
        } else {
            text.to_owned()
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "relayctl check: instance `{}`, {} CA, {} client certs, authority `{}`",
        report.instance, report.ca_mode, report.client_cert_mode, report.authority
    );
    for cluster in &report.clusters {
        out.push('\n');
        let role = match cluster.role {
            Role::Management => "management",
            Role::Workload => "workload",
        };
        let _ = writeln!(out, "{} ({role})", paint("1", &cluster.name));
        for check in &cluster.checks {
            let code = match check.status {
                Status::Ok => "32",
                Status::Warn => "33",
                Status::Fail => "1;31",
            };
            let _ = writeln!(
                out,
                "  {} {}",
                paint(code, check.status.marker()),
                check.message
            );
            if let Some(hint) = &check.hint {
                let _ = writeln!(out, "    {} {hint}", paint("2", "hint:"));
            }
        }
    }
    out.push('\n');
    let _ = writeln!(out, "{}", summary_line(report));
    out
}

/// `Check passed: 20 passed, 1 warning, 0 failed.`
pub fn summary_line(report: &Report) -> String {
    let s = report.summary;
    format!(
        "Check {}: {} passed, {} warning{}, {} failed.",
        if report.passed() { "passed" } else { "failed" },
        s.ok,
        s.warn,
        if s.warn == 1 { "" } else { "s" },
        s.fail
    )
}

/// The report as JSON (the documented, versioned form).
pub fn render_json(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{ManifestFile, validate};
    use crate::material::Material;
    use crate::plan::{PlanInput, Randomness};

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2030-01-01 00:00 UTC)
    }

    fn config(client_mode: &str) -> TrustConfig {
        let text = format!(
            "apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata: {{ name: prod }}\nspec:\n  clientCerts: {{ mode: {client_mode}, validity: 2160h, renewBefore: 720h }}\n---\napiVersion: relayctl.dev/v1alpha1\nkind: ManagementCluster\nmetadata: {{ name: mgmt }}\n---\napiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata: {{ name: cluster-1 }}\n---\napiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata: {{ name: cluster-2 }}\n"
        );
        validate(
            &[ManifestFile {
                path: "fleet.yaml".into(),
                text,
            }],
            std::path::Path::new(""),
        )
        .unwrap_or_else(|d| panic!("{d:?}"))
    }

    /// What the clusters hold after `apply` of a fresh plan.
    fn converged(config: &TrustConfig) -> Observed {
        let empty = Observed {
            clusters: config
                .clusters()
                .map(|c| (c.name.clone(), Ok(ClusterObservation::default())))
                .collect(),
        };
        let token = || SecretBytes::from(TOKEN.to_owned());
        let planned = crate::plan::plan(&PlanInput {
            config,
            material: &Material::default(),
            observed: &empty,
            orphans: &BTreeMap::new(),
            adopt: false,
            prune: false,
            source: "test",
            now: now(),
            random: Randomness {
                keys: &pki::OsKeySource,
                token: &token,
            },
        })
        .unwrap_or_else(|e| panic!("{e}"));
        Observed {
            clusters: planned
                .writes
                .into_iter()
                .map(|cw| {
                    let secrets = cw
                        .writes
                        .into_iter()
                        .map(|w| (w.object.name.clone(), w.object))
                        .collect();
                    (
                        cw.cluster,
                        Ok(ClusterObservation {
                            secrets,
                            ..ClusterObservation::default()
                        }),
                    )
                })
                .collect(),
        }
    }

    fn cluster<'a>(report: &'a Report, name: &str) -> &'a ClusterReport {
        report
            .clusters
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    fn line<'a>(report: &'a Report, name: &str, id: &str) -> &'a Check {
        cluster(report, name)
            .checks
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no {id} on {name}: {report:#?}"))
    }

    fn obs<'a>(observed: &'a mut Observed, name: &str) -> &'a mut ClusterObservation {
        let name = ClusterName::parse(name).unwrap_or_else(|e| panic!("{e}"));
        match observed.clusters.get_mut(&name) {
            Some(Ok(obs)) => obs,
            _ => panic!("{name} not observed"),
        }
    }

    fn set(observed: &mut Observed, cluster: &str, secret: &str, key: &str, value: Vec<u8>) {
        obs(observed, cluster)
            .secrets
            .get_mut(secret)
            .unwrap_or_else(|| panic!("no {secret}"))
            .data
            .insert(key.to_owned(), SecretBytes::new(value));
    }

    #[test]
    fn a_converged_preprovisioned_fleet_is_all_ok_with_a_handshake_per_workload() {
        let config = config("preprovisioned");
        let report = check(&config, &converged(&config), now());
        let not_ok: Vec<&Check> = report
            .clusters
            .iter()
            .flat_map(|c| &c.checks)
            .filter(|c| c.status != Status::Ok)
            .collect();
        assert!(not_ok.is_empty(), "{not_ok:#?}");
        assert!(report.passed());
        for name in ["cluster-1", "cluster-2"] {
            let handshake = line(&report, name, "mtls-handshake");
            assert!(handshake.message.contains("succeeded"), "{handshake:?}");
        }
        let ids: Vec<&str> = cluster(&report, "mgmt")
            .checks
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(
            ids,
            [
                "root-ca",
                "root-ca-key",
                "signing-ca-chain",
                "signing-ca-key",
                "signing-ca-expiry",
                "server-cert-san",
                "server-cert-chain",
                "server-cert-key",
                "server-cert-expiry",
                "server-ca-bundle",
                "token"
            ]
        );
        let ids: Vec<&str> = cluster(&report, "cluster-1")
            .checks
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(
            ids,
            [
                "root-bundle",
                "token",
                "client-cert-chain",
                "client-cert-san",
                "client-cert-key",
                "client-cert-expiry",
                "mtls-handshake"
            ]
        );
    }

    #[test]
    fn token_mode_before_the_agent_bootstraps_warns_but_passes() {
        let config = config("token");
        let report = check(&config, &converged(&config), now());
        let client = line(&report, "cluster-1", "client-cert");
        assert_eq!(client.status, Status::Warn);
        assert!(
            client.message.contains("not yet bootstrapped"),
            "{client:?}"
        );
        assert_eq!(
            line(&report, "cluster-1", "mtls-handshake").status,
            Status::Warn
        );
        assert_eq!(report.summary.fail, 0);
        assert!(report.passed());
    }

    #[test]
    fn a_preprovisioned_client_cert_that_is_missing_fails() {
        let config = config("preprovisioned");
        let mut observed = converged(&config);
        obs(&mut observed, "cluster-2")
            .secrets
            .remove(CLIENT_SECRET);
        let report = check(&config, &observed, now());
        assert_eq!(
            line(&report, "cluster-2", "client-cert").status,
            Status::Fail
        );
        assert!(!report.passed());
    }

    #[test]
    fn a_token_differing_from_mgmt_fails_by_digest() {
        let config = config("preprovisioned");
        let mut observed = converged(&config);
        set(
            &mut observed,
            "cluster-1",
            TOKEN_SECRET,
            "token",
            b"other".to_vec(),
        );
        let report = check(&config, &observed, now());
        let token = line(&report, "cluster-1", "token");
        assert_eq!(token.status, Status::Fail);
        assert_eq!(token.message, "identity token differs from mgmt");
        assert_eq!(line(&report, "cluster-2", "token").status, Status::Ok);
    }

    #[test]
    fn a_root_bundle_differing_from_mgmt_fails_and_so_does_the_handshake() {
        let config = config("preprovisioned");
        let other = converged(&config);
        let mut observed = converged(&config);
        let foreign = match other.clusters.values().next() {
            Some(Ok(mgmt)) => mgmt.secrets[ROOT_SECRET].data["ca.crt"].expose().to_vec(),
            _ => panic!("no mgmt"),
        };
        set(&mut observed, "cluster-1", ROOT_SECRET, "ca.crt", foreign);
        let report = check(&config, &observed, now());
        assert_eq!(
            line(&report, "cluster-1", "root-bundle").status,
            Status::Fail
        );
        let handshake = line(&report, "cluster-1", "mtls-handshake");
        assert_eq!(handshake.status, Status::Fail);
        assert!(
            handshake
                .message
                .contains("the client rejected the handshake"),
            "{handshake:?}"
        );
        assert_eq!(
            line(&report, "cluster-2", "mtls-handshake").status,
            Status::Ok
        );
    }

    #[test]
    fn a_client_cert_with_another_clusters_san_fails() {
        let config = config("preprovisioned");
        let mut observed = converged(&config);
        let theirs = obs(&mut observed, "cluster-2").secrets[CLIENT_SECRET].clone();
        obs(&mut observed, "cluster-1")
            .secrets
            .insert(CLIENT_SECRET.to_owned(), theirs);
        let report = check(&config, &observed, now());
        let san = line(&report, "cluster-1", "client-cert-san");
        assert_eq!(san.status, Status::Fail);
        assert_eq!(
            san.message,
            "client certificate SAN is `cluster-2`, want `cluster-1`"
        );
    }

    #[test]
    fn a_key_that_does_not_match_fails_without_showing_the_key() {
        let config = config("preprovisioned");
        let mut observed = converged(&config);
        let server_key = obs(&mut observed, "mgmt").secrets[SERVER_SECRET].data["tls.key"].clone();
        set(
            &mut observed,
            "cluster-1",
            CLIENT_SECRET,
            "tls.key",
            server_key.expose().to_vec(),
        );
        let report = check(&config, &observed, now());
        assert_eq!(
            line(&report, "cluster-1", "client-cert-key").status,
            Status::Fail
        );
        let shown = format!(
            "{report:?}{}{}",
            render_json(&report),
            render_text(&report, false)
        );
        let pem = String::from_utf8_lossy(server_key.expose()).into_owned();
        for body in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!shown.contains(body));
        }
        assert!(!shown.contains(TOKEN));
    }

    #[test]
    fn leaves_warn_under_renew_before_and_fail_once_expired() {
        let config = config("preprovisioned");
        let observed = converged(&config);
        // Client certs: 2160h (90d) validity, renewBefore 720h (30d).
        let report = check(&config, &observed, now() + time::Duration::days(70));
        let expiry = line(&report, "cluster-1", "client-cert-expiry");
        assert_eq!(expiry.status, Status::Warn, "{expiry:?}");
        assert!(
            expiry.message.contains("under renewBefore 720h"),
            "{expiry:?}"
        );
        assert!(expiry.hint.is_some());
        assert!(report.passed(), "warnings do not fail");
        assert_eq!(
            line(&report, "cluster-1", "mtls-handshake").status,
            Status::Ok
        );

        let report = check(&config, &observed, now() + time::Duration::days(91));
        assert_eq!(
            line(&report, "cluster-1", "client-cert-expiry").status,
            Status::Fail
        );
        let handshake = line(&report, "cluster-1", "mtls-handshake");
        assert_eq!(handshake.status, Status::Fail);
        assert!(handshake.message.contains("expired"), "{handshake:?}");
    }

    #[test]
    fn ca_tiers_warn_under_365_and_60_days() {
        let config = config("preprovisioned");
        let observed = converged(&config);
        // Defaults: root 87600h (10y), intermediate 43800h (5y).
        let report = check(&config, &observed, now() + time::Duration::days(3650 - 100));
        assert_eq!(line(&report, "mgmt", "root-ca").status, Status::Warn);
        let report = check(&config, &observed, now() + time::Duration::days(1825 - 30));
        assert_eq!(line(&report, "mgmt", "root-ca").status, Status::Ok);
        let signing = line(&report, "mgmt", "signing-ca-expiry");
        assert_eq!(signing.status, Status::Warn, "{signing:?}");
        assert!(signing.message.contains("under 60 days"), "{signing:?}");
    }

    #[test]
    fn an_unreachable_cluster_fails_and_the_others_are_still_checked() {
        let config = config("preprovisioned");
        let mut observed = converged(&config);
        let name = ClusterName::parse("cluster-2").unwrap_or_else(|e| panic!("{e}"));
        observed
            .clusters
            .insert(name, Err("connection refused".to_owned()));
        let report = check(&config, &observed, now());
        let c2 = &cluster(&report, "cluster-2").checks;
        assert_eq!(c2.len(), 1);
        assert_eq!(c2[0].id, "reachable");
        assert_eq!(c2[0].status, Status::Fail);
        assert!(c2[0].message.contains("connection refused"));
        assert_eq!(
            line(&report, "cluster-1", "mtls-handshake").status,
            Status::Ok
        );
        assert!(!report.passed());
    }

    #[test]
    fn an_unreachable_mgmt_leaves_workload_comparisons_as_warnings() {
        let config = config("preprovisioned");
        let mut observed = converged(&config);
        observed
            .clusters
            .insert(config.management.name.clone(), Err("timed out".to_owned()));
        let report = check(&config, &observed, now());
        assert_eq!(line(&report, "mgmt", "reachable").status, Status::Fail);
        assert_eq!(
            line(&report, "cluster-1", "root-bundle").status,
            Status::Warn
        );
        assert_eq!(line(&report, "cluster-1", "token").status, Status::Warn);
        assert_eq!(
            line(&report, "cluster-1", "client-cert-san").status,
            Status::Ok
        );
        assert!(!report.passed());
    }

    #[test]
    fn gloo_mode_warns_while_the_management_server_has_not_written_its_certificate() {
        let mut config = config("token");
        let mut observed = converged(&config);
        config.ca.mode = CaMode::Gloo;
        obs(&mut observed, "mgmt").secrets.remove(SERVER_SECRET);
        let report = check(&config, &observed, now());
        assert_eq!(line(&report, "mgmt", "server-cert").status, Status::Warn);
        assert_eq!(line(&report, "mgmt", "signing-ca-chain").status, Status::Ok);
        assert!(report.passed());
    }

    #[test]
    fn external_mode_takes_the_root_bundle_from_the_server_secret_and_has_no_token() {
        let mut config = config("preprovisioned");
        let mut observed = converged(&config);
        config.ca.mode = CaMode::External;
        config.identity_token.enabled = false;
        config.client_certs.mode = ClientCertMode::External;
        for name in [ROOT_SECRET, SIGNING_SECRET, TOKEN_SECRET] {
            obs(&mut observed, "mgmt").secrets.remove(name);
        }
        for cluster in ["cluster-1", "cluster-2"] {
            obs(&mut observed, cluster).secrets.remove(TOKEN_SECRET);
        }
        let report = check(&config, &observed, now());
        let all: Vec<&Check> = report.clusters.iter().flat_map(|c| &c.checks).collect();
        assert!(all.iter().all(|c| c.status == Status::Ok), "{all:#?}");
        assert!(
            all.iter()
                .all(|c| c.id != "token" && !c.id.starts_with("signing"))
        );
        assert_eq!(
            line(&report, "cluster-2", "mtls-handshake").status,
            Status::Ok
        );
    }

    #[test]
    fn text_has_a_marker_per_line_hints_under_problems_and_a_summary() {
        let config = config("token");
        let mut observed = converged(&config);
        set(
            &mut observed,
            "cluster-1",
            TOKEN_SECRET,
            "token",
            b"other".to_vec(),
        );
        let report = check(&config, &observed, now());
        let text = render_text(&report, false);
        assert!(!text.contains('\u{1b}'));
        assert!(
            text.contains("mgmt (management)\n  √ root CA `CN=relay-root-ca`"),
            "{text}"
        );
        assert!(
            text.contains(
                "  × identity token differs from mgmt\n    hint: the agent cannot register"
            ),
            "{text}"
        );
        assert!(
            text.contains("  ‼ client certificate not yet bootstrapped"),
            "{text}"
        );
        assert!(
            text.ends_with(&format!(
                "\nCheck failed: {} passed, 4 warnings, 1 failed.\n",
                report.summary.ok
            )),
            "{text}"
        );
        let coloured = render_text(&report, true);
        assert!(coloured.contains("\u{1b}[1;31m×\u{1b}[0m"));
    }

    #[test]
    fn json_is_versioned_and_omits_hints_on_ok_lines() {
        let config = config("preprovisioned");
        let report = check(&config, &converged(&config), now());
        let value: serde_json::Value =
            serde_json::from_str(&render_json(&report)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value["formatVersion"], 1);
        assert_eq!(value["caMode"], "managed");
        assert_eq!(value["clientCertMode"], "preprovisioned");
        assert_eq!(value["clusters"][0]["role"], "management");
        assert_eq!(value["clusters"][1]["checks"][0]["status"], "ok");
        assert!(value["clusters"][1]["checks"][0].get("hint").is_none());
        assert_eq!(value["summary"]["fail"], 0);
        assert_eq!(value["checkedAt"], "2030-01-01T00:00:00Z");
    }
}
