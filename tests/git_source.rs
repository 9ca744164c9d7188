//! Git as the source of truth, with real repositories: a bare "remote" and a
//! work clone that commits and pushes, the `relayctl` binary reading through
//! `--git`, and the directory backend (`--state-dir`) standing in for the
//! clusters. Covers `reconcile --once` and `--interval`, a pushed cluster, a
//! pushed invalid manifest, a force push, saved plans pinned to their commit,
//! the cache being reused, and credentials never being printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_relayctl");

const RELAY_TRUST: &str = "\
apiVersion: relayctl.dev/v1alpha1
kind: RelayTrust
metadata:
  name: prod
spec:
  namespace: gloo-mesh
  ca:
    mode: managed
    root: { commonName: relay-root-ca, validity: 87600h, key: ecdsa-p256 }
    intermediate: { validity: 43800h }
  identityToken: { enabled: true }
  server:
    authority: gloo-mesh-mgmt-server.gloo-mesh
    validity: 8760h
  clientCerts:
    mode: token
";

fn workload(name: &str) -> String {
    format!("apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata:\n  name: {name}\n")
}

/// One run of the binary.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A bare remote, a work clone, a cache and a state directory.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    /// A remote whose `main` holds mgmt, cluster-1 and cluster-2 under `relay/`.
    fn with_fleet() -> Self {
        let repo = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        repo.git_in(
            repo.dir.path(),
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        repo.git_in(repo.dir.path(), &["clone", "-q", "remote.git", "work"]);
        repo.git(&["checkout", "-q", "-b", "main"]);
        repo.write("relay/relay-trust.yaml", RELAY_TRUST);
        repo.write(
            "relay/mgmt.yaml",
            "apiVersion: relayctl.dev/v1alpha1\nkind: ManagementCluster\nmetadata:\n  name: mgmt\n",
        );
        repo.write("relay/cluster-1.yaml", &workload("cluster-1"));
        repo.write("relay/cluster-2.yaml", &workload("cluster-2"));
        repo.write("README.md", "not a manifest\n");
        repo.commit_push("two workload clusters");
        repo
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn url(&self) -> String {
        format!("file://{}", self.path("remote.git").display())
    }

    fn git_in(&self, dir: &Path, args: &[&str]) -> String {
        let output = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args([
                "-c",
                "init.defaultBranch=main",
                "-c",
                "advice.detachedHead=false",
            ])
            .args(args)
            .current_dir(dir)
            .env("HOME", self.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("git runs");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn git(&self, args: &[&str]) -> String {
        self.git_in(&self.path("work"), args)
    }

    fn write(&self, name: &str, text: &str) {
        let path = self.path("work").join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// Commits everything and pushes `main`; returns the commit id.
    fn commit_push(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["push", "-q", "origin", "main"]);
        self.head()
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .arg("--git-cache")
            .arg(self.path("cache"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .env("HOME", self.dir.path())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("RELAYCTL_GIT_TOKEN")
            .env_remove("RELAYCTL_GIT_CACHE")
            .env_remove("RELAYCTL_STATE_DIR");
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        let run: Run = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .expect("relayctl runs")
            .into();
        assert!(
            !run.stdout.contains("s3cret") && !run.stderr.contains("s3cret"),
            "{run:?}"
        );
        run
    }

    fn reconcile_once(&self) -> Run {
        let url = self.url();
        self.run(&["reconcile", "--git", &url, "--path", "relay", "--once"])
    }

    /// The `relayctl.dev/source` annotation of a Secret in the state dir.
    fn source_of(&self, cluster: &str, secret: &str) -> Option<String> {
        let path = self
            .path("state")
            .join(cluster)
            .join("gloo-mesh")
            .join(format!("{secret}.yaml"));
        let text = std::fs::read_to_string(path).ok()?;
        text.lines()
            .find_map(|l| l.trim().strip_prefix("relayctl.dev/source:"))
            .map(|v| v.trim().trim_matches('"').to_owned())
    }

    /// Every file of the state dir with its bytes and modification time.
    fn state_snapshot(&self) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.map(|e| e.expect("entry")) {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    let modified = entry.metadata().expect("meta").modified().expect("mtime");
                    out.insert(
                        path.clone(),
                        (std::fs::read(&path).expect("read"), modified),
                    );
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.path("state"), &mut out);
        out
    }
}

fn assert_code(run: &Run, code: i32) {
    assert_eq!(
        run.code, code,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

#[test]
fn reconcile_once_converges_and_annotates_every_secret_with_the_commit() {
    let repo = Repo::with_fleet();
    let commit = repo.head();
    let run = repo.reconcile_once();
    assert_code(&run, 0);
    let want = format!("{}@{commit}", repo.url());
    for (cluster, secret) in [
        ("mgmt", "relay-root-tls-secret"),
        ("mgmt", "relay-server-tls-secret"),
        ("cluster-1", "relay-identity-token-secret"),
        ("cluster-2", "relay-root-tls-secret"),
    ] {
        assert_eq!(
            repo.source_of(cluster, secret).as_deref(),
            Some(want.as_str())
        );
    }

    // Converged: the plan names the commit and has nothing to do.
    let url = repo.url();
    let plan = repo.run(&[
        "plan",
        "--git",
        &url,
        "--path",
        "relay",
        "--detailed-exitcode",
    ]);
    assert_code(&plan, 0);
    assert!(plan.stdout.contains(&want), "{}", plan.stdout);
    let again = repo.reconcile_once();
    assert_code(&again, 0);
    assert!(
        again.stderr.contains("0 to create, 0 to update"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_pushed_cluster_is_provisioned_by_the_next_reconcile() {
    let repo = Repo::with_fleet();
    assert_code(&repo.reconcile_once(), 0);
    assert!(
        repo.source_of("cluster-3", "relay-root-tls-secret")
            .is_none()
    );

    repo.write("relay/cluster-3.yaml", &workload("cluster-3"));
    let commit = repo.commit_push("add cluster-3");
    let run = repo.reconcile_once();
    assert_code(&run, 0);
    let want = format!("{}@{commit}", repo.url());
    assert_eq!(
        repo.source_of("cluster-3", "relay-root-tls-secret")
            .as_deref(),
        Some(want.as_str())
    );
    assert_eq!(
        repo.source_of("cluster-3", "relay-identity-token-secret")
            .as_deref(),
        Some(want.as_str())
    );
}

#[test]
fn a_pushed_invalid_manifest_is_refused_naming_the_commit_and_the_file() {
    let repo = Repo::with_fleet();
    assert_code(&repo.reconcile_once(), 0);
    let before = repo.state_snapshot();

    repo.write(
        "relay/cluster-4.yaml",
        "apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata:\n  name: Cluster_4\nspec:\n  colour: blue\n",
    );
    let commit = repo.commit_push("a broken cluster");
    let run = repo.reconcile_once();
    assert_code(&run, 1);
    assert!(
        run.stderr.contains("--> relay/cluster-4.yaml:4:"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&commit), "{}", run.stderr);
    assert!(
        run.stderr.contains("problems in the manifests at"),
        "{}",
        run.stderr
    );
    assert_eq!(repo.state_snapshot(), before, "nothing may be written");

    // `validate` and `plan` say the same, and the short path shows no cache folder.
    let url = repo.url();
    let validate = repo.run(&["validate", "--git", &url, "--path", "relay"]);
    assert_code(&validate, 1);
    assert!(
        validate.stderr.contains(&format!("{url}@{commit}")),
        "{}",
        validate.stderr
    );
    assert!(!validate.stderr.contains("trees/"), "{}", validate.stderr);
    assert_eq!(repo.state_snapshot(), before, "nothing may be written");
}

#[test]
fn a_ref_moved_backwards_is_reported_and_applied() {
    let repo = Repo::with_fleet();
    let first = repo.head();
    repo.write("relay/cluster-3.yaml", &workload("cluster-3"));
    let ahead = repo.commit_push("add cluster-3");
    assert_code(&repo.reconcile_once(), 0);

    // Rewrite history: main goes back to `first` plus a different commit.
    repo.git(&["reset", "-q", "--hard", &first]);
    repo.write("relay/cluster-5.yaml", &workload("cluster-5"));
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "cluster-5 instead"]);
    repo.git(&["push", "-q", "--force", "origin", "main"]);
    let rewritten = repo.head();

    let run = repo.reconcile_once();
    assert_code(&run, 0);
    assert!(run.stderr.contains("moved backwards"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&ahead) && run.stderr.contains(&rewritten),
        "{}",
        run.stderr
    );
    let want = format!("{}@{rewritten}", repo.url());
    assert_eq!(
        repo.source_of("cluster-5", "relay-root-tls-secret")
            .as_deref(),
        Some(want.as_str())
    );

    // A fast-forward afterwards is no warning.
    repo.write("relay/cluster-6.yaml", &workload("cluster-6"));
    repo.commit_push("add cluster-6");
    let run = repo.reconcile_once();
    assert_code(&run, 0);
    assert!(!run.stderr.contains("moved backwards"), "{}", run.stderr);
}

#[test]
fn the_interval_loop_picks_up_a_new_commit_and_exits_0_on_sigterm() {
    let repo = Repo::with_fleet();
    let url = repo.url();
    let log = std::fs::File::create(repo.path("reconcile.log")).expect("log file");
    let mut child = repo
        .command(&[
            "reconcile",
            "--git",
            &url,
            "--path",
            "relay",
            "--interval",
            "1s",
            "--log-format",
            "json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let first = repo.head();
    wait_for("the first tick", &|| {
        repo.source_of("cluster-2", "relay-identity-token-secret")
            .is_some_and(|s| s.ends_with(&first))
    });

    repo.write("relay/cluster-3.yaml", &workload("cluster-3"));
    let second = repo.commit_push("add cluster-3");
    wait_for("cluster-3", &|| {
        repo.source_of("cluster-3", "relay-identity-token-secret")
            .is_some_and(|s| s.ends_with(&second))
    });

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(repo.path("reconcile.log")).expect("log");
    assert_eq!(status.code(), Some(0), "{log}");

    // Structured logs: one JSON object per line, with the tick and the commit.
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(events.iter().any(|e| e["signal"] == "SIGTERM"), "{log}");
    assert!(
        events
            .iter()
            .any(|e| e["commit"] == second.as_str() && e["tick"].as_u64().is_some_and(|t| t >= 2)),
        "{log}"
    );
    assert!(events.iter().all(|e| e["level"].is_string()), "{log}");
}

#[test]
fn a_failed_tick_is_retried_and_max_ticks_bounds_the_loop() {
    let repo = Repo::with_fleet();
    let url = repo.url();
    // The ref does not exist: every tick fails and is retried.
    let run = repo.run(&[
        "reconcile",
        "--git",
        &url,
        "--ref",
        "no-such-branch",
        "--interval",
        "1s",
        "--max-ticks",
        "2",
    ]);
    assert_code(&run, 1);
    assert!(
        run.stderr.contains("retrying with backoff"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr
            .matches("`no-such-branch` is not a branch, tag or commit of")
            .count(),
        2,
        "{}",
        run.stderr
    );
}

#[test]
fn url_credentials_and_tokens_never_appear_in_any_output() {
    let repo = Repo::with_fleet();
    let url = "https://user:s3cret@127.0.0.1:1/repo.git";
    for args in [
        vec!["plan", "--git", url, "--ref", "main"],
        vec!["validate", "--git", url],
        vec![
            "reconcile",
            "--git",
            url,
            "--once",
            "-vv",
            "--log-format",
            "json",
        ],
        vec!["reconcile", "--git", url, "--once", "-vv"],
    ] {
        let run = repo.run(&args); // asserts no `s3cret` anywhere
        assert_code(&run, 4); // nothing listens: the environment's fault, retrying may help
        assert!(
            run.stderr.contains("https://****@127.0.0.1:1/repo.git"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("`main`"), "{}", run.stderr);
    }

    // A token from the environment is sent, never printed.
    let run: Run = repo
        .command(&[
            "reconcile",
            "--git",
            "https://127.0.0.1:1/repo.git",
            "--once",
            "-vv",
        ])
        .env("RELAYCTL_GIT_TOKEN", "tok3n-value")
        .output()
        .expect("runs")
        .into();
    assert_code(&run, 4);
    assert!(!run.stderr.contains("tok3n-value") && !run.stdout.contains("tok3n-value"));
}

#[test]
fn the_cache_is_reused_and_only_fetched_into() {
    let repo = Repo::with_fleet();
    let url = repo.url();
    let first = repo.run(&["plan", "--git", &url, "--path", "relay", "-v"]);
    assert_code(&first, 0);
    assert!(
        first.stderr.contains("created a cached clone"),
        "{}",
        first.stderr
    );

    let caches: Vec<PathBuf> = std::fs::read_dir(repo.path("cache"))
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    let clone = caches[0].join("repo.git");
    let marker = clone.join("relayctl-test-marker");
    std::fs::write(&marker, "x").expect("marker");
    let inode =
        |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("meta"));
    let before = inode(&clone);

    repo.write("relay/cluster-3.yaml", &workload("cluster-3"));
    let commit = repo.commit_push("add cluster-3");
    let second = repo.run(&["plan", "--git", &url, "--path", "relay", "-v"]);
    assert_code(&second, 0);
    assert!(
        !second.stderr.contains("created a cached clone"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains("reusing the cached clone"),
        "{}",
        second.stderr
    );
    assert!(
        second.stdout.contains(&commit),
        "the new commit was fetched"
    );
    assert!(second.stdout.contains("cluster-3"), "{}", second.stdout);
    assert_eq!(inode(&clone), before);
    assert!(marker.exists());
    // No half-written exports are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(caches[0].join("trees"))
        .expect("trees")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_saved_plan_is_applied_from_its_recorded_commit() {
    let repo = Repo::with_fleet();
    let planned = repo.head();
    let url = repo.url();
    let out = repo.path("plan.json");
    let out_arg = out.display().to_string();
    let plan = repo.run(&["plan", "--git", &url, "--path", "relay", "--out", &out_arg]);
    assert_code(&plan, 0);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("plan")).expect("json");
    assert_eq!(saved["git"]["commit"], planned.as_str());
    assert_eq!(saved["git"]["url"], url.as_str());
    assert_eq!(saved["git"]["path"], "relay");
    assert!(
        saved["plan"]["source"]
            .as_str()
            .is_some_and(|s| s.ends_with(&planned))
    );

    // main moves on; the saved plan still applies what was planned.
    repo.write("relay/cluster-3.yaml", &workload("cluster-3"));
    repo.commit_push("add cluster-3");
    let apply = repo.run(&["apply", &out_arg]);
    assert_code(&apply, 0);
    assert!(apply.stdout.contains(&planned), "{}", apply.stdout);
    let want = format!("{url}@{planned}");
    assert_eq!(
        repo.source_of("mgmt", "relay-root-tls-secret").as_deref(),
        Some(want.as_str())
    );
    assert!(
        repo.source_of("cluster-3", "relay-root-tls-secret")
            .is_none()
    );
}

#[test]
fn refs_resolve_as_branch_tag_or_commit() {
    let repo = Repo::with_fleet();
    let first = repo.head();
    repo.git(&["tag", "v1"]);
    repo.git(&["push", "-q", "origin", "v1"]);
    repo.write("relay/cluster-3.yaml", &workload("cluster-3"));
    let second = repo.commit_push("add cluster-3");
    let url = repo.url();
    for (reference, want) in [
        ("main", &second),
        ("refs/heads/main", &second),
        ("v1", &first),
        (first.as_str(), &first),
        (&first[..10], &first),
    ] {
        let run = repo.run(&["plan", "--git", &url, "--ref", reference, "--path", "relay"]);
        assert_code(&run, 0);
        assert!(
            run.stdout.contains(&format!("@{want}")),
            "{reference}: {}",
            run.stdout
        );
    }
    // A pull request's head: on no branch, reachable by its ref or its id.
    repo.write("relay/cluster-7.yaml", &workload("cluster-7"));
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "pull request"]);
    let pull = repo.head();
    repo.git(&["push", "-q", "origin", "HEAD:refs/pull/7/head"]);
    for reference in [pull.as_str(), "refs/pull/7/head"] {
        let run = repo.run(&["plan", "--git", &url, "--ref", reference, "--path", "relay"]);
        assert_code(&run, 0);
        assert!(
            run.stdout.contains(&format!("@{pull}")),
            "{reference}: {}",
            run.stdout
        );
        assert!(run.stdout.contains("cluster-7"), "{}", run.stdout);
    }
    let run = repo.run(&["plan", "--git", &url, "--path", "nowhere"]);
    assert_code(&run, 1);
    assert!(
        run.stderr.contains("`nowhere` does not exist at"),
        "{}",
        run.stderr
    );
}

/// Answers every request with `401 Basic` and reports each request's
/// `Authorization` header (empty when absent).
fn basic_auth_server() -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut authorization = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("authorization")
                {
                    authorization = value.trim().to_owned();
                }
            }
            let _ = tx.send(authorization);
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, rx)
}

#[test]
fn credentials_are_sent_to_the_server_and_never_printed() {
    use base64::Engine as _;
    let basic = |user_pass: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    };
    let repo = Repo::with_fleet();

    // Credentials in the URL.
    let (port, requests) = basic_auth_server();
    let url = format!("http://user:s3cret@127.0.0.1:{port}/repo.git");
    let run = repo.run(&["plan", "--git", &url]);
    assert_code(&run, 1);
    let seen: Vec<String> = requests.try_iter().collect();
    assert!(seen.contains(&basic("user:s3cret")), "{seen:?}");
    assert!(
        run.stderr.contains(&format!(
            "cannot fetch `main` from `http://****@127.0.0.1:{port}/repo.git`"
        )),
        "{}",
        run.stderr
    );

    // A token from the environment, sent as the password of `x-access-token`.
    let (port, requests) = basic_auth_server();
    let url = format!("http://127.0.0.1:{port}/repo.git");
    let run: Run = repo
        .command(&["reconcile", "--git", &url, "--once", "-vv"])
        .env("RELAYCTL_GIT_TOKEN", "tok3n-value")
        .output()
        .expect("runs")
        .into();
    assert_code(&run, 1);
    let seen: Vec<String> = requests.try_iter().collect();
    assert!(
        seen.contains(&basic("x-access-token:tok3n-value")),
        "{seen:?}"
    );
    assert!(!run.stderr.contains("tok3n-value") && !run.stdout.contains("tok3n-value"));
    assert!(
        run.stderr.contains("rejected the credentials"),
        "{}",
        run.stderr
    );
}
