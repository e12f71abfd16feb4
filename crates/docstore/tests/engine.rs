//! The engine against a real SQLite file: reads, commits, transforms,
//! preconditions, transactions, listing, BatchWrite, Listen, export and
//! import.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use latchkey_core::{FakeClock, SharedClock, SystemClock};
use latchkey_docstore::proto::{
    self, ArrayValue, Document, DocumentMask, MapValue, Precondition, Value, Write,
    document_transform::FieldTransform,
    document_transform::field_transform::{ServerValue, TransformType},
    precondition::ConditionType,
    value::ValueType,
    write::Operation,
};
use latchkey_docstore::{DocumentStore, Status};
use latchkey_documents::GrpcCode;
use latchkey_store::SqliteStore;

const DB: &str = "projects/p/databases/(default)";

fn name(path: &str) -> String {
    format!("{DB}/documents/{path}")
}

async fn open_with(clock: SharedClock) -> (tempfile::TempDir, DocumentStore) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    (dir, DocumentStore::new(sqlite.document_rows(), clock))
}

async fn open() -> (tempfile::TempDir, DocumentStore) {
    open_with(Arc::new(SystemClock)).await
}

fn micros(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().expect("a time");
    t.seconds * 1_000_000 + i64::from(t.nanos / 1000)
}

fn int(i: i64) -> Value {
    Value {
        value_type: Some(ValueType::IntegerValue(i)),
    }
}
fn dbl(d: f64) -> Value {
    Value {
        value_type: Some(ValueType::DoubleValue(d)),
    }
}
fn string(s: &str) -> Value {
    Value {
        value_type: Some(ValueType::StringValue(s.into())),
    }
}
fn map(fields: &[(&str, Value)]) -> Value {
    Value {
        value_type: Some(ValueType::MapValue(MapValue {
            fields: fields_of(fields),
        })),
    }
}
fn array(values: Vec<Value>) -> Value {
    Value {
        value_type: Some(ValueType::ArrayValue(ArrayValue { values })),
    }
}
fn fields_of(fields: &[(&str, Value)]) -> HashMap<String, Value> {
    fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn set(path: &str, fields: &[(&str, Value)]) -> Write {
    Write {
        operation: Some(Operation::Update(Document {
            name: name(path),
            fields: fields_of(fields),
            ..Default::default()
        })),
        ..Default::default()
    }
}
fn delete(path: &str) -> Write {
    Write {
        operation: Some(Operation::Delete(name(path))),
        ..Default::default()
    }
}
fn with_mask(mut w: Write, paths: &[&str]) -> Write {
    w.update_mask = Some(DocumentMask {
        field_paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    });
    w
}
fn with_pre(mut w: Write, c: ConditionType) -> Write {
    w.current_document = Some(Precondition {
        condition_type: Some(c),
    });
    w
}
fn with_transform(mut w: Write, field: &str, t: TransformType) -> Write {
    w.update_transforms.push(FieldTransform {
        field_path: field.into(),
        transform_type: Some(t),
    });
    w
}

async fn commit(s: &DocumentStore, writes: Vec<Write>) -> Result<proto::CommitResponse, Status> {
    s.commit(proto::CommitRequest {
        database: DB.into(),
        writes,
        transaction: Default::default(),
    })
    .await
}

async fn get(s: &DocumentStore, path: &str) -> Result<Document, Status> {
    s.get_document(proto::GetDocumentRequest {
        name: name(path),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn a_committed_document_reads_back_with_its_times() {
    let (_dir, s) = open().await;
    let r = commit(&s, vec![set("flags/checkout", &[("on", int(1))])])
        .await
        .unwrap();
    assert_eq!(r.write_results.len(), 1);
    let d = get(&s, "flags/checkout").await.unwrap();
    assert_eq!(d.name, name("flags/checkout"));
    assert_eq!(d.fields["on"], int(1));
    assert_eq!(d.create_time, r.commit_time);
    assert_eq!(d.update_time, r.commit_time);
    // A second write keeps the create time.
    let r2 = commit(&s, vec![set("flags/checkout", &[("on", int(2))])])
        .await
        .unwrap();
    let d2 = get(&s, "flags/checkout").await.unwrap();
    assert_eq!(d2.create_time, r.commit_time);
    assert_eq!(d2.update_time, r2.commit_time);
    assert!(micros(&r2.commit_time) > micros(&r.commit_time));
    let missing = get(&s, "flags/none").await.unwrap_err();
    assert_eq!(missing.code, GrpcCode::NotFound);
    // The emulator's wording (confirmed there).
    assert_eq!(
        missing.message,
        format!("Document ({}) not found.", name("flags/none"))
    );
}

#[tokio::test]
async fn a_write_that_changes_nothing_keeps_the_update_time() {
    // Firestore's WriteResult: "If the write did not actually change the
    // document, this will be the previous update_time."
    let (_dir, s) = open().await;
    let r1 = commit(&s, vec![set("a/b", &[("x", int(1))])])
        .await
        .unwrap();
    let r2 = commit(&s, vec![set("a/b", &[("x", int(1))])])
        .await
        .unwrap();
    assert_eq!(r2.write_results[0].update_time, r1.commit_time);
    assert_eq!(get(&s, "a/b").await.unwrap().update_time, r1.commit_time);
}

#[tokio::test]
async fn update_masks_keep_unmasked_fields_and_delete_masked_absent_ones() {
    let (_dir, s) = open().await;
    commit(
        &s,
        vec![set(
            "a/b",
            &[
                ("keep", int(1)),
                ("gone", int(2)),
                ("m", map(&[("x", int(1)), ("y", int(2))])),
            ],
        )],
    )
    .await
    .unwrap();
    let w = with_mask(
        set("a/b", &[("new", int(3)), ("m", map(&[("x", int(9))]))]),
        &["new", "gone", "m.x"],
    );
    commit(&s, vec![w]).await.unwrap();
    let d = get(&s, "a/b").await.unwrap();
    assert_eq!(d.fields["keep"], int(1));
    assert_eq!(d.fields["new"], int(3));
    assert!(!d.fields.contains_key("gone"));
    assert_eq!(d.fields["m"], map(&[("x", int(9)), ("y", int(2))]));
    // A read mask.
    let masked = s
        .get_document(proto::GetDocumentRequest {
            name: name("a/b"),
            mask: Some(DocumentMask {
                field_paths: vec!["m.y".into(), "absent".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(masked.fields, fields_of(&[("m", map(&[("y", int(2))]))]));
}

#[tokio::test]
async fn preconditions_answer_as_firestore_does() {
    let (_dir, s) = open().await;
    let r = commit(&s, vec![set("a/b", &[("x", int(1))])])
        .await
        .unwrap();
    let exists = with_pre(set("a/b", &[]), ConditionType::Exists(false));
    let e = commit(&s, vec![exists]).await.unwrap_err();
    assert_eq!(e.code, GrpcCode::AlreadyExists);
    assert_eq!(
        e.message,
        format!("Document already exists: {}", name("a/b"))
    );
    let missing = with_pre(set("a/c", &[]), ConditionType::Exists(true));
    let e = commit(&s, vec![missing]).await.unwrap_err();
    assert_eq!(e.code, GrpcCode::NotFound);
    assert_eq!(e.message, format!("No document to update: {}", name("a/c")));
    let stale = with_pre(
        set("a/b", &[("x", int(2))]),
        ConditionType::UpdateTime(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        }),
    );
    let e = commit(&s, vec![stale]).await.unwrap_err();
    assert_eq!(e.code, GrpcCode::FailedPrecondition);
    // The emulator's wording, in microseconds (confirmed there).
    assert_eq!(
        e.message,
        format!(
            "the stored version ({}) does not match the required base version (1000000)",
            micros(&r.commit_time)
        )
    );
    let fresh = with_pre(
        set("a/b", &[("x", int(2))]),
        ConditionType::UpdateTime(r.commit_time.unwrap()),
    );
    commit(&s, vec![fresh]).await.unwrap();
    // A failed precondition applies none of the commit's writes.
    let e = commit(
        &s,
        vec![
            set("a/d", &[]),
            with_pre(set("a/e", &[]), ConditionType::Exists(true)),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, GrpcCode::NotFound);
    assert_eq!(get(&s, "a/d").await.unwrap_err().code, GrpcCode::NotFound);
    // Deleting a missing document is fine; with exists=true it is not.
    commit(&s, vec![delete("a/zz")]).await.unwrap();
    let e = commit(
        &s,
        vec![with_pre(delete("a/zz"), ConditionType::Exists(true))],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, GrpcCode::NotFound);
}

#[tokio::test]
async fn transforms_report_results_at_the_commit_time() {
    let (_dir, s) = open().await;
    commit(
        &s,
        vec![set(
            "c/n",
            &[
                ("i", int(i64::MAX - 1)),
                ("d", int(1)),
                ("arr", array(vec![int(1), string("x")])),
            ],
        )],
    )
    .await
    .unwrap();
    let mut w = with_mask(set("c/n", &[]), &[]);
    w = with_transform(w, "i", TransformType::Increment(int(5)));
    w = with_transform(w, "d", TransformType::Increment(dbl(0.5)));
    w = with_transform(
        w,
        "t",
        TransformType::SetToServerValue(ServerValue::RequestTime as i32),
    );
    w = with_transform(w, "mx", TransformType::Maximum(int(3)));
    w = with_transform(
        w,
        "arr",
        TransformType::AppendMissingElements(ArrayValue {
            values: vec![int(2), dbl(1.0), string("y")],
        }),
    );
    let r = commit(&s, vec![w]).await.unwrap();
    let res = &r.write_results[0];
    let now = Value {
        value_type: Some(ValueType::TimestampValue(r.commit_time.unwrap())),
    };
    assert_eq!(
        res.transform_results,
        vec![
            int(i64::MAX),
            dbl(1.5),
            now.clone(),
            int(3),
            Value {
                value_type: Some(ValueType::NullValue(0))
            }
        ]
    );
    let d = get(&s, "c/n").await.unwrap();
    assert_eq!(d.fields["i"], int(i64::MAX));
    assert_eq!(d.fields["t"], now);
    assert_eq!(
        d.fields["arr"],
        array(vec![int(1), string("x"), int(2), string("y")])
    );
    let w = with_transform(
        with_mask(set("c/n", &[]), &[]),
        "arr",
        TransformType::RemoveAllFromArray(ArrayValue {
            values: vec![dbl(2.0), string("x")],
        }),
    );
    commit(&s, vec![w]).await.unwrap();
    let d = get(&s, "c/n").await.unwrap();
    assert_eq!(d.fields["arr"], array(vec![int(1), string("y")]));
}

#[tokio::test]
async fn limits_are_enforced_with_firestore_wording() {
    let (_dir, s) = open().await;
    let writes: Vec<Write> = (0..501).map(|i| set(&format!("w/{i}"), &[])).collect();
    let e = commit(&s, writes).await.unwrap_err();
    assert_eq!(e.code, GrpcCode::InvalidArgument);
    assert_eq!(e.message, "maximum 500 writes allowed per request");
    let big = "x".repeat(1_048_576);
    let e = commit(&s, vec![set("w/big", &[("s", string(&big))])])
        .await
        .unwrap_err();
    assert_eq!(e.code, GrpcCode::InvalidArgument);
    assert!(
        e.message
            .contains("exceeds the maximum allowed size of 1,048,576 bytes"),
        "{}",
        e.message
    );
    let e = commit(
        &s,
        vec![set("w/nested", &[("a", array(vec![array(vec![])]))])],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, GrpcCode::InvalidArgument);
}

#[tokio::test]
async fn batch_get_reports_found_and_missing_and_starts_a_transaction_lazily() {
    let (_dir, s) = open().await;
    commit(&s, vec![set("a/1", &[("x", int(1))])])
        .await
        .unwrap();
    let r = s
        .batch_get_documents(proto::BatchGetDocumentsRequest {
            database: DB.into(),
            documents: vec![name("a/1"), name("a/2")],
            consistency_selector: Some(
                proto::batch_get_documents_request::ConsistencySelector::NewTransaction(
                    Default::default(),
                ),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    // As the emulator answers (confirmed there): the transaction first, in
    // a response of its own, then one response per name.
    use proto::batch_get_documents_response::Result as R;
    assert_eq!(r.len(), 3);
    assert!(!r[0].transaction.is_empty() && r[0].result.is_none());
    assert!(matches!(&r[1].result, Some(R::Found(d)) if d.name == name("a/1")));
    assert!(matches!(&r[2].result, Some(R::Missing(n)) if *n == name("a/2")));
    assert!(r[1].transaction.is_empty() && r[2].transaction.is_empty());
    assert!(r[1].read_time.is_some());
    // The transaction it began commits.
    s.commit(proto::CommitRequest {
        database: DB.into(),
        writes: vec![set("a/2", &[])],
        transaction: r[0].transaction.clone(),
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_transaction_whose_reads_changed_is_aborted() {
    let (_dir, s) = open().await;
    commit(&s, vec![set("a/1", &[("x", int(1))])])
        .await
        .unwrap();
    let tx = s
        .begin_transaction(proto::BeginTransactionRequest {
            database: DB.into(),
            options: None,
        })
        .await
        .unwrap()
        .transaction;
    s.get_document(proto::GetDocumentRequest {
        name: name("a/1"),
        consistency_selector: Some(
            proto::get_document_request::ConsistencySelector::Transaction(tx.clone()),
        ),
        ..Default::default()
    })
    .await
    .unwrap();
    commit(&s, vec![set("a/1", &[("x", int(2))])])
        .await
        .unwrap();
    let e = s
        .commit(proto::CommitRequest {
            database: DB.into(),
            writes: vec![set("a/other", &[])],
            transaction: tx.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, GrpcCode::Aborted);
    assert!(get(&s, "a/other").await.is_err());
    // The transaction is over.
    let e = s
        .commit(proto::CommitRequest {
            database: DB.into(),
            writes: vec![],
            transaction: tx,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, GrpcCode::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_read_increment_commit_with_retries_counts_exactly() {
    let (_dir, s) = open().await;
    commit(&s, vec![set("counters/c", &[("n", int(0))])])
        .await
        .unwrap();
    const N: i64 = 12;
    let mut tasks = Vec::new();
    for _ in 0..N {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut retry = bytes::Bytes::new();
            for attempt in 0..200 {
                let options = proto::TransactionOptions {
                    mode: Some(proto::transaction_options::Mode::ReadWrite(
                        proto::transaction_options::ReadWrite {
                            retry_transaction: retry.clone(),
                        },
                    )),
                };
                let tx = s
                    .begin_transaction(proto::BeginTransactionRequest {
                        database: DB.into(),
                        options: Some(options),
                    })
                    .await
                    .unwrap()
                    .transaction;
                let d = s
                    .get_document(proto::GetDocumentRequest {
                        name: name("counters/c"),
                        consistency_selector: Some(
                            proto::get_document_request::ConsistencySelector::Transaction(
                                tx.clone(),
                            ),
                        ),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                let Some(ValueType::IntegerValue(n)) = d.fields["n"].value_type else {
                    panic!("not an integer")
                };
                tokio::task::yield_now().await;
                match s
                    .commit(proto::CommitRequest {
                        database: DB.into(),
                        writes: vec![set("counters/c", &[("n", int(n + 1))])],
                        transaction: tx.clone(),
                    })
                    .await
                {
                    Ok(_) => return attempt,
                    Err(e) if e.code == GrpcCode::Aborted => {
                        retry = tx;
                        tokio::time::sleep(Duration::from_millis(attempt % 7)).await;
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            panic!("no commit after 200 attempts")
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let d = get(&s, "counters/c").await.unwrap();
    assert_eq!(d.fields["n"], int(N));
}

#[tokio::test]
async fn an_idle_transaction_expires_and_rollback_ends_one() {
    let clock = Arc::new(FakeClock::at(1_800_000_000));
    let (_dir, s) = open_with(clock.clone()).await;
    let begin = || async {
        s.begin_transaction(proto::BeginTransactionRequest {
            database: DB.into(),
            options: None,
        })
        .await
        .unwrap()
        .transaction
    };
    let tx = begin().await;
    clock.advance(Duration::from_secs(61));
    let e = s
        .commit(proto::CommitRequest {
            database: DB.into(),
            writes: vec![set("a/1", &[])],
            transaction: tx,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, GrpcCode::InvalidArgument);
    // The Node client retries an expired transaction on this wording.
    assert!(
        e.message.contains("transaction has expired"),
        "{}",
        e.message
    );
    let tx = begin().await;
    s.rollback(proto::RollbackRequest {
        database: DB.into(),
        transaction: tx.clone(),
    })
    .await
    .unwrap();
    let e = s
        .rollback(proto::RollbackRequest {
            database: DB.into(),
            transaction: tx,
        })
        .await
        .unwrap_err();
    // The emulator's answer for an unknown transaction (confirmed there).
    assert_eq!(
        (e.code, e.message.as_str()),
        (GrpcCode::InvalidArgument, "Invalid transaction.")
    );
}

#[tokio::test]
async fn a_read_only_transaction_cannot_write() {
    let (_dir, s) = open().await;
    let tx = s
        .begin_transaction(proto::BeginTransactionRequest {
            database: DB.into(),
            options: Some(proto::TransactionOptions {
                mode: Some(proto::transaction_options::Mode::ReadOnly(
                    Default::default(),
                )),
            }),
        })
        .await
        .unwrap()
        .transaction;
    let e = s
        .commit(proto::CommitRequest {
            database: DB.into(),
            writes: vec![set("a/1", &[])],
            transaction: tx,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, GrpcCode::InvalidArgument);
}

#[tokio::test]
async fn a_past_read_time_is_refused_as_there_is_no_history() {
    let (_dir, s) = open().await;
    let r = commit(&s, vec![set("a/1", &[])]).await.unwrap();
    commit(&s, vec![set("a/1", &[("x", int(1))])])
        .await
        .unwrap();
    let e = s
        .get_document(proto::GetDocumentRequest {
            name: name("a/1"),
            consistency_selector: Some(proto::get_document_request::ConsistencySelector::ReadTime(
                r.commit_time.unwrap(),
            )),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, GrpcCode::FailedPrecondition);
}

#[tokio::test]
async fn list_documents_pages_by_name_and_shows_missing_parents() {
    let (_dir, s) = open().await;
    commit(
        &s,
        vec![
            set("c/a", &[]),
            set("c/b", &[]),
            set("c/m/sub/x", &[]),
            set("c/z", &[]),
            set("c/a/deep/y", &[]),
            set("other/q", &[]),
        ],
    )
    .await
    .unwrap();
    let list = |page_size, page_token: String, show_missing| {
        let s = s.clone();
        async move {
            s.list_documents(proto::ListDocumentsRequest {
                parent: format!("{DB}/documents"),
                collection_id: "c".into(),
                page_size,
                page_token,
                show_missing,
                ..Default::default()
            })
            .await
            .unwrap()
        }
    };
    let names = |r: &proto::ListDocumentsResponse| -> Vec<String> {
        r.documents.iter().map(|d| d.name.clone()).collect()
    };
    let p1 = list(2, String::new(), false).await;
    assert_eq!(names(&p1), vec![name("c/a"), name("c/b")]);
    let p2 = list(2, p1.next_page_token.clone(), false).await;
    assert_eq!(names(&p2), vec![name("c/z")]);
    assert!(p2.next_page_token.is_empty());
    let all = list(0, String::new(), true).await;
    assert_eq!(
        names(&all),
        vec![name("c/a"), name("c/b"), name("c/m"), name("c/z")]
    );
    let missing = &all.documents[2];
    assert!(missing.create_time.is_none() && missing.update_time.is_none());
    assert!(all.documents[0].create_time.is_some());
    let q1 = list(3, String::new(), true).await;
    let q2 = list(3, q1.next_page_token.clone(), true).await;
    assert_eq!(names(&q2), vec![name("c/z")]);
}

#[tokio::test]
async fn list_collection_ids_finds_collections_at_any_depth_below() {
    let (_dir, s) = open().await;
    commit(
        &s,
        vec![
            set("top/d", &[]),
            set("top/d/beta/1", &[]),
            set("top/d/alpha/1/deeper/2", &[]),
            set("top/d/gamma/1", &[]),
            set("zeta/1", &[]),
        ],
    )
    .await
    .unwrap();
    let ids = |parent: String, page_size, page_token: String| {
        let s = s.clone();
        async move {
            s.list_collection_ids(proto::ListCollectionIdsRequest {
                parent,
                page_size,
                page_token,
                consistency_selector: None,
            })
            .await
            .unwrap()
        }
    };
    let root = ids(format!("{DB}/documents"), 0, String::new()).await;
    assert_eq!(root.collection_ids, vec!["top", "zeta"]);
    let under = ids(name("top/d"), 2, String::new()).await;
    assert_eq!(under.collection_ids, vec!["alpha", "beta"]);
    let rest = ids(name("top/d"), 2, under.next_page_token).await;
    assert_eq!(rest.collection_ids, vec!["gamma"]);
    assert!(rest.next_page_token.is_empty());
}

#[tokio::test]
async fn batch_write_applies_each_write_on_its_own() {
    let (_dir, s) = open().await;
    commit(&s, vec![set("b/exists", &[])]).await.unwrap();
    let r = s
        .batch_write(proto::BatchWriteRequest {
            database: DB.into(),
            writes: vec![
                set("b/1", &[("x", int(1))]),
                with_pre(set("b/exists", &[]), ConditionType::Exists(false)),
                set("b/2", &[]),
            ],
            labels: Default::default(),
        })
        .await
        .unwrap();
    let codes: Vec<i32> = r.status.iter().map(|s| s.code).collect();
    assert_eq!(
        codes,
        vec![
            GrpcCode::Ok.as_i32(),
            GrpcCode::AlreadyExists.as_i32(),
            GrpcCode::Ok.as_i32()
        ]
    );
    assert!(r.write_results[0].update_time.is_some());
    assert!(get(&s, "b/2").await.is_ok());
    // The same document twice refuses the whole request (as the emulator does).
    let e = s
        .batch_write(proto::BatchWriteRequest {
            database: DB.into(),
            writes: vec![set("b/9", &[]), set("b/9", &[("x", int(1))])],
            labels: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, GrpcCode::InvalidArgument);
    assert!(get(&s, "b/9").await.is_err());
}

#[tokio::test]
async fn field_names_and_values_are_checked_as_the_emulator_does() {
    // Each wording below was confirmed on the emulator.
    let (_dir, s) = open().await;
    let cases = [
        (
            set("v/1", &[("", int(1))]),
            "The property.name is the empty string.",
        ),
        (
            set("v/1", &[("__x__", int(1))]),
            "field name __x__ is reserved",
        ),
        (
            set("v/1", &[("m", map(&[("__y__", int(1))]))]),
            "field name __y__ is reserved",
        ),
        (
            set("v/1", &[("a", Value { value_type: None })]),
            "Cannot convert firestore.v1.Value with type unset.",
        ),
        (
            set("v/1", &[("a", array(vec![array(vec![])]))]),
            "Cannot convert an array value in an array value.",
        ),
    ];
    for (w, message) in cases {
        let e = commit(&s, vec![w]).await.unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (GrpcCode::InvalidArgument, message)
        );
    }
    // A reference to another database's document is accepted; to a
    // collection it is not.
    let reference = |r: &str| Value {
        value_type: Some(ValueType::ReferenceValue(r.into())),
    };
    commit(
        &s,
        vec![set(
            "v/1",
            &[("r", reference("projects/x/databases/y/documents/a/b"))],
        )],
    )
    .await
    .unwrap();
    let e = commit(&s, vec![set("v/1", &[("r", reference(&name("a")))])])
        .await
        .unwrap_err();
    assert_eq!(e.code, GrpcCode::InvalidArgument);
    // Reserved names in mask and transform paths (the boundary table's
    // cases, answered so by the emulator).
    let e = commit(&s, vec![with_mask(set("v/1", &[]), &["__x__"])])
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            GrpcCode::InvalidArgument,
            "Invalid reserved name in field path __x__"
        )
    );
    let e = commit(
        &s,
        vec![with_transform(
            set("v/1", &[]),
            "__x__",
            TransformType::Increment(int(1)),
        )],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, GrpcCode::InvalidArgument);
    // `__name__` is not reserved there.
    commit(&s, vec![with_mask(set("v/1", &[]), &["__name__"])])
        .await
        .unwrap();
    // The same field transformed twice applies both, in order.
    let mut w = with_mask(set("v/2", &[]), &[]);
    w = with_transform(w, "n", TransformType::Increment(int(1)));
    w = with_transform(w, "n", TransformType::Increment(int(1)));
    let r = commit(&s, vec![w]).await.unwrap();
    assert_eq!(r.write_results[0].transform_results, vec![int(1), int(2)]);
}

#[tokio::test]
async fn list_documents_without_a_collection_id_lists_every_collection_below() {
    let (_dir, s) = open().await;
    commit(
        &s,
        vec![
            set("m/1", &[]),
            set("q/1", &[]),
            set("q/1/deep/x", &[]),
            set("q/2", &[]),
        ],
    )
    .await
    .unwrap();
    let list = |page_token: String| {
        let s = s.clone();
        async move {
            s.list_documents(proto::ListDocumentsRequest {
                parent: format!("{DB}/documents"),
                page_size: 2,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
        }
    };
    let p1 = list(String::new()).await;
    let names: Vec<String> = p1.documents.iter().map(|d| d.name.clone()).collect();
    assert_eq!(names, vec![name("m/1"), name("q/1")]);
    let p2 = list(p1.next_page_token).await;
    let names: Vec<String> = p2.documents.iter().map(|d| d.name.clone()).collect();
    assert_eq!(names, vec![name("q/2")]);
}

#[tokio::test]
async fn create_update_and_delete_document_calls() {
    let (_dir, s) = open().await;
    let created = s
        .create_document(proto::CreateDocumentRequest {
            parent: format!("{DB}/documents"),
            collection_id: "things".into(),
            document_id: String::new(),
            document: Some(Document {
                fields: fields_of(&[("a", int(1))]),
                ..Default::default()
            }),
            mask: None,
        })
        .await
        .unwrap();
    let id = created.name.rsplit('/').next().unwrap().to_owned();
    assert_eq!(id.len(), 20);
    let again = s
        .create_document(proto::CreateDocumentRequest {
            parent: format!("{DB}/documents"),
            collection_id: "things".into(),
            document_id: id.clone(),
            document: None,
            mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code, GrpcCode::AlreadyExists);
    let updated = s
        .update_document(proto::UpdateDocumentRequest {
            document: Some(Document {
                name: created.name.clone(),
                fields: fields_of(&[("b", int(2))]),
                ..Default::default()
            }),
            update_mask: Some(DocumentMask {
                field_paths: vec!["b".into()],
            }),
            mask: None,
            current_document: None,
        })
        .await
        .unwrap();
    assert_eq!(updated.fields, fields_of(&[("a", int(1)), ("b", int(2))]));
    s.delete_document(proto::DeleteDocumentRequest {
        name: created.name.clone(),
        current_document: None,
    })
    .await
    .unwrap();
    assert_eq!(
        get(&s, &format!("things/{id}")).await.unwrap_err().code,
        GrpcCode::NotFound
    );
}

#[tokio::test]
async fn export_then_import_restores_documents_and_times_exactly() {
    let (_dir, s) = open().await;
    commit(
        &s,
        vec![
            set("a/1", &[("x", int(1))]),
            set("a/1/sub/2", &[("y", string("z"))]),
        ],
    )
    .await
    .unwrap();
    let other = "projects/p/databases/other";
    s.commit(proto::CommitRequest {
        database: other.into(),
        writes: vec![Write {
            operation: Some(Operation::Update(Document {
                name: format!("{other}/documents/o/1"),
                ..Default::default()
            })),
            ..Default::default()
        }],
        transaction: Default::default(),
    })
    .await
    .unwrap();
    let all: Vec<Document> = s.export(None).unwrap().map(|d| d.unwrap()).collect().await;
    assert_eq!(all.len(), 3);
    let one: Vec<Document> = s
        .export(Some(DB))
        .unwrap()
        .map(|d| d.unwrap())
        .collect()
        .await;
    assert_eq!(one.len(), 2);
    let (_dir2, fresh) = open().await;
    assert_eq!(fresh.import(all.clone()).await.unwrap(), 3);
    assert_eq!(fresh.import(all.clone()).await.unwrap(), 3);
    let back: Vec<Document> = fresh
        .export(None)
        .unwrap()
        .map(|d| d.unwrap())
        .collect()
        .await;
    assert_eq!(back, all);
}

async fn next(
    stream: &mut futures_util::stream::BoxStream<'static, Result<proto::ListenResponse, Status>>,
) -> proto::listen_response::ResponseType {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a listen response in time")
        .expect("the stream is open")
        .expect("not an error")
        .response_type
        .expect("a response type")
}

#[tokio::test]
async fn listen_on_documents_sends_state_then_changes() {
    use proto::listen_response::ResponseType as RT;
    use proto::target_change::TargetChangeType as T;
    let (_dir, s) = open().await;
    commit(&s, vec![set("l/1", &[("x", int(1))])])
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<proto::ListenRequest>();
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
            .boxed();
    let mut out = s.listen(requests);
    tx.send(proto::ListenRequest {
        database: DB.into(),
        labels: Default::default(),
        target_change: Some(proto::listen_request::TargetChange::AddTarget(
            proto::Target {
                target_id: 0x31,
                target_type: Some(proto::target::TargetType::Documents(
                    proto::target::DocumentsTarget {
                        documents: vec![name("l/1"), name("l/2")],
                    },
                )),
                ..Default::default()
            },
        )),
    })
    .unwrap();
    let tc = |r: RT| match r {
        RT::TargetChange(t) => t,
        other => panic!("expected a target change, got {other:?}"),
    };
    let add = tc(next(&mut out).await);
    assert_eq!(
        (add.target_change_type, add.target_ids),
        (T::Add as i32, vec![0x31])
    );
    match next(&mut out).await {
        RT::DocumentChange(c) => {
            assert_eq!(c.document.unwrap().name, name("l/1"));
            assert_eq!(c.target_ids, vec![0x31]);
        }
        other => panic!("{other:?}"),
    }
    let current = tc(next(&mut out).await);
    assert_eq!(current.target_change_type, T::Current as i32);
    let snap = tc(next(&mut out).await);
    assert_eq!(snap.target_change_type, T::NoChange as i32);
    assert!(snap.target_ids.is_empty() && snap.read_time.is_some());
    assert!(!snap.resume_token.is_empty());
    // A change, then a delete.
    commit(&s, vec![set("l/2", &[("y", int(2))])])
        .await
        .unwrap();
    match next(&mut out).await {
        RT::DocumentChange(c) => assert_eq!(c.document.unwrap().name, name("l/2")),
        other => panic!("{other:?}"),
    }
    let snap2 = tc(next(&mut out).await);
    assert_eq!(snap2.target_change_type, T::NoChange as i32);
    assert!(micros(&snap2.read_time) > micros(&snap.read_time));
    commit(&s, vec![delete("l/1")]).await.unwrap();
    match next(&mut out).await {
        RT::DocumentDelete(d) => {
            assert_eq!(d.document, name("l/1"));
            assert_eq!(d.removed_target_ids, vec![0x31]);
        }
        other => panic!("{other:?}"),
    }
    tc(next(&mut out).await);
    // Removing the target, then ending the request side ends the stream.
    tx.send(proto::ListenRequest {
        database: DB.into(),
        labels: Default::default(),
        target_change: Some(proto::listen_request::TargetChange::RemoveTarget(0x31)),
    })
    .unwrap();
    let removed = tc(next(&mut out).await);
    assert_eq!(removed.target_change_type, T::Remove as i32);
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), out.next())
        .await
        .unwrap();
    assert!(end.is_none());
}

fn field_filter(
    field: &str,
    op: proto::structured_query::field_filter::Operator,
    value: Value,
) -> proto::structured_query::Filter {
    use proto::structured_query::{FieldFilter, FieldReference, Filter, filter::FilterType};
    Filter {
        filter_type: Some(FilterType::FieldFilter(FieldFilter {
            field: Some(FieldReference {
                field_path: field.into(),
            }),
            op: op as i32,
            value: Some(value),
        })),
    }
}

fn query(collection: &str, all_descendants: bool) -> proto::StructuredQuery {
    proto::StructuredQuery {
        from: vec![proto::structured_query::CollectionSelector {
            collection_id: collection.into(),
            all_descendants,
        }],
        ..Default::default()
    }
}

async fn run_query(
    s: &DocumentStore,
    parent: &str,
    q: proto::StructuredQuery,
) -> Vec<proto::RunQueryResponse> {
    s.run_query(proto::RunQueryRequest {
        parent: parent.into(),
        query_type: Some(proto::run_query_request::QueryType::StructuredQuery(q)),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn doc_names(r: &[proto::RunQueryResponse]) -> Vec<String> {
    r.iter()
        .filter_map(|r| r.document.as_ref().map(|d| d.name.clone()))
        .collect()
}

#[tokio::test]
async fn run_query_filters_orders_and_limits_over_stored_rows() {
    use proto::structured_query::field_filter::Operator as Op;
    use proto::structured_query::{Direction, FieldReference, Order};
    let (_dir, s) = open().await;
    commit(
        &s,
        vec![
            set("cities/a", &[("pop", int(5))]),
            set("cities/b", &[("pop", int(50))]),
            set("cities/c", &[("pop", dbl(20.5))]),
            set("cities/d", &[("name", string("no pop"))]),
            set("cities/b/cities/inner", &[("pop", int(99))]),
            set("towns/t", &[("pop", int(70))]),
        ],
    )
    .await
    .unwrap();
    let root = format!("{DB}/documents");
    let mut q = query("cities", false);
    q.r#where = Some(field_filter("pop", Op::GreaterThan, int(10)));
    q.order_by = vec![Order {
        field: Some(FieldReference {
            field_path: "pop".into(),
        }),
        direction: Direction::Descending as i32,
    }];
    let r = run_query(&s, &root, q.clone()).await;
    assert_eq!(doc_names(&r), vec![name("cities/b"), name("cities/c")]);
    assert!(r.iter().all(|r| r.read_time.is_some()));
    q.limit = Some(1);
    assert_eq!(
        doc_names(&run_query(&s, &root, q).await),
        vec![name("cities/b")]
    );
    // A collection group: every `cities` collection at any depth.
    let mut g = query("cities", true);
    g.r#where = Some(field_filter("pop", Op::GreaterThanOrEqual, int(50)));
    assert_eq!(
        doc_names(&run_query(&s, &root, g.clone()).await),
        vec![name("cities/b"), name("cities/b/cities/inner")]
    );
    // Under a document only.
    assert_eq!(
        doc_names(&run_query(&s, &name("cities/b"), g).await),
        vec![name("cities/b/cities/inner")]
    );
    // An empty result is one response with the read time only, marked done
    // (as the emulator answers; confirmed there).
    let empty = run_query(&s, &root, query("nothing", false)).await;
    assert_eq!(empty.len(), 1);
    assert!(empty[0].document.is_none() && empty[0].read_time.is_some());
    assert_eq!(
        empty[0].continuation_selector,
        Some(proto::run_query_response::ContinuationSelector::Done(true))
    );
}

#[tokio::test]
async fn an_all_descendants_query_without_a_collection_id_finds_the_subtree() {
    // The query `recursiveDelete` sends: every document below a parent.
    let (_dir, s) = open().await;
    commit(
        &s,
        vec![
            set("p/1", &[]),
            set("p/1/a/x", &[]),
            set("p/1/b/y/c/z", &[]),
            set("p/2/a/w", &[]),
        ],
    )
    .await
    .unwrap();
    let r = run_query(&s, &name("p/1"), query("", true)).await;
    assert_eq!(doc_names(&r), vec![name("p/1/a/x"), name("p/1/b/y/c/z")]);
}

#[tokio::test]
async fn a_query_in_a_new_transaction_answers_the_transaction_first() {
    let (_dir, s) = open().await;
    commit(&s, vec![set("q/1", &[("a", int(1))])])
        .await
        .unwrap();
    let r = s
        .run_query(proto::RunQueryRequest {
            parent: format!("{DB}/documents"),
            query_type: Some(proto::run_query_request::QueryType::StructuredQuery(query(
                "q", false,
            ))),
            consistency_selector: Some(
                proto::run_query_request::ConsistencySelector::NewTransaction(Default::default()),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.len(), 2);
    assert!(!r[0].transaction.is_empty() && r[0].document.is_none());
    assert_eq!(doc_names(&r), vec![name("q/1")]);
    // The query's read locks what it read: a write to it aborts the commit.
    commit(&s, vec![set("q/1", &[("a", int(2))])])
        .await
        .unwrap();
    let e = s
        .commit(proto::CommitRequest {
            database: DB.into(),
            writes: vec![set("q/2", &[])],
            transaction: r[0].transaction.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, GrpcCode::Aborted);
}

#[tokio::test]
async fn aggregation_counts_over_stored_rows() {
    use proto::structured_aggregation_query::{Aggregation, aggregation};
    let (_dir, s) = open().await;
    commit(
        &s,
        vec![
            set("n/1", &[("v", int(1))]),
            set("n/2", &[("v", int(2))]),
            set("n/3", &[("v", dbl(0.5))]),
        ],
    )
    .await
    .unwrap();
    let agg = proto::StructuredAggregationQuery {
        aggregations: vec![
            Aggregation {
                alias: "count".into(),
                operator: Some(aggregation::Operator::Count(Default::default())),
            },
            Aggregation {
                alias: "total".into(),
                operator: Some(aggregation::Operator::Sum(aggregation::Sum {
                    field: Some(proto::structured_query::FieldReference {
                        field_path: "v".into(),
                    }),
                })),
            },
        ],
        query_type: Some(
            proto::structured_aggregation_query::QueryType::StructuredQuery(query("n", false)),
        ),
    };
    let agg_query = agg.clone();
    let r = s
        .run_aggregation_query(proto::RunAggregationQueryRequest {
            parent: format!("{DB}/documents"),
            query_type: Some(
                proto::run_aggregation_query_request::QueryType::StructuredAggregationQuery(agg),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.len(), 1);
    let fields = &r[0].result.as_ref().unwrap().aggregate_fields;
    assert_eq!(fields["count"], int(3));
    assert_eq!(fields["total"], dbl(3.5));
    assert!(r[0].read_time.is_some());
    // In a new transaction: the transaction first, in its own response
    // (as the emulator answers; confirmed there).
    let r = s
        .run_aggregation_query(proto::RunAggregationQueryRequest {
            parent: format!("{DB}/documents"),
            query_type: Some(
                proto::run_aggregation_query_request::QueryType::StructuredAggregationQuery(
                    agg_query,
                ),
            ),
            consistency_selector: Some(
                proto::run_aggregation_query_request::ConsistencySelector::NewTransaction(
                    Default::default(),
                ),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.len(), 2);
    assert!(!r[0].transaction.is_empty() && r[0].result.is_none());
    assert!(r[1].transaction.is_empty() && r[1].result.is_some());
}

#[tokio::test]
async fn listen_on_a_query_sends_adds_changes_removes_and_resumes_with_reset() {
    use proto::listen_response::ResponseType as RT;
    use proto::structured_query::field_filter::Operator as Op;
    use proto::target_change::TargetChangeType as T;
    let (_dir, s) = open().await;
    commit(
        &s,
        vec![
            set(
                "f/on",
                &[(
                    "enabled",
                    Value {
                        value_type: Some(ValueType::BooleanValue(true)),
                    },
                )],
            ),
            set(
                "f/off",
                &[(
                    "enabled",
                    Value {
                        value_type: Some(ValueType::BooleanValue(false)),
                    },
                )],
            ),
        ],
    )
    .await
    .unwrap();
    let yes = Value {
        value_type: Some(ValueType::BooleanValue(true)),
    };
    let no = Value {
        value_type: Some(ValueType::BooleanValue(false)),
    };
    let mut q = query("f", false);
    q.r#where = Some(field_filter("enabled", Op::Equal, yes.clone()));
    let target = |id: i32, resume: bool| proto::ListenRequest {
        database: DB.into(),
        labels: Default::default(),
        target_change: Some(proto::listen_request::TargetChange::AddTarget(
            proto::Target {
                target_id: id,
                target_type: Some(proto::target::TargetType::Query(
                    proto::target::QueryTarget {
                        parent: format!("{DB}/documents"),
                        query_type: Some(proto::target::query_target::QueryType::StructuredQuery(
                            q.clone(),
                        )),
                    },
                )),
                resume_type: resume.then(|| {
                    proto::target::ResumeType::ResumeToken(bytes::Bytes::from_static(&[0; 8]))
                }),
                ..Default::default()
            },
        )),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<proto::ListenRequest>();
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
            .boxed();
    let mut out = s.listen(requests);
    // Target id 0: the server assigns one (the emulator assigns 1; confirmed there).
    tx.send(target(0, false)).unwrap();
    let kind = |r: &RT| match r {
        RT::TargetChange(t) => format!(
            "{:?}{:?}",
            T::try_from(t.target_change_type).unwrap(),
            t.target_ids
        ),
        RT::DocumentChange(c) => format!(
            "change {}",
            c.document
                .as_ref()
                .unwrap()
                .name
                .rsplit('/')
                .next()
                .unwrap()
        ),
        RT::DocumentDelete(d) => format!("delete {}", d.document.rsplit('/').next().unwrap()),
        RT::DocumentRemove(d) => format!("remove {}", d.document.rsplit('/').next().unwrap()),
        RT::Filter(_) => "filter".into(),
    };
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(kind(&next(&mut out).await));
    }
    assert_eq!(
        seen,
        vec!["Add[1]", "change on", "Current[1]", "NoChange[]"]
    );
    // `off` starts matching, `on` stops, then `off` is deleted.
    commit(&s, vec![set("f/off", &[("enabled", yes.clone())])])
        .await
        .unwrap();
    assert_eq!(kind(&next(&mut out).await), "change off");
    assert_eq!(kind(&next(&mut out).await), "NoChange[]");
    commit(&s, vec![set("f/on", &[("enabled", no.clone())])])
        .await
        .unwrap();
    assert_eq!(kind(&next(&mut out).await), "remove on");
    assert_eq!(kind(&next(&mut out).await), "NoChange[]");
    commit(&s, vec![delete("f/off")]).await.unwrap();
    assert_eq!(kind(&next(&mut out).await), "delete off");
    assert_eq!(kind(&next(&mut out).await), "NoChange[]");
    // A write elsewhere sends nothing; the next thing seen is the resume.
    commit(&s, vec![set("elsewhere/x", &[])]).await.unwrap();
    commit(&s, vec![set("f/quiet", &[("enabled", no.clone())])])
        .await
        .unwrap();
    commit(&s, vec![set("f/new", &[("enabled", yes.clone())])])
        .await
        .unwrap();
    assert_eq!(kind(&next(&mut out).await), "change new");
    assert_eq!(kind(&next(&mut out).await), "NoChange[]");
    tx.send(target(5, true)).unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(kind(&next(&mut out).await));
    }
    assert_eq!(
        seen,
        vec![
            "Add[5]",
            "Reset[5]",
            "change new",
            "Current[5]",
            "NoChange[]"
        ]
    );
    drop(tx);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), out.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn depth_and_precision_limits_answer_as_the_emulator_does() {
    // Each answer below was confirmed on the emulator.
    let (_dir, s) = open().await;
    let nest = |depth: usize| {
        let mut v = int(1);
        for _ in 0..depth {
            v = map(&[("a", v)]);
        }
        v
    };
    commit(&s, vec![set("d/1", &[("a", nest(20))])])
        .await
        .unwrap();
    let e = commit(&s, vec![set("d/1", &[("a", nest(21))])])
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            GrpcCode::InvalidArgument,
            "Property a contains an invalid nested entity."
        )
    );
    let deep = vec!["a"; 21].join(".");
    let e = commit(&s, vec![with_mask(set("d/2", &[]), &[deep.as_str()])])
        .await
        .unwrap_err();
    assert_eq!(e.message, "paths must have at most 20 elements");
    let twenty = vec!["a"; 20].join(".");
    commit(&s, vec![with_mask(set("d/2", &[]), &[twenty.as_str()])])
        .await
        .unwrap();
    // Timestamps keep microseconds.
    let ts = |seconds, nanos| Value {
        value_type: Some(ValueType::TimestampValue(prost_types::Timestamp {
            seconds,
            nanos,
        })),
    };
    commit(&s, vec![set("d/3", &[("t", ts(5, 1999))])])
        .await
        .unwrap();
    assert_eq!(get(&s, "d/3").await.unwrap().fields["t"], ts(5, 1000));
    let e = commit(
        &s,
        vec![with_pre(
            set("d/3", &[]),
            ConditionType::UpdateTime(prost_types::Timestamp {
                seconds: 5,
                nanos: 1,
            }),
        )],
    )
    .await
    .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            GrpcCode::InvalidArgument,
            "timestamp cannot have more than microseconds precision"
        )
    );
}

#[tokio::test]
async fn update_times_grow_even_when_the_clock_steps_back() {
    let clock = Arc::new(FakeClock::at(1_800_000_000));
    let (dir, s) = open_with(clock.clone()).await;
    let r1 = commit(&s, vec![set("c/1", &[("n", int(1))])])
        .await
        .unwrap();
    // A restart with the clock an hour behind: the store's rows still
    // carry the later time.
    clock.set(1_799_996_400);
    let sqlite = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    let s2 = DocumentStore::new(sqlite.document_rows(), clock.clone());
    let r2 = commit(&s2, vec![set("c/1", &[("n", int(2))])])
        .await
        .unwrap();
    assert!(micros(&r2.commit_time) > micros(&r1.commit_time));
    drop(s);
}

/// The gateway holds the store in an `Arc` and runs each call on its own
/// task: the store is `Send + Sync` and every call's future is `Send`.
#[test]
fn the_store_and_its_calls_are_send() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<DocumentStore>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (_dir, s) = open().await;
        send(&s.get_document(Default::default()));
        send(&s.list_documents(Default::default()));
        send(&s.create_document(Default::default()));
        send(&s.update_document(Default::default()));
        send(&s.delete_document(Default::default()));
        send(&s.batch_get_documents(Default::default()));
        send(&s.begin_transaction(Default::default()));
        send(&s.commit(Default::default()));
        send(&s.rollback(Default::default()));
        send(&s.run_query(Default::default()));
        send(&s.run_aggregation_query(Default::default()));
        send(&s.list_collection_ids(Default::default()));
        send(&s.batch_write(Default::default()));
        send(&s.partition_query(Default::default()));
        send(&s.import(Vec::new()));
        let listen = s.listen(futures_util::stream::empty().boxed());
        send(&listen);
        let export = s.export(None).unwrap();
        send(&export);
    });
}

#[tokio::test]
async fn a_document_added_to_what_a_transaction_queried_aborts_it() {
    let (_dir, s) = open().await;
    commit(&s, vec![set("seats/1", &[("taken", int(1))])])
        .await
        .unwrap();
    let begin = || async {
        s.begin_transaction(proto::BeginTransactionRequest {
            database: DB.into(),
            options: None,
        })
        .await
        .unwrap()
        .transaction
    };
    let query_in = |tx: bytes::Bytes| {
        let s = s.clone();
        async move {
            s.run_query(proto::RunQueryRequest {
                parent: format!("{DB}/documents"),
                query_type: Some(proto::run_query_request::QueryType::StructuredQuery(query(
                    "seats", false,
                ))),
                consistency_selector: Some(
                    proto::run_query_request::ConsistencySelector::Transaction(tx),
                ),
                ..Default::default()
            })
            .await
            .unwrap()
        }
    };
    // A phantom: a new document where the transaction's query looked.
    let tx = begin().await;
    assert_eq!(doc_names(&query_in(tx.clone()).await).len(), 1);
    commit(&s, vec![set("seats/2", &[("taken", int(1))])])
        .await
        .unwrap();
    let e = s
        .commit(proto::CommitRequest {
            database: DB.into(),
            writes: vec![set("summary/s", &[("count", int(1))])],
            transaction: tx,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, GrpcCode::Aborted);
    // Unchanged, the same shape commits (its own write into the queried
    // collection included).
    let tx = begin().await;
    assert_eq!(doc_names(&query_in(tx.clone()).await).len(), 2);
    s.commit(proto::CommitRequest {
        database: DB.into(),
        writes: vec![set("seats/3", &[])],
        transaction: tx,
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn numeric_ids_are_documents_and_other_reserved_ids_are_refused() {
    // The emulator accepts `__id7__` and refuses `__x__` (confirmed there).
    let (_dir, s) = open().await;
    commit(&s, vec![set("a/__id7__", &[("x", int(1))])])
        .await
        .unwrap();
    assert_eq!(get(&s, "a/__id7__").await.unwrap().fields["x"], int(1));
    let listed = s
        .list_documents(proto::ListDocumentsRequest {
            parent: format!("{DB}/documents"),
            collection_id: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.documents.len(), 1);
    let e = commit(&s, vec![set("a/__x__", &[])]).await.unwrap_err();
    assert_eq!(e.code, GrpcCode::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_falls_behind_catches_up_to_the_latest_state() {
    use proto::listen_response::ResponseType as RT;
    let (_dir, s) = open().await;
    commit(&s, vec![set("lag/1", &[("n", int(0))])])
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<proto::ListenRequest>();
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
            .boxed();
    let mut out = s.listen(requests);
    tx.send(proto::ListenRequest {
        database: DB.into(),
        labels: Default::default(),
        target_change: Some(proto::listen_request::TargetChange::AddTarget(
            proto::Target {
                target_id: 1,
                target_type: Some(proto::target::TargetType::Documents(
                    proto::target::DocumentsTarget {
                        documents: vec![name("lag/1")],
                    },
                )),
                ..Default::default()
            },
        )),
    })
    .unwrap();
    for _ in 0..4 {
        next(&mut out).await;
    }
    // More commits than the change broadcast holds, with nobody reading.
    const N: i64 = 1_500;
    for i in 1..=N {
        commit(&s, vec![set("lag/1", &[("n", int(i))])])
            .await
            .unwrap();
    }
    // Whatever was skipped, the stream ends at the latest state.
    let mut last = None;
    loop {
        match next(&mut out).await {
            RT::DocumentChange(c) => last = Some(c.document.unwrap().fields["n"].clone()),
            RT::TargetChange(_) if last == Some(int(N)) => break,
            RT::TargetChange(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
