//! The audit witness (issue 11, point 2): each checkpoint is sent, as it is
//! signed, to a real HTTP endpoint and appended to a file; a failing witness
//! is retried without holding up appends; and the witnessed checkpoints
//! prove a cut that the local files alone cannot show.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::{Opts, TestGateway};
use latchkey_audit::{AuditError, Checkpoint, VerifyFailure, VerifyOptions, verify_with};
use latchkey_testkit::OidcProvider;
use tokio::time::Instant;

/// A witness that refuses its first `fail_first` deliveries.
#[derive(Default)]
struct Witness {
    held: Mutex<Vec<Checkpoint>>,
    fail_first: AtomicU32,
}

async fn take(State(w): State<Arc<Witness>>, Json(cp): Json<Checkpoint>) -> StatusCode {
    if w.fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    w.held.lock().unwrap().push(cp);
    StatusCode::OK
}

async fn show(State(w): State<Arc<Witness>>) -> Json<Vec<Checkpoint>> {
    Json(w.held.lock().unwrap().clone())
}

async fn start_witness(fail_first: u32) -> (String, Arc<Witness>) {
    let w = Arc::new(Witness {
        fail_first: AtomicU32::new(fail_first),
        ..Witness::default()
    });
    let app = axum::Router::new()
        .route("/checkpoints", post(take).get(show))
        .with_state(w.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/checkpoints", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, w)
}

fn file_checkpoints(path: &std::path::Path) -> Vec<Checkpoint> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn checkpoints_are_witnessed_and_prove_a_cut_log() {
    let (url, witness) = start_witness(1).await;
    let spare = tempfile::tempdir().unwrap();
    let witness_file = spare.path().join("witness.log");
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        Opts {
            extra_toml: format!(
                "[audit]\ncheckpoint_interval = \"1s\"\n\n[audit.witness]\nurl = \"{url}\"\nfile = {:?}\n",
                witness_file.display().to_string()
            ),
            ..Opts::default()
        },
    )
    .await;

    // The witness refuses the first delivery; appends go on regardless.
    for user in ["alice", "bob", "carol", "dave"] {
        let started = Instant::now();
        tg.token_for(&op, user, &["developers"], "git").await;
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tg.gw.shutdown().await;

    let dir = tg.audit_dir();
    let local: Vec<Checkpoint> = file_checkpoints(&dir.join("checkpoints.log"));
    assert!(local.len() >= 3, "{local:?}");
    let held = witness.held.lock().unwrap().clone();
    let filed = file_checkpoints(&witness_file);
    // Both witnesses hold the final checkpoint (the refused delivery was retried).
    assert_eq!(held.last(), local.last());
    assert_eq!(filed.last(), local.last());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&witness_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let store = latchkey_store::SqliteStore::open(&tg.data().join("latchkey.db"))
        .await
        .unwrap();
    let public = latchkey_gateway::audit_public_key(&store)
        .await
        .unwrap()
        .unwrap();
    let keys = [("audit-1".to_owned(), public)];
    let check = |w: &[Checkpoint]| {
        verify_with(
            &dir,
            &VerifyOptions {
                witness: w,
                ..VerifyOptions::new(&keys)
            },
        )
    };
    assert_eq!(check(&held).unwrap().witnessed, held.len() as u64);
    check(&filed).unwrap();

    // Cut back exactly to an earlier checkpoint: the local files agree
    // with each other, the witness does not.
    let keep = &local[1];
    let log = std::fs::read(dir.join("audit.log")).unwrap();
    std::fs::write(dir.join("audit.log"), &log[..keep.log_bytes as usize]).unwrap();
    let cps = std::fs::read_to_string(dir.join("checkpoints.log")).unwrap();
    let kept: Vec<&str> = cps.lines().take(2).collect();
    std::fs::write(
        dir.join("checkpoints.log"),
        format!("{}\n", kept.join("\n")),
    )
    .unwrap();
    check(&[]).unwrap();
    let last = local.last().unwrap();
    for w in [&held, &filed] {
        match check(w) {
            Err(AuditError::Verify(VerifyFailure::WitnessMissing { n, .. })) => {
                assert!(n > keep.n && n <= last.n);
            }
            other => panic!("the witness must show the cut: {other:?}"),
        }
    }
}
