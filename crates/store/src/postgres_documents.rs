//! [`DocumentRows`] on PostgreSQL: the `documents` table, BYTEA path keys
//! (compared as memcmp, like SQLite's BLOB, so key ranges mean the same).
//!
//! A commit takes `pg_advisory_xact_lock` on its database id before its
//! checks read: every commit (and import) of one database, from any node,
//! then runs one at a time, and under READ COMMITTED each check sees every
//! commit before it — the same guarantee SQLite's `BEGIN IMMEDIATE` gives.
//! Chosen over SERIALIZABLE with retries because a commit never fails
//! spuriously, needs no retry loop, and commits of other databases do not
//! wait. (CockroachDB has no such lock; there this would be SERIALIZABLE
//! with retries.)

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use crate::documents::{
    DocumentRow, DocumentRows, ExportCursor, KeyRange, RowCheck, RowCommitError, RowExpect,
    RowScan, RowSelection, RowWrite, ScanCheck,
};
use crate::postgres::{db_error, lock_key};
use crate::{PostgresStore, StoreError};

/// Keys per `IN (...)` of a multi-key read.
const GET_CHUNK: usize = 500;

const COLUMNS: &str =
    "database_name, path, parent, collection_id, create_time, update_time, fields";

impl PostgresStore {
    /// The same store as the document store's rows, for
    /// `latchkey_docstore::DocumentStore` (the pool is shared, so this is
    /// cheap).
    pub fn document_rows(&self) -> Arc<dyn DocumentRows> {
        Arc::new(self.clone())
    }
}

fn decode_row(row: &PgRow) -> Result<DocumentRow, StoreError> {
    let get_err = |e| db_error("reading documents", e);
    Ok(DocumentRow {
        database: row.try_get("database_name").map_err(get_err)?,
        path: row.try_get("path").map_err(get_err)?,
        parent: row.try_get("parent").map_err(get_err)?,
        collection_id: row.try_get("collection_id").map_err(get_err)?,
        create_time: row.try_get("create_time").map_err(get_err)?,
        update_time: row.try_get("update_time").map_err(get_err)?,
        fields: row.try_get("fields").map_err(get_err)?,
    })
}

/// `... FROM documents WHERE` the database and the selection.
fn push_selection(qb: &mut QueryBuilder<Postgres>, database: &str, selection: &RowSelection) {
    qb.push(" FROM documents WHERE database_name = ")
        .push_bind(database.to_owned());
    match selection {
        RowSelection::Children { parent } => {
            qb.push(" AND parent = ").push_bind(parent.clone());
        }
        RowSelection::Range(range) => push_range(qb, range),
        RowSelection::Group {
            collection_id,
            range,
        } => {
            qb.push(" AND collection_id = ")
                .push_bind(collection_id.clone());
            push_range(qb, range);
        }
    }
}

fn push_range(qb: &mut QueryBuilder<Postgres>, range: &KeyRange) {
    qb.push(" AND path >= ").push_bind(range.start.clone());
    if let Some(end) = &range.end {
        qb.push(" AND path < ").push_bind(end.clone());
    }
}

async fn put_row(
    conn: &mut PgConnection,
    database: &str,
    row: &DocumentRow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO documents (database_name, path, parent, collection_id, create_time, \
         update_time, fields) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (database_name, path) DO UPDATE SET parent = excluded.parent, \
         collection_id = excluded.collection_id, create_time = excluded.create_time, \
         update_time = excluded.update_time, fields = excluded.fields",
    )
    .bind(database)
    .bind(&row.path)
    .bind(&row.parent)
    .bind(&row.collection_id)
    .bind(row.create_time)
    .bind(row.update_time)
    .bind(&row.fields)
    .execute(conn)
    .await
    .map_err(|e| db_error("writing a document", e))?;
    Ok(())
}

/// Takes the commit lock of `database` until the transaction ends.
async fn lock_database(conn: &mut PgConnection, database: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key(&format!("latchkey:documents:{database}")))
        .execute(conn)
        .await
        .map_err(|e| db_error("locking a document database", e))?;
    Ok(())
}

#[async_trait]
impl DocumentRows for PostgresStore {
    async fn get_rows(
        &self,
        database: &str,
        paths: &[Vec<u8>],
    ) -> Result<Vec<Option<DocumentRow>>, StoreError> {
        let mut found = HashMap::with_capacity(paths.len());
        for chunk in paths.chunks(GET_CHUNK) {
            let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
            qb.push(COLUMNS)
                .push(" FROM documents WHERE database_name = ")
                .push_bind(database.to_owned())
                .push(" AND path IN (");
            let mut sep = qb.separated(", ");
            for p in chunk {
                sep.push_bind(p.clone());
            }
            qb.push(")");
            let rows = qb
                .build()
                .fetch_all(&self.inner.pool)
                .await
                .map_err(|e| db_error("reading documents", e))?;
            for r in &rows {
                let row = decode_row(r)?;
                found.insert(row.path.clone(), row);
            }
        }
        Ok(paths.iter().map(|p| found.get(p).cloned()).collect())
    }

    async fn scan_rows(
        &self,
        database: &str,
        scan: &RowScan,
    ) -> Result<Vec<DocumentRow>, StoreError> {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
        qb.push(COLUMNS);
        push_selection(&mut qb, database, &scan.selection);
        if let Some(after) = &scan.after {
            qb.push(" AND path > ").push_bind(after.clone());
        }
        qb.push(" ORDER BY path");
        if let Some(limit) = scan.limit {
            qb.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = qb
            .build()
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| db_error("scanning documents", e))?;
        rows.iter().map(decode_row).collect()
    }

    async fn first_path_in(
        &self,
        database: &str,
        range: &KeyRange,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut qb =
            QueryBuilder::<Postgres>::new("SELECT path FROM documents WHERE database_name = ");
        qb.push_bind(database.to_owned());
        push_range(&mut qb, range);
        qb.push(" ORDER BY path LIMIT 1");
        let row = qb
            .build()
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| db_error("scanning documents", e))?;
        row.map(|r| r.try_get::<Vec<u8>, _>("path"))
            .transpose()
            .map_err(|e| db_error("scanning documents", e))
    }

    async fn commit_rows(
        &self,
        database: &str,
        checks: &[RowCheck],
        scans: &[ScanCheck],
        writes: &[RowWrite],
    ) -> Result<(), RowCommitError> {
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(|e| db_error("starting a document commit", e))?;
        // INVARIANT: the lock is taken before any check reads, and every
        // statement after it reads a snapshot taken after it was granted.
        lock_database(&mut tx, database).await?;
        for (index, check) in checks.iter().enumerate() {
            let current: Option<i64> = sqlx::query(
                "SELECT update_time FROM documents WHERE database_name = $1 AND path = $2",
            )
            .bind(database)
            .bind(&check.path)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| db_error("checking a document", e))?
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()
            .map_err(|e| db_error("checking a document", e))?;
            let holds = match check.expect {
                RowExpect::Absent => current.is_none(),
                RowExpect::Present => current.is_some(),
                RowExpect::UpdateTime(t) => current == Some(t),
            };
            if !holds {
                // Dropping `tx` rolls back; nothing was written yet anyway.
                return Err(RowCommitError::Conflict { index });
            }
        }
        for (i, scan) in scans.iter().enumerate() {
            let mut qb = QueryBuilder::<Postgres>::new("SELECT path, update_time");
            push_selection(&mut qb, database, &scan.selection);
            qb.push(" ORDER BY path");
            let rows = qb
                .build()
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_error("checking a scan", e))?;
            let mut now = Vec::with_capacity(rows.len());
            for r in &rows {
                let path: Vec<u8> = r
                    .try_get("path")
                    .map_err(|e| db_error("checking a scan", e))?;
                let update_time: i64 = r
                    .try_get("update_time")
                    .map_err(|e| db_error("checking a scan", e))?;
                now.push((path, update_time));
            }
            if now != scan.rows {
                return Err(RowCommitError::Conflict {
                    index: checks.len() + i,
                });
            }
        }
        for write in writes {
            match write {
                RowWrite::Put(row) => put_row(&mut tx, database, row).await?,
                RowWrite::Delete(path) => {
                    sqlx::query("DELETE FROM documents WHERE database_name = $1 AND path = $2")
                        .bind(database)
                        .bind(path)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| db_error("deleting a document", e))?;
                }
            }
        }
        tx.commit()
            .await
            .map_err(|e| db_error("committing documents", e))?;
        Ok(())
    }

    async fn export_rows(
        &self,
        database: Option<&str>,
        after: Option<&ExportCursor>,
        limit: u32,
    ) -> Result<Vec<DocumentRow>, StoreError> {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
        qb.push(COLUMNS).push(" FROM documents WHERE 1 = 1");
        if let Some(db) = database {
            qb.push(" AND database_name = ").push_bind(db.to_owned());
        }
        // Database names compare bytewise (`COLLATE "C"`), like SQLite.
        if let Some((db, path)) = after {
            qb.push(" AND (database_name COLLATE \"C\" > ")
                .push_bind(db.clone())
                .push(" OR (database_name = ")
                .push_bind(db.clone())
                .push(" AND path > ")
                .push_bind(path.clone())
                .push("))");
        }
        qb.push(" ORDER BY database_name COLLATE \"C\", path LIMIT ")
            .push_bind(i64::from(limit));
        let rows = qb
            .build()
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| db_error("exporting documents", e))?;
        rows.iter().map(decode_row).collect()
    }

    async fn import_rows(&self, rows: &[DocumentRow]) -> Result<(), StoreError> {
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(|e| db_error("starting an import", e))?;
        // Every database's commit lock, in one order, so an import and a
        // commit (or two imports) cannot deadlock.
        let databases: BTreeSet<&str> = rows.iter().map(|r| r.database.as_str()).collect();
        for database in databases {
            lock_database(&mut tx, database).await?;
        }
        for row in rows {
            put_row(&mut tx, &row.database, row).await?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error("committing an import", e))?;
        Ok(())
    }
}
