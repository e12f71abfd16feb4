//! Forging tokens with the harness's REAL private keys, so tests can present
//! a token that is correctly signed but wrong in some other way (bad claims,
//! a mismatched `alg`). Test-only by construction: these keys are served by
//! the harness's `/test/keys` endpoint.

use aws_lc_rs::rsa::{KeyPair, KeyPairComponents, PublicKeyComponents};
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// Base64url without padding, as JOSE encodes.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The RSA private key from a harness JWKS (`OidcProvider::private_jwks`) as
/// an aws-lc-rs key pair, with its kid. Panics if the JWKS has no RSA key.
pub fn rsa_key(jwks: &Value) -> (String, KeyPair) {
    let k = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kty"] == "RSA"))
        .unwrap_or_else(|| panic!("the harness JWKS has no RSA key: {jwks}"));
    let f = |name: &str| {
        k[name]
            .as_str()
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .unwrap_or_else(|| panic!("RSA JWK member `{name}` is missing or not base64url"))
    };
    let comps = KeyPairComponents {
        public_key: PublicKeyComponents {
            n: f("n"),
            e: f("e"),
        },
        d: f("d"),
        p: f("p"),
        q: f("q"),
        dP: f("dp"),
        dQ: f("dq"),
        qInv: f("qi"),
    };
    let kid = k["kid"].as_str().unwrap_or_default().to_owned();
    let key = KeyPair::from_components(&comps)
        .unwrap_or_else(|e| panic!("the harness RSA key does not load: {e}"));
    (kid, key)
}

/// Signs `header`/`claims` with RSASSA-PKCS1-v1_5 SHA-256 whatever the
/// header says (the header is used as is).
pub fn sign_rs256(key: &KeyPair, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap_or_else(|e| panic!("RS256 signing failed: {e}"));
    format!("{input}.{}", b64(&sig))
}
