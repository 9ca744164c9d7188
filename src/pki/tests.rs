//! Unit tests of the PKI core: issue → inspect → verify with the pooled key
//! source, the typed errors, the renewal rule and the redaction guarantee.

use proptest::prelude::*;
use time::OffsetDateTime;
use time::macros::datetime;

use super::issue::{CaRequest, ClientRequest, IssueError, Issued, Issuer, ServerRequest};
use super::material::{self, MaterialProblem};
use super::testing::PooledKeySource;
use super::*;
use crate::model::{DnsLabel, Duration, KeyAlgorithm};
use crate::secret::SecretBytes;

const NOW: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
const AUTHORITY: &str = "gloo-mesh-mgmt-server.gloo-mesh";

fn hours(h: u64) -> Duration {
    Duration::from_hours(h)
}

/// A whole relay chain of one key type.
struct Chain {
    root: Issued,
    intermediate: Issued,
    server: Issued,
    client: Issued,
}

impl Chain {
    fn new(key: KeyAlgorithm) -> Self {
        let keys = PooledKeySource;
        let root = issue_root(&ca("relay-root-ca", 87_600, key), &keys, NOW).expect("root");
        let intermediate = issue_intermediate(
            &ca("relay-signing-ca", 43_800, key),
            &Issuer::from_issued(&root).expect("root issuer"),
            &keys,
            NOW,
        )
        .expect("intermediate");
        let signing = Issuer::from_issued(&intermediate).expect("intermediate issuer");
        let server = issue_server(
            &ServerRequest {
                authority: AUTHORITY.to_owned(),
                dns_names: vec!["*.gloo-mesh".to_owned(), AUTHORITY.to_owned()],
                validity: hours(8760),
                key,
            },
            &signing,
            &keys,
            NOW,
        )
        .expect("server");
        let client = issue_client(
            &ClientRequest {
                cluster_name: DnsLabel::parse("cluster-1").expect("label"),
                validity: hours(8760),
                key,
            },
            &signing,
            &keys,
            NOW,
        )
        .expect("client");
        Self {
            root,
            intermediate,
            server,
            client,
        }
    }

    fn chain_of(&self, leaf: &Issued) -> String {
        format!("{}{}", leaf.cert_pem, self.intermediate.cert_pem)
    }
}

fn ca(name: &str, validity_hours: u64, key: KeyAlgorithm) -> CaRequest {
    CaRequest {
        common_name: name.to_owned(),
        validity: hours(validity_hours),
        key,
    }
}

fn secret(text: &str) -> SecretBytes {
    SecretBytes::from(text.to_owned())
}

#[test]
fn issued_chain_has_the_extensions_of_design_section_1() {
    let chain = Chain::new(KeyAlgorithm::EcdsaP256);
    let (root, inter, server, client) = (
        &chain.root.facts,
        &chain.intermediate.facts,
        &chain.server.facts,
        &chain.client.facts,
    );
    assert!(root.is_ca && root.basic_constraints_critical && root.path_len.is_none());
    assert!(root.is_self_issued());
    assert_eq!(
        root.key_usage,
        ["digitalSignature", "keyCertSign", "cRLSign"]
    );
    assert!(inter.is_ca && inter.basic_constraints_critical);
    assert_eq!(inter.path_len, Some(0));
    assert_eq!(inter.issuer, root.subject);
    for leaf in [server, client] {
        assert!(!leaf.is_ca && leaf.basic_constraints_critical);
        assert_eq!(leaf.key_usage, ["digitalSignature", "keyEncipherment"]);
        assert_eq!(leaf.issuer, inter.subject);
        assert_eq!(leaf.authority_key_id, inter.subject_key_id);
    }
    assert_eq!(inter.authority_key_id, root.subject_key_id);
    assert_eq!(root.authority_key_id, root.subject_key_id);
    assert!(root.subject_key_id.is_some());
    assert_eq!(server.common_name.as_deref(), Some(AUTHORITY));
    assert_eq!(server.dns_names, [AUTHORITY, "*.gloo-mesh"]);
    assert_eq!(server.extended_key_usage, ["serverAuth", "clientAuth"]);
    assert_eq!(client.common_name.as_deref(), Some("cluster-1"));
    assert_eq!(client.dns_names, ["cluster-1"]);
    assert_eq!(client.extended_key_usage, ["clientAuth"]);
    assert_eq!(server.not_before, NOW - CLOCK_SKEW_BACKDATE);
    assert_eq!(server.not_after, NOW + hours(8760).to_time());
    // 0x01 prefix + 128 random bits.
    assert_eq!(server.serial.split(':').count(), 17);
    assert!(server.serial.starts_with("01:"));
    assert_eq!(server.key_algorithm, "ecdsa-p256");
    assert!(key_matches(server, &chain.server.key.facts()));
    assert!(!key_matches(server, &chain.client.key.facts()));
}

#[test]
fn os_key_source_gives_distinct_serials_and_keys() {
    let a = issue_root(&ca("a", 24, KeyAlgorithm::EcdsaP256), &OsKeySource, NOW).expect("a");
    let b = issue_root(&ca("a", 24, KeyAlgorithm::EcdsaP256), &OsKeySource, NOW).expect("b");
    assert_ne!(a.facts.serial, b.facts.serial);
    assert_ne!(a.facts.spki_sha256, b.facts.spki_sha256);
}

#[test]
fn a_certificate_that_would_outlive_its_issuer_is_refused() {
    let keys = PooledKeySource;
    let root = issue_root(&ca("root", 100, KeyAlgorithm::EcdsaP256), &keys, NOW).expect("root");
    let issuer = Issuer::from_issued(&root).expect("issuer");
    let err = issue_intermediate(
        &ca("inter", 101, KeyAlgorithm::EcdsaP256),
        &issuer,
        &keys,
        NOW,
    )
    .expect_err("outlives");
    assert!(matches!(err, IssueError::OutlivesIssuer { .. }), "{err:?}");
    let err = issue_client(
        &ClientRequest {
            cluster_name: DnsLabel::parse("c").expect("label"),
            validity: hours(200),
            key: KeyAlgorithm::EcdsaP256,
        },
        &issuer,
        &keys,
        NOW,
    )
    .expect_err("outlives");
    assert!(
        err.to_string().contains("its issuer `CN=root` expires"),
        "{err}"
    );
    // Exactly the issuer's end is fine.
    issue_intermediate(
        &ca("inter", 100, KeyAlgorithm::EcdsaP256),
        &issuer,
        &keys,
        NOW,
    )
    .expect("same end");
}

#[test]
fn issuers_are_checked_before_signing() {
    let chain = Chain::new(KeyAlgorithm::EcdsaP256);
    let keys = PooledKeySource;
    let not_ca = Issuer::new(chain.server.cert_pem.as_bytes(), chain.server.key.clone())
        .expect_err("leaf as issuer");
    assert!(
        matches!(not_ca, IssueError::IssuerNotCa { .. }),
        "{not_ca:?}"
    );
    let mismatch = Issuer::new(chain.root.cert_pem.as_bytes(), chain.server.key.clone())
        .expect_err("wrong key");
    assert!(matches!(mismatch, IssueError::IssuerKeyMismatch { .. }));
    let signing = Issuer::from_issued(&chain.intermediate).expect("issuer");
    let pathlen = issue_intermediate(
        &ca("sub", 10, KeyAlgorithm::EcdsaP256),
        &signing,
        &keys,
        NOW,
    )
    .expect_err("pathlen 0");
    assert!(matches!(pathlen, IssueError::IssuerPathLen { .. }));
    let late = NOW + hours(43_801).to_time();
    let expired = issue_server(
        &ServerRequest {
            authority: AUTHORITY.to_owned(),
            dns_names: vec![],
            validity: hours(1),
            key: KeyAlgorithm::EcdsaP256,
        },
        &signing,
        &keys,
        late,
    )
    .expect_err("expired issuer");
    assert!(matches!(expired, IssueError::IssuerNotValid { .. }));
    let zero = issue_root(&ca("zero", 0, KeyAlgorithm::EcdsaP256), &keys, NOW).expect_err("zero");
    assert!(matches!(zero, IssueError::InvalidValidity { .. }));
    let bad_name = issue_server(
        &ServerRequest {
            authority: "bad name\u{e9}".to_owned(),
            dns_names: vec![],
            validity: hours(1),
            key: KeyAlgorithm::EcdsaP256,
        },
        &signing,
        &keys,
        NOW,
    )
    .expect_err("non-ascii SAN");
    assert!(
        matches!(bad_name, IssueError::InvalidName { .. }),
        "{bad_name:?}"
    );
}

#[test]
fn chains_verify_for_their_usage_only() {
    let chain = Chain::new(KeyAlgorithm::EcdsaP384);
    let other = Chain::new(KeyAlgorithm::EcdsaP256);
    let roots = chain.root.cert_pem.as_bytes();
    let server = chain.chain_of(&chain.server);
    let client = chain.chain_of(&chain.client);
    verify_chain(
        server.as_bytes(),
        roots,
        Usage::Server,
        Some(AUTHORITY),
        NOW,
    )
    .expect("server");
    verify_chain(server.as_bytes(), roots, Usage::Client, None, NOW).expect("server as client");
    verify_chain(
        client.as_bytes(),
        roots,
        Usage::Client,
        Some("cluster-1"),
        NOW,
    )
    .expect("client");

    let as_server = verify_chain(client.as_bytes(), roots, Usage::Server, None, NOW);
    assert!(
        matches!(as_server, Err(VerifyError::Untrusted { .. })),
        "{as_server:?}"
    );
    let wrong_name = verify_chain(
        client.as_bytes(),
        roots,
        Usage::Client,
        Some("cluster-2"),
        NOW,
    );
    assert!(
        matches!(wrong_name, Err(VerifyError::NameMismatch { .. })),
        "{wrong_name:?}"
    );
    let later = NOW + hours(8761).to_time();
    let expired = verify_chain(server.as_bytes(), roots, Usage::Server, None, later);
    assert!(
        matches!(expired, Err(VerifyError::Untrusted { .. })),
        "{expired:?}"
    );
    let before = NOW - time::Duration::hours(1);
    assert!(verify_chain(server.as_bytes(), roots, Usage::Server, None, before).is_err());
    let foreign = verify_chain(
        server.as_bytes(),
        other.root.cert_pem.as_bytes(),
        Usage::Server,
        None,
        NOW,
    );
    assert!(
        matches!(foreign, Err(VerifyError::Untrusted { .. })),
        "{foreign:?}"
    );
    // Without the intermediate the leaf does not reach the root.
    let leaf_only = verify_chain(
        chain.server.cert_pem.as_bytes(),
        roots,
        Usage::Server,
        None,
        NOW,
    );
    assert!(leaf_only.is_err());
    // A bundle of several roots (rotation) trusts either chain.
    let bundle = format!("{}{}", other.root.cert_pem, chain.root.cert_pem);
    verify_chain(
        server.as_bytes(),
        bundle.as_bytes(),
        Usage::Server,
        None,
        NOW,
    )
    .expect("bundle");
    let other_server = other.chain_of(&other.server);
    verify_chain(
        other_server.as_bytes(),
        bundle.as_bytes(),
        Usage::Server,
        None,
        NOW,
    )
    .expect("bundle");
}

#[test]
fn inspect_rejects_bad_input_with_typed_errors() {
    let chain = Chain::new(KeyAlgorithm::EcdsaP256);
    let pem = chain.root.cert_pem.as_str();
    assert!(matches!(
        inspect_certificate(b""),
        Err(InspectError::NoPem { .. })
    ));
    assert!(matches!(
        inspect_certificate(b"hello, not a certificate"),
        Err(InspectError::NoPem { .. })
    ));
    let key_pem = chain.root.key.to_pkcs8_pem().expose().to_vec();
    let wrong = inspect_certificate(&key_pem).expect_err("key is not a cert");
    assert!(
        matches!(&wrong, InspectError::WrongLabel { label, .. } if label == "PRIVATE KEY"),
        "{wrong:?}"
    );
    let truncated = &pem[..pem.len() / 2];
    assert!(matches!(
        inspect_certificate(truncated.as_bytes()),
        Err(InspectError::NoPem { .. })
    ));
    let bundle_cut = format!("{pem}{truncated}");
    assert!(matches!(
        inspect_bundle(bundle_cut.as_bytes()),
        Err(InspectError::Truncated {
            begins: 2,
            complete: 1
        })
    ));
    // Valid PEM framing around DER that ends early.
    let der = super::inspect::certificate_ders(pem.as_bytes())
        .expect("der")
        .remove(0);
    let short = pem::encode(&pem::Pem::new(
        "CERTIFICATE",
        der[..der.len() - 10].to_vec(),
    ));
    let short = inspect_certificate(short.as_bytes());
    assert!(
        matches!(short, Err(InspectError::TruncatedDer { index: 0 })),
        "{short:?}"
    );
    let mut long = der.clone();
    long.extend_from_slice(&[0, 0, 0]);
    let trailing = pem::encode(&pem::Pem::new("CERTIFICATE", long));
    assert!(matches!(
        inspect_certificate(trailing.as_bytes()),
        Err(InspectError::TrailingData { extra: 3, .. })
    ));
    let garbage = pem::encode(&pem::Pem::new("CERTIFICATE", vec![0x04, 0x03, 1, 2, 3]));
    assert!(matches!(
        inspect_certificate(garbage.as_bytes()),
        Err(InspectError::Parse { .. })
    ));
    let huge = vec![b'A'; MAX_PEM_INPUT + 1];
    assert!(matches!(
        inspect_bundle(&huge),
        Err(InspectError::TooLarge { .. })
    ));
    let two = chain.chain_of(&chain.server);
    assert!(matches!(
        inspect_certificate(two.as_bytes()),
        Err(InspectError::NotOne { count: 2 })
    ));
    assert_eq!(inspect_bundle(two.as_bytes()).expect("bundle").len(), 2);
}

#[test]
fn private_keys_read_every_secret_encoding_and_reject_the_rest() {
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::pkcs8::DecodePrivateKey as _;

    let rsa_key = PooledKeySource
        .generate(KeyAlgorithm::Rsa2048)
        .expect("rsa");
    let pkcs8 = rsa_key.to_pkcs8_pem().clone();
    assert_eq!(inspect_private_key(&pkcs8).expect("pkcs8"), rsa_key.facts());
    let pem_text = std::str::from_utf8(pkcs8.expose()).expect("utf8");
    let parsed = rsa::PrivateKey::from_pkcs8_pem(pem_text).expect("rsa parse");
    let pkcs1 = parsed
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .expect("pkcs1");
    let pkcs1 = SecretBytes::from(pkcs1.as_str().to_owned());
    assert_eq!(inspect_private_key(&pkcs1).expect("pkcs1"), rsa_key.facts());

    let err = |input: &str| inspect_private_key(&secret(input)).expect_err(input);
    assert!(matches!(err(""), KeyError::NoPem { .. }));
    assert!(matches!(err("garbage"), KeyError::NoPem { .. }));
    assert!(matches!(
        err(&pem_text[..pem_text.len() / 2]),
        KeyError::NoPem { .. }
    ));
    let chain = Chain::new(KeyAlgorithm::EcdsaP256);
    assert!(matches!(
        err(&chain.root.cert_pem),
        KeyError::WrongLabel { .. }
    ));
    assert!(matches!(
        err(&format!("{pem_text}{pem_text}")),
        KeyError::SeveralBlocks { count: 2 }
    ));
    let encrypted = pem::encode(&pem::Pem::new("ENCRYPTED PRIVATE KEY", vec![1, 2, 3]));
    assert!(matches!(err(&encrypted), KeyError::Encrypted));
    let corrupt = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![0x30, 0x01, 0]));
    assert!(matches!(err(&corrupt), KeyError::Decode { .. }));
    let huge = SecretBytes::new(vec![b'A'; MAX_PEM_INPUT + 1]);
    assert!(matches!(
        inspect_private_key(&huge),
        Err(KeyError::TooLarge { .. })
    ));
}

fn facts_with(not_before: OffsetDateTime, lifetime: time::Duration) -> CertFacts {
    let mut facts = Chain::new(KeyAlgorithm::EcdsaP256).client.facts;
    facts.not_before = not_before;
    facts.not_after = not_before + lifetime;
    facts
}

#[test]
fn renewal_follows_cert_managers_rule_and_explains_itself() {
    let facts = facts_with(NOW, time::Duration::days(365));
    let renew_before = hours(30 * 24);
    assert_eq!(
        renewal_due(&facts, renew_before, NOW + time::Duration::days(300)),
        None
    );
    assert_eq!(
        renewal_due(&facts, renew_before, NOW + time::Duration::days(353)).as_deref(),
        Some("expires in 12d < renewBefore 720h")
    );
    assert_eq!(
        renewal_due(&facts, renew_before, NOW + time::Duration::days(368)).as_deref(),
        Some("expired 3d ago")
    );
    // A cert not longer than renewBefore: renewed at lifetime/3, not in a loop.
    let short = facts_with(NOW, time::Duration::days(9));
    assert_eq!(
        renewal_due(&short, renew_before, NOW + time::Duration::days(1)),
        None
    );
    assert_eq!(
        renewal_due(
            &short,
            renew_before,
            NOW + time::Duration::hours(6 * 24 + 3)
        )
        .as_deref(),
        Some("expires in 2d21h < lifetime/3 3d")
    );
}

#[test]
fn material_checks_report_every_problem() {
    let chain = Chain::new(KeyAlgorithm::EcdsaP256);
    let root_key = chain.root.key.to_pkcs8_pem();
    let server_key = chain.server.key.to_pkcs8_pem();
    assert_eq!(
        material::check_ca(
            chain.root.cert_pem.as_bytes(),
            Some(root_key),
            Some(hours(43_800)),
            NOW
        ),
        []
    );

    let problems = material::check_ca(
        chain.server.cert_pem.as_bytes(),
        Some(root_key),
        None,
        NOW + hours(9000).to_time(),
    );
    let kinds: Vec<_> = problems.iter().map(std::mem::discriminant).collect();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(matches!(problems[0], MaterialProblem::NotCa { .. }));
    assert!(matches!(problems[1], MaterialProblem::Expired { .. }));
    assert!(matches!(problems[2], MaterialProblem::KeyMismatch { .. }));
    assert_eq!(kinds.len(), 3);

    let short = material::check_ca(
        chain.intermediate.cert_pem.as_bytes(),
        None,
        Some(hours(43_800)),
        NOW + hours(24).to_time(),
    );
    assert!(
        matches!(short.as_slice(), [MaterialProblem::CaTooShort { .. }]),
        "{short:?}"
    );
    assert!(
        short[0].message().contains("shorter than the 1825d"),
        "{}",
        short[0]
    );

    let server = chain.chain_of(&chain.server);
    assert_eq!(
        material::check_server(server.as_bytes(), Some(server_key), AUTHORITY, NOW),
        []
    );
    let wrong = material::check_server(
        server.as_bytes(),
        Some(server_key),
        "relay.example.com",
        NOW,
    );
    assert!(matches!(
        wrong.as_slice(),
        [MaterialProblem::SanMissesAuthority { .. }]
    ));
    assert!(wrong[0].hint().contains("relay.example.com"));
    let client_as_server =
        material::check_server(chain.client.cert_pem.as_bytes(), None, "cluster-1", NOW);
    assert!(matches!(
        client_as_server.as_slice(),
        [MaterialProblem::MissingExtendedKeyUsage { .. }]
    ));
    assert_eq!(
        material::check_client(chain.client.cert_pem.as_bytes(), None, "cluster-1", NOW),
        []
    );
    let other_cluster =
        material::check_client(chain.client.cert_pem.as_bytes(), None, "cluster-2", NOW);
    assert!(matches!(
        other_cluster.as_slice(),
        [MaterialProblem::SanNotClusterName { .. }]
    ));
    let garbage = material::check_ca(b"nope", Some(&secret("nope")), None, NOW);
    assert!(matches!(
        garbage.as_slice(),
        [MaterialProblem::UnreadableCertificate { .. }]
    ));
    let bad_key = material::check_key_pair(chain.root.cert_pem.as_bytes(), &secret("nope"));
    assert!(matches!(
        bad_key.as_slice(),
        [MaterialProblem::UnreadableKey { .. }]
    ));
    // Problems serialize for JSON diagnostics.
    let json = serde_json::to_string(&bad_key).expect("json");
    assert!(json.contains("\"kind\":\"unreadable-key\""), "{json}");
}

/// Every way the private part of `key` could leak into text: fragments of
/// its PEM, base64 body and DER hex that do not also occur in `public` (the
/// certificates, which share algorithm identifiers and the public key).
fn private_fragments(key: &PrivateKey, public: &str) -> Vec<String> {
    let fragments: Vec<String> = key_fragments(key)
        .into_iter()
        .filter(|fragment| !public.contains(fragment.as_str()))
        .collect();
    assert!(
        fragments.len() > 20,
        "too few private fragments to be a test"
    );
    fragments
}

fn key_fragments(key: &PrivateKey) -> Vec<String> {
    let pem_text = String::from_utf8(key.to_pkcs8_pem().expose().to_vec()).expect("utf8");
    let body: String = pem_text
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = pem::parse(&pem_text).expect("pem").into_contents();
    let der_hex = hex::encode(&der);
    let mut fragments = vec![pem_text.clone(), body.clone(), der_hex.clone()];
    // Any 16 consecutive base64 characters or 16 hex digits (8 bytes) of the
    // key, not only the whole value, and the raw bytes as Debug would list them.
    fragments.extend(
        body.as_bytes()
            .windows(16)
            .step_by(4)
            .map(|w| String::from_utf8_lossy(w).into_owned()),
    );
    fragments.extend(
        der_hex
            .as_bytes()
            .windows(16)
            .step_by(2)
            .map(|w| String::from_utf8_lossy(w).into_owned()),
    );
    fragments.push(format!("{:?}", &der[der.len() - 8..]));
    fragments
}

#[test]
fn no_key_byte_appears_in_any_formatting() {
    for algorithm in KeyAlgorithm::ALL {
        let chain = Chain::new(algorithm);
        let issuer = Issuer::from_issued(&chain.intermediate).expect("issuer");
        let key_pem = chain.client.key.to_pkcs8_pem().clone();
        let shown = [
            format!("{:?}", chain.root),
            format!("{:#?}", chain.root),
            format!("{:?}", chain.client),
            format!("{:#?}", chain.intermediate),
            format!("{:?}", chain.client.key),
            format!("{:#?}", chain.client.key),
            format!("{}", chain.client.key),
            format!("{issuer:?}"),
            format!("{issuer:#?}"),
            format!("{key_pem:?}"),
            format!("{key_pem}"),
            format!("{:?}", inspect_private_key(&key_pem)),
            format!("{:?}", chain.client.key.facts()),
            serde_json::to_string(&chain.client.facts).expect("json"),
            format!(
                "{:?}",
                material::check_key_pair(chain.root.cert_pem.as_bytes(), &key_pem)
            ),
        ];
        let mut public = String::new();
        for issued in [
            &chain.root,
            &chain.intermediate,
            &chain.server,
            &chain.client,
        ] {
            public.push_str(&issued.cert_pem);
            let der = super::inspect::certificate_ders(issued.cert_pem.as_bytes()).expect("der");
            public.push_str(&hex::encode(&der[0]));
            public.push_str(&format!("{:?}", der[0]));
            public.push_str(&hex::encode(issued.key.public_key_der()));
        }
        for key in [
            &chain.root.key,
            &chain.intermediate.key,
            &chain.server.key,
            &chain.client.key,
        ] {
            for fragment in private_fragments(key, &public) {
                for text in &shown {
                    assert!(
                        !text.contains(&fragment),
                        "{algorithm}: key fragment `{fragment}` leaked into `{text}`"
                    );
                }
            }
        }
        assert!(shown[4].contains("<redacted>"), "{}", shown[4]);
    }
}

#[test]
fn errors_about_keys_never_echo_the_input() {
    let key = PooledKeySource
        .generate(KeyAlgorithm::EcdsaP256)
        .expect("key");
    let text = String::from_utf8(key.to_pkcs8_pem().expose().to_vec()).expect("utf8");
    // Corrupt one base64 character in the middle of the body.
    let mut corrupt = text.clone().into_bytes();
    let middle = corrupt.len() / 2;
    corrupt[middle] = b'!';
    for input in [corrupt, text.as_bytes()[..text.len() - 30].to_vec()] {
        let error = inspect_private_key(&SecretBytes::new(input)).expect_err("broken key");
        let mut message = format!("{error} {error:?}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        for fragment in key_fragments(&key) {
            assert!(!message.contains(&fragment), "{message}");
        }
    }
}

fn algorithm() -> impl Strategy<Value = KeyAlgorithm> {
    prop::sample::select(KeyAlgorithm::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The rule, restated: due exactly when remaining < renewBefore, or
    /// < lifetime/3 when renewBefore is not shorter than the lifetime; never
    /// at issuance (no renewal loop), whatever renewBefore says.
    #[test]
    fn renewal_rule(
        lifetime_secs in 3_600i64..20 * 365 * 86_400,
        renew_before_secs in 0u64..30 * 365 * 86_400,
        elapsed_permille in 0i64..1_200,
    ) {
        let lifetime = time::Duration::seconds(lifetime_secs);
        let mut facts = FACTS.clone();
        facts.not_before = NOW;
        facts.not_after = NOW + lifetime;
        let now = NOW + lifetime * elapsed_permille as f64 / 1000.0;
        let renew_before = Duration::from_secs(renew_before_secs);
        let configured = time::Duration::seconds(renew_before_secs as i64);
        let threshold = if configured < lifetime { configured } else { lifetime / 3 };
        let remaining = facts.not_after - now;
        let due = renewal_due(&facts, renew_before, now);
        prop_assert_eq!(due.is_some(), remaining < threshold || remaining <= time::Duration::ZERO);
        prop_assert!(renewal_due(&facts, renew_before, NOW).is_none());
        if let Some(reason) = due {
            prop_assert!(reason.starts_with("expires in ") || reason.starts_with("expired "), "{}", reason);
        }
    }
}

static FACTS: std::sync::LazyLock<CertFacts> =
    std::sync::LazyLock::new(|| Chain::new(KeyAlgorithm::EcdsaP256).client.facts);

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// inspect(issue(x)) gives back x, and the chain verifies, for every key type.
    #[test]
    fn inspect_of_issue_round_trips(
        key in algorithm(),
        cluster in "[a-z][a-z0-9-]{0,20}[a-z0-9]",
        extra in prop::collection::vec("[a-z]{1,10}(\\.[a-z]{1,10}){0,2}", 0..4),
        validity_hours in 1u64..40_000,
        now_offset in 0i64..(50 * 365 * 86_400),
    ) {
        let now = datetime!(2000-01-01 00:00 UTC) + time::Duration::seconds(now_offset);
        let keys = PooledKeySource;
        let root = issue_root(&ca("root", 50_000, key), &keys, now).expect("root");
        let root_issuer = Issuer::from_issued(&root).expect("issuer");
        let inter = issue_intermediate(&ca("inter", 45_000, key), &root_issuer, &keys, now).expect("inter");
        let signing = Issuer::from_issued(&inter).expect("issuer");
        let server = issue_server(
            &ServerRequest { authority: AUTHORITY.to_owned(), dns_names: extra.clone(), validity: hours(validity_hours), key },
            &signing, &keys, now,
        ).expect("server");
        let client = issue_client(
            &ClientRequest { cluster_name: DnsLabel::parse(&cluster).expect("label"), validity: hours(validity_hours), key },
            &signing, &keys, now,
        ).expect("client");

        let facts = inspect_certificate(server.cert_pem.as_bytes()).expect("inspect");
        prop_assert_eq!(&facts, &server.facts);
        let mut want = vec![AUTHORITY.to_owned()];
        for name in extra { if !want.contains(&name) { want.push(name); } }
        prop_assert_eq!(&facts.dns_names, &want);
        prop_assert_eq!(facts.key_algorithm.as_str(), key.as_str());
        prop_assert_eq!(facts.not_after - facts.not_before, hours(validity_hours).to_time() + CLOCK_SKEW_BACKDATE);
        prop_assert!(key_matches(&facts, &inspect_private_key(server.key.to_pkcs8_pem()).expect("key")));

        let facts = inspect_certificate(client.cert_pem.as_bytes()).expect("inspect");
        prop_assert_eq!(facts.common_name.as_deref(), Some(cluster.as_str()));
        prop_assert_eq!(&facts.dns_names, &vec![cluster.clone()]);
        let bundle = inspect_bundle(format!("{}{}", client.cert_pem, inter.cert_pem).as_bytes()).expect("bundle");
        prop_assert_eq!(&bundle[1], &inter.facts);

        let chain = format!("{}{}", client.cert_pem, inter.cert_pem);
        prop_assert!(verify_chain(chain.as_bytes(), root.cert_pem.as_bytes(), Usage::Client, Some(&cluster), now).is_ok());
    }
}
