//! Issue 13 ("the first hour of a platform engineer"), the gateway side:
//! `/readyz` tells the truth per component, creating and lifting a freeze
//! are one action, and a token from another gateway is refused as such.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{Opts, TestGateway, bearer};
use latchkey_testkit::OidcProvider;
use serde_json::{Value, json};

async fn readyz(tg: &TestGateway) -> (u16, Value) {
    let resp = tg.http.get(tg.url("/readyz")).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[track_caller]
fn component<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == name)
        .unwrap_or_else(|| panic!("no component `{name}` in {body}"))
}

/// All good: 200, one status per component. A SIGHUP reload of a broken
/// policy set keeps the old set, and readiness says `policies` is
/// degraded (since when, why) until a reload succeeds; liveness stays up.
#[tokio::test]
async fn readyz_reports_a_failed_policy_reload() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let (status, body) = readyz(&tg).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    for name in [
        "policies",
        "audit log",
        "store",
        "issuer test-idp",
        "git upstream local",
    ] {
        assert_eq!(component(&body, name)["status"], "ok", "{name}: {body}");
    }

    let broken = tg.data().join("policies").join("99-broken.cedar");
    std::fs::write(&broken, "permit (principal").unwrap();
    assert!(tg.gw.reload_policies().await.is_err());
    let (status, body) = readyz(&tg).await;
    assert_eq!(status, 503, "{body}");
    let policies = component(&body, "policies");
    assert_eq!(policies["status"], "degraded", "{body}");
    assert!(policies["since_ms"].is_u64(), "{body}");
    assert!(
        policies["reason"]
            .as_str()
            .unwrap()
            .contains("reload failed"),
        "{body}"
    );
    // Unauthenticated, so nothing beyond names, statuses and a short reason.
    let text = body.to_string();
    assert!(
        !text.contains("99-broken") && !text.contains(tg.data().to_str().unwrap()),
        "{text}"
    );
    let health = tg.http.get(tg.url("/admin/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "liveness is not readiness");

    std::fs::remove_file(&broken).unwrap();
    tg.gw.reload_policies().await.unwrap();
    let (status, body) = readyz(&tg).await;
    assert_eq!(status, 200, "{body}");
}

/// An upstream that does not answer, and an issuer whose keys cannot be
/// refreshed, each make readiness 503 and are named.
#[tokio::test]
async fn readyz_names_an_upstream_and_an_issuer_that_are_down() {
    let mut op = OidcProvider::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tg = TestGateway::start(
        &op,
        Opts {
            extra_toml: format!("[git.upstreams.gogs]\nurl = \"http://127.0.0.1:{closed}\"\n"),
            ..Opts::default()
        },
    )
    .await;
    let (status, body) = readyz(&tg).await;
    assert_eq!(status, 503, "{body}");
    let gogs = component(&body, "git upstream gogs");
    assert_eq!(gogs["status"], "failing", "{body}");
    assert_eq!(gogs["reason"], "unreachable", "{body}");
    assert_eq!(component(&body, "git upstream local")["status"], "ok");
    assert_eq!(component(&body, "issuer test-idp")["status"], "ok");

    // The issuer goes away; once its keys are due for a refresh, readiness
    // names it and says since when.
    op.stop().await;
    tg.clock.advance(Duration::from_secs(3600));
    let (status, body) = readyz(&tg).await;
    assert_eq!(status, 503, "{body}");
    let issuer = component(&body, "issuer test-idp");
    assert_eq!(issuer["status"], "failing", "{body}");
    assert!(issuer["since_ms"].is_u64(), "{body}");
}

fn with_policy(extra: &str) -> Vec<(String, String)> {
    let mut policies: Vec<(String, String)> = latchkey_policy::starter_policy_files()
        .into_iter()
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect();
    policies.push(("50-test.cedar".into(), extra.into()));
    policies
}

/// Creating a freeze and lifting it are the same action, `token.revoke`:
/// whoever may freeze may lift, and `admin.write` alone lifts nothing.
#[tokio::test]
async fn freezing_and_lifting_are_one_action() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            policies: Some(with_policy(
                r#"@id("test-mint-admin-tokens")
permit (principal, action == Latchkey::Action::"token.mint", resource == Latchkey::Audience::"latchkey");
@id("oncall-freezes")
permit (principal in Latchkey::Group::"oncall", action == Latchkey::Action::"token.revoke",
        resource == Latchkey::Gateway::"latchkey");
@id("writers-write")
permit (principal in Latchkey::Group::"writers", action == Latchkey::Action::"admin.write",
        resource == Latchkey::Gateway::"latchkey");"#,
            )),
            ..Opts::default()
        },
    )
    .await;
    let oncall = tg.token_for(&op, "olive", &["oncall"], "latchkey").await;
    let writer = tg.token_for(&op, "wendy", &["writers"], "latchkey").await;
    let freeze = |token: String| {
        let tg = &tg;
        async move {
            tg.http
                .post(tg.url("/admin/revocations"))
                .header("authorization", bearer(&token))
                .json(&json!({"kind": "pipeline", "value": "acme/deploy", "mode": "freeze"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let lift = |token: String| {
        let tg = &tg;
        async move {
            let resp = tg
                .http
                .delete(tg.url("/admin/revocations?kind=pipeline&value=acme/deploy"))
                .header("authorization", bearer(&token))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    assert_eq!(freeze(oncall.clone()).await, 201);
    let (status, text) = lift(writer.clone()).await;
    assert_eq!(status, 403, "admin.write does not lift a freeze: {text}");
    assert!(text.contains("token.revoke"), "{text}");
    assert_eq!(freeze(writer).await, 403);
    let (status, text) = lift(oncall).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["lifted"],
        true
    );
}

/// A Latchkey token signed by another gateway is refused as not issued
/// here, not as if its key had been rotated out.
#[tokio::test]
async fn a_token_from_another_gateway_is_not_issued_here() {
    let op = OidcProvider::start().await;
    let a = TestGateway::start(&op, Opts::default()).await;
    let b = TestGateway::start(&op, Opts::default()).await;
    let token = a.token_for(&op, "alice", &["developers"], "git").await;
    assert_eq!(a.git_info_refs(Some(&bearer(&token))).await.status(), 200);
    let resp = b.git_info_refs(Some(&bearer(&token))).await;
    assert_eq!(resp.status(), 401);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("not issued by this gateway") && !text.contains("rotated"),
        "{text}"
    );
}
