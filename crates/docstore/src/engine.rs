//! [`DocumentStore`]: one method per Firestore RPC (owned by the engine
//! work).

/// The embedded document store.
#[derive(Debug)]
pub struct DocumentStore {}
