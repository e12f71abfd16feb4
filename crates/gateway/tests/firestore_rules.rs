//! A webhook rule writes a document through the Firestore path: decided by
//! Cedar for the `Service` principal, audited with the rule and the
//! delivery, and written into Google's real Firestore emulator.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{Opts, TestGateway};
use latchkey_core::Clock;
use latchkey_events::{Source, signature_headers};
use latchkey_testkit::OidcProvider;
use latchkey_testkit::firestore::FirestoreEmulator;
use serde_json::{Value, json};

const SECRET: &str = "webhook-secret-for-tests";

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../events/tests/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn emulator() -> Option<FirestoreEmulator> {
    FirestoreEmulator::start_or_skip().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_rule_writes_a_document_through_the_same_decision_path() {
    let Some(emu) = emulator().await else { return };
    let op = OidcProvider::start().await;
    let mut policies: Vec<(String, String)> = latchkey_policy::starter_policy_files()
        .into_iter()
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect();
    policies.push((
        "40-rules.cedar".into(),
        r#"@id("rules-record-pushes")
permit (principal is Latchkey::Service, action == Latchkey::Action::"document.update",
        resource in Latchkey::Collection::"(default)/pushes");"#
            .into(),
    ));
    let extra = format!(
        r#"
[firestore]
emulator = "{emu}"
project = "rules-test"
databases = {{ "(default)" = "dev" }}

[webhooks.gogs]
secret = {{ value = "{SECRET}" }}

[[rules]]
name = "record-pushes"
on = "push"
[rules.write_document]
path = "pushes/{{commit}}"
fields = {{ repository = "{{repository}}", branch = "{{branch}}" }}

[[rules]]
name = "forbidden-write"
on = "push"
[rules.write_document]
path = "elsewhere/{{commit}}"
fields = {{ repository = "{{repository}}" }}
"#,
        emu = emu.host_port()
    );
    let tg = TestGateway::start(
        &op,
        Opts {
            extra_toml: extra,
            policies: Some(policies),
            ..Opts::default()
        },
    )
    .await;

    let body = fixture("gogs_push");
    let commit = body["after"].as_str().unwrap().to_owned();
    let bytes = serde_json::to_vec(&body).unwrap();
    let mut req = tg
        .http
        .post(tg.url("/hooks/gogs"))
        .header("content-type", "application/json")
        .header("x-gogs-event", "push")
        .header("x-gogs-delivery", "rule-delivery-1");
    for (k, v) in signature_headers(Source::Gogs, SECRET.as_bytes(), &bytes, tg.clock.unix()) {
        req = req.header(k, v);
    }
    let resp = req.body(bytes).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let actions = answer["actions"].as_array().unwrap();
    let written = actions
        .iter()
        .find(|a| a["rule"] == "record-pushes")
        .unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(written["status"], 200, "{answer}");
    let refused = actions
        .iter()
        .find(|a| a["rule"] == "forbidden-write")
        .unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(refused["refused"], "PERMISSION_DENIED", "{answer}");

    // The document is in the emulator, written with Latchkey's credential.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let doc: Value = http
        .get(format!(
            "http://{}/v1/projects/rules-test/databases/(default)/documents/pushes/{commit}",
            emu.host_port()
        ))
        .bearer_auth("owner")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["fields"]["repository"]["stringValue"],
        json!("acme/payments"),
        "{doc}"
    );
    // The denied one never reached Firestore.
    let status = http
        .get(format!(
            "http://{}/v1/projects/rules-test/databases/(default)/documents/elsewhere/{commit}",
            emu.host_port()
        ))
        .bearer_auth("owner")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);

    // Audited as the Service, with the rule and the delivery.
    let records = tg.audit_records();
    let decision = records
        .iter()
        .map(|r| serde_json::to_value(&r.event).unwrap())
        .find(|e| {
            e["action"] == "document.update"
                && e["kind"] == "decision"
                && e["context"]["rule"] == "record-pushes"
        })
        .expect("a document.update decision for the rule");
    assert_eq!(decision["principal"]["kind"], "service", "{decision}");
    assert_eq!(decision["context"]["delivery_id"], "gogs:rule-delivery-1");
    assert_eq!(decision["context"]["environment"], "dev");
    assert_eq!(decision["decision"]["effect"], "allow");
    // Issue 13: the link to the delivery is the record's own `caused_by`,
    // not only a context entry; the write's outcome record carries it too.
    assert_eq!(decision["caused_by"], answer["request_id"], "{decision}");
    let outcome = records
        .iter()
        .map(|r| serde_json::to_value(&r.event).unwrap())
        .find(|e| {
            e["action"] == "document.update"
                && e["kind"] == "outcome"
                && e["context"]["rule"] == "record-pushes"
        })
        .expect("a document.update outcome for the rule");
    assert_eq!(outcome["caused_by"], answer["request_id"], "{outcome}");
}
