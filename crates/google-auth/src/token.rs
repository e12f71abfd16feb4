use std::fmt;

use serde::Deserialize;

/// An OAuth bearer token for Google APIs.
///
/// `Debug` shows only the expiry: the secret must never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    secret: String,
    expires_at_unix: Option<i64>,
}

impl AccessToken {
    pub(crate) fn new(secret: String, expires_at_unix: Option<i64>) -> Self {
        Self {
            secret,
            expires_at_unix,
        }
    }

    /// The bearer value to send upstream; never log it.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// When the token stops working (Unix seconds), or `None` for a token
    /// that does not expire (the emulator's `owner`).
    pub fn expires_at_unix(&self) -> Option<i64> {
        self.expires_at_unix
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"<redacted>")
            .field("expires_at_unix", &self.expires_at_unix)
            .finish()
    }
}

/// The members Latchkey reads from a token response; the OAuth token endpoint
/// and the metadata server answer with the same shape.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<i64>,
    token_type: Option<String>,
}

/// Parses a 2xx token response received at `now` (Unix seconds). Errors are
/// short reasons that never quote the body (it holds the token).
pub(crate) fn parse_token_response(body: &[u8], now: i64) -> Result<AccessToken, String> {
    let resp: TokenResponse =
        serde_json::from_slice(body).map_err(|_| "the body is not a JSON token response")?;
    let secret = resp
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or("`access_token` is missing")?;
    // INVARIANT: a cached secret is always a valid header value, so
    // `authorization()` cannot fail on a token that was accepted here.
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("`access_token` contains characters not allowed in a header".into());
    }
    let expires_in = resp.expires_in.ok_or("`expires_in` is missing")?;
    if expires_in <= 0 {
        return Err(format!(
            "`expires_in` is {expires_in}; the token is already expired"
        ));
    }
    if let Some(kind) = resp.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(format!("`token_type` is `{kind}`, not `Bearer`"));
    }
    Ok(AccessToken::new(
        secret,
        Some(now.saturating_add(expires_in)),
    ))
}

/// The OAuth error members of a refusal (RFC 6749 §5.2), formatted as the
/// tail of [`crate::AuthError::Rejected`]: `": invalid_grant: Invalid JWT…"`.
/// Empty when the body is not an OAuth error. Each member is cut to a
/// bounded length so a misbehaving endpoint cannot flood the logs.
pub(crate) fn oauth_error_detail(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct OAuthError {
        error: Option<String>,
        error_description: Option<String>,
    }
    let Ok(e) = serde_json::from_slice::<OAuthError>(body) else {
        return String::new();
    };
    [e.error, e.error_description]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .map(|s| format!(": {}", clip(&s, 300)))
        .collect()
}

fn clip(s: &str, max_chars: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() > max_chars {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_token_response() {
        let t = parse_token_response(
            br#"{"access_token":"ya29.abc","expires_in":3599,"token_type":"Bearer"}"#,
            1000,
        );
        assert_eq!(t, Ok(AccessToken::new("ya29.abc".into(), Some(4599))));
    }

    #[test]
    fn rejects_unusable_responses_without_quoting_them() {
        let cases: [(&[u8], &str); 5] = [
            (b"ya29.secret", "not a JSON"),
            (br#"{"expires_in":10}"#, "`access_token` is missing"),
            (
                br#"{"access_token":"ya29.secret"}"#,
                "`expires_in` is missing",
            ),
            (
                br#"{"access_token":"ya29.secret","expires_in":10,"token_type":"MAC"}"#,
                "not `Bearer`",
            ),
            (
                br#"{"access_token":"ya29 secret","expires_in":10}"#,
                "not allowed in a header",
            ),
        ];
        for (body, want) in cases {
            let err = parse_token_response(body, 0).err().unwrap_or_default();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
            assert!(!err.contains("secret"), "{err:?} quotes the token");
        }
    }

    #[test]
    fn formats_oauth_errors() {
        assert_eq!(
            oauth_error_detail(br#"{"error":"invalid_grant","error_description":"Bad\nJWT"}"#),
            ": invalid_grant: Bad JWT"
        );
        assert_eq!(oauth_error_detail(b"<html>502</html>"), "");
    }
}
