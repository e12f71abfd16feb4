//! Bounded HTTP fetches of discovery documents and JWKS, and the pure
//! cache-lifetime rule.

use std::time::Duration;

use serde::Deserialize;

use crate::config::check_url;

/// Per-request time-out (connect through last body byte).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest discovery document or JWKS accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Shortest JWKS cache lifetime, whatever Cache-Control says.
pub const MIN_CACHE: Duration = Duration::from_secs(60);
/// Longest JWKS cache lifetime, whatever Cache-Control says.
pub const MAX_CACHE: Duration = Duration::from_secs(24 * 3600);
/// JWKS cache lifetime when the response has no usable `max-age`.
pub const DEFAULT_CACHE: Duration = Duration::from_secs(300);

/// How long a JWKS response may be cached, from its Cache-Control header.
pub fn cache_lifetime(cache_control: Option<&str>) -> Duration {
    let Some(cc) = cache_control else {
        return DEFAULT_CACHE;
    };
    let mut max_age = None;
    for directive in cc.split(',') {
        let d = directive.trim().to_ascii_lowercase();
        if d == "no-store" || d == "no-cache" {
            return MIN_CACHE;
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            max_age = v.trim_matches('"').parse::<u64>().ok();
        }
    }
    match max_age {
        Some(secs) => Duration::from_secs(secs).clamp(MIN_CACHE, MAX_CACHE),
        None => DEFAULT_CACHE,
    }
}

/// A fetched body and its Cache-Control header.
pub(crate) struct Fetched {
    pub(crate) body: Vec<u8>,
    pub(crate) cache_control: Option<String>,
}

/// GETs `url` (http or https only) with a time-out and a body cap.
/// Errors are short descriptions for `IssuerUnavailable`.
pub(crate) async fn get(http: &reqwest::Client, url: &str) -> Result<Fetched, String> {
    let parsed = check_url(url)?;
    let mut resp = http
        .get(parsed)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("fetching `{url}` failed: {}", describe(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("`{url}` answered HTTP {}", status.as_u16()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(format!(
            "`{url}` body is larger than {MAX_BODY_BYTES} bytes"
        ));
    }
    let cache_control = resp
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading `{url}` failed: {}", describe(&e)))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!(
                "`{url}` body is larger than {MAX_BODY_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        body,
        cache_control,
    })
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            src = inner.source();
        }
        s
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Fetches `{issuer}/.well-known/openid-configuration` and returns its
/// `jwks_uri`, after checking that the document names the same issuer.
pub(crate) async fn discover_jwks_uri(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<String, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let fetched = get(http, &url).await?;
    let doc: Discovery = serde_json::from_slice(&fetched.body)
        .map_err(|e| format!("discovery document at `{url}` is invalid: {e}"))?;
    if doc.issuer != issuer {
        return Err(format!(
            "discovery document names issuer `{}`, not `{issuer}`",
            doc.issuer
        ));
    }
    check_url(&doc.jwks_uri).map_err(|e| format!("discovery `jwks_uri`: {e}"))?;
    Ok(doc.jwks_uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_lifetimes() {
        assert_eq!(cache_lifetime(None), DEFAULT_CACHE);
        assert_eq!(cache_lifetime(Some("public")), DEFAULT_CACHE);
        assert_eq!(
            cache_lifetime(Some("public, max-age=600")),
            Duration::from_secs(600)
        );
        assert_eq!(cache_lifetime(Some("max-age=5")), MIN_CACHE);
        assert_eq!(cache_lifetime(Some("max-age=999999999")), MAX_CACHE);
        assert_eq!(cache_lifetime(Some("max-age=x")), DEFAULT_CACHE);
        assert_eq!(cache_lifetime(Some("no-store")), MIN_CACHE);
        assert_eq!(
            cache_lifetime(Some("Max-Age=120")),
            Duration::from_secs(120)
        );
    }
}
