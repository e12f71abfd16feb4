//! The smart-HTTP handler: classify, ask the gateway, forward, observe.

use std::future::Future;
use std::io::Write as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};

use crate::GitError;
use crate::classify::{intent_for_read, intents_for_push};
use crate::commands::{CommandsParse, MAX_COMMAND_SECTION, RefUpdate, parse_receive_pack_commands};
use crate::phases::{GitOutcome, GitPhases, OutcomeNotRecorded, Refusal};
use crate::report::{
    ReportStatusTap, error_for_info_refs, rejection_response, wants_report_status,
};
use crate::route::{Endpoint, GitRoute};
use crate::upload::{MAX_UPLOAD_PRELUDE, UploadParse, parse_upload_pack_command};
use crate::upstream::{BoxError, Forward, StreamBody, Upstream, filter_request_headers};

/// The response body [`serve`] returns: streamed, never collected.
pub type GitBody = UnsyncBoxBody<Bytes, std::io::Error>;

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
/// (`REMOTE_USER`, `REMOTE_ADDR`). The gateway puts this in the request's
/// extensions; without it, a [`latchkey_core::Principal`] extension supplies
/// the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitCaller {
    /// The principal's id.
    pub remote_user: String,
    /// The client's address.
    pub remote_addr: Option<IpAddr>,
}

fn caller_of<B>(req: &http::Request<B>) -> GitCaller {
    if let Some(c) = req.extensions().get::<GitCaller>() {
        return c.clone();
    }
    let remote_user = req
        .extensions()
        .get::<latchkey_core::Principal>()
        .map(|p| p.id.clone())
        .unwrap_or_default();
    let remote_addr = req
        .extensions()
        .get::<std::net::SocketAddr>()
        .map(|a| a.ip());
    GitCaller {
        remote_user,
        remote_addr,
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<GitBody> {
    let mut resp = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, max-age=0, must-revalidate"),
    );
    resp
}

fn error_response(e: &GitError) -> Response<GitBody> {
    full(
        e.status(),
        "text/plain; charset=utf-8",
        format!("{}\n", e.public_message()),
    )
}

fn summary(refusals: &[Refusal]) -> String {
    let msgs: Vec<&str> = refusals.iter().map(|r| r.message.as_str()).collect();
    if msgs.is_empty() {
        "denied by policy".into()
    } else {
        msgs.join("; ")
    }
}

/// Serves one smart-HTTP request for `route`: authorizes it through
/// `phases`, then streams it to `upstream` and the answer back, reporting
/// the outcome. Never buffers a pack; errors become plain-text 4xx/5xx
/// responses with a safe message (detail goes to tracing).
pub async fn serve<B>(
    req: http::Request<B>,
    route: GitRoute,
    upstream: &Upstream,
    phases: Arc<dyn GitPhases>,
    limits: &GitLimits,
) -> Response<GitBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let route = route.for_upstream(upstream);
    match serve_inner(req, route, upstream, phases, limits).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(error = ?e, "git request failed");
            error_response(&e)
        }
    }
}

async fn serve_inner<B>(
    req: http::Request<B>,
    route: GitRoute,
    upstream: &Upstream,
    phases: Arc<dyn GitPhases>,
    limits: &GitLimits,
) -> Result<Response<GitBody>, GitError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let endpoint = route.endpoint;
    let method = req.method().clone();
    let method_ok = match endpoint {
        Endpoint::InfoRefs(_) => method == Method::GET || method == Method::HEAD,
        _ => method == Method::POST,
    };
    if !method_ok {
        return Err(GitError::MethodNotAllowed {
            method: method.as_str().chars().take(20).collect(),
        });
    }
    // Latchkey reads the first of a repeated header; an upstream may read
    // another. Refuse the repetition rather than guess.
    for name in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
        if req.headers().get_all(&name).iter().count() > 1 {
            return Err(GitError::UnsupportedMediaType(format!(
                "send one `{name}` header, not several"
            )));
        }
    }
    if let Some(expected) = endpoint.request_content_type() {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ct != expected {
            return Err(GitError::UnsupportedMediaType(format!(
                "expected content type `{expected}`"
            )));
        }
    }
    let gzip = match req
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("identity") => false,
        Some("gzip" | "x-gzip") => true,
        Some(_) => {
            return Err(GitError::UnsupportedMediaType(
                "only gzip request bodies are accepted".into(),
            ));
        }
    };

    let caller = caller_of(&req);
    let headers = filter_request_headers(req.headers());
    let body = req.into_body();
    let bytes_in = Arc::new(AtomicU64::new(0));

    let (updates, caps, upstream_body) = match endpoint {
        Endpoint::InfoRefs(service) => {
            if let Err(refusals) = phases.authorize(&[intent_for_read(&route)]).await {
                return Ok(full(
                    StatusCode::OK,
                    &endpoint.response_content_type(),
                    error_for_info_refs(service, &summary(&refusals)),
                ));
            }
            (Vec::new(), Vec::new(), counted(Vec::new(), body, &bytes_in))
        }
        Endpoint::UploadPack => {
            // Protocol v2 names its command first; read it so the decision
            // covers what upload-pack will run (v0/v1 only fetches).
            let v2 = headers
                .get(crate::upstream::GIT_PROTOCOL)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(':').any(|item| item == "version=2"));
            let mut body = Box::pin(body);
            let (raw, command) = if v2 {
                let (raw, command) = tokio::time::timeout(
                    limits.prelude_timeout,
                    read_front(
                        &mut body,
                        gzip,
                        MAX_UPLOAD_PRELUDE,
                        "fetch request's command section",
                        "send fewer capabilities",
                        |d| {
                            Ok(match parse_upload_pack_command(d, true)? {
                                UploadParse::Complete { command, .. } => Some(command),
                                UploadParse::Incomplete => None,
                            })
                        },
                    ),
                )
                .await
                .map_err(|_| GitError::ClientTimeout)??;
                (raw, command)
            } else {
                (Vec::new(), "fetch".to_owned())
            };
            let intent = intent_for_read(&route).with("command", command);
            if let Err(refusals) = phases.authorize(&[intent]).await {
                return Ok(full(
                    StatusCode::OK,
                    &endpoint.response_content_type(),
                    rejection_response(false, &[], &refusals, &[]),
                ));
            }
            (Vec::new(), Vec::new(), counted(raw, body, &bytes_in))
        }
        Endpoint::ReceivePack => {
            let mut body = Box::pin(body);
            let prelude = tokio::time::timeout(
                limits.prelude_timeout,
                read_prelude(
                    &mut body,
                    gzip,
                    limits.max_prelude_bytes.min(MAX_COMMAND_SECTION),
                    limits.push_certificates,
                ),
            )
            .await
            .map_err(|_| GitError::ClientTimeout)??;
            let Prelude {
                raw,
                updates,
                capabilities,
            } = prelude;
            // An empty command list (git's auth probe before a large push,
            // exactly `0000` and nothing else: `read_prelude` checked) changes
            // nothing upstream and is forwarded without a decision.
            if !updates.is_empty() {
                let intents = intents_for_push(&route, &updates);
                if let Err(refusals) = phases.authorize(&intents).await {
                    drain(body, limits).await;
                    if !wants_report_status(&capabilities) {
                        return Ok(full(
                            StatusCode::FORBIDDEN,
                            "text/plain; charset=utf-8",
                            format!("latchkey: {}\n", summary(&refusals)),
                        ));
                    }
                    return Ok(full(
                        StatusCode::OK,
                        &endpoint.response_content_type(),
                        rejection_response(true, &updates, &refusals, &capabilities),
                    ));
                }
            }
            let b = counted(raw, body, &bytes_in);
            (updates, capabilities, b)
        }
    };

    let fwd = Forward {
        route: route.clone(),
        method,
        headers,
        body: upstream_body,
        caller,
    };
    let ctx = OutcomeCtx {
        phases,
        route,
        updates,
        bytes_in,
    };
    let resp = match upstream.send(fwd, limits).await {
        Ok(r) => r,
        Err(e) => {
            let status = e.status();
            // The client gets an error either way; an outcome that cannot be
            // recorded is logged by the gateway.
            let _unrecorded = ctx
                .clone()
                .finish(status.as_u16(), None, 0, Some(format!("{e:?}")))
                .await;
            return Err(e);
        }
    };
    let (parts, body) = resp.into_parts();
    let tap = (endpoint == Endpoint::ReceivePack
        && wants_report_status(&caps)
        && !parts.headers.contains_key(header::CONTENT_ENCODING))
    .then(|| ReportStatusTap::for_capabilities(&caps));
    let observed = ObservedBody {
        inner: body,
        tap,
        ready: BytesMut::new(),
        held: None,
        bytes_out: 0,
        error: None,
        status: parts.status.as_u16(),
        state: State::Streaming,
        ctx: Some(ctx),
    };
    Ok(Response::from_parts(parts, observed.boxed_unsync()))
}

/// The request body as sent upstream: the bytes already read, then the
/// rest of the client's stream, untouched (trailers dropped), counted.
fn counted<B>(prefix: Vec<Bytes>, body: B, counter: &Arc<AtomicU64>) -> StreamBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let counter = Arc::clone(counter);
    let rest = http_body_util::BodyStream::new(body)
        .map(|frame| match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(BoxError::from(e.into()))),
        })
        .filter_map(futures_util::future::ready);
    let stream = futures_util::stream::iter(prefix.into_iter().map(Ok::<Bytes, BoxError>))
        .chain(rest)
        .map(move |r| {
            r.map(|b| {
                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                Frame::data(b)
            })
        });
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

struct Prelude {
    raw: Vec<Bytes>,
    updates: Vec<RefUpdate>,
    capabilities: Vec<String>,
}

/// Feeds compressed input in small slices so one chunk cannot inflate
/// beyond the bound in one step.
const INFLATE_STEP: usize = 512;

/// Reads the front of a request body until `parse` (over the decompressed
/// bytes so far) returns a value, keeping the raw bytes to replay upstream.
/// Returns them and the value. `what` names the part in errors; `hint` says
/// what to do when it is too large.
async fn read_front<B, T>(
    body: &mut Pin<Box<B>>,
    gzip: bool,
    max: usize,
    what: &str,
    hint: &str,
    mut parse: impl FnMut(&[u8]) -> Result<Option<T>, GitError>,
) -> Result<(Vec<Bytes>, T), GitError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut raw: Vec<Bytes> = Vec::new();
    let mut raw_len = 0usize;
    let mut plain: Vec<u8> = Vec::new();
    let mut decoder = gzip.then(|| flate2::write::GzDecoder::new(Vec::new()));
    let too_large = || GitError::TooLarge(format!("the {what} is larger than {max} bytes; {hint}"));
    loop {
        let frame = match body.frame().await {
            None => {
                return Err(GitError::Protocol(format!(
                    "request body ended inside the {what}"
                )));
            }
            Some(Err(e)) => {
                let e: BoxError = e.into();
                tracing::debug!(error = %e, "reading the {what}");
                return Err(GitError::ClientBody);
            }
            Some(Ok(frame)) => frame,
        };
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        raw_len += chunk.len();
        raw.push(chunk.clone());
        let decoded: &[u8] = match decoder.as_mut() {
            None => {
                plain.extend_from_slice(&chunk);
                &plain
            }
            Some(dec) => {
                for piece in chunk.chunks(INFLATE_STEP) {
                    dec.write_all(piece)
                        .and_then(|()| dec.flush())
                        .map_err(|_| GitError::Protocol("invalid gzip request body".into()))?;
                    if dec.get_ref().len() > max {
                        break;
                    }
                }
                dec.get_ref()
            }
        };
        if let Some(value) = parse(decoded)? {
            return Ok((raw, value));
        }
        if decoded.len() > max || raw_len > 2 * max + 64 * 1024 {
            return Err(too_large());
        }
    }
}

/// Reads a push's body until its command section is parsed, keeping the
/// raw bytes to replay upstream.
///
/// INVARIANT: what it returns with no update is a body that is exactly one
/// flush-pkt: anything else without a command is refused, so no bytes reach
/// the upstream that were read as "nothing to decide".
async fn read_prelude<B>(
    body: &mut Pin<Box<B>>,
    gzip: bool,
    max: usize,
    push_certificates: bool,
) -> Result<Prelude, GitError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (raw, (updates, capabilities, signed, bare_flush)) = read_front(
        body,
        gzip,
        max,
        "push command section",
        "push fewer refs at once",
        |decoded| {
            Ok(match parse_receive_pack_commands(decoded)? {
                CommandsParse::Complete {
                    updates,
                    capabilities,
                    signed,
                    ..
                } => Some((updates, capabilities, signed, decoded == b"0000")),
                CommandsParse::Incomplete => None,
            })
        },
    )
    .await?;
    if signed && !push_certificates {
        return Err(GitError::SignedPushRefused);
    }
    if updates.is_empty() && (!bare_flush || !body_has_ended(body).await?) {
        return Err(GitError::Protocol(
            "the push has no ref update but carries more than a flush-pkt; nothing was forwarded"
                .into(),
        ));
    }
    Ok(Prelude {
        raw,
        updates,
        capabilities,
    })
}

/// Whether the body has no more data (trailers aside). Used only after a
/// complete, command-free prelude, so at most one more frame is read.
async fn body_has_ended<B>(body: &mut Pin<Box<B>>) -> Result<bool, GitError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    loop {
        match body.frame().await {
            None => return Ok(true),
            Some(Err(_)) => return Err(GitError::ClientBody),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) if d.is_empty() => continue,
                Ok(_) => return Ok(false),
                Err(_) => continue,
            },
        }
    }
}

/// Reads and discards what is left of a refused push, within bounds.
async fn drain<B>(mut body: Pin<Box<B>>, limits: &GitLimits)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut seen = 0u64;
    let work = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(d) = frame.into_data() {
                seen += d.len() as u64;
                if seen > limits.max_drain_bytes {
                    break;
                }
            }
        }
    };
    if tokio::time::timeout(limits.drain_timeout, work)
        .await
        .is_err()
    {
        tracing::debug!("gave up draining a refused push");
    }
}

#[derive(Clone)]
struct OutcomeCtx {
    phases: Arc<dyn GitPhases>,
    route: GitRoute,
    updates: Vec<RefUpdate>,
    bytes_in: Arc<AtomicU64>,
}

impl OutcomeCtx {
    fn outcome(
        self,
        status: u16,
        report: Option<crate::report::PushReport>,
        bytes_out: u64,
        error: Option<String>,
    ) -> (Arc<dyn GitPhases>, GitOutcome) {
        let outcome = GitOutcome {
            route: self.route,
            status,
            updates: self.updates,
            report,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            error,
        };
        (self.phases, outcome)
    }

    async fn finish(
        self,
        status: u16,
        report: Option<crate::report::PushReport>,
        bytes_out: u64,
        error: Option<String>,
    ) -> Result<(), OutcomeNotRecorded> {
        let (phases, outcome) = self.outcome(status, report, bytes_out, error);
        phases.outcome(outcome).await
    }
}

/// Merge ready upstream chunks up to this size before writing them.
const COALESCE_BYTES: usize = 64 * 1024;

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), OutcomeNotRecorded>> + Send>>;

enum State {
    Streaming,
    Finishing(BoxFuture),
    Flushing,
    Done,
}

/// The upstream's response on its way to the client: counted, tapped for
/// report-status, and with its last chunk held back until
/// [`GitPhases::outcome`] has returned.
struct ObservedBody {
    inner: StreamBody,
    tap: Option<ReportStatusTap>,
    /// Chunks already received and ready to go, merged so that a small-chunk
    /// upstream (4 KiB FastCGI pages) does not cost a syscall per page.
    ready: BytesMut,
    held: Option<Bytes>,
    bytes_out: u64,
    error: Option<String>,
    status: u16,
    state: State,
    ctx: Option<OutcomeCtx>,
}

impl ObservedBody {
    fn start_finishing(&mut self) {
        let report = self.tap.take().map(ReportStatusTap::into_report);
        let fut: BoxFuture = match self.ctx.take() {
            Some(ctx) => {
                Box::pin(ctx.finish(self.status, report, self.bytes_out, self.error.clone()))
            }
            None => Box::pin(async { Ok(()) }),
        };
        self.state = State::Finishing(fut);
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Streaming => match Pin::new(&mut this.inner).poll_frame(cx) {
                    Poll::Pending if this.ready.is_empty() => return Poll::Pending,
                    Poll::Pending => {
                        let out = this.ready.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        this.bytes_out += data.len() as u64;
                        if let Some(tap) = this.tap.as_mut() {
                            tap.feed(&data);
                        }
                        if let Some(prev) = this.held.replace(data) {
                            if this.ready.is_empty() && prev.len() >= COALESCE_BYTES {
                                return Poll::Ready(Some(Ok(Frame::data(prev))));
                            }
                            this.ready.extend_from_slice(&prev);
                            if this.ready.len() >= COALESCE_BYTES {
                                let out = this.ready.split().freeze();
                                return Poll::Ready(Some(Ok(Frame::data(out))));
                            }
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::warn!(error = %e, "git upstream response failed mid-stream");
                        this.error = Some(format!("upstream response failed: {e}"));
                        this.start_finishing();
                    }
                    Poll::Ready(None) => this.start_finishing(),
                },
                State::Finishing(fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => this.state = State::Flushing,
                    Poll::Ready(Err(OutcomeNotRecorded)) => {
                        // INVARIANT (DESIGN 6): nothing acknowledged is lost.
                        // The held-back end (a push's report-status ends
                        // there) is never sent; the client sees a failure.
                        tracing::error!(
                            "the outcome of a git request could not be recorded; failing the response"
                        );
                        this.held = None;
                        this.ready.clear();
                        this.error = Some("outcome not recorded".into());
                        this.state = State::Flushing;
                    }
                },
                State::Flushing => {
                    if !this.ready.is_empty() {
                        let out = this.ready.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    if let Some(data) = this.held.take() {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    this.state = State::Done;
                    if this.error.is_some() {
                        return Poll::Ready(Some(Err(std::io::Error::other(
                            "git upstream response failed",
                        ))));
                    }
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // The client went away before the end: still record the outcome.
        if let Some(ctx) = self.ctx.take() {
            let report = self.tap.take().map(ReportStatusTap::into_report);
            let (phases, outcome) = ctx.outcome(
                self.status,
                report,
                self.bytes_out,
                Some("client disconnected before the response ended".into()),
            );
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    // The client is gone: nobody to fail; the gateway logs it.
                    let _ = phases.outcome(outcome).await;
                });
            }
        }
    }
}
