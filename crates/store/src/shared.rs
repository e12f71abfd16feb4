//! What several gateway nodes sharing one store need beyond a single node:
//! the revocation change log, the change feed that wakes nodes, leader
//! jobs, and the audit trail's per-node checkpoints.

use serde::{Deserialize, Serialize};

use crate::{Revocation, RevocationKind, RevocationMode};

/// One entry of the revocation change log. The log's `seq` is gapless and
/// in commit order (a counter row updated in the same transaction as the
/// change), so a node that applied every entry up to `seq` holds exactly the
/// store's revocations as of that commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationChange {
    /// Position in the log, from 1.
    pub seq: u64,
    /// What the change matched on.
    pub kind: RevocationKind,
    /// The jti, subject, job id or pipeline.
    pub value: String,
    /// Revoke or freeze.
    pub mode: RevocationMode,
    /// The row as it stands after the change; `None` when it was lifted.
    pub revocation: Option<Revocation>,
}

/// Every live revocation and the change-log position they reflect, read in
/// one transaction: applying the changes after `head` to `rows` gives the
/// store's current set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationSnapshot {
    /// Revocations and freezes whose `expires_at` is unset or after `now`.
    pub rows: Vec<Revocation>,
    /// The change log's last `seq` (0 when empty).
    pub head: u64,
}

/// What a shared store's change feed has seen: nodes wait on it to learn
/// of another node's change sooner than their poll would.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedState {
    /// Notifications received since the process started.
    pub notifications: u64,
    /// Times the listening connection was (re)established after a loss.
    pub reconnects: u64,
    /// Whether the listening connection is up now.
    pub connected: bool,
}

/// One node's part of a shared audit trail, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditNode {
    /// The node's name (`[store] node`).
    pub node: String,
    /// The highest seq indexed for it.
    pub max_seq: Option<u64>,
    /// The number (`n`) of the last checkpoint it published.
    pub checkpoint_seq: Option<u64>,
}

/// A checkpoint a node published into the shared store, as the JSON line
/// its `checkpoints.log` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessedCheckpoint {
    /// The checkpoint's number in its log (`n`, from 1): the key under
    /// which it is published, so a second, different checkpoint with the
    /// same number (a forked or rewritten log) is refused.
    pub seq: u64,
    /// The checkpoint exactly as signed.
    pub json: String,
}
