//! What an existing Secret holds against what it should hold: the reasons a
//! plan gives for rewriting it. Certificates are judged by
//! [`pki::assess`](crate::pki::assess) (key, SANs, renewal) and compared by
//! their facts and chains, never by bytes.

use time::OffsetDateTime;

use super::PlanError;
use crate::model::Duration;
use crate::observed::SecretObject;
use crate::pki::{self, Bundle, CertFacts, Expect, Issuer, KeyMatch, Names, PrivateKey, Usage};
use crate::relay::key;

/// The error of a certificate that could not be issued.
/// What the config asks of a CA relayctl generates (`spec.ca.root` or
/// `spec.ca.intermediate`).
pub(super) fn ca_request(config: &crate::model::CaCertConfig) -> pki::CaRequest {
    pki::CaRequest {
        common_name: config.common_name.clone(),
        validity: config.validity,
        key: config.key,
    }
}

pub(super) fn issue_err(what: &str) -> impl FnOnce(pki::IssueError) -> PlanError + '_ {
    move |source| PlanError::Issue {
        what: what.to_owned(),
        source,
    }
}

/// A CA (cert + key) found in a Secret, if its key matches and it is a CA;
/// of several certificates, the first.
pub(super) fn existing_ca(secret: &SecretObject, cert_key: &str) -> Result<Issuer, String> {
    let cert = secret
        .get(cert_key)
        .ok_or_else(|| format!("`{cert_key}` is missing"))?;
    let tls_key = secret
        .get(key::TLS_KEY)
        .ok_or_else(|| format!("`{}` is missing", key::TLS_KEY))?;
    let private = PrivateKey::from_pem(tls_key).map_err(|e| {
        format!(
            "`{}` is unreadable: {}",
            key::TLS_KEY,
            crate::error::error_chain(&e)
        )
    })?;
    // A root Secret's `ca.crt` may be a bundle (during a rotation, or
    // after one): the CA is its first certificate.
    let first = pki::inspect::certificate_ders(cert.expose())
        .ok()
        .and_then(|d| d.into_iter().next())
        .map(|der| pki::inspect::certificate_pem(&der).into_bytes())
        .unwrap_or_else(|| cert.expose().to_vec());
    Issuer::new(&first, private).map_err(|e| match e {
        pki::IssueError::IssuerKeyMismatch { .. } => {
            format!("`{}` does not match `{cert_key}`", key::TLS_KEY)
        }
        other => format!(
            "`{cert_key}` is not a usable CA: {}",
            crate::error::error_chain(&other)
        ),
    })
}

/// Why `issuer` cannot issue a certificate of `validity` now, if it cannot:
/// it would outlive the issuer, or the issuer is not valid yet. A
/// per-Secret error, so the rest of the fleet is still planned.
pub(super) fn outlives(issuer: &Issuer, validity: Duration, now: OffsetDateTime) -> Option<String> {
    // An issuer from the future: another machine with a clock ahead of this
    // one made it (rcgen would refuse to sign; say why instead).
    let issuer_start = issuer.facts().not_before;
    if now < issuer_start {
        return Some(format!(
            "the issuer `{}` is not valid before {}, and this machine's clock says {}: the clock of the machine that issued it, or this one's, is off; check both (NTP) and run again",
            issuer.facts().subject,
            pki::inspect::rfc3339(issuer_start),
            pki::inspect::rfc3339(now)
        ));
    }
    let issuer_end = issuer.facts().not_after;
    (now + validity.to_time() > issuer_end).then(|| {
        format!(
            "a new certificate valid for {validity} would outlive its issuer `{}`, which expires at {}: rotate the issuer or shorten the validity",
            issuer.facts().subject,
            pki::inspect::rfc3339(issuer_end)
        )
    })
}

/// The bundle in an existing Secret's `ca.crt`, readable or not.
fn observed_bundle(existing: &SecretObject) -> Option<Bundle> {
    existing
        .get(key::CA_CRT)
        .and_then(|v| Bundle::read(v.expose()).ok())
}

/// Why an existing Secret's `ca.crt` must change, pushed onto `reasons`;
/// `differs` words a bundle that holds other certificates.
pub(super) fn bundle_reason(
    existing: &SecretObject,
    bundle_facts: &[CertFacts],
    differs: &str,
    reasons: &mut Vec<String>,
) {
    // This runs for every workload of a fleet: the same certificates, by
    // fingerprint, need no parsing.
    if existing
        .get(key::CA_CRT)
        .is_some_and(|observed| pki::bundle::pem_holds(observed.expose(), bundle_facts))
    {
        return;
    }
    match observed_bundle(existing) {
        Some(observed) if observed.same_as(bundle_facts) => {}
        Some(_) => reasons.push(differs.to_owned()),
        None => reasons.push(format!("`{}` is missing or unreadable", key::CA_CRT)),
    }
}

/// Why an existing Secret differs from material copied from a source.
pub(super) fn copied_reasons(
    existing: &SecretObject,
    chain: &[CertFacts],
    private: &PrivateKey,
    reasons: &mut Vec<String>,
) {
    match existing
        .get(key::TLS_CRT)
        .and_then(|v| Bundle::read(v.expose()).ok())
    {
        Some(observed) if observed.same_as(chain) => {}
        Some(_) => reasons.push(format!(
            "`{}` differs from the configured source",
            key::TLS_CRT
        )),
        None => reasons.push(format!("`{}` is missing or unreadable", key::TLS_CRT)),
    }
    match existing
        .get(key::TLS_KEY)
        .and_then(|k| PrivateKey::from_pem(k).ok())
    {
        Some(k) if k.facts() == private.facts() => {}
        _ => reasons.push(format!(
            "`{}` differs from the configured source",
            key::TLS_KEY
        )),
    }
}

/// Why a key judged by the assessment is not the certificate's, if it isn't.
pub(super) fn key_reason(key: &KeyMatch) -> Option<String> {
    match key {
        KeyMatch::Matches(_) => None,
        KeyMatch::Mismatch { .. } => Some(format!(
            "`{}` does not match `{}`",
            key::TLS_KEY,
            key::TLS_CRT
        )),
        KeyMatch::Unreadable(_) => Some(format!("`{}` is unreadable", key::TLS_KEY)),
        KeyMatch::Missing => Some(format!("`{}` is missing", key::TLS_KEY)),
    }
}

/// `SAN is a, b, want c`, when the SAN rule does not hold.
pub(super) fn names_reason(leaf: &CertFacts, names: &Names<'_>) -> Option<String> {
    if names.hold(leaf) {
        return None;
    }
    let sorted = |names: &[String]| {
        let mut names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        names.sort();
        names.join(", ")
    };
    let (have, want) = match names {
        Names::Exactly(want) => (sorted(&leaf.dns_names), sorted(want)),
        _ => (leaf.dns_names.join(", "), names.wanted()),
    };
    Some(format!(
        "SAN is {}, want {want}",
        if have.is_empty() { "empty" } else { &have }
    ))
}

/// Checks an existing leaf Secret against the current signer: the reasons
/// to reissue it (empty: keep it).
pub(super) fn leaf_problems(
    existing: &SecretObject,
    signer: &Issuer,
    bundle: &[u8],
    expect: &Expect<'_>,
) -> Vec<String> {
    leaf_judgement(existing, signer, bundle, expect).0
}

/// [`leaf_problems`], with the assessment they come from when the chain
/// could be read: a leaf that is kept is written back from it (its key and
/// facts), not parsed again.
pub(super) fn leaf_judgement(
    existing: &SecretObject,
    signer: &Issuer,
    bundle: &[u8],
    expect: &Expect<'_>,
) -> (Vec<String>, Option<pki::Assessment>) {
    let Some(chain) = existing.get(key::TLS_CRT) else {
        return (vec![format!("`{}` is missing", key::TLS_CRT)], None);
    };
    let Ok(assessment) = pki::assess(chain.expose(), existing.get(key::TLS_KEY), expect) else {
        return (vec![format!("`{}` is unreadable", key::TLS_CRT)], None);
    };
    let leaf = assessment.leaf();
    let mut reasons = Vec::new();
    reasons.extend(key_reason(&assessment.key));
    let names = names_reason(leaf, &expect.names);
    let names_ok = names.is_none();
    reasons.extend(names);
    // The leaf as the current signer would complete its chain.
    let leaf_der = pki::inspect::certificate_ders(chain.expose())
        .ok()
        .and_then(|d| d.into_iter().next())
        .unwrap_or_default();
    if let Err(err) = pki::verify_issued(&leaf_der, signer, bundle, expect.usage, expect.now) {
        if leaf.issuer != signer.facts().subject
            || leaf.authority_key_id != signer.facts().subject_key_id
        {
            reasons.push("not signed by the current intermediate".to_owned());
        } else if names_ok {
            reasons.push(format!(
                "does not verify: {}",
                crate::error::error_chain(&err)
            ));
        }
    }
    if assessment.chain.get(1).map(|f| &f.sha256_fingerprint)
        != Some(&signer.facts().sha256_fingerprint)
    {
        reasons.push(format!(
            "`{}` does not carry the current intermediate after the leaf",
            key::TLS_CRT
        ));
    }
    reasons.extend(assessment.renewal_reason());
    (reasons, Some(assessment))
}

/// A kept leaf Secret's chain, key and chain facts, to write back, taken
/// from its assessment (a leaf is kept only when its key matches).
pub(super) fn kept_leaf(
    existing: &SecretObject,
    assessment: Option<pki::Assessment>,
) -> Option<(Vec<u8>, PrivateKey, Vec<CertFacts>)> {
    let Some(pki::Assessment {
        key: KeyMatch::Matches(key),
        chain: facts,
        ..
    }) = assessment
    else {
        return None;
    };
    let chain = existing.get(key::TLS_CRT)?.expose().to_vec();
    Some((chain, key, facts))
}

/// The expectation of a leaf relayctl issues or verifies.
pub(super) fn expect<'a>(
    usage: Usage,
    names: Names<'a>,
    roots: Option<&'a [u8]>,
    renew_before: Duration,
    now: OffsetDateTime,
) -> Expect<'a> {
    Expect {
        usage,
        names,
        roots,
        renew_before,
        now,
    }
}
