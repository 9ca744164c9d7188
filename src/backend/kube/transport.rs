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
//!
//! Building a client starts dialling its cluster at once ([`PreDialled`]):
//! the TCP and TLS handshakes run while the process does other work (the
//! lock on mgmt, other clusters), and the first request takes that
//! connection instead of dialling then. No request is sent early.

use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::{Body, ConfigExt as _};
use kube::{Client, Config};
use rustls_pki_types::ServerName;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt as _};

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::Connection;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What failed while building a client.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A client for `config`, built the way kube builds its default one (the
/// same TLS configuration, credentials layer, headers and timeouts), with
/// HTTP/2 offered in ALPN. Call within the runtime: the client spawns its
/// request buffer on it.
pub(super) fn client(config: Config) -> Result<Client, Cause> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // HTTP/2 writes a request's HEADERS and DATA frames separately; with
    // Nagle's algorithm the second waits for the server's delayed ACK of
    // the first (40 ms on Linux), on every request with a body.
    http.set_nodelay(true);
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
    let connector = PreDialled::start(connector, config.cluster_url.clone());
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

/// How long a request that asked for a connection while the cluster's first
/// one was being dialled waits, once that one turned out to be HTTP/2, for
/// the pool to hand it the shared connection instead (it does at once; this
/// only bounds a pool that never does, and then the call is retried).
const SHARE_GRACE: Duration = Duration::from_secs(1);

/// A connector whose first connection is dialled as soon as it is made
/// (on the runtime), and handed to the first request that asks for one.
///
/// hyper's pool dials for every request that finds no idle connection, and
/// learns only after the TLS handshake that a server speaks HTTP/2; so the
/// requests sent at once before a cluster's first connection is up would
/// each open their own. Here a request that asks while the first
/// connection is being dialled waits for it: over HTTP/1.1 it then dials
/// its own; over HTTP/2 it dials nothing, and the pool gives that request
/// the first, shared connection. A pre-dial that failed is forgotten: the
/// request that took it dials again, and reports its own error.
struct PreDialled<C: Service<Uri>> {
    inner: C,
    first: Arc<First<C::Response, C::Error>>,
}

/// The first connection of a cluster, and what it turned out to be.
struct First<R, E> {
    /// Dialling ahead, until a request takes it.
    ahead: Mutex<Option<JoinHandle<Result<R, E>>>>,
    /// `None` while the first connection is being dialled; then whether it
    /// speaks HTTP/2 (`false` also when it failed).
    h2: watch::Sender<Option<bool>>,
}

// By hand: a derive would ask the connection and error types to be `Clone`.
impl<C: Service<Uri> + Clone> Clone for PreDialled<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            first: self.first.clone(),
        }
    }
}

impl<C> PreDialled<C>
where
    C: Service<Uri> + Clone + Send + 'static,
    C::Response: Send + 'static,
    C::Error: Send + 'static,
    C::Future: Send + 'static,
{
    /// Starts dialling `uri`. Call within the runtime.
    fn start(inner: C, uri: Uri) -> Self {
        let dial = inner.clone().oneshot(uri);
        let ahead = tokio::runtime::Handle::try_current()
            .ok()
            .map(|runtime| runtime.spawn(dial));
        // Nothing dialled ahead: no request has a first connection to wait for.
        let known = if ahead.is_some() { None } else { Some(false) };
        Self {
            inner,
            first: Arc::new(First {
                ahead: Mutex::new(ahead),
                h2: watch::Sender::new(known),
            }),
        }
    }
}

impl<C> Service<Uri> for PreDialled<C>
where
    C: Service<Uri> + Clone + Send + 'static,
    C::Response: Connection + Send + 'static,
    C::Error: Into<BoxError> + Send + 'static,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let ahead = self
            .first
            .ahead
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let inner = self.inner.clone();
        let first = self.first.clone();
        match ahead {
            // The first request: the connection dialled ahead.
            Some(dialling) => Box::pin(async move {
                // Dropped before it knows (the call timed out): the others
                // stop waiting and dial their own.
                let unknown = Unknown(first.clone());
                let connection = match dialling.await {
                    Ok(Ok(connection)) => Ok(connection),
                    _ => inner.oneshot(uri).await.map_err(Into::into),
                };
                let h2 = connection
                    .as_ref()
                    .is_ok_and(|c| c.connected().is_negotiated_h2());
                first.h2.send_replace(Some(h2));
                drop(unknown);
                connection
            }),
            None => {
                let mut known = first.h2.subscribe();
                if known.borrow().is_some() {
                    // Not the first connection: dial as usual (also after
                    // an HTTP/2 connection closed).
                    return Box::pin(async move { inner.oneshot(uri).await.map_err(Into::into) });
                }
                Box::pin(async move {
                    let h2 = match known.wait_for(Option::is_some).await {
                        Ok(h2) => h2.unwrap_or(false),
                        Err(_) => false,
                    };
                    if h2 {
                        // The pool hands this request the shared connection
                        // meanwhile, and this future is dropped unfinished.
                        tokio::time::sleep(SHARE_GRACE).await;
                        return Err(BoxError::from(
                            "the cluster's first HTTP/2 connection was not shared",
                        ));
                    }
                    inner.oneshot(uri).await.map_err(Into::into)
                })
            }
        }
    }
}

/// Tells the waiting requests "not HTTP/2" if the first one is dropped
/// before its connection is known.
struct Unknown<R, E>(Arc<First<R, E>>);

impl<R, E> Drop for Unknown<R, E> {
    fn drop(&mut self) {
        self.0.h2.send_if_modified(|known| {
            if known.is_none() {
                *known = Some(false);
                true
            } else {
                false
            }
        });
    }
}
