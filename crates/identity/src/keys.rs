//! Pure JWKS handling: which published keys we can use, and which algorithm
//! fits which key. No I/O.

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::IdentityError;

/// Every algorithm Latchkey can ever accept from an external issuer.
pub(crate) const SUPPORTED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// The default `algorithms` of an issuer.
pub(crate) const DEFAULT_ALGORITHMS: &[&str] = &["RS256", "PS256", "ES256", "ES384", "EdDSA"];

/// True for algorithms that are never accepted, whatever the configuration.
pub(crate) fn is_forbidden_alg(alg: &str) -> bool {
    alg.eq_ignore_ascii_case("none") || alg.to_ascii_uppercase().starts_with("HS")
}

/// The asymmetric JOSE algorithm named `alg`, if Latchkey supports it.
pub(crate) fn parse_alg(alg: &str) -> Option<Algorithm> {
    Some(match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The type of a published key, which fixes the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyType {
    fn describe(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::P256 => "EC P-256",
            Self::P384 => "EC P-384",
            Self::Ed25519 => "OKP Ed25519",
        }
    }

    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::P256 => alg == ES256,
            Self::P384 => alg == ES384,
            Self::Ed25519 => alg == EdDSA,
        }
    }
}

/// One usable public key from an issuer's JWKS.
#[derive(Debug, Clone)]
pub(crate) struct PublicKey {
    pub(crate) kid: Option<String>,
    pub(crate) key_type: KeyType,
    /// The JWK's own `alg`, when it names one.
    pub(crate) alg: Option<String>,
    pub(crate) key: DecodingKey,
}

impl PublicKey {
    /// Checks that `alg` (already known to be supported) may be verified
    /// with this key.
    pub(crate) fn check_alg(&self, alg_name: &str, alg: Algorithm) -> Result<(), IdentityError> {
        let own_ok = self.alg.as_deref().is_none_or(|a| a == alg_name);
        if own_ok && self.key_type.fits(alg) {
            Ok(())
        } else {
            Err(IdentityError::AlgorithmKeyMismatch {
                alg: alg_name.to_owned(),
                kty: self.key_type.describe().to_owned(),
            })
        }
    }
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// Parses a JWKS document, keeping the signature keys Latchkey can use and
/// silently skipping the rest (encryption keys, unknown types, bad members),
/// as issuers often publish keys for other purposes.
///
/// Fails only when the document is not a JWKS at all.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<Vec<PublicKey>, String> {
    let raw: RawJwks =
        serde_json::from_slice(body).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
    Ok(raw
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<RawJwk>(v).ok())
        .filter_map(convert)
        .collect())
}

fn convert(jwk: RawJwk) -> Option<PublicKey> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let (key_type, key) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => (
            KeyType::Rsa,
            DecodingKey::from_rsa_components(jwk.n.as_deref()?, jwk.e.as_deref()?).ok()?,
        ),
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (x, y) = (jwk.x.as_deref()?, jwk.y.as_deref()?);
            let len = if crv == "P-256" { 32 } else { 48 };
            if crate::jwt::b64_decoded_len(x) != Some(len)
                || crate::jwt::b64_decoded_len(y) != Some(len)
            {
                return None;
            }
            let kt = if crv == "P-256" {
                KeyType::P256
            } else {
                KeyType::P384
            };
            (kt, DecodingKey::from_ec_components(x, y).ok()?)
        }
        ("OKP", Some("Ed25519")) => (
            KeyType::Ed25519,
            DecodingKey::from_ed_components(jwk.x.as_deref()?).ok()?,
        ),
        _ => return None,
    };
    Some(PublicKey {
        kid: jwk.kid,
        key_type,
        alg: jwk.alg,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_algs() {
        for a in ["none", "None", "HS256", "hs512", "HS384"] {
            assert!(is_forbidden_alg(a), "{a}");
        }
        for a in ["RS256", "ES256", "EdDSA"] {
            assert!(!is_forbidden_alg(a));
        }
        assert!(parse_alg("HS256").is_none());
        assert!(parse_alg("none").is_none());
    }

    #[test]
    fn parses_and_filters_jwks() {
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "EC", "kid": "short", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            "garbage"
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["r", "ed"]);
        assert!(parse_jwks(b"[]").is_err());
    }

    #[test]
    fn alg_must_fit_key() {
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "sXch", "e": "AQAB"}
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert!(keys[0].check_alg("RS256", Algorithm::RS256).is_ok());
        assert!(keys[0].check_alg("PS256", Algorithm::PS256).is_ok());
        let err = keys[0].check_alg("ES256", Algorithm::ES256).unwrap_err();
        assert_eq!(err.code(), "algorithm_key_mismatch");
        assert!(keys[1].check_alg("RS256", Algorithm::RS256).is_err());
        assert!(keys[1].check_alg("PS256", Algorithm::PS256).is_ok());
    }
}
