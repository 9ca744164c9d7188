//! Sharded runs on real API servers: mgmt and nine workload apiservers.
//!
//! Three `apply --shard I/3` processes run at once: every workload cluster
//! is written by the shard its placement names and by no other (the writer
//! annotation on each Secret), mgmt by shard 0 alone, the fleet converges,
//! and `check --shards 3` finds every cluster claimed in the shards' status
//! ConfigMaps. A writer Lease of another holder makes a shard skip that
//! cluster and say so; a shard killed with SIGKILL mid-apply leaves its
//! Leases behind, and its rerun takes them over at once and finishes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relayctl::backend::{Backend, Reach, kube_backend};
use relayctl::model::{Connection, DnsLabel};
use relayctl::observed::SecretObject;
use relayctl::relay::RelaySecret;
use relayctl::shard::{ANNOTATION_WRITER, rendezvous};
use relayctl_kube_env::KubeEnv;

/// mgmt and cluster-1 … cluster-9.
const APISERVERS: usize = 10;
const WORKLOADS: usize = APISERVERS - 1;
const SHARDS: u32 = 3;

fn env() -> &'static KubeEnv {
    KubeEnv::shared(APISERVERS)
}

/// The workload clusters' names: `region-<i>` on the context `cluster-<i>`.
/// Rendezvous hashing spreads these nine 3/2/4 over three shards, so every
/// shard has clusters to write.
fn workloads() -> Vec<String> {
    (1..=WORKLOADS).map(|i| format!("region-{i}")).collect()
}

/// The kube-env context of workload cluster `name`.
fn context(name: &str) -> String {
    name.replace("region-", "cluster-")
}

/// Where each workload cluster goes among `SHARDS`.
fn placement() -> BTreeMap<String, u32> {
    let placement: BTreeMap<String, u32> = workloads()
        .into_iter()
        .map(|n| {
            let s = rendezvous(&n, SHARDS);
            (n, s)
        })
        .collect();
    for shard in 0..SHARDS {
        assert!(
            placement.values().filter(|s| **s == shard).count() >= 2,
            "every shard has clusters: {placement:?}"
        );
    }
    placement
}

/// The managed example over every apiserver, relay namespace `ns`.
fn fleet(ns: &str) -> tempfile::TempDir {
    fleet_through(ns, env().kubeconfig())
}

/// A TCP proxy to `upstream` that holds every chunk from the server for
/// `delay`: a slow link, so that a run can be caught in the middle.
fn slow_proxy(upstream: u16, delay: Duration) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
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
                use std::io::{Read as _, Write as _};
                let mut buf = [0u8; 16384];
                while let Ok(n) = s2.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    std::thread::sleep(delay);
                    if c2.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c2.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

/// The environment's kubeconfig with `contexts` reached through a slow
/// proxy each, written into `dir`.
fn slow_kubeconfig(dir: &Path, contexts: &[String]) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(env().kubeconfig()).unwrap();
    for context in contexts {
        let port = env().cluster(context).unwrap().port();
        let proxy = slow_proxy(port, Duration::from_millis(150));
        let real = format!("127.0.0.1:{port}\n");
        assert!(text.contains(&real), "{context}: {real} in the kubeconfig");
        text = text.replace(&real, &format!("127.0.0.1:{proxy}\n"));
    }
    let path = dir.join("slow.kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

/// [`fleet`] with every cluster reached through `kubeconfig`.
fn fleet_through(ns: &str, kubeconfig: &Path) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("relayctl-{ns}-"))
        .tempdir()
        .unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clusters/managed");
    let trust = std::fs::read_to_string(example.join("relay-trust.yaml")).unwrap();
    let trust = trust.replace("  namespace: gloo-mesh\n", &format!("  namespace: {ns}\n"));
    assert!(trust.contains(&format!("namespace: {ns}")));
    std::fs::write(dir.path().join("relay-trust.yaml"), trust).unwrap();
    let kubeconfig = kubeconfig.display().to_string();
    let manifest = |kind: &str, name: &str, context: &str| {
        format!(
            "apiVersion: relayctl.dev/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n  connection: {{ kubeconfig: {{ context: {context}, path: {kubeconfig} }} }}\n"
        )
    };
    std::fs::write(
        dir.path().join("mgmt.yaml"),
        manifest("ManagementCluster", "mgmt", "mgmt"),
    )
    .unwrap();
    for name in workloads() {
        std::fs::write(
            dir.path().join(format!("{name}.yaml")),
            manifest("WorkloadCluster", &name, &context(&name)),
        )
        .unwrap();
    }
    dir
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relayctl"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .env_remove("JOB_COMPLETION_INDEX")
        .env("HOME", dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

struct Run {
    code: i32,
    all: String,
    elapsed: Duration,
}

fn run(dir: &Path, args: &[&str]) -> Run {
    let started = Instant::now();
    let out = command(dir, args).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        all: format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        elapsed: started.elapsed(),
    }
}

fn apply_shard(dir: &Path, index: u32, extra: &[&str]) -> Run {
    let shard = format!("{index}/{SHARDS}");
    let mut args = vec!["apply", ".", "--auto-approve", "--shard", &shard];
    args.extend_from_slice(extra);
    run(dir, &args)
}

fn backend(context: &str) -> Arc<dyn Backend> {
    let connection = Connection::Kubeconfig {
        context: context.to_owned(),
        path: Some(env().kubeconfig().to_path_buf()),
        limit: None,
    };
    let reach = Reach {
        state_dir: "/nonexistent".into(),
        kubeconfig: None,
        timeout: Duration::from_secs(30),
        fix_permissions: false,
        allow_outside_state_dir: false,
        parallelism: 16,
    };
    kube_backend(&DnsLabel::parse(context).unwrap(), &connection, &reach).unwrap()
}

fn secrets(context: &str, ns: &str) -> relayctl::observed::SmallMap<String, SecretObject> {
    let mut names: Vec<String> = RelaySecret::ALL
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    names.push("relayctl-prod-inventory".to_owned());
    backend(context)
        .observe(ns, "prod", &names)
        .unwrap()
        .secrets
}

/// The writer annotation of every relayctl Secret on `context`.
fn writers(context: &str, ns: &str) -> BTreeSet<String> {
    secrets(context, ns)
        .values()
        .map(|s| {
            s.annotations
                .get(ANNOTATION_WRITER)
                .cloned()
                .unwrap_or_else(|| "(none)".to_owned())
        })
        .collect()
}

fn kubectl(context: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new(env().binaries().kubectl())
        .arg("--kubeconfig")
        .arg(env().kubeconfig())
        .args(["--context", context])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The holder of the writer Lease in `context`'s relay namespace, if any.
fn writer_lease(context: &str, ns: &str) -> Option<String> {
    let (ok, text) = kubectl(
        context,
        &[
            "-n",
            ns,
            "get",
            "lease",
            "relayctl-prod.writer",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    ok.then_some(text)
}

/// Plants the writer Lease a run of `holder` would leave, renewed now.
fn plant_lease(context: &str, ns: &str, holder: &str) {
    let _ = kubectl(context, &["create", "namespace", ns], None);
    let now = time::OffsetDateTime::now_utc()
        .format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        ))
        .unwrap();
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": "relayctl-prod.writer", "namespace": ns },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 600,
            "acquireTime": now,
            "renewTime": now,
        }
    })
    .to_string();
    let (ok, text) = kubectl(context, &["apply", "-f", "-"], Some(&lease));
    assert!(ok, "{text}");
}

/// Every cluster is written by its own shard only, mgmt by shard 0 only.
#[track_caller]
fn assert_single_writers(ns: &str) {
    for (cluster, shard) in placement() {
        assert_eq!(
            writers(&context(&cluster), ns),
            BTreeSet::from([format!("shard {shard}/{SHARDS}")]),
            "{cluster}: written by its shard alone"
        );
    }
    assert_eq!(
        writers("mgmt", ns),
        BTreeSet::from([format!("shard 0/{SHARDS}")]),
        "mgmt: written by the coordinator alone"
    );
}

#[test]
fn three_shards_at_once_converge_nine_real_clusters_each_written_by_one_shard() {
    let ns = "ks-fleet";
    let dir = fleet(ns);
    let started = Instant::now();
    let children: Vec<_> = (0..SHARDS)
        .map(|i| {
            let shard = format!("{i}/{SHARDS}");
            command(
                dir.path(),
                &[
                    "apply",
                    ".",
                    "--auto-approve",
                    "--shard",
                    &shard,
                    "--shard-wait",
                    "120s",
                ],
            )
            .spawn()
            .unwrap()
        })
        .collect();
    let mut transcript = String::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "shard {i}/{SHARDS}:\n{text}");
        transcript.push_str(&text);
    }
    eprintln!("three shards converged in {:?}", started.elapsed());
    assert_single_writers(ns);
    // No shard printed the token or a key, in any form its status or its
    // log could carry.
    let mgmt = secrets("mgmt", ns);
    let token = mgmt
        .get(RelaySecret::Token.name())
        .unwrap()
        .get("token")
        .unwrap()
        .expose();
    let key = mgmt
        .get(RelaySecret::Root.name())
        .unwrap()
        .get("tls.key")
        .unwrap()
        .expose();
    let key_line = String::from_utf8_lossy(key)
        .lines()
        .find(|l| !l.starts_with("-----") && l.len() >= 24)
        .unwrap()
        .to_owned();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (ok, statuses) = kubectl("mgmt", &["-n", ns, "get", "configmaps", "-o", "yaml"], None);
    assert!(ok, "{statuses}");
    assert!(
        statuses.contains("relayctl-status-prod-shard-2"),
        "{statuses}"
    );
    for haystack in [&transcript, &statuses] {
        for needle in [
            String::from_utf8_lossy(token).into_owned(),
            b64.encode(token),
            key_line.clone(),
            b64.encode(key),
        ] {
            assert!(
                !haystack.contains(&needle),
                "a secret leaked: {}…",
                &needle[..8]
            );
        }
    }
    for cluster in workloads() {
        assert_eq!(
            writer_lease(&context(&cluster), ns),
            None,
            "{cluster}: the writer Lease is released when the shard is done"
        );
    }
    let plan = run(dir.path(), &["plan", ".", "--detailed-exitcode"]);
    assert_eq!(
        plan.code, 0,
        "a later plan of the whole fleet is empty:\n{}",
        plan.all
    );
    let check = run(dir.path(), &["check", ".", "--shards", "3", "-v"]);
    assert_eq!(check.code, 0, "{}", check.all);
    for (cluster, shard) in placement() {
        assert!(
            check.all.contains(&format!("claimed by shard {shard}/3")),
            "{cluster}: {}",
            check.all
        );
    }
    assert!(
        check.all.contains("written by shard 0/3, the coordinator"),
        "{}",
        check.all
    );
    // Counted with another shard count, the statuses do not vouch.
    let check = run(dir.path(), &["check", ".", "--shards", "4"]);
    assert_eq!(check.code, 1, "{}", check.all);
    assert!(check.all.contains("had 3 shards, not 4"), "{}", check.all);
}

#[test]
fn a_lease_of_another_writer_is_skipped_and_a_killed_shards_rerun_takes_its_leases_over() {
    let ns = "ks-fence";
    // The non-coordinator shard with the most clusters.
    let shard = (1..SHARDS)
        .max_by_key(|s| placement().values().filter(|v| *v == s).count())
        .unwrap();
    let mine: Vec<String> = placement()
        .into_iter()
        .filter(|(_, s)| *s == shard)
        .map(|(n, _)| n)
        .collect();
    assert!(mine.len() >= 2, "{mine:?}");
    // The shard's clusters are behind a slow link, so that it can be
    // killed in the middle of its apply.
    let links = tempfile::tempdir().unwrap();
    let contexts: Vec<String> = mine.iter().map(|c| context(c)).collect();
    let dir = fleet_through(ns, &slow_kubeconfig(links.path(), &contexts));
    let first = apply_shard(dir.path(), 0, &[]);
    assert_eq!(first.code, 0, "{}", first.all);

    // Another Job (with another shard count) holds the first cluster.
    let other = format!("relayctl/prod/shard-{shard}-of-{}", SHARDS + 1);
    plant_lease(&context(&mine[0]), ns, &other);
    let skipped = apply_shard(dir.path(), shard, &[]);
    assert_eq!(skipped.code, 1, "{}", skipped.all);
    assert!(
        skipped.all.contains(&format!(
            "{}: skipped: another writer holds its writer fence",
            mine[0]
        )),
        "{}",
        skipped.all
    );
    assert!(
        skipped.all.contains(&other),
        "the holder is named: {}",
        skipped.all
    );
    assert!(
        secrets(&context(&mine[0]), ns).is_empty(),
        "nothing written under another writer's Lease"
    );
    for cluster in &mine[1..] {
        assert_eq!(
            writers(&context(cluster), ns),
            BTreeSet::from([format!("shard {shard}/3")])
        );
    }
    let check = run(dir.path(), &["check", ".", "--shards", "3"]);
    assert_eq!(check.code, 1, "{}", check.all);
    assert!(
        check.all.contains("which skipped it in its last run"),
        "check reports the skipped cluster: {}",
        check.all
    );
    let (ok, text) = kubectl(
        &context(&mine[0]),
        &["-n", ns, "delete", "lease", "relayctl-prod.writer"],
        None,
    );
    assert!(ok, "{text}");

    // Drift on every cluster of the shard, then the shard is killed while it
    // repairs them one at a time.
    for cluster in &mine[1..] {
        let (ok, text) = kubectl(
            &context(cluster),
            &["-n", ns, "delete", "secret", RelaySecret::Token.name()],
            None,
        );
        assert!(ok, "{text}");
    }
    let index = format!("{shard}/{SHARDS}");
    let mut child = command(
        dir.path(),
        &[
            "apply",
            ".",
            "--auto-approve",
            "--parallelism",
            "1",
            "--shard",
            &index,
        ],
    )
    .spawn()
    .unwrap();
    // Done: the cluster holds the Secret this run has to write there.
    let done = || {
        mine.iter()
            .enumerate()
            .filter(|(i, c)| {
                let want = if *i == 0 {
                    RelaySecret::Root.name()
                } else {
                    RelaySecret::Token.name()
                };
                secrets(&context(c), ns).contains_key(want)
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if done() >= 1 {
            child.kill().unwrap(); // SIGKILL
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none() && Instant::now() < deadline,
            "the shard ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    let finished = done();
    assert!(
        finished < mine.len(),
        "killed in the middle: {finished} of {} clusters repaired",
        mine.len()
    );
    let left: Vec<&String> = mine
        .iter()
        .filter(|c| writer_lease(&context(c), ns).is_some())
        .collect();
    assert!(!left.is_empty(), "a killed shard leaves its Leases behind");

    // Its rerun (the Job's retry of that index) takes them over at once,
    // not after the 60 s they stay valid.
    let rerun = apply_shard(dir.path(), shard, &[]);
    assert_eq!(rerun.code, 0, "{}", rerun.all);
    assert!(
        rerun.elapsed < Duration::from_secs(45),
        "the rerun did not wait for its own Leases: {:?}",
        rerun.elapsed
    );
    for (s, others) in (0..SHARDS).map(|s| (s, s != shard)) {
        if others {
            assert_eq!(apply_shard(dir.path(), s, &[]).code, 0, "shard {s}");
        }
    }
    assert_single_writers(ns);
    let plan = run(dir.path(), &["plan", ".", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.all);
    let check = run(dir.path(), &["check", ".", "--shards", "3"]);
    assert_eq!(check.code, 0, "{}", check.all);
}
