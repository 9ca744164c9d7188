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

#[cfg(test)]
mod tests {
    use super::super::fixture::TrustSpec;
    use super::*;

    #[test]
    fn external_mode_defaults_to_external_client_certs_and_no_tokens() {
        let config = TrustSpec::external().valid();
        assert_eq!(config.client_certs.mode, ClientCertMode::External);
        assert!(!config.identity_token.enabled);
        let config = TrustSpec::test().valid();
        assert_eq!(config.client_certs.mode, ClientCertMode::Token);
        assert!(config.identity_token.enabled);
    }

    #[test]
    fn external_mode_refuses_identity_tokens() {
        let spec = TrustSpec::external().with("identityToken.enabled", "true");
        spec.reports(Code::ExternalWithTokens, "spec.identityToken.enabled");
        assert_eq!(spec.codes(), [Code::ExternalWithTokens]);
        // Disabling them, as the default does, is fine.
        TrustSpec::external()
            .with("identityToken.enabled", "false")
            .valid();
    }

    #[test]
    fn token_client_mode_needs_the_identity_token() {
        for spec in [
            TrustSpec::test().with("identityToken.enabled", "false"),
            TrustSpec::test()
                .with("identityToken.enabled", "false")
                .with("clientCerts.mode", "token"),
        ] {
            spec.reports(Code::TokenModeWithoutTokens, "spec.identityToken.enabled");
            assert_eq!(spec.codes(), [Code::TokenModeWithoutTokens]);
        }
        TrustSpec::test()
            .with("identityToken.enabled", "false")
            .with("clientCerts.mode", "preprovisioned")
            .valid();
    }

    #[test]
    fn external_client_certs_go_with_the_external_ca_mode_only() {
        let spec = TrustSpec::test().with("clientCerts.mode", "external");
        let d = spec.reports(Code::ExternalClientMode, "spec.clientCerts.mode");
        assert!(d.message.contains("not `managed`"), "{}", d.message);
        let spec = TrustSpec::external().with("clientCerts.mode", "token");
        let d = spec.reports(Code::ExternalClientMode, "spec.clientCerts.mode");
        assert!(
            d.message.contains("`clientCerts.mode: token`"),
            "{}",
            d.message
        );
    }

    #[test]
    fn preprovisioned_client_certs_need_a_signing_key() {
        // `custom` with only the root certificate: nothing to sign with.
        let spec = TrustSpec::test()
            .with_mode("custom")
            .with("ca.root.cert", "{ file: material/root.crt }")
            .with("clientCerts.mode", "preprovisioned");
        let d = spec.reports(
            Code::PreprovisionedWithoutSigningKey,
            "spec.clientCerts.mode",
        );
        assert!(d.hint.unwrap().contains("`ca.root.privateKey`"));
        spec.reports(Code::MissingMaterial, "spec.ca");
        // `external` holds no CA key at all.
        let spec = TrustSpec::external().with("clientCerts.mode", "preprovisioned");
        let d = spec.reports(
            Code::PreprovisionedWithoutSigningKey,
            "spec.clientCerts.mode",
        );
        assert!(d.hint.unwrap().contains("`clientCerts.mode: external`"));
        // The root's key is enough in `custom` mode.
        TrustSpec::test()
            .with_mode("custom")
            .with("ca.root.cert", "{ file: material/root.crt }")
            .with("ca.root.privateKey", "{ env: ROOT_KEY }")
            .with("clientCerts.mode", "preprovisioned")
            .valid();
    }

    #[test]
    fn validity_nests_leaf_inside_intermediate_inside_root() {
        let spec = TrustSpec::test()
            .with("ca.root.validity", "100h")
            .with("ca.intermediate.validity", "200h")
            .with("server.validity", "300h");
        let d = spec.reports(Code::ValidityOrder, "spec.ca.intermediate.validity");
        assert_eq!(
            d.message,
            "intermediate validity `200h` is longer than root validity `100h`"
        );
        let d = spec.reports(Code::ValidityOrder, "spec.server.validity");
        assert_eq!(
            d.message,
            "server validity `300h` is longer than intermediate validity `200h`"
        );
        assert_eq!(spec.codes(), [Code::ValidityOrder, Code::ValidityOrder]);
        // Equal lifetimes nest.
        TrustSpec::test()
            .with("ca.root.validity", "300h")
            .with("ca.intermediate.validity", "300h")
            .with("server.validity", "300h")
            .valid();
    }

    #[test]
    fn client_cert_validity_counts_only_when_relayctl_issues_them() {
        let longer = TrustSpec::test()
            .with("ca.intermediate.validity", "1000h")
            .with("server.validity", "100h")
            .with("clientCerts.validity", "2000h");
        longer.clone().valid();
        let spec = longer.with("clientCerts.mode", "preprovisioned");
        spec.reports(Code::ValidityOrder, "spec.clientCerts.validity");
        assert_eq!(spec.codes(), [Code::ValidityOrder]);
    }

    #[test]
    fn validity_order_is_not_checked_for_a_brought_intermediate() {
        TrustSpec::test()
            .with_mode("custom")
            .with("ca.root.cert", "{ file: material/root.crt }")
            .with(
                "ca.intermediate.cert",
                "{ file: material/intermediate.crt }",
            )
            .with("ca.intermediate.privateKey", "{ env: INTERMEDIATE_KEY }")
            .with("ca.intermediate.validity", "100h")
            .with("server.validity", "8760h")
            .valid();
        // A derived one is issued by relayctl, so it is.
        let spec = TrustSpec::test()
            .with_mode("custom")
            .with("ca.root.cert", "{ file: material/root.crt }")
            .with("ca.root.privateKey", "{ env: ROOT_KEY }")
            .with("ca.intermediate.validity", "100h");
        spec.reports(Code::ValidityOrder, "spec.server.validity");
    }

    /// The spec, in `mode`, with `material` given (by an `env` source).
    fn given(spec: TrustSpec, material: Material) -> TrustSpec {
        let field = material.field()[1..].join(".");
        spec.with(&field, "{ env: GIVEN }")
    }

    #[test]
    fn each_row_of_the_material_table_is_reported_where_it_is_written() {
        for &(mode, material, rule) in MATERIAL {
            let base = TrustSpec::test().with_mode(mode.as_str());
            let field = material.field().join(".");
            match rule {
                Use::Ignored(hint) => {
                    let d = given(base, material).reports(Code::UnusedMaterial, &field);
                    assert_eq!(d.hint.as_deref(), Some(hint));
                }
                Use::Needed(hint) => {
                    // Everything else the mode needs is given.
                    let spec = MATERIAL
                        .iter()
                        .filter(|(m, other, rule)| {
                            *m == mode && *other != material && matches!(rule, Use::Needed(_))
                        })
                        .fold(base, |spec, (_, other, _)| given(spec, *other));
                    let parent = material.field()[..material.field().len() - 1].join(".");
                    let d = spec.reports(Code::MissingMaterial, &parent);
                    assert_eq!(d.hint.as_deref(), Some(hint));
                }
            }
        }
    }

    #[test]
    fn material_a_mode_does_not_list_is_optional_in_it() {
        TrustSpec::test()
            .with("identityToken.value", "{ env: RELAY_TOKEN }")
            .valid();
        TrustSpec::test()
            .with_mode("custom")
            .with("ca.root.cert", "{ file: material/root.crt }")
            .with("ca.root.privateKey", "{ env: ROOT_KEY }")
            .valid();
    }

    #[test]
    fn a_required_source_that_is_written_but_invalid_is_not_also_missing() {
        let spec = TrustSpec::external().with("server.cert", "{ file: '' }");
        spec.reports(Code::InvalidSource, "spec.server.cert.file");
        assert_eq!(spec.codes(), [Code::InvalidSource]);
    }

    #[test]
    fn custom_mode_signs_with_the_root_key_or_a_whole_intermediate() {
        let root_only = TrustSpec::test()
            .with_mode("custom")
            .with("ca.root.cert", "{ file: material/root.crt }");
        let d = root_only.reports(Code::MissingMaterial, "spec.ca");
        assert!(d.message.contains("needs either `ca.root.privateKey`"));
        let half = root_only.with("ca.intermediate.cert", "{ file: material/int.crt }");
        half.reports(Code::MissingMaterial, "spec.ca.intermediate");
        assert_eq!(half.codes(), [Code::MissingMaterial]);
    }

    #[test]
    fn a_brought_server_certificate_is_reported_once_for_the_pair() {
        let spec = TrustSpec::test()
            .with("server.cert", "{ file: material/server.crt }")
            .with("server.privateKey", "{ env: SERVER_KEY }");
        spec.reports(Code::UnusedMaterial, "spec.server.cert");
        assert_eq!(spec.codes(), [Code::UnusedMaterial]);
        let key_only = TrustSpec::test()
            .with_mode("gloo")
            .with("server.privateKey", "{ env: SERVER_KEY }");
        key_only.reports(Code::UnusedMaterial, "spec.server.privateKey");
    }
}
