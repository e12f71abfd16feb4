//! What a Latchkey token may do and how long it lives, against real peers:
//! scopes narrow git (the real `git` client), documents (Google's Firestore
//! emulator) and the admin API; no token outlives the identity it came
//! from; a token revocation names something that can match.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{GRANT, Opts, TT_ID, TestGateway, bearer, jwt_part};
use latchkey_testkit::OidcProvider;
use latchkey_testkit::firestore::FirestoreEmulator;
use serde_json::{Value, json};

const PROJECT: &str = "latchkey-test";

/// Exchanges an ID token for `sub` in `groups` with extra form fields.
async fn exchange_with(
    tg: &TestGateway,
    op: &OidcProvider,
    sub: &str,
    groups: &[&str],
    audience: &str,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let id = op
        .mint("RS256", sub, None, json!({ "groups": groups }), 300)
        .await;
    let mut form = vec![
        ("grant_type", GRANT),
        ("subject_token", id.as_str()),
        ("subject_token_type", TT_ID),
        ("audience", audience),
    ];
    form.extend_from_slice(extra);
    tg.token_form(&form).await
}

async fn scoped(
    tg: &TestGateway,
    op: &OidcProvider,
    sub: &str,
    groups: &[&str],
    audience: &str,
    scope: &str,
) -> String {
    let (status, body) = exchange_with(tg, op, sub, groups, audience, &[("scope", scope)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], scope);
    body["access_token"].as_str().unwrap().to_owned()
}

/// The real `git` client, with no config of this machine and the token as
/// a bearer header.
fn git(home: &Path, cwd: &Path, token: &str, args: &[&str]) -> Output {
    Command::new("git")
        .current_dir(cwd)
        .arg("-c")
        .arg(format!("http.extraHeader=Authorization: Bearer {token}"))
        .args(args)
        .stdin(Stdio::null())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Alice")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Alice")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The refs the bare upstream repository holds, read by git itself.
fn upstream_refs(tg: &TestGateway) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(tg.data().join("repos/acme/app.git"))
        .args(["for-each-ref", "--format=%(refname)"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// Multi-threaded: `git` runs blocking while the gateway serves it.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_scoped_token_fetches_but_cannot_push() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let read = scoped(&tg, &op, "alice", &["developers"], "git", "read").await;
    let write = scoped(&tg, &op, "alice", &["developers"], "git", "write").await;
    let home = tempfile::tempdir().unwrap();
    let url = tg.url("/git/local/acme/app.git");

    // Clone with the read token: allowed.
    let o = git(
        home.path(),
        home.path(),
        &read,
        &["clone", "--quiet", &url, "app"],
    );
    assert!(o.status.success(), "clone: {}", text(&o));
    let app = home.path().join("app");
    let o = git(
        home.path(),
        &app,
        &read,
        &["commit", "--allow-empty", "-q", "-m", "hello"],
    );
    assert!(o.status.success(), "{}", text(&o));

    // Push with the read token: refused, naming the scope; nothing lands.
    let o = git(
        home.path(),
        &app,
        &read,
        &["push", "origin", "HEAD:refs/heads/feature"],
    );
    assert!(!o.status.success(), "a read token pushed: {}", text(&o));
    let said = text(&o);
    assert!(
        said.contains("scope `write`") && said.contains("refs/heads/feature"),
        "{said}"
    );
    assert_eq!(
        upstream_refs(&tg),
        "",
        "the refused push reached the upstream"
    );

    // The same push with a write token goes through (write covers the
    // ref advertisement the push starts with).
    let o = git(
        home.path(),
        &app,
        &write,
        &["push", "origin", "HEAD:refs/heads/feature"],
    );
    assert!(o.status.success(), "write push: {}", text(&o));
    assert_eq!(upstream_refs(&tg).trim(), "refs/heads/feature");

    // And the read token fetches what was pushed.
    let o = git(home.path(), &app, &read, &["fetch", "--quiet", "origin"]);
    assert!(o.status.success(), "fetch: {}", text(&o));

    // A token whose only scope Latchkey does not enforce covers neither.
    let custom = scoped(&tg, &op, "alice", &["developers"], "git", "deploy").await;
    let resp = tg.git_info_refs(Some(&bearer(&custom))).await;
    let body = resp.text().await.unwrap();
    assert!(body.contains("needs scope `read`"), "{body}");

    // Decisions carry the scopes into the audit trail.
    let denied = tg
        .audit_records()
        .into_iter()
        .find(|r| {
            r.event.action == "git.push"
                && r.event
                    .decision
                    .as_ref()
                    .is_some_and(|d| d.effect == "deny")
        })
        .expect("the refused push is audited");
    assert_eq!(denied.event.context["scopes"], json!(["read"]));
}

#[tokio::test]
async fn a_read_scoped_admin_token_reads_but_cannot_change() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let read = scoped(&tg, &op, "root", &["admins"], "latchkey", "read").await;
    let victim = tg.token_for(&op, "alice", &["developers"], "git").await;

    let resp = tg
        .http
        .get(tg.url("/admin/keys"))
        .header("authorization", bearer(&read))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "admin read with a read token");

    let resp = tg
        .http
        .post(tg.url("/admin/revocations"))
        .header("authorization", bearer(&read))
        .json(&json!({"kind": "subject", "value": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "admin write with a read token");
    let body: Value = resp.json().await.unwrap();
    let desc = body["error_description"].as_str().unwrap();
    assert!(desc.contains("needs scope `write`"), "{desc}");

    let resp = tg
        .http
        .post(tg.url("/oauth2/revoke"))
        .header("authorization", bearer(&read))
        .form(&[("token", victim.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "RFC 7009 revoke with a read token");
    assert_eq!(tg.git_info_refs(Some(&bearer(&victim))).await.status(), 200);

    let resp = tg
        .http
        .post(tg.url("/oauth2/introspect"))
        .header("authorization", bearer(&read))
        .form(&[("token", victim.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "introspection is a read");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_scoped_documents_token_reads_but_cannot_write() {
    let Some(emu) = FirestoreEmulator::start_or_skip().await else {
        return;
    };
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            extra_toml: format!(
                "[firestore]\nemulator = \"{}\"\ndatabases = {{ \"(default)\" = \"dev\" }}\n",
                emu.host_port()
            ),
            ..Opts::default()
        },
    )
    .await;
    let write = scoped(&tg, &op, "alice", &["developers"], "documents", "write").await;
    let read = scoped(&tg, &op, "alice", &["developers"], "documents", "read").await;
    let doc = tg.url(&format!(
        "/v1/projects/{PROJECT}/databases/(default)/documents/flags/checkout"
    ));
    let body = json!({"fields": {"enabled": {"booleanValue": true}}});

    let resp = tg
        .http
        .patch(&doc)
        .header("authorization", bearer(&write))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    let resp = tg
        .http
        .patch(&doc)
        .header("authorization", bearer(&read))
        .json(&json!({"fields": {"enabled": {"booleanValue": false}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "a read token wrote a document");
    let said = resp.text().await.unwrap();
    assert!(said.contains("needs scope `write`"), "{said}");

    let resp = tg
        .http
        .get(&doc)
        .header("authorization", bearer(&read))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["fields"]["enabled"]["booleanValue"], true, "{got}");
}

#[tokio::test]
async fn no_token_outlives_the_identity_it_came_from() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    // A user's ID token with a minute left gives a token of at most a minute.
    let id = op
        .mint(
            "RS256",
            "alice",
            None,
            json!({"groups": ["developers"]}),
            60,
        )
        .await;
    let id_exp = jwt_part(&id, 1)["exp"].as_u64().unwrap();
    let (status, body) = tg
        .token_form(&[
            ("grant_type", GRANT),
            ("subject_token", &id),
            ("subject_token_type", TT_ID),
            ("audience", "git"),
            ("lifetime", "43200"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let exp = jwt_part(token, 1)["exp"].as_u64().unwrap();
    assert!(
        exp <= id_exp,
        "token exp {exp} outlives the ID token's {id_exp}"
    );
    assert!(body["expires_in"].as_u64().unwrap() < 120, "{body}");

    // A long-lived identity still gets no more than the one-hour default.
    let id = op.mint("RS256", "alice", None, json!({}), 86_400).await;
    let (status, body) = tg
        .token_form(&[
            ("grant_type", GRANT),
            ("subject_token", &id),
            ("subject_token_type", TT_ID),
            ("audience", "git"),
            ("lifetime", "43200"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 3600, "{body}");

    // A delegated token dies with the actor's credential too.
    let subject = op.mint("RS256", "alice", None, json!({}), 3000).await;
    let actor = op.mint("RS256", "deploy-bot", None, json!({}), 30).await;
    let actor_exp = jwt_part(&actor, 1)["exp"].as_u64().unwrap();
    let (status, body) = tg
        .token_form(&[
            ("grant_type", GRANT),
            ("subject_token", &subject),
            ("subject_token_type", TT_ID),
            ("actor_token", &actor),
            ("actor_token_type", TT_ID),
            ("audience", "git"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    let exp = jwt_part(body["access_token"].as_str().unwrap(), 1)["exp"]
        .as_u64()
        .unwrap();
    assert!(
        exp <= actor_exp,
        "token exp {exp} outlives the actor's {actor_exp}"
    );
}

async fn post_revocation(tg: &TestGateway, admin: &str, body: Value) -> (u16, Value) {
    let resp = tg
        .http
        .post(tg.url("/admin/revocations"))
        .header("authorization", bearer(admin))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_token_revocation_that_cannot_match_is_refused() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let admin = tg.admin_token(&op).await;

    // A whole token is accepted: its jti is revoked, the token is dead.
    let whole = tg.token_for(&op, "alice", &["developers"], "git").await;
    let jti = jwt_part(&whole, 1)["jti"].as_str().unwrap().to_owned();
    let (status, body) =
        post_revocation(&tg, &admin, json!({"kind": "token", "value": whole})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["jti"], jti.as_str(), "{body}");
    assert_eq!(tg.git_info_refs(Some(&bearer(&whole))).await.status(), 401);

    // A jti is accepted.
    let other = tg.token_for(&op, "bob", &["developers"], "git").await;
    let other_jti = jwt_part(&other, 1)["jti"].as_str().unwrap().to_owned();
    let (status, body) =
        post_revocation(&tg, &admin, json!({"kind": "token", "value": other_jti})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(tg.git_info_refs(Some(&bearer(&other))).await.status(), 401);

    // A made-up value, a token Latchkey did not sign and a tampered token
    // are refused, saying what is expected.
    let forged = {
        let mut parts: Vec<String> = whole.split('.').map(str::to_owned).collect();
        parts[2] = common::b64(&[0u8; 64]);
        parts.join(".")
    };
    for value in ["made-up", "abc", forged.as_str(), "a.b.c"] {
        let (status, body) =
            post_revocation(&tg, &admin, json!({"kind": "token", "value": value})).await;
        assert_eq!(status, 400, "`{value}` was accepted: {body}");
        assert_eq!(body["error"], "invalid_request", "{body}");
        let desc = body["error_description"].as_str().unwrap();
        assert!(
            desc.contains("jti") && desc.contains("latchkey token"),
            "{desc}"
        );
        assert!(
            !desc.contains(&forged),
            "the error echoes the token: {desc}"
        );
    }

    // A token is not a subject, job or pipeline name either.
    for kind in ["subject", "job", "pipeline"] {
        let (status, body) =
            post_revocation(&tg, &admin, json!({"kind": kind, "value": whole})).await;
        assert_eq!(status, 400, "{kind}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("use kind `token`"),
            "{body}"
        );
    }

    // An expired token may still be revoked (its signature is checked).
    let (status, body) = exchange_with(&tg, &op, "carol", &[], "git", &[("lifetime", "60")]).await;
    assert_eq!(status, 200, "{body}");
    let late = body["access_token"].as_str().unwrap().to_owned();
    tg.clock.advance(Duration::from_secs(61));
    let (status, body) =
        post_revocation(&tg, &admin, json!({"kind": "token", "value": late})).await;
    assert_eq!(status, 201, "{body}");

    // No token reached the audit log; the jti did.
    let log = std::fs::read_to_string(tg.audit_dir().join("audit.log")).unwrap();
    for token in [&whole, &late, &forged] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token is in the audit log");
    }
    assert!(log.contains(&jti));
}
