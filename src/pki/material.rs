//! Checks of user-provided material (certificates and keys from `file`, `env`
//! or observed Secrets) before relayctl relies on it.
//!
//! Pure functions: they return every problem found, each with a message and a
//! hint; the config layer attaches the manifest location of the source. An
//! empty list means the material is usable for its role.

use serde::Serialize;
use time::OffsetDateTime;

use crate::model::Duration;
use crate::pki::assess::{Expect, KeyMatch, Names, assess};
use crate::pki::inspect::rfc3339;
use crate::pki::inspect::{CertFacts, inspect_bundle, key_matches};
use crate::pki::key::inspect_private_key;
use crate::pki::renewal::human;
use crate::pki::verify::Usage;
use crate::secret::SecretBytes;

/// One problem with provided material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum MaterialProblem {
    /// The certificate PEM cannot be read.
    UnreadableCertificate {
        /// The reader's message, with its causes.
        reason: String,
    },
    /// The private key PEM cannot be read.
    UnreadableKey {
        /// The reader's message (never key bytes).
        reason: String,
    },
    /// The key is not the certificate's.
    KeyMismatch {
        /// Certificate subject.
        subject: String,
        /// SPKI fingerprint of the certificate.
        cert_spki_sha256: String,
        /// SPKI fingerprint of the key.
        key_spki_sha256: String,
    },
    /// A certificate given as a CA is not one.
    NotCa {
        /// Certificate subject.
        subject: String,
    },
    /// A CA (or leaf) past its notAfter.
    Expired {
        /// Certificate subject.
        subject: String,
        /// Its notAfter.
        not_after: String,
    },
    /// A certificate not valid yet.
    NotYetValid {
        /// Certificate subject.
        subject: String,
        /// Its notBefore.
        not_before: String,
    },
    /// A CA that expires before what it must sign would.
    CaTooShort {
        /// CA subject.
        subject: String,
        /// Remaining validity, human form.
        remaining: String,
        /// Validity it must cover, human form.
        required: String,
    },
    /// A server certificate whose SANs miss the authority.
    SanMissesAuthority {
        /// Certificate subject.
        subject: String,
        /// Its DNS SANs.
        dns_names: Vec<String>,
        /// The authority agents dial.
        authority: String,
    },
    /// A client certificate whose SAN is not the cluster name.
    SanNotClusterName {
        /// Certificate subject.
        subject: String,
        /// Its DNS SANs.
        dns_names: Vec<String>,
        /// The cluster name.
        cluster: String,
    },
    /// A leaf lacking the extended key usage its role needs.
    MissingExtendedKeyUsage {
        /// Certificate subject.
        subject: String,
        /// `serverAuth` or `clientAuth`.
        needed: String,
    },
    /// The CA is not signed by any root of the bundle it must chain to.
    NotIssuedByRoot {
        /// Certificate subject.
        subject: String,
        /// Its issuer.
        issuer: String,
    },
    /// A CA that must sign leaves cannot (no keyCertSign) or may not sign CAs below it.
    CannotSign {
        /// Certificate subject.
        subject: String,
    },
    /// An RSA key shorter than 2048 bits.
    WeakKey {
        /// Certificate subject.
        subject: String,
        /// Its modulus size.
        bits: u32,
    },
    /// A signature with SHA-1 or MD5.
    WeakSignature {
        /// Certificate subject.
        subject: String,
    },
    /// Control or invisible characters in a name of the certificate.
    OddNames {
        /// Certificate subject (escaped).
        subject: String,
    },
}

/// The smallest RSA key accepted.
pub const MIN_RSA_BITS: u32 = 2048;

impl MaterialProblem {
    /// Whether the problem is the private key's (unreadable, or not the
    /// certificate's): it is then reported at the key's own source.
    pub fn is_about_the_key(&self) -> bool {
        matches!(self, Self::UnreadableKey { .. } | Self::KeyMismatch { .. })
    }

    /// One-line message, lowercase, naming the certificate.
    pub fn message(&self) -> String {
        match self {
            Self::UnreadableCertificate { reason } => {
                format!("certificate is unreadable: {reason}")
            }
            Self::UnreadableKey { reason } => format!("private key is unreadable: {reason}"),
            Self::KeyMismatch { subject, .. } => {
                format!("private key does not match certificate `{subject}`")
            }
            Self::NotCa { subject } => format!("certificate `{subject}` is not a CA"),
            Self::Expired { subject, not_after } => {
                format!("certificate `{subject}` expired at {not_after}")
            }
            Self::NotYetValid {
                subject,
                not_before,
            } => {
                format!("certificate `{subject}` is not valid before {not_before}")
            }
            Self::CaTooShort {
                subject,
                remaining,
                required,
            } => format!(
                "CA `{subject}` is valid for {remaining} more, shorter than the {required} it must sign for"
            ),
            Self::SanMissesAuthority {
                subject,
                dns_names,
                authority,
            } => format!(
                "server certificate `{subject}` has DNS SANs [{}], none covers authority `{authority}`",
                dns_names.join(", ")
            ),
            Self::SanNotClusterName {
                subject,
                dns_names,
                cluster,
            } => format!(
                "client certificate `{subject}` has DNS SANs [{}], want exactly `{cluster}`",
                dns_names.join(", ")
            ),
            Self::MissingExtendedKeyUsage { subject, needed } => {
                format!("certificate `{subject}` lacks extended key usage `{needed}`")
            }
            Self::NotIssuedByRoot { subject, issuer } => format!(
                "intermediate `{subject}` (issuer `{issuer}`) is not signed by any certificate of the root bundle"
            ),
            Self::CannotSign { subject } => {
                format!("CA `{subject}` has no `keyCertSign` key usage")
            }
            Self::WeakKey { subject, bits } => format!(
                "certificate `{subject}` has a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required"
            ),
            Self::WeakSignature { subject } => {
                format!("certificate `{subject}` is signed with SHA-1 or MD5")
            }
            Self::OddNames { subject } => format!(
                "certificate `{subject}` has control or invisible characters in its names (shown escaped)"
            ),
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match self {
            Self::UnreadableCertificate { .. } => {
                "provide PEM certificates (`-----BEGIN CERTIFICATE-----`), at most 1 MiB".to_owned()
            }
            Self::UnreadableKey { .. } => {
                "provide an unencrypted PEM key: `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`"
                    .to_owned()
            }
            Self::KeyMismatch { .. } => {
                "check that the key and certificate sources point at the same pair (compare `openssl x509 -pubkey` with `openssl pkey -pubout`)".to_owned()
            }
            Self::NotCa { .. } => {
                "give the CA certificate (basicConstraints CA:TRUE), not a leaf such as the server certificate".to_owned()
            }
            Self::Expired { .. } | Self::NotYetValid { .. } => {
                "provide a currently valid certificate, or let relayctl manage it".to_owned()
            }
            Self::CaTooShort { .. } => {
                "renew the CA, or shorten the validity of the certificates it signs".to_owned()
            }
            Self::SanMissesAuthority { authority, .. } => format!(
                "reissue the server certificate with DNS SAN `{authority}` (or a wildcard covering it)"
            ),
            Self::SanNotClusterName { cluster, .. } => {
                format!("reissue the client certificate with CN and DNS SAN `{cluster}`")
            }
            Self::MissingExtendedKeyUsage { needed, .. } => {
                format!("reissue the certificate with extended key usage `{needed}`")
            }
            Self::NotIssuedByRoot { .. } => "give the intermediate that your root signed, or the root that signed it: every agent verifies the server through the root bundle".to_owned(),
            Self::CannotSign { .. } => "use a CA certificate with `keyUsage: keyCertSign`".to_owned(),
            Self::WeakKey { .. } => "reissue it with an RSA key of 2048 bits or more, or an ECDSA P-256/P-384 key".to_owned(),
            Self::WeakSignature { .. } => "reissue it signed with SHA-256 or stronger".to_owned(),
            Self::OddNames { .. } => "reissue it with printable names; a name that can move the cursor or reorder text is not one relayctl will distribute".to_owned(),
        }
    }
}

impl std::fmt::Display for MaterialProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// Checks CA material: every certificate of `cert_pem` (a CA or a root bundle)
/// must be a CA valid at `now`; the first must match `key` when given and, when
/// `must_cover` is given, stay valid at least that long (the validity of what
/// it signs).
pub fn check_ca(
    cert_pem: &[u8],
    key: Option<&SecretBytes>,
    must_cover: Option<Duration>,
    now: OffsetDateTime,
) -> Vec<MaterialProblem> {
    let mut problems = Vec::new();
    let Some(certs) = read(cert_pem, &mut problems) else {
        return problems;
    };
    for cert in &certs {
        if !cert.is_ca {
            problems.push(MaterialProblem::NotCa {
                subject: cert.subject.clone(),
            });
        }
        strength_problems(cert, &mut problems);
        validity_problems(cert, now, &mut problems);
        if let Some(required) = must_cover {
            let remaining = cert.not_after - now;
            if remaining > time::Duration::ZERO && remaining < required.to_time() {
                problems.push(MaterialProblem::CaTooShort {
                    subject: cert.subject.clone(),
                    remaining: human(remaining),
                    required: human(required.to_time()),
                });
            }
        }
    }
    key_problems(&certs[0], key, &mut problems);
    problems
}

/// Checks a server certificate (`tls.crt`: leaf first): valid at `now`, SANs
/// cover `authority`, EKU serverAuth, key matches when given.
pub fn check_server(
    cert_pem: &[u8],
    key: Option<&SecretBytes>,
    authority: &str,
    now: OffsetDateTime,
) -> Vec<MaterialProblem> {
    check_leaf(cert_pem, key, Names::Covers(authority), Usage::Server, now)
}

/// Checks an agent's client certificate: valid at `now`, the DNS SANs are
/// exactly the cluster name, EKU clientAuth, key matches when given.
pub fn check_client(
    cert_pem: &[u8],
    key: Option<&SecretBytes>,
    cluster: &str,
    now: OffsetDateTime,
) -> Vec<MaterialProblem> {
    check_leaf(cert_pem, key, Names::Cluster(cluster), Usage::Client, now)
}

/// A leaf brought by the user, judged by [`crate::pki::assess`] like every
/// leaf relayctl meets: strength of every certificate of the chain, the
/// leaf's validity, SAN rule, EKU for `usage`, and key.
fn check_leaf(
    cert_pem: &[u8],
    key: Option<&SecretBytes>,
    names: Names<'_>,
    usage: Usage,
    now: OffsetDateTime,
) -> Vec<MaterialProblem> {
    let mut problems = Vec::new();
    let expect = Expect {
        usage,
        names,
        roots: None,
        renew_before: Duration::from_secs(0),
        now,
    };
    let assessment = match assess(cert_pem, key, &expect) {
        Ok(assessment) => assessment,
        Err(error) => {
            problems.push(MaterialProblem::UnreadableCertificate {
                reason: crate::error::error_chain(&error),
            });
            return problems;
        }
    };
    let leaf = assessment.leaf();
    assessment
        .chain
        .iter()
        .for_each(|c| strength_problems(c, &mut problems));
    validity_problems(leaf, now, &mut problems);
    if !assessment.names_hold {
        problems.push(match names {
            Names::Cluster(cluster) => MaterialProblem::SanNotClusterName {
                subject: leaf.subject.clone(),
                dns_names: leaf.dns_names.clone(),
                cluster: cluster.to_owned(),
            },
            Names::Covers(authority) => MaterialProblem::SanMissesAuthority {
                subject: leaf.subject.clone(),
                dns_names: leaf.dns_names.clone(),
                authority: authority.to_owned(),
            },
            Names::Exactly(_) => MaterialProblem::SanMissesAuthority {
                subject: leaf.subject.clone(),
                dns_names: leaf.dns_names.clone(),
                authority: names.wanted(),
            },
        });
    }
    let eku = match usage {
        Usage::Server => "serverAuth",
        Usage::Client => "clientAuth",
    };
    eku_problems(leaf, eku, &mut problems);
    match &assessment.key {
        KeyMatch::Matches(_) | KeyMatch::Missing => {}
        KeyMatch::Mismatch { key_spki_sha256 } => problems.push(MaterialProblem::KeyMismatch {
            subject: leaf.subject.clone(),
            cert_spki_sha256: leaf.spki_sha256.clone(),
            key_spki_sha256: key_spki_sha256.clone(),
        }),
        KeyMatch::Unreadable(reason) => problems.push(MaterialProblem::UnreadableKey {
            reason: reason.clone(),
        }),
    }
    problems
}

/// Checks that the first certificate of `intermediate_pem` is signed by one of
/// the certificates of `roots_pem` and may sign leaves.
pub fn check_issued_by_root(intermediate_pem: &[u8], roots_pem: &[u8]) -> Vec<MaterialProblem> {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    let mut problems = Vec::new();
    let (Ok(ders), Ok(roots)) = (
        crate::pki::inspect::certificate_ders(intermediate_pem),
        crate::pki::inspect::certificate_ders(roots_pem),
    ) else {
        return problems; // unreadable input is reported by check_ca
    };
    let Some(der) = ders.first() else {
        return problems;
    };
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return problems;
    };
    let roots: Vec<&[u8]> = roots.iter().map(Vec::as_slice).collect();
    let signed = crate::pki::verify::issued_by(der, &roots);
    let subject = cert.subject().to_string();
    if !signed {
        problems.push(MaterialProblem::NotIssuedByRoot {
            subject: subject.clone(),
            issuer: cert.issuer().to_string(),
        });
    }
    let can_sign = cert
        .key_usage()
        .ok()
        .flatten()
        .is_none_or(|usage| usage.value.key_cert_sign());
    if !can_sign {
        problems.push(MaterialProblem::CannotSign { subject });
    }
    problems
}

/// Checks only that `key` belongs to the first certificate of `cert_pem`.
pub fn check_key_pair(cert_pem: &[u8], key: &SecretBytes) -> Vec<MaterialProblem> {
    let mut problems = Vec::new();
    if let Some(certs) = read(cert_pem, &mut problems) {
        key_problems(&certs[0], Some(key), &mut problems);
    }
    problems
}

fn read(cert_pem: &[u8], problems: &mut Vec<MaterialProblem>) -> Option<Vec<CertFacts>> {
    match inspect_bundle(cert_pem) {
        Ok(certs) if !certs.is_empty() => Some(certs),
        Ok(_) => {
            problems.push(MaterialProblem::UnreadableCertificate {
                reason: "no certificate".to_owned(),
            });
            None
        }
        Err(error) => {
            problems.push(MaterialProblem::UnreadableCertificate {
                reason: crate::error::error_chain(&error),
            });
            None
        }
    }
}

/// Weak keys and signatures and unprintable names. The signature of a
/// self-issued root is not checked: nobody verifies a trust anchor's own
/// signature.
fn strength_problems(cert: &CertFacts, problems: &mut Vec<MaterialProblem>) {
    if let Some(bits) = cert.rsa_bits()
        && bits < MIN_RSA_BITS
    {
        problems.push(MaterialProblem::WeakKey {
            subject: cert.subject.clone(),
            bits,
        });
    }
    if cert.weak_signature && !cert.is_self_issued() {
        problems.push(MaterialProblem::WeakSignature {
            subject: cert.subject.clone(),
        });
    }
    if cert.odd_names {
        problems.push(MaterialProblem::OddNames {
            subject: cert.subject.clone(),
        });
    }
}

fn validity_problems(cert: &CertFacts, now: OffsetDateTime, problems: &mut Vec<MaterialProblem>) {
    if now > cert.not_after {
        problems.push(MaterialProblem::Expired {
            subject: cert.subject.clone(),
            not_after: rfc3339(cert.not_after),
        });
    } else if now < cert.not_before {
        problems.push(MaterialProblem::NotYetValid {
            subject: cert.subject.clone(),
            not_before: rfc3339(cert.not_before),
        });
    }
}

fn eku_problems(cert: &CertFacts, needed: &str, problems: &mut Vec<MaterialProblem>) {
    // An absent EKU extension allows every usage (RFC 5280 4.2.1.12).
    if !cert.extended_key_usage.is_empty()
        && !cert.has_extended_key_usage(needed)
        && !cert.has_extended_key_usage("anyExtendedKeyUsage")
    {
        problems.push(MaterialProblem::MissingExtendedKeyUsage {
            subject: cert.subject.clone(),
            needed: needed.to_owned(),
        });
    }
}

fn key_problems(cert: &CertFacts, key: Option<&SecretBytes>, problems: &mut Vec<MaterialProblem>) {
    let Some(key) = key else { return };
    match inspect_private_key(key) {
        Ok(facts) if key_matches(cert, &facts) => {}
        Ok(facts) => problems.push(MaterialProblem::KeyMismatch {
            subject: cert.subject.clone(),
            cert_spki_sha256: cert.spki_sha256.clone(),
            key_spki_sha256: facts.spki_sha256,
        }),
        Err(error) => problems.push(MaterialProblem::UnreadableKey {
            reason: crate::error::error_chain(&error),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyAlgorithm;
    use crate::pki::fixtures::{AUTHORITY, Chain, NOW, hours, secret};

    #[test]
    fn material_checks_report_every_problem() {
        let chain = Chain::new(KeyAlgorithm::EcdsaP256);
        let root_key = chain.root.key.to_pkcs8_pem();
        let server_key = chain.server.key.to_pkcs8_pem();
        assert_eq!(
            check_ca(
                chain.root.cert_pem.as_bytes(),
                Some(root_key),
                Some(hours(43_800)),
                NOW
            ),
            []
        );

        let problems = check_ca(
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

        let short = check_ca(
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
            check_server(server.as_bytes(), Some(server_key), AUTHORITY, NOW),
            []
        );
        let wrong = check_server(
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
            check_server(chain.client.cert_pem.as_bytes(), None, "cluster-1", NOW);
        assert!(matches!(
            client_as_server.as_slice(),
            [MaterialProblem::MissingExtendedKeyUsage { .. }]
        ));
        assert_eq!(
            check_client(chain.client.cert_pem.as_bytes(), None, "cluster-1", NOW),
            []
        );
        let other_cluster = check_client(chain.client.cert_pem.as_bytes(), None, "cluster-2", NOW);
        assert!(matches!(
            other_cluster.as_slice(),
            [MaterialProblem::SanNotClusterName { .. }]
        ));
        let garbage = check_ca(b"nope", Some(&secret("nope")), None, NOW);
        assert!(matches!(
            garbage.as_slice(),
            [MaterialProblem::UnreadableCertificate { .. }]
        ));
        let bad_key = check_key_pair(chain.root.cert_pem.as_bytes(), &secret("nope"));
        assert!(matches!(
            bad_key.as_slice(),
            [MaterialProblem::UnreadableKey { .. }]
        ));
        // Problems serialize for JSON diagnostics.
        let json = serde_json::to_string(&bad_key).expect("json");
        assert!(json.contains("\"kind\":\"unreadable-key\""), "{json}");
    }
}
