//! Fail closed: when the store refuses a write, the revocation set does not
//! pretend it succeeded, and a ring cannot be loaded.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use async_trait::async_trait;
use latchkey_core::{FakeClock, Principal, PrincipalKind, SharedClock, UnixTime};
use latchkey_store::{
    AuditIndexRow, AuditQuery, Revocation, RevocationKind, RevocationMode, SharedStore, Store,
    StoreError, StoredSigningKey,
};
use latchkey_tokens::{KeySchedule, MasterKey, RevocationSet, SigningKeyRing, TokenError};

/// A fake store that is down: every call fails (reads of an empty store
/// succeed when `reads_work`).
#[derive(Debug)]
struct FakeDownStore {
    reads_work: bool,
}

fn down() -> StoreError {
    StoreError::Unavailable("fake store is down".into())
}

#[async_trait]
impl Store for FakeDownStore {
    async fn insert_signing_key(&self, _: &StoredSigningKey) -> Result<(), StoreError> {
        Err(down())
    }
    async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        if self.reads_work {
            Ok(vec![])
        } else {
            Err(down())
        }
    }
    async fn update_signing_key_schedule(&self, _: &StoredSigningKey) -> Result<(), StoreError> {
        Err(down())
    }
    async fn delete_signing_key(&self, _: &str) -> Result<(), StoreError> {
        Err(down())
    }
    async fn insert_revocation(&self, _: &Revocation) -> Result<(), StoreError> {
        Err(down())
    }
    async fn list_revocations(&self, _: UnixTime) -> Result<Vec<Revocation>, StoreError> {
        if self.reads_work {
            Ok(vec![])
        } else {
            Err(down())
        }
    }
    async fn delete_revocation(
        &self,
        _: RevocationKind,
        _: &str,
        _: RevocationMode,
    ) -> Result<bool, StoreError> {
        Err(down())
    }
    async fn record_delivery(&self, _: &str, _: &str, _: UnixTime) -> Result<bool, StoreError> {
        Err(down())
    }
    async fn index_audit_events(&self, _: &[AuditIndexRow]) -> Result<(), StoreError> {
        Err(down())
    }
    async fn query_audit(&self, _: &AuditQuery) -> Result<Vec<AuditIndexRow>, StoreError> {
        Err(down())
    }
    async fn max_audit_seq(&self) -> Result<Option<u64>, StoreError> {
        Err(down())
    }
    async fn clear_audit_index(&self) -> Result<(), StoreError> {
        Err(down())
    }
    async fn get_meta(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Err(down())
    }
    async fn insert_session(&self, _: &latchkey_store::StoredSession) -> Result<(), StoreError> {
        Err(down())
    }
    async fn get_session(
        &self,
        _: &str,
    ) -> Result<Option<latchkey_store::StoredSession>, StoreError> {
        Err(down())
    }
    async fn update_session(&self, _: &latchkey_store::StoredSession) -> Result<bool, StoreError> {
        Err(down())
    }
    async fn touch_session(&self, _: &str, _: u64) -> Result<bool, StoreError> {
        Err(down())
    }
    async fn delete_session(&self, _: &str) -> Result<bool, StoreError> {
        Err(down())
    }
    async fn delete_sessions_of(&self, _: &str) -> Result<u64, StoreError> {
        Err(down())
    }
    async fn delete_expired_sessions(&self, _: u64, _: u64) -> Result<u64, StoreError> {
        Err(down())
    }
    async fn put_meta(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
        Err(down())
    }
}

#[tokio::test]
async fn revoke_is_not_applied_when_the_store_write_fails() {
    let store: SharedStore = Arc::new(FakeDownStore { reads_work: true });
    let clock: SharedClock = Arc::new(FakeClock::at(1000));
    let set = RevocationSet::load(store, clock).await.unwrap();
    let err = set
        .revoke(Revocation {
            kind: RevocationKind::Subject,
            value: "alice".into(),
            mode: RevocationMode::Freeze,
            created_at: 1000,
            expires_at: None,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Store(_)));
    assert_eq!(err.oauth_error_code(), "server_error");
    assert!(set.list().is_empty());
    assert!(
        set.frozen(&Principal::new(PrincipalKind::User, "alice", "okta"))
            .is_none()
    );
}

#[tokio::test]
async fn nothing_loads_from_a_down_store() {
    let store: SharedStore = Arc::new(FakeDownStore { reads_work: false });
    let clock: SharedClock = Arc::new(FakeClock::at(1000));
    assert!(
        RevocationSet::load(store.clone(), clock.clone())
            .await
            .is_err()
    );
    let err = SigningKeyRing::load(
        store,
        MasterKey::generate().unwrap(),
        clock,
        KeySchedule::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TokenError::Store(_)), "{err}");
}
