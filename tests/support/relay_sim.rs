//! `tools/relay-sim` as a test fixture: the product's management server and
//! agents stand-in (see its README), built once per test binary and run as
//! child processes that never outlive the test.
//!
//! - [`binary`] runs `tools/relay-sim/build.sh` once (a cache hit in
//!   milliseconds, ~85 s cold) and panics with its stderr when it fails.
//! - [`Sim::server`] / [`Sim::agent`] start one process, wait for its first
//!   `listening` event (the bound addresses) and collect every stdout event in
//!   memory; [`Sim::wait_for`] blocks until the events satisfy a predicate.
//! - [`Sim::status`] queries `GET /status[?since=T]`.
//! - A [`Sim`] is killed when dropped (so also when its test panics); and
//!   when `setpriv` is installed it runs under `setpriv --pdeathsig KILL`, so
//!   it also dies when the thread that started it (the test's thread) ends,
//!   however the test binary ends.
//!
//! Used from `tests/relay_e2e.rs` with `#[path = "support/relay_sim.rs"]`.

#![allow(dead_code)] // not every test binary uses every helper

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a process may take to print its `listening` line.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The relay-sim binary, built (or found in the cache) once per test binary.
pub(crate) fn binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BINARY.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/relay-sim/build.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {}: {e}", script.display()))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(format!(
                "{} failed ({}); it needs Go and the Go module proxy:\n{stderr}",
                script.display(),
                output.status
            ));
        }
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if !path.is_file() {
            return Err(format!(
                "{} printed `{}`, which is not a file:\n{stderr}",
                script.display(),
                path.display()
            ));
        }
        Ok(path)
    });
    match built {
        Ok(path) => path,
        Err(e) => panic!("build relay-sim: {e}"),
    }
}

/// `setpriv`, when installed: lets children die with the thread that
/// spawned them (`PR_SET_PDEATHSIG`) without `unsafe` in this crate.
fn setpriv() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            ["/usr/bin/setpriv", "/bin/setpriv"]
                .iter()
                .map(PathBuf::from)
                .find(|p| {
                    Command::new(p)
                        .args(["--pdeathsig", "KILL", "--", "true"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                })
        })
        .as_deref()
}

/// One JSON line of a relay-sim process.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct Event {
    pub time: String,
    pub role: String,
    pub event: String,
    pub cluster: String,
    pub ok: bool,
    pub error: String,
    pub detail: String,
    pub remote: String,
    pub addr: String,
    pub status: String,
    /// The line as printed, for failure messages.
    #[serde(skip)]
    pub line: String,
}

impl Event {
    pub(crate) fn is(&self, kind: &str, ok: bool) -> bool {
        self.event == kind && self.ok == ok
    }

    /// A failed `kind` event whose error contains `text`.
    pub(crate) fn failed_with(&self, kind: &str, text: &str) -> bool {
        self.is(kind, false) && self.error.contains(text)
    }
}

/// Counters of `/status` (per cluster and in total).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Counters {
    pub handshakes_ok: u64,
    pub handshakes_failed: u64,
    pub connects_ok: u64,
    pub connects_failed: u64,
    pub bootstraps: u64,
    pub bootstraps_failed: u64,
    pub renewals: u64,
    pub renewals_failed: u64,
    pub reloads: u64,
    pub errors: u64,
    pub last_error: String,
    pub last_ok: String,
}

impl Counters {
    /// Failed handshakes, connects, bootstraps, renewals and errors.
    pub(crate) fn failures(&self) -> u64 {
        self.handshakes_failed
            + self.connects_failed
            + self.bootstraps_failed
            + self.renewals_failed
            + self.errors
    }
}

/// The body of `GET /status`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct Status {
    pub role: String,
    pub now: String,
    pub since: String,
    pub truncated: bool,
    pub clusters: BTreeMap<String, Counters>,
    pub total: Counters,
}

#[derive(Default)]
struct Log {
    events: Vec<Event>,
    /// Lines of stdout that were not events (should not happen).
    garbage: Vec<String>,
    closed: bool,
}

struct Shared {
    log: Mutex<Log>,
    changed: Condvar,
    stderr: Mutex<String>,
}

/// A running relay-sim process; killed when dropped.
pub(crate) struct Sim {
    /// `server` or `agent <cluster>`.
    name: String,
    child: Child,
    shared: Arc<Shared>,
    addr: String,
    status_addr: String,
    started: Instant,
}

impl Sim {
    /// `relay-sim server` for `namespace` on `context` with port 0 for the
    /// relay and the status endpoint, plus `extra` flags.
    pub(crate) fn server(kubeconfig: &Path, context: &str, namespace: &str, extra: &[&str]) -> Sim {
        let mut args: Vec<String> = [
            "server",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--context",
            context,
            "--namespace",
            namespace,
            "--listen",
            "127.0.0.1:0",
            "--status",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Sim::start("server".to_owned(), &args)
    }

    /// `relay-sim agent` for workload `cluster` (also its context) that dials
    /// `server`, with a status endpoint, plus `extra` flags.
    pub(crate) fn agent(
        kubeconfig: &Path,
        cluster: &str,
        namespace: &str,
        server: &str,
        extra: &[&str],
    ) -> Sim {
        let mut args: Vec<String> = [
            "agent",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--context",
            cluster,
            "--cluster",
            cluster,
            "--namespace",
            namespace,
            "--server",
            server,
            "--status",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Sim::start(format!("agent {cluster}"), &args)
    }

    fn start(name: String, args: &[String]) -> Sim {
        let bin = binary();
        let mut command = match setpriv() {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        command
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start relay-sim {name}: {e}"));
        let shared = Arc::new(Shared {
            log: Mutex::new(Log::default()),
            changed: Condvar::new(),
            stderr: Mutex::new(String::new()),
        });
        let stdout = child.stdout.take().expect("relay-sim stdout");
        let reader = shared.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut log = reader.log.lock().unwrap_or_else(|e| e.into_inner());
                match serde_json::from_str::<Event>(&line) {
                    Ok(mut event) => {
                        event.line = line;
                        log.events.push(event);
                    }
                    Err(_) => log.garbage.push(line),
                }
                drop(log);
                reader.changed.notify_all();
            }
            reader.log.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
            reader.changed.notify_all();
        });
        let stderr = child.stderr.take().expect("relay-sim stderr");
        let errors = shared.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                errors
                    .stderr
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut sim = Sim {
            name,
            child,
            shared,
            addr: String::new(),
            status_addr: String::new(),
            started: Instant::now(),
        };
        let listening = sim
            .wait_for("its `listening` event", START_TIMEOUT, |events| {
                events.iter().any(|e| e.event == "listening")
            })
            .unwrap_or_else(|report| panic!("{report}"));
        let first = listening.iter().find(|e| e.event == "listening").cloned();
        let first = first.unwrap_or_default();
        sim.addr = first.addr;
        sim.status_addr = first.status;
        sim
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The relay address (`server` only).
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Every event so far.
    pub(crate) fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// Events after the first `skip`.
    pub(crate) fn events_from(&self, skip: usize) -> Vec<Event> {
        self.lock().events.iter().skip(skip).cloned().collect()
    }

    /// How many events so far (a mark for [`Sim::wait_for_from`]).
    pub(crate) fn mark(&self) -> usize {
        self.lock().events.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `done(events)` holds; returns the events then, or a report
    /// (this process's events and stderr) when `timeout` passes or the
    /// process exits first.
    pub(crate) fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Event]) -> bool,
    ) -> Result<Vec<Event>, String> {
        self.wait_for_from(0, what, timeout, done)
    }

    /// [`Sim::wait_for`] over the events after the first `mark`.
    pub(crate) fn wait_for_from(
        &self,
        mark: usize,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Event]) -> bool,
    ) -> Result<Vec<Event>, String> {
        let deadline = Instant::now() + timeout;
        let mut log = self.lock();
        loop {
            let events = log.events.get(mark..).unwrap_or_default();
            if done(events) {
                return Ok(events.to_vec());
            }
            let now = Instant::now();
            if log.closed || now >= deadline {
                let why = if log.closed {
                    "the process exited first".to_owned()
                } else {
                    format!("not within {timeout:?}")
                };
                drop(log);
                return Err(format!(
                    "relay-sim {}: waited for {what}: {why}\n{}",
                    self.name,
                    self.report()
                ));
            }
            log = self
                .shared
                .changed
                .wait_timeout(log, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// `GET /status` (lifetime totals) or `GET /status?since=T`.
    pub(crate) fn status(&self, since: Option<&str>) -> Status {
        let path = match since {
            Some(t) => format!("/status?since={}", t.replace('+', "%2B")),
            None => "/status".to_owned(),
        };
        let body = http_get(&self.status_addr, &path)
            .unwrap_or_else(|e| panic!("relay-sim {} {path}: {e}\n{}", self.name, self.report()));
        serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!(
                "relay-sim {} {path}: not a status report ({e}): {body}",
                self.name
            )
        })
    }

    /// What this process did, for failure messages: counts per event kind,
    /// every distinct error with its count, the last events and stderr.
    pub(crate) fn report(&self) -> String {
        let log = self.lock();
        let mut out = format!(
            "--- relay-sim {} (pid {}, {:.1}s, {} events)\n",
            self.name,
            self.child.id(),
            self.started.elapsed().as_secs_f64(),
            log.events.len()
        );
        let mut kinds: BTreeMap<(&str, bool), usize> = BTreeMap::new();
        let mut errors: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
        for e in &log.events {
            *kinds.entry((e.event.as_str(), e.ok)).or_default() += 1;
            if !e.ok {
                *errors
                    .entry((e.event.as_str(), e.cluster.as_str(), e.error.as_str()))
                    .or_default() += 1;
            }
        }
        let counts: Vec<String> = kinds
            .iter()
            .map(|((kind, ok), n)| format!("{kind} {}: {n}", if *ok { "ok" } else { "failed" }))
            .collect();
        let _ = writeln!(out, "counts: {}", counts.join(", "));
        for ((kind, cluster, error), n) in &errors {
            let _ = writeln!(out, "failed {kind} [{cluster}] ×{n}: {error}");
        }
        let tail = log.events.len().saturating_sub(8);
        for e in &log.events[tail..] {
            let _ = writeln!(out, "  {}", e.line);
        }
        for line in &log.garbage {
            let _ = writeln!(out, "  (not an event) {line}");
        }
        drop(log);
        let stderr = self.shared.stderr.lock().unwrap_or_else(|e| e.into_inner());
        if !stderr.trim().is_empty() {
            let lines: Vec<&str> = stderr.lines().collect();
            let from = lines.len().saturating_sub(10);
            let _ = writeln!(out, "stderr:\n  {}", lines[from..].join("\n  "));
        }
        out
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET (the sim closes the connection after the body).
fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response: {response}"))?;
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.contains(" 200 ") {
        return Err(format!("{status_line}: {body}"));
    }
    Ok(body.to_owned())
}
