//! Authenticate: turn what the caller presented into a verified Latchkey
//! token, or a refusal that tells the caller what to fix.

use base64::Engine;
use http::HeaderMap;
use latchkey_tokens::{TokenError, TokenVerifier, VerifiedToken};

use super::refusal::{Code, Refusal, Stage};

/// Where the credential was found, so the refusal can ask for the same kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Bearer,
    Basic,
}

/// A credential that could not be accepted.
#[derive(Debug)]
pub(crate) enum AuthFailure {
    /// Nothing was presented.
    Missing,
    /// The Authorization header could not be read.
    Unreadable(&'static str),
    /// The token was presented but refused.
    Token(TokenError),
}

impl AuthFailure {
    /// A message for the caller: says what was wrong, never echoes the token.
    pub(crate) fn message(&self) -> String {
        match self {
            Self::Missing => "authentication required: present a Latchkey token as a Bearer \
                              token or as the Basic-auth password"
                .into(),
            Self::Unreadable(why) => format!("unreadable Authorization header: {why}"),
            // The token's own claims (`iss`, `aud`) can appear in `e`.
            Self::Token(e) => format!(
                "token refused: {}",
                latchkey_core::bounded(&e.to_string(), 300)
            ),
        }
    }

    /// The refusal's code.
    pub(crate) fn code(&self) -> Code {
        match self {
            Self::Missing => Code::MissingCredential,
            Self::Unreadable(_) => Code::UnreadableCredential,
            Self::Token(_) => Code::TokenRefused,
        }
    }

    /// The refusal, with `hint` (what this route needs) appended.
    pub(crate) fn refusal(&self, hint: Option<&str>) -> Refusal {
        let message = match hint {
            Some(h) => format!("{} ({h})", self.message()),
            None => self.message(),
        };
        Refusal::new(Stage::Authenticate, self.code(), message)
    }
}

/// Extracts the bearer token or Basic-auth password from the headers.
pub(crate) fn credential(headers: &HeaderMap) -> Result<(Scheme, String), AuthFailure> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthFailure::Missing);
    };
    if values.next().is_some() {
        // Two credentials are ambiguous: a proxy in between might pick the
        // other one. Refuse rather than guess.
        return Err(AuthFailure::Unreadable(
            "more than one Authorization header; send exactly one",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthFailure::Unreadable("not ASCII"))?
        .trim();
    let (scheme, rest) = value.split_once(' ').ok_or(AuthFailure::Unreadable(
        "expected `Bearer <token>` or `Basic <credentials>`",
    ))?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(AuthFailure::Missing);
        }
        return Ok((Scheme::Bearer, rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| AuthFailure::Unreadable("Basic credentials are not base64"))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| AuthFailure::Unreadable("Basic credentials are not UTF-8"))?;
        let (_, password) = text
            .split_once(':')
            .ok_or(AuthFailure::Unreadable("Basic credentials lack a `:`"))?;
        if password.is_empty() {
            return Err(AuthFailure::Missing);
        }
        return Ok((Scheme::Basic, password.to_owned()));
    }
    Err(AuthFailure::Unreadable(
        "unsupported scheme; use Bearer or Basic",
    ))
}

/// Verifies the caller's Latchkey token for `audience`.
pub(crate) fn authenticate(
    verifier: &TokenVerifier,
    headers: &HeaderMap,
    audience: &str,
) -> Result<(Scheme, VerifiedToken), AuthFailure> {
    let (scheme, token) = credential(headers)?;
    let verified = verifier
        .verify(&token, audience)
        .map_err(AuthFailure::Token)?;
    Ok((scheme, verified))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let mut h = headers("Bearer a.b.c");
        h.append(http::header::AUTHORIZATION, "Bearer owner".parse().unwrap());
        assert!(matches!(credential(&h), Err(AuthFailure::Unreadable(_))));
    }

    #[test]
    fn basic_password_is_the_token() {
        let b = base64::engine::general_purpose::STANDARD.encode("anyone:tok.en.x");
        let (s, t) = credential(&headers(&format!("Basic {b}"))).unwrap();
        assert_eq!((s, t.as_str()), (Scheme::Basic, "tok.en.x"));
    }

    #[test]
    fn bearer_token() {
        let (s, t) = credential(&headers("Bearer abc")).unwrap();
        assert_eq!((s, t.as_str()), (Scheme::Bearer, "abc"));
    }

    #[test]
    fn garbage_is_refused_clearly() {
        assert!(matches!(
            credential(&headers("Digest x")),
            Err(AuthFailure::Unreadable(_))
        ));
        assert!(matches!(
            credential(&headers("Basic !!!")),
            Err(AuthFailure::Unreadable(_))
        ));
        assert!(matches!(
            credential(&HeaderMap::new()),
            Err(AuthFailure::Missing)
        ));
    }
}
