//! Chain verification with rustls-webpki: the same verifier rustls runs in a
//! handshake, so "verifies here" means "a rustls peer accepts it".
//!
//! A chain is the leaf then its intermediates (a `tls.crt`); trust anchors are
//! a root bundle (a `ca.crt`, possibly several roots during rotation). Time is
//! a parameter.

use std::sync::Mutex;

use rustls_pki_types::{
    CertificateDer, ServerName, SignatureVerificationAlgorithm, TrustAnchor, UnixTime,
};
use time::OffsetDateTime;

use crate::pki::Issuer;
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
    let anchors = anchors(roots_pem)?;
    let chain_ders: Vec<CertificateDer<'_>> = chain
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let Some((leaf_der, intermediates)) = chain_ders.split_first() else {
        return Err(VerifyError::ReadChain(InspectError::NoPem {
            what: "empty",
        }));
    };
    let leaf = verify_leaf(leaf_der, intermediates, &anchors, usage, now)?;
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

/// Verifies the leaf `leaf_der` with `signer` as its one intermediate, to
/// the roots in `roots_pem`: the same answer as [`verify_chain`] on the
/// leaf followed by the signer. A fleet's leaves share their signer, so the
/// signer's own path (its signature by a root, its validity, its usage) is
/// proven once per bundle, usage and time and remembered by the signer;
/// after that a leaf costs one signature check, against the signer as
/// trust anchor. Only when no root constrains names (a root's name
/// constraints bind the leaf's names, which the signer as anchor would not
/// see) and the signer's key is no root's (else a path could skip it).
pub fn verify_issued(
    leaf_der: &[u8],
    signer: &Issuer,
    roots_pem: &[u8],
    usage: Usage,
    now: OffsetDateTime,
) -> Result<(), VerifyError> {
    let leaf = CertificateDer::from(leaf_der);
    let signer_der = CertificateDer::from(signer.cert_der());
    let as_anchor = webpki::anchor_from_trusted_cert(&signer_der).ok();
    let proven = || signer.proofs.hold(roots_pem, usage, now);
    if let Some(anchor) = &as_anchor
        && proven()
        && verify_leaf(&leaf, &[], std::slice::from_ref(anchor), usage, now).is_ok()
    {
        return Ok(());
    }
    let roots = anchors(roots_pem)?;
    verify_leaf(&leaf, std::slice::from_ref(&signer_der), &roots, usage, now)?;
    if let Some(anchor) = &as_anchor
        && roots.iter().all(|root| {
            root.name_constraints.is_none()
                && root.subject_public_key_info != anchor.subject_public_key_info
        })
        && verify_leaf(&leaf, &[], std::slice::from_ref(anchor), usage, now).is_ok()
    {
        signer.proofs.add(roots_pem, usage, now);
    }
    Ok(())
}

/// The trust anchors of a root bundle.
fn anchors(roots_pem: &[u8]) -> Result<Vec<TrustAnchor<'static>>, VerifyError> {
    let roots = certificate_ders(roots_pem).map_err(VerifyError::ReadRoots)?;
    roots
        .iter()
        .enumerate()
        .map(|(index, der)| {
            webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                .map(|anchor| anchor.to_owned())
                .map_err(|source| VerifyError::BadRoot { index, source })
        })
        .collect()
}

/// webpki's path check of one leaf, for `usage` at `now`.
fn verify_leaf<'a>(
    leaf_der: &'a CertificateDer<'a>,
    intermediates: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'_>],
    usage: Usage,
    now: OffsetDateTime,
) -> Result<webpki::EndEntityCert<'a>, VerifyError> {
    let leaf = webpki::EndEntityCert::try_from(leaf_der).map_err(VerifyError::BadLeaf)?;
    let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));
    let eku = match usage {
        Usage::Server => webpki::KeyUsage::server_auth(),
        Usage::Client => webpki::KeyUsage::client_auth(),
    };
    leaf.verify_for_usage(
        supported_signature_algorithms(),
        anchors,
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
    Ok(leaf)
}

/// The root bundles, usages and times an [`Issuer`] was proven to chain to
/// (by [`verify_issued`]). A cache: it takes no part in an issuer's
/// equality, and a clone starts with the same proofs.
#[derive(Default)]
pub struct Proofs(Mutex<Vec<(Vec<u8>, Usage, OffsetDateTime)>>);

impl Proofs {
    fn hold(&self, roots_pem: &[u8], usage: Usage, at: OffsetDateTime) -> bool {
        self.lock()
            .iter()
            .any(|(roots, u, t)| *u == usage && *t == at && roots == roots_pem)
    }

    fn add(&self, roots_pem: &[u8], usage: Usage, at: OffsetDateTime) {
        self.lock().push((roots_pem.to_vec(), usage, at));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Vec<u8>, Usage, OffsetDateTime)>> {
        // A proof is pushed whole: a panic elsewhere cannot leave one torn.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clone for Proofs {
    fn clone(&self) -> Self {
        Self(Mutex::new(self.lock().clone()))
    }
}

impl PartialEq for Proofs {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Proofs {}

impl std::fmt::Debug for Proofs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proofs({})", self.lock().len())
    }
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

    /// `verify_issued` on `leaf` and `verify_chain` on the leaf and signer
    /// agree.
    fn agree(leaf: &str, signer: &Issuer, roots: &[u8], usage: Usage, at: OffsetDateTime) -> bool {
        let der = certificate_ders(leaf.as_bytes()).expect("leaf").remove(0);
        let chain = format!("{leaf}{}", signer.cert_pem());
        let full = verify_chain(chain.as_bytes(), roots, usage, None, at).is_ok();
        let issued = verify_issued(&der, signer, roots, usage, at).is_ok();
        assert_eq!(issued, full, "{usage} at {at}");
        issued
    }

    #[test]
    fn a_leaf_checked_against_a_proven_signer_is_judged_as_its_whole_chain() {
        let chain = Chain::new(KeyAlgorithm::EcdsaP256);
        // The pooled keys repeat within a key type: another type is another CA.
        let other = Chain::new(KeyAlgorithm::EcdsaP384);
        let signer = Issuer::from_issued(&chain.intermediate).expect("signer");
        let roots = chain.root.cert_pem.as_bytes();
        let (server, client) = (&chain.server.cert_pem, &chain.client.cert_pem);
        assert_eq!(format!("{:?}", signer.proofs), "Proofs(0)");
        assert!(agree(server, &signer, roots, Usage::Server, NOW));
        assert_eq!(format!("{:?}", signer.proofs), "Proofs(1)", "proven once");
        // Proven for servers at NOW: every other judgement is still the
        // whole chain's.
        assert!(agree(server, &signer, roots, Usage::Server, NOW));
        assert!(!agree(client, &signer, roots, Usage::Server, NOW));
        assert!(agree(client, &signer, roots, Usage::Client, NOW));
        let later = NOW + hours(8761).to_time();
        assert!(!agree(server, &signer, roots, Usage::Server, later));
        assert!(!agree(
            &other.server.cert_pem,
            &signer,
            roots,
            Usage::Server,
            NOW
        ));
        // Another bundle is not proven by this one: the signer does not
        // reach it, though it signed the leaf.
        let foreign = other.root.cert_pem.as_bytes();
        assert!(!agree(server, &signer, foreign, Usage::Server, NOW));
        assert_eq!(
            format!("{:?}", signer.proofs),
            "Proofs(2)",
            "server and client"
        );
        // A clone keeps the proofs and compares equal whatever they hold.
        let fresh = Issuer::from_issued(&chain.intermediate).expect("signer");
        assert_eq!(signer.clone(), fresh);
        assert_eq!(format!("{:?}", signer.clone().proofs), "Proofs(2)");
    }

    #[test]
    fn a_root_that_constrains_names_is_never_skipped() {
        use crate::pki::{PrivateKey, issue_intermediate, issue_server};
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "constrained-root");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = NOW - time::Duration::hours(1);
        params.not_after = NOW + time::Duration::days(3650);
        params.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("inside.example".into())],
            excluded_subtrees: Vec::new(),
        });
        let root_pem = params.self_signed(&pair).expect("root").pem();
        let key = PrivateKey::from_pem(&crate::pki::fixtures::secret(&pair.serialize_pem()))
            .expect("root key");
        let root = Issuer::new(root_pem.as_bytes(), key).expect("root issuer");
        let keys = crate::pki::testing::PooledKeySource;
        let request = crate::pki::fixtures::ca("signing", 8760, KeyAlgorithm::EcdsaP256);
        let intermediate = issue_intermediate(&request, &root, &keys, NOW).expect("intermediate");
        let signer = Issuer::from_issued(&intermediate).expect("signer");
        let leaf = |name: &str| {
            let request = crate::pki::ServerRequest {
                authority: name.to_owned(),
                dns_names: vec![name.to_owned()],
                validity: hours(24),
                key: KeyAlgorithm::EcdsaP256,
            };
            issue_server(&request, &signer, &keys, NOW)
                .expect("leaf")
                .cert_pem
        };
        let roots = root_pem.as_bytes();
        assert!(agree(
            &leaf("relay.inside.example"),
            &signer,
            roots,
            Usage::Server,
            NOW
        ));
        assert!(!agree(
            &leaf("relay.outside.example"),
            &signer,
            roots,
            Usage::Server,
            NOW
        ));
        assert_eq!(
            format!("{:?}", signer.proofs),
            "Proofs(0)",
            "nothing remembered"
        );
    }
}
