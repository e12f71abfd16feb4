//! The authorize step of Latchkey: the Cedar schema, per-request entity and
//! context building, the policy engine (load, validate, index, reload,
//! decide) and table-driven policy tests.
//!
//! It deliberately does not authenticate callers, classify requests, write
//! audit records or watch files for changes: it takes a verified
//! [`latchkey_core::Principal`] and a classified [`latchkey_core::Intent`] and
//! returns a [`latchkey_core::Decision`]. Reloading is explicit
//! ([`PolicyEngine::reload`]); the caller decides when.
//!
//! Decisions are default deny. A policy that fails to evaluate never allows;
//! a *forbid* that fails to evaluate denies (Cedar alone would skip it).

mod engine;
mod error;
mod request;
mod starter;
mod testing;
#[cfg(test)]
mod tests;

pub use engine::{ENTITIES_FILE, PolicyEngine, ReloadSummary};
pub use error::PolicyError;
pub use starter::{STARTER_ENTITIES, STARTER_TESTS, starter_policy_files, starter_sources};
pub use testing::{CaseOutcome, TestReport, run_policy_tests};

/// The Cedar schema (human-readable syntax) every policy and entity is
/// validated against; namespace `Latchkey`.
pub const SCHEMA: &str = include_str!("../schema/latchkey.cedarschema");
