//! The plan of one cluster under construction: Secret by Secret, what the
//! cluster holds (a [`Slot`]), what it should hold, and the decision
//! between them, together with the exact object apply will write.

use std::collections::BTreeMap;

use super::model::{Action, Change, ClusterPlan, Role, Value};
use super::show::show_observed;
use super::{ClusterWrites, PlanInput, Write};
use crate::model::ClusterName;
use crate::observed::{
    ANNOTATION_CONFIG_DIGEST, ANNOTATION_FINGERPRINT, ANNOTATION_NOT_AFTER, ANNOTATION_SOURCE,
    ClusterObservation, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY, Ownership, SecretObject,
    SmallMap,
};
use crate::pki::{self, PrivateKey, inspect::rfc3339};
use crate::relay::key;
use crate::secret::SecretBytes;

/// Plan and writes of one cluster under construction (omicron's
/// `BlueprintBuilder`, for one cluster).
pub(super) struct ClusterBuilder<'a> {
    pub(super) input: &'a PlanInput<'a>,
    /// `input.config.digest()`, computed once per plan.
    config_digest: &'a str,
    pub(super) name: ClusterName,
    pub(super) role: Role,
    /// Why the whole cluster cannot be planned.
    pub(super) error: Option<String>,
    pub(super) changes: Vec<Change>,
    pub(super) writes: Vec<Write>,
    /// Writes after every other cluster's (see [`ClusterWrites::last`]).
    pub(super) last: Vec<Write>,
    /// `KubernetesCluster` writes (mgmt).
    pub(super) registrations: Vec<super::RegistrationWrite>,
}

/// Where a named Secret stands on a cluster.
pub(super) enum Slot<'o> {
    /// It does not exist.
    Missing,
    /// It is this instance's.
    Ours(&'o SecretObject),
    /// It is someone else's, and `--adopt` takes it over.
    Adopt(&'o SecretObject),
    /// It is someone else's: left untouched, and why.
    Conflict(&'o SecretObject, String),
}

impl<'o> Slot<'o> {
    /// The existing object relayctl may use as a basis.
    pub(super) fn usable(&self) -> Option<&'o SecretObject> {
        match self {
            Slot::Ours(s) | Slot::Adopt(s) => Some(s),
            _ => None,
        }
    }

    /// Whether it belongs to someone else and is left untouched.
    pub(super) fn is_conflict(&self) -> bool {
        matches!(self, Slot::Conflict(..))
    }
}

impl<'a> ClusterBuilder<'a> {
    pub(super) fn new(
        input: &'a PlanInput<'a>,
        config_digest: &'a str,
        name: ClusterName,
        role: Role,
    ) -> Self {
        Self {
            input,
            config_digest,
            name,
            role,
            error: None,
            changes: Vec::new(),
            writes: Vec::new(),
            last: Vec::new(),
            registrations: Vec::new(),
        }
    }

    fn namespace(&self) -> String {
        self.input.config.namespace.to_string()
    }

    /// Whether something on this cluster is a conflict or an error.
    pub(super) fn has_problems(&self) -> bool {
        self.error.is_some()
            || self
                .changes
                .iter()
                .any(|c| matches!(c.action, Action::Conflict | Action::Error))
    }

    pub(super) fn finish(self) -> (ClusterPlan, ClusterWrites) {
        (
            ClusterPlan {
                name: self.name.to_string(),
                role: self.role,
                error: self.error,
                changes: self.changes,
            },
            ClusterWrites {
                cluster: self.name,
                role: self.role,
                writes: self.writes,
                last: self.last,
                registrations: self.registrations,
            },
        )
    }

    /// Where a named Secret stands: missing, ours (or adoptable), or someone else's.
    pub(super) fn slot<'o>(&self, obs: &'o ClusterObservation, name: &str) -> Slot<'o> {
        match obs.secrets.get(name) {
            None => Slot::Missing,
            Some(secret) => match secret.ownership(self.input.config.instance.as_str()) {
                Ownership::Ours => Slot::Ours(secret),
                _ if self.input.adopt => Slot::Adopt(secret),
                Ownership::OtherInstance(other) => Slot::Conflict(
                    secret,
                    format!("owned by relayctl instance `{other}`, not `{}`", self.input.config.instance),
                ),
                Ownership::Unowned => Slot::Conflict(
                    secret,
                    "exists and is not managed by relayctl; left untouched (use `--adopt` to take it over)".to_owned(),
                ),
            },
        }
    }

    /// Records the decision for one Secret. `reasons` are why the existing
    /// object must change (empty: it is right); `data` is the full desired data.
    pub(super) fn decide(
        &mut self,
        slot: &Slot<'_>,
        name: &str,
        reasons: Vec<String>,
        data: BTreeMap<String, SecretBytes>,
        shown: BTreeMap<String, Value>,
    ) {
        // Data keys the Secret should not hold are drift too.
        let mut reasons = reasons;
        if let Some(existing) = slot.usable() {
            for extra in existing.data.keys().filter(|k| !data.contains_key(*k)) {
                let quoted = format!("`{extra}`");
                if !reasons.iter().any(|r| r.contains(&quoted)) {
                    reasons.push(format!(
                        "unexpected data key `{}`",
                        crate::text::printable(extra)
                    ));
                }
            }
        }
        let (action, reasons, version) = match slot {
            Slot::Missing => (Action::Create, vec!["missing".to_owned()], None),
            Slot::Conflict(secret, why) => (
                Action::Conflict,
                vec![why.clone()],
                Some(secret.version.clone()),
            ),
            Slot::Ours(secret) if reasons.is_empty() => {
                (Action::NoOp, Vec::new(), Some(secret.version.clone()))
            }
            Slot::Ours(secret) => (Action::Update, reasons, Some(secret.version.clone())),
            Slot::Adopt(secret) => {
                let mut all = vec!["adopt: add relayctl ownership labels".to_owned()];
                all.extend(reasons);
                (Action::Update, all, Some(secret.version.clone()))
            }
        };
        // Values that are the same certificate(s) or key as what exists keep
        // their existing bytes: rewriting a kept CA must not change it.
        let mut data = data;
        if let Some(existing) = slot.usable() {
            for (key, value) in data.iter_mut() {
                if let Some(current) = existing.get(key)
                    && same_value(current, value)
                {
                    *value = current.clone();
                }
            }
        }
        if action.writes() {
            self.writes.push(Write {
                action,
                object: self.object(name, data),
                precondition: version.clone(),
                chained: false,
            });
        }
        self.changes.push(Change {
            namespace: self.namespace(),
            name: name.to_owned(),
            action,
            reasons,
            observed_version: version,
            data: shown,
        });
    }

    /// A `tls.crt`/`tls.key`/`ca.crt` Secret copied as it is from the user's
    /// material (`external` mode): rewritten when it differs from the
    /// source or from the root bundle.
    #[allow(clippy::too_many_arguments)] // the Secret, its source, and the bundle it carries
    pub(super) fn decide_copy(
        &mut self,
        obs: &ClusterObservation,
        name: &str,
        chain: &crate::pki::Bundle,
        private: &PrivateKey,
        bundle: &[u8],
        bundle_facts: &[crate::pki::CertFacts],
        new_root: bool,
    ) {
        let slot = self.slot(obs, name);
        let mut reasons = Vec::new();
        if let Some(existing) = slot.usable() {
            super::compare::copied_reasons(existing, &chain.facts(), private, &mut reasons);
            super::compare::bundle_reason(
                existing,
                bundle_facts,
                "`ca.crt` differs from the root bundle",
                &mut reasons,
            );
        }
        let (data, shown) = super::show::tls_data(
            chain.pem().to_vec(),
            Some(chain.facts()),
            private,
            false,
            bundle,
            bundle_facts,
            new_root,
        );
        self.decide(&slot, name, reasons, data, shown);
    }

    /// Adds an annotation to the write just decided for `name`, if any.
    pub(super) fn annotate(&mut self, name: &str, key: &str, value: String) {
        if let Some(write) = self
            .writes
            .iter_mut()
            .rev()
            .find(|w| w.object.name == name && w.action != Action::Delete)
        {
            write.object.annotations.insert(key.to_owned(), value);
        }
    }

    /// A Secret that cannot be planned, and why.
    pub(super) fn push_error(
        &mut self,
        name: &str,
        version: Option<String>,
        reasons: Vec<String>,
        shown: BTreeMap<String, Value>,
    ) {
        self.changes.push(Change {
            namespace: self.namespace(),
            name: name.to_owned(),
            action: Action::Error,
            reasons,
            observed_version: version,
            data: shown,
        });
    }

    /// A Secret left as it is, and why.
    pub(super) fn push_noop(&mut self, secret: &SecretObject, why: &str) {
        self.changes.push(Change {
            namespace: secret.namespace.clone(),
            name: secret.name.clone(),
            action: Action::NoOp,
            reasons: vec![why.to_owned()],
            observed_version: Some(secret.version.clone()),
            data: show_observed(secret),
        });
    }

    /// A Secret to delete, and why.
    pub(super) fn push_delete(&mut self, secret: &SecretObject, why: &str) {
        self.changes.push(Change {
            namespace: secret.namespace.clone(),
            name: secret.name.clone(),
            action: Action::Delete,
            reasons: vec![why.to_owned()],
            observed_version: Some(secret.version.clone()),
            data: show_observed(secret),
        });
        self.writes.push(Write {
            action: Action::Delete,
            object: SecretObject {
                namespace: secret.namespace.clone(),
                name: secret.name.clone(),
                labels: SmallMap::new(),
                annotations: SmallMap::new(),
                data: SmallMap::new(),
                version: String::new(),
            },
            precondition: Some(secret.version.clone()),
            chained: false,
        });
    }

    /// A Secret as relayctl writes it: ownership labels and provenance annotations.
    pub(super) fn object(&self, name: &str, data: BTreeMap<String, SecretBytes>) -> SecretObject {
        let config = self.input.config;
        let labels = SmallMap::from_iter([
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
            (LABEL_INSTANCE.to_owned(), config.instance.to_string()),
        ]);
        let mut annotations = SmallMap::from_iter([
            (ANNOTATION_SOURCE.to_owned(), self.input.source.to_owned()),
            (
                ANNOTATION_CONFIG_DIGEST.to_owned(),
                format!("sha256:{}", self.config_digest),
            ),
        ]);
        let cert = data.get(key::TLS_CRT).or_else(|| data.get(key::CA_CRT));
        if let Some(facts) = cert
            .and_then(|pem| pki::inspect_bundle(pem.expose()).ok())
            .and_then(|facts| facts.into_iter().next())
        {
            annotations.insert(
                ANNOTATION_FINGERPRINT.to_owned(),
                facts.sha256_fingerprint.clone(),
            );
            annotations.insert(ANNOTATION_NOT_AFTER.to_owned(), rfc3339(facts.not_after));
        }
        SecretObject {
            namespace: config.namespace.to_string(),
            name: name.to_owned(),
            labels,
            annotations,
            data: data.into_iter().collect(),
            version: String::new(),
        }
    }
}

/// Whether two data values hold the same thing: equal bytes, the same
/// certificates (by fingerprint, in order), or the same private key.
pub(super) fn same_value(a: &SecretBytes, b: &SecretBytes) -> bool {
    if a == b {
        return true;
    }
    if let (Ok(x), Ok(y)) = (
        pki::inspect_bundle(a.expose()),
        pki::inspect_bundle(b.expose()),
    ) {
        return x
            .iter()
            .map(|f| &f.sha256_fingerprint)
            .eq(y.iter().map(|f| &f.sha256_fingerprint));
    }
    match (PrivateKey::from_pem(a), PrivateKey::from_pem(b)) {
        (Ok(x), Ok(y)) => x.facts() == y.facts(),
        _ => false,
    }
}
