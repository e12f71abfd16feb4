//! Key rotation made in the store by `latchkey keys rotate` (the same
//! library function, [`latchkey_gateway::open_keyring`]) while the gateway
//! runs: learnt within a second, published before it signs, `now` retires
//! the old key's tokens, and each rotation is audited (issue 11.7).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Opts, TestGateway, bearer, jwks, jwt_part};
use latchkey_core::SharedClock;
use latchkey_testkit::OidcProvider;
use latchkey_tokens::RotationMode;
use serde_json::Value;
use tokio::time::Instant;

async fn published(tg: &TestGateway) -> BTreeSet<String> {
    jwks(tg).await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls `f` for at most one second (the gateway's promise).
async fn within_a_second<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{what} did not happen within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rotation_events(tg: &TestGateway) -> Vec<Value> {
    tg.audit_records()
        .into_iter()
        .filter(|r| r.event.action == "keys.rotate")
        .map(|r| serde_json::to_value(&r.event).unwrap())
        .collect()
}

#[tokio::test]
async fn cli_rotation_reaches_a_running_gateway_within_a_second() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            keys_extra: r#"publish_ahead = "60s""#.into(),
            ..Opts::default()
        },
    )
    .await;
    let old = tg.token_for(&op, "alice", &["developers"], "git").await;
    let old_kid = jwt_part(&old, 0)["kid"].as_str().unwrap().to_owned();
    // A relying party caches JWKS no longer than `publish_ahead`.
    let resp = tg
        .http
        .get(tg.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["cache-control"], "max-age=60");

    // What `latchkey keys rotate` does: its own store connection.
    let clock: SharedClock = tg.clock.clone();
    let cli = latchkey_gateway::open_keyring(tg.gw.config(), clock)
        .await
        .unwrap();
    let scheduled = cli.rotate(RotationMode::Scheduled).await.unwrap();
    within_a_second("the new key in JWKS", || async {
        published(&tg).await.contains(&scheduled.kid)
    })
    .await;
    assert!(published(&tg).await.contains(&old_kid));
    let before = tg.token_for(&op, "alice", &["developers"], "git").await;
    assert_eq!(
        jwt_part(&before, 0)["kid"],
        old_kid.as_str(),
        "the new key must not sign before `publish_ahead`"
    );
    tg.clock.advance(Duration::from_secs(60));
    let after = tg.token_for(&op, "alice", &["developers"], "git").await;
    assert_eq!(jwt_part(&after, 0)["kid"], scheduled.kid.as_str());
    for t in [&old, &before, &after] {
        assert_eq!(tg.git_info_refs(Some(&bearer(t))).await.status(), 200);
    }
    let events = rotation_events(&tg);
    assert_eq!(events.len(), 1, "{events:?}");
    let ctx = &events[0]["context"];
    assert_eq!(ctx["kid"], scheduled.kid.as_str());
    assert_eq!(ctx["mode"], "scheduled");
    assert_eq!(ctx["retired"], serde_json::json!([old_kid]));
    assert_eq!(ctx["removed"], serde_json::json!([]));

    // `--now`: old tokens stop verifying at once, new ones carry the new kid.
    let now = cli.rotate(RotationMode::Now).await.unwrap();
    within_a_second("the old keys' tokens refused", || async {
        tg.git_info_refs(Some(&bearer(&old))).await.status() == 401
    })
    .await;
    for t in [&before, &after] {
        assert_eq!(tg.git_info_refs(Some(&bearer(t))).await.status(), 401);
    }
    assert_eq!(published(&tg).await, BTreeSet::from([now.kid.clone()]));
    let fresh = tg.token_for(&op, "alice", &["developers"], "git").await;
    assert_eq!(jwt_part(&fresh, 0)["kid"], now.kid.as_str());
    assert_eq!(tg.git_info_refs(Some(&bearer(&fresh))).await.status(), 200);
    let events = rotation_events(&tg);
    assert_eq!(events.len(), 2, "{events:?}");
    let ctx = &events[1]["context"];
    assert_eq!(ctx["kid"], now.kid.as_str());
    assert_eq!(ctx["mode"], "now");
    let removed: BTreeSet<String> = serde_json::from_value(ctx["removed"].clone()).unwrap();
    assert_eq!(removed, BTreeSet::from([old_kid, scheduled.kid]));
}
