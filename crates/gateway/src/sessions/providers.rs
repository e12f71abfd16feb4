//! The identity providers people sign in with: every `[[issuers]]` entry
//! with `login = true`, its client, its metadata (fetched on first use and
//! kept for [`METADATA_TTL`]), and the checks an ID token from a sign-in
//! must pass beyond those of every external token (issued to our client,
//! carrying our nonce).

use std::sync::Arc;
use std::time::Duration;

use latchkey_core::SharedClock;
use latchkey_identity::oauth::{self, ClientCredentials, OAuthError, ProviderMetadata};
use latchkey_identity::{IssuerSet, VerifiedIdentity};
use serde_json::Value;

/// How long a provider's discovery document is reused.
pub(crate) const METADATA_TTL: Duration = Duration::from_secs(600);

/// One provider people sign in with.
pub(crate) struct LoginProvider {
    /// The issuer's configured name.
    pub(crate) name: String,
    /// Its URL (`iss`).
    pub(crate) issuer: String,
    /// The gateway's client at it.
    pub(crate) client: ClientCredentials,
    /// The public client `latchkey login` uses, if any.
    pub(crate) cli_client_id: Option<String>,
    /// The scopes asked for, space-separated.
    pub(crate) scope: String,
    /// The scopes, listed (for `/oauth2/login-providers`).
    pub(crate) scopes: Vec<String>,
    metadata: tokio::sync::RwLock<Option<(ProviderMetadata, u64)>>,
}

impl std::fmt::Debug for LoginProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginProvider")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl LoginProvider {
    /// A provider for issuer `name` at `issuer`.
    pub(crate) fn new(
        name: String,
        issuer: String,
        client: ClientCredentials,
        cli_client_id: Option<String>,
        scopes: Vec<String>,
    ) -> Self {
        Self {
            name,
            issuer,
            client,
            cli_client_id,
            scope: scopes.join(" "),
            scopes,
            metadata: tokio::sync::RwLock::new(None),
        }
    }
}

/// Every login provider, and what verifying their tokens needs.
pub(crate) struct Providers {
    list: Vec<Arc<LoginProvider>>,
    issuers: Arc<IssuerSet>,
    http: reqwest::Client,
    clock: SharedClock,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.list).finish()
    }
}

/// Why an ID token from a sign-in was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SigninTokenError {
    /// It failed the checks every external token must pass.
    #[error("{0}")]
    Identity(#[from] latchkey_identity::IdentityError),
    /// It was vouched for by another configured issuer.
    #[error("the ID token comes from issuer `{0}`, not the one signed in with")]
    OtherIssuer(String),
    /// Its `aud` does not name our client, or `azp` names another.
    #[error("the ID token was not issued to this gateway's client")]
    OtherClient,
    /// The `nonce` is missing or not ours (a replayed or injected token).
    #[error("the ID token's nonce does not match the sign-in it should answer")]
    Nonce,
}

impl Providers {
    /// The providers of `list`, verified with `issuers`.
    pub(crate) fn new(
        list: Vec<LoginProvider>,
        issuers: Arc<IssuerSet>,
        http: reqwest::Client,
        clock: SharedClock,
    ) -> Self {
        Self {
            list: list.into_iter().map(Arc::new).collect(),
            issuers,
            http,
            clock,
        }
    }

    /// Every provider, in configuration order.
    pub(crate) fn all(&self) -> &[Arc<LoginProvider>] {
        &self.list
    }

    /// The provider named `name`, or when `name` is `None` the only one
    /// (the first when several are configured and none is named).
    pub(crate) fn get(&self, name: Option<&str>) -> Option<&Arc<LoginProvider>> {
        match name {
            Some(n) => self.list.iter().find(|p| p.name == n),
            None => self.list.first(),
        }
    }

    /// The HTTP client used for providers.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The provider's metadata, fetched when not known or older than
    /// [`METADATA_TTL`]. A failed fetch is not remembered: the next sign-in
    /// tries again (the provider being down fails that sign-in, closed).
    pub(crate) async fn metadata(
        &self,
        provider: &LoginProvider,
    ) -> Result<ProviderMetadata, OAuthError> {
        let now = self.clock.unix();
        if let Some((meta, at)) = provider.metadata.read().await.as_ref()
            && now.saturating_sub(*at) < METADATA_TTL.as_secs()
        {
            return Ok(meta.clone());
        }
        let meta = oauth::discover(&self.http, &provider.issuer).await?;
        *provider.metadata.write().await = Some((meta.clone(), now));
        Ok(meta)
    }

    /// Verifies an ID token a sign-in (or a refresh) returned: every check
    /// of an external token ([`IssuerSet::verify`]), then that this
    /// provider vouched for it, that it was issued to our client, and, for
    /// a sign-in, that it carries our nonce.
    pub(crate) async fn verify_id_token(
        &self,
        provider: &LoginProvider,
        id_token: &str,
        nonce: Option<&str>,
    ) -> Result<VerifiedIdentity, SigninTokenError> {
        let verified = self.issuers.verify(id_token).await?;
        if verified.issuer_name != provider.name {
            return Err(SigninTokenError::OtherIssuer(verified.issuer_name));
        }
        let client_id = provider.client.client_id.as_str();
        let aud_ok = match verified.claims.get("aud") {
            Some(Value::String(a)) => a == client_id,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(client_id)),
            _ => false,
        };
        let azp_ok = match verified.claims.get("azp") {
            Some(Value::String(azp)) => azp == client_id,
            Some(_) => false,
            None => true,
        };
        if !aud_ok || !azp_ok {
            return Err(SigninTokenError::OtherClient);
        }
        if let Some(expected) = nonce {
            let got = verified
                .claims
                .get("nonce")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !constant_time_eq(got.as_bytes(), expected.as_bytes()) {
                return Err(SigninTokenError::Nonce);
            }
        }
        Ok(verified)
    }
}

/// Compares two secrets without leaking where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}
