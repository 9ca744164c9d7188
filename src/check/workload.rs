//! A workload cluster's lines: its root bundle and token against mgmt's,
//! its client certificate, and a real mTLS handshake with the server.

use time::OffsetDateTime;

use super::lines::*;
use super::{CheckId, ClusterReport, Role};
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
        return;
    };
    let chain = match read_bundle(chain_pem.expose()) {
        Ok(chain) => chain,
        Err(why) => {
            lines.fail(
                CheckId::ClientCert,
                format!("client certificate is unreadable: {why}"),
                client_hint,
            );
            lines.warn(
                CheckId::MtlsHandshake,
                "mTLS handshake not tried: the client certificate is unreadable",
                HINT_AFTER_FIXES,
            );
            return;
        }
    };
    let Some((leaf, _)) = chain.certs().first() else {
        return;
    };

    // Chain: to mgmt's root bundle (what the server trusts), else the cluster's own.
    let roots = match (&mgmt.bundle, &own_bundle) {
        (Ok(bundle), _) => Some((bundle.pem(), "the root bundle")),
        (Err(_), Some(own)) => Some((own.as_slice(), "this cluster's root bundle")),
        (Err(_), None) => None,
    };
    match roots {
        Some((roots, which)) => {
            match pki::verify_chain(chain_pem.expose(), roots, Usage::Client, None, now) {
                Ok(()) => lines.ok(
                    CheckId::ClientCertChain,
                    format!("client certificate chains to {which}"),
                ),
                Err(e) => lines.fail(
                    CheckId::ClientCertChain,
                    format!(
                        "client certificate does not chain to {which}: {}",
                        error_chain(&e)
                    ),
                    format!("the management server will reject the agent; {client_hint}"),
                ),
            }
        }
        None => lines.warn(
            CheckId::ClientCertChain,
            "client certificate chain not checked: no readable root bundle",
            HINT_AFTER_FIXES,
        ),
    }
    if leaf.dns_names == [name.as_str()] {
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
    let key = key_line(
        lines,
        CheckId::ClientCertKey,
        "client certificate",
        client,
        leaf,
        client_hint,
    );
    lines.line(
        CheckId::ClientCertExpiry,
        leaf_expiry(
            "client certificate",
            leaf,
            config.client_certs.renew_before,
            now,
            client_hint,
        ),
    );

    // The handshake, as the server and this agent would do it.
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
