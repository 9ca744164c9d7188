//! End to end with the real consumer: what `relayctl apply` writes on real
//! kube-apiservers (mgmt, cluster-1..3) is used by `tools/relay-sim`, our
//! stand-in for the product's management server and agents, and the agents
//! must bootstrap and hold mTLS relay connections with it. Every example
//! scenario converges that way; each kind of breakage is proven twice — by
//! the sim's own error text and by `relayctl check`'s matching × line — and
//! then repaired by `relayctl apply` while the agents keep running (the
//! `connect` reload profile: no restart).
//!
//! One shared kube-env for the binary; each test has its own relay namespace
//! (namespaces are never deleted: no controller-manager runs). relay-sim is
//! built once per binary (`tools/relay-sim/build.sh`, cached) and its
//! processes die with their test (see `support/relay_sim.rs`).

#[path = "support/kubectl.rs"]
mod kubectl_cmd;
#[path = "support/relay_sim.rs"]
mod relay_sim;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use relay_sim::{Event, Sim};
use relayctl_kube_env::KubeEnv;

/// Apiservers of this binary's shared environment: mgmt, cluster-1..3.
const APISERVERS: usize = 4;
const MGMT: &str = "mgmt";
const WORKLOADS: [&str; 3] = ["cluster-1", "cluster-2", "cluster-3"];
/// The authority the agents dial (relay-sim's and the examples' default).
const AUTHORITY: &str = "gloo-mesh-mgmt-server.gloo-mesh";

const ROOT_SECRET: &str = "relay-root-tls-secret";
const SIGNING_SECRET: &str = "relay-tls-signing-secret";
const SERVER_SECRET: &str = "relay-server-tls-secret";
const TOKEN_SECRET: &str = "relay-identity-token-secret";
const CLIENT_SECRET: &str = "relay-client-tls-secret";

/// Successful relay connections every agent must reach.
const CONNECTS: usize = 3;
/// How long an agent may take to reach them (it ticks every 200 ms).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failure the test provoked may take to show.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

fn env() -> &'static KubeEnv {
    KubeEnv::shared(APISERVERS)
}

// ---------------------------------------------------------------------------
// relayctl, kubectl, openssl
// ---------------------------------------------------------------------------

/// How a command ended.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// How the manifests reach the clusters.
#[derive(Clone, Copy)]
enum Connections {
    /// `connection: { kubeconfig: { context } }`, and `--kubeconfig FILE` on
    /// every relayctl run.
    Flag,
    /// `connection: { kubeconfig: { context, path } }` in every manifest.
    PerCluster,
}

/// An example rewritten into a fresh folder for one relay namespace.
struct Scenario {
    dir: tempfile::TempDir,
    ns: String,
    example: &'static str,
    connections: Connections,
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clusters")
}

impl Scenario {
    /// `examples/clusters/<example>` with relay namespace `ns` and a
    /// kubeconfig connection for mgmt and cluster-1..3 (cluster-3 is made from
    /// the example's cluster-2, as adding a cluster is adding a file).
    /// `custom` and `external` get their material from `make-material.sh`.
    fn new(example: &'static str, ns: &str, connections: Connections) -> Scenario {
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
        assert!(trust.contains(&format!("namespace: {ns}")), "{trust}");
        std::fs::write(dir.path().join("relay-trust.yaml"), trust).expect("write relay-trust");
        let kubeconfig = env().kubeconfig().display().to_string();
        for name in std::iter::once(MGMT).chain(WORKLOADS) {
            let text = match std::fs::read_to_string(source.join(format!("{name}.yaml"))) {
                Ok(text) => text,
                Err(_) => std::fs::read_to_string(source.join("cluster-2.yaml"))
                    .expect("the example has cluster-2")
                    .replace("cluster-2", name),
            };
            let connection = match connections {
                Connections::Flag => {
                    format!("  connection: {{ kubeconfig: {{ context: {name} }} }}\n")
                }
                Connections::PerCluster => format!(
                    "  connection: {{ kubeconfig: {{ context: {name}, path: {kubeconfig} }} }}\n"
                ),
            };
            let text = if text.contains("\nspec:\n") {
                text.replacen("\nspec:\n", &format!("\nspec:\n{connection}"), 1)
            } else {
                format!("{text}spec:\n{connection}")
            };
            std::fs::write(dir.path().join(format!("{name}.yaml")), text).expect("write cluster");
        }
        if matches!(example, "custom" | "external") {
            let out = dir.path().join("material");
            let output = Command::new("bash")
                .arg(examples().join("make-material.sh"))
                .arg(&out)
                .args(WORKLOADS)
                .stdin(Stdio::null())
                .output()
                .expect("run make-material.sh");
            assert!(
                output.status.success(),
                "make-material.sh: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            for cluster in WORKLOADS {
                assert!(
                    out.join(format!("{cluster}.crt")).is_file(),
                    "{cluster}.crt"
                );
            }
        }
        Scenario {
            dir,
            ns: ns.to_owned(),
            example,
            connections,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `relayctl ARGS` on this scenario with no ambient kubeconfig.
    fn relayctl(&self, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_relayctl"));
        if let Connections::Flag = self.connections {
            command.arg("--kubeconfig").arg(env().kubeconfig());
        }
        let output = command
            .args(args)
            .current_dir(self.path())
            .env_remove("KUBECONFIG")
            .env_remove("RUST_LOG")
            .env("HOME", self.path())
            .env("NO_COLOR", "1")
            .env("RELAYCTL_STATE_DIR", self.path().join("state"))
            .stdin(Stdio::null())
            .output()
            .expect("run relayctl");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn apply(&self) -> Run {
        let run = self.relayctl(&["apply", ".", "--auto-approve"]);
        assert_eq!(
            run.code,
            0,
            "{}: relayctl apply failed\n{}",
            self.example,
            run.all()
        );
        run
    }

    /// `relayctl plan -o json --detailed-exitcode`: its exit code and plan.
    #[track_caller]
    fn plan(&self) -> (Run, Plan) {
        let run = self.relayctl(&["plan", ".", "-o", "json", "--detailed-exitcode"]);
        assert!(
            run.code == 0 || run.code == 2,
            "{}: relayctl plan failed\n{}",
            self.example,
            run.all()
        );
        let plan = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("plan -o json is not a plan ({e})\n{}", run.all()));
        (run, plan)
    }

    /// `relayctl check` as text and as JSON.
    fn check(&self) -> Check {
        let text = self.relayctl(&["check", "."]);
        let json = self.relayctl(&["check", ".", "-o", "json"]);
        let report: CheckReport = serde_json::from_str(&json.stdout)
            .unwrap_or_else(|e| panic!("check -o json is not a report ({e})\n{}", json.all()));
        assert_eq!(
            text.code,
            json.code,
            "check text and JSON disagree on the exit code\n{}\n{}",
            text.all(),
            json.all()
        );
        Check { text, report }
    }
}

#[track_caller]
fn kubectl_with(context: &str, args: &[&str], stdin: Option<&str>) -> String {
    kubectl_cmd::kubectl(
        &env().binaries().kubectl(),
        env().kubeconfig(),
        context,
        args,
        stdin,
    )
}

#[track_caller]
fn kubectl(context: &str, args: &[&str]) -> String {
    kubectl_with(context, args, None)
}

/// The Secret as JSON, or `None` when it does not exist.
fn secret(context: &str, ns: &str, name: &str) -> Option<serde_json::Value> {
    let text = kubectl(
        context,
        &[
            "-n",
            ns,
            "get",
            "secret",
            name,
            "--ignore-not-found",
            "-o",
            "json",
            "--show-managed-fields",
        ],
    );
    if text.trim().is_empty() {
        return None;
    }
    Some(serde_json::from_str(&text).expect("secret JSON"))
}

#[track_caller]
fn resource_version(context: &str, ns: &str, name: &str) -> String {
    let secret =
        secret(context, ns, name).unwrap_or_else(|| panic!("{context}: {ns}/{name} is missing"));
    secret["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_owned()
}

/// The decoded value of one data key.
#[track_caller]
fn secret_data(context: &str, ns: &str, name: &str, key: &str) -> Vec<u8> {
    let secret =
        secret(context, ns, name).unwrap_or_else(|| panic!("{context}: {ns}/{name} is missing"));
    let value = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{context}: {ns}/{name} has no `{key}`"));
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .expect("base64")
}

/// Sets data keys of a Secret the way a person with `kubectl` would (the
/// labels stay: relayctl still owns it).
#[track_caller]
fn patch_data(context: &str, ns: &str, name: &str, data: &[(&str, &[u8])]) {
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(v);
            ((*k).to_owned(), serde_json::Value::String(encoded))
        })
        .collect();
    let patch = serde_json::json!({ "data": data }).to_string();
    kubectl(
        context,
        &[
            "-n", ns, "patch", "secret", name, "--type", "merge", "-p", &patch,
        ],
    );
}

#[track_caller]
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------
// Plans and checks as data
// ---------------------------------------------------------------------------

#[derive(Debug, serde::Deserialize)]
struct Plan {
    clusters: Vec<PlanCluster>,
    summary: BTreeMap<String, u64>,
}

#[derive(Debug, serde::Deserialize)]
struct PlanCluster {
    name: String,
    #[serde(default)]
    changes: Vec<PlanChange>,
}

#[derive(Debug, serde::Deserialize)]
struct PlanChange {
    name: String,
    action: String,
    #[serde(default)]
    reasons: Vec<String>,
}

impl Plan {
    fn change(&self, cluster: &str, secret: &str) -> Option<&PlanChange> {
        self.clusters
            .iter()
            .find(|c| c.name == cluster)?
            .changes
            .iter()
            .find(|c| c.name == secret)
    }
}

struct Check {
    text: Run,
    report: CheckReport,
}

#[derive(Debug, serde::Deserialize)]
struct CheckReport {
    clusters: Vec<CheckCluster>,
}

#[derive(Debug, serde::Deserialize)]
struct CheckCluster {
    name: String,
    checks: Vec<CheckLine>,
}

#[derive(Debug, serde::Deserialize)]
struct CheckLine {
    id: String,
    status: String,
    message: String,
}

impl Check {
    fn lines(&self, cluster: &str) -> &[CheckLine] {
        self.report
            .clusters
            .iter()
            .find(|c| c.name == cluster)
            .map_or(&[], |c| c.checks.as_slice())
    }

    /// The lines that are not ok, as `cluster: [status] id: message`.
    fn problems(&self) -> Vec<String> {
        self.report
            .clusters
            .iter()
            .flat_map(|c| {
                c.checks
                    .iter()
                    .filter(|l| l.status != "ok")
                    .map(move |l| format!("{}: [{}] {}: {}", c.name, l.status, l.id, l.message))
            })
            .collect()
    }

    /// Asserts a `fail` line `id` on `cluster` whose message contains `text`.
    #[track_caller]
    fn assert_fails(&self, cluster: &str, id: &str, text: &str, relay: &Relay) {
        assert_eq!(
            self.text.code,
            1,
            "relayctl check must fail\n{}",
            self.text.all()
        );
        let found = self
            .lines(cluster)
            .iter()
            .any(|l| l.id == id && l.status == "fail" && l.message.contains(text));
        assert!(
            found,
            "relayctl check has no × `{id}` line on {cluster} containing `{text}` \
             (not ok: {:#?})\n{}\n{}",
            self.problems(),
            self.text.stdout,
            relay.report()
        );
        let marked = self
            .text
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with('×') && l.contains(text));
        assert!(marked, "no × line with `{text}`\n{}", self.text.stdout);
    }

    /// Asserts exit 0 with every line √, including for every workload the
    /// client-certificate lines and the mTLS handshake.
    #[track_caller]
    fn assert_all_ok(&self, what: &str, relay: &Relay) {
        let bad: Vec<&str> = self
            .text
            .stdout
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                l.starts_with('‼') || l.starts_with('×')
            })
            .collect();
        assert!(
            self.text.code == 0 && bad.is_empty() && self.problems().is_empty(),
            "{what}: relayctl check must pass with every line √; exit {}, not √: {:#?}\n{}\n{}",
            self.text.code,
            self.problems(),
            self.text.all(),
            relay.report()
        );
        for cluster in WORKLOADS {
            let ids: Vec<&str> = self.lines(cluster).iter().map(|l| l.id.as_str()).collect();
            for id in [
                "root-bundle",
                "client-cert-chain",
                "client-cert-san",
                "client-cert-key",
                "client-cert-expiry",
                "mtls-handshake",
            ] {
                assert!(
                    ids.contains(&id),
                    "{what}: check has no `{id}` line for {cluster} (has {ids:?})\n{}",
                    self.text.stdout
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The relay: one server and an agent per workload
// ---------------------------------------------------------------------------

struct Relay {
    ns: String,
    server: Sim,
    agents: BTreeMap<&'static str, Sim>,
    /// What agents that were restarted had counted in their lifetime.
    retired: Vec<(String, relay_sim::Status)>,
}

impl Relay {
    /// Starts the server for `ns` (with `server_flags`) and one agent per
    /// workload in the connect profile.
    fn start(ns: &str, server_flags: &[&str]) -> Relay {
        let server = Sim::server(env().kubeconfig(), MGMT, ns, server_flags);
        let mut relay = Relay {
            ns: ns.to_owned(),
            server,
            agents: BTreeMap::new(),
            retired: Vec::new(),
        };
        relay.start_agents();
        relay
    }

    fn server_only(ns: &str, server_flags: &[&str]) -> Relay {
        Relay {
            ns: ns.to_owned(),
            server: Sim::server(env().kubeconfig(), MGMT, ns, server_flags),
            agents: BTreeMap::new(),
            retired: Vec::new(),
        }
    }

    fn start_agents(&mut self) {
        self.start_agents_with(&["--reload", "connect"]);
    }

    /// Starts one agent per workload with `flags`.
    fn start_agents_with(&mut self, flags: &[&str]) {
        for cluster in WORKLOADS {
            let agent = Sim::agent(
                env().kubeconfig(),
                cluster,
                &self.ns,
                self.server.addr(),
                flags,
            );
            self.agents.insert(cluster, agent);
        }
    }

    /// Restarts `cluster`'s agent with `flags` (what an operator does to a
    /// pod); what the old process counted is kept for `assert_no_failures`.
    fn restart_agent(&mut self, cluster: &str, flags: &[&str]) {
        let (key, old) = self
            .agents
            .remove_entry(cluster)
            .unwrap_or_else(|| panic!("no agent for {cluster}"));
        self.retired.push((old.name().to_owned(), old.status(None)));
        drop(old);
        let agent = Sim::agent(env().kubeconfig(), key, &self.ns, self.server.addr(), flags);
        self.agents.insert(key, agent);
    }

    fn agent(&self, cluster: &str) -> &Sim {
        &self.agents[cluster]
    }

    /// Every process's events and stderr, for failure messages.
    fn report(&self) -> String {
        let mut out = self.server.report();
        for agent in self.agents.values() {
            out.push_str(&agent.report());
        }
        out
    }

    /// Marks of every process, for waits on what happens next.
    fn marks(&self) -> BTreeMap<String, usize> {
        std::iter::once(&self.server)
            .chain(self.agents.values())
            .map(|s| (s.name().to_owned(), s.mark()))
            .collect()
    }

    /// Waits for `done` on `sim`'s events after `mark`; panics with every
    /// process's report.
    #[track_caller]
    fn wait(
        &self,
        sim: &Sim,
        mark: usize,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        match sim.wait_for_from(mark, what, timeout, done) {
            Ok(events) => events,
            Err(e) => {
                // The first line says what was awaited; the report has every
                // process's events (this one's included).
                let headline = e.lines().next().unwrap_or_default();
                panic!("{headline}\n{}", self.report())
            }
        }
    }

    /// Waits until every agent made `n` successful relay connections after
    /// its mark (all from the start when `marks` is empty).
    #[track_caller]
    fn wait_connected(&self, marks: &BTreeMap<String, usize>, n: usize, what: &str) {
        for agent in self.agents.values() {
            let mark = marks.get(agent.name()).copied().unwrap_or(0);
            self.wait(
                agent,
                mark,
                &format!("{n} successful relay connections ({what})"),
                CONNECT_TIMEOUT,
                |events| connects(events) >= n,
            );
        }
    }

    /// Waits until `agent` made `n` successful relay connections after `mark`.
    #[track_caller]
    fn wait_agent_connected(&self, cluster: &str, mark: usize, n: usize, what: &str) {
        self.wait(
            self.agent(cluster),
            mark,
            &format!("{n} successful relay connections ({what})"),
            CONNECT_TIMEOUT,
            |events| connects(events) >= n,
        );
    }

    /// Asserts that nothing failed on any process since `since` (or ever),
    /// according to their `/status`.
    #[track_caller]
    fn assert_no_failures(&self, since: Option<&str>, what: &str) {
        let mut bad = Vec::new();
        for sim in std::iter::once(&self.server).chain(self.agents.values()) {
            let status = sim.status(since);
            if status.truncated || status.total.failures() > 0 {
                bad.push(format!("{}: {status:?}", sim.name()));
            }
            if sim.name() != "server" && status.total.connects_ok == 0 {
                bad.push(format!("{}: no successful connect: {status:?}", sim.name()));
            }
        }
        for (name, status) in &self.retired {
            if status.truncated || status.total.failures() > 0 {
                bad.push(format!("{name} (before its restart): {status:?}"));
            }
        }
        assert!(
            bad.is_empty(),
            "{what}: failures in /status{}:\n{}\n{}",
            since.map(|s| format!("?since={s}")).unwrap_or_default(),
            bad.join("\n"),
            self.report()
        );
    }

    /// After a repair: every agent connects again, then nothing fails on
    /// any process for a few more connections (`/status?since=T`), and the
    /// agents are the processes started at the beginning (no restart).
    #[track_caller]
    fn assert_recovered(&mut self, marks: &BTreeMap<String, usize>, pids: &BTreeMap<String, u32>) {
        self.wait_connected(marks, 1, "after the repair");
        let since = now_rfc3339();
        let fresh = self.marks();
        self.wait_connected(&fresh, 2, "after the repair, steadily");
        self.assert_no_failures(Some(&since), "after the repair");
        for agent in self.agents.values_mut() {
            assert!(agent.running(), "{} exited", agent.name());
            assert_eq!(
                pids.get(agent.name()),
                Some(&agent.pid()),
                "{} was restarted",
                agent.name()
            );
            let listening = agent
                .events()
                .iter()
                .filter(|e| e.event == "listening")
                .count();
            assert_eq!(listening, 1, "{} started once", agent.name());
        }
    }

    fn pids(&self) -> BTreeMap<String, u32> {
        self.agents
            .values()
            .map(|a| (a.name().to_owned(), a.pid()))
            .collect()
    }
}

fn connects(events: &[Event]) -> usize {
    events.iter().filter(|e| e.is("connect", true)).count()
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format now")
}

// ---------------------------------------------------------------------------
// Every example scenario, with the real consumer
// ---------------------------------------------------------------------------

/// The shared happy path: `relayctl apply`, the agents (and, unless gloo
/// already started it, the server), ≥ 3 mTLS relay connections per agent,
/// nothing failed anywhere, agent-written client certificates in token mode,
/// `relayctl check` all √, and a second apply that changes nothing — in
/// particular not the agents' `relay-client-tls-secret`.
fn converges_with_the_real_consumer(s: &Scenario, token: bool, relay: Option<Relay>) {
    let ns = s.ns.as_str();
    let apply = s.apply();
    assert!(
        apply.stderr.contains("Apply complete"),
        "{}: {}",
        s.example,
        apply.all()
    );
    let mut relay = match relay {
        Some(mut relay) => {
            relay.start_agents();
            relay
        }
        None => Relay::start(ns, &[]),
    };
    relay.wait_connected(&BTreeMap::new(), CONNECTS, s.example);
    relay.assert_no_failures(None, s.example);

    let mut versions = BTreeMap::new();
    for cluster in WORKLOADS {
        let agent = relay.agent(cluster);
        let events = agent.events();
        let bootstraps: Vec<&Event> = events.iter().filter(|e| e.event == "bootstrap").collect();
        let client = secret(cluster, ns, CLIENT_SECRET)
            .unwrap_or_else(|| panic!("{cluster}: no {CLIENT_SECRET}\n{}", relay.report()));
        let managers: Vec<&str> = client["metadata"]["managedFields"]
            .as_array()
            .map(|m| m.iter().filter_map(|f| f["manager"].as_str()).collect())
            .unwrap_or_default();
        let labels = &client["metadata"]["labels"];
        if token {
            assert!(
                bootstraps.len() == 1 && bootstraps[0].ok,
                "{}: {cluster}'s agent must bootstrap once with the token\n{}",
                s.example,
                relay.report()
            );
            assert_eq!(
                managers,
                ["relay-sim"],
                "{cluster}: {CLIENT_SECRET} is written by the agent alone: {client}"
            );
            assert!(
                labels.get("app.kubernetes.io/managed-by").is_none(),
                "{cluster}: relayctl never labels the agent's Secret: {client}"
            );
        } else {
            assert!(
                bootstraps.is_empty(),
                "{}: {cluster}'s agent had a client certificate and must not bootstrap\n{}",
                s.example,
                relay.report()
            );
            assert_eq!(
                managers,
                ["relayctl"],
                "{cluster}: {CLIENT_SECRET} is relayctl's: {client}"
            );
        }
        versions.insert(cluster, resource_version(cluster, ns, CLIENT_SECRET));
    }

    relayctl_check_passes(s, &relay);

    // The second run: nothing to do, and the agents' Secrets untouched.
    let (plan_run, plan) = s.plan();
    let changed: Vec<String> = plan
        .clusters
        .iter()
        .flat_map(|c| {
            c.changes
                .iter()
                .filter(|ch| ch.action != "no-op")
                .map(move |ch| format!("{}/{}: {} {:?}", c.name, ch.name, ch.action, ch.reasons))
        })
        .collect();
    assert!(
        plan_run.code == 0 && changed.is_empty(),
        "{}: the plan after apply (and after the agents ran) must be empty: {changed:#?}\n{}",
        s.example,
        plan_run.stdout
    );
    for cluster in WORKLOADS {
        if let Some(change) = plan.change(cluster, CLIENT_SECRET) {
            assert_eq!(change.action, "no-op", "{cluster}: {change:?}");
        }
    }
    let again = s.apply();
    for line in again.stdout.lines() {
        let line = line.trim_start();
        assert!(
            !(line.contains(CLIENT_SECRET)
                && (line.starts_with('+') || line.starts_with('~') || line.starts_with('-'))),
            "{}: the second apply touches {CLIENT_SECRET}: {line}\n{}",
            s.example,
            again.all()
        );
    }
    for cluster in WORKLOADS {
        assert_eq!(
            resource_version(cluster, ns, CLIENT_SECRET),
            versions[cluster],
            "{}: {cluster}'s {CLIENT_SECRET} changed in the second apply\n{}",
            s.example,
            again.all()
        );
    }
    // The agents are still happy after the second run.
    let marks = relay.marks();
    relay.wait_connected(&marks, 1, "after the second apply");
    for agent in relay.agents.values_mut() {
        assert!(agent.running(), "{} exited", agent.name());
    }
}

#[track_caller]
fn relayctl_check_passes(s: &Scenario, relay: &Relay) {
    s.check().assert_all_ok(s.example, relay);
}

#[test]
fn managed_token_agents_bootstrap_and_connect_and_check_is_all_green() {
    let s = Scenario::new("managed", "e2e-managed", Connections::Flag);
    converges_with_the_real_consumer(&s, true, None);
}

#[test]
fn managed_preprovisioned_agents_connect_with_relayctls_client_certs() {
    let s = Scenario::new(
        "managed-preprovisioned",
        "e2e-preprovisioned",
        Connections::PerCluster,
    );
    converges_with_the_real_consumer(&s, false, None);
}

#[test]
fn gloo_the_servers_own_ca_is_distributed_and_agents_bootstrap() {
    let s = Scenario::new("gloo", "e2e-gloo", Connections::PerCluster);
    let ns = s.ns.as_str();
    // The product generates its CA, server certificate and token at install.
    let relay = Relay::server_only(ns, &["--generate-ca"]);
    relay.wait(
        &relay.server,
        0,
        "the initial load of the generated server certificate",
        EVENT_TIMEOUT,
        |events| {
            events
                .iter()
                .any(|e| e.is("reload", true) && e.detail.starts_with("initial load"))
        },
    );
    let mut generated = BTreeMap::new();
    for name in [ROOT_SECRET, SIGNING_SECRET, SERVER_SECRET, TOKEN_SECRET] {
        let secret = secret(MGMT, ns, name)
            .unwrap_or_else(|| panic!("--generate-ca did not make {name}\n{}", relay.report()));
        assert!(
            secret["metadata"]["labels"]
                .get("relayctl.dev/instance")
                .is_none()
        );
        generated.insert(name, resource_version(MGMT, ns, name));
    }

    converges_with_the_real_consumer(&s, true, Some(relay));

    for (name, version) in &generated {
        assert_eq!(
            &resource_version(MGMT, ns, name),
            version,
            "gloo: relayctl must never write the management server's {name}"
        );
    }
    let root = secret_data(MGMT, ns, ROOT_SECRET, "ca.crt");
    let token = secret_data(MGMT, ns, TOKEN_SECRET, "token");
    for cluster in WORKLOADS {
        assert_eq!(
            secret_data(cluster, ns, ROOT_SECRET, "ca.crt"),
            root,
            "{cluster}"
        );
        assert_eq!(
            secret_data(cluster, ns, TOKEN_SECRET, "token"),
            token,
            "{cluster}"
        );
    }
}

#[test]
fn custom_root_agents_bootstrap_and_connect() {
    let s = Scenario::new("custom", "e2e-custom", Connections::Flag);
    converges_with_the_real_consumer(&s, true, None);
}

#[test]
fn external_pki_agents_connect_with_copied_client_certs() {
    let s = Scenario::new("external", "e2e-external", Connections::PerCluster);
    converges_with_the_real_consumer(&s, false, None);
    assert!(
        secret(MGMT, &s.ns, TOKEN_SECRET).is_none(),
        "external: no identity token"
    );
}

// ---------------------------------------------------------------------------
// Breakage the real consumer refuses, the check's matching ×, and the repair
// ---------------------------------------------------------------------------

#[test]
fn a_workload_token_that_differs_from_mgmt_cannot_bootstrap_until_apply_repairs_it() {
    let s = Scenario::new("managed", "e2e-token-mismatch", Connections::Flag);
    let ns = s.ns.as_str();
    s.apply();
    patch_data(
        "cluster-1",
        ns,
        TOKEN_SECRET,
        &[("token", b"not-the-token-of-mgmt")],
    );

    let mut relay = Relay::start(ns, &[]);
    let refusal = format!(
        "identity token mismatch: the token presented does not equal {ns}/{TOKEN_SECRET} on the management cluster"
    );
    relay.wait(
        relay.agent("cluster-1"),
        0,
        "a refused bootstrap",
        EVENT_TIMEOUT,
        |events| {
            events
                .iter()
                .any(|e| e.failed_with("bootstrap", &format!("server refused (403): {refusal}")))
        },
    );
    relay.wait(
        &relay.server,
        0,
        "the server refusing cluster-1's token",
        EVENT_TIMEOUT,
        |events| {
            events
                .iter()
                .any(|e| e.cluster == "cluster-1" && e.failed_with("bootstrap", &refusal))
        },
    );
    // The others are not affected.
    for cluster in ["cluster-2", "cluster-3"] {
        relay.wait_agent_connected(cluster, 0, CONNECTS, "unaffected workloads");
    }
    assert!(
        secret("cluster-1", ns, CLIENT_SECRET).is_none(),
        "no client certificate without the token"
    );
    let check = s.check();
    check.assert_fails(
        "cluster-1",
        "token",
        "identity token differs from mgmt",
        &relay,
    );

    let (run, plan) = s.plan();
    let change = plan.change("cluster-1", TOKEN_SECRET);
    assert!(
        run.code == 2
            && change.is_some_and(|c| c.action == "update"
                && c.reasons.iter().any(|r| r == "token differs from mgmt")),
        "the plan repairs cluster-1's token: {change:?}\n{}",
        run.stdout
    );
    assert_eq!(plan.summary.get("update"), Some(&1), "{}", run.stdout);

    let marks = relay.marks();
    let pids = relay.pids();
    s.apply();
    relay.wait(
        relay.agent("cluster-1"),
        marks["agent cluster-1"],
        "a bootstrap with the repaired token",
        CONNECT_TIMEOUT,
        |events| {
            events
                .iter()
                .any(|e| e.is("reload", true) && e.detail.contains(TOKEN_SECRET))
                && events.iter().any(|e| e.is("bootstrap", true))
        },
    );
    relay.assert_recovered(&marks, &pids);
    relayctl_check_passes(&s, &relay);
}

#[test]
fn a_client_certificate_naming_another_cluster_is_refused_until_apply_reissues_it() {
    let s = Scenario::new(
        "managed-preprovisioned",
        "e2e-wrong-client-san",
        Connections::PerCluster,
    );
    let ns = s.ns.as_str();
    s.apply();
    // Someone copies cluster-2's client certificate onto cluster-1.
    let crt = secret_data("cluster-2", ns, CLIENT_SECRET, "tls.crt");
    let key = secret_data("cluster-2", ns, CLIENT_SECRET, "tls.key");
    patch_data(
        "cluster-1",
        ns,
        CLIENT_SECRET,
        &[("tls.crt", &crt), ("tls.key", &key)],
    );

    let mut relay = Relay::start(ns, &[]);
    let refusal = r#"client certificate SAN "cluster-2" does not name cluster "cluster-1""#;
    relay.wait(
        relay.agent("cluster-1"),
        0,
        "a refused connection",
        EVENT_TIMEOUT,
        |events| {
            events
                .iter()
                .any(|e| e.failed_with("connect", &format!("server refused (403): {refusal}")))
        },
    );
    relay.wait(
        &relay.server,
        0,
        "the server refusing the SAN",
        EVENT_TIMEOUT,
        |events| events.iter().any(|e| e.failed_with("connect", refusal)),
    );
    for cluster in ["cluster-2", "cluster-3"] {
        relay.wait_agent_connected(cluster, 0, CONNECTS, "unaffected workloads");
    }
    let check = s.check();
    check.assert_fails(
        "cluster-1",
        "client-cert-san",
        "client certificate SAN is `cluster-2`, want `cluster-1`",
        &relay,
    );

    let (run, plan) = s.plan();
    let change = plan.change("cluster-1", CLIENT_SECRET);
    assert!(
        run.code == 2
            && change.is_some_and(|c| c.action == "update"
                && c.reasons
                    .iter()
                    .any(|r| r.contains("SAN is cluster-2, want cluster-1"))),
        "the plan reissues cluster-1's client certificate: {change:?}\n{}",
        run.stdout
    );

    let marks = relay.marks();
    let pids = relay.pids();
    s.apply();
    relay.assert_recovered(&marks, &pids);
    relayctl_check_passes(&s, &relay);
}

#[test]
fn a_workload_root_bundle_without_the_servers_root_fails_verification_until_apply_repairs_it() {
    let s = Scenario::new("managed", "e2e-foreign-root", Connections::Flag);
    let ns = s.ns.as_str();
    s.apply();
    let mut relay = Relay::start(ns, &[]);
    relay.wait_connected(
        &BTreeMap::new(),
        CONNECTS,
        "before the root bundle is replaced",
    );

    // cluster-2's root bundle now holds only a root the server does not chain to.
    openssl(
        s.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "foreign-root.key",
            "-out",
            "foreign-root.crt",
            "-days",
            "30",
            "-subj",
            "/CN=foreign-root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ],
    );
    let foreign = std::fs::read(s.path().join("foreign-root.crt")).expect("foreign root");
    let mark = relay.agent("cluster-2").mark();
    patch_data("cluster-2", ns, ROOT_SECRET, &[("ca.crt", &foreign)]);
    let unknown =
        "tls: failed to verify certificate: x509: certificate signed by unknown authority";
    relay.wait(
        relay.agent("cluster-2"),
        mark,
        "a failed server verification",
        EVENT_TIMEOUT,
        |events| {
            events.iter().any(|e| e.failed_with("handshake", unknown))
                && events.iter().any(|e| e.failed_with("connect", unknown))
        },
    );

    let check = s.check();
    check.assert_fails(
        "cluster-2",
        "root-bundle",
        "root bundle differs from mgmt",
        &relay,
    );
    check.assert_fails("cluster-2", "mtls-handshake", "UnknownIssuer", &relay);

    let (run, plan) = s.plan();
    let change = plan.change("cluster-2", ROOT_SECRET);
    assert!(
        run.code == 2
            && change.is_some_and(|c| c.action == "update"
                && c.reasons
                    .iter()
                    .any(|r| r == "root bundle differs from mgmt")),
        "the plan repairs cluster-2's root bundle: {change:?}\n{}",
        run.stdout
    );

    let marks = relay.marks();
    let pids = relay.pids();
    s.apply();
    relay.assert_recovered(&marks, &pids);
    relayctl_check_passes(&s, &relay);
}

#[test]
fn a_server_certificate_not_covering_the_authority_fails_the_agents_until_apply_reissues_it() {
    let s = Scenario::new("custom", "e2e-server-san", Connections::Flag);
    let ns = s.ns.as_str();
    s.apply();
    let mut relay = Relay::start(ns, &[]);
    relay.wait_connected(
        &BTreeMap::new(),
        CONNECTS,
        "before the server certificate is replaced",
    );

    // A server certificate for another name, signed by the same intermediate.
    let dir = s.path();
    std::fs::write(
        dir.join("int.crt"),
        secret_data(MGMT, ns, SIGNING_SECRET, "tls.crt"),
    )
    .expect("write");
    std::fs::write(
        dir.join("int.key"),
        secret_data(MGMT, ns, SIGNING_SECRET, "tls.key"),
    )
    .expect("write");
    std::fs::write(
        dir.join("other.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:other-server.example\n",
    )
    .expect("write");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "other.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "other.key",
            "-subj",
            "/CN=other-server.example",
            "-out",
            "other.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "other.csr",
            "-CA",
            "int.crt",
            "-CAkey",
            "int.key",
            "-CAcreateserial",
            "-days",
            "365",
            "-sha256",
            "-extfile",
            "other.ext",
            "-out",
            "other.leaf",
        ],
    );
    let mut chain = std::fs::read(dir.join("other.leaf")).expect("leaf");
    chain.extend(secret_data(MGMT, ns, SIGNING_SECRET, "tls.crt"));
    let key = std::fs::read(dir.join("other.key")).expect("key");
    let marks = relay.marks();
    patch_data(
        MGMT,
        ns,
        SERVER_SECRET,
        &[("tls.crt", &chain), ("tls.key", &key)],
    );

    relay.wait(
        &relay.server,
        marks["server"],
        "the hot reload of the wrong certificate",
        EVENT_TIMEOUT,
        |events| {
            events
                .iter()
                .any(|e| e.is("reload", true) && e.detail.contains("other-server.example"))
        },
    );
    let invalid = format!("x509: certificate is valid for other-server.example, not {AUTHORITY}");
    for cluster in WORKLOADS {
        relay.wait(
            relay.agent(cluster),
            marks[&format!("agent {cluster}")],
            "a failed server verification",
            EVENT_TIMEOUT,
            |events| {
                events.iter().any(|e| e.failed_with("handshake", &invalid))
                    && events.iter().any(|e| e.failed_with("connect", &invalid))
            },
        );
    }

    let check = s.check();
    check.assert_fails(
        MGMT,
        "server-cert-san",
        &format!("server certificate SANs `other-server.example` do not cover the authority `{AUTHORITY}`"),
        &relay,
    );
    for cluster in WORKLOADS {
        check.assert_fails(
            cluster,
            "mtls-handshake",
            &format!("not valid for name \"{AUTHORITY}\""),
            &relay,
        );
    }

    let (run, plan) = s.plan();
    let change = plan.change(MGMT, SERVER_SECRET);
    assert!(
        run.code == 2
            && change.is_some_and(|c| {
                c.action == "update"
                    && c.reasons.iter().any(|r| {
                        r.contains(&format!("SAN is other-server.example, want {AUTHORITY}"))
                    })
            }),
        "the plan reissues the server certificate: {change:?}\n{}",
        run.stdout
    );

    let marks = relay.marks();
    let pids = relay.pids();
    s.apply();
    relay.wait(
        &relay.server,
        marks["server"],
        "the hot reload of the reissued certificate",
        EVENT_TIMEOUT,
        |events| {
            events.iter().any(|e| {
                e.is("reload", true) && e.detail.contains(&format!("subject=\"{AUTHORITY}\""))
            })
        },
    );
    relay.assert_recovered(&marks, &pids);
    relayctl_check_passes(&s, &relay);
}

#[test]
fn an_unregistered_cluster_is_refused_until_it_is_registered() {
    let s = Scenario::new("external", "e2e-registration", Connections::PerCluster);
    let ns = s.ns.as_str();
    // The product's CRD, as its Helm chart installs it on mgmt.
    let crd = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/relay-sim/crd-kubernetescluster.yaml"),
    )
    .expect("CRD");
    kubectl_with(MGMT, &["apply", "-f", "-"], Some(&crd));
    kubectl(
        MGMT,
        &[
            "wait",
            "--for",
            "condition=established",
            "--timeout=60s",
            "crd/kubernetesclusters.admin.gloo.solo.io",
        ],
    );
    // relayctl registers every workload cluster.
    let trust_file = s.dir.path().join("relay-trust.yaml");
    let trust = std::fs::read_to_string(&trust_file).expect("relay-trust");
    std::fs::write(
        &trust_file,
        trust.replacen(
            "\nspec:\n",
            "\nspec:\n  registration: { enabled: true }\n",
            1,
        ),
    )
    .expect("write relay-trust");
    s.apply();
    let registered = kubectl(
        MGMT,
        &[
            "-n",
            ns,
            "get",
            "kubernetesclusters.admin.gloo.solo.io",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    assert_eq!(registered.trim(), "cluster-1 cluster-2 cluster-3");
    // Someone deletes cluster-3's registration.
    kubectl(
        MGMT,
        &[
            "-n",
            ns,
            "delete",
            "kubernetesclusters.admin.gloo.solo.io",
            "cluster-3",
        ],
    );

    let mut relay = Relay::start(ns, &["--require-registration"]);
    for cluster in ["cluster-1", "cluster-2"] {
        relay.wait_agent_connected(cluster, 0, CONNECTS, "registered clusters");
    }
    let refusal = format!(
        "unregistered cluster \"cluster-3\": no KubernetesCluster {ns}/cluster-3 on the management cluster"
    );
    relay.wait(
        relay.agent("cluster-3"),
        0,
        "a refused connection",
        EVENT_TIMEOUT,
        |events| {
            events
                .iter()
                .any(|e| e.failed_with("connect", &format!("server refused (403): {refusal}")))
        },
    );
    relay.wait(
        &relay.server,
        0,
        "the server refusing cluster-3",
        EVENT_TIMEOUT,
        |events| {
            events
                .iter()
                .any(|e| e.cluster == "cluster-3" && e.failed_with("connect", &refusal))
        },
    );
    assert_eq!(
        connects(&relay.agent("cluster-3").events()),
        0,
        "an unregistered cluster never connects\n{}",
        relay.report()
    );
    let check = s.check();
    check.assert_fails(
        "cluster-3",
        "registration",
        "not registered: mgmt has no KubernetesCluster `cluster-3`",
        &relay,
    );
    let (run, plan) = s.plan();
    let change = plan.change(MGMT, "KubernetesCluster/cluster-3");
    assert!(
        change.is_some_and(|c| c.action == "create"),
        "the plan registers cluster-3 again: {change:?}\n{}",
        run.stdout
    );

    let marks = relay.marks();
    let pids = relay.pids();
    s.apply();
    relay.assert_recovered(&marks, &pids);
    relayctl_check_passes(&s, &relay);
}

/// After mgmt's CA is recreated (its Secrets deleted, a new root generated),
/// token-mode agents hold certificates of a root nobody trusts any more and,
/// holding a certificate, never bootstrap again. `plan` must see it and
/// `apply` repair it: it deletes each such client Secret, so the agent
/// bootstraps with the token against the new CA, without a restart.
#[test]
fn agents_locked_out_by_a_recreated_ca_bootstrap_again_after_apply() {
    let s = Scenario::new("managed", "e2e-recreated-ca", Connections::Flag);
    let ns = s.ns.as_str();
    s.apply();
    let mut relay = Relay::start(ns, &[]);
    relay.wait_connected(&BTreeMap::new(), CONNECTS, "before the CA is recreated");

    for name in [ROOT_SECRET, SIGNING_SECRET, SERVER_SECRET] {
        kubectl(MGMT, &["-n", ns, "delete", "secret", name]);
    }
    // One plan recreates the CA and, seeing the agents' certificates will
    // not chain to the new root, deletes their client Secrets.
    let (run, plan) = s.plan();
    for cluster in WORKLOADS {
        let change = plan.change(cluster, CLIENT_SECRET);
        assert!(
            change.is_some_and(|c| c.action == "delete"
                && c.reasons.iter().any(|r| r.contains("bootstraps again"))),
            "{cluster}: the plan deletes the agent's stale client Secret: {change:?}\n{}",
            run.stdout
        );
    }
    let marks = relay.marks();
    let pids = relay.pids();
    s.apply();
    for cluster in WORKLOADS {
        relay.wait(
            relay.agent(cluster),
            marks[&format!("agent {cluster}")],
            "a bootstrap against the new CA",
            CONNECT_TIMEOUT,
            |events| events.iter().any(|e| e.is("bootstrap", true)),
        );
    }
    relay.assert_recovered(&marks, &pids);
    relayctl_check_passes(&s, &relay);
    let (run, plan) = s.plan();
    assert!(
        WORKLOADS.iter().all(|c| plan
            .change(c, CLIENT_SECRET)
            .is_none_or(|ch| ch.action == "no-op")),
        "the agents' new Secrets are left alone:\n{}",
        run.stdout
    );
}

// ---------------------------------------------------------------------------
// Rotations, with the agents connecting every 200 ms all along
// ---------------------------------------------------------------------------

/// `spec.ca.rotation` in these tests: a short soak so that a phase can end
/// within a test, waves of half the workloads (two waves of three).
const ROTATION: &str = "{ generation: 2, soak: 2s, wave: 50 }";

/// How long one rotation may take from its first apply to its end.
const ROTATION_TIMEOUT: Duration = Duration::from_secs(180);

impl Scenario {
    /// Replaces `from` by `to` in relay-trust.yaml (`from` must be there).
    #[track_caller]
    fn edit_trust(&self, from: &str, to: &str) {
        let path = self.path().join("relay-trust.yaml");
        let text = std::fs::read_to_string(&path).expect("read relay-trust.yaml");
        assert!(
            text.contains(from),
            "relay-trust.yaml has no `{from}`:\n{text}"
        );
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write relay-trust.yaml");
    }

    /// Adds `spec.ca.rotation: ROTATION` under `spec.ca`.
    fn declare_rotation(&self) {
        self.edit_trust("  ca:\n", &format!("  ca:\n    rotation: {ROTATION}\n"));
    }

    /// `relayctl plan -o json --detailed-exitcode` as JSON, with its exit code.
    #[track_caller]
    fn plan_json(&self) -> (Run, serde_json::Value) {
        let run = self.relayctl(&["plan", ".", "-o", "json", "--detailed-exitcode"]);
        assert!(
            matches!(run.code, 0 | 2 | 3),
            "{}: relayctl plan failed\n{}",
            self.example,
            run.all()
        );
        let plan = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("plan -o json is not JSON ({e})\n{}", run.all()));
        (run, plan)
    }
}

/// Which agents the gate waits for, and why.
#[derive(Debug, Clone)]
struct Waiting {
    cluster: String,
    reason: String,
}

/// What a rotation went through.
#[derive(Debug, Default)]
struct Rotated {
    /// Phases in the order their first apply ran them, as `k/n name`.
    phases: Vec<String>,
    /// Applies it took.
    applies: usize,
    /// Every time a gate named clusters, what it named.
    waited: Vec<Vec<Waiting>>,
}

/// Runs the rotation the config declares to its end: `plan`, and `apply`
/// whenever the plan has changes, one phase at a time; while a gate is
/// closed, waits for its soak time or, when it names clusters, hands them
/// to `blocked` (which must make them catch up, e.g. restart agents, and
/// says whether it did). After each apply every agent connects twice more,
/// so each phase is used by the consumer before the next one starts.
#[track_caller]
fn rotate(
    s: &Scenario,
    relay: &mut Relay,
    what: &str,
    mut blocked: impl FnMut(&mut Relay, &[Waiting]) -> bool,
) -> Rotated {
    let started = std::time::Instant::now();
    let mut rotated = Rotated::default();
    loop {
        assert!(
            started.elapsed() < ROTATION_TIMEOUT,
            "{what}: the rotation did not end within {ROTATION_TIMEOUT:?}: {rotated:#?}\n{}",
            relay.report()
        );
        let (run, plan) = s.plan_json();
        let rotation = &plan["ca"]["rotation"];
        if run.code == 0 {
            assert!(
                rotation.is_null(),
                "{what}: exit 0 while a rotation is under way\n{}",
                run.stdout
            );
            return rotated;
        }
        if run.code == 3 {
            let gate = &rotation["gate"];
            let waiting: Vec<Waiting> = gate["blockers"]
                .as_array()
                .map(|b| {
                    b.iter()
                        .map(|b| Waiting {
                            cluster: b["cluster"].as_str().unwrap_or_default().to_owned(),
                            reason: b["reason"].as_str().unwrap_or_default().to_owned(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !waiting.is_empty() {
                rotated.waited.push(waiting.clone());
                assert!(
                    blocked(relay, &waiting),
                    "{what}: the gate waits for clusters: {waiting:#?}\n{}\n{}",
                    run.stdout,
                    relay.report()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let phase = format!(
            "{}/{} {}",
            rotation["step"],
            rotation["steps"],
            rotation["phase"].as_str().unwrap_or("?")
        );
        if !rotation.is_null() && rotated.phases.last() != Some(&phase) {
            rotated.phases.push(phase);
        }
        let marks = relay.marks();
        s.apply();
        rotated.applies += 1;
        relay.wait_connected(
            &marks,
            2,
            &format!("{what}, after apply {}", rotated.applies),
        );
    }
}

/// The root bundle (`ca.crt`) of `name` on `cluster`, as PEM blocks.
fn bundle(cluster: &str, ns: &str, name: &str) -> Vec<String> {
    pem_blocks(&secret_data(cluster, ns, name, "ca.crt"))
}

fn pem_blocks(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END") {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

/// Asserts that every bundle relayctl writes, and the certificate each
/// agent holds, end on `root` alone, and that the server's chain verifies
/// against it with OpenSSL.
#[track_caller]
fn assert_ended_on(s: &Scenario, root: &[String], what: &str) {
    let ns = s.ns.as_str();
    assert_eq!(root.len(), 1, "{what}: one root");
    for name in [ROOT_SECRET, SIGNING_SECRET, SERVER_SECRET] {
        assert_eq!(bundle(MGMT, ns, name), root, "{what}: mgmt {name} ca.crt");
    }
    for cluster in WORKLOADS {
        assert_eq!(
            bundle(cluster, ns, ROOT_SECRET),
            root,
            "{what}: {cluster} root bundle"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("root.pem"), root.concat()).expect("write root");
    let server = pem_blocks(&secret_data(MGMT, ns, SERVER_SECRET, "tls.crt"));
    std::fs::write(dir.path().join("server.pem"), &server[0]).expect("write leaf");
    std::fs::write(dir.path().join("chain.pem"), server[1..].concat()).expect("write chain");
    openssl(
        dir.path(),
        &[
            "verify",
            "-x509_strict",
            "-purpose",
            "sslserver",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "chain.pem",
            "server.pem",
        ],
    );
    for cluster in WORKLOADS {
        let client = pem_blocks(&secret_data(cluster, ns, CLIENT_SECRET, "tls.crt"));
        std::fs::write(dir.path().join("client.pem"), &client[0]).expect("write client");
        std::fs::write(dir.path().join("client-chain.pem"), client[1..].concat())
            .expect("write client chain");
        openssl(
            dir.path(),
            &[
                "verify",
                "-x509_strict",
                "-purpose",
                "sslclient",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "client-chain.pem",
                "client.pem",
            ],
        );
    }
}

/// A rotation from start to end in the connect profile: nothing failed on
/// the server or any agent (`/status?since=` the first apply), the agents
/// are the processes started at the beginning, and `check` is all √.
#[track_caller]
fn assert_no_disconnect(
    s: &Scenario,
    relay: &mut Relay,
    since: &str,
    pids: &BTreeMap<String, u32>,
    what: &str,
) {
    relay.assert_no_failures(Some(since), what);
    let marks = relay.marks();
    relay.assert_recovered(&marks, pids);
    relayctl_check_passes(s, relay);
}

/// The phases of a root rotation, as [`rotate`] reports them.
const ROOT_PHASES: [&str; 4] = [
    "1/4 trust-both",
    "2/4 switch-signer",
    "3/4 reissue",
    "4/4 drop-old",
];

/// A root rotation seen through agents that connect all along.
struct RootRotation {
    relay: Relay,
    pids: BTreeMap<String, u32>,
    since: String,
}

/// Applies `s`, starts the relay with agents in the connect profile, and
/// rotates the root to its end: the four phases in order, and every bundle
/// and certificate on the new root alone.
#[track_caller]
fn rotate_root(s: &Scenario, what: &str) -> RootRotation {
    let ns = s.ns.as_str();
    s.apply();
    let mut relay = Relay::start(ns, &[]);
    relay.wait_connected(&BTreeMap::new(), CONNECTS, "before the rotation");
    let old_root = bundle(MGMT, ns, ROOT_SECRET);
    let pids = relay.pids();
    let since = now_rfc3339();

    s.declare_rotation();
    let rotated = rotate(s, &mut relay, what, |_, _| false);
    assert_eq!(rotated.phases, ROOT_PHASES, "{rotated:#?}");
    let new_root = bundle(MGMT, ns, ROOT_SECRET);
    assert_ne!(new_root, old_root);
    assert_ended_on(s, &new_root, what);
    RootRotation { relay, pids, since }
}

#[test]
fn a_managed_root_rotation_never_fails_a_handshake_of_token_agents() {
    let s = Scenario::new("managed", "e2e-rotate-root", Connections::Flag);
    let ns = s.ns.as_str();
    let RootRotation {
        mut relay,
        pids,
        since,
    } = rotate_root(&s, "root rotation");
    // Token mode: each agent bootstrapped again from the new signer, once.
    for cluster in WORKLOADS {
        let bootstraps = relay
            .agent(cluster)
            .events()
            .iter()
            .filter(|e| e.is("bootstrap", true))
            .count();
        assert_eq!(
            bootstraps,
            2,
            "{cluster}: the first bootstrap and one in its wave\n{}",
            relay.report()
        );
    }
    // One Event per phase entered, on the rotation record on mgmt.
    let events: serde_json::Value = serde_json::from_str(&kubectl(
        MGMT,
        &["-n", ns, "get", "events.events.k8s.io", "-o", "json"],
    ))
    .expect("events as JSON");
    let mut notes: Vec<String> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["reason"] == "RotationPhaseAdvanced")
        .map(|e| {
            assert_eq!(e["regarding"]["name"], "relayctl-prod-rotation", "{e}");
            e["note"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    notes.sort();
    assert_eq!(notes.len(), 4, "{notes:#?}");
    for (note, phase) in notes.iter().zip([
        "1 of 4 (trust-both)",
        "2 of 4 (switch-signer)",
        "3 of 4 (reissue)",
        "4 of 4 (drop-old)",
    ]) {
        assert!(note.ends_with(&format!("entered phase {phase}")), "{note}");
    }
    assert_no_disconnect(&s, &mut relay, &since, &pids, "root rotation");
}

#[test]
fn a_preprovisioned_root_rotation_never_fails_a_handshake() {
    let s = Scenario::new(
        "managed-preprovisioned",
        "e2e-rotate-preprovisioned",
        Connections::PerCluster,
    );
    let what = "preprovisioned root rotation";
    let RootRotation {
        mut relay,
        pids,
        since,
    } = rotate_root(&s, what);
    // relayctl reissued every client certificate; the agents reloaded them
    // without a bootstrap.
    for cluster in WORKLOADS {
        assert!(
            !relay
                .agent(cluster)
                .events()
                .iter()
                .any(|e| e.event == "bootstrap"),
            "{cluster}\n{}",
            relay.report()
        );
    }
    assert_no_disconnect(&s, &mut relay, &since, &pids, what);
}

#[test]
fn an_intermediate_rotation_then_a_token_rotation_never_fail_a_handshake() {
    let s = Scenario::new("managed", "e2e-rotate-intermediate", Connections::Flag);
    let ns = s.ns.as_str();
    s.apply();
    let mut relay = Relay::start(ns, &[]);
    relay.wait_connected(&BTreeMap::new(), CONNECTS, "before the rotation");
    let root = bundle(MGMT, ns, ROOT_SECRET);
    let old_signer = pem_blocks(&secret_data(MGMT, ns, SIGNING_SECRET, "tls.crt"));
    let pids = relay.pids();
    let since = now_rfc3339();

    // A new key type for the intermediate: a rotation under the same root.
    s.edit_trust(
        "    intermediate: { validity: 43800h }\n",
        "    intermediate: { validity: 43800h, key: ecdsa-p384 }\n    rotation: { soak: 2s, wave: 50 }\n",
    );
    let rotated = rotate(&s, &mut relay, "intermediate rotation", |_, _| false);
    // The apply after the reissue retires the old intermediate.
    assert_eq!(
        rotated.phases,
        ["1/2 switch-signer", "2/2 reissue", "2/2 end"],
        "{rotated:#?}"
    );
    let new_signer = pem_blocks(&secret_data(MGMT, ns, SIGNING_SECRET, "tls.crt"));
    assert_ne!(new_signer[0], old_signer[0]);
    assert_ended_on(&s, &root, "intermediate rotation");
    let signer_der = |pem: &str| {
        Command::new("openssl")
            .args(["x509", "-noout", "-text"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(pem.as_bytes())?;
                child.wait_with_output()
            })
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .expect("openssl x509")
    };
    assert!(
        signer_der(&new_signer[0]).contains("384 bit"),
        "the new intermediate is P-384"
    );
    assert_no_disconnect(&s, &mut relay, &since, &pids, "intermediate rotation");

    // The token: mgmt first, then every workload, in one apply. Agents that
    // bootstrapped keep their certificates; a new bootstrap uses the new token.
    let token = secret_data(MGMT, ns, TOKEN_SECRET, "token");
    let versions: BTreeMap<&str, String> = WORKLOADS
        .iter()
        .map(|c| (*c, resource_version(c, ns, CLIENT_SECRET)))
        .collect();
    s.edit_trust(
        "  identityToken: { enabled: true }\n",
        "  identityToken: { enabled: true, generation: 2 }\n",
    );
    let since = now_rfc3339();
    let marks = relay.marks();
    s.apply();
    let new_token = secret_data(MGMT, ns, TOKEN_SECRET, "token");
    assert_ne!(new_token, token);
    for cluster in WORKLOADS {
        assert_eq!(
            secret_data(cluster, ns, TOKEN_SECRET, "token"),
            new_token,
            "{cluster}"
        );
    }
    relay.wait_connected(&marks, 2, "after the token rotation");
    for cluster in WORKLOADS {
        assert_eq!(
            resource_version(cluster, ns, CLIENT_SECRET),
            versions[cluster],
            "{cluster}: a bootstrapped agent is not touched by a token rotation"
        );
    }
    let mark = relay.agent("cluster-2").mark();
    kubectl("cluster-2", &["-n", ns, "delete", "secret", CLIENT_SECRET]);
    relay.wait(
        relay.agent("cluster-2"),
        mark,
        "a bootstrap with the new token",
        CONNECT_TIMEOUT,
        |events| events.iter().any(|e| e.is("bootstrap", true)),
    );
    relay.assert_no_failures(Some(&since), "token rotation");
    let (run, _) = s.plan_json();
    assert_eq!(
        run.code,
        0,
        "converged after the token rotation\n{}",
        run.all()
    );
}

#[test]
fn a_product_ca_migrates_to_custom_without_a_failed_handshake() {
    let s = Scenario::new("gloo", "e2e-migrate", Connections::PerCluster);
    let ns = s.ns.as_str();
    let relay = Relay::server_only(ns, &["--generate-ca"]);
    relay.wait(
        &relay.server,
        0,
        "the initial load of the generated server certificate",
        EVENT_TIMEOUT,
        |events| {
            events
                .iter()
                .any(|e| e.is("reload", true) && e.detail.starts_with("initial load"))
        },
    );
    s.apply();
    let mut relay = relay;
    relay.start_agents();
    relay.wait_connected(&BTreeMap::new(), CONNECTS, "on the product's CA");
    let product_root = bundle(MGMT, ns, ROOT_SECRET);
    let pids = relay.pids();
    let since = now_rfc3339();

    let material = s.path().join("material");
    let output = Command::new("bash")
        .arg(examples().join("make-material.sh"))
        .arg(&material)
        .stdin(Stdio::null())
        .output()
        .expect("run make-material.sh");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    s.edit_trust(
        "    mode: gloo\n",
        &format!(
            "    mode: custom\n    root:\n      cert: {{ file: material/root.crt }}\n      privateKey: {{ file: material/root.key }}\n    rotation: {ROTATION}\n"
        ),
    );
    // The product's Secrets become relayctl's (the first apply adopts them
    // and starts the rotation), then one phase per apply.
    let marks = relay.marks();
    let adopt = s.relayctl(&["apply", ".", "--auto-approve", "--adopt"]);
    assert_eq!(adopt.code, 0, "{}", adopt.all());
    relay.wait_connected(&marks, 2, "after the adoption");
    let rotated = rotate(&s, &mut relay, "migration", |_, _| false);
    assert!(
        rotated
            .phases
            .ends_with(&["3/4 reissue".to_owned(), "4/4 drop-old".to_owned()]),
        "{rotated:#?}"
    );
    let corp_root = pem_blocks(&std::fs::read(material.join("root.crt")).expect("root.crt"));
    assert_ne!(corp_root, product_root);
    assert_ended_on(&s, &corp_root, "migration");
    let root_secret = secret(MGMT, ns, ROOT_SECRET).expect("root secret");
    assert!(
        root_secret["data"].get("tls.key").is_none(),
        "custom keeps no root key in the cluster: {}",
        root_secret["data"]
            .as_object()
            .map(|d| d.keys().cloned().collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    );
    assert_no_disconnect(&s, &mut relay, &since, &pids, "migration");
}

#[test]
fn agents_that_never_reload_are_named_by_the_gate_and_fail_nothing_once_restarted() {
    let s = Scenario::new("managed", "e2e-rotate-restart", Connections::Flag);
    let ns = s.ns.as_str();
    s.apply();
    let mut relay = Relay::server_only(ns, &[]);
    relay.start_agents_with(&["--reload", "restart"]);
    relay.wait_connected(&BTreeMap::new(), CONNECTS, "before the rotation");
    let since = now_rfc3339();

    s.declare_rotation();
    let mut restarted = BTreeSet::new();
    let rotated = rotate(
        &s,
        &mut relay,
        "root rotation, restart profile",
        |relay, waiting| {
            // Restart what the gate says to restart; a cluster waiting for
            // its wave is fine; anything else is a failure.
            for w in waiting {
                if w.reason.contains("restart the agent") {
                    if restarted.insert(w.cluster.clone()) {
                        relay.restart_agent(&w.cluster, &["--reload", "restart"]);
                    }
                } else if !w.reason.contains("reissued in a later wave") {
                    return false;
                }
            }
            true
        },
    );
    assert_eq!(rotated.phases, ROOT_PHASES, "{rotated:#?}");
    // The gate before drop-old named every agent (in its wave) as one to
    // restart; the cross-signed bridge kept the old agents verifying the new
    // server chain until then.
    let named: BTreeSet<String> = rotated
        .waited
        .iter()
        .flatten()
        .map(|w| w.cluster.clone())
        .collect();
    let all: BTreeSet<String> = WORKLOADS.iter().map(|c| (*c).to_owned()).collect();
    assert_eq!(named, all, "{rotated:#?}");
    assert_eq!(restarted, all);
    relay.assert_no_failures(Some(&since), "root rotation, restart profile");
    assert_ended_on(&s, &bundle(MGMT, ns, ROOT_SECRET), "restart profile");
    relayctl_check_passes(&s, &relay);
}
