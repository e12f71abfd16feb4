//! The HTTP face of the development identity provider's sign-in (DEV
//! ONLY): the sign-in page and its form, the token endpoint, revocation
//! and logout. The flows themselves (what is checked, what is kept) live in
//! `latchkey_identity::DevIssuer`; this module renders pages and answers.
//!
//! These routes are not on the pipeline: they authenticate nobody to
//! Latchkey; the ID tokens they issue are verified like any issuer's when
//! they are exchanged at `/oauth2/token`.

use std::sync::Arc;

use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use latchkey_core::echo;
use latchkey_identity::{
    AuthorizeError, AuthorizeParams, DevIssuer, DevOAuthError, SignInError, TokenParams,
};
use serde::Deserialize;
use serde_json::json;

use super::TokenService;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36em;margin:2em auto;padding:0 1em}\
.dev{font-size:4em;color:#fff;background:#c00;text-align:center;margin:0 0 .3em;padding:.1em}\
label{display:block;margin:.8em 0}input{display:block;width:100%;font-size:1.1em;padding:.3em}\
button{font-size:1.2em;padding:.4em 1.5em;margin-top:.5em}.error{color:#c00;font-weight:bold}\
code{word-break:break-all}";

/// A page of the dev provider: never cached, never framed, no scripts.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} - DEV ONLY - Latchkey</title><style>{STYLE}</style></head>\
         <body><h1 class=\"dev\">DEV ONLY</h1>{body}</body></html>\n",
        crate::html::escape(title)
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it a browser sends `Origin: null` on the
    // form's same-origin POST (Fetch, "serializing a request origin"), and
    // the cross-site check needs the real origin.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

fn error_page(status: StatusCode, message: &str) -> Response {
    page(
        status,
        "sign-in refused",
        &format!(
            "<h2>Sign-in refused</h2><p class=\"error\">{}</p>",
            crate::html::escape(message)
        ),
    )
}

fn not_enabled() -> Response {
    (
        StatusCode::NOT_FOUND,
        "the development identity provider is not enabled",
    )
        .into_response()
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut resp = StatusCode::SEE_OTHER.into_response();
            resp.headers_mut().insert(header::LOCATION, v);
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(_) => error_page(
            StatusCode::BAD_REQUEST,
            "the redirect URI cannot be sent as a header",
        ),
    }
}

/// What the form shows again after a wrong field.
#[derive(Default)]
struct Typed<'a> {
    user: &'a str,
    groups: &'a str,
    email: &'a str,
    error: Option<&'a str>,
}

fn sign_in_page(
    status: StatusCode,
    form_token: &str,
    client_id: &str,
    redirect_uri: &str,
    typed: &Typed<'_>,
) -> Response {
    let error = typed
        .error
        .map(|e| format!("<p class=\"error\">{}</p>", crate::html::escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<p>This is the built-in identity provider of a <code>latchkey dev</code> sandbox. \
         It signs in <strong>anyone as anyone</strong>: type any user and groups. \
         Never use it for anything real.</p>\
         <p>Signing in to <code>{client}</code>; the result goes to <code>{redirect}</code>.</p>\
         {error}\
         <form method=\"post\" action=\"authorize\">\
         <input type=\"hidden\" name=\"form\" value=\"{token}\">\
         <label>User <input name=\"user\" required autofocus autocomplete=\"off\" value=\"{user}\"></label>\
         <label>Groups (comma-separated) <input name=\"groups\" autocomplete=\"off\" value=\"{groups}\"></label>\
         <label>E-mail (optional) <input name=\"email\" autocomplete=\"off\" value=\"{email}\"></label>\
         <button type=\"submit\">Sign in</button></form>",
        client = crate::html::escape(client_id),
        redirect = crate::html::escape(redirect_uri),
        token = crate::html::escape(form_token),
        user = crate::html::escape(typed.user),
        groups = crate::html::escape(typed.groups),
        email = crate::html::escape(typed.email),
    );
    page(status, "sign in", &body)
}

/// `GET /dev-idp/authorize`: checks the request, then shows the sign-in form.
pub(crate) async fn authorize_page(
    State(ts): State<Arc<TokenService>>,
    query: Result<Query<AuthorizeParams>, QueryRejection>,
) -> Response {
    let Some(dev) = ts.dev_issuer.as_ref() else {
        return not_enabled();
    };
    let Query(params) = match query {
        Ok(q) => q,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!(
                    "the authorization request is not a valid query ({}); send each parameter once",
                    e.body_text()
                ),
            );
        }
    };
    match dev.authorize(&params, ts.pipe.clock.unix()) {
        Ok(form) => sign_in_page(
            StatusCode::OK,
            &form.form_token,
            &form.client_id,
            &form.redirect_uri,
            &Typed::default(),
        ),
        Err(e @ AuthorizeError::Redirect { .. }) => match e.redirect_url() {
            Some(url) => redirect(&url),
            None => error_page(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        Err(e @ AuthorizeError::NoRedirect(_)) => {
            error_page(StatusCode::BAD_REQUEST, &e.to_string())
        }
    }
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub(crate) struct SignInFields {
    form: Option<String>,
    user: Option<String>,
    groups: Option<String>,
    email: Option<String>,
}

/// A form post from another site is refused: browsers send `Origin` (and
/// `Sec-Fetch-Site`) on form posts, and a page elsewhere must not sign a
/// visitor in (login CSRF). Requests without them (curl, tests) pass; they
/// still need a form token, which only fetching the page gives.
fn cross_site(headers: &HeaderMap, dev: &DevIssuer) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let ok = matches!(site.to_str(), Ok("same-origin" | "none"));
        if !ok {
            return Some("the sign-in form was posted from another site".to_owned());
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = format!("{origin}/");
        if !dev.is_own_origin(&own) {
            return Some(format!(
                "the sign-in form was posted from `{}`, not from this sandbox",
                echo(origin)
            ));
        }
    }
    None
}

/// `POST /dev-idp/authorize`: the submitted form; sends the browser back to
/// the client with a code.
pub(crate) async fn authorize_submit(
    State(ts): State<Arc<TokenService>>,
    headers: HeaderMap,
    form: Result<Form<SignInFields>, FormRejection>,
) -> Response {
    let Some(dev) = ts.dev_issuer.as_ref() else {
        return not_enabled();
    };
    if let Some(why) = cross_site(&headers, dev) {
        return error_page(StatusCode::FORBIDDEN, &why);
    }
    let Ok(Form(f)) = form else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "the sign-in form is not valid; go back to the application and sign in again",
        );
    };
    let token = f.form.as_deref().unwrap_or("");
    let (user, groups, email) = (
        f.user.as_deref().unwrap_or(""),
        f.groups.as_deref().unwrap_or(""),
        f.email.as_deref().unwrap_or(""),
    );
    let now = ts.pipe.clock.unix();
    match dev.sign_in(token, user, groups, email, now) {
        Ok(url) => redirect(&url),
        Err(SignInError::Field(msg)) => match dev.pending_form(token, now) {
            Some(form) => sign_in_page(
                StatusCode::BAD_REQUEST,
                token,
                &form.client_id,
                &form.redirect_uri,
                &Typed {
                    user,
                    groups,
                    email,
                    error: Some(&msg),
                },
            ),
            None => error_page(StatusCode::BAD_REQUEST, &SignInError::StaleForm.to_string()),
        },
        Err(e) => error_page(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

fn oauth_error(e: &DevOAuthError) -> Response {
    let status = if e.code == "invalid_client" {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    let mut resp = (
        status,
        axum::Json(json!({"error": e.code, "error_description": e.description})),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The client id of HTTP Basic client authentication (RFC 6749 §2.3.1),
/// which some clients use even without a secret.
fn basic_client_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = value.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, _secret) = text.split_once(':')?;
    url::form_urlencoded::parse(format!("x={id}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
}

/// `POST /dev-idp/token`.
pub(crate) async fn token(
    State(ts): State<Arc<TokenService>>,
    headers: HeaderMap,
    form: Result<Form<TokenParams>, FormRejection>,
) -> Response {
    let Some(dev) = ts.dev_issuer.as_ref() else {
        return not_enabled();
    };
    let Ok(Form(mut p)) = form else {
        return oauth_error(&DevOAuthError {
            code: "invalid_request",
            description: "the body is not a valid token request form; send each field once as \
                          `application/x-www-form-urlencoded`"
                .into(),
        });
    };
    if p.client_id.is_none() {
        p.client_id = basic_client_id(&headers);
    }
    match dev.token(&p, ts.pipe.clock.unix()) {
        Ok(body) => super::no_store(body),
        Err(e) => {
            tracing::info!(error = %e.code, "dev identity provider refused a token request");
            oauth_error(&e)
        }
    }
}

/// The revocation form (RFC 7009 §2.1).
#[derive(Debug, Deserialize)]
pub(crate) struct RevokeForm {
    token: Option<String>,
    #[allow(dead_code)]
    token_type_hint: Option<String>,
    client_id: Option<String>,
}

/// `POST /dev-idp/revoke`: forgets a refresh token.
pub(crate) async fn revoke(
    State(ts): State<Arc<TokenService>>,
    headers: HeaderMap,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Response {
    let Some(dev) = ts.dev_issuer.as_ref() else {
        return not_enabled();
    };
    let Ok(Form(f)) = form else {
        return oauth_error(&DevOAuthError {
            code: "invalid_request",
            description: "send `token` as an `application/x-www-form-urlencoded` form".into(),
        });
    };
    let Some(token) = f.token.filter(|t| !t.is_empty()) else {
        return oauth_error(&DevOAuthError {
            code: "invalid_request",
            description: "`token` is required".into(),
        });
    };
    let client_id = f.client_id.or_else(|| basic_client_id(&headers));
    dev.revoke(&token, client_id.as_deref().unwrap_or(""));
    StatusCode::OK.into_response()
}

/// The RP-initiated logout query (OpenID Connect RP-Initiated Logout 1.0).
#[derive(Debug, Deserialize)]
pub(crate) struct LogoutQuery {
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    #[allow(dead_code)]
    id_token_hint: Option<String>,
    #[allow(dead_code)]
    client_id: Option<String>,
}

/// `GET /dev-idp/logout`: the dev provider keeps no session, so there is
/// nothing to end here; it sends the browser back to
/// `post_logout_redirect_uri` when that is on the gateway's own origin, and
/// refuses any other target (an open redirect otherwise).
pub(crate) async fn logout(
    State(ts): State<Arc<TokenService>>,
    query: Result<Query<LogoutQuery>, QueryRejection>,
) -> Response {
    let Some(dev) = ts.dev_issuer.as_ref() else {
        return not_enabled();
    };
    let Ok(Query(q)) = query else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "the logout request is not a valid query; send each parameter once",
        );
    };
    match q
        .post_logout_redirect_uri
        .as_deref()
        .filter(|u| !u.is_empty())
    {
        Some(target) if dev.is_own_origin(target) => {
            let mut url = match url::Url::parse(target) {
                Ok(u) => u,
                Err(_) => return error_page(StatusCode::BAD_REQUEST, "bad redirect"),
            };
            if let Some(s) = q.state.as_deref().filter(|s| !s.is_empty()) {
                url.query_pairs_mut().append_pair("state", s);
            }
            redirect(url.as_str())
        }
        Some(target) => error_page(
            StatusCode::BAD_REQUEST,
            &format!(
                "`post_logout_redirect_uri` `{}` is not on this sandbox's origin; the development \
                 identity provider only returns to the gateway itself",
                echo(target)
            ),
        ),
        None => page(
            StatusCode::OK,
            "signed out",
            "<h2>Signed out</h2><p>The development identity provider keeps no session; \
             you may close this tab.</p>",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_ends_text_or_an_attribute() {
        assert_eq!(
            crate::html::escape(r#"<a href="x" onclick='y'>&"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;"
        );
    }

    #[test]
    fn basic_client_ids_are_form_decoded() {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode("latchkey%2Dcli:");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).unwrap_or(HeaderValue::from_static("")),
        );
        assert_eq!(basic_client_id(&h).as_deref(), Some("latchkey-cli"));
    }
}
