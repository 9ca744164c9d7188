//! The handshake matrix of a CA rotation.
//!
//! While a rotation is under way the server and the agents may each hold
//! the old or the new side: a server certificate from the old or the new
//! intermediate (a rollback brings the old one back), and client
//! certificates from either (waves move them one cluster at a time, and an
//! agent that has not bootstrapped again still holds the old one). Until
//! the old root leaves the bundles — the last phase, the only one that
//! cannot be rolled back — every one of the four pairs must complete an mTLS
//! handshake with the bundles the clusters hold: the server verifying the
//! client with mgmt's `relay-server-tls-secret` `ca.crt`, the agent
//! verifying the server with its own cluster's `relay-root-tls-secret`.
//!
//! The certificates of the matrix are probes: issued in memory, for an
//! hour, from the signers in the rotation record (the old intermediate, and
//! the new one or, before it exists, the new root), carrying the chain the
//! real ones carry (the cross-signed twin included). They are never written
//! and are dropped with the report. Clusters holding the same bundle share
//! one run of the matrix. In `external` mode relayctl holds no key and
//! there is no matrix.

use std::cell::RefCell;
use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::CheckId;
use super::lines::Lines;
use crate::error::error_chain;
use crate::model::{ClusterName, Duration, KeyAlgorithm, TrustConfig};
use crate::observed::ClusterObservation;
use crate::pki::{self, Issuer, KeySource, PrivateKey};
use crate::plan::rotation::{Kind, Phase, Record};
use crate::relay::{RelaySecret, key};

/// How long a probe certificate is valid.
const PROBE_VALIDITY: Duration = Duration::from_secs(3600);

/// One side's probe certificates: a server and a client chain with keys.
struct Probe {
    server: (Vec<u8>, PrivateKey),
    client: (Vec<u8>, PrivateKey),
}

/// The matrix of the rotation under way.
pub(super) struct Matrix {
    rotation: String,
    phase: Phase,
    step: usize,
    steps: usize,
    /// `[old, new]`: the probes, or why there are none.
    sides: [Result<Probe, String>; 2],
    /// The verdicts by the digest of a cluster's root bundle.
    seen: RefCell<BTreeMap<[u8; 32], Verdicts>>,
}

/// `[server][client]`, old = 0, new = 1: `None` when not tried.
type Verdicts = [[Option<Result<(), String>>; 2]; 2];

const SIDE: [&str; 2] = ["old", "new"];

/// The matrix of the rotation recorded on mgmt, if one is under way.
pub(super) fn prepare(
    config: &TrustConfig,
    mgmt: Option<&Result<ClusterObservation, String>>,
    keys: &dyn KeySource,
    now: OffsetDateTime,
) -> Option<Matrix> {
    // `external`: relayctl holds no key to make probes with; the
    // `mtls-handshake` line checks the certificates the clusters hold.
    if config.ca.mode == crate::model::CaMode::External {
        return None;
    }
    let Some(Ok(obs)) = mgmt else { return None };
    let record = Record::read(obs, config.instance.as_str()).ok()?;
    let rotation = record.state.rotation.as_ref()?;
    let (step, steps) = rotation.step();
    let material = &record.material;
    // The old side: the intermediate being replaced, or what signs today.
    let old = material
        .old_signer
        .clone()
        .ok_or_else(|| "the record holds no old intermediate".to_owned())
        .or_else(|missing| signing_secret(obs).ok_or(missing));
    // The new side: the new intermediate, or before it exists the new root.
    let new = match (&material.new_signer, &material.new_root, &material.new_root_key) {
        (Some(signer), _, _) => Ok(signer.clone()),
        (None, Some(root), Some(private)) => {
            Issuer::new(root, private.clone()).map_err(|e| error_chain(&e))
        }
        _ => Err(match rotation.kind {
            Kind::Root => "relayctl holds no key of the new root: the new intermediate is made when switch-signer begins".to_owned(),
            Kind::Intermediate => "the record holds no new intermediate".to_owned(),
        }),
    };
    let cross = material.cross.clone().unwrap_or_default();
    let probe = |issuer: Result<Issuer, String>, tail: &[u8]| {
        issuer.and_then(|issuer| probe(config, &issuer, tail, keys, now))
    };
    Some(Matrix {
        rotation: rotation.id.clone(),
        phase: rotation.phase,
        step,
        steps,
        sides: [probe(old, &[]), probe(new, &cross)],
        seen: RefCell::new(BTreeMap::new()),
    })
}

/// The signing Secret's intermediate with its key.
fn signing_secret(obs: &ClusterObservation) -> Option<Issuer> {
    let secret = obs.secrets.get(RelaySecret::Signing.name())?;
    let chain = secret.get(key::TLS_CRT)?;
    let first = pki::inspect::certificate_ders(chain.expose())
        .ok()?
        .into_iter()
        .next()?;
    let private = PrivateKey::from_pem(secret.get(key::TLS_KEY)?).ok()?;
    Issuer::new(pki::inspect::certificate_pem(&first).as_bytes(), private).ok()
}

/// A server and a client certificate from `issuer`, each followed by the
/// issuer and `tail` (the cross-signed twin of a new intermediate).
fn probe(
    config: &TrustConfig,
    issuer: &Issuer,
    tail: &[u8],
    keys: &dyn KeySource,
    now: OffsetDateTime,
) -> Result<Probe, String> {
    let chain = |leaf: &str| {
        let mut pem = leaf.as_bytes().to_vec();
        if issuer.facts().subject != issuer.facts().issuer {
            pem.extend_from_slice(issuer.cert_pem().as_bytes());
            pem.extend_from_slice(tail);
        }
        pem
    };
    let server = pki::issue_server(
        &pki::ServerRequest {
            authority: config.server.authority.clone(),
            dns_names: Vec::new(),
            validity: PROBE_VALIDITY,
            key: KeyAlgorithm::EcdsaP256,
        },
        issuer,
        keys,
        now,
    )
    .map_err(|e| error_chain(&e))?;
    let name = ClusterName::parse("relayctl-probe").map_err(|e| e.to_string())?;
    let client = pki::issue_client(
        &pki::ClientRequest {
            cluster_name: name,
            validity: PROBE_VALIDITY,
            key: KeyAlgorithm::EcdsaP256,
        },
        issuer,
        keys,
        now,
    )
    .map_err(|e| error_chain(&e))?;
    Ok(Probe {
        server: (chain(&server.cert_pem), server.key),
        client: (chain(&client.cert_pem), client.key),
    })
}

impl Matrix {
    /// The `rotation-handshakes` line of a workload whose root bundle is
    /// `cluster_roots`, against the server's `server_roots`.
    pub(super) fn line(
        &self,
        authority: &str,
        server_roots: &[u8],
        cluster_roots: &[u8],
        now: OffsetDateTime,
        lines: &mut Lines,
    ) {
        let digest: [u8; 32] = Sha256::new()
            .chain_update(server_roots)
            .chain_update([0])
            .chain_update(cluster_roots)
            .finalize()
            .into();
        let verdicts = self
            .seen
            .borrow_mut()
            .entry(digest)
            .or_insert_with(|| self.run(authority, server_roots, cluster_roots, now))
            .clone();
        let mut failed = Vec::new();
        let mut untried = Vec::new();
        let mut passed = 0;
        for (s, row) in verdicts.iter().enumerate() {
            for (c, verdict) in row.iter().enumerate() {
                let pair = format!("{} server × {} client", SIDE[s], SIDE[c]);
                match verdict {
                    Some(Ok(())) => passed += 1,
                    Some(Err(why)) => failed.push(format!("{pair}: {why}")),
                    None => untried.push(pair),
                }
            }
        }
        let phase = format!(
            "phase {} of {} ({}) of rotation `{}`",
            self.step,
            self.steps,
            self.phase.as_str(),
            self.rotation
        );
        if !failed.is_empty() {
            lines.fail(
                CheckId::RotationHandshakes,
                format!(
                    "{phase} needs all 4 handshakes of old/new server × old/new client to pass with this cluster's bundles; {} failed: {}",
                    failed.len(),
                    failed.join("; ")
                ),
                "a bundle is missing a root: `relayctl plan` shows the write that completes the phase, or `relayctl apply --rollback` steps back",
            );
        } else if !untried.is_empty() {
            let why = self
                .sides
                .iter()
                .filter_map(|s| s.as_ref().err())
                .cloned()
                .collect::<Vec<_>>()
                .join("; ");
            lines.warn(
                CheckId::RotationHandshakes,
                format!(
                    "{phase}: {passed} of 4 handshakes pass; not tried: {} ({why})",
                    untried.join(", ")
                ),
                "run `relayctl check` again after the next phase begins",
            );
        } else {
            lines.ok(
                CheckId::RotationHandshakes,
                format!(
                    "{phase}: all 4 handshakes of old/new server × old/new client pass, as every phase before drop-old requires"
                ),
            );
        }
    }

    fn run(
        &self,
        authority: &str,
        server_roots: &[u8],
        cluster_roots: &[u8],
        now: OffsetDateTime,
    ) -> Verdicts {
        let mut out: Verdicts = Default::default();
        for (s, server) in self.sides.iter().enumerate() {
            for (c, client) in self.sides.iter().enumerate() {
                let (Ok(server), Ok(client)) = (server, client) else {
                    continue;
                };
                out[s][c] = Some(
                    pki::mtls_handshake(
                        &pki::Endpoint {
                            chain_pem: &server.server.0,
                            key: &server.server.1,
                            roots_pem: server_roots,
                        },
                        &pki::Endpoint {
                            chain_pem: &client.client.0,
                            key: &client.client.1,
                            roots_pem: cluster_roots,
                        },
                        authority,
                        now,
                    )
                    .map(|_| ())
                    .map_err(|e| error_chain(&e)),
                );
            }
        }
        out
    }
}
