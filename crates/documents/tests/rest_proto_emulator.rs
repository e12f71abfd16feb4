//! The REST ⇄ protobuf mapping, differential against Google's emulator.
//!
//! Each step of a table of REST calls (every route, values of every type,
//! odd spellings) runs twice against one emulator, in two databases kept
//! in lockstep: once as REST, straight to the emulator's REST front end,
//! and once through `request_to_proto`, sent over gRPC, with the answer
//! rendered by `ResponseMessage::to_json`. The two answers must be the
//! same JSON (times, transaction ids and the database name aside), and an
//! error on one side must be the same status on the other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use latchkey_documents::rest::proto_json::{JsonArrayStream, ResponseMessage, request_to_proto};
use latchkey_documents::{FrameDecoder, GrpcCode, RestCall, encode_frame};
use latchkey_testkit::firestore::FirestoreEmulator;
use serde_json::{Value as Json, json};

const PROJECT: &str = "p";

/// What the mapping is expected to do with a step.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    /// The same answer both ways.
    Same,
    /// Google takes a spelling Latchkey refuses on purpose (see
    /// `proto_json::read`): the emulator answers, Latchkey says
    /// INVALID_ARGUMENT.
    Stricter,
}

struct Step {
    method: &'static str,
    path: &'static str,
    query: &'static str,
    /// `{root}` is the documents root of the side's database, `{txn}` the
    /// last transaction id that side was given, `{time}` the last update
    /// time it was given.
    body: String,
    expect: Expect,
}

fn step(method: &'static str, path: &'static str, query: &'static str, body: Json) -> Step {
    Step {
        method,
        path,
        query,
        body: if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
        expect: Expect::Same,
    }
}

fn raw(method: &'static str, path: &'static str, body: &str) -> Step {
    Step {
        method,
        path,
        query: "",
        body: body.to_owned(),
        expect: Expect::Same,
    }
}

fn stricter(mut s: Step) -> Step {
    s.expect = Expect::Stricter;
    s
}

fn all_types() -> Json {
    json!({
        "null": {"nullValue": null},
        "null2": {"null_value": "NULL_VALUE"},
        "t": {"booleanValue": true},
        "f": {"boolean_value": "false"},
        "i": {"integerValue": "5"},
        "inum": {"integerValue": 7},
        "iplus": {"integerValue": "+8"},
        "imin": {"integerValue": "-9223372036854775808"},
        "d": {"doubleValue": 1.5},
        "dint": {"doubleValue": 2},
        "dstr": {"doubleValue": "2.25"},
        "nan": {"doubleValue": "NaN"},
        "inf": {"doubleValue": "Infinity"},
        "ninf": {"doubleValue": "-Infinity"},
        "big": {"doubleValue": 1e21},
        "small": {"doubleValue": 1e-7},
        "ts": {"timestampValue": "2024-01-01T10:00:00.123456+02:00"},
        "ts0": {"timestamp_value": "1970-01-01T00:00:00Z"},
        "s": {"stringValue": "héllo"},
        "empty": {"stringValue": ""},
        "b": {"bytesValue": "+/8="},
        "burl": {"bytesValue": "-_8"},
        "bempty": {"bytesValue": ""},
        "ref": {"referenceValue": "{root}/c/a"},
        "geo": {"geoPointValue": {"latitude": 1.5, "longitude": -2}},
        "geo0": {"geo_point_value": {}},
        "arr": {"arrayValue": {"values": [{"integerValue": "1"}, {"stringValue": "x"}, {"mapValue": {}}]}},
        "arr0": {"arrayValue": {}},
        "map": {"mapValue": {"fields": {"snake_key": {"integerValue": "1"}, "m": {"mapValue": {}}}}},
        "map0": {"map_value": {}}
    })
}

fn steps() -> Vec<Step> {
    vec![
        // Writes of every value type, in both spellings.
        step("PATCH", "/c/a", "", json!({"fields": all_types()})),
        step("GET", "/c/a", "", Json::Null),
        step(
            "GET",
            "/c/a",
            "mask.fieldPaths=i&mask.field_paths=map.snake_key",
            Json::Null,
        ),
        step("GET", "/c/missing", "", Json::Null),
        step(
            "POST",
            "/c",
            "documentId=b",
            json!({"fields": {"i": {"integerValue": "3"}, "s": {"stringValue": "b"}}}),
        ),
        step("POST", "/c", "documentId=b", json!({"fields": {}})),
        step(
            "POST",
            "/c/b/sub",
            "documentId=x&mask.fieldPaths=k",
            json!({"fields": {"k": {"integerValue": "1"}, "l": {"integerValue": "2"}}}),
        ),
        step(
            "PATCH",
            "/c/b",
            "updateMask.fieldPaths=s&updateMask.fieldPaths=n&currentDocument.exists=true",
            json!({"fields": {"s": {"stringValue": "b2"}, "z": {"integerValue": "9"}}}),
        ),
        step(
            "PATCH",
            "/c/none",
            "currentDocument.exists=true",
            json!({"fields": {}}),
        ),
        // (A body naming another document than the path is refused by
        // Latchkey; the emulator never answers it, so it is not here.)
        step(
            "PATCH",
            "/c/e",
            "currentDocument.exists=false&mask.fieldPaths=x",
            json!({"name": "{root}/c/e", "fields": {"x": {"doubleValue": -0.5}, "y": {"integerValue": "4"}}}),
        ),
        // The update time just answered, as a precondition and a read time
        // (with an offset: see `time_of`).
        step(
            "POST",
            ":commit",
            "",
            json!({"writes": [{"update": {"name": "{root}/c/e", "fields": {"x": {"integerValue": "2"}}},
                "currentDocument": {"updateTime": "{time}"}}]}),
        ),
        step(
            "POST",
            ":batchGet",
            "",
            json!({"documents": ["{root}/c/e"], "readTime": "{time}"}),
        ),
        step(
            "POST",
            ":runQuery",
            "",
            json!({"structuredQuery": {"from": [{"collectionId": "c"}],
                "where": {"unaryFilter": {"op": 5, "field": {"fieldPath": "x"}}},
                "orderBy": [{"field": {"fieldPath": "x"}, "direction": 2}]},
                "readTime": "{time}"}),
        ),
        step(
            "POST",
            ":commit",
            "",
            json!({"writes": [{"delete": "{root}/c/e",
                "currentDocument": {"updateTime": "2020-01-01T00:00:00.000001Z"}}]}),
        ),
        // (Timestamps as query parameters, `?readTime=` and
        // `?currentDocument.updateTime=`, are not compared: the emulator's
        // REST front end reads the RFC 3339 form as the epoch and takes
        // only `readTime.seconds=&readTime.nanos=`, which Latchkey's router
        // refuses. They are read as RFC 3339 here, as Google documents.)
        // Lists.
        step("GET", "/c", "", Json::Null),
        step("GET", "/c", "pageSize=1", Json::Null),
        step(
            "GET",
            "/c",
            "orderBy=i%20desc&mask.fieldPaths=i",
            Json::Null,
        ),
        step(
            "GET",
            "/c",
            "showMissing=true&mask.fieldPaths=s",
            Json::Null,
        ),
        step("GET", "/c/b/sub", "page_size=5", Json::Null),
        // Batch reads and transactions.
        step(
            "POST",
            ":batchGet",
            "",
            json!({"documents": ["{root}/c/a", "{root}/c/zz"], "mask": {"fieldPaths": ["i", "s"]}}),
        ),
        step(
            "POST",
            ":batchGet",
            "",
            json!({"documents": ["{root}/c/b"], "newTransaction": {"readOnly": {}}}),
        ),
        step("POST", ":beginTransaction", "", json!({})),
        // (The emulator never answers a REST GET with `?transaction=`, so a
        // read in the transaction goes through `:batchGet`.)
        step(
            "POST",
            ":batchGet",
            "",
            json!({"documents": ["{root}/c/b"], "transaction": "{txn}"}),
        ),
        step(
            "POST",
            ":commit",
            "",
            json!({"transaction": "{txn}", "writes": [
                {"update": {"name": "{root}/c/b", "fields": {"i": {"integerValue": "4"}, "arr": {"arrayValue": {"values": [{"integerValue": "1"}]}}}},
                 "updateMask": {"fieldPaths": ["i", "arr"]},
                 "updateTransforms": [
                    {"fieldPath": "i", "increment": {"integerValue": "10"}},
                    {"fieldPath": "arr", "appendMissingElements": {"values": [{"integerValue": "2"}, {"integerValue": "1"}]}}
                 ],
                 "currentDocument": {"exists": true}},
                {"transform": {"document": "{root}/c/t", "fieldTransforms": [
                    {"fieldPath": "mx", "maximum": {"doubleValue": 2.5}},
                    {"fieldPath": "mn", "minimum": {"integerValue": "-1"}},
                    {"fieldPath": "rm", "removeAllFromArray": {"values": [{"integerValue": "1"}]}},
                    {"fieldPath": "now", "setToServerValue": "REQUEST_TIME"}
                ]}},
                {"delete": "{root}/c/e", "currentDocument": {"exists": true}}
            ]}),
        ),
        step(
            "POST",
            ":beginTransaction",
            "",
            json!({"options": {"readWrite": {}}}),
        ),
        step("POST", ":rollback", "", json!({"transaction": "{txn}"})),
        step(
            "POST",
            ":commit",
            "",
            json!({"writes": [{"delete": "{root}/c/none", "current_document": {"exists": true}}]}),
        ),
        step(
            "POST",
            ":batchWrite",
            "",
            json!({"writes": [
                {"update": {"name": "{root}/q/1", "fields": {"n": {"integerValue": "1"}, "tag": {"stringValue": "x"}, "v": {"doubleValue": 0.5}}}},
                {"update": {"name": "{root}/q/2", "fields": {"n": {"integerValue": "2"}, "tag": {"stringValue": "y"}, "v": {"doubleValue": "NaN"}}}},
                {"update": {"name": "{root}/q/3", "fields": {"n": {"doubleValue": 3.5}, "tag": {"stringValue": "x"}, "a": {"arrayValue": {"values": [{"stringValue": "k"}]}}}}},
                {"update": {"name": "{root}/q/4", "fields": {"n": {"nullValue": null}}}},
                {"update": {"name": "{root}/q/3/deep/5", "fields": {"n": {"integerValue": "5"}, "tag": {"stringValue": "x"}}}},
                {"delete": "{root}/q/none", "currentDocument": {"exists": true}}
            ], "labels": {"k": "v"}}),
        ),
        // Queries.
        step(
            "POST",
            ":runQuery",
            "",
            json!({"structuredQuery": {"from": [{"collectionId": "q"}]}}),
        ),
        step(
            "POST",
            ":runQuery",
            "",
            json!({"structured_query": {
                "from": [{"collection_id": "q", "all_descendants": true}],
                "where": {"field_filter": {"field": {"field_path": "tag"}, "op": "EQUAL", "value": {"stringValue": "x"}}},
                "order_by": [{"field": {"fieldPath": "n"}, "direction": "DESCENDING"}],
                "limit": "2"
            }}),
        ),
        step(
            "POST",
            ":runQuery",
            "",
            json!({"structuredQuery": {
                "select": {"fields": [{"fieldPath": "n"}]},
                "from": [{"collectionId": "q"}],
                "where": {"compositeFilter": {"op": "OR", "filters": [
                    {"fieldFilter": {"field": {"fieldPath": "n"}, "op": 4, "value": {"integerValue": 2}}},
                    {"unaryFilter": {"op": "IS_NAN", "field": {"fieldPath": "v"}}},
                    {"unaryFilter": {"op": "IS_NULL", "field": {"fieldPath": "n"}}}
                ]}},
                "orderBy": [{"field": {"fieldPath": "n"}}, {"field": {"fieldPath": "__name__"}}],
                "offset": 1
            }}),
        ),
        step(
            "POST",
            ":runQuery",
            "",
            json!({"structuredQuery": {
                "from": [{"collectionId": "q"}],
                "where": {"fieldFilter": {"field": {"fieldPath": "n"}, "op": "IN", "value": {"arrayValue": {"values": [{"integerValue": "1"}, {"doubleValue": 3.5}]}}}},
                "orderBy": [{"field": {"fieldPath": "n"}, "direction": "ASCENDING"}],
                "startAt": {"values": [{"integerValue": "1"}], "before": false},
                "endAt": {"values": [{"doubleValue": 9}], "before": true}
            }}),
        ),
        step(
            "POST",
            ":runQuery",
            "",
            json!({"structuredQuery": {
                "from": [{"collectionId": "q"}],
                "where": {"fieldFilter": {"field": {"fieldPath": "a"}, "op": "ARRAY_CONTAINS_ANY", "value": {"arrayValue": {"values": [{"stringValue": "k"}]}}}}
            }, "newTransaction": {"readOnly": {}}}),
        ),
        step(
            "POST",
            "/q/3:runQuery",
            "",
            json!({"structuredQuery": {"from": [{"collectionId": "deep"}]}}),
        ),
        step(
            "POST",
            ":runAggregationQuery",
            "",
            json!({"structuredAggregationQuery": {
                "structuredQuery": {"from": [{"collectionId": "q"}]},
                "aggregations": [
                    {"alias": "n", "count": {}},
                    {"alias": "few", "count": {"upTo": "2"}},
                    {"alias": "s", "sum": {"field": {"fieldPath": "n"}}},
                    {"alias": "avg", "avg": {"field": {"fieldPath": "n"}}}
                ]
            }}),
        ),
        step("POST", ":listCollectionIds", "", json!({})),
        step(
            "POST",
            "/c/b:listCollectionIds",
            "",
            json!({"pageSize": 10}),
        ),
        step(
            "POST",
            ":partitionQuery",
            "",
            json!({"structuredQuery": {"from": [{"collectionId": "q", "allDescendants": true}]}, "partitionCount": "2"}),
        ),
        step("DELETE", "/c/b", "currentDocument.exists=true", Json::Null),
        step("DELETE", "/c/b", "currentDocument.exists=true", Json::Null),
        step("DELETE", "/c/zz", "", Json::Null),
        // Refused alike.
        step("PATCH", "/c/x", "", json!({"fields": {}, "bogus": 1})),
        step(
            "PATCH",
            "/c/x",
            "",
            json!({"fields": {"a": {"integerValue": "1", "doubleValue": 1}}}),
        ),
        step(
            "PATCH",
            "/c/x",
            "",
            json!({"fields": {"a": {"integerValue": "x"}}}),
        ),
        step(
            "PATCH",
            "/c/x",
            "",
            json!({"fields": {"a": {"timestampValue": "2024-01-01"}}}),
        ),
        step(
            "PATCH",
            "/c/x",
            "",
            json!({"fields": {"a": {"bytesValue": "!!"}}}),
        ),
        raw(
            "PATCH",
            "/c/x",
            r#"{"fields": {"a": {"stringValue": "1", "string_value": "2"}}}"#,
        ),
        step(
            "POST",
            ":runQuery",
            "",
            json!({"structuredQuery": {"from": [{"collectionId": "q"}], "limit": {"value": 1}}}),
        ),
        step(
            "POST",
            ":runQuery",
            "",
            json!({"structuredQuery": {"from": [{"collectionId": "q"}], "where": {"fieldFilter": {"op": "LIKE"}}}}),
        ),
        step(
            "POST",
            ":commit",
            "",
            json!({"writes": [{"update": {"name": "{root}/c/y"}, "delete": "{root}/c/y"}]}),
        ),
        // Taken by Google, refused by Latchkey on purpose.
        stricter(step(
            "PATCH",
            "/c/x",
            "",
            json!({"fields": {"a": {"integerValue": "5.0"}}}),
        )),
        // `JsonFormat` lets a later oneof member win over an earlier `null`
        // one (and refuses the other order); the key order is gone once
        // parsed, so Latchkey refuses both.
        stricter(raw(
            "PATCH",
            "/c/x",
            r#"{"fields": {"a": {"stringValue": null, "integerValue": "1"}}}"#,
        )),
        // Google's JSON parser lets a repeated key's last value win; a key
        // given twice is refused here (rest/json.rs).
        stricter(raw("PATCH", "/c/x", r#"{"fields": {}, "fields": {}}"#)),
    ]
}

/// One side's answer: the JSON body, or the status name of an error.
#[derive(Debug, PartialEq)]
enum Answer {
    Ok(Json),
    Err(String),
}

async fn rest_call(
    http: &reqwest::Client,
    base: &str,
    s: &Step,
    query: &str,
    body: &str,
) -> Answer {
    let url = if query.is_empty() {
        format!("{base}{}", s.path)
    } else {
        format!("{base}{}?{query}", s.path)
    };
    let method = reqwest::Method::from_bytes(s.method.as_bytes()).unwrap();
    // As the emulator's administrator: some calls (`showMissing`,
    // `:listCollectionIds`, `:batchWrite`) are refused to anyone else.
    let mut req = http.request(method, &url).bearer_auth("owner");
    if !body.is_empty() {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let resp = req.send().await.unwrap();
    let ok = resp.status().is_success();
    let text = resp.text().await.unwrap();
    let j: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"));
    if ok {
        Answer::Ok(j)
    } else {
        Answer::Err(j["error"]["status"].as_str().unwrap_or("?").to_owned())
    }
}

async fn grpc_call(addr: &str, s: &Step, path: &str, query: &str, body: &str) -> Answer {
    let method = http::Method::from_bytes(s.method.as_bytes()).unwrap();
    let query = (!query.is_empty()).then_some(query);
    let call = match RestCall::parse(&method, path, query) {
        Ok(c) => c,
        Err(e) => return Answer::Err(format!("{} (latchkey: {e})", e.code().name())),
    };
    let p = match request_to_proto(&call, body.as_bytes()) {
        Ok(p) => p,
        Err(e) => return Answer::Err(format!("{} (latchkey: {e})", e.code().name())),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{addr}{}", p.method.grpc_path()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", "Bearer owner")
        .body(Full::new(encode_frame(&p.message.encode_to_vec())))
        .unwrap();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), sender.send_request(req))
        .await
        .expect("the emulator answers within 30 s")
        .unwrap();
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let bytes: Bytes = collected.to_bytes();
    let status = trailers
        .get("grpc-status")
        .or_else(|| parts.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(2);
    if status != 0 {
        return Answer::Err(GrpcCode::from_i32(status).name().to_owned());
    }
    let mut frames = FrameDecoder::new(16 << 20);
    frames.push(&bytes);
    let mut messages = Vec::new();
    while let Some(m) = frames.next_message().unwrap() {
        messages.push(ResponseMessage::decode(p.method, &m).unwrap().to_json());
    }
    if p.method.server_streaming() {
        // Through the streaming writer, as the gateway will send it.
        let mut out = JsonArrayStream::new();
        let mut body = out.open().to_vec();
        for m in &messages {
            body.extend(out.element(m));
        }
        body.extend(out.close());
        Answer::Ok(serde_json::from_slice(&body).unwrap())
    } else {
        assert_eq!(messages.len(), 1, "{}", p.method);
        Answer::Ok(messages.remove(0))
    }
}

/// Replaces what differs between two runs of the same step: times, the
/// transaction ids, the database's name.
fn normalise(v: &mut Json, db: &str) {
    match v {
        Json::Object(m) => {
            for (k, x) in m.iter_mut() {
                match k.as_str() {
                    "readTime" | "createTime" | "updateTime" | "commitTime" => {
                        *x = json!("TIME");
                    }
                    "transaction" => *x = json!("TXN"),
                    // Page tokens spell the database's name in base64.
                    "nextPageToken" => *x = json!("TOKEN"),
                    "timestampValue" if x.as_str().is_some_and(|s| s >= "2025") => {
                        *x = json!("NOW");
                    }
                    _ => normalise(x, db),
                }
            }
            let renamed: Vec<(String, Json)> = std::mem::take(m)
                .into_iter()
                .map(|(k, x)| (k.replace(db, "DB"), x))
                .collect();
            m.extend(renamed);
        }
        Json::Array(a) => a.iter_mut().for_each(|x| normalise(x, db)),
        Json::String(s) => {
            // Names, and the database id in the emulator's error texts.
            let id = db.rsplit('/').next().unwrap_or(db);
            *s = s
                .replace(db, "DB")
                .replace(&format!("database_id: \"{id}\""), "database_id: \"DB\"");
        }
        _ => {}
    }
}

fn short(a: &Answer) -> String {
    let s = match a {
        Answer::Ok(j) => j.to_string(),
        Answer::Err(e) => format!("error {e}"),
    };
    s.chars().take(300).collect()
}

fn strip_done(v: &mut Json) {
    if let Json::Array(items) = v {
        for i in items {
            if let Json::Object(m) = i {
                m.remove("done");
            }
        }
    }
}

/// `{txn}` in a query, percent-encoded.
fn query_escaped(query: &str, txn: &str) -> String {
    let t = txn
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    query.replace("{txn}", &t)
}

/// The first `updateTime` in an answer, spelled with a `+01:00` offset
/// when the hour allows, so the steps that use it read an offset.
fn time_of(a: &Answer) -> Option<String> {
    fn find(v: &Json) -> Option<&str> {
        match v {
            Json::Object(m) => m
                .get("updateTime")
                .and_then(Json::as_str)
                .or_else(|| m.values().find_map(find)),
            Json::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    let Answer::Ok(j) = a else { return None };
    let t = find(j)?;
    let hour: u32 = t.get(11..13)?.parse().ok()?;
    Some(if hour < 23 {
        format!(
            "{}{:02}{}+01:00",
            &t[..11],
            hour + 1,
            t[13..].trim_end_matches('Z')
        )
    } else {
        t.to_owned()
    })
}

fn transaction_of(a: &Answer) -> Option<String> {
    let Answer::Ok(j) = a else { return None };
    let items: Vec<&Json> = match j {
        Json::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    items
        .iter()
        .find_map(|i| i.get("transaction").and_then(Json::as_str))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_calls_map_to_the_protos_google_reads() {
    eprintln!("starting the emulator");
    let Some(emulator) = FirestoreEmulator::start_or_skip().await else {
        return;
    };
    eprintln!("emulator on {}", emulator.host_port());
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let addr = emulator.host_port();
    let rest_db = format!("projects/{PROJECT}/databases/rest");
    let grpc_db = format!("projects/{PROJECT}/databases/grpc");
    // Per side: the last transaction id and update time it was given.
    let mut txn = [String::new(), String::new()];
    let mut time = [String::new(), String::new()];
    let mut failures = Vec::new();
    let mut answered = 0;
    let steps = steps();
    for (i, s) in steps.iter().enumerate() {
        let fill = |db: &str, side: usize| {
            s.body
                .replace("{root}", &format!("{db}/documents"))
                .replace("{txn}", &txn[side])
                .replace("{time}", &time[side])
        };
        let label = format!("step {i}: {} {}?{} {}", s.method, s.path, s.query, s.body);
        eprintln!("{label}");
        let rest = rest_call(
            &http,
            &format!("{}/v1/{rest_db}/documents", emulator.base_url()),
            s,
            &query_escaped(s.query, &txn[0]),
            &fill(&rest_db, 0),
        )
        .await;
        let grpc = grpc_call(
            &addr,
            s,
            &format!("/v1/{grpc_db}/documents{}", s.path),
            &query_escaped(s.query, &txn[1]),
            &fill(&grpc_db, 1),
        )
        .await;
        if let (Some(a), Some(b)) = (transaction_of(&rest), transaction_of(&grpc)) {
            txn = [a, b];
        }
        if let (Some(a), Some(b)) = (time_of(&rest), time_of(&grpc)) {
            time = [a, b];
        }
        eprintln!("  REST: {}", short(&rest));
        if matches!(rest, Answer::Ok(_)) {
            answered += 1;
        }
        match (s.expect, rest, grpc) {
            (Expect::Same, Answer::Ok(mut a), Answer::Ok(mut b)) => {
                if s.path == ":runAggregationQuery" {
                    // The emulator's REST answer ends with `"done": true`, a
                    // field RunAggregationQueryResponse does not have in the
                    // pinned API (its gRPC answer cannot carry it).
                    strip_done(&mut a);
                }
                normalise(&mut a, &rest_db);
                normalise(&mut b, &grpc_db);
                if a != b {
                    failures.push(format!("{label}\n  REST: {a}\n  gRPC: {b}"));
                }
            }
            (Expect::Same, Answer::Err(a), Answer::Err(b)) => {
                if !b.starts_with(&a) {
                    failures.push(format!("{label}\n  REST error {a}, via proto {b}"));
                }
            }
            (Expect::Stricter, Answer::Ok(_), Answer::Err(b))
                if b.starts_with("INVALID_ARGUMENT") => {}
            (_, a, b) => failures.push(format!("{label}\n  REST: {a:?}\n  via proto: {b:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} steps differ:\n{}",
        failures.len(),
        steps.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} REST steps alike ({answered} answered, the rest refused alike)",
        steps.len()
    );
    assert!(
        answered >= 30,
        "only {answered} steps succeeded: the table tests too little"
    );
}
