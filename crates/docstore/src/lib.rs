//! Latchkey's embedded document store: the Firestore v1 API's semantics
//! over rows in the state store, so the official Firestore clients work
//! against Latchkey with no Google account and no Java.
//!
//! The gateway decides and records every call exactly as it does for
//! Google's backend (`latchkey-documents` classifies, Cedar decides); this
//! crate only answers the calls it is handed, as typed protobuf messages.
//!
//! - [`order`]: Firestore's total order of values across types.
//! - [`encoding`]: an order-preserving byte encoding of values and document
//!   paths (after FoundationDB's tuple layer), so a collection or a subtree
//!   is a range scan and sorting is comparing bytes.
//! - [`values`]: numbers on one exact scale and numeric ids, shared by
//!   the order and the encoding.
//! - [`query`]: structured queries (filters, orders, cursors, offset,
//!   limit, projections) and aggregations over candidate documents.
//! - [`engine`]: [`DocumentStore`], one method per RPC: reads, commits with
//!   transforms and preconditions, transactions, `Listen`, and export and
//!   import of whole documents with their times.
//!
//! Storage is the state store's [`latchkey_store::DocumentRows`]: keys and
//! bytes only, so SQLite today and PostgreSQL later hold documents alike.

pub mod encoding;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod order;
#[cfg(test)]
mod proptests;
pub mod query;
mod status;
#[cfg(test)]
mod testing;
pub mod values;

pub use engine::DocumentStore;
pub use status::Status;

/// The protobuf types of `google.firestore.v1`.
pub use latchkey_documents::proto;
