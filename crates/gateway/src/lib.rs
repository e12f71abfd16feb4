//! The Latchkey HTTP server: one request pipeline (authenticate → classify →
//! authorize → act → record) and the targets on it, wired from the library
//! crates.
//!
//! The layout, from the bottom up (no module imports one above it):
//! - `config`: the configuration file, secrets apart;
//! - `pipeline`: the steps every request takes, the one refusal type and its
//!   rendering per protocol, the audit records and their actions;
//! - `sessions`: browser sessions, the providers people sign in with, and
//!   where a browser may be sent back to;
//! - `targets`: one module per target (Git, documents, tokens, admin,
//!   webhooks, apps), each a `pipeline::Target`, and the sign-in routes;
//! - `gateway`: the running gateway (start-up, upkeep, shutdown);
//! - `metrics`: what `/metrics` exports, and the layer that times requests;
//! - `server`: the router, request ids and the listener;
//! - `check`: `serve --check`, every piece start-up needs, one by one.
//!
//! This crate owns no protocol parsing (that is `latchkey-git` and
//! `latchkey-documents`), no crypto (`latchkey-tokens`, `latchkey-identity`)
//! and no policy language (`latchkey-policy`): it composes them and turns
//! their errors into safe responses, keeping detail for the log.

pub mod check;
mod cluster;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;

mod gateway;
mod html;
mod metrics;
mod pipeline;
mod probe;
mod server;
mod sessions;
mod targets;
mod witness;

pub use cluster::{StoreRole, open_documents_for_command, open_store_for_command};
pub use gateway::{
    Gateway, GatewayError, KEY_WATCH_INTERVAL, StartOptions, audit_public_key, check_firestore,
    create_private_dir, load_audit_signer, load_master_key, open_keyring, spawn_key_watch,
    store_witnessed_checkpoints,
};
pub use server::listener::{
    ServeError, serve, serve_gateway, serve_with_limits, tls_server_config,
};
pub use server::router;
