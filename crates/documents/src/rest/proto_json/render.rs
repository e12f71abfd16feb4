//! Rendering the Firestore protobuf messages as proto3 JSON, the way
//! Google's REST front end answers: lowerCamelCase keys, fields at their
//! default (0, `""`, `false`, empty lists and maps) left out except inside
//! a oneof, 64-bit integers as strings, bytes as padded standard base64,
//! timestamps in UTC with 0, 3, 6 or 9 fraction digits, enums by name,
//! non-finite doubles as `"NaN"`, `"Infinity"` and `"-Infinity"`.

use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use prost_types::Timestamp;
use serde_json::{Map, Value as Json, json};

use super::time::{format_duration, format_timestamp};
use crate::proto;

/// A JSON object built field by field, leaving defaults out.
#[derive(Default)]
struct Obj(Map<String, Json>);

impl Obj {
    fn put(mut self, key: &str, v: Json) -> Self {
        self.0.insert(key.to_owned(), v);
        self
    }
    fn string(self, key: &str, s: &str) -> Self {
        if s.is_empty() {
            self
        } else {
            self.put(key, Json::from(s))
        }
    }
    fn bytes(self, key: &str, b: &Bytes) -> Self {
        if b.is_empty() {
            self
        } else {
            self.put(key, base64_json(b))
        }
    }
    fn int32(self, key: &str, n: i32) -> Self {
        if n == 0 {
            self
        } else {
            self.put(key, Json::from(n))
        }
    }
    fn int64(self, key: &str, n: i64) -> Self {
        if n == 0 {
            self
        } else {
            self.put(key, Json::from(n.to_string()))
        }
    }
    fn boolean(self, key: &str, b: bool) -> Self {
        if b {
            self.put(key, Json::Bool(true))
        } else {
            self
        }
    }
    fn time(self, key: &str, t: Option<&Timestamp>) -> Self {
        match t {
            Some(t) => self.put(key, Json::from(format_timestamp(t))),
            None => self,
        }
    }
    fn opt(self, key: &str, v: Option<Json>) -> Self {
        match v {
            Some(v) => self.put(key, v),
            None => self,
        }
    }
    fn list(self, key: &str, items: Vec<Json>) -> Self {
        if items.is_empty() {
            self
        } else {
            self.put(key, Json::Array(items))
        }
    }
    fn map(self, key: &str, m: Map<String, Json>) -> Self {
        if m.is_empty() {
            self
        } else {
            self.put(key, Json::Object(m))
        }
    }
    fn done(self) -> Json {
        Json::Object(self.0)
    }
}

fn base64_json(b: &[u8]) -> Json {
    Json::from(base64::engine::general_purpose::STANDARD.encode(b))
}

/// A double as proto3 JSON writes one.
pub(crate) fn double_json(d: f64) -> Json {
    if d.is_nan() {
        Json::from("NaN")
    } else if d == f64::INFINITY {
        Json::from("Infinity")
    } else if d == f64::NEG_INFINITY {
        Json::from("-Infinity")
    } else {
        serde_json::Number::from_f64(d).map_or(Json::Null, Json::Number)
    }
}

/// A Firestore `Value` as REST JSON, e.g. `{"integerValue": "5"}`. A
/// value without a type renders as `{}`.
pub fn value_json(v: &proto::Value) -> Json {
    use proto::value::ValueType as T;
    let Some(t) = &v.value_type else {
        return Json::Object(Map::new());
    };
    let (key, inner) = match t {
        T::NullValue(_) => ("nullValue", Json::Null),
        T::BooleanValue(b) => ("booleanValue", Json::Bool(*b)),
        T::IntegerValue(i) => ("integerValue", Json::from(i.to_string())),
        T::DoubleValue(d) => ("doubleValue", double_json(*d)),
        T::TimestampValue(t) => ("timestampValue", Json::from(format_timestamp(t))),
        T::StringValue(s) => ("stringValue", Json::from(s.as_str())),
        T::BytesValue(b) => ("bytesValue", base64_json(b)),
        T::ReferenceValue(s) => ("referenceValue", Json::from(s.as_str())),
        T::GeoPointValue(p) => {
            // A double field is present unless its bits are all zero, so
            // -0.0 is written, as protobuf's own printer does.
            let mut o = Obj::default();
            if p.latitude.to_bits() != 0 {
                o = o.put("latitude", double_json(p.latitude));
            }
            if p.longitude.to_bits() != 0 {
                o = o.put("longitude", double_json(p.longitude));
            }
            ("geoPointValue", o.done())
        }
        T::ArrayValue(a) => ("arrayValue", array_json(a)),
        T::MapValue(m) => (
            "mapValue",
            Obj::default().map("fields", fields_json(&m.fields)).done(),
        ),
        T::FieldReferenceValue(s) => ("fieldReferenceValue", Json::from(s.as_str())),
        T::VariableReferenceValue(s) => ("variableReferenceValue", Json::from(s.as_str())),
        T::FunctionValue(f) => ("functionValue", function_json(&f.name, &f.args, &f.options)),
        T::PipelineValue(p) => (
            "pipelineValue",
            Obj::default()
                .list(
                    "stages",
                    p.stages
                        .iter()
                        .map(|s| function_json(&s.name, &s.args, &s.options))
                        .collect(),
                )
                .done(),
        ),
    };
    json!({ key: inner })
}

fn function_json(
    name: &str,
    args: &[proto::Value],
    options: &HashMap<String, proto::Value>,
) -> Json {
    Obj::default()
        .string("name", name)
        .list("args", args.iter().map(value_json).collect())
        .map("options", fields_json(options))
        .done()
}

fn array_json(a: &proto::ArrayValue) -> Json {
    Obj::default()
        .list("values", a.values.iter().map(value_json).collect())
        .done()
}

/// A `fields` map as REST JSON.
pub fn fields_json(fields: &HashMap<String, proto::Value>) -> Map<String, Json> {
    fields
        .iter()
        .map(|(k, v)| (k.clone(), value_json(v)))
        .collect()
}

/// A `Document` as REST JSON.
pub fn document_json(d: &proto::Document) -> Json {
    Obj::default()
        .string("name", &d.name)
        .map("fields", fields_json(&d.fields))
        .time("createTime", d.create_time.as_ref())
        .time("updateTime", d.update_time.as_ref())
        .done()
}

pub(crate) fn list_documents_json(r: &proto::ListDocumentsResponse) -> Json {
    Obj::default()
        .list("documents", r.documents.iter().map(document_json).collect())
        .string("nextPageToken", &r.next_page_token)
        .done()
}

pub(crate) fn batch_get_json(r: &proto::BatchGetDocumentsResponse) -> Json {
    use proto::batch_get_documents_response::Result as R;
    let o = match &r.result {
        Some(R::Found(d)) => Obj::default().put("found", document_json(d)),
        Some(R::Missing(m)) => Obj::default().put("missing", Json::from(m.as_str())),
        None => Obj::default(),
    };
    o.bytes("transaction", &r.transaction)
        .time("readTime", r.read_time.as_ref())
        .done()
}

pub(crate) fn begin_transaction_json(r: &proto::BeginTransactionResponse) -> Json {
    Obj::default().bytes("transaction", &r.transaction).done()
}

fn write_result_json(w: &proto::WriteResult) -> Json {
    Obj::default()
        .time("updateTime", w.update_time.as_ref())
        .list(
            "transformResults",
            w.transform_results.iter().map(value_json).collect(),
        )
        .done()
}

pub(crate) fn commit_json(r: &proto::CommitResponse) -> Json {
    Obj::default()
        .list(
            "writeResults",
            r.write_results.iter().map(write_result_json).collect(),
        )
        .time("commitTime", r.commit_time.as_ref())
        .done()
}

pub(crate) fn run_query_json(r: &proto::RunQueryResponse) -> Json {
    use proto::run_query_response::ContinuationSelector as C;
    let o = Obj::default()
        .bytes("transaction", &r.transaction)
        .opt("document", r.document.as_ref().map(document_json))
        .time("readTime", r.read_time.as_ref())
        .int32("skippedResults", r.skipped_results)
        .opt(
            "explainMetrics",
            r.explain_metrics.as_ref().map(explain_metrics_json),
        );
    match r.continuation_selector {
        Some(C::Done(d)) => o.put("done", Json::Bool(d)),
        None => o,
    }
    .done()
}

pub(crate) fn run_aggregation_query_json(r: &proto::RunAggregationQueryResponse) -> Json {
    Obj::default()
        .opt(
            "result",
            r.result.as_ref().map(|a| {
                Obj::default()
                    .map("aggregateFields", fields_json(&a.aggregate_fields))
                    .done()
            }),
        )
        .bytes("transaction", &r.transaction)
        .time("readTime", r.read_time.as_ref())
        .opt(
            "explainMetrics",
            r.explain_metrics.as_ref().map(explain_metrics_json),
        )
        .done()
}

pub(crate) fn list_collection_ids_json(r: &proto::ListCollectionIdsResponse) -> Json {
    Obj::default()
        .list(
            "collectionIds",
            r.collection_ids
                .iter()
                .map(|s| Json::from(s.as_str()))
                .collect(),
        )
        .string("nextPageToken", &r.next_page_token)
        .done()
}

pub(crate) fn batch_write_json(r: &proto::BatchWriteResponse) -> Json {
    Obj::default()
        .list(
            "writeResults",
            r.write_results.iter().map(write_result_json).collect(),
        )
        .list(
            "status",
            r.status
                .iter()
                .map(|s| {
                    // `details` are `Any`s this crate has no types for; they
                    // are written with their type URL and raw bytes.
                    let details = s
                        .details
                        .iter()
                        .map(|d| {
                            Obj::default()
                                .put("@type", Json::from(d.type_url.as_str()))
                                .put("value", base64_json(&d.value))
                                .done()
                        })
                        .collect();
                    Obj::default()
                        .int32("code", s.code)
                        .string("message", &s.message)
                        .list("details", details)
                        .done()
                })
                .collect(),
        )
        .done()
}

pub(crate) fn partition_query_json(r: &proto::PartitionQueryResponse) -> Json {
    Obj::default()
        .list("partitions", r.partitions.iter().map(cursor_json).collect())
        .string("nextPageToken", &r.next_page_token)
        .done()
}

fn cursor_json(c: &proto::Cursor) -> Json {
    Obj::default()
        .list("values", c.values.iter().map(value_json).collect())
        .boolean("before", c.before)
        .done()
}

fn explain_metrics_json(m: &proto::ExplainMetrics) -> Json {
    Obj::default()
        .opt(
            "planSummary",
            m.plan_summary.as_ref().map(|p| {
                Obj::default()
                    .list(
                        "indexesUsed",
                        p.indexes_used.iter().map(struct_json).collect(),
                    )
                    .done()
            }),
        )
        .opt(
            "executionStats",
            m.execution_stats.as_ref().map(|s| {
                Obj::default()
                    .int64("resultsReturned", s.results_returned)
                    .opt(
                        "executionDuration",
                        s.execution_duration
                            .as_ref()
                            .map(|d| Json::from(format_duration(d))),
                    )
                    .int64("readOperations", s.read_operations)
                    .opt("debugStats", s.debug_stats.as_ref().map(struct_json))
                    .done()
            }),
        )
        .done()
}

/// A `google.protobuf.Struct` as the plain JSON object it stands for.
fn struct_json(s: &prost_types::Struct) -> Json {
    Json::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), protobuf_value_json(v)))
            .collect(),
    )
}

fn protobuf_value_json(v: &prost_types::Value) -> Json {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::NumberValue(n)) => double_json(*n),
        Some(Kind::StringValue(s)) => Json::from(s.as_str()),
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(protobuf_value_json).collect()),
    }
}
