//! User material: arbitrary bytes as a certificate bundle, a private key and a
//! token, through every checker with a fixed clock. Must never panic.
//!
//! The whole input is given to each function; in addition, when the input
//! holds a 0x00 byte, the part before it is taken as the certificate and the
//! part after it as the key, so the key-matching paths are reached too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayctl::pki::{self, PrivateKey, material};
use relayctl::secret::SecretBytes;
use time::OffsetDateTime;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-06-01 00:00 UTC);
const AUTHORITY: &str = "gloo-mesh-mgmt-server.gloo-mesh";
const CLUSTER: &str = "cluster-1";

fuzz_target!(|data: &[u8]| {
    let _ = pki::inspect_bundle(data);
    let secret = SecretBytes::new(data.to_vec());
    let _ = PrivateKey::from_pem(&secret);
    let _ = pki::inspect_private_key(&secret);
    let _ = material::check_ca(data, None, None, NOW);
    let _ = material::check_server(data, None, AUTHORITY, NOW);
    let _ = material::check_client(data, None, CLUSTER, NOW);
    let _ = relayctl::material::token_problem(&secret);

    if let Some(split) = data.iter().position(|b| *b == 0) {
        let (cert, key) = (&data[..split], &data[split + 1..]);
        let key = SecretBytes::new(key.to_vec());
        let _ = material::check_ca(cert, Some(&key), None, NOW);
        let _ = material::check_server(cert, Some(&key), AUTHORITY, NOW);
        let _ = material::check_client(cert, Some(&key), CLUSTER, NOW);
        let _ = material::check_key_pair(cert, &key);
        let _ = material::check_issued_by_root(cert, key.expose());
    }
});
