//! Webhooks in, planned actions out: the pure part of Latchkey's event
//! handling.
//!
//! This crate verifies webhook signatures from Gogs, Gitea, GitHub and
//! Buildkite ([`verify_signature`], constant time, with Buildkite's timestamp
//! window), names each delivery for replay protection ([`delivery_id`]),
//! parses payloads into normalized [`Event`]s ([`parse_event`]), and turns
//! events into [`PlannedAction`]s with configured [`Rule`]s ([`evaluate`]).
//!
//! It deliberately does no I/O and holds no state: it never reads a socket,
//! the clock (the caller passes `now`), the store (the gateway remembers
//! delivery ids and records revocations) or the audit log, and it never
//! performs an action; the gateway does, through policy and audit.

mod error;
mod event;
mod payload;
mod rules;
mod signature;
mod source;

pub use error::WebhookError;
pub use event::{
    BuildFinished, CommitSummary, Event, EventKind, JobFinished, Person, PullRequestMerged, Push,
};
pub use payload::{MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH, parse_event};
pub use rules::{
    ActionKind, PlannedAction, Rule, RuleError, WriteDocument, evaluate, placeholder_value,
    placeholders, validate_rules,
};
pub use signature::{
    BUILDKITE_SIGNATURE_HEADER, BUILDKITE_TOKEN_HEADER, BuildkiteSignature,
    DEFAULT_TIMESTAMP_WINDOW, GITEA_SIGNATURE_HEADER, GITHUB_SIGNATURE_HEADER,
    GOGS_SIGNATURE_HEADER, Proof, delivery_id, event_type, parse_buildkite_signature,
    parse_github_signature, parse_hex_signature, signature_headers, verify_signature,
};
pub use source::{Headers, Source};
