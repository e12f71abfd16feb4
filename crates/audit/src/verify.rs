//! Reading the log back: `verify` (the whole chain and every checkpoint) and
//! `read_records` (a streaming reader for tail and index rebuild). Both read
//! line by line and never load the log whole.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;

use crate::error::AuditError;
use crate::event::{AuditEvent, AuditRecord};
use crate::format::{GENESIS, from_hex, parse_line, peek_seq, to_hex};
use crate::signer::Checkpoint;

/// The record log inside an audit directory.
pub const LOG_FILE: &str = "audit.log";
/// The checkpoint log inside an audit directory.
pub const CHECKPOINT_FILE: &str = "checkpoints.log";

/// The largest event JSON `append` accepts.
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// The longest line a reader accepts (an event plus the record framing).
pub(crate) const MAX_LINE_BYTES: usize = MAX_EVENT_BYTES + 1024;

/// What `verify` checked, when everything checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Complete records checked.
    pub records: u64,
    /// Checkpoints whose signature and hash were checked.
    pub checkpoints: u64,
    /// The last record's seq (0 for an empty log).
    pub last_seq: u64,
    /// The last record's hash, lowercase hex (64 zeros for an empty log).
    pub last_hash: String,
    /// The log ended in an incomplete line: a write in progress, or a crash
    /// mid-write (never acknowledged; reopening the log truncates it).
    pub partial_tail: bool,
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

impl VerifyFailure {
    /// The seq of the record named, if the failure names one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Self::HashMismatch { seq, .. }
            | Self::SequenceJump { seq, .. }
            | Self::PrevMismatch { seq, .. }
            | Self::CheckpointMismatch { seq, .. }
            | Self::CheckpointOutOfOrder { seq, .. } => Some(*seq),
            Self::TailCut { last_seq, .. } => Some(*last_seq),
            Self::MalformedRecord { .. }
            | Self::MalformedCheckpoint { .. }
            | Self::UnknownKey { .. }
            | Self::BadSignature { .. } => None,
        }
    }

    /// The 1-based line in `audit.log`, if the failure is about a record line.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::MalformedRecord { line, .. }
            | Self::HashMismatch { line, .. }
            | Self::SequenceJump { line, .. }
            | Self::PrevMismatch { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// One line read by [`LineReader`].
pub(crate) enum Line<'a> {
    /// A line that ended in `\n`: its 1-based number and bytes (newline stripped).
    Complete(u64, &'a [u8]),
    /// Bytes at the end of the file with no newline after them.
    Partial,
}

/// A bounded line reader.
pub(crate) struct LineReader {
    path: PathBuf,
    reader: BufReader<File>,
    buf: Vec<u8>,
    line_no: u64,
}

impl LineReader {
    pub(crate) fn open(path: &Path) -> Result<Self, AuditError> {
        let file = File::open(path).map_err(|e| AuditError::io("open", path, e))?;
        Ok(Self::new(path, file))
    }

    pub(crate) fn new(path: &Path, file: File) -> Self {
        Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(256 * 1024, file),
            buf: Vec::new(),
            line_no: 0,
        }
    }

    pub(crate) fn next_line(&mut self) -> Result<Option<Line<'_>>, AuditError> {
        self.buf.clear();
        let limit = (MAX_LINE_BYTES + 1) as u64;
        let n = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| AuditError::io("read", &self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            return Ok(Some(Line::Complete(self.line_no, &self.buf)));
        }
        if self.buf.len() > MAX_LINE_BYTES {
            return Err(AuditError::Corrupt {
                path: self.path.clone(),
                line: Some(self.line_no),
                what: format!("the line is longer than {MAX_LINE_BYTES} bytes"),
            });
        }
        Ok(Some(Line::Partial))
    }
}

/// Streams the records of a log in order. Ends quietly at an incomplete last
/// line (a write in progress). Checks each record's own hash, but not the
/// chain; use [`verify`] for that.
pub struct RecordReader {
    path: PathBuf,
    lines: LineReader,
    after_seq: u64,
    finished: bool,
}

impl std::fmt::Debug for RecordReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordReader")
            .field("path", &self.path)
            .field("line", &self.lines.line_no)
            .finish_non_exhaustive()
    }
}

/// Opens `dir/audit.log` for reading the records with a seq greater than
/// `after_seq` (0 for all), for `audit tail` and index rebuilds.
pub fn read_records(dir: &Path, after_seq: u64) -> Result<RecordReader, AuditError> {
    let path = dir.join(LOG_FILE);
    Ok(RecordReader {
        lines: LineReader::open(&path)?,
        path,
        after_seq,
        finished: false,
    })
}

impl RecordReader {
    /// The next record and, when asked, its event JSON exactly as written.
    pub(crate) fn next_record(
        &mut self,
        want_json: bool,
    ) -> Option<Result<(AuditRecord, Option<String>), AuditError>> {
        if self.finished {
            return None;
        }
        let result = self.read_one(want_json);
        match &result {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => self.finished = true,
        }
        result.transpose()
    }

    fn read_one(
        &mut self,
        want_json: bool,
    ) -> Result<Option<(AuditRecord, Option<String>)>, AuditError> {
        loop {
            let after = self.after_seq;
            let (line_no, line) = match self.lines.next_line()? {
                None | Some(Line::Partial) => return Ok(None),
                Some(Line::Complete(no, line)) => (no, line),
            };
            if peek_seq(line).is_some_and(|seq| seq <= after) {
                continue;
            }
            let path = &self.path;
            let corrupt = |what: String| AuditError::Corrupt {
                path: path.clone(),
                line: Some(line_no),
                what,
            };
            let raw =
                parse_line(line).map_err(|w| corrupt(format!("not a valid audit record ({w})")))?;
            if !raw.hash_matches() {
                return Err(corrupt(format!(
                    "record {}: hash does not match its contents",
                    raw.seq
                )));
            }
            let event: AuditEvent = serde_json::from_slice(raw.event)
                .map_err(|e| corrupt(format!("record {}: unreadable event ({e})", raw.seq)))?;
            let json = if want_json {
                Some(String::from_utf8_lossy(raw.event).into_owned())
            } else {
                None
            };
            let record = AuditRecord {
                seq: raw.seq,
                prev: to_hex(&raw.prev),
                hash: to_hex(&raw.hash),
                event,
            };
            return Ok(Some((record, json)));
        }
    }
}

impl Iterator for RecordReader {
    type Item = Result<AuditRecord, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record(false).map(|r| r.map(|(record, _)| record))
    }
}

/// A checkpoint read ahead, with any problem found in it held back until the
/// record stream reaches the seq it names (so failures come in log order).
struct PendingCheckpoint {
    index: u64,
    /// The seq it names, or 0 when it could not be read.
    seq: u64,
    checked: Result<Checkpoint, VerifyFailure>,
}

struct CheckpointStream<'k> {
    lines: Option<LineReader>,
    keys: &'k [(String, Vec<u8>)],
    last_seq: u64,
    count: u64,
}

impl CheckpointStream<'_> {
    fn next(&mut self) -> Result<Option<PendingCheckpoint>, AuditError> {
        let Some(lines) = self.lines.as_mut() else {
            return Ok(None);
        };
        let (index, line) = match lines.next_line()? {
            None | Some(Line::Partial) => return Ok(None),
            Some(Line::Complete(no, line)) => (no, line),
        };
        self.count += 1;
        let cp: Checkpoint = match serde_json::from_slice(line) {
            Ok(cp) => cp,
            Err(e) => {
                return Ok(Some(PendingCheckpoint {
                    index,
                    seq: 0,
                    checked: Err(VerifyFailure::MalformedCheckpoint {
                        index,
                        what: e.to_string(),
                    }),
                }));
            }
        };
        let seq = cp.seq;
        let checked = self.check(index, cp);
        if checked.is_ok() {
            self.last_seq = seq;
        }
        Ok(Some(PendingCheckpoint {
            index,
            seq,
            checked,
        }))
    }

    fn check(&self, index: u64, cp: Checkpoint) -> Result<Checkpoint, VerifyFailure> {
        if cp.seq == 0 || from_hex(&cp.hash).is_none() {
            return Err(VerifyFailure::MalformedCheckpoint {
                index,
                what: "`seq` must be at least 1 and `hash` 64 lowercase hex digits".into(),
            });
        }
        let Some((_, key)) = self.keys.iter().find(|(id, _)| *id == cp.key_id) else {
            return Err(VerifyFailure::UnknownKey {
                index,
                key_id: cp.key_id,
            });
        };
        if !cp.signature_valid(key) {
            return Err(VerifyFailure::BadSignature { index });
        }
        if cp.seq < self.last_seq {
            return Err(VerifyFailure::CheckpointOutOfOrder {
                index,
                seq: cp.seq,
                previous: self.last_seq,
            });
        }
        Ok(cp)
    }
}

/// Checks a whole audit directory: every record's seq is the previous plus
/// one, its `prev` is the previous record's hash and its hash recomputes;
/// every checkpoint is signed by one of `public_keys` (key id, raw Ed25519
/// public key) and matches the record it names; no checkpoint vouches for
/// records past the end of the log. Returns the first failure found, in log
/// order, as [`AuditError::Verify`].
pub fn verify(dir: &Path, public_keys: &[(String, Vec<u8>)]) -> Result<VerifyReport, AuditError> {
    let mut lines = LineReader::open(&dir.join(LOG_FILE))?;
    let cp_path = dir.join(CHECKPOINT_FILE);
    let cp_lines = match File::open(&cp_path) {
        Ok(file) => Some(LineReader::new(&cp_path, file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(AuditError::io("open", &cp_path, e)),
    };
    let mut cps = CheckpointStream {
        lines: cp_lines,
        keys: public_keys,
        last_seq: 0,
        count: 0,
    };
    let fail = |f: VerifyFailure| Err(AuditError::Verify(f));

    let mut prev_seq = 0u64;
    let mut prev_hash = GENESIS;
    let mut records = 0u64;
    let mut partial_tail = false;
    let mut checkpoints = 0u64;
    let mut pending = cps.next()?;

    loop {
        let (line_no, line) = match lines.next_line()? {
            None => break,
            Some(Line::Partial) => {
                partial_tail = true;
                break;
            }
            Some(Line::Complete(no, line)) => (no, line),
        };
        let raw = match parse_line(line) {
            Ok(raw) => raw,
            Err(what) => {
                return fail(VerifyFailure::MalformedRecord {
                    line: line_no,
                    what: what.to_owned(),
                });
            }
        };
        if !raw.hash_matches() {
            return fail(VerifyFailure::HashMismatch {
                seq: raw.seq,
                line: line_no,
            });
        }
        if raw.seq != prev_seq.wrapping_add(1) {
            return fail(VerifyFailure::SequenceJump {
                seq: raw.seq,
                line: line_no,
                previous: prev_seq,
            });
        }
        if raw.prev != prev_hash {
            return fail(VerifyFailure::PrevMismatch {
                seq: raw.seq,
                line: line_no,
            });
        }
        if let Err(e) = serde_json::from_slice::<IgnoredAny>(raw.event) {
            return fail(VerifyFailure::MalformedRecord {
                line: line_no,
                what: format!("the event is not valid JSON: {e}"),
            });
        }
        prev_seq = raw.seq;
        prev_hash = raw.hash;
        records += 1;

        while let Some(p) = pending.take_if(|p| p.seq <= prev_seq) {
            let cp = match p.checked {
                Ok(cp) => cp,
                Err(f) => return fail(f),
            };
            // INVARIANT: checkpoints are in seq order and each is consumed at
            // its own seq, so here `cp.seq == prev_seq`.
            if from_hex(&cp.hash) != Some(prev_hash) || cp.seq != prev_seq {
                return fail(VerifyFailure::CheckpointMismatch {
                    index: p.index,
                    seq: cp.seq,
                });
            }
            checkpoints += 1;
            pending = cps.next()?;
        }
    }

    if let Some(p) = pending {
        return match p.checked {
            Err(f) => fail(f),
            Ok(cp) => fail(VerifyFailure::TailCut {
                last_seq: prev_seq,
                checkpoint_seq: cp.seq,
                index: p.index,
            }),
        };
    }
    debug_assert_eq!(checkpoints, cps.count);
    Ok(VerifyReport {
        records,
        checkpoints,
        last_seq: prev_seq,
        last_hash: to_hex(&prev_hash),
        partial_tail,
    })
}
