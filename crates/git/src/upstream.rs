//! Where allowed requests go: another Git server over HTTP, or a local
//! `git http-backend` run as CGI.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::GitError;
use crate::commands::MAX_COMMAND_SECTION;
use crate::route::GitRoute;

/// Bounds and time-outs for Git traffic.
#[derive(Debug, Clone)]
pub struct GitLimits {
    /// Time to open a TCP connection to an HTTP upstream (read once per process).
    pub connect_timeout: Duration,
    /// Time from sending a request until the upstream's response head.
    pub response_head_timeout: Duration,
    /// Time a client has to send a push's command section.
    pub prelude_timeout: Duration,
    /// Largest push command section read before deciding (capped at 1 MiB).
    pub max_prelude_bytes: usize,
    /// After refusing a push, how much of the unwanted pack is read and
    /// discarded so the client sees the refusal instead of a reset connection.
    pub max_drain_bytes: u64,
    /// How long that discarding may take.
    pub drain_timeout: Duration,
    /// Whether pushes may carry a push certificate (`git push --signed`).
    /// Off by default: Gogs and Gitea do not use them, and a certificate is
    /// one more place for the commands to hide (see
    /// [`crate::commands::parse_receive_pack_commands`]).
    pub push_certificates: bool,
}

impl Default for GitLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            response_head_timeout: Duration::from_secs(120),
            prelude_timeout: Duration::from_secs(30),
            max_prelude_bytes: MAX_COMMAND_SECTION,
            max_drain_bytes: 256 * 1024 * 1024,
            drain_timeout: Duration::from_secs(60),
            push_certificates: false,
        }
    }
}

/// Who is calling, as the local upstream's CGI environment sees it
/// (`REMOTE_USER`, `REMOTE_ADDR`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitCaller {
    /// The principal's id.
    pub remote_user: String,
    /// The client's address.
    pub remote_addr: Option<IpAddr>,
}

/// Boxed error of streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A streamed body on its way to or from an upstream.
pub type StreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// A username and password Latchkey presents to an HTTP upstream. The
/// password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredential {
    /// The upstream account.
    pub username: String,
    /// Its password or access token.
    pub password: String,
}

impl std::fmt::Debug for BasicCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, StreamBody>;

/// How Latchkey reaches an `https://` Git upstream: a pooled client over
/// rustls (HTTP/1.1 and HTTP/2 by ALPN) trusting the system roots or one
/// CA file. Built once per upstream, at start-up.
#[derive(Clone)]
pub struct GitTls {
    // Boxed: the pooled client is large, and `Upstream` is cloned per request.
    client: std::sync::Arc<HttpsClient>,
}

impl std::fmt::Debug for GitTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitTls").finish_non_exhaustive()
    }
}

impl GitTls {
    /// A client trusting the PEM certificates in `ca_file`, or the system's
    /// roots when `None`. The error says which file is wrong and why.
    pub fn new(ca_file: Option<&std::path::Path>, limits: &GitLimits) -> Result<Self, GitError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    GitError::Config(format!("cannot read CA file `{}`: {e}", path.display()))
                })?;
                let mut added = 0usize;
                for cert in <rustls_pki_types::CertificateDer<'static> as rustls_pki_types::pem::PemObject>::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| {
                        GitError::Config(format!("CA file `{}` is not PEM: {e}", path.display()))
                    })?;
                    roots.add(cert).map_err(|e| {
                        GitError::Config(format!("a certificate in `{}`: {e}", path.display()))
                    })?;
                    added += 1;
                }
                if added == 0 {
                    return Err(GitError::Config(format!(
                        "CA file `{}` holds no certificate",
                        path.display()
                    )));
                }
            }
            None => {
                let loaded = rustls_native_certs::load_native_certs();
                for e in &loaded.errors {
                    tracing::warn!(error = %e, "while loading the system's root certificates");
                }
                for cert in loaded.certs {
                    // One unreadable system root does not disable the rest.
                    let _ = roots.add(cert);
                }
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| GitError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(limits.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self {
            client: std::sync::Arc::new(
                Client::builder(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(Duration::from_secs(60))
                    .build(connector),
            ),
        })
    }
}

/// A Git server that allowed requests are forwarded to.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// A Git server speaking smart HTTP (Gogs, Gitea, ...), reached at
    /// `{base_url}/{owner}/{repo}.git/{endpoint}`, over `http://` or, with
    /// `tls`, `https://`.
    Http {
        /// e.g. `http://gitea.internal:3000`.
        base_url: String,
        /// Injected as `Authorization: Basic`; the caller's own credentials
        /// are never forwarded.
        credential: Option<BasicCredential>,
        /// Required for an `https://` base URL ([`GitTls::new`]).
        tls: Option<GitTls>,
    },
    /// Bare repositories under `root/{owner}/{repo}.git`, served by running
    /// `git http-backend`.
    Local {
        /// The directory holding `owner/repo.git`.
        root: PathBuf,
    },
}

/// A request ready to be sent upstream: the route, the method, the
/// allowlisted headers and the (streamed, untouched) body.
pub(crate) struct Forward {
    pub(crate) route: GitRoute,
    pub(crate) method: Method,
    pub(crate) headers: HeaderMap,
    pub(crate) body: StreamBody,
    pub(crate) caller: GitCaller,
}

/// Request headers that may reach an upstream. Everything else (above all
/// `Authorization`, `Cookie`, `X-WEBAUTH-USER`, `X-Forwarded-User`,
/// `Remote-User` and hop-by-hop headers) is dropped.
const REQUEST_ALLOW: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::USER_AGENT,
    header::ACCEPT,
];

/// Response headers that may reach the client (never `Set-Cookie` or
/// `WWW-Authenticate`, which belong to Latchkey's credential).
const RESPONSE_ALLOW: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::PRAGMA,
];

/// The `Git-Protocol` header (protocol v2 negotiation).
pub(crate) const GIT_PROTOCOL: &str = "git-protocol";

/// Keeps only the request headers an upstream needs. Identity headers a
/// caller sent (`Authorization`, `Cookie`, `X-WEBAUTH-USER`, ...) and
/// hop-by-hop headers never pass.
pub(crate) fn filter_request_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in REQUEST_ALLOW {
        for v in incoming.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    if let Some(v) = incoming.get(GIT_PROTOCOL).filter(|v| valid_git_protocol(v)) {
        out.insert(HeaderName::from_static(GIT_PROTOCOL), v.clone());
    }
    out
}

/// `version=2` and friends: short, and only characters that are safe in an
/// environment variable and a header.
fn valid_git_protocol(v: &HeaderValue) -> bool {
    v.len() <= 256
        && v.as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b":=._-".contains(b))
}

fn filter_response_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in RESPONSE_ALLOW {
        for v in incoming.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

impl Upstream {
    /// Sends `fwd` and returns the response head with its streaming body.
    pub(crate) async fn send(
        &self,
        fwd: Forward,
        limits: &GitLimits,
    ) -> Result<Response<StreamBody>, GitError> {
        match self {
            Self::Http {
                base_url,
                credential,
                tls,
            } => send_http(base_url, credential.as_ref(), tls.as_ref(), fwd, limits).await,
            Self::Local { root } => send_local(root, fwd, limits).await,
        }
    }
}

type HttpClient = Client<HttpConnector, StreamBody>;

/// One pooled client per process. Its connect timeout is taken from the
/// first [`GitLimits`] used.
fn http_client(limits: &GitLimits) -> &'static HttpClient {
    static CLIENT: OnceLock<HttpClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(limits.connect_timeout));
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector)
    })
}

async fn send_http(
    base_url: &str,
    credential: Option<&BasicCredential>,
    tls: Option<&GitTls>,
    fwd: Forward,
    limits: &GitLimits,
) -> Result<Response<StreamBody>, GitError> {
    let base = base_url.trim_end_matches('/');
    let https = base.starts_with("https://");
    if !https && !base.starts_with("http://") {
        return Err(GitError::Config(format!(
            "upstream base url `{base}` must start with `http://` or `https://`"
        )));
    }
    if https && tls.is_none() {
        return Err(GitError::Config(format!(
            "upstream `{base}` is https but has no TLS client (build one with `GitTls::new`)"
        )));
    }
    let mut url = format!("{base}{}", fwd.route.upstream_path());
    if let Some(q) = fwd.route.endpoint.query() {
        url.push('?');
        url.push_str(&q);
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| GitError::Config(format!("invalid upstream url `{url}`: {e}")))?;
    let mut req = http::Request::builder()
        .method(fwd.method)
        .uri(uri)
        .body(fwd.body)
        .map_err(|e| GitError::Config(format!("cannot build upstream request: {e}")))?;
    *req.headers_mut() = fwd.headers;
    if let Some(c) = credential {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", c.username, c.password));
        let mut v = HeaderValue::from_str(&format!("Basic {token}"))
            .map_err(|_| GitError::Config("upstream credential is not a valid header".into()))?;
        v.set_sensitive(true);
        req.headers_mut().insert(header::AUTHORIZATION, v);
    }
    let request = match tls {
        Some(t) if https => t.client.request(req),
        _ => http_client(limits).request(req),
    };
    let resp = tokio::time::timeout(limits.response_head_timeout, request)
        .await
        .map_err(|_| GitError::UpstreamTimeout)?
        .map_err(|e| GitError::Upstream(format!("request to `{base}` failed: {e}")))?;
    let (parts, body) = resp.into_parts();
    if matches!(
        parts.status,
        StatusCode::UNAUTHORIZED | StatusCode::PROXY_AUTHENTICATION_REQUIRED
    ) {
        return Err(GitError::Upstream(format!(
            "upstream `{base}` rejected latchkey's credential ({})",
            parts.status
        )));
    }
    let mut out = Response::new(body.map_err(BoxError::from).boxed_unsync());
    *out.status_mut() = parts.status;
    *out.headers_mut() = filter_response_headers(&parts.headers);
    Ok(out)
}

/// Largest CGI response head accepted from `git http-backend`.
const MAX_CGI_HEAD: usize = 64 * 1024;

async fn send_local(
    root: &std::path::Path,
    fwd: Forward,
    limits: &GitLimits,
) -> Result<Response<StreamBody>, GitError> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("PATH_INFO", fwd.route.upstream_path())
        .env(
            "QUERY_STRING",
            fwd.route.endpoint.query().unwrap_or_default(),
        )
        .env("REQUEST_METHOD", fwd.method.as_str())
        .env("REMOTE_USER", &fwd.caller.remote_user)
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "http.receivepack")
        .env("GIT_CONFIG_VALUE_0", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in ["PATH", "HOME", "LANG", "TMPDIR"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    if let Some(addr) = fwd.caller.remote_addr {
        cmd.env("REMOTE_ADDR", addr.to_string());
    }
    let text = |name: &HeaderName| {
        fwd.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(v) = text(&header::CONTENT_TYPE) {
        cmd.env("CONTENT_TYPE", v);
    }
    if let Some(v) = text(&header::CONTENT_LENGTH) {
        cmd.env("CONTENT_LENGTH", v);
    }
    if let Some(v) = text(&header::CONTENT_ENCODING) {
        cmd.env("HTTP_CONTENT_ENCODING", v);
    }
    if let Some(v) = text(&HeaderName::from_static(GIT_PROTOCOL)) {
        cmd.env("GIT_PROTOCOL", v);
    }

    let mut child = cmd
        .spawn()
        .map_err(|e| GitError::Upstream(format!("cannot start `git http-backend`: {e}")))?;
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(GitError::Upstream("git http-backend pipes missing".into()));
    };

    // Feed the request body concurrently, so a large push and a large
    // response never deadlock on full pipes.
    let mut body = fwd.body;
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data()
                        && stdin.write_all(&data).await.is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "git request body failed; closing http-backend stdin");
                    break;
                }
            }
        }
        drop(stdin);
    });
    tokio::spawn(log_stderr(stderr));

    let head = tokio::time::timeout(limits.response_head_timeout, read_cgi_head(&mut stdout))
        .await
        .map_err(|_| GitError::UpstreamTimeout)??;
    let CgiHead {
        status,
        headers,
        leftover,
    } = head;

    let stream = futures_util::stream::iter((!leftover.is_empty()).then(|| Ok(leftover)))
        .chain(ChildStream::new(stdout, child))
        .map(|r| r.map(http_body::Frame::data));
    let mut out = Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
    *out.status_mut() = status;
    *out.headers_mut() = filter_response_headers(&headers);
    Ok(out)
}

async fn log_stderr(mut stderr: tokio::process::ChildStderr) {
    let mut buf = vec![0u8; 4096];
    let mut logged = 0usize;
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if logged < 16 * 1024 {
                    logged += n;
                    tracing::warn!(stderr = %String::from_utf8_lossy(&buf[..n]).trim_end(), "git http-backend");
                }
            }
        }
    }
}

struct CgiHead {
    status: StatusCode,
    headers: HeaderMap,
    leftover: Bytes,
}

fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4));
    let lf = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| (p, p + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

async fn read_cgi_head(stdout: &mut tokio::process::ChildStdout) -> Result<CgiHead, GitError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((end, body_start)) = find_head_end(&buf) {
            let (status, headers) = parse_cgi_head(&buf[..end])?;
            return Ok(CgiHead {
                status,
                headers,
                leftover: Bytes::copy_from_slice(&buf[body_start..]),
            });
        }
        if buf.len() > MAX_CGI_HEAD {
            return Err(GitError::Upstream(
                "git http-backend response head too large".into(),
            ));
        }
        let n = stdout
            .read(&mut chunk)
            .await
            .map_err(|e| GitError::Upstream(format!("reading git http-backend: {e}")))?;
        if n == 0 {
            return Err(GitError::Upstream(
                "git http-backend exited without a response".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parses CGI response headers (`Status:` plus ordinary headers). A missing
/// `Status:` means 200.
fn parse_cgi_head(head: &[u8]) -> Result<(StatusCode, HeaderMap), GitError> {
    let bad = |what: &str| GitError::Upstream(format!("bad git http-backend header: {what}"));
    let text = std::str::from_utf8(head).map_err(|_| bad("not UTF-8"))?;
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| bad(line))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or("");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| bad(line))?;
        } else {
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad(line))?;
            let value = HeaderValue::from_str(value).map_err(|_| bad(line))?;
            headers.append(name, value);
        }
    }
    Ok((status, headers))
}

/// `git http-backend`'s stdout as a stream that owns the child: dropping it
/// early kills the child; reaching EOF reaps it.
struct ChildStream {
    inner: tokio_util::io::ReaderStream<tokio::process::ChildStdout>,
    child: Option<tokio::process::Child>,
}

impl ChildStream {
    fn new(stdout: tokio::process::ChildStdout, child: tokio::process::Child) -> Self {
        Self {
            inner: tokio_util::io::ReaderStream::with_capacity(stdout, 32 * 1024),
            child: Some(child),
        }
    }
}

impl futures_util::Stream for ChildStream {
    type Item = Result<Bytes, BoxError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match self.inner.poll_next_unpin(cx) {
            std::task::Poll::Ready(None) => {
                if let Some(mut child) = self.child.take() {
                    tokio::spawn(async move {
                        match child.wait().await {
                            Ok(st) if !st.success() => {
                                tracing::warn!(status = %st, "git http-backend exited with failure");
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "waiting for git http-backend"),
                        }
                    });
                }
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Ready(Some(r)) => {
                std::task::Poll::Ready(Some(r.map_err(BoxError::from)))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_identity_and_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer secret"),
            ("cookie", "s=1"),
            ("x-webauth-user", "root"),
            ("x-forwarded-user", "root"),
            ("remote-user", "root"),
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("content-type", "application/x-git-receive-pack-request"),
            ("content-encoding", "gzip"),
            ("git-protocol", "version=2"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = filter_request_headers(&h);
        let mut names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-encoding", "content-type", "git-protocol"]);
        h.insert(
            HeaderName::from_static("git-protocol"),
            HeaderValue::from_static("version=2; rm -rf"),
        );
        assert!(filter_request_headers(&h).get("git-protocol").is_none());
    }

    #[test]
    fn parses_cgi_heads() {
        let (s, h) =
            parse_cgi_head(b"Status: 403 Forbidden\r\nContent-Type: text/plain\r\n").unwrap();
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert_eq!(h["content-type"], "text/plain");
        let (s, h) =
            parse_cgi_head(b"Expires: Fri, 01 Jan 1980 00:00:00 GMT\nPragma: no-cache").unwrap();
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["pragma"], "no-cache");
        assert!(parse_cgi_head(b"garbage").is_err());
        assert_eq!(find_head_end(b"A: b\n\nbody\r\n\r\n"), Some((4, 6)));
        assert_eq!(find_head_end(b"A: b\r\n\r\nbody\n\n"), Some((4, 8)));
        assert_eq!(find_head_end(b"A: b\r\n"), None);
    }

    #[test]
    fn credential_debug_is_redacted() {
        let c = BasicCredential {
            username: "latchkey".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
