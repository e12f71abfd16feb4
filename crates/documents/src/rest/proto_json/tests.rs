#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use prost_types::Timestamp;
use serde_json::json;

use super::*;
use crate::proto::value::ValueType as T;
use googleapis_tonic_google_firestore_v1::google::r#type as proto_type;

fn v(t: T) -> proto::Value {
    proto::Value {
        value_type: Some(t),
    }
}

fn read(j: Json) -> Result<proto::Value> {
    value_from_json(&j, "fields.a")
}

#[test]
fn values_in_every_spelling_google_takes() {
    let cases: Vec<(Json, proto::Value)> = vec![
        (json!({"nullValue": null}), v(T::NullValue(0))),
        (json!({"nullValue": "NULL_VALUE"}), v(T::NullValue(0))),
        (json!({"null_value": 0}), v(T::NullValue(0))),
        (json!({"booleanValue": true}), v(T::BooleanValue(true))),
        (json!({"boolean_value": "false"}), v(T::BooleanValue(false))),
        (json!({"integerValue": "5"}), v(T::IntegerValue(5))),
        (json!({"integerValue": 5}), v(T::IntegerValue(5))),
        (json!({"integerValue": "+5"}), v(T::IntegerValue(5))),
        (json!({"integerValue": 100.0}), v(T::IntegerValue(100))),
        (
            json!({"integerValue": "-9223372036854775808"}),
            v(T::IntegerValue(i64::MIN)),
        ),
        (json!({"doubleValue": 1.5}), v(T::DoubleValue(1.5))),
        (json!({"doubleValue": 2}), v(T::DoubleValue(2.0))),
        (json!({"doubleValue": "1.5"}), v(T::DoubleValue(1.5))),
        (json!({"doubleValue": "-1e3"}), v(T::DoubleValue(-1000.0))),
        (
            json!({"doubleValue": "Infinity"}),
            v(T::DoubleValue(f64::INFINITY)),
        ),
        (
            json!({"doubleValue": "-Infinity"}),
            v(T::DoubleValue(f64::NEG_INFINITY)),
        ),
        (
            json!({"timestampValue": "2024-01-01T10:00:00.123456789+02:00"}),
            v(T::TimestampValue(Timestamp {
                seconds: 1_704_096_000,
                nanos: 123_456_789,
            })),
        ),
        (json!({"stringValue": ""}), v(T::StringValue(String::new()))),
        (json!({"string_value": "é"}), v(T::StringValue("é".into()))),
        (
            json!({"bytesValue": "+/8="}),
            v(T::BytesValue(Bytes::from_static(&[0xfb, 0xff]))),
        ),
        (
            json!({"bytesValue": "-_8"}),
            v(T::BytesValue(Bytes::from_static(&[0xfb, 0xff]))),
        ),
        (json!({"bytesValue": ""}), v(T::BytesValue(Bytes::new()))),
        (
            json!({"referenceValue": "projects/p/databases/d/documents/c/a"}),
            v(T::ReferenceValue(
                "projects/p/databases/d/documents/c/a".into(),
            )),
        ),
        (
            json!({"geoPointValue": {"latitude": 1.5, "longitude": "-2"}}),
            v(T::GeoPointValue(proto_type::LatLng {
                latitude: 1.5,
                longitude: -2.0,
            })),
        ),
        (
            json!({"geoPointValue": {}}),
            v(T::GeoPointValue(proto_type::LatLng::default())),
        ),
        (
            json!({"arrayValue": {}}),
            v(T::ArrayValue(proto::ArrayValue::default())),
        ),
        (
            json!({"arrayValue": {"values": [{"integerValue": "1"}, {"nullValue": null}]}}),
            v(T::ArrayValue(proto::ArrayValue {
                values: vec![v(T::IntegerValue(1)), v(T::NullValue(0))],
            })),
        ),
        (
            json!({"mapValue": {}}),
            v(T::MapValue(proto::MapValue::default())),
        ),
        (
            json!({"map_value": {"fields": {"snake_key": {"booleanValue": true}}}}),
            v(T::MapValue(proto::MapValue {
                fields: HashMap::from([("snake_key".to_owned(), v(T::BooleanValue(true)))]),
            })),
        ),
        // No type: read as Google reads it, refused downstream.
        (json!({}), proto::Value { value_type: None }),
        (
            json!({"stringValue": null}),
            proto::Value { value_type: None },
        ),
    ];
    for (j, want) in cases {
        assert_eq!(read(j.clone()).unwrap(), want, "{j}");
    }
    // NaN is not equal to itself: checked apart.
    let nan = read(json!({"doubleValue": "NaN"})).unwrap();
    assert!(matches!(nan.value_type, Some(T::DoubleValue(d)) if d.is_nan()));
}

#[test]
fn values_google_refuses_or_that_could_be_read_two_ways() {
    for j in [
        json!({"integerValue": "5.0"}),
        json!({"integerValue": 1.5}),
        json!({"integerValue": "9223372036854775808"}),
        json!({"integerValue": " 1"}),
        json!({"integerValue": "0x10"}),
        json!({"integerValue": true}),
        json!({"doubleValue": "nan"}),
        json!({"doubleValue": "inf"}),
        json!({"doubleValue": "1e400"}),
        json!({"doubleValue": true}),
        json!({"booleanValue": 1}),
        json!({"bytesValue": "!!"}),
        json!({"timestampValue": "2024-01-01"}),
        json!({"timestampValue": 0}),
        json!({"nullValue": 1}),
        json!({"nullValue": "NULL"}),
        json!({"stringValue": 1}),
        json!({"integerValue": "1", "doubleValue": 1}),
        json!({"integerValue": "1", "stringValue": null}),
        json!({"stringValue": "a", "string_value": "b"}),
        json!({"unknownValue": 1}),
        json!({"geoPointValue": {"latitude": 1, "altitude": 2}}),
        json!({"arrayValue": {"values": [{"integerValue": "x"}]}}),
        json!({"arrayValue": []}),
        json!("text"),
    ] {
        assert!(read(j.clone()).is_err(), "{j}");
    }
}

#[test]
fn value_errors_say_where() {
    let e = read(json!({"mapValue": {"fields": {"x": {"integerValue": "a"}}}})).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid `fields.a.mapValue.fields.x.integerValue`: expected a 64-bit integer"
    );
    let e = read(json!({"integerValue": "1", "doubleValue": 1})).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid `fields.a`: a value must have exactly one type, such as `stringValue`"
    );
}

#[test]
fn values_render_as_google_does() {
    let cases: Vec<(proto::Value, Json)> = vec![
        (v(T::NullValue(0)), json!({"nullValue": null})),
        (v(T::BooleanValue(false)), json!({"booleanValue": false})),
        (v(T::IntegerValue(0)), json!({"integerValue": "0"})),
        (
            v(T::IntegerValue(i64::MAX)),
            json!({"integerValue": "9223372036854775807"}),
        ),
        (v(T::DoubleValue(1.0)), json!({"doubleValue": 1.0})),
        (v(T::DoubleValue(f64::NAN)), json!({"doubleValue": "NaN"})),
        (
            v(T::DoubleValue(f64::NEG_INFINITY)),
            json!({"doubleValue": "-Infinity"}),
        ),
        (v(T::StringValue(String::new())), json!({"stringValue": ""})),
        (
            v(T::BytesValue(Bytes::from_static(&[0xfb, 0xff]))),
            json!({"bytesValue": "+/8="}),
        ),
        (
            v(T::TimestampValue(Timestamp {
                seconds: 0,
                nanos: 123_456_000,
            })),
            json!({"timestampValue": "1970-01-01T00:00:00.123456Z"}),
        ),
        (
            v(T::GeoPointValue(proto_type::LatLng::default())),
            json!({"geoPointValue": {}}),
        ),
        (
            v(T::ArrayValue(proto::ArrayValue::default())),
            json!({"arrayValue": {}}),
        ),
        (
            v(T::MapValue(proto::MapValue::default())),
            json!({"mapValue": {}}),
        ),
        (proto::Value { value_type: None }, json!({})),
    ];
    for (value, want) in cases {
        assert_eq!(value_json(&value), want, "{value:?}");
    }
}

#[test]
fn values_round_trip() {
    for j in [
        json!({"nullValue": null}),
        json!({"integerValue": "-7"}),
        json!({"doubleValue": 0.1}),
        json!({"doubleValue": "Infinity"}),
        json!({"bytesValue": "AAEC"}),
        json!({"timestampValue": "2024-05-01T12:00:00.000000001Z"}),
        json!({"geoPointValue": {"latitude": -0.0, "longitude": 3.5}}),
        json!({"arrayValue": {"values": [{"mapValue": {"fields": {"a": {"stringValue": "x"}}}}]}}),
    ] {
        assert_eq!(value_json(&read(j.clone()).unwrap()), j);
    }
}

// ---------------------------------------------------------------------------
// Requests

const BASE: &str = "/v1/projects/p/databases/d/documents";
const ROOT: &str = "projects/p/databases/d/documents";

fn to_proto(
    method: http::Method,
    path: &str,
    query: Option<&str>,
    body: &str,
) -> Result<RequestMessage> {
    let call = RestCall::parse(&method, &format!("{BASE}{path}"), query)?;
    let p = request_to_proto(&call, body.as_bytes())?;
    assert_eq!(p.method, call.method);
    assert_eq!(p.message.method(), call.method);
    Ok(p.message)
}

fn ok(method: http::Method, path: &str, query: Option<&str>, body: &str) -> RequestMessage {
    to_proto(method.clone(), path, query, body)
        .unwrap_or_else(|e| panic!("{method} {path} {query:?} {body}: {e}"))
}

#[test]
fn get_with_mask_and_consistency() {
    use proto::get_document_request::ConsistencySelector as S;
    let RequestMessage::Get(g) = ok(
        http::Method::GET,
        "/c/a",
        Some("mask.fieldPaths=x&mask.field_paths=y.z&transaction=AAE%3D"),
        "",
    ) else {
        panic!()
    };
    assert_eq!(g.name, format!("{ROOT}/c/a"));
    assert_eq!(g.mask.unwrap().field_paths, ["x", "y.z"]);
    assert_eq!(
        g.consistency_selector,
        Some(S::Transaction(Bytes::from_static(&[0, 1])))
    );
    let RequestMessage::Get(g) = ok(
        http::Method::GET,
        "/c/a",
        Some("readTime=2024-01-01T00:00:00Z"),
        "",
    ) else {
        panic!()
    };
    assert_eq!(
        g.consistency_selector,
        Some(S::ReadTime(Timestamp {
            seconds: 1_704_067_200,
            nanos: 0
        }))
    );
    for (q, body) in [
        (Some("transaction=AA&readTime=2024-01-01T00:00:00Z"), ""),
        (Some("readTime=yesterday"), ""),
        (Some("transaction=!!"), ""),
        (None, "{}"),
    ] {
        assert!(
            to_proto(http::Method::GET, "/c/a", q, body).is_err(),
            "{q:?}"
        );
    }
}

#[test]
fn list_with_every_parameter() {
    let RequestMessage::List(l) = ok(
        http::Method::GET,
        "/teams/a/members",
        Some("pageSize=10&pageToken=t&orderBy=name%20desc&showMissing=true&mask.fieldPaths=x"),
        "",
    ) else {
        panic!()
    };
    assert_eq!(l.parent, format!("{ROOT}/teams/a"));
    assert_eq!(l.collection_id, "members");
    assert_eq!(
        (l.page_size, l.page_token.as_str(), l.order_by.as_str()),
        (10, "t", "name desc")
    );
    assert!(l.show_missing);
    assert_eq!(l.mask.unwrap().field_paths, ["x"]);
    let RequestMessage::List(l) = ok(http::Method::GET, "/flags", None, "") else {
        panic!()
    };
    assert_eq!(
        (l.parent.as_str(), l.collection_id.as_str()),
        (ROOT, "flags")
    );
    for q in ["pageSize=x", "pageSize=3000000000", "showMissing=yes"] {
        assert!(
            to_proto(http::Method::GET, "/flags", Some(q), "").is_err(),
            "{q}"
        );
    }
}

#[test]
fn create_update_delete() {
    use proto::precondition::ConditionType as C;
    let RequestMessage::Create(c) = ok(
        http::Method::POST,
        "/flags",
        Some("documentId=x&mask.fieldPaths=a"),
        r#"{"fields": {"a": {"integerValue": "1"}}}"#,
    ) else {
        panic!()
    };
    assert_eq!(
        (
            c.parent.as_str(),
            c.collection_id.as_str(),
            c.document_id.as_str()
        ),
        (ROOT, "flags", "x")
    );
    assert_eq!(c.document.unwrap().fields["a"], v(T::IntegerValue(1)));
    assert!(to_proto(http::Method::POST, "/flags", None, r#"{"name": "x"}"#).is_err());

    let RequestMessage::Update(u) = ok(
        http::Method::PATCH,
        "/flags/x",
        Some("updateMask.fieldPaths=a&update_mask.field_paths=b&currentDocument.exists=true"),
        r#"{"fields": {"a": {"integerValue": "1"}}}"#,
    ) else {
        panic!()
    };
    assert_eq!(u.document.as_ref().unwrap().name, format!("{ROOT}/flags/x"));
    assert_eq!(u.update_mask.unwrap().field_paths, ["a", "b"]);
    assert_eq!(
        u.current_document.unwrap().condition_type,
        Some(C::Exists(true))
    );
    assert!(u.mask.is_none());
    let same_name = format!(r#"{{"name": "{ROOT}/flags/x"}}"#);
    ok(http::Method::PATCH, "/flags/x", None, &same_name);
    let other_name = format!(r#"{{"name": "{ROOT}/flags/y"}}"#);
    assert!(to_proto(http::Method::PATCH, "/flags/x", None, &other_name).is_err());

    let RequestMessage::Delete(d) = ok(
        http::Method::DELETE,
        "/flags/x",
        Some("currentDocument.updateTime=2024-01-01T00:00:00.5Z"),
        "",
    ) else {
        panic!()
    };
    assert_eq!(d.name, format!("{ROOT}/flags/x"));
    assert_eq!(
        d.current_document.unwrap().condition_type,
        Some(C::UpdateTime(Timestamp {
            seconds: 1_704_067_200,
            nanos: 500_000_000
        }))
    );
    for q in [
        "currentDocument.exists=1",
        "currentDocument.updateTime=now",
        "currentDocument.exists=true&currentDocument.updateTime=2024-01-01T00:00:00Z",
    ] {
        assert!(
            to_proto(http::Method::DELETE, "/flags/x", Some(q), "").is_err(),
            "{q}"
        );
    }
}

#[test]
fn commit_with_every_kind_of_write() {
    use proto::document_transform::field_transform::TransformType as Tt;
    let body = json!({
        "transaction": "AAE=",
        "writes": [
            {"update": {"name": format!("{ROOT}/c/a"), "fields": {"n": {"integerValue": 1}}},
             "updateMask": {"fieldPaths": ["n"]},
             "updateTransforms": [{"fieldPath": "t", "setToServerValue": "REQUEST_TIME"}],
             "currentDocument": {"exists": false}},
            {"delete": format!("{ROOT}/c/b"), "current_document": {"update_time": "2024-01-01T00:00:00Z"}},
            {"transform": {"document": format!("{ROOT}/c/c"), "fieldTransforms": [
                {"fieldPath": "i", "increment": {"integerValue": "2"}},
                {"fieldPath": "m", "maximum": {"doubleValue": 1}},
                {"fieldPath": "n", "minimum": {"doubleValue": 1}},
                {"fieldPath": "u", "appendMissingElements": {"values": [{"stringValue": "x"}]}},
                {"fieldPath": "r", "removeAllFromArray": {}},
                {"fieldPath": "s", "setToServerValue": 1}
            ]}}
        ]
    });
    let RequestMessage::Commit(c) = ok(http::Method::POST, ":commit", None, &body.to_string())
    else {
        panic!()
    };
    assert_eq!(c.database, "projects/p/databases/d");
    assert_eq!(c.transaction.as_ref(), &[0, 1]);
    assert_eq!(c.writes.len(), 3);
    assert_eq!(
        c.writes[0].update_transforms[0].transform_type,
        Some(Tt::SetToServerValue(1))
    );
    let Some(proto::write::Operation::Transform(t)) = &c.writes[2].operation else {
        panic!()
    };
    assert_eq!(t.field_transforms.len(), 6);
    assert_eq!(
        t.field_transforms[5].transform_type,
        Some(Tt::SetToServerValue(1))
    );

    for body in [
        json!({"writes": [{"update": {}, "delete": "x"}]}),
        json!({"writes": [{"delete": "x", "bogus": 1}]}),
        json!({"writes": [{"transform": {"fieldTransforms": [{"increment": {"integerValue": "1"}, "maximum": {"integerValue": "1"}}]}}]}),
        json!({"writes": [{"transform": {"fieldTransforms": [{"setToServerValue": "NOW"}]}}]}),
        json!({"writes": [{"currentDocument": {"exists": true, "updateTime": "2024-01-01T00:00:00Z"}}]}),
        json!({"writes": [], "database": "projects/p/databases/other"}),
        json!({"transaction": "??"}),
    ] {
        assert!(
            to_proto(http::Method::POST, ":commit", None, &body.to_string()).is_err(),
            "{body}"
        );
    }
    assert!(
        to_proto(
            http::Method::POST,
            ":commit",
            None,
            r#"{"writes":[],"writes":[]}"#
        )
        .is_err()
    );
}

#[test]
fn queries() {
    use proto::run_query_request::{ConsistencySelector as S, QueryType};
    let body = json!({
        "structured_query": {
            "select": {"fields": [{"fieldPath": "a"}]},
            "from": [{"collectionId": "c", "all_descendants": true}],
            "where": {"compositeFilter": {"op": "OR", "filters": [
                {"fieldFilter": {"field": {"fieldPath": "a"}, "op": "GREATER_THAN", "value": {"integerValue": "1"}}},
                {"fieldFilter": {"field": {"fieldPath": "b"}, "op": 8, "value": {"arrayValue": {}}}},
                {"unaryFilter": {"op": "IS_NAN", "field": {"fieldPath": "d"}}}
            ]}},
            "orderBy": [{"field": {"fieldPath": "a"}, "direction": "DESCENDING"}],
            "startAt": {"values": [{"integerValue": "1"}], "before": true},
            "endAt": {"values": [{"integerValue": "9"}]},
            "offset": 2,
            "limit": "5"
        },
        "newTransaction": {"readOnly": {}}
    });
    let RequestMessage::RunQuery(r) = ok(
        http::Method::POST,
        "/teams/a:runQuery",
        None,
        &body.to_string(),
    ) else {
        panic!()
    };
    assert_eq!(r.parent, format!("{ROOT}/teams/a"));
    let Some(QueryType::StructuredQuery(q)) = r.query_type else {
        panic!()
    };
    assert_eq!((q.offset, q.limit), (2, Some(5)));
    assert!(q.from[0].all_descendants);
    assert_eq!(q.order_by[0].direction, 2);
    assert!(matches!(r.consistency_selector, Some(S::NewTransaction(_))));

    for body in [
        json!({"structuredQuery": {"limit": {"value": 5}}}),
        json!({"structuredQuery": {"where": {"fieldFilter": {"op": "LIKE"}}}}),
        json!({"structuredQuery": {"where": {"fieldFilter": {"op": 99}}}}),
        json!({"structuredQuery": {"orderBy": [{"direction": "UP"}]}}),
        json!({"structuredQuery": {}, "transaction": "AA==", "readTime": "2024-01-01T00:00:00Z"}),
        json!({"structuredQuery": {"from": [{"collectionId": "c", "collection_id": "d"}]}}),
        json!({"structuredQuery": {"groupBy": []}}),
    ] {
        assert!(
            to_proto(http::Method::POST, ":runQuery", None, &body.to_string()).is_err(),
            "{body}"
        );
    }

    let body = json!({"structuredAggregationQuery": {
    "structuredQuery": {"from": [{"collectionId": "c"}]},
    "aggregations": [
        {"alias": "n", "count": {"upTo": "10"}},
        {"alias": "s", "sum": {"field": {"fieldPath": "x"}}},
        {"alias": "m", "avg": {"field": {"fieldPath": "x"}}}
    ]}});
    let RequestMessage::RunAggregationQuery(a) = ok(
        http::Method::POST,
        ":runAggregationQuery",
        None,
        &body.to_string(),
    ) else {
        panic!()
    };
    let Some(proto::run_aggregation_query_request::QueryType::StructuredAggregationQuery(q)) =
        a.query_type
    else {
        panic!()
    };
    assert_eq!(q.aggregations.len(), 3);
    let bad = json!({"structuredAggregationQuery": {"aggregations": [{"count": {}, "sum": {}}]}});
    assert!(
        to_proto(
            http::Method::POST,
            ":runAggregationQuery",
            None,
            &bad.to_string()
        )
        .is_err()
    );
}

#[test]
fn the_other_verbs() {
    let body = json!({"documents": [format!("{ROOT}/c/a")], "mask": {"fieldPaths": ["x"]}, "newTransaction": {"readWrite": {"retryTransaction": "AQ=="}}});
    let RequestMessage::BatchGet(b) = ok(http::Method::POST, ":batchGet", None, &body.to_string())
    else {
        panic!()
    };
    assert_eq!(b.database, "projects/p/databases/d");
    assert_eq!(b.documents, [format!("{ROOT}/c/a")]);
    let RequestMessage::BeginTransaction(t) = ok(
        http::Method::POST,
        ":beginTransaction",
        None,
        r#"{"options": {"readOnly": {"readTime": "2024-01-01T00:00:00Z"}}}"#,
    ) else {
        panic!()
    };
    assert!(t.options.is_some());
    let RequestMessage::Rollback(r) = ok(
        http::Method::POST,
        ":rollback",
        None,
        r#"{"transaction": "AQ=="}"#,
    ) else {
        panic!()
    };
    assert_eq!(r.transaction.as_ref(), &[1]);
    let RequestMessage::ListCollectionIds(l) = ok(
        http::Method::POST,
        "/c/a:listCollectionIds",
        None,
        r#"{"pageSize": 5, "pageToken": "x"}"#,
    ) else {
        panic!()
    };
    assert_eq!(
        (l.parent.as_str(), l.page_size),
        (format!("{ROOT}/c/a").as_str(), 5)
    );
    let RequestMessage::BatchWrite(w) = ok(
        http::Method::POST,
        ":batchWrite",
        None,
        &json!({"writes": [{"delete": format!("{ROOT}/c/a")}], "labels": {"k": "v"}}).to_string(),
    ) else {
        panic!()
    };
    assert_eq!(w.labels["k"], "v");
    assert!(
        to_proto(
            http::Method::POST,
            ":batchWrite",
            None,
            r#"{"labels": {"k": 1}}"#
        )
        .is_err()
    );
    let RequestMessage::PartitionQuery(p) = ok(
        http::Method::POST,
        ":partitionQuery",
        None,
        r#"{"structuredQuery": {}, "partitionCount": "4"}"#,
    ) else {
        panic!()
    };
    assert_eq!(p.partition_count, 4);
}

/// The classifier reads the proto made from a REST call as it reads the
/// REST call itself: same accesses, same database.
#[test]
fn the_proto_classifies_as_the_rest_call() {
    use crate::classify::{ClassifyOptions, classify_grpc};
    let cases: &[(http::Method, &str, Option<&str>, String)] = &[
        (http::Method::GET, "/c/a", None, String::new()),
        (http::Method::GET, "/c", Some("pageSize=3"), String::new()),
        (http::Method::POST, "/c", Some("documentId=x"), "{}".into()),
        (http::Method::PATCH, "/c/a", Some("updateMask.fieldPaths=a"), r#"{"fields":{"a":{"integerValue":"1"}}}"#.into()),
        (http::Method::DELETE, "/c/a", Some("currentDocument.exists=true"), String::new()),
        (
            http::Method::POST,
            ":commit",
            None,
            json!({"writes": [{"update": {"name": format!("{ROOT}/c/a")}}, {"delete": format!("{ROOT}/c/b")}]}).to_string(),
        ),
        (
            http::Method::POST,
            ":runQuery",
            None,
            json!({"structuredQuery": {"from": [{"collectionId": "c", "allDescendants": true}]}}).to_string(),
        ),
        (
            http::Method::POST,
            ":batchGet",
            None,
            json!({"documents": [format!("{ROOT}/c/a")], "newTransaction": {}}).to_string(),
        ),
        (http::Method::POST, "/c/a:listCollectionIds", None, "{}".into()),
    ];
    for (m, path, q, body) in cases {
        let call = RestCall::parse(m, &format!("{BASE}{path}"), *q).unwrap();
        let rest = crate::classify_rest(&call, body.as_bytes(), &ClassifyOptions::NONE).unwrap();
        let p = request_to_proto(&call, body.as_bytes()).unwrap();
        let grpc = classify_grpc(p.method, &p.message.encode_to_vec(), &ClassifyOptions::NONE)
            .unwrap_or_else(|e| panic!("{m} {path}: {e}"));
        assert_eq!(grpc.database, rest.database, "{m} {path}");
        let targets = |c: &crate::Classified| {
            c.accesses
                .iter()
                .map(|a| (a.action, a.target.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(targets(&grpc), targets(&rest), "{m} {path}");
    }
}

// ---------------------------------------------------------------------------
// Responses

#[test]
fn responses_render_without_defaults() {
    let doc = proto::Document {
        name: format!("{ROOT}/c/a"),
        fields: HashMap::from([("a".to_owned(), v(T::IntegerValue(1)))]),
        create_time: Some(Timestamp {
            seconds: 0,
            nanos: 0,
        }),
        update_time: None,
    };
    assert_eq!(
        ResponseMessage::Document(doc.clone()).to_json(),
        json!({"name": format!("{ROOT}/c/a"), "fields": {"a": {"integerValue": "1"}}, "createTime": "1970-01-01T00:00:00Z"})
    );
    assert_eq!(ResponseMessage::Empty.to_json(), json!({}));
    let q = proto::RunQueryResponse {
        read_time: Some(Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        continuation_selector: Some(proto::run_query_response::ContinuationSelector::Done(true)),
        ..Default::default()
    };
    assert_eq!(
        ResponseMessage::RunQuery(q).to_json(),
        json!({"readTime": "1970-01-01T00:00:01Z", "done": true})
    );
    let b = proto::BatchGetDocumentsResponse {
        transaction: Bytes::from_static(&[1, 2]),
        result: Some(proto::batch_get_documents_response::Result::Missing(
            format!("{ROOT}/c/z"),
        )),
        ..Default::default()
    };
    assert_eq!(
        ResponseMessage::BatchGet(b).to_json(),
        json!({"transaction": "AQI=", "missing": format!("{ROOT}/c/z")})
    );
    let c = proto::CommitResponse {
        write_results: vec![proto::WriteResult::default()],
        commit_time: None,
    };
    assert_eq!(
        ResponseMessage::Commit(c).to_json(),
        json!({"writeResults": [{}]})
    );
    let round = ResponseMessage::decode(Method::GetDocument, &doc.encode_to_vec()).unwrap();
    assert_eq!(round, ResponseMessage::Document(doc));
    assert!(ResponseMessage::decode(Method::Commit, b"\xff\xff").is_err());
}

#[test]
fn streams_are_json_arrays() {
    let s = JsonArrayStream::new();
    let mut body = s.open().to_vec();
    body.extend(s.close());
    assert_eq!(serde_json::from_slice::<Json>(&body).unwrap(), json!([]));
    let mut s = JsonArrayStream::new();
    let mut body = s.open().to_vec();
    for i in 0..3 {
        body.extend(s.element(&json!({ "n": i })));
    }
    body.extend(s.close());
    assert_eq!(
        serde_json::from_slice::<Json>(&body).unwrap(),
        json!([{"n": 0}, {"n": 1}, {"n": 2}])
    );
}
