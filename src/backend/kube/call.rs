//! The call policy: every API call bounded by the per-cluster timeout
//! (retries included), retried with exponential backoff and jitter on 429,
//! 5xx and transport errors and never on other 4xx, waiting at least as
//! long as a throttled answer's `retryAfterSeconds` asks (then bounded by
//! the timeout, not by [`MAX_ATTEMPTS`]), each attempt admitted by the
//! cluster's request limit if it has one; and its failure shaped into a
//! [`BackendError`] that names the operation and never quotes data.

use std::future::Future;
use std::time::Duration;

use kube::core::Status;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::KubeBackend;
use crate::backend::BackendError;

/// Attempts per API call (the first try included), within the timeout; a
/// server that says when to come back (`retryAfterSeconds`) is tried until
/// the timeout instead.
pub const MAX_ATTEMPTS: u32 = 5;
/// Pause before the second attempt; doubled each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl KubeBackend {
    pub(super) fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Runs `attempt` until it succeeds, fails for good, runs out of attempts
    /// or reaches `deadline`.
    pub(super) async fn call<T, Fut>(
        &self,
        deadline: Instant,
        mut attempt: impl FnMut() -> Fut,
    ) -> Result<T, CallError>
    where
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            if let Some(limiter) = &self.limiter
                && !limiter.admit(deadline).await
            {
                return Err(CallError::Timeout);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(CallError::Timeout);
            }
            let started = Instant::now();
            let result = tokio::time::timeout(remaining, attempt()).await;
            record(
                match &result {
                    Err(_) => "timeout",
                    Ok(Ok(_)) => "2xx",
                    Ok(Err(kube::Error::Api(status))) => code_class(status.code),
                    Ok(Err(_)) => "error",
                },
                started.elapsed(),
            );
            let error = match result {
                Err(_) => return Err(CallError::Timeout),
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => error,
            };
            let asked = retry_after(&error);
            let pause = jittered(backoff(attempts).max(asked.unwrap_or_default()));
            if !retryable(&error)
                || (attempts >= MAX_ATTEMPTS && asked.is_none())
                || Instant::now() + pause >= deadline
            {
                return Err(CallError::from_kube(error, attempts));
            }
            tracing::debug!(
                cluster = %self.cluster,
                attempt = attempts,
                error = %sanitized(&error),
                "retrying a Kubernetes API call in {pause:?}"
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// A Secret request whose body is decoded here (see the module docs).
    pub(super) async fn secret_call(
        &self,
        deadline: Instant,
        make: impl Fn() -> Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<Zeroizing<String>, CallError> {
        self.call(deadline, || {
            let request = make();
            async move {
                let request = request.map_err(kube::Error::BuildRequest)?;
                self.client()?.request_text(request).await
            }
        })
        .await
        .map(Zeroizing::new)
    }

    /// The error to report for a failed call.
    pub(super) fn fail(&self, operation: String, error: CallError) -> BackendError {
        match error {
            CallError::Api(status) if status.code == 401 => {
                BackendError::Unauthorized { operation }
            }
            CallError::Api(status) if status.code == 403 => BackendError::Forbidden {
                operation,
                message: status.message,
            },
            CallError::Api(status) => BackendError::Kube {
                operation,
                source: Box::new(ApiStatus::from(*status)),
            },
            CallError::Transport { error, attempts } if is_transport(&error) => {
                BackendError::Unreachable {
                    cluster: self.cluster.clone(),
                    server: self.server.clone(),
                    attempts,
                    source: sanitized(&error),
                }
            }
            CallError::Transport { error, .. } => BackendError::Kube {
                operation,
                source: sanitized(&error),
            },
            CallError::Decode(error) => BackendError::Kube {
                operation,
                source: Box::new(error),
            },
            CallError::Timeout => BackendError::Timeout {
                operation,
                cluster: self.cluster.clone(),
                after: self.timeout,
            },
        }
    }
}

/// How one API call ended, before it is named for the report.
#[derive(Debug)]
pub(super) enum CallError {
    /// The API server answered with an error status (after retries, for 429/5xx).
    Api(Box<Status>),
    /// No answer: connection, TLS, or client errors.
    Transport { error: kube::Error, attempts: u32 },
    /// The answer could not be decoded.
    Decode(DecodeError),
    /// The per-cluster timeout passed.
    Timeout,
}

impl CallError {
    fn from_kube(error: kube::Error, attempts: u32) -> Self {
        match error {
            kube::Error::Api(status) => Self::Api(status),
            error => Self::Transport { error, attempts },
        }
    }
}

/// Every API request of this process (each attempt), for the metrics:
/// plain counts, read through [`api_calls`].
static API_CALLS: std::sync::Mutex<Option<crate::metrics::ApiCalls>> = std::sync::Mutex::new(None);

fn record(outcome: &'static str, elapsed: Duration) {
    if let Ok(mut calls) = API_CALLS.lock() {
        let calls = calls.get_or_insert_with(Default::default);
        *calls.by_code.entry(outcome).or_default() += 1;
        calls.duration.observe(elapsed.as_secs_f64());
    }
}

/// The API requests this process made so far.
pub fn api_calls() -> crate::metrics::ApiCalls {
    API_CALLS
        .lock()
        .ok()
        .and_then(|calls| calls.clone())
        .unwrap_or_default()
}

/// `2xx` … `5xx`: the class of an HTTP status.
fn code_class(code: u16) -> &'static str {
    match code {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Whether a failed call may succeed when tried again: throttling, server
/// errors, and no answer at all. Other 4xx answers are final.
pub(crate) fn retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => retryable_status(status.code),
        other => is_transport(other),
    }
}

/// Whether an HTTP status is worth retrying: 429 and 5xx.
pub(crate) fn retryable_status(code: u16) -> bool {
    code == 429 || (500..600).contains(&code)
}

/// Errors of reaching the server (connect, TLS, connection reset).
fn is_transport(error: &kube::Error) -> bool {
    matches!(
        error,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)
    )
}

/// How long a throttled or unavailable server asked to wait
/// (`Status.details.retryAfterSeconds` of a 429 or 5xx), if it did.
pub(crate) fn retry_after(error: &kube::Error) -> Option<Duration> {
    match error {
        kube::Error::Api(status) if retryable_status(status.code) => status
            .details
            .as_ref()
            .map(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(u64::from(s))),
        _ => None,
    }
}

/// `pause` plus up to a quarter more, at random, so that workers throttled
/// together do not all come back at the same moment. Never shorter than
/// `pause`: a server's `Retry-After` is a lower bound.
fn jittered(pause: Duration) -> Duration {
    pause.mul_f64(1.0 + rand::random::<f64>() / 4.0)
}

/// The pause after failed attempt `attempt` (1-based): 200 ms, doubling, at most 5 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// A kube error safe to show: decoding errors lose their message, which may
/// quote the document.
pub(super) fn sanitized(error: &kube::Error) -> Box<dyn std::error::Error + Send + Sync> {
    match error {
        kube::Error::SerdeError(e) => Box::new(DecodeError::from(e)),
        kube::Error::FromUtf8(_) => Box::new(DecodeError {
            what: "the API server's answer is not UTF-8".to_owned(),
        }),
        other => Box::new(Flattened(crate::error::error_chain(other))),
    }
}

/// An error chain flattened into one message (kube errors are not `Clone`).
#[derive(Debug)]
struct Flattened(String);

impl std::fmt::Display for Flattened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Flattened {}

/// The API server's error status: code, reason and message (which names the
/// verb, resource and object, never data).
#[derive(Debug, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiStatus {
    /// HTTP status.
    pub code: u16,
    /// Machine-readable reason (`Conflict`, `Invalid`, …).
    pub reason: String,
    /// The server's message.
    pub message: String,
}

impl From<Status> for ApiStatus {
    fn from(status: Status) -> Self {
        Self {
            code: status.code,
            reason: status.reason,
            message: status.message,
        }
    }
}

/// An answer that could not be decoded; says where, never what.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct DecodeError {
    what: String,
}

impl DecodeError {
    pub(super) fn encode(e: &serde_json::Error) -> Self {
        Self {
            what: format!("cannot encode the request ({:?})", e.classify()),
        }
    }
}

impl From<&serde_json::Error> for DecodeError {
    fn from(e: &serde_json::Error) -> Self {
        Self {
            what: format!(
                "cannot decode the API server's answer (line {} column {})",
                e.line(),
                e.column()
            ),
        }
    }
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError::from(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;

    #[test]
    fn only_throttling_server_errors_and_transport_failures_are_retried() {
        for code in [429, 500, 502, 503, 504] {
            assert!(retryable_status(code), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 410, 422] {
            assert!(!retryable_status(code), "{code}");
        }
        let status = |code| {
            kube::Error::Api(Box::new(Status {
                code,
                ..Status::default()
            }))
        };
        assert!(retryable(&status(503)));
        assert!(!retryable(&status(403)));
        let refused = kube::Error::Service(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(retryable(&refused));
        let decode = kube::Error::SerdeError(serde_json::from_str::<u8>("x").unwrap_err());
        assert!(!retryable(&decode));
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_throttled_answer_says_how_long_to_wait_and_jitter_only_adds() {
        let status = |code, seconds| {
            kube::Error::Api(Box::new(Status {
                code,
                details: Some(kube::core::response::StatusDetails {
                    name: String::new(),
                    group: String::new(),
                    kind: String::new(),
                    uid: String::new(),
                    causes: Vec::new(),
                    retry_after_seconds: seconds,
                }),
                ..Status::default()
            }))
        };
        assert_eq!(retry_after(&status(429, 3)), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&status(503, 1)), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(&status(429, 0)), None);
        assert_eq!(
            retry_after(&status(409, 3)),
            None,
            "only on retried answers"
        );
        for _ in 0..100 {
            let pause = jittered(Duration::from_secs(1));
            assert!(pause >= Duration::from_secs(1), "{pause:?}");
            assert!(pause <= Duration::from_millis(1250), "{pause:?}");
        }
    }

    #[test]
    fn decoding_errors_never_quote_the_document() {
        let err = decode::<Secret>(r#"{"data": {"token": 42, "x": "hunter2"#).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let kube_err =
            kube::Error::SerdeError(serde_json::from_str::<u8>("\"hunter2\"").unwrap_err());
        assert!(!sanitized(&kube_err).to_string().contains("hunter2"));
    }
}
