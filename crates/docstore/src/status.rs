//! The error every call answers with: a gRPC status code and a message a
//! person can act on, as Firestore words it where it can.

use latchkey_documents::GrpcCode;

/// A failed call: what the gRPC trailers (or the REST error body) carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Status {
    /// The gRPC status code.
    pub code: GrpcCode,
    /// What went wrong, for the caller.
    pub message: String,
}

impl Status {
    /// A status with this code and message.
    pub fn new(code: GrpcCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// `INVALID_ARGUMENT`: the request is malformed or asks for what
    /// Firestore refuses.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(GrpcCode::InvalidArgument, message)
    }
    /// `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(GrpcCode::NotFound, message)
    }
    /// `ALREADY_EXISTS`.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(GrpcCode::AlreadyExists, message)
    }
    /// `FAILED_PRECONDITION`.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(GrpcCode::FailedPrecondition, message)
    }
    /// `ABORTED`: contention; the clients retry the transaction.
    pub fn aborted(message: impl Into<String>) -> Self {
        Self::new(GrpcCode::Aborted, message)
    }
    /// `UNIMPLEMENTED`.
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(GrpcCode::Unimplemented, message)
    }
    /// `UNAVAILABLE`: the store could not be reached; nothing was applied.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(GrpcCode::Unavailable, message)
    }
    /// `INTERNAL`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(GrpcCode::Internal, message)
    }
}
