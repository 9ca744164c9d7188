//! `KubernetesCluster` registrations on the management cluster: the
//! product's custom resource (`admin.gloo.solo.io/v2`), read with one LIST
//! of the relay namespace and written with create, a merge patch under the
//! observed `resourceVersion`, and delete. A 404 on the resource itself
//! means its CustomResourceDefinition is not installed, which is named.

use std::collections::BTreeMap;

use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::Request;
use serde::{Deserialize, Serialize};

use super::call::{CallError, decode};
use super::{FIELD_MANAGER, KubeBackend};
use crate::backend::BackendError;
use crate::observed::Registration;
use crate::plan::{Action, RegistrationWrite};
use crate::relay::registration::{CRD, GROUP, KIND, PLURAL, VERSION};

/// The resource path of the registrations in `namespace`.
fn url_path(namespace: &str) -> String {
    format!("/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}")
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    #[serde(default)]
    spec: Spec,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster_domain: Option<String>,
}

#[derive(Debug, Deserialize)]
struct List {
    #[serde(default)]
    items: Vec<Object>,
}

impl KubeBackend {
    pub(super) async fn observe_registrations_async(
        &self,
        namespace: &str,
    ) -> Result<BTreeMap<String, Registration>, BackendError> {
        let request = Request::new(url_path(namespace));
        let text = match self
            .secret_call(self.deadline(), || request.list(&ListParams::default()))
            .await
        {
            Ok(text) => text,
            Err(CallError::Api(status)) if status.code == 404 => {
                return Err(BackendError::MissingCrd {
                    cluster: self.cluster.clone(),
                    crd: CRD,
                });
            }
            Err(e) => {
                return Err(self.fail(
                    format!(
                        "listing {KIND}s in namespace `{namespace}` of cluster `{}`",
                        self.cluster
                    ),
                    e,
                ));
            }
        };
        let list: List = decode(&text).map_err(|e| {
            self.fail(
                format!("listing {KIND}s of cluster `{}`", self.cluster),
                CallError::Decode(e),
            )
        })?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|item| {
                let name = item.metadata.name?;
                Some((
                    name.clone(),
                    Registration {
                        namespace: namespace.to_owned(),
                        name,
                        labels: item
                            .metadata
                            .labels
                            .unwrap_or_default()
                            .into_iter()
                            .collect(),
                        cluster_domain: item.spec.cluster_domain,
                        version: item.metadata.resource_version.unwrap_or_default(),
                    },
                ))
            })
            .collect())
    }

    pub(super) async fn write_registration_async(
        &self,
        write: &RegistrationWrite,
    ) -> Result<(), BackendError> {
        let wanted = &write.registration;
        let (namespace, name) = (&wanted.namespace, &wanted.name);
        let request = Request::new(url_path(namespace));
        let operation = |verb: &str| {
            format!(
                "{verb} {KIND} `{namespace}/{name}` on cluster `{}`",
                self.cluster
            )
        };
        let stale = || BackendError::Stale {
            namespace: namespace.clone(),
            name: crate::relay::registration::change_name(name),
        };
        let body = Object {
            api_version: format!("{GROUP}/{VERSION}"),
            kind: KIND.to_owned(),
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                labels: Some(
                    wanted
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                resource_version: write.precondition.clone(),
                ..Default::default()
            },
            spec: Spec {
                cluster_domain: wanted.cluster_domain.clone(),
            },
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let result = match (write.action, write.precondition.as_deref()) {
            (Action::Create | Action::Update, None) => {
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PostParams::default()
                };
                self.secret_call(self.deadline(), || request.create(&params, json.clone()))
                    .await
                    .map_err(|e| (e, operation("creating")))
                    .map(|_| ())
            }
            (Action::Create | Action::Update, Some(_)) => {
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PatchParams::default()
                };
                let patch = Patch::Merge(&body);
                self.secret_call(self.deadline(), || request.patch(name, &params, &patch))
                    .await
                    .map_err(|e| (e, operation("updating")))
                    .map(|_| ())
            }
            (Action::Delete, Some(version)) => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: Some(version.to_owned()),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                self.secret_call(self.deadline(), || request.delete(name, &params))
                    .await
                    .map_err(|e| (e, operation("deleting")))
                    .map(|_| ())
            }
            _ => Ok(()),
        };
        match result {
            Ok(()) => Ok(()),
            Err((CallError::Api(status), _))
                if status.code == 409 || (status.code == 404 && write.precondition.is_some()) =>
            {
                Err(stale())
            }
            Err((CallError::Api(status), _)) if status.code == 404 => {
                Err(BackendError::MissingCrd {
                    cluster: self.cluster.clone(),
                    crd: CRD,
                })
            }
            Err((e, operation)) => Err(self.fail(operation, e)),
        }
    }
}
