//! The optional client-side bound on one cluster's request rate
//! (`connection.kubeconfig.qps` / `burst`): a token bucket per client.
//!
//! A call that would have to wait past its deadline for a token does not
//! wait: it fails as a timeout at once, leaving the token to the others.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::RequestLimit;

/// One cluster's token bucket.
#[derive(Debug)]
pub(super) struct Limiter {
    bucket: Mutex<Bucket>,
}

impl Limiter {
    pub(super) fn new(limit: RequestLimit) -> Self {
        Self {
            bucket: Mutex::new(Bucket::full(limit, Instant::now())),
        }
    }

    /// Waits for the next request's turn; `false` (and no wait) when that
    /// turn comes after `deadline`.
    pub(super) async fn admit(&self, deadline: Instant) -> bool {
        let now = Instant::now();
        let wait = {
            let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
            match bucket.take(now, deadline) {
                Some(wait) => wait,
                None => return false,
            }
        };
        if !wait.is_zero() {
            tracing::trace!(?wait, "waiting for the cluster's request limit");
            tokio::time::sleep(wait).await;
        }
        true
    }
}

/// Tokens refilled at `qps` per second up to `burst`. A request takes one
/// token, or books the next one to come (the bucket goes into debt), so
/// requests waiting at once are spaced `1/qps` apart in arrival order.
#[derive(Debug, Clone)]
struct Bucket {
    limit: RequestLimit,
    /// Tokens at `at`; negative: booked ahead.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(limit: RequestLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            at: now,
        }
    }

    /// Takes a token at `now`: how long to wait for it, or `None` (nothing
    /// taken) when it would come after `deadline`.
    fn take(&mut self, now: Instant, deadline: Instant) -> Option<Duration> {
        let qps = f64::from(self.limit.qps.max(1));
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let tokens = (self.tokens + elapsed * qps).min(f64::from(self.limit.burst.max(1)));
        let wait = if tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - tokens) / qps)
        };
        if now + wait > deadline {
            return None;
        }
        self.tokens = tokens - 1.0;
        self.at = now;
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_goes_at_once_then_requests_are_spaced_at_the_rate() {
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(60);
        let mut bucket = Bucket::full(RequestLimit { qps: 10, burst: 3 }, t0);
        let waits: Vec<Duration> = (0..6).map(|_| bucket.take(t0, far).unwrap()).collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 0, 0, 100, 200, 300]);
        // After a quiet second the bucket is full again, but never above the burst.
        let later = t0 + Duration::from_secs(2);
        let waits: Vec<Duration> = (0..4).map(|_| bucket.take(later, far).unwrap()).collect();
        assert_eq!(waits[..3], [Duration::ZERO; 3]);
        assert!(waits[3] >= 99 * MS && waits[3] <= 101 * MS, "{waits:?}");
    }

    #[test]
    fn a_turn_after_the_deadline_is_refused_and_takes_nothing() {
        let t0 = Instant::now();
        let mut bucket = Bucket::full(RequestLimit { qps: 1, burst: 1 }, t0);
        assert_eq!(bucket.take(t0, t0 + MS), Some(Duration::ZERO));
        assert_eq!(
            bucket.take(t0, t0 + 500 * MS),
            None,
            "the next token is 1 s away"
        );
        let wait = bucket.take(t0, t0 + Duration::from_secs(2)).unwrap();
        assert!(wait >= 999 * MS && wait <= 1001 * MS, "{wait:?}");
    }
}
