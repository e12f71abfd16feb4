//! The writer: one thread owns `audit.log`, takes every queued append, writes
//! the batch with one write and one `fdatasync`, then answers them all
//! (group commit). Buffered appends (nobody waits for them) wait beside the
//! queue, so a busy writer takes them without a wake-up of their own; they
//! ride along with the next sync, or are synced within
//! [`AuditConfig::buffered_sync`].
//! Indexing and live tail happen after the sync, off the critical path.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flume::RecvTimeoutError;
use latchkey_core::SharedClock;
use latchkey_store::{AuditIndexRow, SharedStore};
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::AuditError;
use crate::event::{AuditEvent, AuditRecord, index_row};
use crate::format::{GENESIS, encode_line, from_hex, parse_line, record_hash, to_hex};
use crate::signer::{AuditSigner, Checkpoint, CheckpointBody};
use crate::verify::{CHECKPOINT_FILE, LOG_FILE, MAX_EVENT_BYTES, MAX_LINE_BYTES};

/// How many records a live-tail subscriber may fall behind before it sees
/// `RecvError::Lagged`.
const SUBSCRIBER_CAPACITY: usize = 4096;
/// How many written batches may wait for the indexer before batches are
/// dropped (the indexer then catches up from the log file).
const INDEX_QUEUE_BATCHES: usize = 256;
/// Rows per `index_audit_events` call.
const INDEX_CHUNK: usize = 1000;
/// How long the indexer gathers records before writing them to the index,
/// so that one index transaction takes many records. A caller that needs
/// the index current calls [`AuditLog::wait_indexed`], which cuts this short.
const INDEX_GATHER: Duration = Duration::from_millis(10);

/// Tuning for [`AuditLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// How often a signed checkpoint is written (only if records were added).
    pub checkpoint_interval: Duration,
    /// How many appends may wait for the writer; also the largest batch.
    pub queue_capacity: usize,
    /// How long a buffered append may stay written but unsynced when no
    /// waited-for append comes along to sync it.
    pub buffered_sync: Duration,
    /// Checkpoints a witness holds for this log (on several nodes, the ones
    /// this node published into the shared store): the log must hold each
    /// exactly, or it does not open (it was cut short or rewritten).
    pub witness: Vec<crate::Checkpoint>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: Duration::from_secs(10),
            queue_capacity: 8192,
            buffered_sync: Duration::from_millis(10),
            witness: Vec::new(),
        }
    }
}

/// A handle to the open audit log. Cheap to clone; every clone appends to the
/// same chain. `append` returns only once the record is on disk.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    tx: flume::Sender<Msg>,
    /// The most buffered appends that wait beside the queue.
    buffered_capacity: usize,
    live: broadcast::Sender<Arc<AuditRecord>>,
    shared: Arc<Shared>,
    tasks: Mutex<Tasks>,
    /// The last seq in the index; `None` without an index.
    indexed: Option<watch::Receiver<u64>>,
    /// Tells the indexer to stop gathering and write now.
    hurry: Arc<Notify>,
    /// The last checkpoint written.
    checkpoints: watch::Receiver<Checkpoint>,
    unvouched_at_open: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
struct Shared {
    last_seq: AtomicU64,
    /// Fast path for `failure`, read on every append.
    failed: AtomicBool,
    /// Set once a write or sync fails; the log refuses appends after that.
    failure: Mutex<Option<String>>,
    /// Buffered appends, which the writer takes whenever it wakes, so they
    /// cost no wake-up of their own while the log is busy.
    buffered: BufferedQueue,
    /// The writer sleeps with no buffered records to sync: the next
    /// buffered append must wake it (with [`Msg::Wake`]).
    writer_idle: AtomicBool,
}

/// Buffered appends waiting for the writer, oldest first.
#[derive(Default)]
struct BufferedQueue(Mutex<Vec<Pending>>);

impl BufferedQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for BufferedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedQueue")
            .field("len", &self.lock().len())
            .finish()
    }
}

impl Shared {
    fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_failure(&self, reason: &str) {
        let mut guard = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        guard.get_or_insert_with(|| reason.to_owned());
        self.failed.store(true, Ordering::Release);
    }
}

#[derive(Debug, Default)]
struct Tasks {
    index: Option<JoinHandle<()>>,
}

// Appends are by far the common message; boxing them would cost an
// allocation per append for nothing.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Append(Pending),
    /// Records that must be written in one batch (one sync).
    Batch(Vec<Pending>),
    /// Buffered appends wait while the writer sleeps with nothing to sync.
    Wake,
    Shutdown(oneshot::Sender<()>),
}

/// The answer to a waited-for append: its seq once durable.
type Reply = oneshot::Sender<Result<u64, AuditError>>;

struct Pending {
    event: AuditEvent,
    json: String,
    /// `None` for a buffered append, which nobody waits for.
    reply: Option<Reply>,
}

/// How long the writer may block waiting for a message.
enum Wait {
    /// Not at all: buffered appends came in before the writer said it sleeps.
    Take,
    /// Not at all: a sync or checkpoint is due.
    Due,
    Until(Instant),
    Forever,
}

/// A record written to the file, waiting for the sync that makes it durable
/// before it is answered, published and indexed.
struct Written {
    seq: u64,
    prev: [u8; 32],
    hash: [u8; 32],
    pending: Pending,
}

/// A written record on its way to the index, with its event JSON as written.
struct IndexItem {
    record: Arc<AuditRecord>,
    json: String,
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`. An incomplete last line (a crash
    /// mid-write, never acknowledged) is truncated with a warning. Then the
    /// whole log is verified as `latchkey audit verify` does, with the
    /// signer's key, the configured interval and the index's highest seq, and
    /// any failure refuses the log ([`AuditError::Refused`]): the gateway
    /// never extends, or signs over, a log that does not verify. A new log's
    /// first checkpoint vouches for the empty log. Starts the writer thread,
    /// the checkpoint timer and, with an `index`, the indexer, which first
    /// catches the index up with the log.
    ///
    /// Must be called inside a Tokio runtime.
    pub async fn open(
        dir: &Path,
        signer: AuditSigner,
        index: Option<SharedStore>,
        clock: SharedClock,
        config: AuditConfig,
    ) -> Result<AuditLog, AuditError> {
        let interval = config.checkpoint_interval.max(Duration::from_millis(10));
        let index_max_seq = match &index {
            Some(store) => match store.max_audit_seq().await {
                Ok(max) => Some(max.unwrap_or(0)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the audit index position; the log is verified without it");
                    None
                }
            },
            None => None,
        };
        let owned_dir = dir.to_path_buf();
        let open_clock = clock.clone();
        let witness = config.witness.clone();
        let (files, signer) = tokio::task::spawn_blocking(move || {
            open_files(
                &owned_dir,
                &signer,
                interval,
                index_max_seq,
                &witness,
                &open_clock,
            )
            .map(|files| (files, signer))
        })
        .await
        .map_err(|e| AuditError::Unavailable(format!("opening the log panicked: {e}")))??;
        if let Some((from, to)) = files.unvouched {
            tracing::warn!(
                from,
                to,
                "audit records after the last checkpoint (the log was not shut down cleanly); signing a checkpoint over them now"
            );
        }
        let (checkpoint_tx, checkpoint_rx) = watch::channel(files.last_checkpoint.clone());

        let queue_capacity = config.queue_capacity.max(1);
        let (tx, rx) = flume::bounded(queue_capacity);
        let (live, _) = broadcast::channel(SUBSCRIBER_CAPACITY);
        let shared = Arc::new(Shared {
            last_seq: AtomicU64::new(files.last_seq),
            ..Shared::default()
        });

        let mut tasks = Tasks::default();
        let hurry = Arc::new(Notify::new());
        let (index_tx, indexed) = match index {
            Some(store) => {
                let (itx, irx) = mpsc::channel(INDEX_QUEUE_BATCHES);
                let (progress, indexed) = watch::channel(0);
                tasks.index = Some(tokio::spawn(run_indexer(
                    Indexer {
                        dir: dir.to_path_buf(),
                        store,
                        progress,
                        hurry: hurry.clone(),
                    },
                    irx,
                    files.last_seq,
                )));
                (Some(itx), Some(indexed))
            }
            None => (None, None),
        };

        // The writer thread keeps std Instants (see `impl Writer`).
        #[allow(clippy::disallowed_methods)]
        let opened_at = Instant::now();
        let writer = Writer {
            log_path: dir.join(LOG_FILE),
            cp_path: dir.join(CHECKPOINT_FILE),
            log: files.log,
            checkpoints: files.checkpoints,
            signer,
            clock,
            interval,
            buffered_sync: config.buffered_sync,
            max_batch: queue_capacity,
            last_seq: files.last_seq,
            last_hash: files.last_hash,
            log_bytes: files.log_bytes,
            last_checkpoint_seq: files.last_checkpoint.seq,
            last_checkpoint_n: files.last_checkpoint.n,
            last_checkpoint_id: from_hex(&files.last_checkpoint.id()).unwrap_or(GENESIS),
            last_checkpoint_ms: files.last_checkpoint.time_ms,
            // A tail no checkpoint vouches for gets one at once.
            last_checkpoint_at: match files.unvouched {
                Some(_) => opened_at.checked_sub(interval).unwrap_or(opened_at),
                None => opened_at,
            },
            checkpoint_tx,
            failed: None,
            shared: shared.clone(),
            live: live.clone(),
            index_tx,
            buf: Vec::new(),
            unsynced: Vec::new(),
            unsynced_since: None,
            last_active: None,
        };
        std::thread::Builder::new()
            .name("latchkey-audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::io("start the writer thread for", dir, e))?;

        Ok(AuditLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                tx,
                buffered_capacity: queue_capacity,
                live,
                shared,
                tasks: Mutex::new(tasks),
                indexed,
                hurry,
                checkpoints: checkpoint_rx,
                unvouched_at_open: files.unvouched,
            }),
        })
    }

    /// The last checkpoint signed, updated as each new one is written: what
    /// a witness is sent.
    pub fn checkpoints(&self) -> watch::Receiver<Checkpoint> {
        self.inner.checkpoints.clone()
    }

    /// The records (first and last seq) that no checkpoint vouched for when
    /// the log was opened: written just before a crash, within the interval
    /// `verify` allows. The writer has signed over them since.
    pub fn unvouched_at_open(&self) -> Option<(u64, u64)> {
        self.inner.unvouched_at_open
    }

    /// Appends an event and returns its seq once the record is written and
    /// synced. An error means the event is not durably recorded and the
    /// request it describes must be refused.
    pub async fn append(&self, event: AuditEvent) -> Result<u64, AuditError> {
        let (reply, answer) = oneshot::channel();
        let pending = self.pending(event, Some(reply))?;
        self.inner
            .tx
            .send_async(Msg::Append(pending))
            .await
            .map_err(|_| AuditError::Closed)?;
        answer.await.map_err(|_| AuditError::Closed)?
    }

    /// Appends `events` as one batch: written together and made durable by
    /// one sync, in order, and answered once all are. Checked before any is
    /// sent: an event the log refuses (too large, the log failing) means
    /// none is written. An error means not every event is durable and the
    /// request they describe must be refused.
    pub async fn append_all(&self, mut events: Vec<AuditEvent>) -> Result<Vec<u64>, AuditError> {
        if events.len() <= 1 {
            return match events.pop() {
                Some(e) => self.append(e).await.map(|seq| vec![seq]),
                None => Ok(Vec::new()),
            };
        }
        let mut answers = Vec::with_capacity(events.len());
        let mut batch = Vec::with_capacity(events.len());
        for event in events {
            let (reply, answer) = oneshot::channel();
            batch.push(self.pending(event, Some(reply))?);
            answers.push(answer);
        }
        self.inner
            .tx
            .send_async(Msg::Batch(batch))
            .await
            .map_err(|_| AuditError::Closed)?;
        let mut seqs = Vec::with_capacity(answers.len());
        for answer in answers {
            seqs.push(answer.await.map_err(|_| AuditError::Closed)??);
        }
        Ok(seqs)
    }

    /// Queues an event without waiting for it to become durable: it is
    /// synced with the next waited-for append, or within
    /// [`AuditConfig::buffered_sync`]. Only for records whose loss in a crash
    /// would leave nothing acknowledged unrecorded, such as the outcome of a
    /// read whose decision is already durable. An error means the log
    /// refused the event (it is failing, closed, or the event is too large).
    pub async fn append_buffered(&self, event: AuditEvent) -> Result<(), AuditError> {
        let pending = self.pending(event, None)?;
        let inner = &*self.inner;
        if inner.tx.is_disconnected() {
            return Err(AuditError::Closed);
        }
        let overflow = {
            let mut queue = inner.shared.buffered.lock();
            if queue.len() < inner.buffered_capacity {
                queue.push(pending);
                None
            } else {
                Some(pending)
            }
        };
        let msg = match overflow {
            // A full side queue means a busy writer: wait for queue space
            // like any append.
            Some(pending) => Msg::Append(pending),
            None if inner.shared.writer_idle.swap(false, Ordering::SeqCst) => Msg::Wake,
            None => return Ok(()),
        };
        inner
            .tx
            .send_async(msg)
            .await
            .map_err(|_| AuditError::Closed)
    }

    /// Checks and encodes an event for the writer.
    fn pending(&self, event: AuditEvent, reply: Option<Reply>) -> Result<Pending, AuditError> {
        if let Some(reason) = self.inner.shared.failure() {
            return Err(AuditError::Unavailable(reason));
        }
        let mut event = event;
        let mut json = serde_json::to_string(&event).map_err(AuditError::Encode)?;
        // INVARIANT: no token-shaped string is written, published or indexed,
        // whichever field of the event carries it.
        if let Some(redacted) = crate::redact::redact_tokens(&json) {
            event = serde_json::from_str(&redacted).map_err(AuditError::Encode)?;
            json = redacted;
        }
        if json.len() > MAX_EVENT_BYTES {
            return Err(AuditError::TooLarge {
                bytes: json.len(),
                max: MAX_EVENT_BYTES,
            });
        }
        Ok(Pending { event, json, reply })
    }

    /// A live feed of records as they become durable. A receiver that falls
    /// more than a few thousand records behind gets `Lagged` and should
    /// re-read from the file with `read_records`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AuditRecord>> {
        self.inner.live.subscribe()
    }

    /// Waits until the index holds every record durable when called, so a
    /// query right after an action finds it (the index otherwise trails the
    /// log by a few milliseconds). False without an index, or if it does not
    /// catch up `within` (it is failing; the log is still complete).
    pub async fn wait_indexed(&self, within: Duration) -> bool {
        let Some(indexed) = &self.inner.indexed else {
            return false;
        };
        let target = self.last_seq();
        let mut indexed = indexed.clone();
        if *indexed.borrow_and_update() >= target {
            return true;
        }
        self.inner.hurry.notify_one();
        tokio::time::timeout(within, indexed.wait_for(|&seq| seq >= target))
            .await
            .is_ok_and(|changed| changed.is_ok())
    }

    /// The seq of the last durable record (0 for an empty log).
    pub fn last_seq(&self) -> u64 {
        self.inner.shared.last_seq.load(Ordering::Acquire)
    }

    /// The seq of the last record in the audit index; `None` for a log
    /// opened without one. With [`Self::last_seq`] it says how far the index
    /// trails the log (the gateway's index-lag metric).
    pub fn indexed_seq(&self) -> Option<u64> {
        self.inner.indexed.as_ref().map(|seq| *seq.borrow())
    }

    /// Why the log refuses appends, if an earlier write or sync failed.
    pub fn failure(&self) -> Option<String> {
        self.inner.shared.failure()
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Flushes queued appends, writes a final checkpoint, stops the writer
    /// and waits for the index to take every written record. Appends on any
    /// clone fail with [`AuditError::Closed`] afterwards. Idempotent.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        let (done, finished) = oneshot::channel();
        if self.inner.tx.send_async(Msg::Shutdown(done)).await.is_ok() {
            // Err means the writer already stopped: nothing left to flush.
            let _ = finished.await;
        }
        let index = {
            let mut tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
            tasks.index.take()
        };
        if let Some(index) = index {
            // The writer dropped its end of the index queue before answering,
            // so the indexer ends once it has drained the queue.
            let _ = index.await;
        }
        match self.inner.shared.failure() {
            Some(reason) => Err(AuditError::Unavailable(reason)),
            None => Ok(()),
        }
    }

    /// [`AuditLog::shutdown`], consuming this handle.
    pub async fn close(self) -> Result<(), AuditError> {
        self.shutdown().await
    }
}

/// What `open` found on disk.
struct OpenFiles {
    log: File,
    checkpoints: File,
    last_seq: u64,
    last_hash: [u8; 32],
    log_bytes: u64,
    last_checkpoint: Checkpoint,
    /// Records after the last checkpoint (a crash before it was written).
    unvouched: Option<(u64, u64)>,
}

/// Creates `dir` (and missing parents) readable only by its owner, whatever
/// the umask.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), AuditError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| AuditError::io("create directory", dir, e))
}

/// Opens (creating it readable and writable only by its owner, whatever the
/// umask) a file to append to.
pub(crate) fn open_private_append(path: &Path) -> Result<File, AuditError> {
    let mut opts = OpenOptions::new();
    opts.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map_err(|e| AuditError::io("open", path, e))
}

/// Locks the log, cuts incomplete last lines (a crash mid-write, never
/// acknowledged), and verifies the whole log and checkpoint chain as
/// `latchkey audit verify` would. A fresh log gets its first checkpoint,
/// which vouches for the empty log.
fn open_files(
    dir: &Path,
    signer: &AuditSigner,
    interval: Duration,
    index_max_seq: Option<u64>,
    witness: &[crate::Checkpoint],
    clock: &SharedClock,
) -> Result<OpenFiles, AuditError> {
    create_private_dir(dir)?;
    let log_path = dir.join(LOG_FILE);
    let cp_path = dir.join(CHECKPOINT_FILE);
    let mut log = open_private_append(&log_path)?;
    match log.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(AuditError::Locked { path: log_path });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(AuditError::io("lock", &log_path, e)),
    }
    let mut checkpoints = open_private_append(&cp_path)?;
    last_line(&mut log, &log_path)?;
    last_line(&mut checkpoints, &cp_path)?;

    // INVARIANT: the writer extends only a log that verifies, so nothing it
    // signs vouches for records written without the key.
    let keys = [(signer.key_id().to_owned(), signer.public_key())];
    let report = crate::verify::verify_with(
        dir,
        &crate::verify::VerifyOptions {
            keys: &keys,
            checkpoint_interval: interval,
            index_max_seq,
            witness,
        },
    )
    .map_err(|e| match e {
        AuditError::Verify(failure) => AuditError::Refused {
            path: log_path.clone(),
            failure,
        },
        other => other,
    })?;
    let last_hash = from_hex(&report.last_hash).unwrap_or(GENESIS);

    let last_checkpoint = match report.last_checkpoint {
        Some(cp) => cp,
        None => {
            // A new, empty log (verify refuses records without a checkpoint).
            let cp = signer.sign_checkpoint(
                CheckpointBody {
                    n: 1,
                    prev: GENESIS,
                    seq: 0,
                    hash: GENESIS,
                    log_bytes: 0,
                },
                clock.unix_millis(),
            );
            write_checkpoint(&mut checkpoints, &cp)
                .map_err(|e| AuditError::io("write", &cp_path, e))?;
            cp
        }
    };
    let unvouched = (report.last_seq > last_checkpoint.seq)
        .then_some((last_checkpoint.seq + 1, report.last_seq));

    // Make the files' directory entries durable (they may have just been created).
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io("sync directory", dir, e))?;

    Ok(OpenFiles {
        log,
        checkpoints,
        last_seq: report.last_seq,
        last_hash,
        log_bytes: report.log_bytes,
        last_checkpoint,
        unvouched,
    })
}

/// Appends one checkpoint line and syncs it.
fn write_checkpoint(file: &mut File, cp: &Checkpoint) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(cp).map_err(std::io::Error::other)?;
    line.push(b'\n');
    file.write_all(&line)?;
    file.sync_data()
}

/// The last complete line of a file (without its newline). An incomplete
/// last line is cut off (it was never acknowledged) and the cut synced.
fn last_line(file: &mut File, path: &Path) -> Result<Option<Vec<u8>>, AuditError> {
    let io = |action| move |e| AuditError::io(action, path, e);
    let len = file.metadata().map_err(io("stat"))?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut end = len;
    if read_byte(file, len - 1).map_err(io("read"))? != b'\n' {
        let keep = rfind_newline(file, len, path)?.map_or(0, |p| p + 1);
        tracing::warn!(
            path = %path.display(),
            dropped_bytes = len - keep,
            "audit file ends in an incomplete line (a crash mid-write); truncating it"
        );
        file.set_len(keep).map_err(io("truncate"))?;
        file.sync_all().map_err(io("sync"))?;
        end = keep;
    }
    if end == 0 {
        return Ok(None);
    }
    let start = rfind_newline(file, end - 1, path)?.map_or(0, |p| p + 1);
    let mut line = vec![0u8; (end - 1 - start) as usize];
    file.seek(SeekFrom::Start(start)).map_err(io("seek"))?;
    file.read_exact(&mut line).map_err(io("read"))?;
    Ok(Some(line))
}

/// The seq of the last complete record in the log in `dir`, read without
/// taking the writer's lock (0 for a missing or empty log). For a process
/// beside a running gateway, such as the CLI waiting for the index.
pub fn last_logged_seq(dir: &Path) -> Result<u64, AuditError> {
    let path = dir.join(LOG_FILE);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(AuditError::io("open", &path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| AuditError::io("stat", &path, e))?
        .len();
    // The last newline ends the last complete line; a partial line after it
    // is a write in progress.
    let Some(end) = rfind_newline(&mut file, len, &path)? else {
        return Ok(0);
    };
    let start = rfind_newline(&mut file, end, &path)?.map_or(0, |p| p + 1);
    let mut line = vec![0u8; (end - start) as usize];
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.read_exact(&mut line))
        .map_err(|e| AuditError::io("read", &path, e))?;
    let raw = parse_line(&line).map_err(|w| AuditError::Corrupt {
        path: path.clone(),
        line: None,
        what: format!("the last record is not a valid audit record ({w})"),
    })?;
    Ok(raw.seq)
}

fn read_byte(file: &mut File, at: u64) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(&mut b)?;
    Ok(b[0])
}

/// The position of the last `\n` before `before`, scanning back at most one
/// maximum line.
fn rfind_newline(file: &mut File, before: u64, path: &Path) -> Result<Option<u64>, AuditError> {
    let io = |e| AuditError::io("read", path, e);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut end = before;
    while end > 0 {
        if before - end > MAX_LINE_BYTES as u64 {
            return Err(AuditError::Corrupt {
                path: path.to_path_buf(),
                line: None,
                what: format!("the last line is longer than {MAX_LINE_BYTES} bytes"),
            });
        }
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        file.read_exact(&mut chunk[..n]).map_err(io)?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

/// Owns the files. Runs on its own thread so blocking writes and syncs never
/// stall the async runtime.
struct Writer {
    log_path: PathBuf,
    cp_path: PathBuf,
    log: File,
    checkpoints: File,
    signer: AuditSigner,
    clock: SharedClock,
    interval: Duration,
    buffered_sync: Duration,
    max_batch: usize,
    /// The last record written to the file (durable or not).
    last_seq: u64,
    last_hash: [u8; 32],
    /// The length of the records written.
    log_bytes: u64,
    last_checkpoint_seq: u64,
    last_checkpoint_n: u64,
    last_checkpoint_id: [u8; 32],
    /// When the last checkpoint was signed, on the [`SharedClock`]: its
    /// `time_ms`, which `verify` measures the unvouched tail from.
    last_checkpoint_ms: u64,
    /// When the last checkpoint was signed, on the monotonic clock.
    last_checkpoint_at: Instant,
    checkpoint_tx: watch::Sender<Checkpoint>,
    failed: Option<String>,
    shared: Arc<Shared>,
    live: broadcast::Sender<Arc<AuditRecord>>,
    index_tx: Option<mpsc::Sender<Vec<IndexItem>>>,
    buf: Vec<u8>,
    /// Buffered appends written but not yet synced, oldest first.
    unsynced: Vec<Written>,
    unsynced_since: Option<Instant>,
    /// When the last batch was taken.
    last_active: Option<Instant>,
}

// The writer is a blocking thread, not a task: it sleeps in
// `flume::Receiver::recv_deadline`, which takes a `std::time::Instant`, and
// no runtime's (pausable) clock reaches it. So it reads the monotonic clock
// itself; clippy.toml bans that everywhere else in favour of tokio's
// `Instant`. The times it records come from `self.clock`.
#[allow(clippy::disallowed_methods)]
impl Writer {
    fn run(mut self, rx: flume::Receiver<Msg>) {
        let mut batch: Vec<Pending> = Vec::new();
        loop {
            let mut at_deadline = false;
            let received = match self.prepare_wait() {
                Wait::Take => None,
                Wait::Due => {
                    at_deadline = true;
                    None
                }
                Wait::Forever => rx.recv().ok(),
                Wait::Until(deadline) => match rx.recv_deadline(deadline) {
                    Ok(msg) => Some(msg),
                    Err(RecvTimeoutError::Timeout) => {
                        at_deadline = true;
                        None
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        self.shared.writer_idle.store(false, Ordering::SeqCst);
                        self.finish();
                        return;
                    }
                },
            };
            self.shared.writer_idle.store(false, Ordering::SeqCst);
            // Buffered appends first: each was queued after the record it
            // follows from (a read's outcome after its durable decision).
            batch.append(&mut self.shared.buffered.lock());
            let mut shutdown = None;
            let mut next = received;
            if next.is_none() && rx.is_disconnected() && rx.is_empty() {
                // Every handle was dropped without a shutdown.
                self.commit(&mut batch);
                self.finish();
                return;
            }
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Append(p) => batch.push(p),
                    Msg::Batch(ps) => batch.extend(ps),
                    Msg::Wake => {}
                    Msg::Shutdown(done) => {
                        shutdown = Some(done);
                        break;
                    }
                }
                if batch.len() < self.max_batch {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(&mut batch);
            // Woken by a deadline: what is buffered has waited long enough.
            if at_deadline
                || self
                    .unsynced_since
                    .is_some_and(|since| since.elapsed() >= self.buffered_sync)
            {
                self.sync();
            }
            if self.checkpoint_due_in().is_zero() {
                self.checkpoint();
            }
            if let Some(done) = shutdown {
                for msg in rx.drain() {
                    match msg {
                        // Dropping the reply tells a waiting caller the log
                        // is closed.
                        Msg::Append(_) | Msg::Batch(_) | Msg::Wake => {}
                        Msg::Shutdown(other) => {
                            let _ = other.send(());
                        }
                    }
                }
                self.finish();
                // Close the files (and release the lock) and refuse further
                // appends before answering, so the caller may reopen the log
                // at once.
                drop(self);
                drop(rx);
                let _ = done.send(());
                return;
            }
        }
    }

    /// How long the writer may sleep. With nothing buffered to sync it
    /// announces that it sleeps, so a buffered append wakes it; a buffered
    /// append that came before the announcement is taken at once.
    fn prepare_wait(&mut self) -> Wait {
        let now = Instant::now();
        // After a batch the writer lingers for one sync window, taking
        // buffered appends when it wakes for any reason, so a busy log pays
        // no wake-up per buffered append.
        let linger = self
            .last_active
            .map(|at| at + self.buffered_sync)
            .filter(|&until| until > now);
        if self.unsynced_since.is_none() && linger.is_none() && self.failed.is_none() {
            self.shared.writer_idle.store(true, Ordering::SeqCst);
            if !self.shared.buffered.lock().is_empty() {
                self.shared.writer_idle.store(false, Ordering::SeqCst);
                return Wait::Take;
            }
        }
        match [self.next_deadline(now), linger]
            .into_iter()
            .flatten()
            .min()
        {
            Some(deadline) if deadline <= now => Wait::Due,
            Some(deadline) => Wait::Until(deadline),
            None => Wait::Forever,
        }
    }

    /// When the writer must wake up without a message: to sync buffered
    /// appends, or to write a checkpoint that has come due.
    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        if self.failed.is_some() {
            return None;
        }
        let flush = self.unsynced_since.map(|since| since + self.buffered_sync);
        let checkpoint =
            (self.last_seq > self.last_checkpoint_seq).then(|| now + self.checkpoint_due_in());
        match (flush, checkpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long until a checkpoint is due (zero: it is): once the interval
    /// has passed since the last one on either clock. On the monotonic
    /// clock, so a clock that stands still (a test's `FakeClock`, a wall
    /// clock set back) still gets a checkpoint every interval; on the
    /// [`SharedClock`], because `verify` measures the unvouched tail in its
    /// time (event and checkpoint `time_ms`), which runs ahead of the
    /// monotonic clock across a suspend or a clock set forward.
    fn checkpoint_due_in(&self) -> Duration {
        let monotonic = self
            .interval
            .saturating_sub(self.last_checkpoint_at.elapsed());
        let interval_ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        let on_clock = Duration::from_millis(
            self.last_checkpoint_ms
                .saturating_add(interval_ms)
                .saturating_sub(self.clock.unix_millis()),
        );
        monotonic.min(on_clock)
    }

    /// Writes and syncs what is buffered, writes a final checkpoint and lets
    /// go of the index queue.
    fn finish(&mut self) {
        let mut rest = std::mem::take(&mut *self.shared.buffered.lock());
        if !rest.is_empty() {
            self.commit(&mut rest);
        }
        self.checkpoint();
        self.index_tx = None;
    }

    /// Writes a batch. A batch with a waited-for append is synced (with any
    /// buffered appends before it) and answered; a batch of buffered appends
    /// only is left for the next sync.
    fn commit(&mut self, batch: &mut Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        self.last_active = Some(Instant::now());
        if let Some(reason) = &self.failed {
            for p in batch.drain(..) {
                if let Some(reply) = p.reply {
                    let _ = reply.send(Err(AuditError::Unavailable(reason.clone())));
                }
            }
            return;
        }
        self.buf.clear();
        let mut seq = self.last_seq;
        let mut prev = self.last_hash;
        let mut waited = false;
        let first_new = self.unsynced.len();
        for p in batch.drain(..) {
            seq += 1;
            let hash = record_hash(seq, &prev, p.json.as_bytes());
            encode_line(&mut self.buf, seq, &prev, &hash, p.json.as_bytes());
            waited |= p.reply.is_some();
            self.unsynced.push(Written {
                seq,
                prev,
                hash,
                pending: p,
            });
            prev = hash;
        }
        if let Err(e) = self.log.write_all(&self.buf) {
            self.fail(&e);
            return;
        }
        self.log_bytes += self.buf.len() as u64;
        self.last_seq = seq;
        self.last_hash = prev;
        if waited {
            self.sync();
        } else if first_new == 0 {
            self.unsynced_since = Some(Instant::now());
        }
    }

    /// Makes every written record durable, then publishes, answers and
    /// indexes them.
    fn sync(&mut self) {
        if self.unsynced.is_empty() {
            return;
        }
        if let Err(e) = self.log.sync_data() {
            self.fail(&e);
            return;
        }
        self.unsynced_since = None;
        self.shared.last_seq.store(self.last_seq, Ordering::Release);

        let live = self.live.receiver_count() > 0;
        let mut items = Vec::with_capacity(if self.index_tx.is_some() {
            self.unsynced.len()
        } else {
            0
        });
        for w in self.unsynced.drain(..) {
            let Pending { event, json, reply } = w.pending;
            // Published before it is answered: whoever learns that a
            // record is durable can already find it on the live tail.
            if live || self.index_tx.is_some() {
                let record = Arc::new(AuditRecord {
                    seq: w.seq,
                    prev: to_hex(&w.prev),
                    hash: to_hex(&w.hash),
                    event,
                });
                if live {
                    let _ = self.live.send(record.clone());
                }
                if self.index_tx.is_some() {
                    items.push(IndexItem { record, json });
                }
            }
            if let Some(reply) = reply {
                let _ = reply.send(Ok(w.seq));
            }
        }
        if let Some(tx) = &self.index_tx
            && !items.is_empty()
            && tx.try_send(items).is_err()
        {
            tracing::debug!("audit index queue full; the index will catch up from the log");
        }
    }

    /// After a failed write or sync: refuses every unsynced and later
    /// append until the log is reopened.
    fn fail(&mut self, e: &std::io::Error) {
        // INVARIANT: after a failed write or sync nothing more is written
        // until the log is reopened (the file's tail is unknown).
        let reason = format!("writing `{}` failed: {e}", self.log_path.display());
        tracing::error!(error = %reason, "audit log write failed; refusing every append until reopened");
        self.shared.set_failure(&reason);
        for w in self.unsynced.drain(..) {
            if let Some(reply) = w.pending.reply {
                let _ = reply.send(Err(AuditError::Unavailable(reason.clone())));
            }
        }
        self.unsynced_since = None;
        self.failed = Some(reason);
    }

    fn checkpoint(&mut self) {
        // A checkpoint vouches only for durable records.
        self.sync();
        if self.failed.is_some() || self.last_seq <= self.last_checkpoint_seq {
            return;
        }
        let cp = self.signer.sign_checkpoint(
            CheckpointBody {
                n: self.last_checkpoint_n + 1,
                prev: self.last_checkpoint_id,
                seq: self.last_seq,
                hash: self.last_hash,
                log_bytes: self.log_bytes,
            },
            self.clock.unix_millis(),
        );
        self.last_checkpoint_at = Instant::now();
        self.last_checkpoint_ms = cp.time_ms;
        match write_checkpoint(&mut self.checkpoints, &cp) {
            Ok(()) => {
                self.last_checkpoint_seq = cp.seq;
                self.last_checkpoint_n = cp.n;
                self.last_checkpoint_id = from_hex(&cp.id()).unwrap_or(GENESIS);
                self.checkpoint_tx.send_replace(cp);
            }
            Err(e) => {
                // INVARIANT: records no checkpoint vouches for stay within one
                // interval, which `verify` relies on; a checkpoint that cannot
                // be written fails the log like a record that cannot be.
                let reason = format!("writing `{}` failed: {e}", self.cp_path.display());
                tracing::error!(error = %reason, "audit checkpoint write failed; refusing every append until reopened");
                self.shared.set_failure(&reason);
                self.failed = Some(reason);
            }
        }
    }
}

/// What the indexer task owns.
struct Indexer {
    dir: PathBuf,
    store: SharedStore,
    /// Published after every index write, for [`AuditLog::wait_indexed`].
    progress: watch::Sender<u64>,
    hurry: Arc<Notify>,
}

impl Indexer {
    fn done(&self, seq: u64) -> u64 {
        self.progress.send_if_modified(|at| {
            let newer = seq > *at;
            if newer {
                *at = seq;
            }
            newer
        });
        seq
    }

    async fn catch_up(&self, after: u64, upto: u64) -> u64 {
        let done = catch_up(&self.dir, &self.store, after, upto).await;
        self.done(done)
    }

    async fn index(&self, rows: &[AuditIndexRow], after: u64) -> u64 {
        let done = index_rows(&self.store, rows, after).await;
        self.done(done)
    }

    /// Adds batches that arrive within [`INDEX_GATHER`] of the first, up to
    /// a chunk, unless someone waits for the index. False once the writer is
    /// gone.
    async fn gather(
        &self,
        rx: &mut mpsc::Receiver<Vec<IndexItem>>,
        items: &mut Vec<IndexItem>,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + INDEX_GATHER;
        while items.len() < INDEX_CHUNK {
            tokio::select! {
                more = rx.recv() => match more {
                    Some(more) => items.extend(more),
                    None => return false,
                },
                () = tokio::time::sleep_until(deadline) => break,
                () = self.hurry.notified() => break,
            }
        }
        true
    }
}

/// Feeds written records into the store's audit index, in seq order. Any gap
/// (a dropped batch, a failed insert, records written before this start) is
/// filled from the log file, which is the source of truth.
async fn run_indexer(ix: Indexer, mut rx: mpsc::Receiver<Vec<IndexItem>>, log_last_seq: u64) {
    let mut indexed: Option<u64> = None;
    match ix.store.max_audit_seq().await {
        Ok(max) => {
            let max = max.unwrap_or(0);
            if max > log_last_seq {
                tracing::warn!(
                    index_seq = max,
                    log_seq = log_last_seq,
                    "the audit index is ahead of the log; rebuild the index"
                );
            }
            ix.done(max);
            indexed = Some(if max < log_last_seq {
                ix.catch_up(max, log_last_seq).await
            } else {
                max
            });
        }
        Err(e) => tracing::warn!(error = %e, "could not read the audit index position; will retry"),
    }

    let mut last_written = log_last_seq;
    let mut open = true;
    while open {
        let Some(mut items) = rx.recv().await else {
            break;
        };
        open = ix.gather(&mut rx, &mut items).await;
        let Some(first) = items.first().map(|i| i.record.seq) else {
            continue;
        };
        last_written = items.last().map_or(last_written, |i| i.record.seq);
        let mut done = match indexed {
            Some(done) => done,
            None => match ix.store.max_audit_seq().await {
                Ok(max) => max.unwrap_or(0),
                Err(e) => {
                    tracing::warn!(error = %e, "audit index unavailable; records stay in the log only for now");
                    continue;
                }
            },
        };
        if done + 1 < first {
            done = ix.catch_up(done, first - 1).await;
        }
        indexed = Some(done);
        if done + 1 < first {
            continue;
        }
        let rows: Vec<AuditIndexRow> = items
            .into_iter()
            .filter(|i| i.record.seq > done)
            .map(|i| index_row(&i.record, i.json))
            .collect();
        indexed = Some(ix.index(&rows, done).await);
    }

    // The writer has stopped: one last try at anything a failure left out.
    let done = match indexed {
        Some(done) => Some(done),
        None => ix.store.max_audit_seq().await.ok().map(|m| m.unwrap_or(0)),
    };
    if let Some(done) = done
        && done < last_written
    {
        ix.catch_up(done, last_written).await;
    }
}

/// Indexes rows in chunks; returns the last seq known indexed.
async fn index_rows(store: &SharedStore, rows: &[AuditIndexRow], mut done: u64) -> u64 {
    for chunk in rows.chunks(INDEX_CHUNK) {
        match store.index_audit_events(chunk).await {
            Ok(()) => done = chunk.last().map_or(done, |r| r.seq),
            Err(e) => {
                tracing::warn!(error = %e, "could not index audit records; will catch up from the log");
                break;
            }
        }
    }
    done
}

/// Indexes the records in `(after, upto]` from the log file; returns the last
/// seq known indexed.
async fn catch_up(dir: &Path, store: &SharedStore, after: u64, upto: u64) -> u64 {
    let reader = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || crate::verify::read_records(&dir, after)).await
    };
    let mut reader = match reader {
        Ok(Ok(reader)) => reader,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not read the audit log to catch the index up");
            return after;
        }
        Err(e) => {
            tracing::warn!(error = %e, "audit index catch-up failed");
            return after;
        }
    };
    tracing::info!(
        from = after + 1,
        to = upto,
        "catching the audit index up with the log"
    );
    let mut done = after;
    while done < upto {
        let read = tokio::task::spawn_blocking(move || {
            let mut rows = Vec::new();
            let mut error = None;
            while rows.len() < INDEX_CHUNK {
                match reader.next_record(true) {
                    None => break,
                    Some(Ok((record, json))) => {
                        let last = record.seq >= upto;
                        if record.seq <= upto {
                            rows.push(index_row(&record, json.unwrap_or_default()));
                        }
                        if last {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            (reader, rows, error)
        })
        .await;
        let (back, rows, error) = match read {
            Ok(parts) => parts,
            Err(e) => {
                tracing::warn!(error = %e, "audit index catch-up failed");
                return done;
            }
        };
        reader = back;
        if rows.is_empty() {
            if let Some(e) = error {
                tracing::warn!(error = %e, "could not read the audit log to catch the index up");
            }
            return done;
        }
        let before = done;
        done = index_rows(store, &rows, done).await;
        if done == before || error.is_some() {
            if let Some(e) = error {
                tracing::warn!(error = %e, "could not read the audit log to catch the index up");
            }
            return done;
        }
    }
    done
}

/// Where [`archive`] put a log, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// The directory now holding the old `audit.log` and `checkpoints.log`.
    pub dir: PathBuf,
    /// The old log's last complete record (0 for an empty log).
    pub last_seq: u64,
    /// That record's hash as stored, lowercase hex (`None` when the last line
    /// is not a record: the log is corrupt there).
    pub last_hash: Option<String>,
}

/// Moves the log and its checkpoints out of the way, into
/// `dir/archive/<UTC time>/`, so the next [`AuditLog::open`] starts a new
/// log. Nothing is verified or changed: the archived files are the evidence.
/// Refused while a writer holds the log ([`AuditError::Locked`]). The caller
/// records the archive as the new log's first record, naming [`Archived`].
pub fn archive(dir: &Path, now_ms: u64) -> Result<Archived, AuditError> {
    let log_path = dir.join(LOG_FILE);
    let cp_path = dir.join(CHECKPOINT_FILE);
    let mut log = match OpenOptions::new().read(true).open(&log_path) {
        Ok(file) => file,
        Err(e) => return Err(AuditError::io("open", &log_path, e)),
    };
    match log.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(AuditError::Locked { path: log_path });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(AuditError::io("lock", &log_path, e)),
    }
    let (last_seq, last_hash) = match last_complete_line(&mut log, &log_path)? {
        None => (0, None),
        Some(line) => match parse_line(&line) {
            Ok(raw) => (raw.seq, Some(to_hex(&raw.hash))),
            Err(_) => (crate::format::peek_seq(&line).unwrap_or(0), None),
        },
    };
    let stamp = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| now_ms.to_string());
    let mut target = dir.join("archive").join(&stamp);
    let mut n = 1;
    while target.exists() {
        n += 1;
        target = dir.join("archive").join(format!("{stamp}-{n}"));
    }
    create_private_dir(&target)?;
    let moved_log = target.join(LOG_FILE);
    std::fs::rename(&log_path, &moved_log).map_err(|e| AuditError::io("move", &log_path, e))?;
    if cp_path.exists() {
        std::fs::rename(&cp_path, target.join(CHECKPOINT_FILE))
            .map_err(|e| AuditError::io("move", &cp_path, e))?;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io("sync directory", dir, e))?;
    drop(log);
    Ok(Archived {
        dir: target,
        last_seq,
        last_hash,
    })
}

/// The last line ending in a newline, read without changing the file.
fn last_complete_line(file: &mut File, path: &Path) -> Result<Option<Vec<u8>>, AuditError> {
    let len = file
        .metadata()
        .map_err(|e| AuditError::io("stat", path, e))?
        .len();
    let Some(end) = rfind_newline(file, len, path)? else {
        return Ok(None);
    };
    let start = rfind_newline(file, end, path)?.map_or(0, |p| p + 1);
    let mut line = vec![0u8; (end - start) as usize];
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.read_exact(&mut line))
        .map_err(|e| AuditError::io("read", path, e))?;
    Ok(Some(line))
}
