use std::path::PathBuf;

/// Why an audit operation failed. Exhaustive on purpose: an append that fails
/// for any reason means the request it records must be refused.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file or directory operation failed.
    #[error("audit log i/o failed: could not {action} `{}`: {source}", .path.display())]
    Io {
        /// What was being done (`open`, `write`, `read`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold what the writer wrote (refused at open, or met
    /// while reading records).
    #[error(
        "audit log `{}` is corrupt{}: {what}; run `latchkey audit verify` to find the first bad record",
        .path.display(),
        line_suffix(*.line)
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The 1-based line, when known.
        line: Option<u64>,
        /// What is wrong.
        what: String,
    },
    /// Another handle or process holds the log open for writing.
    #[error(
        "audit log `{}` is already open for writing by another process or handle; stop it first",
        .path.display()
    )]
    Locked {
        /// The log file.
        path: PathBuf,
    },
    /// `verify` found the first record or checkpoint that does not check out.
    #[error("audit log failed verification: {0}")]
    Verify(VerifyFailure),
    /// The log does not verify, so it is not extended: nothing signed by
    /// this writer may vouch for records written without the key.
    #[error(
        "audit log `{}` does not verify: {failure}. Investigate with `latchkey audit verify`; \
         to keep it as evidence and start a new log, run `latchkey audit archive`",
        .path.display()
    )]
    Refused {
        /// The log file.
        path: PathBuf,
        /// The first thing that does not check out.
        failure: VerifyFailure,
    },
    /// The log was shut down; nothing more can be recorded.
    #[error("the audit log is shut down; no more events can be recorded")]
    Closed,
    /// An earlier write or sync failed; the log refuses every append until it
    /// is reopened (fail closed).
    #[error(
        "the audit log cannot be written ({0}); requests are refused until the log is reopened"
    )]
    Unavailable(String),
    /// An event is too large to record; the request is refused.
    #[error(
        "an audit event of {bytes} bytes is larger than the {max}-byte limit; record less context"
    )]
    TooLarge {
        /// The event's JSON size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The checkpoint signing key could not be used.
    #[error("audit signing key rejected: {0}; supply an unencrypted PKCS#8 Ed25519 key")]
    Key(String),
    /// An event could not be turned into JSON.
    #[error("audit event could not be encoded: {0}")]
    Encode(#[source] serde_json::Error),
}

fn line_suffix(line: Option<u64>) -> String {
    match line {
        Some(n) => format!(" at line {n}"),
        None => String::new(),
    }
}

impl AuditError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The first record or checkpoint that does not check out. Each variant names
/// where (record seq and 1-based line, or 1-based checkpoint number) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyFailure {
    /// A line is not a record in the format the writer writes.
    #[error("line {line}: not a valid audit record ({what})")]
    MalformedRecord {
        /// 1-based line in `audit.log`.
        line: u64,
        /// What is malformed.
        what: String,
    },
    /// The stored hash is not the hash of the stored contents.
    #[error("record {seq} (line {line}): hash does not match its contents (a byte was changed)")]
    HashMismatch {
        /// The record's seq as stored.
        seq: u64,
        /// 1-based line.
        line: u64,
    },
    /// The seq is not one more than the previous record's.
    #[error(
        "record {seq} (line {line}): sequence jumps from {previous} to {seq} (a record was removed or reordered)"
    )]
    SequenceJump {
        /// The record's seq.
        seq: u64,
        /// 1-based line.
        line: u64,
        /// The previous record's seq (0 before the first).
        previous: u64,
    },
    /// `prev` is not the previous record's hash.
    #[error("record {seq} (line {line}): prev hash does not match record {}", .seq.saturating_sub(1))]
    PrevMismatch {
        /// The record's seq.
        seq: u64,
        /// 1-based line.
        line: u64,
    },
    /// A checkpoint line is not valid.
    #[error("checkpoint {index}: not a valid checkpoint ({what})")]
    MalformedCheckpoint {
        /// 1-based line in `checkpoints.log`.
        index: u64,
        /// What is malformed.
        what: String,
    },
    /// A checkpoint names a key that was not supplied.
    #[error("checkpoint {index}: signed by unknown key `{key_id}`; pass its public key to verify")]
    UnknownKey {
        /// 1-based line in `checkpoints.log`.
        index: u64,
        /// The key id it names.
        key_id: String,
    },
    /// A checkpoint's signature does not verify.
    #[error("checkpoint {index}: bad signature")]
    BadSignature {
        /// 1-based line in `checkpoints.log`.
        index: u64,
    },
    /// A checkpoint vouches for a seq lower than the checkpoint before it.
    #[error(
        "checkpoint {index}: vouches for record {seq} after a checkpoint at {previous} (checkpoints were reordered)"
    )]
    CheckpointOutOfOrder {
        /// 1-based line in `checkpoints.log`.
        index: u64,
        /// The seq it vouches for.
        seq: u64,
        /// The seq the checkpoint before it vouched for.
        previous: u64,
    },
    /// The record at a checkpoint's seq has a different hash than the one signed.
    #[error(
        "checkpoint {index}: record {seq} does not have the hash it signed (the records up to {seq} were rewritten)"
    )]
    CheckpointMismatch {
        /// 1-based line in `checkpoints.log`.
        index: u64,
        /// The seq it vouches for.
        seq: u64,
    },
    /// A checkpoint is in a format that did not chain checkpoints.
    #[error(
        "checkpoint {index}: written in the old format (v{v}), which does not chain checkpoints; \
         archive this log with `latchkey audit archive` to start a new one"
    )]
    OldCheckpointFormat {
        /// 1-based line in `checkpoints.log`.
        index: u64,
        /// The version found (0: none, the first format).
        v: u32,
    },
    /// A checkpoint does not follow the one before it.
    #[error(
        "checkpoint {index}: is number {n} where number {expected} should follow (checkpoints were removed or replaced)"
    )]
    CheckpointGap {
        /// 1-based line in `checkpoints.log`.
        index: u64,
        /// The number it carries.
        n: u64,
        /// The number that should follow.
        expected: u64,
    },
    /// The log has records but no checkpoint vouches for them.
    #[error(
        "record {seq} (line {line}): no signed checkpoint vouches for the log (checkpoints.log was emptied or removed)"
    )]
    NoCheckpoint {
        /// The first record with no checkpoint.
        seq: u64,
        /// 1-based line.
        line: u64,
    },
    /// Records after the last checkpoint run past when the next was due.
    #[error(
        "record {seq} (line {line}): written after a checkpoint was due, but no checkpoint after record {checkpoint_seq} vouches for it \
         (checkpoints were removed, or records added without the key)"
    )]
    Unvouched {
        /// The first record too late to be explained.
        seq: u64,
        /// 1-based line.
        line: u64,
        /// The seq the last checkpoint vouches for.
        checkpoint_seq: u64,
    },
    /// The index holds records the log does not.
    #[error(
        "the audit index holds records up to {index_seq} but the log ends at {log_seq} (the log was cut)"
    )]
    IndexAhead {
        /// The highest seq in the index.
        index_seq: u64,
        /// The last record in the log.
        log_seq: u64,
    },
    /// A witnessed checkpoint is not in the local chain.
    #[error(
        "the witness holds checkpoint {n} (record {seq}) but the log does not (the log or its checkpoints were cut or replaced)"
    )]
    WitnessMissing {
        /// The witnessed checkpoint's number.
        n: u64,
        /// The seq it vouches for.
        seq: u64,
    },
    /// A witnessed checkpoint differs from the local one of the same number.
    #[error(
        "checkpoint {n} (record {seq}) differs from the one the witness holds (the log was rewritten)"
    )]
    WitnessContradicts {
        /// The checkpoint's number.
        n: u64,
        /// The seq the local checkpoint vouches for.
        seq: u64,
    },
    /// A checkpoint vouches for records the log no longer has.
    #[error(
        "log ends at record {last_seq} but checkpoint at {checkpoint_seq} vouches for more (the tail was cut off)"
    )]
    TailCut {
        /// The last record in the log.
        last_seq: u64,
        /// The seq the checkpoint vouches for.
        checkpoint_seq: u64,
        /// 1-based line in `checkpoints.log`.
        index: u64,
    },
}
