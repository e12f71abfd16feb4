//! Latchkey's state store: what must survive a restart and be shared between
//! gateway nodes — signing keys (private halves already encrypted by the
//! caller), revocations and freezes, webhook delivery ids, browser sessions, the
//! audit index, small metadata blobs, and the embedded document store's rows
//! ([`DocumentRows`]).
//!
//! The [`Store`] trait is the whole interface; callers hold an
//! `Arc<dyn Store>` and never see SQL. [`SqliteStore`] is the embedded default;
//! [`PostgresStore`] is for several gateway nodes sharing one database.
//! This crate does not encrypt, sign or decide anything: it keeps rows.

mod documents;
mod error;
mod postgres;
mod postgres_documents;
mod postgres_schema;
mod schema;
mod shared;
mod sqlite;
mod sqlite_documents;
mod types;

pub use documents::{
    DocumentRow, DocumentRows, ExportCursor, KeyRange, RowCheck, RowCommitError, RowExpect,
    RowScan, RowSelection, RowWrite, ScanCheck, key_successor, prefix_end, prefix_range,
};
pub use error::StoreError;
pub use postgres::{PostgresOptions, PostgresStore};
pub use shared::{AuditNode, FeedState, RevocationChange, RevocationSnapshot, WitnessedCheckpoint};
pub use sqlite::{DEFAULT_AUDIT_LIMIT, SqliteStore};
pub use types::{
    AuditIndexRow, AuditQuery, Revocation, RevocationKind, RevocationMode, StoredSession,
    StoredSigningKey,
};

use std::sync::Arc;

use async_trait::async_trait;
use latchkey_core::UnixTime;

/// A shared, dynamically dispatched store.
pub type SharedStore = Arc<dyn Store>;

/// Everything Latchkey persists. Every method is a single durable operation:
/// when it returns `Ok`, the change survives a crash.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Adds a signing key. Fails with [`StoreError::Conflict`] if the kid exists.
    async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError>;
    /// All signing keys, oldest first.
    async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError>;
    /// Replaces the schedule (`signs_from`, `signs_until`, `published_until`) of a key.
    async fn update_signing_key_schedule(&self, key: &StoredSigningKey) -> Result<(), StoreError>;
    /// Removes a key (after every token it signed has expired).
    async fn delete_signing_key(&self, kid: &str) -> Result<(), StoreError>;

    /// Records a revocation or freeze. Idempotent on (kind, value, mode).
    async fn insert_revocation(&self, revocation: &Revocation) -> Result<(), StoreError>;
    /// Every revocation and freeze whose `expires_at` is unset or after `now`.
    async fn list_revocations(&self, now: UnixTime) -> Result<Vec<Revocation>, StoreError>;
    /// Lifts a revocation or freeze; returns whether one existed.
    async fn delete_revocation(
        &self,
        kind: RevocationKind,
        value: &str,
        mode: RevocationMode,
    ) -> Result<bool, StoreError>;

    /// Remembers a webhook delivery id; returns `false` if it was already seen
    /// (a replay).
    async fn record_delivery(
        &self,
        source: &str,
        delivery_id: &str,
        at: UnixTime,
    ) -> Result<bool, StoreError>;

    /// Remembers the digest of a signed webhook body; returns `false` if the
    /// same digest from the same source was seen less than `window` seconds
    /// before `at` (a replay under a new delivery id). A digest older than the
    /// window counts as new again, and digests past the window are pruned.
    /// Kept beside the delivery ids (same table, its own namespace).
    ///
    /// The default remembers digests as delivery ids with no window (a
    /// replay is refused forever: stricter, never looser); backends override
    /// it to let the window lapse.
    async fn record_signed_body(
        &self,
        source: &str,
        digest: &str,
        at: UnixTime,
        window: u64,
    ) -> Result<bool, StoreError> {
        let _ = window;
        self.record_delivery(&format!("body:{source}"), digest, at)
            .await
    }

    /// Adds audit index rows (idempotent on `seq`).
    async fn index_audit_events(&self, rows: &[AuditIndexRow]) -> Result<(), StoreError>;
    /// Rows matching the query, in ascending `seq` order.
    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditIndexRow>, StoreError>;
    /// The highest indexed `seq`, if any.
    async fn max_audit_seq(&self) -> Result<Option<u64>, StoreError>;
    /// Removes every audit index row, when the log it indexed is archived
    /// and a new log (whose seqs start again at 1) begins.
    async fn clear_audit_index(&self) -> Result<(), StoreError>;

    /// Adds a session. Fails with [`StoreError::Conflict`] if the id exists.
    async fn insert_session(&self, session: &StoredSession) -> Result<(), StoreError>;
    /// The session with this id hash, if it exists (expired or not: the
    /// caller decides).
    async fn get_session(&self, id_hash: &str) -> Result<Option<StoredSession>, StoreError>;
    /// Replaces a session's principal, secrets, `last_seen_at` and
    /// `id_token_expires_at` (after a refresh); `false` if it is gone.
    async fn update_session(&self, session: &StoredSession) -> Result<bool, StoreError>;
    /// Moves `last_seen_at` forward to `at`; `false` if the session is gone.
    async fn touch_session(&self, id_hash: &str, at: UnixTime) -> Result<bool, StoreError>;
    /// Ends one session; returns whether it existed.
    async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError>;
    /// Ends every session of a subject; returns how many there were.
    async fn delete_sessions_of(&self, subject: &str) -> Result<u64, StoreError>;
    /// Removes sessions past `expires_at` or idle since before
    /// `idle_before`; returns how many.
    async fn delete_expired_sessions(
        &self,
        now: UnixTime,
        idle_before: UnixTime,
    ) -> Result<u64, StoreError>;

    /// Reads a metadata blob.
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes a metadata blob (insert or replace).
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    // ---- Several nodes -------------------------------------------------
    //
    // The defaults below are right for a store one process owns (SQLite):
    // every change a node makes is applied to its own memory as it makes
    // it, so there is nothing to follow, no one to lead and no one to
    // witness for. A shared backend (PostgreSQL) overrides all of them.

    /// Whether several gateway processes share this store. When they do,
    /// revocations are followed through the change log, leader jobs take
    /// the leader lock, and transaction bindings live in the store.
    fn is_shared(&self) -> bool {
        false
    }

    /// This process's node name in a shared store (`[store] node`): the
    /// writer of the audit index rows it adds. Empty for an unshared store.
    fn node(&self) -> &str {
        ""
    }

    /// Every live revocation and the change-log head, read together.
    async fn revocation_snapshot(&self, now: UnixTime) -> Result<RevocationSnapshot, StoreError> {
        Ok(RevocationSnapshot {
            rows: self.list_revocations(now).await?,
            head: 0,
        })
    }

    /// Change-log entries after `after`, oldest first, at most `limit`.
    async fn revocation_changes(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<RevocationChange>, StoreError> {
        let _ = (after, limit);
        Ok(Vec::new())
    }

    /// A feed that moves when another node announces a change (PostgreSQL's
    /// `NOTIFY`). `None` when the backend has none: followers then rely on
    /// polling alone.
    fn change_feed(&self) -> Option<tokio::sync::watch::Receiver<FeedState>> {
        None
    }

    /// Whether this process leads `job` (key rotation, clean-up), taking
    /// the job's leader lock if it is free and keeping it while the process
    /// lives. The lock only spares work: every leader job is also correct
    /// when two nodes run it at once (row locks in its own transactions).
    async fn lead(&self, job: &str) -> Result<bool, StoreError> {
        let _ = job;
        Ok(true)
    }

    /// Adds `key` unless a stored key already signs after `after` (another
    /// node made the successor first); returns whether it was added. Checked
    /// and written in one transaction that locks the keys, so two nodes
    /// racing to rotate create one key.
    async fn insert_signing_key_unless_covered(
        &self,
        key: &StoredSigningKey,
        after: UnixTime,
    ) -> Result<bool, StoreError> {
        if self
            .list_signing_keys()
            .await?
            .iter()
            .any(|k| k.signs_until > after)
        {
            return Ok(false);
        }
        self.insert_signing_key(key).await?;
        Ok(true)
    }

    /// The named counter's value (0 before its first [`Store::next_counter`]).
    async fn counter(&self, name: &str) -> Result<u64, StoreError> {
        match self.get_meta(name).await? {
            None => Ok(0),
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| StoreError::Corrupt(format!("counter `{name}` is not a number"))),
        }
    }

    /// Adds one to the named counter and returns its new value (1 the
    /// first time), atomically across nodes. (The default keeps it as the
    /// metadata blob `name`, in decimal, as one process's store may.)
    async fn next_counter(&self, name: &str) -> Result<u64, StoreError> {
        let key = name;
        let current = match self.get_meta(key).await? {
            None => 0,
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| StoreError::Corrupt(format!("counter `{name}` is not a number")))?,
        };
        let next = current.saturating_add(1);
        self.put_meta(key, next.to_string().as_bytes()).await?;
        Ok(next)
    }

    /// Binds a Firestore transaction id to the caller that began it, until
    /// `expires_ms`. Only called on a shared store (a single node keeps
    /// bindings in memory).
    async fn bind_transaction(
        &self,
        transaction: &[u8],
        owner: &str,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        let _ = (transaction, owner, expires_ms);
        Err(StoreError::Unavailable(
            "this store is not shared; transaction bindings are kept in memory".into(),
        ))
    }

    /// The owner of a transaction binding that has not expired at `now_ms`.
    async fn transaction_owner(
        &self,
        transaction: &[u8],
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let _ = (transaction, now_ms);
        Err(StoreError::Unavailable(
            "this store is not shared; transaction bindings are kept in memory".into(),
        ))
    }

    /// Forgets a transaction binding (after its commit or rollback), and
    /// every binding expired at `now_ms`.
    async fn end_transaction(&self, transaction: &[u8], now_ms: u64) -> Result<(), StoreError> {
        let _ = (transaction, now_ms);
        Ok(())
    }

    /// Publishes this node's latest audit checkpoint into the shared store
    /// (a witness every node and `latchkey audit verify` can read), so a
    /// node's log cut short is detected.
    async fn witness_audit_checkpoint(
        &self,
        checkpoint: &WitnessedCheckpoint,
    ) -> Result<(), StoreError> {
        let _ = checkpoint;
        Ok(())
    }

    /// The checkpoints `node` published, oldest first.
    async fn witnessed_audit_checkpoints(
        &self,
        node: &str,
    ) -> Result<Vec<WitnessedCheckpoint>, StoreError> {
        let _ = node;
        Ok(Vec::new())
    }

    /// Every node that wrote audit rows or checkpoints, by name.
    async fn audit_nodes(&self) -> Result<Vec<AuditNode>, StoreError> {
        Ok(vec![AuditNode {
            node: self.node().to_owned(),
            max_seq: self.max_audit_seq().await?,
            checkpoint_seq: None,
        }])
    }
}
