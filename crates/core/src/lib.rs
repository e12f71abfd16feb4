//! The vocabulary every Latchkey crate shares: who is asking ([`Principal`]),
//! what they ask for ([`Intent`]), what policy said ([`Decision`]) and the
//! [`Clock`] that every time-dependent check reads.
//!
//! This crate does no I/O and knows nothing about HTTP, Cedar or storage; it
//! only names things so that the pipeline steps (authenticate, classify,
//! authorize, act, record) can hand them to each other.

mod clock;
mod echo;
mod glob;
mod intent;
mod principal;

pub use clock::{Clock, FakeClock, SharedClock, SystemClock, UnixTime};
pub use echo::{Echo, MAX_ECHO_BYTES, bounded, echo};
pub use glob::glob_match;
pub use intent::{
    Action, ContextValue, Decision, Effect, Intent, ResourceKind, ResourceRef, Scope,
    is_safe_method,
};
pub use principal::{Actor, CiClaims, Principal, PrincipalKind};
