//! Running relayctl in production, on the directory backend: the reconcile
//! loop's `/metrics` scraped during a real loop and read by an independent
//! parser (Python's `prometheus_client`), `/livez` and `/readyz`, series of
//! a removed cluster gone at the next tick, `check -o prometheus`, output
//! that stays a few lines for a converged 1,000-cluster fleet, progress
//! bars on a real pseudo-terminal and none elsewhere, and the HTML report
//! in a real headless browser (Debian's `chromium` driven by
//! `playwright-core`). Nothing here skips: a missing tool is installed or
//! the test fails saying why.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{BIN, Fixture};

// ---------------------------------------------------------------------------
// Tools the tests drive
// ---------------------------------------------------------------------------

/// The target directory (where cached tools and screenshots go).
fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A Python with `prometheus_client` (the exposition parsers) and
/// `promql-parser` (PromQL, for the alert rules), in a venv cached in the
/// target dir.
fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = target_dir().join("py-prometheus-client");
            let python = venv.join("bin/python");
            let ready = || {
                Command::new(&python)
                    .args([
                        "-c",
                        "import prometheus_client.parser, prometheus_client.openmetrics.parser, promql_parser",
                    ])
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !ready() {
                let status = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status()
                    .expect("python3 is needed to parse the metrics independently");
                assert!(status.success(), "python3 -m venv failed");
                let status = Command::new(venv.join("bin/pip"))
                    .args([
                        "install",
                        "-q",
                        "prometheus-client==0.26.0",
                        "promql-parser==0.11.0",
                    ])
                    .status()
                    .expect("run pip");
                assert!(
                    status.success(),
                    "pip install prometheus-client promql-parser failed"
                );
                assert!(
                    ready(),
                    "prometheus_client is not importable after installing it"
                );
            }
            python
        })
        .clone()
}

/// Parses exposition `text` with `prometheus_client`'s parser for `format`
/// (`prometheus` or `openmetrics`): family name → (type, samples as
/// (name, labels, value)).
type Families = BTreeMap<String, (String, Vec<(String, BTreeMap<String, String>, f64)>)>;

fn parse_metrics(text: &str, format: &str) -> Families {
    let module = match format {
        "prometheus" => "prometheus_client.parser",
        _ => "prometheus_client.openmetrics.parser",
    };
    let script = format!(
        "import sys, json\nfrom {module} import text_string_to_metric_families as parse\nout = {{}}\nfor f in parse(sys.stdin.read()):\n    out[f.name] = [f.type, [[s.name, s.labels, s.value] for s in f.samples]]\nprint(json.dumps(out))\n"
    );
    let mut child = Command::new(python())
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the {format} parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `GET path` with `accept`: (status code, content type, body).
fn get(addr: &str, path: &str, accept: &str) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_owned();
    (code, content_type, body.to_owned())
}

// ---------------------------------------------------------------------------
// Fleets
// ---------------------------------------------------------------------------

/// `managed-preprovisioned` with ECDSA keys (fast), applied.
fn applied() -> Fixture {
    let fixture = Fixture::example("managed-preprovisioned");
    let trust = fixture.config().join("relay-trust.yaml");
    let text = std::fs::read_to_string(&trust)
        .unwrap()
        .replace("rsa-4096", "ecdsa-p256");
    std::fs::write(&trust, text).unwrap();
    fixture.apply();
    fixture
}

/// A Git repository in the fixture holding its config under `relay/`.
struct Repo {
    path: PathBuf,
    home: PathBuf,
}

impl Repo {
    fn of(fixture: &Fixture) -> Self {
        let repo = Self {
            path: fixture.dir.path().join("repo"),
            home: fixture.dir.path().to_path_buf(),
        };
        std::fs::create_dir_all(repo.path.join("relay")).unwrap();
        support::copy_dir(&fixture.config(), &repo.path.join("relay"));
        repo.git(&["init", "-q", "-b", "main"]);
        repo.commit("fleet");
        repo
    }

    fn git(&self, args: &[&str]) {
        let status = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .current_dir(&self.path)
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    fn commit(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
    }
}

/// A running `relayctl reconcile --interval 1s --metrics-addr 127.0.0.1:0`.
struct Loop {
    child: Child,
    addr: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Loop {
    fn start(fixture: &Fixture, repo: &Repo, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["reconcile", "--git"])
            .arg(&repo.path)
            .args(["--path", "relay", "--interval", "1s"])
            .args(["--metrics-addr", "127.0.0.1:0", "--git-cache"])
            .arg(fixture.dir.path().join("git-cache"))
            .args(extra)
            .arg("--state-dir")
            .arg(fixture.state())
            .current_dir(fixture.dir.path())
            .env("NO_COLOR", "1")
            .env("HOME", fixture.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(at) = line.find("on http://") {
                    let addr: String = line[at + "on http://".len()..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    let _ = tx.send(addr);
                }
                kept.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the loop names the address it serves on");
        Self { child, addr, log }
    }

    /// Polls `check` until it holds or `within` passes.
    fn wait_for(&self, within: Duration, what: &str, check: impl Fn(&Self) -> bool) {
        let started = Instant::now();
        while !check(self) {
            assert!(
                started.elapsed() < within,
                "{what} within {within:?}; log:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn metrics(&self, format: &str) -> (String, Families) {
        let accept = match format {
            "prometheus" => "text/plain;version=0.0.4",
            _ => "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        };
        let (code, content_type, body) = get(&self.addr, "/metrics", accept);
        assert_eq!(code, 200, "{body}");
        let want = match format {
            "prometheus" => "text/plain; version=0.0.4",
            _ => "application/openmetrics-text; version=1.0.0",
        };
        assert!(content_type.starts_with(want), "{content_type}");
        let families = parse_metrics(&body, format);
        (body, families)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The certificates on disk: (cluster, secret, role) → (notBefore, notAfter)
/// as Unix seconds.
fn certificates_on_disk(fixture: &Fixture) -> BTreeMap<(String, String, String), (i64, i64)> {
    let mut out = BTreeMap::new();
    for cluster in ["mgmt", "cluster-1", "cluster-2"] {
        let mut wanted = vec![
            ("relay-root-tls-secret", "ca.crt", "root"),
            ("relay-client-tls-secret", "tls.crt", "client"),
        ];
        if cluster == "mgmt" {
            wanted = vec![
                ("relay-root-tls-secret", "ca.crt", "root"),
                ("relay-tls-signing-secret", "tls.crt", "intermediate"),
                ("relay-server-tls-secret", "tls.crt", "server"),
            ];
        }
        for (secret, key, role) in wanted {
            let object = fixture.secret(cluster, secret).unwrap();
            let facts = relayctl::pki::inspect_bundle(object.get(key).unwrap().expose())
                .unwrap()
                .remove(0);
            out.insert(
                (cluster.to_owned(), secret.to_owned(), role.to_owned()),
                (
                    facts.not_before.unix_timestamp(),
                    facts.not_after.unix_timestamp(),
                ),
            );
        }
    }
    out
}

/// The samples of `family` keyed by (cluster, secret, role).
fn by_certificate(families: &Families, family: &str) -> BTreeMap<(String, String, String), f64> {
    let (kind, samples) = families
        .get(family)
        .unwrap_or_else(|| panic!("no family `{family}` in {:?}", families.keys()));
    assert_eq!(kind, "gauge", "{family}");
    samples
        .iter()
        .map(|(_, labels, value)| {
            let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
            assert_eq!(label("fingerprint").len(), 12, "{labels:?}");
            ((label("cluster"), label("secret"), label("role")), *value)
        })
        .collect()
}

fn states(families: &Families) -> BTreeMap<String, Vec<String>> {
    let (kind, samples) = &families["relayctl_cluster_state"];
    assert_eq!(kind, "gauge");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, labels, value) in samples {
        let entry = out.entry(labels["cluster"].clone()).or_default();
        if *value == 1.0 {
            entry.push(labels["state"].clone());
        } else {
            assert_eq!(*value, 0.0, "{labels:?}");
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Metrics and health
// ---------------------------------------------------------------------------

#[test]
fn the_loop_serves_metrics_an_independent_parser_reads_and_a_removed_cluster_disappears() {
    let started = time::OffsetDateTime::now_utc().unix_timestamp();
    let fixture = applied();
    let repo = Repo::of(&fixture);
    let looping = Loop::start(&fixture, &repo, &[]);
    // Ready once the first tick observed the fleet; its metrics are
    // published when it ends.
    looping.wait_for(Duration::from_secs(60), "ready after the first tick", |l| {
        get(&l.addr, "/readyz", "*/*").0 == 200
            && get(&l.addr, "/metrics", "*/*")
                .2
                .lines()
                .any(|line| line.starts_with("relayctl_reconcile_total ") && !line.ends_with(" 0"))
    });
    let (code, _, body) = get(&looping.addr, "/livez", "*/*");
    assert_eq!(code, 200, "{body}");

    let on_disk = certificates_on_disk(&fixture);
    for format in ["prometheus", "openmetrics"] {
        let (text, families) = looping.metrics(format);
        let not_after = by_certificate(
            &families,
            "relayctl_certificate_not_after_timestamp_seconds",
        );
        let not_before = by_certificate(
            &families,
            "relayctl_certificate_not_before_timestamp_seconds",
        );
        let renewal = by_certificate(&families, "relayctl_certificate_renewal_timestamp_seconds");
        assert_eq!(not_after.len(), on_disk.len(), "{format}: {text}");
        for (key, (before, after)) in &on_disk {
            assert_eq!(
                not_after.get(key),
                Some(&(*after as f64)),
                "{format} {key:?}"
            );
            assert_eq!(
                not_before.get(key),
                Some(&(*before as f64)),
                "{format} {key:?}"
            );
            let renew = renewal[key];
            assert!(
                renew > *before as f64 && renew < *after as f64,
                "{key:?}: {renew}"
            );
        }
        // The example's client certificates renew 720h before expiry.
        let client = (
            "cluster-1".to_owned(),
            "relay-client-tls-secret".to_owned(),
            "client".to_owned(),
        );
        assert_eq!(renewal[&client], (on_disk[&client].1 - 720 * 3600) as f64);

        let states = states(&families);
        for cluster in ["mgmt", "cluster-1", "cluster-2"] {
            assert_eq!(states[cluster], ["converged"], "{format}: {cluster}");
        }
        let (kind, samples) = &families["relayctl_reconcile"];
        assert_eq!(kind, "counter", "{format}");
        assert!(
            samples
                .iter()
                .any(|(n, _, v)| n == "relayctl_reconcile_total" && *v >= 1.0)
        );
        let (kind, samples) = &families["relayctl_reconcile_errors"];
        assert_eq!(kind, "counter");
        let reasons: Vec<&str> = samples
            .iter()
            .map(|(_, l, _)| l["reason"].as_str())
            .collect();
        assert_eq!(reasons.len(), 6, "{reasons:?}");
        assert!(samples.iter().all(|(_, _, v)| *v == 0.0), "{samples:?}");
        let (kind, samples) = &families["relayctl_reconcile_duration_seconds"];
        assert_eq!(kind, "histogram");
        assert!(
            samples
                .iter()
                .any(|(n, l, _)| n.ends_with("_bucket") && l["le"] == "+Inf")
        );
        assert!(samples.iter().all(|(_, l, _)| !l.contains_key("cluster")));
        let (kind, _) = &families["relayctl_api_request_duration_seconds"];
        assert_eq!(kind, "histogram");
        let (_, samples) = &families["relayctl_last_success_timestamp_seconds"];
        let last = samples[0].2 as i64;
        assert!(last >= started && last <= time::OffsetDateTime::now_utc().unix_timestamp() + 1);
        let build = match format {
            "prometheus" => &families["relayctl_build_info"],
            _ => &families["relayctl_build"],
        };
        assert_eq!(
            build.0,
            if format == "prometheus" {
                "gauge"
            } else {
                "info"
            }
        );
        assert_eq!(build.1[0].1["version"], env!("CARGO_PKG_VERSION"));
    }

    // Every alert rule of examples/deploy parses as PromQL and names only
    // metrics the loop serves.
    let (text, _) = looping.metrics("prometheus");
    alert_rules_name_served_metrics(&text);

    // cluster-2 leaves the config: its series are gone at the next tick.
    std::fs::remove_file(repo.path.join("relay/cluster-2.yaml")).unwrap();
    repo.commit("cluster-2 leaves");
    looping.wait_for(Duration::from_secs(60), "cluster-2's series gone", |l| {
        !l.metrics("prometheus").0.contains("cluster-2")
    });
    let (_, families) = looping.metrics("openmetrics");
    assert_eq!(
        states(&families).keys().collect::<Vec<_>>(),
        ["cluster-1", "mgmt"]
    );
    let log = looping.log.lock().unwrap().clone();
    fixture.transcript.borrow_mut().push_str(&log);
    fixture
        .transcript
        .borrow_mut()
        .push_str(&looping.metrics("openmetrics").0);
    fixture.assert_no_leak(&[]);
}

/// Checks `examples/deploy/prometheus-rules.yaml` against `served` (the
/// classic text of a scrape).
fn alert_rules_name_served_metrics(served: &str) {
    let path = Path::new(support::ROOT).join("examples/deploy/prometheus-rules.yaml");
    let rules: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let rules = rules["groups"][0]["rules"].as_array().unwrap();
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    for wanted in [
        "RelayCertificateExpiresIn30Days",
        "RelayClusterNotConverged",
    ] {
        assert!(names.contains(&wanted), "{names:?}");
    }
    let samples: std::collections::BTreeSet<&str> = served
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for rule in rules {
        let expr = rule["expr"].as_str().unwrap();
        assert!(rule["labels"]["severity"].is_string(), "{rule}");
        assert!(rule["annotations"]["summary"].is_string(), "{rule}");
        let output = Command::new(python())
            .args([
                "-c",
                "import sys, promql_parser; promql_parser.parse(sys.argv[1])",
                expr,
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "`{expr}` is not PromQL: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut rest = expr;
        while let Some(at) = rest.find("relayctl_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                samples.contains(name.as_str()),
                "`{name}` in `{expr}` is not served"
            );
            rest = &rest[at + name.len()..];
        }
    }
}

#[test]
fn livez_stays_up_and_readyz_goes_down_while_another_run_holds_the_lock() {
    let fixture = applied();
    let repo = Repo::of(&fixture);
    let looping = Loop::start(&fixture, &repo, &["--health-addr", "127.0.0.1:0"]);
    looping.wait_for(Duration::from_secs(60), "ready", |l| {
        get(&l.addr, "/readyz", "*/*").0 == 200
    });
    // Another run holds the apply lock: ticks fail before they observe.
    let lock = fixture.state().join("mgmt/.relayctl-prod.lock");
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock)
            .unwrap();
    }
    // `--no-fork`: the lock is held by the process killed below, not by a
    // child that would outlive it.
    let mut holder = Command::new("flock")
        .arg("--no-fork")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .expect("flock from util-linux");
    looping.wait_for(Duration::from_secs(60), "not ready", |l| {
        get(&l.addr, "/readyz", "*/*").0 == 503
    });
    let (code, _, body) = get(&looping.addr, "/readyz", "*/*");
    assert!(body.contains("lock"), "{code} {body}");
    let (code, _, body) = get(&looping.addr, "/livez", "*/*");
    assert_eq!(code, 200, "a failing tick never fails liveness: {body}");
    let (_, families) = looping.metrics("prometheus");
    let (_, samples) = &families["relayctl_reconcile_errors"];
    assert!(
        samples
            .iter()
            .any(|(_, l, v)| l["reason"] == "lock" && *v >= 1.0),
        "the failed ticks are counted by reason: {samples:?}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
    looping.wait_for(Duration::from_secs(60), "ready again", |l| {
        get(&l.addr, "/readyz", "*/*").0 == 200
    });
    assert_eq!(get(&looping.addr, "/nowhere", "*/*").0, 404);
}

#[test]
fn check_prints_the_same_metrics_for_a_textfile_collector() {
    let fixture = applied();
    let run = fixture.run(&["check", "config", "-o", "prometheus"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let families = parse_metrics(&run.stdout, "prometheus");
    let not_after = by_certificate(
        &families,
        "relayctl_certificate_not_after_timestamp_seconds",
    );
    for (key, (_, after)) in certificates_on_disk(&fixture) {
        assert_eq!(not_after.get(&key), Some(&(after as f64)), "{key:?}");
    }
    assert_eq!(states(&families)["cluster-1"], ["converged"]);
    assert!(!run.stdout.contains("# EOF") && !run.stdout.contains("# UNIT"));

    // A broken workload is `error`, the others stay `converged`.
    let mut client = fixture
        .secret("cluster-2", "relay-client-tls-secret")
        .unwrap();
    client.data.remove("tls.key");
    fixture.put("cluster-2", client);
    let run = fixture.run(&["check", "config", "-o", "prometheus"]);
    assert_eq!(run.code, 1);
    let families = parse_metrics(&run.stdout, "prometheus");
    assert_eq!(states(&families)["cluster-2"], ["error"]);
    assert_eq!(states(&families)["cluster-1"], ["converged"]);
    fixture.assert_no_leak(&[]);
}

// ---------------------------------------------------------------------------
// Output that scales
// ---------------------------------------------------------------------------

/// `example` with `n` workload clusters, all in one manifest file, and
/// ECDSA keys (fast).
fn fleet_of(example: &str, n: usize) -> Fixture {
    let fixture = Fixture::empty();
    let example = Path::new(support::ROOT)
        .join("examples/clusters")
        .join(example);
    for file in ["relay-trust.yaml", "mgmt.yaml"] {
        let text = std::fs::read_to_string(example.join(file))
            .unwrap()
            .replace("rsa-4096", "ecdsa-p256");
        fixture.write_config(file, &text);
    }
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "---\napiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata: {{ name: c{i:04} }}\n"
        ));
    }
    fixture.write_config("workloads.yaml", &text);
    fixture
}

#[test]
fn a_converged_thousand_cluster_fleet_is_a_few_lines_of_plan_and_check() {
    let fixture = fleet_of("managed-preprovisioned", 1000);
    fixture.apply();
    let plan = fixture.run(&["plan", "config", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(plan.stdout.lines().count() <= 6, "{}", plan.stdout);
    assert!(
        plan.stdout.contains("1001 clusters unchanged"),
        "{}",
        plan.stdout
    );
    let markdown = fixture.run(&["plan", "config", "-o", "markdown"]);
    assert!(markdown.stdout.lines().count() <= 8, "{}", markdown.stdout);
    let everything = fixture.run(&["plan", "config", "--show-unchanged"]);
    assert!(everything.stdout.lines().count() > 3000);
    let json = fixture.run(&["plan", "config", "-o", "json"]);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        value["clusters"].as_array().unwrap().len(),
        1001,
        "JSON carries everything"
    );

    // One drifted cluster: the plan shows it alone, then the counts.
    let token = fixture
        .secret("c0500", "relay-identity-token-secret")
        .unwrap();
    let mut changed = token.clone();
    changed.data.insert(
        "token".into(),
        relayctl::secret::SecretBytes::new(b"not-the-token-of-mgmt".to_vec()),
    );
    fixture.put("c0500", changed);
    let plan = fixture.run(&["plan", "config"]);
    assert!(plan.stdout.contains("c0500 (workload)"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("token differs from mgmt"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("1000 clusters unchanged"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.lines().count() <= 12, "{}", plan.stdout);
    fixture.put("c0500", token);

    // check: one line per healthy cluster, nothing expanded.
    let check = fixture.run(&["check", "config"]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(check.stdout.lines().count() <= 1001 + 5);
    assert!(
        check.stdout.contains("\n√ c0999 (workload): "),
        "{}",
        &check.stdout[..500]
    );
    // (`-v` lists every line: tests/check.rs reads them so.)
    fixture.assert_no_leak(&[]);
}

#[test]
fn check_expands_only_clusters_with_a_warning_or_a_failure() {
    let fixture = applied();
    let mut client = fixture
        .secret("cluster-2", "relay-client-tls-secret")
        .unwrap();
    client.data.remove("tls.key");
    fixture.put("cluster-2", client);
    let run = fixture.run(&["check", "config"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("\n√ mgmt (management): 11 checks passed\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\n√ cluster-1 (workload): 7 checks passed\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\ncluster-2 (workload)\n  √ root bundle matches mgmt"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("  × client certificate has no `tls.key`\n    hint:"),
        "{}",
        run.stdout
    );
}

// ---------------------------------------------------------------------------
// Progress on terminals only
// ---------------------------------------------------------------------------

#[test]
fn progress_bars_are_drawn_on_a_terminal_and_never_elsewhere() {
    let fixture = fleet_of("managed", 40);
    let state = fixture.state();
    let command = |extra: &str| {
        format!(
            "{BIN} apply config --auto-approve --state-dir {} {extra} > /dev/null",
            state.display()
        )
    };
    // A real pseudo-terminal: util-linux `script`.
    let output = Command::new("script")
        .args(["-q", "-e", "-c", &command(""), "/dev/null"])
        .current_dir(fixture.dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("`script` from util-linux runs the command on a pseudo-terminal");
    assert!(output.status.success(), "{output:?}");
    let tty = String::from_utf8_lossy(&output.stdout);
    assert!(tty.contains("observing ["), "{tty}");
    assert!(tty.contains(" applying ["), "{tty}");
    assert!(tty.contains("/41 clusters"), "{tty}");

    // Failures are named on the bar: a cluster whose Secret file is a
    // folder cannot be read.
    let token = state.join("c0007/gloo-mesh/relay-identity-token-secret.yaml");
    std::fs::remove_file(&token).unwrap();
    std::fs::create_dir(&token).unwrap();
    let output = Command::new("script")
        .args(["-q", "-c", &command(""), "/dev/null"])
        .current_dir(fixture.dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    std::fs::remove_dir(&token).unwrap();
    let tty = String::from_utf8_lossy(&output.stdout);
    assert!(tty.contains("(1 failed: c0007)"), "{tty}");

    for quiet in ["-q", "--log-format json"] {
        std::fs::remove_file(state.join("c0003/gloo-mesh/relay-root-tls-secret.yaml")).unwrap();
        let output = Command::new("script")
            .args(["-q", "-e", "-c", &command(quiet), "/dev/null"])
            .current_dir(fixture.dir.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let tty = String::from_utf8_lossy(&output.stdout);
        assert!(!tty.contains(" clusters"), "{quiet}: {tty}");
    }

    // Not a terminal: plain lines, no control character at all.
    std::fs::remove_file(state.join("c0003/gloo-mesh/relay-root-tls-secret.yaml")).unwrap();
    let run = fixture.run(&["apply", "config", "--auto-approve"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "a control character reached a file: {text:?}"
        );
    }
    assert!(!run.stderr.contains("clusters ["), "{}", run.stderr);
    fixture.assert_no_leak(&[]);
}

// ---------------------------------------------------------------------------
// The HTML report in a real browser
// ---------------------------------------------------------------------------

/// Debian's Chromium, installed with apt when missing.
fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    if !path.exists() {
        let update = Command::new("apt-get").args(["update", "-qq"]).status();
        let install = Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        assert!(
            update.is_ok_and(|s| s.success()) && install.is_ok_and(|s| s.success()),
            "the HTML report is tested in Debian's `chromium`; `apt-get install chromium` failed"
        );
    }
    assert!(path.exists(), "no /usr/bin/chromium after installing it");
    path
}

/// `playwright-core` (the driver only: the browser is Debian's), installed
/// with npm into the target dir when missing.
fn playwright() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target_dir().join("node-playwright");
        if !dir
            .join("node_modules/playwright-core/package.json")
            .exists()
        {
            std::fs::create_dir_all(&dir).unwrap();
            let status = Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir)
                .arg("playwright-core@1.65.1")
                .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
                .status()
                .expect("npm is needed to install playwright-core");
            assert!(status.success(), "npm install playwright-core failed");
        }
        dir
    })
    .clone()
}

const BROWSE: &str = r#"
const { chromium } = require('playwright-core');
(async () => {
  const [page_url, shot, browser_path, profile] = process.argv.slice(2);
  // Playwright passes the profile as `--user-data-dir` itself.
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: browser_path,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const page = await browser.newPage();
  const errors = [];
  const requests = [];
  page.on('console', m => { if (m.type() === 'error' || m.type() === 'warning') errors.push(m.type() + ': ' + m.text()); });
  page.on('pageerror', e => errors.push('pageerror: ' + e.message));
  page.on('request', r => { if (!r.url().startsWith('file:')) requests.push(r.url()); });
  await page.goto(page_url, { waitUntil: 'load' });
  const cells = await page.locator('#grid .cell').count();
  const failing = await page.locator('#grid .cell.fail').count();
  const rows = await page.locator('#timeline .trow:not(.axis)').count();
  const today = await page.locator('#timeline .today').count();
  const renew = await page.locator('#timeline .renew').count();
  const detail = await page.locator('#detail').innerText();
  await page.locator('#grid .cell').first().click();
  const clicked = await page.locator('#detail').innerText();
  const title = await page.locator('#grid .cell.fail').first().getAttribute('title');
  await page.screenshot({ path: shot, fullPage: false });
  await browser.close();
  console.log(JSON.stringify({ cells, failing, rows, today, renew, detail, clicked, title, errors, requests }));
})().catch(e => { console.error(e); process.exit(1); });
"#;

#[test]
fn the_html_report_loads_in_a_real_browser_with_one_cell_per_cluster() {
    let started = Instant::now();
    let fixture = fleet_of("managed", 60);
    fixture.apply();
    // One broken agent: its client certificate loses its key.
    let mut client = fixture
        .secret("c0042", "relay-identity-token-secret")
        .unwrap();
    client.data.insert(
        "token".into(),
        relayctl::secret::SecretBytes::new(b"<script>alert(1)</script>".to_vec()),
    );
    fixture.put("c0042", client);
    let run = fixture.run(&["check", "config", "-o", "html"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let html = &run.stdout;
    assert!(html.starts_with("<!doctype html>"));
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "no external asset"
    );
    assert_eq!(
        html.matches("<script>").count(),
        1,
        "only the report's own script"
    );
    let report = fixture.dir.path().join("report.html");
    std::fs::write(&report, html).unwrap();

    let chromium = chromium();
    let driver = playwright();
    let shot = target_dir().join("relayctl-report.png");
    let profile = tempfile::tempdir().unwrap();
    let script = driver.join("browse.js");
    std::fs::write(&script, BROWSE).unwrap();
    let output = Command::new("node")
        .arg(&script)
        .arg(format!("file://{}", report.display()))
        .arg(&shot)
        .arg(&chromium)
        .arg(profile.path())
        .env("NODE_PATH", driver.join("node_modules"))
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "the browser run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        result["errors"],
        serde_json::json!([]),
        "console errors: {result}"
    );
    assert_eq!(
        result["requests"],
        serde_json::json!([]),
        "no network: {result}"
    );
    assert_eq!(result["cells"], 61, "one cell per cluster: {result}");
    assert_eq!(result["failing"], 1, "{result}");
    // root (one row for all 61 holders), intermediate, server; the token
    // mode's agents hold no client certificate yet.
    assert_eq!(result["rows"], 3, "{result}");
    assert_eq!(result["renew"], 3, "{result}");
    assert!(result["today"].as_u64().unwrap() >= 4, "{result}");
    assert!(
        result["detail"]
            .as_str()
            .unwrap()
            .contains("identity token differs from mgmt"),
        "the first failing cluster is shown: {result}"
    );
    assert!(
        result["title"].as_str().unwrap().contains("hint:"),
        "{result}"
    );
    assert!(
        result["clicked"].as_str().unwrap().contains("mgmt"),
        "{result}"
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot at {}",
        shot.display()
    );
    fixture.assert_no_leak(&[report]);
    eprintln!("html report test took {:?}", started.elapsed());
}
