//! Redacting, zeroizing holders for key material and tokens.
//!
//! relayctl handles root CA keys and bootstrap tokens. Every such value lives in
//! one of these types from the moment it is read or generated: their `Debug` and
//! `Display` print `<redacted>`, they are not `Serialize`, and their memory is
//! wiped on drop. Code that needs the bytes calls `expose`, which makes each
//! read easy to find in review. What may be shown of a secret is a digest
//! prefix ([`SecretBytes::fingerprint`]), never the value.

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Bytes that must never be printed: private keys (PEM or DER) and tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are zeroized when the value drops.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes. Callers must not log, format or persist them except
    /// into the Secret they are meant for.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes, safe to show.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `sha256:` and the first 12 hex digits of the SHA-256 digest: enough to
    /// tell two values apart in a plan, useless to recover the value.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.expose());
        format!("sha256:{}", &hex::encode(digest)[..12])
    }

    /// Constant-time equality, for comparing tokens across clusters.
    pub fn ct_eq(&self, other: &Self) -> bool {
        let (a, b) = (self.expose(), other.expose());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl From<String> for SecretBytes {
    fn from(text: String) -> Self {
        Self::new(text.into_bytes())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_bytes() {
        let secret = SecretBytes::from("hunter2-very-secret".to_owned());
        for shown in [
            format!("{secret}"),
            format!("{secret:?}"),
            format!("{secret:#?}"),
            format!("{:?}", Some(&secret)),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn fingerprint_distinguishes_values_without_revealing_them() {
        let a = SecretBytes::from("a".repeat(64));
        let b = SecretBytes::from("b".repeat(64));
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(a.fingerprint().starts_with("sha256:"));
        assert!(!a.fingerprint().contains("aaaa"));
    }

    #[test]
    fn constant_time_equality_matches_plain_equality() {
        let a = SecretBytes::from("token-1".to_owned());
        assert!(a.ct_eq(&SecretBytes::from("token-1".to_owned())));
        assert!(!a.ct_eq(&SecretBytes::from("token-2".to_owned())));
        assert!(!a.ct_eq(&SecretBytes::from("token-12".to_owned())));
    }
}
