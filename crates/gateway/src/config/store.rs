//! `[store]`: the state store's backend, and how a node that shares it
//! follows the other nodes' revocations.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, SecretSource, duration_str, invalid};

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (the default: one file in the data directory, one node) or
    /// `postgres` (several nodes share one database).
    #[serde(default)]
    pub backend: StoreBackend,
    /// The PostgreSQL URL (`postgres://user:pass@host:5432/db?sslmode=verify-full`),
    /// as `url = { env = "LATCHKEY_DATABASE_URL" }` or `{ file = ".." }`
    /// (it usually carries a password), or inline.
    #[serde(default)]
    pub url: SecretSource,
    /// This node's name, unique among the nodes sharing the database: its
    /// audit chain is kept under it. Required with `postgres`.
    pub node: Option<String>,
    /// Connections this node keeps to PostgreSQL.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// `strict` (the default): once this node's view of revocations is older
    /// than `max_staleness`, it refuses requests with 503 until it catches
    /// up. `best_effort`: it keeps serving on its last view (a revocation
    /// made elsewhere meanwhile is not enforced here until it reconnects).
    #[serde(default)]
    pub revocations: RevocationConsistency,
    /// How old the revocation view may grow before a `strict` node refuses.
    #[serde(default = "default_max_staleness", with = "duration_str")]
    pub max_staleness: Duration,
    /// How often a node polls the change log even without a notification
    /// (covers a lost or half-open listening connection).
    #[serde(default = "default_poll_interval", with = "duration_str")]
    pub poll_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::default(),
            url: SecretSource::default(),
            node: None,
            pool_size: default_pool_size(),
            revocations: RevocationConsistency::default(),
            max_staleness: default_max_staleness(),
            poll_interval: default_poll_interval(),
        }
    }
}

/// Which database holds the state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// `latchkey.db` in the data directory.
    #[default]
    Sqlite,
    /// A PostgreSQL database several nodes share.
    Postgres,
}

/// What a node sharing the store does when it cannot follow revocations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationConsistency {
    /// Refuse requests (503) while the view is older than `max_staleness`.
    #[default]
    Strict,
    /// Keep serving on the last view (weaker: see the README).
    BestEffort,
}

impl RevocationConsistency {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::BestEffort => "best_effort",
        }
    }
}

fn default_pool_size() -> u32 {
    10
}
fn default_max_staleness() -> Duration {
    Duration::from_secs(5)
}
fn default_poll_interval() -> Duration {
    Duration::from_millis(250)
}

/// The longest node name (it is a key in every audit row).
const MAX_NODE_NAME: usize = 64;

impl StoreConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match self.backend {
            StoreBackend::Sqlite => {
                if self.url.is_set() {
                    return Err(invalid(
                        "store.url",
                        "only `backend = \"postgres\"` takes a URL; the SQLite store is `latchkey.db` in `server.data_dir`",
                    ));
                }
            }
            StoreBackend::Postgres => {
                if !self.url.is_set() {
                    return Err(invalid(
                        "store.url",
                        "required with `backend = \"postgres\"`, e.g. `url = { env = \"LATCHKEY_DATABASE_URL\" }`",
                    ));
                }
                let Some(node) = &self.node else {
                    return Err(invalid(
                        "store.node",
                        "required with `backend = \"postgres\"`: a name unique among the nodes sharing the database, e.g. `node = \"gw-1\"`",
                    ));
                };
                let ok = !node.is_empty()
                    && node.len() <= MAX_NODE_NAME
                    && node
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !ok {
                    return Err(invalid(
                        "store.node",
                        format!(
                            "`{node}` must be 1 to {MAX_NODE_NAME} letters, digits, `-`, `_` or `.`"
                        ),
                    ));
                }
                if self.pool_size < 2 {
                    return Err(invalid("store.pool_size", "must be at least 2"));
                }
            }
        }
        if self.poll_interval < Duration::from_millis(50)
            || self.poll_interval > Duration::from_secs(5)
        {
            return Err(invalid(
                "store.poll_interval",
                "must be between 50ms and 5s (revocations must reach every node within a second)",
            ));
        }
        if self.max_staleness <= self.poll_interval {
            return Err(invalid(
                "store.max_staleness",
                "must be longer than `store.poll_interval`, or every node refuses between two polls",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn error_of(store: &str) -> String {
        match Config::parse(&format!("[store]\n{store}")) {
            Ok(_) => panic!("accepted: {store}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn sqlite_is_the_default_and_postgres_needs_a_url_and_a_node_name() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.store.backend, super::StoreBackend::Sqlite);
        assert_eq!(c.store.revocations, super::RevocationConsistency::Strict);
        assert_eq!(c.store.max_staleness, std::time::Duration::from_secs(5));
        assert_eq!(c.store.poll_interval, std::time::Duration::from_millis(250));

        let e = error_of("backend = \"postgres\"\nnode = \"gw-1\"");
        assert!(e.contains("store.url") && e.contains("required"), "{e}");
        let e = error_of("backend = \"postgres\"\nurl = { env = \"DB\" }");
        assert!(e.contains("store.node") && e.contains("unique"), "{e}");
        let e = error_of("backend = \"postgres\"\nurl = { env = \"DB\" }\nnode = \"gw 1\"");
        assert!(e.contains("store.node"), "{e}");
        let e = error_of("url = { env = \"DB\" }");
        assert!(
            e.contains("only `backend = \"postgres\"` takes a URL"),
            "{e}"
        );
        let e = error_of("backend = \"mysql\"");
        assert!(e.contains("unknown variant"), "{e}");

        let ok = Config::parse(
            "[store]\nbackend = \"postgres\"\nurl = { env = \"DB\" }\nnode = \"gw-1\"\n\
             revocations = \"best_effort\"\nmax_staleness = \"2s\"\npoll_interval = \"100ms\"",
        )
        .unwrap();
        assert_eq!(
            ok.store.revocations,
            super::RevocationConsistency::BestEffort
        );
        assert_eq!(
            ok.store.poll_interval,
            std::time::Duration::from_millis(100)
        );
    }

    #[test]
    fn the_poll_and_the_staleness_bound_must_let_revocations_arrive_within_a_second() {
        let e = error_of("poll_interval = \"10s\"");
        assert!(e.contains("store.poll_interval"), "{e}");
        let e = error_of("poll_interval = \"10ms\"");
        assert!(e.contains("store.poll_interval"), "{e}");
        let e = error_of("poll_interval = \"1s\"\nmax_staleness = \"1s\"");
        assert!(e.contains("store.max_staleness"), "{e}");
    }
}
