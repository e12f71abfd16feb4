use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use latchkey_core::SharedClock;
use tokio::sync::Mutex;

use crate::service_account::{JWT_BEARER_GRANT, ServiceAccountKey};
use crate::token::{oauth_error_detail, parse_token_response};
use crate::{AccessToken, AuthError};

/// How long a token must still be valid when [`AccessTokenProvider::token`]
/// hands it out; it is refreshed this long before it expires.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The bound on one token fetch, connection to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The metadata server's host when `$GCE_METADATA_HOST` is not set.
const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// The path of the default service account's token on the metadata server.
const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// The Firestore emulator accepts this bearer as its administrator.
const EMULATOR_TOKEN: &str = "owner";

/// A token response larger than this is refused rather than buffered.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Where upstream access tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A Firestore emulator: always `owner` (the emulator's admin bearer).
    Emulator,
    /// A service-account key file (JSON with `type=service_account`,
    /// `client_email`, `private_key` (PEM RSA), `private_key_id`, `token_uri`).
    ServiceAccountFile(PathBuf),
    /// The GCE/GKE metadata server (`http://metadata.google.internal`, or
    /// `http://$GCE_METADATA_HOST` if that is set).
    Metadata,
    /// A metadata server at an explicit base URL such as
    /// `http://127.0.0.1:8080`, for when the environment must not decide
    /// (tests, a metadata proxy sidecar).
    MetadataAt(String),
}

/// Hands out Google access tokens for upstream calls: cached, refreshed
/// before expiry, one fetch at a time however many callers ask.
///
/// Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct AccessTokenProvider {
    shared: Arc<Shared>,
    timeout: Duration,
    refresh_margin: Duration,
}

struct Shared {
    upstream: Upstream,
    clock: SharedClock,
    http: reqwest::Client,
    /// Completed fetches (successful or not), so a caller that queued behind
    /// a fetch can tell it finished.
    attempts: AtomicU64,
    state: Mutex<State>,
}

enum Upstream {
    Emulator,
    ServiceAccount {
        key: ServiceAccountKey,
        /// The scopes, space-separated as the `scope` claim wants them.
        scope: String,
    },
    Metadata {
        token_url: String,
    },
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    last_error: Option<AuthError>,
}

struct Cached {
    token: AccessToken,
    /// Unix seconds after which the token is fetched again.
    refresh_at: i64,
}

impl AccessTokenProvider {
    /// A provider for `scopes` (see [`crate::DATASTORE_SCOPE`]). A key file
    /// is read and checked now, so a bad one fails start-up, not the first
    /// request.
    pub fn new(
        source: CredentialSource,
        scopes: Vec<String>,
        clock: SharedClock,
    ) -> Result<Self, AuthError> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(DEFAULT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        let upstream = match source {
            CredentialSource::Emulator => Upstream::Emulator,
            CredentialSource::ServiceAccountFile(path) => {
                if scopes.is_empty() {
                    return Err(AuthError::Config(format!(
                        "no OAuth scopes given for service account `{}`; Firestore needs `{}`",
                        path.display(),
                        crate::DATASTORE_SCOPE
                    )));
                }
                Upstream::ServiceAccount {
                    key: ServiceAccountKey::load(&path)?,
                    scope: scopes.join(" "),
                }
            }
            CredentialSource::Metadata => {
                let host = std::env::var("GCE_METADATA_HOST")
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| DEFAULT_METADATA_HOST.into());
                http = http.no_proxy();
                Upstream::Metadata {
                    token_url: metadata_token_url(&format!("http://{host}"), &scopes)?,
                }
            }
            CredentialSource::MetadataAt(base) => {
                http = http.no_proxy();
                Upstream::Metadata {
                    token_url: metadata_token_url(&base, &scopes)?,
                }
            }
        };
        let http = http
            .build()
            .map_err(|e| AuthError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                upstream,
                clock,
                http,
                attempts: AtomicU64::new(0),
                state: Mutex::new(State::default()),
            }),
            timeout: DEFAULT_TIMEOUT,
            refresh_margin: DEFAULT_REFRESH_MARGIN,
        })
    }

    /// Bounds each fetch to `timeout` instead of [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Refreshes `margin` before expiry instead of [`DEFAULT_REFRESH_MARGIN`].
    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// A bearer token valid for at least the refresh margin (or half its
    /// lifetime, if Google issued it with less than twice the margin left).
    ///
    /// Concurrent callers share one fetch; callers that queued behind a
    /// failed fetch get its error rather than each waiting out another
    /// time-out.
    pub async fn token(&self) -> Result<AccessToken, AuthError> {
        if let Upstream::Emulator = self.shared.upstream {
            return Ok(AccessToken::new(EMULATOR_TOKEN.into(), None));
        }
        let seen = self.shared.attempts.load(Ordering::SeqCst);
        let mut state = self.shared.state.lock().await;
        let now = self.now();
        if let Some(c) = &state.cached
            && now < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        if self.shared.attempts.load(Ordering::SeqCst) != seen
            && let Some(e) = &state.last_error
        {
            return Err(e.clone());
        }

        let result = tokio::time::timeout(self.timeout, self.fetch(now))
            .await
            .unwrap_or_else(|_| {
                Err(AuthError::Timeout {
                    url: self.shared.upstream.url().into(),
                    after: self.timeout,
                })
            });
        // INVARIANT: `attempts` moves only while `state` is locked, after the
        // outcome is known and before it is stored.
        self.shared.attempts.fetch_add(1, Ordering::SeqCst);
        match result {
            Ok(token) => {
                let expires_at = token.expires_at_unix().unwrap_or(now);
                let lifetime = expires_at - now;
                let margin = i64::try_from(self.refresh_margin.as_secs()).unwrap_or(i64::MAX);
                tracing::debug!(expires_in = lifetime, "fetched a Google access token");
                state.cached = Some(Cached {
                    token: token.clone(),
                    refresh_at: expires_at - margin.min(lifetime / 2),
                });
                state.last_error = None;
                Ok(token)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch a Google access token");
                state.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The `Authorization` header value, `Bearer …`, marked sensitive.
    pub async fn authorization(&self) -> Result<http::HeaderValue, AuthError> {
        let token = self.token().await?;
        let mut value =
            http::HeaderValue::try_from(format!("Bearer {}", token.secret())).map_err(|_| {
                AuthError::BadResponse {
                    url: self.shared.upstream.url().into(),
                    reason: "the access token is not a valid header value".into(),
                }
            })?;
        value.set_sensitive(true);
        Ok(value)
    }

    fn now(&self) -> i64 {
        i64::try_from(self.shared.clock.unix()).unwrap_or(i64::MAX)
    }

    /// One request to the token endpoint, unbounded in time (the caller
    /// bounds it).
    async fn fetch(&self, now: i64) -> Result<AccessToken, AuthError> {
        let url = self.shared.upstream.url();
        let request = match &self.shared.upstream {
            Upstream::Emulator => return Ok(AccessToken::new(EMULATOR_TOKEN.into(), None)),
            Upstream::ServiceAccount { key, scope } => {
                let assertion = key.assertion(scope, now)?;
                self.shared
                    .http
                    .post(url)
                    .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
            }
            Upstream::Metadata { token_url } => self
                .shared
                .http
                .get(token_url)
                .header("Metadata-Flavor", "Google"),
        };
        let unreachable = |e: reqwest::Error| AuthError::Unreachable {
            url: url.into(),
            reason: describe(&e),
        };
        let mut resp = request
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(AuthError::BadResponse {
                    url: url.into(),
                    reason: format!(
                        "the body (HTTP {status}) is larger than {MAX_RESPONSE_BYTES} bytes"
                    ),
                });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(AuthError::Rejected {
                url: url.into(),
                status: status.as_u16(),
                detail: oauth_error_detail(&body),
            });
        }
        parse_token_response(&body, now).map_err(|reason| AuthError::BadResponse {
            url: url.into(),
            reason,
        })
    }
}

impl Upstream {
    fn url(&self) -> &str {
        match self {
            Upstream::Emulator => "emulator",
            Upstream::ServiceAccount { key, .. } => &key.token_uri,
            Upstream::Metadata { token_url } => token_url,
        }
    }
}

impl fmt::Debug for AccessTokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("AccessTokenProvider");
        match &self.shared.upstream {
            Upstream::Emulator => d.field("source", &"emulator"),
            Upstream::ServiceAccount { key, scope } => d.field("source", key).field("scope", scope),
            Upstream::Metadata { token_url } => {
                d.field("source", &"metadata").field("url", token_url)
            }
        };
        d.field("timeout", &self.timeout)
            .field("refresh_margin", &self.refresh_margin)
            .finish_non_exhaustive()
    }
}

/// `{base}/computeMetadata/…/token?scopes=a,b` (no `scopes` when empty, so
/// the instance's own scopes apply).
fn metadata_token_url(base: &str, scopes: &[String]) -> Result<String, AuthError> {
    let mut url = url::Url::parse(base)
        .ok()
        .filter(|u| u.scheme() == "http" && u.has_host())
        .ok_or_else(|| {
            AuthError::Config(format!(
                "metadata server `{base}` is not an http URL such as `http://metadata.google.internal`"
            ))
        })?;
    url.set_path(METADATA_TOKEN_PATH);
    url.set_query(None);
    if !scopes.is_empty() {
        url.query_pairs_mut()
            .append_pair("scopes", &scopes.join(","));
    }
    Ok(url.into())
}

/// A short transport failure description (reqwest's own text is a chain).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    if e.is_connect() {
        return "could not connect".into();
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_carries_scopes() {
        let url = metadata_token_url(
            "http://127.0.0.1:9/",
            &[
                "https://www.googleapis.com/auth/datastore".into(),
                "b".into(),
            ],
        );
        assert_eq!(
            url.as_deref(),
            Ok(
                "http://127.0.0.1:9/computeMetadata/v1/instance/service-accounts/default/token?scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fdatastore%2Cb"
            )
        );
        assert!(metadata_token_url("metadata.google.internal", &[]).is_err());
    }
}
