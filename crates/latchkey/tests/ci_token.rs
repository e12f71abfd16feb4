//! `latchkey ci token` end to end: the built binary gets a CI job's OIDC
//! token the way it would in Buildkite (a FAKE `buildkite-agent` shim on
//! PATH) and in GitHub Actions (a FAKE `ACTIONS_ID_TOKEN_REQUEST_URL` server:
//! GitHub's endpoint cannot run here), both serving tokens minted by the real
//! OIDC provider harness, and exchanges it at a real gateway under
//! `[[trust]]` rules.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use base64::Engine as _;
use common::{latchkey_cmd, stderr, stdout};
use latchkey_core::{Clock, SystemClock};
use latchkey_gateway::config::Config;
use latchkey_gateway::{Gateway, StartOptions, router};
use latchkey_testkit::{OidcProvider, client_id};
use serde_json::{Value, json};

struct Env {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    url: String,
    bk: OidcProvider,
    gh: OidcProvider,
    _server: tokio::task::JoinHandle<()>,
}

async fn start() -> Env {
    let bk = OidcProvider::start().await;
    let gh = OidcProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let data = root.join("data");
    let policies = data.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for (name, text) in latchkey_policy::starter_policy_files() {
        std::fs::write(policies.join(name), text).unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}");
    let master = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let toml = format!(
        r#"
[server]
listen = "{addr}"
public_url = "{url}"
data_dir = {data:?}

[keys]
master_key = {{ value = "{master}" }}

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
claims = {{ pipeline_slug = "payments", build_branch = "main" }}
audiences = ["git"]

[[trust]]
issuer = "github"
claims = {{ repository = "acme/app" }}
audiences = ["git"]
"#,
        data = data.display().to_string(),
        bk = bk.issuer(),
        gh = gh.issuer(),
        aud = client_id("RS256"),
    );
    let config = Config::parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let gw = Gateway::start(config, StartOptions::default(), Arc::new(SystemClock))
        .await
        .unwrap();
    let app = router(gw);
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Env {
        _dir: dir,
        root,
        url,
        bk,
        gh,
        _server: server,
    }
}

async fn bk_token(env: &Env, pipeline: &str) -> String {
    env.bk
        .mint(
            "RS256",
            "organization:acme:pipeline:payments:ref:refs/heads/main:commit:9f31820:step:deploy",
            None,
            json!({
                "organization_slug": "acme", "pipeline_slug": pipeline, "build_number": 7,
                "build_branch": "main", "build_commit": "9f3182061f1e2cca4702c368cbc039b7dc9d4485",
                "step_key": "deploy", "job_id": "0184990a-477b-4fa8-9968-496074483cee",
                "agent_id": "0184990a-4782-42b5-afc1-16715b10b8ff",
            }),
            300,
        )
        .await
}

/// A FAKE `buildkite-agent` on PATH: checks it was asked for an OIDC token
/// for the expected audience and prints the token in `token_file`.
fn fake_buildkite_agent(dir: &Path, token_file: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\n# FAKE buildkite-agent for tests.\n\
         if [ \"$*\" != \"oidc request-token --audience {aud}\" ]; then\n\
         echo \"fake buildkite-agent: unexpected arguments: $*\" >&2; exit 2\nfi\n\
         cat '{file}'\n",
        aud = client_id("RS256"),
        file = token_file.display()
    );
    let path = bin.join("buildkite-agent");
    std::fs::write(&path, script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn ci_cmd(env: &Env, args: &[&str]) -> tokio::process::Command {
    let mut cmd = latchkey_cmd(["ci", "token"]);
    cmd.args(args)
        .env("LATCHKEY_URL", &env.url)
        .env("XDG_CACHE_HOME", env.root.join("cache"))
        .env_remove("BUILDKITE")
        .env_remove("BUILDKITE_JOB_ID")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_TOKEN");
    tokio::process::Command::from(cmd)
}

fn claims_of(token: &str) -> Value {
    let part = token.trim().split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[track_caller]
fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "failed:\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn buildkite_step_gets_a_token_and_can_hand_it_to_git() {
    let env = start().await;
    let ci = bk_token(&env, "payments").await;
    let token_file = env.root.join("bk-token");
    std::fs::write(&token_file, format!("{ci}\n")).unwrap();
    let bin = fake_buildkite_agent(&env.root, &token_file);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let out = ci_cmd(
        &env,
        &["--audience", "git", "--oidc-audience", &client_id("RS256")],
    )
    .env("PATH", &path)
    .env("BUILDKITE", "true")
    .output()
    .await
    .unwrap();
    assert_ok(&out);
    let printed = stdout(&out);
    assert!(
        !printed.contains(&ci) && !stderr(&out).contains(&ci),
        "the CI token is never printed"
    );
    let claims = claims_of(&printed);
    assert_eq!(claims["aud"], "git");
    assert_eq!(claims["lk_ci"]["system"], "buildkite");
    assert_eq!(claims["lk_ci"]["pipeline"], "payments");
    assert_eq!(
        claims["lk_ci"]["job_id"],
        "0184990a-477b-4fa8-9968-496074483cee"
    );
    assert!(claims["exp"].as_u64().unwrap() > SystemClock.unix());

    // --git-credential-cache: nothing on stdout; `latchkey git-credential get`
    // (what git runs) answers with the cached token, no identity token needed.
    let out = ci_cmd(
        &env,
        &[
            "--audience",
            "git",
            "--oidc-audience",
            &client_id("RS256"),
            "--git-credential-cache",
        ],
    )
    .env("PATH", &path)
    .env("BUILDKITE", "true")
    .output()
    .await
    .unwrap();
    assert_ok(&out);
    assert_eq!(stdout(&out), "");
    let host = env.url.trim_start_matches("http://").to_owned();
    let mut helper = tokio::process::Command::from(latchkey_cmd(["git-credential", "get"]));
    helper
        .env("XDG_CACHE_HOME", env.root.join("cache"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = helper.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("protocol=http\nhost={host}\n\n").as_bytes())
            .await
            .unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert_ok(&out);
    let answer = stdout(&out);
    let password = answer
        .lines()
        .find_map(|l| l.strip_prefix("password="))
        .unwrap_or_else(|| panic!("no password in {answer}"));
    assert_eq!(claims_of(password)["lk_ci"]["pipeline"], "payments");

    // A pipeline no trust rule names: refused, with the gateway's reason.
    std::fs::write(&token_file, bk_token(&env, "marketing").await).unwrap();
    let out = ci_cmd(
        &env,
        &["--audience", "git", "--oidc-audience", &client_id("RS256")],
    )
    .env("PATH", &path)
    .env("BUILDKITE_JOB_ID", "0184990a")
    .output()
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`pipeline_slug` did not match"),
        "{}",
        stderr(&out)
    );
}

#[derive(Clone)]
struct FakeGithub {
    token: String,
}

/// A FAKE of GitHub's `ACTIONS_ID_TOKEN_REQUEST_URL`: checks the bearer
/// request token and the audience, answers `{"value": ...}`.
async fn fake_github_endpoint(
    State(fake): State<FakeGithub>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<axum::Json<Value>, StatusCode> {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("bearer request-secret") {
        return Err(StatusCode::UNAUTHORIZED);
    }
    if q.get("api-version").map(String::as_str) != Some("2.0")
        || q.get("audience") != Some(&client_id("RS256"))
    {
        return Err(StatusCode::BAD_REQUEST);
    }
    Ok(axum::Json(json!({ "count": 1, "value": fake.token })))
}

#[tokio::test(flavor = "multi_thread")]
async fn github_actions_step_gets_a_token_and_outside_ci_is_told_what_to_do() {
    let env = start().await;
    let ci = env
        .gh
        .mint(
            "RS256",
            "repo:acme/app:ref:refs/heads/main",
            None,
            json!({
                "repository": "acme/app", "repository_owner": "acme", "ref": "refs/heads/main",
                "sha": "c040cae0f0dc81641728557b80f09cfa23b83fe5", "run_id": "22259804324",
                "run_attempt": "3",
            }),
            300,
        )
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_url = format!(
        "http://{}/_apis/token?api-version=2.0",
        listener.local_addr().unwrap()
    );
    let app = axum::Router::new()
        .route("/_apis/token", get(fake_github_endpoint))
        .with_state(FakeGithub { token: ci.clone() });
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });

    let run = |request_token: &'static str| {
        let mut cmd = ci_cmd(
            &env,
            &["--audience", "git", "--oidc-audience", &client_id("RS256")],
        );
        cmd.env("GITHUB_ACTIONS", "true")
            .env("ACTIONS_ID_TOKEN_REQUEST_URL", &fake_url)
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", request_token);
        cmd
    };
    let out = run("request-secret").output().await.unwrap();
    assert_ok(&out);
    assert!(!stdout(&out).contains(&ci) && !stderr(&out).contains(&ci));
    let claims = claims_of(&stdout(&out));
    assert_eq!(claims["lk_ci"]["system"], "github-actions");
    assert_eq!(claims["lk_ci"]["pipeline"], "acme/app");
    assert_eq!(claims["lk_ci"]["branch"], "main");
    assert_eq!(claims["lk_ci"]["job_id"], "22259804324-3");

    // The endpoint refuses: said so, and the request token is not echoed.
    let out = run("wrong").output().await.unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("HTTP 401") && err.contains("id-token: write"),
        "{err}"
    );
    assert!(!err.contains("wrong"), "{err}");

    // GitHub Actions without `id-token: write`.
    let out = ci_cmd(&env, &["--audience", "git"])
        .env("GITHUB_ACTIONS", "true")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("permissions: id-token: write"),
        "{}",
        stderr(&out)
    );

    // Outside CI.
    let out = ci_cmd(&env, &["--audience", "git"]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not running in Buildkite or GitHub Actions"),
        "{}",
        stderr(&out)
    );

    // --from file and --from stdin.
    let file = env.root.join("ci.jwt");
    std::fs::write(&file, &ci).unwrap();
    let out = ci_cmd(&env, &["--audience", "git", "--from", "file", "--file"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert_ok(&out);
    assert_eq!(claims_of(&stdout(&out))["lk_ci"]["pipeline"], "acme/app");
    let mut cmd = ci_cmd(&env, &["--audience", "git", "--from", "stdin"]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(ci.as_bytes()).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert_ok(&out);
    assert_eq!(claims_of(&stdout(&out))["lk_ci"]["pipeline"], "acme/app");
}
