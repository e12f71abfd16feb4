//! Several nodes over one shared store: opening the configured store,
//! following the other nodes' revocations, and the `strict` rule that a
//! node whose view of revocations has gone stale refuses rather than
//! serves.
//!
//! A node follows the store's revocation change log (gapless, in commit
//! order): it applies new entries whenever the store's change feed (the
//! PostgreSQL `NOTIFY`) moves, and at least every `store.poll_interval`
//! whatever the feed says, which also covers a listening connection that is
//! lost or half-open. Every read starts from the last seq applied, so a
//! reconnect catches up by itself.

use std::sync::Arc;
use std::time::Duration;

use latchkey_store::{DocumentRows, SharedStore, SqliteStore};
use latchkey_tokens::RevocationSet;

use crate::config::{Config, RevocationConsistency, StoreBackend};
use crate::gateway::GatewayError;

/// The store a config names, and its document rows.
pub(crate) struct OpenedStore {
    pub(crate) store: SharedStore,
    pub(crate) documents: Arc<dyn DocumentRows>,
}

/// Whether the opener is a gateway node (it claims its node name) or a
/// command reading the store beside the running nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreRole {
    /// A gateway node: on a shared store it claims `[store] node`, and a
    /// second process with the same name is refused.
    Node,
    /// `latchkey audit`, `keys`, `documents`: reads and writes beside the
    /// nodes without claiming a name.
    Command,
}

/// Opens the store `config` names (`[store]`), bringing its schema up to
/// date.
pub(crate) async fn open_store(
    config: &Config,
    role: StoreRole,
) -> Result<OpenedStore, GatewayError> {
    match config.store.backend {
        StoreBackend::Sqlite => {
            let sqlite =
                Arc::new(SqliteStore::open(&config.server.data_dir.join("latchkey.db")).await?);
            Ok(OpenedStore {
                documents: sqlite.clone(),
                store: sqlite,
            })
        }
        StoreBackend::Postgres => {
            let url = config.store.url.load("store.url")?.ok_or_else(|| {
                crate::config::ConfigError::Secret {
                    key: "store.url".into(),
                    message: "required with `backend = \"postgres\"`".into(),
                }
            })?;
            let node = config.store.node.clone().unwrap_or_default();
            let options = latchkey_store::PostgresOptions {
                max_connections: config.store.pool_size,
                // Short, so a node cut off from the database notices within
                // its staleness bound rather than waiting in the pool.
                connect_timeout: Duration::from_secs(2),
                claim_node: role == StoreRole::Node,
            };
            let pg = Arc::new(latchkey_store::PostgresStore::connect(&url, &node, options).await?);
            Ok(OpenedStore {
                documents: pg.document_rows(),
                store: pg,
            })
        }
    }
}

/// Opens the store `config` names for a command run beside the gateway
/// (it does not claim the node name).
pub async fn open_store_for_command(config: &Config) -> Result<SharedStore, GatewayError> {
    Ok(open_store(config, StoreRole::Command).await?.store)
}

/// The embedded document rows of the store `config` names, for
/// `latchkey documents export|import` run beside the gateway.
pub async fn open_documents_for_command(
    config: &Config,
) -> Result<Arc<dyn DocumentRows>, GatewayError> {
    Ok(open_store(config, StoreRole::Command).await?.documents)
}

/// This node's view of revocations, and what it does when the view is old.
#[derive(Debug)]
pub(crate) struct RevocationView {
    pub(crate) set: Arc<RevocationSet>,
    pub(crate) consistency: RevocationConsistency,
    pub(crate) max_staleness: Duration,
    /// How following goes (a shared store only).
    pub(crate) status: Arc<FollowStatus>,
}

impl RevocationView {
    /// How old the view is when a `strict` node must refuse because of it:
    /// `None` when it may serve (current, `best_effort`, or a store one
    /// node owns).
    pub(crate) fn refusing(&self) -> Option<Duration> {
        if self.consistency != RevocationConsistency::Strict {
            return None;
        }
        self.set.view_age().filter(|age| *age > self.max_staleness)
    }

    /// The `/readyz` component: `None` on a store one node owns.
    pub(crate) fn readiness(&self) -> Option<serde_json::Value> {
        use std::sync::atomic::Ordering;
        let age = self.set.view_age()?;
        let (count, fingerprint) = self.set.fingerprint();
        let applied_seq = self.set.applied_seq();
        let stale = age > self.max_staleness;
        let status = match (stale, self.consistency) {
            (false, _) => "ok",
            (true, RevocationConsistency::Strict) => "failing",
            (true, RevocationConsistency::BestEffort) => "warning",
        };
        let mut c = serde_json::json!({
            "component": "revocations",
            "status": status,
            "mode": self.consistency.as_str(),
            "view_age_ms": u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
            "max_staleness_ms": u64::try_from(self.max_staleness.as_millis()).unwrap_or(u64::MAX),
            "listening": self.status.listening.load(Ordering::Relaxed),
            "listener_reconnects": self.status.reconnects.load(Ordering::Relaxed),
            "applied_seq": applied_seq,
            "count": count,
            "fingerprint": fingerprint,
        });
        if stale {
            c["reason"] = serde_json::json!(match self.consistency {
                RevocationConsistency::Strict =>
                    "the view of revocations is too old; requests are refused until the store answers",
                RevocationConsistency::BestEffort =>
                    "the view of revocations is too old; serving on it (best_effort)",
            });
        }
        Some(c)
    }
}

/// What the follower reports, for `/readyz` and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct FollowStatus {
    /// The listening connection's reconnects, as the store counts them.
    pub(crate) reconnects: std::sync::atomic::AtomicU64,
    /// Whether the listening connection is up.
    pub(crate) listening: std::sync::atomic::AtomicBool,
}

/// Follows the shared store's revocation change log for as long as the
/// task runs. Does nothing on a store one node owns.
pub(crate) fn spawn_revocation_follower(
    store: SharedStore,
    set: Arc<RevocationSet>,
    poll: Duration,
    status: Arc<FollowStatus>,
    metrics: Arc<crate::metrics::Metrics>,
) -> Option<tokio::task::JoinHandle<()>> {
    use std::sync::atomic::Ordering;
    if !store.is_shared() {
        return None;
    }
    let mut feed = store.change_feed();
    Some(tokio::spawn(async move {
        let mut failing = false;
        loop {
            match feed.as_mut() {
                Some(rx) => {
                    tokio::select! {
                        changed = rx.changed() => {
                            if changed.is_err() {
                                // The feed's task ended: poll alone.
                                feed = None;
                            }
                        }
                        () = tokio::time::sleep(poll) => {}
                    }
                }
                None => tokio::time::sleep(poll).await,
            }
            if let Some(rx) = feed.as_ref() {
                let state = *rx.borrow();
                let before = status.reconnects.swap(state.reconnects, Ordering::Relaxed);
                metrics
                    .revocation_listener_reconnects
                    .inc_by(state.reconnects.saturating_sub(before));
                status.listening.store(state.connected, Ordering::Relaxed);
            }
            match set.sync().await {
                Ok(report) => {
                    if failing {
                        tracing::info!(seq = report.seq, "revocation view caught up");
                        failing = false;
                    }
                    if report.applied > 0 {
                        tracing::debug!(
                            applied = report.applied,
                            seq = report.seq,
                            "applied revocation changes"
                        );
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "cannot follow revocations; the view ages until the store answers");
                        failing = true;
                    }
                }
            }
            metrics
                .revocation_sync_lag_seconds
                .set(set.view_age().unwrap_or_default().as_secs_f64());
            metrics
                .revocation_applied_seq
                .set(i64::try_from(set.applied_seq()).unwrap_or(i64::MAX));
        }
    }))
}
