//! End-to-end tests of the audit log on real files.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_audit::{
    AuditConfig, AuditError, AuditEvent, AuditLog, AuditSigner, CHECKPOINT_FILE, LOG_FILE,
    VerifyFailure, VerifyOptions, read_records, verify, verify_with,
};
use latchkey_core::{
    Action, Clock, Decision, Effect, FakeClock, Intent, Principal, PrincipalKind, ResourceKind,
    ResourceRef, SharedClock, SystemClock, UnixTime,
};
use latchkey_store::{
    AuditIndexRow, AuditQuery, Revocation, RevocationKind, RevocationMode, SharedStore,
    SqliteStore, Store, StoreError, StoredSigningKey,
};

/// A FAKE store that keeps only audit index rows in memory and fails the
/// next `fail_next` index writes, to test that index failures neither fail
/// appends nor lose rows. Every other method fails.
#[derive(Debug, Default)]
struct FlakyFakeIndex {
    rows: Mutex<BTreeMap<u64, AuditIndexRow>>,
    fail_next: AtomicU32,
}

fn unsupported<T>() -> Result<T, StoreError> {
    Err(StoreError::Unavailable(
        "fake audit index: not supported".into(),
    ))
}

#[async_trait::async_trait]
impl Store for FlakyFakeIndex {
    async fn insert_signing_key(&self, _: &StoredSigningKey) -> Result<(), StoreError> {
        unsupported()
    }
    async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        unsupported()
    }
    async fn update_signing_key_schedule(&self, _: &StoredSigningKey) -> Result<(), StoreError> {
        unsupported()
    }
    async fn delete_signing_key(&self, _: &str) -> Result<(), StoreError> {
        unsupported()
    }
    async fn insert_revocation(&self, _: &Revocation) -> Result<(), StoreError> {
        unsupported()
    }
    async fn list_revocations(&self, _: UnixTime) -> Result<Vec<Revocation>, StoreError> {
        unsupported()
    }
    async fn delete_revocation(
        &self,
        _: RevocationKind,
        _: &str,
        _: RevocationMode,
    ) -> Result<bool, StoreError> {
        unsupported()
    }
    async fn record_delivery(&self, _: &str, _: &str, _: UnixTime) -> Result<bool, StoreError> {
        unsupported()
    }
    async fn index_audit_events(&self, rows: &[AuditIndexRow]) -> Result<(), StoreError> {
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Unavailable(
                "fake audit index: injected failure".into(),
            ));
        }
        let mut map = self.rows.lock().unwrap();
        for row in rows {
            map.entry(row.seq).or_insert_with(|| row.clone());
        }
        Ok(())
    }
    async fn query_audit(&self, _: &AuditQuery) -> Result<Vec<AuditIndexRow>, StoreError> {
        Ok(self.rows.lock().unwrap().values().cloned().collect())
    }
    async fn max_audit_seq(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.rows.lock().unwrap().keys().next_back().copied())
    }
    async fn clear_audit_index(&self) -> Result<(), StoreError> {
        self.rows.lock().unwrap().clear();
        Ok(())
    }
    async fn get_meta(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        unsupported()
    }
    async fn insert_session(&self, _: &latchkey_store::StoredSession) -> Result<(), StoreError> {
        unsupported()
    }
    async fn get_session(
        &self,
        _: &str,
    ) -> Result<Option<latchkey_store::StoredSession>, StoreError> {
        unsupported()
    }
    async fn update_session(&self, _: &latchkey_store::StoredSession) -> Result<bool, StoreError> {
        unsupported()
    }
    async fn touch_session(&self, _: &str, _: u64) -> Result<bool, StoreError> {
        unsupported()
    }
    async fn delete_session(&self, _: &str) -> Result<bool, StoreError> {
        unsupported()
    }
    async fn delete_sessions_of(&self, _: &str) -> Result<u64, StoreError> {
        unsupported()
    }
    async fn delete_expired_sessions(&self, _: u64, _: u64) -> Result<u64, StoreError> {
        unsupported()
    }
    async fn put_meta(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
        unsupported()
    }
}

struct Keys {
    der: Vec<u8>,
    public: Vec<(String, Vec<u8>)>,
}

fn new_keys() -> Keys {
    let der = AuditSigner::generate_pkcs8().unwrap();
    let signer = AuditSigner::from_pkcs8("audit-1", &der).unwrap();
    Keys {
        public: vec![("audit-1".to_owned(), signer.public_key())],
        der,
    }
}

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

async fn open(dir: &Path, keys: &Keys, index: Option<SharedStore>) -> AuditLog {
    try_open(dir, keys, index).await.unwrap()
}

async fn try_open(
    dir: &Path,
    keys: &Keys,
    index: Option<SharedStore>,
) -> Result<AuditLog, AuditError> {
    try_open_with(dir, keys, index, AuditConfig::default()).await
}

async fn try_open_with(
    dir: &Path,
    keys: &Keys,
    index: Option<SharedStore>,
    config: AuditConfig,
) -> Result<AuditLog, AuditError> {
    let signer = AuditSigner::from_pkcs8("audit-1", &keys.der).unwrap();
    AuditLog::open(dir, signer, index, clock(), config).await
}

/// A log without an index, tuned by `config`.
async fn open_with(dir: &Path, keys: &Keys, config: AuditConfig) -> AuditLog {
    try_open_with(dir, keys, None, config).await.unwrap()
}

fn event(n: u64) -> AuditEvent {
    let mut p = Principal::new(PrincipalKind::Workload, "deploy", "buildkite");
    p.ci.job_id = Some(format!("job-{n}"));
    let intent = Intent::new(
        Action::GitPush,
        ResourceRef::new(ResourceKind::Ref, "gitea/acme/app:refs/heads/main"),
    )
    .with("new", format!("commit-{n}"));
    let d = Decision {
        effect: Effect::Allow,
        policy_ids: vec!["ci-push".into()],
        reason: "ci may push".into(),
    };
    AuditEvent::decision(format!("req-{n}"), &p, &intent, &d, 1_700_000_000_000 + n)
}

/// A closed log with `n` records and one checkpoint at `n`.
async fn log_with(n: u64) -> (tempfile::TempDir, Keys) {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let log = open(dir.path(), &keys, None).await;
    for i in 1..=n {
        assert_eq!(log.append(event(i)).await.unwrap(), i);
    }
    log.close().await.unwrap();
    (dir, keys)
}

fn lines(dir: &Path, file: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(dir: &Path, file: &str, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(dir.join(file), text).unwrap();
}

fn failure(dir: &Path, keys: &Keys) -> VerifyFailure {
    match verify(dir, &keys.public) {
        Err(AuditError::Verify(f)) => f,
        other => panic!("expected a verify failure, got {other:?}"),
    }
}

#[tokio::test]
async fn append_verify_and_read_back() {
    let (dir, keys) = log_with(100).await;
    let report = verify(dir.path(), &keys.public).unwrap();
    assert_eq!(report.records, 100);
    // The first checkpoint vouches for the empty log, the second for all.
    assert_eq!(report.checkpoints, 2);
    assert_eq!(report.last_seq, 100);
    assert!(!report.partial_tail);

    let records: Vec<_> = read_records(dir.path(), 0)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(records.len(), 100);
    assert_eq!(records[41].seq, 42);
    assert_eq!(records[41].event, event(42));
    assert_eq!(records[42].prev, records[41].hash);
    assert_eq!(records[99].hash, report.last_hash);
    assert_eq!(records[0].prev, "0".repeat(64));

    let tail: Vec<u64> = read_records(dir.path(), 97)
        .unwrap()
        .map(|r| r.unwrap().seq)
        .collect();
    assert_eq!(tail, vec![98, 99, 100]);
}

/// Issue 12: a request's records (a push's N refs) are one batch: written
/// together in order, one sync, and refused whole when one of them cannot
/// be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_appended_in_order_and_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let log = open(dir.path(), &keys, None).await;
    let seqs = log.append_all((1..=5).map(event).collect()).await.unwrap();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let mut too_large = event(7);
    too_large.context.insert(
        "blob".into(),
        serde_json::json!("x".repeat(latchkey_audit::MAX_EVENT_BYTES)),
    );
    assert!(log.append_all(vec![event(6), too_large]).await.is_err());
    assert_eq!(
        log.append(event(8)).await.unwrap(),
        6,
        "nothing of the refused batch was written"
    );
    assert_eq!(log.append_all(Vec::new()).await.unwrap(), Vec::<u64>::new());
    log.close().await.unwrap();
    let records: Vec<_> = read_records(dir.path(), 0)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(records.len(), 6);
    assert_eq!(records[2].event, event(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_contiguous_unique_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let log = open(dir.path(), &keys, None).await;
    let mut tasks = Vec::new();
    for t in 0..50u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..40u64 {
                seqs.push(log.append(event(t * 1000 + i)).await.unwrap());
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one task's seqs increase"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=2000).collect::<Vec<_>>());
    assert_eq!(log.last_seq(), 2000);
    log.close().await.unwrap();
    assert_eq!(verify(dir.path(), &keys.public).unwrap().records, 2000);
}

#[tokio::test]
async fn reopen_continues_the_chain() {
    let (dir, keys) = log_with(10).await;
    let log = open(dir.path(), &keys, None).await;
    assert_eq!(log.last_seq(), 10);
    assert_eq!(log.append(event(11)).await.unwrap(), 11);
    log.close().await.unwrap();
    let report = verify(dir.path(), &keys.public).unwrap();
    assert_eq!((report.records, report.checkpoints), (11, 3));

    // Reopening without new records adds no checkpoint.
    let log = open(dir.path(), &keys, None).await;
    log.close().await.unwrap();
    assert_eq!(lines(dir.path(), CHECKPOINT_FILE).len(), 3);
}

#[tokio::test]
async fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let log = open(dir.path(), &keys, None).await;
    let err = try_open(dir.path(), &keys, None).await.unwrap_err();
    assert!(matches!(err, AuditError::Locked { .. }), "{err}");
    log.close().await.unwrap();
    open(dir.path(), &keys, None).await.close().await.unwrap();
}

#[tokio::test]
async fn detects_a_changed_byte() {
    let (dir, keys) = log_with(50).await;
    let mut l = lines(dir.path(), LOG_FILE);
    assert!(l[41].contains("\"req-42\""));
    l[41] = l[41].replace("\"req-42\"", "\"req-43\"");
    write_lines(dir.path(), LOG_FILE, &l);
    let f = failure(dir.path(), &keys);
    assert_eq!(f, VerifyFailure::HashMismatch { seq: 42, line: 42 });
    assert_eq!(
        f.to_string(),
        "record 42 (line 42): hash does not match its contents (a byte was changed)"
    );
}

#[tokio::test]
async fn detects_a_removed_record() {
    let (dir, keys) = log_with(50).await;
    let mut l = lines(dir.path(), LOG_FILE);
    l.remove(41);
    write_lines(dir.path(), LOG_FILE, &l);
    let f = failure(dir.path(), &keys);
    assert_eq!(
        f,
        VerifyFailure::SequenceJump {
            seq: 43,
            line: 42,
            previous: 41
        }
    );
    assert_eq!(
        f.to_string(),
        "record 43 (line 42): sequence jumps from 41 to 43 (a record was removed or reordered)"
    );
}

#[tokio::test]
async fn detects_swapped_records() {
    let (dir, keys) = log_with(50).await;
    let mut l = lines(dir.path(), LOG_FILE);
    l.swap(41, 42);
    write_lines(dir.path(), LOG_FILE, &l);
    assert_eq!(
        failure(dir.path(), &keys),
        VerifyFailure::SequenceJump {
            seq: 43,
            line: 42,
            previous: 41
        }
    );
}

/// Recomputes record hashes from line `from` (0-based) on, as an attacker
/// without the checkpoint key would.
fn rehash(l: &mut [String], from: usize, relink: bool) {
    use aws_lc_rs::digest;
    for i in from..l.len() {
        let v: serde_json::Value = serde_json::from_str(&l[i]).unwrap();
        let seq = v["seq"].as_u64().unwrap();
        let prev = if relink && i > 0 {
            let p: serde_json::Value = serde_json::from_str(&l[i - 1]).unwrap();
            p["hash"].as_str().unwrap().to_owned()
        } else {
            v["prev"].as_str().unwrap().to_owned()
        };
        let event = &l[i][l[i].find(",\"event\":").unwrap() + 9..l[i].len() - 1];
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&seq.to_be_bytes());
        ctx.update(&hex::decode(&prev).unwrap());
        ctx.update(event.as_bytes());
        let hash = hex::encode(ctx.finish().as_ref());
        l[i] =
            format!("{{\"seq\":{seq},\"prev\":\"{prev}\",\"hash\":\"{hash}\",\"event\":{event}}}");
        if !relink {
            break;
        }
    }
}

#[tokio::test]
async fn detects_a_rehashed_record_by_its_successor() {
    let (dir, keys) = log_with(60).await;
    let mut l = lines(dir.path(), LOG_FILE);
    l[55] = l[55].replace("\"req-56\"", "\"req-99\"");
    rehash(&mut l, 55, false);
    write_lines(dir.path(), LOG_FILE, &l);
    let f = failure(dir.path(), &keys);
    assert_eq!(f, VerifyFailure::PrevMismatch { seq: 57, line: 57 });
    assert_eq!(
        f.to_string(),
        "record 57 (line 57): prev hash does not match record 56"
    );
}

#[tokio::test]
async fn detects_a_rewritten_chain_by_its_checkpoint() {
    let (dir, keys) = log_with(60).await;
    let mut l = lines(dir.path(), LOG_FILE);
    l[55] = l[55].replace("\"req-56\"", "\"req-99\"");
    rehash(&mut l, 55, true);
    write_lines(dir.path(), LOG_FILE, &l);
    assert_eq!(
        failure(dir.path(), &keys),
        VerifyFailure::CheckpointMismatch { index: 2, seq: 60 }
    );
}

#[tokio::test]
async fn detects_a_tail_cut_after_a_checkpoint() {
    let (dir, keys) = log_with(100).await;
    let l = lines(dir.path(), LOG_FILE);
    write_lines(dir.path(), LOG_FILE, &l[..90]);
    let f = failure(dir.path(), &keys);
    assert_eq!(
        f,
        VerifyFailure::TailCut {
            last_seq: 90,
            checkpoint_seq: 100,
            index: 2
        }
    );
    assert_eq!(
        f.to_string(),
        "log ends at record 90 but checkpoint at 100 vouches for more (the tail was cut off)"
    );
    // The writer refuses to continue such a log.
    let err = try_open(dir.path(), &keys, None).await.unwrap_err();
    assert!(matches!(err, AuditError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("tail was cut off"), "{err}");
}

#[tokio::test]
async fn detects_a_forged_checkpoint() {
    let (dir, keys) = log_with(10).await;
    // A second checkpoint, signed with a different key under the same id.
    let log = open(dir.path(), &keys, None).await;
    log.append(event(11)).await.unwrap();
    log.close().await.unwrap();
    let mut cps = lines(dir.path(), CHECKPOINT_FILE);
    assert_eq!(cps.len(), 3);
    let mut cp: serde_json::Value = serde_json::from_str(&cps[2]).unwrap();
    // Flip one character of the signature.
    let sig = cp["sig"].as_str().unwrap().to_owned();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    cp["sig"] = serde_json::Value::String(format!("{flipped}{}", &sig[1..]));
    cps[2] = cp.to_string();
    write_lines(dir.path(), CHECKPOINT_FILE, &cps);
    let f = failure(dir.path(), &keys);
    assert_eq!(f, VerifyFailure::BadSignature { index: 3 });
    assert_eq!(f.to_string(), "checkpoint 3: bad signature");

    // And checkpoints are not accepted under another key of the same id.
    let forger = new_keys();
    assert!(matches!(
        failure(dir.path(), &forger),
        VerifyFailure::BadSignature { index: 1 }
    ));
}

#[tokio::test]
async fn subscribers_see_durable_records() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let log = open(dir.path(), &keys, None).await;
    let mut rx = log.subscribe();
    for i in 1..=3 {
        log.append(event(i)).await.unwrap();
    }
    for i in 1..=3 {
        let r = rx.recv().await.unwrap();
        assert_eq!(r.seq, i);
        assert_eq!(r.event, event(i));
    }
    log.close().await.unwrap();
}

#[tokio::test]
async fn a_buffered_append_is_synced_on_its_own_and_published_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let config = AuditConfig {
        buffered_sync: Duration::from_millis(200),
        ..AuditConfig::default()
    };
    let log = open_with(dir.path(), &keys, config).await;
    let mut rx = log.subscribe();
    log.append_buffered(event(1)).await.unwrap();
    // Written but not yet durable: neither published nor counted.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(rx.try_recv().is_err());
    assert_eq!(log.last_seq(), 0);
    // With no other append to ride along, it is synced on its own.
    let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the buffered record is synced within its window")
        .unwrap();
    assert_eq!((r.seq, &r.event), (1, &event(1)));
    assert_eq!(log.last_seq(), 1);
    log.close().await.unwrap();
    assert_eq!(verify(dir.path(), &keys.public).unwrap().records, 1);
}

#[tokio::test]
async fn a_buffered_append_right_after_a_sync_is_synced_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let config = AuditConfig {
        buffered_sync: Duration::from_millis(100),
        ..AuditConfig::default()
    };
    let log = open_with(dir.path(), &keys, config).await;
    let mut rx = log.subscribe();
    for round in 0..5u64 {
        // The writer has just synced (and lingers for the window without a
        // wake-up per buffered append)...
        let seq = log.append(event(2 * round + 1)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().seq, seq);
        log.append_buffered(event(2 * round + 2)).await.unwrap();
        // ...and still syncs the buffered record by the end of it.
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("synced within the window")
            .unwrap();
        assert_eq!((r.seq, &r.event), (seq + 1, &event(2 * round + 2)));
        assert_eq!(log.last_seq(), seq + 1);
        // Let the writer go idle every other round, so both ways are taken.
        if round % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    log.close().await.unwrap();
    assert_eq!(verify(dir.path(), &keys.public).unwrap().records, 10);
}

#[tokio::test]
async fn a_waited_for_append_makes_earlier_buffered_ones_durable() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let config = AuditConfig {
        // Far longer than the test: only the waited-for append syncs.
        buffered_sync: Duration::from_secs(3600),
        ..AuditConfig::default()
    };
    let log = open_with(dir.path(), &keys, config).await;
    let mut rx = log.subscribe();
    log.append_buffered(event(1)).await.unwrap();
    log.append_buffered(event(2)).await.unwrap();
    assert_eq!(log.append(event(3)).await.unwrap(), 3);
    assert_eq!(log.last_seq(), 3);
    for i in 1..=3 {
        let r = rx.try_recv().expect("published with the sync");
        assert_eq!((r.seq, &r.event), (i, &event(i)));
    }
    assert_eq!(lines(dir.path(), LOG_FILE).len(), 3);
    // Shutdown syncs what is still buffered, and the checkpoint covers it.
    log.append_buffered(event(4)).await.unwrap();
    log.close().await.unwrap();
    let report = verify(dir.path(), &keys.public).unwrap();
    assert_eq!((report.records, report.checkpoints), (4, 2));
}

#[tokio::test]
async fn a_failed_write_fails_every_append_until_reopened() {
    if !Path::new("/dev/full").exists() {
        // As `latchkey_testkit::skip_or_fail("dev-full", ..)`, which this
        // crate does not depend on: a machine said to have the peer fails.
        let required = std::env::var("LATCHKEY_REQUIRE_PEERS")
            .is_ok_and(|v| v.split(',').any(|p| p.trim() == "dev-full"));
        assert!(
            !required,
            "`dev-full` is required (LATCHKEY_REQUIRE_PEERS names it) but there is no /dev/full"
        );
        eprintln!("SKIPPED: no /dev/full on this machine");
        return;
    }
    // As `latchkey_testkit::DevFull`: the writer locks its log, and every
    // log symlinked to /dev/full is one inode, so tests in other processes
    // that use it wait for each other instead of failing with `Locked`.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("latchkey-dev-full.lock"))
        .unwrap();
    lock.lock().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join(LOG_FILE)).unwrap();
    let keys = new_keys();
    let log = open(dir.path(), &keys, None).await;
    let err = log.append(event(1)).await.unwrap_err();
    assert!(matches!(err, AuditError::Unavailable(_)), "{err}");
    assert!(
        err.to_string()
            .contains("refused until the log is reopened"),
        "{err}"
    );
    assert!(log.failure().is_some());
    let err = log.append(event(2)).await.unwrap_err();
    assert!(matches!(err, AuditError::Unavailable(_)), "{err}");
    let err = log.append_buffered(event(3)).await.unwrap_err();
    assert!(matches!(err, AuditError::Unavailable(_)), "{err}");
    assert!(log.shutdown().await.is_err());
}

#[tokio::test]
async fn appends_after_shutdown_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let log = open(dir.path(), &keys, None).await;
    let other = log.clone();
    log.append(event(1)).await.unwrap();
    log.shutdown().await.unwrap();
    assert!(matches!(
        other.append(event(2)).await,
        Err(AuditError::Closed)
    ));
    other.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_partial_last_line_is_truncated_on_open() {
    let (dir, keys) = log_with(5).await;
    let path = dir.path().join(LOG_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"seq\":6,\"prev\":\"00");
    std::fs::write(&path, &bytes).unwrap();
    assert!(verify(dir.path(), &keys.public).unwrap().partial_tail);

    let log = open(dir.path(), &keys, None).await;
    assert_eq!(log.append(event(6)).await.unwrap(), 6);
    log.close().await.unwrap();
    let report = verify(dir.path(), &keys.public).unwrap();
    assert_eq!((report.records, report.partial_tail), (6, false));
}

#[tokio::test]
async fn a_corrupt_tail_is_refused() {
    let (dir, keys) = log_with(5).await;
    let mut l = lines(dir.path(), LOG_FILE);
    l[4] = l[4].replace("\"req-5\"", "\"req-6\"");
    write_lines(dir.path(), LOG_FILE, &l);
    let err = try_open(dir.path(), &keys, None).await.unwrap_err();
    assert!(matches!(err, AuditError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("latchkey audit verify"), "{err}");
}

#[tokio::test]
async fn periodic_checkpoints_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let config = AuditConfig {
        checkpoint_interval: Duration::from_millis(50),
        ..AuditConfig::default()
    };
    let log = open_with(dir.path(), &keys, config).await;
    log.append(event(1)).await.unwrap();
    let mut found = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if lines(dir.path(), CHECKPOINT_FILE).len() > 1 {
            found = true;
            break;
        }
    }
    assert!(found, "a checkpoint was written while the log is open");
    let report = verify(dir.path(), &keys.public).unwrap();
    assert_eq!(report.checkpoints, 2);
    log.close().await.unwrap();
    // No new records: shutdown adds no checkpoint.
    assert_eq!(lines(dir.path(), CHECKPOINT_FILE).len(), 2);
}

#[tokio::test]
async fn the_index_follows_the_log_and_catches_up() {
    // Records written while no index was attached...
    let (dir, keys) = log_with(30).await;
    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let log = open(dir.path(), &keys, Some(store.clone())).await;
    for i in 31..=40 {
        log.append(event(i)).await.unwrap();
    }
    log.close().await.unwrap();
    // ...are indexed on the next open, along with the new ones.
    let all = store
        .query_audit(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
    let rows = store
        .query_audit(&AuditQuery {
            job_id: Some("job-35".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.seq, 35);
    assert_eq!(row.principal.as_deref(), Some("workload:deploy"));
    assert_eq!(row.decision.as_deref(), Some("allow"));
    assert_eq!(row.action, "git.push");
    let back: AuditEvent = serde_json::from_str(&row.event_json).unwrap();
    assert_eq!(back, event(35));
}

#[tokio::test]
async fn wait_indexed_makes_a_query_see_what_was_just_logged() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let without = open(dir.path(), &keys, None).await;
    assert!(
        !without.wait_indexed(Duration::from_millis(10)).await,
        "no index, nothing to wait for"
    );
    without.close().await.unwrap();

    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let log = open(dir.path(), &keys, Some(store.clone())).await;
    for round in 1..=20u64 {
        log.append(event(round)).await.unwrap();
        log.append_buffered(event(100 + round)).await.unwrap();
        assert!(log.wait_indexed(Duration::from_secs(5)).await);
        let rows = store
            .query_audit(&AuditQuery {
                job_id: Some(format!("job-{round}")),
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "round {round}");
    }
    log.close().await.unwrap();
}

#[tokio::test]
async fn last_logged_seq_reads_the_tail_beside_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(latchkey_audit::last_logged_seq(dir.path()).unwrap(), 0);
    let keys = new_keys();
    let log = open(dir.path(), &keys, None).await;
    for i in 1..=3 {
        log.append(event(i)).await.unwrap();
    }
    // The writer holds its lock; the read needs none.
    assert_eq!(latchkey_audit::last_logged_seq(dir.path()).unwrap(), 3);
    log.close().await.unwrap();
    // A write in progress (a partial line) is not a record yet.
    let mut text = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
    text.push_str("{\"seq\":4,");
    std::fs::write(dir.path().join(LOG_FILE), text).unwrap();
    assert_eq!(latchkey_audit::last_logged_seq(dir.path()).unwrap(), 3);
}

#[tokio::test]
async fn index_failures_do_not_fail_appends_or_lose_rows() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let store = Arc::new(FlakyFakeIndex::default());
    store.fail_next.store(1, Ordering::SeqCst);
    let log = open(dir.path(), &keys, Some(store.clone())).await;
    for i in 1..=3 {
        assert_eq!(log.append(event(i)).await.unwrap(), i);
    }
    // The failed rows are filled in from the log (at the latest on close).
    log.close().await.unwrap();
    assert_eq!(
        store.fail_next.load(Ordering::SeqCst),
        0,
        "the failure was injected"
    );
    let rows = store.rows.lock().unwrap();
    assert_eq!(
        rows.keys().copied().collect::<Vec<_>>(),
        (1..=3).collect::<Vec<_>>()
    );
}

/// Prints appends/s with many concurrent appenders. Run with
/// `cargo test -p latchkey-audit --release -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let log = open(dir.path(), &keys, None).await;
    let tasks = 512u64;
    let per_task = 400u64;
    let start = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                log.append(event(t * per_task + i)).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = start.elapsed();
    let n = tasks * per_task;
    println!(
        "{n} durable appends in {elapsed:?}: {:.0} appends/s",
        n as f64 / elapsed.as_secs_f64()
    );
    log.close().await.unwrap();
    assert_eq!(verify(dir.path(), &keys.public).unwrap().records, n);
}

#[tokio::test]
async fn oversized_events_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let log = open(dir.path(), &keys, None).await;
    let big = event(1).with_context("blob", "x".repeat(latchkey_audit::MAX_EVENT_BYTES));
    assert!(matches!(
        log.append(big).await,
        Err(AuditError::TooLarge { .. })
    ));
    // The log is still usable.
    assert_eq!(log.append(event(1)).await.unwrap(), 1);
    log.close().await.unwrap();
}

#[test]
fn verifying_a_missing_log_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = verify(&dir.path().join("nope"), &[]).unwrap_err();
    assert!(matches!(err, AuditError::Io { .. }), "{err}");
}

// --- Issue 11, point 2: a log rewritten or cut without the key does not
// verify, and the writer does not extend it. ---

fn now_ms() -> u64 {
    SystemClock.unix_millis()
}

/// `event(n)` at a given time.
fn event_at(n: u64, time_ms: u64) -> AuditEvent {
    let mut e = event(n);
    e.time_ms = time_ms;
    e
}

fn checkpoints(dir: &Path) -> Vec<latchkey_audit::Checkpoint> {
    lines(dir, CHECKPOINT_FILE)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn refused(err: AuditError) -> VerifyFailure {
    match err {
        AuditError::Refused { failure, .. } => failure,
        other => panic!("expected the log to be refused, got {other}"),
    }
}

/// A closed log written in three sessions: records 1-10, 11-20, 21-30, so
/// checkpoints vouch for 0 (the empty log), 10, 20 and 30.
async fn log_in_sessions() -> (tempfile::TempDir, Keys) {
    let (dir, keys) = log_with(10).await;
    for session in 1..=2u64 {
        let log = open(dir.path(), &keys, None).await;
        for i in 1..=10 {
            log.append(event(session * 10 + i)).await.unwrap();
        }
        log.close().await.unwrap();
    }
    (dir, keys)
}

#[tokio::test]
async fn a_new_log_starts_with_a_checkpoint_of_the_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    open(dir.path(), &keys, None).await.close().await.unwrap();
    let cps = checkpoints(dir.path());
    assert_eq!(cps.len(), 1);
    assert_eq!(
        (cps[0].v, cps[0].n, cps[0].seq, cps[0].log_bytes),
        (2, 1, 0, 0)
    );
    assert_eq!(cps[0].prev, "0".repeat(64));
    let report = verify(dir.path(), &keys.public).unwrap();
    assert_eq!((report.records, report.checkpoints), (0, 1));
}

#[tokio::test]
async fn checkpoints_chain_to_each_other() {
    let (dir, keys) = log_in_sessions().await;
    let cps = checkpoints(dir.path());
    assert_eq!(
        cps.iter().map(|c| (c.n, c.seq)).collect::<Vec<_>>(),
        vec![(1, 0), (2, 10), (3, 20), (4, 30)]
    );
    for pair in cps.windows(2) {
        assert_eq!(pair[1].prev, pair[0].id());
    }
    let log_len = std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
    assert_eq!(cps[3].log_bytes, log_len);
    assert_eq!(verify(dir.path(), &keys.public).unwrap().checkpoints, 4);
}

#[tokio::test]
async fn regression_records_without_any_checkpoint_do_not_verify_or_open() {
    let (dir, keys) = log_with(20).await;
    write_lines(dir.path(), CHECKPOINT_FILE, &[]);
    std::fs::write(dir.path().join(CHECKPOINT_FILE), "").unwrap();
    let f = failure(dir.path(), &keys);
    assert_eq!(f, VerifyFailure::NoCheckpoint { seq: 1, line: 1 });
    assert_eq!(
        f.to_string(),
        "record 1 (line 1): no signed checkpoint vouches for the log (checkpoints.log was emptied or removed)"
    );
    std::fs::remove_file(dir.path().join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(
        failure(dir.path(), &keys),
        VerifyFailure::NoCheckpoint { seq: 1, line: 1 }
    );
    let err = try_open(dir.path(), &keys, None).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(
        refused(err),
        VerifyFailure::NoCheckpoint { seq: 1, line: 1 }
    );
    assert!(
        text.contains("latchkey audit verify") && text.contains("latchkey audit archive"),
        "{text}"
    );
}

#[tokio::test]
async fn regression_a_removed_checkpoint_is_a_gap_in_the_chain() {
    let (dir, keys) = log_in_sessions().await;
    let mut cps = lines(dir.path(), CHECKPOINT_FILE);
    cps.remove(2);
    write_lines(dir.path(), CHECKPOINT_FILE, &cps);
    let f = failure(dir.path(), &keys);
    assert_eq!(
        f,
        VerifyFailure::CheckpointGap {
            index: 3,
            n: 4,
            expected: 3
        }
    );
    assert_eq!(
        f.to_string(),
        "checkpoint 3: is number 4 where number 3 should follow (checkpoints were removed or replaced)"
    );
    // The first checkpoint cannot be removed either.
    let mut cps = lines(dir.path(), CHECKPOINT_FILE);
    cps.remove(0);
    write_lines(dir.path(), CHECKPOINT_FILE, &cps);
    assert!(matches!(
        failure(dir.path(), &keys),
        VerifyFailure::CheckpointGap {
            index: 1,
            n: 2,
            expected: 1
        }
    ));
}

#[tokio::test]
async fn regression_a_rewrite_that_drops_the_later_checkpoints_is_unvouched() {
    // Records 1-5 now, then 6-20 three seconds apart (42 s in all).
    let start = now_ms();
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let log = open(dir.path(), &keys, None).await;
    for i in 1..=5 {
        log.append(event_at(i, start)).await.unwrap();
    }
    log.close().await.unwrap();
    let log = open(dir.path(), &keys, None).await;
    for i in 6..=20 {
        log.append(event_at(i, start + (i - 6) * 3000))
            .await
            .unwrap();
    }
    log.close().await.unwrap();
    verify(dir.path(), &keys.public).unwrap();

    // Change record 8, rechain from there, and drop the checkpoint that
    // would show it.
    let mut l = lines(dir.path(), LOG_FILE);
    l[7] = l[7].replace("\"req-8\"", "\"req-99\"");
    rehash(&mut l, 7, true);
    write_lines(dir.path(), LOG_FILE, &l);
    let mut cps = lines(dir.path(), CHECKPOINT_FILE);
    cps.pop();
    write_lines(dir.path(), CHECKPOINT_FILE, &cps);

    // Record 13 (21 s after record 6) is later than the 10 s interval (and
    // its 10 s of slack) explains: a checkpoint was due before it.
    let f = failure(dir.path(), &keys);
    assert_eq!(
        f,
        VerifyFailure::Unvouched {
            seq: 13,
            line: 13,
            checkpoint_seq: 5
        }
    );
    assert!(
        f.to_string()
            .contains("no checkpoint after record 5 vouches for it"),
        "{f}"
    );
    assert!(matches!(
        refused(try_open(dir.path(), &keys, None).await.unwrap_err()),
        VerifyFailure::Unvouched { seq: 13, .. }
    ));
    // A longer configured interval explains it.
    let opts = VerifyOptions {
        checkpoint_interval: Duration::from_secs(30),
        ..VerifyOptions::new(&keys.public)
    };
    assert_eq!(verify_with(dir.path(), &opts).unwrap().unvouched, 15);
}

/// `verify` measures the tail after the last checkpoint in the log's own
/// time (event and checkpoint `time_ms`), so the writer counts the interval
/// on that clock too: a clock that has moved a whole interval on (a resumed
/// machine, a wall clock set forward, a test's `FakeClock`) gets its
/// checkpoint with the next append, not an interval of real time later.
#[tokio::test]
async fn regression_a_checkpoint_comes_due_on_the_logs_clock() {
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let fake = Arc::new(FakeClock::at(now_ms() / 1000));
    let interval = Duration::from_secs(3600);
    let signer = AuditSigner::from_pkcs8("audit-1", &keys.der).unwrap();
    let config = AuditConfig {
        checkpoint_interval: interval,
        ..AuditConfig::default()
    };
    let log = AuditLog::open(dir.path(), signer, None, fake.clone(), config)
        .await
        .unwrap();
    log.append(event_at(1, fake.unix_millis())).await.unwrap();
    // Within the interval on both clocks: only the new log's checkpoint.
    assert_eq!(checkpoints(dir.path()).len(), 1);

    fake.advance(interval + Duration::from_secs(1));
    log.append(event_at(2, fake.unix_millis())).await.unwrap();
    let mut cps = log.checkpoints();
    let cp = tokio::time::timeout(Duration::from_secs(5), cps.wait_for(|cp| cp.seq == 2))
        .await
        .expect("a checkpoint over record 2 without waiting an hour")
        .unwrap()
        .clone();
    assert_eq!(cp.time_ms, fake.unix_millis());
    log.close().await.unwrap();
    let opts = VerifyOptions {
        checkpoint_interval: interval,
        ..VerifyOptions::new(&keys.public)
    };
    let report = verify_with(dir.path(), &opts).unwrap();
    assert_eq!((report.records, report.unvouched), (2, 0));
}

#[tokio::test]
async fn a_crash_tail_within_the_interval_is_signed_over_at_open() {
    let (dir, keys) = log_with(8).await;
    // As if the writer died before its checkpoint at 8.
    let mut cps = lines(dir.path(), CHECKPOINT_FILE);
    cps.pop();
    write_lines(dir.path(), CHECKPOINT_FILE, &cps);
    let report = verify(dir.path(), &keys.public).unwrap();
    assert_eq!(report.unvouched, 8);

    let log = open(dir.path(), &keys, None).await;
    assert_eq!(log.unvouched_at_open(), Some((1, 8)));
    let mut cps = log.checkpoints();
    tokio::time::timeout(Duration::from_secs(5), cps.wait_for(|cp| cp.seq == 8))
        .await
        .unwrap()
        .unwrap();
    log.close().await.unwrap();
    assert_eq!(verify(dir.path(), &keys.public).unwrap().unvouched, 0);
}

#[tokio::test]
async fn regression_an_index_ahead_of_the_log_means_a_cut_tail() {
    let store: SharedStore = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let keys = new_keys();
    let log = open(dir.path(), &keys, Some(store.clone())).await;
    for i in 1..=30 {
        log.append(event(i)).await.unwrap();
    }
    assert!(log.wait_indexed(Duration::from_secs(5)).await);
    log.close().await.unwrap();

    // Cut records 21-30 together with the checkpoint that vouched for them.
    let l = lines(dir.path(), LOG_FILE);
    write_lines(dir.path(), LOG_FILE, &l[..20]);
    let mut cps = lines(dir.path(), CHECKPOINT_FILE);
    cps.pop();
    write_lines(dir.path(), CHECKPOINT_FILE, &cps);
    // Without the index it looks like a crash...
    assert_eq!(verify(dir.path(), &keys.public).unwrap().unvouched, 20);
    // ...but the index knows better.
    let opts = VerifyOptions {
        index_max_seq: Some(30),
        ..VerifyOptions::new(&keys.public)
    };
    let Err(AuditError::Verify(f)) = verify_with(dir.path(), &opts) else {
        panic!("an index ahead of the log must fail verification");
    };
    assert_eq!(
        f,
        VerifyFailure::IndexAhead {
            index_seq: 30,
            log_seq: 20
        }
    );
    assert_eq!(
        f.to_string(),
        "the audit index holds records up to 30 but the log ends at 20 (the log was cut)"
    );
    assert!(matches!(
        refused(try_open(dir.path(), &keys, Some(store)).await.unwrap_err()),
        VerifyFailure::IndexAhead { .. }
    ));
}

#[tokio::test]
async fn regression_a_witness_catches_a_cut_the_local_files_cannot_show() {
    let (dir, keys) = log_in_sessions().await;
    let witnessed = checkpoints(dir.path());
    let with_witness = |w: &[latchkey_audit::Checkpoint]| {
        let opts = VerifyOptions {
            witness: w,
            ..VerifyOptions::new(&keys.public)
        };
        verify_with(dir.path(), &opts)
    };
    assert_eq!(with_witness(&witnessed).unwrap().witnessed, 4);

    // Cut back exactly to the checkpoint at 20: locally a clean log.
    let l = lines(dir.path(), LOG_FILE);
    write_lines(dir.path(), LOG_FILE, &l[..20]);
    let cps = lines(dir.path(), CHECKPOINT_FILE);
    write_lines(dir.path(), CHECKPOINT_FILE, &cps[..3]);
    verify(dir.path(), &keys.public).unwrap();
    let Err(AuditError::Verify(f)) = with_witness(&witnessed) else {
        panic!("a witnessed checkpoint the log lacks must fail verification");
    };
    assert_eq!(f, VerifyFailure::WitnessMissing { n: 4, seq: 30 });
    assert_eq!(
        f.to_string(),
        "the witness holds checkpoint 4 (record 30) but the log does not (the log or its checkpoints were cut or replaced)"
    );
    // A witness that holds only some checkpoints proves those.
    assert_eq!(with_witness(&witnessed[1..3]).unwrap().witnessed, 2);
}

#[tokio::test]
async fn regression_a_witness_contradicts_a_log_rewritten_with_the_key() {
    // Someone with the key writes a different log of the same length.
    let (dir, keys) = log_with(10).await;
    let witnessed = checkpoints(dir.path());
    std::fs::remove_file(dir.path().join(LOG_FILE)).unwrap();
    std::fs::remove_file(dir.path().join(CHECKPOINT_FILE)).unwrap();
    let log = open(dir.path(), &keys, None).await;
    for i in 1..=10 {
        log.append(event(i + 100)).await.unwrap();
    }
    log.close().await.unwrap();
    verify(dir.path(), &keys.public).unwrap();
    let opts = VerifyOptions {
        witness: &witnessed,
        ..VerifyOptions::new(&keys.public)
    };
    assert!(matches!(
        verify_with(dir.path(), &opts),
        Err(AuditError::Verify(VerifyFailure::WitnessContradicts { .. }))
    ));
}

#[tokio::test]
async fn an_old_format_checkpoint_file_is_refused_with_a_hint() {
    let (dir, keys) = log_with(3).await;
    let mut cp: serde_json::Value =
        serde_json::from_str(&lines(dir.path(), CHECKPOINT_FILE)[1]).unwrap();
    for field in ["v", "n", "prev", "log_bytes"] {
        cp.as_object_mut().unwrap().remove(field);
    }
    write_lines(dir.path(), CHECKPOINT_FILE, &[cp.to_string()]);
    let f = failure(dir.path(), &keys);
    assert_eq!(f, VerifyFailure::OldCheckpointFormat { index: 1, v: 0 });
    assert!(f.to_string().contains("`latchkey audit archive`"), "{f}");
}

#[tokio::test]
async fn archive_moves_the_log_aside_and_the_next_open_starts_a_new_one() {
    let (dir, keys) = log_with(10).await;
    let last_hash = verify(dir.path(), &keys.public).unwrap().last_hash;
    // Not while a writer holds the log.
    let log = open(dir.path(), &keys, None).await;
    assert!(matches!(
        latchkey_audit::archive(dir.path(), now_ms()),
        Err(AuditError::Locked { .. })
    ));
    log.close().await.unwrap();

    let archived = latchkey_audit::archive(dir.path(), now_ms()).unwrap();
    assert_eq!(archived.last_seq, 10);
    assert_eq!(archived.last_hash.as_deref(), Some(last_hash.as_str()));
    assert!(archived.dir.starts_with(dir.path().join("archive")));
    assert!(!dir.path().join(LOG_FILE).exists());
    // The archived log still verifies where it is.
    assert_eq!(verify(&archived.dir, &keys.public).unwrap().records, 10);

    let log = open(dir.path(), &keys, None).await;
    assert_eq!(log.last_seq(), 0);
    log.append(event(1)).await.unwrap();
    log.close().await.unwrap();
    assert_eq!(verify(dir.path(), &keys.public).unwrap().records, 1);
}

#[cfg(unix)]
#[tokio::test]
async fn audit_files_and_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data").join("audit");
    let keys = new_keys();
    let log = open(&dir, &keys, None).await;
    log.append(event(1)).await.unwrap();
    log.close().await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&parent.path().join("data")), 0o700);
    assert_eq!(mode(&dir.join(LOG_FILE)), 0o600);
    assert_eq!(mode(&dir.join(CHECKPOINT_FILE)), 0o600);
    let archived = latchkey_audit::archive(&dir, now_ms()).unwrap();
    assert_eq!(mode(&archived.dir), 0o700);
    assert_eq!(mode(&dir.join("archive")), 0o700);
}
