//! Invariant 1 (fail closed) and 6 (nothing acknowledged is lost): when the
//! audit log cannot be written, Latchkey refuses instead of acting unrecorded.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Opts, TestGateway, bearer};
use latchkey_testkit::OidcProvider;

#[tokio::test]
async fn an_unwritable_audit_log_refuses_token_exchange_and_git() {
    // Exclusive use of /dev/full: every log symlinked to it is one locked inode.
    let Some(_dev_full) = latchkey_testkit::DevFull::acquire() else {
        return;
    };
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            audit_on_full_device: true,
            ..Opts::default()
        },
    )
    .await;
    let id = op
        .mint(
            "RS256",
            "alice",
            None,
            serde_json::json!({"groups": ["developers"]}),
            300,
        )
        .await;

    // The exchange is decided, but the decision cannot be recorded: no token.
    let (status, body) = tg.exchange(&id, "git").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("audit log cannot be written"),
        "{body}"
    );
    assert!(body.get("access_token").is_none(), "{body}");

    // A refused credential on a Git route must be recorded too: refused, 503.
    let resp = tg.git_info_refs(Some(&bearer("not-a-token"))).await;
    assert_eq!(resp.status().as_u16(), 503);

    // Health says so, so a load balancer takes the node out.
    let health = tg.http.get(tg.url("/admin/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 503);
}
