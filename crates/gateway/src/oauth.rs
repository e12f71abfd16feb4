//! Latchkey as a token issuer: metadata, JWKS, RFC 8693 token exchange,
//! RFC 7009 revocation and RFC 7662 introspection.

use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::Json;
use axum::extract::rejection::FormRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_core::{
    Action, Actor, Intent, Principal, PrincipalKind, ResourceKind, ResourceRef, echo,
};
use latchkey_identity::IdentityError;
use latchkey_store::{Revocation, RevocationKind, RevocationMode};
use latchkey_tokens::MintRequest;
use serde::Deserialize;
use serde_json::json;

use crate::app::Gateway;
use crate::refusals::ClientAddr;
use crate::request_id::new_request_id;

const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TT_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const TT_ID: &str = "urn:ietf:params:oauth:token-type:id_token";
const TT_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An OAuth-style error response (RFC 6749 §5.2): a code and a description
/// that tells the caller what to fix, never internal detail.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    description: String,
    www_authenticate: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            www_authenticate: None,
        }
    }
    pub(crate) fn bad_request(code: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, description)
    }
    pub(crate) fn unavailable(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            description,
        )
    }
    pub(crate) fn unauthorized(description: impl Into<String>) -> Self {
        Self {
            www_authenticate: Some("Bearer realm=\"latchkey\""),
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_token", description)
        }
    }
    pub(crate) fn forbidden(description: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "access_denied", description)
    }
    pub(crate) fn description(&self) -> &str {
        &self.description
    }
}

/// The most bytes of an error description: its parts that quote caller
/// input are bounded one by one ([`latchkey_core::echo`]); this bounds the
/// whole, for messages built in crates that quote more.
const MAX_DESCRIPTION_BYTES: usize = 1024;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let description = latchkey_core::bounded(&self.description, MAX_DESCRIPTION_BYTES);
        let mut resp = (
            self.status,
            Json(json!({ "error": self.code, "error_description": description })),
        )
            .into_response();
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        if let Some(v) = self.www_authenticate {
            resp.headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        resp
    }
}

fn no_store(value: serde_json::Value) -> Response {
    let mut resp = Json(value).into_response();
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp
}

/// `GET /.well-known/openid-configuration`.
pub(crate) async fn metadata(State(gw): State<Arc<Gateway>>) -> Response {
    let base = gw.public_url();
    Json(json!({
        "issuer": base,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}/oauth2/token"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "introspection_endpoint": format!("{base}/oauth2/introspect"),
        "grant_types_supported": [GRANT_TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["none"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "response_types_supported": [],
        "subject_types_supported": ["public"],
    }))
    .into_response()
}

/// The longest a relying party may cache JWKS.
const JWKS_MAX_AGE_SECS: u64 = 300;

/// `GET /.well-known/jwks.json`.
///
/// INVARIANT: a relying party that honours `max-age` refetches before a
/// scheduled key signs: the cache lifetime never exceeds `publish_ahead`.
pub(crate) async fn jwks(State(gw): State<Arc<Gateway>>) -> Response {
    let mut resp = Json(gw.keyring.jwks()).into_response();
    let max_age = JWKS_MAX_AGE_SECS.min(gw.keyring.schedule().publish_ahead.as_secs());
    if let Ok(value) = HeaderValue::from_str(&format!("max-age={max_age}")) {
        resp.headers_mut()
            .insert(http::header::CACHE_CONTROL, value);
    }
    resp
}

/// `GET /dev-idp/.well-known/openid-configuration` (dev only).
pub(crate) async fn dev_metadata(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.dev_issuer() {
        Some(dev) => Json(dev.discovery_document()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "the development identity provider is not enabled",
        )
            .into_response(),
    }
}

/// `GET /dev-idp/jwks.json` (dev only).
pub(crate) async fn dev_jwks(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.dev_issuer() {
        Some(dev) => Json(dev.jwks()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "the development identity provider is not enabled",
        )
            .into_response(),
    }
}

/// The token-exchange form (RFC 8693 §2.1).
#[derive(Debug, Deserialize)]
pub(crate) struct ExchangeForm {
    grant_type: Option<String>,
    subject_token: Option<String>,
    subject_token_type: Option<String>,
    actor_token: Option<String>,
    actor_token_type: Option<String>,
    audience: Option<String>,
    scope: Option<String>,
    requested_token_type: Option<String>,
    lifetime: Option<u64>,
}

fn identity_error(e: &IdentityError, which: &str) -> ApiError {
    match e {
        IdentityError::IssuerUnavailable { .. } => ApiError::unavailable(format!("{which}: {e}")),
        _ => ApiError::bad_request("invalid_grant", format!("{which}: {e}")),
    }
}

fn check_token_type(t: Option<&str>, field: &str) -> Result<(), ApiError> {
    match t {
        Some(TT_JWT | TT_ID | TT_ACCESS) => Ok(()),
        Some(other) => Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "`{field}` `{}` is not supported; use `{TT_JWT}`, `{TT_ID}` or `{TT_ACCESS}`",
                echo(other)
            ),
        )),
        None => Err(ApiError::bad_request(
            "invalid_request",
            format!("`{field}` is required"),
        )),
    }
}

/// `POST /oauth2/token`: exchange an external identity for a Latchkey token.
pub(crate) async fn token(
    State(gw): State<Arc<Gateway>>,
    client: ClientAddr,
    form: Result<Form<ExchangeForm>, FormRejection>,
) -> Response {
    let request_id = new_request_id();
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            // An unreadable form is refused in RFC 6749 form and audited,
            // like every other refusal.
            // RFC 6749 §5.2 says 400; keep axum's 413 and 415, which say more.
            let status = match rejection.status() {
                s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => s,
                _ => StatusCode::BAD_REQUEST,
            };
            let e = ApiError::new(
                status,
                "invalid_request",
                format!(
                    "the request body is not a valid token-exchange form ({}); \
                     send `application/x-www-form-urlencoded` fields as in RFC 8693",
                    rejection.body_text()
                ),
            );
            if let Err(audit) = record_refusal(
                &gw,
                &request_id,
                client,
                "token.mint",
                None,
                e.code,
                &e.description,
            )
            .await
            {
                return audit.into_response();
            }
            return e.into_response();
        }
    };
    match exchange(&gw, &request_id, client, form).await {
        Ok(body) => no_store(body),
        Err(e) => e.into_response(),
    }
}

/// Records a refusal of the token endpoint: one with no principal yet is a
/// refusal before authentication, rate-limited per `client`.
async fn record_refusal(
    gw: &Gateway,
    request_id: &str,
    client: ClientAddr,
    action: &str,
    principal: Option<&Principal>,
    code: &str,
    detail: &str,
) -> Result<(), ApiError> {
    let event = crate::events::refusal(
        request_id.to_owned(),
        principal,
        action,
        code,
        detail,
        gw.clock.unix_millis(),
    );
    if principal.is_none() {
        return gw.record_unauthenticated(client, event).await;
    }
    gw.record(event).await
}

/// The checks on the request itself, before any token is looked at:
/// returns the subject token, the audience and the requested scopes.
fn check_request<'f>(
    gw: &Gateway,
    form: &'f ExchangeForm,
) -> Result<(&'f str, &'f str, Vec<String>), ApiError> {
    match form.grant_type.as_deref() {
        Some(GRANT_TOKEN_EXCHANGE) => {}
        Some(other) => {
            return Err(ApiError::bad_request(
                "unsupported_grant_type",
                format!(
                    "grant type `{}` is not supported; use `{GRANT_TOKEN_EXCHANGE}`",
                    echo(other)
                ),
            ));
        }
        None => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`grant_type` is required",
            ));
        }
    }
    if let Some(t) = form.requested_token_type.as_deref()
        && t != TT_ACCESS
        && t != TT_JWT
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "`requested_token_type` `{}` is not supported; Latchkey issues `{TT_ACCESS}`",
                echo(t)
            ),
        ));
    }
    let subject_token = form
        .subject_token
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("invalid_request", "`subject_token` is required"))?;
    check_token_type(form.subject_token_type.as_deref(), "subject_token_type")?;
    let audience = form
        .audience
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                "`audience` is required (for example `git`)",
            )
        })?;
    if !gw.config.tokens.audiences.iter().any(|a| a == audience) {
        return Err(ApiError::bad_request(
            "invalid_target",
            format!(
                "audience `{}` is not configured; known audiences: {}",
                echo(audience),
                gw.config.tokens.audiences.join(", ")
            ),
        ));
    }
    let scope: Vec<String> = form
        .scope
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    Ok((subject_token, audience, scope))
}

async fn exchange(
    gw: &Gateway,
    request_id: &str,
    client: ClientAddr,
    form: ExchangeForm,
) -> Result<serde_json::Value, ApiError> {
    let (subject_token, audience, scope) = match check_request(gw, &form) {
        Ok(checked) => checked,
        Err(e) => {
            // Malformed requests are refusals too: audit them like the rest.
            record_refusal(
                gw,
                request_id,
                client,
                "token.mint",
                None,
                e.code,
                &e.description,
            )
            .await?;
            return Err(e);
        }
    };

    let subject = match gw.issuers.verify(subject_token).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(error = %e, request_id, "subject token refused");
            record_refusal(
                gw,
                request_id,
                client,
                "token.mint",
                None,
                e.code(),
                &e.to_string(),
            )
            .await?;
            return Err(identity_error(&e, "subject_token"));
        }
    };
    let mut principal = subject.principal.clone();
    let mut actor_expires_at = None;

    if let Some(actor_token) = form.actor_token.as_deref().filter(|s| !s.is_empty()) {
        if let Err(e) = check_token_type(form.actor_token_type.as_deref(), "actor_token_type") {
            record_refusal(
                gw,
                request_id,
                client,
                "token.mint",
                Some(&principal),
                e.code,
                &e.description,
            )
            .await?;
            return Err(e);
        }
        let actor = match gw.issuers.verify(actor_token).await {
            Ok(a) => a,
            Err(e) => {
                record_refusal(
                    gw,
                    request_id,
                    client,
                    "token.mint",
                    Some(&principal),
                    e.code(),
                    &e.to_string(),
                )
                .await?;
                return Err(identity_error(&e, "actor_token"));
            }
        };
        actor_expires_at = Some(actor.expires_at);
        principal.actor = Some(Actor {
            kind: actor.principal.kind,
            sub: actor.principal.id.clone(),
            iss: Some(actor.principal.issuer.clone()),
        });
    }

    // Trust rules: a CI workload mints only what a `[[trust]]` rule for its
    // issuer, claims and audience allows, on top of what Cedar allows.
    let mut scope = scope;
    let mut trust_max = None;
    if subject.principal.kind == PrincipalKind::Workload {
        match crate::config::match_trust(
            &gw.config.trust,
            &subject.issuer_name,
            &subject.claims,
            audience,
            &scope,
        ) {
            Ok(grant) => {
                tracing::debug!(rule = grant.rule, request_id, "trust rule matched");
                scope = grant.scope;
                trust_max = grant.max_lifetime;
            }
            Err(refusal) => {
                let e = ApiError::bad_request(refusal.oauth_error_code(), refusal.to_string());
                record_refusal(
                    gw,
                    request_id,
                    client,
                    "token.mint",
                    Some(&principal),
                    "trust_refused",
                    &e.description,
                )
                .await?;
                return Err(e);
            }
        }
    }

    let intent = Intent::new(
        Action::TokenMint,
        ResourceRef::new(ResourceKind::Audience, audience),
    )
    .with("scope", scope.join(" "))
    .with("subject_kind", principal.kind.as_str())
    .with("request_id", request_id);
    let decision = gw.decide(request_id, &principal, &intent).await?;
    if !decision.is_allowed() {
        return Err(ApiError::bad_request(
            "invalid_target",
            decision.reason.clone(),
        ));
    }

    // No token outlives the identity it came from, whatever its kind: the
    // subject token's expiry, and the actor token's when delegated.
    let not_after = actor_expires_at.map_or(subject.expires_at, |a| a.min(subject.expires_at));
    let req = MintRequest {
        principal: principal.clone(),
        audience: audience.to_owned(),
        scope,
        // min(requested, trust rule max); the issuer applies the global max
        // and `not_after` (the subject's and actor's expiry).
        lifetime: match (form.lifetime.map(Duration::from_secs), trust_max) {
            (requested, None) => requested,
            (requested, Some(max)) => Some(
                requested
                    .unwrap_or(gw.config.tokens.default_lifetime)
                    .min(max),
            ),
        },
        not_after,
    };
    let minted = match gw.token_issuer.mint(&req) {
        Ok(m) => m,
        Err(e) => {
            record_refusal(
                gw,
                request_id,
                client,
                "token.mint",
                Some(&principal),
                "mint_refused",
                &e.to_string(),
            )
            .await?;
            return Err(ApiError::bad_request(e.oauth_error_code(), e.to_string()));
        }
    };
    let outcome = crate::events::minted(
        request_id.to_owned(),
        &principal,
        audience,
        &minted.claims.jti,
        minted.claims.exp,
        gw.clock.unix_millis(),
    );
    // The token is withheld unless its minting is on record.
    gw.record(outcome).await?;
    let mut body = json!({
        "access_token": minted.token,
        "issued_token_type": TT_ACCESS,
        "token_type": "Bearer",
        "expires_in": minted.expires_in,
    });
    if !req.scope.is_empty() {
        body["scope"] = json!(req.scope.join(" "));
    }
    Ok(body)
}

/// Authenticates a caller of the token-management endpoints (audience
/// `latchkey`) and authorizes `action` on the gateway.
pub(crate) async fn authorize_admin(
    gw: &Gateway,
    headers: &HeaderMap,
    request_id: &str,
    action: Action,
) -> Result<Principal, ApiError> {
    let (_, verified) = crate::auth::authenticate(gw, headers, "latchkey").map_err(|f| {
        ApiError::unauthorized(format!(
            "{} (the admin endpoints need a token for audience `latchkey`)",
            f.message()
        ))
    })?;
    let intent = Intent::new(action, ResourceRef::new(ResourceKind::Gateway, "latchkey"))
        .with("request_id", request_id);
    let decision = gw.decide(request_id, &verified.principal, &intent).await?;
    if !decision.is_allowed() {
        return Err(ApiError::forbidden(decision.reason));
    }
    Ok(verified.principal)
}

/// The RFC 7009 / 7662 form.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenForm {
    token: Option<String>,
}

/// The RFC 7009 / 7662 form, read only once the caller is authorized.
async fn token_form(req: Request) -> Result<TokenForm, ApiError> {
    crate::admin::parse_after_auth::<Form<TokenForm>>(
        req,
        "the body is not a form with a `token` field",
    )
    .await
    .map(|Form(f)| f)
}

/// `POST /oauth2/revoke` (RFC 7009): revokes a Latchkey token by its id.
pub(crate) async fn revoke(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let request_id = new_request_id();
    let principal =
        match authorize_admin(&gw, req.headers(), &request_id, Action::TokenRevoke).await {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        };
    let form = match token_form(req).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let Some(token) = form.token.filter(|t| !t.is_empty()) else {
        return ApiError::bad_request("invalid_request", "`token` is required").into_response();
    };
    // RFC 7009 §2.2: an invalid or unknown token is not an error.
    let Ok(verified) = gw.verifier.verify_any_audience(&token) else {
        return StatusCode::OK.into_response();
    };
    let revocation = Revocation {
        kind: RevocationKind::Token,
        value: verified.claims.jti.clone(),
        mode: RevocationMode::Revoke,
        created_at: gw.clock.unix(),
        expires_at: Some(verified.claims.exp),
        reason: format!("revoked by {}", principal.display_id()),
    };
    if let Err(e) = crate::admin::apply_revocation(&gw, &request_id, &principal, revocation).await {
        return e.into_response();
    }
    StatusCode::OK.into_response()
}

/// `POST /oauth2/introspect` (RFC 7662).
pub(crate) async fn introspect(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let request_id = new_request_id();
    if let Err(e) = authorize_admin(&gw, req.headers(), &request_id, Action::TokenIntrospect).await
    {
        return e.into_response();
    }
    let form = match token_form(req).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let Some(token) = form.token.filter(|t| !t.is_empty()) else {
        return ApiError::bad_request("invalid_request", "`token` is required").into_response();
    };
    match gw.verifier.verify_any_audience(&token) {
        Ok(v) => {
            let mut body = serde_json::to_value(v.claims.as_ref()).unwrap_or_else(|_| json!({}));
            body["active"] = json!(true);
            body["token_type"] = json!("Bearer");
            no_store(body)
        }
        Err(_) => no_store(json!({ "active": false })),
    }
}
