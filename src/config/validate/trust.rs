//! The `RelayTrust` spec turned into the model, field by field.
//!
//! Each function reads one part of the spec (`ca`, `identityToken`,
//! `server`, `clientCerts`), reports what is wrong with each field on its
//! own and fills in the defaults. Rules that relate fields to each other
//! (what the CA mode allows) are [`super::modes`].

use super::sources::SourceReader;
use super::{key, metadata_name, modes, path};
use crate::config::diag::{Code, Reporter, field_path};
use crate::config::node::Step;
use crate::config::raw::{
    RawCa, RawCaCert, RawClientCerts, RawIdentityToken, RawMetadata, RawServer, Scalar,
};
use crate::model::{
    CaCertConfig, CaConfig, CaMode, ClientCertConfig, ClientCertMode, DEFAULT_AUTHORITY,
    DEFAULT_NAMESPACE, DnsLabel, Duration, KeyAlgorithm, ServerConfig, TokenConfig, check_dns_name,
};

/// `metadata.name`: the instance name, which goes into ownership labels.
pub(super) fn instance(r: &mut Reporter<'_>, metadata: &Option<RawMetadata>) -> Option<DnsLabel> {
    let name = metadata_name(r, metadata, "instance")?;
    DnsLabel::parse(&name).map_err(|why| {
        r.at_value(&path(&["metadata", "name"]), Code::InvalidName, format!("instance name `{name}` {why}"), Some("the instance name goes into the `relayctl.dev/instance` label: use a DNS-1123 label".to_owned()));
    }).ok()
}

/// `spec.namespace`, `gloo-mesh` when absent; `None` when invalid.
pub(super) fn namespace(r: &mut Reporter<'_>, namespace: Option<&str>) -> Option<DnsLabel> {
    match namespace {
        None => DnsLabel::parse(DEFAULT_NAMESPACE).ok(),
        Some(ns) => DnsLabel::parse(ns)
            .map_err(|why| {
                r.at_value(
                    &path(&["spec", "namespace"]),
                    Code::InvalidNamespace,
                    format!("namespace `{ns}` {why}"),
                    Some(
                        "namespaces are DNS-1123 labels; the product's default is `gloo-mesh`"
                            .to_owned(),
                    ),
                );
            })
            .ok(),
    }
}

/// `spec.ca.mode`, `managed` when absent or invalid.
pub(super) fn ca_mode(r: &mut Reporter<'_>, ca: &RawCa) -> CaMode {
    parse_enum(
        r,
        &path(&["spec", "ca", "mode"]),
        ca.mode.as_ref().map(|s| s.as_str()),
        &[
            ("managed", CaMode::Managed),
            ("gloo", CaMode::Gloo),
            ("custom", CaMode::Custom),
            ("external", CaMode::External),
        ],
    )
    .unwrap_or_default()
}

/// `spec.ca`: the root and the intermediate.
pub(super) fn ca(
    r: &mut Reporter<'_>,
    sources: &SourceReader<'_>,
    raw: &RawCa,
    mode: CaMode,
) -> CaConfig {
    CaConfig {
        mode,
        root: ca_cert(
            r,
            sources,
            "root",
            &raw.root,
            "relay-root-ca",
            Duration::from_hours(87_600),
        ),
        intermediate: ca_cert(
            r,
            sources,
            "intermediate",
            &raw.intermediate,
            "relay-intermediate-ca",
            Duration::from_hours(43_800),
        ),
        rotation: rotation(r, &raw.rotation),
    }
}

/// `spec.ca.rotation`.
fn rotation(
    r: &mut Reporter<'_>,
    raw: &crate::config::raw::RawRotation,
) -> crate::model::RotationConfig {
    let at = |field: &str| path(&["spec", "ca", "rotation", field]);
    let generation = raw.generation.unwrap_or(1);
    if generation == 0 {
        r.at_value(
            &at("generation"),
            Code::InvalidValue,
            "generation 0 is not a generation; they start at 1".to_owned(),
            Some("raise the generation by one to rotate the root".to_owned()),
        );
    }
    let wave = raw.wave.unwrap_or(25);
    if !(1..=100).contains(&wave) {
        r.at_value(
            &at("wave"),
            Code::InvalidValue,
            format!("wave {wave}% is not between 1 and 100"),
            Some("the share of workload clusters moved per apply, e.g. `25`".to_owned()),
        );
    }
    crate::model::RotationConfig {
        generation: generation.max(1),
        soak: duration(r, &at("soak"), raw.soak.as_ref().map(|s| s.as_str()))
            .unwrap_or(Duration::from_hours(24)),
        wave: wave.clamp(1, 100),
    }
}

fn ca_cert(
    r: &mut Reporter<'_>,
    sources: &SourceReader<'_>,
    which: &str,
    raw: &RawCaCert,
    default_cn: &str,
    default_validity: Duration,
) -> CaCertConfig {
    let base = ["spec", "ca", which];
    let at = |field: &str| {
        let mut steps = path(&base);
        steps.push(key(field));
        steps
    };
    let common_name = raw
        .common_name
        .clone()
        .unwrap_or_else(|| default_cn.to_owned());
    if common_name.trim().is_empty() || common_name.len() > 64 {
        r.at_value(
            &at("commonName"),
            Code::InvalidValue,
            format!("common name `{common_name}` must be 1 to 64 characters"),
            Some("X.509 limits a common name to 64 characters".to_owned()),
        );
    }
    let validity = duration(
        r,
        &at("validity"),
        raw.validity.as_ref().map(|s| s.as_str()),
    )
    .unwrap_or(default_validity);
    let renew_before = duration(
        r,
        &at("renewBefore"),
        raw.renew_before.as_ref().map(|s| s.as_str()),
    )
    .unwrap_or(validity.third());
    if renew_before >= validity {
        r.at_value(
            &at("renewBefore"),
            Code::RenewBeforeTooLong,
            format!("`renewBefore` `{renew_before}` is not shorter than `validity` `{validity}`"),
            Some(format!(
                "the CA would be rotated at once, on every run: use less than `{validity}` (the default is a third, `{}`)",
                validity.third()
            )),
        );
    }
    CaCertConfig {
        common_name,
        validity,
        renew_before,
        key: key_algorithm(r, &at("key"), raw.key.as_ref().map(|s| s.as_str())),
        cert: raw
            .cert
            .as_ref()
            .and_then(|s| sources.read(r, &at("cert"), s)),
        private_key: raw
            .private_key
            .as_ref()
            .and_then(|s| sources.read(r, &at("privateKey"), s)),
    }
}

/// `spec.identityToken`; enabled by default where the mode uses tokens.
pub(super) fn identity_token(
    r: &mut Reporter<'_>,
    sources: &SourceReader<'_>,
    raw: &RawIdentityToken,
    mode: CaMode,
) -> TokenConfig {
    if raw.generation == Some(0) {
        r.at_value(
            &path(&["spec", "identityToken", "generation"]),
            Code::InvalidValue,
            "generation 0 is not a generation; they start at 1".to_owned(),
            Some("raise the generation by one to rotate the token".to_owned()),
        );
    }
    TokenConfig {
        generation: raw.generation.unwrap_or(1).max(1),
        enabled: raw.enabled.unwrap_or(modes::tokens_by_default(mode)),
        value: raw
            .value
            .as_ref()
            .and_then(|s| sources.read(r, &path(&["spec", "identityToken", "value"]), s)),
    }
}

/// `spec.registration`: off unless enabled; the cluster domain is a DNS name.
pub(super) fn registration(
    r: &mut Reporter<'_>,
    raw: &crate::config::raw::RawRegistration,
) -> crate::model::RegistrationConfig {
    let cluster_domain = raw
        .cluster_domain
        .clone()
        .unwrap_or_else(|| crate::model::DEFAULT_CLUSTER_DOMAIN.to_owned());
    if let Err(why) = check_dns_name(&cluster_domain) {
        r.at_value(
            &path(&["spec", "registration", "clusterDomain"]),
            Code::InvalidDnsName,
            format!("cluster domain `{cluster_domain}` {why}"),
            Some(format!(
                "the DNS domain of the workload clusters, usually `{}`",
                crate::model::DEFAULT_CLUSTER_DOMAIN
            )),
        );
    }
    crate::model::RegistrationConfig {
        enabled: raw.enabled.unwrap_or(false),
        cluster_domain,
    }
}

/// `spec.server`: the authority first among the DNS names, lowercased and
/// without repeats.
pub(super) fn server(
    r: &mut Reporter<'_>,
    sources: &SourceReader<'_>,
    raw: &RawServer,
) -> ServerConfig {
    let leaf = leaf(
        r,
        "server",
        raw.validity.as_ref(),
        raw.renew_before.as_ref(),
        raw.key.as_ref(),
    );
    let authority = raw
        .authority
        .clone()
        .unwrap_or_else(|| DEFAULT_AUTHORITY.to_owned());
    if let Err(why) = check_dns_name(&authority) {
        r.at_value(&path(&["spec", "server", "authority"]), Code::InvalidDnsName, format!("authority `{authority}` {why}"), Some(format!("the authority is the host name agents dial; the product's default is `{DEFAULT_AUTHORITY}`")));
    } else if authority.starts_with("*.") {
        r.at_value(
            &path(&["spec", "server", "authority"]),
            Code::InvalidDnsName,
            format!("authority `{authority}` is a wildcard"),
            Some("the authority is one concrete host name; put wildcards in `dnsNames`".to_owned()),
        );
    }
    let mut dns_names = vec![authority.clone()];
    for (index, name) in raw.dns_names.iter().enumerate() {
        let steps = [
            key("spec"),
            key("server"),
            key("dnsNames"),
            Step::Index(index),
        ];
        match check_dns_name(name) {
            Ok(()) => {
                if !dns_names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                    dns_names.push(name.to_ascii_lowercase());
                }
            }
            Err(why) => r.at_value(
                &steps,
                Code::InvalidDnsName,
                format!("DNS name `{name}` {why}"),
                Some(
                    "SANs are DNS names such as `gloo-mesh-mgmt-server.gloo-mesh` or `*.gloo-mesh`"
                        .to_owned(),
                ),
            ),
        }
    }
    ServerConfig {
        authority,
        dns_names,
        validity: leaf.validity,
        renew_before: leaf.renew_before,
        key: leaf.key,
        cert: raw
            .cert
            .as_ref()
            .and_then(|s| sources.read(r, &path(&["spec", "server", "cert"]), s)),
        private_key: raw
            .private_key
            .as_ref()
            .and_then(|s| sources.read(r, &path(&["spec", "server", "privateKey"]), s)),
    }
}

/// `spec.clientCerts`; the mode defaults to what the CA mode allows.
pub(super) fn client_certs(
    r: &mut Reporter<'_>,
    raw: &RawClientCerts,
    mode: CaMode,
) -> ClientCertConfig {
    let client_mode = parse_enum(
        r,
        &path(&["spec", "clientCerts", "mode"]),
        raw.mode.as_ref().map(|s| s.as_str()),
        &[
            ("token", ClientCertMode::Token),
            ("preprovisioned", ClientCertMode::Preprovisioned),
            ("external", ClientCertMode::External),
        ],
    )
    .unwrap_or(modes::default_client_mode(mode));
    let leaf = leaf(
        r,
        "clientCerts",
        raw.validity.as_ref(),
        raw.renew_before.as_ref(),
        raw.key.as_ref(),
    );
    ClientCertConfig {
        mode: client_mode,
        validity: leaf.validity,
        renew_before: leaf.renew_before,
        key: leaf.key,
    }
}

/// The lifetime and key type of the leaves under `spec.<field>`.
struct Leaf {
    validity: Duration,
    renew_before: Duration,
    key: KeyAlgorithm,
}

/// `validity` (a year by default), `renewBefore` (shorter than the
/// validity, a third of it by default) and `key` of `spec.<field>`.
fn leaf(
    r: &mut Reporter<'_>,
    field: &str,
    validity: Option<&Scalar>,
    renew_before: Option<&Scalar>,
    key_type: Option<&Scalar>,
) -> Leaf {
    let at = |name: &str| path(&["spec", field, name]);
    let validity = duration(r, &at("validity"), validity.map(Scalar::as_str))
        .unwrap_or(Duration::from_hours(8760));
    let renew_before = duration(r, &at("renewBefore"), renew_before.map(Scalar::as_str));
    Leaf {
        validity,
        renew_before: check_renew(r, field, validity, renew_before),
        key: key_algorithm(r, &at("key"), key_type.map(Scalar::as_str)),
    }
}

/// One of the `allowed` spellings; `None` (reported) for any other text,
/// `None` (silently) when the field is absent.
fn parse_enum<T: Copy>(
    r: &mut Reporter<'_>,
    steps: &[Step],
    text: Option<&str>,
    allowed: &[(&str, T)],
) -> Option<T> {
    let text = text?;
    match allowed.iter().find(|(name, _)| *name == text) {
        Some((_, value)) => Some(*value),
        None => {
            let names = allowed
                .iter()
                .map(|(n, _)| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            r.at_value(
                steps,
                Code::InvalidValue,
                format!(
                    "`{text}` is not a valid `{}`",
                    field_path(&steps[steps.len().saturating_sub(1)..])
                ),
                Some(format!("use one of {names}")),
            );
            None
        }
    }
}

fn key_algorithm(r: &mut Reporter<'_>, steps: &[Step], text: Option<&str>) -> KeyAlgorithm {
    let allowed: Vec<(&str, KeyAlgorithm)> =
        KeyAlgorithm::ALL.iter().map(|k| (k.as_str(), *k)).collect();
    parse_enum(r, steps, text, &allowed).unwrap_or_default()
}

/// The longest duration accepted anywhere: 100 years.
const MAX_DURATION: Duration = Duration::from_hours(876_000);

fn duration(r: &mut Reporter<'_>, steps: &[Step], text: Option<&str>) -> Option<Duration> {
    let text = text?;
    match text.parse::<Duration>() {
        Ok(d) if d.as_secs() == 0 => {
            r.at_value(
                steps,
                Code::InvalidDuration,
                format!("`{text}` is zero"),
                Some("a certificate lifetime must be positive, e.g. `8760h`".to_owned()),
            );
            None
        }
        Ok(d) if d > MAX_DURATION => {
            r.at_value(
                steps,
                Code::InvalidDuration,
                format!("`{text}` is longer than 100 years (`{MAX_DURATION}`)"),
                Some("X.509 dates end in 9999, and no CA should live this long: use at most `876000h`".to_owned()),
            );
            None
        }
        Ok(d) => Some(d),
        Err(why) => {
            r.at_value(steps, Code::InvalidDuration, format!("invalid duration: {why}"), Some("write durations the Kubernetes/Go way: `8760h`, `90m`, `1h30m`, `45s` (units h, m, s)".to_owned()));
            None
        }
    }
}

/// `renewBefore` of the leaf under `spec.<field>`: shorter than its
/// validity, a third of it by default (and in place of a refused value).
fn check_renew(
    r: &mut Reporter<'_>,
    field: &str,
    validity: Duration,
    renew: Option<Duration>,
) -> Duration {
    match renew {
        Some(renew) if renew >= validity => {
            r.at_value(&path(&["spec", field, "renewBefore"]), Code::RenewBeforeTooLong, format!("`renewBefore` `{renew}` is not shorter than `validity` `{validity}`"), Some(format!("every certificate would be renewed at once, on every run: use less than `{validity}` (the default is a third, `{}`)", validity.third())));
            validity.third()
        }
        Some(renew) => renew,
        None => validity.third(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::TrustSpec;
    use super::*;

    #[test]
    fn the_defaults_are_the_products() {
        let config = TrustSpec::test().valid();
        assert_eq!(config.instance.as_str(), "prod");
        assert_eq!(config.namespace.as_str(), DEFAULT_NAMESPACE);
        assert_eq!(config.ca.root.common_name, "relay-root-ca");
        assert_eq!(config.ca.root.validity, Duration::from_hours(87_600));
        assert_eq!(config.ca.intermediate.common_name, "relay-intermediate-ca");
        assert_eq!(
            config.ca.intermediate.validity,
            Duration::from_hours(43_800)
        );
        assert_eq!(config.server.authority, DEFAULT_AUTHORITY);
        assert_eq!(config.server.dns_names, [DEFAULT_AUTHORITY]);
        assert_eq!(config.server.validity, Duration::from_hours(8760));
        assert_eq!(
            config.server.renew_before,
            Duration::from_hours(8760).third()
        );
        assert_eq!(config.client_certs.validity, Duration::from_hours(8760));
        assert!(!config.prune);
    }

    #[test]
    fn renew_before_must_be_shorter_than_validity() {
        for (field, renew) in [
            ("server", "100h"),
            ("server", "101h"),
            ("clientCerts", "100h"),
            ("clientCerts", "6000m"),
        ] {
            let spec = TrustSpec::test()
                .with(&format!("{field}.validity"), "100h")
                .with(&format!("{field}.renewBefore"), renew);
            let d = spec.reports(
                Code::RenewBeforeTooLong,
                &format!("spec.{field}.renewBefore"),
            );
            assert!(
                d.message.contains("is not shorter than `validity` `100h`"),
                "{}",
                d.message
            );
            assert_eq!(spec.codes(), [Code::RenewBeforeTooLong]);
        }
        let config = TrustSpec::test()
            .with("server.validity", "100h")
            .with("server.renewBefore", "99h")
            .valid();
        assert_eq!(config.server.renew_before, Duration::from_hours(99));
    }

    #[test]
    fn durations_are_positive_go_durations_of_at_most_100_years() {
        for (value, says) in [
            ("0s", "is zero"),
            ("876001h", "longer than 100 years"),
            ("8760", "invalid duration"),
            ("1y", "invalid duration"),
        ] {
            let spec = TrustSpec::test().with("ca.root.validity", value);
            let d = spec.reports(Code::InvalidDuration, "spec.ca.root.validity");
            assert!(d.message.contains(says), "{value}: {}", d.message);
        }
    }

    #[test]
    fn enumerations_name_what_they_allow() {
        let spec = TrustSpec::test().with_mode("automatic");
        let d = spec.reports(Code::InvalidValue, "spec.ca.mode");
        assert_eq!(d.message, "`automatic` is not a valid `mode`");
        assert_eq!(
            d.hint.as_deref(),
            Some("use one of `managed`, `gloo`, `custom`, `external`")
        );
        let spec = TrustSpec::test().with("server.key", "dsa");
        spec.reports(Code::InvalidValue, "spec.server.key");
        let spec = TrustSpec::test().with("clientCerts.mode", "manual");
        spec.reports(Code::InvalidValue, "spec.clientCerts.mode");
    }

    #[test]
    fn a_common_name_is_1_to_64_characters() {
        let spec = TrustSpec::test().with("ca.root.commonName", &"r".repeat(65));
        spec.reports(Code::InvalidValue, "spec.ca.root.commonName");
        let spec = TrustSpec::test().with("ca.intermediate.commonName", "' '");
        spec.reports(Code::InvalidValue, "spec.ca.intermediate.commonName");
        TrustSpec::test()
            .with("ca.root.commonName", &"r".repeat(64))
            .valid();
    }

    #[test]
    fn the_authority_is_one_concrete_host_name() {
        let spec = TrustSpec::test().with("server.authority", "'*.gloo-mesh'");
        let d = spec.reports(Code::InvalidDnsName, "spec.server.authority");
        assert!(d.message.contains("is a wildcard"));
        let spec = TrustSpec::test().with("server.authority", "relay_server");
        spec.reports(Code::InvalidDnsName, "spec.server.authority");
    }

    #[test]
    fn dns_names_follow_the_authority_once_each() {
        let config = TrustSpec::test()
            .with(
                "server.dnsNames",
                "['*.gloo-mesh', gloo-mesh-mgmt-server.gloo-mesh, relay.example.com, relay.example.com]",
            )
            .valid();
        assert_eq!(
            config.server.dns_names,
            [DEFAULT_AUTHORITY, "*.gloo-mesh", "relay.example.com"]
        );
        let spec = TrustSpec::test().with("server.dnsNames", "[ok.example.com, Not.example.com]");
        let d = spec.reports(Code::InvalidDnsName, "spec.server.dnsNames[1]");
        assert!(
            d.message.starts_with("DNS name `Not.example.com`"),
            "{}",
            d.message
        );
    }

    #[test]
    fn the_instance_and_namespace_are_dns_labels() {
        let spec = TrustSpec::test().with_trust_field("metadata.name", "Prod_1");
        let d = spec.reports(Code::InvalidName, "metadata.name");
        assert!(
            d.message.starts_with("instance name `Prod_1`"),
            "{}",
            d.message
        );
        let spec = TrustSpec::test().with("namespace", "Gloo.Mesh");
        spec.reports(Code::InvalidNamespace, "spec.namespace");
        let config = TrustSpec::test().with("namespace", "relay").valid();
        assert_eq!(config.namespace.as_str(), "relay");
    }
}
