//! `managed`: relayctl generates the root and the intermediate and keeps
//! both keys in the management cluster. An existing root is always reused;
//! one whose key is lost is an error, never silently replaced (a new root
//! would need every agent to trust it).

use std::collections::BTreeMap;

use super::{Root, Trust, signed_by_relayctl};
use crate::observed::ClusterObservation;
use crate::pki::{self, Issuer};
use crate::plan::cluster::ClusterBuilder;
use crate::plan::compare::{bundle_reason, ca_request, existing_ca, issue_err};
use crate::plan::show::{show_certs, show_key, show_observed};
use crate::plan::{PlanError, PlanInput};
use crate::relay::{RelaySecret, key};
use crate::secret::SecretBytes;

pub(super) fn plan(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    mgmt: &mut ClusterBuilder<'_>,
) -> Result<Option<Trust>, PlanError> {
    let Some(root) = root(input, obs, mgmt)? else {
        return Ok(None);
    };
    signed_by_relayctl(input, obs, mgmt, root)
}

/// The root: reused when it exists and its key matches, generated when it
/// does not exist.
pub(super) fn root(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    mgmt: &mut ClusterBuilder<'_>,
) -> Result<Option<Root>, PlanError> {
    let config = input.config;
    let name = RelaySecret::Root.name();
    let slot = mgmt.slot(obs, name);
    let (issuer, new) = match slot.usable().map(|s| existing_ca(s, key::CA_CRT)) {
        Some(Ok(issuer)) => (issuer, false),
        Some(Err(why)) => {
            // Replacing a root breaks every agent's trust: never implicit.
            let existing = slot.usable().expect("usable: mapped above");
            mgmt.push_error(
                name,
                Some(existing.version.clone()),
                vec![format!(
                    "{why}; relayctl never replaces an existing root CA on its own: restore the key, or delete the Secret to generate a new root (every agent then needs the new root)"
                )],
                show_observed(existing),
            );
            return Ok(None);
        }
        None => {
            let root = pki::issue_root(&ca_request(&config.ca.root), input.random.keys, input.now)
                .map_err(issue_err("the root CA"))?;
            (
                Issuer::from_issued(&root).map_err(issue_err("the root CA"))?,
                true,
            )
        }
    };
    let bundle = issuer.cert_pem().as_bytes().to_vec();
    let facts = vec![issuer.facts().clone()];
    let data = BTreeMap::from([
        (key::CA_CRT.to_owned(), SecretBytes::new(bundle.clone())),
        (key::TLS_KEY.to_owned(), issuer.key().to_pkcs8_pem().clone()),
    ]);
    let shown = BTreeMap::from([
        (key::CA_CRT.to_owned(), show_certs(&facts, new)),
        (key::TLS_KEY.to_owned(), show_key(issuer.key(), new)),
    ]);
    let mut reasons = Vec::new();
    if let Some(existing) = slot.usable() {
        // After a rotation the old root leaves the bundle.
        bundle_reason(
            existing,
            &facts,
            "`ca.crt` holds more than the root",
            &mut reasons,
        );
    }
    let conflict = slot.is_conflict();
    mgmt.decide(&slot, name, reasons, data, shown);
    Ok((!conflict).then_some(Root {
        issuer: Some(issuer),
        bundle,
        facts,
        new,
    }))
}
