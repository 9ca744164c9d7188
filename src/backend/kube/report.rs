//! What a run reports into the clusters besides Secrets: Events
//! (events.k8s.io/v1) on the Secrets that changed, and the status ConfigMap
//! of a run on the management cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use sha2::{Digest as _, Sha256};

use super::call::CallError;
use super::{FIELD_MANAGER, KubeBackend};
use crate::backend::BackendError;
use crate::events::{EventNote, REPORTING_CONTROLLER};
use crate::observed::{LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY};

impl KubeBackend {
    pub(super) async fn record_event_async(
        &self,
        note: &EventNote,
        instance: &str,
        reporter: &str,
    ) -> Result<(), BackendError> {
        let api: Api<Event> = Api::namespaced(self.api_client()?, &note.namespace);
        let (name, generate_name) = match &note.dedupe {
            // One name per transition: recorded once, whoever finds it again.
            Some(key) => {
                let digest = Sha256::digest(
                    format!("{instance}\0{}\0{}\0{key}", note.namespace, note.name).as_bytes(),
                );
                (
                    Some(format!(
                        "{}.relayctl.{}",
                        note.name,
                        hex::encode(&digest[..8])
                    )),
                    None,
                )
            }
            // A trailing `-` is the one character a prefix may end with.
            None => (None, Some(format!("{}.relayctl-", note.name))),
        };
        let event = Event {
            metadata: ObjectMeta {
                name,
                generate_name,
                namespace: Some(note.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
                    (LABEL_INSTANCE.to_owned(), instance.to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
            reporting_instance: Some(reporter.chars().take(128).collect()),
            action: Some(note.reason.action().to_owned()),
            reason: Some(note.reason.as_str().to_owned()),
            type_: Some(
                if note.reason.warning() {
                    "Warning"
                } else {
                    "Normal"
                }
                .to_owned(),
            ),
            note: Some(note.note.clone()),
            regarding: Some(ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Secret".to_owned()),
                namespace: Some(note.namespace.clone()),
                name: Some(note.name.clone()),
                ..ObjectReference::default()
            }),
            ..Event::default()
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match self
            .call(self.deadline(), || api.create(&params, &event))
            .await
        {
            Ok(_) => Ok(()),
            // Recorded before (by this run's predecessor): nothing new.
            Err(CallError::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(self.fail(
                format!(
                    "recording a `{}` Event on Secret `{}/{}` of cluster `{}`",
                    note.reason.as_str(),
                    note.namespace,
                    note.name,
                    self.cluster
                ),
                e,
            )),
        }
    }

    pub(super) async fn read_status_async(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, BackendError> {
        let api: Api<ConfigMap> = Api::namespaced(self.api_client()?, namespace);
        self.call(self.deadline(), || api.get_opt(name))
            .await
            .map(|found| found.map(|c| c.data.unwrap_or_default()))
            .map_err(|e| {
                self.fail(
                    format!(
                        "reading the status ConfigMap `{namespace}/{name}` of cluster `{}`",
                        self.cluster
                    ),
                    e,
                )
            })
    }

    pub(super) async fn write_status_async(
        &self,
        namespace: &str,
        name: &str,
        instance: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        self.ensure_namespace(namespace).await?;
        let api: Api<ConfigMap> = Api::namespaced(self.api_client()?, namespace);
        let object = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([
                    (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
                    (LABEL_INSTANCE.to_owned(), instance.to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            data: Some(data.clone()),
            ..ConfigMap::default()
        };
        let mut value = serde_json::to_value(&object).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".to_owned(), "v1".into());
            map.insert("kind".to_owned(), "ConfigMap".into());
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&value);
        self.call(self.deadline(), || api.patch(name, &params, &patch))
            .await
            .map(|_| ())
            .map_err(|e| {
                self.fail(
                    format!(
                        "writing the status ConfigMap `{namespace}/{name}` of cluster `{}`",
                        self.cluster
                    ),
                    e,
                )
            })
    }
}
