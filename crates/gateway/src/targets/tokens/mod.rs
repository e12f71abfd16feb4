//! Latchkey as a token issuer: discovery metadata and JWKS, and RFC 8693
//! token exchange as a target on the pipeline (authenticate: the subject
//! token; classify: the actor token and the CI trust rules; authorize:
//! `token.mint` on the audience; act: mint, recorded before the token is
//! returned).

pub(crate) mod dev_idp;
mod trust;

use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use latchkey_core::{
    Action, Actor, Intent, Principal, PrincipalKind, ResourceKind, ResourceRef, echo,
};
use latchkey_identity::{DevIssuer, IdentityError, IssuerSet};
use latchkey_tokens::{MintRequest, SigningKeyRing, TokenIssuer};
use serde::Deserialize;
use serde_json::json;

use crate::config::{TokensConfig, TrustRule};
use crate::pipeline::{
    AuditAction, Authorized, Classified, Code, Pipeline, Protocol, Refusal, RequestCx, Stage,
    Target, TargetName, records,
};

const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TT_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const TT_ID: &str = "urn:ietf:params:oauth:token-type:id_token";
const TT_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

fn no_store(value: serde_json::Value) -> Response {
    let mut resp = Json(value).into_response();
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp
}

/// `GET /.well-known/openid-configuration`.
pub(crate) async fn metadata(State(gw): State<Arc<TokenService>>) -> Response {
    let base = gw.public_url.as_str();
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
pub(crate) async fn jwks(State(gw): State<Arc<TokenService>>) -> Response {
    let mut resp = Json(gw.keyring.jwks()).into_response();
    let max_age = JWKS_MAX_AGE_SECS.min(gw.keyring.schedule().publish_ahead.as_secs());
    if let Ok(value) = HeaderValue::from_str(&format!("max-age={max_age}")) {
        resp.headers_mut()
            .insert(http::header::CACHE_CONTROL, value);
    }
    resp
}

/// `GET /dev-idp/.well-known/openid-configuration` (dev only).
pub(crate) async fn dev_metadata(State(gw): State<Arc<TokenService>>) -> Response {
    match gw.dev_issuer.as_ref() {
        Some(dev) => Json(dev.discovery_document()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "the development identity provider is not enabled",
        )
            .into_response(),
    }
}

/// `GET /dev-idp/jwks.json` (dev only).
pub(crate) async fn dev_jwks(State(gw): State<Arc<TokenService>>) -> Response {
    match gw.dev_issuer.as_ref() {
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

/// The token service: what minting needs.
pub(crate) struct TokenService {
    pub(crate) pipe: Arc<Pipeline>,
    pub(crate) issuers: Arc<IssuerSet>,
    pub(crate) token_issuer: TokenIssuer,
    pub(crate) keyring: Arc<SigningKeyRing>,
    pub(crate) dev_issuer: Option<DevIssuer>,
    pub(crate) public_url: String,
    pub(crate) tokens: TokensConfig,
    pub(crate) trust: Vec<TrustRule>,
}

fn invalid_request(message: impl Into<String>) -> Refusal {
    Refusal::new(Stage::Classify, Code::InvalidRequest, message)
}

fn identity_refusal(e: &IdentityError, which: &str, dev_issuer: Option<&str>) -> Refusal {
    let code = match e {
        IdentityError::IssuerUnavailable { .. } => Code::IssuerUnavailable,
        _ => Code::Identity(e.code()),
    };
    let message = match e {
        IdentityError::UnknownIssuer { iss } if looks_like_dev_issuer(iss) => {
            other_sandbox_message(iss, dev_issuer)
        }
        _ => e.to_string(),
    };
    Refusal::new(Stage::Authenticate, code, format!("{which}: {message}"))
}

/// `iss` has the shape of a `latchkey dev` sandbox's identity provider
/// (`http(s)://HOST:PORT/dev-idp`).
fn looks_like_dev_issuer(iss: &str) -> bool {
    (iss.starts_with("http://") || iss.starts_with("https://")) && iss.ends_with("/dev-idp")
}

/// The refusal of a dev token this gateway did not mint: the usual advice
/// (add the issuer to `[[issuers]]`) would mislead, since the token comes
/// from another sandbox or was minted for another URL of this one.
fn other_sandbox_message(iss: &str, dev_issuer: Option<&str>) -> String {
    match dev_issuer {
        Some(here) => format!(
            "issuer `{}` is not this sandbox's identity provider (`{here}`): it is a dev token \
             from another sandbox or minted for another URL; mint one for this sandbox with \
             `latchkey dev token --url {}`",
            echo(iss),
            here.trim_end_matches("/dev-idp")
        ),
        None => format!(
            "issuer `{}` looks like a `latchkey dev` sandbox's identity provider: it is a dev \
             token from a sandbox, which this gateway does not trust; use a token from a \
             configured issuer",
            echo(iss)
        ),
    }
}

fn check_token_type(t: Option<&str>, field: &str) -> Result<(), Refusal> {
    match t {
        Some(TT_JWT | TT_ID | TT_ACCESS) => Ok(()),
        Some(other) => Err(invalid_request(format!(
            "`{field}` `{}` is not supported; use `{TT_JWT}`, `{TT_ID}` or `{TT_ACCESS}`",
            echo(other)
        ))),
        None => Err(invalid_request(format!("`{field}` is required"))),
    }
}

/// A token request whose subject is verified.
pub(crate) struct Exchange {
    form: ExchangeForm,
    audience: String,
    scope: Vec<String>,
    subject: latchkey_identity::VerifiedIdentity,
}

/// What classify found: the request and the grant to mint with.
pub(crate) struct MintPlan {
    req: MintRequest,
}

impl TokenService {
    /// The checks on the request itself, before any token is looked at:
    /// returns the audience and the requested scopes.
    fn check_request(&self, form: &ExchangeForm) -> Result<(String, Vec<String>), Refusal> {
        match form.grant_type.as_deref() {
            Some(GRANT_TOKEN_EXCHANGE) => {}
            Some(other) => {
                return Err(Refusal::new(
                    Stage::Classify,
                    Code::UnsupportedGrantType,
                    format!(
                        "grant type `{}` is not supported; use `{GRANT_TOKEN_EXCHANGE}`",
                        echo(other)
                    ),
                ));
            }
            None => return Err(invalid_request("`grant_type` is required")),
        }
        if let Some(t) = form.requested_token_type.as_deref()
            && t != TT_ACCESS
            && t != TT_JWT
        {
            return Err(invalid_request(format!(
                "`requested_token_type` `{}` is not supported; Latchkey issues `{TT_ACCESS}`",
                echo(t)
            )));
        }
        if form.subject_token.as_deref().is_none_or(str::is_empty) {
            return Err(invalid_request("`subject_token` is required"));
        }
        check_token_type(form.subject_token_type.as_deref(), "subject_token_type")?;
        let audience = form
            .audience
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid_request("`audience` is required (for example `git`)"))?;
        if !self.tokens.audiences.iter().any(|a| a == audience) {
            return Err(Refusal::new(
                Stage::Classify,
                Code::UnknownAudience,
                format!(
                    "audience `{}` is not configured; known audiences: {}",
                    echo(audience),
                    self.tokens.audiences.join(", ")
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
        Ok((audience.to_owned(), scope))
    }
}

/// `POST /oauth2/token` as a target.
impl Target for TokenService {
    type Input = Exchange;
    type Plan = MintPlan;
    const PROTOCOL: Protocol = Protocol::OAuth;

    fn name(&self) -> TargetName {
        TargetName::Token
    }

    fn pipeline(&self) -> &Pipeline {
        &self.pipe
    }

    /// Every refusal of the token endpoint is recorded as `token.mint`,
    /// what the request asked for.
    fn refusal_action(&self, _stage: Stage) -> AuditAction {
        AuditAction::Intent(Action::TokenMint)
    }

    fn authenticate<'a>(
        &'a self,
        cx: &'a RequestCx,
        req: Request,
    ) -> BoxFuture<'a, Result<(Principal, Exchange), Refusal>> {
        Box::pin(async move {
            let form = match Form::<ExchangeForm>::from_request(req, &()).await {
                Ok(Form(form)) => form,
                Err(rejection) => {
                    // RFC 6749 §5.2 says 400; keep axum's 413 and 415,
                    // which say more.
                    let status = match rejection.status() {
                        s
                        @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => s,
                        _ => StatusCode::BAD_REQUEST,
                    };
                    return Err(invalid_request(format!(
                        "the request body is not a valid token-exchange form ({}); \
                         send `application/x-www-form-urlencoded` fields as in RFC 8693",
                        rejection.body_text()
                    ))
                    .with_status(status));
                }
            };
            let (audience, scope) = self.check_request(&form)?;
            let subject_token = form.subject_token.as_deref().unwrap_or_default();
            let subject = self.issuers.verify(subject_token).await.map_err(|e| {
                tracing::info!(error = %e, request_id = %cx.request_id, "subject token refused");
                identity_refusal(
                    &e,
                    "subject_token",
                    self.dev_issuer.as_ref().map(DevIssuer::issuer),
                )
            })?;
            Ok((
                subject.principal.clone(),
                Exchange {
                    form,
                    audience,
                    scope,
                    subject,
                },
            ))
        })
    }

    fn classify<'a>(
        &'a self,
        cx: &'a RequestCx,
        principal: &'a Principal,
        ex: Exchange,
    ) -> BoxFuture<'a, Result<Classified<MintPlan>, Refusal>> {
        Box::pin(async move {
            let Exchange {
                form,
                audience,
                scope,
                subject,
            } = ex;
            let mut principal = principal.clone();
            let mut actor_expires_at = None;
            if let Some(actor_token) = form.actor_token.as_deref().filter(|s| !s.is_empty()) {
                check_token_type(form.actor_token_type.as_deref(), "actor_token_type")?;
                let actor = self.issuers.verify(actor_token).await.map_err(|e| {
                    identity_refusal(
                        &e,
                        "actor_token",
                        self.dev_issuer.as_ref().map(DevIssuer::issuer),
                    )
                })?;
                actor_expires_at = Some(actor.expires_at);
                principal.actor = Some(Actor {
                    kind: actor.principal.kind,
                    sub: actor.principal.id.clone(),
                    iss: Some(actor.principal.issuer.clone()),
                });
            }
            // Trust rules: a CI workload mints only what a `[[trust]]` rule
            // for its issuer, claims and audience allows, on top of what
            // Cedar allows.
            let mut scope = scope;
            let mut trust_max = None;
            if subject.principal.kind == PrincipalKind::Workload {
                let grant = trust::match_trust(
                    &self.trust,
                    &subject.issuer_name,
                    &subject.claims,
                    &audience,
                    &scope,
                )
                .map_err(|refusal| {
                    Refusal::new(
                        Stage::Authorize,
                        Code::TrustRefused(refusal.oauth_error_code()),
                        refusal.to_string(),
                    )
                })?;
                tracing::debug!(rule = grant.rule, request_id = %cx.request_id, "trust rule matched");
                scope = grant.scope;
                trust_max = grant.max_lifetime;
            }
            let intent = Intent::new(
                Action::TokenMint,
                ResourceRef::new(ResourceKind::Audience, audience.as_str()),
            )
            .with("scope", scope.join(" "))
            .with("subject_kind", principal.kind.as_str())
            .with("request_id", cx.request_id.as_str());
            // No token outlives the identity it came from, whatever its
            // kind: the subject token's expiry, and the actor token's when
            // delegated.
            let not_after =
                actor_expires_at.map_or(subject.expires_at, |a| a.min(subject.expires_at));
            let req = MintRequest {
                principal,
                audience,
                scope,
                // min(requested, trust rule max); the issuer applies the
                // global max and `not_after`.
                lifetime: match (form.lifetime.map(Duration::from_secs), trust_max) {
                    (requested, None) => requested,
                    (requested, Some(max)) => {
                        Some(requested.unwrap_or(self.tokens.default_lifetime).min(max))
                    }
                },
                not_after,
            };
            Ok(Classified::new(vec![intent.into()], MintPlan { req }))
        })
    }

    fn deny<'a>(
        &'a self,
        _cx: &'a RequestCx,
        _plan: MintPlan,
        authorized: Authorized,
    ) -> BoxFuture<'a, Response> {
        Box::pin(async move {
            // RFC 8693 §2.2.2: a target the client may not have is
            // `invalid_target` (400).
            authorized
                .refusal()
                .with_status(StatusCode::BAD_REQUEST)
                .with_oauth("invalid_target")
                .render(Self::PROTOCOL)
        })
    }

    fn act<'a>(
        &'a self,
        cx: &'a RequestCx,
        _principal: Principal,
        plan: MintPlan,
        _authorized: Authorized,
    ) -> BoxFuture<'a, Result<Response, Refusal>> {
        Box::pin(async move {
            let req = plan.req;
            let minted = self.token_issuer.mint(&req).map_err(|e| {
                Refusal::new(
                    Stage::Act,
                    Code::MintRefused(e.oauth_error_code()),
                    e.to_string(),
                )
            })?;
            let outcome = records::minted(
                cx.request_id.clone(),
                &req.principal,
                &req.audience,
                &minted.claims.jti,
                minted.claims.exp,
                self.pipe.clock.unix_millis(),
            );
            // The token is withheld unless its minting is on record.
            self.pipe.record(outcome).await?;
            let mut body = json!({
                "access_token": minted.token,
                "issued_token_type": TT_ACCESS,
                "token_type": "Bearer",
                "expires_in": minted.expires_in,
            });
            if !req.scope.is_empty() {
                body["scope"] = json!(req.scope.join(" "));
            }
            Ok(no_store(body))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(iss: &str) -> IdentityError {
        IdentityError::UnknownIssuer { iss: iss.into() }
    }

    #[test]
    fn a_dev_token_from_elsewhere_is_refused_as_one_not_as_a_missing_issuer() {
        let here = Some("http://127.0.0.1:18080/dev-idp");
        let r = identity_refusal(
            &unknown("http://127.0.0.1:8080/dev-idp"),
            "subject_token",
            here,
        );
        assert_eq!(
            r.message,
            "subject_token: issuer `http://127.0.0.1:8080/dev-idp` is not this sandbox's identity \
             provider (`http://127.0.0.1:18080/dev-idp`): it is a dev token from another sandbox or \
             minted for another URL; mint one for this sandbox with \
             `latchkey dev token --url http://127.0.0.1:18080`"
        );
        // A gateway without the dev issuer says what the token is, too.
        let r = identity_refusal(
            &unknown("http://127.0.0.1:8080/dev-idp"),
            "subject_token",
            None,
        );
        assert!(r.message.contains("from a sandbox"), "{}", r.message);
        assert!(!r.message.contains("[[issuers]]"), "{}", r.message);
        // Any other unknown issuer keeps the advice to configure it.
        let r = identity_refusal(&unknown("https://idp.example"), "subject_token", here);
        assert!(
            r.message.contains("add it to `[[issuers]]`"),
            "{}",
            r.message
        );
    }
}
