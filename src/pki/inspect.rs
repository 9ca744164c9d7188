//! Certificates in, plain facts out.
//!
//! Everything relayctl decides about existing material (reuse, renew, report)
//! starts from [`CertFacts`]: the fields a plan shows and the rules compare,
//! parsed once from PEM as it sits in Secret data. The facts hold no secret and
//! serialize into plan output as they are.

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::pki::key::{
    KeyFacts, MAX_PEM_INPUT, classify_spki, count_begin_markers, spki_fingerprint,
};

/// A failure to read certificates from PEM input.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The input exceeds [`MAX_PEM_INPUT`].
    #[error("certificate input is {size} bytes; at most {max} are accepted")]
    TooLarge {
        /// Input size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not a single complete PEM block.
    #[error("certificate input holds no complete PEM block ({what})")]
    NoPem {
        /// Why: empty, not PEM, truncated.
        what: &'static str,
    },
    /// A block was cut off (a BEGIN line without its END line).
    #[error(
        "certificate input is truncated: {begins} BEGIN lines but {complete} complete PEM blocks"
    )]
    Truncated {
        /// BEGIN markers seen.
        begins: usize,
        /// Complete blocks parsed.
        complete: usize,
    },
    /// The PEM framing or base64 is broken.
    #[error("certificate input is not valid PEM")]
    Pem(#[source] pem::PemError),
    /// A block that is not a certificate.
    #[error("PEM block {index} is labelled `{label}`; expected `CERTIFICATE`")]
    WrongLabel {
        /// 0-based position of the block.
        index: usize,
        /// The label found.
        label: String,
    },
    /// More certificates than any chain or bundle holds.
    #[error("certificate input holds {count} certificates; at most {max} are read")]
    TooMany {
        /// How many there are.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// One certificate was expected.
    #[error("certificate input holds {count} certificates; expected exactly one")]
    NotOne {
        /// How many there are.
        count: usize,
    },
    /// The DER inside a block ends early.
    #[error("certificate {index} is truncated (its DER ends early)")]
    TruncatedDer {
        /// 0-based position of the block.
        index: usize,
    },
    /// The DER inside a block is not an X.509 certificate.
    #[error("certificate {index} is not a valid X.509 certificate")]
    Parse {
        /// 0-based position of the block.
        index: usize,
        /// The parser's reason.
        #[source]
        source: x509_parser::error::X509Error,
    },
    /// Bytes after the certificate inside one PEM block.
    #[error("certificate {index} has {extra} bytes of trailing data after its DER")]
    TrailingData {
        /// 0-based position of the block.
        index: usize,
        /// Number of extra bytes.
        extra: usize,
    },
}

/// What relayctl knows about one certificate. No secrets; serializes into
/// plans (times as RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertFacts {
    /// Subject DN in OpenSSL-like one-line form, e.g. `CN=relay-root-ca`.
    pub subject: String,
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// DNS subject alternative names, in certificate order.
    pub dns_names: Vec<String>,
    /// IP address SANs, rendered.
    pub ip_addresses: Vec<String>,
    /// Issuer DN, same form as `subject`.
    pub issuer: String,
    /// Serial number, lowercase hex with `:` separators.
    pub serial: String,
    /// Start of validity.
    #[serde(serialize_with = "rfc3339_serde")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(serialize_with = "rfc3339_serde")]
    pub not_after: OffsetDateTime,
    /// basicConstraints `CA:TRUE`.
    pub is_ca: bool,
    /// basicConstraints pathLenConstraint.
    pub path_len: Option<u32>,
    /// Whether basicConstraints is present and marked critical.
    pub basic_constraints_critical: bool,
    /// Key usages, e.g. `digitalSignature`, `keyCertSign`.
    pub key_usage: Vec<String>,
    /// Extended key usages: `serverAuth`, `clientAuth`, ... or dotted OIDs.
    pub extended_key_usage: Vec<String>,
    /// SHA-256 of the certificate DER, uppercase hex with `:` (OpenSSL's form).
    pub sha256_fingerprint: String,
    /// SHA-256 of the SubjectPublicKeyInfo DER, lowercase hex; compare with
    /// [`KeyFacts::spki_sha256`].
    pub spki_sha256: String,
    /// Public key type, e.g. `ecdsa-p256`, `rsa-4096`, `rsa-1024`, `ed25519`.
    pub key_algorithm: String,
    /// Subject key identifier, lowercase hex.
    pub subject_key_id: Option<String>,
    /// Authority key identifier (key id part), lowercase hex.
    pub authority_key_id: Option<String>,
    /// The signature is made with SHA-1 or MD5, which no verifier should
    /// accept any more.
    #[serde(skip)]
    pub weak_signature: bool,
    /// A name (subject, issuer, DNS SAN) held control or invisible
    /// characters; the fields above show them escaped.
    #[serde(skip)]
    pub odd_names: bool,
}

impl CertFacts {
    /// Whether subject and issuer are the same name (a root, usually).
    pub fn is_self_issued(&self) -> bool {
        self.subject == self.issuer
    }

    /// Whether `now` lies within `[not_before, not_after]`.
    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// Whether a DNS SAN covers `host` (wildcards cover one label).
    pub fn covers_dns_name(&self, host: &str) -> bool {
        self.dns_names
            .iter()
            .any(|pattern| crate::model::dns_name_covers(pattern, host))
    }

    /// The RSA modulus size, for an RSA key.
    pub fn rsa_bits(&self) -> Option<u32> {
        self.key_algorithm.strip_prefix("rsa-")?.parse().ok()
    }

    /// Whether the EKU extension lists `purpose` (`serverAuth`, `clientAuth`).
    pub fn has_extended_key_usage(&self, purpose: &str) -> bool {
        self.extended_key_usage.iter().any(|eku| eku == purpose)
    }
}

fn rfc3339_serde<S: Serializer>(time: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    let text = time
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(&text)
}

/// A time as RFC 3339 (`2036-11-26T05:08:31Z`), the form every message and
/// annotation uses.
pub fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| time.to_string())
}

/// Whether `key` is the private half of the certificate's public key.
pub fn key_matches(cert: &CertFacts, key: &KeyFacts) -> bool {
    cert.spki_sha256 == key.spki_sha256
}

/// Reads exactly one PEM certificate.
pub fn inspect_certificate(input: &[u8]) -> Result<CertFacts, InspectError> {
    let mut all = inspect_bundle(input)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        count => Err(InspectError::NotOne { count }),
    }
}

/// Reads one or more PEM certificates (a chain or a root bundle), in order.
pub fn inspect_bundle(input: &[u8]) -> Result<Vec<CertFacts>, InspectError> {
    certificate_ders(input)?
        .iter()
        .enumerate()
        .map(|(index, der)| facts_from_der(index, der))
        .collect()
}

/// The SHA-256 fingerprints of the certificates in `pem`, as
/// [`CertFacts::sha256_fingerprint`] writes them, without parsing the
/// certificates: enough to tell that a bundle holds the same certificates
/// as one already judged.
pub fn pem_fingerprints(pem: &[u8]) -> Result<Vec<String>, InspectError> {
    Ok(certificate_ders(pem)?
        .iter()
        .map(|der| colon_hex(&Sha256::digest(der), true))
        .collect())
}

/// Splits PEM input into certificate DERs, with the size, label and
/// truncation checks of [`inspect_bundle`]; no X.509 parsing yet.
pub fn certificate_ders(input: &[u8]) -> Result<Vec<Vec<u8>>, InspectError> {
    if input.len() > MAX_PEM_INPUT {
        return Err(InspectError::TooLarge {
            size: input.len(),
            max: MAX_PEM_INPUT,
        });
    }
    if input.iter().all(u8::is_ascii_whitespace) {
        return Err(InspectError::NoPem { what: "empty" });
    }
    let blocks = pem::parse_many(input).map_err(InspectError::Pem)?;
    let begins = count_begin_markers(input);
    if blocks.is_empty() {
        return Err(InspectError::NoPem {
            what: if begins == 0 {
                "no BEGIN line"
            } else {
                "truncated: BEGIN without END"
            },
        });
    }
    if begins > blocks.len() {
        return Err(InspectError::Truncated {
            begins,
            complete: blocks.len(),
        });
    }
    if blocks.len() > MAX_CERTIFICATES {
        return Err(InspectError::TooMany {
            count: blocks.len(),
            max: MAX_CERTIFICATES,
        });
    }
    blocks
        .into_iter()
        .enumerate()
        .map(|(index, block)| {
            if block.tag() == "CERTIFICATE" {
                Ok(block.into_contents())
            } else {
                Err(InspectError::WrongLabel {
                    index,
                    label: block.tag().to_owned(),
                })
            }
        })
        .collect()
}

/// Most certificates read from one PEM input: a chain or a root bundle
/// during a rotation holds a handful; more is a mistake or an attack, and
/// every one of them would be checked, shown and handshaked against.
pub const MAX_CERTIFICATES: usize = 64;

/// Signature algorithms no verifier should accept: SHA-1 and MD5 with RSA,
/// ECDSA and DSA.
const WEAK_SIGNATURES: [&str; 6] = [
    "1.2.840.113549.1.1.4", // md5WithRSAEncryption
    "1.2.840.113549.1.1.5", // sha1WithRSAEncryption
    "1.3.14.3.2.29",        // sha1WithRSA (OIW)
    "1.2.840.10045.4.1",    // ecdsa-with-SHA1
    "1.2.840.10040.4.3",    // dsa-with-sha1
    "1.2.840.113549.1.1.2", // md2WithRSAEncryption
];

/// Facts of one DER certificate; `index` only labels errors.
pub fn facts_from_der(index: usize, der: &[u8]) -> Result<CertFacts, InspectError> {
    use x509_parser::der_parser::error::BerError;
    use x509_parser::error::X509Error;
    use x509_parser::nom::Err as NomErr;
    use x509_parser::nom::error::ErrorKind;
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|error| match error {
        NomErr::Incomplete(_)
        | NomErr::Error(X509Error::Der(BerError::Incomplete(_)))
        | NomErr::Failure(X509Error::Der(BerError::Incomplete(_)))
        | NomErr::Error(X509Error::NomError(ErrorKind::Eof))
        | NomErr::Failure(X509Error::NomError(ErrorKind::Eof)) => {
            InspectError::TruncatedDer { index }
        }
        NomErr::Error(source) | NomErr::Failure(source) => InspectError::Parse { index, source },
    })?;
    if !rest.is_empty() {
        return Err(InspectError::TrailingData {
            index,
            extra: rest.len(),
        });
    }
    let parse_error = |source| InspectError::Parse { index, source };

    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Some(san) = cert.subject_alternative_name().map_err(parse_error)? {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => ip_addresses.push(render_ip(bytes)),
                _ => {}
            }
        }
    }
    let (is_ca, path_len, basic_constraints_critical) =
        match cert.basic_constraints().map_err(parse_error)? {
            Some(bc) => (bc.value.ca, bc.value.path_len_constraint, bc.critical),
            None => (false, None, false),
        };
    let key_usage = match cert.key_usage().map_err(parse_error)? {
        Some(ku) => key_usage_names(ku.value.flags),
        None => Vec::new(),
    };
    let extended_key_usage = match cert.extended_key_usage().map_err(parse_error)? {
        Some(eku) => {
            let eku = eku.value;
            let mut names = Vec::new();
            for (set, name) in [
                (eku.any, "anyExtendedKeyUsage"),
                (eku.server_auth, "serverAuth"),
                (eku.client_auth, "clientAuth"),
                (eku.code_signing, "codeSigning"),
                (eku.email_protection, "emailProtection"),
                (eku.time_stamping, "timeStamping"),
                (eku.ocsp_signing, "OCSPSigning"),
            ] {
                if set {
                    names.push(name.to_owned());
                }
            }
            names.extend(eku.other.iter().map(|oid| oid.to_id_string()));
            names
        }
        None => Vec::new(),
    };
    let mut subject_key_id = None;
    let mut authority_key_id = None;
    for extension in cert.extensions() {
        match extension.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = Some(hex::encode(id.0)),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                authority_key_id = aki.key_identifier.as_ref().map(|id| hex::encode(id.0));
            }
            _ => {}
        }
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let spki = cert.public_key();
    let digest = Sha256::digest(der);
    // Names are chosen by whoever made the certificate: escaped here, once,
    // so no output can be forged by them (see `crate::text`).
    let (subject, issuer) = (render_name(cert.subject()), render_name(cert.issuer()));
    let odd_names = std::iter::once(&subject)
        .chain(std::iter::once(&issuer))
        .chain(&dns_names)
        .chain(common_name.iter())
        .any(|name| matches!(crate::text::printable(name), std::borrow::Cow::Owned(_)));
    let escape = |name: &str| crate::text::printable(name).into_owned();
    let dns_names = dns_names.iter().map(|n| escape(n)).collect();
    let common_name = common_name.as_deref().map(escape);
    let weak_signature =
        WEAK_SIGNATURES.contains(&cert.signature_algorithm.algorithm.to_id_string().as_str());
    Ok(CertFacts {
        subject: escape(&subject),
        common_name,
        dns_names,
        ip_addresses,
        issuer: escape(&issuer),
        serial: colon_hex(cert.raw_serial(), false),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        is_ca,
        path_len,
        basic_constraints_critical,
        key_usage,
        extended_key_usage,
        sha256_fingerprint: colon_hex(&digest, true),
        spki_sha256: spki_fingerprint(spki.raw),
        key_algorithm: classify_spki(spki).describe(),
        subject_key_id,
        authority_key_id,
        weak_signature,
        odd_names,
    })
}

fn render_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.to_string()
}

fn key_usage_names(flags: u16) -> Vec<String> {
    const NAMES: [&str; 9] = [
        "digitalSignature",
        "nonRepudiation",
        "keyEncipherment",
        "dataEncipherment",
        "keyAgreement",
        "keyCertSign",
        "cRLSign",
        "encipherOnly",
        "decipherOnly",
    ];
    NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| flags >> bit & 1 == 1)
        .map(|(_, name)| (*name).to_owned())
        .collect()
}

fn colon_hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect::<Vec<_>>()
        .join(":")
}

fn render_ip(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => {
            let octets: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
            std::net::Ipv4Addr::from(octets).to_string()
        }
        16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(bytes);
            std::net::Ipv6Addr::from(octets).to_string()
        }
        _ => hex::encode(bytes),
    }
}

/// PEM of one DER certificate: 64-column base64 with LF line endings, the
/// form every certificate relayctl writes has.
pub fn certificate_pem(der: &[u8]) -> String {
    let bytes = crate::pki::key::encode_pem("CERTIFICATE", der);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use time::macros::datetime;

    use super::*;
    use crate::model::{DnsLabel, KeyAlgorithm};
    use crate::pki::fixtures::{AUTHORITY, Chain, ca, hours};
    use crate::pki::issue::{
        CLOCK_SKEW_BACKDATE, ClientRequest, Issuer, ServerRequest, issue_client,
        issue_intermediate, issue_root, issue_server,
    };
    use crate::pki::key::inspect_private_key;
    use crate::pki::testing::PooledKeySource;
    use crate::pki::verify::{Usage, verify_chain};

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
        let der = crate::pki::inspect::certificate_ders(pem.as_bytes())
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

    fn algorithm() -> impl Strategy<Value = KeyAlgorithm> {
        prop::sample::select(KeyAlgorithm::ALL.to_vec())
    }

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
}
