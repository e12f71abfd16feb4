//! The gRPC front end: `POST /google.firestore.v1.Firestore/{Method}` over
//! HTTP/2. Request messages are decoded to classify them and forwarded as
//! they came; responses stream back frame by frame, read only to learn a
//! new transaction id and the final status.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use latchkey_core::{Intent, Principal};
use latchkey_documents::{
    ClassifyOptions, FrameDecoder, GrpcCode, Method, classify_grpc, transaction_in_response,
};
use tokio::sync::{Mutex, mpsc};

use super::upstream::relay_response_headers;
use super::{FirestoreFront, Overlap, Refusal, read_body};
use crate::app::Gateway;
use crate::request_id::new_request_id;

type FrameResult = Result<Frame<Bytes>, axum::Error>;

/// The handler for every gRPC method.
pub(crate) async fn grpc(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let request_id = new_request_id();
    let mut resp = match handle(&gw, &request_id, req).await {
        Ok(r) => r,
        Err(r) => r.grpc_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn front(gw: &Gateway) -> Result<Arc<FirestoreFront>, Refusal> {
    gw.firestore.clone().ok_or_else(|| {
        Refusal::new(
            GrpcCode::Unimplemented,
            "no Firestore upstream is configured: add a [firestore] table to latchkey.toml",
        )
    })
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "application/grpc" || v.starts_with("application/grpc+proto"))
}

/// Everything a call needs after authorization, shared with the task that
/// relays its response.
struct Call {
    gw: Arc<Gateway>,
    front: Arc<FirestoreFront>,
    method: Method,
    principal: Principal,
    request_id: String,
    /// Intents decided so far (a stream adds to them).
    intents: Mutex<Vec<Intent>>,
    /// The transaction the call commits or rolls back, if any.
    transaction: Option<Bytes>,
    /// Whether the response may carry a new transaction id.
    begins_transaction: bool,
}

impl Call {
    /// Records the outcome; on success ends a committed or rolled-back
    /// transaction's binding.
    async fn finish(&self, status: i32, message: Option<&str>) -> Result<(), Refusal> {
        let name = GrpcCode::from_i32(status).name();
        let intents = self.intents.lock().await;
        self.front
            .record_outcome(
                &self.gw,
                self.method,
                &self.request_id,
                &self.principal,
                &intents,
                name,
                message,
            )
            .await?;
        if status == 0
            && matches!(self.method, Method::Commit | Method::Rollback)
            && let Some(tx) = &self.transaction
        {
            self.front.end_transaction(tx);
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

fn trailers(code: GrpcCode, message: &str) -> Frame<Bytes> {
    let mut h = HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from(code.as_i32()));
    if let Ok(v) = HeaderValue::from_str(&latchkey_documents::grpc_message_encode(message)) {
        h.insert("grpc-message", v);
    }
    Frame::trailers(h)
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

async fn handle(gw: &Arc<Gateway>, request_id: &str, req: Request) -> Result<Response, Refusal> {
    let front = front(gw)?;
    let path = req.uri().path().to_owned();
    let method = Method::from_grpc_path(&path).ok_or_else(|| {
        Refusal::new(
            GrpcCode::Unimplemented,
            format!(
                "`{}` is not a google.firestore.v1.Firestore method",
                latchkey_core::echo(&path)
            ),
        )
    })?;
    if !is_grpc(req.headers()) {
        return Err(Refusal::new(
            GrpcCode::InvalidArgument,
            "content-type must be application/grpc",
        ));
    }
    let principal = front
        .authenticate(
            gw,
            request_id,
            req.headers(),
            crate::refusals::ClientAddr::of(req.extensions()),
        )
        .await?;
    let (parts, body) = req.into_parts();
    if method.client_streaming() {
        return Ok(stream_call(
            gw.clone(),
            front,
            method,
            principal,
            request_id,
            parts,
            body,
        ));
    }

    let max = front.max_request();
    let raw = match read_body(body, max + 5).await {
        Ok(b) => b,
        Err(r) => {
            return Err(front
                .refuse(gw, request_id, &principal, "malformed", r)
                .await);
        }
    };
    let mut decoder = FrameDecoder::new(max);
    decoder.push(&raw);
    let message = match decoder.next_message() {
        Ok(Some(m)) => m,
        Ok(None) => {
            let r = Refusal::new(
                GrpcCode::InvalidArgument,
                "the request holds no complete message",
            );
            return Err(front
                .refuse(gw, request_id, &principal, "malformed", r)
                .await);
        }
        Err(e) => {
            let r = Refusal::new(GrpcCode::InvalidArgument, e.to_string());
            return Err(front
                .refuse(gw, request_id, &principal, "malformed", r)
                .await);
        }
    };
    if !matches!(decoder.next_message(), Ok(None)) || !decoder.is_empty() {
        let r = Refusal::new(
            GrpcCode::InvalidArgument,
            format!("{} takes exactly one request message", method.as_str()),
        );
        return Err(front
            .refuse(gw, request_id, &principal, "malformed", r)
            .await);
    }
    let classified = {
        let record_values = |p: &latchkey_documents::DocPath| front.records_values(p);
        let opts = ClassifyOptions {
            record_values: &record_values,
        };
        classify_grpc(method, &message, &opts)
    };
    let classified = match classified {
        Ok(c) => c,
        Err(e) => {
            let r = Refusal::new(e.code(), e.to_string());
            return Err(front
                .refuse(gw, request_id, &principal, "malformed", r)
                .await);
        }
    };
    if let Err(r) = super::check_routing(&parts.headers, &classified.database) {
        return Err(front
            .refuse(gw, request_id, &principal, "malformed", r)
            .await);
    }
    let authorized = front
        .authorize(gw, request_id, &principal, &classified, Overlap::Reads)
        .await?;
    let pending = authorized.pending;
    let call = Arc::new(Call {
        gw: gw.clone(),
        front: front.clone(),
        method,
        principal,
        request_id: request_id.to_owned(),
        intents: Mutex::new(authorized.intents),
        transaction: classified.transaction.clone(),
        begins_transaction: classified.begins_transaction,
    });
    // An allowed read goes upstream while its decision records sync; the
    // response waits for both (writes were durable before this point).
    let upstream = pending
        .alongside(
            gw,
            front
                .upstream
                .grpc(&path, &parts.headers, Body::from(raw), true),
        )
        .await?;
    let upstream = match upstream {
        Ok(r) => r,
        Err(e) => {
            call.finish(GrpcCode::Unavailable.as_i32(), Some(&e.to_string()))
                .await?;
            return Err(Refusal::new(GrpcCode::Unavailable, e.to_string()));
        }
    };
    relay(call, upstream, None).await
}

/// Relays an upstream response. A trailers-only answer is recorded before
/// it is returned; otherwise a [`ResponseRelay`] (a unary call's body, or
/// drained by a task for a stream) forwards frames, binds a new
/// transaction before the caller can see its id, and records the outcome
/// before the trailers reach the caller (durably for a write; a read's
/// outcome is appended without waiting, see `record_outcome`).
async fn relay(
    call: Arc<Call>,
    upstream: http::Response<Incoming>,
    sender: Option<SharedSender>,
) -> Result<Response, Refusal> {
    let (parts, body) = upstream.into_parts();
    if let Some((status, message)) = status_of(&parts.headers)
        && sender.is_none()
    {
        call.finish(status, message.as_deref()).await?;
        return Ok(grpc_head(parts.status, &parts.headers, Body::new(body)));
    }
    let Some(sender) = sender else {
        // A unary call: relayed in the connection's own task, no channel.
        let body = ResponseRelay::new(body, call, OnDrop::RecordCancelled);
        return Ok(grpc_head(parts.status, &parts.headers, Body::new(body)));
    };
    let head_status = status_of(&parts.headers);
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
                    Err(r) => trailers(r.code, &r.message),
                };
                send_last(&sender, frame).await;
                return;
            }
            // The same steps as a unary call, with each frame sent on down
            // the shared channel; the relay's last frame is the trailers.
            let mut relay = ResponseRelay::new(body, call, OnDrop::Nothing);
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

type FinishFuture = Pin<Box<dyn Future<Output = Frame<Bytes>> + Send>>;

/// What a [`ResponseRelay`] dropped before its end does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDrop {
    /// Records a `CANCELLED` outcome: the caller went away (unary calls).
    RecordCancelled,
    /// Nothing: a stream's relay is dropped when the request side refuses
    /// a message, and that refusal records the outcome itself.
    Nothing,
}

/// An upstream response on its way to the caller: frames pass as they come
/// (a new transaction id is bound before the frame that carries it
/// passes), and the trailers wait for the outcome record. A unary call's
/// response body is this relay, polled by the caller's connection; a
/// stream's relay task drains it into the shared channel.
struct ResponseRelay {
    inner: Incoming,
    call: Arc<Call>,
    tap: Option<FrameDecoder>,
    finishing: Option<FinishFuture>,
    done: bool,
    on_drop: OnDrop,
}

impl ResponseRelay {
    fn new(inner: Incoming, call: Arc<Call>, on_drop: OnDrop) -> Self {
        let tap = call
            .begins_transaction
            .then(|| FrameDecoder::new(64 * 1024 * 1024));
        Self {
            inner,
            call,
            tap,
            finishing: None,
            done: false,
            on_drop,
        }
    }

    /// Starts recording the outcome; `pass` is the upstream's own trailers,
    /// returned when the record succeeds.
    fn finish(&mut self, status: i32, message: Option<String>, pass: Option<Frame<Bytes>>) {
        let call = self.call.clone();
        self.finishing = Some(Box::pin(async move {
            match call.finish(status, message.as_deref()).await {
                Ok(()) => pass.unwrap_or_else(|| {
                    trailers(GrpcCode::from_i32(status), message.as_deref().unwrap_or(""))
                }),
                Err(r) => trailers(r.code, &r.message),
            }
        }));
    }
}

impl hyper::body::Body for ResponseRelay {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(f) = this.finishing.as_mut() {
                let frame = ready!(f.as_mut().poll(cx));
                this.finishing = None;
                this.done = true;
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        if let Some(decoder) = this.tap.as_mut() {
                            decoder.push(data);
                            while let Ok(Some(msg)) = decoder.next_message() {
                                if let Some(tx) = transaction_in_response(this.call.method, &msg) {
                                    this.call.front.bind_transaction(
                                        tx,
                                        &this.call.principal,
                                        this.call.gw.clock.unix_millis(),
                                    );
                                    this.tap = None;
                                    break;
                                }
                            }
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    if let Some(t) = frame.trailers_ref() {
                        let (status, message) =
                            status_of(t).unwrap_or((GrpcCode::Unknown.as_i32(), None));
                        this.finish(status, message, Some(frame));
                    }
                }
                Some(Err(e)) => {
                    let message = format!("the Firestore upstream stream failed: {e}");
                    this.finish(GrpcCode::Unavailable.as_i32(), Some(message), None);
                }
                None => {
                    let message = "the Firestore upstream ended the stream without a status";
                    this.finish(GrpcCode::Unknown.as_i32(), Some(message.to_owned()), None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl Drop for ResponseRelay {
    /// A caller that goes away mid-response still gets an outcome record.
    fn drop(&mut self) {
        if self.done || self.on_drop == OnDrop::Nothing {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.finishing.is_none() {
            self.finish(
                GrpcCode::Cancelled.as_i32(),
                Some("the caller went away before the response ended".to_owned()),
                None,
            );
        }
        if let Some(f) = self.finishing.take() {
            runtime.spawn(f);
        }
    }
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
    gw: Arc<Gateway>,
    front: Arc<FirestoreFront>,
    method: Method,
    principal: Principal,
    request_id: &str,
    parts: http::request::Parts,
    mut body: Body,
) -> Response {
    let call = Arc::new(Call {
        gw: gw.clone(),
        front: front.clone(),
        method,
        principal,
        request_id: request_id.to_owned(),
        intents: Mutex::new(Vec::new()),
        transaction: None,
        begins_transaction: false,
    });
    let (down_tx, down_rx) = mpsc::channel::<FrameResult>(8);
    let sender: SharedSender = Arc::new(Mutex::new(Some(down_tx)));
    let (up_tx, up_rx) = mpsc::channel::<FrameResult>(8);
    let upstream_body = channel_body(up_rx);

    // The upstream side: open the stream, then relay its frames.
    let relay_handle = {
        let call = call.clone();
        let sender = sender.clone();
        let path = parts.uri.path().to_owned();
        let headers = parts.headers.clone();
        tokio::spawn(async move {
            match call
                .front
                .upstream
                .grpc(&path, &headers, upstream_body, false)
                .await
            {
                Ok(resp) => {
                    let _ = relay(call, resp, Some(sender)).await;
                }
                Err(e) => {
                    let message = e.to_string();
                    let frame = match call
                        .finish(GrpcCode::Unavailable.as_i32(), Some(&message))
                        .await
                    {
                        Ok(()) => trailers(GrpcCode::Unavailable, &message),
                        Err(r) => trailers(r.code, &r.message),
                    };
                    send_last(&sender, frame).await;
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
            let max = call.front.max_request();
            let mut decoder = FrameDecoder::new(max);
            let mut classifier = latchkey_documents::StreamClassifier::new(method);
            let refuse = |r: Refusal| {
                let call = call.clone();
                let sender = sender.clone();
                let relay_handle = relay_handle.abort_handle();
                async move {
                    relay_handle.abort();
                    let _ = call.finish(r.code.as_i32(), Some(&r.message)).await;
                    send_last(&sender, trailers(r.code, &r.message)).await;
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
                            refuse(Refusal::new(GrpcCode::InvalidArgument, e.to_string())).await;
                            return;
                        }
                    };
                    let classified = {
                        let record_values =
                            |p: &latchkey_documents::DocPath| call.front.records_values(p);
                        let opts = ClassifyOptions {
                            record_values: &record_values,
                        };
                        classifier.classify(&message, &opts)
                    };
                    let classified = match classified {
                        Ok(c) => c,
                        Err(e) => {
                            let r = Refusal::new(e.code(), e.to_string());
                            let r = call
                                .front
                                .refuse(&call.gw, &call.request_id, &call.principal, "malformed", r)
                                .await;
                            refuse(r).await;
                            return;
                        }
                    };
                    if let Err(r) = super::check_routing(&routing_headers, &classified.database) {
                        refuse(r).await;
                        return;
                    }
                    if !classified.accesses.is_empty() || classified.transaction.is_some() {
                        match call
                            .front
                            .authorize(
                                &call.gw,
                                &call.request_id,
                                &call.principal,
                                &classified,
                                Overlap::Never,
                            )
                            .await
                        {
                            Ok(a) => call.intents.lock().await.extend(a.intents),
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
