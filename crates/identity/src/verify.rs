use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use latchkey_core::{Principal, SharedClock, UnixTime};
use serde_json::{Map, Value};

use crate::claims::{check_audience, check_bound_claims, check_times, map_principal};
use crate::fetch::{cache_lifetime, discover_jwks_uri, get};
use crate::keys::{PublicKey, is_forbidden_alg, parse_alg, parse_jwks};
use crate::{ConfigError, IdentityError, IssuerConfig, parse_unverified};

/// At most one key refresh per issuer in this interval (unknown `kid`s,
/// expired caches and failed fetches all count).
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// Cached keys older than this are never used, even if the issuer is down.
pub const HARD_MAX_KEY_AGE: Duration = Duration::from_secs(24 * 3600);

/// An external token that passed every check, and who it names.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedIdentity {
    /// The mapped principal; `issuer` is the issuer's configured name.
    pub principal: Principal,
    /// The configured name of the issuer that vouched for it.
    pub issuer_name: String,
    /// The token's `exp`.
    pub expires_at: UnixTime,
    /// All the token's claims, for policy context and audit.
    pub claims: Map<String, Value>,
}

/// Keys as last fetched.
struct CachedKeys {
    keys: Vec<PublicKey>,
    fetched_at_ms: u64,
    fresh_until_ms: u64,
}

#[derive(Default)]
struct KeyState {
    cached: Option<Arc<CachedKeys>>,
    last_attempt_ms: Option<u64>,
    last_error: Option<String>,
    /// When the current run of failed fetches began (cleared by a success).
    failing_since_ms: Option<u64>,
}

/// Where an issuer's keys stand, for readiness (`/readyz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    /// No fetch was attempted yet (keys are fetched on first use or by
    /// [`IssuerSet::refresh_stale`]).
    NotFetched,
    /// The last fetch succeeded, at this time (unix ms).
    Fetched {
        /// When.
        at_ms: u64,
    },
    /// Fetches have failed since this time (unix ms).
    Failing {
        /// When the first of the failing fetches was made.
        since_ms: u64,
        /// The last failure, short (no secrets: a URL and what went wrong).
        reason: String,
        /// Whether earlier keys are still usable (tokens still verify).
        cached: bool,
    },
}

struct Issuer {
    cfg: IssuerConfig,
    // A tokio mutex so that concurrent verifications share one refresh.
    state: tokio::sync::Mutex<KeyState>,
    refreshes: AtomicU64,
    /// Refreshes that fetched a usable key set.
    refreshes_ok: AtomicU64,
    /// Refreshes that failed (discovery, fetch or parse).
    refreshes_error: AtomicU64,
    /// Verifications that wanted a refresh and were held back by
    /// [`MIN_REFRESH_INTERVAL`].
    refreshes_rate_limited: AtomicU64,
}

/// How one issuer's key refreshes went since start: counters the gateway
/// reads for its metrics (this crate knows nothing of how they are
/// exported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshCounts {
    /// The issuer's configured name.
    pub issuer: String,
    /// Refreshes that fetched a usable key set.
    pub ok: u64,
    /// Refreshes that failed.
    pub error: u64,
    /// Verifications that wanted a refresh (stale cache or unknown `kid`)
    /// and were held back by the rate limit. Readiness checks
    /// ([`IssuerSet::refresh_stale`]) that are held back are not counted.
    pub rate_limited: u64,
}

/// The trusted external issuers: verifies their tokens and maps them to
/// principals. Cheap to share behind an `Arc`.
pub struct IssuerSet {
    by_iss: BTreeMap<String, Arc<Issuer>>,
    http: reqwest::Client,
    clock: SharedClock,
}

impl std::fmt::Debug for IssuerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerSet")
            .field("issuers", &self.by_iss.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl IssuerSet {
    /// Validates `configs` (names and issuer URLs must be unique) and builds
    /// the set. No network I/O happens until the first `verify`.
    pub fn new(
        configs: Vec<IssuerConfig>,
        http: reqwest::Client,
        clock: SharedClock,
    ) -> Result<Self, IdentityError> {
        let mut by_iss = BTreeMap::new();
        let mut names = std::collections::BTreeSet::new();
        for cfg in configs {
            cfg.validate()?;
            if !names.insert(cfg.name.clone()) {
                return Err(ConfigError::new(
                    &cfg.name,
                    "name",
                    "another issuer has the same name; names must be unique",
                )
                .into());
            }
            if by_iss.contains_key(&cfg.issuer) {
                return Err(ConfigError::new(
                    &cfg.name,
                    "issuer",
                    format!(
                        "`{}` is configured twice; each issuer URL may appear once",
                        cfg.issuer
                    ),
                )
                .into());
            }
            by_iss.insert(
                cfg.issuer.clone(),
                Arc::new(Issuer {
                    cfg,
                    state: tokio::sync::Mutex::new(KeyState::default()),
                    refreshes: AtomicU64::new(0),
                    refreshes_ok: AtomicU64::new(0),
                    refreshes_error: AtomicU64::new(0),
                    refreshes_rate_limited: AtomicU64::new(0),
                }),
            );
        }
        Ok(Self {
            by_iss,
            http,
            clock,
        })
    }

    /// The configured issuers.
    pub fn configs(&self) -> impl Iterator<Item = &IssuerConfig> {
        self.by_iss.values().map(|i| &i.cfg)
    }

    /// How many key refreshes (discovery + JWKS fetch attempts) the issuer
    /// named `name` has made; `None` for an unknown name. For metrics and
    /// tests of the refresh rate limit.
    pub fn refresh_count(&self, name: &str) -> Option<u64> {
        self.by_iss
            .values()
            .find(|i| i.cfg.name == name)
            .map(|i| i.refreshes.load(Ordering::Relaxed))
    }

    /// Each issuer's refresh counters, in issuer URL order. Cheap (atomic
    /// loads, no lock): for a metrics scrape.
    pub fn refresh_counts(&self) -> Vec<RefreshCounts> {
        self.by_iss
            .values()
            .map(|i| RefreshCounts {
                issuer: i.cfg.name.clone(),
                ok: i.refreshes_ok.load(Ordering::Relaxed),
                error: i.refreshes_error.load(Ordering::Relaxed),
                rate_limited: i.refreshes_rate_limited.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Each issuer's name and where its keys stand. The built-in dev
    /// issuer is left out: its keys are the gateway's own.
    pub async fn key_status(&self) -> Vec<(String, KeyStatus)> {
        let now = self.clock.unix_millis();
        let mut out = Vec::with_capacity(self.by_iss.len());
        for issuer in self.by_iss.values().filter(|i| !i.cfg.dev) {
            let st = issuer.state.lock().await;
            let status = match (&st.last_error, st.failing_since_ms) {
                (Some(reason), since) => KeyStatus::Failing {
                    since_ms: since.or(st.last_attempt_ms).unwrap_or(now),
                    reason: reason.clone(),
                    cached: usable(&st, now).is_some(),
                },
                (None, _) => match &st.cached {
                    Some(c) => KeyStatus::Fetched {
                        at_ms: c.fetched_at_ms,
                    },
                    None => KeyStatus::NotFetched,
                },
            };
            out.push((issuer.cfg.name.clone(), status));
        }
        out
    }

    /// Fetches the keys of every issuer whose cached keys are missing or
    /// stale, within the per-issuer refresh rate limit: readiness calls it
    /// so an issuer that went away shows before a caller meets it.
    pub async fn refresh_stale(&self) {
        for issuer in self.by_iss.values().filter(|i| !i.cfg.dev) {
            let mut st = issuer.state.lock().await;
            let now = self.clock.unix_millis();
            let fresh = st.cached.as_ref().is_some_and(|c| now < c.fresh_until_ms);
            if !fresh && may_refresh(&st, now) {
                self.refresh(issuer, &mut st, now).await;
            }
        }
    }

    /// Verifies an external OIDC token and maps it to a principal.
    ///
    /// Fails closed: any doubt (unknown issuer or key, unreachable issuer
    /// without a usable cached key set) is an error.
    pub async fn verify(&self, token: &str) -> Result<VerifiedIdentity, IdentityError> {
        let jwt = parse_unverified(token)?;
        if is_forbidden_alg(&jwt.alg) {
            return Err(IdentityError::AlgorithmNotAllowed { alg: jwt.alg });
        }
        let iss = jwt.issuer().ok_or_else(|| IdentityError::missing("iss"))?;
        let issuer = self.lookup(iss)?;
        let cfg = &issuer.cfg;
        let alg = match parse_alg(&jwt.alg) {
            Some(a) if cfg.algorithms.iter().any(|x| x == &jwt.alg) => a,
            _ => return Err(IdentityError::AlgorithmNotAllowed { alg: jwt.alg }),
        };

        let candidates = self
            .keys_for(issuer, jwt.kid.as_deref(), &jwt.alg, alg)
            .await?;
        let verified = candidates.iter().any(|k| {
            jsonwebtoken::crypto::verify(
                &jwt.signature_b64,
                jwt.signing_input.as_bytes(),
                &k.key,
                alg,
            )
            .unwrap_or(false)
        });
        if !verified {
            return Err(IdentityError::BadSignature);
        }

        // INVARIANT: nothing below runs for a token whose signature failed.
        let claims = jwt.claims;
        let expires_at = check_times(&claims, self.clock.unix())?;
        check_audience(&claims, &cfg.audiences)?;
        check_bound_claims(cfg, &claims)?;
        let principal = map_principal(cfg, &claims)?;
        Ok(VerifiedIdentity {
            principal,
            issuer_name: cfg.name.clone(),
            expires_at,
            claims,
        })
    }

    fn lookup(&self, iss: &str) -> Result<&Arc<Issuer>, IdentityError> {
        if let Some(i) = self.by_iss.get(iss) {
            return Ok(i);
        }
        let norm = iss.trim_end_matches('/');
        if let Some(i) = self
            .by_iss
            .values()
            .find(|i| i.cfg.issuer.trim_end_matches('/') == norm)
        {
            return Err(IdentityError::WrongIssuer {
                iss: iss.to_owned(),
                expected: i.cfg.issuer.clone(),
            });
        }
        Err(IdentityError::UnknownIssuer {
            iss: iss.to_owned(),
        })
    }

    /// The keys that may verify a token with this `kid` and `alg`, fetching
    /// or refreshing the issuer's JWKS as the cache and rate limit allow.
    async fn keys_for(
        &self,
        issuer: &Issuer,
        kid: Option<&str>,
        alg_name: &str,
        alg: jsonwebtoken::Algorithm,
    ) -> Result<Vec<PublicKey>, IdentityError> {
        let mut st = issuer.state.lock().await;
        let now = self.clock.unix_millis();
        let fresh = st.cached.as_ref().is_some_and(|c| now < c.fresh_until_ms);
        let mut refreshed = false;
        // Counted once per verification that the rate limit held back.
        let held_back = || {
            issuer
                .refreshes_rate_limited
                .fetch_add(1, Ordering::Relaxed);
        };
        if !fresh {
            if may_refresh(&st, now) {
                self.refresh(issuer, &mut st, now).await;
                refreshed = true;
            } else {
                held_back();
                // Not asked again below for an unknown `kid`.
                refreshed = true;
            }
        }
        loop {
            let cached = usable(&st, now).ok_or_else(|| IdentityError::IssuerUnavailable {
                issuer: issuer.cfg.name.clone(),
                reason: st
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "its keys have not been fetched".into()),
            })?;
            match select(&cached.keys, kid, alg_name, alg) {
                Selected::Keys(k) => return Ok(k),
                Selected::Mismatch(e) => return Err(e),
                Selected::None if !refreshed && may_refresh(&st, now) => {
                    self.refresh(issuer, &mut st, now).await;
                    refreshed = true;
                }
                Selected::None => {
                    if !refreshed {
                        held_back();
                    }
                    return Err(IdentityError::UnknownKey {
                        kid: kid.unwrap_or("(none)").to_owned(),
                    });
                }
            }
        }
    }

    async fn refresh(&self, issuer: &Issuer, st: &mut KeyState, now_ms: u64) {
        issuer.refreshes.fetch_add(1, Ordering::Relaxed);
        st.last_attempt_ms = Some(now_ms);
        match self.fetch_keys(&issuer.cfg).await {
            Ok((keys, lifetime)) => {
                issuer.refreshes_ok.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(issuer = %issuer.cfg.name, keys = keys.len(), "fetched issuer keys");
                st.cached = Some(Arc::new(CachedKeys {
                    keys,
                    fetched_at_ms: now_ms,
                    fresh_until_ms: now_ms.saturating_add(lifetime.as_millis() as u64),
                }));
                st.last_error = None;
                st.failing_since_ms = None;
            }
            Err(reason) => {
                issuer.refreshes_error.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(issuer = %issuer.cfg.name, %reason, "could not fetch issuer keys");
                st.last_error = Some(reason);
                st.failing_since_ms.get_or_insert(now_ms);
            }
        }
    }

    async fn fetch_keys(&self, cfg: &IssuerConfig) -> Result<(Vec<PublicKey>, Duration), String> {
        fetch_keys(&self.http, cfg).await
    }
}

/// Fetches `cfg`'s discovery document (unless `jwks_uri` is configured) and
/// its JWKS, exactly as verification does, and returns how many usable keys
/// it holds. For `latchkey serve --check --online`; the error says which
/// document failed and how.
pub async fn fetch_issuer_keys(
    http: &reqwest::Client,
    cfg: &IssuerConfig,
) -> Result<usize, String> {
    fetch_keys(http, cfg).await.map(|(keys, _)| keys.len())
}

async fn fetch_keys(
    http: &reqwest::Client,
    cfg: &IssuerConfig,
) -> Result<(Vec<PublicKey>, Duration), String> {
    let jwks_uri = match &cfg.jwks_uri {
        Some(u) => u.clone(),
        None => discover_jwks_uri(http, &cfg.issuer)
            .await
            .map_err(|e| format!("cannot fetch the discovery document ({e})"))?,
    };
    let fetched = get(http, &jwks_uri)
        .await
        .map_err(|e| format!("cannot fetch the keys ({e})"))?;
    let keys = parse_jwks(&fetched.body).map_err(|e| format!("the keys at `{jwks_uri}`: {e}"))?;
    Ok((keys, cache_lifetime(fetched.cache_control.as_deref())))
}

fn may_refresh(st: &KeyState, now_ms: u64) -> bool {
    st.last_attempt_ms.is_none_or(|t| {
        now_ms.saturating_sub(t) >= MIN_REFRESH_INTERVAL.as_millis() as u64 || now_ms < t
    })
}

fn usable(st: &KeyState, now_ms: u64) -> Option<Arc<CachedKeys>> {
    st.cached
        .as_ref()
        .filter(|c| now_ms.saturating_sub(c.fetched_at_ms) < HARD_MAX_KEY_AGE.as_millis() as u64)
        .cloned()
}

enum Selected {
    Keys(Vec<PublicKey>),
    Mismatch(IdentityError),
    None,
}

fn select(
    keys: &[PublicKey],
    kid: Option<&str>,
    alg_name: &str,
    alg: jsonwebtoken::Algorithm,
) -> Selected {
    match kid {
        Some(kid) => {
            let named: Vec<&PublicKey> = keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            let Some(first) = named.first() else {
                return Selected::None;
            };
            let fitting: Vec<PublicKey> = named
                .iter()
                .filter(|k| k.check_alg(alg_name, alg).is_ok())
                .map(|k| (*k).clone())
                .collect();
            if fitting.is_empty() {
                match first.check_alg(alg_name, alg) {
                    Err(e) => Selected::Mismatch(e),
                    Ok(()) => Selected::None,
                }
            } else {
                Selected::Keys(fitting)
            }
        }
        None => {
            let fitting: Vec<PublicKey> = keys
                .iter()
                .filter(|k| k.check_alg(alg_name, alg).is_ok())
                .cloned()
                .collect();
            if fitting.is_empty() {
                Selected::None
            } else {
                Selected::Keys(fitting)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: T) {}

    #[test]
    fn shareable_across_tasks() {
        let clock: SharedClock = Arc::new(latchkey_core::FakeClock::at(1_000));
        let set = IssuerSet::new(
            vec![IssuerConfig::new(
                "a",
                "https://idp.example",
                vec!["x".into()],
            )],
            reqwest::Client::new(),
            clock,
        )
        .unwrap();
        assert_send_sync(&set);
        // Handlers in the gateway need a `Send` future.
        assert_send(set.verify("a.b.c"));
        assert_eq!(set.refresh_count("a"), Some(0));
        assert_eq!(set.refresh_count("nope"), None);
        assert_eq!(set.configs().count(), 1);
    }

    #[test]
    fn refresh_interval() {
        let mut st = KeyState::default();
        assert!(may_refresh(&st, 10_000));
        st.last_attempt_ms = Some(10_000);
        assert!(!may_refresh(&st, 14_999));
        assert!(may_refresh(&st, 15_000));
        // A clock set backwards does not wedge refreshes.
        assert!(may_refresh(&st, 9_000));
    }
}
