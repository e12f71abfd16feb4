//! The REST front end: `/v1/projects/{p}/databases/{d}/documents...`.
//! Request bodies are JSON and bounded; responses stream back, read only
//! to learn a new transaction id.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use latchkey_core::Principal;
use latchkey_documents::rest::proto_json;
use latchkey_documents::{
    Classified as DocCall, ClassifyOptions, Method, RestCall, RestTransactionTap, classify_grpc,
    classify_rest,
};
use latchkey_relay::{HeldEnd, Hold, Release, Tap, TapSays};

use super::upstream::relay_response_headers;
use super::{Documents, check_routing, read_body};
use crate::pipeline::{
    Authorized, Classified, Code, Pipeline, Protocol, Refusal, RequestCx, Stage, Target, TargetName,
};

/// The REST document API as a target.
pub(crate) struct DocumentsRest(pub(crate) Arc<Documents>);

/// A classified REST call, ready to forward.
pub(crate) struct RestPlan {
    parts: http::request::Parts,
    raw: Bytes,
    call: DocCall,
    /// On the embedded backend: the RPC and its protobuf request, read once
    /// from the JSON body; what was classified and what runs.
    proto: Option<(Method, Bytes)>,
}

impl Target for DocumentsRest {
    type Input = Request;
    type Plan = RestPlan;
    fn name(&self) -> TargetName {
        TargetName::Firestore
    }
    const PROTOCOL: Protocol = Protocol::FirestoreRest;

    fn pipeline(&self) -> &Pipeline {
        &self.0.pipe
    }

    fn authenticate<'a>(
        &'a self,
        _cx: &'a RequestCx,
        req: Request,
    ) -> BoxFuture<'a, Result<(Principal, Request), Refusal>> {
        Box::pin(async move { Ok((self.0.authenticate(req.headers())?, req)) })
    }

    fn classify<'a>(
        &'a self,
        cx: &'a RequestCx,
        principal: &'a Principal,
        req: Request,
    ) -> BoxFuture<'a, Result<Classified<RestPlan>, Refusal>> {
        Box::pin(async move {
            let docs = &self.0;
            let (parts, body) = req.into_parts();
            let call = RestCall::parse(&parts.method, parts.uri.path(), parts.uri.query())
                .map_err(|e| {
                    Refusal::new(Stage::Classify, Code::Malformed, e.to_string())
                        .with_grpc(e.code())
                })?;
            let raw = read_body(body, docs.max_request()).await?;
            let embedded = matches!(docs.front()?.backend, super::Backend::Embedded(_));
            // The embedded store runs a protobuf request: the JSON is read
            // into it once, and the classifier reads that same message, so
            // what is decided is what runs. Google reads the JSON itself,
            // so for it the JSON is classified (strictly, as Google reads it).
            let (classified, proto) = {
                let record_values = |p: &latchkey_documents::DocPath| docs.records_values(p);
                let opts = ClassifyOptions {
                    record_values: &record_values,
                };
                if embedded {
                    let request =
                        proto_json::request_to_proto(&call, &raw).map_err(Refusal::from)?;
                    let message = Bytes::from(request.message.encode_to_vec());
                    let classified =
                        classify_grpc(request.method, &message, &opts).map_err(Refusal::from)?;
                    (classified, Some((request.method, message)))
                } else {
                    (
                        classify_rest(&call, &raw, &opts).map_err(Refusal::from)?,
                        None,
                    )
                }
            };
            check_routing(&parts.headers, &classified.database)?;
            let asks = docs
                .asks(cx, principal, &classified, &serde_json::Map::new())
                .await?;
            let mut c = Classified::new(
                asks,
                RestPlan {
                    parts,
                    raw,
                    call: classified,
                    proto,
                },
            );
            c.durability = Documents::durability(&c.plan.call);
            Ok(c)
        })
    }

    fn deny<'a>(
        &'a self,
        _cx: &'a RequestCx,
        _plan: RestPlan,
        authorized: Authorized,
    ) -> BoxFuture<'a, Response> {
        Box::pin(async move { Documents::denial(&authorized).render(Self::PROTOCOL) })
    }

    fn act<'a>(
        &'a self,
        cx: &'a RequestCx,
        principal: Principal,
        plan: RestPlan,
        authorized: Authorized,
    ) -> BoxFuture<'a, Result<Response, Refusal>> {
        Box::pin(async move {
            let docs = &self.0;
            let front = docs.front()?;
            let RestPlan {
                parts,
                raw,
                call,
                proto,
            } = plan;
            if let (super::Backend::Embedded(store), Some((method, message))) =
                (&front.backend, proto)
            {
                return docs
                    .embedded_unary(
                        store, cx, &principal, method, &message, &call, authorized, true,
                    )
                    .await
                    .map(super::embedded::Reply::into_rest);
            }
            let path_and_query = parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
            // An allowed read goes upstream while its decision records sync;
            // the response waits for both (writes were durable before this).
            let upstream = authorized
                .pending
                .alongside(
                    &docs.pipe,
                    front.upstream()?.rest(
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
                    docs.pipe
                        .metrics
                        .upstream_error(crate::metrics::UpstreamKind::Firestore);
                    docs.record_outcome(
                        call.method,
                        &cx.request_id,
                        &principal,
                        &authorized.intents,
                        "unavailable",
                        Some(&e.to_string()),
                        None,
                    )
                    .await?;
                    return Err(
                        Refusal::new(Stage::Act, Code::UpstreamUnavailable, e.to_string())
                            .already_recorded(),
                    );
                }
            };
            let (up, body) = upstream.into_parts();
            // A write's outcome is durable before the caller sees the status.
            docs.record_outcome(
                call.method,
                &cx.request_id,
                &principal,
                &authorized.intents,
                up.status.as_str(),
                None,
                None,
            )
            .await?;
            if up.status.is_success()
                && matches!(call.method, Method::Commit | Method::Rollback)
                && let Some(tx) = &call.transaction
            {
                docs.end_transaction(tx);
            }
            let body = if call.begins_transaction && up.status.is_success() {
                // Hold the first bytes until the new transaction id is
                // bound, so the caller cannot use it before it is ours to
                // check.
                let tap = BindTransaction {
                    docs: self.0.clone(),
                    principal,
                    tap: Some(RestTransactionTap::new()),
                };
                let finish: latchkey_relay::Finish<BindTransaction> =
                    Box::new(|_, _| Box::pin(async { Release::Pass }));
                Body::new(HeldEnd::new(body, Hold::Trailers, tap, finish))
            } else {
                Body::new(body)
            };
            let mut resp = Response::new(body);
            *resp.status_mut() = up.status;
            relay_response_headers(&up.headers, resp.headers_mut());
            Ok(resp)
        })
    }
}

/// Reads a REST response for a new transaction id, holding it back until
/// the id is bound to the caller.
struct BindTransaction {
    docs: Arc<Documents>,
    principal: Principal,
    tap: Option<RestTransactionTap>,
}

impl Tap for BindTransaction {
    fn feed(&mut self, chunk: &Bytes) -> TapSays {
        let Some(t) = self.tap.as_mut() else {
            return TapSays::Pass;
        };
        t.feed(chunk);
        if !t.is_done() {
            return TapSays::Hold;
        }
        if let Some(id) = t.transaction() {
            self.docs.bind_transaction(
                id.clone(),
                &self.principal,
                self.docs.pipe.clock.unix_millis(),
            );
        }
        self.tap = None;
        TapSays::Pass
    }
}
