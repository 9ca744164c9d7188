//! A root bundle (a `ca.crt`): the certificates agents and the server trust.
//!
//! Bundles are compared by the set of their certificates' fingerprints,
//! never by bytes: the same roots re-encoded or reordered are the same
//! bundle. [`Bundle::pem`] is canonical (re-encoded from DER, in order).

use std::collections::BTreeSet;

use crate::pki::inspect::{
    CertFacts, InspectError, certificate_ders, certificate_pem, facts_from_der,
};

/// A readable, non-empty bundle of certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pem: Vec<u8>,
    certs: Vec<(CertFacts, Vec<u8>)>,
}

impl Bundle {
    /// Reads every certificate of `pem`; fails when one is unreadable or
    /// there is none.
    pub fn read(pem: &[u8]) -> Result<Self, InspectError> {
        let ders = certificate_ders(pem)?;
        if ders.is_empty() {
            return Err(InspectError::NoPem { what: "empty" });
        }
        let mut canonical = String::new();
        let mut certs = Vec::with_capacity(ders.len());
        for (index, der) in ders.into_iter().enumerate() {
            canonical.push_str(&certificate_pem(&der));
            certs.push((facts_from_der(index, &der)?, der));
        }
        Ok(Self {
            pem: canonical.into_bytes(),
            certs,
        })
    }

    /// The canonical PEM.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// Facts of each certificate, in order.
    pub fn facts(&self) -> Vec<CertFacts> {
        self.certs.iter().map(|(f, _)| f.clone()).collect()
    }

    /// Each certificate's facts and DER, in order.
    pub fn certs(&self) -> &[(CertFacts, Vec<u8>)] {
        &self.certs
    }

    /// The DER of each certificate.
    pub fn ders(&self) -> Vec<&[u8]> {
        self.certs.iter().map(|(_, d)| d.as_slice()).collect()
    }

    /// The SHA-256 fingerprints of its certificates.
    pub fn fingerprints(&self) -> BTreeSet<&str> {
        fingerprints(self.certs.iter().map(|(f, _)| f))
    }

    /// Whether `other` holds the same certificates (order and encoding aside).
    pub fn same_as(&self, other: &[CertFacts]) -> bool {
        self.fingerprints() == fingerprints(other)
    }

    /// `` `CN=a` (sha256 0123…), `CN=b` (sha256 …) `` for messages.
    pub fn describe(&self) -> String {
        self.certs
            .iter()
            .map(|(f, _)| {
                format!(
                    "`{}` (sha256 {})",
                    f.subject,
                    short_fingerprint(&f.sha256_fingerprint)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The fingerprint set of some certificates.
pub fn fingerprints<'a>(facts: impl IntoIterator<Item = &'a CertFacts>) -> BTreeSet<&'a str> {
    facts
        .into_iter()
        .map(|f| f.sha256_fingerprint.as_str())
        .collect()
}

/// Whether the PEM `pem` holds the certificates of `facts` (order and
/// encoding aside), told by fingerprint without parsing them.
pub fn pem_holds(pem: &[u8], facts: &[CertFacts]) -> bool {
    crate::pki::inspect::pem_fingerprints(pem).is_ok_and(|prints| {
        prints.iter().map(String::as_str).collect::<BTreeSet<_>>() == fingerprints(facts)
    })
}

/// The first 16 hex digits of a fingerprint, lowercase, without colons: how
/// plans and reports show one.
pub fn short_fingerprint(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(|c| *c != ':')
        .take(16)
        .collect::<String>()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyAlgorithm;
    use crate::pki::fixtures::Chain;
    use crate::pki::inspect_bundle;

    #[test]
    fn a_pem_holds_the_same_certificates_in_any_order_and_no_others() {
        let chain = Chain::new(KeyAlgorithm::EcdsaP256);
        let (root, intermediate) = (&chain.root.cert_pem, &chain.intermediate.cert_pem);
        let facts = inspect_bundle(format!("{root}{intermediate}").as_bytes()).unwrap();
        assert!(pem_holds(
            format!("{intermediate}{root}").as_bytes(),
            &facts
        ));
        assert!(!pem_holds(root.as_bytes(), &facts));
        let other = Chain::new(KeyAlgorithm::EcdsaP256);
        let with_other = format!("{root}{intermediate}{}", other.root.cert_pem);
        assert!(!pem_holds(with_other.as_bytes(), &facts));
        assert!(!pem_holds(b"not a certificate", &facts));
    }
}
