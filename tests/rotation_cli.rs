//! CA rotation through the CLI on the directory backend, with an injected
//! clock (`apply --at`): each phase in order, one per apply; `plan
//! --detailed-exitcode` exits 3 while a gate holds it; rollback and resume;
//! waves; a custom root replaced in its file; a product CA migrated to
//! `custom`; the token rotated; CA drift never silent; and a `kill -9` at
//! any write of a rotation apply loses nothing.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use relayctl::pki::{self, CertFacts};
use support::Fixture;
use time::OffsetDateTime;

const DAY: time::Duration = time::Duration::days(1);

fn stamp(t: OffsetDateTime) -> String {
    pki::inspect::rfc3339(t.replace_nanosecond(0).unwrap())
}

fn certs(fixture: &Fixture, cluster: &str, name: &str, key: &str) -> Vec<CertFacts> {
    fixture
        .secret(cluster, name)
        .and_then(|s| s.get(key).map(|v| pki::inspect_bundle(v.expose()).unwrap()))
        .unwrap_or_default()
}

fn fingerprints(facts: &[CertFacts]) -> Vec<String> {
    facts.iter().map(|f| f.sha256_fingerprint.clone()).collect()
}

fn pem(fixture: &Fixture, cluster: &str, name: &str, key: &str) -> Vec<u8> {
    fixture
        .secret(cluster, name)
        .unwrap()
        .get(key)
        .unwrap()
        .expose()
        .to_vec()
}

/// The certificates of a PEM chain, one PEM each.
fn split(chain: &[u8]) -> Vec<String> {
    pki::inspect::certificate_ders(chain)
        .unwrap()
        .iter()
        .map(|d| pki::inspect::certificate_pem(d))
        .collect()
}

/// `openssl verify` at `at` of `chain`'s leaf against `roots` only, with the
/// chain's other certificates (those of `pick`, by index) as untrusted: the
/// OpenSSL CLI as an independent verifier. OpenSSL follows one candidate
/// issuer per name, so a chain carrying an intermediate and its
/// cross-signed twin is checked one path at a time here; Go's and rustls'
/// path building try both (see `verifies`).
fn openssl_verifies(
    dir: &Path,
    roots: &[String],
    chain: &[u8],
    pick: &[usize],
    purpose: &str,
    at: OffsetDateTime,
) -> bool {
    let certs = split(chain);
    let untrusted: String = pick.iter().map(|i| certs[*i].clone()).collect();
    std::fs::write(dir.join("roots.pem"), roots.concat()).unwrap();
    std::fs::write(dir.join("leaf.pem"), &certs[0]).unwrap();
    std::fs::write(dir.join("untrusted.pem"), untrusted).unwrap();
    Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", purpose, "-attime"])
        .arg(at.unix_timestamp().to_string())
        .arg("-CAfile")
        .arg(dir.join("roots.pem"))
        .arg("-untrusted")
        .arg(dir.join("untrusted.pem"))
        .arg(dir.join("leaf.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// rustls-webpki's verdict on the whole chain against `roots` at `at`.
fn verifies(roots: &[String], chain: &[u8], usage: pki::Usage, at: OffsetDateTime) -> bool {
    pki::verify_chain(chain, roots.concat().as_bytes(), usage, None, at).is_ok()
}

/// Adds `spec.ca.rotation` (or replaces the one there).
fn set_rotation(fixture: &Fixture, rotation: &str) {
    let path = fixture.config().join("relay-trust.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("    rotation:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = text.replacen("  ca:\n", &format!("  ca:\n    rotation: {rotation}\n"), 1);
    std::fs::write(path, text).unwrap();
}

fn apply_at(fixture: &Fixture, t: OffsetDateTime, extra: &[&str]) -> support::Run {
    let at = stamp(t);
    let mut args = vec!["apply", "config", "--auto-approve", "--at", at.as_str()];
    args.extend_from_slice(extra);
    let run = fixture.run(&args);
    assert_eq!(
        run.code, 0,
        "apply at {at}:\n{}\n{}",
        run.stdout, run.stderr
    );
    run
}

fn plan_at(fixture: &Fixture, t: OffsetDateTime) -> support::Run {
    let at = stamp(t);
    fixture.run(&["plan", "config", "--detailed-exitcode", "--at", at.as_str()])
}

fn json_at(fixture: &Fixture, t: OffsetDateTime) -> serde_json::Value {
    let at = stamp(t);
    let run = fixture.run(&["plan", "config", "-o", "json", "--at", at.as_str()]);
    serde_json::from_str(&run.stdout).unwrap()
}

fn phase(plan: &serde_json::Value) -> Option<String> {
    plan["ca"]["rotation"]["phase"].as_str().map(str::to_owned)
}

fn check_passes(fixture: &Fixture, t: OffsetDateTime) {
    let at = stamp(t);
    let run = fixture.run(&["check", "config", "--at", at.as_str()]);
    assert_eq!(
        run.code, 0,
        "check at {at}:\n{}\n{}",
        run.stdout, run.stderr
    );
}

#[test]
fn a_managed_root_rotation_takes_one_phase_per_apply_and_ends_on_the_new_root() {
    let fixture = Fixture::example("managed-preprovisioned");
    let t0 = OffsetDateTime::now_utc() + time::Duration::hours(1);
    apply_at(&fixture, t0, &[]);
    let old_root = split(&pem(&fixture, "mgmt", "relay-root-tls-secret", "ca.crt"));
    assert_eq!(old_root.len(), 1);
    let old_signer = fingerprints(&certs(
        &fixture,
        "mgmt",
        "relay-tls-signing-secret",
        "tls.crt",
    ));
    assert_eq!(plan_at(&fixture, t0).code, 0);

    set_rotation(&fixture, "{ generation: 2, wave: 50 }");
    // Phase 1, trust-both: every ca.crt holds both roots; the old signer signs.
    let run = apply_at(&fixture, t0, &[]);
    assert!(
        run.stdout.contains("phase 1 of 4 (trust-both)"),
        "{}",
        run.stdout
    );
    let bundle = split(&pem(&fixture, "mgmt", "relay-root-tls-secret", "ca.crt"));
    assert_eq!(bundle.len(), 2);
    assert_eq!(bundle[0], old_root[0], "the old root still signs: first");
    let new_root = vec![bundle[1].clone()];
    for (cluster, name) in [
        ("mgmt", "relay-tls-signing-secret"),
        ("mgmt", "relay-server-tls-secret"),
        ("cluster-1", "relay-root-tls-secret"),
        ("cluster-2", "relay-root-tls-secret"),
        ("cluster-1", "relay-client-tls-secret"),
        ("cluster-2", "relay-client-tls-secret"),
    ] {
        assert_eq!(
            certs(&fixture, cluster, name, "ca.crt").len(),
            2,
            "{cluster}/{name}"
        );
    }
    assert_eq!(
        fingerprints(&certs(
            &fixture,
            "mgmt",
            "relay-tls-signing-secret",
            "tls.crt"
        )),
        old_signer
    );
    // Blocked on the soak time: nothing to write, exit 3.
    let held = plan_at(&fixture, t0 + time::Duration::hours(1));
    assert_eq!(held.code, 3, "{}{}", held.stdout, held.stderr);
    assert!(
        held.stdout.contains("waiting for the soak time"),
        "{}",
        held.stdout
    );
    assert!(
        held.stdout
            .contains("No changes to write: the CA rotation waits"),
        "{}",
        held.stdout
    );
    apply_at(&fixture, t0 + time::Duration::hours(1), &[]);
    assert_eq!(
        phase(&json_at(&fixture, t0 + time::Duration::hours(1))).as_deref(),
        Some("trust-both")
    );

    // Phase 2, switch-signer: the new intermediate signs, with its
    // cross-signed twin; the server is reissued. Old-root-only and
    // new-root-only verifiers both accept the server's chain.
    let t2 = t0 + DAY * 2;
    let run = apply_at(&fixture, t2, &[]);
    assert!(
        run.stdout.contains("phase 2 of 4 (switch-signer)"),
        "{}",
        run.stdout
    );
    // The record holds both roots' keys now: no output so far shows any.
    assert!(
        fixture
            .secret("mgmt", "relayctl-prod-rotation")
            .unwrap()
            .get("new-root.key")
            .is_some()
    );
    let at = stamp(t2);
    for format in ["json", "markdown", "text"] {
        let run = fixture.run(&["plan", "config", "-o", format, "--at", at.as_str()]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    }
    fixture.assert_no_leak(&[]);
    let signing = certs(&fixture, "mgmt", "relay-tls-signing-secret", "tls.crt");
    assert_eq!(signing.len(), 2, "intermediate + cross-signed twin");
    assert_ne!(fingerprints(&signing[..1]), old_signer);
    assert_eq!(signing[0].subject_key_id, signing[1].subject_key_id);
    let server = pem(&fixture, "mgmt", "relay-server-tls-secret", "tls.crt");
    let scratch = tempfile::tempdir().unwrap();
    assert_eq!(
        split(&server).len(),
        3,
        "leaf, intermediate, cross-signed twin"
    );
    assert!(openssl_verifies(
        scratch.path(),
        &new_root,
        &server,
        &[1],
        "sslserver",
        t2
    ));
    assert!(openssl_verifies(
        scratch.path(),
        &old_root,
        &server,
        &[2],
        "sslserver",
        t2
    ));
    assert!(!openssl_verifies(
        scratch.path(),
        &old_root,
        &server,
        &[1],
        "sslserver",
        t2
    ));
    assert!(verifies(&old_root, &server, pki::Usage::Server, t2));
    assert!(verifies(&new_root, &server, pki::Usage::Server, t2));
    let bundle = split(&pem(&fixture, "mgmt", "relay-root-tls-secret", "ca.crt"));
    assert_eq!(bundle[0], new_root[0], "the new root signs now: first");
    // Client certificates are kept until their wave.
    let client_1 = pem(&fixture, "cluster-1", "relay-client-tls-secret", "tls.crt");
    assert!(openssl_verifies(
        scratch.path(),
        &old_root,
        &client_1,
        &[1],
        "sslclient",
        t2
    ));
    assert!(!verifies(&new_root, &client_1, pki::Usage::Client, t2));

    // Phase 3, reissue: 50 % of 2 clusters per apply.
    let t3 = t0 + DAY * 4;
    let run = apply_at(&fixture, t3, &[]);
    assert!(
        run.stdout.contains("phase 3 of 4 (reissue)"),
        "{}",
        run.stdout
    );
    let moved: Vec<bool> = ["cluster-1", "cluster-2"]
        .iter()
        .map(|c| {
            let chain = pem(&fixture, c, "relay-client-tls-secret", "tls.crt");
            openssl_verifies(scratch.path(), &new_root, &chain, &[1], "sslclient", t3)
        })
        .collect();
    assert_eq!(moved, [true, false], "one wave of one cluster");
    let blocked = plan_at(&fixture, t3 + DAY * 2);
    assert_eq!(blocked.code, 2, "the next wave is a change");
    assert!(
        blocked.stdout.contains("reissues a wave of 1 cluster"),
        "{}",
        blocked.stdout
    );
    apply_at(&fixture, t3 + DAY * 2, &[]);
    for cluster in ["cluster-1", "cluster-2"] {
        let chain = pem(&fixture, cluster, "relay-client-tls-secret", "tls.crt");
        let at = t3 + DAY * 2;
        assert!(openssl_verifies(
            scratch.path(),
            &new_root,
            &chain,
            &[1],
            "sslclient",
            at
        ));
        assert!(
            openssl_verifies(scratch.path(), &old_root, &chain, &[2], "sslclient", at),
            "bridge"
        );
    }
    check_passes(&fixture, t3 + DAY * 2);

    // Phase 4, drop-old: only the new root anywhere; the rotation ends.
    let t4 = t3 + DAY * 4;
    let run = apply_at(&fixture, t4, &[]);
    assert!(
        run.stdout.contains("phase 4 of 4 (drop-old)"),
        "{}",
        run.stdout
    );
    for (cluster, name) in [
        ("mgmt", "relay-root-tls-secret"),
        ("mgmt", "relay-tls-signing-secret"),
        ("mgmt", "relay-server-tls-secret"),
        ("cluster-1", "relay-root-tls-secret"),
        ("cluster-2", "relay-client-tls-secret"),
    ] {
        assert_eq!(
            fingerprints(&certs(&fixture, cluster, name, "ca.crt")),
            fingerprints(&pki::inspect_bundle(new_root[0].as_bytes()).unwrap()),
            "{cluster}/{name}"
        );
    }
    let done = plan_at(&fixture, t4 + DAY);
    assert_eq!(done.code, 0, "{}", done.stdout);
    assert!(
        done.stdout
            .contains("No changes: every cluster matches the config.")
    );
    check_passes(&fixture, t4 + DAY);
    // The record keeps the generation and no key any more.
    let record = fixture.secret("mgmt", "relayctl-prod-rotation").unwrap();
    assert_eq!(record.data.keys().collect::<Vec<_>>(), ["state.json"]);
    let state: serde_json::Value =
        serde_json::from_slice(record.get("state.json").unwrap().expose()).unwrap();
    assert_eq!(state["rootGeneration"], 2);
    assert_eq!(state["last"]["finished"], true);
    fixture.assert_no_leak(&[]);
}

#[test]
fn a_rollback_steps_back_one_phase_and_holds_until_resumed() {
    let fixture = Fixture::example("managed-preprovisioned");
    let t0 = OffsetDateTime::now_utc() + time::Duration::hours(1);
    apply_at(&fixture, t0, &[]);
    let old_signer = fingerprints(&certs(
        &fixture,
        "mgmt",
        "relay-tls-signing-secret",
        "tls.crt",
    ));
    set_rotation(&fixture, "{ generation: 2 }");
    apply_at(&fixture, t0, &[]);
    apply_at(&fixture, t0 + DAY * 2, &[]);
    assert_eq!(
        phase(&json_at(&fixture, t0 + DAY * 2)).as_deref(),
        Some("switch-signer")
    );

    // Back to trust-both: the old intermediate signs again and the server is
    // reissued from it; both roots stay trusted.
    let run = apply_at(&fixture, t0 + DAY * 3, &["--rollback"]);
    assert!(
        run.stdout
            .contains("rolls back to phase 1 of 4 (trust-both)"),
        "{}",
        run.stdout
    );
    assert_eq!(
        fingerprints(&certs(
            &fixture,
            "mgmt",
            "relay-tls-signing-secret",
            "tls.crt"
        )),
        old_signer
    );
    let server = certs(&fixture, "mgmt", "relay-server-tls-secret", "tls.crt");
    assert_eq!(
        server[0].authority_key_id,
        certs(&fixture, "mgmt", "relay-tls-signing-secret", "tls.crt")[0].subject_key_id
    );
    assert_eq!(
        certs(&fixture, "cluster-1", "relay-root-tls-secret", "ca.crt").len(),
        2
    );

    // Held: soak long over, still no advance, exit 3 naming --resume.
    let held = plan_at(&fixture, t0 + DAY * 10);
    assert_eq!(held.code, 3, "{}", held.stdout);
    assert!(
        held.stdout.contains("held after a rollback"),
        "{}",
        held.stdout
    );
    assert!(
        held.stdout.contains("relayctl apply --resume"),
        "{}",
        held.stdout
    );
    apply_at(&fixture, t0 + DAY * 10, &[]);
    assert_eq!(
        phase(&json_at(&fixture, t0 + DAY * 10)).as_deref(),
        Some("trust-both")
    );
    // Resumed: the next phase starts at once (its gate held).
    let run = apply_at(&fixture, t0 + DAY * 11, &["--resume"]);
    assert!(
        run.stdout.contains("phase 2 of 4 (switch-signer)"),
        "{}",
        run.stdout
    );

    // The first phase of a managed root rotation can be cancelled: the new
    // root leaves every bundle and the same generation does not restart it.
    let fixture = Fixture::example("managed-preprovisioned");
    apply_at(&fixture, t0, &[]);
    let before = fingerprints(&certs(
        &fixture,
        "cluster-1",
        "relay-root-tls-secret",
        "ca.crt",
    ));
    set_rotation(&fixture, "{ generation: 2 }");
    apply_at(&fixture, t0, &[]);
    let run = apply_at(&fixture, t0 + DAY, &["--rollback"]);
    assert!(
        run.stdout.contains("cancelled by a rollback"),
        "{}",
        run.stdout
    );
    assert_eq!(
        fingerprints(&certs(
            &fixture,
            "cluster-1",
            "relay-root-tls-secret",
            "ca.crt"
        )),
        before
    );
    let after = plan_at(&fixture, t0 + DAY * 5);
    assert!(
        after.stdout.contains("cancelled by a rollback"),
        "{}",
        after.stdout
    );
    assert!(after.stdout.contains("apply --resume"), "{}", after.stdout);
    // Nothing left to roll back: a clear error, exit 1, nothing written.
    let run = fixture.run(&["apply", "config", "--auto-approve", "--rollback"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("no rotation is under way to roll back"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_custom_root_replaced_in_its_file_moves_through_every_phase() {
    let fixture = Fixture::example("custom");
    let t0 = OffsetDateTime::now_utc() + time::Duration::hours(1);
    apply_at(&fixture, t0, &[]);
    let old_root = split(&pem(&fixture, "mgmt", "relay-root-tls-secret", "ca.crt"));
    // The user's PKI makes a new root; the manifest points at it.
    let status = Command::new(Path::new(support::ROOT).join("examples/clusters/make-material.sh"))
        .arg(fixture.config().join("material2"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let path = fixture.config().join("relay-trust.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("material/root", "material2/root");
    std::fs::write(&path, text).unwrap();
    let new_root = split(&std::fs::read(fixture.config().join("material2/root.crt")).unwrap());

    let run = plan_at(&fixture, t0);
    assert_eq!(run.code, 2);
    assert!(
        run.stdout
            .contains("the configured root `CN=example-relay-root, O=example`")
            || run.stdout.contains("the configured root"),
        "{}",
        run.stdout
    );
    let mut t = t0;
    let mut phases = Vec::new();
    for _ in 0..8 {
        let run = apply_at(&fixture, t, &[]);
        if let Some(line) = run.stdout.lines().find(|l| l.starts_with("CA rotation")) {
            let p = line
                .split('(')
                .nth(2)
                .and_then(|s| s.split(')').next())
                .unwrap_or_default()
                .to_owned();
            if phases.last() != Some(&p) {
                phases.push(p);
            }
        }
        t += DAY * 2;
    }
    assert_eq!(
        phases,
        ["trust-both", "switch-signer", "reissue", "drop-old"]
    );
    assert_eq!(
        split(&pem(&fixture, "mgmt", "relay-root-tls-secret", "ca.crt")),
        new_root
    );
    assert!(
        fixture
            .secret("mgmt", "relay-root-tls-secret")
            .unwrap()
            .get("tls.key")
            .is_none()
    );
    let scratch = tempfile::tempdir().unwrap();
    let server = pem(&fixture, "mgmt", "relay-server-tls-secret", "tls.crt");
    assert!(openssl_verifies(
        scratch.path(),
        &new_root,
        &server,
        &[1],
        "sslserver",
        t
    ));
    assert!(!verifies(&old_root, &server, pki::Usage::Server, t));
    assert_eq!(plan_at(&fixture, t).code, 0);
    check_passes(&fixture, t);
}

#[test]
fn a_product_ca_is_migrated_to_custom_through_the_phases_with_a_bridge() {
    let fixture = Fixture::example("gloo");
    let t0 = OffsetDateTime::now_utc() + time::Duration::hours(1);
    apply_at(&fixture, t0, &[]);
    let gloo_root = split(&pem(&fixture, "mgmt", "relay-root-tls-secret", "ca.crt"));
    let status = Command::new(Path::new(support::ROOT).join("examples/clusters/make-material.sh"))
        .arg(fixture.config().join("material"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let path = fixture.config().join("relay-trust.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen(
        "    mode: gloo\n",
        "    mode: custom\n    root:\n      cert: { file: material/root.crt }\n      privateKey: { file: material/root.key }\n",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let corp_root = split(&std::fs::read(fixture.config().join("material/root.crt")).unwrap());
    // The product's Secrets are adopted (labels added), then rotated.
    apply_at(&fixture, t0, &["--adopt"]);
    let mut t = t0 + DAY * 2;
    for _ in 0..6 {
        apply_at(&fixture, t, &[]);
        t += DAY * 2;
    }
    let scratch = tempfile::tempdir().unwrap();
    let server = pem(&fixture, "mgmt", "relay-server-tls-secret", "tls.crt");
    assert!(openssl_verifies(
        scratch.path(),
        &corp_root,
        &server,
        &[1],
        "sslserver",
        t
    ));
    assert_eq!(
        split(&pem(
            &fixture,
            "cluster-1",
            "relay-root-tls-secret",
            "ca.crt"
        )),
        corp_root
    );
    assert!(
        fixture
            .secret("mgmt", "relay-root-tls-secret")
            .unwrap()
            .get("tls.key")
            .is_none(),
        "custom keeps no root key in the cluster"
    );
    let _ = gloo_root;
    assert_eq!(plan_at(&fixture, t).code, 0);
}

#[test]
fn a_raised_token_generation_reaches_mgmt_first_then_every_workload() {
    let fixture = Fixture::example("managed");
    fixture.apply();
    let token = |c: &str| pem(&fixture, c, "relay-identity-token-secret", "token");
    let before = token("mgmt");
    let path = fixture.config().join("relay-trust.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        "  identityToken: { enabled: true }\n",
        "  identityToken: { enabled: true, generation: 2 }\n",
    );
    std::fs::write(&path, text).unwrap();
    let run = fixture.run(&["plan", "config", "-o", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let changed: Vec<(String, String)> = plan["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["changes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|ch| ch["action"] != "no-op")
                .map(|ch| {
                    (
                        c["name"].as_str().unwrap().to_owned(),
                        ch["name"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        changed,
        [
            ("mgmt".to_owned(), "relay-identity-token-secret".to_owned()),
            (
                "cluster-1".to_owned(),
                "relay-identity-token-secret".to_owned()
            ),
            (
                "cluster-2".to_owned(),
                "relay-identity-token-secret".to_owned()
            ),
        ]
    );
    fixture.apply();
    let after = token("mgmt");
    assert_ne!(after, before);
    assert_eq!(token("cluster-1"), after);
    assert_eq!(token("cluster-2"), after);
    assert_eq!(
        fixture.plan_code().0,
        0,
        "converged; the generation is recorded"
    );
    assert_eq!(
        fixture
            .secret("mgmt", "relay-identity-token-secret")
            .unwrap()
            .annotations
            .get("relayctl.dev/token-generation")
            .map(String::as_str),
        Some("2")
    );
    fixture.assert_no_leak(&[]);
}

#[test]
fn ca_drift_is_never_silent() {
    let t0 = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut shown = Vec::new();
    for (what, edit) in [
        ("root key", "    root: { key: ecdsa-p384 }\n"),
        (
            "root commonName",
            "    root: { key: rsa-4096, commonName: corp-relay-root }\n",
        ),
        (
            "root validity",
            "    root: { key: rsa-4096, validity: 43800h }\n",
        ),
    ] {
        let fixture = Fixture::example("managed-preprovisioned");
        apply_at(&fixture, t0, &[]);
        let path = fixture.config().join("relay-trust.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("    root: { key: rsa-4096 }\n", edit);
        std::fs::write(&path, text).unwrap();
        let run = plan_at(&fixture, t0);
        assert_eq!(
            run.code, 0,
            "{what}: nothing is written on its own\n{}",
            run.stdout
        );
        assert!(
            !run.stdout.contains("every cluster matches the config"),
            "{what}: {}",
            run.stdout
        );
        let drift: String = run
            .stdout
            .lines()
            .skip_while(|l| !l.starts_with("CA drift"))
            .take_while(|l| !l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        shown.push(format!(
            "## {what}\n{drift}{}\n",
            run.stdout.lines().last().unwrap()
        ));
    }
    // The intermediate's settings: an intermediate rotation starts.
    let fixture = Fixture::example("managed-preprovisioned");
    apply_at(&fixture, t0, &[]);
    let path = fixture.config().join("relay-trust.yaml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "    root: { key: rsa-4096 }\n",
        "    root: { key: rsa-4096 }\n    intermediate: { key: ecdsa-p384 }\n",
    );
    std::fs::write(&path, text).unwrap();
    let run = plan_at(&fixture, t0);
    assert_eq!(run.code, 2, "{}", run.stdout);
    let drift: String = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("CA drift"))
        .take_while(|l| !l.starts_with("Plan:"))
        .map(|l| format!("{l}\n"))
        .collect();
    shown.push(format!("## intermediate key\n{drift}"));
    // A custom root changed at its source: a rotation starts.
    let fixture = Fixture::example("custom");
    apply_at(&fixture, t0, &[]);
    Command::new(Path::new(support::ROOT).join("examples/clusters/make-material.sh"))
        .arg(fixture.config().join("material"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let run = plan_at(&fixture, t0);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("CA rotation `root-2-"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("trigger: the configured root"),
        "{}",
        run.stdout
    );
    // An external bundle changed at its source.
    let fixture = Fixture::example("external");
    apply_at(&fixture, t0, &[]);
    Command::new(Path::new(support::ROOT).join("examples/clusters/make-material.sh"))
        .arg(fixture.config().join("material"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let run = plan_at(&fixture, t0);
    let drift: String = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("CA drift"))
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(drift.contains("spec.ca.root.cert"), "{}", run.stdout);
    shown.push(format!("## external root\n{drift}"));
    insta::with_settings!({filters => vec![
        (r"sha256 [0-9a-f]{16}", "sha256 [fp]"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[time]"),
        (r"root-\d+-\d{8}t\d{6}z|intermediate-\d+-\d{8}t\d{6}z", "[id]"),
    ]}, {
        insta::assert_snapshot!("ca_drift", shown.join("\n"));
    });
}

/// Runs an apply that stops itself after its `n`-th write, kills it with
/// SIGKILL there, and returns whether it got that far.
fn apply_killed_after(fixture: &Fixture, t: OffsetDateTime, n: usize) -> bool {
    let mut child = Command::new(support::BIN)
        .args([
            "apply",
            "config",
            "--auto-approve",
            "--at",
            &stamp(t),
            "--state-dir",
        ])
        .arg(fixture.state())
        .current_dir(fixture.dir.path())
        .env("RELAYCTL_TEST_STOP_AFTER_WRITES", n.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stat = format!("/proc/{}/stat", child.id());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "finished before write {n}");
            return false;
        }
        let text = std::fs::read_to_string(&stat).unwrap_or_default();
        if text
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('T'))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    true
}

#[test]
fn a_rotation_start_killed_at_any_write_resumes_with_the_same_new_root() {
    let t0 = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut killed = 0;
    for n in 1..=12 {
        let fixture = Fixture::example("managed-preprovisioned");
        apply_at(&fixture, t0, &[]);
        let old_root = split(&pem(&fixture, "mgmt", "relay-root-tls-secret", "ca.crt"));
        set_rotation(&fixture, "{ generation: 2 }");
        if !apply_killed_after(&fixture, t0, n) {
            break;
        }
        killed += 1;
        // The record is the first write: from then on the new root exists.
        let record = fixture.secret("mgmt", "relayctl-prod-rotation").unwrap();
        let new_root = split(record.get("new-root.crt").unwrap().expose());
        assert!(record.get("new-root.key").is_some(), "write {n}");
        let t = t0 + time::Duration::minutes(1);
        assert_eq!(
            phase(&json_at(&fixture, t)).as_deref(),
            Some("trust-both"),
            "write {n}"
        );
        apply_at(&fixture, t, &[]);
        let bundle = split(&pem(
            &fixture,
            "cluster-2",
            "relay-root-tls-secret",
            "ca.crt",
        ));
        assert_eq!(
            bundle,
            [old_root[0].clone(), new_root[0].clone()],
            "write {n}"
        );
        assert_eq!(
            plan_at(&fixture, t).code,
            3,
            "write {n}: converged, soaking"
        );
        check_passes(&fixture, t);
    }
    assert!(killed >= 8, "killed at {killed} points");
}

#[test]
fn a_rotation_apply_killed_at_any_write_resumes_in_its_phase_and_keeps_both_roots() {
    let t0 = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut killed = 0;
    for n in 1..=9 {
        let fixture = Fixture::example("managed-preprovisioned");
        apply_at(&fixture, t0, &[]);
        let old_root = pem(&fixture, "mgmt", "relay-root-tls-secret", "ca.crt");
        set_rotation(&fixture, "{ generation: 2 }");
        apply_at(&fixture, t0, &[]);
        let new_root = split(&pem(&fixture, "mgmt", "relay-root-tls-secret", "ca.crt"))[1].clone();
        // Killed inside the apply that starts switch-signer.
        let t = t0 + DAY * 2;
        if !apply_killed_after(&fixture, t, n) {
            break;
        }
        killed += 1;
        let bundle = pem(&fixture, "mgmt", "relay-root-tls-secret", "ca.crt");
        let held = split(&bundle);
        assert!(
            held.contains(&split(&old_root)[0]) && held.contains(&new_root),
            "write {n}: both roots stay"
        );
        // The rerun resumes in the same phase and converges.
        let json = json_at(&fixture, t);
        assert_eq!(phase(&json).as_deref(), Some("switch-signer"), "write {n}");
        apply_at(&fixture, t, &[]);
        assert_eq!(
            plan_at(&fixture, t).code,
            3,
            "write {n}: converged, waiting for the soak"
        );
        check_passes(&fixture, t);
        let record = fixture.secret("mgmt", "relayctl-prod-rotation").unwrap();
        for key in [
            "old-root.key",
            "new-root.key",
            "new-signing.key",
            "old-signing.key",
        ] {
            assert!(record.get(key).is_some(), "write {n}: {key} kept");
        }
    }
    assert!(killed >= 4, "killed at {killed} points");
}

#[test]
fn a_relay_secret_changed_by_another_writer_during_a_rotation_holds_the_phase() {
    let fixture = Fixture::example("managed-preprovisioned");
    let t0 = OffsetDateTime::now_utc() + time::Duration::hours(1);
    apply_at(&fixture, t0, &[]);
    set_rotation(&fixture, "{ generation: 2 }");
    apply_at(&fixture, t0, &[]);
    assert_eq!(phase(&json_at(&fixture, t0)).as_deref(), Some("trust-both"));

    // Something else (a management server still generating its CA, a
    // person) puts another certificate into the server Secret; relayctl's
    // labels and annotations stay as they were.
    let mut server = fixture.secret("mgmt", "relay-server-tls-secret").unwrap();
    let written = server.get("tls.crt").unwrap().clone();
    let other = fixture
        .secret("cluster-1", "relay-client-tls-secret")
        .unwrap();
    server
        .data
        .insert("tls.crt".to_owned(), other.get("tls.crt").unwrap().clone());
    server
        .data
        .insert("tls.key".to_owned(), other.get("tls.key").unwrap().clone());
    fixture.put("mgmt", server);

    // Past the soak time the gate would open; the foreign write holds it.
    let t1 = t0 + DAY * 2;
    let plan = json_at(&fixture, t1);
    let gate = &plan["ca"]["rotation"]["gate"];
    assert_eq!(gate["open"], false, "{gate:#}");
    let blockers = gate["blockers"].as_array().unwrap();
    assert!(
        blockers.iter().any(|b| b["cluster"] == "mgmt"
            && b["reason"]
                .as_str()
                .unwrap()
                .contains("relay-server-tls-secret was changed by something other than relayctl")
            && b["reason"]
                .as_str()
                .unwrap()
                .contains("disableCaCertGeneration")),
        "{gate:#}"
    );
    let text = plan_at(&fixture, t1);
    assert_eq!(text.code, 2, "the repair is a change\n{}", text.stdout);
    assert!(
        text.stdout
            .contains("changed by something other than relayctl"),
        "{}",
        text.stdout
    );
    // This apply writes it back and stays in the phase; the next one moves on.
    let repair = apply_at(&fixture, t1, &[]);
    assert!(
        repair.stdout.contains("phase 1 of 4 (trust-both)")
            && !repair.stdout.contains("phase 2 of 4"),
        "{}",
        repair.stdout
    );
    let server = certs(&fixture, "mgmt", "relay-server-tls-secret", "tls.crt");
    assert!(
        server[0]
            .dns_names
            .iter()
            .any(|n| n == "gloo-mesh-mgmt-server.gloo-mesh"),
        "a server certificate again: {:?}",
        server[0].dns_names
    );
    assert_ne!(
        fingerprints(&server)[0],
        fingerprints(&certs(
            &fixture,
            "cluster-1",
            "relay-client-tls-secret",
            "tls.crt"
        ))[0],
    );
    assert_ne!(
        fingerprints(&server)[0],
        fingerprints(&pki::inspect_bundle(written.expose()).unwrap())[0],
        "reissued: relayctl never reuses a certificate it lost track of"
    );
    assert!(
        json_at(&fixture, t1)["ca"]["rotation"]["gate"]["blockers"].is_null(),
        "nothing foreign left"
    );
    let run = apply_at(&fixture, t1, &[]);
    assert!(
        run.stdout.contains("phase 2 of 4 (switch-signer)"),
        "{}",
        run.stdout
    );
}

/// The `rotation-handshakes` lines of `check -o json` at `t`, by cluster.
fn matrix_lines(fixture: &Fixture, t: OffsetDateTime) -> Vec<(String, String, String)> {
    let at = stamp(t);
    let run = fixture.run(&["check", "config", "-o", "json", "--at", at.as_str()]);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    report["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            let name = c["name"].as_str().unwrap().to_owned();
            c["checks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| l["id"] == "rotation-handshakes")
                .map(move |l| {
                    (
                        name.clone(),
                        l["status"].as_str().unwrap().to_owned(),
                        l["message"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn check_runs_the_old_new_handshake_matrix_in_every_phase_and_names_a_broken_pair() {
    let fixture = Fixture::example("managed-preprovisioned");
    let t0 = OffsetDateTime::now_utc() + time::Duration::hours(1);
    apply_at(&fixture, t0, &[]);
    assert!(
        matrix_lines(&fixture, t0).is_empty(),
        "no rotation, no matrix"
    );
    set_rotation(&fixture, "{ generation: 2 }");
    let mut t = t0;
    for phase in ["trust-both", "switch-signer", "reissue"] {
        let run = apply_at(&fixture, t, &[]);
        assert!(run.stdout.contains(&format!("({phase})")), "{}", run.stdout);
        let lines = matrix_lines(&fixture, t);
        assert_eq!(lines.len(), 2, "one per workload: {lines:#?}");
        for (cluster, status, message) in &lines {
            assert_eq!(status, "ok", "{cluster}: {message}");
            assert!(
                message.contains(&format!("({phase})"))
                    && message.contains("all 4 handshakes of old/new server × old/new client pass"),
                "{cluster}: {message}"
            );
        }
        check_passes(&fixture, t);
        t += DAY * 2;
    }

    // A workload whose bundle dropped the old root too early (while a
    // rollback can still bring the old server certificate back): both
    // old-server pairs fail there, and the other workload is unaffected.
    // (A bundle with only the old root passes: the cross-signed bridge.)
    let new_root = {
        let record = fixture.secret("mgmt", "relayctl-prod-rotation").unwrap();
        record.get("new-root.crt").unwrap().clone()
    };
    let mut root = fixture
        .secret("cluster-2", "relay-root-tls-secret")
        .unwrap();
    root.data.insert("ca.crt".to_owned(), new_root);
    fixture.put("cluster-2", root);
    let lines = matrix_lines(&fixture, t);
    let (_, status, message) = lines.iter().find(|(c, _, _)| c == "cluster-2").unwrap();
    assert_eq!(status, "fail", "{message}");
    assert!(
        message.contains("2 failed")
            && message.contains("old server × old client")
            && message.contains("old server × new client"),
        "{message}"
    );
    let (_, status, message) = lines.iter().find(|(c, _, _)| c == "cluster-1").unwrap();
    assert_eq!(status, "ok", "{message}");
}

/// Rewrites `from` into `to` in the config file `file`.
fn edit(fixture: &Fixture, file: &str, from: &str, to: &str) {
    let path = fixture.config().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no `{from}`:\n{text}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

/// The gate's blockers of the plan at `t`, as `cluster: reason`.
fn blockers(fixture: &Fixture, t: OffsetDateTime) -> Vec<String> {
    json_at(fixture, t)["ca"]["rotation"]["gate"]["blockers"]
        .as_array()
        .map(|b| {
            b.iter()
                .map(|b| {
                    format!(
                        "{}: {}",
                        b["cluster"].as_str().unwrap(),
                        b["reason"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_external_root_moves_through_the_phases_as_your_pki_reissues() {
    let fixture = Fixture::example("external");
    let t0 = OffsetDateTime::now_utc() + time::Duration::hours(1);
    apply_at(&fixture, t0, &[]);
    let old_root = split(&std::fs::read(fixture.config().join("material/root.crt")).unwrap());
    // The user's PKI makes a new root, and the manifest names it.
    let status = Command::new(Path::new(support::ROOT).join("examples/clusters/make-material.sh"))
        .arg(fixture.config().join("material2"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let new_root = split(&std::fs::read(fixture.config().join("material2/root.crt")).unwrap());
    edit(
        &fixture,
        "relay-trust.yaml",
        "root:\n      cert: { file: material/root.crt }",
        "rotation: { soak: 1h }\n    root:\n      cert: { file: material2/root.crt }",
    );
    let scratch = tempfile::tempdir().unwrap();
    let both: Vec<String> = old_root.iter().chain(&new_root).cloned().collect();

    // Phase 1: both bundles everywhere; the server in service stays.
    let server_before = pem(&fixture, "mgmt", "relay-server-tls-secret", "tls.crt");
    let run = apply_at(&fixture, t0, &[]);
    assert!(
        run.stdout.contains("phase 1 of 4 (trust-both)"),
        "{}",
        run.stdout
    );
    for (cluster, name) in [
        ("mgmt", "relay-server-tls-secret"),
        ("cluster-1", "relay-root-tls-secret"),
        ("cluster-2", "relay-root-tls-secret"),
        ("cluster-1", "relay-client-tls-secret"),
    ] {
        assert_eq!(
            split(&pem(&fixture, cluster, name, "ca.crt")),
            both,
            "{cluster}/{name}"
        );
    }
    assert_eq!(
        pem(&fixture, "mgmt", "relay-server-tls-secret", "tls.crt"),
        server_before
    );

    // Phase 2 installs the configured server certificate; while it is still
    // from the old root, the gate names mgmt and what to do.
    let t1 = t0 + time::Duration::hours(2);
    let run = apply_at(&fixture, t1, &[]);
    assert!(
        run.stdout.contains("phase 2 of 4 (switch-signer)"),
        "{}",
        run.stdout
    );
    let t2 = t1 + time::Duration::hours(2);
    let blocked = plan_at(&fixture, t2);
    assert_eq!(blocked.code, 3, "{}", blocked.stdout);
    let names = blockers(&fixture, t2);
    assert!(
        names.len() == 1 && names[0].starts_with("mgmt: the server certificate from `spec.server.cert` does not chain to the new root bundle"),
        "{names:#?}"
    );
    edit(
        &fixture,
        "relay-trust.yaml",
        "material/server.",
        "material2/server.",
    );
    let run = apply_at(&fixture, t2, &[]);
    let server = pem(&fixture, "mgmt", "relay-server-tls-secret", "tls.crt");
    assert!(openssl_verifies(
        scratch.path(),
        &new_root,
        &server,
        &[1],
        "sslserver",
        t2
    ));
    assert!(!run.stdout.contains("phase 3"), "{}", run.stdout);

    // Phase 3 waits for every client certificate from the new root.
    let run = apply_at(&fixture, t2, &[]);
    assert!(
        run.stdout.contains("phase 3 of 4 (reissue)"),
        "{}",
        run.stdout
    );
    let t3 = t2 + time::Duration::hours(2);
    let names = blockers(&fixture, t3);
    assert_eq!(names.len(), 2, "{names:#?}");
    assert!(
        names
            .iter()
            .all(|n| n.contains("does not chain to the new root bundle")),
        "{names:#?}"
    );
    assert_eq!(
        json_at(&fixture, t3)["ca"]["rotation"]["gate"]["oldCertificates"],
        2
    );
    check_passes(&fixture, t3);
    for cluster in ["cluster-1", "cluster-2"] {
        edit(
            &fixture,
            &format!("{cluster}.yaml"),
            &format!("material/{cluster}."),
            &format!("material2/{cluster}."),
        );
    }
    apply_at(&fixture, t3, &[]);
    for cluster in ["cluster-1", "cluster-2"] {
        let chain = pem(&fixture, cluster, "relay-client-tls-secret", "tls.crt");
        assert!(
            openssl_verifies(scratch.path(), &new_root, &chain, &[1], "sslclient", t3),
            "{cluster}"
        );
    }

    // Phase 4: the new bundle alone; converged.
    let run = apply_at(&fixture, t3, &[]);
    assert!(
        run.stdout.contains("phase 4 of 4 (drop-old)"),
        "{}",
        run.stdout
    );
    for (cluster, name) in [
        ("mgmt", "relay-server-tls-secret"),
        ("cluster-1", "relay-root-tls-secret"),
        ("cluster-2", "relay-root-tls-secret"),
        ("cluster-2", "relay-client-tls-secret"),
    ] {
        assert_eq!(
            split(&pem(&fixture, cluster, name, "ca.crt")),
            new_root,
            "{cluster}/{name}"
        );
    }
    assert_eq!(plan_at(&fixture, t3).code, 0);
    check_passes(&fixture, t3);
}

#[test]
fn a_clock_behind_the_new_intermediate_is_an_error_on_the_secret_not_a_bug() {
    let fixture = Fixture::example("managed-preprovisioned");
    let t0 = OffsetDateTime::now_utc() + time::Duration::hours(1);
    apply_at(&fixture, t0, &[]);
    set_rotation(&fixture, "{ generation: 2 }");
    apply_at(&fixture, t0, &[]);
    // The switch is applied by a machine whose clock is two days ahead.
    let ahead = t0 + DAY * 2;
    let run = apply_at(&fixture, ahead, &[]);
    assert!(run.stdout.contains("phase 2 of 4"), "{}", run.stdout);
    // A plan from a machine with today's clock: mgmt's server Secret would
    // be reissued by an intermediate that is not valid yet.
    let mut server = fixture.secret("mgmt", "relay-server-tls-secret").unwrap();
    server.data.remove("tls.crt");
    fixture.put("mgmt", server);
    let run = plan_at(&fixture, t0);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("is not valid before") && run.stdout.contains("check both (NTP)"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    assert!(!run.stderr.contains("a bug in relayctl"), "{}", run.stderr);
}

#[test]
fn a_product_ca_adopted_as_managed_stays_until_the_generation_is_raised() {
    let fixture = Fixture::example("gloo");
    let t0 = OffsetDateTime::now_utc() + time::Duration::hours(1);
    apply_at(&fixture, t0, &[]);
    let product_root = split(&pem(&fixture, "mgmt", "relay-root-tls-secret", "ca.crt"));
    let path = fixture.config().join("relay-trust.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("    mode: gloo\n", "    mode: managed\n", 1),
    )
    .unwrap();
    apply_at(&fixture, t0, &["--adopt"]);
    assert_eq!(
        split(&pem(&fixture, "mgmt", "relay-root-tls-secret", "ca.crt")),
        product_root,
        "the product's root is kept as the managed root"
    );
    // relayctl derives intermediates in `managed` mode: the product's is
    // rotated to the configured settings (2 phases); the root stays, and
    // the drift says how to replace it.
    let run = plan_at(&fixture, t0);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("CA drift")
            && run.stdout.contains("set `spec.ca.rotation.generation: 2`")
            && run
                .stdout
                .contains("(intermediate): phase 1 of 2 (switch-signer)"),
        "{}",
        run.stdout
    );
    apply_at(&fixture, t0 + DAY * 2, &[]);
    apply_at(&fixture, t0 + DAY * 4, &[]);
    assert_eq!(
        split(&pem(&fixture, "mgmt", "relay-root-tls-secret", "ca.crt")),
        product_root
    );
    // Raising the generation moves to a root of relayctl's, in phases.
    set_rotation(&fixture, "{ generation: 2 }");
    let run = apply_at(&fixture, t0 + DAY * 4, &[]);
    assert!(
        run.stdout.contains("(root): phase 1 of 4 (trust-both)"),
        "{}",
        run.stdout
    );
}
