//! The test OIDC provider's interactive flows, driven by real headless
//! Chromium, WITHOUT Latchkey: what the gateway's browser sign-in and
//! `latchkey login` tests build on. Sign-in through oidc-provider's login
//! and consent pages with a dynamically registered client and PKCE, the ID
//! token's claims, RP-initiated logout; the device flow approved in the
//! browser, then refresh, then revocation.

use latchkey_testkit::browser::{self, Browser, Step, selectors};
use latchkey_testkit::rp::{RelyingParty, RpClient, jwt_claims};
use latchkey_testkit::{CLI_CLIENT_ID, DEVICE_CODE_GRANT, OidcOptions, OidcProvider};
use serde_json::json;
use std::time::Duration;

const SCOPE: &str = "openid profile email groups";

#[tokio::test]
async fn chromium_signs_in_with_a_registered_web_client_then_logs_out() {
    let Some(browser) = Browser::available() else {
        return;
    };
    let provider = OidcProvider::start().await;
    let rp = RelyingParty::start(&provider, SCOPE).await;
    let redirect = rp.url("/callback");
    // A web client: the redirect on this test's random port, exactly.
    let (id, secret) = provider
        .register_client(
            &[&redirect],
            false,
            &["authorization_code", "refresh_token"],
        )
        .await;
    rp.use_client(RpClient::confidential(&id, &secret), &redirect);

    let mut steps = vec![Step::goto(&rp.url("/login"))];
    steps.push(Step::expect_url_prefix(&format!(
        "{}/interaction/",
        provider.issuer()
    )));
    steps.push(Step::expect_text(selectors::SIGN_IN_TEXT));
    steps.extend(browser::sign_in_steps("maria"));
    steps.extend([
        Step::wait_for_url(&redirect),
        Step::expect_text("signed in"),
        Step::expect_text("claim sub: maria"),
        Step::expect_text("claim groups: maintainers, developers"),
        Step::expect_text("claim email: maria@example.com"),
        Step::expect_text("claim preferred_username: maria"),
        Step::expect_text("refresh token: yes"),
        Step::cookies_for(provider.issuer()).label("provider cookies"),
        // A second sign-in rides the provider's session: no login page.
        Step::goto(&rp.url("/login")),
        Step::wait_for_url(&redirect),
        Step::expect_text("claim sub: maria"),
        Step::goto(&rp.url("/logout")),
    ]);
    steps.extend(browser::logout_steps());
    steps.extend([
        Step::wait_for_url(&rp.url("/")),
        Step::expect_text("signed out"),
        // The provider's session is gone: signing in asks for a login again.
        Step::goto(&rp.url("/login")),
        Step::expect_url_prefix(&format!("{}/interaction/", provider.issuer())),
        Step::expect_text(selectors::SIGN_IN_TEXT),
    ]);
    let results = browser.run(&steps).await;
    let cookies = results
        .iter()
        .find(|r| r.label.as_deref() == Some("provider cookies"))
        .expect("the cookies step ran");
    assert!(
        cookies.cookie("_session").is_some(),
        "the provider keeps its session in a cookie: {:?}",
        cookies.cookies
    );
    // After logout the last page is the provider's login form again.
    assert!(
        results
            .last()
            .is_some_and(|r| r.url.contains("/interaction/"))
    );
}

#[tokio::test]
async fn a_native_client_takes_a_loopback_redirect_on_any_port() {
    let Some(browser) = Browser::available() else {
        return;
    };
    let provider = OidcProvider::start().await;
    let rp = RelyingParty::start(&provider, SCOPE).await;
    // Registered without a port (RFC 8252 section 7.3); the app listens on
    // a random one.
    let id = provider
        .register_public_client(
            &["http://127.0.0.1/callback"],
            true,
            &["authorization_code"],
        )
        .await;
    rp.use_client(RpClient::public(&id), &rp.url("/callback"));

    let mut steps = browser::sign_in_at(&rp.url("/login"), "alice", &rp.url("/callback"));
    steps.extend([
        Step::expect_text("claim sub: alice"),
        Step::expect_text("claim groups: developers"),
        Step::expect_text("refresh token: no"),
    ]);
    browser.run(&steps).await;
    let tokens = rp.tokens().expect("signed in");
    let claims = jwt_claims(tokens["id_token"].as_str().expect("id_token"));
    assert_eq!(claims["name"], json!("Alice"));
    assert_eq!(claims["email_verified"], json!(true));
}

#[tokio::test]
async fn a_web_client_refuses_a_redirect_on_another_port() {
    let Some(browser) = Browser::available() else {
        return;
    };
    let provider = OidcProvider::start().await;
    let rp = RelyingParty::start(&provider, SCOPE).await;
    let registered = format!(
        "http://127.0.0.1:{}/callback",
        latchkey_testkit::free_port()
    );
    let (id, secret) = provider
        .register_client(&[&registered], false, &["authorization_code"])
        .await;
    // The app sends its own port, which the web client did not register.
    rp.use_client(RpClient::confidential(&id, &secret), &rp.url("/callback"));
    browser
        .run(&[
            Step::goto(&rp.url("/login")),
            Step::expect_url_prefix(provider.issuer()),
            Step::expect_text(
                "redirect_uri did not match any of the client's registered redirect_uris",
            ),
            Step::expect_status(400),
        ])
        .await;
}

#[tokio::test]
async fn a_code_flow_without_pkce_is_refused() {
    let provider = OidcProvider::start().await;
    let (id, _) = provider
        .register_client(
            &["http://127.0.0.1:9/callback"],
            false,
            &["authorization_code"],
        )
        .await;
    let url = format!(
        "{}/auth?client_id={id}&response_type=code&scope=openid&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&state=s",
        provider.issuer()
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = client.get(url).send().await.expect("GET /auth");
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        location.starts_with("http://127.0.0.1:9/callback?error=invalid_request")
            && location.contains("PKCE"),
        "an authorization request without PKCE must be refused, got {} to `{location}`",
        resp.status()
    );
}

#[tokio::test]
async fn the_device_flow_is_approved_in_chromium_then_refresh_then_revocation() {
    let Some(browser) = Browser::available() else {
        return;
    };
    let provider = OidcProvider::start_with(OidcOptions {
        id_token_ttl: Some(Duration::from_secs(30)),
    })
    .await;
    provider.set_groups("dora", &["operators"]).await;
    let (id, secret) = provider
        .register_client(&[], true, &[DEVICE_CODE_GRANT, "refresh_token"])
        .await;
    let client = RpClient::confidential(&id, &secret);
    let auth = provider
        .device_authorization(&client, "openid profile email groups offline_access")
        .await;
    let device_code = auth["device_code"].as_str().expect("device_code");
    let user_code = auth["user_code"].as_str().expect("user_code");
    let verification = auth["verification_uri"].as_str().expect("verification_uri");
    assert_eq!(verification, format!("{}/device", provider.issuer()));

    let (_, body) = provider
        .device_token(&client, device_code)
        .await
        .expect_err("nobody approved yet");
    assert_eq!(body["error"], json!("authorization_pending"));

    browser
        .run(&browser::device_steps(verification, user_code, "dora"))
        .await;

    let tokens = provider
        .device_token(&client, device_code)
        .await
        .unwrap_or_else(|e| panic!("the poll after approval must return tokens: {e:?}"));
    let id_token = tokens["id_token"].as_str().expect("id_token");
    let claims = jwt_claims(id_token);
    assert_eq!(claims["sub"], json!("dora"));
    assert_eq!(claims["groups"], json!(["operators"]));
    assert_eq!(claims["aud"], json!(id));
    let lifetime =
        claims["exp"].as_i64().unwrap_or_default() - claims["iat"].as_i64().unwrap_or_default();
    assert_eq!(lifetime, 30, "--id-token-ttl sets the ID token's lifetime");
    assert_eq!(tokens["expires_in"], json!(30), "and the access token's");
    let refresh = tokens["refresh_token"].as_str().expect("a refresh token");

    let renewed = provider
        .refresh(&client, refresh)
        .await
        .unwrap_or_else(|e| panic!("refresh must work: {e:?}"));
    assert!(renewed["access_token"].is_string());
    let renewed_claims = jwt_claims(renewed["id_token"].as_str().expect("a new id_token"));
    assert_eq!(renewed_claims["sub"], json!("dora"));
    let current = renewed["refresh_token"]
        .as_str()
        .unwrap_or(refresh)
        .to_owned();

    provider
        .revoke(&client, &current, "refresh_token")
        .await
        .unwrap_or_else(|e| panic!("revocation answers 200: {e:?}"));
    let (status, body) = provider
        .refresh(&client, &current)
        .await
        .expect_err("a revoked refresh token must not work");
    assert_eq!(status, 400);
    assert_eq!(body["error"], json!("invalid_grant"));
}

#[tokio::test]
async fn the_static_cli_client_runs_the_device_flow_without_a_secret() {
    let Some(browser) = Browser::available() else {
        return;
    };
    let provider = OidcProvider::start().await;
    let client = RpClient::public(CLI_CLIENT_ID);
    let auth = provider
        .device_authorization(&client, "openid groups")
        .await;
    // The complete URI carries the code; the user only confirms.
    let complete = auth["verification_uri_complete"]
        .as_str()
        .expect("verification_uri_complete");
    let mut steps = vec![
        Step::goto(complete),
        Step::expect_text(auth["user_code"].as_str().expect("user_code")),
        Step::click(selectors::DEVICE_CONFIRM),
    ];
    steps.extend(browser::sign_in_steps("mallory"));
    steps.push(Step::expect_text(selectors::DEVICE_SUCCESS_TEXT));
    browser.run(&steps).await;
    let tokens = provider
        .device_token(&client, auth["device_code"].as_str().expect("device_code"))
        .await
        .unwrap_or_else(|e| panic!("tokens after approval: {e:?}"));
    let claims = jwt_claims(tokens["id_token"].as_str().expect("id_token"));
    assert_eq!(claims["sub"], json!("mallory"));
    assert_eq!(claims["groups"], json!([]));
    assert!(
        tokens["refresh_token"].is_string(),
        "latchkey-cli may refresh"
    );
}

#[tokio::test]
async fn discovery_lists_every_endpoint_a_login_needs() {
    let provider = OidcProvider::start().await;
    let d = provider.discovery().await;
    let iss = provider.issuer();
    for (key, path) in [
        ("authorization_endpoint", "/auth"),
        ("token_endpoint", "/token"),
        ("device_authorization_endpoint", "/device/auth"),
        ("end_session_endpoint", "/session/end"),
        ("revocation_endpoint", "/token/revocation"),
        ("introspection_endpoint", "/token/introspection"),
        ("registration_endpoint", "/reg"),
        ("userinfo_endpoint", "/me"),
        ("jwks_uri", "/jwks"),
    ] {
        assert_eq!(d[key], json!(format!("{iss}{path}")), "{key}");
    }
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    for scope in ["openid", "profile", "email", "groups", "offline_access"] {
        assert!(
            d["scopes_supported"]
                .as_array()
                .is_some_and(|a| a.contains(&json!(scope))),
            "scope {scope}"
        );
    }
}

/// `Browser::trust_cert` accepts a test server by its certificate's public
/// key (the server here is `openssl s_server`, sending its leaf only); a
/// browser without it refuses the same server.
#[tokio::test]
async fn chromium_trusts_a_test_certificate_only_when_told() {
    let Some(browser) = Browser::available() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("latchkey-browser-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let certs = latchkey_testkit::tls::TestCerts::create(&dir).expect("test certificates");
    let port = latchkey_testkit::free_port();
    let _server = tokio::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&certs.cert)
        .arg("-key")
        .arg(&certs.key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl s_server");
    let url = format!("https://127.0.0.1:{port}/");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let refused = browser
        .try_run(&[Step::goto(&url)])
        .await
        .expect_err("an untrusted certificate must be refused");
    assert!(
        refused.reason.contains("ERR_CERT_AUTHORITY_INVALID"),
        "{refused}"
    );
    browser
        .clone()
        .trust_cert(&certs.cert)
        .run(&[Step::goto(&url), Step::expect_text("s_server")])
        .await;
    browser
        .clone()
        .ignore_https_errors()
        .run(&[Step::goto(&url), Step::expect_status(200)])
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Cookies persist from step to step of one script (one browser context),
/// and Chromium keeps `Secure` and `__Host-` cookies on plain
/// http://127.0.0.1 (a potentially trustworthy origin), which the gateway's
/// loopback tests rely on.
#[tokio::test]
async fn cookies_persist_across_steps_and_secure_ones_live_on_loopback() {
    let Some(browser) = Browser::available() else {
        return;
    };
    let provider = OidcProvider::start().await;
    let page = format!("{}/.well-known/openid-configuration", provider.issuer());
    let results = browser
        .run(&[
            Step::goto(&page),
            Step::evaluate(
                "document.cookie = '__Host-probe=1; Secure; Path=/'; \
                 document.cookie = 'plain=2; Path=/'; document.cookie",
            ),
            Step::goto(&format!("{}/jwks", provider.issuer())),
            Step::cookies_for(provider.issuer()),
            Step::clear_cookies(),
            Step::cookies(),
        ])
        .await;
    assert_eq!(results[1].value, Some(json!("__Host-probe=1; plain=2")));
    let kept = &results[3];
    assert!(
        kept.cookie("__Host-probe").is_some_and(|c| c.secure) && kept.cookie("plain").is_some(),
        "{:?}",
        kept.cookies
    );
    assert!(results[5].cookies.is_empty(), "clearCookies forgets them");
}
