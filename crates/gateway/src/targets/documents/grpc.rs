//! The gRPC front end: `POST /google.firestore.v1.Firestore/{Method}` over
//! HTTP/2. Request messages are decoded to classify them and forwarded as
//! they came; responses stream back frame by frame through
//! `latchkey_relay::HeldEnd`, read only to learn a new transaction id, with
//! the trailers held until the outcome is recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use latchkey_core::{Intent, Principal};
use latchkey_documents::{
    ClassifyOptions, FrameDecoder, GrpcCode, Method, classify_grpc, transaction_in_response,
};
use latchkey_relay::{EndError, HeldEnd, Hold, Release, Tap, TapSays};
use tokio::sync::{Mutex, mpsc};

use super::upstream::relay_response_headers;
use super::{Documents, check_routing, read_body};
use crate::pipeline::{
    AuditAction, Authorized, Classified, Code, Durability, Pipeline, Protocol, Refusal, RequestCx,
    Stage, Target, TargetName, grpc_trailers,
};

type FrameResult = Result<Frame<Bytes>, axum::Error>;

/// The gRPC document API as a target.
pub(crate) struct DocumentsGrpc(pub(crate) Arc<Documents>);

/// What classify hands to act.
pub(crate) enum GrpcPlan {
    /// One request message, decided.
    Unary {
        method: Method,
        parts: http::request::Parts,
        /// The framed request, as it came (forwarded to Firestore).
        raw: Bytes,
        /// The one request message in it (run by the embedded store).
        message: Bytes,
        call: latchkey_documents::Classified,
    },
    /// A client stream (`Listen`, `Write`): each message is decided as it
    /// arrives, in act.
    Stream {
        method: Method,
        parts: http::request::Parts,
        body: Body,
    },
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "application/grpc" || v.starts_with("application/grpc+proto"))
}

fn malformed(message: impl Into<String>) -> Refusal {
    Refusal::new(Stage::Classify, Code::Malformed, message)
}

impl Target for DocumentsGrpc {
    type Input = (Method, Request);
    type Plan = GrpcPlan;
    fn name(&self) -> TargetName {
        TargetName::Firestore
    }
    const PROTOCOL: Protocol = Protocol::Grpc;

    fn pipeline(&self) -> &Pipeline {
        &self.0.pipe
    }

    fn authenticate<'a>(
        &'a self,
        _cx: &'a RequestCx,
        req: Request,
    ) -> BoxFuture<'a, Result<(Principal, Self::Input), Refusal>> {
        Box::pin(async move {
            self.0.front()?;
            let path = req.uri().path();
            let method = Method::from_grpc_path(path).ok_or_else(|| {
                Refusal::new(
                    Stage::Classify,
                    Code::Unsupported,
                    format!(
                        "`{}` is not a google.firestore.v1.Firestore method",
                        latchkey_core::echo(path)
                    ),
                )
            })?;
            if !is_grpc(req.headers()) {
                return Err(Refusal::new(
                    Stage::Classify,
                    Code::UnsupportedMediaType,
                    "content-type must be application/grpc",
                ));
            }
            Ok((self.0.authenticate(req.headers())?, (method, req)))
        })
    }

    fn classify<'a>(
        &'a self,
        cx: &'a RequestCx,
        principal: &'a Principal,
        (method, req): Self::Input,
    ) -> BoxFuture<'a, Result<Classified<GrpcPlan>, Refusal>> {
        Box::pin(async move {
            let docs = &self.0;
            let (parts, body) = req.into_parts();
            if method.client_streaming() {
                return Ok(Classified::new(
                    Vec::new(),
                    GrpcPlan::Stream {
                        method,
                        parts,
                        body,
                    },
                ));
            }
            let max = docs.max_request();
            let raw = read_body(body, max + 5).await?;
            let mut decoder = FrameDecoder::new(max);
            decoder.push(&raw);
            let message = match decoder.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => return Err(malformed("the request holds no complete message")),
                Err(e) => return Err(malformed(e.to_string())),
            };
            if !matches!(decoder.next_message(), Ok(None)) || !decoder.is_empty() {
                return Err(malformed(format!(
                    "{} takes exactly one request message",
                    method.as_str()
                )));
            }
            let call = {
                let record_values = |p: &latchkey_documents::DocPath| docs.records_values(p);
                let opts = ClassifyOptions {
                    record_values: &record_values,
                };
                classify_grpc(method, &message, &opts)
            }
            .map_err(Refusal::from)?;
            check_routing(&parts.headers, &call.database)?;
            let asks = docs
                .asks(cx, principal, &call, &serde_json::Map::new())
                .await?;
            let durability = Documents::durability(&call);
            let mut c = Classified::new(
                asks,
                GrpcPlan::Unary {
                    method,
                    parts,
                    raw,
                    message,
                    call,
                },
            );
            c.durability = durability;
            Ok(c)
        })
    }

    fn deny<'a>(
        &'a self,
        _cx: &'a RequestCx,
        _plan: GrpcPlan,
        authorized: Authorized,
    ) -> BoxFuture<'a, Response> {
        Box::pin(async move { Documents::denial(&authorized).render(Self::PROTOCOL) })
    }

    fn act<'a>(
        &'a self,
        cx: &'a RequestCx,
        principal: Principal,
        plan: GrpcPlan,
        authorized: Authorized,
    ) -> BoxFuture<'a, Result<Response, Refusal>> {
        Box::pin(async move {
            match plan {
                GrpcPlan::Stream {
                    method,
                    parts,
                    body,
                } if method == Method::Write
                    && matches!(self.0.front()?.backend, super::Backend::Embedded(_)) =>
                {
                    drop((parts, body));
                    Err(Refusal::new(
                        Stage::Act,
                        Code::Unsupported,
                        "the Write stream is not served by Latchkey's embedded document store; \
                         the clients use Commit, which is",
                    )
                    .with_grpc(GrpcCode::Unimplemented))
                }
                GrpcPlan::Stream {
                    method,
                    parts,
                    body,
                } => Ok(stream_call(
                    self.0.clone(),
                    method,
                    principal,
                    cx.clone(),
                    parts,
                    body,
                )),
                GrpcPlan::Unary {
                    method,
                    parts,
                    raw,
                    message,
                    call: classified,
                } => {
                    let docs = &self.0;
                    let front = docs.front()?;
                    if let super::Backend::Embedded(store) = &front.backend {
                        return docs
                            .embedded_unary(
                                store,
                                cx,
                                &principal,
                                method,
                                &message,
                                &classified,
                                authorized,
                                false,
                            )
                            .await
                            .map(super::embedded::Reply::into_grpc);
                    }
                    let call = Arc::new(Call {
                        docs: docs.clone(),
                        method,
                        principal,
                        request_id: cx.request_id.clone(),
                        intents: Mutex::new(authorized.intents),
                        transaction: classified.transaction.clone(),
                        begins_transaction: classified.begins_transaction,
                        finished: AtomicBool::new(false),
                    });
                    let path = parts.uri.path().to_owned();
                    // An allowed read goes upstream while its decision
                    // records sync; the response waits for both.
                    let upstream = authorized
                        .pending
                        .alongside(
                            &docs.pipe,
                            front
                                .upstream()?
                                .grpc(&path, &parts.headers, Body::from(raw), true),
                        )
                        .await?;
                    let upstream = match upstream {
                        Ok(r) => r,
                        Err(e) => {
                            docs.pipe
                                .metrics
                                .upstream_error(crate::metrics::UpstreamKind::Firestore);
                            call.finish(GrpcCode::Unavailable.as_i32(), Some(&e.to_string()))
                                .await?;
                            return Err(Refusal::new(
                                Stage::Act,
                                Code::UpstreamUnavailable,
                                e.to_string(),
                            )
                            .already_recorded());
                        }
                    };
                    relay(call, upstream, None).await
                }
            }
        })
    }
}

/// Everything a call needs after authorization, shared with what relays
/// its response.
struct Call {
    docs: Arc<Documents>,
    method: Method,
    principal: Principal,
    request_id: String,
    /// Intents decided so far (a stream adds to them).
    intents: Mutex<Vec<Intent>>,
    /// The transaction the call commits or rolls back, if any.
    transaction: Option<Bytes>,
    /// Whether the response may carry a new transaction id.
    begins_transaction: bool,
    /// Whether the outcome is recorded already: once per call, whichever
    /// side (the relay, a refused stream message) ends it first.
    finished: AtomicBool,
}

impl Call {
    /// Records the outcome (once); on success ends a committed or
    /// rolled-back transaction's binding.
    async fn finish(&self, status: i32, message: Option<&str>) -> Result<(), Refusal> {
        if self.finished.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let name = GrpcCode::from_i32(status).name();
        let intents = self.intents.lock().await.clone();
        self.docs
            .record_outcome(
                self.method,
                &self.request_id,
                &self.principal,
                &intents,
                name,
                message,
                None,
            )
            .await?;
        if status == 0
            && matches!(self.method, Method::Commit | Method::Rollback)
            && let Some(tx) = &self.transaction
        {
            self.docs.end_transaction(tx);
        }
        Ok(())
    }
}

fn status_of(headers: &HeaderMap) -> Option<(i32, Option<String>)> {
    let status = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(latchkey_documents::status::grpc_message_decode);
    Some((status, message))
}

/// A response body fed by a channel (the relay task's output).
fn channel_body(rx: mpsc::Receiver<FrameResult>) -> Body {
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    Body::new(StreamBody::new(stream))
}

fn grpc_head(status: http::StatusCode, upstream: &HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    relay_response_headers(upstream, resp.headers_mut());
    resp
}

/// Binds a new transaction id before the frame that carries it passes.
struct BindTransaction {
    call: Arc<Call>,
    decoder: Option<FrameDecoder>,
}

impl Tap for BindTransaction {
    fn feed(&mut self, chunk: &Bytes) -> TapSays {
        if let Some(decoder) = self.decoder.as_mut() {
            decoder.push(chunk);
            while let Ok(Some(msg)) = decoder.next_message() {
                if let Some(tx) = transaction_in_response(self.call.method, &msg) {
                    self.call.docs.bind_transaction(
                        tx,
                        &self.call.principal,
                        self.call.docs.pipe.clock.unix_millis(),
                    );
                    self.decoder = None;
                    break;
                }
            }
        }
        TapSays::Pass
    }
}

/// The upstream response's body, its trailers held until the outcome is
/// recorded (see `latchkey_relay`); a record that fails ends the call with
/// the audit refusal's status instead of the upstream's.
fn held(call: Arc<Call>, body: Incoming) -> HeldEnd<Incoming, BindTransaction> {
    let tap = BindTransaction {
        decoder: call
            .begins_transaction
            .then(|| FrameDecoder::new(64 * 1024 * 1024)),
        call: call.clone(),
    };
    let finish: latchkey_relay::Finish<BindTransaction> = Box::new(move |_, ending| {
        Box::pin(async move {
            let (status, message) = match (&ending.trailers, &ending.error) {
                (Some(t), _) => status_of(t).unwrap_or((GrpcCode::Unknown.as_i32(), None)),
                (None, Some(EndError::Upstream(e))) => (
                    GrpcCode::Unavailable.as_i32(),
                    Some(format!("the Firestore upstream stream failed: {e}")),
                ),
                (None, Some(EndError::CallerGone)) => (
                    GrpcCode::Cancelled.as_i32(),
                    Some("the caller went away before the response ended".to_owned()),
                ),
                (None, _) => (
                    GrpcCode::Unknown.as_i32(),
                    Some("the Firestore upstream ended the stream without a status".to_owned()),
                ),
            };
            match call.finish(status, message.as_deref()).await {
                Ok(()) if ending.trailers.is_some() => Release::Pass,
                Ok(()) => Release::Trailers(grpc_trailers(
                    GrpcCode::from_i32(status),
                    message.as_deref().unwrap_or(""),
                )),
                Err(r) => Release::Trailers(grpc_trailers(r.grpc_code(), &r.message)),
            }
        })
    });
    HeldEnd::new(body, Hold::Trailers, tap, finish)
}

/// Relays an upstream response. A trailers-only answer is recorded before
/// it is returned; otherwise the body is [`held`]: a unary call's response
/// body, or drained by a task into the stream's shared channel.
async fn relay(
    call: Arc<Call>,
    upstream: http::Response<Incoming>,
    sender: Option<SharedSender>,
) -> Result<Response, Refusal> {
    let (parts, body) = upstream.into_parts();
    let head_status = status_of(&parts.headers);
    let Some(sender) = sender else {
        if let Some((status, message)) = head_status {
            call.finish(status, message.as_deref()).await?;
            return Ok(grpc_head(parts.status, &parts.headers, Body::new(body)));
        }
        // A unary call: relayed in the connection's own task, no channel.
        let body = held(call, body);
        return Ok(grpc_head(parts.status, &parts.headers, Body::new(body)));
    };
    let head_headers = parts.headers.clone();
    let relay_task = {
        let sender = sender.clone();
        async move {
            if let Some((status, message)) = head_status {
                // A stream's upstream answered trailers-only.
                let frame = match call.finish(status, message.as_deref()).await {
                    Ok(()) => {
                        let mut h = HeaderMap::new();
                        for key in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
                            if let Some(v) = head_headers.get(key) {
                                h.insert(key, v.clone());
                            }
                        }
                        Frame::trailers(h)
                    }
                    Err(r) => Frame::trailers(grpc_trailers(r.grpc_code(), &r.message)),
                };
                send_last(&sender, frame).await;
                return;
            }
            // The same steps as a unary call, with each frame sent on down
            // the shared channel; the relay's last frame is the trailers.
            let mut relay = held(call, body);
            while let Some(Ok(frame)) = relay.frame().await {
                if frame.is_trailers() {
                    send_last(&sender, frame).await;
                    return;
                }
                if !send(&sender, Ok(frame)).await {
                    return;
                }
            }
        }
    };
    tokio::spawn(relay_task);
    // A stream's head was returned already; this response is unused.
    Ok(Response::new(Body::empty()))
}

/// The response channel, shared by the relay and (for streams) the request
/// pump; whoever sends the trailers takes it, so nothing follows them.
type SharedSender = Arc<Mutex<Option<mpsc::Sender<FrameResult>>>>;

async fn send(sender: &SharedSender, frame: FrameResult) -> bool {
    let guard = sender.lock().await;
    match guard.as_ref() {
        Some(tx) => tx.send(frame).await.is_ok(),
        None => false,
    }
}

async fn send_last(sender: &SharedSender, frame: Frame<Bytes>) {
    let tx = sender.lock().await.take();
    if let Some(tx) = tx {
        let _ = tx.send(Ok(frame)).await;
    }
}

/// A client-streaming call (`Listen`, `Write`): each request message is
/// classified and decided as it arrives; a denied message ends the call
/// with PERMISSION_DENIED and cancels the upstream stream before the
/// message reaches it.
fn stream_call(
    docs: Arc<Documents>,
    method: Method,
    principal: Principal,
    cx: RequestCx,
    parts: http::request::Parts,
    mut body: Body,
) -> Response {
    let call = Arc::new(Call {
        docs: docs.clone(),
        method,
        principal,
        request_id: cx.request_id.clone(),
        intents: Mutex::new(Vec::new()),
        transaction: None,
        begins_transaction: false,
        finished: AtomicBool::new(false),
    });
    let (down_tx, down_rx) = mpsc::channel::<FrameResult>(8);
    let sender: SharedSender = Arc::new(Mutex::new(Some(down_tx)));
    let (up_tx, up_rx) = mpsc::channel::<FrameResult>(8);

    // The upstream side: open the stream, then relay its frames.
    let relay_handle = {
        let call = call.clone();
        let sender = sender.clone();
        let path = parts.uri.path().to_owned();
        let headers = parts.headers.clone();
        tokio::spawn(async move {
            let docs = call.docs.clone();
            let Ok(front) = docs.front() else {
                return;
            };
            let upstream = match &front.backend {
                super::Backend::Embedded(store) => {
                    embedded_listen(store, call, sender, up_rx).await;
                    return;
                }
                super::Backend::Firestore(upstream) => upstream,
            };
            match upstream
                .grpc(&path, &headers, channel_body(up_rx), false)
                .await
            {
                Ok(resp) => {
                    let _ = relay(call, resp, Some(sender)).await;
                }
                Err(e) => {
                    docs.pipe
                        .metrics
                        .upstream_error(crate::metrics::UpstreamKind::Firestore);
                    let message = e.to_string();
                    let frame = match call
                        .finish(GrpcCode::Unavailable.as_i32(), Some(&message))
                        .await
                    {
                        Ok(()) => grpc_trailers(GrpcCode::Unavailable, &message),
                        Err(r) => grpc_trailers(r.grpc_code(), &r.message),
                    };
                    send_last(&sender, Frame::trailers(frame)).await;
                }
            }
        })
    };

    // The request side: decode, classify, decide, forward.
    {
        let call = call.clone();
        let routing_headers = parts.headers.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let docs = call.docs.clone();
            let max = docs.max_request();
            let mut decoder = FrameDecoder::new(max);
            let mut classifier = latchkey_documents::StreamClassifier::new(method);
            let refuse = |r: Refusal| {
                let call = call.clone();
                let sender = sender.clone();
                let relay_handle = relay_handle.abort_handle();
                async move {
                    relay_handle.abort();
                    let _ = call.finish(r.grpc_code().as_i32(), Some(&r.message)).await;
                    send_last(
                        &sender,
                        Frame::trailers(grpc_trailers(r.grpc_code(), &r.message)),
                    )
                    .await;
                }
            };
            let classify_refused = |r: Refusal| {
                let docs = docs.clone();
                let cx = cx.clone();
                let principal = call.principal.clone();
                async move {
                    let action = AuditAction::Refused(TargetName::Firestore, r.stage);
                    docs.pipe.refused(&cx, Some(&principal), action, r).await
                }
            };
            loop {
                let frame = match body.frame().await {
                    Some(Ok(f)) => f,
                    // The caller went away or half-closed: end the upstream
                    // request stream too.
                    Some(Err(_)) | None => return,
                };
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                decoder.push(data);
                loop {
                    let message = match decoder.next_message() {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(e) => {
                            refuse(classify_refused(malformed(e.to_string())).await).await;
                            return;
                        }
                    };
                    let classified = {
                        let record_values =
                            |p: &latchkey_documents::DocPath| docs.records_values(p);
                        let opts = ClassifyOptions {
                            record_values: &record_values,
                        };
                        classifier.classify(&message, &opts)
                    };
                    let classified = match classified {
                        Ok(c) => c,
                        Err(e) => {
                            refuse(classify_refused(Refusal::from(e)).await).await;
                            return;
                        }
                    };
                    if let Err(r) = check_routing(&routing_headers, &classified.database) {
                        refuse(classify_refused(r).await).await;
                        return;
                    }
                    if !classified.accesses.is_empty() || classified.transaction.is_some() {
                        let asks = match docs
                            .asks(&cx, &call.principal, &classified, &serde_json::Map::new())
                            .await
                        {
                            Ok(a) => a,
                            Err(r) => {
                                refuse(classify_refused(r).await).await;
                                return;
                            }
                        };
                        match docs
                            .pipe
                            .authorize(&cx, &call.principal, asks, Durability::Now)
                            .await
                        {
                            Ok(a) if a.all_allowed() => call.intents.lock().await.extend(a.intents),
                            Ok(a) => {
                                refuse(Documents::denial(&a)).await;
                                return;
                            }
                            Err(r) => {
                                refuse(r).await;
                                return;
                            }
                        }
                    }
                    let framed = latchkey_documents::encode_frame(&message);
                    if up_tx.send(Ok(Frame::data(framed))).await.is_err() {
                        return;
                    }
                }
            }
        });
    }

    let mut resp = Response::new(channel_body(down_rx));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// `Listen` on the embedded store: the request messages the request side
/// decided (framed, as they would go to Firestore) are decoded and fed to
/// the store's listener; its responses go down the shared channel. The
/// outcome is recorded when either side ends the stream.
async fn embedded_listen(
    store: &latchkey_docstore::DocumentStore,
    call: Arc<Call>,
    sender: SharedSender,
    up_rx: mpsc::Receiver<FrameResult>,
) {
    use futures_util::StreamExt;
    use prost::Message;
    let max = call.docs.max_request();
    let requests = futures_util::stream::unfold(
        (up_rx, FrameDecoder::new(max)),
        |(mut rx, mut decoder)| async move {
            loop {
                match decoder.next_message() {
                    Ok(Some(m)) => {
                        // Decided already, so it decodes; a message that
                        // did not would end the stream.
                        let request = latchkey_docstore::proto::ListenRequest::decode(m).ok()?;
                        return Some((request, (rx, decoder)));
                    }
                    Ok(None) => {}
                    Err(_) => return None,
                }
                match rx.recv().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            decoder.push(data);
                        }
                    }
                    Some(Err(_)) | None => return None,
                }
            }
        },
    )
    .boxed();
    let mut responses = store.listen(requests);
    while let Some(response) = responses.next().await {
        match response {
            Ok(r) => {
                let frame = Frame::data(latchkey_documents::encode_frame(&r.encode_to_vec()));
                if !send(&sender, Ok(frame)).await {
                    let _ = call
                        .finish(
                            GrpcCode::Cancelled.as_i32(),
                            Some("the caller went away before the response ended"),
                        )
                        .await;
                    return;
                }
            }
            Err(status) => {
                let trailers = match call
                    .finish(status.code.as_i32(), Some(&status.message))
                    .await
                {
                    Ok(()) => grpc_trailers(status.code, &status.message),
                    Err(r) => grpc_trailers(r.grpc_code(), &r.message),
                };
                send_last(&sender, Frame::trailers(trailers)).await;
                return;
            }
        }
    }
    let trailers = match call.finish(GrpcCode::Ok.as_i32(), None).await {
        Ok(()) => grpc_trailers(GrpcCode::Ok, ""),
        Err(r) => grpc_trailers(r.grpc_code(), &r.message),
    };
    send_last(&sender, Frame::trailers(trailers)).await;
}
