//! SHIM, until the lead's `crate::sessions` lands: the same signatures as
//! `crate::sessions::Sessions`, and it knows no session (always
//! `Ok(None)`), so until then only Latchkey tokens reach an app. Replace
//! `session_shim::Sessions` with `crate::sessions::Sessions` in `mod.rs`
//! and delete this file.

use http::HeaderMap;
use latchkey_core::Principal;

use crate::pipeline::Refusal;

/// A browser signed in through `/login`.
#[allow(dead_code)]
pub(crate) struct SignedIn {
    pub(crate) principal: Principal,
    pub(crate) session_id: String,
}

/// SHIM of the server-side session store.
#[derive(Debug)]
pub(crate) struct Sessions {
    cookie: String,
}

impl Sessions {
    /// SHIM: the cookie name the real store will use without TLS.
    pub(crate) fn shim(tls: bool) -> Self {
        Self {
            cookie: if tls { "__Host-latchkey" } else { "latchkey" }.to_owned(),
        }
    }

    /// SHIM: never finds a session.
    pub(crate) async fn authenticate(
        &self,
        _headers: &HeaderMap,
    ) -> Result<Option<SignedIn>, Refusal> {
        Ok(None)
    }

    /// The cookie name (`__Host-latchkey` with TLS, `latchkey` without).
    pub(crate) fn cookie_name(&self) -> &str {
        &self.cookie
    }
}
