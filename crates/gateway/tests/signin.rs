//! Browser sign-in against a real OpenID Connect provider (the npm
//! `oidc-provider`, with its interactive login), driven by real headless
//! Chromium: sign in → app → a page policy denies, naming the policy →
//! logout (RP-initiated, at the provider too) → the app wants a sign-in
//! again. Then what an attacker tries: open redirects, a planted session
//! cookie (fixation), a forged `state`, a cross-origin POST, an expired and
//! a revoked session, a provider that is down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use axum::extract::Request;
use axum::response::IntoResponse;
use common::{Opts, TestGateway, http};
use latchkey_testkit::browser::{Browser, Step, logout_steps, sign_in_steps};
use latchkey_testkit::{OidcOptions, OidcProvider};
use serde_json::json;

/// A small app behind the gateway: echoes the identity header it got, and
/// says which method reached it. A real HTTP server on loopback.
async fn start_app() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|req: Request| async move {
        let user = req
            .headers()
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nobody")
            .to_owned();
        let cookies = req
            .headers()
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        axum::response::Html(format!(
            "<title>app</title><p>hello {user}</p><p>method {}</p><p>path {}</p><p>cookies [{cookies}]</p>",
            req.method(),
            req.uri().path()
        ))
        .into_response()
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A FAKE standing in for Gogs (which cannot be installed here): like Gogs,
/// it keeps its own session in the cookie `i_like_gogs` once it has seen
/// `X-WEBAUTH-USER`, and from then on believes the cookie over the header.
async fn start_fake_gogs() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|req: Request| async move {
        let header_user = req
            .headers()
            .get("x-webauth-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let cookie_user = req
            .headers()
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|p| p.trim().strip_prefix("i_like_gogs=").map(str::to_owned));
        let user = cookie_user.clone().unwrap_or_else(|| header_user.clone());
        let mut resp = axum::response::Html(format!(
            "<title>gogs</title><p>gogs user {user}</p><p>from cookie {}</p>",
            cookie_user.is_some()
        ))
        .into_response();
        if cookie_user.is_none() {
            resp.headers_mut().insert(
                "set-cookie",
                format!("i_like_gogs={user}; Path=/; HttpOnly")
                    .parse()
                    .unwrap(),
            );
        }
        resp
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

const POLICIES: &str = r#"
@id("people-use-the-portal")
permit (
  principal in Latchkey::Group::"developers",
  action == Latchkey::Action::"http.request",
  resource == Latchkey::App::"portal"
);

@id("people-use-gogs")
permit (
  principal,
  action == Latchkey::Action::"http.request",
  resource == Latchkey::App::"gogs"
);

@id("people-use-the-app")
permit (
  principal in Latchkey::Group::"developers",
  action == Latchkey::Action::"http.request",
  resource == Latchkey::App::"wiki"
);

@id("wiki-admin-pages-are-for-admins")
forbid (
  principal,
  action == Latchkey::Action::"http.request",
  resource == Latchkey::App::"wiki"
)
when { context.path like "/admin*" }
unless { principal in Latchkey::Group::"admins" };

@id("admins-all")
permit (principal in Latchkey::Group::"admins", action, resource);
"#;

struct World {
    op: OidcProvider,
    tg: TestGateway,
}

/// The provider, a client registered for the gateway's callback, and the
/// gateway with one app (`/apps/wiki`) and sign-in with that provider.
async fn world(options: OidcOptions, extra_sessions: &str) -> World {
    world_with(options, extra_sessions, "").await
}

/// [`world`] with more `[[apps]]` (TOML).
async fn world_with(options: OidcOptions, extra_sessions: &str, more_apps: &str) -> World {
    let op = OidcProvider::start_with(options).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let client = op
        .register(json!({
            "application_type": "web",
            "redirect_uris": [format!("{base}/callback")],
            "post_logout_redirect_uris": [format!("{base}/logout/done")],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "client_name": "latchkey gateway",
        }))
        .await;
    let client_id = client["client_id"].as_str().unwrap().to_owned();
    let secret = client["client_secret"].as_str().unwrap().to_owned();
    let app = start_app().await;
    let gogs = start_fake_gogs().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            listener: Some(listener),
            issuer_extra: format!(
                "login = true\nclient_id = \"{client_id}\"\nclient_secret = {{ value = \"{secret}\" }}\n\
                 scopes = [\"openid\", \"profile\", \"email\", \"groups\", \"offline_access\"]\n"
            ),
            policies: Some(vec![("wiki.cedar".into(), POLICIES.into())]),
            extra_toml: format!(
                "[[apps]]\nname = \"wiki\"\npath_prefix = \"/apps/wiki\"\nupstream = \"{app}\"\n\
                 preset = \"generic\"\nheaders = {{ \"X-User\" = \"id\" }}\n\n\
                 [[apps]]\nname = \"gogs\"\npath_prefix = \"/apps/gogs\"\nupstream = \"{gogs}\"\n\
                 preset = \"gogs\"\ngit_upstream = \"local\"\nuser_claim = \"id\"\n\n{more_apps}\n\n[sessions]\n{extra_sessions}\n"
            ),
            ..Default::default()
        },
    )
    .await;
    World { op, tg }
}

fn browser() -> Option<Browser> {
    Browser::available()
}

/// Signs `user` in through the app's page and returns the session cookie.
async fn sign_in(b: &Browser, tg: &TestGateway, user: &str) -> String {
    let mut steps = vec![Step::goto(&tg.url("/apps/wiki/home")).label("the app, signed out")];
    steps.extend(sign_in_steps(user));
    steps.push(Step::wait_for_url(&tg.url("/apps/wiki/home")).label("back at the app"));
    steps.push(Step::expect_text(&format!("hello {user}")));
    steps.push(Step::cookies_for(&tg.base));
    let out = b.run(&steps).await;
    let last = out.last().unwrap();
    last.cookie("latchkey")
        .unwrap_or_else(|| panic!("no session cookie after sign-in: {last}"))
        .value
        .clone()
}

fn with_cookie(req: reqwest::RequestBuilder, cookie: &str) -> reqwest::RequestBuilder {
    req.header("cookie", format!("latchkey={cookie}"))
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn actions(tg: &TestGateway) -> Vec<(String, String)> {
    tg.audit_records()
        .iter()
        .map(|r| {
            let e = &r.event;
            let status = e
                .outcome
                .as_ref()
                .map(|o| o.status.clone())
                .or_else(|| e.decision.as_ref().map(|d| d.effect.clone()))
                .unwrap_or_default();
            (e.action.clone(), status)
        })
        .collect()
}

#[tokio::test]
async fn a_browser_signs_in_is_denied_a_page_by_name_signs_out_and_must_sign_in_again() {
    let Some(b) = browser() else { return };
    let w = world(OidcOptions::default(), "").await;
    let tg = &w.tg;
    let mut steps = vec![Step::goto(&tg.url("/apps/wiki/home")).label("the app, signed out")];
    // Sent to the provider's own login page.
    steps.push(Step::expect_url_prefix(w.op.issuer()).label("at the provider"));
    steps.extend(sign_in_steps("alice"));
    steps.push(Step::wait_for_url(&tg.url("/apps/wiki/home")).label("back at the app"));
    steps.push(Step::expect_text("hello alice"));
    // A page policy forbids: the page names the policy and the user.
    steps.push(Step::goto(&tg.url("/apps/wiki/admin/settings")).label("a forbidden page"));
    steps.push(Step::expect_status(403));
    steps.push(Step::expect_text("wiki-admin-pages-are-for-admins"));
    steps.push(Step::expect_text("alice"));
    // Sign out: at Latchkey, then at the provider (RP-initiated logout).
    steps.push(Step::goto(&tg.url("/logout?rd=/apps/wiki/home")).label("sign out"));
    steps.extend(logout_steps());
    // Back at the app, which wants a sign-in again: the provider's login.
    steps.push(Step::wait_for_url(w.op.issuer()).label("asked to sign in again"));
    steps.push(Step::cookies_for(&tg.base));
    let out = b.run(&steps).await;
    let last = out.last().unwrap();
    assert!(last.cookie("latchkey").is_none(), "{last}");

    let seen = actions(tg);
    for want in [
        ("session.start", "signed_in"),
        ("http.request", "allow"),
        ("http.request", "deny"),
        ("session.end", "logout"),
    ] {
        assert!(
            seen.iter().any(|(a, s)| a == want.0 && s == want.1),
            "no {want:?} in {seen:?}"
        );
    }
    let start = tg
        .audit_records()
        .into_iter()
        .find(|r| r.event.action == "session.start")
        .unwrap();
    let p = start.event.principal.as_ref().unwrap();
    assert_eq!(p.id, "alice");
}

#[tokio::test]
async fn a_planted_session_cookie_is_never_promoted_and_the_old_session_ends() {
    let Some(b) = browser() else { return };
    let w = world(OidcOptions::default(), "").await;
    let tg = &w.tg;
    // The attacker signs in as themself and plants their cookie in the
    // victim's browser (a sibling host or a script can do that without TLS).
    let planted = sign_in(&b, tg, "bob").await;
    let mut steps = vec![
        Step::goto(&tg.url("/.well-known/jwks.json")),
        Step::evaluate(&format!(
            "document.cookie = 'latchkey={planted}; path=/'; document.cookie"
        )),
        Step::goto(&tg.url("/login?rd=/apps/wiki/home&prompt=login")),
    ];
    steps.extend(sign_in_steps("alice"));
    steps.push(Step::wait_for_url(&tg.url("/apps/wiki/home")));
    steps.push(Step::expect_text("hello alice"));
    steps.push(Step::cookies_for(&tg.base));
    let out = b.run(&steps).await;
    let cookie = out
        .last()
        .unwrap()
        .cookie("latchkey")
        .unwrap()
        .value
        .clone();
    assert_ne!(cookie, planted, "the planted session id was kept");
    // The planted session is over.
    let resp = with_cookie(no_redirects().get(tg.url("/apps/wiki/home")), &planted)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "{:?}", resp.text().await);
}

#[tokio::test]
async fn sessions_end_when_idle_past_their_end_or_revoked_and_are_refreshed_before_expiry() {
    let Some(b) = browser() else { return };
    // ID tokens live 90 s, so a session a minute old is refreshed.
    let w = world(
        OidcOptions {
            id_token_ttl: Some(std::time::Duration::from_secs(90)),
        },
        "idle_timeout = \"10m\"\nabsolute_timeout = \"1h\"",
    )
    .await;
    let tg = &w.tg;
    let client = no_redirects();
    let get = |cookie: &str| {
        with_cookie(client.get(tg.url("/apps/wiki/home")), cookie)
            .header("accept", "text/html")
            .send()
    };

    // Refresh: 40 s on, the ID token expires within a minute.
    let cookie = sign_in(&b, tg, "alice").await;
    tg.clock.advance(std::time::Duration::from_secs(40));
    let resp = get(&cookie).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("hello alice"));
    assert!(
        actions(tg).contains(&("session.refresh".into(), "refreshed".into())),
        "{:?}",
        actions(tg)
    );

    // Idle: unused for more than 10 minutes.
    tg.clock.advance(std::time::Duration::from_secs(11 * 60));
    let resp = get(&cookie).await.unwrap();
    assert_eq!(resp.status(), 302);
    assert!(actions(tg).contains(&("session.end".into(), "idle".into())));

    // Revoked: the admin API revokes alice; her session ends at once.
    tg.clock.set(common::now());
    let cookie = sign_in(&b, tg, "alice").await;
    assert_eq!(get(&cookie).await.unwrap().status(), 200);
    let admin = tg.admin_token(&w.op).await;
    let resp = http()
        .post(tg.url("/admin/revocations"))
        .bearer_auth(&admin)
        .json(&json!({"kind": "subject", "value": "alice", "reason": "left the company"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let resp = get(&cookie).await.unwrap();
    assert_eq!(resp.status(), 302);
    let _ = Arc::clone(&tg.gw);
}

#[tokio::test]
async fn a_cross_origin_post_with_a_session_is_refused_and_a_same_origin_one_passes() {
    let Some(b) = browser() else { return };
    let w = world(OidcOptions::default(), "").await;
    let tg = &w.tg;
    let cookie = sign_in(&b, tg, "alice").await;
    let client = no_redirects();
    let post = |origin: Option<&str>, site: Option<&str>| {
        let mut req = with_cookie(client.post(tg.url("/apps/wiki/page")), &cookie).body("x=1");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(s) = site {
            req = req.header("sec-fetch-site", s);
        }
        req.send()
    };
    let evil = post(Some("https://evil.example"), Some("cross-site"))
        .await
        .unwrap();
    assert_eq!(evil.status(), 403, "{:?}", evil.text().await);
    let no_origin = post(None, None).await.unwrap();
    assert_eq!(no_origin.status(), 403);
    let same = post(Some(&tg.base), Some("same-origin")).await.unwrap();
    assert_eq!(same.status(), 200, "{:?}", same.text().await);
    assert!(same.text().await.unwrap().contains("method POST"));
}

/// oauth2-proxy's and Pomerium's open redirects, through the real routes.
#[tokio::test]
async fn login_and_logout_refuse_every_open_redirect_trick() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            issuer_extra: "login = true\nclient_id = \"latchkey-rs256\"\n".into(),
            ..Default::default()
        },
    )
    .await;
    let client = no_redirects();
    // Each as it appears in the URL's query (so `%09` is a tab once the
    // query is decoded, as every server reads it).
    let gw = url::form_urlencoded::byte_serialize(tg.base.as_bytes()).collect::<String>();
    for rd in [
        "//evil.example".to_owned(),
        "%2F%2Fevil.example".to_owned(),
        "/%5Cevil.example".to_owned(),
        "/%09/evil.example".to_owned(),
        "%2F%09%2Fevil.example".to_owned(),
        "/%0a/evil.example".to_owned(),
        "/%0d%0a/evil.example".to_owned(),
        "/%20/evil.example".to_owned(),
        "%20//evil.example".to_owned(),
        "https:evil.example".to_owned(),
        "https%3Aevil.example".to_owned(),
        "https://evil.example".to_owned(),
        "javascript:alert(1)".to_owned(),
        format!("{gw}%40evil.example"),
        format!("{gw}.evil.example%2F"),
    ] {
        for route in ["/login", "/logout"] {
            let resp = client
                .get(tg.url(&format!("{route}?rd={rd}")))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 400, "{route} rd={rd:?}");
            assert!(resp.headers().get("location").is_none());
        }
    }
    // A repeated `rd` is ambiguous: refused too.
    let resp = client
        .get(tg.url("/login?rd=/a&rd=//evil.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // A good one goes to the provider, with PKCE S256 and a sealed flow cookie.
    let resp = client
        .get(tg.url("/login?rd=/apps/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(op.issuer()), "{location}");
    assert!(location.contains("code_challenge_method=S256"));
    assert!(location.contains("nonce="));
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(set_cookie.starts_with("latchkey-signin="), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"));
    // The refusals are in the trail.
    assert!(actions(&tg).iter().any(|(a, _)| a == "signin.refused"));
}

#[tokio::test]
async fn a_forged_state_a_missing_flow_and_a_down_provider_fail_closed_with_a_clear_page() {
    let mut op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            issuer_extra: "login = true\nclient_id = \"latchkey-rs256\"\n".into(),
            ..Default::default()
        },
    )
    .await;
    let client = no_redirects();
    // No flow cookie at all: a callback nobody started.
    let resp = client
        .get(tg.url("/callback?code=abc&state=def"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("no matching start"));
    // A flow cookie, but another state (a login CSRF).
    let start = client.get(tg.url("/login")).send().await.unwrap();
    let flow = start.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let resp = client
        .get(tg.url("/callback?code=abc&state=forged"))
        .header("cookie", &flow)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("does not match"));
    // The provider answering an error is shown, escaped.
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let state = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let resp = client
        .get(tg.url(&format!(
            "/callback?error=access_denied&error_description=%3Cscript%3E&state={state}"
        )))
        .header("cookie", &flow)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("access_denied") && !body.contains("<script>"),
        "{body}"
    );
    // The provider goes away: sign-in is refused, clearly, and nobody is
    // let in (a gateway that has not yet read its metadata).
    op.stop().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            issuer_extra: "login = true\nclient_id = \"latchkey-rs256\"\n".into(),
            ..Default::default()
        },
    )
    .await;
    let resp = client.get(tg.url("/login?rd=/")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.text().await.unwrap().contains("cannot be reached"));
}

/// Gogs believes its own session cookie over the header: when the browser's
/// Latchkey user changes (a new sign-in, no sign-out), the previous user's
/// Gogs cookie must not reach Gogs, and sign-out clears it.
#[tokio::test]
async fn an_apps_own_session_cookie_never_outlives_the_latchkey_session_it_was_set_in() {
    let Some(b) = browser() else { return };
    let w = world(OidcOptions::default(), "").await;
    let tg = &w.tg;
    let gogs = tg.url("/apps/gogs/explore");
    let mut steps = vec![Step::goto(&gogs)];
    steps.extend(sign_in_steps("alice"));
    steps.push(Step::wait_for_url(&gogs));
    steps.push(Step::expect_text("gogs user alice"));
    steps.push(Step::goto(&gogs).label("again: now from Gogs' own cookie"));
    steps.push(Step::expect_text("from cookie true"));
    // Someone else signs in on the same browser, without signing out.
    steps.push(Step::goto(
        &tg.url("/login?rd=/apps/gogs/explore&prompt=login"),
    ));
    steps.extend(sign_in_steps("bob"));
    steps.push(Step::wait_for_url(&gogs));
    steps.push(Step::expect_text("gogs user bob").label("not alice's Gogs session"));
    steps.push(Step::expect_text("from cookie false"));
    steps.push(Step::goto(&gogs));
    steps.push(Step::expect_text("gogs user bob"));
    steps.push(Step::expect_text("from cookie true"));
    // Sign-out clears Gogs' cookie with Latchkey's.
    steps.push(Step::goto(&tg.url("/logout?rd=/.well-known/jwks.json")));
    steps.extend(logout_steps());
    steps.push(Step::wait_for_url(&tg.url("/.well-known/jwks.json")));
    steps.push(Step::cookies_for(&tg.base));
    let out = b.run(&steps).await;
    let last = out.last().unwrap();
    assert!(last.cookie("i_like_gogs").is_none(), "{last}");
    assert!(last.cookie("latchkey").is_none(), "{last}");
}

/// A real Backstage backend (npm: backend-defaults, the catalog, the auth
/// backend with its `oauth2Proxy` provider) behind Latchkey: a browser
/// signed in through Latchkey gets a Backstage identity for its own user
/// entity, and the catalog answers that identity, as Backstage's frontend
/// would ask it (its Backstage token in `Authorization`, beside Latchkey's
/// session cookie).
#[tokio::test]
async fn a_browser_signed_in_through_latchkey_is_its_own_user_in_a_real_backstage() {
    let Some(b) = browser() else { return };
    let Ok(backstage) = latchkey_testkit::backstage::Backstage::start().await else {
        return;
    };
    let apps = format!(
        "[[apps]]\nname = \"portal\"\npath_prefix = \"/apps/portal\"\nupstream = \"{}\"\npreset = \"backstage\"\n",
        backstage.url()
    );
    let w = world_with(OidcOptions::default(), "", &apps).await;
    let tg = &w.tg;
    let refresh = tg.url("/apps/portal/api/auth/oauth2Proxy/refresh");
    let mut steps = vec![Step::goto(&refresh)];
    steps.extend(sign_in_steps("alice"));
    steps.push(Step::wait_for_url(&refresh));
    steps.push(Step::expect_text("user:default/alice"));
    // What Backstage's frontend does next: the catalog, with its token.
    steps.push(Step::evaluate(
        "(async () => {\
           const id = await (await fetch('/apps/portal/api/auth/oauth2Proxy/refresh')).json();\
           const r = await fetch('/apps/portal/api/catalog/entities/by-name/user/default/alice',\
             { headers: { Authorization: 'Bearer ' + id.backstageIdentity.token } });\
           const body = await r.json();\
           return { ref: id.backstageIdentity.identity.userEntityRef, status: r.status, name: body.metadata && body.metadata.name };\
         })()",
    ));
    let out = b.run(&steps).await;
    let v = out.last().unwrap().value.clone().unwrap_or_default();
    assert_eq!(v["ref"], "user:default/alice", "{v}");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["name"], "alice", "{v}");
    // Someone outside `developers` is refused the portal by policy, not
    // handed to Backstage.
    let mallory = b
        .run(
            &[
                vec![Step::goto(&tg.url(
                    "/login?rd=/apps/portal/api/auth/oauth2Proxy/refresh&prompt=login",
                ))],
                sign_in_steps("mallory"),
                vec![Step::expect_status(403), Step::expect_text("mallory")],
            ]
            .concat(),
        )
        .await;
    assert!(mallory.last().unwrap().ok);
}
