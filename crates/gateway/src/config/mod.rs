//! `latchkey.toml`: one file, every secret from the environment or a file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use latchkey_core::PrincipalKind;
use latchkey_identity::{ClaimMatch, IssuerConfig};
use serde::Deserialize;

mod apps;
mod secrets;
mod store;
pub(crate) use apps::cgi_form;
pub use apps::{AppConfig, AppCookie, AppPreset, IdentityField, RESERVED_PREFIXES, UserClaim};
pub use secrets::SecretSource;
pub use store::{RevocationConsistency, StoreBackend, StoreConfig};

/// A configuration problem, naming the key and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or a key has the wrong type or is unknown.
    #[error("invalid config `{path}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (it names the key and line).
        message: String,
    },
    /// A key has a value that cannot work.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The dotted key path.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A secret could not be loaded.
    #[error("config key `{key}`: {message}")]
    Secret {
        /// The dotted key path.
        key: String,
        /// What is wrong (never the secret itself).
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener, public URL and data directory.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[store]`: where shared state lives (SQLite in the data directory,
    /// or PostgreSQL shared by several nodes).
    #[serde(default)]
    pub store: StoreConfig,
    /// Token lifetimes and audiences.
    #[serde(default)]
    pub tokens: TokensConfig,
    /// Signing keys and the master key that encrypts them.
    #[serde(default)]
    pub keys: KeysConfig,
    /// Where policies live.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Audit log settings.
    #[serde(default)]
    pub audit: AuditSettings,
    /// Trusted external OIDC issuers.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Git upstreams by name.
    #[serde(default)]
    pub git: GitConfig,
    /// The built-in development identity provider (never for production).
    #[serde(default)]
    pub dev_issuer: DevIssuerConfig,
    /// `[[trust]]`: which CI workloads may mint which tokens.
    #[serde(default)]
    pub trust: Vec<TrustRule>,
    /// `[webhooks.<source>]`: secrets and options of webhook senders.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// `[[rules]]`: what the gateway does when a webhook event arrives.
    #[serde(default)]
    pub rules: Vec<latchkey_events::Rule>,
    /// `[documents]`: the Firestore v1 document API (gRPC and REST) and the
    /// backend that answers it. Absent (and no legacy `[firestore]` table):
    /// the document routes answer that no document store is configured.
    /// After [`Config::validate`] this is the one place to read the document
    /// settings from, whichever table they were written in.
    #[serde(default)]
    pub documents: Option<DocumentsConfig>,
    /// `[firestore]`: the Google Firestore (or emulator) upstream of
    /// `documents.backend = "firestore"`. Written alone, with `databases` in
    /// it, it is the older form of `[documents] backend = "firestore"` and
    /// still accepted.
    #[serde(default)]
    pub firestore: Option<FirestoreConfig>,
    /// `[[apps]]`: web apps behind Latchkey, by host or path prefix.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// `[sessions]`: browser sessions (sign-in with `login = true` issuers).
    #[serde(default)]
    pub sessions: SessionsConfig,
}

/// `[sessions]`: how long browser sessions last, and where a browser may
/// be sent back to after signing in or out besides this gateway's paths.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// A session unused this long ends (default 1h).
    #[serde(default = "default_session_idle", with = "duration_str")]
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in however busy (default 12h).
    #[serde(default = "default_session_absolute", with = "duration_str")]
    pub absolute_timeout: Duration,
    /// Exact origins (`https://gogs.example.com`) a return address may
    /// name; the gateway's own origin is always allowed.
    #[serde(default)]
    pub return_origins: Vec<String>,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            idle_timeout: default_session_idle(),
            absolute_timeout: default_session_absolute(),
            return_origins: Vec::new(),
        }
    }
}

fn default_session_idle() -> Duration {
    Duration::from_secs(3600)
}

fn default_session_absolute() -> Duration {
    Duration::from_secs(12 * 3600)
}

/// `[documents]`: the Firestore v1 document API Latchkey serves, how its
/// databases map to environments, and which backend holds the documents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentsConfig {
    /// `embedded` (documents in the state store, nothing else to run) or
    /// `firestore` (Google Firestore or its emulator, set in `[firestore]`).
    pub backend: DocumentsBackend,
    /// The Google Cloud project callers may name. Unset: any project (an
    /// emulator, and the embedded store, accept any).
    pub project: Option<String>,
    /// Firestore database id → environment (`prod = "prod"`,
    /// `"(default)" = "dev"`). A database not listed is refused.
    #[serde(default)]
    pub databases: BTreeMap<String, String>,
    /// Collection paths (globs, e.g. `flags` or `teams/*/settings`) whose
    /// written field values are copied into the audit log. Elsewhere only
    /// the field names are.
    #[serde(default)]
    pub record_values: Vec<String>,
    /// Largest request body (REST JSON or one gRPC message). Firestore's
    /// own limit is 10 MiB.
    #[serde(default = "default_firestore_max_request")]
    pub max_request_bytes: usize,
}

/// Which backend answers the document API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentsBackend {
    /// Latchkey's own Firestore-compatible store, in the state store.
    Embedded,
    /// Google Firestore, or Google's emulator (`[firestore]`).
    Firestore,
}

impl DocumentsBackend {
    /// The name written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Firestore => "firestore",
        }
    }
}

/// `[firestore]`: where Firestore calls go. Exactly one of `emulator`,
/// `service_account_file` and `metadata` says where the upstream credential
/// comes from. `project`, `databases`, `record_values` and
/// `max_request_bytes` belong in `[documents]`; here they are the older
/// form, read only when `[documents]` is absent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirestoreConfig {
    /// `host:port` of a Firestore emulator. Calls go over cleartext with the
    /// emulator's admin credential `Bearer owner`.
    pub emulator: Option<String>,
    /// A Google service-account key file; Latchkey trades it for
    /// short-lived OAuth access tokens.
    pub service_account_file: Option<PathBuf>,
    /// Take access tokens from the GCE/GKE metadata server.
    #[serde(default)]
    pub metadata: bool,
    /// The Google endpoint (TLS); only with real Google credentials.
    #[serde(default = "default_firestore_endpoint")]
    pub endpoint: String,
    /// Older form of `documents.project`.
    pub project: Option<String>,
    /// Older form of `documents.databases`.
    #[serde(default)]
    pub databases: BTreeMap<String, String>,
    /// Older form of `documents.record_values`.
    #[serde(default)]
    pub record_values: Vec<String>,
    /// Older form of `documents.max_request_bytes`.
    pub max_request_bytes: Option<usize>,
}

fn default_firestore_endpoint() -> String {
    "https://firestore.googleapis.com".into()
}
fn default_firestore_max_request() -> usize {
    11 * 1024 * 1024
}

impl DocumentsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.databases.is_empty() {
            return Err(invalid(
                "documents.databases",
                "map at least one database to an environment, e.g. `databases = { \"(default)\" = \"dev\" }`",
            ));
        }
        for (db, env) in &self.databases {
            if env.trim().is_empty() || env.contains('/') {
                return Err(invalid(
                    format!("documents.databases.{db}"),
                    "the environment must be a non-empty name without `/`",
                ));
            }
        }
        if self.max_request_bytes < 1024 {
            return Err(invalid(
                "documents.max_request_bytes",
                "must be at least 1024",
            ));
        }
        Ok(())
    }
}

impl FirestoreConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let sources = usize::from(self.emulator.is_some())
            + usize::from(self.service_account_file.is_some())
            + usize::from(self.metadata);
        if sources != 1 {
            return Err(invalid(
                "firestore",
                "set exactly one of `emulator = \"host:port\"`, \
                 `service_account_file = \"key.json\"` and `metadata = true`",
            ));
        }
        if let Some(e) = &self.emulator {
            if e.contains("://")
                || e.rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(invalid(
                    "firestore.emulator",
                    format!("`{e}` is not `host:port` (no scheme), e.g. \"127.0.0.1:8681\""),
                ));
            }
        } else if !self.endpoint.starts_with("https://") {
            return Err(invalid(
                "firestore.endpoint",
                "Google's endpoint must be https:// (the credential would otherwise travel in the clear)",
            ));
        }
        Ok(())
    }
}

/// `[server.tls]`: serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) instead of
/// cleartext. gRPC clients other than on loopback need this.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[webhooks]`: one optional table per sender. A sender without a table
/// has its `/hooks/{source}` route answer 404.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// `[webhooks.gogs]`.
    pub gogs: Option<WebhookSource>,
    /// `[webhooks.gitea]`.
    pub gitea: Option<WebhookSource>,
    /// `[webhooks.github]`.
    pub github: Option<WebhookSource>,
    /// `[webhooks.buildkite]`.
    pub buildkite: Option<WebhookSource>,
}

impl WebhooksConfig {
    /// The table for `source`, if configured.
    pub fn get(&self, source: latchkey_events::Source) -> Option<&WebhookSource> {
        use latchkey_events::Source;
        match source {
            Source::Gogs => self.gogs.as_ref(),
            Source::Gitea => self.gitea.as_ref(),
            Source::GitHub => self.github.as_ref(),
            Source::Buildkite => self.buildkite.as_ref(),
        }
    }
}

/// One `[webhooks.<source>]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSource {
    /// The shared secret the sender signs with (required).
    pub secret: SecretSource,
    /// How far a Buildkite signature timestamp may be from now, either way.
    #[serde(default = "default_timestamp_window", with = "duration_str")]
    pub timestamp_window: Duration,
    /// Buildkite only: accept the unsigned `X-Buildkite-Token` scheme (no
    /// integrity, no freshness). Off by default.
    #[serde(default)]
    pub allow_plain_token: bool,
}

fn default_timestamp_window() -> Duration {
    latchkey_events::DEFAULT_TIMESTAMP_WINDOW
}

/// One `[[trust]]` rule: tokens of workload issuer `issuer` whose claims all
/// match `claims` may be exchanged for tokens of `audiences`, with at most
/// `scopes` and `max_lifetime` (like Vault's `bound_claims` or octo-sts trust
/// policies).
///
/// A workload principal needs at least one matching rule for the requested
/// audience, *and* Cedar must allow `token.mint`. Rules are tried in file
/// order; the first whose claims, audience and scopes fit decides the scopes
/// and lifetime. Users and agents are never subject to trust rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRule {
    /// The `name` of a workload `[[issuers]]` entry.
    pub issuer: String,
    /// Token claims that must all match (exact or glob; a list is any-of).
    #[serde(default)]
    pub claims: BTreeMap<String, ClaimMatch>,
    /// Audiences this rule lets the workload mint tokens for.
    pub audiences: Vec<String>,
    /// Scopes allowed; a request must ask for a subset. A request with no
    /// scope gets all of them. Empty (the default) leaves scopes unrestricted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Longest lifetime of a token minted under this rule (capped further by
    /// `tokens.max_lifetime` and the CI token's own expiry).
    #[serde(default, with = "opt_duration_str")]
    pub max_lifetime: Option<Duration>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The URL clients use to reach Latchkey; it is the `iss` of Latchkey tokens.
    pub public_url: Option<String>,
    /// Where the store, audit log and keys live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Largest buffered request body (token endpoint, admin API).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Time allowed for upstreams to answer (the caller's own header-read
    /// and idle time-outs are in [`ServerLimits`]).
    #[serde(default = "default_request_timeout", with = "duration_str")]
    pub upstream_timeout: Duration,
    /// `[server.tls]`: certificate and key for HTTPS. Unset: cleartext
    /// HTTP/1.1 and HTTP/2 (prior knowledge, as gRPC clients speak it).
    pub tls: Option<TlsConfig>,
    /// `[server.limits]`: what one connection or one unauthenticated client
    /// may cost the gateway.
    #[serde(default)]
    pub limits: ServerLimits,
}

/// `[server.limits]`: the bounds on work a caller can cause before (or
/// without) authenticating. Every field has a safe default; see README.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerLimits {
    /// A connection must deliver a complete request head (HTTP/1) or its
    /// first bytes (TLS handshake, HTTP/2 preface) within this time of
    /// starting one; otherwise it is closed.
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this long
    /// (HTTP/2: GOAWAY, then close).
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// Connections served at once. Past it new connections wait in the
    /// kernel's accept queue until one closes (they are not refused).
    pub max_connections: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`. The Firestore clients
    /// open one stream per `onSnapshot` listener on a single connection,
    /// and their own system tests hold 150 at once: the default leaves room.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`, in bytes.
    pub http2_max_header_list_bytes: u32,
    /// HTTP/2 streams a client may open and reset before they are accepted
    /// (rapid-reset flood) before the connection gets GOAWAY.
    pub http2_max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams the server may reset for protocol errors on one
    /// connection before it gets GOAWAY.
    pub http2_max_local_error_reset_streams: usize,
    /// Refusal records per client address and interval before
    /// authentication (bad, unknown or missing credentials); past it
    /// refusals still reach the caller but are counted, and one summary
    /// record per interval says how many were not recorded.
    pub unauthenticated_refusals: u32,
    /// The interval of `unauthenticated_refusals`.
    #[serde(with = "duration_str")]
    pub unauthenticated_interval: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            http2_max_concurrent_streams: 256,
            http2_max_header_list_bytes: 64 * 1024,
            http2_max_pending_accept_reset_streams: 20,
            http2_max_local_error_reset_streams: 256,
            unauthenticated_refusals: 20,
            unauthenticated_interval: Duration::from_secs(60),
        }
    }
}

impl ServerLimits {
    fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("server.limits.{k}");
        if self.header_read_timeout.is_zero() {
            return Err(invalid(
                key("header_read_timeout"),
                "must be at least 1s (a connection would be closed before it could speak)",
            ));
        }
        if self.idle_timeout.is_zero() {
            return Err(invalid(key("idle_timeout"), "must be at least 1s"));
        }
        if self.max_connections == 0 {
            return Err(invalid(
                key("max_connections"),
                "must be at least 1 (the default is 1024)",
            ));
        }
        if self.http2_max_concurrent_streams == 0 {
            return Err(invalid(
                key("http2_max_concurrent_streams"),
                "must be at least 1 (the default is 256)",
            ));
        }
        if self.http2_max_header_list_bytes < 4096 {
            return Err(invalid(
                key("http2_max_header_list_bytes"),
                "must be at least 4096 (the default is 65536)",
            ));
        }
        if self.unauthenticated_interval.is_zero() {
            return Err(invalid(
                key("unauthenticated_interval"),
                "must be at least 1s (the default is 1m)",
            ));
        }
        Ok(())
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("latchkey-data")
}
fn default_max_body() -> usize {
    64 * 1024
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
            data_dir: default_data_dir(),
            max_body_bytes: default_max_body(),
            upstream_timeout: default_request_timeout(),
            tls: None,
            limits: ServerLimits::default(),
        }
    }
}

impl ServerConfig {
    /// The public URL, defaulting to `http://{listen}`.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// `[tokens]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// Lifetime when the caller asks for none.
    #[serde(default = "default_lifetime", with = "duration_str")]
    pub default_lifetime: Duration,
    /// Longest lifetime ever granted. Default 1 h; at most 12 h, and only
    /// when configured so.
    #[serde(default = "default_max_lifetime", with = "duration_str")]
    pub max_lifetime: Duration,
    /// Audiences tokens may be minted for. `latchkey` is the gateway's own
    /// admin API; `git` the Git routes.
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
    /// Size of the verified-token cache.
    #[serde(default = "default_cache")]
    pub cache_capacity: usize,
}

fn default_lifetime() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_max_lifetime() -> Duration {
    Duration::from_secs(3600)
}
fn default_audiences() -> Vec<String> {
    vec!["git".into(), "documents".into(), "latchkey".into()]
}
fn default_cache() -> usize {
    100_000
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            default_lifetime: default_lifetime(),
            max_lifetime: default_max_lifetime(),
            audiences: default_audiences(),
            cache_capacity: default_cache(),
        }
    }
}

/// `[keys]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The master key (32 bytes, base64) that encrypts private keys at rest.
    #[serde(default)]
    pub master_key: SecretSource,
    /// How long a signing key signs before its successor takes over.
    #[serde(default = "default_rotation", with = "duration_str")]
    pub rotation_period: Duration,
    /// How long a new key is published before it signs.
    #[serde(default = "default_publish_ahead", with = "duration_str")]
    pub publish_ahead: Duration,
}

fn default_rotation() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_publish_ahead() -> Duration {
    Duration::from_secs(3600)
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            master_key: SecretSource {
                env: Some("LATCHKEY_MASTER_KEY".into()),
                ..SecretSource::default()
            },
            rotation_period: default_rotation(),
            publish_ahead: default_publish_ahead(),
        }
    }
}

/// `[policy]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Directory of `*.cedar` files and an optional `entities.json`. Unset:
    /// `policies` in the data directory (where `latchkey dev` and `latchkey
    /// init` put them); use [`Config::policy_dir`] for the directory in force.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// `[audit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// How often a signed checkpoint is written.
    #[serde(default = "default_checkpoint", with = "duration_str")]
    pub checkpoint_interval: Duration,
    /// `[audit.witness]`: where each checkpoint is sent as it is signed, so
    /// a copy lives off the machine.
    #[serde(default)]
    pub witness: Option<WitnessConfig>,
}

/// `[audit.witness]`. At least one of `url` and `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// An HTTP(S) endpoint that is POSTed each checkpoint as JSON, and that
    /// answers GET with the checkpoints it holds (for `audit verify --witness`).
    #[serde(default)]
    pub url: Option<String>,
    /// A file (on another mount or machine) each checkpoint is appended to
    /// as one JSON line.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// How long one delivery may take before it is retried.
    #[serde(default = "default_witness_timeout", with = "duration_str")]
    pub timeout: Duration,
}

fn default_witness_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_checkpoint() -> Duration {
    Duration::from_secs(10)
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            checkpoint_interval: default_checkpoint(),
            witness: None,
        }
    }
}

/// `[git]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    /// Upstreams by the name used in `/git/{name}/...`.
    #[serde(default)]
    pub upstreams: BTreeMap<String, GitUpstreamConfig>,
    /// Accept pushes that carry a push certificate (`git push --signed`).
    /// Off by default: Gogs and Gitea do not use them, and a refused
    /// certificate cannot hide a command from policy.
    #[serde(default)]
    pub push_certificates: bool,
}

/// One Git upstream: either a smart-HTTP server or a local directory served
/// through `git http-backend`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitUpstreamConfig {
    /// Base URL of a smart-HTTP Git server (Gogs, Gitea, ...): repositories are
    /// at `{url}/{owner}/{repo}.git`.
    pub url: Option<String>,
    /// A directory of bare repositories `{owner}/{repo}.git`, served by `git http-backend`.
    pub local_root: Option<PathBuf>,
    /// Service-account user name for Basic auth to the upstream.
    pub username: Option<String>,
    /// The service account's password or access token.
    #[serde(default)]
    pub password: SecretSource,
    /// PEM file of the CA that signed an `https://` upstream's certificate;
    /// the system roots when unset.
    pub ca_file: Option<PathBuf>,
}

/// `[dev_issuer]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevIssuerConfig {
    /// Serve the built-in development identity provider under `/dev-idp`.
    /// DEV ONLY: anyone with the data directory can mint identities.
    /// `serve` refuses it unless `allow_in_serve` is also true.
    #[serde(default)]
    pub enabled: bool,
    /// Explicitly allow the dev issuer in `latchkey serve`.
    #[serde(default)]
    pub allow_in_serve: bool,
    /// Lifetime of the ID tokens its sign-in page issues (default 1 h); a
    /// short one shows `latchkey login`'s quiet renewal.
    #[serde(default, with = "opt_duration_str")]
    pub id_token_lifetime: Option<Duration>,
}

impl Config {
    /// Reads and validates a config file. Every relative path in it
    /// (`server.data_dir` included) is resolved against the directory the
    /// file is in, as most servers do, so the file means the same whatever
    /// directory `latchkey` is started from. Only the *default* policy
    /// directory lives in the data directory (`{data_dir}/policies`).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        // Absolute, so a message names the file an operator can find, and
        // so nothing changes meaning if the process changes directory.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        config.resolve_paths(Some(&dir));
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates config text that has no file (`latchkey dev`
    /// builds its config this way, tests and embedders too).
    /// `server.data_dir` and secret, TLS, witness and service-account files
    /// are taken as given (relative to the current directory); a relative
    /// `policy.dir` or git `local_root` is in the data directory, which is
    /// what `latchkey dev`'s generated text relies on (`local_root = "repos"`).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut config = Self::from_toml(text)?;
        config.resolve_paths(None);
        config.validate()?;
        Ok(config)
    }

    fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })
    }

    /// The one place path keys are resolved; every key that names a file
    /// or directory is listed here. `base` is the config file's directory
    /// ([`Config::load`]); `None` is text without a file ([`Config::parse`]).
    fn resolve_paths(&mut self, base: Option<&Path>) {
        let join = |base: &Path, p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(b) = base {
            join(b, &mut self.server.data_dir);
        }
        let data = self.server.data_dir.clone();
        // Text without a file keeps the data directory as the base of the
        // two directory keys (as before files were resolved by their own
        // directory); other files there are relative to the current one.
        let dirs_base = base.unwrap_or(&data);
        match &mut self.policy.dir {
            Some(d) => join(dirs_base, d),
            None => self.policy.dir = Some(data.join("policies")),
        }
        for up in self.git.upstreams.values_mut() {
            if let Some(root) = &mut up.local_root {
                join(dirs_base, root);
            }
        }
        let Some(base) = base else {
            return;
        };
        let mut secrets: Vec<&mut SecretSource> = vec![&mut self.keys.master_key];
        secrets.extend(self.git.upstreams.values_mut().map(|u| &mut u.password));
        let w = &mut self.webhooks;
        secrets.extend(
            [&mut w.gogs, &mut w.gitea, &mut w.github, &mut w.buildkite]
                .into_iter()
                .flatten()
                .map(|s| &mut s.secret),
        );
        for secret in secrets {
            if let Some(f) = &mut secret.file {
                join(base, f);
            }
        }
        for up in self.git.upstreams.values_mut() {
            if let Some(f) = &mut up.ca_file {
                join(base, f);
            }
        }
        for app in &mut self.apps {
            if let Some(f) = &mut app.ca_file {
                join(base, f);
            }
        }
        if let Some(tls) = &mut self.server.tls {
            join(base, &mut tls.cert_file);
            join(base, &mut tls.key_file);
        }
        if let Some(f) = self.audit.witness.as_mut().and_then(|w| w.file.as_mut()) {
            join(base, f);
        }
        if let Some(f) = self
            .firestore
            .as_mut()
            .and_then(|fs| fs.service_account_file.as_mut())
        {
            join(base, f);
        }
    }

    /// The policy directory in force: `policy.dir`, or `policies` in the
    /// data directory when unset.
    pub fn policy_dir(&self) -> PathBuf {
        self.policy
            .dir
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("policies"))
    }

    /// Settles `[documents]`: the older form (`[firestore]` alone, with
    /// `databases` in it) becomes `backend = "firestore"`; a `[firestore]`
    /// table must go with that backend and no other; each table's values
    /// are checked.
    fn resolve_documents(&mut self) -> Result<(), ConfigError> {
        if let Some(fs) = &self.firestore {
            fs.validate()?;
        }
        match (&self.documents, &self.firestore) {
            (None, None) => return Ok(()),
            (None, Some(fs)) => {
                self.documents = Some(DocumentsConfig {
                    backend: DocumentsBackend::Firestore,
                    project: fs.project.clone(),
                    databases: fs.databases.clone(),
                    record_values: fs.record_values.clone(),
                    max_request_bytes: fs
                        .max_request_bytes
                        .unwrap_or_else(default_firestore_max_request),
                });
                if fs.databases.is_empty() {
                    return Err(invalid(
                        "documents.databases",
                        "map at least one database to an environment, e.g. \
                         `[documents]` with `databases = { \"(default)\" = \"dev\" }`",
                    ));
                }
            }
            (Some(docs), Some(fs)) => {
                if docs.backend != DocumentsBackend::Firestore {
                    return Err(invalid(
                        "firestore",
                        format!(
                            "[firestore] is the upstream of `documents.backend = \"firestore\"`, \
                             but the backend is `{}`; remove [firestore] or change the backend",
                            docs.backend.as_str()
                        ),
                    ));
                }
                let moved = [
                    ("project", fs.project.is_some()),
                    ("databases", !fs.databases.is_empty()),
                    ("record_values", !fs.record_values.is_empty()),
                    ("max_request_bytes", fs.max_request_bytes.is_some()),
                ];
                if let Some((key, _)) = moved.iter().find(|(_, set)| *set) {
                    return Err(invalid(
                        format!("firestore.{key}"),
                        format!(
                            "with a [documents] table, `{key}` belongs there: move it to `documents.{key}`"
                        ),
                    ));
                }
            }
            (Some(docs), None) => {
                if docs.backend == DocumentsBackend::Firestore {
                    return Err(invalid(
                        "documents.backend",
                        "`firestore` needs a [firestore] table saying where it is: \
                         `emulator = \"host:port\"`, `service_account_file = \"key.json\"` or `metadata = true`",
                    ));
                }
            }
        }
        if let Some(docs) = &self.documents {
            docs.validate()?;
        }
        Ok(())
    }

    /// Checks every value that parsing cannot.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        if let Some(url) = &self.server.public_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| invalid("server.public_url", format!("not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid("server.public_url", "must be an http or https URL"));
            }
        }
        if self.server.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        self.server.limits.validate()?;
        self.store.validate()?;
        self.validate_sessions()?;
        self.resolve_documents()?;
        if let Some(w) = &self.audit.witness {
            if w.url.is_none() && w.file.is_none() {
                return Err(invalid(
                    "audit.witness",
                    "set `url` (an HTTP(S) endpoint) or `file` (on another mount), or both",
                ));
            }
            if let Some(url) = &w.url {
                let ok = url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
                if !ok {
                    return Err(invalid(
                        "audit.witness.url",
                        format!("`{url}` is not an http or https URL"),
                    ));
                }
            }
        }
        let t = &self.tokens;
        if t.max_lifetime > Duration::from_secs(12 * 3600) {
            return Err(invalid("tokens.max_lifetime", "must be at most 12h"));
        }
        if t.max_lifetime < Duration::from_secs(60) {
            return Err(invalid("tokens.max_lifetime", "must be at least 1m"));
        }
        if t.default_lifetime > t.max_lifetime || t.default_lifetime.is_zero() {
            return Err(invalid(
                "tokens.default_lifetime",
                "must be greater than zero and at most `tokens.max_lifetime`",
            ));
        }
        if t.audiences.is_empty() {
            return Err(invalid("tokens.audiences", "list at least one audience"));
        }
        for (i, a) in t.audiences.iter().enumerate() {
            if a.trim().is_empty() || a.contains(char::is_whitespace) {
                return Err(invalid(
                    format!("tokens.audiences[{i}]"),
                    "an audience is a non-empty word without spaces",
                ));
            }
        }
        if self.keys.rotation_period < Duration::from_secs(60) {
            return Err(invalid("keys.rotation_period", "must be at least 1m"));
        }
        if self.keys.publish_ahead >= self.keys.rotation_period {
            return Err(invalid(
                "keys.publish_ahead",
                "must be shorter than `keys.rotation_period`",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            issuer
                .validate()
                .map_err(|e| invalid(format!("issuers[{i}]"), e.to_string()))?;
            if !names.insert(issuer.name.clone()) {
                return Err(invalid(
                    format!("issuers[{i}].name"),
                    format!("`{}` is used by two issuers", issuer.name),
                ));
            }
        }
        self.validate_trust()?;
        self.validate_webhooks()?;
        for (name, up) in &self.git.upstreams {
            let key = format!("git.upstreams.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    &key,
                    "upstream names use letters, digits, `-` and `_`",
                ));
            }
            match (&up.url, &up.local_root) {
                (Some(_), Some(_)) => {
                    return Err(invalid(&key, "set either `url` or `local_root`, not both"));
                }
                (None, None) => return Err(invalid(&key, "set `url` or `local_root`")),
                (Some(u), None) => {
                    let parsed = url::Url::parse(u)
                        .map_err(|e| invalid(format!("{key}.url"), format!("not a URL: {e}")))?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(invalid(
                            format!("{key}.url"),
                            "must be an `http://` or `https://` URL",
                        ));
                    }
                    if up.ca_file.is_some() && parsed.scheme() != "https" {
                        return Err(invalid(
                            format!("{key}.ca_file"),
                            "only an `https://` upstream uses a CA file",
                        ));
                    }
                }
                (None, Some(_)) => {
                    if up.username.is_some() || up.password.is_set() {
                        return Err(invalid(
                            &key,
                            "a `local_root` upstream takes no `username` or `password`",
                        ));
                    }
                }
            }
            if up.password.is_set() && up.username.is_none() {
                return Err(invalid(
                    format!("{key}.username"),
                    "required with `password`",
                ));
            }
            if up.local_root.is_some() && up.ca_file.is_some() {
                return Err(invalid(
                    format!("{key}.ca_file"),
                    "a `local_root` upstream takes no `ca_file`",
                ));
            }
        }
        let public_host = self
            .server
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_owned));
        let audiences =
            apps::validate(&mut self.apps, public_host.as_deref(), &self.git.upstreams)?;
        // An app's audience is one the token endpoint mints for.
        for aud in audiences {
            if !self.tokens.audiences.contains(&aud) {
                self.tokens.audiences.push(aud);
            }
        }
        Ok(())
    }

    /// The app cookies to clear when a browser signs out or its user
    /// changes: each app's own session cookie (Gogs' `i_like_gogs`, ...),
    /// which would otherwise keep the previous user signed in to the app.
    pub fn app_cookies(&self) -> Vec<AppCookie> {
        self.apps.iter().flat_map(AppConfig::cookies).collect()
    }

    /// Checks `[sessions]`: time-outs in range, return origins that are
    /// origins.
    fn validate_sessions(&self) -> Result<(), ConfigError> {
        let s = &self.sessions;
        if s.idle_timeout < Duration::from_secs(60) || s.idle_timeout > s.absolute_timeout {
            return Err(invalid(
                "sessions.idle_timeout",
                "must be at least 1m and at most `sessions.absolute_timeout`",
            ));
        }
        if s.absolute_timeout > Duration::from_secs(7 * 24 * 3600) {
            return Err(invalid("sessions.absolute_timeout", "must be at most 7d"));
        }
        for (i, origin) in s.return_origins.iter().enumerate() {
            let ok = url::Url::parse(origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.has_host()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.path() == "/"
                    && u.query().is_none()
                    && u.fragment().is_none()
            }) && origin.trim_end_matches('/').matches('/').count() == 2;
            if !ok {
                return Err(invalid(
                    format!("sessions.return_origins[{i}]"),
                    format!(
                        "`{}` is not an origin; write `https://host` or `https://host:port`, with no path",
                        latchkey_core::echo(origin)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks `[[trust]]`: each rule names a workload issuer, known
    /// audiences and a lifetime within `tokens.max_lifetime`.
    fn validate_trust(&self) -> Result<(), ConfigError> {
        for (i, rule) in self.trust.iter().enumerate() {
            let key = |k: &str| format!("trust[{i}].{k}");
            let Some(issuer) = self.issuers.iter().find(|c| c.name == rule.issuer) else {
                let names: Vec<&str> = self.issuers.iter().map(|c| c.name.as_str()).collect();
                return Err(invalid(
                    key("issuer"),
                    format!(
                        "`{}` is not the name of an `[[issuers]]` entry; known: {}",
                        rule.issuer,
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                ));
            };
            if issuer.kind != PrincipalKind::Workload {
                return Err(invalid(
                    key("issuer"),
                    format!(
                        "issuer `{}` has kind `{}`; trust rules apply to workload issuers (CI), users are governed by policy alone",
                        issuer.name, issuer.kind
                    ),
                ));
            }
            for (claim, m) in &rule.claims {
                if claim.is_empty()
                    || m.patterns().is_empty()
                    || m.patterns().iter().any(String::is_empty)
                {
                    return Err(invalid(
                        key("claims"),
                        format!("claim `{claim}` needs at least one non-empty pattern"),
                    ));
                }
            }
            if issuer.preset.is_some_and(|p| !p.allows_sub_match())
                && rule.claims.contains_key(&issuer.subject_claim)
            {
                return Err(invalid(
                    key("claims"),
                    format!(
                        "`{}` cannot be matched for issuer `{}`: it embeds the commit; match typed claims such as `pipeline_slug` and `build_branch`",
                        issuer.subject_claim, issuer.name
                    ),
                ));
            }
            if rule.audiences.is_empty() {
                return Err(invalid(key("audiences"), "list at least one audience"));
            }
            for a in &rule.audiences {
                if !self.tokens.audiences.contains(a) {
                    return Err(invalid(
                        key("audiences"),
                        format!(
                            "`{a}` is not in `tokens.audiences` ({})",
                            self.tokens.audiences.join(", ")
                        ),
                    ));
                }
            }
            if let Some(s) = rule
                .scopes
                .iter()
                .find(|s| s.is_empty() || s.contains(char::is_whitespace))
            {
                return Err(invalid(
                    key("scopes"),
                    format!("`{s}` is not a scope: a scope is a non-empty word without spaces"),
                ));
            }
            if let Some(max) = rule.max_lifetime {
                if max.is_zero() {
                    return Err(invalid(key("max_lifetime"), "must be greater than zero"));
                }
                if max > self.tokens.max_lifetime {
                    return Err(invalid(
                        key("max_lifetime"),
                        "must be at most `tokens.max_lifetime`",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks `[webhooks]` and `[[rules]]`. Rules that write documents are
    /// refused: the document API is not in this version, and a rule that
    /// silently did nothing would be worse than none.
    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        for source in latchkey_events::Source::ALL {
            let Some(w) = self.webhooks.get(source) else {
                continue;
            };
            let key = format!("webhooks.{source}");
            if !w.secret.is_set() {
                return Err(invalid(
                    format!("{key}.secret"),
                    "required: set `secret = { env = \"...\" }` (or `file`) to the secret configured on the sender",
                ));
            }
            if w.allow_plain_token && source != latchkey_events::Source::Buildkite {
                return Err(invalid(
                    format!("{key}.allow_plain_token"),
                    "only Buildkite has a plain-token scheme; remove the key",
                ));
            }
            if w.timestamp_window.is_zero() || w.timestamp_window > Duration::from_secs(3600) {
                return Err(invalid(
                    format!("{key}.timestamp_window"),
                    "must be greater than zero and at most 1h",
                ));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let Some(w) = &rule.write_document else {
                continue;
            };
            let Some(docs) = &self.documents else {
                return Err(invalid(
                    format!("rules[{i}]"),
                    format!(
                        "`{}`: write_document needs a [documents] table (the rule writes through the document API)",
                        rule.name
                    ),
                ));
            };
            if docs.project.is_none() {
                return Err(invalid(
                    format!("rules[{i}]"),
                    format!(
                        "`{}`: write_document needs `documents.project` (the project the document is written in)",
                        rule.name
                    ),
                ));
            }
            if !docs.databases.contains_key(&w.database) {
                return Err(invalid(
                    format!("rules[{i}].write_document.database"),
                    format!(
                        "`{}` is not in `documents.databases`; map it to an environment",
                        w.database
                    ),
                ));
            }
        }
        if let Err(e) = latchkey_events::validate_rules(&self.rules) {
            return Err(invalid("rules", e.to_string()));
        }
        Ok(())
    }
}

/// Parses `90s`, `15m`, `24h`, `7d` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like `90s`, `15m`, `24h` or `7d`"))?;
    if unit == "ms" {
        return Ok(Duration::from_millis(n));
    }
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("`{s}` has an unknown unit; use ms, s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

mod opt_duration_str {
    use std::time::Duration;

    use serde::Deserializer;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration_str::deserialize(d).map(Some)
    }
}

mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Duration::from_secs(n)),
            Raw::Text(t) => super::parse_duration(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.tokens.default_lifetime, Duration::from_secs(900));
        assert_eq!(c.server.public_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[server]\nlisten_addr = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_addr"), "{e}");
    }

    #[test]
    fn lifetime_over_twelve_hours_is_refused() {
        let e = Config::parse("[tokens]\nmax_lifetime = \"13h\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokens.max_lifetime"), "{e}");
    }

    #[test]
    fn bad_duration_is_named() {
        let e = Config::parse("[tokens]\ndefault_lifetime = \"15 minutes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("default_lifetime"), "{e}");
    }

    #[test]
    fn documents_backends_and_the_older_firestore_form() {
        // The embedded store needs nothing but the databases.
        let c = Config::parse(
            "[documents]\nbackend = \"embedded\"\ndatabases = { \"(default)\" = \"dev\" }\n",
        )
        .unwrap();
        let d = c.documents.as_ref().unwrap();
        assert_eq!(d.backend, DocumentsBackend::Embedded);
        assert_eq!(d.databases["(default)"], "dev");
        // `[firestore]` alone, with databases, is `backend = "firestore"`.
        let c = Config::parse(
            "[firestore]\nemulator = \"127.0.0.1:8681\"\nproject = \"p\"\n\
             databases = { prod = \"prod\" }\nrecord_values = [\"flags\"]\n",
        )
        .unwrap();
        let d = c.documents.as_ref().unwrap();
        assert_eq!(d.backend, DocumentsBackend::Firestore);
        assert_eq!(d.project.as_deref(), Some("p"));
        assert_eq!(d.record_values, vec!["flags".to_owned()]);
        // The new form of the same.
        let c = Config::parse(
            "[documents]\nbackend = \"firestore\"\ndatabases = { prod = \"prod\" }\n\
             [firestore]\nemulator = \"127.0.0.1:8681\"\n",
        )
        .unwrap();
        assert_eq!(c.documents.unwrap().backend, DocumentsBackend::Firestore);
        let refused = [
            (
                "[documents]\nbackend = \"firestore\"\ndatabases = { prod = \"prod\" }\n",
                "needs a [firestore] table",
            ),
            (
                "[documents]\nbackend = \"embedded\"\ndatabases = { prod = \"prod\" }\n\
                 [firestore]\nemulator = \"127.0.0.1:8681\"\n",
                "remove [firestore] or change the backend",
            ),
            (
                "[documents]\nbackend = \"firestore\"\ndatabases = { prod = \"prod\" }\n\
                 [firestore]\nemulator = \"127.0.0.1:8681\"\ndatabases = { a = \"b\" }\n",
                "move it to `documents.databases`",
            ),
            (
                "[documents]\nbackend = \"embedded\"\n",
                "map at least one database",
            ),
            ("[documents]\nbackend = \"mongo\"\n", "unknown variant"),
            (
                "[firestore]\nemulator = \"127.0.0.1:8681\"\n",
                "map at least one database",
            ),
        ];
        for (text, expect) in refused {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(expect), "{text}: {e}");
        }
    }

    #[test]
    fn upstream_needs_one_target() {
        let e = Config::parse("[git.upstreams.gogs]\nusername = \"bot\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("git.upstreams.gogs"), "{e}");
    }

    #[test]
    fn secret_sources_are_exclusive() {
        let s = SecretSource {
            value: Some("a".into()),
            env: Some("B".into()),
            file: None,
        };
        assert!(s.load("k").unwrap_err().to_string().contains("only one"));
    }

    #[test]
    fn write_document_rules_and_secretless_webhooks_are_refused() {
        let err = Config::parse(
            "[[rules]]\nname = \"record\"\non = \"push\"\n[rules.write_document]\npath = \"pushes/{commit}\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("rules[0]") && err.contains("`record`"),
            "{err}"
        );
        assert!(
            err.contains("write_document needs a [documents] table"),
            "{err}"
        );
        let err = Config::parse("[webhooks.github]\nsecret = {}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("webhooks.github.secret"), "{err}");
        let ok = Config::parse(
            "[webhooks.buildkite]\nsecret = { env = \"BK_SECRET\" }\n[[rules]]\nname = \"freeze\"\non = \"build_finished\"\nstate = \"failed\"\nfreeze_pipeline = true\n",
        )
        .unwrap();
        assert_eq!(ok.rules.len(), 1);
    }

    /// Issue 13 item 5: every relative path in a config file is relative to
    /// the file's directory, `data_dir` included; only the default policy
    /// directory lives in the data directory.
    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        let path = etc.join("latchkey.toml");
        let text = "[server]\ndata_dir = \"data\"\n\
            [server.tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"/abs/key.pem\"\n\
            [keys]\nmaster_key = { file = \"master.key\" }\n\
            [audit.witness]\nfile = \"../witness.log\"\n\
            [git.upstreams.local]\nlocal_root = \"repos\"\n\
            [git.upstreams.gogs]\nurl = \"http://127.0.0.1:1\"\nusername = \"bot\"\npassword = { file = \"gogs.token\" }\n\
            [webhooks.gitea]\nsecret = { file = \"gitea.secret\" }\n\
            [firestore]\nservice_account_file = \"sa.json\"\ndatabases = { \"(default)\" = \"dev\" }\n";
        std::fs::write(&path, text).unwrap();
        let c = Config::load(&path).unwrap();
        let etc = std::path::absolute(&etc).unwrap();
        assert_eq!(c.server.data_dir, etc.join("data"));
        assert_eq!(c.policy_dir(), etc.join("data/policies"));
        let tls = c.server.tls.as_ref().unwrap();
        assert_eq!(tls.cert_file, etc.join("tls/cert.pem"));
        assert_eq!(tls.key_file, PathBuf::from("/abs/key.pem"));
        assert_eq!(c.keys.master_key.file, Some(etc.join("master.key")));
        let w = c.audit.witness.as_ref().unwrap();
        assert_eq!(w.file, Some(etc.join("../witness.log")));
        assert_eq!(c.git.upstreams["local"].local_root, Some(etc.join("repos")));
        assert_eq!(
            c.git.upstreams["gogs"].password.file,
            Some(etc.join("gogs.token"))
        );
        let gitea = c.webhooks.gitea.as_ref().unwrap();
        assert_eq!(gitea.secret.file, Some(etc.join("gitea.secret")));
        let fs = c.firestore.as_ref().unwrap();
        assert_eq!(fs.service_account_file, Some(etc.join("sa.json")));

        // An explicit policy directory is relative to the file too.
        std::fs::write(&path, "[policy]\ndir = \"policies\"\n").unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.policy_dir(), etc.join("policies"));
        assert_eq!(c.server.data_dir, etc.join("latchkey-data"));
    }

    /// Text without a file (what `latchkey dev` builds) keeps the data
    /// directory as the base of `policy.dir` and `local_root`.
    #[test]
    fn text_without_a_file_keeps_directories_in_the_data_dir() {
        let c = Config::parse(
            "[server]\ndata_dir = \"/srv/lk\"\n[keys]\nmaster_key = { file = \"mk\" }\n\
             [git.upstreams.local]\nlocal_root = \"repos\"\n",
        )
        .unwrap();
        assert_eq!(c.policy_dir(), PathBuf::from("/srv/lk/policies"));
        assert_eq!(
            c.git.upstreams["local"].local_root,
            Some(PathBuf::from("/srv/lk/repos"))
        );
        assert_eq!(c.keys.master_key.file, Some(PathBuf::from("mk")));
    }
}
