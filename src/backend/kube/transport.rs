//! The HTTP stack under each cluster's `kube::Client`: kube's own layers
//! (base URI, credentials, extra headers) over a connection pool that speaks
//! HTTP/2 when the API server offers it in ALPN, as client-go does, and
//! HTTP/1.1 otherwise.
//!
//! kube's default stack speaks HTTP/1.1 only. There, requests sent at once
//! to one cluster (the GETs of an observation) each need a connection of
//! their own, and the pool dials a spare connection whenever a request finds
//! the previous one not yet back in it. Over HTTP/2 every request to a
//! cluster shares the one connection, so a round of concurrent requests
//! costs one round trip and no handshake after the first.

use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::{Body, ConfigExt as _};
use kube::{Client, Config};
use rustls_pki_types::ServerName;
use tower::{BoxError, ServiceBuilder};

/// What failed while building a client.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A client for `config`, built the way kube builds its default one (the
/// same TLS configuration, credentials layer, headers and timeouts), with
/// HTTP/2 offered in ALPN. Call within the runtime: the client spawns its
/// request buffer on it.
pub(super) fn client(config: Config) -> Result<Client, Cause> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let tls = config.rustls_client_config()?;
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match &config.tls_server_name {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(
            ServerName::try_from(name.clone())?,
        )),
        None => builder,
    };
    let https = builder.enable_all_versions().wrap_connector(http);
    let mut connector = TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let pool: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(pool);
    Ok(Client::new(service, config.default_namespace))
}

/// Fails as [`client`] would on `config`'s TLS configuration and
/// credentials, without building a client.
pub(super) fn check(config: &Config) -> Result<(), Cause> {
    config.rustls_client_config()?;
    config.auth_layer()?;
    config.extra_headers_layer()?;
    Ok(())
}
