//! `gloo`: the product's management server made its own CA and token at
//! install. relayctl reads mgmt's root, signing and token Secrets as inputs
//! and never writes them; it distributes the root bundle and the token to
//! the workloads (and signs their client certificates with the observed
//! signing CA in `preprovisioned` mode).

use std::collections::BTreeMap;

use super::Trust;
use crate::model::ClientCertMode;
use crate::observed::{ClusterObservation, SecretObject};
use crate::pki::Bundle;
use crate::plan::PlanError;
use crate::plan::PlanInput;
use crate::plan::cluster::ClusterBuilder;
use crate::plan::compare::existing_ca;
use crate::relay::{RelaySecret, key};

pub(super) fn plan(
    input: &PlanInput<'_>,
    obs: &ClusterObservation,
    mgmt: &mut ClusterBuilder<'_>,
) -> Result<Option<Trust>, PlanError> {
    let config = input.config;
    let mut read_input = |secret: RelaySecret, needed: bool| -> Option<&SecretObject> {
        match obs.secrets.get(secret.name()) {
            Some(found) => {
                mgmt.push_noop(
                    found,
                    "read-only input: written by the management server (`gloo` mode)",
                );
                Some(found)
            }
            None if needed => {
                mgmt.push_error(secret.name(), None, vec!["missing: in `gloo` mode the management server creates it at install; install or upgrade the management server first".to_owned()], BTreeMap::new());
                None
            }
            None => None,
        }
    };
    let root = read_input(RelaySecret::Root, true);
    let needs_signer = config.client_certs.mode == ClientCertMode::Preprovisioned;
    let signing = read_input(RelaySecret::Signing, needs_signer);
    let token_secret = if config.identity_token.enabled {
        read_input(RelaySecret::Token, true)
    } else {
        None
    };
    let Some(bundle) = root
        .and_then(|r| r.get(key::CA_CRT))
        .and_then(|v| Bundle::read(v.expose()).ok())
    else {
        if root.is_some() {
            mgmt.push_error(
                RelaySecret::Root.name(),
                root.map(|r| r.version.clone()),
                vec![format!("`{}` is missing or unreadable", key::CA_CRT)],
                BTreeMap::new(),
            );
        }
        return Ok(None);
    };
    let signer = match signing {
        Some(s) => match existing_ca(s, key::TLS_CRT) {
            Ok(issuer) => Some(issuer),
            Err(why) if needs_signer => {
                mgmt.push_error(
                    RelaySecret::Signing.name(),
                    Some(s.version.clone()),
                    vec![why],
                    BTreeMap::new(),
                );
                return Ok(None);
            }
            Err(_) => None,
        },
        None => None,
    };
    let token = match token_secret.map(|s| s.get(key::TOKEN)) {
        Some(Some(token)) if !token.is_empty() => Some(token.clone()),
        Some(_) => {
            mgmt.push_error(
                RelaySecret::Token.name(),
                token_secret.map(|s| s.version.clone()),
                vec![format!("has no `{}` data key", key::TOKEN)],
                BTreeMap::new(),
            );
            return Ok(None);
        }
        None => None,
    };
    Ok(Some(Trust {
        bundle_facts: bundle.facts(),
        bundle: bundle.pem().to_vec(),
        new_root: false,
        chain_tail: signer
            .as_ref()
            .map(|s| s.cert_pem().as_bytes().to_vec())
            .unwrap_or_default(),
        signer,
        token,
        rotation: None,
    }))
}
