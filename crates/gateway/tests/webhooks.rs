//! Webhook receivers end to end over HTTP: signatures, replays, bounds and
//! malformed payloads for every source, and a rule chain from a signed
//! Buildkite webhook to a refused token and the audit query by commit.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::*;
use latchkey_core::Clock;
use latchkey_events::{Source, signature_headers};
use latchkey_testkit::{OidcProvider, client_id};
use serde_json::{Value, json};

const SECRET: &str = "webhook-secret-for-tests";
const COMMIT: &str = "9f3182061f1e2cca4702c368cbc039b7dc9d4485";
const JOB: &str = "0193a3f7-1c2d-4e5f-8a9b-0c1d2e3f4a5b";

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../events/tests/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn gateway(users: &OidcProvider, bk: &OidcProvider, extra_webhooks: &str) -> TestGateway {
    let extra = format!(
        r#"
[[issuers]]
name = "buildkite"
preset = "buildkite"
issuer = "{bk}"
audiences = ["{aud}"]
bound_claims = {{ organization_slug = "acme" }}

[[trust]]
issuer = "buildkite"
claims = {{ pipeline_slug = "payments" }}
audiences = ["git"]

[webhooks.gogs]
secret = {{ value = "{SECRET}" }}
[webhooks.gitea]
secret = {{ value = "{SECRET}" }}
[webhooks.github]
secret = {{ value = "{SECRET}" }}
[webhooks.buildkite]
secret = {{ value = "{SECRET}" }}
{extra_webhooks}

[[rules]]
name = "freeze-failed-builds"
on = "build_finished"
state = "failed"
freeze_pipeline = true

[[rules]]
name = "revoke-finished-jobs"
on = "job_finished"
revoke_job = true
"#,
        bk = bk.issuer(),
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

async fn post_hook(
    tg: &TestGateway,
    source: Source,
    event: &str,
    delivery: &str,
    body: &[u8],
    headers: Vec<(String, String)>,
) -> (u16, Value) {
    let mut req = tg
        .http
        .post(tg.url(&format!("/hooks/{}", source.as_str())))
        .header("content-type", "application/json")
        .header(source.event_header(), event)
        .body(body.to_vec());
    if let Some(h) = source.delivery_header() {
        req = req.header(h, delivery);
    }
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(json!({ "raw": text })),
    )
}

async fn signed(
    tg: &TestGateway,
    source: Source,
    event: &str,
    delivery: &str,
    body: &Value,
) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let headers = signature_headers(source, SECRET.as_bytes(), &bytes, tg.clock.unix());
    post_hook(tg, source, event, delivery, &bytes, headers).await
}

fn samples() -> Vec<(Source, &'static str, Value)> {
    let mut job = fixture("buildkite_job_finished");
    job["job"]["id"] = json!(JOB);
    vec![
        (Source::Gogs, "push", fixture("gogs_push")),
        (Source::Gitea, "push", fixture("gitea_push")),
        (Source::GitHub, "push", fixture("github_push")),
        (Source::Buildkite, "job.finished", job),
    ]
}

#[tokio::test]
async fn every_source_checks_signatures_replays_bounds_and_payloads() {
    let users = OidcProvider::start().await;
    let bk = OidcProvider::start().await;
    let tg = gateway(&users, &bk, "").await;

    for (i, (source, event, body)) in samples().into_iter().enumerate() {
        let name = source.as_str();
        let delivery = format!("delivery-{i}");
        // A good signature is accepted and acted on.
        let (status, answer) = signed(&tg, source, event, &delivery, &body).await;
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["status"], "ok", "{name}: {answer}");

        // The same delivery again is answered without acting again.
        let (status, answer) = signed(&tg, source, event, &delivery, &body).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("duplicate")),
            "{name}: {answer}"
        );

        // The same signed body under a new delivery id is a replay: the
        // signature does not cover the id. Answered like a duplicate,
        // audited as `replayed`, not acted on again.
        let received = |tg: &TestGateway| {
            tg.audit_records()
                .iter()
                .filter(|r| {
                    r.event.action.starts_with("webhook.")
                        && r.event.action != "webhook.delivery"
                        && r.event.context.get("source") == Some(&json!(name))
                })
                .count()
        };
        let before = received(&tg);
        let (status, answer) =
            signed(&tg, source, event, &format!("{delivery}-again"), &body).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("duplicate")),
            "{name}: a signed body acted twice: {answer}"
        );
        assert_eq!(received(&tg), before, "{name}: the replay was acted on");
        let replays: Vec<_> = tg
            .audit_records()
            .into_iter()
            .filter(|r| {
                r.event.action == "webhook.delivery"
                    && r.event.context.get("source") == Some(&json!(name))
                    && r.event
                        .outcome
                        .as_ref()
                        .is_some_and(|o| o.status == "replayed")
            })
            .collect();
        if source != Source::Buildkite {
            // (Buildkite's delivery id is its signature: a plain duplicate.)
            assert_eq!(replays.len(), 1, "{name}: the replay is audited");
        }

        // A wrong secret, a tampered body and no signature are refused.
        let bytes = serde_json::to_vec(&body).unwrap();
        let wrong = signature_headers(source, b"another-secret", &bytes, tg.clock.unix());
        let (status, answer) =
            post_hook(&tg, source, event, &format!("{delivery}-w"), &bytes, wrong).await;
        assert_eq!(status, 401, "{name}: {answer}");
        let good = signature_headers(source, SECRET.as_bytes(), &bytes, tg.clock.unix());
        let mut tampered = bytes.clone();
        tampered.extend_from_slice(b" ");
        let (status, _) = post_hook(
            &tg,
            source,
            event,
            &format!("{delivery}-t"),
            &tampered,
            good,
        )
        .await;
        assert_eq!(status, 401, "{name}: tampered body");
        let (status, answer) =
            post_hook(&tg, source, event, &format!("{delivery}-n"), &bytes, vec![]).await;
        assert_eq!(status, 401, "{name}: {answer}");
        assert!(answer["error"].as_str().is_some(), "{name}: {answer}");
        // Regression (issue 12's drift list): bad signatures are audited,
        // like every refusal before authentication.
        let refused = tg
            .audit_records()
            .into_iter()
            .filter(|r| {
                r.event.action == "webhook.authenticate"
                    && r.event.context.get("source").and_then(|v| v.as_str())
                        == Some(source.as_str())
            })
            .count();
        assert!(refused >= 3, "{name}: {refused} refusals audited");

        // Malformed JSON (correctly signed) is a clear 400.
        let junk = b"{ not json".to_vec();
        let h = signature_headers(source, SECRET.as_bytes(), &junk, tg.clock.unix());
        let (status, answer) =
            post_hook(&tg, source, event, &format!("{delivery}-j"), &junk, h).await;
        assert_eq!(status, 400, "{name}: {answer}");

        // An unknown event type is refused. (A body never signed before:
        // the same signed body under another event type is a replay.)
        let mut other = body.clone();
        other["latchkey_test"] = json!("unknown event");
        let other = serde_json::to_vec(&other).unwrap();
        let h = signature_headers(source, SECRET.as_bytes(), &other, tg.clock.unix() - 1);
        let (status, answer) = post_hook(
            &tg,
            source,
            "release.exploded",
            &format!("{delivery}-u"),
            &other,
            h,
        )
        .await;
        assert!(status == 422 || status == 400, "{name}: {status} {answer}");

        // A body over the bound never reaches the parser.
        let huge = vec![b' '; latchkey_events::MAX_PAYLOAD_BYTES + 1024];
        let h = signature_headers(source, SECRET.as_bytes(), &huge, tg.clock.unix());
        let (status, _) = post_hook(&tg, source, event, &format!("{delivery}-h"), &huge, h).await;
        assert_eq!(status, 413, "{name}: oversized body");
    }

    // Buildkite: a signature outside the timestamp window is refused, both ways.
    let (_, _, body) = samples().pop().unwrap();
    let bytes = serde_json::to_vec(&body).unwrap();
    for skew in [-3600i64, 3600] {
        let ts = (tg.clock.unix() as i64 + skew) as u64;
        let h = signature_headers(Source::Buildkite, SECRET.as_bytes(), &bytes, ts);
        let (status, answer) =
            post_hook(&tg, Source::Buildkite, "job.finished", "x", &bytes, h).await;
        assert_eq!(status, 401, "skew {skew}: {answer}");
    }
    // The plain token is refused unless allowed.
    let h = vec![("X-Buildkite-Token".to_owned(), SECRET.to_owned())];
    let (status, answer) = post_hook(&tg, Source::Buildkite, "job.finished", "x", &bytes, h).await;
    assert_eq!(status, 401, "{answer}");

    // An unknown source is a 404.
    let resp = tg
        .http
        .post(tg.url("/hooks/jenkins"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test]
async fn a_failed_build_freezes_its_pipeline_and_a_finished_job_loses_its_tokens() {
    let users = OidcProvider::start().await;
    let bk = OidcProvider::start().await;
    let tg = gateway(&users, &bk, "").await;
    let admin = tg.admin_token(&users).await;

    let claims = |job: &str| {
        json!({
            "organization_slug": "acme", "pipeline_slug": "payments", "build_number": 42,
            "build_branch": "main", "build_commit": COMMIT, "step_key": "deploy", "job_id": job,
        })
    };
    let sub = "organization:acme:pipeline:payments:ref:refs/heads/main:commit:9f31820:step:deploy";
    let ci_token = bk.mint("RS256", sub, None, claims(JOB), 600).await;
    let token = tg.exchange_ok(&ci_token, "git").await;
    assert_eq!(
        tg.git_info_refs(Some(&bearer(&token)))
            .await
            .status()
            .as_u16(),
        200
    );

    // job.finished for that job: its token dies.
    let mut job = fixture("buildkite_job_finished");
    job["job"]["id"] = json!(JOB);
    job["pipeline"]["slug"] = json!("payments");
    job["build"]["commit"] = json!(COMMIT);
    let (status, answer) = signed(&tg, Source::Buildkite, "job.finished", "", &job).await;
    assert_eq!(status, 200, "{answer}");
    let resp = tg.git_info_refs(Some(&bearer(&token))).await;
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.text().await.unwrap().contains("revoked"));

    // build.finished, failed: the pipeline is frozen, no new tokens.
    let mut build = fixture("buildkite_build_finished");
    build["build"]["state"] = json!("failed");
    build["build"]["commit"] = json!(COMMIT);
    build["pipeline"]["slug"] = json!("payments");
    let (status, answer) = signed(&tg, Source::Buildkite, "build.finished", "", &build).await;
    assert_eq!(status, 200, "{answer}");
    let other_job = bk
        .mint("RS256", sub, None, claims("another-job"), 600)
        .await;
    let (status, body) = tg.exchange(&other_job, "git").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("frozen"),
        "{body}"
    );

    // The audit query by commit shows the chain: mint, webhooks, actions.
    let mut events = Vec::new();
    for _ in 0..50 {
        let resp = tg
            .http
            .get(tg.url(&format!("/admin/audit?commit={COMMIT}")))
            .header("authorization", bearer(&admin))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        events = resp.json::<Value>().await.unwrap()["events"]
            .as_array()
            .unwrap()
            .clone();
        let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
        if actions.iter().any(|a| a.starts_with("webhook.build")) && actions.len() >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let text = serde_json::to_string(&events).unwrap();
    assert!(text.contains("token.mint"), "{text}");
    assert!(
        text.contains("webhook.job_finished") || text.contains("webhook.job"),
        "{text}"
    );
    assert!(text.contains("webhook.build"), "{text}");
    assert!(text.contains("freeze-failed-builds"), "{text}");
    assert!(text.contains("revoke-finished-jobs"), "{text}");
    // Every rule action links to the webhook event that caused it.
    for e in events.iter().filter(|e| e["context"]["rule"].is_string()) {
        let cause = e["caused_by"].as_str().unwrap();
        assert!(
            events.iter().any(|w| w["request_id"] == cause
                && w["action"].as_str().unwrap_or("").starts_with("webhook.")),
            "{e}"
        );
    }
}

#[test]
fn document_writes_in_rules_need_a_firestore_upstream() {
    let text = "[keys]\nmaster_key = { value = \"x\" }\n[[rules]]\nname = \"record\"\non = \"push\"\n\
                [rules.write_document]\npath = \"flags/{repository}\"\nfields = { commit = \"{after}\" }\n";
    let err = latchkey_gateway::config::Config::parse(text)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("record") && err.contains("write_document"),
        "{err}"
    );
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.com",
            "-c",
            "credential.helper=",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

// Multi-threaded: `git` runs as a blocking child process while the gateway
// serves it on the same runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_webhook_links_to_the_push_the_gateway_saw() {
    let users = OidcProvider::start().await;
    let bk = OidcProvider::start().await;
    let tg = gateway(&users, &bk, "").await;
    let admin = tg.admin_token(&users).await;
    let token = tg.token_for(&users, "alice", &["developers"], "git").await;

    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q", "-b", "feature"]);
    git(work.path(), &["commit", "-q", "--allow-empty", "-m", "x"]);
    let commit = git(work.path(), &["rev-parse", "HEAD"]);
    let header = format!("http.extraHeader=Authorization: Bearer {token}");
    git(
        work.path(),
        &[
            "-c",
            &header,
            "push",
            "-q",
            &tg.url("/git/local/acme/app.git"),
            "HEAD:refs/heads/feature",
        ],
    );

    let mut build = fixture("buildkite_build_finished");
    build["build"]["state"] = json!("passed");
    build["build"]["commit"] = json!(commit);
    let (status, answer) = signed(&tg, Source::Buildkite, "build.finished", "", &build).await;
    assert_eq!(status, 200, "{answer}");

    let mut linked = false;
    for _ in 0..50 {
        let resp = tg
            .http
            .get(tg.url(&format!("/admin/audit?commit={commit}")))
            .header("authorization", bearer(&admin))
            .send()
            .await
            .unwrap();
        let events = resp.json::<Value>().await.unwrap()["events"]
            .as_array()
            .unwrap()
            .clone();
        let push = events
            .iter()
            .find(|e| e["action"] == "git.push" && e["kind"] == "outcome");
        let hook = events.iter().find(|e| {
            e["action"]
                .as_str()
                .unwrap_or("")
                .starts_with("webhook.build")
        });
        if let (Some(push), Some(hook)) = (push, hook) {
            assert_eq!(hook["caused_by"], push["request_id"], "{hook}\n{push}");
            linked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(linked, "the build webhook was not linked to the push");
}
