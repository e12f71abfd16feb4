//! Behaviour of `SqliteStore`, each case run on a temp-file database and in memory.
#![allow(clippy::unwrap_used)]

use latchkey_store::{
    AuditIndexRow, AuditQuery, Revocation, RevocationKind, RevocationMode, SqliteStore, Store,
    StoreError, StoredSigningKey,
};

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

fn key(kid: &str, created_at: u64) -> StoredSigningKey {
    StoredSigningKey {
        kid: kid.into(),
        algorithm: "EdDSA".into(),
        public_key: vec![7; 32],
        encrypted_private_key: vec![1, 2, 3, 0, 255],
        created_at,
        signs_from: created_at + 10,
        signs_until: created_at + 100,
        published_until: created_at + 200,
    }
}

fn revocation(kind: RevocationKind, value: &str, mode: RevocationMode) -> Revocation {
    Revocation {
        kind,
        value: value.into(),
        mode,
        created_at: 1_000,
        expires_at: None,
        reason: "test".into(),
    }
}

fn audit(seq: u64) -> AuditIndexRow {
    AuditIndexRow {
        node: String::new(),
        seq,
        time_ms: 1_000 * seq,
        request_id: format!("req-{seq}"),
        principal: Some(if seq.is_multiple_of(2) {
            "user:alice".into()
        } else {
            "ci:job-alice".into()
        }),
        action: if seq.is_multiple_of(3) {
            "git.push"
        } else {
            "request"
        }
        .into(),
        resource: Some(format!("Repo::\"acme/api-{}\"", seq % 4)),
        decision: Some(
            if seq.is_multiple_of(5) {
                "deny"
            } else {
                "allow"
            }
            .into(),
        ),
        commit: Some(format!("{:040x}", seq * 0x1111)),
        job_id: (seq % 2 == 1).then(|| format!("{}", 900 + seq % 3)),
        event_json: format!("{{\"seq\":{seq}}}"),
    }
}

fn seqs(rows: &[AuditIndexRow]) -> Vec<u64> {
    rows.iter().map(|r| r.seq).collect()
}

#[tokio::test]
async fn signing_keys_round_trip() {
    for f in both().await {
        let s = &f.store;
        assert!(s.list_signing_keys().await.unwrap().is_empty());
        let (a, b) = (key("k-b", 100), key("k-a", 200));
        s.insert_signing_key(&b).await.unwrap();
        s.insert_signing_key(&a).await.unwrap();
        // Oldest first.
        assert_eq!(
            s.list_signing_keys().await.unwrap(),
            vec![a.clone(), b.clone()]
        );

        let mut moved = a.clone();
        moved.signs_from = 1;
        moved.signs_until = 2;
        moved.published_until = 3;
        moved.encrypted_private_key = vec![9]; // not part of the schedule
        s.update_signing_key_schedule(&moved).await.unwrap();
        let got = s.list_signing_keys().await.unwrap();
        assert_eq!(
            (
                got[0].signs_from,
                got[0].signs_until,
                got[0].published_until
            ),
            (1, 2, 3)
        );
        assert_eq!(got[0].encrypted_private_key, a.encrypted_private_key);

        s.delete_signing_key("k-b").await.unwrap();
        let got = s.list_signing_keys().await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kid, "k-a");
        // Deleting a missing key is not an error.
        s.delete_signing_key("k-b").await.unwrap();
    }
}

#[tokio::test]
async fn duplicate_kid_is_a_conflict_without_secrets() {
    for f in both().await {
        let s = &f.store;
        s.insert_signing_key(&key("k1", 1)).await.unwrap();
        let mut again = key("k1", 2);
        again.encrypted_private_key = b"SECRET-CIPHERTEXT".to_vec();
        let err = s.insert_signing_key(&again).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("`k1`"), "{msg}");
        assert!(!msg.contains("SECRET"), "{msg}");
        assert_eq!(s.list_signing_keys().await.unwrap(), vec![key("k1", 1)]);
    }
}

#[tokio::test]
async fn updating_a_missing_key_fails() {
    let f = memory_store().await;
    let err = f
        .store
        .update_signing_key_schedule(&key("nope", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn out_of_range_numbers_are_refused() {
    let f = memory_store().await;
    let mut k = key("big", 1);
    k.published_until = u64::MAX;
    let err = f.store.insert_signing_key(&k).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("published_until"), "{err}");
    let mut huge = audit(2);
    huge.seq = u64::MAX;
    let err = f
        .store
        .index_audit_events(&[audit(1), huge])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    // The whole batch failed: nothing was written.
    assert_eq!(f.store.max_audit_seq().await.unwrap(), None);
}

#[tokio::test]
async fn revocations_round_trip_and_expire() {
    for f in both().await {
        let s = &f.store;
        let forever = revocation(RevocationKind::Subject, "alice", RevocationMode::Freeze);
        let mut token = revocation(RevocationKind::Token, "jti-1", RevocationMode::Revoke);
        token.expires_at = Some(2_000);
        let mut job = revocation(RevocationKind::Job, "42", RevocationMode::Revoke);
        job.created_at = 1_500;
        for r in [&forever, &token, &job] {
            s.insert_revocation(r).await.unwrap();
        }
        // Idempotent.
        s.insert_revocation(&token).await.unwrap();

        let live = s.list_revocations(1_999).await.unwrap();
        assert_eq!(live, vec![forever.clone(), token.clone(), job.clone()]);
        // expires_at == now is expired.
        let live = s.list_revocations(2_000).await.unwrap();
        assert_eq!(live, vec![forever.clone(), job.clone()]);

        assert!(
            s.delete_revocation(RevocationKind::Subject, "alice", RevocationMode::Freeze)
                .await
                .unwrap()
        );
        assert!(
            !s.delete_revocation(RevocationKind::Subject, "alice", RevocationMode::Freeze)
                .await
                .unwrap()
        );
        // Same value, other mode: a separate row.
        assert!(
            !s.delete_revocation(RevocationKind::Job, "42", RevocationMode::Freeze)
                .await
                .unwrap()
        );
        assert_eq!(s.list_revocations(0).await.unwrap(), vec![token, job]);
    }
}

#[tokio::test]
async fn repeating_a_revocation_widens_it() {
    let f = memory_store().await;
    let s = &f.store;
    let mut first = revocation(RevocationKind::Pipeline, "p1", RevocationMode::Revoke);
    first.expires_at = Some(5_000);
    s.insert_revocation(&first).await.unwrap();

    // Later revocation: newer created_at, no expiry.
    let mut later = first.clone();
    later.created_at = 3_000;
    later.expires_at = None;
    later.reason = "again".into();
    s.insert_revocation(&later).await.unwrap();
    assert_eq!(s.list_revocations(0).await.unwrap(), vec![later.clone()]);

    // An older, shorter one does not narrow it.
    s.insert_revocation(&first).await.unwrap();
    let got = s.list_revocations(10_000).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].created_at, got[0].expires_at), (3_000, None));
}

#[tokio::test]
async fn replayed_delivery_is_refused() {
    for f in both().await {
        let s = &f.store;
        assert!(s.record_delivery("github", "d-1", 10).await.unwrap());
        assert!(!s.record_delivery("github", "d-1", 11).await.unwrap());
        // Same id from another source is a different delivery.
        assert!(s.record_delivery("gitlab", "d-1", 12).await.unwrap());
        assert!(s.record_delivery("github", "d-2", 13).await.unwrap());
    }
}

#[tokio::test]
async fn replayed_signed_body_is_refused_within_its_window() {
    for f in both().await {
        let s = &f.store;
        assert!(s.record_signed_body("github", "h1", 100, 50).await.unwrap());
        assert!(!s.record_signed_body("github", "h1", 149, 50).await.unwrap());
        // Another source, another body: new.
        assert!(s.record_signed_body("gogs", "h1", 149, 50).await.unwrap());
        assert!(s.record_signed_body("github", "h2", 149, 50).await.unwrap());
        // Body digests and delivery ids do not collide.
        assert!(s.record_delivery("github", "h1", 149).await.unwrap());
        // Past the window the digest is new again.
        assert!(s.record_signed_body("github", "h1", 150, 50).await.unwrap());
        assert!(!s.record_signed_body("github", "h1", 151, 50).await.unwrap());
    }
}

#[tokio::test]
async fn meta_round_trips() {
    for f in both().await {
        let s = &f.store;
        assert_eq!(s.get_meta("k").await.unwrap(), None);
        s.put_meta("k", b"one").await.unwrap();
        assert_eq!(s.get_meta("k").await.unwrap(), Some(b"one".to_vec()));
        s.put_meta("k", &[0, 255, 0]).await.unwrap();
        assert_eq!(s.get_meta("k").await.unwrap(), Some(vec![0, 255, 0]));
        s.put_meta("empty", &[]).await.unwrap();
        assert_eq!(s.get_meta("empty").await.unwrap(), Some(vec![]));
    }
}

#[tokio::test]
async fn audit_rows_round_trip_and_are_idempotent() {
    for f in both().await {
        let s = &f.store;
        assert_eq!(s.max_audit_seq().await.unwrap(), None);
        s.index_audit_events(&[]).await.unwrap();
        let rows: Vec<_> = (1..=250).map(audit).collect();
        s.index_audit_events(&rows).await.unwrap();
        // Replaying overlapping rows changes nothing.
        let mut changed = audit(5);
        changed.action = "changed".into();
        s.index_audit_events(&[changed, audit(6)]).await.unwrap();
        assert_eq!(s.max_audit_seq().await.unwrap(), Some(250));
        let all = s.query_audit(&AuditQuery::default()).await.unwrap();
        assert_eq!(all, rows);

        let mut sparse = audit(300);
        sparse.principal = None;
        sparse.resource = None;
        sparse.decision = None;
        sparse.commit = None;
        sparse.job_id = None;
        s.index_audit_events(&[sparse.clone()]).await.unwrap();
        let got = s
            .query_audit(&AuditQuery {
                after_seq: Some(250),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(got, vec![sparse]);
    }
}

#[tokio::test]
async fn audit_query_filters() {
    for f in both().await {
        let s = &f.store;
        let rows: Vec<_> = (1..=30).map(audit).collect();
        s.index_audit_events(&rows).await.unwrap();
        let q = |query: AuditQuery| async move { seqs(&s.query_audit(&query).await.unwrap()) };
        let expect = |pred: &dyn Fn(&AuditIndexRow) -> bool| -> Vec<u64> {
            rows.iter().filter(|r| pred(r)).map(|r| r.seq).collect()
        };

        // Principal: full `kind:id`, or the id alone.
        let got = q(AuditQuery {
            principal: Some("user:alice".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(got, expect(&|r| r.seq % 2 == 0));
        let got = q(AuditQuery {
            principal: Some("alice".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(got, expect(&|r| r.seq % 2 == 0));
        let got = q(AuditQuery {
            principal: Some("job-alice".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(got, expect(&|r| r.seq % 2 == 1));
        // Not a substring match, and the kind must match when given.
        for p in ["alic", "ci:alice", "user:"] {
            let got = q(AuditQuery {
                principal: Some(p.into()),
                ..Default::default()
            })
            .await;
            assert!(got.is_empty(), "{p}: {got:?}");
        }

        // Resource: substring, case-sensitive, LIKE wildcards are literal.
        let got = q(AuditQuery {
            resource: Some("api-3".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(got, expect(&|r| r.seq % 4 == 3));
        let got = q(AuditQuery {
            resource: Some("acme/".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(got.len(), 30);
        for p in ["ACME", "api_3", "api%", "%"] {
            let got = q(AuditQuery {
                resource: Some(p.into()),
                ..Default::default()
            })
            .await;
            assert!(got.is_empty(), "{p}: {got:?}");
        }

        // Action and decision: exact.
        let got = q(AuditQuery {
            action: Some("git.push".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(got, expect(&|r| r.seq % 3 == 0));
        let got = q(AuditQuery {
            decision: Some("deny".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(got, vec![5, 10, 15, 20, 25, 30]);

        // Commit: prefix.
        let full = rows[6].commit.clone().unwrap();
        for len in [full.len(), 12, 7] {
            let got = q(AuditQuery {
                commit: Some(full[..len].into()),
                ..Default::default()
            })
            .await;
            let prefix = &full[..len];
            assert_eq!(
                got,
                expect(&|r| r.commit.as_deref().unwrap().starts_with(prefix)),
                "{prefix}"
            );
            assert!(got.contains(&7));
        }
        let got = q(AuditQuery {
            commit: Some(full[1..].into()),
            ..Default::default()
        })
        .await;
        assert!(got.is_empty(), "not a substring match: {got:?}");
        let got = q(AuditQuery {
            commit: Some("0000000000000000000000000000000000".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(got, expect(&|r| r.seq * 0x1111 < 0x1000000));

        // Job id: exact.
        let got = q(AuditQuery {
            job_id: Some("901".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(got, expect(&|r| r.job_id.as_deref() == Some("901")));
        assert!(!got.is_empty());

        // Time window: since inclusive, until exclusive.
        let got = q(AuditQuery {
            since_ms: Some(5_000),
            until_ms: Some(9_000),
            ..Default::default()
        })
        .await;
        assert_eq!(got, vec![5, 6, 7, 8]);
        let got = q(AuditQuery {
            since_ms: Some(u64::MAX),
            ..Default::default()
        })
        .await;
        assert!(got.is_empty());

        // Following.
        let got = q(AuditQuery {
            after_seq: Some(27),
            ..Default::default()
        })
        .await;
        assert_eq!(got, vec![28, 29, 30]);

        // Limit: oldest first by default, newest (still ascending) on request.
        let got = q(AuditQuery {
            limit: 3,
            ..Default::default()
        })
        .await;
        assert_eq!(got, vec![1, 2, 3]);
        let got = q(AuditQuery {
            limit: 3,
            newest: true,
            ..Default::default()
        })
        .await;
        assert_eq!(got, vec![28, 29, 30]);
        let got = q(AuditQuery {
            newest: true,
            ..Default::default()
        })
        .await;
        assert_eq!(got.len(), 30);

        // Everything at once.
        let got = q(AuditQuery {
            principal: Some("alice".into()),
            action: Some("git.push".into()),
            decision: Some("allow".into()),
            since_ms: Some(2_000),
            after_seq: Some(6),
            limit: 2,
            newest: true,
            ..Default::default()
        })
        .await;
        // Even, multiple of 3, not of 5, > 6: 12, 18, 24; newest two.
        assert_eq!(got, vec![18, 24]);
    }
}

#[tokio::test]
async fn default_limit_is_one_thousand() {
    let f = memory_store().await;
    let rows: Vec<_> = (1..=1_005).map(audit).collect();
    f.store.index_audit_events(&rows).await.unwrap();
    let got = f.store.query_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(got.len(), 1_000);
    assert_eq!((got[0].seq, got[999].seq), (1, 1_000));
    let got = f
        .store
        .query_audit(&AuditQuery {
            newest: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((got[0].seq, got[999].seq), (6, 1_005));
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
