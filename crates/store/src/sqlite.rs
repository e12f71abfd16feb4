//! The embedded SQLite backend.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::UnixTime;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection};

use crate::schema::{BOOKKEEPING, MIGRATIONS};
use crate::{
    AuditIndexRow, AuditQuery, Revocation, RevocationKind, RevocationMode, Store, StoreError,
    StoredSession, StoredSigningKey,
};

/// How long a connection waits for another writer before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool of a file database (WAL lets readers run beside the writer).
const FILE_POOL_SIZE: u32 = 4;
/// Pause between attempts to switch a fresh file to WAL.
const WAL_RETRY: Duration = Duration::from_millis(50);
/// Rows a query returns when the caller asks for `limit: 0`.
pub const DEFAULT_AUDIT_LIMIT: u32 = 1000;
/// Audit rows per multi-row INSERT: 100 rows x 11 columns stays far below
/// SQLite's bound-parameter limit while cutting round trips a hundredfold.
const AUDIT_INSERT_CHUNK: usize = 100;
/// Sorts after every other character; closes the index range of a prefix match.
const MAX_CHAR: char = '\u{10FFFF}';

/// The embedded default [`Store`]: one SQLite file in WAL mode with
/// `synchronous=FULL`, so a committed write survives power loss.
///
/// The audit index is the exception: it is rebuilt from the audit log
/// (the indexer catches up from the file), so its commits go through their
/// own connection with `synchronous=NORMAL` and do not wait for a disk sync
/// that would compete with the audit log's own.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    index_pool: SqlitePool,
    /// Document commits of this process, one at a time: SQLite has one
    /// writer, and concurrent `BEGIN IMMEDIATE`s would otherwise meet
    /// SQLITE_BUSY and sleep in its busy handler (tens of milliseconds)
    /// instead of queueing. Another process (`latchkey documents import`)
    /// still waits through the busy timeout.
    pub(crate) document_writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and brings its
    /// schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        create_private_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("case_sensitive_like", "ON");
        let cannot_open = |e: sqlx::Error| {
            StoreError::Unavailable(format!(
                "cannot open database `{}`: {e}; check that the directory exists and is writable",
                path.display()
            ))
        };
        enable_wal(&options).await.map_err(cannot_open)?;
        // WAL is a persistent property of the file, so pool connections need
        // not (and should not, see `enable_wal`) set it again.
        let pool = SqlitePoolOptions::new()
            .max_connections(FILE_POOL_SIZE)
            .connect_with(options.clone())
            .await
            .map_err(cannot_open)?;
        // One connection: index batches come one at a time, in seq order.
        let index_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.synchronous(SqliteSynchronous::Normal))
            .await
            .map_err(cannot_open)?;
        Self::from_pools(pool, index_pool).await
    }

    /// Opens a private in-memory database, for tests. It lives as long as
    /// the store (one connection that is never recycled).
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true)
            .pragma("case_sensitive_like", "ON");
        // INVARIANT: exactly one connection that never idles out or expires;
        // closing it would drop the whole database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open in-memory database: {e}")))?;
        Self::from_pools(pool.clone(), pool).await
    }

    async fn from_pools(pool: SqlitePool, index_pool: SqlitePool) -> Result<Self, StoreError> {
        let store = Self {
            pool,
            index_pool,
            document_writer: std::sync::Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Closes every connection, checkpointing the WAL. Later calls fail.
    pub async fn close(&self) {
        self.index_pool.close().await;
        self.pool.close().await;
    }

    /// Versions recorded in `schema_migrations`, ascending.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error("reading schema versions", e))?;
        rows.iter()
            .map(|r| {
                r.try_get::<i64, _>("version")
                    .map_err(|e| db_error("reading schema versions", e))
            })
            .collect()
    }

    /// Applies every migration not yet recorded, each in its own immediate
    /// transaction, so two processes starting at once do not both apply one.
    async fn migrate(&self) -> Result<(), StoreError> {
        let fail = |what: &str, e: sqlx::Error| StoreError::Migration(format!("{what}: {e}"));
        sqlx::raw_sql(BOOKKEEPING)
            .execute(&self.pool)
            .await
            .map_err(|e| fail("creating `schema_migrations`", e))?;
        let known = MIGRATIONS.last().map_or(0, |m| m.version);
        for migration in MIGRATIONS {
            let mut tx = self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(|e| fail("starting a migration transaction", e))?;
            let newest: Option<i64> = sqlx::query("SELECT MAX(version) FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| fail("reading schema versions", e))?;
            if let Some(newest) = newest
                && newest > known
            {
                return Err(StoreError::Migration(format!(
                    "the database has schema version {newest} but this build knows only up to \
                     {known}; run a newer latchkey"
                )));
            }
            let applied = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = ?")
                .bind(migration.version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| fail("reading schema versions", e))?
                .is_some();
            if applied {
                continue;
            }
            let context = format!(
                "applying migration {} `{}`",
                migration.version, migration.name
            );
            sqlx::raw_sql(migration.sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| fail(&context, e))?;
            sqlx::query("INSERT INTO schema_migrations (version, name) VALUES (?, ?)")
                .bind(migration.version)
                .bind(migration.name)
                .execute(&mut *tx)
                .await
                .map_err(|e| fail(&context, e))?;
            tx.commit().await.map_err(|e| fail(&context, e))?;
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied store migration"
            );
        }
        Ok(())
    }
}

/// Creates the database file, if missing, readable and writable only by its
/// owner whatever the umask. SQLite gives its `-wal` and `-shm` files the
/// database file's mode, so they are private too.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map(drop).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot create database `{}`: {e}; check that the directory exists and is writable",
            path.display()
        ))
    })
}

/// Switches the file to WAL mode. That needs an exclusive lock SQLite's busy
/// timeout does not wait for, so two nodes creating the file at once retry here.
async fn enable_wal(options: &SqliteConnectOptions) -> Result<(), sqlx::Error> {
    let options = options.clone().journal_mode(SqliteJournalMode::Wal);
    let mut waited = Duration::ZERO;
    loop {
        match SqliteConnection::connect_with(&options).await {
            Ok(conn) => return conn.close().await,
            Err(e) if is_busy(&e) && waited < BUSY_TIMEOUT => {
                tokio::time::sleep(WAL_RETRY).await;
                waited += WAL_RETRY;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `SQLITE_BUSY` or `SQLITE_LOCKED`, including their extended codes.
pub(crate) fn is_busy(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    db.code()
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

/// Maps a driver error to the store's vocabulary. SQLite's messages name
/// tables and columns, never bound values, so no secret leaks through here.
pub(crate) fn db_error(context: &str, e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(db) => match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => {
                StoreError::Conflict(format!("{context}: {}", db.message()))
            }
            _ => StoreError::Unavailable(format!("{context}: {}", db.message())),
        },
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. } => {
            StoreError::Corrupt(format!("{context}: {e}"))
        }
        other => StoreError::Unavailable(format!("{context}: {other}")),
    }
}

/// SQLite integers are signed 64-bit; refuse what does not fit instead of wrapping.
fn to_db(field: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        StoreError::Invalid(format!(
            "`{field}` = {value} exceeds the largest storable number {}",
            i64::MAX
        ))
    })
}

/// For filter bounds: every stored value is at most `i64::MAX`, so clamping keeps the meaning.
fn clamp_to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_db(field: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("`{field}` holds a negative number {value}")))
}

fn get<'r, T>(row: &'r SqliteRow, column: &str, context: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get::<T, _>(column)
        .map_err(|e| db_error(context, e))
}

fn get_u64(row: &SqliteRow, column: &str, context: &str) -> Result<u64, StoreError> {
    from_db(column, get::<i64>(row, column, context)?)
}

fn decode_signing_key(row: &SqliteRow) -> Result<StoredSigningKey, StoreError> {
    const CTX: &str = "reading signing keys";
    Ok(StoredSigningKey {
        kid: get(row, "kid", CTX)?,
        algorithm: get(row, "algorithm", CTX)?,
        public_key: get(row, "public_key", CTX)?,
        encrypted_private_key: get(row, "encrypted_private_key", CTX)?,
        created_at: get_u64(row, "created_at", CTX)?,
        signs_from: get_u64(row, "signs_from", CTX)?,
        signs_until: get_u64(row, "signs_until", CTX)?,
        published_until: get_u64(row, "published_until", CTX)?,
    })
}

fn decode_revocation(row: &SqliteRow) -> Result<Revocation, StoreError> {
    const CTX: &str = "reading revocations";
    let kind: String = get(row, "kind", CTX)?;
    let mode: String = get(row, "mode", CTX)?;
    let expires_at: Option<i64> = get(row, "expires_at", CTX)?;
    Ok(Revocation {
        kind: RevocationKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown revocation kind `{kind}`")))?,
        value: get(row, "value", CTX)?,
        mode: RevocationMode::parse(&mode)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown revocation mode `{mode}`")))?,
        created_at: get_u64(row, "created_at", CTX)?,
        expires_at: expires_at.map(|v| from_db("expires_at", v)).transpose()?,
        reason: get(row, "reason", CTX)?,
    })
}

fn decode_audit_row(row: &SqliteRow) -> Result<AuditIndexRow, StoreError> {
    const CTX: &str = "reading the audit index";
    Ok(AuditIndexRow {
        node: String::new(),
        seq: get_u64(row, "seq", CTX)?,
        time_ms: get_u64(row, "time_ms", CTX)?,
        request_id: get(row, "request_id", CTX)?,
        principal: get(row, "principal", CTX)?,
        action: get(row, "action", CTX)?,
        resource: get(row, "resource", CTX)?,
        decision: get(row, "decision", CTX)?,
        commit: get(row, "commit_id", CTX)?,
        job_id: get(row, "job_id", CTX)?,
        event_json: get(row, "event_json", CTX)?,
    })
}

/// The id half of `kind:id`, stored separately so an id-only query can use an index.
fn principal_id(principal: &str) -> Option<&str> {
    principal.split_once(':').map(|(_, id)| id)
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

const AUDIT_COLUMNS: &str = "seq, time_ms, request_id, principal, action, resource, decision, commit_id, job_id, event_json";

/// Builds the SELECT for an [`AuditQuery`]; every set field adds one condition.
fn audit_select(query: &AuditQuery) -> QueryBuilder<Sqlite> {
    let mut qb = QueryBuilder::<Sqlite>::new("SELECT ");
    qb.push(AUDIT_COLUMNS).push(" FROM audit_index WHERE 1 = 1");
    if let Some(principal) = &query.principal {
        if principal.contains(':') {
            qb.push(" AND principal = ").push_bind(principal.clone());
        } else {
            qb.push(" AND (principal = ")
                .push_bind(principal.clone())
                .push(" OR principal_id = ")
                .push_bind(principal.clone())
                .push(")");
        }
    }
    if let Some(resource) = &query.resource {
        qb.push(" AND resource LIKE ")
            .push_bind(format!("%{}%", escape_like(resource)))
            .push(" ESCAPE '\\'");
    }
    if let Some(action) = &query.action {
        qb.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(decision) = &query.decision {
        qb.push(" AND decision = ").push_bind(decision.clone());
    }
    if let Some(commit) = &query.commit {
        // A range on the index narrows the scan; the substr test makes it exact.
        qb.push(" AND commit_id >= ")
            .push_bind(commit.clone())
            .push(" AND commit_id < ")
            .push_bind(format!("{commit}{MAX_CHAR}"))
            .push(" AND substr(commit_id, 1, ")
            .push_bind(i64::try_from(commit.chars().count()).unwrap_or(i64::MAX))
            .push(") = ")
            .push_bind(commit.clone());
    }
    if let Some(job_id) = &query.job_id {
        qb.push(" AND job_id = ").push_bind(job_id.clone());
    }
    if let Some(since) = query.since_ms {
        qb.push(" AND time_ms >= ").push_bind(clamp_to_db(since));
    }
    if let Some(until) = query.until_ms {
        qb.push(" AND time_ms < ").push_bind(clamp_to_db(until));
    }
    if let Some(after) = query.after_seq {
        qb.push(" AND seq > ").push_bind(clamp_to_db(after));
    }
    let limit = if query.limit == 0 {
        DEFAULT_AUDIT_LIMIT
    } else {
        query.limit
    };
    // `newest` takes the last `limit` rows; the caller reverses them to ascending.
    let order = if query.newest { "DESC" } else { "ASC" };
    qb.push(" ORDER BY seq ")
        .push(order)
        .push(" LIMIT ")
        .push_bind(i64::from(limit));
    qb
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        let context = format!("inserting signing key `{}`", key.kid);
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, public_key, encrypted_private_key, \
             created_at, signs_from, signs_until, published_until) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.public_key[..])
        .bind(&key.encrypted_private_key[..])
        .bind(to_db("created_at", key.created_at)?)
        .bind(to_db("signs_from", key.signs_from)?)
        .bind(to_db("signs_until", key.signs_until)?)
        .bind(to_db("published_until", key.published_until)?)
        .execute(&self.pool)
        .await
        .map_err(|e| match db_error(&context, e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "signing key `{}` already exists; generate a new kid",
                key.kid
            )),
            other => other,
        })?;
        Ok(())
    }

    async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, public_key, encrypted_private_key, created_at, signs_from, \
             signs_until, published_until FROM signing_keys ORDER BY created_at ASC, kid ASC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("listing signing keys", e))?;
        rows.iter().map(decode_signing_key).collect()
    }

    async fn update_signing_key_schedule(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        let context = format!("updating the schedule of signing key `{}`", key.kid);
        let done = sqlx::query(
            "UPDATE signing_keys SET signs_from = ?, signs_until = ?, published_until = ? \
             WHERE kid = ?",
        )
        .bind(to_db("signs_from", key.signs_from)?)
        .bind(to_db("signs_until", key.signs_until)?)
        .bind(to_db("published_until", key.published_until)?)
        .bind(&key.kid)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(&context, e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Invalid(format!(
                "signing key `{}` does not exist; insert it before scheduling it",
                key.kid
            )));
        }
        Ok(())
    }

    async fn delete_signing_key(&self, kid: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM signing_keys WHERE kid = ?")
            .bind(kid)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(&format!("deleting signing key `{kid}`"), e))?;
        Ok(())
    }

    async fn insert_revocation(&self, revocation: &Revocation) -> Result<(), StoreError> {
        let context = format!(
            "recording {} of {} `{}`",
            revocation.mode.as_str(),
            revocation.kind.as_str(),
            revocation.value
        );
        // Repeating a revocation widens it, never narrows it: the later
        // `created_at` kills tokens issued since the first, and the later (or
        // absent) expiry wins.
        sqlx::query(
            "INSERT INTO revocations (kind, value, mode, created_at, expires_at, reason) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (kind, value, mode) DO UPDATE SET \
             created_at = CASE WHEN excluded.created_at > revocations.created_at \
                 THEN excluded.created_at ELSE revocations.created_at END, \
             expires_at = CASE WHEN excluded.expires_at IS NULL OR revocations.expires_at IS NULL \
                 THEN NULL \
                 WHEN excluded.expires_at > revocations.expires_at THEN excluded.expires_at \
                 ELSE revocations.expires_at END, \
             reason = excluded.reason",
        )
        .bind(revocation.kind.as_str())
        .bind(&revocation.value)
        .bind(revocation.mode.as_str())
        .bind(to_db("created_at", revocation.created_at)?)
        .bind(
            revocation
                .expires_at
                .map(|v| to_db("expires_at", v))
                .transpose()?,
        )
        .bind(&revocation.reason)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(&context, e))?;
        Ok(())
    }

    async fn list_revocations(&self, now: UnixTime) -> Result<Vec<Revocation>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, value, mode, created_at, expires_at, reason FROM revocations \
             WHERE expires_at IS NULL OR expires_at > ? \
             ORDER BY created_at ASC, kind ASC, value ASC, mode ASC",
        )
        .bind(clamp_to_db(now))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("listing revocations", e))?;
        rows.iter().map(decode_revocation).collect()
    }

    async fn delete_revocation(
        &self,
        kind: RevocationKind,
        value: &str,
        mode: RevocationMode,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM revocations WHERE kind = ? AND value = ? AND mode = ?")
            .bind(kind.as_str())
            .bind(value)
            .bind(mode.as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| {
                db_error(
                    &format!("lifting {} of {} `{value}`", mode.as_str(), kind.as_str()),
                    e,
                )
            })?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_delivery(
        &self,
        source: &str,
        delivery_id: &str,
        at: UnixTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries (source, delivery_id, received_at) VALUES (?, ?, ?) \
             ON CONFLICT (source, delivery_id) DO NOTHING",
        )
        .bind(source)
        .bind(delivery_id)
        .bind(to_db("received_at", at)?)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            db_error(
                &format!("recording delivery `{delivery_id}` from `{source}`"),
                e,
            )
        })?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_signed_body(
        &self,
        source: &str,
        digest: &str,
        at: UnixTime,
        window: u64,
    ) -> Result<bool, StoreError> {
        // Body digests share `webhook_deliveries` under `body:{source}`, a
        // namespace no delivery source uses.
        let namespace = format!("body:{source}");
        let cutoff = to_db("received_at", at.saturating_sub(window))?;
        let ctx = || format!("recording a webhook body from `{source}`");
        let mut tx = self.pool.begin().await.map_err(|e| db_error(&ctx(), e))?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE source = ? AND received_at <= ?")
            .bind(&namespace)
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&ctx(), e))?;
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries (source, delivery_id, received_at) VALUES (?, ?, ?) \
             ON CONFLICT (source, delivery_id) DO NOTHING",
        )
        .bind(&namespace)
        .bind(digest)
        .bind(to_db("received_at", at)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&ctx(), e))?;
        tx.commit().await.map_err(|e| db_error(&ctx(), e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn index_audit_events(&self, rows: &[AuditIndexRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        const CTX: &str = "indexing audit events";
        // Convert first so a bad row fails the batch before any write.
        let mut numbers = Vec::with_capacity(rows.len());
        for row in rows {
            numbers.push((to_db("seq", row.seq)?, to_db("time_ms", row.time_ms)?));
        }
        let mut tx = self
            .index_pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error(CTX, e))?;
        for (chunk, nums) in rows
            .chunks(AUDIT_INSERT_CHUNK)
            .zip(numbers.chunks(AUDIT_INSERT_CHUNK))
        {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO audit_index (seq, time_ms, request_id, principal, principal_id, \
                 action, resource, decision, commit_id, job_id, event_json) ",
            );
            qb.push_values(chunk.iter().zip(nums), |mut b, (row, (seq, time_ms))| {
                b.push_bind(*seq)
                    .push_bind(*time_ms)
                    .push_bind(row.request_id.as_str())
                    .push_bind(row.principal.as_deref())
                    .push_bind(row.principal.as_deref().and_then(principal_id))
                    .push_bind(row.action.as_str())
                    .push_bind(row.resource.as_deref())
                    .push_bind(row.decision.as_deref())
                    .push_bind(row.commit.as_deref())
                    .push_bind(row.job_id.as_deref())
                    .push_bind(row.event_json.as_str());
            });
            qb.push(" ON CONFLICT (seq) DO NOTHING");
            qb.build()
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(CTX, e))?;
        }
        tx.commit().await.map_err(|e| db_error(CTX, e))?;
        Ok(())
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditIndexRow>, StoreError> {
        let mut qb = audit_select(query);
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error("querying the audit index", e))?;
        let mut out = rows
            .iter()
            .map(decode_audit_row)
            .collect::<Result<Vec<_>, _>>()?;
        if query.newest {
            out.reverse();
        }
        Ok(out)
    }

    async fn max_audit_seq(&self) -> Result<Option<u64>, StoreError> {
        const CTX: &str = "reading the highest audit seq";
        let max: Option<i64> = sqlx::query("SELECT MAX(seq) FROM audit_index")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| db_error(CTX, e))?;
        max.map(|v| from_db("seq", v)).transpose()
    }

    async fn clear_audit_index(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM audit_index")
            .execute(&self.index_pool)
            .await
            .map_err(|e| db_error("clearing the audit index", e))?;
        Ok(())
    }

    async fn insert_session(&self, session: &StoredSession) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, subject, issuer, principal_json, secrets, created_at, \
             last_seen_at, expires_at, id_token_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&session.id_hash)
        .bind(&session.subject)
        .bind(&session.issuer)
        .bind(&session.principal_json)
        .bind(&session.secrets)
        .bind(to_db("created_at", session.created_at)?)
        .bind(to_db("last_seen_at", session.last_seen_at)?)
        .bind(to_db("expires_at", session.expires_at)?)
        .bind(to_db("id_token_expires_at", session.id_token_expires_at)?)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("adding a session", e))?;
        Ok(())
    }

    async fn get_session(&self, id_hash: &str) -> Result<Option<StoredSession>, StoreError> {
        let context = "reading a session";
        let row = sqlx::query(
            "SELECT id_hash, subject, issuer, principal_json, secrets, created_at, last_seen_at, \
             expires_at, id_token_expires_at FROM sessions WHERE id_hash = ?",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(context, e))?;
        let Some(r) = row else {
            return Ok(None);
        };
        Ok(Some(StoredSession {
            id_hash: get(&r, "id_hash", context)?,
            subject: get(&r, "subject", context)?,
            issuer: get(&r, "issuer", context)?,
            principal_json: get(&r, "principal_json", context)?,
            secrets: get(&r, "secrets", context)?,
            created_at: from_db("created_at", get(&r, "created_at", context)?)?,
            last_seen_at: from_db("last_seen_at", get(&r, "last_seen_at", context)?)?,
            expires_at: from_db("expires_at", get(&r, "expires_at", context)?)?,
            id_token_expires_at: from_db(
                "id_token_expires_at",
                get(&r, "id_token_expires_at", context)?,
            )?,
        }))
    }

    async fn update_session(&self, session: &StoredSession) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET principal_json = ?, secrets = ?, last_seen_at = ?, \
             id_token_expires_at = ? WHERE id_hash = ?",
        )
        .bind(&session.principal_json)
        .bind(&session.secrets)
        .bind(to_db("last_seen_at", session.last_seen_at)?)
        .bind(to_db("id_token_expires_at", session.id_token_expires_at)?)
        .bind(&session.id_hash)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("updating a session", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_session(&self, id_hash: &str, at: UnixTime) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET last_seen_at = ? WHERE id_hash = ? AND last_seen_at < ?",
        )
        .bind(to_db("last_seen_at", at)?)
        .bind(id_hash)
        .bind(to_db("last_seen_at", at)?)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("touching a session", e))?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        // Not moved: either gone or already at `at` or later.
        Ok(self.get_session(id_hash).await?.is_some())
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("ending a session", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_sessions_of(&self, subject: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE subject = ?")
            .bind(subject)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("ending a subject's sessions", e))?;
        Ok(done.rows_affected())
    }

    async fn delete_expired_sessions(
        &self,
        now: UnixTime,
        idle_before: UnixTime,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= ? OR last_seen_at < ?")
            .bind(clamp_to_db(now))
            .bind(clamp_to_db(idle_before))
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("removing expired sessions", e))?;
        Ok(done.rows_affected())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let context = format!("reading metadata `{key}`");
        let row = sqlx::query("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error(&context, e))?;
        row.map(|r| get::<Vec<u8>>(&r, "value", &context))
            .transpose()
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(&format!("writing metadata `{key}`"), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, subject: &str, at: u64) -> StoredSession {
        StoredSession {
            id_hash: id.into(),
            subject: subject.into(),
            issuer: "okta".into(),
            principal_json: "{}".into(),
            secrets: vec![1, 2, 3],
            created_at: at,
            last_seen_at: at,
            expires_at: at + 100,
            id_token_expires_at: at + 10,
        }
    }

    #[tokio::test]
    async fn sessions_are_kept_touched_and_ended_by_id_subject_and_age() {
        let store = SqliteStore::open_in_memory()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .insert_session(&session("a", "alice", 1000))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .insert_session(&session("b", "alice", 1000))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .insert_session(&session("c", "bob", 1000))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            store.insert_session(&session("a", "x", 1)).await,
            Err(StoreError::Conflict(_))
        ));
        let got = store
            .get_session("a")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, Some(session("a", "alice", 1000)));
        assert!(
            store
                .touch_session("c", 1050)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert!(
            !store
                .touch_session("zz", 1050)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert_eq!(
            store
                .delete_sessions_of("alice")
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            2
        );
        assert_eq!(
            store
                .get_session("a")
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            None
        );
        // c was seen at 1050: idle cut-off 1040 keeps it, 1060 removes it.
        assert_eq!(
            store
                .delete_expired_sessions(1060, 1040)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            0
        );
        assert_eq!(
            store
                .delete_expired_sessions(1060, 1060)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            1
        );
    }

    async fn pragma(store: &SqliteStore, name: &'static str) -> String {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
            .fetch_one(&store.pool)
            .await
            .unwrap();
        match row.try_get::<String, _>(0) {
            Ok(s) => s,
            Err(_) => row.try_get::<i64, _>(0).unwrap().to_string(),
        }
    }

    #[tokio::test]
    async fn file_database_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
        assert_eq!(pragma(&store, "journal_mode").await, "wal");
        // 2 = FULL: a commit is fsynced before it returns.
        assert_eq!(pragma(&store, "synchronous").await, "2");
        assert_eq!(pragma(&store, "foreign_keys").await, "1");
        assert_eq!(pragma(&store, "busy_timeout").await, "5000");
        // 1 = NORMAL, for the audit index only: it is rebuilt from the log.
        let row = sqlx::query("PRAGMA synchronous")
            .fetch_one(&store.index_pool)
            .await
            .unwrap();
        assert_eq!(row.try_get::<i64, _>(0).unwrap(), 1);
    }

    async fn plan(store: &SqliteStore, query: &AuditQuery) -> String {
        let mut qb = QueryBuilder::<Sqlite>::new("EXPLAIN QUERY PLAN ");
        qb.push(audit_select(query).into_string());
        // Bind placeholders are positional, so the plan needs no values.
        let rows = sqlx::query(sqlx::AssertSqlSafe(qb.into_string()))
            .fetch_all(&store.pool)
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[tokio::test]
    async fn audit_filters_use_indexes() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let cases = [
            (
                AuditQuery {
                    commit: Some("abc".into()),
                    ..Default::default()
                },
                "audit_index_commit_id",
            ),
            (
                AuditQuery {
                    principal: Some("user:alice".into()),
                    ..Default::default()
                },
                "audit_index_principal",
            ),
            (
                AuditQuery {
                    principal: Some("alice".into()),
                    ..Default::default()
                },
                "audit_index_principal_id",
            ),
            (
                AuditQuery {
                    job_id: Some("7".into()),
                    ..Default::default()
                },
                "audit_index_job_id",
            ),
        ];
        for (query, index) in cases {
            let plan = plan(&store, &query).await;
            assert!(plan.contains(index), "{query:?}: {plan}");
        }
    }
}
