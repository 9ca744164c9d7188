//! The fleet-wide observation: every cluster observed through its backend
//! with bounded concurrency, and what the observations say together (two
//! clusters that are one storage). Which backend a cluster gets is
//! [`crate::backend::backend_for`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backend::Backend;
use crate::error::error_chain;
use crate::model::{ClusterName, TrustConfig};
use crate::observed::Observed;

/// Maps `f` over `items` on at most `parallelism` threads, keeping order.
pub fn parallel_map<T: Sync, R: Send>(
    items: Vec<T>,
    parallelism: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let workers = parallelism.max(1).min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    let slots: Vec<std::sync::Mutex<&mut Option<R>>> =
        results.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(index) else { break };
                    let result = f(item);
                    if let Ok(mut slot) = slots[index].lock() {
                        **slot = Some(result);
                    }
                }
            });
        }
    });
    drop(slots);
    results.into_iter().flatten().collect()
}

/// The Secret names to read on `cluster` besides those labelled for the
/// instance: what a cluster of its role can hold ([`crate::relay::observed_names`])
/// and the config's material sources on it. `sources` are the config's
/// `secret` material sources, listed once per observation (listing them
/// walks every workload cluster). Split in two: names relayctl writes (read
/// only when the LIST did not return them), and names read alongside the
/// LIST: those no LIST by label can return ([`crate::relay::unlabelled_names`]
/// and the sources), and on mgmt the rotation record, which exists only
/// while a rotation is under way, so that a run between rotations does not
/// wait a second round trip to learn it is absent.
fn names_for(
    config: &TrustConfig,
    sources: &[&crate::model::SecretRef],
    cluster: &ClusterName,
) -> (Vec<String>, Vec<String>) {
    let role = if cluster == &config.management.name {
        crate::relay::Role::Management
    } else if config
        .workloads
        .binary_search_by(|w| w.cluster.name.cmp(cluster))
        .is_ok()
    {
        crate::relay::Role::Workload
    } else {
        crate::relay::Role::Orphan
    };
    let (ca, client, tokens) = (
        config.ca.mode,
        config.client_certs.mode,
        config.identity_token.enabled,
    );
    let unlabelled = crate::relay::unlabelled_names(ca, client, tokens, role);
    let rotation = crate::relay::rotation_secret(config.instance.as_str());
    let (mut with_list, mut names): (Vec<String>, Vec<String>) =
        crate::relay::observed_names(config.instance.as_str(), ca, client, tokens, role)
            .into_iter()
            .partition(|n| unlabelled.contains(n) || *n == rotation);
    for source in sources {
        if &source.cluster == cluster && !with_list.contains(&source.name) {
            names.retain(|n| n != &source.name);
            with_list.push(source.name.clone());
        }
    }
    (names, with_list)
}

/// Observes `clusters` concurrently. A cluster that cannot be reached is
/// recorded with its error; it does not stop the others.
/// `on_done` is told of every cluster once it is observed (for progress).
pub fn observe(
    config: &TrustConfig,
    clusters: &[(ClusterName, Arc<dyn Backend>)],
    parallelism: usize,
    on_done: &(dyn Fn(&ClusterName, bool) + Sync),
) -> Observed {
    let namespace = config.namespace.as_str();
    let instance = config.instance.as_str();
    let sources = crate::material::secret_sources(config);
    let results = parallel_map(clusters.to_vec(), parallelism, |(name, backend)| {
        let (names, with_list) = names_for(config, &sources, name);
        let describe = |e: crate::backend::BackendError| {
            use crate::backend::BackendError as E;
            let class = match e {
                E::Read { .. } | E::Corrupt { .. } => "unreadable",
                E::Refused { .. } => "refused",
                _ => "unreachable",
            };
            format!("{class}: {}: {}", backend.describe(), error_chain(&e))
        };
        let mut result = backend
            .observe_split(namespace, instance, &names, &with_list)
            .map_err(describe);
        // Material sources in other namespaces: one read each.
        for source in sources
            .iter()
            .filter(|s| &s.cluster == name && s.namespace.as_str() != namespace)
        {
            let Ok(observation) = &mut result else { break };
            let wanted = vec![source.name.clone()];
            match backend.observe(source.namespace.as_str(), instance, &wanted) {
                Ok(mut found) => {
                    if let Some(secret) = found.secrets.remove(&source.name) {
                        observation
                            .inputs
                            .insert((source.namespace.to_string(), source.name.clone()), secret);
                    }
                }
                Err(e) => result = Err(describe(e)),
            }
        }
        // Registrations, on mgmt, when relayctl writes them: a missing CRD
        // is reported with them, it does not hide mgmt's Secrets.
        if config.registration.enabled
            && name == &config.management.name
            && let Ok(observation) = &mut result
        {
            observation.registrations = Some(
                backend
                    .observe_registrations(namespace)
                    .map_err(|e| error_chain(&e)),
            );
        }
        on_done(name, result.is_err());
        (name.clone(), result)
    });
    Observed {
        clusters: results.into_iter().collect(),
    }
}

/// Two observed clusters that are one storage, as `(first, second, how)`:
/// they share an identity (the same folder by device and inode, the same
/// Secret uids), whatever paths or contexts reached them.
pub fn shared_storage(observed: &Observed) -> Option<(ClusterName, ClusterName, String)> {
    let mut seen: BTreeMap<&str, &ClusterName> = BTreeMap::new();
    for (name, result) in &observed.clusters {
        let Ok(observation) = result else { continue };
        for identity in &observation.identities {
            match seen.get(identity.as_str()) {
                Some(first) if *first != name => {
                    let how = match identity.split_once(':') {
                        Some(("inode", _)) => "the same folder (same device and inode)".to_owned(),
                        Some(("secret-uid", uid)) => {
                            format!(
                                "the same API server and namespace (both hold Secret uid {uid})"
                            )
                        }
                        Some(("path", path)) => format!("the same folder `{path}`"),
                        _ => identity.clone(),
                    };
                    return Some(((*first).clone(), name.clone(), how));
                }
                Some(_) => {}
                None => {
                    seen.insert(identity, name);
                }
            }
        }
    }
    None
}
