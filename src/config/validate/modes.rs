//! The rules across fields that the CA mode decides: which client
//! certificate modes and tokens it allows, what relayctl issues in it (and
//! so whose validity must nest), and which material it needs or ignores.
//!
//! DESIGN.md §1 and §2 state these rules; each is one function here, run by
//! [`check`] once every field has been read on its own.

use super::path;
use crate::config::diag::{Code, Reporter};
use crate::config::raw::RawRelayTrustSpec;
use crate::model::{
    CaConfig, CaMode, ClientCertConfig, ClientCertMode, MaterialSource, ServerConfig, TokenConfig,
};

/// Whether identity tokens are written when `identityToken.enabled` is not
/// given: agents bootstrap with them in every mode but `external`.
pub(super) fn tokens_by_default(mode: CaMode) -> bool {
    mode != CaMode::External
}

/// `clientCerts.mode` when not given: agents bootstrap with the token,
/// except in `external` mode, where your PKI issues their certificates.
pub(super) fn default_client_mode(mode: CaMode) -> ClientCertMode {
    if mode == CaMode::External {
        ClientCertMode::External
    } else {
        ClientCertMode::Token
    }
}

/// Every rule across fields of the `RelayTrust` spec. `spec` is the raw
/// text, for rules about what was written rather than defaulted.
pub(super) fn check(
    r: &mut Reporter<'_>,
    spec: &RawRelayTrustSpec,
    ca: &CaConfig,
    server: &ServerConfig,
    client_certs: &ClientCertConfig,
    token: &TokenConfig,
) {
    client_mode_rules(r, spec, ca.mode, client_certs.mode, token);
    signing_key_rule(r, ca, client_certs.mode);
    material_rules(r, ca, &server.cert, &server.private_key, token);
    validity_order(r, ca, server, client_certs);
}

/// Tokens and client certificate modes the CA mode allows.
fn client_mode_rules(
    r: &mut Reporter<'_>,
    spec: &RawRelayTrustSpec,
    mode: CaMode,
    client_mode: ClientCertMode,
    token: &TokenConfig,
) {
    if mode == CaMode::External {
        if spec.identity_token.enabled == Some(true) {
            r.at_value(&path(&["spec", "identityToken", "enabled"]), Code::ExternalWithTokens, "identity tokens cannot be used in `external` CA mode".to_owned(), Some("when you bring and rotate both server and client certificates, agents must be given client certificates directly: set `identityToken.enabled: false` or remove it".to_owned()));
        }
        if spec.client_certs.mode.is_some() && client_mode != ClientCertMode::External {
            r.at_value(&path(&["spec", "clientCerts", "mode"]), Code::ExternalClientMode, format!("`clientCerts.mode: {client_mode}` is not possible in `external` CA mode"), Some("relayctl holds no CA key in `external` mode: use `clientCerts.mode: external` (or remove the field)".to_owned()));
        }
    } else if client_mode == ClientCertMode::External {
        r.at_value(&path(&["spec", "clientCerts", "mode"]), Code::ExternalClientMode, format!("`clientCerts.mode: external` needs `ca.mode: external`, not `{mode}`"), Some("with a CA relayctl can use, let it issue client certs (`preprovisioned`) or let agents bootstrap (`token`)".to_owned()));
    }
    if client_mode == ClientCertMode::Token && !token.enabled {
        r.at_value(&path(&["spec", "identityToken", "enabled"]), Code::TokenModeWithoutTokens, "`clientCerts.mode: token` needs the identity token, but `identityToken.enabled` is false".to_owned(), Some("enable the token, or use `clientCerts.mode: preprovisioned`".to_owned()));
    }
}

/// relayctl can only preprovision client certificates it can sign.
fn signing_key_rule(r: &mut Reporter<'_>, ca: &CaConfig, client_mode: ClientCertMode) {
    let mode = ca.mode;
    if client_mode == ClientCertMode::Preprovisioned && !ca.can_sign() {
        r.at_value(&path(&["spec", "clientCerts", "mode"]), Code::PreprovisionedWithoutSigningKey, format!("`clientCerts.mode: preprovisioned` needs a signing key, and `{mode}` CA mode gives relayctl none"), Some(match mode {
            CaMode::Custom => "give `ca.root.privateKey` (the intermediate is derived) or `ca.intermediate.cert` and `ca.intermediate.privateKey`".to_owned(),
            _ => "use `managed`, `gloo` or `custom` CA mode with a key, or `clientCerts.mode: external`".to_owned(),
        }));
    }
}

/// Validity order: leaf <= intermediate <= root, only for what relayctl
/// issues (both CAs in `managed` mode; the intermediate in `custom` mode
/// when none is brought).
fn validity_order(
    r: &mut Reporter<'_>,
    ca: &CaConfig,
    server: &ServerConfig,
    client_certs: &ClientCertConfig,
) {
    let mode = ca.mode;
    let issues_cas = matches!(mode, CaMode::Managed)
        || (mode == CaMode::Custom && ca.intermediate.cert.is_none());
    if mode == CaMode::Managed && ca.intermediate.validity > ca.root.validity {
        r.at_value(&path(&["spec", "ca", "intermediate", "validity"]), Code::ValidityOrder, format!("intermediate validity `{}` is longer than root validity `{}`", ca.intermediate.validity, ca.root.validity), Some("a certificate never outlives its issuer: shorten the intermediate or lengthen the root".to_owned()));
    }
    if !issues_cas {
        return;
    }
    // Client certificates are only issued by relayctl when preprovisioned.
    for (field, validity, issued) in [
        ("server", server.validity, true),
        (
            "clientCerts",
            client_certs.validity,
            client_certs.mode == ClientCertMode::Preprovisioned,
        ),
    ] {
        if issued && validity > ca.intermediate.validity {
            r.at_value(&path(&["spec", field, "validity"]), Code::ValidityOrder, format!("{field} validity `{validity}` is longer than intermediate validity `{}`", ca.intermediate.validity), Some("a leaf never outlives its issuer: shorten the leaf or lengthen the intermediate".to_owned()));
        }
    }
}

/// Which material each CA mode needs and which it ignores.
fn material_rules(
    r: &mut Reporter<'_>,
    ca: &CaConfig,
    server_cert: &Option<MaterialSource>,
    server_key: &Option<MaterialSource>,
    token: &TokenConfig,
) {
    // A field that is written but invalid was already reported by the source
    // reader; saying it is also "required" would only confuse.
    let written = |r: &Reporter<'_>, field: &[&str]| r.node.get(&path(field)).is_some();
    let missing = |r: &mut Reporter<'_>, field: &[&str], why: &str| {
        if written(r, field) {
            return;
        }
        r.at_key(
            &path(&field[..field.len() - 1]),
            Code::MissingMaterial,
            format!(
                "`{}` is required in `{}` CA mode",
                field.join(".").trim_start_matches("spec."),
                ca.mode
            ),
            Some(why.to_owned()),
        );
    };
    let unused = |r: &mut Reporter<'_>, field: &[&str], why: &str| {
        r.at_key(
            &path(field),
            Code::UnusedMaterial,
            format!(
                "`{}` is not used in `{}` CA mode",
                field.join(".").trim_start_matches("spec."),
                ca.mode
            ),
            Some(why.to_owned()),
        );
    };
    match ca.mode {
        CaMode::Managed => {
            for (present, field) in [
                (ca.root.cert.is_some(), "cert"),
                (ca.root.private_key.is_some(), "privateKey"),
            ] {
                if present {
                    unused(
                        r,
                        &["spec", "ca", "root", field],
                        "relayctl generates the root in `managed` mode; to bring your own root use `mode: custom`",
                    );
                }
            }
            for (present, field) in [
                (ca.intermediate.cert.is_some(), "cert"),
                (ca.intermediate.private_key.is_some(), "privateKey"),
            ] {
                if present {
                    unused(
                        r,
                        &["spec", "ca", "intermediate", field],
                        "relayctl generates the intermediate in `managed` mode; use `mode: custom` to bring one",
                    );
                }
            }
        }
        CaMode::Gloo => {
            for (which, c) in [("root", &ca.root), ("intermediate", &ca.intermediate)] {
                for (present, field) in [
                    (c.cert.is_some(), "cert"),
                    (c.private_key.is_some(), "privateKey"),
                ] {
                    if present {
                        unused(
                            r,
                            &["spec", "ca", which, field],
                            "in `gloo` mode the management server's own CA secrets are read from the management cluster",
                        );
                    }
                }
            }
            if token.value.is_some() {
                unused(
                    r,
                    &["spec", "identityToken", "value"],
                    "in `gloo` mode the token is read from the management server's own `relay-identity-token-secret`",
                );
            }
        }
        CaMode::Custom => {
            if ca.root.cert.is_none() {
                missing(
                    r,
                    &["spec", "ca", "root", "cert"],
                    "give the root certificate (PEM) with `{ file: ... }`, `{ env: ... }` or `{ secret: ... }`",
                );
            }
            let int_cert = written(r, &["spec", "ca", "intermediate", "cert"]);
            let int_key = written(r, &["spec", "ca", "intermediate", "privateKey"]);
            let root_key = written(r, &["spec", "ca", "root", "privateKey"]);
            if int_cert != int_key {
                r.at_key(
                    &path(&["spec", "ca", "intermediate"]),
                    Code::MissingMaterial,
                    "`ca.intermediate` needs both `cert` and `privateKey`, or neither".to_owned(),
                    Some(
                        "without them the intermediate is derived from `ca.root.privateKey`"
                            .to_owned(),
                    ),
                );
            }
            if !int_cert && !root_key {
                r.at_key(&path(&["spec", "ca"]), Code::MissingMaterial, "`custom` CA mode needs either `ca.root.privateKey` or `ca.intermediate.cert` with `ca.intermediate.privateKey`".to_owned(), Some("relayctl must be able to sign the server certificate".to_owned()));
            }
        }
        CaMode::External => {
            if ca.root.cert.is_none() {
                missing(
                    r,
                    &["spec", "ca", "root", "cert"],
                    "the root (or bundle) that agents use to verify the server; give it as a source",
                );
            }
            if server_cert.is_none() {
                missing(
                    r,
                    &["spec", "server", "cert"],
                    "in `external` mode your PKI issues the server certificate; give it as a source",
                );
            }
            if server_key.is_none() {
                missing(
                    r,
                    &["spec", "server", "privateKey"],
                    "give the server certificate's key as a source (never commit it in clear)",
                );
            }
            for (which, c) in [("root", &ca.root), ("intermediate", &ca.intermediate)] {
                if c.private_key.is_some() {
                    unused(
                        r,
                        &["spec", "ca", which, "privateKey"],
                        "relayctl holds no CA key in `external` mode; use `custom` mode to let it sign",
                    );
                }
            }
            if ca.intermediate.cert.is_some() {
                unused(
                    r,
                    &["spec", "ca", "intermediate", "cert"],
                    "in `external` mode the intermediate travels inside the server and client `tls.crt` chains",
                );
            }
        }
    }
    if ca.mode != CaMode::External && (server_cert.is_some() || server_key.is_some()) {
        let field = if server_cert.is_some() {
            "cert"
        } else {
            "privateKey"
        };
        unused(
            r,
            &["spec", "server", field],
            "relayctl issues the server certificate unless `ca.mode` is `external`",
        );
    }
}
