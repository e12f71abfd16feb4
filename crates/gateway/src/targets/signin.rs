//! Browser sign-in: `/login`, `/callback`, `/logout` (and `/logout/done`,
//! where a provider's logout returns), and `/oauth2/login-providers`, which
//! tells `latchkey login` whom to sign in with.
//!
//! The authorization code flow with PKCE (S256): `/login` sends the browser
//! to the provider with a fresh `state`, `nonce` and code challenge, kept in
//! a short-lived cookie encrypted with the master key (so nothing is stored
//! before a sign-in completes, and a flow cannot be started in one browser
//! and finished in another). `/callback` checks the state, exchanges the
//! code with the verifier, verifies the ID token as any external token and
//! then that it was issued to our client with our nonce, refuses frozen
//! subjects, and starts a new session (never reusing a cookie it was sent).
//! Every sign-in, refusal and logout is audited. Where the browser goes
//! next is checked by [`ReturnOrigins`].
//!
//! These routes do not decide access with Cedar: signing in proves who
//! someone is; what they may then do is decided per request by the app
//! routes, with the same policies as Git and documents.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use latchkey_core::SharedClock;
use latchkey_identity::oauth::{self, AuthorizationRequest, Pkce};
use latchkey_tokens::MasterKey;
use serde::{Deserialize, Serialize};

use crate::pipeline::{AuditAction, Code, Pipeline, Refusal, RequestCx, Stage};
use crate::sessions::return_to::ReturnOrigins;
use crate::sessions::{
    SessionTokens, Sessions, cookie_header, cookie_value, open_cookie, seal_cookie,
};

/// How long a started sign-in may take.
pub(crate) const FLOW_TTL: Duration = Duration::from_secs(600);
const FLOW_PURPOSE: &str = "latchkey-signin-flow";
const LOGOUT_PURPOSE: &str = "latchkey-logout-state";

/// The sign-in routes' state.
pub(crate) struct SignIn {
    pub(crate) pipe: Arc<Pipeline>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) master: MasterKey,
    pub(crate) clock: SharedClock,
    /// The gateway's public URL, without a trailing `/`.
    pub(crate) public_url: String,
    /// Where the browser may be sent afterwards.
    pub(crate) return_origins: ReturnOrigins,
    /// Cookies of the apps behind Latchkey that hold the app's own session
    /// (name, path): removed at every sign-in and sign-out, because such a
    /// cookie outranks the identity header Latchkey sends (Gogs).
    pub(crate) app_cookies: Vec<(String, String)>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// What the flow cookie holds between `/login` and `/callback`.
#[derive(Serialize, Deserialize)]
struct Flow {
    /// `state`.
    s: String,
    /// `nonce`.
    n: String,
    /// The PKCE verifier.
    v: String,
    /// Where to go afterwards (checked when the flow started).
    rd: String,
    /// The provider's name.
    p: String,
    /// When the flow started (seconds).
    t: u64,
}

impl SignIn {
    fn flow_cookie_name(&self) -> &'static str {
        if self.sessions.secure() {
            "__Host-latchkey-signin"
        } else {
            "latchkey-signin"
        }
    }

    fn redirect_uri(&self) -> String {
        format!("{}/callback", self.public_url)
    }

    /// Records a refused sign-in (before authentication: at the per-client
    /// rate) and renders it as a page.
    async fn refuse(&self, cx: &RequestCx, status: StatusCode, message: String) -> Response {
        let refusal = Refusal::new(Stage::Authenticate, code_for(status), message.clone());
        let refusal = self
            .pipe
            .refused(cx, None, AuditAction::SigninRefused, refusal)
            .await;
        let message = if refusal.code == Code::AuditUnavailable {
            refusal.message.clone()
        } else {
            message
        };
        page(
            status,
            "Sign-in failed",
            &message,
            Some(("/login", "Start again")),
        )
    }
}

fn code_for(status: StatusCode) -> Code {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => Code::IssuerUnavailable,
        StatusCode::FORBIDDEN => Code::Denied,
        StatusCode::NOT_FOUND => Code::NotConfigured,
        _ => Code::InvalidRequest,
    }
}

/// The query's parameters; a name given twice is refused (two readers of
/// the same URL could pick different ones).
fn query(req: &Request) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(format!(
                "the parameter `{}` is given twice",
                latchkey_core::echo(&k)
            ));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `GET /login?rd=…[&provider=NAME][&prompt=login|select_account]`.
pub(crate) async fn login(State(si): State<Arc<SignIn>>, req: Request) -> Response {
    let cx = RequestCx::of(&req);
    let q = match query(&req) {
        Ok(q) => q,
        Err(m) => return si.refuse(&cx, StatusCode::BAD_REQUEST, m).await,
    };
    let rd = match si.return_origins.check(param(&q, "rd").unwrap_or("/")) {
        Ok(rd) => rd.to_owned(),
        Err(e) => return si.refuse(&cx, StatusCode::BAD_REQUEST, e.to_string()).await,
    };
    let prompt = match param(&q, "prompt") {
        None => None,
        Some(p @ ("login" | "select_account")) => Some(p.to_owned()),
        Some(_) => {
            return si
                .refuse(
                    &cx,
                    StatusCode::BAD_REQUEST,
                    "`prompt` may be `login` or `select_account`".into(),
                )
                .await;
        }
    };
    let providers = &si.sessions.providers;
    let Some(provider) = providers.get(param(&q, "provider")).cloned() else {
        let message = match param(&q, "provider") {
            Some(name) => format!(
                "no identity provider named `{}` is configured for sign-in",
                latchkey_core::echo(name)
            ),
            None => "no identity provider is configured for sign-in: add `login = true` and a `client_id` to an `[[issuers]]` table".into(),
        };
        return si.refuse(&cx, StatusCode::NOT_FOUND, message).await;
    };
    // Already signed in, and not asked to sign in again: go straight on.
    if prompt.is_none()
        && let Ok(Some(_)) = si.sessions.authenticate(req.headers()).await
    {
        return redirect(&rd, Vec::new());
    }
    let meta = match providers.metadata(&provider).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(provider = %provider.name, error = %e, "sign-in provider unavailable");
            return si
                .refuse(
                    &cx,
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the identity provider `{}` cannot be reached right now, so nobody can sign in with it; try again shortly",
                        provider.name
                    ),
                )
                .await;
        }
    };
    let (Ok(state), Ok(nonce), Ok(pkce)) = (
        oauth::random_token(),
        oauth::random_token(),
        Pkce::generate(),
    ) else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in failed",
            "no randomness available",
            None,
        );
    };
    let redirect_uri = si.redirect_uri();
    let url = match oauth::authorization_url(
        &meta,
        &AuthorizationRequest {
            client_id: &provider.client.client_id,
            redirect_uri: &redirect_uri,
            scope: &provider.scope,
            state: &state,
            nonce: Some(&nonce),
            code_challenge: &pkce.challenge,
            prompt: prompt.as_deref(),
        },
    ) {
        Ok(u) => u,
        Err(e) => {
            return si
                .refuse(&cx, StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                .await;
        }
    };
    let flow = Flow {
        s: state,
        n: nonce,
        v: pkce.verifier,
        rd,
        p: provider.name.clone(),
        t: si.clock.unix(),
    };
    let Some(sealed) = seal_cookie(&si.master, FLOW_PURPOSE, &flow) else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in failed",
            "the sign-in could not be started",
            None,
        );
    };
    redirect(
        &url,
        vec![cookie_header(
            si.flow_cookie_name(),
            &sealed,
            FLOW_TTL.as_secs(),
            si.sessions.secure(),
        )],
    )
}

/// `GET /callback?code=…&state=…` (or `?error=…`), where the provider
/// sends the browser back.
pub(crate) async fn callback(State(si): State<Arc<SignIn>>, req: Request) -> Response {
    let cx = RequestCx::of(&req);
    let q = match query(&req) {
        Ok(q) => q,
        Err(m) => return si.refuse(&cx, StatusCode::BAD_REQUEST, m).await,
    };
    let flow: Option<Flow> = match cookie_value(req.headers(), si.flow_cookie_name()) {
        crate::sessions::CookieLookup::One(v) => open_cookie(&si.master, FLOW_PURPOSE, v),
        _ => None,
    };
    let now = si.clock.unix();
    let Some(flow) = flow.filter(|f| now.saturating_sub(f.t) < FLOW_TTL.as_secs()) else {
        return si
            .refuse(
                &cx,
                StatusCode::BAD_REQUEST,
                "this sign-in has no matching start: it took longer than 10 minutes, this browser blocks cookies, or it was started in another tab".into(),
            )
            .await;
    };
    if let Some(error) = param(&q, "error") {
        let description = param(&q, "error_description")
            .map(|d| format!(": {}", latchkey_core::bounded(d, 200)))
            .unwrap_or_default();
        return si
            .refuse(
                &cx,
                StatusCode::FORBIDDEN,
                format!(
                    "the identity provider did not sign you in (`{}`{description})",
                    latchkey_core::echo(error)
                ),
            )
            .await;
    }
    let state_ok = param(&q, "state").is_some_and(|s| {
        crate::sessions::providers::constant_time_eq(s.as_bytes(), flow.s.as_bytes())
    });
    if !state_ok {
        return si
            .refuse(
                &cx,
                StatusCode::BAD_REQUEST,
                "the sign-in's `state` does not match the one this browser started with".into(),
            )
            .await;
    }
    let Some(code) = param(&q, "code") else {
        return si
            .refuse(
                &cx,
                StatusCode::BAD_REQUEST,
                "the identity provider sent no `code`".into(),
            )
            .await;
    };
    let providers = &si.sessions.providers;
    let Some(provider) = providers.get(Some(&flow.p)).cloned() else {
        return si
            .refuse(
                &cx,
                StatusCode::BAD_REQUEST,
                "the provider this sign-in started with is no longer configured".into(),
            )
            .await;
    };
    let unavailable = |e: String| {
        tracing::warn!(provider = %provider.name, error = %e, "sign-in code exchange failed");
        format!(
            "the identity provider `{}` could not complete the sign-in; try again",
            provider.name
        )
    };
    let meta = match providers.metadata(&provider).await {
        Ok(m) => m,
        Err(e) => {
            return si
                .refuse(
                    &cx,
                    StatusCode::SERVICE_UNAVAILABLE,
                    unavailable(e.to_string()),
                )
                .await;
        }
    };
    let answer = match oauth::exchange_code(
        providers.http(),
        &meta,
        &provider.client,
        code,
        &si.redirect_uri(),
        &flow.v,
    )
    .await
    {
        Ok(a) => a,
        Err(oauth::OAuthError::Refused { code, description }) => {
            tracing::warn!(provider = %provider.name, %code, ?description, "code exchange refused");
            return si
                .refuse(
                    &cx,
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the identity provider refused the sign-in code (`{code}`); start again"
                    ),
                )
                .await;
        }
        Err(e) => {
            return si
                .refuse(
                    &cx,
                    StatusCode::SERVICE_UNAVAILABLE,
                    unavailable(e.to_string()),
                )
                .await;
        }
    };
    let Some(id_token) = answer.id_token.clone() else {
        return si
            .refuse(
                &cx,
                StatusCode::BAD_REQUEST,
                "the identity provider returned no ID token; is `openid` among the scopes?".into(),
            )
            .await;
    };
    let verified = match providers
        .verify_id_token(&provider, &id_token, Some(&flow.n))
        .await
    {
        Ok(v) => v,
        Err(e) => {
            return si
                .refuse(
                    &cx,
                    StatusCode::FORBIDDEN,
                    format!("the ID token was refused: {e}"),
                )
                .await;
        }
    };
    if let Some(why) = si.sessions.frozen(&verified.principal) {
        let refusal = Refusal::new(
            Stage::Authorize,
            Code::Denied,
            format!("sign-in refused: {why} is frozen"),
        );
        let refusal = si
            .pipe
            .refused(
                &cx,
                Some(&verified.principal),
                AuditAction::SigninRefused,
                refusal,
            )
            .await;
        return page(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            &refusal.message,
            None,
        );
    }
    // A session cookie sent along is never reused: it ends, and a new
    // session begins (no fixation).
    if let Err(refusal) = si.sessions.logout(req.headers()).await {
        return page(
            refusal.http_status(),
            "Sign-in failed",
            &refusal.message,
            None,
        );
    }
    let tokens = SessionTokens {
        id_token,
        refresh_token: answer.refresh_token,
    };
    match si
        .sessions
        .create(&cx.request_id, &provider, &verified, tokens)
        .await
    {
        Ok((_, set_cookie)) => {
            let mut cookies = vec![
                set_cookie,
                cookie_header(si.flow_cookie_name(), "", 0, si.sessions.secure()),
            ];
            cookies.extend(si.clear_app_cookies());
            redirect(&flow.rd, cookies)
        }
        Err(refusal) => page(
            refusal.http_status(),
            "Sign-in failed",
            &refusal.message,
            None,
        ),
    }
}

impl SignIn {
    fn clear_app_cookies(&self) -> Vec<HeaderValue> {
        self.app_cookies
            .iter()
            .filter_map(|(name, path)| {
                HeaderValue::from_str(&format!(
                    "{name}=; Path={path}; Max-Age=0; HttpOnly{}",
                    if self.sessions.secure() {
                        "; Secure"
                    } else {
                        ""
                    }
                ))
                .ok()
            })
            .collect()
    }
}

/// `GET|POST /logout?rd=…`: ends the session, removes its cookie and the
/// apps' own session cookies, and signs out at the provider too when it
/// offers RP-initiated logout.
pub(crate) async fn logout(State(si): State<Arc<SignIn>>, req: Request) -> Response {
    let cx = RequestCx::of(&req);
    let q = match query(&req) {
        Ok(q) => q,
        Err(m) => return si.refuse(&cx, StatusCode::BAD_REQUEST, m).await,
    };
    let rd = match si.return_origins.check(param(&q, "rd").unwrap_or("/")) {
        Ok(rd) => rd.to_owned(),
        Err(e) => return si.refuse(&cx, StatusCode::BAD_REQUEST, e.to_string()).await,
    };
    let ended = match si.sessions.logout(req.headers()).await {
        Ok(e) => e,
        Err(refusal) => {
            return page(
                refusal.http_status(),
                "Sign-out failed",
                &refusal.message,
                None,
            );
        }
    };
    let mut cookies = vec![si.sessions.clear_cookie()];
    cookies.extend(si.clear_app_cookies());
    let Some((who, tokens)) = ended else {
        return redirect(&rd, cookies);
    };
    // Sign out at the provider as well, so "sign in as someone else" asks.
    let provider = si
        .sessions
        .providers
        .get(Some(&who.principal.issuer))
        .cloned();
    if let Some(provider) = provider
        && !tokens.id_token.is_empty()
        && let Ok(meta) = si.sessions.providers.metadata(&provider).await
        && let Some(state) =
            seal_cookie(&si.master, LOGOUT_PURPOSE, &(rd.as_str(), si.clock.unix()))
        && let Some(url) = oauth::end_session_url(
            &meta,
            &tokens.id_token,
            Some(&format!("{}/logout/done", si.public_url)),
            Some(&state),
        )
    {
        return redirect(&url, cookies);
    }
    redirect(&rd, cookies)
}

/// `GET /logout/done?state=…`: where a provider's logout sends the browser
/// back; goes on to the address the logout was asked with.
pub(crate) async fn logout_done(State(si): State<Arc<SignIn>>, req: Request) -> Response {
    let rd = query(&req)
        .ok()
        .and_then(|q| param(&q, "state").map(str::to_owned))
        .and_then(|s| open_cookie::<(String, u64)>(&si.master, LOGOUT_PURPOSE, &s))
        .filter(|(_, t)| si.clock.unix().saturating_sub(*t) < FLOW_TTL.as_secs())
        .and_then(|(rd, _)| si.return_origins.check(&rd).ok().map(str::to_owned))
        .unwrap_or_else(|| "/".to_owned());
    redirect(&rd, Vec::new())
}

/// `GET /oauth2/login-providers`: the providers `latchkey login` may use
/// (those with a `cli_client_id`), with the public client to use.
pub(crate) async fn login_providers(State(si): State<Arc<SignIn>>) -> Response {
    let providers: Vec<serde_json::Value> = si
        .sessions
        .providers
        .all()
        .iter()
        .filter_map(|p| {
            Some(serde_json::json!({
                "name": p.name,
                "issuer": p.issuer,
                "client_id": p.cli_client_id.as_ref()?,
                "scopes": p.scopes,
            }))
        })
        .collect();
    axum::Json(serde_json::json!({ "providers": providers })).into_response()
}

/// A `302 Found` to `location`, never cached, with `cookies` set.
fn redirect(location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        headers.append(header::SET_COOKIE, c);
    }
    (StatusCode::FOUND, headers).into_response()
}

/// A small HTML page (everything escaped), never cached.
fn page(status: StatusCode, title: &str, message: &str, link: Option<(&str, &str)>) -> Response {
    let link = link
        .map(|(href, text)| {
            format!(
                "<p><a href=\"{}\">{}</a></p>",
                crate::html::escape(href),
                crate::html::escape(text)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t} · Latchkey</title></head>\
         <body><h1>{t}</h1><p>{m}</p>{link}</body></html>",
        t = crate::html::escape(title),
        m = crate::html::escape(message),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
