//! Latchkey's tamper-evident audit trail: the `record` step of the pipeline.
//!
//! Events are appended to `audit.log` in a directory as hash-chained JSON
//! lines; every record's hash covers its seq, the previous record's hash and
//! its event bytes, so changing, removing or reordering a record breaks the
//! chain. An Ed25519 key signs periodic checkpoints in `checkpoints.log`, so a
//! rewritten chain or a cut-off tail is detected too; the checkpoints form
//! their own chain from the empty log on, so none can be dropped, and
//! [`verify_with`] refuses records no checkpoint vouches for beyond one
//! interval, an index that knows more than the log, and a log that lacks or
//! contradicts a witnessed checkpoint. [`AuditLog::open`] verifies the log
//! the same way and refuses to extend one that does not verify; [`archive`]
//! moves such a log aside as evidence. [`AuditLog::append`]
//! answers only after the record is written and synced (group commit);
//! [`AuditLog::append_buffered`] queues a record nobody waits for (a read's
//! outcome), synced with the next batch or within a few milliseconds; and
//! [`verify`] names the first record that does not check out.
//!
//! No secret is recorded: anything token-shaped in an event (a JWT or JWE
//! anywhere in any field) is written only as its `jti` or its SHA-256.
//!
//! This crate does not decide anything, store keys, serve queries or ship
//! events elsewhere: the log file is the source of truth, and the store's
//! audit index is a convenience kept up to date from it.

mod error;
mod event;
mod format;
mod log;
mod redact;
mod signer;
mod verify;

pub use error::AuditError;
pub use event::{AuditEvent, AuditRecord, DecisionRecord, EventKind, Outcome, PrincipalRef};
pub use log::{Archived, AuditConfig, AuditLog, archive, last_logged_seq};
pub use signer::{AuditSigner, CHECKPOINT_VERSION, Checkpoint};
pub use verify::{
    CHECKPOINT_FILE, DEFAULT_CHECKPOINT_INTERVAL, LOG_FILE, MAX_EVENT_BYTES, RecordReader,
    VerifyFailure, VerifyOptions, VerifyReport, read_records, verify, verify_with,
};
