//! Browser sessions: kept server-side in the store behind a small opaque
//! cookie, refreshed with the provider's refresh token before its ID token
//! expires, ended by logout, time-outs and revocation, and audited at each
//! of those steps.
//!
//! The cookie holds 32 random bytes; the store keeps only their SHA-256, so
//! a copy of the database opens no session. The provider's tokens are
//! encrypted with the master key before they reach the store. A sign-in
//! always starts a new session (a cookie an attacker planted is never
//! promoted: no fixation). With TLS the cookie is `__Host-latchkey`
//! (`Secure`, `Path=/`, no `Domain`, so no sibling host can set or shadow
//! it); it is always `HttpOnly` and `SameSite=Lax`.
//!
//! Every request with a session is checked against the revocation set (a
//! freeze, or a revocation of the subject made after the session began),
//! so a revocation ends sessions at once on every node that holds it; the
//! rows are also deleted when the revocation is recorded.

pub(crate) mod providers;
pub(crate) mod return_to;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue};
use latchkey_core::{Principal, SharedClock};
use latchkey_identity::VerifiedIdentity;
use latchkey_identity::oauth;
use latchkey_store::{SharedStore, StoredSession};
use latchkey_tokens::{MasterKey, RevocationSet};
use serde::{Deserialize, Serialize};

use crate::pipeline::{AuditAction, Code, Pipeline, Refusal, Stage, new_request_id, records};
use providers::{LoginProvider, Providers};

/// The session cookie's name with TLS.
pub(crate) const SECURE_COOKIE: &str = "__Host-latchkey";
/// The session cookie's name without TLS (`latchkey dev`).
pub(crate) const PLAIN_COOKIE: &str = "latchkey";
/// A session is refreshed when its ID token expires within this.
pub(crate) const REFRESH_AHEAD: Duration = Duration::from_secs(60);
/// `last_seen_at` is written at most this often per session (the idle
/// time-out is this coarse), so a busy page does not write per request.
pub(crate) const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// `[sessions]` time-outs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionTimes {
    /// A session unused this long ends.
    pub(crate) idle: Duration,
    /// A session ends this long after sign-in, however busy.
    pub(crate) absolute: Duration,
}

/// The provider tokens a session keeps (encrypted in the store).
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct SessionTokens {
    /// The last ID token: the `id_token_hint` of RP-initiated logout.
    pub(crate) id_token: String,
    /// The refresh token, when the provider granted one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refresh_token: Option<String>,
}

/// A request's live session.
#[derive(Debug, Clone)]
pub(crate) struct SignedIn {
    /// Who signed in.
    pub(crate) principal: Principal,
    /// The session's id hash (the store key; not the cookie secret).
    pub(crate) session_id: String,
}

fn handle(id_hash: &str) -> &str {
    id_hash.get(..16).unwrap_or(id_hash)
}

/// The session store, cookies and refresh.
pub(crate) struct Sessions {
    store: SharedStore,
    master: MasterKey,
    clock: SharedClock,
    revocations: Arc<RevocationSet>,
    pub(crate) providers: Arc<Providers>,
    pipe: Arc<Pipeline>,
    times: SessionTimes,
    secure: bool,
    /// One refresh at a time per session: a provider that rotates refresh
    /// tokens would refuse the second of two concurrent refreshes.
    refreshing: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("secure", &self.secure)
            .field("times", &self.times)
            .finish_non_exhaustive()
    }
}

/// The refusal for a cookie that names no live session: like no
/// credential at all (browsers are sent to sign in; not recorded again,
/// the end of the session was).
fn ended(why: &str) -> Refusal {
    Refusal::new(
        Stage::Authenticate,
        Code::MissingCredential,
        format!("your session {why}; sign in again"),
    )
}

impl Sessions {
    /// Sessions over `store`; `secure` when the gateway is reached over
    /// TLS (the cookie is then `__Host-` and `Secure`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: SharedStore,
        master: MasterKey,
        clock: SharedClock,
        revocations: Arc<RevocationSet>,
        providers: Arc<Providers>,
        pipe: Arc<Pipeline>,
        times: SessionTimes,
        secure: bool,
    ) -> Self {
        Self {
            store,
            master,
            clock,
            revocations,
            providers,
            pipe,
            times,
            secure,
            refreshing: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The cookie's name.
    pub(crate) fn cookie_name(&self) -> &'static str {
        if self.secure {
            SECURE_COOKIE
        } else {
            PLAIN_COOKIE
        }
    }

    /// Whether cookies are `Secure`.
    pub(crate) fn secure(&self) -> bool {
        self.secure
    }

    /// `Set-Cookie` for a new session's secret.
    fn set_cookie(&self, secret: &str) -> HeaderValue {
        cookie_header(
            self.cookie_name(),
            secret,
            self.times.absolute.as_secs(),
            self.secure,
        )
    }

    /// `Set-Cookie` that removes the session cookie.
    pub(crate) fn clear_cookie(&self) -> HeaderValue {
        cookie_header(self.cookie_name(), "", 0, self.secure)
    }

    /// Starts a session for a verified sign-in and records it durably
    /// (a sign-in is acknowledged only once its record is). Returns the
    /// `Set-Cookie` value.
    pub(crate) async fn create(
        &self,
        request_id: &str,
        provider: &LoginProvider,
        verified: &VerifiedIdentity,
        tokens: SessionTokens,
    ) -> Result<(SignedIn, HeaderValue), Refusal> {
        let secret = oauth::random_token().map_err(|_| store_refusal())?;
        let id_hash = hash_secret(&secret);
        let now = self.clock.unix();
        let principal = &verified.principal;
        let stored = StoredSession {
            id_hash: id_hash.clone(),
            subject: principal.id.clone(),
            issuer: provider.name.clone(),
            principal_json: serde_json::to_string(principal).map_err(|_| store_refusal())?,
            secrets: self.seal(&id_hash, &tokens)?,
            created_at: now,
            last_seen_at: now,
            expires_at: now.saturating_add(self.times.absolute.as_secs()),
            id_token_expires_at: verified.expires_at,
        };
        self.store.insert_session(&stored).await.map_err(|e| {
            tracing::error!(error = %e, "cannot store a session");
            store_refusal()
        })?;
        let event = records::session(
            request_id.to_owned(),
            principal,
            AuditAction::SessionStart,
            handle(&id_hash),
            "signed_in",
            None,
            self.clock.unix_millis(),
        );
        if let Err(refusal) = self.pipe.record(event).await {
            // Not acknowledged: the session must not outlive its missing record.
            let _ = self.store.delete_session(&id_hash).await;
            return Err(refusal);
        }
        let signed_in = SignedIn {
            principal: principal.clone(),
            session_id: id_hash,
        };
        Ok((signed_in, self.set_cookie(&secret)))
    }

    /// The session the request's cookie names, checked, touched and
    /// refreshed. `Ok(None)`: no session cookie. A cookie that names no
    /// live session is refused (and an ending found here is audited).
    pub(crate) async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<SignedIn>, Refusal> {
        let secret = match cookie_value(headers, self.cookie_name()) {
            CookieLookup::Absent => return Ok(None),
            CookieLookup::Ambiguous => {
                return Err(Refusal::new(
                    Stage::Authenticate,
                    Code::UnreadableCredential,
                    "more than one session cookie; clear this site's cookies and sign in again",
                ));
            }
            CookieLookup::One(s) => s,
        };
        let id_hash = hash_secret(secret);
        let Some(mut session) = self.load(&id_hash).await? else {
            return Err(ended("has ended"));
        };
        let principal = self.principal_of(&session)?;
        let now = self.clock.unix();
        if now >= session.expires_at {
            self.end(&id_hash, &principal, "expired", None).await?;
            return Err(ended("has expired"));
        }
        if now
            >= session
                .last_seen_at
                .saturating_add(self.times.idle.as_secs())
        {
            self.end(&id_hash, &principal, "idle", None).await?;
            return Err(ended("was idle too long"));
        }
        if let Some(why) = self.revoked(&principal, session.created_at) {
            self.end(&id_hash, &principal, "revoked", Some(why)).await?;
            return Err(ended("was ended by a revocation"));
        }
        let principal = if session.id_token_expires_at <= now + REFRESH_AHEAD.as_secs() {
            match self.refresh(&id_hash).await? {
                Some((p, fresh)) => {
                    session = fresh;
                    p
                }
                None => return Err(ended("could not be renewed with the identity provider")),
            }
        } else {
            principal
        };
        if now >= session.last_seen_at + TOUCH_INTERVAL.as_secs() {
            self.store.touch_session(&id_hash, now).await.map_err(|e| {
                tracing::error!(error = %e, "cannot touch a session");
                store_refusal()
            })?;
        }
        Ok(Some(SignedIn {
            principal,
            session_id: id_hash,
        }))
    }

    /// Ends the request's session, if it has one (logout). Returns who it
    /// was and the ID token for the provider's logout.
    pub(crate) async fn logout(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<(SignedIn, SessionTokens)>, Refusal> {
        let CookieLookup::One(secret) = cookie_value(headers, self.cookie_name()) else {
            return Ok(None);
        };
        let id_hash = hash_secret(secret);
        let Some(session) = self.load(&id_hash).await? else {
            return Ok(None);
        };
        let principal = self.principal_of(&session)?;
        let tokens = self.open(&session).unwrap_or_default();
        self.end(&id_hash, &principal, "logout", None).await?;
        Ok(Some((
            SignedIn {
                principal,
                session_id: id_hash,
            },
            tokens,
        )))
    }

    /// Removes sessions past their time-outs (upkeep; their ends are not
    /// recorded one by one, the count is logged).
    pub(crate) async fn prune(&self) {
        let now = self.clock.unix();
        let idle_before = now.saturating_sub(self.times.idle.as_secs());
        match self.store.delete_expired_sessions(now, idle_before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "expired sessions removed"),
            Err(e) => tracing::error!(error = %e, "cannot remove expired sessions"),
        }
    }

    async fn load(&self, id_hash: &str) -> Result<Option<StoredSession>, Refusal> {
        self.store.get_session(id_hash).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read a session");
            store_refusal()
        })
    }

    fn principal_of(&self, session: &StoredSession) -> Result<Principal, Refusal> {
        serde_json::from_str(&session.principal_json).map_err(|e| {
            tracing::error!(error = %e, "a stored session's principal does not parse");
            store_refusal()
        })
    }

    /// What freezes `principal`, if anything (a frozen subject cannot sign in).
    pub(crate) fn frozen(&self, principal: &Principal) -> Option<String> {
        self.revocations.frozen(principal)
    }

    /// A freeze of the principal, or a revocation of its subject made
    /// after the session began.
    fn revoked(&self, principal: &Principal, since: u64) -> Option<String> {
        self.revocations
            .frozen(principal)
            .or_else(|| self.revocations.subject_revoked_since(principal, since))
    }

    /// Deletes a session and records why, durably.
    async fn end(
        &self,
        id_hash: &str,
        principal: &Principal,
        status: &str,
        detail: Option<String>,
    ) -> Result<(), Refusal> {
        let existed = self.store.delete_session(id_hash).await.map_err(|e| {
            tracing::error!(error = %e, "cannot end a session");
            store_refusal()
        })?;
        if !existed {
            // Another request (or node) ended it first and recorded that.
            return Ok(());
        }
        let event = records::session(
            new_request_id(),
            principal,
            AuditAction::SessionEnd,
            handle(id_hash),
            status,
            detail,
            self.clock.unix_millis(),
        );
        self.pipe.record(event).await
    }

    /// Renews a session's tokens with its refresh token. `Ok(None)` when it
    /// cannot be renewed (no refresh token, the provider refused, the new
    /// ID token does not verify): the session is then ended and that is
    /// recorded. One refresh per session at a time; a request that waited
    /// for another's refresh uses its result.
    async fn refresh(&self, id_hash: &str) -> Result<Option<(Principal, StoredSession)>, Refusal> {
        let lock = {
            let mut map = self.refreshing.lock().await;
            map.entry(id_hash.to_owned()).or_default().clone()
        };
        let result = {
            let _one_at_a_time = lock.lock().await;
            self.refresh_locked(id_hash).await
        };
        let mut map = self.refreshing.lock().await;
        if let Some(l) = map.get(id_hash)
            && Arc::strong_count(l) <= 2
        {
            map.remove(id_hash);
        }
        result
    }

    async fn refresh_locked(
        &self,
        id_hash: &str,
    ) -> Result<Option<(Principal, StoredSession)>, Refusal> {
        let Some(mut session) = self.load(id_hash).await? else {
            return Ok(None);
        };
        let principal = self.principal_of(&session)?;
        let now = self.clock.unix();
        if session.id_token_expires_at > now + REFRESH_AHEAD.as_secs() {
            // Renewed while this request waited.
            return Ok(Some((principal, session)));
        }
        let failed_for = principal.clone();
        let fail = |why: String| {
            let who = failed_for.clone();
            async move {
                tracing::info!(reason = %why, "session refresh failed");
                self.end(id_hash, &who, "refresh_failed", Some(why))
                    .await
                    .map(|()| None)
            }
        };
        let Some(provider) = self.providers.get(Some(&session.issuer)).cloned() else {
            return fail(format!(
                "the issuer `{}` is no longer configured for sign-in",
                session.issuer
            ))
            .await;
        };
        let mut tokens = match self.open(&session) {
            Ok(t) => t,
            Err(_) => return fail("the session's tokens cannot be read".into()).await,
        };
        let Some(refresh_token) = tokens.refresh_token.clone() else {
            return fail("the provider granted no refresh token".into()).await;
        };
        let meta = match self.providers.metadata(&provider).await {
            Ok(m) => m,
            Err(e) => return fail(e.to_string()).await,
        };
        let answer = match oauth::refresh(
            self.providers.http(),
            &meta,
            &provider.client,
            &refresh_token,
        )
        .await
        {
            Ok(a) => a,
            Err(e) => return fail(e.to_string()).await,
        };
        let (principal, id_token_expires_at) = match &answer.id_token {
            Some(id_token) => {
                match self
                    .providers
                    .verify_id_token(&provider, id_token, None)
                    .await
                {
                    // A refreshed identity must be the same person.
                    Ok(v) if v.principal.id == principal.id => {
                        tokens.id_token = id_token.clone();
                        (v.principal, v.expires_at)
                    }
                    Ok(_) => {
                        return fail("the refreshed ID token names another subject".into()).await;
                    }
                    Err(e) => return fail(e.to_string()).await,
                }
            }
            // No new ID token: the identity stands until the new access
            // token's expiry, when the session is refreshed again.
            None => (principal, now + answer.expires_in.unwrap_or(300).max(60)),
        };
        if let Some(rotated) = answer.refresh_token {
            tokens.refresh_token = Some(rotated);
        }
        session.principal_json = serde_json::to_string(&principal).map_err(|_| store_refusal())?;
        session.secrets = self.seal(id_hash, &tokens)?;
        session.last_seen_at = now;
        session.id_token_expires_at = id_token_expires_at;
        let still_there = self.store.update_session(&session).await.map_err(|e| {
            tracing::error!(error = %e, "cannot update a session");
            store_refusal()
        })?;
        if !still_there {
            return Ok(None);
        }
        let event = records::session(
            new_request_id(),
            &principal,
            AuditAction::SessionRefresh,
            handle(id_hash),
            "refreshed",
            None,
            self.clock.unix_millis(),
        );
        self.pipe.record(event).await?;
        Ok(Some((principal, session)))
    }

    fn seal(&self, id_hash: &str, tokens: &SessionTokens) -> Result<Vec<u8>, Refusal> {
        let plain = serde_json::to_vec(tokens).map_err(|_| store_refusal())?;
        self.master
            .encrypt(&plain, &aad(id_hash))
            .map_err(|_| store_refusal())
    }

    fn open(&self, session: &StoredSession) -> Result<SessionTokens, Refusal> {
        let plain = self
            .master
            .decrypt(&session.secrets, &aad(&session.id_hash))
            .map_err(|_| store_refusal())?;
        serde_json::from_slice(&plain).map_err(|_| store_refusal())
    }
}

/// The ciphertext is bound to its session: moving it to another row
/// makes it unreadable.
fn aad(id_hash: &str) -> Vec<u8> {
    format!("latchkey-session:{id_hash}").into_bytes()
}

fn store_refusal() -> Refusal {
    Refusal::new(
        Stage::Authenticate,
        Code::StoreUnavailable,
        "sessions are unavailable right now; try again shortly",
    )
}

/// Hex SHA-256 of a cookie secret.
pub(crate) fn hash_secret(secret: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        secret.as_bytes(),
    ))
}

/// A `Set-Cookie` value (`max_age` 0 removes the cookie).
pub(crate) fn cookie_header(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let mut v = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}");
    if secure {
        v.push_str("; Secure");
    }
    // Names are fixed and values are base64url or empty: always valid.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("latchkey=; Max-Age=0"))
}

/// What the `Cookie` headers hold under one name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CookieLookup<'a> {
    /// Not there.
    Absent,
    /// Exactly once.
    One(&'a str),
    /// More than once with different values (a cookie planted by a
    /// sibling host beside ours): not guessed at.
    Ambiguous,
}

/// Every `name=value` pair of every `Cookie` header (RFC 6265 §5.4: pairs
/// separated by `;`), trimmed, in order. Headers that are not text are
/// skipped. The one reading of cookies the gateway's routes share.
pub(crate) fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
}

/// Finds the cookie `name` in every `Cookie` header. Names are compared
/// exactly, as browsers set them.
pub(crate) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> CookieLookup<'a> {
    let mut found: Option<&str> = None;
    for (k, v) in cookie_pairs(headers) {
        if k != name {
            continue;
        }
        match found {
            Some(prev) if prev != v => return CookieLookup::Ambiguous,
            _ => found = Some(v),
        }
    }
    match found {
        Some(v) if !v.is_empty() => CookieLookup::One(v),
        _ => CookieLookup::Absent,
    }
}

/// Encrypts a short-lived value for a cookie (the sign-in flow's state),
/// bound to `purpose`.
pub(crate) fn seal_cookie(
    master: &MasterKey,
    purpose: &str,
    value: &impl Serialize,
) -> Option<String> {
    let plain = serde_json::to_vec(value).ok()?;
    let ct = master.encrypt(&plain, purpose.as_bytes()).ok()?;
    Some(URL_SAFE_NO_PAD.encode(ct))
}

/// Opens what [`seal_cookie`] made; `None` when it was altered, made for
/// another purpose or by another key.
pub(crate) fn open_cookie<T: serde::de::DeserializeOwned>(
    master: &MasterKey,
    purpose: &str,
    sealed: &str,
) -> Option<T> {
    let ct = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    let plain = master.decrypt(&ct, purpose.as_bytes()).ok()?;
    serde_json::from_slice(&plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(
                http::header::COOKIE,
                HeaderValue::from_str(c).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_exactly_once_or_refused() {
        assert_eq!(
            cookie_value(&headers(&["a=1; latchkey=s3cret; b=2"]), "latchkey"),
            CookieLookup::One("s3cret")
        );
        assert_eq!(
            cookie_value(&headers(&["xlatchkey=1; latchkey2=2"]), "latchkey"),
            CookieLookup::Absent
        );
        assert_eq!(
            cookie_value(&headers(&["latchkey=a", "latchkey=b"]), "latchkey"),
            CookieLookup::Ambiguous
        );
        assert_eq!(
            cookie_value(&headers(&["latchkey=a; latchkey=a"]), "latchkey"),
            CookieLookup::One("a")
        );
        assert_eq!(
            cookie_value(&headers(&["latchkey="]), "latchkey"),
            CookieLookup::Absent
        );
    }

    #[test]
    fn cookies_are_host_only_http_only_and_lax() {
        let c = cookie_header(SECURE_COOKIE, "v", 60, true);
        assert_eq!(
            c.to_str().unwrap_or_default(),
            "__Host-latchkey=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
    }

    #[test]
    fn sealed_cookies_open_only_for_their_purpose_and_key() {
        let key = MasterKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let other = MasterKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let sealed = seal_cookie(&key, "flow", &"hello").unwrap_or_default();
        assert_eq!(
            open_cookie::<String>(&key, "flow", &sealed).as_deref(),
            Some("hello")
        );
        assert_eq!(open_cookie::<String>(&key, "other", &sealed), None);
        assert_eq!(open_cookie::<String>(&other, "flow", &sealed), None);
        let mut tampered = sealed.clone().into_bytes();
        tampered[5] ^= 1;
        let tampered = String::from_utf8(tampered).unwrap_or_default();
        assert_eq!(open_cookie::<String>(&key, "flow", &tampered), None);
    }
}
