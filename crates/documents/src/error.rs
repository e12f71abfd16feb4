//! Why a request could not be classified: the one error of the classifiers
//! (gRPC, REST, values), apart from them so none imports another for it.

use latchkey_core::echo;

use crate::names::{FieldPathError, NameError};
use crate::status::GrpcCode;

/// Why a request could not be classified. Each becomes an error response
/// with [`ClassifyError::code`]; the message is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// The protobuf message does not decode.
    #[error("malformed {message} message: {}", echo(.detail).max(200))]
    Decode {
        /// The message type, e.g. `CommitRequest`.
        message: &'static str,
        /// What the decoder said.
        detail: String,
    },
    /// The REST body is not JSON (or repeats a key).
    #[error("malformed JSON body: {}", echo(.0).max(200))]
    Json(String),
    /// A required field is missing or empty.
    #[error("missing required field `{0}`")]
    Missing(String),
    /// A field has a value Latchkey refuses.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The field, e.g. `writes[2].update_mask`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A resource name is malformed.
    #[error("invalid `{field}`: {source}")]
    Name {
        /// The field holding the name.
        field: String,
        /// What is wrong with it.
        source: NameError,
    },
    /// A field path is malformed.
    #[error("invalid `{field}`: {source}")]
    FieldPath {
        /// The field holding the path.
        field: String,
        /// What is wrong with it.
        source: FieldPathError,
    },
    /// A name is in another database than the call's.
    #[error(
        "`{}` is not in the request's database `{}`",
        echo(.name),
        echo(.database)
    )]
    OtherDatabase {
        /// The offending name.
        name: String,
        /// The call's database.
        database: String,
    },
    /// Something Firestore has but Latchkey does not pass through.
    #[error("{0}")]
    Unsupported(String),
    /// A REST path or method that is not part of the Firestore API.
    #[error("no Firestore method for {} `{}`", echo(.method), echo(.path))]
    NoRoute {
        /// The HTTP method.
        method: String,
        /// The request path.
        path: String,
    },
}

impl ClassifyError {
    /// The status to answer with: `UNIMPLEMENTED` for what Latchkey does
    /// not support, `NOT_FOUND` for unknown REST routes, else `INVALID_ARGUMENT`.
    pub fn code(&self) -> GrpcCode {
        match self {
            Self::Unsupported(_) => GrpcCode::Unimplemented,
            Self::NoRoute { .. } => GrpcCode::NotFound,
            _ => GrpcCode::InvalidArgument,
        }
    }
}
