//! Pure header handling for the app proxy: what the caller's request loses
//! before it reaches the app, and what the app's response loses before it
//! reaches the caller.
//!
//! INVARIANT (DESIGN 4): an app sees identity only from Latchkey. Every
//! identity header any preset or any app's `headers` map uses, Latchkey's
//! assertion, `Forwarded` and every `X-Forwarded-*` are removed from the
//! caller's request whatever their spelling: names are compared as nginx,
//! Apache and WSGI compare them (lower-cased, `_` read as `-`, so
//! `X_WEBAUTH_USER` is `X-WEBAUTH-USER`; the class of oauth2-proxy
//! CVE-2025-64484), and every repetition goes.

use std::collections::BTreeSet;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::cgi_form;

/// The assertion header: an Ed25519 JWT for the app's audience.
pub(crate) const ASSERTION_HEADER: &str = "x-latchkey-assertion";

/// Identity headers of every preset (Gogs, Gitea, Backstage's
/// oauth2Proxy provider), in CGI form.
pub(crate) const PRESET_IDENTITY_HEADERS: &[&str] = &[
    "x-webauth-user",
    "x-webauth-email",
    "x-webauth-fullname",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-forwarded-groups",
    "x-oauth2-proxy-id-token",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-preferred-username",
    "x-auth-request-groups",
    "x-auth-request-access-token",
    "remote-user",
];

/// Hop-by-hop headers (RFC 9110 §7.6.1) and their common companions.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What the caller's request must lose, computed once per gateway.
#[derive(Debug, Clone)]
pub(crate) struct StripSet {
    /// CGI-form names removed wherever they appear.
    names: BTreeSet<String>,
    /// Latchkey's own cookie names (never forwarded, never set by an app).
    pub(crate) session_cookies: Vec<String>,
}

impl StripSet {
    /// The set for a gateway whose apps' `headers` maps name `generic`.
    pub(crate) fn new<'a>(
        generic: impl IntoIterator<Item = &'a str>,
        session_cookies: &[&str],
    ) -> Self {
        let mut names: BTreeSet<String> = PRESET_IDENTITY_HEADERS
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        names.insert(ASSERTION_HEADER.to_owned());
        names.insert("forwarded".to_owned());
        names.insert("x-real-ip".to_owned());
        names.insert("x-client-ip".to_owned());
        for g in generic {
            names.insert(cgi_form(g));
        }
        Self {
            names,
            session_cookies: session_cookies.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn strips(&self, name: &str) -> bool {
        let c = cgi_form(name);
        self.names.contains(&c) || c.starts_with("x-forwarded-")
    }
}

/// Names the `Connection` header lists (also hop-by-hop).
fn connection_listed(headers: &HeaderMap) -> BTreeSet<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// `Cookie` without Latchkey's session cookies; `None` when nothing is
/// left. Cookie names are case-sensitive (RFC 6265).
fn without_cookies(value: &str, drop: &[String]) -> Option<String> {
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n).trim();
            !pair.is_empty() && !drop.iter().any(|d| d == name)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// Removes cookies named `names` from the `Cookie` headers of `headers`
/// (a header left empty goes).
pub(crate) fn drop_cookies(headers: &mut HeaderMap, names: &[String]) {
    let kept: Vec<HeaderValue> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| without_cookies(v, names))
        .filter_map(|v| HeaderValue::from_str(&v).ok())
        .collect();
    headers.remove(header::COOKIE);
    for v in kept {
        headers.append(header::COOKIE, v);
    }
}

/// The caller's headers as the app may see them: hop-by-hop headers,
/// `Host`, every identity spelling, Latchkey's session cookie and (when
/// it carried the Latchkey token) `Authorization` removed. `keep_upgrade`
/// keeps `Upgrade` and `Connection: upgrade` for a WebSocket handshake.
pub(crate) fn request_headers(
    from: &HeaderMap,
    strip: &StripSet,
    drop_authorization: bool,
    keep_upgrade: bool,
) -> HeaderMap {
    let listed = connection_listed(from);
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || listed.contains(n) || n == "host" || strip.strips(n) {
            continue;
        }
        if n == "authorization" && drop_authorization {
            continue;
        }
        if name == header::COOKIE {
            let Ok(text) = value.to_str() else {
                // Not text: cannot be read to remove our cookie, so drop it.
                continue;
            };
            if let Some(kept) = without_cookies(text, &strip.session_cookies)
                && let Ok(v) = HeaderValue::from_str(&kept)
            {
                out.append(header::COOKIE, v);
            }
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if keep_upgrade && let Some(up) = from.get(header::UPGRADE) {
        out.insert(header::UPGRADE, up.clone());
        out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    out
}

/// The app's response headers as the caller may see them: hop-by-hop
/// headers removed (but `Upgrade`/`Connection` of a 101 kept), no
/// `Set-Cookie` for Latchkey's own cookies, and a `Location` on the app's
/// own origin rewritten to the public one.
pub(crate) fn response_headers(
    from: &HeaderMap,
    strip: &StripSet,
    rewrite: &LocationRewrite,
    switching: bool,
) -> HeaderMap {
    let listed = connection_listed(from);
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let n = name.as_str();
        let hop = HOP_BY_HOP.contains(&n) || listed.contains(n);
        if hop && !(switching && (n == "upgrade" || n == "connection")) {
            continue;
        }
        if name == header::SET_COOKIE {
            let cookie = value.to_str().unwrap_or("");
            let cname = cookie.split_once('=').map_or(cookie, |(c, _)| c).trim();
            if strip.session_cookies.iter().any(|s| s == cname) || value.to_str().is_err() {
                tracing::warn!("an app tried to set Latchkey's session cookie; dropped");
                continue;
            }
        }
        if name == header::LOCATION
            && let Ok(loc) = value.to_str()
            && let Some(new) = rewrite.apply(loc)
            && let Ok(v) = HeaderValue::from_str(&new)
        {
            out.append(name.clone(), v);
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// How a `Location` on the app's own origin becomes the public one.
#[derive(Debug, Clone)]
pub(crate) struct LocationRewrite {
    /// `scheme://host[:port]` of the upstream, lower-case.
    pub(crate) upstream_origin: String,
    /// The upstream base path (without trailing `/`), e.g. `` or `/gogs`.
    pub(crate) upstream_base: String,
    /// `scheme://host[:port]` the caller used.
    pub(crate) public_origin: String,
    /// The prefix the app lives under at the gateway when it was stripped
    /// (`/apps/gogs`), else empty.
    pub(crate) public_prefix: String,
}

impl LocationRewrite {
    /// The rewritten location, or `None` to keep it as sent.
    pub(crate) fn apply(&self, loc: &str) -> Option<String> {
        let lower = loc.to_ascii_lowercase();
        let rest = if lower.starts_with(&self.upstream_origin)
            && matches!(
                loc.as_bytes().get(self.upstream_origin.len()),
                None | Some(b'/' | b'?' | b'#')
            ) {
            &loc[self.upstream_origin.len()..]
        } else if loc.starts_with('/') && !loc.starts_with("//") && !self.public_prefix.is_empty() {
            // A path on the app: under the prefix at the gateway.
            return Some(format!("{}{}", self.public_prefix, self.strip_base(loc)));
        } else {
            return None;
        };
        let rest = if rest.is_empty() { "/" } else { rest };
        Some(format!(
            "{}{}{}",
            self.public_origin,
            self.public_prefix,
            self.strip_base(rest)
        ))
    }

    fn strip_base<'a>(&self, path: &'a str) -> &'a str {
        if self.upstream_base.is_empty() {
            return path;
        }
        match path.strip_prefix(self.upstream_base.as_str()) {
            Some("") => "/",
            Some(r) if r.starts_with(['/', '?', '#']) => r,
            _ => path,
        }
    }
}

/// A header name, or `None` when the configured name is not one.
pub(crate) fn header_name(name: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(name.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip() -> StripSet {
        StripSet::new(["X-User", "X-Groups"], &["latchkey", "__Host-latchkey"])
    }

    #[test]
    fn every_identity_spelling_is_stripped() {
        let smuggled = [
            "X-WEBAUTH-USER",
            "x-webauth-user",
            "X-Webauth-User",
            "X_WEBAUTH_USER",
            "x_webauth_user",
            "X-WEBAUTH_USER",
            "X-WEBAUTH-EMAIL",
            "X_WEBAUTH_FULLNAME",
            "X-Forwarded-User",
            "X_Forwarded_Email",
            "X-Forwarded-Preferred-Username",
            "X-Forwarded-For",
            "X_FORWARDED_FOR",
            "X-Forwarded-Host",
            "X-Forwarded-Proto",
            "Forwarded",
            "X-Real-IP",
            "X-Latchkey-Assertion",
            "X_LATCHKEY_ASSERTION",
            "X-User",
            "X_USER",
            "x-groups",
            "Remote-User",
            "REMOTE_USER",
            "X-Auth-Request-User",
        ];
        let mut h = HeaderMap::new();
        for name in smuggled {
            let n = HeaderName::from_bytes(name.as_bytes()).unwrap();
            h.append(n.clone(), HeaderValue::from_static("root"));
            h.append(n, HeaderValue::from_static("admin"));
        }
        h.insert("x-other", HeaderValue::from_static("kept"));
        let out = request_headers(&h, &strip(), false, false);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out["x-other"], "kept");
    }

    #[test]
    fn session_cookie_goes_others_stay() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; latchkey=secret; i_like_gogs=s"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-latchkey=x"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("Latchkey=case-kept"),
        );
        let out = request_headers(&h, &strip(), false, false);
        let cookies: Vec<_> = out.get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; i_like_gogs=s", "Latchkey=case-kept"]);
    }

    #[test]
    fn authorization_goes_when_it_carried_the_token() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        assert!(request_headers(&h, &strip(), true, false).is_empty());
        assert_eq!(request_headers(&h, &strip(), false, false).len(), 1);
    }

    #[test]
    fn hop_by_hop_and_connection_listed_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::HOST, HeaderValue::from_static("evil"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(request_headers(&h, &strip(), false, false).is_empty());
        let ws = request_headers(&h, &strip(), false, true);
        assert_eq!(ws[header::UPGRADE], "websocket");
        assert_eq!(ws[header::CONNECTION], "upgrade");
    }

    fn rw(prefix: &str) -> LocationRewrite {
        LocationRewrite {
            upstream_origin: "http://127.0.0.1:3000".into(),
            upstream_base: String::new(),
            public_origin: "https://gw.example.com".into(),
            public_prefix: prefix.into(),
        }
    }

    #[test]
    fn locations_on_the_app_become_public() {
        let r = rw("");
        assert_eq!(
            r.apply("http://127.0.0.1:3000/user/login?x=1").as_deref(),
            Some("https://gw.example.com/user/login?x=1")
        );
        assert_eq!(
            r.apply("http://127.0.0.1:3000").as_deref(),
            Some("https://gw.example.com/")
        );
        assert_eq!(r.apply("http://127.0.0.1:30001/x"), None);
        assert_eq!(r.apply("https://elsewhere.example/"), None);
        assert_eq!(r.apply("/user/login"), None);
        let p = rw("/apps/gogs");
        assert_eq!(
            p.apply("/user/login").as_deref(),
            Some("/apps/gogs/user/login")
        );
        assert_eq!(p.apply("//evil.example/"), None);
        assert_eq!(
            p.apply("http://127.0.0.1:3000/a").as_deref(),
            Some("https://gw.example.com/apps/gogs/a")
        );
    }

    #[test]
    fn apps_cannot_set_latchkeys_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("latchkey=x; Path=/"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static(" __Host-latchkey=x"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("i_like_gogs=1"),
        );
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let out = response_headers(&h, &strip(), &rw(""), false);
        let set: Vec<_> = out.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(set, ["i_like_gogs=1"]);
        assert!(out.get(header::TRANSFER_ENCODING).is_none());
    }
}
