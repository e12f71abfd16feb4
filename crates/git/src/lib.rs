//! Git smart HTTP behind Latchkey.
//!
//! This crate parses what a git client sends (the URL layout, pkt-lines, the
//! receive-pack command section), classifies it into [`latchkey_core::Intent`]s
//! (`git.read` on a repository, one `git.push` per ref), builds the responses
//! git shows when policy refuses (`! [remote rejected] main (denied by policy
//! ...)`), and streams allowed requests to an upstream: another Git server over
//! HTTP with Latchkey's credential injected, or a local `git http-backend`.
//!
//! It deliberately does not evaluate policy, write audit records or
//! authenticate anyone: the gateway drives a request through [`prepare`]
//! (read as far as deciding needs; its intents), then
//! [`Prepared::refuse`] or [`Prepared::forward`], and records the
//! [`GitOutcome`]. Nothing here calls back into the gateway. It never
//! buffers a pack: only the bounded command section of a push is read before
//! deciding. The parsers ([`pktline`], [`commands`], [`report`]) are pure and
//! fuzzed. Dumb HTTP is refused. HTTPS upstreams are not supported yet (plain
//! `http://` only).

pub mod classify;
pub mod commands;
#[cfg(feature = "differential")]
pub mod differential;
mod error;
mod forward;
pub mod outcome;
pub mod pktline;
pub mod report;
pub mod route;
pub mod upload;
pub mod upstream;

pub use classify::{intent_for_read, intents_for_push, ref_resource};
pub use commands::{CommandsParse, RefKind, RefOp, RefUpdate, parse_receive_pack_commands};
pub use error::GitError;
pub use forward::{
    BoxError, Forwarded, GitBody, GitCaller, GitLimits, PendingOutcome, Prepared, StreamBody,
    plain_response, prepare,
};
pub use outcome::GitOutcome;
pub use report::{
    PushReport, RefDenial, RefStatus, ReportStatusTap, error_for_info_refs, parse_report_status,
    rejection_response,
};
pub use route::{Endpoint, GitRoute, Service};
pub use upstream::{BasicCredential, GitTls, Upstream};
