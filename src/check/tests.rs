//! `check` against observed fleets built from plans: what each line says.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::*;
use crate::model::{ClusterName, TrustConfig};
use crate::observed::{ClusterObservation, Observed};
use crate::pki;
use crate::relay::RelaySecret;
use crate::secret::SecretBytes;

const ROOT: &str = RelaySecret::Root.name();
const SIGNING: &str = RelaySecret::Signing.name();
const SERVER: &str = RelaySecret::Server.name();
const TOKEN_SECRET: &str = RelaySecret::Token.name();
const CLIENT: &str = RelaySecret::Client.name();

/// `check` with the OS key source (the probes of a rotation's matrix).
fn check(config: &TrustConfig, observed: &Observed, now: OffsetDateTime) -> Report {
    super::check(config, observed, &pki::OsKeySource, now)
}
use crate::config::{ManifestFile, validate};
use crate::material::Material;
use crate::plan::{PlanInput, Randomness};

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn now() -> OffsetDateTime {
    time::macros::datetime!(2030-01-01 00:00 UTC)
}

fn config(client_mode: &str) -> TrustConfig {
    let text = format!(
        "apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata: {{ name: prod }}\nspec:\n  clientCerts: {{ mode: {client_mode}, validity: 2160h, renewBefore: 720h }}\n---\napiVersion: relayctl.dev/v1alpha1\nkind: ManagementCluster\nmetadata: {{ name: mgmt }}\n---\napiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata: {{ name: cluster-1 }}\n---\napiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata: {{ name: cluster-2 }}\n"
    );
    validate(
        &[ManifestFile {
            path: "fleet.yaml".into(),
            text,
        }],
        std::path::Path::new(""),
    )
    .unwrap_or_else(|d| panic!("{d:?}"))
}

/// What the clusters hold after `apply` of a fresh plan.
fn converged(config: &TrustConfig) -> Observed {
    let empty = Observed {
        clusters: config
            .clusters()
            .map(|c| (c.name.clone(), Ok(ClusterObservation::default())))
            .collect(),
    };
    let token = || SecretBytes::from(TOKEN.to_owned());
    let planned = crate::plan::plan(&PlanInput {
        config,
        material: &Material::default(),
        observed: &empty,
        orphans: &BTreeMap::new(),
        adopt: false,
        prune: false,
        source: "test",
        now: now(),
        random: Randomness {
            keys: &pki::OsKeySource,
            token: &token,
        },
        workers: &crate::plan::InOrder,
        rotation: Default::default(),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    Observed {
        clusters: planned
            .writes
            .into_iter()
            .map(|cw| {
                let secrets = cw
                    .writes
                    .into_iter()
                    .map(|w| (w.object.name.clone(), w.object))
                    .collect();
                (
                    cw.cluster,
                    Ok(ClusterObservation {
                        secrets,
                        ..ClusterObservation::default()
                    }),
                )
            })
            .collect(),
    }
}

fn cluster<'a>(report: &'a Report, name: &str) -> &'a ClusterReport {
    report
        .clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

fn line<'a>(report: &'a Report, name: &str, id: &str) -> &'a Check {
    cluster(report, name)
        .checks
        .iter()
        .find(|c| c.id.as_str() == id)
        .unwrap_or_else(|| panic!("no {id} on {name}: {report:#?}"))
}

fn obs<'a>(observed: &'a mut Observed, name: &str) -> &'a mut ClusterObservation {
    let name = ClusterName::parse(name).unwrap_or_else(|e| panic!("{e}"));
    match observed.clusters.get_mut(&name) {
        Some(Ok(obs)) => obs,
        _ => panic!("{name} not observed"),
    }
}

fn set(observed: &mut Observed, cluster: &str, secret: &str, key: &str, value: Vec<u8>) {
    obs(observed, cluster)
        .secrets
        .get_mut(secret)
        .unwrap_or_else(|| panic!("no {secret}"))
        .data
        .insert(key.to_owned(), SecretBytes::new(value));
}

#[test]
fn a_converged_preprovisioned_fleet_is_all_ok_with_a_handshake_per_workload() {
    let config = config("preprovisioned");
    let report = check(&config, &converged(&config), now());
    let not_ok: Vec<&Check> = report
        .clusters
        .iter()
        .flat_map(|c| &c.checks)
        .filter(|c| c.status != Status::Ok)
        .collect();
    assert!(not_ok.is_empty(), "{not_ok:#?}");
    assert!(report.passed());
    for name in ["cluster-1", "cluster-2"] {
        let handshake = line(&report, name, "mtls-handshake");
        assert!(handshake.message.contains("succeeded"), "{handshake:?}");
    }
    let ids: Vec<&str> = cluster(&report, "mgmt")
        .checks
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "root-ca",
            "root-ca-key",
            "signing-ca-chain",
            "signing-ca-key",
            "signing-ca-expiry",
            "server-cert-san",
            "server-cert-chain",
            "server-cert-key",
            "server-cert-expiry",
            "server-ca-bundle",
            "token"
        ]
    );
    let ids: Vec<&str> = cluster(&report, "cluster-1")
        .checks
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "root-bundle",
            "token",
            "client-cert-chain",
            "client-cert-san",
            "client-cert-key",
            "client-cert-expiry",
            "mtls-handshake"
        ]
    );
}

#[test]
fn token_mode_before_the_agent_bootstraps_warns_but_passes() {
    let config = config("token");
    let report = check(&config, &converged(&config), now());
    let client = line(&report, "cluster-1", "client-cert");
    assert_eq!(client.status, Status::Warn);
    assert!(
        client.message.contains("not yet bootstrapped"),
        "{client:?}"
    );
    assert_eq!(
        line(&report, "cluster-1", "mtls-handshake").status,
        Status::Warn
    );
    assert_eq!(report.summary.fail, 0);
    assert!(report.passed());
}

#[test]
fn a_preprovisioned_client_cert_that_is_missing_fails() {
    let config = config("preprovisioned");
    let mut observed = converged(&config);
    obs(&mut observed, "cluster-2").secrets.remove(CLIENT);
    let report = check(&config, &observed, now());
    assert_eq!(
        line(&report, "cluster-2", "client-cert").status,
        Status::Fail
    );
    assert!(!report.passed());
}

#[test]
fn a_token_differing_from_mgmt_fails_by_digest() {
    let config = config("preprovisioned");
    let mut observed = converged(&config);
    set(
        &mut observed,
        "cluster-1",
        TOKEN_SECRET,
        "token",
        b"other".to_vec(),
    );
    let report = check(&config, &observed, now());
    let token = line(&report, "cluster-1", "token");
    assert_eq!(token.status, Status::Fail);
    assert_eq!(token.message, "identity token differs from mgmt");
    assert_eq!(line(&report, "cluster-2", "token").status, Status::Ok);
}

#[test]
fn a_root_bundle_differing_from_mgmt_fails_and_so_does_the_handshake() {
    let config = config("preprovisioned");
    let other = converged(&config);
    let mut observed = converged(&config);
    let foreign = match other.clusters.values().next() {
        Some(Ok(mgmt)) => mgmt
            .secrets
            .get(ROOT)
            .unwrap()
            .data
            .get("ca.crt")
            .unwrap()
            .expose()
            .to_vec(),
        _ => panic!("no mgmt"),
    };
    set(&mut observed, "cluster-1", ROOT, "ca.crt", foreign);
    let report = check(&config, &observed, now());
    assert_eq!(
        line(&report, "cluster-1", "root-bundle").status,
        Status::Fail
    );
    let handshake = line(&report, "cluster-1", "mtls-handshake");
    assert_eq!(handshake.status, Status::Fail);
    assert!(
        handshake
            .message
            .contains("the client rejected the handshake"),
        "{handshake:?}"
    );
    assert_eq!(
        line(&report, "cluster-2", "mtls-handshake").status,
        Status::Ok
    );
}

#[test]
fn a_client_cert_with_another_clusters_san_fails() {
    let config = config("preprovisioned");
    let mut observed = converged(&config);
    let theirs = obs(&mut observed, "cluster-2")
        .secrets
        .get(CLIENT)
        .unwrap()
        .clone();
    obs(&mut observed, "cluster-1")
        .secrets
        .insert(CLIENT.to_owned(), theirs);
    let report = check(&config, &observed, now());
    let san = line(&report, "cluster-1", "client-cert-san");
    assert_eq!(san.status, Status::Fail);
    assert_eq!(
        san.message,
        "client certificate SAN is `cluster-2`, want `cluster-1`"
    );
}

#[test]
fn a_key_that_does_not_match_fails_without_showing_the_key() {
    let config = config("preprovisioned");
    let mut observed = converged(&config);
    let server_key = obs(&mut observed, "mgmt")
        .secrets
        .get(SERVER)
        .unwrap()
        .data
        .get("tls.key")
        .unwrap()
        .clone();
    set(
        &mut observed,
        "cluster-1",
        CLIENT,
        "tls.key",
        server_key.expose().to_vec(),
    );
    let report = check(&config, &observed, now());
    assert_eq!(
        line(&report, "cluster-1", "client-cert-key").status,
        Status::Fail
    );
    let shown = format!(
        "{report:?}{}{}",
        render_json(&report),
        render_text(&report, false, true)
    );
    let pem = String::from_utf8_lossy(server_key.expose()).into_owned();
    for body in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!shown.contains(body));
    }
    assert!(!shown.contains(TOKEN));
}

#[test]
fn leaves_warn_under_renew_before_and_fail_once_expired() {
    let config = config("preprovisioned");
    let observed = converged(&config);
    // Client certs: 2160h (90d) validity, renewBefore 720h (30d).
    let report = check(&config, &observed, now() + time::Duration::days(70));
    let expiry = line(&report, "cluster-1", "client-cert-expiry");
    assert_eq!(expiry.status, Status::Warn, "{expiry:?}");
    assert!(
        expiry.message.contains("under renewBefore 720h"),
        "{expiry:?}"
    );
    assert!(expiry.hint.is_some());
    assert!(report.passed(), "warnings do not fail");
    assert_eq!(
        line(&report, "cluster-1", "mtls-handshake").status,
        Status::Ok
    );

    let report = check(&config, &observed, now() + time::Duration::days(91));
    assert_eq!(
        line(&report, "cluster-1", "client-cert-expiry").status,
        Status::Fail
    );
    let handshake = line(&report, "cluster-1", "mtls-handshake");
    assert_eq!(handshake.status, Status::Fail);
    assert!(handshake.message.contains("expired"), "{handshake:?}");
}

#[test]
fn ca_tiers_warn_under_365_and_60_days() {
    let config = config("preprovisioned");
    let observed = converged(&config);
    // Defaults: root 87600h (10y), intermediate 43800h (5y).
    let report = check(&config, &observed, now() + time::Duration::days(3650 - 100));
    assert_eq!(line(&report, "mgmt", "root-ca").status, Status::Warn);
    let report = check(&config, &observed, now() + time::Duration::days(1825 - 30));
    assert_eq!(line(&report, "mgmt", "root-ca").status, Status::Ok);
    let signing = line(&report, "mgmt", "signing-ca-expiry");
    assert_eq!(signing.status, Status::Warn, "{signing:?}");
    assert!(signing.message.contains("under 60 days"), "{signing:?}");
}

#[test]
fn an_unreachable_cluster_fails_and_the_others_are_still_checked() {
    let config = config("preprovisioned");
    let mut observed = converged(&config);
    let name = ClusterName::parse("cluster-2").unwrap_or_else(|e| panic!("{e}"));
    observed
        .clusters
        .insert(name, Err("connection refused".to_owned()));
    let report = check(&config, &observed, now());
    let c2 = &cluster(&report, "cluster-2").checks;
    assert_eq!(c2.len(), 1);
    assert_eq!(c2[0].id, CheckId::Reachable);
    assert_eq!(c2[0].status, Status::Fail);
    assert!(c2[0].message.contains("connection refused"));
    assert_eq!(
        line(&report, "cluster-1", "mtls-handshake").status,
        Status::Ok
    );
    assert!(!report.passed());
}

#[test]
fn an_unreachable_mgmt_leaves_workload_comparisons_as_warnings() {
    let config = config("preprovisioned");
    let mut observed = converged(&config);
    observed
        .clusters
        .insert(config.management.name.clone(), Err("timed out".to_owned()));
    let report = check(&config, &observed, now());
    assert_eq!(line(&report, "mgmt", "reachable").status, Status::Fail);
    assert_eq!(
        line(&report, "cluster-1", "root-bundle").status,
        Status::Warn
    );
    assert_eq!(line(&report, "cluster-1", "token").status, Status::Warn);
    assert_eq!(
        line(&report, "cluster-1", "client-cert-san").status,
        Status::Ok
    );
    assert!(!report.passed());
}

#[test]
fn gloo_mode_warns_while_the_management_server_has_not_written_its_certificate() {
    let mut config = config("token");
    let mut observed = converged(&config);
    config.ca.mode = CaMode::Gloo;
    obs(&mut observed, "mgmt").secrets.remove(SERVER);
    let report = check(&config, &observed, now());
    assert_eq!(line(&report, "mgmt", "server-cert").status, Status::Warn);
    assert_eq!(line(&report, "mgmt", "signing-ca-chain").status, Status::Ok);
    assert!(report.passed());
}

#[test]
fn external_mode_takes_the_root_bundle_from_the_server_secret_and_has_no_token() {
    let mut config = config("preprovisioned");
    let mut observed = converged(&config);
    config.ca.mode = CaMode::External;
    config.identity_token.enabled = false;
    config.client_certs.mode = ClientCertMode::External;
    for name in [ROOT, SIGNING, TOKEN_SECRET] {
        obs(&mut observed, "mgmt").secrets.remove(name);
    }
    for cluster in ["cluster-1", "cluster-2"] {
        obs(&mut observed, cluster).secrets.remove(TOKEN_SECRET);
    }
    let report = check(&config, &observed, now());
    let all: Vec<&Check> = report.clusters.iter().flat_map(|c| &c.checks).collect();
    assert!(all.iter().all(|c| c.status == Status::Ok), "{all:#?}");
    assert!(
        all.iter()
            .all(|c| c.id != CheckId::Token && !c.id.as_str().starts_with("signing"))
    );
    assert_eq!(
        line(&report, "cluster-2", "mtls-handshake").status,
        Status::Ok
    );
}

#[test]
fn text_has_a_marker_per_line_hints_under_problems_and_a_summary() {
    let config = config("token");
    let mut observed = converged(&config);
    set(
        &mut observed,
        "cluster-1",
        TOKEN_SECRET,
        "token",
        b"other".to_vec(),
    );
    let report = check(&config, &observed, now());
    let text = render_text(&report, false, true);
    assert!(!text.contains('\u{1b}'));
    assert!(
        text.contains("mgmt (management)\n  √ root CA `CN=relay-root-ca`"),
        "{text}"
    );
    assert!(
        text.contains("  × identity token differs from mgmt\n    hint: the agent cannot register"),
        "{text}"
    );
    assert!(
        text.contains("  ‼ client certificate not yet bootstrapped"),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "\nCheck failed: {} passed, 4 warnings, 1 failed.\n",
            report.summary.ok
        )),
        "{text}"
    );
    let coloured = render_text(&report, true, true);
    assert!(coloured.contains("\u{1b}[1;31m×\u{1b}[0m"));
}

#[test]
fn json_is_versioned_and_omits_hints_on_ok_lines() {
    let config = config("preprovisioned");
    let report = check(&config, &converged(&config), now());
    let value: serde_json::Value =
        serde_json::from_str(&render_json(&report)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(value["formatVersion"], 1);
    assert_eq!(value["caMode"], "managed");
    assert_eq!(value["clientCertMode"], "preprovisioned");
    assert_eq!(value["clusters"][0]["role"], "management");
    assert_eq!(value["clusters"][1]["checks"][0]["status"], "ok");
    assert!(value["clusters"][1]["checks"][0].get("hint").is_none());
    assert_eq!(value["summary"]["fail"], 0);
    assert_eq!(value["checkedAt"], "2030-01-01T00:00:00Z");
}

/// A client certificate of `lifetime` issued at [`now`] by the fleet's own
/// signing CA, in place of cluster-1's.
fn with_client_lifetime(observed: &mut Observed, lifetime: time::Duration) {
    let signing = match observed
        .clusters
        .get(&ClusterName::parse("mgmt").unwrap_or_else(|e| panic!("{e}")))
    {
        Some(Ok(mgmt)) => mgmt.secrets.get(SIGNING).unwrap().clone(),
        _ => panic!("mgmt observed"),
    };
    let signer = pki::Issuer::new(
        signing.data.get("tls.crt").unwrap().expose(),
        pki::PrivateKey::from_pem(signing.data.get("tls.key").unwrap())
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let seconds = u64::try_from(lifetime.whole_seconds()).unwrap_or(0);
    let issued = pki::issue_client(
        &pki::ClientRequest {
            cluster_name: ClusterName::parse("cluster-1").unwrap_or_else(|e| panic!("{e}")),
            validity: crate::model::Duration::from_secs(seconds),
            key: Default::default(),
        },
        &signer,
        &pki::testing::PooledKeySource,
        now(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let client = obs(observed, "cluster-1")
        .secrets
        .get_mut(CLIENT)
        .unwrap_or_else(|| panic!("a client Secret"));
    client.data.insert(
        "tls.crt".to_owned(),
        SecretBytes::new(format!("{}{}", issued.cert_pem, signer.cert_pem()).into_bytes()),
    );
    client
        .data
        .insert("tls.key".to_owned(), issued.key.to_pkcs8_pem().clone());
}

fn plan_at(config: &TrustConfig, observed: &Observed, at: OffsetDateTime) -> crate::plan::Plan {
    let token = || SecretBytes::from(TOKEN.to_owned());
    crate::plan::plan(&PlanInput {
        config,
        material: &Material::default(),
        observed,
        orphans: &BTreeMap::new(),
        adopt: false,
        prune: false,
        source: "test",
        now: at,
        random: Randomness {
            keys: &pki::testing::PooledKeySource,
            token: &token,
        },
        workers: &crate::plan::InOrder,
        rotation: Default::default(),
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .plan
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// One renewal rule: for any certificate lifetime, `renewBefore` and
    /// instant, `check` warns (or fails) about a client certificate's expiry
    /// exactly when `plan` would reissue it.
    #[test]
    fn check_warns_about_renewal_exactly_when_plan_renews(
        lifetime_hours in 2i64..9000,
        renew_before_hours in 1u64..2159,
        elapsed_permille in 0i64..1_100,
    ) {
        let mut config = config("preprovisioned");
        config.client_certs.renew_before = crate::model::Duration::from_hours(renew_before_hours);
        let mut observed = converged(&config);
        let lifetime = time::Duration::hours(lifetime_hours);
        with_client_lifetime(&mut observed, lifetime);
        let at = now() + lifetime * elapsed_permille as f64 / 1000.0;
        let plan = plan_at(&config, &observed, at);
        let reissued = plan
            .clusters
            .iter()
            .find(|c| c.name == "cluster-1")
            .and_then(|c| c.changes.iter().find(|ch| ch.name == CLIENT))
            .is_some_and(|ch| ch.action == crate::plan::Action::Update);
        let report = check(&config, &observed, at);
        let warned = line(&report, "cluster-1", "client-cert-expiry").status != Status::Ok;
        proptest::prop_assert_eq!(reissued, warned, "at +{}‰ of {}h, renewBefore {}h", elapsed_permille, lifetime_hours, renew_before_hours);
    }
}

/// One SAN rule: a client certificate whose SAN differs from the cluster
/// name only in case names no registered cluster; `plan` reissues it and
/// `check` fails it, for the same reason.
#[test]
fn plan_and_check_agree_on_a_mixed_case_san() {
    let config = config("preprovisioned");
    let mut observed = converged(&config);
    let signing = match observed
        .clusters
        .get(&ClusterName::parse("mgmt").unwrap_or_else(|e| panic!("{e}")))
    {
        Some(Ok(mgmt)) => mgmt.secrets.get(SIGNING).unwrap().clone(),
        _ => panic!("mgmt observed"),
    };
    let signer = pki::Issuer::new(
        signing.data.get("tls.crt").unwrap().expose(),
        pki::PrivateKey::from_pem(signing.data.get("tls.key").unwrap())
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // A leaf for `Cluster-1`, with clientAuth, from the fleet's own signer.
    let issued = pki::issue_server(
        &pki::ServerRequest {
            authority: "Cluster-1".to_owned(),
            dns_names: Vec::new(),
            validity: crate::model::Duration::from_hours(2160),
            key: Default::default(),
        },
        &signer,
        &pki::testing::PooledKeySource,
        now(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let facts =
        pki::inspect_certificate(issued.cert_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(facts.dns_names, ["Cluster-1"], "the SAN keeps its case");
    let client = obs(&mut observed, "cluster-1")
        .secrets
        .get_mut(CLIENT)
        .unwrap_or_else(|| panic!("a client Secret"));
    client.data.insert(
        "tls.crt".to_owned(),
        SecretBytes::new(format!("{}{}", issued.cert_pem, signer.cert_pem()).into_bytes()),
    );
    client
        .data
        .insert("tls.key".to_owned(), issued.key.to_pkcs8_pem().clone());
    let plan = plan_at(&config, &observed, now());
    let change = plan
        .clusters
        .iter()
        .find(|c| c.name == "cluster-1")
        .and_then(|c| c.changes.iter().find(|ch| ch.name == CLIENT))
        .unwrap_or_else(|| panic!("a change"));
    assert_eq!(change.action, crate::plan::Action::Update);
    assert!(
        change
            .reasons
            .iter()
            .any(|r| r == "SAN is Cluster-1, want cluster-1"),
        "{:?}",
        change.reasons
    );
    let report = check(&config, &observed, now());
    let san = line(&report, "cluster-1", "client-cert-san");
    assert_eq!(san.status, Status::Fail, "{san:?}");
    assert!(
        san.message.contains("`Cluster-1`, want `cluster-1`"),
        "{san:?}"
    );
}
