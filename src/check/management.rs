//! The management cluster's lines: its root bundle, signing CA, server
//! certificate and token, and what workloads are then compared with.

use time::OffsetDateTime;

use super::lines::*;
use super::{CheckId, ClusterReport, INTERMEDIATE_WARN_DAYS, ROOT_WARN_DAYS, Role};
use crate::error::error_chain;
use crate::model::{CaMode, TrustConfig};
use crate::observed::ClusterObservation;
use crate::pki::{self, Bundle, Usage};
use crate::relay::key::{CA_CRT, TLS_CRT, TLS_KEY, TOKEN};
use crate::relay::{RelaySecret, key};
use crate::secret::SecretBytes;

const ROOT: &str = RelaySecret::Root.name();
const SIGNING: &str = RelaySecret::Signing.name();
const SERVER: &str = RelaySecret::Server.name();
const TOKEN_SECRET: &str = RelaySecret::Token.name();

pub(super) fn check_management(
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
                certificates: Vec::new(),
            },
            Management {
                bundle: Err(why()),
                token_digest: Err(why()),
                server: Err(why()),
                registered: config.registration.enabled.then(|| Err(why())),
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
            certificates: Vec::new(),
        },
        Management {
            bundle,
            token_digest,
            server,
            registered: config
                .registration
                .enabled
                .then(|| match &obs.registrations {
                    Some(Ok(found)) => Ok(found.keys().cloned().collect()),
                    Some(Err(why)) => Err(why.clone()),
                    None => Err("registrations were not observed".to_owned()),
                }),
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
    let from_root = secret(obs, ROOT).and_then(|s| s.get(key::CA_CRT));
    let (pem, source) = match from_root {
        Some(pem) => (pem, format!("`{ROOT}`")),
        None => {
            let from_server = (config.ca.mode == CaMode::External)
                .then(|| secret(obs, SERVER).and_then(|s| s.get(key::CA_CRT)))
                .flatten();
            match from_server {
                Some(pem) => (pem, format!("`{SERVER}` `{CA_CRT}`")),
                None => {
                    let message = match secret(obs, ROOT) {
                        Some(_) => {
                            format!("root bundle not found: `{ROOT}` has no `{CA_CRT}`")
                        }
                        None => format!("root bundle not found: `{ROOT}` is missing"),
                    };
                    lines.fail(CheckId::RootCa, message.clone(), repair_hint(config));
                    return Err("mgmt has no root bundle".to_owned());
                }
            }
        }
    };
    let bundle = match read_bundle(pem.expose()) {
        Ok(bundle) => bundle,
        Err(why) => {
            lines.fail(
                CheckId::RootCa,
                format!("root bundle in {source} is unreadable: {why}"),
                repair_hint(config),
            );
            return Err("mgmt's root bundle is unreadable".to_owned());
        }
    };
    let rotate =
        "plan a CA rotation: add the new root to the bundle everywhere before the old one expires";
    for (facts, _) in bundle.certs() {
        if !facts.is_ca {
            lines.fail(
                CheckId::RootCa,
                format!("`{}` in the root bundle is not a CA", facts.subject),
                "the root bundle must hold CA certificates only",
            );
            continue;
        }
        lines.line(
            CheckId::RootCa,
            ca_expiry("root CA", facts, ROOT_WARN_DAYS, now, rotate),
        );
    }
    if config.ca.mode == CaMode::Managed
        && let (Some(root), Some((facts, _))) = (secret(obs, ROOT), bundle.certs().first())
    {
        // relayctl keeps the root key in `managed` mode: without it no
        // intermediate can ever be issued again.
        key_line(
            lines,
            CheckId::RootCaKey,
            "root CA",
            root,
            facts,
            &format!(
                "restore `{TLS_KEY}` of `{ROOT}` from a backup; relayctl never replaces a root on its own (a new root would need every agent to trust it)"
            ),
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
    let Some(signing) = secret(obs, SIGNING) else {
        lines.fail(
            CheckId::SigningCa,
            format!("signing CA not found: `{SIGNING}` is missing"),
            hint,
        );
        return;
    };
    let Some(pem) = signing.get(key::TLS_CRT) else {
        lines.fail(
            CheckId::SigningCa,
            format!("signing CA not found: `{SIGNING}` has no `{TLS_CRT}`"),
            hint,
        );
        return;
    };
    let chain = match read_bundle(pem.expose()) {
        Ok(chain) => chain,
        Err(why) => {
            lines.fail(
                CheckId::SigningCa,
                format!("signing CA in `{SIGNING}` is unreadable: {why}"),
                hint,
            );
            return;
        }
    };
    let Some((facts, der)) = chain.certs().first() else {
        return;
    };
    match bundle {
        _ if !facts.is_ca => lines.fail(
            CheckId::SigningCaChain,
            format!("signing CA `{}` is not a CA", facts.subject),
            hint,
        ),
        Some(bundle)
            if pki::issued_by(
                der,
                &bundle
                    .certs()
                    .iter()
                    .map(|(_, d)| d.as_slice())
                    .collect::<Vec<_>>(),
            ) =>
        {
            lines.ok(
                CheckId::SigningCaChain,
                format!("signing CA `{}` is issued by the root CA", facts.subject),
            )
        }
        Some(_) => lines.fail(
            CheckId::SigningCaChain,
            format!(
                "signing CA `{}` is not issued by any root CA in the root bundle",
                facts.subject
            ),
            format!("certificates it signs will not verify; {hint}"),
        ),
        None => lines.warn(
            CheckId::SigningCaChain,
            format!(
                "signing CA `{}` not compared: mgmt has no readable root bundle",
                facts.subject
            ),
            HINT_AFTER_FIXES,
        ),
    }
    key_line(
        lines,
        CheckId::SigningCaKey,
        "signing CA",
        signing,
        facts,
        hint,
    );
    lines.line(
        CheckId::SigningCaExpiry,
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
    let Some(server) = secret(obs, SERVER) else {
        let message = format!("server certificate not found: `{SERVER}` is missing");
        if config.ca.mode == CaMode::Gloo {
            lines.warn(
                CheckId::ServerCert,
                message,
                "in `gloo` mode the management server creates it when it starts; check that it runs",
            );
        } else {
            lines.fail(CheckId::ServerCert, message, hint);
        }
        return Err("mgmt has no server certificate".to_owned());
    };
    let Some(chain_pem) = server.get(key::TLS_CRT) else {
        lines.fail(
            CheckId::ServerCert,
            format!("server certificate not found: `{SERVER}` has no `{TLS_CRT}`"),
            hint,
        );
        return Err("mgmt has no server certificate".to_owned());
    };
    let expect = pki::Expect {
        usage: Usage::Server,
        names: pki::Names::Covers(authority),
        roots: bundle.map(Bundle::pem),
        renew_before: config.server.renew_before,
        now,
    };
    let assessment = match pki::assess(chain_pem.expose(), server.get(key::TLS_KEY), &expect) {
        Ok(assessment) => assessment,
        Err(e) => {
            lines.fail(
                CheckId::ServerCert,
                format!("server certificate is unreadable: {}", error_chain(&e)),
                hint,
            );
            return Err("mgmt's server certificate is unreadable".to_owned());
        }
    };
    let leaf = assessment.leaf();
    if assessment.names_hold {
        lines.ok(
            CheckId::ServerCertSan,
            format!("server certificate covers the authority `{authority}`"),
        );
    } else {
        lines.fail(
            CheckId::ServerCertSan,
            format!(
                "server certificate SANs `{}` do not cover the authority `{authority}`",
                leaf.dns_names.join(", ")
            ),
            format!("agents dial `{authority}` and reject this certificate; {hint}"),
        );
    }
    match &assessment.verifies {
        Some(Ok(())) => lines.ok(
            CheckId::ServerCertChain,
            "server certificate chains to the root bundle",
        ),
        Some(Err(why)) => lines.fail(
            CheckId::ServerCertChain,
            format!("server certificate does not chain to the root bundle: {why}"),
            hint,
        ),
        None => lines.warn(
            CheckId::ServerCertChain,
            "server certificate chain not checked: mgmt has no readable root bundle",
            HINT_AFTER_FIXES,
        ),
    }
    let key = key_match_line(
        lines,
        CheckId::ServerCertKey,
        "server certificate",
        &assessment.key,
        hint,
    );
    let renew = match config.ca.mode {
        CaMode::External => "renew it in your PKI and update its source",
        _ => "`relayctl apply` renews it (the product never does)",
    };
    lines.line(
        CheckId::ServerCertExpiry,
        leaf_expiry("server certificate", leaf, &assessment.renewal, now, renew),
    );

    // The roots the server verifies agents with.
    let roots = server.get(key::CA_CRT);
    match (roots.map(|r| read_bundle(r.expose())), bundle) {
        (None, _) => lines.fail(
            CheckId::ServerCaBundle,
            format!("`{SERVER}` has no `{CA_CRT}`: the server cannot verify agents"),
            hint,
        ),
        (Some(Err(why)), _) => lines.fail(
            CheckId::ServerCaBundle,
            format!("`{SERVER}` `{CA_CRT}` is unreadable: {why}"),
            hint,
        ),
        // In `external` mode the server's `ca.crt` is the reference itself.
        (Some(Ok(_)), _) if secret(obs, ROOT).is_none() => {}
        (Some(Ok(server_roots)), Some(bundle)) => {
            if server_roots.fingerprints() == bundle.fingerprints() {
                lines.ok(
                    CheckId::ServerCaBundle,
                    format!("server `{CA_CRT}` matches the root bundle"),
                );
            } else {
                lines.fail(
                    CheckId::ServerCaBundle,
                    format!(
                        "server `{CA_CRT}` differs from the root bundle: holds {}, the root bundle {}",
                        server_roots.describe(),
                        bundle.describe()
                    ),
                    format!("the server verifies agents with its `{CA_CRT}`; {hint}"),
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
        _ => Err(format!(
            "mgmt's server certificate, key or `{CA_CRT}` is unusable"
        )),
    }
}

fn mgmt_token(
    config: &TrustConfig,
    obs: &ClusterObservation,
    lines: &mut Lines,
) -> Reference<SecretBytes> {
    let hint = repair_hint(config);
    match secret(obs, TOKEN_SECRET).map(|s| s.get(key::TOKEN)) {
        None => {
            lines.fail(
                CheckId::Token,
                format!("identity token not found: `{TOKEN_SECRET}` is missing"),
                format!("agents cannot register without it; {hint}"),
            );
            Err("mgmt has no identity token".to_owned())
        }
        Some(None) => {
            lines.fail(
                CheckId::Token,
                format!("identity token not found: `{TOKEN_SECRET}` has no `{TOKEN}`"),
                format!("agents cannot register without it; {hint}"),
            );
            Err("mgmt has no identity token".to_owned())
        }
        Some(Some(token)) if token.is_empty() => {
            lines.fail(
                CheckId::Token,
                "identity token is empty",
                format!("agents cannot register without it; {hint}"),
            );
            Err("mgmt's identity token is empty".to_owned())
        }
        Some(Some(token)) => {
            lines.ok(
                CheckId::Token,
                format!("identity token is set ({} bytes)", token.len()),
            );
            Ok(digest(token))
        }
    }
}
