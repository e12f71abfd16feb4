//! The Firestore upstream: where calls go and the credential they carry.
//! Callers' credentials never reach it; its credential never reaches them.

use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use latchkey_google_auth::{AccessTokenProvider, CredentialSource};

use crate::config::FirestoreConfig;

type Connector = HttpsConnector<HttpConnector>;

/// Why an upstream call failed before it produced a response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No access token could be had for the upstream.
    #[error("no upstream credential: {0}")]
    Credential(String),
    /// Connecting or sending failed.
    #[error("Firestore upstream unreachable: {0}")]
    Unreachable(String),
    /// The upstream did not answer in time.
    #[error("Firestore upstream did not answer within {0:?}")]
    Timeout(Duration),
}

/// A configured Firestore upstream.
pub(crate) struct FirestoreUpstream {
    base: String,
    grpc: Client<Connector, Body>,
    rest: Client<Connector, Body>,
    credentials: AccessTokenProvider,
    timeout: Duration,
}

/// Request headers never forwarded: credentials, cookies, hop-by-hop
/// headers and anything that claims an identity.
fn is_dropped(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "authorization"
            | "proxy-authorization"
            | "cookie"
            | "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "forwarded"
            | "x-real-ip"
            // Google serves a POST carrying these as the method they name;
            // Latchkey decided on the real method.
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
    ) || n.starts_with("x-forwarded-")
        || n.starts_with("x-latchkey-")
}

impl FirestoreUpstream {
    /// Builds the clients and the credential source from `[firestore]`.
    pub(crate) fn new(
        config: &FirestoreConfig,
        clock: latchkey_core::SharedClock,
        timeout: Duration,
    ) -> Result<Self, String> {
        let (base, source, tls) = match &config.emulator {
            Some(hostport) => (
                format!("http://{hostport}"),
                CredentialSource::Emulator,
                // Never used: the emulator is reached in the clear.
                rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            ),
            None => {
                let source = match &config.service_account_file {
                    Some(file) => CredentialSource::ServiceAccountFile(file.clone()),
                    None => CredentialSource::Metadata,
                };
                let mut roots = rustls::RootCertStore::empty();
                let native = rustls_native_roots();
                let (added, _) = roots.add_parsable_certificates(native);
                if added == 0 {
                    return Err("no trusted root certificates found on this machine \
                                (install ca-certificates) to reach Google over TLS"
                        .into());
                }
                let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
                (
                    config.endpoint.trim_end_matches('/').to_owned(),
                    source,
                    tls,
                )
            }
        };
        let credentials = AccessTokenProvider::new(
            source,
            vec![latchkey_google_auth::DATASTORE_SCOPE.to_owned()],
            clock,
        )
        .map_err(|e| e.to_string())?;
        let connector = || {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(Duration::from_secs(10)));
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http)
        };
        let grpc = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Some(Duration::from_secs(30)))
            .build(connector());
        let rest = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector());
        Ok(Self {
            base,
            grpc,
            rest,
            credentials,
            timeout,
        })
    }

    fn request(
        &self,
        method: http::Method,
        path_and_query: &str,
        caller_headers: &HeaderMap,
        auth: HeaderValue,
        body: Body,
    ) -> Result<Request<Body>, UpstreamError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path_and_query))
            .body(body)
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        let headers = req.headers_mut();
        for (name, value) in caller_headers {
            if !is_dropped(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(header::AUTHORIZATION, auth);
        Ok(req)
    }

    async fn authorization(&self) -> Result<HeaderValue, UpstreamError> {
        self.credentials
            .authorization()
            .await
            .map_err(|e| UpstreamError::Credential(e.to_string()))
    }

    /// Sends a gRPC call (HTTP/2). Returns when the response head arrives;
    /// the body streams.
    pub(crate) async fn grpc(
        &self,
        path: &str,
        caller_headers: &HeaderMap,
        body: Body,
        wait_for_head: bool,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let auth = self.authorization().await?;
        let req = self.request(http::Method::POST, path, caller_headers, auth, body)?;
        let fut = self.grpc.request(req);
        let result = if wait_for_head {
            tokio::time::timeout(self.timeout, fut)
                .await
                .map_err(|_| UpstreamError::Timeout(self.timeout))?
        } else {
            // Streams (Listen) may hold their head until the first target;
            // the caller's own deadline governs them.
            fut.await
        };
        result.map_err(|e| UpstreamError::Unreachable(error_chain(&e)))
    }

    /// Sends a REST call (HTTP/1.1 or HTTP/2).
    pub(crate) async fn rest(
        &self,
        method: http::Method,
        path_and_query: &str,
        caller_headers: &HeaderMap,
        body: Body,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let auth = self.authorization().await?;
        let req = self.request(method, path_and_query, caller_headers, auth, body)?;
        tokio::time::timeout(self.timeout, self.rest.request(req))
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
            .map_err(|e| UpstreamError::Unreachable(error_chain(&e)))
    }
}

fn rustls_native_roots() -> Vec<rustls_pki_types::CertificateDer<'static>> {
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::warn!(error = %e, "while loading the system's root certificates");
    }
    loaded.certs
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Response headers kept when relaying: everything but hop-by-hop headers
/// and cookies.
pub(crate) fn relay_response_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !matches!(
            name.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "set-cookie"
        ) {
            to.append(name.clone(), value.clone());
        }
    }
}
