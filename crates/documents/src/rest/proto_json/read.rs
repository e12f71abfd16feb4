//! Reading proto3 JSON into the Firestore protobuf messages.
//!
//! Each message is read through [`JsonObj`], so keys are normalised to
//! lowerCamelCase, unknown keys are refused and a key given in both
//! spellings is refused. Scalars follow Google's JSON front end (protobuf's
//! `JsonFormat`, which the emulator runs): 64-bit integers as a string or
//! a number, doubles as a number, a numeric string or `NaN`/`Infinity`/
//! `-Infinity`, bytes as base64 (standard or URL-safe), enums by name or
//! number, `null` for any field as its absence (but `nullValue: null` is
//! the null value). Where `JsonFormat` would accept a spelling whose
//! meaning could be disputed, this refuses instead:
//!
//! - two members of one oneof, even if one of them is `null` (`JsonFormat`
//!   decides that by key order, which the parsed body no longer has);
//! - an integer written as a fraction or an exponent (`"5.0"`, `1e2`)
//!   beyond what a double holds exactly;
//! - an enum number that names no value of the enum.

use std::collections::HashMap;

use bytes::Bytes;
use prost_types::Timestamp;
use serde_json::{Map, Value as Json};

use super::time::parse_timestamp;
use crate::error::ClassifyError;
use crate::proto;
use crate::proto::structured_query as sq;
use crate::rest::json::{JsonObj, decode_base64};
use crate::values::VALUE_KINDS;

pub(crate) type Result<T, E = ClassifyError> = std::result::Result<T, E>;

pub(crate) fn invalid(field: String, reason: &str) -> ClassifyError {
    ClassifyError::Invalid {
        field,
        reason: reason.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Scalars

/// The largest integer every double below it holds exactly (2^53).
const EXACT_IN_DOUBLE: f64 = 9_007_199_254_740_992.0;

/// An `int64` field: a JSON integer, an integral number a double holds
/// exactly, or a decimal string.
pub(crate) fn int64(v: &Json, field: impl FnOnce() -> String) -> Result<i64> {
    let n = match v {
        Json::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT_IN_DOUBLE)
                .map(|f| f as i64)
        }),
        Json::String(s) => s.parse::<i64>().ok(),
        _ => None,
    };
    n.ok_or_else(|| invalid(field(), "expected a 64-bit integer"))
}

/// An `int32` field, read as [`int64`] and range-checked.
pub(crate) fn int32(v: &Json, field: impl Fn() -> String) -> Result<i32> {
    let n = int64(v, &field)?;
    i32::try_from(n).map_err(|_| invalid(field(), "expected a 32-bit integer"))
}

/// Whether `s` is a decimal number as Java's `BigDecimal` reads one
/// (`-1.5e3`, `.5`, `5.`), the only strings Google turns into doubles
/// besides the three special values.
fn decimal_string(s: &str) -> bool {
    let b = s.strip_prefix(['+', '-']).unwrap_or(s).as_bytes();
    let (mantissa, exponent) = match b.iter().position(|c| matches!(c, b'e' | b'E')) {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    let int_len = mantissa.iter().take_while(|c| c.is_ascii_digit()).count();
    let rest = &mantissa[int_len..];
    let frac_ok = match rest.split_first() {
        None => int_len > 0,
        Some((b'.', frac)) => {
            frac.iter().all(u8::is_ascii_digit) && (int_len > 0 || !frac.is_empty())
        }
        Some(_) => false,
    };
    let exp_ok = exponent.is_none_or(|e| {
        let e = e
            .strip_prefix(b"+")
            .or_else(|| e.strip_prefix(b"-"))
            .unwrap_or(e);
        !e.is_empty() && e.iter().all(u8::is_ascii_digit)
    });
    frac_ok && exp_ok
}

/// A `double` field.
pub(crate) fn double(v: &Json, field: impl FnOnce() -> String) -> Result<f64> {
    let d = match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            s if decimal_string(s) => s.parse::<f64>().ok().filter(|d| d.is_finite()),
            _ => None,
        },
        _ => None,
    };
    d.ok_or_else(|| invalid(field(), "expected a number"))
}

/// A `bytes` field: base64 in either alphabet, padded or not; `""` is empty.
pub(crate) fn bytes(v: &Json, field: impl FnOnce() -> String) -> Result<Bytes> {
    match v {
        Json::String(s) if s.is_empty() => Ok(Bytes::new()),
        Json::String(s) => decode_base64(s).ok_or_else(|| invalid(field(), "expected base64")),
        _ => Err(invalid(field(), "expected base64")),
    }
}

/// A `google.protobuf.Timestamp` field.
pub(crate) fn timestamp(v: &Json, field: impl FnOnce() -> String) -> Result<Timestamp> {
    v.as_str().and_then(parse_timestamp).ok_or_else(|| {
        invalid(
            field(),
            "expected an RFC 3339 timestamp such as `2024-05-01T12:00:00.5Z`",
        )
    })
}

/// An enum field, by name or by number; `values` lists every value.
pub(crate) fn enumeration(
    v: &Json,
    values: &[(&str, i32)],
    field: impl FnOnce() -> String,
) -> Result<i32> {
    let found = match v {
        Json::String(s) => values.iter().find(|(n, _)| n == s).map(|(_, i)| *i),
        Json::Number(n) => n
            .as_i64()
            .and_then(|n| values.iter().find(|(_, i)| i64::from(*i) == n))
            .map(|(_, i)| *i),
        _ => None,
    };
    found.ok_or_else(|| {
        let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
        ClassifyError::Invalid {
            field: field(),
            reason: format!("expected one of {}", names.join(", ")),
        }
    })
}

/// Which member of a oneof is given: `None` for none (or only `null`),
/// an error when two are present.
pub(crate) fn oneof<'a>(o: &JsonObj<'_>, members: &[&'a str]) -> Result<Option<&'a str>> {
    let present: Vec<&str> = o.keys().filter(|k| members.contains(k)).collect();
    if present.len() > 1 {
        return Err(invalid(
            present
                .iter()
                .map(|k| o.field(k))
                .collect::<Vec<_>>()
                .join(", "),
            &format!("give only one of `{}`", members.join("`, `")),
        ));
    }
    Ok(present
        .first()
        .and_then(|k| members.iter().find(|m| *m == k))
        .copied()
        .filter(|k| o.get(k).is_some()))
}

// Typed field accessors over a JsonObj.

pub(crate) fn opt_int32(o: &JsonObj<'_>, key: &str) -> Result<Option<i32>> {
    o.get(key).map(|v| int32(v, || o.field(key))).transpose()
}

pub(crate) fn opt_int64(o: &JsonObj<'_>, key: &str) -> Result<Option<i64>> {
    o.get(key).map(|v| int64(v, || o.field(key))).transpose()
}

pub(crate) fn opt_double(o: &JsonObj<'_>, key: &str) -> Result<Option<f64>> {
    o.get(key).map(|v| double(v, || o.field(key))).transpose()
}

pub(crate) fn opt_timestamp(o: &JsonObj<'_>, key: &str) -> Result<Option<Timestamp>> {
    o.get(key)
        .map(|v| timestamp(v, || o.field(key)))
        .transpose()
}

pub(crate) fn opt_bytes(o: &JsonObj<'_>, key: &str) -> Result<Bytes> {
    Ok(o.get(key)
        .map(|v| bytes(v, || o.field(key)))
        .transpose()?
        .unwrap_or_default())
}

pub(crate) fn string(o: &JsonObj<'_>, key: &str) -> Result<String> {
    Ok(o.str(key)?.unwrap_or("").to_owned())
}

pub(crate) fn strings(o: &JsonObj<'_>, key: &str) -> Result<Vec<String>> {
    Ok(o.strings(key)?.into_iter().map(str::to_owned).collect())
}

pub(crate) fn boolean(o: &JsonObj<'_>, key: &str) -> Result<bool> {
    Ok(o.bool(key)?.unwrap_or(false))
}

pub(crate) fn opt_enum(o: &JsonObj<'_>, key: &str, values: &[(&str, i32)]) -> Result<i32> {
    Ok(o.get(key)
        .map(|v| enumeration(v, values, || o.field(key)))
        .transpose()?
        .unwrap_or(0))
}

/// Each element of a repeated message field, read by `f`.
pub(crate) fn messages<T>(
    o: &JsonObj<'_>,
    key: &str,
    mut f: impl FnMut(&Json, &str) -> Result<T>,
) -> Result<Vec<T>> {
    o.array(key)?
        .iter()
        .enumerate()
        .map(|(i, v)| f(v, &format!("{}[{i}]", o.field(key))))
        .collect()
}

/// A singular message field, read by `f`.
pub(crate) fn message<T>(
    o: &JsonObj<'_>,
    key: &str,
    f: impl FnOnce(&Json, &str) -> Result<T>,
) -> Result<Option<T>> {
    o.get(key).map(|v| f(v, &o.field(key))).transpose()
}

fn label(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

// ---------------------------------------------------------------------------
// Values and documents

/// `google.protobuf.NullValue`.
const NULL_VALUE: &[(&str, i32)] = &[("NULL_VALUE", 0)];

/// Reads a Firestore `Value`. A value with no type (`{}`) reads as one,
/// as Google's front end reads it; the write or query that carries it is
/// then refused where values are checked.
pub(crate) fn value(v: &Json, at: &str) -> Result<proto::Value> {
    use proto::value::ValueType as T;
    let o = JsonObj::new(v, at, VALUE_KINDS)?;
    let present: Vec<&str> = o.keys().collect();
    if present.len() > 1 {
        return Err(invalid(
            at.to_owned(),
            "a value must have exactly one type, such as `stringValue`",
        ));
    }
    let Some(kind) = present.first().copied() else {
        return Ok(proto::Value { value_type: None });
    };
    let field = || o.field(kind);
    let Some(inner) = o.get(kind) else {
        // `null`: the null value for `nullValue`, no value for the rest.
        return Ok(proto::Value {
            value_type: (kind == "nullValue").then_some(T::NullValue(0)),
        });
    };
    let t = match kind {
        "nullValue" => T::NullValue(enumeration(inner, NULL_VALUE, field)?),
        "booleanValue" => T::BooleanValue(
            o.bool(kind)?
                .ok_or_else(|| invalid(field(), "expected true or false"))?,
        ),
        "integerValue" => T::IntegerValue(int64(inner, field)?),
        "doubleValue" => T::DoubleValue(double(inner, field)?),
        "timestampValue" => T::TimestampValue(timestamp(inner, field)?),
        "stringValue" => T::StringValue(string(&o, kind)?),
        "bytesValue" => T::BytesValue(bytes(inner, field)?),
        "referenceValue" => T::ReferenceValue(string(&o, kind)?),
        "fieldReferenceValue" => T::FieldReferenceValue(string(&o, kind)?),
        "variableReferenceValue" => T::VariableReferenceValue(string(&o, kind)?),
        "geoPointValue" => {
            let p = JsonObj::new(inner, &field(), &["latitude", "longitude"])?;
            T::GeoPointValue(proto_type::LatLng {
                latitude: opt_double(&p, "latitude")?.unwrap_or(0.0),
                longitude: opt_double(&p, "longitude")?.unwrap_or(0.0),
            })
        }
        "arrayValue" => T::ArrayValue(array_value(inner, &field())?),
        "mapValue" => {
            let m = JsonObj::new(inner, &field(), &["fields"])?;
            T::MapValue(proto::MapValue {
                fields: value_map(&m, "fields")?,
            })
        }
        "functionValue" => T::FunctionValue(function(inner, &field())?),
        _ => {
            let p = JsonObj::new(inner, &field(), &["stages"])?;
            T::PipelineValue(proto::Pipeline {
                stages: messages(&p, "stages", |v, at| {
                    let s = JsonObj::new(v, at, &["name", "args", "options"])?;
                    Ok(proto::pipeline::Stage {
                        name: string(&s, "name")?,
                        args: messages(&s, "args", value)?,
                        options: value_map(&s, "options")?,
                    })
                })?,
            })
        }
    };
    Ok(proto::Value {
        value_type: Some(t),
    })
}

use googleapis_tonic_google_firestore_v1::google::r#type as proto_type;

fn function(v: &Json, at: &str) -> Result<proto::Function> {
    let f = JsonObj::new(v, at, &["name", "args", "options"])?;
    Ok(proto::Function {
        name: string(&f, "name")?,
        args: messages(&f, "args", value)?,
        options: value_map(&f, "options")?,
    })
}

/// An `ArrayValue` message (`{"values": [...]}`).
pub(crate) fn array_value(v: &Json, at: &str) -> Result<proto::ArrayValue> {
    let a = JsonObj::new(v, at, &["values"])?;
    Ok(proto::ArrayValue {
        values: messages(&a, "values", value)?,
    })
}

/// A `map<string, Value>` field: keys are taken as given (map keys are
/// data, never normalised).
pub(crate) fn value_map(o: &JsonObj<'_>, key: &str) -> Result<HashMap<String, proto::Value>> {
    let Some(m) = o.map(key)? else {
        return Ok(HashMap::new());
    };
    value_fields(m, &o.field(key))
}

/// The entries of a `fields` object.
pub(crate) fn value_fields(
    m: &Map<String, Json>,
    at: &str,
) -> Result<HashMap<String, proto::Value>> {
    m.iter()
        .map(|(k, v)| Ok((k.clone(), value(v, &label(at, k))?)))
        .collect()
}

/// The fields of a `Document` message.
pub(crate) const DOCUMENT: &[&str] = &["name", "fields", "createTime", "updateTime"];

/// A `Document` message.
pub(crate) fn document(v: &Json, at: &str) -> Result<proto::Document> {
    let d = JsonObj::new(v, at, DOCUMENT)?;
    document_of(&d)
}

pub(crate) fn document_of(d: &JsonObj<'_>) -> Result<proto::Document> {
    Ok(proto::Document {
        name: string(d, "name")?,
        fields: value_map(d, "fields")?,
        create_time: opt_timestamp(d, "createTime")?,
        update_time: opt_timestamp(d, "updateTime")?,
    })
}

/// A `DocumentMask` message.
pub(crate) fn mask(v: &Json, at: &str) -> Result<proto::DocumentMask> {
    let m = JsonObj::new(v, at, &["fieldPaths"])?;
    Ok(proto::DocumentMask {
        field_paths: strings(&m, "fieldPaths")?,
    })
}

/// A `Precondition` message.
pub(crate) fn precondition(v: &Json, at: &str) -> Result<proto::Precondition> {
    use proto::precondition::ConditionType as C;
    let p = JsonObj::new(v, at, &["exists", "updateTime"])?;
    let condition_type = match oneof(&p, &["exists", "updateTime"])? {
        Some("exists") => Some(C::Exists(boolean(&p, "exists")?)),
        Some(_) => opt_timestamp(&p, "updateTime")?.map(C::UpdateTime),
        None => None,
    };
    Ok(proto::Precondition { condition_type })
}

/// A `TransactionOptions` message.
pub(crate) fn transaction_options(v: &Json, at: &str) -> Result<proto::TransactionOptions> {
    use proto::transaction_options::{Mode, ReadOnly, ReadWrite, read_only};
    let o = JsonObj::new(v, at, &["readOnly", "readWrite"])?;
    let mode = match oneof(&o, &["readOnly", "readWrite"])? {
        Some("readOnly") => message(&o, "readOnly", |v, at| {
            let r = JsonObj::new(v, at, &["readTime"])?;
            Ok(Mode::ReadOnly(ReadOnly {
                consistency_selector: opt_timestamp(&r, "readTime")?
                    .map(read_only::ConsistencySelector::ReadTime),
            }))
        })?,
        Some(_) => message(&o, "readWrite", |v, at| {
            let r = JsonObj::new(v, at, &["retryTransaction"])?;
            Ok(Mode::ReadWrite(ReadWrite {
                retry_transaction: opt_bytes(&r, "retryTransaction")?,
            }))
        })?,
        None => None,
    };
    Ok(proto::TransactionOptions { mode })
}

/// An `ExplainOptions` message.
pub(crate) fn explain_options(v: &Json, at: &str) -> Result<proto::ExplainOptions> {
    let o = JsonObj::new(v, at, &["analyze"])?;
    Ok(proto::ExplainOptions {
        analyze: boolean(&o, "analyze")?,
    })
}

// ---------------------------------------------------------------------------
// Writes

const WRITE: &[&str] = &[
    "update",
    "delete",
    "transform",
    "updateMask",
    "updateTransforms",
    "currentDocument",
];

/// A `Write` message.
pub(crate) fn write(v: &Json, at: &str) -> Result<proto::Write> {
    use proto::write::Operation as Op;
    let w = JsonObj::new(v, at, WRITE)?;
    let operation = match oneof(&w, &["update", "delete", "transform"])? {
        Some("update") => message(&w, "update", document)?.map(Op::Update),
        Some("delete") => Some(Op::Delete(string(&w, "delete")?)),
        Some(_) => message(&w, "transform", |v, at| {
            let t = JsonObj::new(v, at, &["document", "fieldTransforms"])?;
            Ok(Op::Transform(proto::DocumentTransform {
                document: string(&t, "document")?,
                field_transforms: messages(&t, "fieldTransforms", field_transform)?,
            }))
        })?,
        None => None,
    };
    Ok(proto::Write {
        update_mask: message(&w, "updateMask", mask)?,
        update_transforms: messages(&w, "updateTransforms", field_transform)?,
        current_document: message(&w, "currentDocument", precondition)?,
        operation,
    })
}

const FIELD_TRANSFORM: &[&str] = &[
    "fieldPath",
    "setToServerValue",
    "increment",
    "maximum",
    "minimum",
    "appendMissingElements",
    "removeAllFromArray",
];

const SERVER_VALUE: &[(&str, i32)] = &[("SERVER_VALUE_UNSPECIFIED", 0), ("REQUEST_TIME", 1)];

fn field_transform(v: &Json, at: &str) -> Result<proto::document_transform::FieldTransform> {
    use proto::document_transform::field_transform::TransformType as T;
    let t = JsonObj::new(v, at, FIELD_TRANSFORM)?;
    let transform_type = match oneof(&t, &FIELD_TRANSFORM[1..])? {
        Some("setToServerValue") => Some(T::SetToServerValue(opt_enum(
            &t,
            "setToServerValue",
            SERVER_VALUE,
        )?)),
        Some("increment") => message(&t, "increment", value)?.map(T::Increment),
        Some("maximum") => message(&t, "maximum", value)?.map(T::Maximum),
        Some("minimum") => message(&t, "minimum", value)?.map(T::Minimum),
        Some("appendMissingElements") => {
            message(&t, "appendMissingElements", array_value)?.map(T::AppendMissingElements)
        }
        Some(_) => message(&t, "removeAllFromArray", array_value)?.map(T::RemoveAllFromArray),
        None => None,
    };
    Ok(proto::document_transform::FieldTransform {
        field_path: string(&t, "fieldPath")?,
        transform_type,
    })
}

// ---------------------------------------------------------------------------
// Queries

const STRUCTURED_QUERY: &[&str] = &[
    "select",
    "from",
    "where",
    "orderBy",
    "startAt",
    "endAt",
    "offset",
    "limit",
    "findNearest",
];

/// A `StructuredQuery` message. `limit` is an `Int32Value` wrapper,
/// which proto3 JSON writes as a bare number (`{"value": n}` is refused,
/// as Google refuses it).
pub(crate) fn structured_query(v: &Json, at: &str) -> Result<proto::StructuredQuery> {
    let q = JsonObj::new(v, at, STRUCTURED_QUERY)?;
    Ok(proto::StructuredQuery {
        select: message(&q, "select", |v, at| {
            let p = JsonObj::new(v, at, &["fields"])?;
            Ok(sq::Projection {
                fields: messages(&p, "fields", field_reference)?,
            })
        })?,
        from: messages(&q, "from", |v, at| {
            let s = JsonObj::new(v, at, &["collectionId", "allDescendants"])?;
            Ok(sq::CollectionSelector {
                collection_id: string(&s, "collectionId")?,
                all_descendants: boolean(&s, "allDescendants")?,
            })
        })?,
        r#where: message(&q, "where", filter)?,
        order_by: messages(&q, "orderBy", |v, at| {
            let o = JsonObj::new(v, at, &["field", "direction"])?;
            Ok(sq::Order {
                field: message(&o, "field", field_reference)?,
                direction: opt_enum(&o, "direction", DIRECTION)?,
            })
        })?,
        start_at: message(&q, "startAt", cursor)?,
        end_at: message(&q, "endAt", cursor)?,
        offset: opt_int32(&q, "offset")?.unwrap_or(0),
        limit: opt_int32(&q, "limit")?,
        find_nearest: message(&q, "findNearest", find_nearest)?,
    })
}

const DIRECTION: &[(&str, i32)] = &[
    ("DIRECTION_UNSPECIFIED", 0),
    ("ASCENDING", 1),
    ("DESCENDING", 2),
];

const COMPOSITE_OP: &[(&str, i32)] = &[("OPERATOR_UNSPECIFIED", 0), ("AND", 1), ("OR", 2)];

const FIELD_OP: &[(&str, i32)] = &[
    ("OPERATOR_UNSPECIFIED", 0),
    ("LESS_THAN", 1),
    ("LESS_THAN_OR_EQUAL", 2),
    ("GREATER_THAN", 3),
    ("GREATER_THAN_OR_EQUAL", 4),
    ("EQUAL", 5),
    ("NOT_EQUAL", 6),
    ("ARRAY_CONTAINS", 7),
    ("IN", 8),
    ("ARRAY_CONTAINS_ANY", 9),
    ("NOT_IN", 10),
];

const UNARY_OP: &[(&str, i32)] = &[
    ("OPERATOR_UNSPECIFIED", 0),
    ("IS_NAN", 2),
    ("IS_NULL", 3),
    ("IS_NOT_NAN", 4),
    ("IS_NOT_NULL", 5),
];

const DISTANCE_MEASURE: &[(&str, i32)] = &[
    ("DISTANCE_MEASURE_UNSPECIFIED", 0),
    ("EUCLIDEAN", 1),
    ("COSINE", 2),
    ("DOT_PRODUCT", 3),
];

fn field_reference(v: &Json, at: &str) -> Result<sq::FieldReference> {
    let f = JsonObj::new(v, at, &["fieldPath"])?;
    Ok(sq::FieldReference {
        field_path: string(&f, "fieldPath")?,
    })
}

fn cursor(v: &Json, at: &str) -> Result<proto::Cursor> {
    let c = JsonObj::new(v, at, &["values", "before"])?;
    Ok(proto::Cursor {
        values: messages(&c, "values", value)?,
        before: boolean(&c, "before")?,
    })
}

fn filter(v: &Json, at: &str) -> Result<sq::Filter> {
    use sq::filter::FilterType as F;
    let f = JsonObj::new(v, at, &["compositeFilter", "fieldFilter", "unaryFilter"])?;
    let filter_type = match oneof(&f, &["compositeFilter", "fieldFilter", "unaryFilter"])? {
        Some("compositeFilter") => message(&f, "compositeFilter", |v, at| {
            let c = JsonObj::new(v, at, &["op", "filters"])?;
            Ok(F::CompositeFilter(sq::CompositeFilter {
                op: opt_enum(&c, "op", COMPOSITE_OP)?,
                filters: messages(&c, "filters", filter)?,
            }))
        })?,
        Some("fieldFilter") => message(&f, "fieldFilter", |v, at| {
            let c = JsonObj::new(v, at, &["field", "op", "value"])?;
            Ok(F::FieldFilter(sq::FieldFilter {
                field: message(&c, "field", field_reference)?,
                op: opt_enum(&c, "op", FIELD_OP)?,
                value: message(&c, "value", value)?,
            }))
        })?,
        Some(_) => message(&f, "unaryFilter", |v, at| {
            let c = JsonObj::new(v, at, &["op", "field"])?;
            Ok(F::UnaryFilter(sq::UnaryFilter {
                op: opt_enum(&c, "op", UNARY_OP)?,
                operand_type: message(&c, "field", field_reference)?
                    .map(sq::unary_filter::OperandType::Field),
            }))
        })?,
        None => None,
    };
    Ok(sq::Filter { filter_type })
}

fn find_nearest(v: &Json, at: &str) -> Result<sq::FindNearest> {
    let f = JsonObj::new(
        v,
        at,
        &[
            "vectorField",
            "queryVector",
            "distanceMeasure",
            "limit",
            "distanceResultField",
            "distanceThreshold",
        ],
    )?;
    Ok(sq::FindNearest {
        vector_field: message(&f, "vectorField", field_reference)?,
        query_vector: message(&f, "queryVector", value)?,
        distance_measure: opt_enum(&f, "distanceMeasure", DISTANCE_MEASURE)?,
        limit: opt_int32(&f, "limit")?,
        distance_result_field: string(&f, "distanceResultField")?,
        distance_threshold: opt_double(&f, "distanceThreshold")?,
    })
}

/// A `StructuredAggregationQuery` message.
pub(crate) fn aggregation_query(v: &Json, at: &str) -> Result<proto::StructuredAggregationQuery> {
    use proto::structured_aggregation_query::{Aggregation, QueryType, aggregation};
    let a = JsonObj::new(v, at, &["structuredQuery", "aggregations"])?;
    Ok(proto::StructuredAggregationQuery {
        query_type: message(&a, "structuredQuery", structured_query)?
            .map(QueryType::StructuredQuery),
        aggregations: messages(&a, "aggregations", |v, at| {
            use aggregation::Operator as Op;
            let g = JsonObj::new(v, at, &["alias", "count", "sum", "avg"])?;
            let operator = match oneof(&g, &["count", "sum", "avg"])? {
                Some("count") => message(&g, "count", |v, at| {
                    let c = JsonObj::new(v, at, &["upTo"])?;
                    Ok(Op::Count(aggregation::Count {
                        up_to: opt_int64(&c, "upTo")?,
                    }))
                })?,
                Some("sum") => message(&g, "sum", |v, at| {
                    let s = JsonObj::new(v, at, &["field"])?;
                    Ok(Op::Sum(aggregation::Sum {
                        field: message(&s, "field", field_reference)?,
                    }))
                })?,
                Some(_) => message(&g, "avg", |v, at| {
                    let s = JsonObj::new(v, at, &["field"])?;
                    Ok(Op::Avg(aggregation::Avg {
                        field: message(&s, "field", field_reference)?,
                    }))
                })?,
                None => None,
            };
            Ok(Aggregation {
                alias: string(&g, "alias")?,
                operator,
            })
        })?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings() {
        for s in ["1", "-1", "+1.5", ".5", "5.", "1e3", "1E-3", "-0.0e+1"] {
            assert!(decimal_string(s), "{s}");
        }
        for s in [
            "", ".", "e3", "1e", "1e+", "inf", "NaN", "0x10", " 1", "1 ", "1.2.3", "--1",
        ] {
            assert!(!decimal_string(s), "{s}");
        }
    }
}
