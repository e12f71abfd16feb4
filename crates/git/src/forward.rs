//! The smart-HTTP request path, without the gateway: read a request as far
//! as deciding needs ([`prepare`]), then either refuse it the way git shows
//! refusals ([`Prepared::refuse`]) or stream it upstream
//! ([`Prepared::forward`]). Policy and the audit log are the caller's: this
//! module never calls back into it.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use latchkey_core::Intent;

use crate::GitError;
use crate::classify::{intent_for_read, intents_for_push};
use crate::commands::{CommandsParse, MAX_COMMAND_SECTION, RefUpdate, parse_receive_pack_commands};
use crate::outcome::GitOutcome;
use crate::report::{
    RefDenial, ReportStatusTap, error_for_info_refs, rejection_response, wants_report_status,
};
use crate::route::{Endpoint, GitRoute};
use crate::upload::{MAX_UPLOAD_PRELUDE, UploadParse, parse_upload_pack_command};
pub use crate::upstream::{BoxError, StreamBody};
use crate::upstream::{Forward, Upstream, filter_request_headers};
pub use crate::upstream::{GitCaller, GitLimits};

/// A response body Latchkey builds itself (a refusal): small, in memory.
pub type GitBody = UnsyncBoxBody<Bytes, std::io::Error>;

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

/// A plain-text answer for a request refused before it reached git's own
/// protocol (bad path, bad method, policy on a push without report-status):
/// `status`, and `message` as one line.
pub fn plain_response(status: StatusCode, message: &str) -> Response<GitBody> {
    full(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

fn summary(denials: &[RefDenial]) -> String {
    let msgs: Vec<&str> = denials.iter().map(|r| r.message.as_str()).collect();
    if msgs.is_empty() {
        "denied by policy".into()
    } else {
        msgs.join("; ")
    }
}

/// A Git request read as far as deciding it needs: what it asks for
/// ([`Prepared::intents`]) and what forwarding it takes. Nothing has
/// reached an upstream yet.
pub struct Prepared {
    route: GitRoute,
    method: Method,
    headers: HeaderMap,
    caller: GitCaller,
    intents: Vec<Intent>,
    updates: Vec<RefUpdate>,
    capabilities: Vec<String>,
    /// The request body as the upstream gets it: what was read to decide,
    /// then the rest of the client's stream.
    body: StreamBody,
    bytes_in: Arc<AtomicU64>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("route", &self.route)
            .field("intents", &self.intents)
            .finish_non_exhaustive()
    }
}

/// Reads `req` for `route` as far as deciding needs: checks the method and
/// media type, and for a push reads (bounded, under a time-out) its command
/// section; for a protocol v2 fetch its command. The route is first put in
/// the form `upstream` reads it in ([`GitRoute::for_upstream`]).
///
/// INVARIANT: every ref update the upstream will read is one of the
/// returned intents. A push with no command is accepted only when its body
/// is exactly a flush-pkt (git's probe before a large push); it then has no
/// intent, as it changes nothing.
pub async fn prepare<B>(
    req: http::Request<B>,
    route: GitRoute,
    upstream: &Upstream,
    caller: GitCaller,
    limits: &GitLimits,
) -> Result<Prepared, GitError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let route = route.for_upstream(upstream);
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

    let headers = filter_request_headers(req.headers());
    let body = req.into_body();
    let bytes_in = Arc::new(AtomicU64::new(0));

    let (intents, updates, capabilities, body) = match endpoint {
        Endpoint::InfoRefs(_) => (
            vec![intent_for_read(&route)],
            Vec::new(),
            Vec::new(),
            counted(Vec::new(), body, &bytes_in),
        ),
        Endpoint::UploadPack => {
            // Protocol v2 names its command first; read it so the decision
            // covers what upload-pack will run (v0/v1 only fetches).
            let v2 = headers
                .get(crate::upstream::GIT_PROTOCOL)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(':').any(|item| item == "version=2"));
            let mut body = Box::pin(body);
            let (raw, command) = if v2 {
                tokio::time::timeout(
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
                .map_err(|_| GitError::ClientTimeout)??
            } else {
                (Vec::new(), "fetch".to_owned())
            };
            (
                vec![intent_for_read(&route).with("command", command)],
                Vec::new(),
                Vec::new(),
                counted(raw, body, &bytes_in),
            )
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
            (
                intents_for_push(&route, &updates),
                updates,
                capabilities,
                counted(raw, body, &bytes_in),
            )
        }
    };
    Ok(Prepared {
        route,
        method,
        headers,
        caller,
        intents,
        updates,
        capabilities,
        body,
        bytes_in,
    })
}

impl Prepared {
    /// The route, in the form the upstream reads it.
    pub fn route(&self) -> &GitRoute {
        &self.route
    }

    /// What the request asks for: `git.read` on the repository, or one
    /// `git.push` per ref update (none for a bare-flush probe).
    pub fn intents(&self) -> &[Intent] {
        &self.intents
    }

    /// A push's ref updates, in the order the client sent them.
    pub fn updates(&self) -> &[RefUpdate] {
        &self.updates
    }

    /// The response git shows when policy refuses the request: an
    /// advertisement that ends in `ERR` for `info/refs`, an `ERR` pkt-line
    /// for a fetch, report-status rejecting every ref for a push (plain
    /// text when the client asked for no report). The rest of a refused
    /// push is read and discarded first (bounded), so the client sees the
    /// refusal instead of a reset connection. No byte reaches an upstream.
    pub async fn refuse(self, denials: &[RefDenial], limits: &GitLimits) -> Response<GitBody> {
        let endpoint = self.route.endpoint;
        let content_type = endpoint.response_content_type();
        match endpoint {
            Endpoint::InfoRefs(service) => full(
                StatusCode::OK,
                &content_type,
                error_for_info_refs(service, &summary(denials)),
            ),
            Endpoint::UploadPack => full(
                StatusCode::OK,
                &content_type,
                rejection_response(false, &[], denials, &[]),
            ),
            Endpoint::ReceivePack => {
                drain(Box::pin(self.body), limits).await;
                if !wants_report_status(&self.capabilities) {
                    return plain_response(
                        StatusCode::FORBIDDEN,
                        &format!("latchkey: {}", summary(denials)),
                    );
                }
                full(
                    StatusCode::OK,
                    &content_type,
                    rejection_response(true, &self.updates, denials, &self.capabilities),
                )
            }
        }
    }

    /// Streams the request to `upstream` and returns the response head with
    /// the upstream's body, untouched. The caller holds the body's end
    /// until the outcome is recorded (see [`Forwarded`]). On failure, the
    /// error and the outcome to record for it.
    pub async fn forward(
        self,
        upstream: &Upstream,
        limits: &GitLimits,
    ) -> Result<Forwarded, (GitError, GitOutcome)> {
        let outcome = PendingOutcome {
            route: self.route.clone(),
            updates: self.updates,
            bytes_in: self.bytes_in,
        };
        let fwd = Forward {
            route: self.route,
            method: self.method,
            headers: self.headers,
            body: self.body,
            caller: self.caller,
        };
        let response = match upstream.send(fwd, limits).await {
            Ok(r) => r,
            Err(e) => {
                let status = e.status().as_u16();
                let detail = format!("{e:?}");
                return Err((e, outcome.finish(status, None, 0, Some(detail))));
            }
        };
        let report_tap = (outcome.route.endpoint == Endpoint::ReceivePack
            && wants_report_status(&self.capabilities)
            && !response.headers().contains_key(header::CONTENT_ENCODING))
        .then(|| ReportStatusTap::for_capabilities(&self.capabilities));
        Ok(Forwarded {
            response,
            report_tap,
            outcome,
        })
    }
}

/// An upstream's answer on its way back.
pub struct Forwarded {
    /// The head and the streamed body, as the upstream sent them.
    pub response: Response<StreamBody>,
    /// For a push whose client asked for report-status: feed it the body
    /// to learn what the upstream did per ref.
    pub report_tap: Option<ReportStatusTap>,
    /// The outcome to complete once the body has ended.
    pub outcome: PendingOutcome,
}

/// What is known of an outcome before the response ends.
#[derive(Debug, Clone)]
pub struct PendingOutcome {
    route: GitRoute,
    updates: Vec<RefUpdate>,
    bytes_in: Arc<AtomicU64>,
}

impl PendingOutcome {
    /// The outcome, once the response has ended (or failed).
    pub fn finish(
        self,
        status: u16,
        report: Option<crate::report::PushReport>,
        bytes_out: u64,
        error: Option<String>,
    ) -> GitOutcome {
        GitOutcome {
            route: self.route,
            status,
            updates: self.updates,
            report,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            error,
        }
    }
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
