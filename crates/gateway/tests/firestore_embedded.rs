//! Google's official Firestore clients, unchanged but for endpoint and
//! credential, against Latchkey's embedded document store
//! (`[documents] backend = "embedded"`): the Node client over gRPC and REST
//! and the Python client over gRPC (TLS) all pass the same scenario, on
//! every machine (no Java, no Google). Where Google's emulator is
//! installed, the same scenario run straight against the emulator gives the
//! very same results, step for step.
//!
//! Every access is decided and audited as on Google's backend, and a token
//! whose holder may only read changes nothing.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeSet;

use common::{Opts, TestGateway, assert_same_steps, bearer, run_ok};
use latchkey_testkit::OidcProvider;
use latchkey_testkit::firestore::{FirestoreEmulator, Scenario, ScenarioClient, ScenarioReport};
use latchkey_testkit::tls::TestCerts;
use serde_json::{Value, json};

const PROJECT: &str = "latchkey-test";

/// The embedded store, `(default)` mapped to environment `dev`; values
/// recorded for collection `flags` only.
const EMBEDDED_TOML: &str = r#"
[documents]
backend = "embedded"
databases = { "(default)" = "dev", "prod" = "prod" }
record_values = ["flags"]
"#;

fn target(tg: &TestGateway) -> String {
    tg.base.trim_start_matches("http://").to_owned()
}

/// The emulator's own run of the scenario, when the machine has one.
async fn emulator_reference(client: ScenarioClient) -> Option<(FirestoreEmulator, ScenarioReport)> {
    // Prints SKIPPED (or fails, where the emulator is required) without one.
    let emu = FirestoreEmulator::start_or_skip().await?;
    let report = run_ok(
        Scenario::new(client, "emulator", &emu.host_port())
            .run()
            .await,
    );
    Some((emu, report))
}

#[tokio::test(flavor = "multi_thread")]
async fn node_client_over_grpc_and_rest_on_the_embedded_store() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            extra_toml: EMBEDDED_TOML.into(),
            ..Opts::default()
        },
    )
    .await;
    let token = tg
        .token_for(&op, "alice", &["developers"], "documents")
        .await;
    let target = target(&tg);
    let grpc = Scenario::new(ScenarioClient::Node, "latchkey-grpc", &target).token(&token);
    let rest = Scenario::new(ScenarioClient::Node, "latchkey-rest", &target).token(&token);
    let (reference, grpc, rest) = tokio::join!(
        emulator_reference(ScenarioClient::Node),
        grpc.run(),
        rest.run()
    );
    let (grpc, rest) = (run_ok(grpc), run_ok(rest));
    assert_eq!(grpc.steps.len(), 12, "every step ran:\n{}", grpc.summary());
    assert_same_steps(&grpc, &rest);
    if let Some((emu, reference)) = reference {
        assert_same_steps(&reference, &grpc);
        assert_same_steps(&reference, &rest);
        emu.stop().await;
    }

    // A create in a collection whose values are recorded, over REST.
    let resp = tg
        .http
        .post(tg.url(&format!(
            "/v1/projects/{PROJECT}/databases/(default)/documents/flags?documentId=checkout"
        )))
        .header("authorization", bearer(&token))
        .json(&json!({"fields": {"enabled": {"booleanValue": true}, "rollout": {"integerValue": "25"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let created: Value = resp.json().await.unwrap();
    assert_eq!(
        created["fields"]["rollout"],
        json!({"integerValue": "25"}),
        "{created}"
    );
    // The same create again is ALREADY_EXISTS (409), as Firestore answers.
    let again = tg
        .http
        .post(tg.url(&format!(
            "/v1/projects/{PROJECT}/databases/(default)/documents/flags?documentId=checkout"
        )))
        .header("authorization", bearer(&token))
        .json(&json!({"fields": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "{}", again.text().await.unwrap());

    let records = tg.audit_records();
    let decisions: Vec<_> = records
        .iter()
        .filter(|r| r.event.decision.is_some() && r.event.action.starts_with("document."))
        .collect();
    let actions: BTreeSet<&str> = decisions.iter().map(|r| r.event.action.as_str()).collect();
    for action in [
        "document.get",
        "document.create",
        "document.update",
        "document.delete",
        "document.query",
        "document.list",
        "document.listen",
    ] {
        assert!(
            actions.contains(action),
            "no {action} decision in {actions:?}"
        );
    }
    for r in &decisions {
        let e = &r.event;
        assert_eq!(e.decision.as_ref().unwrap().effect, "allow", "{e:?}");
        assert_eq!(e.context["environment"], "dev", "{e:?}");
    }
    let create = decisions
        .iter()
        .find(|r| r.event.action == "document.create")
        .unwrap();
    assert_eq!(
        create.event.context["values"],
        json!({"enabled": true, "rollout": 25}),
        "{:?}",
        create.event.context
    );
    // Every decided call has an outcome, over gRPC (`OK`) and REST (`200`),
    // and the refused create's is Firestore's own answer.
    let outcomes: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.event.action.starts_with("document."))
        .filter_map(|r| r.event.outcome.as_ref().map(|o| o.status.as_str()))
        .collect();
    for status in ["OK", "200", "409"] {
        assert!(outcomes.contains(status), "{status} in {outcomes:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_and_node_clients_over_tls_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            extra_toml: EMBEDDED_TOML.into(),
            tls: Some((certs.cert.clone(), certs.key.clone())),
            ..Opts::default()
        },
    )
    .await;
    let port = target(&tg).rsplit_once(':').unwrap().1.to_owned();
    let tls_target = format!("localhost:{port}");
    let token = common::documents_token_over_tls(&op, &tls_target, &certs.ca).await;
    let tls = |client, mode| {
        Scenario::new(client, mode, &tls_target)
            .token(&token)
            .ca_file(&certs.ca)
    };
    let (py, node, node_rest) = (
        tls(ScenarioClient::Python, "latchkey-grpc-tls"),
        tls(ScenarioClient::Node, "latchkey-grpc-tls"),
        tls(ScenarioClient::Node, "latchkey-rest-tls"),
    );
    let (reference, py, node, node_rest) = tokio::join!(
        emulator_reference(ScenarioClient::Python),
        py.run(),
        node.run(),
        node_rest.run(),
    );
    let (py, node, node_rest) = (run_ok(py), run_ok(node), run_ok(node_rest));
    for report in [&py, &node, &node_rest] {
        assert_eq!(
            report.steps.len(),
            12,
            "every step ran:\n{}",
            report.summary()
        );
    }
    assert_same_steps(&node, &node_rest);
    if let Some((emu, reference)) = reference {
        for report in [&py, &node, &node_rest] {
            assert_same_steps(&reference, report);
        }
        emu.stop().await;
    }
    let listens = tg
        .audit_records()
        .into_iter()
        .filter(|r| r.event.action == "document.listen" && r.event.decision.is_some())
        .count();
    assert!(listens >= 3, "every client's listen was decided");
}

/// A developer writes, a reader cannot: the denied commit changes nothing
/// in the embedded store, and prod refuses the developer by name.
#[tokio::test(flavor = "multi_thread")]
async fn denied_writes_change_nothing_in_the_embedded_store() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            extra_toml: EMBEDDED_TOML.into(),
            ..Opts::default()
        },
    )
    .await;
    let dev = tg
        .token_for(&op, "alice", &["developers"], "documents")
        .await;
    let reader = tg.token_for(&op, "rita", &["readers"], "documents").await;
    let doc = |db: &str| format!("/v1/projects/{PROJECT}/databases/{db}/documents/flags/checkout");
    let patch = |token: &str, db: &str, on: bool| {
        tg.http
            .patch(tg.url(&doc(db)))
            .header("authorization", bearer(token))
            .json(&json!({"fields": {"enabled": {"booleanValue": on}}}))
            .send()
    };
    assert_eq!(patch(&dev, "(default)", true).await.unwrap().status(), 200);
    // Nobody in `readers` may write: no policy permits it.
    let r = patch(&reader, "(default)", false).await.unwrap();
    assert_eq!(r.status(), 403);
    // The developer may not write prod: the starter set's forbid, by name.
    let r = patch(&dev, "prod", true).await.unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(text.contains("protect-prod-documents"), "{text}");
    let get = |db: &str| {
        tg.http
            .get(tg.url(&doc(db)))
            .header("authorization", bearer(&dev))
            .send()
    };
    let body: Value = get("(default)").await.unwrap().json().await.unwrap();
    assert_eq!(
        body["fields"]["enabled"],
        json!({"booleanValue": true}),
        "{body}"
    );
    assert_eq!(get("prod").await.unwrap().status(), 404);
    // A commit of two writes with one denied applies neither.
    let commit = json!({"writes": [
        {"update": {"name": format!("projects/{PROJECT}/databases/prod/documents/flags/a"), "fields": {}}},
        {"update": {"name": format!("projects/{PROJECT}/databases/prod/documents/flags/b"), "fields": {}}},
    ]});
    let r = tg
        .http
        .post(tg.url(&format!(
            "/v1/projects/{PROJECT}/databases/prod/documents:commit"
        )))
        .header("authorization", bearer(&dev))
        .json(&commit)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let list: Value = tg
        .http
        .get(tg.url(&format!(
            "/v1/projects/{PROJECT}/databases/prod/documents/flags"
        )))
        .header("authorization", bearer(&dev))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list.get("documents").is_none(), "{list}");
}
