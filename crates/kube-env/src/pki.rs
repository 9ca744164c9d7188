//! Key material of one cluster: its CA, the apiserver's serving certificate,
//! the admin client certificate and the service-account signing key.
//!
//! Every cluster gets its own CA so that one cluster's credentials are
//! rejected (401) by every other cluster, as in real multi-cluster setups.

use std::net::{IpAddr, Ipv4Addr};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A PEM certificate with its PEM (PKCS#8) private key.
#[derive(Clone)]
pub struct CertAndKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The certificate authority of one test cluster; signs its serving and
/// client certificates.
pub(crate) struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl ClusterCa {
    /// Generates a self-signed ECDSA P-256 CA named after the cluster.
    pub(crate) fn generate(cluster: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(&format!("relayctl-kube-env {cluster} CA"), &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A serving certificate for the apiserver, valid for 127.0.0.1 and
    /// localhost.
    pub(crate) fn serving_cert(&self) -> Result<CertAndKey, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.distinguished_name = name("kube-apiserver", &[]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate: the apiserver maps CN to the user name and each
    /// O to a group.
    pub(crate) fn client_cert(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<CertAndKey, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(user, groups);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A service-account signing key: (private PKCS#8 PEM, public SPKI PEM).
pub(crate) fn service_account_key() -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

/// The most groups a minted client certificate can carry.
///
/// rcgen keeps one value per attribute type in a subject, so the second group
/// goes in under the same OID (2.5.4.10) spelled as a custom type; Go's x509
/// parser reads both as `Organization`, which the apiserver maps to groups.
pub const MAX_GROUPS: usize = 2;

fn name(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    let mut orgs = organizations.iter();
    if let Some(first) = orgs.next() {
        dn.push(DnType::OrganizationName, *first);
    }
    if let Some(second) = orgs.next() {
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 10]), *second);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}
