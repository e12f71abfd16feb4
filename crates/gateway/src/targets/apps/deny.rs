//! The answers of a refused web-app request: an HTML page for a browser
//! (it names the policy, the signed-in user and the request id, and offers
//! to sign in as someone else), JSON for API clients. Pure rendering;
//! every value is HTML-escaped.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

/// Percent-encodes `s` for a query value (everything but unreserved).
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/login?rd=<path>`: where a browser without a credential goes.
pub(crate) fn login_location(return_to: &str) -> String {
    format!("/login?rd={}", encode_component(return_to))
}

/// The browser redirect to sign in, back to `return_to` after.
pub(crate) fn login_redirect(return_to: &str) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&login_location(return_to)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// What a denial page says.
#[derive(Debug, Clone)]
pub(crate) struct Denial<'a> {
    /// The HTTP status (403 for a policy denial).
    pub(crate) status: StatusCode,
    /// Short title ("Access denied").
    pub(crate) title: &'a str,
    /// The reason a person can read.
    pub(crate) reason: &'a str,
    /// The deciding policy ids (empty for a default deny).
    pub(crate) policies: &'a [String],
    /// Who is signed in (`None` before authentication).
    pub(crate) user: Option<&'a str>,
    /// The request id, for the audit trail.
    pub(crate) request_id: &'a str,
    /// The path (and query) to come back to after signing in again.
    pub(crate) return_to: &'a str,
}

impl Denial<'_> {
    /// The HTML page.
    pub(crate) fn html(&self) -> Response {
        let policies = if self.policies.is_empty() {
            "no policy permits it (default deny)".to_owned()
        } else {
            self.policies
                .iter()
                .map(|p| format!("<code>{}</code>", crate::html::escape(p)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let user = match self.user {
            Some(u) => format!(
                "<p>Signed in as <strong>{}</strong>.</p>",
                crate::html::escape(u)
            ),
            None => String::new(),
        };
        let relogin = format!(
            "/logout?rd={}",
            encode_component(&login_location(self.return_to))
        );
        let body = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width\">\
             <title>{title} · Latchkey</title></head><body>\
             <h1>{title}</h1><p>{reason}</p><p>Decided by: {policies}</p>{user}\
             <p>Request id: <code>{rid}</code> (give it to your administrator; it names the \
             audit record).</p>\
             <p><a href=\"{relogin}\">Sign in as someone else</a></p></body></html>\n",
            title = crate::html::escape(self.title),
            reason = crate::html::escape(self.reason),
            rid = crate::html::escape(self.request_id),
            relogin = crate::html::escape(&relogin),
        );
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            "content-security-policy",
            HeaderValue::from_static("default-src 'none'; base-uri 'none'; form-action 'none'"),
        );
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        resp
    }

    /// The JSON body: `{error, reason, policies, request_id}`.
    pub(crate) fn json(&self, error: &str) -> Response {
        let mut resp = (
            self.status,
            axum::Json(json!({
                "error": error,
                "reason": self.reason,
                "policies": self.policies,
                "request_id": self.request_id,
            })),
        )
            .into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_encodes() {
        assert_eq!(
            crate::html::escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(
            login_location("/a b?x=1&y=/"),
            "/login?rd=%2Fa%20b%3Fx%3D1%26y%3D%2F"
        );
    }

    #[tokio::test]
    async fn the_page_escapes_everything() {
        let policies = vec!["<script>".to_owned()];
        let d = Denial {
            status: StatusCode::FORBIDDEN,
            title: "Access denied",
            reason: "<img src=x onerror=alert(1)>",
            policies: &policies,
            user: Some("\"><b>"),
            request_id: "r<1>",
            return_to: "/x\"y",
        };
        let resp = d.html();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("<script>") && !text.contains("<img") && !text.contains("<b>"));
        assert!(text.contains("&lt;script&gt;"));
        assert!(
            text.contains("/logout?rd=%2Flogin%3Frd%3D%252Fx%2522y"),
            "{text}"
        );
    }
}
