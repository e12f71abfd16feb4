//! A minimal OpenID Connect relying party of the test provider, for tests
//! of the provider's interactive flows themselves (and of what other tests
//! assume about them): PKCE pairs, the token endpoint calls (code exchange,
//! device flow, refresh, revocation), and [`RelyingParty`], a tiny loopback
//! web app that signs a browser in with the code flow and shows the ID
//! token's claims.
//!
//! It checks `state`, `nonce`, `iss` and `aud` but not signatures: verifying
//! provider tokens is `latchkey-identity`'s job and tested there. Test-only;
//! it is not a model for production code (one request per connection, no
//! cookies, pending logins kept in memory by `state`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::OidcProvider;

/// A PKCE pair (RFC 7636, S256).
#[derive(Debug, Clone)]
pub struct Pkce {
    /// The secret the client keeps and sends with the code.
    pub verifier: String,
    /// `BASE64URL(SHA256(verifier))`, sent with the authorization request.
    pub challenge: String,
}

/// A fresh PKCE pair.
pub fn pkce() -> Pkce {
    let verifier = random_token();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    Pkce {
        challenge: URL_SAFE_NO_PAD.encode(digest.as_ref()),
        verifier,
    }
}

/// 32 random bytes, base64url: for `state`, `nonce` and PKCE verifiers.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The claims of a JWT, decoded WITHOUT checking its signature (tests read
/// what the provider put in; verification is tested in latchkey-identity).
pub fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt
        .split('.')
        .nth(1)
        .unwrap_or_else(|| panic!("`{jwt}` is not a JWT"));
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_else(|e| panic!("JWT payload is not base64url: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT payload is not JSON: {e}"))
}

/// A client as the token endpoint sees it.
#[derive(Debug, Clone)]
pub struct RpClient {
    /// Its `client_id`.
    pub id: String,
    /// Its secret (HTTP Basic at the token endpoint); `None` for a public
    /// client, which sends `client_id` in the form instead.
    pub secret: Option<String>,
}

impl RpClient {
    /// A confidential client.
    pub fn confidential(id: &str, secret: &str) -> RpClient {
        RpClient {
            id: id.to_owned(),
            secret: Some(secret.to_owned()),
        }
    }

    /// A public client (no secret).
    pub fn public(id: &str) -> RpClient {
        RpClient {
            id: id.to_owned(),
            secret: None,
        }
    }
}

/// What a token-endpoint call answered: the JSON body on success, or the
/// HTTP status and the provider's error body.
pub type TokenAnswer = Result<Value, (u16, Value)>;

impl OidcProvider {
    /// The authorization endpoint URL of a code flow request with PKCE.
    pub fn authorization_url(
        &self,
        client_id: &str,
        redirect_uri: &str,
        scope: &str,
        state: &str,
        nonce: &str,
        pkce: &Pkce,
    ) -> String {
        let mut u =
            url::Url::parse(&format!("{}/auth", self.issuer())).expect("the issuer is a URL");
        u.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("response_type", "code")
            .append_pair("scope", scope)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256");
        u.into()
    }

    /// The end-session (RP-initiated logout) URL.
    pub fn end_session_url(&self, id_token_hint: &str, post_logout_redirect_uri: &str) -> String {
        let mut u = url::Url::parse(&format!("{}/session/end", self.issuer()))
            .expect("the issuer is a URL");
        u.query_pairs_mut()
            .append_pair("id_token_hint", id_token_hint)
            .append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
        u.into()
    }

    async fn token_call(
        &self,
        client: &RpClient,
        path: &str,
        form: &[(&str, &str)],
    ) -> TokenAnswer {
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let mut req = self.http().post(format!("{}{path}", self.issuer()));
        match &client.secret {
            Some(secret) => req = req.basic_auth(&client.id, Some(secret)),
            None => form.push(("client_id", &client.id)),
        }
        let resp = req
            .form(&form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path} to the OIDC harness: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err((status, body))
        }
    }

    /// Exchanges an authorization code (with its PKCE verifier).
    pub async fn exchange_code(
        &self,
        client: &RpClient,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> TokenAnswer {
        self.token_call(
            client,
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
            ],
        )
        .await
    }

    /// Uses a refresh token.
    pub async fn refresh(&self, client: &RpClient, refresh_token: &str) -> TokenAnswer {
        self.token_call(
            client,
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// Starts a device authorization (RFC 8628): the answer has
    /// `device_code`, `user_code`, `verification_uri` and
    /// `verification_uri_complete`.
    pub async fn device_authorization(&self, client: &RpClient, scope: &str) -> Value {
        self.token_call(client, "/device/auth", &[("scope", scope)])
            .await
            .unwrap_or_else(|(status, body)| {
                panic!("the OIDC harness refused a device authorization ({status}): {body}")
            })
    }

    /// Polls the token endpoint once for a device code; `Err` holds
    /// `authorization_pending` until the user has approved.
    pub async fn device_token(&self, client: &RpClient, device_code: &str) -> TokenAnswer {
        self.token_call(
            client,
            "/token",
            &[
                ("grant_type", crate::DEVICE_CODE_GRANT),
                ("device_code", device_code),
            ],
        )
        .await
    }

    /// Revokes a token (RFC 7009; the provider answers 200 even for an
    /// unknown one). Revoking a refresh token revokes its whole grant.
    pub async fn revoke(&self, client: &RpClient, token: &str, hint: &str) -> TokenAnswer {
        self.token_call(
            client,
            "/token/revocation",
            &[("token", token), ("token_type_hint", hint)],
        )
        .await
    }
}

#[derive(Debug, Default)]
struct RpState {
    client: Option<(RpClient, String)>,
    pending: HashMap<String, (String, Pkce)>,
    tokens: Option<Value>,
    logout_started: bool,
    signed_out: bool,
}

/// A tiny web app on 127.0.0.1 that signs a browser in at the test provider
/// with the code flow and PKCE, for tests of the provider without Latchkey:
///
/// - `GET /login` redirects to the provider with a fresh `state`, `nonce`
///   and PKCE challenge;
/// - `GET /callback` checks `state`, exchanges the code, checks the ID
///   token's `iss`, `aud` and `nonce`, and shows its claims, one
///   `claim NAME: VALUE` line each (arrays joined with `, `);
/// - `GET /logout` sends the browser to the provider's end-session endpoint
///   with `id_token_hint` and `post_logout_redirect_uri` = `/`;
/// - `GET /` (where the provider sends the browser after that logout)
///   says `signed out` once a logout went through, else `home`.
///
/// Stopped when dropped.
#[derive(Debug)]
pub struct RelyingParty {
    origin: String,
    state: Arc<Mutex<RpState>>,
    task: JoinHandle<()>,
}

struct RpConfig {
    issuer: String,
    scope: String,
    provider: OidcProvider,
}

impl RelyingParty {
    /// Starts the app on a free loopback port, asking for `scope`. Register
    /// a client for [`RelyingParty::url`]`("/callback")` and hand it to
    /// [`RelyingParty::use_client`] before a browser comes.
    pub async fn start(provider: &OidcProvider, scope: &str) -> RelyingParty {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the relying party");
        let port = listener.local_addr().expect("bound address").port();
        let origin = format!("http://127.0.0.1:{port}");
        let config = Arc::new(RpConfig {
            issuer: provider.issuer().to_owned(),
            scope: scope.to_owned(),
            provider: provider.client_handle(),
        });
        let state = Arc::new(Mutex::new(RpState::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let config = Arc::clone(&config);
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ = serve(stream, &config, &state).await;
                });
            }
        });
        RelyingParty {
            origin,
            state,
            task,
        }
    }

    /// The client the app signs in with, and the redirect URI it sends,
    /// always [`RelyingParty::url`]`("/callback")`: registered exactly for a
    /// web client, or as the port-less `http://127.0.0.1/callback` for a
    /// native one (the provider then accepts any port).
    pub fn use_client(&self, client: RpClient, redirect_uri: &str) {
        self.state.lock().expect("rp state lock").client = Some((client, redirect_uri.to_owned()));
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `origin` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// The last token response of a completed sign-in (`id_token`,
    /// `access_token`, `refresh_token` when issued).
    pub fn tokens(&self) -> Option<Value> {
        self.state.lock().expect("rp state lock").tokens.clone()
    }
}

impl Drop for RelyingParty {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OidcProvider {
    /// A handle that reaches the same provider (for helpers that outlive a
    /// borrow); it does not own the process, and dropping it stops nothing.
    fn client_handle(&self) -> OidcProvider {
        OidcProvider {
            child: None,
            _stdin: None,
            issuer: self.issuer.clone(),
            port: self.port,
            http: self.http.clone(),
        }
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Reply {
    status: u16,
    location: Option<String>,
    body: String,
}

fn page(status: u16, title: &str, body: &str) -> Reply {
    Reply {
        status,
        location: None,
        body: format!(
            "<!DOCTYPE html><html><head><title>{t}</title></head><body><h1>{t}</h1>{body}</body></html>",
            t = html_escape(title)
        ),
    }
}

fn redirect(to: String) -> Reply {
    Reply {
        status: 302,
        location: Some(to),
        body: String::new(),
    }
}

async fn serve(
    mut stream: TcpStream,
    config: &RpConfig,
    state: &Mutex<RpState>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::other("request head timed out"))??;
        if n == 0 || buf.len() > 16 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let target = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("/")
        .to_owned();
    let reply = handle(&target, config, state).await;
    let status_text = match reply.status {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {} {status_text}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    if let Some(l) = reply.location {
        out.push_str(&format!("Location: {l}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

async fn handle(target: &str, config: &RpConfig, state: &Mutex<RpState>) -> Reply {
    let Ok(u) = url::Url::parse(&format!("http://rp{target}")) else {
        return page(400, "bad request", "");
    };
    let q: HashMap<String, String> = u.query_pairs().into_owned().collect();
    match u.path() {
        "/login" => {
            let mut s = state.lock().expect("rp state lock");
            let Some((client, redirect_uri)) = s.client.clone() else {
                return page(500, "no client", "<p>call use_client first</p>");
            };
            let (st, nonce, pk) = (random_token(), random_token(), pkce());
            let to = config.provider.authorization_url(
                &client.id,
                &redirect_uri,
                &config.scope,
                &st,
                &nonce,
                &pk,
            );
            s.pending.insert(st, (nonce, pk));
            redirect(to)
        }
        "/callback" => callback(&q, config, state).await,
        "/logout" => {
            let mut s = state.lock().expect("rp state lock");
            let hint = s
                .tokens
                .as_ref()
                .and_then(|t| t["id_token"].as_str().map(str::to_owned));
            match hint {
                Some(hint) => {
                    s.logout_started = true;
                    let back = s
                        .client
                        .as_ref()
                        .and_then(|(_, r)| r.strip_suffix("/callback"))
                        .map(|base| format!("{base}/"))
                        .unwrap_or_default();
                    redirect(config.provider.end_session_url(&hint, &back))
                }
                None => page(400, "not signed in", "<p>sign in first</p>"),
            }
        }
        "/" => {
            let mut s = state.lock().expect("rp state lock");
            if s.logout_started {
                // The provider sends the browser back here after a logout.
                s.logout_started = false;
                s.signed_out = true;
                s.tokens = None;
            }
            if s.signed_out {
                page(200, "signed out", "<p>signed out</p>")
            } else {
                page(200, "home", "<p><a href=\"/login\">sign in</a></p>")
            }
        }
        _ => page(404, "not found", ""),
    }
}

async fn callback(q: &HashMap<String, String>, config: &RpConfig, state: &Mutex<RpState>) -> Reply {
    if let Some(err) = q.get("error") {
        let desc = q.get("error_description").map(String::as_str).unwrap_or("");
        return page(
            400,
            "sign-in failed",
            &format!(
                "<p>error: {}</p><p>{}</p>",
                html_escape(err),
                html_escape(desc)
            ),
        );
    }
    let (Some(code), Some(st)) = (q.get("code"), q.get("state")) else {
        return page(400, "sign-in failed", "<p>no code or state</p>");
    };
    let (pending, client) = {
        let mut s = state.lock().expect("rp state lock");
        (s.pending.remove(st), s.client.clone())
    };
    let (Some((nonce, pk)), Some((client, redirect_uri))) = (pending, client) else {
        return page(400, "sign-in failed", "<p>unknown state</p>");
    };
    if q.get("iss") != Some(&config.issuer) {
        return page(
            400,
            "sign-in failed",
            "<p>wrong iss in the authorization response</p>",
        );
    }
    let tokens = match config
        .provider
        .exchange_code(&client, code, &redirect_uri, &pk.verifier)
        .await
    {
        Ok(t) => t,
        Err((status, body)) => {
            return page(
                400,
                "sign-in failed",
                &format!(
                    "<p>token endpoint answered {status}: {}</p>",
                    html_escape(&body.to_string())
                ),
            );
        }
    };
    let Some(id_token) = tokens["id_token"].as_str() else {
        return page(400, "sign-in failed", "<p>no id_token</p>");
    };
    let claims = jwt_claims(id_token);
    let checks = [
        ("iss", claims["iss"] == json!(config.issuer)),
        ("aud", claims["aud"] == json!(client.id)),
        ("nonce", claims["nonce"] == json!(nonce)),
    ];
    if let Some((what, _)) = checks.iter().find(|(_, ok)| !ok) {
        return page(
            400,
            "sign-in failed",
            &format!("<p>wrong {what} in the ID token</p>"),
        );
    }
    let mut lines = String::new();
    if let Some(obj) = claims.as_object() {
        for (k, v) in obj {
            let shown = match v {
                Value::String(s) => s.clone(),
                Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            lines.push_str(&format!(
                "<li>claim {}: {}</li>",
                html_escape(k),
                html_escape(&shown)
            ));
        }
    }
    let refresh = if tokens["refresh_token"].is_string() {
        "yes"
    } else {
        "no"
    };
    {
        let mut s = state.lock().expect("rp state lock");
        s.tokens = Some(tokens);
        s.signed_out = false;
    }
    page(
        200,
        "signed in",
        &format!(
            "<p>nonce ok</p><p>refresh token: {refresh}</p><ul>{lines}</ul><p><a href=\"/logout\">sign out</a></p>"
        ),
    )
}
