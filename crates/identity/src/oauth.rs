//! The client side of OAuth 2.0 and OpenID Connect that sign-in needs: the
//! provider's metadata (discovery), PKCE (RFC 7636, S256 only), the
//! authorization URL, the token endpoint (authorization code, refresh token,
//! device code: RFC 6749, RFC 8628), token revocation (RFC 7009) and the
//! RP-initiated logout URL.
//!
//! Used by the gateway's browser sign-in (a confidential client) and by
//! `latchkey login` (a public client). It does not verify ID tokens:
//! [`crate::IssuerSet::verify`] does, with the issuer's keys, and the caller
//! checks `nonce`. Every fetch is bounded in time and size, like discovery
//! and JWKS fetches ([`crate::FETCH_TIMEOUT`], [`crate::MAX_BODY_BYTES`]).

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use crate::fetch::{FETCH_TIMEOUT, MAX_BODY_BYTES};

/// Why a call to the provider did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// The provider could not be reached, or answered something unreadable.
    #[error("the identity provider at `{url}` is unavailable: {reason}")]
    Unavailable {
        /// The URL that was called.
        url: String,
        /// What went wrong (no secrets).
        reason: String,
    },
    /// The provider's metadata lacks something sign-in needs, or is wrong.
    #[error("the identity provider `{issuer}` cannot be used for sign-in: {reason}")]
    Unsupported {
        /// The issuer URL.
        issuer: String,
        /// What is missing or wrong.
        reason: String,
    },
    /// The provider refused the request (an OAuth `error` response).
    #[error("the identity provider refused: {code}{}", description_suffix(.description))]
    Refused {
        /// The OAuth error code, e.g. `invalid_grant`.
        code: String,
        /// The provider's `error_description`, bounded.
        description: Option<String>,
    },
    /// The user (or the provider on their behalf) denied the request
    /// (`access_denied`).
    #[error("sign-in was denied at the identity provider")]
    Denied,
    /// A device code ran out before the user finished (`expired_token`).
    #[error("the sign-in code expired before it was used; start again")]
    Expired,
    /// The system's random source failed.
    #[error("no randomness available")]
    Random,
}

fn description_suffix(d: &Option<String>) -> String {
    match d {
        Some(d) if !d.is_empty() => format!(" ({})", latchkey_core::bounded(d, 200)),
        _ => String::new(),
    }
}

/// What sign-in needs from an issuer's discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderMetadata {
    /// The issuer URL, equal to the one asked for.
    pub issuer: String,
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: String,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: String,
    /// RP-initiated logout, when offered.
    pub end_session_endpoint: Option<String>,
    /// RFC 8628, when offered.
    pub device_authorization_endpoint: Option<String>,
    /// RFC 7009, when offered.
    pub revocation_endpoint: Option<String>,
    /// The issuer's keys.
    pub jwks_uri: Option<String>,
    /// PKCE methods the provider says it supports (may be empty when it
    /// does not say).
    pub code_challenge_methods_supported: Vec<String>,
}

#[derive(Deserialize)]
struct RawMetadata {
    issuer: String,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    end_session_endpoint: Option<String>,
    device_authorization_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
    jwks_uri: Option<String>,
    #[serde(default)]
    code_challenge_methods_supported: Vec<String>,
}

/// The discovery document's URL for `issuer` (OIDC Discovery 1.0 §4).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Reads a discovery document: the issuer must equal `issuer` exactly (a
/// mix-up defence, OIDC Discovery §4.3), the endpoints must be http(s)
/// URLs, and a provider that lists PKCE methods must list `S256`.
pub fn parse_metadata(issuer: &str, body: &[u8]) -> Result<ProviderMetadata, OAuthError> {
    let unsupported = |reason: &str| OAuthError::Unsupported {
        issuer: issuer.to_owned(),
        reason: reason.to_owned(),
    };
    let raw: RawMetadata = serde_json::from_slice(body)
        .map_err(|_| unsupported("its discovery document is not valid JSON metadata"))?;
    if raw.issuer != issuer {
        return Err(OAuthError::Unsupported {
            issuer: issuer.to_owned(),
            reason: format!(
                "its discovery document names the issuer `{}`; the configured issuer must match it exactly",
                latchkey_core::echo(&raw.issuer)
            ),
        });
    }
    let endpoint = |name: &str, v: Option<String>| -> Result<Option<String>, OAuthError> {
        match v {
            None => Ok(None),
            Some(u) if is_http_url(&u) => Ok(Some(u)),
            Some(_) => Err(OAuthError::Unsupported {
                issuer: issuer.to_owned(),
                reason: format!("`{name}` is not an http(s) URL"),
            }),
        }
    };
    let authorization_endpoint = endpoint("authorization_endpoint", raw.authorization_endpoint)?
        .ok_or_else(|| unsupported("it has no `authorization_endpoint`"))?;
    let token_endpoint = endpoint("token_endpoint", raw.token_endpoint)?
        .ok_or_else(|| unsupported("it has no `token_endpoint`"))?;
    if !raw.code_challenge_methods_supported.is_empty()
        && !raw
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
    {
        return Err(unsupported(
            "it does not support PKCE with `S256` (`code_challenge_methods_supported`)",
        ));
    }
    Ok(ProviderMetadata {
        issuer: raw.issuer,
        authorization_endpoint,
        token_endpoint,
        end_session_endpoint: endpoint("end_session_endpoint", raw.end_session_endpoint)?,
        device_authorization_endpoint: endpoint(
            "device_authorization_endpoint",
            raw.device_authorization_endpoint,
        )?,
        revocation_endpoint: endpoint("revocation_endpoint", raw.revocation_endpoint)?,
        jwks_uri: endpoint("jwks_uri", raw.jwks_uri)?,
        code_challenge_methods_supported: raw.code_challenge_methods_supported,
    })
}

fn is_http_url(u: &str) -> bool {
    url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.has_host())
}

/// Fetches and reads `issuer`'s discovery document.
pub async fn discover(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<ProviderMetadata, OAuthError> {
    let url = discovery_url(issuer);
    let fetched =
        crate::fetch::get(http, &url)
            .await
            .map_err(|reason| OAuthError::Unavailable {
                url: url.clone(),
                reason,
            })?;
    parse_metadata(issuer, &fetched.body)
}

/// 32 random bytes, base64url: a `state`, a `nonce`, a session id.
pub fn random_token() -> Result<String, OAuthError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| OAuthError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A PKCE pair (RFC 7636): the verifier stays with the client, the
/// challenge (its SHA-256, base64url) goes to the authorization endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkce {
    /// 43 characters of base64url (32 random bytes).
    pub verifier: String,
    /// `BASE64URL(SHA256(verifier))`.
    pub challenge: String,
}

impl std::fmt::Debug for Pkce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkce")
            .field("challenge", &self.challenge)
            .finish_non_exhaustive()
    }
}

impl Pkce {
    /// A fresh pair.
    pub fn generate() -> Result<Self, OAuthError> {
        let verifier = random_token()?;
        Ok(Self {
            challenge: pkce_challenge(&verifier),
            verifier,
        })
    }
}

/// The S256 challenge of `verifier`.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

/// Who the client is at the token endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// The client id.
    pub client_id: String,
    /// The secret of a confidential client (sent with HTTP Basic, RFC 6749
    /// §2.3.1); `None` for a public client such as `latchkey login`.
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "…"))
            .finish()
    }
}

/// The parameters of an authorization request (code flow with PKCE).
#[derive(Debug, Clone)]
pub struct AuthorizationRequest<'a> {
    /// The client id.
    pub client_id: &'a str,
    /// Where the provider sends the browser back.
    pub redirect_uri: &'a str,
    /// Space-separated scopes, `openid` among them.
    pub scope: &'a str,
    /// The CSRF binding of the round trip.
    pub state: &'a str,
    /// Bound into the ID token (OIDC).
    pub nonce: Option<&'a str>,
    /// The PKCE S256 challenge.
    pub code_challenge: &'a str,
    /// `login` or `select_account` to make the provider ask again.
    pub prompt: Option<&'a str>,
}

/// The URL the browser is sent to.
pub fn authorization_url(
    meta: &ProviderMetadata,
    req: &AuthorizationRequest<'_>,
) -> Result<String, OAuthError> {
    let mut url =
        url::Url::parse(&meta.authorization_endpoint).map_err(|_| OAuthError::Unsupported {
            issuer: meta.issuer.clone(),
            reason: "`authorization_endpoint` is not a URL".into(),
        })?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", req.client_id)
            .append_pair("redirect_uri", req.redirect_uri)
            .append_pair("scope", req.scope)
            .append_pair("state", req.state)
            .append_pair("code_challenge", req.code_challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(n) = req.nonce {
            q.append_pair("nonce", n);
        }
        if let Some(p) = req.prompt {
            q.append_pair("prompt", p);
        }
    }
    Ok(url.into())
}

/// A token endpoint's answer.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TokenResponse {
    /// The access token, if any (Latchkey does not use it).
    #[serde(default)]
    pub access_token: Option<String>,
    /// The ID token (OIDC).
    #[serde(default)]
    pub id_token: Option<String>,
    /// A refresh token, when the provider grants one.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Seconds the access token lives.
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// Usually `Bearer`.
    #[serde(default)]
    pub token_type: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("id_token", &self.id_token.as_ref().map(|_| "…"))
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "…"))
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Exchanges an authorization code (with its PKCE verifier).
pub async fn exchange_code(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client: &ClientCredentials,
    code: &str,
    redirect_uri: &str,
    code_verifier: &str,
) -> Result<TokenResponse, OAuthError> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", code_verifier),
    ];
    let body = post_form(http, &meta.token_endpoint, client, &form).await?;
    parse_token_response(&meta.token_endpoint, &body)
}

/// Uses a refresh token. The answer may carry a new refresh token (rotation);
/// the caller keeps the old one only when it does not.
pub async fn refresh(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client: &ClientCredentials,
    refresh_token: &str,
) -> Result<TokenResponse, OAuthError> {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    let body = post_form(http, &meta.token_endpoint, client, &form).await?;
    parse_token_response(&meta.token_endpoint, &body)
}

/// A started device authorization (RFC 8628 §3.2).
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct DeviceAuthorization {
    /// Polled with; never shown.
    pub device_code: String,
    /// What the user types.
    pub user_code: String,
    /// Where the user types it.
    pub verification_uri: String,
    /// The same with the code filled in, when offered.
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    /// Seconds the codes live.
    pub expires_in: u64,
    /// Seconds between polls (default 5).
    #[serde(default = "default_interval")]
    pub interval: u64,
}

fn default_interval() -> u64 {
    5
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// Starts the device authorization grant.
pub async fn start_device(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client: &ClientCredentials,
    scope: &str,
) -> Result<DeviceAuthorization, OAuthError> {
    let endpoint = meta
        .device_authorization_endpoint
        .as_deref()
        .ok_or_else(|| OAuthError::Unsupported {
            issuer: meta.issuer.clone(),
            reason: "it offers no device authorization endpoint".into(),
        })?;
    let body = post_form(
        http,
        endpoint,
        client,
        &[("client_id", client.client_id.as_str()), ("scope", scope)],
    )
    .await?;
    serde_json::from_slice(&body).map_err(|_| OAuthError::Unavailable {
        url: endpoint.to_owned(),
        reason: "the device authorization answer is not the JSON RFC 8628 describes".into(),
    })
}

/// One poll of a device authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePoll {
    /// The user has not finished yet; poll again after the interval.
    Pending,
    /// Poll less often: add 5 seconds to the interval (RFC 8628 §3.5).
    SlowDown,
    /// Signed in.
    Done(TokenResponse),
}

/// Polls the token endpoint with a device code.
pub async fn poll_device(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client: &ClientCredentials,
    device_code: &str,
) -> Result<DevicePoll, OAuthError> {
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code),
        ("client_id", client.client_id.as_str()),
    ];
    match post_form(http, &meta.token_endpoint, client, &form).await {
        Ok(body) => Ok(DevicePoll::Done(parse_token_response(
            &meta.token_endpoint,
            &body,
        )?)),
        Err(OAuthError::Refused { code, .. }) if code == "authorization_pending" => {
            Ok(DevicePoll::Pending)
        }
        Err(OAuthError::Refused { code, .. }) if code == "slow_down" => Ok(DevicePoll::SlowDown),
        Err(e) => Err(e),
    }
}

/// Revokes a refresh token (RFC 7009), when the provider has an endpoint
/// for it; `Ok(false)` when it has none.
pub async fn revoke(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client: &ClientCredentials,
    refresh_token: &str,
) -> Result<bool, OAuthError> {
    let Some(endpoint) = meta.revocation_endpoint.as_deref() else {
        return Ok(false);
    };
    post_form(
        http,
        endpoint,
        client,
        &[
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
        ],
    )
    .await?;
    Ok(true)
}

/// The RP-initiated logout URL (OIDC RP-Initiated Logout 1.0), when the
/// provider offers one.
pub fn end_session_url(
    meta: &ProviderMetadata,
    id_token_hint: &str,
    post_logout_redirect_uri: Option<&str>,
    state: Option<&str>,
) -> Option<String> {
    let mut url = url::Url::parse(meta.end_session_endpoint.as_deref()?).ok()?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("id_token_hint", id_token_hint);
        if let Some(r) = post_logout_redirect_uri {
            q.append_pair("post_logout_redirect_uri", r);
        }
        if let Some(s) = state {
            q.append_pair("state", s);
        }
    }
    Some(url.into())
}

/// A JWT's `exp` (seconds since the epoch), read without verifying
/// anything: for deciding when to renew a token this process holds, never
/// for accepting one.
pub fn unverified_expiry(jwt: &str) -> Option<u64> {
    let claims = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(claims).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.get("exp")?.as_u64()
}

/// Reads a token endpoint's JSON answer.
fn parse_token_response(url: &str, body: &[u8]) -> Result<TokenResponse, OAuthError> {
    serde_json::from_slice(body).map_err(|_| OAuthError::Unavailable {
        url: url.to_owned(),
        reason: "the token endpoint's answer is not a JSON token response".into(),
    })
}

/// POSTs a form, authenticating a confidential client with HTTP Basic
/// (`client_secret_basic`) and a public one with `client_id` in the form.
/// An OAuth error answer becomes [`OAuthError::Refused`] (or `Denied`,
/// `Expired`).
async fn post_form(
    http: &reqwest::Client,
    url: &str,
    client: &ClientCredentials,
    form: &[(&str, &str)],
) -> Result<Vec<u8>, OAuthError> {
    let unavailable = |reason: String| OAuthError::Unavailable {
        url: url.to_owned(),
        reason,
    };
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    let mut req = http
        .post(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(FETCH_TIMEOUT);
    match &client.client_secret {
        Some(secret) => {
            // RFC 6749 §2.3.1: both parts form-urlencoded before Basic.
            let user: String =
                url::form_urlencoded::byte_serialize(client.client_id.as_bytes()).collect();
            let pass: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            req = req.basic_auth(user, Some(pass));
        }
        None => {
            if !fields.iter().any(|(k, _)| *k == "client_id") {
                fields.push(("client_id", client.client_id.as_str()));
            }
        }
    }
    let mut resp = req
        .form(&fields)
        .send()
        .await
        .map_err(|e| unavailable(format!("the request failed ({})", error_kind(&e))))?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| unavailable(format!("reading the answer failed ({})", error_kind(&e))))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(unavailable(format!(
                "the answer is larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    if status.is_success() {
        return Ok(body);
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
        #[serde(default)]
        error_description: Option<String>,
    }
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) if e.error == "access_denied" => Err(OAuthError::Denied),
        Ok(e) if e.error == "expired_token" => Err(OAuthError::Expired),
        Ok(e) => Err(OAuthError::Refused {
            code: latchkey_core::bounded(&e.error, 64).to_string(),
            description: e.error_description,
        }),
        Err(_) => Err(unavailable(format!("it answered HTTP {}", status.as_u16()))),
    }
}

fn error_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "transport error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn metadata_must_name_the_same_issuer_and_offer_s256() {
        let doc = |issuer: &str, methods: &str| {
            format!(
                r#"{{"issuer":"{issuer}","authorization_endpoint":"https://idp/a","token_endpoint":"https://idp/t","code_challenge_methods_supported":{methods}}}"#
            )
        };
        assert!(
            parse_metadata("https://idp", doc("https://idp", r#"["S256"]"#).as_bytes()).is_ok()
        );
        assert!(parse_metadata("https://idp", doc("https://idp", "[]").as_bytes()).is_ok());
        let mixup = parse_metadata("https://idp", doc("https://evil", "[]").as_bytes());
        assert!(
            matches!(&mixup, Err(OAuthError::Unsupported { reason, .. }) if reason.contains("`https://evil`")),
            "{mixup:?}"
        );
        let plain = parse_metadata("https://idp", doc("https://idp", r#"["plain"]"#).as_bytes());
        assert!(matches!(plain, Err(OAuthError::Unsupported { .. })));
        let no_token = parse_metadata(
            "https://idp",
            br#"{"issuer":"https://idp","authorization_endpoint":"https://idp/a"}"#,
        );
        assert!(matches!(no_token, Err(OAuthError::Unsupported { .. })));
        let js = parse_metadata(
            "https://idp",
            br#"{"issuer":"https://idp","authorization_endpoint":"javascript:alert(1)","token_endpoint":"https://idp/t"}"#,
        );
        assert!(matches!(js, Err(OAuthError::Unsupported { .. })));
    }

    #[test]
    fn the_authorization_url_carries_pkce_state_and_nonce() {
        let meta = parse_metadata(
            "https://idp",
            br#"{"issuer":"https://idp","authorization_endpoint":"https://idp/auth?x=1","token_endpoint":"https://idp/t"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let url = authorization_url(
            &meta,
            &AuthorizationRequest {
                client_id: "c 1",
                redirect_uri: "https://gw/callback",
                scope: "openid email",
                state: "s",
                nonce: Some("n"),
                code_challenge: "ch",
                prompt: None,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(url.starts_with("https://idp/auth?x=1&response_type=code&client_id=c+1&"));
        for part in [
            "redirect_uri=https%3A%2F%2Fgw%2Fcallback",
            "scope=openid+email",
            "state=s",
            "nonce=n",
            "code_challenge=ch",
            "code_challenge_method=S256",
        ] {
            assert!(url.contains(part), "{url} lacks {part}");
        }
    }

    #[test]
    fn unverified_expiry_reads_exp_only() {
        let claims = URL_SAFE_NO_PAD.encode(br#"{"exp":1700000000}"#);
        assert_eq!(
            unverified_expiry(&format!("e30.{claims}.sig")),
            Some(1_700_000_000)
        );
        assert_eq!(unverified_expiry("garbage"), None);
    }
}
