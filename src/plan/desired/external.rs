//! `external`: the user's PKI (e.g. cert-manager) issues everything and
//! relayctl holds no CA key. It distributes the configured root bundle,
//! copies the server certificate from its source, and verifies (or copies)
//! client certificates. During a root rotation ([`rotating`]) it moves the
//! bundles and installs what the PKI issued in the phase's order.

use super::{Trust, configured_root, token};
use crate::observed::ClusterObservation;
use crate::pki::{self, CertFacts, PrivateKey};
use crate::plan::cluster::ClusterBuilder;
use crate::plan::rotation::{Phase, Stage};
use crate::plan::{PlanError, PlanInput};
use crate::relay::{RelaySecret, key};
use crate::secret::SecretBytes;

pub(super) fn plan(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    mgmt: &mut ClusterBuilder<'_>,
) -> Result<Option<Trust>, PlanError> {
    let Some(bundle) = configured_root(input, mgmt) else {
        return Ok(None);
    };
    let bundle_facts = bundle.facts();
    crate::plan::server::copied(input, obs, mgmt, bundle.pem(), &bundle_facts);
    let token = token(input, obs, mgmt);
    Ok(Some(trust(bundle.pem().to_vec(), bundle_facts, token)))
}

/// What workloads are planned against: the bundle and the token, no signer.
fn trust(bundle: Vec<u8>, bundle_facts: Vec<CertFacts>, token: Option<SecretBytes>) -> Trust {
    Trust {
        bundle,
        bundle_facts,
        new_root: false,
        signer: None,
        chain_tail: Vec::new(),
        token,
        rotation: None,
    }
}

/// `external`: relayctl holds no key; it moves the bundles and installs
/// what your PKI issued, in the phase's order.
///
/// | phase | every `ca.crt` | server certificate |
/// |---|---|---|
/// | trust-both | old + new | the one in service, while it verifies with the old bundle |
/// | switch-signer, reissue | new + old | from `spec.server.cert` |
///
/// Client certificates are copied from their sources in every phase: the
/// server trusts both bundles from the first apply on (mgmt is written
/// before any workload).
pub(super) fn rotating(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    mgmt: &mut ClusterBuilder<'_>,
    stage: &Stage,
) -> Result<Option<Trust>, PlanError> {
    let rotation = stage.rotation().expect("a rotation stage");
    let sides = stage.record.sides();
    let switched = rotation.phase >= Phase::SwitchSigner;
    let (first, second) = if switched {
        (sides.new_root, sides.old_root)
    } else {
        (sides.old_root, sides.new_root)
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut bundle = Vec::new();
    for der in pki::inspect::certificate_ders(first)
        .unwrap_or_default()
        .into_iter()
        .chain(pki::inspect::certificate_ders(second).unwrap_or_default())
    {
        if seen.insert(der.clone()) {
            bundle.extend_from_slice(pki::inspect::certificate_pem(&der).as_bytes());
        }
    }
    let bundle_facts = pki::inspect_bundle(&bundle).unwrap_or_default();
    let in_service = (!switched)
        .then(|| held_server(obs, sides.old_root, input.now))
        .flatten();
    match in_service {
        Some((chain, private)) => mgmt.decide_copy(
            obs,
            RelaySecret::Server.name(),
            &chain,
            &private,
            &bundle,
            &bundle_facts,
            false,
        ),
        None => crate::plan::server::copied(input, obs, mgmt, &bundle, &bundle_facts),
    }
    let token = token(input, obs, mgmt);
    Ok(Some(trust(bundle, bundle_facts, token)))
}

/// mgmt's server certificate and key as they are, when the chain verifies
/// with `old_bundle` (what every agent trusts before trust-both is in place).
fn held_server(
    obs: &ClusterObservation,
    old_bundle: &[u8],
    now: time::OffsetDateTime,
) -> Option<(pki::Bundle, PrivateKey)> {
    let secret = obs.secrets.get(RelaySecret::Server.name())?;
    let chain = secret.get(key::TLS_CRT)?;
    pki::verify_chain(chain.expose(), old_bundle, pki::Usage::Server, None, now).ok()?;
    let private = PrivateKey::from_pem(secret.get(key::TLS_KEY)?).ok()?;
    Some((pki::Bundle::read(chain.expose()).ok()?, private))
}
