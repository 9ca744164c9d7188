//! `custom`: the user's root (from a source; its key optional), and an
//! intermediate derived from the root key or provided. The root key never
//! enters the cluster: mgmt's root Secret holds `ca.crt` only.

use std::collections::BTreeMap;

use super::{Root, Trust, configured_root, signed_by_relayctl};
use crate::observed::ClusterObservation;
use crate::pki::{self, Issuer};
use crate::plan::cluster::ClusterBuilder;
use crate::plan::compare::bundle_reason;
use crate::plan::show::show_certs;
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

pub(super) fn root(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    mgmt: &mut ClusterBuilder<'_>,
) -> Result<Option<Root>, PlanError> {
    let Some(bundle) = configured_root(input, mgmt) else {
        return Ok(None);
    };
    // The root can sign only when its key is given: then the first
    // certificate of the bundle is the root that signs.
    let issuer = match (&input.material.root_key, bundle.ders().first()) {
        (Some(private), Some(first)) => Some(
            Issuer::new(
                pki::inspect::certificate_pem(first).as_bytes(),
                private.clone(),
            )
            .map_err(|e| PlanError::Issue {
                what: "the intermediate CA from the configured root".to_owned(),
                source: e,
            })?,
        ),
        _ => None,
    };
    let name = RelaySecret::Root.name();
    let slot = mgmt.slot(obs, name);
    let facts = bundle.facts();
    let mut reasons = Vec::new();
    if let Some(existing) = slot.usable() {
        bundle_reason(
            existing,
            &facts,
            "`ca.crt` differs from the configured root",
            &mut reasons,
        );
        if existing.get(key::TLS_KEY).is_some() {
            reasons.push(
                "holds a root key (`tls.key`), which `custom` mode keeps out of the cluster"
                    .to_owned(),
            );
        }
    }
    let data = BTreeMap::from([(
        key::CA_CRT.to_owned(),
        SecretBytes::new(bundle.pem().to_vec()),
    )]);
    let shown = BTreeMap::from([(key::CA_CRT.to_owned(), show_certs(&facts, false))]);
    let conflict = slot.is_conflict();
    mgmt.decide(&slot, name, reasons, data, shown);
    Ok((!conflict).then(|| Root {
        issuer,
        bundle: bundle.pem().to_vec(),
        facts,
        new: false,
    }))
}
