//! Smoke tests of the Firestore harness: Google's real emulator, driven by
//! Google's official Node.js and Python clients, directly and through the
//! FAKE gateway that checks the credential the `latchkey-*` modes send.
//!
//! When the machine has no emulator (gcloud, its Firestore component or
//! Java), these tests say so on stderr and pass without running, unless
//! LATCHKEY_REQUIRE_FIRESTORE_EMULATOR=1 makes that a failure.

use std::time::Duration;

use latchkey_testkit::firestore::{
    FakeGateway, FirestoreEmulator, Scenario, ScenarioClient, ScenarioReport,
};

async fn emulator() -> Option<FirestoreEmulator> {
    match FirestoreEmulator::start().await {
        Ok(e) => Some(e),
        Err(e)
            if e.is_not_installed()
                && std::env::var_os("LATCHKEY_REQUIRE_FIRESTORE_EMULATOR").is_none() =>
        {
            eprintln!("SKIPPED: no Firestore emulator on this machine: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn assert_all_ok(report: &ScenarioReport) {
    assert!(
        report.failed().is_empty(),
        "{} scenario in mode {} had failing steps:\n{}\nstderr:\n{}",
        report.client,
        report.mode,
        report.summary(),
        report.stderr
    );
}

/// Every step both clients have gives the same normalized result.
fn assert_same_results(a: &ScenarioReport, b: &ScenarioReport) {
    let mut compared = 0;
    for sa in &a.steps {
        if let Some(sb) = b.step(&sa.step) {
            assert_eq!(
                sa.result, sb.result,
                "step `{}`: {} ({}) and {} ({}) disagree",
                sa.step, a.client, a.mode, b.client, b.mode
            );
            compared += 1;
        }
    }
    assert!(compared >= 10, "only {compared} steps in common");
}

#[tokio::test]
async fn node_and_python_clients_agree_on_the_emulator() {
    let Some(emu) = emulator().await else { return };
    let target = emu.host_port();
    let node = Scenario::new(ScenarioClient::Node, "emulator", &target);
    let python = Scenario::new(ScenarioClient::Python, "emulator", &target);
    let (node, python) = tokio::join!(node.run(), python.run());
    let (node, python) = (
        node.unwrap_or_else(|e| panic!("{e}")),
        python.unwrap_or_else(|e| panic!("{e}")),
    );
    assert_all_ok(&node);
    assert_all_ok(&python);
    assert_same_results(&node, &python);
    // A second run (fresh prefix, same emulator) prints exactly the same.
    let again = Scenario::new(ScenarioClient::Node, "emulator", &target)
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(node.json, again.json);
    emu.stop().await;
}

#[tokio::test]
async fn reset_deletes_every_document() {
    let Some(emu) = emulator().await else { return };
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let doc = |db: &str| {
        format!(
            "{}/v1/projects/p1/databases/{db}/documents/c/d",
            emu.base_url()
        )
    };
    for db in ["(default)", "other"] {
        let resp = http
            .patch(doc(db))
            .bearer_auth("owner")
            .json(&serde_json::json!({"fields": {"a": {"integerValue": "1"}}}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            resp.status().is_success(),
            "write to {db}: {}",
            resp.status()
        );
    }
    let status = |db: &'static str| {
        let (http, url) = (http.clone(), doc(db));
        async move {
            http.get(url)
                .bearer_auth("owner")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .status()
                .as_u16()
        }
    };
    emu.reset("p1").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status("(default)").await, 404);
    assert_eq!(status("other").await, 200, "reset touches only (default)");
    emu.reset_database("p1", "other")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status("other").await, 404);
}

#[tokio::test]
async fn latchkey_modes_send_exactly_the_bearer_token() {
    let Some(emu) = emulator().await else { return };
    let reference = Scenario::new(ScenarioClient::Node, "emulator", &emu.host_port())
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_all_ok(&reference);

    let token = "lk-test-token";
    let gw = FakeGateway::start(&emu.host_port(), token, true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (plain, tls) = (
        gw.plain().to_owned(),
        gw.tls().unwrap_or_default().to_owned(),
    );
    let ca = gw.ca_file().map(|p| p.to_path_buf()).unwrap_or_default();
    let run = |client, mode, target: &str| {
        let scenario = Scenario::new(client, mode, target)
            .token(token)
            .ca_file(&ca);
        async move { scenario.run().await }
    };
    // A wrong token is refused, and the client reports it as such.
    let wrong = Scenario::new(ScenarioClient::Node, "latchkey-grpc", &plain)
        .token("not-the-token")
        .step_timeout(Duration::from_secs(2));
    let (grpc, rest, grpc_tls, rest_tls, py_tls, refused) = tokio::join!(
        run(ScenarioClient::Node, "latchkey-grpc", &plain),
        run(ScenarioClient::Node, "latchkey-rest", &plain),
        run(ScenarioClient::Node, "latchkey-grpc-tls", &tls),
        run(ScenarioClient::Node, "latchkey-rest-tls", &tls),
        run(ScenarioClient::Python, "latchkey-grpc-tls", &tls),
        wrong.run(),
    );
    for report in [grpc, rest, grpc_tls, rest_tls, py_tls] {
        let report = report.unwrap_or_else(|e| panic!("{e}"));
        assert_all_ok(&report);
        assert_same_results(&reference, &report);
    }
    let refused = refused.unwrap_or_else(|e| panic!("{e}"));
    let set = refused
        .step("set")
        .unwrap_or_else(|| panic!("no `set` step"));
    assert_eq!(
        set.error_code.as_deref(),
        Some("UNAUTHENTICATED"),
        "{}",
        refused.summary()
    );

    let stats = gw.finish().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(stats.accepted > 50, "{stats:?}");
    assert!(
        stats.refused > 0
            && stats
                .refused_auth
                .iter()
                .all(|a| a == "Bearer not-the-token"),
        "only the wrong-token run may be refused, and never for `Bearer owner`: {stats:?}"
    );
}

#[tokio::test]
async fn parallel_emulators_get_their_own_ports_and_leave_no_process() {
    let (a, b) = tokio::join!(emulator(), emulator());
    let (Some(a), Some(b)) = (a, b) else { return };
    assert_ne!(a.port(), b.port());
    let ports = [a.port(), b.port()];
    assert_eq!(java_processes_on(&ports), 2, "one Java emulator per port");
    drop(a);
    b.stop().await;
    assert_eq!(
        java_processes_on(&ports),
        0,
        "an emulator outlived its harness"
    );
}

/// Live (non-zombie) processes whose command line names one of `ports`
/// as the emulator's `--port=`.
fn java_processes_on(ports: &[u16]) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            let path = e.path();
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            !zombie
                && args.first().is_some_and(|a| a.ends_with("java"))
                && ports
                    .iter()
                    .any(|p| args.iter().any(|a| *a == format!("--port={p}")))
        })
        .count()
}
