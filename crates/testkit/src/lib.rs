//! Test-only helpers shared by Latchkey's integration tests.
//!
//! [`OidcProvider`] starts the real `oidc-provider` harness in
//! `testing/oidc/` (Node.js) on a loopback port, so identity tests verify
//! tokens signed and published exactly as a production OIDC issuer does.
//! [`firestore`] runs Google's Firestore emulator and official clients;
//! [`tls`] makes throwaway certificates with the `openssl` command line;
//! [`backstage`] runs a real Backstage backend from npm (`testing/backstage`);
//! [`postgres`] starts a throwaway PostgreSQL cluster (or a fresh database
//! in `DATABASE_URL`);
//! [`cgit`] runs Debian's cgit behind a throwaway nginx and fcgiwrap;
//! [`browser`] drives Debian's headless Chromium through a script of steps;
//! [`rp`] is a minimal relying party of that provider (PKCE, code exchange,
//! the device flow, refresh, revocation, a loopback callback server), for
//! tests that exercise the provider's interactive flows without Latchkey.
//! This crate is never a dependency of shipped code and never published.

// A harness that cannot start, or answers nonsense, fails the test that
// called it with the expectation's message: that is the error report here.
#![allow(clippy::expect_used)]

pub mod backstage;
pub mod browser;
pub mod cgit;
pub mod firestore;
pub mod firestore_conformance;
pub mod forge;
pub mod postgres;
pub mod rp;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// The environment variable naming the peers this machine has, so a test
/// that needs one fails instead of skipping: comma-separated peer names
/// (`firestore-emulator`, `dev-full`, `chromium` — Debian's browser with
/// testing/browser installed, `cgit` — cgit and fcgiwrap, `nginx`,
/// `apache2-openidc` — Apache with mod_auth_openidc, `wrk`). `scripts/test` sets it to what it
/// found, so CI cannot pass by skipping what the machine can run.
pub const REQUIRE_PEERS_ENV: &str = "LATCHKEY_REQUIRE_PEERS";

/// Whether `peer` is listed in `list` (a [`REQUIRE_PEERS_ENV`] value):
/// names are comma-separated, surrounding blanks ignored.
pub fn peer_listed(list: &str, peer: &str) -> bool {
    list.split(',').any(|p| p.trim() == peer)
}

/// Whether [`REQUIRE_PEERS_ENV`] names `peer`.
pub fn peer_required(peer: &str) -> bool {
    std::env::var(REQUIRE_PEERS_ENV).is_ok_and(|v| peer_listed(&v, peer))
}

/// Called by a test that is about to return early because `peer` is
/// missing: prints `SKIPPED: <why>` to stderr, so the skip shows in the
/// test output, or panics when [`REQUIRE_PEERS_ENV`] says this machine
/// has the peer (a skip there would hide a broken setup).
pub fn skip_or_fail(peer: &str, why: &str) {
    if peer_required(peer) {
        panic!(
            "`{peer}` is required on this machine ({REQUIRE_PEERS_ENV} names it) but the test \
             would skip: {why}"
        );
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let line = format!(
        "SKIPPED: {test}: {why} (peer `{peer}`; {REQUIRE_PEERS_ENV} does not require it)\n"
    );
    // Straight to the stderr handle: libtest captures `eprintln!` of a
    // passing test, which would hide the skip.
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(line.as_bytes());
    // Test runners capture the output of passing tests (nextest always):
    // the line also goes to the file `scripts/test` lists at the end.
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV) {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            let _ = writeln!(std::io::stderr(), "cannot append to {SKIP_LOG_ENV}: {e}");
        }
    }
}

/// A harness could not start because its peer is not on this machine;
/// [`skip_or_fail`] has already said so (or panicked, when the peer is
/// required). The test returns early on it: `let Ok(x) = X::start().await
/// else { return };`. Any other failure to start panics with its cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The peer name in [`REQUIRE_PEERS_ENV`] that was missing.
    pub peer: &'static str,
    /// Why the harness could not start, with what to install.
    pub why: String,
}

impl Skip {
    /// Reports the skip through [`skip_or_fail`] and returns it.
    pub fn report(peer: &'static str, why: impl Into<String>) -> Skip {
        let why = why.into();
        skip_or_fail(peer, &why);
        Skip { peer, why }
    }
}

/// A file every [`skip_or_fail`] skip is appended to, when set
/// (`scripts/test` prints it after the run).
pub const SKIP_LOG_ENV: &str = "LATCHKEY_SKIP_LOG";

/// Exclusive use of `/dev/full` as an audit log, held until dropped.
///
/// The audit writer takes an exclusive `flock` on its log file, and every
/// log symlinked to `/dev/full` is the same inode: two such logs open at
/// once, in any two test processes on the machine, make the second fail
/// with "already open for writing". Tests that open one take this first,
/// so they wait for each other instead of failing at random.
#[derive(Debug)]
pub struct DevFull {
    _lock: std::fs::File,
}

impl DevFull {
    /// The peer name of `/dev/full` in [`REQUIRE_PEERS_ENV`].
    pub const PEER: &'static str = "dev-full";

    /// Waits for exclusive use of `/dev/full`; `None` (after
    /// [`skip_or_fail`]) on a machine without it.
    pub fn acquire() -> Option<DevFull> {
        if !Path::new("/dev/full").exists() {
            skip_or_fail(Self::PEER, "no /dev/full on this machine");
            return None;
        }
        let path = std::env::temp_dir().join("latchkey-dev-full.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open `{}`: {e}", path.display()));
        file.lock()
            .unwrap_or_else(|e| panic!("cannot lock `{}`: {e}", path.display()));
        Some(DevFull { _lock: file })
    }
}

/// The repository root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The harness folder, `testing/oidc`.
pub fn oidc_harness_dir() -> PathBuf {
    repo_root().join("testing").join("oidc")
}

/// A loopback TCP port that was free a moment ago (for tests that need a
/// port nothing listens on, or must pass one to a server).
pub fn free_port() -> u16 {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    l.local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// The harness's client id (and so ID token audience) for an algorithm,
/// e.g. `latchkey-rs256`.
pub fn client_id(alg: &str) -> String {
    format!("latchkey-{}", alg.to_ascii_lowercase())
}

/// The secret of the harness's static confidential clients
/// (`latchkey-<alg>`), for the code flow and refresh at its token endpoint.
pub const STATIC_CLIENT_SECRET: &str = "not-used-by-latchkey-tests-0000000000";

/// The harness's static public client: native, no secret, loopback
/// redirects on any port, code flow, device flow and refresh (what
/// `latchkey login` is to a provider).
pub const CLI_CLIENT_ID: &str = "latchkey-cli";

/// The grant type of the device authorization grant (RFC 8628), as
/// `grant_types` in a client registration names it.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How to start the harness ([`OidcProvider::start_with`]).
#[derive(Debug, Clone, Default)]
pub struct OidcOptions {
    /// Lifetime of ID tokens and access tokens it issues through its flows
    /// (`--id-token-ttl`; its default is an hour), so a test can watch a
    /// session renew. `/test/mint` tokens take their own `expires_in`.
    pub id_token_ttl: Option<Duration>,
}

/// A running `testing/oidc/server.mjs`: a real OpenID Connect provider on
/// 127.0.0.1 with RS256, PS256, ES256, ES384 and EdDSA signing keys and one
/// client per algorithm, plus the interactive flows of a real IdP (login
/// and consent pages, device flow, refresh, RP-initiated logout,
/// revocation, dynamic registration; see testing/oidc/README.md). Killed
/// when dropped.
#[derive(Debug)]
pub struct OidcProvider {
    child: Option<Child>,
    _stdin: Option<ChildStdin>,
    issuer: String,
    port: u16,
    http: reqwest::Client,
}

impl OidcProvider {
    /// Installs the harness's npm dependencies if needed (once, under a file
    /// lock shared by parallel test processes), starts it on a free port and
    /// waits until it listens. Panics with a clear message when Node.js is
    /// missing or the harness does not start.
    pub async fn start() -> OidcProvider {
        OidcProvider::start_with(OidcOptions::default()).await
    }

    /// [`OidcProvider::start`] with options.
    pub async fn start_with(options: OidcOptions) -> OidcProvider {
        let dir = oidc_harness_dir();
        let install_dir = dir.clone();
        tokio::task::spawn_blocking(move || ensure_installed(&install_dir))
            .await
            .expect("npm install task panicked");

        let mut child = Command::new("node")
            .arg("server.mjs")
            .arg("--port")
            .arg("0")
            .arg("--exit-on-stdin-close")
            .args(options.id_token_ttl.iter().flat_map(|ttl| {
                [
                    "--id-token-ttl".to_owned(),
                    ttl.as_secs().max(1).to_string(),
                ]
            }))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{}", node_missing(&e)));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("child stdout is piped");
        let mut stderr = child.stderr.take().expect("child stderr is piped");

        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            other => {
                let _ = child.start_kill();
                let mut err = String::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), stderr.read_to_string(&mut err))
                        .await;
                panic!(
                    "the OIDC harness (node testing/oidc/server.mjs) did not start ({other:?}); its stderr:\n{err}\n\
                     try `cd testing/oidc && npm ci && node server.mjs` by hand"
                );
            }
        };
        // Keep draining so the child never blocks on a full pipe.
        tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut stderr, &mut sink).await;
        });
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("the OIDC harness printed `{line}`, not its JSON start line: {e}")
        });
        let issuer = v["issuer"]
            .as_str()
            .expect("start line has `issuer`")
            .to_owned();
        let port = v["port"].as_u64().expect("start line has `port`") as u16;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build a reqwest client");
        OidcProvider {
            child: Some(child),
            _stdin: stdin,
            issuer,
            port,
            http,
        }
    }

    /// The issuer URL, `http://127.0.0.1:PORT` (the `iss` of its tokens).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Issues a real ID token through the provider's own machinery.
    ///
    /// `aud` selects the client (and so the audience); `None` means
    /// [`client_id`]`(alg)`. A client signs only with its own algorithm, so
    /// `aud` must be `latchkey-<alg>` for some supported alg with that alg.
    /// `claims` (a JSON object) are added to the token; `iat`/`nbf` may be
    /// overridden there, `iss`/`aud`/`exp` may not. `expires_in` is seconds
    /// from now and may be negative for an already expired token.
    pub async fn mint(
        &self,
        alg: &str,
        sub: &str,
        aud: Option<&str>,
        claims: Value,
        expires_in: i64,
    ) -> String {
        let body = json!({
            "alg": alg,
            "sub": sub,
            "aud": aud,
            "claims": claims,
            "expires_in": expires_in,
        });
        let resp = self
            .http
            .post(format!("{}/test/mint", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("POST /test/mint to the OIDC harness");
        let status = resp.status();
        let v: Value = resp.json().await.expect("JSON from /test/mint");
        assert!(status.is_success(), "OIDC harness refused to mint: {v}");
        v["token"]
            .as_str()
            .expect("`token` in /test/mint answer")
            .to_owned()
    }

    /// The provider's private signing keys as a JWKS (`{"keys": [...]}`),
    /// so tests can forge tokens signed by a real key with bad claims.
    pub async fn private_jwks(&self) -> Value {
        self.http
            .get(format!("{}/test/keys", self.issuer))
            .send()
            .await
            .expect("GET /test/keys from the OIDC harness")
            .json()
            .await
            .expect("JSON from /test/keys")
    }

    /// Registers a client at the provider's registration endpoint (RFC 7591)
    /// and returns its `(client_id, client_secret)`; it authenticates at the
    /// token endpoint with HTTP Basic (`client_secret_basic`).
    ///
    /// `native: false` makes a web client: redirects must match exactly (a
    /// test's callback on its own random port). `native: true` makes an
    /// installed-app client, for which a loopback redirect such as
    /// `http://127.0.0.1/callback` matches on any port (RFC 8252). The
    /// `grant_types` are e.g. `authorization_code`, `refresh_token` and
    /// [`DEVICE_CODE_GRANT`]; `response_types` follow (`code` when the code
    /// grant is there). The post-logout redirects allowed are the origin
    /// (`scheme://host:port/`) of each redirect URI.
    pub async fn register_client(
        &self,
        redirect_uris: &[&str],
        native: bool,
        grant_types: &[&str],
    ) -> (String, String) {
        let v = self
            .register(registration_metadata(
                redirect_uris,
                native,
                grant_types,
                false,
            ))
            .await;
        let id = v["client_id"]
            .as_str()
            .expect("`client_id` in the registration answer");
        let secret = v["client_secret"]
            .as_str()
            .expect("`client_secret` in the registration answer");
        (id.to_owned(), secret.to_owned())
    }

    /// Like [`OidcProvider::register_client`] for a public client (no secret,
    /// `token_endpoint_auth_method: none`, PKCE only), as a CLI is; returns
    /// its client id.
    pub async fn register_public_client(
        &self,
        redirect_uris: &[&str],
        native: bool,
        grant_types: &[&str],
    ) -> String {
        let v = self
            .register(registration_metadata(
                redirect_uris,
                native,
                grant_types,
                true,
            ))
            .await;
        v["client_id"]
            .as_str()
            .expect("`client_id` in the registration answer")
            .to_owned()
    }

    /// Registers a client with any RFC 7591 metadata and returns the
    /// provider's answer (with `client_id`, `client_secret`,
    /// `registration_access_token`). Panics when the provider refuses.
    pub async fn register(&self, metadata: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/reg", self.issuer))
            .json(&metadata)
            .send()
            .await
            .expect("POST /reg to the OIDC harness");
        let status = resp.status();
        let v: Value = resp.json().await.expect("JSON from /reg");
        assert!(
            status.is_success(),
            "the OIDC harness refused to register {metadata}: {v}"
        );
        v
    }

    /// Sets the groups of the person who signs in as `sub` for tokens
    /// issued from now on (the harness's `/test/accounts`). Without this,
    /// alice is in `developers`, maria in `maintainers` and `developers`,
    /// mallory in none, and anyone else in `developers`.
    pub async fn set_groups(&self, sub: &str, groups: &[&str]) -> Value {
        let resp = self
            .http
            .post(format!("{}/test/accounts", self.issuer))
            .json(&json!({ "sub": sub, "groups": groups }))
            .send()
            .await
            .expect("POST /test/accounts to the OIDC harness");
        let status = resp.status();
        let v: Value = resp.json().await.expect("JSON from /test/accounts");
        assert!(
            status.is_success(),
            "the OIDC harness refused the account: {v}"
        );
        v["account"].clone()
    }

    /// The provider's discovery document.
    pub async fn discovery(&self) -> Value {
        self.http
            .get(format!("{}/.well-known/openid-configuration", self.issuer))
            .send()
            .await
            .expect("GET the OIDC harness's discovery document")
            .json()
            .await
            .expect("JSON discovery document")
    }

    /// The HTTP client the harness helpers use (no proxy, 10 s time-out).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Kills the provider now (to test fail-closed behaviour), waiting until
    /// it has exited so its port refuses connections.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// RFC 7591 metadata for [`OidcProvider::register_client`].
fn registration_metadata(
    redirect_uris: &[&str],
    native: bool,
    grant_types: &[&str],
    public: bool,
) -> Value {
    let response_types: &[&str] = if grant_types.contains(&"authorization_code") {
        &["code"]
    } else {
        &[]
    };
    let mut post_logout: Vec<String> = redirect_uris
        .iter()
        .filter_map(|u| url::Url::parse(u).ok())
        .map(|u| format!("{}/", u.origin().ascii_serialization()))
        .collect();
    post_logout.dedup();
    let mut v = json!({
        "application_type": if native { "native" } else { "web" },
        "redirect_uris": redirect_uris,
        "post_logout_redirect_uris": post_logout,
        "grant_types": grant_types,
        "response_types": response_types,
        "client_name": "latchkey test client",
    });
    if public {
        v["token_endpoint_auth_method"] = json!("none");
    }
    v
}

fn node_missing(e: &std::io::Error) -> String {
    format!(
        "could not run `node` ({e}); the OIDC integration tests need Node.js 20 or later on PATH \
         (e.g. `apt-get install nodejs npm`)"
    )
}

fn installed(dir: &Path) -> bool {
    dir.join("node_modules")
        .join("oidc-provider")
        .join("package.json")
        .is_file()
}

/// Runs `npm ci` in the harness folder unless its dependencies are there,
/// serialized across processes with a lock file.
fn ensure_installed(dir: &Path) {
    if installed(dir) {
        return;
    }
    let lock_path = dir.join(".install.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("cannot open `{}`: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock `{}`: {e}", lock_path.display()));
    if !installed(dir) {
        let out = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("could not run `npm` ({e}); the OIDC integration tests need Node.js 20+ and npm on PATH")
            });
        assert!(
            out.status.success(),
            "`npm ci` in `{}` failed:\n{}\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = lock.unlock();
}

#[cfg(test)]
mod peer_tests {
    use super::peer_listed;

    #[test]
    fn peers_are_comma_separated_names() {
        assert!(peer_listed("firestore-emulator,dev-full", "dev-full"));
        assert!(peer_listed(
            " dev-full , firestore-emulator ",
            "firestore-emulator"
        ));
        assert!(!peer_listed("", "dev-full"));
        assert!(!peer_listed("dev-fullish", "dev-full"));
    }
}
