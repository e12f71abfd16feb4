use latchkey_core::echo;
use thiserror::Error;

/// A problem in one issuer's configuration, found when it is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("issuer `{issuer}`: invalid `{field}`: {reason}")]
pub struct ConfigError {
    /// The issuer's `name` (or its position when the name itself is bad).
    pub issuer: String,
    /// The configuration field that is wrong.
    pub field: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(
        issuer: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Why an external token was not accepted (or an issuer could not be set up).
///
/// Exhaustive on purpose: this decides access, so a new case must be handled
/// everywhere it is matched. Messages never contain the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    /// The token is longer than [`crate::MAX_TOKEN_BYTES`].
    #[error(
        "token is too large ({size} bytes, at most {max} allowed); send an ID token, not a token bundle"
    )]
    TokenTooLarge {
        /// The size that was presented.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The token is not a well-formed compact JWS.
    #[error(
        "token is malformed: {}; send a signed JWT in compact form (`header.claims.signature`)",
        echo(.reason).max(200)
    )]
    Malformed {
        /// What was wrong with its structure.
        reason: String,
    },
    /// The token's algorithm is never accepted (`none`, `HS*`) or not allowed
    /// for its issuer.
    #[error(
        "algorithm `{}` is not allowed; only asymmetric algorithms listed in the issuer's `algorithms` are accepted",
        echo(.alg)
    )]
    AlgorithmNotAllowed {
        /// The header's `alg`.
        alg: String,
    },
    /// The token's algorithm does not fit the key its `kid` names.
    #[error(
        "algorithm `{}` does not match the issuer's key of type `{kty}`; the token must be signed with the algorithm its key is for",
        echo(.alg)
    )]
    AlgorithmKeyMismatch {
        /// The header's `alg`.
        alg: String,
        /// The key's type (and curve), e.g. `RSA` or `EC P-256`.
        kty: String,
    },
    /// No configured issuer has this `iss`.
    #[error(
        "issuer `{}` is not trusted; add it to `[[issuers]]` or use a token from a configured issuer",
        echo(.iss)
    )]
    UnknownIssuer {
        /// The token's `iss`.
        iss: String,
    },
    /// The issuer's keys could not be fetched and no usable copy is cached.
    #[error(
        "issuer `{issuer}` is unavailable: {reason}; tokens from it are refused until its keys can be fetched"
    )]
    IssuerUnavailable {
        /// The issuer's configured name.
        issuer: String,
        /// Why the keys could not be had.
        reason: String,
    },
    /// The issuer publishes no key with this `kid`.
    #[error(
        "signing key `{}` is not published by the issuer; the token may be forged or its key retired",
        echo(.kid)
    )]
    UnknownKey {
        /// The header's `kid` (`(none)` when absent).
        kid: String,
    },
    /// The signature does not verify with the issuer's key.
    #[error("token signature is invalid; the token was altered or not signed by the issuer")]
    BadSignature,
    /// `exp` is in the past (beyond the allowed clock skew).
    #[error("token has expired; get a fresh token from the issuer")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the allowed clock skew).
    #[error(
        "token is not valid yet (`nbf` or `iat` is in the future); check the clocks of the issuer and Latchkey"
    )]
    NotYetValid,
    /// `iss` differs from the configured issuer URL (e.g. by a trailing slash).
    #[error(
        "token issuer `{}` does not equal the configured issuer `{expected}`; the configured `issuer` must match `iss` exactly",
        echo(.iss)
    )]
    WrongIssuer {
        /// The token's `iss`.
        iss: String,
        /// The configured issuer URL it nearly matched.
        expected: String,
    },
    /// No `aud` value is one of the issuer's configured audiences.
    #[error(
        "token audience `{}` is not accepted; request a token for one of the issuer's configured `audiences`",
        echo(.got)
    )]
    WrongAudience {
        /// The token's audiences, comma-separated.
        got: String,
    },
    /// A required claim is absent or has the wrong type.
    #[error("token lacks the required claim `{claim}` (or it is not the expected type)")]
    MissingClaim {
        /// The claim name.
        claim: String,
    },
    /// A bound claim does not match any of its configured patterns.
    #[error(
        "claim `{claim}` does not match the issuer's `bound_claims`; this token is not allowed to use this issuer"
    )]
    BoundClaimMismatch {
        /// The claim name.
        claim: String,
    },
    /// The issuer configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The built-in development issuer could not load, create or use its key.
    #[error("development issuer: {reason}")]
    DevIssuer {
        /// What went wrong.
        reason: String,
    },
}

impl IdentityError {
    /// A short, stable identifier for audit records and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TokenTooLarge { .. } => "token_too_large",
            Self::Malformed { .. } => "malformed",
            Self::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
            Self::AlgorithmKeyMismatch { .. } => "algorithm_key_mismatch",
            Self::UnknownIssuer { .. } => "unknown_issuer",
            Self::IssuerUnavailable { .. } => "issuer_unavailable",
            Self::UnknownKey { .. } => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer { .. } => "wrong_issuer",
            Self::WrongAudience { .. } => "wrong_audience",
            Self::MissingClaim { .. } => "missing_claim",
            Self::BoundClaimMismatch { .. } => "bound_claim_mismatch",
            Self::Config(_) => "config",
            Self::DevIssuer { .. } => "dev_issuer",
        }
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        Self::Malformed {
            reason: reason.into(),
        }
    }

    pub(crate) fn missing(claim: impl Into<String>) -> Self {
        Self::MissingClaim {
            claim: claim.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<IdentityError> {
        vec![
            IdentityError::TokenTooLarge {
                size: 20000,
                max: 16384,
            },
            IdentityError::malformed("header is not base64url"),
            IdentityError::AlgorithmNotAllowed {
                alg: "HS256".into(),
            },
            IdentityError::AlgorithmKeyMismatch {
                alg: "ES256".into(),
                kty: "RSA".into(),
            },
            IdentityError::UnknownIssuer {
                iss: "https://evil".into(),
            },
            IdentityError::IssuerUnavailable {
                issuer: "okta".into(),
                reason: "could not connect".into(),
            },
            IdentityError::UnknownKey { kid: "k9".into() },
            IdentityError::BadSignature,
            IdentityError::Expired,
            IdentityError::NotYetValid,
            IdentityError::WrongIssuer {
                iss: "https://i/".into(),
                expected: "https://i".into(),
            },
            IdentityError::WrongAudience { got: "a, b".into() },
            IdentityError::missing("sub"),
            IdentityError::BoundClaimMismatch {
                claim: "repository".into(),
            },
            IdentityError::Config(ConfigError::new("okta", "audiences", "list at least one")),
            IdentityError::DevIssuer {
                reason: "signing failed".into(),
            },
        ]
    }

    #[test]
    fn messages_snapshot() {
        let got: Vec<String> = all().iter().map(|e| format!("{}: {e}", e.code())).collect();
        let want = [
            "token_too_large: token is too large (20000 bytes, at most 16384 allowed); send an ID token, not a token bundle",
            "malformed: token is malformed: header is not base64url; send a signed JWT in compact form (`header.claims.signature`)",
            "algorithm_not_allowed: algorithm `HS256` is not allowed; only asymmetric algorithms listed in the issuer's `algorithms` are accepted",
            "algorithm_key_mismatch: algorithm `ES256` does not match the issuer's key of type `RSA`; the token must be signed with the algorithm its key is for",
            "unknown_issuer: issuer `https://evil` is not trusted; add it to `[[issuers]]` or use a token from a configured issuer",
            "issuer_unavailable: issuer `okta` is unavailable: could not connect; tokens from it are refused until its keys can be fetched",
            "unknown_key: signing key `k9` is not published by the issuer; the token may be forged or its key retired",
            "bad_signature: token signature is invalid; the token was altered or not signed by the issuer",
            "expired: token has expired; get a fresh token from the issuer",
            "not_yet_valid: token is not valid yet (`nbf` or `iat` is in the future); check the clocks of the issuer and Latchkey",
            "wrong_issuer: token issuer `https://i/` does not equal the configured issuer `https://i`; the configured `issuer` must match `iss` exactly",
            "wrong_audience: token audience `a, b` is not accepted; request a token for one of the issuer's configured `audiences`",
            "missing_claim: token lacks the required claim `sub` (or it is not the expected type)",
            "bound_claim_mismatch: claim `repository` does not match the issuer's `bound_claims`; this token is not allowed to use this issuer",
            "config: issuer `okta`: invalid `audiences`: list at least one",
            "dev_issuer: development issuer: signing failed",
        ];
        assert_eq!(got, want);
        let mut codes: Vec<_> = all().iter().map(IdentityError::code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all().len(), "codes must be distinct");
    }
}
