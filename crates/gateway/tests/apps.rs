//! Web apps behind Latchkey (`[[apps]]`), end to end through a running
//! gateway and the real OIDC provider harness.
//!
//! The app is `RecordingApp`, A FAKE standing in for Gogs, Gitea and
//! Backstage, which cannot be installed here: it answers every request
//! with the method, path and headers it received, so a test can see
//! exactly what an app would. The header names are the apps' own:
//! Gogs `[security] ENABLE_REVERSE_PROXY_AUTHENTICATION = true` reads
//! `REVERSE_PROXY_AUTHENTICATION_USER` (default `X-WEBAUTH-USER`); Gitea
//! `[service] ENABLE_REVERSE_PROXY_AUTHENTICATION` reads
//! `REVERSE_PROXY_AUTHENTICATION_USER`/`_EMAIL`/`_FULL_NAME` (defaults
//! `X-WEBAUTH-USER`, `X-WEBAUTH-EMAIL`, `X-WEBAUTH-FULLNAME`); Backstage's
//! `oauth2Proxy` provider reads `x-forwarded-user`, `x-forwarded-email`,
//! `x-forwarded-preferred-username` and `X-OAUTH2-PROXY-ID-TOKEN`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use common::{Opts, TestGateway, bearer, jwks, verify_with_jwks};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use latchkey_testkit::OidcProvider;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// A FAKE app (see the module docs): echoes what it received as JSON, and
/// a few paths that exercise redirects, cookies, streams and uploads.
#[derive(Clone)]
struct RecordingApp {
    /// Released by the SSE test once its first event arrived.
    sse_release: Arc<Notify>,
    /// The app's own origin, for its redirects.
    origin: String,
}

async fn recording_app(app: RecordingApp, req: Request) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let p = req.uri().path().to_owned();
    if p.ends_with("/redirect") {
        return (
            http::StatusCode::FOUND,
            [(
                http::header::LOCATION,
                format!("{}/user/login?x=1", app.origin),
            )],
        )
            .into_response();
    }
    if p.ends_with("/set-cookie") {
        let mut r = "cookies".into_response();
        for c in [
            "latchkey=evil; Path=/",
            "__Host-latchkey=evil",
            "i_like_gogs=app",
        ] {
            r.headers_mut()
                .append(http::header::SET_COOKIE, c.parse().unwrap());
        }
        return r;
    }
    if p.ends_with("/sse") {
        let release = app.sse_release.clone();
        let stream = futures_util::stream::unfold(0u8, move |state| {
            let release = release.clone();
            async move {
                match state {
                    0 => Some((Ok::<_, std::io::Error>("data: first\n\n".to_owned()), 1)),
                    1 => {
                        release.notified().await;
                        Some((Ok("data: last\n\n".to_owned()), 2))
                    }
                    _ => None,
                }
            }
        });
        return (
            [(http::header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(stream),
        )
            .into_response();
    }
    if p.ends_with("/ws") {
        return websocket_echo(req);
    }
    if p.ends_with("/upload") {
        let mut n = 0usize;
        let mut body = req.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            n += chunk.unwrap().len();
        }
        return axum::Json(json!({ "bytes": n })).into_response();
    }
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    axum::Json(json!({
        "method": req.method().as_str(),
        "path": path,
        "headers": headers,
    }))
    .into_response()
}

/// The FAKE app's WebSocket echo (tokio-tungstenite on the upgraded
/// connection): what a real app's live view would be.
fn websocket_echo(mut req: Request) -> Response {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return (http::StatusCode::BAD_REQUEST, "not a websocket").into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = on_upgrade.await.unwrap();
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                futures_util::SinkExt::send(&mut ws, msg).await.unwrap();
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    (
        http::StatusCode::SWITCHING_PROTOCOLS,
        [
            (http::header::UPGRADE, "websocket".to_owned()),
            (http::header::CONNECTION, "upgrade".to_owned()),
            (http::header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response()
}

struct Upstream {
    addr: SocketAddr,
    sse_release: Arc<Notify>,
    _task: tokio::task::JoinHandle<()>,
}

async fn start_app(tls: Option<&latchkey_testkit::tls::TestCerts>) -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let host = if tls.is_some() {
        "localhost"
    } else {
        "127.0.0.1"
    };
    let app = RecordingApp {
        sse_release: Arc::new(Notify::new()),
        origin: format!("{scheme}://{host}:{}", addr.port()),
    };
    let sse_release = app.sse_release.clone();
    let router = Router::new().fallback(move |req: Request| recording_app(app.clone(), req));
    let tls = tls.map(|c| {
        latchkey_gateway::tls_server_config(&latchkey_gateway::config::TlsConfig {
            cert_file: c.cert.clone(),
            key_file: c.key.clone(),
        })
        .unwrap()
    });
    let task = tokio::spawn(async move {
        latchkey_gateway::serve(listener, router, tls, std::future::pending())
            .await
            .unwrap();
    });
    Upstream {
        addr,
        sse_release,
        _task: task,
    }
}

const POLICIES: &str = r#"
@id("mint-apps")
permit (
  principal is Latchkey::User,
  action == Latchkey::Action::"token.mint",
  resource
)
when {
  resource == Latchkey::Audience::"app:gogs" ||
  resource == Latchkey::Audience::"app:gitea" ||
  resource == Latchkey::Audience::"app:portal" ||
  resource == Latchkey::Audience::"app:wiki" ||
  resource == Latchkey::Audience::"app:secure" ||
  resource == Latchkey::Audience::"app:down"
};

@id("dave-not-secret")
forbid (
  principal == Latchkey::User::"dave",
  action == Latchkey::Action::"git.read",
  resource == Latchkey::Repository::"local/acme/secret"
);
"#;

struct World {
    op: OidcProvider,
    tg: TestGateway,
    app: Upstream,
    _tls_app: Upstream,
    _certs_dir: tempfile::TempDir,
}

async fn world() -> World {
    let op = OidcProvider::start().await;
    let app = start_app(None).await;
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = latchkey_testkit::tls::TestCerts::create(certs_dir.path()).unwrap();
    let tls_app = start_app(Some(&certs)).await;
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_port = down.local_addr().unwrap().port();
    drop(down);
    let a = app.addr;
    let extra_toml = format!(
        r#"
[[apps]]
name = "gogs"
path_prefix = "/apps/gogs"
upstream = "http://{a}"
preset = "gogs"
git_upstream = "local"

[[apps]]
name = "gitea"
path_prefix = "/apps/gitea"
upstream = "http://{a}/base"
preset = "gitea"
git_upstream = "local"

[[apps]]
name = "portal"
path_prefix = "/apps/portal"
upstream = "http://{a}"
preset = "backstage"

[[apps]]
name = "wiki"
host = "wiki.localhost"
upstream = "http://{a}"
headers = {{ "X-User" = "user", "X-Groups" = "groups", "X-Email" = "email" }}

[[apps]]
name = "secure"
path_prefix = "/apps/secure"
upstream = "https://localhost:{tls_port}"
ca_file = "{ca}"

[[apps]]
name = "down"
path_prefix = "/apps/down"
upstream = "http://127.0.0.1:{down_port}"
"#,
        tls_port = tls_app.addr.port(),
        ca = certs.ca.display(),
    );
    let mut policies: Vec<(String, String)> = latchkey_policy::starter_policy_files()
        .into_iter()
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect();
    policies.push(("90-test.cedar".into(), POLICIES.into()));
    let tg = TestGateway::start(
        &op,
        Opts {
            extra_toml,
            policies: Some(policies),
            ..Opts::default()
        },
    )
    .await;
    World {
        op,
        tg,
        app,
        _tls_app: tls_app,
        _certs_dir: certs_dir,
    }
}

impl World {
    async fn token(&self, sub: &str, groups: &[&str], aud: &str) -> String {
        self.tg.token_for(&self.op, sub, groups, aud).await
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.tg
            .http
            .get(self.tg.url(path))
            .header("authorization", bearer(token))
            .send()
            .await
            .unwrap()
    }
}

/// What the fake app received: its request headers by lower-case name.
fn seen(body: &Value, name: &str) -> Vec<String> {
    body["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap().to_owned())
        .collect()
}

fn names(body: &Value) -> Vec<String> {
    body["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_preset_gets_its_identity_headers_and_a_verifiable_assertion() {
    let w = world().await;
    let keys = jwks(&w.tg).await;
    for (app, path, expect) in [
        (
            "gogs",
            "/apps/gogs/explore/repos?q=1",
            vec![("x-webauth-user", "alice")],
        ),
        (
            "gitea",
            "/apps/gitea/explore/repos?q=1",
            vec![("x-webauth-user", "alice")],
        ),
        (
            "portal",
            "/apps/portal/catalog",
            vec![
                ("x-forwarded-user", "alice"),
                ("x-forwarded-preferred-username", "alice"),
            ],
        ),
    ] {
        let token = w
            .token("alice", &["developers"], &format!("app:{app}"))
            .await;
        let resp = w.get(path, &token).await;
        assert_eq!(resp.status(), 200, "{app}");
        let body: Value = resp.json().await.unwrap();
        for (h, v) in expect {
            assert_eq!(seen(&body, h), [v], "{app} {h}: {body}");
        }
        // The prefix is stripped (Gitea's upstream has a base path).
        let want_path = match app {
            "gogs" => "/explore/repos?q=1",
            "gitea" => "/base/explore/repos?q=1",
            _ => "/catalog",
        };
        assert_eq!(body["path"], want_path);
        // The Latchkey token never reaches the app.
        assert!(seen(&body, "authorization").is_empty(), "{body}");
        let assertion = seen(&body, "x-latchkey-assertion");
        assert_eq!(assertion.len(), 1);
        let claims = verify_with_jwks(&assertion[0], &keys, &w.tg.base, &format!("app:{app}"));
        assert_eq!(claims["sub"], "alice");
        let life = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert!(life <= 60, "assertion lives {life}s");
        assert_eq!(seen(&body, "x-forwarded-proto"), ["http"]);
        assert_eq!(seen(&body, "x-forwarded-for"), ["127.0.0.1"]);
        if app == "portal" {
            let id = seen(&body, "x-oauth2-proxy-id-token");
            assert_eq!(id, [format!("Bearer {}", assertion[0])]);
        }
    }
}

#[tokio::test]
async fn a_generic_host_app_gets_its_configured_headers() {
    let w = world().await;
    let token = w.token("alice", &["developers"], "app:wiki").await;
    let resp =
        w.tg.http
            .get(w.tg.url("/some/page"))
            .header("host", "WIKI.localhost:1234")
            .header("authorization", bearer(&token))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(seen(&body, "x-user"), ["alice"]);
    assert_eq!(seen(&body, "x-groups"), ["developers"]);
    assert_eq!(body["path"], "/some/page");
    assert_eq!(seen(&body, "x-forwarded-host"), ["WIKI.localhost:1234"]);
    // The gateway's own routes stay where they were on its own host.
    let resp = w.tg.http.get(w.tg.url("/readyz")).send().await.unwrap();
    assert_ne!(resp.status(), 404);
}

#[tokio::test]
async fn policy_allows_and_denies_each_app() {
    let w = world().await;
    // carol is not a developer: the starter set gives her no app.
    for app in ["gogs", "gitea", "portal"] {
        let token = w.token("carol", &[], &format!("app:{app}")).await;
        let resp = w.get(&format!("/apps/{app}/"), &token).await;
        assert_eq!(resp.status(), 403, "{app}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "denied");
        assert!(body["policies"].as_array().unwrap().is_empty(), "{body}");
        assert!(body["request_id"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(
            body["reason"].as_str().unwrap().contains("http.request"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_repository_page_is_decided_like_a_clone() {
    let w = world().await;
    let token = w.token("dave", &["developers"], "app:gogs").await;
    // Every spelling of the repository dave may not read is refused.
    for p in [
        "/apps/gogs/acme/secret",
        "/apps/gogs/acme/secret/src/main/README.md",
        "/apps/gogs/ACME/Secret",
        "/apps/gogs/acme/secret.git",
        "/apps/gogs/acme/%73ecret",
        "/apps/gogs/api/v1/repos/acme/secret/contents/x",
    ] {
        let resp = w.get(p, &token).await;
        assert_eq!(resp.status(), 403, "{p}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["policies"], json!(["dave-not-secret"]), "{p}: {body}");
    }
    // Spellings Latchkey might read differently from Gogs are refused.
    for p in [
        "/apps/gogs/acme%2fsecret",
        "/apps/gogs//acme/secret",
        "/apps/gogs/acme/secret%00",
        "/apps/gogs/acme/secre%74%2Egit.git",
        "/apps/gogs/acme/secret.git/info/refs",
    ] {
        let resp = w.get(p, &token).await;
        assert_eq!(resp.status(), 400, "{p}");
    }
    // Another repository and an unrelated page are his.
    for p in [
        "/apps/gogs/acme/app",
        "/apps/gogs/explore/repos",
        "/apps/gogs/",
    ] {
        let resp = w.get(p, &token).await;
        assert_eq!(resp.status(), 200, "{p}");
    }
    // The decision records name the repository intent.
    let records = w.tg.audit_records();
    assert!(
        records.iter().any(|r| {
            let v = serde_json::to_value(r).unwrap();
            v.to_string().contains("local/acme/secret") && v.to_string().contains("git.read")
        }),
        "no git.read record for the repository"
    );
}

#[tokio::test]
async fn a_web_write_needs_git_push_on_the_repository() {
    let w = world().await;
    let token = w.token("alice", &["developers"], "app:gogs").await;
    let resp =
        w.tg.http
            .post(w.tg.url("/apps/gogs/acme/app/_edit/main/README.md"))
            .header("authorization", bearer(&token))
            .body("content=x")
            .send()
            .await
            .unwrap();
    // A Bearer POST needs no same-origin proof (no cookie rides along).
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["method"], "POST");
    let records = w.tg.audit_records();
    let push = records
        .iter()
        .map(|r| serde_json::to_value(r).unwrap().to_string())
        .find(|s| s.contains("git.push") && s.contains("local/acme/app"))
        .expect("a git.push record");
    assert!(push.contains("developers-web-write"), "{push}");
    // The app's answer is on record (durably, for a write).
    assert!(
        records
            .iter()
            .map(|r| serde_json::to_value(r).unwrap().to_string())
            .any(|s| s.contains("http.request") && s.contains(r#""status":"200""#)),
        "no outcome record of the web write: {:?}",
        records
            .iter()
            .map(|r| serde_json::to_value(r).unwrap().to_string())
            .filter(|s| s.contains("http.request"))
            .collect::<Vec<_>>()
    );
    // A read-scoped token may not write.
    let (status, b) =
        w.tg.token_form(&[
            ("grant_type", common::GRANT),
            (
                "subject_token",
                &w.op
                    .mint(
                        "RS256",
                        "alice",
                        None,
                        json!({"groups": ["developers"]}),
                        300,
                    )
                    .await,
            ),
            ("subject_token_type", common::TT_ID),
            ("audience", "app:gogs"),
            ("scope", "read"),
        ])
        .await;
    assert_eq!(status, 200, "{b}");
    let read = b["access_token"].as_str().unwrap();
    let resp =
        w.tg.http
            .post(w.tg.url("/apps/gogs/explore"))
            .header("authorization", bearer(read))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("needs scope `write`"),
        "{body}"
    );
    assert_eq!(w.get("/apps/gogs/explore", read).await.status(), 200);
}

#[tokio::test]
async fn smuggled_identity_never_reaches_the_app() {
    let w = world().await;
    let token = w.token("alice", &["developers"], "app:wiki").await;
    let mut req =
        w.tg.http
            .get(w.tg.url("/"))
            .header("host", "wiki.localhost")
            .header("authorization", bearer(&token));
    for name in [
        "X-WEBAUTH-USER",
        "X_WEBAUTH_USER",
        "x-webauth_user",
        "X-Webauth-Email",
        "X_WEBAUTH_FULLNAME",
        "X-Forwarded-User",
        "X_FORWARDED_USER",
        "X-Forwarded-Email",
        "X-Forwarded-Preferred-Username",
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "X_Forwarded_Proto",
        "Forwarded",
        "X-Latchkey-Assertion",
        "X_LATCHKEY_ASSERTION",
        "X-User",
        "X_USER",
        "x-groups",
        "X-OAUTH2-PROXY-ID-TOKEN",
        "Remote-User",
    ] {
        req = req.header(name, "root").header(name, "admin");
    }
    req = req.header("cookie", "a=1; latchkey=stolen; b=2");
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let all = names(&body).join(",");
    for h in [
        "x-webauth-user",
        "x_webauth_user",
        "x-webauth_user",
        "x-webauth-email",
        "x_webauth_fullname",
        "x_forwarded_user",
        "x-forwarded-user",
        "x-forwarded-email",
        "forwarded",
        "x_latchkey_assertion",
        "x_user",
        "x-oauth2-proxy-id-token",
        "remote-user",
    ] {
        assert!(seen(&body, h).is_empty(), "{h} reached the app: {all}");
    }
    // Latchkey's own values only.
    assert_eq!(seen(&body, "x-user"), ["alice"]);
    assert_eq!(seen(&body, "x-groups"), ["developers"]);
    assert_eq!(seen(&body, "x-latchkey-assertion").len(), 1);
    assert_eq!(seen(&body, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen(&body, "x-forwarded-host"), ["wiki.localhost"]);
    assert_eq!(seen(&body, "x-forwarded-proto"), ["http"]);
    assert_eq!(seen(&body, "cookie"), ["a=1; b=2"]);
}

#[tokio::test]
async fn tokens_for_other_audiences_are_refused() {
    let w = world().await;
    let git = w.token("alice", &["developers"], "git").await;
    let resp = w.get("/apps/gogs/", &git).await;
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("app:gogs"),
        "{body}"
    );
    let other = w.token("alice", &["developers"], "app:gitea").await;
    assert_eq!(w.get("/apps/gogs/", &other).await.status(), 401);
}

#[tokio::test]
async fn browsers_without_a_credential_are_sent_to_sign_in() {
    let w = world().await;
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .get(w.tg.url("/apps/gogs/acme/app?tab=a&b=c d"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        "/login?rd=%2Fapps%2Fgogs%2Facme%2Fapp%3Ftab%3Da%26b%3Dc%2520d"
    );
    // An API client gets a 401 with a Bearer challenge.
    let resp = no_redirects
        .get(w.tg.url("/apps/gogs/acme/app"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
}

#[tokio::test]
async fn a_browser_is_denied_with_a_page_an_api_client_with_json() {
    let w = world().await;
    let token = w.token("dave", &["developers"], "app:gogs").await;
    let resp =
        w.tg.http
            .get(w.tg.url("/apps/gogs/acme/secret?<b>=1"))
            .header("authorization", bearer(&token))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 403);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = resp.text().await.unwrap();
    assert!(page.contains("<code>dave-not-secret</code>"), "{page}");
    assert!(page.contains("<strong>dave</strong>"), "{page}");
    assert!(page.contains(&rid), "{page}");
    assert!(page.contains("Sign in as someone else"));
    assert!(
        page.contains("/logout?rd=%2Flogin%3Frd%3D%252Fapps%252Fgogs%252Facme%252Fsecret"),
        "{page}"
    );
    assert!(!page.contains("<b>"), "unescaped input: {page}");

    let resp = w.get("/apps/gogs/acme/secret", &token).await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "denied");
    assert_eq!(body["policies"], json!(["dave-not-secret"]));
    assert!(body["reason"].as_str().is_some());
    assert!(body["request_id"].as_str().is_some());
}

#[tokio::test]
async fn responses_cannot_set_latchkeys_cookie_and_redirects_are_public() {
    let w = world().await;
    let token = w.token("alice", &["developers"], "app:gogs").await;
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .get(w.tg.url("/apps/gogs/redirect"))
        .header("authorization", bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        format!("{}/apps/gogs/user/login?x=1", w.tg.base).as_str()
    );
    let resp = w.get("/apps/gogs/set-cookie", &token).await;
    let cookies: Vec<_> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(cookies, ["i_like_gogs=app"]);
}

#[tokio::test]
async fn streams_pass_through_unbuffered() {
    let w = world().await;
    let token = w.token("alice", &["developers"], "app:gogs").await;
    // A raw hyper client: frames are seen as they arrive.
    let client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = |method: &str, path: &str, body: Body| {
        http::Request::builder()
            .method(method)
            .uri(w.tg.url(path))
            .header("authorization", bearer(&token))
            .body(body)
            .unwrap()
    };
    // Server-sent events: the first event arrives while the app holds the
    // rest back.
    let resp = client
        .request(req("GET", "/apps/gogs/sse", Body::empty()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first event did not arrive before the app finished")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    w.app.sse_release.notify_one();
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(&rest[..], b"data: last\n\n");

    // A body far larger than `server.max_body_bytes` (64 KiB) streams
    // through, in chunks.
    let chunks = futures_util::stream::iter(
        (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; 16 * 1024]))),
    );
    let resp = client
        .request(req("POST", "/apps/gogs/upload", Body::from_stream(chunks)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["bytes"], 64 * 16 * 1024);
}

#[tokio::test]
async fn an_https_upstream_is_verified_with_its_ca() {
    let w = world().await;
    let token = w.token("alice", &["developers"], "app:secure").await;
    let resp = w.get("/apps/secure/x", &token).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["path"], "/x");
    assert_eq!(seen(&body, "x-latchkey-assertion").len(), 1);
}

#[tokio::test]
async fn an_app_that_is_down_is_a_clear_502() {
    let w = world().await;
    let token = w.token("alice", &["developers"], "app:down").await;
    let resp = w.get("/apps/down/", &token).await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("app `down` did not answer"), "{msg}");
    assert!(!msg.contains("127.0.0.1"), "internal detail leaked: {msg}");
}

/// The real `git` client, with no config of this machine and the token as
/// a bearer header.
async fn git(home: &std::path::Path, token: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("git")
        .arg("-c")
        .arg(format!("http.extraHeader=Authorization: Bearer {token}"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .await
        .unwrap()
}

/// An `https://` Git upstream, verified with its CA: the outer gateway's
/// upstream is a second gateway serving `git http-backend` over TLS with a
/// test CA; the real `git` client pushes and lists through both.
#[tokio::test(flavor = "multi_thread")]
async fn an_https_git_upstream_is_verified_with_its_ca() {
    let op = OidcProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let certs = latchkey_testkit::tls::TestCerts::create(dir.path()).unwrap();
    let inner = TestGateway::start(
        &op,
        Opts {
            tls: Some((certs.cert.clone(), certs.key.clone())),
            ..Opts::default()
        },
    )
    .await;
    let port = inner.base.rsplit_once(':').unwrap().1.to_owned();
    let https = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([
            reqwest::Certificate::from_pem(&std::fs::read(&certs.ca).unwrap()).unwrap(),
        ])
        .build()
        .unwrap();
    let id = op
        .mint(
            "RS256",
            "bot",
            None,
            json!({"groups": ["maintainers"]}),
            300,
        )
        .await;
    let resp = https
        .post(format!("https://localhost:{port}/oauth2/token"))
        .form(&[
            ("grant_type", common::GRANT),
            ("subject_token", id.as_str()),
            ("subject_token_type", common::TT_ID),
            ("audience", "git"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let inner_token = resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let upstream = |ca: &str| {
        format!(
            "[git.upstreams.secure]\nurl = \"https://localhost:{port}/git/local\"\n\
             username = \"latchkey\"\npassword = {{ value = \"{inner_token}\" }}\n{ca}\n"
        )
    };
    let outer = TestGateway::start(
        &op,
        Opts {
            extra_toml: upstream(&format!("ca_file = \"{}\"", certs.ca.display())),
            ..Opts::default()
        },
    )
    .await;
    let token = outer.token_for(&op, "alice", &["developers"], "git").await;
    let home = tempfile::tempdir().unwrap();
    let out = git(
        home.path(),
        &token,
        &["ls-remote", &outer.url("/git/secure/acme/app.git")],
    )
    .await;
    assert!(out.status.success(), "{out:?}");

    // Without the CA the system roots do not know the test CA: the
    // request fails as an upstream error, not as a success.
    let untrusting = TestGateway::start(
        &op,
        Opts {
            extra_toml: upstream(""),
            ..Opts::default()
        },
    )
    .await;
    let token = untrusting
        .token_for(&op, "alice", &["developers"], "git")
        .await;
    let out = git(
        home.path(),
        &token,
        &["ls-remote", &untrusting.url("/git/secure/acme/app.git")],
    )
    .await;
    assert!(!out.status.success(), "{out:?}");
}

/// A WebSocket upgrade is decided like any GET, then tunnelled: messages
/// echo through the gateway both ways.
#[tokio::test(flavor = "multi_thread")]
async fn websockets_pass_through_once_decided() {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let w = world().await;
    let token = w.token("alice", &["developers"], "app:gogs").await;
    let ws_url = format!("{}/apps/gogs/ws", w.tg.base.replacen("http", "ws", 1));
    let connect = |auth: Option<String>| {
        let mut req = ws_url.as_str().into_client_request().unwrap();
        if let Some(a) = auth {
            req.headers_mut()
                .insert("authorization", a.parse().unwrap());
        }
        let addr = w.tg.base.trim_start_matches("http://").to_owned();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_tungstenite::client_async(req, tcp).await
        }
    };
    let (mut ws, resp) = connect(Some(bearer(&token))).await.unwrap();
    assert_eq!(resp.status(), 101);
    for text in ["hello", "through latchkey"] {
        futures_util::SinkExt::send(&mut ws, Message::text(text))
            .await
            .unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
    // Without a credential the upgrade is refused before the app sees it.
    let refused = connect(None).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("an upgrade without a credential was not refused: {other:?}"),
    }
    // Nor with one policy refuses.
    let carol = w.token("carol", &[], "app:gogs").await;
    match connect(Some(bearer(&carol))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("a denied upgrade went through: {other:?}"),
    }
}
