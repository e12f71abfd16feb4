use std::path::PathBuf;
use std::time::Duration;

/// Why no access token could be had.
///
/// Messages name the file, field or endpoint to look at. They never contain
/// the private key, a signed assertion or an access token; the OAuth
/// `error`/`error_description` a token endpoint sends back are not secrets
/// and are included because they say what is wrong (clock skew, a deleted
/// key, a disabled account).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The service-account key file cannot be used.
    #[error("service-account key file `{}`: {reason}", path.display())]
    KeyFile {
        /// The file as configured.
        path: PathBuf,
        /// What is wrong with it and, where it helps, what to do.
        reason: String,
    },

    /// The provider was configured in a way that can never work.
    #[error("invalid Google credential configuration: {0}")]
    Config(String),

    /// The token endpoint could not be reached or the exchange broke off.
    #[error("cannot reach `{url}` for a Google access token: {reason}")]
    Unreachable {
        /// The token endpoint or metadata URL.
        url: String,
        /// A short description of the transport failure.
        reason: String,
    },

    /// The token endpoint did not answer within the configured time-out.
    #[error("`{url}` did not issue a Google access token within {} s", after.as_secs_f32())]
    Timeout {
        /// The token endpoint or metadata URL.
        url: String,
        /// The time-out that elapsed.
        after: Duration,
    },

    /// The token endpoint answered with an HTTP error.
    #[error("`{url}` refused to issue a Google access token (HTTP {status}){detail}")]
    Rejected {
        /// The token endpoint or metadata URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// `": error: description"` from the OAuth error body, or empty.
        detail: String,
    },

    /// The token endpoint answered 2xx with something that is not a usable token.
    #[error("`{url}` sent an unusable token response: {reason}")]
    BadResponse {
        /// The token endpoint or metadata URL.
        url: String,
        /// What was wrong with the body.
        reason: String,
    },

    /// Signing the JWT assertion failed.
    #[error("cannot sign the service-account assertion: {0}")]
    Signing(String),
}
