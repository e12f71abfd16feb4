//! The rows of the embedded document store.
//!
//! The store keeps documents as opaque bytes keyed by (database, path key):
//! the path key is the document's order-preserving encoding (made by
//! `latchkey-docstore`), so a collection is an equality on `parent`, a
//! subtree is a range of `path`, and a collection group is `collection_id`
//! plus a range of `path`. Nothing here knows Firestore's values or names:
//! the same plain SQL (BLOB for BYTEA) serves SQLite and PostgreSQL.
//!
//! Correctness of a commit rests on the backend's own transaction
//! ([`DocumentRows::commit_rows`] checks and writes atomically), never on
//! an in-memory lock, so it holds across gateway nodes sharing one database.

use async_trait::async_trait;

use crate::StoreError;

/// One stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRow {
    /// The database it belongs to: `projects/{p}/databases/{d}`.
    pub database: String,
    /// The document's path key (order-preserving encoding of its path).
    pub path: Vec<u8>,
    /// The path key of the collection the document is in.
    pub parent: Vec<u8>,
    /// The id of the collection the document is in (for collection groups).
    pub collection_id: String,
    /// When the document was created, in microseconds since the Unix epoch.
    pub create_time: i64,
    /// When the document last changed, in microseconds since the Unix epoch.
    pub update_time: i64,
    /// The document's fields: a prost-encoded `google.firestore.v1.MapValue`.
    pub fields: Vec<u8>,
}

/// Which rows a scan visits. Rows come back in ascending `path` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowSelection {
    /// Rows directly in one collection: `parent` equals this key.
    Children {
        /// The collection's path key.
        parent: Vec<u8>,
    },
    /// Rows whose path key lies in the range.
    Range(KeyRange),
    /// Rows of one collection id whose path key lies in the range.
    Group {
        /// The collection id.
        collection_id: String,
        /// The range of path keys.
        range: KeyRange,
    },
}

/// A range of path keys: `start` inclusive, `end` exclusive (unbounded when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyRange {
    /// The smallest key in the range.
    pub start: Vec<u8>,
    /// The first key past the range, if any.
    pub end: Option<Vec<u8>>,
}

/// A scan: which rows, from where, how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowScan {
    /// Which rows.
    pub selection: RowSelection,
    /// Only rows whose path key is greater than this (for paging).
    pub after: Option<Vec<u8>>,
    /// At most this many rows (all when `None`).
    pub limit: Option<u32>,
}

/// What must hold of one row for a commit to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowCheck {
    /// The row's path key.
    pub path: Vec<u8>,
    /// The condition.
    pub expect: RowExpect,
}

/// A condition on one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowExpect {
    /// The row does not exist.
    Absent,
    /// The row exists.
    Present,
    /// The row exists with exactly this `update_time`.
    UpdateTime(i64),
}

/// What must hold of every row a scan selects for a commit to apply: a
/// transaction's query read exactly these rows (path key and update time,
/// in path order), so a row added, changed or removed there since (a
/// phantom included) aborts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanCheck {
    /// The rows the query read.
    pub selection: RowSelection,
    /// Each row's path key and update time, in ascending path order.
    pub rows: Vec<(Vec<u8>, i64)>,
}

/// One change a commit applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowWrite {
    /// Insert or replace the row with this key (its database is the commit's).
    Put(DocumentRow),
    /// Remove the row with this path key, if any.
    Delete(Vec<u8>),
}

/// Why a commit was not applied.
#[derive(Debug, thiserror::Error)]
pub enum RowCommitError {
    /// A check did not hold; nothing was written.
    #[error("document commit check {index} did not hold")]
    Conflict {
        /// The index of the first failed check: a row check's index, or
        /// the number of row checks plus a scan check's index.
        index: usize,
    },
    /// The store failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A page of an export: rows in (database, path) order, resumable after
/// the last one.
pub type ExportCursor = (String, Vec<u8>);

/// The document store's rows. Every method is one durable operation.
#[async_trait]
pub trait DocumentRows: Send + Sync + std::fmt::Debug {
    /// The rows at these path keys, in the same order (`None` where absent).
    async fn get_rows(
        &self,
        database: &str,
        paths: &[Vec<u8>],
    ) -> Result<Vec<Option<DocumentRow>>, StoreError>;

    /// The rows a scan selects, in ascending path order.
    async fn scan_rows(
        &self,
        database: &str,
        scan: &RowScan,
    ) -> Result<Vec<DocumentRow>, StoreError>;

    /// The smallest path key in `range`, if any row lies there. Lets the
    /// caller skip-scan a subtree (distinct collection ids under a
    /// document, documents that exist only through their subcollections)
    /// with one indexed probe per answer instead of reading every row.
    async fn first_path_in(
        &self,
        database: &str,
        range: &KeyRange,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Applies `writes` (in order) in one transaction, only if every row
    /// check and scan check holds when the transaction runs; nothing is
    /// written otherwise. Durable when it returns `Ok`.
    async fn commit_rows(
        &self,
        database: &str,
        checks: &[RowCheck],
        scans: &[ScanCheck],
        writes: &[RowWrite],
    ) -> Result<(), RowCommitError>;

    /// Up to `limit` rows of one database (or of every database when
    /// `None`), in (database, path) order, after `after`: one page of an
    /// export.
    async fn export_rows(
        &self,
        database: Option<&str>,
        after: Option<&ExportCursor>,
        limit: u32,
    ) -> Result<Vec<DocumentRow>, StoreError>;

    /// Inserts or replaces every row (each in its own database), in one
    /// transaction: an import.
    async fn import_rows(&self, rows: &[DocumentRow]) -> Result<(), StoreError>;
}

/// The first key past every key that starts with `prefix` (`None` when no
/// such key exists: an empty prefix or one of only `0xFF`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Every key that starts with `prefix`.
pub fn prefix_range(prefix: &[u8]) -> KeyRange {
    KeyRange {
        start: prefix.to_vec(),
        end: prefix_end(prefix),
    }
}

/// The immediate successor of `key` in byte order (the range after it starts here).
pub fn key_successor(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_carries_past_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
