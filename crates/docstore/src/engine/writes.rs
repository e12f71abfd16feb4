//! One `Write` of a commit: checked up front (names, masks, transforms,
//! values), then applied to the document's current state at commit time.

use std::collections::HashMap;

use latchkey_documents::{DatabaseName, DocPath};

use super::convert::{self, Stored, delete_field, get_field, set_field, timestamp};
use super::limits::{self, MAX_DEPTH};
use super::transforms::Transform;
use crate::Status;
use crate::proto::{
    Value, Write, WriteResult, precondition::ConditionType, value::ValueType, write,
};

/// What a write does to its document.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Replace every field.
    Set(HashMap<String, Value>),
    /// Set the masked paths present in `fields`, delete the masked paths
    /// absent from it, keep the rest.
    Merge {
        /// The new values.
        fields: HashMap<String, Value>,
        /// The update mask.
        mask: Vec<Vec<String>>,
    },
    /// Remove the document.
    Delete,
    /// Only the transforms (a `transform` write).
    TransformOnly,
}

/// What must hold of the document before the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pre {
    /// Nothing.
    None,
    /// It exists (`true`) or does not (`false`).
    Exists(bool),
    /// It exists with this update time (microseconds).
    UpdateTime(i64),
}

/// A checked write.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    /// The document.
    pub(crate) path: DocPath,
    /// Its store key.
    pub(crate) key: Vec<u8>,
    /// The change.
    pub(crate) op: Op,
    /// Transforms, in order, after the change.
    pub(crate) transforms: Vec<(Vec<String>, Transform)>,
    /// The precondition.
    pub(crate) pre: Pre,
}

fn checked_field_path(path: &str) -> Result<Vec<String>, Status> {
    let f = convert::field_path(path)?;
    if f.segments().len() > MAX_DEPTH {
        // The emulator's wording (confirmed there).
        return Err(Status::invalid(format!(
            "paths must have at most {MAX_DEPTH} elements"
        )));
    }
    Ok(f.segments().to_vec())
}

/// Checks a write's fields and returns them as Firestore stores them.
fn check_fields(fields: &HashMap<String, Value>) -> Result<HashMap<String, Value>, Status> {
    let mut out = fields.clone();
    for (k, v) in &mut out {
        limits::check_field_name(k)?;
        limits::check_value(v, 1, k)?;
        limits::normalize(v);
    }
    Ok(out)
}

/// Checks one write of a commit in `db`.
pub(crate) fn parse(db: &DatabaseName, w: &Write) -> Result<Parsed, Status> {
    let (name, op, mut transforms) = match &w.operation {
        None => return Err(Status::invalid("a write has no operation")),
        Some(write::Operation::Update(doc)) => {
            let fields = check_fields(&doc.fields)?;
            let op = match &w.update_mask {
                None => Op::Set(fields),
                Some(mask) => Op::Merge {
                    fields,
                    mask: mask
                        .field_paths
                        .iter()
                        .map(|p| checked_field_path(p))
                        .collect::<Result<_, _>>()?,
                },
            };
            (doc.name.as_str(), op, Vec::new())
        }
        Some(write::Operation::Delete(name)) => {
            if w.update_mask.is_some() || !w.update_transforms.is_empty() {
                return Err(Status::invalid(
                    "a delete cannot carry an update mask or field transforms",
                ));
            }
            (name.as_str(), Op::Delete, Vec::new())
        }
        Some(write::Operation::Transform(t)) => {
            if w.update_mask.is_some() || !w.update_transforms.is_empty() {
                return Err(Status::invalid(
                    "a transform write cannot carry an update mask or update transforms",
                ));
            }
            (
                t.document.as_str(),
                Op::TransformOnly,
                t.field_transforms.clone(),
            )
        }
    };
    transforms.extend(w.update_transforms.iter().cloned());
    let path = convert::document_path(db, name)?;
    let mut checked = Vec::with_capacity(transforms.len());
    for t in &transforms {
        // A field may be transformed more than once; the transforms apply in
        // order (the emulator accepts it and reports each result).
        let segments = checked_field_path(&t.field_path)?;
        let mut transform = Transform::parse(t)?;
        let top = segments.first().map(String::as_str).unwrap_or_default();
        for v in transform.operands_mut() {
            limits::check_value(v, segments.len() + 1, top)?;
            limits::normalize(v);
        }
        checked.push((segments, transform));
    }
    let pre = match &w.current_document {
        None => Pre::None,
        Some(p) => match &p.condition_type {
            None => Pre::None,
            Some(ConditionType::Exists(e)) => Pre::Exists(*e),
            Some(ConditionType::UpdateTime(t)) => {
                // The emulator's answer (confirmed there).
                if t.nanos % 1000 != 0 {
                    return Err(Status::invalid(
                        "timestamp cannot have more than microseconds precision",
                    ));
                }
                Pre::UpdateTime(convert::micros(t)?)
            }
        },
    };
    Ok(Parsed {
        key: convert::key(&path),
        path,
        op,
        transforms: checked,
        pre,
    })
}

/// Checks the precondition against the document's current state, with
/// Firestore's codes: a missing document that must exist is NOT_FOUND, an
/// existing one that must not is ALREADY_EXISTS, a stale update time is
/// FAILED_PRECONDITION.
pub(crate) fn check_precondition(
    db: &DatabaseName,
    w: &Parsed,
    current: Option<&Stored>,
) -> Result<(), Status> {
    let name = || db.resource_name(&w.path);
    match (w.pre, current) {
        (Pre::None, _) | (Pre::Exists(true), Some(_)) | (Pre::Exists(false), None) => Ok(()),
        (Pre::Exists(true), None) => Err(Status::not_found(match w.op {
            Op::Delete => format!("No document to delete: {}", name()),
            _ => format!("No document to update: {}", name()),
        })),
        (Pre::Exists(false), Some(_)) => Err(Status::already_exists(format!(
            "Document already exists: {}",
            name()
        ))),
        (Pre::UpdateTime(want), Some(doc)) if doc.update_time == want => Ok(()),
        // The emulator's wording, in microseconds (0 for a missing document).
        (Pre::UpdateTime(want), found) => Err(Status::failed_precondition(format!(
            "the stored version ({}) does not match the required base version ({want})",
            found.map_or(0, |d| d.update_time)
        ))),
    }
}

/// Applies a checked write (its precondition already holds) at
/// `commit_time`: the document's new state (`None` when deleted) and the
/// write's result.
pub(crate) fn apply(
    db: &DatabaseName,
    w: &Parsed,
    current: Option<&Stored>,
    commit_time: i64,
) -> Result<(Option<Stored>, WriteResult), Status> {
    if let Op::Delete = w.op {
        return Ok((
            None,
            WriteResult {
                update_time: None,
                transform_results: Vec::new(),
            },
        ));
    }
    let mut fields = match (&w.op, current) {
        (Op::Set(f), _) => f.clone(),
        (Op::Merge { fields, mask }, cur) => {
            let mut out = cur.map(|c| c.fields.clone()).unwrap_or_default();
            for path in mask {
                match get_field(fields, path) {
                    Some(v) => set_field(&mut out, path, v.clone()),
                    None => delete_field(&mut out, path),
                }
            }
            out
        }
        (Op::TransformOnly, cur) => cur.map(|c| c.fields.clone()).unwrap_or_default(),
        (Op::Delete, _) => HashMap::new(),
    };
    let now = Value {
        value_type: Some(ValueType::TimestampValue(timestamp(commit_time))),
    };
    let mut transform_results = Vec::with_capacity(w.transforms.len());
    for (path, t) in &w.transforms {
        let (value, result) = t.apply(get_field(&fields, path), &now);
        set_field(&mut fields, path, value);
        transform_results.push(result);
    }
    limits::check_document(db, &w.path, &fields)?;
    let (create_time, update_time) = match current {
        // Nothing changed: Firestore keeps the previous update time.
        Some(c) if c.fields == fields => (c.create_time, c.update_time),
        Some(c) => (c.create_time, commit_time),
        None => (commit_time, commit_time),
    };
    let doc = Stored {
        path: w.path.clone(),
        create_time,
        update_time,
        fields,
    };
    Ok((
        Some(doc),
        WriteResult {
            update_time: Some(timestamp(update_time)),
            transform_results,
        },
    ))
}
