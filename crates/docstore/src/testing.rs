//! Builders for values and documents in unit tests.

#![allow(dead_code)]

use prost::bytes::Bytes;

use crate::proto::value::ValueType;
use crate::proto::{ArrayValue, MapValue, Value};
use crate::values::LatLng;

pub(crate) fn v(t: ValueType) -> Value {
    Value {
        value_type: Some(t),
    }
}
pub(crate) fn null() -> Value {
    v(ValueType::NullValue(0))
}
pub(crate) fn boolean(b: bool) -> Value {
    v(ValueType::BooleanValue(b))
}
pub(crate) fn int(n: i64) -> Value {
    v(ValueType::IntegerValue(n))
}
pub(crate) fn double(x: f64) -> Value {
    v(ValueType::DoubleValue(x))
}
pub(crate) fn timestamp(seconds: i64, nanos: i32) -> Value {
    v(ValueType::TimestampValue(prost_types::Timestamp {
        seconds,
        nanos,
    }))
}
pub(crate) fn string(s: &str) -> Value {
    v(ValueType::StringValue(s.to_owned()))
}
pub(crate) fn bytes(b: &[u8]) -> Value {
    v(ValueType::BytesValue(Bytes::copy_from_slice(b)))
}
pub(crate) fn reference(r: &str) -> Value {
    v(ValueType::ReferenceValue(r.to_owned()))
}
pub(crate) fn geo(latitude: f64, longitude: f64) -> Value {
    v(ValueType::GeoPointValue(LatLng {
        latitude,
        longitude,
    }))
}
pub(crate) fn array(values: Vec<Value>) -> Value {
    v(ValueType::ArrayValue(ArrayValue { values }))
}
pub(crate) fn map(entries: Vec<(&str, Value)>) -> Value {
    v(ValueType::MapValue(MapValue {
        fields: entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    }))
}
