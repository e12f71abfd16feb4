//! Structured queries and aggregations over candidate documents. The
//! engine fetches candidates by [`plan`] (or [`plan_in`]) and hands them to
//! [`run`] or [`aggregate`]; everything Firestore means by a query
//! (filters, implicit order, cursors, offset, limit, projection) is here,
//! pure: no I/O, no async.
//!
//! Semantics follow Google's Firestore emulator, checked query by query
//! (the tests say which answers came from it):
//!
//! - A document is a candidate only if it has every field the query orders
//!   by, and the order includes every inequality field (`<`, `!=`,
//!   `not-in`, `IS_NOT_NAN`, `IS_NOT_NULL`) not ordered explicitly, in
//!   field path order, then `__name__`, all in the last order's direction.
//! - Comparisons are bounded by type: `a < 2` matches numbers only, and a
//!   comparison with null or NaN matches nothing.
//! - `==`, `in`, `array-contains(-any)` never match through null or NaN;
//!   `!=`, `not-in` and `IS_NOT_*` never match a missing field or null;
//!   `not-in` with a null among its values matches nothing.
//!
//! Sorting compares precomputed byte keys ([`crate::encoding`]), each order
//! key complemented when descending, and keeps only `offset + limit`
//! documents before sorting them, so a 100-result query over 10,000
//! candidates is one pass and a small sort.

mod aggregate;
mod check;
mod eval;

use latchkey_documents::{DatabaseName, DocPath};

use crate::Status;
use crate::proto::{Document, StructuredQuery};

pub use aggregate::aggregate;

/// Which documents a query can match, for the engine to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// The documents directly in one collection (`parent/collection_id`).
    Collection {
        /// The collection's path.
        collection: DocPath,
    },
    /// Every document at any depth under `under` (a document, or the root)
    /// whose own collection id is `collection_id` (any id when `None`, as
    /// in the `__name__` range queries `recursiveDelete` sends).
    Descendants {
        /// The document (or the root) the search is under.
        under: DocPath,
        /// The collection id documents must be in, if any.
        collection_id: Option<String>,
    },
    /// The documents directly in any collection directly under `under`:
    /// a kindless query without `all_descendants` (no `from`, or an empty
    /// collection id), which Firestore answers with the parent's
    /// documents one level down.
    Children {
        /// The document (or the root) whose collections are scanned.
        under: DocPath,
    },
}

impl Scan {
    /// Whether the document at `path` is one of this scan's candidates.
    pub fn contains(&self, path: &DocPath) -> bool {
        if !path.is_document() {
            return false;
        }
        let segments = path.segments();
        match self {
            Self::Collection { collection } => path.parent().as_ref() == Some(collection),
            Self::Descendants {
                under,
                collection_id,
            } => {
                segments.len() > under.segments().len()
                    && segments.starts_with(under.segments())
                    && collection_id
                        .as_deref()
                        .is_none_or(|c| path.collection_id() == Some(c))
            }
            Self::Children { under } => {
                segments.len() == under.segments().len() + 2
                    && segments.starts_with(under.segments())
            }
        }
    }
}

/// Checks a query as Firestore does and says where its candidates are.
/// `parent` is the request's parent path (the root or a document).
/// References in the query are checked for shape only; [`plan_in`] also
/// checks they point into the request's database.
pub fn plan(parent: &DocPath, query: &StructuredQuery) -> Result<Scan, Status> {
    plan_checked(parent, query, None)
}

/// [`plan`], also refusing references into another database than
/// `database` (as Firestore does, naming both).
pub fn plan_in(
    database: &DatabaseName,
    parent: &DocPath,
    query: &StructuredQuery,
) -> Result<Scan, Status> {
    plan_checked(parent, query, Some(database))
}

fn plan_checked(
    parent: &DocPath,
    query: &StructuredQuery,
    database: Option<&DatabaseName>,
) -> Result<Scan, Status> {
    if parent.is_collection() {
        return Err(Status::invalid(format!(
            "a query's parent must be a document or the database root, not the collection `{}`",
            latchkey_core::echo(&parent.to_string())
        )));
    }
    let checked = check::check(query, database)?;
    let under = parent.clone();
    Ok(
        match (checked.from.collection_id, checked.from.all_descendants) {
            (None, false) => Scan::Children { under },
            (collection_id, true) => Scan::Descendants {
                under,
                collection_id,
            },
            (Some(id), false) => Scan::Collection {
                collection: parent
                    .child(&id)
                    .map_err(|e| Status::invalid(e.to_string()))?,
            },
        },
    )
}

/// Runs a checked query over its candidates (any order): filters, orders
/// (with Firestore's implicit order), cursors, offset, limit, projection.
/// Documents carry their full resource names; the result is in the
/// query's order.
pub fn run(query: &StructuredQuery, candidates: Vec<Document>) -> Result<Vec<Document>, Status> {
    let checked = check::check(query, None)?;
    Ok(eval::run(&checked, candidates))
}

/// Whether `doc` passes the query's filters and has every field it orders
/// by: what a candidate must be before cursors, offset and limit apply
/// (for `Listen`, to tell whether a changed document concerns a target).
pub fn matches(query: &StructuredQuery, doc: &Document) -> Result<bool, Status> {
    let checked = check::check(query, None)?;
    Ok(eval::matches_doc(&checked, doc))
}

#[cfg(test)]
mod tests;
