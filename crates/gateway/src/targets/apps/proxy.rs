//! The app proxy's I/O: one pooled hyper client per app (HTTP/1.1 and
//! HTTP/2 by ALPN over rustls, the system roots or the app's `ca_file`),
//! bodies streamed both ways, a time limit on the response head only, and
//! WebSocket (any `Upgrade`) tunnels joined with `copy_bidirectional`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

/// Why the app could not be reached.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    /// Connecting or sending failed.
    #[error("the app at `{0}` cannot be reached: {1}")]
    Unreachable(String, String),
    /// No response head within `server.upstream_timeout`.
    #[error("the app at `{0}` did not answer within {1:?}")]
    Timeout(String, Duration),
    /// A request Latchkey could not build (a bad header from config).
    #[error("cannot build the request to the app: {0}")]
    Build(String),
}

/// The TLS roots an app's client trusts.
pub(crate) fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            let mut added = 0;
            for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: rustls_pki_types::CertificateDer<'static> =
                    cert.map_err(|e| format!("`{}` is not PEM: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("a certificate in `{}`: {e}", path.display()))?;
                added += 1;
            }
            if added == 0 {
                return Err(format!(
                    "`{}` holds no certificate; give the PEM of the CA that signed the app's certificate",
                    path.display()
                ));
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            for e in &loaded.errors {
                tracing::warn!(error = %e, "while loading the system's root certificates");
            }
            for cert in loaded.certs {
                // One unreadable system root does not disable the others.
                let _ = roots.add(cert);
            }
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

type AppClient = Client<HttpsConnector<HttpConnector>, Body>;

/// One app's clients: pooled, and an HTTP/1.1-only one for upgrades.
#[derive(Clone)]
pub(crate) struct Clients {
    pooled: AppClient,
    upgrades: AppClient,
    timeout: Duration,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

impl Clients {
    /// Clients trusting `tls`, with `timeout` for response heads.
    pub(crate) fn new(tls: rustls::ClientConfig, timeout: Duration) -> Self {
        let connector = |h2: bool| {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
            let b = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1();
            if h2 {
                b.enable_http2().wrap_connector(http)
            } else {
                b.wrap_connector(http)
            }
        };
        let build = |h2| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(connector(h2))
        };
        Self {
            pooled: build(true),
            upgrades: build(false),
            timeout,
        }
    }

    /// Sends `req`; returns once the response head arrived (the body
    /// streams).
    pub(crate) async fn send(
        &self,
        req: Request<Body>,
        upgrade: bool,
        base: &str,
    ) -> Result<Response<Incoming>, ProxyError> {
        let client = if upgrade {
            &self.upgrades
        } else {
            &self.pooled
        };
        tokio::time::timeout(self.timeout, client.request(req))
            .await
            .map_err(|_| ProxyError::Timeout(base.to_owned(), self.timeout))?
            .map_err(|e| ProxyError::Unreachable(base.to_owned(), error_chain(&e)))
    }
}

/// Joins the caller's upgraded connection to the app's, both ways, until
/// either side closes.
pub(crate) fn tunnel(caller: hyper::upgrade::OnUpgrade, app: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (caller, app) = match tokio::try_join!(caller, app) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "an upgraded app connection failed to start");
                return;
            }
        };
        let mut caller = TokioIo::new(caller);
        let mut app = TokioIo::new(app);
        if let Err(e) = tokio::io::copy_bidirectional(&mut caller, &mut app).await {
            tracing::debug!(error = %e, "an upgraded app connection ended with an error");
        }
    });
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    latchkey_core::bounded(&s, 300).into_owned()
}
