use http::StatusCode;
use latchkey_core::echo;

/// Everything that can go wrong while classifying or forwarding a Git smart
/// HTTP request. Exhaustive on purpose: each case maps to one HTTP status and
/// one safe message, and a new case must be placed deliberately.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The client asked for a dumb-HTTP path (`HEAD`, `objects/...`,
    /// `info/refs` without `?service=`).
    #[error(
        "dumb HTTP is not supported; use a git client that speaks smart HTTP (requested `{}`)",
        echo(.path)
    )]
    DumbHttp {
        /// The endpoint part of the path that was asked for.
        path: String,
    },
    /// `?service=` named something other than upload-pack or receive-pack.
    #[error(
        "unsupported git service `{}`; only `git-upload-pack` and `git-receive-pack` are served",
        echo(.service)
    )]
    UnsupportedService {
        /// The service the client named.
        service: String,
    },
    /// The path is not `/git/{upstream}/{owner}/{repo}.git/{endpoint}`.
    #[error(
        "invalid git path `{}`: {reason}; expected `/git/{{upstream}}/{{owner}}/{{repo}}.git/...`",
        echo(.path)
    )]
    InvalidPath {
        /// The path that was asked for.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP method does not fit the endpoint.
    #[error(
        "method `{}` is not allowed here; smart HTTP uses GET for info/refs and POST for the services",
        echo(.method)
    )]
    MethodNotAllowed {
        /// The method the client used.
        method: String,
    },
    /// The request's Content-Type or Content-Encoding is not what the
    /// endpoint accepts.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// The client sent bytes that are not valid Git protocol.
    #[error("git protocol error: {0}")]
    Protocol(String),
    /// The push carries a push certificate (`git push --signed`) and this
    /// gateway is not configured to accept them.
    #[error(
        "signed pushes are not accepted here; push without `--signed`, or ask an operator to set `git.push_certificates = true`"
    )]
    SignedPushRefused,
    /// The receive-pack command section (or another bounded part of a
    /// request) is larger than Latchkey accepts.
    #[error("request too large: {0}")]
    TooLarge(String),
    /// The client was too slow sending the part of the request Latchkey must
    /// read before deciding.
    #[error("timed out reading the request")]
    ClientTimeout,
    /// Reading the client's request body failed.
    #[error("failed to read the request body")]
    ClientBody,
    /// The upstream could not be reached, answered badly or too slowly.
    /// The detail is for logs only.
    #[error("the git upstream is unavailable")]
    Upstream(String),
    /// The upstream did not answer in time.
    #[error("the git upstream did not answer in time")]
    UpstreamTimeout,
    /// Latchkey is configured in a way this crate cannot serve (for example
    /// an `https` upstream before TLS support lands).
    #[error("git upstream misconfigured: {0}")]
    Config(String),
}

impl GitError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::DumbHttp { .. } | Self::UnsupportedService { .. } | Self::SignedPushRefused => {
                StatusCode::FORBIDDEN
            }
            Self::InvalidPath { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Protocol(_) | Self::ClientBody => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Upstream(_) | Self::Config(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The message a client may see. Upstream and configuration details stay
    /// in the log.
    pub fn public_message(&self) -> String {
        match self {
            Self::Upstream(_) => "the git upstream is unavailable".to_owned(),
            Self::Config(_) => "the git upstream is misconfigured; ask an operator".to_owned(),
            other => other.to_string(),
        }
    }
}
