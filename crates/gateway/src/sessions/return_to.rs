//! Where the browser may be sent after signing in or out: a path on this
//! gateway, or a URL on one of the exact origins configured. Pure.
//!
//! Every open redirect that hit oauth2-proxy and Pomerium came from a
//! checker that read a URL differently from the browser: `//evil` and
//! `/\evil` are other hosts to a browser, a tab or newline inside a URL is
//! dropped by it (so `/%09/evil` becomes `//evil`), `https:evil` is an
//! absolute URL to it, `https://good@evil` is the host `evil`, and
//! `good.example.evil` ends with `good.example` without being it. So this
//! accepts only two plain shapes and refuses everything else rather than
//! trying to normalise it:
//!
//! * a path: `/` followed by anything but a second `/` or `\`, with no
//!   control character, whitespace or backslash anywhere;
//! * an absolute URL whose `scheme://authority` is, byte for byte
//!   (case-insensitively), one of the allowed origins, followed by `/`, `?`,
//!   `#` or nothing, with the same character rules.

/// The longest return address kept (a longer one is refused, not cut).
pub(crate) const MAX_RETURN_TO_BYTES: usize = 2048;

/// Why a return address was refused; the message is for the log and the
/// error page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReturnToError {
    /// Longer than [`MAX_RETURN_TO_BYTES`].
    #[error("the return address is longer than {MAX_RETURN_TO_BYTES} bytes")]
    TooLong,
    /// A character browsers drop or reinterpret.
    #[error(
        "the return address contains a control character, whitespace or a backslash; browsers read those differently"
    )]
    BadCharacter,
    /// `//host` or `/\host`: another host to a browser.
    #[error("the return address starts with `//` or `/\\`, which a browser reads as another host")]
    SchemeRelative,
    /// An absolute URL on an origin not configured.
    #[error(
        "the return address is not on this gateway or an allowed origin; use a path such as `/apps/wiki/`"
    )]
    ForeignOrigin,
}

/// The allowed places to return to: this gateway's origin and any exact
/// origins configured (`https://gogs.example.com`), lower-cased, without a
/// trailing slash.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReturnOrigins {
    origins: Vec<String>,
}

impl ReturnOrigins {
    /// From origins as configured (`scheme://host[:port]`); each is
    /// lower-cased and stripped of a trailing `/`.
    pub(crate) fn new<'a>(origins: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            origins: origins
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Checks `target` (already percent-decoded once, as read from the
    /// query) and returns it unchanged when it may be followed.
    pub(crate) fn check<'a>(&self, target: &'a str) -> Result<&'a str, ReturnToError> {
        if target.len() > MAX_RETURN_TO_BYTES {
            return Err(ReturnToError::TooLong);
        }
        if target
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        {
            return Err(ReturnToError::BadCharacter);
        }
        if let Some(rest) = target.strip_prefix('/') {
            if rest.starts_with('/') {
                return Err(ReturnToError::SchemeRelative);
            }
            return Ok(target);
        }
        // An absolute URL: its origin must be an allowed one exactly, and
        // what follows must begin a path, a query or a fragment (so
        // `https://good.example.evil` and `https://good.example@evil` fail).
        let lower = target.to_ascii_lowercase();
        for origin in &self.origins {
            if let Some(rest) = lower.strip_prefix(origin.as_str())
                && (rest.is_empty()
                    || rest.starts_with('/') && !rest.starts_with("//")
                    || rest.starts_with('?')
                    || rest.starts_with('#'))
            {
                return Ok(target);
            }
        }
        Err(ReturnToError::ForeignOrigin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins() -> ReturnOrigins {
        ReturnOrigins::new(["https://gw.example.com", "https://gogs.example.com/"])
    }

    #[test]
    fn paths_and_exact_origins_are_accepted() {
        for ok in [
            "/",
            "/apps/wiki/",
            "/apps/wiki/page?x=1&y=%2F%2Fevil#frag",
            "/@evil.com",
            "/%2F%2Fevil.com",
            "https://gw.example.com",
            "https://gw.example.com/",
            "https://GW.example.com/apps",
            "https://gogs.example.com/alice/repo",
            "https://gogs.example.com?x",
            "https://gogs.example.com#x",
        ] {
            assert_eq!(origins().check(ok), Ok(ok), "{ok}");
        }
    }

    /// Each of these is an open redirect some proxy shipped.
    #[test]
    fn the_open_redirect_tricks_are_refused() {
        use ReturnToError::*;
        for (bad, why) in [
            ("//evil.com", SchemeRelative),
            ("//evil.com/path", SchemeRelative),
            ("///evil.com", SchemeRelative),
            ("/\\evil.com", BadCharacter),
            ("\\\\evil.com", BadCharacter),
            ("/\t/evil.com", BadCharacter),
            ("/\n/evil.com", BadCharacter),
            ("/\r\n/evil.com", BadCharacter),
            (" /evil.com", BadCharacter),
            ("/ /evil.com", BadCharacter),
            ("/\u{a0}/evil.com", BadCharacter),
            ("/\u{2028}/evil.com", BadCharacter),
            ("/\u{0}/evil.com", BadCharacter),
            ("https:evil.com", ForeignOrigin),
            ("https:/evil.com", ForeignOrigin),
            ("http:evil.com", ForeignOrigin),
            ("javascript:alert(1)", ForeignOrigin),
            ("data:text/html,x", ForeignOrigin),
            ("evil.com", ForeignOrigin),
            ("https://evil.com", ForeignOrigin),
            ("https://gw.example.com@evil.com", ForeignOrigin),
            ("https://gw.example.com:443@evil.com/", ForeignOrigin),
            ("https://user@gw.example.com/", ForeignOrigin),
            ("https://gw.example.com.evil.com/", ForeignOrigin),
            ("https://evilgw.example.com/", ForeignOrigin),
            ("https://gw.example.comevil/", ForeignOrigin),
            ("https://gw.example.com:8443/", ForeignOrigin),
            ("http://gw.example.com/", ForeignOrigin),
            ("https://gw.example.com//evil.com", ForeignOrigin),
            ("https://gw.example.com\\@evil.com", BadCharacter),
            ("", ForeignOrigin),
        ] {
            assert_eq!(origins().check(bad), Err(why), "{bad:?}");
        }
        assert_eq!(
            origins().check(&format!("/{}", "a".repeat(MAX_RETURN_TO_BYTES))),
            Err(TooLong)
        );
    }

    /// What is accepted resolves, as a URL parser that follows the WHATWG
    /// rules browsers use resolves it, to an allowed origin.
    #[test]
    fn accepted_addresses_resolve_to_an_allowed_origin() {
        let base =
            url::Url::parse("https://gw.example.com/some/page").unwrap_or_else(|e| panic!("{e}"));
        for ok in [
            "/",
            "/apps/wiki/",
            "/@evil.com",
            "/%2F%2Fevil.com",
            "/%09/evil.com",
            "https://gogs.example.com/x",
        ] {
            let to = origins().check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            let resolved = base.join(to).unwrap_or_else(|e| panic!("{e}"));
            let host = resolved.host_str().unwrap_or_default();
            assert!(
                host == "gw.example.com" || host == "gogs.example.com",
                "{ok} resolved to {resolved}"
            );
        }
    }
}
