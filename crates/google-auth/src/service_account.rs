//! Service-account key files and the RFC 7523 JWT bearer assertion.

use std::fmt;
use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::AuthError;

/// The `grant_type` of the OAuth 2.0 JWT bearer grant (RFC 7523 §2.1).
pub(crate) const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Lifetime of a signed assertion; Google accepts at most one hour.
const ASSERTION_LIFETIME_SECS: i64 = 3600;

/// A loaded service-account key. The PEM text is not kept; only the parsed
/// signing key is.
pub(crate) struct ServiceAccountKey {
    pub(crate) client_email: String,
    pub(crate) token_uri: String,
    private_key_id: String,
    key: EncodingKey,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// The members of a Google key file Latchkey reads; all are required.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

impl ServiceAccountKey {
    /// Reads and checks the key file at `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, AuthError> {
        let bad = |reason: String| AuthError::KeyFile {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        Self::parse(&text).map_err(bad)
    }

    /// Checks a key file's contents; errors are reasons naming the field.
    fn parse(text: &[u8]) -> Result<Self, String> {
        // serde_json's error text can quote the input, which holds the
        // private key, so only its position is reported.
        let file: KeyFile = serde_json::from_slice(text).map_err(|e| {
            format!(
                "it is not a JSON key file (line {}, column {}); download a JSON key for the service account",
                e.line(),
                e.column()
            )
        })?;
        let required = |value: Option<String>, name: &str| {
            value
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("the `{name}` field is missing or empty"))
        };
        let kind = required(file.kind, "type")?;
        if kind != "service_account" {
            return Err(format!(
                "`type` is `{kind}`, not `service_account`; Latchkey needs a service-account key"
            ));
        }
        let client_email = required(file.client_email, "client_email")?;
        let private_key = required(file.private_key, "private_key")?;
        let private_key_id = required(file.private_key_id, "private_key_id")?;
        let token_uri = required(file.token_uri, "token_uri")?;
        check_token_uri(&token_uri)?;
        let key = EncodingKey::from_rsa_pem(private_key.as_bytes()).map_err(|_| {
            "the `private_key` field is not a PEM-encoded RSA private key".to_owned()
        })?;
        Ok(Self {
            client_email,
            token_uri,
            private_key_id,
            key,
        })
    }

    /// A signed assertion asking for `scope` (space-separated), issued at `now`.
    pub(crate) fn assertion(&self, scope: &str, now: i64) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.private_key_id.clone());
        let claims = AssertionClaims {
            iss: &self.client_email,
            scope,
            aud: &self.token_uri,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| AuthError::Signing(e.to_string()))
    }
}

/// The assertion is a bearer credential for an hour, so it only travels over
/// HTTPS, or plain HTTP to a loopback address (a local stand-in).
fn check_token_uri(uri: &str) -> Result<(), String> {
    let url = url::Url::parse(uri).map_err(|e| format!("`token_uri` `{uri}` is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "`token_uri` `{uri}` must be an https URL (plain http is allowed only to a loopback address)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(json: &str) -> String {
        ServiceAccountKey::parse(json.as_bytes())
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn names_the_missing_field() {
        assert_eq!(reason("{}"), "the `type` field is missing or empty");
        assert_eq!(
            reason(r#"{"type":"service_account","client_email":"a@b"}"#),
            "the `private_key` field is missing or empty"
        );
        assert!(reason(r#"{"type":"authorized_user"}"#).contains("not `service_account`"));
    }

    #[test]
    fn does_not_quote_a_broken_file() {
        let r = reason(r#"{"private_key": "-----BEGIN PRIVATE KEY-----\nMIIsecret"#);
        assert!(r.starts_with("it is not a JSON key file"), "{r}");
        assert!(!r.contains("MIIsecret"), "{r}");
    }

    #[test]
    fn token_uri_must_be_https_unless_loopback() {
        assert!(check_token_uri("https://oauth2.googleapis.com/token").is_ok());
        assert!(check_token_uri("http://127.0.0.1:8080/token").is_ok());
        assert!(check_token_uri("http://localhost/token").is_ok());
        assert!(check_token_uri("http://oauth2.googleapis.com/token").is_err());
        assert!(check_token_uri("oauth2.googleapis.com").is_err());
    }
}
