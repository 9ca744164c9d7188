//! mgmt during a CA rotation: the root Secret, the signing CA and the
//! server certificate as the rotation's phase wants them (the rotation
//! itself, its phases and gates, is `plan::rotation`).
//!
//! | phase | root `ca.crt` | root `tls.key` (`managed`) | signer | server |
//! |---|---|---|---|---|
//! | trust-both | old + new | old | old | from the old signer |
//! | switch-signer, reissue | new + old | new | new (+ cross-signed) | from the new signer |
//!
//! An intermediate rotation keeps the root as it is and signs with the new
//! intermediate from its first phase. `external` mode, where relayctl holds
//! no key, has its own table in [`super::external::rotating`].

use std::collections::BTreeMap;

use super::{Root, RotationTrust, Trust, token};
use crate::observed::ClusterObservation;
use crate::pki::{self, CertFacts, Issuer, PrivateKey};
use crate::plan::cluster::ClusterBuilder;
use crate::plan::compare::bundle_reason;
use crate::plan::rotation::{Kind, Phase, Stage};
use crate::plan::show::{show_certs, show_key};
use crate::plan::{PlanError, PlanInput};
use crate::relay::{RelaySecret, key};
use crate::secret::SecretBytes;

/// Plans mgmt for the rotation of `stage`, after its record.
pub(super) fn plan(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    mgmt: &mut ClusterBuilder<'_>,
    stage: &Stage,
) -> Result<Option<Trust>, PlanError> {
    let rotation = stage.rotation().expect("a rotation stage");
    if input.config.ca.mode == crate::model::CaMode::External {
        return super::external::rotating(input, obs, mgmt, stage);
    }
    let sides = stage.record.sides();
    let switched = rotation.phase >= Phase::SwitchSigner;
    let root = match rotation.kind {
        Kind::Root => {
            let (first, second) = if switched {
                (sides.new_root, sides.old_root)
            } else {
                (sides.old_root, sides.new_root)
            };
            let signing_key = if switched {
                sides.new_root_key
            } else {
                sides.old_root_key
            };
            let Some(root) = root_secret(input, obs, mgmt, first, second, signing_key) else {
                return Ok(None);
            };
            root
        }
        Kind::Intermediate => match super::steady_root(input, obs, mgmt)? {
            Some(root) => root,
            None => return Ok(None),
        },
    };
    let (signer, other) = if switched {
        (sides.new_signer, sides.old_signer)
    } else {
        (sides.old_signer, sides.new_signer)
    };
    let Some(signer) = signer.cloned() else {
        mgmt.push_error(
            RelaySecret::Signing.name(),
            None,
            vec!["the rotation record holds no intermediate for this phase; restore the record from a backup".to_owned()],
            BTreeMap::new(),
        );
        return Ok(None);
    };
    let mut chain_tail = signer.cert_pem().as_bytes().to_vec();
    if switched
        && rotation.kind == Kind::Root
        && let Some(cross) = sides.cross
    {
        chain_tail.extend_from_slice(cross);
    }
    if !signing_secret(input, obs, mgmt, &signer, &chain_tail, &root, switched) {
        return Ok(None);
    }
    super::super::server::issued(
        input,
        obs,
        mgmt,
        &super::super::server::Signed {
            signer: &signer,
            chain_tail: &chain_tail,
            bundle: &root.bundle,
            bundle_facts: &root.facts,
            new_signer: false,
            new_root: false,
        },
    )?;
    let token = token(input, obs, mgmt);
    Ok(Some(Trust {
        bundle: root.bundle,
        bundle_facts: root.facts,
        new_root: false,
        signer: Some(signer),
        chain_tail,
        token,
        rotation: Some(RotationTrust {
            accepted: other.cloned().into_iter().collect(),
            wave: stage.wave.clone(),
            reissuing: rotation.phase == Phase::Reissue,
        }),
    }))
}

/// The root Secret holding both roots, `first` first (the one whose key it
/// holds in `managed` mode); `custom` keeps no key in it.
fn root_secret(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    mgmt: &mut ClusterBuilder<'_>,
    first: &[u8],
    second: &[u8],
    private: Option<&PrivateKey>,
) -> Option<Root> {
    let name = RelaySecret::Root.name();
    let mut bundle = first.to_vec();
    bundle.extend_from_slice(second);
    let facts: Vec<CertFacts> = pki::inspect_bundle(&bundle).unwrap_or_default();
    let slot = mgmt.slot(obs, name);
    let managed = input.config.ca.mode == crate::model::CaMode::Managed;
    let mut reasons = Vec::new();
    if let Some(existing) = slot.usable() {
        bundle_reason(
            existing,
            &facts,
            "`ca.crt` becomes the rotation's bundle of the old and the new root",
            &mut reasons,
        );
        let held_key = existing
            .get(key::TLS_KEY)
            .and_then(|k| PrivateKey::from_pem(k).ok());
        match (managed, held_key, private) {
            (true, Some(held), Some(wanted)) if held.facts() == wanted.facts() => {}
            (true, _, Some(_)) => {
                reasons.push("`tls.key` becomes the key of the root that signs".to_owned());
            }
            (false, Some(_), _) => reasons.push(
                "holds a root key (`tls.key`), which `custom` mode keeps out of the cluster (the rotation record keeps it for the cross-signed bridge)"
                    .to_owned(),
            ),
            _ => {}
        }
    }
    let mut data = BTreeMap::from([(key::CA_CRT.to_owned(), SecretBytes::new(bundle.clone()))]);
    let mut shown = BTreeMap::from([(key::CA_CRT.to_owned(), show_certs(&facts, false))]);
    let issuer = match (managed, private) {
        (true, Some(private)) => {
            data.insert(key::TLS_KEY.to_owned(), private.to_pkcs8_pem().clone());
            shown.insert(key::TLS_KEY.to_owned(), show_key(private, false));
            Issuer::new(first, private.clone()).ok()
        }
        _ => None,
    };
    let conflict = slot.is_conflict();
    mgmt.decide(&slot, name, reasons, data, shown);
    (!conflict).then_some(Root {
        issuer,
        bundle,
        facts,
        new: false,
    })
}

/// The signing Secret with this phase's intermediate; `false` when it is
/// someone else's.
fn signing_secret(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    mgmt: &mut ClusterBuilder<'_>,
    signer: &Issuer,
    chain_tail: &[u8],
    root: &Root,
    switched: bool,
) -> bool {
    let _ = input;
    let name = RelaySecret::Signing.name();
    let slot = mgmt.slot(obs, name);
    let chain_facts = pki::inspect_bundle(chain_tail).unwrap_or_default();
    let mut reasons = Vec::new();
    if let Some(existing) = slot.usable() {
        let held = existing
            .get(key::TLS_CRT)
            .and_then(|v| pki::inspect_bundle(v.expose()).ok())
            .unwrap_or_default();
        let fingerprints = |f: &[CertFacts]| -> Vec<String> {
            f.iter().map(|c| c.sha256_fingerprint.clone()).collect()
        };
        if held.first().map(|f| &f.sha256_fingerprint) != Some(&signer.facts().sha256_fingerprint) {
            reasons.push(if switched {
                "the rotation switches the signer to the new intermediate".to_owned()
            } else {
                "the signer is the old intermediate in this phase".to_owned()
            });
        } else if fingerprints(&held) != fingerprints(&chain_facts) {
            reasons.push(format!(
                "`{}` carries the intermediate and, while both roots are trusted, its cross-signed twin",
                key::TLS_CRT
            ));
        }
        bundle_reason(
            existing,
            &root.facts,
            "`ca.crt` differs from the root bundle",
            &mut reasons,
        );
    }
    let data = BTreeMap::from([
        (
            key::TLS_CRT.to_owned(),
            SecretBytes::new(chain_tail.to_vec()),
        ),
        (key::TLS_KEY.to_owned(), signer.key().to_pkcs8_pem().clone()),
        (
            key::CA_CRT.to_owned(),
            SecretBytes::new(root.bundle.clone()),
        ),
    ]);
    let shown = BTreeMap::from([
        (key::TLS_CRT.to_owned(), show_certs(&chain_facts, false)),
        (key::TLS_KEY.to_owned(), show_key(signer.key(), false)),
        (key::CA_CRT.to_owned(), show_certs(&root.facts, false)),
    ]);
    let conflict = slot.is_conflict();
    mgmt.decide(&slot, name, reasons, data, shown);
    !conflict
}
