//! Behaviour of `PostgresStore` against a real PostgreSQL (a throwaway
//! cluster, or a fresh database in `DATABASE_URL`): the shared suite
//! (`common`), then what several nodes sharing one database rely on.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{audit, key, revocation};
use latchkey_store::{
    AuditQuery, PostgresOptions, PostgresStore, Revocation, RevocationKind, RevocationMode, Store,
    StoreError, WitnessedCheckpoint,
};
use latchkey_testkit::postgres::{PostgresServer, wait_ready};

async fn server() -> Option<PostgresServer> {
    PostgresServer::start().await.ok()
}

async fn store(server: &PostgresServer, node: &str) -> PostgresStore {
    PostgresStore::connect(server.url(), node, PostgresOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connect as `{node}`: {e}"))
}

/// One test per shared case, each on its own database.
macro_rules! pg_store_tests {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(pg) = server().await else { return };
                let s = store(&pg, "n1").await;
                common::$case(&s).await;
            }
        )*
    };
}
store_cases!(pg_store_tests);

mod documents {
    use super::*;

    macro_rules! pg_document_tests {
        ($($case:ident),* $(,)?) => {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(pg) = server().await else { return };
                    let s = store(&pg, "n1").await;
                    common::$case(s.document_rows().as_ref()).await;
                }
            )*
        };
    }
    document_cases!(pg_document_tests);
}

fn sorted(mut rows: Vec<Revocation>) -> Vec<Revocation> {
    rows.sort_by(|a, b| {
        (a.kind.as_str(), &a.value, a.mode.as_str()).cmp(&(
            b.kind.as_str(),
            &b.value,
            b.mode.as_str(),
        ))
    });
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_revoking_at_once_make_one_gapless_log() {
    let Some(pg) = server().await else { return };
    let stores: Vec<Arc<PostgresStore>> = vec![
        Arc::new(store(&pg, "a").await),
        Arc::new(store(&pg, "b").await),
        Arc::new(store(&pg, "c").await),
    ];
    let mut tasks = Vec::new();
    for (n, s) in stores.iter().enumerate() {
        let s = Arc::clone(s);
        tasks.push(tokio::spawn(async move {
            for i in 0..100u64 {
                // Some values repeat across nodes (an upsert that widens),
                // some are lifted again (a delete that logs).
                let value = if i % 10 == 0 {
                    format!("shared-{i}")
                } else {
                    format!("{n}-{i}")
                };
                let mut r = revocation(RevocationKind::Subject, &value, RevocationMode::Revoke);
                r.created_at = 1_000 + i;
                if i % 7 == 3 && (i - 1) % 10 != 0 {
                    // Lift the one this node made just before (it exists,
                    // so the lift logs).
                    let earlier = format!("{n}-{}", i - 1);
                    let lifted = s
                        .delete_revocation(
                            RevocationKind::Subject,
                            &earlier,
                            RevocationMode::Revoke,
                        )
                        .await
                        .unwrap();
                    assert!(lifted, "{earlier}");
                } else {
                    s.insert_revocation(&r).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let changes = stores[0].revocation_changes(0, 10_000).await.unwrap();
    let seqs: Vec<u64> = changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<u64>>(), "gapless, in order");
    let snapshot = stores[0].revocation_snapshot(0).await.unwrap();
    assert_eq!(snapshot.head, 300);
    for s in &stores[1..] {
        let other = s.revocation_snapshot(0).await.unwrap();
        assert_eq!(sorted(other.rows), sorted(snapshot.rows.clone()));
        assert_eq!(other.head, 300);
    }
    // Replaying the log from nothing gives the same set.
    let mut applied = std::collections::HashMap::new();
    for c in &changes {
        let k = (c.kind, c.value.clone(), c.mode);
        match &c.revocation {
            Some(r) => {
                applied.insert(k, r.clone());
            }
            None => {
                applied.remove(&k);
            }
        }
    }
    let replayed = sorted(applied.into_values().collect());
    assert_eq!(replayed, sorted(snapshot.rows));
    // Paging.
    let page = stores[1].revocation_changes(295, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![296, 297, 298]
    );
}

#[tokio::test]
async fn a_delete_of_nothing_logs_nothing_and_an_insert_logs_the_row_after() {
    let Some(pg) = server().await else { return };
    let s = store(&pg, "n1").await;
    assert!(
        !s.delete_revocation(RevocationKind::Job, "x", RevocationMode::Freeze)
            .await
            .unwrap()
    );
    assert!(s.revocation_changes(0, 10).await.unwrap().is_empty());
    let mut first = revocation(RevocationKind::Job, "x", RevocationMode::Freeze);
    first.expires_at = Some(5_000);
    s.insert_revocation(&first).await.unwrap();
    let mut older = first.clone();
    older.created_at = 10;
    older.reason = "again".into();
    s.insert_revocation(&older).await.unwrap();
    assert!(
        s.delete_revocation(RevocationKind::Job, "x", RevocationMode::Freeze)
            .await
            .unwrap()
    );
    let changes = s.revocation_changes(0, 10).await.unwrap();
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[0].revocation, Some(first.clone()));
    // The widened row as stored, not the request.
    let mut widened = first;
    widened.reason = "again".into();
    assert_eq!(changes[1].revocation, Some(widened));
    assert_eq!(changes[2].revocation, None);
    assert_eq!(s.revocation_snapshot(0).await.unwrap().head, 3);
}

async fn wait_for(
    feed: &mut tokio::sync::watch::Receiver<latchkey_store::FeedState>,
    limit: Duration,
    pred: impl Fn(&latchkey_store::FeedState) -> bool,
) -> bool {
    tokio::time::timeout(limit, feed.wait_for(|s| pred(s)))
        .await
        .is_ok_and(|r| r.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_moves_within_a_second_and_survives_a_restart() {
    let Some(mut pg) = server().await else { return };
    let a = store(&pg, "a").await;
    let b = store(&pg, "b").await;
    let mut feed = b.change_feed().unwrap();
    assert!(feed.borrow().connected);
    let before = feed.borrow().notifications;
    a.insert_revocation(&revocation(
        RevocationKind::Token,
        "t1",
        RevocationMode::Revoke,
    ))
    .await
    .unwrap();
    assert!(
        wait_for(&mut feed, Duration::from_secs(1), |s| s.notifications
            > before)
        .await,
        "no notification within 1 s: {:?}",
        *feed.borrow()
    );
    if !pg.can_restart() {
        latchkey_testkit::skip_or_fail(
            latchkey_testkit::postgres::PEER,
            "DATABASE_URL is set: the restart half of this test needs a private cluster",
        );
        return;
    }
    pg.restart_immediate().await.unwrap();
    wait_ready(pg.url(), Duration::from_secs(30)).await.unwrap();
    assert!(
        wait_for(&mut feed, Duration::from_secs(10), |s| s.reconnects >= 1
            && s.connected)
        .await,
        "the feed did not reconnect: {:?}",
        *feed.borrow()
    );
    // The pool's connections died too; the first use may fail once.
    let r2 = revocation(RevocationKind::Token, "t2", RevocationMode::Revoke);
    let seen = feed.borrow().notifications;
    let mut done = false;
    for _ in 0..20 {
        if a.insert_revocation(&r2).await.is_ok() {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done, "store a did not recover after the restart");
    assert!(
        wait_for(&mut feed, Duration::from_secs(1), |s| s.notifications
            > seen)
        .await,
        "no notification after the restart: {:?}",
        *feed.borrow()
    );
    let mut changes = Vec::new();
    for _ in 0..20 {
        if let Ok(c) = b.revocation_changes(1, 100).await {
            changes = c;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].revocation, Some(r2));
    // The node-name locks died with the old server; each store took its
    // own back (checked every second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let err = PostgresStore::connect(pg.url(), "b", PostgresOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_on_two_nodes_at_once_is_new_exactly_once() {
    let Some(pg) = server().await else { return };
    let a = Arc::new(store(&pg, "a").await);
    let b = Arc::new(store(&pg, "b").await);
    for round in 0..100 {
        let id = format!("d-{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let run = |s: Arc<PostgresStore>, id: String, barrier: Arc<tokio::sync::Barrier>| {
            tokio::spawn(async move {
                barrier.wait().await;
                let d = s.record_delivery("github", &id, 10).await.unwrap();
                let body = s.record_signed_body("github", &id, 10, 300).await.unwrap();
                (d, body)
            })
        };
        let ta = run(Arc::clone(&a), id.clone(), Arc::clone(&barrier));
        let tb = run(Arc::clone(&b), id, barrier);
        let (ra, rb) = (ta.await.unwrap(), tb.await.unwrap());
        assert!(ra.0 ^ rb.0, "round {round}: deliveries {ra:?} {rb:?}");
        assert!(ra.1 ^ rb.1, "round {round}: bodies {ra:?} {rb:?}");
    }
}

#[tokio::test]
async fn the_leader_lock_is_held_by_one_and_passes_on_when_dropped() {
    let Some(pg) = server().await else { return };
    let a = store(&pg, "a").await;
    let b = store(&pg, "b").await;
    assert!(a.lead("x").await.unwrap());
    assert!(!b.lead("x").await.unwrap());
    // Still held on the next call; another job is independent.
    assert!(a.lead("x").await.unwrap());
    assert!(b.lead("y").await.unwrap());
    assert!(!a.lead("y").await.unwrap());
    drop(a);
    let mut passed = false;
    for _ in 0..50 {
        if b.lead("x").await.unwrap() {
            passed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(passed, "the lock did not pass to b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_rotations_add_one_key_and_counters_have_no_gaps() {
    let Some(pg) = server().await else { return };
    let a = Arc::new(store(&pg, "a").await);
    let b = Arc::new(store(&pg, "b").await);
    for round in 0..20u64 {
        // Each round: both nodes want a successor signing past `after`.
        let after = 1_000 * (round + 1);
        let mut ka = key(&format!("a-{round}"), after);
        let mut kb = key(&format!("b-{round}"), after);
        ka.signs_until = after + 500;
        kb.signs_until = after + 500;
        let (sa, sb) = (Arc::clone(&a), Arc::clone(&b));
        let ta =
            tokio::spawn(async move { sa.insert_signing_key_unless_covered(&ka, after).await });
        let tb =
            tokio::spawn(async move { sb.insert_signing_key_unless_covered(&kb, after).await });
        let (ra, rb) = (ta.await.unwrap().unwrap(), tb.await.unwrap().unwrap());
        assert!(ra ^ rb, "round {round}: {ra} {rb}");
    }
    assert_eq!(a.list_signing_keys().await.unwrap().len(), 20);

    let mut tasks = Vec::new();
    for s in [&a, &b] {
        let s = Arc::clone(s);
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..100 {
                got.push(s.next_counter("serial").await.unwrap());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<u64>>());
    // Counters are separate by name, and every node reads the same value.
    assert_eq!(a.counter("serial").await.unwrap(), 200);
    assert_eq!(b.counter("other").await.unwrap(), 0);
    assert_eq!(b.next_counter("other").await.unwrap(), 1);
    assert_eq!(a.counter("other").await.unwrap(), 1);
}

#[tokio::test]
async fn a_second_process_with_the_same_node_name_is_refused() {
    let Some(pg) = server().await else { return };
    let first = store(&pg, "gw-1").await;
    let err = PostgresStore::connect(pg.url(), "gw-1", PostgresOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "state store conflict: node `gw-1` is already running against this database; give each \
         node its own `[store] node`"
    );
    // Another name is fine; after the first is gone, its name is free.
    let _other = store(&pg, "gw-2").await;
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        match PostgresStore::connect(pg.url(), "gw-1", PostgresOptions::default()).await {
            Ok(s) => {
                again = Some(s);
                break;
            }
            Err(StoreError::Conflict(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(again.is_some(), "the name was not released");
}

#[tokio::test]
async fn audit_rows_and_checkpoints_are_kept_per_node() {
    let Some(pg) = server().await else { return };
    let a = store(&pg, "a").await;
    let b = store(&pg, "b").await;
    // Rows claim another node: the store stamps its own.
    let mut rows: Vec<_> = (1..=5).map(audit).collect();
    for r in &mut rows {
        r.node = "someone-else".into();
    }
    a.index_audit_events(&rows).await.unwrap();
    // b's rows interleave in time with a's.
    let mut rows_b: Vec<_> = (1..=3).map(audit).collect();
    for r in &mut rows_b {
        r.time_ms += 500;
    }
    b.index_audit_events(&rows_b).await.unwrap();
    assert_eq!(a.max_audit_seq().await.unwrap(), Some(5));
    assert_eq!(b.max_audit_seq().await.unwrap(), Some(3));
    let all = a.query_audit(&AuditQuery::default()).await.unwrap();
    let order: Vec<(String, u64)> = all.iter().map(|r| (r.node.clone(), r.seq)).collect();
    let expected: Vec<(String, u64)> = [
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("b", 2),
        ("a", 3),
        ("b", 3),
        ("a", 4),
        ("a", 5),
    ]
    .iter()
    .map(|(n, s)| ((*n).to_owned(), *s))
    .collect();
    assert_eq!(order, expected);
    let newest = b
        .query_audit(&AuditQuery {
            limit: 3,
            newest: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let order: Vec<(String, u64)> = newest.iter().map(|r| (r.node.clone(), r.seq)).collect();
    assert_eq!(order, expected[5..].to_vec());
    let only_b = a
        .query_audit(&AuditQuery {
            node: Some("b".into()),
            after_seq: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(common::seqs(&only_b), vec![2, 3]);
    assert!(only_b.iter().all(|r| r.node == "b"));

    // Checkpoints: idempotent, a different one for the same seq refused.
    let c1 = WitnessedCheckpoint {
        seq: 5,
        json: "{\"seq\":5}".into(),
    };
    a.witness_audit_checkpoint(&c1).await.unwrap();
    a.witness_audit_checkpoint(&c1).await.unwrap();
    let forked = WitnessedCheckpoint {
        seq: 5,
        json: "{\"seq\":5,\"forked\":true}".into(),
    };
    let err = a.witness_audit_checkpoint(&forked).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("`a`"), "{err}");
    let c0 = WitnessedCheckpoint {
        seq: 2,
        json: "{\"seq\":2}".into(),
    };
    a.witness_audit_checkpoint(&c0).await.unwrap();
    assert_eq!(
        b.witnessed_audit_checkpoints("a").await.unwrap(),
        vec![c0, c1]
    );
    assert!(b.witnessed_audit_checkpoints("b").await.unwrap().is_empty());
    let nodes = b.audit_nodes().await.unwrap();
    let summary: Vec<_> = nodes
        .iter()
        .map(|n| (n.node.as_str(), n.max_seq, n.checkpoint_seq))
        .collect();
    assert_eq!(summary, vec![("a", Some(5), Some(5)), ("b", Some(3), None)]);
    // Clearing concerns only this node's rows.
    a.clear_audit_index().await.unwrap();
    assert_eq!(a.max_audit_seq().await.unwrap(), None);
    assert_eq!(b.max_audit_seq().await.unwrap(), Some(3));
}

#[tokio::test]
async fn transaction_bindings_are_shared_and_expire() {
    let Some(pg) = server().await else { return };
    let a = store(&pg, "a").await;
    let b = store(&pg, "b").await;
    assert!(a.is_shared() && a.node() == "a");
    a.bind_transaction(b"tx-1", "alice", 1_000).await.unwrap();
    a.bind_transaction(b"tx-2", "bob", 500).await.unwrap();
    assert_eq!(
        b.transaction_owner(b"tx-1", 999).await.unwrap().as_deref(),
        Some("alice")
    );
    assert_eq!(b.transaction_owner(b"tx-1", 1_000).await.unwrap(), None);
    // Another caller cannot take it over.
    assert!(matches!(
        b.bind_transaction(b"tx-1", "mallory", 2_000).await,
        Err(StoreError::Conflict(_))
    ));
    // Ending one also forgets every expired one.
    b.end_transaction(b"tx-1", 600).await.unwrap();
    assert_eq!(a.transaction_owner(b"tx-1", 0).await.unwrap(), None);
    assert_eq!(a.transaction_owner(b"tx-2", 0).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_starting_at_once_migrate_once() {
    let Some(pg) = server().await else { return };
    let url = pg.url().to_owned();
    let (a, b, c) = tokio::join!(
        PostgresStore::connect(&url, "a", PostgresOptions::default()),
        PostgresStore::connect(&url, "b", PostgresOptions::default()),
        PostgresStore::connect(&url, "c", PostgresOptions::default()),
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let versions = a.applied_migrations().await.unwrap();
    assert!(!versions.is_empty());
    assert_eq!(b.applied_migrations().await.unwrap(), versions);
    assert_eq!(c.applied_migrations().await.unwrap(), versions);
}

#[tokio::test]
async fn connection_errors_name_the_setting_and_never_the_password() {
    let port = latchkey_testkit::free_port();
    let url = format!("postgres://u:hunter2-secret@127.0.0.1:{port}/db?connect_timeout=2");
    let options = PostgresOptions {
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let err = PostgresStore::connect(&url, "n", options)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}/db")), "{msg}");
    assert!(msg.contains("host and port"), "{msg}");

    let Some(pg) = server().await else { return };
    // The test cluster offers no TLS: `sslmode=require` fails naming it.
    let tls = format!("{}?sslmode=require", pg.url());
    let err = PostgresStore::connect(&tls, "n", options)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("sslmode"), "{msg}");
    let debug = format!("{:?}", store(&pg, "n").await);
    assert!(
        debug.contains("PostgresStore") && !debug.contains("password"),
        "{debug}"
    );
}

/// `sslmode=verify-full` with the server's CA: the store's connections are
/// TLS (rustls), as PostgreSQL itself reports; with another CA the connect
/// fails and says which settings to check, never the password.
#[tokio::test]
async fn a_url_that_asks_for_tls_gets_verified_tls() {
    let Ok((pg, ca)) = PostgresServer::start_tls().await else {
        return;
    };
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        ca.display()
    );
    let store = PostgresStore::connect(&url, "tls-node", PostgresOptions::default())
        .await
        .unwrap();
    store
        .insert_revocation(&revocation(
            RevocationKind::Subject,
            "over-tls",
            RevocationMode::Revoke,
        ))
        .await
        .unwrap();
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let ssl: bool = sqlx::query_scalar(
        "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE datname = current_database() AND backend_type = 'client backend'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(ssl, "a connection to the database is not TLS");

    // Another CA: refused, naming the TLS settings.
    let other = tempfile::tempdir().unwrap();
    let wrong = latchkey_testkit::tls::TestCerts::create(other.path()).unwrap();
    let bad = pg
        .url()
        .replacen("postgres@", "postgres:hunter2-secret@", 1);
    let bad = format!(
        "{bad}?sslmode=verify-full&sslrootcert={}",
        wrong.ca.display()
    );
    let err = PostgresStore::connect(
        &bad,
        "tls-other",
        PostgresOptions {
            connect_timeout: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("sslmode") || err.contains("sslrootcert"),
        "{err}"
    );
    assert!(!err.contains("hunter2-secret"), "{err}");
}
