//! The property the `firestore_rest_proto` fuzz target checks (and the
//! stable test that replays its corpus): arbitrary bytes never panic the
//! mapping, and what it produces is read by the gRPC classifier as the
//! REST classifier reads the call.

use serde_json::Value as Json;

use super::{ResponseMessage, document_from_json, document_json, request_to_proto};
use crate::classify::{Classified, ClassifyOptions, classify_grpc};
use crate::grpc::Method;
use crate::rest::json::parse_strict;
use crate::rest::{RestCall, classify_rest};

fn targets(c: &Classified) -> Vec<String> {
    c.accesses
        .iter()
        .map(|a| format!("{:?} {:?} {}", a.action, a.target, a.operation))
        .collect()
}

/// JSON equal but for doubles one unit in the last place apart (the JSON
/// parser's float reading is best-effort, not exact).
fn close(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => p == q || p.to_bits().abs_diff(q.to_bits()) <= 1,
            _ => x == y,
        },
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| close(p, q))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| close(p, q)))
        }
        _ => a == b,
    }
}

/// The first line is `METHOD /v1/...?query`, the rest the JSON body, as
/// for `firestore_rest`. The whole input is also read as the protobuf
/// answer of every method and rendered.
pub fn check(data: &[u8]) {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (head, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    if let Ok(head) = std::str::from_utf8(head) {
        let (method, target) = head.split_once(' ').unwrap_or(("POST", head));
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        if let Ok(method) = http::Method::from_bytes(method.as_bytes())
            && let Ok(call) = RestCall::parse(&method, path, query)
            && let Ok(p) = request_to_proto(&call, body)
        {
            assert_eq!(p.method, call.method);
            assert_eq!(p.message.method(), call.method);
            let bytes = p.message.encode_to_vec();
            let grpc = classify_grpc(p.method, &bytes, &ClassifyOptions::NONE);
            let rest = classify_rest(&call, body, &ClassifyOptions::NONE);
            if let (Ok(g), Ok(r)) = (&grpc, &rest) {
                assert_eq!(g.database, r.database);
                assert_eq!(targets(g), targets(r), "{head}");
            }
        }
    }
    // Answers: any bytes that decode render as JSON, and a document's JSON
    // reads back to what renders the same.
    for m in Method::ALL {
        if let Ok(r) = ResponseMessage::decode(m, data) {
            let j = r.to_json();
            if let ResponseMessage::Document(_) = r {
                let text = serde_json::to_vec(&j).unwrap_or_default();
                let read = parse_strict(&text).and_then(|v| document_from_json(&v));
                match read {
                    Ok(d) => {
                        let again = document_json(&d);
                        assert!(close(&again, &j), "{j} re-renders as {again}");
                    }
                    Err(e) => panic!("{j} does not read back: {e}"),
                }
            }
        }
    }
}
