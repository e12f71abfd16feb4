//! `[[apps]]`: web apps behind Latchkey (Gogs, Gitea, Backstage, any app
//! that trusts an identity header).
//!
//! - authenticate: a Latchkey token for the app's audience (Bearer or the
//!   Basic password), or a browser session; a browser with neither is sent
//!   to `/login` (by [`dispatch`], before the pipeline).
//! - classify: `http.request` on `App::"name"` with `method` and `path`
//!   (canonical, [`classify::canonical_path`]); on a Gogs or Gitea page
//!   that names a repository also `git.read` (safe methods) or `git.push`
//!   on `Repository::"<git_upstream>/<owner>/<repo>"`, so the web UI is
//!   decided like a clone or a push; on a cgit page every method is
//!   `git.read` of the repository ([`classify::cgit_repository`]). A session's unsafe request must come
//!   from the app's or the gateway's own origin (CSRF).
//! - act: the request streams to the app with Latchkey's identity headers
//!   and assertion and nothing the caller said about identity
//!   ([`headers`]); the response streams back, upgrades are tunnelled.
//!
//! What it does not do: sign people in (`/login`, sessions) or know what
//! a web form changes inside a repository (which branch a commit lands on).

pub(crate) mod classify;
pub(crate) mod deny;
pub(crate) mod headers;
mod owner;
pub(crate) mod proxy;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use latchkey_core::{
    Action, Intent, Principal, ResourceKind, ResourceRef, UnixTime, is_safe_method,
};
use latchkey_tokens::{MintRequest, TokenIssuer};

use crate::config::{AppConfig, AppPreset, Config, IdentityField, UserClaim};
use crate::pipeline::{
    Ask, Authorized, Classified, Code, Durability, Pipeline, Protocol, Refusal, RequestCx, Stage,
    Target, TargetName,
};

pub(crate) use crate::sessions::Sessions;

use headers::{ASSERTION_HEADER, LocationRewrite, StripSet};

/// How long an identity assertion lives: one request's worth.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

/// What every app shares: the pipeline, the assertion issuer, sessions,
/// what to strip, and the gateway's public origin.
pub(crate) struct Shared {
    pub(crate) pipe: Arc<Pipeline>,
    pub(crate) issuer: TokenIssuer,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) strip: StripSet,
    /// `scheme://host[:port]` of `server.public_url`.
    pub(crate) public_origin: String,
    /// `http` or `https`: what the caller used to reach the gateway.
    pub(crate) public_scheme: String,
}

/// One app on the pipeline.
pub(crate) struct AppTarget {
    shared: Arc<Shared>,
    config: AppConfig,
    audience: String,
    clients: proxy::Clients,
    /// `scheme://host[:port]` of the upstream, lower-case.
    upstream_origin: String,
    /// The upstream's base path, without a trailing `/`.
    upstream_base: String,
}

impl std::fmt::Debug for AppTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppTarget")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

/// Every app, by host and by prefix.
#[derive(Default)]
pub(crate) struct Apps {
    by_host: Vec<(String, Arc<AppTarget>)>,
    by_prefix: Vec<(String, Arc<AppTarget>)>,
}

impl std::fmt::Debug for Apps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apps").finish_non_exhaustive()
    }
}

impl Apps {
    /// The apps of `config` (validated already). An error names the app
    /// whose CA file cannot be used.
    pub(crate) fn new(
        config: &Config,
        pipe: Arc<Pipeline>,
        issuer: TokenIssuer,
        sessions: Arc<Sessions>,
    ) -> Result<Self, crate::config::ConfigError> {
        let generic: Vec<&str> = config
            .apps
            .iter()
            .flat_map(|a| a.headers.keys().map(String::as_str))
            .collect();
        let own_cookie = sessions.cookie_name().to_owned();
        let session_cookies = [own_cookie.as_str(), "latchkey", "__Host-latchkey"];
        let public = config.server.public_url();
        let parsed = url::Url::parse(&public).ok();
        let shared = Arc::new(Shared {
            pipe,
            issuer,
            sessions,
            strip: StripSet::new(generic, &session_cookies),
            public_origin: parsed
                .as_ref()
                .map_or_else(|| public.clone(), |u| u.origin().ascii_serialization()),
            public_scheme: parsed
                .as_ref()
                .map_or_else(|| "http".to_owned(), |u| u.scheme().to_owned()),
        });
        let mut apps = Self::default();
        for app in &config.apps {
            let key = format!("apps.{}", app.name);
            let tls = proxy::tls_config(app.ca_file.as_deref()).map_err(|message| {
                crate::config::ConfigError::Invalid {
                    key: format!("{key}.ca_file"),
                    message,
                }
            })?;
            let url = url::Url::parse(&app.upstream).map_err(|e| {
                crate::config::ConfigError::Invalid {
                    key: format!("{key}.upstream"),
                    message: e.to_string(),
                }
            })?;
            let target = Arc::new(AppTarget {
                shared: shared.clone(),
                audience: app.audience(),
                clients: proxy::Clients::new(tls, config.server.upstream_timeout),
                upstream_origin: url.origin().ascii_serialization().to_ascii_lowercase(),
                upstream_base: url.path().trim_end_matches('/').to_owned(),
                config: app.clone(),
            });
            match (&app.host, &app.path_prefix) {
                (Some(h), _) => apps.by_host.push((h.clone(), target)),
                (None, Some(p)) => apps.by_prefix.push((p.clone(), target)),
                (None, None) => {}
            }
        }
        Ok(apps)
    }

    /// The app `req` is for: by its host (except the gateway's sign-in
    /// routes, which every app host serves), else by path prefix.
    fn route(&self, req: &Request) -> Option<&Arc<AppTarget>> {
        if !self.by_host.is_empty()
            && let Some(host) = request_host(req)
            && let Some((_, app)) = self.by_host.iter().find(|(h, _)| *h == host)
        {
            let path = req.uri().path();
            if matches!(path, "/login" | "/callback" | "/logout") {
                return None;
            }
            return Some(app);
        }
        let path = req.uri().path();
        self.by_prefix
            .iter()
            .find(|(p, _)| {
                path.strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map(|(_, a)| a)
    }
}

/// The request's host, lower-case, without port or a trailing dot:
/// `:authority` (HTTP/2, in the URI) or `Host`.
fn request_host(req: &Request) -> Option<String> {
    let raw = match req.uri().authority() {
        Some(a) => a.host().to_owned(),
        None => {
            let h = req.headers().get(header::HOST)?.to_str().ok()?;
            let h: http::uri::Authority = h.parse().ok()?;
            h.host().to_owned()
        }
    };
    let raw = raw.strip_suffix('.').unwrap_or(&raw);
    Some(raw.to_ascii_lowercase())
}

/// Marks a response the app target rendered itself (a proxied answer, a
/// denial page), which [`dispatch`] passes on untouched.
#[derive(Debug, Clone, Copy)]
struct Rendered;

/// Whether the caller is a browser navigating: `Accept` names
/// `text/html`.
fn is_browser(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

fn has_cookie(headers: &HeaderMap, name: &str) -> bool {
    crate::sessions::cookie_pairs(headers).any(|(n, _)| n == name)
}

/// The router's first stop: a request for an app is served here (its
/// host, or its prefix); anything else goes on to the gateway's routes.
pub(crate) async fn dispatch(
    axum::extract::State(apps): axum::extract::State<Arc<Apps>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(app) = apps.route(&req).cloned() else {
        return next.run(req).await;
    };
    crate::metrics::Mark::app(req.extensions());
    let browser = is_browser(req.headers());
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    let return_to = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    let no_credential = !req.headers().contains_key(header::AUTHORIZATION)
        && !has_cookie(req.headers(), app.shared.sessions.cookie_name());
    if no_credential && browser && safe {
        return deny::login_redirect(&return_to);
    }
    let request_id = RequestCx::of(&req).request_id;
    let resp = Pipeline::serve(app.as_ref(), req).await;
    if resp.extensions().get::<Rendered>().is_some() || !browser {
        return resp;
    }
    // A browser whose session cookie names no live session signs in again.
    if resp.status() == StatusCode::UNAUTHORIZED && safe {
        return deny::login_redirect(&return_to);
    }
    // A refusal rendered by the pipeline (JSON): a browser gets a page.
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "the request was refused".to_owned());
    let page = deny::Denial {
        status,
        title: if status == StatusCode::UNAUTHORIZED {
            "Sign-in required"
        } else {
            "Request refused"
        },
        reason: &message,
        policies: &[],
        user: None,
        request_id: &request_id,
        return_to: &return_to,
    };
    page.html()
}

/// Whether a request comes from the gateway's own origin or the app's host
/// (CSRF, for a browser session's unsafe method): `Sec-Fetch-Site` when
/// the browser sends it (`same-origin`, or `none` for a typed URL), else
/// `Origin`. Neither: not proven, refused.
fn same_origin(
    headers: &HeaderMap,
    public_origin: &str,
    app_host: Option<&str>,
    public_scheme: &str,
) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("").to_ascii_lowercase();
        return matches!(site.as_str(), "same-origin" | "none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin = origin.to_ascii_lowercase();
    if origin == public_origin.to_ascii_lowercase() {
        return true;
    }
    app_host.is_some_and(|h| {
        url::Url::parse(&origin).is_ok_and(|u| {
            u.host_str() == Some(h)
                && u.scheme() == public_scheme
                && u.path() == "/"
                && origin.trim_end_matches('/') == u.origin().ascii_serialization()
        })
    })
}

/// What authenticate found, for classify.
pub(crate) struct AppInput {
    req: Request,
    /// A session cookie (not a token) authenticated the request.
    by_session: bool,
    /// The `Authorization` header carried the Latchkey token.
    token_in_authorization: bool,
    /// The session's id hash, when a session authenticated the request.
    session_id: Option<String>,
}

/// What classify hands to act (or deny).
pub(crate) struct AppPlan {
    req: Request,
    token_in_authorization: bool,
    browser: bool,
    user: String,
    return_to: String,
    /// The path and query the app sees.
    app_path_and_query: String,
    /// The session's id hash, when a session authenticated the request.
    session_id: Option<String>,
}

impl AppTarget {
    fn user_name(&self, p: &Principal) -> Result<String, Refusal> {
        let name = match self.config.user_claim {
            UserClaim::PreferredUsername => p
                .attributes
                .get("preferred_username")
                .cloned()
                .unwrap_or_else(|| p.id.clone()),
            UserClaim::Id => p.id.clone(),
            UserClaim::Email => p.email.clone().ok_or_else(|| {
                Refusal::new(
                    Stage::Classify,
                    Code::Identity("no_email"),
                    format!(
                        "app `{}` names its users by e-mail, and your identity carries none; sign in with an identity provider that sends `email`",
                        self.config.name
                    ),
                )
                .with_status(StatusCode::FORBIDDEN)
            })?,
        };
        if name.is_empty() || HeaderValue::from_str(&name).is_err() {
            return Err(Refusal::new(
                Stage::Classify,
                Code::Identity("user_name"),
                "your user name cannot be sent in an HTTP header (empty or control characters); ask your administrator to choose another `user_claim`",
            ));
        }
        Ok(name)
    }

    /// The path (and query) the app sees: the prefix stripped, unless
    /// `strip_prefix = false`.
    fn app_path_and_query(&self, req: &Request) -> String {
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        match (&self.config.path_prefix, self.config.strip_prefix) {
            (Some(p), true) => {
                let rest = pq.strip_prefix(p.as_str()).unwrap_or(pq);
                if rest.is_empty() || rest.starts_with('?') {
                    format!("/{rest}")
                } else {
                    rest.to_owned()
                }
            }
            _ => pq.to_owned(),
        }
    }

    /// Whether a session's unsafe request comes from this site.
    fn same_origin(&self, headers: &HeaderMap) -> bool {
        same_origin(
            headers,
            &self.shared.public_origin,
            self.config.host.as_deref(),
            &self.shared.public_scheme,
        )
    }

    fn identity_headers(&self, p: &Principal, user: &str) -> Vec<(&'static str, String)> {
        let email = p.email.clone().unwrap_or_default();
        let full = p.attributes.get("name").cloned().unwrap_or_default();
        let mut out: Vec<(&'static str, String)> = match self.config.preset {
            AppPreset::Gogs => vec![("x-webauth-user", user.to_owned())],
            AppPreset::Gitea => vec![
                ("x-webauth-user", user.to_owned()),
                ("x-webauth-email", email),
                ("x-webauth-fullname", full),
            ],
            AppPreset::Backstage => vec![
                ("x-forwarded-user", user.to_owned()),
                ("x-forwarded-email", email),
                ("x-forwarded-preferred-username", user.to_owned()),
            ],
            // cgit has no users: the assertion alone tells it who asked.
            AppPreset::Cgit | AppPreset::Generic => Vec::new(),
        };
        out.retain(|(_, v)| !v.is_empty());
        out
    }

    fn generic_headers(&self, p: &Principal, user: &str) -> Vec<(String, String)> {
        self.config
            .headers
            .iter()
            .map(|(name, field)| {
                let v = match field {
                    IdentityField::User => user.to_owned(),
                    IdentityField::Id => p.id.clone(),
                    IdentityField::Email => p.email.clone().unwrap_or_default(),
                    IdentityField::Groups => p.groups.join(","),
                    IdentityField::Kind => p.kind.as_str().to_owned(),
                    IdentityField::Issuer => p.issuer.clone(),
                    IdentityField::Name => p.attributes.get("name").cloned().unwrap_or_default(),
                };
                (name.clone(), v)
            })
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    fn assertion(&self, p: &Principal) -> Result<String, Refusal> {
        let now = self.shared.pipe.clock.unix();
        let not_after: UnixTime = now.saturating_add(ASSERTION_LIFETIME.as_secs());
        let mut principal = p.clone();
        principal.scopes = None;
        self.shared
            .issuer
            .mint(&MintRequest {
                principal,
                audience: self.audience.clone(),
                scope: Vec::new(),
                lifetime: Some(ASSERTION_LIFETIME),
                not_after,
            })
            .map(|m| m.token)
            .map_err(|e| {
                tracing::warn!(error = %e, app = %self.config.name, "cannot mint the app assertion");
                Refusal::new(
                    Stage::Act,
                    Code::MintRefused("assertion"),
                    format!("cannot vouch for you to app `{}`: {e}", self.config.name),
                )
                .with_status(StatusCode::FORBIDDEN)
            })
    }

    fn upstream_error(&self, e: &proxy::ProxyError) -> Refusal {
        tracing::warn!(error = %e, app = %self.config.name, "app upstream failed");
        if !matches!(e, proxy::ProxyError::Build(_)) {
            self.shared
                .pipe
                .metrics
                .upstream_error(crate::metrics::UpstreamKind::App);
        }
        let code = match e {
            proxy::ProxyError::Timeout(..) => Code::UpstreamTimeout,
            _ => Code::UpstreamUnavailable,
        };
        Refusal::new(
            Stage::Act,
            code,
            format!(
                "app `{}` did not answer ({}); try again, or ask its administrator whether it is up",
                self.config.name,
                match e {
                    proxy::ProxyError::Timeout(_, d) =>
                        format!("no response within {}s", d.as_secs()),
                    proxy::ProxyError::Unreachable(..) => "it cannot be reached".to_owned(),
                    proxy::ProxyError::Build(_) => "the request could not be built".to_owned(),
                }
            ),
        )
    }

    async fn forward(
        &self,
        cx: &RequestCx,
        principal: &Principal,
        plan: AppPlan,
    ) -> Result<Response, Refusal> {
        let AppPlan {
            mut req,
            token_in_authorization,
            user,
            app_path_and_query,
            session_id,
            ..
        } = plan;
        let upgrade = req.headers().contains_key(header::UPGRADE)
            && req.method() == Method::GET
            && req.version() <= http::Version::HTTP_11;
        let caller_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let caller_host = req.headers().get(header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let mut out = headers::request_headers(
            req.headers(),
            &self.shared.strip,
            token_in_authorization,
            upgrade,
        );
        // The app's own session cookies count only in the Latchkey session
        // they were set in (see `owner`).
        let app_cookies = self.config.cookie_names();
        let owner_tag = session_id
            .as_deref()
            .filter(|_| !app_cookies.is_empty())
            .map(|sid| owner::tag(&self.config.name, sid));
        let stale = owner_tag
            .as_deref()
            .is_some_and(|t| owner::stale(req.headers(), &self.config.name, &app_cookies, t));
        let mut dropped = vec![owner::owner_cookie(&self.config.name)];
        if stale {
            dropped.extend(app_cookies.iter().cloned());
        }
        headers::drop_cookies(&mut out, &dropped);
        let build = |e: String| self.upstream_error(&proxy::ProxyError::Build(e));
        for (name, value) in self.identity_headers(principal, &user) {
            out.insert(
                name,
                HeaderValue::from_str(&value).map_err(|e| build(e.to_string()))?,
            );
        }
        for (name, value) in self.generic_headers(principal, &user) {
            let n = headers::header_name(&name).ok_or_else(|| build(name.clone()))?;
            out.insert(
                n,
                HeaderValue::from_str(&value).map_err(|e| build(e.to_string()))?,
            );
        }
        let assertion = self.assertion(principal)?;
        let mut v = HeaderValue::from_str(&assertion).map_err(|e| build(e.to_string()))?;
        v.set_sensitive(true);
        out.insert(ASSERTION_HEADER, v.clone());
        if self.config.preset == AppPreset::Backstage {
            // Backstage's oauth2Proxy provider reads `X-OAUTH2-PROXY-ID-TOKEN:
            // Bearer <jwt>` (decoded, not verified) for its sign-in resolvers.
            let mut b = HeaderValue::from_str(&format!("Bearer {assertion}"))
                .map_err(|e| build(e.to_string()))?;
            b.set_sensitive(true);
            out.insert("x-oauth2-proxy-id-token", b);
        }
        if let Some(ip) = cx.client.0
            && let Ok(v) = HeaderValue::from_str(&ip.to_string())
        {
            out.insert("x-forwarded-for", v);
        }
        out.insert(
            "x-forwarded-proto",
            HeaderValue::from_str(&self.shared.public_scheme).map_err(|e| build(e.to_string()))?,
        );
        if let Some(h) = &caller_host {
            out.insert("x-forwarded-host", h.clone());
        }
        if let (Some(p), true) = (&self.config.path_prefix, self.config.strip_prefix)
            && let Ok(v) = HeaderValue::from_str(p)
        {
            out.insert("x-forwarded-prefix", v);
        }
        out.insert(
            "x-request-id",
            HeaderValue::from_str(&cx.request_id).map_err(|e| build(e.to_string()))?,
        );
        let uri = format!(
            "{}{}{}",
            self.upstream_origin, self.upstream_base, app_path_and_query
        );
        let method = req.method().clone();
        let mut upstream_req = http::Request::builder()
            .method(method)
            .uri(&uri)
            .body(req.into_body())
            .map_err(|e| build(e.to_string()))?;
        *upstream_req.headers_mut() = out;
        let mut resp = self
            .clients
            .send(upstream_req, upgrade, &self.upstream_origin)
            .await
            .map_err(|e| self.upstream_error(&e))?;
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let public_origin = match (
            &self.config.host,
            caller_host.as_ref().and_then(|h| h.to_str().ok()),
        ) {
            (Some(_), Some(h)) => format!("{}://{h}", self.shared.public_scheme),
            _ => self.shared.public_origin.clone(),
        };
        let rewrite = LocationRewrite {
            upstream_origin: self.upstream_origin.clone(),
            upstream_base: self.upstream_base.clone(),
            public_origin,
            public_prefix: match (&self.config.path_prefix, self.config.strip_prefix) {
                (Some(p), true) => p.clone(),
                _ => String::new(),
            },
        };
        let mut out_headers =
            headers::response_headers(resp.headers(), &self.shared.strip, &rewrite, switching);
        if let Some(t) = &owner_tag {
            let path = self
                .config
                .cookies()
                .first()
                .map_or_else(|| "/".to_owned(), |c| c.path.clone());
            let secure = self.shared.public_scheme == "https";
            let sets = owner::sets_app_cookie(&out_headers, &app_cookies);
            if stale {
                // Cleared before the app's own Set-Cookie, which may set a
                // fresh one for the user signed in now.
                let mut fresh = HeaderMap::with_capacity(out_headers.len() + 2);
                for v in owner::clearing(&app_cookies, &path, secure) {
                    fresh.append(header::SET_COOKIE, v);
                }
                for (name, value) in &out_headers {
                    fresh.append(name.clone(), value.clone());
                }
                out_headers = fresh;
            }
            if (stale || sets)
                && let Some(v) = owner::companion(&self.config.name, t, &path, secure)
            {
                out_headers.append(header::SET_COOKIE, v);
            }
        }
        if switching {
            match caller_upgrade {
                Some(caller) => proxy::tunnel(caller, hyper::upgrade::on(&mut resp)),
                None => {
                    return Err(self.upstream_error(&proxy::ProxyError::Build(
                        "the app switched protocols unasked".into(),
                    )));
                }
            }
        }
        let (parts, body) = resp.into_parts();
        let mut response = Response::new(if switching {
            Body::empty()
        } else {
            Body::new(body)
        });
        *response.status_mut() = parts.status;
        *response.headers_mut() = out_headers;
        response.extensions_mut().insert(Rendered);
        Ok(response)
    }
}

impl Target for AppTarget {
    type Input = AppInput;
    type Plan = AppPlan;
    const PROTOCOL: Protocol = Protocol::Json;

    fn name(&self) -> TargetName {
        TargetName::App
    }

    fn pipeline(&self) -> &Pipeline {
        &self.shared.pipe
    }

    fn authenticate<'a>(
        &'a self,
        _cx: &'a RequestCx,
        req: Request,
    ) -> BoxFuture<'a, Result<(Principal, AppInput), Refusal>> {
        Box::pin(async move {
            // A browser signed in to Latchkey is its session, and then an
            // `Authorization` header is the app's own business (Backstage's
            // frontend sends its Backstage token there): it passes through.
            // Otherwise `Authorization` carries a Latchkey token (a session
            // cookie that names no live session does not stand in its way).
            let session = if has_cookie(req.headers(), self.shared.sessions.cookie_name()) {
                self.shared.sessions.authenticate(req.headers()).await
            } else {
                Ok(None)
            };
            match session {
                Ok(Some(signed_in)) => {
                    return Ok((
                        signed_in.principal,
                        AppInput {
                            req,
                            by_session: true,
                            token_in_authorization: false,
                            session_id: Some(signed_in.session_id),
                        },
                    ));
                }
                Err(refusal) if !req.headers().contains_key(header::AUTHORIZATION) => {
                    return Err(refusal);
                }
                _ => {}
            }
            if !req.headers().contains_key(header::AUTHORIZATION) {
                return Err(Refusal::new(
                    Stage::Authenticate,
                    Code::MissingCredential,
                    format!(
                        "authentication required: sign in at `/login`, or present a Latchkey token for audience `{}` as a Bearer token",
                        self.audience
                    ),
                ));
            }
            let hint = format!(
                "app `{}` takes tokens for audience `{}`",
                self.config.name, self.audience
            );
            // Bearer or the Basic password: either way the header carried
            // the token, and the app never sees it.
            let (_, verified) =
                self.shared
                    .pipe
                    .authenticate_token(req.headers(), &self.audience, Some(&hint))?;
            Ok((
                verified.principal,
                AppInput {
                    req,
                    by_session: false,
                    token_in_authorization: true,
                    session_id: None,
                },
            ))
        })
    }

    fn classify<'a>(
        &'a self,
        _cx: &'a RequestCx,
        principal: &'a Principal,
        input: AppInput,
    ) -> BoxFuture<'a, Result<Classified<AppPlan>, Refusal>> {
        Box::pin(async move {
            let AppInput {
                req,
                by_session,
                token_in_authorization,
                session_id,
            } = input;
            let method = req.method().as_str().to_owned();
            let safe = is_safe_method(&method);
            if by_session && !safe && !self.same_origin(req.headers()) {
                return Err(Refusal::new(
                    Stage::Classify,
                    Code::Denied,
                    format!(
                        "cross-site `{}` refused: a signed-in browser's change must come from this site (its `Sec-Fetch-Site` or `Origin` named another); reload the page and submit it again",
                        latchkey_core::echo(&method)
                    ),
                )
                .with_status(StatusCode::FORBIDDEN)
                .with_context("csrf", true));
            }
            let app_pq = self.app_path_and_query(&req);
            let raw_path = app_pq.split_once('?').map_or(app_pq.as_str(), |(p, _)| p);
            let bad = |e: classify::PathError| {
                Refusal::new(Stage::Classify, Code::Malformed, e.to_string())
                    .with_status(StatusCode::BAD_REQUEST)
            };
            let path = classify::canonical_path(raw_path).map_err(bad)?;
            let user = self.user_name(principal)?;
            let app = ResourceRef::new(ResourceKind::App, self.config.name.clone());
            let mut asks: Vec<Ask> = vec![
                Intent::new(Action::HttpRequest, app)
                    .with("method", method.clone())
                    .with("path", path.clone())
                    .into(),
            ];
            if self.config.preset.is_git_forge()
                && let Some(upstream) = &self.config.git_upstream
                && let Some(repo) = classify::repository(&path).map_err(bad)?
            {
                let id = format!("{upstream}/{}/{}", repo.owner, repo.name);
                let action = if safe {
                    Action::GitRead
                } else {
                    Action::GitPush
                };
                asks.push(
                    Intent::new(action, ResourceRef::new(ResourceKind::Repository, id))
                        .with("method", method.clone())
                        .with("path", path.clone())
                        .with("web", true)
                        .into(),
                );
            }
            // cgit only reads: every method on a repository page is
            // `git.read`, on the id a clone through the Git route gets.
            if self.config.preset == AppPreset::Cgit
                && let Some(upstream) = &self.config.git_upstream
            {
                let query = app_pq.split_once('?').map(|(_, q)| q);
                if let Some(repo) = classify::cgit_repository(&path, query).map_err(bad)? {
                    let id = format!("{upstream}/{}/{}", repo.owner, repo.name);
                    asks.push(
                        Intent::new(
                            Action::GitRead,
                            ResourceRef::new(ResourceKind::Repository, id),
                        )
                        .with("method", method.clone())
                        .with("path", path.clone())
                        .with("web", true)
                        .into(),
                    );
                }
            }
            let browser = is_browser(req.headers());
            let return_to = req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
            let mut classified = Classified::new(
                asks,
                AppPlan {
                    req,
                    token_in_authorization,
                    browser,
                    user,
                    return_to,
                    app_path_and_query: app_pq,
                    session_id,
                },
            );
            if safe {
                classified.durability = Durability::OverlapReads;
            }
            Ok(classified)
        })
    }

    fn deny<'a>(
        &'a self,
        cx: &'a RequestCx,
        plan: AppPlan,
        authorized: Authorized,
    ) -> BoxFuture<'a, Response> {
        Box::pin(async move {
            let (reason, policies) = authorized
                .denials()
                .next()
                .map(|(_, d)| (d.reason.clone(), d.policy_ids.clone()))
                .unwrap_or_else(|| ("denied by policy".to_owned(), Vec::new()));
            let page = deny::Denial {
                status: StatusCode::FORBIDDEN,
                title: "Access denied",
                reason: &reason,
                policies: &policies,
                user: Some(&plan.user),
                request_id: &cx.request_id,
                return_to: &plan.return_to,
            };
            let mut resp = if plan.browser {
                page.html()
            } else {
                page.json("denied")
            };
            resp.extensions_mut().insert(Rendered);
            resp
        })
    }

    fn act<'a>(
        &'a self,
        cx: &'a RequestCx,
        principal: Principal,
        plan: AppPlan,
        authorized: Authorized,
    ) -> BoxFuture<'a, Result<Response, Refusal>> {
        Box::pin(async move {
            let pipe = self.shared.pipe.clone();
            let Authorized {
                intents, pending, ..
            } = authorized;
            // An allowed read's records sync while the app answers; its
            // response waits for them (DESIGN 6 holds for writes: their
            // records are durable before this runs).
            let resp = pending
                .alongside(&pipe, self.forward(cx, &principal, plan))
                .await??;
            // The outcome: the app's status. A write's is durable before
            // the caller learns of it; a read's is buffered.
            if let Some(intent) = intents.first() {
                let event = latchkey_audit::AuditEvent::outcome(
                    cx.request_id.clone(),
                    Some(&principal),
                    intent,
                    latchkey_audit::Outcome::new(resp.status().as_str()),
                    pipe.clock.unix_millis(),
                )
                .with_caused_by(cx.request_id.clone());
                if intent.required_scope() == Some(latchkey_core::Scope::Read) {
                    pipe.record_buffered(vec![event]).await;
                } else {
                    pipe.record_all(vec![event]).await?;
                }
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn csrf_needs_this_site() {
        let ok = |p: &[(&'static str, &'static str)], host| {
            same_origin(&h(p), "https://gw.example.com", host, "https")
        };
        assert!(ok(&[("sec-fetch-site", "same-origin")], None));
        assert!(ok(&[("sec-fetch-site", "none")], None));
        assert!(!ok(&[("sec-fetch-site", "cross-site")], None));
        assert!(!ok(&[("sec-fetch-site", "same-site")], None));
        // Sec-Fetch-Site wins over a matching Origin.
        assert!(!ok(
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://gw.example.com")
            ],
            None
        ));
        assert!(ok(&[("origin", "https://gw.example.com")], None));
        assert!(ok(&[("origin", "HTTPS://GW.example.com")], None));
        assert!(!ok(
            &[("origin", "https://gw.example.com.evil.example")],
            None
        ));
        assert!(!ok(&[("origin", "http://gw.example.com")], None));
        assert!(!ok(&[("origin", "null")], None));
        assert!(!ok(&[], None));
        assert!(ok(
            &[("origin", "https://git.example.com")],
            Some("git.example.com")
        ));
        assert!(!ok(
            &[("origin", "http://git.example.com")],
            Some("git.example.com")
        ));
        assert!(!ok(&[("origin", "https://git.example.com")], None));
    }
}
