//! Whose the app's own session cookie is. Pure.
//!
//! An app such as Gogs keeps its own session in a cookie (`i_like_gogs`),
//! and that cookie outranks the identity header Latchkey sends: a browser
//! that signed out of Latchkey, or signed in as someone else, would still
//! be the previous user in the app. Sign-out clears the cookie on the
//! gateway's host, but an app on a host of its own keeps its cookies there,
//! out of the sign-out response's reach. So every app cookie is bound to
//! the Latchkey session it was set in: when the app sets one, Latchkey sets
//! a companion cookie holding a tag of the session (`latchkey-owner-APP`,
//! `HttpOnly`); a request whose app cookies come without the current
//! session's tag has them removed before the app sees them, and cleared in
//! the browser.

use http::{HeaderMap, HeaderValue, header};

/// The companion cookie of app `app`.
pub(crate) fn owner_cookie(app: &str) -> String {
    format!("latchkey-owner-{app}")
}

/// The tag of session `session_id` (its id hash; never the cookie secret)
/// for app `app`: not the id itself, so the app's host learns nothing that
/// names the session.
pub(crate) fn tag(app: &str, session_id: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("latchkey-app-owner\0{app}\0{session_id}").as_bytes(),
    );
    hex::encode(&d.as_ref()[..16])
}

/// The value of cookie `name` in the request, if present (first one).
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    crate::sessions::cookie_pairs(headers)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Whether the request's app cookies belong to another session (or to
/// none): true when one of `app_cookies` is present and the companion
/// cookie is missing or holds another tag.
pub(crate) fn stale(headers: &HeaderMap, app: &str, app_cookies: &[String], tag: &str) -> bool {
    let present = app_cookies.iter().any(|c| cookie(headers, c).is_some());
    present && cookie(headers, &owner_cookie(app)) != Some(tag)
}

/// Whether the app's response sets one of its session cookies.
pub(crate) fn sets_app_cookie(response: &HeaderMap, app_cookies: &[String]) -> bool {
    response
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .any(|(n, _)| app_cookies.iter().any(|c| c == n.trim()))
}

/// `Set-Cookie` values that clear `app_cookies` on `path`.
pub(crate) fn clearing(app_cookies: &[String], path: &str, secure: bool) -> Vec<HeaderValue> {
    app_cookies
        .iter()
        .filter_map(|c| {
            HeaderValue::from_str(&format!(
                "{c}=; Path={path}; Max-Age=0; HttpOnly{}",
                if secure { "; Secure" } else { "" }
            ))
            .ok()
        })
        .collect()
}

/// The companion cookie's `Set-Cookie`.
pub(crate) fn companion(app: &str, tag: &str, path: &str, secure: bool) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{}={tag}; Path={path}; HttpOnly; SameSite=Lax{}",
        owner_cookie(app),
        if secure { "; Secure" } else { "" }
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cookies: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(cookies).unwrap_or_else(|e| panic!("{e}")),
        );
        h
    }

    #[test]
    fn an_app_cookie_without_this_sessions_tag_is_stale() {
        let names = vec!["i_like_gogs".to_owned()];
        let mine = tag("gogs", "session-a");
        let theirs = tag("gogs", "session-b");
        assert_ne!(mine, theirs);
        assert!(!stale(&req("other=1"), "gogs", &names, &mine));
        assert!(stale(&req("i_like_gogs=x"), "gogs", &names, &mine));
        assert!(stale(
            &req(&format!("i_like_gogs=x; latchkey-owner-gogs={theirs}")),
            "gogs",
            &names,
            &mine
        ));
        assert!(!stale(
            &req(&format!("i_like_gogs=x; latchkey-owner-gogs={mine}")),
            "gogs",
            &names,
            &mine
        ));
    }

    #[test]
    fn a_response_that_sets_the_app_cookie_is_seen() {
        let names = vec!["i_like_gogs".to_owned()];
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("_csrf=1; Path=/"),
        );
        assert!(!sets_app_cookie(&h, &names));
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("i_like_gogs=abc; Path=/; HttpOnly"),
        );
        assert!(sets_app_cookie(&h, &names));
    }
}
