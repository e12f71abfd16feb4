//! Smoke tests of the Firestore harness: Google's real emulator, driven by
//! Google's official Node.js and Python clients. Their `latchkey-*` modes
//! are exercised against the real gateway in `crates/gateway/tests`.
//!
//! When the machine has no emulator (gcloud, its Firestore component or
//! Java), these tests say so on stderr and pass without running, unless
//! LATCHKEY_REQUIRE_FIRESTORE_EMULATOR=1 makes that a failure.

use latchkey_testkit::firestore::{FirestoreEmulator, Scenario, ScenarioClient, ScenarioReport};

async fn emulator() -> Option<FirestoreEmulator> {
    FirestoreEmulator::start_or_skip().await
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
async fn put_lists_and_resets_documents() {
    let Some(emu) = emulator().await else { return };
    let fields = serde_json::json!({"a": {"integerValue": "1"}});
    for db in ["(default)", "other"] {
        for path in ["c/d", "c/e/sub/f", "top/g/deeper/h/deepest/i"] {
            emu.put_document("p1", db, path, fields.clone())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let listed = emu
        .documents("p1", "(default)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // `c/e` and `top/g` exist only as parents of subcollections: not listed.
    let paths: Vec<&str> = listed.keys().map(String::as_str).collect();
    assert_eq!(paths, ["c/d", "c/e/sub/f", "top/g/deeper/h/deepest/i"]);
    assert!(listed.values().all(|f| *f == fields), "{listed:?}");

    let count = |db: &'static str| {
        let emu = &emu;
        async move {
            emu.documents("p1", db)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .len()
        }
    };
    emu.reset("p1").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(count("(default)").await, 0);
    assert_eq!(count("other").await, 3, "reset touches only (default)");
    emu.reset_database("p1", "other")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(count("other").await, 0);
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
