//! The sandbox's example web app: a page that shows the identity Latchkey
//! sent it (the identity headers and the signed assertion's claims), on a
//! loopback port only the gateway proxies to.
//!
//! It trusts nothing it is sent: it shows what arrived, so a person can see
//! that the headers came from Latchkey (the assertion verifies against the
//! gateway's JWKS; the page says so only when it does) and that copies a
//! caller tried to send were stripped. DEV ONLY.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;

/// The headers the page shows, in order: the sandbox app's own (`X-User`,
/// `X-Email`, `X-Groups`) and every preset's identity headers.
const SHOWN: &[&str] = &[
    "x-user",
    "x-email",
    "x-groups",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-webauth-user",
    "x-webauth-email",
    "x-webauth-fullname",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// The header that carries Latchkey's signed assertion.
pub(crate) const ASSERTION_HEADER: &str = "x-latchkey-assertion";

#[derive(Clone)]
struct AppState {
    jwks_url: String,
    http: reqwest::Client,
}

/// Starts the page on `127.0.0.1:0`; returns its address. `gateway_url`
/// is where the assertion's keys are fetched from.
pub(crate) async fn spawn(gateway_url: &str) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the example app's port")?;
    let addr = listener.local_addr()?;
    let state = AppState {
        jwks_url: format!("{gateway_url}/.well-known/jwks.json"),
        http: reqwest::Client::new(),
    };
    let app = Router::new().fallback(page).with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the example app stopped");
        }
    });
    Ok(addr)
}

async fn page(State(state): State<AppState>, req: Request) -> Response {
    let headers = req.headers();
    let mut rows = String::new();
    for name in SHOWN {
        let values: Vec<&str> = headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let shown = if values.is_empty() {
            "<em>not sent</em>".to_owned()
        } else {
            escape(&values.join(" | "))
        };
        rows.push_str(&format!("<tr><th>{name}</th><td>{shown}</td></tr>"));
    }
    let assertion = headers
        .get(ASSERTION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let verdict = match &assertion {
        None => "<p><strong>No signed assertion arrived.</strong></p>".to_owned(),
        Some(jwt) => {
            let claims = jwt
                .split('.')
                .nth(1)
                .and_then(|c| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok())
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
                .unwrap_or_default();
            let verified = match verify(&state, jwt).await {
                Ok(()) => "verified against the gateway's JWKS".to_owned(),
                Err(e) => format!("NOT verified: {e}"),
            };
            format!(
                "<h2>Signed assertion ({})</h2><pre>{}</pre>",
                escape(&verified),
                escape(&claims)
            )
        }
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>whoami · Latchkey example app</title></head>\
         <body><h1>Hello from the example app</h1>\
         <p>{method} {path}</p>\
         <table>{rows}</table>{verdict}\
         <p><a href=\"/logout\">Sign out</a></p></body></html>",
        method = escape(req.method().as_str()),
        path = escape(&req.uri().to_string()),
    );
    Html(body).into_response()
}

/// Checks the assertion's Ed25519 signature with the gateway's published
/// keys (the `aud` check is the gateway's: this page only shows).
async fn verify(state: &AppState, jwt: &str) -> Result<()> {
    let header = jsonwebtoken::decode_header(jwt).context("not a JWT")?;
    let kid = header.kid.context("no `kid`")?;
    let jwks: jsonwebtoken::jwk::JwkSet = state
        .http
        .get(&state.jwks_url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let jwk = jwks.find(&kid).context("unknown `kid`")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk)?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &validation)?;
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
