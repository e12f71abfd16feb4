//! The development identity provider's sign-in: the authorization code flow
//! with PKCE (RFC 6749 §4.1, RFC 7636) and the refresh token grant, for the
//! two clients a sandbox has: `latchkey-cli` (`latchkey login`, a public
//! native client on any loopback port, RFC 8252 §7.3) and `latchkey-web` (the
//! gateway's own browser sign-in, redirected to `{public_url}/callback`
//! exactly).
//!
//! DEVELOPMENT ONLY: anyone who reaches the sign-in page may type any user
//! and groups. Pending forms, codes and refresh tokens live in memory
//! (bounded, lost on restart); this is not a provider to deploy.
//!
//! No I/O and no HTTP here: the gateway renders the page and the answers.
//! Time comes in as `now` from the caller's clock.

use std::collections::HashMap;
use std::time::Duration;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use latchkey_core::{UnixTime, echo};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::DevIssuer;
use crate::jwt::b64;
use crate::oauth::pkce_challenge;

/// The client id of `latchkey login` (public; any loopback redirect).
pub const DEV_CLI_CLIENT: &str = "latchkey-cli";
/// The client id of the gateway's own browser sign-in (public; redirect
/// `{public_url}/callback` exactly).
pub const DEV_WEB_CLIENT: &str = "latchkey-web";

/// How long an authorization code may be redeemed.
pub const CODE_LIFETIME_SECS: u64 = 60;
/// How long a sign-in form may be submitted after it was shown.
pub const FORM_LIFETIME_SECS: u64 = 600;
/// How long a refresh token is honoured.
pub const REFRESH_LIFETIME_SECS: u64 = 24 * 3600;
/// The ID token lifetime when none is configured.
pub const DEFAULT_ID_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Bounds on what unauthenticated callers can make the provider hold.
const MAX_FORMS: usize = 1024;
const MAX_CODES: usize = 1024;
const MAX_REFRESH: usize = 4096;
/// Longest `state` and `nonce` kept (they are echoed back).
const MAX_PARAM_BYTES: usize = 512;
const MAX_GROUPS: usize = 32;

/// The query of `GET /dev-idp/authorize`.
#[derive(Debug, Default, Deserialize)]
pub struct AuthorizeParams {
    /// Must be `code`.
    pub response_type: Option<String>,
    /// `latchkey-cli` or `latchkey-web`.
    pub client_id: Option<String>,
    /// Where the code goes.
    pub redirect_uri: Option<String>,
    /// Must include `openid`.
    pub scope: Option<String>,
    /// Echoed back with the code.
    pub state: Option<String>,
    /// Put into the ID token.
    pub nonce: Option<String>,
    /// PKCE challenge (base64url of SHA-256 of the verifier).
    pub code_challenge: Option<String>,
    /// Must be `S256`.
    pub code_challenge_method: Option<String>,
    /// `none` is refused with `login_required` (there is no session here).
    pub prompt: Option<String>,
}

/// The form of `POST /dev-idp/token`.
#[derive(Debug, Default, Deserialize)]
pub struct TokenParams {
    /// `authorization_code` or `refresh_token`.
    pub grant_type: Option<String>,
    /// The code (authorization_code grant).
    pub code: Option<String>,
    /// The redirect URI the code was issued for.
    pub redirect_uri: Option<String>,
    /// The PKCE verifier.
    pub code_verifier: Option<String>,
    /// The client.
    pub client_id: Option<String>,
    /// Accepted and ignored: both dev clients are public.
    pub client_secret: Option<String>,
    /// The refresh token (refresh_token grant).
    pub refresh_token: Option<String>,
}

/// Why `GET /dev-idp/authorize` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    /// The client or its redirect URI is wrong: the browser must not be
    /// sent anywhere (RFC 6749 §4.1.2.1); show the message.
    #[error("{0}")]
    NoRedirect(String),
    /// Anything else: sent back to the client's redirect URI.
    #[error("{description}")]
    Redirect {
        /// The client's redirect URI, already checked.
        redirect_uri: String,
        /// The OAuth error code.
        error: &'static str,
        /// What to fix.
        description: String,
        /// The client's `state`, echoed.
        state: Option<String>,
    },
}

impl AuthorizeError {
    /// The URL to send the browser to, for [`AuthorizeError::Redirect`].
    pub fn redirect_url(&self) -> Option<String> {
        match self {
            AuthorizeError::NoRedirect(_) => None,
            AuthorizeError::Redirect {
                redirect_uri,
                error,
                description,
                state,
            } => {
                let mut url = url::Url::parse(redirect_uri).ok()?;
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("error", error);
                    q.append_pair("error_description", description);
                    if let Some(s) = state {
                        q.append_pair("state", s);
                    }
                }
                Some(url.into())
            }
        }
    }
}

/// A refusal at the token or revocation endpoint, as RFC 6749 §5.2 words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct DevOAuthError {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unsupported_grant_type`.
    pub code: &'static str,
    /// What to fix.
    pub description: String,
}

fn oauth_err(code: &'static str, description: impl Into<String>) -> DevOAuthError {
    DevOAuthError {
        code,
        description: description.into(),
    }
}

/// Why a submitted sign-in form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    /// The form token is unknown, used or expired: start again.
    #[error(
        "this sign-in form has expired or was already used; go back to the application and sign in again"
    )]
    StaleForm,
    /// A field is wrong; the form can be shown again with this message.
    #[error("{0}")]
    Field(String),
}

/// What the sign-in page shows for a checked authorization request.
#[derive(Debug, Clone)]
pub struct SignInForm {
    /// The hidden per-form token: names the checked request server-side,
    /// one use, so a form cannot be posted without having been fetched.
    pub form_token: String,
    /// The client that asked.
    pub client_id: String,
    /// Where the code will go.
    pub redirect_uri: String,
}

/// A checked authorization request waiting for its form.
#[derive(Debug, Clone)]
struct Pending {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
    expires_at: UnixTime,
}

/// Who signed in, as typed into the form.
#[derive(Debug, Clone)]
struct Identity {
    user: String,
    groups: Vec<String>,
    email: Option<String>,
}

#[derive(Debug, Clone)]
struct Code {
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    code_challenge: String,
    who: Identity,
    auth_time: UnixTime,
    expires_at: UnixTime,
}

#[derive(Debug, Clone)]
struct Refresh {
    client_id: String,
    who: Identity,
    auth_time: UnixTime,
    expires_at: UnixTime,
}

/// The in-memory state of the sign-in flows. DEV ONLY.
#[derive(Debug, Default)]
pub(crate) struct Flows {
    forms: HashMap<String, Pending>,
    codes: HashMap<String, Code>,
    refresh: HashMap<String, Refresh>,
}

/// Keeps a map under its bound: drops expired entries, then refuses.
fn make_room<V>(
    map: &mut HashMap<String, V>,
    max: usize,
    now: UnixTime,
    exp: impl Fn(&V) -> UnixTime,
) -> bool {
    if map.len() >= max {
        map.retain(|_, v| exp(v) > now);
    }
    map.len() < max
}

/// 32 random bytes, base64url.
fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(b64(&bytes))
}

/// `uri` is a loopback redirect a native app may use (RFC 8252 §7.3): plain
/// `http` to the literal `127.0.0.1` or `[::1]`, any port and path, no user
/// info or fragment, and written exactly as a URL parser writes it back (so
/// what was checked is what the browser is sent to).
pub fn is_loopback_redirect(uri: &str) -> bool {
    let Ok(url) = url::Url::parse(uri) else {
        return false;
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(url::Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        _ => false,
    };
    url.scheme() == "http"
        && loopback
        && url.username().is_empty()
        && url.password().is_none()
        && url.fragment().is_none()
        && url.as_str() == uri
}

/// A verifier as RFC 7636 §4.1 allows: 43 to 128 unreserved characters.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// A challenge as S256 makes it: 43 base64url characters.
fn valid_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A user or group name: what policies and upstream headers can carry.
fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

fn valid_email(s: &str) -> bool {
    s.len() <= 254
        && s.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        })
        && s.chars().all(|c| c.is_ascii_graphic())
}

fn ct_eq(a: &str, b: &str) -> bool {
    verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

impl DevIssuer {
    /// The gateway's public URL: the issuer without `/dev-idp`.
    fn public_url(&self) -> &str {
        self.issuer()
            .trim_end_matches('/')
            .trim_end_matches("/dev-idp")
    }

    /// The only redirect URI of `latchkey-web`.
    pub fn web_redirect_uri(&self) -> String {
        format!("{}/callback", self.public_url())
    }

    /// Whether `uri` is on the gateway's own origin (where `/dev-idp/logout`
    /// may send the browser back to).
    pub fn is_own_origin(&self, uri: &str) -> bool {
        let (Ok(a), Ok(b)) = (url::Url::parse(uri), url::Url::parse(self.public_url())) else {
            return false;
        };
        a.origin() == b.origin()
            && a.username().is_empty()
            && a.password().is_none()
            && a.as_str() == uri
    }

    fn flows(&self) -> std::sync::MutexGuard<'_, Flows> {
        // A panic while holding the lock leaves plain maps behind; keep going.
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks an authorization request and, when it is good, remembers it
    /// behind a one-use form token for the sign-in page.
    pub fn authorize(
        &self,
        p: &AuthorizeParams,
        now: UnixTime,
    ) -> Result<SignInForm, AuthorizeError> {
        let client_id = p.client_id.as_deref().unwrap_or("");
        let redirect_uri = p.redirect_uri.as_deref().unwrap_or("");
        match client_id {
            DEV_CLI_CLIENT => {
                if !is_loopback_redirect(redirect_uri) {
                    return Err(AuthorizeError::NoRedirect(format!(
                        "`redirect_uri` `{}` is not a loopback redirect; `{DEV_CLI_CLIENT}` may \
                         only redirect to `http://127.0.0.1:PORT/...` or `http://[::1]:PORT/...` \
                         (RFC 8252)",
                        echo(redirect_uri)
                    )));
                }
            }
            DEV_WEB_CLIENT => {
                let want = self.web_redirect_uri();
                if redirect_uri != want {
                    return Err(AuthorizeError::NoRedirect(format!(
                        "`redirect_uri` `{}` is not registered for `{DEV_WEB_CLIENT}`; its only \
                         redirect is `{want}`",
                        echo(redirect_uri)
                    )));
                }
            }
            "" => {
                return Err(AuthorizeError::NoRedirect(format!(
                    "`client_id` is required: `{DEV_CLI_CLIENT}` or `{DEV_WEB_CLIENT}`"
                )));
            }
            other => {
                return Err(AuthorizeError::NoRedirect(format!(
                    "client `{}` is not registered here; the development identity provider knows \
                     `{DEV_CLI_CLIENT}` and `{DEV_WEB_CLIENT}`",
                    echo(other)
                )));
            }
        }
        let state = p.state.clone().filter(|s| !s.is_empty());
        let refuse = |error: &'static str, description: String| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.to_owned(),
            error,
            description,
            state: state.clone(),
        };
        if state.as_ref().is_some_and(|s| s.len() > MAX_PARAM_BYTES)
            || p.nonce.as_ref().is_some_and(|s| s.len() > MAX_PARAM_BYTES)
        {
            return Err(refuse(
                "invalid_request",
                format!("`state` and `nonce` may be at most {MAX_PARAM_BYTES} bytes"),
            ));
        }
        if p.response_type.as_deref() != Some("code") {
            return Err(refuse(
                "unsupported_response_type",
                format!(
                    "`response_type` `{}` is not supported; use `code`",
                    echo(p.response_type.as_deref().unwrap_or(""))
                ),
            ));
        }
        let scopes = p.scope.as_deref().unwrap_or("");
        if !scopes.split(' ').any(|s| s == "openid") {
            return Err(refuse(
                "invalid_scope",
                "`scope` must include `openid`".to_owned(),
            ));
        }
        if p.code_challenge_method.as_deref() != Some("S256") {
            return Err(refuse(
                "invalid_request",
                "PKCE is required: send `code_challenge` with `code_challenge_method=S256`"
                    .to_owned(),
            ));
        }
        let challenge = p.code_challenge.as_deref().unwrap_or("");
        if !valid_challenge(challenge) {
            return Err(refuse(
                "invalid_request",
                "`code_challenge` must be the base64url SHA-256 of the verifier (43 characters)"
                    .to_owned(),
            ));
        }
        if p.prompt
            .as_deref()
            .is_some_and(|pr| pr.split(' ').any(|x| x == "none"))
        {
            return Err(refuse(
                "login_required",
                "the development identity provider keeps no session; sign in without `prompt=none`"
                    .to_owned(),
            ));
        }
        let busy = || {
            refuse(
                "temporarily_unavailable",
                "too many sign-ins at once; try again in a minute".to_owned(),
            )
        };
        let form_token = random_token().ok_or_else(busy)?;
        let mut flows = self.flows();
        if !make_room(&mut flows.forms, MAX_FORMS, now, |f| f.expires_at) {
            return Err(busy());
        }
        flows.forms.insert(
            form_token.clone(),
            Pending {
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                state,
                nonce: p.nonce.clone().filter(|n| !n.is_empty()),
                code_challenge: challenge.to_owned(),
                expires_at: now.saturating_add(FORM_LIFETIME_SECS),
            },
        );
        Ok(SignInForm {
            form_token,
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
        })
    }

    /// The form `form_token` names while it can still be submitted (so a
    /// page with a wrong field can be shown again with the same token).
    pub fn pending_form(&self, form_token: &str, now: UnixTime) -> Option<SignInForm> {
        self.flows()
            .forms
            .get(form_token)
            .filter(|f| f.expires_at > now)
            .map(|f| SignInForm {
                form_token: form_token.to_owned(),
                client_id: f.client_id.clone(),
                redirect_uri: f.redirect_uri.clone(),
            })
    }

    /// Takes a submitted sign-in form: checks the fields, uses up the form
    /// token and returns the URL that carries the code back to the client.
    /// A wrong field leaves the form usable, so it can be corrected.
    pub fn sign_in(
        &self,
        form_token: &str,
        user: &str,
        groups: &str,
        email: &str,
        now: UnixTime,
    ) -> Result<String, SignInError> {
        let user = user.trim();
        if !valid_name(user) {
            return Err(SignInError::Field(format!(
                "user `{}` is not valid: use 1 to 64 letters, digits and `._@+-`",
                echo(user)
            )));
        }
        let mut group_list = Vec::new();
        for g in groups.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if !valid_name(g) {
                return Err(SignInError::Field(format!(
                    "group `{}` is not valid: use 1 to 64 letters, digits and `._@+-`, separated by commas",
                    echo(g)
                )));
            }
            if !group_list.iter().any(|x| x == g) {
                group_list.push(g.to_owned());
            }
        }
        if group_list.len() > MAX_GROUPS {
            return Err(SignInError::Field(format!(
                "at most {MAX_GROUPS} groups, please"
            )));
        }
        let email = email.trim();
        if !email.is_empty() && !valid_email(email) {
            return Err(SignInError::Field(format!(
                "e-mail `{}` is not valid: write it as `name@domain`, or leave it empty",
                echo(email)
            )));
        }
        let code = random_token().ok_or(SignInError::StaleForm)?;
        let mut flows = self.flows();
        let pending = match flows.forms.remove(form_token) {
            Some(p) if p.expires_at > now => p,
            _ => return Err(SignInError::StaleForm),
        };
        let mut url = url::Url::parse(&pending.redirect_uri).map_err(|_| SignInError::StaleForm)?;
        if !make_room(&mut flows.codes, MAX_CODES, now, |c| c.expires_at) {
            return Err(SignInError::Field(
                "too many sign-ins at once; try again in a minute".to_owned(),
            ));
        }
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("code", &code);
            if let Some(s) = &pending.state {
                q.append_pair("state", s);
            }
            // RFC 9207: the client can tell which provider answered.
            q.append_pair("iss", self.issuer());
        }
        flows.codes.insert(
            code,
            Code {
                client_id: pending.client_id,
                redirect_uri: pending.redirect_uri,
                nonce: pending.nonce,
                code_challenge: pending.code_challenge,
                who: Identity {
                    user: user.to_owned(),
                    groups: group_list,
                    email: (!email.is_empty()).then(|| email.to_owned()),
                },
                auth_time: now,
                expires_at: now.saturating_add(CODE_LIFETIME_SECS),
            },
        );
        Ok(url.into())
    }

    /// `POST /dev-idp/token`: the authorization code grant (PKCE checked,
    /// one use per code) and the refresh token grant. Returns the JSON
    /// token response.
    pub fn token(&self, p: &TokenParams, now: UnixTime) -> Result<Value, DevOAuthError> {
        let client_id = p.client_id.as_deref().unwrap_or("");
        if !matches!(client_id, DEV_CLI_CLIENT | DEV_WEB_CLIENT) {
            return Err(oauth_err(
                "invalid_client",
                if client_id.is_empty() {
                    format!("`client_id` is required: `{DEV_CLI_CLIENT}` or `{DEV_WEB_CLIENT}`")
                } else {
                    format!("client `{}` is not registered here", echo(client_id))
                },
            ));
        }
        match p.grant_type.as_deref() {
            Some("authorization_code") => self.redeem_code(p, client_id, now),
            Some("refresh_token") => self.redeem_refresh(p, client_id, now),
            Some(other) => Err(oauth_err(
                "unsupported_grant_type",
                format!(
                    "grant type `{}` is not supported; use `authorization_code` or `refresh_token`",
                    echo(other)
                ),
            )),
            None => Err(oauth_err("invalid_request", "`grant_type` is required")),
        }
    }

    fn redeem_code(
        &self,
        p: &TokenParams,
        client_id: &str,
        now: UnixTime,
    ) -> Result<Value, DevOAuthError> {
        let code = p.code.as_deref().unwrap_or("");
        // Taken out whatever follows: a code is redeemed at most once, and
        // a failed attempt uses it up too (RFC 6749 §4.1.2).
        let entry = self.flows().codes.remove(code);
        let Some(c) = entry.filter(|c| c.expires_at > now) else {
            return Err(oauth_err(
                "invalid_grant",
                "the authorization code is unknown, expired or already used; sign in again",
            ));
        };
        if c.client_id != client_id {
            return Err(oauth_err(
                "invalid_grant",
                "the authorization code was issued to another client",
            ));
        }
        if p.redirect_uri.as_deref() != Some(c.redirect_uri.as_str()) {
            return Err(oauth_err(
                "invalid_grant",
                "`redirect_uri` must be the one the code was issued for",
            ));
        }
        let verifier = p.code_verifier.as_deref().unwrap_or("");
        if !valid_verifier(verifier) || !ct_eq(&pkce_challenge(verifier), &c.code_challenge) {
            return Err(oauth_err(
                "invalid_grant",
                "`code_verifier` does not match the `code_challenge` of the request (PKCE S256)",
            ));
        }
        self.issue(
            client_id,
            &c.who,
            c.nonce.as_deref(),
            c.auth_time,
            now,
            None,
        )
    }

    fn redeem_refresh(
        &self,
        p: &TokenParams,
        client_id: &str,
        now: UnixTime,
    ) -> Result<Value, DevOAuthError> {
        let token = p.refresh_token.as_deref().unwrap_or("");
        let entry = self.flows().refresh.get(token).cloned();
        let Some(r) = entry.filter(|r| r.expires_at > now && r.client_id == client_id) else {
            return Err(oauth_err(
                "invalid_grant",
                "the refresh token is unknown, expired or revoked; sign in again",
            ));
        };
        self.issue(client_id, &r.who, None, r.auth_time, now, Some(token))
    }

    /// Mints the ID token and, unless refreshing with `refresh`, a new
    /// refresh token. The refresh token is not rotated: a sandbox may run
    /// two Git credential helpers at once.
    fn issue(
        &self,
        client_id: &str,
        who: &Identity,
        nonce: Option<&str>,
        auth_time: UnixTime,
        now: UnixTime,
        refresh: Option<&str>,
    ) -> Result<Value, DevOAuthError> {
        let server = || {
            oauth_err(
                "server_error",
                "the development identity provider could not sign",
            )
        };
        let mut extra = Map::new();
        extra.insert("preferred_username".into(), json!(who.user));
        extra.insert("auth_time".into(), json!(auth_time));
        extra.insert("azp".into(), json!(client_id));
        if let Some(n) = nonce {
            extra.insert("nonce".into(), json!(n));
        }
        let lifetime = self.id_token_lifetime;
        let id_token = self
            .mint_id_token(
                &who.user,
                &who.groups,
                who.email.as_deref(),
                client_id,
                lifetime,
                extra,
                now,
            )
            .map_err(|_| server())?;
        let refresh_token = match refresh {
            Some(r) => r.to_owned(),
            None => {
                let r = random_token().ok_or_else(server)?;
                let mut flows = self.flows();
                if !make_room(&mut flows.refresh, MAX_REFRESH, now, |r| r.expires_at) {
                    return Err(oauth_err(
                        "temporarily_unavailable",
                        "too many sign-ins are live; restart the sandbox",
                    ));
                }
                flows.refresh.insert(
                    r.clone(),
                    Refresh {
                        client_id: client_id.to_owned(),
                        who: who.clone(),
                        auth_time,
                        expires_at: now.saturating_add(REFRESH_LIFETIME_SECS),
                    },
                );
                r
            }
        };
        // The access token is opaque and accepted nowhere: the ID token is
        // what Latchkey exchanges.
        let access_token = random_token().ok_or_else(server)?;
        Ok(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs(),
            "id_token": id_token,
            "refresh_token": refresh_token,
            "scope": "openid profile email offline_access",
        }))
    }

    /// `POST /dev-idp/revoke` (RFC 7009): forgets a refresh token. Unknown
    /// tokens are not an error (§2.2); another client's token is left alone.
    pub fn revoke(&self, token: &str, client_id: &str) {
        let mut flows = self.flows();
        if flows
            .refresh
            .get(token)
            .is_some_and(|r| r.client_id == client_id)
        {
            flows.refresh.remove(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_are_literal_ips_in_canonical_form() {
        assert!(is_loopback_redirect("http://127.0.0.1:5000/callback"));
        assert!(is_loopback_redirect("http://[::1]:5000/callback"));
        for bad in [
            "https://127.0.0.1:5000/callback",
            "http://localhost:5000/callback",
            "http://127.0.0.2:5000/callback",
            "http://evil.example/callback",
            "http://user@127.0.0.1:5000/callback",
            "http://127.0.0.1:5000/callback#x",
            "http://127.0.0.1:5000/a/../callback",
            "http://0x7f.1:5000/callback",
            "http://127.0.0.1.evil.example/",
            "",
        ] {
            assert!(!is_loopback_redirect(bad), "{bad}");
        }
    }

    #[test]
    fn pkce_challenge_is_base64url_sha256() {
        // Reference value from Python's hashlib and base64.urlsafe_b64encode.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mA3oePQ57-O1QWtoKCwk-m7NJqtBzk"),
            "xZnoVV0-qD2t6e3H5_zveFWY0EiiQTNPuYUeb0f-Rx0"
        );
        assert!(valid_challenge(&pkce_challenge("x")));
        assert!(!valid_verifier("short"));
        assert!(valid_verifier(
            "dBjftJeZ4CVP-mA3oePQ57-O1QWtoKCwk-m7NJqtBzk"
        ));
    }

    #[test]
    fn names_and_emails() {
        assert!(valid_name("alice"));
        assert!(valid_name("a.b-c_d@x"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("<script>"));
        assert!(valid_email("a@b"));
        assert!(!valid_email("a"));
        assert!(!valid_email("a@b@c"));
        assert!(!valid_email("a @b"));
    }

    fn issuer() -> (tempfile::TempDir, DevIssuer) {
        let dir = tempfile::tempdir().unwrap();
        let dev = DevIssuer::load_or_create(
            &dir.path().join("k.pk8"),
            "http://127.0.0.1:8080/dev-idp".into(),
        )
        .unwrap();
        (dir, dev)
    }

    const VERIFIER: &str = "dBjftJeZ4CVP-mA3oePQ57-O1QWtoKCwk-m7NJqtBzk";
    const REDIRECT: &str = "http://127.0.0.1:5555/callback";
    const NOW: UnixTime = 1_700_000_000;

    fn request(client: &str, redirect: &str) -> AuthorizeParams {
        AuthorizeParams {
            response_type: Some("code".into()),
            client_id: Some(client.into()),
            redirect_uri: Some(redirect.into()),
            scope: Some("openid profile email offline_access".into()),
            state: Some("st".into()),
            nonce: Some("nn".into()),
            code_challenge: Some(pkce_challenge(VERIFIER)),
            code_challenge_method: Some("S256".into()),
            prompt: None,
        }
    }

    /// Signs in through the form; returns the code.
    fn code_for(dev: &DevIssuer, client: &str, redirect: &str) -> String {
        let form = dev.authorize(&request(client, redirect), NOW).unwrap();
        let back = dev
            .sign_in(&form.form_token, "alice", "developers, ops", "", NOW)
            .unwrap();
        let url = url::Url::parse(&back).unwrap();
        let q: HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "st");
        assert_eq!(q["iss"], dev.issuer());
        assert!(back.starts_with(redirect), "{back}");
        q["code"].clone()
    }

    fn redeem(
        dev: &DevIssuer,
        code: &str,
        verifier: &str,
        now: UnixTime,
    ) -> Result<Value, DevOAuthError> {
        dev.token(
            &TokenParams {
                grant_type: Some("authorization_code".into()),
                code: Some(code.into()),
                redirect_uri: Some(REDIRECT.into()),
                code_verifier: Some(verifier.into()),
                client_id: Some(DEV_CLI_CLIENT.into()),
                ..Default::default()
            },
            now,
        )
    }

    fn claims(jwt: &str) -> Value {
        let part = jwt.split('.').nth(1).unwrap();
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, part)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn the_code_flow_issues_an_id_token_for_the_client_with_the_nonce() {
        let (_d, dev) = issuer();
        let code = code_for(&dev, DEV_CLI_CLIENT, REDIRECT);
        let body = redeem(&dev, &code, VERIFIER, NOW + 1).unwrap();
        let c = claims(body["id_token"].as_str().unwrap());
        assert_eq!(c["aud"], DEV_CLI_CLIENT);
        assert_eq!(c["nonce"], "nn");
        assert_eq!(c["sub"], "alice");
        assert_eq!(c["preferred_username"], "alice");
        assert_eq!(c["groups"], json!(["developers", "ops"]));
        assert!(c.get("email").is_none());
        // The refresh token renews it, without the nonce.
        let refreshed = dev
            .token(
                &TokenParams {
                    grant_type: Some("refresh_token".into()),
                    refresh_token: body["refresh_token"].as_str().map(str::to_owned),
                    client_id: Some(DEV_CLI_CLIENT.into()),
                    ..Default::default()
                },
                NOW + 100,
            )
            .unwrap();
        let c = claims(refreshed["id_token"].as_str().unwrap());
        assert_eq!(c["iat"], NOW + 100);
        assert!(c.get("nonce").is_none());
        // Revoked, it is refused.
        dev.revoke(body["refresh_token"].as_str().unwrap(), DEV_CLI_CLIENT);
        let e = dev
            .token(
                &TokenParams {
                    grant_type: Some("refresh_token".into()),
                    refresh_token: body["refresh_token"].as_str().map(str::to_owned),
                    client_id: Some(DEV_CLI_CLIENT.into()),
                    ..Default::default()
                },
                NOW + 101,
            )
            .unwrap_err();
        assert_eq!(e.code, "invalid_grant");
    }

    #[test]
    fn a_wrong_verifier_a_reused_code_and_an_expired_code_are_refused() {
        let (_d, dev) = issuer();
        let code = code_for(&dev, DEV_CLI_CLIENT, REDIRECT);
        let e = redeem(&dev, &code, &"a".repeat(43), NOW).unwrap_err();
        assert_eq!(e.code, "invalid_grant");
        assert!(e.description.contains("code_verifier"), "{e}");
        // The failed attempt used the code up.
        let e = redeem(&dev, &code, VERIFIER, NOW).unwrap_err();
        assert!(e.description.contains("already used"), "{e}");

        let code = code_for(&dev, DEV_CLI_CLIENT, REDIRECT);
        redeem(&dev, &code, VERIFIER, NOW).unwrap();
        assert_eq!(
            redeem(&dev, &code, VERIFIER, NOW).unwrap_err().code,
            "invalid_grant"
        );

        let code = code_for(&dev, DEV_CLI_CLIENT, REDIRECT);
        let e = redeem(&dev, &code, VERIFIER, NOW + CODE_LIFETIME_SECS).unwrap_err();
        assert_eq!(e.code, "invalid_grant");
    }

    #[test]
    fn unknown_clients_foreign_redirects_and_missing_pkce_are_refused() {
        let (_d, dev) = issuer();
        let e = dev.authorize(&request("evil", REDIRECT), NOW).unwrap_err();
        assert!(
            matches!(&e, AuthorizeError::NoRedirect(m) if m.contains("`evil` is not registered")),
            "{e}"
        );
        let e = dev
            .authorize(&request(DEV_CLI_CLIENT, "https://evil.example/cb"), NOW)
            .unwrap_err();
        assert!(
            matches!(&e, AuthorizeError::NoRedirect(m) if m.contains("not a loopback redirect")),
            "{e}"
        );
        // latchkey-web: only its exact callback.
        dev.authorize(
            &request(DEV_WEB_CLIENT, "http://127.0.0.1:8080/callback"),
            NOW,
        )
        .unwrap();
        let e = dev
            .authorize(
                &request(DEV_WEB_CLIENT, "http://127.0.0.1:8080/callback/x"),
                NOW,
            )
            .unwrap_err();
        assert!(matches!(e, AuthorizeError::NoRedirect(_)));
        let e = dev
            .authorize(&request(DEV_WEB_CLIENT, REDIRECT), NOW)
            .unwrap_err();
        assert!(matches!(e, AuthorizeError::NoRedirect(_)));

        let mut plain = request(DEV_CLI_CLIENT, REDIRECT);
        plain.code_challenge_method = Some("plain".into());
        let e = dev.authorize(&plain, NOW).unwrap_err();
        let url = e.redirect_url().unwrap();
        assert!(
            url.starts_with(REDIRECT)
                && url.contains("error=invalid_request")
                && url.contains("state=st"),
            "{url}"
        );
        let mut none = request(DEV_CLI_CLIENT, REDIRECT);
        none.code_challenge = None;
        none.code_challenge_method = None;
        assert!(
            dev.authorize(&none, NOW)
                .unwrap_err()
                .redirect_url()
                .unwrap()
                .contains("PKCE")
        );

        // A code of one client is not another's.
        let code = code_for(&dev, DEV_CLI_CLIENT, REDIRECT);
        let e = dev
            .token(
                &TokenParams {
                    grant_type: Some("authorization_code".into()),
                    code: Some(code),
                    redirect_uri: Some(REDIRECT.into()),
                    code_verifier: Some(VERIFIER.into()),
                    client_id: Some(DEV_WEB_CLIENT.into()),
                    ..Default::default()
                },
                NOW,
            )
            .unwrap_err();
        assert_eq!(e.code, "invalid_grant");
        let e = dev
            .token(
                &TokenParams {
                    grant_type: Some("authorization_code".into()),
                    client_id: Some("evil".into()),
                    ..Default::default()
                },
                NOW,
            )
            .unwrap_err();
        assert_eq!(e.code, "invalid_client");
    }

    #[test]
    fn a_form_is_used_once_and_a_bad_field_keeps_it() {
        let (_d, dev) = issuer();
        let form = dev
            .authorize(&request(DEV_CLI_CLIENT, REDIRECT), NOW)
            .unwrap();
        let e = dev
            .sign_in(&form.form_token, "<b>", "", "", NOW)
            .unwrap_err();
        assert!(matches!(e, SignInError::Field(_)));
        assert!(dev.pending_form(&form.form_token, NOW).is_some());
        dev.sign_in(&form.form_token, "bob", "", "bob@example.com", NOW)
            .unwrap();
        assert_eq!(
            dev.sign_in(&form.form_token, "bob", "", "", NOW)
                .unwrap_err(),
            SignInError::StaleForm
        );
        assert_eq!(
            dev.sign_in("made-up", "bob", "", "", NOW).unwrap_err(),
            SignInError::StaleForm
        );
        let form = dev
            .authorize(&request(DEV_CLI_CLIENT, REDIRECT), NOW)
            .unwrap();
        assert_eq!(
            dev.sign_in(&form.form_token, "bob", "", "", NOW + FORM_LIFETIME_SECS)
                .unwrap_err(),
            SignInError::StaleForm
        );
    }
}
