//! The Latchkey HTTP server: routing, and the request pipeline
//! (authenticate → classify → authorize → act → record) wired from the
//! library crates.
//!
//! This crate owns no protocol parsing (that is `latchkey-git`), no crypto
//! (`latchkey-tokens`, `latchkey-identity`) and no policy language
//! (`latchkey-policy`): it composes them and turns their errors into safe
//! responses, keeping detail for the log.

pub mod config;

mod admin;
mod app;
mod auth;
mod events;
mod firestore;
mod git_route;
mod listener;
mod oauth;
mod refusals;
mod request_id;
mod webhooks;
mod witness;

pub use app::{
    Gateway, GatewayError, KEY_WATCH_INTERVAL, StartOptions, audit_public_key, check_firestore,
    create_private_dir, load_audit_signer, load_master_key, open_keyring, router, spawn_key_watch,
};
pub use listener::{ServeError, serve, serve_with_limits, tls_server_config};
