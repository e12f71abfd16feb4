//! The PostgreSQL backend, for several gateway nodes sharing one database.
//!
//! Every method is one statement or one transaction, so it is atomic
//! across processes, not just across tasks of this one:
//!
//! - replay protection (`record_delivery`, `record_signed_body`) is one
//!   `INSERT .. ON CONFLICT` each: of two nodes receiving one delivery at
//!   the same moment, exactly one gets `true`;
//! - a revocation change bumps the `revocations` counter row in the same
//!   transaction and appends to `revocation_log`; the counter's row lock
//!   makes the log's `seq` gapless and in commit order. `pg_notify` in that
//!   transaction wakes the other nodes' change feeds at commit;
//! - leader jobs and node names are session advisory locks held on a
//!   dedicated connection each; migrations and document commits take
//!   transaction advisory locks.
//!
//! Only runtime queries (`sqlx::query`), in plain SQL. On CockroachDB or
//! YugabyteDB the tables and statements work as they are; what differs is
//! what PostgreSQL alone offers: advisory locks (`pg_advisory_xact_lock`,
//! `pg_try_advisory_lock`: CockroachDB has none that exclude, so node names,
//! leader jobs, migrations and document commits would need a lease row
//! or SERIALIZABLE with retries instead) and `LISTEN`/`NOTIFY` (absent
//! there: followers then rely on polling `revocation_changes` alone).
//!
//! TLS: `sslmode=require|verify-ca|verify-full` and `sslrootcert=` in the
//! URL select sqlx's rustls client. The URL's password never reaches a
//! log line or an error message (errors name the host, port and database).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::UnixTime;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{Connection, PgConnection, Postgres, QueryBuilder, Row};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::postgres_schema::{BOOKKEEPING, MIGRATIONS};
use crate::sqlite::DEFAULT_AUDIT_LIMIT;
use crate::{
    AuditIndexRow, AuditNode, AuditQuery, FeedState, Revocation, RevocationChange, RevocationKind,
    RevocationMode, RevocationSnapshot, Store, StoreError, StoredSession, StoredSigningKey,
    WitnessedCheckpoint,
};

/// The channel every change is announced on.
pub(crate) const CHANNEL: &str = "latchkey_changes";
/// Audit rows per multi-row INSERT (12 parameters each, far below 65535).
const AUDIT_INSERT_CHUNK: usize = 100;
/// The longest pause between attempts to get a lost connection back.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The first pause after a lost connection.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// How often the node-name lock's connection is checked.
const NODE_LOCK_CHECK: Duration = Duration::from_secs(1);

/// Pool and connection settings of a [`PostgresStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Connections in the shared pool (the change feed, the node-name lock
    /// and each leader job hold one more each).
    pub max_connections: u32,
    /// How long connecting (or waiting for a pooled connection) may take
    /// before the operation fails as unavailable.
    pub connect_timeout: Duration,
    /// Whether this process runs as the node (a gateway): it takes the
    /// node's name lock, so a second process with the same name is
    /// refused. Commands run beside the nodes (`latchkey audit verify`,
    /// `keys rotate`) read and write as the node without claiming it.
    pub claim_node: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            connect_timeout: Duration::from_secs(10),
            claim_node: true,
        }
    }
}

/// The shared [`Store`] on PostgreSQL. Clones share one pool, one change
/// feed and one set of held locks; the locks are released when the last
/// clone (and every [`PostgresStore::document_rows`] handle) is dropped.
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    /// Holds the password: never printed (no `Debug`).
    connect: PgConnectOptions,
    /// `host:port/database`, for messages.
    pub(crate) target: String,
    node: String,
    timeout: Duration,
    feed: watch::Receiver<FeedState>,
    /// Leader jobs this process holds, each on its own connection.
    leads: tokio::sync::Mutex<HashMap<String, PgConnection>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The tasks own the change feed's and the node lock's connections:
        // aborting them closes those, releasing the node name.
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.inner.target)
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

/// A stable 64-bit advisory-lock key for `name` (FNV-1a): the same in every
/// build and process, unlike std's randomly seeded hasher.
pub(crate) fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Where the URL points, without user or password.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

/// Maps a failure to connect, naming the URL setting to fix.
fn connect_error(target: &str, ssl: PgSslMode, e: sqlx::Error) -> StoreError {
    // rustls' verdict on the server's certificate reaches us as an I/O
    // error of the connection ("invalid peer certificate: ..."): it is a
    // TLS problem all the same.
    let tls_failure = matches!(&e, sqlx::Error::Tls(_))
        || (matches!(&e, sqlx::Error::Io(_)) && e.to_string().contains("certificate"));
    let hint = match &e {
        _ if tls_failure => match ssl {
            PgSslMode::VerifyCa | PgSslMode::VerifyFull => {
                "; check `sslrootcert` (the CA that signed the server's certificate) and, for \
                 `sslmode=verify-full`, that the host name matches the certificate"
            }
            _ => "; check `sslmode` in the database URL (the server may not offer TLS)",
        },
        sqlx::Error::Database(db) if db.code().as_deref() == Some("28P01") => {
            "; check the user and password in the database URL"
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000") => {
            "; create the database first"
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => {
            "; check the host and port in the database URL and that PostgreSQL is running"
        }
        _ => "",
    };
    let detail = match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    };
    StoreError::Unavailable(format!(
        "cannot connect to PostgreSQL at `{target}`: {detail}{hint}"
    ))
}

/// Maps a driver error to the store's vocabulary. PostgreSQL's messages
/// name constraints and columns; `DETAIL` (which may quote values) is not
/// included.
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

/// BIGINT is signed 64-bit; refuse what does not fit instead of wrapping.
fn to_db(field: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        StoreError::Invalid(format!(
            "`{field}` = {value} exceeds the largest storable number {}",
            i64::MAX
        ))
    })
}

/// For filter bounds: every stored value is at most `i64::MAX`.
fn clamp_to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_db(field: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("`{field}` holds a negative number {value}")))
}

pub(crate) fn get<'r, T>(row: &'r PgRow, column: &str, context: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get::<T, _>(column)
        .map_err(|e| db_error(context, e))
}

fn get_u64(row: &PgRow, column: &str, context: &str) -> Result<u64, StoreError> {
    from_db(column, get::<i64>(row, column, context)?)
}

fn decode_signing_key(row: &PgRow) -> Result<StoredSigningKey, StoreError> {
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

fn parse_kind(kind: &str) -> Result<RevocationKind, StoreError> {
    RevocationKind::parse(kind)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown revocation kind `{kind}`")))
}

fn parse_mode(mode: &str) -> Result<RevocationMode, StoreError> {
    RevocationMode::parse(mode)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown revocation mode `{mode}`")))
}

fn decode_revocation(row: &PgRow) -> Result<Revocation, StoreError> {
    const CTX: &str = "reading revocations";
    let expires_at: Option<i64> = get(row, "expires_at", CTX)?;
    Ok(Revocation {
        kind: parse_kind(&get::<String>(row, "kind", CTX)?)?,
        value: get(row, "value", CTX)?,
        mode: parse_mode(&get::<String>(row, "mode", CTX)?)?,
        created_at: get_u64(row, "created_at", CTX)?,
        expires_at: expires_at.map(|v| from_db("expires_at", v)).transpose()?,
        reason: get(row, "reason", CTX)?,
    })
}

fn decode_change(row: &PgRow) -> Result<RevocationChange, StoreError> {
    const CTX: &str = "reading the revocation change log";
    let kind = parse_kind(&get::<String>(row, "kind", CTX)?)?;
    let value: String = get(row, "value", CTX)?;
    let mode = parse_mode(&get::<String>(row, "mode", CTX)?)?;
    let created_at: Option<i64> = get(row, "created_at", CTX)?;
    let revocation = match created_at {
        None => None,
        Some(created_at) => {
            let expires_at: Option<i64> = get(row, "expires_at", CTX)?;
            let reason: Option<String> = get(row, "reason", CTX)?;
            Some(Revocation {
                kind,
                value: value.clone(),
                mode,
                created_at: from_db("created_at", created_at)?,
                expires_at: expires_at.map(|v| from_db("expires_at", v)).transpose()?,
                reason: reason.unwrap_or_default(),
            })
        }
    };
    Ok(RevocationChange {
        seq: get_u64(row, "seq", CTX)?,
        kind,
        value,
        mode,
        revocation,
    })
}

fn decode_audit_row(row: &PgRow) -> Result<AuditIndexRow, StoreError> {
    const CTX: &str = "reading the audit index";
    Ok(AuditIndexRow {
        node: get(row, "node", CTX)?,
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

const AUDIT_COLUMNS: &str = "node, seq, time_ms, request_id, principal, action, resource, \
                             decision, commit_id, job_id, event_json";

/// Builds the SELECT for an [`AuditQuery`]; every set field adds one
/// condition. Text order is `COLLATE "C"` (bytewise, like SQLite) whatever
/// the database's default collation.
fn audit_select(query: &AuditQuery) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
    qb.push(AUDIT_COLUMNS).push(" FROM audit_index WHERE 1 = 1");
    if let Some(node) = &query.node {
        qb.push(" AND node = ").push_bind(node.clone());
    }
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
        // Exact under any collation (a range on the text would depend on it).
        qb.push(" AND substr(commit_id, 1, CAST(")
            .push_bind(i32::try_from(commit.chars().count()).unwrap_or(i32::MAX))
            .push(" AS INTEGER)) = ")
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
    qb.push(" ORDER BY time_ms ")
        .push(order)
        .push(", node COLLATE \"C\" ")
        .push(order)
        .push(", seq ")
        .push(order)
        .push(" LIMIT ")
        .push_bind(i64::from(limit));
    qb
}

impl PostgresStore {
    /// Connects to the database at `url` as node `node` (`[store] node`),
    /// brings the schema up to date, takes the node's name lock and starts
    /// the change feed.
    ///
    /// Fails with [`StoreError::Conflict`] when another live process runs
    /// as the same node: two writers of one audit chain would fork it.
    pub async fn connect(
        url: &str,
        node: &str,
        options: PostgresOptions,
    ) -> Result<Self, StoreError> {
        if node.is_empty() {
            return Err(StoreError::Invalid(
                "the node name is empty; set `[store] node` to a name unique among the nodes \
                 sharing this database"
                    .into(),
            ));
        }
        let connect = PgConnectOptions::from_str(url).map_err(|e| {
            // sqlx's parse errors name the offending setting, not the URL.
            StoreError::Invalid(format!(
                "the database URL cannot be read: {e}; check `[store] url` (for TLS: \
                 `sslmode=require|verify-ca|verify-full`, `sslrootcert=<file>`)"
            ))
        })?;
        let target = describe(&connect);
        let ssl = connect.get_ssl_mode();
        let timeout = options.connect_timeout;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(timeout)
            .connect_with(connect.clone())
            .await
            .map_err(|e| connect_error(&target, ssl, e))?;
        migrate(&pool).await?;

        let node_conn = if options.claim_node {
            Some(take_node_lock(&connect, &target, node, timeout).await?)
        } else {
            None
        };
        let listener = listen(&connect, timeout)
            .await
            .map_err(|e| connect_error(&target, ssl, e))?;
        let (feed_tx, feed) = watch::channel(FeedState {
            notifications: 0,
            reconnects: 0,
            connected: true,
        });
        let mut tasks = vec![tokio::spawn(follow_feed(
            listener,
            connect.clone(),
            timeout,
            feed_tx,
        ))];
        if let Some(node_conn) = node_conn {
            tasks.push(tokio::spawn(keep_node_lock(
                node_conn,
                connect.clone(),
                target.clone(),
                node.to_owned(),
                timeout,
            )));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                connect,
                target,
                node: node.to_owned(),
                timeout,
                feed,
                leads: tokio::sync::Mutex::default(),
                tasks,
            }),
        })
    }

    /// Closes the pool; later calls fail. Locks are released when the
    /// last clone is dropped.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// Versions recorded in `schema_migrations`, ascending.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| db_error("reading schema versions", e))?;
        rows.iter()
            .map(|r| get::<i64>(r, "version", "reading schema versions"))
            .collect()
    }

    fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    async fn dedicated(&self) -> Result<PgConnection, StoreError> {
        dedicated(&self.inner.connect, self.inner.timeout)
            .await
            .map_err(|e| connect_error(&self.inner.target, self.inner.connect.get_ssl_mode(), e))
    }
}

/// A connection outside the pool, for a session lock or the listener.
async fn dedicated(
    options: &PgConnectOptions,
    timeout: Duration,
) -> Result<PgConnection, sqlx::Error> {
    match tokio::time::timeout(timeout, PgConnection::connect_with(options)).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// Applies every migration not yet recorded, all in one transaction under
/// a transaction advisory lock: of several nodes starting at once, one
/// migrates and the others wait and then find nothing to do. PostgreSQL's
/// DDL is transactional, so a failed migration leaves nothing behind.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let fail = |what: &str, e: sqlx::Error| StoreError::Migration(format!("{what}: {e}"));
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| fail("starting the migration transaction", e))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key("latchkey:migrations"))
        .execute(&mut *tx)
        .await
        .map_err(|e| fail("taking the migration lock", e))?;
    sqlx::raw_sql(BOOKKEEPING)
        .execute(&mut *tx)
        .await
        .map_err(|e| fail("creating `schema_migrations`", e))?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| fail("reading schema versions", e))?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()
        .map_err(|e| fail("reading schema versions", e))?;
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some(newest) = applied.iter().max()
        && *newest > known
    {
        return Err(StoreError::Migration(format!(
            "the database has schema version {newest} but this build knows only up to {known}; \
             run a newer latchkey"
        )));
    }
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
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
        sqlx::query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)")
            .bind(migration.version)
            .bind(migration.name)
            .execute(&mut *tx)
            .await
            .map_err(|e| fail(&context, e))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied store migration"
        );
    }
    tx.commit()
        .await
        .map_err(|e| fail("committing migrations", e))?;
    Ok(())
}

fn node_in_use(node: &str) -> StoreError {
    StoreError::Conflict(format!(
        "node `{node}` is already running against this database; give each node its own \
         `[store] node`"
    ))
}

/// Takes the session advisory lock of `node` on a new connection.
async fn take_node_lock(
    options: &PgConnectOptions,
    target: &str,
    node: &str,
    timeout: Duration,
) -> Result<PgConnection, StoreError> {
    let mut conn = dedicated(options, timeout)
        .await
        .map_err(|e| connect_error(target, options.get_ssl_mode(), e))?;
    let taken: bool = sqlx::query("SELECT pg_try_advisory_lock($1)")
        .bind(lock_key(&format!("latchkey:node:{node}")))
        .fetch_one(&mut conn)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| db_error("taking the node name lock", e))?;
    if !taken {
        drop(conn.close().await);
        return Err(node_in_use(node));
    }
    Ok(conn)
}

/// Checks the node-name lock's connection every second and, once it is
/// lost (a database restart), takes the lock again on a new one.
async fn keep_node_lock(
    conn: PgConnection,
    options: PgConnectOptions,
    target: String,
    node: String,
    timeout: Duration,
) {
    let mut conn = Some(conn);
    let mut backoff = MIN_BACKOFF;
    loop {
        if let Some(c) = conn.as_mut() {
            tokio::time::sleep(NODE_LOCK_CHECK).await;
            let alive = tokio::time::timeout(timeout, c.ping()).await;
            if matches!(alive, Ok(Ok(()))) {
                continue;
            }
            tracing::warn!(
                node,
                "lost the node name lock's connection; taking it again"
            );
            conn = None;
        }
        match take_node_lock(&options, &target, &node, timeout).await {
            Ok(c) => {
                tracing::info!(node, "took the node name lock again");
                conn = Some(c);
                backoff = MIN_BACKOFF;
            }
            Err(e) => {
                tracing::error!(node, error = %e, "cannot take the node name lock again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// A listener on [`CHANNEL`], on its own one-connection pool.
async fn listen(options: &PgConnectOptions, timeout: Duration) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(timeout)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    // A lost connection is noticed and rebuilt here (counting reconnects),
    // not silently inside sqlx.
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Counts notifications; on a lost connection marks the feed disconnected
/// and reconnects with a backoff of at most a second. Notifications sent
/// while disconnected are lost: followers also poll the change log, and
/// the feed moving on reconnect wakes them to do so.
async fn follow_feed(
    listener: PgListener,
    options: PgConnectOptions,
    timeout: Duration,
    feed: watch::Sender<FeedState>,
) {
    let mut listener = Some(listener);
    let mut backoff = MIN_BACKOFF;
    loop {
        if let Some(l) = listener.as_mut() {
            match l.try_recv().await {
                Ok(Some(_)) => {
                    feed.send_modify(|s| s.notifications += 1);
                    continue;
                }
                Ok(None) => tracing::warn!("lost the change feed's connection; reconnecting"),
                Err(e) => {
                    tracing::warn!(error = %e, "the change feed failed; reconnecting");
                }
            }
            listener = None;
            feed.send_modify(|s| s.connected = false);
            backoff = MIN_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        match listen(&options, timeout).await {
            Ok(l) => {
                listener = Some(l);
                feed.send_modify(|s| {
                    s.connected = true;
                    s.reconnects += 1;
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "the change feed cannot reconnect yet");
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Binds the revocation's columns in the order of `revocation_log` and
/// `revocations` (created_at, expires_at, reason).
fn revocation_numbers(revocation: &Revocation) -> Result<(i64, Option<i64>), StoreError> {
    Ok((
        to_db("created_at", revocation.created_at)?,
        revocation
            .expires_at
            .map(|v| to_db("expires_at", v))
            .transpose()?,
    ))
}

/// Appends one change-log entry after bumping the counter, and announces
/// it; inside the caller's transaction.
async fn log_change(
    tx: &mut PgConnection,
    kind: RevocationKind,
    value: &str,
    mode: RevocationMode,
    after: Option<&Revocation>,
    context: &str,
) -> Result<u64, StoreError> {
    // INVARIANT: the counter row stays locked until commit, so seqs are
    // handed out in commit order and a rolled-back change frees its seq.
    let seq: i64 = sqlx::query(
        "UPDATE counters SET value = value + 1 WHERE name = 'revocations' RETURNING value",
    )
    .fetch_one(&mut *tx)
    .await
    .and_then(|r| r.try_get(0))
    .map_err(|e| db_error(context, e))?;
    let (created_at, expires_at) = match after {
        Some(r) => {
            let (c, e) = revocation_numbers(r)?;
            (Some(c), e)
        }
        None => (None, None),
    };
    sqlx::query(
        "INSERT INTO revocation_log (seq, kind, value, mode, created_at, expires_at, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(seq)
    .bind(kind.as_str())
    .bind(value)
    .bind(mode.as_str())
    .bind(created_at)
    .bind(expires_at)
    .bind(after.map(|r| r.reason.as_str()))
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(context, e))?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(format!("revocations:{seq}"))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(context, e))?;
    from_db("seq", seq)
}

#[async_trait]
impl Store for PostgresStore {
    async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        insert_key(self.pool(), key).await
    }

    async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, public_key, encrypted_private_key, created_at, signs_from, \
             signs_until, published_until FROM signing_keys \
             ORDER BY created_at ASC, kid COLLATE \"C\" ASC",
        )
        .fetch_all(self.pool())
        .await
        .map_err(|e| db_error("listing signing keys", e))?;
        rows.iter().map(decode_signing_key).collect()
    }

    async fn update_signing_key_schedule(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        let context = format!("updating the schedule of signing key `{}`", key.kid);
        let done = sqlx::query(
            "UPDATE signing_keys SET signs_from = $1, signs_until = $2, published_until = $3 \
             WHERE kid = $4",
        )
        .bind(to_db("signs_from", key.signs_from)?)
        .bind(to_db("signs_until", key.signs_until)?)
        .bind(to_db("published_until", key.published_until)?)
        .bind(&key.kid)
        .execute(self.pool())
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
        sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
            .bind(kid)
            .execute(self.pool())
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
        let (created_at, expires_at) = revocation_numbers(revocation)?;
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(|e| db_error(&context, e))?;
        // Repeating a revocation widens it, never narrows it (as SQLite):
        // the later `created_at` and the later (or absent) expiry win.
        let row = sqlx::query(
            "INSERT INTO revocations (kind, value, mode, created_at, expires_at, reason) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (kind, value, mode) DO UPDATE SET \
             created_at = CASE WHEN excluded.created_at > revocations.created_at \
                 THEN excluded.created_at ELSE revocations.created_at END, \
             expires_at = CASE WHEN excluded.expires_at IS NULL OR revocations.expires_at IS NULL \
                 THEN NULL \
                 WHEN excluded.expires_at > revocations.expires_at THEN excluded.expires_at \
                 ELSE revocations.expires_at END, \
             reason = excluded.reason \
             RETURNING kind, value, mode, created_at, expires_at, reason",
        )
        .bind(revocation.kind.as_str())
        .bind(&revocation.value)
        .bind(revocation.mode.as_str())
        .bind(created_at)
        .bind(expires_at)
        .bind(&revocation.reason)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| db_error(&context, e))?;
        let after = decode_revocation(&row)?;
        log_change(
            &mut tx,
            revocation.kind,
            &revocation.value,
            revocation.mode,
            Some(&after),
            &context,
        )
        .await?;
        tx.commit().await.map_err(|e| db_error(&context, e))?;
        Ok(())
    }

    async fn list_revocations(&self, now: UnixTime) -> Result<Vec<Revocation>, StoreError> {
        list_revocations(self.pool(), now).await
    }

    async fn delete_revocation(
        &self,
        kind: RevocationKind,
        value: &str,
        mode: RevocationMode,
    ) -> Result<bool, StoreError> {
        let context = format!("lifting {} of {} `{value}`", mode.as_str(), kind.as_str());
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(|e| db_error(&context, e))?;
        let done =
            sqlx::query("DELETE FROM revocations WHERE kind = $1 AND value = $2 AND mode = $3")
                .bind(kind.as_str())
                .bind(value)
                .bind(mode.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(&context, e))?;
        if done.rows_affected() == 0 {
            // Nothing lifted, nothing logged (dropping `tx` rolls back).
            return Ok(false);
        }
        log_change(&mut tx, kind, value, mode, None, &context).await?;
        tx.commit().await.map_err(|e| db_error(&context, e))?;
        Ok(true)
    }

    async fn record_delivery(
        &self,
        source: &str,
        delivery_id: &str,
        at: UnixTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries (source, delivery_id, received_at) \
             VALUES ($1, $2, $3) ON CONFLICT (source, delivery_id) DO NOTHING",
        )
        .bind(source)
        .bind(delivery_id)
        .bind(to_db("received_at", at)?)
        .execute(self.pool())
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
        // As SQLite: digests share `webhook_deliveries` under `body:{source}`.
        // One statement: the upsert counts as new only when it inserted or
        // renewed a digest older than the window (the conflicting row is
        // locked and re-checked, so two nodes cannot both renew it); the
        // CTE prunes the namespace's other expired digests.
        let namespace = format!("body:{source}");
        let cutoff = to_db("received_at", at.saturating_sub(window))?;
        let done = sqlx::query(
            "WITH pruned AS (DELETE FROM webhook_deliveries \
                 WHERE source = $1 AND received_at <= $4 AND delivery_id <> $2) \
             INSERT INTO webhook_deliveries (source, delivery_id, received_at) \
             VALUES ($1, $2, $3) \
             ON CONFLICT (source, delivery_id) DO UPDATE SET received_at = excluded.received_at \
             WHERE webhook_deliveries.received_at <= $4",
        )
        .bind(&namespace)
        .bind(digest)
        .bind(to_db("received_at", at)?)
        .bind(cutoff)
        .execute(self.pool())
        .await
        .map_err(|e| db_error(&format!("recording a webhook body from `{source}`"), e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn index_audit_events(&self, rows: &[AuditIndexRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        const CTX: &str = "indexing audit events";
        let mut numbers = Vec::with_capacity(rows.len());
        for row in rows {
            numbers.push((to_db("seq", row.seq)?, to_db("time_ms", row.time_ms)?));
        }
        let node = self.inner.node.as_str();
        let mut tx = self.pool().begin().await.map_err(|e| db_error(CTX, e))?;
        for (chunk, nums) in rows
            .chunks(AUDIT_INSERT_CHUNK)
            .zip(numbers.chunks(AUDIT_INSERT_CHUNK))
        {
            let mut qb = QueryBuilder::<Postgres>::new(
                "INSERT INTO audit_index (node, seq, time_ms, request_id, principal, \
                 principal_id, action, resource, decision, commit_id, job_id, event_json) ",
            );
            // INVARIANT: a node indexes only into its own chain, whatever
            // `row.node` says.
            qb.push_values(chunk.iter().zip(nums), |mut b, (row, (seq, time_ms))| {
                b.push_bind(node)
                    .push_bind(*seq)
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
            qb.push(" ON CONFLICT (node, seq) DO NOTHING");
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
            .fetch_all(self.pool())
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
        let max: Option<i64> = sqlx::query("SELECT MAX(seq) FROM audit_index WHERE node = $1")
            .bind(&self.inner.node)
            .fetch_one(self.pool())
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| db_error("reading the highest audit seq", e))?;
        max.map(|v| from_db("seq", v)).transpose()
    }

    async fn clear_audit_index(&self) -> Result<(), StoreError> {
        // The archived log's checkpoints go too: the new log numbers its
        // own from 1.
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(|e| db_error("clearing the audit index", e))?;
        for sql in [
            "DELETE FROM audit_index WHERE node = $1",
            "DELETE FROM audit_checkpoints WHERE node = $1",
        ] {
            sqlx::query(sql)
                .bind(&self.inner.node)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error("clearing the audit index", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error("clearing the audit index", e))?;
        Ok(())
    }

    async fn insert_session(&self, session: &StoredSession) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, subject, issuer, principal_json, secrets, created_at, \
             last_seen_at, expires_at, id_token_expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
        .execute(self.pool())
        .await
        .map_err(|e| db_error("adding a session", e))?;
        Ok(())
    }

    async fn get_session(&self, id_hash: &str) -> Result<Option<StoredSession>, StoreError> {
        let context = "reading a session";
        let row = sqlx::query(
            "SELECT id_hash, subject, issuer, principal_json, secrets, created_at, last_seen_at, \
             expires_at, id_token_expires_at FROM sessions WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(self.pool())
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
            created_at: get_u64(&r, "created_at", context)?,
            last_seen_at: get_u64(&r, "last_seen_at", context)?,
            expires_at: get_u64(&r, "expires_at", context)?,
            id_token_expires_at: get_u64(&r, "id_token_expires_at", context)?,
        }))
    }

    async fn update_session(&self, session: &StoredSession) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET principal_json = $1, secrets = $2, last_seen_at = $3, \
             id_token_expires_at = $4 WHERE id_hash = $5",
        )
        .bind(&session.principal_json)
        .bind(&session.secrets)
        .bind(to_db("last_seen_at", session.last_seen_at)?)
        .bind(to_db("id_token_expires_at", session.id_token_expires_at)?)
        .bind(&session.id_hash)
        .execute(self.pool())
        .await
        .map_err(|e| db_error("updating a session", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_session(&self, id_hash: &str, at: UnixTime) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2 AND last_seen_at < $1",
        )
        .bind(to_db("last_seen_at", at)?)
        .bind(id_hash)
        .execute(self.pool())
        .await
        .map_err(|e| db_error("touching a session", e))?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        // Not moved: either gone or already at `at` or later.
        Ok(self.get_session(id_hash).await?.is_some())
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.pool())
            .await
            .map_err(|e| db_error("ending a session", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_sessions_of(&self, subject: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE subject = $1")
            .bind(subject)
            .execute(self.pool())
            .await
            .map_err(|e| db_error("ending a subject's sessions", e))?;
        Ok(done.rows_affected())
    }

    async fn delete_expired_sessions(
        &self,
        now: UnixTime,
        idle_before: UnixTime,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at < $2")
            .bind(clamp_to_db(now))
            .bind(clamp_to_db(idle_before))
            .execute(self.pool())
            .await
            .map_err(|e| db_error("removing expired sessions", e))?;
        Ok(done.rows_affected())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let context = format!("reading metadata `{key}`");
        let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| db_error(&context, e))?;
        row.map(|r| get::<Vec<u8>>(&r, "value", &context))
            .transpose()
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(self.pool())
        .await
        .map_err(|e| db_error(&format!("writing metadata `{key}`"), e))?;
        Ok(())
    }

    // ---- Several nodes -------------------------------------------------

    fn is_shared(&self) -> bool {
        true
    }

    fn node(&self) -> &str {
        &self.inner.node
    }

    async fn revocation_snapshot(&self, now: UnixTime) -> Result<RevocationSnapshot, StoreError> {
        const CTX: &str = "reading a revocation snapshot";
        let mut tx = self
            .pool()
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| db_error(CTX, e))?;
        let rows = list_revocations(&mut *tx, now).await?;
        let head: i64 = sqlx::query("SELECT value FROM counters WHERE name = 'revocations'")
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| db_error(CTX, e))?;
        tx.commit().await.map_err(|e| db_error(CTX, e))?;
        Ok(RevocationSnapshot {
            rows,
            head: from_db("value", head)?,
        })
    }

    async fn revocation_changes(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<RevocationChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, value, mode, created_at, expires_at, reason FROM revocation_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(clamp_to_db(after))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(|e| db_error("reading the revocation change log", e))?;
        rows.iter().map(decode_change).collect()
    }

    fn change_feed(&self) -> Option<watch::Receiver<FeedState>> {
        Some(self.inner.feed.clone())
    }

    async fn lead(&self, job: &str) -> Result<bool, StoreError> {
        let mut leads = self.inner.leads.lock().await;
        if let Some(conn) = leads.get_mut(job) {
            let alive = tokio::time::timeout(self.inner.timeout, conn.ping()).await;
            if matches!(alive, Ok(Ok(()))) {
                return Ok(true);
            }
            // The connection (and with it the lock) is gone: another node
            // may lead now. Try again below.
            tracing::warn!(job, "lost the leader lock's connection");
            leads.remove(job);
        }
        let mut conn = self.dedicated().await?;
        let taken: bool = sqlx::query("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(&format!("latchkey:job:{job}")))
            .fetch_one(&mut conn)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| db_error(&format!("taking the leader lock of `{job}`"), e))?;
        if taken {
            leads.insert(job.to_owned(), conn);
        } else {
            drop(conn.close().await);
        }
        Ok(taken)
    }

    async fn insert_signing_key_unless_covered(
        &self,
        key: &StoredSigningKey,
        after: UnixTime,
    ) -> Result<bool, StoreError> {
        let context = format!("adding signing key `{}`", key.kid);
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(|e| db_error(&context, e))?;
        // The row lock serializes rotations across nodes; the check below
        // then reads what the previous holder committed.
        sqlx::query("SELECT value FROM counters WHERE name = 'signing_keys' FOR UPDATE")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_error(&context, e))?;
        let covered = sqlx::query("SELECT 1 FROM signing_keys WHERE signs_until > $1 LIMIT 1")
            .bind(clamp_to_db(after))
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| db_error(&context, e))?
            .is_some();
        if covered {
            return Ok(false);
        }
        insert_key(&mut *tx, key).await?;
        tx.commit().await.map_err(|e| db_error(&context, e))?;
        Ok(true)
    }

    async fn counter(&self, name: &str) -> Result<u64, StoreError> {
        let value: Option<i64> = sqlx::query("SELECT value FROM counters WHERE name = $1")
            .bind(format!("counter:{name}"))
            .fetch_optional(self.pool())
            .await
            .and_then(|r| r.map(|r| r.try_get(0)).transpose())
            .map_err(|e| db_error(&format!("reading counter `{name}`"), e))?;
        value.map_or(Ok(0), |v| from_db("value", v))
    }

    async fn next_counter(&self, name: &str) -> Result<u64, StoreError> {
        let value: i64 = sqlx::query(
            "INSERT INTO counters (name, value) VALUES ($1, 1) \
             ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value",
        )
        .bind(format!("counter:{name}"))
        .fetch_one(self.pool())
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| db_error(&format!("advancing counter `{name}`"), e))?;
        from_db("value", value)
    }

    async fn bind_transaction(
        &self,
        transaction: &[u8],
        owner: &str,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO transaction_bindings (tx, owner, expires_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (tx) DO UPDATE SET expires_ms = excluded.expires_ms \
             WHERE transaction_bindings.owner = excluded.owner",
        )
        .bind(transaction)
        .bind(owner)
        .bind(to_db("expires_ms", expires_ms)?)
        .execute(self.pool())
        .await
        .map_err(|e| db_error("binding a transaction", e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "the transaction is bound to another caller".into(),
            ));
        }
        Ok(())
    }

    async fn transaction_owner(
        &self,
        transaction: &[u8],
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let row =
            sqlx::query("SELECT owner FROM transaction_bindings WHERE tx = $1 AND expires_ms > $2")
                .bind(transaction)
                .bind(clamp_to_db(now_ms))
                .fetch_optional(self.pool())
                .await
                .map_err(|e| db_error("reading a transaction binding", e))?;
        row.map(|r| get::<String>(&r, "owner", "reading a transaction binding"))
            .transpose()
    }

    async fn end_transaction(&self, transaction: &[u8], now_ms: u64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM transaction_bindings WHERE tx = $1 OR expires_ms <= $2")
            .bind(transaction)
            .bind(clamp_to_db(now_ms))
            .execute(self.pool())
            .await
            .map_err(|e| db_error("ending a transaction binding", e))?;
        Ok(())
    }

    async fn witness_audit_checkpoint(
        &self,
        checkpoint: &WitnessedCheckpoint,
    ) -> Result<(), StoreError> {
        let context = format!("witnessing audit checkpoint {}", checkpoint.seq);
        let seq = to_db("seq", checkpoint.seq)?;
        let done = sqlx::query(
            "INSERT INTO audit_checkpoints (node, seq, json) VALUES ($1, $2, $3) \
             ON CONFLICT (node, seq) DO NOTHING",
        )
        .bind(&self.inner.node)
        .bind(seq)
        .bind(&checkpoint.json)
        .execute(self.pool())
        .await
        .map_err(|e| db_error(&context, e))?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        // A witnessed row is never changed, so this read is final.
        let row = sqlx::query("SELECT json FROM audit_checkpoints WHERE node = $1 AND seq = $2")
            .bind(&self.inner.node)
            .bind(seq)
            .fetch_one(self.pool())
            .await
            .map_err(|e| db_error(&context, e))?;
        let stored: String = get(&row, "json", &context)?;
        if stored == checkpoint.json {
            return Ok(());
        }
        Err(StoreError::Conflict(format!(
            "node `{}` already published a different checkpoint for seq {}: its audit log was \
             forked or rewritten; keep the witnessed one and investigate",
            self.inner.node, checkpoint.seq
        )))
    }

    async fn witnessed_audit_checkpoints(
        &self,
        node: &str,
    ) -> Result<Vec<WitnessedCheckpoint>, StoreError> {
        const CTX: &str = "reading witnessed audit checkpoints";
        let rows =
            sqlx::query("SELECT seq, json FROM audit_checkpoints WHERE node = $1 ORDER BY seq")
                .bind(node)
                .fetch_all(self.pool())
                .await
                .map_err(|e| db_error(CTX, e))?;
        rows.iter()
            .map(|r| {
                Ok(WitnessedCheckpoint {
                    seq: get_u64(r, "seq", CTX)?,
                    json: get(r, "json", CTX)?,
                })
            })
            .collect()
    }

    async fn audit_nodes(&self) -> Result<Vec<AuditNode>, StoreError> {
        const CTX: &str = "listing audit nodes";
        let mut nodes: BTreeMap<String, AuditNode> = BTreeMap::new();
        for (table, is_index) in [("audit_index", true), ("audit_checkpoints", false)] {
            let sql = if is_index {
                "SELECT node, MAX(seq) AS max_seq FROM audit_index GROUP BY node"
            } else {
                "SELECT node, MAX(seq) AS max_seq FROM audit_checkpoints GROUP BY node"
            };
            let rows = sqlx::query(sql)
                .fetch_all(self.pool())
                .await
                .map_err(|e| db_error(&format!("{CTX} in `{table}`"), e))?;
            for r in &rows {
                let node: String = get(r, "node", CTX)?;
                let max = get_u64(r, "max_seq", CTX)?;
                let entry = nodes.entry(node.clone()).or_insert(AuditNode {
                    node,
                    max_seq: None,
                    checkpoint_seq: None,
                });
                if is_index {
                    entry.max_seq = Some(max);
                } else {
                    entry.checkpoint_seq = Some(max);
                }
            }
        }
        Ok(nodes.into_values().collect())
    }
}

async fn insert_key<'e, E>(executor: E, key: &StoredSigningKey) -> Result<(), StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    let context = format!("inserting signing key `{}`", key.kid);
    sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, public_key, encrypted_private_key, \
         created_at, signs_from, signs_until, published_until) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&key.kid)
    .bind(&key.algorithm)
    .bind(&key.public_key[..])
    .bind(&key.encrypted_private_key[..])
    .bind(to_db("created_at", key.created_at)?)
    .bind(to_db("signs_from", key.signs_from)?)
    .bind(to_db("signs_until", key.signs_until)?)
    .bind(to_db("published_until", key.published_until)?)
    .execute(executor)
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

async fn list_revocations<'e, E>(executor: E, now: UnixTime) -> Result<Vec<Revocation>, StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    let rows = sqlx::query(
        "SELECT kind, value, mode, created_at, expires_at, reason FROM revocations \
         WHERE expires_at IS NULL OR expires_at > $1 \
         ORDER BY created_at ASC, kind COLLATE \"C\" ASC, value COLLATE \"C\" ASC, \
         mode COLLATE \"C\" ASC",
    )
    .bind(clamp_to_db(now))
    .fetch_all(executor)
    .await
    .map_err(|e| db_error("listing revocations", e))?;
    rows.iter().map(decode_revocation).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable() {
        // FNV-1a 64 of the empty string and of "a" (published test vectors).
        assert_eq!(lock_key("") as u64, 0xcbf2_9ce4_8422_2325);
        assert_eq!(lock_key("a") as u64, 0xaf63_dc4c_8601_ec8c);
        assert_ne!(lock_key("latchkey:job:x"), lock_key("latchkey:node:x"));
    }

    #[test]
    fn a_bad_url_error_does_not_echo_the_password() {
        let Err(e) = PgConnectOptions::from_str("postgres://u:hunter2@h:notaport/db") else {
            return;
        };
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
