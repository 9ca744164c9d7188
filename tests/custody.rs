//! Custody of the root CA on the directory backend: every way the
//! adversarial review found to destroy, replace or leak the trust through a
//! symlink, a repository writer, a local user or a hostile file, each
//! pinned by a test named after what broke (issue 10).

#![allow(clippy::unwrap_used)] // test helpers fail loudly

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{BIN, Fixture, Run};

fn workload(name: &str, connection: &str) -> String {
    format!(
        "apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata: {{ name: {name} }}\nspec:\n  connection: {connection}\n"
    )
}

fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Runs the binary with a deadline: a hang is a failure, not a stuck suite.
fn run_bounded(fixture: &Fixture, args: &[&str], limit: Duration) -> (Run, Duration) {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--state-dir")
        .arg(fixture.state())
        .current_dir(fixture.dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("`relayctl {}` hung for more than {limit:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        },
        started.elapsed(),
    )
}

// ---------------------------------------------------------------------------
// 1. The same storage reached by another path
// ---------------------------------------------------------------------------

#[test]
fn a_workload_reaching_mgmts_folder_through_a_symlink_never_destroys_the_root_key() {
    let fixture = Fixture::example("managed");
    fixture.apply();
    let root = fixture.file("mgmt", "relay-root-tls-secret");
    let before = file_bytes(&root);
    // `state/alias` is mgmt's folder under another name.
    std::os::unix::fs::symlink(fixture.state().join("mgmt"), fixture.state().join("alias"))
        .unwrap();
    fixture.write_config(
        "cluster-3.yaml",
        &workload(
            "cluster-3",
            &format!(
                "{{ directory: {{ path: {} }} }}",
                fixture.state().join("alias").display()
            ),
        ),
    );
    for args in [
        &["plan", "config"][..],
        &["apply", "config", "--auto-approve"],
        &["check", "config"],
    ] {
        let run = fixture.run(args);
        assert_eq!(run.code, 1, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr
                .contains("clusters `cluster-3` and `mgmt` are the same cluster")
                || run
                    .stderr
                    .contains("clusters `mgmt` and `cluster-3` are the same cluster"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert_eq!(file_bytes(&root), before, "mgmt's root Secret changed");
}

#[test]
fn a_namespace_folder_shared_through_a_symlink_is_the_same_storage_by_inode() {
    let fixture = Fixture::example("managed");
    fixture.apply();
    let root = fixture.file("mgmt", "relay-root-tls-secret");
    let before = file_bytes(&root);
    // cluster-3's own folder, whose namespace folder is mgmt's: the cluster
    // folders differ, the storage does not.
    let folder = fixture.state().join("cluster-3");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("../mgmt/gloo-mesh", folder.join("gloo-mesh")).unwrap();
    std::fs::write(
        fixture.config().join("cluster-3.yaml"),
        "apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata: { name: cluster-3 }\n",
    )
    .unwrap();
    let run = fixture.run(&["apply", "config", "--auto-approve"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("same device and inode"),
        "{}",
        run.stderr
    );
    assert_eq!(file_bytes(&root), before, "mgmt's root Secret changed");
}

#[test]
fn two_workloads_sharing_one_folder_through_a_symlink_are_refused_instead_of_flip_flopping() {
    let fixture = Fixture::example("managed-preprovisioned");
    fixture.apply();
    std::os::unix::fs::symlink(
        fixture.state().join("cluster-1"),
        fixture.state().join("cluster-1-alias"),
    )
    .unwrap();
    fixture.write_config(
        "cluster-2.yaml",
        &workload(
            "cluster-2",
            &format!(
                "{{ directory: {{ path: {} }} }}",
                fixture.state().join("cluster-1-alias").display()
            ),
        ),
    );
    let client = fixture.file("cluster-1", "relay-client-tls-secret");
    let before = file_bytes(&client);
    for _ in 0..2 {
        let run = fixture.run(&["apply", "config", "--auto-approve"]);
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("are the same cluster"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(
        file_bytes(&client),
        before,
        "cluster-1's client certificate was rewritten"
    );
}

#[test]
fn a_workload_root_secret_holding_a_ca_key_is_never_stripped() {
    let fixture = Fixture::example("managed");
    fixture.apply();
    // cluster-1's root Secret holds mgmt's root key (mgmt reached through a
    // bind mount looks just like this): relayctl refuses, it does not strip.
    let mgmt_root = fixture.secret("mgmt", "relay-root-tls-secret").unwrap();
    let mut workload_root = fixture
        .secret("cluster-1", "relay-root-tls-secret")
        .unwrap();
    workload_root.data.insert(
        "tls.key".into(),
        mgmt_root.data.get("tls.key").unwrap().clone(),
    );
    fixture.put("cluster-1", workload_root);
    let before = file_bytes(&fixture.file("cluster-1", "relay-root-tls-secret"));
    let run = fixture.run(&["apply", "config", "--auto-approve"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("never writes a workload's Secrets over a CA key"),
        "{}",
        run.stdout
    );
    assert_eq!(
        file_bytes(&fixture.file("cluster-1", "relay-root-tls-secret")),
        before
    );
    fixture.assert_no_leak(&[]);
}

// ---------------------------------------------------------------------------
// 2. Configuration can reach only what it should
// ---------------------------------------------------------------------------

fn custom_with_token_source(fixture: &Fixture, source: &str) {
    let trust = std::fs::read_to_string(fixture.config().join("relay-trust.yaml")).unwrap();
    assert!(trust.contains("  identityToken: { enabled: true }\n"));
    let trust = trust.replace(
        "  identityToken: { enabled: true }\n",
        &format!("  identityToken: {{ enabled: true, value: {source} }}\n"),
    );
    fixture.write_config("relay-trust.yaml", &trust);
}

#[test]
fn a_token_file_outside_the_config_folder_is_refused_before_anything_is_read() {
    for source in [
        "{ file: ../../../../etc/hostname }",
        "{ file: /etc/hostname }",
        "{ file: /var/run/secrets/kubernetes.io/serviceaccount/token }",
    ] {
        let fixture = Fixture::example("managed");
        custom_with_token_source(&fixture, source);
        let run = fixture.run(&["apply", "config", "--auto-approve"]);
        assert_eq!(run.code, 1, "{source}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("error[path-outside-config]")
                && run.stderr.contains("spec.identityToken.value.file"),
            "{source}: {}",
            run.stderr
        );
        assert!(!fixture.state().exists(), "{source}: something was written");
    }
}

#[test]
fn a_token_file_symlinked_out_of_the_config_folder_is_refused() {
    let fixture = Fixture::example("managed");
    let outside = fixture.dir.path().join("host-file");
    std::fs::write(&outside, "0123456789abcdef0123456789abcdef-host-secret").unwrap();
    std::os::unix::fs::symlink(&outside, fixture.config().join("token")).unwrap();
    custom_with_token_source(&fixture, "{ file: token }");
    let run = fixture.run(&["validate", "config"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("resolves outside the config folder (through a symlink)"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("host-secret"), "{}", run.stderr);
}

#[test]
fn a_manifest_symlinked_out_of_the_config_folder_is_not_read() {
    let fixture = Fixture::example("managed");
    let outside = fixture.dir.path().join("elsewhere.yaml");
    std::fs::write(&outside, "password: hunter2-from-the-host\n").unwrap();
    std::os::unix::fs::symlink(&outside, fixture.config().join("zz.yaml")).unwrap();
    let run = fixture.run(&["validate", "config"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("is outside"), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
}

#[test]
fn brought_tokens_must_be_strong_and_one_trailing_newline_of_a_file_is_stripped() {
    for (token, ok) in [
        ("0123456789abcdef0123456789abcdef\n", true),
        ("0123456789abcdef0123456789abcdef\r\n", true),
        ("0123456789abcdef0123456789abcdef\n\n", false),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
        ("12345678901234567890123456789012", false),
        ("short-token", false),
        ("0123456789abcdef 0123456789abcdef", false),
    ] {
        let fixture = Fixture::example("managed");
        fixture.write_config("token.txt", token);
        custom_with_token_source(&fixture, "{ file: token.txt }");
        let run = fixture.run(&["apply", "config", "--auto-approve"]);
        if ok {
            assert_eq!(run.code, 0, "{token:?}: {}", run.stderr);
            let written = fixture
                .secret("cluster-1", "relay-identity-token-secret")
                .unwrap();
            assert_eq!(
                written.data.get("token").unwrap().expose(),
                b"0123456789abcdef0123456789abcdef"
            );
        } else {
            assert_eq!(run.code, 1, "{token:?}: {}", run.stderr);
            assert!(
                run.stderr.contains("error[weak-token]"),
                "{token:?}: {}",
                run.stderr
            );
            assert!(!run.stderr.contains(token.trim()), "the token was echoed");
        }
    }
}

#[test]
fn a_directory_connection_outside_the_state_dir_needs_a_flag() {
    let fixture = Fixture::example("managed");
    let elsewhere = fixture.dir.path().join("elsewhere");
    fixture.write_config(
        "cluster-1.yaml",
        &workload(
            "cluster-1",
            &format!("{{ directory: {{ path: {} }} }}", elsewhere.display()),
        ),
    );
    let run = fixture.run(&["apply", "config", "--auto-approve"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("error[directory-outside-state-dir]"),
        "{}",
        run.stderr
    );
    assert!(!fixture.state().exists() && !elsewhere.exists());
    let run = fixture.run(&[
        "apply",
        "config",
        "--auto-approve",
        "--allow-outside-state-dir",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        elsewhere
            .join("gloo-mesh/relay-root-tls-secret.yaml")
            .exists()
    );
}

// ---------------------------------------------------------------------------
// 3. Files are what they claim to be
// ---------------------------------------------------------------------------

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn a_fifo_as_material_or_manifest_is_refused_without_hanging() {
    let fixture = Fixture::example("managed");
    mkfifo(&fixture.config().join("token.txt"));
    custom_with_token_source(&fixture, "{ file: token.txt }");
    for args in [
        &["validate", "config"][..],
        &["plan", "config"],
        &["apply", "config", "--auto-approve"],
    ] {
        let (run, _) = run_bounded(&fixture, args, Duration::from_secs(20));
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("is a FIFO, not a regular file"),
            "{}",
            run.stderr
        );
    }
    let fixture = Fixture::example("managed");
    mkfifo(&fixture.config().join("zz.yaml"));
    let (run, _) = run_bounded(&fixture, &["validate", "config"], Duration::from_secs(20));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("a FIFO"), "{}", run.stderr);
}

#[test]
fn dev_zero_as_material_is_refused_without_filling_memory() {
    let fixture = Fixture::example("managed");
    std::os::unix::fs::symlink("/dev/zero", fixture.config().join("zero")).unwrap();
    // Inside the config folder by its text, a device by what it is.
    custom_with_token_source(&fixture, "{ file: zero }");
    let (run, elapsed) = run_bounded(&fixture, &["validate", "config"], Duration::from_secs(20));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("outside the config folder") || run.stderr.contains("a device"),
        "{}",
        run.stderr
    );
    assert!(elapsed < Duration::from_secs(20));
}

/// A CA made with the OpenSSL CLI (`args` after `req -x509 -nodes`).
fn openssl_ca(dir: &Path, name: &str, args: &[&str]) {
    let status = Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "3650"])
        .args(args)
        .arg("-subj")
        .arg(format!("/CN={name}"))
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.crt")))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl for {name}");
}

fn custom_root(fixture: &Fixture, cert: &str, key: &str) {
    let trust = std::fs::read_to_string(fixture.config().join("relay-trust.yaml"))
        .unwrap()
        .replace(
            "cert: { file: material/root.crt }",
            &format!("cert: {{ file: {cert} }}"),
        )
        .replace(
            "privateKey: { file: material/root.key }",
            &format!("privateKey: {{ file: {key} }}"),
        );
    fixture.write_config("relay-trust.yaml", &trust);
}

#[test]
fn weak_ca_material_is_refused_with_the_reason() {
    let fixture = Fixture::example("custom");
    let material = fixture.config().join("material");
    openssl_ca(&material, "rsa1024", &["-newkey", "rsa:1024", "-sha256"]);
    custom_root(&fixture, "material/rsa1024.crt", "material/rsa1024.key");
    let run = fixture.run(&["validate", "config"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("has a 1024-bit RSA key; at least 2048 bits are required"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_key_that_does_not_match_is_reported_at_the_keys_own_file_and_field() {
    let fixture = Fixture::example("custom");
    let material = fixture.config().join("material");
    openssl_ca(
        &material,
        "other",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    custom_root(&fixture, "material/root.crt", "material/other.key");
    let run = fixture.run(&["validate", "config"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("file `config/material/other.key`")
            && run.stderr.contains("spec.ca.root.privateKey"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_bundle_of_1500_certificates_gives_one_short_diagnostic() {
    let fixture = Fixture::example("custom");
    let root = std::fs::read_to_string(fixture.config().join("material/root.crt")).unwrap();
    std::fs::write(
        fixture.config().join("material/huge.crt"),
        root.repeat(1500),
    )
    .unwrap();
    custom_root(&fixture, "material/huge.crt", "material/root.key");
    let run = fixture.run(&["validate", "config"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("holds 1500 certificates; at most 64 are read"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.len() < 4096,
        "{} bytes of output",
        run.stderr.len()
    );
}

#[test]
fn a_certificate_name_with_escape_sequences_is_refused_and_never_printed_raw() {
    use relayctl::pki::{self, CaRequest, OsKeySource};
    let fixture = Fixture::example("custom");
    let evil = "evil\u{1b}[2J\n  + gloo-mesh/relay-root-tls-secret  create: forged\n```";
    let root = pki::issue_root(
        &CaRequest {
            common_name: evil.into(),
            validity: relayctl::model::Duration::from_hours(87_600),
            key: Default::default(),
        },
        &OsKeySource,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let material = fixture.config().join("material");
    std::fs::write(material.join("evil.crt"), &root.cert_pem).unwrap();
    std::fs::write(material.join("evil.key"), root.key.to_pkcs8_pem().expose()).unwrap();
    custom_root(&fixture, "material/evil.crt", "material/evil.key");
    let run = fixture.run(&["validate", "config"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("control or invisible characters"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains('\u{1b}'),
        "an escape reached the terminal"
    );
    assert!(!run.stderr.contains("\n  + gloo-mesh"), "{}", run.stderr);
}

#[test]
fn an_observed_certificate_with_escape_sequences_cannot_forge_plan_or_check_lines() {
    use relayctl::pki::{self, CaRequest, OsKeySource};
    // `gloo` mode shows the product's Secrets as they are: the one place a
    // plan prints names of certificates relayctl did not check.
    let fixture = Fixture::example("gloo");
    let forged = "x\u{1b}[2J\n  + gloo-mesh/relay-server-tls-secret  create: forged\n```\n# PWNED";
    let root = pki::issue_root(
        &CaRequest {
            common_name: forged.into(),
            validity: relayctl::model::Duration::from_hours(87_600),
            key: Default::default(),
        },
        &OsKeySource,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let mut secret = fixture.secret("mgmt", "relay-root-tls-secret").unwrap();
    secret.data.insert(
        "ca.crt".into(),
        relayctl::secret::SecretBytes::new(root.cert_pem.clone().into_bytes()),
    );
    fixture.put("mgmt", secret);
    for args in [
        &["plan", "config"][..],
        &["plan", "config", "-o", "markdown"],
        &["check", "config"],
    ] {
        let run = fixture.run(args);
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(
            !all.contains('\u{1b}'),
            "{args:?}: an escape reached the output"
        );
        assert!(
            !all.contains("\n  + gloo-mesh/relay-server-tls-secret  create: forged"),
            "{args:?}: {all}"
        );
        assert!(!all.contains("\n# PWNED"), "{args:?}: {all}");
    }
}

// ---------------------------------------------------------------------------
// 4. The state directory is guarded like a key store
// ---------------------------------------------------------------------------

#[test]
fn a_symlinked_lock_file_never_clobbers_its_target() {
    let fixture = Fixture::example("managed");
    fixture.apply();
    let victim = fixture.dir.path().join("victim");
    std::fs::write(&victim, "root-owned file").unwrap();
    let lock = fixture.state().join("mgmt/.relayctl-prod.lock");
    let _ = std::fs::remove_file(&lock);
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    std::fs::remove_file(fixture.file("cluster-1", "relay-root-tls-secret")).unwrap();
    let run = fixture.run(&["apply", "config", "--auto-approve"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("is a symlink"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root-owned file");
}

#[test]
fn a_secret_planted_with_loose_permissions_is_refused_unless_fixed() {
    let fixture = Fixture::example("managed");
    fixture.apply();
    let root = fixture.file("mgmt", "relay-root-tls-secret");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = fixture.run(&["plan", "config"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("has mode 0644") && run.stdout.contains("--fix-permissions"),
        "{}",
        run.stdout
    );
    let run = fixture.run(&["plan", "config", "--fix-permissions"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("tightened"), "{}", run.stderr);
    assert_eq!(
        std::fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_secret_planted_by_another_user_is_refused() {
    if relayctl::files::current_uid() != 0 {
        // Only root can give a file to another user; the permission test
        // above covers the rest of the rule.
        return;
    }
    let fixture = Fixture::example("managed");
    fixture.apply();
    let root = fixture.file("mgmt", "relay-root-tls-secret");
    let status = Command::new("chown")
        .arg("65534:65534")
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    let run = fixture.run(&["plan", "config"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("is owned by uid 65534"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_group_writable_state_folder_is_refused() {
    let fixture = Fixture::example("managed");
    fixture.apply();
    std::fs::set_permissions(
        fixture.state().join("cluster-1"),
        std::fs::Permissions::from_mode(0o775),
    )
    .unwrap();
    let run = fixture.run(&["plan", "config"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("group- or world-writable"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_cluster_folder_symlinked_out_of_the_state_dir_is_refused() {
    let fixture = Fixture::example("managed");
    let elsewhere = fixture.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir_all(fixture.state()).unwrap();
    std::os::unix::fs::symlink(&elsewhere, fixture.state().join("cluster-1")).unwrap();
    let run = fixture.run(&["apply", "config", "--auto-approve"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("outside the state directory"),
        "{}",
        run.stdout
    );
    assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none());
}

// ---------------------------------------------------------------------------
// 5. What a crash leaves is cleaned up
// ---------------------------------------------------------------------------

#[test]
fn temp_files_left_by_a_killed_apply_are_removed_by_the_next_run() {
    let fixture = Fixture::example("managed");
    fixture.apply();
    let folder = fixture.state().join("mgmt/gloo-mesh");
    // What a SIGKILL between write and rename leaves: a private key in a
    // temporary file of a process that no longer exists.
    let leftover = folder.join(format!(
        ".relay-root-tls-secret.yaml.tmp-{}-12345",
        u32::MAX - 7
    ));
    std::fs::copy(folder.join("relay-root-tls-secret.yaml"), &leftover).unwrap();
    let run = fixture.apply();
    assert!(!leftover.exists(), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("mgmt: removed 1 temporary file left by an interrupted run"),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------
// 6. Observation reads exactly the catalogue
// ---------------------------------------------------------------------------

#[test]
fn a_stray_backup_copy_is_reported_and_does_not_block_convergence() {
    let fixture = Fixture::example("managed");
    fixture.apply();
    let folder = fixture.state().join("mgmt/gloo-mesh");
    std::fs::copy(
        folder.join("relay-root-tls-secret.yaml"),
        folder.join("backup.yaml"),
    )
    .unwrap();
    let (code, run) = fixture.plan_code();
    assert_eq!(code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("warning: mgmt: stray file") && run.stderr.contains("backup.yaml"),
        "{}",
        run.stderr
    );
    // Converges: an apply is a no-op, not "changed since it was observed".
    let run = fixture.apply();
    assert!(run.stderr.contains("Nothing to apply."), "{}", run.stderr);
}

#[test]
fn a_secret_file_whose_name_was_edited_is_corrupt_not_a_new_ca() {
    let fixture = Fixture::example("managed");
    fixture.apply();
    let root = fixture.file("mgmt", "relay-root-tls-secret");
    let text = std::fs::read_to_string(&root)
        .unwrap()
        .replace("name: relay-root-tls-secret", "name: something-else");
    std::fs::write(&root, text).unwrap();
    let (code, run) = fixture.plan_code();
    assert_eq!(code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("× unreadable")
            && run
                .stdout
                .contains("holds Secret `gloo-mesh/something-else`"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("create: missing"), "{}", run.stdout);
}

#[test]
fn extra_data_keys_in_a_relay_secret_are_drift() {
    let fixture = Fixture::example("managed");
    fixture.apply();
    let mut token = fixture
        .secret("cluster-1", "relay-identity-token-secret")
        .unwrap();
    token.data.insert(
        "backdoor".into(),
        relayctl::secret::SecretBytes::from("x".to_owned()),
    );
    fixture.put("cluster-1", token);
    let (code, run) = fixture.plan_code();
    assert_eq!(code, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("unexpected data key `backdoor`"),
        "{}",
        run.stdout
    );
    fixture.apply();
    assert!(
        !fixture
            .secret("cluster-1", "relay-identity-token-secret")
            .unwrap()
            .data
            .contains_key("backdoor")
    );
}

#[test]
fn check_fails_when_the_managed_root_lost_its_key() {
    let fixture = Fixture::example("managed");
    fixture.apply();
    let mut root = fixture.secret("mgmt", "relay-root-tls-secret").unwrap();
    root.data.remove("tls.key");
    fixture.put("mgmt", root);
    let run = fixture.run(&["check", "config"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("× root CA has no `tls.key`"),
        "{}",
        run.stdout
    );
}

// ---------------------------------------------------------------------------
// 8. Messages that tell the truth
// ---------------------------------------------------------------------------

#[test]
fn quiet_silences_status_lines_and_keeps_errors() {
    let fixture = Fixture::example("managed");
    let run = fixture.run(&["apply", "config", "--auto-approve", "-q"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "", "-q printed status lines");
}

#[test]
fn apply_complete_is_never_printed_with_exit_1() {
    let fixture = Fixture::example("managed");
    fixture.apply();
    // cluster-2 holds a Secret relayctl does not own: a conflict, exit 1.
    let mut root = fixture
        .secret("cluster-2", "relay-root-tls-secret")
        .unwrap();
    root.labels.clear();
    fixture.put("cluster-2", root);
    std::fs::remove_file(fixture.file("cluster-1", "relay-root-tls-secret")).unwrap();
    let run = fixture.run(&["apply", "config", "--auto-approve"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(!run.stderr.contains("Apply complete"), "{}", run.stderr);
    assert!(run.stderr.contains("Apply incomplete"), "{}", run.stderr);
}

#[test]
fn an_apply_refused_for_want_of_confirmation_creates_nothing() {
    let fixture = Fixture::example("managed");
    let run = fixture.run(&["apply", "config"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("refusing to apply without confirmation"),
        "{}",
        run.stderr
    );
    assert!(
        !fixture.state().exists(),
        "a refused apply left files behind"
    );
}
