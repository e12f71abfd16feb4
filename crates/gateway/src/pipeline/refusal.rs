//! The one refusal type, and its rendering in each protocol.
//!
//! Every target refuses with a [`Refusal`]: the [`Stage`] that refused, a
//! typed [`Code`], a message the caller may read, and (from the code) whose
//! fault it is and whether a retry may help. The pipeline records it and
//! renders it once per [`Protocol`], so "the audit log cannot be written"
//! reads the same on every route and a new case is placed deliberately.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use latchkey_documents::GrpcCode;
use serde_json::json;

/// The pipeline step that refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The credential (or signature) was missing or not accepted.
    Authenticate,
    /// The request could not be read as the protocol says, or asks for
    /// something this gateway does not serve.
    Classify,
    /// Policy (Cedar, a token's scopes, a trust rule) said no.
    Authorize,
    /// Doing the work failed (upstream, store, minting).
    Act,
    /// The audit record could not be made durable.
    Record,
}

impl Stage {
    /// The stage's name in audit actions (`git.authenticate`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Authenticate => "authenticate",
            Self::Classify => "classify",
            Self::Authorize => "authorize",
            Self::Act => "act",
            Self::Record => "record",
        }
    }
}

/// Whose fault a refusal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The caller sent something wrong or is not allowed.
    Caller,
    /// A system Latchkey depends on failed (an upstream, an issuer).
    Upstream,
    /// Latchkey itself cannot serve (its audit log, its store, its config).
    Latchkey,
}

/// Why a request was refused: exhaustive, so a new case is a build error
/// where it must be rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// No credential was presented.
    MissingCredential,
    /// The Authorization header could not be read.
    UnreadableCredential,
    /// A Latchkey token was presented and refused.
    TokenRefused,
    /// An external identity token (token exchange) was refused; the
    /// identity crate's own code (`unknown_issuer`, `expired`, ...).
    Identity(&'static str),
    /// The external token's issuer could not be reached.
    IssuerUnavailable,
    /// A webhook signature did not check out.
    BadSignature,
    /// A webhook proved itself with a plain token where a signature is
    /// required.
    PlainToken,
    /// A form or query lacks or misuses a parameter (OAuth `invalid_request`).
    InvalidRequest,
    /// The token endpoint was asked for a grant it does not serve.
    UnsupportedGrantType,
    /// A token was asked for an audience that is not configured.
    UnknownAudience,
    /// Protocol bytes that do not parse.
    Malformed,
    /// Something the protocol has and Latchkey does not serve.
    Unsupported,
    /// No such route, upstream or source.
    NotFound,
    /// The target this route leads to is not configured.
    NotConfigured,
    /// The method does not fit the route.
    MethodNotAllowed,
    /// The content type or encoding is not accepted.
    UnsupportedMediaType,
    /// A bounded part of the request is too large.
    TooLarge,
    /// The caller was too slow sending what must be read before deciding.
    ClientTimeout,
    /// A Firestore project this gateway does not serve.
    UnknownProject,
    /// A Firestore database no environment is mapped to.
    UnknownDatabase,
    /// A transaction that belongs to someone else (or to nobody).
    ForeignTransaction,
    /// No `[[trust]]` rule lets this workload mint what it asked for; the
    /// OAuth error code says which part failed.
    TrustRefused(&'static str),
    /// A signed push, with push certificates off.
    SignedPushRefused,
    /// Cedar (or a token's scopes) denied.
    Denied,
    /// The token could not be minted as asked (lifetime, audience).
    MintRefused(&'static str),
    /// The upstream could not be reached or failed.
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The upstream is misconfigured.
    Misconfigured,
    /// The state store cannot be read or written.
    StoreUnavailable,
    /// This node's view of revocations is older than `store.max_staleness`
    /// (`strict` mode): it cannot know whether a token was revoked elsewhere.
    RevocationsStale,
    /// The audit log cannot be written (fail closed).
    AuditUnavailable,
}

impl Code {
    /// The code as the audit trail records it (`refused:<code>`). These
    /// strings are an interface: queries and alerts match on them.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::MissingCredential => "missing_credential",
            Self::UnreadableCredential => "unreadable_credential",
            Self::TokenRefused => "token_refused",
            Self::Identity(code) => code,
            Self::IssuerUnavailable => "issuer_unavailable",
            Self::BadSignature => "bad_signature",
            Self::PlainToken => "plain_token",
            Self::InvalidRequest => "invalid_request",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnknownAudience => "invalid_target",
            Self::Malformed => "malformed",
            Self::Unsupported => "unsupported",
            Self::NotFound => "not_found",
            Self::NotConfigured => "not_configured",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::TooLarge => "too_large",
            Self::ClientTimeout => "client_timeout",
            Self::UnknownProject => "unknown_project",
            Self::UnknownDatabase => "unknown_database",
            Self::ForeignTransaction => "foreign_transaction",
            Self::TrustRefused(_) => "trust_refused",
            Self::SignedPushRefused => "signed_push_refused",
            Self::Denied => "denied",
            Self::MintRefused(_) => "mint_refused",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::Misconfigured => "misconfigured",
            Self::StoreUnavailable => "store_unavailable",
            Self::RevocationsStale => "revocations_stale",
            Self::AuditUnavailable => "audit_unavailable",
        }
    }

    /// Whose fault it is.
    pub(crate) fn fault(self) -> Fault {
        match self {
            Self::IssuerUnavailable
            | Self::UpstreamUnavailable
            | Self::UpstreamTimeout
            | Self::Misconfigured => Fault::Upstream,
            Self::NotConfigured
            | Self::StoreUnavailable
            | Self::RevocationsStale
            | Self::AuditUnavailable => Fault::Latchkey,
            _ => Fault::Caller,
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub(crate) fn retry_may_help(self) -> bool {
        matches!(
            self,
            Self::IssuerUnavailable
                | Self::UpstreamUnavailable
                | Self::UpstreamTimeout
                | Self::StoreUnavailable
                | Self::RevocationsStale
                | Self::AuditUnavailable
                | Self::ClientTimeout
        )
    }

    /// The HTTP status for plain HTTP, JSON, OAuth and Git.
    pub(crate) fn http_status(self) -> StatusCode {
        match self {
            Self::MissingCredential
            | Self::UnreadableCredential
            | Self::TokenRefused
            | Self::BadSignature
            | Self::PlainToken => StatusCode::UNAUTHORIZED,
            Self::Identity(_)
            | Self::InvalidRequest
            | Self::UnsupportedGrantType
            | Self::UnknownAudience
            | Self::Malformed
            | Self::TrustRefused(_)
            | Self::MintRefused(_) => StatusCode::BAD_REQUEST,
            Self::Unsupported
            | Self::UnknownProject
            | Self::UnknownDatabase
            | Self::ForeignTransaction
            | Self::SignedPushRefused
            | Self::Denied => StatusCode::FORBIDDEN,
            Self::NotFound | Self::NotConfigured => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UpstreamUnavailable | Self::Misconfigured => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::IssuerUnavailable
            | Self::StoreUnavailable
            | Self::RevocationsStale
            | Self::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The gRPC status (Firestore's clients act on these).
    pub(crate) fn grpc(self) -> GrpcCode {
        match self {
            Self::MissingCredential
            | Self::UnreadableCredential
            | Self::TokenRefused
            | Self::BadSignature
            | Self::PlainToken
            | Self::Identity(_) => GrpcCode::Unauthenticated,
            Self::InvalidRequest
            | Self::UnsupportedGrantType
            | Self::UnknownAudience
            | Self::Malformed
            | Self::UnsupportedMediaType
            | Self::TooLarge
            | Self::MintRefused(_) => GrpcCode::InvalidArgument,
            Self::Unsupported | Self::NotConfigured | Self::MethodNotAllowed => {
                GrpcCode::Unimplemented
            }
            Self::NotFound => GrpcCode::NotFound,
            Self::ClientTimeout => GrpcCode::DeadlineExceeded,
            Self::UnknownProject
            | Self::UnknownDatabase
            | Self::ForeignTransaction
            | Self::TrustRefused(_)
            | Self::SignedPushRefused
            | Self::Denied => GrpcCode::PermissionDenied,
            Self::UpstreamTimeout => GrpcCode::DeadlineExceeded,
            Self::Misconfigured => GrpcCode::Internal,
            Self::IssuerUnavailable
            | Self::UpstreamUnavailable
            | Self::StoreUnavailable
            | Self::RevocationsStale
            | Self::AuditUnavailable => GrpcCode::Unavailable,
        }
    }

    /// The OAuth error code (RFC 6749 §5.2, RFC 6750 §3.1).
    pub(crate) fn oauth(self) -> &'static str {
        match self {
            Self::MissingCredential | Self::UnreadableCredential | Self::TokenRefused => {
                "invalid_token"
            }
            Self::Identity(_) | Self::BadSignature | Self::PlainToken => "invalid_grant",
            Self::InvalidRequest
            | Self::Malformed
            | Self::Unsupported
            | Self::NotFound
            | Self::MethodNotAllowed
            | Self::UnsupportedMediaType
            | Self::TooLarge
            | Self::ClientTimeout
            | Self::UnknownProject
            | Self::UnknownDatabase
            | Self::ForeignTransaction
            | Self::SignedPushRefused => "invalid_request",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnknownAudience => "invalid_target",
            Self::TrustRefused(code) | Self::MintRefused(code) => code,
            Self::Denied => "access_denied",
            Self::NotConfigured | Self::Misconfigured => "server_error",
            Self::IssuerUnavailable
            | Self::UpstreamUnavailable
            | Self::UpstreamTimeout
            | Self::StoreUnavailable
            | Self::RevocationsStale
            | Self::AuditUnavailable => "temporarily_unavailable",
        }
    }
}

/// How a target's callers read refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// OAuth JSON (RFC 6749 §5.2): the token service and admin API.
    OAuth,
    /// gRPC trailers-only (Firestore's gRPC API).
    Grpc,
    /// Google's REST error JSON (Firestore's REST API).
    FirestoreRest,
    /// Plain text git shows (`fatal: ...`), Basic-auth challenge on 401.
    Git,
    /// `{"error": "..."}` (webhook senders).
    Json,
}

/// The most bytes of a refusal message a caller is sent: its parts that
/// quote caller input are bounded one by one ([`latchkey_core::echo`]); this
/// bounds the whole, for messages built in crates that quote more.
const MAX_MESSAGE_BYTES: usize = 1024;

/// What a few refusals add to their code.
#[derive(Debug, Clone, Default)]
struct More {
    /// A finer gRPC code than [`Code::grpc`] (a Firestore classify error).
    grpc: Option<GrpcCode>,
    /// A finer HTTP status than [`Code::http_status`] (Git's own errors).
    status: Option<StatusCode>,
    /// A finer OAuth error code than [`Code::oauth`].
    oauth: Option<&'static str>,
    /// Facts the refusal's audit record carries (a webhook's source).
    context: serde_json::Map<String, serde_json::Value>,
}

/// A request refused at one stage of the pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    /// The step that refused.
    pub(crate) stage: Stage,
    /// Why, typed.
    pub(crate) code: Code,
    /// What the caller reads: says what to fix, never internal detail.
    pub(crate) message: String,
    /// Protocol-specific refinements and record facts, rarely set (boxed to
    /// keep the refusal small on every `Result` path).
    more: Option<Box<More>>,
    /// Whether the refusal is on record already (its target recorded the
    /// outcome, or it is the audit log's own failure): not recorded again.
    recorded: bool,
}

impl Refusal {
    pub(crate) fn new(stage: Stage, code: Code, message: impl Into<String>) -> Self {
        Self {
            stage,
            code,
            message: message.into(),
            more: None,
            recorded: false,
        }
    }

    /// Marks the refusal as on record already (see [`Self::is_recorded`]).
    pub(crate) fn already_recorded(mut self) -> Self {
        self.recorded = true;
        self
    }

    /// Whether the pipeline must not record it again: the target recorded
    /// its outcome, or the record itself is what failed.
    pub(crate) fn is_recorded(&self) -> bool {
        self.recorded || self.stage == Stage::Record
    }

    /// The refusal of every route whose audit record cannot be written.
    pub(crate) fn audit_unavailable() -> Self {
        Self::new(
            Stage::Record,
            Code::AuditUnavailable,
            "the audit log cannot be written; nothing was done",
        )
    }

    /// With a finer gRPC code for Firestore's callers.
    pub(crate) fn with_grpc(mut self, code: GrpcCode) -> Self {
        self.more().grpc = Some(code);
        self
    }

    fn more(&mut self) -> &mut More {
        self.more.get_or_insert_with(Box::default)
    }

    /// The facts its audit record carries.
    pub(crate) fn context(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.more.as_ref().map(|m| &m.context)
    }

    /// With a finer OAuth error code (RFC 8693 §2.2.2 answers a refused
    /// audience with `invalid_target`).
    pub(crate) fn with_oauth(mut self, code: &'static str) -> Self {
        self.more().oauth = Some(code);
        self
    }

    /// With a fact for its audit record.
    pub(crate) fn with_context(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.more().context.insert(key.to_owned(), value.into());
        self
    }

    /// With a finer HTTP status.
    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.more().status = Some(status);
        self
    }

    /// The gRPC code it is rendered with.
    pub(crate) fn grpc_code(&self) -> GrpcCode {
        self.more
            .as_ref()
            .and_then(|m| m.grpc)
            .unwrap_or_else(|| self.code.grpc())
    }

    /// The HTTP status it is rendered with (outside Firestore).
    pub(crate) fn http_status(&self) -> StatusCode {
        self.more
            .as_ref()
            .and_then(|m| m.status)
            .unwrap_or_else(|| self.code.http_status())
    }

    fn bounded_message(&self) -> std::borrow::Cow<'_, str> {
        latchkey_core::bounded(&self.message, MAX_MESSAGE_BYTES)
    }

    /// The response in `protocol`.
    pub(crate) fn render(&self, protocol: Protocol) -> Response {
        let message = self.bounded_message();
        let mut resp = match protocol {
            Protocol::OAuth => {
                let mut r = (
                    self.http_status(),
                    Json(json!({
                        "error": self
                            .more
                            .as_ref()
                            .and_then(|m| m.oauth)
                            .unwrap_or_else(|| self.code.oauth()),
                        "error_description": message
                    })),
                )
                    .into_response();
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            Protocol::Json => {
                (self.http_status(), Json(json!({ "error": message }))).into_response()
            }
            Protocol::Git => (
                self.http_status(),
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{message}\n"),
            )
                .into_response(),
            Protocol::Grpc => grpc_trailers_only(self.grpc_code(), &message),
            Protocol::FirestoreRest => {
                let code = self.grpc_code();
                (
                    code.http_status(),
                    [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                    latchkey_documents::rest_error_body(code, &message),
                )
                    .into_response()
            }
        };
        let unauthenticated = match protocol {
            Protocol::Grpc | Protocol::FirestoreRest => {
                self.grpc_code() == GrpcCode::Unauthenticated
            }
            _ => self.http_status() == StatusCode::UNAUTHORIZED,
        };
        if unauthenticated && protocol != Protocol::Grpc {
            let challenge = match protocol {
                Protocol::Git => "Basic realm=\"latchkey\"",
                _ => "Bearer realm=\"latchkey\"",
            };
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}

/// A trailers-only gRPC response carrying `code` and `message`.
pub(crate) fn grpc_trailers_only(code: GrpcCode, message: &str) -> Response {
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code.as_i32()));
    if let Ok(v) = HeaderValue::from_str(&latchkey_documents::grpc_message_encode(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// gRPC trailers carrying `code` and `message` (the end of a stream).
pub(crate) fn grpc_trailers(code: GrpcCode, message: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from(code.as_i32()));
    if let Ok(v) = HeaderValue::from_str(&latchkey_documents::grpc_message_encode(message)) {
        h.insert("grpc-message", v);
    }
    h
}

impl From<latchkey_git::GitError> for Refusal {
    fn from(e: latchkey_git::GitError) -> Self {
        use latchkey_git::GitError as E;
        let (stage, code) = match &e {
            E::DumbHttp { .. } | E::UnsupportedService { .. } => {
                (Stage::Classify, Code::Unsupported)
            }
            E::InvalidPath { .. } => (Stage::Classify, Code::NotFound),
            E::MethodNotAllowed { .. } => (Stage::Classify, Code::MethodNotAllowed),
            E::UnsupportedMediaType(_) => (Stage::Classify, Code::UnsupportedMediaType),
            E::Protocol(_) | E::ClientBody => (Stage::Classify, Code::Malformed),
            E::SignedPushRefused => (Stage::Classify, Code::SignedPushRefused),
            E::TooLarge(_) => (Stage::Classify, Code::TooLarge),
            E::ClientTimeout => (Stage::Classify, Code::ClientTimeout),
            E::Upstream(_) => (Stage::Act, Code::UpstreamUnavailable),
            E::UpstreamTimeout => (Stage::Act, Code::UpstreamTimeout),
            E::Config(_) => (Stage::Act, Code::Misconfigured),
        };
        Self::new(stage, code, e.public_message()).with_status(e.status())
    }
}

impl From<latchkey_documents::ClassifyError> for Refusal {
    fn from(e: latchkey_documents::ClassifyError) -> Self {
        let grpc = e.code();
        let code = match grpc {
            GrpcCode::Unimplemented => Code::Unsupported,
            GrpcCode::NotFound => Code::NotFound,
            _ => Code::Malformed,
        };
        Self::new(Stage::Classify, code, e.to_string()).with_grpc(grpc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one "audit unavailable" refusal reads the same on every route,
    /// each in its own protocol.
    #[test]
    fn audit_unavailable_renders_in_every_protocol() {
        let r = Refusal::audit_unavailable();
        assert_eq!(r.code.fault(), Fault::Latchkey);
        assert!(r.code.retry_may_help());
        for (p, status) in [
            (Protocol::OAuth, 503),
            (Protocol::Json, 503),
            (Protocol::Git, 503),
            (Protocol::FirestoreRest, 503),
            (Protocol::Grpc, 200),
        ] {
            let resp = r.render(p);
            assert_eq!(resp.status().as_u16(), status, "{p:?}");
        }
        let grpc = r.render(Protocol::Grpc);
        assert_eq!(grpc.headers()["grpc-status"], "14");
    }

    #[test]
    fn a_refused_credential_asks_for_the_kind_the_protocol_sends() {
        let r = Refusal::new(Stage::Authenticate, Code::TokenRefused, "token refused");
        assert_eq!(
            r.render(Protocol::Git).headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"latchkey\""
        );
        assert_eq!(
            r.render(Protocol::OAuth).headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"latchkey\""
        );
        assert_eq!(r.render(Protocol::Grpc).headers()["grpc-status"], "16");
    }
}
