//! The built-in development OIDC issuer used by `latchkey dev`.
//!
//! DEVELOPMENT ONLY: it mints ID tokens for any subject on request. Never
//! configure it in a real deployment.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use latchkey_core::UnixTime;
use serde_json::{Map, Value, json};

use crate::IdentityError;
use crate::jwt::b64;

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// A development OIDC issuer with one RSA-2048 key kept in a local file.
///
/// Exists so `latchkey dev` is a complete sandbox without an external
/// identity provider: the gateway serves its discovery document and JWKS,
/// and `latchkey dev token` mints ID tokens with it.
pub struct DevIssuer {
    issuer: String,
    key: KeyPair,
    kid: String,
    n: String,
    e: String,
    /// Lifetime of the ID tokens the sign-in flows mint.
    pub(crate) id_token_lifetime: Duration,
    /// Pending forms, codes and refresh tokens of the sign-in flows
    /// (`dev_login`), in memory. DEV ONLY.
    pub(crate) flows: std::sync::Mutex<crate::dev_login::Flows>,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn dev_err(reason: impl Into<String>) -> IdentityError {
    IdentityError::DevIssuer {
        reason: reason.into(),
    }
}

impl DevIssuer {
    /// Loads the PKCS#8 key at `path`, or creates one there (mode 0600)
    /// when the file does not exist.
    pub fn load_or_create(path: &Path, issuer_url: String) -> Result<Self, IdentityError> {
        let key = match std::fs::read_to_string(path) {
            Ok(pem) => {
                let der = pem_decode(&pem).ok_or_else(|| {
                    dev_err(format!(
                        "key file `{}` is not a PEM private key; delete it to generate a new one",
                        path.display()
                    ))
                })?;
                KeyPair::from_pkcs8(&der).map_err(|e| {
                    dev_err(format!(
                        "key file `{}` holds no usable RSA key ({e}); delete it to generate a new one",
                        path.display()
                    ))
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate(KeySize::Rsa2048)
                    .map_err(|_| dev_err("could not generate an RSA key"))?;
                let der = key
                    .as_der()
                    .map_err(|_| dev_err("could not encode the RSA key"))?;
                write_private(path, &pem_encode(der.as_ref()))?;
                key
            }
            Err(e) => {
                return Err(dev_err(format!(
                    "cannot read key file `{}`: {e}",
                    path.display()
                )));
            }
        };
        Self::from_key(key, issuer_url)
    }

    fn from_key(key: KeyPair, issuer: String) -> Result<Self, IdentityError> {
        let comps = RsaPublicKeyComponents::<Vec<u8>>::from(key.public_key());
        let n = b64(&comps.n);
        let e = b64(&comps.e);
        // RFC 7638 thumbprint: members in lexicographic order, no spaces.
        let thumb_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = b64(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            thumb_input.as_bytes(),
        )
        .as_ref());
        Ok(Self {
            issuer,
            key,
            kid,
            n,
            e,
            id_token_lifetime: crate::dev_login::DEFAULT_ID_TOKEN_LIFETIME,
            flows: Default::default(),
        })
    }

    /// Sets the lifetime of ID tokens minted by the sign-in flows (a short
    /// one lets a sandbox show quiet renewal with the refresh token).
    pub fn with_id_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.id_token_lifetime = lifetime;
        self
    }

    /// The issuer URL (`iss` of minted tokens).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key id (RFC 7638 thumbprint of the public key).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The OpenID discovery document to serve at
    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discovery_document(&self) -> Value {
        let base = self.issuer.trim_end_matches('/');
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{base}/jwks.json"),
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"),
            "revocation_endpoint": format!("{base}/revoke"),
            "end_session_endpoint": format!("{base}/logout"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "authorization_response_iss_parameter_supported": true,
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": [
                "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "azp",
                "email", "groups", "preferred_username"
            ],
        })
    }

    /// The public key set to serve at `{issuer}/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": self.n,
            "e": self.e,
        }]})
    }

    /// Mints an RS256 ID token. `extra_claims` are added first, so they
    /// cannot override `iss`, `sub`, `aud`, `iat`, `exp`, `groups` or `email`.
    #[allow(clippy::too_many_arguments)]
    pub fn mint_id_token(
        &self,
        subject: &str,
        groups: &[String],
        email: Option<&str>,
        audience: &str,
        lifetime: Duration,
        extra_claims: Map<String, Value>,
        now: UnixTime,
    ) -> Result<String, IdentityError> {
        let mut claims = extra_claims;
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("sub".into(), json!(subject));
        claims.insert("aud".into(), json!(audience));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now.saturating_add(lifetime.as_secs())));
        if !groups.is_empty() {
            claims.insert("groups".into(), json!(groups));
        }
        if let Some(e) = email {
            claims.insert("email".into(), json!(e));
        }
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(Value::Object(claims).to_string().as_bytes())
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| dev_err("signing failed"))?;
        Ok(format!("{signing_input}.{}", b64(&sig)))
    }
}

fn pem_encode(der: &[u8]) -> String {
    let b = STANDARD.encode(der);
    let mut out = String::with_capacity(b.len() + 100);
    out.push_str(PEM_BEGIN);
    out.push('\n');
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(PEM_END);
    out.push('\n');
    out
}

fn pem_decode(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find(PEM_BEGIN)? + PEM_BEGIN.len();
    let end = pem.find(PEM_END)?;
    let body: String = pem
        .get(start..end)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}

fn write_private(path: &Path, contents: &str) -> Result<(), IdentityError> {
    let fail =
        |e: std::io::Error| dev_err(format!("cannot write key file `{}`: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Only the owner may enter a directory created for a key, whatever
        // the umask.
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        builder.create(dir).map_err(fail)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(fail)?;
    f.write_all(contents.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        let der: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        assert_eq!(pem_decode(&pem_encode(&der)).unwrap(), der);
        assert!(pem_decode("nope").is_none());
    }
}
