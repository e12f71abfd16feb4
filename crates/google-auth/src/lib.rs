//! Short-lived Google OAuth access tokens for Latchkey's upstream calls.
//!
//! Latchkey alone holds the Google credential; callers of the Firestore API
//! never see it. An [`AccessTokenProvider`] turns a [`CredentialSource`]
//! into a bearer token for each upstream request:
//!
//! - a service-account key file, by the OAuth 2.0 JWT bearer grant
//!   (RFC 7523): an RS256 assertion signed with the key, exchanged at the
//!   file's `token_uri`;
//! - the GCE/GKE metadata server;
//! - the Firestore emulator, whose administrator bearer is always `owner`.
//!
//! Tokens are cached and refreshed a margin before they expire, with one
//! fetch in flight however many requests wait, each fetch bounded in time.
//! Expiry is judged by a [`latchkey_core::Clock`], so tests move time by hand.
//!
//! This crate does not proxy anything, does not read Application Default
//! Credentials search paths or `gcloud` user credentials, and never logs or
//! formats a key, an assertion or a token.

mod error;
mod provider;
mod service_account;
mod token;

pub use error::AuthError;
pub use provider::{
    AccessTokenProvider, CredentialSource, DEFAULT_REFRESH_MARGIN, DEFAULT_TIMEOUT,
};
pub use token::AccessToken;

/// The OAuth scope for Cloud Firestore (and Datastore) data access.
pub const DATASTORE_SCOPE: &str = "https://www.googleapis.com/auth/datastore";
