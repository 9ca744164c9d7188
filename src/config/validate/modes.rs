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
    material_rules(r, ca, server, token);
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

/// A piece of material the `RelayTrust` spec may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Material {
    RootCert,
    RootKey,
    IntermediateCert,
    IntermediateKey,
    ServerCert,
    ServerKey,
    TokenValue,
}

impl Material {
    /// The field that names it.
    fn field(self) -> &'static [&'static str] {
        match self {
            Self::RootCert => &["spec", "ca", "root", "cert"],
            Self::RootKey => &["spec", "ca", "root", "privateKey"],
            Self::IntermediateCert => &["spec", "ca", "intermediate", "cert"],
            Self::IntermediateKey => &["spec", "ca", "intermediate", "privateKey"],
            Self::ServerCert => &["spec", "server", "cert"],
            Self::ServerKey => &["spec", "server", "privateKey"],
            Self::TokenValue => &["spec", "identityToken", "value"],
        }
    }

    /// Its source, when one is given (and valid).
    fn source<'a>(
        self,
        ca: &'a CaConfig,
        server: &'a ServerConfig,
        token: &'a TokenConfig,
    ) -> &'a Option<MaterialSource> {
        match self {
            Self::RootCert => &ca.root.cert,
            Self::RootKey => &ca.root.private_key,
            Self::IntermediateCert => &ca.intermediate.cert,
            Self::IntermediateKey => &ca.intermediate.private_key,
            Self::ServerCert => &server.cert,
            Self::ServerKey => &server.private_key,
            Self::TokenValue => &token.value,
        }
    }
}

/// What a CA mode does with a piece of material.
#[derive(Debug, Clone, Copy)]
enum Use {
    /// The mode cannot work without it; the hint says what to give.
    Needed(&'static str),
    /// The mode never reads it; the hint says why, or what to do instead.
    Ignored(&'static str),
}

/// Why `managed` mode ignores a brought root.
const MANAGED_ROOT: &str =
    "relayctl generates the root in `managed` mode; to bring your own root use `mode: custom`";
/// Why `managed` mode ignores a brought intermediate.
const MANAGED_INTERMEDIATE: &str =
    "relayctl generates the intermediate in `managed` mode; use `mode: custom` to bring one";
/// Why `gloo` mode ignores brought CAs.
const GLOO_CA: &str =
    "in `gloo` mode the management server's own CA secrets are read from the management cluster";
/// Why `gloo` mode ignores a brought token.
const GLOO_TOKEN: &str = "in `gloo` mode the token is read from the management server's own `relay-identity-token-secret`";
/// What `custom` mode needs of the root.
const CUSTOM_ROOT_CERT: &str =
    "give the root certificate (PEM) with `{ file: ... }`, `{ env: ... }` or `{ secret: ... }`";
/// What `external` mode needs of the root.
const EXTERNAL_ROOT_CERT: &str =
    "the root (or bundle) that agents use to verify the server; give it as a source";
/// Why `external` mode ignores CA keys.
const EXTERNAL_CA_KEY: &str =
    "relayctl holds no CA key in `external` mode; use `custom` mode to let it sign";
/// Why `external` mode ignores a brought intermediate.
const EXTERNAL_INTERMEDIATE: &str =
    "in `external` mode the intermediate travels inside the server and client `tls.crt` chains";
/// What `external` mode needs of the server certificate.
const EXTERNAL_SERVER_CERT: &str =
    "in `external` mode your PKI issues the server certificate; give it as a source";
/// What `external` mode needs of the server key.
const EXTERNAL_SERVER_KEY: &str =
    "give the server certificate's key as a source (never commit it in clear)";

/// Which material each CA mode needs and which it ignores; what a mode does
/// not list is optional in it. Two rules do not fit one row:
/// [`custom_signing_material`] (a root key or a whole intermediate) and
/// [`issued_server_rule`] (the server certificate in every other mode).
const MATERIAL: &[(CaMode, Material, Use)] = {
    use CaMode::{Custom, External, Gloo, Managed};
    use Material::{
        IntermediateCert, IntermediateKey, RootCert, RootKey, ServerCert, ServerKey, TokenValue,
    };
    use Use::{Ignored, Needed};
    &[
        (Managed, RootCert, Ignored(MANAGED_ROOT)),
        (Managed, RootKey, Ignored(MANAGED_ROOT)),
        (Managed, IntermediateCert, Ignored(MANAGED_INTERMEDIATE)),
        (Managed, IntermediateKey, Ignored(MANAGED_INTERMEDIATE)),
        (Gloo, RootCert, Ignored(GLOO_CA)),
        (Gloo, RootKey, Ignored(GLOO_CA)),
        (Gloo, IntermediateCert, Ignored(GLOO_CA)),
        (Gloo, IntermediateKey, Ignored(GLOO_CA)),
        (Gloo, TokenValue, Ignored(GLOO_TOKEN)),
        (Custom, RootCert, Needed(CUSTOM_ROOT_CERT)),
        (External, RootCert, Needed(EXTERNAL_ROOT_CERT)),
        (External, RootKey, Ignored(EXTERNAL_CA_KEY)),
        (External, IntermediateCert, Ignored(EXTERNAL_INTERMEDIATE)),
        (External, IntermediateKey, Ignored(EXTERNAL_CA_KEY)),
        (External, ServerCert, Needed(EXTERNAL_SERVER_CERT)),
        (External, ServerKey, Needed(EXTERNAL_SERVER_KEY)),
    ]
};

/// [`MATERIAL`], [`custom_signing_material`] and [`issued_server_rule`].
fn material_rules(r: &mut Reporter<'_>, ca: &CaConfig, server: &ServerConfig, token: &TokenConfig) {
    for (_, material, rule) in MATERIAL.iter().filter(|(mode, ..)| *mode == ca.mode) {
        let given = material.source(ca, server, token).is_some();
        // A field that is written but invalid was already reported by the
        // source reader; saying it is also "required" would only confuse.
        match *rule {
            Use::Needed(hint) if !given && !written(r, material.field()) => {
                missing(r, ca.mode, material.field(), hint);
            }
            Use::Ignored(hint) if given => unused(r, ca.mode, material.field(), hint),
            _ => {}
        }
    }
    if ca.mode == CaMode::Custom {
        custom_signing_material(r);
    }
    issued_server_rule(r, ca.mode, server);
}

/// `custom` mode must be able to sign: with the root's key (the
/// intermediate is then derived) or with a brought intermediate, whole.
fn custom_signing_material(r: &mut Reporter<'_>) {
    let int_cert = written(r, Material::IntermediateCert.field());
    let int_key = written(r, Material::IntermediateKey.field());
    let root_key = written(r, Material::RootKey.field());
    if int_cert != int_key {
        r.at_key(
            &path(&["spec", "ca", "intermediate"]),
            Code::MissingMaterial,
            "`ca.intermediate` needs both `cert` and `privateKey`, or neither".to_owned(),
            Some("without them the intermediate is derived from `ca.root.privateKey`".to_owned()),
        );
    }
    if !int_cert && !root_key {
        r.at_key(&path(&["spec", "ca"]), Code::MissingMaterial, "`custom` CA mode needs either `ca.root.privateKey` or `ca.intermediate.cert` with `ca.intermediate.privateKey`".to_owned(), Some("relayctl must be able to sign the server certificate".to_owned()));
    }
}

/// relayctl issues the server certificate in every mode but `external`: a
/// brought one is reported once for the pair, at the certificate when both
/// are given.
fn issued_server_rule(r: &mut Reporter<'_>, mode: CaMode, server: &ServerConfig) {
    if mode == CaMode::External {
        return;
    }
    let material = match (&server.cert, &server.private_key) {
        (Some(_), _) => Material::ServerCert,
        (None, Some(_)) => Material::ServerKey,
        (None, None) => return,
    };
    unused(
        r,
        mode,
        material.field(),
        "relayctl issues the server certificate unless `ca.mode` is `external`",
    );
}

/// Whether `field` is written in the document, valid or not.
fn written(r: &Reporter<'_>, field: &[&str]) -> bool {
    r.node.get(&path(field)).is_some()
}

/// `field` is required in `mode`: reported at its parent, which is there.
fn missing(r: &mut Reporter<'_>, mode: CaMode, field: &[&str], hint: &str) {
    r.at_key(
        &path(&field[..field.len() - 1]),
        Code::MissingMaterial,
        format!("`{}` is required in `{mode}` CA mode", shown(field)),
        Some(hint.to_owned()),
    );
}

/// `field` is given but `mode` never reads it.
fn unused(r: &mut Reporter<'_>, mode: CaMode, field: &[&str], hint: &str) {
    r.at_key(
        &path(field),
        Code::UnusedMaterial,
        format!("`{}` is not used in `{mode}` CA mode", shown(field)),
        Some(hint.to_owned()),
    );
}

/// A field as messages name it, without `spec.`.
fn shown(field: &[&str]) -> String {
    field.join(".").trim_start_matches("spec.").to_owned()
}
