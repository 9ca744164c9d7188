//! Chain verification with rustls-webpki: the same verifier rustls runs in a
//! handshake, so "verifies here" means "a rustls peer accepts it".
//!
//! A chain is the leaf then its intermediates (a `tls.crt`); trust anchors are
//! a root bundle (a `ca.crt`, possibly several roots during rotation). Time is
//! a parameter.

use rustls_pki_types::{CertificateDer, ServerName, SignatureVerificationAlgorithm, UnixTime};
use time::OffsetDateTime;

use crate::pki::inspect::{InspectError, certificate_ders};

/// What the leaf must be good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Usage {
    /// TLS server authentication (EKU serverAuth, if EKUs are present).
    Server,
    /// TLS client authentication (EKU clientAuth, if EKUs are present).
    Client,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Server => "server",
            Self::Client => "client",
        })
    }
}

/// Why a chain does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The chain PEM is unreadable.
    #[error("could not read the certificate chain")]
    ReadChain(#[source] InspectError),
    /// The root bundle PEM is unreadable.
    #[error("could not read the root bundle")]
    ReadRoots(#[source] InspectError),
    /// A root in the bundle cannot serve as a trust anchor.
    #[error("root {index} of the bundle cannot be used as a trust anchor")]
    BadRoot {
        /// 0-based position in the bundle.
        index: usize,
        /// webpki's reason.
        #[source]
        source: webpki::Error,
    },
    /// The leaf cannot be parsed as an end-entity certificate.
    #[error("the leaf certificate cannot be parsed for verification")]
    BadLeaf(#[source] webpki::Error),
    /// No path from the leaf to a root is valid for the usage at that time.
    #[error("no valid path to a trusted root for {usage} use at {}", crate::pki::inspect::rfc3339(*at))]
    Untrusted {
        /// The usage checked.
        usage: Usage,
        /// The verification time.
        at: OffsetDateTime,
        /// webpki's reason (expired, unknown issuer, wrong EKU, ...).
        #[source]
        source: webpki::Error,
    },
    /// The name to check is not a valid DNS name.
    #[error("`{name}` is not a valid DNS name to verify against")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// The leaf's SANs do not cover the expected DNS name.
    #[error("the leaf is not valid for DNS name `{name}`")]
    NameMismatch {
        /// The name expected.
        name: String,
        /// webpki's reason.
        #[source]
        source: webpki::Error,
    },
}

/// The signature algorithms relayctl accepts in chains: the ring set rustls
/// uses by default (ECDSA P-256/P-384, RSA PKCS#1 and PSS, Ed25519).
pub fn supported_signature_algorithms() -> &'static [&'static dyn SignatureVerificationAlgorithm] {
    rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all
}

/// Verifies that `chain_pem` (leaf, then intermediates) chains to one of the
/// roots in `roots_pem` at `now`, for `usage`, and — when `dns_name` is given —
/// that the leaf's SANs cover it (for a client cert, pass the cluster name).
pub fn verify_chain(
    chain_pem: &[u8],
    roots_pem: &[u8],
    usage: Usage,
    dns_name: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), VerifyError> {
    let chain = certificate_ders(chain_pem).map_err(VerifyError::ReadChain)?;
    let roots = certificate_ders(roots_pem).map_err(VerifyError::ReadRoots)?;
    let root_ders: Vec<CertificateDer<'_>> = roots
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let anchors = root_ders
        .iter()
        .enumerate()
        .map(|(index, der)| {
            webpki::anchor_from_trusted_cert(der)
                .map(|anchor| anchor.to_owned())
                .map_err(|source| VerifyError::BadRoot { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let chain_ders: Vec<CertificateDer<'_>> = chain
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let Some((leaf_der, intermediates)) = chain_ders.split_first() else {
        return Err(VerifyError::ReadChain(InspectError::NoPem {
            what: "empty",
        }));
    };
    let leaf = webpki::EndEntityCert::try_from(leaf_der).map_err(VerifyError::BadLeaf)?;
    let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));
    let eku = match usage {
        Usage::Server => webpki::KeyUsage::server_auth(),
        Usage::Client => webpki::KeyUsage::client_auth(),
    };
    leaf.verify_for_usage(
        supported_signature_algorithms(),
        &anchors,
        intermediates,
        time,
        eku,
        None,
        None,
    )
    .map_err(|source| VerifyError::Untrusted {
        usage,
        at: now,
        source,
    })?;
    if let Some(name) = dns_name {
        let server_name = ServerName::try_from(name).map_err(|_| VerifyError::InvalidName {
            name: name.to_owned(),
        })?;
        leaf.verify_is_valid_for_subject_name(&server_name)
            .map_err(|source| VerifyError::NameMismatch {
                name: name.to_owned(),
                source,
            })?;
    }
    Ok(())
}

/// Whether the certificate `child_der` is signed by one of `issuer_ders` (and
/// names it as issuer). For CA certificates, which a TLS verifier will not
/// accept as end entities, this is the chain check.
pub fn issued_by(child_der: &[u8], issuer_ders: &[&[u8]]) -> bool {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    let Ok((_, child)) = X509Certificate::from_der(child_der) else {
        return false;
    };
    issuer_ders.iter().any(|der| {
        X509Certificate::from_der(der).is_ok_and(|(_, issuer)| {
            child.issuer() == issuer.subject()
                && child.verify_signature(Some(issuer.public_key())).is_ok()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyAlgorithm;
    use crate::pki::fixtures::{AUTHORITY, Chain, NOW, hours};

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
}
