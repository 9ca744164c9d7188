//! The Kubernetes backend against real API servers (DESIGN.md §3, §7): every
//! example scenario converges on three real clusters (mgmt, cluster-1,
//! cluster-2), drift is repaired, faults are contained to their cluster, the
//! apply lock is a real Lease, and the RBAC of `examples/deploy/` suffices.
//!
//! Tests drive the real `relayctl` binary with manifests written to a
//! temporary folder; they read and mutate the clusters with the library's
//! backend and the environment's `kubectl`. Each test uses its own relay
//! namespace (namespaces are never deleted: no controller-manager runs).

#[path = "support/kubectl.rs"]
mod kubectl_cmd;

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use relayctl::backend::{Backend, BackendError, Reach, kube_backend};
use relayctl::model::{Connection, DnsLabel};
use relayctl::observed::{LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY, SecretObject};
use relayctl::plan::{Action, Write};
use relayctl::relay::RelaySecret;
use relayctl::secret::SecretBytes;
use relayctl_kube_env::KubeEnv;

const ROOT_SECRET: &str = RelaySecret::Root.name();
const SIGNING_SECRET: &str = RelaySecret::Signing.name();
const SERVER_SECRET: &str = RelaySecret::Server.name();
const TOKEN_SECRET: &str = RelaySecret::Token.name();
const CLIENT_SECRET: &str = RelaySecret::Client.name();

/// Apiservers of this binary's shared environment: mgmt, cluster-1, cluster-2.
const APISERVERS: usize = 3;
/// The `RelayTrust` name of every example.
const INSTANCE: &str = "prod";

fn env() -> &'static KubeEnv {
    KubeEnv::shared(APISERVERS)
}

// ---------------------------------------------------------------------------
// Running things
// ---------------------------------------------------------------------------

/// How a `relayctl` run ended.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    #[track_caller]
    fn expect(&self, code: i32, what: &str) -> &Self {
        assert_eq!(
            self.code, code,
            "{what}: exit code {} (want {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `relayctl` in `dir` with no ambient kubeconfig (`KUBECONFIG` unset,
/// `HOME` = `dir`), plus `env`.
fn relayctl(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_relayctl"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .env("HOME", dir)
        .env("NO_COLOR", "1")
        .env("RELAYCTL_STATE_DIR", dir.join("state"))
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run relayctl");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

fn apply(dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["apply", ".", "--auto-approve"];
    args.extend_from_slice(extra);
    relayctl(dir, &args, &[])
}

fn plan(dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["plan", ".", "--detailed-exitcode"];
    args.extend_from_slice(extra);
    relayctl(dir, &args, &[])
}

/// Applies, then checks that the next plan has no changes.
#[track_caller]
fn converge(dir: &Path, extra: &[&str]) -> Run {
    let run = apply(dir, extra);
    run.expect(0, "apply");
    plan(dir, extra).expect(0, "the plan after apply has no changes");
    run
}

/// `kubectl --context CONTEXT ARGS` with the environment's admin kubeconfig.
#[track_caller]
fn kubectl_with(kubeconfig: &Path, context: &str, args: &[&str], stdin: Option<&str>) -> String {
    kubectl_cmd::kubectl(
        &env().binaries().kubectl(),
        kubeconfig,
        context,
        args,
        stdin,
    )
}

#[track_caller]
fn kubectl(context: &str, args: &[&str]) -> String {
    kubectl_with(env().kubeconfig(), context, args, None)
}

#[track_caller]
fn kubectl_stdin(context: &str, args: &[&str], stdin: &str) -> String {
    kubectl_with(env().kubeconfig(), context, args, Some(stdin))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Sets data keys of a Secret the way a person with `kubectl` would.
#[track_caller]
fn patch_data(context: &str, ns: &str, name: &str, data: &[(&str, &[u8])]) {
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(b64(v))))
        .collect();
    let patch = serde_json::json!({ "data": data }).to_string();
    kubectl(
        context,
        &[
            "-n", ns, "patch", "secret", name, "--type", "merge", "-p", &patch,
        ],
    );
}

fn reach(dir: &Path) -> Reach {
    Reach {
        state_dir: dir.join("state"),
        kubeconfig: None,
        timeout: Duration::from_secs(30),
        fix_permissions: false,
        allow_outside_state_dir: false,
        parallelism: 16,
    }
}

/// The library's backend for one of the environment's contexts.
fn backend(context: &str) -> Arc<dyn Backend> {
    let name = DnsLabel::parse(context).expect("cluster name");
    let connection = Connection::Kubeconfig {
        context: context.to_owned(),
        path: Some(env().kubeconfig().to_path_buf()),
        limit: None,
    };
    kube_backend(&name, &connection, &reach(Path::new("/nonexistent")))
        .unwrap_or_else(|e| panic!("backend for {context}: {e}"))
}

/// The relay Secrets of `ns` on `context`, by name.
fn secrets(context: &str, ns: &str) -> relayctl::observed::SmallMap<String, SecretObject> {
    let names: Vec<String> = relayctl::relay::RelaySecret::ALL
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    backend(context)
        .observe(ns, INSTANCE, &names)
        .unwrap_or_else(|e| panic!("observe {context}/{ns}: {e}"))
        .secrets
}

#[track_caller]
fn data<'a>(
    secrets: &'a relayctl::observed::SmallMap<String, SecretObject>,
    name: &str,
    key: &str,
) -> &'a [u8] {
    secrets
        .get(name)
        .unwrap_or_else(|| panic!("Secret `{name}` is missing"))
        .get(key)
        .unwrap_or_else(|| panic!("Secret `{name}` has no `{key}`"))
        .expose()
}

/// DNS SANs of the first certificate of a PEM chain.
fn sans(pem: &[u8]) -> Vec<String> {
    relayctl::pki::inspect_bundle(pem)
        .expect("certificates")
        .remove(0)
        .dns_names
}

// ---------------------------------------------------------------------------
// Writing manifests
// ---------------------------------------------------------------------------

/// One cluster of a scenario: its name, its kubeconfig context and, if the
/// manifest names it, the kubeconfig file.
struct Target {
    name: String,
    context: String,
    path: Option<PathBuf>,
}

impl Target {
    fn admin(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            context: name.to_owned(),
            path: Some(env().kubeconfig().to_path_buf()),
        }
    }

    fn ambient(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            context: name.to_owned(),
            path: None,
        }
    }

    fn via(name: &str, context: &str, path: &Path) -> Self {
        Self {
            name: name.to_owned(),
            context: context.to_owned(),
            path: Some(path.to_path_buf()),
        }
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clusters")
}

/// `examples/clusters/<example>` rewritten into a fresh folder: relay
/// namespace `ns`, and a `kubeconfig` connection for every cluster of
/// `targets` (the first is the management cluster). `custom` and `external`
/// get their material from `make-material.sh`.
fn scenario(example: &str, ns: &str, targets: &[Target]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("relayctl-{ns}-"))
        .tempdir()
        .expect("tempdir");
    let source = examples().join(example);
    let trust = std::fs::read_to_string(source.join("relay-trust.yaml")).expect("relay-trust");
    let trust = if trust.contains("  namespace: gloo-mesh\n") {
        trust.replace("  namespace: gloo-mesh\n", &format!("  namespace: {ns}\n"))
    } else {
        trust.replacen("\nspec:\n", &format!("\nspec:\n  namespace: {ns}\n"), 1)
    };
    std::fs::write(dir.path().join("relay-trust.yaml"), trust).expect("write relay-trust");
    for (i, target) in targets.iter().enumerate() {
        let file = source.join(format!("{}.yaml", target.name));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|_| {
            assert!(i > 0, "the management cluster comes from the example");
            format!(
                "apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata:\n  name: {}\n",
                target.name
            )
        });
        let connection = match &target.path {
            Some(path) => format!(
                "  connection: {{ kubeconfig: {{ context: {}, path: {} }} }}\n",
                target.context,
                path.display()
            ),
            None => format!(
                "  connection: {{ kubeconfig: {{ context: {} }} }}\n",
                target.context
            ),
        };
        let text = if text.contains("\nspec:\n") {
            text.replacen("\nspec:\n", &format!("\nspec:\n{connection}"), 1)
        } else {
            format!("{text}spec:\n{connection}")
        };
        std::fs::write(dir.path().join(format!("{}.yaml", target.name)), text)
            .expect("write cluster");
    }
    if matches!(example, "custom" | "external") {
        make_material(&dir.path().join("material"));
    }
    dir
}

/// The user's own PKI, as the examples' README creates it.
fn make_material(out: &Path) {
    let status = Command::new("bash")
        .arg(examples().join("make-material.sh"))
        .arg(out)
        .args(["cluster-1", "cluster-2"])
        .stderr(Stdio::null())
        .status()
        .expect("run make-material.sh");
    assert!(status.success(), "make-material.sh failed");
}

fn standard(example: &str, ns: &str) -> tempfile::TempDir {
    scenario(
        example,
        ns,
        &[
            Target::admin("mgmt"),
            Target::admin("cluster-1"),
            Target::admin("cluster-2"),
        ],
    )
}

/// The environment's kubeconfig plus `clusters` (name, server URL, the
/// context whose CA to trust) and `contexts` (name, cluster, user), as a new
/// file in `dir`.
fn extended_kubeconfig(
    dir: &Path,
    clusters: &[(&str, &str, Option<&str>)],
    contexts: &[(&str, &str, &str)],
) -> PathBuf {
    let text = std::fs::read_to_string(env().kubeconfig()).expect("read kubeconfig");
    let mut extra_clusters = String::new();
    for (name, server, trusts) in clusters {
        extra_clusters.push_str(&format!(
            "- name: {name}\n  cluster:\n    server: {server}\n"
        ));
        // A proxy in front of a real cluster: trust that cluster's CA.
        if let Some(real) = trusts {
            let ca = env().cluster(real).expect("cluster").ca_pem();
            extra_clusters.push_str(&format!(
                "    certificate-authority-data: {}\n",
                b64(ca.as_bytes())
            ));
        }
    }
    let mut text = text.replacen("\nusers:\n", &format!("\n{extra_clusters}users:\n"), 1);
    assert!(
        text.rfind("\ncontexts:\n") > text.rfind("\nusers:\n"),
        "contexts come last in the kubeconfig"
    );
    if !text.ends_with('\n') {
        text.push('\n');
    }
    for (name, cluster, user) in contexts {
        text.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {cluster}\n    user: \"{user}\"\n"
        ));
    }
    let path = dir.join("extended.kubeconfig");
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

/// A server that accepts connections and never answers (a black hole).
fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

/// A TCP proxy to `upstream` that closes the first `refuse` connections at
/// once (a flaky network); returns its port and a count of connections.
fn flaky_proxy(upstream: u16, refuse: usize) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            if counted.fetch_add(1, Ordering::SeqCst) < refuse {
                drop(client);
                continue;
            }
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            let (mut c1, mut s1) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut s1);
                let _ = s1.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (port, count)
}

// ---------------------------------------------------------------------------
// Every example converges
// ---------------------------------------------------------------------------

#[test]
fn managed_example_converges_on_three_clusters_and_the_next_plan_is_empty() {
    let ns = "kb-managed";
    let dir = standard("managed", ns);
    let run = converge(dir.path(), &[]);

    // The namespace was created on every cluster.
    for context in ["mgmt", "cluster-1", "cluster-2"] {
        kubectl(context, &["get", "namespace", ns]);
    }
    let mgmt = secrets("mgmt", ns);
    for name in [ROOT_SECRET, SIGNING_SECRET, SERVER_SECRET, TOKEN_SECRET] {
        let secret = &mgmt.get(name).unwrap();
        assert_eq!(secret.labels.get(LABEL_MANAGED_BY).unwrap(), MANAGED_BY);
        assert_eq!(secret.labels.get(LABEL_INSTANCE).unwrap(), INSTANCE);
    }
    let token = data(&mgmt, TOKEN_SECRET, "token");
    let root = data(&mgmt, ROOT_SECRET, "ca.crt");
    for context in ["cluster-1", "cluster-2"] {
        let workload = secrets(context, ns);
        assert_eq!(data(&workload, TOKEN_SECRET, "token"), token, "{context}");
        assert_eq!(data(&workload, ROOT_SECRET, "ca.crt"), root, "{context}");
        assert!(
            !workload.contains_key(CLIENT_SECRET),
            "token mode: the agent writes its own client certificate"
        );
    }
    // Written by field manager `relayctl`.
    let json: serde_json::Value = serde_json::from_str(&kubectl(
        "cluster-1",
        &[
            "-n",
            ns,
            "get",
            "secret",
            ROOT_SECRET,
            "-o",
            "json",
            "--show-managed-fields",
        ],
    ))
    .expect("json");
    let managers: Vec<&str> = json["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["relayctl"], "{json}");
    // No secret value in the output.
    let token_text = String::from_utf8_lossy(token).into_owned();
    assert!(!run.all().contains(&token_text));
    assert!(!run.all().contains("PRIVATE KEY"));
}

#[test]
fn managed_preprovisioned_example_converges_and_repairs_a_client_cert_with_the_wrong_san() {
    let ns = "kb-preprovisioned";
    let dir = standard("managed-preprovisioned", ns);
    converge(dir.path(), &[]);
    let one = secrets("cluster-1", ns);
    let two = secrets("cluster-2", ns);
    assert_eq!(sans(data(&one, CLIENT_SECRET, "tls.crt")), ["cluster-1"]);
    assert_eq!(sans(data(&two, CLIENT_SECRET, "tls.crt")), ["cluster-2"]);

    // Someone copies cluster-2's client certificate onto cluster-1.
    patch_data(
        "cluster-1",
        ns,
        CLIENT_SECRET,
        &[
            ("tls.crt", data(&two, CLIENT_SECRET, "tls.crt")),
            ("tls.key", data(&two, CLIENT_SECRET, "tls.key")),
        ],
    );
    let drift = plan(dir.path(), &[]);
    drift.expect(2, "the wrong SAN is a change");
    assert!(
        drift.stdout.contains("SAN is cluster-2, want cluster-1"),
        "{}",
        drift.stdout
    );
    converge(dir.path(), &[]);
    let repaired = secrets("cluster-1", ns);
    assert_eq!(
        sans(data(&repaired, CLIENT_SECRET, "tls.crt")),
        ["cluster-1"]
    );
}

#[test]
fn gloo_example_reads_the_management_servers_secrets_and_never_writes_them() {
    let ns = "kb-gloo";
    let dir = standard("gloo", ns);
    // The management server's own CA and token, created at its install.
    let pki = dir.path().join("gloo-pki");
    make_material(&pki);
    let file = |name: &str| pki.join(name).display().to_string();
    kubectl("mgmt", &["create", "namespace", ns]);
    let token = "0123456789abcdef0123456789abcdef";
    for args in [
        vec![
            "generic".to_owned(),
            ROOT_SECRET.to_owned(),
            format!("--from-file=ca.crt={}", file("root.crt")),
            format!("--from-file=tls.key={}", file("root.key")),
        ],
        vec![
            "generic".to_owned(),
            SIGNING_SECRET.to_owned(),
            format!("--from-file=tls.crt={}", file("intermediate.crt")),
            format!("--from-file=tls.key={}", file("intermediate.key")),
            format!("--from-file=ca.crt={}", file("root.crt")),
        ],
        vec![
            "generic".to_owned(),
            TOKEN_SECRET.to_owned(),
            format!("--from-literal=token={token}"),
        ],
    ] {
        let mut full = vec!["-n", ns, "create", "secret"];
        full.extend(args.iter().map(String::as_str));
        kubectl("mgmt", &full);
    }
    let before = secrets("mgmt", ns);

    let run = converge(dir.path(), &[]);
    assert!(!run.all().contains(token));

    let after = secrets("mgmt", ns);
    for name in [ROOT_SECRET, SIGNING_SECRET, TOKEN_SECRET] {
        assert_eq!(
            before.get(name).unwrap().version,
            after.get(name).unwrap().version,
            "`{name}` must never be written in gloo mode"
        );
        assert!(
            !after
                .get(name)
                .unwrap()
                .labels
                .contains_key(LABEL_MANAGED_BY)
        );
    }
    assert!(!after.contains_key(SERVER_SECRET));
    let root = std::fs::read(pki.join("root.crt")).expect("root.crt");
    for context in ["cluster-1", "cluster-2"] {
        let workload = secrets(context, ns);
        assert_eq!(data(&workload, TOKEN_SECRET, "token"), token.as_bytes());
        let bundle = data(&workload, ROOT_SECRET, "ca.crt");
        assert_eq!(
            relayctl::pki::inspect_certificate(bundle)
                .expect("root")
                .sha256_fingerprint,
            relayctl::pki::inspect_certificate(&root)
                .expect("root")
                .sha256_fingerprint
        );
        assert!(
            !workload
                .get(ROOT_SECRET)
                .unwrap()
                .data
                .contains_key("tls.key"),
            "the root key never leaves mgmt"
        );
    }
}

#[test]
fn custom_example_converges_with_contexts_from_the_kubeconfig_environment_variable() {
    let ns = "kb-custom";
    let dir = scenario(
        "custom",
        ns,
        &[
            Target::ambient("mgmt"),
            Target::ambient("cluster-1"),
            Target::ambient("cluster-2"),
        ],
    );
    // `KUBECONFIG` as a `:`-list: an empty entry and the real file.
    let list = format!(":{}", env().kubeconfig().display());
    let env_vars = [("KUBECONFIG", list.as_str())];
    relayctl(dir.path(), &["apply", ".", "--auto-approve"], &env_vars).expect(0, "apply");
    relayctl(dir.path(), &["plan", ".", "--detailed-exitcode"], &env_vars)
        .expect(0, "the plan after apply has no changes");

    let mgmt = secrets("mgmt", ns);
    assert!(
        !mgmt.get(ROOT_SECRET).unwrap().data.contains_key("tls.key"),
        "custom: the root key is not written"
    );
    let root = std::fs::read(dir.path().join("material/root.crt")).expect("root.crt");
    assert_eq!(
        relayctl::pki::inspect_certificate(data(&mgmt, ROOT_SECRET, "ca.crt"))
            .expect("root")
            .sha256_fingerprint,
        relayctl::pki::inspect_certificate(&root)
            .expect("root")
            .sha256_fingerprint
    );
    assert_eq!(
        data(&secrets("cluster-2", ns), TOKEN_SECRET, "token"),
        data(&mgmt, TOKEN_SECRET, "token")
    );
}

#[test]
fn external_example_converges_with_contexts_from_the_kubeconfig_flag() {
    let ns = "kb-external";
    let dir = scenario(
        "external",
        ns,
        &[
            Target::ambient("mgmt"),
            Target::ambient("cluster-1"),
            Target::ambient("cluster-2"),
        ],
    );
    let kubeconfig = env().kubeconfig().display().to_string();
    converge(dir.path(), &["--kubeconfig", &kubeconfig]);
    let mgmt = secrets("mgmt", ns);
    assert!(mgmt.contains_key(SERVER_SECRET));
    assert!(!mgmt.contains_key(TOKEN_SECRET), "external: no tokens");
    for context in ["cluster-1", "cluster-2"] {
        let workload = secrets(context, ns);
        assert_eq!(sans(data(&workload, CLIENT_SECRET, "tls.crt")), [context]);
        assert!(!data(&workload, CLIENT_SECRET, "tls.key").is_empty());
    }
}

// ---------------------------------------------------------------------------
// Drift
// ---------------------------------------------------------------------------

#[test]
fn drift_on_real_clusters_is_planned_and_repaired() {
    let ns = "kb-drift";
    let dir = standard("managed", ns);
    converge(dir.path(), &[]);
    let mgmt = secrets("mgmt", ns);
    let token = data(&mgmt, TOKEN_SECRET, "token").to_vec();
    let root = data(&mgmt, ROOT_SECRET, "ca.crt").to_vec();

    // A deleted secret, a token that differs, and a root bundle that differs
    // (with a stray key another tool added).
    kubectl("cluster-2", &["-n", ns, "delete", "secret", TOKEN_SECRET]);
    patch_data(
        "cluster-1",
        ns,
        TOKEN_SECRET,
        &[("token", b"not-the-token")],
    );
    let other_cert = data(&mgmt, SIGNING_SECRET, "tls.crt").to_vec();
    patch_data(
        "cluster-2",
        ns,
        ROOT_SECRET,
        &[("ca.crt", &other_cert), ("note", b"added by hand")],
    );

    let drift = plan(dir.path(), &[]);
    drift.expect(2, "drift is a change");
    for reason in [
        "missing",
        "token differs from mgmt",
        "root bundle differs from mgmt",
    ] {
        assert!(drift.stdout.contains(reason), "{reason}: {}", drift.stdout);
    }
    assert!(!drift.all().contains("not-the-token"));

    converge(dir.path(), &[]);
    for context in ["cluster-1", "cluster-2"] {
        let workload = secrets(context, ns);
        assert_eq!(data(&workload, TOKEN_SECRET, "token"), token, "{context}");
        assert_eq!(data(&workload, ROOT_SECRET, "ca.crt"), root, "{context}");
    }
    assert!(
        !secrets("cluster-2", ns)
            .get(ROOT_SECRET)
            .unwrap()
            .data
            .contains_key("note"),
        "an updated Secret holds exactly the planned data"
    );
}

#[test]
fn writes_carry_preconditions_so_concurrent_changes_are_stale() {
    let ns = "kb-stale";
    let cluster = backend("cluster-1");
    let object = |value: &str| SecretObject {
        namespace: ns.to_owned(),
        name: "relayctl-stale-test".to_owned(),
        labels: relayctl::observed::SmallMap::from_iter([
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
            (LABEL_INSTANCE.to_owned(), INSTANCE.to_owned()),
        ]),
        annotations: Default::default(),
        data: relayctl::observed::SmallMap::from_iter([(
            "token".to_owned(),
            SecretBytes::from(value.to_owned()),
        )]),
        version: String::new(),
    };
    let write = |action, value: &str, precondition: Option<String>| Write {
        action,
        object: object(value),
        precondition,
        chained: false,
    };
    let is_stale = |result: Result<Option<String>, BackendError>| {
        matches!(result, Err(BackendError::Stale { .. }))
    };
    let observe = || {
        cluster
            .observe(ns, INSTANCE, &[])
            .expect("observe")
            .secrets
            .remove("relayctl-stale-test")
    };

    // Create (the namespace too); a second create finds it and is stale.
    cluster
        .write(&write(Action::Create, "one", None))
        .expect("create");
    assert!(is_stale(cluster.write(&write(Action::Create, "two", None))));
    let first = observe().expect("created");
    assert_eq!(first.get("token").expect("token").expose(), b"one");

    // Someone edits it: writes based on the old version are refused.
    patch_data(
        "cluster-1",
        ns,
        "relayctl-stale-test",
        &[("token", b"edited")],
    );
    assert!(is_stale(cluster.write(&write(
        Action::Update,
        "two",
        Some(first.version.clone())
    ))));
    assert!(is_stale(cluster.write(&write(
        Action::Delete,
        "",
        Some(first.version.clone())
    ))));
    let second = observe().expect("still there");
    assert_eq!(second.get("token").expect("token").expose(), b"edited");
    cluster
        .write(&write(
            Action::Update,
            "three",
            Some(second.version.clone()),
        ))
        .expect("update on the current version");
    let third = observe().expect("updated");
    assert_eq!(third.get("token").expect("token").expose(), b"three");

    // Deleted by someone else: an update must not bring it back.
    kubectl(
        "cluster-1",
        &["-n", ns, "delete", "secret", "relayctl-stale-test"],
    );
    assert!(is_stale(cluster.write(&write(
        Action::Update,
        "four",
        Some(third.version.clone())
    ))));
    assert!(observe().is_none(), "a stale update must not re-create it");
    cluster
        .write(&write(Action::Create, "five", None))
        .expect("create again");
    let fifth = observe().expect("created again");
    cluster
        .write(&write(Action::Delete, "", Some(fifth.version)))
        .expect("delete on the current version");
    assert!(observe().is_none());
}

// ---------------------------------------------------------------------------
// Faults and concurrency
// ---------------------------------------------------------------------------

#[test]
fn an_unreachable_workload_is_reported_and_the_others_converge() {
    let ns = "kb-unreachable";
    let tmp = tempfile::tempdir().expect("tempdir");
    let dead = format!("https://127.0.0.1:{}", closed_port());
    let kubeconfig = extended_kubeconfig(
        tmp.path(),
        &[("dead", &dead, None)],
        &[("dead", "dead", "cluster-2-admin")],
    );
    let dir = scenario(
        "managed",
        ns,
        &[
            Target::via("mgmt", "mgmt", &kubeconfig),
            Target::via("cluster-1", "cluster-1", &kubeconfig),
            Target::via("cluster-2", "cluster-2", &kubeconfig),
            Target::via("cluster-3", "dead", &kubeconfig),
        ],
    );
    let run = apply(dir.path(), &[]);
    run.expect(1, "an unreachable cluster is an error");
    assert!(
        run.all().contains(&format!(
            "cannot reach the API server of cluster `cluster-3` at {dead}"
        )),
        "{}",
        run.all()
    );
    assert!(run.elapsed < Duration::from_secs(20), "{:?}", run.elapsed);
    let token = data(&secrets("mgmt", ns), TOKEN_SECRET, "token").to_vec();
    for context in ["cluster-1", "cluster-2"] {
        assert_eq!(data(&secrets(context, ns), TOKEN_SECRET, "token"), token);
    }
    // Only cluster-3 is left to do.
    let again = plan(dir.path(), &[]);
    again.expect(1, "still unreachable");
    assert!(again.stdout.contains("cluster-3"), "{}", again.stdout);
}

#[test]
fn the_per_cluster_timeout_bounds_silent_servers_and_parallelism_bounds_the_fleet() {
    let ns = "kb-timeout";
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = (
        format!("https://127.0.0.1:{}", silent_server()),
        format!("https://127.0.0.1:{}", silent_server()),
    );
    let kubeconfig = extended_kubeconfig(
        tmp.path(),
        &[("silent-a", &a, None), ("silent-b", &b, None)],
        &[
            ("silent-a", "silent-a", "cluster-1-admin"),
            ("silent-b", "silent-b", "cluster-1-admin"),
        ],
    );
    let dir = scenario(
        "managed",
        ns,
        &[
            Target::via("mgmt", "mgmt", &kubeconfig),
            Target::via("cluster-1", "cluster-1", &kubeconfig),
            Target::via("silent-a", "silent-a", &kubeconfig),
            Target::via("silent-b", "silent-b", &kubeconfig),
        ],
    );
    let timeout = 2;
    let serial = plan(
        dir.path(),
        &["--timeout", &format!("{timeout}s"), "--parallelism", "1"],
    );
    serial.expect(1, "silent clusters are errors");
    assert!(
        serial.all().contains(&format!(
            "no answer from cluster `silent-a` within {timeout}s"
        )),
        "{}",
        serial.all()
    );
    assert!(serial.all().contains("silent-b"), "{}", serial.all());
    // One cluster at a time: the two silent ones wait one after the other.
    assert!(
        serial.elapsed >= Duration::from_secs(2 * timeout),
        "{:?}",
        serial.elapsed
    );
    let parallel = plan(
        dir.path(),
        &["--timeout", &format!("{timeout}s"), "--parallelism", "4"],
    );
    parallel.expect(1, "silent clusters are errors");
    assert!(
        parallel.elapsed < Duration::from_secs(2 * timeout),
        "all four at once: {:?}",
        parallel.elapsed
    );
    assert!(parallel.elapsed >= Duration::from_secs(timeout));
}

#[test]
fn connection_failures_are_retried_with_backoff_but_refusals_are_not() {
    use std::sync::atomic::Ordering;
    let ns = "kb-retry";
    let tmp = tempfile::tempdir().expect("tempdir");
    let upstream = env().cluster("cluster-1").expect("cluster-1").port();
    // Two dropped connections, then the real cluster-1.
    let (flaky, flaky_count) = flaky_proxy(upstream, 2);
    // A healthy path to cluster-1 used with credentials it rejects (401).
    let (plain, plain_count) = flaky_proxy(upstream, 0);
    let flaky_url = format!("https://127.0.0.1:{flaky}");
    let plain_url = format!("https://127.0.0.1:{plain}");
    let kubeconfig = extended_kubeconfig(
        tmp.path(),
        &[
            ("flaky-proxy", &flaky_url, Some("cluster-1")),
            ("plain-proxy", &plain_url, Some("cluster-1")),
        ],
        &[
            ("flaky", "flaky-proxy", "cluster-1-admin"),
            ("rejected", "plain-proxy", "cluster-2-admin"),
        ],
    );
    let dir = scenario(
        "managed",
        ns,
        &[
            Target::admin("mgmt"),
            Target::via("cluster-1", "flaky", &kubeconfig),
        ],
    );
    let run = converge(dir.path(), &[]);
    assert!(
        flaky_count.load(Ordering::SeqCst) >= 3,
        "two refused connections, then success"
    );
    assert!(!run.all().contains("cannot reach"), "{}", run.all());
    assert!(!secrets("cluster-1", ns).is_empty());

    // A 401 is final: one connection, one request, no retry.
    let rejected = scenario(
        "managed",
        "kb-retry-401",
        &[
            Target::admin("mgmt"),
            Target::via("cluster-1", "rejected", &kubeconfig),
        ],
    );
    // The plan's LIST and its GET of the agent's Secret go at once: over
    // the one HTTP/2 connection dialled ahead, or, when they are sent before
    // it is up, over a second one. (That a 4xx is not retried is the call
    // policy's unit test; here no more connections than first requests.)
    plan(rejected.path(), &[]).expect(1, "401");
    let connections = plain_count.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&connections),
        "4xx is not retried: {connections} connections for the two first requests"
    );
}

// ---------------------------------------------------------------------------
// Throttling: the server's 429 + Retry-After, and the client's own qps/burst
// ---------------------------------------------------------------------------

/// `tools/kube-bench proxy --l7` in front of mgmt, cluster-1 and cluster-2:
/// an HTTP proxy that counts and logs every request (and can answer some
/// with 429), with a kubeconfig reaching each context through it. Stopped
/// on drop.
struct CountingProxy {
    child: std::process::Child,
    kubeconfig: PathBuf,
    stats: String,
    _dir: tempfile::TempDir,
}

impl CountingProxy {
    fn start(extra: &[&str]) -> Self {
        let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/kube-bench/build.sh");
        let built = Command::new("bash")
            .arg(&build)
            .stderr(Stdio::inherit())
            .output()
            .expect("run tools/kube-bench/build.sh (needs Go)");
        assert!(built.status.success(), "tools/kube-bench/build.sh failed");
        let bin = String::from_utf8(built.stdout)
            .expect("path")
            .trim()
            .to_owned();
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let mut child = Command::new(bin)
            .arg("proxy")
            .arg("--kubeconfig")
            .arg(env().kubeconfig())
            .args(["--contexts", "mgmt,cluster-1,cluster-2", "--l7"])
            .args(["--stats", "127.0.0.1:0", "--out-kubeconfig"])
            .arg(&kubeconfig)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kube-bench proxy");
        let stdout = child.stdout.take().expect("stdout");
        let mut stats = None;
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line.expect("proxy output");
            if let Some(addr) = line.strip_prefix("stats ") {
                stats = Some(addr.to_owned());
            }
            if line == "ready" {
                break;
            }
        }
        Self {
            child,
            kubeconfig,
            stats: stats.expect("the proxy prints its stats address"),
            _dir: dir,
        }
    }

    /// `GET path` on the stats endpoint: the body.
    fn get(&self, path: &str) -> String {
        self.ask("GET", path)
    }

    /// Zeroes the counters and the log.
    fn reset(&self) {
        self.ask("POST", "/reset");
    }

    fn ask(&self, method: &str, path: &str) -> String {
        use std::io::Read as _;
        let mut stream = std::net::TcpStream::connect(&self.stats).expect("stats endpoint");
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: stats\r\nContent-Length: 0\r\n\r\n"
        )
        .expect("request");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer");
        let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.to_owned()
    }

    /// Per context: requests, by, throttled, retry_gaps_ms.
    fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/stats")).expect("stats JSON")
    }

    /// Every request seen, in arrival order: (context, ms since start, method, uri).
    fn log(&self) -> Vec<(String, f64, String, String)> {
        self.get("/log")
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).expect("log line");
                (
                    v["context"].as_str().unwrap_or_default().to_owned(),
                    v["t_ms"].as_f64().unwrap_or_default(),
                    v["method"].as_str().unwrap_or_default().to_owned(),
                    v["uri"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

impl CountingProxy {
    /// The `managed` example in namespace `ns`, mgmt, cluster-1 and
    /// cluster-2 reached through this proxy.
    fn scenario(&self, ns: &str) -> tempfile::TempDir {
        let targets: Vec<Target> = ["mgmt", "cluster-1", "cluster-2"]
            .iter()
            .map(|c| Target::via(c, c, &self.kubeconfig))
            .collect();
        scenario("managed", ns, &targets)
    }

    /// The Secret requests of `context` so far: (method, uri, status code).
    fn secret_requests(&self, context: &str) -> Vec<(String, String, u64)> {
        self.get("/log")
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("log line"))
            .filter(|v| {
                v["context"] == context && v["uri"].as_str().unwrap_or("").contains("/secrets")
            })
            .map(|v| {
                (
                    v["method"].as_str().unwrap_or_default().to_owned(),
                    v["uri"].as_str().unwrap_or_default().to_owned(),
                    v["code"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// [`CountingProxy::log`] with each request's client connection:
    /// (context, ms since start, method, uri, connection).
    fn log_with_connections(&self) -> Vec<(String, f64, String, String, String)> {
        self.get("/log")
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).expect("log line");
                let text = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
                (
                    text("context"),
                    v["t_ms"].as_f64().unwrap_or_default(),
                    text("method"),
                    text("uri"),
                    text("conn"),
                )
            })
            .collect()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_429_is_retried_no_sooner_than_its_retry_after_asks() {
    let ns = "kb-retry-after";
    // Every 4th request of each cluster: 429, `Retry-After: 2`.
    let proxy = CountingProxy::start(&["--status-429-every", "4", "--retry-after", "2"]);
    let dir = proxy.scenario(ns);
    // No Events: a cluster's Events are POSTed at once to one URL, which the
    // proxy (matching a retry by method and URL) would take for retries.
    apply(dir.path(), &["--no-events"]).expect(0, "apply through a proxy that throttles");

    let stats = proxy.stats();
    let mut throttled = 0;
    let mut gaps = Vec::new();
    for (_, cluster) in stats.as_object().expect("stats by context") {
        throttled += cluster["throttled"].as_u64().unwrap_or(0);
        for gap in cluster["retry_gaps_ms"].as_array().into_iter().flatten() {
            gaps.push(gap.as_f64().expect("ms"));
        }
    }
    assert!(
        throttled >= 3,
        "mgmt alone makes more than 12 requests: {stats}"
    );
    // The apply's exit 0 says every throttled request was answered in the
    // end; the proxy pairs a retry with its 429 by method and URL, which
    // can miss a pair (e.g. when one URL is asked twice at once).
    assert!(
        !gaps.is_empty() && gaps.len() as u64 <= throttled,
        "throttled requests were sent again: {stats}"
    );
    // The backoff of its own would have come back after 200 ms.
    assert!(
        gaps.iter().all(|ms| *ms >= 2000.0),
        "a retry came sooner than the 2 s the server asked for: {gaps:?}"
    );
    plan(dir.path(), &[]).expect(0, "converged, throttled or not");
    assert_eq!(secrets("cluster-2", ns).len(), 2, "ca.crt and the token");
}

#[test]
fn a_clusters_qps_and_burst_space_its_requests_and_only_its_own() {
    let ns = "kb-qps";
    let proxy = CountingProxy::start(&[]);
    let dir = proxy.scenario(ns);
    // cluster-1: at most 4 requests a second, one at a time after the first.
    let file = dir.path().join("cluster-1.yaml");
    let text = std::fs::read_to_string(&file).expect("cluster-1.yaml");
    assert!(text.contains(" } }\n"), "{text}");
    std::fs::write(&file, text.replace(" } }\n", ", qps: 4, burst: 1 } }\n")).expect("write");
    apply(dir.path(), &[]).expect(0, "apply with a request limit on cluster-1");

    let times = |context: &str| -> Vec<f64> {
        proxy
            .log()
            .into_iter()
            .filter(|(c, ..)| c == context)
            .map(|(_, t, ..)| t)
            .collect()
    };
    let limited = times("cluster-1");
    assert!(
        limited.len() >= 4,
        "LIST, GETs, namespace and Secret writes: {limited:?}"
    );
    // 250 ms apart when admitted; the proxy sees them a transit time later,
    // which can shorten one gap by a little, never by half.
    let gaps: Vec<f64> = limited.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|ms| *ms >= 180.0),
        "cluster-1 requests closer than 1/qps: {gaps:?}"
    );
    let span = limited.last().unwrap() - limited.first().unwrap();
    assert!(
        span >= 0.9 * 250.0 * gaps.len() as f64,
        "{span} ms for {} gaps",
        gaps.len()
    );

    // cluster-2 has no limit: its GETs after the LIST go at once.
    let free = times("cluster-2");
    let quickest = free
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::INFINITY, f64::min);
    assert!(quickest < 180.0, "cluster-2 is not limited: {free:?}");
    plan(dir.path(), &[]).expect(0, "converged");
}

#[test]
fn a_workloads_events_go_out_on_the_connection_of_its_writes() {
    // When they go out (as soon as the cluster's writes end, beside the
    // fleet's next writes) is tested in `cli::report`; here, on real
    // apiservers, that they follow the writes on the writes' connection.
    let ns = "kb-events-inline";
    let proxy = CountingProxy::start(&[]);
    let dir = proxy.scenario(ns);
    apply(dir.path(), &["--parallelism", "1"]).expect(0, "first apply");

    let log = proxy.log_with_connections();
    let secret_writes = |method: &str, uri: &str| {
        matches!(method, "POST" | "PUT" | "PATCH") && uri.contains("/secrets")
    };
    let event_posts = |method: &str, uri: &str| method == "POST" && uri.contains("/events");
    for workload in ["cluster-1", "cluster-2"] {
        let position = |what: &dyn Fn(&str, &str) -> bool| -> Vec<usize> {
            log.iter()
                .enumerate()
                .filter(|(_, (c, _, method, uri, _))| c == workload && what(method, uri))
                .map(|(i, _)| i)
                .collect()
        };
        let (writes, events) = (position(&secret_writes), position(&event_posts));
        let last_write = *writes
            .last()
            .unwrap_or_else(|| panic!("{workload}: {log:?}"));
        assert_eq!(events.len(), 2, "{workload}: ca.crt and the token: {log:?}");
        assert!(
            events
                .iter()
                .all(|e| *e > last_write && log[*e].4 == log[last_write].4),
            "{workload}'s Events after its writes, on their connection: {log:?}"
        );
        assert_eq!(relayctl_events(workload, ns).len(), 2, "{workload}");
    }
    assert!(
        log.iter()
            .any(|(c, _, method, uri, _)| c == "mgmt" && event_posts(method, uri)),
        "mgmt's Events: {log:?}"
    );
    plan(dir.path(), &[]).expect(0, "converged");
}

/// Replaces relayctl's root Secret in `context` by one it does not own.
fn plant_foreign_root(context: &str, ns: &str) {
    kubectl(context, &["-n", ns, "delete", "secret", ROOT_SECRET]);
    kubectl(
        context,
        &[
            "-n",
            ns,
            "create",
            "secret",
            "generic",
            ROOT_SECRET,
            "--from-literal=ca.crt=not-ours",
        ],
    );
}

#[test]
fn a_fresh_cluster_is_read_in_one_list_by_label_and_one_list_of_names() {
    let ns = "kb-observe-names";
    let proxy = CountingProxy::start(&[]);
    let dir = proxy.scenario(ns);
    apply(dir.path(), &[]).expect(0, "first apply");

    for context in ["mgmt", "cluster-1", "cluster-2"] {
        let reads: Vec<_> = proxy
            .secret_requests(context)
            .into_iter()
            .filter(|(method, ..)| method == "GET")
            .collect();
        let by_label = reads
            .iter()
            .filter(|(_, uri, _)| uri.contains("labelSelector="))
            .count();
        let names = reads
            .iter()
            .filter(|(_, uri, _)| uri.contains("/secrets?") && !uri.contains("labelSelector="))
            .count();
        let named: Vec<_> = reads
            .iter()
            .filter(|(_, uri, _)| !uri.contains('?'))
            .collect();
        assert_eq!((by_label, names), (1, 1), "{context}: {reads:?}");
        // Only the agent's Secret, which never carries relayctl's label, and
        // mgmt's rotation record (absent between rotations) are asked by
        // name, with the LIST; the relay names the LIST did not return are
        // answered by the LIST of names, not by a GET each.
        let record = relayctl::relay::rotation_secret("prod");
        let expected = [if context == "mgmt" {
            record.as_str()
        } else {
            CLIENT_SECRET
        }];
        let asked: Vec<&str> = named
            .iter()
            .map(|(_, uri, _)| uri.rsplit('/').next().unwrap_or_default())
            .collect();
        assert_eq!(asked, expected, "{context}: {reads:?}");
        assert!(
            named.iter().all(|(.., code)| *code == 404),
            "{context}: {reads:?}"
        );
    }

    // A Secret that is not ours under a relay name is still found, by name,
    // and is a conflict: nothing is overwritten.
    plant_foreign_root("cluster-2", ns);
    proxy.reset();
    let run = plan(dir.path(), &[]);
    run.expect(1, "cluster-2 holds a foreign Secret: a conflict");
    assert!(
        run.stdout.contains(ROOT_SECRET) || run.stderr.contains(ROOT_SECRET),
        "the conflict names the Secret:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    let reads = proxy.secret_requests("cluster-2");
    assert!(
        reads.iter().any(|(method, uri, code)| method == "GET"
            && uri.ends_with(&format!("/secrets/{ROOT_SECRET}"))
            && *code == 200),
        "the foreign Secret, listed by name, is read: {reads:?}"
    );
    assert_eq!(
        data(&secrets("cluster-2", ns), ROOT_SECRET, "ca.crt"),
        b"not-ours",
        "untouched"
    );
}

#[test]
fn a_converged_plan_reads_every_cluster_in_one_round_trip() {
    let ns = "kb-observe-one-round";
    // 250 ms each way on every request: a request sent only after another's
    // answer arrives at least 500 ms after it. Two sent together arrive
    // within a TLS handshake of each other (when the second one's stream
    // does not find the first connection up yet), far less than that.
    let proxy = CountingProxy::start(&["--delay", "250ms"]);
    let dir = proxy.scenario(ns);
    apply(dir.path(), &[]).expect(0, "first apply");
    proxy.reset();
    plan(dir.path(), &[]).expect(0, "converged");

    let log = proxy.log();
    for context in ["mgmt", "cluster-1", "cluster-2"] {
        let reads: Vec<(f64, &str)> = log
            .iter()
            .filter(|(c, ..)| c == context)
            .map(|(_, t, _, uri)| (*t, uri.as_str()))
            .collect();
        // The LIST by label and one GET: on a workload the agent's Secret,
        // on mgmt the rotation record (absent between rotations).
        assert_eq!(reads.len(), 2, "{context}: {reads:?}");
        let spread = reads[1].0 - reads[0].0;
        assert!(
            spread < 250.0,
            "{context}: the GET waited for the LIST ({spread} ms apart): {reads:?}"
        );
    }
}

#[test]
fn a_namespace_of_more_secrets_than_one_page_is_asked_by_name() {
    let ns = "kb-observe-crowded";
    let proxy = CountingProxy::start(&[]);
    let dir = proxy.scenario(ns);
    // cluster-1's namespace holds 501 other Secrets (more than the 500 of
    // one page of the names LIST) and a foreign one under a relay name.
    kubectl("cluster-1", &["create", "namespace", ns]);
    let mut list = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in 0..501 {
        list.push_str(&format!(
            "- {{apiVersion: v1, kind: Secret, metadata: {{name: other-{i}, namespace: {ns}}}}}\n"
        ));
    }
    list.push_str(&format!(
        "- {{apiVersion: v1, kind: Secret, metadata: {{name: {ROOT_SECRET}, namespace: {ns}}}, data: {{ca.crt: {}}}}}\n",
        b64(b"not-ours")
    ));
    kubectl_stdin("cluster-1", &["apply", "-f", "-"], &list);

    plan(dir.path(), &[]).expect(1, "cluster-1 holds a foreign Secret: a conflict");
    let reads: Vec<_> = proxy
        .secret_requests("cluster-1")
        .into_iter()
        .filter(|(method, ..)| method == "GET")
        .collect();
    let paged = reads
        .iter()
        .filter(|(_, uri, _)| uri.contains("/secrets?") && !uri.contains("labelSelector="))
        .count();
    assert_eq!(paged, 1, "one page of names, not the next: {reads:?}");
    let named: Vec<&str> = reads
        .iter()
        .filter(|(_, uri, _)| !uri.contains('?'))
        .map(|(_, uri, _)| uri.rsplit('/').next().unwrap_or_default())
        .collect();
    assert!(
        named.contains(&ROOT_SECRET) && named.contains(&TOKEN_SECRET),
        "more than a page: each relay name asked by GET: {reads:?}"
    );
    assert_eq!(
        data(&secrets("cluster-1", ns), ROOT_SECRET, "ca.crt"),
        b"not-ours"
    );
}

#[test]
fn in_cluster_config_outside_a_pod_is_a_clear_error() {
    let ns = "kb-in-cluster";
    let dir = standard("managed", ns);
    let mgmt = dir.path().join("mgmt.yaml");
    let text = std::fs::read_to_string(&mgmt).expect("mgmt.yaml");
    let start = text.find("  connection:").expect("connection");
    std::fs::write(
        &mgmt,
        format!("{}  connection: {{ inCluster: true }}\n", &text[..start]),
    )
    .expect("write mgmt.yaml");
    let run = relayctl(
        dir.path(),
        &["plan", ".", "--detailed-exitcode"],
        &[
            ("KUBERNETES_SERVICE_HOST", ""),
            ("KUBERNETES_SERVICE_PORT", ""),
        ],
    );
    run.expect(1, "no service account outside a pod");
    assert!(
        run.all()
            .contains("cluster `mgmt`: no in-cluster configuration"),
        "{}",
        run.all()
    );
}

#[test]
fn two_contexts_for_one_api_server_never_strip_mgmts_root_key() {
    // `cluster-1` is mgmt's apiserver again, reached as `localhost` instead
    // of `127.0.0.1`: another URL, the same storage.
    let ns = "kb-alias";
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = env().cluster("mgmt").expect("mgmt").port();
    let kubeconfig = extended_kubeconfig(
        tmp.path(),
        &[(
            "mgmt-alias",
            &format!("https://localhost:{port}"),
            Some("mgmt"),
        )],
        &[("mgmt-alias", "mgmt-alias", "mgmt-admin")],
    );
    let dir = scenario(
        "managed",
        ns,
        &[
            Target::via("mgmt", "mgmt", &kubeconfig),
            Target::via("cluster-1", "mgmt-alias", &kubeconfig),
            Target::via("cluster-2", "cluster-2", &kubeconfig),
        ],
    );
    // First run: nothing exists yet, so nothing tells the two apart; mgmt
    // is written first and the alias's create finds its Secret taken.
    let first = apply(dir.path(), &[]);
    first.expect(1, "the alias's writes are stale");
    let root = |secrets: &relayctl::observed::SmallMap<String, SecretObject>| {
        secrets
            .get(ROOT_SECRET)
            .map(|s| s.data.contains_key("tls.key"))
    };
    assert_eq!(root(&secrets("mgmt", ns)), Some(true), "{}", first.all());
    // Every later run sees the same Secret uids from both contexts.
    for run in [plan(dir.path(), &[]), apply(dir.path(), &[])] {
        run.expect(1, "the same storage is refused");
        let text = run.all();
        assert!(
            text.contains("are the same cluster")
                && text.contains("the same API server and namespace"),
            "{text}"
        );
    }
    assert_eq!(root(&secrets("mgmt", ns)), Some(true));
}

#[test]
fn a_missing_context_names_the_cluster_and_the_kubeconfig() {
    let ns = "kb-no-context";
    let dir = scenario(
        "managed",
        ns,
        &[
            Target::admin("mgmt"),
            Target::admin("cluster-1"),
            Target::via("cluster-2", "no-such-context", env().kubeconfig()),
        ],
    );
    let run = plan(dir.path(), &[]);
    run.expect(1, "a missing context is an error");
    let text = run.all();
    assert!(
        text.contains("cluster `cluster-2`: context `no-such-context` is not in the kubeconfig"),
        "{text}"
    );
    assert!(text.contains("mgmt, cluster-1, cluster-2"), "{text}");
}

#[test]
fn cluster_1_credentials_on_cluster_2_are_reported_as_unauthorized() {
    let ns = "kb-unauthorized";
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = extended_kubeconfig(
        tmp.path(),
        &[],
        &[("mixed", "cluster-2", "cluster-1-admin")],
    );
    let dir = scenario(
        "managed",
        ns,
        &[
            Target::admin("mgmt"),
            Target::admin("cluster-1"),
            Target::via("cluster-2", "mixed", &kubeconfig),
        ],
    );
    let run = plan(dir.path(), &[]);
    run.expect(1, "401 is an error");
    let text = run.all();
    assert!(text.contains("401 Unauthorized"), "{text}");
    assert!(text.contains("of cluster `cluster-2`"), "{text}");
}

// ---------------------------------------------------------------------------
// The lock
// ---------------------------------------------------------------------------

#[test]
fn a_second_apply_waits_for_the_lease_and_fails_naming_its_holder() {
    let ns = "kb-lock";
    let dir = standard("managed", ns);
    let mgmt = backend("mgmt");
    let guard = mgmt
        .lock(
            ns,
            INSTANCE,
            "someone-else@elsewhere pid 42",
            Duration::ZERO,
        )
        .expect("take the lock");

    let lease: serde_json::Value = serde_json::from_str(&kubectl(
        "mgmt",
        &["-n", ns, "get", "lease", "relayctl-prod", "-o", "json"],
    ))
    .expect("lease json");
    let spec = &lease["spec"];
    assert_eq!(spec["holderIdentity"], "someone-else@elsewhere pid 42");
    assert_eq!(spec["leaseDurationSeconds"], 60);
    assert!(spec["acquireTime"].is_string() && spec["renewTime"].is_string());

    let run = apply(dir.path(), &["--lock-timeout", "2s"]);
    run.expect(4, "the lock is held (an environment error: retrying helps)");
    assert!(run.elapsed >= Duration::from_secs(2), "{:?}", run.elapsed);
    let text = run.all();
    assert!(
        text.contains("held by `someone-else@elsewhere pid 42`") && text.contains("expires"),
        "{text}"
    );
    assert!(
        secrets("cluster-1", ns).is_empty(),
        "nothing written without the lock"
    );

    // Released on drop: the next apply goes ahead.
    drop(guard);
    let absent = Command::new(env().binaries().kubectl())
        .arg("--kubeconfig")
        .arg(env().kubeconfig())
        .args([
            "--context",
            "mgmt",
            "-n",
            ns,
            "get",
            "lease",
            "relayctl-prod",
        ])
        .output()
        .expect("kubectl");
    assert!(!absent.status.success(), "the Lease is deleted on release");

    // Two applies at once: one waits for the other; both succeed.
    let dir_path = dir.path().to_path_buf();
    let other = std::thread::spawn(move || apply(&dir_path, &["--lock-timeout", "60s"]));
    apply(dir.path(), &["--lock-timeout", "60s"]).expect(0, "first of two concurrent applies");
    other
        .join()
        .expect("thread")
        .expect(0, "second of two concurrent applies");
    plan(dir.path(), &[]).expect(0, "converged");
}

#[test]
fn a_lease_left_by_a_killed_run_is_taken_over_once_it_expires() {
    let ns = "kb-lock-expired";
    let dir = standard("managed", ns);
    kubectl("mgmt", &["create", "namespace", ns]);
    let lease = |holder: &str, renewed: &str, seconds: u32| {
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": { "name": "relayctl-prod", "namespace": ns },
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": seconds,
                "acquireTime": renewed,
                "renewTime": renewed,
            }
        })
        .to_string()
    };
    let micro = |t: time::OffsetDateTime| {
        t.format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        ))
        .expect("format")
    };

    // Expired an hour ago: taken over at once.
    let past = micro(time::OffsetDateTime::now_utc() - time::Duration::hours(1));
    kubectl_stdin(
        "mgmt",
        &["apply", "-f", "-"],
        &lease("killed-run pid 1", &past, 60),
    );
    apply(dir.path(), &[]).expect(0, "an expired Lease does not block");

    // Still valid for 3 s: a run that may wait takes it over when it expires.
    let now = micro(time::OffsetDateTime::now_utc());
    kubectl_stdin(
        "mgmt",
        &["apply", "-f", "-"],
        &lease("killed-run pid 2", &now, 3),
    );
    let waited = apply(dir.path(), &["--lock-timeout", "30s"]);
    waited.expect(0, "taken over after expiry");
    assert!(
        waited.elapsed >= Duration::from_secs(1),
        "it waited: {:?}",
        waited.elapsed
    );
}

// ---------------------------------------------------------------------------
// Least privilege
// ---------------------------------------------------------------------------

fn deploy_rbac(ns: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/deploy/rbac.yaml");
    std::fs::read_to_string(path)
        .expect("rbac.yaml")
        .replace("gloo-mesh", ns)
}

#[test]
fn the_example_rbac_is_enough_to_converge() {
    let ns = "kb-rbac";
    let tmp = tempfile::tempdir().expect("tempdir");
    let rbac = deploy_rbac(ns);
    let mut targets = Vec::new();
    for context in ["mgmt", "cluster-1", "cluster-2"] {
        kubectl_stdin(context, &["apply", "-f", "-"], &rbac);
        // A user whose only permissions come from the group in rbac.yaml.
        let user = env()
            .user_kubeconfig(context, &format!("relayctl-{context}"), &["relayctl"])
            .expect("mint a user");
        let copy = tmp.path().join(format!("{context}.kubeconfig"));
        std::fs::copy(&user, &copy).expect("copy kubeconfig");
        targets.push(Target::via(context, context, &copy));
    }
    let dir = scenario("managed-preprovisioned", ns, &targets);
    converge(dir.path(), &[]);
    assert_eq!(secrets("cluster-2", ns).len(), 3);
}

#[test]
fn less_than_the_example_rbac_fails_with_the_denied_verb_and_resource() {
    let ns = "kb-rbac-less";
    let tmp = tempfile::tempdir().expect("tempdir");
    // Everything on Secrets but `list`, nothing on Leases.
    let limited = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{ name: {ns} }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{ name: relayctl-limited, namespace: {ns} }}
rules:
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{ name: relayctl-limited, namespace: {ns} }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: Role, name: relayctl-limited }}
subjects:
  - {{ kind: Group, apiGroup: rbac.authorization.k8s.io, name: relayctl-limited }}
"#
    );
    let mut targets = Vec::new();
    for context in ["mgmt", "cluster-1", "cluster-2"] {
        kubectl_stdin(context, &["apply", "-f", "-"], &limited);
        let user = env()
            .user_kubeconfig(
                context,
                &format!("limited-{context}"),
                &["relayctl-limited"],
            )
            .expect("mint a user");
        let copy = tmp.path().join(format!("{context}.kubeconfig"));
        std::fs::copy(&user, &copy).expect("copy kubeconfig");
        targets.push(Target::via(context, context, &copy));
    }
    let dir = scenario("managed", ns, &targets);

    let run = plan(dir.path(), &[]);
    run.expect(1, "no list on Secrets");
    let text = run.all();
    assert!(text.contains("forbidden (403)"), "{text}");
    assert!(
        text.contains(r#"User "limited-cluster-1" cannot list resource "secrets""#),
        "{text}"
    );
    assert!(text.contains("of cluster `cluster-1`"), "{text}");

    // The lock creates its Lease first (a read only follows a 409), so the
    // verb refused is `create`.
    let run = apply(dir.path(), &[]);
    run.expect(1, "no Leases");
    let text = run.all();
    assert!(
        text.contains(r#"cannot create resource "leases" in API group "coordination.k8s.io""#),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// examples/deploy
// ---------------------------------------------------------------------------

#[test]
fn the_deploy_examples_are_accepted_by_a_real_api_server() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/deploy");
    let rbac = std::fs::read_to_string(deploy.join("rbac.yaml")).expect("rbac.yaml");
    kubectl_stdin("mgmt", &["apply", "-f", "-"], &rbac);
    for file in [
        "job.yaml",
        "job-sharded.yaml",
        "cronjob.yaml",
        "job-configmap.yaml",
        "deployment.yaml",
    ] {
        let path = deploy.join(file).display().to_string();
        kubectl("mgmt", &["apply", "--dry-run=server", "-f", &path]);
    }
    let config = deploy.join("config").display().to_string();
    kubectl(
        "mgmt",
        &[
            "-n",
            "relayctl",
            "create",
            "configmap",
            "relayctl-manifests",
            &format!("--from-file={config}"),
            "--dry-run=server",
        ],
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    relayctl(tmp.path(), &["validate", &config], &[]).expect(0, "the Job's manifests validate");
}

#[test]
fn registration_names_a_missing_crd_then_writes_kubernetes_clusters_on_mgmt() {
    let ns = "kb-registration";
    let dir = standard("managed", ns);
    let trust = std::fs::read_to_string(dir.path().join("relay-trust.yaml")).expect("read");
    std::fs::write(
        dir.path().join("relay-trust.yaml"),
        trust.replacen(
            "\nspec:\n",
            "\nspec:\n  registration: { enabled: true }\n",
            1,
        ),
    )
    .expect("write");
    // This test binary's mgmt has no KubernetesCluster CRD yet.
    let crd_missing = kubectl_with(
        env().kubeconfig(),
        "mgmt",
        &[
            "get",
            "crd",
            "kubernetesclusters.admin.gloo.solo.io",
            "--ignore-not-found",
        ],
        None,
    );
    assert!(
        crd_missing.trim().is_empty(),
        "no other test of this binary installs the CRD: {crd_missing}"
    );
    {
        let run = plan(dir.path(), &[]);
        run.expect(1, "registration without the CRD is an error");
        let text = run.all();
        assert!(
            text.contains(
                "the CustomResourceDefinition `kubernetesclusters.admin.gloo.solo.io` is not installed on cluster `mgmt`"
            ),
            "{text}"
        );
        assert!(
            text.contains("+ kb-registration/relay-root-tls-secret  create: missing"),
            "the Secrets are still planned: {text}"
        );
        let crd = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tools/relay-sim/crd-kubernetescluster.yaml"),
        )
        .expect("the CRD of the conformance harness");
        kubectl_stdin("mgmt", &["apply", "-f", "-"], &crd);
        kubectl(
            "mgmt",
            &[
                "wait",
                "--for=condition=Established",
                "crd/kubernetesclusters.admin.gloo.solo.io",
                "--timeout=30s",
            ],
        );
    }
    converge(dir.path(), &[]);
    let names = kubectl(
        "mgmt",
        &[
            "-n",
            ns,
            "get",
            "kubernetesclusters.admin.gloo.solo.io",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    assert_eq!(names.trim(), "cluster-1 cluster-2");
    let domain = kubectl(
        "mgmt",
        &[
            "-n",
            ns,
            "get",
            "kubernetesclusters.admin.gloo.solo.io",
            "cluster-1",
            "-o",
            "jsonpath={.spec.clusterDomain}",
        ],
    );
    assert_eq!(domain.trim(), "cluster.local");
}

// ---------------------------------------------------------------------------
// Events and the status ConfigMap
// ---------------------------------------------------------------------------

/// relayctl's Events in `ns` on `context`: (reason, Secret, type, note).
fn relayctl_events(context: &str, ns: &str) -> Vec<(String, String, String, String)> {
    let json: serde_json::Value = serde_json::from_str(&kubectl(
        context,
        &["-n", ns, "get", "events.events.k8s.io", "-o", "json"],
    ))
    .expect("events json");
    let mut out: Vec<(String, String, String, String)> = json["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["reportingController"] == "relayctl.dev/relayctl")
        .map(|e| {
            assert_eq!(e["regarding"]["kind"], "Secret", "{e}");
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            (
                text(&e["reason"]),
                text(&e["regarding"]["name"]),
                text(&e["type"]),
                text(&e["note"]),
            )
        })
        .collect();
    out.sort();
    out
}

/// The `status.json` of the status ConfigMap on mgmt.
fn run_status(ns: &str) -> serde_json::Value {
    let json: serde_json::Value = serde_json::from_str(&kubectl(
        "mgmt",
        &[
            "-n",
            ns,
            "get",
            "configmap",
            "relayctl-status-prod",
            "-o",
            "json",
        ],
    ))
    .expect("configmap json");
    serde_json::from_str(json["data"]["status.json"].as_str().expect("status.json"))
        .expect("status is JSON")
}

#[test]
fn events_record_transitions_only_and_jobs_write_their_status_with_the_example_rbac() {
    let ns = "kb-ops";
    let tmp = tempfile::tempdir().expect("tempdir");
    let rbac = deploy_rbac(ns);
    let mut targets = Vec::new();
    for context in ["mgmt", "cluster-1", "cluster-2"] {
        kubectl_stdin(context, &["apply", "-f", "-"], &rbac);
        let user = env()
            .user_kubeconfig(context, &format!("ops-{context}"), &["relayctl"])
            .expect("mint a user");
        let copy = tmp.path().join(format!("{context}.kubeconfig"));
        std::fs::copy(&user, &copy).expect("copy kubeconfig");
        targets.push(Target::via(context, context, &copy));
    }
    let dir = scenario("managed-preprovisioned", ns, &targets);
    let repo = dir.path().display().to_string();
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .stdout(Stdio::null())
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    };
    std::fs::write(dir.path().join(".gitignore"), "state/\ncache/\n").expect("gitignore");
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "fleet"]);
    let cache = dir.path().join("cache").display().to_string();
    let once = || {
        relayctl(
            dir.path(),
            &[
                "reconcile",
                "--once",
                "--git",
                &repo,
                "--path",
                ".",
                "--git-cache",
                &cache,
                "--status-configmap",
            ],
            &[],
        )
    };
    let all_events = || {
        ["mgmt", "cluster-1", "cluster-2"]
            .map(|c| relayctl_events(c, ns))
            .to_vec()
    };

    // First run: every Secret is created, each with one `Created` Event in
    // the cluster that holds it.
    let run = once();
    run.expect(0, "first run");
    let first = all_events();
    for (context, events) in ["mgmt", "cluster-1", "cluster-2"].iter().zip(&first) {
        for name in secrets(context, ns).keys() {
            assert!(
                events
                    .iter()
                    .any(|(r, s, t, _)| r == "Created" && s == name && t == "Normal"),
                "{context}: no Created Event for {name}: {events:?}\n{}",
                run.all()
            );
        }
    }
    let status = run_status(ns);
    assert_eq!(status["ok"], true, "{status}");
    assert_eq!(status["counts"]["drift"], 3, "{status}");
    assert_eq!(status["failing"], serde_json::json!([]));
    assert_eq!(
        status["commit"].as_str().map(str::len),
        Some(40),
        "{status}"
    );
    assert!(
        status["configDigest"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );

    // An unchanged run records nothing.
    once().expect(0, "unchanged run");
    assert_eq!(all_events(), first, "an unchanged run records no Event");
    assert_eq!(run_status(ns)["counts"]["converged"], 3);

    // Drift is repaired once, with one `Repaired` Event.
    patch_data(
        "cluster-1",
        ns,
        TOKEN_SECRET,
        &[("token", b"tampered".as_slice())],
    );
    once().expect(0, "repair");
    let repaired: Vec<_> = relayctl_events("cluster-1", ns)
        .into_iter()
        .filter(|(r, ..)| r == "Repaired")
        .collect();
    assert_eq!(repaired.len(), 1, "{repaired:?}");
    assert!(
        repaired[0].3.contains("token differs from mgmt"),
        "{repaired:?}"
    );

    // An expired client certificate is renewed, with one `Renewed` Event
    // naming the new notAfter.
    let mgmt = secrets("mgmt", ns);
    let signing = relayctl::pki::Issuer::new(
        data(&mgmt, SIGNING_SECRET, "tls.crt"),
        relayctl::pki::PrivateKey::from_pem(
            mgmt.get(SIGNING_SECRET)
                .unwrap()
                .get("tls.key")
                .expect("key"),
        )
        .expect("signing key"),
    )
    .expect("issuer");
    let short = relayctl::pki::issue_client(
        &relayctl::pki::ClientRequest {
            cluster_name: DnsLabel::parse("cluster-2").expect("name"),
            validity: relayctl::model::Duration::from_secs(60),
            key: Default::default(),
        },
        &signing,
        &relayctl::pki::OsKeySource,
        // Issued as early as the signing CA allows, for a minute: expired
        // by now (the signing CA is backdated for clock skew).
        relayctl::pki::inspect_bundle(data(&mgmt, SIGNING_SECRET, "tls.crt")).expect("signing")[0]
            .not_before
            + time::Duration::seconds(1),
    )
    .expect("issue");
    let chain = format!("{}{}", short.cert_pem, signing.cert_pem());
    patch_data(
        "cluster-2",
        ns,
        CLIENT_SECRET,
        &[
            ("tls.crt", chain.as_bytes()),
            ("tls.key", short.key.to_pkcs8_pem().expose()),
        ],
    );
    once().expect(0, "renewal");
    let renewed: Vec<_> = relayctl_events("cluster-2", ns)
        .into_iter()
        .filter(|(r, ..)| r == "Renewed")
        .collect();
    assert_eq!(renewed.len(), 1, "{:?}", relayctl_events("cluster-2", ns));
    assert!(renewed[0].1 == CLIENT_SECRET, "{renewed:?}");
    assert!(renewed[0].3.contains("expired "), "{renewed:?}");
    assert!(renewed[0].3.contains("valid until"), "{renewed:?}");

    // The loop on real API servers: its metrics count the API requests.
    let mut looping = Command::new(env!("CARGO_BIN_EXE_relayctl"))
        .args([
            "reconcile",
            "--git",
            &repo,
            "--path",
            ".",
            "--git-cache",
            &cache,
        ])
        .args(["--interval", "1s", "--metrics-addr", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("KUBECONFIG")
        .env("HOME", dir.path())
        .env("NO_COLOR", "1")
        .env("RELAYCTL_STATE_DIR", dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the loop");
    let stderr = looping.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let addr = loop {
        let line = lines
            .next()
            .expect("the loop logs its address")
            .expect("line");
        if let Some(at) = line.find("on http://") {
            break line[at + "on http://".len()..]
                .split_whitespace()
                .next()
                .expect("addr")
                .to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let scrape = || -> String {
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stream, &mut text).expect("response");
        text
    };
    let started = Instant::now();
    let metrics = loop {
        let text = scrape();
        if text.contains("relayctl_cluster_state{cluster=\"cluster-1\",state=\"converged\"} 1") {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no converged tick:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = looping.kill();
    let _ = looping.wait();
    let count = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}` in\n{metrics}"))
    };
    assert!(
        count("relayctl_api_requests_total{code=\"2xx\"} ") >= 3.0,
        "{metrics}"
    );
    assert!(
        count("relayctl_api_request_duration_seconds_count ") >= 3.0,
        "{metrics}"
    );
    assert!(!metrics.contains("relayctl_api_request_duration_seconds_bucket{cluster"));

    // A conflict is one Warning, however many runs find it again.
    plant_foreign_root("cluster-2", ns);
    // cluster-1 drifts in the same tick: it is repaired, and its Events (sent
    // as soon as its writes end) hold nothing of cluster-2's conflict.
    patch_data("cluster-1", ns, TOKEN_SECRET, &[("token", b"drifted")]);
    once().expect(1, "a conflict fails the run");
    once().expect(1, "the conflict is still there");
    let first = relayctl_events("cluster-1", ns);
    assert!(
        first.iter().any(|(r, ..)| r == "Repaired") && first.iter().all(|(r, ..)| r != "Conflict"),
        "cluster-1: its repair, never cluster-2's conflict: {first:?}"
    );
    let conflicts: Vec<_> = relayctl_events("cluster-2", ns)
        .into_iter()
        .filter(|(r, ..)| r == "Conflict")
        .collect();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].2, "Warning");
    let status = run_status(ns);
    assert_eq!(status["ok"], false);
    assert_eq!(status["counts"]["conflict"], 1, "{status}");
    assert_eq!(status["failing"][0]["name"], "cluster-2", "{status}");
    assert_eq!(status["failing"][0]["state"], "conflict", "{status}");

    // No secret in any Event or in the status.
    let mgmt = secrets("mgmt", ns);
    let token = String::from_utf8_lossy(data(&mgmt, TOKEN_SECRET, "token")).into_owned();
    let everything = format!("{:?}{}", all_events(), run_status(ns));
    assert!(!everything.contains(&token));
    assert!(!everything.contains("PRIVATE KEY"));
    for key in [SIGNING_SECRET, SERVER_SECRET] {
        let pem = String::from_utf8_lossy(data(&mgmt, key, "tls.key")).into_owned();
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!everything.contains(line));
        }
    }
}
