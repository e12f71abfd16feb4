use latchkey_core::UnixTime;
use latchkey_store::StoreError;

/// Why a token could not be minted or verified, or a key operation failed.
///
/// Exhaustive on purpose: these decide access, so a new case must be handled
/// wherever they are matched. Messages never contain token bytes or keys.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not a well-formed Latchkey JWT.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token is longer than the verifier accepts.
    #[error("token is {len} bytes; the limit is {max}")]
    TooLarge {
        /// The token's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The header names an algorithm other than `EdDSA`.
    #[error("token algorithm `{alg}` is not accepted; latchkey tokens are signed with `EdDSA`")]
    UnsupportedAlgorithm {
        /// The header's `alg`.
        alg: String,
    },
    /// The header's `kid` is not a key the ring publishes.
    #[error(
        "token was signed by a key that is no longer published (`{kid}`; it was rotated out); get a new token"
    )]
    UnknownKey {
        /// The header's `kid`.
        kid: String,
    },
    /// The header's `kid` is no key this gateway ever had: another gateway
    /// (or anyone else) signed it.
    #[error(
        "token was not issued by this gateway (it is signed by key `{kid}`, which this gateway never had); get a token from {issuer}"
    )]
    NotIssuedHere {
        /// The header's `kid`.
        kid: String,
        /// This gateway's issuer URL.
        issuer: String,
    },
    /// The signature does not match the header and claims.
    #[error("token signature is invalid")]
    BadSignature,
    /// The token's `exp` has passed.
    #[error("token expired at {at} (unix time); get a new token")]
    Expired {
        /// The token's `exp`.
        at: UnixTime,
    },
    /// The token's `nbf` or `iat` is in the future (beyond the allowed skew).
    #[error("token is not valid until {nbf} (unix time); check this machine's clock")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: UnixTime,
    },
    /// The token was issued by someone else.
    #[error(
        "token was not issued by this gateway: its issuer is `{got}`, this gateway is `{expected}`; get a token from {expected}"
    )]
    WrongIssuer {
        /// This Latchkey's issuer URL.
        expected: String,
        /// The token's `iss`.
        got: String,
    },
    /// The token is for another audience.
    #[error("token is for audience `{got}`, not `{expected}`; request a token for `{expected}`")]
    WrongAudience {
        /// The audience the caller presented it to.
        expected: String,
        /// The token's `aud`.
        got: String,
    },
    /// The token, its subject, its CI job or its pipeline was revoked.
    #[error("token was revoked: {reason}")]
    Revoked {
        /// What was revoked and why.
        reason: String,
    },
    /// The subject, its CI job or its pipeline is frozen: no new tokens.
    #[error("{what} is frozen; no tokens are issued until an administrator lifts the freeze")]
    Frozen {
        /// What is frozen and why.
        what: String,
    },
    /// A mint request named no audience.
    #[error("a token needs an audience; pass the audience (target) it is for")]
    EmptyAudience,
    /// The allowed lifetime is zero: the subject token expires now, or a
    /// zero lifetime was requested.
    #[error("no lifetime left for a new token (the subject token has expired or expires now)")]
    LifetimeExhausted,
    /// No key is currently able to sign.
    #[error("no signing key is active; run key maintenance (or `latchkey keys rotate`)")]
    NoSigningKey,
    /// The master key could not be parsed.
    #[error("invalid master key: {0}")]
    MasterKey(String),
    /// A stored signing key could not be decrypted with the master key.
    #[error(
        "the master key does not match the one the signing keys were encrypted with (key `{kid}`); use the original master key"
    )]
    MasterKeyMismatch {
        /// The key that failed to decrypt.
        kid: String,
    },
    /// Ciphertext could not be decrypted (wrong key, or the data was altered).
    #[error("decryption failed: wrong key or the data was altered")]
    Decrypt,
    /// The key schedule is inconsistent.
    #[error("invalid key schedule: {0}")]
    InvalidSchedule(String),
    /// A cryptographic primitive failed (key generation, encoding, signing).
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),
    /// A key-rotation record in the store's meta table does not parse
    /// (written by a newer version, or altered by hand).
    #[error(
        "the store's key-rotation record `{key}` is unreadable: {message}; \
         run `latchkey keys list` to see the keys in force"
    )]
    RotationRecord {
        /// The meta key of the record.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TokenError {
    /// The RFC 6749 / RFC 8693 `error` code for an OAuth error response.
    ///
    /// Problems with a presented token (it is the grant in a token exchange)
    /// are `invalid_grant`, a bad requested audience is `invalid_target`, a
    /// request that is not a token at all is `invalid_request`, and anything
    /// that is Latchkey's own fault is `server_error`.
    pub fn oauth_error_code(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::TooLarge { .. } => "invalid_request",
            Self::UnsupportedAlgorithm { .. }
            | Self::UnknownKey { .. }
            | Self::NotIssuedHere { .. }
            | Self::BadSignature
            | Self::Expired { .. }
            | Self::NotYetValid { .. }
            | Self::WrongIssuer { .. }
            | Self::WrongAudience { .. }
            | Self::Revoked { .. }
            | Self::Frozen { .. }
            | Self::LifetimeExhausted => "invalid_grant",
            Self::EmptyAudience => "invalid_target",
            Self::NoSigningKey
            | Self::MasterKey(_)
            | Self::MasterKeyMismatch { .. }
            | Self::Decrypt
            | Self::InvalidSchedule(_)
            | Self::Crypto(_)
            | Self::RotationRecord { .. }
            | Self::Store(_) => "server_error",
        }
    }

    /// Whether the failure is the caller's (a bad or dead token, a refused
    /// request) rather than Latchkey's own.
    pub fn is_client_error(&self) -> bool {
        self.oauth_error_code() != "server_error"
    }
}
