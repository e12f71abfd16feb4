//! No secret reaches the audit log (issue 11, point 2): a whole token sent
//! wherever caller input is recorded is written only as its `jti` or a
//! SHA-256, never verbatim. Each case sends a real Latchkey token (the
//! credential an attacker reading the log would want) through one path.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{GRANT, Opts, TT_ID, TestGateway, basic, bearer, jwt_part, unsigned};
use latchkey_testkit::OidcProvider;
use serde_json::json;

/// The part of a token that makes it usable: its signature.
fn signature(token: &str) -> &str {
    token.rsplit('.').next().unwrap()
}

#[tokio::test]
async fn regression_tokens_sent_as_caller_input_are_never_recorded() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let admin = tg.admin_token(&op).await;
    let secret = tg.token_for(&op, "alice", &["developers"], "git").await;
    let jti = jwt_part(&secret, 1)["jti"].as_str().unwrap().to_owned();
    let id = op
        .mint(
            "RS256",
            "bob",
            None,
            json!({ "groups": ["developers"] }),
            300,
        )
        .await;

    // 1. A whole token as a revocation value, and in its reason.
    let _ = tg
        .http
        .post(tg.url("/admin/revocations"))
        .header("authorization", bearer(&admin))
        .json(&json!({
            "kind": "token",
            "value": secret,
            "reason": format!("leaked in chat: {secret}"),
        }))
        .send()
        .await
        .unwrap();
    // 2. ...and when lifting it.
    let _ = tg
        .http
        .delete(tg.url(&format!(
            "/admin/revocations?kind=token&value={secret}&mode=freeze"
        )))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap();
    // 3. A token with a broken signature as the credential (Bearer and Basic).
    let broken = format!("{}x", &secret[..secret.len() - 1]);
    let _ = tg.git_info_refs(Some(&bearer(&broken))).await;
    let _ = tg.git_info_refs(Some(&basic(&broken))).await;
    // 4. A token inside a claim the refusal quotes (the issuer).
    let forged = unsigned(
        &json!({"alg": "RS256", "kid": "x"}),
        &json!({"iss": secret, "sub": "mallory", "aud": "latchkey", "exp": 4_000_000_000u64}),
        b"sig",
    );
    let _ = tg
        .token_form(&[
            ("grant_type", GRANT),
            ("subject_token", &forged),
            ("subject_token_type", TT_ID),
            ("audience", "git"),
        ])
        .await;
    // 5. As the audience and scope asked for at the token endpoint.
    let _ = tg
        .token_form(&[
            ("grant_type", GRANT),
            ("subject_token", &id),
            ("subject_token_type", TT_ID),
            ("audience", &secret),
        ])
        .await;
    let _ = tg
        .token_form(&[
            ("grant_type", GRANT),
            ("subject_token", &id),
            ("subject_token_type", TT_ID),
            ("audience", "git"),
            ("scope", &secret),
        ])
        .await;
    // 6. In a Git path, with a good credential.
    let git = tg.token_for(&op, "bob", &["developers"], "git").await;
    let _ = tg
        .http
        .get(tg.url(&format!(
            "/git/local/acme/{secret}.git/info/refs?service=git-upload-pack"
        )))
        .header("authorization", bearer(&git))
        .send()
        .await
        .unwrap();
    // 7. As the audit query's filter.
    let _ = tg
        .http
        .get(tg.url(&format!("/admin/audit?principal={secret}")))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap();

    tg.gw.shutdown().await;
    let log = std::fs::read_to_string(tg.audit_dir().join("audit.log")).unwrap();
    for (what, token) in [("the token", &secret), ("the broken token", &broken)] {
        assert!(
            !log.contains(signature(token)),
            "{what} was recorded verbatim:\n{log}"
        );
    }
    assert!(
        !log.contains(&forged),
        "the forged token was recorded:\n{log}"
    );
    // The revocation is still findable by what identifies the token.
    assert!(log.contains(&format!("jti:{jti}")), "{log}");
}
