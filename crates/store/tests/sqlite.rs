//! Behaviour of `SqliteStore`: the shared suite (`common`), each case run on
//! a temp-file database and in memory, then what only SQLite has.
#![allow(clippy::unwrap_used)]

mod common;

use common::{audit, key, revocation};
use latchkey_store::{AuditQuery, RevocationKind, RevocationMode, SqliteStore, Store, StoreError};

/// A store plus the temp dir keeping its file alive.
struct Fixture {
    store: SqliteStore,
    _dir: Option<tempfile::TempDir>,
}

async fn file_store() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    Fixture {
        store,
        _dir: Some(dir),
    }
}

async fn memory_store() -> Fixture {
    Fixture {
        store: SqliteStore::open_in_memory().await.unwrap(),
        _dir: None,
    }
}

async fn both() -> Vec<Fixture> {
    vec![file_store().await, memory_store().await]
}

/// One test per shared case, run on a file and in memory.
macro_rules! sqlite_store_tests {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                for f in both().await {
                    common::$case(&f.store).await;
                }
            }
        )*
    };
}
store_cases!(sqlite_store_tests);

/// The document-rows cases, on a file and in memory.
mod documents {
    use super::*;

    macro_rules! sqlite_document_tests {
        ($($case:ident),* $(,)?) => {
            $(
                #[tokio::test]
                async fn $case() {
                    for f in both().await {
                        common::$case(f.store.document_rows().as_ref()).await;
                    }
                }
            )*
        };
    }
    document_cases!(sqlite_document_tests);
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.db");
    let s = SqliteStore::open(&path).await.unwrap();
    let versions = s.applied_migrations().await.unwrap();
    assert!(!versions.is_empty());
    s.insert_signing_key(&key("k1", 1)).await.unwrap();
    s.insert_revocation(&revocation(
        RevocationKind::Job,
        "7",
        RevocationMode::Freeze,
    ))
    .await
    .unwrap();
    assert!(s.record_delivery("github", "d", 1).await.unwrap());
    s.index_audit_events(&[audit(1), audit(2)]).await.unwrap();
    s.put_meta("m", b"v").await.unwrap();
    s.close().await;

    for _ in 0..2 {
        let s = SqliteStore::open(&path).await.unwrap();
        assert_eq!(s.applied_migrations().await.unwrap(), versions);
        assert_eq!(s.list_signing_keys().await.unwrap(), vec![key("k1", 1)]);
        assert_eq!(s.list_revocations(0).await.unwrap().len(), 1);
        assert!(!s.record_delivery("github", "d", 2).await.unwrap());
        assert_eq!(s.max_audit_seq().await.unwrap(), Some(2));
        assert_eq!(s.get_meta("m").await.unwrap(), Some(b"v".to_vec()));
        s.close().await;
    }
}

#[tokio::test]
async fn two_stores_on_one_file_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let (a, b) = tokio::join!(SqliteStore::open(&path), SqliteStore::open(&path));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.record_delivery("github", "x", 1).await.unwrap());
    assert!(!b.record_delivery("github", "x", 1).await.unwrap());
    let first: Vec<_> = (1..=500).map(audit).collect();
    let second: Vec<_> = (400..=900).map(audit).collect();
    let (ra, rb) = tokio::join!(a.index_audit_events(&first), b.index_audit_events(&second));
    ra.unwrap();
    rb.unwrap();
    assert_eq!(a.max_audit_seq().await.unwrap(), Some(900));
    assert_eq!(
        b.query_audit(&AuditQuery {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        900
    );
}

#[tokio::test]
async fn opening_in_a_missing_directory_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(&dir.path().join("no/such/dir/state.db"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("state.db"), "{err}");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    let s = SqliteStore::open(&path).await.unwrap();
    s.close().await;
    {
        // Pretend a newer build migrated this file.
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::Migration(_)), "{err:?}");
    assert!(err.to_string().contains("9999"), "{err}");
}

#[tokio::test]
async fn store_is_usable_as_a_trait_object() {
    let s: latchkey_store::SharedStore =
        std::sync::Arc::new(SqliteStore::open_in_memory().await.unwrap());
    s.put_meta("a", b"b").await.unwrap();
    assert_eq!(s.get_meta("a").await.unwrap(), Some(b"b".to_vec()));
}

/// Prints indexing throughput (debug builds are several times slower than release).

#[tokio::test]
async fn audit_indexing_throughput() {
    let f = file_store().await;
    let rows: Vec<_> = (1..=20_000).map(audit).collect();
    let start = tokio::time::Instant::now();
    for batch in rows.chunks(2_000) {
        f.store.index_audit_events(batch).await.unwrap();
    }
    let elapsed = start.elapsed();
    let rate = rows.len() as f64 / elapsed.as_secs_f64();
    eprintln!(
        "indexed {} rows in {elapsed:?}: {rate:.0} rows/s",
        rows.len()
    );
    assert_eq!(f.store.max_audit_seq().await.unwrap(), Some(20_000));
}
