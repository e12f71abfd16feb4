//! Transactions are bound to the caller who began them: a transaction id
//! seen in one caller's response cannot be used by another caller to read
//! inside, commit or roll back that transaction.
//!
//! Bindings are kept in memory; on a store several nodes share they are
//! also written there, so a transaction begun through one node can be
//! committed through another. The memory binding is made before the caller
//! learns the id (the response is held for it); the shared one follows a
//! moment later, so a caller that switches nodes within milliseconds of
//! beginning is refused as `Unknown` and begins again (Firestore clients
//! retry a transaction whole).

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
    /// The store several nodes share, when they do.
    shared: Option<latchkey_store::SharedStore>,
}

impl TransactionBindings {
    /// Bindings also kept in `store`, which other nodes read.
    pub(crate) fn shared(store: latchkey_store::SharedStore) -> Self {
        Self {
            inner: Mutex::default(),
            shared: Some(store),
        }
    }

    /// Records that `owner` began `tx`. Refuses (false) when the table is
    /// full of live bindings.
    pub(crate) fn bind(&self, tx: Bytes, owner: &str, now_ms: u64) -> bool {
        if let Some(store) = &self.shared {
            let (store, tx, owner) = (store.clone(), tx.clone(), owner.to_owned());
            tokio::spawn(async move {
                if let Err(e) = store
                    .bind_transaction(&tx, &owner, now_ms + BINDING_TTL_MS)
                    .await
                {
                    tracing::warn!(error = %e, "cannot share a transaction binding; the transaction works through this node only");
                }
            });
        }
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

    /// Whether `owner` may use `tx`: this node's binding, else (on a shared
    /// store) the one another node wrote. A store that cannot answer
    /// refuses (fail closed).
    pub(crate) async fn check(
        &self,
        tx: &[u8],
        owner: &str,
        now_ms: u64,
    ) -> Result<(), TransactionRefusal> {
        let local = self.check_local(tx, owner, now_ms);
        let Some(store) = &self.shared else {
            return local;
        };
        if local != Err(TransactionRefusal::Unknown) {
            return local;
        }
        match store.transaction_owner(tx, now_ms).await {
            Ok(Some(o)) if o == owner => Ok(()),
            Ok(Some(_)) => Err(TransactionRefusal::OtherCaller),
            Ok(None) => Err(TransactionRefusal::Unknown),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a shared transaction binding; refusing");
                Err(TransactionRefusal::Unknown)
            }
        }
    }

    fn check_local(&self, tx: &[u8], owner: &str, now_ms: u64) -> Result<(), TransactionRefusal> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(tx) {
            Some(b) if b.expires_ms <= now_ms => Err(TransactionRefusal::Unknown),
            Some(b) if b.owner == owner => Ok(()),
            Some(_) => Err(TransactionRefusal::OtherCaller),
            None => Err(TransactionRefusal::Unknown),
        }
    }

    /// Forgets `tx` (after its commit or rollback).
    pub(crate) fn end(&self, tx: &[u8], now_ms: u64) {
        if let Some(store) = &self.shared {
            let (store, tx) = (store.clone(), tx.to_vec());
            tokio::spawn(async move {
                if let Err(e) = store.end_transaction(&tx, now_ms).await {
                    tracing::debug!(error = %e, "cannot forget a shared transaction binding (it expires)");
                }
            });
        }
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(tx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_caller_who_began_a_transaction_may_use_it() {
        let t = TransactionBindings::default();
        assert!(t.bind(Bytes::from_static(b"tx1"), "alice", 0));
        assert_eq!(t.check(b"tx1", "alice", 1).await, Ok(()));
        assert_eq!(
            t.check(b"tx1", "mallory", 1).await,
            Err(TransactionRefusal::OtherCaller)
        );
        assert_eq!(
            t.check(b"tx2", "alice", 1).await,
            Err(TransactionRefusal::Unknown)
        );
        assert_eq!(
            t.check(b"tx1", "alice", BINDING_TTL_MS + 1).await,
            Err(TransactionRefusal::Unknown)
        );
        t.end(b"tx1", 1);
        assert_eq!(
            t.check(b"tx1", "alice", 1).await,
            Err(TransactionRefusal::Unknown)
        );
    }
}
