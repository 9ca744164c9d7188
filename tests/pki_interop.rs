//! Interop tests of the PKI engine that do not trust our own parser: OpenSSL
//! verifies and prints what we issue, rustls and OpenSSL complete (or refuse)
//! real mTLS handshakes with it, and keys OpenSSL generates are read back.
//!
//! Needs `/usr/bin/openssl` (OpenSSL 3).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use relayctl::model::{DnsLabel, Duration, KeyAlgorithm};
use relayctl::pki::testing::PooledKeySource;
use relayctl::pki::{
    CaRequest, ClientRequest, Issued, Issuer, ServerRequest, Usage, inspect_certificate,
    inspect_private_key, issue_client, issue_intermediate, issue_root, issue_server, verify_chain,
};
use relayctl::secret::SecretBytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use time::OffsetDateTime;

const OPENSSL: &str = "/usr/bin/openssl";
const AUTHORITY: &str = "gloo-mesh-mgmt-server.gloo-mesh";

/// One relay PKI: root, intermediate, server and client leaves, plus an
/// expired client leaf, all issued relative to the real clock (handshakes
/// use it).
struct Pki {
    root: Issued,
    intermediate: Issued,
    server: Issued,
    client: Issued,
    expired_client: Issued,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn issue_pki(key: KeyAlgorithm) -> Pki {
    issue_pki_named(key, "relay-root-ca")
}

/// A second, unrelated PKI. Its root has another name: the pooled test keys
/// are shared by every test of the process, so its key may be the first
/// PKI's, and only the name keeps "another root" another root.
fn issue_other_pki(key: KeyAlgorithm) -> Pki {
    issue_pki_named(key, "other-root-ca")
}

fn issue_pki_named(key: KeyAlgorithm, root_name: &str) -> Pki {
    let keys = PooledKeySource;
    let start = now() - time::Duration::days(30);
    let root = issue_root(
        &CaRequest {
            common_name: root_name.to_owned(),
            validity: Duration::from_hours(87_600),
            key,
        },
        &keys,
        start,
    )
    .expect("root");
    let intermediate = issue_intermediate(
        &CaRequest {
            common_name: "relay-signing-ca".to_owned(),
            validity: Duration::from_hours(43_800),
            key,
        },
        &Issuer::from_issued(&root).expect("root issuer"),
        &keys,
        start,
    )
    .expect("intermediate");
    let signing = Issuer::from_issued(&intermediate).expect("signing issuer");
    let server = issue_server(
        &ServerRequest {
            authority: AUTHORITY.to_owned(),
            dns_names: vec!["*.gloo-mesh".to_owned()],
            validity: Duration::from_hours(8760),
            key,
        },
        &signing,
        &keys,
        now(),
    )
    .expect("server");
    let client_request = |hours| ClientRequest {
        cluster_name: DnsLabel::parse("cluster-1").expect("label"),
        validity: Duration::from_hours(hours),
        key,
    };
    let client = issue_client(&client_request(8760), &signing, &keys, now()).expect("client");
    let expired_client = issue_client(&client_request(24), &signing, &keys, start).expect("old");
    Pki {
        root,
        intermediate,
        server,
        client,
        expired_client,
    }
}

impl Pki {
    fn chain(&self, leaf: &Issued) -> String {
        format!("{}{}", leaf.cert_pem, self.intermediate.cert_pem)
    }
}

/// Files for OpenSSL in a temporary directory (removed on drop).
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write");
        path
    }

    /// Writes `leaf`'s certificate, key and the intermediate; returns
    /// (cert, key, chain) paths.
    fn leaf(&self, pki: &Pki, leaf: &Issued, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        (
            self.write(&format!("{name}.crt"), leaf.cert_pem.as_bytes()),
            self.write(&format!("{name}.key"), leaf.key.to_pkcs8_pem().expose()),
            self.write(
                &format!("{name}-chain.crt"),
                pki.intermediate.cert_pem.as_bytes(),
            ),
        )
    }
}

fn openssl(args: &[&str]) -> Output {
    Command::new(OPENSSL)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn openssl_verify(root: &Path, intermediate: &Path, leaf: &Path, purpose: &str) -> Output {
    openssl(&[
        "verify",
        "-x509_strict",
        "-purpose",
        purpose,
        "-CAfile",
        path(root),
        "-untrusted",
        path(intermediate),
        path(leaf),
    ])
}

#[test]
fn openssl_verifies_every_chain_for_its_purpose_only() {
    for key in KeyAlgorithm::ALL {
        let pki = issue_pki(key);
        let other = issue_other_pki(key);
        let files = Files::new();
        let root = files.write("root.crt", pki.root.cert_pem.as_bytes());
        let other_root = files.write("other-root.crt", other.root.cert_pem.as_bytes());
        let inter = files.write("inter.crt", pki.intermediate.cert_pem.as_bytes());
        let server = files.write("server.crt", pki.server.cert_pem.as_bytes());
        let client = files.write("client.crt", pki.client.cert_pem.as_bytes());
        let expired = files.write("expired.crt", pki.expired_client.cert_pem.as_bytes());

        for (leaf, purpose) in [
            (&server, "sslserver"),
            (&server, "sslclient"),
            (&client, "sslclient"),
        ] {
            let out = openssl_verify(&root, &inter, leaf, purpose);
            assert!(out.status.success(), "{key} {purpose}: {}", text(&out));
            assert!(text(&out).contains(": OK"), "{}", text(&out));
        }
        // The intermediate itself verifies as a CA under the root.
        let out = openssl(&[
            "verify",
            "-x509_strict",
            "-CAfile",
            path(&root),
            path(&inter),
        ]);
        assert!(out.status.success(), "{key}: {}", text(&out));

        let refused = [
            (
                openssl_verify(&root, &inter, &client, "sslserver"),
                "client cert as server",
            ),
            (
                openssl_verify(&other_root, &inter, &server, "sslserver"),
                "other root",
            ),
            (
                openssl_verify(&root, &inter, &expired, "sslclient"),
                "expired leaf",
            ),
        ];
        for (out, case) in refused {
            assert!(
                !out.status.success(),
                "{key} {case} verified: {}",
                text(&out)
            );
        }
        let out = openssl_verify(&root, &inter, &expired, "sslclient");
        assert!(text(&out).contains("expired"), "{}", text(&out));
    }
}

#[test]
fn openssl_sees_the_extensions_of_design_section_1() {
    let pki = issue_pki(KeyAlgorithm::Rsa2048);
    let files = Files::new();
    let show = |name: &str, issued: &Issued| {
        let file = files.write(name, issued.cert_pem.as_bytes());
        let out = openssl(&["x509", "-noout", "-text", "-in", path(&file)]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");

    let root = squash(&show("root.crt", &pki.root));
    assert!(
        root.contains("X509v3 Basic Constraints: critical CA:TRUE"),
        "{root}"
    );
    assert!(root.contains("Certificate Sign, CRL Sign"), "{root}");
    assert!(root.contains("X509v3 Subject Key Identifier"), "{root}");
    assert!(root.contains("Public-Key: (2048 bit)"), "{root}");

    let inter = squash(&show("inter.crt", &pki.intermediate));
    assert!(
        inter.contains("X509v3 Basic Constraints: critical CA:TRUE, pathlen:0"),
        "{inter}"
    );
    assert!(
        inter.contains("X509v3 Key Usage: critical Digital Signature, Certificate Sign, CRL Sign"),
        "{inter}"
    );
    assert!(inter.contains("X509v3 Authority Key Identifier"), "{inter}");
    assert!(inter.contains("Issuer: CN = relay-root-ca"), "{inter}");

    let server = squash(&show("server.crt", &pki.server));
    assert!(
        server.contains("X509v3 Basic Constraints: critical CA:FALSE"),
        "{server}"
    );
    assert!(
        server.contains("X509v3 Key Usage: critical Digital Signature, Key Encipherment"),
        "{server}"
    );
    assert!(
        server.contains("X509v3 Extended Key Usage: TLS Web Server Authentication, TLS Web Client Authentication"),
        "{server}"
    );
    assert!(
        server.contains(&format!(
            "X509v3 Subject Alternative Name: DNS:{AUTHORITY}, DNS:*.gloo-mesh"
        )),
        "{server}"
    );
    assert!(
        server.contains(&format!("Subject: CN = {AUTHORITY}")),
        "{server}"
    );
    assert!(
        server.contains("Signature Algorithm: sha256WithRSAEncryption"),
        "{server}"
    );

    let client = squash(&show("client.crt", &pki.client));
    assert!(
        client.contains("X509v3 Extended Key Usage: TLS Web Client Authentication X509v3"),
        "{client}"
    );
    assert!(
        client.contains("X509v3 Subject Alternative Name: DNS:cluster-1"),
        "{client}"
    );
    assert!(client.contains("Subject: CN = cluster-1"), "{client}");

    // Our fingerprints and serials are OpenSSL's.
    let file = files.write("s.crt", pki.server.cert_pem.as_bytes());
    let out = openssl(&[
        "x509",
        "-noout",
        "-fingerprint",
        "-sha256",
        "-serial",
        "-in",
        path(&file),
    ]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&pki.server.facts.sha256_fingerprint),
        "{shown}"
    );
    let serial = pki.server.facts.serial.replace(':', "").to_uppercase();
    assert!(
        shown.contains(&format!("serial={serial}")),
        "{shown} vs {serial}"
    );
}

#[test]
fn keys_made_by_openssl_are_read_and_can_sign() {
    let files = Files::new();
    for (label, args) in [
        (
            "EC PRIVATE KEY",
            vec!["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        ),
        (
            "EC PRIVATE KEY",
            vec!["ecparam", "-name", "secp384r1", "-genkey", "-noout"],
        ),
        ("RSA PRIVATE KEY", vec!["genrsa", "-traditional", "2048"]),
        (
            "PRIVATE KEY",
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
        ),
    ] {
        let out = openssl(&args);
        assert!(out.status.success(), "{}", text(&out));
        let key_pem = out.stdout;
        assert!(String::from_utf8_lossy(&key_pem).contains(&format!("BEGIN {label}")));
        let key_file = files.write("user.key", &key_pem);
        let facts = inspect_private_key(&SecretBytes::new(key_pem.clone())).expect(label);

        // OpenSSL's view of the public key has the same fingerprint.
        let out = openssl(&["pkey", "-in", path(&key_file), "-pubout", "-outform", "DER"]);
        assert!(out.status.success(), "{}", text(&out));
        let spki_sha = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&out.stdout))
        };
        assert_eq!(facts.spki_sha256, spki_sha, "{label}");

        // A user's root made by OpenSSL can issue our intermediate (custom mode).
        let root_file = files.dir.path().join("user-root.crt");
        let out = openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            path(&key_file),
            "-subj",
            "/CN=user-root",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            path(&root_file),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let root_pem = std::fs::read(&root_file).expect("read root");
        let key = relayctl::pki::PrivateKey::from_pem(&SecretBytes::new(key_pem)).expect("key");
        let issuer = Issuer::new(&root_pem, key).expect("user root as issuer");
        let inter = issue_intermediate(
            &CaRequest {
                common_name: "relay-signing-ca".to_owned(),
                validity: Duration::from_hours(24 * 7),
                key: KeyAlgorithm::EcdsaP256,
            },
            &issuer,
            &PooledKeySource,
            now(),
        )
        .expect("intermediate under user root");
        let inter_file = files.write("inter.crt", inter.cert_pem.as_bytes());
        let out = openssl(&[
            "verify",
            "-x509_strict",
            "-CAfile",
            path(&root_file),
            path(&inter_file),
        ]);
        assert!(out.status.success(), "{label}: {}", text(&out));
    }
}

// --- rustls, in process ---------------------------------------------------

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certs")
}

fn key_der(issued: &Issued) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(issued.key.to_pkcs8_pem().expose()).expect("key")
}

fn roots(pem: &str) -> Arc<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    for cert in certs(pem) {
        store.add(cert).expect("root");
    }
    Arc::new(store)
}

/// Runs a full TLS handshake in memory: `server_pki`'s root verifies the
/// client, `client_roots` verify the server presented as `server_name`.
fn rustls_handshake(
    server_chain: &str,
    server_key: &Issued,
    server_roots: &str,
    client_chain: &str,
    client_key: &Issued,
    client_roots: &str,
    server_name: &str,
) -> Result<(), String> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots(server_roots),
        provider(),
    )
    .build()
    .expect("client verifier");
    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(server_chain), key_der(server_key))
        .expect("server config");
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots(client_roots))
        .with_client_auth_cert(certs(client_chain), key_der(client_key))
        .expect("client config");
    let name = ServerName::try_from(server_name.to_owned()).expect("name");
    let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).expect("client");
    let mut server = rustls::ServerConnection::new(Arc::new(server_config)).expect("server");

    // Application data both ways proves the handshake really completed.
    client.writer().write_all(b"ping").expect("write");
    for _ in 0..20 {
        let mut buf = Vec::new();
        client.write_tls(&mut buf).map_err(|e| e.to_string())?;
        server.read_tls(&mut &buf[..]).map_err(|e| e.to_string())?;
        server
            .process_new_packets()
            .map_err(|e| format!("server: {e}"))?;
        let mut buf = Vec::new();
        server.write_tls(&mut buf).map_err(|e| e.to_string())?;
        client.read_tls(&mut &buf[..]).map_err(|e| e.to_string())?;
        client
            .process_new_packets()
            .map_err(|e| format!("client: {e}"))?;
        let mut got = [0u8; 4];
        if !server.is_handshaking()
            && !client.is_handshaking()
            && server.reader().read_exact(&mut got).is_ok()
        {
            assert_eq!(&got, b"ping");
            return Ok(());
        }
    }
    Err("handshake did not finish".to_owned())
}

#[test]
fn rustls_mtls_succeeds_with_matching_certs_and_fails_otherwise() {
    for key in KeyAlgorithm::ALL {
        let pki = issue_pki(key);
        let other = issue_other_pki(key);
        let root = pki.root.cert_pem.as_str();
        let server_chain = pki.chain(&pki.server);
        let client_chain = pki.chain(&pki.client);
        let run = |s_chain: &str, s_key: &Issued, c_chain: &str, c_key: &Issued, name: &str| {
            rustls_handshake(s_chain, s_key, root, c_chain, c_key, root, name)
        };

        run(
            &server_chain,
            &pki.server,
            &client_chain,
            &pki.client,
            AUTHORITY,
        )
        .unwrap_or_else(|e| panic!("{key}: matching certs failed: {e}"));

        let wrong_san = run(
            &server_chain,
            &pki.server,
            &client_chain,
            &pki.client,
            "other.example.com",
        )
        .expect_err("wrong SAN");
        assert!(
            wrong_san.contains("client:") && wrong_san.contains("not valid for name"),
            "{wrong_san}"
        );

        let expired_chain = pki.chain(&pki.expired_client);
        let expired = run(
            &server_chain,
            &pki.server,
            &expired_chain,
            &pki.expired_client,
            AUTHORITY,
        )
        .expect_err("expired client leaf");
        assert!(
            expired.contains("server:") && expired.contains("expired"),
            "{expired}"
        );

        let foreign_client = other.chain(&other.client);
        let foreign = run(
            &server_chain,
            &pki.server,
            &foreign_client,
            &other.client,
            AUTHORITY,
        )
        .expect_err("client from another root");
        assert!(
            foreign.starts_with("server: invalid peer certificate"),
            "{foreign}"
        );
        let foreign_server = other.chain(&other.server);
        let foreign = run(
            &foreign_server,
            &other.server,
            &client_chain,
            &pki.client,
            AUTHORITY,
        )
        .expect_err("server from another root");
        assert!(
            foreign.starts_with("client: invalid peer certificate"),
            "{foreign}"
        );

        let as_server = run(
            &client_chain,
            &pki.client,
            &client_chain,
            &pki.client,
            "cluster-1",
        )
        .expect_err("client cert as server cert");
        assert!(
            as_server.starts_with("client: invalid peer certificate"),
            "{as_server}"
        );

        // Our verifier agrees with rustls on every case.
        let at = now();
        verify_chain(
            server_chain.as_bytes(),
            root.as_bytes(),
            Usage::Server,
            Some(AUTHORITY),
            at,
        )
        .expect("verify server");
        verify_chain(
            client_chain.as_bytes(),
            root.as_bytes(),
            Usage::Client,
            Some("cluster-1"),
            at,
        )
        .expect("verify client");
        assert!(
            verify_chain(
                client_chain.as_bytes(),
                root.as_bytes(),
                Usage::Server,
                None,
                at
            )
            .is_err()
        );
        assert!(
            verify_chain(
                expired_chain.as_bytes(),
                root.as_bytes(),
                Usage::Client,
                None,
                at
            )
            .is_err()
        );
        assert!(
            verify_chain(
                foreign_client.as_bytes(),
                root.as_bytes(),
                Usage::Client,
                None,
                at
            )
            .is_err()
        );
        // And the facts we report match what rustls accepted.
        assert_eq!(
            inspect_certificate(pki.server.cert_pem.as_bytes()).expect("facts"),
            pki.server.facts
        );
    }
}

// --- OpenSSL s_server / s_client over loopback ------------------------------

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts `openssl s_server` requiring a client certificate; returns once it
/// accepts connections.
fn s_server(files: &Files, pki: &Pki, leaf: &Issued, port: u16) -> Server {
    let (cert, key, chain) = files.leaf(pki, leaf, "srv");
    let root = files.write("srv-root.crt", pki.root.cert_pem.as_bytes());
    let mut child = Command::new(OPENSSL)
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-naccept",
            "1",
            "-tls1_2",
            "-cert",
            path(&cert),
            "-key",
            path(&key),
            "-cert_chain",
            path(&chain),
            "-CAfile",
            path(&root),
            "-Verify",
            "2",
            "-verify_return_error",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn s_server");
    let stdout = child.stdout.take().expect("stdout");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("ACCEPT") {
                let _ = ready_tx.send(());
            }
        }
    });
    let server = Server { child };
    ready_rx
        .recv_timeout(StdDuration::from_secs(15))
        .expect("s_server did not start");
    // The port really listens (connect/close would consume -naccept 1, so only
    // check that nothing else answered before: s_server said ACCEPT).
    server
}

/// Runs `openssl s_client` against `port`; true when the handshake and
/// verification succeeded on both sides.
fn s_client(
    files: &Files,
    pki: &Pki,
    leaf: &Issued,
    roots_pem: &str,
    port: u16,
    name: &str,
) -> (bool, String) {
    let (cert, key, chain) = files.leaf(pki, leaf, "cli");
    let root = files.write("cli-root.crt", roots_pem.as_bytes());
    let mut child = Command::new(OPENSSL)
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-tls1_2",
            "-cert",
            path(&cert),
            "-key",
            path(&key),
            "-cert_chain",
            path(&chain),
            "-CAfile",
            path(&root),
            "-verify_return_error",
            "-verify_hostname",
            name,
            "-servername",
            name,
            "-brief",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn s_client");
    // Send a line after the handshake, then close stdin so s_client exits.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"hello\n");
    }
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        match child.try_wait().expect("wait") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                break;
            }
            None => std::thread::sleep(StdDuration::from_millis(50)),
        }
    }
    let output = child.wait_with_output().expect("output");
    let shown = text(&output);
    let ok = output.status.success() && shown.contains("Verification: OK");
    (ok, shown)
}

#[test]
fn openssl_mtls_over_loopback_succeeds_with_matching_certs_and_fails_otherwise() {
    for key in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa3072] {
        let pki = issue_pki(key);
        let other = issue_other_pki(key);
        let root = pki.root.cert_pem.clone();
        let files = Files::new();

        let run = |server_pki: &Pki,
                   server_leaf: &Issued,
                   client_pki: &Pki,
                   client_leaf: &Issued,
                   name: &str| {
            let port = free_port();
            let _server = s_server(&files, server_pki, server_leaf, port);
            s_client(&files, client_pki, client_leaf, &root, port, name)
        };

        let (ok, shown) = run(&pki, &pki.server, &pki, &pki.client, AUTHORITY);
        assert!(ok, "{key}: matching certs failed: {shown}");
        let (ok, shown) = run(
            &pki,
            &pki.server,
            &pki,
            &pki.client,
            "wrong.gloo-mesh.example",
        );
        assert!(!ok, "{key}: wrong SAN accepted: {shown}");
        assert!(shown.contains("hostname mismatch"), "{shown}");
        let (ok, shown) = run(&pki, &pki.server, &pki, &pki.expired_client, AUTHORITY);
        assert!(!ok, "{key}: expired client accepted: {shown}");
        let (ok, shown) = run(&pki, &pki.server, &other, &other.client, AUTHORITY);
        assert!(!ok, "{key}: client from another root accepted: {shown}");
        let (ok, shown) = run(&other, &other.server, &pki, &pki.client, AUTHORITY);
        assert!(!ok, "{key}: server from another root accepted: {shown}");
        let (ok, shown) = run(&pki, &pki.client, &pki, &pki.client, "cluster-1");
        assert!(!ok, "{key}: client cert accepted as server cert: {shown}");
        assert!(shown.contains("unsuitable certificate purpose"), "{shown}");
    }
}

#[test]
fn a_loopback_tcp_rustls_server_accepts_an_openssl_client() {
    // rustls server on a real socket, OpenSSL client: the two stacks agree.
    let pki = issue_pki(KeyAlgorithm::EcdsaP384);
    let files = Files::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let root = pki.root.cert_pem.clone();
    let server_chain = pki.chain(&pki.server);
    let server_key = key_der(&pki.server);
    let handle = std::thread::spawn(move || -> Result<(), String> {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&root), provider())
                .build()
                .map_err(|e| e.to_string())?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&server_chain), server_key)
            .map_err(|e| e.to_string())?;
        listener.set_nonblocking(false).map_err(|e| e.to_string())?;
        let (mut socket, _) = listener.accept().map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(StdDuration::from_secs(15)))
            .map_err(|e| e.to_string())?;
        let mut conn =
            rustls::ServerConnection::new(Arc::new(config)).map_err(|e| e.to_string())?;
        conn.complete_io(&mut socket).map_err(|e| e.to_string())?;
        let peer = conn.peer_certificates().map(<[_]>::len).unwrap_or(0);
        // Read the client's line, then close cleanly so s_client exits 0.
        let mut line = Vec::new();
        while !line.ends_with(b"\n") {
            conn.complete_io(&mut socket).map_err(|e| e.to_string())?;
            let mut chunk = [0u8; 64];
            match conn.reader().read(&mut chunk) {
                Ok(n) => line.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        if line != b"hello\n" {
            return Err(format!("unexpected data {line:?}"));
        }
        conn.send_close_notify();
        conn.complete_io(&mut socket).map_err(|e| e.to_string())?;
        if peer == 0 {
            return Err("no client certificate".to_owned());
        }
        Ok(())
    });
    let (ok, shown) = s_client(
        &files,
        &pki,
        &pki.client,
        &pki.root.cert_pem,
        port,
        AUTHORITY,
    );
    assert!(ok, "{shown}");
    handle
        .join()
        .expect("server thread")
        .expect("rustls server");
    let _ = TcpStream::connect(("127.0.0.1", port));
}
