//! Google's official Firestore clients, unchanged but for endpoint and
//! credential, through the real Latchkey in front of Google's real
//! Firestore emulator: the same scenario gives the same results as it does
//! against the emulator directly, every access is decided and audited, and
//! a token whose holder may only read cannot change a single document.
//!
//! Without an emulator on the machine these tests print `SKIPPED` and pass,
//! unless LATCHKEY_REQUIRE_FIRESTORE_EMULATOR=1.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Opts, TestGateway, assert_same_steps, bearer, run_ok};
use latchkey_audit::AuditRecord;
use latchkey_testkit::OidcProvider;
use latchkey_testkit::firestore::{FirestoreEmulator, Scenario, ScenarioClient};
use latchkey_testkit::tls::TestCerts;
use serde_json::{Value, json};

const PROJECT: &str = "latchkey-test";

/// `[firestore]` in front of `emu`, `(default)` mapped to environment
/// `dev`; values are recorded for collection `flags` only.
fn firestore_toml(emu: &FirestoreEmulator) -> String {
    format!(
        r#"
[firestore]
emulator = "{}"
databases = {{ "(default)" = "dev" }}
record_values = ["flags"]
"#,
        emu.host_port()
    )
}

/// `127.0.0.1:PORT` of a cleartext test gateway.
fn target(tg: &TestGateway) -> String {
    tg.base.trim_start_matches("http://").to_owned()
}

/// Decision records about documents.
fn document_decisions(records: &[AuditRecord]) -> Vec<&AuditRecord> {
    records
        .iter()
        .filter(|r| r.event.decision.is_some() && r.event.action.starts_with("document."))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn node_client_over_grpc_and_rest_matches_the_emulator_and_is_audited() {
    let Some(emu) = FirestoreEmulator::start_or_skip().await else {
        return;
    };
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            extra_toml: firestore_toml(&emu),
            ..Opts::default()
        },
    )
    .await;
    let token = tg
        .token_for(&op, "alice", &["developers"], "documents")
        .await;
    let target = target(&tg);

    let direct = Scenario::new(ScenarioClient::Node, "emulator", &emu.host_port());
    let grpc = Scenario::new(ScenarioClient::Node, "latchkey-grpc", &target).token(&token);
    let rest = Scenario::new(ScenarioClient::Node, "latchkey-rest", &target).token(&token);
    let (direct, grpc, rest) = tokio::join!(direct.run(), grpc.run(), rest.run());
    let (direct, grpc, rest) = (run_ok(direct), run_ok(grpc), run_ok(rest));
    assert_same_steps(&direct, &grpc);
    assert_same_steps(&direct, &rest);

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

    let records = tg.audit_records();
    let decisions = document_decisions(&records);
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
        let d = e.decision.as_ref().unwrap();
        assert_eq!(d.effect, "allow", "{e:?}");
        assert!(
            d.policy_ids.iter().any(|p| p.starts_with("developers-")),
            "{e:?}"
        );
        assert_eq!(e.principal.as_ref().unwrap().id, "alice", "{e:?}");
        assert_eq!(e.context["environment"], "dev", "{e:?}");
        assert_eq!(e.context["database"], "(default)", "{e:?}");
        assert!(e.context["method"].is_string(), "{e:?}");
    }
    // Both transports were decided on.
    let methods: BTreeSet<&str> = decisions
        .iter()
        .filter_map(|r| r.event.context["method"].as_str())
        .collect();
    for m in ["Commit", "RunQuery", "Listen", "ListCollectionIds"] {
        assert!(methods.contains(m), "no {m} in {methods:?}");
    }

    // Writes to `cities` name their fields, never their values.
    let writes: Vec<_> = decisions
        .iter()
        .filter(|r| r.event.action == "document.update")
        .collect();
    assert!(!writes.is_empty());
    for r in &writes {
        let c = &r.event.context;
        assert!(c["fields"].is_array(), "{c:?}");
        assert!(
            c.get("values").is_none(),
            "values leaked into the audit log: {c:?}"
        );
    }
    let masked = writes
        .iter()
        .find(|r| {
            r.event
                .context
                .get("update_mask")
                .is_some_and(|m| m.as_array().unwrap().iter().any(|f| f == "location.lat"))
        })
        .unwrap_or_else(|| panic!("no update decision carries the update mask"));
    let fields = masked.event.context["fields"].as_array().unwrap();
    assert!(fields.iter().any(|f| f == "population"), "{fields:?}");
    assert!(
        masked.event.context["transforms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "population:increment"),
        "{:?}",
        masked.event.context
    );
    // The `flags` create records its values.
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

    // Every decided call has an outcome, over gRPC (`OK`) and REST (`200`).
    let outcomes: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.event.action.starts_with("document."))
        .filter_map(|r| r.event.outcome.as_ref().map(|o| o.status.as_str()))
        .collect();
    assert!(outcomes.contains("OK"), "{outcomes:?}");
    assert!(outcomes.contains("200"), "{outcomes:?}");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_and_node_clients_over_tls_match_the_emulator() {
    let Some(emu) = FirestoreEmulator::start_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            extra_toml: firestore_toml(&emu),
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
    let reference = Scenario::new(ScenarioClient::Python, "emulator", &emu.host_port());
    let (py, node, node_rest) = (
        tls(ScenarioClient::Python, "latchkey-grpc-tls"),
        tls(ScenarioClient::Node, "latchkey-grpc-tls"),
        tls(ScenarioClient::Node, "latchkey-rest-tls"),
    );
    let (reference, py, node, node_rest) =
        tokio::join!(reference.run(), py.run(), node.run(), node_rest.run());
    let reference = run_ok(reference);
    for report in [py, node, node_rest] {
        assert_same_steps(&reference, &run_ok(report));
    }

    let listens = tg
        .audit_records()
        .into_iter()
        .filter(|r| r.event.action == "document.listen" && r.event.decision.is_some())
        .count();
    assert!(listens >= 3, "every client's listen was decided");
    emu.stop().await;
}

/// Starter policies for tokens, plus one that lets group `readers` read
/// documents and nothing else.
fn readers_policies() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = latchkey_policy::starter_policy_files()
        .into_iter()
        .filter(|(name, _)| *name == "10-tokens.cedar")
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect();
    assert_eq!(files.len(), 1, "the starter set has no 10-tokens.cedar");
    files.push((
        "30-readers.cedar".into(),
        r#"
@id("readers-read-documents")
permit (
  principal in Latchkey::Group::"readers",
  action in [
    Latchkey::Action::"document.get",
    Latchkey::Action::"document.list",
    Latchkey::Action::"document.query",
    Latchkey::Action::"document.listen"
  ],
  resource
);
"#
        .into(),
    ));
    files
}

fn s(v: &str) -> Value {
    json!({ "stringValue": v })
}
fn i(v: i64) -> Value {
    json!({ "integerValue": v.to_string() })
}
fn tags(v: &[&str]) -> Value {
    json!({ "arrayValue": { "values": v.iter().map(|t| s(t)).collect::<Vec<_>>() } })
}

/// What the scenario holds after its `batch` step, under collection ids
/// prefixed `seed_`, written straight into the emulator.
async fn seed(emu: &FirestoreEmulator) {
    let city = |name: &str, state: &str, pop: i64, t: &[&str]| json!({"name": s(name), "state": s(state), "population": i(pop), "tags": tags(t)});
    let mut sf = city("San Francisco", "CA", 861_000, &["west", "coast"]);
    sf["nickname"] = s("Fog City");
    let docs = [
        ("seed_cities/sf", sf),
        (
            "seed_cities/la",
            city("Los Angeles", "CA", 3_900_000, &["west"]),
        ),
        (
            "seed_cities/sd",
            city("San Diego", "CA", 1_400_000, &["west", "coast"]),
        ),
        (
            "seed_cities/nyc",
            city("New York", "NY", 8_300_000, &["east", "coast"]),
        ),
        (
            "seed_cities/sf/seed_landmarks/ggb",
            json!({"name": s("Golden Gate Bridge"), "type": s("bridge")}),
        ),
        (
            "seed_cities/sf/seed_landmarks/alcatraz",
            json!({"name": s("Alcatraz"), "type": s("island")}),
        ),
        (
            "seed_cities/nyc/seed_landmarks/bb",
            json!({"name": s("Brooklyn Bridge"), "type": s("bridge")}),
        ),
        (
            "seed_cities/sf/seed_neighborhoods/mission",
            json!({"name": s("Mission")}),
        ),
    ];
    for (path, fields) in docs {
        emu.put_document(PROJECT, "(default)", path, fields)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_token_reads_everything_and_changes_nothing() {
    let Some(emu) = FirestoreEmulator::start_or_skip().await else {
        return;
    };
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            extra_toml: firestore_toml(&emu),
            policies: Some(readers_policies()),
            ..Opts::default()
        },
    )
    .await;
    seed(&emu).await;
    let before = emu
        .documents(PROJECT, "(default)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(before.len(), 8, "{before:?}");

    let token = tg.token_for(&op, "rita", &["readers"], "documents").await;
    let report = Scenario::new(ScenarioClient::Node, "latchkey-grpc", &target(&tg))
        .token(&token)
        .prefix("seed_")
        .step_timeout(Duration::from_secs(5))
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let summary = format!("{}\nstderr:\n{}", report.summary(), report.stderr);

    for write in ["set", "update_transforms", "batch", "transaction", "delete"] {
        let step = report.step(write).unwrap();
        assert_eq!(
            step.error_code.as_deref(),
            Some("PERMISSION_DENIED"),
            "{write}:\n{summary}"
        );
        let message = step.error_message.as_deref().unwrap_or_default();
        assert!(
            message.contains("no policy permits `document.update`")
                || message.contains("no policy permits `document.delete`"),
            "{write}: the denial says no policy allows it: {message}"
        );
    }
    // Reads of what was there succeed, with what the full scenario reads.
    let expected = [
        (
            "query",
            json!([{"id": "la", "population": 3_900_000}, {"id": "sd", "population": 1_400_000}]),
        ),
        ("query_array_contains", json!(["nyc", "sd", "sf"])),
        ("count", json!({"count": 3})),
        (
            "collection_group",
            json!([
                {"path": "cities/nyc/landmarks/bb", "name": "Brooklyn Bridge"},
                {"path": "cities/sf/landmarks/ggb", "name": "Golden Gate Bridge"},
            ]),
        ),
        ("list_collections", json!(["landmarks", "neighborhoods"])),
        ("listen", json!({"ids": ["la", "sd", "sf"]})),
    ];
    for (name, want) in expected {
        let step = report.step(name).unwrap();
        assert!(step.ok, "{name}:\n{summary}");
        assert_eq!(step.result.as_ref(), Some(&want), "{name}");
    }
    let get = report.step("get").unwrap();
    assert!(get.ok, "get:\n{summary}");
    let data = &get.result.as_ref().unwrap()["data"];
    assert_eq!(data["nickname"], "Fog City", "{data}");
    assert_eq!(data["population"], 861_000, "{data}");

    let after = emu
        .documents(PROJECT, "(default)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(before, after, "a read-only token changed the database");

    // The denials are recorded as such.
    let denied: BTreeSet<String> = tg
        .audit_records()
        .into_iter()
        .filter(|r| {
            r.event
                .decision
                .as_ref()
                .is_some_and(|d| d.effect == "deny")
        })
        .map(|r| r.event.action)
        .collect();
    assert_eq!(
        denied,
        BTreeSet::from(["document.update".to_owned(), "document.delete".to_owned()])
    );
    emu.stop().await;
}
