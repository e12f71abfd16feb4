//! Verifies external OpenID Connect tokens (from SSO providers and CI
//! systems) and maps them to a [`latchkey_core::Principal`]: the
//! *authenticate* step for external credentials.
//!
//! It does OIDC discovery, fetches and caches each issuer's JWKS (bounded,
//! rate-limited, failing closed), checks the signature with an algorithm taken
//! from the issuer's allowlist and the key's type (never from the header
//! alone), checks `iss`, `aud`, `exp`, `nbf`, `iat` against a
//! [`latchkey_core::SharedClock`] with a fixed skew, enforces bound claims and
//! maps subject, groups, e-mail and CI claims. CI presets ([`CiPreset`]) know
//! the claim sets of Buildkite and GitHub Actions tokens and refuse configs
//! that would let another organisation's jobs in.
//!
//! It deliberately does not mint Latchkey tokens (`latchkey-tokens` does),
//! decide access (`latchkey-policy`), keep sessions, or accept
//! symmetric (`HS*`) or unsigned tokens. [`oauth`] is the client side of
//! sign-in (discovery, PKCE, the token endpoint) for browser sign-in and
//! `latchkey login`. [`DevIssuer`] is a development-only
//! issuer for `latchkey dev`, with a DEV ONLY sign-in page (the code flow
//! with PKCE).

mod claims;
mod config;
mod dev;
mod dev_login;
mod error;
mod fetch;
mod jwt;
mod keys;
pub mod oauth;
mod preset;
mod verify;

pub use claims::{CLOCK_SKEW_SECS, claim_matches};
pub use config::{
    CI_CLAIM_FIELDS, ClaimMatch, DEFAULT_LOGIN_SCOPES, IssuerConfig, LoginClient, SecretRef,
};
pub use dev::DevIssuer;
pub use dev_login::{
    AuthorizeError, AuthorizeParams, CODE_LIFETIME_SECS, DEFAULT_ID_TOKEN_LIFETIME, DEV_CLI_CLIENT,
    DEV_WEB_CLIENT, DevOAuthError, FORM_LIFETIME_SECS, REFRESH_LIFETIME_SECS, SignInError,
    SignInForm, TokenParams, is_loopback_redirect,
};
pub use error::{ConfigError, IdentityError};
pub use fetch::{
    DEFAULT_CACHE, FETCH_TIMEOUT, MAX_BODY_BYTES, MAX_CACHE, MIN_CACHE, cache_lifetime,
};
pub use jwt::{MAX_TOKEN_BYTES, UnverifiedJwt, parse_unverified};
pub use preset::CiPreset;
pub use verify::{
    HARD_MAX_KEY_AGE, IssuerSet, KeyStatus, MIN_REFRESH_INTERVAL, RefreshCounts, VerifiedIdentity,
    fetch_issuer_keys,
};
