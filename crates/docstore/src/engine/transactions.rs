//! Open transactions: what each has read, at which version.
//!
//! A read-write transaction remembers the version (update time, or absent)
//! of every document it read; its commit hands those versions to the
//! store's atomic commit as checks, so a document changed since it was read
//! aborts the transaction (`ABORTED`, which the clients retry). The check
//! runs inside the store's own transaction, so it holds across nodes; this
//! table only holds what each transaction read, on the node that began it
//! (a transaction is used on one node until the multi-node store routes
//! them).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use latchkey_store::ScanCheck;

use crate::Status;

/// Idle time after which a transaction is gone (the emulator's 60 s).
pub(crate) const IDLE_LIMIT_MS: u64 = 60_000;
/// Most transactions open at once on this node; past it the oldest idle
/// ones are dropped first, then new ones refused.
const MAX_OPEN: usize = 10_000;
/// Most queries one transaction may run (each is checked again at commit).
const MAX_SCANS: usize = 100;

/// What Firestore answers for an expired transaction (the Node client
/// retries on this message).
pub(crate) const EXPIRED: &str = "The referenced transaction has expired or is no longer valid.";
/// What the emulator answers for an unknown transaction (confirmed there).
pub(crate) const UNKNOWN: &str = "Invalid transaction.";

#[derive(Debug)]
struct Open {
    database: String,
    read_only: bool,
    /// A read-only transaction's read time (microseconds), if it has one.
    read_time: Option<i64>,
    /// Path key → update time when first read (`None`: it did not exist).
    reads: HashMap<Vec<u8>, Option<i64>>,
    /// The rows each query read, so a phantom aborts the commit too.
    scans: Vec<ScanCheck>,
    last_used_ms: u64,
}

/// Every open transaction of this node.
#[derive(Debug, Default)]
pub(crate) struct Transactions {
    open: Mutex<HashMap<Bytes, Open>>,
}

/// What a commit needs of its transaction.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Whether it was read-only.
    pub(crate) read_only: bool,
    /// The versions it read.
    pub(crate) reads: HashMap<Vec<u8>, Option<i64>>,
    /// The rows its queries read.
    pub(crate) scans: Vec<ScanCheck>,
}

impl Transactions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, Open>> {
        // A panic while holding the lock leaves plain data; keep using it.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a transaction with a fresh random id.
    pub(crate) fn begin(
        &self,
        database: &str,
        read_only: bool,
        read_time: Option<i64>,
        now_ms: u64,
    ) -> Result<Bytes, Status> {
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id)
            .map_err(|_| Status::internal("could not make a transaction id"))?;
        let id = Bytes::copy_from_slice(&id);
        let mut open = self.lock();
        if open.len() >= MAX_OPEN {
            open.retain(|_, t| now_ms.saturating_sub(t.last_used_ms) <= IDLE_LIMIT_MS);
        }
        if open.len() >= MAX_OPEN {
            return Err(Status::new(
                latchkey_documents::GrpcCode::ResourceExhausted,
                "too many open transactions; commit or roll back some and try again",
            ));
        }
        open.insert(
            id.clone(),
            Open {
                database: database.to_owned(),
                read_only,
                read_time,
                reads: HashMap::new(),
                scans: Vec::new(),
                last_used_ms: now_ms,
            },
        );
        Ok(id)
    }

    /// Marks transaction `id` used now; returns its read time, if any.
    /// Fails for an unknown or expired one.
    pub(crate) fn touch(
        &self,
        id: &[u8],
        database: &str,
        now_ms: u64,
    ) -> Result<Option<i64>, Status> {
        let mut open = self.lock();
        let t = live(&mut open, id, database, now_ms)?;
        t.last_used_ms = now_ms;
        Ok(t.read_time)
    }

    /// Records what a read in transaction `id` saw (the first version seen
    /// of each document counts). Fails for an unknown or expired one.
    pub(crate) fn record_reads(
        &self,
        id: &[u8],
        database: &str,
        now_ms: u64,
        reads: impl IntoIterator<Item = (Vec<u8>, Option<i64>)>,
        scan: Option<ScanCheck>,
    ) -> Result<(), Status> {
        let mut open = self.lock();
        let t = live(&mut open, id, database, now_ms)?;
        t.last_used_ms = now_ms;
        if !t.read_only {
            for (k, v) in reads {
                t.reads.entry(k).or_insert(v);
            }
            if let Some(scan) = scan
                && t.scans.len() < MAX_SCANS
            {
                t.scans.push(scan);
            } else if t.scans.len() >= MAX_SCANS {
                return Err(Status::invalid(format!(
                    "a transaction may run at most {MAX_SCANS} queries"
                )));
            }
        }
        Ok(())
    }

    /// Ends transaction `id` for a commit.
    pub(crate) fn finish(
        &self,
        id: &[u8],
        database: &str,
        now_ms: u64,
    ) -> Result<Finished, Status> {
        let mut open = self.lock();
        live(&mut open, id, database, now_ms)?;
        let t = open.remove(id).ok_or_else(|| Status::invalid(UNKNOWN))?;
        Ok(Finished {
            read_only: t.read_only,
            reads: t.reads,
            scans: t.scans,
        })
    }

    /// Ends transaction `id` without committing.
    pub(crate) fn rollback(&self, id: &[u8], database: &str, now_ms: u64) -> Result<(), Status> {
        let mut open = self.lock();
        live(&mut open, id, database, now_ms)?;
        open.remove(id);
        Ok(())
    }

    /// Drops a transaction (a retried one is replaced by its retry).
    pub(crate) fn forget(&self, id: &[u8]) {
        self.lock().remove(id);
    }
}

fn live<'a>(
    open: &'a mut HashMap<Bytes, Open>,
    id: &[u8],
    database: &str,
    now_ms: u64,
) -> Result<&'a mut Open, Status> {
    let expired = match open.get(id) {
        None => return Err(Status::invalid(UNKNOWN)),
        Some(t) => now_ms.saturating_sub(t.last_used_ms) > IDLE_LIMIT_MS,
    };
    if expired {
        open.remove(id);
        return Err(Status::invalid(EXPIRED));
    }
    match open.get_mut(id) {
        Some(t) if t.database == database => Ok(t),
        _ => Err(Status::invalid(UNKNOWN)),
    }
}
