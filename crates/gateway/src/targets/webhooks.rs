//! `POST /hooks/{source}`: verified webhook deliveries from Gogs, Gitea,
//! GitHub and Buildkite, as a target on the pipeline. Authenticate is the
//! sender's signature (the principal is `Service::"latchkey"`); classify
//! reads the delivery, refuses replays and plans the `[[rules]]` actions,
//! each freeze or revocation one intent decided by Cedar; act records the
//! event and performs what was allowed (document writes go through the
//! document target's own classify and decision).
//!
//! Every step fails closed: nothing is acted on before the delivery is
//! authenticated, new (not a replay) and recorded in the audit log, and the
//! answer is 200 only once every action and its audit record are durable.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use latchkey_audit::{AuditEvent, Outcome};
use latchkey_core::{Action, Intent, Principal, PrincipalKind, ResourceKind, ResourceRef};
use latchkey_events::{ActionKind, Event, PlannedAction, Proof, Source, WebhookError};
use latchkey_store::{AuditQuery, Revocation, RevocationKind, RevocationMode, SharedStore};
use latchkey_tokens::RevocationSet;
use serde_json::{Map, Value, json};

use super::documents::Documents;
use crate::config::WebhooksConfig;
use crate::pipeline::{
    AllOrNothing, AuditAction, Authorized, Classified, Code, Pipeline, Protocol, Refusal,
    RequestCx, Stage, Target, TargetName, records,
};

/// How long a signed body is remembered: the same signed bytes within this
/// window act once, whatever delivery id they arrive under. A week covers
/// every sender's redelivery horizon; an identical body after it (which a
/// real event does not produce: payloads carry ids and times) acts again.
pub(crate) const BODY_REPLAY_WINDOW: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 60 * 60);

/// The webhook target's state.
pub(crate) struct Webhooks {
    pub(crate) pipe: Arc<Pipeline>,
    pub(crate) store: SharedStore,
    pub(crate) revocations: Arc<RevocationSet>,
    pub(crate) documents: Arc<Documents>,
    /// Loaded `[webhooks.<source>]` secrets; a source not here answers 404.
    pub(crate) secrets: std::collections::BTreeMap<Source, Vec<u8>>,
    pub(crate) settings: WebhooksConfig,
    pub(crate) rules: Vec<latchkey_events::Rule>,
}

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

/// A refusal from the events crate, at `stage`.
fn webhook_refusal(stage: Stage, e: &WebhookError) -> Refusal {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let code = match e.status() {
        401 => Code::BadSignature,
        413 => Code::TooLarge,
        422 => Code::Unsupported,
        500 => Code::Misconfigured,
        _ => Code::Malformed,
    };
    Refusal::new(stage, code, e.to_string()).with_status(status)
}

/// The request headers as name/value pairs for `latchkey-events` (values
/// that are not UTF-8 are kept, lossily, so repeats are still seen).
fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
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

/// A delivery whose signature checked out.
pub(crate) struct Signed {
    source: Source,
    pairs: Vec<(String, String)>,
    body: Bytes,
    proof: Proof,
}

/// What classify found.
pub(crate) enum Delivery {
    /// Seen before (by id), or its signed body replayed under a new id.
    Repeated {
        context: Map<String, Value>,
        replayed: bool,
    },
    /// An event Latchkey does not act on.
    Ignored,
    /// A new event, and the rule actions planned for it (in the order of
    /// the intents, for freezes and revocations).
    New {
        source: Source,
        delivery: String,
        event: Box<Event>,
        planned: Vec<Result<PlannedAction, latchkey_events::RuleError>>,
    },
}

/// The revocation a planned freeze or revocation makes.
fn planned_revocation(
    planned: &PlannedAction,
) -> Option<(RevocationKind, String, RevocationMode, &'static str)> {
    match &planned.action {
        ActionKind::FreezePipeline { pipeline, .. } => Some((
            RevocationKind::Pipeline,
            pipeline.clone(),
            RevocationMode::Freeze,
            "freeze_pipeline",
        )),
        ActionKind::RevokePipeline { pipeline, .. } => Some((
            RevocationKind::Pipeline,
            pipeline.clone(),
            RevocationMode::Revoke,
            "revoke_pipeline",
        )),
        ActionKind::RevokeJob { job_id } => Some((
            RevocationKind::Job,
            job_id.clone(),
            RevocationMode::Revoke,
            "revoke_job",
        )),
        ActionKind::WriteDocument { .. } => None,
    }
}

/// The intent of a rule's freeze or revocation: `token.revoke` on the
/// gateway, decided for `Service::"latchkey"` like any caller's.
fn revocation_intent(planned: &PlannedAction, request_id: &str) -> Option<Intent> {
    let (kind, value, mode, _) = planned_revocation(planned)?;
    Some(
        Intent::new(
            Action::TokenRevoke,
            ResourceRef::new(ResourceKind::Gateway, "latchkey"),
        )
        .with("revocation_kind", kind.as_str())
        .with("value", value)
        .with("mode", mode.as_str())
        .with("rule", planned.rule.as_str())
        .with("request_id", request_id),
    )
}

impl Target for Webhooks {
    type Input = Signed;
    type Plan = Delivery;
    const PROTOCOL: Protocol = Protocol::Json;

    fn name(&self) -> TargetName {
        TargetName::Webhook
    }

    fn pipeline(&self) -> &Pipeline {
        &self.pipe
    }

    fn authenticate<'a>(
        &'a self,
        _cx: &'a RequestCx,
        req: Request,
    ) -> BoxFuture<'a, Result<(Principal, Signed), Refusal>> {
        Box::pin(async move {
            let segment = req
                .uri()
                .path()
                .strip_prefix("/hooks/")
                .unwrap_or_default()
                .to_owned();
            let source = Source::parse(&segment)
                .map_err(|e| Refusal::new(Stage::Classify, Code::NotFound, e.to_string()))?;
            let (Some(secret), Some(settings)) =
                (self.secrets.get(&source), self.settings.get(source))
            else {
                return Err(Refusal::new(
                    Stage::Classify,
                    Code::NotConfigured,
                    format!(
                        "webhooks from {source} are not configured; add a `[webhooks.{source}]` table with a `secret`"
                    ),
                ));
            };
            let pairs = header_pairs(req.headers());
            let body = match Bytes::from_request(req, &()).await {
                Ok(b) => b,
                Err(rejection) => {
                    let status = rejection.status();
                    return Err(if status == StatusCode::PAYLOAD_TOO_LARGE {
                        Refusal::new(
                            Stage::Classify,
                            Code::TooLarge,
                            format!(
                                "the webhook body is larger than the {} bytes accepted",
                                latchkey_events::MAX_PAYLOAD_BYTES
                            ),
                        )
                    } else {
                        Refusal::new(
                            Stage::Classify,
                            Code::Malformed,
                            "the webhook body could not be read",
                        )
                        .with_status(status)
                    });
                }
            };
            let proof = match latchkey_events::verify_signature(
                source,
                secret,
                &pairs,
                &body,
                self.pipe.clock.unix(),
                settings.timestamp_window,
            ) {
                Ok(Proof::PlainToken) if !settings.allow_plain_token => {
                    return Err(Refusal::new(
                        Stage::Authenticate,
                        Code::PlainToken,
                        "the plain `X-Buildkite-Token` is refused; configure a signature \
                         secret on the Buildkite webhook (or set \
                         `webhooks.buildkite.allow_plain_token = true`)",
                    )
                    .with_context("source", source.as_str()));
                }
                Ok(proof) => proof,
                Err(e) => {
                    tracing::warn!(%source, error = %e, "webhook refused");
                    return Err(webhook_refusal(Stage::Authenticate, &e)
                        .with_context("source", source.as_str()));
                }
            };
            Ok((
                service_principal(),
                Signed {
                    source,
                    pairs,
                    body,
                    proof,
                },
            ))
        })
    }

    /// Refusals at authenticate carry the source in their record.
    fn refusal_action(&self, stage: Stage) -> AuditAction {
        AuditAction::Refused(TargetName::Webhook, stage)
    }

    fn classify<'a>(
        &'a self,
        cx: &'a RequestCx,
        _principal: &'a Principal,
        signed: Signed,
    ) -> BoxFuture<'a, Result<Classified<Delivery>, Refusal>> {
        Box::pin(async move {
            let Signed {
                source,
                pairs,
                body,
                proof,
            } = signed;
            let refused = |e: WebhookError| {
                webhook_refusal(Stage::Classify, &e).with_context("source", source.as_str())
            };
            let delivery = latchkey_events::delivery_id(source, &pairs, &body).map_err(refused)?;
            let event_type = latchkey_events::event_type(source, &pairs)
                .map_err(refused)?
                .to_owned();
            let now = self.pipe.clock.unix();
            let replay_unavailable = |e: latchkey_store::StoreError| {
                tracing::error!(error = %e, "delivery ids cannot be recorded");
                Refusal::new(
                    Stage::Classify,
                    Code::StoreUnavailable,
                    "the delivery cannot be checked for replay",
                )
            };
            let fresh = self
                .store
                .record_delivery(source.as_str(), &delivery, now)
                .await
                .map_err(replay_unavailable)?;
            // GitHub's and Gogs' signatures do not cover the delivery id
            // (nor the event type): the same signed bytes under a new id
            // are a replay too.
            let digest = signed_digest(proof, &body);
            let replayed = fresh
                && !self
                    .store
                    .record_signed_body(source.as_str(), &digest, now, BODY_REPLAY_WINDOW.as_secs())
                    .await
                    .map_err(replay_unavailable)?;
            if !fresh || replayed {
                let mut context = Map::new();
                context.insert("source".into(), json!(source.as_str()));
                context.insert("delivery_id".into(), json!(delivery));
                context.insert("event_type".into(), json!(event_type));
                context.insert("body_sha256".into(), json!(digest));
                if replayed {
                    tracing::warn!(%source, delivery = %delivery, "signed webhook body replayed under a new delivery id; not acted on");
                }
                return Ok(Classified::new(
                    Vec::new(),
                    Delivery::Repeated { context, replayed },
                ));
            }
            let event =
                match latchkey_events::parse_event(source, &event_type, &body).map_err(refused)? {
                    Some(e) => e,
                    None => return Ok(Classified::new(Vec::new(), Delivery::Ignored)),
                };
            let planned = latchkey_events::evaluate(&self.rules, source, &event);
            let asks = planned
                .iter()
                .filter_map(|p| p.as_ref().ok())
                .filter_map(|p| revocation_intent(p, &cx.request_id))
                .map(Into::into)
                .collect();
            let mut c = Classified::new(
                asks,
                Delivery::New {
                    source,
                    delivery,
                    event: Box::new(event),
                    planned,
                },
            );
            // Each rule action stands on its own decision.
            c.all_or_nothing = AllOrNothing::No;
            Ok(c)
        })
    }

    fn act<'a>(
        &'a self,
        cx: &'a RequestCx,
        service: Principal,
        plan: Delivery,
        authorized: Authorized,
    ) -> BoxFuture<'a, Result<Response, Refusal>> {
        Box::pin(async move {
            let (source, delivery, event, planned) = match plan {
                Delivery::Ignored => {
                    return Ok(Json(json!({ "status": "ignored" })).into_response());
                }
                Delivery::Repeated { context, replayed } => {
                    let status = if replayed { "replayed" } else { "duplicate" };
                    let event = records::webhook(
                        &cx.request_id,
                        &service,
                        AuditAction::WebhookDelivery,
                        context,
                        Outcome::new(status),
                        self.pipe.clock.unix_millis(),
                    );
                    self.pipe.record(event).await?;
                    return Ok(Json(json!({ "status": "duplicate" })).into_response());
                }
                Delivery::New {
                    source,
                    delivery,
                    event,
                    planned,
                } => (source, delivery, event, planned),
            };
            let mut context = event.audit_context();
            context.insert("source".into(), json!(source.as_str()));
            context.insert("delivery_id".into(), json!(delivery));
            let mut received = records::webhook(
                &cx.request_id,
                &service,
                AuditAction::WebhookEvent(event.kind()),
                context,
                Outcome::new("received"),
                self.pipe.clock.unix_millis(),
            );
            received.caused_by = causing_push(self, &event).await;
            self.pipe.record(received).await?;

            let mut decisions = authorized.decisions.into_iter();
            let mut done = Vec::new();
            let mut failed = Vec::new();
            for planned in planned {
                match planned {
                    Ok(p) => {
                        let decision = if planned_revocation(&p).is_some() {
                            decisions.next()
                        } else {
                            None
                        };
                        let summary = self
                            .perform(cx, &service, source, &delivery, &event, &p, decision)
                            .await?;
                        done.push(summary);
                    }
                    Err(e) => {
                        let message = e.to_string();
                        failed.push(message.clone());
                        let mut record = records::webhook(
                            &cx.request_id,
                            &service,
                            AuditAction::WebhookEvent(event.kind()),
                            action_context(source, &delivery, &event),
                            Outcome::new("rule_failed").with_detail(message),
                            self.pipe.clock.unix_millis(),
                        );
                        record.caused_by = Some(cx.request_id.clone());
                        self.pipe.record(record).await?;
                    }
                }
            }
            let mut body = json!({ "status": "ok", "request_id": cx.request_id, "actions": done });
            if !failed.is_empty() {
                body["rule_failures"] = json!(failed);
            }
            Ok(Json(body).into_response())
        })
    }
}

impl Webhooks {
    /// Performs one planned action durably and records it; returns its
    /// summary for the response. A freeze or revocation Cedar denied is
    /// not performed (its decision is on record).
    #[allow(clippy::too_many_arguments)]
    async fn perform(
        &self,
        cx: &RequestCx,
        service: &Principal,
        source: Source,
        delivery: &str,
        event: &Event,
        planned: &PlannedAction,
        decision: Option<latchkey_core::Decision>,
    ) -> Result<Value, Refusal> {
        let Some((kind, value, mode, name)) = planned_revocation(planned) else {
            let ActionKind::WriteDocument {
                database,
                path,
                fields,
                ..
            } = &planned.action
            else {
                return Ok(json!({ "rule": planned.rule }));
            };
            let mut base = action_context(source, delivery, event);
            base.insert("rule".into(), json!(planned.rule));
            base.insert("caused_by".into(), json!(cx.request_id));
            return match self
                .documents
                .write_document(cx, service, database, path, fields, &base)
                .await
            {
                Ok(status) => Ok(json!({
                    "rule": planned.rule,
                    "action": "write_document",
                    "database": database,
                    "path": path,
                    "status": status,
                })),
                // An audit log that cannot be written refuses the delivery.
                Err(r) if r.code == Code::AuditUnavailable => Err(r),
                // The decision and outcome are on record; the delivery is
                // still acknowledged so the sender does not retry forever.
                Err(r) => Ok(json!({
                    "rule": planned.rule,
                    "action": "write_document",
                    "database": database,
                    "path": path,
                    "refused": r.grpc_code().name(),
                    "message": r.message,
                })),
            };
        };
        if let Some(d) = decision.filter(|d| !d.is_allowed()) {
            return Ok(json!({
                "rule": planned.rule,
                "action": name,
                "value": value,
                "refused": "PERMISSION_DENIED",
                "message": d.reason,
            }));
        }
        let revocation = Revocation {
            kind,
            value: value.clone(),
            mode,
            created_at: self.pipe.clock.unix(),
            expires_at: None,
            reason: format!(
                "rule `{}` on {} event from {source} (commit {}, delivery {delivery})",
                planned.rule,
                event.kind().as_str(),
                event.commit(),
            ),
        };
        let mut record: AuditEvent = records::revocation(
            &cx.request_id,
            service,
            &revocation,
            self.pipe.clock.unix_millis(),
        );
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
        record.caused_by = Some(cx.request_id.clone());
        super::revocations::apply(&self.pipe, &self.revocations, revocation, record).await?;
        Ok(json!({ "rule": planned.rule, "action": name, "value": value }))
    }
}

/// The request id of the push the gateway itself proxied for this event's
/// commit, if any: the causal link from a build or merge back to the push.
async fn causing_push(w: &Webhooks, event: &Event) -> Option<String> {
    let commit = event.commit();
    if commit.len() < 7 || commit.bytes().all(|b| b == b'0') {
        return None;
    }
    // The push may have landed a moment ago; the index trails the log.
    if !w
        .pipe
        .audit
        .wait_indexed(super::admin::AUDIT_INDEX_WAIT)
        .await
    {
        tracing::warn!("the audit index is behind the log; the causal link may be missing");
    }
    let q = AuditQuery {
        commit: Some(commit.to_owned()),
        action: Some("git.push".to_owned()),
        limit: 1,
        newest: true,
        ..AuditQuery::default()
    };
    match w.store.query_audit(&q).await {
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
