//! gRPC status codes and Google's error shapes, so a refusal looks to a
//! Firestore client exactly like one from Firestore itself.

use std::fmt;

use http::StatusCode;

/// A gRPC status code (`google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrpcCode {
    /// Success.
    Ok = 0,
    /// The caller cancelled.
    Cancelled = 1,
    /// An error with no better code.
    Unknown = 2,
    /// The request is malformed.
    InvalidArgument = 3,
    /// The deadline passed.
    DeadlineExceeded = 4,
    /// The resource does not exist.
    NotFound = 5,
    /// The resource already exists.
    AlreadyExists = 6,
    /// The caller may not do this.
    PermissionDenied = 7,
    /// A quota or limit was hit.
    ResourceExhausted = 8,
    /// The system is not in a state that allows this.
    FailedPrecondition = 9,
    /// A concurrency conflict; retry the whole transaction.
    Aborted = 10,
    /// Out of the valid range.
    OutOfRange = 11,
    /// Not implemented or not supported.
    Unimplemented = 12,
    /// An internal error.
    Internal = 13,
    /// Try again later.
    Unavailable = 14,
    /// Data was lost.
    DataLoss = 15,
    /// No valid credentials.
    Unauthenticated = 16,
}

impl GrpcCode {
    const ALL: [GrpcCode; 17] = [
        Self::Ok,
        Self::Cancelled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The numeric code, as sent in `grpc-status`.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code for a number; unknown numbers are `Unknown`, as gRPC says.
    pub fn from_i32(code: i32) -> Self {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .unwrap_or(Self::Unknown)
    }

    /// The HTTP status Google's REST front end uses for this code.
    pub fn http_status(self) -> StatusCode {
        match self {
            Self::Ok => StatusCode::OK,
            // 499 is Google's "client closed request".
            Self::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Self::Unknown | Self::Internal | Self::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
            Self::InvalidArgument | Self::FailedPrecondition | Self::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists | Self::Aborted => StatusCode::CONFLICT,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }

    /// The upper-case name used in REST errors, e.g. `PERMISSION_DENIED`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Cancelled => "CANCELLED",
            Self::Unknown => "UNKNOWN",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Aborted => "ABORTED",
            Self::OutOfRange => "OUT_OF_RANGE",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::Internal => "INTERNAL",
            Self::Unavailable => "UNAVAILABLE",
            Self::DataLoss => "DATA_LOSS",
            Self::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Google's JSON error body:
/// `{"error":{"code":403,"message":"...","status":"PERMISSION_DENIED"}}`.
pub fn rest_error_body(code: GrpcCode, message: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": {
            "code": code.http_status().as_u16(),
            "message": message,
            "status": code.name(),
        }
    });
    // Serializing a `Value` built from strings and numbers cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Percent-encodes a `grpc-message` value: every byte outside printable
/// ASCII, and `%` itself, becomes `%XX` (the gRPC HTTP/2 spec).
pub fn grpc_message_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a `grpc-message` value; malformed escapes are kept as they are.
pub fn grpc_message_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        for (i, c) in GrpcCode::ALL.iter().enumerate() {
            assert_eq!(c.as_i32() as usize, i);
            assert_eq!(GrpcCode::from_i32(c.as_i32()), *c);
        }
        assert_eq!(GrpcCode::from_i32(99), GrpcCode::Unknown);
        assert_eq!(GrpcCode::from_i32(-1), GrpcCode::Unknown);
        assert_eq!(GrpcCode::PermissionDenied.http_status(), 403);
        assert_eq!(GrpcCode::Unauthenticated.http_status(), 401);
        assert_eq!(GrpcCode::InvalidArgument.http_status(), 400);
        assert_eq!(GrpcCode::NotFound.http_status(), 404);
        assert_eq!(GrpcCode::Unavailable.http_status(), 503);
        assert_eq!(GrpcCode::Aborted.http_status(), 409);
        assert_eq!(GrpcCode::ResourceExhausted.http_status(), 429);
        assert_eq!(GrpcCode::Internal.http_status(), 500);
        assert_eq!(GrpcCode::Unimplemented.http_status(), 501);
        assert_eq!(GrpcCode::Cancelled.http_status(), 499);
        assert_eq!(GrpcCode::PermissionDenied.name(), "PERMISSION_DENIED");
        assert_eq!(GrpcCode::Unauthenticated.as_i32(), 16);
    }

    #[test]
    fn error_body() {
        let body = rest_error_body(GrpcCode::PermissionDenied, "denied by \"p1\"");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": 403, "message": "denied by \"p1\"", "status": "PERMISSION_DENIED"}})
        );
    }

    #[test]
    fn grpc_message() {
        assert_eq!(grpc_message_encode("plain text ok"), "plain text ok");
        assert_eq!(grpc_message_encode("100%"), "100%25");
        assert_eq!(grpc_message_encode("a\nb"), "a%0Ab");
        assert_eq!(grpc_message_encode("café"), "caf%C3%A9");
        for s in ["100%", "a\nb", "café ☕", "%zz", ""] {
            assert_eq!(grpc_message_decode(&grpc_message_encode(s)), s);
        }
        assert_eq!(grpc_message_decode("%zz%4"), "%zz%4");
    }
}
