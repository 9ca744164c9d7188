//! Issuing the relay chain: root CA, intermediate (signing) CA, server and
//! client leaves, with the extensions DESIGN.md §1 fixes.
//!
//! Inputs are requests (what the manifest asked for), an [`Issuer`] (CA cert +
//! key) for everything but the root, a [`KeySource`] and `now`. Nothing here
//! reads a clock or the OS RNG. A certificate that would outlive its issuer is
//! refused, never silently shortened: the config layer should have caught it,
//! and a shortened cert would renew at a surprising time.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::model::{ClusterName, Duration, KeyAlgorithm};
use crate::pki::inspect::{CertFacts, InspectError, facts_from_der, inspect_certificate};
use crate::pki::key::{KeyError, KeySource, PrivateKey};

/// How far notBefore is set before `now`, so peers with a slightly slow clock
/// accept a certificate issued a moment ago.
pub const CLOCK_SKEW_BACKDATE: time::Duration = time::Duration::minutes(5);

/// A failure to issue a certificate.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Generating the subject's key failed.
    #[error("could not generate the key for `{subject}`")]
    GenerateKey {
        /// CN of the certificate being issued.
        subject: String,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// The issuer's or subject's key could not be loaded for signing.
    #[error("could not load the key of `{subject}`")]
    LoadKey {
        /// Whose key.
        subject: String,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// A name is not acceptable in a certificate.
    #[error("`{name}` is not a valid DNS name for `{subject}`")]
    InvalidName {
        /// The certificate being issued.
        subject: String,
        /// The rejected name.
        name: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// The validity is zero or does not fit a certificate date.
    #[error("validity `{validity}` of `{subject}` is not usable")]
    InvalidValidity {
        /// The certificate being issued.
        subject: String,
        /// The requested validity.
        validity: Duration,
    },
    /// The certificate would end after its issuer.
    #[error(
        "`{subject}` would be valid until {not_after} but its issuer `{issuer}` expires at {issuer_not_after}; shorten the validity or renew the issuer first"
    )]
    OutlivesIssuer {
        /// The certificate being issued.
        subject: String,
        /// Its would-be notAfter.
        not_after: OffsetDateTime,
        /// The issuer's subject.
        issuer: String,
        /// The issuer's notAfter.
        issuer_not_after: OffsetDateTime,
    },
    /// The issuer is expired or not yet valid at `now`.
    #[error("issuer `{issuer}` is not valid at {now} (valid {not_before} to {not_after})")]
    IssuerNotValid {
        /// The issuer's subject.
        issuer: String,
        /// The time of issuing.
        now: OffsetDateTime,
        /// Issuer notBefore.
        not_before: OffsetDateTime,
        /// Issuer notAfter.
        not_after: OffsetDateTime,
    },
    /// rcgen failed to sign.
    #[error("could not sign the certificate for `{subject}`")]
    Sign {
        /// The certificate being issued.
        subject: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// Reading back what was just issued failed (a bug).
    #[error("could not read back the certificate issued for `{subject}`")]
    ReadBack {
        /// The certificate issued.
        subject: String,
        /// Why.
        #[source]
        source: InspectError,
    },
    /// The CA certificate given to [`Issuer::new`] is unreadable.
    #[error("could not read the issuer certificate")]
    ReadIssuer(#[source] InspectError),
    /// The issuer certificate is not a CA.
    #[error("issuer `{subject}` is not a CA (basicConstraints CA:TRUE missing)")]
    IssuerNotCa {
        /// The issuer's subject.
        subject: String,
    },
    /// The issuer's pathlen forbids signing another CA.
    #[error("issuer `{subject}` has pathlen 0 and cannot sign a CA")]
    IssuerPathLen {
        /// The issuer's subject.
        subject: String,
    },
    /// The key does not belong to the issuer certificate.
    #[error("the private key given for issuer `{subject}` does not match its certificate")]
    IssuerKeyMismatch {
        /// The issuer's subject.
        subject: String,
    },
}

/// A CA to create: root or intermediate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaRequest {
    /// Subject CN, e.g. `relay-root-ca`.
    pub common_name: String,
    /// How long from `now` the CA is valid.
    pub validity: Duration,
    /// The CA's key type.
    pub key: KeyAlgorithm,
}

/// The management server's TLS certificate to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRequest {
    /// The host agents dial: CN and first DNS SAN.
    pub authority: String,
    /// Extra DNS SANs after the authority (duplicates of it are dropped).
    pub dns_names: Vec<String>,
    /// How long from `now` it is valid.
    pub validity: Duration,
    /// Key type.
    pub key: KeyAlgorithm,
}

/// An agent's client certificate to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    /// The workload cluster: CN and the only DNS SAN.
    pub cluster_name: ClusterName,
    /// How long from `now` it is valid.
    pub validity: Duration,
    /// Key type.
    pub key: KeyAlgorithm,
}

/// A freshly issued certificate with its new key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate alone, PEM.
    pub cert_pem: String,
    /// Its private key (redacted in `Debug`).
    pub key: PrivateKey,
    /// What the certificate says.
    pub facts: CertFacts,
}

/// A CA that can sign: its certificate and private key, checked to belong
/// together and to be a CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    cert_der: Vec<u8>,
    cert_pem: String,
    key: PrivateKey,
    facts: CertFacts,
    /// The bundles this issuer was proven to chain to.
    pub(crate) proofs: crate::pki::verify::Proofs,
}

impl Issuer {
    /// An issuer from a CA certificate (one PEM certificate) and its key.
    pub fn new(cert_pem: &[u8], key: PrivateKey) -> Result<Self, IssueError> {
        let facts = inspect_certificate(cert_pem).map_err(IssueError::ReadIssuer)?;
        let ders =
            crate::pki::inspect::certificate_ders(cert_pem).map_err(IssueError::ReadIssuer)?;
        let cert_der = ders.into_iter().next().unwrap_or_default();
        if !facts.is_ca {
            return Err(IssueError::IssuerNotCa {
                subject: facts.subject,
            });
        }
        if facts.spki_sha256 != key.facts().spki_sha256 {
            return Err(IssueError::IssuerKeyMismatch {
                subject: facts.subject,
            });
        }
        let cert_pem = crate::pki::inspect::certificate_pem(&cert_der);
        Ok(Self {
            cert_der,
            cert_pem,
            key,
            facts,
            proofs: Default::default(),
        })
    }

    /// An issuer from a CA just issued.
    pub fn from_issued(issued: &Issued) -> Result<Self, IssueError> {
        Self::new(issued.cert_pem.as_bytes(), issued.key.clone())
    }

    /// The issuer's certificate facts.
    pub fn facts(&self) -> &CertFacts {
        &self.facts
    }

    /// The issuer's certificate, PEM (to append to a leaf's `tls.crt`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The issuer's certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The issuer's key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }
}

/// Issues a self-signed root CA: `CA:TRUE` (critical, no pathlen),
/// keyCertSign + cRLSign + digitalSignature, SKI = AKI.
pub fn issue_root(
    request: &CaRequest,
    keys: &dyn KeySource,
    now: OffsetDateTime,
) -> Result<Issued, IssueError> {
    let subject = request.common_name.clone();
    let mut params = base_params(&subject, request.validity, keys, now)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = ca_key_usages();
    let key = generate(keys, request.key, &subject)?;
    let pair = key.key_pair().map_err(|source| IssueError::LoadKey {
        subject: subject.clone(),
        source,
    })?;
    let cert = params
        .self_signed(&pair)
        .map_err(|source| IssueError::Sign {
            subject: subject.clone(),
            source,
        })?;
    finish(&subject, cert, key)
}

/// Issues an intermediate (signing) CA under `issuer`: `CA:TRUE` (critical),
/// pathlen 0 (it signs only leaves), keyCertSign + cRLSign + digitalSignature.
pub fn issue_intermediate(
    request: &CaRequest,
    issuer: &Issuer,
    keys: &dyn KeySource,
    now: OffsetDateTime,
) -> Result<Issued, IssueError> {
    if issuer.facts.path_len == Some(0) {
        return Err(IssueError::IssuerPathLen {
            subject: issuer.facts.subject.clone(),
        });
    }
    let subject = request.common_name.clone();
    let mut params = base_params(&subject, request.validity, keys, now)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = ca_key_usages();
    sign_under(&subject, params, request.key, issuer, keys, now)
}

/// A cross-certificate for `intermediate`: the same subject and key, issued
/// by `by` (another root), valid until the earlier of the two ends. A peer
/// that trusts only `by` then verifies every leaf of `intermediate` when
/// the chain carries it (the bridge of a root rotation).
pub fn issue_cross(
    intermediate: &Issuer,
    by: &Issuer,
    keys: &dyn KeySource,
    now: OffsetDateTime,
) -> Result<String, IssueError> {
    let facts = intermediate.facts();
    let subject = facts
        .common_name
        .clone()
        .unwrap_or_else(|| facts.subject.clone());
    let end = facts.not_after.min(by.facts().not_after);
    let seconds = (end - now.replace_nanosecond(0).unwrap_or(now)).whole_seconds();
    let validity = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    let mut params = base_params(&subject, validity, keys, now)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = ca_key_usages();
    let issued = sign_with(&subject, params, intermediate.key().clone(), by, now)?;
    Ok(issued.cert_pem)
}

/// Issues the management server's certificate: CN = authority, DNS SANs =
/// authority then the extra names, EKU serverAuth + clientAuth.
pub fn issue_server(
    request: &ServerRequest,
    issuer: &Issuer,
    keys: &dyn KeySource,
    now: OffsetDateTime,
) -> Result<Issued, IssueError> {
    let subject = request.authority.clone();
    let mut names = vec![request.authority.clone()];
    for name in &request.dns_names {
        if !names.iter().any(|known| known.eq_ignore_ascii_case(name)) {
            names.push(name.clone());
        }
    }
    let mut params = leaf_params(&subject, &names, request.validity, keys, now)?;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    sign_under(&subject, params, request.key, issuer, keys, now)
}

/// Issues an agent's client certificate: CN = the only DNS SAN = cluster
/// name, EKU clientAuth.
pub fn issue_client(
    request: &ClientRequest,
    issuer: &Issuer,
    keys: &dyn KeySource,
    now: OffsetDateTime,
) -> Result<Issued, IssueError> {
    let subject = request.cluster_name.as_str().to_owned();
    let mut params = leaf_params(
        &subject,
        std::slice::from_ref(&subject),
        request.validity,
        keys,
        now,
    )?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign_under(&subject, params, request.key, issuer, keys, now)
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

/// Subject, serial, validity, key identifiers: common to every certificate.
fn base_params(
    subject: &str,
    validity: Duration,
    keys: &dyn KeySource,
    now: OffsetDateTime,
) -> Result<CertificateParams, IssueError> {
    let invalid = || IssueError::InvalidValidity {
        subject: subject.to_owned(),
        validity,
    };
    if validity.as_secs() == 0 {
        return Err(invalid());
    }
    let now = now.replace_nanosecond(0).map_err(|_| invalid())?;
    let not_after = now.checked_add(validity.to_time()).ok_or_else(invalid)?;
    // X.509 GeneralizedTime/UTCTime cover years 0..=9999.
    if not_after.year() > 9999 {
        return Err(invalid());
    }
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, subject);
    params.distinguished_name = name;
    params.not_before = now - CLOCK_SKEW_BACKDATE;
    params.not_after = not_after;
    // A leading 0x01 keeps the DER INTEGER positive and 17 bytes long while
    // all 128 bits from the key source stay random.
    let mut serial = vec![0x01];
    serial.extend_from_slice(&keys.serial());
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn leaf_params(
    subject: &str,
    dns_names: &[String],
    validity: Duration,
    keys: &dyn KeySource,
    now: OffsetDateTime,
) -> Result<CertificateParams, IssueError> {
    let mut params = base_params(subject, validity, keys, now)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.subject_alt_names = dns_names
        .iter()
        .map(|name| {
            let ia5 = name
                .clone()
                .try_into()
                .map_err(|source| IssueError::InvalidName {
                    subject: subject.to_owned(),
                    name: name.clone(),
                    source,
                })?;
            Ok(SanType::DnsName(ia5))
        })
        .collect::<Result<_, IssueError>>()?;
    Ok(params)
}

fn sign_under(
    subject: &str,
    params: CertificateParams,
    algorithm: KeyAlgorithm,
    issuer: &Issuer,
    keys: &dyn KeySource,
    now: OffsetDateTime,
) -> Result<Issued, IssueError> {
    let issuer_facts = &issuer.facts;
    if !issuer_facts.is_valid_at(now) {
        return Err(IssueError::IssuerNotValid {
            issuer: issuer_facts.subject.clone(),
            now,
            not_before: issuer_facts.not_before,
            not_after: issuer_facts.not_after,
        });
    }
    if params.not_after > issuer_facts.not_after {
        return Err(IssueError::OutlivesIssuer {
            subject: subject.to_owned(),
            not_after: params.not_after,
            issuer: issuer_facts.subject.clone(),
            issuer_not_after: issuer_facts.not_after,
        });
    }
    let key = generate(keys, algorithm, subject)?;
    sign_with(subject, params, key, issuer, now)
}

/// Signs `params` for `key` under `issuer` (already checked to be valid now
/// and to outlive the certificate).
fn sign_with(
    subject: &str,
    params: CertificateParams,
    key: PrivateKey,
    issuer: &Issuer,
    now: OffsetDateTime,
) -> Result<Issued, IssueError> {
    let issuer_facts = &issuer.facts;
    if !issuer_facts.is_valid_at(now) || params.not_after > issuer_facts.not_after {
        return Err(IssueError::OutlivesIssuer {
            subject: subject.to_owned(),
            not_after: params.not_after,
            issuer: issuer_facts.subject.clone(),
            issuer_not_after: issuer_facts.not_after,
        });
    }
    let subject_pair = key.key_pair().map_err(|source| IssueError::LoadKey {
        subject: subject.to_owned(),
        source,
    })?;
    let issuer_pair = issuer
        .key
        .key_pair()
        .map_err(|source| IssueError::LoadKey {
            subject: issuer_facts.subject.clone(),
            source,
        })?;
    let signer = rcgen::Issuer::from_ca_cert_der(&issuer.cert_der.as_slice().into(), issuer_pair)
        .map_err(|source| IssueError::Sign {
        subject: subject.to_owned(),
        source,
    })?;
    let cert = params
        .signed_by(&subject_pair, &signer)
        .map_err(|source| IssueError::Sign {
            subject: subject.to_owned(),
            source,
        })?;
    finish(subject, cert, key)
}

fn generate(
    keys: &dyn KeySource,
    algorithm: KeyAlgorithm,
    subject: &str,
) -> Result<PrivateKey, IssueError> {
    keys.generate(algorithm)
        .map_err(|source| IssueError::GenerateKey {
            subject: subject.to_owned(),
            source,
        })
}

fn finish(subject: &str, cert: rcgen::Certificate, key: PrivateKey) -> Result<Issued, IssueError> {
    let facts = facts_from_der(0, cert.der()).map_err(|source| IssueError::ReadBack {
        subject: subject.to_owned(),
        source,
    })?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key,
        facts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DnsLabel;
    use crate::pki::fixtures::{AUTHORITY, Chain, NOW, ca, hours};
    use crate::pki::inspect::key_matches;
    use crate::pki::testing::PooledKeySource;

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
        let zero =
            issue_root(&ca("zero", 0, KeyAlgorithm::EcdsaP256), &keys, NOW).expect_err("zero");
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
}
