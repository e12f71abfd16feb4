//! Between the store's rows (keys, microseconds, prost bytes) and
//! Firestore's messages, plus the field-path operations writes and masks
//! share.

use std::collections::HashMap;

use latchkey_documents::{DatabaseName, DocPath, FieldPath, ResourceName};
use latchkey_store::{DocumentRow, KeyRange, StoreError, key_successor, prefix_end};
use prost::Message as _;
use prost_types::Timestamp;

use crate::Status;
use crate::encoding;
use crate::proto::{Document, DocumentMask, MapValue, Value, value::ValueType};

/// A document as the engine holds it between reading and writing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stored {
    /// Where it is.
    pub(crate) path: DocPath,
    /// Microseconds since the epoch.
    pub(crate) create_time: i64,
    /// Microseconds since the epoch.
    pub(crate) update_time: i64,
    /// Its fields.
    pub(crate) fields: HashMap<String, Value>,
}

/// The store's key of a path.
pub(crate) fn key(path: &DocPath) -> Vec<u8> {
    encoding::encode_path(path.segments())
}

/// Every key strictly under `path` (the whole database for the root).
pub(crate) fn subtree(path: &DocPath) -> KeyRange {
    let k = key(path);
    if path.is_root() {
        return KeyRange {
            end: prefix_end(&k),
            start: k,
        };
    }
    KeyRange {
        start: key_successor(&k),
        end: prefix_end(&k),
    }
}

/// Microseconds since the epoch as a protobuf timestamp.
pub(crate) fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// A protobuf timestamp in microseconds (Firestore keeps microseconds;
/// finer digits are dropped).
pub(crate) fn micros(ts: &Timestamp) -> Result<i64, Status> {
    // Firestore's range: 0001-01-01 to 9999-12-31.
    const MIN: i64 = -62_135_596_800;
    const MAX: i64 = 253_402_300_799;
    if !(MIN..=MAX).contains(&ts.seconds) || !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(Status::invalid(format!(
            "timestamp {}s {}ns is out of range: seconds must lie in 0001-01-01..9999-12-31 \
             and nanos in [0, 999999999]",
            ts.seconds, ts.nanos
        )));
    }
    Ok(ts.seconds * 1_000_000 + i64::from(ts.nanos / 1000))
}

/// A store failure as the caller sees it: the detail goes to the log.
pub(crate) fn store_status(e: StoreError) -> Status {
    tracing::warn!(error = %e, "document store failure");
    match e {
        StoreError::Corrupt(_) => Status::internal("the document store holds an unreadable row"),
        _ => Status::unavailable("the document store is unavailable; try again"),
    }
}

/// A row's document.
pub(crate) fn from_row(row: &DocumentRow) -> Result<Stored, Status> {
    let corrupt = |why: String| {
        tracing::warn!(%why, "unreadable document row");
        Status::internal("the document store holds an unreadable row")
    };
    let segments = encoding::decode_path(&row.path).map_err(|e| corrupt(e.to_string()))?;
    let path = DocPath::from_segments(segments).map_err(|e| corrupt(e.to_string()))?;
    let fields = MapValue::decode(row.fields.as_slice())
        .map_err(|e| corrupt(e.to_string()))?
        .fields;
    Ok(Stored {
        path,
        create_time: row.create_time,
        update_time: row.update_time,
        fields,
    })
}

/// A document's row in `database`.
pub(crate) fn to_row(database: &DatabaseName, doc: &Stored) -> DocumentRow {
    let parent = doc.path.parent().unwrap_or_else(DocPath::root);
    DocumentRow {
        database: database.to_string(),
        path: key(&doc.path),
        parent: key(&parent),
        collection_id: doc.path.collection_id().unwrap_or_default().to_owned(),
        create_time: doc.create_time,
        update_time: doc.update_time,
        fields: MapValue {
            fields: doc.fields.clone(),
        }
        .encode_to_vec(),
    }
}

/// The document message, with only the masked fields when a mask is given.
pub(crate) fn to_proto(database: &DatabaseName, doc: &Stored, mask: Option<&Mask>) -> Document {
    let fields = match mask {
        Some(m) => m.project(&doc.fields),
        None => doc.fields.clone(),
    };
    Document {
        name: database.resource_name(&doc.path),
        fields,
        create_time: Some(timestamp(doc.create_time)),
        update_time: Some(timestamp(doc.update_time)),
    }
}

/// Parses a document name and checks it is a document in `database`.
pub(crate) fn document_path(database: &DatabaseName, name: &str) -> Result<DocPath, Status> {
    let (db, path) = ResourceName::parse(name).map_err(|e| Status::invalid(e.to_string()))?;
    if &db != database {
        return Err(Status::invalid(format!(
            "`{}` is not in database `{database}`",
            short(name)
        )));
    }
    if !path.is_document() {
        return Err(Status::invalid(format!(
            "`{}` is not a document name (a document has an even number of path segments)",
            short(name)
        )));
    }
    Ok(path)
}

/// Parses a full document name into its database and path.
pub(crate) fn named_document(name: &str) -> Result<(DatabaseName, DocPath), Status> {
    let (db, _) = ResourceName::parse(name).map_err(|e| Status::invalid(e.to_string()))?;
    let path = document_path(&db, name)?;
    Ok((db, path))
}

/// Parses a parent name: the database's `documents` root or a document.
pub(crate) fn parent_path(name: &str) -> Result<(DatabaseName, DocPath), Status> {
    let (db, path) = ResourceName::parse(name).map_err(|e| Status::invalid(e.to_string()))?;
    if path.is_collection() {
        return Err(Status::invalid(format!(
            "`{}` is not a valid parent: a parent is the database's `documents` or a document",
            short(name)
        )));
    }
    Ok((db, path))
}

/// Parses a database name.
pub(crate) fn database(name: &str) -> Result<DatabaseName, Status> {
    DatabaseName::parse(name).map_err(|e| Status::invalid(e.to_string()))
}

/// Names echoed in errors stay short (at most 200 bytes).
pub(crate) use latchkey_documents::names::truncate as short;

/// Whether a field name is reserved: Firestore reserves `__.+__`.
pub(crate) fn is_reserved_field_name(segment: &str) -> bool {
    segment.len() >= 5 && segment.starts_with("__") && segment.ends_with("__")
}

/// Parses a mask or transform path as Firestore does. A segment matching
/// `__.+__` is reserved: the emulator refuses such a path with this
/// wording, except the path `__name__` itself, which it serves (both
/// confirmed there, by the gateway's boundary table).
pub(crate) fn field_path(path: &str) -> Result<FieldPath, Status> {
    let f = FieldPath::parse(path).map_err(|e| Status::invalid(e.to_string()))?;
    let whole_name = f.segments().len() == 1 && f.segments()[0] == "__name__";
    if !whole_name && f.segments().iter().any(|s| is_reserved_field_name(s)) {
        return Err(Status::invalid(format!(
            "Invalid reserved name in field path {}",
            short(path)
        )));
    }
    Ok(f)
}

/// The value at a field path.
pub(crate) fn get_field<'a>(
    fields: &'a HashMap<String, Value>,
    path: &[String],
) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let v = fields.get(first)?;
    if rest.is_empty() {
        return Some(v);
    }
    match &v.value_type {
        Some(ValueType::MapValue(m)) => get_field(&m.fields, rest),
        _ => None,
    }
}

/// Sets the value at a field path, making (or replacing non-map values
/// with) the maps on the way.
pub(crate) fn set_field(fields: &mut HashMap<String, Value>, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        fields.insert(first.clone(), value);
        return;
    }
    let entry = fields.entry(first.clone()).or_insert_with(|| Value {
        value_type: Some(ValueType::MapValue(MapValue::default())),
    });
    if !matches!(entry.value_type, Some(ValueType::MapValue(_))) {
        entry.value_type = Some(ValueType::MapValue(MapValue::default()));
    }
    if let Some(ValueType::MapValue(m)) = &mut entry.value_type {
        set_field(&mut m.fields, rest, value);
    }
}

/// Removes the value at a field path, if there is one (enclosing maps stay,
/// even when emptied).
pub(crate) fn delete_field(fields: &mut HashMap<String, Value>, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        fields.remove(first);
        return;
    }
    if let Some(Value {
        value_type: Some(ValueType::MapValue(m)),
    }) = fields.get_mut(first)
    {
        delete_field(&mut m.fields, rest);
    }
}

/// A read mask: the field paths a reply keeps.
#[derive(Debug, Clone)]
pub(crate) struct Mask {
    paths: Vec<Vec<String>>,
}

impl Mask {
    /// Parses a request's mask (`None` when the request has none).
    pub(crate) fn parse(mask: Option<&DocumentMask>) -> Result<Option<Self>, Status> {
        let Some(mask) = mask else { return Ok(None) };
        let paths = mask
            .field_paths
            .iter()
            .map(|p| field_path(p).map(|f| f.segments().to_vec()))
            .collect::<Result<_, _>>()?;
        Ok(Some(Self { paths }))
    }

    /// The fields the mask keeps.
    pub(crate) fn project(&self, fields: &HashMap<String, Value>) -> HashMap<String, Value> {
        let mut out = HashMap::new();
        for p in &self.paths {
            if let Some(v) = get_field(fields, p) {
                set_field(&mut out, p, v.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_in_microseconds() {
        for m in [0, 1, -1, 1_700_000_000_123_456, -62_135_596_800_000_000] {
            assert_eq!(micros(&timestamp(m)).unwrap(), m);
        }
        let t = Timestamp {
            seconds: 5,
            nanos: 1_999,
        };
        assert_eq!(micros(&t).unwrap(), 5_000_001);
        assert!(
            micros(&Timestamp {
                seconds: 1,
                nanos: -1
            })
            .is_err()
        );
    }

    #[test]
    fn field_paths_set_get_and_delete_through_maps() {
        let int = |i| Value {
            value_type: Some(ValueType::IntegerValue(i)),
        };
        let mut f = HashMap::new();
        let ab = vec!["a".to_owned(), "b".to_owned()];
        set_field(&mut f, &ab, int(1));
        assert_eq!(get_field(&f, &ab), Some(&int(1)));
        // A scalar on the way is replaced by a map.
        set_field(
            &mut f,
            &["a".to_owned(), "b".to_owned(), "c".to_owned()],
            int(2),
        );
        assert!(matches!(
            get_field(&f, &ab).and_then(|v| v.value_type.as_ref()),
            Some(ValueType::MapValue(_))
        ));
        delete_field(&mut f, &ab);
        assert!(get_field(&f, &ab).is_none());
        assert!(get_field(&f, &["a".to_owned()]).is_some());
    }
}
