//! `relayctl check` end to end on the directory backend: converged fleets are
//! all √ with a passing mTLS handshake per agent, each kind of breakage is a
//! × (or a ‼ for what only needs attention) with a hint, an unreachable
//! cluster fails without hiding the others, exit codes, the text snapshot,
//! the JSON form — and no key or token in any output.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

mod support;

use std::collections::BTreeMap;

use std::process::{Command, Stdio};

use relayctl::model::{DnsLabel, Duration};
use relayctl::observed::SecretObject;
use relayctl::pki::{self, ClientRequest, Issued, Issuer, OsKeySource, PrivateKey, ServerRequest};
use relayctl::secret::SecretBytes;
use support::{Fixture, Run};

const AUTHORITY: &str = "gloo-mesh-mgmt-server.gloo-mesh";

impl Run {
    fn lines_marked(&self, marker: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.trim_start().starts_with(marker))
            .collect()
    }
}

impl Fixture {
    /// `scenario` from `examples/clusters`, with ECDSA keys (fast), applied.
    fn applied(scenario: &str) -> Self {
        let fixture = Fixture::example(scenario);
        let trust = fixture.config().join("relay-trust.yaml");
        let text = std::fs::read_to_string(&trust)
            .unwrap()
            .replace("rsa-4096", "ecdsa-p256");
        std::fs::write(&trust, text).unwrap();
        fixture.apply();
        fixture
    }

    /// `check -v`: every line of every cluster (the default collapses
    /// all-√ clusters to one line; `tests/operations.rs` covers that).
    fn check(&self) -> Run {
        self.run(&["check", "config", "-v"])
    }

    fn set(&self, cluster: &str, name: &str, key: &str, value: SecretBytes) {
        let mut secret = self.secret(cluster, name).unwrap();
        secret.data.insert(key.to_owned(), value);
        self.put(cluster, secret);
    }

    /// The current signing CA, from mgmt's `relay-tls-signing-secret`.
    fn signing(&self) -> Issuer {
        let secret = self.secret("mgmt", "relay-tls-signing-secret").unwrap();
        let key = PrivateKey::from_pem(secret.get("tls.key").unwrap()).unwrap();
        Issuer::new(secret.get("tls.crt").unwrap().expose(), key).unwrap()
    }

    fn root_bundle(&self) -> SecretBytes {
        self.secret("mgmt", "relay-root-tls-secret")
            .unwrap()
            .get("ca.crt")
            .unwrap()
            .clone()
    }

    /// A client certificate for `san` signed by the current intermediate.
    fn client_cert(&self, san: &str, validity: Duration) -> (Issued, Issuer) {
        let signing = self.signing();
        let issued = pki::issue_client(
            &ClientRequest {
                cluster_name: DnsLabel::parse(san).unwrap(),
                validity,
                key: Default::default(),
            },
            &signing,
            &OsKeySource,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        (issued, signing)
    }

    /// Writes `relay-client-tls-secret` on `cluster` as the agent does after
    /// it registered: leaf + intermediate, key, root bundle; not owned by relayctl.
    fn write_client_cert(&self, cluster: &str, issued: &Issued, signing: &Issuer) {
        let data = BTreeMap::from([
            (
                "tls.crt".to_owned(),
                SecretBytes::new(format!("{}{}", issued.cert_pem, signing.cert_pem()).into_bytes()),
            ),
            ("tls.key".to_owned(), issued.key.to_pkcs8_pem().clone()),
            ("ca.crt".to_owned(), self.root_bundle()),
        ]);
        self.put(
            cluster,
            SecretObject {
                namespace: "gloo-mesh".into(),
                name: "relay-client-tls-secret".into(),
                labels: Default::default(),
                annotations: Default::default(),
                data: data.into_iter().collect(),
                version: String::new(),
            },
        );
    }
}

/// The lines of `cluster`'s group in the text output.
fn group<'a>(run: &'a Run, cluster: &str) -> Vec<&'a str> {
    let header = format!("{cluster} (");
    run.stdout
        .lines()
        .skip_while(|l| !l.starts_with(&header))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .collect()
}

fn assert_line(run: &Run, cluster: &str, wanted: &str) {
    assert!(
        group(run, cluster).iter().any(|l| l.contains(wanted)),
        "`{wanted}` not under {cluster}:\n{}",
        run.stdout
    );
}

/// Volatile parts of check output: dates, fingerprints, temp paths.
fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]");
    settings.add_filter(r"sha256 [0-9a-f]{16}", "sha256 [FP]");
    settings.add_filter(r#""sha256": "[0-9a-f]{64}""#, r#""sha256": "[FP]""#);
    settings.add_filter(r"/[^\s`]*/state/", "[STATE]/");
    settings
}

#[test]
fn a_converged_preprovisioned_fleet_is_all_ok_and_every_handshake_passes() {
    let fixture = Fixture::applied("managed-preprovisioned");
    let run = fixture.check();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.lines_marked("‼").is_empty(), "{}", run.stdout);
    assert!(run.lines_marked("×").is_empty(), "{}", run.stdout);
    for cluster in ["cluster-1", "cluster-2"] {
        assert_line(
            &run,
            cluster,
            &format!("√ mTLS handshake with the management server as `{AUTHORITY}` succeeded"),
        );
    }
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("converged_preprovisioned_text", run.stdout);
    });

    let json = fixture.run(&["check", "config", "-o", "json"]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("converged_preprovisioned_json", json.stdout);
    });

    // The default text: one line per all-√ cluster.
    let compact = fixture.run(&["check", "config"]);
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("converged_preprovisioned_compact_text", compact.stdout);
    });
    let prometheus = fixture.run(&["check", "config", "-o", "prometheus"]);
    assert_eq!(prometheus.code, 0, "{}", prometheus.stderr);
    let mut settings = snapshot_settings();
    settings.add_filter(r#"fingerprint="[0-9a-f]{12}""#, r#"fingerprint="[FP]""#);
    settings.add_filter(r"\} \d{10}\n", "} [UNIX TIME]\n");
    settings.add_filter(r"_seconds \d{10}\n", "_seconds [UNIX TIME]\n");
    settings.bind(|| {
        insta::assert_snapshot!("converged_preprovisioned_prometheus", prometheus.stdout);
    });
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["formatVersion"], 1);
    assert_eq!(value["clusters"][0]["name"], "mgmt");
    assert_eq!(value["clusters"][0]["role"], "management");
    assert_eq!(value["summary"]["fail"], 0);
    assert_eq!(value["summary"]["warn"], 0);
    let handshake = value["clusters"][1]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "mtls-handshake")
        .unwrap();
    assert_eq!(handshake["status"], "ok");
    fixture.assert_no_leak(&[]);
}

#[test]
fn a_token_mode_fleet_warns_until_the_agents_bootstrap_then_is_all_ok() {
    let fixture = Fixture::applied("managed");
    let run = fixture.check();
    assert_eq!(run.code, 0, "warnings do not fail:\n{}", run.stdout);
    assert!(run.lines_marked("×").is_empty(), "{}", run.stdout);
    assert_line(
        &run,
        "cluster-1",
        "‼ client certificate not yet bootstrapped: `relay-client-tls-secret` is missing",
    );
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("token_mode_not_bootstrapped_text", run.stdout);
    });

    // Each agent registers and writes its client certificate.
    for cluster in ["cluster-1", "cluster-2"] {
        let (issued, signing) = fixture.client_cert(cluster, Duration::from_hours(8760));
        fixture.write_client_cert(cluster, &issued, &signing);
    }
    let run = fixture.check();
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.lines_marked("‼").is_empty(), "{}", run.stdout);
    assert!(run.lines_marked("×").is_empty(), "{}", run.stdout);
    assert_line(
        &run,
        "cluster-2",
        "√ mTLS handshake with the management server",
    );
    fixture.assert_no_leak(&[]);
}

#[test]
fn a_workload_token_differing_from_mgmt_fails() {
    let fixture = Fixture::applied("managed-preprovisioned");
    fixture.set(
        "cluster-1",
        "relay-identity-token-secret",
        "token",
        SecretBytes::from("not-the-mgmt-token".to_owned()),
    );
    let run = fixture.check();
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_line(&run, "cluster-1", "× identity token differs from mgmt");
    assert_line(&run, "cluster-1", "hint: the agent cannot register");
    assert_line(&run, "cluster-2", "√ identity token matches mgmt");
    assert!(!run.stdout.contains("not-the-mgmt-token"));
    fixture.assert_no_leak(&[]);
}

#[test]
fn a_workload_root_bundle_differing_from_mgmt_fails_and_so_does_the_handshake() {
    let fixture = Fixture::applied("managed-preprovisioned");
    let foreign = Fixture::applied("managed");
    fixture.set(
        "cluster-2",
        "relay-root-tls-secret",
        "ca.crt",
        foreign.root_bundle(),
    );
    let run = fixture.check();
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_line(&run, "cluster-2", "× root bundle differs from mgmt");
    assert_line(
        &run,
        "cluster-2",
        "× mTLS handshake with the management server as `gloo-mesh-mgmt-server.gloo-mesh` failed: the client rejected the handshake: invalid peer certificate",
    );
    // The client cert itself is still signed by mgmt's CA.
    assert_line(
        &run,
        "cluster-2",
        "√ client certificate chains to the root bundle",
    );
    assert_line(&run, "cluster-1", "√ mTLS handshake");
    fixture.assert_no_leak(&[]);
}

#[test]
fn a_client_cert_with_the_wrong_san_fails() {
    let fixture = Fixture::applied("managed-preprovisioned");
    let mut theirs = fixture
        .secret("cluster-2", "relay-client-tls-secret")
        .unwrap();
    theirs.version = String::new();
    fixture.put("cluster-1", theirs);
    let run = fixture.check();
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_line(
        &run,
        "cluster-1",
        "× client certificate SAN is `cluster-2`, want `cluster-1`",
    );
    assert_line(
        &run,
        "cluster-1",
        "hint: the management server takes the agent's identity from the SAN",
    );
    fixture.assert_no_leak(&[]);
}

#[test]
fn an_expiring_client_cert_warns_and_check_still_passes() {
    let fixture = Fixture::applied("managed-preprovisioned");
    // renewBefore is 720h in this example: a 2160h certificate has 48h left
    // 2112h from now, inside it, and `plan` would renew it then too.
    let now = time::OffsetDateTime::now_utc();
    let (issued, signing) = fixture.client_cert("cluster-1", Duration::from_hours(2160));
    fixture.write_client_cert("cluster-1", &issued, &signing);
    let at = relayctl::pki::inspect::rfc3339(now + time::Duration::hours(2112));
    let run = fixture.run(&["check", "config", "-v", "--at", &at]);
    assert_eq!(run.code, 0, "warnings do not fail:\n{}", run.stdout);
    assert_line(&run, "cluster-1", "‼ client certificate expires in 1d23h");
    assert_line(&run, "cluster-1", "under renewBefore 720h");
    assert_line(&run, "cluster-1", "hint: `relayctl plan` shows the repair");
    assert_line(&run, "cluster-1", "√ mTLS handshake");
    assert!(run.lines_marked("×").is_empty(), "{}", run.stdout);
    assert!(run.stdout.contains("Check passed: "), "{}", run.stdout);
    fixture.assert_no_leak(&[]);
}

#[test]
fn a_server_cert_that_misses_the_authority_fails_and_so_does_the_handshake() {
    let fixture = Fixture::applied("managed-preprovisioned");
    let signing = fixture.signing();
    let server = pki::issue_server(
        &ServerRequest {
            authority: "other.example.com".into(),
            dns_names: Vec::new(),
            validity: Duration::from_hours(8760),
            key: Default::default(),
        },
        &signing,
        &OsKeySource,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let mut secret = fixture.secret("mgmt", "relay-server-tls-secret").unwrap();
    secret.data.insert(
        "tls.crt".into(),
        SecretBytes::new(format!("{}{}", server.cert_pem, signing.cert_pem()).into_bytes()),
    );
    secret
        .data
        .insert("tls.key".into(), server.key.to_pkcs8_pem().clone());
    fixture.put("mgmt", secret);
    let run = fixture.check();
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_line(
        &run,
        "mgmt",
        "× server certificate SANs `other.example.com` do not cover the authority `gloo-mesh-mgmt-server.gloo-mesh`",
    );
    assert_line(
        &run,
        "mgmt",
        "√ server certificate chains to the root bundle",
    );
    for cluster in ["cluster-1", "cluster-2"] {
        assert_line(
            &run,
            cluster,
            "failed: the client rejected the handshake: invalid peer certificate: certificate not valid for name",
        );
    }
    fixture.assert_no_leak(&[]);
}

#[test]
fn an_unreachable_cluster_fails_with_exit_1_and_the_others_are_still_checked() {
    let fixture = Fixture::applied("managed-preprovisioned");
    let namespace = fixture.state().join("cluster-2/gloo-mesh");
    std::fs::remove_dir_all(&namespace).unwrap();
    std::fs::write(&namespace, "not a folder").unwrap();
    let run = fixture.check();
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(group(&run, "cluster-2").len(), 2, "one line and its hint");
    assert_line(&run, "cluster-2", "× cannot read the cluster: ");
    assert_line(&run, "cluster-1", "√ mTLS handshake");
    assert!(run.stdout.contains("Check failed: "), "{}", run.stdout);
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("unreachable_text", run.stdout);
    });
    let json = fixture.run(&["check", "config", "-o", "json"]);
    assert_eq!(json.code, 1);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["clusters"][2]["checks"][0]["id"], "reachable");
    assert_eq!(value["clusters"][2]["checks"][0]["status"], "fail");
    assert!(value["clusters"][2]["checks"][0]["hint"].is_string());
    fixture.assert_no_leak(&[]);
}

#[test]
fn check_reads_the_manifests_from_git() {
    let fixture = Fixture::applied("managed-preprovisioned");
    let repo = fixture.dir.path().join("repo");
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .current_dir(&repo)
            .env("HOME", fixture.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    std::fs::create_dir_all(repo.join("relay")).unwrap();
    for entry in std::fs::read_dir(fixture.config()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, repo.join("relay").join(path.file_name().unwrap())).unwrap();
    }
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "fleet"]);
    let cache = fixture.dir.path().join("git-cache");
    let run = fixture.run(&[
        "check",
        "-v",
        "--git",
        repo.to_str().unwrap(),
        "--ref",
        "main",
        "--path",
        "relay",
        "--git-cache",
        cache.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_line(&run, "cluster-1", "√ mTLS handshake");
}

#[test]
fn check_without_manifests_is_a_usage_error() {
    let fixture = Fixture {
        dir: tempfile::tempdir().unwrap(),
        transcript: Default::default(),
    };
    let run = fixture.run(&["check"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.is_empty());
    assert!(run.stderr.contains("PATH"), "{}", run.stderr);
}
