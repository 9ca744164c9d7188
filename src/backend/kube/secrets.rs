//! Secret reads and writes: the label-scoped LIST, the metadata-only LIST
//! and the named GETs of an observation, create as a POST, update as a
//! forced server-side apply plus the removal of keys the plan does not
//! write, delete, each under the observed `resourceVersion` and `uid`.
//! Bodies are built and decoded here so that Secret data never passes
//! through the client's logs or an error.

use std::collections::{BTreeMap, BTreeSet};

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use kube::Resource as _;
use kube::api::{
    DeleteParams, ListParams, ObjectList, Patch, PatchParams, PostParams, Preconditions,
};
use kube::core::Request;
use serde::Serialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::call::{CallError, DecodeError, decode};
use super::{FIELD_MANAGER, KubeBackend};
use crate::backend::BackendError;
use crate::observed::{ClusterObservation, LABEL_INSTANCE, SecretObject};
use crate::secret::SecretBytes;

/// Items per page of the metadata-only LIST of a namespace's Secrets; a
/// namespace holding more is asked by name instead.
const METADATA_PAGE: u32 = 500;

/// A `PartialObjectMetadataList`, of which only the names and the
/// continuation are kept: labels and annotations (where `kubectl apply`
/// leaves a copy of a Secret's data) are skipped by the decoder, never
/// copied out of the zeroized answer.
#[derive(serde::Deserialize)]
struct NameList {
    #[serde(default)]
    metadata: ListMeta,
    /// `null` when the namespace holds no Secret.
    items: Option<Vec<NameItem>>,
}

#[derive(serde::Deserialize)]
struct NameItem {
    metadata: NameOnly,
}

#[derive(serde::Deserialize)]
struct NameOnly {
    name: Option<String>,
}

impl KubeBackend {
    /// The label-scoped LIST, with the GETs of `with_list` (names no LIST
    /// by label returns, or that are usually absent) sent at the same time;
    /// then, of `names` the LIST did not return, those that exist
    /// ([`Self::read_existing`]).
    pub(super) async fn observe_async(
        &self,
        namespace: &str,
        instance: &str,
        names: &[String],
        with_list: &[String],
    ) -> Result<ClusterObservation, BackendError> {
        let deadline = self.deadline();
        let request = Request::new(Secret::url_path(&(), Some(namespace)));
        let selector = format!("{LABEL_INSTANCE}={instance}");
        let params = ListParams::default().labels(&selector);
        let listing = async {
            self.secret_call(deadline, || request.list(&params))
                .await
                .map_err(|e| {
                    self.fail(
                        format!(
                            "listing Secrets labelled `{selector}` in namespace `{namespace}` of cluster `{}`",
                            self.cluster
                        ),
                        e,
                    )
                })
        };
        let early: BTreeSet<&String> = with_list.iter().collect();
        let (text, early) = futures_util::future::join(
            listing,
            self.get_named(&request, deadline, namespace, early),
        )
        .await;
        let text = text?;
        let list: ObjectList<Secret> = decode(&text).map_err(|e| {
            self.fail(
                format!(
                    "listing Secrets in namespace `{namespace}` of cluster `{}`",
                    self.cluster
                ),
                CallError::Decode(e),
            )
        })?;
        drop(text);
        if !list.items.is_empty() {
            // Secrets were read from it: no need to create it before writing.
            self.know_namespace(namespace);
        }
        let mut observation = ClusterObservation::default();
        for secret in list.items.into_iter().chain(early?) {
            let (object, uid) = to_object(namespace, secret);
            self.remember_identity(&object, uid, &mut observation);
            observation.secrets.insert(object.name.clone(), object);
        }
        let missing: BTreeSet<&String> = names
            .iter()
            .filter(|n| !observation.secrets.contains_key(n.as_str()))
            .collect();
        for secret in self
            .read_existing(&request, deadline, namespace, missing)
            .await?
        {
            let (object, uid) = to_object(namespace, secret);
            self.remember_identity(&object, uid, &mut observation);
            observation.secrets.insert(object.name.clone(), object);
        }
        Ok(observation)
    }

    /// The Secrets among `names` (none labelled for the instance, so none
    /// in its LIST) that exist. One name is one GET. For more, a
    /// metadata-only LIST of the namespace (names, no data) shows which of
    /// them exist, and only those are read: on a fresh or converged cluster
    /// that is one request where there would be one GET per name. A namespace
    /// with more Secrets than one page of that LIST holds falls back to the
    /// GETs, so the LIST's cost stays bounded whatever else the namespace
    /// holds.
    async fn read_existing(
        &self,
        request: &Request,
        deadline: Instant,
        namespace: &str,
        names: BTreeSet<&String>,
    ) -> Result<Vec<Secret>, BackendError> {
        if names.len() < 2 {
            return self.get_named(request, deadline, namespace, names).await;
        }
        let operation = || {
            format!(
                "listing the names of Secrets in namespace `{namespace}` of cluster `{}`",
                self.cluster
            )
        };
        let params = ListParams::default().limit(METADATA_PAGE);
        let text = self
            .secret_call(deadline, || request.list_metadata(&params))
            .await
            .map_err(|e| self.fail(operation(), e))?;
        let listed: NameList =
            decode(&text).map_err(|e| self.fail(operation(), CallError::Decode(e)))?;
        if listed.metadata.continue_.is_some_and(|c| !c.is_empty()) {
            return self.get_named(request, deadline, namespace, names).await;
        }
        let present: BTreeSet<&str> = listed
            .items
            .iter()
            .flatten()
            .filter_map(|item| item.metadata.name.as_deref())
            .collect();
        let names = names
            .into_iter()
            .filter(|name| present.contains(name.as_str()))
            .collect();
        self.get_named(request, deadline, namespace, names).await
    }

    /// GETs of `names`, all at once (over HTTP/2, one round trip on the
    /// cluster's one connection): the Secrets that exist.
    async fn get_named(
        &self,
        request: &Request,
        deadline: Instant,
        namespace: &str,
        names: BTreeSet<&String>,
    ) -> Result<Vec<Secret>, BackendError> {
        let reads = names.into_iter().map(|name| async move {
            let result = self
                .secret_call(deadline, || request.get(name, &Default::default()))
                .await;
            (name, result)
        });
        let mut found = Vec::new();
        for (name, result) in futures_util::future::join_all(reads).await {
            let operation = || {
                format!(
                    "reading Secret `{namespace}/{name}` of cluster `{}`",
                    self.cluster
                )
            };
            let text = match result {
                Ok(text) => text,
                Err(CallError::Api(status)) if status.code == 404 => continue,
                Err(e) => return Err(self.fail(operation(), e)),
            };
            found.push(decode(&text).map_err(|e| self.fail(operation(), CallError::Decode(e)))?);
        }
        Ok(found)
    }

    pub(super) async fn create(
        &self,
        object: &SecretObject,
    ) -> Result<Option<String>, BackendError> {
        let namespace = &object.namespace;
        self.ensure_namespace(namespace).await?;
        let operation = || self.writing("creating", object);
        let body = Zeroizing::new(
            serde_json::to_vec(&SecretBody::new(object, None, None, true))
                .map_err(|e| self.fail(operation(), CallError::Decode(DecodeError::encode(&e))))?,
        );
        let request = Request::new(Secret::url_path(&(), Some(namespace)));
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        let text = self
            .write_call(
                object,
                Precondition::Absent,
                self.deadline(),
                operation,
                || request.create(&params, body.as_slice().to_vec()),
            )
            .await?;
        Ok(resource_version(text.as_bytes()))
    }

    pub(super) async fn update(
        &self,
        object: &SecretObject,
        version: &str,
    ) -> Result<Option<String>, BackendError> {
        let (namespace, name) = (&object.namespace, &object.name);
        let operation = || self.writing("updating", object);
        let uid = self.uid_for(namespace, name, version);
        let body = SecretBody::new(object, Some(version), uid.as_deref(), false);
        let request = Request::new(Secret::url_path(&(), Some(namespace)));
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&body);
        let deadline = self.deadline();
        let text = self
            .write_call(object, Precondition::Observed, deadline, operation, || {
                request.patch(name, &params, &patch)
            })
            .await?;
        let applied: Secret =
            decode(&text).map_err(|e| self.fail(operation(), CallError::Decode(e)))?;
        drop(text);
        // Keys another field manager left: remove them, under the same kind
        // of precondition, so the Secret holds exactly the planned data.
        let extra: Vec<String> = applied
            .data
            .iter()
            .flat_map(|d| d.keys())
            .filter(|k| !object.data.contains_key(k.as_str()))
            .cloned()
            .collect();
        drop(applied.data);
        if extra.is_empty() {
            return Ok(applied.metadata.resource_version);
        }
        let removal = serde_json::json!({
            "metadata": {
                "resourceVersion": applied.metadata.resource_version,
                "uid": applied.metadata.uid,
            },
            "data": extra.iter().map(|k| (k.clone(), serde_json::Value::Null)).collect::<serde_json::Map<_, _>>(),
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(&removal);
        let removing = || {
            format!(
                "removing data keys {} from Secret `{namespace}/{name}` on cluster `{}`",
                extra
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.cluster
            )
        };
        let text = self
            .write_call(object, Precondition::Observed, deadline, removing, || {
                request.patch(name, &params, &patch)
            })
            .await?;
        Ok(resource_version(text.as_bytes()))
    }

    pub(super) async fn delete(
        &self,
        object: &SecretObject,
        version: &str,
    ) -> Result<(), BackendError> {
        let (namespace, name) = (&object.namespace, &object.name);
        let operation = || self.writing("deleting", object);
        let request = Request::new(Secret::url_path(&(), Some(namespace)));
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(version.to_owned()),
                uid: self.uid_for(namespace, name, version),
            }),
            ..DeleteParams::default()
        };
        self.write_call(
            object,
            Precondition::Observed,
            self.deadline(),
            operation,
            || request.delete(name, &params),
        )
        .await?;
        Ok(())
    }

    /// Names a write of `object` for its error: "`verb` Secret `ns/name` on
    /// cluster `c`".
    fn writing(&self, verb: &str, object: &SecretObject) -> String {
        format!(
            "{verb} Secret `{}/{}` on cluster `{}`",
            object.namespace, object.name, self.cluster
        )
    }

    /// Sends one Secret write that carries `precondition`. An answer saying
    /// the precondition no longer holds is [`BackendError::Stale`]: the
    /// Secret changed since it was observed. Any other failure is reported
    /// as `operation`.
    async fn write_call(
        &self,
        object: &SecretObject,
        precondition: Precondition,
        deadline: Instant,
        operation: impl FnOnce() -> String,
        make: impl Fn() -> Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<Zeroizing<String>, BackendError> {
        match self.secret_call(deadline, make).await {
            Err(CallError::Api(status)) if precondition.failed_by(status.code) => {
                Err(BackendError::Stale {
                    namespace: object.namespace.clone(),
                    name: object.name.clone(),
                })
            }
            result => result.map_err(|e| self.fail(operation(), e)),
        }
    }

    fn remember_uid(&self, object: &SecretObject, uid: Option<String>) {
        if let (Some(uid), Ok(mut uids)) = (uid, self.uids.lock()) {
            uids.insert(
                (
                    object.namespace.clone(),
                    object.name.clone(),
                    object.version.clone(),
                ),
                uid,
            );
        }
    }

    /// Remembers the uid for preconditions, and as an identity of the
    /// storage: another context that sees the same Secret uid reaches the
    /// same apiserver and namespace.
    fn remember_identity(
        &self,
        object: &SecretObject,
        uid: Option<String>,
        observation: &mut ClusterObservation,
    ) {
        if let Some(uid) = &uid {
            observation.identities.insert(format!("secret-uid:{uid}"));
        }
        self.remember_uid(object, uid);
    }

    fn uid_for(&self, namespace: &str, name: &str, version: &str) -> Option<String> {
        self.uids.lock().ok().and_then(|uids| {
            uids.get(&(namespace.to_owned(), name.to_owned(), version.to_owned()))
                .cloned()
        })
    }
}

/// What a Secret write requires of the stored object.
#[derive(Debug, Clone, Copy)]
enum Precondition {
    /// It must not exist (create): a 409 says it appeared meanwhile. A 404
    /// is not stale: it is a missing namespace, an error of its own.
    Absent,
    /// It must still be the observed version of the same object (update,
    /// delete, by `resourceVersion` and `uid`): a 409 says it changed, a 404
    /// that it was deleted.
    Observed,
}

impl Precondition {
    /// Whether an error answer with HTTP status `code` says the
    /// precondition failed.
    fn failed_by(self, code: u16) -> bool {
        match self {
            Self::Absent => code == 409,
            Self::Observed => code == 409 || code == 404,
        }
    }
}

/// The `resourceVersion` of the object in an API answer, if it has one.
fn resource_version(text: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    }
    serde_json::from_slice::<Answer>(text)
        .ok()
        .and_then(|a| a.metadata.resource_version)
}

/// The body of a Secret write: planned labels, annotations and data.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretBody<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: BodyMeta<'a>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    type_: Option<&'static str>,
    data: BTreeMap<&'a str, Encoded<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BodyMeta<'a> {
    name: &'a str,
    namespace: &'a str,
    #[serde(serialize_with = "by_ref_as_map")]
    labels: &'a crate::observed::SmallMap<String, String>,
    #[serde(serialize_with = "by_ref_as_map")]
    annotations: &'a crate::observed::SmallMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
}

impl<'a> SecretBody<'a> {
    /// `type` is only set on create: it is immutable, and an adopted Secret
    /// keeps the type it has.
    fn new(
        object: &'a SecretObject,
        resource_version: Option<&'a str>,
        uid: Option<&'a str>,
        create: bool,
    ) -> Self {
        Self {
            api_version: "v1",
            kind: "Secret",
            metadata: BodyMeta {
                name: &object.name,
                namespace: &object.namespace,
                labels: &object.labels,
                annotations: &object.annotations,
                resource_version,
                uid,
            },
            type_: create.then_some("Opaque"),
            data: object
                .data
                .iter()
                .map(|(k, v)| (k.as_str(), Encoded(v)))
                .collect(),
        }
    }
}

fn by_ref_as_map<S: serde::Serializer>(
    map: &&crate::observed::SmallMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    crate::observed::as_map(map, serializer)
}

/// Serializes as base64 straight into the output, with no intermediate copy.
struct Encoded<'a>(&'a SecretBytes);

impl Serialize for Encoded<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Base64Display::new(self.0.expose(), &STANDARD))
    }
}

impl std::fmt::Debug for SecretBody<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBody")
            .field("name", &self.metadata.name)
            .field("namespace", &self.metadata.namespace)
            .field("data", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// An observed Secret, its data moved (not copied) into redacting holders,
/// and its `uid`.
fn to_object(namespace: &str, mut secret: Secret) -> (SecretObject, Option<String>) {
    let data = secret
        .data
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, SecretBytes::new(v.0)))
        .collect();
    let meta = secret.metadata;
    (
        SecretObject {
            namespace: meta.namespace.unwrap_or_else(|| namespace.to_owned()),
            name: meta.name.unwrap_or_default(),
            labels: meta.labels.unwrap_or_default().into_iter().collect(),
            annotations: meta.annotations.unwrap_or_default().into_iter().collect(),
            data,
            version: meta.resource_version.unwrap_or_default(),
        },
        meta.uid,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_names_keeps_names_and_the_continuation_only() {
        // The shape kube-apiserver answers with `as=PartialObjectMetadataList`.
        let text = r#"{"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1",
            "metadata":{"resourceVersion":"7","continue":"abc"},
            "items":[
              {"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{
                "name":"relay-root-tls-secret","namespace":"gloo-mesh","uid":"u",
                "annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{}}"},
                "managedFields":[{"manager":"kubectl","operation":"Update"}]}},
              {"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"other"}}
            ]}"#;
        let list: NameList = decode(text).unwrap();
        let items = list.items.unwrap_or_default();
        let names: Vec<_> = items.iter().map(|i| i.metadata.name.as_deref()).collect();
        assert_eq!(names, [Some("relay-root-tls-secret"), Some("other")]);
        assert_eq!(list.metadata.continue_.as_deref(), Some("abc"));
        // An empty namespace: kube-apiserver answers `"items":null`.
        for empty in [
            r#"{"metadata":{},"items":null}"#,
            r#"{"metadata":{},"items":[]}"#,
        ] {
            let list: NameList = decode(empty).unwrap();
            assert!(list.metadata.continue_.is_none());
            assert!(list.items.unwrap_or_default().is_empty());
        }
    }

    #[test]
    fn a_secret_body_carries_the_preconditions_and_base64_data() {
        let object = SecretObject {
            namespace: "ns".into(),
            name: "s".into(),
            labels: crate::observed::SmallMap::from_iter([("a".into(), "b".into())]),
            annotations: Default::default(),
            data: crate::observed::SmallMap::from_iter([(
                "token".into(),
                SecretBytes::from("abc".to_owned()),
            )]),
            version: String::new(),
        };
        let body = SecretBody::new(&object, Some("42"), Some("u-1"), false);
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["metadata"]["resourceVersion"], "42");
        assert_eq!(json["metadata"]["uid"], "u-1");
        assert_eq!(json["data"]["token"], "YWJj");
        assert_eq!(json["metadata"]["labels"], serde_json::json!({"a": "b"}));
        assert_eq!(
            json["metadata"]["annotations"],
            serde_json::json!({}),
            "no annotations is an empty map, never `[]` (the apiserver refuses that)"
        );
        assert!(
            json.get("type").is_none(),
            "type is immutable: only on create"
        );
        let created = serde_json::to_value(SecretBody::new(&object, None, None, true)).unwrap();
        assert_eq!(created["type"], "Opaque");
        assert!(created["metadata"].get("resourceVersion").is_none());
        assert!(!format!("{body:?}").contains("abc"));
    }

    #[test]
    fn a_create_is_stale_on_conflict_only_never_on_a_missing_namespace() {
        assert!(Precondition::Absent.failed_by(409));
        assert!(!Precondition::Absent.failed_by(404), "404: no namespace");
        assert!(Precondition::Observed.failed_by(409));
        assert!(Precondition::Observed.failed_by(404), "404: deleted");
        for code in [400, 403, 422, 500] {
            assert!(!Precondition::Absent.failed_by(code), "{code}");
            assert!(!Precondition::Observed.failed_by(code), "{code}");
        }
    }
}
