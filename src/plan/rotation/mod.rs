//! CA rotation: the root, the intermediate, in phases gated on the fleet.
//!
//! A rotation is a small state machine kept in the rotation record on mgmt
//! ([`record`]). Each plan is made for one [`Stage`]: steady (no rotation), or
//! a phase of a rotation. When the plan for the current phase writes nothing
//! anywhere, every cluster was observed without errors, the soak time has
//! passed and the phase's own condition holds (its [`Gate`]), the planner
//! moves to the next phase and plans again: one phase per apply, never two,
//! and never past a cluster that has not caught up.
//!
//! Root rotation (`managed`, `custom`, and a product CA adopted into
//! `custom`): trust-both → switch-signer → reissue → drop-old. Intermediate
//! rotation (same root): switch-signer → reissue. What starts one:
//! - `managed`: `spec.ca.rotation.generation` raised above the record's, or
//!   the root nearing its end (a new root is published into every bundle at
//!   1.5 × `renewBefore` before the end, and signs from `renewBefore`);
//!   an intermediate relayctl derived reaching its `renewBefore`, or whose
//!   settings no longer match the config;
//! - `custom`: the configured root (or provided intermediate) differing from
//!   the one the clusters hold.

pub mod record;

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

pub use self::record::{Kind, Phase, Record, RecordError, Rotation, State};
use super::PlanInput;
use super::model::{Action, Blocker, CaDrift, Gate, Plan, RotationStatus};
use crate::model::{CaMode, ClientCertMode, ClusterName, Duration};
use crate::observed::{ClusterObservation, SecretObject};
use crate::pki::{self, CaRequest, CertFacts, Issuer, PrivateKey};
use crate::relay::{RelaySecret, key, rotation_secret};

/// The clock to the second: times in the record and in messages.
fn now(input: &PlanInput<'_>) -> OffsetDateTime {
    input.now.replace_nanosecond(0).unwrap_or(input.now)
}

/// Most blocking clusters a gate names.
pub const MAX_BLOCKERS: usize = 20;

/// What the user asks of a rotation on this run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RotationRequest {
    /// Go on: start, complete or advance phases as the gates allow.
    #[default]
    Proceed,
    /// Step back one phase (`apply --rollback`), and hold there.
    Rollback,
    /// Lift the hold of a rollback, or start a cancelled rotation again.
    Resume,
    /// A shard other than 0: follow the rotation shard 0 records — start
    /// none, and reissue only the clusters its waves name (shard 0, which
    /// reads every cluster while a rotation is under way, chooses them).
    Follow,
}

/// The lifecycle stage this plan is made for.
#[derive(Debug, Clone)]
pub(super) struct Stage {
    /// The record as read from mgmt.
    pub(super) observed: Record,
    /// The record as it stands after this apply.
    pub(super) record: Record,
    /// Why the record is written (empty: it is not).
    pub(super) record_reasons: Vec<String>,
    /// Workload clusters whose leaves are reissued from the new intermediate
    /// in this apply.
    pub(super) wave: BTreeSet<ClusterName>,
    /// This run entered the phase (started, advanced or rolled back): it
    /// does not advance again.
    pub(super) entered: bool,
    /// The rotation that ends with this apply (its last phase).
    pub(super) ended: Option<Rotation>,
}

impl Stage {
    /// The rotation under way in this stage.
    pub(super) fn rotation(&self) -> Option<&Rotation> {
        self.record.state.rotation.as_ref()
    }

    fn steady(observed: Record) -> Self {
        Self {
            record: observed.clone(),
            observed,
            record_reasons: Vec::new(),
            wave: BTreeSet::new(),
            entered: false,
            ended: None,
        }
    }
}

/// The stage to plan first, and the CA drift to report: from the record,
/// the config, the user's request and what mgmt holds. `Err`: the record or
/// the request cannot be used (an error on mgmt; nothing is written).
pub(super) fn stage(
    input: &PlanInput<'_>,
    request: RotationRequest,
) -> Result<(Stage, Vec<CaDrift>), String> {
    let Some(Ok(obs)) = input.observed.clusters.get(&input.config.management.name) else {
        return Ok((Stage::steady(Record::default()), Vec::new()));
    };
    let observed = Record::read(obs, input.config.instance.as_str()).map_err(|e| e.to_string())?;
    let held = Held::read(input, obs);
    let mut drift = drift(input, &held, &observed);
    let mut stage = Stage::steady(observed.clone());
    match observed.state.rotation.clone() {
        Some(rotation) if reverted(input, &rotation) => {
            cancel(
                input,
                &mut stage,
                &rotation,
                "because the config names the old root again",
                false,
            );
        }
        Some(rotation) => {
            check_config(input, &rotation, &held)?;
            match request {
                RotationRequest::Rollback => rollback(input, &mut stage, rotation)?,
                RotationRequest::Resume if rotation.held => {
                    let mut rotation = rotation;
                    rotation.held = false;
                    stage.record_reasons.push(format!(
                        "rotation `{}`: resumed after a rollback",
                        rotation.id
                    ));
                    stage.record.state.rotation = Some(rotation);
                }
                _ => {}
            }
            if let Some(rotation) = stage.record.state.rotation.clone()
                && rotation.phase == Phase::Reissue
                && !rotation.held
            {
                if request == RotationRequest::Follow {
                    follow_wave(input, &mut stage, &rotation);
                } else {
                    choose_wave(input, &mut stage, &rotation);
                }
            }
        }
        None => {
            if request == RotationRequest::Rollback {
                return Err(match &observed.state.last {
                    Some(last) if last.finished => format!(
                        "no rotation is under way to roll back: `{}` finished at {}, and dropping the old root cannot be undone",
                        last.id,
                        pki::inspect::rfc3339(last.at)
                    ),
                    _ => "no rotation is under way to roll back".to_owned(),
                });
            }
            if let Some(start) = trigger(input, &held, &observed.state)
                .filter(|_| request != RotationRequest::Follow)
            {
                let cancelled = observed
                    .state
                    .last
                    .as_ref()
                    .is_some_and(|l| !l.finished && l.trigger_key == start.trigger_key);
                if cancelled && request != RotationRequest::Resume {
                    drift.push(CaDrift {
                        ca: kind_word(start.kind).to_owned(),
                        field: "rotation".to_owned(),
                        observed: "cancelled by a rollback".to_owned(),
                        configured: start.trigger.clone(),
                        action: "none until `relayctl apply --resume` starts it again".to_owned(),
                    });
                } else {
                    begin(input, &held, &mut stage, start).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    Ok((stage, drift))
}

/// What mgmt holds of the CA today, read once.
struct Held {
    /// The root Secret's first certificate with its key (`managed`, or a
    /// product CA adopted with its key).
    root: Option<Issuer>,
    /// The root Secret's `ca.crt`, all of it.
    root_bundle: Vec<CertFacts>,
    /// Its first certificate, PEM.
    root_pem: Option<Vec<u8>>,
    /// The signing Secret's intermediate with its key.
    signer: Option<Issuer>,
    /// The server Secret's `ca.crt` (`external`: the bundle in service).
    server_bundle: Option<Vec<u8>>,
}

impl Held {
    fn read(input: &PlanInput<'_>, obs: &ClusterObservation) -> Self {
        let root_secret = obs.secrets.get(RelaySecret::Root.name());
        let root_ca = root_secret.and_then(|s| s.get(key::CA_CRT));
        let root_bundle = root_ca
            .and_then(|v| pki::inspect_bundle(v.expose()).ok())
            .unwrap_or_default();
        let root_pem = root_ca
            .and_then(|v| pki::inspect::certificate_ders(v.expose()).ok())
            .and_then(|d| d.into_iter().next())
            .map(|der| pki::inspect::certificate_pem(&der).into_bytes());
        let root = root_secret.and_then(|s| super::compare::existing_ca(s, key::CA_CRT).ok());
        let signer = obs
            .secrets
            .get(RelaySecret::Signing.name())
            .and_then(|s| super::compare::existing_ca(s, key::TLS_CRT).ok());
        let _ = input;
        let server_bundle = obs
            .secrets
            .get(RelaySecret::Server.name())
            .and_then(|s| s.get(key::CA_CRT))
            .map(|v| v.expose().to_vec());
        Self {
            root,
            root_bundle,
            root_pem,
            signer,
            server_bundle,
        }
    }

    fn root_facts(&self) -> Option<&CertFacts> {
        self.root_bundle.first()
    }
}

/// What would start a rotation.
struct Start {
    kind: Kind,
    trigger: String,
    trigger_key: String,
    generation: u32,
    switch_after: Option<OffsetDateTime>,
}

fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Root => "root",
        Kind::Intermediate => "intermediate",
    }
}

/// Whether the intermediate is one relayctl derives (and so rotates).
fn derives_intermediate(input: &PlanInput<'_>) -> bool {
    input.material.intermediate.is_none()
        && match input.config.ca.mode {
            CaMode::Managed => true,
            CaMode::Custom => input.material.root_key.is_some(),
            CaMode::Gloo | CaMode::External => false,
        }
}

/// The rotation the config and the clock ask for, if any.
fn trigger(input: &PlanInput<'_>, held: &Held, state: &State) -> Option<Start> {
    let config = input.config;
    let now = input.now;
    if config.ca.mode == CaMode::External {
        return external_trigger(input, held, state);
    }
    // Nothing to rotate from: the first apply issues what is missing.
    let root = held.root_facts()?;
    let signer = held.signer.as_ref()?;
    // A signer that does not chain to the root is repaired by the steady
    // plan (a new intermediate), not rotated from.
    let signer_der = pki::inspect::certificate_ders(signer.cert_pem().as_bytes()).ok()?;
    let root_der = pki::inspect::certificate_ders(held.root_pem.as_deref()?).ok()?;
    if !pki::issued_by(signer_der.first()?, &[root_der.first()?.as_slice()]) {
        return None;
    }
    if root.not_after <= now {
        // Nothing can still chain to an expired root: it is replaced at once.
        return None;
    }
    match config.ca.mode {
        CaMode::Managed => {
            let generation = config.ca.rotation.generation;
            if generation > state.root_generation {
                return Some(Start {
                    kind: Kind::Root,
                    trigger: format!(
                        "`spec.ca.rotation.generation` raised from {} to {generation}",
                        state.root_generation
                    ),
                    trigger_key: format!("generation:{generation}"),
                    generation,
                    switch_after: None,
                });
            }
            let renew = config.ca.root.renew_before.to_time();
            let publish = root.not_after - renew - renew / 2;
            if now >= publish {
                return Some(Start {
                    kind: Kind::Root,
                    trigger: format!(
                        "the root expires at {}: its successor is trusted from now and signs from {}",
                        pki::inspect::rfc3339(root.not_after),
                        pki::inspect::rfc3339(root.not_after - renew)
                    ),
                    trigger_key: format!("expiry:{}", root.sha256_fingerprint),
                    generation: state.root_generation + 1,
                    switch_after: Some(root.not_after - renew),
                });
            }
        }
        CaMode::Custom => {
            let configured = input.material.root.as_ref()?;
            let wanted = configured.facts().into_iter().next()?;
            if wanted.sha256_fingerprint != root.sha256_fingerprint {
                return Some(Start {
                    kind: Kind::Root,
                    trigger: format!(
                        "the configured root `{}` (sha256 {}) replaces `{}` (sha256 {})",
                        crate::text::printable(&wanted.subject),
                        pki::short_fingerprint(&wanted.sha256_fingerprint),
                        crate::text::printable(&root.subject),
                        pki::short_fingerprint(&root.sha256_fingerprint)
                    ),
                    trigger_key: format!("root:{}", wanted.sha256_fingerprint),
                    generation: state.root_generation + 1,
                    switch_after: None,
                });
            }
            if let Some(provided) = &input.material.intermediate
                && provided.facts().sha256_fingerprint != signer.facts().sha256_fingerprint
            {
                return Some(Start {
                    kind: Kind::Intermediate,
                    trigger: format!(
                        "the configured intermediate (sha256 {}) replaces the one in service (sha256 {})",
                        pki::short_fingerprint(&provided.facts().sha256_fingerprint),
                        pki::short_fingerprint(&signer.facts().sha256_fingerprint)
                    ),
                    trigger_key: format!("intermediate:{}", provided.facts().sha256_fingerprint),
                    generation: state.root_generation,
                    switch_after: None,
                });
            }
        }
        CaMode::Gloo | CaMode::External => return None,
    }
    if derives_intermediate(input) {
        let facts = signer.facts();
        let due = facts.not_after - config.ca.intermediate.renew_before.to_time();
        let settings = intermediate_drift(input, facts);
        let why = if now >= due {
            Some(format!(
                "the intermediate expires at {}, within `renewBefore` {}",
                pki::inspect::rfc3339(facts.not_after),
                config.ca.intermediate.renew_before
            ))
        } else {
            settings.first().map(|d| {
                format!(
                    "the intermediate's {} is {}, the config says {}",
                    d.field, d.observed, d.configured
                )
            })
        };
        if let Some(why) = why {
            return Some(Start {
                kind: Kind::Intermediate,
                trigger: why,
                trigger_key: format!("intermediate:{}", facts.sha256_fingerprint),
                generation: state.root_generation,
                switch_after: None,
            });
        }
    }
    None
}

/// A certificate's lifetime as relayctl would have issued it: notAfter −
/// notBefore, less the clock-skew backdating.
fn lifetime(facts: &CertFacts) -> time::Duration {
    facts.not_after - facts.not_before - pki::issue::CLOCK_SKEW_BACKDATE
}

/// Whether a lifetime matches the configured validity (within an hour:
/// clamped or hand-made certificates differ by more).
fn same_validity(facts: &CertFacts, validity: Duration) -> bool {
    (lifetime(facts) - validity.to_time()).abs() <= time::Duration::hours(1)
}

fn common_name(facts: &CertFacts) -> String {
    facts.common_name.clone().unwrap_or_default()
}

/// Where a CA certificate differs from what the config asks of it.
fn settings_drift(
    ca: &str,
    facts: &CertFacts,
    config: &crate::model::CaCertConfig,
    validity_checked: bool,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let field = |name: &str| format!("spec.ca.{ca}.{name}");
    if facts.key_algorithm != config.key.as_str() {
        out.push((
            field("key"),
            facts.key_algorithm.clone(),
            config.key.as_str().to_owned(),
        ));
    }
    if common_name(facts) != config.common_name {
        out.push((
            field("commonName"),
            format!("`{}`", crate::text::printable(&common_name(facts))),
            format!("`{}`", config.common_name),
        ));
    }
    if validity_checked && !same_validity(facts, config.validity) {
        let hours = lifetime(facts).whole_hours().max(0);
        out.push((
            field("validity"),
            Duration::from_hours(u64::try_from(hours).unwrap_or(0)).to_string(),
            config.validity.to_string(),
        ));
    }
    out
}

fn intermediate_drift(input: &PlanInput<'_>, facts: &CertFacts) -> Vec<CaDrift> {
    // A rotated intermediate may be clamped to its root's end: its validity
    // is then shorter than asked, which is not drift.
    settings_drift("intermediate", facts, &input.config.ca.intermediate, false)
        .into_iter()
        .map(|(field, observed, configured)| CaDrift {
            ca: "intermediate".to_owned(),
            field,
            observed,
            configured,
            action: "an intermediate rotation (2 phases) issues one with these settings".to_owned(),
        })
        .collect()
}

/// Everything the clusters hold of the CA that the config says otherwise.
fn drift(input: &PlanInput<'_>, held: &Held, record: &Record) -> Vec<CaDrift> {
    let config = input.config;
    let mut out = Vec::new();
    let Some(root) = held.root_facts() else {
        return external_drift(input, record);
    };
    let rotating = record.state.rotation.as_ref();
    match config.ca.mode {
        CaMode::Managed => {
            let next = config
                .ca
                .rotation
                .generation
                .max(record.state.root_generation + 1);
            let action = match rotating {
                Some(r) if r.kind == Kind::Root => format!(
                    "none now: the rotation under way (`{}`) already introduces a new root",
                    r.id
                ),
                _ if config.ca.rotation.generation > record.state.root_generation => {
                    "the rotation this plan starts issues a root with these settings".to_owned()
                }
                _ => format!(
                    "none on its own (a root rotation touches every cluster): set `spec.ca.rotation.generation: {next}` to rotate to a root with these settings"
                ),
            };
            for (field, observed, configured) in settings_drift("root", root, &config.ca.root, true)
            {
                out.push(CaDrift {
                    ca: "root".to_owned(),
                    field,
                    observed,
                    configured,
                    action: action.clone(),
                });
            }
            if config.ca.rotation.generation < record.state.root_generation {
                out.push(CaDrift {
                    ca: "root".to_owned(),
                    field: "spec.ca.rotation.generation".to_owned(),
                    observed: record.state.root_generation.to_string(),
                    configured: config.ca.rotation.generation.to_string(),
                    action: format!(
                        "none: a generation never goes back; set it to {} or more",
                        record.state.root_generation
                    ),
                });
            }
        }
        CaMode::Custom => {
            if let Some(wanted) = input
                .material
                .root
                .as_ref()
                .and_then(|b| b.facts().into_iter().next())
                && wanted.sha256_fingerprint != root.sha256_fingerprint
                && rotating.is_none_or(|r| r.new_root != wanted.sha256_fingerprint)
            {
                out.push(CaDrift {
                    ca: "root".to_owned(),
                    field: "spec.ca.root.cert".to_owned(),
                    observed: describe(root),
                    configured: describe(&wanted),
                    action: if root.not_after <= input.now {
                        "the clusters' root has expired: it is replaced at once".to_owned()
                    } else {
                        "a root rotation (4 phases, one per apply) moves every cluster to it"
                            .to_owned()
                    },
                });
            }
        }
        CaMode::Gloo | CaMode::External => {}
    }
    if rotating.is_none()
        && derives_intermediate(input)
        && let Some(signer) = &held.signer
    {
        out.extend(intermediate_drift(input, signer.facts()));
    }
    out
}

/// `external`: the bundle the workloads hold against the configured one.
fn external_drift(input: &PlanInput<'_>, record: &Record) -> Vec<CaDrift> {
    if input.config.ca.mode != CaMode::External {
        return Vec::new();
    }
    let Some(configured) = &input.material.root else {
        return Vec::new();
    };
    let wanted = configured.fingerprints();
    let mut differing = Vec::new();
    let mut differing_bundle: Option<pki::Bundle> = None;
    let mut observed_text = None;
    for workload in &input.config.workloads {
        let Some(Ok(obs)) = input.observed.clusters.get(&workload.cluster.name) else {
            continue;
        };
        let Some(bundle) = obs
            .secrets
            .get(RelaySecret::Root.name())
            .and_then(|s| s.get(key::CA_CRT))
            .and_then(|v| pki::Bundle::read(v.expose()).ok())
        else {
            continue;
        };
        if bundle.fingerprints() != wanted {
            observed_text.get_or_insert_with(|| bundle.describe());
            if differing_bundle.is_none() {
                differing_bundle = Some(bundle.clone());
            }
            differing.push(workload.cluster.name.to_string());
        }
    }
    let Some(observed) = observed_text else {
        return Vec::new();
    };
    vec![CaDrift {
        ca: "root".to_owned(),
        field: "spec.ca.root.cert".to_owned(),
        observed: format!("{observed} on {}", counted(&differing)),
        configured: configured.describe(),
        action: match &record.state.rotation {
            Some(r) => format!(
                "none now: the rotation under way (`{}`) moves every bundle to it",
                r.id
            ),
            None if bundle_drops_roots(configured, &differing_bundle) => {
                "a root rotation (4 phases) moves every bundle to it: both bundles first, then your PKI's new server and client certificates, then the configured bundle alone".to_owned()
            }
            None => "every bundle is rewritten to the configured one (it only adds roots)".to_owned(),
        },
    }]
}

/// Whether `configured` lacks a root of `observed`.
fn bundle_drops_roots(configured: &pki::Bundle, observed: &Option<pki::Bundle>) -> bool {
    let wanted = configured.fingerprints();
    observed
        .as_ref()
        .is_some_and(|b| b.fingerprints().iter().any(|f| !wanted.contains(*f)))
}

fn counted(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    if names.len() > shown.len() {
        format!(
            "{} and {} more",
            shown.join(", "),
            names.len() - shown.len()
        )
    } else {
        shown.join(", ")
    }
}

fn describe(facts: &CertFacts) -> String {
    format!(
        "`{}` (sha256 {}, {}, until {})",
        crate::text::printable(&facts.subject),
        pki::short_fingerprint(&facts.sha256_fingerprint),
        facts.key_algorithm,
        pki::inspect::rfc3339(facts.not_after)
    )
}

/// The config must not change the destination of a rotation under way.
fn check_config(input: &PlanInput<'_>, rotation: &Rotation, held: &Held) -> Result<(), String> {
    let _ = held;
    if !matches!(input.config.ca.mode, CaMode::Custom | CaMode::External)
        || rotation.kind != Kind::Root
    {
        return Ok(());
    }
    let Some(wanted) = input
        .material
        .root
        .as_ref()
        .and_then(|b| b.facts().into_iter().next())
    else {
        return Ok(());
    };
    if wanted.sha256_fingerprint == rotation.new_root {
        return Ok(());
    }
    Err(format!(
        "the configured root (sha256 {}) is not the one rotation `{}` moves to (sha256 {}): a rotation's destination cannot change on the way; put the root back, or roll the rotation back to its first phase (`relayctl apply --rollback`) and cancel it there",
        pki::short_fingerprint(&wanted.sha256_fingerprint),
        rotation.id,
        pki::short_fingerprint(&rotation.new_root)
    ))
}

/// A short id: kind, generation, start time.
fn rotation_id(kind: Kind, generation: u32, now: OffsetDateTime) -> String {
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]t[hour][minute][second]z"
        ))
        .unwrap_or_default();
    format!("{}-{generation}-{stamp}", kind_word(kind))
}

/// `external`: the configured root bundle drops a root the clusters trust
/// (the server's `ca.crt` says which). A bundle that only adds roots is
/// written at once: trusting more breaks nobody.
fn external_trigger(input: &PlanInput<'_>, held: &Held, state: &State) -> Option<Start> {
    let configured = input.material.root.as_ref()?;
    let observed = pki::Bundle::read(held.server_bundle.as_deref()?).ok()?;
    let wanted = configured.fingerprints();
    let dropped = observed
        .fingerprints()
        .iter()
        .filter(|f| !wanted.contains(*f))
        .count();
    if dropped == 0 {
        return None;
    }
    Some(Start {
        kind: Kind::Root,
        trigger: format!(
            "the configured root bundle {} no longer holds {dropped} of the roots in service ({})",
            configured.describe(),
            observed.describe()
        ),
        trigger_key: format!(
            "external:{}",
            wanted.iter().copied().collect::<Vec<_>>().join(",")
        ),
        generation: state.root_generation + 1,
        switch_after: None,
    })
}

/// Starts a rotation: the record with its first phase and the material on
/// both sides (a new root is generated in `managed` mode).
fn begin(
    input: &PlanInput<'_>,
    held: &Held,
    stage: &mut Stage,
    start: Start,
) -> Result<(), pki::IssueError> {
    let config = input.config;
    if config.ca.mode == CaMode::External {
        begin_external(input, held, stage, start);
        return Ok(());
    }
    let old_signer = held.signer.clone().expect("a trigger needs a signer");
    let old_root_pem = held.root_pem.clone().unwrap_or_default();
    let old_root_fp = held
        .root_facts()
        .map(|f| f.sha256_fingerprint.clone())
        .unwrap_or_default();
    let mut material = record::Material {
        old_root: Some(old_root_pem.clone()),
        old_root_key: held.root.as_ref().map(|r| r.key().clone()),
        old_signer: Some(old_signer.clone()),
        ..record::Material::default()
    };
    let (phase, new_root_fp, new_signer_fp) = match start.kind {
        Kind::Root => {
            let (pem, private) = match config.ca.mode {
                CaMode::Managed => {
                    let issued = pki::issue_root(
                        &super::compare::ca_request(&config.ca.root),
                        input.random.keys,
                        input.now,
                    )?;
                    (issued.cert_pem.into_bytes(), Some(issued.key))
                }
                _ => {
                    let bundle = input.material.root.as_ref().expect("custom trigger");
                    let first = bundle
                        .ders()
                        .first()
                        .map(|d| d.to_vec())
                        .unwrap_or_default();
                    (pki::inspect::certificate_pem(&first).into_bytes(), None)
                }
            };
            let fp = pki::inspect_bundle(&pem)
                .ok()
                .and_then(|f| f.into_iter().next())
                .map(|f| f.sha256_fingerprint)
                .unwrap_or_default();
            material.new_root = Some(pem);
            material.new_root_key = private;
            (Phase::TrustBoth, fp, String::new())
        }
        Kind::Intermediate => {
            let root = root_issuer_for_intermediate(input, held);
            let signer = new_signer(input, root.as_ref(), &old_root_pem, input.now)?;
            let fp = signer.facts().sha256_fingerprint.clone();
            material.new_root = Some(old_root_pem.clone());
            material.new_signer = Some(signer);
            (Phase::SwitchSigner, old_root_fp.clone(), fp)
        }
    };
    let rotation = Rotation {
        id: rotation_id(start.kind, start.generation, now(input)),
        kind: start.kind,
        phase,
        trigger: start.trigger,
        trigger_key: start.trigger_key,
        generation: start.generation,
        switch_after: start.switch_after,
        started: vec![record::Started {
            phase,
            at: now(input),
            rollback: false,
        }],
        reissued: BTreeMap::new(),
        held: false,
        old_root: old_root_fp,
        new_root: new_root_fp,
        old_signer: old_signer.facts().sha256_fingerprint.clone(),
        new_signer: new_signer_fp,
        cross_signed: false,
    };
    stage.record_reasons.push(format!(
        "rotation `{}` starts: {}",
        rotation.id, rotation.trigger
    ));
    stage.record.state.rotation = Some(rotation);
    stage.record.material = material;
    stage.entered = true;
    Ok(())
}

/// Starts an `external` rotation: from the bundle in service to the
/// configured one. relayctl holds no key: the record keeps both bundles,
/// and your PKI reissues the server and client certificates.
fn begin_external(input: &PlanInput<'_>, held: &Held, stage: &mut Stage, start: Start) {
    let old = held.server_bundle.clone().unwrap_or_default();
    let new = input
        .material
        .root
        .as_ref()
        .map(|b| b.pem().to_vec())
        .unwrap_or_default();
    let first = |pem: &[u8]| {
        pki::inspect_bundle(pem)
            .ok()
            .and_then(|f| f.into_iter().next())
            .map(|f| f.sha256_fingerprint)
            .unwrap_or_default()
    };
    let rotation = Rotation {
        id: rotation_id(start.kind, start.generation, now(input)),
        kind: Kind::Root,
        phase: Phase::TrustBoth,
        trigger: start.trigger,
        trigger_key: start.trigger_key,
        generation: start.generation,
        switch_after: None,
        started: vec![record::Started {
            phase: Phase::TrustBoth,
            at: now(input),
            rollback: false,
        }],
        reissued: BTreeMap::new(),
        held: false,
        old_root: first(&old),
        new_root: first(&new),
        old_signer: String::new(),
        new_signer: String::new(),
        cross_signed: false,
    };
    stage.record_reasons.push(format!(
        "rotation `{}` starts: {}",
        rotation.id, rotation.trigger
    ));
    stage.record.state.rotation = Some(rotation);
    stage.record.material = record::Material {
        old_root: Some(old),
        new_root: Some(new),
        ..record::Material::default()
    };
    stage.entered = true;
}

/// The root that signs a new intermediate in an intermediate rotation.
fn root_issuer_for_intermediate(input: &PlanInput<'_>, held: &Held) -> Option<Issuer> {
    match input.config.ca.mode {
        CaMode::Managed => held.root.clone(),
        _ => {
            let private = input.material.root_key.clone()?;
            Issuer::new(held.root_pem.as_deref()?, private).ok()
        }
    }
}

/// A new intermediate: the provided one (`custom`), or one issued under
/// `root` with the configured settings, its validity cut to the root's end
/// (a rotation must not fail because the root has less left than the
/// intermediate would want: the root rotates before then).
fn new_signer(
    input: &PlanInput<'_>,
    root: Option<&Issuer>,
    root_pem: &[u8],
    now: OffsetDateTime,
) -> Result<Issuer, pki::IssueError> {
    if let Some(provided) = &input.material.intermediate {
        let _ = root_pem;
        return Ok(provided.clone());
    }
    let root = root.ok_or_else(|| pki::IssueError::IssuerKeyMismatch {
        subject: "the new root (no key to derive an intermediate from)".to_owned(),
    })?;
    let config = &input.config.ca.intermediate;
    let left = root.facts().not_after - now.replace_nanosecond(0).unwrap_or(now);
    let left = Duration::from_secs(u64::try_from(left.whole_seconds()).unwrap_or(0));
    let issued = pki::issue_intermediate(
        &CaRequest {
            validity: config.validity.min(left),
            ..super::compare::ca_request(config)
        },
        root,
        input.random.keys,
        now,
    )?;
    Issuer::from_issued(&issued)
}

/// Steps the rotation back one phase and holds it there; the first phase
/// of a root rotation is cancelled (`managed`).
fn rollback(input: &PlanInput<'_>, stage: &mut Stage, rotation: Rotation) -> Result<(), String> {
    let Some(previous) = rotation.previous_phase() else {
        if rotation.kind == Kind::Intermediate {
            return Err(format!(
                "rotation `{}` is in its first phase (switch-signer), which cannot be rolled back: the old intermediate is due; let the rotation finish",
                rotation.id
            ));
        }
        if input.config.ca.mode == CaMode::Custom {
            return Err(format!(
                "rotation `{}` is in its first phase (trust-both): to cancel it, put the old root back in `spec.ca.root.cert`; the next apply then removes the new root from every bundle",
                rotation.id
            ));
        }
        cancel(input, stage, &rotation, "by a rollback", true);
        return Ok(());
    };
    let mut rotation = rotation;
    rotation.phase = previous;
    rotation.held = true;
    rotation.started.push(record::Started {
        phase: previous,
        at: now(input),
        rollback: true,
    });
    stage.record_reasons.push(format!(
        "rotation `{}` rolled back to {} and held (`relayctl apply --resume` continues)",
        rotation.id,
        previous.as_str()
    ));
    stage.record.state.rotation = Some(rotation);
    stage.entered = true;
    Ok(())
}

/// Ends `rotation` in its first phase: the new root leaves every bundle and
/// the same cause does not start it again (until `--resume`).
/// A cancel by a config change does not hold the cause back
/// (`hold_cause: false`): asking for it again starts a new rotation.
fn cancel(
    input: &PlanInput<'_>,
    stage: &mut Stage,
    rotation: &Rotation,
    how: &str,
    hold_cause: bool,
) {
    stage.record.state.rotation = None;
    stage.record.state.last = Some(record::Ended {
        id: rotation.id.clone(),
        trigger_key: if hold_cause {
            rotation.trigger_key.clone()
        } else {
            String::new()
        },
        finished: false,
        at: now(input),
    });
    stage.record.material = record::Material::default();
    stage.record_reasons.push(format!(
        "rotation `{}` cancelled {how}: the new root leaves every bundle",
        rotation.id
    ));
    stage.entered = true;
}

/// A custom rotation cancelled by putting the old root back in the config.
pub(super) fn reverted(input: &PlanInput<'_>, rotation: &Rotation) -> bool {
    matches!(input.config.ca.mode, CaMode::Custom | CaMode::External)
        && rotation.kind == Kind::Root
        && rotation.phase == Phase::TrustBoth
        && input
            .material
            .root
            .as_ref()
            .and_then(|b| b.facts().into_iter().next())
            .is_some_and(|f| f.sha256_fingerprint == rotation.old_root)
}

/// What a workload holds that still belongs to the old side of a rotation.
#[derive(Debug, Default)]
pub(super) struct Leftovers {
    /// Clusters whose client certificate is not yet from the new intermediate.
    pub(super) old: Vec<(ClusterName, String)>,
    /// Token mode: clusters whose agent was made to bootstrap again and has
    /// not yet (its client Secret is still missing).
    pub(super) awaiting_agent: Vec<(ClusterName, OffsetDateTime)>,
}

/// The leaf of a `tls.crt`.
fn leaf_of(secret: &SecretObject) -> Option<CertFacts> {
    secret
        .get(key::TLS_CRT)
        .and_then(|v| pki::inspect_bundle(v.expose()).ok())
        .and_then(|c| c.into_iter().next())
}

/// Whether `leaf` was signed by the new intermediate.
fn from_new_signer(leaf: &CertFacts, new_signer: Option<&Issuer>) -> bool {
    new_signer.is_some_and(|s| {
        leaf.authority_key_id.is_some()
            && leaf.authority_key_id == s.facts().subject_key_id
            && leaf.issuer == s.facts().subject
    })
}

pub(super) fn leftovers(input: &PlanInput<'_>, rotation: &Rotation, record: &Record) -> Leftovers {
    let mut out = Leftovers::default();
    let new_signer = record.material.new_signer.as_ref();
    // `external`: your PKI's certificates are new when they chain to the
    // new bundle (there is no intermediate of relayctl's to compare with).
    let new_bundle = (input.config.ca.mode == CaMode::External)
        .then(|| record.material.new_root.clone())
        .flatten();
    for workload in &input.config.workloads {
        let name = &workload.cluster.name;
        let Some(Ok(obs)) = input.observed.clusters.get(name) else {
            continue;
        };
        match obs.secrets.get(RelaySecret::Client.name()) {
            Some(secret) => {
                if let Some(bundle) = &new_bundle {
                    let chain = secret
                        .get(key::TLS_CRT)
                        .map(|v| v.expose())
                        .unwrap_or_default();
                    if pki::verify_chain(chain, bundle, pki::Usage::Client, None, input.now)
                        .is_err()
                    {
                        out.old.push((
                            name.clone(),
                            "the client certificate from your PKI does not chain to the new root bundle: issue it from the new root and point this cluster's `spec.clientCert` at it".to_owned(),
                        ));
                    }
                } else if let Some(leaf) = leaf_of(secret)
                    && !from_new_signer(&leaf, new_signer)
                {
                    let who = match input.config.client_certs.mode {
                        ClientCertMode::Token => "the agent's certificate",
                        ClientCertMode::Preprovisioned => "the client certificate",
                        ClientCertMode::External => "the client certificate from your PKI",
                    };
                    out.old.push((
                        name.clone(),
                        format!(
                            "{who} is from the old intermediate `{}`",
                            crate::text::printable(&leaf.issuer)
                        ),
                    ));
                }
            }
            None => {
                if let Some(done) = rotation.reissued.get(name)
                    && done.rebootstrap
                {
                    out.awaiting_agent.push((name.clone(), done.at));
                }
            }
        }
    }
    out
}

/// A shard other than 0 in the reissue phase: its clusters that shard 0's
/// waves name and that still hold the old side.
fn follow_wave(input: &PlanInput<'_>, stage: &mut Stage, rotation: &Rotation) {
    let left = leftovers(input, rotation, &stage.record);
    stage.wave = left
        .old
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| rotation.reissued.contains_key(name))
        .collect();
}

/// The clusters reissued in this apply: the next wave of leftovers (those
/// of an earlier wave that did not go through included), once the agents
/// of the previous wave came back (token mode).
fn choose_wave(input: &PlanInput<'_>, stage: &mut Stage, rotation: &Rotation) {
    let left = leftovers(input, rotation, &stage.record);
    if !left.awaiting_agent.is_empty() {
        return;
    }
    let total = input.config.workloads.len();
    let size = (total * usize::from(input.config.ca.rotation.wave))
        .div_ceil(100)
        .max(1);
    let token = input.config.client_certs.mode == ClientCertMode::Token;
    if input.config.client_certs.mode == ClientCertMode::External {
        return;
    }
    let wave: BTreeSet<ClusterName> = left.old.iter().take(size).map(|(n, _)| n.clone()).collect();
    if wave.is_empty() {
        return;
    }
    let mut rotation = rotation.clone();
    for name in &wave {
        rotation.reissued.insert(
            name.clone(),
            record::Reissued {
                at: now(input),
                rebootstrap: token,
            },
        );
    }
    stage.record_reasons.push(format!(
        "rotation `{}`: reissue wave of {} cluster{}",
        rotation.id,
        wave.len(),
        if wave.len() == 1 { "" } else { "s" }
    ));
    stage.record.state.rotation = Some(rotation);
    stage.wave = wave;
}

/// relayctl's relay Secrets whose certificate is no longer the one relayctl
/// wrote (its `cert-sha256` annotation): something else changed them, e.g. a
/// management server still generating its own CA. `(cluster, Secret, what)`.
fn tampered(input: &PlanInput<'_>) -> Vec<(ClusterName, String, String)> {
    let instance = input.config.instance.as_str();
    let mut out = Vec::new();
    for (cluster, obs) in &input.observed.clusters {
        let Ok(obs) = obs else { continue };
        for secret in obs.secrets.values() {
            if !matches!(secret.ownership(instance), crate::observed::Ownership::Ours) {
                continue;
            }
            let Some(wrote) = secret
                .annotations
                .get(crate::observed::ANNOTATION_FINGERPRINT)
            else {
                continue;
            };
            let held = secret
                .get(key::TLS_CRT)
                .or_else(|| secret.get(key::CA_CRT))
                .and_then(|pem| pki::inspect_bundle(pem.expose()).ok())
                .and_then(|facts| facts.into_iter().next());
            let what = match held {
                Some(facts) if &facts.sha256_fingerprint == wrote => continue,
                Some(facts) => format!(
                    "its certificate is sha256 {}, relayctl wrote {}",
                    pki::short_fingerprint(&facts.sha256_fingerprint),
                    pki::short_fingerprint(wrote)
                ),
                None => "it no longer holds the certificate relayctl wrote".to_owned(),
            };
            out.push((cluster.clone(), secret.name.clone(), what));
        }
    }
    out
}

/// The gate before the phase after `stage`'s, judged on its plan.
pub(super) fn gate(input: &PlanInput<'_>, stage: &Stage, plan: &Plan) -> Option<Gate> {
    let rotation = stage.rotation()?;
    let next = rotation.next_phase();
    let record_name = rotation_secret(input.config.instance.as_str());
    let mut waiting_for = Vec::new();
    let mut blockers: Vec<Blocker> = Vec::new();
    let mut writing = 0usize;
    for cluster in &plan.clusters {
        if let Some(error) = &cluster.error {
            blockers.push(Blocker {
                cluster: cluster.name.clone(),
                reason: error.clone(),
            });
            continue;
        }
        let problems: Vec<String> = cluster
            .changes
            .iter()
            .filter(|c| matches!(c.action, Action::Conflict | Action::Error))
            .map(|c| format!("{}: {}", c.name, c.reasons.join("; ")))
            .collect();
        if !problems.is_empty() {
            blockers.push(Blocker {
                cluster: cluster.name.clone(),
                reason: problems.join(" | "),
            });
        } else if cluster
            .changes
            .iter()
            .any(|c| c.action.writes() && c.name != record_name)
        {
            writing += 1;
        }
    }
    for (cluster, secret, why) in tampered(input) {
        blockers.push(Blocker {
            cluster: cluster.to_string(),
            reason: format!(
                "{secret} was changed by something other than relayctl during the rotation ({why}); this apply writes it back, and the next phase waits one apply more — if the management server regenerated it, install the product with `disableCaCertGeneration` (and `disableTokenGeneration`) set first"
            ),
        });
    }
    if writing > 0 {
        waiting_for.push(format!(
            "this apply to complete the phase on {writing} cluster{}",
            if writing == 1 { "" } else { "s" }
        ));
    }
    if rotation.held {
        waiting_for.push("`relayctl apply --resume` (held after a rollback)".to_owned());
    }
    if let Some(started) = rotation.phase_started() {
        let until = started + input.config.ca.rotation.soak.to_time();
        if input.now < until {
            waiting_for.push(format!(
                "the soak time: {} since the phase began, until {}",
                input.config.ca.rotation.soak,
                pki::inspect::rfc3339(until)
            ));
        }
    }
    if rotation.phase == Phase::TrustBoth
        && let Some(after) = rotation.switch_after
        && input.now < after
        && !old_signer_due(input, &stage.record)
    {
        waiting_for.push(format!(
            "the switch date {} (the new root is published ahead of time)",
            pki::inspect::rfc3339(after)
        ));
    }
    if input.config.ca.mode == CaMode::External
        && rotation.phase == Phase::SwitchSigner
        && let Some(reason) = external_server_not_new(input, &stage.record)
    {
        blockers.push(Blocker {
            cluster: input.config.management.name.to_string(),
            reason,
        });
    }
    let old_certificates;
    if rotation.phase == Phase::Reissue {
        let left = leftovers(input, rotation, &stage.record);
        old_certificates = left.old.len();
        for (cluster, reason) in &left.old {
            if !stage.wave.contains(cluster) {
                blockers.push(Blocker {
                    cluster: cluster.to_string(),
                    reason: format!("{reason}: reissued in a later wave"),
                });
            }
        }
        for (cluster, at) in &left.awaiting_agent {
            blockers.push(Blocker {
                cluster: cluster.to_string(),
                reason: format!(
                    "the agent was made to bootstrap again at {} and has not: restart the agent in this cluster",
                    pki::inspect::rfc3339(*at)
                ),
            });
        }
        if input.config.client_certs.mode == ClientCertMode::External && !left.old.is_empty() {
            waiting_for.push(if input.config.ca.mode == CaMode::External {
                "your PKI to reissue the client certificates from the new root".to_owned()
            } else {
                "your PKI to reissue the client certificates from the new intermediate".to_owned()
            });
        }
    } else {
        // Before the reissue phase, the leaves still from the old
        // intermediate (and, before the switch, the server's).
        old_certificates = leftovers(input, rotation, &stage.record).old.len()
            + usize::from(rotation.phase == Phase::TrustBoth);
    }
    let blocked_clusters = blockers.len();
    blockers.truncate(MAX_BLOCKERS);
    let next = next.map_or("end", Phase::as_str).to_owned();
    Some(Gate {
        open: waiting_for.is_empty() && blocked_clusters == 0 && !stage.entered,
        next,
        waiting_for,
        blockers,
        blocked_clusters,
        old_certificates,
    })
}

/// `external`, switch-signer: why mgmt's server certificate does not chain
/// to the new bundle yet, if it does not.
fn external_server_not_new(input: &PlanInput<'_>, record: &Record) -> Option<String> {
    let bundle = record.material.new_root.as_deref()?;
    let mgmt = input
        .observed
        .clusters
        .get(&input.config.management.name)?
        .as_ref()
        .ok()?;
    let chain = mgmt
        .secrets
        .get(RelaySecret::Server.name())
        .and_then(|s| s.get(key::TLS_CRT))
        .map(|v| v.expose())
        .unwrap_or_default();
    pki::verify_chain(chain, bundle, pki::Usage::Server, None, input.now)
        .err()
        .map(|why| {
            format!(
                "the server certificate from `spec.server.cert` does not chain to the new root bundle ({why}): have your PKI issue it from the new root"
            )
        })
}

/// Whether the intermediate in service must be replaced now: a root
/// rotation waiting for its switch date does not wait past it.
fn old_signer_due(input: &PlanInput<'_>, record: &Record) -> bool {
    record.material.old_signer.as_ref().is_some_and(|s| {
        input.now >= s.facts().not_after - input.config.ca.intermediate.renew_before.to_time()
    })
}

/// The stage after `stage`, once its gate is open.
pub(super) fn advance(input: &PlanInput<'_>, stage: &Stage) -> Result<Stage, pki::IssueError> {
    let mut next = stage.clone();
    next.record_reasons.clear();
    next.wave.clear();
    next.entered = true;
    let mut rotation = stage.rotation().expect("advance needs a rotation").clone();
    let Some(phase) = rotation.next_phase() else {
        // The last phase held everywhere: the rotation ends.
        return Ok(end(input, next, rotation));
    };
    if phase == Phase::SwitchSigner
        && next.record.material.new_signer.is_none()
        && input.config.ca.mode != CaMode::External
    {
        let material = &next.record.material;
        let root = match (&material.new_root, &material.new_root_key) {
            (Some(pem), Some(private)) => Some(Issuer::new(pem, private.clone())?),
            (Some(pem), None) => input
                .material
                .root_key
                .clone()
                .map(|k| Issuer::new(pem, k))
                .transpose()?,
            _ => None,
        };
        let root_pem = material.new_root.clone().unwrap_or_default();
        let signer = new_signer(input, root.as_ref(), &root_pem, input.now)?;
        if let (Some(old_pem), Some(old_key)) = (&material.old_root, &material.old_root_key) {
            let old_root = Issuer::new(old_pem, old_key.clone())?;
            let cross = pki::issue_cross(&signer, &old_root, input.random.keys, input.now)?;
            next.record.material.cross = Some(cross.into_bytes());
            rotation.cross_signed = true;
        }
        rotation.new_signer = signer.facts().sha256_fingerprint.clone();
        next.record.material.new_signer = Some(signer);
    }
    if phase == Phase::DropOld {
        return Ok(end(input, next, rotation));
    }
    rotation.phase = phase;
    rotation.started.push(record::Started {
        phase,
        at: now(input),
        rollback: false,
    });
    next.record_reasons.push(format!(
        "rotation `{}`: phase {} begins",
        rotation.id,
        phase.as_str()
    ));
    next.record.state.rotation = Some(rotation.clone());
    if phase == Phase::Reissue {
        choose_wave(input, &mut next, &rotation);
    }
    Ok(next)
}

/// The record once `rotation` is over: the new root's generation, no
/// material, the rotation as the last one.
fn end(input: &PlanInput<'_>, mut next: Stage, rotation: Rotation) -> Stage {
    if rotation.kind == Kind::Root {
        next.record.state.root_generation = rotation.generation;
    }
    next.record.state.rotation = None;
    next.record.state.last = Some(record::Ended {
        id: rotation.id.clone(),
        trigger_key: rotation.trigger_key.clone(),
        finished: true,
        at: now(input),
    });
    next.record.material = record::Material::default();
    next.record_reasons.push(format!(
        "rotation `{}` ends{}",
        rotation.id,
        if rotation.kind == Kind::Root {
            ": the old root leaves every bundle"
        } else {
            ": the old intermediate is retired"
        }
    ));
    let mut ended = rotation;
    if ended.kind == Kind::Root {
        ended.phase = Phase::DropOld;
        ended.started.push(record::Started {
            phase: Phase::DropOld,
            at: now(input),
            rollback: false,
        });
    }
    next.ended = Some(ended);
    next
}

/// The rotation part of the plan.
pub(super) fn status(input: &PlanInput<'_>, stage: &Stage, plan: &Plan) -> Option<RotationStatus> {
    if let Some(ended) = &stage.ended {
        let (step, steps) = ended.step();
        return Some(RotationStatus {
            id: ended.id.clone(),
            kind: kind_word(ended.kind).to_owned(),
            trigger: ended.trigger.clone(),
            phase: if ended.kind == Kind::Root {
                Phase::DropOld.as_str().to_owned()
            } else {
                "end".to_owned()
            },
            step: if ended.kind == Kind::Root {
                steps
            } else {
                step
            },
            steps,
            phase_started: pki::inspect::rfc3339(now(input)),
            this_apply: if ended.kind == Kind::Root {
                "ends the rotation: the old root leaves every bundle (cannot be undone)".to_owned()
            } else {
                "ends the rotation: the old intermediate is retired".to_owned()
            },
            gate: None,
            held: false,
            entered: true,
        });
    }
    let rotation = stage.rotation()?;
    let (step, steps) = rotation.step();
    let writes = plan.summary.has_changes();
    let this_apply = if stage.entered {
        let verb = if stage.observed.state.rotation.is_none() {
            "starts the rotation with"
        } else if rotation.started.last().is_some_and(|s| s.rollback) {
            "rolls back to"
        } else {
            "starts"
        };
        format!(
            "{verb} phase {step} of {steps} ({}): {}",
            rotation.phase.as_str(),
            if input.config.ca.mode == CaMode::External {
                rotation.phase.describe_external()
            } else {
                rotation.phase.describe()
            }
        )
    } else if !stage.wave.is_empty() {
        format!(
            "reissues a wave of {} cluster{}",
            stage.wave.len(),
            if stage.wave.len() == 1 { "" } else { "s" }
        )
    } else if writes {
        format!("completes phase {step} ({})", rotation.phase.as_str())
    } else {
        "nothing: the phase is in place; waiting for the gate".to_owned()
    };
    Some(RotationStatus {
        id: rotation.id.clone(),
        kind: kind_word(rotation.kind).to_owned(),
        trigger: rotation.trigger.clone(),
        phase: rotation.phase.as_str().to_owned(),
        step,
        steps,
        phase_started: rotation
            .phase_started()
            .map(pki::inspect::rfc3339)
            .unwrap_or_default(),
        this_apply,
        gate: gate(input, stage, plan),
        held: rotation.held,
        entered: stage.entered,
    })
}

/// Keys relayctl keeps through a rotation, for the mgmt planner.
pub(super) struct Sides<'a> {
    /// The root being replaced (PEM) and the one introduced.
    pub(super) old_root: &'a [u8],
    pub(super) new_root: &'a [u8],
    /// Their keys, where held.
    pub(super) old_root_key: Option<&'a PrivateKey>,
    pub(super) new_root_key: Option<&'a PrivateKey>,
    /// The intermediates.
    pub(super) old_signer: Option<&'a Issuer>,
    pub(super) new_signer: Option<&'a Issuer>,
    /// The bridge.
    pub(super) cross: Option<&'a [u8]>,
}

impl Record {
    /// The material as the mgmt planner uses it.
    pub(super) fn sides(&self) -> Sides<'_> {
        let m = &self.material;
        Sides {
            old_root: m.old_root.as_deref().unwrap_or_default(),
            new_root: m.new_root.as_deref().unwrap_or_default(),
            old_root_key: m.old_root_key.as_ref(),
            new_root_key: m.new_root_key.as_ref(),
            old_signer: m.old_signer.as_ref(),
            new_signer: m.new_signer.as_ref(),
            cross: m.cross.as_deref(),
        }
    }
}
