//! `latchkey login` and `latchkey logout`, and the sign-in cache that
//! `latchkey token` and `latchkey git-credential` read.
//!
//! Login is the device authorization grant (RFC 8628) when the provider
//! offers it, else the loopback redirect with PKCE (RFC 8252 §7.3), as a
//! public client. The ID and refresh tokens go to one private file per
//! gateway in the cache directory (`$XDG_CACHE_HOME/latchkey`, else
//! `~/.cache/latchkey`); the ID token is renewed quietly with the refresh
//! token when it has less than a minute left.
//!
//! It does not verify the ID token's signature (the gateway does, when the
//! token is exchanged; OIDC Core §3.1.3.7 lets a client that got it straight
//! from the token endpoint over TLS skip that), but it checks `iss`, `aud`
//! and `nonce`, so a token meant for something else is not cached.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::extract::{RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use latchkey_core::SharedClock;
use latchkey_identity::oauth::{self, ClientCredentials, OAuthError, ProviderMetadata};
use serde::{Deserialize, Serialize};

use crate::cli::{LoginArgs, LogoutArgs};

/// The cached ID token is renewed when it has less than this many seconds left.
pub(crate) const RENEW_BEFORE_SECS: u64 = 60;

/// How long the loopback redirect waits for the browser.
const LOOPBACK_TIMEOUT: Duration = Duration::from_secs(300);

/// The scopes asked for when the gateway names none.
const DEFAULT_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

/// One sign-in provider the gateway publishes at `/oauth2/login-providers`.
#[derive(Debug, Clone, Deserialize)]
struct Provider {
    name: String,
    issuer: String,
    client_id: String,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Providers {
    providers: Vec<Provider>,
}

/// What the sign-in cache holds for one gateway.
#[derive(Serialize, Deserialize)]
pub(crate) struct LoginEntry {
    /// The gateway (scheme, host, port; no trailing `/`).
    pub(crate) gateway: String,
    /// The provider's name at the gateway (or `issuer` with `--issuer`).
    pub(crate) provider: String,
    /// The provider's issuer URL.
    pub(crate) issuer: String,
    /// The public client id the tokens were issued to.
    pub(crate) client_id: String,
    /// The ID token to exchange at the gateway.
    pub(crate) id_token: String,
    /// The refresh token that renews it, if the provider gave one.
    #[serde(default)]
    pub(crate) refresh_token: Option<String>,
    /// The ID token's `exp` (seconds since the epoch).
    pub(crate) expires_at: u64,
}

impl std::fmt::Debug for LoginEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginEntry")
            .field("gateway", &self.gateway)
            .field("provider", &self.provider)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The gateway as the cache keys it: `scheme://host[:port]`, the form Git's
/// credential requests name it in (a default port is left out).
pub(crate) fn gateway_origin(url: &str) -> Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| {
        format!("`{url}` is not a URL; give the gateway as `https://HOST[:PORT]`")
    })?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .with_context(|| format!("`{url}` has no host"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("`{url}` is not an http or https URL");
    }
    Ok(match parsed.port() {
        Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
        None => format!("{}://{host}", parsed.scheme()),
    })
}

/// The cache file of the sign-in to `origin`.
pub(crate) fn login_cache_path(origin: &str) -> Result<PathBuf> {
    Ok(crate::credential::cache_dir()?.join(format!(
        "login-{}.json",
        crate::credential::escape_name(origin)
    )))
}

/// Refuses a cache file another user owns or others may read: someone else
/// could have planted it (a token that signs you in as them) or read it.
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            bail!(
                "`{}` belongs to another user (uid {}), so it is not used; delete it and run \
                 `latchkey login`",
                path.display(),
                meta.uid()
            );
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "`{}` can be read by others (mode {mode:04o}), so it is not used; run \
                 `chmod 600 {}`, or delete it and run `latchkey login`",
                path.display(),
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta);
    Ok(())
}

/// The sign-in cached for `origin`, if there is one. A file that is not
/// private, or unreadable, is an error that says how to fix it.
pub(crate) fn read_login(origin: &str) -> Result<Option<(PathBuf, LoginEntry)>> {
    let path = login_cache_path(origin)?;
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    };
    if !meta.is_file() {
        bail!(
            "`{}` is not a regular file; delete it and run `latchkey login`",
            path.display()
        );
    }
    check_private(&path, &meta)?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let entry: LoginEntry = serde_json::from_str(&text).with_context(|| {
        format!(
            "`{}` is not a sign-in cache file; delete it and run `latchkey login`",
            path.display()
        )
    })?;
    if entry.gateway != origin {
        bail!(
            "`{}` is for `{}`, not `{origin}`; delete it and run `latchkey login`",
            path.display(),
            entry.gateway
        );
    }
    Ok(Some((path, entry)))
}

fn write_login(path: &Path, entry: &LoginEntry) -> Result<()> {
    let dir = path.parent().context("the cache file has no directory")?;
    crate::credential::write_private(dir, path, &serde_json::to_string(entry)?)
}

/// An HTTP client for the provider and the gateway.
fn http() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build an HTTP client")
}

/// The ID token to exchange at the gateway `origin`, from the sign-in
/// cache: as cached while it has more than a minute left, else renewed
/// with the refresh token (and the cache rewritten). `Ok(None)` when nobody
/// signed in to this gateway; an error saying "run `latchkey login`" when
/// the sign-in has ended.
pub(crate) async fn cached_id_token(origin: &str, clock: &SharedClock) -> Result<Option<String>> {
    let Some((path, mut entry)) = read_login(origin)? else {
        return Ok(None);
    };
    let now = clock.unix();
    if entry.expires_at > now.saturating_add(RENEW_BEFORE_SECS) {
        return Ok(Some(entry.id_token));
    }
    let Some(refresh_token) = entry.refresh_token.clone() else {
        bail!(
            "your sign-in to {origin} has expired and the provider gave no refresh token; run \
             `latchkey login`"
        );
    };
    let http = http()?;
    let meta = oauth::discover(&http, &entry.issuer)
        .await
        .with_context(|| format!("cannot renew your sign-in to {origin}"))?;
    let client = ClientCredentials {
        client_id: entry.client_id.clone(),
        client_secret: None,
    };
    let renewed = match oauth::refresh(&http, &meta, &client, &refresh_token).await {
        Ok(t) => t,
        Err(e @ (OAuthError::Refused { .. } | OAuthError::Denied | OAuthError::Expired)) => {
            bail!("your sign-in to {origin} has ended ({e}); run `latchkey login`");
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot renew your sign-in to {origin}"));
        }
    };
    let Some(id_token) = renewed.id_token else {
        bail!(
            "the identity provider renewed your sign-in to {origin} without a new ID token; run \
             `latchkey login`"
        );
    };
    check_id_token(&id_token, &meta, &entry.client_id, None)?;
    entry.expires_at = oauth::unverified_expiry(&id_token).unwrap_or(now);
    entry.id_token = id_token;
    if let Some(r) = renewed.refresh_token {
        // A provider that rotates refresh tokens: the old one is spent.
        entry.refresh_token = Some(r);
    }
    write_login(&path, &entry)?;
    Ok(Some(entry.id_token))
}

/// The claims of a JWT, unverified.
fn unverified_claims(jwt: &str) -> Option<serde_json::Value> {
    let part = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The checks a client makes on an ID token it got from the token endpoint
/// (OIDC Core §3.1.3.7, less the signature, which the gateway checks).
fn check_id_token(
    id_token: &str,
    meta: &ProviderMetadata,
    client_id: &str,
    nonce: Option<&str>,
) -> Result<serde_json::Value> {
    let claims = unverified_claims(id_token).context(
        "the identity provider's ID token is not a JWT; is it an OpenID Connect provider?",
    )?;
    if claims["iss"].as_str() != Some(meta.issuer.as_str()) {
        bail!(
            "the ID token's issuer is not `{}`; refusing to keep it",
            meta.issuer
        );
    }
    let aud_ok = match &claims["aud"] {
        serde_json::Value::String(a) => a == client_id,
        serde_json::Value::Array(a) => a.iter().any(|v| v.as_str() == Some(client_id)),
        _ => false,
    };
    if !aud_ok {
        bail!("the ID token is not for client `{client_id}`; refusing to keep it");
    }
    if let Some(want) = nonce {
        let got = claims["nonce"].as_str().unwrap_or("");
        if aws_lc_rs::constant_time::verify_slices_are_equal(got.as_bytes(), want.as_bytes())
            .is_err()
        {
            bail!("the ID token's `nonce` is not the one this sign-in sent; refusing to keep it");
        }
    }
    if claims["exp"].as_u64().is_none() {
        bail!("the ID token has no `exp`; refusing to keep it");
    }
    Ok(claims)
}

/// Which provider to sign in with: `--issuer`/`--client-id`, else the
/// gateway's list (`--provider NAME`, or its only entry).
async fn resolve_provider(
    http: &reqwest::Client,
    gateway: &str,
    args: &LoginArgs,
) -> Result<Provider> {
    if let (Some(issuer), Some(client_id)) = (&args.issuer, &args.client_id) {
        return Ok(Provider {
            name: args.provider.clone().unwrap_or_else(|| issuer.clone()),
            issuer: issuer.clone(),
            client_id: client_id.clone(),
            scopes: Vec::new(),
        });
    }
    let url = format!("{gateway}/oauth2/login-providers");
    let resp = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}; is the gateway running?"))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        bail!(
            "the gateway at {gateway} publishes no sign-in providers (`/oauth2/login-providers`); \
             pass `--issuer URL --client-id ID` for your identity provider"
        );
    }
    if !resp.status().is_success() {
        bail!("{url} answered HTTP {}", resp.status().as_u16());
    }
    let list: Providers = resp
        .json()
        .await
        .with_context(|| format!("{url} did not answer with a provider list"))?;
    let names = || {
        list.providers
            .iter()
            .map(|p| format!("`{}`", p.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &args.provider {
        Some(name) => list
            .providers
            .iter()
            .find(|p| &p.name == name)
            .cloned()
            .with_context(|| {
                format!(
                    "the gateway has no sign-in provider `{name}`; it has {}",
                    if list.providers.is_empty() {
                        "none".to_owned()
                    } else {
                        names()
                    }
                )
            }),
        None => match list.providers.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!(
                "the gateway at {gateway} has no sign-in provider for the command line (an \
                 `[[issuers]]` entry with `login = true` and `cli_client_id`); pass `--issuer URL \
                 --client-id ID`"
            ),
            _ => bail!(
                "the gateway at {gateway} has several sign-in providers ({}); choose one with \
                 `--provider NAME`",
                names()
            ),
        },
    }
}

/// `latchkey login`.
pub(crate) async fn login(args: LoginArgs) -> Result<ExitCode> {
    let gateway = crate::config::gateway_url(args.gateway.as_deref(), &args.data)?;
    let origin = gateway_origin(&gateway)?;
    let http = http()?;
    let provider = resolve_provider(&http, &gateway, &args).await?;
    let meta = oauth::discover(&http, &provider.issuer)
        .await
        .with_context(|| format!("cannot sign in with `{}`", provider.name))?;
    let client = ClientCredentials {
        client_id: provider.client_id.clone(),
        client_secret: None,
    };
    let scope = if provider.scopes.is_empty() {
        DEFAULT_SCOPES.join(" ")
    } else {
        provider.scopes.join(" ")
    };
    let (tokens, nonce) = if meta.device_authorization_endpoint.is_some() && !args.loopback {
        (
            device(&http, &meta, &client, &scope, args.no_browser).await?,
            None,
        )
    } else {
        let (t, n) = loopback(&http, &meta, &client, &scope, args.no_browser).await?;
        (t, Some(n))
    };
    let id_token = tokens.id_token.context(
        "the identity provider answered without an ID token; the scopes must include `openid`",
    )?;
    let claims = check_id_token(&id_token, &meta, &client.client_id, nonce.as_deref())?;
    let expires_at = claims["exp"].as_u64().unwrap_or_default();
    let entry = LoginEntry {
        gateway: origin.clone(),
        provider: provider.name.clone(),
        issuer: meta.issuer.clone(),
        client_id: client.client_id.clone(),
        id_token,
        refresh_token: tokens.refresh_token,
        expires_at,
    };
    let path = login_cache_path(&origin)?;
    write_login(&path, &entry)?;
    let who = claims["preferred_username"]
        .as_str()
        .or_else(|| claims["email"].as_str())
        .or_else(|| claims["sub"].as_str())
        .unwrap_or("?");
    println!(
        "signed in to {origin} as `{}` with `{}`; the sign-in is kept in `{}`",
        latchkey_core::echo(who),
        provider.name,
        path.display()
    );
    let until = crate::output::fmt_time(expires_at.saturating_mul(1000));
    if entry.refresh_token.is_some() {
        println!(
            "`latchkey token` and `latchkey git-credential` use it and renew it quietly (the ID \
             token expires {until})"
        );
    } else {
        println!("the provider gave no refresh token: run `latchkey login` again after {until}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Tries to open `url` in the user's browser; says so when it cannot.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        let graphical = std::env::var_os("DISPLAY").is_some_and(|v| !v.is_empty())
            || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|v| !v.is_empty());
        if !graphical {
            eprintln!("(no graphical session here: open the URL in a browser yourself)");
            return;
        }
        "xdg-open"
    };
    let spawned = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        // Reap it in the background; its exit status says nothing useful.
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(_) => eprintln!("(could not run `{opener}`: open the URL in a browser yourself)"),
    }
}

/// The device authorization grant (RFC 8628).
async fn device(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client: &ClientCredentials,
    scope: &str,
    no_browser: bool,
) -> Result<oauth::TokenResponse> {
    let da = oauth::start_device(http, meta, client, scope)
        .await
        .context("cannot start the device sign-in")?;
    eprintln!(
        "To sign in, open {} and enter the code {}",
        da.verification_uri, da.user_code
    );
    if let Some(complete) = &da.verification_uri_complete {
        eprintln!("(or open {complete}, which has the code filled in)");
    }
    if !no_browser {
        open_browser(
            da.verification_uri_complete
                .as_deref()
                .unwrap_or(&da.verification_uri),
        );
    }
    let mut interval = Duration::from_secs(da.interval.max(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(da.expires_in);
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the sign-in code expired after {} s before sign-in finished; run `latchkey login` again",
                da.expires_in
            );
        }
        match oauth::poll_device(http, meta, client, &da.device_code).await {
            Ok(oauth::DevicePoll::Pending) => {}
            Ok(oauth::DevicePoll::SlowDown) => interval += Duration::from_secs(5),
            Ok(oauth::DevicePoll::Done(t)) => return Ok(t),
            Err(OAuthError::Denied) => {
                bail!(
                    "sign-in was denied at the identity provider; run `latchkey login` to try again"
                )
            }
            Err(OAuthError::Expired) => bail!(
                "the sign-in code expired before sign-in finished; run `latchkey login` again"
            ),
            Err(e) => return Err(e).context("the device sign-in failed"),
        }
    }
}

/// What the loopback listener hands back: the code, or the provider's error.
type CallbackResult = std::result::Result<String, String>;

struct Callback {
    state: String,
    issuer: String,
    done: Mutex<Option<tokio::sync::oneshot::Sender<CallbackResult>>>,
}

fn callback_page(status: axum::http::StatusCode, title: &str, text: &str) -> Response {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} - latchkey \
         login</title></head><body style=\"font-family:system-ui,sans-serif;max-width:36em;margin:3em auto\">\
         <h1>{t}</h1><p>{x}</p></body></html>\n",
        t = esc(title),
        x = esc(text)
    );
    let mut resp = (status, Html(body)).into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// `GET /callback` on the loopback listener: the provider's redirect. A
/// request without this sign-in's `state` is answered and ignored (another
/// local process cannot end the wait or slip in its own code).
async fn on_callback(State(cb): State<Arc<Callback>>, RawQuery(query): RawQuery) -> Response {
    use axum::http::StatusCode;
    let mut params = std::collections::HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if params.insert(k.into_owned(), v.into_owned()).is_some() {
            return callback_page(
                StatusCode::BAD_REQUEST,
                "Not signed in",
                "a parameter is repeated",
            );
        }
    }
    let state = params.get("state").map(String::as_str).unwrap_or("");
    if aws_lc_rs::constant_time::verify_slices_are_equal(state.as_bytes(), cb.state.as_bytes())
        .is_err()
    {
        return callback_page(
            StatusCode::BAD_REQUEST,
            "Not signed in",
            "this is not the sign-in `latchkey login` is waiting for (its `state` does not match)",
        );
    }
    let Some(done) = cb.done.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return callback_page(StatusCode::OK, "Already done", "you may close this tab");
    };
    // RFC 9207: when the provider names itself, it must be the one asked.
    if let Some(iss) = params.get("iss")
        && iss != &cb.issuer
    {
        let _ = done.send(Err(format!(
            "the answer came from `{}`, not from `{}` (a mix-up attack?)",
            latchkey_core::echo(iss),
            cb.issuer
        )));
        return callback_page(
            StatusCode::BAD_REQUEST,
            "Not signed in",
            "the answer came from another identity provider",
        );
    }
    if let Some(error) = params.get("error") {
        let desc = params
            .get("error_description")
            .map(|d| format!(": {}", latchkey_core::bounded(d, 300)))
            .unwrap_or_default();
        let msg = format!(
            "the identity provider refused the sign-in ({}{desc})",
            latchkey_core::echo(error)
        );
        let _ = done.send(Err(msg.clone()));
        return callback_page(StatusCode::OK, "Sign-in failed", &msg);
    }
    match params.get("code").filter(|c| !c.is_empty()) {
        Some(code) => {
            let _ = done.send(Ok(code.clone()));
            callback_page(
                StatusCode::OK,
                "Signed in",
                "latchkey login has what it needs: you may close this tab and return to the terminal.",
            )
        }
        None => {
            let _ = done.send(Err("the identity provider sent no code".to_owned()));
            callback_page(
                StatusCode::BAD_REQUEST,
                "Not signed in",
                "the identity provider sent no code",
            )
        }
    }
}

/// The loopback redirect with PKCE (RFC 8252 §7.3). Returns the tokens and
/// the nonce the ID token must carry.
async fn loopback(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client: &ClientCredentials,
    scope: &str,
    no_browser: bool,
) -> Result<(oauth::TokenResponse, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on 127.0.0.1 for the sign-in redirect")?;
    let port = listener.local_addr()?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let pkce = oauth::Pkce::generate()?;
    let state = oauth::random_token()?;
    let nonce = oauth::random_token()?;
    let url = oauth::authorization_url(
        meta,
        &oauth::AuthorizationRequest {
            client_id: &client.client_id,
            redirect_uri: &redirect_uri,
            scope,
            state: &state,
            nonce: Some(&nonce),
            code_challenge: &pkce.challenge,
            prompt: None,
        },
    )?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cb = Arc::new(Callback {
        state,
        issuer: meta.issuer.clone(),
        done: Mutex::new(Some(tx)),
    });
    let app = axum::Router::new()
        .route("/callback", axum::routing::get(on_callback))
        .with_state(cb);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    eprintln!("To sign in, open this URL in a browser (waiting up to 5 minutes):\n\n  {url}\n");
    if !no_browser {
        open_browser(&url);
    }
    let outcome = tokio::time::timeout(LOOPBACK_TIMEOUT, rx).await;
    let _ = stop_tx.send(());
    // Give the browser its page, then stop listening whatever happens.
    if tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .is_err()
    {
        tracing::debug!("the loopback listener did not stop in time");
    }
    let code = match outcome {
        Err(_) => bail!("no sign-in within 5 minutes; run `latchkey login` again"),
        Ok(Err(_)) => {
            bail!("the sign-in listener stopped unexpectedly; run `latchkey login` again")
        }
        Ok(Ok(Err(why))) => bail!("{why}"),
        Ok(Ok(Ok(code))) => code,
    };
    let tokens = oauth::exchange_code(http, meta, client, &code, &redirect_uri, &pkce.verifier)
        .await
        .context("the identity provider refused the sign-in code")?;
    Ok((tokens, nonce))
}

/// `latchkey logout`: revokes the refresh token where the provider can,
/// deletes the sign-in and the Git tokens cached for the gateway, and says
/// what it did.
pub(crate) async fn logout(args: LogoutArgs) -> Result<ExitCode> {
    let gateway = crate::config::gateway_url(args.gateway.as_deref(), &args.data)?;
    let origin = gateway_origin(&gateway)?;
    let path = login_cache_path(&origin)?;
    // A cache file that is not private is still deleted (that is the fix),
    // but its tokens are not sent anywhere.
    let entry = match read_login(&origin) {
        Ok(e) => e.map(|(_, e)| e),
        Err(e) => {
            eprintln!("warning: {e:#}");
            None
        }
    };
    let mut did = Vec::new();
    if let Some(entry) = &entry {
        match &entry.refresh_token {
            Some(refresh) => {
                let http = http()?;
                let client = ClientCredentials {
                    client_id: entry.client_id.clone(),
                    client_secret: None,
                };
                let revoked = match oauth::discover(&http, &entry.issuer).await {
                    Ok(meta) => oauth::revoke(&http, &meta, &client, refresh).await,
                    Err(e) => Err(e),
                };
                match revoked {
                    Ok(true) => did.push(format!("revoked the refresh token at {}", entry.issuer)),
                    Ok(false) => did.push(format!(
                        "{} offers no revocation endpoint, so the refresh token was only deleted",
                        entry.issuer
                    )),
                    Err(e) => did.push(format!(
                        "could not revoke the refresh token ({e}); it was deleted here"
                    )),
                }
            }
            None => did.push("there was no refresh token to revoke".to_owned()),
        }
    }
    let existed = match std::fs::remove_file(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("cannot delete `{}`", path.display())),
    };
    if existed {
        did.push(format!("deleted `{}`", path.display()));
    }
    let tokens = crate::credential::forget_gateway(&origin)?;
    if tokens > 0 {
        did.push(format!(
            "deleted {} cached for Git",
            crate::output::count(tokens as u64, "Latchkey token", "Latchkey tokens")
        ));
    }
    if !existed && tokens == 0 {
        println!("not signed in to {origin}: nothing to do");
    } else {
        println!("signed out of {origin}: {}", did.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            b(br#"{"alg":"RS256"}"#),
            b(claims.to_string().as_bytes())
        )
    }

    fn meta() -> ProviderMetadata {
        ProviderMetadata {
            issuer: "https://idp.example".into(),
            authorization_endpoint: "https://idp.example/auth".into(),
            token_endpoint: "https://idp.example/token".into(),
            end_session_endpoint: None,
            device_authorization_endpoint: None,
            revocation_endpoint: None,
            jwks_uri: None,
            code_challenge_methods_supported: vec!["S256".into()],
        }
    }

    #[test]
    fn origins_are_what_git_names_the_host() {
        assert_eq!(
            gateway_origin("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            gateway_origin("https://gw.example:443/x").unwrap(),
            "https://gw.example"
        );
        assert!(gateway_origin("ftp://gw.example").is_err());
        assert!(gateway_origin("not a url").is_err());
    }

    #[test]
    fn an_id_token_for_another_issuer_client_or_nonce_is_not_kept() {
        let good = serde_json::json!({
            "iss": "https://idp.example", "aud": "cli", "nonce": "n1", "exp": 10, "sub": "a"
        });
        check_id_token(&jwt(good.clone()), &meta(), "cli", Some("n1")).unwrap();
        // `aud` may be a list.
        let mut list = good.clone();
        list["aud"] = serde_json::json!(["other", "cli"]);
        check_id_token(&jwt(list), &meta(), "cli", Some("n1")).unwrap();
        let cases = [
            ("iss", serde_json::json!("https://evil.example"), "issuer"),
            ("aud", serde_json::json!("other"), "not for client"),
            ("nonce", serde_json::json!("n2"), "nonce"),
            ("exp", serde_json::Value::Null, "no `exp`"),
        ];
        for (field, value, says) in cases {
            let mut c = good.clone();
            c[field] = value;
            let e = check_id_token(&jwt(c), &meta(), "cli", Some("n1")).unwrap_err();
            assert!(e.to_string().contains(says), "{field}: {e}");
        }
        let e = check_id_token("opaque", &meta(), "cli", None).unwrap_err();
        assert!(e.to_string().contains("not a JWT"), "{e}");
    }
}
