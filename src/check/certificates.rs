//! Every certificate the fleet holds, with its validity and when it will be
//! renewed: what the expiry metrics publish and the report's timeline draws.
//!
//! Read from what the clusters hold (not from the manifests): each root of
//! a `relay-root-tls-secret` bundle, the signing CA and the server
//! certificate on mgmt, each agent's client certificate. A certificate that
//! cannot be read is left out here; its check line says why.
//!
//! The renewal instant is the rule of whoever renews it: [`pki::renewal()`]
//! with `renewBefore` for what relayctl issues (server certificates,
//! preprovisioned or copied client certificates), the agent's grace ratio
//! for `token`-mode client certificates, and for the CAs, which nothing
//! renews, the moment `check` starts to warn (a CA rotation is due by then).

use serde::{Serialize, Serializer};
use time::OffsetDateTime;

use super::{AGENT_GRACE_RATIO, INTERMEDIATE_WARN_DAYS, ROOT_WARN_DAYS};
use crate::model::{ClientCertMode, TrustConfig};
use crate::observed::ClusterObservation;
use crate::pki::{self, CertFacts};
use crate::relay::{RelaySecret, Role, key};

/// What a certificate is in the relay chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertRole {
    /// A root CA of a root bundle.
    Root,
    /// The signing (intermediate) CA.
    Intermediate,
    /// The management server's certificate.
    Server,
    /// An agent's client certificate.
    Client,
}

impl CertRole {
    /// `root`, `intermediate`, `server` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Intermediate => "intermediate",
            Self::Server => "server",
            Self::Client => "client",
        }
    }
}

/// One certificate held by one cluster. No key, no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldCertificate {
    /// The Secret holding it.
    pub secret: String,
    /// Its place in the chain.
    pub role: CertRole,
    /// Subject DN.
    pub subject: String,
    /// SHA-256 fingerprint of the DER, lowercase hex without separators.
    pub sha256: String,
    /// Start of validity.
    #[serde(serialize_with = "rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(serialize_with = "rfc3339")]
    pub not_after: OffsetDateTime,
    /// When it is renewed (leaves) or due for rotation (CAs).
    #[serde(serialize_with = "rfc3339")]
    pub renewal: OffsetDateTime,
    /// Whose rule gives `renewal`, for people: `renewBefore 720h`,
    /// `the agent, at 10% of its lifetime`, `rotation due 365 days before expiry`.
    pub renewal_rule: String,
}

impl HeldCertificate {
    /// The first 12 hex characters of the fingerprint: enough to tell two
    /// certificates of one Secret apart (a bundle during a rotation).
    pub fn short_fingerprint(&self) -> &str {
        &self.sha256[..self.sha256.len().min(12)]
    }
}

fn rfc3339<S: Serializer>(time: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&pki::inspect::rfc3339(*time))
}

/// The certificates `obs` holds, as a cluster of `role` in `config`'s fleet.
pub fn held_certificates(
    config: &TrustConfig,
    role: Role,
    obs: &ClusterObservation,
) -> Vec<HeldCertificate> {
    let mut out = Vec::new();
    let first = |secret: RelaySecret, data_key: &str| -> Option<CertFacts> {
        let pem = obs.secrets.get(secret.name())?.get(data_key)?;
        pki::inspect_bundle(pem.expose()).ok()?.into_iter().next()
    };
    if let Some(bundle) = obs
        .secrets
        .get(RelaySecret::Root.name())
        .and_then(|s| s.get(key::CA_CRT))
        .and_then(|pem| pki::inspect_bundle(pem.expose()).ok())
    {
        for facts in bundle {
            out.push(ca(
                RelaySecret::Root,
                CertRole::Root,
                &facts,
                ROOT_WARN_DAYS,
            ));
        }
    }
    if role == Role::Management {
        if let Some(facts) = first(RelaySecret::Signing, key::TLS_CRT) {
            out.push(ca(
                RelaySecret::Signing,
                CertRole::Intermediate,
                &facts,
                INTERMEDIATE_WARN_DAYS,
            ));
        }
        if let Some(facts) = first(RelaySecret::Server, key::TLS_CRT) {
            let renewal = pki::renewal(&facts, config.server.renew_before);
            out.push(held(
                RelaySecret::Server,
                CertRole::Server,
                &facts,
                renewal.at,
                renewal.bound(),
            ));
        }
    } else if let Some(facts) = first(RelaySecret::Client, key::TLS_CRT) {
        let (at, rule) = if config.client_certs.mode == ClientCertMode::Token {
            let renewal = pki::renewal_at_ratio(&facts, AGENT_GRACE_RATIO);
            (renewal.at, format!("the agent, at {}", renewal.bound()))
        } else {
            let renewal = pki::renewal(&facts, config.client_certs.renew_before);
            (renewal.at, renewal.bound())
        };
        out.push(held(
            RelaySecret::Client,
            CertRole::Client,
            &facts,
            at,
            rule,
        ));
    }
    out
}

fn ca(secret: RelaySecret, role: CertRole, facts: &CertFacts, warn_days: i64) -> HeldCertificate {
    held(
        secret,
        role,
        facts,
        facts.not_after - time::Duration::days(warn_days),
        format!("rotation due {warn_days} days before expiry"),
    )
}

fn held(
    secret: RelaySecret,
    role: CertRole,
    facts: &CertFacts,
    renewal: OffsetDateTime,
    renewal_rule: String,
) -> HeldCertificate {
    HeldCertificate {
        secret: secret.name().to_owned(),
        role,
        subject: facts.subject.clone(),
        sha256: facts
            .sha256_fingerprint
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_lowercase(),
        not_before: facts.not_before,
        not_after: facts.not_after,
        renewal,
        renewal_rule,
    }
}
