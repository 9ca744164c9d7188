//! The pieces every check line is built from: the line collector, the
//! hints, the expiry tiers (CAs by days left; leaves by the renewal rule of
//! [`crate::pki::renewal`], the same one `plan` renews by), the key line,
//! and what workloads are compared with on mgmt.

use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::{Check, CheckId, Status};
use crate::error::error_chain;
use crate::model::{CaMode, TrustConfig};
use crate::observed::{ClusterObservation, SecretObject};
use crate::pki::inspect::rfc3339;
use crate::pki::{self, Bundle, CertFacts, PrivateKey};
use crate::relay::key::{self, TLS_KEY};
use crate::secret::SecretBytes;

#[derive(Default)]
pub(super) struct Lines(pub(super) Vec<Check>);

impl Lines {
    pub(super) fn ok(&mut self, id: CheckId, message: impl Into<String>) {
        self.push(id, Status::Ok, message.into(), None);
    }

    pub(super) fn warn(
        &mut self,
        id: CheckId,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(id, Status::Warn, message.into(), Some(hint.into()));
    }

    pub(super) fn fail(
        &mut self,
        id: CheckId,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(id, Status::Fail, message.into(), Some(hint.into()));
    }

    pub(super) fn push(
        &mut self,
        id: CheckId,
        status: Status,
        message: String,
        hint: Option<String>,
    ) {
        self.0.push(Check {
            id,
            status,
            message,
            hint,
        });
    }

    pub(super) fn line(&mut self, id: CheckId, (status, message, hint): (Status, String, String)) {
        let hint = (status != Status::Ok).then_some(hint);
        self.push(id, status, message, hint);
    }
}

pub(super) const HINT_REACH: &str = "check the cluster's `connection` in its manifest and the credentials relayctl runs with (`--kubeconfig`, `--state-dir`)";
pub(super) const HINT_AFTER_FIXES: &str = "fix the lines above, then run `relayctl check` again";

/// How what relayctl writes gets repaired, by CA mode.
pub(super) fn repair_hint(config: &TrustConfig) -> &'static str {
    match config.ca.mode {
        CaMode::Managed | CaMode::Custom => {
            "`relayctl plan` shows the repair and `relayctl apply` carries it out"
        }
        CaMode::Gloo => {
            "`relayctl plan` shows the repair and `relayctl apply` carries it out (mgmt's own CA secrets come from the management server)"
        }
        CaMode::External => {
            "provide the material from your PKI; `relayctl plan` shows the repair and `relayctl apply` carries it out"
        }
    }
}

/// Why the mgmt side of a comparison is not available.
pub(super) type Reference<T> = Result<T, String>;

/// What workloads are compared with and handshake against.
pub(super) struct Management {
    pub(super) bundle: Reference<Bundle>,
    pub(super) token_digest: Reference<SecretBytes>,
    pub(super) server: Reference<ServerSide>,
    /// The names of the registered clusters, when relayctl registers them.
    pub(super) registered: Option<Reference<std::collections::BTreeSet<String>>>,
}

/// Reads a bundle or chain for a check line; the error is the reader's chain.
pub(super) fn read_bundle(pem: &[u8]) -> Result<Bundle, String> {
    Bundle::read(pem).map_err(|e| error_chain(&e))
}

/// The management server's side of the handshake.
pub(super) struct ServerSide {
    pub(super) chain_pem: Vec<u8>,
    pub(super) key: PrivateKey,
    pub(super) roots_pem: Vec<u8>,
}

pub(super) fn secret<'a>(obs: &'a ClusterObservation, name: &str) -> Option<&'a SecretObject> {
    obs.secrets.get(name)
}

/// The observation, or a `reachable` × line.
pub(super) fn reachable<'a>(
    lines: &mut Lines,
    observed: Option<&'a Result<ClusterObservation, String>>,
) -> Option<&'a ClusterObservation> {
    match observed {
        Some(Ok(obs)) => Some(obs),
        Some(Err(why)) => {
            lines.fail(
                CheckId::Reachable,
                format!("cannot read the cluster: {why}"),
                HINT_REACH,
            );
            None
        }
        None => {
            lines.fail(
                CheckId::Reachable,
                "the cluster was not observed",
                HINT_REACH,
            );
            None
        }
    }
}

/// A CA's tier: × expired or not yet valid, ‼ under `warn_days`, √ otherwise.
pub(super) fn ca_expiry(
    what: &str,
    facts: &CertFacts,
    warn_days: i64,
    now: OffsetDateTime,
    hint: &str,
) -> (Status, String, String) {
    let bound = Bound {
        threshold: time::Duration::days(warn_days),
        name: format!("{warn_days} days"),
        ok: "at least",
    };
    expiry(
        &format!("{what} `{}`", facts.subject),
        facts,
        &bound,
        now,
        hint,
    )
}

/// A leaf's tier: × expired or not yet valid, ‼ once `renewal` is due (the
/// rule `plan` renews by, see [`pki::renewal`]), √ otherwise.
pub(super) fn leaf_expiry(
    what: &str,
    facts: &CertFacts,
    renewal: &pki::Renewal,
    now: OffsetDateTime,
    hint: &str,
) -> (Status, String, String) {
    let bound = Bound {
        threshold: renewal.threshold,
        name: renewal.bound(),
        ok: "more than",
    };
    expiry(what, facts, &bound, now, hint)
}

/// The warning threshold of an expiry tier and how messages name it.
struct Bound {
    threshold: time::Duration,
    name: String,
    ok: &'static str,
}

fn expiry(
    what: &str,
    facts: &CertFacts,
    bound: &Bound,
    now: OffsetDateTime,
    hint: &str,
) -> (Status, String, String) {
    let not_after = rfc3339(facts.not_after);
    if now < facts.not_before {
        return (
            Status::Fail,
            format!("{what} is not valid before {}", rfc3339(facts.not_before)),
            "check the clocks of the machine that issued it and of this one".to_owned(),
        );
    }
    let remaining = facts.not_after - now;
    let name = &bound.name;
    if remaining <= time::Duration::ZERO {
        (
            Status::Fail,
            format!(
                "{what} expired {} ago ({not_after})",
                pki::renewal::human(-remaining)
            ),
            hint.to_owned(),
        )
    } else if remaining <= bound.threshold {
        // Due exactly when `plan` would renew: at notAfter − threshold.
        (
            Status::Warn,
            format!(
                "{what} expires in {}, under {name} ({not_after})",
                pki::renewal::human(remaining)
            ),
            hint.to_owned(),
        )
    } else {
        (
            Status::Ok,
            format!(
                "{what} is valid for {} {name} (until {not_after})",
                bound.ok
            ),
            String::new(),
        )
    }
}

/// The key line of an assessed certificate; returns the key when it matches.
pub(super) fn key_match_line(
    lines: &mut Lines,
    id: CheckId,
    what: &str,
    key: &pki::KeyMatch,
    hint: &str,
) -> Option<PrivateKey> {
    match key {
        pki::KeyMatch::Matches(private) => {
            lines.ok(id, format!("{what} key matches its certificate"));
            Some(private.clone())
        }
        pki::KeyMatch::Missing => {
            lines.fail(id, format!("{what} has no `{TLS_KEY}`"), hint);
            None
        }
        pki::KeyMatch::Mismatch { .. } => {
            lines.fail(
                id,
                format!("{what} key does not match its certificate"),
                hint,
            );
            None
        }
        pki::KeyMatch::Unreadable(why) => {
            lines.fail(id, format!("{what} key is unreadable: {why}"), hint);
            None
        }
    }
}

/// `√ key matches` or a × line; returns the key when it matches.
pub(super) fn key_line(
    lines: &mut Lines,
    id: CheckId,
    what: &str,
    secret: &SecretObject,
    leaf: &CertFacts,
    hint: &str,
) -> Option<PrivateKey> {
    let Some(pem) = secret.get(key::TLS_KEY) else {
        lines.fail(id, format!("{what} has no `{TLS_KEY}`"), hint);
        return None;
    };
    match PrivateKey::from_pem(pem) {
        Ok(key) if pki::key_matches(leaf, &key.facts()) => {
            lines.ok(id, format!("{what} key matches its certificate"));
            Some(key)
        }
        Ok(_) => {
            lines.fail(
                id,
                format!("{what} key does not match its certificate"),
                hint,
            );
            None
        }
        Err(e) => {
            lines.fail(
                id,
                format!("{what} key is unreadable: {}", error_chain(&e)),
                hint,
            );
            None
        }
    }
}

/// SHA-256 of a token, itself kept as a secret: tokens are compared by
/// digest so that the comparison's time depends on neither value nor length.
pub(super) fn digest(token: &SecretBytes) -> SecretBytes {
    SecretBytes::new(Sha256::digest(token.expose()).to_vec())
}
