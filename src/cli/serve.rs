//! The reconcile loop's HTTP endpoints: `/metrics`, `/livez`, `/readyz`.
//!
//! A small blocking HTTP/1.1 server on `std::net`, one short-lived thread
//! per connection (at most [`MAX_CONNECTIONS`] at once), `Connection:
//! close`, GET and HEAD only, bounded request heads and a read timeout: the
//! three endpoints answer from memory, so nothing here needs an async
//! stack (the loop itself is blocking threads).
//!
//! - `/metrics`: built on every scrape by [`crate::metrics`] from the last
//!   observation and the counters; OpenMetrics when the scraper asks for it
//!   (`Accept: application/openmetrics-text`, as Prometheus does), the
//!   classic text format 0.0.4 otherwise.
//! - `/livez`: fails only when the loop has not *started* a tick for three
//!   intervals (it is stuck); never because a remote cluster is down.
//! - `/readyz`: ready once a tick has held the apply lock and completed an
//!   observation of the fleet, until a tick fails to get that far (another
//!   replica holds the lock, the management cluster or Git is unreachable,
//!   the manifests are invalid).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics;

/// Connections served at once; more are closed at once.
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoints report, updated by the loop.
pub(crate) struct Telemetry {
    interval: Duration,
    started: Instant,
    version: &'static str,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    observation: metrics::Observation,
    process: metrics::Process,
    last_tick_started: Option<Instant>,
    ready: Option<String>,
    not_ready: String,
}

impl Telemetry {
    pub(crate) fn new(interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            interval,
            started: Instant::now(),
            version: env!("CARGO_PKG_VERSION"),
            state: Mutex::new(State {
                not_ready: "no tick has observed the fleet yet".to_owned(),
                ..State::default()
            }),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Option<T> {
        self.state.lock().ok().map(|mut s| f(&mut s))
    }

    /// A tick starts.
    pub(crate) fn tick_started(&self) {
        self.with(|s| s.last_tick_started = Some(Instant::now()));
    }

    /// The tick holds the lock and observed the fleet.
    pub(crate) fn ready(&self, what: String) {
        self.with(|s| s.ready = Some(what));
    }

    /// The tick could not take the lock or observe.
    pub(crate) fn not_ready(&self, why: String) {
        self.with(|s| {
            s.ready = None;
            s.not_ready = why;
        });
    }

    /// The tick's observation, published for the next scrapes.
    pub(crate) fn observed(&self, observation: metrics::Observation) {
        self.with(|s| s.observation = observation);
    }

    /// A tick ended: its duration, and why it failed if it did.
    pub(crate) fn tick_finished(
        &self,
        took: Duration,
        failure: Option<metrics::ErrorReason>,
        now: time::OffsetDateTime,
    ) {
        self.with(|s| {
            s.process.runs += 1;
            s.process.duration.observe(took.as_secs_f64());
            match failure {
                Some(reason) => *s.process.errors.entry(reason).or_default() += 1,
                None => s.process.last_success = Some(now),
            }
        });
    }

    fn metrics(&self, openmetrics: bool) -> String {
        let api = crate::backend::kube::api_calls();
        let text = self
            .with(|s| {
                let mut registry = metrics::registry();
                metrics::register_observation(&mut registry, &s.observation);
                metrics::register_process(&mut registry, &s.process, &api, self.version);
                metrics::encode_openmetrics(&registry)
            })
            .unwrap_or_default();
        if openmetrics {
            text
        } else {
            metrics::to_prometheus_text(&text)
        }
    }

    fn livez(&self) -> Result<String, String> {
        let limit = self.interval.saturating_mul(3);
        let since = self
            .with(|s| s.last_tick_started)
            .flatten()
            .unwrap_or(self.started)
            .elapsed();
        if since <= limit {
            Ok(format!("ok: a tick started {}s ago\n", since.as_secs()))
        } else {
            Err(format!(
                "no tick started for {}s (more than 3 intervals of {}s): the loop is stuck\n",
                since.as_secs(),
                self.interval.as_secs()
            ))
        }
    }

    fn readyz(&self) -> Result<String, String> {
        match self.with(|s| (s.ready.clone(), s.not_ready.clone())) {
            Some((Some(what), _)) => Ok(format!("ok: {what}\n")),
            Some((None, why)) => Err(format!("not ready: {why}\n")),
            None => Err("not ready: state unavailable\n".to_owned()),
        }
    }
}

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoints {
    pub(crate) metrics: bool,
    pub(crate) health: bool,
}

/// Binds `addr` and serves `endpoints` on a thread of its own until the
/// process exits. Returns the bound address (for `:0`).
pub(crate) fn serve(
    addr: SocketAddr,
    telemetry: Arc<Telemetry>,
    endpoints: Endpoints,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name(format!("relayctl-http-{}", bound.port()))
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    drop(stream);
                    continue;
                }
                let (telemetry, done) = (telemetry.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("relayctl-http-conn".to_owned())
                    .spawn(move || {
                        handle(stream, &telemetry, endpoints);
                        done.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
    Ok(bound)
}

/// A parsed request head: method, path (without query), whether the client
/// accepts OpenMetrics.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    openmetrics: bool,
}

fn parse(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let method = parts.next()?.to_owned();
    let target = parts.next()?;
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let openmetrics = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("accept") && value.contains("application/openmetrics-text")
        })
    });
    Some(Request {
        method,
        path,
        openmetrics,
    })
}

fn read_head(stream: &mut TcpStream) -> Option<String> {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(head).ok()
}

fn handle(mut stream: TcpStream, telemetry: &Telemetry, endpoints: Endpoints) {
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let Some(request) = read_head(&mut stream).as_deref().and_then(parse) else {
        respond(
            &mut stream,
            "400 Bad Request",
            "text/plain",
            "bad request\n",
            true,
        );
        return;
    };
    let head_only = request.method == "HEAD";
    if request.method != "GET" && !head_only {
        respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD\n",
            head_only,
        );
        return;
    }
    let plain = "text/plain; charset=utf-8";
    let (status, content_type, body) = match request.path.as_str() {
        "/metrics" if endpoints.metrics => {
            let content_type = if request.openmetrics {
                metrics::OPENMETRICS_CONTENT_TYPE
            } else {
                metrics::PROMETHEUS_CONTENT_TYPE
            };
            (
                "200 OK",
                content_type,
                telemetry.metrics(request.openmetrics),
            )
        }
        "/livez" | "/healthz" if endpoints.health => match telemetry.livez() {
            Ok(body) => ("200 OK", plain, body),
            Err(body) => ("503 Service Unavailable", plain, body),
        },
        "/readyz" if endpoints.health => match telemetry.readyz() {
            Ok(body) => ("200 OK", plain, body),
            Err(body) => ("503 Service Unavailable", plain, body),
        },
        _ => ("404 Not Found", plain, "not found\n".to_owned()),
    };
    respond(&mut stream, status, content_type, &body, head_only);
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str, head_only: bool) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    if !head_only {
        let _ = stream.write_all(body.as_bytes());
    }
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_are_parsed_with_the_accept_header() {
        let r = parse(
            "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
        );
        assert_eq!(
            r,
            Some(Request {
                method: "GET".into(),
                path: "/metrics".into(),
                openmetrics: true
            })
        );
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").is_some_and(|r| r.openmetrics));
        assert_eq!(parse("nonsense"), None);
    }

    #[test]
    fn livez_fails_only_after_three_intervals_without_a_tick() {
        let t = Telemetry::new(Duration::from_millis(10));
        t.tick_started();
        assert!(t.livez().is_ok());
        std::thread::sleep(Duration::from_millis(40));
        assert!(t.livez().is_err());
        t.tick_started();
        assert!(t.livez().is_ok());
    }

    #[test]
    fn readyz_follows_the_last_tick() {
        let t = Telemetry::new(Duration::from_secs(60));
        assert!(t.readyz().is_err());
        t.ready("observed 3 clusters".into());
        assert!(t.readyz().is_ok());
        t.not_ready("the lock is held".into());
        assert!(t.readyz().unwrap_err().contains("the lock is held"));
    }
}
