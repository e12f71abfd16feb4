//! The REST surface: routing, query parameters and JSON bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::Method as Http;
use latchkey_core::{Action, ContextValue, ResourceKind};
use latchkey_documents::{
    Classified, ClassifyError, ClassifyOptions, DocAction, DocPath, GrpcCode, Method, RestCall,
    RestTransactionTap, Target, WriteOp, classify_rest,
};

const BASE: &str = "/v1/projects/p/databases/prod/documents";
const ROOT: &str = "projects/p/databases/prod/documents";

fn route(method: Http, path: &str, query: Option<&str>) -> Result<RestCall, ClassifyError> {
    RestCall::parse(&method, path, query)
}

fn call(method: Http, path: &str, query: Option<&str>, body: &str) -> Classified {
    let c = route(method.clone(), path, query).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    classify_rest(&c, body.as_bytes(), &ClassifyOptions::NONE)
        .unwrap_or_else(|e| panic!("{method} {path} {body}: {e}"))
}

fn refuse(method: Http, path: &str, query: Option<&str>, body: &str) -> ClassifyError {
    match route(method, path, query) {
        Err(e) => e,
        Ok(c) => classify_rest(&c, body.as_bytes(), &ClassifyOptions::NONE)
            .expect_err("should be refused"),
    }
}

fn targets(c: &Classified) -> Vec<(DocAction, Target, &'static str)> {
    c.accesses
        .iter()
        .map(|a| (a.action, a.target.clone(), a.operation))
        .collect()
}

fn doc(path: &str) -> Target {
    Target::Document(DocPath::parse(path).unwrap())
}

fn coll(path: &str) -> Target {
    Target::Collection(DocPath::parse(path).unwrap())
}

#[test]
fn routes() {
    let cases = [
        (Http::GET, "/flags/x", Method::GetDocument, "flags/x"),
        (Http::GET, "/flags", Method::ListDocuments, "flags"),
        (
            Http::GET,
            "/teams/a/members",
            Method::ListDocuments,
            "teams/a/members",
        ),
        (Http::POST, "/flags", Method::CreateDocument, "flags"),
        (Http::PATCH, "/flags/x", Method::UpdateDocument, "flags/x"),
        (Http::DELETE, "/flags/x", Method::DeleteDocument, "flags/x"),
        (Http::POST, ":batchGet", Method::BatchGetDocuments, ""),
        (
            Http::POST,
            ":beginTransaction",
            Method::BeginTransaction,
            "",
        ),
        (Http::POST, ":commit", Method::Commit, ""),
        (Http::POST, ":rollback", Method::Rollback, ""),
        (Http::POST, ":batchWrite", Method::BatchWrite, ""),
        (Http::POST, ":runQuery", Method::RunQuery, ""),
        (Http::POST, "/teams/a:runQuery", Method::RunQuery, "teams/a"),
        (
            Http::POST,
            ":runAggregationQuery",
            Method::RunAggregationQuery,
            "",
        ),
        (Http::POST, ":partitionQuery", Method::PartitionQuery, ""),
        (
            Http::POST,
            "/teams/a:listCollectionIds",
            Method::ListCollectionIds,
            "teams/a",
        ),
        (
            Http::POST,
            ":listCollectionIds",
            Method::ListCollectionIds,
            "",
        ),
        (Http::GET, "/a%20b/c%3Ad", Method::GetDocument, "a b/c:d"),
        (Http::GET, "/caf%C3%A9/x", Method::GetDocument, "café/x"),
    ];
    for (m, suffix, method, path) in cases {
        let c = route(m.clone(), &format!("{BASE}{suffix}"), None)
            .unwrap_or_else(|e| panic!("{m} {suffix}: {e}"));
        assert_eq!(c.method, method, "{m} {suffix}");
        assert_eq!(c.path, DocPath::parse(path).unwrap(), "{m} {suffix}");
        assert_eq!(c.database.database, "prod");
        assert_eq!(c.database.project, "p");
    }

    let not_found = [
        (Http::GET, "/v2/projects/p/databases/prod/documents/a/b"),
        (Http::GET, "/v1/projects/p/databases/prod"),
        (Http::GET, "/v1/projects/p/databases/prod/documents"),
        (Http::GET, "/v1/projects/p/databases/prod/indexes/a"),
        (Http::GET, "/v1/projects/p/instances/prod/documents/a/b"),
        (Http::PUT, "/v1/projects/p/databases/prod/documents/a/b"),
        (Http::POST, "/v1/projects/p/databases/prod/documents/a/b"),
        (Http::PATCH, "/v1/projects/p/databases/prod/documents/a"),
        (Http::DELETE, "/v1/projects/p/databases/prod/documents/a"),
        (Http::GET, "/v1/projects/p/databases/prod/documents:commit"),
        (
            Http::POST,
            "/v1/projects/p/databases/prod/documents:frobnicate",
        ),
        (
            Http::POST,
            "/v1/projects/p/databases/prod/documents/a/b:commit",
        ),
        (
            Http::POST,
            "/v1/projects/p/databases/prod/documents/a:runQuery",
        ),
        (Http::GET, "/v1/projects/p/databases/prod/documents/a/b:x"),
        (
            Http::POST,
            "/v1/projects/p/databases/prod/documents:run:Query",
        ),
    ];
    for (m, path) in not_found {
        let e = route(m.clone(), path, None).expect_err(path);
        assert_eq!(e.code(), GrpcCode::NotFound, "{m} {path}: {e}");
    }

    let invalid = [
        "/v1/projects/p/databases/prod/documents/a//b",
        "/v1/projects/p/databases/prod/documents/a/b/",
        "/v1/projects/p/databases/prod/documents/a/%2Fb",
        "/v1/projects/p/databases/prod/documents/a/x%2fy",
        "/v1/projects/p/databases/prod/documents/a/..",
        "/v1/projects/p/databases/prod/documents/a/%2E%2E",
        "/v1/projects/p/databases/prod/documents/__a__/b",
        "/v1/projects/p/databases/prod/documents/a/%ff",
        "/v1/projects/p/databases/prod/documents/a/%zz",
        "/v1/projects//databases/prod/documents/a/b",
    ];
    for path in invalid {
        let e = route(Http::GET, path, None).expect_err(path);
        assert_eq!(e.code(), GrpcCode::InvalidArgument, "{path}: {e}");
    }

    for verb in [":listen", ":write"] {
        let e = route(Http::POST, &format!("{BASE}{verb}"), None).unwrap_err();
        assert_eq!(e.code(), GrpcCode::Unimplemented);
        assert!(e.to_string().contains("only available over gRPC"), "{e}");
    }
}

#[test]
fn query_parameters() {
    let c = route(
        Http::PATCH,
        &format!("{BASE}/flags/x"),
        Some("update_mask.field_paths=a&updateMask.fieldPaths=%60b%20c%60&alt=json&currentDocument.exists=true"),
    )
    .unwrap();
    assert_eq!(
        c.param_all("updateMask.fieldPaths").collect::<Vec<_>>(),
        ["a", "`b c`"]
    );
    assert_eq!(c.param("currentDocument.exists"), Some("true"));

    for (method, path, query) in [
        (
            Http::PATCH,
            "/flags/x",
            "currentDocument.exists=true&current_document.exists=false",
        ),
        (Http::PATCH, "/flags/x", "unknown=1"),
        (Http::PATCH, "/flags/x", "document.name=x"),
        (Http::PATCH, "/flags/x", "updateMask.fieldPaths=a+b"),
        (Http::POST, "/flags", "documentId=a+b"),
        (Http::POST, "/flags", "documentId=a&documentId=b"),
        (Http::GET, "/flags/x", "documentId=a"),
        (Http::GET, "/flags/x", "transaction=%zz"),
        (Http::POST, ":commit", "transaction=abc"),
    ] {
        let e = route(method.clone(), &format!("{BASE}{path}"), Some(query)).expect_err(query);
        assert_eq!(e.code(), GrpcCode::InvalidArgument, "{query}: {e}");
    }
    let e = route(Http::POST, &format!("{BASE}/flags"), Some("documentId=a+b")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid `documentId`: query parameter values must encode `+` as %2B (or a space as %20)"
    );
}

#[test]
fn get_and_list() {
    let c = call(
        Http::GET,
        &format!("{BASE}/flags/x"),
        Some("transaction=dHgx&mask.fieldPaths=a"),
        "",
    );
    assert_eq!(targets(&c), [(DocAction::Get, doc("flags/x"), "get")]);
    assert_eq!(c.method, Method::GetDocument);
    assert_eq!(c.transaction.as_deref(), Some(&b"tx1"[..]));

    let c = call(
        Http::GET,
        &format!("{BASE}/teams/a/members"),
        Some("pageSize=10"),
        "",
    );
    assert_eq!(
        targets(&c),
        [(DocAction::List, coll("teams/a/members"), "list")]
    );
    let e = refuse(
        Http::GET,
        &format!("{BASE}/flags/x"),
        Some("transaction=dHgx&readTime=2024-01-01T00:00:00Z"),
        "",
    );
    assert!(e.to_string().contains("not both"), "{e}");
    let e = refuse(Http::GET, &format!("{BASE}/flags/x"), None, "{}");
    assert!(e.to_string().contains("takes no body"), "{e}");
}

#[test]
fn create_update_delete() {
    // A named create.
    let c = call(
        Http::POST,
        &format!("{BASE}/teams/a/members"),
        Some("documentId=bob"),
        r#"{"fields": {"role": {"stringValue": "dev"}}}"#,
    );
    assert_eq!(
        targets(&c),
        [(DocAction::Create, doc("teams/a/members/bob"), "create")]
    );
    assert_eq!(c.accesses[0].write.as_ref().unwrap().fields, ["role"]);
    // A server-named create targets the collection.
    let c = call(Http::POST, &format!("{BASE}/flags"), None, "");
    assert_eq!(targets(&c), [(DocAction::Create, coll("flags"), "create")]);
    assert!(
        refuse(
            Http::POST,
            &format!("{BASE}/flags"),
            None,
            &format!(r#"{{"name": "{ROOT}/flags/x"}}"#)
        )
        .to_string()
        .contains("must be empty")
    );

    // PATCH without mask or precondition: a set.
    let c = call(
        Http::PATCH,
        &format!("{BASE}/flags/x"),
        None,
        r#"{"fields": {"on": {"booleanValue": true}}}"#,
    );
    assert_eq!(targets(&c), [(DocAction::Update, doc("flags/x"), "set")]);
    let intent = c.accesses[0].intent(&c.database, "production");
    assert_eq!(intent.action, Action::DocumentUpdate);
    assert_eq!(intent.context["operation"], ContextValue::from("set"));
    // With a mask: an update.
    let c = call(
        Http::PATCH,
        &format!("{BASE}/flags/x"),
        Some("updateMask.fieldPaths=on&updateMask.fieldPaths=%60a.b%60"),
        r#"{"fields": {"on": {"booleanValue": true}}}"#,
    );
    assert_eq!(c.accesses[0].operation, "update");
    let w = c.accesses[0].write.as_ref().unwrap();
    assert_eq!(w.update_mask.as_deref().unwrap(), ["on", "`a.b`"]);
    // exists=false: a create; exists=true or updateTime: an update.
    for (query, op) in [
        ("currentDocument.exists=false", "create"),
        ("current_document.exists=true", "update"),
        ("currentDocument.updateTime=2024-01-01T00:00:00Z", "update"),
    ] {
        let c = call(Http::PATCH, &format!("{BASE}/flags/x"), Some(query), "{}");
        assert_eq!(c.accesses[0].operation, op, "{query}");
    }
    // The body may repeat the path's name, not name another document.
    call(
        Http::PATCH,
        &format!("{BASE}/flags/x"),
        None,
        &format!(r#"{{"name": "{ROOT}/flags/x"}}"#),
    );
    assert!(
        refuse(
            Http::PATCH,
            &format!("{BASE}/flags/x"),
            None,
            &format!(r#"{{"name": "{ROOT}/flags/y"}}"#)
        )
        .to_string()
        .contains("differs from the document named in the path")
    );

    let c = call(
        Http::DELETE,
        &format!("{BASE}/flags/x"),
        Some("currentDocument.exists=true"),
        "",
    );
    assert_eq!(targets(&c), [(DocAction::Delete, doc("flags/x"), "delete")]);
    let e = refuse(
        Http::DELETE,
        &format!("{BASE}/flags/x"),
        Some("currentDocument.exists=yes"),
        "",
    );
    assert_eq!(
        e.to_string(),
        "invalid `currentDocument.exists`: expected true or false"
    );
}

#[test]
fn commit_body() {
    let body = format!(
        r#"{{
          "transaction": "dHgy",
          "writes": [
            {{"update": {{"name": "{ROOT}/flags/a", "fields": {{"x": {{"integerValue": "1"}}}}}}}},
            {{"update": {{"name": "{ROOT}/flags/b", "fields": {{}}}}, "currentDocument": {{"exists": false}}}},
            {{"update": {{"name": "{ROOT}/flags/c"}}, "updateMask": {{"fieldPaths": ["x"]}},
              "updateTransforms": [{{"fieldPath": "n", "increment": {{"integerValue": "1"}}}},
                                   {{"field_path": "t", "set_to_server_value": "REQUEST_TIME"}}]}},
            {{"delete": "{ROOT}/flags/d"}},
            {{"transform": {{"document": "{ROOT}/flags/e",
                             "fieldTransforms": [{{"fieldPath": "n", "maximum": {{"integerValue": "3"}}}}]}}}},
            {{"update": {{"name": "{ROOT}/flags/f"}}, "current_document": {{"update_time": "2024-01-01T00:00:00Z"}}}}
          ]
        }}"#
    );
    let c = call(Http::POST, &format!("{BASE}:commit"), None, &body);
    assert_eq!(c.method, Method::Commit);
    assert_eq!(c.transaction.as_deref(), Some(&b"tx2"[..]));
    assert_eq!(
        targets(&c),
        [
            (DocAction::Update, doc("flags/a"), "set"),
            (DocAction::Create, doc("flags/b"), "create"),
            (DocAction::Update, doc("flags/c"), "update"),
            (DocAction::Delete, doc("flags/d"), "delete"),
            (DocAction::Update, doc("flags/e"), "transform"),
            (DocAction::Update, doc("flags/f"), "update"),
        ]
    );
    let w = c.accesses[2].write.as_ref().unwrap();
    assert_eq!(w.fields, ["n", "t", "x"]);
    assert_eq!(w.transforms, ["n:increment", "t:server_value"]);
    assert_eq!(
        c.accesses[4].write.as_ref().unwrap().operation,
        WriteOp::Transform
    );

    // Ten writes, ten accesses, through batchWrite too.
    let writes: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"delete": "{ROOT}/flags/f{i}"}}"#))
        .collect();
    let c = call(
        Http::POST,
        &format!("{BASE}:batchWrite"),
        None,
        &format!(
            r#"{{"writes": [{}], "labels": {{"a": "b"}}}}"#,
            writes.join(",")
        ),
    );
    assert_eq!(c.accesses.len(), 10);
    assert_eq!(c.method, Method::BatchWrite);
}

#[test]
fn ambiguous_or_unknown_json_is_refused() {
    let commit = |body: &str| refuse(Http::POST, &format!("{BASE}:commit"), None, body);
    let w = format!(r#""update": {{"name": "{ROOT}/flags/a"}}"#);
    for (body, needle) in [
        (
            format!(
                r#"{{"writes": [{{{w}, "currentDocument": {{"exists": true}}, "current_document": {{"exists": false}}}}]}}"#
            ),
            "given twice",
        ),
        (
            format!(
                r#"{{"writes": [{{{w}, "currentDocument": {{"exists": true, "exists": false}}}}]}}"#
            ),
            "duplicate key",
        ),
        (
            format!(r#"{{"writes": [{{{w}, "delete": "{ROOT}/flags/a"}}]}}"#),
            "give one of",
        ),
        (
            format!(r#"{{"writes": [{{{w}, "upsert": true}}]}}"#),
            "unknown field",
        ),
        (
            r#"{"database": "x", "writes": []}"#.to_owned(),
            "unknown field",
        ),
        (r#"{"writes": [{}]}"#.to_owned(), "missing required field"),
        (r#"{"writes": {}}"#.to_owned(), "expected an array"),
        (r#"[]"#.to_owned(), "expected a JSON object"),
        (r#"{"writes": [],}"#.to_owned(), "malformed JSON"),
        (
            r#"{"writes": [{"update": {"name": "projects/p/databases/other/documents/flags/a"}}]}"#
                .to_owned(),
            "is not in the request's database",
        ),
        (
            format!(r#"{{"writes": [{{{w}, "updateTransforms": [{{"fieldPath": "n"}}]}}]}}"#),
            "give exactly one transform",
        ),
    ] {
        let e = commit(&body);
        assert!(e.to_string().contains(needle), "{body}: {e}");
        assert_eq!(e.code(), GrpcCode::InvalidArgument);
    }

    // The snake_case spelling counts: an all-descendants query is seen as one.
    let c = call(
        Http::POST,
        &format!("{BASE}:runQuery"),
        None,
        r#"{"structured_query": {"from": [{"collection_id": "members", "all_descendants": true}]}}"#,
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
    // The kindless queries Firestore serves (issue 15): decided on the
    // parent, for every collection below it.
    for (body, all) in [
        (
            r#"{"structuredQuery": {"from": [{"allDescendants": true}]}}"#,
            true,
        ),
        (r#"{"structuredQuery": {"from": [{}]}}"#, false),
        (r#"{"structuredQuery": {"from": []}}"#, false),
        (r#"{"structuredQuery": {}}"#, false),
    ] {
        let c = call(Http::POST, &format!("{BASE}/teams/a:runQuery"), None, body);
        assert_eq!(
            targets(&c),
            [(
                DocAction::Query,
                Target::AnyCollection {
                    parent: DocPath::parse("teams/a").unwrap(),
                    all_descendants: all
                },
                "query"
            )],
            "{body}"
        );
    }
    let e = refuse(
        Http::POST,
        &format!("{BASE}:runQuery"),
        None,
        r#"{"structuredQuery": {"from": [{"collectionId": "m", "allDescendants": false, "all_descendants": true}]}}"#,
    );
    assert!(e.to_string().contains("given twice"), "{e}");
}

#[test]
fn queries_and_reads() {
    let c = call(
        Http::POST,
        &format!("{BASE}/teams/a:runQuery"),
        None,
        r#"{"structuredQuery": {"from": [{"collectionId": "members"}], "where": {"fieldFilter": {}}, "limit": 3},
            "newTransaction": {"readOnly": {}}}"#,
    );
    assert_eq!(
        targets(&c),
        [(DocAction::Query, coll("teams/a/members"), "query")]
    );
    assert!(c.begins_transaction);
    let i = c.accesses[0].intent(&c.database, "production");
    assert_eq!(i.context["collection_id"], ContextValue::from("members"));
    assert_eq!(i.context["all_descendants"], ContextValue::Bool(false));

    let c = call(
        Http::POST,
        &format!("{BASE}/teams/a:runAggregationQuery"),
        None,
        r#"{"structuredAggregationQuery": {"structuredQuery": {"from": [{"collectionId": "members", "allDescendants": true}]},
             "aggregations": [{"alias": "n", "count": {}}]},
            "transaction": "dHgz"}"#,
    );
    assert_eq!(c.accesses[0].operation, "aggregation");
    assert_eq!(c.transaction.as_deref(), Some(&b"tx3"[..]));
    let i = c.accesses[0].intent(&c.database, "production");
    assert_eq!(i.resource.kind, ResourceKind::Document);
    assert_eq!(i.resource.id, "prod/teams/a");

    let c = call(
        Http::POST,
        &format!("{BASE}:partitionQuery"),
        None,
        r#"{"structuredQuery": {"from": [{"collectionId": "m", "allDescendants": true}]}, "partitionCount": "4"}"#,
    );
    assert_eq!(c.method, Method::PartitionQuery);

    let c = call(
        Http::POST,
        &format!("{BASE}:batchGet"),
        None,
        &format!(
            r#"{{"documents": ["{ROOT}/a/1", "{ROOT}/a/2"], "newTransaction": {{"readWrite": {{"retryTransaction": "b2xk"}}}}}}"#
        ),
    );
    assert_eq!(
        targets(&c),
        [
            (DocAction::Get, doc("a/1"), "get"),
            (DocAction::Get, doc("a/2"), "get")
        ]
    );
    assert!(c.begins_transaction);
    assert_eq!(c.transaction.as_deref(), Some(&b"old"[..]));

    let c = call(Http::POST, &format!("{BASE}:listCollectionIds"), None, "");
    assert_eq!(
        targets(&c),
        [(
            DocAction::List,
            Target::CollectionIds {
                parent: DocPath::root()
            },
            "collection_ids"
        )]
    );

    let c = call(Http::POST, &format!("{BASE}:beginTransaction"), None, "");
    assert!(c.begins_transaction && c.accesses.is_empty());
    let c = call(
        Http::POST,
        &format!("{BASE}:rollback"),
        None,
        r#"{"transaction": "dHg0"}"#,
    );
    assert_eq!(c.transaction.as_deref(), Some(&b"tx4"[..]));
    assert_eq!(
        refuse(Http::POST, &format!("{BASE}:rollback"), None, "").to_string(),
        "missing required field `transaction`"
    );

    for (suffix, body, needle) in [
        (
            ":runQuery",
            "{}",
            "missing required field `structuredQuery`",
        ),
        (
            ":runQuery",
            r#"{"structuredQuery": {"from": [{"collectionId": "a"}]}, "transaction": "dA", "readTime": "x"}"#,
            "at most one",
        ),
        (
            ":runQuery",
            r#"{"structuredQuery": {"from": [{"collectionId": "a/b"}]}}"#,
            "contains `/`",
        ),
        (
            ":batchGet",
            r#"{"documents": ["projects/p/databases/prod/documents/a"]}"#,
            "is not a document name",
        ),
        (":commit", r#"{"transaction": "***"}"#, "expected base64"),
    ] {
        let e = refuse(Http::POST, &format!("{BASE}{suffix}"), None, body);
        assert!(e.to_string().contains(needle), "{body}: {e}");
    }
}

#[test]
fn recorded_values_from_json() {
    let record = |_: &DocPath| true;
    let opts = ClassifyOptions {
        record_values: &record,
    };
    let c = route(Http::PATCH, &format!("{BASE}/flags/x"), None).unwrap();
    let body = r#"{"fields": {
        "s": {"stringValue": "on"},
        "i": {"integerValue": "-12"},
        "d": {"doubleValue": 1.5},
        "nan": {"doubleValue": "NaN"},
        "b": {"booleanValue": false},
        "n": {"nullValue": null},
        "t": {"timestampValue": "2024-01-01T00:00:00Z"},
        "g": {"geoPointValue": {"latitude": 1.0, "longitude": 2.0}},
        "a": {"arrayValue": {"values": [{"stringValue": "x"}, {"mapValue": {}}]}},
        "m": {"mapValue": {"fields": {"k": {"bytes_value": "AP8="}}}},
        "e": {"arrayValue": {}}
    }}"#;
    let got = classify_rest(&c, body.as_bytes(), &opts).unwrap();
    assert_eq!(
        got.accesses[0].write.as_ref().unwrap().values,
        Some(serde_json::json!({
            "s": "on", "i": -12, "d": 1.5, "nan": "NaN", "b": false, "n": null,
            "t": "2024-01-01T00:00:00Z", "g": {"latitude": 1.0, "longitude": 2.0},
            "a": ["x", {}], "m": {"k": "AP8="}, "e": []
        }))
    );
    for bad in [
        r#"{"fields": {"x": {}}}"#,
        r#"{"fields": {"x": {"stringValue": "a", "integerValue": "1"}}}"#,
        r#"{"fields": {"x": {"integerValue": "one"}}}"#,
        r#"{"fields": {"x": {"fieldReferenceValue": "a"}}}"#,
    ] {
        assert!(classify_rest(&c, bad.as_bytes(), &opts).is_err(), "{bad}");
    }
}

#[test]
fn transaction_tap_across_chunks() {
    let body =
        br#"[{"transaction": "dHgtZnJvbS1ydW5RdWVyeQ==", "readTime": "2024-01-01T00:00:00Z"},
                    {"document": {"name": "x"}, "readTime": "2024-01-01T00:00:00Z"}]"#;
    for cut in 0..=body.len() {
        let mut tap = RestTransactionTap::new();
        tap.feed(&body[..cut]);
        tap.feed(&body[cut..]);
        assert_eq!(
            tap.transaction().map(|t| t.as_ref()),
            Some(&b"tx-from-runQuery"[..]),
            "cut at {cut}"
        );
        assert!(tap.is_done());
    }
}
