//! Registration: a `KubernetesCluster` per workload cluster on mgmt, when
//! `spec.registration.enabled`. The management server refuses the agent of
//! a cluster without one (the product's documented failure mode). relayctl
//! creates the missing ones, keeps ones registered by someone else (e.g.
//! `meshctl`) as they are, and deletes its own for clusters that left the
//! config when pruning is on, as it does with Secrets.

use std::collections::BTreeMap;

use super::cluster::ClusterBuilder;
use super::model::{Action, Change, Value};
use super::{PlanInput, RegistrationWrite};
use crate::observed::{
    ClusterObservation, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY, Ownership, Registration,
};
use crate::relay::registration::{CRD, change_name};

/// Plans the registrations on mgmt.
pub(super) fn plan(input: &PlanInput<'_>, obs: &ClusterObservation, mgmt: &mut ClusterBuilder<'_>) {
    let config = input.config;
    if !config.registration.enabled {
        return;
    }
    let namespace = config.namespace.to_string();
    let existing = match &obs.registrations {
        Some(Ok(existing)) => existing,
        Some(Err(why)) => {
            mgmt.push_error(
                &change_name("*"),
                None,
                vec![format!(
                    "{why}: install the product's CRDs (the management server's Helm chart) or set `spec.registration.enabled: false`"
                )],
                BTreeMap::new(),
            );
            return;
        }
        None => {
            mgmt.push_error(
                &change_name("*"),
                None,
                vec![format!("registrations (`{CRD}`) were not observed")],
                BTreeMap::new(),
            );
            return;
        }
    };
    let instance = config.instance.as_str();
    let labels = crate::observed::SmallMap::from_iter([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_INSTANCE.to_owned(), instance.to_owned()),
    ]);
    let domain = &config.registration.cluster_domain;
    for workload in &config.workloads {
        let name = workload.cluster.name.to_string();
        let wanted = Registration {
            namespace: namespace.clone(),
            name: name.clone(),
            labels: labels.clone(),
            cluster_domain: Some(domain.clone()),
            version: String::new(),
        };
        let (action, reasons, version) = match existing.get(&name) {
            None => (Action::Create, vec!["missing".to_owned()], None),
            Some(found) if found.ownership(instance) != Ownership::Ours => (
                Action::NoOp,
                vec!["registered by someone else (e.g. meshctl); left as it is".to_owned()],
                Some(found.version.clone()),
            ),
            Some(found) if found.cluster_domain.as_ref() != Some(domain) => (
                Action::Update,
                vec![format!(
                    "clusterDomain is `{}`, want `{domain}`",
                    found.cluster_domain.as_deref().unwrap_or("")
                )],
                Some(found.version.clone()),
            ),
            Some(found) => (Action::NoOp, Vec::new(), Some(found.version.clone())),
        };
        push(mgmt, &namespace, wanted, action, reasons, version);
    }
    let may_prune = input.prune && !config.workloads.is_empty();
    for found in existing.values().filter(|r| {
        r.ownership(instance) == Ownership::Ours
            && !config
                .workloads
                .iter()
                .any(|w| w.cluster.name.as_str() == r.name)
    }) {
        let (action, why) = if may_prune {
            (
                Action::Delete,
                "orphan: the cluster left the config and pruning is on",
            )
        } else {
            (
                Action::NoOp,
                "orphan: the cluster left the config; kept (pruning is off)",
            )
        };
        push(
            mgmt,
            &namespace,
            found.clone(),
            action,
            vec![why.to_owned()],
            Some(found.version.clone()),
        );
    }
}

fn push(
    mgmt: &mut ClusterBuilder<'_>,
    namespace: &str,
    registration: Registration,
    action: Action,
    reasons: Vec<String>,
    version: Option<String>,
) {
    let shown = BTreeMap::from([(
        "spec.clusterDomain".to_owned(),
        Value::Text {
            text: registration.cluster_domain.clone().unwrap_or_default(),
        },
    )]);
    mgmt.changes.push(Change {
        namespace: namespace.to_owned(),
        name: change_name(&registration.name),
        action,
        reasons,
        observed_version: version.clone(),
        data: shown,
    });
    if action.writes() {
        mgmt.registrations.push(RegistrationWrite {
            action,
            registration,
            precondition: version,
        });
    }
}
