use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use tokio::time::Instant;

use latchkey_core::{Principal, SharedClock, UnixTime};
use latchkey_store::{Revocation, RevocationChange, RevocationKind, RevocationMode, SharedStore};

use crate::sync::{read, write};
use crate::{TokenClaims, TokenError};

/// The revoke and/or freeze recorded for one (kind, value).
#[derive(Debug, Default, Clone)]
struct Entry {
    revoke: Option<Revocation>,
    freeze: Option<Revocation>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.revoke.is_none() && self.freeze.is_none()
    }
}

/// In-memory indexes, one map per kind so lookups borrow `&str`.
#[derive(Debug, Default)]
struct Indexes {
    token: HashMap<String, Entry>,
    subject: HashMap<String, Entry>,
    job: HashMap<String, Entry>,
    pipeline: HashMap<String, Entry>,
}

impl Indexes {
    fn map(&self, kind: RevocationKind) -> &HashMap<String, Entry> {
        match kind {
            RevocationKind::Token => &self.token,
            RevocationKind::Subject => &self.subject,
            RevocationKind::Job => &self.job,
            RevocationKind::Pipeline => &self.pipeline,
        }
    }

    fn map_mut(&mut self, kind: RevocationKind) -> &mut HashMap<String, Entry> {
        match kind {
            RevocationKind::Token => &mut self.token,
            RevocationKind::Subject => &mut self.subject,
            RevocationKind::Job => &mut self.job,
            RevocationKind::Pipeline => &mut self.pipeline,
        }
    }

    fn is_empty(&self) -> bool {
        self.token.is_empty()
            && self.subject.is_empty()
            && self.job.is_empty()
            && self.pipeline.is_empty()
    }

    /// Adds a revocation; a second revoke of the same thing keeps the later
    /// `created_at` (it kills more tokens).
    fn insert(&mut self, r: Revocation) {
        let entry = self.map_mut(r.kind).entry(r.value.clone()).or_default();
        let slot = match r.mode {
            RevocationMode::Revoke => &mut entry.revoke,
            RevocationMode::Freeze => &mut entry.freeze,
        };
        match slot {
            Some(existing) if existing.created_at > r.created_at => {}
            _ => *slot = Some(r),
        }
    }

    fn remove(&mut self, kind: RevocationKind, value: &str, mode: RevocationMode) {
        let map = self.map_mut(kind);
        if let Some(entry) = map.get_mut(value) {
            match mode {
                RevocationMode::Revoke => entry.revoke = None,
                RevocationMode::Freeze => entry.freeze = None,
            }
            if entry.is_empty() {
                map.remove(value);
            }
        }
    }

    /// Why a token issued at `iat` for `value` is dead, if it is.
    ///
    /// INVARIANT: a freeze kills every live token of what it names (whatever
    /// its `iat`); a revoke kills tokens issued at or before its `created_at`.
    fn dead(
        &self,
        kind: RevocationKind,
        value: &str,
        iat: UnixTime,
        now: UnixTime,
    ) -> Option<&Revocation> {
        let entry = self.map(kind).get(value)?;
        let live = |r: &&Revocation| r.expires_at.is_none_or(|e| e > now);
        if let Some(freeze) = entry.freeze.as_ref().filter(live) {
            return Some(freeze);
        }
        entry
            .revoke
            .as_ref()
            .filter(live)
            .filter(|r| iat <= r.created_at)
    }

    fn frozen(&self, kind: RevocationKind, value: &str, now: UnixTime) -> Option<&Revocation> {
        self.map(kind)
            .get(value)?
            .freeze
            .as_ref()
            .filter(|r| r.expires_at.is_none_or(|e| e > now))
    }
}

fn describe(r: &Revocation) -> String {
    let what = match r.kind {
        RevocationKind::Token => "token",
        RevocationKind::Subject => "subject",
        RevocationKind::Job => "ci job",
        RevocationKind::Pipeline => "ci pipeline",
    };
    if r.reason.is_empty() {
        format!("{what} `{}`", r.value)
    } else {
        format!("{what} `{}` ({})", r.value, r.reason)
    }
}

/// Revoked tokens and revoked or frozen subjects, CI jobs and pipelines.
///
/// Kept in memory so [`RevocationSet::check`] (run on every token use) never
/// touches the store; changes are written to the store first, so an
/// acknowledged revocation survives a crash.
///
/// On a store several nodes share, the set follows the store's change log:
/// [`RevocationSet::sync`] applies the entries after the last one applied
/// (the gateway runs it on every change notification and on a short poll),
/// and [`RevocationSet::view_age`] says how long ago the set last matched
/// the store, so a node cut off from the database can refuse rather than
/// wave a revoked token through. On a store one node owns, every change is
/// made here, and the set is always current.
///
/// A subject revocation names either the token's `sub` or `kind:sub`
/// (`agent:deploy-bot`); it also matches tokens where that subject is the
/// actor (`act.sub`), so revoking an agent kills what it holds for others.
#[derive(Debug)]
pub struct RevocationSet {
    store: SharedStore,
    clock: SharedClock,
    indexes: RwLock<Indexes>,
    /// The last change-log seq applied. Held across a store write and its
    /// memory update, and across a sync's read and apply, so a sync that
    /// read before this node's own change cannot undo it in memory.
    applied: tokio::sync::Mutex<u64>,
    /// A copy of `applied` that readers never wait for.
    applied_seen: std::sync::atomic::AtomicU64,
    /// When the set last matched the store (the start of the last read
    /// that succeeded), for [`Self::view_age`].
    synced_at: RwLock<Instant>,
}

/// What one [`RevocationSet::sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Change-log entries applied.
    pub applied: usize,
    /// The last seq applied after the sync.
    pub seq: u64,
    /// Whether the set was reloaded whole (the log had been pruned past
    /// what this node had applied).
    pub reloaded: bool,
}

/// Change-log entries read per query while catching up.
const SYNC_BATCH: u32 = 1000;

impl RevocationSet {
    /// Loads every unexpired revocation from the store (a node serves only
    /// after this first full load).
    pub async fn load(store: SharedStore, clock: SharedClock) -> Result<Self, TokenError> {
        let set = Self {
            store,
            clock,
            indexes: RwLock::new(Indexes::default()),
            applied: tokio::sync::Mutex::new(0),
            applied_seen: std::sync::atomic::AtomicU64::new(0),
            synced_at: RwLock::new(Instant::now()),
        };
        set.refresh().await?;
        Ok(set)
    }

    /// Replaces the in-memory set with the store's.
    pub async fn refresh(&self) -> Result<(), TokenError> {
        let mut applied = self.applied.lock().await;
        let started = Instant::now();
        let snapshot = self.store.revocation_snapshot(self.clock.unix()).await?;
        let mut fresh = Indexes::default();
        for r in snapshot.rows {
            fresh.insert(r);
        }
        *write(&self.indexes) = fresh;
        *applied = snapshot.head;
        self.applied_seen
            .store(snapshot.head, std::sync::atomic::Ordering::Relaxed);
        *write(&self.synced_at) = started;
        Ok(())
    }

    /// Applies the store's change-log entries after the last one applied,
    /// in order (a shared store; on an unshared one this only marks the
    /// set current). A gap in the log (entries pruned) reloads the set.
    pub async fn sync(&self) -> Result<SyncReport, TokenError> {
        if !self.store.is_shared() {
            *write(&self.synced_at) = Instant::now();
            return Ok(SyncReport::default());
        }
        let mut applied = self.applied.lock().await;
        let started = Instant::now();
        let mut report = SyncReport::default();
        loop {
            let changes = self.store.revocation_changes(*applied, SYNC_BATCH).await?;
            let full = changes.len() >= SYNC_BATCH as usize;
            if changes.first().is_some_and(|c| c.seq != *applied + 1) {
                drop(applied);
                self.refresh().await?;
                let seq = self.applied_seq();
                return Ok(SyncReport {
                    applied: 0,
                    seq,
                    reloaded: true,
                });
            }
            report.applied += changes.len();
            self.apply(&mut applied, changes)?;
            if !full {
                break;
            }
        }
        report.seq = *applied;
        self.applied_seen
            .store(*applied, std::sync::atomic::Ordering::Relaxed);
        *write(&self.synced_at) = started;
        Ok(report)
    }

    /// Applies entries that follow `applied` without a gap.
    fn apply(&self, applied: &mut u64, changes: Vec<RevocationChange>) -> Result<(), TokenError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut indexes = write(&self.indexes);
        for change in changes {
            if change.seq != *applied + 1 {
                return Err(TokenError::Store(latchkey_store::StoreError::Corrupt(
                    format!(
                        "the revocation change log skips from {} to {}",
                        *applied, change.seq
                    ),
                )));
            }
            // Each entry carries the row as it stands after the change,
            // so replacing (not widening) gives the store's state.
            indexes.remove(change.kind, &change.value, change.mode);
            if let Some(r) = change.revocation {
                indexes.insert(r);
            }
            *applied = change.seq;
        }
        Ok(())
    }

    /// How long ago this set last matched the store: `None` on a store one
    /// node owns (it is always current there).
    pub fn view_age(&self) -> Option<Duration> {
        if !self.store.is_shared() {
            return None;
        }
        Some(read(&self.synced_at).elapsed())
    }

    /// The last change-log seq applied (never waits for a sync).
    pub fn applied_seq(&self) -> u64 {
        self.applied_seen.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records a revocation or freeze: durable in the store first, then in
    /// memory. Effective on this node when this returns; on the others at
    /// their next sync.
    pub async fn revoke(&self, revocation: Revocation) -> Result<(), TokenError> {
        let applied = self.applied.lock().await;
        self.store.insert_revocation(&revocation).await?;
        write(&self.indexes).insert(revocation.clone());
        drop(applied);
        if revocation.kind == RevocationKind::Subject {
            // The subject's browser sessions end with its tokens. Every
            // request with a session also checks the set, so this is
            // tidiness, not the guarantee; a failure here is logged.
            let sub = revocation
                .value
                .split_once(':')
                .filter(|(kind, _)| latchkey_core::PrincipalKind::parse(kind).is_some())
                .map_or(revocation.value.as_str(), |(_, sub)| sub);
            match self.store.delete_sessions_of(sub).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(sessions = n, subject = %sub, "sessions ended by a revocation")
                }
                Err(e) => tracing::error!(error = %e, "cannot delete a revoked subject's sessions"),
            }
        }
        tracing::info!(
            kind = revocation.kind.as_str(),
            mode = revocation.mode.as_str(),
            value = %revocation.value,
            "recorded revocation"
        );
        Ok(())
    }

    /// Lifts a revocation or freeze; returns whether one existed.
    pub async fn lift(
        &self,
        kind: RevocationKind,
        value: &str,
        mode: RevocationMode,
    ) -> Result<bool, TokenError> {
        let applied = self.applied.lock().await;
        let existed = self.store.delete_revocation(kind, value, mode).await?;
        write(&self.indexes).remove(kind, value, mode);
        drop(applied);
        tracing::info!(kind = kind.as_str(), mode = mode.as_str(), value = %value, "lifted revocation");
        Ok(existed)
    }

    /// Fails with [`TokenError::Revoked`] if the token, its subject or actor,
    /// its CI job or its pipeline was revoked after it was issued, or is
    /// frozen.
    pub fn check(&self, claims: &TokenClaims) -> Result<(), TokenError> {
        let indexes = read(&self.indexes);
        if indexes.is_empty() {
            return Ok(());
        }
        let now = self.clock.unix();
        let iat = claims.iat;
        let dead = indexes
            .token
            .get(&claims.jti)
            .and_then(|e| e.revoke.as_ref().or(e.freeze.as_ref()))
            .or_else(|| {
                subject_names(claims.lk_kind.as_str(), &claims.sub)
                    .find_map(|v| indexes.dead(RevocationKind::Subject, &v, iat, now))
            })
            .or_else(|| {
                let act = claims.act.as_ref()?;
                subject_names(act.kind.as_str(), &act.sub)
                    .find_map(|v| indexes.dead(RevocationKind::Subject, &v, iat, now))
            })
            .or_else(|| {
                let ci = claims.lk_ci.as_ref()?;
                ci.job_id
                    .as_deref()
                    .and_then(|j| indexes.dead(RevocationKind::Job, j, iat, now))
                    .or_else(|| {
                        ci.pipeline
                            .as_deref()
                            .and_then(|p| indexes.dead(RevocationKind::Pipeline, p, iat, now))
                    })
            });
        match dead {
            Some(r) => Err(TokenError::Revoked {
                reason: describe(r),
            }),
            None => Ok(()),
        }
    }

    /// What stops `principal` getting a new token, if anything: a freeze of
    /// it, of its actor, or of its CI job or pipeline.
    pub fn frozen(&self, principal: &Principal) -> Option<String> {
        let indexes = read(&self.indexes);
        if indexes.is_empty() {
            return None;
        }
        let now = self.clock.unix();
        let found = subject_names(principal.kind.as_str(), &principal.id)
            .find_map(|v| indexes.frozen(RevocationKind::Subject, &v, now))
            .or_else(|| {
                let act = principal.actor.as_ref()?;
                subject_names(act.kind.as_str(), &act.sub)
                    .find_map(|v| indexes.frozen(RevocationKind::Subject, &v, now))
            })
            .or_else(|| {
                principal
                    .ci
                    .job_id
                    .as_deref()
                    .and_then(|j| indexes.frozen(RevocationKind::Job, j, now))
            })
            .or_else(|| {
                principal
                    .ci
                    .pipeline
                    .as_deref()
                    .and_then(|p| indexes.frozen(RevocationKind::Pipeline, p, now))
            });
        found.map(describe)
    }

    /// A revocation (or freeze) of `principal`'s subject that kills what
    /// was issued at `since`: what ends a browser session begun then.
    pub fn subject_revoked_since(&self, principal: &Principal, since: UnixTime) -> Option<String> {
        let indexes = read(&self.indexes);
        if indexes.is_empty() {
            return None;
        }
        let now = self.clock.unix();
        subject_names(principal.kind.as_str(), &principal.id)
            .find_map(|v| indexes.dead(RevocationKind::Subject, &v, since, now))
            .map(describe)
    }

    /// How many revocations and freezes are in memory, and a SHA-256 over
    /// them in a fixed order (what matches, mode, `created_at`,
    /// `expires_at`): two nodes with the same fingerprint enforce the same
    /// set. Reveals nothing about what is revoked.
    pub fn fingerprint(&self) -> (usize, String) {
        let mut all = self.list();
        all.sort_by(|a, b| {
            (a.kind.as_str(), &a.value, a.mode.as_str()).cmp(&(
                b.kind.as_str(),
                &b.value,
                b.mode.as_str(),
            ))
        });
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for r in &all {
            let line = serde_json::json!([
                r.kind.as_str(),
                r.value,
                r.mode.as_str(),
                r.created_at,
                r.expires_at
            ])
            .to_string();
            ctx.update(line.as_bytes());
            ctx.update(b"\n");
        }
        (all.len(), hex::encode(ctx.finish().as_ref()))
    }

    /// Every revocation and freeze in memory.
    pub fn list(&self) -> Vec<Revocation> {
        let indexes = read(&self.indexes);
        let mut all: Vec<Revocation> = [
            &indexes.token,
            &indexes.subject,
            &indexes.job,
            &indexes.pipeline,
        ]
        .into_iter()
        .flat_map(|m| m.values())
        .flat_map(|e| e.revoke.iter().chain(e.freeze.iter()))
        .cloned()
        .collect();
        all.sort_by(|a, b| (a.created_at, &a.value).cmp(&(b.created_at, &b.value)));
        all
    }
}

/// The two names a subject revocation may use: `sub` and `kind:sub` (the
/// second only built if the first does not match).
fn subject_names<'a>(kind: &'a str, sub: &'a str) -> impl Iterator<Item = Cow<'a, str>> {
    std::iter::once(Cow::Borrowed(sub)).chain(std::iter::once_with(move || {
        Cow::Owned(format!("{kind}:{sub}"))
    }))
}
