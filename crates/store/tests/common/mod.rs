//! The behaviour suite every [`Store`] and [`DocumentRows`] backend must
//! pass: each case is a function over a fresh, empty store, called from
//! `sqlite.rs` and `postgres.rs`.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use latchkey_store::{
    AuditIndexRow, AuditQuery, DocumentRow, DocumentRows, ExportCursor, KeyRange, Revocation,
    RevocationKind, RevocationMode, RowCheck, RowCommitError, RowExpect, RowScan, RowSelection,
    RowWrite, ScanCheck, Store, StoreError, StoredSession, StoredSigningKey, key_successor,
    prefix_range,
};

/// Every store case, by name (the callers make one test of each).
#[macro_export]
macro_rules! store_cases {
    ($m:ident) => {
        $m!(
            signing_keys_round_trip,
            duplicate_kid_is_a_conflict_without_secrets,
            updating_a_missing_key_fails,
            out_of_range_numbers_are_refused,
            revocations_round_trip_and_expire,
            repeating_a_revocation_widens_it,
            replayed_delivery_is_refused,
            replayed_signed_body_is_refused_within_its_window,
            meta_round_trips,
            audit_rows_round_trip_and_are_idempotent,
            audit_query_filters,
            default_limit_is_one_thousand,
            sessions_are_kept_touched_and_ended_by_id_subject_and_age
        );
    };
}

/// Every document-rows case, by name.
#[macro_export]
macro_rules! document_cases {
    ($m:ident) => {
        $m!(
            scans_children_ranges_and_groups,
            a_failed_check_writes_nothing,
            a_scan_check_fails_on_a_phantom,
            export_pages_through_every_database_and_import_replaces
        );
    };
}

pub fn key(kid: &str, created_at: u64) -> StoredSigningKey {
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

pub fn revocation(kind: RevocationKind, value: &str, mode: RevocationMode) -> Revocation {
    Revocation {
        kind,
        value: value.into(),
        mode,
        created_at: 1_000,
        expires_at: None,
        reason: "test".into(),
    }
}

pub fn audit(seq: u64) -> AuditIndexRow {
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

/// The rows as the store returns them: stamped with its node name (empty
/// for a store one node owns).
pub fn stamped(s: &dyn Store, rows: &[AuditIndexRow]) -> Vec<AuditIndexRow> {
    rows.iter()
        .map(|r| AuditIndexRow {
            node: s.node().to_owned(),
            ..r.clone()
        })
        .collect()
}

pub fn seqs(rows: &[AuditIndexRow]) -> Vec<u64> {
    rows.iter().map(|r| r.seq).collect()
}

pub async fn signing_keys_round_trip(s: &dyn Store) {
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

pub async fn duplicate_kid_is_a_conflict_without_secrets(s: &dyn Store) {
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

pub async fn updating_a_missing_key_fails(s: &dyn Store) {
    let err = s
        .update_signing_key_schedule(&key("nope", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
}

pub async fn out_of_range_numbers_are_refused(s: &dyn Store) {
    let mut k = key("big", 1);
    k.published_until = u64::MAX;
    let err = s.insert_signing_key(&k).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("published_until"), "{err}");
    let mut huge = audit(2);
    huge.seq = u64::MAX;
    let err = s.index_audit_events(&[audit(1), huge]).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    // The whole batch failed: nothing was written.
    assert_eq!(s.max_audit_seq().await.unwrap(), None);
}

pub async fn revocations_round_trip_and_expire(s: &dyn Store) {
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

pub async fn repeating_a_revocation_widens_it(s: &dyn Store) {
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

pub async fn replayed_delivery_is_refused(s: &dyn Store) {
    assert!(s.record_delivery("github", "d-1", 10).await.unwrap());
    assert!(!s.record_delivery("github", "d-1", 11).await.unwrap());
    // Same id from another source is a different delivery.
    assert!(s.record_delivery("gitlab", "d-1", 12).await.unwrap());
    assert!(s.record_delivery("github", "d-2", 13).await.unwrap());
}

pub async fn replayed_signed_body_is_refused_within_its_window(s: &dyn Store) {
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

pub async fn meta_round_trips(s: &dyn Store) {
    assert_eq!(s.get_meta("k").await.unwrap(), None);
    s.put_meta("k", b"one").await.unwrap();
    assert_eq!(s.get_meta("k").await.unwrap(), Some(b"one".to_vec()));
    s.put_meta("k", &[0, 255, 0]).await.unwrap();
    assert_eq!(s.get_meta("k").await.unwrap(), Some(vec![0, 255, 0]));
    s.put_meta("empty", &[]).await.unwrap();
    assert_eq!(s.get_meta("empty").await.unwrap(), Some(vec![]));
}

pub async fn audit_rows_round_trip_and_are_idempotent(s: &dyn Store) {
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
    assert_eq!(all, stamped(s, &rows));

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
    assert_eq!(got, stamped(s, &[sparse]));
}

pub async fn audit_query_filters(s: &dyn Store) {
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

pub async fn default_limit_is_one_thousand(s: &dyn Store) {
    let rows: Vec<_> = (1..=1_005).map(audit).collect();
    s.index_audit_events(&rows).await.unwrap();
    let got = s.query_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(got.len(), 1_000);
    assert_eq!((got[0].seq, got[999].seq), (1, 1_000));
    let got = s
        .query_audit(&AuditQuery {
            newest: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((got[0].seq, got[999].seq), (6, 1_005));
}

fn session(id: &str, subject: &str, at: u64) -> StoredSession {
    StoredSession {
        id_hash: id.into(),
        subject: subject.into(),
        issuer: "okta".into(),
        principal_json: "{}".into(),
        secrets: vec![1, 2, 3],
        created_at: at,
        last_seen_at: at,
        expires_at: at + 100,
        id_token_expires_at: at + 10,
    }
}

pub async fn sessions_are_kept_touched_and_ended_by_id_subject_and_age(s: &dyn Store) {
    s.insert_session(&session("a", "alice", 1000))
        .await
        .unwrap();
    s.insert_session(&session("b", "alice", 1000))
        .await
        .unwrap();
    s.insert_session(&session("c", "bob", 1000)).await.unwrap();
    assert!(matches!(
        s.insert_session(&session("a", "x", 1)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.get_session("a").await.unwrap(),
        Some(session("a", "alice", 1000))
    );
    let mut refreshed = session("b", "alice", 1000);
    refreshed.principal_json = "{\"v\":2}".into();
    refreshed.secrets = vec![9];
    refreshed.last_seen_at = 1010;
    refreshed.id_token_expires_at = 1020;
    assert!(s.update_session(&refreshed).await.unwrap());
    assert_eq!(s.get_session("b").await.unwrap(), Some(refreshed));
    assert!(!s.update_session(&session("zz", "x", 1)).await.unwrap());
    assert!(s.touch_session("c", 1050).await.unwrap());
    // Not moved backwards, still there.
    assert!(s.touch_session("c", 1040).await.unwrap());
    assert_eq!(
        s.get_session("c").await.unwrap().unwrap().last_seen_at,
        1050
    );
    assert!(!s.touch_session("zz", 1050).await.unwrap());
    assert_eq!(s.delete_sessions_of("alice").await.unwrap(), 2);
    assert_eq!(s.get_session("a").await.unwrap(), None);
    // c was seen at 1050: idle cut-off 1040 keeps it, 1060 removes it.
    assert_eq!(s.delete_expired_sessions(1060, 1040).await.unwrap(), 0);
    assert_eq!(s.delete_expired_sessions(1060, 1060).await.unwrap(), 1);
    s.insert_session(&session("d", "dan", 1000)).await.unwrap();
    assert!(s.delete_session("d").await.unwrap());
    assert!(!s.delete_session("d").await.unwrap());
    // Absolute expiry: expires_at == now is expired.
    s.insert_session(&session("e", "eve", 1000)).await.unwrap();
    assert_eq!(s.delete_expired_sessions(1100, 0).await.unwrap(), 1);
}

// ---- Document rows ----

pub fn row(path: &[u8], parent: &[u8], cid: &str, t: i64) -> DocumentRow {
    DocumentRow {
        database: "projects/p/databases/d".into(),
        path: path.to_vec(),
        parent: parent.to_vec(),
        collection_id: cid.into(),
        create_time: t,
        update_time: t,
        fields: vec![1, 2, 3],
    }
}

pub const DB: &str = "projects/p/databases/d";

async fn seed(store: &dyn DocumentRows) {
    let rows = [
        row(b"a/1", b"a", "a", 1),
        row(b"a/2", b"a", "a", 2),
        row(b"a/2/b/1", b"a/2/b", "b", 3),
        row(b"c/1", b"c", "c", 4),
        row(b"c/1/b/9", b"c/1/b", "b", 5),
    ];
    let writes: Vec<RowWrite> = rows.iter().cloned().map(RowWrite::Put).collect();
    store.commit_rows(DB, &[], &[], &writes).await.unwrap();
}

pub async fn scans_children_ranges_and_groups(store: &dyn DocumentRows) {
    seed(store).await;
    let paths =
        |rows: Vec<DocumentRow>| -> Vec<Vec<u8>> { rows.into_iter().map(|r| r.path).collect() };
    let children = RowScan {
        selection: RowSelection::Children {
            parent: b"a".to_vec(),
        },
        after: None,
        limit: None,
    };
    assert_eq!(
        paths(store.scan_rows(DB, &children).await.unwrap()),
        vec![b"a/1".to_vec(), b"a/2".to_vec()]
    );
    let group = RowScan {
        selection: RowSelection::Group {
            collection_id: "b".into(),
            range: KeyRange::default(),
        },
        after: Some(b"a/2/b/1".to_vec()),
        limit: Some(5),
    };
    assert_eq!(
        paths(store.scan_rows(DB, &group).await.unwrap()),
        vec![b"c/1/b/9".to_vec()]
    );
    let subtree = RowScan {
        selection: RowSelection::Range(prefix_range(b"a/2/")),
        after: None,
        limit: None,
    };
    assert_eq!(
        paths(store.scan_rows(DB, &subtree).await.unwrap()),
        vec![b"a/2/b/1".to_vec()]
    );
    let first = store
        .first_path_in(
            DB,
            &KeyRange {
                start: key_successor(b"a/2"),
                end: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(first, Some(b"a/2/b/1".to_vec()));
    let got = store
        .get_rows(DB, &[b"c/1".to_vec(), b"zz".to_vec()])
        .await
        .unwrap();
    assert_eq!(got[0].as_ref().map(|r| r.update_time), Some(4));
    assert!(got[1].is_none());
    // Another database sees none of it.
    assert!(
        store
            .get_rows("projects/p/databases/other", &[b"c/1".to_vec()])
            .await
            .unwrap()[0]
            .is_none()
    );
}

pub async fn a_failed_check_writes_nothing(store: &dyn DocumentRows) {
    seed(store).await;
    let checks = [
        RowCheck {
            path: b"a/1".to_vec(),
            expect: RowExpect::UpdateTime(1),
        },
        RowCheck {
            path: b"a/3".to_vec(),
            expect: RowExpect::Present,
        },
    ];
    let writes = [
        RowWrite::Delete(b"a/1".to_vec()),
        RowWrite::Put(row(b"a/3", b"a", "a", 9)),
    ];
    match store.commit_rows(DB, &checks, &[], &writes).await {
        Err(RowCommitError::Conflict { index: 1 }) => {}
        other => panic!("expected a conflict on check 1, got {other:?}"),
    }
    let got = store
        .get_rows(DB, &[b"a/1".to_vec(), b"a/3".to_vec()])
        .await
        .unwrap();
    assert!(got[0].is_some() && got[1].is_none());
    // With the checks holding, both apply.
    let checks = [
        RowCheck {
            path: b"a/1".to_vec(),
            expect: RowExpect::UpdateTime(1),
        },
        RowCheck {
            path: b"a/3".to_vec(),
            expect: RowExpect::Absent,
        },
    ];
    store.commit_rows(DB, &checks, &[], &writes).await.unwrap();
    let got = store
        .get_rows(DB, &[b"a/1".to_vec(), b"a/3".to_vec()])
        .await
        .unwrap();
    assert!(got[0].is_none() && got[1].is_some());
}

pub async fn a_scan_check_fails_on_a_phantom(store: &dyn DocumentRows) {
    seed(store).await;
    let children = RowSelection::Children {
        parent: b"a".to_vec(),
    };
    let read = ScanCheck {
        selection: children.clone(),
        rows: vec![(b"a/1".to_vec(), 1), (b"a/2".to_vec(), 2)],
    };
    let write = [RowWrite::Put(row(b"z/1", b"z", "z", 9))];
    store
        .commit_rows(DB, &[], std::slice::from_ref(&read), &write)
        .await
        .unwrap();
    // A new row in the scanned collection: the same check now fails.
    store
        .commit_rows(DB, &[], &[], &[RowWrite::Put(row(b"a/3", b"a", "a", 10))])
        .await
        .unwrap();
    let checks = [RowCheck {
        path: b"c/1".to_vec(),
        expect: RowExpect::Present,
    }];
    match store.commit_rows(DB, &checks, &[read], &write).await {
        Err(RowCommitError::Conflict { index: 1 }) => {}
        other => panic!("expected the scan check to fail, got {other:?}"),
    }
}

pub async fn export_pages_through_every_database_and_import_replaces(store: &dyn DocumentRows) {
    seed(store).await;
    let mut other = row(b"x/1", b"x", "x", 7);
    other.database = "projects/p/databases/e".into();
    store.import_rows(&[other.clone()]).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<ExportCursor> = None;
    loop {
        let page = store.export_rows(None, cursor.as_ref(), 2).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some((last.database.clone(), last.path.clone()));
        seen.extend(page);
    }
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[5], other);
    let only_d = store.export_rows(Some(DB), None, 100).await.unwrap();
    assert_eq!(only_d.len(), 5);
    // Import again: same rows, replaced, not duplicated.
    other.fields = vec![9];
    store.import_rows(&[other.clone()]).await.unwrap();
    let e = store
        .export_rows(Some("projects/p/databases/e"), None, 100)
        .await
        .unwrap();
    assert_eq!(e, vec![other]);
}
