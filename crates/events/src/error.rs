//! Why a webhook was refused.

use latchkey_core::echo;

/// Why a webhook delivery was refused. Exhaustive on purpose: the gateway
/// maps every case to an HTTP status with [`WebhookError::status`], and a new
/// case must break the build there instead of slipping through open.
///
/// Messages are lowercase, put caller input in backticks, never contain a
/// secret, and say what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The webhook path named a source Latchkey does not know.
    #[error(
        "webhook source `{}` is unknown; use gogs, gitea, github or buildkite",
        echo(.source_name)
    )]
    UnknownSource {
        /// The path segment as received (truncated).
        source_name: String,
    },
    /// No secret is configured for the source, so nothing can be verified.
    #[error(
        "no webhook secret is configured for {source_name}; set one in latchkey.toml (or its environment variable or file)"
    )]
    SecretNotConfigured {
        /// The source's name.
        source_name: &'static str,
    },
    /// The header that carries the signature (or token) is absent.
    #[error(
        "the `{header}` header is missing; configure a secret on the {source_name} webhook so that it signs deliveries"
    )]
    MissingSignature {
        /// The header Latchkey expected.
        header: &'static str,
        /// The source's name.
        source_name: &'static str,
    },
    /// A header appeared more than once where exactly one is allowed.
    #[error("the `{header}` header appears more than once; send it once")]
    DuplicateHeader {
        /// The repeated header.
        header: &'static str,
    },
    /// The signature header is present but not in the documented format.
    #[error("the `{header}` header is malformed: {reason}")]
    MalformedSignatureHeader {
        /// The header.
        header: &'static str,
        /// What is wrong with it (never the value itself).
        reason: &'static str,
    },
    /// The signature (or token) does not match the configured secret.
    #[error(
        "the webhook signature does not match; check that the secret configured in {source_name} and in Latchkey are the same and that nothing rewrites the body"
    )]
    BadSignature {
        /// The source's name.
        source_name: &'static str,
    },
    /// A timestamped signature is older than the allowed window.
    #[error(
        "the signature timestamp {timestamp} is {age_secs}s old, more than the {window_secs}s allowed; a replay is refused (check the clocks if this is a fresh delivery)"
    )]
    StaleTimestamp {
        /// The timestamp in the header.
        timestamp: u64,
        /// How old it is.
        age_secs: u64,
        /// The allowed window.
        window_secs: u64,
    },
    /// A timestamped signature is further in the future than the window.
    #[error(
        "the signature timestamp {timestamp} is {ahead_secs}s in the future, more than the {window_secs}s allowed; check the clocks"
    )]
    FutureTimestamp {
        /// The timestamp in the header.
        timestamp: u64,
        /// How far ahead it is.
        ahead_secs: u64,
        /// The allowed window.
        window_secs: u64,
    },
    /// The delivery id header is absent, so replays cannot be recognised.
    #[error("the `{header}` header is missing; a delivery id is required to refuse replays")]
    MissingDeliveryId {
        /// The header Latchkey expected.
        header: &'static str,
    },
    /// The delivery id header is present but unusable.
    #[error("the `{header}` header is malformed: {reason}")]
    MalformedDeliveryId {
        /// The header.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The event type header is absent.
    #[error("the `{header}` header is missing; it names the event type")]
    MissingEventType {
        /// The header Latchkey expected.
        header: &'static str,
    },
    /// The event type is not one Latchkey handles.
    #[error(
        "event `{}` from {source_name} is not handled; subscribe the webhook only to {expected}",
        echo(.event)
    )]
    UnknownEvent {
        /// The event type as received (truncated).
        event: String,
        /// The source's name.
        source_name: &'static str,
        /// The events Latchkey handles for this source.
        expected: &'static str,
    },
    /// The event named in the (signed) body differs from the (unsigned) header.
    #[error(
        "the body says event `{}` but the header says `{}`; the delivery is refused",
        echo(.body),
        echo(.header)
    )]
    EventMismatch {
        /// The event named in the header (truncated).
        header: String,
        /// The event named in the body (truncated).
        body: String,
    },
    /// The body is larger than Latchkey parses.
    #[error("the webhook body is {size} bytes, more than the {limit} bytes accepted")]
    PayloadTooLarge {
        /// The body's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body nests arrays or objects deeper than Latchkey parses.
    #[error("the webhook body nests deeper than {limit} levels; it is not a webhook payload")]
    PayloadTooDeep {
        /// The limit.
        limit: usize,
    },
    /// The body is not JSON of the expected shape.
    #[error(
        "the webhook body is not valid JSON for a `{}` event: {}; send `Content-Type: application/json` deliveries",
        echo(.event),
        echo(.detail).max(200)
    )]
    MalformedJson {
        /// The event type being parsed.
        event: String,
        /// The parser's complaint (position and kind; no payload text).
        detail: String,
    },
    /// A field the normalized event needs is absent or empty.
    #[error("the `{}` payload lacks `{field}`", echo(.event))]
    MissingField {
        /// The event type being parsed.
        event: String,
        /// The JSON path of the missing field.
        field: &'static str,
    },
}

impl WebhookError {
    /// The HTTP status the gateway answers with.
    ///
    /// - 401: the delivery is not authenticated (missing, malformed or wrong
    ///   signature, timestamp outside the window).
    /// - 400: the request is malformed (headers, JSON, missing fields,
    ///   event mismatch, unknown source).
    /// - 413: the body is too large.
    /// - 422: a well-formed, authenticated delivery of an event Latchkey does
    ///   not handle; the sender should stop subscribing to it.
    /// - 500: Latchkey itself is misconfigured (no secret): fail closed.
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingSignature { .. }
            | Self::MalformedSignatureHeader { .. }
            | Self::BadSignature { .. }
            | Self::StaleTimestamp { .. }
            | Self::FutureTimestamp { .. } => 401,
            Self::UnknownSource { .. }
            | Self::DuplicateHeader { .. }
            | Self::MissingDeliveryId { .. }
            | Self::MalformedDeliveryId { .. }
            | Self::MissingEventType { .. }
            | Self::EventMismatch { .. }
            | Self::PayloadTooDeep { .. }
            | Self::MalformedJson { .. }
            | Self::MissingField { .. } => 400,
            Self::PayloadTooLarge { .. } => 413,
            Self::UnknownEvent { .. } => 422,
            Self::SecretNotConfigured { .. } => 500,
        }
    }

    /// Whether the error is about authenticity (the delivery must not be
    /// trusted at all, not even its delivery id).
    pub fn is_authentication_failure(&self) -> bool {
        self.status() == 401
    }
}

/// Truncates caller input put into an error message.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
