//! Every Firestore RPC classified from real protobuf encodings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use bytes::Bytes;
use latchkey_core::{Action, ContextValue, ResourceKind};
use latchkey_documents::proto::{self as pb, value::ValueType};
use latchkey_documents::{
    Access, Classified, ClassifyError, ClassifyOptions, DatabaseName, DocAction, DocPath, GrpcCode,
    Method, StreamClassifier, Target, WriteOp, classify_grpc, transaction_in_response,
};
use prost::Message;

const DB: &str = "projects/p/databases/prod";
const ROOT: &str = "projects/p/databases/prod/documents";

fn name(path: &str) -> String {
    format!("{ROOT}/{path}")
}

fn doc(path: &str) -> Target {
    Target::Document(DocPath::parse(path).unwrap())
}

fn coll(path: &str) -> Target {
    Target::Collection(DocPath::parse(path).unwrap())
}

fn classify(method: Method, msg: &impl Message) -> Result<Classified, ClassifyError> {
    classify_grpc(method, &msg.encode_to_vec(), &ClassifyOptions::NONE)
}

fn ok(method: Method, msg: &impl Message) -> Classified {
    let c = classify(method, msg).unwrap_or_else(|e| panic!("{method}: {e}"));
    assert_eq!(c.method, method);
    assert_eq!(c.database, DatabaseName::parse(DB).unwrap());
    c
}

fn err(method: Method, msg: &impl Message) -> String {
    let e = classify(method, msg).expect_err("should be refused");
    assert_eq!(e.code(), GrpcCode::InvalidArgument, "{e}");
    e.to_string()
}

fn targets(c: &Classified) -> Vec<(DocAction, Target, &'static str)> {
    c.accesses
        .iter()
        .map(|a| (a.action, a.target.clone(), a.operation))
        .collect()
}

fn string_value(s: &str) -> pb::Value {
    pb::Value {
        value_type: Some(ValueType::StringValue(s.into())),
    }
}

fn document(path: &str, fields: &[(&str, pb::Value)]) -> pb::Document {
    pb::Document {
        name: if path.is_empty() {
            String::new()
        } else {
            name(path)
        },
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        ..Default::default()
    }
}

fn query(from: &[(&str, bool)]) -> pb::StructuredQuery {
    pb::StructuredQuery {
        from: from
            .iter()
            .map(|(id, all)| pb::structured_query::CollectionSelector {
                collection_id: (*id).into(),
                all_descendants: *all,
            })
            .collect(),
        ..Default::default()
    }
}

fn exists(e: bool) -> Option<pb::Precondition> {
    Some(pb::Precondition {
        condition_type: Some(pb::precondition::ConditionType::Exists(e)),
    })
}

fn mask(paths: &[&str]) -> Option<pb::DocumentMask> {
    Some(pb::DocumentMask {
        field_paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn update(path: &str) -> pb::Write {
    pb::Write {
        operation: Some(pb::write::Operation::Update(document(
            path,
            &[("a", string_value("x"))],
        ))),
        ..Default::default()
    }
}

#[test]
fn get_document() {
    let c = ok(
        Method::GetDocument,
        &pb::GetDocumentRequest {
            name: name("flags/checkout"),
            consistency_selector: Some(pb::get_document_request::ConsistencySelector::Transaction(
                Bytes::from_static(b"tx1"),
            )),
            ..Default::default()
        },
    );
    assert_eq!(
        targets(&c),
        [(DocAction::Get, doc("flags/checkout"), "get")]
    );
    assert_eq!(c.transaction.as_deref(), Some(&b"tx1"[..]));
    assert!(!c.begins_transaction);

    let intent = c.accesses[0].intent(&c.database, "production");
    assert_eq!(intent.action, Action::DocumentGet);
    assert_eq!(intent.resource.kind, ResourceKind::Document);
    assert_eq!(intent.resource.id, "prod/flags/checkout");
    assert_eq!(intent.resource.attributes["path"], "flags/checkout");
    assert_eq!(intent.resource.attributes["collection_id"], "flags");
    assert_eq!(intent.resource.attributes["database"], "prod");
    assert_eq!(intent.resource.attributes["environment"], "production");
    let parent = intent.resource.parent.as_deref().unwrap();
    assert_eq!(parent.id, "prod/flags");
    assert_eq!(
        parent.parent.as_deref().unwrap().kind,
        ResourceKind::Environment
    );
    assert_eq!(intent.context["operation"], ContextValue::from("get"));

    assert!(
        err(
            Method::GetDocument,
            &pb::GetDocumentRequest {
                name: name("flags"),
                ..Default::default()
            }
        )
        .contains("is not a document name")
    );
    assert_eq!(
        err(Method::GetDocument, &pb::GetDocumentRequest::default()),
        "missing required field `name`"
    );
}

#[test]
fn list_documents() {
    let c = ok(
        Method::ListDocuments,
        &pb::ListDocumentsRequest {
            parent: name("teams/a"),
            collection_id: "members".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        targets(&c),
        [(DocAction::List, coll("teams/a/members"), "list")]
    );
    let i = c.accesses[0].intent(&c.database, "production");
    assert_eq!(i.action, Action::DocumentList);
    assert_eq!(i.resource.kind, ResourceKind::Collection);
    assert_eq!(i.resource.id, "prod/teams/a/members");
    assert!(!i.context.contains_key("all_descendants"));

    let root = ok(
        Method::ListDocuments,
        &pb::ListDocumentsRequest {
            parent: ROOT.into(),
            collection_id: "flags".into(),
            ..Default::default()
        },
    );
    assert_eq!(targets(&root), [(DocAction::List, coll("flags"), "list")]);

    // No collection id: every collection directly below the parent,
    // decided on the parent (issue 15).
    let c = ok(
        Method::ListDocuments,
        &pb::ListDocumentsRequest {
            parent: name("teams/a"),
            ..Default::default()
        },
    );
    assert_eq!(
        targets(&c),
        [(
            DocAction::List,
            Target::AnyCollection {
                parent: DocPath::parse("teams/a").unwrap(),
                all_descendants: false
            },
            "list"
        )]
    );
    let i = c.accesses[0].intent(&c.database, "production");
    assert_eq!(
        (i.resource.kind, i.resource.id.as_str()),
        (ResourceKind::Document, "prod/teams/a")
    );
    assert_eq!(i.context["collections"], ContextValue::from("any"));
    for bad in [("flags", "x"), ("teams/a", "a/b"), ("teams/a", "__x__")] {
        err(
            Method::ListDocuments,
            &pb::ListDocumentsRequest {
                parent: name(bad.0),
                collection_id: bad.1.into(),
                ..Default::default()
            },
        );
    }
}

#[test]
fn list_collection_ids() {
    let c = ok(
        Method::ListCollectionIds,
        &pb::ListCollectionIdsRequest {
            parent: name("teams/a"),
            ..Default::default()
        },
    );
    assert_eq!(
        targets(&c),
        [(
            DocAction::List,
            Target::CollectionIds {
                parent: DocPath::parse("teams/a").unwrap()
            },
            "collection_ids"
        )]
    );
    let i = c.accesses[0].intent(&c.database, "production");
    assert_eq!(i.resource.kind, ResourceKind::Document);
    assert_eq!(i.resource.id, "prod/teams/a");
    assert_eq!(i.context["operation"], ContextValue::from("collection_ids"));

    let root = ok(
        Method::ListCollectionIds,
        &pb::ListCollectionIdsRequest {
            parent: ROOT.into(),
            ..Default::default()
        },
    );
    let i = root.accesses[0].intent(&root.database, "production");
    assert_eq!(i.resource.kind, ResourceKind::Environment);
    assert_eq!(i.resource.id, "production");
}

#[test]
fn queries() {
    let c = ok(
        Method::RunQuery,
        &pb::RunQueryRequest {
            parent: name("teams/a"),
            query_type: Some(pb::run_query_request::QueryType::StructuredQuery(query(&[
                ("members", false),
            ]))),
            consistency_selector: Some(pb::run_query_request::ConsistencySelector::NewTransaction(
                pb::TransactionOptions::default(),
            )),
            ..Default::default()
        },
    );
    assert_eq!(
        targets(&c),
        [(DocAction::Query, coll("teams/a/members"), "query")]
    );
    assert!(c.begins_transaction);
    let i = c.accesses[0].intent(&c.database, "production");
    assert_eq!(i.action, Action::DocumentQuery);
    assert_eq!(i.resource.id, "prod/teams/a/members");
    assert_eq!(i.context["collection_id"], ContextValue::from("members"));
    assert_eq!(i.context["all_descendants"], ContextValue::Bool(false));

    // A collection group query from the root.
    let c = ok(
        Method::RunQuery,
        &pb::RunQueryRequest {
            parent: ROOT.into(),
            query_type: Some(pb::run_query_request::QueryType::StructuredQuery(query(&[
                ("members", true),
            ]))),
            ..Default::default()
        },
    );
    assert_eq!(
        targets(&c),
        [(
            DocAction::Query,
            Target::Subtree {
                parent: DocPath::root(),
                collection_id: "members".into()
            },
            "query"
        )]
    );
    let i = c.accesses[0].intent(&c.database, "production");
    assert_eq!(i.resource.kind, ResourceKind::Environment);
    assert_eq!(i.context["collection_id"], ContextValue::from("members"));
    assert_eq!(i.context["all_descendants"], ContextValue::Bool(true));

    // Aggregations, below a document, reading in a transaction.
    let c = ok(
        Method::RunAggregationQuery,
        &pb::RunAggregationQueryRequest {
            parent: name("teams/a"),
            query_type: Some(
                pb::run_aggregation_query_request::QueryType::StructuredAggregationQuery(
                    pb::StructuredAggregationQuery {
                        query_type: Some(
                            pb::structured_aggregation_query::QueryType::StructuredQuery(query(&[
                                ("members", true),
                            ])),
                        ),
                        ..Default::default()
                    },
                ),
            ),
            consistency_selector: Some(
                pb::run_aggregation_query_request::ConsistencySelector::Transaction(
                    Bytes::from_static(b"t"),
                ),
            ),
            ..Default::default()
        },
    );
    assert_eq!(
        targets(&c),
        [(
            DocAction::Query,
            Target::Subtree {
                parent: DocPath::parse("teams/a").unwrap(),
                collection_id: "members".into()
            },
            "aggregation"
        )]
    );
    assert_eq!(c.transaction.as_deref(), Some(&b"t"[..]));
    let i = c.accesses[0].intent(&c.database, "production");
    assert_eq!(i.resource.kind, ResourceKind::Document);
    assert_eq!(i.resource.id, "prod/teams/a");
    assert_eq!(i.context["operation"], ContextValue::from("aggregation"));

    let c = ok(
        Method::PartitionQuery,
        &pb::PartitionQueryRequest {
            parent: ROOT.into(),
            query_type: Some(pb::partition_query_request::QueryType::StructuredQuery(
                query(&[("flags", true)]),
            )),
            ..Default::default()
        },
    );
    assert_eq!(c.accesses.len(), 1);
    assert_eq!(c.accesses[0].operation, "query");

    // Several `from` selectors give several accesses.
    let c = ok(
        Method::RunQuery,
        &pb::RunQueryRequest {
            parent: ROOT.into(),
            query_type: Some(pb::run_query_request::QueryType::StructuredQuery(query(&[
                ("a", false),
                ("b", false),
            ]))),
            ..Default::default()
        },
    );
    assert_eq!(c.accesses.len(), 2);

    // Queries naming no collection (issue 15): `recursiveDelete`'s
    // all-descendants query reads the whole subtree below its parent; a
    // selector without an id, or no selector, every collection directly
    // below it. Each is decided on the parent, and says so.
    for (from, all) in [
        (vec![("", true)], true),
        (vec![("", false)], false),
        (vec![], false),
    ] {
        for (parent, kind, id) in [
            (ROOT.to_owned(), ResourceKind::Environment, "production"),
            (name("teams/a"), ResourceKind::Document, "prod/teams/a"),
        ] {
            let c = ok(
                Method::RunQuery,
                &pb::RunQueryRequest {
                    parent: parent.clone(),
                    query_type: Some(pb::run_query_request::QueryType::StructuredQuery(query(
                        &from,
                    ))),
                    ..Default::default()
                },
            );
            let (_, path) = latchkey_documents::ResourceName::parse(&parent).unwrap();
            assert_eq!(
                targets(&c),
                [(
                    DocAction::Query,
                    Target::AnyCollection {
                        parent: path,
                        all_descendants: all
                    },
                    "query"
                )],
                "{from:?} under {parent}"
            );
            let i = c.accesses[0].intent(&c.database, "production");
            assert_eq!((i.resource.kind, i.resource.id.as_str()), (kind, id));
            assert!(!i.context.contains_key("collection_id"), "{i:?}");
            assert_eq!(i.context["collections"], ContextValue::from("any"));
            assert_eq!(i.context["all_descendants"], ContextValue::Bool(all));
        }
    }
    assert_eq!(
        err(
            Method::RunQuery,
            &pb::RunQueryRequest {
                parent: ROOT.into(),
                ..Default::default()
            }
        ),
        "missing required field `structured_query`"
    );
    assert!(
        err(
            Method::RunQuery,
            &pb::RunQueryRequest {
                parent: name("teams"),
                query_type: Some(pb::run_query_request::QueryType::StructuredQuery(query(&[
                    ("a", false)
                ]))),
                ..Default::default()
            }
        )
        .contains("is a collection")
    );
    // A collection group's id is checked as a collection id: the numeric
    // form documents may have is still reserved here.
    assert!(
        err(
            Method::RunQuery,
            &pb::RunQueryRequest {
                parent: ROOT.into(),
                query_type: Some(pb::run_query_request::QueryType::StructuredQuery(query(&[
                    ("__id7__", true),
                ]))),
                ..Default::default()
            },
        )
        .contains("reserved")
    );
}

#[test]
fn batch_get() {
    let c = ok(
        Method::BatchGetDocuments,
        &pb::BatchGetDocumentsRequest {
            database: DB.into(),
            documents: vec![name("a/1"), name("b/2/c/3")],
            consistency_selector: Some(
                pb::batch_get_documents_request::ConsistencySelector::NewTransaction(
                    pb::TransactionOptions {
                        mode: Some(pb::transaction_options::Mode::ReadWrite(
                            pb::transaction_options::ReadWrite {
                                retry_transaction: Bytes::from_static(b"old"),
                            },
                        )),
                    },
                ),
            ),
            ..Default::default()
        },
    );
    assert_eq!(
        targets(&c),
        [
            (DocAction::Get, doc("a/1"), "get"),
            (DocAction::Get, doc("b/2/c/3"), "get")
        ]
    );
    assert!(c.begins_transaction);
    assert_eq!(c.transaction.as_deref(), Some(&b"old"[..]));
}

#[test]
fn transactions() {
    let c = ok(
        Method::BeginTransaction,
        &pb::BeginTransactionRequest {
            database: DB.into(),
            options: None,
        },
    );
    assert!(c.accesses.is_empty());
    assert!(c.begins_transaction);
    assert_eq!(c.transaction, None);

    let c = ok(
        Method::Rollback,
        &pb::RollbackRequest {
            database: DB.into(),
            transaction: Bytes::from_static(b"t9"),
        },
    );
    assert!(c.accesses.is_empty());
    assert_eq!(c.transaction.as_deref(), Some(&b"t9"[..]));
    assert_eq!(
        err(
            Method::Rollback,
            &pb::RollbackRequest {
                database: DB.into(),
                transaction: Bytes::new(),
            }
        ),
        "missing required field `transaction`"
    );
    assert!(
        err(
            Method::BeginTransaction,
            &pb::BeginTransactionRequest {
                database: format!("{DB}/documents"),
                options: None,
            }
        )
        .contains("not a Firestore name")
    );

    // Transaction ids in responses.
    let t = Bytes::from_static(b"new-tx");
    let begin = pb::BeginTransactionResponse {
        transaction: t.clone(),
    };
    assert_eq!(
        transaction_in_response(Method::BeginTransaction, &begin.encode_to_vec()),
        Some(t.clone())
    );
    let run = pb::RunQueryResponse {
        transaction: t.clone(),
        ..Default::default()
    };
    assert_eq!(
        transaction_in_response(Method::RunQuery, &run.encode_to_vec()),
        Some(t.clone())
    );
    let agg = pb::RunAggregationQueryResponse {
        transaction: t.clone(),
        ..Default::default()
    };
    assert_eq!(
        transaction_in_response(Method::RunAggregationQuery, &agg.encode_to_vec()),
        Some(t.clone())
    );
    let batch = pb::BatchGetDocumentsResponse {
        transaction: t.clone(),
        ..Default::default()
    };
    assert_eq!(
        transaction_in_response(Method::BatchGetDocuments, &batch.encode_to_vec()),
        Some(t)
    );
    assert_eq!(
        transaction_in_response(
            Method::RunQuery,
            &pb::RunQueryResponse::default().encode_to_vec()
        ),
        None
    );
    assert_eq!(
        transaction_in_response(Method::Commit, &begin.encode_to_vec()),
        None
    );
    assert_eq!(
        transaction_in_response(Method::BeginTransaction, b"\xff\xff"),
        None
    );
}

#[test]
fn commit_of_ten_writes_is_ten_accesses() {
    let writes: Vec<pb::Write> = (0..10).map(|i| update(&format!("flags/f{i}"))).collect();
    let c = ok(
        Method::Commit,
        &pb::CommitRequest {
            database: DB.into(),
            writes,
            transaction: Bytes::from_static(b"tx"),
        },
    );
    assert_eq!(c.accesses.len(), 10);
    assert_eq!(c.transaction.as_deref(), Some(&b"tx"[..]));
    for (i, a) in c.accesses.iter().enumerate() {
        assert_eq!(a.target, doc(&format!("flags/f{i}")));
        assert_eq!(a.action, DocAction::Update);
        assert_eq!(a.operation, "set");
    }
    let intents = c.intents("production");
    assert_eq!(intents.len(), 10);
    assert!(intents.iter().all(|i| i.action == Action::DocumentUpdate
        && i.context["operation"] == ContextValue::from("set")));

    let empty = ok(
        Method::Commit,
        &pb::CommitRequest {
            database: DB.into(),
            ..Default::default()
        },
    );
    assert!(empty.accesses.is_empty());
    assert_eq!(empty.transaction, None);
}

fn write_access(w: pb::Write) -> Access {
    let c = ok(
        Method::Commit,
        &pb::CommitRequest {
            database: DB.into(),
            writes: vec![w],
            ..Default::default()
        },
    );
    assert_eq!(c.accesses.len(), 1);
    c.accesses.into_iter().next().unwrap()
}

#[test]
fn set_create_update_delete() {
    // Neither precondition nor mask: a set (upsert).
    let a = write_access(update("flags/x"));
    assert_eq!((a.action, a.operation), (DocAction::Update, "set"));
    let w = a.write.unwrap();
    assert_eq!(w.operation, WriteOp::Set);
    assert_eq!(w.update_mask, None);
    assert_eq!(w.fields, ["a"]);

    // exists = false: a create.
    let a = write_access(pb::Write {
        current_document: exists(false),
        ..update("flags/x")
    });
    assert_eq!((a.action, a.operation), (DocAction::Create, "create"));
    let i = a.intent(&DatabaseName::parse(DB).unwrap(), "production");
    assert_eq!(i.action, Action::DocumentCreate);

    // exists = true: an update.
    let a = write_access(pb::Write {
        current_document: exists(true),
        ..update("flags/x")
    });
    assert_eq!((a.action, a.operation), (DocAction::Update, "update"));

    // An update_time precondition: an update.
    let a = write_access(pb::Write {
        current_document: Some(pb::Precondition {
            condition_type: Some(pb::precondition::ConditionType::UpdateTime(
                prost_types::Timestamp::default(),
            )),
        }),
        ..update("flags/x")
    });
    assert_eq!(a.operation, "update");

    // A mask: an update, whose changed fields are the mask's.
    let a = write_access(pb::Write {
        update_mask: mask(&["b.c", "`x-y`", "`plain`"]),
        ..update("flags/x")
    });
    assert_eq!(a.operation, "update");
    let w = a.write.unwrap();
    assert_eq!(
        w.update_mask.as_deref(),
        Some(&["b.c".to_owned(), "`x-y`".to_owned(), "plain".to_owned()][..])
    );
    assert_eq!(w.fields, ["`x-y`", "b.c", "plain"]);

    // exists = false wins over a mask.
    let a = write_access(pb::Write {
        update_mask: mask(&["a"]),
        current_document: exists(false),
        ..update("flags/x")
    });
    assert_eq!(a.operation, "create");

    // Delete.
    let a = write_access(pb::Write {
        operation: Some(pb::write::Operation::Delete(name("flags/x"))),
        current_document: exists(true),
        ..Default::default()
    });
    assert_eq!((a.action, a.operation), (DocAction::Delete, "delete"));
    assert_eq!(a.write.unwrap().fields, Vec::<String>::new());

    // Update transforms join the changed fields.
    let inc = pb::document_transform::FieldTransform {
        field_path: "stats.`hit-count`".into(),
        transform_type: Some(
            pb::document_transform::field_transform::TransformType::Increment(string_value("1")),
        ),
    };
    let now = pb::document_transform::FieldTransform {
        field_path: "updated".into(),
        transform_type: Some(
            pb::document_transform::field_transform::TransformType::SetToServerValue(1),
        ),
    };
    let a = write_access(pb::Write {
        update_transforms: vec![inc.clone(), now],
        ..update("flags/x")
    });
    let w = a.write.unwrap();
    assert_eq!(w.fields, ["a", "stats.`hit-count`", "updated"]);
    assert_eq!(
        w.transforms,
        ["stats.`hit-count`:increment", "updated:server_value"]
    );

    // A standalone transform is an update.
    let a = write_access(pb::Write {
        operation: Some(pb::write::Operation::Transform(pb::DocumentTransform {
            document: name("flags/x"),
            field_transforms: vec![inc],
        })),
        ..Default::default()
    });
    assert_eq!((a.action, a.operation), (DocAction::Update, "transform"));
    assert_eq!(a.write.unwrap().operation, WriteOp::Transform);

    // Refusals name the field.
    let e = err(
        Method::Commit,
        &pb::CommitRequest {
            database: DB.into(),
            writes: vec![update("flags/x"), pb::Write::default()],
            ..Default::default()
        },
    );
    assert!(e.contains("writes[1].update"), "{e}");
    let e = err(
        Method::Commit,
        &pb::CommitRequest {
            database: DB.into(),
            writes: vec![pb::Write {
                update_mask: mask(&["a b"]),
                ..update("flags/x")
            }],
            ..Default::default()
        },
    );
    assert!(e.contains("writes[0].update_mask.field_paths[0]"), "{e}");
    let e = err(
        Method::Commit,
        &pb::CommitRequest {
            database: DB.into(),
            writes: vec![update("flags")],
            ..Default::default()
        },
    );
    assert!(e.contains("writes[0].update.name"), "{e}");
}

#[test]
fn recorded_values() {
    let mut fields = HashMap::new();
    fields.insert("s".to_owned(), string_value("on"));
    fields.insert(
        "n".to_owned(),
        pb::Value {
            value_type: Some(ValueType::IntegerValue(7)),
        },
    );
    fields.insert(
        "m".to_owned(),
        pb::Value {
            value_type: Some(ValueType::MapValue(pb::MapValue {
                fields: [(
                    "list".to_owned(),
                    pb::Value {
                        value_type: Some(ValueType::ArrayValue(pb::ArrayValue {
                            values: vec![
                                pb::Value {
                                    value_type: Some(ValueType::BooleanValue(true)),
                                },
                                pb::Value {
                                    value_type: Some(ValueType::NullValue(0)),
                                },
                                pb::Value {
                                    value_type: Some(ValueType::BytesValue(Bytes::from_static(
                                        b"\x00\xff",
                                    ))),
                                },
                            ],
                        })),
                    },
                )]
                .into(),
            })),
        },
    );
    let commit = pb::CommitRequest {
        database: DB.into(),
        writes: vec![
            pb::Write {
                operation: Some(pb::write::Operation::Update(pb::Document {
                    name: name("flags/x"),
                    fields,
                    ..Default::default()
                })),
                ..Default::default()
            },
            update("users/u"),
        ],
        ..Default::default()
    };
    let only_flags = |p: &DocPath| p.segments().first().is_some_and(|s| s == "flags");
    let opts = ClassifyOptions {
        record_values: &only_flags,
    };
    let c = classify_grpc(Method::Commit, &commit.encode_to_vec(), &opts).unwrap();
    assert_eq!(
        c.accesses[0].write.as_ref().unwrap().values,
        Some(serde_json::json!({"s": "on", "n": 7, "m": {"list": [true, null, "AP8="]}}))
    );
    assert_eq!(c.accesses[1].write.as_ref().unwrap().values, None);
    // Not recorded by default.
    let c = classify(Method::Commit, &commit).unwrap();
    assert_eq!(c.accesses[0].write.as_ref().unwrap().values, None);
}

#[test]
fn unary_writes() {
    let c = ok(
        Method::UpdateDocument,
        &pb::UpdateDocumentRequest {
            document: Some(document("flags/x", &[("on", string_value("y"))])),
            update_mask: mask(&["on"]),
            ..Default::default()
        },
    );
    assert_eq!(targets(&c), [(DocAction::Update, doc("flags/x"), "update")]);
    let c = ok(
        Method::UpdateDocument,
        &pb::UpdateDocumentRequest {
            document: Some(document("flags/x", &[("on", string_value("y"))])),
            ..Default::default()
        },
    );
    assert_eq!(targets(&c), [(DocAction::Update, doc("flags/x"), "set")]);
    let c = ok(
        Method::UpdateDocument,
        &pb::UpdateDocumentRequest {
            document: Some(document("flags/x", &[])),
            current_document: exists(false),
            ..Default::default()
        },
    );
    assert_eq!(targets(&c), [(DocAction::Create, doc("flags/x"), "create")]);
    assert_eq!(
        err(
            Method::UpdateDocument,
            &pb::UpdateDocumentRequest::default()
        ),
        "missing required field `document`"
    );

    let c = ok(
        Method::DeleteDocument,
        &pb::DeleteDocumentRequest {
            name: name("flags/x"),
            current_document: None,
        },
    );
    assert_eq!(targets(&c), [(DocAction::Delete, doc("flags/x"), "delete")]);
    let i = c.accesses[0].intent(&c.database, "production");
    assert_eq!(i.action, Action::DocumentDelete);

    // CreateDocument with an id names the document...
    let c = ok(
        Method::CreateDocument,
        &pb::CreateDocumentRequest {
            parent: name("teams/a"),
            collection_id: "members".into(),
            document_id: "bob".into(),
            document: Some(document("", &[("role", string_value("dev"))])),
            ..Default::default()
        },
    );
    assert_eq!(
        targets(&c),
        [(DocAction::Create, doc("teams/a/members/bob"), "create")]
    );
    assert_eq!(c.accesses[0].write.as_ref().unwrap().fields, ["role"]);
    // ... without one the server picks it, so the target is the collection.
    let c = ok(
        Method::CreateDocument,
        &pb::CreateDocumentRequest {
            parent: ROOT.into(),
            collection_id: "flags".into(),
            document: Some(document("", &[])),
            ..Default::default()
        },
    );
    assert_eq!(targets(&c), [(DocAction::Create, coll("flags"), "create")]);
    let i = c.accesses[0].intent(&c.database, "production");
    assert_eq!(i.action, Action::DocumentCreate);
    assert_eq!(i.resource.kind, ResourceKind::Collection);

    for bad in [
        pb::CreateDocumentRequest {
            parent: ROOT.into(),
            collection_id: "flags".into(),
            document: Some(document("flags/x", &[])),
            ..Default::default()
        },
        pb::CreateDocumentRequest {
            parent: ROOT.into(),
            collection_id: "flags".into(),
            document_id: "a/b".into(),
            document: Some(document("", &[])),
            ..Default::default()
        },
        pb::CreateDocumentRequest {
            parent: ROOT.into(),
            collection_id: "flags".into(),
            ..Default::default()
        },
        pb::CreateDocumentRequest {
            parent: ROOT.into(),
            document: Some(document("", &[])),
            ..Default::default()
        },
    ] {
        err(Method::CreateDocument, &bad);
    }
}

#[test]
fn batch_write_and_write_stream() {
    let c = ok(
        Method::BatchWrite,
        &pb::BatchWriteRequest {
            database: DB.into(),
            writes: vec![update("a/1"), update("a/2")],
            ..Default::default()
        },
    );
    assert_eq!(c.accesses.len(), 2);

    // The Write stream: a handshake naming the database, then writes that
    // may leave it out.
    let mut stream = StreamClassifier::new(Method::Write);
    let hello = pb::WriteRequest {
        database: DB.into(),
        ..Default::default()
    };
    let c = stream
        .classify(&hello.encode_to_vec(), &ClassifyOptions::NONE)
        .unwrap();
    assert!(c.accesses.is_empty());
    let next = pb::WriteRequest {
        stream_token: Bytes::from_static(b"tok"),
        writes: vec![update("a/1")],
        ..Default::default()
    };
    let c = stream
        .classify(&next.encode_to_vec(), &ClassifyOptions::NONE)
        .unwrap();
    assert_eq!(targets(&c), [(DocAction::Update, doc("a/1"), "set")]);
    // Alone, that message does not say which database it is for.
    assert_eq!(
        err(Method::Write, &next),
        "missing required field `database`"
    );
    // A stream cannot switch databases.
    let other = pb::WriteRequest {
        database: "projects/p/databases/other".into(),
        ..Default::default()
    };
    let e = stream
        .classify(&other.encode_to_vec(), &ClassifyOptions::NONE)
        .unwrap_err();
    assert!(matches!(e, ClassifyError::OtherDatabase { .. }), "{e}");
}

#[test]
fn listen() {
    let add_docs = pb::ListenRequest {
        database: DB.into(),
        target_change: Some(pb::listen_request::TargetChange::AddTarget(pb::Target {
            target_id: 4,
            target_type: Some(pb::target::TargetType::Documents(
                pb::target::DocumentsTarget {
                    documents: vec![name("flags/a"), name("flags/b")],
                },
            )),
            ..Default::default()
        })),
        ..Default::default()
    };
    let c = ok(Method::Listen, &add_docs);
    assert_eq!(
        targets(&c),
        [
            (DocAction::Listen, doc("flags/a"), "documents"),
            (DocAction::Listen, doc("flags/b"), "documents")
        ]
    );
    assert!(c.accesses.iter().all(|a| a.listen_target == Some(4)));
    let i = c.accesses[0].intent(&c.database, "production");
    assert_eq!(i.action, Action::DocumentListen);
    assert_eq!(i.context["operation"], ContextValue::from("documents"));

    let add_query = pb::ListenRequest {
        database: DB.into(),
        target_change: Some(pb::listen_request::TargetChange::AddTarget(pb::Target {
            target_id: 5,
            target_type: Some(pb::target::TargetType::Query(pb::target::QueryTarget {
                parent: name("teams/a"),
                query_type: Some(pb::target::query_target::QueryType::StructuredQuery(query(
                    &[("members", false), ("logs", true)],
                ))),
            })),
            ..Default::default()
        })),
        ..Default::default()
    };
    let c = ok(Method::Listen, &add_query);
    assert_eq!(
        targets(&c),
        [
            (DocAction::Listen, coll("teams/a/members"), "query"),
            (
                DocAction::Listen,
                Target::Subtree {
                    parent: DocPath::parse("teams/a").unwrap(),
                    collection_id: "logs".into()
                },
                "query"
            )
        ]
    );
    assert!(c.accesses.iter().all(|a| a.listen_target == Some(5)));

    let remove = pb::ListenRequest {
        database: DB.into(),
        target_change: Some(pb::listen_request::TargetChange::RemoveTarget(4)),
        ..Default::default()
    };
    let c = ok(Method::Listen, &remove);
    assert!(c.accesses.is_empty());
    assert_eq!(c.listen_remove_targets, [4]);

    // A listen on another database's documents.
    let cross = pb::ListenRequest {
        database: DB.into(),
        target_change: Some(pb::listen_request::TargetChange::AddTarget(pb::Target {
            target_type: Some(pb::target::TargetType::Documents(
                pb::target::DocumentsTarget {
                    documents: vec!["projects/p/databases/other/documents/flags/a".into()],
                },
            )),
            ..Default::default()
        })),
        ..Default::default()
    };
    assert!(err(Method::Listen, &cross).contains("is not in the request's database"));
    let no_type = pb::ListenRequest {
        database: DB.into(),
        target_change: Some(pb::listen_request::TargetChange::AddTarget(
            pb::Target::default(),
        )),
        ..Default::default()
    };
    err(Method::Listen, &no_type);
}

#[test]
fn cross_database_names_are_refused() {
    for other in [
        "projects/p/databases/other/documents/flags/x",
        "projects/q/databases/prod/documents/flags/x",
    ] {
        let e = classify(
            Method::BatchGetDocuments,
            &pb::BatchGetDocumentsRequest {
                database: DB.into(),
                documents: vec![name("flags/ok"), other.into()],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("`{other}` is not in the request's database `{DB}`")
        );
        assert_eq!(e.code(), GrpcCode::InvalidArgument);
        let mut w = update("flags/x");
        if let Some(pb::write::Operation::Update(d)) = &mut w.operation {
            d.name = other.into();
        }
        for method in [Method::Commit, Method::BatchWrite] {
            let msg = pb::CommitRequest {
                database: DB.into(),
                writes: vec![w.clone()],
                ..Default::default()
            };
            assert!(matches!(
                classify(method, &msg),
                Err(ClassifyError::OtherDatabase { .. })
            ));
        }
        let del = pb::Write {
            operation: Some(pb::write::Operation::Delete(other.into())),
            ..Default::default()
        };
        assert!(matches!(
            classify(
                Method::Write,
                &pb::WriteRequest {
                    database: DB.into(),
                    writes: vec![del],
                    ..Default::default()
                }
            ),
            Err(ClassifyError::OtherDatabase { .. })
        ));
    }
}

#[test]
fn garbage_is_refused_not_panicked_on() {
    for m in Method::ALL {
        for bytes in [&b"\xff\xff\xff"[..], b"\x0a\x05ab", b"\x12"] {
            if let Err(e) = classify_grpc(m, bytes, &ClassifyOptions::NONE) {
                assert_eq!(e.code(), GrpcCode::InvalidArgument);
            }
        }
        // An empty message is missing its names (Commit's database, ...).
        let e = classify_grpc(m, b"", &ClassifyOptions::NONE).unwrap_err();
        assert!(
            e.to_string().starts_with("missing required field"),
            "{m}: {e}"
        );
    }
}
