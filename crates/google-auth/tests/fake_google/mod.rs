//! `FakeGoogleTokenEndpoint`: a hand-written FAKE of Google's OAuth 2.0
//! token endpoint and of the GCE metadata server's token path.
//!
//! Google's real endpoints cannot be reached from this machine, so this
//! stand-in plays them on a loopback port. It is strict where it matters:
//! it checks the assertion's RS256 signature with the public half of the
//! test's own RSA key (with aws-lc-rs directly, not with the library the
//! code under test signs with), and its `iss`, `aud`, `scope`, `iat` and
//! `exp`, and refuses as Google does (HTTP 400, `invalid_grant`).
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_core::{Clock as _, FakeClock};
use serde_json::{Value, json};

/// The metadata server's token path, as the real one serves it.
pub(crate) const METADATA_TOKEN_PATH: &str =
    "/computeMetadata/v1/instance/service-accounts/default/token";

/// A freshly generated RSA key and its PKCS#8 PEM, as a key file holds it.
pub(crate) struct TestKey {
    pub(crate) pair: KeyPair,
    pub(crate) pem: String,
    pub(crate) public_der: Vec<u8>,
}

impl TestKey {
    pub(crate) fn generate() -> Self {
        let key = KeyPair::generate(KeySize::Rsa2048).expect("generate an RSA-2048 key");
        let der = key.as_der().expect("PKCS#8 encoding of the test key");
        let body = STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        Self {
            pem: format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                lines.join("\n")
            ),
            public_der: key.public_key().as_ref().to_vec(),
            pair: key,
        }
    }
}

/// What the fake does with the next requests.
#[derive(Clone)]
pub(crate) enum Behaviour {
    /// Verify, then issue `fake-access-token-N` after `delay`.
    Issue { expires_in: i64, delay: Duration },
    /// Never answer.
    Hang,
}

/// What a valid request must carry.
pub(crate) struct Expect {
    pub(crate) public_der: Vec<u8>,
    pub(crate) kid: String,
    pub(crate) client_email: String,
    pub(crate) scope: String,
}

struct FakeState {
    expect: Expect,
    clock: Arc<FakeClock>,
    behaviour: Mutex<Behaviour>,
    requests: AtomicUsize,
    issued: AtomicUsize,
    token_url: String,
}

/// The FAKE Google token endpoint (`POST /token`) and metadata server
/// (`GET` [`METADATA_TOKEN_PATH`]). Stops when dropped.
pub(crate) struct FakeGoogleTokenEndpoint {
    pub(crate) base_url: String,
    state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeGoogleTokenEndpoint {
    /// Starts the fake; it judges `iat`/`exp` by `clock`.
    pub(crate) async fn start(expect: Expect, clock: Arc<FakeClock>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake token endpoint");
        let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
        let state = Arc::new(FakeState {
            expect,
            clock,
            behaviour: Mutex::new(Behaviour::Issue {
                expires_in: 3600,
                delay: Duration::ZERO,
            }),
            requests: AtomicUsize::new(0),
            issued: AtomicUsize::new(0),
            token_url: format!("{base_url}/token"),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route(METADATA_TOKEN_PATH, get(metadata))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url,
            state,
            task,
        }
    }

    /// The `token_uri` to put in the key file.
    pub(crate) fn token_url(&self) -> String {
        self.state.token_url.clone()
    }

    /// Requests received so far, valid or not.
    pub(crate) fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn set_behaviour(&self, b: Behaviour) {
        *self.state.behaviour.lock().expect("behaviour lock") = b;
    }
}

impl Drop for FakeGoogleTokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn refuse(description: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": "invalid_grant", "error_description": description })),
    )
        .into_response()
}

async fn issue(state: &FakeState) -> Response {
    let behaviour = state.behaviour.lock().expect("behaviour lock").clone();
    match behaviour {
        Behaviour::Hang => std::future::pending().await,
        Behaviour::Issue { expires_in, delay } => {
            tokio::time::sleep(delay).await;
            let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
            Json(json!({
                "access_token": format!("fake-access-token-{n}"),
                "expires_in": expires_in,
                "token_type": "Bearer",
            }))
            .into_response()
        }
    }
}

async fn token(
    State(state): State<Arc<FakeState>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "unsupported_grant_type", "error_description": "Invalid grant_type" })),
        )
            .into_response();
    }
    let assertion = form
        .get("assertion")
        .map(String::as_str)
        .unwrap_or_default();
    if let Err(why) = verify_assertion(&state, assertion) {
        return refuse(why);
    }
    issue(&state).await
}

/// The checks Google makes of a JWT bearer assertion, one reason each.
fn verify_assertion(state: &FakeState, jwt: &str) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, p, s] = parts[..] else {
        return Err("Invalid JWT: not three segments".into());
    };
    let decode = |seg: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(seg)
            .map_err(|_| "Invalid JWT: bad base64url")?;
        serde_json::from_slice(&bytes).map_err(|_| "Invalid JWT: not JSON".to_owned())
    };
    let header = decode(h)?;
    if header["alg"] != "RS256" || header["kid"] != state.expect.kid.as_str() {
        return Err(format!("Invalid JWT header: {header}"));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| "Invalid JWT Signature.")?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &state.expect.public_der)
        .verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| "Invalid JWT Signature.")?;
    let claims = decode(p)?;
    let now = state.clock.unix() as i64;
    let iat = claims["iat"].as_i64().unwrap_or(i64::MIN);
    let exp = claims["exp"].as_i64().unwrap_or(i64::MIN);
    if claims["iss"] != state.expect.client_email.as_str() {
        return Err(format!("Invalid issuer: {}", claims["iss"]));
    }
    if claims["aud"] != state.token_url.as_str() {
        return Err(format!("Invalid audience: {}", claims["aud"]));
    }
    if claims["scope"] != state.expect.scope.as_str() {
        return Err(format!("Invalid scope: {}", claims["scope"]));
    }
    if (iat - now).abs() > 60 || exp != iat + 3600 {
        return Err(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."
                .into(),
        );
    }
    Ok(())
}

async fn metadata(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.",
        )
            .into_response();
    }
    let want = state.expect.scope.replace(' ', ",");
    if query.get("scopes") != Some(&want) {
        return (
            StatusCode::BAD_REQUEST,
            format!("unexpected scopes {query:?}"),
        )
            .into_response();
    }
    issue(&state).await
}
