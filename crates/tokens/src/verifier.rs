use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use latchkey_core::{Principal, SharedClock, UnixTime};
use serde::Deserialize;

use crate::sync::{read, write};
use crate::{
    MAX_TOKEN_BYTES, MAX_TOKEN_LIFETIME, NBF_SKEW_SECS, RevocationSet, SigningKeyRing, TokenClaims,
    TokenError,
};

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// Its claims, shared with the verifier's cache.
    pub claims: Arc<TokenClaims>,
    /// The principal it stands for.
    pub principal: Principal,
}

/// What the cache remembers about a token whose signature, issuer and times
/// were checked.
#[derive(Debug)]
struct CacheEntry {
    kid: String,
    verified: VerifiedToken,
}

type CacheKey = [u8; 32];

#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<CacheKey, CacheEntry>,
    /// Insertion order, for evicting the oldest when full. May hold keys
    /// already removed; those are skipped.
    order: VecDeque<CacheKey>,
}

/// The JOSE header fields the verifier looks at before trusting anything.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Verifies Latchkey tokens: size, header (`alg` must be `EdDSA`, `kid` a
/// published key), signature, `iss`, time, audience, then revocation.
///
/// Time: `exp` is checked with no skew (a token is dead at `exp`); `nbf` and
/// `iat` may be up to 60 s in the future (another node's clock may run a
/// little ahead). A token whose `exp - iat` exceeds 12 h is refused outright.
///
/// Tokens whose signature was checked are cached by the SHA-256 of their
/// bytes (bounded; oldest evicted first; dropped at expiry), so repeat use
/// skips the Ed25519 check. A cache hit still checks expiry, that the key is
/// still published, the audience and revocation.
#[derive(Debug)]
pub struct TokenVerifier {
    issuer_url: String,
    keyring: Arc<SigningKeyRing>,
    revocations: Arc<RevocationSet>,
    clock: SharedClock,
    capacity: usize,
    cache: RwLock<Cache>,
    validation: Validation,
}

impl TokenVerifier {
    /// A verifier for tokens issued by `issuer_url`, caching up to
    /// `cache_capacity` verified tokens (0 disables the cache).
    pub fn new(
        issuer_url: String,
        keyring: Arc<SigningKeyRing>,
        revocations: Arc<RevocationSet>,
        clock: SharedClock,
        cache_capacity: usize,
    ) -> Self {
        // jsonwebtoken only checks the signature and algorithm; every claim
        // check is ours, against our clock.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Self {
            issuer_url,
            keyring,
            revocations,
            clock,
            capacity: cache_capacity,
            cache: RwLock::new(Cache::default()),
            validation,
        }
    }

    /// Verifies `token` for `audience` (exact match).
    pub fn verify(&self, token: &str, audience: &str) -> Result<VerifiedToken, TokenError> {
        self.verify_inner(token, Some(audience))
    }

    /// Verifies `token` for any audience (for introspection, where the caller
    /// reports the audience rather than being it).
    pub fn verify_any_audience(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        self.verify_inner(token, None)
    }

    /// Checks that `token` is one this Latchkey signed (size, header,
    /// published key, signature, issuer), but not its times, audience or
    /// revocation: for naming a token to revoke, where an expired or
    /// already revoked token is still a fine thing to name. Never use it to
    /// let a caller in.
    pub fn verify_issued(&self, token: &str) -> Result<TokenClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge {
                len: token.len(),
                max: MAX_TOKEN_BYTES,
            });
        }
        self.check_signed(token).map(|(_, claims)| claims)
    }

    /// How many verified tokens the cache holds.
    pub fn cached(&self) -> usize {
        read(&self.cache).entries.len()
    }

    fn verify_inner(
        &self,
        token: &str,
        audience: Option<&str>,
    ) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge {
                len: token.len(),
                max: MAX_TOKEN_BYTES,
            });
        }
        let now = self.clock.unix();
        let key = cache_key(token);
        let verified = match self.cache_lookup(&key, now)? {
            Some(hit) => hit,
            None => {
                let verified = self.verify_signed(token, now)?;
                self.cache_insert(key, &verified);
                verified.verified
            }
        };
        if let Some(expected) = audience
            && verified.claims.aud != expected
        {
            return Err(TokenError::WrongAudience {
                expected: expected.to_owned(),
                got: verified.claims.aud.clone(),
            });
        }
        self.revocations.check(&verified.claims)?;
        Ok(verified)
    }

    /// A cached token still within its life and signed by a published key.
    fn cache_lookup(
        &self,
        key: &CacheKey,
        now: UnixTime,
    ) -> Result<Option<VerifiedToken>, TokenError> {
        if self.capacity == 0 {
            return Ok(None);
        }
        let failure = {
            let cache = read(&self.cache);
            let Some(entry) = cache.entries.get(key) else {
                return Ok(None);
            };
            // Same order as the full path: the key first, then expiry.
            if !self.keyring.publishes(&entry.kid) {
                TokenError::UnknownKey {
                    kid: entry.kid.clone(),
                }
            } else if now >= entry.verified.claims.exp {
                TokenError::Expired {
                    at: entry.verified.claims.exp,
                }
            } else {
                return Ok(Some(entry.verified.clone()));
            }
        };
        write(&self.cache).entries.remove(key);
        Err(failure)
    }

    fn cache_insert(&self, key: CacheKey, entry: &CacheEntry) {
        if self.capacity == 0 {
            return;
        }
        let now = self.clock.unix();
        let mut cache = write(&self.cache);
        if cache.entries.len() >= self.capacity {
            // Drop expired entries first, then the oldest.
            cache.entries.retain(|_, e| e.verified.claims.exp > now);
            while cache.entries.len() >= self.capacity {
                let Some(old) = cache.order.pop_front() else {
                    break;
                };
                cache.entries.remove(&old);
            }
            let Cache { entries, order } = &mut *cache;
            order.retain(|k| entries.contains_key(k));
        }
        cache.order.push_back(key);
        cache.entries.insert(
            key,
            CacheEntry {
                kid: entry.kid.clone(),
                verified: entry.verified.clone(),
            },
        );
    }

    /// The header, key, signature and issuer checks every use shares;
    /// returns the kid and the claims.
    fn check_signed(&self, token: &str) -> Result<(String, TokenClaims), TokenError> {
        let header = parse_header(token)?;
        if header.alg != "EdDSA" {
            return Err(TokenError::UnsupportedAlgorithm { alg: header.alg });
        }
        if let Some(typ) = &header.typ {
            let lower = typ.to_ascii_lowercase();
            if lower != "at+jwt" && lower != "application/at+jwt" {
                return Err(TokenError::Malformed(format!(
                    "header `typ` is `{typ}`, not `at+jwt`; this is not a latchkey access token"
                )));
            }
        }
        if header.crit.is_some() {
            return Err(TokenError::Malformed(
                "header has a `crit` parameter latchkey does not understand".into(),
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Malformed("header has no `kid`".into()))?;
        let key = self.keyring.verification_key(&kid).ok_or_else(|| {
            if self.keyring.ever_had(&kid) {
                TokenError::UnknownKey { kid: kid.clone() }
            } else {
                TokenError::NotIssuedHere {
                    kid: kid.clone(),
                    issuer: self.issuer_url.clone(),
                }
            }
        })?;
        let data = jsonwebtoken::decode::<TokenClaims>(token, &key.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => TokenError::UnsupportedAlgorithm {
                    alg: header.alg.clone(),
                },
                _ => TokenError::Malformed(format!("claims cannot be read: {e}")),
            })?;
        let claims = data.claims;
        if claims.iss != self.issuer_url {
            return Err(TokenError::WrongIssuer {
                expected: self.issuer_url.clone(),
                got: claims.iss,
            });
        }
        Ok((kid, claims))
    }

    /// The full check of a token not in the cache: everything except
    /// audience and revocation.
    fn verify_signed(&self, token: &str, now: UnixTime) -> Result<CacheEntry, TokenError> {
        let (kid, claims) = self.check_signed(token)?;
        if now >= claims.exp {
            return Err(TokenError::Expired { at: claims.exp });
        }
        let horizon = now.saturating_add(NBF_SKEW_SECS);
        if claims.nbf > horizon || claims.iat > horizon {
            return Err(TokenError::NotYetValid {
                nbf: claims.nbf.max(claims.iat),
            });
        }
        if claims.exp.saturating_sub(claims.iat) > MAX_TOKEN_LIFETIME.as_secs() {
            return Err(TokenError::Malformed(
                "token lifetime exceeds the 12 hour maximum".into(),
            ));
        }
        let principal = claims.to_principal();
        Ok(CacheEntry {
            kid,
            verified: VerifiedToken {
                claims: Arc::new(claims),
                principal,
            },
        })
    }
}

fn cache_key(token: &str) -> CacheKey {
    let mut key = [0u8; 32];
    key.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    key
}

/// Reads the header of a compact JWS without trusting it.
fn parse_header(token: &str) -> Result<RawHeader, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "expected three dot-separated parts (a compact JWT)".into(),
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed("header is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("header is not a JSON object with `alg`".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeySchedule, MasterKey};
    use jsonwebtoken::Header;
    use latchkey_core::{FakeClock, PrincipalKind};
    use latchkey_store::{SharedStore, SqliteStore};

    const T0: u64 = 1_700_000_000;

    async fn setup() -> (Arc<SigningKeyRing>, TokenVerifier) {
        let store: SharedStore = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let clock: SharedClock = Arc::new(FakeClock::at(T0));
        let ring = Arc::new(
            SigningKeyRing::load(
                store.clone(),
                MasterKey::generate().unwrap(),
                clock.clone(),
                KeySchedule::default(),
            )
            .await
            .unwrap(),
        );
        let revocations = Arc::new(RevocationSet::load(store, clock.clone()).await.unwrap());
        let verifier = TokenVerifier::new("iss".into(), ring.clone(), revocations, clock, 10);
        (ring, verifier)
    }

    fn claims(iat: u64, exp: u64) -> TokenClaims {
        TokenClaims {
            iss: "iss".into(),
            sub: "alice".into(),
            aud: "git".into(),
            exp,
            iat,
            nbf: iat,
            jti: "j".into(),
            scope: String::new(),
            client_id: None,
            act: None,
            lk_kind: PrincipalKind::User,
            lk_src: "okta".into(),
            groups: vec![],
            email: None,
            lk_ci: None,
        }
    }

    fn sign(ring: &SigningKeyRing, header: &mut Header, claims: &TokenClaims) -> String {
        let key = ring.signing_key().unwrap();
        if header.kid.is_none() {
            header.kid = Some(key.kid.clone());
        }
        jsonwebtoken::encode(header, claims, &key.encoding).unwrap()
    }

    #[tokio::test]
    async fn header_and_lifetime_rules() {
        let (ring, verifier) = setup().await;
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = None;
        let ok = sign(&ring, &mut header, &claims(T0, T0 + 60));
        verifier.verify(&ok, "git").unwrap(); // `typ` may be absent
        header.typ = Some("application/at+jwt".into());
        let ok = sign(&ring, &mut header, &claims(T0, T0 + 61));
        verifier.verify(&ok, "git").unwrap();

        let too_long = sign(&ring, &mut header, &claims(T0, T0 + 12 * 3600 + 1));
        let err = verifier.verify(&too_long, "git").unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed token: token lifetime exceeds the 12 hour maximum"
        );

        let mut crit = Header::new(Algorithm::EdDSA);
        crit.typ = None;
        crit.crit = Some(vec!["exp".into()]);
        let with_crit = sign(&ring, &mut crit, &claims(T0, T0 + 60));
        assert!(matches!(
            verifier.verify(&with_crit, "git"),
            Err(TokenError::Malformed(_))
        ));

        // No kid: strip it from a signed header (the signature no longer
        // matters, the header is refused first).
        let parts: Vec<&str> = ok.split('.').collect();
        let no_kid = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA"}"#),
            parts[1],
            parts[2]
        );
        let err = verifier.verify(&no_kid, "git").unwrap_err();
        assert_eq!(err.to_string(), "malformed token: header has no `kid`");
    }
}
