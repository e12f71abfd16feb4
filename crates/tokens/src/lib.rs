//! Latchkey's own tokens: the Ed25519 signing keys and their rotation, minting
//! and verifying RFC 9068 JWT access tokens, and the revocation set that every
//! verification consults.
//!
//! - [`MasterKey`] encrypts the private halves of signing keys at rest
//!   (AES-256-GCM); the gateway also uses it for the audit key.
//! - [`SigningKeyRing`] holds the keys in memory, publishes them as JWKS and
//!   rotates them on a [`KeySchedule`] (pending → active → retired → removed).
//! - [`TokenIssuer`] turns a [`Principal`](latchkey_core::Principal) into a
//!   signed token bound to one audience with a bounded lifetime.
//! - [`TokenVerifier`] checks a token (size, header, key, signature, issuer,
//!   time, audience) and then revocation on every use, with a cache of
//!   already-verified tokens so repeat use skips the signature check.
//! - [`RevocationSet`] keeps revocations and freezes in memory, written to the
//!   store first.
//!
//! This crate does not decide *whether* a principal may have a token (that is
//! policy), does not verify external OIDC tokens (that is `identity`) and does
//! not speak HTTP. Signing and verifying never touch the store; only loading,
//! maintenance and revocation changes do.

mod claims;
mod error;
mod issuer;
mod keyring;
mod master;
mod revocation;
mod verifier;

pub use claims::TokenClaims;
pub use error::TokenError;
pub use issuer::{Lifetimes, MintRequest, MintedToken, TokenIssuer, is_jti};
pub use keyring::{
    KEYS_GENERATION_META, KeyInfo, KeySchedule, KeyState, MAX_ROTATIONS_READ, MaintenanceReport,
    Rotation, RotationMode, SigningKeyRing,
};
pub use master::MasterKey;
pub use revocation::{RevocationSet, SyncReport};
pub use verifier::{TokenVerifier, VerifiedToken};

use std::time::Duration;

/// The longest any Latchkey token may live, whatever the configuration says.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// The largest token [`TokenVerifier`] will look at, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The clock skew allowed on `nbf` and `iat` (never on `exp`), in seconds.
pub const NBF_SKEW_SECS: u64 = 60;

/// Poison-tolerant lock helpers: a panic elsewhere must not turn every later
/// verification into a panic. The data behind these locks is always left
/// consistent (each write replaces a whole value or one map entry).
pub(crate) mod sync {
    use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

    pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
        lock.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
        lock.write().unwrap_or_else(|e| e.into_inner())
    }
}
