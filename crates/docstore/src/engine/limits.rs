//! Firestore's limits on what a write may store, with its size rules
//! (the storage-size calculation Firestore documents: a document is its
//! name, its fields and 32 bytes).

use std::collections::HashMap;

use latchkey_documents::{DatabaseName, DocPath, ResourceName};

use crate::Status;
use crate::proto::{Value, value::ValueType};

/// Most bytes a document may take.
pub(crate) const MAX_DOCUMENT_BYTES: u64 = 1_048_576;
/// Most index entries a document may have.
pub(crate) const MAX_INDEX_ENTRIES: u64 = 20_000;
/// Most writes one commit may carry.
pub(crate) const MAX_WRITES: usize = 500;
/// Deepest a map may nest inside a document.
pub(crate) const MAX_DEPTH: usize = 20;

/// The storage size of a document name: each id plus one, plus 16.
pub(crate) fn name_size(path: &DocPath) -> u64 {
    path.segments()
        .iter()
        .map(|s| s.len() as u64 + 1)
        .sum::<u64>()
        + 16
}

/// The storage size of a value.
pub(crate) fn value_size(v: &Value) -> u64 {
    match &v.value_type {
        None | Some(ValueType::NullValue(_)) | Some(ValueType::BooleanValue(_)) => 1,
        Some(ValueType::IntegerValue(_))
        | Some(ValueType::DoubleValue(_))
        | Some(ValueType::TimestampValue(_)) => 8,
        Some(ValueType::GeoPointValue(_)) => 16,
        Some(ValueType::StringValue(s)) => s.len() as u64 + 1,
        Some(ValueType::BytesValue(b)) => b.len() as u64,
        Some(ValueType::ReferenceValue(r)) => match ResourceName::parse(r) {
            Ok((_, p)) => name_size(&p),
            Err(_) => r.len() as u64 + 1,
        },
        Some(ValueType::ArrayValue(a)) => a.values.iter().map(value_size).sum(),
        Some(ValueType::MapValue(m)) => fields_size(&m.fields),
        // Not storable; refused by `check_value` before sizes matter.
        Some(_) => 0,
    }
}

fn fields_size(fields: &HashMap<String, Value>) -> u64 {
    fields
        .iter()
        .map(|(k, v)| k.len() as u64 + 1 + value_size(v))
        .sum()
}

/// The storage size of a whole document.
pub(crate) fn document_size(path: &DocPath, fields: &HashMap<String, Value>) -> u64 {
    name_size(path) + fields_size(fields) + 32
}

/// Single-field index entries: ascending and descending for every value,
/// plus one array-contains entry per distinct array element.
fn index_entries(v: &Value) -> u64 {
    match &v.value_type {
        Some(ValueType::MapValue(m)) => 2 + m.fields.values().map(index_entries).sum::<u64>(),
        Some(ValueType::ArrayValue(a)) => 2 + a.values.len() as u64,
        _ => 2,
    }
}

/// Checks a document about to be stored against Firestore's limits.
pub(crate) fn check_document(
    database: &DatabaseName,
    path: &DocPath,
    fields: &HashMap<String, Value>,
) -> Result<(), Status> {
    let size = document_size(path, fields);
    if size > MAX_DOCUMENT_BYTES {
        return Err(Status::invalid(format!(
            "Document '{}' cannot be written because its size ({} bytes) exceeds the maximum \
             allowed size of {} bytes.",
            database.resource_name(path),
            group(size),
            group(MAX_DOCUMENT_BYTES)
        )));
    }
    let entries: u64 = fields.values().map(index_entries).sum();
    if entries > MAX_INDEX_ENTRIES {
        return Err(Status::invalid(format!(
            "too many index entries for entity: document '{}' would have {entries} index \
             entries; the limit is {MAX_INDEX_ENTRIES}",
            database.resource_name(path)
        )));
    }
    Ok(())
}

/// `1048576` as `1,048,576`, as Firestore prints sizes.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Firestore keeps timestamps to the microsecond: finer digits are
/// dropped, in values at any depth (as the emulator stores them).
pub(crate) fn normalize(v: &mut Value) {
    match &mut v.value_type {
        Some(ValueType::TimestampValue(t)) => t.nanos -= t.nanos.rem_euclid(1000),
        Some(ValueType::MapValue(m)) => m.fields.values_mut().for_each(normalize),
        Some(ValueType::ArrayValue(a)) => a.values.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// Checks a field name (a map key) as Firestore does: not empty, not
/// reserved (`__.*__`), with the emulator's wording.
pub(crate) fn check_field_name(name: &str) -> Result<(), Status> {
    if name.is_empty() {
        return Err(Status::invalid("The property.name is the empty string."));
    }
    if name.len() >= 4 && name.starts_with("__") && name.ends_with("__") {
        return Err(Status::invalid(format!("field name {name} is reserved")));
    }
    Ok(())
}

/// Checks a value a write stores in top-level field `field`, at `depth`
/// (1 for the field's own value): a type is set, maps and arrays nest at
/// most [`MAX_DEPTH`] deep (20 nested maps holding a value pass on the
/// emulator, 21 do not, with this wording), references name documents, and
/// nothing Firestore cannot store (pipeline-only values) appears.
pub(crate) fn check_value(v: &Value, depth: usize, field: &str) -> Result<(), Status> {
    let too_deep = || {
        Status::invalid(format!(
            "Property {field} contains an invalid nested entity."
        ))
    };
    match &v.value_type {
        None => Err(Status::invalid(
            "Cannot convert firestore.v1.Value with type unset.",
        )),
        Some(ValueType::MapValue(m)) => {
            if depth > MAX_DEPTH {
                return Err(too_deep());
            }
            for (k, v) in &m.fields {
                check_field_name(k)?;
                check_value(v, depth + 1, field)?;
            }
            Ok(())
        }
        Some(ValueType::ArrayValue(a)) => {
            if depth > MAX_DEPTH {
                return Err(too_deep());
            }
            for e in &a.values {
                if matches!(e.value_type, Some(ValueType::ArrayValue(_))) {
                    return Err(Status::invalid(
                        "Cannot convert an array value in an array value.",
                    ));
                }
                check_value(e, depth + 1, field)?;
            }
            Ok(())
        }
        Some(ValueType::ReferenceValue(r)) => {
            // Any database's document (the emulator accepts other databases).
            let (_, path) = ResourceName::parse(r)
                .map_err(|e| Status::invalid(format!("a reference value: {e}")))?;
            if !path.is_document() {
                return Err(Status::invalid(format!(
                    "the reference value `{}` does not name a document",
                    super::convert::short(r)
                )));
            }
            Ok(())
        }
        Some(ValueType::TimestampValue(t)) => super::convert::micros(t).map(drop),
        Some(ValueType::GeoPointValue(g)) => {
            if !(-90.0..=90.0).contains(&g.latitude) || !(-180.0..=180.0).contains(&g.longitude) {
                return Err(Status::invalid(
                    "a geo point's latitude must lie in [-90, 90] and its longitude in [-180, 180]",
                ));
            }
            Ok(())
        }
        Some(
            ValueType::NullValue(_)
            | ValueType::BooleanValue(_)
            | ValueType::IntegerValue(_)
            | ValueType::DoubleValue(_)
            | ValueType::StringValue(_)
            | ValueType::BytesValue(_),
        ) => Ok(()),
        Some(_) => Err(Status::invalid(
            "a value of this type cannot be stored in a document",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_firestore_rules() {
        // Firestore's worked example: `users/jeff/tasks/my_task_id` is 6+5+6+11+16.
        let p = DocPath::parse("users/jeff/tasks/my_task_id").unwrap();
        assert_eq!(name_size(&p), 44);
        let s = Value {
            value_type: Some(ValueType::StringValue("abc".into())),
        };
        assert_eq!(value_size(&s), 4);
        assert_eq!(group(1_048_576), "1,048,576");
        assert_eq!(group(999), "999");
    }

    #[test]
    fn deep_maps_are_refused() {
        let mut v = Value {
            value_type: Some(ValueType::IntegerValue(1)),
        };
        for _ in 0..20 {
            let mut m = crate::proto::MapValue::default();
            m.fields.insert("a".into(), v);
            v = Value {
                value_type: Some(ValueType::MapValue(m)),
            };
        }
        assert!(check_value(&v, 1, "a").is_ok());
        let mut m = crate::proto::MapValue::default();
        m.fields.insert("a".into(), v);
        let v = Value {
            value_type: Some(ValueType::MapValue(m)),
        };
        assert!(check_value(&v, 1, "a").is_err());
    }
}
