//! What the unit tests of the PKI share: a whole relay chain issued with the
//! pooled key source at a fixed [`NOW`], and the requests it is made of.
//!
//! Test-only (`#[cfg(test)]`), so a test of any pki module can start from a
//! real chain in a line without each module growing its own builder.

use time::OffsetDateTime;
use time::macros::datetime;

use crate::model::{DnsLabel, Duration, KeyAlgorithm};
use crate::pki::issue::{
    CaRequest, ClientRequest, Issued, Issuer, ServerRequest, issue_client, issue_intermediate,
    issue_root, issue_server,
};
use crate::pki::testing::PooledKeySource;
use crate::secret::SecretBytes;

/// The instant every fixture is issued at.
pub(crate) const NOW: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
/// The relay server's authority in the fixture chain.
pub(crate) const AUTHORITY: &str = "gloo-mesh-mgmt-server.gloo-mesh";

/// `h` hours.
pub(crate) fn hours(h: u64) -> Duration {
    Duration::from_hours(h)
}

/// A whole relay chain of one key type.
pub(crate) struct Chain {
    pub(crate) root: Issued,
    pub(crate) intermediate: Issued,
    pub(crate) server: Issued,
    pub(crate) client: Issued,
}

impl Chain {
    /// Root, signing CA, server and client certificate, all with `key` keys.
    pub(crate) fn new(key: KeyAlgorithm) -> Self {
        let keys = PooledKeySource;
        let root = issue_root(&ca("relay-root-ca", 87_600, key), &keys, NOW).expect("root");
        let intermediate = issue_intermediate(
            &ca("relay-signing-ca", 43_800, key),
            &Issuer::from_issued(&root).expect("root issuer"),
            &keys,
            NOW,
        )
        .expect("intermediate");
        let signing = Issuer::from_issued(&intermediate).expect("intermediate issuer");
        let server = issue_server(
            &ServerRequest {
                authority: AUTHORITY.to_owned(),
                dns_names: vec!["*.gloo-mesh".to_owned(), AUTHORITY.to_owned()],
                validity: hours(8760),
                key,
            },
            &signing,
            &keys,
            NOW,
        )
        .expect("server");
        let client = issue_client(
            &ClientRequest {
                cluster_name: DnsLabel::parse("cluster-1").expect("label"),
                validity: hours(8760),
                key,
            },
            &signing,
            &keys,
            NOW,
        )
        .expect("client");
        Self {
            root,
            intermediate,
            server,
            client,
        }
    }

    /// `leaf` with the intermediate after it, as a Secret holds it.
    pub(crate) fn chain_of(&self, leaf: &Issued) -> String {
        format!("{}{}", leaf.cert_pem, self.intermediate.cert_pem)
    }
}

/// A CA request for `name`, valid `validity_hours`.
pub(crate) fn ca(name: &str, validity_hours: u64, key: KeyAlgorithm) -> CaRequest {
    CaRequest {
        common_name: name.to_owned(),
        validity: hours(validity_hours),
        key,
    }
}

/// `text` as secret bytes.
pub(crate) fn secret(text: &str) -> SecretBytes {
    SecretBytes::from(text.to_owned())
}
