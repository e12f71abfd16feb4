//! What Google's Node client sends over REST (`preferRest: true`, the
//! google-gax REST fallback) maps to protobuf requests, every call of it.
//!
//! The client runs its scenario (`testing/firestore-node/scenario.mjs`,
//! mode `latchkey-rest`) against a recording proxy in front of Google's
//! emulator; each recorded call is then routed with `RestCall::parse` and
//! read with `request_to_proto`, and the document answers the emulator
//! gave are read back and rendered again to the same JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use latchkey_documents::rest::proto_json::{document_from_json, document_json, request_to_proto};
use latchkey_documents::{Method, RestCall};
use latchkey_testkit::firestore::{FirestoreEmulator, Scenario, ScenarioClient};
use serde_json::Value as Json;

#[derive(Debug, Clone)]
struct Seen {
    method: http::Method,
    path: String,
    query: Option<String>,
    body: Bytes,
    status: u16,
    answer: Bytes,
}

/// Starts a proxy that forwards every HTTP/1 request to `upstream` and
/// records it with its answer. Returns its address.
async fn recording_proxy(upstream: String, seen: Arc<Mutex<Vec<Seen>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (http, upstream, seen) = (http.clone(), upstream.clone(), seen.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (http, upstream, seen) = (http.clone(), upstream.clone(), seen.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let grpc = parts
                                .headers
                                .get("content-type")
                                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                            if grpc {
                                // Listen has no REST form; the client then
                                // speaks gRPC, which this proxy does not carry.
                                return Ok::<_, Infallible>(
                                    http::Response::builder()
                                        .header("content-type", "application/grpc")
                                        .header("grpc-status", "12")
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                );
                            }
                            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                            let mut fwd = http
                                .request(parts.method.clone(), format!("{upstream}{target}"))
                                .body(body.clone());
                            for name in ["content-type", "authorization"] {
                                if let Some(v) = parts.headers.get(name) {
                                    fwd = fwd.header(name, v);
                                }
                            }
                            let (status, content_type, answer) = match fwd.send().await {
                                Ok(r) => {
                                    let status = r.status().as_u16();
                                    let ct = r.headers().get("content-type").cloned().unwrap_or(
                                        http::HeaderValue::from_static("application/json"),
                                    );
                                    (status, ct, r.bytes().await.unwrap_or_default())
                                }
                                Err(e) => (
                                    502,
                                    http::HeaderValue::from_static("text/plain"),
                                    Bytes::from(e.to_string()),
                                ),
                            };
                            seen.lock().unwrap().push(Seen {
                                method: parts.method.clone(),
                                path: parts.uri.path().to_owned(),
                                query: parts.uri.query().map(str::to_owned),
                                body,
                                status,
                                answer: answer.clone(),
                            });
                            Ok(http::Response::builder()
                                .status(status)
                                .header("content-type", content_type)
                                .body(Full::new(answer))
                                .unwrap())
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// Every object in an answer that looks like a document (`name` and
/// `createTime`), wherever it is nested.
fn documents_in<'a>(v: &'a Json, out: &mut Vec<&'a Json>) {
    match v {
        Json::Object(m) => {
            if m.contains_key("name") && m.contains_key("createTime") {
                out.push(v);
            } else {
                m.values().for_each(|x| documents_in(x, out));
            }
        }
        Json::Array(a) => a.iter().for_each(|x| documents_in(x, out)),
        _ => {}
    }
}

/// JSON numbers compared as doubles (Google writes `1.0E21`, serde `1e21`).
fn same_json(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, p)| y.get(k).is_some_and(|q| same_json(p, q)))
        }
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_call_of_the_node_client_maps_to_a_proto() {
    let Some(emulator) = FirestoreEmulator::start_or_skip().await else {
        return;
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let proxy = recording_proxy(emulator.base_url(), seen.clone()).await;
    let report = Scenario::new(ScenarioClient::Node, "latchkey-rest", &proxy)
        .token("owner")
        .step_timeout(Duration::from_secs(8))
        .run()
        .await;
    // Node and the client's packages come with the emulator's test set-up;
    // a scenario that cannot run is a broken machine, not a skip.
    let report = report.unwrap_or_else(|e| panic!("{e}"));
    let seen = seen.lock().unwrap().clone();
    let mut methods = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    let mut documents = 0;
    for s in &seen {
        let label = format!(
            "{} {}?{} {}",
            s.method,
            s.path,
            s.query.as_deref().unwrap_or(""),
            String::from_utf8_lossy(&s.body)
        );
        let call = match RestCall::parse(&s.method, &s.path, s.query.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{label}: not routed: {e}"));
                continue;
            }
        };
        methods.insert(format!("{:?}", call.method));
        if let Err(e) = request_to_proto(&call, &s.body) {
            failures.push(format!("{label}: not mapped: {e}"));
        }
        if s.status == 200
            && let Ok(answer) = serde_json::from_slice::<Json>(&s.answer)
        {
            let mut docs = Vec::new();
            documents_in(&answer, &mut docs);
            for d in docs {
                documents += 1;
                match document_from_json(d) {
                    Ok(p) if same_json(&document_json(&p), d) => {}
                    Ok(p) => failures.push(format!(
                        "{label}: document renders as {} instead of {d}",
                        document_json(&p)
                    )),
                    Err(e) => failures.push(format!("{label}: answer {d} does not read: {e}")),
                }
            }
        }
    }
    let queries: std::collections::BTreeSet<&str> =
        seen.iter().filter_map(|s| s.query.as_deref()).collect();
    eprintln!("query strings the client sent: {queries:?}");
    eprintln!(
        "the Node client sent {} REST calls ({}), answers held {documents} documents; scenario: {}",
        seen.len(),
        methods.iter().cloned().collect::<Vec<_>>().join(", "),
        report.summary()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for m in [Method::Commit, Method::RunQuery, Method::BatchGetDocuments] {
        assert!(
            methods.contains(&format!("{m:?}")),
            "the scenario sent no {m} over REST: {methods:?}"
        );
    }
}
