//! Evaluating a [`Checked`] query over candidate documents.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::check::{Checked, CheckedCursor, Cmp, Field, OrderKey, Pred, never_equal};
use crate::encoding::encode_query_key;
use crate::order::{compare_values, type_rank};
use crate::proto::value::ValueType;
use crate::proto::{Document, MapValue, Value};

/// A candidate with what evaluation needs precomputed.
struct Row {
    doc: Document,
    /// `__name__` as the reference value it compares as.
    name: Value,
}

impl Row {
    fn get(&self, field: &Field) -> Option<&Value> {
        match field {
            Field::Name => Some(&self.name),
            Field::Path(path) => lookup(&self.doc.fields, path),
        }
    }
}

/// The value at `path` inside `fields`, through nested maps.
pub(super) fn lookup<'a>(fields: &'a HashMap<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut value = fields.get(first)?;
    for segment in rest {
        match &value.value_type {
            Some(ValueType::MapValue(m)) => value = m.fields.get(segment)?,
            _ => return None,
        }
    }
    Some(value)
}

fn is_null(v: &Value) -> bool {
    type_rank(v) == 0
}

fn is_nan(v: &Value) -> bool {
    type_rank(v) == 2
}

/// `==` as filters mean it: numeric across integers and doubles, and
/// never through null or NaN.
fn equal(field: &Value, value: &Value) -> bool {
    !never_equal(value) && compare_values(field, value) == Ordering::Equal
}

fn matches(pred: &Pred, row: &Row) -> bool {
    match pred {
        Pred::And(ps) => ps.iter().all(|p| matches(p, row)),
        Pred::Or(ps) => ps.iter().any(|p| matches(p, row)),
        Pred::Cmp(f, op, v) => row.get(f).is_some_and(|x| {
            // Bounded by type: only values of `v`'s type compare.
            !never_equal(v) && type_rank(x) == type_rank(v) && {
                let o = compare_values(x, v);
                match op {
                    Cmp::Lt => o == Ordering::Less,
                    Cmp::Le => o != Ordering::Greater,
                    Cmp::Gt => o == Ordering::Greater,
                    Cmp::Ge => o != Ordering::Less,
                }
            }
        }),
        Pred::Eq(f, v) => row.get(f).is_some_and(|x| equal(x, v)),
        Pred::Ne(f, v) => !is_null(v) && row.get(f).is_some_and(|x| !is_null(x) && !equal(x, v)),
        Pred::In(f, vs) => row.get(f).is_some_and(|x| vs.iter().any(|v| equal(x, v))),
        Pred::NotIn(f, vs) => {
            !vs.iter().any(is_null)
                && row
                    .get(f)
                    .is_some_and(|x| !is_null(x) && !vs.iter().any(|v| equal(x, v)))
        }
        Pred::ArrayContains(f, v) => {
            elements(row.get(f)).is_some_and(|es| es.iter().any(|e| equal(e, v)))
        }
        Pred::ArrayContainsAny(f, vs) => {
            elements(row.get(f)).is_some_and(|es| es.iter().any(|e| vs.iter().any(|v| equal(e, v))))
        }
        Pred::IsNan(f) => row.get(f).is_some_and(is_nan),
        Pred::IsNull(f) => row.get(f).is_some_and(is_null),
        Pred::IsNotNan(f) => row.get(f).is_some_and(|x| !is_null(x) && !is_nan(x)),
        Pred::IsNotNull(f) => row.get(f).is_some_and(|x| !is_null(x)),
    }
}

fn elements(value: Option<&Value>) -> Option<&[Value]> {
    match &value?.value_type {
        Some(ValueType::ArrayValue(a)) => Some(&a.values),
        _ => None,
    }
}

/// Appends one order component: the value's order key, complemented when
/// descending. Keys are prefix-free, so complementing reverses their order
/// and concatenations compare component by component.
fn push_component(value: &Value, descending: bool, out: &mut Vec<u8>) {
    let start = out.len();
    encode_query_key(value, out);
    if descending {
        for b in &mut out[start..] {
            *b = !*b;
        }
    }
}

/// A document's sort key under `orders`, or `None` when it lacks an
/// ordered field (and so is not a candidate).
fn sort_key(row: &Row, orders: &[OrderKey]) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(64);
    for o in orders {
        push_component(row.get(&o.field)?, o.descending, &mut key);
    }
    Some(key)
}

/// A cursor's key: its values as components of the first orders.
fn cursor_key(cursor: &CheckedCursor, orders: &[OrderKey]) -> Vec<u8> {
    let mut key = Vec::new();
    for (v, o) in cursor.values.iter().zip(orders) {
        push_component(v, o.descending, &mut key);
    }
    key
}

/// Compares a document's key with a cursor's, over the cursor's orders
/// only (a cursor is a prefix of the order).
fn versus_cursor(key: &[u8], cursor: &[u8]) -> Ordering {
    let n = key.len().min(cursor.len());
    match key[..n].cmp(&cursor[..n]) {
        // Prefix-free components: equal over the shorter length means the
        // document's first components are the cursor's.
        Ordering::Equal if key.len() >= cursor.len() => Ordering::Equal,
        Ordering::Equal => Ordering::Less,
        o => o,
    }
}

fn row(doc: Document) -> Row {
    Row {
        name: Value {
            value_type: Some(ValueType::ReferenceValue(doc.name.clone())),
        },
        doc,
    }
}

fn passes(checked: &Checked, row: &Row) -> bool {
    checked.filter.as_ref().is_none_or(|f| matches(f, row))
        && checked.orders.iter().all(|o| row.get(&o.field).is_some())
}

pub(super) fn matches_doc(checked: &Checked, doc: &Document) -> bool {
    passes(checked, &row(doc.clone()))
}

pub(super) fn run(checked: &Checked, candidates: Vec<Document>) -> Vec<Document> {
    let start = checked
        .start_at
        .as_ref()
        .map(|c| (cursor_key(c, &checked.orders), c.before));
    let end = checked
        .end_at
        .as_ref()
        .map(|c| (cursor_key(c, &checked.orders), c.before));

    let mut keyed: Vec<(Vec<u8>, Row)> = Vec::new();
    for doc in candidates {
        let row = row(doc);
        if let Some(f) = &checked.filter
            && !matches(f, &row)
        {
            continue;
        }
        let Some(key) = sort_key(&row, &checked.orders) else {
            continue;
        };
        if let Some((c, before)) = &start {
            let o = versus_cursor(&key, c);
            // startAt (before) keeps documents equal to the cursor;
            // startAfter does not.
            if o == Ordering::Less || (o == Ordering::Equal && !before) {
                continue;
            }
        }
        if let Some((c, before)) = &end {
            let o = versus_cursor(&key, c);
            // endBefore (before) drops documents equal to the cursor;
            // endAt keeps them.
            if o == Ordering::Greater || (o == Ordering::Equal && *before) {
                continue;
            }
        }
        keyed.push((key, row));
    }

    // Only the first offset + limit documents can be returned: select
    // them without sorting the rest.
    let wanted = checked.limit.map(|l| l.saturating_add(checked.offset));
    if let Some(n) = wanted {
        if n == 0 {
            return Vec::new();
        }
        if n < keyed.len() {
            keyed.select_nth_unstable_by(n - 1, |a, b| a.0.cmp(&b.0));
            keyed.truncate(n);
        }
    }
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    keyed
        .into_iter()
        .skip(checked.offset)
        .map(|(_, row)| match &checked.projection {
            None => row.doc,
            Some(paths) => project(row.doc, paths),
        })
        .collect()
}

/// The document with only the fields at `paths` (nested maps kept as far
/// as the paths reach).
fn project(mut doc: Document, paths: &[Vec<String>]) -> Document {
    let mut fields = HashMap::new();
    for path in paths {
        if let Some(v) = lookup(&doc.fields, path) {
            insert(&mut fields, path, v.clone());
        }
    }
    doc.fields = fields;
    doc
}

fn insert(fields: &mut HashMap<String, Value>, path: &[String], value: Value) {
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
    if let Some(ValueType::MapValue(m)) = &mut entry.value_type {
        insert(&mut m.fields, rest, value);
    }
}
