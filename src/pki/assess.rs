//! One judgement of a leaf certificate, shared by everyone who judges one.
//!
//! The planner turns an [`Assessment`] into reasons to reissue, `check` into
//! √/‼/× lines and `validate` into material diagnostics: they cannot
//! disagree on whether a key matches, a SAN names the cluster, a chain
//! verifies or renewal is due, because it is computed once, here.
//!
//! **The SAN rules.** An agent's identity is its client certificate's DNS
//! SAN, which the management server compares with the registered cluster
//! name: *exactly*, as a string. Cluster names are lowercase DNS labels, so a
//! SAN that differs only in case names no registered cluster, and relayctl
//! treats it as a mismatch everywhere. A *host name* (the authority agents
//! dial, the server's DNS names) is compared ASCII case-insensitively, with a
//! `*.` wildcard covering one label, as Go's and rustls' hostname
//! verification do.

use time::OffsetDateTime;

use crate::model::{Duration, dns_name_covers};
use crate::pki::inspect::{CertFacts, InspectError, inspect_bundle};
use crate::pki::key::PrivateKey;
use crate::pki::renewal::{Renewal, human, renewal};
use crate::pki::verify::{Usage, verify_chain};
use crate::secret::SecretBytes;

/// What a leaf's DNS SANs must be.
#[derive(Debug, Clone, Copy)]
pub enum Names<'a> {
    /// An agent's identity: exactly one DNS SAN, equal to the cluster name.
    Cluster(&'a str),
    /// Some DNS SAN covers this host name (the authority agents dial).
    Covers(&'a str),
    /// The DNS SANs are this set, as host names (order and case aside).
    Exactly(&'a [String]),
}

impl Names<'_> {
    /// Whether `facts` satisfies the rule.
    pub fn hold(&self, facts: &CertFacts) -> bool {
        match self {
            Self::Cluster(cluster) => identity_is(facts, cluster),
            Self::Covers(host) => facts.dns_names.iter().any(|p| dns_name_covers(p, host)),
            Self::Exactly(want) => {
                let norm = |names: &[String]| {
                    let mut names: Vec<String> =
                        names.iter().map(|n| n.to_ascii_lowercase()).collect();
                    names.sort();
                    names.dedup();
                    names
                };
                norm(&facts.dns_names) == norm(want)
            }
        }
    }

    /// What was wanted, for messages: `cluster-1`, `covering x`, `a, b`.
    pub fn wanted(&self) -> String {
        match self {
            Self::Cluster(cluster) => (*cluster).to_owned(),
            Self::Covers(host) => format!("one covering `{host}`"),
            Self::Exactly(want) => want.join(", "),
        }
    }
}

/// Whether `facts` names exactly `cluster` as its only DNS SAN (see the
/// module docs for why exactly).
pub fn identity_is(facts: &CertFacts, cluster: &str) -> bool {
    facts.dns_names.len() == 1 && facts.dns_names[0] == cluster
}

/// Whether the private key in a Secret is the leaf's.
#[derive(Debug)]
pub enum KeyMatch {
    /// It is; here it is, parsed.
    Matches(PrivateKey),
    /// It is another key, with this public-key fingerprint.
    Mismatch {
        /// SHA-256 of the key's SubjectPublicKeyInfo.
        key_spki_sha256: String,
    },
    /// It cannot be read (the reason names no key bytes).
    Unreadable(String),
    /// There is none.
    Missing,
}

impl KeyMatch {
    /// The key, when it matches.
    pub fn key(&self) -> Option<&PrivateKey> {
        match self {
            Self::Matches(key) => Some(key),
            _ => None,
        }
    }
}

/// Where `now` lies in the leaf's validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Before notBefore.
    NotYetValid,
    /// Within it, with this much left.
    Valid(time::Duration),
    /// After notAfter, by this much.
    Expired(time::Duration),
}

/// What is expected of a leaf.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// Server or client use.
    pub usage: Usage,
    /// The SAN rule.
    pub names: Names<'a>,
    /// The root bundle it must chain to, when known.
    pub roots: Option<&'a [u8]>,
    /// `renewBefore` of its kind of certificate.
    pub renew_before: Duration,
    /// The clock.
    pub now: OffsetDateTime,
}

/// The judgement of one leaf certificate (a `tls.crt`, leaf first, with its
/// `tls.key`).
#[derive(Debug)]
pub struct Assessment {
    /// Facts of every certificate of the chain, leaf first.
    pub chain: Vec<CertFacts>,
    /// The key.
    pub key: KeyMatch,
    /// Whether the SANs follow the rule.
    pub names_hold: bool,
    /// Whether the chain verifies against the roots for the usage at `now`
    /// (`None`: no roots were given); the error is the verifier's chain.
    pub verifies: Option<Result<(), String>>,
    /// Validity at `now`.
    pub window: Window,
    /// When it is due for renewal.
    pub renewal: Renewal,
    now: OffsetDateTime,
}

impl Assessment {
    /// The leaf's facts.
    pub fn leaf(&self) -> &CertFacts {
        &self.chain[0]
    }

    /// Whether the leaf is due for renewal at the assessment's `now`
    /// (expired and not-yet-valid leaves are due too).
    pub fn renewal_due(&self) -> bool {
        self.window == Window::NotYetValid || self.renewal.is_due(self.now)
    }

    /// Why the leaf is due, for a plan's reasons: `expires in 12d <
    /// renewBefore 720h`, `expired 3d ago`, `not valid before …`.
    pub fn renewal_reason(&self) -> Option<String> {
        match self.window {
            Window::NotYetValid => Some(format!(
                "not valid before {}",
                crate::pki::inspect::rfc3339(self.leaf().not_before)
            )),
            Window::Expired(ago) => Some(format!("expired {} ago", human(ago))),
            Window::Valid(left) => self
                .renewal_due()
                .then(|| format!("expires in {} < {}", human(left), self.renewal.bound())),
        }
    }
}

/// Judges `tls_crt` (and `tls_key`) against `expect`. Fails only when the
/// chain cannot be read at all.
pub fn assess(
    tls_crt: &[u8],
    tls_key: Option<&SecretBytes>,
    expect: &Expect<'_>,
) -> Result<Assessment, InspectError> {
    let chain = inspect_bundle(tls_crt)?;
    let Some(leaf) = chain.first() else {
        return Err(InspectError::NoPem { what: "empty" });
    };
    let key = match tls_key.map(PrivateKey::from_pem) {
        None => KeyMatch::Missing,
        Some(Ok(key)) if key.facts().spki_sha256 == leaf.spki_sha256 => KeyMatch::Matches(key),
        Some(Ok(key)) => KeyMatch::Mismatch {
            key_spki_sha256: key.facts().spki_sha256,
        },
        Some(Err(e)) => KeyMatch::Unreadable(crate::error::error_chain(&e)),
    };
    let now = expect.now;
    let window = if now < leaf.not_before {
        Window::NotYetValid
    } else if now > leaf.not_after {
        Window::Expired(now - leaf.not_after)
    } else {
        Window::Valid(leaf.not_after - now)
    };
    let verifies = expect.roots.map(|roots| {
        verify_chain(tls_crt, roots, expect.usage, None, now)
            .map_err(|e| crate::error::error_chain(&e))
    });
    Ok(Assessment {
        names_hold: expect.names.hold(leaf),
        renewal: renewal(leaf, expect.renew_before),
        chain,
        key,
        verifies,
        window,
        now,
    })
}
