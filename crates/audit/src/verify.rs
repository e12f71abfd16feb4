//! Reading the log back: `verify` (the whole chain and every checkpoint) and
//! `read_records` (a streaming reader for tail and index rebuild). Both read
//! line by line and never load the log whole.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::AuditError;
pub use crate::error::VerifyFailure;
use crate::event::{AuditEvent, AuditRecord};
use crate::format::{GENESIS, from_hex, parse_line, peek_seq, to_hex};
use crate::signer::{CHECKPOINT_VERSION, Checkpoint};

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
    /// The length of the complete records, in bytes.
    pub log_bytes: u64,
    /// The last checkpoint, if the log has any.
    pub last_checkpoint: Option<Checkpoint>,
    /// Records after the last checkpoint (written since, or before a crash).
    pub unvouched: u64,
    /// Witnessed checkpoints checked against the local chain.
    pub witnessed: u64,
    /// The log ended in an incomplete line: a write in progress, or a crash
    /// mid-write (never acknowledged; reopening the log truncates it).
    pub partial_tail: bool,
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
            Self::NoCheckpoint { seq, .. }
            | Self::Unvouched { seq, .. }
            | Self::WitnessMissing { seq, .. }
            | Self::WitnessContradicts { seq, .. } => Some(*seq),
            Self::IndexAhead { log_seq, .. } => Some(*log_seq),
            Self::OldCheckpointFormat { .. } | Self::CheckpointGap { .. } => None,
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
            | Self::PrevMismatch { line, .. }
            | Self::NoCheckpoint { line, .. }
            | Self::Unvouched { line, .. } => Some(*line),
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
    /// Bounded by the file's length when opened: a writer appending beside
    /// the reader is not chased, and a device that never ends is not read.
    reader: BufReader<std::io::Take<File>>,
    buf: Vec<u8>,
    line_no: u64,
}

impl LineReader {
    pub(crate) fn open(path: &Path) -> Result<Self, AuditError> {
        let file = File::open(path).map_err(|e| AuditError::io("open", path, e))?;
        Ok(Self::new(path, file))
    }

    pub(crate) fn new(path: &Path, file: File) -> Self {
        let len = file.metadata().map_or(0, |m| m.len());
        Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(256 * 1024, file.take(len)),
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

/// What [`verify_with`] checks beyond the log and its own checkpoints.
#[derive(Debug, Clone)]
pub struct VerifyOptions<'a> {
    /// The checkpoint keys: key id and raw Ed25519 public key.
    pub keys: &'a [(String, Vec<u8>)],
    /// The configured checkpoint interval. Records after the last checkpoint
    /// that are later than this interval (and a few seconds) can explain are
    /// refused: a checkpoint would have been written while the writer ran.
    pub checkpoint_interval: Duration,
    /// The highest seq the store's audit index holds, when known. An index
    /// that knows more records than the log has means the log was cut.
    pub index_max_seq: Option<u64>,
    /// Checkpoints a witness holds. Each must be in the local checkpoint
    /// chain exactly as witnessed.
    pub witness: &'a [Checkpoint],
}

impl<'a> VerifyOptions<'a> {
    /// Options with `keys`, the default interval and no index or witness.
    pub fn new(keys: &'a [(String, Vec<u8>)]) -> Self {
        Self {
            keys,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            index_max_seq: None,
            witness: &[],
        }
    }
}

/// The default checkpoint interval (`[audit] checkpoint_interval`).
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

/// How late past its due time a checkpoint may be written (a slow disk, a
/// busy writer, event times taken a little before their append).
const CHECKPOINT_SLACK: Duration = Duration::from_secs(5);

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
    /// The last checkpoint read whose signature and chain link check out.
    last: Option<Checkpoint>,
    last_id: String,
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
        if let Ok(cp) = &checked {
            self.last_id = cp.id();
            self.last = Some(cp.clone());
        }
        Ok(Some(PendingCheckpoint {
            index,
            seq,
            checked,
        }))
    }

    fn check(&self, index: u64, cp: Checkpoint) -> Result<Checkpoint, VerifyFailure> {
        if cp.v != CHECKPOINT_VERSION {
            return Err(VerifyFailure::OldCheckpointFormat { index, v: cp.v });
        }
        if from_hex(&cp.hash).is_none() || from_hex(&cp.prev).is_none() {
            return Err(VerifyFailure::MalformedCheckpoint {
                index,
                what: "`hash` and `prev` must be 64 lowercase hex digits".into(),
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
        // INVARIANT: checkpoint n follows checkpoint n - 1 by its id, and the
        // first vouches for the empty log; so the chain has no gap and no
        // replaced link, and starts where the log starts.
        let (expected_n, expected_prev) = match &self.last {
            Some(last) => (last.n + 1, self.last_id.clone()),
            None => (1, to_hex(&GENESIS)),
        };
        if cp.n != expected_n || cp.prev != expected_prev {
            return Err(VerifyFailure::CheckpointGap {
                index,
                n: cp.n,
                expected: expected_n,
            });
        }
        match &self.last {
            None if cp.seq != 0 || cp.log_bytes != 0 => {
                return Err(VerifyFailure::MalformedCheckpoint {
                    index,
                    what: "the first checkpoint must vouch for the empty log (seq 0)".into(),
                });
            }
            Some(last) if cp.seq < last.seq || cp.log_bytes < last.log_bytes => {
                return Err(VerifyFailure::CheckpointOutOfOrder {
                    index,
                    seq: cp.seq,
                    previous: last.seq,
                });
            }
            _ => {}
        }
        Ok(cp)
    }
}

/// [`verify_with`] with `public_keys`, the default checkpoint interval and
/// no index or witness.
pub fn verify(dir: &Path, public_keys: &[(String, Vec<u8>)]) -> Result<VerifyReport, AuditError> {
    verify_with(dir, &VerifyOptions::new(public_keys))
}

/// Checks a whole audit directory: every record's seq is the previous plus
/// one, its `prev` is the previous record's hash and its hash recomputes;
/// the checkpoints form an unbroken signed chain from the empty log on, each
/// signed by one of the keys and matching the record (and log length) it
/// names; no checkpoint vouches for records past the end of the log; a log
/// with records has checkpoints, and the records after the last one are no
/// later than the checkpoint interval explains; the index knows no record
/// the log lacks; and every witnessed checkpoint is in the local chain as
/// witnessed. Returns the first failure found, in log order, as
/// [`AuditError::Verify`].
pub fn verify_with(dir: &Path, opts: &VerifyOptions<'_>) -> Result<VerifyReport, AuditError> {
    // INVARIANT: the checkpoints are measured before the log, so beside a
    // running writer every checkpoint read vouches only for records that
    // are in the part of the log read (a checkpoint follows its records).
    let cp_path = dir.join(CHECKPOINT_FILE);
    let cp_lines = match File::open(&cp_path) {
        Ok(file) => Some(LineReader::new(&cp_path, file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(AuditError::io("open", &cp_path, e)),
    };
    let mut lines = LineReader::open(&dir.join(LOG_FILE))?;
    let mut cps = CheckpointStream {
        lines: cp_lines,
        keys: opts.keys,
        last: None,
        last_id: String::new(),
        count: 0,
    };
    let fail = |f: VerifyFailure| Err(AuditError::Verify(f));
    let mut witness = Witnessed::new(opts.witness);

    let mut prev_seq = 0u64;
    let mut prev_hash = GENESIS;
    let mut offset = 0u64;
    let mut records = 0u64;
    let mut partial_tail = false;
    let mut checkpoints = 0u64;
    let mut pending = cps.next()?;
    // When the first record no checkpoint vouches for was written.
    let mut first_unvouched: Option<u64> = None;
    let interval_ms = opts.checkpoint_interval.as_millis() as u64;
    let slack_ms = opts.checkpoint_interval.max(CHECKPOINT_SLACK).as_millis() as u64;

    // Consumes the checkpoints that name the current record (or, before the
    // first record, the empty log).
    let mut take_checkpoints = |pending: &mut Option<PendingCheckpoint>,
                                cps: &mut CheckpointStream<'_>,
                                seq: u64,
                                hash: &[u8; 32],
                                offset: u64,
                                checkpoints: &mut u64|
     -> Result<(), AuditError> {
        while let Some(p) = pending.take_if(|p| p.seq <= seq) {
            let cp = p.checked.map_err(AuditError::Verify)?;
            // INVARIANT: checkpoints are in seq order and each is consumed at
            // its own seq, so here `cp.seq == seq`.
            if from_hex(&cp.hash) != Some(*hash) || cp.seq != seq || cp.log_bytes != offset {
                return Err(AuditError::Verify(VerifyFailure::CheckpointMismatch {
                    index: p.index,
                    seq: cp.seq,
                }));
            }
            witness.check(&cp)?;
            *checkpoints += 1;
            *pending = cps.next()?;
        }
        Ok(())
    };
    take_checkpoints(&mut pending, &mut cps, 0, &GENESIS, 0, &mut checkpoints)?;

    loop {
        let (line_no, line) = match lines.next_line()? {
            None => break,
            Some(Line::Partial) => {
                partial_tail = true;
                break;
            }
            Some(Line::Complete(no, line)) => (no, line),
        };
        let line_len = line.len() as u64 + 1;
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
        let time_ms = match serde_json::from_slice::<EventTime>(raw.event) {
            Ok(t) => t.time_ms,
            Err(e) => {
                return fail(VerifyFailure::MalformedRecord {
                    line: line_no,
                    what: format!("the event is not valid JSON with a `time_ms`: {e}"),
                });
            }
        };
        prev_seq = raw.seq;
        prev_hash = raw.hash;
        offset += line_len;
        records += 1;

        if pending.is_none() {
            // Past the last checkpoint: the writer signs one at most an
            // interval after the last, or right after the first record that
            // follows a longer pause. A record later than that means
            // checkpoints were removed, or records written without the key.
            let Some(last) = &cps.last else {
                return fail(VerifyFailure::NoCheckpoint {
                    seq: raw.seq,
                    line: line_no,
                });
            };
            let first = *first_unvouched.get_or_insert(time_ms);
            let due = first.max(last.time_ms.saturating_add(interval_ms));
            if time_ms > due.saturating_add(slack_ms) {
                return fail(VerifyFailure::Unvouched {
                    seq: raw.seq,
                    line: line_no,
                    checkpoint_seq: last.seq,
                });
            }
        }
        take_checkpoints(
            &mut pending,
            &mut cps,
            prev_seq,
            &prev_hash,
            offset,
            &mut checkpoints,
        )?;
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
    if records > 0 && checkpoints == 0 {
        return fail(VerifyFailure::NoCheckpoint { seq: 1, line: 1 });
    }
    debug_assert_eq!(checkpoints, cps.count);
    witness.finish()?;
    if let Some(index_seq) = opts.index_max_seq
        && index_seq > prev_seq
    {
        return fail(VerifyFailure::IndexAhead {
            index_seq,
            log_seq: prev_seq,
        });
    }
    let last_checkpoint = cps.last.take();
    Ok(VerifyReport {
        records,
        checkpoints,
        last_seq: prev_seq,
        last_hash: to_hex(&prev_hash),
        log_bytes: offset,
        unvouched: last_checkpoint
            .as_ref()
            .map_or(records, |cp| prev_seq - cp.seq),
        last_checkpoint,
        witnessed: opts.witness.len() as u64,
        partial_tail,
    })
}

/// The one field of an event `verify` reads.
#[derive(serde::Deserialize)]
struct EventTime {
    time_ms: u64,
}

/// Witnessed checkpoints by number, each struck off when the local chain
/// shows it exactly.
struct Witnessed<'w> {
    by_n: std::collections::BTreeMap<u64, Vec<&'w Checkpoint>>,
}

impl<'w> Witnessed<'w> {
    fn new(witness: &'w [Checkpoint]) -> Self {
        let mut by_n = std::collections::BTreeMap::<u64, Vec<&Checkpoint>>::new();
        for cp in witness {
            by_n.entry(cp.n).or_default().push(cp);
        }
        Self { by_n }
    }

    fn check(&mut self, local: &Checkpoint) -> Result<(), AuditError> {
        let Some(seen) = self.by_n.remove(&local.n) else {
            return Ok(());
        };
        let id = local.id();
        if seen.iter().any(|w| w.id() != id || w.sig != local.sig) {
            return Err(AuditError::Verify(VerifyFailure::WitnessContradicts {
                n: local.n,
                seq: local.seq,
            }));
        }
        Ok(())
    }

    /// Every witnessed checkpoint left was never met in the local chain.
    fn finish(&self) -> Result<(), AuditError> {
        match self.by_n.values().next().and_then(|v| v.first()) {
            Some(w) => Err(AuditError::Verify(VerifyFailure::WitnessMissing {
                n: w.n,
                seq: w.seq,
            })),
            None => Ok(()),
        }
    }
}
