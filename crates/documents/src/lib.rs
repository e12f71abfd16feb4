//! The protocol side of Latchkey's Firestore front end.
//!
//! Latchkey stands in front of Google Firestore (the v1 API, over gRPC and
//! over REST) and lets each call through only if policy allows every
//! document or collection it touches. This crate reads a call and says
//! what it touches; the gateway decides, proxies and records.
//!
//! - [`names`]: resource names (`projects/{p}/databases/{d}/documents/...`),
//!   document paths and field paths, checked once so the rest can trust them;
//!   [`DocPath::to_resource`] builds the Cedar resource chain
//!   (document → collection → ... → environment).
//! - [`grpc`]: the RPCs of `google.firestore.v1.Firestore` and gRPC message
//!   framing ([`FrameDecoder`], [`encode_frame`]).
//! - [`classify`]: the shared output, [`Classified`]: one [`Access`] per
//!   decision (a commit of ten writes is ten), each of which becomes an
//!   [`latchkey_core::Intent`] through [`Access::intent`]. Writes are told
//!   apart as Firestore means them: an update whose precondition is
//!   `exists = false` is a create, one with `exists = true`, an
//!   `update_time` precondition or an update mask is an update, and one
//!   with neither is a set (upsert). [`classify_grpc`] reads protobuf
//!   request messages; [`StreamClassifier`] keeps a `Write`/`Listen` stream
//!   to one database; [`transaction_in_response`] finds the transaction id
//!   a response carries.
//! - [`rest`]: the REST routes ([`RestCall::parse`]), their JSON bodies
//!   ([`classify_rest`]) and [`RestTransactionTap`], which spots a new
//!   transaction id in a streaming response.
//! - [`status`]: gRPC status codes and Google's error shapes.
//!
//! Every name in a call must be in the call's own database; anything
//! Latchkey cannot read unambiguously (compressed gRPC messages, a key
//! given twice in JSON, `%2F` in a path, `ExecutePipeline`) is refused
//! rather than guessed at.
//!
//! What this crate deliberately does not do: no I/O, no async, no policy
//! evaluation, no audit. It never rewrites a request: the gateway forwards
//! the bytes it classified. Unknown protobuf fields are dropped by the
//! decoder, so a field newer than the pinned Firestore API version is
//! invisible here.

pub mod classify;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod names;
pub mod rest;
pub mod status;
mod values;

pub use classify::{
    Access, Classified, ClassifyError, ClassifyOptions, DocAction, StreamClassifier, Target,
    WriteOp, WriteSummary, classify_grpc, transaction_in_response,
};
pub use grpc::{FrameDecoder, FrameError, Method, encode_frame};
pub use names::{DatabaseName, DocPath, FieldPath, FieldPathError, NameError, ResourceName};
pub use rest::proto_json::{
    JsonArrayStream, ProtoRequest, RequestMessage, ResponseMessage, request_to_proto,
};
pub use rest::{RestCall, RestTransactionTap, classify_rest};
pub use status::{GrpcCode, grpc_message_encode, rest_error_body};

/// The protobuf message types of `google.firestore.v1`, for callers that
/// build or inspect messages (tests, fakes).
pub use googleapis_tonic_google_firestore_v1::google::firestore::v1 as proto;
