//! The CLI end to end on the directory backend (the embedded default): every
//! example converges and stays converged, drift is planned with a reason and
//! repaired, outputs are snapshotted, saved plans, ownership, pruning, the
//! lock, exit codes — and no key or token ever appears in any output.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

mod support;

use relayctl::backend::Backend as _;
use relayctl::observed::SecretObject;
use relayctl::secret::SecretBytes;
use support::{Fixture, walk};

fn data(secret: &SecretObject, key: &str) -> Vec<u8> {
    secret.get(key).unwrap().expose().to_vec()
}

const SCENARIOS: [&str; 5] = [
    "managed",
    "managed-preprovisioned",
    "gloo",
    "custom",
    "external",
];

#[test]
fn every_example_converges_and_the_next_plan_shows_no_changes() {
    for scenario in SCENARIOS {
        let fixture = Fixture::example(scenario);
        let (code, run) = fixture.plan_code();
        assert_eq!(
            code, 2,
            "{scenario}: a fresh plan has changes\n{}{}",
            run.stdout, run.stderr
        );
        fixture.apply();
        let (code, run) = fixture.plan_code();
        assert_eq!(
            code, 0,
            "{scenario}: not converged\n{}{}",
            run.stdout, run.stderr
        );
        assert!(run.stdout.contains("No changes"), "{scenario}");
        // Each workload has the mgmt root and, with tokens, the mgmt token.
        let mgmt_root = fixture.secret("mgmt", "relay-root-tls-secret");
        for cluster in ["cluster-1", "cluster-2"] {
            let root = fixture.secret(cluster, "relay-root-tls-secret").unwrap();
            assert!(
                root.get("tls.key").is_none(),
                "{scenario}: a workload got the root key"
            );
            if let Some(mgmt_root) = &mgmt_root {
                assert_eq!(
                    data(&root, "ca.crt"),
                    data(mgmt_root, "ca.crt"),
                    "{scenario}"
                );
            }
            if scenario != "external" {
                assert_eq!(
                    data(
                        &fixture
                            .secret(cluster, "relay-identity-token-secret")
                            .unwrap(),
                        "token"
                    ),
                    data(
                        &fixture
                            .secret("mgmt", "relay-identity-token-secret")
                            .unwrap(),
                        "token"
                    ),
                    "{scenario}"
                );
            }
        }
        fixture.assert_no_leak(&[]);
    }
}

#[test]
fn the_secret_catalogue_matches_each_mode() {
    let expect: [(&str, &[&str], &[&str]); 5] = [
        (
            "managed",
            &[
                "relay-root-tls-secret",
                "relay-tls-signing-secret",
                "relay-server-tls-secret",
                "relay-identity-token-secret",
                "relayctl-prod-inventory",
            ],
            &["relay-root-tls-secret", "relay-identity-token-secret"],
        ),
        (
            "managed-preprovisioned",
            &[
                "relay-root-tls-secret",
                "relay-tls-signing-secret",
                "relay-server-tls-secret",
                "relay-identity-token-secret",
                "relayctl-prod-inventory",
            ],
            &[
                "relay-root-tls-secret",
                "relay-identity-token-secret",
                "relay-client-tls-secret",
            ],
        ),
        (
            "gloo",
            &[
                "relay-root-tls-secret",
                "relay-tls-signing-secret",
                "relay-identity-token-secret",
                "relayctl-prod-inventory",
            ],
            &["relay-root-tls-secret", "relay-identity-token-secret"],
        ),
        (
            "custom",
            &[
                "relay-root-tls-secret",
                "relay-tls-signing-secret",
                "relay-server-tls-secret",
                "relay-identity-token-secret",
                "relayctl-prod-inventory",
            ],
            &["relay-root-tls-secret", "relay-identity-token-secret"],
        ),
        (
            "external",
            &["relay-server-tls-secret", "relayctl-prod-inventory"],
            &["relay-root-tls-secret", "relay-client-tls-secret"],
        ),
    ];
    for (scenario, mgmt, workload) in expect {
        let fixture = Fixture::example(scenario);
        fixture.apply();
        let names = |cluster: &str| -> Vec<String> {
            let mut v: Vec<String> = walk(&fixture.state().join(cluster).join("gloo-mesh"))
                .iter()
                .map(|p| p.file_stem().unwrap().to_str().unwrap().to_owned())
                .collect();
            v.sort();
            v
        };
        let sorted = |s: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = s.iter().map(|x| (*x).to_owned()).collect();
            v.sort();
            v
        };
        assert_eq!(names("mgmt"), sorted(mgmt), "{scenario} mgmt");
        assert_eq!(names("cluster-1"), sorted(workload), "{scenario} cluster-1");
        // Data keys are exact.
        if let Some(root) = fixture
            .secret("mgmt", "relay-root-tls-secret")
            .filter(|_| scenario == "managed")
        {
            assert_eq!(root.data.keys().collect::<Vec<_>>(), ["ca.crt", "tls.key"]);
        }
        if scenario == "custom" {
            let root = fixture.secret("mgmt", "relay-root-tls-secret").unwrap();
            assert_eq!(
                root.data.keys().collect::<Vec<_>>(),
                ["ca.crt"],
                "custom keeps the root key out of the cluster"
            );
        }
        for (cluster, name) in [
            ("mgmt", "relay-server-tls-secret"),
            ("cluster-1", "relay-client-tls-secret"),
            ("mgmt", "relay-tls-signing-secret"),
        ] {
            if let Some(s) = fixture.secret(cluster, name) {
                assert_eq!(
                    s.data.keys().collect::<Vec<_>>(),
                    ["ca.crt", "tls.crt", "tls.key"],
                    "{scenario} {name}"
                );
            }
        }
        // Ownership labels and annotations on everything relayctl wrote.
        let server = fixture.secret("mgmt", "relayctl-prod-inventory").unwrap();
        assert_eq!(
            server.labels.get("app.kubernetes.io/managed-by").unwrap(),
            "relayctl"
        );
        assert_eq!(server.labels.get("relayctl.dev/instance").unwrap(), "prod");
        assert!(
            server
                .annotations
                .get("relayctl.dev/config-digest")
                .unwrap()
                .starts_with("sha256:")
        );
        assert_eq!(
            server.annotations.get("relayctl.dev/source").unwrap(),
            "config"
        );
        if let Some(server) = fixture.secret("mgmt", "relay-server-tls-secret") {
            assert!(server.annotations.contains_key("relayctl.dev/cert-sha256"));
            assert!(
                server
                    .annotations
                    .contains_key("relayctl.dev/cert-not-after")
            );
        }
    }
}

#[test]
fn ca_material_is_never_regenerated() {
    let fixture = Fixture::example("managed-preprovisioned");
    fixture.apply();
    let root = std::fs::read(fixture.file("mgmt", "relay-root-tls-secret")).unwrap();
    let signing = std::fs::read(fixture.file("mgmt", "relay-tls-signing-secret")).unwrap();
    for _ in 0..3 {
        fixture.run(&["apply", "config", "--auto-approve"]);
    }
    assert_eq!(
        std::fs::read(fixture.file("mgmt", "relay-root-tls-secret")).unwrap(),
        root
    );
    assert_eq!(
        std::fs::read(fixture.file("mgmt", "relay-tls-signing-secret")).unwrap(),
        signing
    );
}

/// A managed config with preprovisioned client certs and fast ECDSA keys.
fn preprovisioned() -> Fixture {
    let fixture = Fixture::example("managed-preprovisioned");
    let trust = std::fs::read_to_string(fixture.config().join("relay-trust.yaml"))
        .unwrap()
        .replace("rsa-4096", "ecdsa-p256");
    fixture.write_config("relay-trust.yaml", &trust);
    fixture.apply();
    fixture
}

fn drift(fixture: &Fixture, expected_reason: &str) {
    let (code, run) = fixture.plan_code();
    assert_eq!(code, 2, "drift not detected:\n{}", run.stdout);
    assert!(
        run.stdout.contains(expected_reason),
        "expected `{expected_reason}` in:\n{}",
        run.stdout
    );
    fixture.apply();
    let (code, run) = fixture.plan_code();
    assert_eq!(code, 0, "drift not repaired:\n{}", run.stdout);
}

#[test]
fn drift_deleted_secret_is_recreated() {
    let fixture = preprovisioned();
    std::fs::remove_file(fixture.file("cluster-2", "relay-root-tls-secret")).unwrap();
    drift(
        &fixture,
        "+ gloo-mesh/relay-root-tls-secret  create: missing",
    );
}

#[test]
fn drift_token_differing_from_mgmt_is_repaired() {
    let fixture = preprovisioned();
    let mut token = fixture
        .secret("cluster-1", "relay-identity-token-secret")
        .unwrap();
    token.data.insert(
        "token".into(),
        SecretBytes::from("not-the-mgmt-token".to_owned()),
    );
    fixture.put("cluster-1", token);
    drift(&fixture, "token differs from mgmt");
}

#[test]
fn drift_client_cert_with_wrong_san_is_reissued() {
    let fixture = preprovisioned();
    let mut other = fixture
        .secret("cluster-2", "relay-client-tls-secret")
        .unwrap();
    other.namespace = "gloo-mesh".into();
    fixture.put("cluster-1", other);
    drift(&fixture, "SAN is cluster-2, want cluster-1");
    let fixed = fixture
        .secret("cluster-1", "relay-client-tls-secret")
        .unwrap();
    let facts = relayctl::pki::inspect_bundle(fixed.get("tls.crt").unwrap().expose()).unwrap();
    assert_eq!(facts[0].dns_names, ["cluster-1"]);
}

#[test]
fn drift_client_cert_signed_by_another_ca_is_reissued() {
    use relayctl::pki::{self, CaRequest, ClientRequest, Issuer, OsKeySource};
    let fixture = preprovisioned();
    let now = time::OffsetDateTime::now_utc();
    let keys = OsKeySource;
    let root = pki::issue_root(
        &CaRequest {
            common_name: "relay-root-ca".into(),
            validity: relayctl::model::Duration::from_hours(87_600),
            key: Default::default(),
        },
        &keys,
        now,
    )
    .unwrap();
    let int = pki::issue_intermediate(
        &CaRequest {
            common_name: "relay-intermediate-ca".into(),
            validity: relayctl::model::Duration::from_hours(43_800),
            key: Default::default(),
        },
        &Issuer::from_issued(&root).unwrap(),
        &keys,
        now,
    )
    .unwrap();
    let leaf = pki::issue_client(
        &ClientRequest {
            cluster_name: relayctl::model::DnsLabel::parse("cluster-1").unwrap(),
            validity: relayctl::model::Duration::from_hours(100),
            key: Default::default(),
        },
        &Issuer::from_issued(&int).unwrap(),
        &keys,
        now,
    )
    .unwrap();
    let mut secret = fixture
        .secret("cluster-1", "relay-client-tls-secret")
        .unwrap();
    secret.data.insert(
        "tls.crt".into(),
        SecretBytes::new(format!("{}{}", leaf.cert_pem, int.cert_pem).into_bytes()),
    );
    secret
        .data
        .insert("tls.key".into(), leaf.key.to_pkcs8_pem().clone());
    fixture.put("cluster-1", secret);
    drift(&fixture, "not signed by the current intermediate");
}

#[test]
fn drift_key_not_matching_its_cert_is_reissued() {
    let fixture = preprovisioned();
    let other_key = fixture
        .secret("cluster-2", "relay-client-tls-secret")
        .unwrap()
        .get("tls.key")
        .unwrap()
        .clone();
    let mut secret = fixture
        .secret("cluster-1", "relay-client-tls-secret")
        .unwrap();
    secret.data.insert("tls.key".into(), other_key);
    fixture.put("cluster-1", secret);
    drift(&fixture, "`tls.key` does not match `tls.crt`");
}

#[test]
fn drift_workload_root_bundle_differing_from_mgmt_is_repaired() {
    let fixture = preprovisioned();
    let foreign = Fixture::example("managed");
    foreign.apply();
    let mut root = fixture
        .secret("cluster-2", "relay-root-tls-secret")
        .unwrap();
    root.data.insert(
        "ca.crt".into(),
        foreign
            .secret("mgmt", "relay-root-tls-secret")
            .unwrap()
            .get("ca.crt")
            .unwrap()
            .clone(),
    );
    fixture.put("cluster-2", root);
    drift(&fixture, "root bundle differs from mgmt");
}

#[test]
fn unowned_secrets_are_conflicts_left_untouched_unless_adopted() {
    let fixture = Fixture::example("managed");
    // Someone else's root CA, made with the PKI engine, without relayctl's labels.
    use relayctl::pki::{self, CaRequest, OsKeySource};
    let root = pki::issue_root(
        &CaRequest {
            common_name: "pre-existing-root".into(),
            validity: relayctl::model::Duration::from_hours(87_600),
            key: Default::default(),
        },
        &OsKeySource,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let foreign = SecretObject {
        namespace: "gloo-mesh".into(),
        name: "relay-root-tls-secret".into(),
        labels: Default::default(),
        annotations: Default::default(),
        data: relayctl::observed::SmallMap::from_iter([
            (
                "ca.crt".into(),
                SecretBytes::new(root.cert_pem.clone().into_bytes()),
            ),
            ("tls.key".into(), root.key.to_pkcs8_pem().clone()),
        ]),
        version: String::new(),
    };
    fixture.put("mgmt", foreign);
    let before = std::fs::read(fixture.file("mgmt", "relay-root-tls-secret")).unwrap();

    let run = fixture.run(&["apply", "config", "--auto-approve"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(
            "! gloo-mesh/relay-root-tls-secret  conflict: exists and is not managed by relayctl"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("blocked: management cluster `mgmt` has conflicts"),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read(fixture.file("mgmt", "relay-root-tls-secret")).unwrap(),
        before,
        "conflict was written"
    );
    assert!(
        !fixture.file("cluster-1", "relay-root-tls-secret").exists(),
        "workloads got a root while mgmt is in conflict"
    );
    let (code, _) = fixture.plan_code();
    assert_eq!(code, 1, "a conflict is an error for --detailed-exitcode");

    let run = fixture.run(&["apply", "config", "--auto-approve", "--adopt"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("adopt: add relayctl ownership labels"),
        "{}",
        run.stdout
    );
    let adopted = fixture.secret("mgmt", "relay-root-tls-secret").unwrap();
    assert_eq!(
        data(&adopted, "ca.crt"),
        root.cert_pem.as_bytes(),
        "adopting a valid CA keeps it"
    );
    assert_eq!(adopted.labels.get("relayctl.dev/instance").unwrap(), "prod");
    let client_root = fixture
        .secret("cluster-1", "relay-root-tls-secret")
        .unwrap();
    assert_eq!(data(&client_root, "ca.crt"), root.cert_pem.as_bytes());
    assert_eq!(fixture.plan_code().0, 0);
}

#[test]
fn removed_workloads_are_pruned_only_when_asked_and_never_unowned_secrets() {
    let fixture = preprovisioned();
    let unowned = SecretObject {
        namespace: "gloo-mesh".into(),
        name: "someone-elses".into(),
        labels: Default::default(),
        annotations: Default::default(),
        data: relayctl::observed::SmallMap::from_iter([(
            "x".into(),
            SecretBytes::from("y".to_owned()),
        )]),
        version: String::new(),
    };
    fixture.put("cluster-2", unowned);
    std::fs::remove_file(fixture.config().join("cluster-2.yaml")).unwrap();

    let (code, run) = fixture.plan_code();
    assert!(run.stdout.contains("cluster-2 (orphan)"), "{}", run.stdout);
    assert!(
        run.stdout.contains("kept (pruning is off)"),
        "{}",
        run.stdout
    );
    assert_eq!(code, 0, "keeping orphans is not a change\n{}", run.stdout);
    fixture.apply();
    assert!(fixture.file("cluster-2", "relay-root-tls-secret").exists());

    let run = fixture.run(&["apply", "config", "--auto-approve", "--prune"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("- gloo-mesh/relay-root-tls-secret  delete"),
        "{}",
        run.stdout
    );
    assert!(!fixture.file("cluster-2", "relay-root-tls-secret").exists());
    assert!(
        !fixture
            .file("cluster-2", "relay-client-tls-secret")
            .exists()
    );
    assert!(
        fixture.file("cluster-2", "someone-elses").exists(),
        "pruned a Secret relayctl does not own"
    );
    assert!(fixture.file("cluster-1", "relay-root-tls-secret").exists());
    assert_eq!(fixture.plan_code().0, 0);
}

#[test]
fn pruning_never_happens_when_no_workload_remains() {
    let fixture = preprovisioned();
    std::fs::remove_file(fixture.config().join("cluster-1.yaml")).unwrap();
    std::fs::remove_file(fixture.config().join("cluster-2.yaml")).unwrap();
    let run = fixture.run(&["apply", "config", "--auto-approve", "--prune"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("kept, because no workload cluster remains"),
        "{}",
        run.stdout
    );
    assert!(
        fixture
            .file("cluster-1", "relay-client-tls-secret")
            .exists()
    );
}

#[test]
fn saved_plans_apply_and_refuse_when_stale() {
    let fixture = preprovisioned();
    std::fs::remove_file(fixture.file("cluster-1", "relay-identity-token-secret")).unwrap();
    let plan_file = fixture.dir.path().join("plan.json");
    let run = fixture.run(&["plan", "config", "--out", plan_file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let saved = std::fs::read_to_string(&plan_file).unwrap();
    assert!(saved.contains("\"observed\""));
    let run = fixture.run(&["apply", plan_file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        fixture
            .file("cluster-1", "relay-identity-token-secret")
            .exists()
    );

    // A change to any observed object makes the plan stale.
    std::fs::remove_file(fixture.file("cluster-2", "relay-identity-token-secret")).unwrap();
    fixture.run(&["plan", "config", "--out", plan_file.to_str().unwrap()]);
    let mut token = fixture
        .secret("cluster-1", "relay-identity-token-secret")
        .unwrap();
    token
        .data
        .insert("token".into(), SecretBytes::from("moved".to_owned()));
    fixture.put("cluster-1", token);
    let mut root = fixture.secret("mgmt", "relay-server-tls-secret").unwrap();
    root.annotations.insert("touched".into(), "yes".into());
    fixture.put("mgmt", root);
    let run = fixture.run(&["apply", plan_file.to_str().unwrap()]);
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("the saved plan is stale"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("cluster-1: gloo-mesh/relay-identity-token-secret was modified"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("mgmt: gloo-mesh/relay-server-tls-secret was modified"),
        "{}",
        run.stderr
    );
    assert!(
        !fixture
            .file("cluster-2", "relay-identity-token-secret")
            .exists(),
        "a stale plan wrote"
    );
    fixture.assert_no_leak(&[plan_file]);
}

#[test]
fn detailed_exitcode_rolls_up_error_over_changes_over_none() {
    let fixture = preprovisioned();
    assert_eq!(fixture.plan_code().0, 0);
    std::fs::remove_file(fixture.file("cluster-1", "relay-root-tls-secret")).unwrap();
    assert_eq!(fixture.plan_code().0, 2);
    // cluster-2 becomes unreadable: error wins over changes, and the other
    // clusters are still planned.
    let bad = fixture.file("cluster-2", "relay-root-tls-secret");
    std::fs::write(&bad, "not: [a secret").unwrap();
    let (code, run) = fixture.plan_code();
    assert_eq!(code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("cluster-2 (workload)\n  × unreadable"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("+ gloo-mesh/relay-root-tls-secret  create: missing"),
        "{}",
        run.stdout
    );
    // apply converges what it can and exits 1.
    let run = fixture.run(&["apply", "config", "--auto-approve"]);
    assert_eq!(run.code, 1);
    assert!(
        fixture.file("cluster-1", "relay-root-tls-secret").exists(),
        "a broken cluster stopped the others"
    );
    // Without --detailed-exitcode a plan with changes exits 0.
    std::fs::remove_file(&bad).unwrap();
    std::fs::remove_file(fixture.file("cluster-1", "relay-root-tls-secret")).unwrap();
    assert_eq!(fixture.run(&["plan", "config"]).code, 0);
}

#[test]
fn apply_asks_for_confirmation_and_never_writes_without_it() {
    let fixture = Fixture::example("managed");
    let run = fixture.run(&["apply", "config"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--auto-approve"), "{}", run.stderr);
    assert!(
        !fixture.state().join("mgmt/gloo-mesh").exists(),
        "wrote without confirmation"
    );
}

#[test]
fn a_second_apply_waits_for_the_lock_then_names_the_holder() {
    let fixture = Fixture::example("managed");
    let held = fixture
        .backend("mgmt")
        .lock(
            "gloo-mesh",
            "prod",
            "ci-job-42",
            std::time::Duration::from_secs(1),
        )
        .unwrap();
    let started = std::time::Instant::now();
    let run = fixture.run(&["apply", "config", "--auto-approve", "--lock-timeout", "1s"]);
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(run.code, 4, "a held lock is the environment's");
    assert!(run.stderr.contains("ci-job-42"), "{}", run.stderr);
    drop(held);
    fixture.apply();
}

#[test]
fn state_files_are_private_kubernetes_secrets() {
    use std::os::unix::fs::PermissionsExt as _;
    let fixture = Fixture::example("managed");
    fixture.apply();
    let file = fixture.file("mgmt", "relay-root-tls-secret");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("apiVersion: v1")
            && text.contains("kind: Secret")
            && text.contains("namespace: gloo-mesh")
    );
    assert!(
        !text.contains("BEGIN"),
        "data must be base64, as in a Kubernetes Secret"
    );
}

#[test]
fn invalid_config_exits_1_and_writes_nothing() {
    let fixture = Fixture::example("managed");
    let trust = std::fs::read_to_string(fixture.config().join("relay-trust.yaml"))
        .unwrap()
        .replace("validity: 8760h", "validity: 365d");
    fixture.write_config("relay-trust.yaml", &trust);
    for args in [
        &["plan", "config"][..],
        &["apply", "config", "--auto-approve"],
        &["validate", "config"],
    ] {
        let run = fixture.run(args);
        assert_eq!(run.code, 1, "{args:?}");
        assert!(
            run.stderr.contains("relay-trust.yaml:") && run.stderr.contains("spec.server.validity"),
            "{}",
            run.stderr
        );
    }
    assert!(!fixture.state().exists());
}

/// Volatile parts of plan output: fingerprints, serials, dates, temp paths.
fn redact(text: &str) -> String {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"serial [0-9a-f:]+", "serial [SERIAL]");
    settings.add_filter(r"sha256 [0-9a-f]{16}", "sha256 [FP]");
    settings.add_filter(r"sha256:[0-9a-f]{12}", "sha256:[DIGEST]");
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]");
    settings.add_filter(r#""(serial|sha256|notAfter|configDigest|digest|publicKeySha256|observedVersion)": "[^"]*""#, "\"$1\": \"[REDACTED]\"");
    settings.add_filter(r"public key sha256 [0-9a-f]{16}", "public key sha256 [FP]");
    settings.bind(|| text.to_owned())
}

#[test]
fn plan_outputs_are_stable() {
    let fixture = Fixture::example("managed-preprovisioned");
    let trust = std::fs::read_to_string(fixture.config().join("relay-trust.yaml"))
        .unwrap()
        .replace("rsa-4096", "ecdsa-p256");
    fixture.write_config("relay-trust.yaml", &trust);
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"serial [0-9a-f:]+", "serial [SERIAL]");
    settings.add_filter(r"sha256 [0-9a-f]{16}", "sha256 [FP]");
    settings.add_filter(r"sha256:[0-9a-f]{12}", "sha256:[DIGEST]");
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]");
    settings.add_filter(r#""(serial|sha256|notAfter|configDigest|digest|publicKeySha256|observedVersion)": "[^"]*""#, "\"$1\": \"[REDACTED]\"");
    settings.bind(|| {
        insta::assert_snapshot!("plan_text_fresh", fixture.run(&["plan", "config"]).stdout);
        insta::assert_snapshot!(
            "plan_markdown_fresh",
            fixture.run(&["plan", "config", "-o", "markdown"]).stdout
        );
        fixture.apply();
        std::fs::remove_file(fixture.file("cluster-1", "relay-identity-token-secret")).unwrap();
        let mut token = fixture
            .secret("cluster-2", "relay-identity-token-secret")
            .unwrap();
        token
            .data
            .insert("token".into(), SecretBytes::from("drifted".to_owned()));
        fixture.put("cluster-2", token);
        insta::assert_snapshot!("plan_text_drift", fixture.run(&["plan", "config"]).stdout);
        insta::assert_snapshot!(
            "plan_json_drift",
            fixture.run(&["plan", "config", "-o", "json"]).stdout
        );
    });
    let _ = redact("");
    fixture.assert_no_leak(&[]);
}

#[test]
fn markdown_stays_under_the_comment_limit_and_says_when_truncated() {
    let fixture = Fixture::example("managed");
    for i in 3..=400 {
        fixture.write_config(&format!("cluster-{i}.yaml"), &format!("apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata:\n  name: cluster-{i}\n"));
    }
    let run = fixture.run(&["plan", "config", "-o", "markdown"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.chars().count() <= relayctl::plan::render::MARKDOWN_LIMIT,
        "{} chars",
        run.stdout.len()
    );
    assert!(
        run.stdout.contains("**Truncated:**"),
        "no truncation notice"
    );
    assert!(
        run.stdout.contains("Plan: 805 to create"),
        "the summary counts the whole fleet"
    );
}

#[test]
fn json_plan_is_versioned_and_parseable() {
    let fixture = Fixture::example("managed");
    let run = fixture.run(&["plan", "config", "-o", "json"]);
    let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(value["formatVersion"], 1);
    assert_eq!(value["clusters"][0]["name"], "mgmt");
    assert_eq!(value["clusters"][0]["changes"][0]["action"], "create");
    assert_eq!(value["summary"]["create"], 9);
}

#[test]
fn secrets_never_reach_any_output() {
    // Every command and output format over two scenarios, including errors.
    for scenario in ["managed-preprovisioned", "custom"] {
        let fixture = Fixture::example(scenario);
        fixture.apply();
        let plan_file = fixture.dir.path().join("p.json");
        for args in [
            &["plan", "config", "--show-unchanged"][..],
            &["plan", "config", "-o", "json", "--show-unchanged"],
            &["plan", "config", "-o", "markdown"],
            &["plan", "config", "--out", plan_file.to_str().unwrap()],
            &["apply", "config", "--auto-approve", "-v"],
            &["validate", "config"],
        ] {
            fixture.run(args);
        }
        // Error paths: a corrupt secret and an unreadable key.
        let mut token = fixture
            .secret("cluster-1", "relay-identity-token-secret")
            .unwrap();
        token
            .data
            .insert("token".into(), SecretBytes::from("x".to_owned()));
        fixture.put("cluster-1", token);
        fixture.run(&["plan", "config", "-o", "json"]);
        fixture.run(&["apply", "config", "--auto-approve"]);
        fixture.assert_no_leak(&[plan_file]);
        // The material the user brought never leaks either.
        if scenario == "custom" {
            let key = std::fs::read_to_string(fixture.config().join("material/root.key")).unwrap();
            for line in key.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!fixture.transcript.borrow().contains(line));
            }
        }
    }
}

#[test]
fn two_clusters_on_the_same_storage_are_refused_before_anything_is_written() {
    let fixture = Fixture::example("managed");
    let shared = fixture.state().join("shared");
    for (file, kind, name) in [
        ("mgmt.yaml", "ManagementCluster", "mgmt"),
        ("cluster-1.yaml", "WorkloadCluster", "mgmt-agent"),
    ] {
        fixture.write_config(
            file,
            &format!("apiVersion: relayctl.dev/v1alpha1\nkind: {kind}\nmetadata: {{ name: {name} }}\nspec:\n  connection: {{ directory: {{ path: {} }} }}\n", shared.display()),
        );
    }
    for args in [
        &["plan", "config"][..],
        &["apply", "config", "--auto-approve"],
        &["check", "config"],
    ] {
        let run = fixture.run(args);
        assert_eq!(run.code, 1, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr
                .contains("clusters `mgmt` and `mgmt-agent` are the same cluster"),
            "{}",
            run.stderr
        );
    }
    assert!(!shared.exists(), "wrote to a shared target");
}

#[test]
fn a_renamed_cluster_is_not_pruned_as_an_orphan() {
    let fixture = Fixture::example("managed");
    let physical = fixture.state().join("physical-a");
    let trust = std::fs::read_to_string(fixture.config().join("relay-trust.yaml"))
        .unwrap()
        .replace("prune: false", "prune: true");
    fixture.write_config("relay-trust.yaml", &trust);
    fixture.write_config("cluster-1.yaml", &format!("apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata: {{ name: cluster-1 }}\nspec:\n  connection: {{ directory: {{ path: {} }} }}\n", physical.display()));
    fixture.apply();
    let root = physical.join("gloo-mesh/relay-root-tls-secret.yaml");
    assert!(root.exists());
    std::fs::remove_file(fixture.config().join("cluster-1.yaml")).unwrap();
    fixture.write_config("cluster-one.yaml", &format!("apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata: {{ name: cluster-one }}\nspec:\n  connection: {{ directory: {{ path: {} }} }}\n", physical.display()));
    let run = fixture.apply();
    assert!(
        run.stderr
            .contains("`cluster-1` left the inventory: it is the same cluster as `cluster-one`"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("- gloo-mesh/"), "{}", run.stdout);
    assert!(root.exists(), "the renamed cluster's Secrets were pruned");
    assert_eq!(fixture.plan_code().0, 0);
}

#[test]
fn a_root_whose_key_is_lost_is_an_error_never_silently_replaced() {
    for adopt in [false, true] {
        let fixture = Fixture::example("managed");
        fixture.apply();
        let mut root = fixture.secret("mgmt", "relay-root-tls-secret").unwrap();
        root.data.remove("tls.key");
        if adopt {
            root.labels.clear();
        }
        fixture.put("mgmt", root);
        let before = std::fs::read(fixture.file("mgmt", "relay-root-tls-secret")).unwrap();
        let mut args = vec!["apply", "config", "--auto-approve"];
        if adopt {
            args.push("--adopt");
        }
        let run = fixture.run(&args);
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stdout
                .contains("relayctl never replaces an existing root CA on its own"),
            "{}",
            run.stdout
        );
        assert_eq!(
            std::fs::read(fixture.file("mgmt", "relay-root-tls-secret")).unwrap(),
            before
        );
    }
}

#[test]
fn a_certificate_that_would_outlive_its_issuer_is_an_error_on_that_secret_only() {
    // The root lives 20000h; a fresh intermediate would need 43800h.
    let fixture = Fixture::example("managed");
    let trust = std::fs::read_to_string(fixture.config().join("relay-trust.yaml")).unwrap();
    fixture.write_config("relay-trust.yaml", &trust);
    fixture.apply();
    use relayctl::pki::{self, CaRequest, OsKeySource};
    let short = pki::issue_root(
        &CaRequest {
            common_name: "relay-root-ca".into(),
            validity: relayctl::model::Duration::from_hours(20_000),
            key: Default::default(),
        },
        &OsKeySource,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let mut root = fixture.secret("mgmt", "relay-root-tls-secret").unwrap();
    root.data.insert(
        "ca.crt".into(),
        SecretBytes::new(short.cert_pem.clone().into_bytes()),
    );
    root.data
        .insert("tls.key".into(), short.key.to_pkcs8_pem().clone());
    fixture.put("mgmt", root);
    let (code, run) = fixture.plan_code();
    assert_eq!(code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("would outlive its issuer `CN=relay-root-ca`"),
        "{}",
        run.stdout
    );
    assert!(!run.stderr.contains("planning failed"), "{}", run.stderr);
}

#[test]
fn a_saved_plan_is_stale_when_the_material_it_was_made_with_changed() {
    let fixture = Fixture::example("managed");
    let trust = std::fs::read_to_string(fixture.config().join("relay-trust.yaml"))
        .unwrap()
        .replace(
            "identityToken: { enabled: true }",
            "identityToken: { enabled: true, value: { file: token.txt } }",
        );
    fixture.write_config("relay-trust.yaml", &trust);
    fixture.write_config("token.txt", &"0123456789abcdef".repeat(4));
    let plan_file = fixture.dir.path().join("p.json");
    let run = fixture.run(&["plan", "config", "--out", plan_file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    fixture.write_config("token.txt", &"fedcba9876543210".repeat(4));
    let run = fixture.run(&["apply", plan_file.to_str().unwrap()]);
    assert_eq!(
        run.code, 4,
        "a stale plan is the environment's: {}{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr
            .contains("material `identityToken.value` changed since the plan was made"),
        "{}",
        run.stderr
    );
    assert!(
        !fixture.state().join("mgmt").join("gloo-mesh").exists(),
        "a stale plan wrote"
    );
    let saved = std::fs::read_to_string(&plan_file).unwrap();
    assert!(
        !saved.contains(&"0123456789abcdef".repeat(4)),
        "the saved plan holds the token"
    );
    assert!(
        !fixture
            .transcript
            .borrow()
            .contains(&"0123456789abcdef".repeat(4))
    );
}

#[test]
fn secret_sources_are_read_from_their_own_namespace() {
    let fixture = Fixture::example("managed");
    let trust = std::fs::read_to_string(fixture.config().join("relay-trust.yaml")).unwrap().replace(
        "identityToken: { enabled: true }",
        "identityToken: { enabled: true, value: { secret: { cluster: mgmt, namespace: vault-sync, name: relay-token, key: token } } }",
    );
    fixture.write_config("relay-trust.yaml", &trust);
    let token = "a1b2c3d4e5f60718".repeat(4);
    let backend = fixture.backend("mgmt");
    backend
        .write(&relayctl::plan::Write {
            action: relayctl::plan::Action::Create,
            object: SecretObject {
                namespace: "vault-sync".into(),
                name: "relay-token".into(),
                labels: Default::default(),
                annotations: Default::default(),
                data: relayctl::observed::SmallMap::from_iter([(
                    "token".into(),
                    SecretBytes::from(token.clone()),
                )]),
                version: String::new(),
            },
            precondition: None,
            chained: false,
        })
        .unwrap();
    fixture.apply();
    for cluster in ["mgmt", "cluster-1", "cluster-2"] {
        assert_eq!(
            data(
                &fixture
                    .secret(cluster, "relay-identity-token-secret")
                    .unwrap(),
                "token"
            ),
            token.as_bytes(),
            "{cluster}"
        );
    }
    assert!(!fixture.transcript.borrow().contains(&token));
    assert_eq!(fixture.plan_code().0, 0);
}

#[test]
fn registration_writes_a_kubernetes_cluster_per_workload_and_prunes_its_own() {
    let fixture = Fixture::example("managed");
    let trust = std::fs::read_to_string(fixture.config().join("relay-trust.yaml"))
        .unwrap()
        .replace("prune: false", "prune: true")
        .replacen(
            "\nspec:\n",
            "\nspec:\n  registration: { enabled: true }\n",
            1,
        );
    fixture.write_config("relay-trust.yaml", &trust);
    let (code, run) = fixture.plan_code();
    assert_eq!(code, 2, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("+ gloo-mesh/KubernetesCluster/cluster-1  create: missing"),
        "{}",
        run.stdout
    );
    fixture.apply();
    let registration = fixture
        .state()
        .join("mgmt/gloo-mesh/kubernetesclusters/cluster-2.yaml");
    let text = std::fs::read_to_string(&registration).unwrap();
    assert!(
        text.contains("kind: KubernetesCluster")
            && text.contains("apiVersion: admin.gloo.solo.io/v2")
            && text.contains("clusterDomain: cluster.local")
            && text.contains("relayctl.dev/instance: prod"),
        "{text}"
    );
    assert_eq!(fixture.plan_code().0, 0, "converged");
    let check = fixture.run(&["check", "config", "-v"]);
    assert!(
        check
            .stdout
            .contains("√ registered with the management server (KubernetesCluster `cluster-1`)"),
        "{}",
        check.stdout
    );
    // A cluster registered by someone else is left alone; cluster-2 leaves
    // the config and its registration is pruned with its Secrets.
    std::fs::remove_file(fixture.config().join("cluster-2.yaml")).unwrap();
    let run = fixture.apply();
    assert!(
        run.stdout
            .contains("- gloo-mesh/KubernetesCluster/cluster-2  delete: orphan"),
        "{}",
        run.stdout
    );
    assert!(!registration.exists());
    fixture.assert_no_leak(&[]);
}
