//! `POST /hooks/{source}`: verified webhook deliveries from Gogs, Gitea,
//! GitHub and Buildkite, turned into audit records and, through `[[rules]]`,
//! into freezes and revocations.
//!
//! Every step fails closed: nothing is acted on before the delivery is
//! authenticated, new (not a replay) and recorded in the audit log, and the
//! answer is 200 only once every action and its audit record are durable.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_audit::{AuditEvent, Outcome};
use latchkey_core::{Principal, PrincipalKind};
use latchkey_events::{ActionKind, Event, PlannedAction, Proof, Source, WebhookError};
use latchkey_store::{AuditQuery, Revocation, RevocationKind, RevocationMode};
use serde_json::{Map, Value, json};

use crate::admin::RevocationFailure;
use crate::app::Gateway;
use crate::request_id::new_request_id;

/// How long a signed body is remembered: the same signed bytes within this
/// window act once, whatever delivery id they arrive under. A week covers
/// every sender's redelivery horizon; an identical body after it (which a
/// real event does not produce: payloads carry ids and times) acts again.
pub(crate) const BODY_REPLAY_WINDOW: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 60 * 60);

/// The SHA-256 (hex) of exactly what the sender's signature covers: the
/// body, and for Buildkite the signed timestamp before it.
fn signed_digest(proof: Proof, body: &[u8]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    match proof {
        Proof::TimestampedHmac { timestamp } => {
            ctx.update(format!("{timestamp}.").as_bytes());
        }
        Proof::BodyHmac | Proof::PlainToken => {}
    }
    ctx.update(body);
    hex::encode(ctx.finish().as_ref())
}

/// The principal webhook-driven records and actions are attributed to.
fn service_principal() -> Principal {
    Principal::new(PrincipalKind::Service, "latchkey", "latchkey")
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn webhook_error(e: &WebhookError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    error(status, e.to_string())
}

fn audit_unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the audit log cannot be written; the delivery was not acted on",
    )
}

/// The request headers as name/value pairs for `latchkey-events` (values
/// that are not UTF-8 are kept, lossily, so repeats are still seen).
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Records a delivery refused for its signature (action
/// `webhook.authenticate`), through the per-client refusal limit.
async fn record_unsigned(
    gw: &Gateway,
    client: crate::refusals::ClientAddr,
    source: Source,
    code: &str,
    detail: &str,
) -> Result<(), crate::oauth::ApiError> {
    let mut event = crate::events::refusal(
        new_request_id(),
        None,
        "webhook.authenticate",
        code,
        detail,
        gw.clock.unix_millis(),
    );
    event
        .context
        .insert("source".into(), serde_json::json!(source.as_str()));
    gw.record_unauthenticated(client, event).await
}

/// `POST /hooks/{source}`.
pub(crate) async fn hook(
    State(gw): State<Arc<Gateway>>,
    Path(segment): Path<String>,
    client: crate::refusals::ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let source = match Source::parse(&segment) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::NOT_FOUND, e.to_string()),
    };
    let (Some(secret), Some(settings)) = (
        gw.webhook_secrets.get(&source),
        gw.config.webhooks.get(source),
    ) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "webhooks from {source} are not configured; add a `[webhooks.{source}]` table with a `secret`"
            ),
        );
    };
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "the webhook body is larger than the {} bytes accepted",
                    latchkey_events::MAX_PAYLOAD_BYTES
                )
            } else {
                "the webhook body could not be read".to_owned()
            };
            return error(status, message);
        }
    };
    let pairs = header_pairs(&headers);
    let now = gw.clock.unix();

    let proof = match latchkey_events::verify_signature(
        source,
        secret,
        &pairs,
        &body,
        now,
        settings.timestamp_window,
    ) {
        Ok(Proof::PlainToken) if !settings.allow_plain_token => {
            let message = "the plain `X-Buildkite-Token` is refused; configure a signature \
                           secret on the Buildkite webhook (or set \
                           `webhooks.buildkite.allow_plain_token = true`)";
            if record_unsigned(&gw, client, source, "plain_token", message)
                .await
                .is_err()
            {
                return audit_unavailable();
            }
            return error(StatusCode::UNAUTHORIZED, message);
        }
        Ok(proof) => proof,
        Err(e) => {
            tracing::warn!(%source, error = %e, "webhook refused");
            // A delivery whose signature does not check out is refused
            // before anyone is authenticated: recorded like every such
            // refusal (bounded, rate-limited per client address).
            if record_unsigned(&gw, client, source, "bad_signature", &e.to_string())
                .await
                .is_err()
            {
                return audit_unavailable();
            }
            return webhook_error(&e);
        }
    };
    let delivery = match latchkey_events::delivery_id(source, &pairs, &body) {
        Ok(d) => d,
        Err(e) => return webhook_error(&e),
    };
    let event_type = match latchkey_events::event_type(source, &pairs) {
        Ok(t) => t.to_owned(),
        Err(e) => return webhook_error(&e),
    };

    let service = service_principal();
    let request_id = new_request_id();
    let fresh = match gw
        .store
        .record_delivery(source.as_str(), &delivery, now)
        .await
    {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "delivery ids cannot be recorded");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the delivery cannot be checked for replay",
            );
        }
    };
    // GitHub's and Gogs' signatures do not cover the delivery id (nor the
    // event type): the same signed bytes under a new id are a replay too.
    let digest = signed_digest(proof, &body);
    let replayed = fresh
        && match gw
            .store
            .record_signed_body(source.as_str(), &digest, now, BODY_REPLAY_WINDOW.as_secs())
            .await
        {
            Ok(new_body) => !new_body,
            Err(e) => {
                tracing::error!(error = %e, "signed bodies cannot be recorded");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the delivery cannot be checked for replay",
                );
            }
        };
    if !fresh || replayed {
        let mut context = Map::new();
        context.insert("source".into(), json!(source.as_str()));
        context.insert("delivery_id".into(), json!(delivery));
        context.insert("event_type".into(), json!(event_type));
        context.insert("body_sha256".into(), json!(digest));
        let status = if replayed { "replayed" } else { "duplicate" };
        if replayed {
            tracing::warn!(%source, delivery = %delivery, "signed webhook body replayed under a new delivery id; not acted on");
        }
        let event = crate::events::webhook(
            &request_id,
            &service,
            "webhook.delivery",
            context,
            Outcome::new(status),
            gw.clock.unix_millis(),
        );
        if gw.audit.append(event).await.is_err() {
            return audit_unavailable();
        }
        return Json(json!({ "status": "duplicate" })).into_response();
    }

    let event = match latchkey_events::parse_event(source, &event_type, &body) {
        Ok(Some(e)) => e,
        Ok(None) => return Json(json!({ "status": "ignored" })).into_response(),
        Err(e) => return webhook_error(&e),
    };

    let mut context = event.audit_context();
    context.insert("source".into(), json!(source.as_str()));
    context.insert("delivery_id".into(), json!(delivery));
    let mut received = crate::events::webhook(
        &request_id,
        &service,
        &format!("webhook.{}", event.kind().as_str()),
        context,
        Outcome::new("received"),
        gw.clock.unix_millis(),
    );
    received.caused_by = causing_push(&gw, &event).await;
    if let Err(e) = gw.audit.append(received).await {
        tracing::error!(error = %e, "audit log unavailable; webhook not acted on");
        return audit_unavailable();
    }

    let mut done = Vec::new();
    let mut failed = Vec::new();
    for planned in latchkey_events::evaluate(&gw.config.rules, source, &event) {
        let result = match planned {
            Ok(p) => perform(&gw, &request_id, &service, source, &delivery, &event, &p)
                .await
                .map(|summary| done.push(summary)),
            Err(e) => {
                let message = e.to_string();
                failed.push(message.clone());
                let mut record = crate::events::webhook(
                    &request_id,
                    &service,
                    &format!("webhook.{}", event.kind().as_str()),
                    action_context(source, &delivery, &event),
                    Outcome::new("rule_failed").with_detail(message),
                    gw.clock.unix_millis(),
                );
                record.caused_by = Some(request_id.clone());
                gw.audit.append(record).await.map(|_| ()).map_err(|e| {
                    tracing::error!(error = %e, "audit log unavailable");
                    audit_unavailable()
                })
            }
        };
        if let Err(resp) = result {
            return resp;
        }
    }
    let mut body = json!({ "status": "ok", "request_id": request_id, "actions": done });
    if !failed.is_empty() {
        body["rule_failures"] = json!(failed);
    }
    Json(body).into_response()
}

/// The request id of the push the gateway itself proxied for this event's
/// commit, if any: the causal link from a build or merge back to the push.
async fn causing_push(gw: &Gateway, event: &Event) -> Option<String> {
    let commit = event.commit();
    if commit.len() < 7 || commit.bytes().all(|b| b == b'0') {
        return None;
    }
    // The push may have landed a moment ago; the index trails the log.
    if !gw.audit.wait_indexed(crate::app::AUDIT_INDEX_WAIT).await {
        tracing::warn!("the audit index is behind the log; the causal link may be missing");
    }
    let q = AuditQuery {
        commit: Some(commit.to_owned()),
        action: Some("git.push".to_owned()),
        limit: 1,
        newest: true,
        ..AuditQuery::default()
    };
    match gw.store.query_audit(&q).await {
        Ok(rows) => rows.into_iter().next().map(|r| r.request_id),
        Err(e) => {
            tracing::warn!(error = %e, "audit index unavailable; no causal link recorded");
            None
        }
    }
}

/// The context every action record carries, so queries by commit, job or
/// pipeline find it.
fn action_context(source: Source, delivery: &str, event: &Event) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("source".into(), json!(source.as_str()));
    c.insert("delivery_id".into(), json!(delivery));
    c.insert("event".into(), json!(event.kind().as_str()));
    if !event.commit().is_empty() {
        c.insert("commit".into(), json!(event.commit()));
    }
    if let Some(p) = event.pipeline() {
        c.insert("pipeline".into(), json!(p));
    }
    if let Event::JobFinished(j) = event {
        c.insert("job_id".into(), json!(j.job_id));
    }
    c
}

/// Performs one planned action durably and audits it; returns its summary
/// for the response, or the response to give on failure.
async fn perform(
    gw: &Gateway,
    request_id: &str,
    service: &Principal,
    source: Source,
    delivery: &str,
    event: &Event,
    planned: &PlannedAction,
) -> Result<Value, Response> {
    let (kind, value, mode, name) = match &planned.action {
        ActionKind::FreezePipeline { pipeline, .. } => (
            RevocationKind::Pipeline,
            pipeline.clone(),
            RevocationMode::Freeze,
            "freeze_pipeline",
        ),
        ActionKind::RevokePipeline { pipeline, .. } => (
            RevocationKind::Pipeline,
            pipeline.clone(),
            RevocationMode::Revoke,
            "revoke_pipeline",
        ),
        ActionKind::RevokeJob { job_id } => (
            RevocationKind::Job,
            job_id.clone(),
            RevocationMode::Revoke,
            "revoke_job",
        ),
        ActionKind::WriteDocument {
            database,
            path,
            fields,
            ..
        } => {
            let mut base = action_context(source, delivery, event);
            base.insert("rule".into(), json!(planned.rule));
            base.insert("caused_by".into(), json!(request_id));
            return match crate::firestore::write_document(
                gw, request_id, service, database, path, fields, &base,
            )
            .await
            {
                Ok(status) => Ok(json!({
                    "rule": planned.rule,
                    "action": "write_document",
                    "database": database,
                    "path": path,
                    "status": status,
                })),
                // The decision and outcome are audited; the delivery is
                // still acknowledged so the sender does not retry forever.
                Err(r) => Ok(json!({
                    "rule": planned.rule,
                    "action": "write_document",
                    "database": database,
                    "path": path,
                    "refused": r.code.name(),
                    "message": r.message,
                })),
            };
        }
    };
    let revocation = Revocation {
        kind,
        value: value.clone(),
        mode,
        created_at: gw.clock.unix(),
        expires_at: None,
        reason: format!(
            "rule `{}` on {} event from {source} (commit {}, delivery {delivery})",
            planned.rule,
            event.kind().as_str(),
            event.commit(),
        ),
    };
    let mut record: AuditEvent =
        crate::events::revocation(request_id, service, &revocation, gw.clock.unix_millis());
    for (k, v) in action_context(source, delivery, event) {
        record.context.entry(k).or_insert(v);
    }
    record.context.insert("rule".into(), json!(planned.rule));
    if let ActionKind::FreezePipeline { organization, .. }
    | ActionKind::RevokePipeline { organization, .. } = &planned.action
    {
        record
            .context
            .insert("organization".into(), json!(organization));
    }
    record.caused_by = Some(request_id.to_owned());
    crate::admin::record_revocation(gw, revocation, record)
        .await
        .map_err(|f| match f {
            RevocationFailure::Store => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the revocation could not be stored",
            ),
            RevocationFailure::Audit => audit_unavailable(),
        })?;
    Ok(json!({ "rule": planned.rule, "action": name, "value": value }))
}
