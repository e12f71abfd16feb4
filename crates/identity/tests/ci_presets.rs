//! CI issuer presets against a real OpenID Connect provider: Buildkite- and
//! GitHub-Actions-shaped tokens (claim sets as in the vendors' docs, see
//! `src/preset.rs`) minted by `oidc-provider`, and the config refusals that
//! keep another organisation's jobs out.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{clock, http};
use latchkey_core::PrincipalKind;
use latchkey_identity::{CiPreset, ClaimMatch, IdentityError, IssuerConfig, IssuerSet};
use latchkey_testkit::{OidcProvider, client_id};
use serde_json::json;

fn buildkite(op: &OidcProvider) -> IssuerConfig {
    let mut c =
        IssuerConfig::with_preset("buildkite", CiPreset::Buildkite, vec![client_id("RS256")]);
    c.issuer = op.issuer().to_owned();
    c.bound_claims
        .insert("organization_slug".into(), ClaimMatch::One("acme".into()));
    c
}

fn github(op: &OidcProvider) -> IssuerConfig {
    let mut c = IssuerConfig::with_preset("gha", CiPreset::GithubActions, vec![client_id("RS256")]);
    c.issuer = op.issuer().to_owned();
    c.bound_claims
        .insert("repository_owner".into(), ClaimMatch::One("acme".into()));
    c
}

const BK_SUB: &str =
    "organization:acme:pipeline:payments:ref:refs/heads/main:commit:9f31820:step:deploy";

fn bk_claims(org: &str) -> serde_json::Value {
    json!({
        "organization_slug": org,
        "pipeline_slug": "payments",
        "build_number": 42,
        "build_branch": "main",
        "build_tag": null,
        "build_commit": "9f3182061f1e2cca4702c368cbc039b7dc9d4485",
        "step_key": "deploy",
        "job_id": "0184990a-477b-4fa8-9968-496074483cee",
        "agent_id": "0184990a-4782-42b5-afc1-16715b10b8ff",
    })
}

#[tokio::test]
async fn buildkite_and_github_tokens_map_to_typed_ci_claims() {
    let op = OidcProvider::start().await;
    let (_, shared) = clock();
    let set = IssuerSet::new(vec![buildkite(&op)], http(), shared).unwrap();

    let token = op.mint("RS256", BK_SUB, None, bk_claims("acme"), 300).await;
    let id = set.verify(&token).await.unwrap();
    let p = &id.principal;
    assert_eq!(p.kind, PrincipalKind::Workload);
    assert_eq!(p.id, BK_SUB);
    assert_eq!(p.issuer, "buildkite");
    assert_eq!(p.ci.system.as_deref(), Some("buildkite"));
    assert_eq!(p.ci.pipeline.as_deref(), Some("payments"));
    assert_eq!(p.ci.build.as_deref(), Some("42"));
    assert_eq!(p.ci.branch.as_deref(), Some("main"));
    assert_eq!(
        p.ci.commit.as_deref(),
        Some("9f3182061f1e2cca4702c368cbc039b7dc9d4485")
    );
    assert_eq!(p.ci.step.as_deref(), Some("deploy"));
    assert_eq!(
        p.ci.job_id.as_deref(),
        Some("0184990a-477b-4fa8-9968-496074483cee")
    );
    assert_eq!(
        p.attributes.get("agent_id").map(String::as_str),
        Some("0184990a-4782-42b5-afc1-16715b10b8ff")
    );
    assert!(
        !p.attributes.contains_key("build_tag"),
        "null claims are skipped"
    );

    // Another organisation on the same (shared) issuer is refused.
    let other = op.mint("RS256", BK_SUB, None, bk_claims("evil"), 300).await;
    assert_eq!(
        set.verify(&other).await.unwrap_err(),
        IdentityError::BoundClaimMismatch {
            claim: "organization_slug".into()
        }
    );

    // GitHub Actions.
    let (_, shared) = clock();
    let set = IssuerSet::new(vec![github(&op)], http(), shared).unwrap();
    let gh = |extra: serde_json::Value| {
        let mut c = json!({
            "repository": "acme/app",
            "repository_owner": "acme",
            "repository_owner_id": "2020",
            "ref": "refs/heads/main",
            "ref_type": "branch",
            "sha": "c040cae0f0dc81641728557b80f09cfa23b83fe5",
            "run_id": "22259804324",
            "run_attempt": "2",
            "workflow": "CI",
            "workflow_ref": "acme/app/.github/workflows/ci.yml@refs/heads/main",
            "job_workflow_ref": "acme/app/.github/workflows/ci.yml@refs/heads/main",
            "environment": "production",
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let sub = "repo:acme/app:environment:production";
    let token = op
        .mint(
            "RS256",
            sub,
            None,
            gh(json!({"check_run_id": "90000001"})),
            300,
        )
        .await;
    let p = set.verify(&token).await.unwrap().principal;
    assert_eq!(p.ci.system.as_deref(), Some("github-actions"));
    assert_eq!(p.ci.pipeline.as_deref(), Some("acme/app"));
    assert_eq!(
        p.ci.branch.as_deref(),
        Some("main"),
        "refs/heads/ is stripped"
    );
    assert_eq!(p.ci.build.as_deref(), Some("22259804324"));
    assert_eq!(p.ci.environment.as_deref(), Some("production"));
    assert_eq!(
        p.ci.job_id.as_deref(),
        Some("90000001"),
        "check_run_id is the job"
    );
    assert_eq!(
        p.attributes.get("job_workflow_ref").map(String::as_str),
        Some("acme/app/.github/workflows/ci.yml@refs/heads/main")
    );

    // Without `check_run_id` (older GHES) the run attempt names the job; a
    // tag keeps its full ref.
    let token = op
        .mint("RS256", sub, None, gh(json!({"ref": "refs/tags/v1"})), 300)
        .await;
    let p = set.verify(&token).await.unwrap().principal;
    assert_eq!(p.ci.job_id.as_deref(), Some("22259804324-2"));
    assert_eq!(p.ci.branch.as_deref(), Some("refs/tags/v1"));

    let other = op
        .mint(
            "RS256",
            sub,
            None,
            gh(json!({"repository_owner": "evil"})),
            300,
        )
        .await;
    assert_eq!(
        set.verify(&other).await.unwrap_err().code(),
        "bound_claim_mismatch"
    );
}

#[test]
fn presets_refuse_configs_that_let_other_organisations_in() {
    let aud = vec!["latchkey".to_string()];
    // Buildkite without an organisation pin.
    let c = IssuerConfig::with_preset("bk", CiPreset::Buildkite, aud.clone());
    let e = IssuerSet::new(vec![c], http(), clock().1).unwrap_err();
    assert_eq!(
        e.to_string(),
        "issuer `bk`: invalid `bound_claims`: preset `buildkite` needs your organisation pinned with \
         `organization_slug` or `organization_id`: every Buildkite customer shares the issuer \
         `https://agent.buildkite.com`"
    );
    // A wildcard pin is no pin.
    let mut c = IssuerConfig::with_preset("bk", CiPreset::Buildkite, aud.clone());
    c.bound_claims
        .insert("organization_id".into(), ClaimMatch::One("*".into()));
    let e = c.validate().unwrap_err();
    assert_eq!(e.field, "bound_claims");
    assert!(e.reason.contains("exact value"), "{e}");
    // Buildkite's `sub` embeds the commit: never bound.
    let mut c = IssuerConfig::with_preset("bk", CiPreset::Buildkite, aud.clone());
    c.bound_claims
        .insert("organization_slug".into(), ClaimMatch::One("acme".into()));
    c.bound_claims.insert(
        "sub".into(),
        ClaimMatch::One("organization:acme:pipeline:payments:*".into()),
    );
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("`sub` cannot be bound"), "{e}");
    assert!(e.contains("pipeline_slug"), "{e}");
    // GitHub without an owner pin; with a repository whose owner is a glob.
    let c = IssuerConfig::with_preset("gha", CiPreset::GithubActions, aud.clone());
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("`repository_owner` or `repository_owner_id` or `repository`"),
        "{e}"
    );
    let mut c = IssuerConfig::with_preset("gha", CiPreset::GithubActions, aud.clone());
    c.bound_claims
        .insert("repository".into(), ClaimMatch::One("*/app".into()));
    assert!(c.validate().is_err());
    c.bound_claims
        .insert("repository".into(), ClaimMatch::One("acme/*".into()));
    c.validate().unwrap();
    // A preset is for workloads.
    c.kind = PrincipalKind::User;
    assert_eq!(c.validate().unwrap_err().field, "kind");
}

#[test]
fn presets_from_toml_fill_defaults_and_keep_overrides() {
    let c: IssuerConfig = toml_issuer(
        r#"
name = "buildkite"
preset = "buildkite"
audiences = ["https://latchkey.example.com"]
bound_claims = { organization_slug = "acme" }
ci_claims = { environment = "build_source" }
"#,
    );
    assert_eq!(c.issuer, "https://agent.buildkite.com");
    assert_eq!(c.kind, PrincipalKind::Workload);
    assert_eq!(c.ci_claims["pipeline"], "pipeline_slug");
    assert_eq!(c.ci_claims["environment"], "build_source");
    assert_eq!(c.ci_system.as_deref(), Some("buildkite"));
    assert_eq!(c.subject_claim, "sub");
    c.validate().unwrap();

    let c: IssuerConfig = toml_issuer(
        r#"
name = "gha"
preset = "github-actions"
issuer = "http://127.0.0.1:9999"
audiences = ["latchkey"]
bound_claims = { repository_owner_id = "2020" }
"#,
    );
    assert_eq!(c.issuer, "http://127.0.0.1:9999");
    assert_eq!(c.preset, Some(CiPreset::GithubActions));
    c.validate().unwrap();

    // No preset and no issuer: named.
    let c: IssuerConfig = toml_issuer("name = \"x\"\naudiences = [\"a\"]\n");
    let e = c.validate().unwrap_err();
    assert_eq!(e.field, "issuer");
}

fn toml_issuer(text: &str) -> IssuerConfig {
    toml::from_str(text).unwrap()
}
