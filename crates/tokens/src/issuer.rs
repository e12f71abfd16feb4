use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header};
use latchkey_core::{Principal, SharedClock, UnixTime};

use crate::{MAX_TOKEN_LIFETIME, RevocationSet, SigningKeyRing, TokenClaims, TokenError};

/// Random bytes in a token id (`jti`); minted as unpadded base64url.
const JTI_BYTES: usize = 16;

/// Whether `value` has the form of a token id this issuer mints (16 random
/// bytes, unpadded base64url: 22 characters). A revocation naming anything
/// else could never match a token, so it is refused rather than recorded.
pub fn is_jti(value: &str) -> bool {
    value.len() == 22
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && URL_SAFE_NO_PAD
            .decode(value)
            .is_ok_and(|bytes| bytes.len() == JTI_BYTES)
}

/// How long minted tokens live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// When the request names none. Default 15 min.
    pub default: Duration,
    /// The most any request gets; clamped to 12 h and to the key schedule's
    /// `max_token_lifetime`.
    pub max: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            default: Duration::from_secs(15 * 60),
            max: Duration::from_secs(60 * 60),
        }
    }
}

/// What to mint: for whom, for which audience, with which scopes.
///
/// Policy has already allowed `token.mint` for this principal and audience;
/// the issuer only enforces freezes and lifetimes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintRequest {
    /// Who the token stands for (its actor, if any, becomes `act`). A
    /// `client_id` attribute, if present, becomes the `client_id` claim.
    pub principal: Principal,
    /// The one audience the token is for.
    pub audience: String,
    /// Granted scopes.
    pub scope: Vec<String>,
    /// Requested lifetime; the default when `None`.
    pub lifetime: Option<Duration>,
    /// The expiry of the credentials the token was exchanged for (the
    /// subject token's `exp`, and the actor token's when delegated): no
    /// token outlives the identity it came from, whatever the principal's
    /// kind. Required, so no caller can mint without saying it.
    pub not_after: UnixTime,
}

/// A signed token and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedToken {
    /// The compact JWT.
    pub token: String,
    /// Its claims.
    pub claims: TokenClaims,
    /// Seconds until it expires (the OAuth `expires_in`).
    pub expires_in: u64,
}

/// Mints Latchkey access tokens (RFC 9068, `typ: at+jwt`, Ed25519).
#[derive(Debug)]
pub struct TokenIssuer {
    issuer_url: String,
    keyring: Arc<SigningKeyRing>,
    revocations: Arc<RevocationSet>,
    clock: SharedClock,
    lifetimes: Lifetimes,
    rng: SystemRandom,
}

impl TokenIssuer {
    /// An issuer named `issuer_url` (the `iss` of every token). `lifetimes.max`
    /// is clamped to 12 h and to the key ring's `max_token_lifetime` (so no
    /// token outlives the publication of the key that signed it), and
    /// `lifetimes.default` to `max`.
    pub fn new(
        issuer_url: String,
        keyring: Arc<SigningKeyRing>,
        revocations: Arc<RevocationSet>,
        clock: SharedClock,
        lifetimes: Lifetimes,
    ) -> Self {
        let max = lifetimes
            .max
            .min(MAX_TOKEN_LIFETIME)
            .min(keyring.schedule().max_token_lifetime);
        let lifetimes = Lifetimes {
            default: lifetimes.default.min(max),
            max,
        };
        Self {
            issuer_url,
            keyring,
            revocations,
            clock,
            lifetimes,
            rng: SystemRandom::new(),
        }
    }

    /// The lifetimes in force, after clamping.
    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// The issuer URL (`iss`).
    pub fn issuer_url(&self) -> &str {
        &self.issuer_url
    }

    /// Mints a token. Refuses a frozen principal, actor, CI job or pipeline,
    /// an empty audience, and a lifetime that comes to zero. The lifetime is
    /// the smallest of the requested (or default) lifetime, the maximum and
    /// the time left before `not_after`.
    pub fn mint(&self, req: &MintRequest) -> Result<MintedToken, TokenError> {
        if req.audience.trim().is_empty() {
            return Err(TokenError::EmptyAudience);
        }
        if let Some(what) = self.revocations.frozen(&req.principal) {
            return Err(TokenError::Frozen { what });
        }
        let now = self.clock.unix();
        let requested = req.lifetime.unwrap_or(self.lifetimes.default);
        // INVARIANT: exp <= not_after, so a token dies with its identity.
        let lifetime = requested
            .min(self.lifetimes.max)
            .as_secs()
            .min(req.not_after.saturating_sub(now));
        if lifetime == 0 {
            return Err(TokenError::LifetimeExhausted);
        }
        let key = self.keyring.signing_key()?;

        let mut jti = [0u8; JTI_BYTES];
        self.rng
            .fill(&mut jti)
            .map_err(|_| TokenError::Crypto("the system random generator failed".into()))?;
        let p = &req.principal;
        let claims = TokenClaims {
            iss: self.issuer_url.clone(),
            sub: p.id.clone(),
            aud: req.audience.clone(),
            exp: now.saturating_add(lifetime),
            iat: now,
            nbf: now,
            // INVARIANT: `is_jti` accepts exactly this form.
            jti: URL_SAFE_NO_PAD.encode(jti),
            scope: req.scope.join(" "),
            client_id: p.attributes.get("client_id").cloned(),
            act: p.actor.clone(),
            lk_kind: p.kind,
            lk_src: p.issuer.clone(),
            groups: p.groups.clone(),
            email: p.email.clone(),
            lk_ci: (!p.ci.is_empty()).then(|| p.ci.clone()),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| TokenError::Crypto(format!("signing failed: {e}")))?;
        Ok(MintedToken {
            token,
            claims,
            expires_in: lifetime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jti_form() {
        assert!(is_jti(&URL_SAFE_NO_PAD.encode([0xffu8; JTI_BYTES])));
        assert!(is_jti("LFq0bmlkClGj5Uo5FkCVGw"));
        for bad in [
            "",
            "made-up",
            "LFq0bmlkClGj5Uo5FkCVG",   // 21
            "LFq0bmlkClGj5Uo5FkCVGw=", // padded
            "LFq0bmlkClGj5Uo5FkCV+w",  // standard alphabet
            "LFq0bmlkClGj5Uo5FkCVGx",  // non-canonical last character
            "a.b.c",
        ] {
            assert!(!is_jti(bad), "`{bad}`");
        }
    }
}
