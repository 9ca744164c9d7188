//! When to renew a certificate: cert-manager's rule.
//!
//! Renew when the remaining lifetime is shorter than `min(renewBefore,
//! lifetime / 3)`, both taken from the certificate's real notBefore/notAfter.
//! Capping by a third of the *actual* lifetime means a certificate issued
//! shorter than configured (e.g. by an external CA) is not renewed again right
//! after issuance, which would loop forever.

use time::OffsetDateTime;

use crate::model::Duration;
use crate::pki::inspect::CertFacts;

/// The remaining lifetime below which `facts` is due: `min(renew_before,
/// (notAfter - notBefore) / 3)`.
pub fn renewal_threshold(facts: &CertFacts, renew_before: Duration) -> time::Duration {
    let lifetime = facts.not_after - facts.not_before;
    let third = lifetime / 3;
    renew_before.to_time().min(third)
}

/// `Some(reason)` when the certificate must be renewed at `now`, e.g.
/// `expires in 12d < renewBefore 30d`, `expires in 2d3h < lifetime/3 4d`,
/// or `expired 3d ago`; `None` when it is fine.
pub fn renewal_due(
    facts: &CertFacts,
    renew_before: Duration,
    now: OffsetDateTime,
) -> Option<String> {
    let remaining = facts.not_after - now;
    if remaining <= time::Duration::ZERO {
        return Some(format!("expired {} ago", human(-remaining)));
    }
    let threshold = renewal_threshold(facts, renew_before);
    if remaining >= threshold {
        return None;
    }
    let bound = if threshold == renew_before.to_time() {
        format!("renewBefore {}", human(threshold))
    } else {
        format!("lifetime/3 {}", human(threshold))
    };
    Some(format!("expires in {} < {bound}", human(remaining)))
}

/// A duration for people: the two largest of days, hours, minutes, seconds,
/// rounded down (`12d`, `2d3h`, `5h30m`, `45s`).
pub fn human(duration: time::Duration) -> String {
    let total = duration.whole_seconds().max(0);
    let parts = [
        (total / 86_400, "d"),
        (total % 86_400 / 3600, "h"),
        (total % 3600 / 60, "m"),
        (total % 60, "s"),
    ];
    let Some(first) = parts.iter().position(|(value, _)| *value > 0) else {
        return "0s".to_owned();
    };
    parts[first..]
        .iter()
        .take(2)
        .filter(|(value, _)| *value > 0)
        .map(|(value, unit)| format!("{value}{unit}"))
        .collect()
}
