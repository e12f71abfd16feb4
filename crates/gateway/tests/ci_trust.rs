//! CI workload identity end to end: Buildkite- and GitHub-shaped tokens from
//! a real OIDC provider (`oidc-provider`), exchanged at the token endpoint
//! under `[[trust]]` rules and Cedar, then revoked and frozen by job and
//! pipeline through the admin API.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::*;
use latchkey_gateway::config::Config;
use latchkey_testkit::{OidcProvider, client_id};
use serde_json::{Value, json};

/// A gateway whose users (and admin) come from `users`, with a Buildkite
/// preset issuer and a GitHub Actions preset issuer at the `ci` providers.
async fn gateway(users: &OidcProvider, bk: &OidcProvider, gh: &OidcProvider) -> TestGateway {
    let extra = format!(
        r#"
[[issuers]]
name = "buildkite"
preset = "buildkite"
issuer = "{bk}"
audiences = ["{aud}"]
bound_claims = {{ organization_slug = "acme" }}

[[issuers]]
name = "github"
preset = "github-actions"
issuer = "{gh}"
audiences = ["{aud}"]
bound_claims = {{ repository_owner = "acme" }}

[[trust]]
issuer = "buildkite"
claims = {{ pipeline_slug = "payments", build_branch = ["main", "release/*"] }}
audiences = ["git", "documents"]
scopes = ["read", "write"]
max_lifetime = "10m"

[[trust]]
issuer = "github"
claims = {{ repository = "acme/app", ref = "refs/heads/main" }}
audiences = ["git"]
"#,
        bk = bk.issuer(),
        gh = gh.issuer(),
        aud = client_id("RS256"),
    );
    TestGateway::start(
        users,
        Opts {
            issuer_extra: extra,
            ..Opts::default()
        },
    )
    .await
}

const BK_SUB: &str =
    "organization:acme:pipeline:payments:ref:refs/heads/main:commit:9f31820:step:deploy";

fn bk_claims(pipeline: &str, branch: &str, job: &str) -> Value {
    json!({
        "organization_slug": "acme",
        "pipeline_slug": pipeline,
        "build_number": 42,
        "build_branch": branch,
        "build_commit": "9f3182061f1e2cca4702c368cbc039b7dc9d4485",
        "step_key": "deploy",
        "job_id": job,
        "agent_id": "0184990a-4782-42b5-afc1-16715b10b8ff",
    })
}

async fn bk_token(bk: &OidcProvider, pipeline: &str, branch: &str, job: &str, ttl: i64) -> String {
    bk.mint("RS256", BK_SUB, None, bk_claims(pipeline, branch, job), ttl)
        .await
}

async fn exchange(
    tg: &TestGateway,
    token: &str,
    audience: &str,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", GRANT),
        ("subject_token", token),
        ("subject_token_type", TT_ID),
        ("audience", audience),
    ];
    form.extend_from_slice(extra);
    tg.token_form(&form).await
}

async fn introspect_active(tg: &TestGateway, admin: &str, token: &str) -> bool {
    let resp = tg
        .http
        .post(tg.url("/oauth2/introspect"))
        .header("authorization", bearer(admin))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["active"] == true
}

async fn revoke(tg: &TestGateway, admin: &str, body: Value) {
    let resp = tg
        .http
        .post(tg.url("/admin/revocations"))
        .header("authorization", bearer(admin))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
}

fn audited(tg: &TestGateway, needle: &str) -> bool {
    tg.audit_records()
        .iter()
        .any(|r| serde_json::to_string(r).unwrap().contains(needle))
}

#[tokio::test]
async fn buildkite_jobs_mint_only_what_trust_rules_allow() {
    let users = OidcProvider::start().await;
    let bk = OidcProvider::start().await;
    let gh = OidcProvider::start().await;
    let tg = gateway(&users, &bk, &gh).await;

    // Allowed: the pipeline and branch of the rule, a scope it lists.
    let ci = bk_token(&bk, "payments", "main", "job-1", 300).await;
    let (status, body) = exchange(&tg, &ci, "git", &[("scope", "read")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "read");
    let token = body["access_token"].as_str().unwrap();
    let claims = jwt_part(token, 1);
    assert_eq!(claims["lk_kind"], "workload");
    assert_eq!(claims["lk_ci"]["system"], "buildkite");
    assert_eq!(claims["lk_ci"]["pipeline"], "payments");
    assert_eq!(claims["lk_ci"]["job_id"], "job-1");
    assert_eq!(
        claims["lk_ci"]["commit"],
        "9f3182061f1e2cca4702c368cbc039b7dc9d4485"
    );
    assert_eq!(claims["lk_ci"]["branch"], "main");
    assert_eq!(claims["lk_ci"]["step"], "deploy");

    // No scope asked: all the rule allows. A branch matching the glob.
    let ci = bk_token(&bk, "payments", "release/2.1", "job-2", 300).await;
    let (status, body) = exchange(&tg, &ci, "git", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "read write");

    // Wrong pipeline, wrong branch: named, refused, audited.
    let ci = bk_token(&bk, "marketing", "main", "job-3", 300).await;
    let (status, body) = exchange(&tg, &ci, "git", &[]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(
        body["error_description"],
        "no trust rule for issuer `buildkite` matches this token: `pipeline_slug` did not match; \
         check the job's pipeline and branch against `[[trust]]`"
    );
    let ci = bk_token(&bk, "payments", "feature/x", "job-4", 300).await;
    let (status, body) = exchange(&tg, &ci, "git", &[]).await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("`build_branch` did not match"),
        "{body}"
    );
    assert!(audited(&tg, "trust_refused"));

    // An audience the rule does not list.
    let ci = bk_token(&bk, "payments", "main", "job-5", 300).await;
    let (status, body) = exchange(&tg, &ci, "latchkey", &[]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_target");
    assert_eq!(
        body["error_description"],
        "no trust rule lets issuer `buildkite` claims mint for audience `latchkey`"
    );
    // The rule allows `documents`, but Cedar (starter policies) does not:
    // both must agree.
    let (status, body) = exchange(&tg, &ci, "documents", &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_target");
    assert!(
        !body["error_description"]
            .as_str()
            .unwrap()
            .contains("trust rule")
    );

    // A scope the rule does not allow.
    let (status, body) = exchange(&tg, &ci, "git", &[("scope", "read admin")]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_scope");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("`admin`"),
        "{body}"
    );

    // Lifetime: capped by the rule's max (10m) ...
    let long = bk_token(&bk, "payments", "main", "job-7", 3600).await;
    let (status, body) = exchange(&tg, &long, "git", &[("lifetime", "3600")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 600);
    // ... and by the CI token's own expiry.
    let short = bk_token(&bk, "payments", "main", "job-6", 120).await;
    let (status, body) = exchange(&tg, &short, "git", &[]).await;
    assert_eq!(status, 200, "{body}");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((90..=125).contains(&expires_in), "{expires_in}");
}

#[tokio::test]
async fn revoking_a_job_or_pipeline_kills_its_tokens_and_a_freeze_refuses_new_ones() {
    let users = OidcProvider::start().await;
    let bk = OidcProvider::start().await;
    let gh = OidcProvider::start().await;
    let tg = gateway(&users, &bk, &gh).await;
    let admin = tg.admin_token(&users).await;

    let job1 = tg
        .exchange_ok(
            &bk_token(&bk, "payments", "main", "job-1", 300).await,
            "git",
        )
        .await;
    let job2 = tg
        .exchange_ok(
            &bk_token(&bk, "payments", "main", "job-2", 300).await,
            "git",
        )
        .await;
    assert!(introspect_active(&tg, &admin, &job1).await);

    // The job ends: its tokens die, the pipeline's other jobs live on.
    revoke(&tg, &admin, json!({"kind": "job", "value": "job-1"})).await;
    assert!(!introspect_active(&tg, &admin, &job1).await);
    assert!(introspect_active(&tg, &admin, &job2).await);

    // The pipeline is revoked: every token minted for it dies.
    revoke(
        &tg,
        &admin,
        json!({"kind": "pipeline", "value": "payments"}),
    )
    .await;
    assert!(!introspect_active(&tg, &admin, &job2).await);

    // Frozen: no new tokens for the pipeline.
    revoke(
        &tg,
        &admin,
        json!({"kind": "pipeline", "value": "payments", "mode": "freeze", "reason": "build failed"}),
    )
    .await;
    let ci = bk_token(&bk, "payments", "main", "job-3", 300).await;
    let (status, body) = exchange(&tg, &ci, "git", &[]).await;
    assert_eq!(status, 400, "{body}");
    let desc = body["error_description"].as_str().unwrap();
    assert!(desc.contains("payments"), "{desc}");
}

#[tokio::test]
async fn github_actions_jobs_under_trust_rules() {
    let users = OidcProvider::start().await;
    let bk = OidcProvider::start().await;
    let gh = OidcProvider::start().await;
    let tg = gateway(&users, &bk, &gh).await;
    let claims = |repo: &str, git_ref: &str| {
        json!({
            "repository": repo,
            "repository_owner": "acme",
            "ref": git_ref,
            "sha": "c040cae0f0dc81641728557b80f09cfa23b83fe5",
            "run_id": "22259804324",
            "run_attempt": "1",
            "check_run_id": "90000001",
            "job_workflow_ref": "acme/app/.github/workflows/ci.yml@refs/heads/main",
        })
    };
    let ci = gh
        .mint(
            "RS256",
            "repo:acme/app:ref:refs/heads/main",
            None,
            claims("acme/app", "refs/heads/main"),
            300,
        )
        .await;
    let token = tg.exchange_ok(&ci, "git").await;
    let lk = jwt_part(&token, 1);
    assert_eq!(lk["lk_ci"]["system"], "github-actions");
    assert_eq!(lk["lk_ci"]["pipeline"], "acme/app");
    assert_eq!(lk["lk_ci"]["branch"], "main");
    assert_eq!(lk["lk_ci"]["job_id"], "90000001");
    assert_eq!(
        lk["lk_ci"]["commit"],
        "c040cae0f0dc81641728557b80f09cfa23b83fe5"
    );

    // A pull-request ref of the same repository is not trusted.
    let ci = gh
        .mint(
            "RS256",
            "repo:acme/app:pull_request",
            None,
            claims("acme/app", "refs/pull/7/merge"),
            300,
        )
        .await;
    let (status, body) = tg.exchange(&ci, "git").await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("`ref` did not match"),
        "{body}"
    );
}

#[test]
fn trust_config_is_checked_when_loaded() {
    let base = |issuers: &str, trust: &str| {
        format!("[keys]\nmaster_key = {{ value = \"x\" }}\n{issuers}\n{trust}\n",)
    };
    let bk = "[[issuers]]\nname = \"buildkite\"\npreset = \"buildkite\"\naudiences = [\"latchkey\"]\nbound_claims = { organization_slug = \"acme\" }\n\
              [[issuers]]\nname = \"okta\"\nissuer = \"https://acme.okta.com\"\naudiences = [\"latchkey\"]\n";
    let refused = |issuers: &str, trust: &str| -> String {
        Config::parse(&base(issuers, trust))
            .unwrap_err()
            .to_string()
    };
    // The Buildkite preset without an organisation pin.
    let e = refused(
        "[[issuers]]\nname = \"bk\"\npreset = \"buildkite\"\naudiences = [\"latchkey\"]\n",
        "",
    );
    assert!(
        e.contains("issuers[0]") && e.contains("`organization_slug` or `organization_id`"),
        "{e}"
    );
    // Bound `sub` on the Buildkite preset.
    let e = refused(
        "[[issuers]]\nname = \"bk\"\npreset = \"buildkite\"\naudiences = [\"latchkey\"]\n\
         bound_claims = { organization_slug = \"acme\", sub = \"organization:acme:*\" }\n",
        "",
    );
    assert!(e.contains("`sub` cannot be bound"), "{e}");
    let cases = [
        (
            "issuer = \"nope\"\naudiences = [\"git\"]",
            "trust[0].issuer",
        ),
        (
            "issuer = \"okta\"\naudiences = [\"git\"]",
            "workload issuers",
        ),
        (
            "issuer = \"buildkite\"\naudiences = [\"git\"]\nclaims = { sub = \"organization:acme:*\" }",
            "embeds the commit",
        ),
        (
            "issuer = \"buildkite\"\naudiences = [\"nowhere\"]",
            "trust[0].audiences",
        ),
        (
            "issuer = \"buildkite\"\naudiences = [\"git\"]\nmax_lifetime = \"13h\"",
            "trust[0].max_lifetime",
        ),
        (
            "issuer = \"buildkite\"\naudiences = [\"git\"]\nscopes = [\"a b\"]",
            "trust[0].scopes",
        ),
        (
            "issuer = \"buildkite\"\naudiences = [\"git\"]\nwho = \"x\"",
            "who",
        ),
    ];
    for (rule, needle) in cases {
        let e = refused(bk, &format!("[[trust]]\n{rule}\n"));
        assert!(e.contains(needle), "{rule}: {e}");
    }
    Config::parse(&base(
        bk,
        "[[trust]]\nissuer = \"buildkite\"\naudiences = [\"git\"]\nmax_lifetime = \"5m\"\n",
    ))
    .unwrap();
}
