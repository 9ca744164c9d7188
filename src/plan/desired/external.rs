//! `external`: the user's PKI (e.g. cert-manager) issues everything and
//! relayctl holds no CA key. It distributes the configured root bundle,
//! copies the server certificate from its source, and verifies (or copies)
//! client certificates.

use super::{Trust, configured_root, token};
use crate::observed::ClusterObservation;
use crate::plan::cluster::ClusterBuilder;
use crate::plan::{PlanError, PlanInput};

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
    Ok(Some(Trust {
        bundle: bundle.pem().to_vec(),
        bundle_facts,
        new_root: false,
        signer: None,
        chain_tail: Vec::new(),
        token,
        rotation: None,
    }))
}
