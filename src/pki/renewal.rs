//! When to renew a certificate: cert-manager's rule, the one relayctl uses
//! everywhere (the planner renews by it, `check` warns by it, metrics
//! publish its renewal time).
//!
//! Renew when less than `renewBefore` of the certificate is left. When
//! `renewBefore` is not shorter than the certificate's *actual* lifetime
//! (notAfter − notBefore, e.g. a certificate an external CA issued shorter
//! than configured), renew when less than a third of its lifetime is left
//! instead: renewing at once would loop forever.

use time::OffsetDateTime;

use crate::model::Duration;
use crate::pki::inspect::CertFacts;

/// Where a certificate's renewal threshold comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The configured `renewBefore`, shorter than the lifetime.
    RenewBefore(Duration),
    /// A third of the lifetime: `renewBefore` was not shorter than it.
    LifetimeThird,
    /// A share of the lifetime (an agent's grace ratio), in per mille.
    LifetimeShare(u32),
}

/// When a certificate is due for renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// Renew when less than this is left.
    pub threshold: time::Duration,
    /// Why that threshold.
    pub basis: Basis,
    /// The instant it becomes due: notAfter − threshold.
    pub at: OffsetDateTime,
}

impl Renewal {
    /// Whether the certificate is due at `now` (also when it has expired).
    pub fn is_due(&self, now: OffsetDateTime) -> bool {
        now >= self.at
    }

    /// How the threshold is named in messages: `renewBefore 720h` (as
    /// configured) or `lifetime/3 3d`.
    pub fn bound(&self) -> String {
        match self.basis {
            Basis::RenewBefore(renew_before) => format!("renewBefore {renew_before}"),
            Basis::LifetimeThird => format!("lifetime/3 {}", human(self.threshold)),
            Basis::LifetimeShare(permille) => format!(
                "{}% of its lifetime, {}",
                f64::from(permille) / 10.0,
                human(self.threshold)
            ),
        }
    }
}

/// The renewal of `facts` under `renew_before`.
pub fn renewal(facts: &CertFacts, renew_before: Duration) -> Renewal {
    let lifetime = facts.not_after - facts.not_before;
    let (threshold, basis) = if renew_before.to_time() < lifetime {
        (renew_before.to_time(), Basis::RenewBefore(renew_before))
    } else {
        (lifetime / 3, Basis::LifetimeThird)
    };
    Renewal {
        threshold,
        basis,
        at: facts.not_after - threshold,
    }
}

/// The renewal of `facts` by whoever renews once less than `ratio` of its
/// lifetime is left (the product's agent, at its grace ratio).
pub fn renewal_at_ratio(facts: &CertFacts, ratio: f64) -> Renewal {
    let lifetime = facts.not_after - facts.not_before;
    let threshold = lifetime * ratio.clamp(0.0, 1.0);
    Renewal {
        threshold,
        basis: Basis::LifetimeShare((ratio.clamp(0.0, 1.0) * 1000.0).round() as u32),
        at: facts.not_after - threshold,
    }
}

/// `Some(reason)` when the certificate must be renewed at `now`, e.g.
/// `expires in 12d < renewBefore 720h`, `expires in 2d3h < lifetime/3 4d`,
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
    let renewal = renewal(facts, renew_before);
    renewal
        .is_due(now)
        .then(|| format!("expires in {} < {}", human(remaining), renewal.bound()))
}

/// A remaining or elapsed time for people: the two largest of days, hours,
/// minutes, seconds, rounded down (`12d`, `2d3h`, `5h30m`, `45s`). Configured
/// durations print as configured (`720h`, see [`Duration`]'s `Display`).
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::KeyAlgorithm;
    use crate::pki::fixtures::{Chain, NOW, hours};

    fn facts_with(not_before: OffsetDateTime, lifetime: time::Duration) -> CertFacts {
        let mut facts = Chain::new(KeyAlgorithm::EcdsaP256).client.facts;
        facts.not_before = not_before;
        facts.not_after = not_before + lifetime;
        facts
    }

    #[test]
    fn renewal_follows_cert_managers_rule_and_explains_itself() {
        let facts = facts_with(NOW, time::Duration::days(365));
        let renew_before = hours(30 * 24);
        assert_eq!(
            renewal_due(&facts, renew_before, NOW + time::Duration::days(300)),
            None
        );
        assert_eq!(
            renewal_due(&facts, renew_before, NOW + time::Duration::days(353)).as_deref(),
            Some("expires in 12d < renewBefore 720h")
        );
        assert_eq!(
            renewal_due(&facts, renew_before, NOW + time::Duration::days(368)).as_deref(),
            Some("expired 3d ago")
        );
        // A cert not longer than renewBefore: renewed at lifetime/3, not in a loop.
        let short = facts_with(NOW, time::Duration::days(9));
        assert_eq!(
            renewal_due(&short, renew_before, NOW + time::Duration::days(1)),
            None
        );
        assert_eq!(
            renewal_due(
                &short,
                renew_before,
                NOW + time::Duration::hours(6 * 24 + 3)
            )
            .as_deref(),
            Some("expires in 2d21h < lifetime/3 3d")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The rule, restated: due exactly when remaining < renewBefore, or
        /// < lifetime/3 when renewBefore is not shorter than the lifetime; never
        /// at issuance (no renewal loop), whatever renewBefore says.
        #[test]
        fn renewal_rule(
            lifetime_secs in 3_600i64..20 * 365 * 86_400,
            renew_before_secs in 0u64..30 * 365 * 86_400,
            elapsed_permille in 0i64..1_200,
        ) {
            let lifetime = time::Duration::seconds(lifetime_secs);
            let mut facts = FACTS.clone();
            facts.not_before = NOW;
            facts.not_after = NOW + lifetime;
            let now = NOW + lifetime * elapsed_permille as f64 / 1000.0;
            let renew_before = Duration::from_secs(renew_before_secs);
            let configured = time::Duration::seconds(renew_before_secs as i64);
            let threshold = if configured < lifetime { configured } else { lifetime / 3 };
            let remaining = facts.not_after - now;
            let due = renewal_due(&facts, renew_before, now);
            prop_assert_eq!(due.is_some(), remaining < threshold || remaining <= time::Duration::ZERO);
            prop_assert!(renewal_due(&facts, renew_before, NOW).is_none());
            if let Some(reason) = due {
                prop_assert!(reason.starts_with("expires in ") || reason.starts_with("expired "), "{}", reason);
            }
        }
    }

    static FACTS: std::sync::LazyLock<CertFacts> =
        std::sync::LazyLock::new(|| Chain::new(KeyAlgorithm::EcdsaP256).client.facts);
}
