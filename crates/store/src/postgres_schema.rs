//! The PostgreSQL schema, as an ordered list of migrations.
//!
//! The tables are those of `schema.rs` (BLOB spelled BYTEA) plus what
//! several nodes sharing one database need: `counters`, the revocation
//! change log, shared transaction bindings, and the audit index and
//! checkpoints keyed by node. Kept to plain SQL that CockroachDB and
//! YugabyteDB also accept.

use crate::schema::Migration;

/// Creates the bookkeeping table; run (under the migration lock) every start.
pub(crate) const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL
)";

// INVARIANT: append only. An applied migration is never edited; a change is a
// new entry with the next version.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: "
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    public_key BYTEA NOT NULL,
    encrypted_private_key BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    signs_from BIGINT NOT NULL,
    signs_until BIGINT NOT NULL,
    published_until BIGINT NOT NULL
);

CREATE TABLE revocations (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    mode TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    reason TEXT NOT NULL,
    PRIMARY KEY (kind, value, mode)
);
CREATE INDEX revocations_expires_at ON revocations (expires_at);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('revocations', 0), ('signing_keys', 0);

CREATE TABLE revocation_log (
    seq BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    mode TEXT NOT NULL,
    created_at BIGINT,
    expires_at BIGINT,
    reason TEXT
);

CREATE TABLE webhook_deliveries (
    source TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (source, delivery_id)
);
CREATE INDEX webhook_deliveries_received_at ON webhook_deliveries (source, received_at);

CREATE TABLE audit_index (
    node TEXT NOT NULL,
    seq BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    principal TEXT,
    principal_id TEXT,
    action TEXT NOT NULL,
    resource TEXT,
    decision TEXT,
    commit_id TEXT,
    job_id TEXT,
    event_json TEXT NOT NULL,
    PRIMARY KEY (node, seq)
);
CREATE INDEX audit_index_time_ms ON audit_index (time_ms, node, seq);
CREATE INDEX audit_index_principal ON audit_index (principal);
CREATE INDEX audit_index_principal_id ON audit_index (principal_id);
CREATE INDEX audit_index_commit_id ON audit_index (commit_id);
CREATE INDEX audit_index_job_id ON audit_index (job_id);

CREATE TABLE audit_checkpoints (
    node TEXT NOT NULL,
    seq BIGINT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (node, seq)
);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    issuer TEXT NOT NULL,
    principal_json TEXT NOT NULL,
    secrets BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    id_token_expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_subject ON sessions (subject);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_last_seen_at ON sessions (last_seen_at);

CREATE TABLE transaction_bindings (
    tx BYTEA PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX transaction_bindings_expires_ms ON transaction_bindings (expires_ms);

CREATE TABLE documents (
    database_name TEXT NOT NULL,
    path BYTEA NOT NULL,
    parent BYTEA NOT NULL,
    collection_id TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    fields BYTEA NOT NULL,
    PRIMARY KEY (database_name, path)
);
CREATE INDEX documents_parent ON documents (database_name, parent, path);
CREATE INDEX documents_group ON documents (database_name, collection_id, path);
",
}];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        assert!(MIGRATIONS.iter().all(|m| m.version > 0));
    }
}
