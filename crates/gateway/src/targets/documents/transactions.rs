//! Transactions are bound to the caller who began them: a transaction id
//! seen in one caller's response cannot be used by another caller to read
//! inside, commit or roll back that transaction.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

/// Firestore drops a transaction after 270 s; keep bindings a little
/// longer so a late commit is refused by Firestore, not by us.
const BINDING_TTL_MS: u64 = 10 * 60 * 1000;
/// Upper bound on live bindings; beyond it new transactions are refused.
const MAX_BINDINGS: usize = 100_000;

/// Why a transaction id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransactionRefusal {
    /// Not begun through this Latchkey (or expired).
    Unknown,
    /// Begun by a different caller.
    OtherCaller,
}

impl TransactionRefusal {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Unknown => {
                "the transaction was not begun through this Latchkey or has expired; begin it again"
            }
            Self::OtherCaller => "the transaction was begun by another caller",
        }
    }
}

struct Binding {
    owner: String,
    expires_ms: u64,
}

/// Live transaction ids and who began each.
#[derive(Default)]
pub(crate) struct TransactionBindings {
    inner: Mutex<HashMap<Bytes, Binding>>,
}

impl TransactionBindings {
    /// Records that `owner` began `tx`. Refuses (false) when the table is
    /// full of live bindings.
    pub(crate) fn bind(&self, tx: Bytes, owner: &str, now_ms: u64) -> bool {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_BINDINGS {
            map.retain(|_, b| b.expires_ms > now_ms);
            if map.len() >= MAX_BINDINGS {
                return false;
            }
        }
        map.insert(
            tx,
            Binding {
                owner: owner.to_owned(),
                expires_ms: now_ms + BINDING_TTL_MS,
            },
        );
        true
    }

    /// Whether `owner` may use `tx`.
    pub(crate) fn check(
        &self,
        tx: &[u8],
        owner: &str,
        now_ms: u64,
    ) -> Result<(), TransactionRefusal> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(tx) {
            Some(b) if b.expires_ms <= now_ms => Err(TransactionRefusal::Unknown),
            Some(b) if b.owner == owner => Ok(()),
            Some(_) => Err(TransactionRefusal::OtherCaller),
            None => Err(TransactionRefusal::Unknown),
        }
    }

    /// Forgets `tx` (after its commit or rollback).
    pub(crate) fn end(&self, tx: &[u8]) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(tx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_caller_who_began_a_transaction_may_use_it() {
        let t = TransactionBindings::default();
        assert!(t.bind(Bytes::from_static(b"tx1"), "alice", 0));
        assert_eq!(t.check(b"tx1", "alice", 1), Ok(()));
        assert_eq!(
            t.check(b"tx1", "mallory", 1),
            Err(TransactionRefusal::OtherCaller)
        );
        assert_eq!(
            t.check(b"tx2", "alice", 1),
            Err(TransactionRefusal::Unknown)
        );
        assert_eq!(
            t.check(b"tx1", "alice", BINDING_TTL_MS + 1),
            Err(TransactionRefusal::Unknown)
        );
        t.end(b"tx1");
        assert_eq!(
            t.check(b"tx1", "alice", 1),
            Err(TransactionRefusal::Unknown)
        );
    }
}
