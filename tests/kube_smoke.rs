//! Smoke test of the real-Kubernetes test environment (DESIGN.md §7): the
//! control plane that `relayctl-kube-env` starts is real Kubernetes with
//! separate clusters, certificate authentication and RBAC.
//!
//! Never skips: without binaries, `tools/kube-env/build.sh` builds them; if
//! that fails, every test here fails with the reason.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use relayctl_kube_env::KubeEnv;

/// Apiservers of this binary's shared environment: mgmt, cluster-1, cluster-2.
const APISERVERS: usize = 3;

/// The shared environment, started off the async runtime's thread.
async fn env() -> &'static KubeEnv {
    tokio::task::spawn_blocking(|| KubeEnv::shared(APISERVERS))
        .await
        .expect("start the shared kube-env")
}

async fn client_for(kubeconfig: Kubeconfig, context: &str) -> Client {
    let options = KubeConfigOptions {
        context: Some(context.to_owned()),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap_or_else(|e| panic!("kube config for context `{context}`: {e}"));
    Client::try_from(config).expect("build kube client")
}

async fn client(path: &Path, context: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read kubeconfig");
    client_for(kubeconfig, context).await
}

/// The HTTP status of a failed API call.
fn api_status(error: &kube::Error) -> u16 {
    match error {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error status, got {other:?}"),
    }
}

#[tokio::test]
async fn secret_created_in_cluster_1_reads_back_and_stays_in_cluster_1() {
    let env = env().await;
    assert_eq!(env.contexts(), ["mgmt", "cluster-1", "cluster-2"]);

    let cluster_1: Api<Secret> =
        Api::namespaced(client(env.kubeconfig(), "cluster-1").await, "default");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("smoke".to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "token".to_owned(),
            ByteString(b"not-a-real-token".to_vec()),
        )])),
        ..Secret::default()
    };
    cluster_1
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret default/smoke in cluster-1");

    let read = cluster_1
        .get("smoke")
        .await
        .expect("read Secret default/smoke back from cluster-1");
    assert_eq!(read.data, secret.data);
    assert!(read.metadata.uid.is_some(), "the apiserver assigns a uid");

    // Each apiserver has its own etcd prefix: cluster-2 does not see it.
    let cluster_2: Api<Secret> =
        Api::namespaced(client(env.kubeconfig(), "cluster-2").await, "default");
    let error = cluster_2
        .get("smoke")
        .await
        .expect_err("cluster-2 must not see cluster-1's Secret");
    assert_eq!(api_status(&error), 404);
}

#[tokio::test]
async fn cluster_1_credentials_are_unauthorized_on_cluster_2() {
    let env = env().await;
    // Trust cluster-2's CA (so TLS succeeds) but present cluster-1's admin
    // certificate: cluster-2's apiserver must reject it as unauthenticated.
    let mut kubeconfig = Kubeconfig::read_from(env.kubeconfig()).expect("read kubeconfig");
    let context = kubeconfig
        .contexts
        .iter_mut()
        .find(|c| c.name == "cluster-1")
        .and_then(|c| c.context.as_mut())
        .expect("context cluster-1");
    context.cluster = "cluster-2".to_owned();

    let secrets: Api<Secret> =
        Api::namespaced(client_for(kubeconfig, "cluster-1").await, "default");
    let error = secrets
        .list(&Default::default())
        .await
        .expect_err("cluster-2 must reject cluster-1's admin certificate");
    assert_eq!(api_status(&error), 401, "{error:?}");
}

#[tokio::test]
async fn user_without_rbac_permissions_is_forbidden() {
    let env = env().await;
    let path = env
        .user_kubeconfig("cluster-1", "smoke-nobody", &["smoke-group"])
        .expect("mint a user for cluster-1");

    let secrets: Api<Secret> = Api::namespaced(client(&path, "cluster-1").await, "default");
    let error = secrets
        .list(&Default::default())
        .await
        .expect_err("a user without RBAC permissions must not list Secrets");
    assert_eq!(api_status(&error), 403, "{error:?}");
    let kube::Error::Api(status) = &error else {
        unreachable!()
    };
    assert!(
        status.message.contains("\"smoke-nobody\""),
        "the apiserver names the minted user: {}",
        status.message
    );
}
