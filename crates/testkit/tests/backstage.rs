//! The real Backstage backend in `testing/backstage`, without Latchkey: a
//! request carrying the identity headers a proxy sets signs in as the
//! catalog user they name, and the catalog answers the Backstage token that
//! sign-in returns. Without the headers, Backstage refuses. This is the
//! contract Latchkey's `backstage` app preset relies on.

// A test fails with the expectation's message: that is its report.
#![allow(clippy::expect_used)]

use latchkey_testkit::backstage::{
    self, Backstage, BackstageIdentity, FORWARDED_EMAIL, FORWARDED_PREFERRED_USERNAME,
    FORWARDED_USER, OAUTH2_PROXY_ID_TOKEN,
};
use latchkey_testkit::forge::b64;
use reqwest::StatusCode;
use serde_json::Value;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("build a reqwest client")
}

async fn get(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("request to Backstage");
    let status = resp.status();
    let text = resp.text().await.expect("Backstage answer body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

#[tokio::test]
async fn forwarded_user_signs_in_as_its_catalog_user_and_the_catalog_answers_its_token() {
    let Ok(bs) = Backstage::start().await else {
        return;
    };
    eprintln!("Backstage started in {:?}", bs.started_in());
    let http = http();

    // As a proxy would send it: the three oauth2Proxy headers.
    let (status, answer) = get(http
        .get(bs.refresh_url())
        .header(FORWARDED_USER, "alice")
        .header(FORWARDED_EMAIL, "alice@example.com")
        .header(FORWARDED_PREFERRED_USERNAME, "alice"))
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "sign-in as alice: {answer}\n{}",
        bs.output()
    );
    let id = BackstageIdentity::from_refresh(&answer)
        .unwrap_or_else(|| panic!("no backstageIdentity in {answer}"));
    assert_eq!(id.user_entity_ref, "user:default/alice");
    assert!(
        id.ownership_entity_refs
            .contains(&"group:default/engineering".to_owned()),
        "alice's ownership refs name her group: {:?}",
        id.ownership_entity_refs
    );
    assert_eq!(answer["profile"]["email"], "alice@example.com");

    // The catalog answers that token, for alice's own entity.
    let alice = format!(
        "{}/api/catalog/entities/by-name/user/default/alice",
        bs.url()
    );
    let (status, entity) = get(http.get(&alice).bearer_auth(&id.token)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "catalog with alice's token: {entity}"
    );
    assert_eq!(entity["metadata"]["name"], "alice");
    assert_eq!(entity["spec"]["profile"]["email"], "alice@example.com");

    // Another user gets another identity.
    let (status, answer) = get(http.get(bs.refresh_url()).header(FORWARDED_USER, "maria")).await;
    assert_eq!(status, StatusCode::OK, "sign-in as maria: {answer}");
    let maria = BackstageIdentity::from_refresh(&answer).expect("maria's identity");
    assert_eq!(maria.user_entity_ref, "user:default/maria");
    assert_ne!(maria.token, id.token);

    // The oauth2Proxy provider needs no `X-Requested-With` (only Backstage's
    // OAuth providers check it): none was sent above. POST works as GET.
    let (status, answer) = get(http.post(bs.refresh_url()).header(FORWARDED_USER, "alice")).await;
    assert_eq!(status, StatusCode::OK, "POST refresh: {answer}");

    // A JWT in X-OAUTH2-PROXY-ID-TOKEN is decoded, not verified, and echoed
    // back to the caller as providerInfo.accessToken: an assertion put there
    // reaches whoever called Backstage, and proves nothing to Backstage.
    let jwt = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"EdDSA","typ":"JWT"}"#),
        b64(br#"{"sub":"alice","aud":"backstage"}"#),
        b64(b"not a real signature")
    );
    let (status, answer) = get(http
        .get(bs.refresh_url())
        .header(FORWARDED_USER, "alice")
        .header(OAUTH2_PROXY_ID_TOKEN, format!("Bearer {jwt}")))
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an unverifiable ID token header: {answer}"
    );
    assert_eq!(answer["providerInfo"]["accessToken"], jwt.as_str());
    assert_eq!(
        BackstageIdentity::from_refresh(&answer).map(|i| i.user_entity_ref),
        Some("user:default/alice".to_owned()),
        "the user still comes from X-Forwarded-User"
    );

    // Refusals: the catalog without a token, and sign-ins without a usable user.
    let (status, body) = get(http.get(&alice)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "catalog without a token: {body}"
    );
    let (status, body) = get(http.get(&alice).bearer_auth("not-a-backstage-token")).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "catalog with a bad token: {body}"
    );

    let refused = [
        ("no identity headers", vec![]),
        // The resolver matches X-Forwarded-User only; the other two are profile.
        (
            "email and preferred username but no user",
            vec![
                (FORWARDED_EMAIL, "alice@example.com"),
                (FORWARDED_PREFERRED_USERNAME, "alice"),
            ],
        ),
        (
            "a user the catalog does not have",
            vec![(FORWARDED_USER, "bob")],
        ),
        (
            "an oauth2-proxy ID token header that is not a JWT",
            vec![
                (FORWARDED_USER, "alice"),
                (OAUTH2_PROXY_ID_TOKEN, "Bearer not-a-jwt"),
            ],
        ),
    ];
    for (case, headers) in refused {
        let mut req = http.get(bs.refresh_url());
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let (status, answer) = get(req).await;
        assert!(
            status.is_client_error() || status.is_server_error(),
            "{case}: Backstage answered {status}: {answer}"
        );
        assert!(
            BackstageIdentity::from_refresh(&answer).is_none(),
            "{case}: Backstage issued an identity: {answer}"
        );
    }
}

/// `install.sh` and the test kit agree on the stamp: a missing or stale one
/// means "not installed" (so the test skips, saying to run install.sh).
#[test]
fn the_install_stamp_must_match_the_lock_file() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let err = backstage::install_current(dir.path()).expect_err("no lock file");
    assert!(err.contains("package-lock.json"), "{err}");

    std::fs::write(dir.path().join("package-lock.json"), "{}\n").expect("write lock");
    let err = backstage::install_current(dir.path()).expect_err("no node_modules");
    assert!(err.contains("not installed"), "{err}");

    std::fs::create_dir(dir.path().join("node_modules")).expect("create node_modules");
    let stamp = dir
        .path()
        .join("node_modules/.latchkey-package-lock.sha256");
    std::fs::write(&stamp, "0000\n").expect("write stamp");
    let err = backstage::install_current(dir.path()).expect_err("stale stamp");
    assert!(err.contains("another package-lock.json"), "{err}");

    // What `sha256sum package-lock.json | cut -d' ' -f1` prints for "{}\n".
    std::fs::write(
        &stamp,
        "ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356\n",
    )
    .expect("write stamp");
    backstage::install_current(dir.path()).expect("a current stamp");
}

/// The claims of a JWT, unverified (the test only reads what Backstage put in).
fn claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("a base64url JWT payload");
    serde_json::from_slice(&bytes).expect("JSON JWT claims")
}

/// Behind a proxy, Backstage names the proxy's URL in what it signs, and its
/// own catalog still accepts those tokens (it verifies them internally).
#[tokio::test]
async fn behind_a_proxy_url_backstage_signs_tokens_for_that_url() {
    let public = "http://portal.latchkey.test:8443";
    let Ok(bs) = Backstage::start_behind(&format!("{public}/")).await else {
        return;
    };
    eprintln!(
        "Backstage (behind {public}) started in {:?}",
        bs.started_in()
    );
    assert_eq!(bs.base_url(), public);
    assert_ne!(bs.url(), public);
    let http = http();

    let (status, answer) = get(http.get(bs.refresh_url()).header(FORWARDED_USER, "mallory")).await;
    assert_eq!(status, StatusCode::OK, "sign-in as mallory: {answer}");
    let id = BackstageIdentity::from_refresh(&answer).expect("mallory's identity");
    assert_eq!(id.user_entity_ref, "user:default/mallory");
    let c = claims(&id.token);
    assert_eq!(c["iss"], bs.token_issuer().as_str());
    assert_eq!(c["sub"], "user:default/mallory");

    let (status, entity) = get(http
        .get(format!(
            "{}/api/catalog/entities/by-name/group/default/engineering",
            bs.url()
        ))
        .bearer_auth(&id.token))
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "catalog with mallory's token: {entity}"
    );
    assert_eq!(entity["kind"], "Group");
}
