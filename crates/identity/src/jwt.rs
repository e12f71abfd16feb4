//! Pure parsing of compact JWS tokens: no I/O, no signature checks.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::IdentityError;

/// The largest token accepted, in bytes (16 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A JWT split and decoded but NOT verified: nothing in it may be trusted yet.
///
/// Exists so the verifier can pick the issuer and key, and so the fuzz target
/// has one pure function to exercise.
#[derive(Debug, Clone, PartialEq)]
pub struct UnverifiedJwt {
    /// The header's `alg`, as written.
    pub alg: String,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// The whole decoded header.
    pub header: Map<String, Value>,
    /// The decoded claims.
    pub claims: Map<String, Value>,
    /// `base64url(header) "." base64url(claims)`: the bytes that were signed.
    pub signing_input: String,
    /// The signature part, still base64url-encoded.
    pub signature_b64: String,
}

impl UnverifiedJwt {
    /// The unverified `iss` claim, when it is a string.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// Splits and decodes a compact JWS without verifying it.
///
/// Checks the size bound, the three-part shape, base64url and that header and
/// claims are JSON objects with a string `alg`. Never panics on any input.
pub fn parse_unverified(token: &str) -> Result<UnverifiedJwt, IdentityError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(IdentityError::TokenTooLarge {
            size: token.len(),
            max: MAX_TOKEN_BYTES,
        });
    }
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdentityError::malformed(
            "expected three dot-separated parts (encrypted tokens are not supported)",
        ));
    };
    if h.is_empty() || c.is_empty() {
        return Err(IdentityError::malformed("header or claims part is empty"));
    }
    let header = decode_object(h, "header")?;
    let claims = decode_object(c, "claims")?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err(IdentityError::malformed("header has no string `alg`")),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(IdentityError::malformed("header `kid` is not a string")),
    };
    if header.contains_key("crit") {
        // RFC 7515 4.1.11: we understand no extensions, so must reject.
        return Err(IdentityError::malformed(
            "header has `crit` extensions, which are not supported",
        ));
    }
    if s.bytes()
        .any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return Err(IdentityError::malformed("signature is not base64url"));
    }
    Ok(UnverifiedJwt {
        alg,
        kid,
        header,
        claims,
        signing_input: format!("{h}.{c}"),
        signature_b64: s.to_owned(),
    })
}

fn decode_object(part: &str, what: &str) -> Result<Map<String, Value>, IdentityError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.as_bytes())
        .map_err(|_| IdentityError::malformed(format!("{what} is not base64url")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(IdentityError::malformed(format!(
            "{what} is not a JSON object"
        ))),
        Err(_) => Err(IdentityError::malformed(format!(
            "{what} is not valid JSON"
        ))),
    }
}

/// The decoded length of a base64url string, if it decodes.
pub(crate) fn b64_decoded_len(s: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(s.as_bytes()).ok().map(|v| v.len())
}

/// Base64url-encodes `bytes` without padding (JOSE's encoding).
pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &str) -> String {
        b64(v.as_bytes())
    }

    #[test]
    fn parses_a_token() {
        let t = format!(
            "{}.{}.c2ln",
            enc(r#"{"alg":"RS256","kid":"k1"}"#),
            enc(r#"{"iss":"https://i","sub":"a"}"#)
        );
        let j = parse_unverified(&t).unwrap();
        assert_eq!(j.alg, "RS256");
        assert_eq!(j.kid.as_deref(), Some("k1"));
        assert_eq!(j.issuer(), Some("https://i"));
        assert_eq!(j.signature_b64, "c2ln");
    }

    #[test]
    fn rejects_bad_shapes() {
        let h = enc(r#"{"alg":"RS256"}"#);
        let c = enc("{}");
        for bad in [
            String::new(),
            "a.b".into(),
            format!("{h}.{c}.s.x"),
            format!("{h}.{c}.s+/"),
            format!("{}.{c}.s", enc("[1]")),
            format!("{}.{c}.s", enc(r#"{"alg":1}"#)),
            format!("{}.{c}.s", enc(r#"{"alg":"RS256","kid":3}"#)),
            format!("{}.{c}.s", enc(r#"{"alg":"RS256","crit":["x"]}"#)),
            format!("{h}.{}.s", enc("nope")),
            format!("{h}.%%%.s"),
            format!(".{c}.s"),
        ] {
            let err = parse_unverified(&bad).unwrap_err();
            assert_eq!(err.code(), "malformed", "{bad}: {err}");
        }
    }

    #[test]
    fn size_bound() {
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            parse_unverified(&big),
            Err(IdentityError::TokenTooLarge { .. })
        ));
    }
}
