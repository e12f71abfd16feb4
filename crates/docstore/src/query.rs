//! Structured queries and aggregations over candidate documents (owned by
//! the query work). The engine fetches candidates by [`plan`] and hands them
//! to [`run`] or [`aggregate`]; everything Firestore means by a query
//! (filters, implicit order, cursors, offset, limit, projection) is here.

use latchkey_documents::DocPath;

use crate::Status;
use crate::proto::{AggregationResult, Document, StructuredAggregationQuery, StructuredQuery};

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
}

/// Checks a query as Firestore does and says where its candidates are.
/// `parent` is the request's parent path (the root or a document).
pub fn plan(parent: &DocPath, query: &StructuredQuery) -> Result<Scan, Status> {
    let _ = (parent, query);
    Err(Status::unimplemented("queries are not implemented yet"))
}

/// Runs a checked query over its candidates (any order): filters, orders
/// (with Firestore's implicit order), cursors, offset, limit, projection.
/// Documents carry their full resource names.
pub fn run(query: &StructuredQuery, candidates: Vec<Document>) -> Result<Vec<Document>, Status> {
    let _ = (query, candidates);
    Err(Status::unimplemented("queries are not implemented yet"))
}

/// Runs an aggregation (count, sum, avg) over its query's candidates.
pub fn aggregate(
    query: &StructuredAggregationQuery,
    candidates: Vec<Document>,
) -> Result<AggregationResult, Status> {
    let _ = (query, candidates);
    Err(Status::unimplemented(
        "aggregations are not implemented yet",
    ))
}
