//! `/admin/...`: health, audit queries, revocations and freezes, keys.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_audit::AuditEvent;
use latchkey_core::UnixTime;
use latchkey_core::{Action, Principal};
use latchkey_store::{AuditQuery, Revocation, RevocationKind, RevocationMode};
use latchkey_tokens::is_jti;
use serde::Deserialize;
use serde_json::json;

use crate::app::Gateway;
use crate::oauth::{ApiError, authorize_admin};
use crate::request_id::new_request_id;

/// `GET /admin/health`: unauthenticated liveness and readiness.
pub(crate) async fn health(State(gw): State<Arc<Gateway>>) -> Response {
    if let Some(why) = gw.audit.failure() {
        tracing::error!(error = %why, "health: audit log unavailable");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "audit log unavailable" })),
        )
            .into_response();
    }
    match gw.store.max_audit_seq().await {
        Ok(_) => {
            let mut body = json!({ "status": "ok", "policies": gw.policy.policy_count() });
            if !gw.warnings.is_empty() {
                body["warnings"] = json!(gw.warnings);
            }
            Json(body).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "health: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "store unavailable" })),
            )
                .into_response()
        }
    }
}

/// Query of `GET /admin/audit`: like the store's [`AuditQuery`], but every
/// parameter may be left out (`limit` and `newest` included).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AuditParams {
    principal: Option<String>,
    resource: Option<String>,
    action: Option<String>,
    decision: Option<String>,
    commit: Option<String>,
    job_id: Option<String>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    after_seq: Option<u64>,
    limit: u32,
    newest: bool,
}

impl From<AuditParams> for AuditQuery {
    fn from(p: AuditParams) -> Self {
        Self {
            principal: p.principal,
            resource: p.resource,
            action: p.action,
            decision: p.decision,
            commit: p.commit,
            job_id: p.job_id,
            since_ms: p.since_ms,
            until_ms: p.until_ms,
            after_seq: p.after_seq,
            limit: p.limit,
            newest: p.newest,
        }
    }
}

/// Parses what an admin request carries (its query or body) once the
/// caller is authenticated and authorized: an unauthenticated caller gets
/// 401 whatever it sent, never a parse error or 413 that shows the body was
/// read. The request keeps its extensions, so `DefaultBodyLimit` applies.
pub(crate) async fn parse_after_auth<E>(req: Request, what: &str) -> Result<E, ApiError>
where
    E: FromRequest<()>,
    E::Rejection: RejectionText,
{
    E::from_request(req, &())
        .await
        .map_err(|r| rejection_error(&r, what))
}

/// [`parse_after_auth`] for a request's query string.
pub(crate) fn parse_query_after_auth<T: serde::de::DeserializeOwned>(
    req: &Request,
    what: &str,
) -> Result<Query<T>, ApiError> {
    Query::try_from_uri(req.uri()).map_err(|r| rejection_error(&r, what))
}

fn rejection_error(r: &impl RejectionText, what: &str) -> ApiError {
    ApiError::new(
        r.status(),
        "invalid_request",
        format!(
            "{what} ({}); see the HTTP interface in the README",
            latchkey_core::bounded(&r.body_text(), 300)
        ),
    )
}

/// What axum's extractor rejections say, for [`parse_after_auth`].
pub(crate) trait RejectionText {
    fn status(&self) -> StatusCode;
    fn body_text(&self) -> String;
}

macro_rules! rejection_text {
    ($($t:ty),*) => {$(
        impl RejectionText for $t {
            fn status(&self) -> StatusCode {
                <$t>::status(self)
            }
            fn body_text(&self) -> String {
                <$t>::body_text(self)
            }
        }
    )*};
}
rejection_text!(JsonRejection, FormRejection, QueryRejection);

/// `GET /admin/audit?principal=&resource=&action=&decision=&commit=&limit=`.
pub(crate) async fn audit_query(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let request_id = new_request_id();
    if let Err(e) = authorize_admin(&gw, req.headers(), &request_id, Action::AdminRead).await {
        return e.into_response();
    }
    let q = match parse_query_after_auth::<AuditParams>(&req, "the audit query is malformed") {
        Ok(Query(params)) => AuditQuery::from(params),
        Err(e) => return e.into_response(),
    };
    // Read your writes: what was recorded before this query is in its answer.
    if !gw.audit.wait_indexed(crate::app::AUDIT_INDEX_WAIT).await {
        tracing::warn!("the audit index is behind the log; the answer may miss recent records");
    }
    match gw.store.query_audit(&q).await {
        Ok(rows) => {
            let events: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    let mut v: serde_json::Value =
                        serde_json::from_str(&r.event_json).unwrap_or_else(|_| json!({}));
                    v["seq"] = json!(r.seq);
                    v
                })
                .collect();
            Json(json!({ "events": events })).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "audit query failed");
            ApiError::unavailable("the audit index cannot be read").into_response()
        }
    }
}

/// Body of `POST /admin/revocations`.
#[derive(Debug, Deserialize)]
pub(crate) struct RevocationRequest {
    kind: String,
    value: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

fn parse_kind_mode(
    kind: &str,
    mode: Option<&str>,
) -> Result<(RevocationKind, RevocationMode), ApiError> {
    let kind = RevocationKind::parse(kind).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_request",
            format!("revocation kind `{kind}` is unknown; use token, subject, job or pipeline"),
        )
    })?;
    let mode = match mode {
        None => RevocationMode::Revoke,
        Some(m) => RevocationMode::parse(m).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                format!("mode `{m}` is unknown; use revoke or freeze"),
            )
        })?,
    };
    Ok((kind, mode))
}

/// What a revocation value must be for kind `token`, said in every refusal.
const TOKEN_VALUE_HINT: &str = "for kind `token` give the token id (its `jti`: 22 base64url \
     characters, as introspection and the audit log show it) or the whole latchkey token";

/// Whether `value` has the shape of a compact JWT (three dot-separated
/// parts, a JSON header): never recorded as a revocation value.
fn looks_like_jwt(value: &str) -> bool {
    value.split('.').count() == 3 && value.starts_with("eyJ")
}

/// The value a revocation of `kind` records, and (for a whole token) when
/// the token expires. A token revocation names a `jti`; a whole Latchkey
/// token is accepted in its place, checked against the gateway's keys (an
/// expired one may still be named) and reduced to its `jti`, so the token
/// itself is never stored or audited. A value that could never match is
/// refused: a revocation that revokes nothing must not answer 201.
pub(crate) fn revocation_target(
    gw: &Gateway,
    kind: RevocationKind,
    value: &str,
) -> Result<(String, Option<UnixTime>), ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`value` is required",
        ));
    }
    match kind {
        RevocationKind::Token if is_jti(value) => Ok((value.to_owned(), None)),
        RevocationKind::Token if value.contains('.') => match gw.verifier.verify_issued(value) {
            Ok(claims) => Ok((claims.jti, Some(claims.exp))),
            Err(e) => Err(ApiError::bad_request(
                "invalid_request",
                format!(
                    "`value` is not a latchkey token this gateway signed ({e}); {TOKEN_VALUE_HINT}"
                ),
            )),
        },
        RevocationKind::Token => Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "`value` is neither a token id (`jti`) nor a latchkey token; {TOKEN_VALUE_HINT}"
            ),
        )),
        RevocationKind::Subject | RevocationKind::Job | RevocationKind::Pipeline
            if looks_like_jwt(value) =>
        {
            Err(ApiError::bad_request(
                "invalid_request",
                format!(
                    "`value` is a token, not a {} name; to revoke one token use kind `token`",
                    kind.as_str()
                ),
            ))
        }
        RevocationKind::Subject | RevocationKind::Job | RevocationKind::Pipeline => {
            Ok((value.to_owned(), None))
        }
    }
}

/// Which step of [`record_revocation`] failed; callers answer in their own
/// error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RevocationFailure {
    /// The revocation could not be stored (nothing changed).
    Store,
    /// The revocation is stored but its audit record could not be written.
    Audit,
}

/// Stores a revocation durably (which also evicts cached tokens), then
/// appends its audit record. The one path every revocation takes: the admin
/// API, RFC 7009 and webhook rules.
pub(crate) async fn record_revocation(
    gw: &Gateway,
    revocation: Revocation,
    event: AuditEvent,
) -> Result<(), RevocationFailure> {
    gw.revocations.revoke(revocation).await.map_err(|e| {
        tracing::error!(error = %e, "revocation could not be stored");
        RevocationFailure::Store
    })?;
    gw.audit.append(event).await.map_err(|e| {
        tracing::error!(error = %e, "audit log unavailable");
        RevocationFailure::Audit
    })?;
    Ok(())
}

/// Writes a revocation made by `by` durably and audits it.
pub(crate) async fn apply_revocation(
    gw: &Gateway,
    request_id: &str,
    by: &Principal,
    revocation: Revocation,
) -> Result<(), ApiError> {
    let event = crate::events::revocation(request_id, by, &revocation, gw.clock.unix_millis());
    record_revocation(gw, revocation, event)
        .await
        .map_err(|f| match f {
            RevocationFailure::Store => ApiError::unavailable("the revocation could not be stored"),
            RevocationFailure::Audit => ApiError::unavailable("the audit log cannot be written"),
        })
}

/// `POST /admin/revocations`: revoke or freeze by token id, subject, job or pipeline.
pub(crate) async fn revoke(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let request_id = new_request_id();
    let principal =
        match authorize_admin(&gw, request.headers(), &request_id, Action::TokenRevoke).await {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        };
    let req = match parse_after_auth::<Json<RevocationRequest>>(
        request,
        "the body is not a revocation request: send JSON `{\"kind\": ..., \"value\": ...}`",
    )
    .await
    {
        Ok(Json(req)) => req,
        Err(e) => return e.into_response(),
    };
    let (kind, mode) = match parse_kind_mode(&req.kind, req.mode.as_deref()) {
        Ok(km) => km,
        Err(e) => return e.into_response(),
    };
    let (value, token_exp) = match revocation_target(&gw, kind, &req.value) {
        Ok(target) => target,
        Err(e) => return e.into_response(),
    };
    let now = gw.clock.unix();
    let revocation = Revocation {
        kind,
        value: value.clone(),
        mode,
        created_at: now,
        // A token revocation is needed only while the token can live: until
        // its `exp`, or for a bare jti the longest any token lives.
        expires_at: match kind {
            RevocationKind::Token => Some(token_exp.unwrap_or_else(|| {
                now.saturating_add(latchkey_tokens::MAX_TOKEN_LIFETIME.as_secs())
            })),
            RevocationKind::Subject | RevocationKind::Job | RevocationKind::Pipeline => None,
        },
        reason: req
            .reason
            .unwrap_or_else(|| format!("{} by {}", mode.as_str(), principal.display_id())),
    };
    match apply_revocation(&gw, &request_id, &principal, revocation).await {
        Ok(()) => {
            let mut body = json!({ "status": mode.as_str() });
            if kind == RevocationKind::Token {
                body["jti"] = json!(value);
            }
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Query of `DELETE /admin/revocations`.
#[derive(Debug, Deserialize)]
pub(crate) struct LiftQuery {
    kind: String,
    value: String,
    #[serde(default)]
    mode: Option<String>,
}

/// `DELETE /admin/revocations?kind=&value=&mode=freeze`: lift a freeze.
pub(crate) async fn lift(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let request_id = new_request_id();
    let principal = match authorize_admin(&gw, req.headers(), &request_id, Action::AdminWrite).await
    {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let q = match parse_query_after_auth::<LiftQuery>(
        &req,
        "the query is malformed: send `?kind=&value=`",
    ) {
        Ok(Query(q)) => q,
        Err(e) => return e.into_response(),
    };
    let (kind, mode) = match parse_kind_mode(&q.kind, q.mode.as_deref().or(Some("freeze"))) {
        Ok(km) => km,
        Err(e) => return e.into_response(),
    };
    let value = match revocation_target(&gw, kind, &q.value) {
        Ok((value, _)) => value,
        Err(e) => return e.into_response(),
    };
    match gw.revocations.lift(kind, &value, mode).await {
        Ok(existed) => {
            let event = crate::events::lift(
                &request_id,
                &principal,
                kind,
                &value,
                mode,
                gw.clock.unix_millis(),
            );
            if let Err(e) = gw.record(event).await {
                return e.into_response();
            }
            Json(json!({ "lifted": existed })).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "lift failed");
            ApiError::unavailable("the revocation could not be lifted").into_response()
        }
    }
}

/// `GET /admin/keys`: signing keys and their states.
pub(crate) async fn keys(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let request_id = new_request_id();
    if let Err(e) = authorize_admin(&gw, &headers, &request_id, Action::AdminRead).await {
        return e.into_response();
    }
    Json(json!({ "keys": gw.keyring.keys() })).into_response()
}
