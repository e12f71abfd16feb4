//! The REST front end: `/v1/projects/{p}/databases/{d}/documents...`.
//! Request bodies are JSON and bounded; responses stream back, read only
//! to learn a new transaction id.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use latchkey_documents::{
    ClassifyOptions, GrpcCode, Method, RestCall, RestTransactionTap, classify_rest,
};
use tokio::sync::mpsc;

use super::upstream::relay_response_headers;
use super::{Overlap, Refusal, read_body};
use crate::app::Gateway;
use crate::request_id::new_request_id;

/// The handler for every REST route under `/v1/`.
pub(crate) async fn rest(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let request_id = new_request_id();
    let mut resp = match handle(&gw, &request_id, req).await {
        Ok(r) => r,
        Err(r) => r.rest_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn handle(gw: &Arc<Gateway>, request_id: &str, req: Request) -> Result<Response, Refusal> {
    let front = gw.firestore.clone().ok_or_else(|| {
        Refusal::new(
            GrpcCode::NotFound,
            "no Firestore upstream is configured: add a [firestore] table to latchkey.toml",
        )
    })?;
    let principal = front
        .authenticate(
            gw,
            request_id,
            req.headers(),
            crate::refusals::ClientAddr::of(req.extensions()),
        )
        .await?;
    let (parts, body) = req.into_parts();
    let call = match RestCall::parse(&parts.method, parts.uri.path(), parts.uri.query()) {
        Ok(c) => c,
        Err(e) => {
            let r = Refusal::new(e.code(), e.to_string());
            return Err(front
                .refuse(gw, request_id, &principal, "malformed", r)
                .await);
        }
    };
    let raw = match read_body(body, front.max_request()).await {
        Ok(b) => b,
        Err(r) => {
            return Err(front
                .refuse(gw, request_id, &principal, "malformed", r)
                .await);
        }
    };
    let classified = {
        let record_values = |p: &latchkey_documents::DocPath| front.records_values(p);
        let opts = ClassifyOptions {
            record_values: &record_values,
        };
        classify_rest(&call, &raw, &opts)
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
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    // An allowed read goes upstream while its decision records sync; the
    // response waits for both (writes were durable before this point).
    let upstream = pending
        .alongside(
            gw,
            front.upstream.rest(
                parts.method.clone(),
                &path_and_query,
                &parts.headers,
                Body::from(raw),
            ),
        )
        .await?;
    let upstream = match upstream {
        Ok(r) => r,
        Err(e) => {
            front
                .record_outcome(
                    gw,
                    classified.method,
                    request_id,
                    &principal,
                    &authorized.intents,
                    "unavailable",
                    Some(&e.to_string()),
                )
                .await?;
            return Err(Refusal::new(GrpcCode::Unavailable, e.to_string()));
        }
    };
    let (up, body) = upstream.into_parts();
    // A write's outcome is durable before the caller sees the status.
    front
        .record_outcome(
            gw,
            classified.method,
            request_id,
            &principal,
            &authorized.intents,
            up.status.as_str(),
            None,
        )
        .await?;
    let method = classified.method;
    if up.status.is_success()
        && matches!(method, Method::Commit | Method::Rollback)
        && let Some(tx) = &classified.transaction
    {
        front.end_transaction(tx);
    }
    let body = if classified.begins_transaction && up.status.is_success() {
        // Hold the first bytes until the new transaction id is bound, so
        // the caller cannot use it before it is ours to check.
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, axum::Error>>(8);
        let gw = gw.clone();
        let front = front.clone();
        tokio::spawn(async move {
            let mut body = body;
            let mut tap = Some(RestTransactionTap::new());
            let mut held: Vec<Frame<Bytes>> = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return;
                };
                if let Some(t) = tap.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        t.feed(data);
                    }
                    held.push(frame);
                    if t.is_done() {
                        if let Some(id) = t.transaction() {
                            front.bind_transaction(id.clone(), &principal, gw.clock.unix_millis());
                        }
                        tap = None;
                        for f in held.drain(..) {
                            if tx.send(Ok(f)).await.is_err() {
                                return;
                            }
                        }
                    }
                    continue;
                }
                if tx.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
            for f in held {
                if tx.send(Ok(f)).await.is_err() {
                    return;
                }
            }
        });
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        Body::new(StreamBody::new(stream))
    } else {
        Body::new(body)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = up.status;
    relay_response_headers(&up.headers, resp.headers_mut());
    Ok(resp)
}
