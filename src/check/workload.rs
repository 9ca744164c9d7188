//! A workload cluster's lines: its root bundle and token against mgmt's,
//! its client certificate, and a real mTLS handshake with the server.

use time::OffsetDateTime;

use super::lines::*;
use super::{AGENT_GRACE_RATIO, CheckId, ClusterReport, Role};
use crate::error::error_chain;
use crate::model::{ClientCertMode, ClusterName, TrustConfig};
use crate::observed::ClusterObservation;
use crate::pki::{self, Usage};
use crate::relay::key::{CA_CRT, TLS_CRT, TOKEN};
use crate::relay::{RelaySecret, key};

const ROOT: &str = RelaySecret::Root.name();
const TOKEN_SECRET: &str = RelaySecret::Token.name();
const CLIENT: &str = RelaySecret::Client.name();

pub(super) fn check_workload(
    config: &TrustConfig,
    name: &ClusterName,
    observed: Option<&Result<ClusterObservation, String>>,
    mgmt: &Management,
    matrix: Option<&super::rotation::Matrix>,
    now: OffsetDateTime,
) -> ClusterReport {
    let mut lines = Lines::default();
    if let Some(obs) = reachable(&mut lines, observed) {
        workload_lines(config, name, obs, mgmt, now, &mut lines);
        if let (Some(matrix), Ok(server), Some(roots)) = (
            matrix,
            &mgmt.server,
            secret(obs, ROOT).and_then(|s| s.get(key::CA_CRT)),
        ) {
            matrix.line(
                &config.server.authority,
                &server.roots_pem,
                roots.expose(),
                now,
                &mut lines,
            );
        }
    }
    ClusterReport {
        name: name.as_str().to_owned(),
        role: Role::Workload,
        checks: lines.0,
        certificates: Vec::new(),
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
    registration(name, mgmt, lines);
    let own_bundle = workload_root(config, obs, mgmt, lines);
    if config.identity_token.enabled {
        workload_token(config, obs, mgmt, lines);
    }

    let Some((client, key)) =
        client_cert(config, name, obs, mgmt, own_bundle.as_deref(), now, lines)
    else {
        return;
    };
    handshake(config, obs, mgmt, client, key, now, lines);
}

/// Whether the management server will accept this cluster's agent: it
/// refuses a cluster without a `KubernetesCluster` on mgmt.
fn registration(name: &ClusterName, mgmt: &Management, lines: &mut Lines) {
    use crate::relay::registration::{CRD, KIND};
    match &mgmt.registered {
        None => {}
        Some(Ok(registered)) if registered.contains(name.as_str()) => lines.ok(
            CheckId::Registration,
            format!("registered with the management server ({KIND} `{name}`)"),
        ),
        Some(Ok(_)) => lines.fail(
            CheckId::Registration,
            format!("not registered: mgmt has no {KIND} `{name}`"),
            "the management server refuses the agent of an unregistered cluster; `relayctl apply` registers it",
        ),
        Some(Err(why)) => lines.fail(
            CheckId::Registration,
            format!("registration not checked: {why}"),
            format!("install the product's CRD `{CRD}` on mgmt, or set `spec.registration.enabled: false`"),
        ),
    }
}

/// What the agent would say of its client certificate, and how it is fixed.
fn client_hint(config: &TrustConfig) -> &'static str {
    match config.client_certs.mode {
        ClientCertMode::Token => {
            "the agent writes and renews it with the identity token; check the agent's logs"
        }
        ClientCertMode::Preprovisioned => repair_hint(config),
        ClientCertMode::External => {
            "issue it in your PKI and point the cluster's `spec.clientCert` at it; `relayctl apply` copies it"
        }
    }
}

/// The client certificate's lines, from one [`pki::assess`]ment: chain,
/// SAN, key, renewal. Returns the Secret and its key when the handshake can
/// be tried.
fn client_cert<'o>(
    config: &TrustConfig,
    name: &ClusterName,
    obs: &'o ClusterObservation,
    mgmt: &Management,
    own_bundle: Option<&[u8]>,
    now: OffsetDateTime,
    lines: &mut Lines,
) -> Option<(&'o crate::observed::SecretObject, Option<pki::PrivateKey>)> {
    let mode = config.client_certs.mode;
    let client_hint = client_hint(config);
    let client = secret(obs, CLIENT);
    let Some((client, chain_pem)) = client.and_then(|s| s.get(key::TLS_CRT).map(|c| (s, c))) else {
        let message = match client {
            Some(_) => format!("client certificate not found: `{CLIENT}` has no `{TLS_CRT}`"),
            None => format!("client certificate not found: `{CLIENT}` is missing"),
        };
        if mode == ClientCertMode::Token && client.is_none() {
            lines.warn(
                CheckId::ClientCert,
                format!("client certificate not yet bootstrapped: `{CLIENT}` is missing"),
                "the agent writes it after it registers with the identity token; if it stays missing, check the agent's logs",
            );
            lines.warn(
                CheckId::MtlsHandshake,
                "mTLS handshake not tried: no client certificate yet",
                "it runs once the agent has written its client certificate",
            );
        } else {
            lines.fail(CheckId::ClientCert, message, client_hint);
            lines.warn(
                CheckId::MtlsHandshake,
                "mTLS handshake not tried: no client certificate",
                HINT_AFTER_FIXES,
            );
        }
        return None;
    };
    // Chain: to mgmt's root bundle (what the server trusts), else the cluster's own.
    let roots = match (&mgmt.bundle, own_bundle) {
        (Ok(bundle), _) => Some((bundle.pem(), "the root bundle")),
        (Err(_), Some(own)) => Some((own, "this cluster's root bundle")),
        (Err(_), None) => None,
    };
    let expect = pki::Expect {
        usage: Usage::Client,
        names: pki::Names::Cluster(name.as_str()),
        roots: roots.map(|(r, _)| r),
        renew_before: config.client_certs.renew_before,
        now,
    };
    let assessment = match pki::assess(chain_pem.expose(), client.get(key::TLS_KEY), &expect) {
        Ok(assessment) => assessment,
        Err(e) => {
            lines.fail(
                CheckId::ClientCert,
                format!("client certificate is unreadable: {}", error_chain(&e)),
                client_hint,
            );
            lines.warn(
                CheckId::MtlsHandshake,
                "mTLS handshake not tried: the client certificate is unreadable",
                HINT_AFTER_FIXES,
            );
            return None;
        }
    };
    let leaf = assessment.leaf();
    match (&assessment.verifies, roots) {
        (Some(Ok(())), Some((_, which))) => lines.ok(
            CheckId::ClientCertChain,
            format!("client certificate chains to {which}"),
        ),
        (Some(Err(why)), Some((_, which))) => {
            let repair = if mode == ClientCertMode::Token {
                "the agent's certificate predates the current root: `relayctl apply` deletes it so the agent bootstraps again with the identity token"
            } else {
                client_hint
            };
            lines.fail(
                CheckId::ClientCertChain,
                format!("client certificate does not chain to {which}: {why}"),
                format!("the management server will reject the agent; {repair}"),
            )
        }
        _ => lines.warn(
            CheckId::ClientCertChain,
            "client certificate chain not checked: no readable root bundle",
            HINT_AFTER_FIXES,
        ),
    }
    if assessment.names_hold {
        lines.ok(
            CheckId::ClientCertSan,
            format!("client certificate SAN is `{name}`"),
        );
    } else {
        lines.fail(
            CheckId::ClientCertSan,
            format!(
                "client certificate SAN is `{}`, want `{name}`",
                leaf.dns_names.join(", ")
            ),
            format!(
                "the management server takes the agent's identity from the SAN and rejects a mismatch; {client_hint}"
            ),
        );
    }
    let key = key_match_line(
        lines,
        CheckId::ClientCertKey,
        "client certificate",
        &assessment.key,
        client_hint,
    );
    // In token mode the agent renews its own certificate, at its grace
    // ratio of the lifetime, not at relayctl's `renewBefore`.
    let (renewal, renew_hint) = if mode == ClientCertMode::Token {
        (
            pki::renewal_at_ratio(leaf, AGENT_GRACE_RATIO),
            "the agent renews it itself once less than its grace ratio of the lifetime is left; past that, check the agent's logs",
        )
    } else {
        (assessment.renewal, client_hint)
    };
    lines.line(
        CheckId::ClientCertExpiry,
        leaf_expiry("client certificate", leaf, &renewal, now, renew_hint),
    );
    Some((client, key))
}

/// The handshake, as the server and this agent would do it.
fn handshake(
    config: &TrustConfig,
    obs: &ClusterObservation,
    mgmt: &Management,
    client: &crate::observed::SecretObject,
    key: Option<pki::PrivateKey>,
    now: OffsetDateTime,
    lines: &mut Lines,
) {
    let Some(chain_pem) = client.get(key::TLS_CRT) else {
        return;
    };
    let client_roots = secret(obs, ROOT).and_then(|s| s.get(key::CA_CRT));
    let (server, key, client_roots) = match (&mgmt.server, key, client_roots) {
        (Ok(server), Some(key), Some(roots)) => (server, key, roots),
        (Err(why), _, _) => {
            lines.warn(
                CheckId::MtlsHandshake,
                format!("mTLS handshake not tried: {why}"),
                HINT_AFTER_FIXES,
            );
            return;
        }
        (_, None, _) => {
            lines.warn(
                CheckId::MtlsHandshake,
                "mTLS handshake not tried: the client key is unusable",
                HINT_AFTER_FIXES,
            );
            return;
        }
        (_, _, None) => {
            lines.warn(
                CheckId::MtlsHandshake,
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
            CheckId::MtlsHandshake,
            format!(
                "mTLS handshake with the management server as `{authority}` succeeded ({})",
                done.protocol
            ),
        ),
        Err(e) => lines.fail(
            CheckId::MtlsHandshake,
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
    let root = secret(obs, ROOT);
    let Some(pem) = root.and_then(|s| s.get(key::CA_CRT)) else {
        let message = match root {
            Some(_) => format!("root bundle not found: `{ROOT}` has no `{CA_CRT}`"),
            None => format!("root bundle not found: `{ROOT}` is missing"),
        };
        lines.fail(
            CheckId::RootBundle,
            message,
            format!("the agent cannot verify the management server; {hint}"),
        );
        return None;
    };
    let own = match read_bundle(pem.expose()) {
        Ok(own) => own,
        Err(why) => {
            lines.fail(
                CheckId::RootBundle,
                format!("root bundle is unreadable: {why}"),
                hint,
            );
            return None;
        }
    };
    match &mgmt.bundle {
        Ok(reference) if reference.fingerprints() == own.fingerprints() => {
            let subjects: Vec<String> = own
                .certs()
                .iter()
                .map(|(f, _)| format!("`{}`", f.subject))
                .collect();
            lines.ok(
                CheckId::RootBundle,
                format!("root bundle matches mgmt ({})", subjects.join(", ")),
            );
        }
        Ok(reference) => lines.fail(
            CheckId::RootBundle,
            format!(
                "root bundle differs from mgmt: holds {}, mgmt has {}",
                own.describe(),
                reference.describe()
            ),
            format!("the agent will not trust the management server; {hint}"),
        ),
        Err(why) => lines.warn(
            CheckId::RootBundle,
            format!("root bundle not compared: {why}"),
            HINT_AFTER_FIXES,
        ),
    }
    if root.is_some_and(|s| s.get(key::TLS_KEY).is_some()) {
        lines.warn(
            CheckId::RootKey,
            format!("`{ROOT}` holds the root CA key; a workload cluster needs `{CA_CRT}` only"),
            format!("anyone who can read the Secret can mint relay identities; {hint}"),
        );
    }
    Some(own.pem().to_vec())
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
    let token = secret(obs, TOKEN_SECRET).map(|s| s.get(key::TOKEN));
    let token = match token {
        None => {
            lines.fail(
                CheckId::Token,
                format!("identity token not found: `{TOKEN_SECRET}` is missing"),
                hint,
            );
            return;
        }
        Some(None) => {
            lines.fail(
                CheckId::Token,
                format!("identity token not found: `{TOKEN_SECRET}` has no `{TOKEN}`"),
                hint,
            );
            return;
        }
        Some(Some(token)) => token,
    };
    match &mgmt.token_digest {
        Ok(reference) if digest(token).ct_eq(reference) => {
            lines.ok(CheckId::Token, "identity token matches mgmt");
        }
        Ok(_) => lines.fail(CheckId::Token, "identity token differs from mgmt", hint),
        Err(why) => lines.warn(
            CheckId::Token,
            format!("identity token not compared: {why}"),
            HINT_AFTER_FIXES,
        ),
    }
}
