//! The rotation record on mgmt (`relayctl-<instance>-rotation`): the root
//! generation reached, and the rotation under way, with its phase, when each
//! phase began, which clusters were reissued, and the CA material on both
//! sides of it. It is written first among mgmt's writes whenever it changes,
//! so the new root and intermediate exist in the cluster before anything
//! signed by them, and the old ones stay until the last phase: a crash at any
//! point resumes in the same phase with both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::ClusterName;
use crate::observed::{ClusterObservation, Ownership, SecretObject};
use crate::pki::{Issuer, PrivateKey};
use crate::relay::key::rotation as keys;
use crate::relay::rotation_secret;
use crate::secret::SecretBytes;

/// Version of `state.json`.
const STATE_VERSION: u32 = 1;

/// `state.json`: public facts only; the material is in its own keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// The generation of the root in service (`managed`: `spec.ca.rotation.generation`).
    pub root_generation: u32,
    /// The rotation under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    /// The last rotation that ended: finished, or cancelled by a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Ended>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            root_generation: 1,
            rotation: None,
            last: None,
        }
    }
}

/// What a rotation replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The root, hence every bundle: four phases.
    Root,
    /// Only the intermediate, under the same root: two phases.
    Intermediate,
}

/// A phase of a rotation, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Every `ca.crt` holds the old and the new root.
    TrustBoth,
    /// The new intermediate signs; the server certificate is reissued from it.
    SwitchSigner,
    /// Every leaf is reissued from the new intermediate, in waves.
    Reissue,
    /// The old root leaves every bundle (irreversible).
    DropOld,
}

impl Phase {
    /// The phases a rotation of `kind` goes through, in order.
    pub fn of(kind: Kind) -> &'static [Phase] {
        match kind {
            Kind::Root => &[
                Phase::TrustBoth,
                Phase::SwitchSigner,
                Phase::Reissue,
                Phase::DropOld,
            ],
            Kind::Intermediate => &[Phase::SwitchSigner, Phase::Reissue],
        }
    }

    /// `trust-both`, `switch-signer`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::TrustBoth => "trust-both",
            Phase::SwitchSigner => "switch-signer",
            Phase::Reissue => "reissue",
            Phase::DropOld => "drop-old",
        }
    }

    /// What the phase does, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Phase::TrustBoth => "every ca.crt trusts the old and the new root",
            Phase::SwitchSigner => {
                "the new intermediate signs; the server certificate is reissued from it"
            }
            Phase::Reissue => "client certificates are reissued from the new intermediate",
            Phase::DropOld => "the old root leaves every bundle",
        }
    }

    /// What the phase does in `external` mode, where your PKI issues.
    pub fn describe_external(self) -> &'static str {
        match self {
            Phase::TrustBoth => {
                "every ca.crt trusts the old and the new bundle; the server certificate in service stays"
            }
            Phase::SwitchSigner => {
                "the server certificate from `spec.server.cert` is installed; it must chain to the new bundle"
            }
            Phase::Reissue => {
                "waits for every client certificate from your PKI to chain to the new bundle"
            }
            Phase::DropOld => "the old bundle leaves every ca.crt",
        }
    }
}

/// One phase's start (a rollback starts the earlier phase again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// The phase.
    pub phase: Phase,
    /// When its first apply ran.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Entered by a rollback.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
}

/// The rotation under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// `root-2-20261202t0400z`: what and when, unique in the record's life.
    pub id: String,
    /// Root or intermediate.
    pub kind: Kind,
    /// The current phase.
    pub phase: Phase,
    /// Why it started, for people.
    pub trigger: String,
    /// What started it, compared with the config to tell whether the same
    /// cause is still asked for (`generation:2`, `root:<sha256>`, ...).
    pub trigger_key: String,
    /// The generation the new root gets when the rotation ends.
    pub generation: u32,
    /// An automatic root rotation pre-publishes the new root (phase
    /// `trust-both`) long ahead; the signer switches no earlier than this.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub switch_after: Option<OffsetDateTime>,
    /// Phase starts, oldest first.
    pub started: Vec<Started>,
    /// Workload clusters whose client certificate was reissued (or whose
    /// agent was made to bootstrap again), with when.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reissued: BTreeMap<ClusterName, Reissued>,
    /// Held by a rollback: no phase starts until `apply --resume`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// Fingerprints of the material on both sides.
    pub old_root: String,
    /// The new root (the old one again for an intermediate rotation).
    pub new_root: String,
    /// The intermediate being replaced.
    pub old_signer: String,
    /// The intermediate being introduced.
    pub new_signer: String,
    /// Whether the new intermediate is also signed by the old root.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cross_signed: bool,
}

impl Rotation {
    /// When the current phase began.
    pub fn phase_started(&self) -> Option<OffsetDateTime> {
        self.started
            .iter()
            .rev()
            .find(|s| s.phase == self.phase)
            .map(|s| s.at)
    }

    /// The 1-based number of the current phase, and how many there are.
    pub fn step(&self) -> (usize, usize) {
        let phases = Phase::of(self.kind);
        let at = phases.iter().position(|p| *p == self.phase).unwrap_or(0);
        (at + 1, phases.len())
    }

    /// The phase after the current one, if any.
    pub fn next_phase(&self) -> Option<Phase> {
        let phases = Phase::of(self.kind);
        let at = phases.iter().position(|p| *p == self.phase)?;
        phases.get(at + 1).copied()
    }

    /// The phase before the current one, if any.
    pub fn previous_phase(&self) -> Option<Phase> {
        let phases = Phase::of(self.kind);
        let at = phases.iter().position(|p| *p == self.phase)?;
        at.checked_sub(1).map(|i| phases[i])
    }
}

/// One cluster's reissue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reissued {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Token mode: the agent's Secret was deleted so that it bootstraps again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebootstrap: bool,
}

/// A rotation that ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ended {
    /// Its id.
    pub id: String,
    /// Its trigger key: a cancelled rotation does not start again for the
    /// same cause.
    pub trigger_key: String,
    /// Finished (`true`) or cancelled by a rollback of its first phase.
    pub finished: bool,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The CA material a rotation holds: both roots, both intermediates, the
/// bridge. Keys only where relayctl holds them.
#[derive(Clone, Default)]
pub struct Material {
    /// The root being replaced.
    pub old_root: Option<Vec<u8>>,
    /// Its key (managed, or an adopted product CA).
    pub old_root_key: Option<PrivateKey>,
    /// The root being introduced.
    pub new_root: Option<Vec<u8>>,
    /// Its key (managed).
    pub new_root_key: Option<PrivateKey>,
    /// The intermediate being replaced, with its key.
    pub old_signer: Option<Issuer>,
    /// The intermediate being introduced, with its key.
    pub new_signer: Option<Issuer>,
    /// The new intermediate signed by the old root.
    pub cross: Option<Vec<u8>>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("old_root", &self.old_root.is_some())
            .field("old_root_key", &self.old_root_key.is_some())
            .field("new_root", &self.new_root.is_some())
            .field("new_root_key", &self.new_root_key.is_some())
            .field(
                "old_signer",
                &self.old_signer.as_ref().map(|s| s.facts().subject.clone()),
            )
            .field(
                "new_signer",
                &self.new_signer.as_ref().map(|s| s.facts().subject.clone()),
            )
            .field("cross", &self.cross.is_some())
            .finish()
    }
}

/// The record as read from mgmt.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// The state.
    pub state: State,
    /// The material.
    pub material: Material,
    /// The Secret it was read from (`None`: there is none yet).
    pub version: Option<String>,
}

/// Why the record cannot be used: a plan error on mgmt, never ignored (a
/// rotation's keys are in it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Someone else's Secret carries the record's name.
    #[error(
        "`{0}` exists and is not this instance's; relayctl keeps its rotation record there: remove or rename it"
    )]
    NotOurs(String),
    /// `state.json` is missing or not a state of this version.
    #[error(
        "`{name}` has an unreadable `{}`: {why}; restore it from a backup (it holds the rotation's phase and keys)",
        keys::STATE
    )]
    State {
        /// The Secret.
        name: String,
        /// Why.
        why: String,
    },
    /// A certificate or key in it is unreadable.
    #[error(
        "`{name}` has an unreadable `{key}`; restore it from a backup (it holds the rotation's keys)"
    )]
    Material {
        /// The Secret.
        name: String,
        /// The data key.
        key: &'static str,
    },
}

impl Record {
    /// Reads the record of `instance` from an observed mgmt cluster; no
    /// Secret is the default record (generation 1, nothing under way).
    pub fn read(obs: &ClusterObservation, instance: &str) -> Result<Self, RecordError> {
        let name = rotation_secret(instance);
        let Some(secret) = obs.secrets.get(&name) else {
            return Ok(Self::default());
        };
        if secret.ownership(instance) != Ownership::Ours {
            return Err(RecordError::NotOurs(name));
        }
        let state: State = secret
            .get(keys::STATE)
            .ok_or_else(|| "it is missing".to_owned())
            .and_then(|v| serde_json::from_slice(v.expose()).map_err(|e| e.to_string()))
            .and_then(|s: State| {
                if s.version == STATE_VERSION {
                    Ok(s)
                } else {
                    Err(format!(
                        "version {} is not {STATE_VERSION}: written by another relayctl version",
                        s.version
                    ))
                }
            })
            .map_err(|why| RecordError::State {
                name: name.clone(),
                why: crate::text::printable(&why).into_owned(),
            })?;
        let material = read_material(secret, &name)?;
        Ok(Self {
            state,
            material,
            version: Some(secret.version.clone()),
        })
    }

    /// The Secret data of this record.
    pub fn data(&self) -> BTreeMap<String, SecretBytes> {
        let mut data = BTreeMap::new();
        let text = serde_json::to_string_pretty(&self.state).unwrap_or_default();
        data.insert(keys::STATE.to_owned(), SecretBytes::from(text));
        let m = &self.material;
        let mut put = |key: &str, value: Option<SecretBytes>| {
            if let Some(value) = value {
                data.insert(key.to_owned(), value);
            }
        };
        put(keys::OLD_ROOT_CRT, m.old_root.clone().map(SecretBytes::new));
        put(
            keys::OLD_ROOT_KEY,
            m.old_root_key.as_ref().map(|k| k.to_pkcs8_pem().clone()),
        );
        put(keys::NEW_ROOT_CRT, m.new_root.clone().map(SecretBytes::new));
        put(
            keys::NEW_ROOT_KEY,
            m.new_root_key.as_ref().map(|k| k.to_pkcs8_pem().clone()),
        );
        for (crt, key, signer) in [
            (keys::OLD_SIGNING_CRT, keys::OLD_SIGNING_KEY, &m.old_signer),
            (keys::NEW_SIGNING_CRT, keys::NEW_SIGNING_KEY, &m.new_signer),
        ] {
            put(
                crt,
                signer
                    .as_ref()
                    .map(|s| SecretBytes::new(s.cert_pem().as_bytes().to_vec())),
            );
            put(key, signer.as_ref().map(|s| s.key().to_pkcs8_pem().clone()));
        }
        put(keys::CROSS_CRT, m.cross.clone().map(SecretBytes::new));
        data
    }
}

fn read_material(secret: &SecretObject, name: &str) -> Result<Material, RecordError> {
    let bad = |key: &'static str| RecordError::Material {
        name: name.to_owned(),
        key,
    };
    let cert = |key: &'static str| -> Result<Option<Vec<u8>>, RecordError> {
        secret
            .get(key)
            .map(|v| {
                crate::pki::inspect_bundle(v.expose())
                    .map(|_| v.expose().to_vec())
                    .map_err(|_| bad(key))
            })
            .transpose()
    };
    let private = |key: &'static str| -> Result<Option<PrivateKey>, RecordError> {
        secret
            .get(key)
            .map(|v| PrivateKey::from_pem(v).map_err(|_| bad(key)))
            .transpose()
    };
    let signer = |crt: &'static str, key: &'static str| -> Result<Option<Issuer>, RecordError> {
        match (cert(crt)?, private(key)?) {
            (Some(c), Some(k)) => Issuer::new(&c, k).map(Some).map_err(|_| bad(crt)),
            (None, None) => Ok(None),
            (Some(_), None) => Err(bad(key)),
            (None, Some(_)) => Err(bad(crt)),
        }
    };
    Ok(Material {
        old_root: cert(keys::OLD_ROOT_CRT)?,
        old_root_key: private(keys::OLD_ROOT_KEY)?,
        new_root: cert(keys::NEW_ROOT_CRT)?,
        new_root_key: private(keys::NEW_ROOT_KEY)?,
        old_signer: signer(keys::OLD_SIGNING_CRT, keys::OLD_SIGNING_KEY)?,
        new_signer: signer(keys::NEW_SIGNING_CRT, keys::NEW_SIGNING_KEY)?,
        cross: cert(keys::CROSS_CRT)?,
    })
}
