//! Firestore values (protobuf or REST JSON) turned into plain JSON, for
//! audit records that show what a write set.

use std::collections::HashMap;

use base64::Engine;
use googleapis_tonic_google_firestore_v1::google::firestore::v1::{Value, value::ValueType};
use serde_json::{Map, Value as Json};

use crate::error::ClassifyError;
use crate::rest::json::JsonObj;

/// Plain JSON for a protobuf document's fields.
pub(crate) fn proto_fields(
    fields: &HashMap<String, Value>,
    label: &str,
) -> Result<Json, ClassifyError> {
    let mut out = Map::new();
    for (k, v) in fields {
        out.insert(k.clone(), proto_value(v, &format!("{label}.{k}"))?);
    }
    Ok(Json::Object(out))
}

fn proto_value(v: &Value, label: &str) -> Result<Json, ClassifyError> {
    let Some(kind) = &v.value_type else {
        return Err(ClassifyError::Invalid {
            field: label.to_owned(),
            reason: "a value must have a type".into(),
        });
    };
    Ok(match kind {
        ValueType::NullValue(_) => Json::Null,
        ValueType::BooleanValue(b) => Json::Bool(*b),
        ValueType::IntegerValue(i) => Json::from(*i),
        ValueType::DoubleValue(d) => double(*d),
        ValueType::TimestampValue(t) => Json::String(t.to_string()),
        ValueType::StringValue(s) | ValueType::ReferenceValue(s) => Json::String(s.clone()),
        ValueType::BytesValue(b) => {
            Json::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        ValueType::GeoPointValue(p) => serde_json::json!({
            "latitude": double(p.latitude),
            "longitude": double(p.longitude),
        }),
        ValueType::ArrayValue(a) => Json::Array(
            a.values
                .iter()
                .enumerate()
                .map(|(i, v)| proto_value(v, &format!("{label}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        ValueType::MapValue(m) => proto_fields(&m.fields, label)?,
        ValueType::FieldReferenceValue(_)
        | ValueType::VariableReferenceValue(_)
        | ValueType::FunctionValue(_)
        | ValueType::PipelineValue(_) => return Err(not_in_write(label)),
    })
}

fn double(d: f64) -> Json {
    serde_json::Number::from_f64(d)
        .map(Json::Number)
        .unwrap_or_else(|| Json::String(d.to_string()))
}

fn not_in_write(label: &str) -> ClassifyError {
    ClassifyError::Invalid {
        field: label.to_owned(),
        reason: "references, functions and pipelines are not allowed in a write".into(),
    }
}

/// Plain JSON for a REST document's `fields` map.
pub(crate) fn rest_fields(fields: &Map<String, Json>, label: &str) -> Result<Json, ClassifyError> {
    let mut out = Map::new();
    for (k, v) in fields {
        out.insert(k.clone(), rest_value(v, &format!("{label}.{k}"))?);
    }
    Ok(Json::Object(out))
}

/// The keys of a REST `Value` object, one of which it holds.
pub(crate) const VALUE_KINDS: &[&str] = &[
    "nullValue",
    "booleanValue",
    "integerValue",
    "doubleValue",
    "timestampValue",
    "stringValue",
    "bytesValue",
    "referenceValue",
    "geoPointValue",
    "arrayValue",
    "mapValue",
    "fieldReferenceValue",
    "variableReferenceValue",
    "functionValue",
    "pipelineValue",
];

fn rest_value(v: &Json, label: &str) -> Result<Json, ClassifyError> {
    let obj = JsonObj::new(v, label, VALUE_KINDS)?;
    let mut kinds = obj.keys();
    let (Some(kind), None) = (kinds.next(), kinds.next()) else {
        return Err(ClassifyError::Invalid {
            field: label.to_owned(),
            reason: "a value must have exactly one type, such as `stringValue`".into(),
        });
    };
    let invalid = |reason: &str| ClassifyError::Invalid {
        field: format!("{label}.{kind}"),
        reason: reason.to_owned(),
    };
    let inner = obj.get(kind).unwrap_or(&Json::Null);
    Ok(match kind {
        "nullValue" => Json::Null,
        "booleanValue" => Json::Bool(
            obj.bool(kind)?
                .ok_or_else(|| invalid("expected true or false"))?,
        ),
        "integerValue" => {
            let n = match inner {
                Json::String(s) => s.parse::<i64>().ok(),
                Json::Number(n) => n.as_i64(),
                _ => None,
            };
            Json::from(n.ok_or_else(|| invalid("expected a 64-bit integer"))?)
        }
        "doubleValue" => match inner {
            Json::Number(_) => inner.clone(),
            Json::String(s) if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") => {
                inner.clone()
            }
            Json::String(s) => double(s.parse().map_err(|_| invalid("expected a number"))?),
            _ => return Err(invalid("expected a number")),
        },
        "timestampValue" | "stringValue" | "bytesValue" | "referenceValue" => match inner {
            Json::String(_) => inner.clone(),
            _ => return Err(invalid("expected a string")),
        },
        "geoPointValue" => {
            let p = JsonObj::new(
                inner,
                &format!("{label}.{kind}"),
                &["latitude", "longitude"],
            )?;
            let mut out = Map::new();
            for k in ["latitude", "longitude"] {
                let v = p.get(k).cloned().unwrap_or(Json::from(0));
                if !v.is_number() {
                    return Err(invalid("expected numbers"));
                }
                out.insert(k.to_owned(), v);
            }
            Json::Object(out)
        }
        "arrayValue" => {
            let a = JsonObj::new(inner, &format!("{label}.{kind}"), &["values"])?;
            match a.get("values") {
                None => Json::Array(Vec::new()),
                Some(Json::Array(items)) => Json::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| rest_value(v, &format!("{label}[{i}]")))
                        .collect::<Result<_, _>>()?,
                ),
                Some(_) => return Err(invalid("`values` must be an array")),
            }
        }
        "mapValue" => {
            let m = JsonObj::new(inner, &format!("{label}.{kind}"), &["fields"])?;
            match m.get("fields") {
                None => Json::Object(Map::new()),
                Some(Json::Object(f)) => rest_fields(f, label)?,
                Some(_) => return Err(invalid("`fields` must be an object")),
            }
        }
        _ => return Err(not_in_write(label)),
    })
}
