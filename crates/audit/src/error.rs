use std::path::PathBuf;

use crate::verify::VerifyFailure;

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
