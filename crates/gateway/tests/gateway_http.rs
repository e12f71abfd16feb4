//! The gateway over real HTTP, in front of a real OpenID Connect provider
//! (`oidc-provider`, started by `latchkey-testkit`).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    ALGS, GRANT, Opts, TT_ACCESS, TT_ID, TestGateway, basic, bearer, jwks, jwt_part, now, rsa_key,
    sign_rs256, unsigned, verify_with_jwks,
};
use latchkey_audit::AuditRecord;
use latchkey_testkit::{OidcProvider, client_id};
use serde_json::{Value, json};

/// Token-endpoint form fields.
type Form = Vec<(&'static str, String)>;

/// The records appended after `before`.
fn new_records(tg: &TestGateway, before: usize) -> Vec<AuditRecord> {
    tg.audit_records().into_iter().skip(before).collect()
}

/// What one audit record says in words: an outcome's status and detail or a
/// decision's effect and reason.
fn record_text(r: &AuditRecord) -> String {
    let e = &r.event;
    match (&e.outcome, &e.decision) {
        (Some(o), _) => format!("{} {}", o.status, o.detail.clone().unwrap_or_default()),
        (None, Some(d)) => format!("{} {}", d.effect, d.reason),
        (None, None) => String::new(),
    }
}

#[tokio::test]
async fn exchange_every_algorithm_and_verify_the_minted_token() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let published = jwks(&tg).await;
    let kids: BTreeSet<String> = published["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kids.len(), 1, "{published}");

    let meta: Value = tg
        .http
        .get(tg.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], tg.base);
    assert_eq!(meta["token_endpoint"], tg.url("/oauth2/token"));

    for alg in ALGS {
        let id = op
            .mint(alg, "alice", None, json!({"groups": ["developers"]}), 300)
            .await;
        let (status, body) = tg
            .token_form(&[
                ("grant_type", GRANT),
                ("subject_token", &id),
                ("subject_token_type", TT_ID),
                ("audience", "git"),
                ("scope", "read write"),
            ])
            .await;
        assert_eq!(status, 200, "{alg}: {body}");
        assert_eq!(body["issued_token_type"], TT_ACCESS, "{alg}");
        assert_eq!(body["token_type"], "Bearer", "{alg}");
        let expires_in = body["expires_in"].as_u64().unwrap();
        assert!(expires_in > 0 && expires_in <= 900, "{alg}: {expires_in}");
        assert_eq!(body["scope"], "read write");

        let token = body["access_token"].as_str().unwrap();
        let header = jwt_part(token, 0);
        assert_eq!(header["typ"], "at+jwt", "{alg}");
        assert_eq!(header["alg"], "EdDSA", "{alg}");
        assert!(kids.contains(header["kid"].as_str().unwrap()), "{alg}");

        let claims = verify_with_jwks(token, &published, &tg.base, "git");
        assert_eq!(claims["iss"], tg.base);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["aud"], "git");
        assert_eq!(claims["groups"], json!(["developers"]));
        assert_eq!(claims["lk_kind"], "user");
        assert_eq!(claims["lk_src"], "test-idp");
        assert_eq!(claims["scope"], "read write");
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert!(iat.abs_diff(now()) < 60);
        assert_eq!(exp - iat, expires_in);
        assert_eq!(
            common::b64(&[0; 16]).len(),
            claims["jti"].as_str().unwrap().len(),
            "jti is 128 random bits"
        );
        assert!(claims.get("act").is_none());
    }

    // A requested lifetime is honoured, and capped at the maximum.
    let id = op.mint("ES256", "alice", None, json!({}), 300).await;
    let (status, body) = tg
        .token_form(&[
            ("grant_type", GRANT),
            ("subject_token", &id),
            ("subject_token_type", TT_ID),
            ("audience", "documents"),
            ("lifetime", "120"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 120);
    assert!(body.get("scope").is_none());

    // Each exchange is audited: an allow decision and a `minted` outcome.
    let minted: Vec<_> = tg
        .audit_records()
        .into_iter()
        .filter(|r| {
            r.event
                .outcome
                .as_ref()
                .is_some_and(|o| o.status == "minted")
        })
        .collect();
    assert_eq!(minted.len(), ALGS.len() + 1);
}

#[tokio::test]
async fn every_rejection_is_clear_distinct_and_audited() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let now = now();
    let good = op.mint("RS256", "alice", None, json!({}), 300).await;
    let (kid, key) = rsa_key(&op.private_jwks().await);
    let claims = |iss: &str, aud: &str| json!({"iss": iss, "sub": "alice", "aud": aud, "exp": now + 300, "iat": now});
    let rs_claims = claims(op.issuer(), &client_id("RS256"));

    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &rs_claims,
        &jsonwebtoken::EncodingKey::from_secret(b"a shared secret"),
    )
    .unwrap();
    let cases: Vec<(&str, Form, &str, &str)> = {
        let base = |tok: &str| -> Form {
            vec![
                ("grant_type", GRANT.to_owned()),
                ("subject_token", tok.to_owned()),
                ("subject_token_type", TT_ID.to_owned()),
                ("audience", "git".to_owned()),
            ]
        };
        let without = |field: &str| -> Form {
            base(&good)
                .into_iter()
                .filter(|(k, _)| *k != field)
                .collect()
        };
        let with = |field: &'static str, value: &str| -> Form {
            let mut f = without(field);
            f.push((field, value.to_owned()));
            f
        };
        vec![
            (
                "missing grant_type",
                without("grant_type"),
                "invalid_request",
                "`grant_type` is required",
            ),
            (
                "wrong grant_type",
                with("grant_type", "client_credentials"),
                "unsupported_grant_type",
                "grant type `client_credentials` is not supported",
            ),
            (
                "missing subject_token",
                without("subject_token"),
                "invalid_request",
                "`subject_token` is required",
            ),
            (
                "bad subject_token_type",
                with("subject_token_type", "urn:example:saml"),
                "invalid_request",
                "`subject_token_type` `urn:example:saml` is not supported",
            ),
            (
                "missing audience",
                without("audience"),
                "invalid_request",
                "`audience` is required",
            ),
            (
                "unsupported requested_token_type",
                with("requested_token_type", TT_ID),
                "invalid_request",
                "`requested_token_type` `urn:ietf:params:oauth:token-type:id_token` is not supported",
            ),
            (
                "unknown audience",
                with("audience", "payroll"),
                "invalid_target",
                "audience `payroll` is not configured",
            ),
            (
                "alg none",
                base(&unsigned(&json!({"alg": "none"}), &rs_claims, b"")),
                "invalid_grant",
                "algorithm `none` is not allowed",
            ),
            (
                "HS256",
                base(&hs256),
                "invalid_grant",
                "algorithm `HS256` is not allowed",
            ),
            (
                "alg/key mismatch",
                base(&sign_rs256(
                    &key,
                    &json!({"alg": "ES256", "kid": kid}),
                    &rs_claims,
                )),
                "invalid_grant",
                "does not match the issuer's key of type `RSA`",
            ),
            (
                "untrusted iss",
                base(&sign_rs256(
                    &key,
                    &json!({"alg": "RS256", "kid": kid}),
                    &claims("https://evil.example", &client_id("RS256")),
                )),
                "invalid_grant",
                "issuer `https://evil.example` is not trusted",
            ),
            (
                "iss with a trailing slash",
                base(&sign_rs256(
                    &key,
                    &json!({"alg": "RS256", "kid": kid}),
                    &claims(&format!("{}/", op.issuer()), &client_id("RS256")),
                )),
                "invalid_grant",
                "must match `iss` exactly",
            ),
            (
                "wrong aud",
                base(&sign_rs256(
                    &key,
                    &json!({"alg": "RS256", "kid": kid}),
                    &claims(op.issuer(), "someone-else"),
                )),
                "invalid_grant",
                "token audience `someone-else` is not accepted",
            ),
            (
                "expired",
                base(&op.mint("RS256", "alice", None, json!({}), -120).await),
                "invalid_grant",
                "token has expired",
            ),
            (
                "not yet valid",
                base(
                    &op.mint("RS256", "alice", None, json!({"nbf": now + 600}), 1200)
                        .await,
                ),
                "invalid_grant",
                "token is not valid yet",
            ),
            (
                "oversized",
                base(&"a".repeat(17 * 1024)),
                "invalid_grant",
                "token is too large",
            ),
            (
                "tampered signature",
                base(&{
                    let mut t = good.clone();
                    let last = t.pop().unwrap();
                    t.push(if last == 'A' { 'B' } else { 'A' });
                    t
                }),
                "invalid_grant",
                "token signature is invalid",
            ),
            (
                "denied by policy",
                with("audience", "latchkey"),
                "invalid_target",
                "(default deny)",
            ),
        ]
    };

    let mut descriptions = BTreeSet::new();
    for (name, form, code, text) in cases {
        let before = tg.audit_len();
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = tg.token_form(&form).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["error"], code, "{name}: {body}");
        let desc = body["error_description"].as_str().unwrap();
        assert!(desc.contains(text), "{name}: `{desc}` lacks `{text}`");
        assert!(!desc.contains(&good), "{name}: the token is echoed");
        assert!(
            descriptions.insert(desc.to_owned()),
            "{name}: `{desc}` repeats"
        );
        let records = new_records(&tg, before);
        assert!(!records.is_empty(), "{name}: not audited");
        let last = records.last().unwrap();
        assert_eq!(last.event.action, "token.mint", "{name}");
        let said = record_text(last);
        assert!(
            said.starts_with("refused:") || said.starts_with("deny"),
            "{name}: {said}"
        );
        // The audit record says what the caller was told (minus the prefix).
        let core = desc.strip_prefix("subject_token: ").unwrap_or(desc);
        assert!(said.contains(core), "{name}: audit `{said}` vs `{desc}`");
    }

    // The denied mint names the audience and the default deny.
    let (_, body) = tg.exchange(&good, "latchkey").await;
    let desc = body["error_description"].as_str().unwrap();
    assert!(
        desc.contains("token.mint") && desc.contains("latchkey"),
        "{desc}"
    );
}

#[tokio::test]
async fn bound_claims_are_enforced_at_the_token_endpoint() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            issuer_extra: "bound_claims = { tenant = [\"acme\", \"acme-*\"] }".into(),
            ..Opts::default()
        },
    )
    .await;
    let ok = op
        .mint("RS256", "alice", None, json!({"tenant": "acme-eu"}), 300)
        .await;
    tg.exchange_ok(&ok, "git").await;

    let before = tg.audit_len();
    let other = op
        .mint("RS256", "alice", None, json!({"tenant": "globex"}), 300)
        .await;
    let (status, body) = tg.exchange(&other, "git").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    let desc = body["error_description"].as_str().unwrap();
    assert!(
        desc.contains("claim `tenant` does not match the issuer's `bound_claims`"),
        "{desc}"
    );
    let records = new_records(&tg, before);
    assert_eq!(records.len(), 1);
    assert!(record_text(&records[0]).starts_with("refused:bound_claim_mismatch"));

    let missing = op.mint("RS256", "alice", None, json!({}), 300).await;
    let (status, body) = tg.exchange(&missing, "git").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("tenant"),
        "{body}"
    );
}

#[tokio::test]
async fn actor_token_becomes_the_act_claim() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let subject = op
        .mint(
            "RS256",
            "alice",
            None,
            json!({"groups": ["developers"]}),
            300,
        )
        .await;
    let actor = op.mint("ES256", "deploy-bot", None, json!({}), 300).await;
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
    let token = body["access_token"].as_str().unwrap();
    let claims = verify_with_jwks(token, &jwks(&tg).await, &tg.base, "git");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["act"]["sub"], "deploy-bot");
    assert_eq!(claims["act"]["kind"], "user");
    assert_eq!(claims["act"]["iss"], "test-idp");

    // The mint is audited with the actor.
    let minted = tg
        .audit_records()
        .into_iter()
        .rfind(|r| {
            r.event
                .outcome
                .as_ref()
                .is_some_and(|o| o.status == "minted")
        })
        .unwrap();
    assert_eq!(minted.event.actor.as_ref().unwrap().sub, "deploy-bot");

    // A bad actor token is refused and says which token was wrong.
    let expired_actor = op.mint("ES256", "deploy-bot", None, json!({}), -120).await;
    let (status, body) = tg
        .token_form(&[
            ("grant_type", GRANT),
            ("subject_token", &subject),
            ("subject_token_type", TT_ID),
            ("actor_token", &expired_actor),
            ("actor_token_type", TT_ID),
            ("audience", "git"),
        ])
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("actor_token: token has expired"),
        "{body}"
    );
}

#[tokio::test]
async fn revocation_freeze_and_introspection() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let admin = tg.admin_token(&op).await;
    let git = tg.token_for(&op, "alice", &["developers"], "git").await;

    let introspect = |token: String| {
        let tg = &tg;
        let admin = admin.clone();
        async move {
            let resp = tg
                .http
                .post(tg.url("/oauth2/introspect"))
                .header("authorization", bearer(&admin))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    let live = introspect(git.clone()).await;
    assert_eq!(live["active"], true, "{live}");
    assert_eq!(live["sub"], "alice");
    assert_eq!(live["aud"], "git");
    assert_eq!(
        introspect("not-a-token".into()).await,
        json!({"active": false})
    );

    // Introspection and revocation need an admin token for `latchkey`.
    let resp = tg
        .http
        .post(tg.url("/oauth2/revoke"))
        .header("authorization", bearer(&git))
        .form(&[("token", git.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("audience `latchkey`"),
        "{body}"
    );

    assert_eq!(tg.git_info_refs(Some(&basic(&git))).await.status(), 200);
    let resp = tg
        .http
        .post(tg.url("/oauth2/revoke"))
        .header("authorization", bearer(&admin))
        .form(&[("token", git.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = tg.git_info_refs(Some(&basic(&git))).await;
    assert_eq!(resp.status(), 401);
    let text = resp.text().await.unwrap();
    assert!(text.contains("revoked"), "{text}");
    assert_eq!(introspect(git.clone()).await["active"], false);
    // Revoking garbage is not an error (RFC 7009 §2.2).
    let resp = tg
        .http
        .post(tg.url("/oauth2/revoke"))
        .header("authorization", bearer(&admin))
        .form(&[("token", "garbage")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Revoking a subject kills what it holds; tokens issued later work.
    let carol = tg.token_for(&op, "carol", &["developers"], "git").await;
    let resp = tg
        .http
        .post(tg.url("/admin/revocations"))
        .header("authorization", bearer(&admin))
        .json(&json!({"kind": "subject", "value": "carol", "reason": "laptop stolen"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = tg.git_info_refs(Some(&bearer(&carol))).await;
    assert_eq!(resp.status(), 401);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("revoked") && text.contains("laptop stolen"),
        "{text}"
    );
    tg.clock.advance(Duration::from_secs(1));
    let carol2 = tg.token_for(&op, "carol", &["developers"], "git").await;
    assert_eq!(tg.git_info_refs(Some(&bearer(&carol2))).await.status(), 200);

    // A freeze: no new tokens, and live ones die, until it is lifted.
    let bob = tg.token_for(&op, "bob", &["developers"], "git").await;
    let resp = tg
        .http
        .post(tg.url("/admin/revocations"))
        .header("authorization", bearer(&admin))
        .json(&json!({"kind": "subject", "value": "bob", "mode": "freeze"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "freeze");
    assert_eq!(tg.git_info_refs(Some(&bearer(&bob))).await.status(), 401);
    let bob_id = op
        .mint("RS256", "bob", None, json!({"groups": ["developers"]}), 300)
        .await;
    let before = tg.audit_len();
    let (status, body) = tg.exchange(&bob_id, "git").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    let desc = body["error_description"].as_str().unwrap();
    assert!(
        desc.contains("subject `bob`") && desc.contains("is frozen"),
        "{desc}"
    );
    assert!(
        new_records(&tg, before)
            .iter()
            .any(|r| record_text(r).starts_with("refused:mint_refused")),
        "the frozen mint is audited"
    );

    let resp = tg
        .http
        .delete(tg.url("/admin/revocations?kind=subject&value=bob"))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["lifted"], true);
    tg.exchange_ok(&bob_id, "git").await;

    // A non-admin cannot revoke.
    let not_admin = tg.token_for(&op, "dave", &[], "git").await;
    let resp = tg
        .http
        .post(tg.url("/admin/revocations"))
        .header("authorization", bearer(&not_admin))
        .json(&json!({"kind": "subject", "value": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn issuer_down_fails_closed_and_is_audited() {
    let mut op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let id = op.mint("RS256", "alice", None, json!({}), 300).await;
    op.stop().await;
    let before = tg.audit_len();
    let (status, body) = tg.exchange(&id, "git").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    let desc = body["error_description"].as_str().unwrap();
    assert!(desc.contains("issuer `test-idp` is unavailable"), "{desc}");
    let records = new_records(&tg, before);
    assert_eq!(records.len(), 1);
    assert!(
        record_text(&records[0]).starts_with("refused:issuer_unavailable"),
        "{}",
        record_text(&records[0])
    );
}

#[tokio::test]
async fn policy_reload_keeps_the_old_set_on_error() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let id = op.mint("RS256", "alice", None, json!({}), 300).await;
    tg.exchange_ok(&id, "documents").await;

    let dir = tg.data().join("policies");
    std::fs::write(dir.join("90-broken.cedar"), "permit (principal, action").unwrap();
    let before = tg.audit_len();
    assert!(tg.gw.reload_policies().await.is_err());
    let records = new_records(&tg, before);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].event.action, "policy.reload");
    assert!(record_text(&records[0]).starts_with("reload_failed"));
    // The old set still decides.
    tg.exchange_ok(&id, "documents").await;

    std::fs::remove_file(dir.join("90-broken.cedar")).unwrap();
    std::fs::write(
        dir.join("90-no-documents.cedar"),
        "@id(\"no-documents\")\nforbid (principal, action == Latchkey::Action::\"token.mint\", \
         resource == Latchkey::Audience::\"documents\");\n",
    )
    .unwrap();
    tg.gw.reload_policies().await.unwrap();
    let (status, body) = tg.exchange(&id, "documents").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_target");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("no-documents"),
        "{body}"
    );
    tg.exchange_ok(&id, "git").await;
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid() {
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
    let info = tg
        .gw
        .rotate_keys(latchkey_tokens::RotationMode::Scheduled)
        .await
        .unwrap();
    // The new key signs only after `publish_ahead`.
    let before = tg.token_for(&op, "alice", &["developers"], "git").await;
    assert_eq!(jwt_part(&before, 0)["kid"], old_kid.as_str());
    tg.clock.advance(std::time::Duration::from_secs(60));
    assert_ne!(info.kid, old_kid);
    let new = tg.token_for(&op, "alice", &["developers"], "git").await;
    assert_eq!(jwt_part(&new, 0)["kid"], info.kid.as_str());

    let published = jwks(&tg).await;
    let kids: BTreeSet<&str> = published["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, BTreeSet::from([old_kid.as_str(), info.kid.as_str()]));
    verify_with_jwks(&old, &published, &tg.base, "git");
    verify_with_jwks(&new, &published, &tg.base, "git");
    assert_eq!(tg.git_info_refs(Some(&bearer(&old))).await.status(), 200);
    assert_eq!(tg.git_info_refs(Some(&bearer(&new))).await.status(), 200);
}

#[tokio::test]
async fn git_routes_authenticate_and_the_audit_log_verifies() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;

    let resp = tg.git_info_refs(None).await;
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("authentication required")
    );

    let git = tg.token_for(&op, "alice", &["developers"], "git").await;
    for auth in [basic(&git), bearer(&git)] {
        let resp = tg.git_info_refs(Some(&auth)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "application/x-git-upload-pack-advertisement"
        );
        assert!(resp.headers().contains_key("x-request-id"));
        let body = resp.bytes().await.unwrap();
        assert!(
            body.starts_with(b"001e# service=git-upload-pack\n"),
            "{body:?}"
        );
    }

    // A token for another audience is refused and says so.
    let docs = tg
        .token_for(&op, "alice", &["developers"], "documents")
        .await;
    let resp = tg.git_info_refs(Some(&basic(&docs))).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("audience `documents`") && text.contains("`git`"),
        "{text}"
    );

    // A user outside `developers` is authenticated but denied by policy;
    // the refusal is an ERR packet so that `git` shows it to the user.
    let outsider = tg.token_for(&op, "eve", &[], "git").await;
    let resp = tg.git_info_refs(Some(&bearer(&outsider))).await;
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(
            "ERR latchkey: no policy permits `git.read` on Repository::\"local/acme/app\""
        ),
        "{text}"
    );

    // Revoked and expired tokens are told apart.
    let admin = tg.admin_token(&op).await;
    let doomed = tg.token_for(&op, "alice", &["developers"], "git").await;
    let resp = tg
        .http
        .post(tg.url("/oauth2/revoke"))
        .header("authorization", bearer(&admin))
        .form(&[("token", doomed.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let revoked = tg
        .git_info_refs(Some(&basic(&doomed)))
        .await
        .text()
        .await
        .unwrap();
    tg.clock.advance(Duration::from_secs(16 * 60));
    let resp = tg.git_info_refs(Some(&basic(&git))).await;
    assert_eq!(resp.status(), 401);
    let expired = resp.text().await.unwrap();
    assert!(
        revoked.contains("revoked") && !revoked.contains("expired"),
        "{revoked}"
    );
    assert!(
        expired.contains("expired") && !expired.contains("revoked"),
        "{expired}"
    );
    assert!(!expired.contains(&git) && !revoked.contains(&doomed));

    // Refused credentials are audited.
    let refusals: Vec<String> = tg
        .audit_records()
        .iter()
        .filter(|r| r.event.action == "git.authenticate")
        .map(record_text)
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:?}");

    // The admin audit query sees the same trail (the index is asynchronous).
    tg.clock.set(now());
    let admin = tg.admin_token(&op).await;
    let mut events = Vec::new();
    for _ in 0..50 {
        let resp = tg
            .http
            .get(tg.url("/admin/audit?action=git.read&decision=deny"))
            .header("authorization", bearer(&admin))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        events = body["events"].as_array().unwrap().clone();
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["principal"]["id"], "eve");
    assert!(events[0]["seq"].as_u64().unwrap() > 0);

    // After shutdown the whole trail verifies with the stored public key.
    let written = tg.audit_len() as u64;
    tg.gw.shutdown().await;
    let store = latchkey_store::SqliteStore::open(&tg.data().join("latchkey.db"))
        .await
        .unwrap();
    let public = latchkey_gateway::audit_public_key(&store)
        .await
        .unwrap()
        .unwrap();
    let report = latchkey_audit::verify(&tg.audit_dir(), &[("audit-1".into(), public)]).unwrap();
    assert_eq!(report.records, written);
    assert_eq!(report.last_seq, written);
    assert!(report.checkpoints >= 1, "{report:?}");
    assert!(!report.partial_tail);
}

#[tokio::test]
async fn unreadable_token_requests_get_oauth_errors() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let id = op.mint("RS256", "alice", None, json!({}), 300).await;
    let big = "a".repeat(70 * 1024);
    let requests = [
        (
            "lifetime is not a number",
            tg.http.post(tg.url("/oauth2/token")).form(&[
                ("grant_type", GRANT),
                ("subject_token", id.as_str()),
                ("subject_token_type", TT_ID),
                ("audience", "git"),
                ("lifetime", "ten minutes"),
            ]),
            400,
        ),
        (
            "JSON instead of a form",
            tg.http
                .post(tg.url("/oauth2/token"))
                .json(&json!({"grant_type": GRANT})),
            415,
        ),
        (
            "body over the limit",
            tg.http
                .post(tg.url("/oauth2/token"))
                .form(&[("grant_type", GRANT), ("subject_token", big.as_str())]),
            413,
        ),
    ];
    for (name, req, status) in requests {
        let before = tg.audit_len();
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{name}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{name}: {body}");
        let desc = body["error_description"].as_str().unwrap();
        assert!(
            desc.contains("not a valid token-exchange form"),
            "{name}: {desc}"
        );
        let records = new_records(&tg, before);
        assert_eq!(records.len(), 1, "{name}: audited once");
        assert!(record_text(&records[0]).starts_with("refused:invalid_request"));
    }
}

/// `serve` with the development identity provider allowed says so loudly:
/// at start in the log, and in `/admin/health` for as long as it runs.
#[tokio::test]
async fn health_warns_while_the_dev_issuer_runs_in_serve() {
    let op = OidcProvider::start().await;
    let plain = TestGateway::start(&op, Opts::default()).await;
    let health: Value = plain
        .http
        .get(plain.url("/admin/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert!(health.get("warnings").is_none(), "{health}");

    let dev = TestGateway::start(
        &op,
        Opts {
            extra_toml: "[dev_issuer]\nenabled = true\nallow_in_serve = true\n".into(),
            ..Opts::default()
        },
    )
    .await;
    let resp = dev.http.get(dev.url("/admin/health")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let health: Value = resp.json().await.unwrap();
    let warnings = health["warnings"].as_array().expect("warnings");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("development identity provider is enabled in `serve`"),
        "{health}"
    );
    // Readiness shows it as a component with status `warning`; a warning
    // alone does not take the gateway out of rotation.
    let resp = dev.http.get(dev.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ready: Value = resp.json().await.unwrap();
    let dev_issuer = ready["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "dev issuer")
        .unwrap_or_else(|| panic!("{ready}"));
    assert_eq!(dev_issuer["status"], "warning", "{ready}");
}
