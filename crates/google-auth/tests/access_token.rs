//! `AccessTokenProvider` against `FakeGoogleTokenEndpoint`, a FAKE of
//! Google's token endpoint and metadata server (the real ones cannot run
//! here) that verifies each assertion's signature and claims for real.

#![allow(clippy::unwrap_used)]

mod fake_google;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fake_google::{Behaviour, Expect, FakeGoogleTokenEndpoint, METADATA_TOKEN_PATH, TestKey};
use latchkey_core::{FakeClock, SharedClock};
use latchkey_google_auth::{AccessTokenProvider, AuthError, CredentialSource, DATASTORE_SCOPE};
use serde_json::json;
use tokio::time::Instant;

const EMAIL: &str = "latchkey@test-project.iam.gserviceaccount.com";
const KID: &str = "0123456789abcdef0123456789abcdef01234567";
const START: u64 = 1_700_000_000;

/// A fake endpoint trusting `key`, and a key file signed by `file_key`
/// pointing at it (the same key unless a test wants a mismatch).
struct Setup {
    fake: FakeGoogleTokenEndpoint,
    clock: Arc<FakeClock>,
    key_file: PathBuf,
    file_pem: String,
    _dir: tempfile::TempDir,
}

async fn setup_with(trusted: &TestKey, file_key: &TestKey) -> Setup {
    let clock = Arc::new(FakeClock::at(START));
    let fake = FakeGoogleTokenEndpoint::start(
        Expect {
            public_der: trusted.public_der.clone(),
            kid: KID.into(),
            client_email: EMAIL.into(),
            scope: format!("{DATASTORE_SCOPE} https://www.googleapis.com/auth/cloud-platform"),
        },
        clock.clone(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("sa.json");
    write_key_file(
        &key_file,
        &json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": KID,
            "private_key": file_key.pem,
            "client_email": EMAIL,
            "client_id": "1234567890",
            "token_uri": fake.token_url(),
        }),
    );
    Setup {
        fake,
        clock,
        key_file,
        file_pem: file_key.pem.clone(),
        _dir: dir,
    }
}

async fn setup() -> Setup {
    let key = TestKey::generate();
    setup_with(&key, &key).await
}

fn write_key_file(path: &std::path::Path, v: &serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn scopes() -> Vec<String> {
    vec![
        DATASTORE_SCOPE.into(),
        "https://www.googleapis.com/auth/cloud-platform".into(),
    ]
}

fn provider(s: &Setup) -> AccessTokenProvider {
    let clock: SharedClock = s.clock.clone();
    AccessTokenProvider::new(
        CredentialSource::ServiceAccountFile(s.key_file.clone()),
        scopes(),
        clock,
    )
    .unwrap()
}

#[tokio::test]
async fn fetches_a_token_then_serves_it_from_cache() {
    let s = setup().await;
    let p = provider(&s);

    let t = p.token().await.unwrap();
    assert_eq!(t.secret(), "fake-access-token-1");
    assert_eq!(t.expires_at_unix(), Some(START as i64 + 3600));

    let again = p.clone().token().await.unwrap();
    assert_eq!(again, t);
    let header = p.authorization().await.unwrap();
    assert_eq!(header, "Bearer fake-access-token-1");
    assert!(header.is_sensitive());
    assert_eq!(
        s.fake.requests(),
        1,
        "cached calls must not reach the endpoint"
    );
}

#[tokio::test]
async fn refreshes_once_expiry_minus_margin_is_reached() {
    let s = setup().await;
    let p = provider(&s);
    assert_eq!(p.token().await.unwrap().secret(), "fake-access-token-1");

    // Default margin is 5 minutes: 3600 - 300 = 3300 s after issue.
    s.clock.advance(Duration::from_secs(3299));
    assert_eq!(p.token().await.unwrap().secret(), "fake-access-token-1");
    assert_eq!(s.fake.requests(), 1);

    s.clock.advance(Duration::from_secs(1));
    let t = p.token().await.unwrap();
    assert_eq!(t.secret(), "fake-access-token-2");
    assert_eq!(t.expires_at_unix(), Some(START as i64 + 3300 + 3600));
    assert_eq!(s.fake.requests(), 2);
}

#[tokio::test]
async fn a_custom_margin_moves_the_refresh_point() {
    let s = setup().await;
    let p = provider(&s).with_refresh_margin(Duration::from_secs(60));
    p.token().await.unwrap();
    s.clock.advance(Duration::from_secs(3539));
    p.token().await.unwrap();
    assert_eq!(s.fake.requests(), 1);
    s.clock.advance(Duration::from_secs(1));
    assert_eq!(p.token().await.unwrap().secret(), "fake-access-token-2");
}

#[tokio::test]
async fn a_short_lived_token_is_refreshed_at_half_its_life() {
    // Less than twice the margin left: refreshing "margin before expiry"
    // would mean fetching on every call.
    let s = setup().await;
    s.fake.set_behaviour(Behaviour::Issue {
        expires_in: 240,
        delay: Duration::ZERO,
    });
    let p = provider(&s);
    p.token().await.unwrap();
    s.clock.advance(Duration::from_secs(119));
    p.token().await.unwrap();
    assert_eq!(s.fake.requests(), 1);
    s.clock.advance(Duration::from_secs(1));
    p.token().await.unwrap();
    assert_eq!(s.fake.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_fetch() {
    let s = setup().await;
    s.fake.set_behaviour(Behaviour::Issue {
        expires_in: 3600,
        delay: Duration::from_millis(300),
    });
    let p = provider(&s);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let p = p.clone();
        set.spawn(async move { p.token().await });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap().unwrap().secret(), "fake-access-token-1");
    }
    assert_eq!(s.fake.requests(), 1);
}

#[tokio::test]
async fn a_refusal_carries_the_oauth_error_and_status() {
    // The key file's key is not the one registered for the account.
    let trusted = TestKey::generate();
    let s = setup_with(&trusted, &TestKey::generate()).await;
    let err = provider(&s).token().await.unwrap_err();
    assert!(
        matches!(err, AuthError::Rejected { status: 400, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "`{}` refused to issue a Google access token (HTTP 400): invalid_grant: Invalid JWT Signature.",
            s.fake.token_url()
        )
    );
    assert_no_key_material(&err.to_string(), &s.file_pem);
}

#[tokio::test]
async fn a_skewed_clock_is_refused_with_googles_hint() {
    let s = setup().await;
    let skewed: SharedClock = Arc::new(FakeClock::at(START - 600));
    let p = AccessTokenProvider::new(
        CredentialSource::ServiceAccountFile(s.key_file.clone()),
        scopes(),
        skewed,
    )
    .unwrap();
    let msg = p.token().await.unwrap_err().to_string();
    assert!(msg.contains("Check your iat and exp values"), "{msg}");
}

#[tokio::test]
async fn a_malformed_key_file_names_the_file_and_the_field() {
    let s = setup().await;
    let clock: SharedClock = s.clock.clone();
    let new = |path: PathBuf| {
        AccessTokenProvider::new(
            CredentialSource::ServiceAccountFile(path),
            scopes(),
            clock.clone(),
        )
        .unwrap_err()
    };
    let path = s.key_file.clone();
    let shown = path.display().to_string();
    let mut good: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();

    good.as_object_mut().unwrap().remove("client_email");
    write_key_file(&path, &good);
    assert_eq!(
        new(path.clone()).to_string(),
        format!("service-account key file `{shown}`: the `client_email` field is missing or empty")
    );

    good["client_email"] = json!(EMAIL);
    good["private_key"] =
        json!("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n");
    write_key_file(&path, &good);
    assert_eq!(
        new(path.clone()).to_string(),
        format!(
            "service-account key file `{shown}`: the `private_key` field is not a PEM-encoded RSA private key"
        )
    );

    std::fs::write(&path, &s.file_pem[..200]).unwrap();
    let msg = new(path.clone()).to_string();
    assert!(msg.contains("is not a JSON key file"), "{msg}");
    assert_no_key_material(&msg, &s.file_pem);

    let missing = path.with_file_name("nope.json");
    let msg = new(missing.clone()).to_string();
    assert!(
        msg.starts_with(&format!(
            "service-account key file `{}`: cannot read it",
            missing.display()
        )),
        "{msg}"
    );
    assert_eq!(s.fake.requests(), 0);
}

#[tokio::test]
async fn metadata_server_flow() {
    let s = setup().await;
    let clock: SharedClock = s.clock.clone();
    let p = AccessTokenProvider::new(
        CredentialSource::MetadataAt(s.fake.base_url.clone()),
        scopes(),
        clock,
    )
    .unwrap();
    let t = p.token().await.unwrap();
    assert_eq!(t.secret(), "fake-access-token-1");
    assert_eq!(t.expires_at_unix(), Some(START as i64 + 3600));
    p.token().await.unwrap();
    assert_eq!(s.fake.requests(), 1);
}

#[tokio::test]
async fn metadata_refusal_reports_the_status() {
    // Without scopes the fake metadata server refuses (it expects them).
    let s = setup().await;
    let clock: SharedClock = s.clock.clone();
    let p = AccessTokenProvider::new(
        CredentialSource::MetadataAt(s.fake.base_url.clone()),
        vec![],
        clock,
    )
    .unwrap();
    let err = p.token().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "`{}{METADATA_TOKEN_PATH}` refused to issue a Google access token (HTTP 400)",
            s.fake.base_url
        )
    );
}

#[tokio::test]
async fn debug_output_hides_tokens_and_keys() {
    let s = setup().await;
    let p = provider(&s);
    let t = p.token().await.unwrap();
    let shown = format!("{t:?} {p:?} {:?}", p.authorization().await.unwrap());
    assert!(!shown.contains(t.secret()), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
    assert!(shown.contains(EMAIL), "{shown}");
    assert_no_key_material(&shown, &s.file_pem);
}

#[tokio::test]
async fn a_hanging_endpoint_fails_within_the_timeout() {
    let s = setup().await;
    s.fake.set_behaviour(Behaviour::Hang);
    let p = provider(&s).with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = p.token().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        err.to_string(),
        format!(
            "`{}` did not issue a Google access token within 0.3 s",
            s.fake.token_url()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_queued_behind_a_timeout_share_its_error() {
    let s = setup().await;
    s.fake.set_behaviour(Behaviour::Hang);
    let p = provider(&s).with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let p = p.clone();
        set.spawn(async move { p.token().await });
    }
    while let Some(r) = set.join_next().await {
        assert!(matches!(r.unwrap(), Err(AuthError::Timeout { .. })));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.fake.requests(), 1);

    // A later call tries again, and succeeds once the endpoint recovers.
    s.fake.set_behaviour(Behaviour::Issue {
        expires_in: 3600,
        delay: Duration::ZERO,
    });
    assert_eq!(p.token().await.unwrap().secret(), "fake-access-token-1");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_reported() {
    let s = setup().await;
    let clock: SharedClock = s.clock.clone();
    let base = format!("http://127.0.0.1:{}", latchkey_testkit::free_port());
    let p = AccessTokenProvider::new(CredentialSource::MetadataAt(base.clone()), scopes(), clock)
        .unwrap();
    let msg = p.token().await.unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("cannot reach `{base}{METADATA_TOKEN_PATH}")),
        "{msg}"
    );
    assert!(msg.ends_with(": could not connect"), "{msg}");
}

#[tokio::test]
async fn the_emulator_is_always_owner() {
    let clock: SharedClock = Arc::new(FakeClock::at(START));
    let p = AccessTokenProvider::new(CredentialSource::Emulator, vec![], clock).unwrap();
    let t = p.token().await.unwrap();
    assert_eq!((t.secret(), t.expires_at_unix()), ("owner", None));
    assert_eq!(p.authorization().await.unwrap(), "Bearer owner");
}

#[tokio::test]
async fn a_service_account_without_scopes_is_refused_up_front() {
    let s = setup().await;
    let clock: SharedClock = s.clock.clone();
    let err = AccessTokenProvider::new(
        CredentialSource::ServiceAccountFile(s.key_file.clone()),
        vec![],
        clock,
    )
    .unwrap_err();
    assert!(err.to_string().contains(DATASTORE_SCOPE), "{err}");
}

/// The fake really verifies: an assertion with the right claims signed by
/// another key (forged with the project's test signer) is refused, and the
/// same claims signed by the registered key are accepted.
#[tokio::test]
async fn the_fake_checks_signatures_for_real() {
    let trusted = TestKey::generate();
    let s = setup_with(&trusted, &trusted).await;
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": KID });
    let claims = json!({
        "iss": EMAIL,
        "scope": scopes().join(" "),
        "aud": s.fake.token_url(),
        "iat": START,
        "exp": START + 3600,
    });
    let post = |assertion: String| {
        let url = s.fake.token_url();
        async move {
            reqwest::Client::new()
                .post(url)
                .form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let forged = latchkey_testkit::forge::sign_rs256(&TestKey::generate().pair, &header, &claims);
    let resp = post(forged).await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error_description"], "Invalid JWT Signature.");

    let genuine = latchkey_testkit::forge::sign_rs256(&trusted.pair, &header, &claims);
    assert_eq!(post(genuine).await.status(), 200);
}

fn assert_no_key_material(text: &str, pem: &str) {
    let body_line = pem.lines().nth(1).unwrap();
    assert!(!text.contains(body_line), "{text}");
    assert!(!text.contains("BEGIN PRIVATE KEY"), "{text}");
}
