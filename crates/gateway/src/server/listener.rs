//! The listener. Cleartext serves HTTP/1.1 and HTTP/2 with prior knowledge
//! (what gRPC clients speak on loopback); with `[server.tls]` every
//! connection is TLS and ALPN picks `h2` or `http/1.1`.
//!
//! Every connection is bounded before anyone is authenticated
//! (`[server.limits]`): at most `max_connections` are served at once (past
//! it, new connections wait in the kernel's accept queue); a connection
//! with no request in flight must deliver a complete request head within
//! `header_read_timeout` once it starts one (a new connection starts one at
//! once; for TLS the handshake counts), and is closed after `idle_timeout`
//! without a request in flight; HTTP/2 limits are set explicitly.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::{ServerLimits, TlsConfig};
use crate::metrics::Metrics;

/// Why the listener could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The certificate or key could not be loaded.
    #[error("server.tls: {0}")]
    Tls(String),
    /// Accepting connections failed.
    #[error("listener failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Loads `[server.tls]` into a rustls server config offering `h2` and
/// `http/1.1`.
pub fn tls_server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            ServeError::Tls(format!(
                "cannot read certificates from `{}`: {e}",
                tls.cert_file.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "`{}` holds no PEM certificate",
            tls.cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| {
        ServeError::Tls(format!(
            "cannot read a private key from `{}`: {e}",
            tls.key_file.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` with the default `[server.limits]` until `shutdown`
/// resolves; see [`serve_with_limits`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with_limits(listener, app, tls, &ServerLimits::default(), shutdown).await
}

/// Serves the gateway's router under its `[server.limits]` until `shutdown`
/// resolves, as `latchkey serve` does: like [`serve_with_limits`], and the
/// open connections are counted in `/metrics`
/// (`latchkey_connections_in_use`).
pub async fn serve_gateway(
    listener: TcpListener,
    gw: Arc<crate::Gateway>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = crate::router(gw.clone());
    let metrics = gw.pipe.metrics.clone();
    serve_counted(listener, app, tls, gw.limits(), Some(metrics), shutdown).await
}

/// How long open requests may finish after `shutdown` resolves.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `app` under `limits` until `shutdown` resolves, then lets open
/// requests finish (up to 30 s). Each request carries the peer's
/// [`ConnectInfo<SocketAddr>`].
pub async fn serve_with_limits(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: &ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_counted(listener, app, tls, limits, None, shutdown).await
}

/// [`serve_with_limits`], counting open connections in `metrics` when given.
async fn serve_counted(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: &ServerLimits,
    metrics: Option<Arc<Metrics>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let limits = Arc::new(limits.clone());
    let builder = Arc::new(connection_builder(&limits));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let max = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    // INVARIANT: a connection is served only while it holds a permit, so at
    // most `max_connections` are open; the accept loop waits for a permit
    // before it accepts, leaving the rest in the kernel's queue.
    let permits = Arc::new(Semaphore::new(max as usize));
    let (stop, stopped) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // gRPC writes headers, a message and trailers as separate small
        // frames: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let conn = Conn {
            peer,
            app: app.clone(),
            builder: builder.clone(),
            limits: limits.clone(),
            stopped: stopped.clone(),
            activity: Arc::new(Activity::new()),
        };
        let acceptor = acceptor.clone();
        // Counted from accept to close, the TLS handshake included.
        let open = metrics.as_ref().map(|m| m.connection_opened());
        tokio::spawn(async move {
            let _permit = permit;
            let _open = open;
            match acceptor {
                None => conn.serve(tcp).await,
                Some(acceptor) => {
                    // The handshake has its own deadline; the watchdog
                    // watches the plaintext after it (where the HTTP/2
                    // preface can be seen).
                    let handshake = acceptor.accept(tcp);
                    match tokio::time::timeout(conn.limits.header_read_timeout, handshake).await {
                        Ok(Ok(tls)) => conn.serve(tls).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit: all of them back means all closed.
    if tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(max))
        .await
        .is_err()
    {
        tracing::warn!("open connections did not finish within 30 s of shutdown");
    }
    Ok(())
}

/// The HTTP/1 and HTTP/2 settings every connection is served with.
fn connection_builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head, idle
        // keep-alive included, so it backs up the idle time-out; the
        // shorter header time-out of a started request is `Conn::serve`'s.
        .header_read_timeout(limits.header_read_timeout.max(limits.idle_timeout));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(limits.http2_max_header_list_bytes)
        .max_pending_accept_reset_streams(limits.http2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.http2_max_local_error_reset_streams);
    builder
}

/// One accepted connection and what serving it needs.
struct Conn {
    peer: SocketAddr,
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Arc<ServerLimits>,
    stopped: watch::Receiver<bool>,
    activity: Arc<Activity>,
}

/// Why the watchdog of a connection fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// A request head was started and not finished in time.
    HeaderRead,
    /// No request in flight for `idle_timeout`.
    Idle,
}

impl Conn {
    async fn serve<S>(mut self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let activity = self.activity.clone();
        let app = self.app.clone();
        let service =
            hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let in_flight = InFlight::start(activity.clone());
                let app = app.clone();
                async move {
                    let resp = app.oneshot(req.map(axum::body::Body::new)).await?;
                    // The request is in flight until its response body is
                    // done (or dropped): the guard lives in the body.
                    Ok::<_, std::convert::Infallible>(resp.map(move |body| {
                        axum::body::Body::new(body.map_frame(move |frame| {
                            let _in_flight = &in_flight;
                            frame
                        }))
                    }))
                }
            });
        let io = TokioIo::new(WatchedIo {
            inner: stream,
            activity: self.activity.clone(),
        });
        let conn = self.builder.serve_connection_with_upgrades(io, service);
        let mut conn = std::pin::pin!(conn);
        let mut closing: Option<Instant> = None;
        loop {
            let expiry = self.activity.expiry(&self.limits);
            let (deadline, why) = match (closing, expiry) {
                (Some(at), _) => (Some(at), None),
                (None, Some((at, why))) => (Some(at), Some(why)),
                (None, None) => (None, None),
            };
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = self.activity.changed.notified() => {}
                changed = self.stopped.changed(), if closing.is_none() => {
                    if changed.is_err() || *self.stopped.borrow() {
                        conn.as_mut().graceful_shutdown();
                        closing = Some(Instant::now() + SHUTDOWN_GRACE);
                    }
                }
                () = sleep_until(deadline) => match why {
                    Some(Expiry::Idle) => {
                        // HTTP/2 gets GOAWAY; HTTP/1 closes between requests.
                        tracing::debug!(%peer, "closing an idle connection");
                        conn.as_mut().graceful_shutdown();
                        closing = Some(Instant::now() + self.limits.header_read_timeout);
                    }
                    Some(Expiry::HeaderRead) => {
                        tracing::debug!(%peer, "request head not received in time; closing");
                        return;
                    }
                    None => {
                        tracing::debug!(%peer, "connection did not close in time; dropping it");
                        return;
                    }
                },
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection's watchdog needs to know: requests in flight, since
/// when it is idle, and whether a request head has been started.
#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    idle_since: Instant,
    /// When the first byte of a request head not yet complete arrived (a
    /// new connection counts as started at accept). Unused for HTTP/2,
    /// where bytes between requests are frames (PING, SETTINGS), not heads.
    head_started: Option<Instant>,
    /// The first bytes read, to tell HTTP/2 (its preface) from HTTP/1.
    prefix: Vec<u8>,
    http2: bool,
}

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                idle_since: now,
                head_started: Some(now),
                prefix: Vec::with_capacity(H2_PREFACE.len()),
                http2: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_read(&self, bytes: &[u8]) {
        let mut s = self.lock();
        let mut changed = false;
        if s.prefix.len() < H2_PREFACE.len() {
            let take = (H2_PREFACE.len() - s.prefix.len()).min(bytes.len());
            s.prefix.extend_from_slice(&bytes[..take]);
            if s.prefix.len() == H2_PREFACE.len() && s.prefix == H2_PREFACE {
                s.http2 = true;
                s.head_started = None;
                changed = true;
            }
        }
        if !s.http2 && s.in_flight == 0 && s.head_started.is_none() {
            s.head_started = Some(Instant::now());
            changed = true;
        }
        drop(s);
        if changed {
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        let mut s = self.lock();
        s.in_flight += 1;
        s.head_started = None;
        drop(s);
        self.changed.notify_one();
    }

    fn request_ended(&self) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.idle_since = Instant::now();
        }
        drop(s);
        self.changed.notify_one();
    }

    /// When the watchdog must act, and why; `None` while a request is in
    /// flight.
    fn expiry(&self, limits: &ServerLimits) -> Option<(Instant, Expiry)> {
        let s = self.lock();
        if s.in_flight > 0 {
            return None;
        }
        Some(match s.head_started {
            Some(t) => (t + limits.header_read_timeout, Expiry::HeaderRead),
            None => (s.idle_since + limits.idle_timeout, Expiry::Idle),
        })
    }
}

/// Counts one request as in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.request_started();
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A connection's byte stream, telling [`Activity`] when bytes arrive.
struct WatchedIo<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            let read = &buf.filled()[before..];
            if !read.is_empty() {
                this.activity.on_read(read);
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
