//! The production sources of randomness, side by side: key pairs and
//! serials ([`OsKeySource`]) and identity tokens ([`os_token`]), all from
//! the operating system's CSPRNG. The rest of `pki` and the planner receive
//! randomness only through [`KeySource`] and a token function, so tests
//! inject their own and planning stays deterministic; only the shell builds
//! these.

use rand::TryRng as _;
use rsa::pkcs8::EncodePrivateKey as _;
use zeroize::Zeroizing;

use crate::model::KeyAlgorithm;
use crate::pki::key::{KeyError, KeySource, PrivateKey};
use crate::secret::SecretBytes;

/// The production [`KeySource`]: ECDSA keys from ring (via rcgen, `SystemRandom`),
/// RSA keys from the `rsa` crate with the OS RNG (ring cannot generate RSA keys),
/// serials from the OS RNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsKeySource;

impl KeySource for OsKeySource {
    fn generate(&self, algorithm: KeyAlgorithm) -> Result<PrivateKey, KeyError> {
        generate_with_os_rng(algorithm)
    }

    fn serial(&self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        let mut rng = rand::rngs::SysRng;
        if rng.try_fill_bytes(&mut bytes).is_err() {
            // getrandom failing means the OS cannot provide randomness at all;
            // issuing certificates with a predictable serial would be worse.
            panic!("the OS random number generator failed");
        }
        bytes
    }
}

/// Generates a key of `algorithm` with the OS RNG (what [`OsKeySource`] does).
pub(crate) fn generate_with_os_rng(algorithm: KeyAlgorithm) -> Result<PrivateKey, KeyError> {
    let generate_error =
        |source: Box<dyn std::error::Error + Send + Sync>| KeyError::Generate { algorithm, source };
    let der: Zeroizing<Vec<u8>> = match algorithm {
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
            let signature = if algorithm == KeyAlgorithm::EcdsaP256 {
                &rcgen::PKCS_ECDSA_P256_SHA256
            } else {
                &rcgen::PKCS_ECDSA_P384_SHA384
            };
            let pair =
                rcgen::KeyPair::generate_for(signature).map_err(|e| generate_error(Box::new(e)))?;
            Zeroizing::new(pair.serialize_der())
        }
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            let bits = rsa_bits(algorithm);
            let key = rsa::PrivateKey::new(&mut rand::rngs::SysRng, bits)
                .map_err(|e| generate_error(e.to_string().into()))?;
            let document = key
                .to_pkcs8_der()
                .map_err(|e| generate_error(e.to_string().into()))?;
            Zeroizing::new(document.as_bytes().to_vec())
        }
    };
    PrivateKey::from_pkcs8_der(&der)
}

fn rsa_bits(algorithm: KeyAlgorithm) -> usize {
    match algorithm {
        KeyAlgorithm::Rsa3072 => 3072,
        KeyAlgorithm::Rsa4096 => 4096,
        _ => 2048,
    }
}

/// A new identity token: 256 bits from the OS, as 64 hex characters.
pub fn os_token() -> SecretBytes {
    let mut bytes = Zeroizing::new([0u8; 32]);
    if rand::rngs::SysRng.try_fill_bytes(bytes.as_mut()).is_err() {
        // Without OS randomness no token may be generated at all.
        panic!("the OS random number generator failed");
    }
    SecretBytes::from(hex::encode(bytes.as_ref()))
}
