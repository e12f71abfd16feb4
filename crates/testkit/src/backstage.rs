//! A real Backstage backend for integration tests ([`Backstage::start`]):
//! `testing/backstage/index.mjs` runs Backstage's own packages from npm (the
//! catalog, the auth backend and its `oauth2Proxy` provider) on a loopback
//! port, with the users in `testing/backstage/catalog.yaml` (`alice`,
//! `maria`, `mallory`, group `engineering`).
//!
//! Backstage's `oauth2Proxy` provider signs in whoever the proxy in front
//! names in `X-Forwarded-User` (see [`FORWARDED_USER`]), so this is what
//! Latchkey's `backstage` app preset stands in front of. This module does
//! not install anything: `testing/backstage/install.sh` does (a compiled
//! native module makes it minutes long, too slow to hide inside a test);
//! without it the tests print SKIPPED, or fail when `LATCHKEY_REQUIRE_PEERS`
//! names [`PEER`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;

use crate::{Skip, free_port, repo_root};

/// The peer name of the Backstage backend in `LATCHKEY_REQUIRE_PEERS`.
pub const PEER: &str = "backstage";

/// The header Backstage's `oauth2Proxy` provider takes the user from; its
/// sign-in resolver `forwardedUserMatchingUserEntityName` looks the value
/// up as a User entity name.
pub const FORWARDED_USER: &str = "X-Forwarded-User";
/// The header the provider takes the profile's email from.
pub const FORWARDED_EMAIL: &str = "X-Forwarded-Email";
/// The header the provider takes the display name from (falling back to
/// [`FORWARDED_USER`]); resolver `forwardedPreferredUsernameMatchingUserEntityName`
/// signs in by it.
pub const FORWARDED_PREFERRED_USERNAME: &str = "X-Forwarded-Preferred-Username";
/// An optional header, `Bearer <JWT>`: the provider *decodes* (does not
/// verify) the JWT into the sign-in's full profile and echoes it to the
/// caller as `providerInfo.accessToken`; a value that is not a JWT makes the
/// sign-in fail with 401.
pub const OAUTH2_PROXY_ID_TOKEN: &str = "X-OAUTH2-PROXY-ID-TOKEN";

/// The users in `testing/backstage/catalog.yaml`.
pub const USERS: [&str; 3] = ["alice", "maria", "mallory"];

/// How long Backstage may take to start and ingest the catalog (about 6 s
/// alone on this 2-core machine; more with a parallel build).
const START_TIMEOUT: Duration = Duration::from_secs(150);
/// How many output lines are kept for error messages.
const LOG_LINES: usize = 200;
const INSTALL_HINT: &str =
    "run `testing/backstage/install.sh` (npm ci; needs Node.js 20+, npm, python3, make and g++)";

/// `testing/backstage`: the harness folder.
pub fn harness_dir() -> PathBuf {
    repo_root().join("testing").join("backstage")
}

/// Whether `node_modules` in `dir` was installed from the current
/// `package-lock.json` (the stamp `install.sh` writes holds its SHA-256).
/// `Err` says what is missing or stale.
pub fn install_current(dir: &Path) -> Result<(), String> {
    let lock = dir.join("package-lock.json");
    let lock_bytes =
        std::fs::read(&lock).map_err(|e| format!("cannot read `{}`: {e}", lock.display()))?;
    let stamp = dir
        .join("node_modules")
        .join(".latchkey-package-lock.sha256");
    let Ok(have) = std::fs::read_to_string(&stamp) else {
        return Err(format!(
            "the Backstage packages are not installed in `{}` (no `{}`)",
            dir.display(),
            stamp.display()
        ));
    };
    let want = hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &lock_bytes).as_ref());
    if have.trim() != want {
        return Err(format!(
            "the Backstage packages in `{}` were installed from another package-lock.json",
            dir.display()
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The identity Backstage's auth backend returned for a sign-in
/// (`backstageIdentity` in the `refresh` answer).
#[derive(Clone, PartialEq, Eq)]
pub struct BackstageIdentity {
    /// The Backstage user token (a JWT Backstage signed): `Authorization:
    /// Bearer` for the catalog and other plugins.
    pub token: String,
    /// e.g. `user:default/alice`.
    pub user_entity_ref: String,
    /// The user and the groups it is a member of.
    pub ownership_entity_refs: Vec<String>,
}

impl std::fmt::Debug for BackstageIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackstageIdentity")
            .field("token", &"<redacted>")
            .field("user_entity_ref", &self.user_entity_ref)
            .field("ownership_entity_refs", &self.ownership_entity_refs)
            .finish()
    }
}

impl BackstageIdentity {
    /// Reads the `backstageIdentity` of a `GET /api/auth/oauth2Proxy/refresh`
    /// answer; `None` when any part is missing.
    pub fn from_refresh(answer: &Value) -> Option<BackstageIdentity> {
        let id = &answer["backstageIdentity"];
        Some(BackstageIdentity {
            token: id["token"].as_str()?.to_owned(),
            user_entity_ref: id["identity"]["userEntityRef"].as_str()?.to_owned(),
            ownership_entity_refs: id["identity"]["ownershipEntityRefs"]
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        })
    }
}

/// A running Backstage backend on `127.0.0.1`, killed when dropped (and
/// exiting by itself when the test process dies: its stdin closes).
pub struct Backstage {
    child: Child,
    _stdin: Option<ChildStdin>,
    url: String,
    base_url: String,
    port: u16,
    static_token: String,
    started_in: Duration,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl std::fmt::Debug for Backstage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backstage")
            .field("url", &self.url)
            .field("base_url", &self.base_url)
            .field("started_in", &self.started_in)
            .finish_non_exhaustive()
    }
}

impl Backstage {
    /// Starts the backend on a free port and waits until it serves requests
    /// and its catalog holds the test users. `Err(Skip)`, after
    /// [`crate::skip_or_fail`], when Node.js or the installed packages are
    /// missing; panics with Backstage's output when it is installed but does
    /// not start.
    pub async fn start() -> Result<Backstage, Skip> {
        Self::launch(None).await
    }

    /// Like [`Backstage::start`], for a Backstage that people reach through
    /// a proxy at `base_url` (e.g. Latchkey's app URL): Backstage's
    /// `backend.baseUrl` and `app.baseUrl` are set to it, so its external
    /// URLs, and the `iss` of the user tokens it signs
    /// (`{base_url}/api/auth`), name the proxy. It still listens on
    /// [`Backstage::url`], where the proxy forwards to.
    pub async fn start_behind(base_url: &str) -> Result<Backstage, Skip> {
        Self::launch(Some(base_url)).await
    }

    async fn launch(base_url: Option<&str>) -> Result<Backstage, Skip> {
        let dir = harness_dir();
        if let Err(why) = install_current(&dir) {
            return Err(Skip::report(PEER, format!("{why}; {INSTALL_HINT}")));
        }
        let began = Instant::now();
        let port = free_port();
        let mut cmd = Command::new("node");
        cmd.arg("index.mjs")
            .arg("--port")
            .arg(port.to_string())
            .arg("--exit-on-stdin-close");
        if let Some(base_url) = base_url {
            cmd.arg("--base-url").arg(base_url);
        }
        let spawned = cmd
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Skip::report(
                    PEER,
                    format!("`node` is not on PATH ({e}); install Node.js 20+"),
                ));
            }
            Err(e) => panic!("cannot run `node index.mjs` in `{}`: {e}", dir.display()),
        };
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("child stdout is piped");
        let stderr = child.stderr.take().expect("child stderr is piped");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Value>(1);
        tokio::spawn(pump(stdout, log.clone(), Some(ready_tx)));
        tokio::spawn(pump(stderr, log.clone(), None));

        let deadline = began + START_TIMEOUT;
        let ready = tokio::select! {
            v = ready_rx.recv() => match v {
                Some(v) => v,
                None => {
                    let status = child.wait().await;
                    panic!(
                        "the Backstage backend exited before it was ready ({status:?}); \
                         its output:\n{}\ntry `cd testing/backstage && node index.mjs --port 7007` by hand",
                        tail(&log)
                    );
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                let _ = child.start_kill();
                panic!(
                    "the Backstage backend was not ready after {START_TIMEOUT:?}; its output:\n{}",
                    tail(&log)
                );
            }
        };
        let started_in = began.elapsed();
        let url = ready["url"]
            .as_str()
            .expect("the ready line has `url`")
            .to_owned();
        let base_url = ready["base_url"]
            .as_str()
            .expect("the ready line has `base_url`")
            .to_owned();
        let static_token = ready["static_token"]
            .as_str()
            .expect("the ready line has `static_token`")
            .to_owned();
        Ok(Backstage {
            child,
            _stdin: stdin,
            url,
            base_url,
            port,
            static_token,
            started_in,
            log,
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`: the auth API is under
    /// `/api/auth`, the catalog under `/api/catalog`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL Backstage believes it is reached at (no trailing slash):
    /// [`Backstage::url`], or the one given to [`Backstage::start_behind`].
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The `iss` of the user tokens this Backstage signs: `{base_url}/api/auth`.
    pub fn token_issuer(&self) -> String {
        format!("{}/api/auth", self.base_url)
    }

    /// The sign-in endpoint a browser app calls through the proxy:
    /// `GET {url}/api/auth/oauth2Proxy/refresh`, answering the profile and
    /// the Backstage identity for the forwarded user.
    pub fn refresh_url(&self) -> String {
        format!("{}/api/auth/oauth2Proxy/refresh", self.url)
    }

    /// A per-run static service token (`backend.auth.externalAccess`) for
    /// tests that call Backstage's APIs as a service, not as a user.
    pub fn static_token(&self) -> &str {
        &self.static_token
    }

    /// How long [`Backstage::start`] took, from spawning `node` to a
    /// catalog with the test users.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The last lines Backstage printed (its request log included), for a
    /// failing test's message.
    pub fn output(&self) -> String {
        tail(&self.log)
    }

    /// Stops the backend now, waiting until it has exited.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Backstage {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Copies `from`'s lines into the kept log; on stdout, sends the ready line.
async fn pump(
    from: impl AsyncRead + Unpin,
    log: Arc<Mutex<VecDeque<String>>>,
    mut ready: Option<tokio::sync::mpsc::Sender<Value>>,
) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(tx) = ready.as_ref()
            && let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["latchkey_backstage_ready"] == true
        {
            let _ = tx.send(v).await;
            ready = None;
            // The line holds the static token: it stays out of the log.
            continue;
        }
        let line = strip_ansi(&line);
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

/// Drops the colour codes (`ESC [ ... letter`) Backstage's development
/// log format writes even into a pipe, so kept lines read as plain text.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn tail(log: &Mutex<VecDeque<String>>) -> String {
    let log = log.lock().unwrap_or_else(|p| p.into_inner());
    log.iter().cloned().collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::strip_ansi;

    #[test]
    fn colour_codes_are_dropped_from_kept_lines() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[22m \u{1b}[34mauth\u{1b}[39m info"),
            "2026 auth info"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
