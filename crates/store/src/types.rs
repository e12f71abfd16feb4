use latchkey_core::UnixTime;
use serde::{Deserialize, Serialize};

/// A token-signing key as stored: the private half is ciphertext the store
/// cannot read (encrypted by the `tokens` crate with the master key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSigningKey {
    /// Key id, as published in JWKS and put in token headers.
    pub kid: String,
    /// JOSE algorithm, `EdDSA`.
    pub algorithm: String,
    /// The raw public key (32 bytes for Ed25519).
    pub public_key: Vec<u8>,
    /// The encrypted private key (nonce || ciphertext || tag).
    pub encrypted_private_key: Vec<u8>,
    /// When the key was created.
    pub created_at: UnixTime,
    /// When the key starts signing (published in JWKS before that).
    pub signs_from: UnixTime,
    /// When the key stops signing.
    pub signs_until: UnixTime,
    /// When the key leaves JWKS (after every token it signed expired).
    pub published_until: UnixTime,
}

/// What a revocation or freeze matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    /// One token, by `jti`.
    Token,
    /// Every token of a subject (`sub`).
    Subject,
    /// Every token minted for a CI job id.
    Job,
    /// Every token minted for a CI pipeline.
    Pipeline,
}

impl RevocationKind {
    /// The lowercase name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Subject => "subject",
            Self::Job => "job",
            Self::Pipeline => "pipeline",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "token" => Self::Token,
            "subject" => Self::Subject,
            "job" => Self::Job,
            "pipeline" => Self::Pipeline,
            _ => return None,
        })
    }
}

/// Revoke kills tokens issued at or before `created_at`; freeze also refuses
/// new tokens until lifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationMode {
    /// Tokens already issued stop working.
    Revoke,
    /// No new tokens until lifted (and live ones stop working).
    Freeze,
}

impl RevocationMode {
    /// The lowercase name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoke => "revoke",
            Self::Freeze => "freeze",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "revoke" => Self::Revoke,
            "freeze" => Self::Freeze,
            _ => return None,
        })
    }
}

/// A revocation or freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// What it matches on.
    pub kind: RevocationKind,
    /// The jti, subject, job id or pipeline.
    pub value: String,
    /// Revoke or freeze.
    pub mode: RevocationMode,
    /// When it was made; tokens with `iat` at or before this are dead.
    pub created_at: UnixTime,
    /// When the row may be forgotten (a token revocation expires with the token).
    pub expires_at: Option<UnixTime>,
    /// Why, for people.
    pub reason: String,
}

/// One audit event as indexed for queries. The hash-chained log file is the
/// source of truth; this index can be rebuilt from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditIndexRow {
    /// The node whose chain holds the record (`[store] node`; empty on a
    /// store one node owns). Set by the store on insert: a node indexes
    /// only into its own chain.
    #[serde(default)]
    pub node: String,
    /// Position in the node's chain, from 1.
    pub seq: u64,
    /// Event time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The request the event belongs to.
    pub request_id: String,
    /// `kind:id` of the principal, if known.
    pub principal: Option<String>,
    /// The action name (`git.push`, `token.mint`, `request`, ...).
    pub action: String,
    /// `Kind::"id"` of the resource, if any.
    pub resource: Option<String>,
    /// `allow`, `deny`, or `None` for outcome-only events.
    pub decision: Option<String>,
    /// The commit the event concerns, if any.
    pub commit: Option<String>,
    /// The CI job id, if any.
    pub job_id: Option<String>,
    /// The whole event as JSON.
    pub event_json: String,
}

/// A filter over the audit index. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    /// Only this node's records (a shared store holds every node's).
    pub node: Option<String>,
    /// Principal `kind:id`, or just the id (matches any kind).
    pub principal: Option<String>,
    /// Substring of the resource display form.
    pub resource: Option<String>,
    /// Exact action name.
    pub action: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
    /// Commit id prefix.
    pub commit: Option<String>,
    /// CI job id.
    pub job_id: Option<String>,
    /// Only events at or after this time (ms).
    pub since_ms: Option<u64>,
    /// Only events before this time (ms).
    pub until_ms: Option<u64>,
    /// Only events with a greater `seq` (for following one node's chain;
    /// in a shared store, set `node` too).
    pub after_seq: Option<u64>,
    /// Maximum rows; 0 means the implementation's default (1000).
    pub limit: u32,
    /// Return the newest `limit` rows (still in ascending order).
    pub newest: bool,
}

/// A browser session as stored. The cookie holds a random secret; the store
/// keeps only its SHA-256 (`id_hash`), so a copy of the database opens no
/// session. The provider's ID and refresh tokens are ciphertext the store
/// cannot read (encrypted by the gateway with the master key).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Hex SHA-256 of the cookie's secret.
    pub id_hash: String,
    /// The principal's id, so revoking a subject ends its sessions.
    pub subject: String,
    /// The name of the issuer the user signed in with.
    pub issuer: String,
    /// The principal, as JSON.
    pub principal_json: String,
    /// The encrypted ID and refresh tokens.
    pub secrets: Vec<u8>,
    /// When the session began (seconds).
    pub created_at: UnixTime,
    /// The last request it served (seconds), for the idle time-out.
    pub last_seen_at: UnixTime,
    /// The absolute end (seconds), whatever the activity.
    pub expires_at: UnixTime,
    /// When the provider's ID token expires (seconds): the session is
    /// refreshed before then.
    pub id_token_expires_at: UnixTime,
}

impl std::fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSession")
            .field("subject", &self.subject)
            .field("issuer", &self.issuer)
            .field("created_at", &self.created_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}
