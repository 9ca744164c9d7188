//! `validate` loads `file`/`env` material and reports certificate problems at
//! the manifest field that names the source: a cert/key mismatch, a non-CA
//! given as a CA, an expired CA, a CA shorter-lived than what it must sign, a
//! server certificate that misses the authority, an unreadable file.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::path::Path;
use std::process::Command;

use relayctl::model::{Duration, KeyAlgorithm};
use relayctl::pki::{self, CaRequest, Issuer, OsKeySource, ServerRequest};

const BIN: &str = env!("CARGO_BIN_EXE_relayctl");

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

fn ca(cn: &str, hours: u64, now: time::OffsetDateTime) -> pki::Issued {
    pki::issue_root(
        &CaRequest {
            common_name: cn.into(),
            validity: Duration::from_hours(hours),
            key: KeyAlgorithm::EcdsaP256,
        },
        &OsKeySource,
        now,
    )
    .unwrap()
}

fn validate(dir: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("validate")
        .arg(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

const CLUSTERS: &str =
    "---\napiVersion: relayctl.dev/v1alpha1\nkind: ManagementCluster\nmetadata: { name: mgmt }\n";

#[test]
fn custom_root_problems_are_located_at_their_source_field() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let root = ca("my-root", 24 * 400, now);
    let other = ca("other-root", 24 * 400, now);
    write(dir.path(), "root.crt", &root.cert_pem);
    // The key of another CA: a mismatch.
    write(
        dir.path(),
        "root.key",
        std::str::from_utf8(other.key.to_pkcs8_pem().expose()).unwrap(),
    );
    write(
        dir.path(),
        "trust.yaml",
        &format!(
            "apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata: {{ name: prod }}\nspec:\n  ca:\n    mode: custom\n    root:\n      cert: {{ file: root.crt }}\n      privateKey: {{ file: root.key }}\n{CLUSTERS}"
        ),
    );
    let (code, stderr) = validate(dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("error[invalid-material]"), "{stderr}");
    assert!(
        stderr.contains("trust.yaml:8:13 (field `spec.ca.root.cert`)"),
        "{stderr}"
    );
    assert!(stderr.contains("does not match"), "{stderr}");
    // The 400-day root cannot hold the default 43800h intermediate.
    assert!(stderr.contains("my-root"), "{stderr}");
    // Never the key itself.
    let key = std::str::from_utf8(other.key.to_pkcs8_pem().expose()).unwrap();
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!stderr.contains(line));
    }
}

#[test]
fn a_leaf_given_as_a_ca_an_expired_ca_and_a_short_ca_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let root = ca("r", 24 * 3650, now);
    let leaf = pki::issue_server(
        &ServerRequest {
            authority: "leaf.example".into(),
            dns_names: vec![],
            validity: Duration::from_hours(24),
            key: KeyAlgorithm::EcdsaP256,
        },
        &Issuer::from_issued(&root).unwrap(),
        &OsKeySource,
        now,
    )
    .unwrap();
    let old = ca("old-root", 48, now - time::Duration::days(10));
    let short = ca("short-root", 24 * 30, now);
    for (name, pem, key) in [
        ("leaf", &leaf.cert_pem, &leaf.key),
        ("old", &old.cert_pem, &old.key),
        ("short", &short.cert_pem, &short.key),
    ] {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(sub.join("material")).unwrap();
        write(&sub.join("material"), &format!("{name}.crt"), pem);
        write(
            &sub.join("material"),
            &format!("{name}.key"),
            std::str::from_utf8(key.to_pkcs8_pem().expose()).unwrap(),
        );
        write(
            &sub.join("clusters"),
            "trust.yaml",
            &format!(
                "apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata: {{ name: prod }}\nspec:\n  ca:\n    mode: custom\n    root:\n      cert: {{ file: ../material/{name}.crt }}\n      privateKey: {{ file: ../material/{name}.key }}\n{CLUSTERS}"
            ),
        );
    }
    let (code, stderr) = validate(&dir.path().join("leaf"));
    assert_eq!(code, 1);
    assert!(stderr.contains("`CN=leaf.example` is not a CA"), "{stderr}");
    let (code, stderr) = validate(&dir.path().join("old"));
    assert_eq!(code, 1);
    assert!(stderr.contains("expired"), "{stderr}");
    let (code, stderr) = validate(&dir.path().join("short"));
    assert_eq!(code, 1);
    assert!(stderr.contains("short-root"), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("must sign") || stderr.contains("valid for"),
        "{stderr}"
    );
}

#[test]
fn external_server_cert_missing_the_authority_and_missing_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let root = ca("r", 24 * 3650, now);
    let server = pki::issue_server(
        &ServerRequest {
            authority: "istiod.istio-system.svc".into(),
            dns_names: vec![],
            validity: Duration::from_hours(240),
            key: KeyAlgorithm::EcdsaP256,
        },
        &Issuer::from_issued(&root).unwrap(),
        &OsKeySource,
        now,
    )
    .unwrap();
    write(dir.path(), "root.crt", &root.cert_pem);
    write(dir.path(), "server.crt", &server.cert_pem);
    write(
        dir.path(),
        "trust.yaml",
        &format!(
            "apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata: {{ name: prod }}\nspec:\n  ca:\n    mode: external\n    root: {{ cert: {{ file: root.crt }} }}\n  server:\n    cert: {{ file: server.crt }}\n    privateKey: {{ env: RELAYCTL_TEST_UNSET_SERVER_KEY }}\n{CLUSTERS}---\napiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata: {{ name: cluster-1 }}\nspec:\n  clientCert: {{ cert: {{ file: missing.crt }}, privateKey: {{ file: missing.key }} }}\n"
        ),
    );
    let (code, stderr) = validate(dir.path());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("`RELAYCTL_TEST_UNSET_SERVER_KEY` is not set"),
        "{stderr}"
    );
    assert!(stderr.contains("missing.crt"), "{stderr}");
    assert!(
        stderr.contains("(field `spec.clientCert.cert`)"),
        "{stderr}"
    );
    // With the key given, the SAN problem shows.
    let out = Command::new(BIN)
        .arg("validate")
        .arg(dir.path())
        .env(
            "RELAYCTL_TEST_UNSET_SERVER_KEY",
            std::str::from_utf8(server.key.to_pkcs8_pem().expose()).unwrap(),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("gloo-mesh-mgmt-server.gloo-mesh"),
        "{stderr}"
    );
    assert!(stderr.contains("istiod.istio-system.svc"), "{stderr}");
}

#[test]
fn a_key_or_token_pasted_inline_is_never_echoed_by_validate() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let root = ca("inline", 24 * 400, now);
    let key = std::str::from_utf8(root.key.to_pkcs8_pem().expose())
        .unwrap()
        .to_owned();
    let indented: String = key.lines().map(|l| format!("        {l}\n")).collect();
    write(
        dir.path(),
        "trust.yaml",
        &format!(
            "apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata: {{ name: prod }}\nspec:\n  identityToken: {{ value: \"SUPERSECRETTOKEN123\", extra: 1 }}\n  ca:\n    mode: custom\n    root:\n      privateKey: |\n{indented}{CLUSTERS}"
        ),
    );
    let (code, stderr) = validate(dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("expected a material source"), "{stderr}");
    assert!(
        stderr.contains("(field `spec.ca.root.privateKey`)"),
        "{stderr}"
    );
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!stderr.contains(line), "{stderr}");
    }
    // Without the key, the inline token is the type error; still not echoed.
    write(
        dir.path(),
        "trust.yaml",
        &format!(
            "apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata: {{ name: prod }}\nspec:\n  identityToken: {{ value: \"SUPERSECRETTOKEN123\", extra: 1 }}\n{CLUSTERS}"
        ),
    );
    let (code, stderr) = validate(dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("(field `spec.identityToken.value`)"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `extra`"), "{stderr}");
    assert!(!stderr.contains("SUPERSECRETTOKEN123"), "{stderr}");
}

#[test]
fn a_provided_intermediate_must_be_signed_by_the_configured_root() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let r1 = ca("root-one", 24 * 3650, now);
    let r2 = ca("root-two", 24 * 3650, now);
    let int = pki::issue_intermediate(
        &CaRequest {
            common_name: "int-of-two".into(),
            validity: Duration::from_hours(24 * 1000),
            key: KeyAlgorithm::EcdsaP256,
        },
        &Issuer::from_issued(&r2).unwrap(),
        &OsKeySource,
        now,
    )
    .unwrap();
    write(dir.path(), "root.crt", &r1.cert_pem);
    write(dir.path(), "int.crt", &int.cert_pem);
    write(
        dir.path(),
        "int.key",
        std::str::from_utf8(int.key.to_pkcs8_pem().expose()).unwrap(),
    );
    write(
        dir.path(),
        "trust.yaml",
        &format!(
            "apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata: {{ name: prod }}\nspec:\n  ca:\n    mode: custom\n    root: {{ cert: {{ file: root.crt }} }}\n    intermediate:\n      cert: {{ file: int.crt }}\n      privateKey: {{ file: int.key }}\n{CLUSTERS}"
        ),
    );
    let (code, stderr) = validate(dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("intermediate `CN=int-of-two` (issuer `CN=root-two`) is not signed by any certificate of the root bundle"), "{stderr}");
    assert!(
        stderr.contains("(field `spec.ca.intermediate.cert`)"),
        "{stderr}"
    );
    // Signed by the configured root: valid.
    write(dir.path(), "root.crt", &r2.cert_pem);
    let (code, stderr) = validate(dir.path());
    assert_eq!(code, 0, "{stderr}");
}
