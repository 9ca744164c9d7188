//! Certificate logic for the relay chain: issue, inspect, verify, renew, and
//! check user-provided material.
//!
//! Every certificate relayctl writes comes from here, and every decision about
//! existing certificates (reuse, renew, report) is made on the facts this
//! module extracts. It is pure: no files, no clock (`now` is a parameter), no
//! hidden randomness (key generation and serials come through [`KeySource`]).
//! Private keys only exist as [`PrivateKey`], whose formatting is redacted.
//!
//! - [`key`]: private keys, the [`KeySource`] seam, key facts.
//! - [`os`]: the production randomness, [`OsKeySource`] and [`os_token`].
//! - [`issue`]: root, intermediate, server and client certificates.
//! - [`inspect`]: PEM certificates and bundles into [`CertFacts`].
//! - [`verify`]: chains against root bundles with rustls-webpki.
//! - [`handshake`]: a real mTLS handshake between two certificates, in memory.
//! - [`renewal`](mod@renewal): cert-manager's renewal rule.
//! - [`assess`](mod@assess): one judgement of a leaf (key, SANs, chain, validity, renewal).
//! - [`material`]: problems with material the user provides.
//! - `testing` (tests and the `testing` feature only): a pooled
//!   [`KeySource`] that keeps tests fast.
//!
//! Each module's unit tests sit at its end; the relay chain they start from is
//! built in `fixtures` (tests only).

pub mod assess;
pub mod bundle;
pub mod handshake;
pub mod inspect;
pub mod issue;
pub mod key;
pub mod material;
pub mod os;
pub mod renewal;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod verify;

#[cfg(test)]
pub(crate) mod fixtures;

pub use assess::{Assessment, Expect, KeyMatch, Names, Window, assess, identity_is};
pub use bundle::{Bundle, short_fingerprint};
pub use handshake::{Endpoint, Established, HandshakeError, Side, mtls_handshake};
pub use inspect::{CertFacts, InspectError, inspect_bundle, inspect_certificate, key_matches};
pub use issue::{
    CLOCK_SKEW_BACKDATE, CaRequest, ClientRequest, IssueError, Issued, Issuer, ServerRequest,
    issue_client, issue_cross, issue_intermediate, issue_root, issue_server,
};
pub use key::{KeyError, KeyFacts, KeySource, MAX_PEM_INPUT, PrivateKey, inspect_private_key};
pub use material::MaterialProblem;
pub use os::{OsKeySource, os_token};
pub use renewal::{Basis, Renewal, renewal, renewal_at_ratio, renewal_due};
pub use verify::{Usage, VerifyError, issued_by, verify_chain, verify_issued};
