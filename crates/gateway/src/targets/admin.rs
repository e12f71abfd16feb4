//! The admin API (`/admin/audit`, `/admin/revocations`, `/admin/keys`) and
//! RFC 7009 revocation and RFC 7662 introspection, as one target on the
//! pipeline: authenticate a token for audience `latchkey`, authorize the
//! endpoint's action on `Gateway::"latchkey"`, and only then read what the
//! request carries (an unauthenticated caller gets 401 whatever it sent,
//! never a parse error that shows the body was read). `/admin/health`
//! (liveness) and `/readyz` (readiness, in `readiness`) are outside the
//! pipeline: unauthenticated, for load balancers.

use std::sync::Arc;

use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use futures_util::future::BoxFuture;
use latchkey_core::{Action, Intent, Principal, ResourceKind, ResourceRef, UnixTime};
use latchkey_store::{AuditQuery, Revocation, RevocationKind, RevocationMode, SharedStore};
use latchkey_tokens::{RevocationSet, SigningKeyRing, is_jti};
use serde::Deserialize;
use serde_json::json;

use crate::pipeline::{
    Authorized, Classified, Code, Pipeline, Protocol, Refusal, RequestCx, Stage, Target,
    TargetName, records,
};

/// How long a query of the audit index waits for it to catch up with the
/// log (it trails by a few milliseconds).
pub(crate) const AUDIT_INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the admin endpoints work on.
pub(crate) struct AdminState {
    pub(crate) pipe: Arc<Pipeline>,
    pub(crate) store: SharedStore,
    pub(crate) revocations: Arc<RevocationSet>,
    pub(crate) keyring: Arc<SigningKeyRing>,
    /// What `/admin/health` and `/readyz` warn about (the dev issuer in `serve`).
    pub(crate) warnings: Vec<String>,
    /// What `/readyz` reads beyond the pipeline and the store.
    pub(crate) readiness: super::readiness::Readiness,
}

/// One admin endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /admin/audit`.
    AuditQuery,
    /// `POST /admin/revocations`.
    Revoke,
    /// `DELETE /admin/revocations`.
    Lift,
    /// `GET /admin/keys`.
    Keys,
    /// `POST /oauth2/revoke` (RFC 7009).
    TokenRevoke,
    /// `POST /oauth2/introspect` (RFC 7662).
    TokenIntrospect,
}

impl Endpoint {
    fn action(self) -> Action {
        match self {
            Self::AuditQuery | Self::Keys => Action::AdminRead,
            // Creating a revocation or freeze and lifting one are the same
            // power over the same state: one action, so one policy grants
            // both (an on-call group that may freeze may also lift).
            Self::Revoke | Self::Lift | Self::TokenRevoke => Action::TokenRevoke,
            Self::TokenIntrospect => Action::TokenIntrospect,
        }
    }
}

/// An admin endpoint as a target.
pub(crate) struct AdminTarget {
    pub(crate) state: Arc<AdminState>,
    pub(crate) endpoint: Endpoint,
}

impl Target for AdminTarget {
    type Input = Request;
    type Plan = Request;
    const PROTOCOL: Protocol = Protocol::OAuth;

    fn name(&self) -> TargetName {
        match self.endpoint {
            Endpoint::TokenRevoke | Endpoint::TokenIntrospect => TargetName::Token,
            _ => TargetName::Admin,
        }
    }

    fn pipeline(&self) -> &Pipeline {
        &self.state.pipe
    }

    fn authenticate<'a>(
        &'a self,
        _cx: &'a RequestCx,
        req: Request,
    ) -> BoxFuture<'a, Result<(Principal, Request), Refusal>> {
        Box::pin(async move {
            let (_, verified) = self.state.pipe.authenticate_token(
                req.headers(),
                "latchkey",
                Some("the admin endpoints need a token for audience `latchkey`"),
            )?;
            Ok((verified.principal, req))
        })
    }

    fn classify<'a>(
        &'a self,
        cx: &'a RequestCx,
        _principal: &'a Principal,
        req: Request,
    ) -> BoxFuture<'a, Result<Classified<Request>, Refusal>> {
        Box::pin(async move {
            let intent = Intent::new(
                self.endpoint.action(),
                ResourceRef::new(ResourceKind::Gateway, "latchkey"),
            )
            .with("request_id", cx.request_id.as_str());
            Ok(Classified::new(vec![intent.into()], req))
        })
    }

    fn act<'a>(
        &'a self,
        cx: &'a RequestCx,
        principal: Principal,
        req: Request,
        _authorized: Authorized,
    ) -> BoxFuture<'a, Result<Response, Refusal>> {
        Box::pin(async move {
            let s = &self.state;
            match self.endpoint {
                Endpoint::AuditQuery => audit_query(s, req.uri()).await,
                Endpoint::Revoke => revoke(s, cx, &principal, req).await,
                Endpoint::Lift => lift(s, cx, &principal, req.uri()).await,
                Endpoint::Keys => Ok(Json(json!({ "keys": s.keyring.keys() })).into_response()),
                Endpoint::TokenRevoke => token_revoke(s, cx, &principal, req).await,
                Endpoint::TokenIntrospect => token_introspect(s, req).await,
            }
        })
    }
}

/// `GET /admin/health`: unauthenticated liveness and readiness.
pub(crate) async fn health(State(s): State<Arc<AdminState>>) -> Response {
    if let Some(why) = s.pipe.audit.failure() {
        tracing::error!(error = %why, "health: audit log unavailable");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "audit log unavailable" })),
        )
            .into_response();
    }
    match s.store.max_audit_seq().await {
        Ok(_) => {
            let mut body = json!({ "status": "ok", "policies": s.pipe.policy.policy_count() });
            if !s.warnings.is_empty() {
                body["warnings"] = json!(s.warnings);
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
    /// One node's records (several nodes share the store); unset: all.
    node: Option<String>,
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
            node: p.node,
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

/// Parses what an admin request carries, once the caller is authorized.
/// The request keeps its extensions, so `DefaultBodyLimit` applies.
async fn parse_body<E>(req: Request, what: &str) -> Result<E, Refusal>
where
    E: FromRequest<()>,
    E::Rejection: RejectionText,
{
    E::from_request(req, &())
        .await
        .map_err(|r| rejection_refusal(&r, what))
}

/// [`parse_body`] for a request's query string.
fn parse_query<T: serde::de::DeserializeOwned>(uri: &http::Uri, what: &str) -> Result<T, Refusal> {
    Query::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|r| rejection_refusal(&r, what))
}

fn rejection_refusal(r: &impl RejectionText, what: &str) -> Refusal {
    Refusal::new(
        Stage::Classify,
        Code::InvalidRequest,
        format!(
            "{what} ({}); see the HTTP interface in the README",
            latchkey_core::bounded(&r.body_text(), 300)
        ),
    )
    .with_status(r.status())
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

fn invalid_request(message: impl Into<String>) -> Refusal {
    Refusal::new(Stage::Classify, Code::InvalidRequest, message)
}

/// `GET /admin/audit?principal=&resource=&action=&decision=&commit=&limit=`.
async fn audit_query(s: &AdminState, uri: &http::Uri) -> Result<Response, Refusal> {
    let q = AuditQuery::from(parse_query::<AuditParams>(
        uri,
        "the audit query is malformed",
    )?);
    // Read your writes: what was recorded before this query is in its answer.
    if !s.pipe.audit.wait_indexed(AUDIT_INDEX_WAIT).await {
        tracing::warn!("the audit index is behind the log; the answer may miss recent records");
    }
    match s.store.query_audit(&q).await {
        Ok(rows) => {
            let events: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    let mut v: serde_json::Value =
                        serde_json::from_str(&r.event_json).unwrap_or_else(|_| json!({}));
                    v["seq"] = json!(r.seq);
                    if !r.node.is_empty() {
                        // Several nodes: `seq` is in this node's chain.
                        v["node"] = json!(r.node);
                    }
                    v
                })
                .collect();
            Ok(Json(json!({ "events": events })).into_response())
        }
        Err(e) => {
            tracing::error!(error = %e, "audit query failed");
            Err(Refusal::new(
                Stage::Act,
                Code::StoreUnavailable,
                "the audit index cannot be read",
            ))
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
) -> Result<(RevocationKind, RevocationMode), Refusal> {
    let kind = RevocationKind::parse(kind).ok_or_else(|| {
        invalid_request(format!(
            "revocation kind `{}` is unknown; use token, subject, job or pipeline",
            latchkey_core::echo(kind)
        ))
    })?;
    let mode = match mode {
        None => RevocationMode::Revoke,
        Some(m) => RevocationMode::parse(m).ok_or_else(|| {
            invalid_request(format!(
                "mode `{}` is unknown; use revoke or freeze",
                latchkey_core::echo(m)
            ))
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
fn revocation_target(
    pipe: &Pipeline,
    kind: RevocationKind,
    value: &str,
) -> Result<(String, Option<UnixTime>), Refusal> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid_request("`value` is required"));
    }
    match kind {
        RevocationKind::Token if is_jti(value) => Ok((value.to_owned(), None)),
        RevocationKind::Token if value.contains('.') => match pipe.verifier.verify_issued(value) {
            Ok(claims) => Ok((claims.jti, Some(claims.exp))),
            Err(e) => Err(invalid_request(format!(
                "`value` is not a latchkey token this gateway signed ({e}); {TOKEN_VALUE_HINT}"
            ))),
        },
        RevocationKind::Token => Err(invalid_request(format!(
            "`value` is neither a token id (`jti`) nor a latchkey token; {TOKEN_VALUE_HINT}"
        ))),
        RevocationKind::Subject | RevocationKind::Job | RevocationKind::Pipeline
            if looks_like_jwt(value) =>
        {
            Err(invalid_request(format!(
                "`value` is a token, not a {} name; to revoke one token use kind `token`",
                kind.as_str()
            )))
        }
        RevocationKind::Subject | RevocationKind::Job | RevocationKind::Pipeline => {
            Ok((value.to_owned(), None))
        }
    }
}

/// Stores a revocation made by `by` and records it.
async fn apply_revocation(
    s: &AdminState,
    cx: &RequestCx,
    by: &Principal,
    revocation: Revocation,
) -> Result<(), Refusal> {
    let event = records::revocation(&cx.request_id, by, &revocation, s.pipe.clock.unix_millis());
    super::revocations::apply(&s.pipe, &s.revocations, revocation, event).await
}

/// `POST /admin/revocations`: revoke or freeze by token id, subject, job or pipeline.
async fn revoke(
    s: &AdminState,
    cx: &RequestCx,
    principal: &Principal,
    req: Request,
) -> Result<Response, Refusal> {
    let Json(req) = parse_body::<Json<RevocationRequest>>(
        req,
        "the body is not a revocation request: send JSON `{\"kind\": ..., \"value\": ...}`",
    )
    .await?;
    let (kind, mode) = parse_kind_mode(&req.kind, req.mode.as_deref())?;
    let (value, token_exp) = revocation_target(&s.pipe, kind, &req.value)?;
    let now = s.pipe.clock.unix();
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
    apply_revocation(s, cx, principal, revocation).await?;
    let mut body = json!({ "status": mode.as_str() });
    if kind == RevocationKind::Token {
        body["jti"] = json!(value);
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
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
async fn lift(
    s: &AdminState,
    cx: &RequestCx,
    principal: &Principal,
    uri: &http::Uri,
) -> Result<Response, Refusal> {
    let q: LiftQuery = parse_query(uri, "the query is malformed: send `?kind=&value=`")?;
    let (kind, mode) = parse_kind_mode(&q.kind, q.mode.as_deref().or(Some("freeze")))?;
    let (value, _) = revocation_target(&s.pipe, kind, &q.value)?;
    let existed = s.revocations.lift(kind, &value, mode).await.map_err(|e| {
        tracing::error!(error = %e, "lift failed");
        Refusal::new(
            Stage::Act,
            Code::StoreUnavailable,
            "the revocation could not be lifted",
        )
    })?;
    let event = records::lift(
        &cx.request_id,
        principal,
        kind,
        &value,
        mode,
        s.pipe.clock.unix_millis(),
    );
    s.pipe.record(event).await?;
    Ok(Json(json!({ "lifted": existed })).into_response())
}

/// The RFC 7009 / 7662 form.
#[derive(Debug, Deserialize)]
struct TokenForm {
    token: Option<String>,
}

async fn token_form(req: Request) -> Result<String, Refusal> {
    let Form(form) =
        parse_body::<Form<TokenForm>>(req, "the body is not a form with a `token` field").await?;
    form.token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid_request("`token` is required"))
}

fn no_store(value: serde_json::Value) -> Response {
    let mut resp = Json(value).into_response();
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// `POST /oauth2/revoke` (RFC 7009): revokes a Latchkey token by its id.
async fn token_revoke(
    s: &AdminState,
    cx: &RequestCx,
    principal: &Principal,
    req: Request,
) -> Result<Response, Refusal> {
    let token = token_form(req).await?;
    // RFC 7009 §2.2: an invalid or unknown token is not an error.
    let Ok(verified) = s.pipe.verifier.verify_any_audience(&token) else {
        return Ok(StatusCode::OK.into_response());
    };
    let revocation = Revocation {
        kind: RevocationKind::Token,
        value: verified.claims.jti.clone(),
        mode: RevocationMode::Revoke,
        created_at: s.pipe.clock.unix(),
        expires_at: Some(verified.claims.exp),
        reason: format!("revoked by {}", principal.display_id()),
    };
    apply_revocation(s, cx, principal, revocation).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /oauth2/introspect` (RFC 7662).
async fn token_introspect(s: &AdminState, req: Request) -> Result<Response, Refusal> {
    let token = token_form(req).await?;
    Ok(match s.pipe.verifier.verify_any_audience(&token) {
        Ok(v) => {
            let mut body = serde_json::to_value(v.claims.as_ref()).unwrap_or_else(|_| json!({}));
            body["active"] = json!(true);
            body["token_type"] = json!("Bearer");
            no_store(body)
        }
        Err(_) => no_store(json!({ "active": false })),
    })
}
