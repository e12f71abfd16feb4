/// Why a store operation failed. Callers fail closed on every variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened, reached or written.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// A row with the same key already exists.
    #[error("state store conflict: {0}")]
    Conflict(String),
    /// A stored row could not be decoded (corruption or a newer schema).
    #[error("state store holds an unreadable row: {0}")]
    Corrupt(String),
    /// A value cannot be stored (for example a number beyond the column's range).
    #[error("state store rejected a value: {0}")]
    Invalid(String),
    /// A migration failed at start.
    #[error("state store migration failed: {0}")]
    Migration(String),
}
