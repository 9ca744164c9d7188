//! Saved plans: what `plan --out FILE` writes and `apply FILE` carries out.
//!
//! A saved plan is the plan (intents only, no secret material) plus what it
//! was made from: the config path or Git commit, every observed object's
//! version and a digest prefix of each piece of the user's material. `apply
//! FILE` plans again under the lock and refuses to go on when anything
//! [`moved`]: an object changed, the config or material changed, or an
//! action would now differ. Pure: parsing and comparing only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Action, Plan};
use crate::observed::{ObjectVersion, Observed};

/// The `kind` of a saved plan file.
pub const KIND: &str = "relayctl.dev/SavedPlan";

/// Largest saved plan file read (a plan of 10,000 clusters is tens of MiB).
pub const MAX_BYTES: usize = 512 * 1024 * 1024;

/// What `plan --out` writes: the plan and every observed object version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedPlan {
    /// Always [`KIND`].
    pub kind: String,
    /// The plan format version.
    pub format_version: u32,
    /// The local manifest path, or the folder inside the repository for Git.
    #[serde(default)]
    pub config_path: PathBuf,
    /// For manifests read from Git: where, and the commit that `apply FILE` reads again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<SavedGitSource>,
    /// `--adopt` was given.
    pub adopt: bool,
    /// `--prune` was given.
    pub prune: bool,
    /// `--rollback` was given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    /// `--resume` was given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resume: bool,
    /// Every object observed, with its version.
    pub observed: Vec<ObjectVersion>,
    /// Digest prefixes of the material the plan was made with (never the values).
    #[serde(default)]
    pub material: BTreeMap<String, String>,
    /// The plan.
    pub plan: Plan,
}

/// The Git source of a saved plan (no credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedGitSource {
    /// The repository URL without credentials.
    pub url: String,
    /// The ref given to `plan`.
    pub reference: String,
    /// The folder inside the repository.
    pub path: PathBuf,
    /// The commit that was planned.
    pub commit: String,
}

/// Reads a saved plan. `None`: the bytes are not a saved plan at all (not
/// JSON, or another `kind`), so `apply` takes its argument as manifests.
/// The error names what is wrong, bounded in length.
pub fn parse(bytes: &[u8]) -> Option<Result<SavedPlan, String>> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if value.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
        return None;
    }
    Some(
        serde_json::from_value(value)
            .map_err(|e| crate::text::printable(&e.to_string()).into_owned()),
    )
}

/// The version of every object observed, sorted, as a saved plan records it.
pub fn versions(observed: &Observed) -> Vec<ObjectVersion> {
    let mut out = Vec::new();
    for (cluster, result) in &observed.clusters {
        if let Ok(obs) = result {
            for secret in obs.secrets.values().chain(obs.inputs.values()) {
                out.push(ObjectVersion {
                    cluster: cluster.to_string(),
                    namespace: secret.namespace.clone(),
                    name: secret.name.clone(),
                    version: Some(secret.version.clone()),
                });
            }
        }
    }
    out.sort();
    out
}

/// Everything that moved since `saved` was made, compared with a new plan
/// of the same config (`plan`), what was observed for it and the material
/// digests it was made with. Empty: the saved plan may be carried out.
pub fn moved(
    saved: &SavedPlan,
    plan: &Plan,
    observed: &Observed,
    material: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut moved = Vec::new();
    if saved.plan.config_digest != plan.config_digest {
        moved.push(format!(
            "the config at {} changed (sha256:{} → sha256:{})",
            crate::text::printable(&saved.plan.source),
            short(&saved.plan.config_digest),
            short(&plan.config_digest)
        ));
    }
    for role in saved
        .material
        .keys()
        .chain(material.keys())
        .collect::<BTreeSet<_>>()
    {
        if saved.material.get(role) != material.get(role) {
            moved.push(format!(
                "material `{}` changed since the plan was made",
                crate::text::printable(role)
            ));
        }
    }
    type Key = (String, String, String);
    let index = |versions: &[ObjectVersion]| -> BTreeMap<Key, Option<String>> {
        versions
            .iter()
            .map(|v| {
                (
                    (v.cluster.clone(), v.namespace.clone(), v.name.clone()),
                    v.version.clone(),
                )
            })
            .collect()
    };
    let (before, after) = (index(&saved.observed), index(&versions(observed)));
    for key in before.keys().chain(after.keys()).collect::<BTreeSet<_>>() {
        let (cluster, namespace, name) = key;
        let what = match (before.get(key), after.get(key)) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(_), Some(_)) => "modified",
            (Some(_), None) => "deleted",
            (None, Some(_)) => "created",
            (None, None) => continue,
        };
        moved.push(format!(
            "{}: {}/{} was {what}",
            crate::text::printable(cluster),
            crate::text::printable(namespace),
            crate::text::printable(name)
        ));
    }
    if moved.is_empty() {
        let actions = |p: &Plan| -> BTreeMap<(String, String), Action> {
            p.clusters
                .iter()
                .flat_map(|c| {
                    c.changes
                        .iter()
                        .map(move |ch| ((c.name.clone(), ch.name.clone()), ch.action))
                })
                .collect()
        };
        let (a, b) = (actions(&saved.plan), actions(plan));
        let word = |action: Option<&Action>| action.map_or("absent", |a| a.as_str());
        for key in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
            if a.get(key) != b.get(key) {
                moved.push(format!(
                    "{}: {} would now be `{}` instead of `{}` (time passed: a certificate entered its renewal window?)",
                    key.0,
                    key.1,
                    word(b.get(key)),
                    word(a.get(key))
                ));
            }
        }
    }
    moved
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        serde_json::from_value(serde_json::json!({
            "formatVersion": crate::plan::FORMAT_VERSION,
            "instance": "prod",
            "namespace": "gloo-mesh",
            "caMode": "managed",
            "clientCertMode": "token",
            "configDigest": "0123456789abcdef0123",
            "source": "config",
            "clusters": [{
                "name": "mgmt",
                "role": "management",
                "changes": [{
                    "namespace": "gloo-mesh",
                    "name": "relay-root-tls-secret",
                    "action": "no-op",
                    "reasons": [],
                    "data": {}
                }]
            }],
            "summary": { "create": 0, "update": 0, "delete": 0, "noOp": 1, "conflict": 0, "error": 0 }
        }))
        .unwrap()
    }

    fn saved() -> SavedPlan {
        SavedPlan {
            kind: KIND.to_owned(),
            format_version: crate::plan::FORMAT_VERSION,
            config_path: "config".into(),
            git: None,
            adopt: false,
            prune: false,
            rollback: false,
            resume: false,
            observed: Vec::new(),
            material: BTreeMap::new(),
            plan: plan(),
        }
    }

    #[test]
    fn a_saved_plan_round_trips_and_other_json_is_not_one() {
        let text = serde_json::to_vec(&saved()).unwrap();
        assert_eq!(parse(&text).unwrap().unwrap(), saved());
        assert!(parse(b"{\"kind\": \"Other\"}").is_none());
        assert!(parse(b"apiVersion: relayctl.dev/v1alpha1").is_none());
        let broken = format!(
            "{{\"kind\": \"{KIND}\", \"formatVersion\": \"{}\"}}",
            "x".repeat(100_000)
        );
        let err = parse(broken.as_bytes()).unwrap().unwrap_err();
        assert!(err.len() < 1000, "{}", err.len());
    }

    #[test]
    fn nothing_moved_means_an_empty_list_and_a_changed_action_is_named_in_words() {
        let observed = Observed::default();
        assert!(moved(&saved(), &plan(), &observed, &BTreeMap::new()).is_empty());
        let mut now = plan();
        now.clusters[0].changes[0].action = Action::Update;
        let moved = moved(&saved(), &now, &observed, &BTreeMap::new());
        assert_eq!(
            moved,
            [
                "mgmt: relay-root-tls-secret would now be `update` instead of `no-op` (time passed: a certificate entered its renewal window?)"
            ]
        );
    }

    #[test]
    fn changed_material_and_config_are_named() {
        let mut now = plan();
        now.config_digest = "fedcba9876543210fedc".to_owned();
        let material = BTreeMap::from([("root.cert".to_owned(), "sha256:ab".to_owned())]);
        let moved = moved(&saved(), &now, &Observed::default(), &material);
        assert!(
            moved[0].contains("sha256:0123456789ab → sha256:fedcba987654"),
            "{moved:?}"
        );
        assert_eq!(
            moved[1],
            "material `root.cert` changed since the plan was made"
        );
    }
}
