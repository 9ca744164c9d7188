//! Readiness probes: etcd's `/health` over plain HTTP and the apiserver's
//! `/readyz` over TLS with the admin client certificate.
//!
//! Tiny blocking HTTP/1.1 GETs; a full HTTP client would be a heavy
//! dependency for two requests.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::pki::CertAndKey;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Whether etcd on `port` reports itself healthy.
pub(crate) fn etcd_healthy(port: u16) -> bool {
    let Ok(mut stream) = connect(port) else {
        return false;
    };
    match get(&mut stream, "/health") {
        Ok((200, body)) => body.contains("\"health\":\"true\""),
        _ => false,
    }
}

/// A TLS client that trusts one cluster's CA and presents its admin cert.
pub(crate) fn tls_client(ca_pem: &str, client: &CertAndKey) -> io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(io::Error::other)?)
            .map_err(io::Error::other)?;
    }
    let chain = CertificateDer::pem_slice_iter(client.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(io::Error::other)?;
    let key = PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).map_err(io::Error::other)?;
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(io::Error::other)?;
    Ok(Arc::new(config))
}

/// GETs `path` from the apiserver on `port`; returns status and body.
pub(crate) fn apiserver_get(
    tls: &Arc<ClientConfig>,
    port: u16,
    path: &str,
) -> io::Result<(u16, String)> {
    let server_name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let conn = ClientConnection::new(Arc::clone(tls), server_name).map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(conn, connect(port)?);
    get(&mut stream, path)
}

fn connect(port: u16) -> io::Result<TcpStream> {
    let stream =
        TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

fn get(stream: &mut impl ReadWrite, path: &str) -> io::Result<(u16, String)> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        // Servers may close TCP without a TLS close_notify; the response is
        // complete by then because we asked for `Connection: close`.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status line"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}
