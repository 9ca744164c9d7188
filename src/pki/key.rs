//! Private keys: generation behind an injectable [`KeySource`], PEM reading in
//! the encodings Secrets carry, and the public facts that may be shown.
//!
//! A [`PrivateKey`] always holds PKCS#8 PEM inside [`SecretBytes`], whatever it
//! was read from: that is what rcgen/ring sign with and what relayctl writes to
//! `tls.key`. What may be printed about a key is its algorithm and the SHA-256
//! fingerprint of its public key (SPKI), never the key.

use std::fmt;

use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::EncodePrivateKey as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer as _;
use zeroize::Zeroizing;

use crate::model::KeyAlgorithm;
use crate::secret::SecretBytes;

/// The largest PEM input relayctl reads (certificates, bundles, keys): 1 MiB.
/// Real Secret values are a few KiB; anything bigger is a mistake or an attack.
pub const MAX_PEM_INPUT: usize = 1 << 20;

/// A failure to generate, read or use a private key. Messages never contain key
/// bytes; causes from PEM/DER decoders that could echo input are dropped.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The OS random generator or the key generator failed.
    #[error("could not generate a `{algorithm}` key")]
    Generate {
        /// The algorithm asked for.
        algorithm: KeyAlgorithm,
        /// What failed (contains no key bytes).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The input exceeds [`MAX_PEM_INPUT`].
    #[error("private key input is {size} bytes; at most {max} are accepted")]
    TooLarge {
        /// Input size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// No complete PEM block was found.
    #[error("private key input holds no complete PEM block ({what})")]
    NoPem {
        /// Why, without any input bytes: empty, truncated, not PEM.
        what: &'static str,
    },
    /// More than one PEM block where one key was expected.
    #[error("private key input holds {count} PEM blocks; expected exactly one key")]
    SeveralBlocks {
        /// How many blocks were found.
        count: usize,
    },
    /// A PEM block with a label that is not a private key.
    #[error(
        "PEM block is labelled `{label}`; expected `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`"
    )]
    WrongLabel {
        /// The label found (labels are not secret).
        label: String,
    },
    /// Encrypted keys need a passphrase relayctl does not take.
    #[error("private key is encrypted; provide it unencrypted (in a Secret, not in Git)")]
    Encrypted,
    /// The DER inside the PEM block is not a key ring/rsa accept.
    #[error(
        "private key labelled `{label}` could not be decoded (truncated, corrupt or unsupported)"
    )]
    Decode {
        /// The PEM label.
        label: String,
    },
    /// A key of a type or size relayctl does not issue with.
    #[error(
        "private key is {found}; supported: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096"
    )]
    Unsupported {
        /// What it is, e.g. `rsa-1024` or `ed25519`.
        found: String,
    },
    /// rcgen/ring refused the key for signing.
    #[error("could not load the `{algorithm}` private key for signing")]
    Load {
        /// The key's algorithm.
        algorithm: KeyAlgorithm,
        /// rcgen's reason (a fixed string, no key bytes).
        #[source]
        source: rcgen::Error,
    },
}

/// Key generation and serial-number randomness, injected so the PKI core stays
/// deterministic to test and free of hidden OS calls.
pub trait KeySource: Sync {
    /// A fresh key pair of `algorithm`.
    fn generate(&self, algorithm: KeyAlgorithm) -> Result<PrivateKey, KeyError>;
    /// 128 random bits for a certificate serial number.
    fn serial(&self) -> [u8; 16];
}

/// A private key of a supported algorithm, held as PKCS#8 PEM in [`SecretBytes`].
///
/// `Debug` shows the algorithm and public-key fingerprint only; the memory of
/// the PEM is zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey {
    algorithm: KeyAlgorithm,
    pkcs8_pem: SecretBytes,
    spki_der: Vec<u8>,
}

impl PrivateKey {
    /// Reads a key from PKCS#8 DER (`PRIVATE KEY`).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = rcgen::KeyPair::try_from(der).map_err(|_| KeyError::Decode {
            label: "PRIVATE KEY".to_owned(),
        })?;
        let spki_der = rcgen::PublicKeyData::subject_public_key_info(&pair);
        let algorithm = match describe_spki(&spki_der) {
            PublicKeyKind::Supported(algorithm) => algorithm,
            PublicKeyKind::Other(found) => return Err(KeyError::Unsupported { found }),
        };
        Ok(Self {
            algorithm,
            pkcs8_pem: SecretBytes::new(encode_pem("PRIVATE KEY", der).to_vec()),
            spki_der,
        })
    }

    /// Reads one private key from PEM as it appears in a Secret's `tls.key`:
    /// PKCS#8 (`PRIVATE KEY`), PKCS#1 RSA (`RSA PRIVATE KEY`, cert-manager's
    /// default) or SEC1 EC (`EC PRIVATE KEY`, `openssl ecparam`'s output).
    /// Anything else is a typed error; the bytes never reach the message.
    pub fn from_pem(input: &SecretBytes) -> Result<Self, KeyError> {
        if input.len() > MAX_PEM_INPUT {
            return Err(KeyError::TooLarge {
                size: input.len(),
                max: MAX_PEM_INPUT,
            });
        }
        let text = input.expose();
        if text.iter().all(u8::is_ascii_whitespace) {
            return Err(KeyError::NoPem { what: "empty" });
        }
        let blocks = pem::parse_many(text).map_err(|_| KeyError::NoPem {
            what: "malformed PEM framing or base64",
        })?;
        let begins = count_begin_markers(text);
        let mut blocks = blocks.into_iter();
        let (Some(block), None) = (blocks.next(), blocks.next()) else {
            return match begins {
                0 => Err(KeyError::NoPem {
                    what: "no BEGIN line",
                }),
                1 => Err(KeyError::NoPem {
                    what: "truncated: BEGIN without END",
                }),
                count => Err(KeyError::SeveralBlocks { count }),
            };
        };
        if begins > 1 {
            return Err(KeyError::SeveralBlocks { count: begins });
        }
        let label = block.tag().to_owned();
        let der = Zeroizing::new(block.into_contents());
        match label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "RSA PRIVATE KEY" => {
                let key = rsa::PrivateKey::from_pkcs1_der(&der).map_err(|_| KeyError::Decode {
                    label: label.clone(),
                })?;
                let document = key.to_pkcs8_der().map_err(|_| KeyError::Decode {
                    label: label.clone(),
                })?;
                Self::from_pkcs8_der(document.as_bytes())
            }
            "EC PRIVATE KEY" => {
                // ring reads only PKCS#8; wrap the SEC1 structure for each
                // supported curve and keep the one ring accepts (it checks the
                // key against the curve).
                [OID_PRIME256V1, OID_SECP384R1]
                    .iter()
                    .find_map(|curve| Self::from_pkcs8_der(&wrap_sec1(&der, curve)).ok())
                    .ok_or(KeyError::Decode { label })
            }
            "ENCRYPTED PRIVATE KEY" => Err(KeyError::Encrypted),
            _ => Err(KeyError::WrongLabel { label }),
        }
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The PKCS#8 PEM, for writing into a Secret's `tls.key`.
    pub fn to_pkcs8_pem(&self) -> &SecretBytes {
        &self.pkcs8_pem
    }

    /// The DER SubjectPublicKeyInfo of the public half (not secret).
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// What may be shown about the key.
    pub fn facts(&self) -> KeyFacts {
        KeyFacts {
            algorithm: self.algorithm,
            spki_sha256: spki_fingerprint(&self.spki_der),
        }
    }

    /// An rcgen key pair for signing. It lives only as long as one signing
    /// operation (ring's key types do not zeroize; keep them short-lived).
    pub(crate) fn key_pair(&self) -> Result<rcgen::KeyPair, KeyError> {
        let der = pem::parse(self.pkcs8_pem.expose()).map_err(|_| KeyError::Decode {
            label: "PRIVATE KEY".to_owned(),
        })?;
        let der = Zeroizing::new(der.into_contents());
        rcgen::KeyPair::try_from(der.as_slice()).map_err(|source| KeyError::Load {
            algorithm: self.algorithm,
            source,
        })
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .field("spki_sha256", &spki_fingerprint(&self.spki_der))
            .field("pkcs8", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} key>", self.algorithm)
    }
}

/// The public facts of a private key: safe to print and serialize.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyFacts {
    /// The key's algorithm.
    pub algorithm: KeyAlgorithm,
    /// SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex; equal to
    /// [`CertFacts::spki_sha256`](crate::pki::CertFacts::spki_sha256) of a
    /// certificate for this key.
    pub spki_sha256: String,
}

/// Reads `input` as one PEM private key and returns its public facts.
pub fn inspect_private_key(input: &SecretBytes) -> Result<KeyFacts, KeyError> {
    PrivateKey::from_pem(input).map(|key| key.facts())
}

/// SHA-256 of a DER SubjectPublicKeyInfo, lowercase hex.
pub fn spki_fingerprint(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

/// What a public key is, as far as relayctl cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublicKeyKind {
    /// A type relayctl issues with.
    Supported(KeyAlgorithm),
    /// Anything else, described (`rsa-1024`, `ed25519`, `ec-<oid>`, `<oid>`).
    Other(String),
}

impl PublicKeyKind {
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Supported(algorithm) => algorithm.as_str().to_owned(),
            Self::Other(text) => text.clone(),
        }
    }
}

const OID_PRIME256V1: &str = "1.2.840.10045.3.1.7";
const OID_SECP384R1: &str = "1.3.132.0.34";

/// Classifies a DER SubjectPublicKeyInfo.
pub(crate) fn describe_spki(spki_der: &[u8]) -> PublicKeyKind {
    let Ok((_, spki)) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der) else {
        return PublicKeyKind::Other("unparseable".to_owned());
    };
    classify_spki(&spki)
}

pub(crate) fn classify_spki(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> PublicKeyKind {
    let oid = spki.algorithm.algorithm.to_id_string();
    match oid.as_str() {
        "1.2.840.113549.1.1.1" => {
            let bits = spki.parsed().map(|key| key.key_size()).unwrap_or(0);
            match bits {
                2048 => PublicKeyKind::Supported(KeyAlgorithm::Rsa2048),
                3072 => PublicKeyKind::Supported(KeyAlgorithm::Rsa3072),
                4096 => PublicKeyKind::Supported(KeyAlgorithm::Rsa4096),
                other => PublicKeyKind::Other(format!("rsa-{other}")),
            }
        }
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|any| any.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_PRIME256V1 => PublicKeyKind::Supported(KeyAlgorithm::EcdsaP256),
                OID_SECP384R1 => PublicKeyKind::Supported(KeyAlgorithm::EcdsaP384),
                "1.3.132.0.35" => PublicKeyKind::Other("ecdsa-p521".to_owned()),
                other => PublicKeyKind::Other(format!("ec-{other}")),
            }
        }
        "1.3.101.112" => PublicKeyKind::Other("ed25519".to_owned()),
        "1.2.840.113549.1.1.10" => PublicKeyKind::Other("rsa-pss".to_owned()),
        other => PublicKeyKind::Other(other.to_owned()),
    }
}

/// PEM-encodes `der` into zeroizing memory (64-column base64, LF endings).
pub(crate) fn encode_pem(label: &str, der: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut body = Zeroizing::new(String::new());
    base64::engine::general_purpose::STANDARD.encode_string(der, &mut body);
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() + body.len() / 64 + 64));
    out.extend_from_slice(format!("-----BEGIN {label}-----\n").as_bytes());
    for line in body.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(format!("-----END {label}-----\n").as_bytes());
    out
}

/// Number of `-----BEGIN ` markers in `input`: tells a truncated block (the
/// PEM parser silently skips it) from no PEM at all.
pub(crate) fn count_begin_markers(input: &[u8]) -> usize {
    input
        .windows(b"-----BEGIN ".len())
        .filter(|window| *window == b"-----BEGIN ")
        .count()
}

/// Wraps a SEC1 `ECPrivateKey` in a PKCS#8 `PrivateKeyInfo` for `curve`.
fn wrap_sec1(sec1: &[u8], curve: &str) -> Zeroizing<Vec<u8>> {
    let curve_oid: &[u8] = if curve == OID_PRIME256V1 {
        &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
    } else {
        &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]
    };
    let ec_public_key: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let algorithm = der_tlv(0x30, &[ec_public_key, curve_oid].concat());
    let version: &[u8] = &[0x02, 0x01, 0x00];
    let octets = der_tlv(0x04, sec1);
    let inner = Zeroizing::new([version, algorithm.as_slice(), octets.as_slice()].concat());
    der_tlv(0x30, &inner)
}

fn der_tlv(tag: u8, content: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(content.len() + 6));
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::fixtures::{Chain, NOW, ca, secret};
    use crate::pki::issue::{Issuer, issue_root};
    use crate::pki::material;
    use crate::pki::testing::PooledKeySource;

    #[test]
    fn os_key_source_gives_distinct_serials_and_keys() {
        let a = issue_root(
            &ca("a", 24, KeyAlgorithm::EcdsaP256),
            &crate::pki::OsKeySource,
            NOW,
        )
        .expect("a");
        let b = issue_root(
            &ca("a", 24, KeyAlgorithm::EcdsaP256),
            &crate::pki::OsKeySource,
            NOW,
        )
        .expect("b");
        assert_ne!(a.facts.serial, b.facts.serial);
        assert_ne!(a.facts.spki_sha256, b.facts.spki_sha256);
    }

    #[test]
    fn private_keys_read_every_secret_encoding_and_reject_the_rest() {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::pkcs8::DecodePrivateKey as _;

        let rsa_key = PooledKeySource
            .generate(KeyAlgorithm::Rsa2048)
            .expect("rsa");
        let pkcs8 = rsa_key.to_pkcs8_pem().clone();
        assert_eq!(inspect_private_key(&pkcs8).expect("pkcs8"), rsa_key.facts());
        let pem_text = std::str::from_utf8(pkcs8.expose()).expect("utf8");
        let parsed = rsa::PrivateKey::from_pkcs8_pem(pem_text).expect("rsa parse");
        let pkcs1 = parsed
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .expect("pkcs1");
        let pkcs1 = SecretBytes::from(pkcs1.as_str().to_owned());
        assert_eq!(inspect_private_key(&pkcs1).expect("pkcs1"), rsa_key.facts());

        let err = |input: &str| inspect_private_key(&secret(input)).expect_err(input);
        assert!(matches!(err(""), KeyError::NoPem { .. }));
        assert!(matches!(err("garbage"), KeyError::NoPem { .. }));
        assert!(matches!(
            err(&pem_text[..pem_text.len() / 2]),
            KeyError::NoPem { .. }
        ));
        let chain = Chain::new(KeyAlgorithm::EcdsaP256);
        assert!(matches!(
            err(&chain.root.cert_pem),
            KeyError::WrongLabel { .. }
        ));
        assert!(matches!(
            err(&format!("{pem_text}{pem_text}")),
            KeyError::SeveralBlocks { count: 2 }
        ));
        let encrypted = pem::encode(&pem::Pem::new("ENCRYPTED PRIVATE KEY", vec![1, 2, 3]));
        assert!(matches!(err(&encrypted), KeyError::Encrypted));
        let corrupt = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![0x30, 0x01, 0]));
        assert!(matches!(err(&corrupt), KeyError::Decode { .. }));
        let huge = SecretBytes::new(vec![b'A'; MAX_PEM_INPUT + 1]);
        assert!(matches!(
            inspect_private_key(&huge),
            Err(KeyError::TooLarge { .. })
        ));
    }

    /// Every way the private part of `key` could leak into text: fragments of
    /// its PEM, base64 body and DER hex that do not also occur in `public` (the
    /// certificates, which share algorithm identifiers and the public key).
    fn private_fragments(key: &PrivateKey, public: &str) -> Vec<String> {
        let fragments: Vec<String> = key_fragments(key)
            .into_iter()
            .filter(|fragment| !public.contains(fragment.as_str()))
            .collect();
        assert!(
            fragments.len() > 20,
            "too few private fragments to be a test"
        );
        fragments
    }

    fn key_fragments(key: &PrivateKey) -> Vec<String> {
        let pem_text = String::from_utf8(key.to_pkcs8_pem().expose().to_vec()).expect("utf8");
        let body: String = pem_text
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = pem::parse(&pem_text).expect("pem").into_contents();
        let der_hex = hex::encode(&der);
        let mut fragments = vec![pem_text.clone(), body.clone(), der_hex.clone()];
        // Any 16 consecutive base64 characters or 16 hex digits (8 bytes) of the
        // key, not only the whole value, and the raw bytes as Debug would list them.
        fragments.extend(
            body.as_bytes()
                .windows(16)
                .step_by(4)
                .map(|w| String::from_utf8_lossy(w).into_owned()),
        );
        fragments.extend(
            der_hex
                .as_bytes()
                .windows(16)
                .step_by(2)
                .map(|w| String::from_utf8_lossy(w).into_owned()),
        );
        fragments.push(format!("{:?}", &der[der.len() - 8..]));
        fragments
    }

    #[test]
    fn no_key_byte_appears_in_any_formatting() {
        for algorithm in KeyAlgorithm::ALL {
            let chain = Chain::new(algorithm);
            let issuer = Issuer::from_issued(&chain.intermediate).expect("issuer");
            let key_pem = chain.client.key.to_pkcs8_pem().clone();
            let shown = [
                format!("{:?}", chain.root),
                format!("{:#?}", chain.root),
                format!("{:?}", chain.client),
                format!("{:#?}", chain.intermediate),
                format!("{:?}", chain.client.key),
                format!("{:#?}", chain.client.key),
                format!("{}", chain.client.key),
                format!("{issuer:?}"),
                format!("{issuer:#?}"),
                format!("{key_pem:?}"),
                format!("{key_pem}"),
                format!("{:?}", inspect_private_key(&key_pem)),
                format!("{:?}", chain.client.key.facts()),
                serde_json::to_string(&chain.client.facts).expect("json"),
                format!(
                    "{:?}",
                    material::check_key_pair(chain.root.cert_pem.as_bytes(), &key_pem)
                ),
            ];
            let mut public = String::new();
            for issued in [
                &chain.root,
                &chain.intermediate,
                &chain.server,
                &chain.client,
            ] {
                public.push_str(&issued.cert_pem);
                let der =
                    crate::pki::inspect::certificate_ders(issued.cert_pem.as_bytes()).expect("der");
                public.push_str(&hex::encode(&der[0]));
                public.push_str(&format!("{:?}", der[0]));
                public.push_str(&hex::encode(issued.key.public_key_der()));
            }
            for key in [
                &chain.root.key,
                &chain.intermediate.key,
                &chain.server.key,
                &chain.client.key,
            ] {
                for fragment in private_fragments(key, &public) {
                    for text in &shown {
                        assert!(
                            !text.contains(&fragment),
                            "{algorithm}: key fragment `{fragment}` leaked into `{text}`"
                        );
                    }
                }
            }
            assert!(shown[4].contains("<redacted>"), "{}", shown[4]);
        }
    }

    #[test]
    fn errors_about_keys_never_echo_the_input() {
        let key = PooledKeySource
            .generate(KeyAlgorithm::EcdsaP256)
            .expect("key");
        let text = String::from_utf8(key.to_pkcs8_pem().expose().to_vec()).expect("utf8");
        // Corrupt one base64 character in the middle of the body.
        let mut corrupt = text.clone().into_bytes();
        let middle = corrupt.len() / 2;
        corrupt[middle] = b'!';
        for input in [corrupt, text.as_bytes()[..text.len() - 30].to_vec()] {
            let error = inspect_private_key(&SecretBytes::new(input)).expect_err("broken key");
            let mut message = format!("{error} {error:?}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            for fragment in key_fragments(&key) {
                assert!(!message.contains(&fragment), "{message}");
            }
        }
    }
}
