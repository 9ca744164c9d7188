//! A real mTLS handshake between the management server's certificate and an
//! agent's, in memory, with rustls (ring provider).
//!
//! Chain checks say whether each certificate is well formed and signed by the
//! right CA; only a handshake says whether the two sides, configured exactly
//! as the server and the agent configure themselves, would talk. The server
//! requires a client certificate that verifies against its `ca.crt`; the
//! client verifies the server for the authority name against its own root
//! bundle. No socket is opened: the two connections exchange bytes through
//! buffers. The clock is a parameter.

use std::io::{Read as _, Write as _};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use time::OffsetDateTime;

use crate::pki::inspect::{InspectError, certificate_ders};
use crate::pki::key::PrivateKey;

/// One side of the handshake: its certificate chain, its key and the roots
/// it verifies its peer with.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// `tls.crt`: the leaf, then its intermediates (PEM).
    pub chain_pem: &'a [u8],
    /// The leaf's private key.
    pub key: &'a PrivateKey,
    /// The root bundle this side trusts its peer with (PEM): the server's
    /// `ca.crt`, or the agent's `relay-root-tls-secret` `ca.crt`.
    pub roots_pem: &'a [u8],
}

/// Which end of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The management server.
    Server,
    /// The agent.
    Client,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Server => "server",
            Self::Client => "client",
        })
    }
}

/// What a completed handshake agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Established {
    /// e.g. `TLSv1.3`.
    pub protocol: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
}

/// Why the handshake could not be set up or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// A certificate chain is unreadable.
    #[error("cannot read the {side} certificate chain")]
    ReadChain {
        /// Whose chain.
        side: Side,
        /// Why.
        #[source]
        source: InspectError,
    },
    /// A root bundle is unreadable.
    #[error("cannot read the {side} root bundle")]
    ReadRoots {
        /// Whose bundle.
        side: Side,
        /// Why.
        #[source]
        source: InspectError,
    },
    /// A root cannot be a trust anchor.
    #[error("root {index} of the {side} root bundle cannot be used as a trust anchor")]
    BadRoot {
        /// Whose bundle.
        side: Side,
        /// 0-based position in the bundle.
        index: usize,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The private key cannot be handed to rustls.
    #[error("cannot load the {side} private key")]
    Key {
        /// Whose key.
        side: Side,
    },
    /// The name the client dials is not a valid DNS name.
    #[error("`{name}` is not a valid server name")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the leaf).
    #[error("cannot configure the {side}")]
    Configure {
        /// Which side.
        side: Side,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The server's client verifier cannot be built from its roots.
    #[error("cannot build the server's client-certificate verifier")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    /// One side aborted the handshake.
    #[error("the {side} rejected the handshake")]
    Rejected {
        /// The side that aborted.
        side: Side,
        /// rustls's reason, e.g. an invalid peer certificate.
        #[source]
        source: rustls::Error,
    },
    /// Moving bytes between the two sides failed.
    #[error("cannot exchange handshake bytes")]
    Io(#[source] std::io::Error),
    /// Neither side failed, yet the handshake did not finish.
    #[error("the handshake did not complete")]
    Incomplete,
}

/// The clock rustls sees: the `now` the caller passes.
#[derive(Debug)]
struct FixedTime(UnixTime);

impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain(side: Side, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, HandshakeError> {
    let ders =
        certificate_ders(pem).map_err(|source| HandshakeError::ReadChain { side, source })?;
    Ok(ders.into_iter().map(CertificateDer::from).collect())
}

fn roots(side: Side, pem: &[u8]) -> Result<rustls::RootCertStore, HandshakeError> {
    let ders =
        certificate_ders(pem).map_err(|source| HandshakeError::ReadRoots { side, source })?;
    let mut store = rustls::RootCertStore::empty();
    for (index, der) in ders.into_iter().enumerate() {
        store
            .add(CertificateDer::from(der))
            .map_err(|source| HandshakeError::BadRoot {
                side,
                index,
                source,
            })?;
    }
    Ok(store)
}

fn key(side: Side, key: &PrivateKey) -> Result<PrivateKeyDer<'static>, HandshakeError> {
    PrivateKeyDer::from_pem_slice(key.to_pkcs8_pem().expose())
        .map_err(|_| HandshakeError::Key { side })
}

/// Runs a full mTLS handshake between `server` and `client`, the client
/// dialling `server_name`, with both sides' clocks at `now`, then sends
/// application data both ways to prove it completed.
///
/// The server requires a client certificate that verifies against
/// `server.roots_pem` (as the management server does with its `ca.crt`);
/// the client verifies the server for `server_name` against
/// `client.roots_pem` (as the agent does with its root bundle).
pub fn mtls_handshake(
    server: &Endpoint<'_>,
    client: &Endpoint<'_>,
    server_name: &str,
    now: OffsetDateTime,
) -> Result<Established, HandshakeError> {
    let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let clock = Arc::new(FixedTime(UnixTime::since_unix_epoch(
        std::time::Duration::from_secs(seconds),
    )));
    let name =
        ServerName::try_from(server_name.to_owned()).map_err(|_| HandshakeError::InvalidName {
            name: server_name.to_owned(),
        })?;

    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(Side::Server, server.roots_pem)?),
        provider(),
    )
    .build()
    .map_err(HandshakeError::ClientVerifier)?;
    let configure = |side| move |source| HandshakeError::Configure { side, source };
    let server_config = rustls::ServerConfig::builder_with_details(provider(), clock.clone())
        .with_safe_default_protocol_versions()
        .map_err(configure(Side::Server))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            chain(Side::Server, server.chain_pem)?,
            key(Side::Server, server.key)?,
        )
        .map_err(configure(Side::Server))?;
    let client_config = rustls::ClientConfig::builder_with_details(provider(), clock)
        .with_safe_default_protocol_versions()
        .map_err(configure(Side::Client))?
        .with_root_certificates(roots(Side::Client, client.roots_pem)?)
        .with_client_auth_cert(
            chain(Side::Client, client.chain_pem)?,
            key(Side::Client, client.key)?,
        )
        .map_err(configure(Side::Client))?;

    let mut client_conn = rustls::ClientConnection::new(Arc::new(client_config), name)
        .map_err(configure(Side::Client))?;
    let mut server_conn =
        rustls::ServerConnection::new(Arc::new(server_config)).map_err(configure(Side::Server))?;
    exchange(&mut server_conn, &mut client_conn)?;
    let protocol = client_conn
        .protocol_version()
        .map(protocol_name)
        .unwrap_or_default();
    let cipher_suite = client_conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    Ok(Established {
        protocol,
        cipher_suite,
    })
}

/// `TLSv1.3` rather than rustls's `TLSv1_3`.
fn protocol_name(version: rustls::ProtocolVersion) -> String {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Shuttles bytes until both sides finished the handshake and each read the
/// other's application data, or one side fails.
fn exchange(
    server: &mut rustls::ServerConnection,
    client: &mut rustls::ClientConnection,
) -> Result<(), HandshakeError> {
    const PING: &[u8] = b"relayctl-check-ping";
    const PONG: &[u8] = b"relayctl-check-pong";
    let rejected = |side| move |source| HandshakeError::Rejected { side, source };
    client
        .writer()
        .write_all(PING)
        .map_err(HandshakeError::Io)?;
    let mut server_got = Vec::new();
    let mut client_got = Vec::new();
    let mut pong_sent = false;
    for _ in 0..32 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).map_err(HandshakeError::Io)?;
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).map_err(HandshakeError::Io)?;
            server
                .process_new_packets()
                .map_err(rejected(Side::Server))?;
        }
        read_available(server.reader(), &mut server_got)?;
        if !pong_sent && !server.is_handshaking() && server_got.starts_with(PING) {
            server
                .writer()
                .write_all(PONG)
                .map_err(HandshakeError::Io)?;
            pong_sent = true;
        }

        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).map_err(HandshakeError::Io)?;
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).map_err(HandshakeError::Io)?;
            client
                .process_new_packets()
                .map_err(rejected(Side::Client))?;
        }
        read_available(client.reader(), &mut client_got)?;
        if server_got.as_slice() == PING && client_got.as_slice() == PONG {
            return Ok(());
        }
    }
    Err(HandshakeError::Incomplete)
}

/// Appends whatever plaintext is ready; "nothing yet" is not an error.
fn read_available(
    mut reader: rustls::Reader<'_>,
    into: &mut Vec<u8>,
) -> Result<(), HandshakeError> {
    let mut buf = [0u8; 64];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(HandshakeError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClusterName, Duration, KeyAlgorithm};
    use crate::pki::fixtures::AUTHORITY;
    use crate::pki::testing::PooledKeySource;
    use crate::pki::{
        CaRequest, ClientRequest, Issued, Issuer, ServerRequest, issue_client, issue_intermediate,
        issue_root, issue_server,
    };

    struct Pki {
        root: Issued,
        signing: Issuer,
        server: Issued,
        client: Issued,
    }

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2030-01-01 00:00 UTC)
    }

    /// A fresh PKI; ECDSA keys come from the OS so that two PKIs never share
    /// a key (the test pool hands the same few keys out in turn).
    fn issue(key: KeyAlgorithm, authority: &str, cluster: &str, client_hours: u64) -> Pki {
        let keys: &dyn crate::pki::KeySource = match key {
            KeyAlgorithm::EcdsaP256 => &crate::pki::OsKeySource,
            _ => &PooledKeySource,
        };
        let ca = |cn: &str, hours| CaRequest {
            common_name: cn.to_owned(),
            validity: Duration::from_hours(hours),
            key,
        };
        let root = issue_root(&ca("root", 87_600), keys, now()).unwrap_or_else(|e| panic!("{e}"));
        let root_issuer = Issuer::from_issued(&root).unwrap_or_else(|e| panic!("{e}"));
        let inter = issue_intermediate(&ca("signing", 43_800), &root_issuer, keys, now())
            .unwrap_or_else(|e| panic!("{e}"));
        let signing = Issuer::from_issued(&inter).unwrap_or_else(|e| panic!("{e}"));
        let server = issue_server(
            &ServerRequest {
                authority: authority.to_owned(),
                dns_names: Vec::new(),
                validity: Duration::from_hours(8760),
                key,
            },
            &signing,
            keys,
            now(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let client = issue_client(
            &ClientRequest {
                cluster_name: ClusterName::parse(cluster).unwrap_or_else(|e| panic!("{e}")),
                validity: Duration::from_hours(client_hours),
                key,
            },
            &signing,
            keys,
            now(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Pki {
            root,
            signing,
            server,
            client,
        }
    }

    impl Pki {
        fn chain(&self, leaf: &Issued) -> String {
            format!("{}{}", leaf.cert_pem, self.signing.cert_pem())
        }

        fn run(
            &self,
            client_roots: &str,
            name: &str,
            at: OffsetDateTime,
        ) -> Result<Established, HandshakeError> {
            let server_chain = self.chain(&self.server);
            let client_chain = self.chain(&self.client);
            mtls_handshake(
                &Endpoint {
                    chain_pem: server_chain.as_bytes(),
                    key: &self.server.key,
                    roots_pem: self.root.cert_pem.as_bytes(),
                },
                &Endpoint {
                    chain_pem: client_chain.as_bytes(),
                    key: &self.client.key,
                    roots_pem: client_roots.as_bytes(),
                },
                name,
                at,
            )
        }
    }

    fn chain_text(err: &HandshakeError) -> String {
        crate::error::error_chain(err)
    }

    #[test]
    fn matching_certificates_complete_a_handshake_with_every_key_type() {
        for key in KeyAlgorithm::ALL {
            let pki = issue(key, AUTHORITY, "cluster-1", 2160);
            let done = pki
                .run(&pki.root.cert_pem, AUTHORITY, now())
                .unwrap_or_else(|e| panic!("{key}: {}", chain_text(&e)));
            assert!(done.protocol.starts_with("TLSv1."), "{done:?}");
            assert!(!done.cipher_suite.is_empty());
        }
    }

    #[test]
    fn the_client_rejects_a_server_that_does_not_cover_the_authority() {
        let pki = issue(
            KeyAlgorithm::EcdsaP256,
            "other.example.com",
            "cluster-1",
            2160,
        );
        let err = pki.run(&pki.root.cert_pem, AUTHORITY, now()).unwrap_err();
        assert!(
            matches!(
                err,
                HandshakeError::Rejected {
                    side: Side::Client,
                    ..
                }
            ),
            "{}",
            chain_text(&err)
        );
        assert!(
            chain_text(&err).contains("not valid for name"),
            "{}",
            chain_text(&err)
        );
    }

    #[test]
    fn the_client_rejects_a_server_from_another_root() {
        let pki = issue(KeyAlgorithm::EcdsaP256, AUTHORITY, "cluster-1", 2160);
        let other = issue(KeyAlgorithm::EcdsaP256, AUTHORITY, "cluster-1", 2160);
        let err = pki.run(&other.root.cert_pem, AUTHORITY, now()).unwrap_err();
        assert!(
            matches!(
                err,
                HandshakeError::Rejected {
                    side: Side::Client,
                    ..
                }
            ),
            "{}",
            chain_text(&err)
        );
        assert!(
            chain_text(&err).contains("invalid peer certificate"),
            "{}",
            chain_text(&err)
        );
    }

    #[test]
    fn the_server_rejects_a_client_from_another_root() {
        let pki = issue(KeyAlgorithm::EcdsaP256, AUTHORITY, "cluster-1", 2160);
        let other = issue(KeyAlgorithm::EcdsaP256, AUTHORITY, "cluster-1", 2160);
        let mixed = Pki {
            root: pki.root.clone(),
            signing: pki.signing.clone(),
            server: pki.server.clone(),
            client: other.client.clone(),
        };
        // The client chain carries `pki`'s intermediate but the leaf is signed by `other`'s.
        let err = mixed.run(&pki.root.cert_pem, AUTHORITY, now()).unwrap_err();
        assert!(
            matches!(
                err,
                HandshakeError::Rejected {
                    side: Side::Server,
                    ..
                }
            ),
            "{}",
            chain_text(&err)
        );
    }

    #[test]
    fn the_clock_is_the_one_passed_in() {
        let pki = issue(KeyAlgorithm::EcdsaP256, AUTHORITY, "cluster-1", 24);
        pki.run(&pki.root.cert_pem, AUTHORITY, now())
            .unwrap_or_else(|e| panic!("{}", chain_text(&e)));
        let later = now() + time::Duration::days(2);
        let err = pki.run(&pki.root.cert_pem, AUTHORITY, later).unwrap_err();
        assert!(
            matches!(
                err,
                HandshakeError::Rejected {
                    side: Side::Server,
                    ..
                }
            ),
            "{}",
            chain_text(&err)
        );
        assert!(chain_text(&err).contains("expired"), "{}", chain_text(&err));
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_refused_up_front() {
        let pki = issue(KeyAlgorithm::EcdsaP256, AUTHORITY, "cluster-1", 2160);
        let swapped = Pki {
            root: pki.root.clone(),
            signing: pki.signing.clone(),
            server: Issued {
                key: pki.client.key.clone(),
                ..pki.server.clone()
            },
            client: pki.client.clone(),
        };
        let err = swapped
            .run(&pki.root.cert_pem, AUTHORITY, now())
            .unwrap_err();
        assert!(
            matches!(
                err,
                HandshakeError::Configure {
                    side: Side::Server,
                    ..
                }
            ),
            "{}",
            chain_text(&err)
        );
    }

    #[test]
    fn errors_never_show_key_material() {
        let pki = issue(
            KeyAlgorithm::EcdsaP256,
            "other.example.com",
            "cluster-1",
            2160,
        );
        let err = pki.run(&pki.root.cert_pem, AUTHORITY, now()).unwrap_err();
        let shown = format!("{} {err:?}", chain_text(&err));
        let key = String::from_utf8_lossy(pki.client.key.to_pkcs8_pem().expose()).into_owned();
        for line in key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!shown.contains(line));
        }
    }
}
